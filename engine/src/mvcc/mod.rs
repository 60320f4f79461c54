//! etcd's multi-version data model.

pub mod revision;

pub use revision::{Revision, RevisionKey};
