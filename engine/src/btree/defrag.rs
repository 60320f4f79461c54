//! Online defragmentation: reclaims free space and shrinks the file while
//! reads and writes go on.
//!
//! The target size is the pages in use plus a little slack; every page past it
//! is in the *tail*. A pass walks every bucket's leaves in key order, in many
//! small steps. Each step is one ordinary write transaction: it scans a bounded
//! number of leaves, and every leaf that lies in the tail — or whose ancestors
//! or overflow runs do — is rewritten. Commit allocates lowest-first, so the
//! rewritten pages land in free space near the head, and the tail pages become
//! free once no reader can see them. After a pass the free tail is cut off.
//!
//! Other writers run between steps and readers are never blocked, so nobody
//! waits longer than one step: a bounded scan and a commit of at most
//! `step_pages` moved pages.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::db::Db;
use super::error::{Error, Result};
use super::node::{ChildRef, Mapping};
use super::page::{EMPTY, NodeView, PageId, StoredValue, span_for};
use super::tree;

#[derive(Clone, Debug)]
pub struct DefragOptions {
    /// Pages moved per step at most (a step may finish the leaf it is on).
    pub step_pages: u64,
    /// Leaves scanned per step at most.
    pub step_leaves: usize,
    /// Pause between steps, leaving room for other writers.
    pub pause: Duration,
    /// Passes over the whole database at most.
    pub max_passes: usize,
    /// The file is shortened by at most this many bytes at a time: giving
    /// blocks back to the filesystem takes time in proportion (about 1 ms per
    /// 2 MiB on cairn's reference machine, see docs/benchmarks.md).
    pub truncate_step: u64,
}

impl Default for DefragOptions {
    fn default() -> Self {
        DefragOptions {
            step_pages: 256,
            step_leaves: 2048,
            pause: Duration::from_micros(200),
            max_passes: 6,
            truncate_step: 2 << 20,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefragReport {
    pub file_size_before: u64,
    pub file_size_after: u64,
    pub passes: usize,
    /// Write transactions defragmentation committed.
    pub steps: u64,
    pub pages_moved: u64,
    /// The longest a step held the writer.
    pub longest_step: Duration,
    pub duration: Duration,
}

/// What one step's scan found.
struct Scan {
    /// First keys of the leaves to rewrite.
    targets: Vec<Vec<u8>>,
    /// Nested buckets seen, by key.
    buckets: Vec<Vec<u8>>,
    /// Where the next step resumes, or `None` when the bucket is done.
    next: Option<Vec<u8>>,
}

/// The committed root page of the bucket at `path` ([] is the directory).
fn bucket_root(map: &Mapping, ps: usize, root: PageId, path: &[Vec<u8>]) -> Result<Option<PageId>> {
    let mut cur = root;
    for name in path {
        match tree::get(ChildRef::Page(cur), name, map, ps)? {
            Some(super::node::ValRef::Bucket(ChildRef::Page(p))) => cur = p,
            _ => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn corrupt_empty() -> Error {
    Error::Corrupt("a branch refers to the empty tree".into())
}

/// Scans leaves of the tree at `root` from the one holding `from`.
fn scan(
    map: &Mapping,
    ps: usize,
    root: PageId,
    from: Option<&[u8]>,
    boundary: PageId,
    opts: &DefragOptions,
) -> Result<Scan> {
    let mut out = Scan {
        targets: Vec::new(),
        buckets: Vec::new(),
        next: None,
    };
    if root == EMPTY {
        return Ok(out);
    }
    // Branches on the path: (page id, view, index).
    let mut path: Vec<(PageId, NodeView<'_>, usize)> = Vec::new();
    let mut id = root;
    let leaf = loop {
        match map.node(id, ps)? {
            NodeView::Branch(b) => {
                let i = match from {
                    Some(k) => b.route(k)?,
                    None => 0,
                };
                path.push((id, NodeView::Branch(b), i));
                id = b.child(i);
                if id == EMPTY {
                    return Err(corrupt_empty());
                }
            }
            NodeView::Leaf(l) => break l,
        }
    };
    let mut leaf = leaf;
    let (mut pages, mut leaves) = (0u64, 0usize);
    loop {
        let mut high = leaf.id >= boundary || path.iter().any(|(p, _, _)| *p >= boundary);
        for i in 0..leaf.len() {
            match leaf.value(i)? {
                StoredValue::Overflow { page, len } => {
                    let span = span_for(len as usize, ps);
                    if page + span > boundary {
                        high = true;
                        pages += span;
                    }
                }
                StoredValue::Bucket(_) => out.buckets.push(leaf.key(i)?.to_vec()),
                StoredValue::Inline(_) => {}
            }
        }
        if high && !leaf.is_empty() {
            out.targets.push(leaf.key(0)?.to_vec());
            pages += 1;
        }
        leaves += 1;
        // Next leaf.
        loop {
            let Some((_, NodeView::Branch(b), i)) = path.last_mut() else {
                return Ok(out);
            };
            if *i + 1 < b.len() {
                *i += 1;
                let mut child = b.child(*i);
                loop {
                    match map.node(child, ps)? {
                        NodeView::Branch(b2) => {
                            path.push((child, NodeView::Branch(b2), 0));
                            child = b2.child(0);
                        }
                        NodeView::Leaf(l) => {
                            leaf = l;
                            break;
                        }
                    }
                }
                break;
            }
            path.pop();
        }
        if pages >= opts.step_pages || leaves >= opts.step_leaves {
            if !leaf.is_empty() {
                out.next = Some(leaf.key(0)?.to_vec());
            }
            return Ok(out);
        }
    }
}

impl Db {
    /// Defragments while reads and writes continue; returns when the file is
    /// near its minimum size or passes stop making progress.
    pub fn defrag(&self, opts: &DefragOptions) -> Result<DefragReport> {
        let started = Instant::now();
        let mut report = DefragReport {
            file_size_before: self.stats().file_size,
            ..DefragReport::default()
        };
        self.trim_step(opts, &mut report)?;
        for _ in 0..opts.max_passes {
            let st = self.stats();
            let live = st.hwm - st.free_pages - st.pending_pages;
            let target = live + live / 32 + 16;
            if st.hwm <= target {
                break;
            }
            let moved = self.relocation_pass(target, opts, &mut report)?;
            report.passes += 1;
            self.trim_step(opts, &mut report)?;
            if moved == 0 {
                break;
            }
        }
        report.file_size_after = self.stats().file_size;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Cuts off the free tail: lowers the high-water mark in one commit, then
    /// shortens the file a bounded piece at a time.
    fn trim_step(&self, opts: &DefragOptions, report: &mut DefragReport) -> Result<()> {
        let t = Instant::now();
        let mut tx = self.begin_write()?;
        tx.set_trim();
        tx.commit()?;
        report.steps += 1;
        report.longest_step = report.longest_step.max(t.elapsed());
        loop {
            let t = Instant::now();
            let more = self.inner.shrink_file(opts.truncate_step)?;
            report.steps += 1;
            report.longest_step = report.longest_step.max(t.elapsed());
            if !more {
                return Ok(());
            }
            std::thread::sleep(opts.pause);
        }
    }

    fn relocation_pass(
        &self,
        boundary: PageId,
        opts: &DefragOptions,
        report: &mut DefragReport,
    ) -> Result<u64> {
        let mut moved = 0;
        let mut work: VecDeque<Vec<Vec<u8>>> = VecDeque::from([Vec::new()]);
        let mut seen: HashSet<Vec<Vec<u8>>> = HashSet::new();
        let mut resume: Option<Vec<u8>> = None;
        while let Some(path) = work.front().cloned() {
            let t = Instant::now();
            let mut tx = self.begin_write()?;
            let ps = self.page_size();
            let found = {
                let map = tx.map().clone();
                match bucket_root(&map, ps, tx.base_root(), &path)? {
                    None => None,
                    Some(root) => Some(scan(&map, ps, root, resume.as_deref(), boundary, opts)?),
                }
            };
            let next = match found {
                None => None,
                Some(scan) => {
                    for key in scan.buckets {
                        let mut p = path.clone();
                        p.push(key);
                        if seen.insert(p.clone()) {
                            work.push_back(p);
                        }
                    }
                    let (root, ctx) = tx.parts();
                    for key in &scan.targets {
                        let mut slot = &mut *root;
                        for name in &path {
                            slot = tree::bucket_slot(slot, name, ctx)?.ok_or_else(|| {
                                Error::Corrupt("a bucket vanished during a step".into())
                            })?;
                        }
                        moved += tree::touch(slot, key, boundary, ctx)?;
                    }
                    scan.next
                }
            };
            tx.commit()?;
            report.steps += 1;
            report.longest_step = report.longest_step.max(t.elapsed());
            match next {
                Some(k) => resume = Some(k),
                None => {
                    work.pop_front();
                    resume = None;
                }
            }
            std::thread::sleep(opts.pause);
        }
        report.pages_moved += moved;
        Ok(moved)
    }
}
