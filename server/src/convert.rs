//! Between etcd's wire messages and the MVCC store's plain requests.

use cairn_engine::mvcc;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;

/// A header carrying only a revision (what etcd puts on a transaction's
/// inner responses; the service fills the rest on outer ones).
pub fn rev_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

pub fn kv(k: &mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: k.key.clone(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        value: k.value.clone(),
        lease: k.lease,
    }
}

pub fn event(e: &mvcc::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            mvcc::EventKind::Put => mvccpb::event::EventType::Put as i32,
            mvcc::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv(&e.kv)),
        prev_kv: e.prev_kv.as_deref().map(kv),
    }
}

pub fn range_req(r: &pb::RangeRequest) -> mvcc::RangeRequest {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    mvcc::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match O::try_from(r.sort_order).unwrap_or(O::None) {
            O::None => mvcc::SortOrder::None,
            O::Ascend => mvcc::SortOrder::Ascend,
            O::Descend => mvcc::SortOrder::Descend,
        },
        sort_target: match T::try_from(r.sort_target).unwrap_or(T::Key) {
            T::Key => mvcc::SortTarget::Key,
            T::Version => mvcc::SortTarget::Version,
            T::Create => mvcc::SortTarget::Create,
            T::Mod => mvcc::SortTarget::Mod,
            T::Value => mvcc::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

pub fn put_req(r: &pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_req(r: &pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &pb::Compare) -> mvcc::Compare {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let int = |u: &Option<U>| match u {
        Some(U::Version(v) | U::CreateRevision(v) | U::ModRevision(v) | U::Lease(v)) => *v,
        _ => 0,
    };
    let target = match T::try_from(c.target).unwrap_or(T::Version) {
        T::Version => mvcc::CompareTarget::Version(int(&c.target_union)),
        T::Create => mvcc::CompareTarget::Create(int(&c.target_union)),
        T::Mod => mvcc::CompareTarget::Mod(int(&c.target_union)),
        T::Lease => mvcc::CompareTarget::Lease(int(&c.target_union)),
        T::Value => mvcc::CompareTarget::Value(match &c.target_union {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
    };
    mvcc::Compare {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        result: match R::try_from(c.result).unwrap_or(R::Equal) {
            R::Equal => mvcc::CompareResult::Equal,
            R::Greater => mvcc::CompareResult::Greater,
            R::Less => mvcc::CompareResult::Less,
            R::NotEqual => mvcc::CompareResult::NotEqual,
        },
        target,
    }
}

/// `None` for an operation with no request in it (etcd: "key not found").
fn request_op(op: &pb::RequestOp) -> Option<mvcc::RequestOp> {
    use pb::request_op::Request as Q;
    Some(match op.request.as_ref()? {
        Q::RequestRange(r) => mvcc::RequestOp::Range(range_req(r)),
        Q::RequestPut(r) => mvcc::RequestOp::Put(put_req(r)),
        Q::RequestDeleteRange(r) => mvcc::RequestOp::DeleteRange(delete_req(r)),
        Q::RequestTxn(t) => mvcc::RequestOp::Txn(txn_req(t)?),
    })
}

pub fn txn_req(t: &pb::TxnRequest) -> Option<mvcc::TxnRequest> {
    Some(mvcc::TxnRequest {
        compare: t.compare.iter().map(compare).collect(),
        success: t.success.iter().map(request_op).collect::<Option<_>>()?,
        failure: t.failure.iter().map(request_op).collect::<Option<_>>()?,
    })
}

pub fn range_resp(r: mvcc::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: rev_header(r.revision),
        kvs: r.kvs.iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_resp(r: mvcc::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: rev_header(r.revision),
        prev_kv: r.prev_kv.as_ref().map(kv),
    }
}

pub fn delete_resp(r: mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: rev_header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.iter().map(kv).collect(),
    }
}

pub fn txn_resp(r: mvcc::TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    pb::TxnResponse {
        header: rev_header(r.revision),
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    mvcc::ResponseOp::Range(x) => R::ResponseRange(range_resp(x)),
                    mvcc::ResponseOp::Put(x) => R::ResponsePut(put_resp(x)),
                    mvcc::ResponseOp::DeleteRange(x) => R::ResponseDeleteRange(delete_resp(x)),
                    mvcc::ResponseOp::Txn(x) => R::ResponseTxn(txn_resp(x)),
                }),
            })
            .collect(),
    }
}

pub fn write_resp(r: mvcc::WriteResponse) -> crate::state::ApplyOutput {
    use crate::state::ApplyOutput as O;
    match r {
        mvcc::WriteResponse::Put(x) => O::Put(put_resp(x)),
        mvcc::WriteResponse::DeleteRange(x) => O::DeleteRange(delete_resp(x)),
        mvcc::WriteResponse::Txn(x) => O::Txn(txn_resp(x)),
    }
}

/// Whether a transaction writes nothing at any depth (it is then answered
/// without going through the log).
pub fn txn_is_read_only(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Q;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Q::RequestRange(_)) | None => true,
            Some(Q::RequestTxn(t)) => txn_is_read_only(t),
            _ => false,
        })
}
