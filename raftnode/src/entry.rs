//! What the node writes into raft entries, and how it reads them back.
//!
//! A normal entry's data:
//!
//! ```text
//!  0      1                 9
//!  +------+-----------------+---------------------------+
//!  | kind | request id u64BE| payload                   |
//!  +------+-----------------+---------------------------+
//!  kind 1: a proposal for the state machine (payload opaque to the node)
//!  kind 2: a member's attributes or peer URLs (payload: member JSON)
//!  no data at all: the empty entry a new leader appends
//! ```
//!
//! A `ConfChangeV2` entry's context is the request id (8 bytes, big-endian)
//! followed, for an addition, by the new member's JSON.
//!
//! Request ids are unique per member, as etcd makes them: the low 16 bits of
//! the member id, then 48 bits of a counter seeded with the start time in
//! milliseconds (shifted left 8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::member::Member;

pub const KIND_PROPOSAL: u8 = 1;
pub const KIND_MEMBER_UPDATE: u8 = 2;
const HEADER: usize = 9;

/// A decoded normal entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A new leader's empty entry.
    Empty,
    Proposal {
        id: u64,
        data: &'a [u8],
    },
    MemberUpdate {
        id: u64,
        member: Member,
    },
}

pub fn encode(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(kind);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub fn decode(data: &[u8]) -> Result<Payload<'_>> {
    if data.is_empty() {
        return Ok(Payload::Empty);
    }
    if data.len() < HEADER {
        return Err(Error::Storage(format!(
            "entry of {} bytes has no header",
            data.len()
        )));
    }
    let id = u64::from_be_bytes(data[1..HEADER].try_into().expect("8 bytes"));
    let rest = &data[HEADER..];
    match data[0] {
        KIND_PROPOSAL => Ok(Payload::Proposal { id, data: rest }),
        KIND_MEMBER_UPDATE => Ok(Payload::MemberUpdate {
            id,
            member: serde_json::from_slice(rest)
                .map_err(|e| Error::Storage(format!("bad member update entry: {e}")))?,
        }),
        k => Err(Error::Storage(format!("unknown entry kind {k}"))),
    }
}

/// The context of a configuration change: the request id, then the added
/// member, if any.
pub fn encode_conf_context(id: u64, member: Option<&Member>) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    if let Some(m) = member {
        v.extend_from_slice(&serde_json::to_vec(m).expect("member serializes"));
    }
    v
}

pub fn decode_conf_context(ctx: &[u8]) -> Result<(u64, Option<Member>)> {
    if ctx.len() < 8 {
        return Err(Error::Storage(
            "configuration change without a request id".into(),
        ));
    }
    let id = u64::from_be_bytes(ctx[..8].try_into().expect("8 bytes"));
    let member = if ctx.len() > 8 {
        Some(
            serde_json::from_slice(&ctx[8..])
                .map_err(|e| Error::Storage(format!("bad member in configuration change: {e}")))?,
        )
    } else {
        None
    };
    Ok((id, member))
}

/// Unique request ids for one member.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    suffix: AtomicU64,
}

const SUFFIX_MASK: u64 = (1 << 48) - 1;

impl IdGenerator {
    pub fn new(member_id: u64) -> IdGenerator {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        IdGenerator {
            prefix: (member_id & 0xffff) << 48,
            suffix: AtomicU64::new((ms << 8) & SUFFIX_MASK),
        }
    }

    pub fn next(&self) -> u64 {
        let s = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.prefix | (s & SUFFIX_MASK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_errors() {
        let e = encode(KIND_PROPOSAL, 42, b"put");
        assert_eq!(
            decode(&e).unwrap(),
            Payload::Proposal {
                id: 42,
                data: b"put"
            }
        );
        assert_eq!(decode(&[]).unwrap(), Payload::Empty);
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&encode(9, 1, b"")).is_err());
        let m = Member {
            id: 7,
            name: "n".into(),
            ..Member::default()
        };
        let u = encode(KIND_MEMBER_UPDATE, 5, &serde_json::to_vec(&m).unwrap());
        assert_eq!(
            decode(&u).unwrap(),
            Payload::MemberUpdate {
                id: 5,
                member: m.clone()
            }
        );
        assert_eq!(
            decode_conf_context(&encode_conf_context(9, Some(&m))).unwrap(),
            (9, Some(m))
        );
        assert_eq!(
            decode_conf_context(&encode_conf_context(9, None)).unwrap(),
            (9, None)
        );
    }

    #[test]
    fn request_ids_are_unique_and_carry_the_member() {
        let g = IdGenerator::new(0xabcd_1234);
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert_eq!(a >> 48, 0x1234);
    }
}
