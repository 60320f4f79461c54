//! etcd's multi-version data model on cairn's B+tree.
//!
//! Every change gets a revision; history is kept until compaction; readers
//! and watchers ask for any revision still held.
//!
//! * [`revision`], [`kv`], [`schema`]: what is stored, byte for byte as etcd
//!   stores it.
//! * [`index`]: the in-memory key index (key → generations of revisions).
//! * [`store`]: the store — applying writes, reading snapshots, batched
//!   commits with the consistent index, compaction, hashing.
//! * [`watch`]: watchers and their streams.
//!
//! ## Invariants
//!
//! * The B+tree holds exactly the effects of the log entries up to the
//!   consistent index stored with them; an entry at or below it is never
//!   applied again.
//! * Revisions only grow; a request that changes keys takes exactly one main
//!   revision; readers never see part of one.
//! * Reads at or above the compaction revision see every key as it was.

mod backend;
pub mod error;
mod exec;
pub mod index;
pub mod kv;
pub mod request;
pub mod revision;
pub mod schema;
pub mod store;
pub mod watch;

pub use backend::{AuxOp, EntryId};
pub use error::{Error, Result};
pub use exec::LeaseLookup;
pub use index::{Found, Interval, KeyHistory, KeyIndex};
pub use kv::{Event, EventKind, KeyValue};
pub use request::*;
pub use revision::{Revision, RevisionKey};
pub use store::{
    Applied, COMMIT_BUCKETS, CommitLatency, Compaction, HashKv, Store, StoreOptions, StoreStats,
    WriteOutcome,
};
pub use watch::{WatchError, WatchOptions, WatchRequest, WatchResponse, WatchStream};
