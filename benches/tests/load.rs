//! `cairn-bench`'s load workloads and `compare`, run as the real binary
//! against the real `cairn` server (one per test, on free ports, in a
//! temporary directory), checked against what the server then holds.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{
    LeaseLeasesRequest, RangeRequest, kv_client::KvClient, lease_client::LeaseClient,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::transport::Channel;

#[allow(dead_code)]
#[path = "../src/servers.rs"]
mod servers;

/// The `cairn` binary, as the workspace test run builds it.
///
/// Asked of cargo with the same selection as `cargo test --workspace` (the
/// README's and CI's test command), so that within that run it is already
/// built and this is a no-op: `cargo build -p cairn-server` alone would
/// resolve other features for shared dependencies (tokio's `process`, ...)
/// and rebuild the server's whole dependency tree. Under `cargo test -p
/// cairn-bench` the first call builds the workspace's tests once.
fn cairn_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args(["test", "--workspace", "--no-run", "--message-format=json"])
            .output()
            .expect("running cargo");
        assert!(
            out.status.success(),
            "cargo test --workspace --no-run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == "cairn"
                    && m["profile"]["test"] == false
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no cairn executable")
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A cairn member on free ports with a fresh data directory.
struct Cairn {
    _dir: tempfile::TempDir,
    server: servers::Server,
    running: Option<servers::Running>,
    endpoint: String,
}

impl Cairn {
    fn start() -> Cairn {
        let dir = tempfile::tempdir().unwrap();
        let s = servers::Server::new("cairn", cairn_bin(), dir.path(), None).unwrap();
        let (running, _, _) = rt().block_on(s.start_ready()).unwrap();
        Cairn {
            _dir: dir,
            endpoint: format!("127.0.0.1:{}", s.client),
            server: s,
            running: Some(running),
        }
    }

    /// Kills the server (as a crash would) and starts it again on the same
    /// ports and data.
    fn kill_and_restart(&mut self) {
        drop(self.running.take());
        std::thread::sleep(Duration::from_millis(500));
        let (running, _, _) = rt().block_on(self.server.start_ready()).unwrap();
        self.running = Some(running);
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.endpoint))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The keys in [from, to) with their values, and the store's revision.
    fn range(&self, from: &[u8], to: &[u8]) -> (Vec<KeyValue>, i64) {
        rt().block_on(async {
            let req = RangeRequest {
                key: from.to_vec(),
                range_end: to.to_vec(),
                ..Default::default()
            };
            let r = KvClient::new(self.channel().await)
                .range(req)
                .await
                .unwrap()
                .into_inner();
            (r.kvs, r.header.unwrap().revision)
        })
    }

    fn revision(&self) -> i64 {
        self.range(b"x", b"").1
    }
}

/// Runs `cairn-bench` to completion; its exit status, stdout and stderr.
fn bench_raw(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(args)
        .output()
        .expect("running cairn-bench");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a workload (its arguments separated by spaces) with `--json`
/// against `c`; its JSON.
fn bench(c: &Cairn, args: &str) -> serde_json::Value {
    let mut all: Vec<&str> = args.split_whitespace().collect();
    all.extend(["--endpoints", &c.endpoint, "--json"]);
    let (ok, stdout, stderr) = bench_raw(&all);
    assert!(ok, "cairn-bench {all:?} failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

/// Runs a workload as [`bench`] does and checks that it sent `requests`
/// requests without an error; its JSON.
fn bench_clean(c: &Cairn, args: &str, requests: u64) -> serde_json::Value {
    let v = bench(c, args);
    let workload = args.split_whitespace().next().unwrap();
    assert_eq!(v["workload"], workload, "{v}");
    assert_eq!(v["requests"], requests, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["error_counts"], serde_json::json!({}), "{v}");
    assert!(v["throughput"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["duration_s"].as_f64().unwrap() > 0.0, "{v}");
    v
}

#[test]
fn put_writes_every_key_of_a_sequential_key_space() {
    let c = Cairn::start();
    let v = bench_clean(
        &c,
        "put --total 300 --clients 6 --conns 2 --key-size 6 --val-size 32 \
         --key-space-size 100 --sequential-keys",
        300,
    );
    assert_eq!(
        (v["clients"].as_u64(), v["conns"].as_u64()),
        (Some(6), Some(2))
    );
    let lat = &v["latency_us"];
    let (min, p50, p99, max) = (
        lat["min"].as_f64().unwrap(),
        lat["p50"].as_f64().unwrap(),
        lat["p99"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= p50 && p50 <= p99 && p99 <= max, "{lat}");
    let (kvs, _) = c.range(b"000000", b"000100");
    assert_eq!(kvs.len(), 100);
    assert_eq!(kvs[42].key, b"000042");
    assert!(kvs.iter().all(|kv| kv.value.len() == 32));
}

#[test]
fn range_reads_one_key_a_range_or_a_prefix_in_either_consistency() {
    let c = Cairn::start();
    bench(
        &c,
        "put --total 20 --key-space-size 20 --sequential-keys --target-leader",
    );
    bench_clean(&c, "range --total 50 --clients 5 --key-space-size 20", 50);
    bench_clean(&c, "range 0000001 --prefix --consistency s --total 40", 40);
    bench_clean(&c, "range 00000000 00000010 --total 30 --clients 3", 30);
}

#[test]
fn txn_put_commits_its_ops_on_distinct_keys_in_one_revision_each() {
    let c = Cairn::start();
    let before = c.revision();
    bench_clean(
        &c,
        "txn-put --txn-ops 4 --total 50 --clients 5 --key-space-size 200 --sequential-keys",
        50,
    );
    assert_eq!(c.revision() - before, 50);
    assert_eq!(c.range(b"00000000", b"00000200").0.len(), 200);
}

#[test]
fn txn_mixed_both_reads_and_writes() {
    let c = Cairn::start();
    let before = c.revision();
    bench_clean(
        &c,
        "txn-mixed --rw-ratio 1 --range-limit 5 --total 200 --clients 4 --key-space-size 50",
        200,
    );
    let writes = c.revision() - before;
    assert!(0 < writes && writes < 200, "{writes} of 200 were writes");
}

#[test]
fn watch_delivers_every_put_to_every_watcher() {
    let c = Cairn::start();
    let v = bench_clean(
        &c,
        "watch --watchers 7 --streams 3 --put-total 40 --clients 4 --conns 2 --key-space-size 10",
        40 * 7,
    );
    assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn watch_latency_times_an_event_per_put_and_watcher() {
    let c = Cairn::start();
    let v = bench_clean(
        &c,
        "watch-latency --watchers 4 --streams 2 --put-total 30 --rate 300",
        30 * 4,
    );
    let p99 = v["latency_us"]["p99"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 10e6, "{v}");
}

#[test]
fn lease_keepalive_counts_round_trips_on_the_granted_leases() {
    let c = Cairn::start();
    bench_clean(&c, "lease-keepalive --leases 5 --clients 2 --total 60", 60);
    let leases = rt().block_on(async {
        LeaseClient::new(c.channel().await)
            .lease_leases(LeaseLeasesRequest {})
            .await
            .unwrap()
            .into_inner()
            .leases
    });
    assert_eq!(leases.len(), 5);
}

#[test]
fn a_rate_limited_run_for_a_duration_sends_no_more_than_the_rate_allows() {
    let c = Cairn::start();
    let v = bench(&c, "put --duration 1s --rate 50 --clients 4");
    let n = v["requests"].as_u64().unwrap();
    // Ticket t is due at t / rate: at most 50 in the first second (+ ticket 0).
    assert!((1..=51).contains(&n), "{n} requests in 1 s at 50/s");
    assert_eq!(v["errors"], 0, "{v}");
}

/// The table's rows by label: the two sides' figures and the parsed ratio.
fn table_rows(md: &str) -> Vec<(String, String, String, f64)> {
    md.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| figure"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let ratio = cells[3]
                .parse()
                .unwrap_or_else(|_| panic!("ratio in {l:?}"));
            (cells[0].into(), cells[1].into(), cells[2].into(), ratio)
        })
        .collect()
}

const FIGURES: [&str; 6] = [
    "throughput (req/s)",
    "p50 latency",
    "p90 latency",
    "p99 latency",
    "p99.9 latency",
    "max latency",
];

#[test]
fn compare_prints_every_figure_of_both_sides_with_its_ratio() {
    let (a, b) = (Cairn::start(), Cairn::start());
    let cmd = format!(
        "compare --a {} --b http://{} --rounds 2 --warmup 200ms put --total 100 --clients 4",
        a.endpoint, b.endpoint
    );
    let (ok, stdout, stderr) = bench_raw(&cmd.split_whitespace().collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    let rows = table_rows(&stdout);
    let labels: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(labels, FIGURES, "{stdout}");
    assert!(rows.iter().all(|r| r.3 > 0.0), "{stdout}");
    // Both rounds ran on both sides.
    assert_eq!(stderr.matches("round ").count(), 4, "{stderr}");
    assert!(
        stdout.contains("A: req/s by round:") && stdout.contains("; 0 errors"),
        "{stdout}"
    );
}

#[test]
fn compare_start_runs_both_servers_reports_memory_and_draws_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("latency.svg");
    let cairn = cairn_bin().to_str().unwrap();
    let (dir_arg, plot_arg) = (dir.path().to_str().unwrap(), plot.to_str().unwrap());
    let mut args = vec!["compare", "--start", "--cairn", cairn, "--etcd", cairn];
    args.extend(["--dir", dir_arg, "--plot", plot_arg]);
    args.extend(
        "--rounds 1 --warmup 0 --memory --json \
         txn-put --total 60 --clients 3 --txn-ops 2 --key-space-size 10"
            .split_whitespace(),
    );
    let (ok, stdout, stderr) = bench_raw(&args);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    for side in ["a", "b"] {
        let runs = v[side]["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "{v}");
        assert_eq!(runs[0]["requests"], 60, "{v}");
        assert_eq!(runs[0]["errors"], 0, "{v}");
        assert!(v[side]["rss_kib"].as_u64().unwrap() > 1000, "{v}");
    }
    assert_eq!(
        (v["a"]["name"].as_str(), v["b"]["name"].as_str()),
        (Some("cairn"), Some("etcd"))
    );
    for f in ["throughput", "p50", "p90", "p99", "p999", "max", "rss"] {
        assert!(v["ratio"][f].as_f64().unwrap() > 0.0, "{f}: {v}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("cairn") && svg.contains("etcd"));
}

#[test]
fn an_endpoint_nobody_listens_on_is_a_clear_error_not_a_hang() {
    let port = servers::free_port().unwrap().to_string();
    let endpoint = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["put", "--total", "10", "--endpoints", &endpoint])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("cairn-bench still running after 20 s against a closed port");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to {endpoint}")),
        "{stderr}"
    );
}

#[test]
fn compare_suite_runs_every_perf_workload_on_both_sides_and_loads_keys_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = cairn_bin().to_str().unwrap();
    let mut args = vec!["compare", "--start", "--cairn", cairn, "--etcd", cairn];
    args.extend(["--dir", dir.path().to_str().unwrap()]);
    args.extend(
        "--suite --suite-duration 150ms --rounds 1 --warmup 0 --memory --memory-keys 500"
            .split_whitespace(),
    );
    let (ok, stdout, stderr) = bench_raw(&args);
    assert!(ok, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| `") || l.starts_with("| resident"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    let workloads: Vec<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(rows.len(), 12, "{stdout}");
    for (w, want) in workloads.iter().zip([
        "`put --clients 1 --conns 1`",
        "`put --clients 16 --conns 4`",
        "`put --clients 100 --conns 10`",
        "`put --clients 1000 --conns 100`",
        "`range --consistency l --clients 1 --conns 1`",
        "`range --consistency l --clients 100 --conns 10`",
        "`range --consistency l --clients 1000 --conns 100`",
        "`range --consistency s --clients 1 --conns 1`",
        "`range --consistency s --clients 100 --conns 10`",
        "`range --consistency s --clients 1000 --conns 100`",
        "`txn-put --txn-ops 4 --clients 100 --conns 10`",
        "resident memory after 500 keys",
    ]) {
        assert_eq!(*w, want, "{stdout}");
    }
    for r in &rows[..11] {
        // Both sides served requests, the ratios parse, nothing failed.
        assert!(r[2].ends_with("req/s") && r[3].ends_with("req/s"), "{r:?}");
        assert!(r[4].parse::<f64>().unwrap() > 0.0, "{r:?}");
        assert!(r[7].parse::<f64>().unwrap() > 0.0, "{r:?}");
        assert_eq!(r[8], "0", "{r:?}");
    }
    assert!(
        rows[11][2].ends_with("MiB") && rows[11][3].ends_with("MiB"),
        "{stdout}"
    );
}

#[test]
fn the_load_goes_on_through_a_server_restart() {
    let mut c = Cairn::start();
    let load = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(["put", "--duration", "8s", "--clients", "4", "--conns", "2"])
        .args([
            "--key-space-size",
            "1000",
            "--endpoints",
            &c.endpoint,
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it write, then kill the server and start it again.
    let t = Instant::now();
    while c.revision() < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "the load never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill_and_restart();
    let restarted = c.revision();
    let out = load.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The clients came back on new connections and went on writing.
    let after = c.revision();
    assert!(
        after > restarted + 50,
        "revision {restarted} at the restart, {after} after the run: {v}"
    );
    // Only what was in flight when the server went away failed: at most a
    // request per client, and one per client per reconnection wait.
    assert!(v["errors"].as_u64().unwrap() <= 8, "{v}");
    assert!(v["requests"].as_u64().unwrap() > 100, "{v}");
}
