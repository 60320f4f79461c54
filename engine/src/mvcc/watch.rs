//! Watchers: a stream of a key's (or range's) changes from a revision on.
//!
//! A watcher is *synced* when it has everything up to the current revision:
//! the applier hands it each new revision's events directly, without
//! blocking — if the watcher's stream is full, the watcher becomes *unsynced*
//! at that revision instead. Unsynced watchers (those created at a past
//! revision, and slow ones) are brought up to date by the syncer thread,
//! which reads history from a store snapshot, at most
//! [`WatchOptions::max_revisions`] revisions per response, and moves each
//! watcher back to the synced group once it has reached the current revision
//! (checked under the hub's lock, which the applier also takes to notify, so
//! no revision is missed or sent twice). A watcher whose next revision has
//! been compacted gets one response carrying the compaction revision and is
//! removed.
//!
//! Responses go into a bounded queue per [`WatchStream`], read with
//! [`WatchStream::recv`] (blocking) or [`WatchStream::poll_recv`] (async).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::index::Interval;
use super::kv::{Event, EventKind, KeyValue};
use super::request::RangeRequest;
use super::revision::Revision;
use super::store::{Inner, Store, lock};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Responses a stream holds before its watchers fall behind (etcd: 128).
    pub queue_len: usize,
    /// A synced watcher that asked for progress notifications and got no
    /// events in this long gets one (etcd's
    /// `--experimental-watch-progress-notify-interval`, 10 minutes).
    pub progress_interval: Duration,
    /// How often the syncer looks at unsynced watchers (etcd: 100 ms); it is
    /// also woken when one is added.
    pub sync_interval: Duration,
    /// Revisions per catch-up response (etcd: 1000).
    pub max_revisions: i64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            queue_len: 128,
            progress_interval: Duration::from_secs(600),
            sync_interval: Duration::from_millis(100),
            max_revisions: 1000,
        }
    }
}

/// etcd's `WatchCreateRequest`, as the store needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// Empty means `"\0"`.
    pub key: Vec<u8>,
    /// Empty: only `key`; `"\0"`: every key from `key`; else `[key, range_end)`.
    pub range_end: Vec<u8>,
    /// First revision to send (0: the next one).
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub progress_notify: bool,
    /// 0: the stream picks the lowest free id.
    pub watch_id: i64,
}

/// One response of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchResponse {
    pub watch_id: i64,
    /// In revision order; empty for a progress notification or a
    /// compaction cancel.
    pub events: Vec<Event>,
    /// The store's current revision when sent.
    pub revision: i64,
    /// Non-zero: the watcher's next revision was compacted (this is the
    /// compaction revision) and the watcher is gone.
    pub compact_revision: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    #[error("mvcc: store is closed")]
    Closed,
}

/// The bounded queue of one stream.
struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
    cap: usize,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<WatchResponse>,
    closed: bool,
    waker: Option<Waker>,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            cv: Condvar::new(),
            cap: cap.max(1),
        }
    }

    /// False if full.
    fn try_push(&self, r: WatchResponse) -> bool {
        let waker = {
            let mut s = lock(&self.state);
            if s.closed {
                return true;
            }
            if s.items.len() >= self.cap {
                return false;
            }
            s.items.push_back(r);
            s.waker.take()
        };
        self.cv.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn is_full(&self) -> bool {
        lock(&self.state).items.len() >= self.cap
    }

    fn close(&self) {
        let waker = {
            let mut s = lock(&self.state);
            s.closed = true;
            s.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

type WKey = (u64, i64);

struct Watcher {
    iv: Interval,
    /// The first revision not yet sent.
    next_rev: i64,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    synced: bool,
    /// Sent events since the last progress tick.
    sent: bool,
    queue: Arc<Queue>,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }
}

#[derive(Default)]
struct HubState {
    watchers: HashMap<WKey, Watcher>,
    /// Synced single-key watchers by key, and synced range watchers.
    singles: HashMap<Vec<u8>, Vec<WKey>>,
    ranges: Vec<WKey>,
    unsynced: HashSet<WKey>,
    next_stream: u64,
    stop: bool,
    last_progress: Option<Instant>,
}

impl HubState {
    fn link(&mut self, k: WKey) {
        let w = self.watchers.get_mut(&k).expect("watcher exists");
        w.synced = true;
        match &w.iv {
            Interval::Single(key) => self.singles.entry(key.clone()).or_default().push(k),
            Interval::Range { .. } => self.ranges.push(k),
        }
    }

    fn unlink(&mut self, k: WKey) {
        let Some(w) = self.watchers.get_mut(&k) else {
            return;
        };
        if !w.synced {
            return;
        }
        w.synced = false;
        match &w.iv {
            Interval::Single(key) => {
                if let Some(v) = self.singles.get_mut(key) {
                    v.retain(|x| *x != k);
                    if v.is_empty() {
                        self.singles.remove(key);
                    }
                }
            }
            Interval::Range { .. } => self.ranges.retain(|x| *x != k),
        }
    }

    fn remove(&mut self, k: WKey) -> Option<Watcher> {
        self.unlink(k);
        self.unsynced.remove(&k);
        self.watchers.remove(&k)
    }
}

pub(crate) struct Hub {
    state: Mutex<HubState>,
    /// Wakes the syncer.
    cv: Condvar,
    count: AtomicUsize,
    opts: WatchOptions,
}

impl Hub {
    pub fn new(opts: WatchOptions) -> Hub {
        Hub {
            state: Mutex::new(HubState::default()),
            cv: Condvar::new(),
            count: AtomicUsize::new(0),
            opts,
        }
    }

    /// The applier's hand-off of revision `rev`'s changes.
    pub fn notify(&self, rev: i64, events: &[Event]) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut s = lock(&self.state);
        let mut batches: HashMap<WKey, Vec<Event>> = HashMap::new();
        for e in events {
            let singles = s.singles.get(&e.kv.key).into_iter().flatten();
            let ranges = s
                .ranges
                .iter()
                .filter(|k| s.watchers[k].iv.contains(&e.kv.key));
            for k in singles.chain(ranges) {
                let w = &s.watchers[k];
                if w.next_rev <= rev && w.wants(e) {
                    batches.entry(*k).or_default().push(e.clone());
                }
            }
        }
        let mut fell_behind = false;
        for (k, events) in batches {
            let w = s.watchers.get_mut(&k).expect("linked watcher exists");
            let r = WatchResponse {
                watch_id: k.1,
                events,
                revision: rev,
                compact_revision: 0,
            };
            if w.queue.try_push(r) {
                w.next_rev = rev + 1;
                w.sent = true;
            } else {
                w.next_rev = rev;
                s.unlink(k);
                s.unsynced.insert(k);
                fell_behind = true;
            }
        }
        drop(s);
        if fell_behind {
            self.cv.notify_all();
        }
    }

    /// A compaction was scheduled: unsynced watchers below it get their
    /// answer soon.
    pub fn compacted(&self, _rev: i64) {
        if self.count.load(Ordering::Acquire) > 0 {
            self.cv.notify_all();
        }
    }

    pub fn stop(&self) {
        let mut s = lock(&self.state);
        s.stop = true;
        for w in s.watchers.values() {
            w.queue.close();
        }
        drop(s);
        self.cv.notify_all();
    }
}

/// Events of one catch-up read: revision and event.
type History = Vec<(i64, Event)>;

/// The syncer thread.
pub(crate) fn syncer(inner: Arc<Inner>) {
    let hub = &inner.hub;
    loop {
        {
            let s = lock(&hub.state);
            if s.stop {
                return;
            }
            let idle = s.unsynced.is_empty();
            let wait = if idle {
                hub.opts.sync_interval.max(Duration::from_millis(10))
            } else {
                hub.opts.sync_interval
            };
            let s = hub
                .cv
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if s.stop {
                return;
            }
        }
        // Catch up as long as there is progress to make.
        loop {
            match sync_once(&inner) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "watch catch-up failed; retrying");
                    break;
                }
            }
        }
        progress_tick(&inner);
    }
}

/// One catch-up round; true if any watcher moved forward.
fn sync_once(inner: &Inner) -> super::error::Result<bool> {
    let hub = &inner.hub;
    let compact_rev = super::store::compact_rev(inner);
    // Who is behind, and from where.
    let mut targets: Vec<(WKey, i64, Interval)> = Vec::new();
    {
        let mut s = lock(&hub.state);
        if s.unsynced.is_empty() {
            return Ok(false);
        }
        let keys: Vec<WKey> = s.unsynced.iter().copied().collect();
        for k in keys {
            let w = &s.watchers[&k];
            if w.queue.is_full() {
                continue;
            }
            if w.next_rev < compact_rev {
                let r = WatchResponse {
                    watch_id: k.1,
                    events: Vec::new(),
                    revision: 0,
                    compact_revision: compact_rev,
                };
                if w.queue.try_push(r) {
                    s.remove(k);
                    hub.count.fetch_sub(1, Ordering::AcqRel);
                }
                continue;
            }
            targets.push((k, w.next_rev, w.iv.clone()));
        }
    }
    if targets.is_empty() {
        return Ok(false);
    }
    let snap = inner.snapshot();
    let from = targets.iter().map(|t| t.1).min().expect("non-empty").max(1);
    let to = snap
        .rev
        .min(from.saturating_add(hub.opts.max_revisions - 1));
    let mut history: History = Vec::new();
    if from <= to {
        snap.scan(Revision::new(from, 0), to, |rk, bytes| {
            let key = KeyValue::decode_key(bytes)
                .map_err(|e| super::error::Error::Corrupt(e.to_string()))?;
            if targets.iter().any(|t| t.2.contains(key)) {
                let e = Event::from_record(bytes, rk.revision.main, rk.tombstone)
                    .map_err(|e| super::error::Error::Corrupt(e.to_string()))?;
                history.push((rk.revision.main, e));
            }
            Ok(true)
        })?;
    }
    drop(snap);
    let mut progressed = false;
    let mut s = lock(&hub.state);
    let current = lock(&inner.view).rev;
    for (k, start, _) in targets {
        let Some(w) = s.watchers.get_mut(&k) else {
            continue;
        };
        if w.synced || w.next_rev != start {
            continue;
        }
        let events: Vec<Event> = history
            .iter()
            .filter(|(rev, e)| *rev >= start && w.iv.contains(&e.kv.key) && w.wants(e))
            .map(|(_, e)| e.clone())
            .collect();
        if to >= start {
            if !events.is_empty() {
                let r = WatchResponse {
                    watch_id: k.1,
                    events,
                    revision: current,
                    compact_revision: 0,
                };
                if !w.queue.try_push(r) {
                    continue;
                }
                w.sent = true;
            }
            w.next_rev = to + 1;
            progressed = true;
        }
        if w.next_rev > current {
            s.unsynced.remove(&k);
            s.link(k);
        }
    }
    Ok(progressed)
}

fn progress_tick(inner: &Inner) {
    let hub = &inner.hub;
    let mut s = lock(&hub.state);
    let now = Instant::now();
    let last = *s.last_progress.get_or_insert(now);
    if now.duration_since(last) < hub.opts.progress_interval {
        return;
    }
    s.last_progress = Some(now);
    let current = lock(&inner.view).rev;
    for (k, w) in s.watchers.iter_mut() {
        if w.synced && w.progress_notify && !w.sent {
            w.queue.try_push(WatchResponse {
                watch_id: k.1,
                events: Vec::new(),
                revision: current,
                compact_revision: 0,
            });
        }
        w.sent = false;
    }
}

/// A client's watch stream: any number of watchers sharing one queue of
/// responses.
pub struct WatchStream {
    store: Store,
    id: u64,
    queue: Arc<Queue>,
    /// The stream's watchers: id → wants previous key-values.
    live: Mutex<HashMap<i64, bool>>,
    next_id: Mutex<i64>,
}

impl Store {
    pub fn watch_stream(&self) -> WatchStream {
        let hub = &self.inner.hub;
        let id = {
            let mut s = lock(&hub.state);
            s.next_stream += 1;
            s.next_stream
        };
        WatchStream {
            store: self.clone(),
            id,
            queue: Arc::new(Queue::new(hub.opts.queue_len)),
            live: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
        }
    }
}

impl WatchStream {
    /// Adds a watcher; returns its id.
    pub fn watch(&self, req: WatchRequest) -> Result<i64, WatchError> {
        let key = if req.key.is_empty() { vec![0] } else { req.key };
        let iv = Interval::from_etcd(&key, &req.range_end);
        if iv.is_empty() || matches!(&iv, Interval::Range { start, end: Some(end) } if start >= end)
        {
            return Err(WatchError::EmptyRange);
        }
        let mut live = lock(&self.live);
        let id = if req.watch_id == 0 {
            let mut n = lock(&self.next_id);
            while live.contains_key(&*n) {
                *n += 1;
            }
            let id = *n;
            *n += 1;
            id
        } else if live.contains_key(&req.watch_id) {
            return Err(WatchError::DuplicateId);
        } else {
            req.watch_id
        };
        let inner = &self.store.inner;
        let hub = &inner.hub;
        let mut s = lock(&hub.state);
        if s.stop {
            return Err(WatchError::Closed);
        }
        let current = lock(&inner.view).rev;
        let next_rev = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        let k = (self.id, id);
        s.watchers.insert(
            k,
            Watcher {
                iv,
                next_rev,
                no_put: req.no_put,
                no_delete: req.no_delete,
                progress_notify: req.progress_notify,
                synced: false,
                sent: false,
                queue: self.queue.clone(),
            },
        );
        hub.count.fetch_add(1, Ordering::AcqRel);
        if next_rev > current {
            s.link(k);
        } else {
            s.unsynced.insert(k);
            hub.cv.notify_all();
        }
        live.insert(id, req.prev_kv);
        Ok(id)
    }

    /// Removes a watcher; false if the stream has no such watcher.
    pub fn cancel(&self, id: i64) -> bool {
        if lock(&self.live).remove(&id).is_none() {
            return false;
        }
        let hub = &self.store.inner.hub;
        if lock(&hub.state).remove((self.id, id)).is_some() {
            hub.count.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }

    /// Sends watcher `id` the current revision if it is synced (a watcher
    /// catching up is about to send events anyway), as etcd's
    /// `RequestProgress` does.
    pub fn request_progress(&self, id: i64) {
        let inner = &self.store.inner;
        let s = lock(&inner.hub.state);
        if let Some(w) = s.watchers.get(&(self.id, id))
            && w.synced
        {
            let current = lock(&inner.view).rev;
            w.queue.try_push(WatchResponse {
                watch_id: id,
                events: Vec::new(),
                revision: current,
                compact_revision: 0,
            });
        }
    }

    /// The next response, waiting for it; `None` once the store is closed.
    pub fn recv(&self) -> Option<WatchResponse> {
        self.recv_until(None)
    }

    /// The next response, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<WatchResponse> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    pub fn try_recv(&self) -> Option<WatchResponse> {
        loop {
            let r = lock(&self.queue.state).items.pop_front()?;
            if let Some(r) = self.deliver(r) {
                return Some(r);
            }
        }
    }

    /// Async receive: `Ready(None)` once the store is closed.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        loop {
            let r = {
                let mut s = lock(&self.queue.state);
                match s.items.pop_front() {
                    Some(r) => r,
                    None if s.closed => return Poll::Ready(None),
                    None => {
                        s.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            if let Some(r) = self.deliver(r) {
                return Poll::Ready(Some(r));
            }
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Option<WatchResponse> {
        loop {
            let r = {
                let mut s = lock(&self.queue.state);
                loop {
                    if let Some(r) = s.items.pop_front() {
                        break r;
                    }
                    if s.closed {
                        return None;
                    }
                    s = match deadline {
                        None => self.queue.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
                        Some(d) => {
                            let now = Instant::now();
                            if now >= d {
                                return None;
                            }
                            self.queue
                                .cv
                                .wait_timeout(s, d - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0
                        }
                    };
                }
            };
            if let Some(r) = self.deliver(r) {
                return Some(r);
            }
        }
    }

    /// Drops responses of cancelled watchers, forgets compacted ones, and
    /// adds previous key-values where asked.
    fn deliver(&self, mut r: WatchResponse) -> Option<WatchResponse> {
        let prev_kv = {
            let mut live = lock(&self.live);
            let prev = *live.get(&r.watch_id)?;
            if r.compact_revision != 0 {
                live.remove(&r.watch_id);
            }
            prev
        };
        if prev_kv {
            for e in &mut r.events {
                let req = RangeRequest {
                    key: e.kv.key.clone(),
                    revision: e.kv.mod_revision - 1,
                    ..RangeRequest::default()
                };
                if let Ok(mut resp) = self.store.range(&req)
                    && let Some(kv) = resp.kvs.pop()
                {
                    e.prev_kv = Some(Arc::new(kv));
                }
            }
        }
        Some(r)
    }

    /// Ids of this stream's watchers.
    pub fn watch_ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = lock(&self.live).keys().copied().collect();
        v.sort();
        v
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let ids: Vec<i64> = lock(&self.live).drain().map(|(k, _)| k).collect();
        let hub = &self.store.inner.hub;
        let mut s = lock(&hub.state);
        for id in ids {
            if s.remove((self.id, id)).is_some() {
                hub.count.fetch_sub(1, Ordering::AcqRel);
            }
        }
        drop(s);
        self.queue.close();
    }
}
