//! The consistency checker: walks every page reachable from a meta and the
//! pages its free list names, and reports pages referenced twice, pages that
//! belong to nothing (leaked), and malformed pages. Used by tests after every
//! crash scenario and by `cairnutl db check`.

use super::db::Db;
use super::freelist::decode_extents;
use super::meta::Meta;
use super::node::Mapping;
use super::page::{
    EMPTY, HEADER_LEN, NodeView, PageId, PageKind, StoredValue, header, span_checksum, span_for,
};

/// What a page was found to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Use {
    Meta,
    Branch,
    Leaf,
    Overflow,
    Freelist,
    Free,
}

impl Use {
    pub fn name(self) -> &'static str {
        match self {
            Use::Meta => "meta",
            Use::Branch => "branch",
            Use::Leaf => "leaf",
            Use::Overflow => "overflow",
            Use::Freelist => "freelist",
            Use::Free => "free",
        }
    }
}

/// One thing wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A page reached twice (as `first`, then as `second`).
    DoubleReferenced {
        page: PageId,
        first: Use,
        second: Use,
    },
    /// Pages `[page, page + len)` are neither in use nor free: leaked.
    Unreachable { page: PageId, len: u64 },
    /// A page that is not what its reference says it should be.
    Malformed { page: PageId, reason: String },
    /// A reference past the database's last page.
    OutOfBounds { page: PageId, len: u64, hwm: u64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::DoubleReferenced {
                page,
                first,
                second,
            } => write!(
                f,
                "page {page} is referenced twice: as {} and as {}",
                first.name(),
                second.name()
            ),
            Problem::Unreachable { page, len } => {
                write!(
                    f,
                    "pages {page}..{} are neither in use nor free (leaked)",
                    page + len
                )
            }
            Problem::Malformed { page, reason } => write!(f, "page {page} is malformed: {reason}"),
            Problem::OutOfBounds { page, len, hwm } => {
                write!(
                    f,
                    "pages {page}..{} lie past the last page {hwm}",
                    page + len
                )
            }
        }
    }
}

/// Pages by what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub meta: u64,
    pub branch: u64,
    pub leaf: u64,
    pub overflow: u64,
    pub freelist: u64,
    pub free: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub txid: u64,
    pub page_size: u32,
    pub hwm: u64,
    pub pages: PageCounts,
    /// Depth of the deepest tree (the bucket directory is depth 1 when it has
    /// one level).
    pub max_depth: usize,
    pub buckets: u64,
    pub keys: u64,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every page's use, for `cairnutl db pages`.
pub type PageMap = Vec<Option<Use>>;

struct Walker<'a> {
    map: &'a Mapping,
    ps: usize,
    hwm: u64,
    txid: u64,
    uses: PageMap,
    report: CheckReport,
}

impl Walker<'_> {
    fn problem(&mut self, p: Problem) {
        // Damage can repeat endlessly; the first thousand say enough.
        if self.report.problems.len() < 1000 {
            self.report.problems.push(p);
        }
    }

    /// Claims `[page, page + len)` for `what`; false if any of it was bad.
    fn claim(&mut self, page: PageId, len: u64, what: Use) -> bool {
        if page < 2 || page.checked_add(len).is_none_or(|end| end > self.hwm) {
            self.problem(Problem::OutOfBounds {
                page,
                len,
                hwm: self.hwm,
            });
            return false;
        }
        let mut ok = true;
        for p in page..page + len {
            match self.uses[p as usize] {
                None => self.uses[p as usize] = Some(what),
                Some(first) => {
                    self.problem(Problem::DoubleReferenced {
                        page: p,
                        first,
                        second: what,
                    });
                    ok = false;
                }
            }
        }
        ok
    }

    fn malformed(&mut self, page: PageId, reason: impl Into<String>) {
        self.problem(Problem::Malformed {
            page,
            reason: reason.into(),
        });
    }

    /// Checks a span's header and checksum.
    fn check_span(&mut self, page: PageId, kind: PageKind, span: u64) -> Option<&'_ [u8]> {
        let Ok(bytes) = self.map.span(page, span, self.ps) else {
            self.malformed(page, "beyond the end of the file");
            return None;
        };
        let h = header(bytes);
        let why = if h.kind != kind as u8 {
            Some(format!(
                "expected a {} page, found kind {}",
                kind.name(),
                h.kind
            ))
        } else if h.id.get() != page {
            Some(format!("header names page {}", h.id.get()))
        } else if h.span.get() as u64 != span {
            Some(format!("span {} where {span} was expected", h.span.get()))
        } else if h.txid.get() > self.txid {
            Some(format!(
                "written by txid {} after the meta's {}",
                h.txid.get(),
                self.txid
            ))
        } else if span_checksum(bytes) != h.checksum.get() {
            Some("checksum mismatch".to_string())
        } else {
            None
        };
        match why {
            Some(w) => {
                self.malformed(page, w);
                None
            }
            None => Some(bytes),
        }
    }

    /// Walks a tree; returns its depth (0 for an empty tree).
    fn tree(&mut self, root: PageId) -> usize {
        if root == EMPTY {
            return 0;
        }
        let mut leaf_depth = None;
        self.node(root, None, None, 1, &mut leaf_depth);
        leaf_depth.unwrap_or(0)
    }

    fn node(
        &mut self,
        id: PageId,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
        depth: usize,
        leaf_depth: &mut Option<usize>,
    ) {
        if depth > 64 {
            self.malformed(id, "tree deeper than 64 levels (a cycle?)");
            return;
        }
        let map = self.map;
        let Ok(page) = map.page(id, self.ps) else {
            self.claim(id, 1, Use::Leaf);
            return;
        };
        let kind = match header(page).kind {
            k if k == PageKind::Branch as u8 => Use::Branch,
            _ => Use::Leaf,
        };
        if !self.claim(id, 1, kind) {
            return;
        }
        let expected = if kind == Use::Branch {
            PageKind::Branch
        } else {
            PageKind::Leaf
        };
        if self.check_span(id, expected, 1).is_none() {
            return;
        }
        let view = match NodeView::new(id, page) {
            Ok(v) => v,
            Err(e) => return self.malformed(id, e.to_string()),
        };
        let len = match view {
            NodeView::Leaf(l) => l.len(),
            NodeView::Branch(b) => b.len(),
        };
        if len == 0 {
            return self.malformed(id, "a node with no entries");
        }
        let key = |i| match view {
            NodeView::Leaf(l) => l.key(i),
            NodeView::Branch(b) => b.key(i),
        };
        let mut keys = Vec::with_capacity(len);
        for i in 0..len {
            match key(i) {
                Ok(k) => keys.push(k),
                Err(e) => return self.malformed(id, e.to_string()),
            }
        }
        if let Some(i) = (1..len).find(|&i| keys[i - 1] >= keys[i]) {
            return self.malformed(id, format!("keys {} and {i} are out of order", i - 1));
        }
        if lo.is_some_and(|lo| keys[0] < lo) {
            return self.malformed(id, "a key lies below its parent's bound");
        }
        if hi.is_some_and(|hi| keys[len - 1] >= hi) {
            return self.malformed(id, "a key lies at or above its parent's next bound");
        }
        match view {
            NodeView::Leaf(l) => {
                match *leaf_depth {
                    None => *leaf_depth = Some(depth),
                    Some(d) if d != depth => {
                        self.malformed(id, format!("leaf at depth {depth}, others at {d}"))
                    }
                    Some(_) => {}
                }
                for i in 0..len {
                    match l.value(i) {
                        Err(e) => self.malformed(id, e.to_string()),
                        Ok(StoredValue::Inline(_)) => self.report.keys += 1,
                        Ok(StoredValue::Overflow { page, len }) => {
                            self.report.keys += 1;
                            let span = span_for(len as usize, self.ps);
                            if self.claim(page, span, Use::Overflow) {
                                self.check_span(page, PageKind::Overflow, span);
                            }
                        }
                        Ok(StoredValue::Bucket(root)) => {
                            self.report.buckets += 1;
                            let d = self.tree(root);
                            self.report.max_depth = self.report.max_depth.max(d);
                        }
                    }
                }
            }
            NodeView::Branch(b) => {
                for i in 0..len {
                    let child_hi = if i + 1 < len { Some(keys[i + 1]) } else { hi };
                    self.node(b.child(i), Some(keys[i]), child_hi, depth + 1, leaf_depth);
                }
            }
        }
    }

    fn freelist(&mut self, id: PageId) {
        if id == EMPTY {
            return;
        }
        let Ok(first) = self.map.page(id, self.ps) else {
            return self.malformed(id, "the free list lies beyond the end of the file");
        };
        let span = header(first).span.get() as u64;
        if !self.claim(id, span.max(1), Use::Freelist) {
            return;
        }
        let Some(run) = self.check_span(id, PageKind::Freelist, span) else {
            return;
        };
        match decode_extents(&run[HEADER_LEN..], id) {
            Err(e) => self.malformed(id, e.to_string()),
            Ok(extents) => {
                for (start, len) in extents {
                    self.claim(start, len, Use::Free);
                }
            }
        }
    }
}

/// Checks the snapshot of `meta` in `map`. Also returns every page's use.
pub fn check_snapshot(map: &Mapping, meta: &Meta) -> (CheckReport, PageMap) {
    let mut w = Walker {
        map,
        ps: meta.page_size as usize,
        hwm: meta.hwm,
        txid: meta.txid,
        uses: vec![None; meta.hwm as usize],
        report: CheckReport {
            txid: meta.txid,
            page_size: meta.page_size,
            hwm: meta.hwm,
            pages: PageCounts::default(),
            max_depth: 0,
            buckets: 0,
            keys: 0,
            problems: Vec::new(),
        },
    };
    for p in 0..2.min(meta.hwm as usize) {
        w.uses[p] = Some(Use::Meta);
    }
    let d = w.tree(meta.root);
    w.report.max_depth = w.report.max_depth.max(d);
    w.freelist(meta.freelist);
    let mut p = 0;
    while p < w.uses.len() {
        if w.uses[p].is_none() {
            let start = p;
            while p < w.uses.len() && w.uses[p].is_none() {
                p += 1;
            }
            w.problem(Problem::Unreachable {
                page: start as u64,
                len: (p - start) as u64,
            });
        } else {
            p += 1;
        }
    }
    let mut c = PageCounts::default();
    for u in w.uses.iter().flatten() {
        match u {
            Use::Meta => c.meta += 1,
            Use::Branch => c.branch += 1,
            Use::Leaf => c.leaf += 1,
            Use::Overflow => c.overflow += 1,
            Use::Freelist => c.freelist += 1,
            Use::Free => c.free += 1,
        }
    }
    w.report.pages = c;
    (w.report, w.uses)
}

impl Db {
    /// Checks the latest committed state while reads and writes go on.
    pub fn check(&self) -> CheckReport {
        self.check_pages().0
    }

    /// Like [`Db::check`], with every page's use.
    pub fn check_pages(&self) -> (CheckReport, PageMap) {
        let r = self.begin_read();
        check_snapshot(r.map(), &r.meta())
    }
}
