//! The in-memory key index: for every key, the revisions at which it changed,
//! grouped in generations, so a read at any revision finds each key's record
//! without scanning history.
//!
//! A generation runs from the put that creates a key to the tombstone that
//! deletes it. The last generation is open (the key exists) or empty (the key
//! is deleted). For example `put(2) put(3) delete(4) put(5)` gives
//! `[{created 2: 2, 3, 4t}, {created 5: 5}]`.
//!
//! Compacting at revision `c` drops every generation whose tombstone is at or
//! below `c`, and in the generation alive at `c` every revision older than the
//! newest one at or below `c`; that newest one is *kept* (reads at `c` still
//! need it). A key left with nothing is removed.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use smallvec::SmallVec;

use super::revision::Revision;

/// What the index knows of a key at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// The revision of the key's record at that point.
    pub rev: Revision,
    /// Main revision of the put that created this generation.
    pub created: i64,
    /// Puts in this generation up to and including `rev`.
    pub version: i64,
}

/// Revisions of one generation, ascending; the first is kept inline, so a key
/// changed once since the last compaction costs no allocation.
type Revs = SmallVec<[Revision; 1]>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    created: i64,
    /// Changes made in this generation, compacted ones included.
    ver: i64,
    /// Revisions still held, ascending; a closed generation ends with its
    /// tombstone.
    revs: Revs,
}

/// One key's history: closed generations (each ended by a tombstone), then
/// the current one, which is empty while the key is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Oldest first; empty (no allocation) for a key never deleted since the
    /// last compaction.
    closed: Vec<Generation>,
    cur: Generation,
}

impl KeyHistory {
    /// Generations, oldest first, the current one last.
    fn gens(&self) -> impl DoubleEndedIterator<Item = &Generation> {
        self.closed.iter().chain(std::iter::once(&self.cur))
    }

    fn gen_count(&self) -> usize {
        self.closed.len() + 1
    }

    fn gen_at(&self, i: usize) -> &Generation {
        self.closed.get(i).unwrap_or(&self.cur)
    }

    /// Whether the key exists at the newest revision.
    pub fn alive(&self) -> bool {
        !self.cur.revs.is_empty()
    }

    /// Records a put at `rev`. A put that creates the key starts a generation
    /// (`restored` carries the creation revision and version of a record read
    /// back from storage, whose earlier history may have been compacted).
    /// Returns the key's creation revision and version after the put.
    pub fn put(&mut self, rev: Revision, restored: Option<(i64, i64)>) -> (i64, i64) {
        let g = &mut self.cur;
        if g.revs.is_empty() {
            let (created, ver) = restored.map_or((rev.main, 0), |(c, v)| (c, v - 1));
            g.created = created;
            g.ver = ver;
        }
        g.revs.push(rev);
        g.ver += 1;
        (g.created, g.ver)
    }

    /// Records a deletion at `rev`; false if the key did not exist.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.alive() {
            return false;
        }
        let mut g = std::mem::take(&mut self.cur);
        g.revs.push(rev);
        g.ver += 1;
        self.closed.push(g);
        true
    }

    /// A tombstone read back from storage whose generation's puts were
    /// already compacted away (a compaction interrupted by a crash): recorded
    /// as a closed generation of its own, which the resumed compaction drops.
    fn orphan_tombstone(&mut self, rev: Revision) {
        debug_assert!(!self.alive());
        self.closed.push(Generation {
            created: rev.main,
            ver: 1,
            revs: smallvec::smallvec![rev],
        });
    }

    /// The key at revision `at`, if it existed then.
    pub fn get(&self, at: i64) -> Option<Found> {
        let g = &self.cur;
        if g.revs.first().is_some_and(|f| f.main <= at) {
            return Some(Self::found_in(g, at));
        }
        for g in self.closed.iter().rev() {
            if g.revs
                .last()
                .expect("a closed generation ends with its tombstone")
                .main
                <= at
            {
                // Deleted at or before `at`, and not recreated by then.
                return None;
            }
            if g.revs.first().expect("non-empty").main <= at {
                return Some(Self::found_in(g, at));
            }
        }
        None
    }

    fn found_in(g: &Generation, at: i64) -> Found {
        let idx = g.revs.partition_point(|r| r.main <= at) - 1;
        Found {
            rev: g.revs[idx],
            created: g.created,
            version: g.ver - (g.revs.len() - 1 - idx) as i64,
        }
    }

    /// Index of the first generation compaction at `at` keeps, and within it
    /// the index of the newest revision at or below `at`.
    fn compaction_point(&self, at: i64) -> (usize, Option<usize>) {
        let mut gi = 0;
        while gi + 1 < self.gen_count() && self.gen_at(gi).revs.last().is_some_and(|t| t.main <= at)
        {
            gi += 1;
        }
        let revs = &self.gen_at(gi).revs;
        let n = revs.partition_point(|r| r.main <= at);
        (gi, n.checked_sub(1))
    }

    /// The revision at or below `at` that compacting at `at` keeps.
    pub fn kept(&self, at: i64) -> Option<Revision> {
        let (gi, idx) = self.compaction_point(at);
        idx.map(|i| self.gen_at(gi).revs[i])
    }

    /// Compacts at `at`; returns the kept revision (see [`KeyHistory::kept`])
    /// and whether the key is left with nothing.
    pub fn compact(&mut self, at: i64) -> (Option<Revision>, bool) {
        let (gi, idx) = self.compaction_point(at);
        self.closed.drain(..gi.min(self.closed.len()));
        if self.closed.is_empty() {
            // Give the allocation back: most keys never see a deletion again.
            self.closed = Vec::new();
        }
        let g = self.closed.first_mut().unwrap_or(&mut self.cur);
        let kept = idx.map(|i| {
            g.revs.drain(..i);
            if g.revs.spilled() && g.revs.capacity() > 2 * g.revs.len() {
                g.revs.shrink_to_fit();
            }
            g.revs[0]
        });
        let empty = self.closed.is_empty() && self.cur.revs.is_empty();
        (kept, empty)
    }

    /// All revisions held, oldest first (for tests and tools).
    pub fn revisions(&self) -> Vec<Revision> {
        self.gens().flat_map(|g| g.revs.iter().copied()).collect()
    }
}

/// A key's first [`HEAD`] bytes, zero-padded, as a big-endian integer.
type Head = u128;
const HEAD: usize = 16;

/// A key as the index holds it: its head beside the whole key. Comparing
/// heads orders keys as their bytes do whenever the heads differ, and keys
/// no longer than the head with equal heads order by length; so most
/// comparisons in a search stay inside the map's node instead of following a
/// pointer to each key's bytes.
#[derive(Clone, Debug)]
struct IndexKey {
    head: Head,
    bytes: Box<[u8]>,
}

/// If two keys' heads differ, they order as the keys do: the first
/// differing byte is within both keys, or one key ended there and is a
/// prefix of the other (its padding is smaller).
fn head(k: &[u8]) -> Head {
    let mut b = [0u8; HEAD];
    let n = k.len().min(HEAD);
    b[..n].copy_from_slice(&k[..n]);
    Head::from_be_bytes(b)
}

/// Key order from heads and lengths, reading the keys' bytes only when both
/// are longer than the head and the heads are equal.
fn cmp_keys(ha: Head, a: &[u8], hb: Head, b: &[u8]) -> Ordering {
    match ha.cmp(&hb) {
        Ordering::Equal if a.len() <= HEAD && b.len() <= HEAD => a.len().cmp(&b.len()),
        Ordering::Equal => a.cmp(b),
        o => o,
    }
}

impl IndexKey {
    fn new(k: &[u8]) -> IndexKey {
        IndexKey {
            head: head(k),
            bytes: k.into(),
        }
    }
}

/// What lookups compare: a stored key or a borrowed probe, so a search needs
/// no allocation.
trait KeyLike {
    fn parts(&self) -> (Head, &[u8]);
}

impl KeyLike for IndexKey {
    fn parts(&self) -> (Head, &[u8]) {
        (self.head, &self.bytes)
    }
}

/// A borrowed key to search for.
struct Probe<'a> {
    head: Head,
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    fn new(k: &'a [u8]) -> Probe<'a> {
        Probe {
            head: head(k),
            bytes: k,
        }
    }
}

impl KeyLike for Probe<'_> {
    fn parts(&self) -> (Head, &[u8]) {
        (self.head, self.bytes)
    }
}

fn compare(a: (Head, &[u8]), b: (Head, &[u8])) -> Ordering {
    cmp_keys(a.0, a.1, b.0, b.1)
}

impl PartialEq for dyn KeyLike + '_ {
    fn eq(&self, other: &Self) -> bool {
        compare(self.parts(), other.parts()) == Ordering::Equal
    }
}
impl Eq for dyn KeyLike + '_ {}
impl PartialOrd for dyn KeyLike + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn KeyLike + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.parts(), other.parts())
    }
}

impl PartialEq for IndexKey {
    fn eq(&self, other: &Self) -> bool {
        compare(self.parts(), other.parts()) == Ordering::Equal
    }
}
impl Eq for IndexKey {}
impl PartialOrd for IndexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IndexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.parts(), other.parts())
    }
}

impl<'a> Borrow<dyn KeyLike + 'a> for IndexKey {
    fn borrow(&self) -> &(dyn KeyLike + 'a) {
        self
    }
}

/// Records below which a rebuild does not split its work between threads.
const PARALLEL_MIN: usize = 4096;

/// A record read back from the `key` bucket, for [`KeyIndex::rebuild`].
#[derive(Clone, Copy, Debug)]
pub struct StoredRecord<'a> {
    pub key: &'a [u8],
    /// The key's head as the index compares them.
    head: Head,
    /// The lease in the record (0 for none or a deletion).
    pub lease: i64,
    pub rev: Revision,
    pub tombstone: bool,
    pub created: i64,
    pub version: i64,
}

impl<'a> StoredRecord<'a> {
    pub fn new(
        key: &'a [u8],
        rev: Revision,
        tombstone: bool,
        created: i64,
        version: i64,
        lease: i64,
    ) -> StoredRecord<'a> {
        StoredRecord {
            key,
            head: head(key),
            lease,
            rev,
            tombstone,
            created,
            version,
        }
    }
}

/// A key range: one key, or `[start, end)` with an optional end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interval {
    Single(Vec<u8>),
    Range {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl Interval {
    /// etcd's conventions: an empty `range_end` means the single `key`;
    /// `"\0"` means every key at or after `key`; otherwise `[key, range_end)`
    /// (empty when `range_end <= key`).
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> Interval {
        match range_end {
            [] => Interval::Single(key.to_vec()),
            [0] => Interval::Range {
                start: key.to_vec(),
                end: None,
            },
            end => Interval::Range {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            Interval::Single(s) => s.as_slice() == k,
            Interval::Range { start, end } => {
                k >= start.as_slice() && end.as_ref().is_none_or(|e| k < e.as_slice())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Interval::Range { start, end: Some(end) } if end <= start)
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            Interval::Single(k) => (Bound::Included(k.as_slice()), Bound::Included(k.as_slice())),
            Interval::Range { start, end } => (
                Bound::Included(start.as_slice()),
                end.as_ref()
                    .map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_slice())),
            ),
        }
    }
}

/// Every key's history, ordered by key.
#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    keys: BTreeMap<IndexKey, KeyHistory>,
}

/// A bound on a key, as the map compares it.
fn probe_bound(b: Bound<&[u8]>) -> Bound<Probe<'_>> {
    b.map(Probe::new)
}

fn dyn_bound<'p, 'a>(b: &'p Bound<Probe<'a>>) -> Bound<&'p (dyn KeyLike + 'a)> {
    b.as_ref().map(|p| p as &dyn KeyLike)
}

impl KeyIndex {
    fn history_mut(&mut self, key: &[u8]) -> Option<&mut KeyHistory> {
        self.keys.get_mut(&Probe::new(key) as &dyn KeyLike)
    }

    /// Records a put of `key` at `rev`; returns the key's creation revision
    /// and version after it.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> (i64, i64) {
        if let Some(h) = self.history_mut(key) {
            return h.put(rev, None);
        }
        let mut h = KeyHistory::default();
        let r = h.put(rev, None);
        self.keys.insert(IndexKey::new(key), h);
        r
    }

    /// Deletes `key` at `rev`; false if it did not exist.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.history_mut(key).is_some_and(|h| h.tombstone(rev))
    }

    /// Adds one record read back from storage; records must come in
    /// revision order.
    pub fn restore(&mut self, r: &StoredRecord<'_>) {
        if self.history_mut(r.key).is_none() {
            self.keys
                .insert(IndexKey::new(r.key), KeyHistory::default());
        }
        let h = self.history_mut(r.key).expect("just inserted");
        restore_into(h, r);
    }

    /// Builds the index from every record of the `key` bucket, read in
    /// revision order, in one pass: the records are sorted by key (revision
    /// order kept within a key) on up to `threads` threads, each key's
    /// history is built from its run of records, and the map is built from
    /// the sorted histories (linear, no searches). `latest` is called, in key
    /// order, with each key's newest record.
    pub fn rebuild(
        mut records: Vec<StoredRecord<'_>>,
        threads: usize,
        mut latest: impl FnMut(&StoredRecord<'_>),
    ) -> KeyIndex {
        let threads = threads.clamp(1, 64);
        // Heads decide almost every comparison without reading the keys'
        // bytes; revisions are unique, so the order is total.
        let cmp = |a: &StoredRecord<'_>, b: &StoredRecord<'_>| {
            cmp_keys(a.head, a.key, b.head, b.key).then(a.rev.cmp(&b.rev))
        };
        if threads > 1 && records.len() >= 2 * PARALLEL_MIN {
            // Sort slices in parallel; the stable sort then finds them as
            // sorted runs and only merges.
            let chunk = records.len().div_ceil(threads);
            std::thread::scope(|s| {
                for c in records.chunks_mut(chunk) {
                    s.spawn(move || c.sort_unstable_by(cmp));
                }
            });
            records.sort_by(cmp);
        } else {
            records.sort_unstable_by(cmp);
        }
        let mut sorted: Vec<(IndexKey, KeyHistory)> = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            let first = &records[i];
            let mut h = KeyHistory::default();
            restore_into(&mut h, first);
            let mut j = i + 1;
            while j < records.len()
                && cmp_keys(records[j].head, records[j].key, first.head, first.key)
                    == Ordering::Equal
            {
                restore_into(&mut h, &records[j]);
                j += 1;
            }
            latest(&records[j - 1]);
            sorted.push((
                IndexKey {
                    head: first.head,
                    bytes: first.key.into(),
                },
                h,
            ));
            i = j;
        }
        KeyIndex {
            keys: sorted.into_iter().collect(),
        }
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Found> {
        self.history(key)?.get(at)
    }

    pub fn history(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(&Probe::new(key) as &dyn KeyLike)
    }

    /// Keys of the interval that exist at `at`, in key order.
    pub fn range<'a>(
        &'a self,
        iv: &'a Interval,
        at: i64,
    ) -> impl Iterator<Item = (&'a [u8], Found)> + 'a {
        // A single key is one search; a range seeks to its start.
        let (single, ranged) = match iv {
            Interval::Single(k) => (
                Some(self.keys.get_key_value(&Probe::new(k) as &dyn KeyLike)),
                None,
            ),
            _ if iv.is_empty() => (None, None),
            _ => {
                let (lo, hi) = iv.bounds();
                let (lo, hi) = (probe_bound(lo), probe_bound(hi));
                (
                    None,
                    Some(
                        self.keys
                            .range::<dyn KeyLike, _>((dyn_bound(&lo), dyn_bound(&hi))),
                    ),
                )
            }
        };
        single
            .into_iter()
            .flatten()
            .chain(ranged.into_iter().flatten())
            .filter_map(move |(k, h)| h.get(at).map(|f| (&k.bytes[..], f)))
    }

    /// Compacts every key at `at`; returns the revisions at or below `at` that
    /// remain (everything else at or below `at` may be deleted from storage).
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, h| {
            let (kept, empty) = h.compact(at);
            keep.extend(kept);
            !empty
        });
        keep
    }

    /// Compacts at `at` the next `limit` keys from `from` (the first key if
    /// `None`), adding the revisions they keep to `keep`; returns the key to
    /// go on from, or `None` after the last. Lets a compaction of many keys
    /// hold the index's lock for short stretches.
    pub fn compact_some(
        &mut self,
        at: i64,
        from: Option<&[u8]>,
        limit: usize,
        keep: &mut HashSet<Revision>,
    ) -> Option<Vec<u8>> {
        let start = probe_bound(from.map_or(Bound::Unbounded, Bound::Included));
        let mut empty = Vec::new();
        let mut next = None;
        let mut it = self
            .keys
            .range_mut::<dyn KeyLike, _>((dyn_bound(&start), Bound::Unbounded));
        for (k, h) in it.by_ref().take(limit) {
            let (kept, gone) = h.compact(at);
            keep.extend(kept);
            if gone {
                empty.push(k.clone());
            }
        }
        if let Some((k, _)) = it.next() {
            next = Some(k.bytes.to_vec());
        }
        for k in empty {
            self.keys.remove(&k);
        }
        next
    }

    /// The revisions compacting at `at` would keep, changing nothing.
    pub fn kept(&self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        let mut from = None;
        loop {
            from = self.kept_some(at, from.as_deref(), usize::MAX, &mut keep);
            if from.is_none() {
                return keep;
            }
        }
    }

    /// [`KeyIndex::kept`] for the next `limit` keys from `from`; returns the
    /// key to go on from.
    pub fn kept_some(
        &self,
        at: i64,
        from: Option<&[u8]>,
        limit: usize,
        keep: &mut HashSet<Revision>,
    ) -> Option<Vec<u8>> {
        let start = probe_bound(from.map_or(Bound::Unbounded, Bound::Included));
        let mut it = self
            .keys
            .range::<dyn KeyLike, _>((dyn_bound(&start), Bound::Unbounded));
        for (_, h) in it.by_ref().take(limit) {
            keep.extend(h.kept(at));
        }
        it.next().map(|(k, _)| k.bytes.to_vec())
    }

    /// Keys that currently exist.
    pub fn live_keys(&self) -> usize {
        self.keys.values().filter(|h| h.alive()).count()
    }

    /// Keys with any history held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Adds a stored record to its key's history (records in revision order).
fn restore_into(h: &mut KeyHistory, r: &StoredRecord<'_>) {
    if r.tombstone {
        if !h.tombstone(r.rev) {
            h.orphan_tombstone(r.rev);
        }
    } else {
        h.put(r.rev, Some((r.created, r.version)));
    }
}

#[cfg(test)]
mod tests;
