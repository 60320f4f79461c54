//! # cairn-raftnode — the raft node
//!
//! Drives a raft-rs `RawNode` over cairn's WAL: storage, snapshots, the peer
//! transport, membership and ReadIndex, handing committed entries to a state
//! machine (the server's, in cairn) through a narrow interface.
//!
//! * [`node`]: start a member; propose, read, change the membership.
//! * [`driver`] (private): the thread that owns raft and the WAL and handles
//!   each `Ready` in raft's required order.
//! * [`apply`]: the state machine interface and the thread that feeds it
//!   (in a one-member cluster the driver applies small batches itself).
//! * [`storage`]: raft-rs's `Storage`, in memory over what the WAL holds.
//! * [`transport`]: messages and snapshots between members.
//! * [`member`], [`entry`], [`ids`]: membership, entry formats, etcd's ids.
//!
//! ## Invariants
//!
//! * Entries and hard state are persisted through the WAL (one write, one
//!   fdatasync per `Ready`) before a vote or an acknowledgement leaves the
//!   node; the leader sends its appends in parallel with its own fsync.
//! * The WAL is released only below an index the state machine holds
//!   durably, so a restart always finds every entry it must replay.
//! * A proposal's waiter is told "leader changed" only when another entry
//!   was applied at its index: the proposal certainly did not apply.
//! * Committed entries reach the state machine once each, in log order,
//!   whichever thread applies them.
//!
//! ## Never
//!
//! * Knows nothing of gRPC or etcd's request types: entries are opaque bytes.
//! * Never applies or acknowledges anything raft has not committed.

pub mod apply;
mod driver;
pub mod entry;
pub mod error;
pub mod ids;
mod logger;
pub mod member;
pub mod node;
mod recover;
pub mod storage;
pub mod transport;

pub use apply::{EntryId, MembershipChange, SnapshotSource, StateMachine};
pub use error::{Error, Result};
pub use member::Member;
pub use node::{Metrics, Node, NodeConfig, Role, Status};
