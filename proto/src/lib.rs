//! # cairn-proto — etcd's v3 wire API
//!
//! Generated Rust types for cairn's own `.proto` files (under `proto/`), which
//! state etcd 3.4's v3 API field for field (names, numbers, types), so that
//! every etcd client speaks to cairn unchanged:
//!
//! * prost messages, one module per proto package: [`etcdserverpb`],
//!   [`mvccpb`], [`authpb`], [`v3lockpb`], [`v3electionpb`], and the storage
//!   record [`leasepb`];
//! * tonic servers and clients for every service: `etcdserverpb::kv_server::{Kv,
//!   KvServer}`, `etcdserverpb::kv_client::KvClient`, likewise `watch_*`,
//!   `lease_*`, `cluster_*`, `maintenance_*`, `auth_*`, and
//!   `v3lockpb::lock_*`, `v3electionpb::election_*` (gRPC paths such as
//!   `/etcdserverpb.KV/Range`), and gRPC's standard health service,
//!   [`grpc_health_v1`] (`/grpc.health.v1.Health/Check`);
//! * cairn's raft entry, [`etcdserverpb::InternalRaftRequest`];
//! * serde `Serialize`/`Deserialize` for every message, following etcd's JSON
//!   gateway, with the helpers in [`json`].
//!
//! Rust names are prost's snake-casing of etcd's (`ID` → `id`, `grantedTTL` →
//! `granted_ttl`, `isLearner` → `is_learner`), except `peerURLs` /
//! `clientURLs`, which are `peer_urls` / `client_urls`.
//!
//! ## Invariants
//!
//! * A message's field numbers and types never differ from etcd's; tests pin
//!   the wire bytes.
//! * The JSON of a message is what etcd's gateway prints and accepts; tests
//!   pin the text.
//! * Built by `build.rs` with `protox`, without a system `protoc`.
//!
//! ## Never
//!
//! * Holds no logic: validation, conversions and semantics live in the server.
//! * Never renumbers or renames a field to suit Rust: the .proto files speak
//!   etcd's language, and only generated Rust identifiers may differ.

pub mod codec;
pub mod json;

/// etcd's `mvccpb` package: stored key-values and watch events.
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: user and role records and permissions.
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: the KV, Watch, Lease, Cluster, Maintenance
/// and Auth services with their messages, and cairn's raft entry
/// ([`InternalRaftRequest`](etcdserverpb::InternalRaftRequest)).
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `leasepb` package: the `lease` bucket's record.
pub mod leasepb {
    include!(concat!(env!("OUT_DIR"), "/leasepb.rs"));
    include!(concat!(env!("OUT_DIR"), "/leasepb.serde.rs"));
}

/// etcd's `v3lockpb` package: the Lock service.
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package: the Election service.
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// gRPC's standard `grpc.health.v1` package: the Health service etcd serves
/// beside its own (no JSON: it has no gateway path).
pub mod grpc_health_v1 {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}
