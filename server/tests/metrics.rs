//! `/metrics` on the client port, driven with curl and etcdctl: etcd's
//! series under etcd's names, help and types, and the figures they carry
//! after real calls — the server's and the store's, the gRPC call counters,
//! client traffic, leases and the maintenance histograms (compat.md §6).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn metrics_carry_etcds_main_series_with_sane_values() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let scrape = || {
        let r = curl("GET", &c.url("/metrics"), None, WAIT);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        r.body
    };
    let before = scrape();
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        c.ok(&["put", k, v]);
    }
    c.ok(&["get", "a"]);
    let m = scrape();
    assert_eq!(metric(&m, "etcd_server_has_leader"), 1.0);
    assert_eq!(metric(&m, "etcd_server_is_leader"), 1.0);
    assert_eq!(metric(&m, "etcd_server_is_learner"), 0.0);
    assert!(metric(&m, "etcd_server_leader_changes_seen_total") >= 1.0);
    assert_eq!(metric(&m, "etcd_server_quota_backend_bytes"), 2147483648.0);
    assert_eq!(
        metric(&m, "etcd_server_version{server_version=\"3.4.23\"}"),
        1.0
    );
    let committed = metric(&m, "etcd_server_proposals_committed_total");
    assert!(
        committed >= metric(&before, "etcd_server_proposals_committed_total") + 3.0,
        "three puts are three proposals"
    );
    assert!(metric(&m, "etcd_server_proposals_applied_total") <= committed);
    assert_eq!(metric(&m, "etcd_server_proposals_pending"), 0.0);
    assert_eq!(metric(&m, "etcd_debugging_mvcc_current_revision"), 4.0);
    assert_eq!(metric(&m, "etcd_debugging_mvcc_keys_total"), 2.0);
    assert_eq!(
        metric(&m, "etcd_mvcc_put_total") - metric(&before, "etcd_mvcc_put_total"),
        3.0
    );
    assert!(metric(&m, "etcd_mvcc_range_total") >= 1.0);
    // The database size is the one endpoint status reports (once the
    // backend committed the last batch, both read the same figure).
    let size = eventually(WAIT, "the same size in /metrics and status", || {
        let size = metric(&scrape(), "etcd_mvcc_db_total_size_in_bytes");
        let status = c.json(&["endpoint", "status"]);
        (Some(size as i64) == status[0]["Status"]["dbSize"].as_i64()).then_some(size)
    });
    assert!(size > 0.0 && size < 1_048_576.0, "{size}");
    assert!(metric(&m, "etcd_mvcc_db_total_size_in_use_in_bytes") <= size);
    // The WAL's fsync histogram, with etcd's buckets, cumulative.
    let name = "etcd_disk_wal_fsync_duration_seconds";
    let count = metric(&m, &format!("{name}_count"));
    assert!(count >= 3.0, "one fsync per put at least: {count}");
    assert_eq!(metric(&m, &format!("{name}_bucket{{le=\"+Inf\"}}")), count);
    let mut last = 0.0;
    for le in [
        "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
        "1.024", "2.048", "4.096", "8.192",
    ] {
        let b = metric(&m, &format!("{name}_bucket{{le=\"{le}\"}}"));
        assert!(b >= last && b <= count, "{le}: {b}");
        last = b;
    }
    assert!(metric(&m, &format!("{name}_sum")) > 0.0);
    assert!(metric(&m, "etcd_disk_wal_write_bytes_total") > 0.0);
    // The process's own figures.
    let fds = metric(&m, "process_open_fds");
    assert!(fds >= 3.0, "{fds}");
    assert_eq!(metric(&m, "os_fd_used"), fds);
    assert_eq!(metric(&m, "os_fd_limit"), metric(&m, "process_max_fds"));
    assert!(metric(&m, "process_max_fds") >= fds);
    let rss = metric(&m, "process_resident_memory_bytes");
    assert!(
        rss > 1_048_576.0 && rss <= metric(&m, "process_virtual_memory_bytes"),
        "{rss}"
    );
    assert!(metric(&m, "process_cpu_seconds_total") > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&m, "process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    assert!(m.contains("# TYPE process_cpu_seconds_total counter\n"));
    // Every series has its HELP and TYPE.
    assert!(m.contains("# TYPE etcd_server_has_leader gauge\n"));
    assert!(m.contains(&format!("# TYPE {name} histogram\n")));
}

#[test]
fn grpc_server_series_count_calls_messages_and_codes_as_etcd_does() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let scrape = || curl("GET", &c.url("/metrics"), None, WAIT).body;
    let series = |name: &str, service: &str, method: &str, kind: &str| {
        format!(
            "{name}{{grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        )
    };
    let handled = |code: &str, service: &str, method: &str, kind: &str| {
        format!(
            "grpc_server_handled_total{{grpc_code=\"{code}\",grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{kind}\"}}"
        )
    };
    let kv = |name: &str, method: &str| series(name, "etcdserverpb.KV", method, "unary");
    let before = scrape();
    // Every method etcd registers is there from the start, Auth's too.
    assert_eq!(
        metric(
            &before,
            &series(
                "grpc_server_started_total",
                "etcdserverpb.Auth",
                "AuthEnable",
                "unary"
            )
        ),
        0.0
    );
    assert_eq!(
        metric(
            &before,
            &handled(
                "Unavailable",
                "etcdserverpb.Lease",
                "LeaseKeepAlive",
                "bidi_stream"
            )
        ),
        0.0
    );
    let delta = |now: &str, s: &str| metric(now, s) - metric(&before, s);

    // Unary: three puts; a range at a future revision fails with OutOfRange.
    for v in ["1", "2", "3"] {
        c.ok(&["put", "k", v]);
    }
    assert_eq!(
        c.fails(&["get", "k", "--rev", "100"]),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let m = scrape();
    for name in [
        "grpc_server_started_total",
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
    ] {
        assert_eq!(delta(&m, &kv(name, "Put")), 3.0, "{name}");
    }
    assert_eq!(
        delta(&m, &handled("OK", "etcdserverpb.KV", "Put", "unary")),
        3.0
    );
    assert_eq!(delta(&m, &kv("grpc_server_started_total", "Range")), 1.0);
    assert_eq!(
        delta(&m, &kv("grpc_server_msg_received_total", "Range")),
        1.0
    );
    assert_eq!(delta(&m, &kv("grpc_server_msg_sent_total", "Range")), 0.0);
    assert_eq!(
        delta(
            &m,
            &handled("OutOfRange", "etcdserverpb.KV", "Range", "unary")
        ),
        1.0
    );
    assert_eq!(
        delta(&m, &handled("OK", "etcdserverpb.KV", "Range", "unary")),
        0.0
    );

    // A bidi stream: one watch, its create request, then two events; when
    // the watcher goes away, the call ends Canceled.
    let w = |name: &str| series(name, "etcdserverpb.Watch", "Watch", "bidi_stream");
    let watcher = c.spawn(&["watch", "w"]);
    eventually(WAIT, "the watch to be created", || {
        let m = scrape();
        (delta(&m, &w("grpc_server_msg_sent_total")) >= 1.0).then_some(())
    });
    c.ok(&["put", "w", "x"]);
    c.ok(&["put", "w", "y"]);
    assert_eq!(watcher.lines(6, WAIT), ["PUT", "w", "x", "PUT", "w", "y"]);
    let m = scrape();
    assert_eq!(delta(&m, &w("grpc_server_started_total")), 1.0);
    assert_eq!(delta(&m, &w("grpc_server_msg_received_total")), 1.0);
    // The created answer and one answer per event (etcdctl's puts are
    // separate revisions, so separate answers).
    assert_eq!(delta(&m, &w("grpc_server_msg_sent_total")), 3.0);
    drop(watcher);
    eventually(WAIT, "the watch to be counted as ended", || {
        let m = scrape();
        let canceled = delta(
            &m,
            &handled("Canceled", "etcdserverpb.Watch", "Watch", "bidi_stream"),
        );
        (canceled == 1.0).then_some(())
    });

    // A lease keep-alive, once: one message each way on a bidi stream that
    // the client then closes.
    let id = c.ok(&["lease", "grant", "60"]);
    let id = id.split_whitespace().nth(1).unwrap().to_string();
    c.ok(&["lease", "keep-alive", "--once", &id]);
    let ka = |name: &str| series(name, "etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream");
    let m = scrape();
    assert_eq!(delta(&m, &ka("grpc_server_started_total")), 1.0);
    assert_eq!(delta(&m, &ka("grpc_server_msg_received_total")), 1.0);
    assert_eq!(delta(&m, &ka("grpc_server_msg_sent_total")), 1.0);
    // The client ends the stream by cancelling it. (etcd 3.4 counts that
    // one Unavailable: its keep-alive handler turns a cancelled context
    // into "no leader". cairn counts what happened.)
    eventually(WAIT, "the keep-alive stream to be counted as ended", || {
        let m = scrape();
        let code = |c: &str| {
            delta(
                &m,
                &handled(c, "etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
            )
        };
        (code("Canceled") == 1.0 && code("OK") == 0.0 && code("Unavailable") == 0.0).then_some(())
    });
    assert_eq!(
        delta(
            &m,
            &series(
                "grpc_server_started_total",
                "etcdserverpb.Lease",
                "LeaseGrant",
                "unary"
            )
        ),
        1.0
    );
}

#[test]
fn maintenance_calls_are_timed_in_etcds_histograms() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let scrape = || curl("GET", &c.url("/metrics"), None, WAIT).body;
    c.ok(&["put", "k", "v"]);
    let before = scrape();
    assert_eq!(metric(&before, "etcd_disk_defrag_inflight"), 0.0);
    assert_eq!(
        metric(&before, "etcd_cluster_version{cluster_version=\"3.4\"}"),
        1.0
    );
    // etcd's buckets: exponential from 0.1 s (defrag) and 0.01 s (the rest).
    for (name, first, last) in [
        ("etcd_disk_backend_defrag_duration_seconds", "0.1", "409.6"),
        (
            "etcd_disk_backend_snapshot_duration_seconds",
            "0.01",
            "655.36",
        ),
        ("etcd_mvcc_hash_duration_seconds", "0.01", "163.84"),
        ("etcd_mvcc_hash_rev_duration_seconds", "0.01", "163.84"),
    ] {
        for le in [first, last, "+Inf"] {
            assert_eq!(
                metric(&before, &format!("{name}_bucket{{le=\"{le}\"}}")),
                0.0
            );
        }
        assert_eq!(metric(&before, &format!("{name}_count")), 0.0);
    }
    c.ok(&["defrag"]);
    let snap = tmp.path().join("s.db");
    c.ok(&["snapshot", "save", snap.to_str().unwrap()]);
    c.ok(&["endpoint", "hashkv"]);
    let r = curl("POST", &c.url("/v3/maintenance/hash"), Some("{}"), WAIT);
    assert_eq!(r.status, 200, "{}", r.body);
    let counts = eventually(WAIT, "every call observed", || {
        let m = scrape();
        let count = |name: &str| metric(&m, &format!("{name}_count"));
        let all = [
            count("etcd_disk_backend_defrag_duration_seconds"),
            count("etcd_disk_backend_snapshot_duration_seconds"),
            count("etcd_mvcc_hash_duration_seconds"),
            count("etcd_mvcc_hash_rev_duration_seconds"),
        ];
        (all.iter().all(|&n| n >= 1.0)).then_some((all, m))
    });
    let (all, m) = counts;
    assert_eq!(all, [1.0; 4]);
    assert!(metric(&m, "etcd_disk_backend_defrag_duration_seconds_sum") > 0.0);
    assert_eq!(metric(&m, "etcd_disk_defrag_inflight"), 0.0);
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(mut v: u64) -> u64 {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of a message of only `ResponseHeader` field 1 (as a
/// PutResponse without prev_kv is), from the header etcdctl printed.
fn header_only_size(h: &Value) -> u64 {
    let inner: u64 = ["cluster_id", "member_id", "revision", "raft_term"]
        .iter()
        .map(|f| h[f].as_u64().unwrap())
        .filter(|&v| v != 0)
        .map(|v| 1 + varint_len(v))
        .sum();
    1 + varint_len(inner) + inner
}

#[test]
fn client_traffic_put_sizes_and_leases_are_counted_as_etcd_does() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let scrape = || curl("GET", &c.url("/metrics"), None, WAIT).body;
    let before = scrape();
    let delta = |now: &str, s: &str| metric(now, s) - metric(&before, s);
    const IN: &str = "etcd_network_client_grpc_received_bytes_total";
    const OUT: &str = "etcd_network_client_grpc_sent_bytes_total";

    // A put of foo=bar: a 10-byte request (two 1-byte tags, two 1-byte
    // lengths, 3 + 3 bytes: etcd 3.4 counts 10 for it too), and an answer
    // of the header alone.
    let put = c.json(&["put", "foo", "bar"]);
    let m = scrape();
    assert_eq!(delta(&m, IN), 10.0);
    assert_eq!(delta(&m, OUT), header_only_size(&put["header"]) as f64);
    assert_eq!(
        delta(&m, "etcd_debugging_mvcc_total_put_size_in_bytes"),
        6.0
    );
    assert_eq!(delta(&m, "etcd_debugging_mvcc_put_total"), 1.0);
    assert_eq!(
        metric(&m, "etcd_debugging_mvcc_put_total"),
        metric(&m, "etcd_mvcc_put_total")
    );
    assert_eq!(
        metric(&m, "etcd_debugging_mvcc_db_total_size_in_bytes"),
        metric(&m, "etcd_mvcc_db_total_size_in_bytes")
    );
    // A get of foo: 5 bytes in.
    let before_get = m;
    c.ok(&["get", "foo"]);
    let m = scrape();
    assert_eq!(metric(&m, IN) - metric(&before_get, IN), 5.0);
    assert!(metric(&m, OUT) > metric(&before_get, OUT));

    // A stream: a watch on foo sends a 7-byte create request (etcd counts
    // 7 too); its answers are counted as they go.
    let before_watch = scrape();
    let watcher = c.spawn(&["watch", "foo"]);
    eventually(WAIT, "the watch's request to be counted", || {
        let m = scrape();
        (metric(&m, IN) - metric(&before_watch, IN) == 7.0
            && metric(&m, OUT) > metric(&before_watch, OUT))
        .then_some(())
    });
    let quiet = scrape();
    c.ok(&["put", "foo", "barbaz"]);
    assert_eq!(watcher.lines(3, WAIT), ["PUT", "foo", "barbaz"]);
    let m = eventually(WAIT, "the event to be counted", || {
        let m = scrape();
        // The put's answer, and an event of at least its key and value.
        let out = metric(&m, OUT) - metric(&quiet, OUT);
        (out >= 28.0 + 9.0).then_some(m)
    });
    assert_eq!(metric(&m, IN) - metric(&quiet, IN), 13.0);
    drop(watcher);

    // Leases: a grant of 100 s lands in the 128 s bucket; a keep-alive
    // renews it; a revocation and an expiry are both revocations.
    let id = c.ok(&["lease", "grant", "100"]);
    let id = id.split_whitespace().nth(1).unwrap().to_string();
    c.ok(&["lease", "keep-alive", "--once", &id]);
    c.ok(&["lease", "revoke", &id]);
    let m = scrape();
    assert_eq!(delta(&m, "etcd_debugging_lease_granted_total"), 1.0);
    assert_eq!(delta(&m, "etcd_debugging_lease_renewed_total"), 1.0);
    assert_eq!(delta(&m, "etcd_debugging_lease_revoked_total"), 1.0);
    let ttl = |m: &str, le: &str| {
        metric(
            m,
            &format!("etcd_debugging_lease_ttl_total_bucket{{le=\"{le}\"}}"),
        )
    };
    assert_eq!(ttl(&m, "64"), 0.0);
    assert_eq!(ttl(&m, "128"), 1.0);
    assert_eq!(ttl(&m, "4.194304e+06"), 1.0);
    assert_eq!(ttl(&m, "+Inf"), 1.0);
    assert_eq!(delta(&m, "etcd_debugging_lease_ttl_total_sum"), 100.0);
    c.ok(&["lease", "grant", "2"]);
    let m = eventually(Duration::from_secs(20), "the short lease to expire", || {
        let m = scrape();
        (delta(&m, "etcd_debugging_server_lease_expired_total") == 1.0).then_some(m)
    });
    assert_eq!(delta(&m, "etcd_debugging_lease_granted_total"), 2.0);
    assert_eq!(delta(&m, "etcd_debugging_lease_revoked_total"), 2.0);
    assert_eq!(delta(&m, "etcd_debugging_lease_renewed_total"), 1.0);
}
