//! The checker finds each kind of damage: a torn page, a leaked page, a page
//! referenced twice, keys out of order, a reference past the end.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use cairn_engine::btree::freelist::{decode_extents, encode_extents};
use cairn_engine::btree::page::{ELEM_LEN, HEADER_LEN, Le64, seal};
use cairn_engine::btree::{Db, Mapping, Options, Problem, Use, check_snapshot, read_metas};

const PS: usize = 4096;

/// A database with a few thousand keys across two buckets and some free pages.
fn build(path: &Path) {
    let db = Db::open(path, Options::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    for name in [&b"a"[..], b"b"] {
        let mut b = tx.create_bucket(name).unwrap();
        for i in 0..3000u32 {
            b.put(format!("key-{i:05}").as_bytes(), &[i as u8; 60])
                .unwrap();
        }
        b.put(b"big", &vec![7u8; 20_000]).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = db.begin_write().unwrap();
    let mut a = tx.bucket_mut(b"a").unwrap().unwrap();
    for i in 0..1000u32 {
        a.delete(format!("key-{i:05}").as_bytes()).unwrap();
    }
    tx.commit().unwrap();
}

fn check(path: &Path) -> (Vec<Problem>, Vec<Option<Use>>) {
    let file = File::open(path).unwrap();
    let meta = read_metas(&file)
        .into_iter()
        .flatten()
        .max_by_key(|m| m.txid)
        .unwrap();
    let len = file.metadata().unwrap().len();
    let map = Mapping::new(&file, len, len).unwrap();
    let (report, uses) = check_snapshot(&map, &meta);
    (report.problems, uses)
}

fn pages_of(uses: &[Option<Use>], what: Use) -> Vec<u64> {
    (0..uses.len())
        .filter(|&p| uses[p] == Some(what))
        .map(|p| p as u64)
        .collect()
}

fn edit(path: &Path, page: u64, len_pages: usize, f: impl FnOnce(&mut Vec<u8>)) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0u8; len_pages * PS];
    file.read_exact_at(&mut buf, page * PS as u64).unwrap();
    f(&mut buf);
    file.write_all_at(&buf, page * PS as u64).unwrap();
}

#[test]
fn a_healthy_database_checks_clean_and_every_page_is_accounted_for() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let db = Db::open(&path, Options::default()).unwrap();
    let r = db.check();
    assert!(r.is_ok(), "{:?}", r.problems);
    let c = r.pages;
    assert_eq!(
        c.meta + c.branch + c.leaf + c.overflow + c.freelist + c.free,
        r.hwm
    );
    assert_eq!(r.buckets, 2);
    assert_eq!(r.keys, 2000 + 3000 + 2);
    assert!(c.overflow >= 10 && c.free > 0 && r.max_depth >= 2, "{r:?}");
}

#[test]
fn a_torn_leaf_is_reported_as_malformed() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let (_, uses) = check(&path);
    let leaf = pages_of(&uses, Use::Leaf)[5];
    edit(&path, leaf, 1, |b| b[PS / 2..].fill(0));
    let (problems, _) = check(&path);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Malformed { page, reason } if *page == leaf && reason.contains("checksum"))),
        "{problems:?}"
    );
}

#[test]
fn a_page_missing_from_the_free_list_is_reported_as_leaked() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let (_, uses) = check(&path);
    let fl = pages_of(&uses, Use::Freelist);
    let first = fl[0];
    let mut dropped = None;
    edit(&path, first, fl.len(), |b| {
        let mut ext = decode_extents(&b[HEADER_LEN..], first).unwrap();
        dropped = Some(ext.remove(0));
        let enc = encode_extents(&ext);
        b[HEADER_LEN..].fill(0);
        b[HEADER_LEN..HEADER_LEN + enc.len()].copy_from_slice(&enc);
        seal(b);
    });
    let (start, len) = dropped.unwrap();
    let (problems, _) = check(&path);
    assert!(
        problems.contains(&Problem::Unreachable { page: start, len }),
        "{problems:?}"
    );
}

#[test]
fn two_branch_entries_naming_one_page_are_reported_as_a_double_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let (_, uses) = check(&path);
    let branch = pages_of(&uses, Use::Branch)[0];
    let mut target = 0;
    edit(&path, branch, 1, |b| {
        // Point the second entry's child at the first entry's child.
        let child_at = |i: usize| HEADER_LEN + i * ELEM_LEN + 8;
        let first: [u8; 8] = b[child_at(0)..child_at(0) + 8].try_into().unwrap();
        target = Le64::new(u64::from_le_bytes(first)).get();
        b[child_at(1)..child_at(1) + 8].copy_from_slice(&first);
        seal(b);
    });
    let (problems, _) = check(&path);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::DoubleReferenced { page, .. } if *page == target)),
        "{problems:?}"
    );
    // The orphaned second child and its subtree now belong to nothing.
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Unreachable { .. }))
    );
}

#[test]
fn keys_out_of_order_and_references_past_the_end_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let (_, uses) = check(&path);
    let leaves = pages_of(&uses, Use::Leaf);
    let leaf = leaves[3];
    edit(&path, leaf, 1, |b| {
        // Keys are "key-NNNNN": make the first one sort last.
        let pos =
            u32::from_le_bytes(b[HEADER_LEN + 4..HEADER_LEN + 8].try_into().unwrap()) as usize;
        b[pos] = b'z';
        seal(b);
    });
    let branch = pages_of(&uses, Use::Branch)[0];
    let hwm = uses.len() as u64;
    edit(&path, branch, 1, |b| {
        let at = HEADER_LEN + ELEM_LEN + 8;
        b[at..at + 8].copy_from_slice(&(hwm + 5).to_le_bytes());
        seal(b);
    });
    let (problems, _) = check(&path);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Malformed { page, reason } if *page == leaf && reason.contains("order"))),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::OutOfBounds { page, .. } if *page == hwm + 5)),
        "{problems:?}"
    );
}
