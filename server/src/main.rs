//! # cairn — the server binary
//!
//! The binary an operator runs instead of `etcd`: etcd's flags and `ETCD_*`
//! environment variables, etcd's API, on cairn's raft node and storage engine.
//!
//! This stage of the server brings a member's durable state up: it derives
//! the member and cluster ids as etcd does, creates or recovers the member's
//! write-ahead log in `<data-dir>/member/wal` (reporting any torn tail it cut
//! off), and runs until SIGINT or SIGTERM. The client and peer APIs come with
//! the server issue; until then it says so in its log.
//!
//! ## Never
//!
//! * Never modifies a data directory that is not cairn's.

mod config;

use std::time::Instant;

use anyhow::Context;
use cairn_raftnode::ids::format_id;
use cairn_wal::{Wal, WalOptions};

use config::Config;

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
    let started = Instant::now();
    // Signals are caught from the start, so a SIGTERM during startup still
    // shuts down cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = rt.block_on(async { Signals::install() })?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), name = %cfg.name, data_dir = %cfg.data_dir().display(), "starting cairn");

    let ids = cfg.ids().context("reading --initial-cluster")?;
    let wal_dir = cfg.wal_dir();
    let wal = if Wal::exists(&wal_dir) {
        let wal = Wal::open(&wal_dir, WalOptions::default())
            .with_context(|| format!("recovering the write-ahead log in {}", wal_dir.display()))?;
        let meta = wal.read_from(u64::MAX)?.metadata.unwrap_or_default();
        let stored =
            config::MemberMeta::decode(&meta).context("reading the WAL's member metadata")?;
        if stored.member_id != ids.member_id {
            anyhow::bail!(
                "the data directory belongs to member {} but the flags describe member {}",
                format_id(stored.member_id),
                format_id(ids.member_id)
            );
        }
        wal
    } else {
        config::refuse_foreign_data_dir(&cfg.data_dir())?;
        cfg.verify_bootstrap()?;
        std::fs::create_dir_all(wal_dir.parent().expect("wal dir has a parent"))
            .with_context(|| format!("creating {}", wal_dir.display()))?;
        Wal::create(&wal_dir, WalOptions::default(), &ids.encode())
            .with_context(|| format!("creating the write-ahead log in {}", wal_dir.display()))?
    };
    let report = wal.recovery_report();
    tracing::info!(
        member_id = %format_id(ids.member_id),
        cluster_id = %format_id(ids.cluster_id),
        wal_dir = %wal_dir.display(),
        segments = report.segments,
        records = report.records,
        last_index = report.last_index,
        torn_tail_cut = report.torn_tail.is_some(),
        backend = %wal.backend(),
        took = ?started.elapsed(),
        "member state recovered"
    );
    tracing::warn!(
        "the etcd v3 client and peer APIs are not served by this build yet; only the member's durable state is brought up"
    );

    let signal = rt.block_on(signals.wait());
    tracing::info!(signal, "received signal; shutting down");
    drop(wal);
    tracing::info!("closed cairn");
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

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "terminated",
            _ = self.int.recv() => "interrupt",
        }
    }
}

fn init_logging(cfg: &Config) -> anyhow::Result<()> {
    let level = cfg.log_level.tracing_level();
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
