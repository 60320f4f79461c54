//! # cairnutl — offline inspection for operators
//!
//! Reads cairn's on-disk state without a running server and without changing
//! it: `cairnutl wal dump DIR` lists every segment and record, `cairnutl wal
//! verify DIR` says whether the log is sound; `cairnutl db
//! info|check|buckets|pages|dump FILE` does the same for the database file.
//! `--json` gives machines the same.
//!
//! ## Never
//!
//! * Never writes, locks or repairs what it inspects: safe beside a live server.
//!
//! Exit status: 0 sound; 1 damaged (or unreadable); 3 a torn tail that opening
//! the log would cut off; 2 a usage error.

mod db;
mod wal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairnutl",
    version,
    about = "Offline inspection of cairn's data directory"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The write-ahead log.
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// The database (B+tree) file.
    #[command(subcommand)]
    Db(db::DbCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wal(c) => wal::run(c),
        Command::Db(c) => db::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairnutl: {e:#}");
            ExitCode::from(1)
        }
    }
}
