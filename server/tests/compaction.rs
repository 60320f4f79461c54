//! `etcdctl compaction` (logical and `--physical`): what stays readable,
//! etcd's errors below the compacted revision and beyond the current one,
//! and a watch from a compacted revision (compat.md §4.5, §4.7).

mod common;

use std::time::Duration;

use common::*;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

/// `k` = v1..v5 at revisions 2..6, `gone` put at 7 and deleted at 8,
/// `k` = v6 at 9.
fn history(c: &Cairn) {
    for i in 1..=5 {
        c.ok(&["put", "k", &format!("v{i}")]);
    }
    c.ok(&["put", "gone", "x"]);
    c.ok(&["del", "gone"]);
    c.ok(&["put", "k", "v6"]);
    assert_eq!(c.revision(), 9);
}

#[test]
fn compaction_drops_history_below_the_revision_and_keeps_it_at_the_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    history(&c);
    assert_eq!(c.ok(&["compaction", "4"]), "compacted revision 4\n");
    // Below: etcd's error; at and above: the data as it was.
    assert_eq!(c.fails(&["get", "k", "--rev", "3"]), COMPACTED);
    assert_eq!(c.fails(&["get", "k", "--rev", "1"]), COMPACTED);
    assert_eq!(c.ok(&["get", "k", "--rev", "4"]), "k\nv3\n");
    assert_eq!(c.ok(&["get", "k", "--rev", "5"]), "k\nv4\n");
    assert_eq!(c.ok(&["get", "gone", "--rev", "7"]), "gone\nx\n");
    let v = c.json(&["get", "k", "--rev", "4"]);
    assert_eq!(v["kvs"][0]["version"], 3);
    assert_eq!(v["kvs"][0]["create_revision"], 2);
    assert_eq!(v["header"]["revision"], 9);
    // Compacting changes no revision.
    assert_eq!(c.revision(), 9);
    // --rev 0 means the current revision.
    assert_eq!(c.ok(&["get", "k", "--rev", "0"]), "k\nv6\n");
    assert_eq!(c.fails(&["get", "k", "--rev", "10"]), FUTURE);

    // Again at or below: compacted; beyond the store: future.
    assert_eq!(c.fails(&["compaction", "4"]), COMPACTED);
    assert_eq!(c.fails(&["compaction", "2"]), COMPACTED);
    assert_eq!(c.fails(&["compaction", "10"]), FUTURE);

    // Compacting past a deletion drops the deleted key entirely.
    assert_eq!(
        c.ok(&["compaction", "--physical", "8"]),
        "compacted revision 8\n"
    );
    assert_eq!(c.fails(&["get", "gone", "--rev", "7"]), COMPACTED);
    assert_eq!(c.ok(&["get", "gone", "--rev", "8"]), "");
    assert_eq!(c.ok(&["get", "k", "--rev", "8"]), "k\nv5\n");
    // The newest version of every key stays.
    assert_eq!(c.ok(&["get", "", "--prefix"]), "k\nv6\n");
    // Compacting to the current revision is allowed.
    assert_eq!(c.ok(&["compaction", "9"]), "compacted revision 9\n");
    assert_eq!(c.ok(&["get", "k", "--rev", "9"]), "k\nv6\n");
    let hash = c.json(&["endpoint", "hashkv"]);
    assert_eq!(hash[0]["HashKV"]["compact_revision"], 9);
    // Writes go on as before.
    c.ok(&["put", "k", "v7"]);
    let v = c.json(&["get", "k"]);
    assert_eq!(v["kvs"][0]["version"], 7);
    assert_eq!(v["kvs"][0]["mod_revision"], 10);
}

#[test]
fn watch_from_a_compacted_revision_is_canceled_and_at_it_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    history(&c);
    c.ok(&["compaction", "5"]);

    let mut w = c.spawn(&["watch", "k", "--rev", "4"]);
    assert_eq!(
        w.wait(Duration::from_secs(10)),
        Some(5),
        "etcdctl's exit code"
    );
    let err = w.stderr();
    assert!(
        err.contains(&format!("watch was canceled ({COMPACTED})")),
        "{err}"
    );
    assert!(
        err.contains("Error: watch is canceled by the server"),
        "{err}"
    );

    // The cancel as etcd sends it: compact revision, no events, no revision.
    let mut j = c.spawn(&["watch", "k", "--rev", "2", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j.line(Duration::from_secs(10))).unwrap();
    assert_eq!(v["CompactRevision"], 5);
    assert_eq!(v["Canceled"], true);
    assert_eq!(v["Events"], serde_json::json!([]));
    assert!(v["Header"].get("revision").is_none(), "{v}");
    assert_eq!(j.wait(Duration::from_secs(10)), Some(5));

    // At the compacted revision: history from there.
    let ok = c.spawn(&["watch", "k", "--rev", "5"]);
    assert_eq!(
        ok.lines(6, Duration::from_secs(10)),
        ["PUT", "k", "v4", "PUT", "k", "v5"]
    );
}
