//! Model-based property test of the MVCC store: random sequences of puts,
//! deletions, transactions (nested ones too), ranges, compactions, hashes and
//! reopens, each checked against a reference model of etcd's semantics
//! (compat.md §4.1–4.6) that keeps the whole key space at every revision.
//!
//! The model is deliberately naive: `states[r]` is a full map of the keys at
//! revision `r`, a write clones the head and pushes a new map if it changed
//! anything, and a compaction only moves the revision below which reads fail.
//! Every response (headers, key-values, `more`, `count`, prev_kvs, nested
//! transaction responses), every error and every change event is compared
//! with the model; after a waited compaction the `key` bucket itself is
//! checked; after each sequence every revision still held is read back, before
//! and after a final reopen.
//!
//! Generated revisions are codes, turned into revisions when the operation
//! runs (so a code can mean "the compaction revision" or "the current one
//! plus one" whatever the history); the failure message lists the concrete
//! requests sent.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use cairn_engine::mvcc::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---- the key space ----

/// Few, short keys, so that ranges, overwrites, deletions and recreations
/// collide; prefixes of each other, and one ending in 0xff (its prefix end
/// drops the 0xff).
const KEYS: [&[u8]; 8] = [b"a", b"a/1", b"a/2", b"ab", b"b", b"b/1", b"c", b"d\xff"];

/// Range bounds: the keys' neighbourhoods, so `[start, end)` cuts between
/// and through them (and `end <= start` gives empty ranges).
const BOUNDS: [&[u8]; 13] = [
    b"a", b"a/", b"a0", b"ab", b"ac", b"b", b"b/", b"b0", b"c", b"d", b"d\xff", b"e", b"\xff",
];

/// Values of varied length: empty, short, a page's worth and more than one.
fn value(i: u8) -> Vec<u8> {
    match i % 8 {
        0 => Vec::new(),
        1 => b"x".to_vec(),
        2 => b"y".to_vec(),
        3 => b"xy".to_vec(),
        4 => vec![b'v'; 60],
        5 => vec![b'w'; 700],
        6 => vec![b'z'; 5000],
        _ => vec![0xff, 0, 1],
    }
}

/// etcd's prefix end: the last byte + 1, after dropping trailing 0xff bytes;
/// `"\0"` (every key) if nothing is left.
fn prefix_end(k: &[u8]) -> Vec<u8> {
    let mut e = k.to_vec();
    while e.last() == Some(&0xff) {
        e.pop();
    }
    match e.last_mut() {
        Some(b) => {
            *b += 1;
            e
        }
        None => vec![0],
    }
}

// ---- the reference model ----

type State = BTreeMap<Vec<u8>, KeyValue>;

/// etcd's range rules (§4.3): empty end → the key alone; `"\0"` → every key
/// from `key`; otherwise `[key, end)`, empty when `end <= key`.
fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// A request error the model expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Compacted,
    Future,
    KeyNotFound,
}

fn is(e: &Error, x: Expect) -> bool {
    match x {
        Expect::Compacted => matches!(e, Error::Compacted),
        Expect::Future => matches!(e, Error::FutureRevision),
        Expect::KeyNotFound => matches!(e, Error::KeyNotFound),
    }
}

/// Why the model has no answer for a write.
#[derive(Debug)]
enum NoAnswer {
    /// A request error, changing nothing.
    Err(Expect),
    /// A put with ignore_value/ignore_lease in a transaction finds its key
    /// deleted by an earlier operation of the transaction (possible only
    /// through a from-key deletion, which etcd's duplicate-key check does not
    /// see): etcd panics ("unexpected error during txn"), so the request is
    /// not sent.
    EtcdPanics,
}

impl From<Expect> for NoAnswer {
    fn from(e: Expect) -> Self {
        NoAnswer::Err(e)
    }
}

/// A range over one state; `header` is the revision the response carries.
fn range_of(state: &State, r: &RangeRequest, header: i64) -> RangeResponse {
    let all: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_range(&kv.key, &r.key, &r.range_end))
        .collect();
    let count = all.len() as i64;
    if r.count_only {
        return RangeResponse {
            revision: header,
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    let within = |v: i64, lo: i64, hi: i64| (lo == 0 || v >= lo) && (hi == 0 || v <= hi);
    let mut kvs: Vec<KeyValue> = all
        .into_iter()
        .filter(|kv| {
            within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
                && within(
                    kv.create_revision,
                    r.min_create_revision,
                    r.max_create_revision,
                )
        })
        .cloned()
        .collect();
    // etcd fetches only `limit + 1` keys (in key order) when no sort order and
    // no filter is given — even for a non-key target, which it then sorts.
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    if r.sort_order == SortOrder::None && !filtered && r.limit > 0 {
        kvs.truncate(r.limit as usize + 1);
    }
    let order = match (r.sort_order, r.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let field = |kv: &KeyValue| match r.sort_target {
        SortTarget::Version => kv.version,
        SortTarget::Create => kv.create_revision,
        SortTarget::Mod => kv.mod_revision,
        SortTarget::Key | SortTarget::Value => unreachable!("sorted apart"),
    };
    // `kvs` is in key order; ties keep it (cairn's documented choice; etcd's
    // sort is unstable), except that a descending value sort is the exact
    // reverse of the ascending one.
    match (order, r.sort_target) {
        (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => {}
        (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
        (SortOrder::Ascend, SortTarget::Value) => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        (SortOrder::Descend, SortTarget::Value) => {
            kvs.sort_by(|a, b| a.value.cmp(&b.value));
            kvs.reverse();
        }
        (SortOrder::Ascend, _) => kvs.sort_by_key(field),
        (SortOrder::Descend, _) => kvs.sort_by_key(|kv| Reverse(field(kv))),
    }
    let more = r.limit > 0 && kvs.len() > r.limit as usize;
    if more {
        kvs.truncate(r.limit as usize);
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        revision: header,
        kvs,
        more,
        count,
    }
}

/// §4.6: every key in range must match; no key compares as a zero KeyValue,
/// except that a value compare on it fails.
fn compare_holds(state: &State, c: &Compare) -> bool {
    let kvs: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
        .collect();
    let one = |kv: &KeyValue| {
        let ord = match &c.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::Create(v) => kv.create_revision.cmp(v),
            CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match c.result {
            CompareResult::Equal => ord == Ordering::Equal,
            CompareResult::NotEqual => ord != Ordering::Equal,
            CompareResult::Greater => ord == Ordering::Greater,
            CompareResult::Less => ord == Ordering::Less,
        }
    };
    if kvs.is_empty() {
        !matches!(c.target, CompareTarget::Value(_)) && one(&KeyValue::default())
    } else {
        kvs.into_iter().all(one)
    }
}

fn branch(t: &TxnRequest, ok: bool) -> &[RequestOp] {
    if ok { &t.success } else { &t.failure }
}

fn read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(n) => read_only(n),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

struct Model {
    /// `states[r]`: every key at revision `r` (`states[0]` is empty too).
    states: Vec<State>,
    /// Reads below it fail; -1 before the first compaction.
    compact: i64,
}

/// What a write does: its response, its changes in order, and the new head.
struct ModelWrite {
    response: WriteResponse,
    events: Vec<(EventKind, KeyValue)>,
    head: Option<State>,
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![State::new(), State::new()],
            compact: -1,
        }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn head(&self) -> &State {
        self.states.last().expect("never empty")
    }

    /// §4.3: future revisions fail, then ≤ 0 means current, then below the
    /// compaction revision fails.
    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, Expect> {
        let cur = self.current();
        if r.revision > cur {
            return Err(Expect::Future);
        }
        let at = if r.revision <= 0 { cur } else { r.revision };
        if at < self.compact {
            return Err(Expect::Compacted);
        }
        Ok(range_of(&self.states[at as usize], r, cur))
    }

    /// §4.5; answers the current revision.
    fn compact(&mut self, rev: i64) -> Result<i64, Expect> {
        if rev <= self.compact {
            return Err(Expect::Compacted);
        }
        if rev > self.current() {
            return Err(Expect::Future);
        }
        self.compact = rev;
        Ok(self.current())
    }

    fn write(&self, req: &WriteRequest) -> Result<ModelWrite, NoAnswer> {
        let mut a = Apply {
            m: self,
            work: self.head().clone(),
            main: self.current() + 1,
            changes: Vec::new(),
        };
        let response = match req {
            WriteRequest::Put(p) => {
                if (p.ignore_value || p.ignore_lease) && !self.head().contains_key(&p.key) {
                    return Err(Expect::KeyNotFound.into());
                }
                WriteResponse::Put(a.put(p)?)
            }
            WriteRequest::DeleteRange(d) => WriteResponse::DeleteRange(a.delete(d)),
            WriteRequest::Txn(t) => {
                // etcd checks the puts of the whole path taken, then its
                // ranges, before running anything.
                a.check_puts(t)?;
                a.check_ranges(t)?;
                WriteResponse::Txn(a.txn(t, false)?)
            }
        };
        let head = (!a.changes.is_empty()).then(|| a.work.clone());
        Ok(ModelWrite {
            response,
            events: a.changes,
            head,
        })
    }
}

/// One write being applied to a copy of the head.
struct Apply<'m> {
    m: &'m Model,
    work: State,
    main: i64,
    changes: Vec<(EventKind, KeyValue)>,
}

impl Apply<'_> {
    /// Compares, nested ones included, see the state before the request.
    fn taken(&self, t: &TxnRequest) -> bool {
        t.compare.iter().all(|c| compare_holds(self.m.head(), c))
    }

    fn check_puts(&self, t: &TxnRequest) -> Result<(), Expect> {
        for op in branch(t, self.taken(t)) {
            match op {
                RequestOp::Put(p)
                    if (p.ignore_value || p.ignore_lease)
                        && !self.m.head().contains_key(&p.key) =>
                {
                    return Err(Expect::KeyNotFound);
                }
                RequestOp::Txn(n) => self.check_puts(n)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, t: &TxnRequest) -> Result<(), Expect> {
        for op in branch(t, self.taken(t)) {
            match op {
                RequestOp::Range(r) if r.revision != 0 && r.revision > self.m.current() => {
                    return Err(Expect::Future);
                }
                RequestOp::Range(r) if r.revision != 0 && r.revision < self.m.compact => {
                    return Err(Expect::Compacted);
                }
                RequestOp::Txn(n) => self.check_ranges(n)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The revision responses carry: the new one once something changed.
    fn header(&self) -> i64 {
        if self.changes.is_empty() {
            self.main - 1
        } else {
            self.main
        }
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, NoAnswer> {
        let prev = self.work.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(NoAnswer::EtcdPanics);
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.main, |kv| kv.create_revision),
            mod_revision: self.main,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value: match &prev {
                Some(kv) if p.ignore_value => kv.value.clone(),
                _ => p.value.clone(),
            },
            lease: match &prev {
                Some(kv) if p.ignore_lease => kv.lease,
                _ => p.lease,
            },
        };
        self.work.insert(p.key.clone(), kv.clone());
        self.changes.push((EventKind::Put, kv));
        Ok(PutResponse {
            revision: self.main,
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let gone: Vec<KeyValue> = self
            .work
            .values()
            .filter(|kv| in_range(&kv.key, &d.key, &d.range_end))
            .cloned()
            .collect();
        for kv in &gone {
            self.work.remove(&kv.key);
            self.changes.push((
                EventKind::Delete,
                KeyValue {
                    key: kv.key.clone(),
                    mod_revision: self.main,
                    ..KeyValue::default()
                },
            ));
        }
        DeleteRangeResponse {
            revision: self.header(),
            deleted: gone.len() as i64,
            prev_kvs: if d.prev_kv { gone } else { Vec::new() },
        }
    }

    fn range(&self, r: &RangeRequest) -> RangeResponse {
        if r.revision == 0 {
            // The transaction's own writes so far.
            range_of(&self.work, r, self.header())
        } else {
            // Checked before: compact ≤ revision ≤ the revision before the txn.
            range_of(&self.m.states[r.revision as usize], r, self.header())
        }
    }

    fn txn(&mut self, t: &TxnRequest, nested: bool) -> Result<TxnResponse, NoAnswer> {
        let succeeded = self.taken(t);
        let mut responses = Vec::new();
        for op in branch(t, succeeded) {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.txn(n, true)?),
            });
        }
        Ok(TxnResponse {
            revision: if nested { 0 } else { self.header() },
            succeeded,
            responses,
        })
    }
}

// ---- etcd's transaction checks, written out again (v3rpc/key.go) ----

/// `checkTxnRequest`: max(compares, success, failure) per level against a
/// budget that shrinks by that much per level of nesting.
fn etcd_budget_ok(t: &TxnRequest, max_ops: i64) -> bool {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len()) as i64;
    opc <= max_ops
        && t.success.iter().chain(&t.failure).all(|op| match op {
            RequestOp::Txn(n) => etcd_budget_ok(n, max_ops - opc),
            _ => true,
        })
}

/// A deleted interval as etcd's interval tree sees it: a point, or
/// `[start, end)` compared bytewise (so an end of `"\0"` holds nothing).
type Dels = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn dels_hit(dels: &Dels, k: &[u8]) -> bool {
    dels.iter().any(|(s, e)| match e {
        None => s.as_slice() == k,
        Some(e) => s.as_slice() <= k && k < e.as_slice(),
    })
}

/// `checkIntervals`: `Err(())` for a duplicate key.
fn etcd_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Dels), ()> {
    let mut dels: Dels = Vec::new();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            let end = (!d.range_end.is_empty()).then(|| d.range_end.clone());
            dels.push((d.key.clone(), end));
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(n) = op else { continue };
        let (puts_then, dels_then) = etcd_intervals(&n.success)?;
        let (puts_else, dels_else) = etcd_intervals(&n.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels_hit(&dels, k) {
                return Err(());
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || dels_hit(&dels, k) {
                return Err(());
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || dels_hit(&dels, &p.key) {
            return Err(());
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[derive(Debug, PartialEq, Eq)]
enum TxnCheck {
    Ok,
    TooManyOps,
    DuplicateKey,
}

fn etcd_check_txn(t: &TxnRequest, max_ops: i64) -> TxnCheck {
    if !etcd_budget_ok(t, max_ops) {
        TxnCheck::TooManyOps
    } else if etcd_intervals(&t.success).is_err() || etcd_intervals(&t.failure).is_err() {
        TxnCheck::DuplicateKey
    } else {
        TxnCheck::Ok
    }
}

fn store_check_txn(t: &TxnRequest, max_ops: i64) -> Result<TxnCheck, String> {
    match validate_txn(t, max_ops) {
        Ok(()) => Ok(TxnCheck::Ok),
        Err(Error::TooManyOps) => Ok(TxnCheck::TooManyOps),
        Err(Error::DuplicateKey) => Ok(TxnCheck::DuplicateKey),
        Err(e) => Err(format!("validate_txn: unexpected {e:?}")),
    }
}

// ---- generated operations ----

#[derive(Clone, Debug)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    /// `via_read`: a read-only one goes to `read_txn` instead of the log.
    Txn {
        txn: TxnRequest,
        via_read: bool,
    },
    /// Revision and filter fields hold codes (see `rev_code`).
    Range(RangeRequest),
    Compact {
        code: u16,
        wait: bool,
    },
    HashKv(u16),
    /// A write or compaction with an entry index already applied.
    Replay {
        back: u8,
        compact: bool,
    },
    Reopen,
    /// Lets the committer's interval pass.
    Sleep,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    (0..KEYS.len()).prop_map(|i| KEYS[i].to_vec())
}

fn bound() -> impl Strategy<Value = Vec<u8>> {
    (0..BOUNDS.len()).prop_map(|i| BOUNDS[i].to_vec())
}

/// `(key, range_end)`: one key, `[a, b)`, a prefix, from a key, everything,
/// weighted by `w`.
fn interval(w: [u32; 5]) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        w[0] => key().prop_map(|k| (k, Vec::new())),
        w[1] => (bound(), bound()),
        w[2] => key().prop_map(|k| {
            let e = prefix_end(&k);
            (k, e)
        }),
        w[3] => bound().prop_map(|k| (k, vec![0])),
        w[4] => Just((vec![0], vec![0])),
    ]
}

fn lease() -> impl Strategy<Value = i64> {
    prop_oneof![6 => Just(0i64), 3 => 1i64..4]
}

fn put() -> impl Strategy<Value = PutRequest> {
    (key(), 0u8..8, lease(), any::<bool>(), 0u8..16).prop_map(|(key, v, lease, prev_kv, flags)| {
        // As the API layer requires: no value with ignore_value, no lease
        // with ignore_lease.
        let ignore_value = flags == 0 || flags == 2;
        let ignore_lease = flags == 1 || flags == 2;
        PutRequest {
            key,
            value: if ignore_value { Vec::new() } else { value(v) },
            lease: if ignore_lease { 0 } else { lease },
            prev_kv,
            ignore_value,
            ignore_lease,
        }
    })
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (interval([12, 3, 2, 1, 1]), any::<bool>()).prop_map(|((key, range_end), prev_kv)| {
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv,
        }
    })
}

fn filter_code() -> impl Strategy<Value = i64> {
    prop_oneof![12 => Just(0i64), 1 => 1i64..1000]
}

fn range() -> impl Strategy<Value = RangeRequest> {
    (
        interval([4, 3, 2, 2, 2]),
        prop_oneof![3 => Just(0i64), 2 => 1i64..4],
        any::<u16>(),
        (0usize..3, 0usize..5),
        (prop::bool::weighted(0.2), prop::bool::weighted(0.1)),
        prop::collection::vec(filter_code(), 4),
    )
        .prop_map(
            |((key, range_end), limit, rev, (o, t), (keys_only, count_only), f)| RangeRequest {
                key,
                range_end,
                limit,
                revision: i64::from(rev),
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][o],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][t],
                keys_only,
                count_only,
                min_mod_revision: f[0],
                max_mod_revision: f[1],
                min_create_revision: f[2],
                max_create_revision: f[3],
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        2 => (0i64..1000).prop_map(CompareTarget::Version),
        1 => (0i64..1000).prop_map(CompareTarget::Create),
        2 => (0i64..1000).prop_map(CompareTarget::Mod),
        2 => (0u8..8).prop_map(|v| CompareTarget::Value(value(v))),
        1 => (0i64..4).prop_map(CompareTarget::Lease),
    ];
    (
        key(),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        0usize..4,
        target,
    )
        .prop_map(|(key, end, result, target)| Compare {
            range_end: match end {
                0 => Vec::new(),
                1 => prefix_end(&key),
                _ => vec![0],
            },
            key,
            result: [
                CompareResult::Equal,
                CompareResult::NotEqual,
                CompareResult::Greater,
                CompareResult::Less,
            ][result],
            target,
        })
}

fn request_op(depth: u32) -> BoxedStrategy<RequestOp> {
    let leaf = prop_oneof![
        4 => put().prop_map(RequestOp::Put),
        2 => delete().prop_map(RequestOp::DeleteRange),
        3 => range().prop_map(RequestOp::Range),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![5 => leaf, 2 => txn(depth - 1).prop_map(RequestOp::Txn)].boxed()
    }
}

fn txn(depth: u32) -> BoxedStrategy<TxnRequest> {
    (
        prop::collection::vec(compare(), 0..4),
        prop::collection::vec(request_op(depth), 0..5),
        prop::collection::vec(request_op(depth), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
        .boxed()
}

/// Puts of many keys in one transaction, so that ranges have plenty to return.
fn fill() -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(any::<bool>(), KEYS.len()),
        0u8..8,
        lease(),
    )
        .prop_map(|(which, v, lease)| TxnRequest {
            compare: Vec::new(),
            success: KEYS
                .iter()
                .zip(which)
                .enumerate()
                .filter(|(_, (_, put))| *put)
                .map(|(i, (k, _))| {
                    RequestOp::Put(PutRequest {
                        lease,
                        ..PutRequest::new(*k, value(v + i as u8 % 3))
                    })
                })
                .collect(),
            failure: Vec::new(),
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => fill().prop_map(|txn| Op::Txn { txn, via_read: false }),
        10 => put().prop_map(Op::Put),
        4 => delete().prop_map(Op::Delete),
        10 => (txn(2), any::<bool>()).prop_map(|(txn, via_read)| Op::Txn { txn, via_read }),
        8 => range().prop_map(Op::Range),
        3 => (any::<u16>(), any::<bool>()).prop_map(|(code, wait)| Op::Compact { code, wait }),
        1 => any::<u16>().prop_map(Op::HashKv),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(back, compact)| Op::Replay { back, compact }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Sleep),
    ]
}

// ---- codes to revisions ----

/// A read revision: mostly the current one (0), else the current one
/// explicitly, a future one, exactly the compaction revision, just below it,
/// a negative one (top level only: inside a transaction etcd treats negative
/// revisions differently from §4.3, so none are sent there), or any past one.
fn rev_code(code: i64, m: &Model, top: bool) -> i64 {
    let cur = m.current();
    let spread = code / 12;
    let past = 1 + spread % cur;
    match code % 12 {
        0..=2 => 0,
        3 => cur + 1 + spread % 2,
        4 if m.compact >= 1 => m.compact,
        5 if m.compact >= 2 => m.compact - 1,
        6 => cur,
        7 if top => -1 - spread % 3,
        8 | 9 => (cur - spread % 4).max(1),
        _ => past,
    }
}

fn filter_code_to_rev(code: i64, m: &Model) -> i64 {
    if code == 0 {
        0
    } else {
        1 + code % (m.current() + 1)
    }
}

/// A compare operand near the first key's actual field, or anything.
fn compare_code(code: i64, actual: i64, cur: i64) -> i64 {
    match code % 4 {
        0 => actual,
        1 => actual + 1,
        2 => actual - 1,
        _ => (code / 4) % (cur + 2),
    }
}

fn resolve_range(r: &mut RangeRequest, m: &Model, top: bool) {
    r.revision = rev_code(r.revision, m, top);
    for f in [
        &mut r.min_mod_revision,
        &mut r.max_mod_revision,
        &mut r.min_create_revision,
        &mut r.max_create_revision,
    ] {
        *f = filter_code_to_rev(*f, m);
    }
}

fn resolve_txn(t: &mut TxnRequest, m: &Model) {
    let cur = m.current();
    for c in &mut t.compare {
        let first = m
            .head()
            .values()
            .find(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .cloned()
            .unwrap_or_default();
        match &mut c.target {
            CompareTarget::Version(v) => *v = compare_code(*v, first.version, cur),
            CompareTarget::Create(v) => *v = compare_code(*v, first.create_revision, cur),
            CompareTarget::Mod(v) => *v = compare_code(*v, first.mod_revision, cur),
            CompareTarget::Value(_) | CompareTarget::Lease(_) => {}
        }
    }
    for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
        match op {
            RequestOp::Range(r) => resolve_range(r, m, false),
            RequestOp::Txn(n) => resolve_txn(n, m),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
        }
    }
}

fn compact_code(code: u16, m: &Model) -> i64 {
    let cur = m.current();
    let spread = i64::from(code / 10);
    match code % 10 {
        0 => m.compact,
        1 => m.compact - 1,
        2 => cur + 1 + spread % 2,
        3 => cur,
        4 => 0,
        _ => {
            let lo = m.compact.max(0) + 1;
            if lo > cur {
                cur
            } else {
                lo + spread % (cur - lo + 1)
            }
        }
    }
}

fn hash_code(code: u16, m: &Model) -> i64 {
    let cur = m.current();
    match code % 5 {
        0 => 0,
        1 => m.compact,
        2 => cur + 1,
        _ => 1 + i64::from(code / 5) % cur,
    }
}

// ---- running a sequence ----

/// Batches commit every few operations and milliseconds, so a sequence reads
/// through buffered batches and the tree alike; a physical compaction pass
/// takes several B+tree transactions, so a reopen can interrupt one.
fn opts() -> StoreOptions {
    StoreOptions {
        batch_interval: Duration::from_millis(2),
        batch_limit: 7,
        compaction_batch_limit: 2,
        compaction_pause: Duration::ZERO,
        ..StoreOptions::default()
    }
}

/// Debug output with byte lists as byte strings, long ones cut.
fn show(x: &impl std::fmt::Debug) -> String {
    let s = format!("{x:?}");
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let bytes: Option<Vec<u8>> = tail.find(']').and_then(|e| {
            let inner = &tail[..e];
            if inner.is_empty() {
                return None;
            }
            inner.split(", ").map(|n| n.parse::<u8>().ok()).collect()
        });
        match bytes {
            Some(b) => {
                let e = tail.find(']').expect("found");
                let text: String = b
                    .iter()
                    .take(12)
                    .flat_map(|c| c.escape_ascii())
                    .map(char::from)
                    .collect();
                if b.len() > 12 {
                    out.push_str(&format!("b\"{text}\"..({} bytes)", b.len()));
                } else {
                    out.push_str(&format!("b\"{text}\""));
                }
                rest = &tail[e + 1..];
            }
            None => {
                out.push('[');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

struct Run {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Option<Store>,
    entry: u64,
    m: Model,
    log: Vec<String>,
    /// `hash_kv` answers by (revision, compaction revision).
    hashes: BTreeMap<(i64, i64), u32>,
    /// Compactions not waited for, with their revisions.
    pending: Vec<(i64, Compaction)>,
}

macro_rules! check {
    ($run:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($run.fail(format!($($msg)+)));
        }
    };
}

macro_rules! check_eq {
    ($run:expr, $got:expr, $want:expr, $($msg:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err($run.fail(format!(
                "{}\n  store: {}\n  model: {}",
                format!($($msg)+),
                show(got),
                show(want)
            )));
        }
    }};
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, opts()).unwrap();
        Run {
            _dir: dir,
            path,
            store: Some(store),
            entry: 0,
            m: Model::new(),
            log: Vec::new(),
            hashes: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    fn next_entry(&mut self) -> EntryId {
        self.entry += 1;
        EntryId::new(self.entry, 1)
    }

    fn note(&mut self, s: String) {
        self.log.push(format!("{:3}: {s}", self.log.len()));
    }

    fn fail(&self, msg: String) -> TestCaseError {
        TestCaseError::fail(format!(
            "{msg}\nrequests (revision {}, compaction revision {}):\n{}",
            self.m.current(),
            self.m.compact,
            self.log.join("\n")
        ))
    }

    fn heads_agree(&self) -> Result<(), TestCaseError> {
        check_eq!(
            self,
            self.store().current_revision(),
            self.m.current(),
            "current revision"
        );
        check_eq!(
            self,
            self.store().compact_revision(),
            self.m.compact,
            "compaction revision"
        );
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Put(p) => self.write(WriteRequest::Put(p))?,
            Op::Delete(d) => self.write(WriteRequest::DeleteRange(d))?,
            Op::Txn { mut txn, via_read } => {
                resolve_txn(&mut txn, &self.m);
                // The store's checks must agree with etcd's, rewritten here
                // (see also `duplicate_key_check_of_nested_txns`).
                let want = etcd_check_txn(&txn, 128);
                let got = store_check_txn(&txn, 128).map_err(|e| self.fail(e))?;
                check_eq!(self, got, want, "validate_txn(128) of {}", show(&txn));
                let got = store_check_txn(&txn, 3).map_err(|e| self.fail(e))?;
                check_eq!(
                    self,
                    got,
                    etcd_check_txn(&txn, 3),
                    "validate_txn(3) of {}",
                    show(&txn)
                );
                check_eq!(self, txn.is_read_only(), read_only(&txn), "is_read_only");
                if want != TxnCheck::Ok {
                    // Rejected by the API layer; never reaches the store.
                    return Ok(());
                }
                if via_read && read_only(&txn) {
                    self.read_txn(txn)?;
                } else {
                    self.write(WriteRequest::Txn(txn))?;
                }
            }
            Op::Range(mut r) => {
                resolve_range(&mut r, &self.m, true);
                self.note(format!("range {}", show(&r)));
                let got = self.store().range(&r);
                let want = self.m.range(&r);
                self.agree(got, want, "range")?;
            }
            Op::Compact { code, wait } => self.compact(compact_code(code, &self.m), wait)?,
            Op::HashKv(code) => {
                let rev = hash_code(code, &self.m);
                self.hash_kv(rev)?;
            }
            Op::Replay { back, compact } => {
                if self.entry == 0 {
                    return Ok(());
                }
                // An entry at or below the last one applied changes nothing.
                let entry = EntryId::new(self.entry - u64::from(back) % self.entry, 1);
                self.note(format!("replay entry {} (compact: {compact})", entry.index));
                let replayed = if compact {
                    let r = self.store().compact(entry, self.m.current());
                    matches!(r, Ok(Applied::AlreadyApplied))
                } else {
                    let put = PutRequest::new(KEYS[0], "replayed");
                    let r = self.store().write(entry, WriteRequest::Put(put));
                    matches!(r, Ok(Applied::AlreadyApplied))
                };
                check!(self, replayed, "replayed entry {} was applied", entry.index);
            }
            Op::Reopen => {
                self.note("reopen".into());
                self.reopen()?;
            }
            Op::Sleep => std::thread::sleep(Duration::from_millis(3)),
        }
        self.heads_agree()
    }

    /// `hash_kv`: etcd's errors and header; and a hash at a revision is the
    /// same whenever asked at the same compaction revision — after later
    /// writes, reopens, commits and physical compaction passes. (Only where
    /// some key exists at that revision: otherwise etcd's algorithm hashes
    /// whatever compaction has not removed yet.)
    fn hash_kv(&mut self, rev: i64) -> Result<(), TestCaseError> {
        self.note(format!("hash_kv {rev}"));
        let got = self.store().hash_kv(rev);
        let (cur, compact) = (self.m.current(), self.m.compact);
        match got {
            Err(e) if rev > 0 && rev <= compact => {
                check!(self, matches!(e, Error::Compacted), "hash_kv: {e:?}")
            }
            Err(e) if rev > 0 && rev > cur => {
                check!(self, matches!(e, Error::FutureRevision), "hash_kv: {e:?}")
            }
            Err(e) => return Err(self.fail(format!("hash_kv: {e:?}"))),
            Ok(h) => {
                check!(
                    self,
                    !(rev > 0 && (rev <= compact || rev > cur)),
                    "hash_kv({rev}) succeeded: {h:?}"
                );
                check_eq!(
                    self,
                    (h.revision, h.compact_revision),
                    (cur, compact),
                    "hash_kv header"
                );
                let at = if rev == 0 { cur } else { rev };
                if at > 0 && !self.m.states[at as usize].is_empty() {
                    let before = *self.hashes.entry((at, compact)).or_insert(h.hash);
                    check_eq!(
                        self,
                        h.hash,
                        before,
                        "hash_kv({at}) at compaction revision {compact}"
                    );
                }
            }
        }
        Ok(())
    }

    fn agree<T: std::fmt::Debug + PartialEq>(
        &self,
        got: Result<T>,
        want: Result<T, Expect>,
        what: &str,
    ) -> Result<(), TestCaseError> {
        match (got, want) {
            (Ok(g), Ok(w)) => check_eq!(self, g, w, "{what}: response"),
            (Err(e), Err(x)) => check!(self, is(&e, x), "{what}: error {e:?}, model {x:?}"),
            (g, w) => {
                return Err(self.fail(format!(
                    "{what}\n  store: {}\n  model: {}",
                    show(&g),
                    show(&w)
                )));
            }
        }
        Ok(())
    }

    fn write(&mut self, req: WriteRequest) -> Result<(), TestCaseError> {
        let want = match self.m.write(&req) {
            Err(NoAnswer::EtcdPanics) => {
                self.note(format!("(not sent: etcd panics) {}", show(&req)));
                return Ok(());
            }
            Err(NoAnswer::Err(x)) => Err(x),
            Ok(w) => Ok(w),
        };
        self.note(format!("write {}", show(&req)));
        let entry = self.next_entry();
        let got = self.store().write(entry, req);
        match (got, want) {
            (Ok(Applied::Done(out)), Ok(w)) => {
                check_eq!(self, out.response, w.response, "write: response");
                let events: Vec<(EventKind, KeyValue)> = out
                    .events
                    .iter()
                    .map(|e| (e.kind, (*e.kv).clone()))
                    .collect();
                check_eq!(self, events, w.events, "write: events");
                if let Some(head) = w.head {
                    self.m.states.push(head);
                }
            }
            (Err(e), Err(x)) => check!(self, is(&e, x), "write: error {e:?}, model {x:?}"),
            (Ok(Applied::AlreadyApplied), _) => {
                return Err(self.fail("write: entry taken as already applied".into()));
            }
            (got, want) => {
                let got = got.map(|a| a.unwrap().response);
                let want = want.map(|w| w.response);
                return Err(self.fail(format!(
                    "write\n  store: {}\n  model: {}",
                    show(&got),
                    show(&want)
                )));
            }
        }
        Ok(())
    }

    fn read_txn(&mut self, txn: TxnRequest) -> Result<(), TestCaseError> {
        self.note(format!("read_txn {}", show(&txn)));
        let want = match self.m.write(&WriteRequest::Txn(txn.clone())) {
            Ok(w) => {
                check!(self, w.head.is_none(), "a read-only txn changed the model");
                match w.response {
                    WriteResponse::Txn(t) => Ok(t),
                    other => unreachable!("{other:?}"),
                }
            }
            Err(NoAnswer::Err(x)) => Err(x),
            Err(NoAnswer::EtcdPanics) => unreachable!("no puts"),
        };
        let got = self.store().read_txn(&txn);
        self.agree(got, want, "read_txn")
    }

    fn compact(&mut self, rev: i64, wait: bool) -> Result<(), TestCaseError> {
        self.note(format!("compact {rev} (wait: {wait})"));
        let entry = self.next_entry();
        let got = self.store().compact(entry, rev);
        let want = self.m.compact(rev);
        match (got, want) {
            (Ok(Applied::Done(c)), Ok(cur)) => {
                check_eq!(self, c.revision, cur, "compact: response revision");
                if wait {
                    let r = c.wait();
                    check!(self, r.is_ok(), "compaction {rev}: {r:?}");
                    self.check_key_bucket(rev)?;
                } else {
                    self.pending.push((rev, c));
                }
            }
            (Err(e), Err(x)) => check!(self, is(&e, x), "compact: error {e:?}, model {x:?}"),
            (got, want) => {
                let got = got.map(|a| a.unwrap().revision);
                return Err(self.fail(format!(
                    "compact\n  store: {}\n  model: {}",
                    show(&got),
                    show(&want)
                )));
            }
        }
        Ok(())
    }

    /// After compacting at `c`, the `key` bucket holds at or below `c` only
    /// the record of each key alive at `c` (§4.5), and no tombstones.
    fn check_key_bucket(&self, c: i64) -> Result<(), TestCaseError> {
        let rt = self.store().db().begin_read();
        let bucket = rt.bucket(schema::KEY).unwrap().expect("key bucket");
        let mut held: Vec<(Vec<u8>, KeyValue)> = Vec::new();
        for item in bucket.iter() {
            let (k, v) = item.unwrap();
            let rk = RevisionKey::decode(k).unwrap();
            if rk.revision.main > c {
                continue;
            }
            let kv = KeyValue::decode(v).unwrap();
            check!(
                self,
                !rk.tombstone,
                "compacted at {c}: tombstone of {} at {} kept",
                show(&kv.key),
                rk.revision
            );
            check_eq!(
                self,
                kv.mod_revision,
                rk.revision.main,
                "record at {}",
                rk.revision
            );
            held.push((kv.key.clone(), kv));
        }
        held.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(Vec<u8>, KeyValue)> = self.m.states[c.max(0) as usize]
            .iter()
            .map(|(k, kv)| (k.clone(), kv.clone()))
            .collect();
        check_eq!(
            self,
            held,
            want,
            "key bucket at or below the compaction revision {c}"
        );
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        let s = self.store.take().expect("open");
        s.close().unwrap();
        for (rev, c) in std::mem::take(&mut self.pending) {
            if c.wait().is_err() {
                self.note(format!("(compaction at {rev} interrupted by the close)"));
            }
        }
        self.store = Some(Store::open(&self.path, opts()).unwrap());
        let last = if self.entry == 0 {
            EntryId::default()
        } else {
            EntryId::new(self.entry, 1)
        };
        check_eq!(
            self,
            self.store().applied_index(),
            last,
            "applied index after reopen"
        );
        self.heads_agree()
    }

    /// Reads everything at every revision from the compaction revision up,
    /// and one below it.
    fn check_history(&mut self) -> Result<(), TestCaseError> {
        self.heads_agree()?;
        let cur = self.m.current();
        let from = self.m.compact.max(1);
        if from > 1 {
            let r = RangeRequest {
                revision: from - 1,
                ..RangeRequest::range(vec![0], vec![0])
            };
            let got = self.store().range(&r);
            check!(
                self,
                matches!(got, Err(Error::Compacted)),
                "read below the compaction revision: {got:?}"
            );
        }
        for rev in from..=cur {
            let r = RangeRequest {
                revision: rev,
                ..RangeRequest::range(vec![0], vec![0])
            };
            let got = self.store().range(&r);
            let want = self.m.range(&r);
            self.agree(got, want, &format!("full range at {rev}"))?;
            if rev > self.m.compact {
                self.hash_kv(rev)?;
            }
        }
        Ok(())
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        run.step(op)?;
    }
    run.note("final check".into());
    run.check_history()?;
    run.note("final reopen".into());
    run.reopen()?;
    run.check_history()?;
    run.store.take().expect("open").close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// Found by the test above: etcd's `checkIntervals` collects a branch's puts
/// in a set, so a nested transaction putting `k` in both its branches
/// contributes `k` once, and etcd 3.4 accepts this transaction; the store's
/// check once collected them in a list and took the second `k` for a
/// duplicate one level up.
#[test]
fn duplicate_key_check_of_nested_txns() {
    let put = |k: &str| RequestOp::Put(PutRequest::new(k, "v"));
    let txn = |success: Vec<RequestOp>, failure: Vec<RequestOp>| TxnRequest {
        compare: Vec::new(),
        success,
        failure,
    };
    let inner = txn(vec![put("k")], vec![put("k")]);
    let middle = txn(vec![RequestOp::Txn(inner)], Vec::new());
    let outer = txn(vec![RequestOp::Txn(middle)], Vec::new());
    assert_eq!(etcd_check_txn(&outer, 128), TxnCheck::Ok);
    assert_eq!(store_check_txn(&outer, 128), Ok(TxnCheck::Ok));
}
