//! cairn's B+tree beside redb, same machine, same run, same durability (both
//! fdatasync at every commit), on a 1,000,000-key table of 16-byte random keys
//! and 256-byte values.
//!
//! Run: `cargo bench -p cairn-engine --bench btree_vs_redb`
//! (`CAIRN_BENCH_DIR` puts the files elsewhere than the system temp dir).
//!
//! Workloads: random puts committed in batches of 1,000 and 10,000 (half
//! updates, half inserts), sequential puts (appends past the largest key) in
//! batches of 10,000, random point reads, 1,000-key range scans from a random
//! key, and opening the database.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_engine::btree::{Db, Options};
use common::{Rng, bench_dir, key};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};

const KEYS: u64 = 1_000_000;
const VALUE: usize = 256;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("t");

/// Keys that sort after every `key(i)`: appends.
fn seq_key(i: u64) -> [u8; 16] {
    let mut k = [0xffu8; 16];
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// The two engines behind one interface.
trait Engine {
    fn name(&self) -> &'static str;
    fn put_batch(&mut self, keys: &mut dyn Iterator<Item = [u8; 16]>, val: &[u8]);
    /// `n` point reads in one read transaction; returns the bytes seen.
    fn gets(&self, keys: &mut dyn Iterator<Item = [u8; 16]>, n: u64) -> u64;
    /// Reads `n` entries from `from` on.
    fn scan(&self, from: &[u8], n: usize) -> u64;
    fn reopen(&mut self);
}

struct Cairn {
    path: PathBuf,
    db: Option<Db>,
}

impl Engine for Cairn {
    fn name(&self) -> &'static str {
        "cairn"
    }
    fn put_batch(&mut self, keys: &mut dyn Iterator<Item = [u8; 16]>, val: &[u8]) {
        let mut tx = self.db.as_ref().unwrap().begin_write().unwrap();
        {
            let mut b = tx.create_bucket_if_missing(b"t").unwrap();
            for k in keys {
                b.put(&k, val).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn gets(&self, keys: &mut dyn Iterator<Item = [u8; 16]>, n: u64) -> u64 {
        let r = self.db.as_ref().unwrap().begin_read();
        let b = r.bucket(b"t").unwrap().unwrap();
        let mut seen = 0;
        for k in keys.take(n as usize) {
            seen += b.get(&k).unwrap().map_or(0, |v| v.len() as u64);
        }
        seen
    }
    fn scan(&self, from: &[u8], n: usize) -> u64 {
        let r = self.db.as_ref().unwrap().begin_read();
        let b = r.bucket(b"t").unwrap().unwrap();
        b.range(std::ops::Bound::Included(from), std::ops::Bound::Unbounded)
            .take(n)
            .map(|x| x.unwrap().1.len() as u64)
            .sum()
    }
    fn reopen(&mut self) {
        self.db.take();
        self.db = Some(Db::open(&self.path, Options::default()).unwrap());
    }
}

struct Redb {
    path: PathBuf,
    db: Option<redb::Database>,
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn put_batch(&mut self, keys: &mut dyn Iterator<Item = [u8; 16]>, val: &[u8]) {
        let tx = self.db.as_ref().unwrap().begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for k in keys {
                t.insert(k.as_slice(), val).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn gets(&self, keys: &mut dyn Iterator<Item = [u8; 16]>, n: u64) -> u64 {
        let r = self.db.as_ref().unwrap().begin_read().unwrap();
        let t = r.open_table(TABLE).unwrap();
        let mut seen = 0;
        for k in keys.take(n as usize) {
            seen += t
                .get(k.as_slice())
                .unwrap()
                .map_or(0, |v| v.value().len() as u64);
        }
        seen
    }
    fn scan(&self, from: &[u8], n: usize) -> u64 {
        let r = self.db.as_ref().unwrap().begin_read().unwrap();
        let t = r.open_table(TABLE).unwrap();
        t.range(from..)
            .unwrap()
            .take(n)
            .map(|x| x.unwrap().1.value().len() as u64)
            .sum()
    }
    fn reopen(&mut self) {
        self.db.take();
        self.db = Some(redb::Database::open(&self.path).unwrap());
    }
}

/// Loads 1,000,000 random keys in batches of 10,000.
fn load(e: &mut dyn Engine) -> Duration {
    let val = vec![0xabu8; VALUE];
    let t = Instant::now();
    for batch in 0..KEYS / 10_000 {
        let mut keys = (batch * 10_000..(batch + 1) * 10_000).map(key);
        e.put_batch(&mut keys, &val);
    }
    t.elapsed()
}

fn engines(dir: &Path) -> Vec<Box<dyn Engine>> {
    let cairn_path = dir.join("cairn.db");
    let redb_path = dir.join("redb.db");
    let mut v: Vec<Box<dyn Engine>> = vec![
        Box::new(Cairn {
            db: Some(Db::open(&cairn_path, Options::default()).unwrap()),
            path: cairn_path,
        }),
        Box::new(Redb {
            db: Some(redb::Database::create(&redb_path).unwrap()),
            path: redb_path,
        }),
    ];
    for e in v.iter_mut() {
        let took = load(e.as_mut());
        eprintln!(
            "  [{}] loaded {KEYS} keys in batches of 10,000: {took:.2?} ({:.0} puts/s)",
            e.name(),
            KEYS as f64 / took.as_secs_f64()
        );
    }
    v
}

fn benches(c: &mut Criterion) {
    let dir = bench_dir();
    let mut engines = engines(dir.path());
    let val = vec![0xcdu8; VALUE];

    for batch in [1_000u64, 10_000] {
        let mut g = c.benchmark_group(format!("put_random_batch_{batch}"));
        g.throughput(Throughput::Elements(batch));
        for e in engines.iter_mut() {
            let mut rng = Rng(batch);
            g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
                b.iter(|| {
                    let mut keys = (0..batch).map(|_| key(rng.next() % (2 * KEYS)));
                    e.put_batch(&mut keys, &val)
                })
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("put_sequential_batch_10000");
    g.throughput(Throughput::Elements(10_000));
    for e in engines.iter_mut() {
        let mut next = 0u64;
        g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
            b.iter(|| {
                let mut keys = (next..next + 10_000).map(seq_key);
                next += 10_000;
                e.put_batch(&mut keys, &val)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("get_random");
    g.throughput(Throughput::Elements(1));
    for e in engines.iter() {
        let mut rng = Rng(99);
        g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
            b.iter_custom(|iters| {
                let mut keys = std::iter::repeat_with(|| key(rng.next() % KEYS));
                let t = Instant::now();
                let seen = e.gets(&mut keys, iters);
                let took = t.elapsed();
                assert!(seen >= iters * VALUE as u64);
                took
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("range_scan_1000");
    g.throughput(Throughput::Elements(1000));
    for e in engines.iter() {
        let mut rng = Rng(5);
        g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
            b.iter(|| {
                let from = key(rng.next() % KEYS);
                e.scan(&from, 1000)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("open");
    for e in engines.iter_mut() {
        g.bench_function(BenchmarkId::from_parameter(e.name()), |b| {
            b.iter(|| e.reopen())
        });
    }
    g.finish();
}

criterion_group! {
    name = btree;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(btree);
