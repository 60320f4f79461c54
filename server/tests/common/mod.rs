//! Starting the real `cairn` binary for tests — one member or a cluster, on
//! free 127.0.0.1 ports, in temporary directories — and driving it with the
//! real `etcdctl`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../../../testing/port.rs"]
mod port;
pub use port::free_port;

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
    /// The process's whole environment (it starts empty).
    pub env: Vec<(String, String)>,
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
            env: Vec::new(),
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

    /// The `cairn` command for this member, with only [`Spec::env`] in its
    /// environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.args(self.args())
            .env_clear()
            .envs(self.env.iter().cloned());
        c
    }

    /// Runs the member expecting it to exit by itself (a refused start)
    /// within `within`; returns its output.
    pub fn run_to_exit(&self, within: Duration) -> Output {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn");
        let deadline = Instant::now() + within;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "cairn did not exit within {within:?}; log:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
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
        let mut child = spec
            .command()
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

/// An `etcdctl` left running (watch, lease keep-alive, interactive modes):
/// stdout is read line by line with deadlines, stdin stays open for more
/// input; killed if still running when dropped.
pub struct Running {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `etcdctl --endpoints=… args`.
    pub fn spawn(endpoints: &[String], args: &[&str]) -> Running {
        let mut child = Command::new(etcdctl_path())
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting etcdctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let keep = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    return;
                }
                keep.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        Running {
            child,
            stdin,
            rx,
            stderr,
        }
    }

    /// Writes one line to its stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// The next stdout line; panics if none comes within `within`.
    pub fn line(&self, within: Duration) -> String {
        self.try_line(within).unwrap_or_else(|| {
            panic!(
                "no output line from etcdctl within {within:?}; stderr: {}",
                self.stderr()
            )
        })
    }

    /// The next stdout line, if one comes within `within` (`None` also when
    /// stdout ended).
    pub fn try_line(&self, within: Duration) -> Option<String> {
        self.rx.recv_timeout(within).ok()
    }

    /// The next `n` stdout lines, all within `within`.
    pub fn lines(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        (0..n)
            .map(|_| self.line(deadline.saturating_duration_since(Instant::now())))
            .collect()
    }

    /// Stdout lines until one satisfies `done` (returned with those before).
    pub fn until(&self, within: Duration, mut done: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let l = self
                .try_line(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| {
                    panic!(
                        "etcdctl printed no matching line within {within:?}; saw {seen:?}; stderr: {}",
                        self.stderr()
                    )
                });
            let stop = done(&l);
            seen.push(l);
            if stop {
                return seen;
            }
        }
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for it to exit by itself; returns its exit code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl did not exit within {within:?}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cairn {
    /// A long-running `etcdctl` against this member.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(&[self.endpoint()], args)
    }

    /// `etcdctl` that must fail; returns its `Error: …` line (without the
    /// prefix).
    pub fn fails(&self, args: &[&str]) -> String {
        error_of(&self.etcdctl(args), args)
    }

    /// `etcdctl` fed `stdin`, that must succeed; returns its stdout.
    pub fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let out = etcdctl(&[self.endpoint()], args, Some(stdin));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `etcdctl … -w json` that must succeed, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `http://127.0.0.1:<client port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.spec.client_port)
    }

    /// The store's current revision, as `get` reports it.
    pub fn revision(&self) -> i64 {
        self.json(&["get", "revision-probe"])["header"]["revision"]
            .as_i64()
            .unwrap()
    }
}

/// The message of a failed `etcdctl` run's last `Error: …` line.
pub fn error_of(out: &Output, args: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "etcdctl {args:?} was expected to fail but printed {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Error: "))
        .unwrap_or_else(|| panic!("no `Error:` line from etcdctl {args:?}: {stderr}"))
        .to_string()
}

/// An HTTP answer, as curl saw it.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {:?}", self.body))
    }
}

/// `curl -X method url [-d body]`, giving up after `max_time` (a streamed
/// answer is then what arrived until then).
pub fn curl(method: &str, url: &str, body: Option<&str>, max_time: Duration) -> Http {
    let mut c = Command::new("curl");
    c.args(["-s", "-i", "-X", method])
        .arg("--max-time")
        .arg(format!("{:.3}", max_time.as_secs_f64()));
    if let Some(b) = body {
        c.args(["-d", b]);
    }
    let out = c.arg(url).output().expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer from {method} {url}: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line from {method} {url}: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

/// `POST` of a JSON body, with a 10 s limit.
pub fn post(url: &str, body: &str) -> Http {
    curl("POST", url, Some(body), Duration::from_secs(10))
}

/// Standard base64 with padding (what the JSON gateway uses for bytes).
pub fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The inverse of [`b64`].
pub fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {s:?}"),
    };
    let mut out = Vec::new();
    for chunk in s.trim_end_matches('=').as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (val(c) as u32) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A JSON value's string form, base64-decoded (keys and values in etcdctl's
/// and the gateway's JSON).
pub fn text(v: &serde_json::Value) -> String {
    String::from_utf8(unb64(
        v.as_str().unwrap_or_else(|| panic!("not a string: {v}")),
    ))
    .unwrap()
}

/// The value of a series in Prometheus text (the first line naming it
/// exactly, labels included).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .parse()
        .unwrap()
}
