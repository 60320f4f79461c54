//! `etcdctl put`, `get` and `del` with their flags and output formats, on one
//! member: revisions, versions and create/mod revisions as etcd defines them
//! (compat.md §4.1–4.4).

mod common;

use cairn_proto::etcdserverpb as pb;
use common::*;
use prost::Message;
use serde_json::Value;

/// The keys of a simple-format `get` (lines alternate key, value).
fn keys_of(simple: &str) -> Vec<String> {
    simple.lines().step_by(2).map(String::from).collect()
}

fn kv(v: &Value, i: usize) -> &Value {
    &v["kvs"][i]
}

#[test]
fn puts_and_deletes_advance_the_revision_and_track_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    // A new store is at revision 1.
    assert_eq!(c.revision(), 1);
    assert_eq!(c.ok(&["put", "foo", "bar"]), "OK\n");
    let v = c.json(&["get", "foo"]);
    assert_eq!(v["header"]["revision"], 2);
    assert_eq!(text(&kv(&v, 0)["key"]), "foo");
    assert_eq!(text(&kv(&v, 0)["value"]), "bar");
    assert_eq!(kv(&v, 0)["create_revision"], 2);
    assert_eq!(kv(&v, 0)["mod_revision"], 2);
    assert_eq!(kv(&v, 0)["version"], 1);
    assert_eq!(v["count"], 1);

    // Putting the same value again is still a write.
    let p = c.json(&["put", "foo", "bar"]);
    assert_eq!(p["header"]["revision"], 3);
    let v = c.json(&["get", "foo"]);
    assert_eq!(
        (
            &kv(&v, 0)["create_revision"],
            &kv(&v, 0)["mod_revision"],
            &kv(&v, 0)["version"]
        ),
        (&Value::from(2), &Value::from(3), &Value::from(2))
    );

    // Delete: one revision, then nothing left.
    assert_eq!(c.ok(&["del", "foo"]), "1\n");
    assert_eq!(c.revision(), 4);
    let v = c.json(&["get", "foo"]);
    assert!(v.get("kvs").is_none(), "{v}");
    assert!(v.get("count").is_none(), "count 0 is omitted: {v}");

    // Deleting nothing does not advance the revision.
    let d = c.json(&["del", "foo"]);
    assert_eq!(d["header"]["revision"], 4);
    assert!(d.get("deleted").is_none(), "{d}");
    assert_eq!(c.ok(&["del", "nothing", "--prefix"]), "0\n");
    assert_eq!(c.revision(), 4);

    // Recreated: a new create revision and version 1.
    c.ok(&["put", "foo", "again"]);
    let v = c.json(&["get", "foo"]);
    assert_eq!(kv(&v, 0)["create_revision"], 5);
    assert_eq!(kv(&v, 0)["mod_revision"], 5);
    assert_eq!(kv(&v, 0)["version"], 1);

    // Older revisions still read as they were.
    let old = c.json(&["get", "foo", "--rev", "3"]);
    assert_eq!(text(&kv(&old, 0)["value"]), "bar");
    assert_eq!(kv(&old, 0)["version"], 2);
    assert_eq!(
        old["header"]["revision"], 5,
        "header is the current revision"
    );
    let gone = c.json(&["get", "foo", "--rev", "4"]);
    assert!(gone.get("kvs").is_none(), "{gone}");
}

#[test]
fn get_ranges_by_prefix_from_key_range_end_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    for (k, v) in [
        ("a", "1"),
        ("ab", "2"),
        ("abc", "3"),
        ("b", "4"),
        ("c", "5"),
    ] {
        c.ok(&["put", k, v]);
    }
    assert_eq!(
        c.ok(&["get", "a", "--prefix"]),
        "a\n1\nab\n2\nabc\n3\n",
        "prefix"
    );
    assert_eq!(
        c.ok(&["get", "ab", "--from-key"]),
        "ab\n2\nabc\n3\nb\n4\nc\n5\n"
    );
    // [a, c): range end excluded.
    assert_eq!(keys_of(&c.ok(&["get", "a", "c"])), ["a", "ab", "abc", "b"]);
    // The empty prefix is every key.
    assert_eq!(
        keys_of(&c.ok(&["get", "", "--prefix"])),
        ["a", "ab", "abc", "b", "c"]
    );
    // A range end at or below the key is empty, not an error.
    assert_eq!(c.ok(&["get", "c", "a"]), "");

    // limit: the first keys; more and count describe the whole range.
    let v = c.json(&["get", "a", "--from-key", "--limit", "2"]);
    assert_eq!(v["kvs"].as_array().unwrap().len(), 2);
    assert_eq!(text(&kv(&v, 1)["key"]), "ab");
    assert_eq!(v["more"], true);
    assert_eq!(v["count"], 5);
    let v = c.json(&["get", "a", "--prefix", "--limit", "3"]);
    assert!(
        v.get("more").is_none(),
        "exactly the limit: more is false: {v}"
    );
    assert_eq!(v["count"], 3);

    // --rev over a range: the range as it was.
    let v = c.json(&["get", "", "--prefix", "--rev", "3"]);
    let keys: Vec<String> = v["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| text(&k["key"]))
        .collect();
    assert_eq!(keys, ["a", "ab"]);
    assert_eq!(v["count"], 2);
    assert_eq!(v["header"]["revision"], 6);
}

#[test]
fn get_sorts_by_every_target_in_both_orders() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    // Chosen so every target orders the four keys differently:
    // create k3 2, k1 3, k4 4, k2 5; mod k2 5, k1 7, k3 10, k4 11;
    // version k2 1, k4 2, k1 3, k3 4; value k4 a, k3 b, k2 c, k1 d.
    for (k, v) in [
        ("k3", "b"),
        ("k1", "d"),
        ("k4", "a"),
        ("k2", "c"),
        ("k1", "d"),
        ("k1", "d"),
        ("k3", "b"),
        ("k3", "b"),
        ("k3", "b"),
        ("k4", "a"),
    ] {
        c.ok(&["put", k, v]);
    }
    let cases = [
        ("KEY", ["k1", "k2", "k3", "k4"]),
        ("CREATE", ["k3", "k1", "k4", "k2"]),
        ("MODIFY", ["k2", "k1", "k3", "k4"]),
        ("VALUE", ["k4", "k3", "k2", "k1"]),
        ("VERSION", ["k2", "k4", "k1", "k3"]),
    ];
    for (target, ascending) in cases {
        let by = format!("--sort-by={target}");
        // No order given: ascending (etcd turns NONE into ASCEND for a
        // non-key target).
        let got = keys_of(&c.ok(&["get", "k", "--prefix", &by]));
        assert_eq!(got, ascending, "{target} with no order");
        let got = keys_of(&c.ok(&["get", "k", "--prefix", &by, "--order=ASCEND"]));
        assert_eq!(got, ascending, "{target} ASCEND");
        let mut descending = ascending.to_vec();
        descending.reverse();
        let got = keys_of(&c.ok(&["get", "k", "--prefix", &by, "--order=DESCEND"]));
        assert_eq!(got, descending, "{target} DESCEND");
    }
    // Sorting happens before the limit.
    assert_eq!(
        keys_of(&c.ok(&[
            "get",
            "k",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
            "--limit=2"
        ])),
        ["k4", "k3"]
    );
    // Descending by key alone.
    assert_eq!(
        keys_of(&c.ok(&["get", "k", "--prefix", "--order=DESCEND"])),
        ["k4", "k3", "k2", "k1"]
    );
}

#[test]
fn get_prints_keys_only_values_only_and_every_output_format() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "x1", "one"]);
    c.ok(&["put", "x2", "two"]);
    assert_eq!(
        c.ok(&["get", "x", "--prefix", "--keys-only"]),
        "x1\n\nx2\n\n"
    );
    let v = c.json(&["get", "x", "--prefix", "--keys-only"]);
    assert!(kv(&v, 0).get("value").is_none(), "{v}");
    assert_eq!(kv(&v, 1)["version"], 1);
    assert_eq!(
        c.ok(&["get", "x", "--prefix", "--print-value-only"]),
        "one\ntwo\n"
    );
    assert_eq!(c.ok(&["get", "x1", "-w", "simple"]), "x1\none\n");
    assert_eq!(c.ok(&["get", "x1", "--consistency=s"]), "x1\none\n");
    let s = c.json(&["get", "x", "--prefix", "--consistency=s"]);
    assert_eq!(s["count"], 2);
    assert_eq!(s["header"]["revision"], 3);
    assert_eq!(
        c.ok(&["get", "x1", "--hex"]),
        "\\x78\\x31\n\\x6f\\x6e\\x65\n"
    );

    let v = c.json(&["get", "x1"]);
    let h = &v["header"];
    let fields = c.ok(&["get", "x1", "-w", "fields"]);
    let want = format!(
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : 3\n\"RaftTerm\" : {}\n\
         \"Key\" : \"x1\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 2\n\"Version\" : 1\n\
         \"Value\" : \"one\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n",
        h["cluster_id"], h["member_id"], h["raft_term"]
    );
    assert_eq!(fields, want);
    assert_eq!(
        h["member_id"].as_u64().unwrap(),
        c.json(&["member", "list"])["members"][0]["ID"]
            .as_u64()
            .unwrap()
    );

    // protobuf: the RangeResponse's wire bytes.
    let out = c.etcdctl(&["get", "x", "--prefix", "-w", "protobuf"]);
    assert!(out.status.success());
    let r = pb::RangeResponse::decode(&out.stdout[..]).expect("a RangeResponse");
    assert_eq!(r.count, 2);
    assert_eq!(r.kvs[1].key, b"x2");
    assert_eq!(r.kvs[1].value, b"two");
    assert_eq!(r.kvs[1].create_revision, 3);
    let hd = r.header.unwrap();
    assert_eq!(hd.revision, 3);
    assert_eq!(Some(hd.cluster_id), h["cluster_id"].as_u64());
    let out = c.etcdctl(&["put", "x3", "three", "-w", "protobuf"]);
    let p = pb::PutResponse::decode(&out.stdout[..]).expect("a PutResponse");
    assert_eq!(p.header.unwrap().revision, 4);
}

#[test]
fn put_flags_prev_kv_lease_ignore_value_and_ignore_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "k", "v1"]);
    // --prev-kv prints the value replaced.
    assert_eq!(c.ok(&["put", "k", "v2", "--prev-kv"]), "OK\nk\nv1\n");
    let p = c.json(&["put", "k", "v3", "--prev-kv"]);
    assert_eq!(text(&p["prev_kv"]["value"]), "v2");
    assert_eq!(p["prev_kv"]["mod_revision"], 3);
    assert_eq!(p["prev_kv"]["version"], 2);
    // A new key has no previous value.
    assert_eq!(c.ok(&["put", "new", "n", "--prev-kv"]), "OK\n");

    let lease = c.ok(&["lease", "grant", "600"]);
    let id = lease.split_whitespace().nth(1).unwrap().to_string();
    let id_dec = i64::from_str_radix(&id, 16).unwrap();
    assert_eq!(c.ok(&["put", "k", "v4", "--lease", &id]), "OK\n");
    let v = c.json(&["get", "k"]);
    assert_eq!(kv(&v, 0)["lease"], id_dec);

    // --ignore-value keeps the value; without --lease it drops the lease.
    assert_eq!(c.ok(&["put", "k", "--ignore-value"]), "OK\n");
    let v = c.json(&["get", "k"]);
    assert_eq!(text(&kv(&v, 0)["value"]), "v4");
    assert_eq!(kv(&v, 0)["version"], 5);
    assert!(kv(&v, 0).get("lease").is_none(), "lease detached: {v}");

    // --ignore-lease keeps the lease while the value changes.
    c.ok(&["put", "k", "v5", "--lease", &id]);
    assert_eq!(c.ok(&["put", "k", "v6", "--ignore-lease"]), "OK\n");
    let v = c.json(&["get", "k"]);
    assert_eq!(text(&kv(&v, 0)["value"]), "v6");
    assert_eq!(kv(&v, 0)["lease"], id_dec);
    // Both: only the version and mod revision move.
    c.ok(&["put", "k", "--ignore-value", "--ignore-lease"]);
    let w = c.json(&["get", "k"]);
    assert_eq!(text(&kv(&w, 0)["value"]), "v6");
    assert_eq!(kv(&w, 0)["lease"], id_dec);
    assert_eq!(
        kv(&w, 0)["version"],
        kv(&v, 0)["version"].as_i64().unwrap() + 1
    );
    assert_eq!(
        kv(&w, 0)["mod_revision"],
        kv(&v, 0)["mod_revision"].as_i64().unwrap() + 1
    );
    let ttl = c.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([k])"), "{ttl}");

    // What etcd refuses, with its messages.
    assert_eq!(
        c.fails(&["put", "missing", "--ignore-value"]),
        "etcdserver: key not found"
    );
    assert_eq!(
        c.fails(&["put", "missing", "x", "--ignore-lease"]),
        "etcdserver: key not found"
    );
    assert_eq!(
        c.fails(&["put", "k", "x", "--lease", &id, "--ignore-lease"]),
        "etcdserver: lease is provided"
    );
    assert_eq!(
        c.fails(&["put", "k", "x", "--lease", "1234abcd"]),
        "etcdserver: requested lease not found"
    );
    // None of those wrote anything.
    assert_eq!(c.json(&["get", "k"]), w);
}

#[test]
fn del_by_prefix_from_key_and_range_with_prev_kv() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    for k in ["a", "a1", "a2", "b", "c", "d"] {
        c.ok(&["put", k, &format!("v-{k}")]);
    }
    // One revision for the whole deletion.
    assert_eq!(c.ok(&["del", "a", "--prefix"]), "3\n");
    assert_eq!(c.revision(), 8);
    assert_eq!(keys_of(&c.ok(&["get", "", "--prefix"])), ["b", "c", "d"]);
    // The deleted keys' history is still readable.
    assert_eq!(c.ok(&["get", "a1", "--rev", "7"]), "a1\nv-a1\n");

    assert_eq!(
        c.ok(&["del", "c", "--from-key", "--prev-kv"]),
        "2\nc\nv-c\nd\nv-d\n"
    );
    let d = c.json(&["del", "b", "--prev-kv"]);
    assert_eq!(d["deleted"], 1);
    assert_eq!(d["header"]["revision"], 10);
    assert_eq!(text(&d["prev_kvs"][0]["value"]), "v-b");
    assert_eq!(d["prev_kvs"][0]["create_revision"], 5);
    assert_eq!(c.ok(&["get", "", "--prefix"]), "");

    // A range [x, z).
    for k in ["w", "x", "y", "z"] {
        c.ok(&["put", k, k]);
    }
    assert_eq!(c.ok(&["del", "x", "z"]), "2\n");
    assert_eq!(keys_of(&c.ok(&["get", "", "--prefix"])), ["w", "z"]);
}

#[test]
fn put_reads_the_value_from_stdin_and_keeps_bytes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let value = "line one\nline two\twith tab and ünïcode";
    assert_eq!(c.ok_with(&["put", "multi"], value), "OK\n");
    let v = c.json(&["get", "multi"]);
    assert_eq!(text(&kv(&v, 0)["value"]), value);
    // A value starting with a dash after `--`.
    c.ok(&["put", "--", "dash", "-x"]);
    assert_eq!(c.ok(&["get", "dash", "--print-value-only"]), "-x\n");
    // --hex prints every byte escaped.
    assert_eq!(
        c.ok(&["get", "dash", "--hex", "--keys-only"]),
        "\\x64\\x61\\x73\\x68\n\n"
    );
}
