//! `etcdctl lease`: grant, list, timetolive (with keys), keep-alive (a
//! stream and `--once`), revoke, and expiry deleting a lease's keys — seen
//! by `get` and by a watch (compat.md §4.8).

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// `lease grant ttl`; returns the id as etcdctl prints it (hex) and the TTL
/// the server granted.
fn grant(c: &Cairn, ttl: &str) -> (String, i64) {
    let out = c.ok(&["lease", "grant", ttl]);
    // "lease 390da23446c1b804 granted with TTL(2s)"
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((words[0], words[2], words[3]), ("lease", "granted", "with"));
    let ttl = words[4]
        .strip_prefix("TTL(")
        .and_then(|t| t.strip_suffix("s)"))
        .unwrap()
        .parse()
        .unwrap();
    (words[1].to_string(), ttl)
}

/// What `lease timetolive -w json` says.
fn ttl_of(c: &Cairn, id: &str) -> serde_json::Value {
    c.json(&["lease", "timetolive", id, "--keys"])
}

#[test]
fn grant_list_timetolive_and_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let (id, ttl) = grant(&c, "600");
    assert_eq!(ttl, 600);
    assert_eq!(id.len(), 16, "16 hex digits: {id}");
    let dec = i64::from_str_radix(&id, 16).unwrap();
    assert!(dec > 0);
    let (id2, _) = grant(&c, "300");
    let mut ids = [id.clone(), id2.clone()];
    ids.sort();
    let list = c.ok(&["lease", "list"]);
    let mut listed: Vec<&str> = list.lines().skip(1).collect();
    listed.sort();
    assert_eq!(list.lines().next(), Some("found 2 leases"));
    assert_eq!(listed, ids);
    // Granting writes no revision.
    assert_eq!(c.revision(), 1);

    c.ok(&["put", "l/a", "1", "--lease", &id]);
    c.ok(&["put", "l/b", "2", "--lease", &id]);
    c.ok(&["put", "l/c", "3"]);
    let out = c.ok(&["lease", "timetolive", &id]);
    let prefix = format!("lease {id} granted with TTL(600s), remaining(");
    assert!(out.starts_with(&prefix), "{out}");
    let remaining: i64 = out[prefix.len()..]
        .trim_end_matches("s)\n")
        .parse()
        .unwrap();
    assert!((595..=600).contains(&remaining), "{out}");
    assert_eq!(
        c.ok(&["lease", "timetolive", &id, "--keys"]),
        format!(
            "lease {id} granted with TTL(600s), remaining({remaining}s), attached keys([l/a l/b])\n"
        )
    );
    let v = ttl_of(&c, &id);
    assert_eq!(v["id"], dec);
    assert_eq!(v["granted-ttl"], 600);
    assert_eq!(v["keys"], serde_json::json!([b64(b"l/a"), b64(b"l/b")]));

    // Revoke: its keys go, in one revision.
    assert_eq!(
        c.ok(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(c.ok(&["get", "l/", "--prefix", "--keys-only"]), "l/c\n\n");
    assert_eq!(c.revision(), 5);
    assert_eq!(c.ok(&["get", "l/a", "--rev", "4"]), "l/a\n1\n");
    assert_eq!(
        c.ok(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );
    let v = ttl_of(&c, &id);
    assert_eq!(v["ttl"], -1);
    assert_eq!(v["granted-ttl"], 0);
    assert_eq!(c.ok(&["lease", "list"]), format!("found 1 leases\n{id2}\n"));
    // A lease without keys revokes without a revision.
    c.ok(&["lease", "revoke", &id2]);
    assert_eq!(c.revision(), 5);
    assert_eq!(c.ok(&["lease", "list"]), "found 0 leases\n");

    assert_eq!(
        c.fails(&["lease", "revoke", &id]),
        "failed to revoke lease (etcdserver: requested lease not found)"
    );
    assert_eq!(
        c.fails(&["lease", "grant", "9000000001"]),
        "failed to grant lease (etcdserver: too large lease TTL)"
    );
    assert_eq!(
        c.fails(&["put", "x", "y", "--lease", &id]),
        "etcdserver: requested lease not found"
    );
}

#[test]
fn a_short_lease_gets_the_minimum_ttl_and_expiry_deletes_its_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    // The harness runs with a 500 ms election timeout: the minimum TTL is
    // ceil(1.5 × 0.5 s) = 1 s; etcd's default 1 s timeout gives 2 s.
    let (id, ttl) = grant(&c, "2");
    assert_eq!(ttl, 2);
    let granted = ttl_of(&c, &id);
    assert_eq!(granted["granted-ttl"], 2);
    assert!(
        (1..=2).contains(&granted["ttl"].as_i64().unwrap()),
        "{granted}"
    );
    c.ok(&["put", "exp/a", "1", "--lease", &id]);
    c.ok(&["put", "exp/b", "2", "--lease", &id]);
    c.ok(&["put", "exp/keep", "3"]);
    let rev = c.revision();
    let w = c.spawn(&[
        "watch",
        "--prefix",
        "exp/",
        "--rev",
        &(rev + 1).to_string(),
        "-w",
        "json",
    ]);
    // The leader revokes it: both keys deleted in one response (one
    // revision), which the watch sees.
    let line = w.line(WAIT);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let ev = v["Events"].as_array().unwrap();
    assert_eq!(ev.len(), 2, "{v}");
    for (e, k) in ev.iter().zip(["exp/a", "exp/b"]) {
        assert_eq!(e["type"], 1, "{v}");
        assert_eq!(text(&e["kv"]["key"]), k);
        assert_eq!(e["kv"]["mod_revision"], rev + 1);
    }
    assert_eq!(c.ok(&["get", "exp/", "--prefix"]), "exp/keep\n3\n");
    assert_eq!(ttl_of(&c, &id)["ttl"], -1);
    assert_eq!(c.ok(&["lease", "list"]), "found 0 leases\n");

    // A grant below the minimum is raised to it.
    let min = Spec::new("min", tmp.path());
    let mut spec = min;
    spec.extra = vec!["--election-timeout".into(), "1000".into()];
    let d = Cairn::start(&spec);
    assert_eq!(grant(&d, "1").1, 2);
}

#[test]
fn keep_alive_renews_a_lease_until_it_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let (id, _) = grant(&c, "2");
    c.ok(&["put", "alive", "yes", "--lease", &id]);
    assert_eq!(
        c.ok(&["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(2)\n")
    );
    let ka = c.spawn(&["lease", "keep-alive", &id]);
    // clientv3 renews every TTL/3: several renewals within 4 s, twice the
    // TTL, and the key stays all along.
    let start = std::time::Instant::now();
    let mut renewals = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let l = ka.line(WAIT);
        assert_eq!(l, format!("lease {id} keepalived with TTL(2)"));
        renewals += 1;
        assert_eq!(c.ok(&["get", "alive", "--print-value-only"]), "yes\n");
    }
    assert!(renewals >= 4, "{renewals} renewals");
    let v = ttl_of(&c, &id);
    assert!(v["ttl"].as_i64().unwrap() >= 1, "{v}");
    drop(ka);
    // Without keep-alives it runs out.
    eventually(WAIT, "the lease to expire", || {
        (c.ok(&["get", "alive"]).is_empty()).then_some(())
    });
    assert_eq!(
        c.fails(&["lease", "keep-alive", "--once", &id]),
        "etcdserver: requested lease not found"
    );
    // A keep-alive stream on an expired lease ends with etcdctl's message.
    let mut gone = c.spawn(&["lease", "keep-alive", &id]);
    assert_eq!(gone.line(WAIT), format!("lease {id} expired or revoked."));
    assert_eq!(gone.wait(WAIT), Some(0));
}
