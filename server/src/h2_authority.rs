//! grpc-go clients that dial `passthrough:///http://host:port` — etcdctl's
//! `endpoint status`, `endpoint hashkv`, `defrag` and `move-leader` with an
//! `http://` endpoint or `--cluster` — send the whole URL as HTTP/2's
//! `:authority`. etcd's grpc-go server takes it; the h2 crate under tonic
//! refuses the request (`malformed authority`, RST_STREAM PROTOCOL_ERROR).
//!
//! [`FixAuthority`] sits between the client socket and hyper and rewrites,
//! in the HPACK header blocks of an HTTP/2 connection, an `:authority` value
//! holding `scheme://` to the host and port after it. Nothing else changes:
//! other frames pass through byte for byte, other header fields keep their
//! encoding.
//!
//! Invariant: the decoding table the server (h2) builds holds the same
//! insertions, in the same order, as the client's encoding table, with a
//! rewritten value shorter than the client's — so h2 evicts no later than
//! the client, and every index the client sends names the same insertion
//! on both sides.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frames we emit stay within HTTP/2's smallest maximum frame size.
const MAX_FRAME: usize = 16_384;
/// HTTP/2's default header table size (h2 advertises no other).
const DEFAULT_TABLE_SIZE: usize = 4096;

#[derive(Debug)]
enum Mode {
    /// Reading the first bytes: the HTTP/2 preface, or anything else.
    Start,
    /// HTTP/2 frames.
    Frames,
    /// Not HTTP/2 (HTTP/1.1): bytes pass through.
    Passthrough,
}

/// A connection's read side with `:authority` rewritten (see the module).
pub struct FixAuthority<IO> {
    io: IO,
    mode: Mode,
    /// Read but not yet parsed.
    inbuf: Vec<u8>,
    /// Ready for the reader.
    out: Vec<u8>,
    out_pos: usize,
    /// A header block in progress: its HEADERS frame's stream, flags and
    /// priority bytes, and the fragments so far.
    block: Option<(u32, u8, Vec<u8>, Vec<u8>)>,
    hpack: Table,
    eof: bool,
}

impl<IO> FixAuthority<IO> {
    pub fn new(io: IO) -> Self {
        FixAuthority {
            io,
            mode: Mode::Start,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            block: None,
            hpack: Table::new(),
            eof: false,
        }
    }

    /// Moves what can be moved from `inbuf` to `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Start => {
                    let n = self.inbuf.len().min(PREFACE.len());
                    if self.inbuf[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                    } else if n == PREFACE.len() {
                        self.out.extend(self.inbuf.drain(..n));
                        self.mode = Mode::Frames;
                    } else if self.eof {
                        self.mode = Mode::Passthrough;
                    } else {
                        return Ok(());
                    }
                }
                Mode::Passthrough => {
                    self.out.append(&mut self.inbuf);
                    return Ok(());
                }
                Mode::Frames => {
                    if self.inbuf.len() < 9 {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, self.inbuf[0], self.inbuf[1], self.inbuf[2]])
                        as usize;
                    if self.inbuf.len() < 9 + len {
                        return Ok(());
                    }
                    let kind = self.inbuf[3];
                    if kind != HEADERS && kind != CONTINUATION {
                        self.out.extend(self.inbuf.drain(..9 + len));
                        continue;
                    }
                    let frame: Vec<u8> = self.inbuf.drain(..9 + len).collect();
                    self.on_header_frame(&frame)?;
                }
            }
        }
    }

    fn on_header_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let mut payload = &frame[9..];
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 header frame");
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(bad());
            }
            if flags & PADDED != 0 {
                let pad = *payload.first().ok_or_else(bad)? as usize;
                payload = payload
                    .get(1..payload.len().checked_sub(pad).ok_or_else(bad)?)
                    .ok_or_else(bad)?;
            }
            let mut priority = Vec::new();
            if flags & PRIORITY != 0 {
                priority = payload.get(..5).ok_or_else(bad)?.to_vec();
                payload = &payload[5..];
            }
            self.block = Some((stream, flags, priority, payload.to_vec()));
        } else {
            match &mut self.block {
                Some((s, _, _, frag)) if *s == stream => frag.extend_from_slice(payload),
                _ => return Err(bad()),
            }
        }
        if flags & END_HEADERS == 0 {
            return Ok(());
        }
        let (stream, flags, priority, fragment) = self.block.take().expect("a block");
        let block = self.hpack.rewrite(&fragment).map_err(|()| bad())?;
        // HEADERS then CONTINUATIONs, no padding.
        let mut first = priority;
        let room = MAX_FRAME - first.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        first.extend_from_slice(head);
        let mut f =
            (flags & (END_STREAM | PRIORITY)) | if rest.is_empty() { END_HEADERS } else { 0 };
        self.emit(HEADERS, f, stream, &first);
        while !rest.is_empty() {
            let (part, r) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = r;
            f = if rest.is_empty() { END_HEADERS } else { 0 };
            self.emit(CONTINUATION, f, stream, part);
        }
        Ok(())
    }

    fn emit(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = (payload.len() as u32).to_be_bytes();
        self.out
            .extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
        self.out.extend_from_slice(&stream.to_be_bytes());
        self.out.extend_from_slice(payload);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FixAuthority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if me.out_pos < me.out.len() {
                let n = buf.remaining().min(me.out.len() - me.out_pos);
                buf.put_slice(&me.out[me.out_pos..me.out_pos + n]);
                me.out_pos += n;
                if me.out_pos == me.out.len() {
                    me.out.clear();
                    me.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(me.mode, Mode::Passthrough) && me.inbuf.is_empty() {
                // Past the first bytes of an HTTP/1 connection: straight through.
                return Pin::new(&mut me.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut me.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        me.eof = true;
                    }
                    me.inbuf.extend_from_slice(rb.filled());
                    me.process()?;
                    if me.eof && me.out.is_empty() && !me.inbuf.is_empty() {
                        // A truncated frame at the end: hand it on as is.
                        me.out.append(&mut me.inbuf);
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FixAuthority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The client's HPACK encoding table, as far as the rewrite needs it: for
/// each entry, whether its name is `:authority`, its name's length and its
/// size.
#[derive(Debug)]
struct Table {
    entries: VecDeque<Entry>,
    size: usize,
    max: usize,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    authority: bool,
    name_len: usize,
    size: usize,
}

/// RFC 7541's static table, by name (index 1 first).
const STATIC_NAMES: [&str; 61] = [
    ":authority",
    ":method",
    ":method",
    ":path",
    ":path",
    ":scheme",
    ":scheme",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    ":status",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "accept",
    "access-control-allow-origin",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "link",
    "location",
    "max-forwards",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "refresh",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "transfer-encoding",
    "user-agent",
    "vary",
    "via",
    "www-authenticate",
];

/// Reads an HPACK integer with an `n`-bit prefix at `b[*at]`.
fn integer(b: &[u8], at: &mut usize, n: u8) -> Result<usize, ()> {
    let mask = (1usize << n) - 1;
    let mut v = (*b.get(*at).ok_or(())? as usize) & mask;
    *at += 1;
    if v < mask {
        return Ok(v);
    }
    let mut shift = 0u32;
    loop {
        let byte = *b.get(*at).ok_or(())?;
        *at += 1;
        if shift > 28 {
            return Err(());
        }
        v += ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// Reads an HPACK string literal at `b[*at]`, decoded.
fn string(b: &[u8], at: &mut usize) -> Result<Vec<u8>, ()> {
    let huffman = *b.get(*at).ok_or(())? & 0x80 != 0;
    let len = integer(b, at, 7)?;
    let raw = b.get(*at..at.checked_add(len).ok_or(())?).ok_or(())?;
    *at += len;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

/// Appends an HPACK integer with an `n`-bit prefix.
fn put_integer(out: &mut Vec<u8>, n: u8, mut v: usize) {
    let mask = (1usize << n) - 1;
    if v < mask {
        out.push(v as u8);
        return;
    }
    out.push(mask as u8);
    v -= mask;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// `http://host:port[/…]` → `host:port`; `None` when there is no scheme.
fn strip_scheme(value: &[u8]) -> Option<Vec<u8>> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

impl Table {
    fn new() -> Table {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max: DEFAULT_TABLE_SIZE,
        }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size,
                None => self.size = 0,
            }
        }
    }

    fn insert(&mut self, e: Entry) {
        if e.size > self.max {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.size += e.size;
        self.entries.push_front(e);
        self.evict();
    }

    /// The name at index `i` (static or dynamic): whether it is
    /// `:authority`, and its length.
    fn name(&self, i: usize) -> Result<(bool, usize), ()> {
        match i {
            0 => Err(()),
            1..=61 => Ok((i == 1, STATIC_NAMES[i - 1].len())),
            _ => self
                .entries
                .get(i - 62)
                .map(|e| (e.authority, e.name_len))
                .ok_or(()),
        }
    }

    /// A header block with `:authority` values rewritten.
    fn rewrite(&mut self, b: &[u8]) -> Result<Vec<u8>, ()> {
        let mut out = Vec::with_capacity(b.len());
        let mut at = 0;
        while at < b.len() {
            let start = at;
            let first = b[at];
            if first & 0x80 != 0 {
                // An indexed field.
                integer(b, &mut at, 7)?;
                out.extend_from_slice(&b[start..at]);
                continue;
            }
            if first & 0xe0 == 0x20 {
                // A dynamic table size update.
                self.max = integer(b, &mut at, 5)?;
                self.evict();
                out.extend_from_slice(&b[start..at]);
                continue;
            }
            // A literal: with incremental indexing (6-bit index), or
            // without / never indexed (4-bit index); index 0: a literal name.
            let indexing = first & 0xc0 == 0x40;
            let index = integer(b, &mut at, if indexing { 6 } else { 4 })?;
            let (authority, name_len) = if index == 0 {
                let name = string(b, &mut at)?;
                (name == b":authority", name.len())
            } else {
                self.name(index)?
            };
            let name_end = at;
            let value = string(b, &mut at)?;
            let entry = Entry {
                authority,
                name_len,
                size: name_len + value.len() + 32,
            };
            // An entry too large for the table empties it on both sides;
            // such a value is left alone so that stays so.
            match strip_scheme(&value).filter(|_| authority && entry.size <= self.max) {
                Some(v) => {
                    out.extend_from_slice(&b[start..name_end]);
                    put_integer(&mut out, 7, v.len());
                    out.extend_from_slice(&v);
                }
                None => out.extend_from_slice(&b[start..at]),
            }
            if indexing {
                self.insert(entry);
            }
        }
        Ok(out)
    }
}

/// Decodes RFC 7541's Huffman code.
fn huffman_decode(b: &[u8]) -> Result<Vec<u8>, ()> {
    static CODES: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    let codes = CODES.get_or_init(|| {
        (0..256)
            .map(|s| ((ENCODE_CODE_LENGTHS[s], ENCODE_CODES[s]), s as u8))
            .collect()
    });
    let mut out = Vec::with_capacity(b.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u8);
    for &byte in b {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if let Some(&s) = codes.get(&(len, code)) {
                out.push(s);
                (code, len) = (0, 0);
            } else if len >= 30 {
                return Err(());
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones.
    if len >= 8 || code != (1u32 << len) - 1 {
        return Err(());
    }
    Ok(out)
}

// RFC 7541 Appendix B: each byte's code and its length in bits.
const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let (mut acc, mut n, mut out) = (0u64, 0u32, Vec::new());
        for &c in s {
            acc = (acc << ENCODE_CODE_LENGTHS[c as usize]) | u64::from(ENCODE_CODES[c as usize]);
            n += u32::from(ENCODE_CODE_LENGTHS[c as usize]);
            while n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        if n > 0 {
            out.push(((acc << (8 - n)) | ((1 << (8 - n)) - 1)) as u8);
        }
        out
    }

    fn lit(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
        if huffman {
            let h = huffman_encode(s);
            let at = out.len();
            put_integer(out, 7, h.len());
            out[at] |= 0x80;
            out.extend_from_slice(&h);
        } else {
            put_integer(out, 7, s.len());
            out.extend_from_slice(s);
        }
    }

    #[test]
    fn huffman_round_trips() {
        let s = b"http://127.0.0.1:23791 and /etcdserverpb.Maintenance/Status";
        assert_eq!(huffman_decode(&huffman_encode(s)).unwrap(), s);
    }

    #[test]
    fn a_url_authority_becomes_host_and_port_and_the_table_stays_in_step() {
        let mut t = Table::new();
        // :method POST (indexed), :authority literal with indexing, then a
        // custom header literal with indexing.
        let mut block = vec![0x83, 0x41];
        lit(&mut block, b"http://127.0.0.1:23791", true);
        block.push(0x40);
        lit(&mut block, b"x-custom", false);
        lit(&mut block, b"v", false);
        let got = t.rewrite(&block).unwrap();
        let mut want = vec![0x83, 0x41];
        lit(&mut want, b"127.0.0.1:23791", false);
        want.extend_from_slice(&block[block.len() - 12..]);
        assert_eq!(got, want);
        // Index 62 is x-custom, 63 the authority (client sizes).
        assert_eq!(t.entries.len(), 2);
        assert!(t.entries[1].authority && !t.entries[0].authority);
        assert_eq!(t.entries[1].size, 10 + 22 + 32);
        // A second request naming the authority by its dynamic index: the
        // server's entry is the rewritten one; nothing to change.
        assert_eq!(t.rewrite(&[0x83, 0xbf]).unwrap(), vec![0x83, 0xbf]);
        // A literal without indexing whose name is that dynamic entry.
        let mut b2 = vec![0x0f, 63 - 15];
        lit(&mut b2, b"https://h:1/x", false);
        let mut w2 = vec![0x0f, 63 - 15];
        lit(&mut w2, b"h:1", false);
        assert_eq!(t.rewrite(&b2).unwrap(), w2);
        // Plain authorities are left byte for byte.
        let mut plain = vec![0x41];
        lit(&mut plain, b"127.0.0.1:23791", true);
        assert_eq!(t.rewrite(&plain).unwrap(), plain);
    }

    #[test]
    fn frames_other_than_headers_pass_through_and_headers_are_rewritten() {
        let mut f = FixAuthority::new(());
        let mut block = vec![0x83, 0x86, 0x41];
        lit(&mut block, b"http://a:1", false);
        let mut wire = PREFACE.to_vec();
        // SETTINGS (empty), then HEADERS split over a CONTINUATION, padded.
        wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (h1, h2) = block.split_at(4);
        let len = 1 + h1.len() + 2;
        wire.extend_from_slice(&[0, 0, len as u8, HEADERS, PADDED | END_STREAM, 0, 0, 0, 1, 2]);
        wire.extend_from_slice(h1);
        wire.extend_from_slice(&[0, 0]);
        wire.extend_from_slice(&[0, 0, h2.len() as u8, CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        wire.extend_from_slice(h2);
        // Fed one byte at a time.
        for b in &wire {
            f.inbuf.push(*b);
            f.process().unwrap();
        }
        let mut fixed = vec![0x83, 0x86, 0x41];
        lit(&mut fixed, b"a:1", false);
        let mut want = PREFACE.to_vec();
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[
            0,
            0,
            fixed.len() as u8,
            HEADERS,
            END_STREAM | END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        want.extend_from_slice(&fixed);
        assert_eq!(f.out, want);
    }

    #[test]
    fn http1_passes_through() {
        let mut f = FixAuthority::new(());
        f.inbuf.extend_from_slice(b"GET /health HTTP/1.1\r\n");
        f.process().unwrap();
        assert_eq!(f.out, b"GET /health HTTP/1.1\r\n");
    }
}
