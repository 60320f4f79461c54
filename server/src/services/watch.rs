//! etcd's Watch service: one bidirectional stream, many watchers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cairn_engine::mvcc::{self, WatchError, WatchStream};
use cairn_proto::etcdserverpb::{self as pb, watch_server::Watch};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::server::EtcdServer;

pub struct WatchService(pub Arc<EtcdServer>);

/// The store's responses for a stream, as an async stream.
struct Responses(Arc<WatchStream>);

impl Stream for Responses {
    type Item = mvcc::WatchResponse;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

struct Session {
    srv: Arc<EtcdServer>,
    ws: Arc<WatchStream>,
    /// Watchers that asked for fragmented responses.
    fragment: HashMap<i64, bool>,
    out: Out,
}

impl Session {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        self.srv.header(revision)
    }

    async fn send(&self, r: pb::WatchResponse) -> bool {
        self.out.send(Ok(r)).await.is_ok()
    }

    async fn on_request(&mut self, req: pb::WatchRequest) -> bool {
        use pb::watch_request::RequestUnion as U;
        let current = self.srv.store().current_revision();
        match req.request_union {
            Some(U::CreateRequest(c)) => {
                use pb::watch_create_request::FilterType;
                let filters = |f: FilterType| c.filters.contains(&(f as i32));
                let w = mvcc::WatchRequest {
                    key: c.key.clone(),
                    range_end: c.range_end.clone(),
                    start_revision: c.start_revision,
                    prev_kv: c.prev_kv,
                    no_put: filters(FilterType::Noput),
                    no_delete: filters(FilterType::Nodelete),
                    progress_notify: c.progress_notify,
                    watch_id: c.watch_id,
                };
                self.srv.metrics.watchers.inc();
                match self.ws.watch(w) {
                    Ok(id) => {
                        self.fragment.insert(id, c.fragment);
                        self.send(pb::WatchResponse {
                            header: self.header(current),
                            watch_id: id,
                            created: true,
                            ..Default::default()
                        })
                        .await
                    }
                    Err(e) => {
                        self.srv.metrics.watchers.dec();
                        let reason = match e {
                            WatchError::DuplicateId | WatchError::EmptyRange => e.to_string(),
                            WatchError::Closed => "etcdserver: server stopped".into(),
                        };
                        self.send(pb::WatchResponse {
                            header: self.header(current),
                            watch_id: -1,
                            created: true,
                            canceled: true,
                            cancel_reason: reason,
                            ..Default::default()
                        })
                        .await
                    }
                }
            }
            Some(U::CancelRequest(c)) => {
                if !self.ws.cancel(c.watch_id) {
                    return true;
                }
                self.srv.metrics.watchers.dec();
                self.fragment.remove(&c.watch_id);
                self.send(pb::WatchResponse {
                    header: self.header(current),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(U::ProgressRequest(_)) => {
                self.send(pb::WatchResponse {
                    header: self.header(current),
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            None => true,
        }
    }

    async fn on_response(&mut self, r: mvcc::WatchResponse) -> bool {
        if r.compact_revision != 0 {
            // The watcher is gone: etcd answers with no revision and no
            // reason, and clients turn it into "required revision has been
            // compacted".
            self.srv.metrics.watchers.dec();
            self.fragment.remove(&r.watch_id);
            return self
                .send(pb::WatchResponse {
                    header: self.header(0),
                    watch_id: r.watch_id,
                    canceled: true,
                    compact_revision: r.compact_revision,
                    ..Default::default()
                })
                .await;
        }
        let events: Vec<_> = r.events.iter().map(convert::event).collect();
        let whole = pb::WatchResponse {
            header: self.header(r.revision),
            watch_id: r.watch_id,
            events,
            ..Default::default()
        };
        let limit = self.srv.limits.max_request_bytes + 512 * 1024;
        if !self.fragment.get(&r.watch_id).copied().unwrap_or(false) || whole.encoded_len() <= limit
        {
            return self.send(whole).await;
        }
        // Split into parts under the limit; all but the last say so.
        let mut parts: Vec<Vec<_>> = vec![Vec::new()];
        let mut size = 0;
        for e in whole.events {
            let n = e.encoded_len() + 8;
            if size + n > limit && !parts.last().expect("non-empty").is_empty() {
                parts.push(Vec::new());
                size = 0;
            }
            size += n;
            parts.last_mut().expect("non-empty").push(e);
        }
        let count = parts.len();
        for (i, events) in parts.into_iter().enumerate() {
            let ok = self
                .send(pb::WatchResponse {
                    header: self.header(r.revision),
                    watch_id: r.watch_id,
                    events,
                    fragment: i + 1 < count,
                    ..Default::default()
                })
                .await;
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Serves one watch stream: requests from `inbound`, responses on the
/// returned channel; ends when either side does.
pub fn session(
    srv: Arc<EtcdServer>,
    mut inbound: impl Stream<Item = pb::WatchRequest> + Send + Unpin + 'static,
) -> mpsc::Receiver<Result<pb::WatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(128);
    let ws = Arc::new(srv.store().watch_stream());
    srv.metrics.watch_streams.inc();
    tokio::spawn(async move {
        let mut responses = Responses(ws.clone());
        let mut s = Session {
            srv: srv.clone(),
            ws: ws.clone(),
            fragment: HashMap::new(),
            out: tx,
        };
        loop {
            let go_on = tokio::select! {
                req = inbound.next() => match req {
                    Some(req) => s.on_request(req).await,
                    None => false,
                },
                r = responses.next() => match r {
                    Some(r) => s.on_response(r).await,
                    None => false,
                },
                _ = s.out.closed() => false,
            };
            if !go_on {
                break;
            }
        }
        let ids = ws.watch_ids();
        srv.metrics.watchers.sub(ids.len() as i64);
        for id in ids {
            ws.cancel(id);
        }
        srv.metrics.watch_streams.dec();
    });
    rx
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.0.not_learner()?;
        // A broken request stream ends the session like a closed one.
        let inbound = req.into_inner().map_while(Result::ok);
        let rx = session(self.0.clone(), Box::pin(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
