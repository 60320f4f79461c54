//! Reading segments back and deciding whether they are sound.
//!
//! Rules, in the order recovery applies them:
//!
//! 1. Segment sequence numbers are contiguous; each header's checksum holds and
//!    agrees with the file name.
//! 2. Inside a segment, frames are read until sixteen zero bytes (end of records),
//!    the end of the file, or a frame that fails to decode.
//! 3. Every segment but the last must end exactly where the next segment's header
//!    says it ends (`prev_end`) and hold nothing but zeros after that. Anything
//!    else — a bad frame, a zeroed frame, stray bytes — is a hard error naming the
//!    file and byte offset. This is why flipping any byte of an earlier segment is
//!    always caught.
//! 4. In the last segment, a bad or zeroed frame at offset X is a *torn tail* only
//!    if what follows is consistent with X lying in the batch that was in flight:
//!    a torn write can only touch that batch, and batches are written one after
//!    another, so every valid frame found after X must belong to one single batch,
//!    either the batch of the last intact frame before X or the next one; and if
//!    X's own header is still credible (its length leads exactly to the next valid
//!    frame), that batch must be X's own. Otherwise the damaged bytes had been
//!    acknowledged and the error is hard. A torn tail is cut off at X. Damage to
//!    the final batch cannot be told from a torn write and is cut as one.
//! 5. Write batches are numbered consecutively: a segment's first frame carries the
//!    batch that created the segment, and each following frame carries the same
//!    batch or the next one.
//! 6. Entry indexes never skip: an entry's index is at most one past the last
//!    index (a smaller index replaces the suffix from that index on). A snapshot
//!    marker beyond the last index moves the log forward to it. Each segment
//!    starts at the index after the one the log before it ended at.

use std::path::{Path, PathBuf};

use crate::error::{Result, WalError};
use crate::record::{
    BadFrame, Decoded, Entry, FRAME_ALIGN, HardState, RecordRef, SnapshotMarker, decode_frame,
    frame_len_for_payload,
};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentFile, SegmentHeader};

/// A valid frame found in a segment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame<'a> {
    pub offset: u64,
    pub batch: u32,
    pub record: RecordRef<'a>,
}

/// Where the sequential read of a segment stopped.
#[derive(Clone, Debug)]
pub(crate) enum Stop {
    /// The data ended exactly after the last frame.
    Eof,
    /// Sixteen zero bytes.
    Zero,
    /// A frame that does not decode.
    Bad(BadFrame),
}

/// One segment read front to back.
pub(crate) struct SegmentScan<'a> {
    pub header: SegmentHeader,
    pub frames: Vec<Frame<'a>>,
    /// Offset just past the last valid frame.
    pub end: u64,
    pub stop: Stop,
}

/// Reads the frames of one segment held in `buf`. Fails only if the header is bad.
pub(crate) fn scan_segment<'a>(path: &Path, buf: &'a [u8]) -> Result<SegmentScan<'a>> {
    let header = SegmentHeader::decode(buf).map_err(|reason| WalError::corrupt(path, 0, reason))?;
    let mut frames = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    let stop = loop {
        if off == buf.len() {
            break Stop::Eof;
        }
        match decode_frame(buf, off) {
            Decoded::End => break Stop::Zero,
            Decoded::Bad(bad) => break Stop::Bad(bad),
            Decoded::Frame { record, batch, len } => {
                frames.push(Frame {
                    offset: off as u64,
                    batch,
                    record,
                });
                off += len;
            }
        }
    };
    Ok(SegmentScan {
        header,
        frames,
        end: off as u64,
        stop,
    })
}

/// Offset of the first non-zero byte at or after `from`.
pub(crate) fn first_nonzero(buf: &[u8], from: usize) -> Option<usize> {
    const CHUNK: usize = 4096;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let rest = buf.get(from..)?;
    let mut base = 0;
    for chunk in rest.chunks(CHUNK) {
        if chunk != &ZEROS[..chunk.len()] {
            return chunk.iter().position(|&b| b != 0).map(|p| from + base + p);
        }
        base += chunk.len();
    }
    None
}

/// Offset just past the last non-zero byte of `buf`, or 0.
fn end_of_nonzero(buf: &[u8]) -> usize {
    buf.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Valid frames (offset, batch) anywhere after `from`, found by trying every
/// aligned offset. Used only when the sequential read hit damage.
fn resync(buf: &[u8], from: usize) -> Vec<(u64, u32)> {
    let mut found = Vec::new();
    let mut off = (from + FRAME_ALIGN) / FRAME_ALIGN * FRAME_ALIGN;
    while off < buf.len() {
        let Some(nz) = first_nonzero(buf, off) else {
            break;
        };
        // A frame whose header holds this byte starts at most 15 bytes earlier.
        let candidate = (nz / FRAME_ALIGN * FRAME_ALIGN).saturating_sub(FRAME_ALIGN);
        off = off.max(candidate);
        match decode_frame(buf, off) {
            Decoded::Frame { batch, len, .. } => {
                found.push((off as u64, batch));
                off += len;
            }
            _ => off += FRAME_ALIGN,
        }
    }
    found
}

/// The latest hard state, snapshot marker and metadata seen in the log. Every
/// segment starts with these, so releasing old segments loses none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogState {
    pub hard_state: Option<HardState>,
    pub snapshot: Option<SnapshotMarker>,
    pub metadata: Option<Vec<u8>>,
}

impl LogState {
    pub fn apply(&mut self, rec: &RecordRef<'_>) {
        match *rec {
            RecordRef::Entry { .. } => {}
            RecordRef::HardState(hs) => self.hard_state = Some(hs),
            RecordRef::Snapshot { index, term, data } => {
                self.snapshot = Some(SnapshotMarker {
                    index,
                    term,
                    data: data.to_vec(),
                })
            }
            RecordRef::Metadata(m) => self.metadata = Some(m.to_vec()),
        }
    }

    /// The records that restate this state at the start of a new segment.
    pub fn records(&self) -> impl Iterator<Item = RecordRef<'_>> {
        let meta = self.metadata.as_deref().map(RecordRef::Metadata);
        let snap = self.snapshot.as_ref().map(|s| RecordRef::Snapshot {
            index: s.index,
            term: s.term,
            data: &s.data,
        });
        let hs = self.hard_state.map(RecordRef::HardState);
        meta.into_iter().chain(snap).chain(hs)
    }
}

/// Why an entry index is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IndexError {
    Zero,
    Gap { last: u64, found: u64 },
}

/// The last index of the log, moved by entries and snapshot markers (rule 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexTracker {
    pub last: u64,
}

impl IndexTracker {
    pub fn apply(&mut self, rec: &RecordRef<'_>) -> std::result::Result<(), IndexError> {
        match *rec {
            RecordRef::Entry { index, .. } => {
                if index == 0 {
                    return Err(IndexError::Zero);
                }
                if index > self.last.saturating_add(1) {
                    return Err(IndexError::Gap {
                        last: self.last,
                        found: index,
                    });
                }
                self.last = index;
            }
            RecordRef::Snapshot { index, .. } => self.last = self.last.max(index),
            RecordRef::HardState(_) | RecordRef::Metadata(_) => {}
        }
        Ok(())
    }
}

/// A damaged tail of the last segment that recovery cuts off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the valid records end and the cut is made.
    pub offset: u64,
    /// Non-zero bytes discarded from `offset` on.
    pub discarded: u64,
    pub reason: String,
}

/// What a successful analysis learned about one segment.
#[derive(Clone, Debug)]
pub(crate) struct SegmentSummary {
    pub file: SegmentFile,
    pub header: SegmentHeader,
    /// Offset just past its last valid record (after any torn tail is cut).
    pub end: u64,
    /// The batch of its last record (its header's batch if it holds none).
    pub last_batch: u64,
    /// Bytes in the file as found.
    pub file_len: u64,
}

/// The result of checking a run of segments.
#[derive(Clone, Debug)]
pub(crate) struct Analysis {
    pub segments: Vec<SegmentSummary>,
    pub last_index: u64,
    /// The batch of the last record read (or of the last header, if the last
    /// segment holds no record yet).
    pub last_batch: u64,
    /// Whether the last segment holds no record yet.
    pub last_segment_empty: bool,
    pub state: LogState,
    pub records: u64,
    pub torn: Option<TornTail>,
}

/// Checks `files` (consecutive segments, the last one being the log's end) by
/// the rules above, handing every valid record to `visit` in log order.
/// `load` supplies a segment's bytes.
pub(crate) fn analyze(
    files: &[SegmentFile],
    mut load: impl FnMut(&SegmentFile) -> Result<Vec<u8>>,
    mut visit: impl FnMut(&SegmentFile, &Frame<'_>),
) -> Result<Analysis> {
    assert!(!files.is_empty(), "analyze needs at least one segment");
    let mut out = Analysis {
        segments: Vec::with_capacity(files.len()),
        last_index: 0,
        last_batch: 0,
        last_segment_empty: true,
        state: LogState::default(),
        records: 0,
        torn: None,
    };
    let mut tracker: Option<IndexTracker> = None;
    let mut prev_batch: Option<u64> = None;
    let mut next_buf = Some(load(&files[0])?);
    for (k, file) in files.iter().enumerate() {
        let buf = next_buf.take().expect("loaded ahead");
        let is_last = k + 1 == files.len();
        if !is_last {
            next_buf = Some(load(&files[k + 1])?);
        }
        let scan = scan_segment(&file.path, &buf)?;
        let h = scan.header;

        // Rule 1: names, headers and sequence agree.
        if h.seq != file.seq || h.first_index != file.first_index {
            return Err(WalError::corrupt(
                &file.path,
                16,
                format!(
                    "header says sequence {} first index {} but the file name says {} and {}",
                    h.seq, h.first_index, file.seq, file.first_index
                ),
            ));
        }
        // Rule 6 across segments.
        let tr = tracker.get_or_insert(IndexTracker {
            last: h.first_index.saturating_sub(1),
        });
        if h.first_index != tr.last + 1 {
            return Err(WalError::corrupt(
                &file.path,
                24,
                format!(
                    "segment starts at index {} but the log before it ends at index {}",
                    h.first_index, tr.last
                ),
            ));
        }
        // Rule 5 across segments.
        if let Some(pb) = prev_batch
            && h.batch != pb
            && h.batch != pb + 1
        {
            return Err(WalError::corrupt(
                &file.path,
                40,
                format!(
                    "segment was started in write batch {} but the previous segment ends in batch {pb}",
                    h.batch
                ),
            ));
        }

        // Rules 3 and 4: where do the records of this segment legitimately end?
        let mut cur_batch = h.batch;
        let end = scan.end;
        let valid_frames = scan.frames.len();
        if is_last {
            let last_batch = scan.frames.last().map_or(h.batch as u32, |f| f.batch);
            // A torn tail always starts where the sequential read stopped, so
            // every frame read is valid either way.
            out.torn = judge_tail(&file.path, &buf, &scan, last_batch)?;
        } else {
            let next_file = &files[k + 1];
            if next_file.seq != file.seq + 1 {
                return Err(WalError::MissingSegment {
                    path: next_file.path.clone(),
                    expected: file.seq + 1,
                    found: next_file.seq,
                });
            }
            let next = SegmentHeader::decode(next_buf.as_deref().expect("loaded"))
                .map_err(|reason| WalError::corrupt(&files[k + 1].path, 0, reason))?;
            if let Stop::Bad(bad) = &scan.stop {
                return Err(WalError::corrupt(&file.path, scan.end, bad.to_string()));
            }
            if scan.end != next.prev_end {
                return Err(WalError::corrupt(
                    &file.path,
                    scan.end.min(next.prev_end),
                    format!(
                        "records end at byte {} but the next segment records that this one ends at byte {}",
                        scan.end, next.prev_end
                    ),
                ));
            }
            if let Some(p) = first_nonzero(&buf, scan.end as usize) {
                return Err(WalError::corrupt(
                    &file.path,
                    p as u64,
                    format!(
                        "non-zero bytes after the last record (which ends at byte {})",
                        scan.end
                    ),
                ));
            }
        }

        // Rules 5 and 6 inside the segment; hand records out.
        for (i, f) in scan.frames[..valid_frames].iter().enumerate() {
            let expected_same = cur_batch as u32;
            let ok = if i == 0 {
                f.batch == expected_same
            } else {
                f.batch == expected_same || f.batch == expected_same.wrapping_add(1)
            };
            if !ok {
                return Err(WalError::corrupt(
                    &file.path,
                    f.offset,
                    format!(
                        "record is from write batch {} but the one before is from batch {}",
                        f.batch, expected_same
                    ),
                ));
            }
            if f.batch != expected_same {
                cur_batch += 1;
            }
            if let Err(e) = tr.apply(&f.record) {
                return Err(match e {
                    IndexError::Zero => {
                        WalError::corrupt(&file.path, f.offset, "entry with index 0")
                    }
                    IndexError::Gap { last, found } => WalError::Gap {
                        path: file.path.clone(),
                        offset: f.offset,
                        expected: last + 1,
                        found,
                    },
                });
            }
            out.state.apply(&f.record);
            visit(file, f);
        }
        out.records += valid_frames as u64;
        prev_batch = Some(cur_batch);
        out.last_batch = cur_batch;
        out.last_segment_empty = valid_frames == 0;
        out.last_index = tr.last;
        out.segments.push(SegmentSummary {
            file: file.clone(),
            header: h,
            end,
            last_batch: cur_batch,
            file_len: buf.len() as u64,
        });
    }
    Ok(out)
}

/// Rule 4 for the last segment: `None` when the tail is clean, a torn tail to
/// cut off, or a hard error when acknowledged data would be lost.
fn judge_tail(
    path: &Path,
    buf: &[u8],
    scan: &SegmentScan<'_>,
    last_batch: u32,
) -> Result<Option<TornTail>> {
    let x = scan.end as usize;
    let reason = match &scan.stop {
        Stop::Eof => return Ok(None),
        Stop::Zero => match first_nonzero(buf, x) {
            None => return Ok(None),
            Some(p) => format!("zeroed frame header followed by non-zero bytes at offset {p}"),
        },
        Stop::Bad(bad) => bad.to_string(),
    };
    let found = resync(buf, x);
    let next = last_batch.wrapping_add(1);
    // X's own batch, if its header is credible: its length field leads exactly
    // to the next valid frame.
    let own_batch = match &scan.stop {
        Stop::Bad(bad) => bad.raw_len.and_then(|len| {
            let end = x as u64 + frame_len_for_payload(len as usize) as u64;
            let batch = u32::from_le_bytes(buf[x + 12..x + 16].try_into().expect("4"));
            (found.first().map(|f| f.0) == Some(end)).then_some(batch)
        }),
        _ => None,
    };
    let allowed = match own_batch {
        Some(b) if b == last_batch || b == next => Some(b),
        Some(_) => None,
        None => found
            .first()
            .map(|f| f.1)
            .filter(|&b| b == last_batch || b == next),
    };
    let later = match allowed {
        Some(b) => found.iter().find(|f| f.1 != b),
        None => found.first(),
    };
    if let Some(&(at, batch)) = later {
        return Err(WalError::corrupt(
            path,
            x as u64,
            format!(
                "{reason}; a valid record of write batch {batch} follows at byte {at}, so the damaged \
                 bytes had been acknowledged (the last intact record before them is from batch {last_batch})"
            ),
        ));
    }
    Ok(Some(TornTail {
        path: path.to_path_buf(),
        offset: x as u64,
        discarded: end_of_nonzero(buf).saturating_sub(x) as u64,
        reason,
    }))
}

/// Collects the entries from a given index on, applying replacement: an entry
/// with index `i` drops every collected entry with index `>= i`.
pub(crate) struct EntryCollector {
    from: u64,
    last: u64,
    pub entries: Vec<Entry>,
}

impl EntryCollector {
    pub fn new(from: u64, last_before: u64) -> Self {
        EntryCollector {
            from,
            last: last_before,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, rec: &RecordRef<'_>) {
        match *rec {
            RecordRef::Entry { index, term, data } => {
                let keep = match self.entries.first() {
                    Some(first) if index >= first.index => (index - first.index) as usize,
                    _ => 0,
                };
                self.entries.truncate(keep);
                self.last = index;
                if index >= self.from {
                    self.entries.push(Entry {
                        index,
                        term,
                        data: data.to_vec(),
                    });
                }
            }
            RecordRef::Snapshot { index, .. } if index > self.last => {
                self.entries.clear();
                self.last = index;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[test]
    fn replacement_keeps_only_the_newest_suffix() {
        let mut c = EntryCollector::new(3, 0);
        for (i, t) in [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1),
            (4, 2),
            (5, 2),
            (3, 3),
        ] {
            c.push(&Record::entry(i, t, vec![]).as_ref());
        }
        let got: Vec<_> = c.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(3, 3)]);
    }

    #[test]
    fn a_snapshot_past_the_log_drops_collected_entries() {
        let mut c = EntryCollector::new(1, 0);
        c.push(&Record::entry(1, 1, vec![]).as_ref());
        c.push(&Record::entry(2, 1, vec![]).as_ref());
        let snap = Record::Snapshot(SnapshotMarker {
            index: 10,
            term: 2,
            data: vec![],
        });
        c.push(&snap.as_ref());
        c.push(&Record::entry(11, 2, vec![]).as_ref());
        let got: Vec<_> = c.entries.iter().map(|e| e.index).collect();
        assert_eq!(got, vec![11]);
    }

    #[test]
    fn the_tracker_rejects_gaps_and_zero() {
        let mut t = IndexTracker { last: 5 };
        assert_eq!(
            t.apply(&Record::entry(7, 1, vec![]).as_ref()),
            Err(IndexError::Gap { last: 5, found: 7 })
        );
        assert_eq!(
            t.apply(&Record::entry(0, 1, vec![]).as_ref()),
            Err(IndexError::Zero)
        );
        assert_eq!(t.apply(&Record::entry(3, 1, vec![]).as_ref()), Ok(()));
        assert_eq!(t.last, 3);
    }

    #[test]
    fn first_nonzero_finds_bytes_across_chunks() {
        let mut buf = vec![0u8; 10_000];
        assert_eq!(first_nonzero(&buf, 0), None);
        buf[9_000] = 1;
        assert_eq!(first_nonzero(&buf, 0), Some(9_000));
        assert_eq!(first_nonzero(&buf, 9_001), None);
        assert_eq!(end_of_nonzero(&buf), 9_001);
    }
}
