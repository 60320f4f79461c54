//! Storage knobs etcd has no flags for come from `CAIRN_*` variables: read
//! at startup and logged; a bad value stops the server before it touches
//! the data directory; a page size applies only to a new database file.

mod common;

use std::time::Duration;

use common::{Cairn, Spec};

/// The first log line whose message is `msg`, as JSON.
fn logged(log: &[String], msg: &str) -> serde_json::Value {
    log.iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == msg)
        .unwrap_or_else(|| panic!("no {msg:?} in the log:\n{}", log.join("\n")))
}

fn with_env(mut spec: Spec, vars: &[(&str, &str)]) -> Spec {
    spec.env = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spec
}

#[test]
fn an_invalid_storage_variable_stops_the_server_with_a_message_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    for (var, value, message) in [
        (
            "CAIRN_WAL_BACKEND",
            "aio",
            "invalid CAIRN_WAL_BACKEND=\"aio\": unknown WAL backend \"aio\" (auto, io_uring, pwrite)",
        ),
        (
            "CAIRN_WAL_MAX_BATCH_RECORDS",
            "0",
            "invalid CAIRN_WAL_MAX_BATCH_RECORDS=\"0\": not a positive integer",
        ),
        (
            "CAIRN_WAL_MAX_BATCH_BYTES",
            "lots",
            "invalid CAIRN_WAL_MAX_BATCH_BYTES=\"lots\": not a positive integer",
        ),
        (
            "CAIRN_BACKEND_PAGE_SIZE",
            "3000",
            "invalid CAIRN_BACKEND_PAGE_SIZE=\"3000\": not a power of two from 1024 to 65536",
        ),
    ] {
        let spec = with_env(Spec::new("default", tmp.path()), &[(var, value)]);
        let out = spec.run_to_exit(Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("Error: {message}")),
            "{var}={value}: {stderr}"
        );
        assert!(!spec.dir.exists(), "{var}={value} created the data dir");
    }
}

#[test]
fn storage_variables_are_logged_and_a_page_size_applies_to_new_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = with_env(
        Spec::new("default", tmp.path()),
        &[
            ("CAIRN_WAL_BACKEND", "pwrite"),
            ("CAIRN_WAL_MAX_BATCH_RECORDS", "64"),
            ("CAIRN_WAL_MAX_BATCH_BYTES", "65536"),
            ("CAIRN_BACKEND_PAGE_SIZE", "8192"),
        ],
    );
    let c = Cairn::start(&spec);
    c.ok(&["put", "tuned", "yes"]);
    assert_eq!(c.ok(&["get", "tuned", "--print-value-only"]), "yes\n");
    let log = c.terminate();
    let t = &logged(&log, "storage tuning")["fields"];
    assert_eq!(t["wal_backend"], "Pwrite");
    assert_eq!(t["wal_max_batch_records"], 64);
    assert_eq!(t["wal_max_batch_bytes"], 65536);
    assert_eq!(t["backend_page_size"], 8192);
    assert_eq!(
        t["set_by_environment"],
        "[\"CAIRN_WAL_BACKEND\", \"CAIRN_WAL_MAX_BATCH_RECORDS\", \"CAIRN_WAL_MAX_BATCH_BYTES\", \"CAIRN_BACKEND_PAGE_SIZE\"]"
    );
    assert_eq!(
        logged(&log, "member state recovered")["fields"]["backend"],
        "pwrite"
    );
    assert_eq!(logged(&log, "opened backend")["fields"]["page_size"], 8192);

    // Restarted asking for another page size: the file keeps its own, the
    // data is intact, and the mismatch is logged.
    let spec = with_env(spec, &[("CAIRN_BACKEND_PAGE_SIZE", "16384")]);
    let c = Cairn::start(&spec);
    assert_eq!(c.ok(&["get", "tuned", "--print-value-only"]), "yes\n");
    c.ok(&["put", "after", "restart"]);
    assert_eq!(c.ok(&["get", "after", "--print-value-only"]), "restart\n");
    let log = c.terminate();
    assert_eq!(logged(&log, "opened backend")["fields"]["page_size"], 8192);
    let warned = &logged(
        &log,
        "the database file exists and keeps the page size it was created with; CAIRN_BACKEND_PAGE_SIZE applies to new files only",
    )["fields"];
    assert_eq!(warned["requested"], 16384);
}
