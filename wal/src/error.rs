//! The one error type of the WAL.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the WAL.
///
/// Errors are `Clone` because one failed write batch must be reported to every
/// appender whose records were in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An operating-system call failed.
    #[error("wal: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },

    /// Bytes on disk are not what the WAL wrote. Never silently skipped.
    #[error("wal: corrupt data in {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The entries on disk skip an index.
    #[error(
        "wal: index gap in {} at byte offset {offset}: expected an entry index <= {expected}, found {found}",
        path.display()
    )]
    Gap {
        path: PathBuf,
        offset: u64,
        expected: u64,
        found: u64,
    },

    /// A segment in the middle of the log is missing.
    #[error("wal: missing segment before {}: expected sequence {expected}, found {found}", path.display())]
    MissingSegment {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    #[error("wal: no write-ahead log in {}", .0.display())]
    NotFound(PathBuf),

    #[error("wal: a write-ahead log already exists in {}", .0.display())]
    AlreadyExists(PathBuf),

    #[error("wal: {} is locked by another process", .0.display())]
    Locked(PathBuf),

    /// An appended entry would leave a hole in the log.
    #[error("wal: append rejected: entry index {found} leaves a gap after index {last}")]
    IndexGap { last: u64, found: u64 },

    #[error("wal: append rejected: entry index 0 is not valid")]
    ZeroIndex,

    #[error(
        "wal: append rejected: a {size}-byte record does not fit in a {segment_size}-byte segment"
    )]
    RecordTooLarge { size: u64, segment_size: u64 },

    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),

    /// A write or fdatasync failed earlier; after that the page cache cannot be
    /// trusted, so the log refuses all further appends until it is reopened.
    #[error("wal: refusing appends after an earlier write failure: {0}")]
    Poisoned(Arc<WalError>),

    #[error("wal: closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        WalError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
