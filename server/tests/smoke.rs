//! The first thing an operator does: start cairn and use etcdctl on it.

mod common;

use common::*;

#[test]
fn etcdctl_puts_and_gets_against_a_fresh_member() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    assert_eq!(c.ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(c.ok(&["get", "foo"]), "foo\nbar\n");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["get", "foo", "-w", "json"])).unwrap();
    assert_eq!(v["kvs"][0]["value"], "YmFy");
    assert_eq!(v["header"]["revision"], 2);
    // The disk-latency series etcd operators watch: both histograms count
    // (the store commits its batch within 100 ms).
    for series in [
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
    ] {
        eventually(std::time::Duration::from_secs(5), series, || {
            let out = std::process::Command::new("curl")
                .args(["-s", &format!("{}/metrics", c.spec.client_url())])
                .output()
                .ok()?;
            let text = String::from_utf8(out.stdout).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{series} ")))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&n| n > 0)
        });
    }
    let log = c.terminate();
    assert!(log.iter().any(|l| l.contains("closed etcd server")));
}
