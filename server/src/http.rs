//! HTTP on the client port: etcd's JSON gateway (`/v3/...`), `/health`,
//! `/version` and `/metrics`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::json;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::errors::ApiError;
use crate::server::EtcdServer;
use crate::services::cluster::ClusterService;
use crate::services::kv::KvService;
use crate::services::lease::{LeaseService, keep_alive_session};
use crate::services::maintenance::{CLUSTER_VERSION, ETCD_VERSION, MaintenanceService};
use crate::services::watch;

type Srv = Arc<EtcdServer>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// etcd's gateway error body, its fields in etcd's order.
fn error_response(code: tonic::Code, msg: &str) -> Response {
    let status = StatusCode::from_u16(ApiError::http_status(code))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let msg = serde_json::Value::from(msg);
    let body = format!(
        r#"{{"error":{msg},"message":{msg},"code":{}}}"#,
        code as i32
    );
    json_response(status, body.into_bytes())
}

/// The largest request the gRPC server takes: the gateway refuses larger
/// ones as etcd's does (its requests go through that server).
fn grpc_limit(s: &Srv) -> usize {
    s.limits.max_request_bytes + 512 * 1024
}

fn api_error(e: ApiError) -> Response {
    error_response(e.code(), &e.to_string())
}

/// A unary gateway call: JSON in, the service, JSON out; a request larger
/// than `limit` once encoded is refused with grpc-go's words.
async fn unary<Req, Resp, F, Fut>(limit: usize, body: Bytes, f: F) -> Response
where
    Req: DeserializeOwned + prost::Message,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>>,
{
    let req: Req = match json::from_json(if body.is_empty() { b"{}" } else { &body }) {
        Ok(r) => r,
        Err(e) => return error_response(tonic::Code::InvalidArgument, &e.to_string()),
    };
    let len = req.encoded_len();
    if len > limit {
        return error_response(
            tonic::Code::ResourceExhausted,
            &format!("grpc: received message larger than max ({len} vs. {limit})"),
        );
    }
    match f(req).await {
        Ok(resp) => match json::to_json_vec(&resp) {
            Ok(b) => json_response(StatusCode::OK, b),
            Err(e) => error_response(tonic::Code::Internal, &e.to_string()),
        },
        Err(e) => api_error(e),
    }
}

/// A streamed gateway answer: newline-separated `{"result":…}` objects, or
/// an `{"error":…}` object when the stream fails.
fn stream_response<T: Serialize + Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<Result<T, tonic::Status>>,
) -> Response {
    let lines = ReceiverStream::new(rx).map(|item| {
        let line = match item {
            Ok(m) => match json::to_json(&m) {
                Ok(j) => format!("{{\"result\":{j}}}\n"),
                Err(e) => format!("{{\"error\":{}}}\n", serde_json::json!({"message": e.to_string()})),
            },
            Err(s) => format!(
                "{{\"error\":{}}}\n",
                serde_json::json!({"grpc_code": s.code() as i32, "http_code": ApiError::http_status(s.code()), "message": s.message(), "http_status": ""})
            ),
        };
        Ok::<_, Infallible>(Bytes::from(line))
    });
    let mut r = Response::new(Body::from_stream(lines));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn gateway(srv: Srv) -> Router {
    let kv = |srv: &Srv| Arc::new(KvService(srv.clone()));
    let mut routes: Vec<(&str, MethodRouter<Srv>)> = Vec::new();
    macro_rules! unary_route {
        ($path:expr, $svc:expr, $method:ident) => {{
            let mk = $svc;
            routes.push((
                $path,
                post(move |State(s): State<Srv>, body: Bytes| {
                    let svc = mk(&s);
                    let limit = grpc_limit(&s);
                    async move { unary(limit, body, |r| async move { svc.$method(r).await }).await }
                }),
            ));
        }};
    }
    unary_route!("kv/range", kv, range);
    unary_route!("kv/put", kv, put);
    unary_route!("kv/deleterange", kv, delete_range);
    unary_route!("kv/txn", kv, txn);
    unary_route!("kv/compaction", kv, compact);
    let lease = |srv: &Srv| Arc::new(LeaseService(srv.clone()));
    unary_route!("lease/grant", lease, grant);
    unary_route!("lease/revoke", lease, revoke);
    unary_route!("kv/lease/revoke", lease, revoke);
    unary_route!("lease/timetolive", lease, time_to_live);
    unary_route!("kv/lease/timetolive", lease, time_to_live);
    let cluster = |srv: &Srv| Arc::new(ClusterService(srv.clone()));
    unary_route!("cluster/member/add", cluster, add);
    unary_route!("cluster/member/remove", cluster, remove);
    unary_route!("cluster/member/update", cluster, update);
    unary_route!("cluster/member/promote", cluster, promote);
    let maint = |srv: &Srv| Arc::new(MaintenanceService(srv.clone()));
    unary_route!("maintenance/alarm", maint, alarm);
    unary_route!("maintenance/transfer-leadership", maint, move_leader);
    // Methods whose request carries nothing.
    macro_rules! empty_route {
        ($path:expr, $req:ty, |$s:ident| $call:expr) => {{
            routes.push((
                $path,
                post(|State($s): State<Srv>, body: Bytes| async move {
                    let limit = grpc_limit(&$s);
                    unary(limit, body, |_: $req| async move { $call }).await
                }),
            ));
        }};
    }
    empty_route!("lease/leases", pb::LeaseLeasesRequest, |s| Ok(
        LeaseService(s).leases()
    ));
    empty_route!("kv/lease/leases", pb::LeaseLeasesRequest, |s| Ok(
        LeaseService(s).leases()
    ));
    empty_route!("cluster/member/list", pb::MemberListRequest, |s| Ok(
        ClusterService(s).list()
    ));
    empty_route!("maintenance/status", pb::StatusRequest, |s| Ok(
        MaintenanceService(s).status()
    ));
    empty_route!("maintenance/defragment", pb::DefragmentRequest, |s| {
        MaintenanceService(s).defragment().await
    });
    // Hash and HashKV share this path in 3.4; the first registered (Hash)
    // answers.
    empty_route!("maintenance/hash", pb::HashRequest, |s| MaintenanceService(
        s
    )
    .hash()
    .await);
    routes.push((
        "maintenance/snapshot",
        post(
            |State(s): State<Srv>| async move { stream_response(MaintenanceService(s).snapshot()) },
        ),
    ));
    routes.push((
        "watch",
        post(|State(s): State<Srv>, body: Bytes| async move {
            let reqs: Result<Vec<pb::WatchRequest>, _> = json::from_json_stream(&body).collect();
            match reqs {
                Ok(reqs) => {
                    // The requests, then a stream that never ends: the watch
                    // lasts as long as the client listens.
                    let inbound = tokio_stream::iter(reqs).chain(tokio_stream::pending());
                    stream_response(watch::session(s, Box::pin(inbound)))
                }
                Err(e) => error_response(tonic::Code::InvalidArgument, &e.to_string()),
            }
        }),
    ));
    routes.push((
        "lease/keepalive",
        post(|State(s): State<Srv>, body: Bytes| async move {
            let reqs: Result<Vec<pb::LeaseKeepAliveRequest>, _> =
                json::from_json_stream(&body).collect();
            match reqs {
                Ok(reqs) => {
                    stream_response(keep_alive_session(s, Box::pin(tokio_stream::iter(reqs))))
                }
                Err(e) => error_response(tonic::Code::InvalidArgument, &e.to_string()),
            }
        }),
    ));
    let mut router = Router::new();
    for (path, mr) in routes {
        router = router
            .route(&format!("/v3/{path}"), mr.clone())
            .route(&format!("/v3beta/{path}"), mr);
    }
    // Bodies are JSON with base64 bytes: several times the encoded request
    // may still be under the gRPC limit, checked once decoded.
    let body_limit = 4 * grpc_limit(&srv);
    router
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(srv)
}

#[derive(serde::Deserialize)]
struct HealthQuery {
    exclude: Option<String>,
    serializable: Option<String>,
}

/// etcd 3.4's `/health`: no alarm (but excluded ones), a leader, and a read
/// that succeeds within a second.
async fn health(State(s): State<Srv>, Query(q): Query<HealthQuery>) -> Response {
    let excluded: Vec<String> = q
        .exclude
        .map(|e| e.split(',').map(|x| x.trim().to_uppercase()).collect())
        .unwrap_or_default();
    let alarmed = s.alarms.list().iter().any(|a| {
        let name = pb::AlarmType::try_from(a.alarm)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN");
        !excluded.iter().any(|x| x == name)
    });
    let serializable = q.serializable.as_deref() == Some("true");
    let mut ok = !alarmed && s.node.status().leader != 0;
    if ok {
        let read = async {
            if !serializable {
                s.linearizable().await?;
            }
            s.store()
                .range(&cairn_engine::mvcc::RangeRequest::key("health"))?;
            Ok::<_, ApiError>(())
        };
        ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), read).await,
            Ok(Ok(()))
        );
    }
    if ok {
        s.metrics.health_success.inc();
        json_response(StatusCode::OK, br#"{"health":"true"}"#.to_vec())
    } else {
        s.metrics.health_failures.inc();
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"health":"false"}"#.to_vec(),
        )
    }
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{CLUSTER_VERSION}.0"}}"#)
            .into_bytes(),
    )
}

async fn metrics(State(s): State<Srv>) -> Response {
    let mut r = Response::new(Body::from(crate::metrics::render(&s)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// A path nothing serves: a gRPC call gets Unimplemented (as from any gRPC
/// server), anything else Go's `404 page not found`, as from etcd.
pub async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("").into_http();
    }
    let mut r = Response::new(Body::from("404 page not found\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Only GET: anything else is 405 with `Allow: GET`.
fn get_only(mr: MethodRouter<Srv>) -> MethodRouter<Srv> {
    mr.fallback(|| async {
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        r
    })
}

/// `/health`, `/version`, `/metrics` (all a metrics listener serves).
pub fn basic(srv: Srv) -> Router {
    Router::new()
        .route("/health", get_only(get(health)))
        .route("/version", get_only(get(version)))
        .route("/metrics", get_only(get(metrics)))
        .with_state(srv)
}

/// Everything HTTP on a client port.
pub fn client(srv: Srv, gateway_on: bool) -> Router {
    let mut r = basic(srv.clone());
    if gateway_on {
        r = r.merge(gateway(srv));
    }
    r.layer(axum::middleware::from_fn(cors))
}

/// etcd's default CORS answer, and `OPTIONS` answered with 200.
async fn cors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    r
}
