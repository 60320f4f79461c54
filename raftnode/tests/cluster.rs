//! Clusters of real members on 127.0.0.1: election, replication, failures,
//! partitions, membership, snapshots, restarts. Every check is about data:
//! what each member applied, in order.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_raftnode::Error;
use common::*;

const T: Duration = Duration::from_secs(10);

/// Proposes each payload through member `via` and returns their indexes.
fn propose_all(c: &Cluster, via: usize, data: &[Vec<u8>]) -> Vec<u64> {
    data.iter()
        .map(|d| c.propose(via, d).expect("proposal applied"))
        .collect()
}

#[test]
fn a_single_member_elects_itself_and_applies_proposals_in_order() {
    let c = Cluster::new(1);
    let l = c.leader(T);
    assert_eq!(l, 0);
    let data = payloads("one", 50);
    let idx = propose_all(&c, 0, &data);
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "indexes grow: {idx:?}");
    assert_eq!(c.applied(0).data(), data);
}

#[test]
fn a_single_member_applies_small_batches_itself_and_keeps_log_order() {
    // A snapshot every 20 entries: the apply thread's syncs come between
    // the batches the raft thread applies.
    let c = Cluster::with_snapshots(1, 20, 10);
    c.leader(T);
    let one = payloads("one", 60);
    let mut idx = propose_all(&c, 0, &one);
    let burst = payloads("burst", 400);
    let node = c.node(0);
    idx.extend(c.rt.block_on(futures_join(burst.iter().map(|d| node.propose(d)))));
    let more = payloads("more", 20);
    idx.extend(propose_all(&c, 0, &more));
    let all: Vec<Vec<u8>> = one.into_iter().chain(burst).chain(more).collect();

    let a = c.applied(0);
    assert_eq!(a.entries.len(), all.len(), "each proposal applied once");
    assert!(
        a.entries.windows(2).all(|w| w[0].0 < w[1].0),
        "applied in log order"
    );
    let at: BTreeMap<u64, &Vec<u8>> = a.entries.iter().map(|(i, d)| (*i, d)).collect();
    for (d, i) in all.iter().zip(&idx) {
        assert_eq!(
            at[i], d,
            "the proposer of {i} was answered with its own entry"
        );
    }
    let appliers = c.members[0]
        .as_ref()
        .unwrap()
        .appliers
        .lock()
        .unwrap()
        .clone();
    assert!(
        appliers.contains_key("cairn-raft") && appliers.contains_key("cairn-raft-apply"),
        "small batches on the raft thread, large ones on the apply thread: {appliers:?}"
    );
    c.wait_compacted(0, 400, T);
}

#[test]
fn concurrent_proposals_all_apply_exactly_once() {
    let c = Cluster::new(3);
    let l = c.leader(T);
    let node = c.node(l);
    let data = payloads("conc", 300);
    let results: Vec<u64> = c.rt.block_on(async {
        let futs = data.iter().map(|d| node.propose(d));
        futures_join(futs).await
    });
    assert_eq!(results.len(), data.len());
    let applied = c.converge(&[0, 1, 2], *results.iter().max().unwrap(), T);
    let mut got = applied.data();
    got.sort();
    assert_eq!(got, data, "each proposal applied once");
}

async fn futures_join<F: std::future::Future<Output = Result<u64, Error>>>(
    futs: impl Iterator<Item = F>,
) -> Vec<u64> {
    let mut set = Vec::new();
    for f in futs {
        set.push(f);
    }
    let mut out = Vec::new();
    // Poll them together: a join over all of them.
    let joined = join_all(set).await;
    for r in joined {
        out.push(r.expect("proposal applied"));
    }
    out
}

/// A minimal join-all (no extra dependency).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    struct JoinAll<F: std::future::Future> {
        futs: Vec<Option<Pin<Box<F>>>>,
        out: Vec<Option<F::Output>>,
    }
    // Futures are boxed and outputs never pinned: moving the struct is fine.
    impl<F: std::future::Future> Unpin for JoinAll<F> {}
    impl<F: std::future::Future> std::future::Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.get_mut();
            let mut pending = false;
            for (i, f) in this.futs.iter_mut().enumerate() {
                if let Some(fut) = f {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            this.out[i] = Some(v);
                            *f = None;
                        }
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(
                    this.out
                        .iter_mut()
                        .map(|o| o.take().expect("ready"))
                        .collect(),
                )
            }
        }
    }
    let n = futs.len();
    JoinAll {
        futs: futs.into_iter().map(|f| Some(Box::pin(f))).collect(),
        out: (0..n).map(|_| None).collect(),
    }
    .await
}

#[test]
fn three_members_apply_the_same_sequence() {
    let c = Cluster::new(3);
    let l = c.leader(T);
    let data = payloads("three", 100);
    // Through the leader and through followers (forwarded to the leader).
    let mut last = 0;
    for (k, d) in data.iter().enumerate() {
        last = c.propose((l + k) % 3, d).expect("applied");
    }
    let a = c.converge(&[0, 1, 2], last, T);
    assert_eq!(a.data(), data);
}

#[test]
fn five_members_apply_the_same_sequence() {
    let c = Cluster::new(5);
    let l = c.leader(T);
    let data = payloads("five", 60);
    let idx = propose_all(&c, l, &data);
    let a = c.converge(&[0, 1, 2, 3, 4], *idx.last().unwrap(), T);
    assert_eq!(a.data(), data);
}

#[test]
fn killing_the_leader_elects_a_new_one_and_loses_no_committed_entry() {
    let mut c = Cluster::new(3);
    let l = c.leader(T);
    let before = payloads("before", 40);
    let idx = propose_all(&c, l, &before);
    c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    c.stop(l);
    let rest: Vec<usize> = c.running();
    let l2 = c.leader_among(&rest, T);
    assert_ne!(l2, l);
    let after = payloads("after", 40);
    let idx2 = propose_all(&c, l2, &after);
    let a = c.converge(&rest, *idx2.last().unwrap(), T);
    let mut want = before.clone();
    want.extend(after.clone());
    assert_eq!(a.data(), want);
    // The old leader comes back and catches up from the log.
    c.start(l, false);
    let a = c.converge(&[0, 1, 2], *idx2.last().unwrap(), T);
    assert_eq!(a.data(), want);
}

#[test]
fn a_restarted_member_catches_up_from_the_log() {
    let mut c = Cluster::new(3);
    let l = c.leader(T);
    let f = (l + 1) % 3;
    let first = payloads("first", 30);
    propose_all(&c, l, &first);
    c.stop(f);
    let second = payloads("second", 30);
    let idx = propose_all(&c, l, &second);
    c.start(f, false);
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let mut want = first;
    want.extend(second);
    assert_eq!(a.data(), want);
}

/// How far a member stopped just now can have logged: the leader's commit
/// index, since nothing is pending. (What the member *applied* can lag what it
/// logged: an entry appended there may not have been known committed yet, and
/// a leader that still holds it would catch the member up from the log.)
fn log_reach(c: &Cluster, leader: usize) -> u64 {
    c.node(leader).status().commit
}

#[test]
fn a_member_far_behind_catches_up_by_snapshot() {
    // Compaction every 50 entries, 10 kept behind: a member that misses 300
    // entries can only be caught up by a snapshot.
    let mut c = Cluster::with_snapshots(3, 50, 10);
    let l = c.leader(T);
    let f = (l + 1) % 3;
    let first = payloads("early", 20);
    propose_all(&c, l, &first);
    c.stop(f);
    let behind = log_reach(&c, l);
    let missed = payloads("missed", 300);
    let idx = propose_all(&c, l, &missed);
    // Wait until the leader's log no longer holds what the member lacks.
    let deadline = std::time::Instant::now() + T;
    while c.node(l).status().snapshot_index <= behind + 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the leader never compacted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.start(f, false);
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let mut want = first;
    want.extend(missed);
    assert_eq!(a.data(), want);
    let m = c.metrics_when(f, T, |m| m.snapshots_installed >= 1);
    assert_eq!(m.snapshots_installed, 1, "caught up by a snapshot");
    // Sent by whichever member led at the time (a slow host can see an
    // election while the member was away).
    let deadline = std::time::Instant::now() + T;
    let sent = || -> u64 { (0..3).map(|i| c.node(i).metrics().snapshots_sent).sum() };
    while sent() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(sent() >= 1, "no member reports a snapshot sent");
    // It keeps following the log afterwards.
    let more = payloads("more", 20);
    let idx = propose_all(&c, l, &more);
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    want.extend(more);
    assert_eq!(a.data(), want);
    // And it can lead: with the old leader gone, the two left elect one of
    // themselves and go on (raft must know the snapshot is applied).
    c.stop(l);
    let rest = c.running();
    let l2 = c.leader_among(&rest, T);
    let last = payloads("last", 10);
    let idx = propose_all(&c, l2, &last);
    let a = c.converge(&rest, *idx.last().unwrap(), T);
    want.extend(last);
    assert_eq!(a.data(), want);
}

#[test]
fn a_crash_after_a_snapshot_is_recorded_but_before_it_is_applied_restores_it_at_start() {
    let mut c = Cluster::with_snapshots(3, 50, 10);
    let l = c.leader(T);
    let f = (l + 1) % 3;
    propose_all(&c, l, &payloads("early", 10));
    c.stop(f);
    let behind = log_reach(&c, l);
    // What its state machine holds durably now (nothing, if never synced).
    let before = std::fs::read(c.specs[f].dir.join("sm")).ok();
    let missed = payloads("missed", 200);
    let idx = propose_all(&c, l, &missed);
    c.wait_compacted(l, behind, T);
    c.start(f, false);
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let m = c.metrics_when(f, T, |m| m.snapshots_installed >= 1);
    assert_eq!(m.snapshots_installed, 1, "caught up by a snapshot");
    c.stop(f);
    // As if the member had crashed after writing the snapshot's marker but
    // before its state machine took the data.
    match &before {
        Some(b) => std::fs::write(c.specs[f].dir.join("sm"), b).unwrap(),
        None => std::fs::remove_file(c.specs[f].dir.join("sm")).unwrap(),
    }
    c.start(f, false);
    let more = payloads("more", 5);
    let idx = propose_all(&c, l, &more);
    let b = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let mut want = a.data();
    want.extend(more);
    assert_eq!(b.data(), want);
    // Once past them, no snapshot file is left behind.
    c.stop(f);
    c.start(f, false);
    c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let snaps: Vec<_> = std::fs::read_dir(c.specs[f].dir.join("snap"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .collect();
    assert!(snaps.is_empty(), "{snaps:?}");
}

#[test]
fn a_partitioned_minority_cannot_commit_and_converges_after_healing() {
    let c = Cluster::new(5);
    let l = c.leader(T);
    // The minority: two members that are not the leader.
    let minority: Vec<usize> = (0..5).filter(|&i| i != l).take(2).collect();
    let majority: Vec<usize> = (0..5).filter(|i| !minority.contains(i)).collect();
    let base = payloads("base", 10);
    let idx = propose_all(&c, l, &base);
    c.converge(&[0, 1, 2, 3, 4], *idx.last().unwrap(), T);
    for &m in &minority {
        c.members[m].as_ref().unwrap().gate.close();
    }
    // The majority keeps committing.
    let during = payloads("during", 30);
    let idx = propose_all(&c, l, &during);
    c.converge(&majority, *idx.last().unwrap(), T);
    // The minority cannot: a proposal there fails, and nothing new applies.
    let before = c.applied(minority[0]);
    let r = c.propose(minority[0], b"minority-write");
    assert!(
        matches!(
            r,
            Err(Error::NoLeader | Error::Timeout | Error::TimeoutLeaderFail | Error::LeaderChanged)
        ),
        "minority proposal: {r:?}"
    );
    assert_eq!(c.applied(minority[0]).entries, before.entries);
    for &m in &majority {
        assert!(!c.applied(m).data().contains(&b"minority-write".to_vec()));
    }
    // Heal: everyone converges on the majority's history.
    for &m in &minority {
        c.members[m].as_ref().unwrap().gate.open();
    }
    let after = payloads("healed", 10);
    let l2 = c.leader(T);
    let idx = propose_all(&c, l2, &after);
    let a = c.converge(&[0, 1, 2, 3, 4], *idx.last().unwrap(), T);
    let mut want = base;
    want.extend(during);
    // A proposal made on the minority may have been forwarded before the
    // cut; it must then appear exactly once, everywhere.
    let got: Vec<Vec<u8>> = a
        .data()
        .into_iter()
        .filter(|d| d.as_slice() != b"minority-write")
        .collect();
    want.extend(after);
    assert_eq!(got, want);
}

#[test]
fn leadership_transfers_to_the_chosen_member() {
    let c = Cluster::new(3);
    let l = c.leader(T);
    let to = (l + 2) % 3;
    c.rt.block_on(c.node(l).transfer_leadership(c.specs[to].id))
        .expect("transfer");
    assert_eq!(c.leader(T), to);
    // A follower cannot move leadership.
    let r = c.rt.block_on(c.node(l).transfer_leadership(c.specs[to].id));
    assert_eq!(r, Err(Error::NotLeader));
    let d = payloads("after-transfer", 10);
    let idx = propose_all(&c, to, &d);
    assert_eq!(c.converge(&[0, 1, 2], *idx.last().unwrap(), T).data(), d);
}

#[test]
fn a_whole_cluster_restarts_from_disk() {
    let mut c = Cluster::with_snapshots(3, 40, 10);
    let l = c.leader(T);
    let first = payloads("gen1", 100);
    let idx = propose_all(&c, l, &first);
    c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.start(i, false);
    }
    // Every member replays to the same state, then goes on.
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    assert_eq!(a.data(), first);
    let l = c.leader(T);
    let second = payloads("gen2", 20);
    let idx = propose_all(&c, l, &second);
    let a = c.converge(&[0, 1, 2], *idx.last().unwrap(), T);
    let mut want = first;
    want.extend(second);
    assert_eq!(a.data(), want);
}

#[test]
fn members_are_added_as_learners_promoted_and_removed_for_good() {
    let mut c = Cluster::new(3);
    let l = c.leader(T);
    let d1 = payloads("m1", 20);
    propose_all(&c, l, &d1);
    // Add a learner with a fresh port and directory.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (m, members) =
        c.rt.block_on(c.node(l).add_member(vec![url.clone()], true))
            .expect("add learner");
    assert!(m.is_learner);
    assert_eq!(members.len(), 4);
    // A second learner is refused (etcd allows one).
    let r = c.rt.block_on(
        c.node(l)
            .add_member(vec![format!("http://127.0.0.1:{}", free_port())], true),
    );
    assert_eq!(r.err(), Some(Error::TooManyLearners));
    // Start it, joining the existing cluster.
    let dir = c.tmp.path().join("learner");
    std::fs::create_dir_all(&dir).unwrap();
    c.specs.push(Spec {
        id: m.id,
        url,
        port,
        dir,
    });
    c.members.push(None);
    c.start(3, true);
    let d2 = payloads("m2", 20);
    let idx = propose_all(&c, l, &d2);
    let a = c.converge(&[0, 1, 2, 3], *idx.last().unwrap(), T);
    let mut want = d1;
    want.extend(d2);
    assert_eq!(a.data(), want);
    assert!(c.node(3).status().is_learner);
    // A joining member learns the configuration from the leader's snapshot.
    let joined = c.metrics_when(3, T, |m| m.snapshots_installed >= 1);
    assert_eq!(joined.snapshots_installed, 1);
    assert_eq!(c.node(3).members().len(), 4);
    // Promote it; it votes from then on. The leader counts it in sync once
    // it hears the learner's acknowledgement, which may trail what the
    // learner applied: until then the answer is etcd's "retry later".
    let l = c.leader(T);
    let deadline = std::time::Instant::now() + T;
    let members = loop {
        match c.rt.block_on(c.node(l).promote_member(m.id)) {
            Err(Error::LearnerNotReady) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => break r.expect("promote"),
        }
    };
    assert!(members.iter().all(|x| !x.is_learner));
    let r = c.rt.block_on(c.node(l).promote_member(m.id));
    assert_eq!(r.err(), Some(Error::NotLearner));
    // Remove a follower that is not the new member.
    let victim = (0..3).find(|&i| i != l).unwrap();
    let vid = c.specs[victim].id;
    let members = c.rt.block_on(c.node(l).remove_member(vid)).expect("remove");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|x| x.id != vid));
    // The removed member stops and cannot come back.
    let deadline = std::time::Instant::now() + T;
    while !c.node(victim).is_removed() {
        assert!(
            std::time::Instant::now() < deadline,
            "removed member did not notice"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.stop(victim);
    let gate = Gate::default();
    let cfg = c.config(victim, false, &gate);
    let r = start_node(cfg, &c.specs[victim].dir, &c.rt);
    assert!(
        matches!(r, Err(Error::Removed)),
        "restart of a removed member"
    );
    // The rest go on, four entries later.
    let rest: Vec<usize> = c.running();
    let l = c.leader_among(&rest, T);
    let d3 = payloads("m3", 10);
    let idx = propose_all(&c, l, &d3);
    let a = c.converge(&rest, *idx.last().unwrap(), T);
    want.extend(d3);
    assert_eq!(a.data(), want);
}

#[test]
fn reads_wait_for_the_read_index_and_fail_fast_without_a_leader() {
    let mut c = Cluster::new(3);
    let l = c.leader(T);
    let f = (l + 1) % 3;
    let idx = c.propose(l, b"x").unwrap();
    // A read on a follower returns an index at or past every write it saw
    // acknowledged, and the follower has applied it by then.
    let ri = c.rt.block_on(c.node(f).read_index()).expect("read index");
    assert!(ri >= idx, "read index {ri} < {idx}");
    assert!(c.applied(f).last >= ri);
    // Many concurrent reads share rounds and all succeed.
    let node = c.node(f);
    let outs =
        c.rt.block_on(join_all((0..200).map(|_| node.read_index()).collect()));
    assert!(outs.iter().all(|r| matches!(r, Ok(i) if *i >= idx)));
    // Alone, a member has no leader: reads fail.
    let others: Vec<usize> = (0..3).filter(|&i| i != f).collect();
    for i in others {
        c.stop(i);
    }
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = c.rt.block_on(c.node(f).read_index());
        if matches!(r, Err(Error::NoLeader)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still reading without a quorum: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
