//! Records and their on-disk framing.
//!
//! ```text
//!  0        4        8    9    10       12       16
//!  +--------+--------+----+----+--------+--------+------------------+---------+
//!  | crc32c | len    |type|flag| rsvd   | batch  | payload          | pad 0-7 |
//!  | u32 LE | u32 LE | u8 | u8 | u16=0  | u32 LE | len bytes        | zeros   |
//!  +--------+--------+----+----+--------+--------+------------------+---------+
//! ```
//!
//! * `crc32c` (Castagnoli) covers every byte of the frame after itself: the rest of
//!   the header, the payload and the padding. A flipped bit anywhere in a frame is
//!   therefore caught, padding included.
//! * `len` is the payload length; the frame is `16 + len` rounded up to 8 bytes.
//! * `batch` is the low 32 bits of the write batch the record was made durable in.
//!   Recovery uses it to tell a torn final batch from corruption of an
//!   acknowledged one (see `scan`).
//! * A header of sixteen zero bytes marks the end of the records in a segment:
//!   segments are preallocated with zeros and type 0 is never written.

use std::fmt;

/// Bytes of framing before each payload.
pub const FRAME_HEADER_LEN: usize = 16;
/// Every frame starts at a multiple of this.
pub const FRAME_ALIGN: usize = 8;

/// The kind of a record, as stored in byte 8 of its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    /// A log entry: index, term and opaque bytes.
    Entry = 1,
    /// The raft hard state: term, vote, commit.
    HardState = 2,
    /// A snapshot marker: the index and term a snapshot covers, plus opaque bytes.
    Snapshot = 3,
    /// Opaque metadata, e.g. member and cluster ids.
    Metadata = 4,
}

impl RecordType {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordType::Entry),
            2 => Some(RecordType::HardState),
            3 => Some(RecordType::Snapshot),
            4 => Some(RecordType::Metadata),
            _ => None,
        }
    }

    /// Lower-case name used by the inspector.
    pub fn name(self) -> &'static str {
        match self {
            RecordType::Entry => "entry",
            RecordType::HardState => "hardstate",
            RecordType::Snapshot => "snapshot",
            RecordType::Metadata => "metadata",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A log entry. `data` is opaque to the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// Raft's persistent voting state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Records that a snapshot covering everything up to `index` exists.
/// `data` is opaque (the raft node keeps its configuration state there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// One record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    Snapshot(SnapshotMarker),
    Metadata(Vec<u8>),
}

/// A decoded record borrowing its bytes from the segment buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRef<'a> {
    Entry {
        index: u64,
        term: u64,
        data: &'a [u8],
    },
    HardState(HardState),
    Snapshot {
        index: u64,
        term: u64,
        data: &'a [u8],
    },
    Metadata(&'a [u8]),
}

impl Record {
    pub fn entry(index: u64, term: u64, data: impl Into<Vec<u8>>) -> Self {
        Record::Entry(Entry {
            index,
            term,
            data: data.into(),
        })
    }

    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Entry(e) => RecordRef::Entry {
                index: e.index,
                term: e.term,
                data: &e.data,
            },
            Record::HardState(hs) => RecordRef::HardState(*hs),
            Record::Snapshot(s) => RecordRef::Snapshot {
                index: s.index,
                term: s.term,
                data: &s.data,
            },
            Record::Metadata(m) => RecordRef::Metadata(m),
        }
    }

    /// Bytes this record occupies on disk, framing and padding included.
    pub fn frame_len(&self) -> usize {
        self.as_ref().frame_len()
    }
}

impl<'a> RecordRef<'a> {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordRef::Entry { .. } => RecordType::Entry,
            RecordRef::HardState(_) => RecordType::HardState,
            RecordRef::Snapshot { .. } => RecordType::Snapshot,
            RecordRef::Metadata(_) => RecordType::Metadata,
        }
    }

    pub fn payload_len(&self) -> usize {
        match self {
            RecordRef::Entry { data, .. } | RecordRef::Snapshot { data, .. } => 16 + data.len(),
            RecordRef::HardState(_) => 24,
            RecordRef::Metadata(m) => m.len(),
        }
    }

    pub fn frame_len(&self) -> usize {
        frame_len_for_payload(self.payload_len())
    }

    pub fn to_owned(&self) -> Record {
        match *self {
            RecordRef::Entry { index, term, data } => Record::Entry(Entry {
                index,
                term,
                data: data.to_vec(),
            }),
            RecordRef::HardState(hs) => Record::HardState(hs),
            RecordRef::Snapshot { index, term, data } => Record::Snapshot(SnapshotMarker {
                index,
                term,
                data: data.to_vec(),
            }),
            RecordRef::Metadata(m) => Record::Metadata(m.to_vec()),
        }
    }

    /// Appends the framed record to `out`. `out.len()` must be 8-aligned relative
    /// to the frame's position in the segment, which holds as long as only frames
    /// are appended to a buffer that started aligned.
    pub fn encode_into(&self, batch: u32, out: &mut Vec<u8>) {
        let payload_len = self.payload_len();
        let start = out.len();
        let total = frame_len_for_payload(payload_len);
        out.reserve(total);
        out.extend_from_slice(&[0u8; 4]); // crc, filled in below
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.push(self.record_type() as u8);
        out.push(0); // flags
        out.extend_from_slice(&[0u8; 2]); // reserved
        out.extend_from_slice(&batch.to_le_bytes());
        match *self {
            RecordRef::Entry { index, term, data } | RecordRef::Snapshot { index, term, data } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&term.to_le_bytes());
                out.extend_from_slice(data);
            }
            RecordRef::HardState(hs) => {
                out.extend_from_slice(&hs.term.to_le_bytes());
                out.extend_from_slice(&hs.vote.to_le_bytes());
                out.extend_from_slice(&hs.commit.to_le_bytes());
            }
            RecordRef::Metadata(m) => out.extend_from_slice(m),
        }
        out.resize(start + total, 0);
        let crc = crc32c::crc32c(&out[start + 4..start + total]);
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Size of a frame holding `payload_len` bytes of payload.
pub fn frame_len_for_payload(payload_len: usize) -> usize {
    (FRAME_HEADER_LEN + payload_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// What is found at a frame position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// Sixteen zero bytes (or nothing but zeros up to the end of the buffer):
    /// no more records.
    End,
    /// A valid frame of `len` bytes.
    Frame {
        record: RecordRef<'a>,
        batch: u32,
        len: usize,
    },
    /// Not a valid frame.
    Bad(BadFrame),
}

/// Why a frame is not valid. The raw header fields are kept for the inspector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFrame {
    pub kind: BadKind,
    /// The type byte as stored (may be garbage).
    pub raw_type: u8,
    /// The length field as stored (may be garbage), when the header was readable.
    pub raw_len: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadKind {
    /// The frame runs past the end of the data.
    Truncated { available: usize, needed: usize },
    /// The checksum does not match.
    Crc { stored: u32, computed: u32 },
    /// Unknown type, non-zero reserved bits, or a payload of the wrong shape.
    Malformed(&'static str),
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BadKind::Truncated { available, needed } => write!(
                f,
                "frame needs {needed} bytes but only {available} remain (torn or truncated write)"
            ),
            BadKind::Crc { stored, computed } => {
                write!(
                    f,
                    "crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            BadKind::Malformed(what) => f.write_str(what),
        }
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the frame that starts at `off` in `buf`.
pub(crate) fn decode_frame(buf: &[u8], off: usize) -> Decoded<'_> {
    let rest = &buf[off.min(buf.len())..];
    if rest.len() < FRAME_HEADER_LEN {
        if rest.iter().all(|&b| b == 0) {
            return Decoded::End;
        }
        return Decoded::Bad(BadFrame {
            kind: BadKind::Truncated {
                available: rest.len(),
                needed: FRAME_HEADER_LEN,
            },
            raw_type: rest.get(8).copied().unwrap_or(0),
            raw_len: None,
        });
    }
    let header = &rest[..FRAME_HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let stored = u32_at(header, 0);
    let len = u32_at(header, 4);
    let raw_type = header[8];
    let bad = |kind| {
        Decoded::Bad(BadFrame {
            kind,
            raw_type,
            raw_len: Some(len),
        })
    };
    let total = frame_len_for_payload(len as usize);
    if total > rest.len() {
        return bad(BadKind::Truncated {
            available: rest.len(),
            needed: total,
        });
    }
    let computed = crc32c::crc32c(&rest[4..total]);
    if computed != stored {
        return bad(BadKind::Crc { stored, computed });
    }
    if header[9] != 0 || header[10] != 0 || header[11] != 0 {
        return bad(BadKind::Malformed("unsupported flags or reserved bits set"));
    }
    let batch = u32_at(header, 12);
    let payload = &rest[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize];
    let record = match RecordType::from_u8(raw_type) {
        None => return bad(BadKind::Malformed("unknown record type")),
        Some(RecordType::Entry) | Some(RecordType::Snapshot) if payload.len() < 16 => {
            return bad(BadKind::Malformed("payload shorter than index and term"));
        }
        Some(RecordType::HardState) if payload.len() != 24 => {
            return bad(BadKind::Malformed("hard state payload is not 24 bytes"));
        }
        Some(RecordType::Entry) => RecordRef::Entry {
            index: u64_at(payload, 0),
            term: u64_at(payload, 8),
            data: &payload[16..],
        },
        Some(RecordType::Snapshot) => RecordRef::Snapshot {
            index: u64_at(payload, 0),
            term: u64_at(payload, 8),
            data: &payload[16..],
        },
        Some(RecordType::HardState) => RecordRef::HardState(HardState {
            term: u64_at(payload, 0),
            vote: u64_at(payload, 8),
            commit: u64_at(payload, 16),
        }),
        Some(RecordType::Metadata) => RecordRef::Metadata(payload),
    };
    Decoded::Frame {
        record,
        batch,
        len: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            (any::<u64>(), any::<u64>(), bytes.clone())
                .prop_map(|(i, t, d)| Record::entry(i, t, d)),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(term, vote, commit)| {
                Record::HardState(HardState { term, vote, commit })
            }),
            (any::<u64>(), any::<u64>(), bytes.clone()).prop_map(|(index, term, data)| {
                Record::Snapshot(SnapshotMarker { index, term, data })
            }),
            bytes.prop_map(Record::Metadata),
        ]
    }

    proptest! {
        #[test]
        fn every_record_round_trips_through_its_frame(rec in arb_record(), batch in any::<u32>()) {
            let mut buf = Vec::new();
            rec.as_ref().encode_into(batch, &mut buf);
            prop_assert_eq!(buf.len(), rec.frame_len());
            prop_assert_eq!(buf.len() % FRAME_ALIGN, 0);
            match decode_frame(&buf, 0) {
                Decoded::Frame { record, batch: b, len } => {
                    prop_assert_eq!(record.to_owned(), rec);
                    prop_assert_eq!(b, batch);
                    prop_assert_eq!(len, buf.len());
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn any_single_flipped_bit_is_detected(rec in arb_record(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut buf = Vec::new();
            rec.as_ref().encode_into(7, &mut buf);
            let at = pos.index(buf.len());
            buf[at] ^= 1 << bit;
            match decode_frame(&buf, 0) {
                Decoded::Frame { .. } => prop_assert!(false, "flip at {} went unnoticed", at),
                Decoded::End | Decoded::Bad(_) => {}
            }
        }
    }

    #[test]
    fn a_zero_header_is_the_end_of_records() {
        assert_eq!(decode_frame(&[0u8; 64], 0), Decoded::End);
        assert_eq!(decode_frame(&[0u8; 5], 0), Decoded::End);
        assert_eq!(decode_frame(&[], 0), Decoded::End);
    }

    #[test]
    fn frames_are_padded_to_eight_bytes() {
        assert_eq!(frame_len_for_payload(0), 16);
        assert_eq!(frame_len_for_payload(1), 24);
        assert_eq!(frame_len_for_payload(8), 24);
        assert_eq!(frame_len_for_payload(9), 32);
        // An entry with 256 bytes of data: 16 header + 16 index/term + 256.
        assert_eq!(Record::entry(1, 1, vec![0; 256]).frame_len(), 288);
    }

    #[test]
    fn the_layout_matches_the_documented_bytes() {
        let mut buf = Vec::new();
        Record::entry(0x0102, 0x0304, b"xyz".to_vec())
            .as_ref()
            .encode_into(0xAABBCCDD, &mut buf);
        assert_eq!(buf.len(), 40);
        assert_eq!(&buf[4..8], &19u32.to_le_bytes()); // 16 + 3 payload bytes
        assert_eq!(buf[8], 1); // entry
        assert_eq!(&buf[9..12], &[0, 0, 0]);
        assert_eq!(&buf[12..16], &0xAABBCCDDu32.to_le_bytes());
        assert_eq!(&buf[16..24], &0x0102u64.to_le_bytes());
        assert_eq!(&buf[24..32], &0x0304u64.to_le_bytes());
        assert_eq!(&buf[32..35], b"xyz");
        assert_eq!(&buf[35..40], &[0; 5]);
        assert_eq!(&buf[0..4], &crc32c::crc32c(&buf[4..40]).to_le_bytes());
    }
}
