//! Read-only inspection of a WAL directory, for operators (`cairnutl wal dump`
//! and `cairnutl wal verify`). Never modifies, locks or repairs anything, so it
//! is safe to run beside a live server.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, WalError};
use crate::record::{BadKind, Decoded, FRAME_HEADER_LEN, RecordRef, RecordType, decode_frame};
use crate::scan::{Stop, TornTail, analyze, scan_segment};
use crate::segment::{SEGMENT_HEADER_LEN, SegmentHeader, list_dir};

/// Everything found in a WAL directory.
#[derive(Debug)]
pub struct Inspection {
    pub dir: PathBuf,
    pub segments: Vec<SegmentReport>,
    pub temp_files: Vec<PathBuf>,
    pub verdict: Verdict,
}

/// Whether the log is sound, as `Wal::open` would judge it.
#[derive(Debug)]
pub enum Verdict {
    Sound {
        records: u64,
        last_index: u64,
    },
    /// Recoverable: opening the log would cut this tail off.
    TornTail(TornTail),
    /// Opening the log would fail with this error.
    Damaged(WalError),
    /// The directory holds no segment.
    Empty,
}

impl Verdict {
    pub fn is_sound(&self) -> bool {
        matches!(self, Verdict::Sound { .. })
    }
}

#[derive(Debug)]
pub struct SegmentReport {
    pub path: PathBuf,
    pub seq: u64,
    pub first_index: u64,
    pub file_size: u64,
    pub header: std::result::Result<SegmentHeader, String>,
    /// The records read front to back; a damaged one, if any, comes last.
    pub records: Vec<RecordReport>,
    /// Offset just past the last valid record.
    pub end: u64,
    pub stop: StopReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Zero bytes: the end of records.
    EndOfRecords,
    /// The file ends right after a record.
    EndOfFile,
    /// A damaged record (listed last in `records`).
    Damaged,
    /// The header could not be read.
    BadHeader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordReport {
    pub offset: u64,
    /// `None` when the type byte is not a known type.
    pub record_type: Option<RecordType>,
    /// Entry and snapshot index (for a damaged record: as stored, untrusted).
    pub index: Option<u64>,
    pub term: Option<u64>,
    /// Payload length.
    pub size: Option<u64>,
    pub batch: Option<u32>,
    pub crc: CrcStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrcStatus {
    Ok,
    Mismatch { stored: u32, computed: u32 },
    Truncated,
    Malformed(&'static str),
}

impl std::fmt::Display for CrcStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrcStatus::Ok => f.write_str("ok"),
            CrcStatus::Mismatch { .. } => f.write_str("mismatch"),
            CrcStatus::Truncated => f.write_str("truncated"),
            CrcStatus::Malformed(_) => f.write_str("malformed"),
        }
    }
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    buf.get(at..at + 8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
}

/// Reads every segment of `dir` and judges the log, changing nothing.
pub fn inspect(dir: impl AsRef<Path>) -> Result<Inspection> {
    let dir = dir.as_ref().to_path_buf();
    let (files, temp_files) = list_dir(&dir).map_err(|e| WalError::io("read", &dir, e))?;
    let mut segments = Vec::with_capacity(files.len());
    for f in &files {
        let buf = fs::read(&f.path).map_err(|e| WalError::io("read", &f.path, e))?;
        segments.push(report_segment(&f.path, f.seq, f.first_index, &buf));
    }
    let verdict = if files.is_empty() {
        Verdict::Empty
    } else {
        match analyze(
            &files,
            |f| fs::read(&f.path).map_err(|e| WalError::io("read", &f.path, e)),
            |_, _| {},
        ) {
            Ok(a) => match a.torn {
                Some(t) => Verdict::TornTail(t),
                None => Verdict::Sound {
                    records: a.records,
                    last_index: a.last_index,
                },
            },
            Err(e) => Verdict::Damaged(e),
        }
    };
    Ok(Inspection {
        dir,
        segments,
        temp_files,
        verdict,
    })
}

fn report_segment(path: &Path, seq: u64, first_index: u64, buf: &[u8]) -> SegmentReport {
    let mut report = SegmentReport {
        path: path.to_path_buf(),
        seq,
        first_index,
        file_size: buf.len() as u64,
        header: SegmentHeader::decode(buf),
        records: Vec::new(),
        end: SEGMENT_HEADER_LEN as u64,
        stop: StopReason::BadHeader,
    };
    let Ok(scan) = scan_segment(path, buf) else {
        return report;
    };
    report.end = scan.end;
    for f in &scan.frames {
        let (index, term) = match f.record {
            RecordRef::Entry { index, term, .. } | RecordRef::Snapshot { index, term, .. } => {
                (Some(index), Some(term))
            }
            _ => (None, None),
        };
        report.records.push(RecordReport {
            offset: f.offset,
            record_type: Some(f.record.record_type()),
            index,
            term,
            size: Some(f.record.payload_len() as u64),
            batch: Some(f.batch),
            crc: CrcStatus::Ok,
        });
    }
    report.stop = match &scan.stop {
        Stop::Eof => StopReason::EndOfFile,
        Stop::Zero => StopReason::EndOfRecords,
        Stop::Bad(bad) => {
            let at = scan.end as usize;
            let record_type = RecordType::from_u8(bad.raw_type);
            let (index, term) = match record_type {
                Some(RecordType::Entry | RecordType::Snapshot) => (
                    u64_at(buf, at + FRAME_HEADER_LEN),
                    u64_at(buf, at + FRAME_HEADER_LEN + 8),
                ),
                _ => (None, None),
            };
            let batch = buf
                .get(at + 12..at + 16)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4")));
            report.records.push(RecordReport {
                offset: scan.end,
                record_type,
                index,
                term,
                size: bad.raw_len.map(u64::from),
                batch,
                crc: match bad.kind {
                    BadKind::Crc { stored, computed } => CrcStatus::Mismatch { stored, computed },
                    BadKind::Truncated { .. } => CrcStatus::Truncated,
                    BadKind::Malformed(what) => CrcStatus::Malformed(what),
                },
            });
            debug_assert!(!matches!(decode_frame(buf, at), Decoded::Frame { .. }));
            StopReason::Damaged
        }
    };
    report
}
