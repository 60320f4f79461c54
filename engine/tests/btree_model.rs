//! Model-based property test: random puts, deletes, bucket changes, commits,
//! aborts and reopens, checked against `BTreeMap`s after every step that
//! should change what is visible — contents, cursors and ranges — with the
//! consistency checker run after every commit.

use std::collections::BTreeMap;
use std::ops::Bound;

use cairn_engine::btree::{Bucket, Db, Options, Value, WriteTxn};
use proptest::prelude::*;

type Path = Vec<Vec<u8>>;
type Model = BTreeMap<Path, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Clone, Debug)]
enum Op {
    Put {
        bucket: u8,
        key: u16,
        len: Len,
    },
    Delete {
        bucket: u8,
        key: u16,
    },
    /// `n` keys from `start`, every `stride`-th: grows deep trees.
    BulkPut {
        bucket: u8,
        start: u16,
        n: u16,
        stride: u16,
        len: Len,
    },
    /// Deletes keys `[start, start + n)`: shrinks them, merging and collapsing.
    BulkDelete {
        bucket: u8,
        start: u16,
        n: u16,
    },
    DeleteBucket {
        bucket: u8,
    },
    Commit,
    Abort,
    Reopen,
    Scan {
        bucket: u8,
        from: u16,
    },
}

#[derive(Clone, Copy, Debug)]
enum Len {
    Small(u8),
    Medium(u16),
    Large(u16),
}

fn len() -> impl Strategy<Value = Len> {
    prop_oneof![
        6 => any::<u8>().prop_map(|n| Len::Small(n % 48)),
        3 => (100u16..700).prop_map(Len::Medium),
        1 => (1500u16..9000).prop_map(Len::Large),
    ]
}

const KEYS: u16 = 2000;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u8..5, 0u16..KEYS, len()).prop_map(|(bucket, key, len)| Op::Put { bucket, key, len }),
        15 => (0u8..5, 0u16..KEYS).prop_map(|(bucket, key)| Op::Delete { bucket, key }),
        3 => (0u8..5, 0u16..KEYS, 1u16..600, 1u16..4, len())
            .prop_map(|(bucket, start, n, stride, len)| Op::BulkPut { bucket, start, n, stride, len }),
        2 => (0u8..5, 0u16..KEYS, 1u16..900).prop_map(|(bucket, start, n)| Op::BulkDelete { bucket, start, n }),
        1 => (0u8..5).prop_map(|bucket| Op::DeleteBucket { bucket }),
        4 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
        3 => (0u8..5, 0u16..KEYS).prop_map(|(bucket, from)| Op::Scan { bucket, from }),
    ]
}

/// Buckets 0–2 are top level; 3 and 4 are nested inside bucket 0.
fn path(b: u8) -> Path {
    match b {
        0..=2 => vec![format!("bucket-{b}").into_bytes()],
        _ => vec![b"bucket-0".to_vec(), format!("nested-{b}").into_bytes()],
    }
}

/// Keys of varied lengths; every 50th key is long.
fn key(k: u16) -> Vec<u8> {
    let mut s = format!("k{k:0width$}", width = 1 + (k % 7) as usize).into_bytes();
    if k.is_multiple_of(50) {
        s.resize(150 + (k % 40) as usize, b'~');
    }
    s
}

fn value(k: u16, l: Len, salt: u64) -> Vec<u8> {
    let n = match l {
        Len::Small(n) => n as usize,
        Len::Medium(n) | Len::Large(n) => n as usize,
    };
    (0..n)
        .map(|i| (i as u64 * 31 + k as u64 * 7 + salt) as u8)
        .collect()
}

fn view<'a>(tx: &'a WriteTxn, p: &Path) -> Option<Bucket<'a>> {
    let mut b = tx.bucket(&p[0]).unwrap()?;
    for name in &p[1..] {
        b = b.bucket(name).unwrap()?;
    }
    Some(b)
}

fn read_view<'a>(r: &'a cairn_engine::btree::ReadTxn, p: &Path) -> Option<Bucket<'a>> {
    let mut b = r.bucket(&p[0]).unwrap()?;
    for name in &p[1..] {
        b = b.bucket(name).unwrap()?;
    }
    Some(b)
}

/// Everything in a bucket (values only; nested buckets listed separately).
fn contents(b: Option<Bucket<'_>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let Some(b) = b else { return BTreeMap::new() };
    b.iter()
        .map(|r| r.unwrap())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn expect(model: &Model, p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    model.get(p).cloned().unwrap_or_default()
}

/// Cursor walks and ranges agree with the model.
fn check_cursors(b: Option<Bucket<'_>>, m: &BTreeMap<Vec<u8>, Vec<u8>>, from: &[u8]) {
    let Some(b) = b else {
        assert!(m.is_empty());
        return;
    };
    let data = |v: Value<'_>| match v {
        Value::Data(d) => Some(d.to_vec()),
        Value::Bucket => None,
    };
    let mut c = b.cursor();
    // Seek, then walk forward three and back two.
    let mut got = Vec::new();
    let mut cur = c.seek(from).unwrap();
    while let Some((k, v)) = cur {
        if let Some(d) = data(v) {
            got.push((k.to_vec(), d));
        }
        if got.len() == 3 {
            break;
        }
        cur = c.next().unwrap();
    }
    let want: Vec<_> = m
        .range::<[u8], _>((Bound::Included(from), Bound::Unbounded))
        .take(3)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(got, want, "seek({from:?}) then next");
    // Backwards from the end.
    let mut back = Vec::new();
    let mut cur = c.last().unwrap();
    while let Some((k, v)) = cur {
        if data(v).is_some() {
            back.push(k.to_vec());
        }
        cur = c.prev().unwrap();
    }
    let want_back: Vec<_> = m.keys().rev().cloned().collect();
    assert_eq!(back, want_back, "last then prev");
    // A bounded range.
    let hi = [from, b"~"].concat();
    let got: Vec<_> = b
        .range(Bound::Excluded(from), Bound::Excluded(&hi))
        .map(|r| r.unwrap().0.to_vec())
        .collect();
    let want: Vec<_> = m
        .range::<[u8], _>((Bound::Excluded(from), Bound::Excluded(&hi[..])))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(got, want, "range ({from:?}, {hi:?})");
}

fn verify_committed(db: &Db, model: &Model) {
    let report = db.check();
    assert!(report.is_ok(), "check found: {:?}", report.problems);
    let r = db.begin_read();
    for b in 0..5u8 {
        let p = path(b);
        assert_eq!(contents(read_view(&r, &p)), expect(model, &p), "bucket {b}");
    }
    let keys: u64 = model.values().map(|m| m.len() as u64).sum();
    assert_eq!(report.keys, keys);
}

fn run(ops: Vec<Op>, page_size: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("db");
    let opts = Options {
        page_size,
        grow_step: 256 << 10,
        ..Options::default()
    };
    let mut db = Db::open(&file, opts.clone()).unwrap();
    let mut committed: Model = BTreeMap::new();
    let mut pending = committed.clone();
    let mut tx = Some(db.begin_write().unwrap());
    let mut salt = 0u64;
    for op in ops {
        salt += 1;
        match op {
            Op::Put {
                bucket,
                key: k,
                len,
            } => {
                let p = path(bucket);
                let v = value(k, len, salt);
                let t = tx.as_mut().unwrap();
                if p.len() == 1 {
                    t.create_bucket_if_missing(&p[0])
                        .unwrap()
                        .put(&key(k), &v)
                        .unwrap();
                } else {
                    let mut top = t.create_bucket_if_missing(&p[0]).unwrap();
                    top.create_bucket_if_missing(&p[1])
                        .unwrap()
                        .put(&key(k), &v)
                        .unwrap();
                }
                pending.entry(p).or_default().insert(key(k), v);
            }
            Op::Delete { bucket, key: k } => {
                let p = path(bucket);
                let t = tx.as_mut().unwrap();
                let existed = if p.len() == 1 {
                    match t.bucket_mut(&p[0]).unwrap() {
                        Some(mut b) => b.delete(&key(k)).unwrap(),
                        None => false,
                    }
                } else {
                    match t.bucket_mut(&p[0]).unwrap() {
                        Some(mut top) => match top.bucket_mut(&p[1]).unwrap() {
                            Some(mut b) => b.delete(&key(k)).unwrap(),
                            None => false,
                        },
                        None => false,
                    }
                };
                let model_had = pending
                    .get_mut(&p)
                    .and_then(|m| m.remove(&key(k)))
                    .is_some();
                assert_eq!(existed, model_had, "delete {k} from bucket {bucket}");
            }
            Op::BulkPut {
                bucket,
                start,
                n,
                stride,
                len,
            } => {
                let p = path(bucket);
                let t = tx.as_mut().unwrap();
                let mut top = t.create_bucket_if_missing(&p[0]).unwrap();
                let mut nested;
                let b = if p.len() == 1 {
                    &mut top
                } else {
                    nested = top.create_bucket_if_missing(&p[1]).unwrap();
                    &mut nested
                };
                let m = pending.entry(p.clone()).or_default();
                for j in 0..n {
                    let k = (start as u32 + j as u32 * stride as u32) % KEYS as u32;
                    let v = value(k as u16, len, salt + j as u64);
                    b.put(&key(k as u16), &v).unwrap();
                    m.insert(key(k as u16), v);
                }
            }
            Op::BulkDelete { bucket, start, n } => {
                let p = path(bucket);
                let t = tx.as_mut().unwrap();
                let Some(mut top) = t.bucket_mut(&p[0]).unwrap() else {
                    continue;
                };
                let mut nested;
                let b = if p.len() == 1 {
                    &mut top
                } else {
                    match top.bucket_mut(&p[1]).unwrap() {
                        Some(x) => {
                            nested = x;
                            &mut nested
                        }
                        None => continue,
                    }
                };
                let m = pending.entry(p.clone()).or_default();
                for k in start..start.saturating_add(n).min(KEYS) {
                    let had = b.delete(&key(k)).unwrap();
                    assert_eq!(had, m.remove(&key(k)).is_some(), "bulk delete {k}");
                }
            }
            Op::DeleteBucket { bucket } => {
                let p = path(bucket);
                let t = tx.as_mut().unwrap();
                let exists = view(t, &p).is_some();
                if exists {
                    if p.len() == 1 {
                        t.delete_bucket(&p[0]).unwrap();
                    } else {
                        t.bucket_mut(&p[0])
                            .unwrap()
                            .unwrap()
                            .delete_bucket(&p[1])
                            .unwrap();
                    }
                }
                pending.retain(|q, _| !q.starts_with(&p));
            }
            Op::Commit => {
                tx.take().unwrap().commit().unwrap();
                committed = pending.clone();
                verify_committed(&db, &committed);
                tx = Some(db.begin_write().unwrap());
            }
            Op::Abort => {
                tx.take().unwrap().abort();
                pending = committed.clone();
                verify_committed(&db, &committed);
                tx = Some(db.begin_write().unwrap());
            }
            Op::Reopen => {
                drop(tx.take());
                pending = committed.clone();
                drop(db);
                db = Db::open(&file, opts.clone()).unwrap();
                verify_committed(&db, &committed);
                tx = Some(db.begin_write().unwrap());
            }
            Op::Scan { bucket, from } => {
                let p = path(bucket);
                let t = tx.as_ref().unwrap();
                // The transaction sees its own uncommitted changes.
                assert_eq!(contents(view(t, &p)), expect(&pending, &p));
                check_cursors(view(t, &p), &expect(&pending, &p), &key(from));
            }
        }
    }
    tx.take().unwrap().commit().unwrap();
    verify_committed(&db, &pending);
    drop(db);
    let db = Db::open(&file, opts).unwrap();
    verify_committed(&db, &pending);
    let r = db.begin_read();
    for b in 0..5 {
        let p = path(b);
        check_cursors(
            read_view(&r, &p),
            &expect(&pending, &p),
            &key(b as u16 * 37),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn small_pages_match_the_model(ops in prop::collection::vec(op(), 1..400)) {
        run(ops, 1024);
    }

    #[test]
    fn default_pages_match_the_model(ops in prop::collection::vec(op(), 1..400)) {
        run(ops, 4096);
    }
}
