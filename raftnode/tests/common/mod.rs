//! A test cluster: real members on 127.0.0.1 ports, real WALs in temporary
//! directories, and a state machine that records exactly what it applied.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cairn_raftnode::member::Member;
use cairn_raftnode::transport::{Acceptor, BoxFuture, BoxStream, Connector, PlainTcp};
use cairn_raftnode::{
    EntryId, MembershipChange, Metrics, Node, NodeConfig, Role, SnapshotSource, StateMachine, ids,
};
use cairn_wal::{Wal, WalOptions};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a member applied, in order: `(index, data)` of every proposal, and
/// the membership changes it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub entries: Vec<(u64, Vec<u8>)>,
    pub last: u64,
}

impl Applied {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.last.to_be_bytes().to_vec();
        for (i, d) in &self.entries {
            v.extend_from_slice(&i.to_be_bytes());
            v.extend_from_slice(&(d.len() as u32).to_be_bytes());
            v.extend_from_slice(d);
        }
        v
    }

    fn decode(b: &[u8]) -> Applied {
        let mut a = Applied {
            last: u64::from_be_bytes(b[..8].try_into().unwrap()),
            entries: Vec::new(),
        };
        let mut at = 8;
        while at < b.len() {
            let i = u64::from_be_bytes(b[at..at + 8].try_into().unwrap());
            let n = u32::from_be_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            a.entries.push((i, b[at + 12..at + 12 + n].to_vec()));
            at += 12 + n;
        }
        a
    }

    /// The proposals' data, in applied order.
    pub fn data(&self) -> Vec<Vec<u8>> {
        self.entries.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// The state machine: applied entries in memory, made durable (to
/// `<dir>/sm`) only when the node asks — like the MVCC store's batches, a
/// crash loses what was applied since, and the node replays it.
pub struct TestSm {
    pub state: Arc<Mutex<Applied>>,
    /// How many entries each thread (by name) applied.
    pub appliers: Arc<Mutex<BTreeMap<String, usize>>>,
    file: PathBuf,
    durable: u64,
}

impl TestSm {
    pub fn open(dir: &Path) -> (TestSm, Arc<Mutex<Applied>>) {
        let file = dir.join("sm");
        let a = std::fs::read(&file)
            .map(|b| Applied::decode(&b))
            .unwrap_or_default();
        let durable = a.last;
        let state = Arc::new(Mutex::new(a));
        (
            TestSm {
                state: state.clone(),
                appliers: Arc::default(),
                file,
                durable,
            },
            state,
        )
    }

    fn save(&self, a: &Applied) -> std::io::Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, a.encode())?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.file)
    }
}

impl StateMachine for TestSm {
    type Output = u64;

    fn durable_index(&self) -> u64 {
        self.durable
    }

    fn apply(&mut self, entry: EntryId, data: &[u8]) -> u64 {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        *self.appliers.lock().unwrap().entry(thread).or_default() += 1;
        let mut a = self.state.lock().unwrap();
        if entry.index > a.last {
            a.entries.push((entry.index, data.to_vec()));
            a.last = entry.index;
        }
        entry.index
    }

    fn apply_other(&mut self, entry: EntryId, _change: Option<&MembershipChange>) {
        let mut a = self.state.lock().unwrap();
        a.last = a.last.max(entry.index);
    }

    fn sync(&mut self) -> Result<u64, String> {
        let a = self.state.lock().unwrap().clone();
        self.save(&a).map_err(|e| e.to_string())?;
        self.durable = a.last;
        Ok(a.last)
    }

    fn restore(&mut self, file: &Path) -> Result<u64, String> {
        let b = std::fs::read(file).map_err(|e| e.to_string())?;
        let a = Applied::decode(&b);
        self.save(&a).map_err(|e| e.to_string())?;
        // The file is left where it is: the node removes snapshot files the
        // state machine has durably passed when it next starts.
        self.durable = a.last;
        let last = a.last;
        *self.state.lock().unwrap() = a;
        Ok(last)
    }
}

/// Snapshots of the test state machine: its whole applied list.
pub struct TestSource(pub Arc<Mutex<Applied>>);

impl SnapshotSource for TestSource {
    fn open(&self) -> std::io::Result<(u64, Box<dyn Read + Send>)> {
        let a = self.0.lock().unwrap().clone();
        Ok((a.last, Box::new(Cursor::new(a.encode()))))
    }
}

/// Cuts a member off the network while closed: its connections fail both
/// ways, new ones are refused.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn close(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn open(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    fn closed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

struct Gated {
    inner: BoxStream,
    gate: Gate,
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "partitioned")
}

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.gate.closed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.gate.closed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct GatedTcp(Gate);

impl Connector for GatedTcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, std::io::Result<BoxStream>> {
        Box::pin(async move {
            if self.0.closed() {
                return Err(cut());
            }
            let s = PlainTcp.connect(addr).await?;
            Ok(Box::new(Gated {
                inner: s,
                gate: self.0.clone(),
            }) as BoxStream)
        })
    }
}

impl Acceptor for GatedTcp {
    fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        let gate = self.0.clone();
        Box::pin(async move {
            if gate.closed() {
                return Err(cut());
            }
            Ok(Box::new(Gated {
                inner: Box::new(stream),
                gate,
            }) as BoxStream)
        })
    }
}

pub const TOKEN: &str = "cairn-test";

/// A member's fixed identity and directory.
pub struct Spec {
    pub id: u64,
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
}

pub struct Running {
    pub node: Node<u64>,
    pub state: Arc<Mutex<Applied>>,
    pub appliers: Arc<Mutex<BTreeMap<String, usize>>>,
    pub gate: Gate,
}

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub tmp: tempfile::TempDir,
    pub cluster_id: u64,
    pub specs: Vec<Spec>,
    pub initial: Vec<Member>,
    pub members: Vec<Option<Running>>,
    pub snapshot_count: u64,
    pub catchup: u64,
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[path = "../../../testing/port.rs"]
mod port;
pub use port::free_port;

pub fn spec(tmp: &Path, url_port: u16, name: &str, added_at: Option<i64>) -> Spec {
    let url = format!("http://127.0.0.1:{url_port}");
    let id = ids::member_id(std::slice::from_ref(&url), TOKEN, added_at);
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Spec {
        id,
        url,
        port: url_port,
        dir,
    }
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Self::with_snapshots(n, 100_000, 5_000)
    }

    pub fn with_snapshots(n: usize, snapshot_count: u64, catchup: u64) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let specs: Vec<Spec> = (0..n)
            .map(|i| spec(tmp.path(), free_port(), &format!("m{i}"), None))
            .collect();
        let initial: Vec<Member> = specs
            .iter()
            .map(|s| Member {
                id: s.id,
                peer_urls: vec![s.url.clone()],
                ..Member::default()
            })
            .collect();
        let cluster_id = ids::cluster_id(&specs.iter().map(|s| s.id).collect::<Vec<_>>());
        let mut c = Cluster {
            rt: runtime(),
            tmp,
            cluster_id,
            specs,
            initial,
            members: Vec::new(),
            snapshot_count,
            catchup,
        };
        for i in 0..n {
            c.members.push(None);
            c.start(i, false);
        }
        c
    }

    pub fn config(&self, i: usize, join: bool, gate: &Gate) -> NodeConfig {
        let s = &self.specs[i];
        let mut cfg = NodeConfig::new(s.id, self.cluster_id, s.dir.join("snap"));
        cfg.cluster_token = TOKEN.into();
        cfg.initial_members = self.initial.clone();
        cfg.join_existing = join;
        cfg.heartbeat = Duration::from_millis(20);
        cfg.election_timeout = Duration::from_millis(200);
        cfg.request_timeout = Duration::from_secs(5);
        cfg.snapshot_count = self.snapshot_count;
        cfg.catchup_entries = self.catchup;
        cfg.peer_listeners = vec![bind(s.port)];
        let g = Arc::new(GatedTcp(gate.clone()));
        cfg.connector = Some(g.clone());
        cfg.acceptor = Some(g);
        cfg
    }

    /// Starts member `i` (again) from its directory.
    pub fn start(&mut self, i: usize, join: bool) {
        let gate = Gate::default();
        let cfg = self.config(i, join, &gate);
        let r = start_node(cfg, &self.specs[i].dir, &self.rt).unwrap();
        self.members[i] = Some(Running { gate, ..r });
    }

    pub fn node(&self, i: usize) -> &Node<u64> {
        &self.members[i].as_ref().expect("member running").node
    }

    pub fn applied(&self, i: usize) -> Applied {
        self.members[i]
            .as_ref()
            .expect("member running")
            .state
            .lock()
            .unwrap()
            .clone()
    }

    /// Stops member `i` (its state machine keeps only what was synced).
    pub fn stop(&mut self, i: usize) {
        if let Some(r) = self.members[i].take() {
            r.node.stop();
        }
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].is_some())
            .collect()
    }

    /// Waits until the running members `among` agree on a leader; returns
    /// its position.
    pub fn leader_among(&self, among: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let leaders: Vec<u64> = among
                .iter()
                .map(|&i| self.node(i).status().leader)
                .collect();
            let agreed = leaders
                .first()
                .copied()
                .filter(|&l| l != 0 && leaders.iter().all(|&x| x == l));
            let pos = agreed.and_then(|l| among.iter().position(|&i| self.specs[i].id == l));
            if let Some(p) = pos
                .map(|pos| among[pos])
                .filter(|&p| self.node(p).status().role == Role::Leader)
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn leader(&self, within: Duration) -> usize {
        self.leader_among(&self.running(), within)
    }

    /// Waits until member `i` has compacted its log past `index` (plus the
    /// entries it keeps for catching up).
    pub fn wait_compacted(&self, i: usize, index: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.node(i).status().snapshot_index <= index + self.catchup {
            assert!(
                Instant::now() < deadline,
                "member {i} never compacted past {index}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Member `i`'s counters once `ready` holds of them, or as they stand
    /// after `within`. A counter is bumped after the state machine shows the
    /// effect it counts, so a test that just saw the effect waits for it.
    pub fn metrics_when(
        &self,
        i: usize,
        within: Duration,
        ready: impl Fn(&Metrics) -> bool,
    ) -> Metrics {
        let deadline = Instant::now() + within;
        loop {
            let m = self.node(i).metrics();
            if ready(&m) || Instant::now() >= deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Proposes through member `i` and waits for the outcome.
    pub fn propose(&self, i: usize, data: &[u8]) -> Result<u64, cairn_raftnode::Error> {
        self.rt.block_on(self.node(i).propose(data))
    }

    /// Waits until every running member in `among` has applied the same
    /// proposals as member `like`, up to at least index `at`.
    pub fn converge(&self, among: &[usize], at: u64, within: Duration) -> Applied {
        let deadline = Instant::now() + within;
        loop {
            let all: Vec<Applied> = among.iter().map(|&i| self.applied(i)).collect();
            let done = all.iter().all(|a| a.last >= at)
                && all.windows(2).all(|w| w[0].entries == w[1].entries);
            if done {
                return all[0].clone();
            }
            if Instant::now() >= deadline {
                let lasts: Vec<u64> = all.iter().map(|a| a.last).collect();
                let lens: Vec<usize> = all.iter().map(|a| a.entries.len()).collect();
                panic!(
                    "members {among:?} did not converge at {at}: last {lasts:?}, entries {lens:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

pub fn bind(port: u16) -> TcpListener {
    // The port was just released by a probe or a stopped member; retry a
    // little while the kernel lets go of it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("binding 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Opens (or creates) the member's WAL and state machine and starts it.
pub fn start_node(
    cfg: NodeConfig,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
) -> Result<Running, cairn_raftnode::Error> {
    let wal_dir = dir.join("wal");
    let wal = if Wal::exists(&wal_dir) {
        Wal::open(&wal_dir, WalOptions::default())?
    } else {
        Wal::create(&wal_dir, WalOptions::default(), &cfg.id.to_be_bytes())?
    };
    let (sm, state) = TestSm::open(dir);
    let appliers = sm.appliers.clone();
    let source = Arc::new(TestSource(state.clone()));
    let node = Node::start(cfg, wal, sm, source, rt.handle().clone())?;
    Ok(Running {
        node,
        state,
        appliers,
        gate: Gate::default(),
    })
}

/// `n` distinct payloads with a prefix.
pub fn payloads(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{prefix}-{i:05}").into_bytes())
        .collect()
}
