//! The client loop shared by every request/response workload.
//!
//! Each client is a tokio task owning its own gRPC client handle (a clone of
//! one of the shared connections), its own key generator and its own
//! [`Tally`]. A client takes the next ticket from one atomic counter, stops
//! once the run's total or deadline is reached, waits for the ticket's slot
//! when a rate is set (ticket `t` is due at `start + t / rate`, so the
//! clients together keep the rate without talking to each other), sends,
//! and records the latency of a success or the message of a failure. The
//! latencies go to the run's one histogram ([`Latencies`]), a batch at a
//! time under its lock: a thousand clients' histograms of their own would
//! take a thousand cache-cold counter arrays, touched once a request each.
//! The tallies are merged when every client is done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::progress::Progress;
use super::spec::Stop;

/// What one client does for one ticket (its request's number in the run).
pub trait Request: Send + 'static {
    fn call(&mut self, ticket: u64) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// Latencies a [`Tally`] keeps before adding them to its [`Latencies`].
const BATCH: usize = 64;

/// A run's latency histogram in µs, shared by its tallies.
#[derive(Clone)]
pub struct Latencies(Arc<Mutex<Histogram<u64>>>);

impl Default for Latencies {
    fn default() -> Self {
        // Three significant digits, resized as larger values come.
        let h = Histogram::new(3).expect("valid histogram parameters");
        Latencies(Arc::new(Mutex::new(h)))
    }
}

impl Latencies {
    /// Records latencies of `us` µs each.
    fn record(&self, us: &[u64]) {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for &us in us {
            record(&mut h, us);
        }
    }

    /// The histogram, once every tally recording into it is merged.
    pub fn take(&self) -> Histogram<u64> {
        let mut h = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let empty = Histogram::new_from(&h);
        std::mem::replace(&mut *h, empty)
    }
}

/// Records a latency of `us` µs (at least 1), growing the histogram as
/// needed (`saturating_record` alone would not: it clamps to the current
/// range).
fn record(h: &mut Histogram<u64>, us: u64) {
    let us = us.max(1);
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

/// One client's record: successes, failures by message, and its latencies
/// on their way to the run's histogram (all of them once it is dropped or
/// merged).
pub struct Tally {
    latencies: Latencies,
    pending: Vec<u64>,
    pub ok: u64,
    pub errors: HashMap<String, u64>,
    /// When the last success or failure was recorded.
    pub last: Option<Instant>,
}

/// Tallies merged: the run's figures.
pub struct Merged {
    /// Latencies in µs: [`Latencies::take`] once the tallies are merged.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: HashMap<String, u64>,
    pub last: Option<Instant>,
}

impl Tally {
    /// A tally recording its latencies into `latencies`.
    pub fn new(latencies: &Latencies) -> Self {
        Tally {
            latencies: latencies.clone(),
            pending: Vec::with_capacity(BATCH),
            ok: 0,
            errors: HashMap::new(),
            last: None,
        }
    }

    pub fn success(&mut self, latency: Duration) {
        self.record_us(latency.as_micros() as u64);
        self.ok += 1;
    }

    /// Records a latency of `us` µs (at least 1).
    pub fn record_us(&mut self, us: u64) {
        self.pending.push(us);
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.latencies.record(&self.pending);
            self.pending.clear();
        }
    }

    pub fn failure(&mut self, status: &tonic::Status) {
        self.error(format!("{:?}: {}", status.code(), status.message()));
    }

    pub fn error(&mut self, message: String) {
        *self.errors.entry(message).or_default() += 1;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Default for Merged {
    fn default() -> Self {
        Merged {
            latency: Histogram::new(3).expect("valid histogram parameters"),
            ok: 0,
            errors: HashMap::new(),
            last: None,
        }
    }
}

impl Merged {
    /// Adds a tally's counts; its latencies go to its [`Latencies`].
    pub fn add(&mut self, mut t: Tally) {
        t.flush();
        self.ok += t.ok;
        for (m, n) in t.errors.drain() {
            *self.errors.entry(m).or_default() += n;
        }
        self.last = self.last.max(t.last);
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Runs `clients` to the end of `stop` at most `rate` requests/s (0: no
/// limit); returns the merged tallies and the time from start to the last
/// answer.
pub async fn drive<R: Request>(
    clients: Vec<R>,
    stop: Stop,
    rate: f64,
    progress: Option<&str>,
) -> anyhow::Result<(Merged, Duration)> {
    let tickets = Arc::new(AtomicU64::new(0));
    let latencies = Latencies::default();
    let start = Instant::now();
    let bar = progress.map(|label| Progress::start(label, stop, tickets.clone()));
    let mut tasks = Vec::with_capacity(clients.len());
    for mut c in clients {
        let tickets = tickets.clone();
        let mut tally = Tally::new(&latencies);
        tasks.push(tokio::spawn(async move {
            loop {
                let t = tickets.fetch_add(1, Ordering::Relaxed);
                if stop.reached(t, start) {
                    break;
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(
                        (start + Duration::from_secs_f64(t as f64 / rate)).into(),
                    )
                    .await;
                    if stop.reached(t, start) {
                        break;
                    }
                }
                let sent = Instant::now();
                match c.call(t).await {
                    Ok(()) => tally.success(sent.elapsed()),
                    Err(status) => tally.failure(&status),
                }
            }
            tally.last = Some(Instant::now());
            tally
        }));
    }
    let mut merged = Merged::default();
    for t in tasks {
        merged.add(t.await?);
    }
    merged.latency = latencies.take();
    if let Some(bar) = bar {
        bar.finish();
    }
    let end = merged.last.unwrap_or(start);
    Ok((merged, end - start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_every_latency() {
        let latencies = Latencies::default();
        let mut a = Tally::new(&latencies);
        for us in [500u64, 900, 1200, 250_000] {
            a.success(Duration::from_micros(us));
        }
        a.error("Unavailable: gone".into());
        let mut b = Tally::new(&latencies);
        b.success(Duration::from_micros(700));
        b.error("Unavailable: gone".into());
        // More than a batch: some recorded before the merge, some at it.
        let mut c = Tally::new(&latencies);
        for _ in 0..BATCH + 3 {
            c.record_us(0);
        }
        let mut m = Merged::default();
        m.add(a);
        m.add(b);
        drop(c);
        m.latency = latencies.take();
        assert_eq!((m.ok, m.latency.len()), (5, 5 + BATCH as u64 + 3));
        assert_eq!(m.latency.min(), 1);
        assert_eq!(m.latency.count_at(500), 1);
        assert!(m.latency.equivalent(m.latency.max(), 250_000));
        assert_eq!((m.error_count(), m.errors.len()), (2, 1));
        assert!(latencies.take().is_empty());
    }
}
