//! The `cairn` binary as an operator starts it: its member state comes up,
//! survives a restart, and a data directory that is not cairn's is refused
//! untouched.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `cairn` with `args`, listening on free ports (its advertised URLs, which
/// its ids derive from, stay as given).
fn cairn(args: &[&str]) -> Command {
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let client = format!("http://127.0.0.1:{}", port());
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.args(args)
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", port()),
        ])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A running `cairn`; killed and reaped if a test ends without stopping it.
struct Server {
    child: Option<Child>,
    rx: mpsc::Receiver<String>,
}

impl Server {
    /// Sends SIGTERM, checks the exit is clean and returns the rest of the log.
    fn terminate(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert!(exit.success(), "cairn exits cleanly on SIGTERM: {exit}");
        self.rx.iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `cairn` and waits for the "member state recovered" log line, which it
/// returns as JSON; the rest of the log keeps flowing.
fn start(args: &[&str]) -> (Server, serde_json::Value) {
    start_command(cairn(args))
}

fn start_command(mut command: Command) -> (Server, serde_json::Value) {
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let server = Server {
        child: Some(child),
        rx,
    };
    loop {
        let line = server
            .rx
            .recv_timeout(Duration::from_secs(20))
            .expect("cairn logged its startup");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["fields"]["message"] == "member state recovered" {
            return (server, v);
        }
    }
}

#[test]
fn a_fresh_member_comes_up_with_etcds_default_ids_and_restarts_from_its_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("default.etcd");
    let d = data.to_str().unwrap();
    let (server, line) = start(&["--data-dir", d]);
    // etcd's single default member: name "default" at http://localhost:2380.
    assert_eq!(line["fields"]["member_id"], "8e9e05c52164694d");
    assert_eq!(line["fields"]["cluster_id"], "cdf818194e3a8c32");
    assert_eq!(line["fields"]["records"], 1);
    assert!(data.join("member/wal").is_dir());
    let rest = server.terminate();
    assert!(
        rest.iter()
            .any(|l| l.contains("received signal; shutting down")),
        "{rest:?}"
    );

    let (server, line) = start(&["--data-dir", d]);
    assert_eq!(line["fields"]["member_id"], "8e9e05c52164694d");
    assert_eq!(line["fields"]["torn_tail_cut"], false);
    server.terminate();

    let ins = cairn_wal::inspect::inspect(data.join("member/wal")).unwrap();
    assert!(ins.verdict.is_sound(), "{:?}", ins.verdict);
}

#[test]
fn environment_variables_stand_in_for_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("m1");
    let mut c = cairn(&[]);
    c.env("ETCD_NAME", "m1")
        .env("ETCD_DATA_DIR", &data)
        .env("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:23801")
        .env("ETCD_INITIAL_CLUSTER", "m1=http://127.0.0.1:23801");
    let (server, v) = start_command(c);
    // compat.md: this peer URL with the default token.
    assert_eq!(v["fields"]["member_id"], "bdae9bbc11dd390d");
    assert_eq!(v["fields"]["cluster_id"], "d1cfaf999eb97a2a");
    server.terminate();
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        let b = if e.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            vec![]
        };
        out.push((e.display().to_string(), b));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn a_data_directory_that_is_not_cairns_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    // Something else's files.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("member/snap")).unwrap();
    std::fs::write(other.join("member/snap/db"), b"bbolt file").unwrap();
    let before = tree(&other);
    let out = cairn(&["--data-dir", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to use it"));
    assert_eq!(tree(&other), before);

    // An etcd-style WAL directory: same file names as cairn's, different bytes,
    // and etcd's own .tmp file beside them.
    let etcd = tmp.path().join("etcd");
    std::fs::create_dir_all(etcd.join("member/wal")).unwrap();
    std::fs::write(
        etcd.join("member/wal/0000000000000000-0000000000000000.wal"),
        vec![7u8; 4096],
    )
    .unwrap();
    std::fs::write(etcd.join("member/wal/0.tmp"), vec![0u8; 4096]).unwrap();
    let before = tree(&etcd);
    let out = cairn(&["--data-dir", etcd.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cairn WAL segment"));
    assert_eq!(tree(&etcd), before);
}
