//! The bytes on the wire: the handshake, frames, message batches and the
//! payloads of a snapshot stream (the module docs of [`super`] draw them).
//!
//! Every integer is big-endian. Every read is bounded: a frame's claimed length
//! is checked against the limit before anything is allocated for it, and the
//! payload buffer then grows only as bytes actually arrive.

use std::io;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// First bytes of every connection ("cairn raft transport").
pub const MAGIC: [u8; 4] = *b"CRNT";
/// Protocol version carried in the handshake.
pub const VERSION: u16 = 1;
/// Length of the handshake a connecting member sends.
pub const HANDSHAKE_LEN: usize = 36;
/// Length of a frame header: payload length, kind, crc32c.
pub const FRAME_HEADER_LEN: usize = 9;
/// Largest uncompressed snapshot chunk (a receiver refuses larger ones).
pub const SNAPSHOT_CHUNK_MAX: usize = 1 << 20;

/// Frame kinds.
pub mod kind {
    /// Receiver → sender: handshake accepted. Empty payload.
    pub const ACCEPT: u8 = 0x01;
    /// Either way: UTF-8 reason; whoever sends it closes the connection.
    pub const ERROR: u8 = 0x02;
    /// Sender → receiver: a batch of raft messages.
    pub const BATCH: u8 = 0x10;
    /// Sender → receiver: the MsgSnapshot message (protobuf).
    pub const SNAP_MSG: u8 = 0x20;
    /// Sender → receiver: uncompressed length u32 + one zstd frame.
    pub const SNAP_CHUNK: u8 = 0x21;
    /// Sender → receiver: total uncompressed length u64 + crc32c u32.
    pub const SNAP_END: u8 = 0x22;
    /// Receiver → sender: status u8 (0 ok, 1 failed) + UTF-8 text.
    pub const SNAP_ACK: u8 = 0x23;
}

/// What a connection carries, chosen in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Batches of raft messages, one way, for as long as the connection lives.
    Messages,
    /// One snapshot, then an acknowledgement.
    Snapshot,
    /// A member joining a cluster asks its cluster id: the answer is an
    /// ACCEPT frame carrying it (8 bytes, big-endian) followed by the
    /// membership (JSON), then the connection closes. The handshake's
    /// cluster and receiver ids are not checked.
    Info,
}

impl StreamKind {
    fn byte(self) -> u8 {
        match self {
            StreamKind::Messages => 1,
            StreamKind::Snapshot => 2,
            StreamKind::Info => 3,
        }
    }

    fn from_byte(b: u8) -> Option<StreamKind> {
        match b {
            1 => Some(StreamKind::Messages),
            2 => Some(StreamKind::Snapshot),
            3 => Some(StreamKind::Info),
            _ => None,
        }
    }
}

/// Why a connection, a frame or a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed by the peer")]
    Closed,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("not a cairn peer stream (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0} (this member speaks {VERSION})")]
    Version(u16),
    #[error("unknown stream kind {0}")]
    StreamKind(u8),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
    #[error("unexpected frame kind {0:#04x}")]
    UnexpectedKind(u8),
    #[error("malformed {0}")]
    Malformed(String),
    /// The other side sent an error frame with this reason.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// This side refused what the other side sent.
    #[error("{0}")]
    Rejected(String),
    #[error("protobuf: {0}")]
    Protobuf(#[from] protobuf::ProtobufError),
    #[error("invalid peer url {0:?} (want scheme://host:port)")]
    BadUrl(String),
    #[error("no urls")]
    NoUrls,
    /// Every URL of a peer failed, each for its reason.
    #[error("{}", join(.0))]
    AllFailed(Vec<TransportError>),
    #[error("{url}: {source}")]
    At {
        url: String,
        source: Box<TransportError>,
    },
    #[error("snapshot source: {0}")]
    Source(String),
    #[error("transport stopped")]
    Stopped,
}

fn join(errors: &[TransportError]) -> String {
    let v: Vec<String> = errors.iter().map(ToString::to_string).collect();
    v.join("; ")
}

impl TransportError {
    /// Whether the other member answered and said no (trying its other URLs
    /// would get the same answer).
    pub fn is_refusal(&self) -> bool {
        self.refusal_reason().is_some()
    }

    /// The other member's reason, if it refused.
    pub fn refusal_reason(&self) -> Option<&str> {
        match self {
            TransportError::Refused(r) => Some(r),
            TransportError::At { source, .. } => source.refusal_reason(),
            TransportError::AllFailed(all) => all.iter().find_map(|e| e.refusal_reason()),
            _ => None,
        }
    }
}

/// The first bytes a connecting member sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub kind: StreamKind,
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

impl Handshake {
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&VERSION.to_be_bytes());
        b[6] = self.kind.byte();
        b[7] = 0;
        b[8..16].copy_from_slice(&self.cluster_id.to_be_bytes());
        b[16..24].copy_from_slice(&self.from.to_be_bytes());
        b[24..32].copy_from_slice(&self.to.to_be_bytes());
        let crc = crc32c::crc32c(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, TransportError> {
        if b[0..4] != MAGIC {
            return Err(TransportError::BadMagic);
        }
        if crc32c::crc32c(&b[0..32]) != be_u32(&b[32..36]) {
            return Err(TransportError::Checksum("handshake"));
        }
        let version = u16::from_be_bytes([b[4], b[5]]);
        if version != VERSION {
            return Err(TransportError::Version(version));
        }
        let kind = StreamKind::from_byte(b[6]).ok_or(TransportError::StreamKind(b[6]))?;
        Ok(Handshake {
            kind,
            cluster_id: be_u64(&b[8..16]),
            from: be_u64(&b[16..24]),
            to: be_u64(&b[24..32]),
        })
    }
}

pub async fn read_handshake<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Handshake, TransportError> {
    let mut b = [0u8; HANDSHAKE_LEN];
    r.read_exact(&mut b).await.map_err(eof_is_closed)?;
    Handshake::decode(&b)
}

/// One frame as read from the wire (checksum verified).
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

fn frame_crc(kind: u8, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload)
}

/// Appends a whole frame (header and payload) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&frame_crc(kind, payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Writes one frame and flushes.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    encode_frame(&mut buf, kind, payload);
    w.write_all(&buf).await?;
    w.flush().await
}

/// Reads one frame whose payload is at most `max` bytes. A larger claimed
/// length is refused before anything is allocated for it.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    max: usize,
) -> Result<Frame, TransportError> {
    let mut h = [0u8; FRAME_HEADER_LEN];
    r.read_exact(&mut h).await.map_err(eof_is_closed)?;
    let len = be_u32(&h[0..4]) as usize;
    let kind = h[4];
    let crc = be_u32(&h[5..9]);
    if len > max {
        return Err(TransportError::FrameTooLarge { len, max });
    }
    let mut payload = Vec::with_capacity(len.min(1 << 20));
    let got = (&mut *r).take(len as u64).read_to_end(&mut payload).await?;
    if got < len {
        return Err(TransportError::Closed);
    }
    if frame_crc(kind, &payload) != crc {
        return Err(TransportError::Checksum("frame"));
    }
    Ok(Frame { kind, payload })
}

fn eof_is_closed(e: io::Error) -> TransportError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        TransportError::Closed
    } else {
        TransportError::Io(e)
    }
}

/// Builds one batch frame in place: header, count, then each message as
/// length + protobuf bytes; the header is filled in by [`Batch::finish`].
pub struct Batch {
    buf: Vec<u8>,
    count: u32,
    max_payload: usize,
}

/// Bytes a batch payload needs before its messages (the count).
const BATCH_PREFIX: usize = 4;

impl Batch {
    pub fn new(max_payload: usize) -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            count: 0,
            max_payload,
        };
        b.reset();
        b
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(FRAME_HEADER_LEN + BATCH_PREFIX, 0);
        self.count = 0;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether a message of `size` encoded bytes could ever be sent, alone.
    pub fn fits_alone(&self, size: usize) -> bool {
        BATCH_PREFIX + 4 + size <= self.max_payload
    }

    /// Whether a message of `size` encoded bytes fits in this batch now.
    pub fn fits(&self, size: usize) -> bool {
        self.buf.len() - FRAME_HEADER_LEN + 4 + size <= self.max_payload
    }

    /// Appends `msg`, whose `compute_size()` is `size` (checked with
    /// [`Batch::fits`] first).
    pub fn push(&mut self, msg: &Message, size: usize) -> Result<(), TransportError> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&(size as u32).to_be_bytes());
        if let Err(e) = msg.write_to_vec(&mut self.buf) {
            self.buf.truncate(at);
            return Err(e.into());
        }
        let written = self.buf.len() - at - 4;
        if written != size {
            // compute_size and the encoding disagreed; never send a lie.
            self.buf.truncate(at);
            return Err(TransportError::Malformed(format!(
                "message encoding ({written} bytes, {size} expected)"
            )));
        }
        self.count += 1;
        Ok(())
    }

    /// The whole frame, header filled in.
    pub fn finish(&mut self) -> &[u8] {
        let payload_len = (self.buf.len() - FRAME_HEADER_LEN) as u32;
        self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 4].copy_from_slice(&self.count.to_be_bytes());
        let crc = frame_crc(kind::BATCH, &self.buf[FRAME_HEADER_LEN..]);
        self.buf[0..4].copy_from_slice(&payload_len.to_be_bytes());
        self.buf[4] = kind::BATCH;
        self.buf[5..9].copy_from_slice(&crc.to_be_bytes());
        &self.buf
    }
}

/// The messages of a batch payload.
pub fn decode_batch(payload: &[u8]) -> Result<Vec<Message>, TransportError> {
    let bad = |what: &str| TransportError::Malformed(format!("batch: {what}"));
    if payload.len() < BATCH_PREFIX {
        return Err(bad("shorter than its count"));
    }
    let count = be_u32(&payload[0..4]) as usize;
    // Every message takes at least its 4-byte length: never reserve more
    // than the payload could hold.
    let mut msgs = Vec::with_capacity(count.min(payload.len() / 4));
    let mut pos = BATCH_PREFIX;
    for _ in 0..count {
        let len_end = pos
            .checked_add(4)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| bad("truncated message length"))?;
        let len = be_u32(&payload[pos..len_end]) as usize;
        let end = len_end
            .checked_add(len)
            .filter(|&e| e <= payload.len())
            .ok_or_else(|| bad("message longer than the batch"))?;
        msgs.push(Message::parse_from_bytes(&payload[len_end..end])?);
        pos = end;
    }
    if pos != payload.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(msgs)
}

/// SNAP_CHUNK payload: uncompressed length, then the zstd frame.
pub fn split_chunk(payload: &[u8]) -> Result<(usize, &[u8]), TransportError> {
    if payload.len() < 4 {
        return Err(TransportError::Malformed("snapshot chunk".into()));
    }
    let raw = be_u32(&payload[0..4]) as usize;
    if raw > SNAPSHOT_CHUNK_MAX {
        return Err(TransportError::Malformed(format!(
            "snapshot chunk of {raw} bytes (limit {SNAPSHOT_CHUNK_MAX})"
        )));
    }
    Ok((raw, &payload[4..]))
}

/// SNAP_END payload.
pub fn encode_end(total: u64, crc: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[0..8].copy_from_slice(&total.to_be_bytes());
    b[8..12].copy_from_slice(&crc.to_be_bytes());
    b
}

pub fn decode_end(payload: &[u8]) -> Result<(u64, u32), TransportError> {
    if payload.len() != 12 {
        return Err(TransportError::Malformed("snapshot end marker".into()));
    }
    Ok((be_u64(&payload[0..8]), be_u32(&payload[8..12])))
}

/// SNAP_ACK payload.
pub fn encode_ack(result: &Result<(), String>) -> Vec<u8> {
    match result {
        Ok(()) => vec![0],
        Err(text) => {
            let mut b = Vec::with_capacity(1 + text.len());
            b.push(1);
            b.extend_from_slice(text.as_bytes());
            b
        }
    }
}

pub fn decode_ack(payload: &[u8]) -> Result<Result<(), String>, TransportError> {
    match payload.first() {
        Some(0) => Ok(Ok(())),
        Some(1) => Ok(Err(String::from_utf8_lossy(&payload[1..]).into_owned())),
        _ => Err(TransportError::Malformed("snapshot ack".into())),
    }
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, MessageType};

    fn msg(i: u64, size: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = 1;
        m.to = 2;
        m.index = i;
        m.entries.push(Entry {
            data: vec![i as u8; size].into(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn handshake_round_trips_and_rejects_damage() {
        let h = Handshake {
            kind: StreamKind::Snapshot,
            cluster_id: 0x1122334455667788,
            from: 7,
            to: 9,
        };
        let mut b = h.encode();
        assert_eq!(Handshake::decode(&b).unwrap(), h);
        b[20] ^= 1;
        assert!(matches!(
            Handshake::decode(&b),
            Err(TransportError::Checksum(_))
        ));
        b[0] = b'X';
        assert!(matches!(
            Handshake::decode(&b),
            Err(TransportError::BadMagic)
        ));
    }

    #[test]
    fn batch_round_trips_in_order() {
        let msgs: Vec<Message> = (0..50).map(|i| msg(i, (i as usize * 37) % 500)).collect();
        let mut b = Batch::new(1 << 20);
        for m in &msgs {
            let size = m.compute_size() as usize;
            assert!(b.fits(size));
            b.push(m, size).unwrap();
        }
        let frame = b.finish().to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let f = rt.block_on(read_frame(&mut &frame[..], 1 << 20)).unwrap();
        assert_eq!(f.kind, kind::BATCH);
        assert_eq!(decode_batch(&f.payload).unwrap(), msgs);
    }

    #[test]
    fn frames_over_the_limit_and_damaged_frames_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut buf = Vec::new();
        encode_frame(&mut buf, kind::ERROR, &[0u8; 100]);
        let r = rt.block_on(read_frame(&mut &buf[..], 99));
        assert!(matches!(
            r,
            Err(TransportError::FrameTooLarge { len: 100, max: 99 })
        ));
        buf[20] ^= 0xff;
        let r = rt.block_on(read_frame(&mut &buf[..], 100));
        assert!(matches!(r, Err(TransportError::Checksum(_))));
        let r = rt.block_on(read_frame(&mut &buf[..50], 100));
        assert!(matches!(r, Err(TransportError::Closed)));
    }

    #[test]
    fn lying_batches_are_malformed() {
        // Count says 3 but only one message follows.
        let mut p = 3u32.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        assert!(decode_batch(&p).is_err());
        // A length past the end.
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_be_bytes());
        assert!(decode_batch(&p).is_err());
        // A huge count with a tiny payload does not reserve for the count.
        let p = u32::MAX.to_be_bytes().to_vec();
        assert!(decode_batch(&p).is_err());
    }
}
