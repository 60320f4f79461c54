//! Three-member clusters of the real `cairn` binary on 127.0.0.1, driven by
//! etcdctl: replication, membership changes, leadership transfer, failures.

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// `endpoint status -w json` of one member: (id, leader, is_learner).
fn status(m: &Cairn) -> (u64, u64, bool) {
    let out = m.ok(&["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["Status"];
    (
        s["header"]["member_id"].as_u64().unwrap(),
        // etcdctl leaves out a zero: no leader known (during an election or
        // a leadership transfer).
        s["leader"].as_u64().unwrap_or(0),
        s["isLearner"].as_bool().unwrap_or(false),
    )
}

/// The leader `m` knows, once it knows one.
fn leader_of(m: &Cairn) -> u64 {
    eventually(T, "a leader", || Some(status(m).1).filter(|&l| l != 0))
}

fn member_ids(m: &Cairn) -> Vec<(u64, String, bool)> {
    let out = m.ok(&["member", "list", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut ids: Vec<(u64, String, bool)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().unwrap(),
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_write_on_any_member_is_read_on_every_member() {
    let tmp = tempfile::tempdir().unwrap();
    let ms = cluster(tmp.path(), 3);
    for (i, m) in ms.iter().enumerate() {
        m.ok(&["put", &format!("k{i}"), &format!("v{i}")]);
    }
    for m in &ms {
        // Linearizable reads see every acknowledged write at once.
        assert_eq!(
            m.ok(&["get", "k", "--prefix", "--print-value-only"]),
            "v0\nv1\nv2\n"
        );
    }
    // Serializable reads catch up.
    for m in &ms {
        eventually(T, "serializable read", || {
            (m.ok(&["get", "k2", "--consistency=s", "--print-value-only"]) == "v2\n").then_some(())
        });
    }
    // One leader, known to all; every member lists all three by name.
    eventually(T, "one leader known to all", || {
        let leaders: Vec<u64> = ms.iter().map(|m| status(m).1).collect();
        leaders
            .iter()
            .all(|&l| l != 0 && l == leaders[0])
            .then_some(())
    });
    let names: Vec<String> = member_ids(&ms[0]).into_iter().map(|m| m.1).collect();
    let mut want = vec!["m0".to_string(), "m1".into(), "m2".into()];
    want.sort();
    let mut got = names.clone();
    got.sort();
    assert_eq!(got, want);
    // The same revision everywhere.
    let revs: Vec<String> = ms
        .iter()
        .map(|m| {
            let v: serde_json::Value =
                serde_json::from_str(&m.ok(&["get", "k0", "-w", "json"])).unwrap();
            v["header"]["revision"].to_string()
        })
        .collect();
    assert!(revs.iter().all(|r| r == &revs[0]), "{revs:?}");
}

#[test]
fn killing_the_leader_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms: Vec<Option<Cairn>> = cluster(tmp.path(), 3).into_iter().map(Some).collect();
    for i in 0..20 {
        ms[0]
            .as_ref()
            .unwrap()
            .ok(&["put", &format!("w{i:02}"), "x"]);
    }
    let leader_id = leader_of(ms[0].as_ref().unwrap());
    let li = ms
        .iter()
        .position(|m| status(m.as_ref().unwrap()).0 == leader_id)
        .unwrap();
    let spec = ms[li].as_ref().unwrap().spec.clone();
    ms[li].take().unwrap().kill9();
    let rest: Vec<&Cairn> = ms.iter().flatten().collect();
    // A new leader, and writes go on.
    eventually(T, "a new leader", || {
        let s = rest[0].etcdctl(&["put", "after", "kill"]);
        s.status.success().then_some(())
    });
    for m in &rest {
        let keys = m.ok(&["get", "w", "--prefix", "--keys-only"]);
        assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 20);
        assert_eq!(m.ok(&["get", "after", "--print-value-only"]), "kill\n");
    }
    // The killed leader comes back from its disk and catches up.
    let back = Cairn::start(&spec);
    assert_eq!(back.ok(&["get", "after", "--print-value-only"]), "kill\n");
    let keys = back.ok(&["get", "w", "--prefix", "--keys-only", "--consistency=s"]);
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 20);
}

#[test]
fn members_are_added_as_learners_promoted_updated_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let ms = cluster(tmp.path(), 3);
    ms[0].ok(&["put", "before", "1"]);
    // Add a learner and start it, joining the existing cluster.
    let mut spec = Spec::new("m3", tmp.path());
    let out = ms[0].ok(&[
        "member",
        "add",
        "m3",
        &format!("--peer-urls={}", spec.peer_url()),
        "--learner",
    ]);
    assert!(out.contains("added"), "{out}");
    let initial: Vec<String> = ms
        .iter()
        .map(|m| format!("{}={}", m.spec.name, m.spec.peer_url()))
        .chain([format!("m3={}", spec.peer_url())])
        .collect();
    spec.initial_cluster = Some(initial.join(","));
    spec.state_existing = true;
    let m3 = Cairn::start(&spec);
    eventually(T, "the learner to catch up", || {
        (m3.ok(&["get", "before", "--consistency=s", "--print-value-only"]) == "1\n").then_some(())
    });
    let listed = member_ids(&ms[0]);
    assert_eq!(listed.len(), 4);
    let learner = listed.iter().find(|m| m.2).expect("a learner").0;
    eventually(T, "the learner to know the leader", || {
        let leader = status(&ms[0]).1;
        (leader != 0 && status(&m3) == (learner, leader, true)).then_some(())
    });
    // A learner serves only serializable reads.
    let out = m3.etcdctl(&["get", "before"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rpc not supported for learner"));
    // Promote it.
    let id = format!("{learner:x}");
    let out = ms[0].ok(&["member", "promote", &id]);
    assert!(out.contains("promoted"), "{out}");
    // Each member lists from its own applied state (as etcd 3.4 does).
    eventually(T, "the promotion on a follower", || {
        member_ids(&ms[1]).iter().all(|m| !m.2).then_some(())
    });
    m3.ok(&["put", "from", "m3"]);
    assert_eq!(ms[1].ok(&["get", "from", "--print-value-only"]), "m3\n");
    // Update a member's peer URLs (to the same address under another
    // spelling): the list shows the new URL.
    let target = member_ids(&ms[0])
        .into_iter()
        .find(|m| m.1 == "m2")
        .unwrap()
        .0;
    let new_url = format!("http://localhost:{}", ms[2].spec.peer_port);
    ms[0].ok(&[
        "member",
        "update",
        &format!("{target:x}"),
        &format!("--peer-urls={new_url}"),
    ]);
    eventually(T, "the new peer URL on a follower", || {
        ms[1]
            .ok(&["member", "list"])
            .contains(&new_url)
            .then_some(())
    });
    // Remove the leader: it hands leadership over and stops; the rest go on.
    let gone = leader_of(&ms[0]);
    let mut all: Vec<&Cairn> = ms.iter().chain([&m3]).collect();
    let gi = all.iter().position(|m| status(m).0 == gone).unwrap();
    let removed = all.remove(gi);
    all[0].ok(&["member", "remove", &format!("{gone:x}")]);
    assert_eq!(member_ids(all[0]).len(), 3);
    // The removed member notices and stops; it would not start again.
    removed.wait_log("this member was removed from the cluster; shutting down", T);
    let log = removed.log();
    assert!(
        log.iter()
            .any(|l| l.contains("this leader was removed; handing leadership over")),
        "{log:#?}"
    );
    // Each member learns of the new leader from its first message.
    for m in &all {
        eventually(T, "a new leader", || {
            let l = status(m).1;
            (l != 0 && l != gone).then_some(())
        });
    }
    all[1].ok(&["put", "after", "remove"]);
    for m in &all {
        assert_eq!(m.ok(&["get", "after", "--print-value-only"]), "remove\n");
    }
}

#[test]
fn move_leader_hands_leadership_to_the_chosen_member() {
    let tmp = tempfile::tempdir().unwrap();
    let ms = cluster(tmp.path(), 3);
    let leader = leader_of(&ms[0]);
    let li = ms.iter().position(|m| status(m).0 == leader).unwrap();
    let target = ms.iter().map(status).find(|s| s.0 != leader).unwrap().0;
    // Only the leader can move leadership.
    let follower = ms.iter().position(|m| status(m).0 != leader).unwrap();
    let out = ms[follower].etcdctl(&["move-leader", &format!("{target:x}")]);
    assert!(!out.status.success());
    let out = ms[li].ok(&["move-leader", &format!("{target:x}")]);
    assert!(out.contains("Leadership transferred"), "{out}");
    eventually(T, "the new leader", || {
        ms.iter().all(|m| status(m).1 == target).then_some(())
    });
    ms[li].ok(&["put", "k", "v"]);
}

#[test]
fn a_lease_kept_alive_through_a_follower_stays_and_its_keys_go_when_it_lapses() {
    let tmp = tempfile::tempdir().unwrap();
    let ms = cluster(tmp.path(), 3);
    let leader = leader_of(&ms[0]);
    let f = ms.iter().find(|m| status(m).0 != leader).unwrap();
    let out = f.ok(&["lease", "grant", "3"]);
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    f.ok(&["put", "leased", "v", &format!("--lease={id}")]);
    // Kept alive through the follower for longer than its TTL.
    for _ in 0..5 {
        let out = f.ok(&["lease", "keep-alive", "--once", &id]);
        assert!(out.contains("keepalived with TTL(3)"), "{out}");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(f.ok(&["get", "leased", "--print-value-only"]), "v\n");
    // Then left to lapse: the key goes, on every member.
    for m in &ms {
        eventually(Duration::from_secs(15), "the lease to expire", || {
            m.ok(&["get", "leased", "--print-value-only"])
                .is_empty()
                .then_some(())
        });
    }
}

#[test]
fn force_new_cluster_restarts_one_survivor_alone_with_all_committed_data() {
    let tmp = tempfile::tempdir().unwrap();
    let ms = cluster(tmp.path(), 3);
    for i in 0..10 {
        ms[i % 3].ok(&["put", &format!("f{i}"), &format!("v{i}")]);
    }
    // Every member has every write (then whichever disk survives holds them).
    for m in &ms {
        eventually(T, "all writes applied", || {
            (m.ok(&["get", "f", "--prefix", "--keys-only", "--consistency=s"])
                .lines()
                .filter(|l| !l.is_empty())
                .count()
                == 10)
                .then_some(())
        });
    }
    let rev_before = ms[0].revision();
    let cluster_id =
        ms[0].json(&["endpoint", "status", "-w", "json"])[0]["Status"]["header"]["cluster_id"]
            .as_u64()
            .unwrap();
    let mut spec = ms[1].spec.clone();
    let survivor = status(&ms[1]).0;
    // The whole cluster is lost but for one member's disk.
    for m in ms {
        m.kill9();
    }
    spec.extra.push("--force-new-cluster".into());
    let m = Cairn::start(&spec);
    assert!(
        !m.log().iter().any(|l| l.contains("not honoured")),
        "{:?}",
        m.log()
    );
    // It leads alone, with the same cluster id and every committed write.
    eventually(T, "the survivor leads", || {
        (status(&m).1 == survivor).then_some(())
    });
    let listed = member_ids(&m);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, survivor);
    assert_eq!(listed[0].1, spec.name);
    let header = &m.json(&["endpoint", "status", "-w", "json"])[0]["Status"]["header"];
    assert_eq!(header["cluster_id"].as_u64().unwrap(), cluster_id);
    let got = m.ok(&["get", "f", "--prefix", "--print-value-only"]);
    let want: String = {
        let mut v: Vec<(String, String)> = (0..10)
            .map(|i| (format!("f{i}"), format!("v{i}")))
            .collect();
        v.sort();
        v.into_iter().map(|(_, v)| v + "\n").collect()
    };
    assert_eq!(got, want);
    assert!(m.revision() >= rev_before);
    // Writes commit with no other member.
    m.ok(&["put", "alone", "yes"]);
    // The new configuration is on disk: a restart without the flag stays a
    // one-member cluster, with the write made alone.
    m.kill9();
    spec.extra.clear();
    let m = Cairn::start(&spec);
    assert_eq!(m.ok(&["get", "alone", "--print-value-only"]), "yes\n");
    assert_eq!(member_ids(&m).len(), 1);
    m.ok(&["put", "again", "yes"]);
}

#[test]
fn peer_traffic_and_send_failures_show_in_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ms: Vec<Option<Cairn>> = cluster(tmp.path(), 3).into_iter().map(Some).collect();
    for i in 0..10 {
        ms[0].as_ref().unwrap().ok(&["put", &format!("p{i}"), "x"]);
    }
    let scrape = |m: &Cairn| curl("GET", &m.url("/metrics"), None, T).body;
    let ids: Vec<u64> = ms.iter().map(|m| status(m.as_ref().unwrap()).0).collect();
    let leader = leader_of(ms[0].as_ref().unwrap());
    // Every member keeps a stream to each other member; messages flow
    // between the leader and each follower (followers do not talk).
    for (i, m) in ms.iter().enumerate() {
        let m = m.as_ref().unwrap();
        let me = ids[i];
        eventually(T, "streams to both peers, traffic with the leader", || {
            let text = scrape(m);
            let ok = ids.iter().filter(|&&o| o != me).all(|&o| {
                let active =
                    format!("etcd_network_active_peers{{Local=\"{me:x}\",Remote=\"{o:x}\"}}");
                let sent = format!("etcd_network_peer_sent_bytes_total{{To=\"{o:x}\"}}");
                let received = format!("etcd_network_peer_received_bytes_total{{From=\"{o:x}\"}}");
                let talks = me == leader || o == leader;
                metric(&text, &active) == 1.0
                    && (!talks || (metric(&text, &sent) > 0.0 && metric(&text, &received) > 0.0))
            });
            ok.then_some(())
        });
    }
    // A follower goes away: the leader's sends to it fail, and it is no
    // longer an active peer.
    let li = ids.iter().position(|&id| id == leader).unwrap();
    let fi = (li + 1) % 3;
    ms[fi].take().unwrap().kill9();
    let l = ms[li].as_ref().unwrap();
    let f = ids[fi];
    eventually(
        T,
        "the leader to count failed sends to the dead follower",
        || {
            let text = scrape(l);
            let failed = metric(
                &text,
                &format!("etcd_network_peer_sent_failures_total{{To=\"{f:x}\"}}"),
            );
            let active = metric(
                &text,
                &format!("etcd_network_active_peers{{Local=\"{leader:x}\",Remote=\"{f:x}\"}}"),
            );
            (failed > 0.0 && active == 0.0).then_some(())
        },
    );
    // The live follower's stream is untouched.
    let live = ids[3 - li - fi];
    let text = scrape(l);
    assert_eq!(
        metric(
            &text,
            &format!("etcd_network_active_peers{{Local=\"{leader:x}\",Remote=\"{live:x}\"}}")
        ),
        1.0
    );
}
