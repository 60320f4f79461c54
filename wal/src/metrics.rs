//! Counters and the fsync latency histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds, in seconds, of the fsync latency buckets: finer steps below a
/// millisecond (fast disks), then etcd's `etcd_disk_wal_fsync_duration_seconds`
/// buckets (1 ms doubling to 8.192 s), so the server can export either.
pub const FSYNC_BUCKETS: &[f64] = &[
    0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016,
    0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// A fixed-bucket latency histogram updated without locks.
pub(crate) struct Histogram {
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: (0..=FSYNC_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = FSYNC_BUCKETS.partition_point(|&b| b < secs);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: FSYNC_BUCKETS,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: Duration::from_nanos(self.sum_nanos.load(Relaxed)),
        }
    }
}

/// A copy of a histogram. `counts[i]` counts observations in
/// `(bounds[i-1], bounds[i]]`; the last count is everything above the last bound.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: Duration,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1); infinity if it
    /// lies above the last bound, `None` if empty.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

pub(crate) struct Metrics {
    records: Counter,
    submissions: Counter,
    batches: Counter,
    fsyncs: Counter,
    bytes: Counter,
    segments_created: Counter,
    segments_released: Counter,
    pub fsync: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            records: Counter::default(),
            submissions: Counter::default(),
            batches: Counter::default(),
            fsyncs: Counter::default(),
            bytes: Counter::default(),
            segments_created: Counter::default(),
            segments_released: Counter::default(),
            fsync: Histogram::new(),
        }
    }

    pub fn batch(&self, submissions: u64, records: u64) {
        self.batches.add(1);
        self.submissions.add(submissions);
        self.records.add(records);
    }

    pub fn synced(&self, bytes: u64, took: Duration) {
        self.fsyncs.add(1);
        self.bytes.add(bytes);
        self.fsync.observe(took);
    }

    /// An fsync outside the data path (segment header, directory).
    pub fn extra_fsync(&self, n: u64) {
        self.fsyncs.add(n);
    }

    pub fn segment_created(&self) {
        self.segments_created.add(1);
    }

    pub fn segments_released(&self, n: u64) {
        self.segments_released.add(n);
    }

    pub fn snapshot(&self) -> WalMetrics {
        WalMetrics {
            records: self.records.get(),
            submissions: self.submissions.get(),
            batches: self.batches.get(),
            fsyncs: self.fsyncs.get(),
            bytes_written: self.bytes.get(),
            segments_created: self.segments_created.get(),
            segments_released: self.segments_released.get(),
            fsync_latency: self.fsync.snapshot(),
        }
    }
}

/// Counters since the log was opened.
#[derive(Clone, Debug, PartialEq)]
pub struct WalMetrics {
    /// Records made durable.
    pub records: u64,
    /// Submissions (calls to `submit`/`append`) made durable.
    pub submissions: u64,
    /// Write batches (each one write and one data fdatasync per segment touched).
    pub batches: u64,
    /// Every fsync/fdatasync issued: data syncs, new segment headers, directories.
    pub fsyncs: u64,
    pub bytes_written: u64,
    pub segments_created: u64,
    pub segments_released: u64,
    /// Latency of the data fdatasyncs (for io_uring: the linked write + fsync).
    pub fsync_latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_right_bucket() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(15));
        h.observe(Duration::from_micros(15));
        h.observe(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.count(), 3);
        assert_eq!(s.counts[1], 2); // (10us, 20us]
        assert_eq!(s.counts[8], 1); // (2ms, 4ms]
        assert_eq!(s.quantile_upper_bound(0.5), Some(0.000_02));
        assert_eq!(s.quantile_upper_bound(1.0), Some(0.004));
    }
}
