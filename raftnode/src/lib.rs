//! # cairn-raftnode — the raft node
//!
//! Drives a raft-rs `RawNode` over cairn's WAL: storage, snapshots, the peer
//! transport, membership and ReadIndex, handing committed entries to the server
//! through a narrow apply interface.
//!
//! So far: how members and clusters are identified ([`ids`]), exactly as etcd
//! derives them, so a cairn member and an etcd member configured alike carry
//! the same ids.
//!
//! ## Invariants
//!
//! * Entries and hard state are persisted through the WAL before a vote or an
//!   acknowledgement leaves the node.
//!
//! ## Never
//!
//! * Knows nothing of gRPC or etcd's request types: entries are opaque bytes.

pub mod ids;
pub mod transport;
