//! Generated candle series for the `evaluate` tests: a pure random walk, and the same walk
//! with a planted, known predictable component (drift regimes that persist), at the same
//! volatility per bar.

use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

/// 2021-03-01T00:00:00Z, ms.
pub const START_MS: i64 = 1_614_556_800_000;
/// One hour, ms.
pub const HOUR_MS: i64 = 3_600_000;
/// Volatility of a bar's log return.
pub const SIGMA: f64 = 0.004;

/// One candle: open time, open, high, low, close, volume.
pub type Row = (i64, f64, f64, f64, f64, f64);

/// `n` hourly candles from [`START_MS`]. With `planted`, log returns carry a drift of
/// ±`strength`·σ that keeps its sign for regimes of geometric length (mean `regime` bars),
/// and the noise is scaled down so a bar's volatility stays σ; without it they are pure noise.
pub fn series(n: usize, seed: u64, planted: Option<(f64, f64)>) -> Vec<Row> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (drift, regime) = planted.unwrap_or((0.0, 1.0));
    let mu = drift * SIGMA;
    let noise = (SIGMA * SIGMA - mu * mu).sqrt();
    let mut sign = 1.0;
    let mut close = 20_000.0f64;
    (0..n)
        .map(|i| {
            if planted.is_some() && rng.random::<f64>() < 1.0 / regime {
                sign = -sign;
            }
            let e: f64 = StandardNormal.sample(&mut rng);
            let open = close;
            close = open * (sign * mu + noise * e).exp();
            let wick = |rng: &mut rand_chacha::ChaCha8Rng| {
                let w: f64 = StandardNormal.sample(rng);
                (0.3 * SIGMA * w).abs()
            };
            let high = open.max(close) * (1.0 + wick(&mut rng));
            let low = open.min(close) * (1.0 - wick(&mut rng));
            let volume = 1.0 + rng.random::<f64>();
            (
                START_MS + i as i64 * HOUR_MS,
                open,
                high,
                low,
                close,
                volume,
            )
        })
        .collect()
}

/// Writes rows as a CSV with a header (prices to 2 decimals, as a quote currency has).
pub fn write_csv(path: &Path, rows: &[Row]) {
    let mut text = String::from("time,open,high,low,close,volume\n");
    for (t, o, h, l, c, v) in rows {
        text.push_str(&format!("{t},{o:.2},{h:.2},{l:.2},{c:.2},{v:.4}\n"));
    }
    std::fs::write(path, text).unwrap();
}
