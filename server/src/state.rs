//! The state machine the raft node drives: etcd's apply step, on the MVCC
//! store and the lessor.
//!
//! Every committed proposal is an `InternalRaftRequest`; applying it changes
//! the store (and the server's buckets: leases, alarms) under the entry's id,
//! so the store's consistent index tells, after a restart, which entries are
//! replays — those change nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn_engine::mvcc::{self, AuxOp, Store, WriteRequest, schema};
use cairn_proto::etcdserverpb::{self as pb, InternalRaftRequest};
use cairn_proto::leasepb;
use cairn_raftnode::{EntryId, MembershipChange, StateMachine};
use prost::Message;

use crate::convert;
use crate::errors::ApiError;
use crate::lessor::Lessor;

/// What applying a proposal produced (headers are filled by the service).
#[derive(Debug)]
pub enum ApplyOutput {
    Put(pb::PutResponse),
    DeleteRange(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compaction {
        revision: i64,
        done: Option<mvcc::Compaction>,
    },
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    Alarm(pb::AlarmResponse),
    /// Nothing to answer (a checkpoint, a replay).
    None,
}

pub type ApplyResult = Result<ApplyOutput, ApiError>;

/// Raised alarms: (member, alarm type).
#[derive(Debug, Default)]
pub struct Alarms {
    set: Mutex<BTreeSet<(u64, i32)>>,
}

impl Alarms {
    pub fn list(&self) -> Vec<pb::AlarmMember> {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(member_id, alarm)| pb::AlarmMember { member_id, alarm })
            .collect()
    }

    pub fn has(&self, alarm: pb::AlarmType) -> bool {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&(_, a)| a == alarm as i32)
    }

    fn clear(&self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn set(&self, member: u64, alarm: i32, on: bool) -> bool {
        let mut s = self.set.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            s.insert((member, alarm))
        } else {
            s.remove(&(member, alarm))
        }
    }

    fn key(member: u64, alarm: i32) -> Vec<u8> {
        pb::AlarmMember {
            member_id: member,
            alarm,
        }
        .encode_to_vec()
    }

    /// Loads the alarm bucket at start.
    pub fn restore(&self, store: &Store) -> mvcc::Result<()> {
        for (k, _) in store.aux_scan(schema::ALARM)? {
            if let Ok(a) = pb::AlarmMember::decode(&k[..]) {
                self.set(a.member_id, a.alarm, true);
            }
        }
        Ok(())
    }
}

/// The lease bucket's record of a lease (etcd's `leasepb.Lease`).
pub fn lease_record(id: i64, ttl: i64, remaining: i64) -> AuxOp {
    AuxOp::Put {
        bucket: schema::LEASE,
        key: id.to_be_bytes().to_vec(),
        value: leasepb::Lease {
            id,
            ttl,
            remaining_ttl: remaining,
        }
        .encode_to_vec(),
    }
}

/// Loads the lease bucket and the keys' leases at start.
pub fn restore_leases(store: &Store, lessor: &Lessor) -> mvcc::Result<usize> {
    let recs = store.aux_scan(schema::LEASE)?;
    for (_, v) in &recs {
        if let Ok(l) = leasepb::Lease::decode(&v[..]) {
            lessor.restore(l.id, l.ttl, l.remaining_ttl);
        }
    }
    for (k, id) in store.take_restored_leases() {
        lessor.attach(k, id);
    }
    Ok(recs.len())
}

/// The store the server reads and the state machine writes; replaced
/// wholesale when a snapshot from the leader is restored.
#[derive(Clone)]
pub struct StoreCell(Arc<std::sync::RwLock<Store>>);

impl StoreCell {
    pub fn new(s: Store) -> StoreCell {
        StoreCell(Arc::new(std::sync::RwLock::new(s)))
    }

    /// The current store (a cheap handle).
    pub fn get(&self) -> Store {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: Store) -> Store {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), s)
    }
}

/// Closes the current store, puts a received snapshot file in its place
/// and opens it.
pub type Reopen = Box<dyn FnMut(Store, &Path) -> Result<Store, String> + Send>;

/// The state machine.
pub struct Backend {
    pub store: Store,
    pub cell: StoreCell,
    pub lessor: Arc<Lessor>,
    pub alarms: Arc<Alarms>,
    /// Closes the current store, puts a received snapshot file in its place
    /// and opens it.
    pub reopen: Reopen,
}

fn entry_id(e: EntryId) -> mvcc::EntryId {
    mvcc::EntryId::new(e.index, e.term)
}

impl Backend {
    /// Marks an entry that changes nothing in the store as applied.
    fn noop(&self, id: mvcc::EntryId) -> Result<(), ApiError> {
        self.store.apply_aux(id, Vec::new())?;
        Ok(())
    }

    fn apply_request(&mut self, id: mvcc::EntryId, r: InternalRaftRequest) -> ApplyResult {
        let capped = self.alarms.has(pb::AlarmType::Nospace);
        if let Some(p) = r.put {
            if capped {
                self.noop(id)?;
                return Err(ApiError::NoSpace);
            }
            return self.write(id, WriteRequest::Put(convert::put_req(&p)), Vec::new());
        }
        if let Some(d) = r.delete_range {
            return self.write(
                id,
                WriteRequest::DeleteRange(convert::delete_req(&d)),
                Vec::new(),
            );
        }
        if let Some(t) = r.txn {
            if capped && !convert::txn_is_read_only(&t) && txn_puts(&t) {
                self.noop(id)?;
                return Err(ApiError::NoSpace);
            }
            let Some(t) = convert::txn_req(&t) else {
                self.noop(id)?;
                return Err(ApiError::KeyNotFound);
            };
            return self.write(id, WriteRequest::Txn(t), Vec::new());
        }
        if let Some(c) = r.compaction {
            return match self.store.compact(id, c.revision)? {
                mvcc::Applied::Done(done) => Ok(ApplyOutput::Compaction {
                    revision: done.revision,
                    done: Some(done),
                }),
                mvcc::Applied::AlreadyApplied => Ok(ApplyOutput::None),
            };
        }
        if let Some(g) = r.lease_grant {
            if capped {
                self.noop(id)?;
                return Err(ApiError::NoSpace);
            }
            if self.lessor.exists(g.id) {
                self.noop(id)?;
                return Err(ApiError::LeaseExists);
            }
            let ttl = self.lessor.effective_ttl(g.ttl);
            if let mvcc::Applied::AlreadyApplied =
                self.store.apply_aux(id, vec![lease_record(g.id, ttl, 0)])?
            {
                return Ok(ApplyOutput::None);
            }
            self.lessor.grant(g.id, ttl);
            return Ok(ApplyOutput::LeaseGrant(pb::LeaseGrantResponse {
                header: convert::rev_header(self.store.current_revision()),
                id: g.id,
                ttl,
                error: String::new(),
            }));
        }
        if let Some(rv) = r.lease_revoke {
            return self.revoke(id, rv.id);
        }
        if let Some(cp) = r.lease_checkpoint {
            let mut ops = Vec::new();
            for c in &cp.checkpoints {
                if let Some(info) = self.lessor.info(c.id, false) {
                    ops.push(lease_record(c.id, info.granted, c.remaining_ttl));
                }
            }
            if let mvcc::Applied::Done(()) = self.store.apply_aux(id, ops)? {
                for c in &cp.checkpoints {
                    self.lessor.checkpoint(c.id, c.remaining_ttl);
                }
            }
            return Ok(ApplyOutput::None);
        }
        if let Some(a) = r.alarm {
            return self.alarm(id, a);
        }
        self.noop(id)?;
        Ok(ApplyOutput::None)
    }

    fn write(&mut self, id: mvcc::EntryId, req: WriteRequest, aux: Vec<AuxOp>) -> ApplyResult {
        match self.store.write_with(id, req, aux)? {
            mvcc::Applied::Done(out) => {
                self.lessor.follow(&out.events);
                Ok(convert::write_resp(out.response))
            }
            mvcc::Applied::AlreadyApplied => Ok(ApplyOutput::None),
        }
    }

    /// Deletes a lease's keys (one revision) and its record.
    fn revoke(&mut self, id: mvcc::EntryId, lease: i64) -> ApplyResult {
        let Some(keys) = self.lessor.keys(lease) else {
            self.noop(id)?;
            return Err(ApiError::LeaseNotFound);
        };
        let record = AuxOp::Delete {
            bucket: schema::LEASE,
            key: lease.to_be_bytes().to_vec(),
        };
        let applied = if keys.is_empty() {
            matches!(
                self.store.apply_aux(id, vec![record])?,
                mvcc::Applied::Done(())
            )
        } else {
            let txn = mvcc::TxnRequest {
                compare: Vec::new(),
                success: keys
                    .into_iter()
                    .map(|k| mvcc::RequestOp::DeleteRange(mvcc::DeleteRangeRequest::new(k, "")))
                    .collect(),
                failure: Vec::new(),
            };
            !matches!(
                self.write(id, WriteRequest::Txn(txn), vec![record])?,
                ApplyOutput::None
            )
        };
        if applied {
            self.lessor.revoke(lease);
        }
        Ok(ApplyOutput::LeaseRevoke(pb::LeaseRevokeResponse {
            header: convert::rev_header(self.store.current_revision()),
        }))
    }

    fn alarm(&mut self, id: mvcc::EntryId, a: pb::AlarmRequest) -> ApplyResult {
        use pb::alarm_request::AlarmAction;
        let action = AlarmAction::try_from(a.action).unwrap_or(AlarmAction::Get);
        let key = Alarms::key(a.member_id, a.alarm);
        let op = match action {
            AlarmAction::Activate => Some(AuxOp::Put {
                bucket: schema::ALARM,
                key,
                value: Vec::new(),
            }),
            AlarmAction::Deactivate => Some(AuxOp::Delete {
                bucket: schema::ALARM,
                key,
            }),
            AlarmAction::Get => None,
        };
        let applied = matches!(
            self.store.apply_aux(id, op.into_iter().collect())?,
            mvcc::Applied::Done(())
        );
        let mut changed = Vec::new();
        if applied && action != AlarmAction::Get && a.alarm != pb::AlarmType::None as i32 {
            let on = action == AlarmAction::Activate;
            if self.alarms.set(a.member_id, a.alarm, on) {
                changed.push(pb::AlarmMember {
                    member_id: a.member_id,
                    alarm: a.alarm,
                });
                let alarm = pb::AlarmType::try_from(a.alarm)
                    .map(|t| t.as_str_name())
                    .unwrap_or("UNKNOWN");
                if on {
                    tracing::warn!(alarm, from = %format!("{:x}", a.member_id), "alarm raised");
                } else {
                    tracing::info!(alarm, from = %format!("{:x}", a.member_id), "alarm disarmed");
                }
            }
        }
        Ok(ApplyOutput::Alarm(pb::AlarmResponse {
            header: None,
            alarms: if action == AlarmAction::Get {
                self.alarms.list()
            } else {
                changed
            },
        }))
    }
}

/// Whether a transaction's branches put anything (the NOSPACE alarm refuses
/// those).
fn txn_puts(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request as Q;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Q::RequestPut(_)) => true,
            Some(Q::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}

impl StateMachine for Backend {
    type Output = ApplyResult;

    fn durable_index(&self) -> u64 {
        self.store.durable_index().index
    }

    fn apply(&mut self, entry: EntryId, data: &[u8]) -> ApplyResult {
        let id = entry_id(entry);
        // A replay after a restart: the store holds it already.
        if entry.index <= self.store.applied_index().index {
            return Ok(ApplyOutput::None);
        }
        match InternalRaftRequest::decode(data) {
            Ok(r) => self.apply_request(id, r),
            Err(e) => {
                self.noop(id)?;
                Err(ApiError::Internal(format!(
                    "etcdserver: undecodable entry {}: {e}",
                    entry.index
                )))
            }
        }
    }

    fn apply_other(&mut self, entry: EntryId, change: Option<&MembershipChange>) {
        if let Err(e) = self.noop(entry_id(entry)) {
            tracing::error!(error = %e, index = entry.index, "recording an applied entry");
        }
        if let Some(c) = change {
            tracing::info!(change = ?c, "applied a membership change");
        }
    }

    fn sync(&mut self) -> Result<u64, String> {
        self.store.flush().map_err(|e| e.to_string())?;
        Ok(self.store.durable_index().index)
    }

    fn restore(&mut self, file: &Path) -> Result<u64, String> {
        let old = self.store.clone();
        let store = (self.reopen)(old, file)?;
        let index = store.durable_index().index;
        self.store = store.clone();
        self.cell.set(store.clone());
        self.lessor.clear();
        restore_leases(&store, &self.lessor).map_err(|e| e.to_string())?;
        self.alarms.clear();
        self.alarms.restore(&store).map_err(|e| e.to_string())?;
        let lessor = self.lessor.clone();
        store.set_lease_lookup(Arc::new(move |id| lessor.exists(id)));
        Ok(index)
    }
}
