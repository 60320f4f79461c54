//! The store's background threads: the committer, which writes sealed
//! batches to the B+tree, and the compactor, which removes compacted
//! revisions from the index and then from the tree.

use super::*;

/// Lowers the calling thread's scheduling priority (nice 10 on Linux, where
/// priorities are per thread): on a machine with few cores, the committer,
/// compactor and watch syncer otherwise preempt the applier for a whole
/// scheduler tick (4 ms) at a time.
pub(super) fn background_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, 10) {
        tracing::debug!(error = %e, "could not lower a background thread's priority");
    }
}

/// The committer thread.
pub(super) fn committer(inner: Arc<Inner>) {
    let interval = inner.opts.batch_interval;
    let mut last = Instant::now();
    loop {
        let stop = {
            let mut c = lock(&inner.commit);
            loop {
                if c.error.is_some() {
                    return;
                }
                if !c.sealed.is_empty() || c.stop {
                    break;
                }
                let now = Instant::now();
                let due = last + interval;
                if now >= due {
                    break;
                }
                c = inner
                    .commit_cv
                    .wait_timeout(c, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            c.stop
        };
        if lock(&inner.commit).sealed.is_empty() {
            let mut w = lock(&inner.writer);
            if w.failed.is_none() {
                inner.seal(&mut w);
            }
        }
        last = Instant::now();
        let batches = std::mem::take(&mut lock(&inner.commit).sealed);
        if batches.is_empty() {
            if stop {
                return;
            }
            continue;
        }
        let last_seq = batches.last().expect("non-empty").seq;
        let durable = batches.iter().rev().find_map(|b| b.read().applied);
        let started = Instant::now();
        let committed = commit_batches(&inner.db, &batches);
        inner.commits.observe(started.elapsed());
        match committed {
            Ok(()) => {
                {
                    let mut v = lock(&inner.view);
                    let list: Vec<Arc<Batch>> = v
                        .batches
                        .iter()
                        .filter(|b| b.seq > last_seq)
                        .cloned()
                        .collect();
                    v.batches = Arc::from(list);
                }
                let mut c = lock(&inner.commit);
                c.committed_seq = last_seq;
                if let Some(d) = durable {
                    c.durable = d;
                }
                drop(c);
                inner.committed_cv.notify_all();
            }
            Err(e) => {
                inner.fail(format!("committing a batch: {e}"));
                return;
            }
        }
    }
}

/// The compactor thread.
pub(super) fn compactor(inner: Arc<Inner>) {
    loop {
        let job = {
            let mut q = lock(&inner.compact);
            loop {
                if q.stop {
                    for j in q.jobs.drain(..) {
                        j.done
                            .finish(Err("store closed before compaction finished".into()));
                    }
                    q.pending = 0;
                    drop(q);
                    inner.compact_cv.notify_all();
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q = inner.compact_cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let r = compact_job(&inner, &job);
        match &r {
            Ok(()) => tracing::info!(compact_revision = job.rev, "finished scheduled compaction"),
            Err(e) => tracing::warn!(compact_revision = job.rev, error = %e, "compaction stopped"),
        }
        job.done.finish(r.map_err(|e| e.to_string()));
        lock(&inner.compact).pending -= 1;
        inner.compact_cv.notify_all();
    }
}

fn compact_job(inner: &Inner, job: &CompactJob) -> Result<()> {
    let started = Instant::now();
    // 1. The index, a chunk of keys at a time.
    let mut keep = HashSet::new();
    let mut from: Option<Vec<u8>> = None;
    let mut longest_hold = Duration::ZERO;
    loop {
        let t = Instant::now();
        from =
            write(&inner.index)
                .keys
                .compact_some(job.rev, from.as_deref(), INDEX_CHUNK, &mut keep);
        longest_hold = longest_hold.max(t.elapsed());
        if from.is_none() {
            break;
        }
        std::thread::sleep(INDEX_REST);
    }
    tracing::debug!(
        compact_revision = job.rev,
        kept = keep.len(),
        index_ms = started.elapsed().as_secs_f64() * 1e3,
        longest_index_lock_ms = longest_hold.as_secs_f64() * 1e3,
        "compacted key index"
    );
    // 2. Wait until the tree holds every revision up to `rev`.
    inner.wait_committed(job.wait_seq)?;
    // 3. Delete the rest from the tree, in short transactions.
    let end = RevisionKey::live(Revision::new(job.rev + 1, 0)).encode();
    let mut last = RevisionKey::live(Revision::new(0, 0)).encode();
    let limit = inner.opts.compaction_batch_limit.max(1);
    loop {
        if lock(&inner.compact).stop {
            return Err(Error::Closed);
        }
        let mut tx = inner.db.begin_write()?;
        let keys: Vec<Vec<u8>> = {
            let b = tx
                .bucket(schema::KEY)?
                .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
            b.range(
                std::ops::Bound::Included(&last[..]),
                std::ops::Bound::Excluded(&end[..]),
            )
            .take(limit)
            .map(|r| r.map(|(k, _)| k.to_vec()))
            .collect::<btree::Result<_>>()?
        };
        let done = keys.len() < limit;
        {
            let mut b = tx
                .bucket_mut(schema::KEY)?
                .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
            for k in &keys {
                let rk = RevisionKey::decode(k).map_err(|e| Error::Corrupt(e.to_string()))?;
                if !keep.contains(&rk.revision) {
                    b.delete(k)?;
                }
            }
        }
        if done {
            tx.bucket_mut(schema::META)?
                .ok_or_else(|| Error::Corrupt("no meta bucket".into()))?
                .put(schema::FINISHED_COMPACT, &schema::encode_compact(job.rev))?;
        }
        tx.commit()?;
        if done {
            return Ok(());
        }
        let k = keys.last().expect("a full batch");
        let rk = RevisionKey::decode(k).map_err(|e| Error::Corrupt(e.to_string()))?;
        // Continue after the last key seen (sub + 1 sorts after its tombstone too).
        last = RevisionKey::live(Revision::new(rk.revision.main, rk.revision.sub + 1)).encode();
        std::thread::sleep(inner.opts.compaction_pause);
    }
}
