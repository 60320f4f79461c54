//! Cursors: ordered access to a bucket's entries.

use std::ops::Bound;

use super::error::{Error, Result};
use super::node::{ChildRef, Mapping, NodeRef, ValRef};

/// An entry's value: bytes, or a nested bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Data(&'a [u8]),
    Bucket,
}

/// A position in a bucket. `first`, `last`, `seek`, `next` and `prev` return the
/// entry they land on, or `None` past either end (after which the cursor stays
/// unpositioned until `first`, `last` or `seek`).
pub struct Cursor<'a> {
    map: &'a Mapping,
    ps: usize,
    root: ChildRef<'a>,
    /// The path from the root; the top is a leaf and an index into it.
    stack: Vec<(NodeRef<'a>, usize)>,
}

fn corrupt_empty() -> Error {
    Error::Corrupt("a branch refers to the empty tree".into())
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(root: ChildRef<'a>, map: &'a Mapping, ps: usize) -> Self {
        Cursor {
            map,
            ps,
            root,
            stack: Vec::new(),
        }
    }

    /// Pushes the path from `child` to its leftmost (or rightmost) leaf.
    fn descend(&mut self, mut child: ChildRef<'a>, leftmost: bool) -> Result<()> {
        loop {
            let node = child.node(self.map, self.ps)?.ok_or_else(corrupt_empty)?;
            let i = if leftmost {
                0
            } else {
                node.len().saturating_sub(1)
            };
            self.stack.push((node, i));
            if node.is_leaf() {
                return Ok(());
            }
            child = node.child(i);
        }
    }

    pub fn first(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        self.stack.clear();
        if self.root.node(self.map, self.ps)?.is_some() {
            self.descend(self.root, true)?;
            self.settle_forward()?;
        }
        self.current()
    }

    pub fn last(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        self.stack.clear();
        if self.root.node(self.map, self.ps)?.is_some() {
            self.descend(self.root, false)?;
            self.settle_backward()?;
        }
        self.current()
    }

    /// Positions at the first entry with key `>= key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<Option<(&'a [u8], Value<'a>)>> {
        self.stack.clear();
        let Some(mut node) = self.root.node(self.map, self.ps)? else {
            return Ok(None);
        };
        loop {
            if node.is_leaf() {
                let (i, _) = node.search(key)?;
                self.stack.push((node, i));
                break;
            }
            let i = node.route(key)?;
            self.stack.push((node, i));
            node = node
                .child(i)
                .node(self.map, self.ps)?
                .ok_or_else(corrupt_empty)?;
        }
        self.settle_forward()?;
        self.current()
    }

    // A cursor moves both ways and every step can fail, so it is not an
    // `Iterator`; `Range` is the iterator.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        let Some((_, i)) = self.stack.last_mut() else {
            return Ok(None);
        };
        *i += 1;
        self.settle_forward()?;
        self.current()
    }

    pub fn prev(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        let Some((_, i)) = self.stack.last_mut() else {
            return Ok(None);
        };
        if *i > 0 {
            *i -= 1;
            return self.current();
        }
        // Move to the previous leaf's last entry.
        loop {
            self.stack.pop();
            loop {
                let Some((node, i)) = self.stack.last_mut() else {
                    return Ok(None);
                };
                if *i > 0 {
                    *i -= 1;
                    let child = node.child(*i);
                    self.descend(child, false)?;
                    break;
                }
                self.stack.pop();
            }
            let (leaf, _) = self.stack.last().expect("descended");
            if leaf.len() > 0 {
                return self.current();
            }
        }
    }

    /// If the leaf position is past its end, moves to the next leaf with an
    /// entry (or unpositions the cursor).
    fn settle_forward(&mut self) -> Result<()> {
        loop {
            let Some(&(leaf, i)) = self.stack.last() else {
                return Ok(());
            };
            if i < leaf.len() {
                return Ok(());
            }
            self.stack.pop();
            loop {
                let Some((node, i)) = self.stack.last_mut() else {
                    return Ok(());
                };
                if *i + 1 < node.len() {
                    *i += 1;
                    let child = node.child(*i);
                    self.descend(child, true)?;
                    break;
                }
                self.stack.pop();
            }
        }
    }

    fn settle_backward(&mut self) -> Result<()> {
        if let Some(&(leaf, _)) = self.stack.last()
            && leaf.len() == 0
        {
            self.stack.last_mut().expect("leaf").1 = 0;
            self.prev()?;
        }
        Ok(())
    }

    /// The entry the cursor is on.
    pub fn current(&self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        let Some(&(leaf, i)) = self.stack.last() else {
            return Ok(None);
        };
        if i >= leaf.len() {
            return Ok(None);
        }
        let value = match leaf.value(i, self.map, self.ps)? {
            ValRef::Data(d) => Value::Data(d),
            ValRef::Bucket(_) => Value::Bucket,
        };
        Ok(Some((leaf.key(i)?, value)))
    }
}

/// Key-value pairs of a key range in order, nested buckets skipped.
pub struct Range<'a> {
    cursor: Cursor<'a>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    started: bool,
    done: bool,
}

impl<'a> Range<'a> {
    pub(crate) fn new(cursor: Cursor<'a>, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Self {
        Range {
            cursor,
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            started: false,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>> {
        if self.started {
            return self.cursor.next();
        }
        self.started = true;
        match &self.start {
            Bound::Unbounded => self.cursor.first(),
            Bound::Included(k) => {
                let k = k.clone();
                self.cursor.seek(&k)
            }
            Bound::Excluded(k) => {
                let k = k.clone();
                match self.cursor.seek(&k)? {
                    Some((key, _)) if key == k.as_slice() => self.cursor.next(),
                    other => Ok(other),
                }
            }
        }
    }
}

impl<'a> Iterator for Range<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.step() {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(None) => self.done = true,
                Ok(Some((key, value))) => {
                    let in_range = match &self.end {
                        Bound::Unbounded => true,
                        Bound::Included(e) => key <= e.as_slice(),
                        Bound::Excluded(e) => key < e.as_slice(),
                    };
                    if !in_range {
                        self.done = true;
                    } else if let Value::Data(v) = value {
                        return Some(Ok((key, v)));
                    }
                }
            }
        }
        None
    }
}
