//! `cairn-bench tune`: the storage tuning harness. It sweeps cairn's storage
//! knobs and measures every setting on up to three workloads, from the store
//! alone to the whole server:
//!
//! * `mvcc`: the MVCC store alone, in process (`cairn-bench mvcc-put`'s
//!   workload with fewer puts). The store alone has no WAL, so the WAL knobs
//!   do not apply to it and are left out.
//! * `raft-mvcc`: in process, a one-member raft node with its WAL and the
//!   MVCC store as its state machine, no gRPC: proposers put 16-byte keys
//!   over a 100,000-key space with 256-byte values, for a fixed time.
//! * `put`: end to end, the `cairn` binary on a fresh data directory per
//!   point, the knobs given as `CAIRN_*` and `ETCD_BACKEND_BATCH_*`
//!   variables, loaded by `cairn-bench put` (etcd's benchmark `put`) run as a
//!   subprocess, which prints one JSON object.
//!
//! Knobs are swept one at a time around the defaults (every other knob at its
//! default), or over every combination with `--grid`. A discarded run of
//! the default point warms each workload up; then each round measures every
//! point once, in an order rotated from round to round and reversed in odd
//! rounds, so that a shared machine's drift does not favour the points that
//! come first. Figures are medians over the rounds; a point's ratio to the
//! default is the median of its per-round ratios (each against the default
//! run in the same round).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use cairn_engine::btree::meta::valid_page_size;
use cairn_engine::mvcc::{self, Applied, PutRequest, Store, StoreOptions, WriteRequest};
use cairn_raftnode::{EntryId, MembershipChange, StateMachine};
use cairn_wal::{BackendChoice, WalOptions};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::mvcc::MvccPutArgs;
use crate::raft;
use crate::rng::Rng;
use crate::servers::Server;

const KEY_SIZE: usize = 16;
const VALUE_SIZE: usize = 256;
const KEY_SPACE: u64 = 100_000;

/// A storage knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Knob {
    /// `CAIRN_WAL_MAX_BATCH_RECORDS`.
    WalBatchRecords,
    /// `CAIRN_WAL_MAX_BATCH_BYTES`.
    WalBatchBytes,
    /// `CAIRN_WAL_BACKEND`.
    WalBackend,
    /// `--backend-batch-interval` (ms).
    BatchInterval,
    /// `--backend-batch-limit`.
    BatchLimit,
    /// `CAIRN_BACKEND_PAGE_SIZE`.
    PageSize,
}

const KNOBS: [Knob; 6] = [
    Knob::WalBatchRecords,
    Knob::WalBatchBytes,
    Knob::WalBackend,
    Knob::BatchInterval,
    Knob::BatchLimit,
    Knob::PageSize,
];

/// WAL backends by their code in a [`Point`].
const BACKENDS: [(BackendChoice, &str); 3] = [
    (BackendChoice::Auto, "auto"),
    (BackendChoice::IoUring, "io_uring"),
    (BackendChoice::Pwrite, "pwrite"),
];

impl Knob {
    fn name(self) -> &'static str {
        match self {
            Knob::WalBatchRecords => "wal-batch-records",
            Knob::WalBatchBytes => "wal-batch-bytes",
            Knob::WalBackend => "wal-backend",
            Knob::BatchInterval => "batch-interval",
            Knob::BatchLimit => "batch-limit",
            Knob::PageSize => "page-size",
        }
    }

    fn in_wal(self) -> bool {
        matches!(
            self,
            Knob::WalBatchRecords | Knob::WalBatchBytes | Knob::WalBackend
        )
    }

    fn show(self, v: u64) -> String {
        match self {
            Knob::WalBackend => BACKENDS[v as usize].1.to_string(),
            Knob::WalBatchBytes if v >= 1 << 20 && v.is_multiple_of(1 << 20) => {
                format!("{} MiB", v >> 20)
            }
            Knob::WalBatchBytes if v >= 1 << 10 && v.is_multiple_of(1 << 10) => {
                format!("{} KiB", v >> 10)
            }
            Knob::BatchInterval => format!("{v} ms"),
            _ => v.to_string(),
        }
    }
}

fn backend_code(b: BackendChoice) -> u64 {
    BACKENDS.iter().position(|(c, _)| *c == b).expect("listed") as u64
}

fn parse_backend(s: &str) -> Result<u64, String> {
    Ok(backend_code(s.parse::<BackendChoice>()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// The MVCC store alone, in process.
    Mvcc,
    /// A one-member raft node, its WAL and the MVCC store, in process.
    RaftMvcc,
    /// The cairn binary, end to end, loaded by `cairn-bench put`.
    Put,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Mvcc => "mvcc",
            Workload::RaftMvcc => "raft-mvcc",
            Workload::Put => "put",
        }
    }

    fn applies(self, k: Knob) -> bool {
        self != Workload::Mvcc || !k.in_wal()
    }
}

#[derive(Args)]
pub struct TuneArgs {
    /// Workloads to measure.
    #[arg(long, value_delimiter = ',', default_value = "mvcc,raft-mvcc,put")]
    workloads: Vec<Workload>,
    /// Knobs to sweep (the others stay at their defaults).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wal-batch-records,wal-batch-bytes,wal-backend,batch-interval,batch-limit,page-size"
    )]
    knobs: Vec<Knob>,
    /// Every combination of the knobs' values, rather than one knob at a
    /// time.
    #[arg(long)]
    grid: bool,
    /// Rounds (each measures every point once); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// WAL: most records per write + fdatasync (default 16384).
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    wal_batch_records: Vec<u64>,
    /// WAL: most bytes per write + fdatasync (default 4 MiB).
    #[arg(long, value_delimiter = ',', default_value = "65536,1048576,16777216")]
    wal_batch_bytes: Vec<u64>,
    /// WAL backends: auto, io_uring, pwrite (default auto, which is pwrite).
    #[arg(long, value_delimiter = ',', default_value = "io_uring,pwrite", value_parser = parse_backend)]
    wal_backend: Vec<u64>,
    /// Backend batch interval, ms (default 100).
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    batch_interval_ms: Vec<u64>,
    /// Backend batch limit, operations (default 10000).
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    batch_limit: Vec<u64>,
    /// Page size of the database file (default 4096).
    #[arg(long, value_delimiter = ',', default_value = "8192,16384")]
    page_size: Vec<u64>,
    /// mvcc: puts per point.
    #[arg(long, default_value_t = 200_000)]
    mvcc_puts: u64,
    /// raft-mvcc: concurrent proposers.
    #[arg(long, default_value_t = 100)]
    proposers: usize,
    /// raft-mvcc: seconds measured per point (after a 1 s warm-up).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// put: concurrent clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// put: gRPC connections.
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// put: requests per point.
    #[arg(long, default_value_t = 20_000)]
    total: u64,
    /// put: the cairn binary (default: next to this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// put: the load generator, run as `LOADER put --endpoints … --json`
    /// (default: this binary).
    #[arg(long)]
    loader: Option<PathBuf>,
    /// Directory for scratch data (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// put: append the server's log of every point to `<log-dir>/cairn.log`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Write every sample and the medians as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TuneArgs {
    fn values(&self, k: Knob) -> &[u64] {
        match k {
            Knob::WalBatchRecords => &self.wal_batch_records,
            Knob::WalBatchBytes => &self.wal_batch_bytes,
            Knob::WalBackend => &self.wal_backend,
            Knob::BatchInterval => &self.batch_interval_ms,
            Knob::BatchLimit => &self.batch_limit,
            Knob::PageSize => &self.page_size,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.rounds > 0, "--rounds must be at least 1");
        for k in [
            Knob::WalBatchRecords,
            Knob::WalBatchBytes,
            Knob::BatchInterval,
            Knob::BatchLimit,
        ] {
            anyhow::ensure!(
                !self.values(k).contains(&0),
                "--{} values must be positive",
                k.name()
            );
        }
        for &ps in &self.page_size {
            anyhow::ensure!(
                u32::try_from(ps).is_ok_and(valid_page_size),
                "--page-size {ps} is not a power of two from 1024 to 65536"
            );
        }
        Ok(())
    }
}

/// One setting of every knob, each as a number (the WAL backend by its
/// index in [`BACKENDS`]), indexed by [`Knob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point([u64; 6]);

impl Point {
    /// The libraries' defaults, which are the server's.
    fn defaults() -> Point {
        let w = WalOptions::default();
        let s = StoreOptions::default();
        Point([
            w.max_batch_records as u64,
            w.max_batch_bytes as u64,
            backend_code(w.backend),
            s.batch_interval.as_millis() as u64,
            s.batch_limit as u64,
            s.db.page_size as u64,
        ])
    }

    fn get(self, k: Knob) -> u64 {
        self.0[k as usize]
    }

    fn with(mut self, k: Knob, v: u64) -> Point {
        self.0[k as usize] = v;
        self
    }

    fn wal(self) -> WalOptions {
        WalOptions {
            max_batch_records: self.get(Knob::WalBatchRecords) as usize,
            max_batch_bytes: self.get(Knob::WalBatchBytes) as usize,
            backend: BACKENDS[self.get(Knob::WalBackend) as usize].0,
            ..WalOptions::default()
        }
    }

    fn store(self) -> StoreOptions {
        let d = StoreOptions::default();
        StoreOptions {
            batch_interval: Duration::from_millis(self.get(Knob::BatchInterval)),
            batch_limit: self.get(Knob::BatchLimit) as usize,
            db: cairn_engine::btree::Options {
                page_size: self.get(Knob::PageSize) as u32,
                ..d.db.clone()
            },
            ..d
        }
    }

    /// The server's environment for this point: every knob set explicitly.
    fn env(self) -> Vec<(String, String)> {
        let v = |k| self.get(k).to_string();
        [
            ("CAIRN_WAL_MAX_BATCH_RECORDS", v(Knob::WalBatchRecords)),
            ("CAIRN_WAL_MAX_BATCH_BYTES", v(Knob::WalBatchBytes)),
            (
                "CAIRN_WAL_BACKEND",
                Knob::WalBackend.show(self.get(Knob::WalBackend)),
            ),
            (
                "ETCD_BACKEND_BATCH_INTERVAL",
                format!("{}ms", v(Knob::BatchInterval)),
            ),
            ("ETCD_BACKEND_BATCH_LIMIT", v(Knob::BatchLimit)),
            ("CAIRN_BACKEND_PAGE_SIZE", v(Knob::PageSize)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `default`, or the knobs that differ from `base` as `name=value`.
    fn label(self, base: Point) -> String {
        let changed: Vec<String> = KNOBS
            .iter()
            .filter(|&&k| self.get(k) != base.get(k))
            .map(|&k| format!("{}={}", k.name(), k.show(self.get(k))))
            .collect();
        if changed.is_empty() {
            "default".into()
        } else {
            changed.join(" ")
        }
    }

    fn json(self, w: Workload) -> Value {
        let mut m = serde_json::Map::new();
        for k in KNOBS.into_iter().filter(|&k| w.applies(k)) {
            let v = match k {
                Knob::WalBackend => json!(k.show(self.get(k))),
                _ => json!(self.get(k)),
            };
            m.insert(k.name().into(), v);
        }
        Value::Object(m)
    }
}

/// The points of `w`: the default first, then one knob at a time or the
/// grid, without repeats. Knobs that do not apply to `w` stay at default.
fn points(a: &TuneArgs, w: Workload) -> Vec<Point> {
    let base = Point::defaults();
    let knobs: Vec<Knob> = KNOBS
        .into_iter()
        .filter(|k| a.knobs.contains(k) && w.applies(*k))
        .collect();
    let mut pts = vec![base];
    for &k in &knobs {
        if a.grid {
            pts = pts
                .iter()
                .flat_map(|p| {
                    std::iter::once(base.get(k))
                        .chain(a.values(k).iter().copied())
                        .map(move |v| p.with(k, v))
                })
                .collect();
        } else {
            pts.extend(a.values(k).iter().map(|&v| base.with(k, v)));
        }
    }
    let mut unique: Vec<Point> = Vec::new();
    for p in pts {
        if !unique.contains(&p) {
            unique.push(p);
        }
    }
    unique
}

/// The three figures every workload yields — at these JSON pointers of its
/// output — with the whole output.
fn sample(detail: Value, [throughput, p50_us, p99_us]: [&str; 3]) -> Value {
    let f = |ptr: &str| detail.pointer(ptr).and_then(Value::as_f64);
    json!({
        "throughput": f(throughput),
        "p50_us": f(p50_us),
        "p99_us": f(p99_us),
        "detail": detail,
    })
}

/// Applies each proposal as a put on the MVCC store: the first 16 bytes
/// pick the key in the key space, the rest is the value.
struct MvccMachine(Store);

/// The 16-byte key number `i` of the key space (random-looking, fixed).
fn key_of(i: u64) -> [u8; KEY_SIZE] {
    let mut r = Rng(i);
    let mut k = [0u8; KEY_SIZE];
    k[..8].copy_from_slice(&r.next().to_be_bytes());
    k[8..].copy_from_slice(&r.next().to_be_bytes());
    k
}

impl StateMachine for MvccMachine {
    type Output = u64;

    fn durable_index(&self) -> u64 {
        self.0.durable_index().index
    }

    fn apply(&mut self, entry: EntryId, data: &[u8]) -> u64 {
        let (head, value) = data.split_at(16);
        let seed = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"))
            ^ u64::from_be_bytes(head[8..].try_into().expect("8 bytes")).rotate_left(32);
        let key = key_of(Rng(seed).next() % KEY_SPACE);
        let id = mvcc::EntryId::new(entry.index, entry.term);
        match self
            .0
            .write(id, WriteRequest::Put(PutRequest::new(key, value)))
        {
            Ok(Applied::Done(out)) => out.response.revision() as u64,
            Ok(Applied::AlreadyApplied) => 0,
            Err(e) => panic!("applying a put: {e}"),
        }
    }

    fn apply_other(&mut self, _entry: EntryId, _change: Option<&MembershipChange>) {}

    fn sync(&mut self) -> Result<u64, String> {
        self.0.flush().map_err(|e| e.to_string())?;
        Ok(self.durable_index())
    }

    fn restore(&mut self, _file: &Path) -> Result<u64, String> {
        Err("the benchmark sends no snapshots".into())
    }
}

struct Runner<'a> {
    a: &'a TuneArgs,
    rt: tokio::runtime::Runtime,
    cairn: PathBuf,
    loader: PathBuf,
}

impl Runner<'_> {
    fn scratch(&self) -> anyhow::Result<tempfile::TempDir> {
        match &self.a.dir {
            Some(d) => tempfile::tempdir_in(d),
            None => tempfile::tempdir(),
        }
        .context("making a scratch directory")
    }

    fn measure(&self, w: Workload, p: Point, round: usize) -> anyhow::Result<Value> {
        match w {
            Workload::Mvcc => self.mvcc(p, round),
            Workload::RaftMvcc => self.raft_mvcc(p),
            Workload::Put => self.put(p),
        }
    }

    fn mvcc(&self, p: Point, round: usize) -> anyhow::Result<Value> {
        let mut m = MvccPutArgs::defaults();
        m.puts = self.a.mvcc_puts;
        m.key_size = KEY_SIZE;
        m.value_size = VALUE_SIZE;
        m.batch_interval_ms = p.get(Knob::BatchInterval);
        m.batch_limit = p.get(Knob::BatchLimit) as usize;
        m.page_size = p.get(Knob::PageSize) as u32;
        m.range_ops = 20_000;
        m.range_seconds = 1.0;
        m.reopen_rounds = 1;
        m.dir = self.a.dir.clone();
        // The same keys and values for every point of a round.
        let v = crate::mvcc::run_cairn(&m, 0x5EED + round as u64)?;
        Ok(sample(
            v,
            ["/puts_per_s", "/put_latency/p50_us", "/put_latency/p99_us"],
        ))
    }

    fn raft_mvcc(&self, p: Point) -> anyhow::Result<Value> {
        let store = p.store();
        let c = raft::start_with(1, self.a.dir.as_deref(), &self.rt, &p.wal(), |d| {
            Ok(MvccMachine(Store::open(d.join("db"), store.clone())?))
        })?;
        let v = raft::leader(&c).and_then(|l| {
            raft::measure(
                &self.rt,
                &l,
                self.a.proposers,
                16 + VALUE_SIZE,
                self.a.seconds,
            )
        });
        c.stop();
        Ok(sample(v?, ["/proposals_per_s", "/p50_us", "/p99_us"]))
    }

    fn put(&self, p: Point) -> anyhow::Result<Value> {
        let tmp = self.scratch()?;
        let log = tmp.path().join("cairn.log");
        let mut server = Server::new("cairn", &self.cairn, tmp.path(), None)?;
        server.log = Some(log.clone());
        server.env = p.env();
        let (running, _, kv) = self.rt.block_on(server.start_ready())?;
        drop(kv);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let out = if text.contains("\"storage tuning\"") {
            Command::new(&self.loader)
                .arg("put")
                .args(["--endpoints", &format!("127.0.0.1:{}", server.client)])
                .args(["--clients", &self.a.clients.to_string()])
                .args(["--conns", &self.a.conns.to_string()])
                .args(["--total", &self.a.total.to_string()])
                .args(["--key-size", &KEY_SIZE.to_string()])
                .args(["--val-size", &VALUE_SIZE.to_string()])
                .args(["--key-space-size", &KEY_SPACE.to_string()])
                .arg("--json")
                .output()
                .with_context(|| format!("running {} put", self.loader.display()))
        } else {
            Err(anyhow::anyhow!(
                "{} does not log its storage tuning: it ignores the CAIRN_* variables (an older build?)",
                self.cairn.display()
            ))
        };
        running.stop()?;
        if let Some(d) = &self.a.log_dir {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join("cairn.log"))?;
            f.write_all(std::fs::read(&log)?.as_slice())?;
        }
        let out = out?;
        anyhow::ensure!(
            out.status.success(),
            "{} put failed ({}): {}",
            self.loader.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "parsing the load generator's JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        let errors = v["errors"].as_u64().unwrap_or(0);
        if errors > 0 {
            eprintln!("  warning: {errors} failed requests");
        }
        Ok(sample(
            v,
            ["/throughput", "/latency_us/p50", "/latency_us/p99"],
        ))
    }

    fn setup(&self, w: Workload) -> String {
        match w {
            Workload::Mvcc => format!(
                "the MVCC store alone, in process: {} puts, {KEY_SIZE}-byte random keys, {VALUE_SIZE}-byte values, one applier; latency per put",
                self.a.mvcc_puts
            ),
            Workload::RaftMvcc => format!(
                "in process: a one-member raft node, its WAL and the MVCC store (no gRPC); {} proposers, {KEY_SIZE}-byte keys over {KEY_SPACE} keys, {VALUE_SIZE}-byte values, {} s after a 1 s warm-up",
                self.a.proposers, self.a.seconds
            ),
            Workload::Put => format!(
                "end to end: {} with a fresh data dir per point, `{} put --clients {} --conns {} --total {} --key-size {KEY_SIZE} --val-size {VALUE_SIZE} --key-space-size {KEY_SPACE}`",
                self.cairn.display(),
                self.loader.display(),
                self.a.clients,
                self.a.conns,
                self.a.total
            ),
        }
    }
}

/// The order of `n` points in round `round` of `rounds`: rotated by a
/// different offset each round and reversed in odd rounds, so that every
/// point takes several positions and none always follows the same one.
fn round_order(n: usize, round: usize, rounds: usize) -> Vec<usize> {
    let offset = round * n / rounds;
    let order = (0..n).map(|i| (i + offset) % n);
    if round.is_multiple_of(2) {
        order.collect()
    } else {
        order.rev().collect()
    }
}

/// The median (the mean of the middle two of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// Medians of one workload's samples, the ratios to the default point, and
/// its table. `samples[i][r]` is point `i` in round `r`; point 0 is the
/// default. A ratio is taken within each round (the point against the
/// default measured in the same pass), then the median over rounds: a
/// busy spell of the machine then weighs on both sides of a ratio.
fn summarize(w: Workload, setup: &str, pts: &[Point], samples: &[Vec<Value>]) -> Value {
    let figures = |i: usize, key: &str| -> Vec<f64> {
        samples[i]
            .iter()
            .map(|s| s[key].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let paired = |i: usize, key: &str| -> f64 {
        let (mine, base) = (figures(i, key), figures(0, key));
        median(mine.iter().zip(&base).map(|(m, b)| m / b).collect())
    };
    let base = Point::defaults();
    let knobs: Vec<Knob> = KNOBS.into_iter().filter(|&k| w.applies(k)).collect();
    println!(
        "\n{} — {setup}; medians of {} round(s); ratios to the default are medians of per-round ratios; * marks a knob off its default",
        w.name(),
        samples[0].len()
    );
    let header: Vec<&str> = knobs.iter().map(|k| k.name()).collect();
    let unit = if w == Workload::RaftMvcc {
        "proposals"
    } else {
        "puts"
    };
    println!(
        "| {} | {unit}/s | min–max | p50 | p99 | vs default | p99 vs default |",
        header.join(" | ")
    );
    println!("|{}", "---|".repeat(knobs.len() + 6));
    let mut rows = Vec::new();
    for (i, p) in pts.iter().enumerate() {
        let thr_all = figures(i, "throughput");
        let lo = thr_all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = thr_all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (thr, p50, p99) = (
            median(thr_all.clone()),
            median(figures(i, "p50_us")),
            median(figures(i, "p99_us")),
        );
        let (thr_ratio, p99_ratio) = (paired(i, "throughput"), paired(i, "p99_us"));
        let cells: Vec<String> = knobs
            .iter()
            .map(|&k| {
                let mark = if p.get(k) == base.get(k) { "" } else { "*" };
                format!("{}{mark}", k.show(p.get(k)))
            })
            .collect();
        println!(
            "| {} | {} | {}–{} | {} | {} | {thr_ratio:.2}× | {p99_ratio:.2}× |",
            cells.join(" | "),
            thousands(thr),
            thousands(lo),
            thousands(hi),
            fmt_us(p50),
            fmt_us(p99),
        );
        rows.push(json!({
            "point": p.label(base),
            "knobs": p.json(w),
            "median": {"throughput": thr, "p50_us": p50, "p99_us": p99},
            "throughput_range": [lo, hi],
            "throughput_vs_default": thr_ratio,
            "p99_vs_default": p99_ratio,
            "samples": samples[i],
        }));
    }
    json!({"workload": w.name(), "setup": setup, "points": rows})
}

pub fn run(a: TuneArgs) -> anyhow::Result<()> {
    a.check()?;
    let exe = std::env::current_exe()?;
    let runner = Runner {
        a: &a,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        cairn: a
            .cairn
            .clone()
            .unwrap_or_else(|| exe.with_file_name("cairn")),
        loader: a.loader.clone().unwrap_or(exe),
    };
    let mut results = Vec::new();
    for &w in &a.workloads {
        let skipped: Vec<&str> = a
            .knobs
            .iter()
            .filter(|k| !w.applies(**k))
            .map(|k| k.name())
            .collect();
        if !skipped.is_empty() {
            eprintln!(
                "{}: the store alone has no WAL; {} left out",
                w.name(),
                skipped.join(", ")
            );
        }
        let pts = points(&a, w);
        if pts.len() == 1 && !a.knobs.is_empty() && skipped.len() == a.knobs.len() {
            eprintln!("{}: no knob to sweep; skipped", w.name());
            continue;
        }
        eprintln!("{}: {} points × {} rounds", w.name(), pts.len(), a.rounds);
        // A first run in a fresh process pays for page faults and cold
        // caches: one run of the default point, discarded.
        runner
            .measure(w, pts[0], 0)
            .with_context(|| format!("{} warm-up", w.name()))?;
        let mut samples = vec![Vec::new(); pts.len()];
        for round in 0..a.rounds {
            for i in round_order(pts.len(), round, a.rounds) {
                let s = runner
                    .measure(w, pts[i], round)
                    .with_context(|| format!("{} at {}", w.name(), pts[i].label(pts[0])))?;
                eprintln!(
                    "  [{} round {}/{}] {}: {}/s, p50 {}, p99 {}",
                    w.name(),
                    round + 1,
                    a.rounds,
                    pts[i].label(pts[0]),
                    thousands(s["throughput"].as_f64().unwrap_or(f64::NAN)),
                    fmt_us(s["p50_us"].as_f64().unwrap_or(f64::NAN)),
                    fmt_us(s["p99_us"].as_f64().unwrap_or(f64::NAN)),
                );
                samples[i].push(s);
            }
        }
        let mut r = summarize(w, &runner.setup(w), &pts, &samples);
        r["knobs_left_out"] = json!(skipped);
        results.push(r);
    }
    if let Some(path) = &a.out {
        let doc = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
            "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "rounds": a.rounds,
            "grid": a.grid,
            "workloads": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
