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
    let log = c.terminate();
    assert!(log.iter().any(|l| l.contains("closed etcd server")));
}
