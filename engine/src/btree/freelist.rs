//! Free space: which pages may be handed out, and when freed pages become
//! reusable.
//!
//! * Released extents are free now: allocation takes the lowest that fits
//!   (first fit by address), so data gravitates to the head of the file and the
//!   tail can be cut off.
//! * A page written by transaction `A` (its *birth*, recorded in its header)
//!   and freed by transaction `T` can be read only by readers whose snapshot
//!   txid lies in `[A, T)`. It is *pending* until no live reader falls in that
//!   window, then released. A long reader therefore pins only the pages of its
//!   own snapshot, not everything written and freed while it lives.
//! * Every commit persists the whole free set (released and pending: after a
//!   restart no reader is alive) as a free-list run:
//!
//! ```text
//!  page header (kind 5, span n) | extent count u64 | per extent: gap varint, len varint
//! ```
//!
//!   where `gap` is the distance from the end of the previous extent (from 0 for
//!   the first) and varints are LEB128. Extents are sorted, disjoint and
//!   coalesced.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{Error, Result};
use super::page::PageId;

/// A run of pages: (first page, number of pages).
pub type Extent = (PageId, u64);

/// A freed run and the transaction that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freed {
    pub page: PageId,
    pub len: u64,
    pub birth: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Allocator {
    /// Released extents, start → length; coalesced, so never adjacent.
    free: BTreeMap<PageId, u64>,
    free_pages: u64,
    /// Runs freed by each transaction, not yet reusable.
    pending: BTreeMap<u64, Vec<Freed>>,
    pending_pages: u64,
    /// Pages `[0, hwm)` belong to the database.
    pub hwm: u64,
}

impl Allocator {
    pub fn new(hwm: u64, free: impl IntoIterator<Item = Extent>) -> Self {
        let mut a = Allocator {
            hwm,
            ..Allocator::default()
        };
        for (start, len) in free {
            a.insert_free(start, len);
        }
        a
    }

    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    pub fn pending_pages(&self) -> u64 {
        self.pending_pages
    }

    /// Releases every pending run that no live reader can see. `readers`
    /// holds the snapshot txids of the live readers.
    pub fn release(&mut self, readers: &BTreeSet<u64>) {
        let mut freed = Vec::new();
        self.pending.retain(|&death, runs| {
            // Readers below `death` see the runs born at or before the newest
            // of them; runs born later are invisible to every live reader.
            match readers.range(..death).next_back() {
                None => freed.append(runs),
                Some(&newest) => {
                    let (keep, go): (Vec<Freed>, Vec<Freed>) =
                        runs.iter().partition(|r| r.birth <= newest);
                    *runs = keep;
                    freed.extend(go);
                }
            }
            !runs.is_empty()
        });
        for r in freed {
            self.pending_pages -= r.len;
            self.insert_free(r.page, r.len);
        }
    }

    /// Records runs freed by transaction `txid`.
    pub fn defer(&mut self, txid: u64, runs: Vec<Freed>) {
        if runs.is_empty() {
            return;
        }
        self.pending_pages += runs.iter().map(|r| r.len).sum::<u64>();
        self.pending.entry(txid).or_default().extend(runs);
    }

    /// Allocates `n` contiguous pages, lowest address first; grows the
    /// database past its high-water mark when nothing free fits.
    pub fn alloc(&mut self, n: u64) -> PageId {
        debug_assert!(n > 0);
        let fit = self
            .free
            .iter()
            .find(|&(_, &len)| len >= n)
            .map(|(&s, &l)| (s, l));
        if let Some((start, len)) = fit {
            self.free.remove(&start);
            if len > n {
                self.free.insert(start + n, len - n);
            }
            self.free_pages -= n;
            return start;
        }
        // A free tail too short on its own still saves growing by its length.
        if let Some((&start, &len)) = self.free.last_key_value()
            && start + len == self.hwm
        {
            self.free.remove(&start);
            self.free_pages -= len;
            self.hwm = start + n;
            return start;
        }
        let id = self.hwm;
        self.hwm += n;
        id
    }

    fn insert_free(&mut self, mut start: PageId, mut len: u64) {
        self.free_pages += len;
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            debug_assert!(ps + pl <= start, "extent {start}+{len} overlaps {ps}+{pl}");
            if ps + pl == start {
                self.free.remove(&ps);
                start = ps;
                len += pl;
            }
        }
        if let Some(nl) = self.free.remove(&(start + len)) {
            len += nl;
        }
        self.free.insert(start, len);
    }

    /// Lowers the high-water mark over a released free tail. Returns whether
    /// it moved.
    pub fn trim_tail(&mut self) -> bool {
        let before = self.hwm;
        while let Some((&start, &len)) = self.free.last_key_value() {
            if start + len != self.hwm {
                break;
            }
            self.free.remove(&start);
            self.free_pages -= len;
            self.hwm = start;
        }
        self.hwm != before
    }

    /// Released and pending extents together, sorted and coalesced. The
    /// released set is already sorted; only the (few) pending runs are sorted
    /// here and merged in.
    pub fn all_free(&self) -> Vec<Extent> {
        let mut pending: Vec<Extent> = self
            .pending
            .values()
            .flatten()
            .map(|r| (r.page, r.len))
            .collect();
        pending.sort_unstable();
        let mut out: Vec<Extent> = Vec::with_capacity(self.free.len() + pending.len());
        let mut push = |(s, l): Extent| match out.last_mut() {
            Some((ps, pl)) if *ps + *pl == s => *pl += l,
            _ => out.push((s, l)),
        };
        let mut a = self.free.iter().map(|(&s, &l)| (s, l)).peekable();
        let mut b = pending.into_iter().peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => {
                    if x.0 <= y.0 {
                        a.next()
                    } else {
                        b.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            push(next.expect("peeked"));
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7).max(1)
}

/// The size [`encode_extents`] will produce, without producing it.
pub fn encoded_len(extents: &[Extent]) -> usize {
    let mut end = 0;
    8 + extents
        .iter()
        .map(|&(start, len)| {
            let n = varint_len(start - end) + varint_len(len);
            end = start + len;
            n
        })
        .sum::<usize>()
}

/// Encodes sorted, disjoint extents.
pub fn encode_extents(extents: &[Extent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + extents.len() * 4);
    out.extend_from_slice(&(extents.len() as u64).to_le_bytes());
    let mut end = 0;
    for &(start, len) in extents {
        put_varint(&mut out, start - end);
        put_varint(&mut out, len);
        end = start + len;
    }
    out
}

/// Decodes what [`encode_extents`] wrote; `page` names the run in errors.
pub fn decode_extents(b: &[u8], page: PageId) -> Result<Vec<Extent>> {
    let bad = |why: &str| Error::CorruptPage {
        page,
        reason: format!("free list: {why}"),
    };
    let count = u64::from_le_bytes(
        b.get(..8)
            .ok_or_else(|| bad("short"))?
            .try_into()
            .expect("8"),
    );
    let mut at = 8;
    let mut end = 0u64;
    let mut out = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let gap = get_varint(b, &mut at).ok_or_else(|| bad("truncated extent"))?;
        let len = get_varint(b, &mut at).ok_or_else(|| bad("truncated extent"))?;
        if len == 0 {
            return Err(bad("empty extent"));
        }
        let start = end
            .checked_add(gap)
            .ok_or_else(|| bad("extent overflows"))?;
        end = start
            .checked_add(len)
            .ok_or_else(|| bad("extent overflows"))?;
        out.push((start, len));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_lowest_first_and_frees_coalesce() {
        let mut a = Allocator::new(100, [(10, 2), (50, 5), (12, 3)]);
        assert_eq!(a.all_free(), vec![(10, 5), (50, 5)]);
        assert_eq!(a.alloc(1), 10);
        assert_eq!(a.alloc(5), 50);
        assert_eq!(a.alloc(4), 11);
        assert_eq!(a.alloc(1), 100);
        assert_eq!(a.hwm, 101);
        assert_eq!(a.free_pages(), 0);
    }

    fn freed(page: PageId, len: u64, birth: u64) -> Freed {
        Freed { page, len, birth }
    }

    #[test]
    fn pending_pages_wait_only_for_readers_that_can_see_them() {
        let mut a = Allocator::new(40, []);
        // Page 3 was written by txn 2 and freed by 5; pages 4-5 written by 6,
        // freed by 7; page 10 written by 1, freed by 7.
        a.defer(5, vec![freed(3, 1, 2)]);
        a.defer(7, vec![freed(4, 2, 6), freed(10, 1, 1)]);
        // A reader at 4 sees pages 3 and 10, not 4-5 (born after it).
        a.release(&BTreeSet::from([4]));
        assert_eq!(a.all_free(), vec![(3, 3), (10, 1)]);
        assert_eq!((a.free_pages(), a.pending_pages()), (2, 2));
        // A reader at 6 sees 4-5 and 10, not 3 (freed by 5, before it).
        let mut b = Allocator::new(40, []);
        b.defer(5, vec![freed(3, 1, 2)]);
        b.defer(7, vec![freed(4, 2, 6), freed(10, 1, 1)]);
        b.release(&BTreeSet::from([6]));
        assert_eq!((b.free_pages(), b.pending_pages()), (1, 3));
        b.release(&BTreeSet::new());
        assert_eq!((b.free_pages(), b.pending_pages()), (4, 0));
        assert_eq!(b.alloc(3), 3);
    }

    #[test]
    fn the_tail_is_trimmed_and_a_short_tail_extent_is_reused_when_growing() {
        let mut a = Allocator::new(20, [(18, 2), (5, 1)]);
        assert_eq!(a.alloc(4), 18);
        assert_eq!(a.hwm, 22);
        let mut b = Allocator::new(20, [(15, 5), (2, 1)]);
        assert!(b.trim_tail());
        assert_eq!(b.hwm, 15);
        assert_eq!(b.all_free(), vec![(2, 1)]);
    }

    #[test]
    fn extents_encode_compactly_and_round_trip() {
        let e = vec![(2, 1), (10, 300), (1 << 40, 7)];
        let b = encode_extents(&e);
        assert!(b.len() < 8 + 3 * 8);
        assert_eq!(encoded_len(&e), b.len());
        assert_eq!(decode_extents(&b, 9).unwrap(), e);
        assert!(decode_extents(&b[..b.len() - 1], 9).is_err());
    }
}
