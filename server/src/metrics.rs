//! Prometheus metrics, under etcd's names, rendered in the text format.
//!
//! Counters the services bump live here; gauges and histograms are read
//! from the raft node, the WAL and the store when scraped.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::server::EtcdServer;
use crate::services::maintenance::CLUSTER_VERSION;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
    pub fn sub(&self, n: i64) {
        self.0.fetch_sub(n, Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// A latency histogram under fixed bounds (seconds, or whatever unit the
/// bounds are in: `observe` takes the value in that unit).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, and one past every bound.
    counts: Vec<AtomicU64>,
    /// The sum, in millionths of the unit.
    sum_micro: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::default()).collect(),
            sum_micro: AtomicU64::default(),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    /// Observes the seconds from now until the guard is dropped.
    pub fn time(&self) -> Timer<'_> {
        Timer(self, std::time::Instant::now())
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let sum = self.sum_micro.load(Relaxed) as f64 / 1e6;
        histogram(out, name, help, self.bounds, &counts, sum);
    }
}

/// See [`Histogram::time`].
pub struct Timer<'a>(&'a Histogram, std::time::Instant);

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

/// etcd's buckets (Prometheus's exponential buckets: start, ×2, count).
const DEFRAG_BUCKETS: [f64; 13] = exponential(0.1);
const SNAPSHOT_BUCKETS: [f64; 17] = exponential(0.01);
const HASH_BUCKETS: [f64; 15] = exponential(0.01);

pub(crate) const fn exponential<const N: usize>(start: f64) -> [f64; N] {
    let mut b = [0.0; N];
    let mut i = 0;
    let mut v = start;
    while i < N {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
}

#[derive(Debug)]
pub struct Metrics {
    pub range_total: Counter,
    pub put_total: Counter,
    pub delete_total: Counter,
    pub txn_total: Counter,
    /// Keys' and values' bytes of the puts seen.
    pub put_size: Counter,
    pub watchers: Gauge,
    pub watch_streams: Gauge,
    pub health_success: Counter,
    pub health_failures: Counter,
    pub defrag_inflight: Gauge,
    pub defrag_seconds: Histogram,
    pub snapshot_seconds: Histogram,
    pub hash_seconds: Histogram,
    pub hash_rev_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            range_total: Counter::default(),
            put_total: Counter::default(),
            delete_total: Counter::default(),
            txn_total: Counter::default(),
            put_size: Counter::default(),
            watchers: Gauge::default(),
            watch_streams: Gauge::default(),
            health_success: Counter::default(),
            health_failures: Counter::default(),
            defrag_inflight: Gauge::default(),
            defrag_seconds: Histogram::new(&DEFRAG_BUCKETS),
            snapshot_seconds: Histogram::new(&SNAPSHOT_BUCKETS),
            hash_seconds: Histogram::new(&HASH_BUCKETS),
            hash_rev_seconds: Histogram::new(&HASH_BUCKETS),
        }
    }
}

fn line(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// `f` as Go's `strconv.FormatFloat(f, 'g', -1, 64)` writes it, as etcd's
/// bucket bounds are: the shortest digits, in exponent form (two exponent
/// digits at least) when the exponent is below -4 or 6 and above.
fn go_float(f: f64) -> String {
    if f == 0.0 || !f.is_finite() {
        return f.to_string();
    }
    let e = format!("{f:e}");
    let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    if (-4..6).contains(&exp) {
        return f.to_string();
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// A histogram from per-bucket counts (the last count, if any, is past every
/// bound).
fn histogram(out: &mut String, name: &str, help: &str, bounds: &[f64], counts: &[u64], sum: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cum = 0u64;
    for (i, &b) in bounds.iter().enumerate() {
        cum += counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", go_float(b));
    }
    let total: u64 = counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {total}");
}

/// Everything, as Prometheus text.
pub fn render(s: &EtcdServer) -> String {
    let m = &s.metrics;
    let st = s.node.status();
    let nm = s.node.metrics();
    let store = s.store();
    let stats = store.stats();
    let mut o = String::new();
    line(
        &mut o,
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        u8::from(st.leader != 0),
    );
    line(
        &mut o,
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        u8::from(st.leader == s.member_id),
    );
    line(
        &mut o,
        "etcd_server_is_learner",
        "gauge",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        u8::from(st.is_learner),
    );
    line(
        &mut o,
        "etcd_server_leader_changes_seen_total",
        "counter",
        "The number of leader changes seen.",
        nm.leader_changes,
    );
    line(
        &mut o,
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        nm.proposals_committed,
    );
    line(
        &mut o,
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        nm.proposals_applied,
    );
    line(
        &mut o,
        "etcd_server_proposals_pending",
        "gauge",
        "The current number of pending proposals to commit.",
        nm.proposals_pending,
    );
    line(
        &mut o,
        "etcd_server_proposals_failed_total",
        "counter",
        "The total number of failed proposals seen.",
        nm.proposals_failed,
    );
    line(
        &mut o,
        "etcd_server_health_success",
        "counter",
        "The total number of successful health checks",
        m.health_success.get(),
    );
    line(
        &mut o,
        "etcd_server_health_failures",
        "counter",
        "The total number of failed health checks",
        m.health_failures.get(),
    );
    line(
        &mut o,
        "etcd_server_quota_backend_bytes",
        "gauge",
        "Current backend storage quota size in bytes.",
        s.limits.quota_bytes,
    );
    let _ = writeln!(
        o,
        "# HELP etcd_server_version Which version is running. 1 for 'server_version' label with current version."
    );
    let _ = writeln!(o, "# TYPE etcd_server_version gauge");
    let _ = writeln!(
        o,
        "etcd_server_version{{server_version=\"{}\"}} 1",
        crate::services::maintenance::ETCD_VERSION
    );
    let _ = writeln!(
        o,
        "# HELP etcd_server_id Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."
    );
    let _ = writeln!(o, "# TYPE etcd_server_id gauge");
    let _ = writeln!(o, "etcd_server_id{{server_id=\"{:x}\"}} 1", s.member_id);
    line(
        &mut o,
        "etcd_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        s.db_size().0,
    );
    line(
        &mut o,
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "gauge",
        "Total size of the underlying database logically in use in bytes.",
        stats.db.in_use_bytes,
    );
    line(
        &mut o,
        "etcd_mvcc_db_open_read_transactions",
        "gauge",
        "The number of currently open read transactions",
        stats.db.readers,
    );
    // etcd 3.4 keeps the older etcd_debugging_ names beside these (the
    // dashboards of its time read them; etcd 3.5 dropped them).
    for (op, v) in [
        ("range", m.range_total.get()),
        ("put", m.put_total.get()),
        ("delete", m.delete_total.get()),
        ("txn", m.txn_total.get()),
    ] {
        let help = format!("Total number of {op}s seen by this member.");
        for prefix in ["etcd_mvcc", "etcd_debugging_mvcc"] {
            line(&mut o, &format!("{prefix}_{op}_total"), "counter", &help, v);
        }
    }
    line(
        &mut o,
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        "gauge",
        "Total size of the underlying database physically allocated in bytes.",
        s.db_size().0,
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_total_put_size_in_bytes",
        "gauge",
        "The total size of put kv pairs seen by this member.",
        m.put_size.get(),
    );
    let ls = &s.lessor.stats;
    for (name, help, v) in [
        (
            "etcd_debugging_lease_granted_total",
            "The total number of granted leases.",
            &ls.granted,
        ),
        (
            "etcd_debugging_lease_renewed_total",
            "The number of renewed leases seen by the leader.",
            &ls.renewed,
        ),
        (
            "etcd_debugging_lease_revoked_total",
            "The total number of revoked leases.",
            &ls.revoked,
        ),
        (
            "etcd_debugging_server_lease_expired_total",
            "The total number of expired leases.",
            &ls.expired,
        ),
    ] {
        line(&mut o, name, "counter", help, v.get());
    }
    ls.ttls.render(
        &mut o,
        "etcd_debugging_lease_ttl_total",
        "Bucketed histogram of lease TTLs.",
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_current_revision",
        "gauge",
        "The current revision of store.",
        stats.revision,
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_compact_revision",
        "gauge",
        "The revision of the last compaction in store.",
        stats.compact_revision,
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_keys_total",
        "gauge",
        "Total number of keys.",
        stats.keys,
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_watcher_total",
        "gauge",
        "Total number of watchers.",
        m.watchers.get(),
    );
    line(
        &mut o,
        "etcd_debugging_mvcc_watch_stream_total",
        "gauge",
        "Total number of watch streams.",
        m.watch_streams.get(),
    );
    // The two disk-latency histograms, in etcd's buckets.
    let w = s.node.wal_metrics();
    let h = &w.fsync_latency;
    histogram(
        &mut o,
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL.",
        h.bounds,
        &h.counts,
        h.sum.as_secs_f64(),
    );
    let c = store.commit_latency();
    histogram(
        &mut o,
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend.",
        &cairn_engine::mvcc::COMMIT_BUCKETS,
        &c.counts,
        c.sum_seconds,
    );
    line(
        &mut o,
        "etcd_disk_wal_write_bytes_total",
        "gauge",
        "Total number of bytes written in WAL.",
        w.bytes_written,
    );
    line(
        &mut o,
        "etcd_disk_defrag_inflight",
        "gauge",
        "Whether or not defrag is active on the member. 1 means active, 0 means not.",
        m.defrag_inflight.get(),
    );
    m.defrag_seconds.render(
        &mut o,
        "etcd_disk_backend_defrag_duration_seconds",
        "The latency distribution of backend defragmentation.",
    );
    m.snapshot_seconds.render(
        &mut o,
        "etcd_disk_backend_snapshot_duration_seconds",
        "The latency distribution of backend snapshots.",
    );
    m.hash_seconds.render(
        &mut o,
        "etcd_mvcc_hash_duration_seconds",
        "The latency distribution of storage hash operation.",
    );
    m.hash_rev_seconds.render(
        &mut o,
        "etcd_mvcc_hash_rev_duration_seconds",
        "The latency distribution of storage hash by revision operation.",
    );
    let _ = writeln!(
        o,
        "# HELP etcd_cluster_version Which version is running. 1 for 'cluster_version' label with current cluster version\n# TYPE etcd_cluster_version gauge\netcd_cluster_version{{cluster_version=\"{CLUSTER_VERSION}\"}} 1"
    );
    peers(&mut o, s);
    crate::grpc_metrics::global().render(&mut o);
    process(&mut o);
    o
}

/// The peer transport's figures, a series per peer (ids in hex, as etcd
/// writes them).
fn peers(o: &mut String, s: &EtcdServer) {
    use cairn_raftnode::transport::PeerHealth;
    let peers = s.node.peers();
    let me = s.member_id;
    // (name, type, help, the labels and value of a peer's series)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        fn(u64, &PeerHealth) -> (String, u64),
    );
    let rows: [Row; 4] = [
        (
            "etcd_network_active_peers",
            "gauge",
            "The current number of active peer connections.",
            |me, p| {
                let labels = format!("Local=\"{me:x}\",Remote=\"{:x}\"", p.id);
                (labels, u64::from(p.active_since.is_some()))
            },
        ),
        (
            "etcd_network_peer_received_bytes_total",
            "counter",
            "The total number of bytes received from peers.",
            |_, p| (format!("From=\"{:x}\"", p.id), p.received_bytes),
        ),
        (
            "etcd_network_peer_sent_bytes_total",
            "counter",
            "The total number of bytes sent to peers.",
            |_, p| (format!("To=\"{:x}\"", p.id), p.sent_bytes),
        ),
        (
            "etcd_network_peer_sent_failures_total",
            "counter",
            "The total number of send failures from peers.",
            |_, p| (format!("To=\"{:x}\"", p.id), p.dropped),
        ),
    ];
    for (name, kind, help, series) in rows {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &peers {
            let (labels, v) = series(me, p);
            let _ = writeln!(o, "{name}{{{labels}}} {v}");
        }
    }
}

/// The process's own figures — Prometheus's `process_*` and etcd's
/// `os_fd_*` — from `/proc/self`; one that cannot be read is left out.
fn process(o: &mut String) {
    // Linux reports CPU times in USER_HZ, 100 per second on every platform.
    const TICKS: f64 = 100.0;
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let limits = read("/proc/self/limits");
    // The soft limit (the first number) of a line of /proc/self/limits;
    // `None` for "unlimited".
    let limit = |name: &str| -> Option<Option<f64>> {
        let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
        let soft = rest.split_whitespace().next()?;
        Some(soft.parse().ok())
    };
    let status = read("/proc/self/status");
    let kib = |name: &str| -> Option<f64> {
        let rest = status.lines().find_map(|l| l.strip_prefix(name))?;
        Some(rest.split_whitespace().next()?.parse::<f64>().ok()? * 1024.0)
    };
    let stat = read("/proc/self/stat");
    // Fields after the command name, from the state (field 3) on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let boot = read("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok());
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let max_fds = limit("Max open files").flatten();
    let rows: [(&str, &str, &str, Option<f64>); 9] = [
        (
            "os_fd_limit",
            "gauge",
            "The file descriptor limit.",
            max_fds,
        ),
        (
            "os_fd_used",
            "gauge",
            "The number of used file descriptors.",
            open_fds,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            field(14).zip(field(15)).map(|(u, s)| (u + s) / TICKS),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kib("VmRSS:"),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot.zip(field(22)).map(|(b, t)| b + t / TICKS),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            kib("VmSize:"),
        ),
        (
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
            limit("Max address space").map(|l| l.unwrap_or(u64::MAX as f64)),
        ),
    ];
    for (name, kind, help, value) in rows {
        if let Some(v) = value {
            line(o, name, kind, help, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_are_written_as_go_writes_them() {
        for (f, go) in [
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.001, "0.001"),
            (0.01, "0.01"),
            (163.84, "163.84"),
            (1.0, "1"),
            (524288.0, "524288"),
            (1048576.0, "1.048576e+06"),
            (8388608.0, "8.388608e+06"),
            (1e21, "1e+21"),
        ] {
            assert_eq!(go_float(f), go, "{f}");
        }
    }

    #[test]
    fn histograms_count_a_value_under_the_first_bound_not_below_it() {
        assert_eq!(HASH_BUCKETS[0], 0.01);
        assert_eq!(HASH_BUCKETS[14], 163.84);
        assert_eq!(DEFRAG_BUCKETS[12], 409.6);
        let h = Histogram::new(&DEFRAG_BUCKETS);
        for v in [0.05, 0.1, 0.1001, 500.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"409.6\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
        assert!(out.contains("x_sum 500.2501\n"), "{out}");
    }
}
