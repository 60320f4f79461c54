//! etcdctl's maintenance commands on one member: `endpoint status`,
//! `endpoint health`, `endpoint hashkv`, `defrag`, `snapshot save`, and the
//! NOSPACE alarm a small `--quota-backend-bytes` raises (`alarm list`,
//! `alarm disarm`) (compat.md §4.12, §4.13).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn status(c: &Cairn) -> Value {
    let v = c.json(&["endpoint", "status"]);
    assert_eq!(v[0]["Endpoint"], c.endpoint());
    v[0]["Status"].clone()
}

#[test]
fn endpoint_status_describes_the_member() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let s = status(&c);
    let h = &s["header"];
    assert_eq!(s["version"], "3.4.23");
    assert_eq!(s["leader"], h["member_id"], "{s}");
    assert_eq!(s["raftTerm"], h["raft_term"]);
    assert!(s["raftTerm"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(h["revision"], 1);
    let size = s["dbSize"].as_i64().unwrap();
    let in_use = s["dbSizeInUse"].as_i64().unwrap();
    assert!(in_use > 0 && in_use <= size, "{s}");
    // An empty store is small (the file's preallocation is not its size).
    assert!(size < 1 << 20, "{s}");
    assert!(s.get("errors").is_none(), "{s}");
    assert!(s.get("isLearner").is_none(), "{s}");
    let index = s["raftIndex"].as_u64().unwrap();
    assert!(s["raftAppliedIndex"].as_u64().unwrap() <= index);

    c.ok(&["put", "a", "1"]);
    let t = status(&c);
    assert_eq!(t["header"]["revision"], 2);
    assert!(t["raftIndex"].as_u64().unwrap() > index, "{t}");
    assert_eq!(t["raftTerm"], s["raftTerm"]);

    // The simple and table forms carry the same figures.
    let id = format!("{:x}", h["member_id"].as_u64().unwrap());
    let line = c.ok(&["endpoint", "status"]);
    let cols: Vec<&str> = line.trim_end().split(", ").collect();
    assert_eq!(cols[..3], [c.endpoint().as_str(), id.as_str(), "3.4.23"]);
    assert!(cols[3].ends_with(" kB"), "{line}");
    assert_eq!(cols[4..7], ["true", "false", &t["raftTerm"].to_string()]);
    let table = c.ok(&["endpoint", "status", "-w", "table"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ENDPOINT",
            "ID",
            "VERSION",
            "DB SIZE",
            "IS LEADER",
            "IS LEARNER",
            "RAFT TERM",
            "RAFT INDEX",
            "RAFT APPLIED INDEX",
            "ERRORS"
        ]
    );
    assert_eq!(rows[1][..3], [c.endpoint().as_str(), id.as_str(), "3.4.23"]);
    assert_eq!(rows[1][4..7], cols[4..7]);
}

#[test]
fn endpoint_health_commits_a_proposal() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    // etcdctl 3.4 prints the result on stderr.
    let out = c.etcdctl(&["endpoint", "health"]);
    assert!(out.status.success());
    let out = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.starts_with(&format!(
            "{} is healthy: successfully committed proposal: took = ",
            c.endpoint()
        )),
        "{out}"
    );
    let v = c.json(&["endpoint", "health"]);
    assert_eq!(v[0]["endpoint"], c.endpoint());
    assert_eq!(v[0]["health"], true);
    // The health check is a read: no revision.
    assert_eq!(c.revision(), 1);
}

#[test]
fn endpoint_hashkv_is_etcds_hash_of_the_history() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let hash = |extra: &[&str]| -> (u64, i64) {
        let mut a = vec!["endpoint", "hashkv"];
        a.extend(extra);
        let v = c.json(&a);
        let h = &v[0]["HashKV"];
        (
            h["hash"].as_u64().unwrap(),
            h["compact_revision"].as_i64().unwrap_or(0),
        )
    };
    // The values etcd 3.4 answers for the same history.
    let empty = hash(&[]);
    // Never compacted: etcd says -1.
    assert_eq!(empty, (1084519789, -1));
    assert_eq!(hash(&[]), empty, "no writes, no change");
    c.ok(&["put", "a", "1"]);
    let one = hash(&[]);
    assert_eq!(one, (2587454935, -1));
    assert_eq!(
        c.ok(&["endpoint", "hashkv"]),
        format!("{}, 2587454935\n", c.endpoint())
    );
    c.ok(&["put", "b", "2"]);
    c.ok(&["del", "a"]);
    assert_eq!(hash(&[]), (1562576432, -1));
    // At a past revision: the hash the store had then.
    assert_eq!(hash(&["--rev", "2"]), one);
    assert_eq!(hash(&["--rev", "1"]), empty);
    c.ok(&["compaction", "3"]);
    assert_eq!(hash(&[]), (776148148, 3));
    // Reads do not change it.
    c.ok(&["get", "", "--prefix"]);
    assert_eq!(hash(&[]), (776148148, 3));
}

#[test]
fn defrag_shrinks_the_database_after_compaction_and_keeps_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let value = "v".repeat(100_000);
    for i in 0..20 {
        c.ok_with(&["put", &format!("big/{i:02}")], &value);
    }
    c.ok(&["put", "small", "kept"]);
    c.ok(&["del", "big/", "--prefix"]);
    let rev = c.revision();
    c.ok(&["compaction", "--physical", &rev.to_string()]);
    let before = status(&c);
    assert_eq!(
        c.ok(&["defrag"]),
        format!("Finished defragmenting etcd member[{}]\n", c.endpoint())
    );
    let after = status(&c);
    let (b, a) = (
        before["dbSize"].as_i64().unwrap(),
        after["dbSize"].as_i64().unwrap(),
    );
    assert!(b > 2_000_000, "20 values of 100 kB: {before}");
    assert!(a < b / 4, "defragmented from {b} to {a}");
    assert!(after["dbSizeInUse"].as_i64().unwrap() <= a);
    assert_eq!(c.ok(&["get", "small"]), "small\nkept\n");
    assert_eq!(c.ok(&["get", "big/", "--prefix"]), "");
    c.ok(&["put", "after", "defrag"]);
    assert_eq!(c.revision(), rev + 1);
}

#[test]
fn snapshot_save_writes_the_database_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    for i in 0..50 {
        c.ok(&["put", &format!("k{i}"), &"x".repeat(1000)]);
    }
    let path = tmp.path().join("backup.db");
    let p = path.display().to_string();
    assert_eq!(
        c.ok(&["snapshot", "save", &p]),
        format!("Snapshot saved at {p}\n")
    );
    let len = std::fs::metadata(&path).unwrap().len();
    // 50 kB of values: whole pages, and the 32-byte SHA-256 etcd appends
    // (etcdctl 3.4 keeps it; `snapshot restore` checks it).
    assert!(len > 50_000, "{len}");
    assert_eq!(len % 4096, 32, "{len}");
    assert!(!tmp.path().join("backup.db.part").exists());
    // The member goes on serving.
    assert_eq!(c.ok(&["get", "k49", "--print-value-only"]).len(), 1001);
}

/// A 100 kB value.
fn big() -> String {
    "q".repeat(100_000)
}

/// Puts 100 kB values until the quota refuses one; returns how many went in.
fn fill(c: &Cairn) -> usize {
    for i in 0..100 {
        let out = etcdctl(
            &[c.endpoint()],
            &["put", &format!("fill/{i:03}")],
            Some(&big()),
        );
        if !out.status.success() {
            assert_eq!(
                error_of(&out, &["put"]),
                "etcdserver: mvcc: database space exceeded"
            );
            return i;
        }
    }
    panic!("100 puts of 100 kB fit in the quota");
}

#[test]
fn a_full_quota_raises_nospace_until_space_is_freed_and_the_alarm_disarmed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("default", tmp.path());
    spec.extra = vec!["--quota-backend-bytes".into(), "2000000".into()];
    let c = Cairn::start(&spec);
    c.ok(&["put", "small", "before"]);
    let n = fill(&c);
    // About 2 MB of values went in: the quota measures the data, not the
    // file's preallocation. (As in etcd, the size counts what the backend
    // committed, up to a batch interval behind the last writes.)
    assert!(
        (12..=25).contains(&n),
        "{n} puts of 100 kB under a 2 MB quota"
    );
    let s = status(&c);
    let id = s["header"]["member_id"].as_u64().unwrap();
    let alarm = format!("memberID:{id} alarm:NOSPACE \n");
    assert_eq!(c.ok(&["alarm", "list"]), alarm);
    assert_eq!(
        s["errors"],
        serde_json::json!([alarm.trim_end_matches('\n')])
    );
    let h = curl("GET", &c.url("/health"), None, Duration::from_secs(5));
    assert_eq!((h.status, h.body.as_str()), (503, r#"{"health":"false"}"#));
    let h = curl(
        "GET",
        &c.url("/health?exclude=NOSPACE"),
        None,
        Duration::from_secs(5),
    );
    assert_eq!(h.status, 200);

    // Writes that add data are refused, even small ones; reads, deletes,
    // compaction and defragmentation work.
    let nospace = "etcdserver: mvcc: database space exceeded";
    assert_eq!(c.fails(&["put", "small", "x"]), nospace);
    assert_eq!(
        c.fails(&["lease", "grant", "100"]),
        format!("failed to grant lease ({nospace})")
    );
    let txn = etcdctl(&[c.endpoint()], &["txn"], Some("\nput t 1\n\n\n"));
    assert_eq!(error_of(&txn, &["txn"]), nospace);
    assert_eq!(c.ok(&["get", "small", "--print-value-only"]), "before\n");
    assert_eq!(
        c.ok(&["get", "fill/000", "--print-value-only"]).len(),
        100_001
    );
    assert_eq!(c.ok(&["del", "fill/", "--prefix"]), format!("{n}\n"));
    let rev = c.revision();
    c.ok(&["compaction", "--physical", &rev.to_string()]);
    c.ok(&["defrag"]);
    assert!(status(&c)["dbSize"].as_i64().unwrap() < 1_000_000);
    // Still refused: the alarm stays until disarmed.
    assert_eq!(c.fails(&["put", "small", "x"]), nospace);

    assert_eq!(c.ok(&["alarm", "disarm"]), alarm);
    assert_eq!(c.ok(&["alarm", "list"]), "");
    assert!(status(&c).get("errors").is_none());
    let h = curl("GET", &c.url("/health"), None, Duration::from_secs(5));
    assert_eq!((h.status, h.body.as_str()), (200, r#"{"health":"true"}"#));
    assert_eq!(c.ok(&["put", "small", "after"]), "OK\n");
    assert_eq!(c.revision(), rev + 1);
    c.ok(&["lease", "grant", "100"]);
}

#[test]
fn the_nospace_alarm_survives_a_restart_and_a_larger_quota_lets_writes_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("default", tmp.path());
    spec.extra = vec!["--quota-backend-bytes".into(), "1500000".into()];
    let c = Cairn::start(&spec);
    let n = fill(&c);
    let alarm = c.ok(&["alarm", "list"]);
    assert!(alarm.ends_with(" alarm:NOSPACE \n"), "{alarm}");
    c.terminate();

    // Twice the quota: the alarm is still raised until disarmed.
    spec.extra = vec!["--quota-backend-bytes".into(), "3000000".into()];
    let c = Cairn::start(&spec);
    assert_eq!(c.ok(&["alarm", "list"]), alarm);
    assert_eq!(
        c.fails(&["put", "x", "y"]),
        "etcdserver: mvcc: database space exceeded"
    );
    assert_eq!(c.ok(&["alarm", "disarm"]), alarm);
    assert_eq!(c.ok(&["put", "x", "y"]), "OK\n");
    // The data from before is all there; room for more until the new quota.
    assert_eq!(
        c.ok(&["get", "fill/", "--prefix", "--keys-only"])
            .lines()
            .count(),
        2 * n
    );
    let more = fill(&c);
    assert!(more >= 10, "{more} more puts under the doubled quota");
}

#[test]
fn per_endpoint_commands_work_with_url_endpoints_and_cluster() {
    // etcdctl dials `passthrough:///http://…` for these: grpc-go then sends
    // the whole URL as the HTTP/2 authority.
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "a", "1"]);
    let url = c.url("");
    let run = |args: &[&str]| {
        let out = etcdctl(std::slice::from_ref(&url), args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let id = format!("{:x}", status(&c)["header"]["member_id"].as_u64().unwrap());
    let line = run(&["endpoint", "status"]);
    assert!(
        line.starts_with(&format!("{url}, {id}, 3.4.23, ")),
        "{line}"
    );
    let hash = c.json(&["endpoint", "hashkv"])[0]["HashKV"]["hash"].clone();
    assert_eq!(run(&["endpoint", "hashkv"]), format!("{url}, {hash}\n"));
    assert_eq!(
        run(&["defrag"]),
        format!("Finished defragmenting etcd member[{url}]\n")
    );
    // --cluster: the members' advertised client URLs.
    let v: Value =
        serde_json::from_str(&run(&["endpoint", "status", "--cluster", "-w", "json"])).unwrap();
    assert_eq!(v[0]["Endpoint"], url);
    assert_eq!(v[0]["Status"]["header"]["revision"], 2);
    let out = etcdctl(
        std::slice::from_ref(&url),
        &["endpoint", "health", "--cluster"],
        None,
    );
    assert!(out.status.success());
    // And the member keeps serving both kinds of endpoint.
    assert_eq!(run(&["get", "a", "--print-value-only"]), "1\n");
    assert_eq!(c.ok(&["get", "a", "--print-value-only"]), "1\n");
}
