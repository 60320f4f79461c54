//! The server's configuration: etcd 3.4's flags, with etcd's names, defaults,
//! `ETCD_*` environment variables, YAML configuration file and checks, read
//! into a typed [`Config`].
//!
//! * `flags`: the table of every flag (name, kind, default, help).
//! * `cli`: the command line as Go's `flag` package reads it, and the
//!   environment as etcd applies it.
//! * `file`: `--config-file`.
//! * `resolve`: defaults, derived values and etcd's checks.
//! * `help`: `--help` and `--version`.
//! * `values`: Go's syntax for booleans, integers and durations; etcd's URL
//!   checks.
//!
//! Parsing never logs: logging is set up from the result, so what parsing has
//! to say comes back as [`Message`]s for the caller to log.

#![allow(
    dead_code,
    reason = "the whole configuration is the server's API; not every setting is read by this build yet"
)]

mod cli;
mod file;
mod flags;
mod help;
mod resolve;
mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use cairn_raftnode::ids::{cluster_id, member_id};

use help::{help_text, version_text};

/// The etcd release whose API, flags and messages cairn reproduces.
pub const ETCD_API_VERSION: &str = "3.4.23";

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

/// `--auto-compaction-retention`, read according to the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionRetention {
    /// `0`: no auto compaction.
    Off,
    /// Periodic mode: keep this much history (`1` is an hour, or `5m`...).
    Period(Duration),
    /// Revision mode: keep this many revisions.
    Revisions(u64),
}

/// `--discovery-fallback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFallback {
    Proxy,
    Exit,
}

/// `--proxy` (etcd's v2 proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Off,
    Readonly,
    On,
}

/// `--logger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logger {
    /// etcd 3.4's default text format.
    Capnslog,
    /// JSON lines.
    Zap,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    DPanic,
    Panic,
    Fatal,
}

impl LogLevel {
    /// The `tracing` level that shows what this etcd level shows.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error | LogLevel::DPanic | LogLevel::Panic | LogLevel::Fatal => {
                tracing::Level::ERROR
            }
        }
    }
}

/// `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metrics {
    Basic,
    /// Adds the latency histograms.
    Extensive,
}

/// `--experimental-backend-bbolt-freelist-type` (anything but `map` is
/// `array`, as in etcd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreelistType {
    Array,
    Map,
}

/// The TLS settings of the client or the peer listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--client-crl-file` / `--peer-crl-file`.
    pub crl_file: Option<PathBuf>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`.
    pub allowed_hostname: Option<String>,
    /// `--peer-cert-allowed-cn` (peers only).
    pub allowed_cn: Option<String>,
    /// `--auto-tls` / `--peer-auto-tls`.
    pub auto_tls: bool,
}

impl TlsConfig {
    /// No certificate and no key given (etcd's `TLSInfo.Empty`).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// The server's configuration, every etcd 3.4 flag read, defaulted and
/// checked. Field names are the flags' names; durations and sizes are typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    // Member.
    pub name: String,
    /// `--data-dir`, `<name>.etcd` when not given.
    pub data_dir: PathBuf,
    /// `--wal-dir`; `None`: `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    pub snapshot_count: u64,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub initial_election_tick_advance: bool,
    pub listen_peer_urls: Vec<String>,
    pub listen_client_urls: Vec<String>,
    /// 0: keep all.
    pub max_snapshots: u64,
    /// 0: keep all.
    pub max_wals: u64,
    /// `None`: no quota (a negative flag); the flag's 0 is 2 GiB.
    pub quota_backend_bytes: Option<u64>,
    /// The flag's 0 is 100 ms.
    pub backend_batch_interval: Duration,
    /// The flag's 0 is 10000.
    pub backend_batch_limit: u64,
    pub max_txn_ops: u64,
    pub max_request_bytes: u64,
    pub max_concurrent_streams: u32,
    pub grpc_keepalive_min_time: Duration,
    /// Zero disables server pings.
    pub grpc_keepalive_interval: Duration,
    /// Zero disables the ping timeout.
    pub grpc_keepalive_timeout: Duration,

    // Clustering.
    pub initial_advertise_peer_urls: Vec<String>,
    /// Member name → its sorted peer URLs; empty when bootstrapping by
    /// discovery.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub advertise_client_urls: Vec<String>,
    pub discovery: Option<String>,
    pub discovery_fallback: DiscoveryFallback,
    pub discovery_proxy: Option<String>,
    pub discovery_srv: Option<String>,
    pub discovery_srv_name: Option<String>,
    pub strict_reconfig_check: bool,
    pub pre_vote: bool,
    pub auto_compaction_mode: AutoCompactionMode,
    pub auto_compaction_retention: CompactionRetention,
    pub enable_v2: bool,
    pub enable_grpc_gateway: bool,

    // Security.
    pub client_tls: TlsConfig,
    pub peer_tls: TlsConfig,
    pub cipher_suites: Vec<String>,
    /// `["*"]` allows every origin.
    pub cors: Vec<String>,
    /// `["*"]` accepts every host.
    pub host_whitelist: Vec<String>,

    // Auth.
    /// `simple`, or `jwt,<options>`.
    pub auth_token: String,
    pub bcrypt_cost: u32,
    pub auth_token_ttl: Duration,

    // Profiling and monitoring.
    pub enable_pprof: bool,
    pub metrics: Metrics,
    pub listen_metrics_urls: Vec<String>,

    // Logging.
    pub logger: Logger,
    /// `--log-outputs` (or the deprecated `--log-output`).
    pub log_outputs: Vec<String>,
    pub log_level: LogLevel,
    /// Deprecated `--debug`.
    pub debug: bool,
    /// Deprecated `--log-package-levels`.
    pub log_package_levels: Option<String>,

    // v2 proxy.
    pub proxy: ProxyMode,
    pub proxy_failure_wait: Duration,
    pub proxy_refresh_interval: Duration,
    pub proxy_dial_timeout: Duration,
    pub proxy_write_timeout: Duration,
    /// Zero: no timeout.
    pub proxy_read_timeout: Duration,

    // Experimental.
    pub experimental_initial_corrupt_check: bool,
    /// Zero: no periodic check.
    pub experimental_corrupt_check_time: Duration,
    pub experimental_enable_v2v3: Option<String>,
    pub experimental_backend_bbolt_freelist_type: FreelistType,
    pub experimental_enable_lease_checkpoint: bool,
    pub experimental_enable_lease_checkpoint_persist: bool,
    /// The flag's 0 is 1000.
    pub experimental_compaction_batch_limit: u64,
    pub experimental_peer_skip_client_san_verification: bool,
    /// The flag's 0 is 10 minutes; at least 100 ms.
    pub experimental_watch_progress_notify_interval: Duration,
    pub experimental_warning_apply_duration: Duration,

    // Unsafe.
    pub force_new_cluster: bool,
    pub unsafe_no_fsync: bool,

    /// The file the configuration was read from, if any.
    pub config_file: Option<PathBuf>,
    /// The flags the operator set (command line, environment or file).
    set: BTreeSet<&'static str>,
}

/// Flags this build of cairn acts on; any other that is set draws a warning.
pub const HONOURED_FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "listen-client-urls",
    "advertise-client-urls",
    "listen-peer-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "snapshot-count",
    "heartbeat-interval",
    "election-timeout",
    "quota-backend-bytes",
    "max-request-bytes",
    "max-txn-ops",
    "auto-compaction-mode",
    "auto-compaction-retention",
    "listen-metrics-urls",
    "logger",
    "log-level",
    "log-outputs",
    "strict-reconfig-check",
    "force-new-cluster",
    "pre-vote",
    "max-concurrent-streams",
    "backend-batch-interval",
    "backend-batch-limit",
    "experimental-compaction-batch-limit",
    "experimental-watch-progress-notify-interval",
    "enable-grpc-gateway",
    "config-file",
    // Handled before a configuration exists.
    "version",
];

impl Default for Config {
    /// etcd's defaults: what `cairn` with no flags and no environment runs.
    fn default() -> Self {
        let (config, _) = resolve::resolve(&flags::Settings::new(flags::Source::CommandLine))
            .expect("etcd's defaults are a valid configuration");
        config
    }
}

/// Something parsing has to say, for the caller to log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub level: MessageLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageLevel {
    Info,
    Warn,
}

impl Message {
    pub(crate) fn info(text: impl Into<String>) -> Self {
        Message {
            level: MessageLevel::Info,
            text: text.into(),
        }
    }

    pub(crate) fn warn(text: impl Into<String>) -> Self {
        Message {
            level: MessageLevel::Warn,
            text: text.into(),
        }
    }

    /// Logs the message through `tracing`.
    pub fn log(&self) {
        match self.level {
            MessageLevel::Info => tracing::info!("{}", self.text),
            MessageLevel::Warn => tracing::warn!("{}", self.text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// The command line does not parse (Go's flag package; exit 2).
    Usage,
    /// The flags parse but do not make a configuration (exit 1).
    Invalid,
    /// Fatal as it stands, without etcd's "error verifying flags" framing.
    Fatal,
}

/// Why there is no configuration. `Display` gives the line etcd prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ErrorKind,
    reason: String,
    hint: Option<&'static str>,
}

impl ConfigError {
    pub(crate) fn usage(reason: String) -> Self {
        ConfigError {
            kind: ErrorKind::Usage,
            reason,
            hint: None,
        }
    }

    pub(crate) fn invalid(reason: String) -> Self {
        ConfigError {
            kind: ErrorKind::Invalid,
            reason,
            hint: None,
        }
    }

    pub(crate) fn fatal(reason: String) -> Self {
        ConfigError {
            kind: ErrorKind::Fatal,
            reason,
            hint: None,
        }
    }

    fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// The process exit code etcd uses: 2 for a command line that does not
    /// parse, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Usage => 2,
            ErrorKind::Invalid | ErrorKind::Fatal => 1,
        }
    }

    /// The reason alone, without etcd's framing.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Fatal => f.write_str(&self.reason)?,
            ErrorKind::Usage | ErrorKind::Invalid => write!(
                f,
                "error verifying flags, {}. See 'etcd --help'.",
                self.reason
            )?,
        }
        if let Some(hint) = self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// What the process was asked to do.
#[derive(Debug)]
pub enum Startup {
    /// Run with this configuration, after logging the messages.
    Run {
        config: Box<Config>,
        messages: Vec<Message>,
    },
    /// Print this help text and exit 0.
    Help(String),
    /// Print this version text and exit 0.
    Version(String),
}

/// Reads the command line (without the program name) and the environment (in
/// the process's order) as etcd 3.4 does.
pub fn parse(args: &[String], env: &[(String, String)]) -> Result<Startup, ConfigError> {
    let (mut settings, mut messages) = match cli::parse_args(args)? {
        cli::Args::Help => return Ok(Startup::Help(help_text())),
        cli::Args::Flags { settings, messages } => (settings, messages),
    };
    if settings.bool("version") {
        return Ok(Startup::Version(version_text()));
    }
    let mut config_file = settings.str("config-file");
    if config_file.is_empty() {
        config_file = env
            .iter()
            .rev()
            .find(|(k, _)| k == "ETCD_CONFIG_FILE")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    if !config_file.is_empty() {
        // The file replaces every other flag and the environment.
        let (file_settings, file_messages) = file::load(Path::new(&config_file))?;
        settings = file_settings;
        messages = file_messages;
    } else {
        cli::apply_env(&mut settings, env, &mut messages)?;
    }
    let (mut config, more) = resolve::resolve(&settings)?;
    messages.extend(more);
    if !config_file.is_empty() {
        config.config_file = Some(PathBuf::from(config_file));
        config.set.insert("config-file");
    }
    Ok(Startup::Run {
        config: Box::new(config),
        messages,
    })
}

/// Reads this process's arguments and environment; prints the help or the
/// version and exits 0, or prints the error and exits with etcd's code.
pub fn load_or_exit() -> (Config, Vec<Message>) {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    match parse(&args, &env) {
        Ok(Startup::Run { config, messages }) => (*config, messages),
        Ok(Startup::Help(text) | Startup::Version(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(e.exit_code())
        }
    }
}

impl Config {
    /// Whether the operator set this flag (command line, `ETCD_*` or file).
    pub fn is_set(&self, flag: &str) -> bool {
        self.set.contains(flag)
    }

    /// The flags the operator set, by name.
    pub fn set_flags(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.set.iter().copied()
    }

    /// The flags the operator set that this build does not act on yet, in
    /// `--help` order, for the server to warn about.
    pub fn unhonoured_flags(&self) -> Vec<&'static str> {
        flags::FLAGS
            .iter()
            .map(|f| f.name)
            .filter(|name| self.set.contains(name) && !HONOURED_FLAGS.contains(name))
            .collect()
    }

    /// Election timeout in heartbeats (etcd's `ElectionTicks`).
    pub fn election_ticks(&self) -> u64 {
        (self.election_timeout.as_millis() / self.heartbeat_interval.as_millis().max(1)) as u64
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// The member and cluster ids from `--initial-cluster` and
    /// `--initial-cluster-token`.
    pub fn ids(&self) -> anyhow::Result<MemberMeta> {
        let Some(urls) = self.initial_cluster.get(&self.name) else {
            bail!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            );
        };
        let me = member_id(urls, &self.initial_cluster_token, None);
        let all: Vec<u64> = self
            .initial_cluster
            .values()
            .map(|urls| member_id(urls, &self.initial_cluster_token, None))
            .collect();
        Ok(MemberMeta {
            member_id: me,
            cluster_id: cluster_id(&all),
        })
    }

    /// etcd's checks of the bootstrap flags when a member starts without
    /// data: this member is in `--initial-cluster` at exactly its advertised
    /// peer URLs, no URL is listed twice, and the flags agree with
    /// `--initial-cluster-state`.
    pub fn verify_bootstrap(&self) -> anyhow::Result<()> {
        let Some(listed) = self.initial_cluster.get(&self.name) else {
            bail!(
                "couldn't find local name {:?} in the initial cluster configuration",
                self.name
            );
        };
        let all: Vec<&String> = self.initial_cluster.values().flatten().collect();
        let distinct: BTreeSet<&String> = all.iter().copied().collect();
        if distinct.len() != all.len() {
            bail!(
                "initial cluster {} has duplicate url",
                format_initial_cluster(&self.initial_cluster)
            );
        }
        match self.initial_cluster_state {
            ClusterState::Existing => {
                if self.discovery.is_some() {
                    bail!("discovery URL should not be set when joining existing initial cluster");
                }
            }
            ClusterState::New => {
                let advertised = &self.initial_advertise_peer_urls;
                let missing: Vec<String> = listed
                    .iter()
                    .filter(|u| !advertised.contains(u))
                    .map(|u| format!("{}={u}", self.name))
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "--initial-cluster has {} but missing from --initial-advertise-peer-urls={}",
                        missing.join(","),
                        advertised.join(",")
                    );
                }
                let extra: Vec<&String> =
                    advertised.iter().filter(|u| !listed.contains(u)).collect();
                if !extra.is_empty() {
                    let mine = BTreeMap::from([(self.name.clone(), advertised.clone())]);
                    bail!(
                        "--initial-advertise-peer-urls has {} but missing from --initial-cluster={}",
                        extra
                            .iter()
                            .map(|u| u.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        format_initial_cluster(&mine)
                    );
                }
            }
        }
        Ok(())
    }
}

/// `name=url,...` sorted, as etcd prints a `URLsMap`.
fn format_initial_cluster(m: &BTreeMap<String, Vec<String>>) -> String {
    let mut pairs: Vec<String> = m
        .iter()
        .flat_map(|(n, urls)| urls.iter().map(move |u| format!("{n}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
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
