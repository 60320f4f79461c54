//! Wire bytes: each test encodes a message and compares it with bytes written
//! out by hand from etcd's field numbers and types, then decodes them back.

use cairn_proto::authpb::{Permission, permission};
use cairn_proto::etcdserverpb::{
    AuthRoleListRequest, AuthUserChangePasswordRequest, Compare, InternalRaftRequest, Member,
    PutRequest, RangeRequest, RequestHeader, ResponseHeader, StatusResponse, WatchResponse,
    compare, range_request,
};
use cairn_proto::leasepb::Lease;
use cairn_proto::mvccpb::{Event, KeyValue, event::EventType};
use prost::Message;

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    assert_eq!(msg.encode_to_vec(), expected, "encoding of {msg:?}");
    assert_eq!(&M::decode(expected).unwrap(), msg, "decoding");
}

#[test]
fn key_value_has_etcds_wire_bytes() {
    let kv = KeyValue {
        key: b"foo".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 1,
        value: b"bar".to_vec(),
        lease: 7,
    };
    assert_wire(
        &kv,
        &[
            0x0a, 3, b'f', b'o', b'o', // 1: key
            0x10, 2, // 2: create_revision
            0x18, 3, // 3: mod_revision
            0x20, 1, // 4: version
            0x2a, 3, b'b', b'a', b'r', // 5: value
            0x30, 7, // 6: lease
        ],
    );
}

#[test]
fn event_types_and_fields_match_etcd() {
    let ev = Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key: b"k".to_vec(),
            ..Default::default()
        }),
        prev_kv: None,
    };
    assert_wire(&ev, &[0x08, 1, 0x12, 3, 0x0a, 1, b'k']);
    assert_eq!(EventType::Put as i32, 0);
}

#[test]
fn range_request_fields_1_to_13() {
    let req = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: false,
        count_only: true,
        min_mod_revision: 0,
        max_mod_revision: 0,
        min_create_revision: 0,
        max_create_revision: 300,
    };
    assert_wire(
        &req,
        &[
            0x0a, 1, b'a', // 1: key
            0x12, 1, b'b', // 2: range_end
            0x18, 10, // 3: limit
            0x20, 5, // 4: revision
            0x28, 2, // 5: sort_order DESCEND
            0x30, 3, // 6: sort_target MOD
            0x38, 1, // 7: serializable
            0x48, 1, // 9: count_only
            0x68, 0xac, 0x02, // 13: max_create_revision 300
        ],
    );
}

#[test]
fn compare_target_union_and_range_end_64() {
    let cmp = Compare {
        result: compare::CompareResult::Greater as i32,
        target: compare::CompareTarget::Mod as i32,
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        target_union: Some(compare::TargetUnion::ModRevision(6)),
    };
    assert_wire(
        &cmp,
        &[
            0x08, 1, // 1: result GREATER
            0x10, 2, // 2: target MOD
            0x1a, 1, b'k', // 3: key
            0x30, 6, // 6: mod_revision (oneof)
            0x82, 0x04, 1, b'l', // 64: range_end (tag 514 as a varint)
        ],
    );

    let by_value = Compare {
        target: compare::CompareTarget::Value as i32,
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
        ..Default::default()
    };
    assert_wire(&by_value, &[0x10, 3, 0x1a, 1, b'k', 0x3a, 1, b'v']);
}

#[test]
fn watch_response_events_are_field_11() {
    let resp = WatchResponse {
        header: Some(ResponseHeader {
            revision: 9,
            ..Default::default()
        }),
        watch_id: 1,
        events: vec![Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                ..Default::default()
            }),
            prev_kv: None,
        }],
        ..Default::default()
    };
    assert_wire(
        &resp,
        &[
            0x0a, 2, 0x18, 9, // 1: header { 3: revision }
            0x10, 1, // 2: watch_id
            0x5a, 7, 0x08, 1, 0x12, 3, 0x0a, 1, b'k', // 11: events
        ],
    );
}

#[test]
fn status_response_is_learner_is_field_10() {
    let resp = StatusResponse {
        version: "3.4.23".into(),
        db_size: 4096,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["e".into()],
        db_size_in_use: 1,
        is_learner: true,
        header: None,
    };
    assert_wire(
        &resp,
        &[
            0x12, 6, b'3', b'.', b'4', b'.', b'2', b'3', // 2: version
            0x18, 0x80, 0x20, // 3: dbSize 4096
            0x20, 2, // 4: leader
            0x28, 3, // 5: raftIndex
            0x30, 4, // 6: raftTerm
            0x38, 5, // 7: raftAppliedIndex
            0x42, 1, b'e', // 8: errors
            0x48, 1, // 9: dbSizeInUse
            0x50, 1, // 10: isLearner
        ],
    );
}

#[test]
fn member_fields_match_etcd() {
    let m = Member {
        id: 0x1234,
        name: "n".into(),
        peer_urls: vec!["p".into()],
        client_urls: vec!["c".into()],
        is_learner: true,
    };
    assert_wire(
        &m,
        &[
            0x08, 0xb4, 0x24, // 1: ID
            0x12, 1, b'n', // 2: name
            0x1a, 1, b'p', // 3: peerURLs
            0x22, 1, b'c', // 4: clientURLs
            0x28, 1, // 5: isLearner
        ],
    );
}

#[test]
fn internal_raft_request_header_100_and_put_4() {
    let req = InternalRaftRequest {
        header: Some(RequestHeader {
            id: 7,
            username: "u".into(),
            auth_revision: 2,
        }),
        id: 7,
        put: Some(PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_wire(
        &req,
        &[
            0x08, 7, // 1: ID
            0x22, 6, 0x0a, 1, b'a', 0x12, 1, b'b', // 4: put
            0xa2, 0x06, 7, 0x08, 7, 0x12, 1, b'u', 0x18, 2, // 100: header
        ],
    );
}

#[test]
fn internal_raft_request_auth_fields_use_etcds_numbers() {
    let req = InternalRaftRequest {
        auth_user_change_password: Some(AuthUserChangePasswordRequest {
            name: "a".into(),
            password: String::new(),
        }),
        auth_role_list: Some(AuthRoleListRequest {}),
        ..Default::default()
    };
    assert_wire(
        &req,
        &[
            0xfa, 0x44, 3, 0x0a, 1, b'a', // 1103: auth_user_change_password
            0x9a, 0x45, 0, // 1107: auth_role_list
        ],
    );
}

#[test]
fn lease_record_matches_etcds_lease_bucket() {
    let lease = Lease {
        id: 5,
        ttl: 60,
        remaining_ttl: 30,
    };
    assert_wire(&lease, &[0x08, 5, 0x10, 60, 0x18, 30]);
}

#[test]
fn permission_type_is_field_1() {
    let perm = Permission {
        perm_type: permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    };
    assert_wire(&perm, &[0x08, 2, 0x12, 1, b'a', 0x1a, 1, b'b']);
}
