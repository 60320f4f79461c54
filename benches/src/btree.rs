//! `cairn-bench btree-defrag`: how long does a writer stall while a large,
//! fragmented database is defragmented online?

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_engine::btree::{Db, DefragOptions, Options};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::rng::Rng;

#[derive(Args)]
pub struct DefragArgs {
    /// Size of the database file to build, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1000)]
    value_size: usize,
    /// Share of keys deleted (at random) before defragmenting.
    #[arg(long, default_value_t = 0.5)]
    delete_fraction: f64,
    /// Seconds of writer-only baseline before defragmenting.
    #[arg(long, default_value_t = 5.0)]
    baseline_seconds: f64,
    /// Pages moved per defrag step.
    #[arg(long, default_value_t = 256)]
    step_pages: u64,
    /// Directory for the database file (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// Latencies of a writer committing 10 puts per transaction until `stop`.
fn writer(db: Db, stop: Arc<AtomicBool>, value_size: usize) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let mut rng = Rng(7);
    let val = vec![0x5a; value_size.min(200)];
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let mut tx = db.begin_write()?;
        {
            let mut b = tx.create_bucket_if_missing(b"writer")?;
            for _ in 0..10 {
                b.put(&key(rng.next() % 100_000), &val)?;
            }
        }
        tx.commit()?;
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(h)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub fn run(args: DefragArgs) -> anyhow::Result<()> {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }?;
    let path = tmp.path().join("db");
    let db = Db::open(
        &path,
        Options {
            grow_step: 64 << 20,
            ..Options::default()
        },
    )
    .context("opening the database")?;

    // Build: insert until the file reaches the target size.
    let t = Instant::now();
    let target = args.size_mib << 20;
    let val = vec![0xa5u8; args.value_size];
    let mut n = 0u64;
    while db.stats().file_size < target {
        let mut tx = db.begin_write()?;
        {
            let mut b = tx.create_bucket_if_missing(b"data")?;
            for _ in 0..10_000 {
                b.put(&key(n), &val)?;
                n += 1;
            }
        }
        tx.commit()?;
    }
    let built = t.elapsed();
    // Fragment: delete a random share of the keys.
    let mut rng = Rng(42);
    let cut = (args.delete_fraction * u64::MAX as f64) as u64;
    let mut i = 0;
    while i < n {
        let mut tx = db.begin_write()?;
        {
            let mut b = tx.bucket_mut(b"data")?.expect("built");
            for j in i..(i + 20_000).min(n) {
                if rng.next() < cut {
                    b.delete(&key(j))?;
                }
            }
        }
        tx.commit()?;
        i += 20_000;
    }
    db.begin_write()?.commit()?;
    let before = db.stats();
    eprintln!(
        "built {n} keys in {built:.1?}; file {} MiB, {} of {} pages free",
        before.file_size >> 20,
        before.free_pages + before.pending_pages,
        before.hwm
    );

    // Baseline: the writer alone.
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        let vs = args.value_size;
        std::thread::spawn(move || writer(db, stop, vs))
    };
    std::thread::sleep(Duration::from_secs_f64(args.baseline_seconds));
    stop.store(true, Ordering::Relaxed);
    let baseline = w.join().expect("writer")?;

    // Defragment with the writer running.
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        let vs = args.value_size;
        std::thread::spawn(move || writer(db, stop, vs))
    };
    let report = db.defrag(&DefragOptions {
        step_pages: args.step_pages,
        ..DefragOptions::default()
    })?;
    stop.store(true, Ordering::Relaxed);
    let during = w.join().expect("writer")?;
    let after = db.stats();
    let check = db.check();
    anyhow::ensure!(check.is_ok(), "check after defrag: {:?}", check.problems);

    // The same writer alone again: commits now carry a compact free list.
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        let vs = args.value_size;
        std::thread::spawn(move || writer(db, stop, vs))
    };
    std::thread::sleep(Duration::from_secs_f64(args.baseline_seconds));
    stop.store(true, Ordering::Relaxed);
    let post = w.join().expect("writer")?;

    let max_us = during.max() as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "file_mib_before": before.file_size >> 20, "file_mib_after": after.file_size >> 20,
                "defrag_seconds": report.duration.as_secs_f64(), "steps": report.steps, "passes": report.passes,
                "pages_moved": report.pages_moved, "longest_step_us": report.longest_step.as_secs_f64() * 1e6,
                "writer_baseline": {"txns": baseline.len(), "p50_us": us(&baseline, 0.5), "p99_us": us(&baseline, 0.99), "max_us": baseline.max() as f64 / 1000.0},
                "writer_during": {"txns": during.len(), "p50_us": us(&during, 0.5), "p99_us": us(&during, 0.99), "p999_us": us(&during, 0.999), "max_us": max_us},
                "writer_after": {"txns": post.len(), "p50_us": us(&post, 0.5), "p99_us": us(&post, 0.99), "max_us": post.max() as f64 / 1000.0},
            })
        );
    } else {
        println!(
            "file               {} MiB -> {} MiB",
            before.file_size >> 20,
            after.file_size >> 20
        );
        println!(
            "defrag             {:.2} s, {} passes, {} steps, {} pages moved, longest step {:.2} ms",
            report.duration.as_secs_f64(),
            report.passes,
            report.steps,
            report.pages_moved,
            report.longest_step.as_secs_f64() * 1e3
        );
        println!(
            "writer alone       {} txns: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            baseline.len(),
            us(&baseline, 0.5),
            us(&baseline, 0.99),
            baseline.max() as f64 / 1000.0
        );
        println!(
            "writer in defrag   {} txns: p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
            during.len(),
            us(&during, 0.5),
            us(&during, 0.99),
            us(&during, 0.999),
            max_us
        );
        println!(
            "writer afterwards  {} txns: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
            post.len(),
            us(&post, 0.5),
            us(&post, 0.99),
            post.max() as f64 / 1000.0
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct PutArgs {
    /// Keys loaded before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Random puts per committed transaction.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Transactions measured.
    #[arg(long, default_value_t = 200)]
    txns: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 4096)]
    page_size: u32,
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Random puts in batches on a loaded table: where does the time go?
pub fn run_put(args: PutArgs) -> anyhow::Result<()> {
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }?;
    let db = Db::open(
        tmp.path().join("db"),
        Options {
            page_size: args.page_size,
            ..Options::default()
        },
    )?;
    let val = vec![0xabu8; args.value_size];
    let t = Instant::now();
    let mut i = 0;
    while i < args.keys {
        let mut tx = db.begin_write()?;
        {
            let mut b = tx.create_bucket_if_missing(b"t")?;
            for j in i..(i + 10_000).min(args.keys) {
                b.put(&key(j), &val)?;
            }
        }
        tx.commit()?;
        i += 10_000;
    }
    eprintln!("loaded {} keys in {:.2?}", args.keys, t.elapsed());
    let mut rng = Rng(1);
    let (mut ops, mut commits) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..args.txns {
        let t = Instant::now();
        let mut tx = db.begin_write()?;
        {
            let mut b = tx.bucket_mut(b"t")?.expect("loaded");
            for _ in 0..args.batch {
                b.put(&key(rng.next() % (2 * args.keys)), &val)?;
            }
        }
        let c = Instant::now();
        ops += c - t;
        tx.commit()?;
        commits += c.elapsed();
    }
    let n = args.txns as f64;
    println!(
        "{} txns of {} random puts: {:.2} ms per txn ({:.2} ms puts, {:.2} ms commit), {:.0} puts/s",
        args.txns,
        args.batch,
        (ops + commits).as_secs_f64() * 1e3 / n,
        ops.as_secs_f64() * 1e3 / n,
        commits.as_secs_f64() * 1e3 / n,
        (args.txns * args.batch) as f64 / (ops + commits).as_secs_f64()
    );
    Ok(())
}
