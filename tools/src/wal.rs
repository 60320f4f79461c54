//! `cairnutl wal dump|verify DIR`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_wal::inspect::{
    CrcStatus, Inspection, RecordReport, SegmentReport, StopReason, Verdict, inspect,
};
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum WalCommand {
    /// Lists every segment, then every record: offset, type, index, term,
    /// payload size, write batch and checksum status.
    Dump {
        /// The WAL directory (e.g. <data-dir>/member/wal).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Checks every segment and checksum as opening the log would; exits 0 only
    /// if the log is sound, and reports the first problem otherwise.
    Verify {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: WalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WalCommand::Dump { dir, json } => {
            let ins = load(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspection_json(&ins, true))?
                );
            } else {
                print_dump(&ins);
            }
            Ok(exit_code(&ins.verdict))
        }
        WalCommand::Verify { dir, json } => {
            let ins = load(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&inspection_json(&ins, false))?
                );
            } else {
                println!("{}", verdict_line(&ins));
            }
            Ok(exit_code(&ins.verdict))
        }
    }
}

fn load(dir: &PathBuf) -> anyhow::Result<Inspection> {
    inspect(dir).with_context(|| format!("inspecting {}", dir.display()))
}

fn exit_code(v: &Verdict) -> ExitCode {
    match v {
        Verdict::Sound { .. } => ExitCode::SUCCESS,
        Verdict::TornTail(_) => ExitCode::from(3),
        Verdict::Damaged(_) | Verdict::Empty => ExitCode::from(1),
    }
}

fn opt(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}

fn type_name(r: &RecordReport) -> &'static str {
    r.record_type.map_or("unknown", |t| t.name())
}

fn print_dump(ins: &Inspection) {
    println!("wal directory {}", ins.dir.display());
    for t in &ins.temp_files {
        println!(
            "temporary file {} (removed when the log is opened)",
            t.display()
        );
    }
    for s in &ins.segments {
        print_segment(s);
    }
    println!("{}", verdict_line(ins));
}

fn print_segment(s: &SegmentReport) {
    let name = s.path.file_name().map_or_else(
        || s.path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    println!();
    match &s.header {
        Ok(h) => println!(
            "segment {name}: seq {} first index {} size {} bytes, records end at {} ({} records), started in batch {}",
            h.seq,
            h.first_index,
            s.file_size,
            s.end,
            s.records.iter().filter(|r| r.crc == CrcStatus::Ok).count(),
            h.batch
        ),
        Err(e) => println!(
            "segment {name}: size {} bytes, BAD HEADER: {e}",
            s.file_size
        ),
    }
    if s.records.is_empty() {
        return;
    }
    println!(
        "  {:>10}  {:<9}  {:>10}  {:>6}  {:>8}  {:>8}  crc",
        "offset", "type", "index", "term", "size", "batch"
    );
    for r in &s.records {
        let crc = match &r.crc {
            CrcStatus::Mismatch { stored, computed } => {
                format!("MISMATCH (stored {stored:#010x}, computed {computed:#010x})")
            }
            CrcStatus::Truncated => "TRUNCATED".into(),
            CrcStatus::Malformed(why) => format!("MALFORMED ({why})"),
            CrcStatus::Ok => "ok".into(),
        };
        println!(
            "  {:>10}  {:<9}  {:>10}  {:>6}  {:>8}  {:>8}  {crc}",
            r.offset,
            type_name(r),
            opt(r.index),
            opt(r.term),
            opt(r.size),
            opt(r.batch),
        );
    }
    if s.stop == StopReason::Damaged {
        println!("  (reading stopped at the damaged record)");
    }
}

fn verdict_line(ins: &Inspection) -> String {
    match &ins.verdict {
        Verdict::Sound {
            records,
            last_index,
        } => format!(
            "OK: {} segments, {records} records, last index {last_index}",
            ins.segments.len()
        ),
        Verdict::TornTail(t) => format!(
            "TORN TAIL: {} at byte offset {}: {} ({} bytes; opening the log cuts them off)",
            t.path.display(),
            t.offset,
            t.reason,
            t.discarded
        ),
        Verdict::Damaged(e) => format!("DAMAGED: {e}"),
        Verdict::Empty => format!("EMPTY: no WAL segment in {}", ins.dir.display()),
    }
}

fn record_json(r: &RecordReport) -> Value {
    let mut v = json!({
        "offset": r.offset,
        "type": type_name(r),
        "index": r.index,
        "term": r.term,
        "size": r.size,
        "batch": r.batch,
        "crc": r.crc.to_string(),
    });
    if let CrcStatus::Mismatch { stored, computed } = r.crc {
        v["crc_stored"] = json!(stored);
        v["crc_computed"] = json!(computed);
    }
    v
}

fn inspection_json(ins: &Inspection, with_records: bool) -> Value {
    let segments: Vec<Value> = ins
        .segments
        .iter()
        .map(|s| {
            let mut v = json!({
                "file": s.path,
                "seq": s.seq,
                "first_index": s.first_index,
                "size": s.file_size,
                "end": s.end,
                "records": s.records.iter().filter(|r| r.crc == CrcStatus::Ok).count(),
            });
            if let Err(e) = &s.header {
                v["header_error"] = json!(e);
            }
            if with_records {
                v["record_list"] = s.records.iter().map(record_json).collect();
            }
            v
        })
        .collect();
    let verdict = match &ins.verdict {
        Verdict::Sound {
            records,
            last_index,
        } => json!({"status": "sound", "records": records, "last_index": last_index}),
        Verdict::TornTail(t) => json!({
            "status": "torn_tail", "file": t.path, "offset": t.offset,
            "discarded_bytes": t.discarded, "reason": t.reason,
        }),
        Verdict::Damaged(e) => {
            let mut v = json!({"status": "damaged", "error": e.to_string()});
            if let cairn_wal::WalError::Corrupt { path, offset, .. }
            | cairn_wal::WalError::Gap { path, offset, .. } = e
            {
                v["file"] = json!(path);
                v["offset"] = json!(offset);
            }
            v
        }
        Verdict::Empty => json!({"status": "empty"}),
    };
    json!({
        "dir": ins.dir,
        "temp_files": ins.temp_files,
        "segments": segments,
        "verdict": verdict,
    })
}
