//! `cairn-bench mvcc-put`: the MVCC store alone, in process — the equivalent
//! of etcd's `tools/benchmark mvcc put` — plus single-key reads at head and
//! at an old revision, and the time to reopen the store (B+tree open and
//! key-index rebuild).
//!
//! With `--etcd-bench PATH` (the Go program in `benches/etcd-mvcc/`, built
//! against etcd 3.4's own `mvcc` package), every round runs etcd's store under
//! the same workload too, alternating which goes first, and the figures are
//! medians over rounds with the cairn/etcd ratio. Both sides print the same
//! JSON schema.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_engine::mvcc::{EntryId, PutRequest, RangeRequest, Store, StoreOptions, WriteRequest};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::rng::Rng;

#[derive(Args, Clone)]
pub struct MvccPutArgs {
    /// Puts (one per log entry, one applier thread).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) puts: u64,
    /// Bytes per key; keys are random over the whole key space.
    #[arg(long, default_value_t = 16)]
    pub(crate) key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub(crate) value_size: usize,
    /// Longest time a change waits before its batch is committed (ms).
    #[arg(long, default_value_t = 100)]
    pub(crate) batch_interval_ms: u64,
    /// Operations after which a batch is committed at once.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) batch_limit: usize,
    /// Page size of the database file (a power of two, 1024 to 65536).
    #[arg(long, default_value_t = 4096)]
    pub(crate) page_size: u32,
    /// Single-key ranges per read measurement (at head, at the old revision).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) range_ops: u64,
    /// Longest time per read measurement (it stops at --range-ops or this).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) range_seconds: f64,
    /// The old revision read is the one after this share of the puts; keys
    /// read at it are drawn from those put by then.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) old_fraction: f64,
    /// Times the store is closed and reopened (median reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) reopen_rounds: usize,
    /// Rounds; each builds a fresh store (and runs etcd's, with
    /// --etcd-bench). Figures are medians over rounds.
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
    /// The etcd side: a binary built from benches/etcd-mvcc (see its README).
    #[arg(long)]
    pub(crate) etcd_bench: Option<PathBuf>,
    /// Have the etcd program hand every put's timing through the two
    /// buffered channels and goroutines of etcd's benchmark tool (its
    /// `-tool-report`), as `tools/benchmark mvcc put` measures; without it,
    /// the etcd store is timed as bare as cairn's.
    #[arg(long)]
    pub(crate) etcd_tool_report: bool,
    /// Directory for the database files (default: the system temp dir).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

impl MvccPutArgs {
    /// The command's defaults, as `cairn-bench mvcc-put` with no flags.
    pub(crate) fn defaults() -> MvccPutArgs {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: MvccPutArgs,
        }
        <Defaults as clap::Parser>::parse_from(["mvcc-put"]).args
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

fn latency(h: &Histogram<u64>) -> Value {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "mean_us": h.mean() / 1000.0,
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": h.max() as f64 / 1000.0,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` random keys of `size` bytes, back to back.
struct Keys {
    flat: Vec<u8>,
    size: usize,
}

impl Keys {
    fn random(n: u64, size: usize, rng: &mut Rng) -> Keys {
        let mut flat = vec![0u8; n as usize * size];
        for chunk in flat.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        Keys { flat, size }
    }

    fn get(&self, i: u64) -> &[u8] {
        let at = i as usize * self.size;
        &self.flat[at..at + self.size]
    }
}

/// Single-key ranges of random keys among the first `among`, at `rev` (0:
/// head), `ops` of them or for at most `limit`.
fn ranges(
    store: &Store,
    keys: &Keys,
    among: u64,
    rev: i64,
    (ops, limit): (u64, Duration),
    rng: &mut Rng,
) -> anyhow::Result<Value> {
    let mut h = hist();
    let start = Instant::now();
    let mut done = 0;
    while done < ops && (done % 256 != 0 || start.elapsed() < limit) {
        done += 1;
        let k = keys.get(rng.next() % among);
        let req = RangeRequest {
            revision: rev,
            ..RangeRequest::key(k)
        };
        let t = Instant::now();
        let r = store.range(&req)?;
        h.record(t.elapsed().as_nanos() as u64)?;
        anyhow::ensure!(r.kvs.len() == 1, "range at {rev}: {} kvs", r.kvs.len());
    }
    let secs = start.elapsed().as_secs_f64();
    let mut v = latency(&h);
    v["ops"] = json!(done);
    v["ops_per_s"] = json!(done as f64 / secs);
    v["revision"] = json!(rev);
    Ok(v)
}

/// One round on cairn's store, in the schema the etcd program prints.
pub(crate) fn run_cairn(args: &MvccPutArgs, seed: u64) -> anyhow::Result<Value> {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("making a scratch directory")?;
    let path = tmp.path().join("db");
    let opts = StoreOptions {
        batch_interval: Duration::from_millis(args.batch_interval_ms),
        batch_limit: args.batch_limit,
        db: cairn_engine::btree::Options {
            page_size: args.page_size,
            ..Default::default()
        },
        ..StoreOptions::default()
    };
    let n = args.puts;
    let mut rng = Rng(seed);
    let keys = Keys::random(n, args.key_size, &mut rng);
    // Random values, taken at random offsets of a 1 MiB random pool.
    let pool: Vec<u8> = (0..((1 << 20) + args.value_size).div_ceil(8))
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let old_n = ((args.old_fraction * n as f64) as u64).clamp(1, n);

    let store = Store::open(&path, opts.clone()).context("opening the store")?;
    let mut h = hist();
    let mut old_rev = 0;
    let start = Instant::now();
    for i in 0..n {
        let off = (rng.next() % (1 << 20)) as usize;
        let req = WriteRequest::Put(PutRequest::new(
            keys.get(i),
            &pool[off..off + args.value_size],
        ));
        let t = Instant::now();
        let out = store.write(EntryId::new(i + 1, 1), req)?.unwrap();
        let rev = out.response.revision();
        drop(out);
        h.record(t.elapsed().as_nanos() as u64)?;
        if i + 1 == old_n {
            old_rev = rev;
        }
    }
    let put_secs = start.elapsed().as_secs_f64();
    let t = Instant::now();
    store.flush()?;
    let flush_secs = t.elapsed().as_secs_f64();

    let head_rev = store.current_revision();
    let bound = (args.range_ops, Duration::from_secs_f64(args.range_seconds));
    let head = ranges(&store, &keys, n, 0, bound, &mut rng)?;
    let old = ranges(&store, &keys, old_n, old_rev, bound, &mut rng)?;
    store.close()?;

    let mut reopen = Vec::new();
    for _ in 0..args.reopen_rounds {
        let t = Instant::now();
        let s = Store::open(&path, opts.clone())?;
        reopen.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            s.current_revision() == head_rev,
            "reopened at revision {}, want {head_rev}",
            s.current_revision()
        );
        s.close()?;
    }
    let file = std::fs::metadata(&path)?.len();
    Ok(json!({
        "engine": "cairn-mvcc",
        "puts": n,
        "key_size": args.key_size,
        "value_size": args.value_size,
        "batch_interval_ms": args.batch_interval_ms,
        "batch_limit": args.batch_limit,
        "page_size": args.page_size,
        "put_seconds": put_secs,
        "puts_per_s": n as f64 / put_secs,
        "flush_seconds": flush_secs,
        "puts_per_s_with_flush": n as f64 / (put_secs + flush_secs),
        "put_latency": latency(&h),
        "head_revision": head_rev,
        "range_head": head,
        "range_old": old,
        "reopen_ms": reopen,
        "reopen_ms_median": median(reopen.clone()),
        "db_file_bytes": file,
    }))
}

/// One round of etcd's store: the Go program, same workload.
fn run_etcd(bin: &Path, args: &MvccPutArgs) -> anyhow::Result<Value> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-total={}", args.puts))
        .arg(format!("-key-size={}", args.key_size))
        .arg(format!("-value-size={}", args.value_size))
        .arg(format!("-batch-interval={}", args.batch_interval_ms))
        .arg(format!("-batch-limit={}", args.batch_limit))
        .arg(format!("-range-ops={}", args.range_ops))
        .arg(format!("-range-seconds={}", args.range_seconds))
        .arg(format!("-old-fraction={}", args.old_fraction))
        .arg(format!("-reopen-rounds={}", args.reopen_rounds))
        .arg(format!("-tool-report={}", args.etcd_tool_report))
        .arg("-json");
    if let Some(d) = &args.dir {
        cmd.arg(format!("-dir={}", d.display()));
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        bin.display(),
        out.status
    );
    serde_json::from_slice(&out.stdout).context("parsing the etcd program's JSON")
}

/// Rows of the summary: label, JSON pointer on cairn's side and on etcd's,
/// whether more is better, scale.
type Row = (&'static str, &'static str, &'static str, bool, f64);

const ROWS: &[Row] = &[
    ("puts/s", "/puts_per_s", "/puts_per_s", true, 1.0),
    (
        "puts/s incl. final flush",
        "/puts_per_s_with_flush",
        "/puts_per_s_with_flush",
        true,
        1.0,
    ),
    ("put phase (s)", "/put_seconds", "/put_seconds", false, 1.0),
    (
        "final flush (ms)",
        "/flush_seconds",
        "/flush_seconds",
        false,
        1e3,
    ),
    (
        "put latency mean (us)",
        "/put_latency/mean_us",
        "/put_latency/mean_us",
        false,
        1.0,
    ),
    (
        "put latency p50 (us)",
        "/put_latency/p50_us",
        "/put_latency/p50_us",
        false,
        1.0,
    ),
    (
        "put latency p99 (us)",
        "/put_latency/p99_us",
        "/put_latency/p99_us",
        false,
        1.0,
    ),
    (
        "put latency p99.9 (us)",
        "/put_latency/p999_us",
        "/put_latency/p999_us",
        false,
        1.0,
    ),
    (
        "put latency max (us)",
        "/put_latency/max_us",
        "/put_latency/max_us",
        false,
        1.0,
    ),
    (
        "range at head (ops/s)",
        "/range_head/ops_per_s",
        "/range_head/ops_per_s",
        true,
        1.0,
    ),
    (
        "range at head p50 (us)",
        "/range_head/p50_us",
        "/range_head/p50_us",
        false,
        1.0,
    ),
    (
        "range at head p99 (us)",
        "/range_head/p99_us",
        "/range_head/p99_us",
        false,
        1.0,
    ),
    (
        "range at old rev (ops/s)",
        "/range_old/ops_per_s",
        "/range_old/ops_per_s",
        true,
        1.0,
    ),
    (
        "range at old rev p50 (us)",
        "/range_old/p50_us",
        "/range_old/p50_us",
        false,
        1.0,
    ),
    (
        "range at old rev p99 (us)",
        "/range_old/p99_us",
        "/range_old/p99_us",
        false,
        1.0,
    ),
    // etcd 3.4 copies its whole write-back read buffer into every read (after
    // the puts, ~13,000 entries); the etcd program reads again after two
    // empty commits have dropped it: etcd's best case.
    (
        "range at head, etcd read buffer empty (ops/s)",
        "/range_head/ops_per_s",
        "/range_head_settled/ops_per_s",
        true,
        1.0,
    ),
    (
        "range at head, etcd read buffer empty p99 (us)",
        "/range_head/p99_us",
        "/range_head_settled/p99_us",
        false,
        1.0,
    ),
    (
        "range at old rev, etcd read buffer empty (ops/s)",
        "/range_old/ops_per_s",
        "/range_old_settled/ops_per_s",
        true,
        1.0,
    ),
    (
        "reopen: open + index rebuild (ms)",
        "/reopen_ms_median",
        "/reopen_ms_median",
        false,
        1.0,
    ),
    (
        "database file (MiB)",
        "/db_file_bytes",
        "/db_file_bytes",
        false,
        1.0 / 1048576.0,
    ),
];

/// Medians over rounds, by row label, in the label's unit.
fn medians(samples: &[Value], cairn_side: bool) -> Value {
    let mut m = serde_json::Map::new();
    for &(label, cp, ep, _, scale) in ROWS {
        let ptr = if cairn_side { cp } else { ep };
        let v: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.pointer(ptr).and_then(Value::as_f64))
            .collect();
        if !v.is_empty() {
            m.insert(label.into(), json!(median(v) * scale));
        }
    }
    Value::Object(m)
}

fn summary_line(side: &str, v: &Value) -> String {
    let f = |p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    format!(
        "  {side:<6} {:>9.0} puts/s (flush {:.0} ms), put p50/p99 {:.2}/{:.2} us, range head {:.0}/s, old {:.0}/s, reopen {:.0} ms",
        f("/puts_per_s"),
        f("/flush_seconds") * 1e3,
        f("/put_latency/p50_us"),
        f("/put_latency/p99_us"),
        f("/range_head/ops_per_s"),
        f("/range_old/ops_per_s"),
        f("/reopen_ms_median"),
    )
}

pub fn run(args: MvccPutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.puts > 0 && args.rounds > 0, "need puts and rounds");
    let mut cairn = Vec::new();
    let mut etcd = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        // Alternate which side goes first.
        let etcd_first = round % 2 == 1;
        if let (true, Some(bin)) = (etcd_first, &args.etcd_bench) {
            etcd.push(run_etcd(bin, &args)?);
            eprintln!("{}", summary_line("etcd", etcd.last().expect("pushed")));
        }
        cairn.push(run_cairn(&args, 0x5EED + round as u64)?);
        eprintln!("{}", summary_line("cairn", cairn.last().expect("pushed")));
        if let (false, Some(bin)) = (etcd_first, &args.etcd_bench) {
            etcd.push(run_etcd(bin, &args)?);
            eprintln!("{}", summary_line("etcd", etcd.last().expect("pushed")));
        }
    }
    let mc = medians(&cairn, true);
    let me = (!etcd.is_empty()).then(|| medians(&etcd, false));
    let get = |m: &Value, label: &str| m.get(label).and_then(Value::as_f64).unwrap_or(f64::NAN);
    if args.json {
        let mut ratio = serde_json::Map::new();
        if let Some(me) = &me {
            for &(label, _, _, more_better, _) in ROWS {
                let (c, e) = (get(&mc, label), get(me, label));
                let better = if more_better { c / e } else { e / c };
                ratio.insert(label.into(), json!(better));
            }
        }
        println!(
            "{}",
            json!({
                "rounds": args.rounds,
                "etcd_tool_report": args.etcd_tool_report,
                "cairn": cairn, "etcd": etcd,
                "median": {"cairn": mc, "etcd": me},
                "cairn_better_by": ratio,
            })
        );
        return Ok(());
    }
    println!(
        "mvcc-put: {} puts, {}-byte random keys, {}-byte values, batch {} ms / {} ops; medians of {} round(s)",
        args.puts,
        args.key_size,
        args.value_size,
        args.batch_interval_ms,
        args.batch_limit,
        args.rounds
    );
    match &me {
        Some(me) => {
            println!(
                "{:<50} {:>12} {:>12} {:>16}",
                "", "cairn", "etcd 3.4", "cairn better by"
            );
            for &(label, _, _, more_better, _) in ROWS {
                let (c, e) = (get(&mc, label), get(me, label));
                let better = if more_better { c / e } else { e / c };
                println!("{label:<50} {c:>12.2} {e:>12.2} {better:>15.2}x");
            }
        }
        None => {
            // The etcd-only rows repeat cairn's figures; skip them alone.
            for &(label, ..) in ROWS.iter().filter(|r| r.1 == r.2) {
                println!("{label:<50} {:>12.2}", get(&mc, label));
            }
        }
    }
    Ok(())
}
