//! Flags, with etcd's names, defaults and `ETCD_*` environment fallbacks.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cairn_raftnode::ids::{cluster_id, member_id};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cairn", version, about = "cairn: a drop-in etcd v3 server")]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default `<name>.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Path to the dedicated WAL directory (default `<data-dir>/member/wal`).
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,

    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,

    /// Initial cluster configuration for bootstrapping: name=peerURL,...
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Who this member is, as stored in its WAL's metadata record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberMeta {
    pub member_id: u64,
    pub cluster_id: u64,
}

impl MemberMeta {
    /// 16 bytes: member id then cluster id, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.member_id.to_be_bytes().to_vec();
        v.extend_from_slice(&self.cluster_id.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> anyhow::Result<Self> {
        if b.len() != 16 {
            bail!("member metadata is {} bytes, expected 16", b.len());
        }
        Ok(MemberMeta {
            member_id: u64::from_be_bytes(b[..8].try_into()?),
            cluster_id: u64::from_be_bytes(b[8..].try_into()?),
        })
    }
}

impl Config {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)))
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("member").join("wal"))
    }

    /// The member and cluster ids from `--initial-cluster` (default: this
    /// member alone at its advertised peer URLs).
    pub fn ids(&self) -> anyhow::Result<MemberMeta> {
        let initial = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.initial_advertise_peer_urls));
        let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
        for part in initial.split(',').filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .with_context(|| format!("{part:?} is not name=peerURL"))?;
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => by_name.push((name.to_string(), vec![url.to_string()])),
            }
        }
        let ids: Vec<(String, u64)> = by_name
            .iter()
            .map(|(n, urls)| {
                (
                    n.clone(),
                    member_id(urls, &self.initial_cluster_token, None),
                )
            })
            .collect();
        let Some(&(_, me)) = ids.iter().find(|(n, _)| n == &self.name) else {
            bail!("--initial-cluster has no member named {:?}", self.name);
        };
        let all: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
        Ok(MemberMeta {
            member_id: me,
            cluster_id: cluster_id(&all),
        })
    }
}

/// A data directory that exists, is not empty and has no cairn WAL is not ours
/// (etcd's, say): refuse it rather than write into it.
pub fn refuse_foreign_data_dir(dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_some() {
        bail!(
            "{} is not empty and holds no cairn write-ahead log; refusing to use it (it may be another program's data, e.g. etcd's)",
            dir.display()
        );
    }
    Ok(())
}
