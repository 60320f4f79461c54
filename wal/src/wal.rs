//! The log as a whole: create, open (with recovery), append, read, release.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::commit::{Shared, Slot, State, Submission, Ticket};
use crate::error::{Result, WalError};
use crate::io::{BackendChoice, BackendKind, Io};
use crate::metrics::WalMetrics;
use crate::record::{Entry, HardState, Record, RecordRef, SnapshotMarker};
use crate::scan::{Analysis, EntryCollector, IndexError, IndexTracker, TornTail, analyze};
use crate::segment::{
    SEGMENT_HEADER_LEN, SegmentFile, SegmentHeader, list_dir, preallocate, segment_file_name,
    sync_dir,
};
use crate::writer::{Writer, WriterStart};

/// Tuning knobs. The defaults suit a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each preallocated segment file. Default 64 MiB.
    pub segment_size: u64,
    /// A batch stops growing past this many bytes (a single larger submission
    /// still forms a batch of its own). Default 4 MiB.
    pub max_batch_bytes: usize,
    /// A batch stops growing past this many records. Default 16,384.
    pub max_batch_records: usize,
    /// Which write + fdatasync backend to use.
    pub backend: BackendChoice,
    /// [`Wal::release`] always keeps at least this many segments. Default 5
    /// (etcd's `--max-wals`).
    pub min_segments: usize,
    /// How long `open` waits for the directory lock before failing with
    /// `Locked`. A lock can outlive its holder briefly: a process spawned by
    /// the holder keeps copies of its descriptors until it executes its
    /// program. Default 1 s.
    pub lock_timeout: Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            max_batch_bytes: 4 << 20,
            max_batch_records: 16_384,
            backend: BackendChoice::Auto,
            min_segments: 5,
            lock_timeout: Duration::from_secs(1),
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<()> {
        if self.segment_size < 4096 || !self.segment_size.is_multiple_of(8) {
            return Err(WalError::InvalidOptions(format!(
                "segment size {} must be at least 4096 and a multiple of 8",
                self.segment_size
            )));
        }
        if self.max_batch_bytes == 0 || self.max_batch_records == 0 {
            return Err(WalError::InvalidOptions(
                "batch limits must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Where a submission ended up once durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// The log's last index after this submission.
    pub last_index: u64,
    /// Sequence number of the segment holding its last record.
    pub segment: u64,
    /// Byte offset just past its last record in that segment.
    pub end_offset: u64,
}

/// The durable end of the log: everything before it survives a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurablePosition {
    pub segment: u64,
    pub offset: u64,
    pub last_index: u64,
    /// The last write batch made durable.
    pub batch: u64,
}

/// What [`Wal::read_from`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogContents {
    /// Entries from the requested index on, in order, after replacement.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<SnapshotMarker>,
    pub metadata: Option<Vec<u8>>,
}

/// What opening the log found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    pub last_index: u64,
    /// A damaged tail of the last segment that was cut off.
    pub torn_tail: Option<TornTail>,
    /// A last segment with no record in it (its first batch never completed),
    /// removed so the previous one continues.
    pub removed_empty_segment: Option<PathBuf>,
    /// Leftover `.tmp` files from segment preparation, removed.
    pub removed_temp_files: Vec<PathBuf>,
}

/// A segmented, group-committed write-ahead log in one directory.
///
/// `Wal` is `Send + Sync`; share it with an `Arc` and append from any number of
/// threads and tasks.
pub struct Wal {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
    dir: PathBuf,
    report: RecoveryReport,
    backend: BackendKind,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |e| WalError::io(op, path, e)
}

/// Takes an exclusive `flock` on the directory, waiting up to `timeout` for a
/// holder to let go.
fn lock_dir(dir: &Path, timeout: Duration) -> Result<File> {
    let f = File::open(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            WalError::NotFound(dir.to_path_buf())
        } else {
            WalError::io("open", dir, e)
        }
    })?;
    let start = Instant::now();
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(WalError::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(WalError::io("lock", dir, e)),
        }
    }
}

impl Wal {
    /// Creates a new log in `dir` (which must not exist or be empty) whose first
    /// record is `metadata`. The log appears atomically: it is built in
    /// `<dir>.tmp` and renamed into place.
    pub fn create(dir: impl AsRef<Path>, opts: WalOptions, metadata: &[u8]) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref();
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(io_err("read", dir))?;
            if entries.next().is_some() {
                return Err(WalError::AlreadyExists(dir.to_path_buf()));
            }
        }
        let mut tmp: OsString = dir.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;

        let header = SegmentHeader {
            seq: 0,
            first_index: 1,
            prev_end: 0,
            batch: 0,
            segment_size: opts.segment_size,
        };
        let mut buf = header.encode().to_vec();
        RecordRef::Metadata(metadata).encode_into(0, &mut buf);
        if buf.len() as u64 > opts.segment_size {
            return Err(WalError::RecordTooLarge {
                size: (buf.len() - SEGMENT_HEADER_LEN) as u64,
                segment_size: opts.segment_size,
            });
        }
        let path = tmp.join(segment_file_name(0, 1));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        preallocate(&file, opts.segment_size).map_err(io_err("preallocate", &path))?;
        file.write_all_at(&buf, 0).map_err(io_err("write", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        drop(file);
        sync_dir(&tmp).map_err(io_err("fsync", &tmp))?;
        if dir.exists() {
            fs::remove_dir(dir).map_err(io_err("remove", dir))?;
        }
        fs::rename(&tmp, dir).map_err(io_err("rename into place", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(io_err("fsync", parent))?;
        }
        Wal::open(dir, opts)
    }

    /// Whether `dir` holds at least one segment.
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        list_dir(dir.as_ref()).is_ok_and(|(segments, _)| !segments.is_empty())
    }

    /// Opens an existing log: checks every segment and every checksum, cuts off
    /// a torn tail of the last segment (reported in the log and in
    /// [`Wal::recovery_report`]), and fails with the file and byte offset on any
    /// other damage.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let dir_lock = lock_dir(&dir, opts.lock_timeout)?;
        let (mut files, temps) = list_dir(&dir).map_err(io_err("read", &dir))?;
        if files.is_empty() {
            return Err(WalError::NotFound(dir));
        }
        // Judge everything before changing anything: a directory that is not a
        // sound cairn log (another program's, say) is left exactly as it was.
        let analysis = analyze(
            &files,
            |f| fs::read(&f.path).map_err(io_err("read", &f.path)),
            |_, _| {},
        )?;
        let io = Io::new(opts.backend);
        for t in &temps {
            fs::remove_file(t).map_err(io_err("remove", t))?;
        }
        let backend = io.kind();

        let mut report = RecoveryReport {
            segments: files.len(),
            records: analysis.records,
            last_index: analysis.last_index,
            torn_tail: analysis.torn.clone(),
            removed_empty_segment: None,
            removed_temp_files: temps,
        };
        let (start, last) = Self::repair_tail(&dir, &mut files, &analysis, &mut report)?;
        let segments = files;
        let durable = DurablePosition {
            segment: last.seq,
            offset: start.offset,
            last_index: analysis.last_index,
            batch: start.next_batch.wrapping_sub(1),
        };
        let mut state_lens = [0usize; 3];
        for r in analysis.state.records() {
            let slot = match r {
                RecordRef::Metadata(_) => 0,
                RecordRef::Snapshot { .. } => 1,
                _ => 2,
            };
            state_lens[slot] = r.frame_len();
        }
        let writer = Writer::new(&dir, io, start, opts.segment_size)?;
        let state = State {
            queue: Default::default(),
            leader_active: false,
            failed: None,
            closed: false,
            tracker: IndexTracker {
                last: analysis.last_index,
            },
            state_lens,
            durable,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            records = report.records,
            last_index = report.last_index,
            backend = %backend,
            "wal: opened"
        );
        let shared = Arc::new(Shared::new(opts, state, writer, segments, dir_lock));
        let bg_shared = shared.clone();
        let background = std::thread::Builder::new()
            .name("wal-leader".into())
            .spawn(move || bg_shared.background_leader())
            .map_err(io_err("spawn leader thread for", &dir))?;
        Ok(Wal {
            shared,
            background: Some(background),
            dir,
            report,
            backend,
        })
    }

    /// Prepares the last segment for appending: removes it if its first batch
    /// never completed, cuts a torn tail, and restores its preallocation.
    fn repair_tail(
        dir: &Path,
        files: &mut Vec<SegmentFile>,
        analysis: &Analysis,
        report: &mut RecoveryReport,
    ) -> Result<(WriterStart, SegmentFile)> {
        let mut summary = analysis
            .segments
            .last()
            .expect("at least one segment")
            .clone();
        let mut next_batch = if analysis.last_segment_empty {
            summary.header.batch
        } else {
            analysis.last_batch + 1
        };
        if let Some(t) = &analysis.torn {
            tracing::warn!(
                file = %t.path.display(),
                offset = t.offset,
                discarded_bytes = t.discarded,
                reason = %t.reason,
                "wal: cutting off a torn tail of the last segment"
            );
        }
        if analysis.last_segment_empty && analysis.segments.len() > 1 {
            // Nothing in it was ever acknowledged; the previous segment, which
            // recovery checked against this one's header, continues the log.
            let path = summary.file.path.clone();
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            sync_dir(dir).map_err(io_err("fsync", dir))?;
            tracing::warn!(file = %path.display(), "wal: removed a last segment whose first write never completed");
            report.removed_empty_segment = Some(path);
            files.pop();
            summary = analysis.segments[analysis.segments.len() - 2].clone();
            next_batch = summary.last_batch + 1;
        }
        let path = summary.file.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let capacity = summary.header.segment_size.max(summary.end);
        let cut = report
            .torn_tail
            .as_ref()
            .is_some_and(|t| t.path == path && report.removed_empty_segment.is_none());
        if cut || summary.file_len < capacity {
            // Cutting at the end of the records and preallocating again leaves
            // nothing but zeros after them: no stale byte can ever be read back
            // as a record.
            file.set_len(summary.end)
                .map_err(io_err("truncate", &path))?;
            preallocate(&file, capacity).map_err(io_err("preallocate", &path))?;
            file.sync_all().map_err(io_err("fsync", &path))?;
        }
        let start = WriterStart {
            file,
            path,
            seq: summary.file.seq,
            offset: summary.end,
            capacity,
            next_batch,
            last_index: analysis.last_index,
            state: analysis.state.clone(),
        };
        Ok((start, summary.file))
    }

    /// What opening found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The write + fdatasync backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Queues `records` (in this order, after everything submitted before) and
    /// returns a ticket that resolves once they are durable. Entry indexes are
    /// checked here: an entry may repeat or replace an earlier index (dropping
    /// every entry from that index on) or follow the last one, but never skip.
    pub fn submit(&self, records: Vec<Record>) -> Result<Ticket> {
        let bytes = records.iter().map(Record::frame_len).sum();
        let slot = Arc::new(Slot::default());
        {
            let mut st = self.shared.state();
            if st.closed {
                return Err(WalError::Closed);
            }
            if let Some(f) = &st.failed {
                return Err(WalError::Poisoned(f.clone()));
            }
            check_submission(&mut st, &records, self.shared.opts.segment_size)?;
            st.queue.push_back(Submission {
                records,
                bytes,
                slot: slot.clone(),
            });
        }
        Ok(Ticket {
            shared: self.shared.clone(),
            slot,
            finished: false,
        })
    }

    /// Appends and blocks until durable.
    pub fn append(&self, records: Vec<Record>) -> Result<AppendInfo> {
        self.submit(records)?.wait()
    }

    /// Appends and resolves once durable, without blocking the executor.
    pub async fn append_async(&self, records: Vec<Record>) -> Result<AppendInfo> {
        self.submit(records)?.await
    }

    /// The durable end of the log.
    pub fn durable(&self) -> DurablePosition {
        self.shared.state().durable
    }

    /// The last index submitted (durable or not).
    pub fn last_index(&self) -> u64 {
        self.shared.state().tracker.last
    }

    pub fn metrics(&self) -> WalMetrics {
        self.shared.metrics.snapshot()
    }

    /// The segments currently in the log, oldest first.
    pub fn segments(&self) -> Vec<PathBuf> {
        let segs = self.shared.segments.lock().expect("segments lock");
        segs.iter().map(|s| s.path.clone()).collect()
    }

    /// Reads the durable log: entries with index `>= from` (as replaced by later
    /// entries), and the latest hard state, snapshot marker and metadata.
    pub fn read_from(&self, from: u64) -> Result<LogContents> {
        let durable = self.durable();
        let files: Vec<SegmentFile> = {
            let segs = self.shared.segments.lock().expect("segments lock");
            segs.iter()
                .filter(|s| s.seq <= durable.segment)
                .cloned()
                .collect()
        };
        // Entries at or after `from` all live in or after the last segment that
        // started at or before `from`: when it started, the log ended below it.
        let start = files
            .iter()
            .rposition(|f| f.first_index <= from)
            .unwrap_or(0);
        let files = &files[start..];
        let mut collector = EntryCollector::new(from, files[0].first_index.saturating_sub(1));
        let load = |f: &SegmentFile| -> Result<Vec<u8>> {
            if f.seq == durable.segment {
                let file = File::open(&f.path).map_err(io_err("open", &f.path))?;
                let mut buf = vec![0u8; durable.offset as usize];
                file.read_exact_at(&mut buf, 0)
                    .map_err(io_err("read", &f.path))?;
                Ok(buf)
            } else {
                fs::read(&f.path).map_err(io_err("read", &f.path))
            }
        };
        let analysis = analyze(files, load, |_, frame| collector.push(&frame.record))?;
        Ok(LogContents {
            entries: collector.entries,
            hard_state: analysis.state.hard_state,
            snapshot: analysis.state.snapshot,
            metadata: analysis.state.metadata,
        })
    }

    /// Deletes the oldest segments whose entries are all at or below
    /// `snapshot_index`, keeping at least `min_segments` and never the segment
    /// being written. The caller must have made the snapshot durable first.
    /// Returns the number of segments removed.
    pub fn release(&self, snapshot_index: u64) -> Result<usize> {
        let mut segs = self.shared.segments.lock().expect("segments lock");
        let keep = self.shared.opts.min_segments.max(1);
        let removable = segs.len().saturating_sub(keep);
        // Entries of segment k that survive are all below the first index of
        // segment k + 1, so k is covered once that is <= snapshot_index + 1.
        let n = (0..removable)
            .take_while(|&k| segs[k + 1].first_index <= snapshot_index.saturating_add(1))
            .count();
        if n == 0 {
            return Ok(0);
        }
        for s in &segs[..n] {
            fs::remove_file(&s.path).map_err(io_err("remove", &s.path))?;
        }
        sync_dir(&self.dir).map_err(io_err("fsync", &self.dir))?;
        for s in segs.drain(..n) {
            tracing::info!(segment = %s.path.display(), "wal: released segment");
        }
        self.shared.metrics.segments_released(n as u64);
        Ok(n)
    }

    /// Waits for everything submitted to be durable, then closes the log.
    pub fn close(self) {
        drop(self)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.stop_background_leader();
        if let Some(t) = self.background.take() {
            let _ = t.join();
        }
        // Anything still queued is written by this thread.
        self.shared.ensure_progress();
    }
}

/// Checks a submission against the log as it will be once everything queued
/// before it is written; commits the bookkeeping only if all records pass.
fn check_submission(st: &mut State, records: &[Record], segment_size: u64) -> Result<()> {
    let mut tracker = st.tracker;
    let mut lens = st.state_lens;
    for rec in records {
        let r = rec.as_ref();
        let len = r.frame_len();
        // Worst case the record opens a new segment, after the header and the
        // restated state records.
        let need = SEGMENT_HEADER_LEN + lens.iter().sum::<usize>() + len;
        if need as u64 > segment_size {
            return Err(WalError::RecordTooLarge {
                size: len as u64,
                segment_size,
            });
        }
        tracker.apply(&r).map_err(|e| match e {
            IndexError::Zero => WalError::ZeroIndex,
            IndexError::Gap { last, found } => WalError::IndexGap { last, found },
        })?;
        match r {
            RecordRef::Metadata(_) => lens[0] = len,
            RecordRef::Snapshot { .. } => lens[1] = len,
            RecordRef::HardState(_) => lens[2] = len,
            RecordRef::Entry { .. } => {}
        }
    }
    st.tracker = tracker;
    st.state_lens = lens;
    Ok(())
}
