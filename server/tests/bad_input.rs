//! Requests etcd refuses: each gets etcd's exact error text through
//! etcdctl, writes nothing, and the member keeps serving (compat.md §3).

mod common;

use common::*;

/// After a refused request: nothing was written and a put still works.
fn still_serving(c: &Cairn, revision: i64) {
    assert_eq!(c.revision(), revision, "the refused request wrote nothing");
    assert_eq!(c.ok(&["put", "after", "ok"]), "OK\n");
    assert_eq!(c.revision(), revision + 1);
}

#[test]
fn an_empty_key_is_refused_by_put_get_del_and_txn() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let msg = "etcdserver: key is not provided";
    assert_eq!(c.fails(&["put", "", "v"]), msg);
    assert_eq!(c.fails(&["get", ""]), msg);
    assert_eq!(c.fails(&["del", ""]), msg);
    let txn = etcdctl(&[c.endpoint()], &["txn"], Some("\nput \"\" v\n\n\n"));
    assert_eq!(error_of(&txn, &["txn"]), msg);
    still_serving(&c, 1);
}

#[test]
fn a_request_over_max_request_bytes_is_too_large() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("default", tmp.path());
    spec.extra = vec!["--max-request-bytes".into(), "1024".into()];
    let c = Cairn::start(&spec);
    // Under the limit: fine.
    assert_eq!(c.ok_with(&["put", "k"], &"x".repeat(900)), "OK\n");
    // Over it: refused before the log.
    let out = etcdctl(&[c.endpoint()], &["put", "k"], Some(&"x".repeat(1100)));
    assert_eq!(error_of(&out, &["put"]), "etcdserver: request is too large");
    // Over the gRPC receive limit (1024 + 512 KiB): grpc-go's words.
    let out = etcdctl(&[c.endpoint()], &["put", "k"], Some(&"x".repeat(600_000)));
    assert_eq!(
        error_of(&out, &["put"]),
        "rpc error: code = ResourceExhausted desc = grpc: received message larger than max (600007 vs. 525312)"
    );
    // A transaction's size counts as a whole.
    let txn: String = (0..10)
        .map(|i| format!("put k{i} {}\n", "y".repeat(150)))
        .collect();
    let out = etcdctl(&[c.endpoint()], &["txn"], Some(&format!("\n{txn}\n\n")));
    assert_eq!(error_of(&out, &["txn"]), "etcdserver: request is too large");
    still_serving(&c, 2);
    assert_eq!(c.ok(&["get", "k", "--print-value-only"]).len(), 901);
}

#[test]
fn a_txn_over_max_txn_ops_and_duplicate_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = Spec::new("default", tmp.path());
    spec.extra = vec!["--max-txn-ops".into(), "3".into()];
    let c = Cairn::start(&spec);
    let run = |input: &str| etcdctl(&[c.endpoint()], &["txn"], Some(input));
    let too_many = "etcdserver: too many operations in txn request";
    assert_eq!(
        error_of(&run("\nput a 1\nput b 1\nput c 1\nput d 1\n\n\n"), &["txn"]),
        too_many
    );
    assert_eq!(
        error_of(
            &run(
                "value(\"a\") = \"1\"\nvalue(\"b\") = \"1\"\nvalue(\"c\") = \"1\"\nvalue(\"d\") = \"1\"\n\n\n\n"
            ),
            &["txn"]
        ),
        too_many,
        "compares count too"
    );
    assert_eq!(
        error_of(&run("\n\nget a\nget b\nget c\nget d\n\n"), &["txn"]),
        too_many,
        "and the failure branch"
    );
    // Three in each branch and three compares: at the limit, fine.
    let out = c.ok_with(
        &["txn"],
        "create(\"a\") = \"0\"\ncreate(\"b\") = \"0\"\ncreate(\"c\") = \"0\"\n\
         \nput a 1\nput b 1\nput c 1\n\nget a\nget b\nget c\n\n",
    );
    assert!(out.starts_with("SUCCESS\n"), "{out}");
    assert_eq!(
        error_of(&run("\nput d 1\nput d 2\n\n\n"), &["txn"]),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(
        error_of(&run("\nput d 1\ndel d\n\n\n"), &["txn"]),
        "etcdserver: duplicate key given in txn request"
    );
    still_serving(&c, 2);
}

#[test]
fn unknown_leases_and_future_revisions_get_etcds_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "a", "1"]);
    let not_found = "etcdserver: requested lease not found";
    assert_eq!(c.fails(&["put", "k", "v", "--lease", "abcdef"]), not_found);
    let txn = etcdctl(
        &[c.endpoint()],
        &["txn"],
        Some("\nput k v --lease=abcdef\n\n\n"),
    );
    assert_eq!(error_of(&txn, &["txn"]), not_found);
    assert_eq!(
        c.fails(&["lease", "revoke", "abcdef"]),
        format!("failed to revoke lease ({not_found})")
    );
    assert_eq!(
        c.fails(&["lease", "keep-alive", "--once", "abcdef"]),
        not_found
    );
    // TimeToLive of an unknown lease is not an error.
    assert_eq!(
        c.ok(&["lease", "timetolive", "abcdef"]),
        "lease 0000000000abcdef already expired\n"
    );

    let future = "etcdserver: mvcc: required revision is a future revision";
    assert_eq!(c.fails(&["get", "a", "--rev", "3"]), future);
    assert_eq!(c.fails(&["compaction", "3"]), future);
    assert_eq!(c.fails(&["endpoint", "hashkv", "--rev", "3"]), future);
    // A watch from a future revision is not refused: it waits.
    still_serving(&c, 2);
    assert_eq!(c.ok(&["get", "a", "--rev", "3"]), "a\n1\n");
}

#[test]
fn ignore_value_and_ignore_lease_misuse_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    assert_eq!(
        c.fails(&["put", "absent", "--ignore-value"]),
        "etcdserver: key not found"
    );
    c.ok(&["put", "k", "v"]);
    let id = c.ok(&["lease", "grant", "100"]);
    let id = id.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        c.fails(&["put", "k", "v", "--lease", &id, "--ignore-lease"]),
        "etcdserver: lease is provided"
    );
    still_serving(&c, 2);
}
