//! Starting the real `cairn` binary for tests — one member or a cluster, on
//! free 127.0.0.1 ports, in temporary directories — and driving it with the
//! real `etcdctl`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How one member is started.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: Option<u16>,
    /// `--initial-cluster` (default: this member alone).
    pub initial_cluster: Option<String>,
    pub state_existing: bool,
    pub extra: Vec<String>,
}

impl Spec {
    pub fn new(name: &str, parent: &Path) -> Spec {
        Spec {
            name: name.into(),
            dir: parent.join(format!("{name}.etcd")),
            client_port: free_port(),
            peer_port: free_port(),
            metrics_port: None,
            initial_cluster: None,
            state_existing: false,
            extra: Vec::new(),
        }
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--listen-client-urls".into(),
            self.client_url(),
            "--advertise-client-urls".into(),
            self.client_url(),
            "--listen-peer-urls".into(),
            self.peer_url(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url(),
            "--initial-cluster".into(),
            self.initial_cluster
                .clone()
                .unwrap_or_else(|| format!("{}={}", self.name, self.peer_url())),
            // Fast elections keep multi-member tests short.
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
        ];
        if self.state_existing {
            a.push("--initial-cluster-state".into());
            a.push("existing".into());
        }
        if let Some(p) = self.metrics_port {
            a.push("--listen-metrics-urls".into());
            a.push(format!("http://127.0.0.1:{p}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A running `cairn`; killed and reaped if a test ends without stopping it.
pub struct Cairn {
    pub spec: Spec,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
}

impl Cairn {
    /// Starts the member and waits until it logs that it serves clients.
    pub fn start(spec: &Spec) -> Cairn {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(spec.args())
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let c = Cairn {
            spec: spec.clone(),
            child: Some(child),
            lines,
            rx,
        };
        c.wait_log("ready to serve client requests", Duration::from_secs(30));
        c
    }

    /// Waits for a log line whose message is `msg`; returns it as JSON.
    pub fn wait_log(&self, msg: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {msg:?} in cairn's log within {within:?}; log:\n{}",
                    self.log().join("\n")
                )
            });
            let v = serde_json::from_str::<serde_json::Value>(&line).ok();
            if let Some(v) = v.filter(|v| v["fields"]["message"] == msg) {
                return v;
            }
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.spec.client_port)
    }

    /// Runs `etcdctl` against this member.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&[self.endpoint()], args, None)
    }

    /// `etcdctl` that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM; checks the exit is clean and returns the log.
    pub fn terminate(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "cairn exits cleanly on SIGTERM: {exit}");
        self.log()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `etcdctl` binary (Debian's `etcd-client`; the README's test command
/// installs it).
pub fn etcdctl_path() -> &'static str {
    "etcdctl"
}

/// Runs `etcdctl --endpoints=…` with `args`, feeding `stdin` if given.
pub fn etcdctl(endpoints: &[String], args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(etcdctl_path());
    c.env_clear()
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--command-timeout=10s")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    } else {
        c.stdin(Stdio::null());
    }
    let mut child = c
        .spawn()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// A single member in a temporary directory.
pub fn single(tmp: &Path) -> Cairn {
    Cairn::start(&Spec::new("default", tmp))
}

/// `n` members started together as a new cluster.
pub fn cluster(tmp: &Path, n: usize) -> Vec<Cairn> {
    let mut specs: Vec<Spec> = (0..n).map(|i| Spec::new(&format!("m{i}"), tmp)).collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    for s in &mut specs {
        s.initial_cluster = Some(initial.clone());
    }
    // Start them all before waiting on any: a member serves clients only
    // once it is up, but the first needs the others to elect a leader.
    let children: Vec<std::thread::JoinHandle<Cairn>> = specs
        .into_iter()
        .map(|s| std::thread::spawn(move || Cairn::start(&s)))
        .collect();
    children.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Polls `f` until it returns `Some` or `within` passes.
pub fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
