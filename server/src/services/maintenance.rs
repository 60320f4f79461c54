//! etcd's Maintenance service: status, alarms, hashes, defragmentation,
//! snapshots, leadership transfer.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use cairn_engine::btree::DefragOptions;
use cairn_proto::etcdserverpb::{self as pb, InternalRaftRequest, maintenance_server::Maintenance};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::errors::ApiError;
use crate::server::EtcdServer;
use crate::state::ApplyOutput;

/// The etcd version cairn answers as.
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version (major.minor) this server speaks for.
pub const CLUSTER_VERSION: &str = "3.4";

pub struct MaintenanceService(pub Arc<EtcdServer>);

/// Snapshot chunks, as etcd sends them.
const CHUNK: usize = 32 * 1024;

/// Hands written bytes to a channel in chunks, from a blocking thread.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<Vec<u8>>,
}

impl Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        while self.buf.len() >= CHUNK {
            let rest = self.buf.split_off(CHUNK);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.tx
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::other("snapshot receiver gone"))?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::other("snapshot receiver gone"))?;
        }
        Ok(())
    }
}

impl MaintenanceService {
    pub fn status(&self) -> pb::StatusResponse {
        let s = &self.0;
        let st = s.node.status();
        let stats = s.store().stats();
        let (db_size, db_size_in_use) = s.db_size();
        let mut errors: Vec<String> = s
            .alarms
            .list()
            .iter()
            .map(|a| {
                let name = pb::AlarmType::try_from(a.alarm)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                format!("memberID:{} alarm:{} ", a.member_id, name)
            })
            .collect();
        if st.leader == 0 {
            errors.push(ApiError::NoLeader.to_string());
        }
        pb::StatusResponse {
            header: s.header(stats.revision),
            version: ETCD_VERSION.into(),
            db_size: db_size as i64,
            leader: st.leader,
            raft_index: st.commit,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors,
            db_size_in_use: db_size_in_use as i64,
            is_learner: st.is_learner,
        }
    }

    pub async fn alarm(&self, r: pb::AlarmRequest) -> Result<pb::AlarmResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        if r.action == pb::alarm_request::AlarmAction::Get as i32 {
            return Ok(pb::AlarmResponse {
                header: None,
                alarms: s.alarms.list(),
            });
        }
        match s
            .propose(InternalRaftRequest {
                alarm: Some(r),
                ..Default::default()
            })
            .await?
        {
            ApplyOutput::Alarm(a) => Ok(a),
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn defragment(&self) -> Result<pb::DefragmentResponse, ApiError> {
        self.0.not_learner()?;
        let store = self.0.store();
        let metrics = self.0.metrics.clone();
        tokio::task::spawn_blocking(move || {
            metrics.defrag_inflight.inc();
            let _t = metrics.defrag_seconds.time();
            let r = store.db().defrag(&DefragOptions::default());
            metrics.defrag_inflight.dec();
            r
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("etcdserver: {e}")))?;
        Ok(pb::DefragmentResponse { header: None })
    }

    /// A CRC-32C over every bucket's keys and values, in order.
    pub async fn hash(&self) -> Result<pb::HashResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        let store = s.store();
        let rev = store.current_revision();
        let metrics = s.metrics.clone();
        let hash = tokio::task::spawn_blocking(move || -> Result<u32, ApiError> {
            let _t = metrics.hash_seconds.time();
            store.flush()?;
            let rt = store.db().begin_read();
            let mut crc = 0u32;
            let names = rt
                .buckets()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            for name in names {
                crc = crc32c::crc32c_append(crc, &name);
                if let Some(b) = rt
                    .bucket(&name)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                {
                    for item in b.iter() {
                        let (k, v) = item.map_err(|e| ApiError::Internal(e.to_string()))?;
                        crc = crc32c::crc32c_append(crc, k);
                        crc = crc32c::crc32c_append(crc, v);
                    }
                }
            }
            Ok(crc)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(pb::HashResponse {
            header: s.header(rev),
            hash,
        })
    }

    pub fn hash_kv(&self, r: pb::HashKvRequest) -> Result<pb::HashKvResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        let h = {
            let _t = s.metrics.hash_rev_seconds.time();
            s.store().hash_kv(r.revision)?
        };
        Ok(pb::HashKvResponse {
            header: s.header(h.revision),
            hash: h.hash,
            compact_revision: h.compact_revision,
        })
    }

    /// The database as of now, 32 KiB at a time, then its SHA-256.
    pub fn snapshot(&self) -> mpsc::Receiver<Result<pb::SnapshotResponse, Status>> {
        let s = self.0.clone();
        let (tx, rx) = mpsc::channel(16);
        let store = s.store();
        tokio::spawn(async move {
            let fail = |e: String| Status::unknown(e);
            let flushed = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.flush()).await
            };
            if let Err(e) = flushed
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                let _ = tx.send(Err(fail(e))).await;
                return;
            }
            // From the read transaction's start to the last byte sent (or
            // the stream's end), as etcd times its backend snapshots.
            let _t = s.metrics.snapshot_seconds.time();
            let db = store.db().clone();
            let rt = db.begin_read();
            let total = rt.meta().hwm * db.page_size() as u64;
            let (ctx, mut crx) = mpsc::channel::<Vec<u8>>(16);
            let writer = tokio::task::spawn_blocking(move || -> Result<u64, String> {
                let mut w = ChunkWriter {
                    buf: Vec::with_capacity(CHUNK),
                    tx: ctx,
                };
                let n = rt.copy_to(&mut w).map_err(|e| e.to_string())?;
                w.flush().map_err(|e| e.to_string())?;
                Ok(n)
            });
            let header = s.header(store.current_revision());
            let mut sha = Sha256::new();
            let mut sent = 0u64;
            let mut first = true;
            while let Some(c) = crx.recv().await {
                sha.update(&c);
                sent += c.len() as u64;
                let r = pb::SnapshotResponse {
                    header: if first { header } else { None },
                    remaining_bytes: total.saturating_sub(sent),
                    blob: c,
                };
                first = false;
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
            match writer.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let _ = tx.send(Err(fail(e))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(fail(e.to_string()))).await;
                    return;
                }
            }
            let _ = tx
                .send(Ok(pb::SnapshotResponse {
                    header: None,
                    remaining_bytes: 0,
                    blob: sha.finalize().to_vec(),
                }))
                .await;
        });
        rx
    }

    pub async fn move_leader(
        &self,
        r: pb::MoveLeaderRequest,
    ) -> Result<pb::MoveLeaderResponse, ApiError> {
        let s = &self.0;
        s.node.transfer_leadership(r.target_id).await?;
        Ok(pb::MoveLeaderResponse {
            header: s.header(s.store().current_revision()),
        })
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        r: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(
            MaintenanceService::alarm(self, r.into_inner()).await?,
        ))
    }

    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(MaintenanceService::status(self)))
    }

    async fn defragment(
        &self,
        _r: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(MaintenanceService::defragment(self).await?))
    }

    async fn hash(
        &self,
        _r: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Ok(Response::new(MaintenanceService::hash(self).await?))
    }

    async fn hash_kv(
        &self,
        r: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Ok(Response::new(MaintenanceService::hash_kv(
            self,
            r.into_inner(),
        )?))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.0.not_learner()?;
        Ok(Response::new(Box::pin(ReceiverStream::new(
            MaintenanceService::snapshot(self),
        ))))
    }

    async fn move_leader(
        &self,
        r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Ok(Response::new(
            MaintenanceService::move_leader(self, r.into_inner()).await?,
        ))
    }
}
