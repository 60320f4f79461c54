//! The single writer: turns a batch of submissions into one write and one
//! fdatasync per segment touched, rotating segments when they fill.
//!
//! Only the current group-commit leader holds the writer, so nothing here is
//! shared or locked.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::commit::Submission;
use crate::error::{Result, WalError};
use crate::io::Io;
use crate::metrics::Metrics;
use crate::scan::{IndexTracker, LogState};
use crate::segment::{
    SEGMENT_HEADER_LEN, SegmentFile, SegmentHeader, SegmentPipeline, install_segment,
};
use crate::{AppendInfo, DurablePosition};

pub(crate) struct Writer {
    dir: PathBuf,
    io: Io,
    file: File,
    path: PathBuf,
    seq: u64,
    /// Where the next frame goes; everything before it is durable.
    offset: u64,
    /// Size of the current segment.
    capacity: u64,
    next_batch: u64,
    tracker: IndexTracker,
    state: LogState,
    buf: Vec<u8>,
    pipeline: SegmentPipeline,
    new_segment_size: u64,
}

/// Where recovery left the log.
pub(crate) struct WriterStart {
    pub file: File,
    pub path: PathBuf,
    pub seq: u64,
    pub offset: u64,
    pub capacity: u64,
    pub next_batch: u64,
    pub last_index: u64,
    pub state: LogState,
}

impl Writer {
    pub fn new(dir: &Path, io: Io, start: WriterStart, new_segment_size: u64) -> Result<Writer> {
        let pipeline = SegmentPipeline::start(dir.to_path_buf(), new_segment_size)
            .map_err(|e| WalError::io("start segment preparation in", dir, e))?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            io,
            file: start.file,
            path: start.path,
            seq: start.seq,
            offset: start.offset,
            capacity: start.capacity,
            next_batch: start.next_batch,
            tracker: IndexTracker {
                last: start.last_index,
            },
            state: start.state,
            buf: Vec::new(),
            pipeline,
            new_segment_size,
        })
    }

    /// The durable end of the log (valid between batches).
    pub fn position(&self) -> DurablePosition {
        DurablePosition {
            segment: self.seq,
            offset: self.offset,
            last_index: self.tracker.last,
            batch: self.next_batch.wrapping_sub(1),
        }
    }

    /// Writes `subs` as one batch and makes it durable. Returns each
    /// submission's position. On error nothing in the batch may be
    /// acknowledged, and the caller must stop using the writer.
    pub fn write_batch(
        &mut self,
        subs: &[Submission],
        metrics: &Metrics,
        segments: &Mutex<Vec<SegmentFile>>,
    ) -> Result<Vec<AppendInfo>> {
        let batch = self.next_batch;
        let tag = batch as u32;
        self.buf.clear();
        let mut infos = Vec::with_capacity(subs.len());
        for sub in subs {
            for rec in &sub.records {
                let r = rec.as_ref();
                let len = r.frame_len() as u64;
                if self.offset + self.buf.len() as u64 + len > self.capacity {
                    self.flush(metrics)?;
                    self.rotate(batch, metrics, segments)?;
                    for s in self.state.records() {
                        s.encode_into(tag, &mut self.buf);
                    }
                }
                r.encode_into(tag, &mut self.buf);
                self.tracker
                    .apply(&r)
                    .expect("index continuity is checked when records are submitted");
                self.state.apply(&r);
            }
            infos.push(AppendInfo {
                last_index: self.tracker.last,
                segment: self.seq,
                end_offset: self.offset + self.buf.len() as u64,
            });
        }
        self.flush(metrics)?;
        self.next_batch += 1;
        metrics.batch(
            subs.len() as u64,
            subs.iter().map(|s| s.records.len() as u64).sum(),
        );
        Ok(infos)
    }

    fn flush(&mut self, metrics: &Metrics) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let took = self
            .io
            .write_and_sync(&self.file, self.offset, &self.buf)
            .map_err(|e| WalError::io("write and fdatasync", &self.path, e))?;
        metrics.synced(self.buf.len() as u64, took);
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Starts the next segment. The current one is fully durable at this point.
    fn rotate(
        &mut self,
        batch: u64,
        metrics: &Metrics,
        segments: &Mutex<Vec<SegmentFile>>,
    ) -> Result<()> {
        let prepared = self
            .pipeline
            .take()
            .map_err(|e| WalError::io("prepare a new segment in", &self.dir, e))?;
        let header = SegmentHeader {
            seq: self.seq + 1,
            first_index: self.tracker.last + 1,
            prev_end: self.offset,
            batch,
            segment_size: self.new_segment_size,
        };
        let (file, path) = install_segment(&self.dir, prepared, &header)
            .map_err(|e| WalError::io("install a new segment in", &self.dir, e))?;
        metrics.extra_fsync(2); // the header, then the directory
        metrics.segment_created();
        tracing::debug!(segment = %path.display(), first_index = header.first_index, "wal: started segment");
        segments.lock().expect("segments lock").push(SegmentFile {
            seq: header.seq,
            first_index: header.first_index,
            path: path.clone(),
        });
        self.file = file;
        self.path = path;
        self.seq = header.seq;
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.capacity = self.new_segment_size;
        Ok(())
    }
}
