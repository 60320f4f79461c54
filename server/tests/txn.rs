//! `etcdctl txn`, from stdin and `--interactive`: compares on value,
//! version, create and mod revisions (and lease, through the gateway:
//! etcdctl 3.4 cannot parse a lease compare), both branches, and what a
//! transaction does to the revision (compat.md §4.6).

mod common;

use common::*;

/// Keys `a`=1 (rev 2), `b`=2 (rev 3), `b`=22 (rev 4): a version 1, b version 2.
fn setup(c: &Cairn) {
    c.ok(&["put", "a", "1"]);
    c.ok(&["put", "b", "2"]);
    c.ok(&["put", "b", "22"]);
}

#[test]
fn txn_from_stdin_runs_the_success_branch_in_one_revision() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    setup(&c);
    let input = "value(\"a\") = \"1\"\n\
                 version(\"b\") = \"2\"\n\
                 create(\"b\") = \"3\"\n\
                 mod(\"b\") > \"3\"\n\
                 mod(\"a\") < \"3\"\n\
                 value(\"b\") != \"2\"\n\
                 \n\
                 put a x\n\
                 get a\n\
                 put c y\n\
                 del b\n\
                 get \"\" --prefix\n\
                 \n\
                 put a failed\n\
                 \n";
    let out = c.ok_with(&["txn"], input);
    // Ops run in order and see the writes before them.
    assert_eq!(out, "SUCCESS\n\nOK\n\na\nx\n\nOK\n\n1\n\na\nx\nc\ny\n");
    // All of it at one revision.
    let v = c.json(&["get", "", "--prefix"]);
    assert_eq!(v["header"]["revision"], 5);
    assert_eq!(v["kvs"][0]["mod_revision"], 5);
    assert_eq!(v["kvs"][1]["create_revision"], 5);
    assert_eq!(v["count"], 2);
    // b was deleted at 5.
    assert_eq!(c.ok(&["get", "b", "--rev", "4"]), "b\n22\n");
    assert_eq!(c.ok(&["get", "b"]), "");
}

#[test]
fn txn_from_stdin_runs_the_failure_branch_when_a_compare_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    setup(&c);
    let input = "value(\"a\") = \"1\"\n\
                 version(\"b\") > \"5\"\n\
                 \n\
                 put a success\n\
                 \n\
                 put a failure\n\
                 get a\n\
                 get b\n\
                 \n";
    assert_eq!(
        c.ok_with(&["txn"], input),
        "FAILURE\n\nOK\n\na\nfailure\n\nb\n22\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&c.ok_with(&["txn", "-w", "json"], "\n\n\n")).unwrap();
    // An empty txn (no compares) succeeds and changes nothing.
    assert_eq!(v["succeeded"], true);
    assert_eq!(v["header"]["revision"], 5);

    // JSON output of a failed txn: succeeded omitted, responses of the
    // failure branch, inner headers carrying only the revision.
    let input = "create(\"a\") = \"0\"\n\nput a s\n\nput b f\nget b\n\n";
    let out = c.ok_with(&["txn", "-w", "json"], input);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("succeeded").is_none(), "{v}");
    assert_eq!(v["header"]["revision"], 6);
    let put = &v["responses"][0]["Response"]["ResponsePut"];
    assert_eq!(put["header"], serde_json::json!({"revision": 6}));
    let get = &v["responses"][1]["Response"]["ResponseRange"];
    assert_eq!(text(&get["kvs"][0]["value"]), "f");
    assert_eq!(get["kvs"][0]["version"], 3);
}

#[test]
fn a_missing_key_compares_as_zero_and_matches_no_value() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let run = |cmp: &str| -> String {
        let out = c.ok_with(&["txn"], &format!("{cmp}\n\n\n\n"));
        out.lines().next().unwrap().to_string()
    };
    assert_eq!(run("create(\"none\") = \"0\""), "SUCCESS");
    assert_eq!(run("version(\"none\") = \"0\""), "SUCCESS");
    assert_eq!(run("mod(\"none\") = \"0\""), "SUCCESS");
    assert_eq!(run("version(\"none\") > \"0\""), "FAILURE");
    assert_eq!(run("value(\"none\") = \"\""), "FAILURE");
    assert_eq!(run("value(\"none\") != \"x\""), "FAILURE");
    // Compares read without writing: the revision did not move.
    assert_eq!(c.revision(), 1);

    // Set-if-absent, the usual lock-free create.
    let create = "create(\"lock\") = \"0\"\n\nput lock me\n\nget lock\n\n";
    assert_eq!(c.ok_with(&["txn"], create), "SUCCESS\n\nOK\n");
    assert_eq!(c.ok_with(&["txn"], create), "FAILURE\n\nlock\nme\n");
    // The read-only failure branch did not write.
    assert_eq!(c.revision(), 2);
}

#[test]
fn txn_interactive_prompts_and_runs_the_taken_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    setup(&c);
    let input = "value(\"a\") = \"1\"\n\nput x from-interactive\nget a\n\nput x no\n\n";
    let out = c.ok_with(&["txn", "--interactive"], input);
    assert_eq!(
        out,
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n\
         SUCCESS\n\nOK\n\na\n1\n"
    );
    let out = c.ok_with(
        &["txn", "-i"],
        "value(\"x\") = \"nope\"\n\n\nput x else\n\n",
    );
    assert!(out.ends_with("FAILURE\n\nOK\n"), "{out}");
    assert_eq!(c.ok(&["get", "x"]), "x\nelse\n");
    assert_eq!(c.revision(), 6);
}

#[test]
fn txn_errors_are_etcds_and_leave_the_store_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    setup(&c);
    let dup = "\nput d 1\nput d 2\n\n\n";
    assert_eq!(
        error_of(&etcdctl(&[c.endpoint()], &["txn"], Some(dup)), &["txn"]),
        "etcdserver: duplicate key given in txn request"
    );
    // A put inside a deleted range of the same branch is a duplicate too.
    let overlap = "\ndel a --prefix\nput ab 1\n\n\n";
    assert_eq!(
        error_of(&etcdctl(&[c.endpoint()], &["txn"], Some(overlap)), &["txn"]),
        "etcdserver: duplicate key given in txn request"
    );
    // The same key in success and failure is fine.
    assert_eq!(
        c.ok_with(&["txn"], "\nput d 1\n\nput d 2\n\n"),
        "SUCCESS\n\nOK\n"
    );
    let many: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    assert_eq!(
        error_of(
            &etcdctl(&[c.endpoint()], &["txn"], Some(&format!("\n{many}\n\n"))),
            &["txn"]
        ),
        "etcdserver: too many operations in txn request"
    );
    // 128 is the limit, not the sum of both branches.
    let ok: String = (0..128).map(|i| format!("put k{i} v\n")).collect();
    let out = c.ok_with(&["txn"], &format!("\n{ok}\n{ok}\n"));
    assert!(out.starts_with("SUCCESS\n"), "{out}");
    assert_eq!(c.ok(&["get", "k127", "--print-value-only"]), "v\n");
    assert_eq!(c.revision(), 6);
}

#[test]
fn gateway_txn_compares_a_keys_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let id = c.ok(&["lease", "grant", "600"]);
    let id = i64::from_str_radix(id.split_whitespace().nth(1).unwrap(), 16).unwrap();
    c.ok(&["put", "leased", "v", "--lease", &format!("{id:x}")]);
    c.ok(&["put", "plain", "v"]);
    let txn = |key: &str, lease: i64| {
        let body = format!(
            r#"{{"compare":[{{"key":"{}","target":"LEASE","result":"EQUAL","lease":"{lease}"}}],
                "success":[{{"request_put":{{"key":"{}","value":"{}"}}}}]}}"#,
            b64(key.as_bytes()),
            b64(key.as_bytes()),
            b64(b"hit"),
        );
        let r = post(&c.url("/v3/kv/txn"), &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["succeeded"] == true
    };
    assert!(txn("leased", id));
    assert!(!txn("leased", id + 1));
    assert!(txn("plain", 0));
    assert!(txn("absent", 0));
    // The put without a lease detached "leased".
    assert!(txn("leased", 0));
    assert_eq!(c.ok(&["get", "leased", "--print-value-only"]), "hit\n");
}
