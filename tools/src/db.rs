//! `cairnutl db info|check|buckets|pages|dump FILE`.
//!
//! The database is opened read-only under a shared lock: a running server
//! holds an exclusive one, so inspect a stopped member or a copy.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_engine::btree::page::{PageKind, header};
use cairn_engine::btree::{Bucket, CheckReport, Db, Options, ReadTxn, Use, Value, read_metas};
use clap::Subcommand;
use serde_json::{Value as Json, json};

#[derive(Subcommand)]
pub enum DbCommand {
    /// The file, both meta pages, and space figures.
    Info {
        /// The database file (e.g. <data-dir>/member/snap/db).
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Walks every page from the meta and the free list; exits 0 only if no
    /// page is double-referenced, leaked or malformed.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Buckets, nested ones indented, with their key counts.
    Buckets {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every page and what it holds.
    Pages {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Keys and values of a bucket (all buckets if none is named).
    Dump {
        file: PathBuf,
        /// A bucket, nested ones separated by '/', e.g. `key` or `a/b`.
        #[arg(long)]
        bucket: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DbCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DbCommand::Info { file, json } => info(&file, json),
        DbCommand::Check { file, json } => check(&file, json),
        DbCommand::Buckets { file, json } => buckets(&file, json),
        DbCommand::Pages { file, json } => pages(&file, json),
        DbCommand::Dump { file, bucket, json } => dump(&file, bucket.as_deref(), json),
    }
}

fn open(file: &PathBuf) -> anyhow::Result<Db> {
    Db::open(
        file,
        Options {
            read_only: true,
            ..Options::default()
        },
    )
    .with_context(|| format!("opening {}", file.display()))
}

/// Bytes as text where printable, `\xNN` elsewhere.
fn show(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn info(file: &PathBuf, as_json: bool) -> anyhow::Result<ExitCode> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let size = f.metadata()?.len();
    let metas = read_metas(&f);
    let db = open(file)?;
    let st = db.stats();
    let slot = |m: &Result<cairn_engine::btree::Meta, String>| match m {
        Ok(m) => {
            json!({"valid": true, "txid": m.txid, "root": m.root, "freelist": m.freelist, "hwm": m.hwm, "page_size": m.page_size})
        }
        Err(e) => json!({"valid": false, "error": e}),
    };
    let v = json!({
        "file": file, "file_size": size, "page_size": st.page_size, "txid": st.txid,
        "high_water_pages": st.hwm, "free_pages": st.free_pages, "in_use_bytes": st.in_use_bytes,
        "meta": [slot(&metas[0]), slot(&metas[1])],
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("file        {} ({size} bytes)", file.display());
        println!("page size   {}", st.page_size);
        println!("txid        {}", st.txid);
        println!("pages       {} ({} free)", st.hwm, st.free_pages);
        println!("in use      {} bytes", st.in_use_bytes);
        for (i, m) in metas.iter().enumerate() {
            match m {
                Ok(m) => println!(
                    "meta {i}      txid {} root {} freelist {} hwm {}",
                    m.txid, m.root, m.freelist, m.hwm
                ),
                Err(e) => println!("meta {i}      INVALID: {e}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(r: &CheckReport) -> Json {
    json!({
        "ok": r.is_ok(), "txid": r.txid, "page_size": r.page_size, "pages": r.hwm,
        "by_kind": {
            "meta": r.pages.meta, "branch": r.pages.branch, "leaf": r.pages.leaf,
            "overflow": r.pages.overflow, "freelist": r.pages.freelist, "free": r.pages.free,
        },
        "max_depth": r.max_depth, "buckets": r.buckets, "keys": r.keys,
        "problems": r.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

fn check(file: &PathBuf, as_json: bool) -> anyhow::Result<ExitCode> {
    let db = open(file)?;
    let r = db.check();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report_json(&r))?);
    } else {
        let c = r.pages;
        println!(
            "txid {}: {} pages (meta {}, branch {}, leaf {}, overflow {}, freelist {}, free {}), depth {}, {} buckets, {} keys",
            r.txid,
            r.hwm,
            c.meta,
            c.branch,
            c.leaf,
            c.overflow,
            c.freelist,
            c.free,
            r.max_depth,
            r.buckets,
            r.keys
        );
        for p in &r.problems {
            println!("PROBLEM: {p}");
        }
        println!("{}", if r.is_ok() { "OK" } else { "DAMAGED" });
    }
    Ok(if r.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A bucket found by a walk: its depth, its path of names, the bucket.
type Found<'a> = (usize, Vec<Vec<u8>>, Bucket<'a>);

/// Walks buckets depth first.
fn walk<'a>(
    b: Bucket<'a>,
    path: Vec<Vec<u8>>,
    depth: usize,
    out: &mut Vec<Found<'a>>,
) -> anyhow::Result<()> {
    out.push((depth, path.clone(), b));
    let mut c = b.cursor();
    let mut cur = c.first()?;
    while let Some((k, v)) = cur {
        if v == Value::Bucket {
            let mut p = path.clone();
            p.push(k.to_vec());
            walk(b.bucket(k)?.expect("listed as a bucket"), p, depth + 1, out)?;
        }
        cur = c.next()?;
    }
    Ok(())
}

fn all_buckets(r: &ReadTxn) -> anyhow::Result<Vec<Found<'_>>> {
    let mut out = Vec::new();
    for name in r.buckets()? {
        let b = r.bucket(&name)?.expect("listed");
        walk(b, vec![name], 0, &mut out)?;
    }
    Ok(out)
}

fn buckets(file: &PathBuf, as_json: bool) -> anyhow::Result<ExitCode> {
    let db = open(file)?;
    let r = db.begin_read();
    let mut rows = Vec::new();
    for (depth, path, b) in all_buckets(&r)? {
        let keys = b.iter().count();
        let name = path.iter().map(|p| show(p)).collect::<Vec<_>>().join("/");
        if as_json {
            rows.push(json!({"path": name, "keys": keys, "root_page": b.root_page()}));
        } else {
            println!(
                "{}{}  {keys} keys",
                "  ".repeat(depth),
                show(path.last().expect("named"))
            );
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn pages(file: &PathBuf, as_json: bool) -> anyhow::Result<ExitCode> {
    let db = open(file)?;
    let (report, uses) = db.check_pages();
    let r = db.begin_read();
    let mut rows = Vec::new();
    let mut id = 0u64;
    while (id as usize) < uses.len() {
        let u = uses[id as usize];
        let head = r.raw_page(id).ok().map(|b| *header(b));
        // Overflow and free-list runs say how long they are; free and
        // unaccounted pages are grouped while they last; nodes are one page.
        let end = match u {
            Some(Use::Overflow) | Some(Use::Freelist) => {
                id + head.map_or(1, |h| h.span.get().max(1) as u64)
            }
            Some(Use::Free) | None => {
                let mut e = id + 1;
                while (e as usize) < uses.len() && uses[e as usize] == u {
                    e += 1;
                }
                e
            }
            _ => id + 1,
        };
        let what = u.map_or("UNACCOUNTED", Use::name);
        let detail = match (u, head) {
            (Some(Use::Branch | Use::Leaf), Some(h)) => {
                format!("{} entries, txid {}", h.count.get(), h.txid.get())
            }
            (Some(Use::Overflow | Use::Freelist), Some(h)) => {
                let kind = PageKind::from_u8(h.kind).map_or("?", PageKind::name);
                format!("{kind} run, txid {}", h.txid.get())
            }
            _ => String::new(),
        };
        if as_json {
            rows.push(json!({"page": id, "pages": end - id, "use": what, "detail": detail}));
        } else if end - id > 1 {
            println!("{id:>10}..{:<10} {what:<11} {detail}", end - 1);
        } else {
            println!("{id:>10}   {:<10} {what:<11} {detail}", "");
        }
        id = end;
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"pages": rows, "check": report_json(&report)}))?
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dump(file: &PathBuf, bucket: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let db = open(file)?;
    let r = db.begin_read();
    let all = all_buckets(&r)?;
    let wanted: Vec<_> = match bucket {
        None => all,
        Some(p) => {
            let path: Vec<Vec<u8>> = p.split('/').map(|s| s.as_bytes().to_vec()).collect();
            let found: Vec<_> = all.into_iter().filter(|(_, q, _)| *q == path).collect();
            if found.is_empty() {
                anyhow::bail!("no bucket {p:?} in {}", file.display());
            }
            found
        }
    };
    let mut out = Vec::new();
    for (_, path, b) in wanted {
        let name = path.iter().map(|p| show(p)).collect::<Vec<_>>().join("/");
        if !as_json {
            println!("bucket {name}");
        }
        for kv in b.iter() {
            let (k, v) = kv?;
            if as_json {
                out.push(json!({"bucket": name, "key": show(k), "key_hex": hex(k), "value": show(v), "value_hex": hex(v)}));
            } else {
                println!("  {} = {}", show(k), show(v));
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}
