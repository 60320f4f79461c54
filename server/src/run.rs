//! Bringing a member up: the store, the raft node, the services, the client
//! listeners; and taking it down cleanly on a signal.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_engine::mvcc::{Store, StoreOptions, WatchOptions};
use cairn_proto::etcdserverpb::{self as pb, InternalRaftRequest};
use cairn_raftnode::entry::IdGenerator;
use cairn_raftnode::{Member, Node, NodeConfig, Role};
use cairn_wal::Wal;

use crate::lessor::Lessor;
use crate::metrics::Metrics;
use crate::server::{EtcdServer, Limits};
use crate::snapshot::{StoreSnapshots, replace_store};
use crate::state::{Alarms, Backend, StoreCell, restore_leases};
use crate::tuning::Tuning;

/// How often auto-compaction of the `revision` mode runs.
const REVISION_COMPACTION_EVERY: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep this much history (etcd's `periodic` mode).
    Periodic(Duration),
    /// Keep this many revisions (etcd's `revision` mode).
    Revision(i64),
}

/// Everything the server needs, resolved from flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub name: String,
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub cluster_token: String,
    pub initial_members: Vec<Member>,
    pub join_existing: bool,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub listen_metrics_urls: Vec<String>,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub quota_bytes: u64,
    pub max_request_bytes: usize,
    pub max_txn_ops: i64,
    pub backend_batch_interval: Duration,
    pub backend_batch_limit: usize,
    pub compaction_batch_limit: usize,
    pub watch_progress_interval: Duration,
    pub auto_compaction: Option<AutoCompaction>,
    pub pre_vote: bool,
    pub strict_reconfig_check: bool,
    /// `--force-new-cluster`: restart alone, removing the other members.
    pub force_new_cluster: bool,
    pub max_concurrent_streams: u32,
    pub enable_gateway: bool,
    /// Storage knobs from `CAIRN_*` variables.
    pub tuning: Tuning,
}

/// `host:port` of an `http://` or `https://` URL.
pub fn url_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let hp = cairn_raftnode::member::url_host_port(url)
        .with_context(|| format!("{url:?} has no host and port"))?;
    let hp = hp.replace("localhost", "127.0.0.1");
    use std::net::ToSocketAddrs;
    hp.to_socket_addrs()
        .with_context(|| format!("resolving {hp}"))?
        .next()
        .with_context(|| format!("{hp} resolves to nothing"))
}

fn bind(url: &str) -> anyhow::Result<TcpListener> {
    let addr = url_addr(url)?;
    let l = TcpListener::bind(addr).with_context(|| format!("listening on {url}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

pub fn store_options(s: &Settings) -> StoreOptions {
    StoreOptions {
        batch_interval: s.backend_batch_interval,
        batch_limit: s.backend_batch_limit,
        compaction_batch_limit: s.compaction_batch_limit,
        watch: WatchOptions {
            progress_interval: s.watch_progress_interval,
            ..WatchOptions::default()
        },
        db: s.tuning.db_options(),
        ..StoreOptions::default()
    }
}

/// Opens the store and starts the raft node over `wal`.
pub fn start_member(
    s: &Settings,
    wal: Wal,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Arc<EtcdServer>> {
    let snap_dir = s.data_dir.join("member").join("snap");
    std::fs::create_dir_all(&snap_dir)
        .with_context(|| format!("creating {}", snap_dir.display()))?;
    let db_path = snap_dir.join("db");
    let opts = store_options(s);
    let started = Instant::now();
    let store = Store::open(&db_path, opts.clone())
        .with_context(|| format!("opening {}", db_path.display()))?;
    let lessor = Arc::new(Lessor::new(s.election_timeout));
    let leases = restore_leases(&store, &lessor)?;
    let alarms = Arc::new(Alarms::default());
    alarms.restore(&store)?;
    {
        let l = lessor.clone();
        store.set_lease_lookup(Arc::new(move |id| l.exists(id)));
    }
    let page_size = store.db().page_size();
    if page_size != opts.db.page_size as usize {
        tracing::warn!(
            page_size,
            requested = opts.db.page_size,
            "the database file exists and keeps the page size it was created with; {} applies to new files only",
            crate::tuning::BACKEND_PAGE_SIZE
        );
    }
    tracing::info!(
        path = %db_path.display(),
        page_size,
        revision = store.current_revision(),
        consistent_index = store.durable_index().index,
        leases,
        took = ?started.elapsed(),
        "opened backend"
    );
    let cell = StoreCell::new(store.clone());
    let reopen_path = db_path.clone();
    let reopen_opts = opts.clone();
    let backend = Backend {
        store,
        cell: cell.clone(),
        lessor: lessor.clone(),
        alarms: alarms.clone(),
        reopen: Box::new(move |old, file| {
            replace_store(old, file, &reopen_path, reopen_opts.clone())
        }),
    };
    let mut cfg = NodeConfig::new(s.member_id, s.cluster_id, snap_dir.clone());
    cfg.cluster_token = s.cluster_token.clone();
    cfg.initial_members = s.initial_members.clone();
    cfg.join_existing = s.join_existing;
    cfg.heartbeat = s.heartbeat;
    cfg.election_timeout = s.election_timeout;
    cfg.pre_vote = s.pre_vote;
    cfg.snapshot_count = s.snapshot_count;
    cfg.request_timeout = Duration::from_secs(5) + 2 * s.election_timeout;
    cfg.strict_reconfig_check = s.strict_reconfig_check;
    cfg.force_new_cluster = s.force_new_cluster;
    cfg.peer_listeners = s
        .listen_peer_urls
        .iter()
        .map(|u| {
            let l = std::net::TcpListener::bind(url_addr(u)?)
                .with_context(|| format!("listening for peers on {u}"))?;
            tracing::info!(address = %u, "serving peer traffic");
            Ok(l)
        })
        .collect::<anyhow::Result<_>>()?;
    let node = Node::start(
        cfg,
        wal,
        backend,
        Arc::new(StoreSnapshots(cell.clone())),
        rt.handle().clone(),
    )
    .context("starting the raft node")?;
    Ok(Arc::new(EtcdServer {
        node: Arc::new(node),
        store: cell,
        lessor,
        alarms,
        member_id: s.member_id,
        cluster_id: s.cluster_id,
        name: s.name.clone(),
        limits: Limits {
            max_request_bytes: s.max_request_bytes,
            max_txn_ops: s.max_txn_ops,
            quota_bytes: s.quota_bytes,
        },
        ids: IdGenerator::new(s.member_id),
        metrics: Arc::new(Metrics::default()),
    }))
}

/// The leader's lease work: expiry and checkpoints; and leadership changes.
pub async fn lease_loop(s: Arc<EtcdServer>) {
    let mut was_leader = false;
    let mut last_checkpoint = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if s.node.is_stopped() {
            return;
        }
        let leader = s.node.status().role == Role::Leader;
        if leader != was_leader {
            if leader {
                s.lessor.promote();
            } else {
                s.lessor.demote();
            }
            was_leader = leader;
        }
        if !leader {
            continue;
        }
        // etcd revokes at most 1,000 expired leases a second.
        for id in s.lessor.expired(500) {
            let req = InternalRaftRequest {
                lease_revoke: Some(pb::LeaseRevokeRequest { id }),
                ..Default::default()
            };
            match s.propose(req).await {
                Ok(_) => s.lessor.stats.expired.inc(),
                Err(e) => tracing::debug!(lease = id, error = %e, "revoking an expired lease"),
            }
        }
        if last_checkpoint.elapsed() >= Duration::from_secs(5) {
            last_checkpoint = Instant::now();
            let cps = s.lessor.to_checkpoint(1000);
            if !cps.is_empty() {
                let req = InternalRaftRequest {
                    lease_checkpoint: Some(pb::LeaseCheckpointRequest {
                        checkpoints: cps
                            .into_iter()
                            .map(|(id, remaining)| pb::LeaseCheckpoint {
                                id,
                                remaining_ttl: remaining,
                            })
                            .collect(),
                    }),
                    ..Default::default()
                };
                let _ = s.propose(req).await;
            }
        }
    }
}

/// etcd's auto-compaction, on the leader.
pub async fn compaction_loop(s: Arc<EtcdServer>, mode: AutoCompaction) {
    let mut samples: std::collections::VecDeque<(Instant, i64)> = Default::default();
    let started = Instant::now();
    let (sample_every, run_every) = match &mode {
        AutoCompaction::Periodic(r) => (
            (*r / 10).max(Duration::from_secs(1)),
            (*r).min(Duration::from_secs(3600)),
        ),
        AutoCompaction::Revision(_) => (REVISION_COMPACTION_EVERY, REVISION_COMPACTION_EVERY),
    };
    let mut last_run = Instant::now();
    let mut last_rev = 0;
    let mut tick = tokio::time::interval(sample_every.min(run_every));
    loop {
        tick.tick().await;
        if s.node.is_stopped() {
            return;
        }
        let now = Instant::now();
        let rev = s.store().current_revision();
        samples.push_back((now, rev));
        let target = match &mode {
            AutoCompaction::Periodic(r) => {
                if now.duration_since(started) < *r || now.duration_since(last_run) < run_every {
                    continue;
                }
                while samples.len() > 1 && now.duration_since(samples[1].0) >= *r {
                    samples.pop_front();
                }
                samples.front().map_or(0, |&(_, r)| r)
            }
            AutoCompaction::Revision(keep) => {
                samples.clear();
                if now.duration_since(last_run) < run_every {
                    continue;
                }
                rev - keep
            }
        };
        last_run = now;
        if s.node.status().role != Role::Leader
            || target <= last_rev
            || target <= s.store().compact_revision()
        {
            continue;
        }
        tracing::info!(revision = target, "starting auto compaction");
        let req = InternalRaftRequest {
            compaction: Some(pb::CompactionRequest {
                revision: target,
                physical: false,
            }),
            ..Default::default()
        };
        match s.propose(req).await {
            Ok(_) => {
                last_rev = target;
                tracing::info!(revision = target, "completed auto compaction");
            }
            Err(e) => tracing::warn!(revision = target, error = %e, "auto compaction failed"),
        }
    }
}

/// Publishes this member's name and client URLs through raft once there is
/// a leader (etcd's "published local member to cluster through raft").
pub async fn publish(s: Arc<EtcdServer>, client_urls: Vec<String>) {
    loop {
        if s.node.is_stopped() {
            return;
        }
        if s.node.status().leader != 0 {
            match s.node.publish(s.name.clone(), client_urls.clone()).await {
                Ok(()) => {
                    tracing::info!(name = %s.name, client_urls = ?client_urls, "published local member to cluster through raft");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "publishing local member"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn bind_clients(s: &Settings) -> anyhow::Result<Vec<(String, TcpListener)>> {
    s.listen_client_urls
        .iter()
        .map(|u| Ok((u.clone(), bind(u)?)))
        .collect()
}

/// Serves gRPC (HTTP/2) and HTTP/1.1 on one listener, as etcd does on its
/// client port: each connection is looked at and handed to the protocol it
/// speaks. `max_streams` bounds concurrent HTTP/2 streams per connection
/// (`--max-concurrent-streams`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: crate::client_port::ClientPort,
    max_streams: u32,
) {
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a client connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(crate::coalesce::CoalesceWrites::new(
                crate::h2_authority::FixAuthority::new(sock),
            ));
            let mut b =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            b.http2().max_concurrent_streams(max_streams);
            if let Err(e) = b.serve_connection_with_upgrades(io, svc).await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
    }
}
