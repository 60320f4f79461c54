//! The peer transport: raft messages and snapshots between members over TCP.
//!
//! INTERFACE FIXED BY THE RAFT NODE (node.rs uses exactly these names); the
//! implementation behind it is free.
//!
//! ## Shape
//!
//! * One outbound **message stream** per peer (`peer.rs`): a bounded queue
//!   (`queue_len`) drained by a writer task that packs everything queued, up
//!   to `max_frame_bytes`, into one batch frame per write. [`Transport::send`]
//!   never blocks: an unknown peer, a stream that is down or a full queue drops
//!   the message, counts it and reports the peer unreachable (at most once per
//!   100 ms per peer; raft resends). The stream is redialled with backoff
//!   (`backoff_min` doubling to `backoff_max`, reset on success), each attempt
//!   trying the peer's URLs in turn from the last one that worked.
//! * Each **snapshot** on a connection of its own (`snapshot.rs`), so it never
//!   holds up messages: the data is read and zstd-compressed on a blocking
//!   thread, streamed in chunks, written by the receiver into
//!   `<from>-<term>-<index>-<random>.snap.part` (numbers in hex) in
//!   `snapshot_dir`, verified, fsynced, renamed to `.snap`, acknowledged, and
//!   handed to [`Handler::on_snapshot`]. A stream that breaks anywhere before
//!   its verified end leaves no file and never reaches the handler; part files
//!   a crash left behind are removed when the transport starts.
//! * **Listeners** (`listener.rs`) check every handshake (cluster id, receiver
//!   id, [`Handler::accept_from`]) and answer a refusal with an error frame
//!   carrying the reason. A newer message stream from a member replaces an
//!   older one (a restarted member's old connection may linger half-open).
//! * Everything runs as tasks on the given runtime, registered by what they
//!   serve (`tasks.rs`): [`Transport::remove_peer`] aborts that peer's,
//!   [`Transport::shutdown`] (or dropping the last clone) aborts all.
//! * Connections are opened and accepted through [`Connector`] and
//!   [`Acceptor`]: [`PlainTcp`] now, TLS later without touching the protocol.
//!
//! ## Invariants
//!
//! * `send` never blocks, and never queues for a stream that is down.
//! * Nothing longer than `max_frame_bytes` is allocated for a frame or sent
//!   as one (both sides must be configured alike).
//! * Batches of one inbound stream reach [`Handler::on_messages`] in the order
//!   they were sent, and every message in them is from the stream's sender
//!   (per its handshake) to this member.
//! * [`Handler::on_snapshot`] only ever sees a file whose length and crc32c
//!   matched the sender's end marker, fsynced and renamed into place.
//! * Once [`Transport::shutdown`] has run, the handler is no longer called
//!   (a call already under way on another thread finishes).
//!
//! ## Wire format (version 1)
//!
//! All integers big-endian. A connection starts with the connecting member's
//! handshake (36 bytes):
//!
//! ```text
//!  0        4         6      7      8             16            24            32        36
//!  +--------+---------+------+------+-------------+-------------+-------------+---------+
//!  | "CRNT" | version | kind | 0    | cluster id  | sender id   | receiver id | crc32c  |
//!  | magic  | u16 = 1 | u8   | u8   | u64         | u64         | u64         | of 0..32|
//!  +--------+---------+------+------+-------------+-------------+-------------+---------+
//!  kind: 1 message stream, 2 snapshot stream
//! ```
//!
//! Everything after it, both ways, is frames:
//!
//! ```text
//!  0          4      5          9
//!  +----------+------+----------+-------------------+
//!  | len u32  | kind | crc32c   | payload (len)     |
//!  +----------+------+----------+-------------------+
//!  crc32c covers the kind byte and the payload
//! ```
//!
//! A frame whose `len` exceeds `max_frame_bytes` is refused before anything is
//! allocated for it: the reader answers with an error frame and closes.
//!
//! | kind | name | direction | payload |
//! |---|---|---|---|
//! | 0x01 | ACCEPT | receiver → sender | empty: handshake accepted |
//! | 0x02 | ERROR | either | UTF-8 reason; its writer closes the connection |
//! | 0x10 | BATCH | sender → receiver | a batch of raft messages |
//! | 0x20 | SNAP_MSG | sender → receiver | the MsgSnapshot `eraftpb.Message` (protobuf) |
//! | 0x21 | SNAP_CHUNK | sender → receiver | raw len u32 (≤ 1 MiB) + one zstd frame of it |
//! | 0x22 | SNAP_END | sender → receiver | total raw len u64 + crc32c u32 of all raw bytes |
//! | 0x23 | SNAP_ACK | receiver → sender | status u8 (0 ok, 1 failed) + UTF-8 text |
//!
//! The receiver of the handshake answers ACCEPT or ERROR (cluster id mismatch,
//! wrong receiver, a member [`Handler::accept_from`] refuses, bad version or
//! checksum); a connection without the magic is closed without a word.
//!
//! A message stream is then BATCH frames, one way, for as long as it lives;
//! each decoded batch is one [`Handler::on_messages`] call, so order per
//! sender is kept. Every message must be from the stream's sender to its
//! receiver, or the stream is refused with an error frame.
//!
//! ```text
//!  BATCH payload
//!  +-----------+----------+--------------+----------+--------------+--
//!  | count u32 | len u32  | Message      | len u32  | Message      | ...
//!  |           |          | (protobuf)   |          | (protobuf)   |
//!  +-----------+----------+--------------+----------+--------------+--
//! ```
//!
//! A snapshot stream carries one snapshot:
//!
//! ```text
//!  sender                                              receiver
//!  handshake (kind 2)                        ──▶
//!                                            ◀──       ACCEPT | ERROR
//!  SNAP_MSG  [ Message (MsgSnapshot) ]       ──▶       creates <..>.snap.part
//!  SNAP_CHUNK[ raw len u32 | zstd frame ]    ──▶       decompresses, appends
//!  SNAP_CHUNK ...                            ──▶
//!  SNAP_END  [ total u64 | crc32c u32 ]      ──▶       checks both, fsync,
//!                                                      rename to <..>.snap
//!                                            ◀──       SNAP_ACK [ 0 ] or [ 1 | reason ]
//!                                                      then Handler::on_snapshot
//! ```
//!
//! Each chunk is an independent zstd frame of at most 1 MiB of raw data (less
//! when `max_frame_bytes` needs it), so the receiver never holds more than one
//! chunk. A sender whose source fails sends ERROR instead of the rest and
//! waits briefly for the receiver's failed SNAP_ACK, which comes once the
//! part file is gone. Any error, a timeout (30 s per frame, 120 s for the
//! ack) or a closed connection before a verified SNAP_END removes the part
//! file and reports `on_snapshot_sent(peer, false)` on the sender.

mod frame;
mod listener;
mod peer;
mod snapshot;
mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use raft::eraftpb::{Message, MessageType};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

pub use frame::TransportError;

use peer::{Peer, RateLimit};
use tasks::{Tag, Tasks};

/// A byte stream to or from a peer: plain TCP now, TLS later.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerStream for T {}

pub type BoxStream = Box<dyn PeerStream>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens connections to peers (`addr` is `host:port` from a peer URL).
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>>;
}

/// Wraps accepted connections (a TLS acceptor later).
pub trait Acceptor: Send + Sync + 'static {
    fn accept(&self, stream: tokio::net::TcpStream) -> BoxFuture<'static, io::Result<BoxStream>>;
}

/// Plain TCP, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl Connector for PlainTcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxStream)
        })
    }
}

impl Acceptor for PlainTcp {
    fn accept(&self, stream: tokio::net::TcpStream) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(async move { Ok(Box::new(stream) as BoxStream) })
    }
}

/// What the transport needs to know.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Where received snapshots are written (one file each).
    pub snapshot_dir: PathBuf,
    /// Largest frame accepted or sent (a batch of messages); a single
    /// message larger than this is dropped and reported unreachable.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_len: usize,
    pub dial_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// zstd level for snapshot streams.
    pub zstd_level: i32,
}

impl TransportConfig {
    /// The defaults: 16 MiB frames (raft messages carry up to about 1 MiB of
    /// entries, a single entry up to the request limit), 4096 queued messages
    /// per peer (etcd's stream buffer), 1 s to connect, reconnects from
    /// 100 ms backing off to 2 s, zstd level 3.
    pub fn new(cluster_id: u64, member_id: u64, snapshot_dir: impl Into<PathBuf>) -> Self {
        TransportConfig {
            cluster_id,
            member_id,
            snapshot_dir: snapshot_dir.into(),
            max_frame_bytes: 16 << 20,
            queue_len: 4096,
            dial_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            zstd_level: 3,
        }
    }
}

/// Callbacks from the transport into the raft node. Called from the
/// transport's tasks: implementations must not block for long.
pub trait Handler: Send + Sync + 'static {
    /// Raft messages received from peers, in the order each peer sent them.
    fn on_messages(&self, msgs: Vec<Message>);
    /// A snapshot message whose state-machine data was received in full into
    /// `file` (checksum verified). The node steps `msg` and owns the file.
    fn on_snapshot(&self, msg: Message, file: PathBuf);
    /// Messages to `peer` could not be delivered (raft's report_unreachable).
    fn on_unreachable(&self, peer: u64);
    /// A snapshot sent to `peer` finished (`ok`) or failed.
    fn on_snapshot_sent(&self, peer: u64, ok: bool);
    /// Whether to accept a connection from `peer` (removed members are
    /// refused with the reason).
    fn accept_from(&self, peer: u64) -> Result<(), String>;
    /// `peer` refused this member's connection with `reason` (for instance
    /// because this member was removed from the cluster). Called from the
    /// transport's tasks, at most once per failed dial.
    fn on_refused(&self, _peer: u64, _reason: &str) {}
    /// What this member tells a member joining the cluster besides the
    /// cluster id (the raft node sends its membership).
    fn info(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// A peer as the transport sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    pub id: u64,
    pub urls: Vec<String>,
    /// Since when the outbound stream has been connected, if it is.
    pub active_since: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Messages sent, and those dropped (queue full, stream down, a failed
    /// write: raft resends what matters).
    pub sent: u64,
    pub dropped: u64,
    /// Bytes of the message streams each way, frame headers included
    /// (snapshots, which travel apart, are not in them).
    pub sent_bytes: u64,
    pub received_bytes: u64,
}

/// The running transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// The user-facing handle: dropping the last clone shuts the transport down.
/// (The tasks hold [`Shared`], not this.)
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// What the transport's tasks share.
pub(crate) struct Shared {
    cfg: TransportConfig,
    handler: Arc<dyn Handler>,
    connector: Arc<dyn Connector>,
    acceptor: Arc<dyn Acceptor>,
    rt: tokio::runtime::Handle,
    peers: RwLock<HashMap<u64, Arc<Peer>>>,
    tasks: Tasks,
    stopped: AtomicBool,
    epoch: Instant,
    /// Report rate limits for messages to peers the transport does not know.
    unknown: Mutex<HashMap<u64, Arc<RateLimit>>>,
}

/// An id as etcd prints it, for logs and reasons.
fn hex(id: u64) -> String {
    crate::ids::format_id(id)
}

impl Shared {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    fn peer(&self, id: u64) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Tells the handler `peer` is unreachable, unless told within the last
    /// 100 ms. Off the caller's thread: `send` is called by the raft node,
    /// which must not be re-entered.
    fn report_unreachable(self: &Arc<Self>, peer: u64, limit: &RateLimit) {
        if self.is_stopped() || !limit.allow(self.epoch.elapsed().as_millis() as u64) {
            return;
        }
        let s = self.clone();
        self.rt.spawn(async move {
            if !s.is_stopped() {
                s.handler.on_unreachable(peer);
            }
        });
    }

    fn report_unknown(self: &Arc<Self>, peer: u64) {
        let limit = self
            .unknown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(peer)
            .or_default()
            .clone();
        self.report_unreachable(peer, &limit);
    }

    /// [`Handler::on_refused`] with the peer's own words.
    fn report_refused(&self, peer: u64, e: &TransportError) {
        if self.is_stopped() {
            return;
        }
        if let Some(reason) = e.refusal_reason() {
            self.handler.on_refused(peer, reason);
        }
    }

    /// [`Handler::on_snapshot_sent`], off the caller's thread.
    fn report_snapshot_sent(self: &Arc<Self>, peer: u64, ok: bool) {
        let s = self.clone();
        self.rt.spawn(async move {
            if !s.is_stopped() {
                s.handler.on_snapshot_sent(peer, ok);
            }
        });
    }

    fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.tasks.close();
        self.peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        info!(member = %hex(self.cfg.member_id), "transport stopped");
    }
}

impl Transport {
    /// Starts serving `listeners` (already bound) and sending to peers added
    /// with [`Transport::set_peer`], on the runtime `rt`.
    pub fn start(
        cfg: TransportConfig,
        listeners: Vec<std::net::TcpListener>,
        handler: Arc<dyn Handler>,
        connector: Arc<dyn Connector>,
        acceptor: Arc<dyn Acceptor>,
        rt: tokio::runtime::Handle,
    ) -> io::Result<Transport> {
        std::fs::create_dir_all(&cfg.snapshot_dir)?;
        snapshot::remove_stale_parts(&cfg.snapshot_dir)?;
        let listeners = {
            let _rt = rt.enter();
            listeners
                .into_iter()
                .map(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .collect::<io::Result<Vec<_>>>()?
        };
        let shared = Arc::new(Shared {
            cfg,
            handler,
            connector,
            acceptor,
            rt,
            peers: RwLock::new(HashMap::new()),
            tasks: Tasks::default(),
            stopped: AtomicBool::new(false),
            epoch: Instant::now(),
            unknown: Mutex::new(HashMap::new()),
        });
        for l in listeners {
            let s = shared.clone();
            tasks::spawn(&shared, Tag::Listener, move |_| listener::serve(s, l));
        }
        info!(member = %hex(shared.cfg.member_id), cluster = %hex(shared.cfg.cluster_id),
            "transport started");
        Ok(Transport {
            inner: Arc::new(Inner { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Adds a peer or changes its URLs (`http://host:port`).
    pub fn set_peer(&self, id: u64, urls: Vec<String>) {
        let shared = self.shared();
        if shared.is_stopped() {
            return;
        }
        if id == shared.cfg.member_id {
            warn!(peer = %hex(id), "not adding this member as its own peer");
            return;
        }
        let mut peers = shared.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = peers.get(&id) {
            debug!(peer = %hex(id), ?urls, "peer urls set");
            p.set_urls(urls);
            return;
        }
        info!(peer = %hex(id), ?urls, "peer added");
        let (peer, input) = Peer::new(id, urls, shared.cfg.queue_len);
        let (s, p) = (shared.clone(), peer.clone());
        if tasks::spawn(shared, Tag::Writer(id), move |_| {
            peer::run_writer(s, p, input)
        }) {
            peers.insert(id, peer);
        }
    }

    pub fn remove_peer(&self, id: u64) {
        let shared = self.shared();
        let removed = shared
            .peers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        // Its writer, its snapshots in flight, and its streams to us.
        shared.tasks.abort_where(|_, t| t.concerns(id));
        if removed.is_some() {
            info!(peer = %hex(id), "peer removed");
        }
    }

    /// Queues messages for their peers (by `msg.to`); never blocks. Unknown
    /// peers and full queues drop (and report unreachable). Not for
    /// MsgSnapshot.
    pub fn send(&self, msgs: Vec<Message>) {
        let shared = self.shared();
        if shared.is_stopped() {
            return;
        }
        let peers = shared.peers.read().unwrap_or_else(PoisonError::into_inner);
        for msg in msgs {
            let to = msg.to;
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                warn!(peer = %hex(to), "MsgSnapshot given to send, not send_snapshot: dropped");
                shared.report_snapshot_sent(to, false);
                continue;
            }
            match peers.get(&to) {
                Some(p) => {
                    if !p.queue(msg) {
                        shared.report_unreachable(to, &p.report);
                    }
                }
                None => {
                    debug!(peer = %hex(to), "message to an unknown peer dropped");
                    shared.report_unknown(to);
                }
            }
        }
    }

    /// Streams a snapshot to `msg.to`: the message, then `data` compressed
    /// with zstd in chunks; reports the outcome through
    /// [`Handler::on_snapshot_sent`].
    pub fn send_snapshot(&self, msg: Message, data: Box<dyn std::io::Read + Send>) {
        let shared = self.shared();
        if shared.is_stopped() {
            return;
        }
        snapshot::send(shared, msg, data);
    }

    pub fn peers(&self) -> Vec<PeerHealth> {
        let mut v: Vec<PeerHealth> = self
            .shared()
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|p| p.health())
            .collect();
        v.sort_by_key(|h| h.id);
        v
    }

    /// Stops every task and closes every connection.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }
}

/// Asks the member at `url` (a peer URL) which cluster it is in, and what
/// else it tells joiners ([`Handler::info`]): what a member joining an
/// existing cluster does before it has any state.
pub async fn fetch_cluster_info(
    connector: &dyn Connector,
    url: &str,
    from: u64,
    max_frame_bytes: usize,
) -> Result<(u64, Vec<u8>), TransportError> {
    use tokio::io::AsyncWriteExt;
    let addr = peer::host_port(url).ok_or_else(|| TransportError::BadUrl(url.to_string()))?;
    let mut s = connector.connect(addr).await?;
    let hs = frame::Handshake {
        kind: frame::StreamKind::Info,
        cluster_id: 0,
        from,
        to: 0,
    };
    s.write_all(&hs.encode()).await?;
    s.flush().await?;
    let reply = frame::read_frame(&mut s, max_frame_bytes).await?;
    match reply.kind {
        frame::kind::ACCEPT if reply.payload.len() >= 8 => Ok((
            u64::from_be_bytes(reply.payload[..8].try_into().expect("8 bytes")),
            reply.payload[8..].to_vec(),
        )),
        frame::kind::ERROR => Err(TransportError::Refused(
            String::from_utf8_lossy(&reply.payload).into_owned(),
        )),
        k => Err(TransportError::UnexpectedKind(k)),
    }
}
