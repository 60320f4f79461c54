//! Executing requests: reads against a snapshot, writes against the head.
//!
//! The semantics are etcd's (see compat.md §4): a transaction evaluates all
//! its compares, nested ones included, against the state before it runs, then
//! checks the operations of the branches taken, and only then writes; all its
//! changes share one main revision with sub-revisions in operation order, and
//! its operations see the changes of earlier ones.

use std::sync::Arc;

use super::backend::{Batch, Snapshot};
use super::error::{Error, Result};
use super::index::{Found, Interval, KeyIndex};
use super::kv::{Event, EventKind, KeyValue};
use super::request::*;
use super::revision::Revision;

/// The key index and the compaction revision, under one lock: a reader that
/// checks the compaction revision reads an index no compaction has passed.
#[derive(Default)]
pub(crate) struct IndexState {
    pub keys: KeyIndex,
    /// Reads below this revision fail; -1 before the first compaction.
    pub compact_rev: i64,
}

/// Whether a lease exists (the server's lessor answers).
pub type LeaseLookup = Arc<dyn Fn(i64) -> bool + Send + Sync>;

/// Records by revision.
pub(crate) trait Records {
    fn record(&mut self, rev: Revision) -> Result<KeyValue>;
}

impl Records for &Snapshot {
    fn record(&mut self, rev: Revision) -> Result<KeyValue> {
        Snapshot::record(self, rev)
    }
}

/// The revision a range reads at, checked as etcd checks it against the
/// current revision `cur` and the compaction revision.
fn read_revision(idx: &IndexState, requested: i64, cur: i64) -> Result<i64> {
    if requested > cur {
        return Err(Error::FutureRevision);
    }
    let at = if requested <= 0 { cur } else { requested };
    if at < idx.compact_rev {
        return Err(Error::Compacted);
    }
    Ok(at)
}

fn effective_order(r: &RangeRequest) -> SortOrder {
    if r.sort_target != SortTarget::Key && r.sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        r.sort_order
    }
}

fn has_filters(r: &RangeRequest) -> bool {
    r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
}

/// The first step of a range, under the index lock: the keys' revisions (all
/// of them, or only as many as a plain limited read needs) and the count.
pub(crate) struct Selected {
    found: Vec<Found>,
    count: i64,
    cur: i64,
}

pub(crate) fn select(idx: &IndexState, r: &RangeRequest, cur: i64) -> Result<Selected> {
    let at = read_revision(idx, r.revision, cur)?;
    let iv = Interval::from_etcd(&r.key, &r.range_end);
    // As etcd: without an explicit order or filters only `limit + 1` keys
    // are fetched — a non-key sort target then sorts just those.
    let plain = r.sort_order == SortOrder::None && !has_filters(r);
    let keep = if r.count_only {
        0
    } else if plain && r.limit > 0 {
        r.limit as usize + 1
    } else {
        usize::MAX
    };
    let mut found = Vec::new();
    let mut count = 0i64;
    for (_, f) in idx.keys.range(&iv, at) {
        if found.len() < keep {
            found.push(f);
        }
        count += 1;
    }
    Ok(Selected { found, count, cur })
}

/// The rest of a range, without the index lock: filters, order, limit, and
/// the records.
pub(crate) fn finish_range(
    s: Selected,
    r: &RangeRequest,
    records: &mut impl Records,
) -> Result<RangeResponse> {
    let Selected {
        mut found,
        count,
        cur,
    } = s;
    if r.count_only {
        return Ok(RangeResponse {
            revision: cur,
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    let bound = |v: i64| if v == 0 { None } else { Some(v) };
    let (min_mod, max_mod) = (bound(r.min_mod_revision), bound(r.max_mod_revision));
    let (min_create, max_create) = (bound(r.min_create_revision), bound(r.max_create_revision));
    found.retain(|f| {
        min_mod.is_none_or(|m| f.rev.main >= m)
            && max_mod.is_none_or(|m| f.rev.main <= m)
            && min_create.is_none_or(|m| f.created >= m)
            && max_create.is_none_or(|m| f.created <= m)
    });
    let order = effective_order(r);
    let limit = if r.limit > 0 {
        r.limit as usize
    } else {
        usize::MAX
    };
    let mut kvs: Vec<KeyValue>;
    if order != SortOrder::None && r.sort_target == SortTarget::Value {
        kvs = found
            .iter()
            .map(|f| records.record(f.rev))
            .collect::<Result<_>>()?;
        kvs.sort_by(|a, b| a.value.cmp(&b.value));
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    } else {
        // Sorting by key is the index's order; other targets are in `Found`.
        // Ties keep key order (etcd leaves them unspecified).
        let field = |f: &Found| match r.sort_target {
            SortTarget::Version => f.version,
            SortTarget::Create => f.created,
            SortTarget::Mod => f.rev.main,
            SortTarget::Key | SortTarget::Value => 0,
        };
        match (order, r.sort_target) {
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => {}
            (SortOrder::Descend, SortTarget::Key) => found.reverse(),
            (SortOrder::Ascend, _) => found.sort_by_key(field),
            (SortOrder::Descend, _) => found.sort_by_key(|f| std::cmp::Reverse(field(f))),
        }
        kvs = Vec::with_capacity(found.len().min(limit));
        for f in found.iter().take(limit) {
            kvs.push(records.record(f.rev)?);
        }
        // `more` counts what the limit cut, whatever was fetched.
        if found.len() > limit {
            kvs.truncate(limit);
            return Ok(finish(kvs, r, cur, count, true));
        }
    }
    let more = kvs.len() > limit;
    kvs.truncate(limit);
    Ok(finish(kvs, r, cur, count, more))
}

fn finish(
    mut kvs: Vec<KeyValue>,
    r: &RangeRequest,
    cur: i64,
    count: i64,
    more: bool,
) -> RangeResponse {
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    RangeResponse {
        revision: cur,
        kvs,
        more,
        count,
    }
}

fn compare_ints(a: i64, b: i64) -> std::cmp::Ordering {
    a.cmp(&b)
}

fn outcome(result: CompareResult, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match result {
        CompareResult::Equal => ord == Equal,
        CompareResult::NotEqual => ord != Equal,
        CompareResult::Greater => ord == Greater,
        CompareResult::Less => ord == Less,
    }
}

/// Whether a compare holds at revision `at`. A missing key compares as a
/// record of zeros, except that a value compare on it fails.
fn compare_holds(
    keys: &KeyIndex,
    records: &mut impl Records,
    c: &Compare,
    at: i64,
) -> Result<bool> {
    let iv = Interval::from_etcd(&c.key, &c.range_end);
    let found: Vec<Found> = keys.range(&iv, at).map(|(_, f)| f).collect();
    if found.is_empty() {
        return Ok(match &c.target {
            CompareTarget::Value(_) => false,
            CompareTarget::Version(v)
            | CompareTarget::Create(v)
            | CompareTarget::Mod(v)
            | CompareTarget::Lease(v) => outcome(c.result, compare_ints(0, *v)),
        });
    }
    for f in found {
        let ord = match &c.target {
            CompareTarget::Version(v) => compare_ints(f.version, *v),
            CompareTarget::Create(v) => compare_ints(f.created, *v),
            CompareTarget::Mod(v) => compare_ints(f.rev.main, *v),
            CompareTarget::Value(v) => records.record(f.rev)?.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Lease(v) => compare_ints(records.record(f.rev)?.lease, *v),
        };
        if !outcome(c.result, ord) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// etcd's transaction path: whether each transaction, the outer one first and
/// then the nested ones of the branches taken in order, takes its success
/// branch — all evaluated at `at`.
fn txn_path(
    keys: &KeyIndex,
    records: &mut impl Records,
    t: &TxnRequest,
    at: i64,
    path: &mut Vec<bool>,
) -> Result<()> {
    let mut ok = true;
    for c in &t.compare {
        if !compare_holds(keys, records, c, at)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    let ops = if ok { &t.success } else { &t.failure };
    for op in ops {
        if let RequestOp::Txn(n) = op {
            txn_path(keys, records, n, at, path)?;
        }
    }
    Ok(())
}

/// Calls `f` on every operation of the branches `path` takes.
fn walk_path<'t>(
    t: &'t TxnRequest,
    path: &[bool],
    pos: &mut usize,
    f: &mut impl FnMut(&'t RequestOp) -> Result<()>,
) -> Result<()> {
    let ops = if path[*pos] { &t.success } else { &t.failure };
    *pos += 1;
    for op in ops {
        match op {
            RequestOp::Txn(n) => walk_path(n, path, pos, f)?,
            op => f(op)?,
        }
    }
    Ok(())
}

/// Ranges inside a transaction are checked before it runs, against the
/// revision it starts at.
fn check_ranges(t: &TxnRequest, path: &[bool], cur: i64, compact_rev: i64) -> Result<()> {
    walk_path(t, path, &mut 0, &mut |op| {
        if let RequestOp::Range(r) = op {
            if r.revision != 0 && r.revision > cur {
                return Err(Error::FutureRevision);
            }
            if r.revision != 0 && r.revision < compact_rev {
                return Err(Error::Compacted);
            }
        }
        Ok(())
    })
}

/// A read-only transaction against a snapshot at `cur`.
pub(crate) fn read_txn(
    idx: &IndexState,
    snap: &Snapshot,
    t: &TxnRequest,
    cur: i64,
) -> Result<TxnResponse> {
    let mut records = snap;
    let mut path = Vec::new();
    txn_path(&idx.keys, &mut records, t, cur, &mut path)?;
    check_ranges(t, &path, cur, idx.compact_rev)?;
    fn run(
        idx: &IndexState,
        records: &mut &Snapshot,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        cur: i64,
        nested: bool,
    ) -> Result<TxnResponse> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let s = select(idx, r, cur)?;
                    ResponseOp::Range(finish_range(s, r, records)?)
                }
                RequestOp::Txn(n) => ResponseOp::Txn(run(idx, records, n, path, pos, cur, true)?),
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    return Err(Error::Corrupt("a write in a read-only transaction".into()));
                }
            });
        }
        Ok(TxnResponse {
            revision: if nested { 0 } else { cur },
            succeeded,
            responses,
        })
    }
    run(idx, &mut records, t, &path, &mut 0, cur, false)
}

/// One write request being applied at the head: the applier holds the
/// writer and the index's write lock throughout.
pub(crate) struct Exec<'a> {
    pub idx: &'a mut IndexState,
    pub active: &'a Batch,
    /// The revision this request's changes get.
    pub main: i64,
    pub changes: Vec<Event>,
    pub leases: Option<LeaseLookup>,
    /// Taken on first need; sees the active batch, so this request's own
    /// records too.
    pub snap: Option<Snapshot>,
    pub take_snapshot: &'a dyn Fn() -> Snapshot,
}

impl Records for Exec<'_> {
    fn record(&mut self, rev: Revision) -> Result<KeyValue> {
        if self.snap.is_none() {
            self.snap = Some((self.take_snapshot)());
        }
        self.snap.as_ref().expect("just taken").record(rev)
    }
}

impl Exec<'_> {
    /// Reads see the changes made so far.
    fn read_rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.main - 1
        } else {
            self.main
        }
    }

    fn get(&mut self, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
        match self.idx.keys.get(key, at) {
            Some(f) => self.record(f.rev).map(Some),
            None => Ok(None),
        }
    }

    pub fn run(&mut self, req: WriteRequest) -> Result<WriteResponse> {
        Ok(match req {
            WriteRequest::Put(p) => {
                self.check_put(&p)?;
                WriteResponse::Put(self.put(p)?)
            }
            WriteRequest::DeleteRange(d) => WriteResponse::DeleteRange(self.delete_range(d)?),
            WriteRequest::Txn(t) => WriteResponse::Txn(self.txn(t)?),
        })
    }

    fn check_put(&mut self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease)
            && self.idx.keys.get(&p.key, self.read_rev()).is_none()
        {
            return Err(Error::KeyNotFound);
        }
        if p.lease != 0 && self.leases.as_ref().is_some_and(|exists| !exists(p.lease)) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    fn push(&mut self, rev: Revision, tombstone: bool, event: Event) {
        self.active.write().push(rev, tombstone, |out| {
            if tombstone {
                KeyValue::encode_tombstone_into(&event.kv.key, out)
            } else {
                event.kv.encode_into(out)
            }
        });
        self.changes.push(event);
    }

    fn put(&mut self, p: PutRequest) -> Result<PutResponse> {
        let at = self.read_rev();
        let prev = if p.prev_kv || p.ignore_value || p.ignore_lease {
            self.get(&p.key, at)?
        } else {
            None
        };
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            _ => p.value,
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let rev = Revision::new(self.main, self.changes.len() as i64);
        let (create_revision, version) = self.idx.keys.put(&p.key, rev);
        let kv = KeyValue {
            key: p.key,
            create_revision,
            mod_revision: self.main,
            version,
            value,
            lease,
        };
        let event = Event {
            kind: EventKind::Put,
            kv: Arc::new(kv),
            prev_kv: None,
        };
        self.push(rev, false, event);
        Ok(PutResponse {
            revision: self.main,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete_range(&mut self, d: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let at = self.read_rev();
        let iv = Interval::from_etcd(&d.key, &d.range_end);
        let found: Vec<(Vec<u8>, Found)> = self
            .idx
            .keys
            .range(&iv, at)
            .map(|(k, f)| (k.to_vec(), f))
            .collect();
        let mut prev_kvs = Vec::new();
        if d.prev_kv {
            for (_, f) in &found {
                prev_kvs.push(self.record(f.rev)?);
            }
        }
        for (key, _) in &found {
            let rev = Revision::new(self.main, self.changes.len() as i64);
            if !self.idx.keys.tombstone(key, rev) {
                return Err(Error::Corrupt(
                    "deleting a key the index just listed".into(),
                ));
            }
            let event = Event {
                kind: EventKind::Delete,
                kv: Arc::new(KeyValue {
                    key: key.clone(),
                    mod_revision: self.main,
                    ..KeyValue::default()
                }),
                prev_kv: None,
            };
            self.push(rev, true, event);
        }
        Ok(DeleteRangeResponse {
            revision: if self.changes.is_empty() {
                self.main - 1
            } else {
                self.main
            },
            deleted: found.len() as i64,
            prev_kvs,
        })
    }

    fn txn(&mut self, t: TxnRequest) -> Result<TxnResponse> {
        let begin = self.read_rev();
        let mut path = Vec::new();
        {
            // Compares read through a snapshot of their own, taken only if a
            // value or lease compare needs records.
            let mut lazy = LazyRecords {
                snap: None,
                take: self.take_snapshot,
            };
            txn_path(&self.idx.keys, &mut lazy, &t, begin, &mut path)?;
        }
        if !t.is_read_only() {
            let mut puts = Vec::new();
            walk_path(&t, &path, &mut 0, &mut |op| {
                if let RequestOp::Put(p) = op {
                    puts.push(p);
                }
                Ok(())
            })?;
            for p in puts {
                self.check_put(p)?;
            }
        }
        check_ranges(&t, &path, begin, self.idx.compact_rev)?;
        let mut resp = self.exec_txn(t, &path, &mut 0, false)?;
        resp.revision = self.read_rev();
        Ok(resp)
    }

    fn exec_txn(
        &mut self,
        t: TxnRequest,
        path: &[bool],
        pos: &mut usize,
        nested: bool,
    ) -> Result<TxnResponse> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = if succeeded { t.success } else { t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let s = select(self.idx, &r, self.read_rev())?;
                    ResponseOp::Range(finish_range(s, &r, self)?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(n) => ResponseOp::Txn(self.exec_txn(n, path, pos, true)?),
            });
        }
        Ok(TxnResponse {
            revision: if nested { 0 } else { self.read_rev() },
            succeeded,
            responses,
        })
    }
}

struct LazyRecords<'a> {
    snap: Option<Snapshot>,
    take: &'a dyn Fn() -> Snapshot,
}

impl Records for LazyRecords<'_> {
    fn record(&mut self, rev: Revision) -> Result<KeyValue> {
        if self.snap.is_none() {
            self.snap = Some((self.take)());
        }
        self.snap.as_ref().expect("just taken").record(rev)
    }
}
