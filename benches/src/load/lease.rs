//! The `lease-keepalive` workload.
//!
//! `--leases` leases are granted up front (with `--lease-ttl` seconds), then
//! each client opens one LeaseKeepAlive stream — as a real client keeps its
//! leases alive — and sends keep-alives for its share of the leases in turn,
//! one at a time: a request is one keep-alive and its answer. An answer with
//! TTL 0 (the lease is gone) counts as an error. The leases are left to
//! expire.

use std::time::Duration;

use anyhow::Context;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, lease_client::LeaseClient,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::conn::Conn;
use super::driver::{Merged, Request, drive};
use super::spec::LoadSpec;

/// One client: its stream and its leases.
struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    leases: Vec<i64>,
    next: usize,
}

impl KeepAlive {
    /// Opens a keep-alive stream on `conn` for `leases` and checks it with
    /// one keep-alive of the first.
    async fn open(conn: Conn, leases: Vec<i64>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(2);
        // Queued before the call: a server may send the response headers only
        // with its first message.
        tx.send(LeaseKeepAliveRequest { id: leases[0] }).await?;
        let responses = LeaseClient::new(conn)
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .context("opening a LeaseKeepAlive stream")?
            .into_inner();
        let mut k = KeepAlive {
            requests: tx,
            responses,
            leases,
            next: 1,
        };
        k.answer().await.context("the first keep-alive")?;
        Ok(k)
    }

    async fn answer(&mut self) -> Result<(), tonic::Status> {
        match self.responses.message().await? {
            Some(r) if r.ttl > 0 => Ok(()),
            Some(r) => Err(tonic::Status::not_found(format!(
                "lease {:x} not found",
                r.id
            ))),
            None => Err(tonic::Status::unavailable(
                "the LeaseKeepAlive stream was closed by the server",
            )),
        }
    }
}

impl Request for KeepAlive {
    async fn call(&mut self, _ticket: u64) -> Result<(), tonic::Status> {
        let id = self.leases[self.next % self.leases.len()];
        self.next += 1;
        self.requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| tonic::Status::unavailable("the LeaseKeepAlive stream is closed"))?;
        self.answer().await
    }
}

/// Grants `n` leases of `ttl` seconds, `workers` at a time.
async fn grant(conns: &[Conn], n: usize, ttl: i64, workers: usize) -> anyhow::Result<Vec<i64>> {
    let workers = workers.clamp(1, n.max(1));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut lease = LeaseClient::new(conns[w % conns.len()].clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in (w..n).step_by(workers) {
                    let r = lease
                        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                        .await
                        .context("granting a lease")?
                        .into_inner();
                    anyhow::ensure!(r.error.is_empty(), "granting a lease: {}", r.error);
                    ids.push(r.id);
                }
                anyhow::Ok(ids)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

/// Runs the workload.
pub async fn run(
    spec: &LoadSpec,
    conns: &[Conn],
    leases: usize,
    ttl: i64,
) -> anyhow::Result<(Merged, Duration)> {
    anyhow::ensure!(leases >= 1, "--leases must be at least 1");
    anyhow::ensure!(ttl >= 1, "--lease-ttl must be at least 1 second");
    let ids = grant(conns, leases, ttl, spec.clients).await?;
    let mut clients = Vec::with_capacity(spec.clients);
    for c in 0..spec.clients {
        // Client c keeps leases c, c + clients, ...; with fewer leases than
        // clients, clients share them.
        let mine: Vec<i64> = if leases >= spec.clients {
            ids.iter().skip(c).step_by(spec.clients).copied().collect()
        } else {
            vec![ids[c % leases]]
        };
        clients.push(KeepAlive::open(conns[c % conns.len()].clone(), mine).await?);
    }
    let label = spec.progress.then_some("lease-keepalive");
    drive(clients, spec.stop, spec.rate, label).await
}
