//! The MVCC store: the key index, the write buffer, the B+tree under them,
//! and the threads that commit batches, compact history and feed watchers.
//!
//! ## Threads and locks
//!
//! * The **applier** (whoever calls [`Store::write`], [`Store::compact`] or
//!   [`Store::apply_aux`]; the server has one) holds the writer lock for a
//!   request, and the index's write lock while it changes the index.
//! * The **committer** seals the active batch every `batch_interval` (the
//!   applier seals it at `batch_limit` operations) and writes sealed batches
//!   to the tree. Appliers wait only when two sealed batches are already
//!   queued behind the one being written.
//! * The **compactor** compacts the index a few thousand keys at a time, then
//!   deletes compacted revisions from the tree in batches of
//!   `compaction_batch_limit`, each its own short B+tree transaction.
//! * The **watch syncer** brings watchers that are behind up to date
//!   ([`super::watch`]).
//!
//! Lock order: writer → index → batch → view → commit; hub → view. Nothing
//! holds a store lock while waiting for the B+tree's writer.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::{AuxOp, Batch, EntryId, Snapshot, commit_batches};
use super::error::{Error, Result};
use super::exec::{self, Exec, IndexState, LeaseLookup};
use super::index::{KeyIndex, StoredRecord};
use super::kv::{Event, RecordHead};
use super::request::{
    RangeRequest, RangeResponse, TxnRequest, TxnResponse, WriteRequest, WriteResponse,
};
use super::revision::{Revision, RevisionKey};
use super::schema;
use super::watch::{self, Hub, WatchOptions};
use crate::btree::{self, Bucket, Db, Storage};

mod restore;
mod threads;

use restore::{create_buckets, restore};
use threads::{background_priority, committer, compactor};

/// How a store batches, compacts and watches.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub db: btree::Options,
    /// Longest time an applied change waits in memory before its batch is
    /// committed (etcd's `--backend-batch-interval`, 100 ms).
    pub batch_interval: Duration,
    /// Operations after which a batch is committed at once (etcd's
    /// `--backend-batch-limit`, 10,000).
    pub batch_limit: usize,
    /// Revisions removed per B+tree transaction when compacting (etcd's
    /// `--experimental-compaction-batch-limit`, 1,000).
    pub compaction_batch_limit: usize,
    /// Pause between those transactions (etcd's 10 ms).
    pub compaction_pause: Duration,
    pub watch: WatchOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            db: btree::Options::default(),
            batch_interval: Duration::from_millis(100),
            batch_limit: 10_000,
            compaction_batch_limit: 1000,
            compaction_pause: Duration::from_millis(10),
            watch: WatchOptions::default(),
        }
    }
}

/// The outcome of a log entry.
#[derive(Debug)]
pub enum Applied<T> {
    Done(T),
    /// The entry's index is at or below the store's consistent index: it was
    /// applied before (a replay after restart) and changed nothing now.
    AlreadyApplied,
}

impl<T> Applied<T> {
    /// The outcome, panicking on a replayed entry (for tests and tools).
    pub fn unwrap(self) -> T {
        match self {
            Applied::Done(t) => t,
            Applied::AlreadyApplied => panic!("entry was already applied"),
        }
    }
}

/// What a write did: the response, and the changes in order (which the
/// server's lessor follows to attach keys to leases).
#[derive(Debug)]
pub struct WriteOutcome {
    pub response: WriteResponse,
    pub events: Vec<Event>,
}

/// etcd's `HashKV` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    /// The current revision when hashed.
    pub revision: i64,
    pub compact_revision: i64,
}

/// Figures for metrics and tools.
#[derive(Clone, Copy, Debug)]
pub struct StoreStats {
    pub revision: i64,
    pub compact_revision: i64,
    /// Keys with history in the index.
    pub keys: usize,
    /// Last entry applied (in memory).
    pub applied: EntryId,
    /// Last entry whose effects are committed to the B+tree.
    pub durable: EntryId,
    /// Batches written or waiting to be.
    pub pending_batches: usize,
    pub db: btree::Stats,
}

/// Upper bounds (seconds) of the commit latency buckets: etcd's for
/// `etcd_disk_backend_commit_duration_seconds` (1 ms doubling to 8 s).
pub const COMMIT_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// How long B+tree commits of batches took: counts per bucket (the last
/// one past every bound), and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitLatency {
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

#[derive(Debug, Default)]
struct CommitHistogram {
    counts: [std::sync::atomic::AtomicU64; 15],
    sum_micros: std::sync::atomic::AtomicU64,
}

impl CommitHistogram {
    fn observe(&self, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = d.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    fn snapshot(&self) -> CommitLatency {
        use std::sync::atomic::Ordering::Relaxed;
        CommitLatency {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

/// A scheduled compaction; [`Compaction::wait`] returns when its revisions
/// are gone from the B+tree (etcd's `physical`).
#[derive(Clone, Debug)]
pub struct Compaction {
    /// The store's current revision (etcd answers it, not the compacted one).
    pub revision: i64,
    done: Arc<Completion>,
}

impl Compaction {
    pub fn wait(&self) -> Result<()> {
        self.done.wait()
    }

    pub fn is_done(&self) -> bool {
        lock(&self.done.state).is_some()
    }
}

#[derive(Debug, Default)]
struct Completion {
    state: Mutex<Option<std::result::Result<(), String>>>,
    cv: Condvar,
}

impl Completion {
    fn finish(&self, r: std::result::Result<(), String>) {
        *lock(&self.state) = Some(r);
        self.cv.notify_all();
    }

    fn wait(&self) -> Result<()> {
        let mut s = lock(&self.state);
        loop {
            match &*s {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(Error::Failed(e.clone())),
                None => s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Sealed batches allowed to queue behind the one being committed before
/// appliers wait.
const MAX_SEALED: usize = 2;
/// Keys compacted (or hashed) per hold of the index lock: a few hundred
/// microseconds of work, so an applier never waits long behind it.
const INDEX_CHUNK: usize = 256;
/// Rest between two such holds. The lock is not fair: without a pause, a
/// background pass re-takes it before the applier it woke gets to run, and
/// the applier waits through many chunks (seen: 25 ms).
const INDEX_REST: Duration = Duration::from_micros(50);

struct Writer {
    rev: i64,
    applied: EntryId,
    active: Arc<Batch>,
    active_ops: usize,
    next_seq: u64,
    failed: Option<String>,
    closed: bool,
}

/// What readers snapshot.
pub(crate) struct Published {
    pub rev: i64,
    pub batches: Arc<[Arc<Batch>]>,
}

#[derive(Default)]
struct CommitState {
    sealed: Vec<Arc<Batch>>,
    committed_seq: u64,
    durable: EntryId,
    stop: bool,
    error: Option<String>,
}

struct CompactJob {
    rev: i64,
    /// The batch recording the schedule; every revision up to `rev` is in
    /// the tree once it is committed.
    wait_seq: u64,
    done: Arc<Completion>,
}

#[derive(Default)]
struct CompactQueue {
    jobs: VecDeque<CompactJob>,
    /// Jobs queued or running.
    pending: usize,
    stop: bool,
}

pub(crate) struct Inner {
    pub db: Db,
    pub opts: StoreOptions,
    pub index: RwLock<IndexState>,
    writer: Mutex<Writer>,
    pub view: Mutex<Published>,
    commit: Mutex<CommitState>,
    /// The committer waits on it for work.
    commit_cv: Condvar,
    /// Flushes and throttled appliers wait on it for commits.
    committed_cv: Condvar,
    compact: Mutex<CompactQueue>,
    compact_cv: Condvar,
    pub hub: Hub,
    leases: RwLock<Option<LeaseLookup>>,
    restored_leases: Mutex<Vec<(Vec<u8>, i64)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    commits: CommitHistogram,
}

/// Stops the threads when the last [`Store`] handle goes.
struct Lifetime(Arc<Inner>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// etcd's MVCC store on a cairn B+tree. Cheap to clone; the threads stop
/// (after committing what is buffered) when the last clone is dropped or
/// [`Store::close`] is called.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    _life: Arc<Lifetime>,
}

impl Store {
    /// Opens (or creates) the store in the B+tree file at `path`.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let db = Db::open(path, opts.db.clone())?;
        Self::with_db(db, opts)
    }

    /// Opens an existing store through a given storage layer (crash tests).
    pub fn open_with_storage(
        path: impl AsRef<Path>,
        storage: Box<dyn Storage>,
        opts: StoreOptions,
    ) -> Result<Store> {
        let db = Db::open_with_storage(path, storage, opts.db.clone())?;
        Self::with_db(db, opts)
    }

    fn with_db(db: Db, opts: StoreOptions) -> Result<Store> {
        let started = Instant::now();
        create_buckets(&db)?;
        let r = restore(&db)?;
        let keys = r.index.len();
        let mut compact_rev = r.finished_compact.unwrap_or(-1);
        let resume = r.scheduled_compact.filter(|&s| s > compact_rev);
        if let Some(s) = resume {
            compact_rev = s;
        }
        let rev = r.max_rev.max(compact_rev).max(1);
        let first = Arc::new(Batch::new(1));
        let inner = Arc::new(Inner {
            db,
            index: RwLock::new(IndexState {
                keys: r.index,
                compact_rev,
            }),
            writer: Mutex::new(Writer {
                rev,
                applied: r.applied,
                active: first.clone(),
                active_ops: 0,
                next_seq: 2,
                failed: None,
                closed: false,
            }),
            view: Mutex::new(Published {
                rev,
                batches: Arc::from(vec![first]),
            }),
            commit: Mutex::new(CommitState {
                durable: r.applied,
                ..CommitState::default()
            }),
            commit_cv: Condvar::new(),
            committed_cv: Condvar::new(),
            compact: Mutex::new(CompactQueue::default()),
            compact_cv: Condvar::new(),
            hub: Hub::new(opts.watch.clone()),
            leases: RwLock::new(None),
            restored_leases: Mutex::new(r.leases),
            threads: Mutex::new(Vec::new()),
            commits: CommitHistogram::default(),
            opts,
        });
        tracing::info!(
            keys,
            current_revision = rev,
            compact_revision = compact_rev,
            consistent_index = r.applied.index,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "restored mvcc store"
        );
        let spawn = |name: &str, f: fn(Arc<Inner>)| {
            let i = inner.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    background_priority();
                    f(i)
                })
                .map_err(|e| Error::Failed(format!("spawning {name}: {e}")))
        };
        let handles = vec![
            spawn("cairn-mvcc-commit", committer)?,
            spawn("cairn-mvcc-compact", compactor)?,
            spawn("cairn-mvcc-watch", watch::syncer)?,
        ];
        *lock(&inner.threads) = handles;
        if let Some(s) = resume {
            tracing::info!(
                scheduled_compact_revision = s,
                "resuming scheduled compaction"
            );
            inner.schedule_compaction(s, 0);
        }
        Ok(Store {
            _life: Arc::new(Lifetime(inner.clone())),
            inner,
        })
    }

    /// Sets how puts learn whether a lease exists (the server's lessor). Without
    /// one, every lease is accepted.
    pub fn set_lease_lookup(&self, f: LeaseLookup) {
        *write(&self.inner.leases) = Some(f);
    }

    /// The latest lease of every key that has one, as found at open (the
    /// server's lessor re-attaches them); empty after the first call.
    pub fn take_restored_leases(&self) -> Vec<(Vec<u8>, i64)> {
        std::mem::take(&mut *lock(&self.inner.restored_leases))
    }

    pub fn current_revision(&self) -> i64 {
        lock(&self.inner.view).rev
    }

    pub fn compact_revision(&self) -> i64 {
        read(&self.inner.index).compact_rev
    }

    /// The last entry applied; the server replays its log from the one after
    /// [`Store::durable_index`] at start, and entries up to this one are
    /// skipped.
    pub fn applied_index(&self) -> EntryId {
        lock(&self.inner.writer).applied
    }

    /// The last entry whose effects are committed to the B+tree.
    pub fn durable_index(&self) -> EntryId {
        lock(&self.inner.commit).durable
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// How long the committer's B+tree commits took.
    pub fn commit_latency(&self) -> CommitLatency {
        self.inner.commits.snapshot()
    }

    pub fn stats(&self) -> StoreStats {
        let (revision, pending_batches) = {
            let v = lock(&self.inner.view);
            (v.rev, v.batches.len())
        };
        let (compact_revision, keys) = {
            let i = read(&self.inner.index);
            (i.compact_rev, i.keys.len())
        };
        StoreStats {
            revision,
            compact_revision,
            keys,
            applied: self.applied_index(),
            durable: self.durable_index(),
            pending_batches,
            db: self.inner.db.stats(),
        }
    }

    // ---- writes (the applier) ----

    /// Applies a write from log entry `entry`. Whatever the outcome, the
    /// entry counts as applied — a request error (bad revision, missing key
    /// or lease) is the entry's result — unless the error is fatal
    /// ([`Error::is_fatal`]), after which the store refuses writes.
    pub fn write(&self, entry: EntryId, req: WriteRequest) -> Result<Applied<WriteOutcome>> {
        self.write_with(entry, req, Vec::new())
    }

    /// [`Store::write`], plus changes to the server's buckets made by the
    /// same log entry (a lease revocation deletes the lease's keys and its
    /// record together). The bucket changes are made only if the write
    /// succeeds.
    pub fn write_with(
        &self,
        entry: EntryId,
        req: WriteRequest,
        aux: Vec<AuxOp>,
    ) -> Result<Applied<WriteOutcome>> {
        check_aux(&aux)?;
        let inner = &*self.inner;
        inner.throttle();
        let mut w = inner.writer()?;
        if entry.index <= w.applied.index {
            return Ok(Applied::AlreadyApplied);
        }
        let main = w.rev + 1;
        let active = w.active.clone();
        let leases = read(&inner.leases).clone();
        let take_snapshot = || inner.snapshot();
        let (result, events) = {
            let mut idx = write(&inner.index);
            let mut ex = Exec {
                idx: &mut idx,
                active: &active,
                main,
                changes: Vec::new(),
                leases,
                snap: None,
                take_snapshot: &take_snapshot,
            };
            let r = ex.run(req);
            (r, std::mem::take(&mut ex.changes))
        };
        match &result {
            Err(e) if e.is_fatal() => {
                w.failed = Some(e.to_string());
                return Err(Error::Failed(e.to_string()));
            }
            Err(_) if !events.is_empty() => {
                let msg = "a request failed after changing the store".to_string();
                w.failed = Some(msg.clone());
                return Err(Error::Failed(msg));
            }
            _ => {}
        }
        if !events.is_empty() {
            w.rev = main;
            lock(&inner.view).rev = main;
        }
        w.applied = entry;
        {
            let mut d = active.write();
            d.applied = Some(entry);
            if result.is_ok() {
                w.active_ops += aux.len();
                d.aux.extend(aux);
            }
        }
        w.active_ops += events.len().max(1);
        if !events.is_empty() {
            inner.hub.notify(main, &events);
        }
        if w.active_ops >= inner.opts.batch_limit {
            inner.seal(&mut w);
        }
        drop(w);
        result.map(|response| Applied::Done(WriteOutcome { response, events }))
    }

    /// Applies changes to the server's buckets (leases, members, auth,
    /// alarms), or none, for log entry `entry`, committed with the key data
    /// of the same batch.
    pub fn apply_aux(&self, entry: EntryId, ops: Vec<AuxOp>) -> Result<Applied<()>> {
        check_aux(&ops)?;
        let inner = &*self.inner;
        inner.throttle();
        let mut w = inner.writer()?;
        if entry.index <= w.applied.index {
            return Ok(Applied::AlreadyApplied);
        }
        w.active_ops += ops.len().max(1);
        {
            let mut d = w.active.write();
            d.aux.extend(ops);
            d.applied = Some(entry);
        }
        w.applied = entry;
        if w.active_ops >= inner.opts.batch_limit {
            inner.seal(&mut w);
        }
        Ok(Applied::Done(()))
    }

    /// Compacts history at `rev` for log entry `entry`: reads below `rev`
    /// fail from now on, and each key keeps its newest revision at or below
    /// it. The B+tree is cleaned in the background; wait on the returned
    /// [`Compaction`] for that.
    pub fn compact(&self, entry: EntryId, rev: i64) -> Result<Applied<Compaction>> {
        let inner = &*self.inner;
        inner.throttle();
        let mut w = inner.writer()?;
        if entry.index <= w.applied.index {
            return Ok(Applied::AlreadyApplied);
        }
        let check = {
            let mut idx = write(&inner.index);
            if rev <= idx.compact_rev {
                Err(Error::Compacted)
            } else if rev > w.rev {
                Err(Error::FutureRevision)
            } else {
                idx.compact_rev = rev;
                Ok(())
            }
        };
        w.applied = entry;
        {
            let mut d = w.active.write();
            d.applied = Some(entry);
            if check.is_ok() {
                d.scheduled_compact = Some(rev);
            }
        }
        w.active_ops += 1;
        check?;
        // Commit the schedule at once, as etcd does.
        let seq = inner.seal(&mut w);
        let current = w.rev;
        drop(w);
        let done = inner.schedule_compaction(rev, seq);
        inner.hub.compacted(rev);
        Ok(Applied::Done(Compaction {
            revision: current,
            done,
        }))
    }

    /// Commits everything applied so far and waits for it.
    pub fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        let seq = {
            let mut w = inner.writer()?;
            inner.seal(&mut w)
        };
        inner.wait_committed(seq)
    }

    /// Waits until every scheduled compaction (those resumed at open too) has
    /// finished its pass over the B+tree, or the store stopped.
    pub fn wait_compactions(&self) {
        let inner = &*self.inner;
        let mut q = lock(&inner.compact);
        while q.pending > 0 && !q.stop {
            q = inner.compact_cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Commits what is buffered and stops the store's threads. Other handles
    /// (and watch streams) stay valid but refuse writes.
    pub fn close(self) -> Result<()> {
        let r = self.flush();
        self.inner.shutdown();
        r
    }

    // ---- reads ----

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// etcd's Range, on a snapshot of the current state.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let snap = self.snapshot();
        let selected = exec::select(&read(&self.inner.index), req, snap.rev)?;
        exec::finish_range(selected, req, &mut &snap)
    }

    /// A transaction that writes nothing, answered from a snapshot.
    pub fn read_txn(&self, t: &TxnRequest) -> Result<TxnResponse> {
        if !t.is_read_only() {
            return Err(Error::Corrupt(
                "read_txn given a transaction that writes".into(),
            ));
        }
        let snap = self.snapshot();
        let idx = read(&self.inner.index);
        exec::read_txn(&idx, &snap, t, snap.rev)
    }

    /// etcd's HashKV: a CRC-32C over the `key` bucket's records up to `rev`
    /// (0: the current revision) — of those at or below the compaction
    /// revision, only ones still current at `rev` — with etcd's byte layout,
    /// so equal stores hash alike whichever of them compacted further.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv> {
        let snap = self.snapshot();
        let current = snap.rev;
        let compact = read(&self.inner.index).compact_rev;
        if rev > 0 && rev <= compact {
            return Err(Error::Compacted);
        }
        if rev > 0 && rev > current {
            return Err(Error::FutureRevision);
        }
        let rev = if rev == 0 { current } else { rev };
        let mut keep = HashSet::new();
        let mut from: Option<Vec<u8>> = None;
        loop {
            from = read(&self.inner.index).keys.kept_some(
                rev,
                from.as_deref(),
                INDEX_CHUNK,
                &mut keep,
            );
            if from.is_none() {
                break;
            }
        }
        let mut crc = crc32c::crc32c(schema::KEY);
        snap.scan(Revision::new(0, 0), rev, |rk, v| {
            if rk.revision.main <= compact && !keep.is_empty() && !keep.contains(&rk.revision) {
                return Ok(true);
            }
            let (k, n) = rk.to_array();
            crc = crc32c::crc32c_append(crc, &k[..n]);
            crc = crc32c::crc32c_append(crc, v);
            Ok(true)
        })?;
        Ok(HashKv {
            hash: crc,
            revision: current,
            compact_revision: compact,
        })
    }

    /// The server's bucket `bucket` as applied so far (buffered changes
    /// included), in key order.
    pub fn aux_scan(&self, bucket: &'static [u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let snap = self.snapshot();
        let mut m = std::collections::BTreeMap::new();
        if let Some(b) = snap.tx.bucket(bucket)? {
            for item in b.iter() {
                let (k, v) = item?;
                m.insert(k.to_vec(), v.to_vec());
            }
        }
        for b in snap.batches.iter() {
            for op in &b.read().aux {
                match op {
                    AuxOp::Put {
                        bucket: bk,
                        key,
                        value,
                    } if *bk == bucket => {
                        m.insert(key.clone(), value.clone());
                    }
                    AuxOp::Delete { bucket: bk, key } if *bk == bucket => {
                        m.remove(key);
                    }
                    _ => {}
                }
            }
        }
        Ok(m.into_iter().collect())
    }
}

impl Inner {
    fn writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = lock(&self.writer);
        if let Some(e) = &w.failed {
            return Err(Error::Failed(e.clone()));
        }
        if w.closed {
            return Err(Error::Closed);
        }
        Ok(w)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let v = lock(&self.view);
        Snapshot {
            rev: v.rev,
            batches: v.batches.clone(),
            tx: self.db.begin_read(),
        }
    }

    /// Waits while enough sealed batches are queued.
    fn throttle(&self) {
        let mut c = lock(&self.commit);
        while c.sealed.len() >= MAX_SEALED && c.error.is_none() && !c.stop {
            c = self.committed_cv.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Seals the active batch if it holds anything; returns the sequence
    /// number a flush must wait for.
    fn seal(&self, w: &mut Writer) -> u64 {
        if !w.active.read().is_dirty() {
            return w.active.seq - 1;
        }
        let fresh = Arc::new(Batch::sized_like(w.next_seq, &w.active.read()));
        w.next_seq += 1;
        let sealed = std::mem::replace(&mut w.active, fresh.clone());
        w.active_ops = 0;
        {
            let mut v = lock(&self.view);
            let mut list: Vec<Arc<Batch>> = v.batches.iter().cloned().collect();
            list.push(fresh);
            v.batches = Arc::from(list);
        }
        let seq = sealed.seq;
        lock(&self.commit).sealed.push(sealed);
        self.commit_cv.notify_all();
        seq
    }

    fn wait_committed(&self, seq: u64) -> Result<()> {
        let mut c = lock(&self.commit);
        loop {
            if c.committed_seq >= seq {
                return Ok(());
            }
            if let Some(e) = &c.error {
                return Err(Error::Failed(e.clone()));
            }
            if c.stop && c.sealed.is_empty() {
                return Err(Error::Closed);
            }
            c = self.committed_cv.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn schedule_compaction(&self, rev: i64, wait_seq: u64) -> Arc<Completion> {
        let done = Arc::new(Completion::default());
        let mut q = lock(&self.compact);
        q.jobs.push_back(CompactJob {
            rev,
            wait_seq,
            done: done.clone(),
        });
        q.pending += 1;
        drop(q);
        self.compact_cv.notify_all();
        done
    }

    fn shutdown(&self) {
        {
            let mut w = lock(&self.writer);
            if w.closed {
                return;
            }
            w.closed = true;
        }
        lock(&self.commit).stop = true;
        self.commit_cv.notify_all();
        lock(&self.compact).stop = true;
        self.compact_cv.notify_all();
        self.hub.stop();
        let handles = std::mem::take(&mut *lock(&self.threads));
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    fn fail(&self, msg: String) {
        tracing::error!(error = %msg, "mvcc store failed; writes are refused until restart");
        lock(&self.writer).failed = Some(msg.clone());
        lock(&self.commit).error = Some(msg);
        self.committed_cv.notify_all();
    }
}

/// The server writes only its own buckets.
fn check_aux(ops: &[AuxOp]) -> Result<()> {
    match ops.iter().find(|op| !schema::is_aux_bucket(op.bucket())) {
        Some(op) => Err(Error::Corrupt(format!(
            "bucket {:?} is not one the server writes",
            String::from_utf8_lossy(op.bucket())
        ))),
        None => Ok(()),
    }
}

pub(crate) fn compact_rev(inner: &Inner) -> i64 {
    read(&inner.index).compact_rev
}
