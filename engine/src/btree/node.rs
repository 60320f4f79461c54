//! Nodes as the writer holds them, and one read interface over both clean
//! pages (in the mmap) and dirty in-memory nodes.
//!
//! A write transaction starts from the committed tree's pages. Touching a node
//! *materializes* it — decodes the page into a [`Node`] and records the page as
//! freed by this transaction — and every change happens on nodes in memory.
//! Commit writes each dirty node to a newly allocated page (copy-on-write): no
//! page reachable by the committed tree, or by any reader, is ever written.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapOptions};

use super::error::{Error, Result};
use super::freelist::Freed;
use super::page::{
    ELEM_LEN, EMPTY, FLAG_BUCKET, FLAG_OVERFLOW, HEADER_LEN, NodeView, PageId, PageKind,
    StoredValue, header, span_for,
};

/// The file as readers see it: a read-only shared mapping. Reference-counted:
/// when the file grows past it, new transactions get a new mapping and old
/// readers keep theirs.
///
/// The mapping reaches past the end of the file (about twice the file's size)
/// so that growth rarely needs a new one: unmapping a large populated mapping
/// takes tens of milliseconds. `limit` is how much of it lies inside the file
/// — raised as the file grows, lowered before it shrinks — and no access goes
/// past it, so even a corrupt page reference beyond the file is an error,
/// never a fault.
pub struct Mapping {
    mmap: Mmap,
    limit: AtomicU64,
}

impl Mapping {
    /// Maps `file` (of `file_len` bytes) with room to grow to `reach` bytes.
    pub fn new(file: &File, file_len: u64, reach: u64) -> std::io::Result<Self> {
        // SAFETY: the mapping is read-only, and the bytes a holder reads never
        // change while it holds them: the file is flock'ed (exclusively by the
        // one writing process, shared by read-only openers, so no other
        // process writes it), and the writer never overwrites or truncates a
        // page that a live transaction can reach — pages are written only after
        // being allocated, and freed pages are reused or cut off only once
        // every transaction that could reach them has ended. Accesses stay
        // below `limit`, which never exceeds the file's length, so the part of
        // the mapping past the end of the file is never touched.
        let mmap = unsafe {
            MmapOptions::new()
                .len(reach.max(file_len) as usize)
                .map(file)?
        };
        Ok(Mapping {
            mmap,
            limit: AtomicU64::new(file_len),
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.mmap
    }

    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets how much of the mapping lies inside the file: lowered before the
    /// file is shortened, raised after it grows within the mapping.
    pub(crate) fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes.min(self.len()), Ordering::Release);
    }

    /// Where `part` (a slice of this mapping) starts within it.
    fn offset_of(&self, part: &[u8]) -> usize {
        part.as_ptr() as usize - self.bytes().as_ptr() as usize
    }

    /// `n` pages from page `id`.
    pub fn span(&self, id: PageId, n: u64, ps: usize) -> Result<&[u8]> {
        let start = id as usize * ps;
        let end = start + n as usize * ps;
        let limit = self.limit.load(Ordering::Acquire) as usize;
        if end > limit {
            return Err(Error::CorruptPage {
                page: id,
                reason: format!(
                    "{n} pages from here lie beyond the end of the file ({limit} bytes)"
                ),
            });
        }
        Ok(&self.bytes()[start..end])
    }

    pub fn page(&self, id: PageId, ps: usize) -> Result<&[u8]> {
        self.span(id, 1, ps)
    }

    /// The node page `id`.
    pub fn node(&self, id: PageId, ps: usize) -> Result<NodeView<'_>> {
        if id < 2 {
            return Err(Error::CorruptPage {
                page: id,
                reason: "a tree refers to a meta page".into(),
            });
        }
        NodeView::new(id, self.page(id, ps)?)
    }

    /// The bytes of an overflow value of `len` bytes whose run starts at `id`.
    pub fn overflow(&self, id: PageId, len: u64, ps: usize) -> Result<&[u8]> {
        let run = self.span(id, span_for(len as usize, ps), ps)?;
        Ok(&run[HEADER_LEN..HEADER_LEN + len as usize])
    }
}

/// What a write transaction carries through tree operations.
pub(crate) struct Ctx {
    pub map: Arc<Mapping>,
    pub ps: usize,
    /// Pages this transaction made unreachable: reusable after it commits and
    /// no reader that can see them is left.
    pub freed: Vec<Freed>,
}

impl Ctx {
    pub fn min_fill(&self) -> usize {
        self.ps / 4
    }

    /// Decodes page `id` into a node and frees the page.
    pub fn materialize(&mut self, id: PageId) -> Result<Node> {
        let node = Node::decode(&self.map.node(id, self.ps)?, &self.map)?;
        self.free_run(id, 1)?;
        Ok(node)
    }

    /// Frees the `len` pages from `page`, remembering which transaction wrote
    /// them.
    pub fn free_run(&mut self, page: PageId, len: u64) -> Result<()> {
        let birth = header(self.map.page(page, self.ps)?).txid.get();
        self.freed.push(Freed { page, len, birth });
        Ok(())
    }

    pub fn free_value(&mut self, v: &Val) -> Result<()> {
        if let Val::Overflow { page, len } = v {
            self.free_run(*page, span_for(*len as usize, self.ps))?;
        }
        Ok(())
    }
}

/// Largest size of one leaf or branch entry: four fit in any page.
pub fn max_entry(ps: usize) -> usize {
    (ps - HEADER_LEN) / 4
}

/// The longest key a tree accepts.
pub fn max_key(ps: usize) -> usize {
    max_entry(ps) - ELEM_LEN - 8
}

/// Key or value bytes of an in-memory node: short ones copied inline (no
/// allocation, no reference count — branch keys and revision keys all fit);
/// longer ones still in the committed page they came from (no copy; the page
/// cannot be reused while this transaction lives), or owned.
#[derive(Clone)]
pub(crate) enum Bytes {
    Small {
        len: u8,
        buf: [u8; SMALL],
    },
    Mapped {
        map: Arc<Mapping>,
        at: usize,
        len: usize,
    },
    Owned(Box<[u8]>),
}

const SMALL: usize = 30;

impl Bytes {
    fn small(b: &[u8]) -> Option<Bytes> {
        (b.len() <= SMALL).then(|| {
            let mut buf = [0u8; SMALL];
            buf[..b.len()].copy_from_slice(b);
            Bytes::Small {
                len: b.len() as u8,
                buf,
            }
        })
    }

    pub fn owned(b: &[u8]) -> Bytes {
        Bytes::small(b).unwrap_or_else(|| Bytes::Owned(b.into()))
    }

    fn mapped(map: &Arc<Mapping>, part: &[u8]) -> Bytes {
        Bytes::small(part).unwrap_or_else(|| Bytes::Mapped {
            map: map.clone(),
            at: map.offset_of(part),
            len: part.len(),
        })
    }

    pub fn as_slice(&self) -> &[u8] {
        self
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Small { len, buf } => &buf[..*len as usize],
            Bytes::Mapped { map, at, len } => &map.bytes()[*at..*at + *len],
            Bytes::Owned(b) => b,
        }
    }
}

/// A subtree: still the committed page, or materialized.
pub(crate) enum Child {
    Page(PageId),
    Node(Box<Node>),
}

/// A leaf value in memory.
pub(crate) enum Val {
    Inline(Bytes),
    /// An existing overflow run, untouched.
    Overflow {
        page: PageId,
        len: u64,
    },
    /// A new value too large to store inline, written to a new run at commit.
    Big(Vec<u8>),
    /// A nested bucket's tree.
    Bucket(Child),
}

impl Val {
    /// Bytes the value takes inside its leaf page.
    pub fn stored_len(&self) -> usize {
        match self {
            Val::Inline(v) => v.len(),
            _ => 8,
        }
    }

    pub fn is_bucket(&self) -> bool {
        matches!(self, Val::Bucket(_))
    }
}

pub(crate) struct LeafEntry {
    pub key: Bytes,
    pub val: Val,
}

pub(crate) struct BranchEntry {
    /// No key in `child`'s subtree is smaller than this; every key in it is
    /// smaller than the next entry's key.
    pub key: Bytes,
    pub child: Child,
}

impl LeafEntry {
    pub fn size(&self) -> usize {
        ELEM_LEN + self.key.len() + self.val.stored_len()
    }
}

impl BranchEntry {
    pub fn size(&self) -> usize {
        ELEM_LEN + self.key.len()
    }
}

pub(crate) enum Entries {
    Leaf(Vec<LeafEntry>),
    Branch(Vec<BranchEntry>),
}

/// A node in memory, with the size its page would have.
pub(crate) struct Node {
    pub entries: Entries,
    pub size: usize,
}

impl Node {
    pub fn empty_leaf() -> Node {
        Node {
            entries: Entries::Leaf(Vec::new()),
            size: HEADER_LEN,
        }
    }

    pub fn leaf(entries: Vec<LeafEntry>) -> Node {
        let size = HEADER_LEN + entries.iter().map(LeafEntry::size).sum::<usize>();
        Node {
            entries: Entries::Leaf(entries),
            size,
        }
    }

    pub fn branch(entries: Vec<BranchEntry>) -> Node {
        let size = HEADER_LEN + entries.iter().map(BranchEntry::size).sum::<usize>();
        Node {
            entries: Entries::Branch(entries),
            size,
        }
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Leaf(e) => e.len(),
            Entries::Branch(e) => e.len(),
        }
    }

    pub fn first_key(&self) -> &Bytes {
        match &self.entries {
            Entries::Leaf(e) => &e[0].key,
            Entries::Branch(e) => &e[0].key,
        }
    }

    /// A node of the page `view`, whose keys and inline values stay in `map`.
    pub fn decode(view: &NodeView<'_>, map: &Arc<Mapping>) -> Result<Node> {
        match view {
            NodeView::Leaf(l) => {
                let mut entries = Vec::with_capacity(l.len());
                for i in 0..l.len() {
                    let val = match l.value(i)? {
                        StoredValue::Inline(v) => Val::Inline(Bytes::mapped(map, v)),
                        StoredValue::Overflow { page, len } => Val::Overflow { page, len },
                        StoredValue::Bucket(root) => Val::Bucket(Child::Page(root)),
                    };
                    entries.push(LeafEntry {
                        key: Bytes::mapped(map, l.key(i)?),
                        val,
                    });
                }
                Ok(Node::leaf(entries))
            }
            NodeView::Branch(b) => {
                let mut entries = Vec::with_capacity(b.len());
                for i in 0..b.len() {
                    entries.push(BranchEntry {
                        key: Bytes::mapped(map, b.key(i)?),
                        child: Child::Page(b.child(i)),
                    });
                }
                Ok(Node::branch(entries))
            }
        }
    }

    /// Serializes a node whose children and values are all committed pages.
    pub fn encode(&self, buf: &mut [u8], id: PageId, txid: u64) {
        use super::page::NodeWriter;
        match &self.entries {
            Entries::Leaf(es) => {
                let mut w = NodeWriter::new(buf, PageKind::Leaf, id, txid, es.len());
                for e in es {
                    match &e.val {
                        Val::Inline(v) => w.leaf(0, &e.key, v, v.len() as u32),
                        Val::Overflow { page, len } => {
                            w.leaf(FLAG_OVERFLOW, &e.key, &page.to_le_bytes(), *len as u32)
                        }
                        Val::Bucket(Child::Page(root)) => {
                            w.leaf(FLAG_BUCKET, &e.key, &root.to_le_bytes(), 0)
                        }
                        Val::Big(_) | Val::Bucket(Child::Node(_)) => {
                            unreachable!("spilled before encoding")
                        }
                    }
                }
                w.finish();
            }
            Entries::Branch(es) => {
                let mut w = NodeWriter::new(buf, PageKind::Branch, id, txid, es.len());
                for e in es {
                    let Child::Page(c) = e.child else {
                        unreachable!("spilled before encoding")
                    };
                    w.branch(&e.key, c);
                }
                w.finish();
            }
        }
    }
}

/// A subtree for reading: nothing, a committed page, or a node in memory.
#[derive(Clone, Copy)]
pub(crate) enum ChildRef<'a> {
    Page(PageId),
    Mem(&'a Node),
}

impl Child {
    pub fn as_ref(&self) -> ChildRef<'_> {
        match self {
            Child::Page(p) => ChildRef::Page(*p),
            Child::Node(n) => ChildRef::Mem(n),
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Child::Page(EMPTY))
    }
}

/// A value for reading.
#[derive(Clone, Copy)]
pub(crate) enum ValRef<'a> {
    Data(&'a [u8]),
    Bucket(ChildRef<'a>),
}

/// A node for reading, wherever it lives.
#[derive(Clone, Copy)]
pub(crate) enum NodeRef<'a> {
    Page(NodeView<'a>),
    Mem(&'a Node),
}

impl<'a> ChildRef<'a> {
    /// The node, or `None` for an empty tree.
    pub fn node(self, map: &'a Mapping, ps: usize) -> Result<Option<NodeRef<'a>>> {
        Ok(match self {
            ChildRef::Page(EMPTY) => None,
            ChildRef::Page(p) => Some(NodeRef::Page(map.node(p, ps)?)),
            ChildRef::Mem(n) => Some(NodeRef::Mem(n)),
        })
    }
}

impl<'a> NodeRef<'a> {
    pub fn is_leaf(&self) -> bool {
        match self {
            NodeRef::Page(v) => matches!(v, NodeView::Leaf(_)),
            NodeRef::Mem(n) => matches!(n.entries, Entries::Leaf(_)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            NodeRef::Page(NodeView::Leaf(l)) => l.len(),
            NodeRef::Page(NodeView::Branch(b)) => b.len(),
            NodeRef::Mem(n) => n.len(),
        }
    }

    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        match *self {
            NodeRef::Page(NodeView::Leaf(l)) => l.key(i),
            NodeRef::Page(NodeView::Branch(b)) => b.key(i),
            NodeRef::Mem(n) => Ok(match &n.entries {
                Entries::Leaf(e) => &e[i].key,
                Entries::Branch(e) => &e[i].key,
            }),
        }
    }

    /// For a branch: its `i`-th subtree.
    pub fn child(&self, i: usize) -> ChildRef<'a> {
        match *self {
            NodeRef::Page(NodeView::Branch(b)) => ChildRef::Page(b.child(i)),
            NodeRef::Mem(Node {
                entries: Entries::Branch(e),
                ..
            }) => e[i].child.as_ref(),
            _ => unreachable!("child of a leaf"),
        }
    }

    /// For a leaf: its `i`-th value.
    pub fn value(&self, i: usize, map: &'a Mapping, ps: usize) -> Result<ValRef<'a>> {
        match *self {
            NodeRef::Page(NodeView::Leaf(l)) => Ok(match l.value(i)? {
                StoredValue::Inline(v) => ValRef::Data(v),
                StoredValue::Overflow { page, len } => ValRef::Data(map.overflow(page, len, ps)?),
                StoredValue::Bucket(root) => ValRef::Bucket(ChildRef::Page(root)),
            }),
            NodeRef::Mem(Node {
                entries: Entries::Leaf(e),
                ..
            }) => Ok(match &e[i].val {
                Val::Inline(v) => ValRef::Data(v),
                Val::Big(v) => ValRef::Data(v),
                Val::Overflow { page, len } => ValRef::Data(map.overflow(*page, *len, ps)?),
                Val::Bucket(c) => ValRef::Bucket(c.as_ref()),
            }),
            _ => unreachable!("value of a branch"),
        }
    }

    /// For a branch: the subtree that holds `key` if any does.
    pub fn route(&self, key: &[u8]) -> Result<usize> {
        match *self {
            NodeRef::Page(NodeView::Branch(b)) => b.route(key),
            NodeRef::Mem(Node {
                entries: Entries::Branch(e),
                ..
            }) => Ok(e
                .partition_point(|x| x.key.as_slice() <= key)
                .saturating_sub(1)),
            _ => unreachable!("route in a leaf"),
        }
    }

    /// For a leaf: the first index with key `>= key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> Result<(usize, bool)> {
        match *self {
            NodeRef::Page(NodeView::Leaf(l)) => l.search(key),
            NodeRef::Mem(Node {
                entries: Entries::Leaf(e),
                ..
            }) => Ok(match e.binary_search_by(|x| x.key.as_slice().cmp(key)) {
                Ok(i) => (i, true),
                Err(i) => (i, false),
            }),
            _ => unreachable!("search in a branch"),
        }
    }
}
