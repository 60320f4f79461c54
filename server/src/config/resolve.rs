//! From flag values to a [`Config`]: etcd's defaults, its derived values and
//! its checks, in the order etcd makes them (`etcdmain.configFromCmdLine`,
//! `embed.Config.Validate`, then the start of `startEtcdOrProxyV2`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::flags::{Settings, Source};
use super::values::{self, go_quote_list};
use super::{
    AutoCompactionMode, ClusterState, CompactionRetention, Config, ConfigError, DiscoveryFallback,
    FreelistType, LogLevel, Logger, Message, Metrics, ProxyMode, TlsConfig,
};

/// etcd's `--initial-cluster` default, from the default name and peer URL.
pub(crate) const DEFAULT_INITIAL_CLUSTER: &str = "default=http://localhost:2380";
const MAX_ELECTION_MS: u64 = 50_000;
const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_BATCH_LIMIT: u64 = 10_000;
const DEFAULT_COMPACTION_BATCH_LIMIT: u64 = 1000;
const DEFAULT_WATCH_PROGRESS: Duration = Duration::from_secs(600);
const MIN_WATCH_PROGRESS: Duration = Duration::from_millis(100);
const BCRYPT_COST: std::ops::RangeInclusive<u64> = 4..=31;
const DEFAULT_BCRYPT_COST: u32 = 10;

const ERR_CONFLICT_BOOTSTRAP: &str = "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"";
pub(crate) const ERR_UNSET_ADVERTISE: &str =
    "--advertise-client-urls is required when --listen-client-urls is set explicitly";
const HINT_UNSET_ADVERTISE: &str = "When listening on specific address(es), this etcd process must advertise accessible url(s) to each connected client.";

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn opt_path(s: String) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Turns settings into a checked configuration, with the messages to log.
pub(crate) fn resolve(s: &Settings) -> Result<(Config, Vec<Message>), ConfigError> {
    let mut msgs = Vec::new();
    let from_cli = s.source == Source::CommandLine;
    let invalid = ConfigError::invalid;

    let name = s.str("name");
    let discovery = s.str("discovery");
    let discovery_srv = s.str("discovery-srv");
    let discovery_srv_name = s.str("discovery-srv-name");
    let proxy = match s.str("proxy").as_str() {
        "readonly" => ProxyMode::Readonly,
        "on" => ProxyMode::On,
        _ => ProxyMode::Off,
    };
    let discovery_fallback = match s.str("discovery-fallback").as_str() {
        "exit" => DiscoveryFallback::Exit,
        _ => DiscoveryFallback::Proxy,
    };
    let may_be_proxy = proxy != ProxyMode::Off
        || (!discovery.is_empty() && discovery_fallback == DiscoveryFallback::Proxy);

    let listen_peer_urls = s.list("listen-peer-urls");
    let listen_client_urls = s.list("listen-client-urls");
    let listen_metrics_urls = s.list("listen-metrics-urls");
    let initial_advertise_peer_urls = s.list("initial-advertise-peer-urls");
    let mut advertise_client_urls = s.list("advertise-client-urls");
    // The default advertised client URL does not stand when the client
    // listeners were chosen: the operator must say what to advertise.
    if from_cli
        && s.is_set("listen-client-urls")
        && !s.is_set("advertise-client-urls")
        && !may_be_proxy
    {
        advertise_client_urls.clear();
    }
    // Discovery replaces the default initial cluster.
    let mut initial_cluster = s.str("initial-cluster");
    let discovers = !discovery.is_empty()
        || !discovery_srv.is_empty()
        || (from_cli && !discovery_srv_name.is_empty());
    if discovers && !s.is_set("initial-cluster") {
        initial_cluster.clear();
    }

    // embed.Config.Validate, in its order.
    let (logger, log_outputs, log_level) = logging(s, &mut msgs)?;
    for urls in [&listen_peer_urls, &listen_client_urls, &listen_metrics_urls] {
        for u in urls {
            values::check_bind_url(u).map_err(invalid)?;
        }
    }
    for (flag, urls) in [
        (
            "--initial-advertise-peer-urls",
            &initial_advertise_peer_urls,
        ),
        ("--advertise-client-urls", &advertise_client_urls),
    ] {
        for u in urls {
            values::check_host_url(u).map_err(|e| {
                invalid(format!(
                    "{flag} {:?} must be \"host:port\" ({e})",
                    urls.join(",")
                ))
            })?;
        }
    }
    let initial_cluster_state = match s.str("initial-cluster-state").as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => return Err(invalid(format!("unexpected clusterState {other:?}"))),
    };
    let bootstrap_sources = [&discovery, &initial_cluster, &discovery_srv];
    if bootstrap_sources.iter().filter(|v| !v.is_empty()).count() > 1 {
        return Err(invalid(ERR_CONFLICT_BOOTSTRAP.into()));
    }
    let tick_ms = s.uint("heartbeat-interval");
    let election_ms = s.uint("election-timeout");
    if tick_ms == 0 {
        return Err(invalid(format!(
            "--heartbeat-interval must be >0 (set to {tick_ms}ms)"
        )));
    }
    if election_ms == 0 {
        return Err(invalid(format!(
            "--election-timeout must be >0 (set to {election_ms}ms)"
        )));
    }
    if tick_ms.saturating_mul(5) > election_ms {
        return Err(invalid(format!(
            "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{tick_ms}ms]"
        )));
    }
    if election_ms > MAX_ELECTION_MS {
        return Err(invalid(format!(
            "--election-timeout[{election_ms}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
        )));
    }
    if !listen_client_urls.is_empty() && advertise_client_urls.is_empty() {
        return Err(invalid(ERR_UNSET_ADVERTISE.into()).with_hint(HINT_UNSET_ADVERTISE));
    }
    let auto_compaction_mode = match s.str("auto-compaction-mode").as_str() {
        // A configuration file may leave the mode empty; etcd's flag default
        // is periodic.
        "periodic" | "" => AutoCompactionMode::Periodic,
        "revision" => AutoCompactionMode::Revision,
        other => {
            return Err(invalid(format!("unknown auto-compaction-mode {other:?}")));
        }
    };
    let lease_checkpoint = s.bool("experimental-enable-lease-checkpoint");
    let lease_checkpoint_persist = s.bool("experimental-enable-lease-checkpoint-persist");
    if lease_checkpoint && !lease_checkpoint_persist {
        msgs.push(Message::warn(
            "Detected that checkpointing is enabled without persistence. Consider enabling experimental-enable-lease-checkpoint-persist",
        ));
    }
    if lease_checkpoint_persist && !lease_checkpoint {
        return Err(invalid(
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint".into(),
        ));
    }

    // Derived at startup (startEtcdOrProxyV2): the initial cluster follows
    // --name when nothing else about it was chosen, and the data directory
    // follows the name.
    if name != "default" && initial_cluster == DEFAULT_INITIAL_CLUSTER {
        initial_cluster = initial_advertise_peer_urls
            .iter()
            .map(|u| format!("{name}={u}"))
            .collect::<Vec<_>>()
            .join(",");
    }
    let data_dir = match s.str("data-dir") {
        d if d.is_empty() => {
            let d = format!("{name}.etcd");
            msgs.push(Message::warn(format!(
                "no data-dir provided, using default data-dir ./{d}"
            )));
            PathBuf::from(d)
        }
        d => PathBuf::from(d),
    };

    // cairn's own checks of values etcd reads later, at server start.
    let initial_cluster = parse_initial_cluster(&initial_cluster).map_err(|e| {
        invalid(format!(
            "--initial-cluster {initial_cluster:?} is invalid: {e}"
        ))
    })?;
    let retention = s.str("auto-compaction-retention");
    let auto_compaction_retention =
        parse_retention(auto_compaction_mode, &retention).map_err(|e| {
            invalid(format!(
                "--auto-compaction-retention {retention:?} is invalid: {e}"
            ))
        })?;
    let metrics = match s.str("metrics").as_str() {
        "basic" => Metrics::Basic,
        "extensive" => Metrics::Extensive,
        other => {
            return Err(invalid(format!(
                "unknown --metrics {other:?} (only supports \"basic\" or \"extensive\")"
            )));
        }
    };
    let non_negative = |flag: &str| -> Result<u64, ConfigError> {
        let n = s.int(flag);
        u64::try_from(n).map_err(|_| invalid(format!("--{flag} must not be negative (set to {n})")))
    };
    let backend_batch_limit = match non_negative("backend-batch-limit")? {
        0 => DEFAULT_BATCH_LIMIT,
        n => n,
    };
    let experimental_compaction_batch_limit =
        match non_negative("experimental-compaction-batch-limit")? {
            0 => DEFAULT_COMPACTION_BATCH_LIMIT,
            n => n,
        };
    let backend_batch_interval = match s.duration("backend-batch-interval") {
        Duration::ZERO => DEFAULT_BATCH_INTERVAL,
        d => d,
    };
    let quota_backend_bytes = match s.int("quota-backend-bytes") {
        0 => Some(DEFAULT_QUOTA_BYTES),
        n => u64::try_from(n).ok(),
    };
    let experimental_watch_progress_notify_interval =
        match s.duration("experimental-watch-progress-notify-interval") {
            Duration::ZERO => DEFAULT_WATCH_PROGRESS,
            d if d < MIN_WATCH_PROGRESS => {
                msgs.push(Message::warn(format!(
                "--experimental-watch-progress-notify-interval {} is below the minimum; using {}",
                values::format_go_duration(d),
                values::format_go_duration(MIN_WATCH_PROGRESS)
            )));
                MIN_WATCH_PROGRESS
            }
            d => d,
        };
    let bcrypt_cost = match s.uint("bcrypt-cost") {
        c if BCRYPT_COST.contains(&c) => c as u32,
        c => {
            msgs.push(Message::warn(format!(
                "invalid --bcrypt-cost {c} (valid range {}..{}); using the default {DEFAULT_BCRYPT_COST}",
                BCRYPT_COST.start(),
                BCRYPT_COST.end()
            )));
            DEFAULT_BCRYPT_COST
        }
    };
    let experimental_backend_bbolt_freelist_type =
        match s.str("experimental-backend-bbolt-freelist-type").as_str() {
            "map" => FreelistType::Map,
            _ => FreelistType::Array,
        };
    let debug = s.bool("debug");
    if debug {
        msgs.push(Message::warn(
            "Deprecated '--debug' flag is set (use '--log-level=debug' instead)",
        ));
    }
    let log_package_levels = opt(s.str("log-package-levels"));
    if let Some(l) = &log_package_levels {
        msgs.push(Message::warn(format!(
            "Deprecated '--log-package-levels={l}' flag is set; use '--logger=zap' flag instead"
        )));
    }
    let ms = Duration::from_millis;

    let config = Config {
        name,
        data_dir,
        wal_dir: opt_path(s.str("wal-dir")),
        snapshot_count: s.uint("snapshot-count"),
        heartbeat_interval: ms(tick_ms),
        election_timeout: ms(election_ms),
        initial_election_tick_advance: s.bool("initial-election-tick-advance"),
        listen_peer_urls,
        listen_client_urls,
        max_snapshots: s.uint("max-snapshots"),
        max_wals: s.uint("max-wals"),
        quota_backend_bytes,
        backend_batch_interval,
        backend_batch_limit,
        max_txn_ops: s.uint("max-txn-ops"),
        max_request_bytes: s.uint("max-request-bytes"),
        max_concurrent_streams: u32::try_from(s.uint("max-concurrent-streams")).unwrap_or(u32::MAX),
        grpc_keepalive_min_time: s.duration("grpc-keepalive-min-time"),
        grpc_keepalive_interval: s.duration("grpc-keepalive-interval"),
        grpc_keepalive_timeout: s.duration("grpc-keepalive-timeout"),

        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: s.str("initial-cluster-token"),
        advertise_client_urls,
        discovery: opt(discovery),
        discovery_fallback,
        discovery_proxy: opt(s.str("discovery-proxy")),
        discovery_srv: opt(discovery_srv),
        discovery_srv_name: opt(discovery_srv_name),
        strict_reconfig_check: s.bool("strict-reconfig-check"),
        pre_vote: s.bool("pre-vote"),
        auto_compaction_mode,
        auto_compaction_retention,
        enable_v2: s.bool("enable-v2"),
        enable_grpc_gateway: s.bool("enable-grpc-gateway"),

        client_tls: TlsConfig {
            cert_file: opt_path(s.str("cert-file")),
            key_file: opt_path(s.str("key-file")),
            trusted_ca_file: opt_path(s.str("trusted-ca-file")),
            client_cert_auth: s.bool("client-cert-auth"),
            crl_file: opt_path(s.str("client-crl-file")),
            allowed_hostname: opt(s.str("client-cert-allowed-hostname")),
            allowed_cn: None,
            auto_tls: s.bool("auto-tls"),
        },
        peer_tls: TlsConfig {
            cert_file: opt_path(s.str("peer-cert-file")),
            key_file: opt_path(s.str("peer-key-file")),
            trusted_ca_file: opt_path(s.str("peer-trusted-ca-file")),
            client_cert_auth: s.bool("peer-client-cert-auth"),
            crl_file: opt_path(s.str("peer-crl-file")),
            allowed_hostname: opt(s.str("peer-cert-allowed-hostname")),
            allowed_cn: opt(s.str("peer-cert-allowed-cn")),
            auto_tls: s.bool("peer-auto-tls"),
        },
        cipher_suites: s
            .list("cipher-suites")
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect(),
        cors: s.list("cors"),
        host_whitelist: s.list("host-whitelist"),

        auth_token: s.str("auth-token"),
        bcrypt_cost,
        auth_token_ttl: Duration::from_secs(s.uint("auth-token-ttl")),

        enable_pprof: s.bool("enable-pprof"),
        metrics,
        listen_metrics_urls,

        logger,
        log_outputs,
        log_level,
        debug,
        log_package_levels,

        proxy,
        proxy_failure_wait: ms(s.uint("proxy-failure-wait")),
        proxy_refresh_interval: ms(s.uint("proxy-refresh-interval")),
        proxy_dial_timeout: ms(s.uint("proxy-dial-timeout")),
        proxy_write_timeout: ms(s.uint("proxy-write-timeout")),
        proxy_read_timeout: ms(s.uint("proxy-read-timeout")),

        experimental_initial_corrupt_check: s.bool("experimental-initial-corrupt-check"),
        experimental_corrupt_check_time: s.duration("experimental-corrupt-check-time"),
        experimental_enable_v2v3: opt(s.str("experimental-enable-v2v3")),
        experimental_backend_bbolt_freelist_type,
        experimental_enable_lease_checkpoint: lease_checkpoint,
        experimental_enable_lease_checkpoint_persist: lease_checkpoint_persist,
        experimental_compaction_batch_limit,
        experimental_peer_skip_client_san_verification: s
            .bool("experimental-peer-skip-client-san-verification"),
        experimental_watch_progress_notify_interval,
        experimental_warning_apply_duration: s.duration("experimental-warning-apply-duration"),

        force_new_cluster: s.bool("force-new-cluster"),
        unsafe_no_fsync: s.bool("unsafe-no-fsync"),

        config_file: None,
        set: s.set_names().clone(),
    };
    Ok((config, msgs))
}

/// etcd's `setupLogging` checks: `--log-output` (deprecated) against
/// `--log-outputs`, the outputs each logger supports, the logger and level.
fn logging(
    s: &Settings,
    msgs: &mut Vec<Message>,
) -> Result<(Logger, Vec<String>, LogLevel), ConfigError> {
    let invalid = ConfigError::invalid;
    let mut outputs = s.list("log-outputs");
    if s.is_set("log-output") {
        if s.is_set("log-outputs") {
            return Err(invalid(
                "both '--log-output' and '--log-outputs' are set; only set '--log-outputs'".into(),
            ));
        }
        msgs.push(Message::warn(
            "'--log-output' flag has been deprecated! Please use '--log-outputs'!",
        ));
        outputs = s.list("log-output");
    }
    let logger = match s.str("logger").as_str() {
        "capnslog" => {
            if outputs.len() != 1 {
                return Err(invalid(format!(
                    "--logger=capnslog supports only 1 value in '--log-outputs', got {}",
                    go_quote_list(&outputs)
                )));
            }
            if !matches!(outputs[0].as_str(), "default" | "stderr" | "stdout") {
                return Err(invalid(format!(
                    "unknown log-output {:?} (only supports \"default\", \"stderr\", \"stdout\")",
                    outputs[0]
                )));
            }
            Logger::Capnslog
        }
        "zap" => {
            if outputs.is_empty() {
                outputs = vec!["default".into()];
            }
            if outputs.len() > 1 && outputs.iter().any(|o| o == "default") {
                return Err(invalid(
                    "multi logoutput for \"default\" is not supported yet".into(),
                ));
            }
            if outputs.len() > 1 && outputs.iter().any(|o| o == "systemd/journal") {
                return Err(invalid(format!(
                    "running with systemd/journal but other '--log-outputs' values ({}) are configured with 'default'; override 'default' value with something else",
                    go_quote_list(&outputs)
                )));
            }
            Logger::Zap
        }
        other => return Err(invalid(format!("unknown logger option {other:?}"))),
    };
    let level = match s.str("log-level").as_str() {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        "dpanic" => LogLevel::DPanic,
        "panic" => LogLevel::Panic,
        "fatal" => LogLevel::Fatal,
        other => {
            return Err(invalid(format!(
                "unknown level {other:?} for --log-level (only supports debug, info, warn, error, dpanic, panic, fatal)"
            )));
        }
    };
    Ok((logger, outputs, level))
}

/// `name=peerURL,...` as etcd's `types.NewURLsMap` reads it: a name may
/// repeat to give several URLs; each name's URLs are checked and sorted.
pub(crate) fn parse_initial_cluster(s: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut raw: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = part.split_once('=').unwrap_or((part, ""));
        raw.entry(name.to_string()).or_default().push(url);
    }
    raw.into_iter()
        .map(|(name, urls)| {
            let mut checked = urls
                .into_iter()
                .map(|u| values::parse_url(u).map(|u| u.canonical))
                .collect::<Result<Vec<_>, _>>()?;
            checked.sort();
            Ok((name, checked))
        })
        .collect()
}

/// etcd's `parseCompactionRetention`: a whole number is hours (periodic) or
/// revisions (revision); otherwise a Go duration (periodic only in cairn).
fn parse_retention(mode: AutoCompactionMode, s: &str) -> Result<CompactionRetention, String> {
    let s = if s.is_empty() { "0" } else { s };
    if let Ok(n) = s.parse::<u64>() {
        return Ok(match (n, mode) {
            (0, _) => CompactionRetention::Off,
            (n, AutoCompactionMode::Periodic) => CompactionRetention::Period(Duration::from_secs(
                n.checked_mul(3600).ok_or("too many hours")?,
            )),
            (n, AutoCompactionMode::Revision) => CompactionRetention::Revisions(n),
        });
    }
    let d = values::parse_duration(s)?;
    match mode {
        AutoCompactionMode::Revision => {
            Err("revision mode takes a number of revisions, not a duration".into())
        }
        AutoCompactionMode::Periodic if d.is_zero() => Ok(CompactionRetention::Off),
        AutoCompactionMode::Periodic => Ok(CompactionRetention::Period(d)),
    }
}
