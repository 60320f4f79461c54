//! The HTTP/2 transport under the load workloads' gRPC clients.
//!
//! A [`Conn`] is one HTTP/2 connection, driven by `h2` directly, as the
//! `tower::Service` that tonic's generated clients (`KvClient<Conn>`, ...)
//! send through. tonic's own `Channel` puts a `tower::buffer::Buffer` (a
//! channel, a oneshot and boxed futures per request) and hyper's client
//! dispatch (another channel, oneshots and a spawned task per request) in
//! front of the same `h2` connection; with a thousand clients that costs the
//! load generator as much CPU per request as the server it measures, on the
//! same cores. Here a client's request goes straight from its own task into
//! `h2`, and its answer comes back to the same task.
//!
//! What goes on the wire is what a tonic `Channel` sends: the same
//! connection settings (those hyper gives `h2`, with the window sizes
//! `conn.rs` asks for), the same `:scheme`/`:authority` (`http`, the
//! endpoint's `host:port`) and `user-agent`, the same DATA frames (the
//! message, then an empty one ending the stream).
//!
//! Reconnecting, as a `Channel` does: a connection made by [`Conn::dial`]
//! is watched by a task of its own, which dials again (backing off from
//! 50 ms to 1 s) whenever it ends — a server restarted, a GOAWAY — for as
//! long as any handle on it is alive. Requests in flight when it fails
//! fail; a request that finds it down waits for the next connection, up to
//! [`RECONNECT_WAIT`], and then fails (so a lasting outage costs each
//! client an error per wait rather than a spin of errors). The handles
//! take up the new connection by its number, without a lock per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body as _, Frame};
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::{self, HeaderValue, Uri, header::USER_AGENT, uri};

/// The `user-agent` a tonic `Channel` sends (tonic's version, as locked in
/// Cargo.lock; `the_requests_are_those_a_tonic_channel_sends` checks it).
const USER_AGENT_VALUE: &str = "tonic/0.14.9";

/// Connection settings: hyper's for `h2` (as a tonic `Channel` has them),
/// with the window sizes given.
pub fn builder(stream_window: u32, connection_window: u32) -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_max_send_streams(100)
        .initial_window_size(stream_window)
        .initial_connection_window_size(connection_window)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .max_local_error_reset_streams(Some(1024))
        .enable_push(false)
        .max_frame_size(16 << 10);
    b
}

/// How long a request waits for a lost connection to come back.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// A reconnecting connection's current `h2` handle, shared by its
/// [`Conn`]s and replaced by its watcher.
struct Current {
    /// Bumped on each new connection.
    number: AtomicU64,
    send: Mutex<SendRequest<Bytes>>,
    /// Woken when a new connection is in place.
    replaced: tokio::sync::Notify,
}

impl Current {
    fn replace(&self, send: SendRequest<Bytes>) {
        *self.send.lock().unwrap_or_else(PoisonError::into_inner) = send;
        self.number.fetch_add(1, Ordering::Release);
        self.replaced.notify_waiters();
    }

    /// Waits until a connection newer than number `seen` is in place, up
    /// to [`RECONNECT_WAIT`]; whether one is.
    async fn newer_than(&self, seen: u64) -> bool {
        let wait = async {
            loop {
                let replaced = self.replaced.notified();
                tokio::pin!(replaced);
                replaced.as_mut().enable();
                if self.number.load(Ordering::Acquire) != seen {
                    return;
                }
                replaced.await;
            }
        };
        tokio::time::timeout(RECONNECT_WAIT, wait).await.is_ok()
    }
}

/// A handle on one HTTP/2 connection; clones share it.
pub struct Conn {
    send: SendRequest<Bytes>,
    /// The endpoint's `host:port`, the requests' `:authority`.
    authority: uri::Authority,
    /// The connection's current `h2` handle.
    current: Arc<Current>,
    /// The number of the connection `send` is on.
    seen: u64,
    /// While the connection is down: the wait for the next one.
    waiting: Option<Pin<Box<dyn Future<Output = bool> + Send>>>,
}

impl Clone for Conn {
    fn clone(&self) -> Self {
        Conn {
            send: self.send.clone(),
            authority: self.authority.clone(),
            current: self.current.clone(),
            seen: self.seen,
            waiting: None,
        }
    }
}

/// Connects to `host_port` and handshakes.
async fn open(
    host_port: &str,
    settings: &h2::client::Builder,
) -> anyhow::Result<(
    SendRequest<Bytes>,
    h2::client::Connection<tokio::net::TcpStream, Bytes>,
)> {
    let tcp = tokio::net::TcpStream::connect(host_port).await?;
    tcp.set_nodelay(true)?;
    Ok(settings.handshake(tcp).await?)
}

impl Conn {
    /// Connects to `host_port` (`authority`) now, and keeps it connected:
    /// see the module's doc.
    pub async fn dial(
        host_port: String,
        authority: uri::Authority,
        settings: h2::client::Builder,
    ) -> anyhow::Result<Conn> {
        let (send, connection) = open(&host_port, &settings).await?;
        let current = Arc::new(Current {
            number: AtomicU64::new(0),
            send: Mutex::new(send.clone()),
            replaced: tokio::sync::Notify::new(),
        });
        tokio::spawn(watch(
            Arc::downgrade(&current),
            connection,
            host_port,
            settings,
        ));
        Ok(Conn {
            send,
            authority,
            current,
            seen: 0,
            waiting: None,
        })
    }

    /// Moves this handle onto the current connection if a newer one is in
    /// place.
    fn catch_up(&mut self) {
        let number = self.current.number.load(Ordering::Acquire);
        if number != self.seen {
            let send = self.current.send.lock();
            self.send = send.unwrap_or_else(PoisonError::into_inner).clone();
            self.seen = number;
        }
    }
}

/// Drives `connection`, and dials again whenever it ends, while a handle on
/// `current` is alive. (The handles hold the only strong references, so
/// once they are dropped the connection's last `SendRequest` goes with
/// them, the connection ends, and so does this.)
async fn watch(
    current: Weak<Current>,
    mut connection: h2::client::Connection<tokio::net::TcpStream, Bytes>,
    host_port: String,
    settings: h2::client::Builder,
) {
    loop {
        let _ = (&mut connection).await;
        let mut backoff = Duration::from_millis(50);
        loop {
            if current.strong_count() == 0 {
                return;
            }
            match open(&host_port, &settings).await {
                Ok((send, next)) => {
                    let Some(c) = current.upgrade() else { return };
                    c.replace(send);
                    connection = next;
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

impl tonic::codegen::Service<http::Request<Body>> for Conn {
    type Response = http::Response<ResponseBody>;
    type Error = h2::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            if let Some(w) = &mut self.waiting {
                let back = ready!(w.as_mut().poll(cx));
                self.waiting = None;
                self.catch_up();
                if !back {
                    return Poll::Ready(Err(Reason::REFUSED_STREAM.into()));
                }
            }
            self.catch_up();
            // Pending while this handle's last stream waits for the
            // server's concurrent stream limit.
            match self.send.poll_ready(cx) {
                Poll::Ready(Err(_)) => {
                    // The connection is down: wait for the next one.
                    let (current, seen) = (self.current.clone(), self.seen);
                    self.waiting = Some(Box::pin(async move { current.newer_than(seen).await }));
                }
                other => return other,
            }
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> ResponseFuture {
        let (mut head, body) = req.into_parts();
        // tonic's generated clients give a path only; a Channel adds the
        // origin.
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.scheme = Some(uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        head.uri = match Uri::from_parts(parts) {
            Ok(u) => u,
            Err(_) => return ResponseFuture::Failed(Some(Reason::INTERNAL_ERROR.into())),
        };
        head.headers
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let eos = body.is_end_stream();
        match self
            .send
            .send_request(http::Request::from_parts(head, ()), eos)
        {
            Ok((response, tx)) => ResponseFuture::Sent {
                response,
                body: (!eos).then_some(SendBody { body, tx }),
            },
            Err(e) => ResponseFuture::Failed(Some(e)),
        }
    }
}

/// A request's answer: its head, once the body is sent or sending.
pub enum ResponseFuture {
    Sent {
        response: h2::client::ResponseFuture,
        /// Until first polled: the request body, sent from the caller's task
        /// if it is all there (a unary request) or else from a task of its
        /// own (a stream).
        body: Option<SendBody>,
    },
    Failed(Option<h2::Error>),
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<ResponseBody>, h2::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ResponseFuture::Sent { response, body } => {
                if let Some(mut b) = body.take()
                    && Pin::new(&mut b).poll(cx).is_pending()
                {
                    tokio::spawn(b);
                }
                let r = ready!(Pin::new(response).poll(cx))?;
                Poll::Ready(Ok(r.map(|recv| ResponseBody {
                    recv,
                    data_done: false,
                })))
            }
            ResponseFuture::Failed(e) => Poll::Ready(Err(e
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

/// Sends a request body's frames as they come, as hyper does: each data
/// frame as DATA (ending the stream when the body says it ends), trailers as
/// trailers, else an empty DATA ending the stream. Stops early if the server
/// resets the stream.
pub struct SendBody {
    body: Body,
    tx: SendStream<Bytes>,
}

impl Future for SendBody {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        // Buffered by h2 until the flow control windows let
                        // it go: a load client has one message in flight.
                        let eos = this.body.is_end_stream();
                        if this.tx.send_data(data, eos).is_err() || eos {
                            return Poll::Ready(());
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = this.tx.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Poll::Ready(Some(Err(_))) => {
                    this.tx.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    let _ = this.tx.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    return match this.tx.poll_reset(cx) {
                        Poll::Ready(_) => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// A response body, as hyper reads one from `h2`: data (its flow control
/// capacity released as it is taken), then trailers; a reset with NO_ERROR
/// ends it early without failing it.
pub struct ResponseBody {
    recv: RecvStream,
    data_done: bool,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_end(e)),
                None => this.data_done = true,
            }
        }
        Poll::Ready(match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => trailers.map(|t| Ok(Frame::trailers(t))),
            Err(e) => early_end(e),
        })
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The end of a response body on `e`: none for a reset with NO_ERROR.
fn early_end(e: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    (e.reason() != Some(Reason::NO_ERROR)).then_some(Err(e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cairn_proto::etcdserverpb::{
        PutRequest, StatusRequest, kv_client::KvClient, maintenance_client::MaintenanceClient,
    };
    use tokio::sync::mpsc;
    use tonic::codegen::http::{HeaderMap, Method, Version};

    use super::super::conn;
    use super::*;

    /// A request as an HTTP/2 server sees it: head (pseudo-headers in the
    /// URI) and DATA frames.
    #[derive(Debug, PartialEq)]
    struct Seen {
        method: Method,
        uri: String,
        version: Version,
        headers: Vec<(String, Vec<u8>)>,
        data: Vec<Vec<u8>>,
    }

    /// An HTTP/2 server that records each request and answers it with an
    /// empty gRPC message and status OK (or `status` in the trailers).
    async fn server(status: &'static str) -> (String, mpsc::UnboundedReceiver<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut h2 = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((req, mut respond))) = h2.accept().await {
                        let (head, mut body) = req.into_parts();
                        let mut data = Vec::new();
                        while let Some(chunk) = body.data().await {
                            let chunk = chunk.unwrap();
                            let _ = body.flow_control().release_capacity(chunk.len());
                            data.push(chunk.to_vec());
                        }
                        // In order: hpack encodes them so.
                        let headers = head
                            .headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                            .collect();
                        let _ = tx.send(Seen {
                            method: head.method,
                            uri: head.uri.to_string(),
                            version: head.version,
                            headers,
                            data,
                        });
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(response, false).unwrap();
                        send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false)
                            .unwrap();
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static(status));
                        trailers.insert("grpc-message", HeaderValue::from_static("no"));
                        send.send_trailers(trailers).unwrap();
                    }
                });
            }
        });
        (addr, rx)
    }

    /// A tonic Channel as the load generator had them.
    async fn channel(addr: &str) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(16 << 20)
            .connect()
            .await
            .unwrap()
    }

    fn put() -> PutRequest {
        PutRequest {
            key: b"00000042".to_vec(),
            value: b"abcdefgh".to_vec(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_requests_are_those_a_tonic_channel_sends() {
        let (addr, mut seen) = server("0").await;
        KvClient::new(channel(&addr).await)
            .put(put())
            .await
            .unwrap();
        MaintenanceClient::new(channel(&addr).await)
            .status(StatusRequest {})
            .await
            .unwrap();
        let conn = conn::connect(&addr).await.unwrap();
        KvClient::new(conn.clone()).put(put()).await.unwrap();
        MaintenanceClient::new(conn)
            .status(StatusRequest {})
            .await
            .unwrap();
        let (tonic_put, tonic_status) = (seen.recv().await.unwrap(), seen.recv().await.unwrap());
        let (put, status) = (seen.recv().await.unwrap(), seen.recv().await.unwrap());
        assert_eq!(put, tonic_put);
        assert_eq!(status, tonic_status);
        assert_eq!(put.uri, format!("http://{addr}/etcdserverpb.KV/Put"));
        assert!(
            put.headers
                .contains(&("user-agent".into(), USER_AGENT_VALUE.into()))
        );
        // The message, then an empty frame ending the stream.
        assert_eq!(put.data.len(), 2);
        assert!(put.data[1].is_empty());
    }

    #[tokio::test]
    async fn a_failing_call_fails_as_through_a_tonic_channel() {
        let (addr, _seen) = server("14").await;
        let want = KvClient::new(channel(&addr).await)
            .put(put())
            .await
            .unwrap_err();
        let conn = conn::connect(&addr).await.unwrap();
        let got = KvClient::new(conn).put(put()).await.unwrap_err();
        assert_eq!((got.code(), got.message()), (want.code(), want.message()));
        assert_eq!(got.code(), tonic::Code::Unavailable);
    }
}
