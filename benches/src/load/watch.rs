//! The `watch` and `watch-latency` workloads.
//!
//! `--watchers` watchers are created over `--streams` Watch streams (spread
//! over the connections), every one on the whole key space, and wait until
//! the server has confirmed each. Then `--clients` putters put keys of the
//! key space (to the total or for the duration, at `--rate`); every put's
//! event fans out to every watcher. The run ends once every watcher has
//! received an event for every successful put — or when no event has come
//! for [`SILENCE`], in which case the missing events are counted as errors.
//!
//! Requests are the events delivered, the duration runs from the first put
//! to the last event, so throughput is events/s. Latency is the puts' own
//! (`watch`), or from sending a put to each watcher receiving its event
//! (`watch-latency`): a put's value starts with its send time (nanoseconds
//! since the run's epoch, little-endian), which the receiving stream
//! subtracts from its own clock — one process, one clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_proto::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse, kv_client::KvClient,
    watch_client::WatchClient, watch_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::conn::Conn;
use super::driver::{Latencies, Merged, Request, Tally, drive};
use super::keys::Keys;
use super::spec::LoadSpec;
use crate::rng::Rng;

/// How long the run waits for the next event before calling the rest lost.
pub const SILENCE: Duration = Duration::from_secs(10);

/// One putter.
struct Putter {
    kv: KvClient<Conn>,
    keys: Keys,
    value: Vec<u8>,
    rng: Rng,
    /// Stamp each value with its send time, since this epoch.
    stamp: Option<Instant>,
}

impl Request for Putter {
    async fn call(&mut self, ticket: u64) -> Result<(), tonic::Status> {
        let mut value = self.value.clone();
        if let Some(epoch) = self.stamp {
            value[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        }
        let req = PutRequest {
            key: self.keys.key(self.keys.pick(ticket, &mut self.rng)),
            value,
            ..Default::default()
        };
        self.kv.put(req).await?;
        Ok(())
    }
}

/// An open Watch stream whose watchers are all created.
struct Stream {
    /// Kept open: the request side of the stream ends when it is dropped.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

/// Opens a stream on `conn` with `watchers` watchers on `[key, end)` and
/// waits for the server to confirm each.
async fn open(conn: Conn, watchers: usize, key: &[u8], end: &[u8]) -> anyhow::Result<Stream> {
    let (tx, rx) = mpsc::channel(watchers + 1);
    // Queued before the call: a server may send the response headers only
    // with its first message.
    for _ in 0..watchers {
        let create = WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        };
        tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
        })
        .await?;
    }
    let mut responses = WatchClient::new(conn)
        .watch(ReceiverStream::new(rx))
        .await
        .context("opening a Watch stream")?
        .into_inner();
    let mut created = 0;
    while created < watchers {
        let r = responses
            .message()
            .await
            .context("creating watchers")?
            .context("the Watch stream closed while creating watchers")?;
        anyhow::ensure!(!r.canceled, "watcher refused: {}", r.cancel_reason);
        created += usize::from(r.created);
    }
    Ok(Stream {
        _requests: tx,
        responses,
    })
}

/// Receives events until told to stop: counts them (into `delivered` and
/// the tally's `ok`) and, with an `epoch`, records each one's latency.
async fn receive(
    mut s: Stream,
    epoch: Option<Instant>,
    mut tally: Tally,
    delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Tally {
    loop {
        let m = tokio::select! {
            m = s.responses.message() => m,
            _ = stop.changed() => break,
        };
        match m {
            Ok(Some(r)) if r.canceled => {
                tally.error(format!("watcher canceled: {}", r.cancel_reason));
                break;
            }
            Ok(Some(r)) => {
                let now = Instant::now();
                if let Some(epoch) = epoch {
                    let now_ns = (now - epoch).as_nanos() as u64;
                    for kv in r.events.iter().filter_map(|e| e.kv.as_ref()) {
                        let sent = kv.value.get(..8).map_or(now_ns, |b| {
                            u64::from_le_bytes(b.try_into().expect("8 bytes"))
                        });
                        tally.record_us(now_ns.saturating_sub(sent) / 1000);
                    }
                }
                let n = r.events.len() as u64;
                tally.ok += n;
                delivered.fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    tally.last = Some(now);
                }
            }
            Ok(None) => {
                tally.error("the Watch stream was closed by the server".into());
                break;
            }
            Err(status) => {
                tally.failure(&status);
                break;
            }
        }
    }
    tally
}

/// Runs the workload; the merged result counts events as requests.
pub async fn run(
    spec: &LoadSpec,
    conns: &[Conn],
    watchers: usize,
    streams: usize,
    event_latency: bool,
) -> anyhow::Result<(Merged, Duration)> {
    anyhow::ensure!(watchers >= 1, "--watchers must be at least 1");
    anyhow::ensure!(streams >= 1, "--streams must be at least 1");
    anyhow::ensure!(
        !event_latency || spec.val_size >= 8,
        "watch-latency needs --val-size of at least 8 (a value carries its send time)"
    );
    let streams = streams.min(watchers);
    let (key, end) = (spec.keys.key(0), spec.keys.end());
    let mut opened = Vec::with_capacity(streams);
    for s in 0..streams {
        let n = watchers / streams + usize::from(s < watchers % streams);
        opened.push(open(conns[s % conns.len()].clone(), n, &key, &end).await?);
    }

    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let event_latencies = Latencies::default();
    let receivers: Vec<_> = opened
        .into_iter()
        .map(|s| {
            let stamp = event_latency.then_some(epoch);
            let tally = Tally::new(&event_latencies);
            tokio::spawn(receive(s, stamp, tally, delivered.clone(), stop_rx.clone()))
        })
        .collect();

    let value = super::keys::value(spec.val_size);
    let putters = (0..spec.clients)
        .map(|n| Putter {
            kv: KvClient::new(conns[n % conns.len()].clone()),
            keys: spec.keys,
            value: value.clone(),
            rng: Rng(n as u64 + 1),
            stamp: event_latency.then_some(epoch),
        })
        .collect();
    let label = spec.progress.then_some(if event_latency {
        "watch-latency puts"
    } else {
        "watch puts"
    });
    let (puts, put_time) = drive(putters, spec.stop, spec.rate, label).await?;

    // Every watcher sees every successful put.
    let expected = puts.ok * watchers as u64;
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        let d = delivered.load(Ordering::Relaxed);
        if d >= expected || receivers.iter().all(|r| r.is_finished()) {
            break;
        }
        if d != seen {
            (seen, since) = (d, Instant::now());
        } else if since.elapsed() >= SILENCE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = stop_tx.send(true);

    let mut events = Merged::default();
    for r in receivers {
        events.add(r.await?);
    }
    events.latency = event_latencies.take();
    if events.ok < expected {
        events.errors.insert(
            format!("events not delivered ({} of {expected} arrived)", events.ok),
            expected - events.ok,
        );
    }
    for (m, n) in puts.errors {
        *events.errors.entry(format!("put: {m}")).or_default() += n;
    }
    if !event_latency {
        events.latency = puts.latency;
    }
    let end = events.last.unwrap_or(epoch + put_time);
    Ok((events, end - epoch))
}
