//! `BaseDataInput`: the one validated input every model receives (design: "Base Input Format"),
//! and the per-symbol [`SymbolAnalysis`] builder that produces it without lookahead. Pure logic.
//!
//! **No lookahead.** An input built at time `t` contains only
//! - candles whose interval ended at or before `t` (`open_time_ms + timeframe ≤ t`),
//! - indicator values computed from those candles (a bounded history of values per candle is
//!   kept so an input for `t` stays answerable after newer candles were fed),
//! - pivots with `known_ms ≤ t`,
//! - the newest COB computed at or before `t` (a bounded history of COB snapshots is kept),
//! - trades (order flow) with `t - flow_window_ms ≤ time_ms < t` (half-open like candles, so a
//!   trade stamped exactly `t` belongs to the future, as in the candle that contains it),
//! - heatmap rows computed at or before `t` and model outputs with `timestamp_ms ≤ t`.
//!
//! Building at `t` again after any amount of newer data arrived gives the same input, as long
//! as the bounded histories (candles kept by the market, ticks, COB/indicator rings, heatmap
//! rows, model outputs) still reach back to `t`, and provided the market had made its
//! once-a-second step (`SymbolMarket::on_second`, which fills empty intervals) for the last
//! whole second at or before `t` when the input was first built; otherwise an empty interval
//! that closed by `t` appears only once a later step fills it.
//!
//! **Completeness** ([`BaseDataInput::completeness`]) is the mean of eight fractions, each in
//! 0..=1: for each of the five candle series (`ohlcv_1s/1m/1h/1d`, `reference_ohlcv_1s`)
//! `min(frames, 300) / 300`; the COB (1 when present and fresh, else 0); indicators (values
//! present over all values of the four timeframes); pivots (timeframe × level pairs with at
//! least one known pivot, over 4 × 5). Model outputs do not count: models may not exist yet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::indicators::{INDICATOR_NAMES, IndicatorConfig, IndicatorSet, IndicatorValues};
use super::model_output::{ModelOutput, ModelOutputError, ModelOutputStore};
use super::pivots::{LEVELS, PivotBounds, PivotConfig, PivotPoint, Trend, WilliamsEngine};
use crate::market::cob::CobSnapshot;
use crate::market::state::SymbolMarket;
use crate::market::types::{Candle, Level, Price, Qty, Side, Symbol, Timeframe, notional};

/// Frames per candle series.
pub const FRAMES: usize = 300;
/// Frames per candle series below which an input is not valid for inference.
pub const MIN_FRAMES: usize = 100;
/// Number of candle series: the four timeframes plus the reference symbol's 1 s candles.
pub const SERIES: usize = 5;
/// Series names, in encoding order (`Timeframe::ALL`, then the reference).
pub const SERIES_NAMES: [&str; SERIES] = [
    "ohlcv_1s",
    "ohlcv_1m",
    "ohlcv_1h",
    "ohlcv_1d",
    "reference_ohlcv_1s",
];

/// Settings of the builder and of validation.
#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    /// Candles per series in an input (300 in the design).
    pub frames: usize,
    /// Minimum candles per series for a valid input.
    pub min_frames: usize,
    /// Canonical symbol whose 1 s candles are the cross-asset reference.
    pub reference_symbol: Symbol,
    /// Oldest acceptable COB relative to `t`, ms.
    pub max_cob_age_ms: i64,
    /// Book depth window around the mid for the microstructure, in basis points.
    pub depth_bps: u32,
    /// Order-flow window before `t`, ms.
    pub flow_window_ms: i64,
    /// A trade whose exact notional (quote units) reaches this is a large trade.
    pub large_trade_notional: Price,
    /// COB snapshots kept for building at past times.
    pub cob_history: usize,
    /// Indicator readings kept per timeframe (one per closed candle).
    pub indicator_history: usize,
    /// Pivots kept per level inside each Williams engine.
    pub pivot_history: usize,
    /// Newest known pivots per level copied into an input.
    pub pivots_per_level: usize,
    /// Highs and lows per level that span the normalization bounds.
    pub bounds_pivots: usize,
    /// Heatmap rows in an input; 0 leaves the optional heatmap out.
    pub heatmap_rows: usize,
    /// Indicator periods.
    pub indicators: IndicatorConfig,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            frames: FRAMES,
            min_frames: MIN_FRAMES,
            reference_symbol: "BTCUSDT".into(),
            max_cob_age_ms: 5_000,
            depth_bps: 10,
            flow_window_ms: 60_000,
            large_trade_notional: Price::from_units(30_000),
            cob_history: 120,
            indicator_history: 600,
            pivot_history: 256,
            pivots_per_level: 10,
            bounds_pivots: 5,
            heatmap_rows: 0,
            indicators: IndicatorConfig::default(),
        }
    }
}

/// Indicator values of one timeframe at the last candle closed at or before `t`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimedIndicators {
    /// Open time of the candle the values belong to.
    pub candle_open_ms: i64,
    /// Values in [`INDICATOR_NAMES`] order (`None` while warming up).
    pub values: IndicatorValues,
}

/// Williams pivots of one timeframe known at `t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeframePivots {
    /// Newest known pivots per level (index 0 = level 1), oldest first.
    pub levels: [Vec<PivotPoint>; LEVELS],
    /// Trend per level from the pivots known at `t`.
    pub trends: [Trend; LEVELS],
    /// Normalization bounds from the pivots (see [`SymbolAnalysis`]); `None` without pivots.
    pub bounds: Option<PivotBounds>,
}

/// Order flow, liquidity and spread at `t`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Microstructure {
    /// Best bid of the COB at `t`.
    pub best_bid: Option<Level>,
    /// Best ask of the COB at `t`.
    pub best_ask: Option<Level>,
    /// Exact floored mid of the COB at `t`.
    pub mid: Option<Price>,
    /// Best ask minus best bid.
    pub spread: Option<Price>,
    /// Spread over mid in basis points.
    pub spread_bps: Option<f64>,
    /// Resting bids in COB buckets reaching into `[mid·(1 − depth_bps), mid]`.
    pub bid_depth: Qty,
    /// Resting asks in COB buckets reaching into `[mid, mid·(1 + depth_bps)]`.
    pub ask_depth: Qty,
    /// Taker-buy quantity in the flow window.
    pub buy_volume: Qty,
    /// Taker-sell quantity in the flow window.
    pub sell_volume: Qty,
    /// `buy / sell`; `None` when nothing was sold.
    pub buy_sell_ratio: Option<f64>,
    /// Trades in the flow window.
    pub trades: u64,
    /// Trades in the flow window with notional at least the large-trade threshold.
    pub large_trades: u64,
    /// Flow window length, ms.
    pub flow_window_ms: i64,
}

/// Time × price COB liquidity on one common price axis (the newest row's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatmapMatrix {
    /// Row times, oldest first.
    pub times_ms: Vec<i64>,
    /// Lower bounds of the price buckets, ascending.
    pub prices: Vec<Price>,
    /// Resting bids, row-major `[times][prices]` (0 where an older row did not cover a bucket).
    pub bid: Vec<f32>,
    /// Resting asks, row-major `[times][prices]`.
    pub ask: Vec<f32>,
}

/// Everything a model sees about one symbol at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseDataInput {
    /// Primary symbol.
    pub symbol: Symbol,
    /// The time the input describes, ms since the UNIX epoch.
    pub timestamp_ms: i64,
    /// Closed candles per timeframe (`Timeframe::ALL` order), oldest first, at most 300.
    pub ohlcv: [Vec<Candle>; 4],
    /// The reference symbol (BTC by default).
    pub reference_symbol: Symbol,
    /// The reference symbol's closed 1 s candles, oldest first, at most 300.
    pub reference_ohlcv_1s: Vec<Candle>,
    /// The newest COB computed at or before `t`.
    pub cob: Option<Arc<CobSnapshot>>,
    /// Indicators per timeframe (`Timeframe::ALL` order).
    pub indicators: [Option<TimedIndicators>; 4],
    /// Pivots per timeframe (`Timeframe::ALL` order).
    pub pivots: [TimeframePivots; 4],
    /// The newest output about this symbol at or before `t` of every model, by model name.
    pub last_predictions: BTreeMap<String, ModelOutput>,
    /// Spread, depth and order flow.
    pub microstructure: Microstructure,
    /// Optional COB heatmap.
    pub heatmap: Option<HeatmapMatrix>,
}

/// What a validation asks of an input, by what its data source can provide. Checks of what is
/// present (finiteness, time order, no stamp after `t`, prices, model outputs) always apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ValidationPolicy {
    /// Live market data: the frame minimum on every series and a present, fresh COB.
    Live,
    /// Replayed klines, which have no order book and no finer series than the candles: a COB
    /// is checked only when present, and the frame minimum applies to the `base` series (the
    /// one the model reads, filled straight from the candles). Coarser aggregates of a short
    /// file cannot reach the minimum; they are encoded in their documented short form, exactly
    /// as training samples are built from the same history.
    Klines {
        /// The timeframe whose series must hold the frame minimum.
        base: Timeframe,
    },
}

impl ValidationPolicy {
    /// Whether series `index` ([`SERIES_NAMES`] order) must hold `min_frames`.
    fn needs_frames(self, index: usize) -> bool {
        match self {
            Self::Live => true,
            // The reference 1 s series is the symbol's own in a replay (see HistoryFeed).
            Self::Klines { base } => {
                let tf = Timeframe::ALL.get(index).copied().unwrap_or(Timeframe::S1);
                tf == base
            }
        }
    }

    /// Whether a missing COB is a problem.
    fn needs_cob(self) -> bool {
        self == Self::Live
    }
}

/// One reason an input is not fit for inference.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputProblem {
    /// A candle series is too short.
    #[error("{series}: expected ≥{expected} frames, got {got}")]
    TooFewFrames {
        /// Series name (see [`SERIES_NAMES`]).
        series: &'static str,
        /// Minimum frames.
        expected: usize,
        /// Frames present.
        got: usize,
    },
    /// Candle open times do not strictly increase.
    #[error("{series}: timestamps not increasing at frame {index} ({prev_ms} then {got_ms})")]
    NotMonotonic {
        /// Series name.
        series: &'static str,
        /// Frame index of the offending candle.
        index: usize,
        /// Previous open time.
        prev_ms: i64,
        /// Offending open time.
        got_ms: i64,
    },
    /// A candle has a non-positive price.
    #[error("{series}: frame {index} has a non-positive price")]
    BadPrice {
        /// Series name.
        series: &'static str,
        /// Frame index.
        index: usize,
    },
    /// A candle or value is stamped after the input time.
    #[error("{what}: stamped {time_ms}, after the input time")]
    FromFuture {
        /// What carries the stamp.
        what: String,
        /// The stamp.
        time_ms: i64,
    },
    /// No COB at or before `t`.
    #[error("cob: missing")]
    CobMissing,
    /// The newest COB is too old.
    #[error("cob: {age_ms} ms old, expected ≤{max_age_ms} ms")]
    CobStale {
        /// Age at `t`.
        age_ms: i64,
        /// Allowed age.
        max_age_ms: i64,
    },
    /// A float is NaN or infinite.
    #[error("{field}: not finite ({value})")]
    NonFinite {
        /// Field path.
        field: String,
        /// The value.
        value: f64,
    },
    /// A model output is malformed.
    #[error("last_predictions: {0}")]
    ModelOutput(ModelOutputError),
}

/// Why an input may not go to a model: every problem found, in a fixed order.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("input {symbol} at {timestamp_ms} not valid for inference: {}", join(.problems))]
pub struct InputError {
    /// Primary symbol.
    pub symbol: Symbol,
    /// Input time.
    pub timestamp_ms: i64,
    /// Problems found.
    pub problems: Vec<InputProblem>,
}

fn join(problems: &[InputProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl BaseDataInput {
    /// The candle series in [`SERIES_NAMES`] order.
    pub fn series(&self) -> [&[Candle]; SERIES] {
        [
            &self.ohlcv[0],
            &self.ohlcv[1],
            &self.ohlcv[2],
            &self.ohlcv[3],
            &self.reference_ohlcv_1s,
        ]
    }

    /// Checks the input is fit for inference (frames, COB freshness, finiteness, time order,
    /// no data from after `t`); lists every problem found.
    pub fn validate(&self, cfg: &InputConfig) -> Result<(), InputError> {
        self.validate_with(cfg, ValidationPolicy::Live)
    }

    /// [`Self::validate`] under `policy`: what a data source cannot provide is not asked for,
    /// everything else is checked the same.
    pub fn validate_with(
        &self,
        cfg: &InputConfig,
        policy: ValidationPolicy,
    ) -> Result<(), InputError> {
        let t = self.timestamp_ms;
        let mut problems = Vec::new();
        let tfs = [
            Timeframe::S1,
            Timeframe::M1,
            Timeframe::H1,
            Timeframe::D1,
            Timeframe::S1,
        ];
        for (i, ((series, candles), tf)) in SERIES_NAMES
            .into_iter()
            .zip(self.series())
            .zip(tfs)
            .enumerate()
        {
            if policy.needs_frames(i) && candles.len() < cfg.min_frames {
                problems.push(InputProblem::TooFewFrames {
                    series,
                    expected: cfg.min_frames,
                    got: candles.len(),
                });
            }
            for (index, w) in candles.windows(2).enumerate() {
                if w[1].open_time_ms <= w[0].open_time_ms {
                    problems.push(InputProblem::NotMonotonic {
                        series,
                        index: index + 1,
                        prev_ms: w[0].open_time_ms,
                        got_ms: w[1].open_time_ms,
                    });
                    break;
                }
            }
            if let Some(index) = candles
                .iter()
                .position(|c| c.low.raw() <= 0 || c.open.raw() <= 0 || c.close.raw() <= 0)
            {
                problems.push(InputProblem::BadPrice { series, index });
            }
            if let Some(last) = candles.last()
                && last.open_time_ms.saturating_add(tf.millis()) > t
            {
                problems.push(InputProblem::FromFuture {
                    what: format!("{series} last candle close"),
                    time_ms: last.open_time_ms + tf.millis(),
                });
            }
        }
        match &self.cob {
            None if !policy.needs_cob() => {}
            None => problems.push(InputProblem::CobMissing),
            Some(cob) if cob.time_ms > t => problems.push(InputProblem::FromFuture {
                what: "cob".into(),
                time_ms: cob.time_ms,
            }),
            Some(cob) if t - cob.time_ms > cfg.max_cob_age_ms => {
                problems.push(InputProblem::CobStale {
                    age_ms: t - cob.time_ms,
                    max_age_ms: cfg.max_cob_age_ms,
                })
            }
            Some(_) => {}
        }
        self.for_each_float(|field, value| {
            if !value.is_finite() {
                problems.push(InputProblem::NonFinite {
                    field: field(),
                    value,
                });
            }
        });
        for (name, out) in &self.last_predictions {
            if out.timestamp_ms > t {
                problems.push(InputProblem::FromFuture {
                    what: format!("last_predictions.{name}"),
                    time_ms: out.timestamp_ms,
                });
            }
            if let Err(e) = out.validate() {
                problems.push(InputProblem::ModelOutput(e));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InputError {
                symbol: self.symbol.clone(),
                timestamp_ms: t,
                problems,
            })
        }
    }

    /// Visits every float of the input except model outputs (validated by their own rules),
    /// with a lazily built field path.
    fn for_each_float(&self, mut visit: impl FnMut(&dyn Fn() -> String, f64)) {
        if let Some(cob) = &self.cob {
            for (i, b) in cob.buckets.iter().enumerate() {
                visit(&|| format!("cob.buckets[{i}].imbalance"), b.imbalance);
                if let Some(v) = b.vwap {
                    visit(&|| format!("cob.buckets[{i}].vwap"), v);
                }
            }
            let ma = &cob.imbalance_ma;
            for (name, values) in [
                ("ma_1s", &ma.ma_1s),
                ("ma_5s", &ma.ma_5s),
                ("ma_15s", &ma.ma_15s),
                ("ma_60s", &ma.ma_60s),
            ] {
                for (i, &v) in values.iter().enumerate() {
                    visit(&|| format!("cob.imbalance_ma.{name}[{i}]"), v);
                }
            }
            if let Some(r) = cob.order_flow.buy_sell_ratio {
                visit(&|| "cob.order_flow.buy_sell_ratio".into(), r);
            }
        }
        for (tf, ind) in Timeframe::ALL.iter().zip(&self.indicators) {
            let Some(ind) = ind else { continue };
            for (name, v) in ind.values.iter() {
                if let Some(v) = v {
                    visit(&|| format!("indicators_{tf}.{name}"), v);
                }
            }
        }
        let m = &self.microstructure;
        if let Some(v) = m.spread_bps {
            visit(&|| "microstructure.spread_bps".into(), v);
        }
        if let Some(v) = m.buy_sell_ratio {
            visit(&|| "microstructure.buy_sell_ratio".into(), v);
        }
        if let Some(h) = &self.heatmap {
            for (name, values) in [("bid", &h.bid), ("ask", &h.ask)] {
                for (i, &v) in values.iter().enumerate() {
                    visit(&|| format!("heatmap.{name}[{i}]"), v as f64);
                }
            }
        }
    }

    /// Completeness in 0..=1 (formula in the module documentation).
    pub fn completeness(&self, cfg: &InputConfig) -> f64 {
        let frames = cfg.frames.max(1) as f64;
        let series: f64 = self
            .series()
            .iter()
            .map(|s| (s.len() as f64 / frames).min(1.0))
            .sum();
        let cob = match &self.cob {
            Some(c) if self.timestamp_ms - c.time_ms <= cfg.max_cob_age_ms => 1.0,
            _ => 0.0,
        };
        let present: usize = self
            .indicators
            .iter()
            .flatten()
            .map(|i| i.values.values.iter().filter(|v| v.is_some()).count())
            .sum();
        let indicators = present as f64 / (4 * INDICATOR_NAMES.len()) as f64;
        let levels: usize = self
            .pivots
            .iter()
            .map(|p| p.levels.iter().filter(|l| !l.is_empty()).count())
            .sum();
        let pivots = levels as f64 / (4 * LEVELS) as f64;
        (series + cob + indicators + pivots) / 8.0
    }
}

/// Incremental per-timeframe state: pivots, indicators and the readings history.
#[derive(Debug, Clone)]
struct TimeframeState {
    timeframe: Timeframe,
    williams: WilliamsEngine,
    indicators: IndicatorSet,
    /// `(candle, readings after it)` for the newest fed candles, oldest first.
    fed: VecDeque<(Candle, IndicatorValues)>,
    /// Open time of the first candle fed since the last reset.
    first_fed_ms: Option<i64>,
}

impl TimeframeState {
    fn new(timeframe: Timeframe, cfg: &InputConfig) -> Self {
        Self {
            timeframe,
            williams: WilliamsEngine::new(PivotConfig {
                history: cfg.pivot_history,
                ..PivotConfig::for_timeframe(timeframe)
            }),
            indicators: IndicatorSet::new(&cfg.indicators),
            fed: VecDeque::new(),
            first_fed_ms: None,
        }
    }

    fn last_fed_ms(&self) -> Option<i64> {
        self.fed.back().map(|(c, _)| c.open_time_ms)
    }

    /// True when the market no longer agrees with what was fed: older history arrived, or a
    /// fed candle was revised (a late trade or a backfill over a filled gap).
    fn diverged(&self, market: &SymbolMarket) -> bool {
        let series = market.candles().series(self.timeframe);
        let Some(first_fed) = self.first_fed_ms else {
            return false;
        };
        if series
            .candles()
            .next()
            .is_some_and(|c| c.open_time_ms < first_fed)
        {
            return true;
        }
        self.fed
            .iter()
            .any(|(c, _)| series.get(c.open_time_ms).is_some_and(|m| m != c))
    }

    /// Feeds closed candles (end ≤ `t_ms`) not fed yet; rebuilds from scratch on divergence.
    fn sync(&mut self, market: &SymbolMarket, t_ms: i64, cfg: &InputConfig) {
        let until = match self.last_fed_ms() {
            Some(last) if self.diverged(market) => {
                *self = Self::new(self.timeframe, cfg);
                (last + self.timeframe.millis()).max(t_ms)
            }
            _ => t_ms,
        };
        let ms = self.timeframe.millis();
        let after = self.last_fed_ms().unwrap_or(i64::MIN);
        let series = market.candles().series(self.timeframe);
        for c in series.candles() {
            if c.open_time_ms.saturating_add(ms) > until {
                break;
            }
            if c.open_time_ms <= after {
                continue;
            }
            if self.williams.update(c).is_err() {
                // The series is ordered and validated by the market; skip anything else.
                continue;
            }
            let values = self.indicators.update(c);
            self.first_fed_ms.get_or_insert(c.open_time_ms);
            self.fed.push_back((c.clone(), values));
            if self.fed.len() > cfg.indicator_history.max(1) {
                self.fed.pop_front();
            }
        }
    }

    /// Indicator readings of the last candle closed at or before `t_ms`.
    fn indicators_at(&self, t_ms: i64) -> Option<TimedIndicators> {
        let ms = self.timeframe.millis();
        let n = self
            .fed
            .partition_point(|(c, _)| c.open_time_ms.saturating_add(ms) <= t_ms);
        let (c, values) = self.fed.get(n.checked_sub(1)?)?;
        Some(TimedIndicators {
            candle_open_ms: c.open_time_ms,
            values: *values,
        })
    }

    fn pivots_at(&self, t_ms: i64, cfg: &InputConfig) -> TimeframePivots {
        let levels = std::array::from_fn(|i| {
            let known = self.williams.known_at(i as u8 + 1, t_ms);
            known[known.len().saturating_sub(cfg.pivots_per_level)..].to_vec()
        });
        // The widest of the three lower levels that has both highs and lows: level 3 spans
        // many swings, level 1 is there soon after start.
        let bounds = (1..=3u8)
            .rev()
            .find_map(|l| self.williams.level_at(l, t_ms).bounds(cfg.bounds_pivots));
        let trends = std::array::from_fn(|i| self.williams.level_at(i as u8 + 1, t_ms).trend());
        TimeframePivots {
            levels,
            trends,
            bounds,
        }
    }
}

/// Builds [`BaseDataInput`]s for one symbol: keeps a Williams engine and an indicator set per
/// timeframe, fed incrementally from closed candles, and a bounded history of COB snapshots.
///
/// Call [`Self::update`] after every market step (e.g. each second, after the COB was
/// computed) so COB snapshots are captured; [`Self::build`] updates too.
#[derive(Debug, Clone)]
pub struct SymbolAnalysis {
    symbol: Symbol,
    cfg: InputConfig,
    frames: [TimeframeState; 4],
    cobs: VecDeque<Arc<CobSnapshot>>,
}

impl SymbolAnalysis {
    /// Empty state for `symbol`.
    pub fn new(symbol: impl Into<Symbol>, cfg: InputConfig) -> Self {
        Self {
            symbol: symbol.into(),
            frames: Timeframe::ALL.map(|tf| TimeframeState::new(tf, &cfg)),
            cobs: VecDeque::new(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &InputConfig {
        &self.cfg
    }

    /// The symbol this state follows.
    pub fn symbol(&self) -> &str {
        &self.symbol
    }

    /// Feeds candles closed by `t_ms` into the engines and captures the market's latest COB
    /// when it was computed at or before `t_ms`.
    pub fn update(&mut self, market: &SymbolMarket, t_ms: i64) {
        for f in &mut self.frames {
            f.sync(market, t_ms, &self.cfg);
        }
        if let Some(cob) = market.last_cob()
            && cob.time_ms <= t_ms
            && self.cobs.back().is_none_or(|c| c.time_ms < cob.time_ms)
        {
            self.cobs.push_back(Arc::clone(cob));
            if self.cobs.len() > self.cfg.cob_history.max(1) {
                self.cobs.pop_front();
            }
        }
    }

    /// The newest captured COB computed at or before `t_ms`.
    pub fn cob_at(&self, t_ms: i64) -> Option<&Arc<CobSnapshot>> {
        let n = self.cobs.partition_point(|c| c.time_ms <= t_ms);
        self.cobs.get(n.checked_sub(1)?)
    }

    /// Pivots of every level known at `t_ms` on `timeframe`.
    pub fn williams(&self, timeframe: Timeframe) -> &WilliamsEngine {
        &self.frames[tf_index(timeframe)].williams
    }

    /// The input at `t_ms` from this symbol's market, the reference symbol's market (pass the
    /// same market when the symbol is its own reference) and the model outputs. Not validated:
    /// call [`BaseDataInput::validate`] before inference.
    pub fn build(
        &mut self,
        market: &SymbolMarket,
        reference: &SymbolMarket,
        outputs: &ModelOutputStore,
        t_ms: i64,
    ) -> BaseDataInput {
        self.build_with_reference(market, reference, outputs, t_ms, Timeframe::S1)
    }

    /// [`Self::build`] with the reference series read from the reference market's
    /// `reference_tf` candles instead of its 1 s ones (training on history whose reference
    /// symbol comes at the data's own interval; the model's layout records which).
    pub fn build_with_reference(
        &mut self,
        market: &SymbolMarket,
        reference: &SymbolMarket,
        outputs: &ModelOutputStore,
        t_ms: i64,
        reference_tf: Timeframe,
    ) -> BaseDataInput {
        self.update(market, t_ms);
        let frames = self.cfg.frames;
        let cob = self.cob_at(t_ms).cloned();
        BaseDataInput {
            symbol: self.symbol.clone(),
            timestamp_ms: t_ms,
            ohlcv: Timeframe::ALL.map(|tf| closed_window(market, tf, t_ms, frames)),
            reference_symbol: self.cfg.reference_symbol.clone(),
            reference_ohlcv_1s: closed_window(reference, reference_tf, t_ms, frames),
            indicators: std::array::from_fn(|i| self.frames[i].indicators_at(t_ms)),
            pivots: std::array::from_fn(|i| self.frames[i].pivots_at(t_ms, &self.cfg)),
            last_predictions: outputs.all_at(&self.symbol, t_ms),
            microstructure: microstructure(market, cob.as_deref(), t_ms, &self.cfg),
            heatmap: heatmap(market, t_ms, self.cfg.heatmap_rows),
            cob,
        }
    }
}

fn tf_index(tf: Timeframe) -> usize {
    match tf {
        Timeframe::S1 => 0,
        Timeframe::M1 => 1,
        Timeframe::H1 => 2,
        Timeframe::D1 => 3,
    }
}

/// The newest `n` candles of `tf` whose interval ended at or before `t_ms`, oldest first.
fn closed_window(market: &SymbolMarket, tf: Timeframe, t_ms: i64, n: usize) -> Vec<Candle> {
    let series = market.candles().series(tf);
    let ms = tf.millis();
    // The series is ordered by open time, so the closed candles are a prefix.
    let closed = series
        .candles()
        .take_while(|c| c.open_time_ms.saturating_add(ms) <= t_ms)
        .count();
    series
        .candles()
        .skip(closed.saturating_sub(n))
        .take(closed.min(n))
        .cloned()
        .collect()
}

fn microstructure(
    market: &SymbolMarket,
    cob: Option<&CobSnapshot>,
    t_ms: i64,
    cfg: &InputConfig,
) -> Microstructure {
    let mut m = Microstructure {
        best_bid: None,
        best_ask: None,
        mid: None,
        spread: None,
        spread_bps: None,
        bid_depth: Qty::ZERO,
        ask_depth: Qty::ZERO,
        buy_volume: Qty::ZERO,
        sell_volume: Qty::ZERO,
        buy_sell_ratio: None,
        trades: 0,
        large_trades: 0,
        flow_window_ms: cfg.flow_window_ms,
    };
    if let Some(cob) = cob {
        let mid = cob.mid.raw() as i128;
        let spread = cob.best_ask.price - cob.best_bid.price;
        m.best_bid = Some(cob.best_bid);
        m.best_ask = Some(cob.best_ask);
        m.mid = Some(cob.mid);
        m.spread = Some(spread);
        if mid > 0 {
            m.spread_bps = Some(spread.raw() as f64 / mid as f64 * 10_000.0);
        }
        let reach = mid * cfg.depth_bps as i128 / 10_000;
        let (lo, hi) = (mid - reach, mid + reach);
        let size = cob.bucket_size.raw() as i128;
        for b in &cob.buckets {
            let (b_lo, b_hi) = (b.price.raw() as i128, b.price.raw() as i128 + size);
            // A bucket counts when its price range reaches into the depth window.
            if b_hi > lo && b_lo <= mid {
                m.bid_depth += b.bid_qty;
            }
            if b_lo <= hi && b_hi > mid {
                m.ask_depth += b.ask_qty;
            }
        }
    }
    let large = cfg.large_trade_notional.raw() as i128;
    for tick in market
        .ticks()
        .since(t_ms.saturating_sub(cfg.flow_window_ms))
    {
        if tick.time_ms >= t_ms {
            break;
        }
        match tick.taker_side {
            Side::Buy => m.buy_volume += tick.qty,
            Side::Sell => m.sell_volume += tick.qty,
        }
        m.trades += 1;
        if notional(tick.price, tick.qty) >= large {
            m.large_trades += 1;
        }
    }
    if !m.sell_volume.is_zero() {
        m.buy_sell_ratio = Some(m.buy_volume.to_f64() / m.sell_volume.to_f64());
    }
    m
}

/// The newest `rows` heatmap rows computed at or before `t_ms`, on the newest row's axis.
fn heatmap(market: &SymbolMarket, t_ms: i64, rows: usize) -> Option<HeatmapMatrix> {
    if rows == 0 {
        return None;
    }
    let map = market.cob_engine()?.heatmap();
    let upto = map.rows().take_while(|r| r.time_ms <= t_ms).count();
    let picked: Vec<_> = map
        .rows()
        .skip(upto.saturating_sub(rows))
        .take(upto.min(rows))
        .collect();
    let newest = picked.last()?;
    let width = newest.bid.len();
    let size = newest.bucket_size.raw();
    let first = newest.first_price.raw();
    let mut out = HeatmapMatrix {
        times_ms: picked.iter().map(|r| r.time_ms).collect(),
        prices: (0..width).map(|j| newest.bucket_price(j)).collect(),
        bid: vec![0.0; picked.len() * width],
        ask: vec![0.0; picked.len() * width],
    };
    for (i, row) in picked.iter().enumerate() {
        for (j, (b, a)) in row.bid.iter().zip(&row.ask).enumerate() {
            let p = row.bucket_price(j).raw();
            // Rows share the bucket size while the engine lives; skip any that does not align.
            if row.bucket_size.raw() != size || (p - first).rem_euclid(size) != 0 {
                continue;
            }
            let Ok(k) = usize::try_from((p - first) / size) else {
                continue;
            };
            if p >= first && k < width {
                out.bid[i * width + k] = b.to_f64() as f32;
                out.ask[i * width + k] = a.to_f64() as f32;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A small deterministic market: exchange history for every timeframe ending at `t`, a
    //! book, and one COB computed at `t`.

    use crate::market::book::OrderBook;
    use crate::market::state::{SymbolMarket, SymbolMarketConfig};
    use crate::market::types::{Candle, Level, Price, Qty, Timeframe};

    /// A day-aligned time, so every timeframe's history ends exactly here.
    pub(crate) const T: i64 = 19_675 * 86_400_000;

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    /// `n` valid klines of `tf` ending at `end_ms`, a random walk around `base` units.
    pub(crate) fn klines(
        tf: Timeframe,
        n: usize,
        end_ms: i64,
        base: i64,
        seed: u64,
    ) -> Vec<Candle> {
        let mut next = xorshift(seed);
        let tick = 1_000_000;
        let mut close = base * 100_000_000;
        (0..n)
            .map(|i| {
                let open = close;
                close += ((next() % 41) as i64 - 20) * tick;
                Candle {
                    open_time_ms: end_ms - (n - i) as i64 * tf.millis(),
                    open: Price(open),
                    high: Price(open.max(close) + (next() % 7) as i64 * tick),
                    low: Price(open.min(close) - (next() % 7) as i64 * tick),
                    close: Price(close),
                    volume: Qty((next() % 5_000_000_000) as i64 + 1),
                    trades: next() % 50 + 1,
                }
            })
            .collect()
    }

    /// A market with `frames[i]` candles of `Timeframe::ALL[i]` ending at `T`, and (when
    /// `with_book`) a COB computed at `T`.
    pub(crate) fn market(frames: [usize; 4], with_book: bool) -> SymbolMarket {
        let mut m = SymbolMarket::new(SymbolMarketConfig {
            bucket_size: Price::from_units(1),
            large_trade_notional: Price::from_units(30_000),
            candles_kept: 1_500,
            tick_capacity: 10_000,
            tick_max_age_ms: 1_800_000,
        });
        for (i, tf) in Timeframe::ALL.into_iter().enumerate() {
            let stats = m.on_history(tf, &klines(tf, frames[i], T, 3_000, 7 + i as u64));
            assert!(stats.invalid.is_empty());
        }
        let mut book = OrderBook::new();
        let lv = |p: i64, q: i64| Level {
            price: Price(p * 1_000_000),
            qty: Qty(q * 10_000_000),
        };
        let bids: Vec<Level> = (0..40)
            .map(|i| lv(300_000 - 10 - 30 * i, 3 + i % 5))
            .collect();
        let asks: Vec<Level> = (0..40)
            .map(|i| lv(300_000 + 10 + 30 * i, 2 + i % 7))
            .collect();
        book.apply_snapshot(&bids, &asks, 1);
        let result = m.on_second(with_book.then_some(&book), T);
        assert_eq!(result.is_ok(), with_book);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{T, market};
    use super::*;
    use crate::analysis::model_output::tests::output;

    fn build(frames: [usize; 4], with_book: bool, t: i64) -> (BaseDataInput, InputConfig) {
        let m = market(frames, with_book);
        let mut a = SymbolAnalysis::new("ETHUSDT", InputConfig::default());
        let mut store = ModelOutputStore::default();
        store.record(output("rl", "dqn", T - 500));
        store.record(output("rl", "dqn", T + 500));
        let input = a.build(&m, &m, &store, t);
        (input, a.config().clone())
    }

    fn problems(input: &BaseDataInput, cfg: &InputConfig) -> Vec<String> {
        match input.validate(cfg) {
            Ok(()) => vec![],
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn full_market_gives_a_valid_complete_input() {
        let (input, cfg) = build([320; 4], true, T);
        assert_eq!(problems(&input, &cfg), Vec::<String>::new());
        let tfs = [Timeframe::S1, Timeframe::M1, Timeframe::H1, Timeframe::D1];
        for (s, tf) in input
            .series()
            .into_iter()
            .zip(tfs.into_iter().chain([Timeframe::S1]))
        {
            assert_eq!(s.len(), FRAMES);
            assert_eq!(s.last().unwrap().open_time_ms + tf.millis(), T);
        }
        assert_eq!(input.last_predictions["dqn"].timestamp_ms, T - 500);
        let ind = input.indicators[1].unwrap();
        assert_eq!(ind.candle_open_ms, T - 60_000);
        assert!(ind.values.values.iter().all(Option::is_some));
        assert!(input.pivots.iter().all(|p| !p.levels[0].is_empty()));
        assert!(
            input
                .pivots
                .iter()
                .flat_map(|p| p.levels.iter().flatten())
                .all(|p| p.known_ms <= T)
        );
        let c = input.completeness(&cfg);
        assert!((0.9..=1.0).contains(&c), "{c}");
        let m = &input.microstructure;
        assert_eq!(m.spread, Some(Price::parse("0.2").unwrap()));
        assert!(m.bid_depth.raw() > 0 && m.ask_depth.raw() > 0);
    }

    #[test]
    fn completeness_follows_the_documented_formula() {
        let (mut input, cfg) = build([320; 4], true, T);
        for s in &mut input.ohlcv {
            s.drain(..150);
        }
        input.reference_ohlcv_1s.drain(..150);
        input.cob = None;
        input.indicators = [None; 4];
        for p in &mut input.pivots {
            p.levels.iter_mut().skip(1).for_each(Vec::clear);
        }
        // 5 series at 150/300, no COB, no indicators, 4 of 20 pivot levels.
        let expected = (5.0 * 0.5 + 0.0 + 0.0 + 4.0 / 20.0) / 8.0;
        assert!((input.completeness(&cfg) - expected).abs() < 1e-12);
    }

    #[test]
    fn too_few_frames_names_series_and_dimensions() {
        let (input, cfg) = build([320, 320, 42, 320], true, T);
        let p = problems(&input, &cfg);
        assert_eq!(
            p,
            vec!["ohlcv_1h: expected ≥100 frames, got 42".to_string()]
        );
        let err = input.validate(&cfg).unwrap_err().to_string();
        assert!(err.starts_with("input ETHUSDT at"), "{err}");
        assert!(input.completeness(&cfg) < 1.0);
    }

    #[test]
    fn missing_and_stale_cob_are_reported() {
        let (input, cfg) = build([320; 4], false, T);
        assert_eq!(problems(&input, &cfg), vec!["cob: missing".to_string()]);
        let (input, cfg) = build([320; 4], true, T + 10_000);
        assert_eq!(
            problems(&input, &cfg),
            vec!["cob: 10000 ms old, expected ≤5000 ms".to_string()]
        );
    }

    #[test]
    fn non_finite_values_are_named() {
        let (mut input, cfg) = build([320; 4], true, T);
        input.indicators[0].as_mut().unwrap().values.values[2] = Some(f64::NAN);
        input.microstructure.spread_bps = Some(f64::INFINITY);
        let p = problems(&input, &cfg);
        assert_eq!(
            p,
            vec![
                "indicators_1s.rsi: not finite (NaN)".to_string(),
                "microstructure.spread_bps: not finite (inf)".to_string(),
            ]
        );
        let (mut input, cfg) = build([320; 4], true, T);
        let cob = Arc::make_mut(input.cob.as_mut().unwrap());
        cob.imbalance_ma.ma_15s[3] = f64::NEG_INFINITY;
        assert_eq!(
            problems(&input, &cfg),
            vec!["cob.imbalance_ma.ma_15s[3]: not finite (-inf)".to_string()]
        );
    }

    #[test]
    fn order_future_stamps_and_bad_outputs_are_reported() {
        let (mut input, cfg) = build([320; 4], true, T);
        input.ohlcv[1].swap(10, 11);
        input.ohlcv[0].last_mut().unwrap().open_time_ms = T;
        input.last_predictions.get_mut("dqn").unwrap().confidence = 2.0;
        let mut late = output("cnn", "c", T + 1);
        late.confidence = 0.5;
        input.last_predictions.insert("c".into(), late);
        let p = problems(&input, &cfg);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(
            p[0].starts_with("ohlcv_1s last candle close: stamped"),
            "{p:?}"
        );
        assert!(p[1].starts_with("ohlcv_1m: timestamps not increasing at frame 11"));
        assert!(p[2].starts_with("last_predictions.c: stamped"), "{p:?}");
        assert!(
            p[3].contains("dqn: confidence = 2 is outside [0, 1]"),
            "{p:?}"
        );
    }

    #[test]
    fn empty_market_builds_an_empty_input_without_panicking() {
        let m = SymbolMarket::new(crate::market::state::SymbolMarketConfig {
            bucket_size: Price::from_units(1),
            large_trade_notional: Price::from_units(1),
            candles_kept: 10,
            tick_capacity: 10,
            tick_max_age_ms: 1_000,
        });
        let mut a = SymbolAnalysis::new("X", InputConfig::default());
        let input = a.build(&m, &m, &ModelOutputStore::default(), 0);
        assert_eq!(input.completeness(a.config()), 0.0);
        assert_eq!(input.validate(a.config()).unwrap_err().problems.len(), 6);
    }

    #[test]
    fn revised_history_rebuilds_the_engines() {
        let mut m = market([320; 4], true);
        let mut a = SymbolAnalysis::new("ETHUSDT", InputConfig::default());
        let before = a.build(&m, &m, &ModelOutputStore::default(), T);
        // Older 1 h history arriving later must be fed, not ignored.
        m.on_history(
            Timeframe::H1,
            &fixture::klines(Timeframe::H1, 400, T - 320 * 3_600_000, 2_000, 99),
        );
        let after = a.build(&m, &m, &ModelOutputStore::default(), T);
        let mut fresh = SymbolAnalysis::new("ETHUSDT", InputConfig::default());
        let expected = fresh.build(&m, &m, &ModelOutputStore::default(), T);
        assert_eq!(after, expected);
        assert_eq!(after.ohlcv, before.ohlcv);
        assert_eq!(a.williams(Timeframe::H1).candles_seen(), 720);
    }

    #[test]
    fn heatmap_uses_the_newest_rows_axis() {
        let m = market([320; 4], true);
        let cfg = InputConfig {
            heatmap_rows: 10,
            ..InputConfig::default()
        };
        let mut a = SymbolAnalysis::new("ETHUSDT", cfg);
        let input = a.build(&m, &m, &ModelOutputStore::default(), T);
        let h = input.heatmap.unwrap();
        assert_eq!(h.times_ms, vec![T]);
        assert_eq!(h.prices.len(), 41);
        assert_eq!(h.prices[20], input.cob.as_ref().unwrap().center);
        assert!(h.bid.iter().sum::<f32>() > 0.0);
    }
}
