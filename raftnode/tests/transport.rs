//! The peer transport over real TCP on 127.0.0.1 (ports from binding :0).
//!
//! Each test waits for what it expects with a deadline; no sleep stands in for
//! an assertion about timing. Raw-socket tests speak the wire format as the
//! module documentation draws it, byte by byte.

use std::collections::HashMap;
use std::io::{self, Cursor, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cairn_raftnode::transport::{
    Handler, PeerHealth, PlainTcp, Transport, TransportConfig, fetch_cluster_info,
};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

const DEADLINE: Duration = Duration::from_secs(10);
const CLUSTER: u64 = 0xc1a5;

// ---- a recording handler ----

#[derive(Default)]
struct Events {
    msgs: Vec<Message>,
    batches: usize,
    snapshots: Vec<(Message, PathBuf)>,
    unreachable: Vec<u64>,
    snapshots_sent: Vec<(u64, bool)>,
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Events>,
    changed: Condvar,
    refused: Mutex<HashMap<u64, String>>,
}

impl Recorder {
    fn record(&self, f: impl FnOnce(&mut Events)) {
        f(&mut self.events.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits until `f` returns Some, up to the deadline.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&Events) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        let mut g = self.events.lock().unwrap();
        loop {
            if let Some(t) = f(&g) {
                return t;
            }
            let now = Instant::now();
            assert!(now < deadline, "timed out waiting for {what}");
            g = self.changed.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Events) -> T) -> T {
        f(&self.events.lock().unwrap())
    }

    fn refuse(&self, peer: u64, reason: &str) {
        self.refused.lock().unwrap().insert(peer, reason.into());
    }
}

impl Handler for Recorder {
    fn on_messages(&self, msgs: Vec<Message>) {
        self.record(|e| {
            e.batches += 1;
            e.msgs.extend(msgs);
        });
    }

    fn on_snapshot(&self, msg: Message, file: PathBuf) {
        self.record(|e| e.snapshots.push((msg, file)));
    }

    fn on_unreachable(&self, peer: u64) {
        self.record(|e| e.unreachable.push(peer));
    }

    fn on_snapshot_sent(&self, peer: u64, ok: bool) {
        self.record(|e| e.snapshots_sent.push((peer, ok)));
    }

    fn accept_from(&self, peer: u64) -> Result<(), String> {
        match self.refused.lock().unwrap().get(&peer) {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

// ---- members ----

struct Node {
    t: Transport,
    rec: Arc<Recorder>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Binds `addr` again once its previous owner has let go of it.
fn rebind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn node_on(
    rt: &tokio::runtime::Runtime,
    id: u64,
    listener: TcpListener,
    tweak: impl FnOnce(&mut TransportConfig),
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TransportConfig::new(CLUSTER, id, dir.path());
    cfg.dial_timeout = Duration::from_millis(500);
    cfg.backoff_min = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(100);
    tweak(&mut cfg);
    let rec = Arc::new(Recorder::default());
    let addr = listener.local_addr().unwrap();
    let t = Transport::start(
        cfg,
        vec![listener],
        rec.clone(),
        Arc::new(PlainTcp),
        Arc::new(PlainTcp),
        rt.handle().clone(),
    )
    .unwrap();
    Node { t, rec, addr, dir }
}

fn node(rt: &tokio::runtime::Runtime, id: u64, tweak: impl FnOnce(&mut TransportConfig)) -> Node {
    node_on(rt, id, bind(), tweak)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn health(t: &Transport, peer: u64) -> PeerHealth {
    t.peers()
        .into_iter()
        .find(|h| h.id == peer)
        .unwrap_or_else(|| panic!("no peer {peer}"))
}

/// Polls the health of `peer` until `f` holds.
fn wait_health(
    t: &Transport,
    peer: u64,
    what: &str,
    f: impl Fn(&PeerHealth) -> bool,
) -> PeerHealth {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let h = health(t, peer);
        if f(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for peer {peer} {what}: {h:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_active(t: &Transport, peer: u64) -> PeerHealth {
    wait_health(t, peer, "to be active", |h| h.active_since.is_some())
}

/// Files in `dir`.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---- messages and data ----

fn size_of(i: u64) -> usize {
    ((i * 7919) % 4000) as usize
}

fn pattern(i: u64, size: usize) -> Vec<u8> {
    (0..size).map(|k| (i as usize * 31 + k) as u8).collect()
}

fn append(from: u64, to: u64, i: u64, size: usize) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.from = from;
    m.to = to;
    m.term = 1;
    m.index = i;
    m.entries.push(Entry {
        index: i,
        term: 1,
        data: pattern(i, size).into(),
        ..Default::default()
    });
    m
}

fn snapshot_msg(from: u64, to: u64, index: u64, term: u64) -> Message {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = from;
    m.to = to;
    m.term = term;
    m.set_snapshot(s);
    m
}

/// Pseudo-random text from a small vocabulary: compresses, but not to nothing.
fn compressible(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [
        b"raft ",
        b"entry ",
        b"term ",
        b"index ",
        b"cairn ",
        b"snapshot ",
        b"0123456789",
        b"\n",
    ];
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(WORDS[(x % 8) as usize]);
        if x.is_multiple_of(5) {
            v.push((x >> 32) as u8);
        }
    }
    v.truncate(len);
    v
}

/// Yields `data` up to `fail_at` bytes, then an error.
struct FailingReader {
    data: Cursor<Vec<u8>>,
    fail_at: u64,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.fail_at - self.data.position();
        if left == 0 {
            return Err(io::Error::other("the snapshot file went away"));
        }
        let n = buf.len().min(left as usize);
        self.data.read(&mut buf[..n])
    }
}

// ---- the wire format, by hand ----

fn raw_handshake(kind: u8, cluster: u64, from: u64, to: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(36);
    b.extend_from_slice(b"CRNT");
    b.extend_from_slice(&1u16.to_be_bytes());
    b.push(kind);
    b.push(0);
    b.extend_from_slice(&cluster.to_be_bytes());
    b.extend_from_slice(&from.to_be_bytes());
    b.extend_from_slice(&to.to_be_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + payload.len());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.push(kind);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), payload);
    b.extend_from_slice(&crc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn raw_read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).unwrap();
    let len = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[h[4]]), &payload);
    assert_eq!(
        crc,
        u32::from_be_bytes(h[5..9].try_into().unwrap()),
        "frame crc"
    );
    (h[4], payload)
}

/// A raw connection whose handshake was accepted.
fn raw_connect(addr: SocketAddr, kind: u8, from: u64, to: u64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(&raw_handshake(kind, CLUSTER, from, to))
        .unwrap();
    let (k, payload) = raw_read_frame(&mut s);
    assert_eq!(
        k,
        0x01,
        "handshake refused: {}",
        String::from_utf8_lossy(&payload)
    );
    s
}

/// Reads until the peer closes; true if it did (rather than erroring).
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).is_ok()
}

// ---- tests ----

/// Thousands of messages of varied sizes arrive complete and in order, and a
/// burst shares frames: far fewer batches than messages.
#[test]
fn messages_arrive_complete_in_order_and_batched() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |c| {
        c.queue_len = 10_000;
        c.max_frame_bytes = 1 << 20;
    });
    a.t.set_peer(2, vec![url(b.addr)]);
    wait_active(&a.t, 2);

    const N: u64 = 5000;
    a.t.send((0..N).map(|i| append(1, 2, i, size_of(i))).collect());
    let (got, batches) = b.rec.wait_for("all messages", |e| {
        (e.msgs.len() >= N as usize).then(|| (e.msgs.clone(), e.batches))
    });
    assert_eq!(got.len(), N as usize);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(*m, append(1, 2, i as u64, size_of(i as u64)), "message {i}");
    }
    assert!(
        batches < N as usize / 4,
        "{batches} batches for {N} messages"
    );
    // Frames of at most 1 MiB: at least this many of them.
    let bytes: usize = got.iter().map(|m| 4 + m.compute_size() as usize).sum();
    assert!(
        batches >= bytes.div_ceil(1 << 20),
        "{batches} batches for {bytes} bytes: frames over the limit?"
    );
    let h = wait_health(&a.t, 2, "to count all sent", |h| h.sent == N);
    assert_eq!(h.dropped, 0);
}

/// Three members all talk to each other at once; each receives everything
/// the two others sent it, in each sender's order.
#[test]
fn three_members_exchange_both_ways() {
    let rt = runtime();
    let nodes: Vec<Node> = (1..=3).map(|id| node(&rt, id, |_| {})).collect();
    for (i, n) in nodes.iter().enumerate() {
        for (j, other) in nodes.iter().enumerate() {
            if i != j {
                n.t.set_peer(j as u64 + 1, vec![url(other.addr)]);
            }
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        for j in 0..3 {
            if i != j {
                wait_active(&n.t, j as u64 + 1);
            }
        }
    }
    const N: u64 = 300;
    for (i, n) in nodes.iter().enumerate() {
        let me = i as u64 + 1;
        let msgs = (0..N)
            .flat_map(|k| {
                (1..=3u64)
                    .filter(move |&to| to != me)
                    .map(move |to| append(me, to, k, size_of(k + me)))
            })
            .collect();
        n.t.send(msgs);
    }
    for (i, n) in nodes.iter().enumerate() {
        let me = i as u64 + 1;
        let got = n.rec.wait_for("messages from both others", |e| {
            (e.msgs.len() >= 2 * N as usize).then(|| e.msgs.clone())
        });
        assert_eq!(got.len(), 2 * N as usize);
        for from in (1..=3u64).filter(|&f| f != me) {
            let mine: Vec<&Message> = got.iter().filter(|m| m.from == from).collect();
            assert_eq!(mine.len(), N as usize, "from {from} to {me}");
            for (k, m) in mine.iter().enumerate() {
                let k = k as u64;
                assert_eq!(
                    **m,
                    append(from, me, k, size_of(k + from)),
                    "{from}→{me} #{k}"
                );
            }
        }
    }
}

/// A peer that is not serving yet is dialled until it is; one that restarts
/// on the same port is reconnected. Health tells which: `active_since` while
/// up, `last_error` while down; messages sent while down are dropped and
/// reported, messages sent after it came back arrive.
#[test]
fn late_and_restarted_peer_is_reconnected() {
    let rt = runtime();
    // B's port is bound, but nothing answers on it yet: handshakes time out.
    let lb = bind();
    let b_addr = lb.local_addr().unwrap();
    let a = node(&rt, 1, |c| c.dial_timeout = Duration::from_millis(200));
    a.t.set_peer(2, vec![url(b_addr)]);
    let h = wait_health(&a.t, 2, "to fail", |h| h.last_error.is_some());
    assert_eq!(h.active_since, None);
    assert!(
        h.last_error.as_deref().unwrap().contains("timed out"),
        "{h:?}"
    );
    a.t.send(vec![append(1, 2, 0, 10)]);
    a.rec.wait_for("unreachable 2", |e| {
        e.unreachable.contains(&2).then_some(())
    });
    assert!(health(&a.t, 2).dropped >= 1);

    // B starts serving the port.
    let b = node_on(&rt, 2, lb, |_| {});
    let h = wait_active(&a.t, 2);
    assert!(h.active_since.is_some());
    a.t.send((1000..1100).map(|i| append(1, 2, i, 100)).collect());
    let got = b.rec.wait_for("100 messages", |e| {
        (e.msgs.len() >= 100).then(|| e.msgs.iter().map(|m| m.index).collect::<Vec<_>>())
    });
    assert_eq!(got, (1000..1100).collect::<Vec<_>>());

    // B goes away: A notices without sending anything.
    drop(b);
    let h = wait_health(&a.t, 2, "to go down", |h| {
        h.active_since.is_none() && h.last_error.is_some()
    });
    assert!(h.last_error.is_some());

    // B comes back on the same port.
    let b2 = node_on(&rt, 2, rebind(b_addr), |_| {});
    wait_active(&a.t, 2);
    a.t.send((2000..2100).map(|i| append(1, 2, i, 100)).collect());
    let got = b2.rec.wait_for("100 messages", |e| {
        (e.msgs.len() >= 100).then(|| e.msgs.iter().map(|m| m.index).collect::<Vec<_>>())
    });
    assert_eq!(got, (2000..2100).collect::<Vec<_>>());
}

/// Of a peer's URLs the first that connects is used; a URL that refuses the
/// connection is skipped. New URLs for a peer move its stream there.
#[test]
fn first_url_that_connects_is_used_and_urls_can_change() {
    let rt = runtime();
    // A port nobody listens on any more: connections are refused.
    let dead = bind().local_addr().unwrap();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(dead), url(b.addr)]);
    wait_active(&a.t, 2);
    a.t.send((0..5).map(|i| append(1, 2, i, 10)).collect());
    let got = b.rec.wait_for("5 messages", |e| {
        (e.msgs.len() >= 5).then(|| e.msgs.iter().map(|m| m.index).collect::<Vec<_>>())
    });
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(health(&a.t, 2).urls, [url(dead), url(b.addr)]);

    // Member 2 moves to another address: the stream follows.
    let b2 = node(&rt, 2, |_| {});
    a.t.set_peer(2, vec![url(b2.addr)]);
    assert_eq!(health(&a.t, 2).urls, [url(b2.addr)]);
    // Until the old stream is seen to end, sends may still go to it: wait
    // for the new one to carry a message.
    let deadline = Instant::now() + DEADLINE;
    let mut i = 100;
    while b2.rec.read(|e| e.msgs.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "stream never moved: {:?}",
            health(&a.t, 2)
        );
        a.t.send(vec![append(1, 2, i, 10)]);
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = b.rec.read(|e| e.msgs.len());
    a.t.send((1000..1005).map(|i| append(1, 2, i, 10)).collect());
    let got = b2.rec.wait_for("5 more messages", |e| {
        e.msgs.iter().any(|m| m.index == 1004).then(|| {
            e.msgs
                .iter()
                .filter(|m| m.index >= 1000)
                .map(|m| m.index)
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(got, [1000, 1001, 1002, 1003, 1004]);
    assert_eq!(b.rec.read(|e| e.msgs.len()), before);
}

/// A member of another cluster, and a connection meant for another member,
/// are refused with the reason; nothing is delivered.
#[test]
fn cluster_or_member_mismatch_is_refused() {
    let rt = runtime();
    let b = node(&rt, 2, |c| c.cluster_id = 0xdead);
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    let h = wait_health(&a.t, 2, "to be refused", |h| h.last_error.is_some());
    let err = h.last_error.unwrap();
    assert!(err.contains("cluster id mismatch"), "{err}");
    assert_eq!(h.active_since, None);

    // B's address given as member 3's.
    let c = node(&rt, 3, |c| c.cluster_id = 0xdead);
    c.t.set_peer(4, vec![url(b.addr)]);
    let h = wait_health(&c.t, 4, "to be refused", |h| h.last_error.is_some());
    let err = h.last_error.unwrap();
    assert!(err.contains("member id mismatch"), "{err}");

    a.t.send(vec![append(1, 2, 1, 10)]);
    a.rec.wait_for("unreachable 2", |e| {
        e.unreachable.contains(&2).then_some(())
    });
    assert!(health(&a.t, 2).dropped >= 1);
    assert_eq!(health(&a.t, 2).sent, 0);
    assert_eq!(b.rec.read(|e| e.msgs.len()), 0);
}

/// A member the handler refuses (removed) is told why and delivers nothing;
/// once accepted again it connects.
#[test]
fn removed_member_is_refused() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    b.rec.refuse(1, "member 1 was removed from the cluster");
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    let h = wait_health(&a.t, 2, "to be refused", |h| h.last_error.is_some());
    let err = h.last_error.unwrap();
    assert!(err.contains("member 1 was removed"), "{err}");
    assert_eq!(h.active_since, None);
    a.t.send(vec![append(1, 2, 1, 10)]);
    assert_eq!(health(&a.t, 2).sent, 0);
    assert_eq!(b.rec.read(|e| e.msgs.len()), 0);

    b.rec.refused.lock().unwrap().clear();
    wait_active(&a.t, 2);
    a.t.send(vec![append(1, 2, 2, 10)]);
    let got = b
        .rec
        .wait_for("a message", |e| e.msgs.first().map(|m| m.index));
    assert_eq!(got, 2);
}

/// A frame claiming more than the limit is answered with an error frame and
/// the connection closed; the member keeps serving others.
#[test]
fn oversized_frame_is_refused_and_others_still_served() {
    let rt = runtime();
    let b = node(&rt, 2, |c| c.max_frame_bytes = 64 << 10);
    let mut raw = raw_connect(b.addr, 1, 9, 2);
    // 1 GiB claimed, a batch, no payload sent.
    let mut header = (1u32 << 30).to_be_bytes().to_vec();
    header.push(0x10);
    header.extend_from_slice(&0u32.to_be_bytes());
    raw.write_all(&header).unwrap();
    let (k, reason) = raw_read_frame(&mut raw);
    assert_eq!(k, 0x02);
    let reason = String::from_utf8(reason).unwrap();
    assert!(reason.contains("exceeds the limit"), "{reason}");
    assert!(closed_by_peer(&mut raw), "connection left open");

    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    wait_active(&a.t, 2);
    a.t.send((0..10).map(|i| append(1, 2, i, 1000)).collect());
    let got = b.rec.wait_for("10 messages", |e| {
        (e.msgs.len() >= 10).then(|| e.msgs.iter().map(|m| (m.from, m.index)).collect::<Vec<_>>())
    });
    assert_eq!(got, (0..10).map(|i| (1, i)).collect::<Vec<_>>());
}

/// A single message larger than the frame limit is dropped (and reported);
/// those around it go through in order.
#[test]
fn message_over_the_frame_limit_is_dropped() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |c| c.max_frame_bytes = 64 << 10);
    a.t.set_peer(2, vec![url(b.addr)]);
    wait_active(&a.t, 2);
    a.t.send(vec![
        append(1, 2, 0, 100),
        append(1, 2, 1, 100 << 10),
        append(1, 2, 2, 100),
    ]);
    let got = b.rec.wait_for("2 messages", |e| {
        (e.msgs.len() >= 2).then(|| e.msgs.iter().map(|m| m.index).collect::<Vec<_>>())
    });
    assert_eq!(got, [0, 2]);
    a.rec.wait_for("unreachable 2", |e| {
        e.unreachable.contains(&2).then_some(())
    });
    let h = wait_health(&a.t, 2, "to count", |h| h.sent == 2);
    assert_eq!(h.dropped, 1);
}

/// Several MiB of compressible data arrive byte-identical in a `.snap` file
/// with the message; the sender hears success; no part file remains.
#[test]
fn snapshot_arrives_byte_identical() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    let data = compressible(6 << 20, 42);
    let msg = snapshot_msg(1, 2, 42, 3);
    a.t.send_snapshot(msg.clone(), Box::new(Cursor::new(data.clone())));

    let sent = a
        .rec
        .wait_for("the outcome", |e| e.snapshots_sent.first().copied());
    assert_eq!(sent, (2, true));
    let (got, path) = b
        .rec
        .wait_for("the snapshot", |e| e.snapshots.first().cloned());
    assert_eq!(got, msg);
    assert_eq!(path.parent(), Some(b.dir.path()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("1-3-2a-") && name.ends_with(".snap"),
        "{name}"
    );
    let received = std::fs::read(&path).unwrap();
    assert_eq!(received.len(), data.len());
    assert_eq!(crc32c::crc32c(&received), crc32c::crc32c(&data));
    assert!(received == data);
    assert_eq!(files(b.dir.path()), [name]);
}

/// A snapshot whose source fails mid-way: the sender hears failure; the
/// receiver never hands it over and keeps no file.
#[test]
fn cut_snapshot_fails_and_leaves_nothing() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    let reader = FailingReader {
        data: Cursor::new(compressible(6 << 20, 7)),
        fail_at: 3 << 20,
    };
    a.t.send_snapshot(snapshot_msg(1, 2, 10, 2), Box::new(reader));
    let sent = a
        .rec
        .wait_for("the outcome", |e| e.snapshots_sent.first().copied());
    assert_eq!(sent, (2, false));
    // The failure is reported once the receiver has discarded its part file.
    assert_eq!(files(b.dir.path()), Vec::<String>::new());
    assert_eq!(b.rec.read(|e| e.snapshots.len()), 0);

    // The same pair still manages a whole one afterwards.
    let data = compressible(1 << 20, 8);
    a.t.send_snapshot(
        snapshot_msg(1, 2, 11, 2),
        Box::new(Cursor::new(data.clone())),
    );
    let (_, path) = b
        .rec
        .wait_for("the snapshot", |e| e.snapshots.first().cloned());
    assert!(std::fs::read(path).unwrap() == data);
    assert_eq!(b.rec.read(|e| e.snapshots.len()), 1);
}

/// Streams cut short or with a wrong checksum, written by hand: the receiver
/// answers with a failed ack, hands nothing over, keeps no file.
#[test]
fn truncated_or_corrupt_snapshot_streams_never_reach_the_node() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let data = compressible(300 << 10, 5);
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(&zstd::bulk::compress(&data, 3).unwrap());
    let head = snapshot_msg(9, 2, 5, 1).write_to_bytes().unwrap();
    let good_crc = crc32c::crc32c(&data);

    let nack = |s: &mut TcpStream| {
        let (k, p) = raw_read_frame(s);
        assert_eq!(k, 0x23, "expected an ack");
        assert_eq!(p[0], 1, "ack says ok");
        String::from_utf8_lossy(&p[1..]).into_owned()
    };

    // Wrong checksum in the end marker.
    let mut s = raw_connect(b.addr, 2, 9, 2);
    s.write_all(&raw_frame(0x20, &head)).unwrap();
    s.write_all(&raw_frame(0x21, &chunk)).unwrap();
    let mut end = (data.len() as u64).to_be_bytes().to_vec();
    end.extend_from_slice(&(good_crc ^ 1).to_be_bytes());
    s.write_all(&raw_frame(0x22, &end)).unwrap();
    let why = nack(&mut s);
    assert!(why.contains("checksum"), "{why}");
    assert_eq!(files(b.dir.path()), Vec::<String>::new());

    // Wrong length in the end marker.
    let mut s = raw_connect(b.addr, 2, 9, 2);
    s.write_all(&raw_frame(0x20, &head)).unwrap();
    s.write_all(&raw_frame(0x21, &chunk)).unwrap();
    let mut end = (data.len() as u64 + 1).to_be_bytes().to_vec();
    end.extend_from_slice(&good_crc.to_be_bytes());
    s.write_all(&raw_frame(0x22, &end)).unwrap();
    let why = nack(&mut s);
    assert!(why.contains("length mismatch"), "{why}");
    assert_eq!(files(b.dir.path()), Vec::<String>::new());

    // Cut off after a chunk.
    let mut s = raw_connect(b.addr, 2, 9, 2);
    s.write_all(&raw_frame(0x20, &head)).unwrap();
    s.write_all(&raw_frame(0x21, &chunk)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let why = nack(&mut s);
    assert!(why.contains("closed"), "{why}");
    assert_eq!(files(b.dir.path()), Vec::<String>::new());

    // A chunk that decompresses to more than it announced.
    let mut s = raw_connect(b.addr, 2, 9, 2);
    s.write_all(&raw_frame(0x20, &head)).unwrap();
    let mut lying = 100u32.to_be_bytes().to_vec();
    lying.extend_from_slice(&chunk[4..]);
    s.write_all(&raw_frame(0x21, &lying)).unwrap();
    let why = nack(&mut s);
    assert!(why.contains("snapshot chunk"), "{why}");
    assert_eq!(files(b.dir.path()), Vec::<String>::new());

    // And the honest version of the same stream is taken.
    let mut s = raw_connect(b.addr, 2, 9, 2);
    s.write_all(&raw_frame(0x20, &head)).unwrap();
    s.write_all(&raw_frame(0x21, &chunk)).unwrap();
    let mut end = (data.len() as u64).to_be_bytes().to_vec();
    end.extend_from_slice(&good_crc.to_be_bytes());
    s.write_all(&raw_frame(0x22, &end)).unwrap();
    let (k, p) = raw_read_frame(&mut s);
    assert_eq!((k, p), (0x23, vec![0]));
    let (_, path) = b
        .rec
        .wait_for("the snapshot", |e| e.snapshots.first().cloned());
    assert!(std::fs::read(path).unwrap() == data);
    assert_eq!(b.rec.read(|e| e.snapshots.len()), 1);
}

/// A burst larger than the queue, to a peer that never reads: what does not
/// fit is dropped, counted and reported unreachable, at most once per 100 ms. Messages to an
/// unknown peer are dropped and reported too.
#[test]
fn full_queue_and_unknown_peer_drop_and_report() {
    let rt = runtime();
    let a = node(&rt, 1, |c| {
        c.queue_len = 4;
        c.max_frame_bytes = 2 << 20;
    });

    a.t.send(vec![append(1, 77, 0, 10)]);
    a.rec.wait_for("unreachable 77", |e| {
        e.unreachable.contains(&77).then_some(())
    });
    assert!(a.t.peers().is_empty());

    // A fake member 5 that accepts the handshake, then never reads.
    let fake = bind();
    let fake_addr = fake.local_addr().unwrap();
    let (keep_tx, keep_rx) = std::sync::mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        let (mut s, _) = fake.accept().unwrap();
        let mut hs = [0u8; 36];
        s.read_exact(&mut hs).unwrap();
        s.write_all(&raw_frame(0x01, &[])).unwrap();
        let _ = keep_tx.send(s);
    });
    a.t.set_peer(5, vec![url(fake_addr)]);
    wait_active(&a.t, 5);
    let _held = keep_rx.recv_timeout(DEADLINE).unwrap();

    let started = Instant::now();
    let deadline = started + DEADLINE;
    let mut attempted = 0u64;
    while health(&a.t, 5).dropped == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing dropped: {:?}",
            health(&a.t, 5)
        );
        a.t.send(
            (0..16)
                .map(|i| append(1, 5, attempted + i, 256 << 10))
                .collect(),
        );
        attempted += 16;
    }
    a.rec.wait_for("unreachable 5", |e| {
        e.unreachable.contains(&5).then_some(())
    });
    let elapsed = started.elapsed();
    let reports = a
        .rec
        .read(|e| e.unreachable.iter().filter(|&&p| p == 5).count()) as u128;
    let h = health(&a.t, 5);
    assert!(h.dropped >= 1);
    assert!(h.sent + h.dropped <= attempted);
    assert!(
        reports <= elapsed.as_millis() / 100 + 1,
        "{reports} reports in {elapsed:?}"
    );
}

/// A removed peer's stream stops and messages to it count as to an unknown
/// peer; after shutdown nothing is sent, reported or served, and snapshots
/// in flight are abandoned without leaving files on the receiver.
#[test]
fn remove_peer_and_shutdown_stop_everything() {
    let rt = runtime();
    let b = node(&rt, 2, |_| {});
    let a = node(&rt, 1, |_| {});
    a.t.set_peer(2, vec![url(b.addr)]);
    wait_active(&a.t, 2);
    a.t.remove_peer(2);
    assert!(a.t.peers().is_empty());
    a.t.send(vec![append(1, 2, 0, 10)]);
    a.rec.wait_for("unreachable 2", |e| {
        e.unreachable.contains(&2).then_some(())
    });
    assert_eq!(b.rec.read(|e| e.msgs.len()), 0);

    // A snapshot that takes forever, then shutdown.
    a.t.set_peer(2, vec![url(b.addr)]);
    struct Slow(u64);
    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(5));
            let n = buf.len().min(64 << 10);
            buf[..n].fill(self.0 as u8);
            self.0 += 1;
            Ok(n)
        }
    }
    a.t.send_snapshot(snapshot_msg(1, 2, 3, 1), Box::new(Slow(0)));
    // Wait until the receiver has a part file: the stream is under way.
    let deadline = Instant::now() + DEADLINE;
    while files(b.dir.path()).is_empty() {
        assert!(Instant::now() < deadline, "snapshot never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let reports_before = a.rec.read(|e| e.unreachable.len());
    let t0 = Instant::now();
    a.t.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        t0.elapsed()
    );

    // The receiver sees the stream end and discards the part file.
    while !files(b.dir.path()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "part file left: {:?}",
            files(b.dir.path())
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.rec.read(|e| e.snapshots.len()), 0);
    // A's listener closes.
    while TcpStream::connect(a.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still open after shutdown"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Sends and peers are ignored, silently.
    a.t.send(vec![append(1, 2, 1, 10), append(1, 99, 1, 10)]);
    a.t.set_peer(3, vec![url(b.addr)]);
    assert!(a.t.peers().is_empty());
    assert_eq!(a.rec.read(|e| e.unreachable.len()), reports_before);
    assert_eq!(a.rec.read(|e| e.snapshots_sent.len()), 0);
}

#[test]
fn a_joining_member_learns_the_cluster_id_from_any_member_but_a_removed_one_does_not() {
    let rt = runtime();
    let a = node(&rt, 1, |_| {});
    // The joiner knows neither the cluster id nor the receiver's id.
    let (id, info) = rt
        .block_on(fetch_cluster_info(&PlainTcp, &url(a.addr), 99, 1 << 20))
        .unwrap();
    assert_eq!(id, CLUSTER);
    // The recorder tells joiners nothing more.
    assert!(info.is_empty());
    a.rec.refuse(7, "removed");
    let r = rt.block_on(fetch_cluster_info(&PlainTcp, &url(a.addr), 7, 1 << 20));
    assert!(r.is_err(), "{r:?}");
}
