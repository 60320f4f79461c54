//! Watchers: ordering, no gaps and no duplicates, catch-up from history and
//! across compaction, slow watchers against a fast writer, filters, prev_kv,
//! progress notifications.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_engine::mvcc::*;

fn opts(queue_len: usize) -> StoreOptions {
    StoreOptions {
        batch_interval: Duration::from_millis(5),
        batch_limit: 500,
        compaction_pause: Duration::ZERO,
        watch: WatchOptions {
            queue_len,
            sync_interval: Duration::from_millis(5),
            ..WatchOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// One change of a revision: kind, key, value.
type Change = (EventKind, Vec<u8>, Vec<u8>);

/// A store and a log of what every revision changed, as the writes returned it.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    next: u64,
    /// revision → (event kind, key, value) in sub-revision order.
    history: BTreeMap<i64, Vec<Change>>,
}

impl Fixture {
    fn new(queue_len: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("db"), opts(queue_len)).unwrap();
        Fixture {
            _dir: dir,
            store,
            next: 0,
            history: BTreeMap::new(),
        }
    }

    fn apply(&mut self, req: WriteRequest) {
        self.next += 1;
        let out = self
            .store
            .write(EntryId::new(self.next, 1), req)
            .unwrap()
            .unwrap();
        if let Some(e) = out.events.first() {
            let rev = e.kv.mod_revision;
            self.history.insert(
                rev,
                out.events
                    .iter()
                    .map(|e| (e.kind, e.kv.key.clone(), e.kv.value.clone()))
                    .collect(),
            );
        }
    }

    /// A mixed workload over keys `k00`..`k19`: puts, deletes of ranges, and
    /// transactions writing two keys in one revision.
    fn churn(&mut self, n: usize, seed: u64) {
        let mut x = seed | 1;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let k = format!("k{:02}", x % 20);
            match x % 10 {
                0 => self.apply(WriteRequest::DeleteRange(DeleteRangeRequest::new(
                    k.clone(),
                    format!("k{:02}", x % 20 + 3),
                ))),
                1 => self.apply(WriteRequest::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![
                        RequestOp::Put(PutRequest::new(k.clone(), format!("t{i}"))),
                        RequestOp::Put(PutRequest::new("other", format!("t{i}"))),
                    ],
                    failure: vec![],
                })),
                _ => self.apply(WriteRequest::Put(PutRequest::new(k, format!("v{i}")))),
            }
        }
    }

    /// What a watcher of `[start, end)` from `from` should see, in order.
    fn expected(
        &self,
        start: &[u8],
        end: &[u8],
        from: i64,
    ) -> Vec<(i64, EventKind, Vec<u8>, Vec<u8>)> {
        let iv = Interval::from_etcd(start, end);
        self.history
            .range(from..)
            .flat_map(|(rev, evs)| {
                evs.iter()
                    .filter(|(_, k, _)| iv.contains(k))
                    .map(move |(kind, k, v)| (*rev, *kind, k.clone(), v.clone()))
            })
            .collect()
    }
}

type Seen = Vec<(i64, EventKind, Vec<u8>, Vec<u8>)>;

/// Receives until `want` events arrived (or a deadline), checking responses.
fn collect(stream: &WatchStream, id: i64, want: usize, max_revs: usize) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out with {} of {want} events",
            seen.len()
        );
        let Some(r) = stream.recv_timeout(left) else {
            continue;
        };
        assert_eq!(r.watch_id, id);
        assert_eq!(r.compact_revision, 0, "unexpected compaction cancel");
        let mut revs: Vec<i64> = r.events.iter().map(|e| e.kv.mod_revision).collect();
        revs.dedup();
        assert!(
            revs.len() <= max_revs,
            "a response holds {} revisions",
            revs.len()
        );
        assert!(r.events.iter().all(|e| e.kv.mod_revision <= r.revision));
        for e in r.events {
            seen.push((
                e.kv.mod_revision,
                e.kind,
                e.kv.key.clone(),
                e.kv.value.clone(),
            ));
        }
    }
    seen
}

#[test]
fn live_watchers_see_every_change_once_in_order() {
    let mut f = Fixture::new(1024);
    let s = f.store.watch_stream();
    let all = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..WatchRequest::default()
        })
        .unwrap();
    let one = s
        .watch(WatchRequest {
            key: b"k07".to_vec(),
            ..WatchRequest::default()
        })
        .unwrap();
    assert_eq!((all, one), (0, 1), "ids are given 0, 1, 2 …");
    f.churn(600, 7);
    let mut by_id: BTreeMap<i64, Seen> = BTreeMap::new();
    let want_all = f.expected(b"k", b"l", 0);
    let want_one = f.expected(b"k07", b"", 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while by_id.get(&all).map_or(0, Vec::len) < want_all.len()
        || by_id.get(&one).map_or(0, Vec::len) < want_one.len()
    {
        assert!(Instant::now() < deadline, "timed out");
        if let Some(r) = s.recv_timeout(Duration::from_secs(1)) {
            let v = by_id.entry(r.watch_id).or_default();
            for e in r.events {
                v.push((
                    e.kv.mod_revision,
                    e.kind,
                    e.kv.key.clone(),
                    e.kv.value.clone(),
                ));
            }
        }
    }
    assert_eq!(by_id[&all], want_all);
    assert_eq!(by_id[&one], want_one);
    assert!(s.try_recv().is_none(), "nothing more than the changes");
}

#[test]
fn a_watcher_from_the_past_catches_up_then_follows_live_writes() {
    let mut f = Fixture::new(64);
    f.churn(2500, 3);
    let s = f.store.watch_stream();
    let id = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"\0".to_vec(),
            start_revision: 2,
            ..WatchRequest::default()
        })
        .unwrap();
    // Live writes while it catches up, from another thread.
    let store = f.store.clone();
    let mut next = f.next;
    let writer = std::thread::spawn(move || {
        let mut hist = Vec::new();
        for i in 0..800 {
            next += 1;
            let out = store
                .write(
                    EntryId::new(next, 1),
                    WriteRequest::Put(PutRequest::new(
                        format!("k{:02}", i % 20),
                        format!("live{i}"),
                    )),
                )
                .unwrap()
                .unwrap();
            let e = &out.events[0];
            hist.push((
                e.kv.mod_revision,
                e.kind,
                e.kv.key.clone(),
                e.kv.value.clone(),
            ));
        }
        hist
    });
    let live = writer.join().unwrap();
    let mut want = f.expected(b"k", b"\0", 2);
    want.extend(live);
    let seen = collect(&s, id, want.len(), 1000);
    assert_eq!(seen, want);
}

#[test]
fn a_slow_watcher_does_not_hold_up_the_writer_and_misses_nothing() {
    let mut f = Fixture::new(2);
    let s = f.store.watch_stream();
    let id = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..WatchRequest::default()
        })
        .unwrap();
    // The writer finishes 3000 revisions while the watcher has read nothing:
    // its queue of 2 filled at once, and writes went on regardless.
    f.churn(3000, 11);
    let want = f.expected(b"k", b"l", 0);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < want.len() {
        assert!(Instant::now() < deadline, "timed out at {}", seen.len());
        if let Some(r) = s.recv_timeout(Duration::from_secs(1)) {
            assert_eq!(r.watch_id, id);
            std::thread::sleep(Duration::from_micros(200));
            for e in r.events {
                seen.push((
                    e.kv.mod_revision,
                    e.kind,
                    e.kv.key.clone(),
                    e.kv.value.clone(),
                ));
            }
        }
    }
    assert_eq!(seen, want);
}

#[test]
fn compacted_start_revisions_get_the_compaction_answer() {
    let mut f = Fixture::new(64);
    f.churn(300, 5);
    f.apply(WriteRequest::Put(PutRequest::new("k99", "at-compaction")));
    let at = f.store.current_revision();
    f.next += 1;
    f.store
        .compact(EntryId::new(f.next, 1), at)
        .unwrap()
        .unwrap()
        .wait()
        .unwrap();
    f.churn(50, 6);
    let s = f.store.watch_stream();
    let id = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: 150,
            ..WatchRequest::default()
        })
        .unwrap();
    let r = s.recv_timeout(Duration::from_secs(10)).expect("an answer");
    assert_eq!(
        (r.watch_id, r.compact_revision, r.events.len()),
        (id, at, 0)
    );
    assert_eq!(r.revision, 0, "a compaction answer carries no revision");
    assert!(s.watch_ids().is_empty(), "the watcher is gone");
    // Starting at the compaction revision itself works.
    let id = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision: at,
            ..WatchRequest::default()
        })
        .unwrap();
    let want = f.expected(b"k", b"l", at);
    assert_eq!(want[0].2, b"k99");
    assert_eq!(collect(&s, id, want.len(), 1000), want);
}

#[test]
fn a_watcher_behind_when_compaction_passes_it_is_cancelled() {
    let mut f = Fixture::new(1);
    let s = f.store.watch_stream();
    let id = s
        .watch(WatchRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..WatchRequest::default()
        })
        .unwrap();
    // Fill its queue (1 response) and put it behind.
    f.churn(400, 9);
    f.next += 1;
    let c = f.store.current_revision();
    f.store
        .compact(EntryId::new(f.next, 1), c)
        .unwrap()
        .unwrap()
        .wait()
        .unwrap();
    let first = s
        .recv_timeout(Duration::from_secs(5))
        .expect("the queued response");
    assert!(!first.events.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s
            .recv_timeout(Duration::from_secs(5))
            .expect("a compaction answer");
        assert_eq!(r.watch_id, id);
        if r.compact_revision != 0 {
            assert_eq!(r.compact_revision, c);
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn filters_prev_kv_cancel_and_ids() {
    let mut f = Fixture::new(64);
    f.apply(WriteRequest::Put(PutRequest::new("a", "1")));
    let s = f.store.watch_stream();
    let puts_only = s
        .watch(WatchRequest {
            key: b"a".to_vec(),
            no_delete: true,
            prev_kv: true,
            ..WatchRequest::default()
        })
        .unwrap();
    let deletes_only = s
        .watch(WatchRequest {
            key: b"a".to_vec(),
            no_put: true,
            prev_kv: true,
            watch_id: 7,
            ..WatchRequest::default()
        })
        .unwrap();
    assert_eq!(deletes_only, 7);
    assert_eq!(
        s.watch(WatchRequest {
            key: b"a".to_vec(),
            watch_id: 7,
            ..WatchRequest::default()
        }),
        Err(WatchError::DuplicateId)
    );
    assert_eq!(
        s.watch(WatchRequest {
            key: b"b".to_vec(),
            range_end: b"a".to_vec(),
            ..WatchRequest::default()
        }),
        Err(WatchError::EmptyRange)
    );
    f.apply(WriteRequest::Put(PutRequest::new("a", "2")));
    f.apply(WriteRequest::DeleteRange(DeleteRangeRequest::new("a", "")));
    f.apply(WriteRequest::Put(PutRequest::new("a", "3")));
    let mut got: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
    while got.values().map(Vec::len).sum::<usize>() < 3 {
        let r = s.recv_timeout(Duration::from_secs(5)).expect("events");
        got.entry(r.watch_id).or_default().extend(r.events);
    }
    let p = &got[&puts_only];
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].prev_kv.as_ref().unwrap().value, b"1");
    assert!(p[1].prev_kv.is_none(), "a creation has no previous value");
    let d = &got[&deletes_only];
    assert_eq!((d[0].kind, d[0].kv.mod_revision), (EventKind::Delete, 4));
    assert_eq!(d[0].prev_kv.as_ref().unwrap().value, b"2");
    assert!(s.cancel(puts_only));
    assert!(!s.cancel(puts_only));
    f.apply(WriteRequest::Put(PutRequest::new("a", "4")));
    assert!(s.recv_timeout(Duration::from_millis(200)).is_none());
    // Auto ids keep counting up (etcd's too), past cancelled and taken ones.
    let next = s.watch(WatchRequest::default()).unwrap();
    assert_eq!(next, 1);
}

#[test]
fn progress_on_request_and_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(64);
    o.watch.progress_interval = Duration::from_millis(50);
    let store = Store::open(dir.path().join("db"), o).unwrap();
    store
        .write(
            EntryId::new(1, 1),
            WriteRequest::Put(PutRequest::new("x", "1")),
        )
        .unwrap();
    let s = store.watch_stream();
    let quiet = s
        .watch(WatchRequest {
            key: b"q".to_vec(),
            progress_notify: true,
            ..WatchRequest::default()
        })
        .unwrap();
    let plain = s
        .watch(WatchRequest {
            key: b"p".to_vec(),
            ..WatchRequest::default()
        })
        .unwrap();
    s.request_progress(plain);
    let r = s.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((r.watch_id, r.revision, r.events.len()), (plain, 2, 0));
    // Periodic: only the watcher that asked, only while idle.
    let r = s.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((r.watch_id, r.revision, r.events.len()), (quiet, 2, 0));
}
