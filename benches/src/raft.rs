//! `cairn-bench raft-propose`: proposals per second committed and applied by
//! a raft cluster of in-process members on loopback (real WALs on disk, the
//! real peer transport), for given member and proposer counts, with the
//! leader's fsyncs per second beside them.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_raftnode::member::Member;
use cairn_raftnode::{
    EntryId, MembershipChange, Node, NodeConfig, Role, SnapshotSource, StateMachine, ids,
};
use cairn_wal::{Wal, WalOptions};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Args)]
pub struct RaftArgs {
    /// Cluster sizes to run.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    members: Vec<usize>,
    /// Concurrent proposers (async tasks on the leader) to run.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    proposers: Vec<usize>,
    /// Bytes per proposal.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Seconds per measurement (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds; figures are medians over rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Directory for the members' data (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Applies nothing but the count: the benchmark measures raft and the WAL.
struct Counter(u64);

impl StateMachine for Counter {
    type Output = u64;
    fn durable_index(&self) -> u64 {
        0
    }
    fn apply(&mut self, entry: EntryId, _data: &[u8]) -> u64 {
        self.0 += 1;
        entry.index
    }
    fn apply_other(&mut self, _entry: EntryId, _change: Option<&MembershipChange>) {}
    fn sync(&mut self) -> Result<u64, String> {
        Ok(0)
    }
    fn restore(&mut self, _file: &Path) -> Result<u64, String> {
        Err("the benchmark sends no snapshots".into())
    }
}

struct NoSnapshots;

impl SnapshotSource for NoSnapshots {
    fn open(&self) -> std::io::Result<(u64, Box<dyn Read + Send>)> {
        Err(std::io::Error::other("the benchmark sends no snapshots"))
    }
}

pub(crate) struct Cluster {
    pub nodes: Vec<Arc<Node<u64>>>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn stop(&self) {
        for n in &self.nodes {
            n.stop();
        }
    }
}

fn start(n: usize, dir: Option<&Path>, rt: &tokio::runtime::Runtime) -> anyhow::Result<Cluster> {
    start_with(n, dir, rt, &WalOptions::default(), |_| Ok(Counter(0)))
}

/// `n` members, each with a WAL opened with `wal` and the state machine
/// `machine` makes in its data directory.
pub(crate) fn start_with<S: StateMachine<Output = u64>>(
    n: usize,
    dir: Option<&Path>,
    rt: &tokio::runtime::Runtime,
    wal: &WalOptions,
    mut machine: impl FnMut(&Path) -> anyhow::Result<S>,
) -> anyhow::Result<Cluster> {
    let tmp = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| format!("http://{a}")))
        .collect::<std::io::Result<_>>()?;
    let members: Vec<Member> = urls
        .iter()
        .map(|u| Member {
            id: ids::member_id(std::slice::from_ref(u), "bench", None),
            peer_urls: vec![u.clone()],
            ..Member::default()
        })
        .collect();
    let cluster_id = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let d = tmp.path().join(format!("m{i}"));
        std::fs::create_dir_all(&d)?;
        let mut cfg = NodeConfig::new(members[i].id, cluster_id, d.join("snap"));
        cfg.initial_members = members.clone();
        cfg.peer_listeners = vec![l];
        let log = Wal::create(d.join("wal"), wal.clone(), b"bench")?;
        let node = Node::start(
            cfg,
            log,
            machine(&d)?,
            Arc::new(NoSnapshots),
            rt.handle().clone(),
        )
        .context("starting a member")?;
        nodes.push(Arc::new(node));
    }
    Ok(Cluster { nodes, _tmp: tmp })
}

pub(crate) fn leader(c: &Cluster) -> anyhow::Result<Arc<Node<u64>>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = c.nodes.iter().find(|n| n.status().role == Role::Leader) {
            return Ok(n.clone());
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader elected");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Proposers hammer the leader until `until`; returns their latencies.
async fn load(
    node: Arc<Node<u64>>,
    proposers: usize,
    size: usize,
    until: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
            let mut data = vec![0u8; size];
            let mut n = 0u64;
            while Instant::now() < until {
                data[..8].copy_from_slice(&(p as u64).to_be_bytes());
                data[8..16].copy_from_slice(&n.to_be_bytes());
                n += 1;
                let t = Instant::now();
                node.propose(&data)
                    .await
                    .map_err(|e| anyhow::anyhow!("proposal failed: {e}"))?;
                h.record(t.elapsed().as_nanos() as u64)?;
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    Ok(all)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A 1 s warm-up, then `proposers` proposing `size`-byte entries on the
/// leader for `seconds`: proposals/s, latency quantiles, the leader's
/// fsyncs/s.
pub(crate) fn measure(
    rt: &tokio::runtime::Runtime,
    l: &Arc<Node<u64>>,
    proposers: usize,
    size: usize,
    seconds: f64,
) -> anyhow::Result<serde_json::Value> {
    // Warm-up: connections, first entries of the term.
    rt.block_on(load(
        l.clone(),
        proposers.min(10),
        size,
        Instant::now() + Duration::from_secs(1),
    ))?;
    let w0 = l.wal_metrics();
    let t0 = Instant::now();
    let h = rt.block_on(load(
        l.clone(),
        proposers,
        size,
        t0 + Duration::from_secs_f64(seconds),
    ))?;
    let secs = t0.elapsed().as_secs_f64();
    let w1 = l.wal_metrics();
    let fsyncs = (w1.fsyncs - w0.fsyncs) as f64;
    Ok(json!({
        "proposals_per_s": h.len() as f64 / secs,
        "p50_us": us(&h, 0.5),
        "p99_us": us(&h, 0.99),
        "p999_us": us(&h, 0.999),
        "max_us": h.max() as f64 / 1e3,
        "fsyncs_per_s": fsyncs / secs,
        "proposals_per_fsync": h.len() as f64 / fsyncs.max(1.0),
    }))
}

pub fn run(a: RaftArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.value_size >= 16, "proposals need at least 16 bytes");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for &members in &a.members {
        for &proposers in &a.proposers {
            let mut samples = Vec::new();
            for _ in 0..a.rounds {
                let c = start(members, a.dir.as_deref(), &rt)?;
                samples.push(measure(
                    &rt,
                    &leader(&c)?,
                    proposers,
                    a.value_size,
                    a.seconds,
                )?);
                c.stop();
            }
            let med = |k: &str| median(samples.iter().filter_map(|s| s[k].as_f64()).collect());
            let row = json!({
                "members": members,
                "proposers": proposers,
                "value_size": a.value_size,
                "rounds": a.rounds,
                "proposals_per_s": med("proposals_per_s"),
                "p50_us": med("p50_us"),
                "p99_us": med("p99_us"),
                "p999_us": med("p999_us"),
                "max_us": med("max_us"),
                "fsyncs_per_s": med("fsyncs_per_s"),
                "proposals_per_fsync": med("proposals_per_fsync"),
            });
            if a.json {
                println!("{row}");
            } else {
                eprintln!(
                    "{members} member(s), {proposers} proposer(s): {:.0} proposals/s",
                    med("proposals_per_s")
                );
            }
            rows.push(row);
        }
    }
    if !a.json {
        println!(
            "{:>7} {:>9} {:>13} {:>9} {:>9} {:>10} {:>10} {:>14}",
            "members",
            "proposers",
            "proposals/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "fsyncs/s",
            "proposals/sync"
        );
        for r in &rows {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:>7} {:>9} {:>13.0} {:>9.3} {:>9.3} {:>10.3} {:>10.0} {:>14.1}",
                r["members"].as_u64().unwrap_or(0),
                r["proposers"].as_u64().unwrap_or(0),
                f("proposals_per_s"),
                f("p50_us") / 1e3,
                f("p99_us") / 1e3,
                f("p999_us") / 1e3,
                f("fsyncs_per_s"),
                f("proposals_per_fsync")
            );
        }
    }
    Ok(())
}
