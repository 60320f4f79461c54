//! An embedded, crash-safe, single-writer / many-reader copy-on-write B+tree
//! in one file, with named (and nested) buckets — cairn's backend.
//!
//! * Readers see the file through a read-only mmap and a pinned meta: a
//!   consistent snapshot that never blocks the writer and is never blocked by
//!   it. When the file grows, new transactions get a new mapping while old
//!   readers keep theirs.
//! * The writer changes nodes in memory and commits by writing them to newly
//!   allocated pages, then a new meta (see [`txn`] for the protocol and its
//!   safety). Pages freed by a transaction are reused only when no reader that
//!   could see them is left ([`freelist`]).
//! * Formats are drawn in [`page`], [`meta`] and [`freelist`], and in
//!   docs/design.md.

pub mod bucket;
pub mod check;
pub mod cursor;
pub mod db;
pub mod defrag;
pub mod error;
pub mod freelist;
pub mod meta;
mod node;
pub mod page;
pub mod storage;
mod tree;
pub mod txn;

pub use bucket::{Bucket, BucketMut};
pub use check::{CheckReport, PageCounts, PageMap, Problem, Use, check_snapshot};
pub use cursor::{Cursor, Range, Value};
pub use db::{Db, Options, Stats, read_metas};
pub use defrag::{DefragOptions, DefragReport};
pub use error::{Error, Result};
pub use meta::Meta;
pub use node::{Mapping, max_key};
pub use storage::{FaultyStorage, FileStorage, Storage};
pub use txn::{ReadTxn, WriteTxn};
