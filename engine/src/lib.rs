//! # cairn-engine — the storage engine
//!
//! cairn's backend, the role bbolt and etcd's `mvcc` package play for etcd:
//!
//! * [`btree`]: an embedded, crash-safe, single-writer / many-reader
//!   copy-on-write B+tree in one file, read through mmap, with named buckets.
//! * [`mvcc`]: etcd's data model on that tree — every change gets a revision,
//!   history is kept until compaction, readers and watchers ask for any
//!   revision still held.
//!
//! ## Invariants
//!
//! * On-disk keys of the `key` bucket are etcd's revision encoding
//!   ([`mvcc::revision`]), byte for byte, so etcd snapshots map onto cairn's
//!   buckets without translation.
//!
//! ## Never
//!
//! * Knows nothing of raft, gRPC or etcd's request types: the server applies
//!   requests, the engine stores revisions.
//! * `unsafe` only where pages and the mmap are touched, each with a `SAFETY:`
//!   comment.

pub mod btree;
pub mod mvcc;
