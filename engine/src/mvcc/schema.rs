//! The buckets of an MVCC store and the keys of its `meta` bucket — etcd's
//! schema, name for name and byte for byte, so that a cairn database and an
//! etcd `db` file hold the same data the same way.
//!
//! | bucket            | key                              | value                       |
//! |-------------------|----------------------------------|-----------------------------|
//! | `key`             | revision (17 B, 18 B tombstone)  | `mvccpb.KeyValue` protobuf  |
//! | `meta`            | `consistent_index`               | u64 big-endian              |
//! |                   | `term`                           | u64 big-endian              |
//! |                   | `scheduledCompactRev`            | revision (17 B, sub 0)      |
//! |                   | `finishedCompactRev`             | revision (17 B, sub 0)      |
//! | `lease`, `auth`, `authUsers`, `authRoles`, `members`, `members_removed`, `cluster`, `alarm` | the server's | the server's |

use super::error::{Error, Result};
use super::revision::{Revision, RevisionKey};

pub const KEY: &[u8] = b"key";
pub const META: &[u8] = b"meta";
pub const LEASE: &[u8] = b"lease";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const CLUSTER: &[u8] = b"cluster";
pub const ALARM: &[u8] = b"alarm";

/// Every bucket an MVCC store creates.
pub const BUCKETS: [&[u8]; 10] = [
    KEY,
    META,
    LEASE,
    AUTH,
    AUTH_USERS,
    AUTH_ROLES,
    MEMBERS,
    MEMBERS_REMOVED,
    CLUSTER,
    ALARM,
];

/// Buckets the server may write through [`super::Store::apply_aux`] (the
/// store owns `key` and `meta`).
pub fn is_aux_bucket(name: &[u8]) -> bool {
    BUCKETS.contains(&name) && name != KEY && name != META
}

pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const TERM: &[u8] = b"term";
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";

pub fn encode_u64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn decode_u64(name: &str, b: &[u8]) -> Result<u64> {
    let a: [u8; 8] = b
        .try_into()
        .map_err(|_| Error::Corrupt(format!("meta {name} is {} bytes, expected 8", b.len())))?;
    Ok(u64::from_be_bytes(a))
}

/// A compaction revision as etcd stores it: the revision key of `(rev, 0)`.
pub fn encode_compact(rev: i64) -> Vec<u8> {
    RevisionKey::live(Revision::new(rev, 0)).encode()
}

pub fn decode_compact(name: &str, b: &[u8]) -> Result<i64> {
    RevisionKey::decode(b)
        .map(|k| k.revision.main)
        .map_err(|e| Error::Corrupt(format!("meta {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_values_round_trip_in_etcds_encoding() {
        assert_eq!(encode_u64(258), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(decode_u64("x", &encode_u64(u64::MAX)).unwrap(), u64::MAX);
        assert!(decode_u64("x", &[1, 2]).is_err());
        let c = encode_compact(7);
        assert_eq!(c, [0, 0, 0, 0, 0, 0, 0, 7, b'_', 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_compact("c", &c).unwrap(), 7);
        assert!(is_aux_bucket(LEASE) && !is_aux_bucket(KEY) && !is_aux_bucket(b"other"));
    }
}
