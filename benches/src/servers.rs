//! Starting and stopping single-member servers for benchmarks: the `cairn`
//! binary or etcd, started the same way — one member named `bench` on free
//! 127.0.0.1 ports, its own data directory, etcd's defaults otherwise (fsync
//! on; no `--unsafe-no-fsync`) — and waited for until a linearizable Range
//! succeeds over the client port.
//!
//! A [`Running`] server is killed when dropped, so a failing benchmark leaves
//! no process behind; [`Running::stop`] is the clean SIGTERM stop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_proto::etcdserverpb::{RangeRequest, kv_client::KvClient};
use tonic::transport::Channel;

/// A TCP port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How one member is started.
pub struct Server {
    /// Where its stderr goes (appended); `None` discards it.
    pub log: Option<PathBuf>,
    pub bin: PathBuf,
    pub data: PathBuf,
    pub client: u16,
    pub peer: u16,
    /// Added to its environment (`ETCD_*` for flags, `CAIRN_*` storage
    /// knobs).
    pub env: Vec<(String, String)>,
}

/// A started member; killed (SIGKILL) on drop unless stopped first.
pub struct Running {
    child: Option<Child>,
}

impl Server {
    /// A member of `bin` with data directory `<base>/<name>.data`, on free
    /// ports, logging to `<log_dir>/<name>.log` when given.
    pub fn new(
        name: &str,
        bin: &Path,
        base: &Path,
        log_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        Ok(Server {
            log: log_dir.map(|d| d.join(format!("{name}.log"))),
            bin: bin.to_path_buf(),
            data: base.join(format!("{name}.data")),
            client: free_port()?,
            peer: free_port()?,
            env: Vec::new(),
        })
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let flags = [
            ("--name", "bench".to_string()),
            ("--listen-client-urls", client.clone()),
            ("--advertise-client-urls", client),
            ("--listen-peer-urls", peer.clone()),
            ("--initial-advertise-peer-urls", peer.clone()),
            ("--initial-cluster", format!("bench={peer}")),
            ("--quota-backend-bytes", (8u64 << 30).to_string()),
        ];
        Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data)
            .args(flags.iter().flat_map(|(f, v)| [*f, v.as_str()]))
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(match &self.log {
                Some(p) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                ),
                None => Stdio::null(),
            })
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))
    }

    /// Starts it and waits until a linearizable Range succeeds; returns the
    /// time that took and a connected client.
    pub async fn start_ready(&self) -> anyhow::Result<(Running, Duration, KvClient<Channel>)> {
        let t = Instant::now();
        let mut running = Running {
            child: Some(self.spawn()?),
        };
        let url = self.client_url();
        loop {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "{} not ready in 10 minutes",
                self.bin.display()
            );
            if let Some(status) = running
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!(
                    "{} exited before it was ready: {status}",
                    self.bin.display()
                );
            }
            if let Ok(ch) = Channel::from_shared(url.clone())?.connect().await {
                let mut kv = KvClient::new(ch);
                let req = RangeRequest {
                    key: b"ready?".to_vec(),
                    ..Default::default()
                };
                if kv.range(req).await.is_ok() {
                    return Ok((running, t.elapsed(), kv));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident memory in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid())
    }

    /// SIGTERM, then waits up to a minute for the exit (SIGKILL after that).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.try_wait()?.is_none() {
            if Instant::now() > deadline {
                c.kill()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}
