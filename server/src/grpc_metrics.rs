//! The gRPC server's call counters under etcd's names (those of the
//! go-grpc-prometheus interceptors etcd installs): `grpc_server_started_total`,
//! `grpc_server_handled_total` (by status code), `grpc_server_msg_received_total`
//! and `grpc_server_msg_sent_total`, each labelled with the method's service,
//! name and type, and each present from the start, at 0, for every method
//! etcd 3.4 registers them for (Auth's too, which answer Unimplemented here).
//!
//! How a call is counted, as etcd counts it:
//! * unary: started and one message received when it arrives; handled with
//!   the answer's code, and one message sent if that code is OK;
//! * streams: started when it arrives; each whole message read from the
//!   request body or written to the answer's counted as it passes; handled
//!   with the code in the trailers, or Canceled if the answer is dropped
//!   before them (the caller went away).
//!
//! Beside them, etcd's `etcd_network_client_grpc_received_bytes_total` and
//! `etcd_network_client_grpc_sent_bytes_total`: the sizes of the messages
//! (as encoded, without gRPC's 5-byte prefix) of every call, unary or
//! stream, read from each message's length prefix as it passes.
//!
//! Calls through the JSON gateway are not counted (etcd's gateway is a gRPC
//! client of its own server, so there they are).
//!
//! Cost: the counters are one process-wide table, so a call takes no
//! reference count; a unary call touches two counters (started, and
//! handled by code): its messages received equal its starts and its
//! messages sent equal its OK answers, so those two series are derived.

use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderName, Response};
use hyper::body::{Body, Bytes, Frame, SizeHint};

/// A method's shape, as go-grpc-prometheus names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Unary,
    ServerStream,
    BidiStream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStream => "server_stream",
            Kind::BidiStream => "bidi_stream",
        }
    }
}

use Kind::{BidiStream, ServerStream, Unary};

/// Every method etcd 3.4 pre-registers: (service, method, kind).
const METHODS: &[(&str, &str, Kind)] = &[
    ("etcdserverpb.KV", "Range", Unary),
    ("etcdserverpb.KV", "Put", Unary),
    ("etcdserverpb.KV", "DeleteRange", Unary),
    ("etcdserverpb.KV", "Txn", Unary),
    ("etcdserverpb.KV", "Compact", Unary),
    ("etcdserverpb.Watch", "Watch", BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Unary),
    ("etcdserverpb.Lease", "LeaseLeases", Unary),
    ("etcdserverpb.Cluster", "MemberAdd", Unary),
    ("etcdserverpb.Cluster", "MemberRemove", Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", Unary),
    ("etcdserverpb.Cluster", "MemberList", Unary),
    ("etcdserverpb.Cluster", "MemberPromote", Unary),
    ("etcdserverpb.Maintenance", "Alarm", Unary),
    ("etcdserverpb.Maintenance", "Status", Unary),
    ("etcdserverpb.Maintenance", "Defragment", Unary),
    ("etcdserverpb.Maintenance", "Hash", Unary),
    ("etcdserverpb.Maintenance", "HashKV", Unary),
    ("etcdserverpb.Maintenance", "Snapshot", ServerStream),
    ("etcdserverpb.Maintenance", "MoveLeader", Unary),
    ("etcdserverpb.Auth", "AuthEnable", Unary),
    ("etcdserverpb.Auth", "AuthDisable", Unary),
    ("etcdserverpb.Auth", "Authenticate", Unary),
    ("etcdserverpb.Auth", "UserAdd", Unary),
    ("etcdserverpb.Auth", "UserGet", Unary),
    ("etcdserverpb.Auth", "UserList", Unary),
    ("etcdserverpb.Auth", "UserDelete", Unary),
    ("etcdserverpb.Auth", "UserChangePassword", Unary),
    ("etcdserverpb.Auth", "UserGrantRole", Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", Unary),
    ("etcdserverpb.Auth", "RoleAdd", Unary),
    ("etcdserverpb.Auth", "RoleGet", Unary),
    ("etcdserverpb.Auth", "RoleList", Unary),
    ("etcdserverpb.Auth", "RoleDelete", Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", Unary),
    ("grpc.health.v1.Health", "Check", Unary),
    ("grpc.health.v1.Health", "Watch", ServerStream),
];

/// gRPC's status codes by number, in go-grpc-prometheus's spelling.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One method's counters.
#[derive(Debug)]
pub struct Method {
    kind: Kind,
    started: AtomicU64,
    /// Streams only (a unary call's equal its starts).
    received: AtomicU64,
    /// Streams only (a unary call's equal its OK answers).
    sent: AtomicU64,
    handled: [AtomicU64; 17],
    /// Message bytes received and sent (summed over methods when shown).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Method {
    fn handled(&self, code: usize) {
        let code = if code < CODES.len() { code } else { UNKNOWN };
        self.handled[code].fetch_add(1, Relaxed);
    }

    fn received(&self) -> u64 {
        match self.kind {
            Unary => self.started.load(Relaxed),
            _ => self.received.load(Relaxed),
        }
    }

    fn sent(&self) -> u64 {
        match self.kind {
            Unary => self.handled[0].load(Relaxed),
            _ => self.sent.load(Relaxed),
        }
    }
}

/// Every method's counters.
#[derive(Debug)]
pub struct GrpcMetrics {
    methods: Vec<Method>,
}

static GLOBAL: LazyLock<GrpcMetrics> = LazyLock::new(GrpcMetrics::new);

/// The process's counters (one server per process, as etcd's registry).
pub fn global() -> &'static GrpcMetrics {
    &GLOBAL
}

/// The status code an answer carries in `headers` (a trailers-only answer,
/// or the trailers themselves); `None` if none is there.
pub fn code_in(headers: &HeaderMap) -> Option<usize> {
    static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    let v = headers.get(&GRPC_STATUS)?;
    let n: usize = v.to_str().ok()?.parse().ok()?;
    Some(if n < CODES.len() { n } else { UNKNOWN })
}

impl GrpcMetrics {
    fn new() -> GrpcMetrics {
        GrpcMetrics {
            methods: METHODS
                .iter()
                .map(|&(_, _, kind)| Method {
                    kind,
                    started: AtomicU64::default(),
                    received: AtomicU64::default(),
                    sent: AtomicU64::default(),
                    handled: Default::default(),
                    bytes_in: AtomicU64::default(),
                    bytes_out: AtomicU64::default(),
                })
                .collect(),
        }
    }

    /// The counters of the method at `path` (`/<service>/<method>`), if it is
    /// one of etcd's.
    pub fn method(&self, path: &str) -> Option<&Method> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        METHODS
            .iter()
            .position(|&(s, m, _)| s == service && m == method)
            .map(|i| &self.methods[i])
    }

    /// Renders every series, in Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, get) in [
            (
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
                (|m| m.bytes_in.load(Relaxed)) as fn(&Method) -> u64,
            ),
            (
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
                |m| m.bytes_out.load(Relaxed),
            ),
        ] {
            let total: u64 = self.methods.iter().map(get).sum();
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {total}"
            );
        }
        let labels = |i: usize| {
            let (service, method, kind) = METHODS[i];
            format!(
                "grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{}\"",
                kind.label()
            )
        };
        let _ = writeln!(
            out,
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n# TYPE grpc_server_handled_total counter"
        );
        for (i, m) in self.methods.iter().enumerate() {
            for (code, name) in CODES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "grpc_server_handled_total{{grpc_code=\"{name}\",{}}} {}",
                    labels(i),
                    m.handled[code].load(Relaxed)
                );
            }
        }
        type Series = (&'static str, &'static str, fn(&Method) -> u64);
        let series: [Series; 3] = [
            (
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                |m| m.received(),
            ),
            (
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                |m| m.sent(),
            ),
            (
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                |m| m.started.load(Relaxed),
            ),
        ];
        for (name, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (i, m) in self.methods.iter().enumerate() {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(i), get(m));
            }
        }
    }
}

/// How one call is being counted.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// Not one of etcd's methods.
    Uncounted,
    Unary(&'static Method),
    Stream(&'static Method),
}

impl Call {
    /// Counts a call to `path` as it starts.
    pub fn start(path: &str) -> Call {
        match global().method(path) {
            None => Call::Uncounted,
            Some(m) => {
                m.started.fetch_add(1, Relaxed);
                if m.kind == Unary {
                    Call::Unary(m)
                } else {
                    Call::Stream(m)
                }
            }
        }
    }

    /// The call's request body, its bytes counted (and its messages, if
    /// the call is a stream).
    pub fn request<B>(self, body: B) -> Counted<B> {
        let (method, messages) = match self {
            Call::Uncounted => (None, false),
            Call::Unary(m) => (Some(m), false),
            Call::Stream(m) => (Some(m), true),
        };
        Counted {
            inner: body,
            method,
            way: Way::In,
            messages,
            framing: Framing::default(),
            handled: true,
        }
    }

    /// Counts the call's answer, whose headers carry status `code` if any
    /// (see [`code_in`]): a unary call's code now, a stream's as its body
    /// passes; the bytes (and a stream's messages) as its body passes.
    pub fn answered<B>(self, code: Option<usize>, r: Response<B>) -> Response<axum::body::Body>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (parts, body) = r.into_parts();
        let body = match self {
            Call::Uncounted => axum::body::Body::new(body),
            Call::Unary(m) => {
                m.handled(code.unwrap_or(0));
                axum::body::Body::new(Counted {
                    inner: body,
                    method: Some(m),
                    way: Way::Out,
                    messages: false,
                    framing: Framing::default(),
                    handled: true,
                })
            }
            Call::Stream(m) => {
                let handled = code.map(|code| m.handled(code));
                axum::body::Body::new(Counted {
                    inner: body,
                    method: Some(m),
                    way: Way::Out,
                    messages: true,
                    framing: Framing::default(),
                    handled: handled.is_some(),
                })
            }
        };
        Response::from_parts(parts, body)
    }
}

/// Counts whole gRPC messages (a 1-byte flag, a 4-byte big-endian length,
/// the message) in a byte stream cut anywhere.
#[derive(Debug, Default)]
struct Framing {
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    left: u64,
}

/// What one piece of a byte stream held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Fed {
    /// Messages it completed.
    messages: u64,
    /// The sizes of the messages whose prefix it completed.
    bytes: u64,
}

impl Framing {
    /// What `b` completed.
    fn feed(&mut self, mut b: &[u8]) -> Fed {
        let mut done = 0;
        let mut bytes = 0;
        while !b.is_empty() {
            if self.left > 0 {
                let k = (self.left.min(b.len() as u64)) as usize;
                self.left -= k as u64;
                b = &b[k..];
                if self.left == 0 {
                    done += 1;
                }
                continue;
            }
            let k = (5 - self.have).min(b.len());
            self.header[self.have..self.have + k].copy_from_slice(&b[..k]);
            self.have += k;
            b = &b[k..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes(self.header[1..5].try_into().expect("4 bytes"));
                bytes += u64::from(len);
                if len == 0 {
                    done += 1;
                } else {
                    self.left = u64::from(len);
                }
            }
        }
        Fed {
            messages: done,
            bytes,
        }
    }
}

/// Which way a counted body's messages go.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// A request: bytes (and a stream's messages) received.
    In,
    /// An answer: bytes (and a stream's messages) sent, and a stream's code
    /// in its trailers.
    Out,
}

/// A body whose gRPC messages are counted as they pass (and, for an
/// answer, whose status is). Passes everything through unchanged.
pub struct Counted<B> {
    inner: B,
    method: Option<&'static Method>,
    way: Way,
    /// Whether to count messages (streams only).
    messages: bool,
    framing: Framing,
    /// Whether the call's code has been counted (or is not this body's to
    /// count: requests, and unary answers).
    handled: bool,
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let (Way::Out, false, Some(m)) = (self.way, self.handled, &self.method) {
            m.handled(CANCELED);
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let (Some(Ok(f)), Some(m)) = (&frame, &this.method) {
            if let Some(data) = f.data_ref() {
                let fed = this.framing.feed(data);
                let (messages, bytes) = match this.way {
                    Way::In => (&m.received, &m.bytes_in),
                    Way::Out => (&m.sent, &m.bytes_out),
                };
                if fed.bytes > 0 {
                    bytes.fetch_add(fed.bytes, Relaxed);
                }
                if this.messages && fed.messages > 0 {
                    messages.fetch_add(fed.messages, Relaxed);
                }
            } else if let (Way::Out, false, Some(t)) = (this.way, this.handled, f.trailers_ref()) {
                m.handled(code_in(t).unwrap_or(UNKNOWN));
                this.handled = true;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&(len as u32).to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len));
        v
    }

    #[test]
    fn messages_are_counted_however_the_bytes_are_cut() {
        let mut all = Vec::new();
        for len in [3, 0, 100, 1, 0, 40] {
            all.extend(message(len));
        }
        for cut in 1..=all.len() {
            let mut f = Framing::default();
            let fed: Vec<Fed> = all.chunks(cut).map(|c| f.feed(c)).collect();
            let n: u64 = fed.iter().map(|f| f.messages).sum();
            let bytes: u64 = fed.iter().map(|f| f.bytes).sum();
            assert_eq!(n, 6, "chunks of {cut}");
            assert_eq!(bytes, 144, "chunks of {cut}");
            assert_eq!((f.have, f.left), (0, 0));
        }
        // A message counts only once its last byte has passed.
        let mut f = Framing::default();
        let m = message(10);
        assert_eq!(
            f.feed(&m[..14]),
            Fed {
                messages: 0,
                bytes: 10
            }
        );
        assert_eq!(
            f.feed(&m[14..]),
            Fed {
                messages: 1,
                bytes: 0
            }
        );
    }

    #[test]
    fn every_method_is_prefilled_and_found_by_path() {
        let g = GrpcMetrics::new();
        let mut out = String::new();
        g.render(&mut out);
        let n = METHODS.len();
        let count = |p: &str| out.lines().filter(|l| l.starts_with(p)).count();
        assert_eq!(count("grpc_server_handled_total{"), n * CODES.len());
        assert_eq!(count("grpc_server_started_total{"), n);
        assert!(out.contains(
            "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 0"
        ));
        assert!(g.method("/etcdserverpb.KV/Range").is_some());
        assert!(g.method("/grpc.health.v1.Health/Watch").is_some());
        assert!(g.method("/etcdserverpb.KV/Nope").is_none());
        assert!(g.method("/v3lockpb.Lock/Lock").is_none());
    }
}
