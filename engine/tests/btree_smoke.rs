use cairn_engine::btree::{Db, Options};

fn key(i: u32) -> Vec<u8> {
    format!("key-{:08}", i.wrapping_mul(2654435761) % 1_000_000).into_bytes()
}

#[test]
fn smoke() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let opts = Options {
        grow_step: 1 << 20,
        ..Options::default()
    };
    let db = Db::open(&path, opts.clone()).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut b = tx.create_bucket(b"a").unwrap();
        for i in 0..10_000u32 {
            b.put(&key(i), format!("value-{i}").as_bytes()).unwrap();
        }
    }
    tx.commit().unwrap();
    let r = db.check();
    assert!(r.is_ok(), "{:?}", r.problems);
    println!("{r:?}");
    drop(db);
    let db = Db::open(&path, opts).unwrap();
    let rt = db.begin_read();
    let b = rt.bucket(b"a").unwrap().unwrap();
    for i in 0..10_000u32 {
        assert_eq!(
            b.get(&key(i)).unwrap(),
            Some(format!("value-{i}").as_bytes()),
            "{i}"
        );
    }
    let all: Vec<_> = b.iter().map(|r| r.unwrap().0.to_vec()).collect();
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    drop(rt);
    let mut tx = db.begin_write().unwrap();
    {
        let mut b = tx.bucket_mut(b"a").unwrap().unwrap();
        for i in 0..9_000u32 {
            assert!(b.delete(&key(i)).unwrap());
        }
    }
    tx.commit().unwrap();
    let r = db.check();
    assert!(r.is_ok(), "{:?}", r.problems);
    println!("{r:?} {:?}", db.stats());
    let rt = db.begin_read();
    let b = rt.bucket(b"a").unwrap().unwrap();
    assert_eq!(b.iter().count(), 1000);
}

#[test]
fn closing_a_database_releases_its_lock_at_once_and_a_second_writer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    let no_wait = Options {
        lock_timeout: std::time::Duration::ZERO,
        ..Options::default()
    };
    let db = Db::open(&path, no_wait.clone()).unwrap();
    // Populate and read so the mapping has pages faulted in.
    let mut tx = db.begin_write().unwrap();
    let mut b = tx.create_bucket(b"a").unwrap();
    for i in 0..5000u32 {
        b.put(&key(i), &[7u8; 300]).unwrap();
    }
    tx.commit().unwrap();
    assert_eq!(
        db.begin_read()
            .bucket(b"a")
            .unwrap()
            .unwrap()
            .iter()
            .count(),
        5000
    );
    assert!(matches!(
        Db::open(&path, no_wait.clone()),
        Err(cairn_engine::btree::Error::Locked(_))
    ));
    drop(db);
    for _ in 0..20 {
        let db = Db::open(&path, no_wait.clone())
            .expect("the lock is free the moment the database is closed");
        assert_eq!(
            db.begin_read()
                .bucket(b"a")
                .unwrap()
                .unwrap()
                .iter()
                .count(),
            5000
        );
    }
}

#[test]
fn a_copy_of_a_read_snapshot_is_that_snapshot_while_writers_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path().join("db"), Options::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut b = tx.create_bucket(b"a").unwrap();
        for i in 0..5_000u32 {
            b.put(&key(i), format!("v1-{i}").as_bytes()).unwrap();
        }
    }
    tx.commit().unwrap();
    let snap = db.begin_read();
    // Writers change and delete everything after the snapshot was taken.
    for round in 0..3 {
        let mut tx = db.begin_write().unwrap();
        {
            let mut b = tx.bucket_mut(b"a").unwrap().unwrap();
            for i in 0..5_000u32 {
                if i % 2 == 0 {
                    b.delete(&key(i)).unwrap();
                } else {
                    b.put(&key(i), format!("v2-{round}-{i}").as_bytes())
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }
    let mut bytes = Vec::new();
    let n = snap.copy_to(&mut bytes).unwrap();
    assert_eq!(n as usize, bytes.len());
    let copy_path = tmp.path().join("copy");
    std::fs::write(&copy_path, &bytes).unwrap();
    let copy = Db::open(&copy_path, Options::default()).unwrap();
    let r = copy.check();
    assert!(r.is_ok(), "{:?}", r.problems);
    let rt = copy.begin_read();
    let b = rt.bucket(b"a").unwrap().unwrap();
    for i in 0..5_000u32 {
        assert_eq!(
            b.get(&key(i)).unwrap(),
            Some(format!("v1-{i}").as_bytes()),
            "{i}"
        );
    }
    assert_eq!(b.iter().count(), 5_000);
}
