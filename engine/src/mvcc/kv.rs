//! The key-value record stored under each revision: etcd's `mvccpb.KeyValue`,
//! encoded exactly as etcd encodes it (protobuf, fields 1–6 in order, zero
//! values omitted), so the `key` bucket holds the same bytes in cairn and in
//! etcd and snapshots convert by copying.
//!
//! ```text
//! field 1 key              bytes  (tag 0x0a, length, bytes)
//! field 2 create_revision  int64  (tag 0x10, varint)
//! field 3 mod_revision     int64  (tag 0x18, varint)
//! field 4 version          int64  (tag 0x20, varint)
//! field 5 value            bytes  (tag 0x2a, length, bytes)
//! field 6 lease            int64  (tag 0x30, varint)
//! ```
//!
//! A deletion (tombstone) record holds only the key.

use std::sync::Arc;

/// A key at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the put that (last) created the key.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
    /// Puts since creation (1 for the creating put).
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease the key is attached to, or 0.
    pub lease: i64,
}

/// A record that is not a valid `KeyValue` encoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed key-value record: {0}")]
pub struct DecodeError(pub &'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(DecodeError("truncated varint"))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint longer than 10 bytes"))
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    if !b.is_empty() {
        out.push(tag);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

fn put_int(out: &mut Vec<u8>, tag: u8, v: i64) {
    if v != 0 {
        out.push(tag);
        put_varint(out, v as u64);
    }
}

/// One field: (field number, varint value or byte slice).
enum Field<'a> {
    Int(u32, u64),
    Bytes(u32, &'a [u8]),
}

/// Walks the fields of a protobuf message, skipping kinds it does not use.
fn fields<'a>(
    b: &'a [u8],
    mut f: impl FnMut(Field<'a>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut at = 0;
    while at < b.len() {
        let tag = get_varint(b, &mut at)?;
        let (field, wire) = ((tag >> 3) as u32, tag & 7);
        let go_on = match wire {
            0 => f(Field::Int(field, get_varint(b, &mut at)?))?,
            2 => {
                let len = get_varint(b, &mut at)? as usize;
                let end = at
                    .checked_add(len)
                    .filter(|&e| e <= b.len())
                    .ok_or(DecodeError("field runs past the end"))?;
                let v = &b[at..end];
                at = end;
                f(Field::Bytes(field, v))?
            }
            1 => {
                at = at
                    .checked_add(8)
                    .filter(|&e| e <= b.len())
                    .ok_or(DecodeError("truncated fixed64"))?;
                true
            }
            5 => {
                at = at
                    .checked_add(4)
                    .filter(|&e| e <= b.len())
                    .ok_or(DecodeError("truncated fixed32"))?;
                true
            }
            _ => return Err(DecodeError("unsupported wire type")),
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

impl KeyValue {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_bytes(out, 0x0a, &self.key);
        put_int(out, 0x10, self.create_revision);
        put_int(out, 0x18, self.mod_revision);
        put_int(out, 0x20, self.version);
        put_bytes(out, 0x2a, &self.value);
        put_int(out, 0x30, self.lease);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.key.len() + self.value.len() + 40);
        self.encode_into(&mut out);
        out
    }

    /// The record of a deletion: only the key.
    pub fn encode_tombstone(key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(key.len() + 4);
        Self::encode_tombstone_into(key, &mut out);
        out
    }

    /// [`KeyValue::encode_tombstone`], appended to `out`.
    pub fn encode_tombstone_into(key: &[u8], out: &mut Vec<u8>) {
        put_bytes(out, 0x0a, key);
    }

    pub fn decode(b: &[u8]) -> Result<KeyValue, DecodeError> {
        let mut kv = KeyValue::default();
        fields(b, |f| {
            match f {
                Field::Bytes(1, v) => kv.key = v.to_vec(),
                Field::Int(2, v) => kv.create_revision = v as i64,
                Field::Int(3, v) => kv.mod_revision = v as i64,
                Field::Int(4, v) => kv.version = v as i64,
                Field::Bytes(5, v) => kv.value = v.to_vec(),
                Field::Int(6, v) => kv.lease = v as i64,
                _ => {}
            }
            Ok(true)
        })?;
        Ok(kv)
    }

    /// Just the key of an encoded record, without copying anything.
    pub fn decode_key(b: &[u8]) -> Result<&[u8], DecodeError> {
        let mut key: &[u8] = &[];
        // Field 1 comes first in every record cairn or etcd writes; scan on
        // anyway if another encoder put it later.
        let mut at = 0;
        while at < b.len() {
            let tag = get_varint(b, &mut at)?;
            match tag & 7 {
                0 => {
                    get_varint(b, &mut at)?;
                }
                2 => {
                    let len = get_varint(b, &mut at)? as usize;
                    let end = at
                        .checked_add(len)
                        .filter(|&e| e <= b.len())
                        .ok_or(DecodeError("field runs past the end"))?;
                    if tag >> 3 == 1 {
                        key = &b[at..end];
                        break;
                    }
                    at = end;
                }
                _ => return Err(DecodeError("unsupported wire type")),
            }
        }
        Ok(key)
    }
}

/// The fields of an encoded record the key index needs, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl<'a> RecordHead<'a> {
    pub fn parse(b: &'a [u8]) -> Result<RecordHead<'a>, DecodeError> {
        let mut h = RecordHead {
            key: &[],
            create_revision: 0,
            version: 0,
            lease: 0,
        };
        fields(b, |f| {
            match f {
                Field::Bytes(1, v) => h.key = v,
                Field::Int(2, v) => h.create_revision = v as i64,
                Field::Int(4, v) => h.version = v as i64,
                Field::Int(6, v) => h.lease = v as i64,
                _ => {}
            }
            Ok(true)
        })?;
        Ok(h)
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change: a put carries the new record; a deletion carries only the key
/// and, as `mod_revision`, the revision of the deletion (as etcd's do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: Arc<KeyValue>,
    /// The key before this change, when a watcher asked for it.
    pub prev_kv: Option<Arc<KeyValue>>,
}

impl Event {
    /// The event a stored record stands for (`tombstone`: a deletion at
    /// `revision`).
    pub fn from_record(bytes: &[u8], revision: i64, tombstone: bool) -> Result<Event, DecodeError> {
        let mut kv = KeyValue::decode(bytes)?;
        let kind = if tombstone {
            kv.mod_revision = revision;
            EventKind::Delete
        } else {
            EventKind::Put
        };
        Ok(Event {
            kind,
            kv: Arc::new(kv),
            prev_kv: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoding_matches_etcds_bytes() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: b"bar".to_vec(),
            lease: 7,
        };
        assert_eq!(
            kv.encode(),
            [
                0x0a, 3, b'f', b'o', b'o', 0x10, 2, 0x18, 3, 0x20, 1, 0x2a, 3, b'b', b'a', b'r',
                0x30, 7
            ]
        );
        assert_eq!(
            KeyValue::encode_tombstone(b"foo"),
            [0x0a, 3, b'f', b'o', b'o']
        );
        // Zero values are omitted.
        let bare = KeyValue {
            key: b"k".to_vec(),
            mod_revision: 300,
            ..KeyValue::default()
        };
        assert_eq!(bare.encode(), [0x0a, 1, b'k', 0x18, 0xac, 0x02]);
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(KeyValue::decode(&[0x0a, 9, b'x']).is_err());
        assert!(KeyValue::decode(&[0x10]).is_err());
        assert!(KeyValue::decode(&[0x0b]).is_err());
    }

    proptest! {
        #[test]
        fn records_round_trip(key in proptest::collection::vec(any::<u8>(), 1..40),
                              value in proptest::collection::vec(any::<u8>(), 0..300),
                              c in any::<i64>(), m in any::<i64>(), v in any::<i64>(), l in any::<i64>()) {
            let kv = KeyValue { key, create_revision: c, mod_revision: m, version: v, value, lease: l };
            let b = kv.encode();
            prop_assert_eq!(KeyValue::decode(&b).unwrap(), kv.clone());
            prop_assert_eq!(KeyValue::decode_key(&b).unwrap(), &kv.key[..]);
            let h = RecordHead::parse(&b).unwrap();
            prop_assert_eq!((h.key, h.create_revision, h.version, h.lease), (&kv.key[..], c, v, l));
        }
    }
}
