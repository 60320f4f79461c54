//! The core flows through the Rust `etcd-client` crate (tonic), against the
//! real `cairn` binary; and gRPC's standard health service through a tonic
//! client of cairn-proto's.

mod common;

use std::time::Duration;

use common::*;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};

async fn connect(c: &Cairn) -> Client {
    Client::connect([c.spec.client_url()], None)
        .await
        .expect("connecting")
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_txn_and_compaction_through_etcd_client() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let mut cl = connect(&c).await;
    let r = cl.put("k1", "v1", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 2);
    cl.put("k2", "v2", None).await.unwrap();
    let prev = cl
        .put("k1", "v1b", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(prev.prev_key().unwrap().value(), b"v1");
    let all = cl
        .get(
            "k",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .unwrap();
    let keys: Vec<&[u8]> = all.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"k2"[..], b"k1"]);
    assert_eq!(all.kvs()[1].version(), 2);
    assert_eq!(all.count(), 2);
    // An old revision, then compaction makes it unreadable.
    let old = cl
        .get("k1", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"v1");
    cl.compact(3, None).await.unwrap();
    let err = cl
        .get("k1", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    // A compare-and-swap: only the first of two identical txns succeeds.
    let cas = || {
        Txn::new()
            .when(vec![Compare::value("k2", CompareOp::Equal, "v2")])
            .and_then(vec![TxnOp::put("k2", "v2-swapped", None)])
            .or_else(vec![TxnOp::get("k2", None)])
    };
    assert!(cl.txn(cas()).await.unwrap().succeeded());
    let second = cl.txn(cas()).await.unwrap();
    assert!(!second.succeeded());
    let del = cl
        .delete("k", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(del.deleted(), 2);
    // A duplicate key in a txn is refused with etcd's error.
    let dup = Txn::new().and_then(vec![TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    let err = cl.txn(dup).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("duplicate key given in txn request"),
        "{err}"
    );
    c.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_see_every_change_in_order_with_previous_values() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let mut cl = connect(&c).await;
    let mut w = cl
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = w.message().await.unwrap().unwrap();
    assert!(created.created());
    let mut writer = connect(&c).await;
    for i in 0..10 {
        writer
            .put(format!("w/{i}"), format!("{i}"), None)
            .await
            .unwrap();
    }
    writer.put("w/0", "again", None).await.unwrap();
    writer.delete("w/1", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let m = tokio::time::timeout(Duration::from_secs(10), w.message())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        for e in m.events() {
            let kv = e.kv().unwrap();
            seen.push((
                e.event_type(),
                String::from_utf8(kv.key().to_vec()).unwrap(),
                kv.mod_revision(),
                e.prev_kv()
                    .map(|p| String::from_utf8(p.value().to_vec()).unwrap()),
            ));
        }
    }
    assert_eq!(seen[0], (EventType::Put, "w/0".into(), 2, None));
    assert_eq!(
        seen[10],
        (EventType::Put, "w/0".into(), 12, Some("0".into()))
    );
    assert_eq!(
        seen[11],
        (EventType::Delete, "w/1".into(), 13, Some("1".into()))
    );
    let revs: Vec<i64> = seen.iter().map(|s| s.2).collect();
    assert_eq!(revs, (2..=13).collect::<Vec<_>>());
    // A watch from a past revision replays history.
    let mut cl2 = connect(&c).await;
    let mut replay = cl2
        .watch("w/2", Some(WatchOptions::new().with_start_revision(1)))
        .await
        .unwrap();
    assert!(replay.message().await.unwrap().unwrap().created());
    let m = replay.message().await.unwrap().unwrap();
    assert_eq!(m.events()[0].kv().unwrap().value(), b"2");
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_expire_unless_kept_alive_and_take_their_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let mut cl = connect(&c).await;
    // The shortest TTL is ceil(1.5 × election timeout): 1 s at the
    // harness's 500 ms (2 s at etcd's default 1 s); 0 is raised to it.
    let zero = cl.lease_grant(0, None).await.unwrap();
    assert_eq!(zero.ttl(), 1);
    let short = cl.lease_grant(1, None).await.unwrap();
    assert_eq!(short.ttl(), 1);
    let kept = cl.lease_grant(2, None).await.unwrap();
    cl.put("short", "x", Some(PutOptions::new().with_lease(short.id())))
        .await
        .unwrap();
    cl.put("kept", "y", Some(PutOptions::new().with_lease(kept.id())))
        .await
        .unwrap();
    let (mut keeper, mut stream) = cl.lease_keep_alive(kept.id()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        keeper.keep_alive().await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!(r.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        cl.get("short", None).await.unwrap().kvs().is_empty(),
        "expired"
    );
    assert_eq!(cl.get("kept", None).await.unwrap().kvs()[0].value(), b"y");
    let ttl = cl
        .lease_time_to_live(
            kept.id(),
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert!(ttl.ttl() > 0);
    assert_eq!(ttl.keys(), [b"kept".to_vec()]);
    let gone = cl.lease_time_to_live(short.id(), None).await.unwrap();
    assert_eq!(gone.ttl(), -1);
    cl.lease_revoke(kept.id()).await.unwrap();
    assert!(cl.get("kept", None).await.unwrap().kvs().is_empty());
    let err = cl.lease_revoke(kept.id()).await.unwrap_err();
    assert!(
        err.to_string().contains("requested lease not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_members_and_hashes_through_etcd_client() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    let mut cl = connect(&c).await;
    cl.put("a", "1", None).await.unwrap();
    let st = cl.status().await.unwrap();
    assert_eq!(st.version(), "3.4.23");
    assert_eq!(st.leader(), st.header().unwrap().member_id());
    assert!(st.raft_index() >= 2);
    let members = cl.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].name(), "default");
    assert_eq!(members.members()[0].client_urls(), [c.spec.client_url()]);
    let h1 = cl.hash_kv(0).await.unwrap().hash();
    let h2 = cl.hash_kv(0).await.unwrap().hash();
    assert_eq!(h1, h2);
    cl.put("b", "2", None).await.unwrap();
    assert_ne!(cl.hash_kv(0).await.unwrap().hash(), h1);
}

/// What a gRPC health client sees at `url`. (The same checks pass against
/// etcd 3.4.23: checked on 2026-12-02 by pointing this function at it.)
async fn grpc_health_as_etcd_serves_it(url: String) {
    use cairn_proto::grpc_health_v1::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let ch = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("connecting");
    let mut h = HealthClient::new(ch);
    let ask = |s: &str| HealthCheckRequest {
        service: s.to_string(),
    };
    // The server as a whole is serving; no other name is known.
    let r = h.check(ask("")).await.expect("check").into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);
    for unknown in ["etcdserverpb.KV", "nope"] {
        let e = h.check(ask(unknown)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{unknown}: {e:?}");
        assert_eq!(e.message(), "unknown service");
    }
    // Watch: the status now, then the stream stays open with nothing more.
    for (service, want) in [
        ("", ServingStatus::Serving),
        ("nope", ServingStatus::ServiceUnknown),
    ] {
        let mut w = h.watch(ask(service)).await.expect("watch").into_inner();
        let first = w.message().await.expect("first answer").expect("an answer");
        assert_eq!(first.status(), want, "{service:?}");
        let more = tokio::time::timeout(Duration::from_millis(300), w.message()).await;
        assert!(more.is_err(), "{service:?}: the stream went on: {more:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_health_service_reports_the_server_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let c = single(tmp.path());
    grpc_health_as_etcd_serves_it(c.spec.client_url()).await;
    // The etcd services on the same port are unaffected.
    let mut cl = connect(&c).await;
    cl.put("after", "health", None).await.unwrap();
    let r = cl.get("after", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"health");
}
