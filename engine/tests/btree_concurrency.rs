//! Readers beside writers: snapshot isolation, page pinning by long readers,
//! and defragmentation while everything else goes on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use cairn_engine::btree::{Db, DefragOptions, Options};

fn opts() -> Options {
    Options {
        grow_step: 64 << 10,
        ..Options::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn fill(db: &Db, bucket: &[u8], n: u64, value: impl Fn(u64) -> Vec<u8>) {
    let mut tx = db.begin_write().unwrap();
    {
        let mut b = tx.create_bucket_if_missing(bucket).unwrap();
        for i in 0..n {
            b.put(&key(i), &value(i)).unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn every_reader_sees_exactly_one_committed_generation_while_writers_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), opts()).unwrap();
    fill(&db, b"a", 1000, |_| b"gen-0".to_vec());
    let first = db.begin_read();
    let stop = Arc::new(AtomicBool::new(false));
    let snapshots = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop, snapshots) = (db.clone(), stop.clone(), snapshots.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = db.begin_read();
                    let b = r.bucket(b"a").unwrap().unwrap();
                    let values: Vec<Vec<u8>> = b.iter().map(|x| x.unwrap().1.to_vec()).collect();
                    assert_eq!(values.len(), 1000, "a snapshot lost or gained keys");
                    assert!(
                        values.windows(2).all(|w| w[0] == w[1]),
                        "a snapshot mixes generations"
                    );
                    snapshots.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for g in 1..=40u64 {
        let mut tx = db.begin_write().unwrap();
        let mut b = tx.bucket_mut(b"a").unwrap().unwrap();
        let v = format!("gen-{g}");
        for i in 0..1000 {
            b.put(&key(i), v.as_bytes()).unwrap();
        }
        tx.commit().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(snapshots.load(Ordering::Relaxed) > 0);
    // The first reader still sees generation 0, all of it.
    let b = first.bucket(b"a").unwrap().unwrap();
    assert!(b.iter().all(|x| x.unwrap().1 == b"gen-0"));
    assert_eq!(first.txid() + 40, db.begin_read().txid());
    assert!(db.check().is_ok());
}

#[test]
fn a_long_reader_pins_only_its_snapshot_whose_pages_come_back_when_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), opts()).unwrap();
    fill(&db, b"a", 3000, |i| vec![i as u8; 200]);
    let tree_pages = db.stats().hwm;
    let reader = db.begin_read();
    let rewrite = |round: u8| {
        let mut tx = db.begin_write().unwrap();
        let mut b = tx.bucket_mut(b"a").unwrap().unwrap();
        for i in 0..3000 {
            b.put(&key(i), &[round; 200]).unwrap();
        }
        tx.commit().unwrap();
    };
    for round in 1..=30 {
        rewrite(round);
    }
    let with_reader = db.stats();
    // The reader's snapshot stays pinned (about one copy of the tree), but
    // pages written and freed after it began are reused: thirty full rewrites
    // do not grow the file thirty times.
    assert!(
        with_reader.hwm < 4 * tree_pages,
        "{} pages after 30 rewrites under a long reader; the tree takes {tree_pages}",
        with_reader.hwm
    );
    assert!(
        with_reader.pending_pages >= tree_pages / 2,
        "the reader pins its snapshot: {with_reader:?}"
    );
    let b = reader.bucket(b"a").unwrap().unwrap();
    assert!(
        b.iter()
            .enumerate()
            .all(|(i, x)| x.unwrap().1 == [i as u8; 200])
    );
    drop(reader);

    rewrite(31);
    let after = db.stats();
    // Each commit leaves its own freed pages pending until the next one
    // begins; the reader's pinned snapshot, on top of that, came back.
    assert!(
        after.pending_pages + tree_pages / 2 <= with_reader.pending_pages
            && after.free_pages >= tree_pages / 2,
        "pinned pages come back: with the reader {with_reader:?}, after {after:?}"
    );
    for round in 32..=50 {
        rewrite(round);
    }
    assert_eq!(
        db.stats().hwm,
        with_reader.hwm,
        "with the reader gone, rewrites reuse pages"
    );
    assert!(db.check().is_ok());
}

#[test]
fn defragmentation_beside_writers_and_readers_loses_nothing_and_shrinks_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), opts()).unwrap();
    // Three buckets (one nested), values small and large, then most deleted.
    let val = |i: u64| {
        if i.is_multiple_of(97) {
            vec![(i % 251) as u8; 6000]
        } else {
            vec![(i % 251) as u8; 120]
        }
    };
    fill(&db, b"a", 20_000, val);
    fill(&db, b"b", 5_000, val);
    {
        let mut tx = db.begin_write().unwrap();
        let mut b = tx.bucket_mut(b"b").unwrap().unwrap();
        let mut n = b.create_bucket(b"nested").unwrap();
        for i in 0..3000 {
            n.put(&key(i), &val(i)).unwrap();
        }
        tx.commit().unwrap();
    }
    let mut model: BTreeMap<(u8, Vec<u8>), Vec<u8>> = BTreeMap::new();
    {
        let mut tx = db.begin_write().unwrap();
        {
            let mut a = tx.bucket_mut(b"a").unwrap().unwrap();
            for i in 0..20_000u64 {
                if i % 5 != 0 {
                    a.delete(&key(i)).unwrap();
                } else {
                    model.insert((b'a', key(i)), val(i));
                }
            }
        }
        {
            let mut b = tx.bucket_mut(b"b").unwrap().unwrap();
            let mut n = b.bucket_mut(b"nested").unwrap().unwrap();
            for i in 0..3000u64 {
                if i % 3 != 0 {
                    n.delete(&key(i)).unwrap();
                } else {
                    model.insert((b'n', key(i)), val(i));
                }
            }
        }
        tx.commit().unwrap();
        for i in 0..5_000u64 {
            model.insert((b'b', key(i)), val(i));
        }
    }
    // Let pending pages settle.
    db.begin_write().unwrap().commit().unwrap();
    let before = db.stats();

    let start = Arc::new(Barrier::new(3));
    let stop = Arc::new(AtomicBool::new(false));
    // A writer churning its own key range of bucket "b".
    let writer = {
        let (db, start) = (db.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut mine = BTreeMap::new();
            for round in 0..150u64 {
                let mut tx = db.begin_write().unwrap();
                let mut b = tx.bucket_mut(b"b").unwrap().unwrap();
                for j in 0..20u64 {
                    let k = format!("w-{:04}", (round * 7 + j * 13) % 400).into_bytes();
                    if (round + j) % 4 == 0 {
                        b.delete(&k).unwrap();
                        mine.remove(&k);
                    } else {
                        let v = vec![(round + j) as u8; 80 + (j as usize * 37) % 300];
                        b.put(&k, &v).unwrap();
                        mine.insert(k, v);
                    }
                }
                tx.commit().unwrap();
            }
            mine
        })
    };
    // A reader reading whole snapshots all along.
    let reader = {
        let (db, start, stop) = (db.clone(), start.clone(), stop.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = db.begin_read();
                let a = r.bucket(b"a").unwrap().unwrap();
                assert_eq!(a.iter().count(), 4000);
                n += 1;
            }
            n
        })
    };
    start.wait();
    let report = db
        .defrag(&DefragOptions {
            step_pages: 64,
            ..DefragOptions::default()
        })
        .unwrap();
    let mine = writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    for (k, v) in mine {
        model.insert((b'b', k), v);
    }

    let after = db.stats();
    println!("before {before:?}\nafter {after:?}\n{report:?}");
    assert!(db.check().is_ok(), "{:?}", db.check().problems);
    assert!(
        after.file_size * 2 < before.file_size,
        "defragmentation shrank {} to {} bytes: {report:?}",
        before.file_size,
        after.file_size
    );
    assert!(report.pages_moved > 0 && report.steps > 10, "{report:?}");
    let r = db.begin_read();
    let mut got = BTreeMap::new();
    for (tag, b) in [
        (b'a', r.bucket(b"a").unwrap().unwrap()),
        (b'b', r.bucket(b"b").unwrap().unwrap()),
    ] {
        for x in b.iter() {
            let (k, v) = x.unwrap();
            got.insert((tag, k.to_vec()), v.to_vec());
        }
    }
    let nested = r
        .bucket(b"b")
        .unwrap()
        .unwrap()
        .bucket(b"nested")
        .unwrap()
        .unwrap();
    for x in nested.iter() {
        let (k, v) = x.unwrap();
        got.insert((b'n', k.to_vec()), v.to_vec());
    }
    assert_eq!(got, model);
}

#[test]
fn write_transactions_are_served_in_arrival_order_so_a_busy_writer_starves_no_one() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), opts()).unwrap();
    fill(&db, b"a", 10, |_| b"v".to_vec());
    let a_commits = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let busy = {
        let (db, a_commits, done) = (db.clone(), a_commits.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let mut tx = db.begin_write().unwrap();
                tx.bucket_mut(b"a")
                    .unwrap()
                    .unwrap()
                    .put(b"busy", b"x")
                    .unwrap();
                tx.commit().unwrap();
                a_commits.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while a_commits.load(Ordering::SeqCst) < 5 {
        std::thread::yield_now();
    }
    for i in 0..30u64 {
        let before = a_commits.load(Ordering::SeqCst);
        let mut tx = db.begin_write().unwrap();
        // Counted while we hold the writer's turn, so the busy writer's
        // commits after ours (a descheduled test thread sees many) are not.
        let overtaken = a_commits.load(Ordering::SeqCst) - before;
        tx.bucket_mut(b"a")
            .unwrap()
            .unwrap()
            .put(&key(i), b"w")
            .unwrap();
        tx.commit().unwrap();
        // At most the transaction in progress when we asked, and one the
        // busy writer had already queued for.
        assert!(
            overtaken <= 2,
            "transaction {i} was overtaken {overtaken} times"
        );
    }
    done.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}

#[test]
fn a_reader_keeps_its_mapping_and_snapshot_while_the_file_grows_under_it() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), opts()).unwrap();
    fill(&db, b"a", 100, |i| vec![i as u8; 100]);
    let reader = db.begin_read();
    let size_before = db.stats().file_size;
    // Grow the file to many times its size: new transactions get a new mapping.
    fill(&db, b"big", 20_000, |i| vec![i as u8; 300]);
    let grown = db.stats().file_size;
    assert!(grown > 8 * size_before, "{size_before} -> {grown}");
    // The old reader still reads its snapshot through its own mapping...
    let a = reader.bucket(b"a").unwrap().unwrap();
    assert!(
        a.iter()
            .enumerate()
            .all(|(i, x)| x.unwrap().1 == vec![i as u8; 100])
    );
    assert!(reader.bucket(b"big").unwrap().is_none());
    // ...and a new one sees everything.
    let fresh = db.begin_read();
    assert_eq!(
        fresh.bucket(b"big").unwrap().unwrap().iter().count(),
        20_000
    );
}
