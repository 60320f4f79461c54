//! The load generator: etcd v3 gRPC workloads (the vocabulary of etcd's
//! `tools/benchmark`) that run against cairn and etcd alike.
//!
//! In process, a workload is a [`LoadSpec`] given to [`run`], which returns
//! a [`Summary`]; `cairn-bench put|range|...` (see [`cli`]) and
//! `cairn-bench compare` are two callers.
//!
//! * `driver`: the client loop — per-client tallies, one atomic ticket
//!   counter, the rate limit, merged histograms;
//! * `kv`: put, range, txn-put, txn-mixed; `watch`: watch and watch-latency;
//!   `lease`: lease-keepalive;
//! * `keys`: key and value generation; `conn`: endpoints, connections and
//!   the leader; `transport`: the HTTP/2 connections under the gRPC
//!   clients; `summary`: the report and its JSON; `progress`: the bar.

pub mod cli;
mod conn;
mod driver;
mod keys;
mod kv;
mod lease;
mod progress;
mod spec;
mod summary;
mod transport;
mod watch;

pub use cli::LoadCommand;
pub use spec::{LoadSpec, Stop, Workload};
pub use summary::Summary;

/// Runs one workload: connects (an endpoint nobody listens on is an error),
/// sets up (watchers, leases), then sends load to the end of `spec.stop`.
/// Failing requests are counted by message in the summary, never fatal.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<Summary> {
    anyhow::ensure!(spec.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(!spec.endpoints.is_empty(), "no endpoints");
    let mut endpoints = spec
        .endpoints
        .iter()
        .map(|e| conn::host_port(e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if spec.target_leader {
        endpoints = vec![conn::leader(&endpoints).await?];
    }
    let conns = conn::connections(&endpoints, spec.conns).await?;
    let (merged, duration) = match &spec.workload {
        w @ (Workload::Put
        | Workload::Range { .. }
        | Workload::TxnPut { .. }
        | Workload::TxnMixed { .. }) => {
            kv::check(w, &spec.keys)?;
            let value = keys::value(spec.val_size);
            let clients = (0..spec.clients)
                .map(|n| kv::KvLoad::new(n, conns[n % conns.len()].clone(), spec.keys, &value, w))
                .collect();
            let label = spec.progress.then_some(w.name());
            driver::drive(clients, spec.stop, spec.rate, label).await?
        }
        Workload::Watch {
            watchers,
            streams,
            event_latency,
        } => watch::run(spec, &conns, *watchers, *streams, *event_latency).await?,
        Workload::LeaseKeepalive { leases, ttl } => lease::run(spec, &conns, *leases, *ttl).await?,
    };
    Ok(Summary {
        workload: spec.workload.name().to_string(),
        endpoints,
        clients: spec.clients,
        conns: spec.conns,
        requests: merged.ok,
        errors: merged.error_count(),
        duration,
        latency: merged.latency,
        error_counts: merged.errors.into_iter().collect(),
        measures: spec.workload.measures(),
    })
}
