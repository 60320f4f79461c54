//! What the driver does with committed entries: hands them to the state
//! machine (or, in a one-member cluster, applies small batches itself),
//! takes configuration changes on the way, installs snapshots received from
//! the leader, and compacts the log once the state machine is durable.

use super::*;

impl<O: Send + 'static> Driver<O> {
    pub(super) fn on_applied(&mut self, index: u64) -> Result<()> {
        if index <= self.applied {
            return Ok(());
        }
        self.applied = index;
        self.raw
            .advance_apply_to(index.min(self.raw.raft.raft_log.committed));
        self.release_reads();
        // What a lagging follower would be sent now.
        let (cs, ms) = self.conf_at(index);
        let term = self.storage.rl().term(index).ok();
        if let Some(term) = term {
            self.storage.wl().set_point(SnapshotPoint {
                index,
                term,
                conf_state: cs,
                membership: ms,
            });
        }
        if !self.syncing && index - self.last_marker >= self.snapshot_count {
            self.syncing = true;
            self.to_apply(ApplyTask::Sync)?;
        }
        Ok(())
    }

    /// The configuration and membership as of `index` (at or after the last
    /// marker).
    pub(super) fn conf_at(&self, index: u64) -> (ConfState, Membership) {
        let (_, cs, ms) = self
            .conf_history
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .unwrap_or(&self.conf_history[0]);
        (cs.clone(), ms.clone())
    }

    /// The state machine holds everything up to `durable` durably: write a
    /// marker there, keep `catchup_entries` behind it in memory for slow
    /// followers, and release the WAL segments it covers.
    pub(super) fn compact(&mut self, durable: u64) -> Result<()> {
        let index = durable.min(self.applied);
        if index <= self.last_marker {
            return Ok(());
        }
        let term = self
            .storage
            .rl()
            .term(index)
            .map_err(|e| Error::Storage(format!("term of {index}: {e}")))?;
        let (cs, ms) = self.conf_at(index);
        let hs = {
            let mut c = self.storage.wl();
            c.hard_state.commit = c.hard_state.commit.max(index);
            c.hard_state.clone()
        };
        self.wal.append(vec![
            Record::Snapshot(SnapshotMarker {
                index,
                term,
                data: storage::encode_marker(&cs, &ms),
            }),
            wal_hs(&hs),
        ])?;
        self.hs_dirty = false;
        self.last_marker = index;
        let keep = self
            .conf_history
            .iter()
            .rposition(|(i, _, _)| *i <= index)
            .unwrap_or(0);
        self.conf_history.drain(..keep);
        self.storage
            .wl()
            .compact(index.saturating_sub(self.catchup_entries).max(1))?;
        let released = self.wal.release(index)?;
        tracing::info!(
            index,
            term,
            released_segments = released,
            "compacted the raft log"
        );
        Ok(())
    }

    /// The received file holding a snapshot's data.
    pub(super) fn take_received(&mut self, snap: &Snapshot) -> Result<PathBuf> {
        let index = snap.get_metadata().index;
        let file = self.received.remove(&index).ok_or_else(|| {
            Error::Storage(format!(
                "raft installs snapshot {index} but its data was not received"
            ))
        })?;
        for (_, stale) in self.received.drain() {
            let _ = std::fs::remove_file(stale);
        }
        Ok(file)
    }

    /// The state machine takes a snapshot's data (after everything handed
    /// to it before), and the node's view follows.
    pub(super) fn restore(
        &mut self,
        snap: &Snapshot,
        file: PathBuf,
        membership: Membership,
    ) -> Result<()> {
        let meta = snap.get_metadata();
        let (tx, rx) = std::sync::mpsc::channel();
        self.to_apply(ApplyTask::Restore { file, reply: tx })?;
        let covered = rx
            .recv()
            .map_err(|_| Error::Storage("the apply thread is gone".into()))?
            .map_err(|e| Error::Storage(format!("restoring a snapshot: {e}")))?;
        if covered < meta.index {
            return Err(Error::Storage(format!(
                "the received snapshot covers index {covered}, raft expects {}",
                meta.index
            )));
        }
        let cs = meta.get_conf_state().clone();
        self.set_membership(membership);
        self.conf_history = vec![(meta.index, cs.clone(), self.membership.clone())];
        self.last_marker = meta.index;
        self.restored_through = covered;
        // Proposals placed at or below what the snapshot covers may be in
        // it: their outcome is unknown.
        let n = self.shared.waiters.unknown_through(covered);
        self.shared.counters.failed.fetch_add(n as u64, Relaxed);
        self.storage.wl().set_point(SnapshotPoint {
            index: meta.index,
            term: meta.term,
            conf_state: cs,
            membership: self.membership.clone(),
        });
        self.applied = self.applied.max(covered);
        self.release_reads();
        self.shared
            .counters
            .snapshots_installed
            .fetch_add(1, Relaxed);
        tracing::info!(
            index = meta.index,
            term = meta.term,
            state_machine_index = covered,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Replaces the membership (and the transport's peers) wholesale.
    pub(super) fn set_membership(&mut self, ms: Membership) {
        for old in self.membership.members() {
            if ms.get(old.id).is_none() {
                self.transport.remove_peer(old.id);
            }
        }
        for m in ms.members() {
            if m.id != self.raw.raft.id {
                self.transport.set_peer(m.id, m.peer_urls.clone());
            }
        }
        if ms.is_removed(self.raw.raft.id) {
            self.shared.removed.store(true, Relaxed);
        }
        self.membership = ms;
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner()) = self.membership.clone();
    }

    /// Takes committed entries on their way to the apply thread: raft and
    /// the membership take configuration changes here, in log order.
    pub(super) fn hand_over(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let id = EntryId {
                index: e.index,
                term: e.term,
            };
            let what = match e.get_entry_type() {
                EntryType::EntryNormal => match entry::decode(&e.data)? {
                    Payload::Empty => What::Empty { request: 0 },
                    Payload::Proposal { id: request, .. } => What::Proposal {
                        request,
                        data: e.data.slice(9..),
                    },
                    Payload::MemberUpdate {
                        id: request,
                        member,
                    } => {
                        let mut ms = self.membership.clone();
                        ms.update(&member);
                        self.set_membership(ms);
                        self.record_conf(e.index, None);
                        What::Membership {
                            request,
                            change: MembershipChange::Updated(member),
                        }
                    }
                },
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&e.data)
                        .map_err(|x| Error::Storage(format!("entry {}: {x}", e.index)))?;
                    self.conf_entry(&e, cc)?
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&e.data)
                        .map_err(|x| Error::Storage(format!("entry {}: {x}", e.index)))?;
                    let mut v2 = ConfChangeV2::default();
                    let mut c = raft::eraftpb::ConfChangeSingle::default();
                    c.set_change_type(cc.get_change_type());
                    c.node_id = cc.node_id;
                    v2.mut_changes().push(c);
                    self.conf_entry(&e, v2)?
                }
            };
            out.push(Committed {
                id,
                what,
                replay: e.index <= self.restored_through,
            });
        }
        if out.len() <= INLINE_APPLY_MAX && self.raw.raft.prs().iter().count() == 1 {
            // A one-member cluster: nothing waits on this thread's ticks, so
            // a small batch is applied here, saving two thread wake-ups
            // (there and back) on every request's path.
            match self.applier.apply_here(out, &self.shared.counters) {
                Ok(None) => return Ok(()),
                Ok(Some(answers)) => {
                    self.on_applied(answers.0)?;
                    crate::apply::answer(&self.shared.waiters, &self.shared.counters, answers);
                    return Ok(());
                }
                Err(back) => out = back,
            }
        }
        self.to_apply(ApplyTask::Entries(out))
    }

    /// Sends the apply thread a task.
    pub(super) fn to_apply(&self, task: ApplyTask) -> Result<()> {
        self.applier.sending();
        self.apply_tx
            .send(task)
            .map_err(|_| Error::Storage("the apply thread is gone".into()))
    }

    pub(super) fn record_conf(&mut self, index: u64, cs: Option<ConfState>) {
        let cs = cs.unwrap_or_else(|| self.conf_history.last().expect("never empty").1.clone());
        self.conf_history.push((index, cs, self.membership.clone()));
    }

    pub(super) fn conf_entry(&mut self, e: &Entry, cc: ConfChangeV2) -> Result<What> {
        let cs = self.raw.apply_conf_change(&cc)?;
        let (request, member) = if e.context.is_empty() {
            (0, None)
        } else {
            entry::decode_conf_context(&e.context)?
        };
        let mut ms = self.membership.clone();
        let mut change = None;
        for c in cc.get_changes() {
            let id = c.node_id;
            match c.get_change_type() {
                ConfChangeType::AddNode => {
                    if ms.get(id).is_some_and(|m| m.is_learner) {
                        ms.promote(id);
                        change = Some(MembershipChange::Promoted(id));
                    } else if let Some(m) = member.clone().filter(|m| m.id == id) {
                        let mut m = m;
                        m.is_learner = false;
                        ms.add(m.clone());
                        change = Some(MembershipChange::Added(m));
                    }
                }
                ConfChangeType::AddLearnerNode => {
                    if let Some(m) = member.clone().filter(|m| m.id == id) {
                        let mut m = m;
                        m.is_learner = true;
                        ms.add(m.clone());
                        change = Some(MembershipChange::Added(m));
                    }
                }
                ConfChangeType::RemoveNode => {
                    ms.remove(id);
                    change = Some(MembershipChange::Removed(id));
                }
            }
        }
        tracing::info!(index = e.index, ?change, voters = ?cs.voters, learners = ?cs.learners, "applied a configuration change");
        self.set_membership(ms);
        self.record_conf(e.index, Some(cs));
        Ok(match change {
            Some(change) => What::Membership { request, change },
            None => What::Empty { request },
        })
    }
}
