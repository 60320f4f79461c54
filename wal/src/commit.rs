//! Group commit.
//!
//! Appenders put their records in one queue (in the order they call `submit`,
//! which is the order of the log). At any time at most one *leader* holds the
//! writer: it takes everything queued — bounded by bytes and record count —
//! writes it with one write and one fdatasync, and only then completes every
//! submission in the batch. Whoever arrives while the leader is busy queues
//! behind it and is carried by the next batch.
//!
//! Who leads:
//! * A thread blocked in [`Ticket::wait`] that finds no leader becomes the leader
//!   itself: a lone appender writes and syncs on its own thread, with no handoff
//!   to pay on the latency of an fdatasync.
//! * When a leader is done with its own records and more are queued, it hands
//!   leadership to a thread waiting on one of them, or — when only async tasks
//!   are waiting — to the background leader thread, which never blocks a task's
//!   executor.
//!
//! Invariants:
//! * A submission is completed with `Ok` only after the fdatasync covering its
//!   last byte returned.
//! * `leader_active` is true exactly while some thread owns (or has been handed)
//!   the right to take batches; every queued submission is eventually taken,
//!   because whoever clears `leader_active` does so only with an empty queue or
//!   with no one waiting, and every waiter re-checks it before sleeping.
//! * Lock order: `state` before a slot's lock; the writer lock is taken only by
//!   the leader and never while `state` is held.
//! * After a failed write the log is poisoned: the failed batch gets the error,
//!   everything queued and everything submitted later gets `Poisoned`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

use crate::error::{Result, WalError};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::scan::IndexTracker;
use crate::segment::SegmentFile;
use crate::writer::Writer;
use crate::{AppendInfo, DurablePosition, WalOptions};

pub(crate) struct Submission {
    pub records: Vec<Record>,
    pub bytes: usize,
    pub slot: Arc<Slot>,
}

/// Where a submission's outcome is delivered.
#[derive(Default)]
pub(crate) struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    result: Option<Result<AppendInfo>>,
    waiter: Waiter,
    /// Set by a leader handing over leadership to this slot's waiting thread.
    lead: bool,
}

#[derive(Default)]
enum Waiter {
    #[default]
    None,
    Thread(Thread),
    Task(Waker),
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().expect("slot lock")
    }

    fn complete(&self, result: Result<AppendInfo>) {
        let waiter = {
            let mut g = self.lock();
            g.result = Some(result);
            std::mem::take(&mut g.waiter)
        };
        match waiter {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(w) => w.wake(),
            Waiter::None => {}
        }
    }

    fn is_done(&self) -> bool {
        self.lock().result.is_some()
    }

    /// Hands leadership to this slot's thread if a thread is waiting on it.
    fn offer_leadership(&self) -> bool {
        let mut g = self.lock();
        if let Waiter::Thread(t) = &g.waiter {
            t.unpark();
            g.lead = true;
            true
        } else {
            false
        }
    }

    fn has_task(&self) -> bool {
        matches!(self.lock().waiter, Waiter::Task(_))
    }
}

/// Bookkeeping under the queue lock.
pub(crate) struct State {
    pub queue: VecDeque<Submission>,
    pub leader_active: bool,
    pub failed: Option<Arc<WalError>>,
    pub closed: bool,
    /// Index continuity in submission order (= log order).
    pub tracker: IndexTracker,
    /// Frame sizes of the latest metadata, snapshot marker and hard state — what a
    /// new segment restates — to check that every record fits in a new segment.
    pub state_lens: [usize; 3],
    pub durable: DurablePosition,
}

#[derive(Default)]
struct BgState {
    requested: bool,
    shutdown: bool,
}

/// Everything appenders and the leader share.
pub(crate) struct Shared {
    pub opts: WalOptions,
    pub state: Mutex<State>,
    pub writer: Mutex<Writer>,
    pub segments: Mutex<Vec<SegmentFile>>,
    pub metrics: Metrics,
    bg: Mutex<BgState>,
    bg_cv: Condvar,
    /// Held for the life of the log: an exclusive lock on the directory.
    _dir_lock: std::fs::File,
}

impl Shared {
    pub fn new(
        opts: WalOptions,
        state: State,
        writer: Writer,
        segments: Vec<SegmentFile>,
        dir_lock: std::fs::File,
    ) -> Self {
        Shared {
            opts,
            state: Mutex::new(state),
            writer: Mutex::new(writer),
            segments: Mutex::new(segments),
            metrics: Metrics::new(),
            bg: Mutex::new(BgState::default()),
            bg_cv: Condvar::new(),
            _dir_lock: dir_lock,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    /// Hands leadership to the background thread; false once it has stopped,
    /// in which case the caller must lead itself.
    fn request_background_leader(&self) -> bool {
        let mut g = self.bg.lock().expect("bg lock");
        if g.shutdown {
            return false;
        }
        g.requested = true;
        self.bg_cv.notify_one();
        true
    }

    /// Body of the background leader thread.
    pub fn background_leader(self: Arc<Self>) {
        loop {
            {
                let mut g = self.bg.lock().expect("bg lock");
                while !g.requested && !g.shutdown {
                    g = self.bg_cv.wait(g).expect("bg lock");
                }
                if !g.requested {
                    return;
                }
                g.requested = false;
            }
            self.lead(Role::Background);
        }
    }

    pub fn stop_background_leader(&self) {
        self.bg.lock().expect("bg lock").shutdown = true;
        self.bg_cv.notify_one();
    }

    /// Makes sure someone will write what is queued; used when a caller stops
    /// caring about the outcome (a dropped ticket, closing the log).
    pub fn ensure_progress(&self) {
        let mut st = self.state();
        if !st.leader_active && !st.queue.is_empty() {
            st.leader_active = true;
            drop(st);
            if !self.request_background_leader() {
                self.lead(Role::Background);
            }
        }
    }

    /// Writes batches until the caller's own records are durable (or, for the
    /// background leader, until no async waiter is left), then hands over.
    /// Precondition: the caller set `leader_active` or was handed leadership.
    fn lead(&self, mut role: Role<'_>) {
        let mut writer = self.writer.lock().expect("writer lock");
        loop {
            let batch = {
                let mut st = self.state();
                if st.queue.is_empty() {
                    st.leader_active = false;
                    return;
                }
                take_batch(&mut st.queue, &self.opts)
            };
            match writer.write_batch(&batch, &self.metrics, &self.segments) {
                Ok(infos) => {
                    self.state().durable = writer.position();
                    for (sub, info) in batch.iter().zip(infos) {
                        sub.slot.complete(Ok(info));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "wal: write failed; refusing further appends");
                    let poisoned = Arc::new(e.clone());
                    let rest = {
                        let mut st = self.state();
                        st.failed = Some(poisoned.clone());
                        st.leader_active = false;
                        std::mem::take(&mut st.queue)
                    };
                    for sub in batch {
                        sub.slot.complete(Err(e.clone()));
                    }
                    for sub in rest {
                        sub.slot.complete(Err(WalError::Poisoned(poisoned.clone())));
                    }
                    return;
                }
            }
            // Decide who writes the next batch.
            let mut st = self.state();
            if st.queue.is_empty() {
                st.leader_active = false;
                return;
            }
            if let Role::Thread(me) = role
                && !me.is_done()
            {
                continue; // our own records are still queued
            }
            if st.queue.iter().any(|s| s.slot.offer_leadership()) {
                return;
            }
            match role {
                Role::Background => continue,
                Role::Thread(_) => {
                    if st.queue.iter().any(|s| s.slot.has_task()) {
                        drop(st);
                        if !self.request_background_leader() {
                            role = Role::Background;
                            continue;
                        }
                    } else {
                        // Only tickets nobody waits on yet: whoever waits next
                        // (or drops one) takes over.
                        st.leader_active = false;
                    }
                    return;
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Role<'a> {
    Thread(&'a Arc<Slot>),
    Background,
}

/// Takes submissions from the front of the queue up to the batch limits (but
/// always at least one).
fn take_batch(queue: &mut VecDeque<Submission>, opts: &WalOptions) -> Vec<Submission> {
    let (mut bytes, mut records) = (0usize, 0usize);
    let mut n = 0;
    for sub in queue.iter() {
        if n > 0
            && (bytes + sub.bytes > opts.max_batch_bytes
                || records + sub.records.len() > opts.max_batch_records)
        {
            break;
        }
        bytes += sub.bytes;
        records += sub.records.len();
        n += 1;
    }
    queue.drain(..n).collect()
}

/// A submitted append. Wait for it ([`Ticket::wait`]) or await it; it resolves
/// once its records are durable. Dropping a ticket does not cancel the append:
/// its records are still written, in order, with the next batch.
#[must_use = "a ticket resolves when the records are durable; wait for it or await it"]
pub struct Ticket {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) finished: bool,
}

impl Ticket {
    /// Blocks until the records are durable. The calling thread may do the
    /// write and fdatasync itself, for its own and others' records.
    pub fn wait(mut self) -> Result<AppendInfo> {
        let result = self.wait_inner();
        self.finished = true;
        result
    }

    fn wait_inner(&self) -> Result<AppendInfo> {
        loop {
            {
                let mut g = self.slot.lock();
                if let Some(r) = g.result.take() {
                    return r;
                }
                if g.lead {
                    g.lead = false;
                    drop(g);
                    self.shared.lead(Role::Thread(&self.slot));
                    continue;
                }
                g.waiter = Waiter::Thread(std::thread::current());
            }
            {
                let mut st = self.shared.state();
                if !st.leader_active {
                    st.leader_active = true;
                    drop(st);
                    self.shared.lead(Role::Thread(&self.slot));
                    continue;
                }
            }
            std::thread::park();
        }
    }
}

impl Future for Ticket {
    type Output = Result<AppendInfo>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        {
            let mut g = self.slot.lock();
            if let Some(r) = g.result.take() {
                drop(g);
                self.finished = true;
                return Poll::Ready(r);
            }
            match &g.waiter {
                Waiter::Task(w) if w.will_wake(cx.waker()) => {}
                _ => g.waiter = Waiter::Task(cx.waker().clone()),
            }
        }
        self.shared.ensure_progress();
        Poll::Pending
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.finished && !self.slot.is_done() {
            self.shared.ensure_progress();
        }
    }
}
