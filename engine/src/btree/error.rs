//! The B+tree's errors.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("db: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A page is not what the tree expects. Never silently skipped.
    #[error("db: corrupt page {page}: {reason}")]
    CorruptPage { page: u64, reason: String },

    #[error("db: corrupt: {0}")]
    Corrupt(String),

    #[error("db: no valid meta page in {}", .0.display())]
    NoValidMeta(PathBuf),

    #[error("db: {} is locked by another process", .0.display())]
    Locked(PathBuf),

    #[error("db: invalid options: {0}")]
    InvalidOptions(String),

    #[error("db: bucket {0:?} not found")]
    BucketNotFound(String),

    #[error("db: bucket {0:?} already exists")]
    BucketExists(String),

    /// A key names a bucket where a value was expected, or the reverse.
    #[error("db: key {0:?} holds a bucket, not a value (or the reverse)")]
    IncompatibleValue(String),

    #[error("db: key must not be empty")]
    EmptyKey,

    #[error("db: key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLarge { len: usize, max: usize },

    #[error("db: value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge { len: usize, max: usize },

    /// An earlier commit failed part-way; the in-memory allocator can no longer
    /// be trusted until the database is reopened.
    #[error("db: refusing writes after a failed commit; reopen the database")]
    Poisoned,

    #[error("db: {0}")]
    ReadOnly(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A key for messages: UTF-8 if it is, else hex.
pub(crate) fn show_key(k: &[u8]) -> String {
    match std::str::from_utf8(k) {
        Ok(s) => s.to_string(),
        Err(_) => k.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
