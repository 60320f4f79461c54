//! The JSON gateway and the plain HTTP endpoints on the client port, driven
//! with curl: `/v3/kv/*`, `/v3/lease/*`, `/v3/watch` (streamed),
//! `/v3/maintenance/*`, `/v3beta/`, errors as etcd shapes them, `/health`
//! and `/version` (compat.md §1, §6; `/metrics` is in metrics.rs).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// `header` with the ids the member reports, at `revision` (as strings).
fn header(c: &Cairn, revision: i64) -> Value {
    let v = c.json(&["endpoint", "status"]);
    let h = &v[0]["Status"]["header"];
    json!({
        "cluster_id": h["cluster_id"].as_u64().unwrap().to_string(),
        "member_id": h["member_id"].as_u64().unwrap().to_string(),
        "revision": revision.to_string(),
        "raft_term": h["raft_term"].as_u64().unwrap().to_string(),
    })
}

fn ok(c: &Cairn, path: &str, body: Value) -> Value {
    let r = post(&c.url(path), &body.to_string());
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[test]
fn kv_put_range_deleterange_and_txn_answer_etcds_json() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let foo = b64(b"foo");
    let put = ok(&c, "/v3/kv/put", json!({"key": foo, "value": b64(b"bar")}));
    assert_eq!(put, json!({"header": header(&c, 2)}));
    ok(
        &c,
        "/v3/kv/put",
        json!({"key": b64(b"foo2"), "value": b64(b"x")}),
    );
    let put = ok(
        &c,
        "/v3/kv/put",
        json!({"key": foo, "value": b64(b"baz"), "prev_kv": true}),
    );
    assert_eq!(
        put["prev_kv"],
        json!({"key": foo, "create_revision": "2", "mod_revision": "2", "version": "1", "value": b64(b"bar")})
    );
    // etcdctl sees the same data.
    assert_eq!(c.ok(&["get", "foo"]), "foo\nbaz\n");

    let range = ok(&c, "/v3/kv/range", json!({"key": foo}));
    assert_eq!(
        range,
        json!({
            "header": header(&c, 4),
            "kvs": [{"key": foo, "create_revision": "2", "mod_revision": "4", "version": "2", "value": b64(b"baz")}],
            "count": "1",
        })
    );
    // A prefix range in lowerCamel input, limited; zero values omitted.
    let r = ok(
        &c,
        "/v3/kv/range",
        json!({"key": foo, "rangeEnd": b64(b"fop"), "limit": 1, "keys_only": true}),
    );
    assert_eq!(
        r["kvs"],
        json!([{"key": foo, "create_revision": "2", "mod_revision": "4", "version": "2"}])
    );
    assert_eq!((&r["more"], &r["count"]), (&json!(true), &json!("2")));
    let r = ok(
        &c,
        "/v3/kv/range",
        json!({"key": foo, "range_end": b64(b"fop"), "count_only": true}),
    );
    assert_eq!(r, json!({"header": header(&c, 4), "count": "2"}));
    // Enums by name or number; an older revision.
    let r = ok(
        &c,
        "/v3/kv/range",
        json!({"key": foo, "range_end": b64(b"fop"), "sort_order": "DESCEND", "sort_target": 0, "revision": "3"}),
    );
    let keys: Vec<String> = r["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| text(&k["key"]))
        .collect();
    assert_eq!(keys, ["foo2", "foo"]);
    assert_eq!(text(&r["kvs"][1]["value"]), "bar");

    let txn = ok(
        &c,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": foo, "target": "VALUE", "result": "EQUAL", "value": b64(b"baz")}],
            "success": [
                {"request_put": {"key": b64(b"t"), "value": b64(b"1")}},
                {"request_range": {"key": b64(b"t")}}
            ],
            "failure": [{"request_delete_range": {"key": foo}}]
        }),
    );
    assert_eq!(txn["header"], header(&c, 5));
    assert_eq!(txn["succeeded"], true);
    assert_eq!(
        txn["responses"][0],
        json!({"response_put": {"header": {"revision": "5"}}})
    );
    assert_eq!(
        txn["responses"][1]["response_range"]["kvs"][0]["value"],
        b64(b"1")
    );
    // The failure branch: succeeded omitted.
    let txn = ok(
        &c,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": foo, "target": "VERSION", "result": "GREATER", "version": "5"}],
            "failure": [{"request_delete_range": {"key": foo, "range_end": b64(b"fop"), "prev_kv": true}}]
        }),
    );
    assert!(txn.get("succeeded").is_none(), "{txn}");
    let d = &txn["responses"][0]["response_delete_range"];
    assert_eq!(d["deleted"], "2");
    assert_eq!(d["prev_kvs"].as_array().unwrap().len(), 2);

    let del = ok(
        &c,
        "/v3/kv/deleterange",
        json!({"key": b64(b"t"), "prev_kv": true}),
    );
    assert_eq!(del["header"], header(&c, 7));
    assert_eq!(del["deleted"], "1");
    assert_eq!(text(&del["prev_kvs"][0]["value"]), "1");
    // Nothing to delete: no revision, deleted omitted.
    let del = ok(&c, "/v3/kv/deleterange", json!({"key": b64(b"t")}));
    assert_eq!(del, json!({"header": header(&c, 7)}));

    // /v3beta/ is the same API.
    let beta = post(
        &c.url("/v3beta/kv/range"),
        &json!({"key": b64(b"foo")}).to_string(),
    );
    assert_eq!(beta.status, 200);
    assert_eq!(beta.json(), json!({"header": header(&c, 7)}));
    ok(
        &c,
        "/v3beta/kv/put",
        json!({"key": foo, "value": b64(b"beta")}),
    );
    assert_eq!(c.ok(&["get", "foo", "--print-value-only"]), "beta\n");
}

#[test]
fn lease_grant_timetolive_leases_keepalive_and_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let g = ok(&c, "/v3/lease/grant", json!({"TTL": "60"}));
    assert_eq!(g["TTL"], "60");
    assert_eq!(g["header"], header(&c, 1));
    let id: i64 = g["ID"].as_str().unwrap().parse().unwrap();
    assert!(id > 0);
    // etcdctl sees it, in hex.
    let hex = format!("{id:016x}");
    assert_eq!(c.ok(&["lease", "list"]), format!("found 1 leases\n{hex}\n"));
    // A chosen id; taken ids and huge TTLs refused.
    let g = ok(&c, "/v3/lease/grant", json!({"ID": "77", "TTL": "600"}));
    assert_eq!(g["ID"], "77");
    let dup = post(&c.url("/v3/lease/grant"), r#"{"ID":"77","TTL":"60"}"#);
    assert_eq!(dup.status, 412);
    assert_eq!(
        dup.body,
        r#"{"error":"etcdserver: lease already exists","message":"etcdserver: lease already exists","code":9}"#
    );
    let big = post(&c.url("/v3/lease/grant"), r#"{"TTL":"9000000001"}"#);
    assert_eq!((big.status, big.json()["code"].clone()), (400, json!(11)));

    c.ok(&["put", "lk", "v", "--lease", &hex]);
    let t = ok(
        &c,
        "/v3/lease/timetolive",
        json!({"ID": id.to_string(), "keys": true}),
    );
    assert_eq!(t["ID"], id.to_string());
    assert_eq!(t["grantedTTL"], "60");
    assert_eq!(t["keys"], json!([b64(b"lk")]));
    let ttl: i64 = t["TTL"].as_str().unwrap().parse().unwrap();
    assert!((55..=60).contains(&ttl), "{t}");
    let t = ok(&c, "/v3/kv/lease/timetolive", json!({"ID": "12345"}));
    assert_eq!(t["TTL"], "-1");
    let l = ok(&c, "/v3/lease/leases", json!({}));
    let mut ids: Vec<&str> = l["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ID"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec!["77".to_string(), id.to_string()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        ok(&c, "/v3/kv/lease/leases", json!({}))["leases"],
        l["leases"]
    );

    // Keep-alive: one streamed result per request; an unknown lease has no TTL.
    let r = post(
        &c.url("/v3/lease/keepalive"),
        &format!(r#"{{"ID":"{id}"}}{{"ID":"12345"}}"#),
    );
    assert_eq!(r.status, 200);
    let lines: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", r.body);
    assert_eq!(lines[0]["result"]["TTL"], "60");
    assert_eq!(lines[0]["result"]["ID"], id.to_string());
    assert_eq!(lines[1]["result"]["ID"], "12345");
    assert!(lines[1]["result"].get("TTL").is_none(), "{}", r.body);

    let r = ok(&c, "/v3/lease/revoke", json!({"ID": id.to_string()}));
    assert_eq!(r, json!({"header": header(&c, 3)}));
    assert_eq!(c.ok(&["get", "lk"]), "");
    let again = post(
        &c.url("/v3/kv/lease/revoke"),
        &json!({"ID": id.to_string()}).to_string(),
    );
    assert_eq!(again.status, 404);
    assert_eq!(
        again.json()["error"],
        "etcdserver: requested lease not found"
    );
    assert_eq!(again.json()["code"], 5);
}

/// curl on a streamed endpoint, its output read line by line as it comes.
struct Stream {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Stream {
    fn start(url: &str, body: &str) -> Stream {
        let mut child = Command::new("curl")
            .args([
                "-s",
                "-N",
                "--max-time",
                "20",
                "-X",
                "POST",
                "-d",
                body,
                url,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Stream { child, rx }
    }

    fn next(&self) -> Value {
        let l = self.rx.recv_timeout(WAIT).expect("a streamed line");
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        v["result"].clone()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn watch_streams_results_as_they_happen() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "w", "1"]); // 2
    c.ok(&["put", "w", "2"]); // 3
    let s = Stream::start(
        &c.url("/v3/watch"),
        &json!({"create_request": {"key": b64(b"w"), "start_revision": "2", "prev_kv": true}})
            .to_string(),
    );
    assert_eq!(s.next(), json!({"header": header(&c, 3), "created": true}));
    let history = s.next();
    let ev = history["events"].as_array().unwrap();
    assert_eq!(ev.len(), 2, "{history}");
    assert_eq!(ev[0]["kv"]["value"], b64(b"1"));
    assert_eq!(ev[1]["prev_kv"]["value"], b64(b"1"));
    assert!(history.get("watch_id").is_none(), "watch id 0 is omitted");
    // Live.
    c.ok(&["del", "w"]); // 4
    let live = s.next();
    assert_eq!(live["header"], header(&c, 4));
    assert_eq!(live["events"][0]["type"], "DELETE");
    assert_eq!(
        live["events"][0]["kv"],
        json!({"key": b64(b"w"), "mod_revision": "4"})
    );
    assert_eq!(live["events"][0]["prev_kv"]["value"], b64(b"2"));

    // Several creates in one body, answered in order; a taken id and an
    // empty range are refused with etcd's reasons.
    let s = Stream::start(
        &c.url("/v3/watch"),
        &[
            json!({"create_request": {"key": b64(b"a"), "watch_id": "7"}}),
            json!({"create_request": {"key": b64(b"b"), "watch_id": "7"}}),
            json!({"create_request": {"key": b64(b"c"), "range_end": b64(b"c")}}),
            json!({"create_request": {"key": b64(b"d"), "range_end": b64(b"e")}}),
        ]
        .iter()
        .map(Value::to_string)
        .collect::<String>(),
    );
    assert_eq!(s.next()["watch_id"], "7");
    let dup = s.next();
    assert_eq!(
        (&dup["watch_id"], &dup["canceled"], &dup["cancel_reason"]),
        (
            &json!("-1"),
            &json!(true),
            &json!("mvcc: duplicate watch ID provided on the WatchStream")
        )
    );
    assert_eq!(s.next()["cancel_reason"], "mvcc: watcher range is empty");
    // Automatic ids count from 0 (omitted) whatever ids the client chose.
    let d = s.next();
    assert_eq!(d["created"], true);
    assert!(d.get("watch_id").is_none(), "{d}");
    c.ok(&["put", "dd", "x"]);
    let e = s.next();
    assert!(e.get("watch_id").is_none(), "{e}");
    assert_eq!(e["events"][0]["kv"]["key"], b64(b"dd"));
    c.ok(&["put", "a", "x"]);
    assert_eq!(s.next()["watch_id"], "7");
}

#[test]
fn a_compacted_revision_is_refused_with_etcds_status_and_body() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    for v in ["1", "2", "3"] {
        c.ok(&["put", "k", v]);
    }
    ok(
        &c,
        "/v3/kv/compaction",
        json!({"revision": "3", "physical": true}),
    );
    let compacted = "etcdserver: mvcc: required revision has been compacted";
    let r = post(
        &c.url("/v3/kv/range"),
        &json!({"key": b64(b"k"), "revision": "2"}).to_string(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        format!(r#"{{"error":"{compacted}","message":"{compacted}","code":11}}"#)
    );
    let r = post(&c.url("/v3/kv/compaction"), r#"{"revision":"2"}"#);
    assert_eq!((r.status, r.json()["code"].clone()), (400, json!(11)));
    let r = post(
        &c.url("/v3/kv/range"),
        &json!({"key": b64(b"k"), "revision": "9"}).to_string(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["message"],
        "etcdserver: mvcc: required revision is a future revision"
    );
    let r = ok(
        &c,
        "/v3/kv/range",
        json!({"key": b64(b"k"), "revision": "3"}),
    );
    assert_eq!(r["kvs"][0]["value"], b64(b"2"));
    // A watch below it: one canceled reply with the compact revision and
    // no revision in its header.
    let s = Stream::start(
        &c.url("/v3/watch"),
        &json!({"create_request": {"key": b64(b"k"), "start_revision": "2"}}).to_string(),
    );
    assert_eq!(s.next()["created"], true);
    let mut h = header(&c, 0);
    h.as_object_mut().unwrap().remove("revision");
    assert_eq!(
        s.next(),
        json!({"header": h, "canceled": true, "compact_revision": "3"})
    );
}

#[test]
fn bad_requests_get_etcds_statuses() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let r = post(&c.url("/v3/kv/range"), r#"{"key":"Zm9v"#);
    assert_eq!((r.status, r.json()["code"].clone()), (400, json!(3)));
    // Unpadded base64 is refused.
    let r = post(&c.url("/v3/kv/range"), r#"{"key":"YQ"}"#);
    assert_eq!((r.status, r.json()["code"].clone()), (400, json!(3)));
    let r = post(&c.url("/v3/kv/put"), r#"{"key":"","value":"eA=="}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "etcdserver: key is not provided");
    // Only POST; /v3alpha/ is not served.
    let r = curl("GET", &c.url("/v3/kv/range"), None, WAIT);
    assert_eq!(r.status, 405);
    let r = post(&c.url("/v3alpha/kv/range"), r#"{"key":"Zm9v"}"#);
    assert_eq!((r.status, r.body.as_str()), (404, "404 page not found\n"));
    let r = curl("GET", &c.url("/no/such/path"), None, WAIT);
    assert_eq!(r.status, 404);
    // CORS, and OPTIONS answered.
    let r = curl("OPTIONS", &c.url("/v3/kv/range"), None, WAIT);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
    // Still serving.
    ok(
        &c,
        "/v3/kv/put",
        json!({"key": b64(b"k"), "value": b64(b"v")}),
    );
}

#[test]
fn maintenance_status_alarm_defragment_and_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "a", "1"]);
    let s = ok(&c, "/v3/maintenance/status", json!({}));
    let h = header(&c, 2);
    assert_eq!(s["header"], h);
    assert_eq!(s["version"], "3.4.23");
    assert_eq!(s["leader"], h["member_id"]);
    assert_eq!(s["raftTerm"], h["raft_term"]);
    let size: i64 = s["dbSize"].as_str().unwrap().parse().unwrap();
    let in_use: i64 = s["dbSizeInUse"].as_str().unwrap().parse().unwrap();
    assert!(0 < in_use && in_use <= size, "{s}");
    assert!(s["raftIndex"].as_str().unwrap().parse::<u64>().unwrap() >= 2);
    // Alarm and Defragment answer without a header.
    assert_eq!(
        ok(&c, "/v3/maintenance/alarm", json!({"action": "GET"})),
        json!({})
    );
    assert_eq!(ok(&c, "/v3/maintenance/defragment", json!({})), json!({}));
    // /v3/maintenance/hash is Hash (3.4 registers HashKV on the same path).
    let hash = ok(&c, "/v3/maintenance/hash", json!({}));
    assert_eq!(hash["header"], h);
    assert!(hash["hash"].is_u64(), "a uint32 is a JSON number: {hash}");
    assert!(hash.get("compact_revision").is_none());
    let members = ok(&c, "/v3/cluster/member/list", json!({}));
    assert_eq!(members["members"][0]["ID"], h["member_id"]);
    assert_eq!(members["members"][0]["clientURLs"], json!([c.url("")]));
    assert!(members["header"].get("revision").is_none(), "{members}");
}

#[test]
fn health_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let r = curl("GET", &c.url("/health"), None, WAIT);
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"health":"true"}"#));
    let r = curl("POST", &c.url("/health"), None, WAIT);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let r = curl("GET", &c.url("/version"), None, WAIT);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"etcdserver": "3.4.23", "etcdcluster": "3.4.0"})
    );
    // What etcdctl makes of it.
    let v = c.ok(&["version"]);
    assert!(v.starts_with("etcdctl version: 3.4"), "{v}");
}
