use super::*;

fn r(main: i64) -> Revision {
    Revision::new(main, 0)
}

/// What a lookup finds: the record at `main`, in the generation created at
/// `created`, `version` puts into it.
fn found(main: i64, created: i64, version: i64) -> Option<Found> {
    Some(Found {
        rev: r(main),
        created,
        version,
    })
}

fn rec(key: &[u8], rev: Revision, tombstone: bool, created: i64, version: i64) -> StoredRecord<'_> {
    StoredRecord::new(key, rev, tombstone, created, version, 0)
}

/// put(2) put(3) delete(4) put(5), as in the module docs.
fn example() -> KeyHistory {
    let mut h = KeyHistory::default();
    h.put(r(2), None);
    h.put(r(3), None);
    assert!(h.tombstone(r(4)));
    h.put(r(5), None);
    h
}

#[test]
fn reads_at_every_revision() {
    let h = example();
    assert_eq!(h.get(1), None);
    assert_eq!(h.get(2), found(2, 2, 1));
    assert_eq!(h.get(3), found(3, 2, 2));
    assert_eq!(h.get(4), None);
    assert_eq!(h.get(5), found(5, 5, 1));
    assert_eq!(h.get(100), found(5, 5, 1));
}

#[test]
fn compaction_keeps_the_newest_revision_at_or_below_and_drops_dead_generations() {
    let mut h = example();
    assert_eq!(h.kept(2), Some(r(2)));
    assert_eq!(h.compact(2), (Some(r(2)), false));
    assert_eq!(h.revisions(), vec![r(2), r(3), r(4), r(5)]);
    assert_eq!(h.compact(3), (Some(r(3)), false));
    assert_eq!(h.get(3), found(3, 2, 2));
    // The generation deleted at 4 goes entirely.
    assert_eq!(h.compact(4), (None, false));
    assert_eq!(h.revisions(), vec![r(5)]);
    assert_eq!(h.get(5).unwrap().version, 1);
    let mut gone = KeyHistory::default();
    gone.put(r(2), None);
    gone.tombstone(r(3));
    assert_eq!(gone.compact(3), (None, true));
}

#[test]
fn restored_records_carry_creation_and_version_across_compacted_history() {
    let mut idx = KeyIndex::default();
    // Revisions 2 and 3 of "k" were compacted away; 4 holds version 3.
    idx.restore(&rec(b"k", r(4), false, 2, 3));
    idx.restore(&rec(b"k", r(6), false, 0, 0));
    assert_eq!(idx.get(b"k", 4), found(4, 2, 3));
    assert_eq!(idx.get(b"k", 6), found(6, 2, 4));
    idx.restore(&rec(b"k", r(7), true, 0, 0));
    assert_eq!(idx.get(b"k", 7), None);
    // A tombstone whose puts are gone does not break the rebuild.
    idx.restore(&rec(b"x", r(8), true, 0, 0));
    assert_eq!(idx.get(b"x", 8), None);
    assert!(idx.compact(8).is_empty());
    assert_eq!(idx.len(), 0);
}

#[test]
fn compaction_in_chunks_matches_compaction_in_one_go() {
    let mut whole = KeyIndex::default();
    for i in 0..100i64 {
        let k = format!("k{:03}", i % 37).into_bytes();
        if i % 5 == 4 {
            whole.tombstone(&k, r(i + 2));
        } else {
            whole.put(&k, r(i + 2));
        }
    }
    let mut chunked = whole.clone();
    let kept = whole.kept(60);
    let all = whole.compact(60);
    assert_eq!(kept, all);
    let mut keep = HashSet::new();
    let mut from = None;
    loop {
        from = chunked.compact_some(60, from.as_deref(), 4, &mut keep);
        if from.is_none() {
            break;
        }
    }
    assert_eq!(keep, all);
    assert_eq!(chunked.len(), whole.len());
    for (k, h) in &whole.keys {
        assert_eq!(chunked.history(&k.bytes), Some(h));
    }
}

#[test]
fn a_rebuild_in_one_pass_matches_restoring_record_by_record() {
    // Keys sharing their first eight bytes, prefixes of each other, and
    // deleted, recreated and orphaned histories.
    let keys: Vec<&[u8]> = vec![
        b"",
        b"\0",
        b"a",
        b"ab",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefghi",
        b"abcdefgi",
        b"b",
    ];
    let mut records = Vec::new();
    for i in 0..200i64 {
        let k = keys[(i as usize * 7) % keys.len()];
        records.push(rec(k, r(i + 2), i % 5 == 3, i / 3 + 1, 1 + i % 4));
    }
    let mut one_by_one = KeyIndex::default();
    let mut latest_expected = std::collections::BTreeMap::new();
    for rc in &records {
        one_by_one.restore(rc);
        latest_expected.insert(rc.key.to_vec(), rc.rev);
    }
    let mut latest = std::collections::BTreeMap::new();
    let built = KeyIndex::rebuild(records.clone(), 2, |rc| {
        assert!(latest.insert(rc.key.to_vec(), rc.rev).is_none());
    });
    assert_eq!(latest, latest_expected);
    assert_eq!(built.len(), one_by_one.len());
    let a: Vec<_> = built.keys.iter().collect();
    let b: Vec<_> = one_by_one.keys.iter().collect();
    assert_eq!(a, b);
}

#[test]
fn a_rebuild_split_between_threads_matches_restoring_record_by_record() {
    // Enough records for the parallel sort; keys sharing heads so that
    // runs of one key straddle the slices.
    let keys: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| {
            let mut k = b"/registry/pods/".to_vec();
            k.extend_from_slice(&(i.wrapping_mul(2_654_435_761) % 3001).to_be_bytes());
            k
        })
        .collect();
    let mut x = 7u64;
    let mut records = Vec::new();
    for i in 0..20_000i64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = &keys[(x >> 33) as usize % keys.len()];
        records.push(StoredRecord::new(
            k,
            r(i + 2),
            x.is_multiple_of(7),
            i + 1,
            1,
            (x % 3) as i64,
        ));
    }
    let mut one_by_one = KeyIndex::default();
    let mut newest = std::collections::BTreeMap::new();
    for rc in &records {
        one_by_one.restore(rc);
        newest.insert(rc.key.to_vec(), (rc.rev, rc.lease));
    }
    let mut seen = Vec::new();
    let built = KeyIndex::rebuild(records.clone(), 2, |rc| {
        seen.push((rc.key.to_vec(), (rc.rev, rc.lease)));
    });
    assert_eq!(seen, newest.into_iter().collect::<Vec<_>>());
    let a: Vec<_> = built.keys.iter().collect();
    let b: Vec<_> = one_by_one.keys.iter().collect();
    assert_eq!(a, b);
}

#[test]
fn keys_order_as_their_bytes_whatever_their_first_eight_bytes() {
    let mut keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"abcdefg".to_vec(),
        b"abcdefg\0".to_vec(),
        b"abcdefg\0\0".to_vec(),
        b"abcdefgh".to_vec(),
        b"abcdefgh\xff".to_vec(),
        b"abcdefh".to_vec(),
        vec![0xff; 9],
        vec![0xff; 8],
    ];
    let mut idx = KeyIndex::default();
    for (i, k) in keys.iter().enumerate() {
        idx.put(k, r(i as i64 + 2));
    }
    keys.sort();
    let all = Interval::from_etcd(b"", b"\0");
    let listed: Vec<Vec<u8>> = idx.range(&all, 100).map(|(k, _)| k.to_vec()).collect();
    assert_eq!(listed, keys);
    let from = Interval::from_etcd(b"abcdefg\0", b"abcdefgh\xff");
    let listed: Vec<Vec<u8>> = idx.range(&from, 100).map(|(k, _)| k.to_vec()).collect();
    assert_eq!(listed, keys[4..7].to_vec());
}

#[test]
fn intervals_follow_etcds_conventions() {
    assert_eq!(
        Interval::from_etcd(b"a", b""),
        Interval::Single(b"a".to_vec())
    );
    let all_from = Interval::from_etcd(b"b", b"\0");
    assert!(all_from.contains(b"b") && all_from.contains(b"zzz") && !all_from.contains(b"a"));
    let r = Interval::from_etcd(b"b", b"d");
    assert!(r.contains(b"c") && !r.contains(b"d"));
    assert!(Interval::from_etcd(b"d", b"b").is_empty());
    let mut idx = KeyIndex::default();
    for (i, k) in [&b"a"[..], b"b", b"c", b"d"].into_iter().enumerate() {
        idx.put(k, Revision::new(i as i64 + 2, 0));
    }
    let keys: Vec<_> = idx.range(&r, 100).map(|(k, _)| k.to_vec()).collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(idx.range(&r, 3).count(), 1);
}
