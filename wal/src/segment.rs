//! Segment files: their header, their names, and how new ones are made.
//!
//! A segment is a preallocated file named `<seq>-<first index>.wal`, both as 16
//! hex digits, e.g. `0000000000000003-00000000000a2c41.wal`. It begins with a
//! 64-byte header:
//!
//! ```text
//!  0          8        12       16       24            32         40       48             56      60
//!  +----------+--------+--------+--------+-------------+----------+--------+--------------+-------+--------+
//!  | CAIRNWAL | version| flags  | seq    | first_index | prev_end | batch  | segment_size | rsvd  | crc32c |
//!  | magic    | u32 LE | u32=0  | u64 LE | u64 LE      | u64 LE   | u64 LE | u64 LE       | u32=0 | u32 LE |
//!  +----------+--------+--------+--------+-------------+----------+--------+--------------+-------+--------+
//! ```
//!
//! * `first_index`: the index the next entry was expected to have when the segment
//!   was started (last index + 1).
//! * `prev_end`: the byte offset at which the records of segment `seq - 1` end. It
//!   lets recovery prove that an earlier segment was not truncated or zeroed.
//! * `batch`: the write batch during which the segment was started.
//! * `crc32c` covers bytes 0..60.
//!
//! New segments are made off the write path: a background thread creates
//! `<n>.tmp`, preallocates it with `fallocate`, and syncs it. At rotation the
//! writer stamps the header, syncs, renames the file to its final name and syncs
//! the directory — so a crash never leaves a half-made segment under a `.wal`
//! name, and leftover `.tmp` files are deleted at open.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

pub const SEGMENT_HEADER_LEN: usize = 64;
pub const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNWAL";
pub const SEGMENT_VERSION: u32 = 1;

/// The decoded header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub first_index: u64,
    pub prev_end: u64,
    pub batch: u64,
    pub segment_size: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        b[32..40].copy_from_slice(&self.prev_end.to_le_bytes());
        b[40..48].copy_from_slice(&self.batch.to_le_bytes());
        b[48..56].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
                b.len()
            ));
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
        if &b[0..8] != SEGMENT_MAGIC {
            return Err("not a cairn WAL segment (bad magic)".into());
        }
        let stored = u32_at(60);
        let computed = crc32c::crc32c(&b[..60]);
        if stored != computed {
            return Err(format!(
                "segment header crc32c mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let version = u32_at(8);
        if version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {version}"));
        }
        if u32_at(12) != 0 || u32_at(56) != 0 {
            return Err("unsupported segment flags".into());
        }
        Ok(SegmentHeader {
            seq: u64_at(16),
            first_index: u64_at(24),
            prev_end: u64_at(32),
            batch: u64_at(40),
            segment_size: u64_at(48),
        })
    }
}

/// `<seq>-<first index>.wal`, both as 16 lower-case hex digits.
pub fn segment_file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// The inverse of [`segment_file_name`].
pub fn parse_segment_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    if seq.len() != 16 || index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(index, 16).ok()?,
    ))
}

/// A segment found in the directory, by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
}

/// The segments of `dir` in sequence order, and any leftover temporary files.
pub fn list_dir(dir: &Path) -> io::Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut temps = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((seq, first_index)) = parse_segment_file_name(name) {
            segments.push(SegmentFile {
                seq,
                first_index,
                path: entry.path(),
            });
        } else if name.ends_with(".tmp") {
            temps.push(entry.path());
        }
    }
    segments.sort_by_key(|s| s.seq);
    temps.sort();
    Ok((segments, temps))
}

/// Reserves `len` bytes of disk for `file` so later writes need no allocation.
/// Filesystems without `fallocate` get a sparse extension instead; either way the
/// bytes read back as zeros.
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    loop {
        use rustix::fs::{FallocateFlags, fallocate};
        match fallocate(file, FallocateFlags::empty(), 0, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::OPNOTSUPP) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A preallocated, synced temporary file ready to become the next segment.
pub struct PreparedSegment {
    pub path: PathBuf,
    pub file: File,
}

/// Prepares the next segment file in the background so rotation does not pay
/// for file creation and preallocation.
pub struct SegmentPipeline {
    rx: Option<Receiver<io::Result<PreparedSegment>>>,
    thread: Option<JoinHandle<()>>,
}

impl SegmentPipeline {
    pub fn start(dir: PathBuf, size: u64) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(0);
        let thread = std::thread::Builder::new()
            .name("wal-segment-prep".into())
            .spawn(move || prepare_loop(dir, size, tx))?;
        Ok(SegmentPipeline {
            rx: Some(rx),
            thread: Some(thread),
        })
    }

    /// Takes the prepared file, waiting for it if it is not ready yet.
    pub fn take(&mut self) -> io::Result<PreparedSegment> {
        let rx = self.rx.as_ref().expect("pipeline running");
        rx.recv()
            .map_err(|_| io::Error::other("segment preparation thread stopped"))?
    }
}

impl Drop for SegmentPipeline {
    fn drop(&mut self) {
        // Dropping the receiver makes the thread's pending send fail; it then
        // removes its unused file and exits.
        self.rx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn prepare_loop(dir: PathBuf, size: u64, tx: SyncSender<io::Result<PreparedSegment>>) {
    for n in 0u64.. {
        let path = dir.join(format!("{n}.tmp"));
        let made = (|| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            preallocate(&file, size)?;
            file.sync_all()?;
            Ok(file)
        })();
        match made {
            Ok(file) => {
                if let Err(unsent) = tx.send(Ok(PreparedSegment {
                    path: path.clone(),
                    file,
                })) {
                    drop(unsent);
                    let _ = fs::remove_file(&path);
                    return;
                }
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

/// Writes `header` into a prepared file and gives it its final name, durably.
pub fn install_segment(
    dir: &Path,
    prepared: PreparedSegment,
    header: &SegmentHeader,
) -> io::Result<(File, PathBuf)> {
    prepared.file.write_all_at(&header.encode(), 0)?;
    prepared.file.sync_data()?;
    let path = dir.join(segment_file_name(header.seq, header.first_index));
    fs::rename(&prepared.path, &path)?;
    sync_dir(dir)?;
    Ok((prepared.file, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sixteen_hex_digits_each_like_etcd() {
        assert_eq!(
            segment_file_name(3, 0xa2c41),
            "0000000000000003-00000000000a2c41.wal"
        );
        assert_eq!(
            parse_segment_file_name("0000000000000003-00000000000a2c41.wal"),
            Some((3, 0xa2c41))
        );
        assert_eq!(parse_segment_file_name("3-a2c41.wal"), None);
        assert_eq!(parse_segment_file_name("0.tmp"), None);
    }

    #[test]
    fn headers_round_trip_and_reject_any_flipped_byte() {
        let h = SegmentHeader {
            seq: 9,
            first_index: 1234,
            prev_end: 4096,
            batch: 77,
            segment_size: 1 << 20,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut b = bytes;
            b[i] ^= 0x40;
            assert!(SegmentHeader::decode(&b).is_err(), "flip at {i} accepted");
        }
    }
}
