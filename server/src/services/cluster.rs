//! etcd's Cluster service: membership through the raft node.

use std::sync::Arc;

use cairn_proto::etcdserverpb::{
    self as pb, cluster_client::ClusterClient, cluster_server::Cluster,
};
use cairn_raftnode::Member;
use tonic::{Request, Response, Status};

use crate::errors::ApiError;
use crate::server::EtcdServer;

pub struct ClusterService(pub Arc<EtcdServer>);

pub fn member(m: &Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.0.header(0)
    }

    fn members(ms: &[Member]) -> Vec<pb::Member> {
        ms.iter().map(member).collect()
    }

    pub async fn add(&self, r: pb::MemberAddRequest) -> Result<pb::MemberAddResponse, ApiError> {
        self.0.not_learner()?;
        let (m, all) = self.0.node.add_member(r.peer_urls, r.is_learner).await?;
        Ok(pb::MemberAddResponse {
            header: self.header(),
            member: Some(member(&m)),
            members: Self::members(&all),
        })
    }

    pub async fn remove(
        &self,
        r: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, ApiError> {
        self.0.not_learner()?;
        let all = self.0.node.remove_member(r.id).await?;
        Ok(pb::MemberRemoveResponse {
            header: self.header(),
            members: Self::members(&all),
        })
    }

    pub async fn update(
        &self,
        r: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ApiError> {
        self.0.not_learner()?;
        let all = self.0.node.update_member(r.id, r.peer_urls).await?;
        Ok(pb::MemberUpdateResponse {
            header: self.header(),
            members: Self::members(&all),
        })
    }

    pub fn list(&self) -> pb::MemberListResponse {
        pb::MemberListResponse {
            header: self.header(),
            members: Self::members(&self.0.node.members()),
        }
    }

    pub async fn promote(
        &self,
        r: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, ApiError> {
        self.0.not_learner()?;
        match self.0.node.promote_member(r.id).await {
            Ok(all) => Ok(pb::MemberPromoteResponse {
                header: self.header(),
                members: Self::members(&all),
            }),
            // Only the leader knows whether the learner has caught up: ask it.
            Err(cairn_raftnode::Error::NotLeader) => match self.0.leader_channel().await? {
                Some(ch) => ClusterClient::new(ch)
                    .member_promote(r)
                    .await
                    .map(|x| x.into_inner())
                    .map_err(|e| status_error(&e)),
                None => Err(ApiError::NotLeader),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// An error the leader answered, as ours.
fn status_error(s: &Status) -> ApiError {
    ApiError::from_status(s)
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Ok(Response::new(self.add(r.into_inner()).await?))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Ok(Response::new(self.remove(r.into_inner()).await?))
    }

    async fn member_update(
        &self,
        r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Ok(Response::new(self.update(r.into_inner()).await?))
    }

    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(self.list()))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Ok(Response::new(self.promote(r.into_inner()).await?))
    }
}
