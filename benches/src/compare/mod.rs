//! `cairn-bench compare`: one load workload against two servers A and B, in
//! alternating rounds, with per-side medians and A/B ratios.
//!
//! Each round runs the workload once on each side — A then B in odd
//! rounds, B then A in even ones, so that neither side always runs second —
//! each run preceded by a short warm-up on the same side (the same workload
//! for `--warmup`, results discarded). Medians are taken over the rounds per
//! figure (throughput, p50, p90, p99, p99.9, max).
//!
//! With `--start`, the harness starts both servers itself — A = `cairn`,
//! B = etcd — on free 127.0.0.1 ports, each with a fresh data directory
//! under `--dir` and the same flags (etcd's defaults, fsync on); both run
//! for the whole comparison: fresh per side, reused across rounds (the
//! second round finds the first round's keys). `--memory` then reports each
//! one's resident memory after the last round.

mod plot;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::load::{self, LoadCommand, LoadSpec, Stop, Summary};
use crate::servers::{Running, Server};

#[derive(Args)]
pub struct CompareArgs {
    /// Side A's endpoints, comma-separated.
    #[arg(long, value_delimiter = ',')]
    a: Option<Vec<String>>,
    /// Side B's endpoints, comma-separated.
    #[arg(long, value_delimiter = ',')]
    b: Option<Vec<String>>,
    /// Side A's name in the report [default: A, or cairn with --start].
    #[arg(long)]
    a_name: Option<String>,
    /// Side B's name in the report [default: B, or etcd with --start].
    #[arg(long)]
    b_name: Option<String>,
    /// Measured rounds (each runs A and B once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Warm-up before each measured run (`0` for none).
    #[arg(long, default_value = "1s", value_parser = load::cli::parse_duration)]
    warmup: Duration,
    /// Start both servers: A = cairn, B = etcd.
    #[arg(long)]
    start: bool,
    /// The cairn binary for --start [default: `cairn` next to this binary].
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// The etcd binary for --start.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Where --start puts the data directories [default: the temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the started servers' logs to `<log-dir>/{cairn,etcd}.log`.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Resident memory (VmRSS) of each started server after the last round.
    #[arg(long)]
    memory: bool,
    /// Draw both sides' latency distributions to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print one JSON object instead of the Markdown table.
    #[arg(long)]
    json: bool,
    /// Instead of one workload, perf.md's whole table: put at 1/16/100/1000
    /// clients, range (l and s) at 1/100/1000, txn-put (4 ops) at 100;
    /// one summary row per workload, then each workload's own table.
    #[arg(long, conflicts_with = "plot")]
    suite: bool,
    /// How long each suite run lasts.
    #[arg(long, default_value = "5s", value_parser = load::cli::parse_duration)]
    suite_duration: Duration,
    /// With --suite and --memory: keys loaded (16-byte keys, 256-byte
    /// values) before resident memory is read.
    #[arg(long, default_value_t = 1_000_000)]
    memory_keys: u64,
    /// The workload and its flags (--endpoints is taken from --a / --b).
    #[command(subcommand)]
    workload: Option<LoadCommand>,
}

/// perf.md's workloads, as `cairn-bench` command lines (after the name, the
/// duration is added).
const SUITE: &[&str] = &[
    "put --clients 1 --conns 1",
    "put --clients 16 --conns 4",
    "put --clients 100 --conns 10",
    "put --clients 1000 --conns 100",
    "range --consistency l --clients 1 --conns 1",
    "range --consistency l --clients 100 --conns 10",
    "range --consistency l --clients 1000 --conns 100",
    "range --consistency s --clients 1 --conns 1",
    "range --consistency s --clients 100 --conns 10",
    "range --consistency s --clients 1000 --conns 100",
    "txn-put --txn-ops 4 --clients 100 --conns 10",
];

/// perf.md's key and value shape, shared by every suite workload.
const SUITE_SHAPE: &str = "--key-size 16 --val-size 256 --key-space-size 100000";

#[derive(clap::Parser)]
struct OneWorkload {
    #[command(subcommand)]
    workload: LoadCommand,
}

/// A workload from its command line (as typed after `cairn-bench`).
fn parse_workload(line: &str) -> anyhow::Result<LoadCommand> {
    use clap::Parser;
    let args = std::iter::once("cairn-bench").chain(line.split_whitespace());
    Ok(OneWorkload::try_parse_from(args)?.workload)
}

/// One side's runs.
pub struct Side {
    pub name: String,
    pub endpoints: Vec<String>,
    pub runs: Vec<Summary>,
    /// Resident memory in KiB after the last round (`--start --memory`).
    pub rss_kib: Option<u64>,
}

pub fn run(a: CompareArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        if a.start {
            a.a.is_none() && a.b.is_none()
        } else {
            a.a.is_some() && a.b.is_some()
        },
        "compare needs both --a and --b, or --start (which starts both sides)"
    );
    anyhow::ensure!(
        a.suite != a.workload.is_some(),
        "compare runs one workload (given after the flags) or --suite"
    );
    anyhow::ensure!(
        a.workload
            .as_ref()
            .is_none_or(|w| w.common().endpoints.is_none()),
        "compare takes the endpoints from --a and --b (or --start), not --endpoints"
    );
    anyhow::ensure!(
        a.cairn.is_none() && a.log_dir.is_none() || a.start,
        "--cairn and --log-dir go with --start"
    );
    anyhow::ensure!(
        !a.memory || a.start,
        "--memory reports servers the harness started: use it with --start"
    );
    let rt = load::cli::runtime()?;
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let mut servers: Vec<Running> = Vec::new();
    let (a_eps, b_eps) = if a.start {
        let cairn = match &a.cairn {
            Some(p) => p.clone(),
            None => std::env::current_exe()?.with_file_name("cairn"),
        };
        let mut urls = Vec::new();
        for (name, bin) in [("cairn", &cairn), ("etcd", &a.etcd)] {
            let s = Server::new(name, bin, tmp.path(), a.log_dir.as_deref())?;
            let (running, ready, _) = rt.block_on(s.start_ready())?;
            eprintln!(
                "{name}: {} started on {} (pid {}), ready in {:.0} ms",
                bin.display(),
                s.client_url(),
                running.pid(),
                ready.as_secs_f64() * 1e3
            );
            servers.push(running);
            urls.push(vec![s.client_url()]);
        }
        let b = urls.pop().expect("two servers");
        (urls.pop().expect("two servers"), b)
    } else {
        (
            a.a.clone().unwrap_or_default(),
            a.b.clone().unwrap_or_default(),
        )
    };
    let default_names = if a.start {
        ["cairn", "etcd"]
    } else {
        ["A", "B"]
    };
    let names = [
        a.a_name.clone().unwrap_or(default_names[0].into()),
        a.b_name.clone().unwrap_or(default_names[1].into()),
    ];
    let new_sides = || {
        [
            Side {
                name: names[0].clone(),
                endpoints: a_eps.clone(),
                runs: Vec::new(),
                rss_kib: None,
            },
            Side {
                name: names[1].clone(),
                endpoints: b_eps.clone(),
                runs: Vec::new(),
                rss_kib: None,
            },
        ]
    };

    if a.suite {
        let mut results = Vec::new();
        for line in SUITE {
            let w = parse_workload(&format!(
                "{line} {SUITE_SHAPE} --duration {}ms",
                a.suite_duration.as_millis()
            ))?;
            let mut spec = w.spec()?;
            eprintln!("== {line}");
            let mut sides = new_sides();
            rounds(&rt, &a, &mut spec, &mut sides)?;
            results.push((line.to_string(), spec, sides));
        }
        let mut rss = None;
        if a.memory {
            // Resident memory after the key count perf.md names, loaded by
            // the same put workload with sequential keys on both sides.
            let w = parse_workload(&format!(
                "put --clients 100 --conns 10 --sequential-keys --key-size 16 --val-size 256 \
                 --key-space-size {n} --total {n}",
                n = a.memory_keys
            ))?;
            let mut spec = w.spec()?;
            eprintln!("== loading {} keys on each side", a.memory_keys);
            let mut sides = new_sides();
            for (side, server) in sides.iter_mut().zip(&servers) {
                spec.endpoints = side.endpoints.clone();
                let s = rt.block_on(load::run(&spec))?;
                anyhow::ensure!(s.errors == 0, "{} errors loading {}", s.errors, side.name);
                side.rss_kib = Some(server.rss_kib()?);
            }
            rss = Some((sides[0].rss_kib, sides[1].rss_kib));
        }
        for s in servers {
            s.stop()?;
        }
        if a.json {
            let v: Vec<serde_json::Value> = results
                .iter()
                .map(|(line, spec, sides)| {
                    serde_json::json!({"workload": line, "result": table::to_json(spec, sides)})
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({
                    "suite": v,
                    "memory_keys": a.memory.then_some(a.memory_keys),
                    "rss_kib": rss.map(|(x, y)| [x, y]),
                })
            );
        } else {
            print!(
                "{}",
                table::suite_markdown(&results, &names, rss.map(|r| (a.memory_keys, r)))
            );
            // Then each workload's own table, with every figure.
            for (line, spec, sides) in &results {
                print!("\n`{line}`:\n\n{}", table::markdown(spec, sides));
            }
        }
        return Ok(());
    }

    let mut spec = a.workload.as_ref().expect("checked above").spec()?;
    let mut sides = new_sides();
    rounds(&rt, &a, &mut spec, &mut sides)?;
    if a.memory {
        for (side, server) in sides.iter_mut().zip(&servers) {
            side.rss_kib = Some(server.rss_kib()?);
        }
    }
    for s in servers {
        s.stop()?;
    }

    if let Some(path) = &a.plot {
        plot::draw(path, &spec, &sides)?;
        eprintln!("latency distributions drawn to {}", path.display());
    }
    if a.json {
        println!("{}", table::to_json(&spec, &sides));
    } else {
        print!("{}", table::markdown(&spec, &sides));
    }
    Ok(())
}

/// The alternating rounds of one workload on both sides.
fn rounds(
    rt: &tokio::runtime::Runtime,
    a: &CompareArgs,
    spec: &mut LoadSpec,
    sides: &mut [Side; 2],
) -> anyhow::Result<()> {
    for round in 0..a.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &mut sides[i];
            spec.endpoints = side.endpoints.clone();
            if !a.warmup.is_zero() {
                let warm = LoadSpec {
                    stop: Stop::Duration(a.warmup),
                    progress: false,
                    ..spec.clone()
                };
                rt.block_on(load::run(&warm))?;
            }
            let s = rt.block_on(load::run(spec))?;
            eprintln!(
                "round {}/{} {}: {:.0}/s, p99 {}, {} errors",
                round + 1,
                a.rounds,
                side.name,
                s.throughput(),
                s.latency_figures()
                    .map_or("-".into(), |l| table::micros(l.p99)),
                s.errors
            );
            side.runs.push(s);
        }
    }
    Ok(())
}
