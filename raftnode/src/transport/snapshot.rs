//! Snapshot streams, each on its own connection: the sender reads the data on
//! a blocking thread, compresses it chunk by chunk and streams it; the
//! receiver decompresses into a `.part` file, verifies length and checksum,
//! fsyncs, renames it to `.snap`, acknowledges, and hands it to the node.
//!
//! A stream that breaks anywhere before a verified end leaves nothing behind
//! and never reaches [`super::Handler::on_snapshot`].

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{info, warn};

use super::frame::{
    FRAME_HEADER_LEN, SNAPSHOT_CHUNK_MAX, StreamKind, TransportError, decode_ack, decode_end,
    encode_ack, encode_end, encode_frame, kind, read_frame, split_chunk, write_frame,
};
use super::peer::dial;
use super::tasks::{self, Tag};
use super::{BoxStream, Shared, hex};

/// Longest wait for one frame of a snapshot stream, either way.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the acknowledgement once everything is sent (the
/// receiver fsyncs the whole file first).
const ACK_TIMEOUT: Duration = Duration::from_secs(120);
/// After a failed source, how long the sender waits for the receiver to say
/// it discarded the partial file.
const ABORT_LINGER: Duration = Duration::from_secs(5);
/// Chunks in flight between the reading thread and the socket, and between
/// the socket and the writing thread.
const PIPELINE: usize = 4;
/// Suffix of a snapshot file being received.
pub const PART_SUFFIX: &str = ".snap.part";

/// Starts sending `msg` and `data` to `msg.to`; the outcome goes to
/// [`super::Handler::on_snapshot_sent`].
pub fn send(shared: &Arc<Shared>, msg: Message, data: Box<dyn Read + Send>) {
    let to = msg.to;
    let Some(peer) = shared.peer(to) else {
        warn!(peer = %hex(to), "snapshot for an unknown peer dropped");
        shared.report_snapshot_sent(to, false);
        return;
    };
    let urls = peer.urls();
    let s = shared.clone();
    tasks::spawn(shared, Tag::SnapshotOut(to), move |_| async move {
        let mut outcome = Outcome {
            shared: s.clone(),
            peer: to,
            reported: false,
        };
        let meta = msg.get_snapshot().get_metadata();
        let (index, term) = (meta.index, meta.term);
        let started = Instant::now();
        match send_stream(&s, &urls, msg, data).await {
            Ok(st) => {
                info!(peer = %hex(to), index, term, bytes = st.raw, wire_bytes = st.wire,
                    elapsed_ms = started.elapsed().as_millis() as u64, "snapshot sent");
                outcome.report(true);
            }
            Err(e) => {
                warn!(peer = %hex(to), index, term, error = %e,
                    elapsed_ms = started.elapsed().as_millis() as u64, "snapshot send failed");
                outcome.report(false);
            }
        }
    });
}

/// Reports a send's outcome exactly once; a send that is aborted (its peer
/// removed) reports failure.
struct Outcome {
    shared: Arc<Shared>,
    peer: u64,
    reported: bool,
}

impl Outcome {
    fn report(&mut self, ok: bool) {
        self.reported = true;
        if !self.shared.is_stopped() {
            self.shared.handler.on_snapshot_sent(self.peer, ok);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.reported {
            self.report(false);
        }
    }
}

struct Stats {
    /// Uncompressed bytes.
    raw: u64,
    /// Bytes of frames on the wire.
    wire: u64,
}

/// What the reading thread hands the sending task.
enum Piece {
    /// A whole SNAP_CHUNK frame.
    Chunk {
        frame: Vec<u8>,
        raw: usize,
    },
    End {
        total: u64,
        crc: u32,
    },
    Failed(String),
}

async fn io_timeout<T, E: Into<TransportError>>(
    what: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, TransportError> {
    match timeout(IO_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(TransportError::Timeout(what)),
    }
}

/// The largest uncompressed chunk whose compressed frame fits the limit.
fn chunk_len(max_frame: usize) -> Result<usize, TransportError> {
    let mut c = SNAPSHOT_CHUNK_MAX;
    while 4 + zstd::zstd_safe::compress_bound(c) > max_frame {
        if c <= 4096 {
            return Err(TransportError::Rejected(format!(
                "max_frame_bytes {max_frame} is too small for snapshot chunks"
            )));
        }
        c /= 2;
    }
    Ok(c)
}

async fn send_stream(
    shared: &Arc<Shared>,
    urls: &[String],
    msg: Message,
    data: Box<dyn Read + Send>,
) -> Result<Stats, TransportError> {
    let max = shared.cfg.max_frame_bytes;
    let chunk = chunk_len(max)?;
    let head = msg.write_to_bytes()?;
    if head.len() > max {
        return Err(TransportError::FrameTooLarge {
            len: head.len(),
            max,
        });
    }
    let (mut stream, _) = dial(shared, urls, 0, StreamKind::Snapshot, msg.to).await?;
    io_timeout(
        "sending the snapshot message",
        write_frame(&mut stream, kind::SNAP_MSG, &head),
    )
    .await?;
    let mut stats = Stats {
        raw: 0,
        wire: (FRAME_HEADER_LEN + head.len()) as u64,
    };

    let (tx, mut rx) = mpsc::channel(PIPELINE);
    let level = shared.cfg.zstd_level;
    // The source may be gigabytes on disk: read and compress off the runtime.
    // If this task goes away, the thread's next send fails and it stops.
    shared
        .rt
        .spawn_blocking(move || read_and_compress(data, chunk, level, tx));

    loop {
        match rx.recv().await {
            Some(Piece::Chunk { frame, raw }) => {
                let written = io_timeout("sending a snapshot chunk", async {
                    stream.write_all(&frame).await?;
                    stream.flush().await
                })
                .await;
                if let Err(e) = written {
                    // The receiver may have said why before closing.
                    return Err(reason_from_peer(&mut stream, max).await.unwrap_or(e));
                }
                stats.raw += raw as u64;
                stats.wire += frame.len() as u64;
            }
            Some(Piece::End { total, crc }) => {
                io_timeout(
                    "sending the snapshot end marker",
                    write_frame(&mut stream, kind::SNAP_END, &encode_end(total, crc)),
                )
                .await?;
                stats.wire += (FRAME_HEADER_LEN + 12) as u64;
                break;
            }
            Some(Piece::Failed(e)) => {
                let reason = format!("snapshot source failed: {e}");
                let _ = io_timeout(
                    "sending the abort",
                    write_frame(&mut stream, kind::ERROR, reason.as_bytes()),
                )
                .await;
                // Wait for the receiver to have discarded what it got, so that
                // once failure is reported nothing of this stream remains.
                let _ = timeout(ABORT_LINGER, read_frame(&mut stream, max)).await;
                return Err(TransportError::Source(e));
            }
            None => {
                return Err(TransportError::Source(
                    "the reading thread ended early".into(),
                ));
            }
        }
    }
    let ack = match timeout(ACK_TIMEOUT, read_frame(&mut stream, max)).await {
        Ok(r) => r?,
        Err(_) => return Err(TransportError::Timeout("waiting for the snapshot ack")),
    };
    match ack.kind {
        kind::SNAP_ACK => match decode_ack(&ack.payload)? {
            Ok(()) => Ok(stats),
            Err(text) => Err(TransportError::Refused(text)),
        },
        kind::ERROR => Err(TransportError::Refused(
            String::from_utf8_lossy(&ack.payload).into_owned(),
        )),
        k => Err(TransportError::UnexpectedKind(k)),
    }
}

/// The failure a peer reported before closing, if it did (briefly waited for).
async fn reason_from_peer(stream: &mut BoxStream, max: usize) -> Option<TransportError> {
    let frame = timeout(Duration::from_millis(500), read_frame(stream, max))
        .await
        .ok()?
        .ok()?;
    match frame.kind {
        kind::ERROR => Some(TransportError::Refused(
            String::from_utf8_lossy(&frame.payload).into_owned(),
        )),
        kind::SNAP_ACK => match decode_ack(&frame.payload) {
            Ok(Err(text)) => Some(TransportError::Refused(text)),
            _ => None,
        },
        _ => None,
    }
}

/// Reads `data` in chunks of `chunk` bytes, compresses each into a whole
/// SNAP_CHUNK frame, and ends with the length and crc32c of everything read.
fn read_and_compress(
    mut data: Box<dyn Read + Send>,
    chunk: usize,
    level: i32,
    tx: mpsc::Sender<Piece>,
) {
    let fail = |e: String| {
        let _ = tx.blocking_send(Piece::Failed(e));
    };
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => return fail(format!("zstd: {e}")),
    };
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    let mut crc = 0u32;
    loop {
        let n = match fill(&mut *data, &mut buf) {
            Ok(n) => n,
            Err(e) => return fail(e.to_string()),
        };
        if n == 0 {
            let _ = tx.blocking_send(Piece::End { total, crc });
            return;
        }
        let raw = &buf[..n];
        crc = crc32c::crc32c_append(crc, raw);
        total += n as u64;
        let compressed = match compressor.compress(raw) {
            Ok(c) => c,
            Err(e) => return fail(format!("zstd: {e}")),
        };
        let mut payload = Vec::with_capacity(4 + compressed.len());
        payload.extend_from_slice(&(n as u32).to_be_bytes());
        payload.extend_from_slice(&compressed);
        let mut frame = Vec::with_capacity(16 + payload.len());
        encode_frame(&mut frame, kind::SNAP_CHUNK, &payload);
        if tx.blocking_send(Piece::Chunk { frame, raw: n }).is_err() {
            return; // the sending task is gone
        }
    }
}

/// Reads until `buf` is full or the source ends.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Receives one snapshot stream from member `from` (handshake done).
pub async fn receive(shared: &Arc<Shared>, mut stream: BoxStream, from: u64, remote: SocketAddr) {
    let started = Instant::now();
    match receive_file(shared, &mut stream, from).await {
        Ok(r) => {
            let meta = r.msg.get_snapshot().get_metadata();
            info!(peer = %hex(from), index = meta.index, term = meta.term, bytes = r.bytes,
                wire_bytes = r.wire, elapsed_ms = started.elapsed().as_millis() as u64,
                file = %r.path.display(), "snapshot received");
            let acked = io_timeout(
                "acknowledging the snapshot",
                write_frame(&mut stream, kind::SNAP_ACK, &encode_ack(&Ok(()))),
            )
            .await;
            if let Err(e) = acked {
                warn!(peer = %hex(from), error = %e, "snapshot acknowledgement failed");
            }
            if shared.is_stopped() {
                let _ = std::fs::remove_file(&r.path);
                return;
            }
            shared.handler.on_snapshot(r.msg, r.path);
        }
        Err(e) => {
            warn!(peer = %hex(from), %remote, error = %e,
                elapsed_ms = started.elapsed().as_millis() as u64, "snapshot receive failed");
            let nack = encode_ack(&Err(e.to_string()));
            let _ = timeout(
                Duration::from_secs(1),
                write_frame(&mut stream, kind::SNAP_ACK, &nack),
            )
            .await;
        }
    }
}

struct Received {
    msg: Message,
    path: PathBuf,
    bytes: u64,
    wire: u64,
}

/// What the socket side hands the file-writing thread.
enum Cmd {
    /// A SNAP_CHUNK payload.
    Chunk(Vec<u8>),
    End {
        len: u64,
        crc: u32,
    },
}

async fn receive_file(
    shared: &Arc<Shared>,
    stream: &mut BoxStream,
    from: u64,
) -> Result<Received, TransportError> {
    let max = shared.cfg.max_frame_bytes;
    let me = shared.cfg.member_id;
    let head = io_timeout("waiting for the snapshot message", read_frame(stream, max)).await?;
    match head.kind {
        kind::SNAP_MSG => {}
        kind::ERROR => {
            return Err(TransportError::Refused(
                String::from_utf8_lossy(&head.payload).into_owned(),
            ));
        }
        k => return Err(TransportError::UnexpectedKind(k)),
    }
    let msg = Message::parse_from_bytes(&head.payload)?;
    if msg.get_msg_type() != MessageType::MsgSnapshot {
        return Err(TransportError::Rejected(format!(
            "expected MsgSnapshot, got {:?}",
            msg.get_msg_type()
        )));
    }
    if msg.from != from || msg.to != me {
        return Err(TransportError::Rejected(format!(
            "snapshot from {} to {} on the stream from {} to {}",
            hex(msg.from),
            hex(msg.to),
            hex(from),
            hex(me)
        )));
    }
    let meta = msg.get_snapshot().get_metadata();
    let name = format!(
        "{}-{:x}-{:x}-{}.snap",
        hex(from),
        meta.term,
        meta.index,
        unique()
    );
    let dest = shared.cfg.snapshot_dir.join(&name);
    let part = shared.cfg.snapshot_dir.join(format!("{name}.part"));

    let (tx, rx) = mpsc::channel(PIPELINE);
    let writer = shared
        .rt
        .spawn_blocking(move || write_file(&part, &dest, rx));
    let streamed = forward(stream, max, &tx)
        .await
        .map(|wire| wire + (FRAME_HEADER_LEN + head.payload.len()) as u64);
    // Closing the channel tells the writer a stream without its end marker
    // is over: it removes the part file.
    drop(tx);
    let written = writer
        .await
        .map_err(|e| TransportError::Io(io::Error::other(format!("snapshot writer: {e}"))))?;
    match (streamed, written) {
        (Ok(wire), Ok((path, bytes))) => Ok(Received {
            msg,
            path,
            bytes,
            wire,
        }),
        (Err(e), Ok((path, _))) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
        (Err(e), Err(_)) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Passes chunks to the writer until the end marker; Ok also when the
/// writer stopped taking them (its own error then says why).
async fn forward(
    stream: &mut BoxStream,
    max: usize,
    tx: &mpsc::Sender<Cmd>,
) -> Result<u64, TransportError> {
    let mut wire = 0u64;
    loop {
        let f = tokio::select! {
            f = io_timeout("waiting for snapshot data", read_frame(stream, max)) => f?,
            // The writer failed (bad chunk, disk error): stop reading now.
            () = tx.closed() => return Ok(wire),
        };
        wire += (FRAME_HEADER_LEN + f.payload.len()) as u64;
        match f.kind {
            kind::SNAP_CHUNK => {
                if tx.send(Cmd::Chunk(f.payload)).await.is_err() {
                    return Ok(wire);
                }
            }
            kind::SNAP_END => {
                let (len, crc) = decode_end(&f.payload)?;
                let _ = tx.send(Cmd::End { len, crc }).await;
                return Ok(wire);
            }
            kind::ERROR => {
                return Err(TransportError::Refused(
                    String::from_utf8_lossy(&f.payload).into_owned(),
                ));
            }
            k => return Err(TransportError::UnexpectedKind(k)),
        }
    }
}

/// A part file that is removed unless kept.
struct PartFile<'a> {
    path: &'a Path,
    keep: bool,
}

impl Drop for PartFile<'_> {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Decompresses chunks into `part`; on a verified end marker fsyncs it and
/// renames it to `dest`. Any other ending removes `part`.
fn write_file(
    part: &Path,
    dest: &Path,
    mut rx: mpsc::Receiver<Cmd>,
) -> Result<(PathBuf, u64), TransportError> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(part)?;
    let mut guard = PartFile {
        path: part,
        keep: false,
    };
    let mut dec = zstd::bulk::Decompressor::new()?;
    // Capacity bounds what one chunk may decompress to.
    let mut buf: Vec<u8> = Vec::with_capacity(SNAPSHOT_CHUNK_MAX);
    let (mut total, mut crc) = (0u64, 0u32);
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Cmd::Chunk(payload) => {
                let (raw, compressed) = split_chunk(&payload)?;
                buf.clear();
                let n = dec
                    .decompress_to_buffer(compressed, &mut buf)
                    .map_err(|e| TransportError::Malformed(format!("snapshot chunk: {e}")))?;
                if n != raw || buf.len() != raw {
                    return Err(TransportError::Malformed(format!(
                        "snapshot chunk of {n} bytes, {raw} announced"
                    )));
                }
                crc = crc32c::crc32c_append(crc, &buf);
                total += n as u64;
                file.write_all(&buf)?;
            }
            Cmd::End { len, crc: want } => {
                if len != total {
                    return Err(TransportError::Rejected(format!(
                        "snapshot length mismatch: received {total} bytes, the sender counted {len}"
                    )));
                }
                if crc != want {
                    return Err(TransportError::Checksum("snapshot data"));
                }
                file.sync_all()?;
                drop(file);
                std::fs::rename(part, dest)?;
                guard.keep = true;
                if let Some(dir) = dest.parent()
                    && let Err(e) = File::open(dir).and_then(|d| d.sync_all())
                {
                    warn!(dir = %dir.display(), error = %e, "fsync of the snapshot directory failed");
                }
                return Ok((dest.to_path_buf(), total));
            }
        }
    }
    Err(TransportError::Malformed(
        "snapshot stream ended before its end marker".into(),
    ))
}

/// A name part no two receptions share (time, process, counter, mixed).
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x =
        t ^ u64::from(std::process::id()).rotate_left(32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("{x:016x}")
}

/// Removes part files a crash left in `dir`.
pub fn remove_stale_parts(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(PART_SUFFIX) {
            warn!(file = %entry.path().display(), "removing an unfinished snapshot");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
