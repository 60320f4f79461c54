//! The raft node's public face: start a member, propose, read, change the
//! membership, transfer leadership, and look at its state.
//!
//! Three threads do the work: the **driver** owns raft-rs's `RawNode`, the
//! WAL and the in-memory log ([`crate::driver`]); the **apply thread** owns
//! the state machine ([`crate::apply`]); the **transport** runs on the given
//! tokio runtime ([`crate::transport`]). Callers talk to the driver through a
//! channel and wait on one-shot replies, so every method here is cheap and
//! none blocks raft.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_wal::Wal;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Message};
use tokio::sync::oneshot;

use crate::apply::{self, Outcome, SnapshotSource, StateMachine, Waiters};
use crate::driver::{self, Input};
use crate::entry::{self, IdGenerator};
use crate::error::{Error, Result};
use crate::ids;
use crate::member::{self, Member, Membership};
use crate::transport::{
    self, Acceptor, Connector, PeerHealth, PlainTcp, Transport, TransportConfig,
};

/// How a member runs. [`NodeConfig::new`] gives etcd's defaults.
pub struct NodeConfig {
    pub id: u64,
    pub cluster_id: u64,
    /// `--initial-cluster-token`: member ids of runtime additions derive
    /// from it.
    pub cluster_token: String,
    /// The members of a new cluster (used only when the WAL is empty).
    pub initial_members: Vec<Member>,
    /// `--initial-cluster-state existing`: start knowing no configuration
    /// and learn it from the leader.
    pub join_existing: bool,
    /// `--heartbeat-interval` (100 ms): one raft tick.
    pub heartbeat: Duration,
    /// `--election-timeout` (1000 ms), a multiple of the heartbeat.
    pub election_timeout: Duration,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// `--snapshot-count` (100,000): applied entries between log compactions.
    pub snapshot_count: u64,
    /// Entries kept in memory behind a compaction for slow followers (5,000).
    pub catchup_entries: u64,
    /// How long a proposal or read waits for its outcome (etcd: 5 s plus two
    /// election timeouts).
    pub request_timeout: Duration,
    /// `--strict-reconfig-check`: refuse membership changes that would leave
    /// too few connected voters.
    pub strict_reconfig_check: bool,
    /// `--force-new-cluster`: restart as the only member, keeping the data
    /// (see [`driver::recover`]).
    pub force_new_cluster: bool,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    /// Where received snapshots land before the state machine takes them.
    pub snap_dir: PathBuf,
    /// Already bound peer listeners.
    pub peer_listeners: Vec<TcpListener>,
    pub transport: Option<TransportConfig>,
    /// How peer connections are made and accepted (plain TCP by default;
    /// TLS, or fault injection in tests, plug in here).
    pub connector: Option<Arc<dyn Connector>>,
    pub acceptor: Option<Arc<dyn Acceptor>>,
}

impl NodeConfig {
    pub fn new(id: u64, cluster_id: u64, snap_dir: impl Into<PathBuf>) -> NodeConfig {
        let heartbeat = Duration::from_millis(100);
        let election_timeout = Duration::from_millis(1000);
        NodeConfig {
            id,
            cluster_id,
            cluster_token: "etcd-cluster".into(),
            initial_members: Vec::new(),
            join_existing: false,
            heartbeat,
            election_timeout,
            pre_vote: true,
            check_quorum: true,
            snapshot_count: 100_000,
            catchup_entries: 5_000,
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
            strict_reconfig_check: true,
            force_new_cluster: false,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 512,
            snap_dir: snap_dir.into(),
            peer_listeners: Vec::new(),
            transport: None,
            connector: None,
            acceptor: None,
        }
    }
}

/// A member's raft role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    #[default]
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A member's raft state, as of the driver's last loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub role: Role,
    pub is_learner: bool,
    /// The last log compaction point (the WAL's last snapshot marker).
    pub snapshot_index: u64,
}

/// Counters for metrics (etcd's `etcd_server_proposals_*` and
/// `etcd_server_leader_changes_seen_total`).
#[derive(Debug, Default)]
pub struct Counters {
    pub committed: AtomicU64,
    pub applied: AtomicU64,
    pub failed: AtomicU64,
    pub leader_changes: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub snapshots_sent: AtomicU64,
}

/// A snapshot of [`Counters`] plus the pending count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metrics {
    pub proposals_committed: u64,
    pub proposals_applied: u64,
    pub proposals_pending: u64,
    pub proposals_failed: u64,
    pub leader_changes: u64,
    pub has_leader: bool,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Snapshots sent to followers and acknowledged.
    pub snapshots_sent: u64,
}

pub(crate) struct Shared<O> {
    pub id: u64,
    pub cluster_id: u64,
    pub cluster_token: String,
    pub waiters: Waiters<O>,
    pub ids: IdGenerator,
    pub status: Mutex<Status>,
    pub members: RwLock<Membership>,
    pub counters: Counters,
    /// Leader changes seen (a waiter's epoch tells whether leadership changed
    /// while it waited).
    pub epoch: AtomicU64,
    pub stopped: AtomicBool,
    pub removed: AtomicBool,
    pub request_timeout: Duration,
    pub strict_reconfig_check: bool,
}

impl<O> Shared<O> {
    pub fn membership(&self) -> std::sync::RwLockReadGuard<'_, Membership> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running member.
pub struct Node<O> {
    tx: Sender<Input>,
    shared: Arc<Shared<O>>,
    transport: Transport,
    wal: Arc<Wal>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The transport's way into the driver.
struct ToDriver<O> {
    tx: Mutex<Sender<Input>>,
    shared: Arc<Shared<O>>,
}

impl<O: Send + 'static> transport::Handler for ToDriver<O> {
    fn on_messages(&self, msgs: Vec<Message>) {
        let _ = self.send(Input::Messages(msgs));
    }
    fn on_snapshot(&self, msg: Message, file: PathBuf) {
        let _ = self.send(Input::SnapshotReceived { msg, file });
    }
    fn on_unreachable(&self, peer: u64) {
        let _ = self.send(Input::Unreachable(peer));
    }
    fn on_snapshot_sent(&self, peer: u64, ok: bool) {
        let _ = self.send(Input::SnapshotSent { peer, ok });
    }
    fn on_refused(&self, peer: u64, reason: &str) {
        let _ = self.send(Input::Refused {
            peer,
            reason: reason.to_string(),
        });
    }
    fn info(&self) -> Vec<u8> {
        self.shared.membership().encode()
    }
    fn accept_from(&self, peer: u64) -> std::result::Result<(), String> {
        let ms = self.shared.membership();
        if ms.is_removed(peer) {
            return Err(removed_reason(peer));
        }
        Ok(())
    }
}

impl<O> ToDriver<O> {
    fn send(&self, i: Input) -> std::result::Result<(), ()> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(i)
            .map_err(|_| ())
    }
}

/// Left in the snapshot directory by a member that learned it was removed,
/// so that it refuses to start again.
const REMOVED_FILE: &str = "removed";

pub(crate) fn mark_removed(snap_dir: &std::path::Path) -> Result<()> {
    let p = snap_dir.join(REMOVED_FILE);
    let io = |e: std::io::Error| Error::Storage(format!("writing {}: {e}", p.display()));
    std::fs::write(&p, b"this member was removed from the cluster\n").map_err(io)?;
    std::fs::File::open(&p)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::File::open(snap_dir)
        .and_then(|f| f.sync_all())
        .map_err(io)
}

/// What members answer a removed member that tries to connect.
pub(crate) fn removed_reason(id: u64) -> String {
    format!(
        "member {} has been permanently removed from the cluster",
        ids::format_id(id)
    )
}

/// A received snapshot file: `<from>-<term>-<index>-<random>.snap`, hex.
fn snapshot_file_id(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let mut parts = stem.split('-');
    let _from = parts.next()?;
    let term = u64::from_str_radix(parts.next()?, 16).ok()?;
    let index = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some((term, index))
}

/// The WAL's last marker is a leader's snapshot the state machine had not
/// made its own when the member stopped (the marker is written first): take
/// it from its file again. Older snapshot files are removed.
fn restore_if_behind<S: StateMachine>(
    dir: &std::path::Path,
    sm: &mut S,
    rec: &crate::recover::Recovered,
) -> Result<()> {
    let files: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::Storage(format!("reading {}: {e}", dir.display())))?
        .filter_map(|d| d.ok())
        .filter_map(|d| {
            let name = d.file_name().into_string().ok()?;
            let (term, index) = snapshot_file_id(&name)?;
            Some((term, index, d.path()))
        })
        .collect();
    // Index 1 is a new cluster's initial configuration: no data.
    if rec.marker_index > 1 && sm.durable_index() < rec.marker_index {
        let (_, _, file) = files
            .iter()
            .find(|(t, i, _)| *t == rec.marker_term && *i == rec.marker_index)
            .ok_or_else(|| {
                Error::Storage(format!(
                    "the state machine holds index {} but the WAL's snapshot is at {}, and its file is not in {}",
                    sm.durable_index(),
                    rec.marker_index,
                    dir.display()
                ))
            })?;
        let covered = sm
            .restore(file)
            .map_err(|e| Error::Storage(format!("restoring {}: {e}", file.display())))?;
        if covered < rec.marker_index {
            return Err(Error::Storage(format!(
                "{} covers index {covered}, the WAL's snapshot is at {}",
                file.display(),
                rec.marker_index
            )));
        }
        tracing::info!(index = rec.marker_index, file = %file.display(), "restored the state machine from the snapshot the WAL names");
    }
    for (_, index, f) in files {
        if index <= sm.durable_index() && f.exists() {
            let _ = std::fs::remove_file(f);
        }
    }
    Ok(())
}

/// Votes needed among `n` voters.
fn quorum(n: usize) -> usize {
    n / 2 + 1
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl<O: Send + 'static> Node<O> {
    /// Starts a member over `wal` (created or recovered by the caller, who
    /// checked it belongs to this member): recovers raft's state from it,
    /// starts the transport on `rt`, the driver and the apply thread.
    pub fn start<S: StateMachine<Output = O>>(
        mut cfg: NodeConfig,
        wal: Wal,
        sm: S,
        source: Arc<dyn SnapshotSource>,
        rt: tokio::runtime::Handle,
    ) -> Result<Node<O>> {
        std::fs::create_dir_all(&cfg.snap_dir)
            .map_err(|e| Error::Storage(format!("creating {}: {e}", cfg.snap_dir.display())))?;
        if cfg.snap_dir.join(REMOVED_FILE).exists() {
            return Err(Error::Removed);
        }
        let mut sm = sm;
        let recovered = crate::recover::recover(&cfg, &wal, sm.durable_index())?;
        if recovered.membership.is_removed(cfg.id) {
            return Err(Error::Removed);
        }
        restore_if_behind(&cfg.snap_dir, &mut sm, &recovered)?;
        let shared = Arc::new(Shared {
            id: cfg.id,
            cluster_id: cfg.cluster_id,
            cluster_token: cfg.cluster_token.clone(),
            waiters: Waiters::new(),
            ids: IdGenerator::new(cfg.id),
            status: Mutex::new(Status {
                id: cfg.id,
                ..Status::default()
            }),
            members: RwLock::new(recovered.membership.clone()),
            counters: Counters::default(),
            epoch: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            request_timeout: cfg.request_timeout,
            strict_reconfig_check: cfg.strict_reconfig_check,
        });
        let (tx, rx) = channel();
        let tcfg = cfg
            .transport
            .clone()
            .unwrap_or_else(|| TransportConfig::new(cfg.cluster_id, cfg.id, cfg.snap_dir.clone()));
        let handler = Arc::new(ToDriver {
            tx: Mutex::new(tx.clone()),
            shared: shared.clone(),
        });
        let listeners = std::mem::take(&mut cfg.peer_listeners);
        let transport = Transport::start(
            tcfg,
            listeners,
            handler,
            cfg.connector.clone().unwrap_or_else(|| Arc::new(PlainTcp)),
            cfg.acceptor.clone().unwrap_or_else(|| Arc::new(PlainTcp)),
            rt,
        )
        .map_err(|e| Error::Storage(format!("starting the peer transport: {e}")))?;
        for m in recovered.membership.members() {
            if m.id != cfg.id {
                transport.set_peer(m.id, m.peer_urls.clone());
            }
        }
        let (apply_tx, apply_rx) = channel();
        let applier = Arc::new(apply::Applier::new(sm));
        let apply_thread = {
            let shared = shared.clone();
            let tx = tx.clone();
            let applier = applier.clone();
            std::thread::Builder::new()
                .name("cairn-raft-apply".into())
                .spawn(move || {
                    apply::run(
                        &applier,
                        apply_rx,
                        |r| {
                            let _ = tx.send(Input::Apply(r));
                        },
                        &shared.waiters,
                        &shared.counters,
                    )
                })
                .map_err(|e| Error::Storage(format!("spawning the apply thread: {e}")))?
        };
        let wal = Arc::new(wal);
        let driver = driver::Driver::new(
            &cfg,
            recovered,
            wal.clone(),
            transport.clone(),
            rx,
            tx.clone(),
            (apply_tx, applier),
            shared.clone(),
            source,
        )?;
        let driver_thread = std::thread::Builder::new()
            .name("cairn-raft".into())
            .spawn(move || driver.run())
            .map_err(|e| Error::Storage(format!("spawning the raft thread: {e}")))?;
        Ok(Node {
            tx,
            shared,
            transport,
            wal,
            threads: Mutex::new(vec![driver_thread, apply_thread]),
        })
    }

    pub fn id(&self) -> u64 {
        self.shared.id
    }

    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id
    }

    fn check_running(&self) -> Result<()> {
        if self.shared.removed.load(Relaxed) {
            return Err(Error::Removed);
        }
        if self.shared.stopped.load(Relaxed) {
            return Err(Error::Stopped);
        }
        Ok(())
    }

    fn send(&self, i: Input) -> Result<()> {
        self.tx.send(i).map_err(|_| Error::Stopped)
    }

    fn register(&self) -> (u64, oneshot::Receiver<Result<Outcome<O>>>) {
        let id = self.shared.ids.next();
        let rx = self.shared.waiters.register(
            id,
            Instant::now() + self.shared.request_timeout,
            self.shared.epoch.load(Relaxed),
        );
        (id, rx)
    }

    async fn wait(rx: oneshot::Receiver<Result<Outcome<O>>>) -> Result<Outcome<O>> {
        rx.await.unwrap_or(Err(Error::Stopped))
    }

    /// Proposes `data` for the state machine and waits until it is applied
    /// (on this member), returning what the state machine answered.
    pub async fn propose(&self, data: &[u8]) -> Result<O> {
        self.check_running()?;
        let (id, rx) = self.register();
        self.send(Input::Propose {
            data: entry::encode(entry::KIND_PROPOSAL, id, data),
            request: id,
        })?;
        match Self::wait(rx).await? {
            Outcome::Output(o) => Ok(o),
            Outcome::Conf => Err(Error::Storage(
                "a proposal answered as a configuration change".into(),
            )),
        }
    }

    /// A linearizable read point: the leader's commit index as confirmed by
    /// a quorum (ReadIndex), returned once this member has applied it.
    /// Concurrent calls share one round.
    pub async fn read_index(&self) -> Result<u64> {
        self.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.send(Input::ReadIndex(tx))?;
        rx.await.unwrap_or(Err(Error::Stopped))
    }

    async fn conf_change(
        &self,
        changes: Vec<(ConfChangeType, u64)>,
        member: Option<&Member>,
        promote_check: Option<u64>,
    ) -> Result<Vec<Member>> {
        self.check_running()?;
        let (id, rx) = self.register();
        let mut cc = ConfChangeV2::default();
        for (t, node) in changes {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(t);
            c.node_id = node;
            cc.mut_changes().push(c);
        }
        self.send(Input::ConfChange {
            cc,
            context: entry::encode_conf_context(id, member),
            request: id,
            promote_check,
        })?;
        match Self::wait(rx).await? {
            Outcome::Conf => Ok(self.members()),
            Outcome::Output(_) => Err(Error::Storage(
                "a configuration change answered as a proposal".into(),
            )),
        }
    }

    fn connected_voters(&self, voters: &[u64]) -> usize {
        let active: Vec<u64> = self
            .transport
            .peers()
            .into_iter()
            .filter(|p| p.active_since.is_some())
            .map(|p| p.id)
            .collect();
        voters
            .iter()
            .filter(|&&v| v == self.shared.id || active.contains(&v))
            .count()
    }

    fn voters(&self) -> Vec<u64> {
        let ms = self.shared.membership();
        ms.members()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect()
    }

    /// Adds a member (a learner if asked) with these peer URLs; its id is
    /// derived as etcd derives it. Returns it and the members after.
    pub async fn add_member(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<(Member, Vec<Member>)> {
        self.check_running()?;
        if !member::valid_peer_urls(&peer_urls) {
            return Err(Error::InvalidUrls);
        }
        let m = Member {
            id: ids::member_id(&peer_urls, &self.shared.cluster_token, Some(now_unix())),
            peer_urls,
            is_learner: learner,
            ..Member::default()
        };
        {
            let ms = self.shared.membership();
            ms.check_add(&m)?;
            if learner && ms.learners() >= 1 {
                return Err(Error::TooManyLearners);
            }
        }
        if !learner && self.shared.strict_reconfig_check {
            let voters = self.voters();
            if self.connected_voters(&voters) < quorum(voters.len() + 1) {
                return Err(Error::NotEnoughStarted);
            }
        }
        let t = if learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let members = self.conf_change(vec![(t, m.id)], Some(&m), None).await?;
        Ok((m, members))
    }

    /// Removes a member for good.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>> {
        self.check_running()?;
        let is_voter = {
            let ms = self.shared.membership();
            match ms.get(id) {
                Some(m) => !m.is_learner,
                None => return Err(Error::MemberNotFound),
            }
        };
        if is_voter && self.shared.strict_reconfig_check {
            let rest: Vec<u64> = self.voters().into_iter().filter(|&v| v != id).collect();
            if self.connected_voters(&rest) < quorum(rest.len()) {
                return Err(Error::NotEnoughStarted);
            }
        }
        self.conf_change(vec![(ConfChangeType::RemoveNode, id)], None, None)
            .await
    }

    /// Promotes a learner to a voter. Only the leader knows whether the
    /// learner has caught up: elsewhere this answers [`Error::NotLeader`].
    pub async fn promote_member(&self, id: u64) -> Result<Vec<Member>> {
        self.check_running()?;
        {
            let ms = self.shared.membership();
            match ms.get(id) {
                None => return Err(Error::MemberNotFound),
                Some(m) if !m.is_learner => return Err(Error::NotLearner),
                Some(_) => {}
            }
        }
        self.conf_change(vec![(ConfChangeType::AddNode, id)], None, Some(id))
            .await
    }

    async fn member_update(&self, m: Member) -> Result<Vec<Member>> {
        self.check_running()?;
        let (id, rx) = self.register();
        let data = serde_json::to_vec(&m).expect("member serializes");
        self.send(Input::Propose {
            data: entry::encode(entry::KIND_MEMBER_UPDATE, id, &data),
            request: id,
        })?;
        match Self::wait(rx).await? {
            Outcome::Conf => Ok(self.members()),
            Outcome::Output(_) => Err(Error::Storage(
                "a member update answered as a proposal".into(),
            )),
        }
    }

    /// Changes a member's peer URLs.
    pub async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<Vec<Member>> {
        if !member::valid_peer_urls(&peer_urls) {
            return Err(Error::InvalidUrls);
        }
        self.shared.membership().check_update(id, &peer_urls)?;
        self.member_update(Member {
            id,
            peer_urls,
            ..Member::default()
        })
        .await
    }

    /// Publishes this member's name and client URLs (as etcd does once it
    /// serves clients).
    pub async fn publish(&self, name: String, client_urls: Vec<String>) -> Result<()> {
        self.member_update(Member {
            id: self.shared.id,
            name,
            client_urls,
            ..Member::default()
        })
        .await
        .map(|_| ())
    }

    /// Hands leadership to `to` and waits until it has it.
    pub async fn transfer_leadership(&self, to: u64) -> Result<()> {
        self.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.send(Input::TransferLeader { to, reply: tx })?;
        rx.await.unwrap_or(Err(Error::Stopped))
    }

    pub fn status(&self) -> Status {
        self.shared.status()
    }

    pub fn members(&self) -> Vec<Member> {
        let ms = self.shared.membership();
        ms.members().cloned().collect()
    }

    /// The WAL's counters and fsync latency histogram.
    pub fn wal_metrics(&self) -> cairn_wal::WalMetrics {
        self.wal.metrics()
    }

    pub fn peers(&self) -> Vec<PeerHealth> {
        self.transport.peers()
    }

    pub fn metrics(&self) -> Metrics {
        let c = &self.shared.counters;
        Metrics {
            proposals_committed: c.committed.load(Relaxed),
            proposals_applied: c.applied.load(Relaxed),
            proposals_pending: self.shared.waiters.len() as u64,
            proposals_failed: c.failed.load(Relaxed),
            leader_changes: c.leader_changes.load(Relaxed),
            has_leader: self.status().leader != 0,
            snapshots_installed: c.snapshots_installed.load(Relaxed),
            snapshots_sent: c.snapshots_sent.load(Relaxed),
        }
    }

    /// Whether this member has been removed from the cluster (it then stops).
    pub fn is_removed(&self) -> bool {
        self.shared.removed.load(Relaxed)
    }

    /// Whether the node has stopped (asked to, removed, or failed).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Relaxed)
    }

    /// Stops the node: the driver, the apply thread (after what it was
    /// given), the transport. Pending requests fail with
    /// [`Error::Stopped`]. Idempotent.
    pub fn stop(&self) {
        let _ = self.tx.send(Input::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.transport.shutdown();
    }
}

impl<O> Drop for Node<O> {
    fn drop(&mut self) {
        let _ = self.tx.send(Input::Stop);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.transport.shutdown();
    }
}
