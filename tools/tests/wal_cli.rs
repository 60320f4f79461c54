//! `cairnutl wal dump|verify` run as an operator would: the real binary on a
//! real log.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cairn_wal::{BackendChoice, HardState, Record, Wal, WalOptions};

fn cairnutl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairnutl"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A log of several 8 KiB segments; returns its directory and segment paths.
fn make_log(root: &Path) -> (PathBuf, Vec<PathBuf>) {
    let dir = root.join("wal");
    let opts = WalOptions {
        segment_size: 8192,
        backend: BackendChoice::Pwrite,
        ..WalOptions::default()
    };
    let wal = Wal::create(&dir, opts, b"cluster=7").unwrap();
    for i in 1..=120u64 {
        wal.append(vec![Record::entry(i, 2, vec![b'v'; 150])])
            .unwrap();
    }
    wal.append(vec![Record::HardState(HardState {
        term: 2,
        vote: 1,
        commit: 118,
    })])
    .unwrap();
    let segs = wal.segments();
    assert!(segs.len() >= 3);
    (dir, segs)
}

fn snapshot_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dump_lists_every_segment_and_record_and_verify_passes_a_sound_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, segs) = make_log(tmp.path());
    let d = dir.to_str().unwrap();

    let out = cairnutl(&["wal", "dump", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = text(&out);
    for s in &segs {
        assert!(t.contains(s.file_name().unwrap().to_str().unwrap()), "{t}");
    }
    assert!(t.contains("metadata") && t.contains("hardstate") && t.contains("entry"));
    assert!(
        t.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("120")),
        "entry 120 listed"
    );
    assert!(t.contains("OK: "));

    let out = cairnutl(&["wal", "dump", "--json", d]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segments = v["segments"].as_array().unwrap();
    assert_eq!(segments.len(), segs.len());
    let entries: Vec<u64> = segments
        .iter()
        .flat_map(|s| s["record_list"].as_array().unwrap().iter())
        .filter(|r| r["type"] == "entry")
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(entries, (1..=120).collect::<Vec<_>>());
    assert_eq!(v["verdict"]["status"], "sound");
    assert_eq!(v["verdict"]["last_index"], 120);

    let out = cairnutl(&["wal", "verify", d]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out).starts_with(&format!("OK: {} segments", segs.len())),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_names_the_file_and_offset_of_damage_in_an_earlier_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, segs) = make_log(tmp.path());
    let victim = &segs[1];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(victim)
        .unwrap();
    // The third record of the segment: find its offset with the JSON dump.
    let out = cairnutl(&["wal", "dump", "--json", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let offset = v["segments"][1]["record_list"][2]["offset"]
        .as_u64()
        .unwrap();
    f.write_all_at(&[0xee], offset + 30).unwrap();
    let before = snapshot_of(&dir);

    let out = cairnutl(&["wal", "verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.starts_with("DAMAGED:"), "{t}");
    assert!(
        t.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{t}"
    );
    assert!(t.contains(&format!("byte offset {offset}")), "{t}");

    let out = cairnutl(&["wal", "verify", "--json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["status"], "damaged");
    assert_eq!(v["verdict"]["offset"], offset);
    assert_eq!(v["verdict"]["file"], victim.to_str().unwrap());

    // The dump shows the damaged record's checksum status.
    let out = cairnutl(&["wal", "dump", dir.to_str().unwrap()]);
    assert!(text(&out).contains("MISMATCH"), "{}", text(&out));
    // Inspecting changed nothing.
    assert_eq!(snapshot_of(&dir), before);
}

#[test]
fn verify_reports_a_torn_tail_that_opening_would_cut_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, segs) = make_log(tmp.path());
    let last = segs.last().unwrap();
    let out = cairnutl(&["wal", "dump", "--json", dir.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last_json = v["segments"].as_array().unwrap().last().unwrap().clone();
    let end = last_json["end"].as_u64().unwrap();
    // Tear the final record: keep only its first 20 bytes.
    let final_offset = last_json["record_list"].as_array().unwrap().last().unwrap()["offset"]
        .as_u64()
        .unwrap();
    let f = OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(final_offset + 20).unwrap();
    assert!(end > final_offset + 20);
    let before = snapshot_of(&dir);

    let out = cairnutl(&["wal", "verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let t = text(&out);
    assert!(
        t.starts_with("TORN TAIL:") && t.contains(&format!("byte offset {final_offset}")),
        "{t}"
    );
    let out = cairnutl(&["wal", "dump", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("TRUNCATED"));
    assert_eq!(snapshot_of(&dir), before);

    // Opening repairs it; then the log verifies clean.
    drop(Wal::open(&dir, WalOptions::default()).unwrap());
    assert_eq!(
        cairnutl(&["wal", "verify", dir.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn verify_of_a_missing_directory_fails_clearly() {
    let out = cairnutl(&["wal", "verify", "/nonexistent/cairn/wal"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cairn/wal"));
}
