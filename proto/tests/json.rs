//! The JSON gateway mapping: the exact text etcd 3.4's gateway prints, and the
//! inputs it accepts or rejects.

use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmResponse, AlarmType, Compare, HashKvResponse, LeaseTimeToLiveResponse,
    Member, MemberListResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, StatusResponse, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchRequest, compare, range_request, request_op, watch_request,
};
use cairn_proto::json::{from_json, from_json_stream, to_json};
use cairn_proto::mvccpb::{Event, KeyValue, event::EventType};

fn header() -> ResponseHeader {
    ResponseHeader {
        cluster_id: 15118495548433857066,
        member_id: 13668033151171901709,
        revision: 2,
        raft_term: 2,
    }
}

#[test]
fn put_response_header_prints_64_bit_integers_as_strings() {
    let resp = PutResponse {
        header: Some(header()),
        prev_kv: None,
    };
    assert_eq!(
        to_json(&resp).unwrap(),
        r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"}}"#
    );
}

#[test]
fn range_response_prints_base64_bytes_and_omits_zero_values() {
    let resp = RangeResponse {
        header: Some(ResponseHeader {
            revision: 3,
            ..Default::default()
        }),
        kvs: vec![KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    assert_eq!(
        to_json(&resp).unwrap(),
        r#"{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"1","value":"YmFy"}],"count":"1"}"#
    );
}

#[test]
fn an_all_default_message_prints_as_an_empty_object() {
    assert_eq!(to_json(&RangeResponse::default()).unwrap(), "{}");
}

#[test]
fn range_request_reads_proto_names_and_string_integers() {
    let req: RangeRequest =
        from_json(br#"{"key":"Zm9v","range_end":"Zm9w","limit":"10"}"#).unwrap();
    assert_eq!(
        req,
        RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 10,
            ..Default::default()
        }
    );
}

#[test]
fn range_request_reads_lower_camel_names_and_number_integers() {
    let req: RangeRequest = from_json(br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":10}"#).unwrap();
    assert_eq!(
        req,
        RangeRequest {
            key: b"foo".to_vec(),
            range_end: b"fop".to_vec(),
            limit: 10,
            ..Default::default()
        }
    );
}

#[test]
fn enums_are_read_by_name_or_by_number() {
    let descend = range_request::SortOrder::Descend as i32;
    for body in [
        &br#"{"sort_order":"DESCEND"}"#[..],
        br#"{"sort_order":2}"#,
        br#"{"sortOrder":"DESCEND"}"#,
    ] {
        let req: RangeRequest = from_json(body).unwrap();
        assert_eq!(req.sort_order, descend, "{}", String::from_utf8_lossy(body));
    }
    assert!(from_json::<RangeRequest>(br#"{"sort_order":"SIDEWAYS"}"#).is_err());
}

#[test]
fn event_type_prints_delete_by_name_and_omits_put() {
    let kv = KeyValue {
        key: b"k".to_vec(),
        mod_revision: 5,
        ..Default::default()
    };
    let delete = Event {
        r#type: EventType::Delete as i32,
        kv: Some(kv.clone()),
        prev_kv: None,
    };
    assert_eq!(
        to_json(&delete).unwrap(),
        r#"{"type":"DELETE","kv":{"key":"aw==","mod_revision":"5"}}"#
    );
    let put = Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv: None,
    };
    assert_eq!(
        to_json(&put).unwrap(),
        r#"{"kv":{"key":"aw==","mod_revision":"5"}}"#
    );
}

#[test]
fn bytes_input_must_be_padded_standard_base64() {
    let padded: PutRequest = from_json(br#"{"key":"Zm9vYg==","value":"+/8="}"#).unwrap();
    assert_eq!(padded.key, b"foob");
    assert_eq!(padded.value, [0xfb, 0xff]);

    for rejected in [
        &br#"{"key":"Zm9vYg"}"#[..], // unpadded
        br#"{"key":"Zm9vYg="}"#,     // short padding
        br#"{"value":"-_8="}"#,      // URL-safe alphabet
        br#"{"key":"Zm9v!"}"#,       // not base64
    ] {
        let err = from_json::<PutRequest>(rejected).unwrap_err();
        assert!(
            err.to_string().contains("illegal base64 data"),
            "{}: {err}",
            String::from_utf8_lossy(rejected)
        );
    }
}

#[test]
fn member_list_uses_etcds_mixed_case_names() {
    let resp = MemberListResponse {
        header: None,
        members: vec![Member {
            id: 13668033151171901709,
            name: "infra1".into(),
            peer_urls: vec!["http://127.0.0.1:23801".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: true,
        }],
    };
    let json = to_json(&resp).unwrap();
    assert_eq!(
        json,
        r#"{"members":[{"ID":"13668033151171901709","name":"infra1","peerURLs":["http://127.0.0.1:23801"],"clientURLs":["http://127.0.0.1:2379"],"isLearner":true}]}"#
    );
    assert_eq!(
        from_json::<MemberListResponse>(json.as_bytes()).unwrap(),
        resp
    );
}

#[test]
fn lease_and_status_fields_keep_their_proto_spelling() {
    let ttl = LeaseTimeToLiveResponse {
        header: None,
        id: 42,
        ttl: 9,
        granted_ttl: 10,
        keys: vec![b"foo".to_vec()],
    };
    assert_eq!(
        to_json(&ttl).unwrap(),
        r#"{"ID":"42","TTL":"9","grantedTTL":"10","keys":["Zm9v"]}"#
    );

    let status = StatusResponse {
        version: "3.4.23".into(),
        db_size: 20480,
        leader: 7,
        raft_index: 5,
        raft_term: 2,
        raft_applied_index: 5,
        db_size_in_use: 16384,
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(
        to_json(&status).unwrap(),
        r#"{"version":"3.4.23","dbSize":"20480","leader":"7","raftIndex":"5","raftTerm":"2","raftAppliedIndex":"5","dbSizeInUse":"16384","isLearner":true}"#
    );
}

#[test]
fn uint32_hash_is_a_number_and_alarms_are_names() {
    let hash = HashKvResponse {
        header: None,
        hash: 3735928559,
        compact_revision: 3,
    };
    assert_eq!(
        to_json(&hash).unwrap(),
        r#"{"hash":3735928559,"compact_revision":"3"}"#
    );

    let alarms = AlarmResponse {
        header: None,
        alarms: vec![AlarmMember {
            member_id: 5,
            alarm: AlarmType::Nospace as i32,
        }],
    };
    assert_eq!(
        to_json(&alarms).unwrap(),
        r#"{"alarms":[{"memberID":"5","alarm":"NOSPACE"}]}"#
    );
}

#[test]
fn txn_request_round_trips_with_a_request_put_oneof() {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"foo".to_vec(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::Value(b"bar".to_vec())),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"foo".to_vec(),
                value: b"baz".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let json = to_json(&txn).unwrap();
    assert_eq!(
        json,
        r#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}]}"#
    );
    assert_eq!(from_json::<TxnRequest>(json.as_bytes()).unwrap(), txn);
    assert_eq!(
        from_json::<TxnRequest>(
            br#"{"compare":[{"target":3,"key":"Zm9v","value":"YmFy"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmF6"}}]}"#
        )
        .unwrap(),
        txn
    );
}

#[test]
fn nulls_read_as_absent_unknown_fields_are_ignored_and_the_last_duplicate_wins() {
    let req: RangeRequest = from_json(
        br#"{"key":"Zm9v","limit":null,"range_end":null,"no_such_field":[1],"revision":"1","revision":"4"}"#,
    )
    .unwrap();
    assert_eq!(
        req,
        RangeRequest {
            key: b"foo".to_vec(),
            revision: 4,
            ..Default::default()
        }
    );
}

#[test]
fn a_streaming_body_yields_each_concatenated_object() {
    let body = br#"{"create_request":{"key":"Zm9v","start_revision":"3"}}
        {"cancel_request":{"watch_id":"1"}}{"progressRequest":{}}"#;
    let reqs: Vec<WatchRequest> = from_json_stream(body).collect::<Result<_, _>>().unwrap();
    assert_eq!(
        reqs.into_iter()
            .map(|r| r.request_union.unwrap())
            .collect::<Vec<_>>(),
        vec![
            watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"foo".to_vec(),
                start_revision: 3,
                ..Default::default()
            }),
            watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 1 }),
            watch_request::RequestUnion::ProgressRequest(Default::default()),
        ]
    );

    let mut broken = from_json_stream::<WatchRequest>(br#"{"create_request":{}} {"#);
    assert!(broken.next().unwrap().is_ok());
    assert!(broken.next().unwrap().is_err());
    assert!(broken.next().is_none());
}

#[test]
fn malformed_json_is_an_error_naming_the_problem() {
    let err = from_json::<PutRequest>(br#"{"key":"Zm9v""#).unwrap_err();
    assert!(err.is_eof(), "{err}");
    let err = from_json::<PutRequest>(br#"{"lease":"ten"}"#).unwrap_err();
    assert!(err.to_string().contains("invalid digit"), "{err}");
}

#[test]
fn a_set_oneof_member_or_message_prints_even_when_zero() {
    let cmp = Compare {
        key: b"foo".to_vec(),
        target_union: Some(compare::TargetUnion::Version(0)),
        ..Default::default()
    };
    assert_eq!(to_json(&cmp).unwrap(), r#"{"key":"Zm9v","version":"0"}"#);

    let put = PutResponse {
        header: Some(ResponseHeader::default()),
        prev_kv: None,
    };
    assert_eq!(to_json(&put).unwrap(), r#"{"header":{}}"#);
}
