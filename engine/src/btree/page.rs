//! Page formats. All integers are little-endian byte arrays, so every struct
//! has alignment 1 and overlays any byte offset of a page (`bytemuck`, no
//! `unsafe`).
//!
//! Every page but the two meta pages starts with a 32-byte header:
//!
//! ```text
//!  0     1      2       4       8        16       24         28        32
//!  +-----+------+-------+-------+--------+--------+----------+---------+
//!  |kind |flags | count | span  | id     | txid   | crc32c   | rsvd    |
//!  | u8  | u8=0 | u16   | u32   | u64    | u64    | u32      | u32 = 0 |
//!  +-----+------+-------+-------+--------+--------+----------+---------+
//! ```
//!
//! * `kind`: 2 branch, 3 leaf, 4 overflow, 5 free list.
//! * `count`: entries of a branch or leaf.
//! * `span`: pages this page occupies (1 for nodes; n for an overflow or free
//!   list run of n contiguous pages).
//! * `id`: the page's own id, so a misdirected read or write is caught.
//! * `txid`: the transaction that wrote it.
//! * `crc32c`: over the whole span with this field taken as zero.
//!
//! Branch and leaf nodes are slotted pages: the header, then `count` 16-byte
//! elements, then the key (and value) bytes in element order.
//!
//! ```text
//! leaf element    0     1     2      4        8        12
//!                 +-----+-----+------+--------+--------+--------+
//!                 |flags|rsvd | klen | pos    | vlen   | rsvd   |
//!                 | u8  | u8  | u16  | u32    | u32    | u32    |
//!                 +-----+-----+------+--------+--------+--------+
//! branch element  0      2      4        8
//!                 +------+------+--------+----------------+
//!                 | klen | rsvd | pos    | child page id  |
//!                 | u16  | u16  | u32    | u64            |
//!                 +------+------+--------+----------------+
//! ```
//!
//! `pos` is the offset of the key bytes from the start of the page. A leaf
//! value follows its key: inline (`vlen` bytes), or for the flags
//! * `BUCKET`: 8 bytes, the root page of a nested bucket (0 = empty);
//! * `OVERFLOW`: 8 bytes, the first page of an overflow run holding the `vlen`
//!   value bytes right after the run's header.

use bytemuck::{Pod, Zeroable};

use super::error::{Error, Result};

/// A page number; the page lives at byte `id * page_size`.
pub type PageId = u64;

/// Page 0 and page 1 are the meta pages; a root of 0 means "empty tree".
pub const EMPTY: PageId = 0;

macro_rules! le_int {
    ($name:ident, $t:ty, $n:expr) => {
        #[derive(Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
        #[repr(transparent)]
        pub struct $name([u8; $n]);

        impl $name {
            pub fn new(v: $t) -> Self {
                $name(v.to_le_bytes())
            }
            pub fn get(self) -> $t {
                <$t>::from_le_bytes(self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.get().fmt(f)
            }
        }
    };
}

le_int!(Le16, u16, 2);
le_int!(Le32, u32, 4);
le_int!(Le64, u64, 8);

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageKind {
    Meta = 1,
    Branch = 2,
    Leaf = 3,
    Overflow = 4,
    Freelist = 5,
}

impl PageKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => PageKind::Meta,
            2 => PageKind::Branch,
            3 => PageKind::Leaf,
            4 => PageKind::Overflow,
            5 => PageKind::Freelist,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PageKind::Meta => "meta",
            PageKind::Branch => "branch",
            PageKind::Leaf => "leaf",
            PageKind::Overflow => "overflow",
            PageKind::Freelist => "freelist",
        }
    }
}

pub const HEADER_LEN: usize = 32;
pub const ELEM_LEN: usize = 16;

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct PageHeader {
    pub kind: u8,
    pub flags: u8,
    pub count: Le16,
    pub span: Le32,
    pub id: Le64,
    pub txid: Le64,
    pub checksum: Le32,
    pub reserved: Le32,
}

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct LeafElem {
    pub flags: u8,
    pub reserved: u8,
    pub klen: Le16,
    pub pos: Le32,
    pub vlen: Le32,
    pub reserved2: Le32,
}

#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BranchElem {
    pub klen: Le16,
    pub reserved: Le16,
    pub pos: Le32,
    pub child: Le64,
}

/// Leaf element flag: the value is a nested bucket's root page.
pub const FLAG_BUCKET: u8 = 1;
/// Leaf element flag: the value lives in an overflow run.
pub const FLAG_OVERFLOW: u8 = 2;

const _: () = assert!(size_of::<PageHeader>() == HEADER_LEN);
const _: () = assert!(size_of::<LeafElem>() == ELEM_LEN);
const _: () = assert!(size_of::<BranchElem>() == ELEM_LEN);

pub fn header(page: &[u8]) -> &PageHeader {
    bytemuck::from_bytes(&page[..HEADER_LEN])
}

pub fn header_mut(page: &mut [u8]) -> &mut PageHeader {
    bytemuck::from_bytes_mut(&mut page[..HEADER_LEN])
}

/// Checksum of a span with its checksum field taken as zero.
pub fn span_checksum(span: &[u8]) -> u32 {
    let c = crc32c::crc32c(&span[..24]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &span[28..])
}

/// Fills in the header's checksum field for a finished span.
pub fn seal(span: &mut [u8]) {
    let c = span_checksum(span);
    header_mut(span).checksum = Le32::new(c);
}

/// Pages needed for `bytes` bytes of payload after one header.
pub fn span_for(payload: usize, page_size: usize) -> u64 {
    (HEADER_LEN + payload).div_ceil(page_size).max(1) as u64
}

/// A value as stored in a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredValue<'a> {
    Inline(&'a [u8]),
    Overflow { page: PageId, len: u64 },
    Bucket(PageId),
}

fn corrupt(page: PageId, reason: impl Into<String>) -> Error {
    Error::CorruptPage {
        page,
        reason: reason.into(),
    }
}

fn u64_at(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// A read-only view of a leaf page.
#[derive(Clone, Copy)]
pub struct LeafView<'a> {
    pub id: PageId,
    page: &'a [u8],
    elems: &'a [LeafElem],
}

/// A read-only view of a branch page.
#[derive(Clone, Copy)]
pub struct BranchView<'a> {
    pub id: PageId,
    page: &'a [u8],
    elems: &'a [BranchElem],
}

/// A node page, viewed.
#[derive(Clone, Copy)]
pub enum NodeView<'a> {
    Leaf(LeafView<'a>),
    Branch(BranchView<'a>),
}

impl<'a> NodeView<'a> {
    /// Views the node page `id` held in `page` (exactly one page).
    pub fn new(id: PageId, page: &'a [u8]) -> Result<Self> {
        let h = header(page);
        let count = h.count.get() as usize;
        let elems_end = HEADER_LEN + count * ELEM_LEN;
        if elems_end > page.len() {
            return Err(corrupt(
                id,
                format!("{count} elements do not fit in the page"),
            ));
        }
        let raw = &page[HEADER_LEN..elems_end];
        match PageKind::from_u8(h.kind) {
            Some(PageKind::Leaf) => Ok(NodeView::Leaf(LeafView {
                id,
                page,
                elems: bytemuck::cast_slice(raw),
            })),
            Some(PageKind::Branch) => Ok(NodeView::Branch(BranchView {
                id,
                page,
                elems: bytemuck::cast_slice(raw),
            })),
            _ => Err(corrupt(
                id,
                format!("expected a branch or leaf, found kind {}", h.kind),
            )),
        }
    }
}

impl<'a> LeafView<'a> {
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        let e = &self.elems[i];
        let pos = e.pos.get() as usize;
        self.page
            .get(pos..pos + e.klen.get() as usize)
            .ok_or_else(|| corrupt(self.id, format!("key {i} out of bounds")))
    }

    pub fn value(&self, i: usize) -> Result<StoredValue<'a>> {
        let e = &self.elems[i];
        let start = e.pos.get() as usize + e.klen.get() as usize;
        let vlen = e.vlen.get() as usize;
        let bad = || corrupt(self.id, format!("value {i} out of bounds"));
        if e.flags & (FLAG_BUCKET | FLAG_OVERFLOW) != 0 {
            let r = self.page.get(start..start + 8).ok_or_else(bad)?;
            let at = u64_at(r);
            if e.flags & FLAG_BUCKET != 0 {
                Ok(StoredValue::Bucket(at))
            } else {
                Ok(StoredValue::Overflow {
                    page: at,
                    len: vlen as u64,
                })
            }
        } else {
            Ok(StoredValue::Inline(
                self.page.get(start..start + vlen).ok_or_else(bad)?,
            ))
        }
    }

    /// Index of the first key `>= key`, and whether it is equal.
    pub fn search(&self, key: &[u8]) -> Result<(usize, bool)> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid)?.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Equal => return Ok((mid, true)),
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok((lo, false))
    }
}

impl<'a> BranchView<'a> {
    pub fn len(&self) -> usize {
        self.elems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elems.is_empty()
    }

    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        let e = &self.elems[i];
        let pos = e.pos.get() as usize;
        self.page
            .get(pos..pos + e.klen.get() as usize)
            .ok_or_else(|| corrupt(self.id, format!("key {i} out of bounds")))
    }

    pub fn child(&self, i: usize) -> PageId {
        self.elems[i].child.get()
    }

    /// The child to descend into for `key`: the last entry whose key is
    /// `<= key`, or the first entry.
    pub fn route(&self, key: &[u8]) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid)? <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.saturating_sub(1))
    }
}

/// Writes a node page: header, elements, then data. `entries` yields, in
/// order, (element fields, key, value bytes written after the key).
pub struct NodeWriter<'b> {
    buf: &'b mut [u8],
    count: usize,
    data: usize,
}

impl<'b> NodeWriter<'b> {
    /// Starts a node in `buf`, which must be zeroed.
    pub fn new(buf: &'b mut [u8], kind: PageKind, id: PageId, txid: u64, count: usize) -> Self {
        debug_assert!(buf.iter().all(|&b| b == 0), "a node page starts zeroed");
        let h = header_mut(buf);
        h.kind = kind as u8;
        h.count = Le16::new(count as u16);
        h.span = Le32::new(1);
        h.id = Le64::new(id);
        h.txid = Le64::new(txid);
        NodeWriter {
            buf,
            count: 0,
            data: HEADER_LEN + count * ELEM_LEN,
        }
    }

    fn put_bytes(&mut self, parts: &[&[u8]]) -> usize {
        let pos = self.data;
        for p in parts {
            self.buf[self.data..self.data + p.len()].copy_from_slice(p);
            self.data += p.len();
        }
        pos
    }

    pub fn leaf(&mut self, flags: u8, key: &[u8], value: &[u8], vlen: u32) {
        let pos = self.put_bytes(&[key, value]);
        let at = HEADER_LEN + self.count * ELEM_LEN;
        let e: &mut LeafElem = bytemuck::from_bytes_mut(&mut self.buf[at..at + ELEM_LEN]);
        e.flags = flags;
        e.klen = Le16::new(key.len() as u16);
        e.pos = Le32::new(pos as u32);
        e.vlen = Le32::new(vlen);
        self.count += 1;
    }

    pub fn branch(&mut self, key: &[u8], child: PageId) {
        let pos = self.put_bytes(&[key]);
        let at = HEADER_LEN + self.count * ELEM_LEN;
        let e: &mut BranchElem = bytemuck::from_bytes_mut(&mut self.buf[at..at + ELEM_LEN]);
        e.klen = Le16::new(key.len() as u16);
        e.pos = Le32::new(pos as u32);
        e.child = Le64::new(child);
        self.count += 1;
    }

    pub fn finish(self) {
        debug_assert_eq!(self.count, header(self.buf).count.get() as usize);
        seal(self.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_page_round_trips_and_searches() {
        let mut buf = vec![0u8; 4096];
        let mut w = NodeWriter::new(&mut buf, PageKind::Leaf, 7, 3, 3);
        w.leaf(0, b"a", b"one", 3);
        w.leaf(FLAG_BUCKET, b"c", &9u64.to_le_bytes(), 0);
        w.leaf(FLAG_OVERFLOW, b"e", &11u64.to_le_bytes(), 100_000);
        w.finish();
        assert_eq!(span_checksum(&buf), header(&buf).checksum.get());
        let NodeView::Leaf(l) = NodeView::new(7, &buf).unwrap() else {
            panic!("not a leaf")
        };
        assert_eq!(l.len(), 3);
        assert_eq!(l.key(1).unwrap(), b"c");
        assert_eq!(l.value(0).unwrap(), StoredValue::Inline(b"one"));
        assert_eq!(l.value(1).unwrap(), StoredValue::Bucket(9));
        assert_eq!(
            l.value(2).unwrap(),
            StoredValue::Overflow {
                page: 11,
                len: 100_000
            }
        );
        assert_eq!(l.search(b"c").unwrap(), (1, true));
        assert_eq!(l.search(b"d").unwrap(), (2, false));
        assert_eq!(l.search(b"z").unwrap(), (3, false));
    }

    #[test]
    fn branches_route_to_the_last_key_at_or_below() {
        let mut buf = vec![0u8; 4096];
        let mut w = NodeWriter::new(&mut buf, PageKind::Branch, 2, 1, 3);
        w.branch(b"b", 10);
        w.branch(b"m", 11);
        w.branch(b"t", 12);
        w.finish();
        let NodeView::Branch(b) = NodeView::new(2, &buf).unwrap() else {
            panic!("not a branch")
        };
        let r = |k: &[u8]| b.child(b.route(k).unwrap());
        assert_eq!(r(b"a"), 10);
        assert_eq!(r(b"b"), 10);
        assert_eq!(r(b"l"), 10);
        assert_eq!(r(b"m"), 11);
        assert_eq!(r(b"zz"), 12);
    }

    #[test]
    fn an_out_of_bounds_element_is_reported_not_panicked_on() {
        let mut buf = vec![0u8; 512];
        let mut w = NodeWriter::new(&mut buf, PageKind::Leaf, 1, 1, 1);
        w.leaf(0, b"k", b"v", 1);
        w.finish();
        let e: &mut LeafElem =
            bytemuck::from_bytes_mut(&mut buf[HEADER_LEN..HEADER_LEN + ELEM_LEN]);
        e.pos = Le32::new(4000);
        let NodeView::Leaf(l) = NodeView::new(1, &buf).unwrap() else {
            panic!()
        };
        assert!(l.key(0).is_err());
    }
}
