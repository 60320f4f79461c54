//! The load subcommands' flags (etcd's `tools/benchmark` vocabulary, given
//! after the subcommand's name), their translation into a [`LoadSpec`], and
//! the entry point that runs one and prints its report.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::keys::Keys;
use super::spec::{LoadSpec, Stop, Workload};

/// Flags every workload takes.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Endpoints, comma-separated, `host:port` or `http://host:port`
    /// [default: 127.0.0.1:2379].
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Option<Vec<String>>,
    /// gRPC connections (spread over the endpoints).
    #[arg(long, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients (spread over the connections).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send [default: 10000; watch: puts, 1000 for
    /// watch-latency].
    #[arg(long, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// Send for this long instead of a total (`30`, `30s`, `500ms`, `2m`).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests per second over all clients, 0 for no limit [default: 0;
    /// watch-latency: 100 puts/s].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Key size in bytes (keys are zero-padded decimal numbers).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys 0, 1, 2, ... in turn instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Find the leader among the endpoints (Maintenance.Status) and send
    /// everything there.
    #[arg(long)]
    pub target_leader: bool,
    /// Print one JSON object on stdout instead of the text report.
    #[arg(long)]
    pub json: bool,
}

/// Linearizable or serializable reads.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    L,
    S,
}

#[derive(Args, Clone, Debug)]
pub struct PutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
pub struct RangeArgs {
    /// The key to read [default: one key of the key space per request].
    pub key: Option<String>,
    /// Range end (exclusive): read [KEY, END).
    pub end: Option<String>,
    /// Read every key with the prefix KEY.
    #[arg(long, requires = "key", conflicts_with = "end")]
    pub prefix: bool,
    /// l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
pub struct TxnPutArgs {
    /// Puts per txn (on distinct keys).
    #[arg(long, default_value_t = 1)]
    pub txn_ops: usize,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
pub struct TxnMixedArgs {
    /// Reads per write.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Keys a read returns at most (it reads from a key to the key space's
    /// end).
    #[arg(long, default_value_t = 50)]
    pub range_limit: i64,
    /// l (linearizable) or s (serializable) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// Watchers in all, each on the whole key space.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Puts (same as --total).
    #[arg(long, conflicts_with_all = ["total", "duration"])]
    pub put_total: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Clone, Debug)]
pub struct LeaseArgs {
    /// Leases kept alive [default: one per client].
    #[arg(long)]
    pub leases: Option<usize>,
    /// TTL the leases are granted with, in seconds.
    #[arg(long, default_value_t = 100)]
    pub lease_ttl: i64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The load workloads, as subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum LoadCommand {
    /// Load: Put requests.
    Put(PutArgs),
    /// Load: Range requests of one key, of [KEY, END) or of a prefix.
    Range(RangeArgs),
    /// Load: Txn requests of --txn-ops puts.
    TxnPut(TxnPutArgs),
    /// Load: Txn requests, one Range or one Put each (--rw-ratio).
    TxnMixed(TxnMixedArgs),
    /// Load: events per second delivered to N watchers as puts fan out.
    Watch(WatchArgs),
    /// Load: latency from a put to each watcher's event.
    WatchLatency(WatchArgs),
    /// Load: keep-alive round trips on LeaseKeepAlive streams.
    LeaseKeepalive(LeaseArgs),
}

/// `30`, `30s`, `1.5s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

impl LoadCommand {
    pub fn common(&self) -> &CommonArgs {
        match self {
            LoadCommand::Put(a) => &a.common,
            LoadCommand::Range(a) => &a.common,
            LoadCommand::TxnPut(a) => &a.common,
            LoadCommand::TxnMixed(a) => &a.common,
            LoadCommand::Watch(a) | LoadCommand::WatchLatency(a) => &a.common,
            LoadCommand::LeaseKeepalive(a) => &a.common,
        }
    }

    /// The run these flags describe.
    pub fn spec(&self) -> anyhow::Result<LoadSpec> {
        let c = self.common();
        let latency = matches!(self, LoadCommand::WatchLatency(_));
        let workload = match self {
            LoadCommand::Put(_) => Workload::Put,
            LoadCommand::Range(a) => {
                let key = a.key.as_ref().map(|k| k.as_bytes().to_vec());
                let end = match (&key, &a.end) {
                    (Some(k), _) if a.prefix => Some(super::keys::prefix_end(k)),
                    (_, Some(e)) => Some(e.as_bytes().to_vec()),
                    _ => None,
                };
                Workload::Range {
                    key,
                    end,
                    serializable: a.consistency == Consistency::S,
                }
            }
            LoadCommand::TxnPut(a) => Workload::TxnPut { ops: a.txn_ops },
            LoadCommand::TxnMixed(a) => Workload::TxnMixed {
                rw_ratio: a.rw_ratio,
                range_limit: a.range_limit,
                serializable: a.consistency == Consistency::S,
            },
            LoadCommand::Watch(a) | LoadCommand::WatchLatency(a) => Workload::Watch {
                watchers: a.watchers,
                streams: a.streams,
                event_latency: latency,
            },
            LoadCommand::LeaseKeepalive(a) => Workload::LeaseKeepalive {
                leases: a.leases.unwrap_or(c.clients),
                ttl: a.lease_ttl,
            },
        };
        let put_total = match self {
            LoadCommand::Watch(a) | LoadCommand::WatchLatency(a) => a.put_total,
            _ => None,
        };
        let stop = match (c.duration, put_total.or(c.total)) {
            (Some(d), _) => Stop::Duration(d),
            (None, Some(n)) => Stop::Total(n),
            (None, None) if latency => Stop::Total(1000),
            (None, None) => Stop::Total(10_000),
        };
        let rate = c.rate.unwrap_or(if latency { 100.0 } else { 0.0 });
        anyhow::ensure!(rate >= 0.0 && rate.is_finite(), "--rate must be 0 or more");
        Ok(LoadSpec {
            workload,
            endpoints: c
                .endpoints
                .clone()
                .unwrap_or_else(|| vec!["127.0.0.1:2379".to_string()]),
            conns: c.conns,
            clients: c.clients,
            stop,
            rate,
            keys: Keys::new(c.key_size, c.key_space_size, c.sequential_keys)?,
            val_size: c.val_size,
            target_leader: c.target_leader,
            progress: true,
        })
    }
}

/// `cairn-bench <workload> ...`: runs it and prints the report (or JSON).
pub fn main(cmd: LoadCommand) -> anyhow::Result<()> {
    let spec = cmd.spec()?;
    let summary = runtime()?.block_on(super::run(&spec))?;
    if cmd.common().json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

/// A multi-threaded runtime with a worker per core, without tokio's LIFO
/// slot: clients woken together then all queue their requests before their
/// connection's task writes them, in one write (as in the server, see
/// `.cargo/config.toml`).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    #[cfg(tokio_unstable)]
    rt.disable_lifo_slot();
    Ok(rt.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LoadCommand,
    }

    fn spec(args: &[&str]) -> LoadSpec {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().cmd.spec().unwrap()
    }

    #[test]
    fn durations_take_etcd_style_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
    }

    #[test]
    fn defaults_follow_etcds_benchmark_tool() {
        let s = spec(&["put"]);
        assert!(matches!(s.stop, Stop::Total(10_000)));
        assert_eq!((s.conns, s.clients, s.keys.size, s.val_size), (1, 1, 8, 8));
        assert_eq!(s.endpoints, ["127.0.0.1:2379"]);
        let w = spec(&["watch-latency"]);
        assert!(matches!(w.stop, Stop::Total(1000)));
        assert_eq!(w.rate, 100.0);
    }

    #[test]
    fn a_prefix_range_ends_after_the_prefix() {
        let s = spec(&["range", "foo", "--prefix", "--consistency", "s"]);
        match s.workload {
            Workload::Range {
                key,
                end,
                serializable,
            } => {
                assert_eq!(key.as_deref(), Some(&b"foo"[..]));
                assert_eq!(end.as_deref(), Some(&b"fop"[..]));
                assert!(serializable);
            }
            w => panic!("{w:?}"),
        }
    }
}
