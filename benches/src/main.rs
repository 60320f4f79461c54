//! # cairn-bench — measuring cairn
//!
//! Benchmarks as programs, never as timed assertions in tests. Every figure in
//! docs/benchmarks.md comes from a command of this tool (or a criterion bench)
//! recorded beside it.
//!
//! * `cairn-bench wal`: durable append throughput and latency of the WAL for
//!   given appender counts, backends and batch limits, beside a bare append +
//!   fdatasync loop on the same disk, in rounds that alternate between them;
//!   medians over rounds.
//! * `cairn-bench btree-defrag`: the longest stall a writer sees while a large,
//!   fragmented database is defragmented online.
//! * `cairn-bench mvcc-put`: the MVCC store alone, in process (etcd's
//!   `tools/benchmark mvcc put`), with single-key reads at head and at an old
//!   revision and the time to reopen the store; beside etcd 3.4's own store
//!   (`benches/etcd-mvcc/`) with `--etcd-bench`.
//! * `cairn-bench mvcc-compact`: the longest pause a steady writer sees while
//!   a 1,000,000-revision history is compacted.
//! * `cairn-bench raft-propose`: proposals per second committed by 1- and
//!   3-member raft clusters on loopback, with fsyncs per second.
//! * `cairn-bench restart`: time to "ready" of the `cairn` binary, empty and
//!   after a restart with 1,000,000 keys, beside etcd's.
//! * `cairn-bench put | range | txn-put | txn-mixed | watch | watch-latency |
//!   lease-keepalive`: load over the etcd v3 gRPC API (etcd's
//!   `tools/benchmark` workloads and flags), against cairn or etcd alike;
//!   etcd's report (latency histogram and distribution, errors by message)
//!   or, with `--json`, one JSON object.
//! * `cairn-bench compare`: one of those workloads against two servers A and
//!   B (or two it starts itself: cairn and etcd), in alternating rounds;
//!   per-side medians and A/B ratios as a Markdown table or JSON, optionally
//!   the servers' resident memory and an SVG of the latency distributions.
//! * `cairn-bench tune`: the storage knobs (WAL batch limits and backend,
//!   backend batch interval and limit, page size) swept one at a time or as
//!   a grid, on the MVCC store alone, on raft + WAL + MVCC in process, and
//!   end to end on the `cairn` binary; medians and ratios to the defaults.

mod btree;
mod compare;
mod load;
mod mvcc;
mod mvcc_compact;
mod raft;
mod restart;
mod rng;
mod servers;
mod tune;
mod wal;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cairn-bench", version, about = "Benchmarks for cairn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WAL group-commit throughput and latency (the storage tuning harness).
    Wal(wal::WalArgs),
    /// Longest writer stall during online defragmentation of a large,
    /// fragmented database.
    BtreeDefrag(btree::DefragArgs),
    /// Random puts in batches on a loaded table, time split into puts and
    /// commit.
    BtreePut(btree::PutArgs),
    /// The MVCC store in process: puts from one applier, ranges at head and
    /// at an old revision, reopen time; optionally beside etcd 3.4's store.
    MvccPut(mvcc::MvccPutArgs),
    /// A steady writer while a large history is compacted: its latency and
    /// longest pause, against a baseline without compaction.
    MvccCompact(mvcc_compact::CompactArgs),
    /// Proposals per second through a raft cluster of in-process members on
    /// loopback, with the leader's fsyncs per second.
    RaftPropose(raft::RaftArgs),
    /// Time to "ready" of the server binary on an empty data dir and after a
    /// restart with many keys, beside etcd's with --etcd.
    Restart(restart::RestartArgs),
    #[command(flatten)]
    Load(load::LoadCommand),
    /// One load workload against two servers (or two it starts: cairn and
    /// etcd), alternating rounds; medians and A/B ratios.
    Compare(Box<compare::CompareArgs>),
    /// Storage knobs swept one at a time (or as a grid) on the store alone,
    /// raft + WAL + store in process, and the server end to end.
    Tune(tune::TuneArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Wal(args) => wal::run(args),
        Command::BtreeDefrag(args) => btree::run(args),
        Command::BtreePut(args) => btree::run_put(args),
        Command::MvccPut(args) => mvcc::run(args),
        Command::MvccCompact(args) => mvcc_compact::run(args),
        Command::RaftPropose(args) => raft::run(args),
        Command::Restart(args) => restart::run(args),
        Command::Load(cmd) => load::cli::main(cmd),
        Command::Compare(args) => compare::run(*args),
        Command::Tune(args) => tune::run(args),
    }
}
