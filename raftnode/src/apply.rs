//! The apply side: the state machine the node drives, and the thread that
//! feeds it committed entries so that applying never delays raft's ticks or
//! the WAL. The one exception: in a one-member cluster the driver applies
//! small batches itself while this thread is idle ([`InlineApply`]).
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
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
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
    /// at or below the durable index it had at start, or at or below the
    /// index its last [`StateMachine::restore`] returned, is a replay and
    /// must change nothing.
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
    /// Set when the node stops: later registrations fail at once.
    closed: Option<Error>,
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
                closed: None,
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
        let mut w = self.lock();
        if let Some(e) = &w.closed {
            let _ = tx.send(Err(e.clone()));
            return rx;
        }
        w.by_id.insert(
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

    /// Records the index a proposal got in this (leader's) log. A proposal
    /// this member placed there before lost its place: the entry at that
    /// index was replaced, so it was never committed.
    pub fn place(&self, id: u64, index: u64) {
        let mut w = self.lock();
        if !w.by_id.contains_key(&id) {
            return;
        }
        let replaced = w.by_index.insert(index, id);
        if let Some(x) = replaced.and_then(|old| w.by_id.remove(&old)) {
            let _ = x.tx.send(Err(Error::LeaderChanged));
        }
        if let Some(x) = w.by_id.get_mut(&id) {
            x.index = Some(index);
        }
    }

    /// The state machine was replaced by a snapshot covering `index`:
    /// proposals placed at or below it may be inside it, so nothing more is
    /// known of them.
    pub fn unknown_through(&self, index: u64) -> usize {
        let mut w = self.lock();
        let ids: Vec<u64> = w.by_index.range(..=index).map(|(_, &id)| id).collect();
        w.by_index.retain(|&i, _| i > index);
        let mut n = 0;
        for id in ids {
            if let Some(x) = w.by_id.remove(&id) {
                let _ = x.tx.send(Err(Error::TimeoutLeaderFail));
                n += 1;
            }
        }
        n
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

    /// Fails every waiter, and every later registration.
    pub fn fail_all(&self, e: Error) {
        let mut w = self.lock();
        w.closed = Some(e.clone());
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
    /// Already covered by the snapshot the state machine was restored from:
    /// applied again only to keep the sequence, its outcome is unknown.
    pub replay: bool,
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

/// The state machine, shared by the apply thread and the driver. The apply
/// thread takes every task the driver sends it; the driver may apply a
/// small batch of committed entries itself, on its own thread, when the
/// apply thread has nothing left to do (see [`InlineApply`]).
pub(crate) struct Applier<S> {
    sm: Mutex<S>,
    /// Tasks sent to the apply thread and not finished yet (their waiters
    /// answered, their reports sent). Raised by the driver before it sends,
    /// lowered by the apply thread after.
    queued: AtomicUsize,
}

impl<S> Applier<S> {
    pub fn new(sm: S) -> Self {
        Applier {
            sm: Mutex::new(sm),
            queued: AtomicUsize::new(0),
        }
    }
}

/// What applying a batch gives: the last index applied and each proposer's
/// answer, to be sent once raft has been told.
pub(crate) type Answers<O> = (u64, Vec<(u64, Result<Outcome<O>>)>);

/// The driver's way to the state machine, without its type.
pub(crate) trait InlineApply<O>: Send + Sync {
    /// Called by the driver before each task it sends the apply thread.
    fn sending(&self);

    /// Applies `list` on the calling thread when every task sent to the apply
    /// thread is finished, so log order holds; gives `list` back otherwise.
    fn apply_here(
        &self,
        list: Vec<Committed>,
        counters: &crate::node::Counters,
    ) -> std::result::Result<Option<Answers<O>>, Vec<Committed>>;
}

impl<S: StateMachine> InlineApply<S::Output> for Applier<S> {
    fn sending(&self) {
        self.queued.fetch_add(1, SeqCst);
    }

    fn apply_here(
        &self,
        list: Vec<Committed>,
        counters: &crate::node::Counters,
    ) -> std::result::Result<Option<Answers<S::Output>>, Vec<Committed>> {
        if self.queued.load(SeqCst) != 0 {
            return Err(list);
        }
        // Nothing queued: the apply thread has let go of the state machine
        // (it lowers `queued` only after), and gets nothing new before the
        // driver, the only sender, returns from here.
        let mut sm = match self.sm.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(list),
        };
        Ok(apply_list(&mut *sm, list, counters))
    }
}

/// Applies committed entries in order; `None` if the list was empty.
fn apply_list<S: StateMachine>(
    sm: &mut S,
    list: Vec<Committed>,
    counters: &crate::node::Counters,
) -> Option<Answers<S::Output>> {
    let mut done = Vec::new();
    let mut last = None;
    for c in list {
        match c.what {
            What::Proposal { request, data } => {
                let out = sm.apply(c.id, &data);
                done.push((
                    request,
                    if c.replay {
                        // The state machine skipped it: what it answered is
                        // not the proposal's outcome.
                        Err(Error::TimeoutLeaderFail)
                    } else {
                        Ok(Outcome::Output(out))
                    },
                ));
            }
            What::Empty { request } => {
                sm.apply_other(c.id, None);
                if request != 0 {
                    done.push((request, Ok(Outcome::Conf)));
                }
            }
            What::Membership { request, change } => {
                sm.apply_other(c.id, Some(&change));
                done.push((request, Ok(Outcome::Conf)));
            }
        }
        counters.applied.store(c.id.index, Relaxed);
        last = Some(c.id.index);
    }
    last.map(|l| (l, done))
}

/// Answers the proposers of an applied batch, and fails those whose index
/// was taken by another entry.
pub(crate) fn answer<O>(
    waiters: &Waiters<O>,
    counters: &crate::node::Counters,
    (last, done): Answers<O>,
) {
    for (request, outcome) in done {
        waiters.complete(request, outcome);
    }
    let lost = waiters.fail_lost_through(last);
    counters.failed.fetch_add(lost as u64, Relaxed);
}

/// The apply thread's loop; returns when the task channel closes.
pub(crate) fn run<S: StateMachine>(
    applier: &Applier<S>,
    tasks: Receiver<ApplyTask>,
    report: impl Fn(Report),
    waiters: &Waiters<S::Output>,
    counters: &crate::node::Counters,
) {
    while let Ok(task) = tasks.recv() {
        let mut sm = applier.sm.lock().unwrap_or_else(|e| e.into_inner());
        match task {
            ApplyTask::Entries(list) => {
                // Apply the batch, tell the driver, and only then answer the
                // proposers: a proposer that acts on its answer (say, a
                // membership change right after another) finds raft already
                // knowing the entry is applied.
                let applied = apply_list(&mut *sm, list, counters);
                drop(sm);
                if let Some(a) = applied {
                    report(Report::Applied(a.0));
                    answer(waiters, counters, a);
                }
            }
            ApplyTask::Restore { file, reply } => {
                let r = sm.restore(&file);
                drop(sm);
                if let Ok(i) = r {
                    counters.applied.store(i, Relaxed);
                }
                let _ = reply.send(r);
            }
            ApplyTask::Sync => {
                let r = sm.sync();
                drop(sm);
                report(Report::Synced(r));
            }
        }
        applier.queued.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn another_entry_at_a_placed_index_means_the_proposal_was_lost() {
        let w: Waiters<u32> = Waiters::new();
        let mut a = w.register(1, later(), 0);
        let mut b = w.register(2, later(), 0);
        w.place(1, 10);
        w.place(2, 11);
        // Entry 10 applied with another request's data: 1 is lost.
        assert_eq!(w.fail_lost_through(10), 1);
        assert_eq!(a.try_recv().unwrap().unwrap_err(), Error::LeaderChanged);
        assert!(b.try_recv().is_err(), "2 still waits");
        assert!(w.complete(2, Ok(Outcome::Output(7))));
        assert!(matches!(b.try_recv().unwrap(), Ok(Outcome::Output(7))));
    }

    #[test]
    fn a_new_proposal_at_the_same_index_replaces_the_old_one() {
        let w: Waiters<u32> = Waiters::new();
        let mut a = w.register(1, later(), 0);
        let _b = w.register(2, later(), 0);
        w.place(1, 10);
        w.place(2, 10);
        assert_eq!(a.try_recv().unwrap().unwrap_err(), Error::LeaderChanged);
        // Applying 10 as request 2 completes it; nothing else is failed.
        assert!(w.complete(2, Ok(Outcome::Output(1))));
        assert_eq!(w.fail_lost_through(10), 0);
    }

    #[test]
    fn a_snapshot_makes_placed_proposals_unknown_not_lost() {
        let w: Waiters<u32> = Waiters::new();
        let mut a = w.register(1, later(), 0);
        let mut b = w.register(2, later(), 0);
        w.place(1, 10);
        w.place(2, 20);
        assert_eq!(w.unknown_through(15), 1);
        assert_eq!(a.try_recv().unwrap().unwrap_err(), Error::TimeoutLeaderFail);
        // Applying 16..19 later says nothing about 1 any more.
        assert_eq!(w.fail_lost_through(19), 0);
        assert!(b.try_recv().is_err());
    }

    #[test]
    fn expiry_tells_timeouts_apart_by_leader_changes_and_closing_fails_late_comers() {
        let w: Waiters<u32> = Waiters::new();
        let past = Instant::now();
        let mut a = w.register(1, past, 0);
        let mut b = w.register(2, past, 3);
        assert_eq!(w.expire(Instant::now(), 3), 2);
        assert_eq!(a.try_recv().unwrap().unwrap_err(), Error::TimeoutLeaderFail);
        assert_eq!(b.try_recv().unwrap().unwrap_err(), Error::Timeout);
        w.fail_all(Error::Stopped);
        let mut c = w.register(3, later(), 0);
        assert_eq!(c.try_recv().unwrap().unwrap_err(), Error::Stopped);
    }
}
