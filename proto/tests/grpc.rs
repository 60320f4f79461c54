//! The generated tonic server and client fit together: a client call goes
//! through gRPC framing and the server's router to the trait method, in
//! process, without a network or a runtime.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::kv_server::{self, Kv, KvServer};
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::{Code, Request, Response, Status};

/// Polls a future that completes without waiting on anything outside it.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("an in-process call did not complete");
}

/// Answers Range with the requested key at revision 7; refuses empty puts
/// with etcd's error.
struct OneKey;

#[tonic::async_trait]
impl Kv for OneKey {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let key = req.into_inner().key;
        Ok(Response::new(RangeResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key,
                value: b"v".to_vec(),
                ..Default::default()
            }],
            more: false,
            count: 1,
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(Status::invalid_argument("etcdserver: key is not provided"))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("delete_range"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("txn"))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("compact"))
    }
}

#[test]
fn services_have_etcds_grpc_names() {
    use cairn_proto::etcdserverpb::{
        auth_server, cluster_server, lease_server, maintenance_server, watch_server,
    };
    use cairn_proto::{v3electionpb::election_server, v3lockpb::lock_server};
    assert_eq!(
        [
            kv_server::SERVICE_NAME,
            watch_server::SERVICE_NAME,
            lease_server::SERVICE_NAME,
            cluster_server::SERVICE_NAME,
            maintenance_server::SERVICE_NAME,
            auth_server::SERVICE_NAME,
            lock_server::SERVICE_NAME,
            election_server::SERVICE_NAME,
        ],
        [
            "etcdserverpb.KV",
            "etcdserverpb.Watch",
            "etcdserverpb.Lease",
            "etcdserverpb.Cluster",
            "etcdserverpb.Maintenance",
            "etcdserverpb.Auth",
            "v3lockpb.Lock",
            "v3electionpb.Election",
        ]
    );
}

#[test]
fn a_client_call_reaches_the_server_trait_and_back() {
    let mut client = KvClient::new(KvServer::new(OneKey));
    let resp = block_on(client.range(RangeRequest {
        key: b"foo".to_vec(),
        ..Default::default()
    }))
    .unwrap()
    .into_inner();
    assert_eq!(resp.header.unwrap().revision, 7);
    assert_eq!(resp.kvs[0].key, b"foo");
    assert_eq!(resp.count, 1);
}

#[test]
fn a_server_status_reaches_the_client_with_code_and_message() {
    let mut client = KvClient::new(KvServer::new(OneKey));
    let status = block_on(client.put(PutRequest::default())).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "etcdserver: key is not provided");
}
