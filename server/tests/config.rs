//! The server's flags, environment and configuration file behave as etcd
//! 3.4's: same names, defaults, precedence, derived values and messages.

#[path = "../src/config/mod.rs"]
mod config;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use config::{
    AutoCompactionMode, ClusterState, CompactionRetention, Config, ConfigError, DiscoveryFallback,
    FreelistType, LogLevel, Logger, Message, MessageLevel, Metrics, ProxyMode, Startup,
};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_with(args: &[&str], vars: &[(&str, &str)]) -> Result<(Config, Vec<Message>), ConfigError> {
    match config::parse(&strings(args), &env(vars))? {
        Startup::Run { config, messages } => Ok((*config, messages)),
        other => panic!("expected a configuration, got {other:?}"),
    }
}

fn cfg(args: &[&str]) -> Config {
    run_with(args, &[])
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .0
}

fn err(args: &[&str]) -> ConfigError {
    run_with(args, &[]).expect_err("the flags are refused")
}

fn texts(m: &[Message]) -> Vec<&str> {
    m.iter().map(|m| m.text.as_str()).collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn with_no_flags_the_configuration_is_etcds_defaults() {
    let c = cfg(&[]);
    assert_eq!(c, Config::default());
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir(), std::path::PathBuf::from("default.etcd"));
    assert_eq!(
        c.wal_dir(),
        std::path::PathBuf::from("default.etcd/member/wal")
    );
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(
        (c.heartbeat_interval, c.election_timeout),
        (ms(100), ms(1000))
    );
    assert_eq!(c.election_ticks(), 10);
    assert!(c.initial_election_tick_advance);
    assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
    assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.initial_advertise_peer_urls, ["http://localhost:2380"]);
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
    assert!(c.listen_metrics_urls.is_empty());
    assert_eq!(
        c.initial_cluster,
        BTreeMap::from([("default".to_string(), strings(&["http://localhost:2380"]))])
    );
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!((c.max_snapshots, c.max_wals), (5, 5));
    assert_eq!(c.quota_backend_bytes, Some(2 * 1024 * 1024 * 1024));
    assert_eq!(c.backend_batch_interval, ms(100));
    assert_eq!(c.backend_batch_limit, 10_000);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.max_concurrent_streams, u32::MAX);
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(7200));
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(c.discovery, None);
    assert_eq!(c.discovery_fallback, DiscoveryFallback::Proxy);
    assert!(c.strict_reconfig_check);
    assert!(!c.pre_vote);
    assert_eq!(c.auto_compaction_mode, AutoCompactionMode::Periodic);
    assert_eq!(c.auto_compaction_retention, CompactionRetention::Off);
    assert!(!c.enable_v2);
    assert!(c.enable_grpc_gateway);
    assert!(c.client_tls.is_empty() && !c.client_tls.auto_tls && !c.client_tls.client_cert_auth);
    assert!(c.peer_tls.is_empty() && !c.peer_tls.auto_tls);
    assert!(c.cipher_suites.is_empty());
    assert_eq!(
        (c.cors.clone(), c.host_whitelist.clone()),
        (strings(&["*"]), strings(&["*"]))
    );
    assert_eq!(c.auth_token, "simple");
    assert_eq!(c.bcrypt_cost, 10);
    assert_eq!(c.auth_token_ttl, Duration::from_secs(300));
    assert!(!c.enable_pprof);
    assert_eq!(c.metrics, Metrics::Basic);
    assert_eq!(c.logger, Logger::Capnslog);
    assert_eq!(c.log_outputs, ["default"]);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.proxy, ProxyMode::Off);
    assert_eq!(
        [
            c.proxy_failure_wait,
            c.proxy_refresh_interval,
            c.proxy_dial_timeout
        ],
        [ms(5000), ms(30000), ms(1000)]
    );
    assert_eq!(
        [c.proxy_write_timeout, c.proxy_read_timeout],
        [ms(5000), ms(0)]
    );
    assert!(!c.experimental_initial_corrupt_check);
    assert_eq!(c.experimental_corrupt_check_time, Duration::ZERO);
    assert_eq!(
        c.experimental_backend_bbolt_freelist_type,
        FreelistType::Array
    );
    assert_eq!(c.experimental_compaction_batch_limit, 1000);
    assert_eq!(
        c.experimental_watch_progress_notify_interval,
        Duration::from_secs(600)
    );
    assert_eq!(c.experimental_warning_apply_duration, ms(100));
    assert!(!c.force_new_cluster && !c.unsafe_no_fsync);
    assert_eq!(c.config_file, None);
    assert!(c.unhonoured_flags().is_empty());
}

#[test]
fn etcds_default_member_gets_its_well_known_ids() {
    let ids = cfg(&[]).ids().unwrap();
    assert_eq!(format!("{:x}", ids.member_id), "8e9e05c52164694d");
    assert_eq!(format!("{:x}", ids.cluster_id), "cdf818194e3a8c32");
    let c = cfg(&[
        "--name=m1",
        "--initial-advertise-peer-urls=http://127.0.0.1:23801",
        "--initial-cluster=m1=http://127.0.0.1:23801",
    ]);
    let ids = c.ids().unwrap();
    assert_eq!(format!("{:x}", ids.member_id), "bdae9bbc11dd390d");
    assert_eq!(ids.cluster_id, 15118495548433857066);
    assert_eq!(config::MemberMeta::decode(&ids.encode()).unwrap(), ids);
}

#[test]
fn members_of_one_cluster_share_its_id_and_differ_in_theirs() {
    let cluster = "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380";
    let a = cfg(&[
        "--name=a",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380",
        cluster,
    ]);
    let b = cfg(&[
        "--name=b",
        "--initial-advertise-peer-urls=http://10.0.0.2:2380",
        cluster,
    ]);
    let (a, b) = (a.ids().unwrap(), b.ids().unwrap());
    assert_eq!(a.cluster_id, b.cluster_id);
    assert_ne!(a.member_id, b.member_id);
    let e = cfg(&["--name=d", cluster]).ids().unwrap_err();
    assert_eq!(
        e.to_string(),
        "couldn't find local name \"d\" in the initial cluster configuration"
    );
}

/// One non-default value for every flag of `--help` (with any flags it needs).
const EVERY_FLAG: &[(&str, &str, &[&str])] = &[
    ("name", "m1", &[]),
    ("data-dir", "/var/lib/x", &[]),
    ("wal-dir", "/wal", &[]),
    ("snapshot-count", "5000", &[]),
    ("heartbeat-interval", "50", &[]),
    ("election-timeout", "2000", &[]),
    ("initial-election-tick-advance", "false", &[]),
    ("listen-peer-urls", "http://10.0.0.1:2380", &[]),
    (
        "listen-client-urls",
        "http://10.0.0.1:2379",
        &["--advertise-client-urls=http://10.0.0.1:2379"],
    ),
    ("max-snapshots", "0", &[]),
    ("max-wals", "9", &[]),
    ("quota-backend-bytes", "-1", &[]),
    ("backend-batch-interval", "10ms", &[]),
    ("backend-batch-limit", "5", &[]),
    ("max-txn-ops", "1024", &[]),
    ("max-request-bytes", "10485760", &[]),
    ("max-concurrent-streams", "100", &[]),
    ("grpc-keepalive-min-time", "1s", &[]),
    ("grpc-keepalive-interval", "0", &[]),
    ("grpc-keepalive-timeout", "1m", &[]),
    ("initial-advertise-peer-urls", "http://10.0.0.1:2380", &[]),
    ("initial-cluster", "default=http://10.0.0.1:2380", &[]),
    ("initial-cluster-state", "existing", &[]),
    ("initial-cluster-token", "tok", &[]),
    ("advertise-client-urls", "http://10.0.0.1:2379", &[]),
    ("discovery", "https://discovery.etcd.io/x", &[]),
    ("discovery-fallback", "exit", &[]),
    ("discovery-proxy", "http://proxy:8080", &[]),
    ("discovery-srv", "example.com", &[]),
    ("discovery-srv-name", "x", &[]),
    ("strict-reconfig-check", "false", &[]),
    ("pre-vote", "true", &[]),
    ("auto-compaction-retention", "2", &[]),
    ("auto-compaction-mode", "revision", &[]),
    ("enable-v2", "true", &[]),
    ("enable-grpc-gateway", "false", &[]),
    ("cert-file", "c.pem", &[]),
    ("key-file", "k.pem", &[]),
    ("client-cert-auth", "true", &[]),
    ("client-crl-file", "crl", &[]),
    ("client-cert-allowed-hostname", "h", &[]),
    ("trusted-ca-file", "ca.pem", &[]),
    ("auto-tls", "true", &[]),
    ("peer-cert-file", "pc.pem", &[]),
    ("peer-key-file", "pk.pem", &[]),
    ("peer-client-cert-auth", "true", &[]),
    ("peer-trusted-ca-file", "pca.pem", &[]),
    ("peer-cert-allowed-cn", "cn", &[]),
    ("peer-cert-allowed-hostname", "ph", &[]),
    ("peer-auto-tls", "true", &[]),
    ("peer-crl-file", "pcrl", &[]),
    (
        "cipher-suites",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        &[],
    ),
    ("cors", "http://a.example:80", &[]),
    ("host-whitelist", "a.example,b.example", &[]),
    ("auth-token", "jwt,sign-method=RS256", &[]),
    ("bcrypt-cost", "12", &[]),
    ("auth-token-ttl", "60", &[]),
    ("enable-pprof", "true", &[]),
    ("metrics", "extensive", &[]),
    ("listen-metrics-urls", "http://127.0.0.1:2381", &[]),
    ("logger", "zap", &[]),
    ("log-outputs", "stderr", &[]),
    ("log-level", "debug", &[]),
    ("proxy", "readonly", &[]),
    ("proxy-failure-wait", "1", &[]),
    ("proxy-refresh-interval", "2", &[]),
    ("proxy-dial-timeout", "3", &[]),
    ("proxy-write-timeout", "4", &[]),
    ("proxy-read-timeout", "5", &[]),
    ("experimental-initial-corrupt-check", "true", &[]),
    ("experimental-corrupt-check-time", "3m", &[]),
    ("experimental-enable-v2v3", "/v2/", &[]),
    ("experimental-backend-bbolt-freelist-type", "map", &[]),
    ("experimental-enable-lease-checkpoint", "true", &[]),
    (
        "experimental-enable-lease-checkpoint-persist",
        "true",
        &["--experimental-enable-lease-checkpoint"],
    ),
    ("experimental-compaction-batch-limit", "10", &[]),
    (
        "experimental-peer-skip-client-san-verification",
        "true",
        &[],
    ),
    ("experimental-watch-progress-notify-interval", "1s", &[]),
    ("experimental-warning-apply-duration", "1s", &[]),
    ("force-new-cluster", "true", &[]),
    ("unsafe-no-fsync", "true", &[]),
    ("debug", "true", &[]),
    ("log-package-levels", "etcdserver=DEBUG", &[]),
    ("log-output", "stdout", &[]),
];

fn help() -> String {
    match config::parse(&strings(&["--help"]), &[]).unwrap() {
        Startup::Help(text) => text,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_flag_reads_the_same_from_its_etcd_environment_variable() {
    let listed: Vec<String> = help()
        .lines()
        .filter_map(|l| l.strip_prefix("  --"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .filter(|f| f != "config-file" && f != "version")
        .collect();
    let covered: Vec<String> = EVERY_FLAG.iter().map(|(f, _, _)| f.to_string()).collect();
    assert_eq!(
        listed, covered,
        "the table above covers every flag of --help, in order"
    );

    for (flag, value, extra) in EVERY_FLAG {
        let on_command_line = format!("--{flag}={value}");
        let mut args: Vec<&str> = extra.to_vec();
        let baseline = cfg(&args);
        args.push(&on_command_line);
        let from_flag = cfg(&args);
        let key = format!("ETCD_{}", flag.to_uppercase().replace('-', "_"));
        let (from_env, messages) =
            run_with(extra, &[(&key, value)]).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        assert_eq!(
            from_env, from_flag,
            "{key}={value} acts as --{flag}={value}"
        );
        assert_ne!(
            from_flag, baseline,
            "--{flag}={value} changes the configuration"
        );
        assert!(from_env.is_set(flag));
        let used = format!("recognized and used environment variable {key}={value}");
        assert!(
            messages
                .iter()
                .any(|m| m.text == used && m.level == MessageLevel::Info),
            "{messages:?}"
        );
    }
}

#[test]
fn a_flag_and_its_environment_variable_together_are_fatal_with_etcds_message() {
    let e = run_with(&["--name", "a"], &[("ETCD_NAME", "b")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
    );
    assert_eq!(e.exit_code(), 1);
    // Even an empty variable conflicts, as in etcd.
    assert!(run_with(&["--name", "a"], &[("ETCD_NAME", "")]).is_err());
}

#[test]
fn unknown_etcd_variables_draw_a_warning_and_others_are_ignored() {
    let (c, m) = run_with(
        &[],
        &[("ETCD_FOO", "1"), ("HOME", "/root"), ("ETCD_NAME", "x")],
    )
    .unwrap();
    assert_eq!(c.name, "x");
    assert!(m.contains(&Message {
        level: MessageLevel::Warn,
        text: "unrecognized environment variable ETCD_FOO=1".into()
    }));
    assert!(
        m.iter()
            .any(|m| m.text == "recognized and used environment variable ETCD_NAME=x")
    );
    assert!(!texts(&m).iter().any(|t| t.contains("HOME")));
    // An empty variable is not used.
    let (c, _) = run_with(&[], &[("ETCD_SNAPSHOT_COUNT", "")]).unwrap();
    assert_eq!(c.snapshot_count, 100_000);
    // A bad value names the variable.
    let e = run_with(&[], &[("ETCD_SNAPSHOT_COUNT", "many")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "error verifying flags, invalid value \"many\" for ETCD_SNAPSHOT_COUNT: parse error. See 'etcd --help'."
    );
}

#[test]
fn command_line_errors_use_go_flag_wording_and_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--no-such-flag"],
            "flag provided but not defined: -no-such-flag",
        ),
        (&["--name"], "flag needs an argument: -name"),
        (&["---name=x"], "bad flag syntax: ---name=x"),
        (
            &["--snapshot-count=-1"],
            "invalid value \"-1\" for flag -snapshot-count: parse error",
        ),
        (
            &["--pre-vote=yes"],
            "invalid boolean value \"yes\" for -pre-vote: parse error",
        ),
        (
            &["--backend-batch-interval", "10"],
            "invalid value \"10\" for flag -backend-batch-interval: parse error",
        ),
        (
            &["--max-concurrent-streams=4294967296"],
            "invalid value \"4294967296\" for flag -max-concurrent-streams: strconv.ParseUint: parsing \"4294967296\": value out of range",
        ),
        (
            &["--listen-client-urls=ftp://1.2.3.4:1"],
            "invalid value \"ftp://1.2.3.4:1\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: ftp://1.2.3.4:1",
        ),
        (
            &["--initial-cluster-state=maybe"],
            "invalid value \"maybe\" for flag -initial-cluster-state: invalid value (valid values: new, existing)",
        ),
    ];
    for (args, reason) in cases {
        let e = err(args);
        assert_eq!(
            e.to_string(),
            format!("error verifying flags, {reason}. See 'etcd --help'.")
        );
        assert_eq!(e.exit_code(), 2, "{args:?}");
    }
    // What Go's flag parsing leaves over is refused by etcd with exit code 1.
    let e = err(&["--pre-vote", "false"]);
    assert_eq!(e.reason(), "'false' is not a valid flag");
    assert_eq!(e.exit_code(), 1);
    assert_eq!(
        err(&["--", "--name=x"]).reason(),
        "'--name=x' is not a valid flag"
    );
}

#[test]
fn booleans_stand_alone_or_take_a_value_with_one_or_two_dashes() {
    assert!(cfg(&["--pre-vote"]).pre_vote);
    assert!(cfg(&["-pre-vote"]).pre_vote);
    assert!(cfg(&["--pre-vote=true"]).pre_vote);
    assert!(cfg(&["--pre-vote=1"]).pre_vote);
    assert!(!cfg(&["--strict-reconfig-check=false"]).strict_reconfig_check);
    assert!(!cfg(&["-strict-reconfig-check=F"]).strict_reconfig_check);
    // A later flag wins, as in Go.
    assert!(!cfg(&["--pre-vote", "--pre-vote=false"]).pre_vote);
    // Values may follow with or without '=', even when they start with '-'.
    assert_eq!(cfg(&["-name", "x"]).name, "x");
    assert_eq!(cfg(&["--name=-x"]).name, "-x");
    // etcd 2's flags are accepted and ignored with a warning.
    let (_, m) = run_with(&["--force", "-v"], &[]).unwrap();
    assert!(texts(&m).contains(&"flag \"-force\" is no longer supported - ignoring."));
    assert!(texts(&m).contains(&"flag \"-v\" is no longer supported - ignoring."));
}

#[test]
fn durations_and_sizes_are_read_as_etcd_reads_them() {
    let c = cfg(&[
        "--backend-batch-interval",
        "250ms",
        "--grpc-keepalive-interval=1h30m",
        "--grpc-keepalive-timeout=0",
        "--experimental-corrupt-check-time=1.5s",
        "--quota-backend-bytes=8589934592",
        "--max-request-bytes=0x200000",
    ]);
    assert_eq!(c.backend_batch_interval, ms(250));
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(5400));
    assert_eq!(c.grpc_keepalive_timeout, Duration::ZERO);
    assert_eq!(c.experimental_corrupt_check_time, ms(1500));
    assert_eq!(c.quota_backend_bytes, Some(8 << 30));
    assert_eq!(c.max_request_bytes, 2 << 20);
    assert_eq!(cfg(&["--quota-backend-bytes=-1"]).quota_backend_bytes, None);
    assert_eq!(
        cfg(&["--backend-batch-limit=0"]).backend_batch_limit,
        10_000
    );
    assert_eq!(
        cfg(&["--experimental-compaction-batch-limit=0"]).experimental_compaction_batch_limit,
        1000
    );
    let (c, m) = run_with(&["--experimental-watch-progress-notify-interval=1ms"], &[]).unwrap();
    assert_eq!(c.experimental_watch_progress_notify_interval, ms(100));
    assert_eq!(m.last().unwrap().level, MessageLevel::Warn);
    let (c, m) = run_with(&["--bcrypt-cost=40"], &[]).unwrap();
    assert_eq!(c.bcrypt_cost, 10);
    assert!(texts(&m).iter().any(|t| t.contains("--bcrypt-cost 40")));
}

#[test]
fn auto_compaction_retention_is_hours_a_duration_or_revisions() {
    let p = |args: &[&str]| cfg(args).auto_compaction_retention;
    assert_eq!(
        p(&["--auto-compaction-retention=1"]),
        CompactionRetention::Period(Duration::from_secs(3600))
    );
    assert_eq!(
        p(&["--auto-compaction-retention=5m"]),
        CompactionRetention::Period(Duration::from_secs(300))
    );
    assert_eq!(
        p(&["--auto-compaction-retention=0"]),
        CompactionRetention::Off
    );
    assert_eq!(
        p(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000"
        ]),
        CompactionRetention::Revisions(1000)
    );
    assert_eq!(
        err(&["--auto-compaction-retention=soon"]).reason(),
        "--auto-compaction-retention \"soon\" is invalid: time: invalid duration \"soon\""
    );
    assert_eq!(
        err(&["--auto-compaction-mode=daily"]).reason(),
        "unknown auto-compaction-mode \"daily\""
    );
}

#[test]
fn invalid_combinations_are_refused_with_etcds_messages() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--heartbeat-interval=300"],
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
        ),
        (
            &["--election-timeout=60000"],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            &["--heartbeat-interval=0"],
            "--heartbeat-interval must be >0 (set to 0ms)",
        ),
        (
            &["--listen-client-urls=http://10.0.0.1:2379"],
            "--advertise-client-urls is required when --listen-client-urls is set explicitly",
        ),
        (
            &["--listen-peer-urls=http://example.com:2380"],
            "expected IP in URL for binding (http://example.com:2380)",
        ),
        (
            &["--advertise-client-urls=http://:2379"],
            "--advertise-client-urls \"http://:2379\" must be \"host:port\" (unexpected empty host (http://:2379))",
        ),
        (
            &[
                "--discovery=https://d/x",
                "--initial-cluster=default=http://localhost:2380",
            ],
            "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"",
        ),
        (
            &["--experimental-enable-lease-checkpoint-persist"],
            "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint",
        ),
        (&["--logger=syslog"], "unknown logger option \"syslog\""),
        (
            &["--log-outputs=stderr,stdout"],
            "--logger=capnslog supports only 1 value in '--log-outputs', got [\"stderr\" \"stdout\"]",
        ),
        (
            &["--logger=zap", "--log-outputs=default,stderr"],
            "multi logoutput for \"default\" is not supported yet",
        ),
        (
            &["--log-level=loud"],
            "unknown level \"loud\" for --log-level (only supports debug, info, warn, error, dpanic, panic, fatal)",
        ),
        (
            &["--initial-cluster=a=ftp://x:1"],
            "--initial-cluster \"a=ftp://x:1\" is invalid: URL scheme must be http, https, unix, or unixs: ftp://x:1",
        ),
    ];
    for (args, reason) in cases {
        let e = err(args);
        assert_eq!(e.reason(), *reason, "{args:?}");
        assert_eq!(e.exit_code(), 1, "{args:?}");
    }
    let e = err(&["--listen-client-urls=http://10.0.0.1:2379"]);
    assert!(e.to_string().ends_with(
        "See 'etcd --help'.\nWhen listening on specific address(es), this etcd process must advertise accessible url(s) to each connected client."
    ));
    // A member that may become a v2 proxy keeps the default advertised URL.
    let c = cfg(&["--listen-client-urls=http://10.0.0.1:2379", "--proxy=on"]);
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
}

#[test]
fn the_initial_cluster_and_data_dir_follow_the_name() {
    let c = cfg(&["--name", "infra0"]);
    assert_eq!(
        c.initial_cluster,
        BTreeMap::from([("infra0".into(), strings(&["http://localhost:2380"]))])
    );
    assert_eq!(c.data_dir(), std::path::PathBuf::from("infra0.etcd"));
    let c = cfg(&[
        "--name=infra0",
        "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://10.0.0.2:2380",
    ]);
    assert_eq!(
        c.initial_cluster["infra0"],
        ["http://10.0.0.1:2380", "http://10.0.0.2:2380"]
    );
    // An initial cluster that was chosen stays as it is.
    let c = cfg(&[
        "--name=infra0",
        "--initial-cluster=infra1=http://10.0.0.9:2380",
    ]);
    assert_eq!(c.initial_cluster.keys().collect::<Vec<_>>(), ["infra1"]);
    // Discovery replaces the default initial cluster.
    assert!(
        cfg(&["--discovery-srv=example.com"])
            .initial_cluster
            .is_empty()
    );
    // A data directory that was chosen stays as it is.
    assert_eq!(
        cfg(&["--name=a", "--data-dir=/d"]).data_dir(),
        std::path::PathBuf::from("/d")
    );
    assert_eq!(
        cfg(&["--wal-dir=/w"]).wal_dir(),
        std::path::PathBuf::from("/w")
    );
}

#[test]
fn bootstrap_checks_match_the_advertised_peer_urls() {
    assert!(cfg(&[]).verify_bootstrap().is_ok());
    let c = cfg(&["--initial-advertise-peer-urls=http://10.0.0.1:2380"]);
    assert_eq!(
        c.verify_bootstrap().unwrap_err().to_string(),
        "--initial-cluster has default=http://localhost:2380 but missing from --initial-advertise-peer-urls=http://10.0.0.1:2380"
    );
    let c = cfg(&["--initial-cluster=default=http://10.0.0.1:2380,other=http://10.0.0.1:2380"]);
    assert_eq!(
        c.verify_bootstrap().unwrap_err().to_string(),
        "initial cluster default=http://10.0.0.1:2380,other=http://10.0.0.1:2380 has duplicate url"
    );
    let c = cfg(&[
        "--initial-advertise-peer-urls=http://10.0.0.1:2380,http://localhost:2380",
        "--initial-cluster=default=http://localhost:2380",
    ]);
    assert_eq!(
        c.verify_bootstrap().unwrap_err().to_string(),
        "--initial-advertise-peer-urls has http://10.0.0.1:2380 but missing from --initial-cluster=default=http://10.0.0.1:2380,default=http://localhost:2380"
    );
}

fn write_file(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

const FILE: &str = r#"
name: 'infra1'
data-dir: /var/lib/etcd
snapshot-count: 10000
heartbeat-interval: 50
election-timeout: 500
quota-backend-bytes: 0
backend-batch-interval: 20000000
listen-peer-urls: http://10.0.0.1:2380
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379
initial-advertise-peer-urls: http://10.0.0.1:2380
advertise-client-urls: http://10.0.0.1:2379
initial-cluster: infra1=http://10.0.0.1:2380
initial-cluster-state: existing
auto-compaction-retention: 1
experimental-watch-progress-notify-interval: 5000000000
log-outputs: [stderr]
cipher-suites:
  - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
pre-vote: true
client-transport-security:
  cert-file: /etc/ssl/server.crt
  key-file: /etc/ssl/server.key
  client-cert-auth: true
  trusted-ca-file: /etc/ssl/ca.crt
peer-transport-security:
  auto-tls: true
proxy: 'off'
proxy-dial-timeout: 2000
unknown-key: 1
"#;

#[test]
fn a_configuration_file_replaces_every_flag_and_variable() {
    let f = write_file(FILE);
    let path = f.path().to_str().unwrap();
    let (c, m) = run_with(
        &[
            "--config-file",
            path,
            "--name=ignored",
            "--snapshot-count=1",
        ],
        &[("ETCD_NAME", "ignored"), ("ETCD_FOO", "1")],
    )
    .unwrap();
    assert_eq!(c.name, "infra1");
    assert_eq!(c.data_dir(), std::path::PathBuf::from("/var/lib/etcd"));
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(
        (c.heartbeat_interval, c.election_timeout),
        (ms(50), ms(500))
    );
    assert_eq!(c.quota_backend_bytes, Some(2 << 30));
    assert_eq!(c.backend_batch_interval, ms(20));
    assert_eq!(
        c.listen_client_urls,
        ["http://10.0.0.1:2379", "http://127.0.0.1:2379"]
    );
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(
        c.auto_compaction_retention,
        CompactionRetention::Period(Duration::from_secs(3600))
    );
    assert_eq!(
        c.experimental_watch_progress_notify_interval,
        Duration::from_secs(5)
    );
    assert_eq!(c.log_outputs, ["stderr"]);
    assert_eq!(c.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
    assert!(c.pre_vote);
    assert_eq!(
        c.client_tls.cert_file.as_deref(),
        Some(std::path::Path::new("/etc/ssl/server.crt"))
    );
    assert_eq!(
        c.client_tls.key_file.as_deref(),
        Some(std::path::Path::new("/etc/ssl/server.key"))
    );
    assert_eq!(
        c.client_tls.trusted_ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ssl/ca.crt"))
    );
    assert!(c.client_tls.client_cert_auth && !c.client_tls.auto_tls);
    assert!(c.peer_tls.auto_tls && c.peer_tls.is_empty());
    assert_eq!(c.proxy_dial_timeout, ms(2000));
    // etcd 3.4's file leaves the gateway off unless it says otherwise.
    assert!(!c.enable_grpc_gateway);
    assert_eq!(c.config_file.as_deref(), Some(f.path()));
    assert!(texts(&m)[0].starts_with("Loading server configuration from "));
    assert!(
        texts(&m)
            .contains(&"unrecognized key \"unknown-key\" in the configuration file; ignoring it")
    );
    assert!(!texts(&m).iter().any(|t| t.contains("ETCD_")), "{m:?}");
    assert_eq!(
        c.unhonoured_flags(),
        [
            "cert-file",
            "key-file",
            "client-cert-auth",
            "trusted-ca-file",
            "peer-auto-tls",
            "cipher-suites",
            "proxy",
            "proxy-dial-timeout",
        ]
    );

    // ETCD_CONFIG_FILE names the file too.
    let (c, _) = run_with(&[], &[("ETCD_CONFIG_FILE", path)]).unwrap();
    assert_eq!(c.name, "infra1");
}

#[test]
fn a_configuration_file_is_checked_like_the_flags() {
    let bad = |text: &str| {
        let f = write_file(text);
        run_with(&["--config-file", f.path().to_str().unwrap()], &[])
            .unwrap_err()
            .reason()
            .to_string()
    };
    assert_eq!(
        bad("heartbeat-interval: 500\n"),
        "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[500ms]"
    );
    assert_eq!(
        bad("initial-cluster-state: maybe\n"),
        "unexpected clusterState \"maybe\""
    );
    assert!(bad("listen-client-urls: localhost:2379\n").ends_with(
        "unexpected error setting up listen-client-urls: URL scheme must be http, https, unix, or unixs: localhost:2379"
    ));
    assert!(
        bad("snapshot-count: lots\n")
            .ends_with("\"snapshot-count\" must be a non-negative integer")
    );
    assert!(bad("client-transport-security:\n  cert: x\n").contains("has no key \"cert\""));
    assert!(bad("name: [a\n").contains("invalid YAML"));
    let missing = run_with(&["--config-file", "/nonexistent/cairn.yaml"], &[]).unwrap_err();
    assert!(
        missing
            .reason()
            .starts_with("cannot read the configuration file /nonexistent/cairn.yaml")
    );
    // Durations may also be written as Go durations; URL lists keep their
    // default when empty; booleans may be YAML 1.1 words.
    let f = write_file(
        "backend-batch-interval: 1s\nlisten-client-urls: ''\nenable-grpc-gateway: yes\n",
    );
    let c = cfg(&["--config-file", f.path().to_str().unwrap()]);
    assert_eq!(c.backend_batch_interval, Duration::from_secs(1));
    assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
    assert!(c.enable_grpc_gateway);
}

#[test]
fn flags_set_but_not_yet_honoured_are_listed_for_a_warning() {
    let c = cfg(&[
        "--name=m",
        "--cert-file=c.pem",
        "--key-file=k.pem",
        "--peer-auto-tls",
        "--proxy=on",
        "--proxy-dial-timeout=10",
        "--snapshot-count=5",
        "--log-level=warn",
        "--enable-v2=false",
    ]);
    assert_eq!(
        c.unhonoured_flags(),
        [
            "enable-v2",
            "cert-file",
            "key-file",
            "peer-auto-tls",
            "proxy",
            "proxy-dial-timeout"
        ]
    );
    assert!(c.is_set("snapshot-count") && !c.is_set("max-wals"));
    let (c, _) = run_with(&[], &[("ETCD_AUTO_TLS", "true")]).unwrap();
    assert_eq!(c.unhonoured_flags(), ["auto-tls"]);
}

fn cairn(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn the_binary_prints_its_version_and_help_and_exits_0() {
    let out = cairn(&["--version"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        format!("cairn Version: {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(lines[1], "etcd API Version: 3.4.23");
    assert!(lines[2].starts_with("Git SHA: "));
    assert!(lines[3].starts_with("Rust Version: "));
    assert!(lines[4].starts_with("OS/Arch: linux/"), "{}", lines[4]);

    for flag in ["-h", "--help", "-help"] {
        let out = cairn(&[flag], &[]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        for section in [
            "Member:",
            "Clustering:",
            "Security:",
            "Auth:",
            "Profiling and Monitoring:",
            "Logging:",
            "Experimental feature:",
            "Unsafe feature:",
            "TO BE DEPRECATED:",
        ] {
            assert!(
                text.contains(&format!("\n{section}\n")),
                "{section} in --help"
            );
        }
        assert!(text.contains("  --name 'default'\n"));
        assert!(text.contains("  --data-dir '${name}.etcd'\n"));
        assert!(text.contains("  --snapshot-count 100000\n"));
    }
}

#[test]
fn the_binary_exits_like_etcd_on_bad_flags() {
    let out = cairn(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error verifying flags, flag provided but not defined: -bogus. See 'etcd --help'."
    );
    let out = cairn(&["--name=a"], &[("ETCD_NAME", "b")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("conflicting environment variable \"ETCD_NAME\"")
    );
    let out = cairn(&["--election-timeout=10"], &[]);
    assert_eq!(out.status.code(), Some(1));
}
