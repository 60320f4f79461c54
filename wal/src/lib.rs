//! # cairn-wal — the write-ahead log
//!
//! cairn's durability point: every acknowledged write is a record in this log
//! before anyone is told it succeeded. The raft node persists entries and hard
//! state here; the log itself knows nothing of raft — it stores four kinds of
//! records (entries with an index, a term and opaque bytes; hard state;
//! snapshot markers; opaque metadata).
//!
//! ## Shape
//!
//! * A directory of preallocated segment files named `<seq>-<first index>.wal`
//!   (16 hex digits each), made ahead of time off the write path and renamed into
//!   place so a crash never leaves a half-made one ([`segment`]).
//! * Records framed with length, type, crc32c and padding to 8 bytes
//!   ([`record`]); docs/design.md draws the bytes.
//! * Group commit: any number of threads and async tasks submit records; one
//!   leader at a time writes everything pending with one write and one
//!   fdatasync, then acknowledges all of it ([`Ticket`]).
//! * Two interchangeable write + fdatasync backends, io_uring and pwrite
//!   ([`BackendChoice`]).
//! * Recovery checks every checksum of every segment; a torn tail of the last
//!   segment is cut off and reported, any other damage is an error naming the
//!   file and byte offset ([`Wal::open`]).
//!
//! ## Use
//!
//! ```
//! use cairn_wal::{HardState, Record, Wal, WalOptions};
//!
//! # let tmp = tempfile::tempdir().unwrap();
//! # let dir = tmp.path().join("wal");
//! let wal = Wal::create(&dir, WalOptions::default(), b"member=1")?;
//! // Entries 1..=3, then a new leader replaces 3 with a newer term.
//! wal.append(vec![Record::entry(1, 1, "a"), Record::entry(2, 1, "b"), Record::entry(3, 1, "c")])?;
//! wal.append(vec![Record::entry(3, 2, "c'"), Record::HardState(HardState { term: 2, vote: 1, commit: 2 })])?;
//! drop(wal);
//!
//! let wal = Wal::open(&dir, WalOptions::default())?;
//! let log = wal.read_from(2)?;
//! assert_eq!(log.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), [(2, 1), (3, 2)]);
//! assert_eq!(log.hard_state.unwrap().commit, 2);
//! assert_eq!(log.metadata.as_deref(), Some(&b"member=1"[..]));
//! # Ok::<(), cairn_wal::WalError>(())
//! ```
//!
//! Many appenders: `submit` returns a [`Ticket`] right away (records are queued
//! in call order); `ticket.wait()` or `ticket.await` returns once they are
//! durable, sharing one fdatasync with everything queued alongside.
//!
//! ## Invariants
//!
//! * Nothing is acknowledged before the fdatasync covering it has returned.
//! * The log only ever appends. Replacing a suffix (a new raft leader
//!   overwriting conflicting entries) appends the new entries; readers apply
//!   "a later entry with index `i` replaces everything from `i` on", so recovery
//!   can only ever return the new suffix.
//! * After recovery, every byte past the last valid record of the last segment
//!   is zero, so stale bytes of a torn write are never read as records.
//! * Every segment begins by restating the latest metadata, snapshot marker and
//!   hard state, so releasing older segments never loses them.
//! * Entry indexes never skip (rules in [`scan`]).
//!
//! ## Never
//!
//! * Never skips damaged data silently, never guesses past it.
//! * Never writes into the middle of the log.
//! * Never retries after a failed fdatasync: the log poisons itself (the page
//!   cache can no longer be trusted) until reopened.
//!
//! `unsafe` appears once, in the io_uring backend, where the kernel is handed a
//! pointer to the write buffer; its `SAFETY:` comment states why that is sound.

mod commit;
mod error;
pub mod inspect;
mod io;
mod metrics;
pub mod record;
mod scan;
pub mod segment;
mod wal;
mod writer;

pub use commit::Ticket;
pub use error::{Result, WalError};
pub use io::{BackendChoice, BackendKind, DISABLE_IO_URING_ENV, io_uring_support};
pub use metrics::{FSYNC_BUCKETS, HistogramSnapshot, WalMetrics};
pub use record::{Entry, HardState, Record, RecordRef, RecordType, SnapshotMarker};
pub use scan::TornTail;
pub use wal::{AppendInfo, DurablePosition, LogContents, RecoveryReport, Wal, WalOptions};
