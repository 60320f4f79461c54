//! etcd's gRPC services, and gRPC's standard health service.

pub mod cluster;
pub mod health;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;
