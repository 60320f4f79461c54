//! Which write + fdatasync backend a choice gets.

mod common;

use std::process::Command;

use cairn_wal::{BackendChoice, BackendKind, DISABLE_IO_URING_ENV, Wal};
use common::*;

#[test]
fn choosing_io_uring_uses_io_uring_where_the_kernel_offers_it() {
    cairn_wal::io_uring_support().expect("this machine offers io_uring");
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::create(
        tmp.path().join("wal"),
        opts(BackendChoice::IoUring, 8192),
        b"m",
    )
    .unwrap();
    assert_eq!(wal.backend(), BackendKind::IoUring);
    wal.append(vec![entry(1, 1, 10)]).unwrap();
}

#[test]
fn the_default_is_the_backend_measured_faster() {
    // docs/benchmarks.md: pwrite + fdatasync beats linked io_uring write +
    // fsync here at every appender count.
    let tmp = tempfile::tempdir().unwrap();
    let wal = Wal::create(
        tmp.path().join("wal"),
        opts(BackendChoice::Auto, 8192),
        b"m",
    )
    .unwrap();
    assert_eq!(wal.backend(), BackendKind::Pwrite);
}

/// In a child process where io_uring is unavailable, choosing it gets pwrite,
/// chosen at runtime, and the log works.
#[test]
fn io_uring_falls_back_to_pwrite_at_runtime_when_unavailable() {
    if std::env::var_os(DISABLE_IO_URING_ENV).is_some() {
        assert!(cairn_wal::io_uring_support().is_err());
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let wal = Wal::create(&dir, opts(BackendChoice::IoUring, 8192), b"m").unwrap();
        assert_eq!(wal.backend(), BackendKind::Pwrite);
        for i in 1..=50 {
            wal.append(vec![entry(i, 1, 300)]).unwrap();
        }
        drop(wal);
        let wal = Wal::open(&dir, opts(BackendChoice::IoUring, 8192)).unwrap();
        assert_eq!(wal.read_from(1).unwrap().entries.len(), 50);
        println!("CHILD-OK");
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "io_uring_falls_back_to_pwrite_at_runtime_when_unavailable",
            "--exact",
            "--nocapture",
        ])
        .env(DISABLE_IO_URING_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
