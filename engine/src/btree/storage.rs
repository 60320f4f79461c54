//! Where the writer's bytes go. Readers never use this: they read the file
//! through a read-only mmap of [`Storage::file`].
//!
//! [`FileStorage`] is the real thing. [`FaultyStorage`] is a stand-in for
//! crash tests: it behaves like a file, but can refuse every operation from the
//! N-th one on (a crash), and can then produce the file's contents as a disk
//! would hold them after power loss: everything not synced dropped, the last
//! write torn at a chosen byte.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// The writer's view of the database file.
pub trait Storage: Send + Sync {
    /// The file, for mapping and reading.
    fn file(&self) -> &File;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write before it durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Extends the file to at least `len` bytes of reserved, zeroed space.
    fn grow(&self, len: u64) -> io::Result<()>;
    /// Truncates (or extends) the file to exactly `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn file_len(&self) -> io::Result<u64> {
        Ok(self.file().metadata()?.len())
    }
}

/// A storage shared with its creator (e.g. a test that inspects a
/// [`FaultyStorage`] after handing it to the database).
impl<S: Storage + ?Sized> Storage for std::sync::Arc<S> {
    fn file(&self) -> &File {
        (**self).file()
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
    fn grow(&self, len: u64) -> io::Result<()> {
        (**self).grow(len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        (**self).set_len(len)
    }
}

/// A plain file: `pwrite`, `fdatasync`, `fallocate`.
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    pub fn new(file: File) -> Self {
        FileStorage { file }
    }
}

pub(crate) fn fallocate(file: &File, len: u64) -> io::Result<()> {
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

impl Storage for FileStorage {
    fn file(&self) -> &File {
        &self.file
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn grow(&self, len: u64) -> io::Result<()> {
        fallocate(&self.file, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// A change not yet made durable, with what it replaced.
enum Unsynced {
    Write {
        offset: u64,
        data: Vec<u8>,
        old: Vec<u8>,
        old_len: u64,
    },
    Len {
        old_len: u64,
        old_tail: Vec<u8>,
    },
}

#[derive(Default)]
struct FaultState {
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    unsynced: Vec<Unsynced>,
    /// A write refused by the crash: it may still have reached the disk in part.
    refused_write: Option<(u64, Vec<u8>)>,
}

/// A file that can crash. Operations are counted from 1; with
/// [`FaultyStorage::crash_at`] set to `n`, the n-th operation and every one
/// after it fail with an "injected crash" error, and nothing they would have
/// done reaches the file.
pub struct FaultyStorage {
    file: File,
    state: Mutex<FaultState>,
}

#[derive(PartialEq, Eq)]
enum Admit {
    Proceed,
    /// This operation is the crash.
    CrashNow,
    /// The crash already happened.
    Dead,
}

fn crash_error() -> io::Error {
    io::Error::other("injected crash")
}

impl FaultyStorage {
    pub fn new(file: File) -> Self {
        FaultyStorage {
            file,
            state: Mutex::new(FaultState::default()),
        }
    }

    /// Makes the `n`-th operation from now on (counting from 1) crash.
    pub fn crash_at(&self, n: u64) {
        let mut s = self.state.lock().expect("fault state");
        s.crash_at = Some(s.ops + n);
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().expect("fault state").ops
    }

    pub fn crashed(&self) -> bool {
        self.state.lock().expect("fault state").crashed
    }

    /// Counts an operation and says whether it may proceed.
    fn admit(&self, s: &mut FaultState) -> Admit {
        if s.crashed {
            return Admit::Dead;
        }
        s.ops += 1;
        if s.crash_at.is_some_and(|n| s.ops >= n) {
            s.crashed = true;
            return Admit::CrashNow;
        }
        Admit::Proceed
    }

    fn current_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = self.current_len()?.min(offset + len);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// The file as a disk would hold it after power loss now: every change
    /// since the last sync undone, then the last write — the one the crash
    /// refused, or else the last unsynced one — applied for its first
    /// `torn_at` bytes (clamped to its length).
    pub fn crash_image(&self, torn_at: usize) -> io::Result<Vec<u8>> {
        let s = self.state.lock().expect("fault state");
        let mut img = self.read_range(0, u64::MAX)?;
        let mut last_write: Option<(u64, Vec<u8>)> = s.refused_write.clone();
        for u in s.unsynced.iter().rev() {
            match u {
                Unsynced::Write {
                    offset,
                    data,
                    old,
                    old_len,
                } => {
                    if last_write.is_none() {
                        last_write = Some((*offset, data.clone()));
                    }
                    let at = *offset as usize;
                    img[at..at + old.len()].copy_from_slice(old);
                    img.truncate(*old_len as usize);
                }
                Unsynced::Len { old_len, old_tail } => {
                    let cut = img.len();
                    img.resize(*old_len as usize, 0);
                    if (*old_len as usize) > cut {
                        img[cut..cut + old_tail.len()].copy_from_slice(old_tail);
                    }
                }
            }
        }
        if let Some((offset, data)) = last_write.filter(|_| torn_at > 0) {
            let keep = torn_at.min(data.len());
            let at = offset as usize;
            if img.len() < at + keep {
                img.resize(at + keep, 0);
            }
            img[at..at + keep].copy_from_slice(&data[..keep]);
        }
        Ok(img)
    }
}

impl Storage for FaultyStorage {
    fn file(&self) -> &File {
        &self.file
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.state.lock().expect("fault state");
        match self.admit(&mut s) {
            Admit::Proceed => {}
            Admit::CrashNow => {
                s.refused_write = Some((offset, buf.to_vec()));
                return Err(crash_error());
            }
            Admit::Dead => return Err(crash_error()),
        }
        let old_len = self.current_len()?;
        let old = self.read_range(offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)?;
        s.unsynced.push(Unsynced::Write {
            offset,
            data: buf.to_vec(),
            old,
            old_len,
        });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut s = self.state.lock().expect("fault state");
        if self.admit(&mut s) != Admit::Proceed {
            return Err(crash_error());
        }
        s.unsynced.clear();
        Ok(())
    }

    fn grow(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().expect("fault state");
        if self.admit(&mut s) != Admit::Proceed {
            return Err(crash_error());
        }
        let old_len = self.current_len()?;
        if len > old_len {
            self.file.set_len(len)?;
            s.unsynced.push(Unsynced::Len {
                old_len,
                old_tail: Vec::new(),
            });
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock().expect("fault state");
        if self.admit(&mut s) != Admit::Proceed {
            return Err(crash_error());
        }
        let old_len = self.current_len()?;
        let old_tail = if len < old_len {
            self.read_range(len, old_len - len)?
        } else {
            Vec::new()
        };
        self.file.set_len(len)?;
        s.unsynced.push(Unsynced::Len { old_len, old_tail });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_image_keeps_synced_bytes_and_a_torn_prefix_of_the_last_write() {
        let tmp = tempfile::tempfile().unwrap();
        let s = FaultyStorage::new(tmp);
        s.write_at(b"AAAA", 0).unwrap();
        s.sync().unwrap();
        s.write_at(b"BBBB", 0).unwrap();
        s.write_at(b"CCCC", 4).unwrap();
        s.crash_at(1);
        assert!(s.write_at(b"DDDD", 8).is_err());
        assert!(s.sync().is_err());
        assert!(s.crashed());
        // Dropped: the BBBB and CCCC writes; torn: the refused DDDD write.
        assert_eq!(s.crash_image(2).unwrap(), b"AAAA\0\0\0\0DD");
        assert_eq!(s.crash_image(0).unwrap(), b"AAAA");
    }

    #[test]
    fn without_a_refused_write_the_last_unsynced_write_is_torn() {
        let s = FaultyStorage::new(tempfile::tempfile().unwrap());
        s.write_at(b"XXXXXXXX", 0).unwrap();
        s.sync().unwrap();
        s.write_at(b"YYYY", 2).unwrap();
        s.crash_at(1);
        assert!(s.sync().is_err());
        assert_eq!(s.crash_image(3).unwrap(), b"XXYYYXXX");
    }
}
