//! Copy-on-write B+tree operations.
//!
//! Invariants of every tree (checked by `check`):
//! * Keys within a node are strictly increasing; all leaves are at one depth.
//! * Branch entry `(k_i, c_i)`: every key under `c_i` is `>= k_i` and `< k_{i+1}`.
//!   Inserting below `k_0` lowers `k_0`, so the bound holds for the first entry
//!   too; moving entries between siblings therefore never invalidates a bound.
//! * Every node fits in one page. Entries are at most a quarter page, a node
//!   that overflows is split into as many pages as it needs, and a node that
//!   falls below a quarter page after a delete is merged with a sibling or
//!   takes entries from it.
//! * An empty tree is the page id 0; a root branch with one child is replaced by
//!   that child.

use super::error::{Error, Result, show_key};
use super::freelist::Allocator;
use super::node::{
    BranchEntry, Bytes, Child, ChildRef, Ctx, Entries, LeafEntry, Mapping, Node, Val, ValRef,
};
use super::page::{EMPTY, HEADER_LEN, Le32, Le64, PageId, PageKind, header_mut, seal, span_for};

/// The node at `child`, materialized if it is still a page; an empty tree
/// becomes an empty leaf.
pub(crate) fn node_mut<'a>(child: &'a mut Child, ctx: &mut Ctx) -> Result<&'a mut Node> {
    if let Child::Page(id) = *child {
        let node = if id == EMPTY {
            Node::empty_leaf()
        } else {
            ctx.materialize(id)?
        };
        *child = Child::Node(Box::new(node));
    }
    match child {
        Child::Node(n) => Ok(n),
        Child::Page(_) => unreachable!("just materialized"),
    }
}

fn corrupt_empty_child() -> Error {
    Error::Corrupt("a branch refers to the empty tree".into())
}

/// Looks `key` up in a tree that may mix pages and in-memory nodes.
pub(crate) fn get<'a>(
    root: ChildRef<'a>,
    key: &[u8],
    map: &'a Mapping,
    ps: usize,
) -> Result<Option<ValRef<'a>>> {
    let Some(mut node) = root.node(map, ps)? else {
        return Ok(None);
    };
    while !node.is_leaf() {
        let i = node.route(key)?;
        node = node
            .child(i)
            .node(map, ps)?
            .ok_or_else(corrupt_empty_child)?;
    }
    let (i, found) = node.search(key)?;
    if found {
        Ok(Some(node.value(i, map, ps)?))
    } else {
        Ok(None)
    }
}

/// Puts `val` under `key`. Replacing a bucket with a value or a value with a
/// bucket is refused.
pub(crate) fn put(root: &mut Child, key: &[u8], val: Val, ctx: &mut Ctx) -> Result<()> {
    let mut pieces = insert(root, key, val, ctx)?;
    // The root split: grow a level (more than once in the rare case that the
    // new root itself overflows).
    while !pieces.is_empty() {
        let left = std::mem::replace(root, Child::Page(EMPTY));
        let Child::Node(left) = left else {
            unreachable!("a split root is in memory")
        };
        let mut entries = vec![BranchEntry {
            key: left.first_key().clone(),
            child: Child::Node(left),
        }];
        entries.extend(pieces.into_iter().map(|(key, n)| BranchEntry {
            key,
            child: Child::Node(Box::new(n)),
        }));
        let mut new_root = Node::branch(entries);
        pieces = if new_root.size > ctx.ps {
            split(&mut new_root, ctx.ps, false)
        } else {
            Vec::new()
        };
        *root = Child::Node(Box::new(new_root));
    }
    Ok(())
}

/// Inserts into the subtree at `child`; returns the pieces split off to the
/// right of it, each with its smallest key.
fn insert(child: &mut Child, key: &[u8], val: Val, ctx: &mut Ctx) -> Result<Vec<(Bytes, Node)>> {
    let ps = ctx.ps;
    let node = node_mut(child, ctx)?;
    let (delta, appended): (isize, bool);
    match &mut node.entries {
        Entries::Leaf(es) => match es.binary_search_by(|e| e.key.as_slice().cmp(key)) {
            Ok(i) => {
                if es[i].val.is_bucket() || val.is_bucket() {
                    return Err(Error::IncompatibleValue(show_key(key)));
                }
                let old = std::mem::replace(&mut es[i].val, val);
                delta = es[i].val.stored_len() as isize - old.stored_len() as isize;
                ctx.free_value(&old)?;
                appended = false;
            }
            Err(i) => {
                let e = LeafEntry {
                    key: Bytes::owned(key),
                    val,
                };
                delta = e.size() as isize;
                es.insert(i, e);
                appended = i + 1 == es.len();
            }
        },
        Entries::Branch(es) => {
            let i = es
                .partition_point(|e| e.key.as_slice() <= key)
                .saturating_sub(1);
            let mut d = 0isize;
            if key < es[i].key.as_slice() {
                d += key.len() as isize - es[i].key.len() as isize;
                es[i].key = Bytes::owned(key);
            }
            let pieces = insert(&mut es[i].child, key, val, ctx)?;
            let n = pieces.len();
            for (k, (sep, piece)) in pieces.into_iter().enumerate() {
                let e = BranchEntry {
                    key: sep,
                    child: Child::Node(Box::new(piece)),
                };
                d += e.size() as isize;
                es.insert(i + 1 + k, e);
            }
            delta = d;
            appended = n > 0 && i + n + 1 == es.len();
        }
    }
    node.size = (node.size as isize + delta) as usize;
    Ok(if node.size > ps {
        split(node, ps, appended)
    } else {
        Vec::new()
    })
}

fn entry_sizes(node: &Node) -> Vec<usize> {
    match &node.entries {
        Entries::Leaf(e) => e.iter().map(LeafEntry::size).collect(),
        Entries::Branch(e) => e.iter().map(BranchEntry::size).collect(),
    }
}

/// Splits an overflowing node: it keeps a first part that fits, the rest comes
/// back as pieces that each fit. After an append the first part is filled
/// almost full (sequential keys then leave pages nearly full); otherwise the
/// node is split near its middle.
fn split(node: &mut Node, ps: usize, appended: bool) -> Vec<(Bytes, Node)> {
    let mut pieces = Vec::new();
    let mut cur = split_off(node, ps, appended);
    while cur.size > ps {
        let next = split_off(&mut cur, ps, appended);
        pieces.push((cur.first_key().clone(), cur));
        cur = next;
    }
    pieces.push((cur.first_key().clone(), cur));
    pieces
}

fn split_off(node: &mut Node, ps: usize, appended: bool) -> Node {
    let sizes = entry_sizes(node);
    let target = if appended {
        ps - ps / 16
    } else {
        node.size / 2
    };
    let mut acc = HEADER_LEN;
    let mut k = 0;
    while k + 1 < sizes.len() && acc + sizes[k] <= target.min(ps) {
        acc += sizes[k];
        k += 1;
    }
    let k = k.max(1);
    let right = match &mut node.entries {
        Entries::Leaf(e) => Node::leaf(e.split_off(k)),
        Entries::Branch(e) => Node::branch(e.split_off(k)),
    };
    node.size -= right.size - HEADER_LEN;
    debug_assert!(node.size <= ps, "split left part {} > {ps}", node.size);
    right
}

/// Removes `key`; returns its value. The caller checked that the key exists.
pub(crate) fn remove(root: &mut Child, key: &[u8], ctx: &mut Ctx) -> Result<Option<Val>> {
    if root.is_empty() {
        return Ok(None);
    }
    let (old, _) = delete(root, key, ctx)?;
    while let Child::Node(n) = root {
        match &mut n.entries {
            Entries::Branch(es) if es.len() == 1 => {
                let only = es.pop().expect("one entry").child;
                *root = only;
            }
            Entries::Leaf(es) if es.is_empty() => {
                *root = Child::Page(EMPTY);
                break;
            }
            _ => break,
        }
    }
    Ok(old)
}

/// Deletes `key` from the subtree; returns the value and whether the node is
/// now underfull.
fn delete(child: &mut Child, key: &[u8], ctx: &mut Ctx) -> Result<(Option<Val>, bool)> {
    let min = ctx.min_fill();
    let node = node_mut(child, ctx)?;
    let mut delta = 0isize;
    let removed = match &mut node.entries {
        Entries::Leaf(es) => match es.binary_search_by(|e| e.key.as_slice().cmp(key)) {
            Ok(i) => {
                let e = es.remove(i);
                delta -= e.size() as isize;
                Some(e.val)
            }
            Err(_) => None,
        },
        Entries::Branch(es) => {
            let i = es
                .partition_point(|e| e.key.as_slice() <= key)
                .saturating_sub(1);
            let (r, under) = delete(&mut es[i].child, key, ctx)?;
            if under {
                delta += rebalance(es, i, ctx)?;
            }
            r
        }
    };
    node.size = (node.size as isize + delta) as usize;
    let under = node.size < min
        || match &node.entries {
            Entries::Leaf(e) => e.is_empty(),
            Entries::Branch(e) => e.len() < 2,
        };
    Ok((removed, under))
}

/// Fixes underfull child `i` by merging it with a sibling or taking entries
/// from one. Returns the change in the parent's size.
fn rebalance(es: &mut Vec<BranchEntry>, i: usize, ctx: &mut Ctx) -> Result<isize> {
    if es.len() < 2 {
        return Ok(0);
    }
    let (l, r) = if i + 1 < es.len() {
        (i, i + 1)
    } else {
        (i - 1, i)
    };
    node_mut(&mut es[l].child, ctx)?;
    node_mut(&mut es[r].child, ctx)?;
    let ps = ctx.ps;
    let (a, b) = es.split_at_mut(r);
    let (Child::Node(ln), Child::Node(rn)) = (&mut a[l].child, &mut b[0].child) else {
        unreachable!("both materialized")
    };
    if ln.size + rn.size - HEADER_LEN <= ps {
        // Merge the right node into the left one.
        ln.size += rn.size - HEADER_LEN;
        match (&mut ln.entries, &mut rn.entries) {
            (Entries::Leaf(x), Entries::Leaf(y)) => x.append(y),
            (Entries::Branch(x), Entries::Branch(y)) => x.append(y),
            _ => return Err(Error::Corrupt("siblings at different depths".into())),
        }
        let gone = es.remove(r);
        return Ok(-(gone.size() as isize));
    }
    // Move entries from the larger node to the smaller until they balance.
    let sizes_l = entry_sizes(ln);
    let sizes_r = entry_sizes(rn);
    if ln.size < rn.size {
        let mut n = 0;
        let (mut sl, mut sr) = (ln.size, rn.size);
        while n + 1 < sizes_r.len() && sl < sr && sl + sizes_r[n] <= ps {
            sl += sizes_r[n];
            sr -= sizes_r[n];
            n += 1;
        }
        match (&mut ln.entries, &mut rn.entries) {
            (Entries::Leaf(x), Entries::Leaf(y)) => x.extend(y.drain(..n)),
            (Entries::Branch(x), Entries::Branch(y)) => x.extend(y.drain(..n)),
            _ => return Err(Error::Corrupt("siblings at different depths".into())),
        }
        (ln.size, rn.size) = (sl, sr);
    } else {
        let mut n = 0;
        let (mut sl, mut sr) = (ln.size, rn.size);
        while n + 1 < sizes_l.len() {
            let s = sizes_l[sizes_l.len() - 1 - n];
            if sr >= sl || sr + s > ps {
                break;
            }
            sr += s;
            sl -= s;
            n += 1;
        }
        match (&mut ln.entries, &mut rn.entries) {
            (Entries::Leaf(x), Entries::Leaf(y)) => {
                let moved: Vec<_> = x.drain(x.len() - n..).collect();
                y.splice(0..0, moved);
            }
            (Entries::Branch(x), Entries::Branch(y)) => {
                let moved: Vec<_> = x.drain(x.len() - n..).collect();
                y.splice(0..0, moved);
            }
            _ => return Err(Error::Corrupt("siblings at different depths".into())),
        }
        (ln.size, rn.size) = (sl, sr);
    }
    let new_key = rn.first_key().clone();
    let delta = new_key.len() as isize - b[0].key.len() as isize;
    b[0].key = new_key;
    Ok(delta)
}

/// Frees every page of a detached subtree: nodes, overflow runs, nested
/// buckets. Nodes already in memory had their pages freed when materialized.
pub(crate) fn free_tree(child: Child, ctx: &mut Ctx) -> Result<()> {
    match child {
        Child::Page(EMPTY) => Ok(()),
        Child::Page(id) => {
            let map = ctx.map.clone();
            ctx.free_run(id, 1)?;
            match map.node(id, ctx.ps)? {
                super::page::NodeView::Leaf(l) => {
                    for i in 0..l.len() {
                        match l.value(i)? {
                            super::page::StoredValue::Inline(_) => {}
                            super::page::StoredValue::Overflow { page, len } => {
                                ctx.free_run(page, span_for(len as usize, ctx.ps))?
                            }
                            super::page::StoredValue::Bucket(root) => {
                                free_tree(Child::Page(root), ctx)?
                            }
                        }
                    }
                }
                super::page::NodeView::Branch(b) => {
                    for i in 0..b.len() {
                        free_tree(Child::Page(b.child(i)), ctx)?;
                    }
                }
            }
            Ok(())
        }
        Child::Node(n) => {
            match n.entries {
                Entries::Leaf(es) => {
                    for e in es {
                        match e.val {
                            Val::Bucket(c) => free_tree(c, ctx)?,
                            v => ctx.free_value(&v)?,
                        }
                    }
                }
                Entries::Branch(es) => {
                    for e in es {
                        free_tree(e.child, ctx)?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// Pages a commit writes, in one buffer: runs of (first page, byte offset in
/// `buf`, pages).
#[derive(Default)]
pub(crate) struct Writes {
    pub buf: Vec<u8>,
    pub runs: Vec<(PageId, usize, u64)>,
}

impl Writes {
    /// `n` zeroed pages to fill for the run starting at page `id`.
    pub fn add(&mut self, id: PageId, n: u64, ps: usize) -> &mut [u8] {
        let at = self.buf.len();
        self.buf.resize(at + n as usize * ps, 0);
        self.runs.push((id, at, n));
        &mut self.buf[at..]
    }
}

/// Gives every in-memory node of the tree a newly allocated page, children
/// first, writing new overflow runs for large values. Returns the root page.
pub(crate) fn spill(
    child: &mut Child,
    ps: usize,
    alloc: &mut Allocator,
    out: &mut Writes,
    txid: u64,
) -> Result<PageId> {
    let Child::Node(node) = child else {
        let Child::Page(p) = child else {
            unreachable!()
        };
        return Ok(*p);
    };
    match &mut node.entries {
        Entries::Leaf(es) => {
            for e in es.iter_mut() {
                match &mut e.val {
                    Val::Bucket(c) => {
                        spill(c, ps, alloc, out, txid)?;
                    }
                    Val::Big(data) => {
                        let len = data.len() as u64;
                        let n = span_for(data.len(), ps);
                        let id = alloc.alloc(n);
                        let run = out.add(id, n, ps);
                        run[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(data);
                        let h = header_mut(run);
                        h.kind = PageKind::Overflow as u8;
                        h.span = Le32::new(n as u32);
                        h.id = Le64::new(id);
                        h.txid = Le64::new(txid);
                        seal(run);
                        e.val = Val::Overflow { page: id, len };
                    }
                    _ => {}
                }
            }
            if es.is_empty() {
                *child = Child::Page(EMPTY);
                return Ok(EMPTY);
            }
        }
        Entries::Branch(es) => {
            for e in es.iter_mut() {
                spill(&mut e.child, ps, alloc, out, txid)?;
            }
        }
    }
    let id = alloc.alloc(1);
    node.encode(out.add(id, 1, ps), id, txid);
    *child = Child::Page(id);
    Ok(id)
}

/// The slot holding nested bucket `name`'s tree, materializing the path to it.
/// The caller checked that `name` is a bucket in this (non-empty) tree.
pub(crate) fn bucket_slot<'a>(
    root: &'a mut Child,
    name: &[u8],
    ctx: &mut Ctx,
) -> Result<Option<&'a mut Child>> {
    let node = node_mut(root, ctx)?;
    match &mut node.entries {
        Entries::Leaf(es) => match es.binary_search_by(|e| e.key.as_slice().cmp(name)) {
            Ok(i) => match &mut es[i].val {
                Val::Bucket(c) => Ok(Some(c)),
                _ => Err(Error::IncompatibleValue(show_key(name))),
            },
            Err(_) => Ok(None),
        },
        Entries::Branch(es) => {
            let i = es
                .partition_point(|e| e.key.as_slice() <= name)
                .saturating_sub(1);
            bucket_slot(&mut es[i].child, name, ctx)
        }
    }
}

/// Rewrites the path to the leaf holding `key` (so commit moves it to newly
/// allocated, low pages) and re-homes that leaf's overflow runs that end past
/// `boundary`. Returns how many pages will move.
pub(crate) fn touch(root: &mut Child, key: &[u8], boundary: PageId, ctx: &mut Ctx) -> Result<u64> {
    if root.is_empty() {
        return Ok(0);
    }
    let was_page = matches!(root, Child::Page(_));
    let node = node_mut(root, ctx)?;
    let mut moved = u64::from(was_page);
    match &mut node.entries {
        Entries::Leaf(es) => {
            let map = ctx.map.clone();
            for e in es.iter_mut() {
                if let Val::Overflow { page, len } = e.val {
                    let span = span_for(len as usize, ctx.ps);
                    if page + span > boundary {
                        let data = map.overflow(page, len, ctx.ps)?.to_vec();
                        ctx.free_run(page, span)?;
                        e.val = Val::Big(data);
                        moved += span;
                    }
                }
            }
        }
        Entries::Branch(es) => {
            let i = es
                .partition_point(|e| e.key.as_slice() <= key)
                .saturating_sub(1);
            moved += touch(&mut es[i].child, key, boundary, ctx)?;
        }
    }
    Ok(moved)
}
