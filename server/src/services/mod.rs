//! etcd's gRPC services.

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;
