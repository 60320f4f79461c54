use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: TuneArgs,
}

fn args(flags: &[&str]) -> TuneArgs {
    Cli::parse_from(std::iter::once("tune").chain(flags.iter().copied())).a
}

#[test]
fn one_knob_at_a_time_starts_at_the_defaults_and_changes_one_knob_per_point() {
    let a = args(&[
        "--knobs",
        "page-size,wal-backend",
        "--wal-backend",
        "io_uring,auto",
    ]);
    let base = Point::defaults();
    let labels: Vec<String> = points(&a, Workload::Put)
        .iter()
        .map(|p| p.label(base))
        .collect();
    assert_eq!(
        labels,
        [
            "default",
            "wal-backend=io_uring",
            "page-size=8192",
            "page-size=16384"
        ]
    );
    // The store alone has no WAL: its knobs are left out.
    let labels: Vec<String> = points(&a, Workload::Mvcc)
        .iter()
        .map(|p| p.label(base))
        .collect();
    assert_eq!(labels, ["default", "page-size=8192", "page-size=16384"]);
}

#[test]
fn a_grid_is_every_combination_with_the_default_first() {
    let a = args(&[
        "--grid",
        "--knobs",
        "batch-limit,page-size",
        "--batch-limit",
        "1000",
        "--page-size",
        "8192,4096",
    ]);
    let pts = points(&a, Workload::RaftMvcc);
    assert_eq!(pts.len(), 4);
    assert_eq!(pts[0], Point::defaults());
    let base = Point::defaults();
    assert_eq!(pts[3].label(base), "batch-limit=1000 page-size=8192");
}

#[test]
fn rounds_move_every_point_through_several_positions() {
    let orders: Vec<Vec<usize>> = (0..3).map(|r| round_order(7, r, 3)).collect();
    assert_eq!(orders[0], [0, 1, 2, 3, 4, 5, 6]);
    assert_eq!(orders[1], [1, 0, 6, 5, 4, 3, 2]);
    assert_eq!(orders[2], [4, 5, 6, 0, 1, 2, 3]);
    let first: Vec<usize> = orders.iter().map(|o| o[0]).collect();
    assert_eq!(first, [0, 1, 4]);
}

#[test]
fn ratios_to_the_default_pair_the_runs_of_one_round() {
    let s = |thr: f64, p99: f64| json!({"throughput": thr, "p50_us": 1.0, "p99_us": p99});
    let pts = [
        Point::defaults(),
        Point::defaults().with(Knob::PageSize, 8192),
    ];
    // A busy second round halves both sides; the point is 10 % faster
    // within each round.
    let samples = vec![
        vec![s(100.0, 10.0), s(50.0, 20.0), s(100.0, 10.0)],
        vec![s(110.0, 10.0), s(55.0, 10.0), s(110.0, 10.0)],
    ];
    let r = summarize(Workload::Mvcc, "test", &pts, &samples);
    let p = &r["points"][1];
    assert_eq!(p["point"], "page-size=8192");
    assert!((p["throughput_vs_default"].as_f64().unwrap() - 1.1).abs() < 1e-9);
    assert_eq!(p["p99_vs_default"], 1.0);
    assert_eq!(p["throughput_range"], json!([55.0, 110.0]));
}

#[test]
fn medians_and_figures_read_as_in_the_docs() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    assert_eq!(thousands(1_234_567.8), "1,234,568");
    assert_eq!(thousands(999.0), "999");
}

#[test]
fn a_point_reaches_the_server_as_its_variables() {
    let p = Point::defaults()
        .with(Knob::WalBackend, 1)
        .with(Knob::BatchInterval, 10);
    let env = p.env();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("CAIRN_WAL_BACKEND"), Some("io_uring"));
    assert_eq!(get("ETCD_BACKEND_BATCH_INTERVAL"), Some("10ms"));
    assert_eq!(get("CAIRN_BACKEND_PAGE_SIZE"), Some("4096"));
    assert_eq!(p.wal().backend, BackendChoice::IoUring);
    assert_eq!(p.store().batch_interval, Duration::from_millis(10));
}
