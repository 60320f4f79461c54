//! The MVCC store's errors.
//!
//! Request errors carry etcd's own messages (the server's error table maps
//! each variant to etcd's client-facing string and gRPC code); the rest are
//! failures of the store itself.

use crate::btree;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or compaction at a revision that compaction has removed.
    #[error("mvcc: required revision has been compacted")]
    Compacted,

    /// A read or compaction above the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,

    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,

    /// A put names a lease the lease lookup does not know.
    #[error("lease not found")]
    LeaseNotFound,

    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,

    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,

    #[error("etcdserver: key is not provided")]
    EmptyKey,

    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,

    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,

    #[error("mvcc: store is closed")]
    Closed,

    /// The B+tree failed; the store refuses writes afterwards.
    #[error("mvcc: backend: {0}")]
    Backend(#[from] btree::Error),

    /// A record in the `key` bucket or `meta` bucket is not what the store wrote.
    #[error("mvcc: corrupt store: {0}")]
    Corrupt(String),

    /// An earlier backend failure; reopen the store (the server replays its log).
    #[error("mvcc: store failed earlier and refuses writes: {0}")]
    Failed(String),
}

impl Error {
    /// Whether this error leaves the store unusable (as opposed to rejecting
    /// one request).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Backend(_) | Error::Corrupt(_) | Error::Failed(_) | Error::Closed
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
