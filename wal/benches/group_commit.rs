//! Durable append throughput of the WAL: 1, 16 and 256 concurrent appenders
//! with 256-byte records, io_uring vs pwrite, beside a bare append + fdatasync
//! loop on the same disk in the same run.
//!
//! Run: `cargo bench -p cairn-wal --bench group_commit`
//! (set `CAIRN_BENCH_DIR` to put the files on another disk; the default is the
//! system temp dir).
//!
//! Criterion reports records/s (throughput in elements). Each configuration also
//! prints its records per fdatasync, from the WAL's own counters, so fsyncs/s =
//! records/s ÷ records per fsync.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cairn_wal::{BackendChoice, Record, Wal, WalOptions};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const RECORD: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Index allocation and submission under one lock (log order), waiting outside.
struct Log {
    wal: Wal,
    next: Mutex<u64>,
}

impl Log {
    fn submit(&self) -> cairn_wal::Ticket {
        let mut next = self.next.lock().unwrap();
        let t = self
            .wal
            .submit(vec![Record::entry(*next, 1, vec![0xab; RECORD])])
            .unwrap();
        *next += 1;
        t
    }
}

fn open(backend: BackendChoice) -> (tempfile::TempDir, Arc<Log>) {
    let tmp = bench_dir();
    let o = WalOptions {
        backend,
        min_segments: 2,
        ..WalOptions::default()
    };
    let wal = Wal::create(tmp.path().join("wal"), o, b"bench").unwrap();
    (
        tmp,
        Arc::new(Log {
            wal,
            next: Mutex::new(1),
        }),
    )
}

/// `total` records from `appenders` threads; returns the time from the moment
/// all threads are ready to the last acknowledgement.
/// Records for appender `i` of `n` so that together they write exactly `total`.
fn share(total: u64, n: usize, i: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

fn run_threads(log: &Arc<Log>, appenders: usize, total: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(appenders + 1));
    let threads: Vec<_> = (0..appenders)
        .map(|i| {
            let per = share(total, appenders, i);
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..per {
                    log.submit().wait().unwrap();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let took = start.elapsed();
    // Keep the disk bounded: everything written is covered by a "snapshot".
    let last = log.wal.last_index();
    log.wal.release(last).unwrap();
    took
}

fn run_tasks(
    rt: &tokio::runtime::Runtime,
    log: &Arc<Log>,
    appenders: usize,
    total: u64,
) -> Duration {
    let took = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|i| {
                let per = share(total, appenders, i);
                let log = log.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        log.submit().await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    });
    let last = log.wal.last_index();
    log.wal.release(last).unwrap();
    took
}

fn report(label: &str, log: &Log) {
    let m = log.wal.metrics();
    eprintln!(
        "  [{label}] records {} batches {} fsyncs {} -> {:.1} records per fsync; fsync p50 <= {:?}s p99 <= {:?}s",
        m.records,
        m.batches,
        m.fsyncs,
        m.records as f64 / m.fsyncs.max(1) as f64,
        m.fsync_latency.quantile_upper_bound(0.5).unwrap_or(0.0),
        m.fsync_latency.quantile_upper_bound(0.99).unwrap_or(0.0),
    );
}

/// The same disk without a WAL: 256-byte writes each followed by fdatasync,
/// appending to a growing file, and into a preallocated one (as segments are).
fn bare_append_fdatasync(c: &mut Criterion) {
    let mut g = c.benchmark_group("bare");
    g.throughput(Throughput::Elements(1));
    let tmp = bench_dir();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(tmp.path().join("bare.log"))
        .unwrap();
    let rec = [0xabu8; RECORD];
    g.bench_function("append+fdatasync/256B", |b| {
        b.iter(|| {
            f.write_all(&rec).unwrap();
            f.sync_data().unwrap();
        })
    });
    let space = 256u64 << 20;
    let p = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(tmp.path().join("prealloc.log"))
        .unwrap();
    cairn_wal::segment::preallocate(&p, space).unwrap();
    p.sync_all().unwrap();
    let mut offset = 0u64;
    g.bench_function("prealloc-write+fdatasync/256B", |b| {
        b.iter(|| {
            if offset + RECORD as u64 > space {
                offset = 0;
            }
            p.write_all_at(&rec, offset).unwrap();
            offset += RECORD as u64;
            p.sync_data().unwrap();
        })
    });
    g.finish();
}

fn wal_appenders(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for backend in [BackendChoice::IoUring, BackendChoice::Pwrite] {
        let name = match backend {
            BackendChoice::IoUring => "io_uring",
            _ => "pwrite",
        };
        let mut g = c.benchmark_group(format!("wal/{name}"));
        for appenders in [1usize, 16, 256] {
            let (_tmp, log) = open(backend);
            g.throughput(Throughput::Elements(1));
            g.bench_with_input(
                BenchmarkId::new("threads", appenders),
                &appenders,
                |b, &n| b.iter_custom(|iters| run_threads(&log, n, iters)),
            );
            report(&format!("{name} threads={appenders}"), &log);
        }
        let (_tmp, log) = open(backend);
        g.bench_with_input(BenchmarkId::new("tasks", 256), &256usize, |b, &n| {
            b.iter_custom(|iters| run_tasks(&rt, &log, n, iters))
        });
        report(&format!("{name} tasks=256"), &log);
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bare_append_fdatasync, wal_appenders
}
criterion_main!(benches);
