//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use cairn_wal::{BackendChoice, Entry, HardState, Record, RecordRef, WalOptions};

/// Runs each named test function once per backend: `io_uring::name` and
/// `pwrite::name`. Where io_uring is unavailable its tests fail, never skip.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() {
                // Choosing io_uring falls back to pwrite only when this fails:
                // here it must not, or the io_uring backend would go untested.
                cairn_wal::io_uring_support().expect("io_uring is needed to test the io_uring backend");
                super::$name(cairn_wal::BackendChoice::IoUring)
            } )*
        }
        mod pwrite {
            $( #[test] fn $name() { super::$name(cairn_wal::BackendChoice::Pwrite) } )*
        }
    };
}

/// The name of the module `backend_tests!` puts a backend's tests in, for a
/// test that re-runs itself in a child process.
pub fn module_for(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::IoUring => "io_uring",
        BackendChoice::Pwrite => "pwrite",
        BackendChoice::Auto => unreachable!("tests name their backend"),
    }
}

/// The backend a choice must have produced (no silent fallback in tests).
pub fn expected_kind(backend: BackendChoice) -> cairn_wal::BackendKind {
    match backend {
        BackendChoice::IoUring => cairn_wal::BackendKind::IoUring,
        _ => cairn_wal::BackendKind::Pwrite,
    }
}

pub fn opts(backend: BackendChoice, segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        backend,
        ..WalOptions::default()
    }
}

/// A payload that says which entry it belongs to.
pub fn payload(index: u64, term: u64, len: usize) -> Vec<u8> {
    let mut p = format!("{index}/{term}:").into_bytes();
    p.resize(len.max(p.len()), b'a' + (index % 26) as u8);
    p
}

pub fn entry(index: u64, term: u64, len: usize) -> Record {
    Record::entry(index, term, payload(index, term, len))
}

pub fn hard_state(term: u64, vote: u64, commit: u64) -> Record {
    Record::HardState(HardState { term, vote, commit })
}

/// The indexes of the entries `read_from(from)` returns.
pub fn indexes(wal: &cairn_wal::Wal, from: u64) -> Vec<u64> {
    wal.read_from(from)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.index)
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A reference model of what the log must return: entries with replacement
/// semantics, and the latest hard state and metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub entries: Vec<Entry>,
    pub last: u64,
    pub hard_state: Option<HardState>,
    pub metadata: Option<Vec<u8>>,
    pub snapshot: Option<(u64, u64)>,
}

impl Model {
    pub fn apply(&mut self, rec: &RecordRef<'_>) {
        match *rec {
            RecordRef::Entry { index, term, data } => {
                self.entries.retain(|e| e.index < index);
                self.entries.push(Entry {
                    index,
                    term,
                    data: data.to_vec(),
                });
                self.last = index;
            }
            RecordRef::HardState(hs) => self.hard_state = Some(hs),
            RecordRef::Metadata(m) => self.metadata = Some(m.to_vec()),
            RecordRef::Snapshot { index, term, .. } => {
                self.snapshot = Some((index, term));
                if index > self.last {
                    self.entries.clear();
                    self.last = index;
                }
            }
        }
    }

    pub fn from(&self, index: u64) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.index >= index)
            .cloned()
            .collect()
    }
}

/// A log built record by record, remembering where each record ended.
pub struct Built {
    /// Every appended record in order, with its segment and end offset.
    pub records: Vec<(Record, u64, u64)>,
    pub durable: cairn_wal::DurablePosition,
    pub segments: Vec<std::path::PathBuf>,
    pub metadata: Vec<u8>,
}

impl Built {
    /// The model of the log made of the records for which `keep` holds.
    pub fn model(&self, keep: impl Fn(u64, u64) -> bool) -> Model {
        self.model_by(|_, seg, end| keep(seg, end))
    }

    /// Like `model`, with the record at hand.
    pub fn model_by(&self, keep: impl Fn(&Record, u64, u64) -> bool) -> Model {
        let mut m = Model {
            metadata: Some(self.metadata.clone()),
            ..Model::default()
        };
        for (r, seg, end) in &self.records {
            if keep(r, *seg, *end) {
                m.apply(&r.as_ref());
            }
        }
        m
    }
}

fn append_tracked(wal: &cairn_wal::Wal, out: &mut Vec<(Record, u64, u64)>, recs: Vec<Record>) {
    let lens: Vec<u64> = recs.iter().map(|r| r.frame_len() as u64).collect();
    let info = wal.append(recs.clone()).unwrap();
    let total: u64 = lens.iter().sum();
    let mut end = info.end_offset - total;
    if out.last().is_some_and(|l| l.1 == info.segment) {
        assert_eq!(
            end,
            out.last().unwrap().2,
            "a multi-record submission crossed a segment boundary"
        );
    }
    for (r, len) in recs.into_iter().zip(lens) {
        end += len;
        out.push((r, info.segment, end));
    }
}

/// Builds a log of at least `min_segments` segments of `segment_size` bytes,
/// ending with, in the last segment: a three-record batch, a batch replacing
/// two entries with a newer term, and a single entry.
pub fn build_log(
    dir: &Path,
    backend: BackendChoice,
    segment_size: u64,
    min_segments: usize,
) -> Built {
    let metadata = b"cluster=1,member=2".to_vec();
    let wal = cairn_wal::Wal::create(dir, opts(backend, segment_size), &metadata).unwrap();
    assert_eq!(wal.backend(), expected_kind(backend));
    let mut records = Vec::new();
    let sizes = [10usize, 40, 90, 150, 7, 300];
    let mut index = 0u64;
    while wal.segments().len() < min_segments {
        index += 1;
        append_tracked(
            &wal,
            &mut records,
            vec![entry(index, 1, sizes[index as usize % sizes.len()])],
        );
        if index.is_multiple_of(7) {
            append_tracked(&wal, &mut records, vec![hard_state(1, 1, index - 2)]);
        }
    }
    append_tracked(
        &wal,
        &mut records,
        vec![
            entry(index + 1, 1, 20),
            entry(index + 2, 1, 33),
            hard_state(1, 1, index),
        ],
    );
    append_tracked(
        &wal,
        &mut records,
        vec![entry(index + 1, 2, 12), entry(index + 2, 2, 25)],
    );
    append_tracked(&wal, &mut records, vec![entry(index + 3, 2, 17)]);
    let durable = wal.durable();
    let segments = wal.segments();
    assert_eq!(
        segments.len(),
        min_segments,
        "the final batches must stay in the last segment"
    );
    drop(wal);
    Built {
        records,
        durable,
        segments,
        metadata,
    }
}
