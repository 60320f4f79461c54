//! The driver: the one thread that owns raft-rs's `RawNode`, the WAL and the
//! in-memory log, and turns raft's `Ready`s into I/O.
//!
//! ## One `Ready`, in raft's required order
//!
//! 1. Soft state: note leader changes (reads in flight fail with
//!    "leader changed"; a leadership transfer may complete).
//! 2. Send `messages()` at once. On the leader these are appends, sent in
//!    parallel with its own fsync; raft-rs never puts a vote or a
//!    follower's acknowledgement here.
//! 3. A snapshot from the leader: the apply thread replaces the state
//!    machine with it first (after everything queued before), then its
//!    marker goes into this Ready's WAL write.
//! 4. Hand committed entries to the apply thread (they are durable here
//!    already); configuration changes are taken by raft and the membership
//!    on the way.
//! 5. Persist entries and hard state: ONE WAL submission, ONE fdatasync.
//! 6. Then send `persisted_messages()` — votes and acknowledgements leave
//!    only once what they promise is on disk.
//! 7. `advance_append`, then the light ready: commit index, more messages,
//!    more committed entries.
//!
//! Proposals queued while the WAL syncs are all taken into the next Ready:
//! that is the group commit.
//!
//! What happens to committed entries — applying, configuration changes,
//! snapshots received, log compaction — is in `committed`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use cairn_wal::{HardState as WalHardState, Record, SnapshotMarker, Wal};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
    MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use crate::apply::{
    ApplyTask, Committed, EntryId, InlineApply, MembershipChange, Report, SnapshotSource, What,
};
use crate::entry::{self, Payload};
use crate::error::{Error, Result};
use crate::member::Membership;
use crate::node::{NodeConfig, Role, Shared};
use crate::recover::Recovered;
use crate::storage::{self, LogStorage, SnapshotPoint};
use crate::transport::Transport;

mod committed;

/// What the driver is asked to do.
pub(crate) enum Input {
    Propose {
        data: Vec<u8>,
        request: u64,
    },
    ConfChange {
        cc: ConfChangeV2,
        context: Vec<u8>,
        request: u64,
        /// A learner to check is caught up before promoting it.
        promote_check: Option<u64>,
    },
    ReadIndex(oneshot::Sender<Result<u64>>),
    TransferLeader {
        to: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Messages(Vec<Message>),
    SnapshotReceived {
        msg: Message,
        file: PathBuf,
    },
    Unreachable(u64),
    /// A peer refused our connection, saying why.
    Refused {
        peer: u64,
        reason: String,
    },
    SnapshotSent {
        peer: u64,
        ok: bool,
    },
    Apply(Report),
    Stop,
}

/// ReadIndex rounds: requests queue until the round in flight is answered,
/// then all go in the next one.
#[derive(Default)]
struct Reads {
    queued: Vec<oneshot::Sender<Result<u64>>>,
    inflight: Option<Inflight>,
    /// Confirmed read indexes waiting for the apply thread, each reader with
    /// its deadline.
    waiting: BTreeMap<u64, Vec<(Instant, ReadReply)>>,
    next_ctx: u64,
}

struct Inflight {
    ctx: u64,
    waiters: Vec<oneshot::Sender<Result<u64>>>,
    started: Instant,
    sent: Instant,
}

type ReadReply = oneshot::Sender<Result<u64>>;

/// How often an unanswered ReadIndex is asked again.
const READ_RETRY: Duration = Duration::from_millis(500);
/// The most committed entries the driver applies itself (one-member
/// clusters only, and only while the apply thread is idle); larger batches
/// go to the apply thread, so the next WAL write overlaps their applying.
const INLINE_APPLY_MAX: usize = 16;
/// Inputs handled between two looks at the clock.
const INPUT_BATCH: usize = 4096;

pub(crate) struct Driver<O> {
    raw: RawNode<LogStorage>,
    storage: LogStorage,
    wal: Arc<Wal>,
    transport: Transport,
    rx: Receiver<Input>,
    self_tx: Sender<Input>,
    apply_tx: Sender<ApplyTask>,
    /// The state machine, for batches applied on this thread.
    applier: Arc<dyn InlineApply<O>>,
    shared: Arc<Shared<O>>,
    source: Arc<dyn SnapshotSource>,
    heartbeat: Duration,
    election_ticks: usize,
    snap_dir: PathBuf,
    snapshot_count: u64,
    catchup_entries: u64,
    request_timeout: Duration,
    /// Applied index reported by the apply thread.
    applied: u64,
    /// Index of the last WAL snapshot marker.
    last_marker: u64,
    /// What the state machine's last restore covered: entries up to it are
    /// replays.
    restored_through: u64,
    syncing: bool,
    /// Configuration and membership after each change handed over since the
    /// last marker, the first one as of the marker.
    conf_history: Vec<(u64, ConfState, Membership)>,
    membership: Membership,
    received: HashMap<u64, PathBuf>,
    reads: Reads,
    transfer: Option<(u64, oneshot::Sender<Result<()>>, Instant)>,
    leader: u64,
    hs_dirty: bool,
    bootstrap: Vec<Record>,
    /// Removed while leading: when to stop handing leadership over.
    leaving: Option<Instant>,
}

impl<O: Send + 'static> Driver<O> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &NodeConfig,
        rec: Recovered,
        wal: Arc<Wal>,
        transport: Transport,
        rx: Receiver<Input>,
        self_tx: Sender<Input>,
        (apply_tx, applier): (Sender<ApplyTask>, Arc<dyn InlineApply<O>>),
        shared: Arc<Shared<O>>,
        source: Arc<dyn SnapshotSource>,
    ) -> Result<Driver<O>> {
        let ticks = (cfg.election_timeout.as_millis() / cfg.heartbeat.as_millis().max(1)).max(2);
        let raft_cfg = raft::Config {
            id: cfg.id,
            election_tick: ticks as usize,
            heartbeat_tick: 1,
            applied: rec.marker_index,
            max_size_per_msg: cfg.max_size_per_msg,
            max_inflight_msgs: cfg.max_inflight_msgs,
            check_quorum: cfg.check_quorum,
            pre_vote: cfg.pre_vote,
            ..raft::Config::default()
        };
        raft_cfg.validate()?;
        let storage = LogStorage::new(rec.core);
        let logger = crate::logger::logger(cfg.id);
        let raw = RawNode::new(&raft_cfg, storage.clone(), &logger)?;
        Ok(Driver {
            raw,
            storage,
            wal,
            transport,
            rx,
            self_tx,
            apply_tx,
            applier,
            shared,
            source,
            heartbeat: cfg.heartbeat,
            election_ticks: ticks as usize,
            snap_dir: cfg.snap_dir.clone(),
            snapshot_count: cfg.snapshot_count.max(1),
            catchup_entries: cfg.catchup_entries,
            request_timeout: cfg.request_timeout,
            applied: rec.marker_index,
            last_marker: rec.marker_index,
            restored_through: 0,
            syncing: false,
            conf_history: vec![(rec.marker_index, rec.conf_state, rec.membership.clone())],
            membership: rec.membership,
            received: HashMap::new(),
            reads: Reads::default(),
            transfer: None,
            leader: 0,
            hs_dirty: false,
            bootstrap: rec.bootstrap,
            leaving: None,
        })
    }

    /// The loop; returns when stopped, removed, or failed.
    pub fn run(mut self) {
        // Whatever happens — an error, or a panic inside raft-rs — every
        // waiter is answered and the transport stops.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_inner()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "raft node stopped on an error"),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                tracing::error!(panic = msg, "raft node stopped on a panic");
            }
        }
        self.shared.stopped.store(true, Relaxed);
        let reason = if self.shared.removed.load(Relaxed) {
            Error::Removed
        } else {
            Error::Stopped
        };
        self.shared.waiters.fail_all(reason.clone());
        self.fail_reads(reason.clone(), true);
        if let Some((_, tx, _)) = self.transfer.take() {
            let _ = tx.send(Err(reason));
        }
        self.transport.shutdown();
    }

    fn run_inner(&mut self) -> Result<()> {
        if !self.bootstrap.is_empty() {
            self.wal.append(std::mem::take(&mut self.bootstrap))?;
        }
        // etcd's initial election tick advance: a sole voter campaigns at
        // once; otherwise most of an election timeout is skipped, so a new
        // cluster elects its first leader within about one timeout.
        let voters = self.raw.raft.prs().conf().voters().ids();
        let only_me = voters.len() == 1 && voters.contains(self.raw.raft.id);
        if only_me {
            self.raw.campaign()?;
        } else if voters.contains(self.raw.raft.id) {
            for _ in 0..self.election_ticks.saturating_sub(2) {
                self.raw.tick();
            }
        }
        let mut next_tick = Instant::now() + self.heartbeat;
        loop {
            let now = Instant::now();
            let wait = next_tick.saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(i) => {
                    if !self.handle(i)? {
                        return Ok(());
                    }
                    for _ in 0..INPUT_BATCH {
                        match self.rx.try_recv() {
                            Ok(i) => {
                                if !self.handle(i)? {
                                    return Ok(());
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + self.heartbeat;
                self.on_tick(now);
            }
            self.start_read();
            self.on_ready()?;
            self.publish_status();
            if self.shared.removed.load(Relaxed) && !self.handing_over(now) {
                tracing::warn!("this member was removed from the cluster; stopping");
                crate::node::mark_removed(&self.snap_dir)?;
                return Ok(());
            }
        }
    }

    /// A leader that applied its own removal goes on leading (raft-rs, like
    /// etcd's raft, leaves it so), and if it just stopped, the others would
    /// wait out an election timeout before electing a new leader. Instead it
    /// first hands leadership to the most caught-up voter, and stops once
    /// that is done or an election timeout has passed. True while the
    /// handover is under way.
    fn handing_over(&mut self, now: Instant) -> bool {
        if self.raw.raft.state != StateRole::Leader {
            return false;
        }
        if let Some(deadline) = self.leaving {
            return now < deadline;
        }
        let me = self.raw.raft.id;
        let prs = self.raw.raft.prs();
        let best = prs
            .conf()
            .voters()
            .ids()
            .iter()
            .filter(|&id| id != me)
            .max_by_key(|&id| (prs.get(id).map_or(0, |p| p.matched), std::cmp::Reverse(id)));
        let Some(to) = best else {
            return false;
        };
        tracing::info!(
            to = %crate::ids::format_id(to),
            "this leader was removed; handing leadership over before stopping"
        );
        self.raw.transfer_leader(to);
        self.leaving = Some(now + self.heartbeat * self.election_ticks as u32);
        true
    }

    /// Handles one input; false to stop.
    fn handle(&mut self, i: Input) -> Result<bool> {
        match i {
            Input::Propose { data, request } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    self.fail(request, Error::NoLeader);
                } else if let Err(e) = self.raw.propose(Vec::new(), data) {
                    self.fail(request, e.into());
                } else {
                    self.place(request);
                }
            }
            Input::ConfChange {
                cc,
                context,
                request,
                promote_check,
            } => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    self.fail(request, Error::NoLeader);
                } else if let Some(e) = promote_check.and_then(|id| self.promote_refusal(id)) {
                    self.fail(request, e);
                } else if let Err(e) = self.raw.propose_conf_change(context, cc) {
                    self.fail(request, e.into());
                } else {
                    self.place(request);
                }
            }
            Input::ReadIndex(tx) => {
                if self.raw.raft.leader_id == raft::INVALID_ID {
                    let _ = tx.send(Err(Error::NoLeader));
                } else {
                    self.reads.queued.push(tx);
                }
            }
            Input::TransferLeader { to, reply } => self.transfer_leader(to, reply),
            Input::Messages(msgs) => {
                for m in msgs {
                    // Snapshots arrive only on a snapshot stream, with their
                    // data; one inside a message batch has none. A removed
                    // member is not heard, except a removed leader handing
                    // leadership over (see `handing_over`).
                    let removed = self.membership.is_removed(m.from)
                        && m.get_msg_type() != MessageType::MsgTimeoutNow;
                    if removed || m.get_msg_type() == MessageType::MsgSnapshot {
                        continue;
                    }
                    if let Err(e) = self.raw.step(m) {
                        tracing::debug!(error = %e, "dropped a raft message");
                    }
                }
            }
            Input::SnapshotReceived { msg, file } => {
                let index = msg.get_snapshot().get_metadata().index;
                if let Some(old) = self.received.insert(index, file) {
                    let _ = std::fs::remove_file(old);
                }
                if let Err(e) = self.raw.step(msg) {
                    tracing::warn!(error = %e, index, "a received snapshot was refused");
                }
            }
            Input::Unreachable(peer) => self.raw.report_unreachable(peer),
            Input::Refused { peer, reason } => {
                // Members refuse a removed member's connections with this
                // reason; it is how a member learns it was removed when the
                // entry removing it never reached it.
                if reason.contains(&crate::node::removed_reason(self.raw.raft.id)) {
                    tracing::warn!(peer = %crate::ids::format_id(peer), %reason, "a peer says this member was removed");
                    self.shared.removed.store(true, Relaxed);
                }
            }
            Input::SnapshotSent { peer, ok } => {
                if ok {
                    self.shared.counters.snapshots_sent.fetch_add(1, Relaxed);
                }
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
            Input::Apply(Report::Applied(index)) => self.on_applied(index)?,
            Input::Apply(Report::Synced(r)) => {
                self.syncing = false;
                match r {
                    Ok(durable) => self.compact(durable)?,
                    Err(e) => {
                        return Err(Error::Storage(format!(
                            "making the state machine durable: {e}"
                        )));
                    }
                }
            }
            Input::Stop => {
                self.checkpoint_on_stop();
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A clean stop makes the state machine durable and writes a marker
    /// there, so the next start replays nothing it already holds.
    fn checkpoint_on_stop(&mut self) {
        if self.applied <= self.last_marker || self.to_apply(ApplyTask::Sync).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Input::Apply(Report::Applied(i))) => {
                    let _ = self.on_applied(i);
                }
                Ok(Input::Apply(Report::Synced(Ok(durable)))) => {
                    if let Err(e) = self.compact(durable) {
                        tracing::warn!(error = %e, "writing a snapshot marker at stop");
                    }
                    return;
                }
                Ok(Input::Apply(Report::Synced(Err(e)))) => {
                    tracing::warn!(error = %e, "making the state machine durable at stop");
                    return;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    fn fail(&self, request: u64, e: Error) {
        if self.shared.waiters.complete(request, Err(e)) {
            return;
        }
        self.shared.counters.failed.fetch_add(1, Relaxed);
    }

    /// A proposal just appended by the leader: remember its index, so that
    /// another entry applied there tells its proposer it was lost.
    fn place(&self, request: u64) {
        if self.raw.raft.state == StateRole::Leader {
            self.shared
                .waiters
                .place(request, self.raw.raft.raft_log.last_index());
        }
    }

    /// etcd promotes a learner only when it has 90 % of the leader's log.
    fn promote_refusal(&self, id: u64) -> Option<Error> {
        if self.raw.raft.state != StateRole::Leader {
            return Some(Error::NotLeader);
        }
        let leader_match = self.raw.raft.raft_log.last_index();
        match self.raw.raft.prs().get(id) {
            Some(p) if (p.matched as f64) >= (leader_match as f64) * 0.9 => None,
            Some(_) => Some(Error::LearnerNotReady),
            None => Some(Error::MemberNotFound),
        }
    }

    fn transfer_leader(&mut self, to: u64, reply: oneshot::Sender<Result<()>>) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = reply.send(Err(Error::NotLeader));
            return;
        }
        if to == self.raw.raft.id {
            let _ = reply.send(Ok(()));
            return;
        }
        match self.membership.get(to) {
            Some(m) if !m.is_learner => {}
            _ => {
                let _ = reply.send(Err(Error::BadTransferee));
                return;
            }
        }
        self.raw.transfer_leader(to);
        if let Some((_, old, _)) = self.transfer.replace((to, reply, Instant::now())) {
            let _ = old.send(Err(Error::LeaderChanged));
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let epoch = self.shared.epoch.load(Relaxed);
        let n = self.shared.waiters.expire(now, epoch);
        self.shared.counters.failed.fetch_add(n as u64, Relaxed);
        if let Some(inf) = &mut self.reads.inflight {
            if now.duration_since(inf.started) >= self.request_timeout {
                self.fail_reads(Error::Timeout, false);
            } else if now.duration_since(inf.sent) >= READ_RETRY {
                // Ask again under a new context; the old answer, if it
                // comes, is ignored.
                self.reads.next_ctx += 1;
                inf.ctx = self.reads.next_ctx;
                inf.sent = now;
                self.raw.read_index(inf.ctx.to_be_bytes().to_vec());
            }
        }
        // Reads whose index never got applied in time.
        for txs in self.reads.waiting.values_mut() {
            let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(txs)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            *txs = keep;
            for (_, tx) in late {
                let _ = tx.send(Err(Error::Timeout));
            }
        }
        self.reads.waiting.retain(|_, txs| !txs.is_empty());
        let timed_out = self
            .transfer
            .as_ref()
            .is_some_and(|(_, _, at)| now.duration_since(*at) >= self.request_timeout);
        if let Some((_, tx, _)) = self.transfer.take_if(|_| timed_out) {
            let _ = tx.send(Err(Error::Timeout));
        }
    }

    fn start_read(&mut self) {
        if self.reads.inflight.is_some() || self.reads.queued.is_empty() {
            return;
        }
        if self.raw.raft.leader_id == raft::INVALID_ID {
            for tx in self.reads.queued.drain(..) {
                let _ = tx.send(Err(Error::NoLeader));
            }
            return;
        }
        self.reads.next_ctx += 1;
        let ctx = self.reads.next_ctx;
        let now = Instant::now();
        self.reads.inflight = Some(Inflight {
            ctx,
            waiters: std::mem::take(&mut self.reads.queued),
            started: now,
            sent: now,
        });
        self.raw.read_index(ctx.to_be_bytes().to_vec());
    }

    fn on_read_state(&mut self, ctx: &[u8], index: u64) {
        let Ok(ctx) = <[u8; 8]>::try_from(ctx).map(u64::from_be_bytes) else {
            return;
        };
        if self.reads.inflight.as_ref().is_none_or(|i| i.ctx != ctx) {
            return;
        }
        let inf = self.reads.inflight.take().expect("checked");
        if self.applied >= index {
            for tx in inf.waiters {
                let _ = tx.send(Ok(index));
            }
        } else {
            let deadline = inf.started + self.request_timeout;
            self.reads
                .waiting
                .entry(index)
                .or_default()
                .extend(inf.waiters.into_iter().map(|tx| (deadline, tx)));
        }
    }

    /// Fails the round in flight (and, if `all`, everything queued and
    /// waiting too).
    fn fail_reads(&mut self, e: Error, all: bool) {
        if let Some(inf) = self.reads.inflight.take() {
            for tx in inf.waiters {
                let _ = tx.send(Err(e.clone()));
            }
        }
        if all {
            for tx in self.reads.queued.drain(..) {
                let _ = tx.send(Err(e.clone()));
            }
            for (_, txs) in std::mem::take(&mut self.reads.waiting) {
                for (_, tx) in txs {
                    let _ = tx.send(Err(e.clone()));
                }
            }
        }
    }

    /// Answers the reads whose index has been applied.
    fn release_reads(&mut self) {
        while let Some((&i, _)) = self.reads.waiting.first_key_value() {
            if i > self.applied {
                break;
            }
            let (i, txs) = self.reads.waiting.pop_first().expect("checked");
            for (_, tx) in txs {
                let _ = tx.send(Ok(i));
            }
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        if leader != self.leader {
            if self.leader != 0 || leader != 0 {
                self.shared.epoch.fetch_add(1, Relaxed);
            }
            if leader != 0 {
                self.shared.counters.leader_changes.fetch_add(1, Relaxed);
            }
            tracing::info!(
                leader = %crate::ids::format_id(leader),
                previous = %crate::ids::format_id(self.leader),
                term = self.raw.raft.term,
                "raft leader changed"
            );
            self.leader = leader;
            self.fail_reads(Error::LeaderChanged, false);
            if let Some((_, tx, _)) = self.transfer.take_if(|(to, _, _)| *to == leader) {
                let _ = tx.send(Ok(()));
            }
        }
        let me = self.raw.raft.id;
        let lost = |(to, _, _): &mut (u64, _, _)| {
            role != StateRole::Leader && *to != leader && leader != 0 && leader != me
        };
        if let Some((_, tx, _)) = self.transfer.take_if(lost) {
            let _ = tx.send(Err(Error::LeaderChanged));
        }
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let role = match r.state {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        };
        let mut s = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        s.leader = r.leader_id;
        s.term = r.term;
        s.commit = r.raft_log.committed;
        s.applied = self.applied;
        s.role = role;
        s.is_learner = self.membership.get(r.id).is_some_and(|m| m.is_learner);
        s.snapshot_index = self.last_marker;
        self.shared
            .counters
            .committed
            .store(r.raft_log.committed, Relaxed);
    }

    /// Sends messages; snapshots go on their own thread, which opens a view
    /// of the state machine and streams it.
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let (snaps, normal): (Vec<Message>, Vec<Message>) = msgs
            .into_iter()
            .partition(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        if !normal.is_empty() {
            self.transport.send(normal);
        }
        for m in snaps {
            let source = self.source.clone();
            let transport = self.transport.clone();
            let tx = self.self_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("cairn-raft-snap".into())
                .spawn(move || {
                    let want = m.get_snapshot().get_metadata().index;
                    let peer = m.to;
                    match source.open() {
                        Ok((at, data)) if at >= want => transport.send_snapshot(m, data),
                        Ok((at, _)) => {
                            tracing::warn!(
                                at,
                                want,
                                "state machine view is behind the snapshot index"
                            );
                            let _ = tx.send(Input::SnapshotSent { peer, ok: false });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "opening a state machine snapshot");
                            let _ = tx.send(Input::SnapshotSent { peer, ok: false });
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "spawning a snapshot sender");
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut rd = self.raw.ready();
        if let Some(ss) = rd.ss() {
            let (leader, role) = (ss.leader_id, ss.raft_state);
            self.on_soft_state(leader, role);
        }
        self.send(rd.take_messages());
        let mut records = Vec::new();
        let mut must_sync = rd.must_sync();
        // A snapshot from the leader: its marker goes into the WAL first and
        // the state machine takes its data after (its file stays in the
        // snapshot directory until then, so a crash in between restores it
        // again at start); entries committed with it wait for the state
        // machine.
        let snapshot = if rd.snapshot().is_empty() {
            None
        } else {
            let snap = rd.snapshot().clone();
            let file = self.take_received(&snap)?;
            let membership = Membership::decode(&snap.data)?;
            let meta = snap.get_metadata();
            records.push(Record::Snapshot(SnapshotMarker {
                index: meta.index,
                term: meta.term,
                data: storage::encode_marker(meta.get_conf_state(), &membership),
            }));
            self.storage.wl().apply_snapshot(meta);
            self.hs_dirty = true;
            must_sync = true;
            Some((snap, file, membership))
        };
        let mut committed = rd.take_committed_entries();
        if snapshot.is_none() {
            self.hand_over(std::mem::take(&mut committed))?;
        }
        let entries = rd.take_entries();
        for e in &entries {
            records.push(Record::entry(e.index, e.term, storage::entry_to_wal(e)));
        }
        if let Some(hs) = rd.hs() {
            self.storage.wl().hard_state = hs.clone();
            self.hs_dirty = true;
        }
        if self.hs_dirty && (must_sync || !records.is_empty()) {
            records.push(wal_hs(&self.storage.rl().hard_state));
            self.hs_dirty = false;
        }
        if !records.is_empty() {
            if must_sync {
                self.wal.append(records)?;
            } else {
                // Only the commit index moved: it need not be durable
                // before anything is sent.
                drop(self.wal.submit(records)?);
            }
        }
        let installed = match snapshot {
            Some((snap, file, membership)) => {
                self.restore(&snap, file, membership)?;
                self.hand_over(committed)?;
                Some(snap.get_metadata().index)
            }
            None => None,
        };
        self.storage.wl().append(&entries)?;
        for rs in rd.take_read_states() {
            self.on_read_state(&rs.request_ctx, rs.index);
        }
        self.send(rd.take_persisted_messages());
        let mut light = self.raw.advance_append(rd);
        if let Some(index) = installed {
            // raft-rs does not move its applied index to an installed
            // snapshot; until told, it would read entries from below it.
            self.raw.advance_apply_to(index);
        }
        if let Some(c) = light.commit_index() {
            self.storage.wl().hard_state.commit = c;
            self.hs_dirty = true;
        }
        self.send(light.take_messages());
        self.hand_over(light.take_committed_entries())?;
        Ok(())
    }
}

pub(crate) fn wal_hs(hs: &HardState) -> Record {
    Record::HardState(WalHardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    })
}
