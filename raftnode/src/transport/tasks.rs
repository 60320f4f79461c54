//! The transport's tasks, tagged by what they serve so that removing a peer or
//! shutting down can abort exactly the right ones.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::task::AbortHandle;

use super::Shared;
use super::frame::StreamKind;

/// What a task serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    Listener,
    /// The outbound message stream to a peer.
    Writer(u64),
    /// A snapshot being sent to a peer.
    SnapshotOut(u64),
    /// An accepted connection; sender and kind once its handshake is read.
    Inbound {
        from: Option<u64>,
        kind: Option<StreamKind>,
    },
}

impl Tag {
    /// Whether this task talks to or for `peer`.
    pub fn concerns(&self, peer: u64) -> bool {
        match *self {
            Tag::Listener => false,
            Tag::Writer(p) | Tag::SnapshotOut(p) => p == peer,
            Tag::Inbound { from, .. } => from == Some(peer),
        }
    }
}

struct Entry {
    tag: Tag,
    /// None between registration and spawn.
    abort: Option<AbortHandle>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    closed: bool,
    map: HashMap<u64, Entry>,
}

#[derive(Default)]
pub struct Tasks {
    inner: Mutex<Inner>,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the tag of task `id` (an accepted connection once identified).
    pub fn retag(&self, id: u64, tag: Tag) {
        if let Some(e) = self.lock().map.get_mut(&id) {
            e.tag = tag;
        }
    }

    /// Aborts every task for which `pred(id, tag)` holds (ids grow in the
    /// order tasks were spawned).
    pub fn abort_where(&self, pred: impl Fn(u64, &Tag) -> bool) {
        let handles: Vec<AbortHandle> = {
            let mut g = self.lock();
            let ids: Vec<u64> = g
                .map
                .iter()
                .filter(|(id, e)| pred(**id, &e.tag))
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| g.map.remove(id).and_then(|e| e.abort))
                .collect()
        };
        // Outside the lock: a task's guard takes it when the task is dropped.
        for h in handles {
            h.abort();
        }
    }

    /// Aborts everything and refuses new tasks.
    pub fn close(&self) {
        let handles: Vec<AbortHandle> = {
            let mut g = self.lock();
            g.closed = true;
            g.map.drain().filter_map(|(_, e)| e.abort).collect()
        };
        for h in handles {
            h.abort();
        }
    }
}

/// Removes a task's entry when the task ends, however it ends.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.tasks.lock().map.remove(&self.id);
    }
}

/// Spawns `make(id)` on the transport's runtime under `tag`. Returns false
/// (and spawns nothing) once the transport is shut down.
pub fn spawn<F, Fut>(shared: &Arc<Shared>, tag: Tag, make: F) -> bool
where
    F: FnOnce(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let id = {
        let mut g = shared.tasks.lock();
        if g.closed {
            return false;
        }
        let id = g.next;
        g.next += 1;
        g.map.insert(id, Entry { tag, abort: None });
        id
    };
    let guard = Registered {
        shared: shared.clone(),
        id,
    };
    let fut = make(id);
    // Never spawn under the lock: a runtime that is shutting down drops the
    // future on the spot, and its guard takes the lock.
    let handle = shared.rt.spawn(async move {
        let _guard = guard;
        fut.await;
    });
    let orphan = match shared.tasks.lock().map.get_mut(&id) {
        Some(e) => {
            e.abort = Some(handle.abort_handle());
            false
        }
        // Aborted (peer removed, shutdown) before it could be recorded, or
        // already finished: aborting a finished task does nothing.
        None => true,
    };
    if orphan {
        handle.abort();
    }
    true
}
