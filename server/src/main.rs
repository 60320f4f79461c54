//! # cairn — the server binary
//!
//! The binary an operator runs instead of `etcd`: etcd's flags and `ETCD_*`
//! environment variables, etcd's v3 API (gRPC and the JSON gateway on the
//! same client port), on cairn's raft node and storage engine.
//!
//! * [`config`]: flags, environment, config file.
//! * [`run`]: bringing a member up (store, raft node) and its background
//!   work (leases, auto-compaction, publishing itself).
//! * [`state`]: the state machine — etcd's apply step on the MVCC store.
//! * [`client_port`]: what the client port answers — gRPC calls straight to
//!   their service, the rest to the HTTP router.
//! * [`server`], [`services`], [`http`]: serving clients.
//! * [`errors`]: the one table of client-visible errors.
//! * [`coalesce`]: one write for the answers a connection has ready.
//! * [`tuning`]: storage knobs etcd has no flags for (`CAIRN_*` variables).
//!
//! ## Invariants
//!
//! * A write is answered only once it is applied, which is after raft
//!   committed it, which is after a quorum made it durable in their WALs.
//! * Every client-visible error has etcd's message and gRPC code.
//!
//! ## Never
//!
//! * Never modifies a data directory that is not cairn's.

mod client_port;
mod coalesce;
mod config;
mod convert;
mod errors;
mod grpc_metrics;
mod h2_authority;
mod http;
mod lessor;
mod metrics;
mod run;
mod server;
mod services;
mod snapshot;
mod state;
mod tuning;

use std::time::Instant;

use anyhow::Context;
use cairn_raftnode::Member;
use cairn_raftnode::ids::{format_id, member_id};
use cairn_raftnode::member::Membership;
use cairn_wal::{Wal, WalOptions};

use config::{ClusterState, CompactionRetention, Config};
use run::{AutoCompaction, Settings};
use tuning::Tuning;

fn settings(cfg: &Config, ids: &config::MemberMeta, tuning: &Tuning) -> Settings {
    let initial_members = cfg
        .initial_cluster
        .iter()
        .map(|(name, urls)| Member {
            id: member_id(urls, &cfg.initial_cluster_token, None),
            name: name.clone(),
            peer_urls: urls.clone(),
            ..Member::default()
        })
        .collect();
    let auto_compaction = match &cfg.auto_compaction_retention {
        CompactionRetention::Off => None,
        CompactionRetention::Period(d) => Some(AutoCompaction::Periodic(*d)),
        CompactionRetention::Revisions(n) => Some(AutoCompaction::Revision(*n as i64)),
    };
    Settings {
        name: cfg.name.clone(),
        data_dir: cfg.data_dir(),
        member_id: ids.member_id,
        cluster_id: ids.cluster_id,
        cluster_token: cfg.initial_cluster_token.clone(),
        initial_members,
        join_existing: cfg.initial_cluster_state == ClusterState::Existing,
        listen_client_urls: cfg.listen_client_urls.clone(),
        advertise_client_urls: cfg.advertise_client_urls.clone(),
        listen_peer_urls: cfg.listen_peer_urls.clone(),
        listen_metrics_urls: cfg.listen_metrics_urls.clone(),
        heartbeat: cfg.heartbeat_interval,
        election_timeout: cfg.election_timeout,
        snapshot_count: cfg.snapshot_count,
        quota_bytes: cfg.quota_backend_bytes.unwrap_or(0),
        max_request_bytes: cfg.max_request_bytes as usize,
        max_txn_ops: cfg.max_txn_ops as i64,
        backend_batch_interval: cfg.backend_batch_interval,
        backend_batch_limit: cfg.backend_batch_limit as usize,
        compaction_batch_limit: cfg.experimental_compaction_batch_limit as usize,
        watch_progress_interval: cfg.experimental_watch_progress_notify_interval,
        auto_compaction,
        pre_vote: cfg.pre_vote,
        strict_reconfig_check: cfg.strict_reconfig_check,
        force_new_cluster: cfg.force_new_cluster,
        max_concurrent_streams: cfg.max_concurrent_streams,
        enable_gateway: cfg.enable_grpc_gateway,
        tuning: tuning.clone(),
    }
}

/// Opens this member's WAL — its ids are the ones it was created with, as
/// etcd ignores the bootstrap flags on restart — or creates it with `ids`.
fn open_wal(
    cfg: &Config,
    ids: &config::MemberMeta,
    opts: WalOptions,
) -> anyhow::Result<(Wal, config::MemberMeta)> {
    let wal_dir = cfg.wal_dir();
    if Wal::exists(&wal_dir) {
        let wal = Wal::open(&wal_dir, opts)
            .with_context(|| format!("recovering the write-ahead log in {}", wal_dir.display()))?;
        let meta = wal.read_from(u64::MAX)?.metadata.unwrap_or_default();
        let stored =
            config::MemberMeta::decode(&meta).context("reading the WAL's member metadata")?;
        if stored.member_id != ids.member_id {
            tracing::info!(
                member_id = %format_id(stored.member_id),
                "restarting the member this data directory belongs to; the bootstrap flags are ignored"
            );
        }
        return Ok((wal, stored));
    }
    config::refuse_foreign_data_dir(&cfg.data_dir())?;
    cfg.verify_bootstrap()?;
    std::fs::create_dir_all(wal_dir.parent().expect("wal dir has a parent"))
        .with_context(|| format!("creating {}", wal_dir.display()))?;
    let wal = Wal::create(&wal_dir, opts, &ids.encode())
        .with_context(|| format!("creating the write-ahead log in {}", wal_dir.display()))?;
    Ok((wal, *ids))
}

/// Asks the other members in `--initial-cluster` for the cluster: its id
/// and its members (with the ids the cluster gave them, this one's among
/// them, found by its advertised peer URLs).
async fn join_cluster(cfg: &Config, me: u64) -> anyhow::Result<(u64, Membership)> {
    use cairn_raftnode::transport::{PlainTcp, fetch_cluster_info};
    let peers: Vec<&String> = cfg
        .initial_cluster
        .iter()
        .filter(|(name, _)| **name != cfg.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        for url in &peers {
            let ask = fetch_cluster_info(&PlainTcp, url, me, 16 << 20);
            match tokio::time::timeout(std::time::Duration::from_secs(2), ask).await {
                Ok(Ok((id, info))) => {
                    let ms = Membership::decode(&info).context("the cluster's membership")?;
                    tracing::info!(cluster_id = %format_id(id), peer = %url, "joining an existing cluster");
                    return Ok((id, ms));
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %url, error = %e, "asking a member about the cluster")
                }
                Err(_) => {
                    tracing::warn!(peer = %url, "asking a member about the cluster timed out")
                }
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "could not reach any member of the existing cluster in --initial-cluster"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// mimalloc, not glibc's malloc: each gRPC call allocates dozens of small
/// objects across the HTTP/2, gRPC and raft layers, freed on other threads;
/// under put load glibc's malloc/free were ~17 % of the server's CPU. With
/// mimalloc the server spends 15-25 % less CPU per put, for ~35 MiB more
/// resident memory after 1,000,000 keys (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let (cfg, messages) = config::load_or_exit();
    init_logging(&cfg)?;
    for m in &messages {
        m.log();
    }
    for flag in cfg.unhonoured_flags() {
        tracing::warn!(
            flag,
            "--{flag} is set but not honoured by this build of cairn yet"
        );
    }
    let tuning = Tuning::from_env()?;
    tuning.log();
    let started = Instant::now();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.worker_threads(2).enable_all();
    // A task woken by the task running on a worker runs next on that worker
    // (tokio's LIFO slot). When a batch of proposals is applied, each call's
    // task, as it answers, wakes its connection's task, which then writes
    // and flushes that one answer: one writev per response. Without the
    // slot the connection runs after the other answered calls and writes
    // them together (and `coalesce` holds a write back once while other
    // tasks are ready to run).
    #[cfg(tokio_unstable)]
    rt.disable_lifo_slot();
    let rt = rt.build()?;
    // Signals are caught from the start, so a SIGTERM during startup still
    // shuts down cleanly.
    let mut signals = rt.block_on(async { Signals::install() })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        etcd_api_version = services::maintenance::ETCD_VERSION,
        name = %cfg.name,
        data_dir = %cfg.data_dir().display(),
        "starting an etcd server"
    );
    let mut ids = cfg.ids().context("reading --initial-cluster")?;
    let mut joined = None;
    if cfg.initial_cluster_state == ClusterState::Existing && !Wal::exists(cfg.wal_dir()) {
        // Joining: the cluster's id, and this member's, are the existing
        // members' to tell.
        let (cluster, ms) = rt.block_on(join_cluster(&cfg, ids.member_id))?;
        let mine: Vec<&String> = cfg.initial_advertise_peer_urls.iter().collect();
        let me = ms
            .members()
            .find(|m| !m.peer_urls.is_empty() && m.peer_urls.iter().all(|u| mine.contains(&u)))
            .with_context(|| {
                format!(
                    "the cluster has no member with peer URLs {:?}; add it first (etcdctl member add)",
                    cfg.initial_advertise_peer_urls
                )
            })?;
        ids.member_id = me.id;
        ids.cluster_id = cluster;
        joined = Some(ms);
    }
    let (wal, ids) = open_wal(&cfg, &ids, tuning.wal_options())?;
    let report = wal.recovery_report();
    tracing::info!(
        member_id = %format_id(ids.member_id),
        cluster_id = %format_id(ids.cluster_id),
        wal_dir = %cfg.wal_dir().display(),
        segments = report.segments,
        records = report.records,
        last_index = report.last_index,
        torn_tail_cut = report.torn_tail.is_some(),
        backend = %wal.backend(),
        took = ?started.elapsed(),
        "member state recovered"
    );
    let mut s = settings(&cfg, &ids, &tuning);
    if let Some(ms) = joined {
        s.initial_members = ms.members().cloned().collect();
    }
    let clients = run::bind_clients(&s)?;
    let srv = run::start_member(&s, wal, &rt)?;
    let router = client_port::ClientPort::new(&srv, s.enable_gateway);
    rt.block_on(async {
        // Like etcd, clients are served once this member is part of the
        // cluster: a leader exists and this member's name and client URLs
        // are published through raft.
        tokio::select! {
            _ = run::publish(srv.clone(), s.advertise_client_urls.clone()) => {}
            signal = signals.wait() => {
                tracing::info!(signal, "received signal; shutting down");
                return anyhow::Ok(());
            }
        }
        let mut tasks = Vec::new();
        for (url, l) in clients {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!(address = %url, "serving client traffic insecurely; this is strongly discouraged!");
            let r = router.clone();
            let streams = s.max_concurrent_streams;
            tasks.push(tokio::spawn(async move {
                run::serve(l, r, streams).await;
                Ok(())
            }));
        }
        for url in &s.listen_metrics_urls {
            let l = tokio::net::TcpListener::bind(run::url_addr(url)?)
                .await
                .with_context(|| format!("listening for metrics on {url}"))?;
            tracing::info!(address = %url, "serving metrics");
            let r = http::basic(srv.clone());
            tasks.push(tokio::spawn(async move { axum::serve(l, r).await }));
        }
        tokio::spawn(run::lease_loop(srv.clone()));
        if let Some(mode) = s.auto_compaction.clone() {
            tokio::spawn(run::compaction_loop(srv.clone(), mode));
        }
        tracing::info!(took = ?started.elapsed(), "ready to serve client requests");
        let stopped = {
            let srv = srv.clone();
            async move {
                while !srv.node.is_stopped() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        };
        tokio::select! {
            signal = signals.wait() => tracing::info!(signal, "received signal; shutting down"),
            _ = stopped => {
                if srv.node.is_removed() {
                    tracing::warn!("this member was removed from the cluster; shutting down");
                } else {
                    tracing::error!("the raft node stopped; shutting down");
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        anyhow::Ok(())
    })?;
    tracing::info!("closing etcd server");
    srv.node.stop();
    if let Err(e) = srv.store().close() {
        tracing::error!(error = %e, "closing the store");
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    tracing::info!("closed etcd server");
    Ok(())
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "terminated",
            _ = self.int.recv() => "interrupt",
        }
    }
}

/// JSON logs to `--log-outputs`: `default` or `stderr`, `stdout`, or a file
/// (appended to); the first one given.
fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    let level = cfg.log_level.tracing_level();
    let b = tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false);
    match cfg.log_outputs.first().map(String::as_str) {
        None | Some("default") | Some("stderr") => b.with_writer(std::io::stderr).init(),
        Some("stdout") => b.with_writer(std::io::stdout).init(),
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log output {path}"))?;
            b.with_writer(std::sync::Mutex::new(f)).init()
        }
    }
    Ok(())
}
