//! Performance statistics of an equity curve (floats: statistics only, never money).

use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// Summary statistics of one equity curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Final minus starting equity, quote units.
    pub pnl: f64,
    /// `final / start − 1`.
    pub total_return: f64,
    /// Annualized mean/stdev of per-step returns (0 without variance).
    pub sharpe: f64,
    /// Annualized mean over downside deviation of per-step returns (0 without losses).
    pub sortino: f64,
    /// Largest peak-to-trough fall as a fraction of the peak.
    pub max_drawdown: f64,
    /// Winning round trips over all round trips (`None` without round trips).
    pub win_rate: Option<f64>,
    /// Fraction of steps with an open position.
    pub exposure: f64,
    /// Fills executed.
    pub trades: usize,
    /// Completed round trips (flat → position → flat or flip).
    pub round_trips: usize,
}

/// Steps per year for a step of `step_ms`.
pub fn periods_per_year(step_ms: i64) -> f64 {
    365.0 * 86_400_000.0 / step_ms.max(1) as f64
}

/// Drawdown from the running peak at each point, as a fraction (≥ 0).
pub fn drawdowns(equity: &[f64]) -> Vec<f64> {
    let mut peak = f64::MIN;
    equity
        .iter()
        .map(|&e| {
            peak = peak.max(e);
            if peak > 0.0 { (peak - e) / peak } else { 0.0 }
        })
        .collect()
}

/// Statistics of `equity` (the start, then one point per step), with the exposure (fraction
/// of steps with a position) and trade counts from the caller.
pub fn metrics(
    equity: &[f64],
    per_year: f64,
    exposure: f64,
    round_trip_pnls: &[f64],
    trades: usize,
) -> Metrics {
    let (first, last) = match (equity.first(), equity.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => (0.0, 0.0),
    };
    let rets: Vec<f64> = equity
        .windows(2)
        .filter(|w| w[0] > 0.0)
        .map(|w| w[1] / w[0] - 1.0)
        .collect();
    let n = rets.len() as f64;
    let mean = if n > 0.0 {
        rets.iter().sum::<f64>() / n
    } else {
        0.0
    };
    let sd = if n > 1.0 {
        (rets.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let down = if n > 0.0 {
        (rets.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / n).sqrt()
    } else {
        0.0
    };
    let ann = per_year.sqrt();
    let wins = round_trip_pnls.iter().filter(|p| **p > 0.0).count();
    Metrics {
        pnl: last - first,
        total_return: if first > 0.0 { last / first - 1.0 } else { 0.0 },
        sharpe: if sd > 0.0 { mean / sd * ann } else { 0.0 },
        sortino: if down > 0.0 { mean / down * ann } else { 0.0 },
        max_drawdown: drawdowns(equity).into_iter().fold(0.0, f64::max),
        win_rate: (!round_trip_pnls.is_empty()).then(|| wins as f64 / round_trip_pnls.len() as f64),
        exposure,
        trades,
        round_trips: round_trip_pnls.len(),
    }
}

/// 95 % confidence intervals of a curve's total return and annualized Sharpe ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ci95 {
    /// Total return, `(2.5 %, 97.5 %)` percentiles.
    pub total_return: (f64, f64),
    /// Annualized Sharpe ratio, `(2.5 %, 97.5 %)` percentiles.
    pub sharpe: (f64, f64),
    /// Steps per bootstrap block.
    pub block_steps: usize,
    /// Resamples drawn.
    pub resamples: usize,
}

impl Ci95 {
    /// Whether the return interval lies wholly above zero.
    pub fn return_above_zero(&self) -> bool {
        self.total_return.0 > 0.0
    }
}

/// Circular block bootstrap of the per-step returns of `equity` (the start, then one point
/// per step): `resamples` series of the same length, each glued from blocks of `block`
/// consecutive steps at random starts (wrapping), seeded by `seed`. Blocks keep the
/// volatility clustering and autocorrelation within them that an i.i.d. resample would
/// destroy. `None` with fewer than two returns or a non-positive equity.
pub fn block_bootstrap(
    equity: &[f64],
    per_year: f64,
    block: usize,
    resamples: usize,
    seed: u64,
) -> Option<Ci95> {
    if equity.len() < 3 || resamples == 0 || equity.iter().any(|e| e.is_nan() || *e <= 0.0) {
        return None;
    }
    let rets: Vec<f64> = equity.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    let n = rets.len();
    let block = block.clamp(1, n);
    // Prefix sums over the series twice over, so a wrapped block is one difference.
    let mut log = vec![0.0; 2 * n + 1];
    let mut sum = vec![0.0; 2 * n + 1];
    let mut sq = vec![0.0; 2 * n + 1];
    for k in 0..2 * n {
        let r = rets[k % n];
        log[k + 1] = log[k] + r.ln_1p();
        sum[k + 1] = sum[k] + r;
        sq[k + 1] = sq[k] + r * r;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut total = Vec::with_capacity(resamples);
    let mut sharpe = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let (mut l, mut s, mut q, mut left) = (0.0, 0.0, 0.0, n);
        while left > 0 {
            let len = block.min(left);
            let a = rng.random_range(0..n);
            l += log[a + len] - log[a];
            s += sum[a + len] - sum[a];
            q += sq[a + len] - sq[a];
            left -= len;
        }
        total.push(l.exp_m1());
        let nf = n as f64;
        let mean = s / nf;
        let var = ((q - nf * mean * mean) / (nf - 1.0)).max(0.0);
        // Below float noise a resample has no variance (a flat curve): its Sharpe is 0.
        sharpe.push(if var.sqrt() > 1e-12 {
            mean / var.sqrt() * per_year.sqrt()
        } else {
            0.0
        });
    }
    Some(Ci95 {
        total_return: percentiles(&mut total),
        sharpe: percentiles(&mut sharpe),
        block_steps: block,
        resamples,
    })
}

/// The 2.5 % and 97.5 % percentiles (linear between order statistics).
fn percentiles(x: &mut [f64]) -> (f64, f64) {
    x.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let pos = p * (x.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        x[lo] + (x[hi] - x[lo]) * (pos - lo as f64)
    };
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_curve_gives_known_statistics() {
        let eq = [100.0, 110.0, 99.0, 108.9];
        let m = metrics(&eq, 1.0, 0.5, &[5.0, -1.0, 2.0], 6);
        assert!((m.pnl - 8.9).abs() < 1e-12);
        assert!((m.total_return - 0.089).abs() < 1e-12);
        // Returns +10 %, −10 %, +10 %: mean 1/30, sample sd sqrt(((2/30)^2·2 + (4/30)^2)/2).
        let mean = 0.1 / 3.0;
        let sd = (((0.1f64 - mean).powi(2) * 2.0 + (-0.1f64 - mean).powi(2)) / 2.0).sqrt();
        assert!((m.sharpe - mean / sd).abs() < 1e-12);
        let down = (0.01f64 / 3.0).sqrt();
        assert!((m.sortino - mean / down).abs() < 1e-12);
        assert!((m.max_drawdown - 0.1).abs() < 1e-12);
        assert_eq!(m.win_rate, Some(2.0 / 3.0));
        assert_eq!((m.exposure, m.trades, m.round_trips), (0.5, 6, 3));
        let flat = metrics(&[5.0, 5.0], 10.0, 0.0, &[], 0);
        assert_eq!((flat.sharpe, flat.sortino, flat.win_rate), (0.0, 0.0, None));
        assert_eq!(drawdowns(&[1.0, 2.0, 1.0, 3.0]), vec![0.0, 0.0, 0.5, 0.0]);
    }

    /// A curve of `n` steps of mean `drift` with ±`noise` alternating by a seeded coin.
    fn curve(n: usize, drift: f64, noise: f64, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut e = vec![100.0];
        for _ in 0..n {
            let sign = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let last = *e.last().unwrap();
            e.push(last * (1.0 + drift + sign * noise));
        }
        e
    }

    #[test]
    fn the_bootstrap_finds_a_planted_drift_and_no_edge_in_noise() {
        let per_year = periods_per_year(3_600_000);
        let drift = block_bootstrap(&curve(2_000, 0.002, 0.01, 1), per_year, 24, 1_000, 0).unwrap();
        assert!(drift.return_above_zero(), "{drift:?}");
        assert!(drift.sharpe.0 > 0.0, "{drift:?}");
        let mut covers = 0;
        for seed in 0..10 {
            let ci =
                block_bootstrap(&curve(2_000, 0.0, 0.01, seed), per_year, 24, 1_000, 0).unwrap();
            assert!(ci.total_return.0 < ci.total_return.1 && ci.sharpe.0 < ci.sharpe.1);
            if ci.total_return.0 < 0.0 && ci.total_return.1 > 0.0 {
                covers += 1;
            }
        }
        assert!(covers >= 8, "{covers} of 10 noise curves had a CI around 0");
        // Same seed, same interval; a flat curve has nothing to resample.
        let a = block_bootstrap(&curve(500, 0.0, 0.01, 3), per_year, 24, 200, 7);
        assert_eq!(
            a,
            block_bootstrap(&curve(500, 0.0, 0.01, 3), per_year, 24, 200, 7)
        );
        let flat = block_bootstrap(&[5.0; 50], per_year, 5, 100, 0).unwrap();
        assert_eq!((flat.total_return, flat.sharpe), ((0.0, 0.0), (0.0, 0.0)));
        assert_eq!(block_bootstrap(&[5.0, 6.0], per_year, 5, 100, 0), None);
    }
}
