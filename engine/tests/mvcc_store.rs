//! The MVCC store's semantics, request by request, against etcd's rules
//! (compat.md §4).

use std::time::Duration;

use cairn_engine::mvcc::*;

fn opts() -> StoreOptions {
    StoreOptions {
        batch_interval: Duration::from_millis(5),
        compaction_pause: Duration::ZERO,
        ..StoreOptions::default()
    }
}

struct T {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
    next: u64,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path, opts()).unwrap();
        T {
            _dir: dir,
            path,
            store,
            next: 1,
        }
    }
    fn entry(&mut self) -> EntryId {
        self.next += 1;
        EntryId::new(self.next, 1)
    }
    fn write(&mut self, req: WriteRequest) -> Result<WriteResponse> {
        let e = self.entry();
        self.store.write(e, req).map(|a| a.unwrap().response)
    }
    fn put(&mut self, k: &str, v: &str) -> i64 {
        self.write(WriteRequest::Put(PutRequest::new(k, v)))
            .unwrap()
            .revision()
    }
    fn del(&mut self, k: &str, end: &str) -> DeleteRangeResponse {
        match self
            .write(WriteRequest::DeleteRange(DeleteRangeRequest::new(k, end)))
            .unwrap()
        {
            WriteResponse::DeleteRange(r) => r,
            _ => unreachable!(),
        }
    }
    fn get(&self, k: &str) -> Option<KeyValue> {
        self.store.range(&RangeRequest::key(k)).unwrap().kvs.pop()
    }
    fn reopen(&mut self) {
        let s = std::mem::replace(
            &mut self.store,
            Store::open(self.path.with_extension("tmp"), opts()).unwrap(),
        );
        s.close().unwrap();
        self.store = Store::open(&self.path, opts()).unwrap();
    }
}

#[test]
fn revisions_versions_and_deletes_follow_etcd() {
    let mut t = T::new();
    assert_eq!(t.store.current_revision(), 1);
    assert_eq!(t.put("a", "1"), 2);
    assert_eq!(t.put("a", "2"), 3);
    let kv = t.get("a").unwrap();
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.value.as_slice()
        ),
        (2, 3, 2, &b"2"[..])
    );
    // A delete of nothing keeps the revision.
    let d = t.del("zzz", "");
    assert_eq!((d.deleted, d.revision), (0, 3));
    let d = t.del("a", "");
    assert_eq!((d.deleted, d.revision), (1, 4));
    assert!(t.get("a").is_none());
    assert_eq!(t.put("a", "3"), 5);
    let kv = t.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // History stays readable.
    let old = t
        .store
        .range(&RangeRequest {
            revision: 3,
            ..RangeRequest::key("a")
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"2");
    assert_eq!(old.revision, 5, "the header carries the current revision");
    let gone = t
        .store
        .range(&RangeRequest {
            revision: 4,
            ..RangeRequest::key("a")
        })
        .unwrap();
    assert!(gone.kvs.is_empty());
    assert!(matches!(
        t.store.range(&RangeRequest {
            revision: 6,
            ..RangeRequest::key("a")
        }),
        Err(Error::FutureRevision)
    ));
    // Survives a reopen, with history.
    t.reopen();
    assert_eq!(t.store.current_revision(), 5);
    let old = t
        .store
        .range(&RangeRequest {
            revision: 3,
            ..RangeRequest::key("a")
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"2");
    assert_eq!(t.put("b", "x"), 6);
}

#[test]
fn ranges_limit_count_sort_and_filter() {
    let mut t = T::new();
    for (i, k) in ["c", "a", "e", "b", "d"].iter().enumerate() {
        t.put(k, &format!("v{}", 9 - i));
    }
    t.put("a", "again");
    let all = |r: RangeRequest| t.store.range(&r).unwrap();
    let r = all(RangeRequest {
        limit: 2,
        ..RangeRequest::range("a", "\0")
    });
    assert_eq!(
        r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert!(r.more);
    assert_eq!(r.count, 5);
    let r = all(RangeRequest {
        count_only: true,
        ..RangeRequest::range("b", "d")
    });
    assert_eq!((r.count, r.kvs.len()), (2, 0));
    let r = all(RangeRequest {
        sort_target: SortTarget::Mod,
        sort_order: SortOrder::Descend,
        limit: 1,
        ..RangeRequest::range("a", "\0")
    });
    assert_eq!(r.kvs[0].key, b"a");
    let r = all(RangeRequest {
        sort_target: SortTarget::Value,
        ..RangeRequest::range("a", "\0")
    });
    let vals: Vec<_> = r.kvs.iter().map(|k| k.value.clone()).collect();
    let mut sorted = vals.clone();
    sorted.sort();
    assert_eq!(
        vals, sorted,
        "a non-key target with no order sorts ascending"
    );
    let r = all(RangeRequest {
        min_create_revision: 4,
        max_create_revision: 5,
        ..RangeRequest::range("a", "\0")
    });
    assert_eq!(
        r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(),
        vec![b"b".to_vec(), b"e".to_vec()]
    );
    assert_eq!(r.count, 5, "count ignores the filters");
    let r = all(RangeRequest {
        keys_only: true,
        ..RangeRequest::key("c")
    });
    assert!(r.kvs[0].value.is_empty());
    let r = all(RangeRequest::range("d", "b"));
    assert!(r.kvs.is_empty() && r.count == 0);
}

#[test]
fn txn_compares_branches_and_sees_its_own_writes() {
    let mut t = T::new();
    t.put("k", "v1");
    let txn = TxnRequest {
        compare: vec![
            Compare::new(
                "k",
                CompareResult::Equal,
                CompareTarget::Value(b"v1".to_vec()),
            ),
            Compare::new("missing", CompareResult::Equal, CompareTarget::Version(0)),
        ],
        success: vec![
            RequestOp::Put(PutRequest::new("k", "v2")),
            RequestOp::Range(RangeRequest::key("k")),
            RequestOp::Put(PutRequest::new("n", "x")),
        ],
        failure: vec![],
    };
    let WriteResponse::Txn(r) = t.write(WriteRequest::Txn(txn)).unwrap() else {
        unreachable!()
    };
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    let ResponseOp::Range(inner) = &r.responses[1] else {
        unreachable!()
    };
    assert_eq!(inner.kvs[0].value, b"v2");
    assert_eq!(inner.revision, 3);
    let n = t.get("n").unwrap();
    assert_eq!(n.mod_revision, 3);
    // Value compare on a missing key fails; failure branch runs.
    let txn = TxnRequest {
        compare: vec![Compare::new(
            "nope",
            CompareResult::NotEqual,
            CompareTarget::Value(vec![]),
        )],
        success: vec![],
        failure: vec![RequestOp::Range(RangeRequest::key("k"))],
    };
    let WriteResponse::Txn(r) = t.write(WriteRequest::Txn(txn.clone())).unwrap() else {
        unreachable!()
    };
    assert!(!r.succeeded);
    assert_eq!(r.revision, 3, "a read-only txn keeps the revision");
    assert_eq!(t.store.read_txn(&txn).unwrap(), r);
}

#[test]
fn ignore_value_lease_and_prev_kv() {
    let mut t = T::new();
    let mut p = PutRequest::new("k", "v");
    p.lease = 7;
    t.write(WriteRequest::Put(p)).unwrap();
    let mut p = PutRequest::new("k", "");
    p.ignore_value = true;
    p.prev_kv = true;
    let WriteResponse::Put(r) = t.write(WriteRequest::Put(p)).unwrap() else {
        unreachable!()
    };
    assert_eq!(r.prev_kv.unwrap().value, b"v");
    let kv = t.get("k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease),
        (&b"v"[..], 0),
        "no lease given: detached"
    );
    let mut p = PutRequest::new("absent", "");
    p.ignore_lease = true;
    assert!(matches!(
        t.write(WriteRequest::Put(p)),
        Err(Error::KeyNotFound)
    ));
    t.store.set_lease_lookup(std::sync::Arc::new(|id| id == 5));
    let mut p = PutRequest::new("k", "x");
    p.lease = 6;
    assert!(matches!(
        t.write(WriteRequest::Put(p)),
        Err(Error::LeaseNotFound)
    ));
    assert_eq!(t.store.current_revision(), 3);
}

#[test]
fn replayed_entries_change_nothing() {
    let mut t = T::new();
    t.put("a", "1");
    let e = EntryId::new(t.next, 1);
    let again = t
        .store
        .write(e, WriteRequest::Put(PutRequest::new("a", "2")))
        .unwrap();
    assert!(matches!(again, Applied::AlreadyApplied));
    assert_eq!(t.get("a").unwrap().value, b"1");
    t.store.flush().unwrap();
    assert_eq!(t.store.durable_index(), e);
    t.reopen();
    assert_eq!(t.store.applied_index(), e);
    assert!(matches!(
        t.store
            .write(e, WriteRequest::Put(PutRequest::new("a", "2")))
            .unwrap(),
        Applied::AlreadyApplied
    ));
}

#[test]
fn compaction_removes_history_and_keeps_the_latest() {
    let mut t = T::new();
    for i in 0..50 {
        t.put(&format!("k{}", i % 5), &i.to_string());
    }
    t.del("k0", "");
    let rev = t.store.current_revision();
    let h_before = t.store.hash_kv(0).unwrap();
    assert_eq!(h_before.compact_revision, -1);
    let e = t.entry();
    let c = t.store.compact(e, 40).unwrap().unwrap();
    c.wait().unwrap();
    assert!(matches!(
        t.store.range(&RangeRequest {
            revision: 39,
            ..RangeRequest::key("k1")
        }),
        Err(Error::Compacted)
    ));
    let at = t
        .store
        .range(&RangeRequest {
            revision: 40,
            ..RangeRequest::range("k", "l")
        })
        .unwrap();
    assert_eq!(at.count, 5);
    let e = t.entry();
    assert!(matches!(t.store.compact(e, 40), Err(Error::Compacted)));
    let e = t.entry();
    assert!(matches!(
        t.store.compact(e, rev + 1),
        Err(Error::FutureRevision)
    ));
    // The hash leaves out what compaction removes, whether or not it is gone
    // from the tree yet, so it changes once, at the compaction.
    let h_after = t.store.hash_kv(0).unwrap();
    assert_ne!(h_after.hash, h_before.hash);
    assert_eq!((h_after.compact_revision, h_after.revision), (40, rev));
    t.reopen();
    assert_eq!(t.store.compact_revision(), 40);
    assert_eq!(t.store.hash_kv(0).unwrap(), h_after);
    let kb = t.store.db().begin_read();
    let n = kb.bucket(schema::KEY).unwrap().unwrap().iter().count();
    // Puts at 2..=51, the delete at 52: 5 kept at 40 (k0..k4), plus 41..=52.
    assert_eq!(n, 5 + 12);
}

#[test]
fn bucket_changes_made_with_a_write_land_with_it_and_only_if_it_succeeds() {
    let mut t = T::new();
    let lease_key = 7i64.to_be_bytes().to_vec();
    let put = |k: &[u8]| AuxOp::Put {
        bucket: schema::LEASE,
        key: k.to_vec(),
        value: b"lease record".to_vec(),
    };
    let e = t.entry();
    let out = t
        .store
        .write_with(
            e,
            WriteRequest::Put(PutRequest::new("k", "v")),
            vec![put(&lease_key)],
        )
        .unwrap()
        .unwrap();
    assert_eq!(out.response.revision(), 2);
    // A failing write (ignore_value on a missing key) leaves the bucket alone
    // but still counts as applied.
    let mut bad = PutRequest::new("missing", "");
    bad.ignore_value = true;
    let e = t.entry();
    let r = t
        .store
        .write_with(e, WriteRequest::Put(bad), vec![put(b"other")]);
    assert!(matches!(r, Err(Error::KeyNotFound)));
    assert_eq!(t.store.applied_index(), e);
    // A replay of the entry changes nothing.
    let again = t
        .store
        .write_with(
            e,
            WriteRequest::Put(PutRequest::new("k", "v2")),
            vec![put(b"third")],
        )
        .unwrap();
    assert!(matches!(again, Applied::AlreadyApplied));
    let want = vec![(lease_key.clone(), b"lease record".to_vec())];
    assert_eq!(t.store.aux_scan(schema::LEASE).unwrap(), want);
    t.reopen();
    assert_eq!(t.store.aux_scan(schema::LEASE).unwrap(), want);
    assert_eq!(t.get("k").unwrap().value, b"v");
}
