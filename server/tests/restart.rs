//! Durability across restarts: every write etcdctl saw acknowledged is
//! there after `kill -9` and a restart on the same data directory, at the
//! same revision; leases, compaction and history survive too.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// Every key with its value and mod revision, as `get --prefix ""` says.
fn all(c: &Cairn) -> BTreeMap<String, (String, i64)> {
    let v = c.json(&["get", "", "--prefix"]);
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    (
                        text(&kv["key"]),
                        (text(&kv["value"]), kv["mod_revision"].as_i64().unwrap()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `put -w json`; returns the revision it was acknowledged at.
fn put(endpoint: &str, key: &str, value: &str) -> i64 {
    let out = etcdctl(
        &[endpoint.to_string()],
        &["put", key, value, "-w", "json"],
        None,
    );
    assert!(
        out.status.success(),
        "put {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["header"]["revision"].as_i64().unwrap()
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new("default", tmp.path());
    let c = Cairn::start(&spec);
    let ep = c.endpoint();
    let mut acked: BTreeMap<String, (String, i64)> = BTreeMap::new();
    // Sequential writes, each acknowledged before the next.
    for i in 0..40 {
        let (k, v) = (format!("seq/{i:02}"), format!("value-{i}"));
        let rev = put(&ep, &k, &v);
        assert_eq!(rev, i + 2, "one revision per put");
        acked.insert(k, (v, rev));
    }
    // A delete and a transaction, acknowledged.
    assert_eq!(c.ok(&["del", "seq/00"]), "1\n");
    acked.remove("seq/00");
    let out = c.ok_with(
        &["txn", "-w", "json"],
        "\nput txn/a 1\nput txn/b 2\ndel seq/01\n\n\n",
    );
    let txn_rev = serde_json::from_str::<serde_json::Value>(&out).unwrap()["header"]["revision"]
        .as_i64()
        .unwrap();
    acked.remove("seq/01");
    acked.insert("txn/a".into(), ("1".into(), txn_rev));
    acked.insert("txn/b".into(), ("2".into(), txn_rev));

    // A concurrent burst: 8 clients, 10 puts each; kill -9 right after the
    // last acknowledgment.
    let burst: Vec<std::thread::JoinHandle<Vec<(String, String, i64)>>> = (0..8)
        .map(|t| {
            let ep = ep.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| {
                        let (k, v) = (format!("burst/{t}/{i}"), format!("b{t}-{i}"));
                        let rev = put(&ep, &k, &v);
                        (k, v, rev)
                    })
                    .collect()
            })
        })
        .collect();
    let mut revs = Vec::new();
    for h in burst {
        for (k, v, rev) in h.join().unwrap() {
            revs.push(rev);
            acked.insert(k, (v, rev));
        }
    }
    c.kill9();
    // Every put got its own revision.
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), 80);
    let last = *revs.last().unwrap();
    assert_eq!(last, txn_rev + 80);

    let c = Cairn::start(&spec);
    assert_eq!(
        c.revision(),
        last,
        "the store is at the last acknowledged revision"
    );
    assert_eq!(all(&c), acked);
    // History too: the deleted key at its old revision.
    assert_eq!(c.ok(&["get", "seq/00", "--rev", "2"]), "seq/00\nvalue-0\n");
    // And writes go on from there.
    assert_eq!(put(&c.endpoint(), "after", "restart"), last + 1);
}

#[test]
fn history_compaction_and_hashes_are_the_same_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new("default", tmp.path());
    let c = Cairn::start(&spec);
    for i in 0..20 {
        c.ok(&["put", &format!("k{}", i % 5), &i.to_string()]);
    }
    c.ok(&["compaction", "10"]);
    c.ok(&["del", "k0"]);
    let hash = c.json(&["endpoint", "hashkv"])[0]["HashKV"].clone();
    let rev = c.revision();
    c.kill9();

    let c = Cairn::start(&spec);
    assert_eq!(c.revision(), rev);
    let after = c.json(&["endpoint", "hashkv"])[0]["HashKV"].clone();
    assert_eq!(after["hash"], hash["hash"]);
    assert_eq!(after["compact_revision"], 10);
    assert_eq!(
        c.fails(&["get", "k1", "--rev", "9"]),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // k1 was put at 3, 8, 13, 18: at 10 it was "6".
    assert_eq!(c.ok(&["get", "k1", "--rev", "10"]), "k1\n6\n");
    let w = c.spawn(&["watch", "k1", "--rev", "10"]);
    assert_eq!(
        w.lines(6, Duration::from_secs(10)),
        ["PUT", "k1", "11", "PUT", "k1", "16"]
    );
}

#[test]
fn leases_survive_a_restart_with_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new("default", tmp.path());
    let c = Cairn::start(&spec);
    let grant = |c: &Cairn, ttl: &str| {
        c.ok(&["lease", "grant", ttl])
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let long = grant(&c, "600");
    let short = grant(&c, "4");
    c.ok(&["put", "long/a", "1", "--lease", &long]);
    c.ok(&["put", "long/b", "2", "--lease", &long]);
    c.ok(&["put", "short/a", "3", "--lease", &short]);
    c.kill9();

    let c = Cairn::start(&spec);
    let mut ids = vec![long.clone(), short.clone()];
    ids.sort();
    let list = c.ok(&["lease", "list"]);
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort();
    assert_eq!(listed, ids, "{list}");
    let t = c.json(&["lease", "timetolive", &long, "--keys"]);
    let ttl = t["ttl"].as_i64().unwrap();
    assert!((1..=600).contains(&ttl), "still alive: {t}");
    assert!(ttl > 500, "the long lease is far from expiring: {t}");
    assert_eq!(t["granted-ttl"], 600);
    assert_eq!(
        t["keys"],
        serde_json::json!([b64(b"long/a"), b64(b"long/b")])
    );
    // The short one runs out after the restart and takes its key along.
    eventually(Duration::from_secs(15), "the short lease to expire", || {
        c.ok(&["get", "short/a"]).is_empty().then_some(())
    });
    assert_eq!(
        c.ok(&["lease", "timetolive", &short]),
        format!("lease {short} already expired\n")
    );
    assert_eq!(
        c.ok(&["get", "long/", "--prefix", "--keys-only"]),
        "long/a\n\nlong/b\n\n"
    );
    // Keep-alive and revoke work on a restored lease.
    assert_eq!(
        c.ok(&["lease", "keep-alive", "--once", &long]),
        format!("lease {long} keepalived with TTL(600)\n")
    );
    // A new lease does not reuse an old id.
    let new = grant(&c, "600");
    assert!(new != long && new != short);
    c.ok(&["lease", "revoke", &long]);
    assert_eq!(c.ok(&["get", "long/", "--prefix"]), "");

    // A clean stop keeps the new lease too.
    c.terminate();
    let c = Cairn::start(&spec);
    assert_eq!(c.ok(&["lease", "list"]), format!("found 1 leases\n{new}\n"));
    let t = c.json(&["lease", "timetolive", &new]);
    assert!(t["ttl"].as_i64().unwrap() > 500, "{t}");
}

#[test]
fn writes_racing_a_kill_9_are_either_all_there_or_were_never_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec::new("default", tmp.path());
    let c = Cairn::start(&spec);
    let ep = c.endpoint();
    // Writers that keep going while the member is killed under them.
    let writers: Vec<std::thread::JoinHandle<Vec<(String, i64)>>> = (0..4)
        .map(|t| {
            let ep = ep.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    let k = format!("race/{t}/{i:04}");
                    let out = etcdctl(
                        std::slice::from_ref(&ep),
                        &[
                            "--dial-timeout=1s",
                            "--command-timeout=2s",
                            "put",
                            &k,
                            "v",
                            "-w",
                            "json",
                        ],
                        None,
                    );
                    if !out.status.success() {
                        return acked;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    acked.push((k, v["header"]["revision"].as_i64().unwrap()));
                }
                unreachable!()
            })
        })
        .collect();
    // Let them get going, then kill.
    eventually(Duration::from_secs(20), "some writes", || {
        (c.revision() > 60).then_some(())
    });
    c.kill9();
    let acked: Vec<(String, i64)> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(acked.len() >= 50, "{} acknowledged", acked.len());

    let c = Cairn::start(&spec);
    let now = all(&c);
    for (k, rev) in &acked {
        assert_eq!(
            now.get(k).map(|x| x.1),
            Some(*rev),
            "{k} was acknowledged at {rev}"
        );
    }
    // Whatever else survived was a write in flight: revisions have no gaps.
    let mut revs: Vec<i64> = now.values().map(|x| x.1).collect();
    revs.sort_unstable();
    assert_eq!(revs, (2..2 + revs.len() as i64).collect::<Vec<_>>());
    assert_eq!(c.revision(), 1 + revs.len() as i64);
}
