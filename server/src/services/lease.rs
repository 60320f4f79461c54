//! etcd's Lease service. Grants and revocations go through raft; keep-alives
//! and time-to-live are the leader's (a follower relays them to it).

use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    self as pb, InternalRaftRequest, lease_client::LeaseClient, lease_server::Lease,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::errors::ApiError;
use crate::lessor::MAX_TTL;
use crate::server::{EtcdServer, quota_cost};
use crate::state::ApplyOutput;

pub struct LeaseService(pub Arc<EtcdServer>);

impl LeaseService {
    pub async fn grant(
        &self,
        r: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, ApiError> {
        self.0.not_learner()?;
        let s = &self.0;
        if r.ttl > MAX_TTL {
            return Err(ApiError::LeaseTtlTooLarge);
        }
        let id = if r.id == 0 {
            (s.next_id() & ((1 << 63) - 1)) as i64
        } else {
            r.id
        };
        s.check_quota(quota_cost::LEASE_GRANT).await?;
        let req = InternalRaftRequest {
            lease_grant: Some(pb::LeaseGrantRequest { ttl: r.ttl, id }),
            ..Default::default()
        };
        match s.propose(req).await? {
            ApplyOutput::LeaseGrant(mut g) => {
                s.fill(&mut g.header);
                Ok(g)
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn revoke(
        &self,
        r: pb::LeaseRevokeRequest,
    ) -> Result<pb::LeaseRevokeResponse, ApiError> {
        self.0.not_learner()?;
        let s = &self.0;
        let req = InternalRaftRequest {
            lease_revoke: Some(r),
            ..Default::default()
        };
        match s.propose(req).await? {
            ApplyOutput::LeaseRevoke(mut g) => {
                s.fill(&mut g.header);
                Ok(g)
            }
            _ => Err(ApiError::Internal(
                "etcdserver: unexpected apply result".into(),
            )),
        }
    }

    pub async fn time_to_live(
        &self,
        r: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ApiError> {
        let s = &self.0;
        s.not_learner()?;
        let leader = if s.lessor.is_primary() {
            None
        } else {
            leader_client(s).await?
        };
        if let Some(mut c) = leader {
            return c
                .lease_time_to_live(r)
                .await
                .map(|x| x.into_inner())
                .map_err(|e| ApiError::Internal(e.message().to_string()));
        }
        let rev = s.store().current_revision();
        Ok(match s.lessor.info(r.id, r.keys) {
            Some(i) => pb::LeaseTimeToLiveResponse {
                header: s.header(rev),
                id: r.id,
                ttl: i.remaining,
                granted_ttl: i.granted,
                keys: i.keys,
            },
            None => pb::LeaseTimeToLiveResponse {
                header: s.header(rev),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })
    }

    pub fn leases(&self) -> pb::LeaseLeasesResponse {
        let s = &self.0;
        pb::LeaseLeasesResponse {
            header: s.header(s.store().current_revision()),
            leases: s
                .lessor
                .ids()
                .into_iter()
                .map(|id| pb::LeaseStatus { id })
                .collect(),
        }
    }

    /// A keep-alive answered here, on the leader.
    pub fn keep_alive_once(&self, id: i64) -> pb::LeaseKeepAliveResponse {
        let s = &self.0;
        let ttl = s.lessor.renew(id).unwrap_or(0);
        pb::LeaseKeepAliveResponse {
            header: s.header(s.store().current_revision()),
            id,
            ttl,
        }
    }
}

/// A client to the leader's client URL, or `None` if this member leads.
async fn leader_client(s: &EtcdServer) -> Result<Option<LeaseClient<Channel>>, ApiError> {
    Ok(s.leader_channel().await?.map(LeaseClient::new))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        r: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(self.grant(r.into_inner()).await?))
    }

    async fn lease_revoke(
        &self,
        r: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Ok(Response::new(self.revoke(r.into_inner()).await?))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        r: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.0.not_learner()?;
        let inbound = r.into_inner().map_while(Result::ok);
        let rx = keep_alive_session(self.0.clone(), Box::pin(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        r: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(self.time_to_live(r.into_inner()).await?))
    }

    async fn lease_leases(
        &self,
        _r: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.0.not_learner()?;
        Ok(Response::new(self.leases()))
    }
}

type Relay = (
    mpsc::Sender<pb::LeaseKeepAliveRequest>,
    Streaming<pb::LeaseKeepAliveResponse>,
);

/// Serves one keep-alive stream: on the leader each request renews its
/// lease; elsewhere it is relayed to the leader.
pub fn keep_alive_session(
    srv: Arc<EtcdServer>,
    mut inbound: impl Stream<Item = pb::LeaseKeepAliveRequest> + Send + Unpin + 'static,
) -> mpsc::Receiver<Result<pb::LeaseKeepAliveResponse, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let me = LeaseService(srv);
    tokio::spawn(async move {
        let mut relay: Option<Relay> = None;
        while let Some(req) = inbound.next().await {
            let reply = if me.0.lessor.is_primary() {
                Ok(me.keep_alive_once(req.id))
            } else {
                relay_once(&me.0, &mut relay, req).await
            };
            let stop = reply.is_err();
            if tx.send(reply).await.is_err() || stop {
                break;
            }
        }
    });
    rx
}

/// Sends one keep-alive to the leader over a stream kept for the client's
/// stream, and returns its answer.
async fn relay_once(
    s: &EtcdServer,
    relay: &mut Option<Relay>,
    req: pb::LeaseKeepAliveRequest,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    if relay.is_none() {
        let mut c = match leader_client(s).await? {
            Some(c) => c,
            None => return Err(ApiError::NoLeader.status()),
        };
        let (rtx, rrx) = mpsc::channel(16);
        let resp = c
            .lease_keep_alive(ReceiverStream::new(rrx))
            .await
            .map_err(|_| ApiError::NoLeader.status())?;
        *relay = Some((rtx, resp.into_inner()));
    }
    let (rtx, rin) = relay.as_mut().expect("just set");
    if rtx.send(req).await.is_err() {
        *relay = None;
        return Err(ApiError::NoLeader.status());
    }
    match rin.next().await {
        Some(Ok(r)) => Ok(r),
        _ => {
            *relay = None;
            Err(ApiError::NoLeader.status())
        }
    }
}
