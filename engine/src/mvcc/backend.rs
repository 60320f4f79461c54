//! The write buffer between the store and its B+tree.
//!
//! Applied changes go into the *active batch*, in memory, where readers find
//! them at once. A batch is sealed every `batch_interval` or `batch_limit`
//! operations and written to the B+tree in one transaction, together with the
//! consistent index of the last log entry it covers, so the tree always holds
//! exactly the effects of the entries up to its consistent index.
//!
//! Readers take a [`Snapshot`]: the list of batches not yet committed and a
//! B+tree read transaction, taken together under one lock. Every revision up
//! to the snapshot's is in one of the two — a batch leaves the list only after
//! the transaction that wrote it is visible to new readers.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::error::{Error, Result};
use super::kv::KeyValue;
use super::revision::{Revision, RevisionKey};
use super::schema;
use crate::btree::{Db, ReadTxn};

/// A log entry: raft index and term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub index: u64,
    pub term: u64,
}

impl EntryId {
    pub const fn new(index: u64, term: u64) -> Self {
        EntryId { index, term }
    }
}

/// A change to one of the server's buckets, written with the batch holding
/// the entry that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuxOp {
    Put {
        bucket: &'static [u8],
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        bucket: &'static [u8],
        key: Vec<u8>,
    },
}

impl AuxOp {
    pub fn bucket(&self) -> &'static [u8] {
        match self {
            AuxOp::Put { bucket, .. } | AuxOp::Delete { bucket, .. } => bucket,
        }
    }
}

/// One record of the `key` bucket, waiting in a batch; its bytes are at
/// `at..at + len` of the batch's arena.
pub(crate) struct Record {
    pub rev: Revision,
    pub tombstone: bool,
    at: usize,
    len: usize,
}

#[derive(Default)]
pub(crate) struct BatchData {
    /// In revision order.
    pub records: Vec<Record>,
    /// The records' bytes, back to back: a batch is freed as a few large
    /// allocations by the committer, not as one small one per record
    /// (allocations made on the applier's thread and freed on another are
    /// what a general-purpose allocator does worst).
    arena: Vec<u8>,
    pub aux: Vec<AuxOp>,
    /// The last entry applied into this batch.
    pub applied: Option<EntryId>,
    /// A compaction scheduled by an entry of this batch.
    pub scheduled_compact: Option<i64>,
}

impl BatchData {
    pub fn is_dirty(&self) -> bool {
        !self.records.is_empty() || !self.aux.is_empty() || self.applied.is_some()
    }

    /// Appends a record whose bytes `encode` writes to the end of the
    /// arena it is given.
    pub fn push(&mut self, rev: Revision, tombstone: bool, encode: impl FnOnce(&mut Vec<u8>)) {
        let at = self.arena.len();
        encode(&mut self.arena);
        self.records.push(Record {
            rev,
            tombstone,
            at,
            len: self.arena.len() - at,
        });
    }

    /// The bytes of a record of this batch.
    pub fn bytes(&self, r: &Record) -> &[u8] {
        &self.arena[r.at..r.at + r.len]
    }
}

pub(crate) struct Batch {
    /// Commit order: batch `n` is written before batch `n + 1`.
    pub seq: u64,
    data: RwLock<BatchData>,
}

impl Batch {
    pub fn new(seq: u64) -> Batch {
        Batch {
            seq,
            data: RwLock::new(BatchData::default()),
        }
    }

    /// A batch with room for as much as `like` holds: the active batch
    /// never regrows its arena under the applier (a copy of megabytes that
    /// stalled a write by 2 ms).
    pub fn sized_like(seq: u64, like: &BatchData) -> Batch {
        Batch {
            seq,
            data: RwLock::new(BatchData {
                records: Vec::with_capacity(like.records.len()),
                arena: Vec::with_capacity(like.arena.len()),
                ..BatchData::default()
            }),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, BatchData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, BatchData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The live record at `rev`, if this batch holds it.
    fn find(&self, rev: Revision) -> Option<Result<KeyValue>> {
        let d = self.read();
        let (first, last) = (d.records.first()?.rev, d.records.last()?.rev);
        if rev < first || rev > last {
            return None;
        }
        let i = d.records.binary_search_by(|r| r.rev.cmp(&rev)).ok()?;
        Some(decode(d.bytes(&d.records[i]), rev))
    }
}

fn decode(bytes: &[u8], rev: Revision) -> Result<KeyValue> {
    KeyValue::decode(bytes).map_err(|e| Error::Corrupt(format!("record at revision {rev}: {e}")))
}

/// A consistent view of everything applied up to `rev`.
pub(crate) struct Snapshot {
    pub rev: i64,
    pub batches: Arc<[Arc<Batch>]>,
    pub tx: ReadTxn,
}

impl Snapshot {
    /// The record of the put at `rev`.
    pub fn record(&self, rev: Revision) -> Result<KeyValue> {
        for b in self.batches.iter().rev() {
            if let Some(r) = b.find(rev) {
                return r;
            }
        }
        let bucket = self
            .tx
            .bucket(schema::KEY)?
            .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
        let (k, n) = RevisionKey::live(rev).to_array();
        match bucket.get(&k[..n])? {
            Some(v) => decode(v, rev),
            None => Err(Error::Corrupt(format!(
                "revision {rev} is in the key index but not in the key bucket"
            ))),
        }
    }

    /// Calls `f` with every record whose revision is in `[from, (to, ∞))`,
    /// `to` capped at the snapshot's revision, in revision order; stops early
    /// when `f` returns false.
    pub fn scan(
        &self,
        from: Revision,
        to: i64,
        mut f: impl FnMut(RevisionKey, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let to = to.min(self.rev);
        if to < from.main {
            return Ok(());
        }
        // Records from the first one a batch holds onwards come from the
        // batches (a batch still listed may also be in the tree already).
        let buffered_from = self
            .batches
            .iter()
            .find_map(|b| b.read().records.first().map(|r| r.rev));
        let tree_end = match buffered_from {
            Some(b) => b.min(Revision::new(to + 1, 0)),
            None => Revision::new(to + 1, 0),
        };
        if from < tree_end {
            let bucket = self
                .tx
                .bucket(schema::KEY)?
                .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
            let lo = RevisionKey::live(from).encode();
            let hi = RevisionKey::live(tree_end).encode();
            use std::ops::Bound;
            for item in bucket.range(Bound::Included(&lo[..]), Bound::Excluded(&hi[..])) {
                let (k, v) = item?;
                let rk = RevisionKey::decode(k).map_err(|e| Error::Corrupt(e.to_string()))?;
                if !f(rk, v)? {
                    return Ok(());
                }
            }
        }
        if let Some(start) = buffered_from {
            let start = start.max(from);
            for b in self.batches.iter() {
                let d = b.read();
                let i = d.records.partition_point(|r| r.rev < start);
                for r in &d.records[i..] {
                    if r.rev.main > to {
                        return Ok(());
                    }
                    let rk = RevisionKey {
                        revision: r.rev,
                        tombstone: r.tombstone,
                    };
                    if !f(rk, d.bytes(r))? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes sealed batches to the tree in one transaction: their records, the
/// server's bucket changes, the last consistent index and term, and a
/// scheduled compaction.
pub(crate) fn commit_batches(db: &Db, batches: &[Arc<Batch>]) -> Result<()> {
    let mut tx = db.begin_write()?;
    let mut applied = None;
    let mut scheduled = None;
    {
        let mut kb = tx
            .bucket_mut(schema::KEY)?
            .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
        for b in batches {
            let d = b.read();
            for r in &d.records {
                let (k, n) = RevisionKey {
                    revision: r.rev,
                    tombstone: r.tombstone,
                }
                .to_array();
                kb.put(&k[..n], d.bytes(r))?;
            }
            applied = d.applied.or(applied);
            scheduled = d.scheduled_compact.or(scheduled);
        }
    }
    for b in batches {
        let d = b.read();
        for op in &d.aux {
            let mut bucket = tx.create_bucket_if_missing(op.bucket())?;
            match op {
                AuxOp::Put { key, value, .. } => bucket.put(key, value)?,
                AuxOp::Delete { key, .. } => {
                    bucket.delete(key)?;
                }
            }
        }
    }
    {
        let mut meta = tx
            .bucket_mut(schema::META)?
            .ok_or_else(|| Error::Corrupt("no meta bucket".into()))?;
        if let Some(e) = applied {
            meta.put(schema::CONSISTENT_INDEX, &schema::encode_u64(e.index))?;
            meta.put(schema::TERM, &schema::encode_u64(e.term))?;
        }
        if let Some(c) = scheduled {
            meta.put(schema::SCHEDULED_COMPACT, &schema::encode_compact(c))?;
        }
    }
    tx.commit()?;
    Ok(())
}
