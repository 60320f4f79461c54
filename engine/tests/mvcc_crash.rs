//! Crash tests of the MVCC store. A workload of log entries (puts, deletes,
//! transactions, a compaction, lease-bucket changes) runs on a B+tree whose
//! storage crashes at its n-th operation; the disk image after the power loss
//! reopens, the entries are replayed from the start as a server replays its
//! log (those at or below the stored consistent index change nothing), and
//! the result must equal a store that never crashed: every revision's
//! contents, the hash, the compaction revision and the lease bucket.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_engine::btree::FaultyStorage;
use cairn_engine::mvcc::*;

#[derive(Clone, Debug)]
enum Op {
    Write(WriteRequest),
    Compact(i64),
    Aux(Vec<AuxOp>),
}

fn opts() -> StoreOptions {
    StoreOptions {
        batch_interval: Duration::from_millis(1),
        batch_limit: 5,
        compaction_batch_limit: 8,
        compaction_pause: Duration::ZERO,
        db: cairn_engine::btree::Options {
            page_size: 1024,
            grow_step: 64 << 10,
            ..Default::default()
        },
        ..StoreOptions::default()
    }
}

fn workload() -> Vec<Op> {
    let mut ops = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..220u64 {
        let r = rnd();
        let k = format!("key{:02}", r % 24);
        let v = format!("{i}:{}", "v".repeat((r % 90) as usize));
        ops.push(match r % 12 {
            0 => Op::Write(WriteRequest::DeleteRange(DeleteRangeRequest::new(
                k,
                format!("key{:02}", r % 24 + 4),
            ))),
            1 => Op::Write(WriteRequest::Txn(TxnRequest {
                compare: vec![Compare::new(
                    k.clone(),
                    CompareResult::Greater,
                    CompareTarget::Version(1),
                )],
                success: vec![
                    RequestOp::Put(PutRequest::new(k.clone(), v.clone())),
                    RequestOp::Put(PutRequest::new("txn-marker", v)),
                ],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::new(k, ""))],
            })),
            2 => Op::Aux(vec![AuxOp::Put {
                bucket: schema::LEASE,
                key: (r % 5).to_be_bytes().to_vec(),
                value: v.into_bytes(),
            }]),
            3 if i % 3 == 0 => Op::Aux(vec![AuxOp::Delete {
                bucket: schema::LEASE,
                key: (r % 5).to_be_bytes().to_vec(),
            }]),
            _ => Op::Write(WriteRequest::Put(PutRequest::new(k, v))),
        });
        if i == 150 {
            ops.push(Op::Compact(90));
        }
    }
    ops
}

/// Applies entries 1.. in order; stops at the first failure. Returns how many
/// were applied.
fn apply(store: &Store, log: &[Op]) -> usize {
    for (i, op) in log.iter().enumerate() {
        let e = EntryId::new(i as u64 + 1, 1);
        let r = match op {
            Op::Write(w) => store.write(e, w.clone()).map(|_| ()),
            Op::Compact(rev) => store.compact(e, *rev).map(|_| ()),
            Op::Aux(a) => store.apply_aux(e, a.clone()).map(|_| ()),
        };
        match r {
            Ok(()) => {}
            Err(e) if e.is_fatal() => return i,
            Err(e) => panic!("entry {i}: unexpected request error {e}"),
        }
    }
    log.len()
}

/// Everything observable: every revision's full contents, hash, compaction
/// revision, lease bucket.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    current: i64,
    compact: i64,
    hash: HashKv,
    revisions: Vec<(i64, Vec<KeyValue>)>,
    leases: Vec<(Vec<u8>, Vec<u8>)>,
    applied: EntryId,
}

fn digest(store: &Store) -> Digest {
    store.wait_compactions();
    let current = store.current_revision();
    let compact = store.compact_revision();
    let revisions = (compact.max(1)..=current)
        .map(|rev| {
            let r = store
                .range(&RangeRequest {
                    revision: rev,
                    ..RangeRequest::range("\0", "\0")
                })
                .unwrap();
            (rev, r.kvs)
        })
        .collect();
    Digest {
        current,
        compact,
        hash: store.hash_kv(0).unwrap(),
        revisions,
        leases: store.aux_scan(schema::LEASE).unwrap(),
        applied: store.applied_index(),
    }
}

fn faulty_store(path: &Path) -> (Store, Arc<FaultyStorage>) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let storage = Arc::new(FaultyStorage::new(file));
    let store = Store::open_with_storage(path, Box::new(storage.clone()), opts()).unwrap();
    (store, storage)
}

#[test]
fn a_crash_at_any_storage_operation_replays_to_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = workload();

    // The reference: no crash.
    let reference = {
        let store = Store::open(dir.path().join("ref"), opts()).unwrap();
        assert_eq!(apply(&store, &log), log.len());
        let d = digest(&store);
        store.close().unwrap();
        d
    };
    assert!(reference.compact == 90 && reference.current > 150);

    // An empty store file to start every run from.
    let base_path = dir.path().join("base");
    Store::open(&base_path, opts()).unwrap().close().unwrap();
    let base = fs::read(&base_path).unwrap();

    // How many storage operations a whole run takes.
    let path = dir.path().join("run");
    fs::write(&path, &base).unwrap();
    let total = {
        let (store, storage) = faulty_store(&path);
        assert_eq!(apply(&store, &log), log.len());
        store.close().unwrap();
        storage.ops()
    };
    assert!(total > 50, "only {total} storage operations");

    // Every operation while that is affordable, then every few.
    let stride = (total / 150).max(1);
    let mut crashes = 0;
    let mut n = 1;
    while n <= total {
        for torn in [0usize, 700] {
            fs::write(&path, &base).unwrap();
            let (store, storage) = faulty_store(&path);
            storage.crash_at(n);
            let applied = apply(&store, &log);
            drop(store);
            if !storage.crashed() {
                continue;
            }
            crashes += 1;
            let image = storage.crash_image(torn).unwrap();
            let after = dir.path().join("after");
            fs::write(&after, &image).unwrap();
            let store = Store::open(&after, opts())
                .unwrap_or_else(|e| panic!("crash at op {n} (torn {torn}) does not reopen: {e}"));
            let durable = store.applied_index();
            assert!(
                durable.index as usize <= applied,
                "crash at op {n}: durable index {durable:?} beyond the {applied} entries applied"
            );
            // Replaying everything: entries up to the durable index are skipped.
            assert_eq!(apply(&store, &log), log.len());
            let d = digest(&store);
            assert_eq!(
                d, reference,
                "crash at op {n} (torn {torn}), durable {durable:?}"
            );
            let check = store.db().check();
            assert!(check.is_ok(), "crash at op {n}: {:?}", check.problems);
            store.close().unwrap();
        }
        n += stride;
    }
    eprintln!("{total} storage operations, stride {stride}, {crashes} crashed runs");
    assert!(crashes > 20, "only {crashes} runs crashed");
}

#[test]
fn replaying_an_applied_entry_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = workload();
    let store = Store::open(dir.path().join("db"), opts()).unwrap();
    assert_eq!(apply(&store, &log[..100]), 100);
    let before = digest(&store);
    // The whole prefix again, and again after the batch reached the tree.
    assert_eq!(apply(&store, &log[..100]), 100);
    assert_eq!(digest(&store), before);
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path().join("db"), opts()).unwrap();
    assert_eq!(store.applied_index(), EntryId::new(100, 1));
    assert_eq!(apply(&store, &log[..100]), 100);
    assert_eq!(digest(&store), before);
}
