//! The comparison's figures: per-side medians over the rounds, A/B ratios,
//! as a Markdown table (for docs/benchmarks.md) or JSON.

use std::fmt::Write;

use serde_json::json;

use super::Side;
use crate::load::{LoadSpec, Stop, Summary, Workload};

/// A figure of a run (latencies in µs), `None` where the run has none.
type Figure = fn(&Summary) -> Option<f64>;

/// The compared figures: name in JSON, row label, and the figure.
const FIGURES: &[(&str, &str, Figure)] = &[
    ("throughput", "throughput", |s| Some(s.throughput())),
    ("p50", "p50 latency", |s| s.latency_figures().map(|l| l.p50)),
    ("p90", "p90 latency", |s| s.latency_figures().map(|l| l.p90)),
    ("p99", "p99 latency", |s| s.latency_figures().map(|l| l.p99)),
    ("p999", "p99.9 latency", |s| {
        s.latency_figures().map(|l| l.p999)
    }),
    ("max", "max latency", |s| s.latency_figures().map(|l| l.max)),
];

/// The median of the values (mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A side's median of one figure over its rounds.
fn side_median(side: &Side, f: Figure) -> Option<f64> {
    median(side.runs.iter().filter_map(f).collect())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// µs as `850 µs`, `1.23 ms` or `1.50 s`.
pub fn micros(us: f64) -> String {
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// `12,345`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn unit(spec: &LoadSpec) -> &'static str {
    match spec.workload {
        Workload::Watch { .. } => "events/s",
        _ => "req/s",
    }
}

/// The Markdown report: a line saying what ran, the table, the throughput
/// of every round and the error counts.
pub fn markdown(spec: &LoadSpec, sides: &[Side; 2]) -> String {
    let [a, b] = sides;
    let mut s = String::new();
    let stop = match spec.stop {
        Stop::Total(n) => format!("total {n}"),
        Stop::Duration(d) => format!("{:.1} s each", d.as_secs_f64()),
    };
    let _ = writeln!(
        s,
        "`{}`: {} clients, {} conns, {stop}; medians of {} rounds; A = {} ({}), B = {} ({})\n",
        spec.workload.name(),
        spec.clients,
        spec.conns,
        a.runs.len(),
        a.name,
        a.endpoints.join(","),
        b.name,
        b.endpoints.join(","),
    );
    let _ = writeln!(
        s,
        "| figure | {} | {} | {}/{} |",
        a.name, b.name, a.name, b.name
    );
    s.push_str("|---|---:|---:|---:|\n");
    for &(key, label, f) in FIGURES {
        let (ma, mb) = (side_median(a, f), side_median(b, f));
        let show = |m: Option<f64>| match m {
            None => "-".to_string(),
            Some(v) if key == "throughput" => thousands(v),
            Some(v) => micros(v),
        };
        let label = if key == "throughput" {
            format!("{label} ({})", unit(spec))
        } else {
            label.to_string()
        };
        let r = ratio(ma, mb).map_or("-".into(), |r| format!("{r:.2}"));
        let _ = writeln!(s, "| {label} | {} | {} | {r} |", show(ma), show(mb));
    }
    if let (Some(ra), Some(rb)) = (a.rss_kib, b.rss_kib) {
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        let r = ratio(Some(ra as f64), Some(rb as f64)).map_or("-".into(), |r| format!("{r:.2}"));
        let _ = writeln!(s, "| resident memory | {} | {} | {r} |", mib(ra), mib(rb));
    }
    s.push('\n');
    for side in sides {
        let rounds: Vec<String> = side
            .runs
            .iter()
            .map(|r| thousands(r.throughput()))
            .collect();
        let errors: u64 = side.runs.iter().map(|r| r.errors).sum();
        let _ = writeln!(
            s,
            "{}: {} by round: {}; {errors} errors",
            side.name,
            unit(spec),
            rounds.join(" / ")
        );
        for run in side.runs.iter() {
            for (m, n) in &run.error_counts {
                let _ = writeln!(s, "  {n} × {m}");
            }
        }
    }
    s
}

fn figures_json(f: impl Fn(Figure) -> Option<f64>) -> serde_json::Value {
    FIGURES
        .iter()
        .map(|&(key, _, g)| (key.to_string(), json!(f(g))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The JSON report: both sides' runs and medians, and the ratios.
pub fn to_json(spec: &LoadSpec, sides: &[Side; 2]) -> serde_json::Value {
    let side = |s: &Side| {
        json!({
            "name": s.name,
            "endpoints": s.endpoints,
            "median": figures_json(|f| side_median(s, f)),
            "runs": s.runs.iter().map(Summary::to_json).collect::<Vec<_>>(),
            "rss_kib": s.rss_kib,
        })
    };
    let [a, b] = sides;
    let mut ratios = figures_json(|f| ratio(side_median(a, f), side_median(b, f)));
    if let (Some(ra), Some(rb)) = (a.rss_kib, b.rss_kib) {
        ratios["rss"] = json!(ratio(Some(ra as f64), Some(rb as f64)));
    }
    json!({
        "workload": spec.workload.name(),
        "rounds": a.runs.len(),
        "clients": spec.clients,
        "conns": spec.conns,
        "a": side(a),
        "b": side(b),
        "ratio": ratios,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn figures_are_printed_for_people() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(1234.0), "1.23 ms");
        assert_eq!(micros(1.5e6), "1.50 s");
    }
}
