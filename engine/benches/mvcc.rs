//! The MVCC store in process, on a store loaded with 100,000 random 16-byte
//! keys (256-byte values) at etcd's default backend batching (100 ms /
//! 10,000 operations): a put, a single-key range at the head revision and at
//! an old one (after 10 % of the load), and a transaction (one compare, four
//! puts). Small on purpose: the whole run takes well under a minute.
//!
//! Run: `cargo bench -p cairn-engine --bench mvcc`
//! (`CAIRN_BENCH_DIR` puts the files elsewhere than the system temp dir).
//! `cairn-bench mvcc-put` is the large, side-by-side-with-etcd version.

mod common;

use std::time::{Duration, Instant};

use cairn_engine::mvcc::{
    Compare, CompareResult, CompareTarget, EntryId, PutRequest, RangeRequest, RequestOp, Store,
    StoreOptions, TxnRequest, WriteRequest,
};
use common::{Rng, bench_dir, key};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KEYS: u64 = 100_000;
const VALUE: usize = 256;

/// The store, its next log index, and the revision after 10 % of the load.
struct Loaded {
    store: Store,
    next: u64,
    old_rev: i64,
}

impl Loaded {
    fn write(&mut self, req: WriteRequest) -> i64 {
        let out = self.store.write(EntryId::new(self.next, 1), req).unwrap();
        self.next += 1;
        out.unwrap().response.revision()
    }
}

fn load(dir: &std::path::Path) -> Loaded {
    let store = Store::open(dir.join("db"), StoreOptions::default()).unwrap();
    let mut l = Loaded {
        store,
        next: 1,
        old_rev: 0,
    };
    let val = vec![0xabu8; VALUE];
    let t = Instant::now();
    for i in 0..KEYS {
        let rev = l.write(WriteRequest::Put(PutRequest::new(key(i), val.clone())));
        if i + 1 == KEYS / 10 {
            l.old_rev = rev;
        }
    }
    l.store.flush().unwrap();
    eprintln!("  loaded {KEYS} keys in {:.2?}", t.elapsed());
    l
}

fn benches(c: &mut Criterion) {
    let dir = bench_dir();
    let mut l = load(dir.path());
    let val = vec![0xcdu8; VALUE];
    let mut g = c.benchmark_group("mvcc");
    g.throughput(Throughput::Elements(1));

    let mut rng = Rng(1);
    g.bench_function("put", |b| {
        b.iter(|| {
            let k = key(rng.next() % KEYS);
            l.write(WriteRequest::Put(PutRequest::new(k, val.clone())))
        })
    });

    let mut rng = Rng(2);
    g.bench_function("range_head", |b| {
        b.iter(|| {
            let r = l
                .store
                .range(&RangeRequest::key(key(rng.next() % KEYS)))
                .unwrap();
            assert_eq!(r.kvs.len(), 1);
        })
    });

    let mut rng = Rng(3);
    let old_rev = l.old_rev;
    g.bench_function("range_old_revision", |b| {
        b.iter(|| {
            let req = RangeRequest {
                revision: old_rev,
                ..RangeRequest::key(key(rng.next() % (KEYS / 10)))
            };
            let r = l.store.range(&req).unwrap();
            assert_eq!(r.kvs.len(), 1);
        })
    });

    let mut rng = Rng(4);
    g.bench_function("txn_compare_4_puts", |b| {
        b.iter(|| {
            let first = key(rng.next() % KEYS);
            let put = |k: [u8; 16]| RequestOp::Put(PutRequest::new(k, val.clone()));
            let mut success = vec![put(first)];
            success.extend((0..3).map(|_| put(key(rng.next() % KEYS))));
            l.write(WriteRequest::Txn(TxnRequest {
                compare: vec![Compare::new(
                    first,
                    CompareResult::Greater,
                    CompareTarget::Version(0),
                )],
                success,
                failure: Vec::new(),
            }))
        })
    });
    g.finish();
    l.store.close().unwrap();
}

criterion_group! {
    name = mvcc;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(mvcc);
