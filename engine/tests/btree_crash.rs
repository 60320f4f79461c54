//! Crash tests. A workload of several transactions runs on a storage layer
//! that crashes at its n-th operation, for every n; the disk image after the
//! power loss (everything unsynced dropped, the last write torn at a given
//! byte) must reopen to exactly the last committed transaction — or, when the
//! crash cut the commit after its meta write had been issued, possibly that
//! transaction — and pass the consistency checker.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use cairn_engine::btree::{Db, FaultyStorage, Options, ReadTxn, Value, WriteTxn};

type Model = BTreeMap<Vec<Vec<u8>>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn opts() -> Options {
    Options {
        page_size: 1024,
        grow_step: 64 << 10,
        ..Options::default()
    }
}

fn k(s: &str, i: usize) -> Vec<u8> {
    format!("{s}{i:04}").into_bytes()
}

fn v(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + seed * 13) as u8).collect()
}

/// One step of the workload: changes a transaction and the model alike.
type Step = fn(&mut WriteTxn, &mut Model) -> cairn_engine::btree::Result<()>;

fn put(
    tx: &mut WriteTxn,
    m: &mut Model,
    path: &[&str],
    key: Vec<u8>,
    val: Vec<u8>,
) -> cairn_engine::btree::Result<()> {
    let mut b = tx.create_bucket_if_missing(path[0].as_bytes())?;
    if path.len() == 2 {
        b.create_bucket_if_missing(path[1].as_bytes())?
            .put(&key, &val)?;
    } else {
        b.put(&key, &val)?;
    }
    m.entry(path.iter().map(|p| p.as_bytes().to_vec()).collect())
        .or_default()
        .insert(key, val);
    Ok(())
}

fn steps() -> Vec<Step> {
    vec![
        |tx, m| {
            for i in 0..200 {
                put(tx, m, &["a"], k("k", i), v(30 + i % 70, i))?;
            }
            Ok(())
        },
        |tx, m| {
            put(tx, m, &["a"], b"big1".to_vec(), v(10_000, 1))?;
            put(tx, m, &["a"], b"big2".to_vec(), v(5_000, 2))?;
            for i in 0..40 {
                put(tx, m, &["b"], k("x", i), v(200, i))?;
            }
            Ok(())
        },
        |tx, m| {
            let mut a = tx.bucket_mut(b"a")?.expect("a");
            for i in 0..100 {
                assert!(a.delete(&k("k", i))?);
                m.get_mut(&vec![b"a".to_vec()]).unwrap().remove(&k("k", i));
            }
            for i in 150..200 {
                put(tx, m, &["a"], k("k", i), v(90, i + 1000))?;
            }
            Ok(())
        },
        |tx, m| {
            for i in 0..50 {
                put(tx, m, &["a", "n"], k("q", i), v(60, i))?;
            }
            Ok(())
        },
        |tx, m| {
            tx.delete_bucket(b"b")?;
            m.remove(&vec![b"b".to_vec()]);
            put(tx, m, &["a"], b"big1".to_vec(), b"small now".to_vec())
        },
        |tx, m| {
            for i in 0..300 {
                put(tx, m, &["a"], k("seq", i), v(40, i))?;
            }
            Ok(())
        },
        |tx, m| {
            tx.bucket_mut(b"a")?.expect("a").delete_bucket(b"n")?;
            m.remove(&vec![b"a".to_vec(), b"n".to_vec()]);
            Ok(())
        },
        |tx, m| {
            assert!(tx.bucket_mut(b"a")?.expect("a").delete(b"big2")?);
            m.get_mut(&vec![b"a".to_vec()])
                .unwrap()
                .remove(&b"big2".to_vec());
            Ok(())
        },
    ]
}

/// Runs the workload until something fails. Returns the last committed model
/// and, if a commit failed, the model that commit tried to make durable.
fn run(db: &Db) -> (Model, Option<Model>) {
    let mut committed = Model::new();
    for step in steps() {
        let mut attempt = committed.clone();
        let mut tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(_) => return (committed, None),
        };
        if step(&mut tx, &mut attempt).is_err() {
            return (committed, None);
        }
        match tx.commit() {
            Ok(()) => committed = attempt,
            Err(_) => return (committed, Some(attempt)),
        }
    }
    (committed, None)
}

fn read_all(r: &ReadTxn) -> Model {
    let mut m = Model::new();
    for name in r.buckets().unwrap() {
        let b = r.bucket(&name).unwrap().unwrap();
        let mut c = b.cursor();
        let mut cur = c.first().unwrap();
        let mut top = BTreeMap::new();
        while let Some((key, val)) = cur {
            match val {
                Value::Data(d) => {
                    top.insert(key.to_vec(), d.to_vec());
                }
                Value::Bucket => {
                    let nested = b.bucket(key).unwrap().unwrap();
                    let content: BTreeMap<_, _> = nested
                        .iter()
                        .map(|x| x.unwrap())
                        .map(|(a, b)| (a.to_vec(), b.to_vec()))
                        .collect();
                    if !content.is_empty() {
                        m.insert(vec![name.clone(), key.to_vec()], content);
                    }
                }
            }
            cur = c.next().unwrap();
        }
        if !top.is_empty() {
            m.insert(vec![name.clone()], top);
        }
    }
    m
}

fn faulty_db(path: &Path) -> (Db, Arc<FaultyStorage>) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let storage = Arc::new(FaultyStorage::new(file));
    let db = Db::open_with_storage(path, Box::new(storage.clone()), opts()).unwrap();
    (db, storage)
}

#[test]
fn a_crash_at_every_storage_operation_reopens_to_the_last_commit_and_checks_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.db");
    drop(Db::open(&base, opts()).unwrap());

    // Dry run: how many storage operations the workload takes.
    let dry = tmp.path().join("dry.db");
    fs::copy(&base, &dry).unwrap();
    let (db, storage) = faulty_db(&dry);
    let (full, failed) = run(&db);
    assert!(failed.is_none());
    let total = storage.ops();
    drop(db);
    assert!(
        total > 30,
        "the workload should take many operations, took {total}"
    );

    let mut outcomes = [0usize; 2];
    for crash in 1..=total {
        for torn in [0usize, 1, 37, 4096, usize::MAX] {
            let live = tmp.path().join("live.db");
            fs::copy(&base, &live).unwrap();
            let (db, storage) = faulty_db(&live);
            storage.crash_at(crash);
            let (committed, attempted) = run(&db);
            assert!(storage.crashed());
            let image = storage.crash_image(torn).unwrap();
            drop(db);

            let after = tmp.path().join("after.db");
            fs::write(&after, &image).unwrap();
            let db = Db::open(&after, opts())
                .unwrap_or_else(|e| panic!("crash at op {crash}, torn {torn}: {e}"));
            let report = db.check();
            assert!(
                report.is_ok(),
                "crash at op {crash}, torn {torn}: {:?}",
                report.problems
            );
            let got = read_all(&db.begin_read());
            if got == committed {
                outcomes[0] += 1;
            } else if attempted.as_ref() == Some(&got) {
                outcomes[1] += 1;
            } else {
                panic!(
                    "crash at op {crash}, torn {torn}: the reopened database holds neither the last commit nor the cut one"
                );
            }
            // It keeps working.
            let mut tx = db.begin_write().unwrap();
            tx.create_bucket_if_missing(b"after")
                .unwrap()
                .put(b"k", b"v")
                .unwrap();
            tx.commit().unwrap();
            assert!(db.check().is_ok());
            drop(db);
            fs::remove_file(&after).unwrap();
            fs::remove_file(&live).unwrap();
        }
    }
    println!("{total} storage operations; outcomes (last commit, cut commit): {outcomes:?}");
    // Both outcomes occurred: cuts before the meta, and cuts after it.
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    assert_eq!(
        read_all(&Db::open(&dry, opts()).unwrap().begin_read()),
        full
    );
}
