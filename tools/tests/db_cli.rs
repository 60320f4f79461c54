//! `cairnutl db ...` as an operator runs it, on a real database file.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use cairn_engine::btree::{Db, Options};

fn cairnutl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairnutl"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn build(path: &Path) {
    let db = Db::open(path, Options::default()).unwrap();
    let mut tx = db.begin_write().unwrap();
    {
        let mut k = tx.create_bucket(b"key").unwrap();
        for i in 0..500u32 {
            k.put(
                format!("rev-{i:04}").as_bytes(),
                format!("value {i}").as_bytes(),
            )
            .unwrap();
        }
        k.put(b"large", &vec![b'L'; 30_000]).unwrap();
        let mut m = tx.create_bucket(b"meta").unwrap();
        m.put(b"consistent_index", &42u64.to_be_bytes()).unwrap();
        let mut nested = m.create_bucket(b"inner").unwrap();
        nested.put(b"x", b"y").unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn info_check_buckets_pages_and_dump_describe_a_sound_database() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let p = path.to_str().unwrap();

    let out = cairnutl(&["db", "info", p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text(&out).contains("page size   4096"));
    let v = json(&cairnutl(&["db", "info", "--json", p]));
    assert_eq!(v["page_size"], 4096);
    assert_eq!(v["meta"][0]["valid"], true);
    assert_eq!(v["meta"][1]["valid"], true);

    let out = cairnutl(&["db", "check", p]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).trim_end().ends_with("OK"));
    let v = json(&cairnutl(&["db", "check", "--json", p]));
    assert_eq!(v["ok"], true);
    assert_eq!(v["keys"], 503);
    assert_eq!(v["buckets"], 3);
    assert!(v["by_kind"]["overflow"].as_u64().unwrap() >= 8);

    let out = cairnutl(&["db", "buckets", p]);
    let t = text(&out);
    assert!(
        t.contains("key  501 keys") && t.contains("meta  1 keys") && t.contains("  inner  1 keys"),
        "{t}"
    );
    let v = json(&cairnutl(&["db", "buckets", "--json", p]));
    let paths: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["key", "meta", "meta/inner"]);

    let v = json(&cairnutl(&["db", "pages", "--json", p]));
    let rows = v["pages"].as_array().unwrap();
    let total: u64 = rows.iter().map(|r| r["pages"].as_u64().unwrap()).sum();
    assert_eq!(
        total,
        v["check"]["pages"].as_u64().unwrap(),
        "every page listed once"
    );
    assert!(
        rows.iter()
            .any(|r| r["use"] == "overflow" && r["pages"].as_u64().unwrap() >= 8)
    );
    assert!(rows.iter().all(|r| r["use"] != "UNACCOUNTED"));

    let out = cairnutl(&["db", "dump", "--bucket", "meta/inner", p]);
    assert!(text(&out).contains("  x = y"), "{}", text(&out));
    let v = json(&cairnutl(&["db", "dump", "--json", "--bucket", "meta", p]));
    assert_eq!(v[0]["key"], "consistent_index");
    assert_eq!(v[0]["value_hex"], "000000000000002a");
    assert_eq!(v[0]["value"], "\\x00\\x00\\x00\\x00\\x00\\x00\\x00*");
    assert!(
        !cairnutl(&["db", "dump", "--bucket", "nope", p])
            .status
            .success()
    );
}

#[test]
fn check_reports_damage_and_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let p = path.to_str().unwrap();
    let v = json(&cairnutl(&["db", "pages", "--json", p]));
    let leaf = v["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["use"] == "leaf")
        .unwrap()["page"]
        .as_u64()
        .unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xAB; 64], leaf * 4096 + 1000).unwrap();
    let out = cairnutl(&["db", "check", p]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains(&format!("page {leaf} is malformed")) && t.contains("DAMAGED"),
        "{t}"
    );
}

#[test]
fn a_database_held_by_a_writer_is_refused_not_read_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("db");
    build(&path);
    let _writer = Db::open(&path, Options::default()).unwrap();
    let out = cairnutl(&["db", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked"));
}
