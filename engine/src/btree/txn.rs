//! Transactions.
//!
//! Commit protocol (transaction `t`):
//! 1. every dirty node goes to a newly allocated page, children first, with new
//!    overflow runs for large values; the pages the transaction freed become
//!    pending under `t`;
//! 2. the free list (released and pending extents) goes to a new run;
//! 3. all of that is written and fdatasync'ed;
//! 4. the meta for `t` is written into meta page `t % 2` and fdatasync'ed;
//! 5. the new meta (and a new mapping if the file grew) is published.
//!
//! Nothing written in steps 1–2 is reachable from any committed meta or live
//! reader, so a crash before step 4 completes leaves the previous meta and its
//! tree intact; a torn meta fails its checksum and open falls back to the
//! other slot, whose tree is intact for the same reason.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::bucket::{Bucket, BucketMut, create_nested, delete_nested, open_nested};
use super::cursor::Value;
use super::db::{Db, Inner, Writer};

use super::error::{Error, Result};
use super::freelist::{Allocator, Freed, encode_extents, encoded_len};
use super::meta::Meta;
use super::node::{Child, ChildRef, Ctx, Mapping};
use super::page::{
    EMPTY, HEADER_LEN, Le32, Le64, PageId, PageKind, header, header_mut, seal, span_for,
};
use super::tree::{self, Writes};

/// A consistent snapshot of one committed transaction. Pages it can reach are
/// never reused while it lives.
pub struct ReadTxn {
    db: Arc<Inner>,
    meta: Meta,
    map: Arc<Mapping>,
}

impl ReadTxn {
    pub(crate) fn new(db: Arc<Inner>) -> Self {
        let (meta, map) = {
            let mut s = db.shared();
            let meta = s.meta;
            *s.readers.entry(meta.txid).or_default() += 1;
            (meta, s.map.clone())
        };
        ReadTxn { db, meta, map }
    }

    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    pub(crate) fn map(&self) -> &Mapping {
        &self.map
    }

    /// Writes a complete database file holding exactly this snapshot: its
    /// meta in both meta slots, then every page below its high-water mark
    /// as this snapshot sees them. Pages this snapshot can reach are never
    /// reused while it lives, so the copy is consistent while writers go on.
    /// Returns the bytes written.
    pub fn copy_to(&self, out: &mut impl std::io::Write) -> Result<u64> {
        let ps = self.db.ps;
        let meta_page = {
            let mut p = vec![0u8; ps];
            p[..super::meta::META_LEN].copy_from_slice(&self.meta.encode());
            p
        };
        let io = |e: std::io::Error| super::error::Error::Io {
            op: "writing a database copy",
            path: self.db.path.clone(),
            source: e,
        };
        out.write_all(&meta_page).map_err(io)?;
        out.write_all(&meta_page).map_err(io)?;
        for id in 2..self.meta.hwm {
            out.write_all(self.map.page(id, ps)?).map_err(io)?;
        }
        Ok(self.meta.hwm * ps as u64)
    }

    /// The raw bytes of page `id` as this snapshot sees it (for tools).
    pub fn raw_page(&self, id: PageId) -> Result<&[u8]> {
        self.map.page(id, self.db.ps)
    }

    fn dir(&self) -> Bucket<'_> {
        Bucket::new(ChildRef::Page(self.meta.root), &self.map, self.db.ps)
    }

    /// Top-level bucket `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.dir().bucket(name)
    }

    /// Names of the top-level buckets, in order.
    pub fn buckets(&self) -> Result<Vec<Vec<u8>>> {
        bucket_names(self.dir())
    }
}

fn bucket_names(dir: Bucket<'_>) -> Result<Vec<Vec<u8>>> {
    let mut c = dir.cursor();
    let mut out = Vec::new();
    let mut cur = c.first()?;
    while let Some((k, v)) = cur {
        if v == Value::Bucket {
            out.push(k.to_vec());
        }
        cur = c.next()?;
    }
    Ok(out)
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        let mut s = self.db.shared();
        if let Some(n) = s.readers.get_mut(&self.meta.txid) {
            *n -= 1;
            if *n == 0 {
                s.readers.remove(&self.meta.txid);
            }
        }
    }
}

/// The single write transaction. Changes become visible to new readers when
/// `commit` returns; dropping it without committing discards them. It owns
/// the writer while open (others wait in `begin_write`), so it can be kept
/// across calls and moved between threads.
pub struct WriteTxn {
    db: Db,
    /// The writer's state; always `Some` until the transaction ends.
    w: Option<Box<Writer>>,
    base: Meta,
    txid: u64,
    root: Child,
    ctx: Ctx,
    /// Lower the high-water mark over the released free tail at commit
    /// (defragmentation; the file itself is shortened afterwards, in steps).
    trim: bool,
}

impl WriteTxn {
    pub(crate) fn new(db: Db) -> Result<Self> {
        let inner = db.inner.clone();
        let mut w = inner.take_writer()?;
        if w.poisoned {
            inner.return_writer(w);
            return Err(Error::Poisoned);
        }
        let (base, map, readers) = {
            let s = inner.shared();
            (
                s.meta,
                s.map.clone(),
                s.readers.keys().copied().collect::<BTreeSet<u64>>(),
            )
        };
        // Freed pages nobody alive can see become reusable. A reader that
        // starts after this point sees `base` or later, which reaches none of
        // the pending pages.
        w.alloc.release(&readers);
        Ok(WriteTxn {
            db,
            w: Some(w),
            base,
            txid: base.txid + 1,
            root: Child::Page(base.root),
            ctx: Ctx {
                map,
                ps: inner.ps,
                freed: Vec::new(),
            },
            trim: false,
        })
    }

    /// The txid this transaction commits as.
    pub fn txid(&self) -> u64 {
        self.txid
    }

    fn dir(&self) -> Bucket<'_> {
        Bucket::new(self.root.as_ref(), &self.ctx.map, self.ctx.ps)
    }

    /// Top-level bucket `name` as this transaction sees it.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'_>>> {
        self.dir().bucket(name)
    }

    pub fn buckets(&self) -> Result<Vec<Vec<u8>>> {
        bucket_names(self.dir())
    }

    pub fn bucket_mut(&mut self, name: &[u8]) -> Result<Option<BucketMut<'_>>> {
        open_nested(&mut self.root, &mut self.ctx, name)
    }

    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_nested(&mut self.root, &mut self.ctx, name, false)
    }

    pub fn create_bucket_if_missing(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_nested(&mut self.root, &mut self.ctx, name, true)
    }

    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        delete_nested(&mut self.root, &mut self.ctx, name)
    }

    /// The bucket directory as a mutable tree, for the engine's own passes
    /// (defragmentation).
    pub(crate) fn parts(&mut self) -> (&mut Child, &mut Ctx) {
        (&mut self.root, &mut self.ctx)
    }

    /// The mapping this transaction reads committed pages from.
    pub(crate) fn map(&self) -> &Arc<Mapping> {
        &self.ctx.map
    }

    /// The committed bucket directory this transaction started from.
    pub(crate) fn base_root(&self) -> PageId {
        self.base.root
    }

    pub(crate) fn set_trim(&mut self) {
        self.trim = true;
    }

    /// Discards every change.
    pub fn abort(self) {}

    /// Makes every change durable, then visible. A failure leaves the database
    /// as of the previous commit, and the handle refusing writes until reopened.
    pub fn commit(mut self) -> Result<()> {
        let dirty = matches!(self.root, Child::Node(_)) || !self.ctx.freed.is_empty();
        if !dirty && !self.trim {
            return Ok(());
        }
        let r = self.commit_inner();
        if r.is_err() {
            self.writer().poisoned = true;
        }
        r
    }

    fn writer(&mut self) -> &mut Writer {
        self.w
            .as_mut()
            .expect("writer held until the transaction ends")
    }

    fn commit_inner(&mut self) -> Result<()> {
        let ps = self.ctx.ps;
        let txid = self.txid;
        let inner = self.db.inner.clone();
        let io = |op: &'static str| {
            let path = inner.path.clone();
            move |source| Error::Io { op, path, source }
        };
        let w = self
            .w
            .as_mut()
            .expect("writer held until the transaction ends");
        // About one new page per page this transaction materialized, plus the
        // free list: reserve once instead of growing page by page.
        let mut writes = Writes::default();
        writes.buf.reserve((self.ctx.freed.len() + 8) * ps);
        let root = tree::spill(&mut self.root, ps, &mut w.alloc, &mut writes, txid)?;

        let mut freed = std::mem::take(&mut self.ctx.freed);
        if self.base.freelist != EMPTY {
            let h = *header(self.ctx.map.page(self.base.freelist, ps)?);
            freed.push(Freed {
                page: self.base.freelist,
                len: h.span.get() as u64,
                birth: h.txid.get(),
            });
        }
        w.alloc.defer(txid, freed);
        if self.trim {
            w.alloc.trim_tail();
        }
        let freelist = write_freelist(&mut w.alloc, &mut writes, ps, txid);

        let needed = w.alloc.hwm * ps as u64;
        let grew = needed > w.file_len;
        if grew {
            let step = inner.opts.grow_step.max(ps as u64);
            let len = needed.div_ceil(step) * step;
            w.storage.grow(len).map_err(io("grow"))?;
            w.file_len = len;
        }
        write_pages(&*w.storage, &mut writes, ps).map_err(io("write"))?;
        w.storage.sync().map_err(io("fdatasync"))?;
        let meta = Meta {
            page_size: ps as u32,
            txid,
            root,
            freelist,
            hwm: w.alloc.hwm,
        };
        w.storage
            .write_at(&meta.encode(), (txid % 2) * ps as u64)
            .map_err(io("write meta"))?;
        w.storage.sync().map_err(io("fdatasync"))?;

        // A new mapping only when the file outgrew the current one; within it
        // (after an earlier shrink), raising the limit is enough.
        let new_map = if grew && w.file_len > self.ctx.map.len() {
            Some(Arc::new(
                Mapping::new(w.storage.file(), w.file_len, super::db::reach(w.file_len))
                    .map_err(io("map"))?,
            ))
        } else {
            if grew {
                self.ctx.map.set_limit(w.file_len);
            }
            None
        };
        let mut s = inner.shared();
        s.meta = meta;
        if let Some(map) = new_map {
            s.mappings.retain(|m| m.strong_count() > 0);
            s.mappings.push(Arc::downgrade(&map));
            s.map = map;
        }
        s.free_pages = w.alloc.free_pages();
        s.pending_pages = w.alloc.pending_pages();
        s.file_len = w.file_len;
        Ok(())
    }
}

impl Drop for WriteTxn {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            self.db.inner.return_writer(w);
        }
    }
}

/// Writes the whole free set into a newly allocated run; returns its page.
fn write_freelist(alloc: &mut Allocator, writes: &mut Writes, ps: usize, txid: u64) -> PageId {
    // Allocating the run can only shift one extent boundary, changing the
    // encoding by a few bytes at most: size it with margin.
    let estimate = encoded_len(&alloc.all_free()) + 32;
    let n = span_for(estimate, ps);
    let id = alloc.alloc(n);
    let bytes = encode_extents(&alloc.all_free());
    debug_assert!(span_for(bytes.len(), ps) <= n);
    let run = writes.add(id, n, ps);
    run[HEADER_LEN..HEADER_LEN + bytes.len()].copy_from_slice(&bytes);
    let h = header_mut(run);
    h.kind = PageKind::Freelist as u8;
    h.span = Le32::new(n as u32);
    h.id = Le64::new(id);
    h.txid = Le64::new(txid);
    seal(run);
    id
}

/// Writes pages in id order, one page per write, even within a run.
///
/// One page per write is deliberate: on Linux a large buffered write creates
/// large page-cache folios, and every later 4 KiB write into such a folio walks
/// all of its buffers — measured here at 2.5× the cost of writing into small
/// folios, and a slower fdatasync (docs/benchmarks.md).
fn write_pages(
    storage: &dyn super::storage::Storage,
    writes: &mut Writes,
    ps: usize,
) -> std::io::Result<()> {
    writes.runs.sort_unstable_by_key(|r| r.0);
    for &(id, at, n) in &writes.runs {
        for i in 0..n as usize {
            let page = &writes.buf[at + i * ps..at + (i + 1) * ps];
            storage.write_at(page, (id + i as u64) * ps as u64)?;
        }
    }
    Ok(())
}
