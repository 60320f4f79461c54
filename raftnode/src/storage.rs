//! raft-rs's `Storage`, in memory, over what the WAL holds.
//!
//! Like etcd's `MemoryStorage`: every entry after the last compaction point
//! is kept in memory (the WAL is the durable copy, written by the node before
//! it advances raft), together with the hard state, the configuration, and
//! the point a snapshot would be taken at for a follower that is too far
//! behind.
//!
//! ## Invariants
//!
//! * `entries` holds exactly the indexes `snap.index + 1 ..= last_index`.
//! * `term(snap.index)` is known: the compaction point keeps its term.
//! * The snapshot point is an index whose effects the state machine has
//!   applied; it never goes back.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::{Error, Result};
use crate::member::Membership;

/// Where a snapshot sent to a lagging follower stands: an applied index, its
/// term, and the configuration and membership as of it.
#[derive(Clone, Debug, Default)]
pub struct SnapshotPoint {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
    pub membership: Membership,
}

#[derive(Default)]
pub struct Core {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The compaction point: entries start right after it.
    pub snap: SnapshotMetadata,
    entries: Vec<Entry>,
    point: Option<SnapshotPoint>,
}

impl Core {
    pub fn first_index(&self) -> u64 {
        self.snap.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snap.index + self.entries.len() as u64
    }

    pub fn term(&self, idx: u64) -> std::result::Result<u64, StorageError> {
        if idx == self.snap.index {
            return Ok(self.snap.term);
        }
        if idx < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if idx > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        Ok(self.entries[(idx - self.first_index()) as usize].term)
    }

    /// Appends entries, replacing any conflicting suffix.
    pub fn append(&mut self, ents: &[Entry]) -> Result<()> {
        let Some(first) = ents.first() else {
            return Ok(());
        };
        let skip = self.first_index().saturating_sub(first.index) as usize;
        let ents = ents.get(skip..).unwrap_or(&[]);
        let Some(first) = ents.first() else {
            return Ok(());
        };
        if first.index > self.last_index() + 1 {
            return Err(Error::Storage(format!(
                "appending entry {} after last index {}",
                first.index,
                self.last_index()
            )));
        }
        self.entries
            .truncate((first.index - self.first_index()) as usize);
        self.entries.extend_from_slice(ents);
        Ok(())
    }

    /// Drops the entries before `index` (they are in a snapshot the state
    /// machine holds durably).
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.first_index() {
            return Ok(());
        }
        if index > self.last_index() + 1 {
            return Err(Error::Storage(format!(
                "compacting to {index} beyond last index {}",
                self.last_index()
            )));
        }
        let term = self
            .term(index - 1)
            .map_err(|e| Error::Storage(e.to_string()))?;
        let n = (index - self.first_index()) as usize;
        self.entries.drain(..n);
        self.snap.index = index - 1;
        self.snap.term = term;
        Ok(())
    }

    /// Replaces the log with an installed snapshot.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) {
        self.entries.clear();
        self.snap = meta.clone();
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
    }

    pub fn set_point(&mut self, p: SnapshotPoint) {
        if self.point.as_ref().is_none_or(|cur| cur.index <= p.index) {
            self.point = Some(p);
        }
    }

    pub fn point(&self) -> Option<&SnapshotPoint> {
        self.point.as_ref()
    }

    /// Entries `[low, high)`, at most `max_size` bytes but at least one.
    pub fn slice(&self, low: u64, high: u64, max_size: Option<u64>) -> Vec<Entry> {
        let lo = (low - self.first_index()) as usize;
        let hi = (high - self.first_index()) as usize;
        let mut out = Vec::with_capacity(hi - lo);
        let mut size = 0u64;
        for e in &self.entries[lo..hi] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(e.clone());
        }
        out
    }
}

/// Shared between the node (which writes) and raft-rs (which reads).
#[derive(Clone, Default)]
pub struct LogStorage {
    core: Arc<RwLock<Core>>,
}

impl LogStorage {
    pub fn new(core: Core) -> LogStorage {
        LogStorage {
            core: Arc::new(RwLock::new(core)),
        }
    }

    pub fn rl(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wl(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Core {
    pub fn with(hard_state: HardState, snap: SnapshotMetadata, entries: Vec<Entry>) -> Core {
        Core {
            hard_state,
            conf_state: snap.get_conf_state().clone(),
            snap,
            entries,
            point: None,
        }
    }
}

fn store_err(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl raft::Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.rl();
        Ok(RaftState::new(c.hard_state.clone(), c.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let c = self.rl();
        if low < c.first_index() {
            return Err(store_err(StorageError::Compacted));
        }
        if high > c.last_index() + 1 || low > high {
            return Err(store_err(StorageError::Unavailable));
        }
        Ok(c.slice(low, high, max_size.into()))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.rl().term(idx).map_err(store_err)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let c = self.rl();
        match c.point() {
            Some(p) if p.index >= request_index && p.index > 0 => {
                let mut s = Snapshot::default();
                let m = s.mut_metadata();
                m.index = p.index;
                m.term = p.term;
                m.set_conf_state(p.conf_state.clone());
                s.data = p.membership.encode().into();
                Ok(s)
            }
            _ => Err(store_err(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

/// The WAL's opaque entry data for a raft entry: its type and context
/// travel with its bytes.
///
/// ```text
///  0      1                5
///  +------+----------------+-----------+------+
///  | type | context len u32| context   | data |
///  +------+----------------+-----------+------+
/// ```
pub fn entry_to_wal(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + e.context.len() + e.data.len());
    v.push(e.get_entry_type() as u8);
    v.extend_from_slice(&(e.context.len() as u32).to_be_bytes());
    v.extend_from_slice(&e.context);
    v.extend_from_slice(&e.data);
    v
}

/// [`entry_from_wal`] taking the bytes, so the data is not copied.
pub fn entry_from_wal_owned(index: u64, term: u64, b: Vec<u8>) -> Result<Entry> {
    let mut e = entry_from_wal_header(index, term, &b)?;
    let n = 5 + e.context.len();
    let mut b = bytes::Bytes::from(b);
    e.data = b.split_off(n);
    Ok(e)
}

/// An entry with its type and context from WAL bytes, and no data.
fn entry_from_wal_header(index: u64, term: u64, b: &[u8]) -> Result<Entry> {
    let bad = || Error::Storage(format!("entry {index} in the WAL is malformed"));
    if b.len() < 5 {
        return Err(bad());
    }
    let ty = match b[0] {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(bad()),
    };
    let n = u32::from_be_bytes(b[1..5].try_into().expect("4 bytes")) as usize;
    let ctx = b.get(5..5 + n).ok_or_else(bad)?;
    let mut e = Entry::default();
    e.set_entry_type(ty);
    e.index = index;
    e.term = term;
    e.context = ctx.to_vec().into();
    Ok(e)
}

pub fn entry_from_wal(index: u64, term: u64, b: &[u8]) -> Result<Entry> {
    let mut e = entry_from_wal_header(index, term, b)?;
    e.data = b[5 + e.context.len()..].to_vec().into();
    Ok(e)
}

/// The data of a WAL snapshot marker: the configuration and the membership
/// as of its index.
///
/// ```text
///  0                  4
///  +------------------+------------------------+-----------------+
///  | conf len u32 BE  | ConfState (protobuf)   | membership JSON |
///  +------------------+------------------------+-----------------+
/// ```
pub fn encode_marker(cs: &ConfState, membership: &Membership) -> Vec<u8> {
    let conf = cs.write_to_bytes().expect("conf state encodes");
    let mut v = (conf.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&conf);
    v.extend_from_slice(&membership.encode());
    v
}

pub fn decode_marker(b: &[u8]) -> Result<(ConfState, Membership)> {
    let bad = |what: &str| Error::Storage(format!("WAL snapshot marker: {what}"));
    if b.len() < 4 {
        return Err(bad("too short"));
    }
    let n = u32::from_be_bytes(b[..4].try_into().expect("4 bytes")) as usize;
    let conf = b.get(4..4 + n).ok_or_else(|| bad("truncated"))?;
    let cs = ConfState::parse_from_bytes(conf).map_err(|e| bad(&e.to_string()))?;
    let ms = Membership::decode(&b[4 + n..])?;
    Ok((cs, ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    #[test]
    fn appends_replace_conflicting_suffixes_and_compaction_keeps_the_boundary_term() {
        let s = LogStorage::default();
        s.wl().append(&[ent(1, 1), ent(2, 1), ent(3, 1)]).unwrap();
        s.wl().append(&[ent(3, 2), ent(4, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert!(s.wl().append(&[ent(7, 2)]).is_err());
        s.wl().compact(3).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(matches!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let got = s
            .entries(3, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            [(3, 2), (4, 2)]
        );
        // A size limit still returns one entry.
        let one = s
            .entries(3, 5, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn a_snapshot_is_offered_only_at_or_past_the_requested_index() {
        let s = LogStorage::default();
        assert!(s.snapshot(1, 2).is_err());
        let cs = ConfState {
            voters: vec![1, 2],
            ..Default::default()
        };
        s.wl().set_point(SnapshotPoint {
            index: 10,
            term: 3,
            conf_state: cs.clone(),
            membership: Membership::default(),
        });
        assert!(s.snapshot(11, 2).is_err());
        let snap = s.snapshot(10, 2).unwrap();
        assert_eq!(
            (snap.get_metadata().index, snap.get_metadata().term),
            (10, 3)
        );
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2]);
    }

    #[test]
    fn wal_forms_round_trip() {
        let mut e = ent(5, 2);
        e.set_entry_type(EntryType::EntryConfChangeV2);
        e.context = b"ctx".to_vec().into();
        let back = entry_from_wal(5, 2, &entry_to_wal(&e)).unwrap();
        assert_eq!(back, e);
        assert!(entry_from_wal(5, 2, &[9, 0, 0, 0, 0]).is_err());
        let cs = ConfState {
            voters: vec![3],
            ..Default::default()
        };
        let ms = Membership::default();
        assert_eq!(decode_marker(&encode_marker(&cs, &ms)).unwrap(), (cs, ms));
    }
}
