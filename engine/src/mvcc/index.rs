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

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    created: i64,
    /// Changes made in this generation, compacted ones included.
    ver: i64,
    /// Revisions still held, ascending; a closed generation ends with its
    /// tombstone.
    revs: Vec<Revision>,
}

/// One key's history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Oldest first; every one but the last is closed.
    gens: Vec<Generation>,
}

impl KeyHistory {
    fn last(&mut self) -> &mut Generation {
        if self.gens.is_empty() {
            self.gens.push(Generation::default());
        }
        self.gens.last_mut().expect("just ensured")
    }

    /// Whether the key exists at the newest revision.
    pub fn alive(&self) -> bool {
        self.gens.last().is_some_and(|g| !g.revs.is_empty())
    }

    /// Records a put at `rev`. A put that creates the key starts a generation
    /// (`restored` carries the creation revision and version of a record read
    /// back from storage, whose earlier history may have been compacted).
    /// Returns the key's creation revision and version after the put.
    pub fn put(&mut self, rev: Revision, restored: Option<(i64, i64)>) -> (i64, i64) {
        let g = self.last();
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
        let g = self.last();
        g.revs.push(rev);
        g.ver += 1;
        self.gens.push(Generation::default());
        true
    }

    /// A tombstone read back from storage whose generation's puts were
    /// already compacted away (a compaction interrupted by a crash): recorded
    /// as a closed generation of its own, which the resumed compaction drops.
    fn orphan_tombstone(&mut self, rev: Revision) {
        if self.gens.last().is_some_and(|g| g.revs.is_empty()) {
            self.gens.pop();
        }
        self.gens.push(Generation {
            created: rev.main,
            ver: 1,
            revs: vec![rev],
        });
        self.gens.push(Generation::default());
    }

    /// The key at revision `at`, if it existed then.
    pub fn get(&self, at: i64) -> Option<Found> {
        let last = self.gens.len().checked_sub(1)?;
        for (gi, g) in self.gens.iter().enumerate().rev() {
            let Some(first) = g.revs.first() else {
                continue;
            };
            if gi != last && g.revs.last().expect("non-empty").main <= at {
                // Deleted at or before `at`, and not recreated by then.
                return None;
            }
            if first.main <= at {
                let idx = g.revs.partition_point(|r| r.main <= at) - 1;
                return Some(Found {
                    rev: g.revs[idx],
                    created: g.created,
                    version: g.ver - (g.revs.len() - 1 - idx) as i64,
                });
            }
        }
        None
    }

    /// Index of the first generation compaction at `at` keeps, and within it
    /// the index of the newest revision at or below `at`.
    fn compaction_point(&self, at: i64) -> (usize, Option<usize>) {
        let mut gi = 0;
        while gi + 1 < self.gens.len() && self.gens[gi].revs.last().is_some_and(|t| t.main <= at) {
            gi += 1;
        }
        let revs = &self.gens[gi].revs;
        let n = revs.partition_point(|r| r.main <= at);
        (gi, n.checked_sub(1))
    }

    /// The revision at or below `at` that compacting at `at` keeps.
    pub fn kept(&self, at: i64) -> Option<Revision> {
        if self.gens.is_empty() {
            return None;
        }
        let (gi, idx) = self.compaction_point(at);
        idx.map(|i| self.gens[gi].revs[i])
    }

    /// Compacts at `at`; returns the kept revision (see [`KeyHistory::kept`])
    /// and whether the key is left with nothing.
    pub fn compact(&mut self, at: i64) -> (Option<Revision>, bool) {
        if self.gens.is_empty() {
            return (None, true);
        }
        let (gi, idx) = self.compaction_point(at);
        self.gens.drain(..gi);
        let kept = idx.map(|i| {
            self.gens[0].revs.drain(..i);
            self.gens[0].revs[0]
        });
        let empty = self.gens.len() == 1 && self.gens[0].revs.is_empty();
        (kept, empty)
    }

    /// All revisions held, oldest first (for tests and tools).
    pub fn revisions(&self) -> Vec<Revision> {
        self.gens
            .iter()
            .flat_map(|g| g.revs.iter().copied())
            .collect()
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
    keys: BTreeMap<Vec<u8>, KeyHistory>,
}

impl KeyIndex {
    /// Records a put of `key` at `rev`; returns the key's creation revision
    /// and version after it.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> (i64, i64) {
        match self.keys.get_mut(key) {
            Some(h) => h.put(rev, None),
            None => {
                let mut h = KeyHistory::default();
                let r = h.put(rev, None);
                self.keys.insert(key.to_vec(), h);
                r
            }
        }
    }

    /// Deletes `key` at `rev`; false if it did not exist.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|h| h.tombstone(rev))
    }

    /// Rebuilds from a record read back from storage, in revision order.
    pub fn restore(
        &mut self,
        key: &[u8],
        rev: Revision,
        tombstone: bool,
        created: i64,
        version: i64,
    ) {
        let h = match self.keys.get_mut(key) {
            Some(h) => h,
            None => self.keys.entry(key.to_vec()).or_default(),
        };
        if tombstone {
            if !h.tombstone(rev) {
                h.orphan_tombstone(rev);
            }
        } else {
            h.put(rev, Some((created, version)));
        }
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Found> {
        self.keys.get(key)?.get(at)
    }

    pub fn history(&self, key: &[u8]) -> Option<&KeyHistory> {
        self.keys.get(key)
    }

    /// Keys of the interval that exist at `at`, in key order.
    pub fn range<'a>(
        &'a self,
        iv: &'a Interval,
        at: i64,
    ) -> impl Iterator<Item = (&'a [u8], Found)> + 'a {
        let it: Box<dyn Iterator<Item = (&'a Vec<u8>, &'a KeyHistory)>> = if iv.is_empty() {
            Box::new(std::iter::empty())
        } else {
            Box::new(self.keys.range::<[u8], _>(iv.bounds()))
        };
        it.filter_map(move |(k, h)| h.get(at).map(|f| (k.as_slice(), f)))
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
        let start = from.map_or(Bound::Unbounded, Bound::Included);
        let mut empty = Vec::new();
        for (k, h) in self
            .keys
            .range_mut::<[u8], _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (kept, gone) = h.compact(at);
            keep.extend(kept);
            if gone {
                empty.push(k.clone());
            }
        }
        let next = self
            .keys
            .range::<[u8], _>((start, Bound::Unbounded))
            .nth(limit)
            .map(|(k, _)| k.clone());
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
        let start = from.map_or(Bound::Unbounded, Bound::Included);
        let mut it = self.keys.range::<[u8], _>((start, Bound::Unbounded));
        for (_, h) in it.by_ref().take(limit) {
            keep.extend(h.kept(at));
        }
        it.next().map(|(k, _)| k.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put(2) put(3) delete(4) put(5), as in the module docs.
    fn example() -> KeyHistory {
        let mut h = KeyHistory::default();
        h.put(r(2), None);
        h.put(r(3), None);
        assert!(h.tombstone(r(4)));
        h.put(r(5), None);
        h
    }

    #[test]
    fn reads_at_every_revision() {
        let h = example();
        assert_eq!(h.get(1), None);
        assert_eq!(
            h.get(2),
            Some(Found {
                rev: r(2),
                created: 2,
                version: 1
            })
        );
        assert_eq!(
            h.get(3),
            Some(Found {
                rev: r(3),
                created: 2,
                version: 2
            })
        );
        assert_eq!(h.get(4), None);
        assert_eq!(
            h.get(5),
            Some(Found {
                rev: r(5),
                created: 5,
                version: 1
            })
        );
        assert_eq!(
            h.get(100),
            Some(Found {
                rev: r(5),
                created: 5,
                version: 1
            })
        );
    }

    #[test]
    fn compaction_keeps_the_newest_revision_at_or_below_and_drops_dead_generations() {
        let mut h = example();
        assert_eq!(h.kept(2), Some(r(2)));
        assert_eq!(h.compact(2), (Some(r(2)), false));
        assert_eq!(h.revisions(), vec![r(2), r(3), r(4), r(5)]);
        assert_eq!(h.compact(3), (Some(r(3)), false));
        assert_eq!(
            h.get(3),
            Some(Found {
                rev: r(3),
                created: 2,
                version: 2
            })
        );
        // The generation deleted at 4 goes entirely.
        assert_eq!(h.compact(4), (None, false));
        assert_eq!(h.revisions(), vec![r(5)]);
        assert_eq!(h.get(5).unwrap().version, 1);
        let mut gone = KeyHistory::default();
        gone.put(r(2), None);
        gone.tombstone(r(3));
        assert_eq!(gone.compact(3), (None, true));
    }

    #[test]
    fn restored_records_carry_creation_and_version_across_compacted_history() {
        let mut idx = KeyIndex::default();
        // Revisions 2 and 3 of "k" were compacted away; 4 holds version 3.
        idx.restore(b"k", r(4), false, 2, 3);
        idx.restore(b"k", r(6), false, 0, 0);
        assert_eq!(
            idx.get(b"k", 4),
            Some(Found {
                rev: r(4),
                created: 2,
                version: 3
            })
        );
        assert_eq!(
            idx.get(b"k", 6),
            Some(Found {
                rev: r(6),
                created: 2,
                version: 4
            })
        );
        idx.restore(b"k", r(7), true, 0, 0);
        assert_eq!(idx.get(b"k", 7), None);
        // A tombstone whose puts are gone does not break the rebuild.
        idx.restore(b"x", r(8), true, 0, 0);
        assert_eq!(idx.get(b"x", 8), None);
        assert!(idx.compact(8).is_empty());
        assert_eq!(idx.len(), 0);
    }

    #[test]
    fn compaction_in_chunks_matches_compaction_in_one_go() {
        let mut whole = KeyIndex::default();
        for i in 0..100i64 {
            let k = format!("k{:03}", i % 37).into_bytes();
            if i % 5 == 4 {
                whole.tombstone(&k, r(i + 2));
            } else {
                whole.put(&k, r(i + 2));
            }
        }
        let mut chunked = whole.clone();
        let kept = whole.kept(60);
        let all = whole.compact(60);
        assert_eq!(kept, all);
        let mut keep = HashSet::new();
        let mut from = None;
        loop {
            from = chunked.compact_some(60, from.as_deref(), 4, &mut keep);
            if from.is_none() {
                break;
            }
        }
        assert_eq!(keep, all);
        assert_eq!(chunked.len(), whole.len());
        for (k, h) in &whole.keys {
            assert_eq!(chunked.history(k), Some(h));
        }
    }

    #[test]
    fn intervals_follow_etcds_conventions() {
        assert_eq!(
            Interval::from_etcd(b"a", b""),
            Interval::Single(b"a".to_vec())
        );
        let all_from = Interval::from_etcd(b"b", b"\0");
        assert!(all_from.contains(b"b") && all_from.contains(b"zzz") && !all_from.contains(b"a"));
        let r = Interval::from_etcd(b"b", b"d");
        assert!(r.contains(b"c") && !r.contains(b"d"));
        assert!(Interval::from_etcd(b"d", b"b").is_empty());
        let mut idx = KeyIndex::default();
        for (i, k) in [&b"a"[..], b"b", b"c", b"d"].into_iter().enumerate() {
            idx.put(k, Revision::new(i as i64 + 2, 0));
        }
        let keys: Vec<_> = idx.range(&r, 100).map(|(k, _)| k.to_vec()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(idx.range(&r, 3).count(), 1);
    }
}
