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

use std::collections::VecDeque;
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
/// The read buffer's first size; it grows only for a header block larger
/// than itself.
const READ_BUFFER: usize = 16 * 1024;
/// The largest header block held back whole (h2 refuses far smaller ones).
const MAX_BLOCK: usize = 16 << 20;

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
///
/// Bytes are read once into `buf` and handed to the reader from there:
/// `buf[start..ready]` is checked and ready, `buf[ready..filled]` not yet
/// parsed. Frames other than header blocks are never copied within the
/// buffer nor held back whole (`skip` counts what is left of one); a header
/// block is parsed in place and spliced only when an authority changes.
pub struct FixAuthority<IO> {
    io: IO,
    mode: Mode,
    /// Zero-filled once; its length is its capacity.
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    filled: usize,
    /// Payload bytes of the current non-header frame still to pass.
    skip: usize,
    hpack: Table,
    eof: bool,
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP/2 header frame")
}

fn frame_len(p: &[u8]) -> usize {
    u32::from_be_bytes([0, p[0], p[1], p[2]]) as usize
}

fn frame_stream(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[5], p[6], p[7], p[8]]) & 0x7fff_ffff
}

/// The length of the header block at the start of `p` (a HEADERS frame and
/// its CONTINUATIONs), or `None` while part of it is still to come.
fn block_end(p: &[u8]) -> io::Result<Option<usize>> {
    let mut at = 0;
    loop {
        if p.len() < at + 9 {
            return Ok(None);
        }
        let f = &p[at..];
        if at > 0 && (f[3] != CONTINUATION || frame_stream(f) != frame_stream(p)) {
            return Err(bad());
        }
        at += 9 + frame_len(f);
        if at > MAX_BLOCK {
            return Err(bad());
        }
        if p.len() < at {
            return Ok(None);
        }
        if f[4] & END_HEADERS != 0 {
            return Ok(Some(at));
        }
    }
}

impl<IO> FixAuthority<IO> {
    pub fn new(io: IO) -> Self {
        FixAuthority {
            io,
            mode: Mode::Start,
            buf: vec![0; READ_BUFFER],
            start: 0,
            ready: 0,
            filled: 0,
            skip: 0,
            hpack: Table::new(),
            eof: false,
        }
    }

    /// Checks what can be checked of `buf[ready..filled]`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            let pending = &self.buf[self.ready..self.filled];
            match self.mode {
                Mode::Start => {
                    let n = pending.len().min(PREFACE.len());
                    if pending[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                    } else if n == PREFACE.len() {
                        self.ready += n;
                        self.mode = Mode::Frames;
                    } else if self.eof {
                        self.mode = Mode::Passthrough;
                    } else {
                        return Ok(());
                    }
                }
                Mode::Passthrough => {
                    self.ready = self.filled;
                    return Ok(());
                }
                Mode::Frames if self.skip > 0 => {
                    let n = self.skip.min(pending.len());
                    self.ready += n;
                    self.skip -= n;
                    if self.skip > 0 {
                        return Ok(());
                    }
                }
                Mode::Frames => {
                    if pending.len() < 9 {
                        return Ok(());
                    }
                    match pending[3] {
                        HEADERS => match block_end(pending)? {
                            Some(len) => self.on_header_block(self.ready, self.ready + len)?,
                            None => return Ok(()),
                        },
                        // Only ever right after a HEADERS frame, taken with it.
                        CONTINUATION => return Err(bad()),
                        _ => {
                            self.skip = frame_len(pending);
                            self.ready += 9;
                        }
                    }
                }
            }
        }
    }

    /// The header block in `buf[from..to]`: passed as it is, or re-framed
    /// with its authority rewritten.
    fn on_header_block(&mut self, from: usize, to: usize) -> io::Result<()> {
        let frames = &self.buf[from..to];
        let flags = frames[4];
        let stream = frame_stream(frames);
        let mut payload = &frames[9..9 + frame_len(frames)];
        if flags & PADDED != 0 {
            let pad = *payload.first().ok_or_else(bad)? as usize;
            payload = payload
                .get(1..payload.len().checked_sub(pad).ok_or_else(bad)?)
                .ok_or_else(bad)?;
        }
        let mut priority: &[u8] = &[];
        if flags & PRIORITY != 0 {
            priority = payload.get(..5).ok_or_else(bad)?;
            payload = &payload[5..];
        }
        let rewritten = if flags & END_HEADERS != 0 {
            self.hpack.rewrite(payload)
        } else {
            let mut fragment = payload.to_vec();
            let mut at = 9 + frame_len(frames);
            while at < frames.len() {
                let len = frame_len(&frames[at..]);
                fragment.extend_from_slice(&frames[at + 9..at + 9 + len]);
                at += 9 + len;
            }
            self.hpack.rewrite(&fragment)
        };
        let Some(block) = rewritten.map_err(|()| bad())? else {
            self.ready = to;
            return Ok(());
        };
        // HEADERS then CONTINUATIONs, no padding.
        let mut out = Vec::with_capacity(block.len() + 64);
        let room = MAX_FRAME - priority.len();
        let (head, mut rest) = block.split_at(block.len().min(room));
        let mut f =
            (flags & (END_STREAM | PRIORITY)) | if rest.is_empty() { END_HEADERS } else { 0 };
        emit(&mut out, HEADERS, f, stream, &[priority, head]);
        while !rest.is_empty() {
            let (part, r) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = r;
            f = if rest.is_empty() { END_HEADERS } else { 0 };
            emit(&mut out, CONTINUATION, f, stream, &[part]);
        }
        let new_len = out.len();
        self.buf.splice(from..to, out);
        self.filled = self.filled + new_len - (to - from);
        self.ready = from + new_len;
        Ok(())
    }
}

fn emit(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[&[u8]]) {
    let len = (payload.iter().map(|p| p.len()).sum::<usize>() as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    for p in payload {
        out.extend_from_slice(p);
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
            if me.start < me.ready {
                let n = buf.remaining().min(me.ready - me.start);
                buf.put_slice(&me.buf[me.start..me.start + n]);
                me.start += n;
                if me.start == me.filled {
                    (me.start, me.ready, me.filled) = (0, 0, 0);
                }
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                if me.ready < me.filled {
                    // A truncated frame at the end: hand it on as is.
                    me.ready = me.filled;
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(me.mode, Mode::Passthrough) && me.start == me.filled {
                // Past the first bytes of an HTTP/1 connection: straight through.
                return Pin::new(&mut me.io).poll_read(cx, buf);
            }
            if me.filled == me.buf.len() {
                me.buf.copy_within(me.start..me.filled, 0);
                (me.ready, me.filled) = (me.ready - me.start, me.filled - me.start);
                me.start = 0;
                if me.filled == me.buf.len() {
                    me.buf.resize(me.buf.len() * 2, 0);
                }
            }
            let mut rb = ReadBuf::new(&mut me.buf[me.filled..]);
            match Pin::new(&mut me.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    me.eof = n == 0;
                    me.filled += n;
                    me.process()?;
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
    /// A decoded name or authority value (reused).
    scratch: Vec<u8>,
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

/// An HPACK string literal at `b[*at]`: whether it is Huffman-coded, and
/// its bytes as sent.
fn string<'a>(b: &'a [u8], at: &mut usize) -> Result<(bool, &'a [u8]), ()> {
    let huffman = *b.get(*at).ok_or(())? & 0x80 != 0;
    let len = integer(b, at, 7)?;
    let raw = b.get(*at..at.checked_add(len).ok_or(())?).ok_or(())?;
    *at += len;
    Ok((huffman, raw))
}

/// A string literal's decoded bytes, into `out` (cleared first).
fn decode_into(huffman: bool, raw: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    out.clear();
    if huffman {
        huffman_decode(raw, |c| out.push(c))?;
    } else {
        out.extend_from_slice(raw);
    }
    Ok(())
}

/// A string literal's decoded length, decoding nothing it need not.
fn decoded_len(huffman: bool, raw: &[u8]) -> Result<usize, ()> {
    if !huffman {
        return Ok(raw.len());
    }
    let mut n = 0;
    huffman_decode(raw, |_| n += 1)?;
    Ok(n)
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
fn strip_scheme(value: &[u8]) -> Option<&[u8]> {
    let at = value.windows(3).position(|w| w == b"://")?;
    let rest = &value[at + 3..];
    let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
    Some(&rest[..end])
}

impl Table {
    fn new() -> Table {
        Table {
            entries: VecDeque::new(),
            size: 0,
            max: DEFAULT_TABLE_SIZE,
            scratch: Vec::new(),
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

    /// A header block with `:authority` values rewritten, or `None` when
    /// none needs it (the common case: then nothing is allocated).
    fn rewrite(&mut self, b: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        // The block so far, once a field has changed.
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < b.len() {
            let start = at;
            let first = b[at];
            if first & 0x80 != 0 {
                // An indexed field.
                integer(b, &mut at, 7)?;
            } else if first & 0xe0 == 0x20 {
                // A dynamic table size update.
                self.max = integer(b, &mut at, 5)?;
                self.evict();
            } else {
                // A literal: with incremental indexing (6-bit index), or
                // without / never indexed (4-bit index); index 0: a literal
                // name.
                let indexing = first & 0xc0 == 0x40;
                let index = integer(b, &mut at, if indexing { 6 } else { 4 })?;
                let (authority, name_len) = if index == 0 {
                    let (huffman, raw) = string(b, &mut at)?;
                    decode_into(huffman, raw, &mut self.scratch)?;
                    (self.scratch == b":authority", self.scratch.len())
                } else {
                    self.name(index)?
                };
                let name_end = at;
                let (huffman, raw) = string(b, &mut at)?;
                let value_len = if authority {
                    decode_into(huffman, raw, &mut self.scratch)?;
                    self.scratch.len()
                } else {
                    decoded_len(huffman, raw)?
                };
                let entry = Entry {
                    authority,
                    name_len,
                    size: name_len + value_len + 32,
                };
                if indexing {
                    self.insert(entry);
                }
                // An entry too large for the table empties it on both sides;
                // such a value is left alone so that stays so.
                if authority
                    && entry.size <= self.max
                    && let Some(v) = strip_scheme(&self.scratch)
                {
                    let o = out.get_or_insert_with(|| b[..start].to_vec());
                    o.extend_from_slice(&b[start..name_end]);
                    put_integer(o, 7, v.len());
                    o.extend_from_slice(v);
                    continue;
                }
            }
            if let Some(o) = &mut out {
                o.extend_from_slice(&b[start..at]);
            }
        }
        Ok(out)
    }
}

/// Canonical decoding tables for RFC 7541's Huffman code (a canonical code:
/// the codes of one length are consecutive, in symbol order).
struct Canonical {
    /// By code length: the first code, how many codes, and where their
    /// symbols start in `symbols`.
    first: [u32; 31],
    count: [u32; 31],
    offset: [usize; 31],
    symbols: [u8; 256],
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut order: Vec<usize> = (0..256).collect();
        order.sort_by_key(|&s| (ENCODE_CODE_LENGTHS[s], ENCODE_CODES[s]));
        let mut t = Canonical {
            first: [0; 31],
            count: [0; 31],
            offset: [0; 31],
            symbols: [0; 256],
        };
        for (i, &s) in order.iter().enumerate() {
            let len = ENCODE_CODE_LENGTHS[s] as usize;
            if t.count[len] == 0 {
                t.first[len] = ENCODE_CODES[s];
                t.offset[len] = i;
            }
            t.count[len] += 1;
            t.symbols[i] = s as u8;
        }
        t
    })
}

/// Decodes RFC 7541's Huffman code, handing each byte to `emit`.
fn huffman_decode(b: &[u8], mut emit: impl FnMut(u8)) -> Result<(), ()> {
    let t = canonical();
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in b {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            // Shorter codes are numerically smaller prefixes: a code of
            // this length is in its run, anything above is a longer code.
            if code.wrapping_sub(t.first[len]) < t.count[len] {
                emit(t.symbols[t.offset[len] + (code - t.first[len]) as usize]);
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
    Ok(())
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

    /// Runs `wire` through a FixAuthority, handed over in `chunk`-byte reads
    /// by a reader taking at most `take` bytes at a time.
    fn through(wire: &[u8], chunk: usize, take: usize) -> Vec<u8> {
        struct Trickle<'a>(&'a [u8], usize);
        impl AsyncRead for Trickle<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let n = self.1.min(self.0.len()).min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Poll::Ready(Ok(()))
            }
        }
        let mut f = FixAuthority::new(Trickle(wire, chunk));
        let mut out = Vec::new();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            let mut space = vec![0u8; take];
            let mut rb = ReadBuf::new(&mut space);
            match Pin::new(&mut f).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return out,
                Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
                other => panic!("{other:?}"),
            }
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        emit(&mut out, kind, flags, stream, &[payload]);
        out
    }

    #[test]
    fn huffman_round_trips() {
        let s = b"http://127.0.0.1:23791 and /etcdserverpb.Maintenance/Status";
        let mut out = Vec::new();
        decode_into(true, &huffman_encode(s), &mut out).unwrap();
        assert_eq!(out, s);
        let all: Vec<u8> = (0..=255).collect();
        decode_into(true, &huffman_encode(&all), &mut out).unwrap();
        assert_eq!(out, all);
        assert_eq!(decoded_len(true, &huffman_encode(&all)), Ok(256));
        // Padding longer than 7 bits, or not all ones, is an error.
        let mut long = huffman_encode(b"a");
        long.push(0xff);
        assert!(decode_into(true, &long, &mut out).is_err());
        // "0" is 00000: three bits of ones pad it, three zeros do not.
        assert!(decode_into(true, &[0x07], &mut out).is_ok() && out == b"0");
        assert!(decode_into(true, &[0x00], &mut out).is_err());
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
        let got = t.rewrite(&block).unwrap().expect("rewritten");
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
        assert_eq!(t.rewrite(&[0x83, 0xbf]).unwrap(), None);
        // A literal without indexing whose name is that dynamic entry.
        let mut b2 = vec![0x0f, 63 - 15];
        lit(&mut b2, b"https://h:1/x", false);
        let mut w2 = vec![0x0f, 63 - 15];
        lit(&mut w2, b"h:1", false);
        assert_eq!(t.rewrite(&b2).unwrap(), Some(w2));
        // Plain authorities are left byte for byte.
        let mut plain = vec![0x41];
        lit(&mut plain, b"127.0.0.1:23791", true);
        assert_eq!(t.rewrite(&plain).unwrap(), None);
        assert_eq!(t.entries.len(), 3);
        // A rewritten field in the middle of a block: the fields around it
        // are kept byte for byte.
        let mut mid = vec![0x83];
        mid.push(0x01);
        lit(&mut mid, b"http://x:2/", true);
        mid.push(0x86);
        let mut want = vec![0x83, 0x01];
        lit(&mut want, b"x:2", false);
        want.push(0x86);
        assert_eq!(t.rewrite(&mid).unwrap(), Some(want));
    }

    #[test]
    fn frames_other_than_headers_pass_through_and_headers_are_rewritten() {
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
        // A DATA frame after it, and a plain header block.
        let data = frame(0, END_STREAM, 1, &[7u8; 40_000]);
        wire.extend_from_slice(&data);
        let mut plain = vec![0x83, 0x86, 0x41];
        lit(&mut plain, b"a:1", true);
        let mut padded = vec![3];
        padded.extend_from_slice(&plain);
        padded.extend_from_slice(&[0, 0, 0]);
        let plain_frame = frame(HEADERS, PADDED | END_HEADERS, 3, &padded);
        wire.extend_from_slice(&plain_frame);
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
        want.extend_from_slice(&data);
        want.extend_from_slice(&plain_frame);
        for (chunk, take) in [(1, 1 << 20), (7, 5), (1 << 20, 100), (1 << 20, 1 << 20)] {
            assert!(
                through(&wire, chunk, take) == want,
                "chunk {chunk} take {take}"
            );
        }
        // A CONTINUATION without its HEADERS is refused.
        let mut stray = PREFACE.to_vec();
        stray.extend_from_slice(&frame(CONTINUATION, END_HEADERS, 1, &[0x83]));
        let mut f = FixAuthority::new(&stray[..]);
        let mut space = [0u8; 100];
        let mut rb = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The preface comes out; the stray frame is an error.
        assert!(matches!(
            Pin::new(&mut f).poll_read(&mut cx, &mut rb),
            Poll::Ready(Err(_))
        ));
    }

    #[test]
    fn http1_passes_through() {
        let wire = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(wire, 3, 1 << 20), wire);
        assert_eq!(through(b"PRI * HTTP/1.1", 3, 4), b"PRI * HTTP/1.1");
    }
}
