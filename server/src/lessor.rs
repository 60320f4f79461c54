//! Leases: which exist, which keys each holds, and — on the leader only —
//! when each expires.
//!
//! Grants, revocations and checkpoints change it only by being applied from
//! the log, so every member holds the same leases and keys. Expiry is the
//! leader's alone: it tracks deadlines, renews them on keep-alives, and
//! proposes a revocation for each lease that runs out. A new leader starts
//! each lease's clock from its last checkpointed remaining TTL (or its full
//! TTL), so a lease survives leader changes and restarts with about the time
//! it had left.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_engine::mvcc::{Event, EventKind};

use crate::metrics::{Counter, Histogram};

/// etcd's largest lease TTL, seconds.
pub const MAX_TTL: i64 = 9_000_000_000;

#[derive(Debug)]
struct Lease {
    /// Granted TTL in seconds (raised to the minimum).
    ttl: i64,
    /// Remaining TTL at the last checkpoint (0: none).
    remaining: i64,
    /// On the leader: when it expires.
    expiry: Option<Instant>,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<i64, Lease>,
    key_lease: HashMap<Vec<u8>, i64>,
    primary: bool,
}

/// What TimeToLive answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// Seconds left (truncated); the full TTL on a follower.
    pub remaining: i64,
    pub granted: i64,
    pub keys: Vec<Vec<u8>>,
}

/// What the lessor has done since start, for /metrics (etcd's
/// `etcd_debugging_lease_*` and `etcd_debugging_server_lease_expired_total`).
#[derive(Debug)]
pub struct LeaseStats {
    /// Grants applied (not those restored at start).
    pub granted: Counter,
    /// Revocations applied, by a client or on expiry.
    pub revoked: Counter,
    /// Keep-alives that renewed a lease, on the leader.
    pub renewed: Counter,
    /// Expired leases whose revocation this member, leading, got committed.
    pub expired: Counter,
    /// The TTLs granted, in seconds.
    pub ttls: Histogram,
}

/// etcd's buckets for granted TTLs: 1 s to 2^23 s, doubling.
const TTL_BUCKETS: [f64; 24] = crate::metrics::exponential(1.0);

#[derive(Debug)]
pub struct Lessor {
    state: Mutex<State>,
    /// Shortest TTL granted: ceil(1.5 × election timeout) seconds.
    pub min_ttl: i64,
    pub stats: LeaseStats,
}

impl Lessor {
    pub fn new(election_timeout: Duration) -> Lessor {
        let min_ttl = ((election_timeout.as_millis() as i64 * 3 + 1999) / 2000).max(1);
        Lessor {
            state: Mutex::new(State::default()),
            min_ttl,
            stats: LeaseStats {
                granted: Counter::default(),
                revoked: Counter::default(),
                renewed: Counter::default(),
                expired: Counter::default(),
                ttls: Histogram::new(&TTL_BUCKETS),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The TTL a grant of `ttl` gets.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    /// Forgets every lease (before loading another store's).
    pub fn clear(&self) {
        let mut s = self.lock();
        s.leases.clear();
        s.key_lease.clear();
    }

    pub fn exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }

    /// Applies a grant.
    pub fn grant(&self, id: i64, ttl: i64) {
        self.restore(id, ttl, 0);
        self.stats.granted.inc();
        self.stats.ttls.observe(ttl as f64);
    }

    /// Restores a lease at start, with its checkpointed remaining TTL.
    pub fn restore(&self, id: i64, ttl: i64, remaining: i64) {
        let mut s = self.lock();
        let primary = s.primary;
        let left = if remaining > 0 { remaining } else { ttl };
        s.leases.insert(
            id,
            Lease {
                ttl,
                remaining,
                expiry: primary.then(|| Instant::now() + Duration::from_secs(left as u64)),
                keys: BTreeSet::new(),
            },
        );
    }

    /// Applies a revocation; returns the keys it held, in key order.
    pub fn revoke(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        let mut s = self.lock();
        let l = s.leases.remove(&id)?;
        for k in &l.keys {
            s.key_lease.remove(k);
        }
        self.stats.revoked.inc();
        Some(l.keys.into_iter().collect())
    }

    /// The keys lease `id` holds, in key order.
    pub fn keys(&self, id: i64) -> Option<Vec<Vec<u8>>> {
        self.lock()
            .leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }

    /// Follows an applied write: a put attaches its key to its lease (and
    /// detaches it from any other), a deletion detaches it.
    pub fn follow(&self, events: &[Event]) {
        let mut s = self.lock();
        for e in events {
            let key = &e.kv.key;
            let old = s.key_lease.remove(key);
            if let Some(l) = old.and_then(|old| s.leases.get_mut(&old)) {
                l.keys.remove(key);
            }
            if e.kind == EventKind::Put && e.kv.lease != 0 {
                let id = e.kv.lease;
                if let Some(l) = s.leases.get_mut(&id) {
                    l.keys.insert(key.clone());
                    s.key_lease.insert(key.clone(), id);
                }
            }
        }
    }

    /// Re-attaches a key found with a lease at start.
    pub fn attach(&self, key: Vec<u8>, id: i64) {
        let mut s = self.lock();
        if let Some(l) = s.leases.get_mut(&id) {
            l.keys.insert(key.clone());
            s.key_lease.insert(key, id);
        }
    }

    /// Applies a checkpoint of a lease's remaining TTL.
    pub fn checkpoint(&self, id: i64, remaining: i64) {
        if let Some(l) = self.lock().leases.get_mut(&id) {
            l.remaining = remaining;
        }
    }

    /// The leader renews a lease on a keep-alive; returns its TTL.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut s = self.lock();
        let l = s.leases.get_mut(&id)?;
        l.expiry = Some(Instant::now() + Duration::from_secs(l.ttl as u64));
        l.remaining = 0;
        self.stats.renewed.inc();
        Some(l.ttl)
    }

    pub fn info(&self, id: i64, with_keys: bool) -> Option<LeaseInfo> {
        let s = self.lock();
        let l = s.leases.get(&id)?;
        let remaining = match l.expiry {
            Some(at) => at.saturating_duration_since(Instant::now()).as_secs() as i64,
            None if l.remaining > 0 => l.remaining,
            None => l.ttl,
        };
        Some(LeaseInfo {
            id,
            remaining,
            granted: l.ttl,
            keys: if with_keys {
                l.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.lock().leases.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// This member became the leader: start every lease's clock.
    pub fn promote(&self) {
        let mut s = self.lock();
        s.primary = true;
        let now = Instant::now();
        for l in s.leases.values_mut() {
            let left = if l.remaining > 0 { l.remaining } else { l.ttl };
            l.expiry = Some(now + Duration::from_secs(left as u64));
        }
    }

    /// This member is no longer the leader.
    pub fn demote(&self) {
        let mut s = self.lock();
        s.primary = false;
        for l in s.leases.values_mut() {
            l.expiry = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.lock().primary
    }

    /// Leases past their expiry (on the leader), at most `limit`.
    pub fn expired(&self, limit: usize) -> Vec<i64> {
        let now = Instant::now();
        let s = self.lock();
        let mut v: Vec<(Instant, i64)> = s
            .leases
            .iter()
            .filter_map(|(&id, l)| l.expiry.filter(|&at| at <= now).map(|at| (at, id)))
            .collect();
        v.sort_unstable();
        v.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Remaining TTLs to checkpoint (on the leader): leases whose remaining
    /// time differs from what was last checkpointed.
    pub fn to_checkpoint(&self, limit: usize) -> Vec<(i64, i64)> {
        let now = Instant::now();
        let s = self.lock();
        s.leases
            .iter()
            .filter_map(|(&id, l)| {
                let left = l.expiry?.saturating_duration_since(now).as_secs() as i64;
                (left > 0 && left < l.ttl && left != l.remaining).then_some((id, left))
            })
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_engine::mvcc::KeyValue;
    use std::sync::Arc;

    fn put(k: &str, lease: i64) -> Event {
        Event {
            kind: EventKind::Put,
            kv: Arc::new(KeyValue {
                key: k.into(),
                lease,
                ..KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn keys_follow_puts_and_deletes_between_leases() {
        let l = Lessor::new(Duration::from_millis(1000));
        assert_eq!(l.min_ttl, 2);
        assert_eq!(l.effective_ttl(1), 2);
        l.grant(1, 10);
        l.grant(2, 10);
        l.follow(&[put("a", 1), put("b", 1)]);
        l.follow(&[put("b", 2)]);
        assert_eq!(l.keys(1).unwrap(), vec![b"a".to_vec()]);
        assert_eq!(l.keys(2).unwrap(), vec![b"b".to_vec()]);
        l.follow(&[put("a", 0)]);
        assert!(l.keys(1).unwrap().is_empty());
        let mut del = put("b", 0);
        del.kind = EventKind::Delete;
        l.follow(&[del]);
        assert!(l.keys(2).unwrap().is_empty());
        assert_eq!(l.revoke(1), Some(vec![]));
        assert!(!l.exists(1));
    }

    #[test]
    fn only_the_leader_expires_leases_and_a_new_leader_uses_the_checkpoint() {
        let l = Lessor::new(Duration::from_millis(1000));
        l.grant(5, 100);
        assert!(l.expired(10).is_empty());
        assert_eq!(l.info(5, false).unwrap().remaining, 100);
        l.checkpoint(5, 1);
        l.promote();
        let left = l.info(5, false).unwrap().remaining;
        assert!(left <= 1, "{left}");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(l.expired(10), vec![5]);
        assert_eq!(l.renew(5), Some(100));
        assert!(l.expired(10).is_empty());
        l.demote();
        assert!(l.expired(10).is_empty());
    }
}
