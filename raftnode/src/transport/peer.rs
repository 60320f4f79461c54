//! The outbound side of one peer: its bounded queue, its message stream (one
//! connection, reconnected with backoff), its health; and dialing, shared
//! with snapshot streams.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::frame::{Batch, Handshake, StreamKind, TransportError, kind, read_frame};
use super::{BoxStream, PeerHealth, Shared, hex};

/// How long one batch may take to write before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Unreachable reports for one peer are at least this far apart.
const REPORT_INTERVAL_MS: u64 = 100;

/// Lets an event through at most once per [`REPORT_INTERVAL_MS`].
#[derive(Default)]
pub struct RateLimit {
    /// Milliseconds since the transport's epoch, plus one; 0 = never.
    last: AtomicU64,
}

impl RateLimit {
    pub fn allow(&self, now_ms: u64) -> bool {
        let now = now_ms + 1;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            if last != 0 && now.saturating_sub(last) < REPORT_INTERVAL_MS {
                return false;
            }
            match self
                .last
                .compare_exchange_weak(last, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => last = seen,
            }
        }
    }
}

#[derive(Default)]
struct State {
    active_since: Option<SystemTime>,
    last_error: Option<String>,
}

/// A peer as the sending side keeps it.
pub struct Peer {
    pub id: u64,
    urls: watch::Sender<Vec<String>>,
    queue: mpsc::Sender<Message>,
    /// Whether the message stream is up: while it is not, messages are
    /// dropped on arrival rather than queued.
    connected: AtomicBool,
    state: Mutex<State>,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// Message-stream bytes written to the peer, frame headers included.
    sent_bytes: AtomicU64,
    /// Message-stream bytes read from the peer, frame headers included.
    received_bytes: AtomicU64,
    pub report: RateLimit,
}

/// What the writer task of a peer consumes.
pub struct WriterInput {
    pub queue: mpsc::Receiver<Message>,
    pub urls: watch::Receiver<Vec<String>>,
}

impl Peer {
    pub fn new(id: u64, urls: Vec<String>, queue_len: usize) -> (Arc<Peer>, WriterInput) {
        let (qtx, qrx) = mpsc::channel(queue_len.max(1));
        let (utx, urx) = watch::channel(urls);
        let peer = Arc::new(Peer {
            id,
            urls: utx,
            queue: qtx,
            connected: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            report: RateLimit::default(),
        });
        (
            peer,
            WriterInput {
                queue: qrx,
                urls: urx,
            },
        )
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn urls(&self) -> Vec<String> {
        self.urls.borrow().clone()
    }

    /// Replaces the URLs (the writer redials if its URL is gone).
    pub fn set_urls(&self, urls: Vec<String>) {
        self.urls.send_if_modified(|cur| {
            if *cur == urls {
                false
            } else {
                *cur = urls;
                true
            }
        });
    }

    /// Queues `msg` for the writer; false if it was dropped (stream down or
    /// queue full), in which case it has been counted.
    pub fn queue(&self, msg: Message) -> bool {
        if self.connected.load(Ordering::Acquire) && self.queue.try_send(msg).is_ok() {
            return true;
        }
        self.count_dropped(1);
        false
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a frame of `n` bytes read from the peer's message stream.
    pub fn count_received(&self, n: u64) {
        self.received_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn set_active(&self) {
        self.state().active_since = Some(SystemTime::now());
        self.connected.store(true, Ordering::Release);
    }

    fn set_inactive(&self, error: String) {
        self.connected.store(false, Ordering::Release);
        let mut s = self.state();
        s.active_since = None;
        s.last_error = Some(error);
    }

    pub fn health(&self) -> PeerHealth {
        let s = self.state();
        PeerHealth {
            id: self.id,
            urls: self.urls(),
            active_since: s.active_since,
            last_error: s.last_error.clone(),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Why a message stream ended.
enum End {
    Failed(TransportError),
    /// The URL it was connected to is no longer one of the peer's.
    UrlsChanged,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Failed(e) => e.fmt(f),
            End::UrlsChanged => f.write_str("peer urls changed"),
        }
    }
}

/// The writer task of a peer: dial, stream batches until the connection
/// fails, back off, dial again. Runs until aborted.
pub async fn run_writer(shared: Arc<Shared>, peer: Arc<Peer>, mut input: WriterInput) {
    let (min, max) = (
        shared.cfg.backoff_min,
        shared.cfg.backoff_max.max(shared.cfg.backoff_min),
    );
    let mut backoff = min;
    let mut preferred = 0;
    let mut failures = 0u32;
    loop {
        let urls = input.urls.borrow_and_update().clone();
        match dial(&shared, &urls, preferred, StreamKind::Messages, peer.id).await {
            Ok((stream, idx)) => {
                preferred = idx;
                backoff = min;
                failures = 0;
                discard_queued(&peer, &mut input.queue);
                peer.set_active();
                info!(peer = %hex(peer.id), url = %urls[idx], "peer became active");
                let end = stream_messages(&shared, &peer, &mut input, &urls[idx], stream).await;
                peer.set_inactive(end.to_string());
                warn!(peer = %hex(peer.id), error = %end, "peer became inactive");
                discard_queued(&peer, &mut input.queue);
                shared.report_unreachable(peer.id, &peer.report);
                if matches!(end, End::UrlsChanged) {
                    continue;
                }
            }
            Err(e) => {
                shared.report_refused(peer.id, &e);
                let text = e.to_string();
                if failures == 0 {
                    warn!(peer = %hex(peer.id), error = %text, "cannot reach peer");
                } else {
                    debug!(peer = %hex(peer.id), error = %text, failures, "cannot reach peer");
                }
                failures = failures.saturating_add(1);
                peer.set_inactive(text);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(max),
            changed = input.urls.changed() => {
                if changed.is_err() {
                    return;
                }
                backoff = min;
            }
        }
    }
}

/// Drops whatever is queued (it was queued for a connection that is gone).
fn discard_queued(peer: &Peer, queue: &mut mpsc::Receiver<Message>) {
    let mut n = 0;
    while queue.try_recv().is_ok() {
        n += 1;
    }
    if n > 0 {
        peer.count_dropped(n);
    }
}

/// Sends batches over one established stream until it fails.
async fn stream_messages(
    shared: &Arc<Shared>,
    peer: &Peer,
    input: &mut WriterInput,
    url: &str,
    stream: BoxStream,
) -> End {
    let max = shared.cfg.max_frame_bytes;
    let (mut rd, mut wr) = tokio::io::split(stream);
    // The receiver only ever writes an error frame before closing; watching
    // the read side notices a closed or refusing peer without a write.
    let watch = async move { watch_inbound(&mut rd, max).await };
    tokio::pin!(watch);
    let mut batch = Batch::new(max);
    let mut pending: Option<Message> = None;
    loop {
        let mut next = match pending.take() {
            Some(m) => m,
            None => tokio::select! {
                biased;
                e = &mut watch => return End::Failed(e),
                changed = input.urls.changed() => {
                    if changed.is_err() || !input.urls.borrow_and_update().iter().any(|u| u == url) {
                        return End::UrlsChanged;
                    }
                    continue;
                }
                m = input.queue.recv() => match m {
                    Some(m) => m,
                    None => return End::Failed(TransportError::Stopped),
                },
            },
        };
        // Drain everything queued into one frame, up to the size limit.
        batch.reset();
        let mut unsendable = 0u64;
        loop {
            let size = next.compute_size() as usize;
            if !batch.fits_alone(size) {
                warn!(peer = %hex(peer.id), size, max, msg_type = ?next.get_msg_type(),
                    "message larger than the frame limit dropped");
                unsendable += 1;
            } else if !batch.fits(size) {
                pending = Some(next);
                break;
            } else if let Err(e) = batch.push(&next, size) {
                warn!(peer = %hex(peer.id), error = %e, "message could not be encoded");
                unsendable += 1;
            }
            match input.queue.try_recv() {
                Ok(m) => next = m,
                Err(_) => break,
            }
        }
        if unsendable > 0 {
            peer.count_dropped(unsendable);
            shared.report_unreachable(peer.id, &peer.report);
        }
        let n = u64::from(batch.count());
        if n == 0 {
            continue;
        }
        let frame = batch.finish();
        let bytes = frame.len() as u64;
        let written = timeout(WRITE_TIMEOUT, async {
            wr.write_all(frame).await?;
            wr.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                peer.sent.fetch_add(n, Ordering::Relaxed);
                peer.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                peer.count_dropped(n);
                return End::Failed(e.into());
            }
            Err(_) => {
                peer.count_dropped(n);
                return End::Failed(TransportError::Timeout("writing to the peer"));
            }
        }
    }
}

/// Waits for the read side of a message stream to say something: an error
/// frame's reason, or how it broke.
async fn watch_inbound<R: AsyncRead + Unpin>(rd: &mut R, max: usize) -> TransportError {
    match read_frame(rd, max).await {
        Ok(f) if f.kind == kind::ERROR => {
            TransportError::Refused(String::from_utf8_lossy(&f.payload).into_owned())
        }
        Ok(f) => TransportError::UnexpectedKind(f.kind),
        Err(e) => e,
    }
}

/// Connects to the first of `urls` (starting at `start`) that accepts a
/// `kind` stream to member `to`. A refusal is the member's answer and ends
/// the attempt; other failures move on to the next URL.
pub async fn dial(
    shared: &Shared,
    urls: &[String],
    start: usize,
    kind: StreamKind,
    to: u64,
) -> Result<(BoxStream, usize), TransportError> {
    let mut errors = Vec::new();
    for i in 0..urls.len() {
        let idx = (start + i) % urls.len();
        let url = &urls[idx];
        let res = match host_port(url) {
            Some(addr) => {
                match timeout(shared.cfg.dial_timeout, connect(shared, addr, kind, to)).await {
                    Ok(r) => r,
                    Err(_) => Err(TransportError::Timeout("connecting")),
                }
            }
            None => Err(TransportError::BadUrl(url.clone())),
        };
        match res {
            Ok(s) => return Ok((s, idx)),
            Err(e) => {
                let refused = e.is_refusal();
                let e = TransportError::At {
                    url: url.clone(),
                    source: Box::new(e),
                };
                if refused {
                    return Err(e);
                }
                errors.push(e);
            }
        }
    }
    match errors.len() {
        0 => Err(TransportError::NoUrls),
        1 => Err(errors.remove(0)),
        _ => Err(TransportError::AllFailed(errors)),
    }
}

/// Opens a connection and does the handshake.
async fn connect(
    shared: &Shared,
    addr: &str,
    kind: StreamKind,
    to: u64,
) -> Result<BoxStream, TransportError> {
    let mut s = shared.connector.connect(addr).await?;
    let hs = Handshake {
        kind,
        cluster_id: shared.cfg.cluster_id,
        from: shared.cfg.member_id,
        to,
    };
    s.write_all(&hs.encode()).await?;
    s.flush().await?;
    let reply = read_frame(&mut s, shared.cfg.max_frame_bytes).await?;
    match reply.kind {
        kind::ACCEPT => Ok(s),
        kind::ERROR => Err(TransportError::Refused(
            String::from_utf8_lossy(&reply.payload).into_owned(),
        )),
        k => Err(TransportError::UnexpectedKind(k)),
    }
}

/// `host:port` of a peer URL (`http://10.0.0.1:2380`, `https://[::1]:2380/`).
pub fn host_port(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    if host.starts_with('[') != host.ends_with(']') {
        return None;
    }
    Some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_give_host_and_port() {
        assert_eq!(host_port("http://127.0.0.1:2380"), Some("127.0.0.1:2380"));
        assert_eq!(
            host_port("https://node-1.example:2380/"),
            Some("node-1.example:2380")
        );
        assert_eq!(host_port("http://[::1]:2380"), Some("[::1]:2380"));
        assert_eq!(host_port("10.0.0.1:7001"), Some("10.0.0.1:7001"));
        assert_eq!(host_port("http://127.0.0.1"), None);
        assert_eq!(host_port("http://[::1]"), None);
        assert_eq!(host_port("http://:2380"), None);
    }

    #[test]
    fn reports_are_rate_limited() {
        let r = RateLimit::default();
        assert!(r.allow(0));
        assert!(!r.allow(50));
        assert!(!r.allow(99));
        assert!(r.allow(100));
        assert!(!r.allow(150));
        assert!(r.allow(1000));
    }
}
