//! The KV workloads: `put`, `range`, `txn-put` and `txn-mixed`, each a
//! [`Request`] per client.

use cairn_proto::etcdserverpb::{
    PutRequest, RangeRequest, RequestOp, TxnRequest, kv_client::KvClient, request_op,
};

use super::conn::Conn;
use super::driver::Request;
use super::keys::Keys;
use super::spec::Workload;
use crate::rng::Rng;

/// One client of a KV workload.
pub struct KvLoad {
    kv: KvClient<Conn>,
    keys: Keys,
    value: Vec<u8>,
    rng: Rng,
    workload: Workload,
}

impl KvLoad {
    /// Client number `n` of `workload`, on `conn`.
    pub fn new(n: usize, conn: Conn, keys: Keys, value: &[u8], workload: &Workload) -> Self {
        KvLoad {
            kv: KvClient::new(conn),
            keys,
            value: value.to_vec(),
            rng: Rng(n as u64 + 1),
            workload: workload.clone(),
        }
    }

    fn put(&self, i: u64) -> PutRequest {
        PutRequest {
            key: self.keys.key(i),
            value: self.value.clone(),
            ..Default::default()
        }
    }
}

/// Checks a workload's parameters against the key space before a run.
pub fn check(workload: &Workload, keys: &Keys) -> anyhow::Result<()> {
    if let Workload::TxnPut { ops } = *workload {
        anyhow::ensure!(ops >= 1, "--txn-ops must be at least 1");
        anyhow::ensure!(
            ops as u64 <= keys.space,
            "--txn-ops {ops} needs a key space of at least {ops} keys (a txn may not put one key twice)"
        );
    }
    Ok(())
}

fn op(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

impl Request for KvLoad {
    async fn call(&mut self, ticket: u64) -> Result<(), tonic::Status> {
        match &self.workload {
            Workload::Put => {
                let i = self.keys.pick(ticket, &mut self.rng);
                let req = self.put(i);
                self.kv.put(req).await?;
            }
            Workload::Range {
                key,
                end,
                serializable,
            } => {
                let req = RangeRequest {
                    key: match key {
                        Some(k) => k.clone(),
                        None => self.keys.key(self.keys.pick(ticket, &mut self.rng)),
                    },
                    range_end: end.clone().unwrap_or_default(),
                    serializable: *serializable,
                    ..Default::default()
                };
                self.kv.range(req).await?;
            }
            Workload::TxnPut { ops } => {
                let ops = *ops as u64;
                // Consecutive keys: distinct within the txn (ops <= key space).
                let first = if self.keys.sequential {
                    ticket * ops
                } else {
                    self.rng.below(self.keys.space)
                };
                let success = (0..ops)
                    .map(|j| op(request_op::Request::RequestPut(self.put(first + j))))
                    .collect();
                self.kv
                    .txn(TxnRequest {
                        success,
                        ..Default::default()
                    })
                    .await?;
            }
            Workload::TxnMixed {
                rw_ratio,
                range_limit,
                serializable,
            } => {
                let read = self.rng.unit() < rw_ratio / (rw_ratio + 1.0);
                let i = self.keys.pick(ticket, &mut self.rng);
                let request = if read {
                    request_op::Request::RequestRange(RangeRequest {
                        key: self.keys.key(i),
                        range_end: self.keys.end(),
                        limit: *range_limit,
                        serializable: *serializable,
                        ..Default::default()
                    })
                } else {
                    request_op::Request::RequestPut(self.put(i))
                };
                self.kv
                    .txn(TxnRequest {
                        success: vec![op(request)],
                        ..Default::default()
                    })
                    .await?;
            }
            Workload::Watch { .. } | Workload::LeaseKeepalive { .. } => {
                unreachable!("not a KV workload")
            }
        }
        Ok(())
    }
}
