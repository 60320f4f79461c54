//! The accepting side: listeners, the handshake checks, inbound message
//! streams (inbound snapshot streams are in [`super::snapshot`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::frame::{
    FRAME_HEADER_LEN, Handshake, StreamKind, TransportError, decode_batch, kind, read_frame,
    read_handshake, write_frame,
};
use super::tasks::{self, Tag};
use super::{BoxStream, Shared, hex, snapshot};

/// How long a connecting member has to complete its side of the setup
/// (acceptor, e.g. TLS, then the handshake).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an error frame may take to go out before the connection closes.
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts connections until aborted.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening for peers");
    }
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                // Latency matters more than packet count for raft messages.
                let _ = stream.set_nodelay(true);
                let s = shared.clone();
                let tag = Tag::Inbound {
                    from: None,
                    kind: None,
                };
                tasks::spawn(&shared, tag, move |id| serve_conn(s, stream, remote, id));
            }
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One accepted connection: setup, handshake, checks, then its stream.
async fn serve_conn(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    id: u64,
) {
    let mut stream = match timeout(HANDSHAKE_TIMEOUT, shared.acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "peer connection setup failed");
            return;
        }
        Err(_) => {
            debug!(%remote, "peer connection setup timed out");
            return;
        }
    };
    let hs = match timeout(HANDSHAKE_TIMEOUT, read_handshake(&mut stream)).await {
        Ok(Ok(hs)) => hs,
        Ok(Err(TransportError::BadMagic)) => {
            // Not one of ours (a port scan, an HTTP client): say nothing.
            warn!(%remote, reason = "not a cairn peer stream", "connection refused");
            return;
        }
        Ok(Err(TransportError::Closed)) => {
            debug!(%remote, "connection closed before its handshake");
            return;
        }
        Ok(Err(e)) => {
            refuse(&mut stream, remote, None, &e.to_string()).await;
            return;
        }
        Err(_) => {
            warn!(%remote, reason = "no handshake in time", "connection refused");
            return;
        }
    };
    if hs.kind == StreamKind::Info {
        match shared.handler.accept_from(hs.from) {
            Ok(()) => {
                let mut payload = shared.cfg.cluster_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&shared.handler.info());
                let _ = write_frame(&mut stream, kind::ACCEPT, &payload).await;
            }
            Err(reason) => refuse(&mut stream, remote, Some(hs.from), &reason).await,
        }
        return;
    }
    if let Err(reason) = check(&shared, &hs) {
        refuse(&mut stream, remote, Some(hs.from), &reason).await;
        return;
    }
    if let Err(e) = write_frame(&mut stream, kind::ACCEPT, &[]).await {
        debug!(%remote, error = %e, "accepting a peer stream failed");
        return;
    }
    let from = hs.from;
    shared.tasks.retag(
        id,
        Tag::Inbound {
            from: Some(from),
            kind: Some(hs.kind),
        },
    );
    match hs.kind {
        StreamKind::Messages => {
            // A newer stream from the same member replaces older ones: those
            // of a member that restarted may otherwise linger half-open.
            // Newer by acceptance order, not by handshake completion, so a
            // stale connection from the backlog never ends a fresh one.
            let same = Tag::Inbound {
                from: Some(from),
                kind: Some(StreamKind::Messages),
            };
            shared
                .tasks
                .abort_where(|other, t| other < id && *t == same);
            debug!(peer = %hex(from), %remote, "inbound message stream");
            receive_messages(&shared, stream, from, remote).await;
        }
        StreamKind::Snapshot => snapshot::receive(&shared, stream, from, remote).await,
        StreamKind::Info => {}
    }
}

/// Whether this member takes a stream described by `hs`; the reason if not.
fn check(shared: &Shared, hs: &Handshake) -> Result<(), String> {
    let cfg = &shared.cfg;
    if hs.cluster_id != cfg.cluster_id {
        return Err(format!(
            "cluster id mismatch: member {} is in cluster {}, the connection is for cluster {}",
            hex(cfg.member_id),
            hex(cfg.cluster_id),
            hex(hs.cluster_id)
        ));
    }
    if hs.to != cfg.member_id {
        return Err(format!(
            "member id mismatch: this is member {}, the connection is for member {}",
            hex(cfg.member_id),
            hex(hs.to)
        ));
    }
    if hs.from == cfg.member_id {
        return Err(format!(
            "the connecting member claims this member's own id {}",
            hex(hs.from)
        ));
    }
    shared
        .handler
        .accept_from(hs.from)
        .map_err(|reason| format!("member {} refused: {reason}", hex(hs.from)))
}

/// Tells the other side why, then closes.
async fn refuse(stream: &mut BoxStream, remote: SocketAddr, from: Option<u64>, reason: &str) {
    let peer = from.map_or_else(|| "unknown".to_string(), hex);
    warn!(%remote, %peer, %reason, "connection refused");
    let _ = timeout(
        ERROR_WRITE_TIMEOUT,
        write_frame(stream, kind::ERROR, reason.as_bytes()),
    )
    .await;
}

/// Hands each batch of an inbound message stream to the handler, in order.
async fn receive_messages(shared: &Shared, mut stream: BoxStream, from: u64, remote: SocketAddr) {
    let max = shared.cfg.max_frame_bytes;
    let me = shared.cfg.member_id;
    loop {
        let frame = match read_frame(&mut stream, max).await {
            Ok(f) => f,
            Err(TransportError::Closed) => {
                debug!(peer = %hex(from), %remote, "inbound message stream closed");
                return;
            }
            Err(TransportError::Io(e)) => {
                debug!(peer = %hex(from), %remote, error = %e, "inbound message stream broken");
                return;
            }
            Err(e) => {
                refuse(&mut stream, remote, Some(from), &e.to_string()).await;
                return;
            }
        };
        if let Some(p) = shared.peer(from) {
            p.count_received((FRAME_HEADER_LEN + frame.payload.len()) as u64);
        }
        let msgs = match frame.kind {
            kind::BATCH => decode_batch(&frame.payload),
            k => Err(TransportError::UnexpectedKind(k)),
        };
        let msgs = msgs.and_then(
            |msgs| match msgs.iter().find(|m| m.from != from || m.to != me) {
                Some(m) => Err(TransportError::Rejected(format!(
                    "message from {} to {} on the stream from {} to {}",
                    hex(m.from),
                    hex(m.to),
                    hex(from),
                    hex(me)
                ))),
                None => Ok(msgs),
            },
        );
        match msgs {
            Ok(msgs) if msgs.is_empty() => {}
            Ok(msgs) => {
                if shared.is_stopped() {
                    return;
                }
                shared.handler.on_messages(msgs);
            }
            Err(e) => {
                refuse(&mut stream, remote, Some(from), &e.to_string()).await;
                return;
            }
        }
    }
}
