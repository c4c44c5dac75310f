//! The models' tensor interface and a small feature builder from one candle series.
//!
//! `ModelInput { series: [B, C, T], context: [B, F] }` is the contract between data and
//! models. This builder fills it from a single timeframe (C = 5 OHLCV channels) plus pivot
//! context (F = 4 per level); the multi-timeframe `BaseDataInput` encoding maps onto the same
//! shapes later, under its own [`InputConfig::layout_version`].
//!
//! No lookahead: the input for candle `t` is built from candles `..=t` only (pivots come from
//! a streaming [`WilliamsEngine`] fed up to `t`), and targets are pivots whose candle lies
//! strictly after `t`.

use crate::analysis::pivots::{LEVELS, PivotConfig, PivotKind, PivotPoint, WilliamsEngine};
use crate::market::types::Candle;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Layout version of the encoding this module produces; stored in every checkpoint.
pub const INPUT_LAYOUT_VERSION: u32 = 1;
/// Series channels per timeframe: open, high, low, close, volume.
pub const OHLCV_CHANNELS: usize = 5;
/// Context features per pivot level: last high (offset, age), last low (offset, age).
pub const PIVOT_FEATURES_PER_LEVEL: usize = 4;
/// Log-price offsets are multiplied by this so a 1 % move is about 1.0.
pub const PRICE_SCALE: f64 = 100.0;

/// Shapes of a model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputConfig {
    /// Series channels C.
    pub channels: usize,
    /// Time steps T (oldest first, the last one is the newest closed candle).
    pub window: usize,
    /// Context features F.
    pub context: usize,
    /// Version of the encoding that fills these shapes.
    pub layout_version: u32,
}

impl InputConfig {
    /// The layout of [`FeatureBuilder`]: one timeframe of OHLCV plus pivot context.
    pub const fn candles(window: usize) -> Self {
        Self {
            channels: OHLCV_CHANNELS,
            window,
            context: LEVELS * PIVOT_FEATURES_PER_LEVEL,
            layout_version: INPUT_LAYOUT_VERSION,
        }
    }
}

/// Why an input or a feature set could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// A tensor does not have the configured shape.
    #[error("{what} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Which tensor.
        what: &'static str,
        /// Its shape.
        got: Vec<i64>,
        /// The configured shape (-1 = any batch size).
        expected: Vec<i64>,
    },
    /// Fewer candles than one window.
    #[error("{got} candles cannot fill a window of {need}")]
    TooFewCandles {
        /// Window length.
        need: usize,
        /// Candles given.
        got: usize,
    },
    /// A price that is zero or negative (log offsets are undefined).
    #[error("candle {index} at {time_ms} ms has a non-positive price")]
    NonPositivePrice {
        /// Position in the input slice.
        index: usize,
        /// Its open time.
        time_ms: i64,
    },
    /// The pivot engine rejected a candle (out of order, low above high).
    #[error("candle {index}: {reason}")]
    Rejected {
        /// Position in the input slice.
        index: usize,
        /// The engine's reason.
        reason: String,
    },
    /// The layout is not the one the builder writes.
    #[error("input layout {got:?} is not the candle builder's layout {expected:?}")]
    Layout {
        /// Requested.
        got: InputConfig,
        /// What the builder writes for that window.
        expected: InputConfig,
    },
}

/// A batch of model inputs.
#[derive(Debug)]
pub struct ModelInput {
    /// `[B, C, T]` float32.
    pub series: Tensor,
    /// `[B, F]` float32.
    pub context: Tensor,
}

impl ModelInput {
    /// Wraps two tensors after checking them against `cfg`.
    pub fn new(series: Tensor, context: Tensor, cfg: &InputConfig) -> Result<Self, FeatureError> {
        let s = series.size();
        let c = context.size();
        let (ch, w, f) = (cfg.channels as i64, cfg.window as i64, cfg.context as i64);
        if s.len() != 3 || s[1] != ch || s[2] != w {
            return Err(FeatureError::Shape {
                what: "series",
                got: s,
                expected: vec![-1, ch, w],
            });
        }
        if c.len() != 2 || c[1] != f || c[0] != s[0] {
            return Err(FeatureError::Shape {
                what: "context",
                got: c,
                expected: vec![s[0], f],
            });
        }
        Ok(Self {
            series: series.to_kind(Kind::Float),
            context: context.to_kind(Kind::Float),
        })
    }

    /// Batch size.
    pub fn batch(&self) -> i64 {
        self.series.size()[0]
    }

    /// The same input on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        Self {
            series: self.series.to_device(device),
            context: self.context.to_device(device),
        }
    }

    /// The rows at `index` (a 1-D int64 tensor).
    pub fn select(&self, index: &Tensor) -> Self {
        Self {
            series: self.series.index_select(0, index),
            context: self.context.index_select(0, index),
        }
    }
}

/// The next pivot of one level after an input's time, in model units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PivotTarget {
    /// `ln(pivot price / close at t) * PRICE_SCALE`.
    pub price_offset: f32,
    /// `ln(bars from t to the pivot candle)`, bars >= 1.
    pub time_offset: f32,
    /// High (true) or low.
    pub high: bool,
}

impl PivotTarget {
    /// Bars ahead encoded by a time offset.
    pub fn bars(time_offset: f32) -> f64 {
        f64::from(time_offset).exp()
    }
}

/// Inputs built from one candle series, one row per usable candle.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    /// The layout of the rows.
    pub input: InputConfig,
    /// Index (into the candle slice) of the newest candle of each row.
    pub index: Vec<usize>,
    /// Rows of `C * T` floats, channel-major.
    pub series: Vec<f32>,
    /// Rows of `F` floats.
    pub context: Vec<f32>,
    /// Close of each row's newest candle (statistics only).
    pub close: Vec<f64>,
}

impl FeatureSet {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Rows `range` as a model input on `device`.
    pub fn input(&self, rows: std::ops::Range<usize>, device: Device) -> ModelInput {
        let (cs, f) = (self.input.channels * self.input.window, self.input.context);
        let n = rows.len() as i64;
        let series = Tensor::from_slice(&self.series[rows.start * cs..rows.end * cs])
            .view([n, self.input.channels as i64, self.input.window as i64])
            .to_device(device);
        let context = Tensor::from_slice(&self.context[rows.start * f..rows.end * f])
            .view([n, f as i64])
            .to_device(device);
        ModelInput { series, context }
    }
}

/// Builds normalized OHLCV windows plus pivot context from candles of one timeframe.
#[derive(Debug, Clone, Copy)]
pub struct FeatureBuilder {
    /// Output layout.
    pub input: InputConfig,
    /// Pivot engine settings (same timeframe as the candles).
    pub pivots: PivotConfig,
}

impl FeatureBuilder {
    /// A builder for windows of `window` candles.
    pub fn new(window: usize, pivots: PivotConfig) -> Self {
        Self {
            input: InputConfig::candles(window),
            pivots,
        }
    }

    /// One row per candle `t >= window - 1`, each from candles `..=t` only.
    pub fn build(&self, candles: &[Candle]) -> Result<FeatureSet, FeatureError> {
        let expected = InputConfig::candles(self.input.window);
        if self.input != expected || self.input.window == 0 {
            return Err(FeatureError::Layout {
                got: self.input,
                expected,
            });
        }
        let w = self.input.window;
        if candles.len() < w {
            return Err(FeatureError::TooFewCandles {
                need: w,
                got: candles.len(),
            });
        }
        for (index, c) in candles.iter().enumerate() {
            if c.open.raw() <= 0 || c.high.raw() <= 0 || c.low.raw() <= 0 || c.close.raw() <= 0 {
                return Err(FeatureError::NonPositivePrice {
                    index,
                    time_ms: c.open_time_ms,
                });
            }
        }
        let rows = candles.len() + 1 - w;
        let mut out = FeatureSet {
            input: self.input,
            index: Vec::with_capacity(rows),
            series: Vec::with_capacity(rows * OHLCV_CHANNELS * w),
            context: Vec::with_capacity(rows * self.input.context),
            close: Vec::with_capacity(rows),
        };
        let mut engine = WilliamsEngine::new(self.pivots);
        for (t, c) in candles.iter().enumerate() {
            engine.update(c).map_err(|e| FeatureError::Rejected {
                index: t,
                reason: e.to_string(),
            })?;
            if t + 1 < w {
                continue;
            }
            let now_ms = c.open_time_ms + self.pivots.interval_ms;
            push_window(&candles[t + 1 - w..=t], &mut out.series);
            push_pivot_context(&engine, t, now_ms, w, c.close.to_f64(), &mut out.context);
            out.index.push(t);
            out.close.push(c.close.to_f64());
        }
        Ok(out)
    }
}

fn push_window(window: &[Candle], out: &mut Vec<f32>) {
    let last = window[window.len() - 1].close.to_f64().ln();
    let rel = |p: f64| ((p.ln() - last) * PRICE_SCALE) as f32;
    out.extend(window.iter().map(|c| rel(c.open.to_f64())));
    out.extend(window.iter().map(|c| rel(c.high.to_f64())));
    out.extend(window.iter().map(|c| rel(c.low.to_f64())));
    out.extend(window.iter().map(|c| rel(c.close.to_f64())));
    // Volume in log units centred on the window mean: scale-free across symbols and eras.
    let logs: Vec<f64> = window
        .iter()
        .map(|c| c.volume.to_f64().max(0.0).ln_1p())
        .collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    out.extend(logs.iter().map(|v| (v - mean) as f32));
}

fn push_pivot_context(
    engine: &WilliamsEngine,
    t: usize,
    now_ms: i64,
    window: usize,
    close: f64,
    out: &mut Vec<f32>,
) {
    for level in 1..=LEVELS as u8 {
        let view = engine.level_at(level, now_ms);
        for p in [view.last_high(), view.last_low()] {
            match p {
                Some(p) => {
                    out.push(((p.price.to_f64() / close).ln() * PRICE_SCALE) as f32);
                    out.push((t.saturating_sub(p.index) as f32 / window as f32).min(4.0));
                }
                // Absent pivots read as "at the price, long ago" so the scale stays bounded.
                None => {
                    out.push(0.0);
                    out.push(4.0);
                }
            }
        }
    }
}

/// The next pivot of each level whose candle lies after candle `t`, from all pivots
/// (`batch_pivots` over the whole history), in the units of [`PivotTarget`].
pub fn next_pivot_targets(
    all: &[Vec<PivotPoint>; LEVELS],
    t: usize,
    close: f64,
) -> [Option<PivotTarget>; LEVELS] {
    std::array::from_fn(|l| {
        // Pivots of a level are confirmed in candle order, so the first candle after t is the
        // first one found by a binary search on the candle index.
        let ps = &all[l];
        let i = ps.partition_point(|p| p.index <= t);
        ps.get(i).map(|p| PivotTarget {
            price_offset: ((p.price.to_f64() / close).ln() * PRICE_SCALE) as f32,
            time_offset: ((p.index - t) as f64).ln() as f32,
            high: p.kind == PivotKind::High,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty, Timeframe};

    pub(crate) fn candle(i: usize, close: f64) -> Candle {
        let p = |v: f64| Price::from_f64_round(v);
        Candle {
            open_time_ms: i as i64 * 60_000,
            open: p(close * 0.999),
            high: p(close * 1.002),
            low: p(close * 0.998),
            close: p(close),
            volume: Qty::from_f64_round(1.0 + (i % 7) as f64),
            trades: 1,
        }
    }

    fn series(n: usize) -> Vec<Candle> {
        (0..n)
            .map(|i| candle(i, 100.0 + 5.0 * (i as f64 / 6.0).sin()))
            .collect()
    }

    #[test]
    fn rows_have_the_configured_shapes() {
        let b = FeatureBuilder::new(16, PivotConfig::for_timeframe(Timeframe::M1));
        let fs = b.build(&series(100)).unwrap();
        assert_eq!(fs.len(), 85);
        assert_eq!(fs.index[0], 15);
        let input = fs.input(0..10, Device::Cpu);
        assert_eq!(input.series.size(), vec![10, 5, 16]);
        assert_eq!(input.context.size(), vec![10, 20]);
        // The newest close is the reference, so its offset is exactly zero.
        let last_close = input.series.double_value(&[0, 3, 15]);
        assert_eq!(last_close, 0.0);
        assert!(ModelInput::new(input.series, input.context, &b.input).is_ok());
    }

    #[test]
    fn bad_candles_give_typed_errors() {
        let b = FeatureBuilder::new(4, PivotConfig::for_timeframe(Timeframe::M1));
        assert!(matches!(
            b.build(&series(3)),
            Err(FeatureError::TooFewCandles { need: 4, got: 3 })
        ));
        let mut s = series(10);
        s[5].low = Price::ZERO;
        assert!(matches!(
            b.build(&s),
            Err(FeatureError::NonPositivePrice { index: 5, .. })
        ));
        let mut s = series(10);
        s[6].open_time_ms = s[5].open_time_ms;
        assert!(matches!(
            b.build(&s),
            Err(FeatureError::Rejected { index: 6, .. })
        ));
        let wrong = ModelInput::new(
            Tensor::zeros([2, 5, 3], (Kind::Float, Device::Cpu)),
            Tensor::zeros([2, 20], (Kind::Float, Device::Cpu)),
            &b.input,
        );
        assert!(matches!(wrong, Err(FeatureError::Shape { .. })));
    }

    #[test]
    fn targets_are_strictly_after_t() {
        let candles = series(200);
        let cfg = PivotConfig::for_timeframe(Timeframe::M1);
        let all = crate::analysis::pivots::batch_pivots(&candles, cfg);
        for (t, c) in candles.iter().enumerate().take(150) {
            let targets = next_pivot_targets(&all, t, c.close.to_f64());
            let first = all[0].iter().find(|p| p.index > t).unwrap();
            let got = targets[0].unwrap();
            assert!(PivotTarget::bars(got.time_offset).round() as usize == first.index - t);
            assert_eq!(got.high, first.kind == PivotKind::High);
        }
    }
}
