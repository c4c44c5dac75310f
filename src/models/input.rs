//! The models' tensor interface, built from the one encoded model input
//! ([`crate::analysis::encoding`], layout v[`INPUT_LAYOUT_VERSION`]).
//!
//! `ModelInput { series: [B, C, T], context: [B, F] }`:
//! - **series**: the `ohlcv` section's five candle series (`ohlcv_1s`, `1m`, `1h`, `1d`,
//!   `reference_ohlcv_1s`) × their seven features are the `C = 35` conv channels, over the
//!   newest `T = window` frames (right-aligned like the layout, so frame `T − 1` is the newest
//!   closed candle of every series; an absent frame is all zero with `present = 0`);
//! - **context**: every other section of the layout, concatenated in layout order (indicators,
//!   COB buckets, COB imbalance MAs, COB summary, pivots, microstructure, model outputs).
//!
//! Live inference and training both go through [`ModelRows::push`], so they see the same
//! numbers for the same `BaseDataInput`.

use crate::analysis::encoding::window_bounds;
use crate::analysis::encoding::{
    CANDLE_FEATURES, EncodedInput, INPUT_LAYOUT_VERSION, LayoutMismatch, PIVOT_FEATURES,
    check_layout, layout,
};
use crate::analysis::input::{BaseDataInput, FRAMES, SERIES};
use crate::analysis::pivots::{LEVELS, PivotKind, PivotPoint};
use crate::market::types::Timeframe;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Conv channels: every candle feature of every series.
pub const CHANNELS: usize = SERIES * CANDLE_FEATURES;
/// Multiplier of percentages in targets and labels (1.0 = 1 %).
pub const PERCENT: f64 = 100.0;
/// Price offsets are in tenths of the normalization range, so typical pivot distances are a
/// few units: large enough for the loss to be in its linear regime.
pub const PRICE_UNITS: f64 = 10.0;
/// Time offsets are `TIME_UNITS · ln(bars)`, for the same reason.
pub const TIME_UNITS: f64 = 2.0;
/// Largest magnitude of a price target (the encoder's clamp of ±16 ranges).
pub const TARGET_CLAMP: f32 = 160.0;

/// Shapes of a model input and the layout version that fills them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    /// Series channels C.
    pub channels: usize,
    /// Time steps T (the newest frames of each series).
    pub window: usize,
    /// Context features F.
    pub context: usize,
    /// Version of the encoding that fills these shapes.
    pub layout_version: u32,
}

impl InputShape {
    /// The shape of the current layout over the newest `window` frames (clamped to 1..=300).
    pub fn encoded(window: usize) -> Self {
        let l = layout();
        let ohlcv = l.section("ohlcv").map_or(0, |s| s.len());
        Self {
            channels: CHANNELS,
            window: window.clamp(1, FRAMES),
            context: l.len - ohlcv,
            layout_version: INPUT_LAYOUT_VERSION,
        }
    }
}

/// Why an input could not be turned into model rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputShapeError {
    /// The encoded input follows another layout than the model's.
    #[error(transparent)]
    Layout(#[from] LayoutMismatch),
    /// The model's shape is not the shape of the current layout.
    #[error("model input shape {got:?} does not match the encoded layout's {expected:?}")]
    Shape {
        /// The model's shape.
        got: InputShape,
        /// What the current layout gives for that window.
        expected: InputShape,
    },
    /// A tensor does not have the configured shape.
    #[error("{what} has shape {got:?}, expected {expected:?}")]
    Tensor {
        /// Which tensor.
        what: &'static str,
        /// Its shape.
        got: Vec<i64>,
        /// The configured shape (-1 = any batch size).
        expected: Vec<i64>,
    },
}

/// A batch of model inputs on one device.
#[derive(Debug)]
pub struct ModelInput {
    /// `[B, C, T]` float32.
    pub series: Tensor,
    /// `[B, F]` float32.
    pub context: Tensor,
}

impl ModelInput {
    /// Wraps two tensors after checking them against `shape`.
    pub fn new(
        series: Tensor,
        context: Tensor,
        shape: &InputShape,
    ) -> Result<Self, InputShapeError> {
        let s = series.size();
        let c = context.size();
        let (ch, w, f) = (
            shape.channels as i64,
            shape.window as i64,
            shape.context as i64,
        );
        if s.len() != 3 || s[1] != ch || s[2] != w {
            return Err(InputShapeError::Tensor {
                what: "series",
                got: s,
                expected: vec![-1, ch, w],
            });
        }
        if c.len() != 2 || c[1] != f || c[0] != s[0] {
            return Err(InputShapeError::Tensor {
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

/// Host-side model rows: what datasets and the online trainer keep.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRows {
    /// Shape of every row.
    pub shape: InputShape,
    /// Rows of `C * T` floats, channel-major.
    pub series: Vec<f32>,
    /// Rows of `F` floats.
    pub context: Vec<f32>,
}

impl ModelRows {
    /// No rows yet.
    pub fn new(shape: InputShape) -> Self {
        Self {
            shape,
            series: Vec::new(),
            context: Vec::new(),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.context.len() / self.shape.context.max(1)
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.context.is_empty()
    }

    /// Appends the model's view of one encoded input (after checking layout and shape).
    pub fn push(&mut self, enc: &EncodedInput) -> Result<(), InputShapeError> {
        check_layout(enc.version)?;
        let expected = InputShape::encoded(self.shape.window);
        if self.shape != expected || enc.data.len() != enc.layout.len {
            return Err(InputShapeError::Shape {
                got: self.shape,
                expected,
            });
        }
        let l = enc.layout;
        let ohlcv = l
            .section("ohlcv")
            .map_or(0..0, |s| s.offset..s.offset + s.len());
        let data = &enc.data[ohlcv.clone()];
        let w = self.shape.window;
        // Layout is [series][frame][feature]; channels are (series, feature), time is frames.
        for s in 0..SERIES {
            for f in 0..CANDLE_FEATURES {
                self.series.extend(
                    (FRAMES - w..FRAMES).map(|t| data[(s * FRAMES + t) * CANDLE_FEATURES + f]),
                );
            }
        }
        self.context.extend_from_slice(&enc.data[..ohlcv.start]);
        self.context.extend_from_slice(&enc.data[ohlcv.end..]);
        Ok(())
    }

    /// Series and context floats of row `r`.
    pub fn row(&self, r: usize) -> (&[f32], &[f32]) {
        let (cs, f) = (self.shape.channels * self.shape.window, self.shape.context);
        (
            &self.series[r * cs..(r + 1) * cs],
            &self.context[r * f..(r + 1) * f],
        )
    }

    /// Appends a row taken from another set of the same shape.
    pub fn push_row(&mut self, series: &[f32], context: &[f32]) {
        self.series.extend_from_slice(series);
        self.context.extend_from_slice(context);
    }

    /// Rows `range` as a model input on `device`.
    pub fn input(&self, rows: std::ops::Range<usize>, device: Device) -> ModelInput {
        let (cs, f) = (self.shape.channels * self.shape.window, self.shape.context);
        let n = rows.len() as i64;
        let series = Tensor::from_slice(&self.series[rows.start * cs..rows.end * cs])
            .view([n, self.shape.channels as i64, self.shape.window as i64])
            .to_device(device);
        let context = Tensor::from_slice(&self.context[rows.start * f..rows.end * f])
            .view([n, f as i64])
            .to_device(device);
        ModelInput { series, context }
    }

    /// Every row as one model input on `device`.
    pub fn all(&self, device: Device) -> ModelInput {
        self.input(0..self.len(), device)
    }
}

/// Position of a timeframe in the layout's timeframe order (`1s, 1m, 1h, 1d`).
pub const fn timeframe_index(tf: Timeframe) -> usize {
    match tf {
        Timeframe::S1 => 0,
        Timeframe::M1 => 1,
        Timeframe::H1 => 2,
        Timeframe::D1 => 3,
    }
}

/// The next pivot of one level after an input's newest candle, in model units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PivotTarget {
    /// Pivot price minus the newest close, in the input's normalization bounds of the
    /// timeframe: `PRICE_UNITS · (price − close) / (high − low)`, clamped to ±160.
    pub price_offset: f32,
    /// `TIME_UNITS · ln(bars from the newest candle to the pivot candle)`, bars ≥ 1.
    pub time_offset: f32,
    /// High (true) or low.
    pub high: bool,
}

impl PivotTarget {
    /// Bars ahead encoded by a time offset.
    pub fn bars(time_offset: f32) -> f64 {
        Self::bars_f64(f64::from(time_offset))
    }

    /// Bars ahead encoded by a (predicted) time offset, bounded to a sane horizon.
    pub fn bars_f64(time_offset: f64) -> f64 {
        (time_offset / TIME_UNITS).clamp(-5.0, 12.0).exp()
    }
}

/// What the layout says about one timeframe at the input's time: the newest close
/// (normalized) and, per level, the newest known high and low (normalized price, bars since).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PivotView {
    /// Normalized close of the newest candle (`None` when the series is empty).
    pub close: Option<f32>,
    /// Per level: `(normalized price, ln(1 + bars since))` of the newest high.
    pub high: [Option<(f32, f32)>; LEVELS],
    /// Per level: the same for the newest low.
    pub low: [Option<(f32, f32)>; LEVELS],
}

impl PivotView {
    /// Reads the `ohlcv` and `pivots` sections of `enc` for timeframe `tf`.
    pub fn read(enc: &EncodedInput, tf: Timeframe) -> Self {
        let i = timeframe_index(tf);
        let frame = enc
            .section("ohlcv")
            .map(|o| &o[(i * FRAMES + FRAMES - 1) * CANDLE_FEATURES..][..CANDLE_FEATURES]);
        let close = frame.filter(|f| f[6] > 0.0).map(|f| f[3]);
        let pivots = enc.section("pivots").unwrap_or(&[]);
        let at = |l: usize, k: usize| -> Option<(f32, f32)> {
            let o = (i * LEVELS + l) * PIVOT_FEATURES + 3 * k;
            let v = pivots.get(o..o + 3)?;
            (v[1] > 0.0).then_some((v[0], v[2]))
        };
        Self {
            close,
            high: std::array::from_fn(|l| at(l, 0)),
            low: std::array::from_fn(|l| at(l, 1)),
        }
    }

    /// The naive guess for level `l` (0-based): the next pivot is the opposite of the newest
    /// known one, at the price of the newest known pivot of that kind. `(offset, high)`.
    pub fn naive(&self, l: usize) -> Option<(f32, bool)> {
        let close = self.close?;
        let (h, lo) = (self.high[l], self.low[l]);
        let next_high = match (h, lo) {
            (Some((_, ha)), Some((_, la))) => la < ha,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => return None,
        };
        let price = if next_high { h } else { lo }.map(|(p, _)| p);
        let units = PRICE_UNITS as f32;
        Some((price.map_or(0.0, |p| (p - close) * units), next_high))
    }
}

/// The timeframe slot a candle interval goes into: the longest of `1s, 1m, 1h, 1d` that is
/// not longer than it (None below 1 s).
pub fn slot_for(interval_ms: i64) -> Option<Timeframe> {
    Timeframe::ALL
        .into_iter()
        .rev()
        .find(|tf| tf.millis() <= interval_ms)
}

/// How a history of any regular interval is replayed through the four timeframe slots: its
/// candles go into the slot [`slot_for`] picks, on a time axis scaled so one candle spans one
/// bar of that slot (`virtual = (real − phase) / interval × slot`); the coarser slots then
/// aggregate whole multiples of it (5 m candles in the 1 m slot make 5 h and 5 d candles in
/// the 1 h and 1 d slots). For 1 s, 1 m, 1 h and 1 d candles the scale is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeScale {
    /// The candles' interval, ms.
    pub interval_ms: i64,
    /// The slot holding them.
    pub slot: Timeframe,
    /// Open time of a candle, modulo the interval (weekly candles do not open at the epoch).
    pub phase_ms: i64,
}

impl TimeScale {
    /// The scale of candles `interval_ms` long whose open times are `phase_ms` modulo it.
    pub fn new(interval_ms: i64, phase_ms: i64) -> Option<Self> {
        let slot = slot_for(interval_ms)?;
        Some(Self {
            interval_ms,
            slot,
            phase_ms: phase_ms.rem_euclid(interval_ms),
        })
    }

    /// True when real and replay times are the same.
    pub fn is_identity(&self) -> bool {
        self.interval_ms == self.slot.millis() && self.phase_ms == 0
    }

    /// Replay time of a real time on the candles' grid.
    pub fn to_virtual(&self, real_ms: i64) -> i64 {
        (real_ms - self.phase_ms).div_euclid(self.interval_ms) * self.slot.millis()
    }

    /// Real time of a replay time on the slot's grid.
    pub fn to_real(&self, virtual_ms: i64) -> i64 {
        virtual_ms.div_euclid(self.slot.millis()) * self.interval_ms + self.phase_ms
    }

    /// Length a bar of slot `tf` stands for, ms (0 for slots finer than the data's).
    pub fn slot_interval(&self, tf: Timeframe) -> i64 {
        if tf < self.slot {
            0
        } else {
            self.interval_ms * (tf.millis() / self.slot.millis())
        }
    }
}

/// Which candle interval each of the model input's five series holds (ms; 0: absent), as the
/// model was trained: `ohlcv_1s`, `ohlcv_1m`, `ohlcv_1h`, `ohlcv_1d`, the reference series.
/// Stored in the CNN's config, so a checkpoint refuses data of another layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesLayout {
    /// Interval per series, ms, in layout order.
    pub intervals_ms: [i64; SERIES],
}

/// Why a candle interval (and reference) cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// Shorter than the finest slot.
    #[error("candle interval {0} ms is below 1 s; expected a regular interval of at least 1 s")]
    TooShort(i64),
    /// The reference file's interval fits neither way.
    #[error(
        "reference candles of {reference_ms} ms beside data of {data_ms} ms: expected the \
         data's interval ({data_ms} ms), or 1 s candles beside 1s/1m/1h/1d data"
    )]
    Reference {
        /// The data's interval.
        data_ms: i64,
        /// The reference's interval.
        reference_ms: i64,
    },
}

impl SeriesLayout {
    /// What the live desk feeds: the four timeframes and the reference symbol's 1 s candles.
    pub const LIVE: Self = Self {
        intervals_ms: [1_000, 60_000, 3_600_000, 86_400_000, 1_000],
    };

    /// The layout a history of `scale` gives, with a reference series of `reference_ms`
    /// (None: no reference file): slots finer than the data's are absent, coarser ones hold
    /// whole multiples of it.
    pub fn of(scale: &TimeScale, reference_ms: Option<i64>) -> Result<Self, IntervalError> {
        let mut intervals_ms = [0; SERIES];
        for (i, tf) in Timeframe::ALL.into_iter().enumerate() {
            intervals_ms[i] = scale.slot_interval(tf);
        }
        intervals_ms[SERIES - 1] = match reference_ms {
            None => 0,
            Some(r) if r == scale.interval_ms => r,
            Some(1_000) if scale.is_identity() => 1_000,
            Some(r) => {
                return Err(IntervalError::Reference {
                    data_ms: scale.interval_ms,
                    reference_ms: r,
                });
            }
        };
        Ok(Self { intervals_ms })
    }

    /// True when every present series holds its slot's own timeframe (what live data gives).
    pub fn is_standard(&self) -> bool {
        self.intervals_ms
            .iter()
            .zip(Self::LIVE.intervals_ms)
            .all(|(&have, live)| have == 0 || have == live)
    }
}

impl std::fmt::Display for SeriesLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = ["1s", "1m", "1h", "1d", "reference"];
        let parts: Vec<String> = names
            .iter()
            .zip(self.intervals_ms)
            .map(|(n, ms)| match ms {
                0 => format!("{n}: absent"),
                ms => format!("{n}: {}", interval_name(ms)),
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// `5m`, `4h`, `90s`, `1d`, `7d`: the largest unit that divides the interval.
pub fn interval_name(ms: i64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= len && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// Where a timeframe's predictions are anchored in an input: the newest closed candle and the
/// normalization range the encoder used for that timeframe (pivot bounds, else the window's
/// low/high, as documented in `analysis::encoding`). Converts model units to prices and times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    /// Timeframe of the predictions.
    pub timeframe: Timeframe,
    /// Close of the newest candle.
    pub close: f64,
    /// `high − low` of the normalization bounds (> 0).
    pub range: f64,
    /// Open time of the newest candle.
    pub last_open_ms: i64,
    /// Length of one bar in the anchor's time, ms (the timeframe's, or the data's interval
    /// once a rescaled replay's times are mapped back; see [`TimeScale`]).
    pub interval_ms: i64,
}

impl Anchor {
    /// The anchor of `tf` in `input`; `None` when the series is empty.
    pub fn of(input: &BaseDataInput, tf: Timeframe) -> Option<Self> {
        let i = timeframe_index(tf);
        let candles = &input.ohlcv[i];
        let last = candles.last()?;
        let b = input.pivots[i]
            .bounds
            .unwrap_or_else(|| window_bounds(candles));
        let range = (b.high - b.low).to_f64();
        (range > 0.0).then_some(Self {
            timeframe: tf,
            close: last.close.to_f64(),
            range,
            last_open_ms: last.open_time_ms,
            interval_ms: tf.millis(),
        })
    }

    /// The price a price offset stands for.
    pub fn price(&self, offset: f64) -> f64 {
        self.close + offset / PRICE_UNITS * self.range
    }

    /// The time (pivot candle open) a time offset stands for; at least one bar ahead.
    pub fn time_ms(&self, time_offset: f64) -> i64 {
        let bars = PivotTarget::bars_f64(time_offset).round().max(1.0) as i64;
        self.last_open_ms + bars * self.interval_ms
    }

    /// An offset difference in basis points of the close.
    pub fn bp(&self, offset_diff: f64) -> f64 {
        offset_diff.abs() / PRICE_UNITS * self.range / self.close * 1e4
    }

    /// An offset in percent of the close.
    pub fn percent(&self, offset: f64) -> f64 {
        offset / PRICE_UNITS * self.range / self.close * PERCENT
    }

    /// `pivot` as a target of an input anchored here; `None` unless it lies after the newest
    /// candle.
    pub fn target(&self, pivot: &PivotPoint) -> Option<PivotTarget> {
        let tf = self.interval_ms.max(1);
        if pivot.time_ms <= self.last_open_ms {
            return None;
        }
        let bars = ((pivot.time_ms - self.last_open_ms) / tf).max(1);
        let offset = PRICE_UNITS * (pivot.price.to_f64() - self.close) / self.range;
        Some(PivotTarget {
            price_offset: (offset as f32).clamp(-TARGET_CLAMP, TARGET_CLAMP),
            time_offset: (TIME_UNITS * (bars as f64).ln()) as f32,
            high: pivot.kind == PivotKind::High,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::encoding::layout;

    fn encoded() -> EncodedInput {
        let l = layout();
        EncodedInput {
            version: INPUT_LAYOUT_VERSION,
            data: (0..l.len).map(|i| i as f32).collect(),
            layout: l,
        }
    }

    #[test]
    fn rows_put_series_features_on_channels_and_the_rest_in_context() {
        let enc = encoded();
        let shape = InputShape::encoded(4);
        let mut rows = ModelRows::new(shape);
        rows.push(&enc).unwrap();
        rows.push(&enc).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(shape.context, layout().len - 5 * 300 * 7);
        let x = rows.all(Device::Cpu);
        assert_eq!(x.series.size(), vec![2, 35, 4]);
        assert_eq!(x.context.size(), vec![2, shape.context as i64]);
        // Channel (series 1, feature 3) at the newest frame is ohlcv[1][299][3].
        let v = x.series.double_value(&[0, 7 + 3, 3]);
        assert_eq!(v, ((300 + 299) * 7 + 3) as f64);
        // Frames run oldest to newest.
        assert_eq!(x.series.double_value(&[0, 0, 0]), (296 * 7) as f64);
        // Context starts right after the ohlcv section.
        assert_eq!(x.context.double_value(&[1, 0]), (5 * 300 * 7) as f64);
        assert!(ModelInput::new(x.series, x.context, &shape).is_ok());
    }

    #[test]
    fn other_layouts_and_shapes_are_refused() {
        let mut enc = encoded();
        let mut rows = ModelRows::new(InputShape::encoded(8));
        enc.version = INPUT_LAYOUT_VERSION + 1;
        let e = rows.push(&enc).unwrap_err().to_string();
        assert!(e.contains("input layout mismatch"), "{e}");
        let mut shape = InputShape::encoded(8);
        shape.context += 1;
        let mut rows = ModelRows::new(shape);
        assert!(matches!(
            rows.push(&encoded()),
            Err(InputShapeError::Shape { .. })
        ));
        let wrong = ModelInput::new(
            Tensor::zeros([2, 5, 3], (Kind::Float, Device::Cpu)),
            Tensor::zeros([2, 20], (Kind::Float, Device::Cpu)),
            &InputShape::encoded(8),
        );
        assert!(matches!(wrong, Err(InputShapeError::Tensor { .. })));
    }

    #[test]
    fn naive_guess_is_the_opposite_of_the_newest_pivot() {
        let v = PivotView {
            close: Some(0.5),
            high: [Some((0.9, 1.0)), None, None, None, None],
            low: [Some((0.1, 2.0)), None, Some((0.2, 0.5)), None, None],
        };
        // The high is newer (fewer bars since), so a low comes next at the last low's price.
        let (off, high) = v.naive(0).unwrap();
        assert!(!high && (off + 4.0).abs() < 1e-5);
        assert_eq!(v.naive(1), None);
        assert!(v.naive(2).unwrap().1);
    }

    #[test]
    fn any_interval_gets_a_slot_a_time_scale_and_a_recorded_layout() {
        let (m, h, d) = (60_000, 3_600_000, 86_400_000);
        // 1s/1m/1h/1d are their own slots, unscaled: the live layout's intervals.
        for tf in Timeframe::ALL {
            let s = TimeScale::new(tf.millis(), 0).unwrap();
            assert!(s.is_identity() && s.slot == tf);
            assert_eq!(
                s.to_virtual(1_700_000_000_000 / tf.millis() * tf.millis()),
                1_700_000_000_000 / tf.millis() * tf.millis()
            );
        }
        // 5 m candles go into the 1 m slot; its 1 h and 1 d slots hold 5 h and 5 d.
        let t0 = 1_614_556_800_000;
        let five = TimeScale::new(5 * m, t0).unwrap();
        assert_eq!((five.slot, five.phase_ms), (Timeframe::M1, 0));
        assert!(!five.is_identity());
        assert_eq!(five.to_virtual(t0 + 3 * 5 * m) - five.to_virtual(t0), 3 * m);
        assert_eq!(five.to_real(five.to_virtual(t0 + 35 * m)), t0 + 35 * m);
        let l = SeriesLayout::of(&five, None).unwrap();
        assert_eq!(l.intervals_ms, [0, 5 * m, 5 * h, 5 * d, 0]);
        assert!(!l.is_standard());
        assert_eq!(
            l.to_string(),
            "1s: absent, 1m: 5m, 1h: 5h, 1d: 5d, reference: absent"
        );
        // A reference at the data's interval is taken; a 1 s one only beside live intervals.
        assert_eq!(
            SeriesLayout::of(&five, Some(5 * m)).unwrap().intervals_ms[4],
            5 * m
        );
        assert_eq!(
            SeriesLayout::of(&five, Some(1_000)),
            Err(IntervalError::Reference {
                data_ms: 5 * m,
                reference_ms: 1_000
            })
        );
        let one = TimeScale::new(m, 0).unwrap();
        assert_eq!(
            SeriesLayout::of(&one, Some(1_000)).unwrap().intervals_ms,
            [0, m, h, d, 1_000]
        );
        assert!(SeriesLayout::of(&one, Some(1_000)).unwrap().is_standard());
        // 15 m, 4 h, 1 w (Binance weeks open on Mondays, not on the epoch's Thursday).
        let q = TimeScale::new(15 * m, 0).unwrap();
        assert_eq!(
            SeriesLayout::of(&q, None).unwrap().intervals_ms,
            [0, 15 * m, 15 * h, 15 * d, 0]
        );
        let four = TimeScale::new(4 * h, 0).unwrap();
        assert_eq!(four.slot, Timeframe::H1);
        assert_eq!(
            SeriesLayout::of(&four, None).unwrap().intervals_ms,
            [0, 0, 4 * h, 4 * d, 0]
        );
        let monday = 1_609_718_400_000; // 2021-01-04T00:00:00Z
        let week = TimeScale::new(7 * d, monday).unwrap();
        assert_eq!(week.slot, Timeframe::D1);
        assert_eq!(week.phase_ms, 4 * d);
        assert_eq!(week.to_virtual(monday + 7 * d) - week.to_virtual(monday), d);
        assert_eq!(week.to_real(week.to_virtual(monday)), monday);
        assert_eq!(TimeScale::new(500, 0), None);
        assert_eq!(
            [5 * m, 4 * h, 90_000, d, 7 * d, 1_500].map(interval_name),
            ["5m", "4h", "90s", "1d", "7d", "1500ms"]
        );
    }
}
