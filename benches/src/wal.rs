//! `cairn-bench wal`: sweeps WAL settings on durable appends.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_wal::{BackendChoice, Record, Wal, WalOptions};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Args)]
pub struct WalArgs {
    /// Backends to compare.
    #[arg(long, value_delimiter = ',', default_value = "io_uring,pwrite")]
    backend: Vec<BackendChoice>,
    /// Concurrent appender counts to run.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    appenders: Vec<usize>,
    /// Appenders as OS threads (blocking waits) or as async tasks.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "threads")]
    mode: Vec<Mode>,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 256)]
    record_size: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds; each round runs every configuration once, figures are medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// WAL batch byte limits to sweep.
    #[arg(long, value_delimiter = ',', default_value = "4194304")]
    max_batch_bytes: Vec<usize>,
    /// WAL batch record limits to sweep.
    #[arg(long, value_delimiter = ',', default_value = "16384")]
    max_batch_records: Vec<usize>,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
    /// Directory on the disk to measure (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Threads,
    Tasks,
}

#[derive(Clone, Debug)]
struct Config {
    backend: BackendChoice,
    appenders: usize,
    mode: Mode,
    max_batch_bytes: usize,
    max_batch_records: usize,
}

impl Config {
    fn label(&self) -> String {
        let backend = match self.backend {
            BackendChoice::IoUring => "io_uring",
            BackendChoice::Pwrite => "pwrite",
            BackendChoice::Auto => "auto",
        };
        let mode = match self.mode {
            Mode::Threads => "threads",
            Mode::Tasks => "tasks",
        };
        format!(
            "wal {backend} {mode}={} batch<={}B/{}rec",
            self.appenders, self.max_batch_bytes, self.max_batch_records
        )
    }
}

/// One measurement.
#[derive(Clone, Debug, Default)]
struct Sample {
    records: u64,
    fsyncs: u64,
    secs: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl Sample {
    fn from_hist(h: &Histogram<u64>, records: u64, fsyncs: u64, secs: f64) -> Self {
        Sample {
            records,
            fsyncs,
            secs,
            mean_us: h.mean() / 1000.0,
            p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            p999_us: h.value_at_quantile(0.999) as f64 / 1000.0,
        }
    }
    fn rate(&self) -> f64 {
        self.records as f64 / self.secs
    }
    fn fsync_rate(&self) -> f64 {
        self.fsyncs as f64 / self.secs
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(args: WalArgs) -> anyhow::Result<()> {
    let base = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("making a scratch directory")?;
    let duration = Duration::from_secs_f64(args.seconds);
    let mut configs = Vec::new();
    for &backend in &args.backend {
        for &mode in &args.mode {
            for &appenders in &args.appenders {
                for &max_batch_bytes in &args.max_batch_bytes {
                    for &max_batch_records in &args.max_batch_records {
                        configs.push(Config {
                            backend,
                            appenders,
                            mode,
                            max_batch_bytes,
                            max_batch_records,
                        });
                    }
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let mut bare = Vec::new();
    let mut bare_pre = Vec::new();
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        bare.push(run_bare(base.path(), args.record_size, duration, false)?);
        bare_pre.push(run_bare(base.path(), args.record_size, duration, true)?);
        for (i, c) in configs.iter().enumerate() {
            let dir = base.path().join(format!("r{round}-c{i}"));
            let s = run_wal(&rt, &dir, c, &args, duration)?;
            std::fs::remove_dir_all(&dir).ok();
            results[i].push(s);
        }
    }
    let bare_mean = median(bare.iter().map(|s| s.mean_us).collect());
    let pre_mean = median(bare_pre.iter().map(|s| s.mean_us).collect());
    let row = |label: &str, samples: &[Sample]| {
        let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
        (
            label.to_string(),
            m(Sample::rate),
            m(Sample::fsync_rate),
            m(|s| s.records as f64 / s.fsyncs.max(1) as f64),
            m(|s| s.mean_us),
            m(|s| s.p50_us),
            m(|s| s.p99_us),
            m(|s| s.p999_us),
        )
    };
    let mut rows = vec![
        row(
            &format!("bare append+fdatasync {}B", args.record_size),
            &bare,
        ),
        row(
            &format!("bare prealloc write+fdatasync {}B", args.record_size),
            &bare_pre,
        ),
    ];
    for (c, s) in configs.iter().zip(&results) {
        rows.push(row(&c.label(), s));
    }
    if args.json {
        for r in &rows {
            println!(
                "{}",
                json!({
                    "config": r.0, "records_per_s": r.1, "fsyncs_per_s": r.2, "records_per_fsync": r.3,
                    "mean_us": r.4, "p50_us": r.5, "p99_us": r.6, "p999_us": r.7,
                    "mean_vs_bare_append": r.4 / bare_mean, "mean_vs_bare_prealloc": r.4 / pre_mean,
                    "rounds": args.rounds, "seconds": args.seconds, "record_size": args.record_size,
                })
            );
        }
    } else {
        println!(
            "{:<50} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "configuration (medians of rounds)",
            "records/s",
            "fsyncs/s",
            "rec/fsync",
            "mean us",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "vs append",
            "vs prealloc"
        );
        for r in &rows {
            println!(
                "{:<50} {:>10.0} {:>9.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.2}x {:>8.2}x",
                r.0,
                r.1,
                r.2,
                r.3,
                r.4,
                r.5,
                r.6,
                r.7,
                r.4 / bare_mean,
                r.4 / pre_mean
            );
        }
    }
    Ok(())
}

/// One thread writing `size`-byte records one after another, each followed by
/// fdatasync: what durability costs without any WAL. `preallocated`: into a
/// file reserved with fallocate beforehand (as WAL segments are), else
/// appending to a growing file.
fn run_bare(
    dir: &std::path::Path,
    size: usize,
    duration: Duration,
    preallocated: bool,
) -> anyhow::Result<Sample> {
    let path = dir.join("bare.log");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let space = 256u64 << 20;
    if preallocated {
        cairn_wal::segment::preallocate(&f, space)?;
        f.sync_all()?;
    }
    let rec = vec![0xabu8; size];
    let mut h = hist();
    let start = Instant::now();
    let (mut n, mut offset) = (0u64, 0u64);
    while start.elapsed() < duration {
        let t = Instant::now();
        if preallocated && offset + size as u64 > space {
            offset = 0;
        }
        f.write_all_at(&rec, offset)?;
        offset += size as u64;
        f.sync_data()?;
        h.record(t.elapsed().as_nanos() as u64)?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(Sample::from_hist(&h, n, n, secs))
}

struct Log {
    wal: Wal,
    next: Mutex<u64>,
    payload: Vec<u8>,
}

impl Log {
    /// Index allocation and submission in log order; the wait is the caller's.
    fn submit(&self) -> cairn_wal::Ticket {
        let mut next = self.next.lock().expect("index lock");
        let t = self
            .wal
            .submit(vec![Record::entry(*next, 1, self.payload.clone())])
            .expect("submit");
        *next += 1;
        t
    }
}

fn run_wal(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
    c: &Config,
    args: &WalArgs,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let opts = WalOptions {
        segment_size: args.segment_size,
        max_batch_bytes: c.max_batch_bytes,
        max_batch_records: c.max_batch_records,
        backend: c.backend,
        min_segments: 2,
        ..WalOptions::default()
    };
    let wal = Wal::create(dir, opts, b"bench").with_context(|| c.label())?;
    let log = Arc::new(Log {
        wal,
        next: Mutex::new(1),
        payload: vec![0xab; args.record_size],
    });
    let merged = Arc::new(Mutex::new(hist()));
    let before = log.wal.metrics();
    let start = match c.mode {
        Mode::Threads => {
            let barrier = Arc::new(Barrier::new(c.appenders + 1));
            let threads: Vec<_> = (0..c.appenders)
                .map(|_| {
                    let (log, barrier, merged) = (log.clone(), barrier.clone(), merged.clone());
                    std::thread::spawn(move || {
                        let mut h = hist();
                        barrier.wait();
                        let start = Instant::now();
                        while start.elapsed() < duration {
                            let t = Instant::now();
                            log.submit().wait().expect("append");
                            h.record(t.elapsed().as_nanos() as u64).expect("record");
                        }
                        merged.lock().expect("merge").add(&h).expect("add");
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for t in threads {
                t.join().expect("appender thread");
            }
            start
        }
        Mode::Tasks => rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..c.appenders)
                .map(|_| {
                    let (log, merged) = (log.clone(), merged.clone());
                    tokio::spawn(async move {
                        let mut h = hist();
                        let start = Instant::now();
                        while start.elapsed() < duration {
                            let t = Instant::now();
                            log.submit().await.expect("append");
                            h.record(t.elapsed().as_nanos() as u64).expect("record");
                        }
                        merged.lock().expect("merge").add(&h).expect("add");
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("appender task");
            }
            start
        }),
    };
    let secs = start.elapsed().as_secs_f64();
    let after = log.wal.metrics();
    let h = merged.lock().expect("merged").clone();
    Ok(Sample::from_hist(
        &h,
        after.records - before.records,
        after.fsyncs - before.fsyncs,
        secs,
    ))
}
