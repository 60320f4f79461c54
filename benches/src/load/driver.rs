//! The client loop shared by every request/response workload.
//!
//! Each client is a tokio task owning its own gRPC client handle (a clone of
//! one of the shared connections), its own key generator and its own
//! [`Tally`]: nothing is shared on the request path but one atomic ticket
//! counter. A client takes the next ticket, stops once the run's total or
//! deadline is reached, waits for the ticket's slot when a rate is set
//! (ticket `t` is due at `start + t / rate`, so the clients together keep the
//! rate without talking to each other), sends, and records the latency of a
//! success or the message of a failure. The tallies are merged when every
//! client is done.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::{Counter, Histogram};

use super::progress::Progress;
use super::spec::Stop;

/// What one client does for one ticket (its request's number in the run).
pub trait Request: Send + 'static {
    fn call(&mut self, ticket: u64) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// One client's record: latencies of successes in µs, failures by message.
///
/// A client's counts are `u32` (`Tally<u32>`), to keep a thousand clients'
/// histograms small; they are merged into a [`Merged`] (`u64` counts) at the
/// end.
pub struct Tally<C: Counter = u32> {
    pub latency: Histogram<C>,
    pub ok: u64,
    pub errors: HashMap<String, u64>,
    /// When the last success or failure was recorded.
    pub last: Option<Instant>,
}

/// Tallies merged: the run's figures.
pub type Merged = Tally<u64>;

impl<C: Counter> Default for Tally<C> {
    fn default() -> Self {
        Tally {
            // Three significant digits, resized as larger values come.
            latency: Histogram::new(3).expect("valid histogram parameters"),
            ok: 0,
            errors: HashMap::new(),
            last: None,
        }
    }
}

impl<C: Counter> Tally<C> {
    pub fn success(&mut self, latency: Duration) {
        self.record_us(latency.as_micros() as u64, C::one());
        self.ok += 1;
    }

    /// Records `n` latencies of `us` µs (at least 1), growing the histogram
    /// as needed (`saturating_record` alone would not: it clamps to the
    /// current range).
    pub fn record_us(&mut self, us: u64, n: C) {
        let us = us.max(1);
        if self.latency.record_n(us, n).is_err() {
            self.latency.saturating_record_n(us, n);
        }
    }

    pub fn failure(&mut self, status: &tonic::Status) {
        self.error(format!("{:?}: {}", status.code(), status.message()));
    }

    pub fn error(&mut self, message: String) {
        *self.errors.entry(message).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Merged {
    pub fn add(&mut self, t: Tally) {
        for v in t.latency.iter_recorded() {
            self.record_us(v.value_iterated_to(), u64::from(v.count_at_value()));
        }
        self.ok += t.ok;
        for (m, n) in t.errors {
            *self.errors.entry(m).or_default() += n;
        }
        self.last = self.last.max(t.last);
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
    let start = Instant::now();
    let bar = progress.map(|label| Progress::start(label, stop, tickets.clone()));
    let mut tasks = Vec::with_capacity(clients.len());
    for mut c in clients {
        let tickets = tickets.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::<u32>::default();
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
        let mut a = Tally::default();
        for us in [500u64, 900, 1200, 250_000] {
            a.success(Duration::from_micros(us));
        }
        let mut b = Tally::default();
        b.success(Duration::from_micros(700));
        let mut m = Merged::default();
        m.add(a);
        m.add(b);
        assert_eq!((m.ok, m.latency.len()), (5, 5));
        assert_eq!(m.latency.min(), 500);
        assert!(m.latency.equivalent(m.latency.max(), 250_000));
    }
}
