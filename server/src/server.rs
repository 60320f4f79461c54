//! What every service shares: the raft node, the store, the lessor, the
//! limits, and the two ways a request is served — proposed through raft, or
//! read locally (after a ReadIndex round when linearizable).

use std::sync::Arc;

use cairn_engine::mvcc::Store;
use cairn_proto::etcdserverpb::{self as pb, InternalRaftRequest};
use cairn_raftnode::Node;
use cairn_raftnode::entry::IdGenerator;
use prost::Message;

use crate::errors::ApiError;
use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::state::{Alarms, ApplyOutput, ApplyResult, StoreCell};

/// Limits from the flags.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: i64,
    /// 0: no quota.
    pub quota_bytes: u64,
}

pub struct EtcdServer {
    pub node: Arc<Node<ApplyResult>>,
    pub store: StoreCell,
    pub lessor: Arc<Lessor>,
    pub alarms: Arc<Alarms>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub limits: Limits,
    pub ids: IdGenerator,
    pub metrics: Arc<Metrics>,
}

/// The gap between committed and applied entries beyond which new
/// proposals are refused (etcd's `maxGapBetweenApplyAndCommitIndex`).
const MAX_APPLY_GAP: u64 = 5000;

impl EtcdServer {
    pub fn store(&self) -> Store {
        self.store.get()
    }

    pub fn term(&self) -> u64 {
        self.node.status().term
    }

    /// A full response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.term(),
        })
    }

    /// Fills a header the apply step left with only a revision.
    pub fn fill(&self, h: &mut Option<pb::ResponseHeader>) {
        let revision = h.as_ref().map_or(0, |h| h.revision);
        *h = self.header(revision);
    }

    /// Learners serve only Status and serializable ranges (etcd's rule).
    pub fn not_learner(&self) -> Result<(), ApiError> {
        if self.node.status().is_learner {
            return Err(ApiError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Proposes a request and waits for what applying it produced.
    ///
    /// The request is encoded before the returned future exists, so that
    /// future (and every caller's) holds its bytes, not the large
    /// `InternalRaftRequest`: a call's state stays small enough for the
    /// allocator's fast path.
    pub fn propose(
        &self,
        req: InternalRaftRequest,
    ) -> impl Future<Output = Result<ApplyOutput, ApiError>> + Send + '_ {
        let data = req.encode_to_vec();
        drop(req);
        async move {
            if data.len() > self.limits.max_request_bytes {
                return Err(ApiError::RequestTooLarge);
            }
            let s = self.node.status();
            if s.commit > s.applied + MAX_APPLY_GAP {
                return Err(ApiError::TooManyRequests);
            }
            self.node.propose(&data).await?
        }
    }

    /// Waits until this member has applied everything committed when the
    /// call began, as confirmed by the leader (linearizable reads).
    pub async fn linearizable(&self) -> Result<(), ApiError> {
        self.node.read_index().await?;
        Ok(())
    }

    /// The database's size and the part of it in use, as etcd counts them
    /// (bbolt's `tx.Size()`): pages up to the high-water mark. The file
    /// itself is preallocated in larger steps and is not the measure.
    pub fn db_size(&self) -> (u64, u64) {
        let db = self.store().stats().db;
        (db.hwm * u64::from(db.page_size), db.in_use_bytes)
    }

    /// etcd's quota check before a write that adds `cost` bytes (its
    /// estimate: see [`quota_cost`]; 0 for writes that add nothing): if
    /// the database would reach the quota, raise the NOSPACE alarm
    /// (through raft) and refuse.
    pub async fn check_quota(&self, cost: u64) -> Result<(), ApiError> {
        if cost == 0 {
            return Ok(());
        }
        if self.alarms.has(pb::AlarmType::Nospace) {
            return Err(ApiError::NoSpace);
        }
        if self.limits.quota_bytes == 0 {
            return Ok(());
        }
        if self.db_size().0 + cost < self.limits.quota_bytes {
            return Ok(());
        }
        // Boxed: the common path's future need not make room for this one.
        Box::pin(self.raise_nospace()).await
    }

    async fn raise_nospace(&self) -> Result<(), ApiError> {
        let req = InternalRaftRequest {
            alarm: Some(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: self.member_id,
                alarm: pb::AlarmType::Nospace as i32,
            }),
            ..Default::default()
        };
        let _ = self.propose(req).await;
        Err(ApiError::NoSpace)
    }

    /// A gRPC channel to the leader's client URL, or `None` if this member
    /// leads (what only the leader can answer is relayed there, as etcd
    /// relays it over its peer API).
    pub async fn leader_channel(&self) -> Result<Option<tonic::transport::Channel>, ApiError> {
        let st = self.node.status();
        if st.leader == 0 {
            return Err(ApiError::NoLeader);
        }
        if st.leader == self.member_id {
            return Ok(None);
        }
        let url = self
            .node
            .members()
            .into_iter()
            .find(|m| m.id == st.leader)
            .and_then(|m| m.client_urls.into_iter().next())
            .ok_or(ApiError::NoLeader)?;
        let ch = tonic::transport::Channel::from_shared(url)
            .map_err(|_| ApiError::NoLeader)?
            .connect()
            .await
            .map_err(|_| ApiError::NoLeader)?;
        Ok(Some(ch))
    }

    /// A new request id (lease ids when the client gives none).
    pub fn next_id(&self) -> u64 {
        self.ids.next()
    }
}

/// etcd's estimate of the bytes a request adds (its `quota.go`): a put its
/// key and value plus 256; a transaction the larger of its branches' puts;
/// a lease grant 64.
pub mod quota_cost {
    use cairn_proto::etcdserverpb as pb;

    const KV_OVERHEAD: u64 = 256;
    pub const LEASE_GRANT: u64 = 64;

    pub fn put(r: &pb::PutRequest) -> u64 {
        KV_OVERHEAD + r.key.len() as u64 + r.value.len() as u64
    }

    pub fn txn(t: &pb::TxnRequest) -> u64 {
        use pb::request_op::Request as Q;
        let branch = |ops: &[pb::RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(Q::RequestPut(p)) => put(p),
                    Some(Q::RequestTxn(t)) => txn(t),
                    _ => 0,
                })
                .sum()
        };
        branch(&t.success).max(branch(&t.failure))
    }
}
