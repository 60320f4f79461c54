//! `--plot FILE.svg`: both sides' latency by percentile (all rounds of a
//! side merged), on log scales: x is `1 / (1 - q)`, labelled as the
//! percentile (90%, 99%, 99.9%, ...), y the latency in ms. SVG only, with
//! plotters' built-in text estimate (no font libraries).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::Side;
use crate::load::LoadSpec;

/// Points `(1 / (1 - q), latency ms)` up to the resolution the sample count
/// allows (at most 99.999%).
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let top = (h.len() as f64).clamp(1.0, 1e5);
    (0..=200)
        .map(|k| 10f64.powf(f64::from(k) / 40.0))
        .take_while(|&x| x <= top)
        .map(|x| {
            (
                x,
                (h.value_at_quantile(1.0 - 1.0 / x) as f64 / 1e3).max(1e-3),
            )
        })
        .collect()
}

fn merged(side: &Side) -> Histogram<u64> {
    let mut all = Histogram::<u64>::new(3).expect("valid histogram parameters");
    for r in &side.runs {
        let _ = all.add(&r.latency);
    }
    all
}

/// `99.9%` for x = 1000.
fn percentile_label(x: f64) -> String {
    let decimals = (x.log10().round() as i32 - 2).max(0) as usize;
    format!("{:.decimals$}%", 100.0 * (1.0 - 1.0 / x))
}

pub fn draw(path: &Path, spec: &LoadSpec, sides: &[Side; 2]) -> anyhow::Result<()> {
    let curves: Vec<(String, Vec<(f64, f64)>)> = sides
        .iter()
        .map(|s| (s.name.clone(), curve(&merged(s))))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    anyhow::ensure!(!curves.is_empty(), "no latencies to plot");
    let points = || curves.iter().flat_map(|(_, c)| c.iter());
    let x_max = points().map(|p| p.0).fold(10.0, f64::max);
    let y_min = points().map(|p| p.1).fold(f64::INFINITY, f64::min) / 1.5;
    let y_max = points().map(|p| p.1).fold(0.0, f64::max) * 1.5;

    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: latency by percentile ({} clients, {} conns)",
                spec.workload.name(),
                spec.clients,
                spec.conns
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| percentile_label(*x))
        .draw()
        .map_err(|e| fail(&e))?;
    for ((name, c), color) in curves.iter().zip([RED, BLUE]) {
        chart
            .draw_series(LineSeries::new(c.iter().copied(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_labelled_by_their_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
    }

    #[test]
    fn the_curve_stops_where_the_samples_do() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert!(c.last().unwrap().0 <= 1000.0);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
