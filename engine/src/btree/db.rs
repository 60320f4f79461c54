//! The database: one file, one writer, any number of readers.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::freelist::{Allocator, decode_extents};
use super::meta::{META_LEN, Meta, valid_page_size};
use super::node::Mapping;
use super::page::{EMPTY, HEADER_LEN, PageKind, header};
use super::storage::{FileStorage, Storage};
use super::txn::{ReadTxn, WriteTxn};

/// How to open (and, for a new file, create) a database.
#[derive(Clone, Debug)]
pub struct Options {
    /// Page size of a new database (a power of two, 1 KiB to 64 KiB); an
    /// existing database keeps its own. Default 4096.
    pub page_size: u32,
    /// The file grows in multiples of this many bytes. Default 16 MiB.
    pub grow_step: u64,
    /// How long `open` waits for the file lock. Default 1 s.
    pub lock_timeout: Duration,
    /// Open for reading only: no writes, a shared lock (so no writer process
    /// can run at the same time).
    pub read_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            page_size: 4096,
            grow_step: 16 << 20,
            lock_timeout: Duration::from_secs(1),
            read_only: false,
        }
    }
}

/// Cheap figures, as of the last commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub page_size: u32,
    pub txid: u64,
    /// Bytes in the file (it may extend past the high-water mark).
    pub file_size: u64,
    /// Pages `[0, hwm)` belong to the database.
    pub hwm: u64,
    /// Free pages that can be reused now.
    pub free_pages: u64,
    /// Freed pages waiting for older readers to finish.
    pub pending_pages: u64,
    /// Bytes of pages in use (meta, tree, overflow, free list).
    pub in_use_bytes: u64,
    pub readers: usize,
}

/// State only the writer touches.
pub(crate) struct Writer {
    pub storage: Box<dyn Storage>,
    pub alloc: Allocator,
    pub file_len: u64,
    pub poisoned: bool,
}

/// A ticket queue for the writer: transactions get it strictly in the order
/// they asked, so a writer committing in a tight loop cannot starve another
/// (defragmentation steps, say).
pub(crate) struct WriterSlot {
    writer: Option<Box<Writer>>,
    next_ticket: u64,
    serving: u64,
}

/// What readers and the writer share: the latest committed meta and mapping,
/// and who is reading what.
pub(crate) struct Shared {
    pub meta: Meta,
    pub map: Arc<Mapping>,
    /// Every mapping still held by someone, so shrinking the file can lower
    /// all their limits.
    pub mappings: Vec<Weak<Mapping>>,
    /// Live read transactions by txid.
    pub readers: BTreeMap<u64, usize>,
    pub free_pages: u64,
    pub pending_pages: u64,
    pub file_len: u64,
}

pub(crate) struct Inner {
    pub path: PathBuf,
    pub ps: usize,
    pub opts: Options,
    /// The writer's state, handed to write transactions in the order they
    /// asked for it.
    writer: Mutex<WriterSlot>,
    writer_free: Condvar,
    read_only: bool,
    pub shared: Mutex<Shared>,
    _lock: Option<File>,
}

impl Inner {
    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().expect("shared lock")
    }

    /// Takes the writer, waiting (in arrival order) while others hold it or
    /// asked first.
    pub fn take_writer(&self) -> Result<Box<Writer>> {
        if self.read_only {
            return Err(Error::ReadOnly("the database was opened read-only"));
        }
        let mut slot = self.writer.lock().expect("writer lock");
        let ticket = slot.next_ticket;
        slot.next_ticket += 1;
        while slot.serving != ticket {
            slot = self.writer_free.wait(slot).expect("writer lock");
        }
        Ok(slot
            .writer
            .take()
            .expect("the writer is home when a ticket is served"))
    }

    /// Shortens the file by at most `max_bytes` towards the high-water mark.
    /// Returns whether more remains to cut. Only released pages lie past the
    /// high-water mark, so no reader can reach what is cut; holding the writer
    /// meanwhile keeps the mark from moving.
    pub fn shrink_file(&self, max_bytes: u64) -> Result<bool> {
        let mut w = self.take_writer()?;
        let r = (|| {
            let needed = w.alloc.hwm * self.ps as u64;
            if w.file_len <= needed {
                return Ok(false);
            }
            let len = needed.max(w.file_len.saturating_sub(max_bytes));
            // No transaction reads past the high-water mark; lowering every
            // mapping's limit first makes even a corrupt reference into the
            // part about to go an error rather than a fault. The mappings are
            // kept: unmapping a large populated one takes tens of ms.
            {
                let mut s = self.shared();
                s.mappings.retain(|m| m.strong_count() > 0);
                for m in s.mappings.iter().filter_map(Weak::upgrade) {
                    m.set_limit(m.len().min(len));
                }
            }
            w.storage.set_len(len).map_err(|source| Error::Io {
                op: "truncate",
                path: self.path.clone(),
                source,
            })?;
            w.file_len = len;
            self.shared().file_len = len;
            Ok(len > needed)
        })();
        self.return_writer(w);
        r
    }

    pub fn return_writer(&self, w: Box<Writer>) {
        let mut slot = self.writer.lock().expect("writer lock");
        slot.writer = Some(w);
        slot.serving += 1;
        drop(slot);
        self.writer_free.notify_all();
    }
}

/// An embedded copy-on-write B+tree database in one file.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<Inner>,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn lock(file: &File, path: &Path, exclusive: bool, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match r {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(path.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
    }
}

/// Both meta slots of a database file as found: each valid meta, or why not.
pub fn read_metas(file: &File) -> [std::result::Result<Meta, String>; 2] {
    let read = |off: u64| -> std::result::Result<Meta, String> {
        let mut b = [0u8; META_LEN];
        file.read_exact_at(&mut b, off).map_err(|e| e.to_string())?;
        Meta::decode(&b)
    };
    let first = read(0);
    let second = match &first {
        Ok(m) => read(m.page_size as u64),
        // The first meta is damaged: find the second by trying every page size.
        Err(_) => (10..=16)
            .map(|shift| 1u64 << shift)
            .find_map(|ps| read(ps).ok().filter(|m| m.page_size as u64 == ps))
            .ok_or_else(|| "no valid meta found at any page size".to_string()),
    };
    [first, second]
}

impl Db {
    /// Opens the database at `path`, creating it if it does not exist.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let path = path.as_ref();
        if !valid_page_size(opts.page_size) {
            return Err(Error::InvalidOptions(format!(
                "page size {} is not a power of two from 1024 to 65536",
                opts.page_size
            )));
        }
        if !path.exists() {
            if opts.read_only {
                return Err(io("open", path)(std::io::ErrorKind::NotFound.into()));
            }
            create(path, opts.page_size)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!opts.read_only)
            .open(path)
            .map_err(io("open", path))?;
        lock(&file, path, !opts.read_only, opts.lock_timeout)?;
        let lock_file = file.try_clone().map_err(io("open", path))?;
        Self::assemble(
            path,
            Box::new(FileStorage::new(file)),
            opts,
            Some(lock_file),
        )
    }

    /// Opens an existing database through a given storage (e.g. a
    /// [`super::storage::FaultyStorage`] in crash tests). No file lock is taken.
    pub fn open_with_storage(
        path: impl AsRef<Path>,
        storage: Box<dyn Storage>,
        opts: Options,
    ) -> Result<Db> {
        Self::assemble(path.as_ref(), storage, opts, None)
    }

    fn assemble(
        path: &Path,
        storage: Box<dyn Storage>,
        opts: Options,
        lock: Option<File>,
    ) -> Result<Db> {
        let [a, b] = read_metas(storage.file());
        let meta = match (a, b) {
            (Ok(a), Ok(b)) => {
                if a.txid >= b.txid {
                    a
                } else {
                    b
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(_), Err(_)) => return Err(Error::NoValidMeta(path.to_path_buf())),
        };
        let ps = meta.page_size as usize;
        let file_len = storage.file_len().map_err(io("stat", path))?;
        if meta.hwm < 2 || meta.hwm * ps as u64 > file_len {
            return Err(Error::Corrupt(format!(
                "meta {} claims {} pages but the file holds {} bytes",
                meta.txid, meta.hwm, file_len
            )));
        }
        let map = Arc::new(
            Mapping::new(storage.file(), file_len, reach(file_len)).map_err(io("map", path))?,
        );
        let free = if meta.freelist == EMPTY {
            Vec::new()
        } else {
            let first = map.page(meta.freelist, ps)?;
            let h = header(first);
            if h.kind != PageKind::Freelist as u8 || h.id.get() != meta.freelist {
                return Err(Error::CorruptPage {
                    page: meta.freelist,
                    reason: "the meta's free list is not a free-list page".into(),
                });
            }
            let run = map.span(meta.freelist, h.span.get() as u64, ps)?;
            let extents = decode_extents(&run[HEADER_LEN..], meta.freelist)?;
            if let Some(&(s, l)) = extents.iter().find(|&&(s, l)| s < 2 || s + l > meta.hwm) {
                return Err(Error::CorruptPage {
                    page: meta.freelist,
                    reason: format!("free extent {s}+{l} lies outside pages 2..{}", meta.hwm),
                });
            }
            extents
        };
        let alloc = Allocator::new(meta.hwm, free);
        let shared = Shared {
            meta,
            mappings: vec![Arc::downgrade(&map)],
            map,
            readers: BTreeMap::new(),
            free_pages: alloc.free_pages(),
            pending_pages: 0,
            file_len,
        };
        let read_only = opts.read_only;
        let writer = (!read_only).then(|| {
            Box::new(Writer {
                storage,
                alloc,
                file_len,
                poisoned: false,
            })
        });
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                ps,
                opts,
                writer: Mutex::new(WriterSlot {
                    writer,
                    next_ticket: 0,
                    serving: 0,
                }),
                writer_free: Condvar::new(),
                read_only,
                shared: Mutex::new(shared),
                _lock: lock,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn page_size(&self) -> usize {
        self.inner.ps
    }

    /// A consistent snapshot of the latest committed state. Never waits for the
    /// writer; the writer never waits for it.
    pub fn begin_read(&self) -> ReadTxn {
        ReadTxn::new(self.inner.clone())
    }

    /// The write transaction; waits while another is open.
    pub fn begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::new(self.clone())
    }

    pub fn stats(&self) -> Stats {
        let s = self.inner.shared();
        let used = s.meta.hwm - s.free_pages - s.pending_pages;
        Stats {
            page_size: s.meta.page_size,
            txid: s.meta.txid,
            file_size: s.file_len,
            hwm: s.meta.hwm,
            free_pages: s.free_pages,
            pending_pages: s.pending_pages,
            in_use_bytes: used * self.inner.ps as u64,
            readers: s.readers.values().sum(),
        }
    }
}

/// How far to map a file of `len` bytes: twice its size (at least 64 MiB), so
/// growth seldom needs a new mapping.
pub(crate) fn reach(len: u64) -> u64 {
    (2 * len).max(64 << 20)
}

/// Writes a new, empty database: two metas, no tree. Built under a temporary
/// name and renamed into place.
fn create(path: &Path, page_size: u32) -> Result<()> {
    let ps = page_size as usize;
    let mut buf = vec![0u8; 2 * ps];
    for txid in 0..2u64 {
        let meta = Meta {
            page_size,
            txid,
            root: EMPTY,
            freelist: EMPTY,
            hwm: 2,
        };
        let at = txid as usize * ps;
        buf[at..at + META_LEN].copy_from_slice(&meta.encode());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all_at(&buf, 0).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(())
}
