//! What a load run is: the workload, where it goes, how many clients send
//! it over how many connections, and when it ends — independent of the
//! command line, so `compare` and other modules can build one in process.

use std::time::{Duration, Instant};

use super::keys::Keys;

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many requests (for the watch workloads: puts).
    Total(u64),
    /// After this long.
    Duration(Duration),
}

impl Stop {
    /// Whether ticket `t` (0-based) of a run started at `start` is past the end.
    pub fn reached(&self, t: u64, start: Instant) -> bool {
        match *self {
            Stop::Total(n) => t >= n,
            Stop::Duration(d) => start.elapsed() >= d,
        }
    }
}

/// The workloads, with their own parameters.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Put of one key per request.
    Put,
    /// Range per request: of `key` (to `end` when set), or when `key` is
    /// `None` of one key of the key space.
    Range {
        key: Option<Vec<u8>>,
        end: Option<Vec<u8>>,
        serializable: bool,
    },
    /// Txn of `ops` puts on distinct keys per request.
    TxnPut { ops: usize },
    /// Txn per request, either one Range (from a key of the key space to
    /// its end, at most `range_limit` keys) or one Put, `rw_ratio` reads
    /// per write.
    TxnMixed {
        rw_ratio: f64,
        range_limit: i64,
        serializable: bool,
    },
    /// `watchers` watchers over `streams` watch streams, all on the whole
    /// key space; the requests are the puts whose events fan out to every
    /// watcher. `event_latency`: record put-to-event latency (the
    /// `watch-latency` workload) instead of the puts' own.
    Watch {
        watchers: usize,
        streams: usize,
        event_latency: bool,
    },
    /// `leases` leases granted with `ttl` seconds up front, then kept alive,
    /// one keep-alive stream per client.
    LeaseKeepalive { leases: usize, ttl: i64 },
}

impl Workload {
    /// The workload's command name.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range { .. } => "range",
            Workload::TxnPut { .. } => "txn-put",
            Workload::TxnMixed { .. } => "txn-mixed",
            Workload::Watch {
                event_latency: false,
                ..
            } => "watch",
            Workload::Watch {
                event_latency: true,
                ..
            } => "watch-latency",
            Workload::LeaseKeepalive { .. } => "lease-keepalive",
        }
    }

    /// What its requests, throughput and latency are, in a line.
    pub fn measures(&self) -> &'static str {
        match self {
            Workload::Put => "Put requests; latency from send to answer",
            Workload::Range { .. } => "Range requests; latency from send to answer",
            Workload::TxnPut { .. } => "Txn requests of puts; latency from send to answer",
            Workload::TxnMixed { .. } => {
                "Txn requests, each one Range or one Put; latency from send to answer"
            }
            Workload::Watch {
                event_latency: false,
                ..
            } => "events delivered to the watchers (throughput: events/s); latency of the puts",
            Workload::Watch {
                event_latency: true,
                ..
            } => {
                "events delivered to the watchers (throughput: events/s); latency from sending \
                 a put to each watcher receiving its event"
            }
            Workload::LeaseKeepalive { .. } => {
                "keep-alive round trips on open LeaseKeepAlive streams; latency from send to answer"
            }
        }
    }
}

/// One load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub workload: Workload,
    /// `host:port` or `http://host:port`, one or more.
    pub endpoints: Vec<String>,
    /// gRPC connections, spread over the endpoints.
    pub conns: usize,
    /// Concurrent clients, spread over the connections.
    pub clients: usize,
    pub stop: Stop,
    /// Requests per second over all clients; 0 for no limit.
    pub rate: f64,
    pub keys: Keys,
    pub val_size: usize,
    /// Send everything to the leader among the endpoints.
    pub target_leader: bool,
    /// A progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
}
