//! `cairn-bench mvcc-compact`: how long are writes paused while a large
//! history is compacted?
//!
//! Loads `--revisions` puts over `--keys` keys, then runs a writer at a
//! steady `--rate` (puts per second, 0 for as fast as it goes), first alone
//! for a baseline, then while the whole history up to the head is compacted
//! (index pass, then the B+tree pass in batches). Reports each period's write
//! latency percentiles and maximum, and the longest gap between two writes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_engine::mvcc::{EntryId, PutRequest, Store, StoreOptions, WriteRequest};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::rng::Rng;

#[derive(Args)]
pub struct CompactArgs {
    /// Revisions to load (one put each) before compacting.
    #[arg(long, default_value_t = 1_000_000)]
    revisions: u64,
    /// Distinct keys they are spread over.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Writer rate during the measurement, puts per second (0: unthrottled).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of writer-only baseline before compacting.
    #[arg(long, default_value_t = 3.0)]
    baseline_seconds: f64,
    /// Revisions removed per B+tree transaction.
    #[arg(long, default_value_t = 1000)]
    compaction_batch_limit: usize,
    /// Pause between those transactions, in milliseconds.
    #[arg(long, default_value_t = 10)]
    compaction_pause_ms: u64,
    /// Directory for the database file (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn key(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    k.extend_from_slice(&i.to_be_bytes());
    k
}

struct Period {
    latency: Histogram<u64>,
    longest_gap: Duration,
    writes: u64,
    elapsed: Duration,
}

/// Writes at `rate` until `done` says stop.
fn write_until(
    store: &Store,
    entry: &mut u64,
    rng: &mut Rng,
    a: &CompactArgs,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<Period> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3)?;
    let start = Instant::now();
    let mut last = start;
    let mut longest_gap = Duration::ZERO;
    let mut writes = 0u64;
    let value = vec![0x42u8; a.value_size];
    while !done() {
        if a.rate > 0 {
            let due = start + Duration::from_secs_f64(writes as f64 / a.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        *entry += 1;
        let t = Instant::now();
        store.write(
            EntryId::new(*entry, 1),
            WriteRequest::Put(PutRequest::new(key(rng.next() % a.keys), value.clone())),
        )?;
        let end = Instant::now();
        latency.record((end - t).as_nanos() as u64)?;
        longest_gap = longest_gap.max(end - last);
        last = end;
        writes += 1;
    }
    Ok(Period {
        latency,
        longest_gap,
        writes,
        elapsed: start.elapsed(),
    })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn report(name: &str, p: &Period, json: bool) -> serde_json::Value {
    let h = &p.latency;
    let v = json!({
        "period": name,
        "writes": p.writes,
        "seconds": p.elapsed.as_secs_f64(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "longest_gap_ms": p.longest_gap.as_secs_f64() * 1e3,
    });
    if !json {
        println!(
            "{name:>10}: {} writes in {:.2} s; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; longest gap between writes {:.3} ms",
            p.writes,
            p.elapsed.as_secs_f64(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max()),
            p.longest_gap.as_secs_f64() * 1e3
        );
    }
    v
}

pub fn run(a: CompactArgs) -> anyhow::Result<()> {
    let dir = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let opts = StoreOptions {
        compaction_batch_limit: a.compaction_batch_limit,
        compaction_pause: Duration::from_millis(a.compaction_pause_ms),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path().join("db"), opts)?;
    let mut rng = Rng(11);
    let mut entry = 0u64;
    let t = Instant::now();
    let value = vec![0x17u8; a.value_size];
    for _ in 0..a.revisions {
        entry += 1;
        store.write(
            EntryId::new(entry, 1),
            WriteRequest::Put(PutRequest::new(key(rng.next() % a.keys), value.clone())),
        )?;
    }
    store.flush()?;
    if !a.json {
        println!(
            "loaded {} revisions over {} keys in {:.2} s",
            a.revisions,
            a.keys,
            t.elapsed().as_secs_f64()
        );
    }
    let base_end = Instant::now() + Duration::from_secs_f64(a.baseline_seconds);
    let baseline = write_until(&store, &mut entry, &mut rng, &a, || {
        Instant::now() >= base_end
    })?;
    let at = store.current_revision();
    entry += 1;
    let started = Instant::now();
    let compaction = store.compact(EntryId::new(entry, 1), at)?.unwrap();
    let scheduled = started.elapsed();
    let during = write_until(&store, &mut entry, &mut rng, &a, || compaction.is_done())?;
    compaction.wait()?;
    let took = started.elapsed();
    let stats = store.stats();
    let b = report("baseline", &baseline, a.json);
    let d = report("compacting", &during, a.json);
    if a.json {
        println!(
            "{}",
            json!({
                "revisions": a.revisions,
                "keys": a.keys,
                "compact_revision": at,
                "compaction_seconds": took.as_secs_f64(),
                "schedule_ms": scheduled.as_secs_f64() * 1e3,
                "baseline": b,
                "compacting": d,
                "file_bytes": stats.db.file_size,
            })
        );
    } else {
        println!(
            "compaction at revision {at}: scheduled in {:.3} ms, done in {:.2} s",
            scheduled.as_secs_f64() * 1e3,
            took.as_secs_f64()
        );
    }
    store.close()?;
    Ok(())
}
