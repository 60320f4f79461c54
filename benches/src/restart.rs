//! `cairn-bench restart`: how long a member takes to be ready — on an empty
//! data directory, and after a restart holding many keys — for cairn and,
//! with `--etcd`, for etcd on the same machine, side by side.
//!
//! "Ready" is measured from the process's start to the first successful
//! linearizable Range over the client port (what a client can observe).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{
    PutRequest, RangeRequest, RequestOp, TxnRequest, kv_client::KvClient, request_op,
};
use clap::Args;
use serde_json::json;
use tonic::transport::Channel;

use crate::servers::Server;

#[derive(Args)]
pub struct RestartArgs {
    /// Keys loaded before the restart.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Restarts measured (median reported).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// The cairn binary (default: next to this one).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Also measure this etcd binary (e.g. /usr/bin/etcd).
    #[arg(long)]
    etcd: Option<PathBuf>,
    /// Directory for the data directories (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the data directories (their path is printed) for inspection.
    #[arg(long)]
    keep: bool,
    /// Write each server's log to `<log-dir>/<server>.log` (appended).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Loads `n` keys in transactions of 128 puts, 16 at a time.
async fn load(kv: &KvClient<Channel>, n: u64, ks: usize, vs: usize) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let per_txn = 128u64;
    let txns = n.div_ceil(per_txn);
    let workers = 16u64;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = w;
            while t < txns {
                let ops = (t * per_txn..((t + 1) * per_txn).min(n))
                    .map(|i| {
                        let mut key = format!("{i:0width$}", width = ks).into_bytes();
                        key.truncate(ks);
                        RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key,
                                value: vec![b'v'; vs],
                                ..Default::default()
                            })),
                        }
                    })
                    .collect();
                kv.txn(TxnRequest {
                    success: ops,
                    ..Default::default()
                })
                .await?;
                t += workers;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn measure(
    name: &str,
    bin: &Path,
    a: &RestartArgs,
    base: &Path,
) -> anyhow::Result<serde_json::Value> {
    let s = Server::new(name, bin, base, a.log_dir.as_deref())?;
    let (child, empty, kv) = s.start_ready().await?;
    eprintln!(
        "{name}: ready on an empty data dir in {:.0} ms; loading {} keys",
        empty.as_secs_f64() * 1e3,
        a.keys
    );
    let loaded = load(&kv, a.keys, a.key_size, a.value_size).await?;
    eprintln!("{name}: loaded in {:.1} s", loaded.as_secs_f64());
    drop(kv);
    child.stop()?;
    let mut restarts = Vec::new();
    for _ in 0..a.restarts {
        let (child, ready, mut kv) = s.start_ready().await?;
        let probe = format!("{:0width$}", a.keys - 1, width = a.key_size).into_bytes();
        let got = kv
            .range(RangeRequest {
                key: probe[..a.key_size.min(probe.len())].to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            got.count == 1,
            "{name} lost the last key across the restart"
        );
        eprintln!(
            "{name}: restarted with {} keys, ready in {:.0} ms",
            a.keys,
            ready.as_secs_f64() * 1e3
        );
        restarts.push(ready.as_secs_f64() * 1e3);
        drop(kv);
        child.stop()?;
    }
    Ok(json!({
        "server": name,
        "keys": a.keys,
        "empty_ready_ms": empty.as_secs_f64() * 1e3,
        "load_seconds": loaded.as_secs_f64(),
        "restart_ready_ms": restarts,
        "restart_ready_ms_median": median(restarts.clone()),
    }))
}

pub fn run(a: RestartArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let cairn = match &a.cairn {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("cairn"),
    };
    let mut results = vec![rt.block_on(measure("cairn", &cairn, &a, tmp.path()))?];
    if let Some(etcd) = &a.etcd {
        results.push(rt.block_on(measure("etcd", etcd, &a, tmp.path()))?);
    }
    if a.keep {
        let kept = tmp.keep();
        eprintln!("data directories kept in {}", kept.display());
    }
    if a.json {
        println!("{}", serde_json::Value::Array(results));
        return Ok(());
    }
    println!(
        "{:<8} {:>16} {:>14} {:>22}",
        "server", "empty ready ms", "load s", "restart ready ms (med)"
    );
    for r in &results {
        println!(
            "{:<8} {:>16.0} {:>14.1} {:>22.0}",
            r["server"].as_str().unwrap_or("?"),
            r["empty_ready_ms"].as_f64().unwrap_or(f64::NAN),
            r["load_seconds"].as_f64().unwrap_or(f64::NAN),
            r["restart_ready_ms_median"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}
