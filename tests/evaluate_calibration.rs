//! The calibration of `mmtrader evaluate` (issue 14, "How it is checked"): it must find an
//! edge where there is one and not where there is none. On generated hourly series with a
//! planted, known predictable component (drift regimes that persist for two days on average)
//! the desk's edge over random timing has a 95 % interval above zero; on pure random walks of
//! the same volatility per bar, over ten seeds, the interval includes zero in at least nine.
//!
//! The desk runs the rule experts (`--experts rules`: the pivot-momentum experts, which a
//! persistent drift is made for) rather than the CNN and the DQN: training those per series
//! on two cores would take minutes, and what is calibrated here is the evaluation itself (the
//! random policies with the desk's activity, the bootstrap over days), which treats every
//! expert set alike.

mod evaluate_data;

use evaluate_data::{HOUR_MS, Row, SIGMA, START_MS, series, write_csv};
use std::process::Command;

/// Candles per series: 90 days of hours.
const N: usize = 24 * 90;
/// The tested range starts after 10 days of warm-up.
const FROM_MS: i64 = START_MS + 240 * HOUR_MS;
/// The planted component: a drift of 0.35 σ per bar whose sign persists 48 bars on average.
const PLANTED: (f64, f64) = (0.35, 48.0);

/// Runs `evaluate --experts rules --json` on `rows`; returns the JSON document.
fn evaluate(rows: &[Row], tag: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(format!("{tag}.csv"));
    write_csv(&data, rows);
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .args(["evaluate", "--experts", "rules", "--seeds", "100"])
        .args(["--resamples", "1000", "--from", &FROM_MS.to_string()])
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .arg(&json)
        // Thresholds the rule experts' momentum clears now and then, so the desk trades.
        .env("MMTRADER_ORCHESTRATOR__BUY_THRESHOLD", "0.4")
        .env("MMTRADER_ORCHESTRATOR__SELL_THRESHOLD", "0.4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{tag}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{tag}:\n{stdout}");
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// Standard deviation of the bars' log returns.
fn volatility(rows: &[Row]) -> f64 {
    let r: Vec<f64> = rows.windows(2).map(|w| (w[1].4 / w[0].4).ln()).collect();
    let mean = r.iter().sum::<f64>() / r.len() as f64;
    (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (r.len() - 1) as f64).sqrt()
}

fn edge_ci(v: &serde_json::Value) -> (f64, f64) {
    let ci = &v["desk"]["ci95"]["edge"];
    (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap())
}

#[test]
fn evaluate_finds_a_planted_edge_and_none_in_random_walks() {
    // The two kinds of series move alike bar by bar: only the persistence differs.
    for seed in 1..=3 {
        let (walk, planted) = (series(N, seed, None), series(N, seed, Some(PLANTED)));
        for v in [volatility(&walk), volatility(&planted)] {
            assert!((v / SIGMA - 1.0).abs() < 0.05, "volatility {v} vs {SIGMA}");
        }
    }
    for seed in 1..=3 {
        let v = evaluate(&series(N, seed, Some(PLANTED)), &format!("planted-{seed}"));
        let d = &v["desk"];
        let (lo, hi) = edge_ci(&v);
        assert!(
            lo > 0.0 && lo <= d["edge"].as_f64().unwrap() && hi > lo,
            "planted seed {seed}: edge interval [{lo}, {hi}] should lie above zero"
        );
        assert_eq!(v["in_sample"], false);
        assert!(d["round_trips"].as_u64().unwrap() > 0);
        assert!(d["baselines"]["random"]["seeds"].as_u64().unwrap() >= 100);
    }
    let mut holds_zero = 0;
    let mut report = Vec::new();
    for seed in 1..=10 {
        let v = evaluate(&series(N, seed, None), &format!("walk-{seed}"));
        let (lo, hi) = edge_ci(&v);
        holds_zero += usize::from(lo < 0.0 && 0.0 < hi);
        report.push(format!("seed {seed}: [{lo:.4}, {hi:.4}]"));
        // The random policies copy the desk's activity: about as many trades and exposure.
        let d = &v["desk"];
        let random = &d["baselines"]["random"]["mean"];
        let (dt, rt) = (
            d["trades"].as_f64().unwrap(),
            random["trades"].as_f64().unwrap(),
        );
        assert!(
            (rt - dt).abs() <= 0.25 * dt + 4.0,
            "trades {dt} vs random {rt}"
        );
        let (de, re) = (
            d["exposure"].as_f64().unwrap(),
            random["exposure"].as_f64().unwrap(),
        );
        assert!((re - de).abs() < 0.05, "exposure {de} vs random {re}");
    }
    assert!(
        holds_zero >= 9,
        "random walks: the edge interval held zero in {holds_zero} of 10:\n{}",
        report.join("\n")
    );
}
