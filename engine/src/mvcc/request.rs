//! Requests and responses of the store: etcd's KV operations as plain Rust
//! values (the server converts its protobuf messages to and from these), and
//! the checks etcd makes before a request is accepted.

use std::collections::HashSet;

use super::error::{Error, Result};
use super::kv::KeyValue;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// Empty: only `key`; `"\0"`: every key from `key`; else `[key, range_end)`.
    pub range_end: Vec<u8>,
    /// At most this many keys (0: no limit).
    pub limit: i64,
    /// Read at this revision (0 or less: the current one).
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Inclusive filters on the returned keys; 0 means unbounded.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A read of one key at the current revision.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    /// A read of `[key, range_end)` at the current revision.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        RangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's current revision (not the one read at), as etcd answers.
    pub revision: i64,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` let through.
    pub more: bool,
    /// Keys in the range at the revision read, regardless of limit and filters.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the key's current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: i64,
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a compare looks at, and the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// etcd's `Compare`: `key` (or every key of `[key, range_end)`) against the
/// target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            range_end: Vec::new(),
            result,
            target,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`: if every compare holds, `success`, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The new revision if the transaction changed anything, else the
    /// current one. Nested transactions answer 0, as etcd's do.
    pub revision: i64,
    pub succeeded: bool,
    /// One per operation of the branch taken.
    pub responses: Vec<ResponseOp>,
}

impl TxnRequest {
    /// Whether no branch at any depth writes (such a transaction can be
    /// answered from a snapshot, without going through the log).
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Txn(t) => t.is_read_only(),
            _ => false,
        })
    }
}

/// A write the store applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

impl WriteResponse {
    pub fn revision(&self) -> i64 {
        match self {
            WriteResponse::Put(r) => r.revision,
            WriteResponse::DeleteRange(r) => r.revision,
            WriteResponse::Txn(r) => r.revision,
        }
    }
}

// ---- checks made before a request is accepted (etcd does them in its API
// layer, before the request enters the log) ----

pub fn validate_range(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn validate_put(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn validate_delete_range(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's checks of a transaction: at most `max_ops` compares and operations
/// per branch at each level (a nested transaction gets what its parent left),
/// non-empty keys, and no key written twice in a branch — two puts of a key,
/// or a put inside a deletion, counting nested transactions, where the same
/// key in both branches of one nested transaction is allowed.
pub fn validate_txn(r: &TxnRequest, max_ops: i64) -> Result<()> {
    check_txn(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn(r: &TxnRequest, max_ops: i64) -> Result<()> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match op {
            RequestOp::Range(q) => validate_range(q)?,
            RequestOp::Put(q) => validate_put(q)?,
            RequestOp::DeleteRange(q) => validate_delete_range(q)?,
            RequestOp::Txn(t) => check_txn(t, max_ops - opc)?,
        }
    }
    Ok(())
}

/// Deleted ranges of a branch: `(start, Some(end))` is `[start, end)`, `(k,
/// None)` the single key `k`. Ranges compare bytewise, so a range ending in
/// `"\0"` (every key from `start`) holds no key here — etcd's own check
/// treats it the same way.
type Deletes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn deleted(dels: &Deletes, k: &[u8]) -> bool {
    dels.iter().any(|(s, e)| match e {
        None => s.as_slice() == k,
        Some(e) => s.as_slice() <= k && k < e.as_slice(),
    })
}

fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Deletes)> {
    let mut dels: Deletes = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) if d.range_end.is_empty() => Some((d.key.clone(), None)),
            RequestOp::DeleteRange(d) => Some((d.key.clone(), Some(d.range_end.clone()))),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest::new(k, "v"))
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest::new(k, end))
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_keys_follow_etcds_rules() {
        let dup = |t: TxnRequest| matches!(validate_txn(&t, 128), Err(Error::DuplicateKey));
        assert!(dup(txn(vec![put("a"), put("a")], vec![])));
        assert!(dup(txn(vec![del("a", "c"), put("b")], vec![])));
        assert!(dup(txn(vec![put("b"), del("b", "")], vec![])));
        assert!(!dup(txn(vec![put("a"), put("b")], vec![put("a")])));
        // The same key in then and else of a nested txn is fine...
        let nested = RequestOp::Txn(txn(vec![put("k")], vec![put("k")]));
        assert!(!dup(txn(vec![nested.clone()], vec![])));
        // ... but not alongside a put of it in the parent.
        assert!(dup(txn(vec![nested.clone(), put("k")], vec![])));
        // One level further up the key counts once.
        let middle = RequestOp::Txn(txn(vec![nested.clone()], vec![]));
        assert!(!dup(txn(vec![middle], vec![])));
        // A parent's deletion covers its children's puts, and the reverse.
        assert!(dup(txn(vec![del("a", "z"), nested.clone()], vec![])));
        let nested_del = RequestOp::Txn(txn(vec![del("k", "")], vec![]));
        assert!(dup(txn(vec![nested_del, put("k")], vec![])));
        // A deletion of every key from `key` ("\0") does not count, as in etcd.
        assert!(!dup(txn(vec![del("a", "\0"), put("b")], vec![])));
    }

    #[test]
    fn operation_budget_is_per_branch_and_shrinks_with_depth() {
        let many = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
        assert!(validate_txn(&txn(many(3), many(3)), 3).is_ok());
        assert!(matches!(
            validate_txn(&txn(many(4), vec![]), 3),
            Err(Error::TooManyOps)
        ));
        // Parent uses 2 of 4; a nested txn with 3 ops exceeds the 2 left.
        let nested = RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: vec![put("x"), put("y"), put("z")],
            failure: vec![],
        });
        assert!(matches!(
            validate_txn(&txn(vec![nested, put("a")], vec![]), 4),
            Err(Error::TooManyOps)
        ));
    }

    #[test]
    fn puts_are_checked_like_etcds_api() {
        let mut p = PutRequest::new("k", "v");
        p.ignore_value = true;
        assert!(matches!(validate_put(&p), Err(Error::ValueProvided)));
        let mut p = PutRequest::new("k", "");
        p.ignore_lease = true;
        p.lease = 5;
        assert!(matches!(validate_put(&p), Err(Error::LeaseProvided)));
        assert!(matches!(
            validate_put(&PutRequest::new("", "v")),
            Err(Error::EmptyKey)
        ));
        let t = TxnRequest {
            compare: vec![Compare::new(
                "",
                CompareResult::Equal,
                CompareTarget::Version(0),
            )],
            ..Default::default()
        };
        assert!(matches!(validate_txn(&t, 128), Err(Error::EmptyKey)));
    }
}
