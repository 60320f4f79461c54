//! What the client port answers: etcd's gRPC services and, beside them on
//! the same listener, the HTTP endpoints (gateway, /health, /metrics, …).
//!
//! A gRPC call to one of the served services goes straight to its tonic
//! server, chosen by the first segment of its path, with no router or
//! middleware in between: on the put path every layer costs CPU that the
//! server's own work does not. Everything else (HTTP, and gRPC services this
//! build does not serve) goes to the axum router, whose fallback answers
//! gRPC with `Unimplemented` and HTTP with 404, as before.
//!
//! Invariant: a failed call is answered in grpc-go's words (see
//! [`errors::grpc_go_words`]) whichever way it took.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use cairn_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use cairn_proto::grpc_health_v1::health_server::HealthServer;
use hyper::body::Incoming;
use tonic::codegen::Service;

use crate::errors;
use crate::grpc_metrics::{self, Call};
use crate::http;
use crate::server::EtcdServer;
use crate::services::{
    cluster::ClusterService, health::HealthService, kv::KvService, lease::LeaseService,
    maintenance::MaintenanceService, watch::WatchService,
};

struct Services {
    kv: KvServer<KvService>,
    watch: WatchServer<WatchService>,
    lease: LeaseServer<LeaseService>,
    cluster: ClusterServer<ClusterService>,
    maintenance: MaintenanceServer<MaintenanceService>,
    health: HealthServer<HealthService>,
    http: axum::Router,
}

/// The client port's service (cheap to clone: one per connection).
#[derive(Clone)]
pub struct ClientPort(Arc<Services>);

impl ClientPort {
    /// `gateway`: whether the JSON gateway (`/v3/...`) is served.
    pub fn new(srv: &Arc<EtcdServer>, gateway: bool) -> ClientPort {
        let limit = srv.limits.max_request_bytes + 512 * 1024;
        // Each service: requests up to `limit`, answers of any size.
        macro_rules! limited {
            ($server:ident, $service:ident) => {
                $server::new($service(srv.clone()))
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(usize::MAX)
            };
        }
        ClientPort(Arc::new(Services {
            kv: limited!(KvServer, KvService),
            watch: limited!(WatchServer, WatchService),
            lease: limited!(LeaseServer, LeaseService),
            cluster: limited!(ClusterServer, ClusterService),
            maintenance: limited!(MaintenanceServer, MaintenanceService),
            health: HealthServer::new(HealthService),
            http: http::client(srv.clone(), gateway).fallback(http::not_found),
        }))
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// Calls a tonic server and puts its answer in axum's body type, counted.
fn grpc<S, B>(mut svc: S, req: Request<B>, count: Call) -> Answer
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    let call = svc.call(req);
    Box::pin(async move {
        let mut r = call.await?;
        // A status in the headers is an error answered trailers-only (an OK
        // unary answer's comes in its trailers): look once, for both uses.
        let code = grpc_metrics::code_in(r.headers());
        if code.is_some() {
            errors::grpc_go_words(r.headers_mut());
        }
        Ok(count.answered(code, r))
    })
}

impl Service<Request<Incoming>> for ClientPort {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every service below is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Answer {
        let count = Call::start(req.uri().path());
        let req = req.map(|b| count.request(b));
        let s = &*self.0;
        let service = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        match service {
            Some("etcdserverpb.KV") => grpc(s.kv.clone(), req, count),
            Some("etcdserverpb.Watch") => grpc(s.watch.clone(), req, count),
            Some("etcdserverpb.Lease") => grpc(s.lease.clone(), req, count),
            Some("etcdserverpb.Cluster") => grpc(s.cluster.clone(), req, count),
            Some("etcdserverpb.Maintenance") => grpc(s.maintenance.clone(), req, count),
            Some("grpc.health.v1.Health") => grpc(s.health.clone(), req, count),
            _ => {
                let mut http = s.http.clone();
                let req = req.map(Body::new);
                Box::pin(async move {
                    let r = Service::<Request<Body>>::call(&mut http, req).await?;
                    Ok(count.answered(grpc_metrics::code_in(r.headers()), r))
                })
            }
        }
    }
}
