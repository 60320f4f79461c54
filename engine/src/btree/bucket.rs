//! Buckets: named trees of key-value pairs, which may hold nested buckets.

use std::ops::Bound;

use super::cursor::{Cursor, Range};
use super::error::{Error, Result, show_key};
use super::node::{Bytes, Child, ChildRef, Ctx, Mapping, Val, ValRef, max_entry, max_key};
use super::page::{ELEM_LEN, EMPTY};
use super::tree;

/// A bucket for reading (in a read transaction, or a write transaction's view
/// including its uncommitted changes).
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    map: &'a Mapping,
    ps: usize,
    root: ChildRef<'a>,
}

impl<'a> Bucket<'a> {
    pub(crate) fn new(root: ChildRef<'a>, map: &'a Mapping, ps: usize) -> Self {
        Bucket { map, ps, root }
    }

    /// The value under `key`; `None` if absent or a nested bucket.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>> {
        Ok(match tree::get(self.root, key, self.map, self.ps)? {
            Some(ValRef::Data(d)) => Some(d),
            _ => None,
        })
    }

    /// The nested bucket `name`.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>> {
        Ok(match tree::get(self.root, name, self.map, self.ps)? {
            Some(ValRef::Bucket(root)) => Some(Bucket::new(root, self.map, self.ps)),
            _ => None,
        })
    }

    pub fn cursor(&self) -> Cursor<'a> {
        Cursor::new(self.root, self.map, self.ps)
    }

    /// Key-value pairs with keys in the range, in order.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Range<'a> {
        Range::new(self.cursor(), start, end)
    }

    /// All key-value pairs, in order.
    pub fn iter(&self) -> Range<'a> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    pub fn is_empty(&self) -> bool {
        matches!(self.root, ChildRef::Page(EMPTY))
    }

    /// The root page, if committed (for tools).
    pub fn root_page(&self) -> Option<u64> {
        match self.root {
            ChildRef::Page(p) => Some(p),
            ChildRef::Mem(_) => None,
        }
    }
}

/// A bucket being written in a write transaction.
pub struct BucketMut<'t> {
    root: &'t mut Child,
    ctx: &'t mut Ctx,
}

pub(crate) fn check_key(key: &[u8], ps: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > max_key(ps) {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: max_key(ps),
        });
    }
    Ok(())
}

/// Nested bucket `name` of the tree at `root`, for writing.
pub(crate) fn open_nested<'a>(
    root: &'a mut Child,
    ctx: &'a mut Ctx,
    name: &[u8],
) -> Result<Option<BucketMut<'a>>> {
    match tree::get(root.as_ref(), name, &ctx.map, ctx.ps)? {
        None => Ok(None),
        Some(ValRef::Data(_)) => Err(Error::IncompatibleValue(show_key(name))),
        Some(ValRef::Bucket(_)) => {
            let slot = tree::bucket_slot(root, name, ctx)?.expect("the bucket was just found");
            Ok(Some(BucketMut { root: slot, ctx }))
        }
    }
}

/// Creates nested bucket `name` in the tree at `root` (or opens it when
/// `if_missing` and it exists).
pub(crate) fn create_nested<'a>(
    root: &'a mut Child,
    ctx: &'a mut Ctx,
    name: &[u8],
    if_missing: bool,
) -> Result<BucketMut<'a>> {
    check_key(name, ctx.ps)?;
    match tree::get(root.as_ref(), name, &ctx.map, ctx.ps)? {
        Some(ValRef::Data(_)) => return Err(Error::IncompatibleValue(show_key(name))),
        Some(ValRef::Bucket(_)) if !if_missing => return Err(Error::BucketExists(show_key(name))),
        Some(ValRef::Bucket(_)) => {}
        None => tree::put(root, name, Val::Bucket(Child::Page(EMPTY)), ctx)?,
    }
    Ok(open_nested(root, ctx, name)?.expect("the bucket exists now"))
}

/// Deletes nested bucket `name` and frees everything in it.
pub(crate) fn delete_nested(root: &mut Child, ctx: &mut Ctx, name: &[u8]) -> Result<()> {
    match tree::get(root.as_ref(), name, &ctx.map, ctx.ps)? {
        None => Err(Error::BucketNotFound(show_key(name))),
        Some(ValRef::Data(_)) => Err(Error::IncompatibleValue(show_key(name))),
        Some(ValRef::Bucket(_)) => {
            if let Some(Val::Bucket(tree)) = tree::remove(root, name, ctx)? {
                tree::free_tree(tree, ctx)?;
            }
            Ok(())
        }
    }
}

impl<'t> BucketMut<'t> {
    /// A read view including this transaction's changes.
    pub fn view(&self) -> Bucket<'_> {
        Bucket::new(self.root.as_ref(), &self.ctx.map, self.ctx.ps)
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.view().get(key)
    }

    /// Puts `value` under `key`, replacing any value (but never a bucket).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key, self.ctx.ps)?;
        if value.len() > u32::MAX as usize {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: u32::MAX as usize,
            });
        }
        let val = if ELEM_LEN + key.len() + value.len() <= max_entry(self.ctx.ps) {
            Val::Inline(Bytes::owned(value))
        } else {
            Val::Big(value.to_vec())
        };
        tree::put(self.root, key, val, self.ctx)
    }

    /// Deletes `key`; false if it was absent. A nested bucket is deleted with
    /// [`BucketMut::delete_bucket`].
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        match tree::get(self.root.as_ref(), key, &self.ctx.map, self.ctx.ps)? {
            None => Ok(false),
            Some(ValRef::Bucket(_)) => Err(Error::IncompatibleValue(show_key(key))),
            Some(ValRef::Data(_)) => {
                let old = tree::remove(self.root, key, self.ctx)?;
                if let Some(v) = &old {
                    self.ctx.free_value(v)?;
                }
                Ok(true)
            }
        }
    }

    pub fn bucket_mut(&mut self, name: &[u8]) -> Result<Option<BucketMut<'_>>> {
        open_nested(self.root, self.ctx, name)
    }

    pub fn create_bucket(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_nested(self.root, self.ctx, name, false)
    }

    pub fn create_bucket_if_missing(&mut self, name: &[u8]) -> Result<BucketMut<'_>> {
        create_nested(self.root, self.ctx, name, true)
    }

    pub fn delete_bucket(&mut self, name: &[u8]) -> Result<()> {
        delete_nested(self.root, self.ctx, name)
    }
}
