//! The table of etcd 3.4's server flags: name, value kind, default (as it
//! would be typed on the command line), help group and text. Everything else
//! — the command line, the environment, the configuration file, `--help` —
//! is driven by this table.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use super::values::{self, NumError};

/// How a flag's text is read (the Go `flag.Value` type etcd gives it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
    /// Go `uint`/`uint64`: base-0 unsigned.
    Uint,
    /// etcd's `Uint32Value`: base-10, 32 bits.
    Uint32,
    /// Go `int`/`int64`: base-0 signed.
    Int,
    /// Go `time.Duration`.
    Duration,
    /// etcd's `UniqueURLs`: comma-separated URLs, checked, sorted, deduplicated.
    Urls,
    /// `UniqueURLs` that also accepts `*` (`--cors`).
    UrlsOrStar,
    /// etcd's `StringsValue`: comma-separated, order kept.
    Strings,
    /// etcd's `UniqueStringsValue`: comma-separated, sorted, deduplicated.
    UniqueStrings,
    /// etcd's `SelectiveStringValue`: one of a fixed set.
    Choice(&'static [&'static str]),
    /// A flag of etcd 2 that etcd 3.4 still accepts and ignores with a warning.
    Ignored,
}

/// A flag's value once read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Str(String),
    Bool(bool),
    Uint(u64),
    Int(i64),
    Duration(Duration),
    List(Vec<String>),
}

impl Kind {
    /// Reads a flag's text (from the command line, the environment or a
    /// default); the error is the reason Go's flag package would give.
    pub(crate) fn parse(self, s: &str) -> Result<Value, String> {
        Ok(match self {
            Kind::Str | Kind::Ignored => Value::Str(s.to_string()),
            Kind::Bool => Value::Bool(values::parse_bool(s).ok_or("parse error")?),
            Kind::Uint => {
                Value::Uint(values::parse_uint(s, true, 64).map_err(NumError::flag_text)?)
            }
            Kind::Uint32 => Value::Uint(
                values::parse_uint(s, false, 32).map_err(|e| e.strconv_text("ParseUint", s))?,
            ),
            Kind::Int => Value::Int(values::parse_int(s).map_err(NumError::flag_text)?),
            Kind::Duration => {
                let ns = values::parse_go_duration(s).map_err(|_| "parse error")?;
                let ns = u64::try_from(ns).map_err(|_| "negative durations are not supported")?;
                Value::Duration(Duration::from_nanos(ns))
            }
            Kind::Urls => Value::List(values::parse_url_list(s, &[])?),
            Kind::UrlsOrStar => Value::List(values::parse_url_list(s, &["*"])?),
            Kind::Strings => Value::List(s.split(',').map(str::to_string).collect()),
            Kind::UniqueStrings => {
                let set: BTreeSet<&str> = s.split(',').collect();
                Value::List(set.into_iter().map(str::to_string).collect())
            }
            Kind::Choice(valid) => {
                if !valid.contains(&s) {
                    return Err(format!(
                        "invalid value (valid values: {})",
                        valid.join(", ")
                    ));
                }
                Value::Str(s.to_string())
            }
        })
    }

    /// A flag's default: like [`Kind::parse`], except that an empty default
    /// of a list is the empty list (etcd's list values start empty, while
    /// setting one to "" is an error or a list of one empty string).
    pub(crate) fn parse_default(self, s: &str) -> Result<Value, String> {
        match self {
            Kind::Urls | Kind::UrlsOrStar | Kind::Strings | Kind::UniqueStrings if s.is_empty() => {
                Ok(Value::List(Vec::new()))
            }
            _ => self.parse(s),
        }
    }

    /// A boolean flag may stand alone (`--force-new-cluster`).
    pub(crate) fn is_bool(self) -> bool {
        matches!(self, Kind::Bool | Kind::Ignored)
    }
}

/// The sections of `--help`, in etcd's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Group {
    General,
    Member,
    Clustering,
    Security,
    Auth,
    Profiling,
    Logging,
    Proxy,
    Experimental,
    Unsafe,
    Deprecated,
    /// etcd 2 flags, accepted and ignored; not listed.
    Hidden,
}

impl Group {
    pub(crate) fn title(self) -> &'static str {
        match self {
            Group::General => "General",
            Group::Member => "Member",
            Group::Clustering => "Clustering",
            Group::Security => "Security",
            Group::Auth => "Auth",
            Group::Profiling => "Profiling and Monitoring",
            Group::Logging => "Logging",
            Group::Proxy => "v2 Proxy (not served by cairn)",
            Group::Experimental => "Experimental feature",
            Group::Unsafe => "Unsafe feature",
            Group::Deprecated => "TO BE DEPRECATED",
            Group::Hidden => "",
        }
    }
}

/// One server flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlagSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default, as it would be typed on the command line.
    pub default: &'static str,
    pub group: Group,
    pub help: &'static str,
}

impl FlagSpec {
    /// `--foo-bar` ⇔ `ETCD_FOO_BAR`.
    pub(crate) fn env_key(&self) -> String {
        format!("ETCD_{}", self.name.replace('-', "_").to_ascii_uppercase())
    }
}

macro_rules! flags {
    ($( $group:ident { $( $name:literal $kind:expr, $default:literal, $help:literal; )* } )*) => {
        &[ $( $( FlagSpec {
            name: $name, kind: $kind, default: $default, group: Group::$group, help: $help,
        }, )* )* ]
    };
}

use Kind::*;

const CLUSTER_STATES: &[&str] = &["new", "existing"];
const FALLBACKS: &[&str] = &["proxy", "exit"];
const PROXY_MODES: &[&str] = &["off", "readonly", "on"];

/// Every flag etcd 3.4.23 accepts.
pub(crate) const FLAGS: &[FlagSpec] = flags! {
    General {
        "config-file" Str, "", "Path to a YAML configuration file; when given, every other flag and ETCD_* variable is ignored.";
        "version" Bool, "false", "Print the version and exit.";
    }
    Member {
        "name" Str, "default", "Human-readable name for this member.";
        "data-dir" Str, "", "Path to the data directory.";
        "wal-dir" Str, "", "Path to a dedicated WAL directory (default: <data-dir>/member/wal).";
        "snapshot-count" Uint, "100000", "Number of applied entries that triggers a raft snapshot.";
        "heartbeat-interval" Uint, "100", "Time (in milliseconds) of a heartbeat interval.";
        "election-timeout" Uint, "1000", "Time (in milliseconds) for an election to time out; at least 5 x heartbeat, at most 50000.";
        "initial-election-tick-advance" Bool, "true", "Fast-forward the initial election ticks at boot, for a faster first election.";
        "listen-peer-urls" Urls, "http://localhost:2380", "URLs to listen on for peer traffic.";
        "listen-client-urls" Urls, "http://localhost:2379", "URLs to listen on for client traffic.";
        "max-snapshots" Uint, "5", "Maximum number of snapshot files to keep (0 keeps all).";
        "max-wals" Uint, "5", "Maximum number of WAL files to keep (0 keeps all).";
        "quota-backend-bytes" Int, "0", "Raise an alarm when the backend exceeds this size (0: 2 GiB; negative: no quota).";
        "backend-batch-interval" Duration, "0s", "Longest time before a backend transaction is committed (0: 100ms).";
        "backend-batch-limit" Int, "0", "Most operations before a backend transaction is committed (0: 10000).";
        "max-txn-ops" Uint, "128", "Maximum number of operations in one transaction.";
        "max-request-bytes" Uint, "1572864", "Maximum size of a client request, in bytes.";
        "max-concurrent-streams" Uint32, "4294967295", "Maximum number of concurrent streams each client connection may open.";
        "grpc-keepalive-min-time" Duration, "5s", "Minimum time a client should wait between pings; faster pingers are disconnected.";
        "grpc-keepalive-interval" Duration, "2h", "How often the server pings an idle client connection (0 disables).";
        "grpc-keepalive-timeout" Duration, "20s", "How long to wait for a ping answer before closing the connection (0 disables).";
    }
    Clustering {
        "initial-advertise-peer-urls" Urls, "http://localhost:2380", "This member's peer URLs, as advertised to the rest of the cluster.";
        "initial-cluster" Str, "default=http://localhost:2380", "The bootstrap cluster: name=peerURL,... (follows --name when only the name is set).";
        "initial-cluster-state" Choice(CLUSTER_STATES), "new", "Initial cluster state ('new' or 'existing').";
        "initial-cluster-token" Str, "etcd-cluster", "Token of the cluster being bootstrapped; distinct tokens keep clusters apart.";
        "advertise-client-urls" Urls, "http://localhost:2379", "This member's client URLs, as advertised to clients (required when --listen-client-urls is set).";
        "discovery" Str, "", "Discovery URL used to bootstrap the cluster.";
        "discovery-fallback" Choice(FALLBACKS), "proxy", "What to do when the discovery service fails ('exit' or 'proxy').";
        "discovery-proxy" Str, "", "HTTP proxy for traffic to the discovery service.";
        "discovery-srv" Str, "", "DNS domain whose SRV records bootstrap the cluster.";
        "discovery-srv-name" Str, "", "Suffix of the DNS SRV name queried when bootstrapping.";
        "strict-reconfig-check" Bool, "true", "Reject membership changes that would cost the cluster its quorum.";
        "pre-vote" Bool, "false", "Run raft's pre-vote phase before an election.";
        "auto-compaction-retention" Str, "0", "History kept by auto compaction (0 disables): hours or a duration ('5m') when periodic, revisions when revision.";
        "auto-compaction-mode" Str, "periodic", "How to read --auto-compaction-retention: 'periodic' or 'revision'.";
        "enable-v2" Bool, "false", "Accept etcd v2 client requests.";
        "enable-grpc-gateway" Bool, "true", "Serve the JSON gateway (/v3/...) on the client URLs.";
    }
    Security {
        "cert-file" Str, "", "Path to the client server TLS certificate.";
        "key-file" Str, "", "Path to the client server TLS key.";
        "client-cert-auth" Bool, "false", "Require client certificates signed by --trusted-ca-file.";
        "client-crl-file" Str, "", "Path to the client certificate revocation list.";
        "client-cert-allowed-hostname" Str, "", "Hostname a client certificate must carry.";
        "trusted-ca-file" Str, "", "Path to the CA that signs client certificates.";
        "auto-tls" Bool, "false", "Serve clients with a generated self-signed certificate.";
        "peer-cert-file" Str, "", "Path to the peer server TLS certificate.";
        "peer-key-file" Str, "", "Path to the peer server TLS key.";
        "peer-client-cert-auth" Bool, "false", "Require peer certificates signed by --peer-trusted-ca-file.";
        "peer-trusted-ca-file" Str, "", "Path to the CA that signs peer certificates.";
        "peer-cert-allowed-cn" Str, "", "Common name a peer certificate must carry.";
        "peer-cert-allowed-hostname" Str, "", "Hostname a peer certificate must carry.";
        "peer-auto-tls" Bool, "false", "Serve peers with a generated self-signed certificate when no peer key and certificate are given.";
        "peer-crl-file" Str, "", "Path to the peer certificate revocation list.";
        "cipher-suites" Strings, "", "Comma-separated TLS cipher suites (Go names) for clients and peers (empty: the defaults).";
        "cors" UrlsOrStar, "*", "Comma-separated origins allowed for CORS (* allows all).";
        "host-whitelist" UniqueStrings, "*", "Comma-separated hostnames accepted in HTTP requests when not serving TLS (* accepts all).";
    }
    Auth {
        "auth-token" Str, "simple", "Token type and options: 'simple' or 'jwt,pub-key=...,priv-key=...,sign-method=...'.";
        "bcrypt-cost" Uint, "10", "bcrypt cost for hashing passwords (4 to 31).";
        "auth-token-ttl" Uint, "300", "Lifetime of a simple token, in seconds.";
    }
    Profiling {
        "enable-pprof" Bool, "false", "Serve runtime profiling data at <client URL>/debug/pprof/.";
        "metrics" Str, "basic", "Detail of exported metrics: 'basic' or 'extensive' (adds latency histograms).";
        "listen-metrics-urls" Urls, "", "Extra URLs serving only /metrics and /health.";
    }
    Logging {
        "logger" Str, "capnslog", "Log format: 'capnslog' (text) or 'zap' (JSON).";
        "log-outputs" UniqueStrings, "default", "Where to log: 'default', 'stderr', 'stdout', or a comma-separated list of targets.";
        "log-level" Str, "info", "Log level: debug, info, warn, error, dpanic, panic or fatal.";
    }
    Proxy {
        "proxy" Choice(PROXY_MODES), "off", "v2 proxy mode ('off', 'readonly' or 'on').";
        "proxy-failure-wait" Uint, "5000", "Time (in milliseconds) an endpoint is held in a failed state.";
        "proxy-refresh-interval" Uint, "30000", "Time (in milliseconds) between endpoint refreshes.";
        "proxy-dial-timeout" Uint, "1000", "Time (in milliseconds) for a dial to time out.";
        "proxy-write-timeout" Uint, "5000", "Time (in milliseconds) for a write to time out.";
        "proxy-read-timeout" Uint, "0", "Time (in milliseconds) for a read to time out (0: none).";
    }
    Experimental {
        "experimental-initial-corrupt-check" Bool, "false", "Check the data for corruption before serving any client or peer traffic.";
        "experimental-corrupt-check-time" Duration, "0s", "Time between cluster-wide corruption checks (0 disables).";
        "experimental-enable-v2v3" Str, "", "Serve v2 requests from the v3 store under this prefix.";
        "experimental-backend-bbolt-freelist-type" Str, "array", "Free-list type of the backend ('array' or 'map').";
        "experimental-enable-lease-checkpoint" Bool, "false", "Have the leader checkpoint lease remaining TTLs to the other members.";
        "experimental-enable-lease-checkpoint-persist" Bool, "false", "Persist lease checkpoints (needs --experimental-enable-lease-checkpoint).";
        "experimental-compaction-batch-limit" Int, "1000", "Most revisions deleted in one compaction batch (0: 1000).";
        "experimental-peer-skip-client-san-verification" Bool, "false", "Skip the SAN check of client certificates on peer connections.";
        "experimental-watch-progress-notify-interval" Duration, "10m", "Interval of watch progress notifications (0: 10m; at least 100ms).";
        "experimental-warning-apply-duration" Duration, "100ms", "Log a warning when applying a request takes longer than this.";
    }
    Unsafe {
        "force-new-cluster" Bool, "false", "Restart as a one-member cluster, dropping the other members.";
        "unsafe-no-fsync" Bool, "false", "Never fsync: fast, and loses data on a crash.";
    }
    Deprecated {
        "debug" Bool, "false", "Log at debug level; use --log-level=debug instead.";
        "log-package-levels" Str, "", "Per-package log levels (e.g. 'etcdmain=CRITICAL,etcdserver=DEBUG'); use --logger=zap instead.";
        "log-output" UniqueStrings, "default", "Former name of --log-outputs.";
    }
    Hidden {
        "cluster-active-size" Ignored, "", "";
        "cluster-remove-delay" Ignored, "", "";
        "cluster-sync-interval" Ignored, "", "";
        "config" Ignored, "", "";
        "force" Ignored, "", "";
        "max-result-buffer" Ignored, "", "";
        "max-retry-attempts" Ignored, "", "";
        "peer-heartbeat-interval" Ignored, "", "";
        "peer-election-timeout" Ignored, "", "";
        "retry-interval" Ignored, "", "";
        "snapshot" Ignored, "", "";
        "v" Ignored, "", "";
        "vv" Ignored, "", "";
    }
};

pub(crate) fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

fn spec(name: &str) -> &'static FlagSpec {
    lookup(name).unwrap_or_else(|| panic!("no flag named {name:?} in the table"))
}

/// Where the settings came from; a few of etcd's rules differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    CommandLine,
    File,
}

/// Flag values before they are turned into a [`super::Config`]: those set
/// (on the command line, by `ETCD_*`, or in the configuration file) and
/// defaults that differ from the table's.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub source: Source,
    values: HashMap<&'static str, Value>,
    set: BTreeSet<&'static str>,
}

impl Settings {
    pub(crate) fn new(source: Source) -> Self {
        Settings {
            source,
            values: HashMap::new(),
            set: BTreeSet::new(),
        }
    }

    /// Records a value given by the operator.
    pub(crate) fn set(&mut self, name: &'static str, v: Value) {
        self.values.insert(name, v);
        self.set.insert(name);
    }

    /// Replaces the default of a flag the operator did not set.
    pub(crate) fn set_default(&mut self, name: &'static str, v: Value) {
        if !self.set.contains(name) {
            self.values.insert(name, v);
        }
    }

    pub(crate) fn is_set(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    pub(crate) fn set_names(&self) -> &BTreeSet<&'static str> {
        &self.set
    }

    fn get(&self, name: &str) -> Value {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        let f = spec(name);
        // INVARIANT: every default in FLAGS parses (tested below).
        f.kind
            .parse_default(f.default)
            .unwrap_or_else(|e| panic!("default of --{name} does not parse: {e}"))
    }

    pub(crate) fn str(&self, name: &str) -> String {
        match self.get(name) {
            Value::Str(s) => s,
            v => panic!("--{name} is not a string flag: {v:?}"),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Value::Bool(b) => b,
            v => panic!("--{name} is not a boolean flag: {v:?}"),
        }
    }

    pub(crate) fn uint(&self, name: &str) -> u64 {
        match self.get(name) {
            Value::Uint(n) => n,
            v => panic!("--{name} is not an unsigned flag: {v:?}"),
        }
    }

    pub(crate) fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Value::Int(n) => n,
            v => panic!("--{name} is not an integer flag: {v:?}"),
        }
    }

    pub(crate) fn duration(&self, name: &str) -> Duration {
        match self.get(name) {
            Value::Duration(d) => d,
            v => panic!("--{name} is not a duration flag: {v:?}"),
        }
    }

    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        match self.get(name) {
            Value::List(l) => l,
            v => panic!("--{name} is not a list flag: {v:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_every_name_is_unique() {
        let mut names = BTreeSet::new();
        for f in FLAGS {
            assert!(names.insert(f.name), "--{} is listed twice", f.name);
            assert!(
                f.kind.parse_default(f.default).is_ok(),
                "default of --{}",
                f.name
            );
            assert_eq!(f.group == Group::Hidden, f.help.is_empty(), "--{}", f.name);
        }
    }

    #[test]
    fn env_keys_follow_etcds_rule() {
        assert_eq!(spec("name").env_key(), "ETCD_NAME");
        assert_eq!(
            spec("initial-advertise-peer-urls").env_key(),
            "ETCD_INITIAL_ADVERTISE_PEER_URLS"
        );
    }
}
