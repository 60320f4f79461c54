//! Recovery: raft's state read back from the WAL at start — a new
//! cluster's bootstrap, a joining member's empty start, a restart from the
//! last snapshot marker, and `--force-new-cluster`.

use std::collections::BTreeMap;

use cairn_wal::{Record, SnapshotMarker, Wal};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState,
    SnapshotMetadata,
};

use crate::driver::wal_hs;
use crate::error::{Error, Result};
use crate::member::Membership;
use crate::node::NodeConfig;
use crate::storage::{self, Core};

/// raft's state as found in the WAL.
pub(crate) struct Recovered {
    pub core: Core,
    pub membership: Membership,
    pub conf_state: ConfState,
    pub marker_index: u64,
    pub marker_term: u64,
    /// Records to write before anything else (a new member's first marker).
    pub bootstrap: Vec<Record>,
}

/// Reads raft's state back from the WAL: the last snapshot marker (with the
/// configuration and membership as of it), the entries after it, the hard
/// state. A new member starts from its initial configuration instead.
pub(crate) fn recover(cfg: &NodeConfig, wal: &Wal, sm_durable: u64) -> Result<Recovered> {
    // The marker first (reading from past the end returns only the latest
    // marker, hard state and metadata), then only the entries after it.
    let head = wal.read_from(u64::MAX)?;
    let from = head.snapshot.as_ref().map_or(0, |m| m.index + 1);
    let mut log = wal.read_from(from)?;
    let fresh = log.hard_state.is_none() && log.entries.is_empty() && log.snapshot.is_none();
    if fresh {
        // A new cluster starts as raft-rs intends: from a snapshot at index
        // 1, term 1, holding the initial configuration, identical on every
        // initial member. A member joining an existing cluster starts empty
        // (knowing its peers' addresses from its flags) and is sent a
        // snapshot by the leader, so it learns the configuration from the
        // cluster, never from its own flags.
        let membership = Membership::new(cfg.initial_members.iter().cloned());
        let (index, term, mut cs) = if cfg.join_existing {
            (0, 0, ConfState::default())
        } else {
            let mut cs = ConfState::default();
            for m in membership.members() {
                if m.is_learner {
                    cs.learners.push(m.id);
                } else {
                    cs.voters.push(m.id);
                }
            }
            (1, 1, cs)
        };
        cs.voters.sort_unstable();
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..Default::default()
        };
        meta.set_conf_state(cs.clone());
        let hs = HardState {
            term,
            commit: index,
            ..Default::default()
        };
        let bootstrap = vec![
            Record::Snapshot(SnapshotMarker {
                index,
                term,
                data: storage::encode_marker(&cs, &membership),
            }),
            wal_hs(&hs),
        ];
        return Ok(Recovered {
            core: Core::with(hs, meta, Vec::new()),
            membership,
            conf_state: cs,
            marker_index: index,
            marker_term: term,
            bootstrap,
        });
    }
    let marker = log
        .snapshot
        .ok_or_else(|| Error::Storage("the WAL has raft state but no snapshot marker".into()))?;
    let (cs, membership) = storage::decode_marker(&marker.data)?;
    let mut entries = std::mem::take(&mut log.entries)
        .into_iter()
        .filter(|e| e.index > marker.index)
        .map(|e| storage::entry_from_wal_owned(e.index, e.term, e.data))
        .collect::<Result<Vec<_>>>()?;
    // Installing a leader's snapshot replaces raft's whole log, but the WAL
    // keeps the entries it had after the snapshot's index until new ones
    // replace them. Those are from an older history: all their terms are
    // below the snapshot's (a leader of a later term holds the committed
    // entry at the snapshot's index, so anything it appended would have
    // matched it). Drop them.
    if entries.first().is_some_and(|e| e.term < marker.term) {
        tracing::info!(
            snapshot_index = marker.index,
            dropped = entries.len(),
            "dropping log entries the installed snapshot replaced"
        );
        entries.clear();
    }
    let last = entries.last().map_or(marker.index, |e| e.index);
    let mut hs = HardState::default();
    if let Some(h) = log.hard_state {
        hs.term = h.term;
        hs.vote = h.vote;
        hs.commit = h.commit;
    }
    // The commit index is persisted lazily, but never below a marker
    // (markers cover committed entries only).
    hs.commit = hs.commit.max(marker.index).min(last);
    hs.term = hs.term.max(marker.term);
    let mut bootstrap = Vec::new();
    if cfg.force_new_cluster {
        bootstrap = force_new_cluster(cfg.id, &membership, &mut entries, &mut hs)?;
    }
    let last = entries.last().map_or(marker.index, |e| e.index);
    let mut meta = SnapshotMetadata {
        index: marker.index,
        term: marker.term,
        ..Default::default()
    };
    meta.set_conf_state(cs.clone());
    tracing::info!(
        snapshot_index = marker.index,
        first_index = marker.index + 1,
        last_index = last,
        commit = hs.commit,
        term = hs.term,
        state_machine_durable = sm_durable,
        "recovered raft state from the WAL"
    );
    Ok(Recovered {
        core: Core::with(hs, meta, entries),
        membership,
        conf_state: cs,
        marker_index: marker.index,
        marker_term: marker.term,
        bootstrap,
    })
}

/// `--force-new-cluster`: every entry in this member's log counts as
/// committed, and one configuration change per other member, appended and
/// committed, removes it (voters and learners alike). Applied like any other
/// change, they leave this member the sole voter of a one-member cluster
/// with the same cluster id and all its data; it then elects itself. The new
/// entries and the hard state are returned as records for the WAL, written
/// before anything else, so the change survives another restart (with or
/// without the flag).
///
/// etcd drops the entries past its persisted commit index instead. cairn
/// keeps them: its commit index is persisted lazily, so entries past it may
/// have been committed, acknowledged and even applied here; any entry in the
/// log may have been acknowledged by the lost majority, and this member's
/// log is all that is left of the cluster's history.
fn force_new_cluster(
    me: u64,
    membership: &Membership,
    entries: &mut Vec<Entry>,
    hs: &mut HardState,
) -> Result<Vec<Record>> {
    let uncommitted = entries.iter().filter(|e| e.index > hs.commit).count();
    if let Some(last) = entries.last() {
        hs.commit = hs.commit.max(last.index);
    }
    // The members as of the end of the log: the marker's, then the changes
    // among the entries.
    // id -> is a learner
    let mut ids: BTreeMap<u64, bool> = membership.members().map(|m| (m.id, m.is_learner)).collect();
    for e in entries.iter() {
        let changes = match e.get_entry_type() {
            EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&e.data)
                .map_err(|x| Error::Storage(format!("entry {}: {x}", e.index)))?
                .get_changes()
                .iter()
                .map(|c| (c.get_change_type(), c.node_id))
                .collect(),
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(&e.data)
                    .map_err(|x| Error::Storage(format!("entry {}: {x}", e.index)))?;
                vec![(cc.get_change_type(), cc.node_id)]
            }
            EntryType::EntryNormal => Vec::new(),
        };
        for (t, id) in changes {
            match t {
                ConfChangeType::AddNode => ids.insert(id, false),
                ConfChangeType::AddLearnerNode => ids.insert(id, true),
                ConfChangeType::RemoveNode => ids.remove(&id),
            };
        }
    }
    match ids.get(&me) {
        None => {
            return Err(Error::Storage(format!(
                "--force-new-cluster: member {me:x} is not in the cluster's configuration"
            )));
        }
        Some(true) => {
            return Err(Error::Storage(format!(
                "--force-new-cluster: member {me:x} is a learner; only a voting member can go on alone"
            )));
        }
        Some(false) => {}
    }
    let mut records = Vec::new();
    let mut index = hs.commit;
    for id in ids.into_keys().filter(|&id| id != me) {
        index += 1;
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = id;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.index = index;
        e.term = hs.term;
        e.data = cc
            .write_to_bytes()
            .map_err(|x| Error::Storage(format!("encoding a configuration change: {x}")))?
            .into();
        records.push(Record::Entry(cairn_wal::Entry {
            index,
            term: hs.term,
            data: storage::entry_to_wal(&e),
        }));
        entries.push(e);
        tracing::warn!(
            removed = %format!("{id:x}"),
            index,
            "--force-new-cluster: removing a member"
        );
    }
    hs.commit = index;
    records.push(wal_hs(hs));
    tracing::warn!(
        kept_past_persisted_commit = uncommitted,
        commit = hs.commit,
        "--force-new-cluster: restarting as a one-member cluster"
    );
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_wal::WalOptions;

    fn wal_with(records: Vec<Record>) -> (tempfile::TempDir, Wal) {
        let tmp = tempfile::tempdir().unwrap();
        let wal = Wal::create(tmp.path().join("wal"), WalOptions::default(), b"m").unwrap();
        wal.append(records).unwrap();
        (tmp, wal)
    }

    fn entry(index: u64, term: u64) -> Record {
        let e = Entry {
            index,
            term,
            ..Default::default()
        };
        Record::entry(index, term, storage::entry_to_wal(&e))
    }

    fn marker(index: u64, term: u64) -> Record {
        Record::Snapshot(SnapshotMarker {
            index,
            term,
            data: storage::encode_marker(&ConfState::default(), &Membership::default()),
        })
    }

    fn hs(term: u64, commit: u64) -> Record {
        Record::HardState(cairn_wal::HardState {
            term,
            vote: 0,
            commit,
        })
    }

    #[test]
    fn entries_an_installed_snapshot_replaced_are_dropped_at_recovery() {
        // Entries 2..=6 of term 2, then a leader's snapshot at 4 (term 3):
        // 5 and 6 are from the replaced history.
        let mut recs = vec![marker(1, 1)];
        recs.extend((2..=6).map(|i| entry(i, 2)));
        recs.push(hs(2, 3));
        recs.push(marker(4, 3));
        recs.push(hs(3, 4));
        let (tmp, wal) = wal_with(recs);
        let cfg = NodeConfig::new(1, 1, tmp.path().join("snap"));
        let r = recover(&cfg, &wal, 0).unwrap();
        assert_eq!(r.marker_index, 4);
        assert_eq!(r.core.last_index(), 4);
        assert_eq!(r.core.hard_state.commit, 4);
    }

    #[test]
    fn entries_after_a_compaction_marker_are_kept_and_commit_is_never_raised_past_them() {
        let mut recs = vec![marker(1, 1)];
        recs.extend((2..=6).map(|i| entry(i, 2)));
        recs.push(marker(4, 2));
        recs.push(hs(2, 5));
        let (tmp, wal) = wal_with(recs);
        let cfg = NodeConfig::new(1, 1, tmp.path().join("snap"));
        // Even if the state machine says it holds more than the log.
        let r = recover(&cfg, &wal, 9).unwrap();
        assert_eq!((r.core.first_index(), r.core.last_index()), (5, 6));
        assert_eq!(r.core.hard_state.commit, 5);
    }

    #[test]
    fn force_new_cluster_keeps_the_whole_log_and_commits_one_removal_per_other_member() {
        let member = |id: u64, is_learner: bool| crate::member::Member {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            client_urls: Vec::new(),
            is_learner,
        };
        let ms = Membership::new([member(1, false), member(2, false), member(3, true)]);
        let cs = ConfState {
            voters: vec![1, 2],
            learners: vec![3],
            ..Default::default()
        };
        // Member 4 joins as a learner at entry 3, past the persisted commit.
        let mut add = ConfChange::default();
        add.set_change_type(ConfChangeType::AddLearnerNode);
        add.node_id = 4;
        let mut e3 = Entry::default();
        e3.set_entry_type(EntryType::EntryConfChange);
        e3.index = 3;
        e3.term = 2;
        e3.data = add.write_to_bytes().unwrap().into();
        let recs = vec![
            Record::Snapshot(SnapshotMarker {
                index: 1,
                term: 1,
                data: storage::encode_marker(&cs, &ms),
            }),
            entry(2, 2),
            Record::entry(3, 2, storage::entry_to_wal(&e3)),
            entry(4, 2),
            hs(2, 2),
        ];
        let (tmp, wal) = wal_with(recs);
        let mut cfg = NodeConfig::new(1, 1, tmp.path().join("snap"));
        cfg.force_new_cluster = true;
        let r = recover(&cfg, &wal, 0).unwrap();
        // Entries 2..=4 stay; 5, 6, 7 remove members 2, 3 and 4; all committed.
        assert_eq!(r.core.last_index(), 7);
        assert_eq!(r.core.hard_state.commit, 7);
        let removed: Vec<u64> = r
            .bootstrap
            .iter()
            .filter_map(|rec| match rec {
                Record::Entry(e) => {
                    let e = storage::entry_from_wal(e.index, e.term, &e.data).unwrap();
                    assert_eq!(e.get_entry_type(), EntryType::EntryConfChange);
                    let cc = ConfChange::parse_from_bytes(&e.data).unwrap();
                    assert_eq!(cc.get_change_type(), ConfChangeType::RemoveNode);
                    Some(cc.node_id)
                }
                _ => None,
            })
            .collect();
        assert_eq!(removed, vec![2, 3, 4]);
        assert!(matches!(
            r.bootstrap.last(),
            Some(Record::HardState(h)) if h.commit == 7 && h.term == 2
        ));
        // A learner cannot go on alone.
        let mut cfg = NodeConfig::new(3, 1, tmp.path().join("snap"));
        cfg.force_new_cluster = true;
        assert!(recover(&cfg, &wal, 0).is_err());
    }
}
