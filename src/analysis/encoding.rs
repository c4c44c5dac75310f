//! Fixed, versioned float layout of a [`BaseDataInput`] for the models. Pure logic; the
//! conversion to `tch` tensors lives in `models::encoding`.
//!
//! **Layout v1** ([`INPUT_LAYOUT_VERSION`]): one flat `f32` vector made of named sections,
//! row-major, in this order (see [`layout`] for offsets):
//!
//! | section | shape | features (last axis) |
//! |---|---|---|
//! | `ohlcv` | `[5 series][300 frames][7]` | open, high, low, close (normalized), ln(1+volume), ln(1+trades), present |
//! | `indicators` | `[4 timeframes][19 indicators][2]` | scaled value, present |
//! | `cob_buckets` | `[41 offsets −20..=20][5]` | ln(1+bid qty), ln(1+ask qty), imbalance, (vwap − mid)/bucket size, has vwap |
//! | `cob_imbalance_ma` | `[11 offsets −5..=5][4]` | imbalance MA over 1, 5, 15, 60 s |
//! | `cob_summary` | `[10]` | present, age s, mid (normalized), bucket bps, spread bps, ln(1+buy), ln(1+sell), ln(1+trades), ln(1+large trades), signed ln(buy/sell) |
//! | `pivots` | `[4 timeframes][5 levels][9]` | last high (normalized), has high, ln(1+bars since high), last low, has low, ln(1+bars since low), trend up, down, sideways |
//! | `microstructure` | `[10]` | spread bps, mid (normalized), ln(1+bid depth), ln(1+ask depth), depth imbalance, ln(1+buy), ln(1+sell), buy share, ln(1+trades), ln(1+large trades) |
//! | `models` | `[4 slots: cnn, rl, lstm, transformer][16]` | present, ln(1+age s), confidence, action one-hot ×3 (BUY, SELL, HOLD), action confidence, probabilities ×3, direction, direction confidence, expected reward, Q-values ×3 |
//!
//! Series order is `ohlcv_1s, ohlcv_1m, ohlcv_1h, ohlcv_1d, reference_ohlcv_1s`; timeframe
//! order is `1s, 1m, 1h, 1d`. Frames are right-aligned: the newest candle is frame 299 and
//! missing older frames are all zero (present = 0).
//!
//! **Price normalization.** Every price of a timeframe's series (candles, price-like
//! indicators, pivots) maps through `(p − low) / (high − low)`, clamped to ±16, with
//! `PivotBounds` from that timeframe's Williams pivots known at `t` (the highest of levels 3, 2,
//! 1 with both highs and lows). **Fallback** when no such pivots exist yet, and always for the
//! reference series: the window's lowest low and highest high; a flat window (`high == low`) is
//! widened by 1/2000 of the price on each side (at least one price unit), so it maps to 0.5.
//! Price differences (MACD, ATR, true range) are divided by `high − low`. The COB's mid uses
//! the 1 s bounds. Volumes and counts are `ln(1 + x)`; percentages (RSI, stochastic, ROC,
//! bandwidth) are divided by 100; OBV is `sign(x)·ln(1 + |x|)`.
//!
//! Every value is finite: the encoder writes 0 for a non-finite number, though validation
//! rejects such inputs before they get here. A model slot holds the newest output (by
//! timestamp, ties by name) whose `model_type` is the slot's; hidden states are not encoded.

use std::sync::LazyLock;

use super::indicators::INDICATOR_NAMES;
use super::input::{BaseDataInput, FRAMES, InputConfig, InputError, SERIES};
use super::model_output::{Action, ModelOutput};
use super::pivots::{LEVELS, PivotBounds, PivotKind, Trend};
use crate::market::types::{Candle, Price, Qty, Timeframe};

/// Version of the float layout; bump on any change of order, shape or scaling.
pub const INPUT_LAYOUT_VERSION: u32 = 1;

/// Features per candle.
pub const CANDLE_FEATURES: usize = 7;
/// COB buckets on each side of the center.
pub const COB_HALF_BUCKETS: usize = 20;
/// COB central buckets on each side with imbalance moving averages.
pub const COB_MA_HALF_BUCKETS: usize = 5;
/// Model types, one slot each, in slot order.
pub const MODEL_SLOTS: [&str; 4] = ["cnn", "rl", "lstm", "transformer"];
/// Features per model slot.
pub const MODEL_FEATURES: usize = 16;
/// Features per pivot level.
pub const PIVOT_FEATURES: usize = 9;
const COB_WIDTH: usize = 2 * COB_HALF_BUCKETS + 1;
const MA_WIDTH: usize = 2 * COB_MA_HALF_BUCKETS + 1;
/// Largest magnitude a normalized price may take.
const NORM_CLAMP: f64 = 16.0;

/// One named block of the flat vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name.
    pub name: &'static str,
    /// Offset of its first float in the flat vector.
    pub offset: usize,
    /// Shape, row-major.
    pub shape: Vec<usize>,
}

impl Section {
    /// Number of floats.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized section.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The full layout of one encoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Layout version.
    pub version: u32,
    /// Sections in vector order.
    pub sections: Vec<Section>,
    /// Total floats.
    pub len: usize,
}

impl Layout {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

static LAYOUT: LazyLock<Layout> = LazyLock::new(|| {
    let shapes: [(&'static str, Vec<usize>); 8] = [
        ("ohlcv", vec![SERIES, FRAMES, CANDLE_FEATURES]),
        ("indicators", vec![4, INDICATOR_NAMES.len(), 2]),
        ("cob_buckets", vec![COB_WIDTH, 5]),
        ("cob_imbalance_ma", vec![MA_WIDTH, 4]),
        ("cob_summary", vec![10]),
        ("pivots", vec![4, LEVELS, PIVOT_FEATURES]),
        ("microstructure", vec![10]),
        ("models", vec![MODEL_SLOTS.len(), MODEL_FEATURES]),
    ];
    let mut offset = 0;
    let sections = shapes
        .into_iter()
        .map(|(name, shape)| {
            let s = Section {
                name,
                offset,
                shape,
            };
            offset += s.len();
            s
        })
        .collect();
    Layout {
        version: INPUT_LAYOUT_VERSION,
        sections,
        len: offset,
    }
});

/// The current layout.
pub fn layout() -> &'static Layout {
    &LAYOUT
}

/// A checkpoint's layout version differs from this build's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "input layout mismatch: the checkpoint was made for input layout v{found}, this build \
     encodes inputs with layout v{current}; it cannot be loaded (retrain or convert it)"
)]
pub struct LayoutMismatch {
    /// Version stored in the checkpoint.
    pub found: u32,
    /// [`INPUT_LAYOUT_VERSION`].
    pub current: u32,
}

/// Accepts a checkpoint only when it was made for the current layout.
pub fn check_layout(found_version: u32) -> Result<(), LayoutMismatch> {
    if found_version == INPUT_LAYOUT_VERSION {
        Ok(())
    } else {
        Err(LayoutMismatch {
            found: found_version,
            current: INPUT_LAYOUT_VERSION,
        })
    }
}

/// One encoded input: the flat vector plus the layout that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedInput {
    /// Layout version the data follows.
    pub version: u32,
    /// All floats, [`Layout::len`] of them.
    pub data: Vec<f32>,
    /// The layout (sections, offsets, shapes).
    pub layout: &'static Layout,
}

impl EncodedInput {
    /// The floats of section `name`.
    pub fn section(&self, name: &str) -> Option<&[f32]> {
        let s = self.layout.section(name)?;
        self.data.get(s.offset..s.offset + s.len())
    }
}

/// Validates, then encodes: the one path from an input to a model.
pub fn encode_validated(
    input: &BaseDataInput,
    cfg: &InputConfig,
) -> Result<EncodedInput, InputError> {
    input.validate(cfg)?;
    Ok(encode(input))
}

/// Encodes an input (not validated; see [`encode_validated`]).
pub fn encode(input: &BaseDataInput) -> EncodedInput {
    let mut data = Vec::new();
    encode_into(input, &mut data);
    EncodedInput {
        version: INPUT_LAYOUT_VERSION,
        data,
        layout: layout(),
    }
}

/// Encodes into a reused buffer (cleared and resized to the layout length).
pub fn encode_into(input: &BaseDataInput, data: &mut Vec<f32>) {
    let l = layout();
    data.clear();
    data.resize(l.len, 0.0);
    let bounds = series_bounds(input);
    let mut w = Writer { data, at: 0 };

    // ohlcv
    for (s, candles) in input.series().iter().enumerate() {
        let b = bounds[s];
        let shown = &candles[candles.len().saturating_sub(FRAMES)..];
        w.skip((FRAMES - shown.len()) * CANDLE_FEATURES);
        for c in shown {
            w.put(norm(b, c.open));
            w.put(norm(b, c.high));
            w.put(norm(b, c.low));
            w.put(norm(b, c.close));
            w.put(log_qty(c.volume));
            w.put((c.trades as f64).ln_1p());
            w.put(1.0);
        }
    }

    // indicators
    for (i, ind) in input.indicators.iter().enumerate() {
        let b = bounds[i];
        for (k, name) in INDICATOR_NAMES.iter().enumerate() {
            match ind.and_then(|v| v.values.values[k]) {
                Some(v) if v.is_finite() => {
                    w.put(scale_indicator(name, v, b));
                    w.put(1.0);
                }
                _ => w.skip(2),
            }
        }
    }

    // COB
    let cob = input.cob.as_deref();
    match cob {
        Some(cob) => {
            let size = cob.bucket_size.to_f64();
            let mid = cob.mid.to_f64();
            let mut row = [[0.0f64; 5]; COB_WIDTH];
            for bk in &cob.buckets {
                let Some(j) = slot(bk.offset, COB_HALF_BUCKETS) else {
                    continue;
                };
                row[j] = [
                    log_qty(bk.bid_qty),
                    log_qty(bk.ask_qty),
                    bk.imbalance,
                    bk.vwap.map_or(0.0, |v| (v - mid) / size),
                    if bk.vwap.is_some() { 1.0 } else { 0.0 },
                ];
            }
            row.iter().flatten().for_each(|&v| w.put(v));
            let ma = &cob.imbalance_ma;
            let mut mas = [[0.0f64; 4]; MA_WIDTH];
            for (i, &off) in ma.offsets.iter().enumerate() {
                let Some(j) = slot(off, COB_MA_HALF_BUCKETS) else {
                    continue;
                };
                for (k, series) in [&ma.ma_1s, &ma.ma_5s, &ma.ma_15s, &ma.ma_60s]
                    .into_iter()
                    .enumerate()
                {
                    mas[j][k] = series.get(i).copied().unwrap_or(0.0);
                }
            }
            mas.iter().flatten().for_each(|&v| w.put(v));
            let f = &cob.order_flow;
            let spread = (cob.best_ask.price - cob.best_bid.price).to_f64();
            w.put(1.0);
            w.put((input.timestamp_ms - cob.time_ms) as f64 / 1_000.0);
            w.put(norm(bounds[0], cob.mid));
            w.put(ratio_bps(size, mid));
            w.put(ratio_bps(spread, mid));
            w.put(log_qty(f.buy_qty));
            w.put(log_qty(f.sell_qty));
            w.put((f.trades as f64).ln_1p());
            w.put((f.large_trades as f64).ln_1p());
            w.put(f.buy_sell_ratio.map_or(0.0, signed_ln));
        }
        None => w.skip((COB_WIDTH * 5) + (MA_WIDTH * 4) + 10),
    }

    // pivots
    for (i, (tf, p)) in Timeframe::ALL.iter().zip(&input.pivots).enumerate() {
        let b = bounds[i];
        for (level, trend) in p.levels.iter().zip(p.trends) {
            for kind in [PivotKind::High, PivotKind::Low] {
                match level.iter().rev().find(|q| q.kind == kind) {
                    Some(q) => {
                        let bars = (input.timestamp_ms - q.time_ms).max(0) / tf.millis();
                        w.put(norm(b, q.price));
                        w.put(1.0);
                        w.put((bars as f64).ln_1p());
                    }
                    None => w.skip(3),
                }
            }
            for t in [Trend::Up, Trend::Down, Trend::Sideways] {
                w.put(if trend == t { 1.0 } else { 0.0 });
            }
        }
    }

    // microstructure
    let m = &input.microstructure;
    w.put(m.spread_bps.unwrap_or(0.0));
    w.put(m.mid.map_or(0.0, |p| norm(bounds[0], p)));
    w.put(log_qty(m.bid_depth));
    w.put(log_qty(m.ask_depth));
    let (bd, ad) = (m.bid_depth.to_f64(), m.ask_depth.to_f64());
    w.put(if bd + ad > 0.0 {
        (bd - ad) / (bd + ad)
    } else {
        0.0
    });
    w.put(log_qty(m.buy_volume));
    w.put(log_qty(m.sell_volume));
    let (bv, sv) = (m.buy_volume.to_f64(), m.sell_volume.to_f64());
    w.put(if bv + sv > 0.0 { bv / (bv + sv) } else { 0.5 });
    w.put((m.trades as f64).ln_1p());
    w.put((m.large_trades as f64).ln_1p());

    // models
    for kind in MODEL_SLOTS {
        let newest = input
            .last_predictions
            .values()
            .filter(|o| o.model_type == kind)
            .max_by(|a, b| (a.timestamp_ms, &a.model_name).cmp(&(b.timestamp_ms, &b.model_name)));
        match newest {
            Some(o) => encode_model(&mut w, o, input.timestamp_ms),
            None => w.skip(MODEL_FEATURES),
        }
    }
    debug_assert_eq!(w.at, l.len);
}

fn encode_model(w: &mut Writer<'_>, o: &ModelOutput, t_ms: i64) {
    let p = &o.predictions;
    w.put(1.0);
    w.put(((t_ms - o.timestamp_ms).max(0) as f64 / 1_000.0).ln_1p());
    w.put(o.confidence);
    for a in Action::ALL {
        w.put(if p.action == a { 1.0 } else { 0.0 });
    }
    w.put(p.action_confidence);
    p.probabilities.as_array().iter().for_each(|&v| w.put(v));
    w.put(p.direction_vector);
    w.put(p.direction_confidence);
    w.put(p.expected_reward.unwrap_or(0.0));
    match &p.q_values {
        Some(q) => q.as_array().iter().for_each(|&v| w.put(v)),
        None => w.skip(3),
    }
}

/// Sequential writer over the preallocated vector.
struct Writer<'a> {
    data: &'a mut [f32],
    at: usize,
}

impl Writer<'_> {
    #[inline]
    fn put(&mut self, v: f64) {
        self.data[self.at] = if v.is_finite() { v as f32 } else { 0.0 };
        self.at += 1;
    }

    #[inline]
    fn skip(&mut self, n: usize) {
        self.at += n;
    }
}

fn slot(offset: i32, half: usize) -> Option<usize> {
    let j = offset.checked_add(half as i32)?;
    usize::try_from(j).ok().filter(|&j| j <= 2 * half)
}

/// Normalization bounds per series (module docs).
fn series_bounds(input: &BaseDataInput) -> [PivotBounds; SERIES] {
    let series = input.series();
    std::array::from_fn(|s| {
        let pivots = input.pivots.get(s).and_then(|p| p.bounds);
        pivots.unwrap_or_else(|| window_bounds(series[s]))
    })
}

/// The window's low/high, widened when flat; unit bounds around 0 for an empty window.
pub fn window_bounds(candles: &[Candle]) -> PivotBounds {
    let low = candles.iter().map(|c| c.low).min().unwrap_or(Price::ZERO);
    let high = candles.iter().map(|c| c.high).max().unwrap_or(Price::ZERO);
    if high > low {
        return PivotBounds { low, high };
    }
    let pad = (low.raw() / 2_000).max(1);
    PivotBounds {
        low: Price(low.raw().saturating_sub(pad)),
        high: Price(high.raw().saturating_add(pad)),
    }
}

#[inline]
fn norm(b: PivotBounds, p: Price) -> f64 {
    b.normalize(p).clamp(-NORM_CLAMP, NORM_CLAMP)
}

#[inline]
fn log_qty(q: Qty) -> f64 {
    q.to_f64().max(0.0).ln_1p()
}

fn signed_ln(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p()
}

fn ratio_bps(x: f64, mid: f64) -> f64 {
    if mid > 0.0 { x / mid * 10_000.0 } else { 0.0 }
}

fn scale_indicator(name: &str, v: f64, b: PivotBounds) -> f64 {
    let low = b.low.to_f64();
    let range = (b.high - b.low).to_f64();
    match name {
        "sma" | "ema" | "bb_middle" | "bb_upper" | "bb_lower" | "vwap" => {
            ((v - low) / range).clamp(-NORM_CLAMP, NORM_CLAMP)
        }
        "macd" | "macd_signal" | "macd_hist" | "atr" | "true_range" => {
            (v / range).clamp(-NORM_CLAMP, NORM_CLAMP)
        }
        "rsi" | "stoch_k" | "stoch_d" | "roc" | "bb_bandwidth" => v / 100.0,
        "bb_percent_b" => v,
        "realized_vol" => v * 100.0,
        _ => signed_ln(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::input::fixture::{T, market};
    use crate::analysis::input::{MIN_FRAMES, SymbolAnalysis};
    use crate::analysis::model_output::ModelOutputStore;
    use crate::analysis::model_output::tests::output;

    fn input(frames: [usize; 4]) -> BaseDataInput {
        let m = market(frames, true);
        let mut a = SymbolAnalysis::new("ETHUSDT", InputConfig::default());
        let mut store = ModelOutputStore::default();
        let mut cnn = output("cnn", "williams_cnn", T - 2_000);
        cnn.predictions.action = Action::Buy;
        store.record(cnn);
        a.build(&m, &m, &store, T)
    }

    #[test]
    fn layout_is_contiguous_and_documented() {
        let l = layout();
        assert_eq!(l.version, INPUT_LAYOUT_VERSION);
        let mut at = 0;
        for s in &l.sections {
            assert_eq!(s.offset, at, "{}", s.name);
            at += s.len();
        }
        assert_eq!(at, l.len);
        assert_eq!(l.section("ohlcv").unwrap().shape, vec![5, 300, 7]);
        assert_eq!(l.section("cob_buckets").unwrap().shape, vec![41, 5]);
        assert_eq!(l.section("pivots").unwrap().shape, vec![4, 5, 9]);
        assert_eq!(l.len, 10_500 + 152 + 205 + 44 + 10 + 180 + 10 + 64);
    }

    #[test]
    fn check_layout_explains_the_mismatch() {
        assert!(check_layout(INPUT_LAYOUT_VERSION).is_ok());
        let e = check_layout(INPUT_LAYOUT_VERSION + 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("made for input layout v2") && e.contains("layout v1"),
            "{e}"
        );
    }

    #[test]
    fn encodes_every_section_finite_and_right_aligned() {
        let input = input([150, 320, 320, 320]);
        let enc = encode(&input);
        assert_eq!(enc.data.len(), layout().len);
        assert!(enc.data.iter().all(|v| v.is_finite()));
        let ohlcv = enc.section("ohlcv").unwrap();
        let frame = |s: usize, f: usize| &ohlcv[(s * FRAMES + f) * CANDLE_FEATURES..][..7];
        // 1 s series: 150 frames, so frames 0..150 are empty and 150..300 present.
        assert!(frame(0, 149).iter().all(|&v| v == 0.0));
        assert_eq!(frame(0, 150)[6], 1.0);
        assert_eq!(frame(1, 0)[6], 1.0);
        let last = input.ohlcv[0].last().unwrap();
        let b = input.pivots[0].bounds.unwrap();
        assert_eq!(frame(0, 299)[3], b.normalize(last.close) as f32);
        assert_eq!(frame(0, 299)[4], last.volume.to_f64().ln_1p() as f32);
        // COB present with its age, mid and at least one bucket with liquidity.
        let summary = enc.section("cob_summary").unwrap();
        assert_eq!(summary[0..2], [1.0, 0.0]);
        assert!(enc.section("cob_buckets").unwrap().iter().any(|&v| v > 0.0));
        // The cnn slot carries BUY one-hot; the other slots are empty.
        let models = enc.section("models").unwrap();
        assert_eq!(models[0], 1.0);
        assert_eq!(models[3..6], [1.0, 0.0, 0.0]);
        assert!(models[MODEL_FEATURES..].iter().all(|&v| v == 0.0));
        // Pivots of level 1 on every timeframe are present.
        let pivots = enc.section("pivots").unwrap();
        for tf in 0..4 {
            assert_eq!(pivots[tf * LEVELS * PIVOT_FEATURES + 1], 1.0);
        }
    }

    #[test]
    fn validated_encoding_refuses_short_inputs() {
        let cfg = InputConfig::default();
        let e = encode_validated(&input([320, 320, 320, MIN_FRAMES - 1]), &cfg).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(encode_validated(&input([320; 4]), &cfg).is_ok());
    }

    #[test]
    fn window_fallback_and_flat_windows_stay_finite() {
        let mut input = input([320; 4]);
        input.pivots.iter_mut().for_each(|p| p.bounds = None);
        let enc = encode(&input);
        let ohlcv = enc.section("ohlcv").unwrap();
        // Window bounds put every price of the 1 m series inside [0, 1].
        let m1 = &ohlcv[FRAMES * CANDLE_FEATURES..2 * FRAMES * CANDLE_FEATURES];
        assert!(
            m1.chunks(7)
                .all(|f| f[..4].iter().all(|v| (0.0..=1.0).contains(v)))
        );
        let flat = Candle {
            open_time_ms: 0,
            open: Price::from_units(10),
            high: Price::from_units(10),
            low: Price::from_units(10),
            close: Price::from_units(10),
            volume: Qty::ZERO,
            trades: 0,
        };
        let b = window_bounds(std::slice::from_ref(&flat));
        assert_eq!(b.normalize(flat.close), 0.5);
        assert!(window_bounds(&[]).high > window_bounds(&[]).low);
    }

    #[test]
    fn encode_into_reuses_the_buffer_identically() {
        let input = input([320; 4]);
        let mut buf = vec![7.0; 3];
        encode_into(&input, &mut buf);
        assert_eq!(buf, encode(&input).data);
    }
}
