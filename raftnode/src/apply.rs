//! The apply side: the state machine the node drives, and the thread that
//! feeds it committed entries so that applying never delays raft's ticks or
//! the WAL.
//!
//! Entries reach the state machine in log order, each exactly once per run;
//! after a restart the entries after the last WAL snapshot marker are handed
//! over again, and the state machine must answer those at or below its own
//! durable index without changing anything (the MVCC store's consistent
//! index does exactly that).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::member::Member;

/// A log position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub index: u64,
    pub term: u64,
}

/// A membership change, as committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Added(Member),
    Promoted(u64),
    Removed(u64),
    /// New attributes (name, client URLs) or peer URLs of a member.
    Updated(Member),
}

/// What the server (or a test) plugs into the node.
pub trait StateMachine: Send + 'static {
    /// What a proposer learns once its proposal is applied.
    type Output: Send + 'static;

    /// The last entry whose effects survive a crash. Read once at start.
    fn durable_index(&self) -> u64;

    /// Applies a committed proposal (the bytes the proposer gave). An entry
    /// at or below the durable index it had at start is a replay and must
    /// change nothing.
    fn apply(&mut self, entry: EntryId, data: &[u8]) -> Self::Output;

    /// A committed entry that is not a proposal: a new leader's empty entry
    /// (`None`), or a membership change the node has already taken.
    fn apply_other(&mut self, entry: EntryId, change: Option<&MembershipChange>);

    /// Makes everything applied durable; returns the durable index. The node
    /// calls it before it releases the log below that index.
    fn sync(&mut self) -> std::result::Result<u64, String>;

    /// Replaces the whole state with a snapshot received from the leader
    /// (a file in the node's snapshot directory, as the leader's
    /// [`SnapshotSource`] produced it); returns the index it covers.
    fn restore(&mut self, file: &Path) -> std::result::Result<u64, String>;
}

/// Consistent views of the state machine, for followers that need a
/// snapshot. Called from its own thread, beside the apply thread.
pub trait SnapshotSource: Send + Sync + 'static {
    /// A view of everything applied so far (at least up to every index the
    /// node has been told is applied): its index and its bytes.
    fn open(&self) -> std::io::Result<(u64, Box<dyn Read + Send>)>;
}

/// What a waiter gets.
#[derive(Debug)]
pub(crate) enum Outcome<O> {
    Output(O),
    Conf,
}

struct Waiter<O> {
    tx: oneshot::Sender<Result<Outcome<O>>>,
    deadline: Instant,
    /// Leader changes seen when it was registered.
    epoch: u64,
    index: Option<u64>,
}

struct WaitersInner<O> {
    by_id: HashMap<u64, Waiter<O>>,
    /// Proposals this member made as leader, by the index they got.
    by_index: BTreeMap<u64, u64>,
}

/// Proposers waiting for their entries, shared by the node loop (which
/// registers, places and expires them) and the apply thread (which completes
/// them).
pub(crate) struct Waiters<O> {
    inner: Mutex<WaitersInner<O>>,
}

impl<O> Waiters<O> {
    pub fn new() -> Self {
        Waiters {
            inner: Mutex::new(WaitersInner {
                by_id: HashMap::new(),
                by_index: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaitersInner<O>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(
        &self,
        id: u64,
        deadline: Instant,
        epoch: u64,
    ) -> oneshot::Receiver<Result<Outcome<O>>> {
        let (tx, rx) = oneshot::channel();
        self.lock().by_id.insert(
            id,
            Waiter {
                tx,
                deadline,
                epoch,
                index: None,
            },
        );
        rx
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Records the index a proposal got in this (leader's) log.
    pub fn place(&self, id: u64, index: u64) {
        let mut w = self.lock();
        if let Some(x) = w.by_id.get_mut(&id) {
            x.index = Some(index);
            w.by_index.insert(index, id);
        }
    }

    pub fn complete(&self, id: u64, outcome: Result<Outcome<O>>) -> bool {
        let mut w = self.lock();
        let Some(x) = w.by_id.remove(&id) else {
            return false;
        };
        if let Some(i) = x.index {
            w.by_index.remove(&i);
        }
        let failed = outcome.is_err();
        let _ = x.tx.send(outcome);
        !failed
    }

    /// Entry `index` has been applied: proposals placed at or below it that
    /// are still waiting were replaced by another leader's entries.
    pub fn fail_lost_through(&self, index: u64) -> usize {
        let mut w = self.lock();
        let mut lost = Vec::new();
        while let Some((&i, &id)) = w.by_index.first_key_value() {
            if i > index {
                break;
            }
            w.by_index.remove(&i);
            lost.push(id);
        }
        let mut n = 0;
        for id in lost {
            if let Some(x) = w.by_id.remove(&id) {
                let _ = x.tx.send(Err(Error::LeaderChanged));
                n += 1;
            }
        }
        n
    }

    /// Fails waiters past their deadline; returns how many.
    pub fn expire(&self, now: Instant, epoch: u64) -> usize {
        let mut w = self.lock();
        let expired: Vec<u64> = w
            .by_id
            .iter()
            .filter(|(_, x)| x.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in &expired {
            if let Some(x) = w.by_id.remove(id) {
                if let Some(i) = x.index {
                    w.by_index.remove(&i);
                }
                let e = if x.epoch != epoch {
                    Error::TimeoutLeaderFail
                } else {
                    Error::Timeout
                };
                let _ = x.tx.send(Err(e));
            }
        }
        expired.len()
    }

    pub fn fail_all(&self, e: Error) {
        let mut w = self.lock();
        w.by_index.clear();
        for (_, x) in w.by_id.drain() {
            let _ = x.tx.send(Err(e.clone()));
        }
    }
}

/// A committed entry on its way to the state machine.
pub(crate) struct Committed {
    pub id: EntryId,
    pub what: What,
}

pub(crate) enum What {
    Proposal {
        request: u64,
        data: Bytes,
    },
    /// No proposal; `request` (if not 0) is a configuration change that
    /// changed nothing.
    Empty {
        request: u64,
    },
    Membership {
        request: u64,
        change: MembershipChange,
    },
}

pub(crate) enum ApplyTask {
    Entries(Vec<Committed>),
    Restore {
        file: PathBuf,
        reply: Sender<std::result::Result<u64, String>>,
    },
    Sync,
}

/// What the apply thread reports to the node loop.
pub(crate) enum Report {
    Applied(u64),
    Synced(std::result::Result<u64, String>),
}

/// The apply thread's loop; returns when the task channel closes.
pub(crate) fn run<S: StateMachine>(
    mut sm: S,
    tasks: Receiver<ApplyTask>,
    report: impl Fn(Report),
    waiters: &Waiters<S::Output>,
    counters: &crate::node::Counters,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(task) = tasks.recv() {
        match task {
            ApplyTask::Entries(list) => {
                let mut last = None;
                for c in list {
                    match c.what {
                        What::Proposal { request, data } => {
                            let out = sm.apply(c.id, &data);
                            waiters.complete(request, Ok(Outcome::Output(out)));
                        }
                        What::Empty { request } => {
                            sm.apply_other(c.id, None);
                            if request != 0 {
                                waiters.complete(request, Ok(Outcome::Conf));
                            }
                        }
                        What::Membership { request, change } => {
                            sm.apply_other(c.id, Some(&change));
                            waiters.complete(request, Ok(Outcome::Conf));
                        }
                    }
                    let lost = waiters.fail_lost_through(c.id.index);
                    counters.failed.fetch_add(lost as u64, Relaxed);
                    counters.applied.store(c.id.index, Relaxed);
                    last = Some(c.id.index);
                }
                if let Some(i) = last {
                    report(Report::Applied(i));
                }
            }
            ApplyTask::Restore { file, reply } => {
                let r = sm.restore(&file);
                if let Ok(i) = r {
                    counters.applied.store(i, Relaxed);
                }
                let _ = reply.send(r);
            }
            ApplyTask::Sync => report(Report::Synced(sm.sync())),
        }
    }
}
