//! `etcdctl watch`: a key, a prefix, a range, history from `--rev`,
//! `--prev-kv`, JSON output, interactive mode and exec mode, each read line
//! by line from a running etcdctl (compat.md §4.7).

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// Puts `key` = `probe-N` until the running watch prints a probe: from then
/// on the watch is registered and sees every later write. Returns the
/// lines it printed up to the probe's value.
fn sync(c: &Cairn, w: &Running, key: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut n = 0;
    eventually(WAIT, "the watch to be registered", || {
        n += 1;
        c.ok(&["put", key, &format!("probe-{n}")]);
        while let Some(l) = w.try_line(Duration::from_millis(200)) {
            let probe = l.starts_with("probe-");
            seen.push(l);
            if probe {
                return Some(());
            }
        }
        None
    });
    // Probes already in flight when the first one arrived.
    while let Some(l) = w.try_line(Duration::from_millis(300)) {
        seen.push(l);
    }
    seen
}

#[test]
fn watch_of_a_key_prints_its_puts_and_deletes_as_they_happen() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let w = c.spawn(&["watch", "foo"]);
    sync(&c, &w, "foo");
    c.ok(&["put", "foo", "bar"]);
    c.ok(&["put", "other", "ignored"]);
    c.ok(&["put", "foo2", "ignored too"]);
    c.ok(&["del", "foo"]);
    c.ok(&["put", "foo", "back"]);
    assert_eq!(
        w.lines(9, WAIT),
        [
            "PUT", "foo", "bar", "DELETE", "foo", "", "PUT", "foo", "back"
        ]
    );
    assert!(w.try_line(Duration::from_millis(300)).is_none());
}

#[test]
fn watch_of_a_prefix_and_of_a_range_sees_only_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let p = c.spawn(&["watch", "--prefix", "dir/"]);
    let r = c.spawn(&["watch", "b", "d"]);
    sync(&c, &p, "dir/probe");
    sync(&c, &r, "b-probe");
    c.ok(&["put", "dir/a", "1"]);
    c.ok(&["put", "dir", "not under dir/"]);
    c.ok(&["put", "c", "in range"]);
    c.ok(&["put", "d", "range end, excluded"]);
    // A transaction's events come together, in op order.
    c.ok_with(&["txn"], "\nput dir/b 2\nput cc 3\ndel dir/a\n\n\n");
    assert_eq!(
        p.lines(9, WAIT),
        [
            "PUT", "dir/a", "1", "PUT", "dir/b", "2", "DELETE", "dir/a", ""
        ]
    );
    assert_eq!(r.lines(6, WAIT), ["PUT", "c", "in range", "PUT", "cc", "3"]);
    assert!(p.try_line(Duration::from_millis(300)).is_none());
    assert!(r.try_line(Duration::from_millis(100)).is_none());
}

#[test]
fn watch_from_a_past_revision_replays_history_then_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "h", "1"]); // 2
    c.ok(&["put", "x", "unrelated"]); // 3
    c.ok(&["put", "h", "2"]); // 4
    c.ok(&["del", "h"]); // 5
    c.ok(&["put", "h", "3"]); // 6
    let w = c.spawn(&["watch", "h", "--rev", "1"]);
    assert_eq!(
        w.lines(12, WAIT),
        [
            "PUT", "h", "1", "PUT", "h", "2", "DELETE", "h", "", "PUT", "h", "3"
        ]
    );
    // Starting in the middle: inclusive of that revision.
    let mid = c.spawn(&["watch", "h", "--rev", "4"]);
    assert_eq!(
        mid.lines(9, WAIT),
        ["PUT", "h", "2", "DELETE", "h", "", "PUT", "h", "3"]
    );
    // Then live events on both.
    c.ok(&["put", "h", "4"]); // 7
    assert_eq!(w.lines(3, WAIT), ["PUT", "h", "4"]);
    assert_eq!(mid.lines(3, WAIT), ["PUT", "h", "4"]);
    // A future revision waits for it.
    let future = c.spawn(&["watch", "h", "--rev", "9"]);
    c.ok(&["put", "h", "5"]); // 8
    assert!(future.try_line(Duration::from_millis(500)).is_none());
    c.ok(&["put", "h", "6"]); // 9
    assert_eq!(future.lines(3, WAIT), ["PUT", "h", "6"]);
}

#[test]
fn watch_with_prev_kv_prints_the_previous_value_and_json_has_every_field() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "p", "old"]); // 2
    c.ok(&["put", "p", "new"]); // 3
    c.ok(&["del", "p"]); // 4
    c.ok(&["put", "p", "again"]); // 5
    let w = c.spawn(&["watch", "p", "--rev", "2", "--prev-kv"]);
    #[rustfmt::skip]
    let want = [
        "PUT", "p", "old", // a creation has no previous value
        "PUT", "p", "old", "p", "new",
        "DELETE", "p", "new", "p", "",
        "PUT", "p", "again", // nor a re-creation after a delete
    ];
    assert_eq!(w.lines(16, WAIT), want);

    let j = c.spawn(&["watch", "p", "--rev", "3", "--prev-kv", "-w", "json"]);
    let line = j.line(WAIT);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["Header"]["revision"], 5);
    assert_eq!(v["Canceled"], false);
    let ev = v["Events"].as_array().unwrap();
    assert_eq!(ev.len(), 3, "history in one response: {v}");
    assert!(ev[0].get("type").is_none(), "PUT is the zero value: {v}");
    assert_eq!(text(&ev[0]["kv"]["value"]), "new");
    assert_eq!(ev[0]["kv"]["version"], 2);
    assert_eq!(text(&ev[0]["prev_kv"]["value"]), "old");
    assert_eq!(ev[0]["prev_kv"]["mod_revision"], 2);
    // A deletion carries only the key and its revision, plus prev_kv.
    assert_eq!(ev[1]["type"], 1);
    assert_eq!(
        ev[1]["kv"],
        serde_json::json!({"key": b64(b"p"), "mod_revision": 4})
    );
    assert_eq!(text(&ev[1]["prev_kv"]["value"]), "new");
    assert_eq!(ev[2]["kv"]["create_revision"], 5);
    assert_eq!(ev[2]["kv"]["version"], 1);
    assert!(ev[2].get("prev_kv").is_none(), "{v}");
}

#[test]
fn interactive_watch_takes_watch_commands_on_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let mut w = c.spawn(&["watch", "-i"]);
    w.send("watch foo");
    sync(&c, &w, "foo");
    w.send("watch --prefix bar");
    sync(&c, &w, "bar/probe");
    c.ok(&["put", "foo", "1"]);
    c.ok(&["put", "bar/x", "2"]);
    c.ok(&["put", "baz", "not watched"]);
    c.ok(&["del", "foo"]);
    assert_eq!(
        w.lines(9, WAIT),
        ["PUT", "foo", "1", "PUT", "bar/x", "2", "DELETE", "foo", ""]
    );
    // A third watcher from a past revision replays.
    w.send("watch baz --rev 1");
    assert_eq!(w.lines(3, WAIT), ["PUT", "baz", "not watched"]);
    assert!(w.try_line(Duration::from_millis(300)).is_none());
}

#[test]
fn watch_runs_a_command_per_event_with_the_event_in_its_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    c.ok(&["put", "e", "value-1"]);
    let w = c.spawn(&[
        "watch",
        "e",
        "--rev",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "echo \"cmd $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE @$ETCD_WATCH_REVISION\"",
    ]);
    let lines = w.until(WAIT, |l| l.starts_with("cmd "));
    // etcdctl quotes the strings it exports.
    assert_eq!(lines.last().unwrap(), r#"cmd "PUT" "e"="value-1" @2"#);
    c.ok(&["put", "e", "value-2"]);
    let lines = w.until(WAIT, |l| l.starts_with("cmd "));
    assert_eq!(lines.last().unwrap(), r#"cmd "PUT" "e"="value-2" @3"#);
}

/// `n` puts through the JSON gateway on one kept-alive HTTP/1.1
/// connection (thousands of revisions in seconds); key `i` is `key(i)`.
fn put_many(c: &Cairn, n: usize, key: impl Fn(usize) -> String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let s = std::net::TcpStream::connect(c.endpoint()).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for i in 0..n {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(key(i).as_bytes()),
            b64(format!("v{i}").as_bytes())
        );
        let req = format!(
            "POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        w.write_all(req.as_bytes()).unwrap();
        let mut len = 0;
        let mut status = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if status.is_empty() {
                status = line.clone();
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        assert!(status.contains(" 200 "), "{status}");
        r.by_ref().take(len).read_to_end(&mut Vec::new()).unwrap();
    }
}

#[test]
fn a_long_history_replays_in_responses_of_at_most_1000_revisions() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    put_many(&c, 2500, |i| format!("bulk/{:02}", i % 50));
    let w = c.spawn(&["watch", "--prefix", "bulk/", "--rev", "1", "-w", "json"]);
    let mut events = 0;
    let mut next_rev = 2;
    let mut responses = 0;
    while events < 2500 {
        let v: serde_json::Value = serde_json::from_str(&w.line(WAIT)).unwrap();
        responses += 1;
        let mut revs = std::collections::BTreeSet::new();
        for e in v["Events"].as_array().unwrap() {
            let rev = e["kv"]["mod_revision"].as_i64().unwrap();
            assert_eq!(rev, next_rev, "in order, none missing");
            assert_eq!(text(&e["kv"]["value"]), format!("v{}", rev - 2));
            next_rev += 1;
            revs.insert(rev);
            events += 1;
        }
        assert!(
            revs.len() <= 1000,
            "{} revisions in one response",
            revs.len()
        );
    }
    assert_eq!(responses, 3, "1000 + 1000 + 500");
    // Then it follows live writes.
    c.ok(&["put", "bulk/x", "live"]);
    let v: serde_json::Value = serde_json::from_str(&w.line(WAIT)).unwrap();
    assert_eq!(v["Events"][0]["kv"]["mod_revision"], 2502);
}
