//! Revisions and their key encoding in the `key` bucket.
//!
//! A revision is `(main, sub)`: `main` grows by one per write transaction,
//! `sub` numbers the changes inside it. In the `key` bucket a revision is the
//! key, encoded as etcd encodes it so the bucket sorts in revision order:
//!
//! ```text
//!  0                 8     9                 17    18
//!  +-----------------+-----+-----------------+-----+
//!  | main  u64 BE    | '_' | sub  u64 BE     | 't' |   <- 't' only on tombstones
//!  +-----------------+-----+-----------------+-----+
//! ```

use std::fmt;

/// Bytes of an encoded revision without the tombstone mark.
pub const REVISION_LEN: usize = 17;
/// Bytes of an encoded tombstone revision.
pub const TOMBSTONE_LEN: usize = 18;

const SEPARATOR: u8 = b'_';
const TOMBSTONE: u8 = b't';

/// A point in the store's history. Orders by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.main, self.sub)
    }
}

/// A decoded `key`-bucket key: a revision, possibly marking a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevisionKey {
    pub revision: Revision,
    pub tombstone: bool,
}

/// Why bytes are not a revision key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevisionKeyError {
    #[error("revision key is {0} bytes, expected 17 or 18")]
    Length(usize),
    #[error("revision key has no '_' separator at byte 8")]
    Separator,
    #[error("revision key's 18th byte is not the tombstone mark 't'")]
    Mark,
}

impl RevisionKey {
    pub fn live(revision: Revision) -> Self {
        RevisionKey {
            revision,
            tombstone: false,
        }
    }

    pub fn tombstone(revision: Revision) -> Self {
        RevisionKey {
            revision,
            tombstone: true,
        }
    }

    /// The encoded key; 17 bytes, or 18 for a tombstone.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOMBSTONE_LEN);
        out.extend_from_slice(&(self.revision.main as u64).to_be_bytes());
        out.push(SEPARATOR);
        out.extend_from_slice(&(self.revision.sub as u64).to_be_bytes());
        if self.tombstone {
            out.push(TOMBSTONE);
        }
        out
    }

    /// The encoded key in a stack buffer: `buf[..len]`.
    pub fn to_array(&self) -> ([u8; TOMBSTONE_LEN], usize) {
        let mut buf = [0u8; TOMBSTONE_LEN];
        buf[..8].copy_from_slice(&(self.revision.main as u64).to_be_bytes());
        buf[8] = SEPARATOR;
        buf[9..17].copy_from_slice(&(self.revision.sub as u64).to_be_bytes());
        if self.tombstone {
            buf[17] = TOMBSTONE;
            (buf, TOMBSTONE_LEN)
        } else {
            (buf, REVISION_LEN)
        }
    }

    pub fn decode(b: &[u8]) -> Result<Self, RevisionKeyError> {
        if b.len() != REVISION_LEN && b.len() != TOMBSTONE_LEN {
            return Err(RevisionKeyError::Length(b.len()));
        }
        if b[8] != SEPARATOR {
            return Err(RevisionKeyError::Separator);
        }
        if b.len() == TOMBSTONE_LEN && b[17] != TOMBSTONE {
            return Err(RevisionKeyError::Mark);
        }
        let main = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")) as i64;
        let sub = u64::from_be_bytes(b[9..17].try_into().expect("8 bytes")) as i64;
        Ok(RevisionKey {
            revision: Revision { main, sub },
            tombstone: b.len() == TOMBSTONE_LEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_matches_etcds_bytes() {
        let k = RevisionKey::live(Revision::new(2, 1)).encode();
        assert_eq!(k, [0, 0, 0, 0, 0, 0, 0, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 1]);
        let t = RevisionKey::tombstone(Revision::new(2, 1)).encode();
        assert_eq!(t.len(), 18);
        assert_eq!(t[17], b't');
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert_eq!(
            RevisionKey::decode(&[0; 16]),
            Err(RevisionKeyError::Length(16))
        );
        assert_eq!(
            RevisionKey::decode(&[0; 17]),
            Err(RevisionKeyError::Separator)
        );
        let mut t = RevisionKey::tombstone(Revision::new(1, 0)).encode();
        t[17] = b'x';
        assert_eq!(RevisionKey::decode(&t), Err(RevisionKeyError::Mark));
    }

    proptest! {
        #[test]
        fn keys_round_trip_and_sort_in_revision_order(
            a in (0i64..i64::MAX, 0i64..i64::MAX), b in (0i64..i64::MAX, 0i64..i64::MAX), ta: bool, tb: bool,
        ) {
            let ka = RevisionKey { revision: Revision::new(a.0, a.1), tombstone: ta };
            let kb = RevisionKey { revision: Revision::new(b.0, b.1), tombstone: tb };
            prop_assert_eq!(RevisionKey::decode(&ka.encode()), Ok(ka));
            let (buf, len) = ka.to_array();
            prop_assert_eq!(&buf[..len], &ka.encode()[..]);
            if ka.revision != kb.revision {
                prop_assert_eq!(ka.encode().cmp(&kb.encode()), ka.revision.cmp(&kb.revision));
            }
        }
    }
}
