//! gRPC's standard health service (`grpc.health.v1.Health`), as etcd 3.4
//! serves it on the client port: the server as a whole (service `""`) is
//! SERVING for as long as it answers at all, and no other service name is
//! known. (etcd 3.4 never changes that status; cluster health — a leader, no
//! alarm — is what `/health` reports.)

use std::pin::Pin;

use cairn_proto::grpc_health_v1::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The service names with a status, and that status.
fn status_of(service: &str) -> Option<ServingStatus> {
    service.is_empty().then_some(ServingStatus::Serving)
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

pub struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        r: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match status_of(&r.get_ref().service) {
            Some(s) => Ok(Response::new(answer(s))),
            // grpc-go's health server's words.
            None => Err(Status::not_found("unknown service")),
        }
    }

    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    /// The status now (SERVICE_UNKNOWN for an unknown name), then nothing:
    /// statuses never change, and the stream stays open until the caller
    /// ends it, as grpc-go's does.
    async fn watch(
        &self,
        r: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let now = status_of(&r.get_ref().service).unwrap_or(ServingStatus::ServiceUnknown);
        let stream = tokio_stream::once(Ok(answer(now))).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}
