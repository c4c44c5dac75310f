//! `mmtrader evaluate`: the checkpoints scored on a date range they were not trained on, every
//! number beside its baselines.
//!
//! **Range.** `--from T [--to T]` is the tested range `[from, to)`: decisions at candle closes
//! inside it, scored on candles inside it (candles closing after `to` are dropped before
//! anything is built, so no label or outcome reads past it). Candles before `from` only warm
//! the inputs up. A checkpoint whose training range (its ancestors' included) overlaps the
//! tested range is refused (exit 4) unless `--allow-in-sample`, and then every number is
//! marked in-sample; a DQN beside a CNN it was not trained with is refused the same way.
//!
//! **CNN.** Per level of the CNN's timeframe, on the rows whose input time lies in the range:
//! samples, direction accuracy, price error (bp of the close) and time error (bars) of the
//! model, of the naive pivot guess (the opposite of the newest known pivot, at the price of the
//! last one of that kind), of "no move" (price = close) and of the class prior (always the
//! majority direction of the training targets). The baselines' horizon and prior come from
//! the checkpoint's training targets (older checkpoints: from the targets known before
//! `from`). A level without samples is n/a.
//!
//! **Desk.** The orchestrator with the chosen experts runs through the backtest engine
//! ([`backtest::run`]: risk manager, paper executor, fees, slippage). Beside it: buy-and-hold,
//! flat, and at least 100 seeds of a random policy that trades as much as the desk did (it
//! enters from flat and exits at random closes with the desk's entry and exit rates, so its
//! exposure and turnover match in expectation, sized at the desk's mean position fraction,
//! paying the same fees and slippage; simulated exactly in fixed point). Confidence intervals
//! are 95 % percentile intervals of a block bootstrap over UTC days (a day's steps stay
//! together). The *edge* is the desk's daily return minus the random policies' mean daily
//! return, summed over the days: it is zero in expectation for a desk without timing skill,
//! whatever the fees, so its interval says whether there is skill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use crate::analysis::analyze::{detect_interval, read_candles};
use crate::analysis::input::InputConfig;
use crate::analysis::pivots::LEVELS;
use crate::app::backtest::ExpertSet;
use crate::app::progress::Progress;
use crate::app::train::{MEDIAN_TIME, PRIOR_HIGH};
use crate::cli::{EXIT_INPUT, EXIT_OK, EXIT_USAGE, Failure};
use crate::config::Config;
use crate::market::types::{Candle, Price, Qty, SCALE};
use crate::models::checkpoint::{
    CheckpointConfig, CheckpointError, CheckpointManager, CheckpointMeta, MetricGoal,
};
use crate::models::cnn::{CnnConfig, CnnModel};
use crate::models::cnn_train::{CnnDataset, CnnMetrics, DatasetConfig, naive_baseline, score};
use crate::models::device::device_from_config;
use crate::models::dqn::DqnAgent;
use crate::models::input::{InputShape, SeriesLayout, TimeScale, interval_name, timeframe_index};
use crate::models::rl_train::DqnModelConfig;
use crate::models::runtime::{CNN_METRIC, DQN_METRIC, InferenceCore, spec_for};
use crate::models::split::{TimeRange, check_dqn_lineage, iso, lineage_line, refuse_in_sample};
use crate::orchestrator::backtest::{self, BacktestResult, BacktestSpec, TradingSetup};
use crate::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use crate::orchestrator::metrics::{Metrics, metrics, periods_per_year};
use crate::orchestrator::models::model_experts;
use crate::trading::money::Money;

/// Fewest random-policy seeds `--seeds` accepts.
pub const MIN_SEEDS: usize = 100;
/// Round trips below which the desk's numbers come with a warning.
pub const MIN_ROUND_TRIPS: usize = 30;
/// Days below which the bootstrap intervals come with a warning.
pub const MIN_DAYS: usize = 20;

/// `mmtrader evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Candle file (any layout `mmtrader analyze` reads; gzip allowed).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// The reference symbol's candles, as the CNN was trained with them (`train --reference`).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Start of the tested range: an ISO-8601 date or datetime in UTC (2021-03-01,
    /// 2021-03-01T12:00:00Z) or epoch milliseconds. Earlier candles only warm up.
    #[arg(long, value_name = "T")]
    pub from: String,
    /// End of the tested range (exclusive), same forms (default: the end of the data).
    #[arg(long, value_name = "T")]
    pub to: Option<String>,
    /// Checkpoint folder (default: `[models] checkpoint_dir`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
    /// CNN checkpoint id (`ID` or `MODEL/ID`; default: the best usable one, or the one the
    /// named DQN was trained with).
    #[arg(long, value_name = "ID")]
    pub cnn: Option<String>,
    /// DQN checkpoint id (`ID` or `MODEL/ID`; default: the best one trained with the CNN).
    #[arg(long, value_name = "ID")]
    pub dqn: Option<String>,
    /// Experts of the desk: the CNN and DQN checkpoints, the rule experts, or both.
    #[arg(long, value_enum, default_value_t = ExpertSet::All)]
    pub experts: ExpertSet,
    /// Also write everything as one JSON document to this file.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Score checkpoints whose training range overlaps the tested range, every number marked
    /// in-sample.
    #[arg(long)]
    pub allow_in_sample: bool,
    /// Random-policy seeds (at least 100).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub seeds: usize,
    /// Bootstrap resamples of the confidence intervals.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub resamples: usize,
    /// Symbol the candles are of.
    #[arg(long, default_value = "BTCUSDT")]
    pub symbol: String,
    /// Torch device: `cpu` (deterministic), `auto` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Market impact every fill pays on top of the slippage, basis points (as `backtest`).
    #[arg(long, value_name = "BPS", default_value_t = backtest::DEFAULT_IMPACT_BPS)]
    pub impact_bps: u32,
    /// Seed of libtorch, the random policies and the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

// ---------------------------------------------------------------------------------------
// Statistics: day blocks and the bootstrap.
// ---------------------------------------------------------------------------------------

const DAY_MS: i64 = 86_400_000;

/// A curve's per-step returns grouped into UTC days by step time (`start`: the equity before
/// the first step).
pub fn day_blocks(curve: &[(i64, f64)], start: f64) -> Vec<(i64, Vec<f64>)> {
    let mut out: Vec<(i64, Vec<f64>)> = Vec::new();
    let mut prev = start;
    for &(t, e) in curve {
        let r = if prev > 0.0 { e / prev - 1.0 } else { 0.0 };
        prev = e;
        let day = t.div_euclid(DAY_MS);
        match out.last_mut() {
            Some((d, v)) if *d == day => v.push(r),
            _ => out.push((day, vec![r])),
        }
    }
    out
}

/// Compounded return of one day's step returns.
fn compound(steps: &[f64]) -> f64 {
    steps.iter().fold(1.0, |a, r| a * (1.0 + r)) - 1.0
}

/// Annualized Sharpe ratio of step returns (0 without variance), as the backtest's metrics.
fn sharpe(steps: &[f64], per_year: f64) -> f64 {
    let n = steps.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean = steps.iter().sum::<f64>() / n;
    let sd = (steps.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    if sd > 0.0 {
        mean / sd * per_year.sqrt()
    } else {
        0.0
    }
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// 95 % interval `[lo, hi]` (2.5 % and 97.5 % quantiles) of `values`.
fn interval(mut values: Vec<f64>) -> [f64; 2] {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    [quantile(&values, 0.025), quantile(&values, 0.975)]
}

/// Bootstrap intervals of a curve: total return and Sharpe ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurveCi {
    /// 95 % interval of the total return.
    pub total_return: [f64; 2],
    /// 95 % interval of the annualized Sharpe ratio.
    pub sharpe: [f64; 2],
}

/// Block bootstrap over days: `resamples` times, as many days as there are are drawn with
/// replacement (each with all its steps), and the compounded return and Sharpe ratio of the
/// drawn steps are taken; their 2.5 % and 97.5 % quantiles are the interval.
pub fn bootstrap_curve(
    blocks: &[(i64, Vec<f64>)],
    per_year: f64,
    resamples: usize,
    seed: u64,
) -> CurveCi {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut rets, mut sharpes) = (Vec::new(), Vec::new());
    if blocks.is_empty() {
        return CurveCi {
            total_return: [0.0, 0.0],
            sharpe: [0.0, 0.0],
        };
    }
    let mut steps = Vec::new();
    for _ in 0..resamples.max(1) {
        steps.clear();
        for _ in 0..blocks.len() {
            steps.extend_from_slice(&blocks[rng.random_range(0..blocks.len())].1);
        }
        rets.push(compound(&steps));
        sharpes.push(sharpe(&steps, per_year));
    }
    CurveCi {
        total_return: interval(rets),
        sharpe: interval(sharpes),
    }
}

/// Block bootstrap of a sum of per-day values: its 95 % interval.
pub fn bootstrap_sum(days: &[f64], resamples: usize, seed: u64) -> [f64; 2] {
    if days.is_empty() {
        return [0.0, 0.0];
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let sums = (0..resamples.max(1))
        .map(|_| {
            (0..days.len())
                .map(|_| days[rng.random_range(0..days.len())])
                .sum()
        })
        .collect();
    interval(sums)
}

/// Compounded return per UTC day of a curve (the day of each step's time), by day.
fn daily_returns(curve: &[(i64, f64)], start: f64) -> BTreeMap<i64, f64> {
    day_blocks(curve, start)
        .into_iter()
        .map(|(d, v)| (d, compound(&v)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Random policies with the desk's activity, simulated exactly.
// ---------------------------------------------------------------------------------------

/// How much the desk traded, which its random counterpart copies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Activity {
    /// Steps of the run.
    pub steps: usize,
    /// Steps ending with a position.
    pub exposed: usize,
    /// Entries from flat.
    pub entries: usize,
    /// Mean position notional over equity while exposed, basis points.
    pub fraction_bps: u32,
    /// The desk held a short at some point.
    pub shorts: bool,
}

/// How much the desk traded: its exposure as the backtest measured it (steps ending with a
/// position), its round trips (each one entry, a stop-out and a re-entry in one candle two),
/// and its mean entry size as a share of the equity at the time.
pub fn activity(r: &BacktestResult) -> Activity {
    let steps = r.equity.len();
    let mut entries = 0u32;
    let mut shorts = false;
    let mut fraction_sum = 0.0;
    for t in &r.trades {
        // A trip's first fill opens it (trips are numbered from 1, in order).
        if t.trip <= entries {
            continue;
        }
        entries = t.trip;
        shorts |= t.position.raw() < 0;
        let before = r.equity.partition_point(|e| e.0 < t.time_ms);
        let equity = if before == 0 {
            r.start_equity
        } else {
            r.equity[before - 1].1
        };
        if equity > 0.0 {
            fraction_sum += Money::notional(t.price, t.qty).to_f64() / equity;
        }
    }
    let fraction = if entries > 0 {
        fraction_sum / f64::from(entries)
    } else {
        0.0
    };
    Activity {
        steps,
        exposed: (r.metrics.exposure * steps as f64).round() as usize,
        entries: entries as usize,
        fraction_bps: (fraction * 10_000.0).round().clamp(0.0, 1e6) as u32,
        shorts,
    }
}

/// What a random run trades on and pays.
#[derive(Debug, Clone)]
pub struct RandomSetup<'a> {
    /// Step times, ms (candle closes).
    pub times: &'a [i64],
    /// Close of each step.
    pub closes: &'a [Price],
    /// Activity to copy.
    pub activity: Activity,
    /// Taker fee, basis points (exact decimal).
    pub fee_bps: Price,
    /// Half-spread paid on every fill (slippage plus impact), basis points.
    pub slippage_bps: u32,
    /// Starting equity.
    pub equity0: Money,
    /// Steps per year (for the Sharpe ratio).
    pub per_year: f64,
}

/// One random run: its equity after each step and its statistics.
#[derive(Debug, Clone)]
pub struct RandomRun {
    /// Equity after each step, quote.
    pub equity: Vec<(i64, f64)>,
    /// Statistics.
    pub metrics: Metrics,
    /// Final exact equity.
    pub final_equity: Money,
}

/// Execution price of a buy (`true`) or sell at `close`: worse by the slippage, rounded
/// against the trader (as the backtest's book).
fn fill_price(buy: bool, close: Price, slippage_bps: u32) -> Price {
    let raw = close.raw() as i128;
    let bps = i128::from(slippage_bps);
    Price(if buy {
        (raw * (10_000 + bps) + 9_999) / 10_000
    } else {
        raw * (10_000 - bps).max(0) / 10_000
    } as i64)
}

/// A random policy with the desk's entry and exit rates (a two-state chain: from flat it enters
/// with probability entries / flat steps, in a position it exits with probability entries /
/// exposed steps), long, or long or short at even odds when the desk shorted.
pub fn random_run(s: &RandomSetup<'_>, seed: u64) -> RandomRun {
    let a = s.activity;
    let flat_steps = a.steps.saturating_sub(a.exposed);
    let enter_p = if a.entries == 0 {
        0.0
    } else if flat_steps == 0 {
        1.0
    } else {
        (a.entries as f64 / flat_steps as f64).min(1.0)
    };
    let exit_p = if a.exposed == 0 {
        1.0
    } else {
        (a.entries as f64 / a.exposed as f64).min(1.0)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut cash = s.equity0;
    let mut qty: i64 = 0;
    let mut curve = Vec::with_capacity(s.times.len());
    let mut trips = Vec::new();
    let mut trip_start = Money::ZERO;
    let (mut trades, mut exposed) = (0usize, 0usize);
    let value = |cash: Money, qty: i64, close: Price| {
        Money(cash.raw() + Money::notional(close, Qty(qty)).raw())
    };
    for (&t, &close) in s.times.iter().zip(s.closes) {
        let u: f64 = rng.random();
        if qty == 0 && u < enter_p {
            let equity = value(cash, qty, close);
            let short = a.shorts && rng.random::<bool>();
            let price = fill_price(!short, close, s.slippage_bps);
            let budget = equity.mul_bps_floor(a.fraction_bps);
            let q = if price.raw() > 0 && budget.raw() > 0 {
                (budget.raw() * SCALE as i128 / price.raw() as i128).min(i64::MAX as i128) as i64
            } else {
                0
            };
            if q > 0 {
                let notional = Money::notional(price, Qty(q));
                let fee = notional.mul_decimal_bps_ceil(s.fee_bps);
                trip_start = equity;
                cash = if short {
                    Money(cash.raw() + notional.raw() - fee.raw())
                } else {
                    Money(cash.raw() - notional.raw() - fee.raw())
                };
                qty = if short { -q } else { q };
                trades += 1;
            }
        } else if qty != 0 && u < exit_p {
            let buy = qty < 0;
            let price = fill_price(buy, close, s.slippage_bps);
            let notional = Money::notional(price, Qty(qty.abs()));
            let fee = notional.mul_decimal_bps_ceil(s.fee_bps);
            cash = if buy {
                Money(cash.raw() - notional.raw() - fee.raw())
            } else {
                Money(cash.raw() + notional.raw() - fee.raw())
            };
            qty = 0;
            trades += 1;
            trips.push(Money(cash.raw() - trip_start.raw()).to_f64());
        }
        if qty != 0 {
            exposed += 1;
        }
        curve.push((t, value(cash, qty, close).to_f64()));
    }
    let final_equity = s.closes.last().map_or(cash, |&c| value(cash, qty, c));
    let with_start: Vec<f64> = std::iter::once(s.equity0.to_f64())
        .chain(curve.iter().map(|e| e.1))
        .collect();
    let m = metrics(
        &with_start,
        s.per_year,
        exposed as f64 / curve.len().max(1) as f64,
        &trips,
        trades,
    );
    RandomRun {
        equity: curve,
        metrics: m,
        final_equity,
    }
}

// ---------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------

/// Scores of one predictor at one level (None: not applicable, or no samples).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Scores {
    /// Share of right high/low calls.
    pub direction_accuracy: Option<f64>,
    /// Mean absolute pivot price error, bp of the close.
    pub price_error_bp: Option<f64>,
    /// Mean absolute error of the bars until the pivot.
    pub time_error_bars: Option<f64>,
}

/// One row of the CNN table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelRow {
    /// Timeframe of the pivots (`1h`).
    pub timeframe: String,
    /// Level, 1-based.
    pub level: usize,
    /// Rows with a target at this level.
    pub n: usize,
    /// The CNN.
    pub model: Scores,
    /// The naive pivot guess.
    pub naive: Scores,
    /// Price = close, the typical horizon (no direction).
    pub no_move: Scores,
    /// Always the training targets' majority direction (direction only).
    pub prior: Scores,
}

/// The CNN section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CnnReport {
    /// `model/id`.
    pub checkpoint: String,
    /// Rows (input times) inside the tested range.
    pub rows: usize,
    /// Where the baselines' prior and horizon come from.
    pub priors_from: String,
    /// Every number here is in-sample.
    pub in_sample: bool,
    /// One row per level.
    pub levels: Vec<LevelRow>,
}

/// Statistics of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PolicyStats {
    /// Total return.
    #[serde(rename = "return")]
    pub total_return: f64,
    /// Annualized Sharpe ratio.
    pub sharpe: f64,
    /// Largest peak-to-trough fall.
    pub max_drawdown: f64,
    /// Fills.
    pub trades: f64,
    /// Share of steps with a position.
    pub exposure: f64,
}

impl From<&Metrics> for PolicyStats {
    fn from(m: &Metrics) -> Self {
        Self {
            total_return: m.total_return,
            sharpe: m.sharpe,
            max_drawdown: m.max_drawdown,
            trades: m.trades as f64,
            exposure: m.exposure,
        }
    }
}

/// The random policies over all seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RandomStats {
    /// Seeds run.
    pub seeds: usize,
    /// Mean of each statistic.
    pub mean: PolicyStats,
    /// 95th percentile of each statistic.
    pub p95: PolicyStats,
    /// Share of seeds whose return the desk's exceeds.
    pub desk_beats: f64,
    /// The activity they copy.
    pub activity: Activity,
}

/// The baselines beside the desk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baselines {
    /// Buy at the first close and hold (same slippage and fee).
    pub buy_and_hold: PolicyStats,
    /// Never trade.
    pub flat: PolicyStats,
    /// Random policies with the desk's activity.
    pub random: RandomStats,
}

/// Confidence intervals of the desk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DeskCi {
    /// Total return.
    #[serde(rename = "return")]
    pub total_return: [f64; 2],
    /// Sharpe ratio.
    pub sharpe: [f64; 2],
    /// Edge over the random policies.
    pub edge: [f64; 2],
}

/// The desk section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeskReport {
    /// Experts run.
    pub experts: ExpertSet,
    /// Every number here is in-sample.
    pub in_sample: bool,
    /// Total return.
    #[serde(rename = "return")]
    pub total_return: f64,
    /// Annualized Sharpe ratio.
    pub sharpe: f64,
    /// Largest peak-to-trough fall.
    pub max_drawdown: f64,
    /// Fills.
    pub trades: usize,
    /// Completed round trips.
    pub round_trips: usize,
    /// Share of steps with a position.
    pub exposure: f64,
    /// Decisions (steps).
    pub steps: usize,
    /// UTC days the bootstrap draws from.
    pub days: usize,
    /// Sum over days of the desk's daily return minus the random policies' mean.
    pub edge: f64,
    /// 95 % intervals (block bootstrap over days).
    pub ci95: DeskCi,
    /// Buy-and-hold, flat, random.
    pub baselines: Baselines,
}

/// A checkpoint scored, with its training range and lineage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointReport {
    /// Model name.
    pub model: String,
    /// Id.
    pub id: String,
    /// Training spans, ISO (empty: not recorded).
    pub training_ranges: Vec<[String; 2]>,
    /// Its lineage as stored.
    pub lineage: crate::models::split::Lineage,
    /// The same in one line.
    pub summary: String,
    /// It learned from the tested range (or may have).
    pub in_sample: bool,
}

/// The tested range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tested {
    /// Start, ISO.
    pub from: String,
    /// End (exclusive), ISO, `+inf` when open.
    pub to: String,
    /// Start, ms.
    pub from_ms: i64,
    /// End, ms.
    pub to_ms: i64,
    /// Candle interval, ms.
    pub interval_ms: i64,
}

/// Everything `evaluate` found, as `--json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluateReport {
    /// Data file name.
    pub data: String,
    /// The tested range.
    pub tested: Tested,
    /// Some number is in-sample (then each section says which).
    pub in_sample: bool,
    /// Checkpoints scored.
    pub checkpoints: Vec<CheckpointReport>,
    /// The CNN table (None: no CNN scored).
    pub cnn: Option<CnnReport>,
    /// The desk.
    pub desk: Option<DeskReport>,
    /// Plain warnings.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// The CNN table.
// ---------------------------------------------------------------------------------------

/// The class prior and typical horizon per level the baselines use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Priors {
    /// Share of highs among the training targets.
    pub share_high: [Option<f64>; LEVELS],
    /// Median target time offset (model units).
    pub median_time: [Option<f64>; LEVELS],
}

impl Priors {
    /// From a CNN checkpoint's recorded training targets.
    pub fn of_checkpoint(meta: &CheckpointMeta) -> Option<Self> {
        let get = |l: usize, k: &str| meta.metrics.get(&format!("l{}_{k}", l + 1)).copied();
        let p = Self {
            share_high: std::array::from_fn(|l| get(l, PRIOR_HIGH)),
            median_time: std::array::from_fn(|l| get(l, MEDIAN_TIME)),
        };
        p.share_high.iter().any(Option::is_some).then_some(p)
    }

    /// From the targets of `rows` known by `cutoff_ms` (data before the tested range).
    pub fn of_rows(ds: &CnnDataset, rows: &[usize], cutoff_ms: i64) -> Self {
        let mut p = Self {
            share_high: [None; LEVELS],
            median_time: [None; LEVELS],
        };
        for l in 0..LEVELS {
            let known: Vec<_> = rows
                .iter()
                .filter(|&&r| ds.target_known_ms[r][l] <= cutoff_ms)
                .filter_map(|&r| ds.targets[r][l])
                .collect();
            if known.is_empty() {
                continue;
            }
            let mut t: Vec<f32> = known.iter().map(|x| x.time_offset).collect();
            t.sort_by(f32::total_cmp);
            p.share_high[l] = Some(known.iter().filter(|x| x.high).count() as f64 / t.len() as f64);
            p.median_time[l] = Some(f64::from(t[t.len() / 2]));
        }
        p
    }
}

/// The table of `model` on `rows` of `ds`, each level beside its baselines.
pub fn cnn_levels(
    model: &CnnModel,
    ds: &CnnDataset,
    rows: &[usize],
    priors: &Priors,
) -> Vec<LevelRow> {
    let m = crate::models::cnn_train::evaluate(model, ds, rows, i64::MAX);
    let typical: [f64; LEVELS] = std::array::from_fn(|l| priors.median_time[l].unwrap_or(0.0));
    let naive = naive_baseline(ds, rows, typical);
    let no_move = score(ds, rows, i64::MAX, |_, l| (0.0, typical[l], true));
    let prior = score(ds, rows, i64::MAX, |_, l| {
        (0.0, typical[l], priors.share_high[l].unwrap_or(0.5) >= 0.5)
    });
    let tf = interval_name(ds.interval_ms);
    let pick = |c: &CnnMetrics, l: usize, dir: bool, price: bool, time: bool| {
        let x = &c.levels[l];
        let on = |b: bool, v: f64| (b && x.samples > 0).then_some(v);
        Scores {
            direction_accuracy: on(dir, x.direction_accuracy),
            price_error_bp: on(price, x.price_error_bp),
            time_error_bars: on(time, x.time_error_bars),
        }
    };
    (0..LEVELS)
        .map(|l| {
            let timed = priors.median_time[l].is_some();
            LevelRow {
                timeframe: tf.clone(),
                level: l + 1,
                n: m.levels[l].samples,
                model: pick(&m, l, true, true, true),
                naive: pick(&naive, l, true, true, timed),
                no_move: pick(&no_move, l, false, true, timed),
                prior: pick(&prior, l, priors.share_high[l].is_some(), false, false),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The command.
// ---------------------------------------------------------------------------------------

fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error: e.into(),
    }
}

fn input(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_INPUT,
        error: anyhow::anyhow!("{e}"),
    }
}

/// The rule experts the backtest runs beside the models.
fn rule_experts() -> Vec<Box<dyn Expert>> {
    vec![
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig::default())),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "slow_momentum".into(),
            lookback: 60,
            min_candles: 80,
            ..PivotMomentumConfig::default()
        })),
    ]
}

/// Candles of `path` that close at or before `to_ms`, and their interval.
fn load_cut(path: &Path, to_ms: i64) -> Result<(Vec<Candle>, i64), Failure> {
    let loaded = read_candles(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    for bad in &loaded.bad_rows {
        eprintln!(
            "{}: line {}: {} (skipped)",
            path.display(),
            bad.line,
            bad.error
        );
    }
    let mut candles = loaded.candles;
    let interval = detect_interval(&candles);
    candles.retain(|c| c.open_time_ms.saturating_add(interval) <= to_ms);
    Ok((candles, interval))
}

fn manager(
    config: &Config,
    dir: &Path,
    model: &str,
    metric: &str,
    goal: MetricGoal,
) -> Result<CheckpointManager, Failure> {
    CheckpointManager::new(CheckpointConfig {
        root: dir.to_path_buf(),
        model_name: model.to_string(),
        keep: config.models.keep_best,
        metric: metric.to_string(),
        goal,
    })
    .map_err(|e| Failure::runtime(anyhow::anyhow!("checkpoints in {}: {e}", dir.display())))
}

/// `ID` or `MODEL/ID` → (model, id).
fn split_id<'a>(text: &'a str, default_model: &'a str) -> (&'a str, &'a str) {
    text.split_once('/').unwrap_or((default_model, text))
}

/// The checkpoint `id` of `manager`'s model, or the reason it is not there.
fn find(m: &CheckpointManager, flag: &str, id: &str) -> Result<CheckpointMeta, Failure> {
    let all = m
        .list()
        .map_err(|e| Failure::runtime(anyhow::anyhow!("{e}")))?;
    all.iter().find(|c| c.id == id).cloned().ok_or_else(|| {
        let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        input(format!(
            "{flag} {id:?}: no such checkpoint in {}; expected ID or MODEL/ID of one of: {}",
            m.dir().display(),
            if ids.is_empty() {
                "(none)".to_string()
            } else {
                ids.join(", ")
            }
        ))
    })
}

fn build_cnn(device: tch::Device) -> impl FnOnce(CnnConfig) -> Result<CnnModel, String> {
    move |c: CnnConfig| {
        if c.input != InputShape::encoded(c.input.window) {
            return Err(format!("input shape {:?} is not this layout's", c.input));
        }
        c.check()?;
        Ok(CnnModel::new(c, device))
    }
}

fn load_cnn(
    m: &CheckpointManager,
    meta: &CheckpointMeta,
    device: tch::Device,
) -> Result<CnnModel, CheckpointError> {
    m.load_model(meta, build_cnn(device), |x: &mut CnnModel| &mut x.vs)
}

fn load_dqn(
    m: &CheckpointManager,
    meta: &CheckpointMeta,
    cnn: &CnnConfig,
    device: tch::Device,
) -> Result<DqnAgent, CheckpointError> {
    let spec = spec_for(cnn);
    m.load_model(
        meta,
        |c: DqnModelConfig| {
            if c.state != spec {
                return Err(format!(
                    "state {:?} does not fit the CNN's {spec:?}",
                    c.state
                ));
            }
            DqnAgent::new(c.agent, device).map_err(|e| e.to_string())
        },
        |a: &mut DqnAgent| &mut a.vs,
    )
}

/// The chosen checkpoints, loaded.
struct Chosen {
    cnn: Option<(CnnModel, CheckpointMeta)>,
    dqn: Option<(DqnAgent, CheckpointMeta)>,
}

/// The CNN (when models are asked for, or `--cnn`) and the DQN (when the desk runs the
/// models, or `--dqn` names one).
fn choose(
    config: &Config,
    args: &EvaluateArgs,
    device: tch::Device,
    desk_runs: bool,
) -> Result<Chosen, Failure> {
    let models = args.experts != ExpertSet::Rules;
    let want_dqn = models && (desk_runs || args.dqn.is_some());
    if !models && args.cnn.is_none() {
        return Ok(Chosen {
            cnn: None,
            dqn: None,
        });
    }
    let dir = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| config.models.checkpoint_path(&config.paths.data_dir));
    // A named DQN decides the default CNN: the one it was trained with.
    let named_dqn = match (&args.dqn, models) {
        (Some(text), true) => {
            let (model, id) = split_id(text, &config.models.dqn_model);
            let m = manager(config, &dir, model, DQN_METRIC, MetricGoal::Maximize)?;
            Some((m.clone(), find(&m, "--dqn", id)?))
        }
        _ => None,
    };
    let cnn_text = args.cnn.clone().or_else(|| {
        named_dqn
            .as_ref()
            .and_then(|(_, d)| d.lineage.cnn.as_ref().map(ToString::to_string))
    });
    let (cnn_model, cnn_meta) = match &cnn_text {
        Some(text) => {
            let (model, id) = split_id(text, &config.models.cnn_model);
            let m = manager(config, &dir, model, CNN_METRIC, MetricGoal::Minimize)?;
            let meta = find(&m, "--cnn", id)?;
            let cnn = load_cnn(&m, &meta, device).map_err(|e| input(format!("--cnn: {e}")))?;
            (cnn, meta)
        }
        None => {
            let m = manager(
                config,
                &dir,
                &config.models.cnn_model,
                CNN_METRIC,
                MetricGoal::Minimize,
            )?;
            let mut reasons = Vec::new();
            let mut got = None;
            for meta in m
                .list()
                .map_err(|e| Failure::runtime(anyhow::anyhow!("{e}")))?
            {
                match load_cnn(&m, &meta, device) {
                    Ok(c) => {
                        got = Some((c, meta));
                        break;
                    }
                    Err(e) => reasons.push(format!("  skipped {}: {e}", meta.id)),
                }
            }
            got.ok_or_else(|| {
                input(format!(
                    "no usable checkpoint of {} in {}: train one (`mmtrader train cnn --until \
                     T`), pick another folder with --checkpoints, or run --experts rules{}",
                    config.models.cnn_model,
                    m.dir().display(),
                    reasons.iter().map(|r| format!("\n{r}")).collect::<String>()
                ))
            })?
        }
    };
    if !want_dqn {
        return Ok(Chosen {
            cnn: Some((cnn_model, cnn_meta)),
            dqn: None,
        });
    }
    let cnn_cfg = cnn_model.net.config();
    let dqn = match named_dqn {
        Some((m, meta)) => {
            check_dqn_lineage(&meta, &cnn_meta).map_err(input)?;
            let agent =
                load_dqn(&m, &meta, &cnn_cfg, device).map_err(|e| input(format!("--dqn: {e}")))?;
            (agent, meta)
        }
        None => {
            let m = manager(
                config,
                &dir,
                &config.models.dqn_model,
                DQN_METRIC,
                MetricGoal::Maximize,
            )?;
            let all = m
                .list()
                .map_err(|e| Failure::runtime(anyhow::anyhow!("{e}")))?;
            let mut others = Vec::new();
            let mut got = None;
            for meta in &all {
                if check_dqn_lineage(meta, &cnn_meta).is_err() {
                    others.push(format!(
                        "{} ({})",
                        meta.id,
                        meta.lineage
                            .cnn
                            .as_ref()
                            .map_or_else(|| "no recorded CNN".into(), |c| format!("CNN {c}"))
                    ));
                    continue;
                }
                match load_dqn(&m, meta, &cnn_cfg, device) {
                    Ok(a) => {
                        got = Some((a, meta.clone()));
                        break;
                    }
                    Err(e) => others.push(format!("{} (unusable: {e})", meta.id)),
                }
            }
            got.ok_or_else(|| {
                input(format!(
                    "no usable DQN checkpoint in {} was trained with CNN checkpoint {}/{} (a DQN \
                     reads its CNN's features and is refused beside another): train one with \
                     `mmtrader train rl --cnn {}`, name another CNN with --cnn, or run \
                     --experts rules; DQN checkpoints there: {}",
                    m.dir().display(),
                    cnn_meta.model_name,
                    cnn_meta.id,
                    cnn_meta.model_name,
                    if others.is_empty() {
                        "(none)".to_string()
                    } else {
                        others.join(", ")
                    }
                ))
            })?
        }
    };
    Ok(Chosen {
        cnn: Some((cnn_model, cnn_meta)),
        dqn: Some(dqn),
    })
}

/// Refuses a CNN checkpoint on data of another layout: another candle interval, or the
/// reference series present on one side only, or of another interval.
fn check_layout(
    meta: &CheckpointMeta,
    cfg: &CnnConfig,
    scale: &TimeScale,
    layout: &SeriesLayout,
    reference: bool,
) -> Result<(), Failure> {
    let name = format!("{}/{}", meta.model_name, meta.id);
    let trained = cfg.layout.unwrap_or(SeriesLayout::LIVE);
    let fits = match cfg.layout {
        Some(l) => l == *layout,
        // Older checkpoints read the 1s/1m/1h/1d series of their timeframe.
        None => layout.is_standard(),
    };
    if cfg.timeframe != scale.slot || !fits {
        return Err(input(format!(
            "CNN checkpoint {name} was trained on {} candles (input layout {trained}), but \
             --data{} give {} candles (input layout {layout}): evaluate it on data of the \
             interval and reference it was trained on",
            cfg.layout.map_or_else(
                || cfg.timeframe.to_string(),
                |l| interval_name(l.intervals_ms[timeframe_index(cfg.timeframe)])
            ),
            if reference { " and --reference" } else { "" },
            interval_name(scale.interval_ms),
        )));
    }
    // Older checkpoints do not say whether they had a reference series.
    if meta.lineage.data.is_some() && cfg.layout.is_none() {
        match (&meta.lineage.reference, reference) {
            (Some(r), false) => {
                return Err(input(format!(
                    "CNN checkpoint {name} was trained with the reference series from {}: pass \
                     the same symbol's candles of the tested range with --reference",
                    r.file
                )));
            }
            (None, true) => {
                return Err(input(format!(
                    "CNN checkpoint {name} was trained without a reference series: leave \
                     --reference out"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn checkpoint_report(meta: &CheckpointMeta, tested: TimeRange) -> CheckpointReport {
    let ranges = meta.lineage.known_ranges().unwrap_or_default();
    CheckpointReport {
        model: meta.model_name.clone(),
        id: meta.id.clone(),
        training_ranges: ranges
            .iter()
            .map(|r| [iso(r.from_ms), iso(r.to_ms)])
            .collect(),
        lineage: meta.lineage.clone(),
        summary: lineage_line(meta),
        in_sample: crate::models::split::check_out_of_sample(meta, tested).is_err(),
    }
}

/// Runs the desk, its baselines and its intervals.
#[allow(clippy::too_many_arguments)]
fn desk(
    config: &Config,
    args: &EvaluateArgs,
    candles: &[Candle],
    interval_ms: i64,
    tested: TimeRange,
    core: Option<InferenceCore>,
    in_sample: bool,
    warnings: &mut Vec<String>,
) -> Result<DeskReport, Failure> {
    let mut experts: Vec<Box<dyn Expert>> = Vec::new();
    let mut invalid = None;
    if let Some(core) = core {
        let (c, d) = model_experts(core, InputConfig::default(), false, false);
        invalid = Some(c.invalid_log());
        experts.push(Box::new(c));
        experts.push(Box::new(d));
    }
    if args.experts != ExpertSet::Models {
        experts.extend(rule_experts());
    }
    let spec = BacktestSpec {
        symbol: &args.symbol,
        candles,
        interval_ms,
        from_ms: tested.from_ms,
        // The backtest's end is inclusive; the tested range's is not.
        to_ms: tested.to_ms.saturating_sub(1),
    };
    let setup = TradingSetup {
        impact_bps: args.impact_bps,
        ..TradingSetup::new(config.risk.clone(), config.execution.clone())
    };
    let bar = Progress::new("evaluate: desk step", candles.len() as u64);
    let result = backtest::run(
        spec,
        &config.orchestrator,
        &setup,
        experts,
        None,
        &mut |done, total| bar.update(done as u64, total as u64, ""),
    )
    .map_err(input)?;
    bar.finish(result.equity.len() as u64, "done");
    if let Some(log) = invalid {
        let inv = log.get();
        if inv.count > 0 {
            warnings.push(format!(
                "model inputs refused by validation at {} steps (no model ran there), e.g. {}",
                inv.count,
                inv.reasons.first().map_or("", String::as_str)
            ));
        }
    }
    let closes_by_time: BTreeMap<i64, Price> = candles
        .iter()
        .map(|c| (c.open_time_ms + interval_ms, c.close))
        .collect();
    let times: Vec<i64> = result.equity.iter().map(|e| e.0).collect();
    let closes: Vec<Price> = times
        .iter()
        .map(|t| closes_by_time.get(t).copied().unwrap_or(Price::ZERO))
        .collect();
    let act = activity(&result);
    let per_year = periods_per_year(interval_ms);
    let equity0 = setup.execution.starting_equity;
    let rs = RandomSetup {
        times: &times,
        closes: &closes,
        activity: act,
        fee_bps: result.costs.taker_fee_bps,
        // The desk's book lies the slippage plus the impact around each close.
        slippage_bps: result
            .costs
            .slippage_bps
            .saturating_add(result.costs.impact_bps),
        equity0,
        per_year,
    };
    let bar = Progress::new("evaluate: random seed", args.seeds as u64);
    let mut runs = Vec::with_capacity(args.seeds);
    for k in 0..args.seeds {
        runs.push(random_run(
            &rs,
            args.seed.wrapping_mul(1_000_003).wrapping_add(k as u64),
        ));
        bar.update(k as u64 + 1, args.seeds as u64, "");
    }
    bar.finish(args.seeds as u64, "done");
    let stats = |f: &dyn Fn(&Metrics) -> f64| -> (f64, f64) {
        let mut v: Vec<f64> = runs.iter().map(|r| f(&r.metrics)).collect();
        v.sort_by(f64::total_cmp);
        (
            v.iter().sum::<f64>() / v.len().max(1) as f64,
            quantile(&v, 0.95),
        )
    };
    let each = [
        stats(&|m| m.total_return),
        stats(&|m| m.sharpe),
        stats(&|m| m.max_drawdown),
        stats(&|m| m.trades as f64),
        stats(&|m| m.exposure),
    ];
    let pick = |i: usize| PolicyStats {
        total_return: if i == 0 { each[0].0 } else { each[0].1 },
        sharpe: if i == 0 { each[1].0 } else { each[1].1 },
        max_drawdown: if i == 0 { each[2].0 } else { each[2].1 },
        trades: if i == 0 { each[3].0 } else { each[3].1 },
        exposure: if i == 0 { each[4].0 } else { each[4].1 },
    };
    let desk_return = result.metrics.total_return;
    let desk_beats = runs
        .iter()
        .filter(|r| r.metrics.total_return < desk_return)
        .count() as f64
        / runs.len().max(1) as f64;
    // Edge: the desk's daily return minus the random policies' mean daily return.
    let e0 = equity0.to_f64();
    let desk_days = daily_returns(&result.equity, e0);
    let mut random_days: BTreeMap<i64, f64> = BTreeMap::new();
    for r in &runs {
        for (d, v) in daily_returns(&r.equity, e0) {
            *random_days.entry(d).or_default() += v / runs.len() as f64;
        }
    }
    let diffs: Vec<f64> = desk_days
        .iter()
        .map(|(d, v)| v - random_days.get(d).copied().unwrap_or(0.0))
        .collect();
    let edge = diffs.iter().sum();
    let blocks = day_blocks(&result.equity, e0);
    let ci = bootstrap_curve(&blocks, per_year, args.resamples, args.seed);
    let edge_ci = bootstrap_sum(&diffs, args.resamples, args.seed.wrapping_add(1));
    let m = &result.metrics;
    if m.round_trips < MIN_ROUND_TRIPS {
        warnings.push(format!(
            "only {} round trips (fewer than {MIN_ROUND_TRIPS}): too few to tell skill from \
             luck; the intervals are wide for a reason",
            m.round_trips
        ));
    }
    if blocks.len() < MIN_DAYS {
        warnings.push(format!(
            "the tested range spans {} UTC days (fewer than {MIN_DAYS}): the bootstrap over \
             days has little to draw from",
            blocks.len()
        ));
    }
    Ok(DeskReport {
        experts: args.experts,
        in_sample,
        total_return: m.total_return,
        sharpe: m.sharpe,
        max_drawdown: m.max_drawdown,
        trades: m.trades,
        round_trips: m.round_trips,
        exposure: m.exposure,
        steps: result.equity.len(),
        days: blocks.len(),
        edge,
        ci95: DeskCi {
            total_return: ci.total_return,
            sharpe: ci.sharpe,
            edge: edge_ci,
        },
        baselines: Baselines {
            buy_and_hold: PolicyStats::from(&result.benchmark_metrics),
            flat: PolicyStats::from(&result.flat_metrics),
            random: RandomStats {
                seeds: runs.len(),
                mean: pick(0),
                p95: pick(1),
                desk_beats,
                activity: act,
            },
        },
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.digits$}"))
}

fn pct(x: f64) -> String {
    format!("{:+.2}%", x * 100.0)
}

/// The report as text, every line marked when in-sample.
pub fn render(r: &EvaluateReport) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "evaluate {}: tested {} ({} ms candles)",
        r.data,
        format_args!("[{}, {})", r.tested.from, r.tested.to),
        r.tested.interval_ms
    ));
    if r.in_sample {
        out.push(
            "IN-SAMPLE: a checkpoint learned from the tested range (--allow-in-sample); these \
             numbers do not measure out-of-sample skill"
                .into(),
        );
    }
    if !r.checkpoints.is_empty() {
        out.push("checkpoints:".into());
        for c in &r.checkpoints {
            out.push(format!(
                "  {}{}",
                c.summary,
                if c.in_sample { " [IN-SAMPLE]" } else { "" }
            ));
        }
    }
    if let Some(c) = &r.cnn {
        out.push(format!(
            "CNN {}: {} rows in range; baselines' prior and horizon from {}",
            c.checkpoint, c.rows, c.priors_from
        ));
        out.push(format!(
            "  {:<3} {:>5} {:>7}  {:<34}{:<38}{}",
            "tf",
            "level",
            "n",
            "direction acc model/naive/prior",
            "price err bp model/naive/no move",
            "time err bars model/naive/no move"
        ));
        for l in &c.levels {
            if l.n == 0 {
                out.push(format!(
                    "  {:<3} {:>5} {:>7}  (no samples)",
                    l.timeframe, l.level, "n/a"
                ));
                continue;
            }
            let three = |a: Option<f64>, b: Option<f64>, c: Option<f64>, d: usize| {
                format!("{} / {} / {}", opt(a, d), opt(b, d), opt(c, d))
            };
            out.push(format!(
                "  {:<3} {:>5} {:>7}  {:<34}{:<38}{}",
                l.timeframe,
                l.level,
                l.n,
                three(
                    l.model.direction_accuracy,
                    l.naive.direction_accuracy,
                    l.prior.direction_accuracy,
                    3
                ),
                three(
                    l.model.price_error_bp,
                    l.naive.price_error_bp,
                    l.no_move.price_error_bp,
                    1
                ),
                three(
                    l.model.time_error_bars,
                    l.naive.time_error_bars,
                    l.no_move.time_error_bars,
                    1
                ),
            ));
        }
    }
    if let Some(d) = &r.desk {
        out.push(format!(
            "desk ({:?} experts, {} steps over {} days): return {} [95% CI {}, {}], Sharpe {:.2} \
             [{:.2}, {:.2}], max drawdown {:.2}%, {} trades, {} round trips, exposure {:.1}%",
            d.experts,
            d.steps,
            d.days,
            pct(d.total_return),
            pct(d.ci95.total_return[0]),
            pct(d.ci95.total_return[1]),
            d.sharpe,
            d.ci95.sharpe[0],
            d.ci95.sharpe[1],
            d.max_drawdown * 100.0,
            d.trades,
            d.round_trips,
            d.exposure * 100.0
        ));
        let verdict = if d.ci95.edge[0] > 0.0 {
            "skill: the interval is above zero"
        } else if d.ci95.edge[1] < 0.0 {
            "worse than random: the interval is below zero"
        } else {
            "no evidence of skill: the interval includes zero"
        };
        out.push(format!(
            "  edge over random timing {} [95% CI {}, {}]: {verdict}",
            pct(d.edge),
            pct(d.ci95.edge[0]),
            pct(d.ci95.edge[1])
        ));
        let b = &d.baselines;
        let line = |name: &str, s: &PolicyStats| {
            format!(
                "  {name}: return {}, Sharpe {:.2}, max drawdown {:.2}%, {:.0} trades, exposure \
                 {:.1}%",
                pct(s.total_return),
                s.sharpe,
                s.max_drawdown * 100.0,
                s.trades,
                s.exposure * 100.0
            )
        };
        out.push(line("buy-and-hold", &b.buy_and_hold));
        out.push(line("flat", &b.flat));
        out.push(line(
            &format!("random ({} seeds) mean", b.random.seeds),
            &b.random.mean,
        ));
        out.push(line("random 95th percentile", &b.random.p95));
        out.push(format!(
            "  the desk's return beats {:.0}% of the random seeds",
            b.random.desk_beats * 100.0
        ));
    }
    for w in &r.warnings {
        out.push(format!("warning: {w}"));
    }
    let mark = r.in_sample;
    out.into_iter()
        .map(|l| {
            if mark {
                format!("IN-SAMPLE {l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Runs `mmtrader evaluate`.
pub fn run(config: Config, args: EvaluateArgs) -> Result<i32, Failure> {
    tch::set_num_threads(1);
    tch::manual_seed(args.seed as i64);
    if args.seeds < MIN_SEEDS {
        return Err(usage(anyhow::anyhow!(
            "--seeds {}: expected at least {MIN_SEEDS} random-policy seeds",
            args.seeds
        )));
    }
    let tested = TimeRange::from_flags(Some(&args.from), args.to.as_deref()).map_err(usage)?;
    let device = device_from_config(&args.device)
        .map_err(|e| usage(anyhow::anyhow!("--device {:?}: {e}", args.device)))?;
    let (candles, interval) = load_cut(&args.data, tested.to_ms)?;
    let in_range = candles
        .iter()
        .filter(|c| tested.contains(c.open_time_ms + interval))
        .count();
    if in_range == 0 {
        return Err(input(format!(
            "{}: no candle closes inside the tested range {tested} (the file's candles \
             closing by --to run {} .. {})",
            args.data.display(),
            candles
                .first()
                .map_or_else(|| "none".into(), |c| iso(c.open_time_ms)),
            candles
                .last()
                .map_or_else(|| "none".into(), |c| iso(c.open_time_ms))
        )));
    }
    let scale = TimeScale::new(interval, candles.first().map_or(0, |c| c.open_time_ms))
        .ok_or_else(|| {
            input(format!(
                "{}: candle interval {interval} ms is below 1 s; expected a regular interval \
                 of at least 1 s",
                args.data.display()
            ))
        })?;
    let (reference, reference_ms) = match &args.reference {
        Some(p) => {
            let (r, ri) = load_cut(p, tested.to_ms)?;
            let ms = (!r.is_empty()).then_some(ri);
            (r, ms)
        }
        None => (Vec::new(), None),
    };
    let layout =
        SeriesLayout::of(&scale, reference_ms).map_err(|e| input(format!("--reference: {e}")))?;
    let chosen = choose(&config, &args, device, scale.is_identity())?;
    let mut warnings = Vec::new();
    let mut metas: Vec<&CheckpointMeta> = Vec::new();
    if let Some((m, meta)) = &chosen.cnn {
        check_layout(
            meta,
            &m.net.config(),
            &scale,
            &layout,
            args.reference.is_some(),
        )?;
        metas.push(meta);
    }
    if let Some((_, meta)) = &chosen.dqn {
        metas.push(meta);
    }
    let in_sample = refuse_in_sample(&metas, tested, args.allow_in_sample).map_err(input)?;
    let checkpoints: Vec<CheckpointReport> =
        metas.iter().map(|m| checkpoint_report(m, tested)).collect();
    let cnn_in_sample = checkpoints.first().is_some_and(|c| c.in_sample);
    let cnn = match &chosen.cnn {
        Some((model, meta)) => {
            let cfg = model.net.config();
            let ds = CnnDataset::build(
                &args.symbol,
                &candles,
                &reference,
                &DatasetConfig::scaled(scale, cfg.input.window),
            )
            .map_err(|e| input(format!("{}: samples: {e}", args.data.display())))?;
            let rows: Vec<usize> = (0..ds.len())
                .filter(|&r| tested.contains(ds.t_ms[r]))
                .collect();
            let (priors, from) = match Priors::of_checkpoint(meta) {
                Some(p) => (p, "the checkpoint's training targets".to_string()),
                None => {
                    let before: Vec<usize> = (0..ds.len())
                        .filter(|&r| ds.t_ms[r] < tested.from_ms)
                        .collect();
                    (
                        Priors::of_rows(&ds, &before, tested.from_ms),
                        "the targets known before --from (the checkpoint records none)".into(),
                    )
                }
            };
            Some(CnnReport {
                checkpoint: format!("{}/{}", meta.model_name, meta.id),
                rows: rows.len(),
                priors_from: from,
                in_sample: cnn_in_sample,
                levels: cnn_levels(model, &ds, &rows, &priors),
            })
        }
        None => None,
    };
    let core = match (chosen.cnn, chosen.dqn) {
        // The desk does not run on these candles (below): no models to build for it.
        _ if !scale.is_identity() => None,
        (Some((cnn, cmeta)), Some((dqn, _))) => {
            if cmeta.lineage.reference.is_some() {
                return Err(input(format!(
                    "CNN checkpoint {}/{} reads a reference series, which the backtest engine \
                     does not replay: score it with --experts rules --cnn {} (CNN table only)",
                    cmeta.model_name, cmeta.id, cmeta.id
                )));
            }
            let spec = spec_for(&cnn.net.config());
            Some(InferenceCore::new(
                cnn,
                dqn,
                spec,
                (
                    config.models.cnn_model.clone(),
                    config.models.dqn_model.clone(),
                ),
                InputConfig::default(),
            ))
        }
        _ => None,
    };
    let desk = if scale.is_identity() {
        Some(desk(
            &config,
            &args,
            &candles,
            interval,
            tested,
            core,
            in_sample,
            &mut warnings,
        )?)
    } else {
        warnings.push(format!(
            "the desk is not evaluated: the backtest engine replays 1s, 1m, 1h or 1d candles, \
             not {} ones (the CNN table above is)",
            interval_name(interval)
        ));
        None
    };
    let report = EvaluateReport {
        data: args
            .data
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        tested: Tested {
            from: iso(tested.from_ms),
            to: iso(tested.to_ms),
            from_ms: tested.from_ms,
            to_ms: tested.to_ms,
            interval_ms: interval,
        },
        in_sample,
        checkpoints,
        cnn,
        desk,
        warnings,
    };
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::runtime(anyhow::anyhow!("--json: {e}")))?;
        std::fs::write(path, text)
            .map_err(|e| Failure::runtime(anyhow::anyhow!("--json {}: {e}", path.display())))?;
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Timeframe;

    const T0: i64 = 1_614_556_800_000;

    #[test]
    fn steps_group_into_utc_days_and_the_day_bootstrap_brackets_the_edge() {
        let h = 3_600_000;
        // Three steps on day 0, two on day 1, one on day 2.
        let curve: Vec<(i64, f64)> = [0, 1, 23, 24, 30, 48]
            .iter()
            .zip([101.0, 102.0, 102.0, 100.0, 110.0, 99.0])
            .map(|(&k, e)| (T0 + k * h, e))
            .collect();
        let b = day_blocks(&curve, 100.0);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].1.len(), 3);
        assert!((compound(&b[0].1) - 0.02).abs() < 1e-12);
        assert!((compound(&b[1].1) - (110.0 / 102.0 - 1.0)).abs() < 1e-12);
        // Days that all gain: the interval of their sum is above zero; days that gain and
        // lose alike: it holds zero.
        let up: Vec<f64> = (0..40).map(|i| 0.001 + 0.0005 * f64::from(i % 3)).collect();
        let ci = bootstrap_sum(&up, 500, 1);
        assert!(ci[0] > 0.0 && ci[0] < ci[1], "{ci:?}");
        let even: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 0.01 } else { -0.01 })
            .collect();
        let ci = bootstrap_sum(&even, 500, 1);
        assert!(ci[0] < 0.0 && ci[1] > 0.0, "{ci:?}");
        let curve_ci = bootstrap_curve(&b, 8_760.0, 500, 2);
        assert!(curve_ci.total_return[0] <= curve_ci.total_return[1]);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 3.0], 0.25), 1.5);
    }

    fn setup<'a>(times: &'a [i64], closes: &'a [Price], activity: Activity) -> RandomSetup<'a> {
        RandomSetup {
            times,
            closes,
            activity,
            fee_bps: Price::from_units(10),
            slippage_bps: 0,
            equity0: Money::from_units(10_000),
            per_year: 8_760.0,
        }
    }

    #[test]
    fn random_policies_pay_exact_fees_and_copy_the_desks_activity() {
        let n = 2_000;
        let times: Vec<i64> = (0..n).map(|i| T0 + i as i64 * 3_600_000).collect();
        let flat_price = vec![Price::from_units(100); n];
        let act = Activity {
            steps: n,
            exposed: 600,
            entries: 30,
            fraction_bps: 5_000,
            shorts: false,
        };
        // On a constant price only the fees move the equity: each fill pays
        // ceil(notional × 10 bp) at 1e-8, with the notional half the equity at entry.
        let r = random_run(&setup(&times, &flat_price, act), 7);
        assert!(r.metrics.trades >= 10, "{}", r.metrics.trades);
        let mut equity = Money::from_units(10_000).raw();
        let mut open: Option<i128> = None;
        let price = Price::from_units(100).raw() as i128;
        for _ in 0..r.metrics.trades {
            let notional = match open.take() {
                None => {
                    let budget = equity * 5_000 / 10_000;
                    let q = budget * SCALE as i128 / price;
                    let notional = price * q / SCALE as i128;
                    open = Some(notional);
                    notional
                }
                Some(notional) => notional,
            };
            let num = notional * 10;
            equity -= num / 10_000 + i128::from(num % 10_000 != 0);
        }
        assert_eq!(r.final_equity.raw(), equity);
        // Over many seeds the trade count and exposure match the desk's on average.
        let seeds = 200;
        let (mut trades, mut exposure) = (0.0, 0.0);
        for k in 0..seeds {
            let m = random_run(&setup(&times, &flat_price, act), k).metrics;
            trades += m.trades as f64 / f64::from(seeds as u32);
            exposure += m.exposure / f64::from(seeds as u32);
        }
        assert!((trades - 60.0).abs() < 6.0, "{trades}");
        assert!((exposure - 0.3).abs() < 0.03, "{exposure}");
        // A desk that never traded: so does its random counterpart.
        let idle = Activity {
            exposed: 0,
            entries: 0,
            ..act
        };
        let r = random_run(&setup(&times, &flat_price, idle), 1);
        assert_eq!((r.metrics.trades, r.metrics.total_return), (0, 0.0));
        assert_eq!(r.final_equity, Money::from_units(10_000));
    }

    #[test]
    fn the_desks_activity_is_read_from_its_fills() {
        let cs = crate::models::samples::tests::wave(900, Timeframe::H1, T0);
        let interval = Timeframe::H1.millis();
        let spec = BacktestSpec {
            symbol: "BTCUSDT",
            candles: &cs,
            interval_ms: interval,
            from_ms: cs[200].open_time_ms + interval,
            to_ms: i64::MAX,
        };
        let cfg = crate::orchestrator::config::OrchestratorConfig {
            buy_threshold: 0.3,
            sell_threshold: 0.3,
            ..Default::default()
        };
        let r = backtest::run(
            spec,
            &cfg,
            &TradingSetup::default(),
            rule_experts(),
            None,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(r.metrics.round_trips >= 3, "{}", r.metrics.round_trips);
        let a = activity(&r);
        assert_eq!(a.steps, r.equity.len());
        assert_eq!(a.exposed as f64 / a.steps as f64, r.metrics.exposure);
        // Long only: one entry per round trip, and perhaps one still open at the end.
        let open_at_end = !r.trades.last().unwrap().position.is_zero();
        assert_eq!(a.entries, r.round_trips.len() + usize::from(open_at_end));
        // The first trip's size over the starting equity is part of the mean.
        let first = &r.trades[0];
        let share = Money::notional(first.price, first.qty).to_f64() / r.start_equity;
        assert!(share > 0.0 && share <= 1.0, "{share}");
        assert!(!a.shorts && a.fraction_bps > 0 && a.fraction_bps <= 10_000);
    }

    #[test]
    fn levels_without_samples_are_na_and_each_baseline_fills_only_what_it_predicts() {
        tch::manual_seed(0);
        let cs = crate::models::samples::tests::wave(400, Timeframe::M1, T0);
        let ds = CnnDataset::build("X", &cs, &[], &DatasetConfig::new(Timeframe::M1, 16)).unwrap();
        let model = CnnModel::new(CnnConfig::small(InputShape::encoded(16)), tch::Device::Cpu);
        let rows: Vec<usize> = (ds.len() / 2..ds.len()).collect();
        let before: Vec<usize> = (0..ds.len() / 2).collect();
        let priors = Priors::of_rows(&ds, &before, ds.t_ms[ds.len() / 2]);
        let levels = cnn_levels(&model, &ds, &rows, &priors);
        assert_eq!(levels.len(), LEVELS);
        let l1 = levels[0].clone();
        assert!(l1.n > 0 && l1.timeframe == "1m" && l1.level == 1);
        assert!(l1.model.direction_accuracy.is_some() && l1.naive.price_error_bp.is_some());
        assert!(l1.no_move.direction_accuracy.is_none() && l1.no_move.price_error_bp.is_some());
        assert!(l1.prior.direction_accuracy.is_some() && l1.prior.price_error_bp.is_none());
        // "No move" predicts the close: its price error is the mean distance to the pivot.
        let mut dist = 0.0;
        let mut n = 0;
        for &r in &rows {
            if let Some(t) = ds.targets[r][0] {
                dist += ds.anchors[r].bp(f64::from(t.price_offset));
                n += 1;
            }
        }
        assert_eq!(n, l1.n);
        assert!((l1.no_move.price_error_bp.unwrap() - dist / n as f64).abs() < 1e-9);
        // 400 one-minute wave candles hold no level-5 pivot: n/a everywhere.
        let top = levels.last().unwrap();
        assert_eq!(top.n, 0);
        for s in [top.model, top.naive, top.no_move, top.prior] {
            assert_eq!(s, Scores::default());
        }
        let report = EvaluateReport {
            data: "x.csv".into(),
            tested: Tested {
                from: iso(T0),
                to: "+inf".into(),
                from_ms: T0,
                to_ms: i64::MAX,
                interval_ms: 60_000,
            },
            in_sample: true,
            checkpoints: Vec::new(),
            cnn: Some(CnnReport {
                checkpoint: "pivot_cnn/1".into(),
                rows: rows.len(),
                priors_from: "test".into(),
                in_sample: true,
                levels,
            }),
            desk: None,
            warnings: vec!["w".into()],
        };
        let text = render(&report);
        assert!(text.lines().all(|l| l.starts_with("IN-SAMPLE ")), "{text}");
        assert!(text.contains("  1m      5     n/a  (no samples)"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["cnn"]["levels"][4]["model"]["direction_accuracy"],
            serde_json::Value::Null
        );
        assert_eq!(json["cnn"]["levels"][0]["n"], l1.n);
    }
}
