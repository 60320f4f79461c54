//! A run's result: counts, time, the latency histogram and the errors by
//! message; printed as etcd's benchmark tool prints its report, or as one
//! JSON object.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::json;

/// The figures of one run.
pub struct Summary {
    pub workload: String,
    /// As `host:port`.
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Successful requests (for the watch workloads: events delivered).
    pub requests: u64,
    pub errors: u64,
    /// From the first request to the last answer (event).
    pub duration: Duration,
    /// Latencies in µs (empty when none were recorded).
    pub latency: Histogram<u64>,
    pub error_counts: BTreeMap<String, u64>,
    /// What requests, throughput and latency mean for this workload.
    pub measures: &'static str,
}

/// The latency figures of a histogram, in µs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stddev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let q = |q| h.value_at_quantile(q) as f64;
        Latency {
            min: h.min() as f64,
            mean: h.mean(),
            stddev: h.stdev(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64,
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        json!({
            "min": self.min, "mean": self.mean, "stddev": self.stddev,
            "p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999,
            "max": self.max,
        })
    }
}

impl Summary {
    /// Successful requests (events) per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.duration.as_secs_f64().max(1e-9)
    }

    /// The latency figures, when any latency was recorded.
    pub fn latency_figures(&self) -> Option<Latency> {
        (!self.latency.is_empty()).then(|| Latency::of(&self.latency))
    }

    /// The JSON object `--json` prints (the shape other tools parse).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "workload": self.workload,
            "endpoints": self.endpoints,
            "clients": self.clients,
            "conns": self.conns,
            "requests": self.requests,
            "errors": self.errors,
            "duration_s": self.duration.as_secs_f64(),
            "throughput": self.throughput(),
        });
        if let Some(l) = self.latency_figures() {
            v["latency_us"] = l.to_json();
        }
        v["error_counts"] = json!(self.error_counts);
        v
    }

    /// The text report, after etcd's benchmark tool.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let secs = |us: f64| us / 1e6;
        let _ = writeln!(s, "{}: {}", self.workload, self.measures);
        let _ = writeln!(s, "\nSummary:");
        let _ = writeln!(s, "  Total:\t{:.4} secs.", self.duration.as_secs_f64());
        if let Some(l) = self.latency_figures() {
            let _ = writeln!(s, "  Slowest:\t{:.4} secs.", secs(l.max));
            let _ = writeln!(s, "  Fastest:\t{:.4} secs.", secs(l.min));
            let _ = writeln!(s, "  Average:\t{:.4} secs.", secs(l.mean));
            let _ = writeln!(s, "  Stddev:\t{:.4} secs.", secs(l.stddev));
        }
        let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.throughput());
        if let Some(l) = self.latency_figures() {
            let h = &self.latency;
            s.push_str("\nResponse time histogram:\n");
            s.push_str(&bars(h));
            s.push_str("\nLatency distribution:\n");
            for p in [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9] {
                let v = h.value_at_percentile(p) as f64;
                let _ = writeln!(s, "  {p}% in {:.4} secs.", secs(v));
            }
            let _ = writeln!(
                s,
                "\nHDR (µs): p50 {} | p90 {} | p99 {} | p99.9 {} | max {}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        let _ = writeln!(s, "\n{} requests, {} errors", self.requests, self.errors);
        if !self.error_counts.is_empty() {
            s.push_str("Errors:\n");
            for (m, n) in &self.error_counts {
                let _ = writeln!(s, "  {n}\t{m}");
            }
        }
        s
    }
}

/// Ten equal-width buckets from the fastest to the slowest, as etcd's tool
/// draws them: upper bound in seconds, count, bar.
fn bars(h: &Histogram<u64>) -> String {
    const BUCKETS: u64 = 10;
    const WIDTH: u64 = 40;
    let (lo, hi) = (h.min(), h.max());
    let step = ((hi - lo) / BUCKETS).max(1);
    let mut rows = Vec::new();
    let mut from = lo;
    for i in 0..BUCKETS {
        let to = if i + 1 == BUCKETS {
            hi
        } else {
            lo + step * (i + 1)
        };
        // Each value counted once: [from, to], then (to, next].
        let n = h.count_between(from, to);
        rows.push((to, n));
        from = h.next_non_equivalent(to);
        if to >= hi {
            break;
        }
    }
    let most = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    rows.iter()
        .map(|&(to, n)| {
            format!(
                "  {:.4} [{n}]\t|{}\n",
                to as f64 / 1e6,
                "∎".repeat((n * WIDTH / most) as usize)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(latencies: &[u64]) -> Summary {
        let mut h = Histogram::new(3).unwrap();
        for &l in latencies {
            h.record(l).unwrap();
        }
        Summary {
            workload: "put".into(),
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 2,
            conns: 1,
            requests: latencies.len() as u64,
            errors: 1,
            duration: Duration::from_secs(2),
            latency: h,
            error_counts: BTreeMap::from([("Unavailable: gone".to_string(), 1)]),
            measures: "test",
        }
    }

    #[test]
    fn the_json_has_the_shape_other_tools_parse() {
        let v = summary(&[100, 200, 300, 400]).to_json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "workload",
            "endpoints",
            "clients",
            "conns",
            "requests",
            "errors",
            "duration_s",
            "throughput",
            "latency_us",
            "error_counts",
        ] {
            assert!(keys.contains(&k), "{k} missing from {v}");
        }
        assert_eq!(v["throughput"], 2.0);
        assert_eq!(v["latency_us"]["max"], 400.0);
        assert_eq!(v["error_counts"]["Unavailable: gone"], 1);
    }

    #[test]
    fn the_histogram_buckets_count_every_request_once() {
        let lat: Vec<u64> = (1..=1000).collect();
        let text = bars(&summary(&lat).latency);
        let total: u64 = text
            .lines()
            .map(|l| {
                l.split('[')
                    .nth(1)
                    .unwrap()
                    .split(']')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(total, 1000);
    }
}
