//! Performance statistics of an equity curve (floats: statistics only, never money).

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
}
