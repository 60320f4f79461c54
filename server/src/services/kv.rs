//! etcd's KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use cairn_engine::mvcc;
use cairn_proto::etcdserverpb::{self as pb, InternalRaftRequest, kv_server::Kv};
use tonic::{Request, Response, Status};

use crate::convert;
use crate::errors::ApiError;
use crate::server::{EtcdServer, quota_cost};
use crate::state::ApplyOutput;

pub struct KvService(pub Arc<EtcdServer>);

impl KvService {
    pub async fn range(&self, r: pb::RangeRequest) -> Result<pb::RangeResponse, ApiError> {
        let s = &self.0;
        let q = convert::range_req(&r);
        mvcc::validate_range(&q)?;
        if !r.serializable {
            s.not_learner()?;
            s.linearizable().await?;
        }
        s.metrics.range_total.inc();
        let mut resp = convert::range_resp(s.store().range(&q)?);
        s.fill(&mut resp.header);
        Ok(resp)
    }

    pub async fn put(&self, r: pb::PutRequest) -> Result<pb::PutResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        mvcc::validate_put(&convert::put_req(&r))?;
        s.check_quota(quota_cost::put(&r)).await?;
        s.metrics.put_total.inc();
        s.metrics.put_size.add((r.key.len() + r.value.len()) as u64);
        match s
            .propose(InternalRaftRequest {
                put: Some(r),
                ..Default::default()
            })
            .await?
        {
            ApplyOutput::Put(mut p) => {
                s.fill(&mut p.header);
                Ok(p)
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn delete_range(
        &self,
        r: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        mvcc::validate_delete_range(&convert::delete_req(&r))?;
        s.metrics.delete_total.inc();
        match s
            .propose(InternalRaftRequest {
                delete_range: Some(r),
                ..Default::default()
            })
            .await?
        {
            ApplyOutput::DeleteRange(mut d) => {
                s.fill(&mut d.header);
                Ok(d)
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn txn(&self, r: pb::TxnRequest) -> Result<pb::TxnResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        let t = convert::txn_req(&r).ok_or(ApiError::KeyNotFound)?;
        mvcc::validate_txn(&t, s.limits.max_txn_ops)?;
        s.metrics.txn_total.inc();
        if t.is_read_only() {
            // etcd answers a transaction that writes nothing without the
            // log, after a linearizable read point.
            s.linearizable().await?;
            let mut resp = convert::txn_resp(s.store().read_txn(&t)?);
            s.fill(&mut resp.header);
            return Ok(resp);
        }
        s.check_quota(quota_cost::txn(&r)).await?;
        match s
            .propose(InternalRaftRequest {
                txn: Some(r),
                ..Default::default()
            })
            .await?
        {
            ApplyOutput::Txn(mut t) => {
                s.fill(&mut t.header);
                Ok(t)
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn compact(
        &self,
        r: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        let physical = r.physical;
        match s
            .propose(InternalRaftRequest {
                compaction: Some(r),
                ..Default::default()
            })
            .await?
        {
            ApplyOutput::Compaction { revision, done } => {
                if let Some(done) = done.filter(|_| physical) {
                    tokio::task::spawn_blocking(move || done.wait())
                        .await
                        .map_err(|e| ApiError::Internal(e.to_string()))??;
                }
                Ok(pb::CompactionResponse {
                    header: s.header(revision),
                })
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(KvService::range(self, r.into_inner()).await?))
    }

    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(KvService::put(self, r.into_inner()).await?))
    }

    async fn delete_range(
        &self,
        r: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Ok(Response::new(
            KvService::delete_range(self, r.into_inner()).await?,
        ))
    }

    async fn txn(&self, r: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Ok(Response::new(KvService::txn(self, r.into_inner()).await?))
    }

    async fn compact(
        &self,
        r: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        Ok(Response::new(
            KvService::compact(self, r.into_inner()).await?,
        ))
    }
}
