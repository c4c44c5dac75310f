//! Supervised training of the pivot CNN on historical candles.
//!
//! Every sample is a `BaseDataInput` built at a base candle's close `t` by replaying the
//! history through the live analysis code ([`replay_history`]), encoded with the live
//! encoder and cut into model rows by [`ModelRows::push`], so training and live inference see
//! the same numbers. Ground truth at `t` is the next pivot of each level (of the configured
//! timeframe) whose candle opens after the newest candle of the input, from the Williams
//! pivots of the whole history. The validation split is by time, and training labels that
//! became known after validation starts are masked so no training label peeks into it.

use super::cnn::{Action, CnnModel, CnnOutput, PIVOT_OUTPUTS};
use super::input::{
    Anchor, InputShape, InputShapeError, ModelRows, PivotTarget, PivotView, TimeScale,
    timeframe_index,
};
use super::rl_train::{MARKET_RECENT, market_features, market_width};
use super::samples::{SampleError, replay_history, replay_scaled};
use crate::analysis::encoding::encode;
use crate::analysis::input::InputConfig;
use crate::analysis::pivots::{LEVELS, PivotConfig, batch_pivots};
use crate::market::types::{Candle, Timeframe};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CnnTrainConfig {
    /// Maximum passes over the training rows.
    pub epochs: usize,
    /// Rows per gradient step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Share of rows (the latest ones) used for validation.
    pub val_fraction: f64,
    /// Epochs without a validation improvement before stopping.
    pub patience: usize,
    /// Seed for shuffling.
    pub seed: u64,
}

impl Default for CnnTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch: 64,
            lr: 2e-3,
            val_fraction: 0.2,
            patience: 4,
            seed: 0,
        }
    }
}

/// How samples are made from a candle history.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    /// Timeframe of the history's candles.
    pub base: Timeframe,
    /// Timeframe whose pivots are the targets.
    pub timeframe: Timeframe,
    /// Frames of each series the CNN reads.
    pub window: usize,
    /// Samples start once the target timeframe has this many closed candles.
    pub warmup: usize,
    /// Expected move (percent of the close) below which the action label is HOLD.
    pub hold_threshold: f64,
    /// Builder settings (the same as live).
    pub input: InputConfig,
    /// How candles of another interval than `base`'s are laid out (None: they are `base`
    /// candles).
    pub scale: Option<TimeScale>,
}

impl DatasetConfig {
    /// Samples of `base` candles predicting `base` pivots over `window` frames.
    pub fn new(base: Timeframe, window: usize) -> Self {
        Self {
            base,
            timeframe: base,
            window,
            warmup: window,
            hold_threshold: 0.1,
            input: InputConfig::default(),
            scale: None,
        }
    }

    /// Samples of candles of any regular interval (at least 1 s) laid out by `scale`,
    /// predicting the pivots of the slot that holds them.
    pub fn scaled(scale: TimeScale, window: usize) -> Self {
        Self {
            scale: Some(scale),
            ..Self::new(scale.slot, window)
        }
    }
}

/// Why a dataset could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DatasetError {
    /// The history is malformed.
    #[error(transparent)]
    History(#[from] SampleError),
    /// An encoded input did not fit the model shape.
    #[error(transparent)]
    Shape(#[from] InputShapeError),
}

/// Inputs with their targets, one row per sample time.
#[derive(Debug, Clone)]
pub struct CnnDataset {
    /// Model rows (the CNN's view of each encoded input).
    pub rows: ModelRows,
    /// Timeframe of the targets.
    pub timeframe: Timeframe,
    /// Input time of each row.
    pub t_ms: Vec<i64>,
    /// Where each row's predictions are anchored (close, bounds, newest candle).
    pub anchors: Vec<Anchor>,
    /// Next pivot per level for each row (None: no pivot follows in the data).
    pub targets: Vec<[Option<PivotTarget>; LEVELS]>,
    /// When each target pivot became known (for masking across the split).
    pub target_known_ms: Vec<[i64; LEVELS]>,
    /// Action label per row.
    pub actions: Vec<Action>,
    /// The naive guess per level, read from each input's pivots: `(offset, high)`.
    pub naive: Vec<[Option<(f32, bool)>; LEVELS]>,
    /// The DQN's market features per row ([`market_features`]), `market_dim` wide.
    pub market: Vec<f32>,
    /// Width of a market-feature row.
    pub market_dim: usize,
    /// The candles' interval, ms: one bar of the targets.
    pub interval_ms: i64,
}

impl CnnDataset {
    /// Replays `candles` (and optional 1 s `reference` candles) and builds one row per base
    /// candle once the target timeframe has `warmup` candles.
    pub fn build(
        symbol: &str,
        candles: &[Candle],
        reference: &[Candle],
        cfg: &DatasetConfig,
    ) -> Result<Self, DatasetError> {
        let tf = cfg.timeframe;
        let tfi = timeframe_index(tf);
        let market_dim = market_width(MARKET_RECENT);
        let mut ds = Self {
            rows: ModelRows::new(InputShape::encoded(cfg.window)),
            timeframe: tf,
            t_ms: Vec::new(),
            anchors: Vec::new(),
            targets: Vec::new(),
            target_known_ms: Vec::new(),
            actions: Vec::new(),
            naive: Vec::new(),
            market: Vec::new(),
            market_dim,
            interval_ms: cfg.scale.map_or(cfg.base.millis(), |s| s.interval_ms),
        };
        let mut failed = None;
        let replay =
            |visit: &mut dyn FnMut(&crate::analysis::input::BaseDataInput)| match &cfg.scale {
                Some(scale) => replay_scaled(symbol, candles, scale, reference, &cfg.input, visit),
                None => replay_history(symbol, candles, cfg.base, reference, &cfg.input, visit),
            };
        let series = replay(&mut |input| {
            if failed.is_some() || input.ohlcv[tfi].len() < cfg.warmup.max(1) {
                return;
            }
            let Some(anchor) = Anchor::of(input, tf) else {
                return;
            };
            let enc = encode(input);
            if let Err(e) = ds.rows.push(&enc) {
                failed = Some(e);
                return;
            }
            let view = PivotView::read(&enc, tf);
            ds.naive.push(std::array::from_fn(|l| view.naive(l)));
            ds.market.extend(market_features(&enc, tf, MARKET_RECENT));
            ds.t_ms.push(input.timestamp_ms);
            ds.anchors.push(anchor);
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let all = batch_pivots(&series[tfi], PivotConfig::for_timeframe(tf));
        for a in &ds.anchors {
            let mut known = [i64::MAX; LEVELS];
            let tg: [Option<PivotTarget>; LEVELS] = std::array::from_fn(|l| {
                // Pivots of a level come in candle order, so the first one after the newest
                // candle is found by a binary search on time.
                let ps = &all[l];
                let p = ps.get(ps.partition_point(|p| p.time_ms <= a.last_open_ms))?;
                known[l] = p.known_ms;
                a.target(p)
            });
            ds.actions.push(action_label(&tg, a, cfg.hold_threshold));
            ds.targets.push(tg);
            ds.target_known_ms.push(known);
        }
        // Targets were found in the replay's time; every time the dataset keeps is real.
        if let Some(scale) = cfg.scale.filter(|s| !s.is_identity()) {
            let real = |v: i64| if v == i64::MAX { v } else { scale.to_real(v) };
            for t in &mut ds.t_ms {
                *t = real(*t);
            }
            for k in &mut ds.target_known_ms {
                *k = k.map(real);
            }
            for a in &mut ds.anchors {
                a.last_open_ms = real(a.last_open_ms);
                a.interval_ms = scale.interval_ms;
            }
        }
        Ok(ds)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Time split: training rows first, then validation rows; never shuffled across.
    pub fn split(&self, val_fraction: f64) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let n = self.len();
        let val = ((n as f64) * val_fraction.clamp(0.0, 0.9)).round() as usize;
        (0..n - val, n - val..n)
    }

    fn tensors(&self, rows: &[usize], cutoff_ms: i64, device: Device) -> Targets {
        let n = rows.len() as i64;
        let mut price = Vec::with_capacity(rows.len() * LEVELS);
        let mut time = Vec::with_capacity(rows.len() * LEVELS);
        let mut high = Vec::with_capacity(rows.len() * LEVELS);
        let mut mask = Vec::with_capacity(rows.len() * LEVELS);
        let mut action = Vec::with_capacity(rows.len());
        for &r in rows {
            for l in 0..LEVELS {
                // A target pivot known only after the cutoff is unknown to this split.
                match self.targets[r][l].filter(|_| self.target_known_ms[r][l] <= cutoff_ms) {
                    Some(t) => {
                        price.push(t.price_offset);
                        time.push(t.time_offset);
                        high.push(if t.high { 1.0f32 } else { 0.0 });
                        mask.push(1.0f32);
                    }
                    None => {
                        price.push(0.0);
                        time.push(0.0);
                        high.push(0.0);
                        mask.push(0.0);
                    }
                }
            }
            action.push(self.actions[r].index() as i64);
        }
        let t = |v: &[f32]| {
            Tensor::from_slice(v)
                .view([n, LEVELS as i64])
                .to_device(device)
        };
        Targets {
            price: t(&price),
            time: t(&time),
            high: t(&high),
            mask: t(&mask),
            action: Tensor::from_slice(&action).to_device(device),
        }
    }

    fn input_rows(&self, rows: &[usize], device: Device) -> super::input::ModelInput {
        let mut sub = ModelRows::new(self.rows.shape);
        for &r in rows {
            let (s, c) = self.rows.row(r);
            sub.push_row(s, c);
        }
        sub.all(device)
    }
}

/// BUY when the next level-1 pivot is a high clearly above the close (more than
/// `hold_threshold` percent), SELL for a low clearly below, else HOLD.
pub fn action_label(
    targets: &[Option<PivotTarget>; LEVELS],
    anchor: &Anchor,
    hold_threshold: f64,
) -> Action {
    match targets[0] {
        Some(t) if t.high && anchor.percent(f64::from(t.price_offset)) > hold_threshold => {
            Action::Buy
        }
        Some(t) if !t.high && anchor.percent(f64::from(t.price_offset)) < -hold_threshold => {
            Action::Sell
        }
        _ => Action::Hold,
    }
}

struct Targets {
    price: Tensor,
    time: Tensor,
    high: Tensor,
    mask: Tensor,
    action: Tensor,
}

fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    (x * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

/// The pivot heads' loss (price, time, high/low), the same quantity the online trainer
/// minimizes, so offline and online checkpoints rank on one scale.
fn pivot_loss(out: &CnnOutput, tg: &Targets) -> Tensor {
    let price = out.pivots.select(2, 0);
    let time = out.pivots.select(2, 1);
    let logit = out.pivots.select(2, 2);
    let lp = masked_mean(
        &price.smooth_l1_loss(&tg.price, Reduction::None, 1.0),
        &tg.mask,
    );
    let lt = masked_mean(
        &time.smooth_l1_loss(&tg.time, Reduction::None, 1.0),
        &tg.mask,
    );
    let lk = masked_mean(
        &logit.binary_cross_entropy_with_logits::<Tensor>(&tg.high, None, None, Reduction::None),
        &tg.mask,
    );
    lp + lt + lk
}

fn loss(out: &CnnOutput, tg: &Targets) -> Tensor {
    let logit = out.pivots.select(2, 2);
    let la = out.action_logits.cross_entropy_for_logits(&tg.action);
    // Confidence learns whether the level-1 direction call is right.
    let right = logit
        .select(1, 0)
        .ge(0.0)
        .to_kind(Kind::Float)
        .eq_tensor(&tg.high.select(1, 0))
        .to_kind(Kind::Float)
        .detach();
    let lc = masked_mean(
        &out.confidence
            .clamp(1e-6, 1.0 - 1e-6)
            .binary_cross_entropy::<Tensor>(&right, None, Reduction::None),
        &tg.mask.select(1, 0),
    );
    pivot_loss(out, tg) + la * 0.5 + lc * 0.2
}

/// Validation metrics of one pivot level.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LevelMetrics {
    /// Rows with a target at this level.
    pub samples: usize,
    /// Share of rows whose high/low call is right.
    pub direction_accuracy: f64,
    /// Mean absolute pivot price error, basis points of the close.
    pub price_error_bp: f64,
    /// Mean absolute error of the bars until the pivot.
    pub time_error_bars: f64,
}

/// Metrics over a set of rows.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CnnMetrics {
    /// Training loss on these rows.
    pub loss: f64,
    /// The pivot heads' part of the loss (what checkpoints are ranked by).
    pub pivot_loss: f64,
    /// Per level, level 1 first.
    pub levels: [LevelMetrics; LEVELS],
    /// Share of rows whose action matches the label.
    pub action_accuracy: f64,
}

/// Progress of a training run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainProgress {
    /// `cnn` or `dqn`.
    pub phase: &'static str,
    /// Current unit (epoch or episode), 1-based.
    pub step: usize,
    /// Planned units.
    pub total: usize,
    /// Training loss (or episode return).
    pub train: f64,
    /// Validation metric of this unit, if measured.
    pub validation: Option<f64>,
}

/// What a CNN training run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CnnTrainReport {
    /// Epochs run (early stopping may cut them).
    pub epochs_run: usize,
    /// Epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Validation metrics of the kept weights.
    pub validation: CnnMetrics,
    /// Rows used for training and validation.
    pub rows: (usize, usize),
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Not enough rows for a split.
    #[error("only {0} usable rows; need at least 20 for a train/validation split")]
    TooFewRows(usize),
    /// libtorch refused.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Trains `model` on `ds` with a time split and early stopping; keeps the best weights.
pub fn train_cnn(
    model: &mut CnnModel,
    ds: &CnnDataset,
    cfg: &CnnTrainConfig,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<CnnTrainReport, TrainError> {
    let (train, val) = ds.split(cfg.val_fraction);
    if train.len() < 10 || val.len() < 10 {
        return Err(TrainError::TooFewRows(ds.len()));
    }
    let device = model.vs.device();
    // Training labels may not have become known after validation starts.
    let cutoff = ds.t_ms[val.start];
    let mut opt = nn::Adam::default().build(&model.vs, cfg.lr)?;
    let mut best = CnnModel::new(model.net.config(), device);
    best.copy_weights_from(&model.vs)?;
    let mut best_loss = f64::INFINITY;
    let mut best_epoch = 0;
    let mut since_best = 0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = train.clone().collect();
    let all_input = ds.rows.all(device);
    let val_rows: Vec<usize> = val.clone().collect();
    let mut epochs_run = 0;
    for epoch in 1..=cfg.epochs {
        epochs_run = epoch;
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(cfg.batch.max(1)) {
            let idx = Tensor::from_slice(&chunk.iter().map(|&r| r as i64).collect::<Vec<_>>())
                .to_device(device);
            let x = all_input.select(&idx);
            let tg = ds.tensors(chunk, cutoff, device);
            let l = loss(&model.net.forward_t(&x, true), &tg);
            opt.backward_step_clip_norm(&l, 5.0);
            sum += l.double_value(&[]);
            batches += 1;
        }
        let val_loss = evaluate(model, ds, &val_rows, i64::MAX).loss;
        progress(&TrainProgress {
            phase: "cnn",
            step: epoch,
            total: cfg.epochs,
            train: sum / batches.max(1) as f64,
            validation: Some(val_loss),
        });
        if val_loss < best_loss {
            best_loss = val_loss;
            best_epoch = epoch;
            since_best = 0;
            best.copy_weights_from(&model.vs)?;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    model.copy_weights_from(&best.vs)?;
    Ok(CnnTrainReport {
        epochs_run,
        best_epoch,
        validation: evaluate(model, ds, &val_rows, i64::MAX),
        rows: (train.len(), val.len()),
    })
}

/// Metrics of `model` on `rows`; targets known after `cutoff_ms` are ignored.
pub fn evaluate(model: &CnnModel, ds: &CnnDataset, rows: &[usize], cutoff_ms: i64) -> CnnMetrics {
    let cutoff = cutoff_ms;
    let device = model.vs.device();
    let mut preds = Vec::with_capacity(rows.len() * LEVELS * PIVOT_OUTPUTS);
    let mut act = Vec::with_capacity(rows.len());
    let mut loss_sum = 0.0;
    let mut pivot_sum = 0.0;
    for chunk in rows.chunks(512) {
        let x = ds.input_rows(chunk, device);
        let out = model.infer(&x);
        let tg = ds.tensors(chunk, cutoff, device);
        loss_sum += loss(&out, &tg).double_value(&[]) * chunk.len() as f64;
        pivot_sum += pivot_loss(&out, &tg).double_value(&[]) * chunk.len() as f64;
        preds.extend(super::cnn::flat_f64(&out.pivots));
        act.extend(super::cnn::flat_f64(&out.action_logits));
    }
    let pivot = |i: usize, l: usize| {
        let o = (i * LEVELS + l) * PIVOT_OUTPUTS;
        (preds[o], preds[o + 1], preds[o + 2] >= 0.0)
    };
    let mut m = score(ds, rows, cutoff, pivot);
    m.loss = loss_sum / rows.len().max(1) as f64;
    m.pivot_loss = pivot_sum / rows.len().max(1) as f64;
    let right = rows
        .iter()
        .enumerate()
        .filter(|&(i, &r)| {
            let a = &act[i * 3..i * 3 + 3];
            let best = (0..3).fold(0, |b, j| if a[j] > a[b] { j } else { b });
            best == ds.actions[r].index()
        })
        .count();
    m.action_accuracy = right as f64 / rows.len().max(1) as f64;
    m
}

/// Per-level metrics of any predictor on `rows`: `pred(i, level)` answers `(price offset, time
/// offset, high)` for `rows[i]` in model units; targets known after `cutoff_ms` are ignored.
/// The model, the naive guess and every baseline are scored by this one function.
pub fn score(
    ds: &CnnDataset,
    rows: &[usize],
    cutoff_ms: i64,
    pred: impl Fn(usize, usize) -> (f64, f64, bool),
) -> CnnMetrics {
    let mut m = CnnMetrics::default();
    for l in 0..LEVELS {
        let mut lm = LevelMetrics::default();
        for (i, &r) in rows.iter().enumerate() {
            let Some(t) = ds.targets[r][l].filter(|_| ds.target_known_ms[r][l] <= cutoff_ms) else {
                continue;
            };
            let (p, tt, high) = pred(i, l);
            lm.samples += 1;
            lm.direction_accuracy += f64::from(u8::from(high == t.high));
            lm.price_error_bp += ds.anchors[r].bp(p - f64::from(t.price_offset));
            lm.time_error_bars +=
                (PivotTarget::bars_f64(tt) - PivotTarget::bars(t.time_offset)).abs();
        }
        if lm.samples > 0 {
            let n = lm.samples as f64;
            lm.direction_accuracy /= n;
            lm.price_error_bp /= n;
            lm.time_error_bars /= n;
        }
        m.levels[l] = lm;
    }
    m
}

/// The naive pivot baseline on `rows`: the next pivot is the opposite of the latest known one
/// at its level, at the price of the last known pivot of that kind, `typical_time` ahead
/// (log bars, e.g. the training median). It reads only the input's pivots section.
pub fn naive_baseline(ds: &CnnDataset, rows: &[usize], typical_time: [f64; LEVELS]) -> CnnMetrics {
    let pred = |i: usize, l: usize| match ds.naive[rows[i]][l] {
        Some((offset, high)) => (f64::from(offset), typical_time[l], high),
        // Nothing known at this level yet: no move, a low by convention.
        None => (0.0, typical_time[l], false),
    };
    score(ds, rows, i64::MAX, pred)
}

/// Median target time offset per level over `rows` (for the naive baseline).
pub fn median_time(ds: &CnnDataset, rows: &[usize]) -> [f64; LEVELS] {
    std::array::from_fn(|l| {
        let mut v: Vec<f32> = rows
            .iter()
            .filter_map(|&r| ds.targets[r][l].map(|t| t.time_offset))
            .collect();
        v.sort_by(f32::total_cmp);
        v.get(v.len() / 2).map_or(0.0, |&x| f64::from(x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty};

    pub(crate) fn candles(n: usize, seed: u64) -> Vec<Candle> {
        use rand::RngExt;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        (0..n)
            .map(|i| {
                let base = 100.0 * (0.02 * (i as f64 / 8.0).sin()).exp();
                let c = base * (1.0 + 0.002 * (rng.random::<f64>() - 0.5));
                let p = Price::from_f64_round;
                Candle {
                    open_time_ms: start + i as i64 * 60_000,
                    open: p(base),
                    high: p(base.max(c) * 1.001),
                    low: p(base.min(c) * 0.999),
                    close: p(c),
                    volume: Qty::from_f64_round(1.0 + rng.random::<f64>()),
                    trades: 1,
                }
            })
            .collect()
    }

    fn cfg() -> DatasetConfig {
        DatasetConfig::new(Timeframe::M1, 16)
    }

    #[test]
    fn changing_candles_after_t_plus_horizon_leaves_earlier_samples_unchanged() {
        let a = candles(400, 1);
        let (t, h) = (250usize, 10usize);
        let mut z = a.clone();
        for c in z.iter_mut().skip(t + h) {
            c.close = Price::from_f64_round(c.close.to_f64() * 1.05);
            c.high = Price::from_f64_round(c.high.to_f64() * 1.06);
            c.low = Price::from_f64_round(c.low.to_f64() * 0.9);
            c.open = Price::from_f64_round(c.open.to_f64() * 0.95);
        }
        let da = CnnDataset::build("ETHUSDT", &a, &[], &cfg()).unwrap();
        let dz = CnnDataset::build("ETHUSDT", &z, &[], &cfg()).unwrap();
        assert_eq!(da.t_ms, dz.t_ms);
        // Candle t closes at t_close; every sample at or before it saw only candles ..= t.
        let t_close = a[t].open_time_ms + 60_000;
        let mut compared = 0;
        for row in 0..da.len() {
            if da.t_ms[row] > t_close {
                break;
            }
            assert_eq!(da.rows.row(row), dz.rows.row(row), "row {row}");
            assert_eq!(da.anchors[row], dz.anchors[row]);
            assert_eq!(da.naive[row], dz.naive[row]);
            assert_eq!(
                da.market[row * da.market_dim..(row + 1) * da.market_dim],
                dz.market[row * dz.market_dim..(row + 1) * dz.market_dim]
            );
            compared += 1;
        }
        assert!(compared > 200, "{compared}");
        // The change is visible after t + h, so the comparison above is not vacuous.
        let later = da
            .t_ms
            .iter()
            .position(|&x| x == a[t + h + 5].open_time_ms + 60_000)
            .unwrap();
        assert_ne!(da.rows.row(later), dz.rows.row(later));
    }

    #[test]
    fn targets_are_the_next_pivots_after_the_newest_candle() {
        let cs = candles(300, 4);
        let ds = CnnDataset::build("ETHUSDT", &cs, &[], &cfg()).unwrap();
        let all = batch_pivots(&cs, PivotConfig::for_timeframe(Timeframe::M1));
        let mut checked = 0;
        for r in 0..ds.len() {
            let a = ds.anchors[r];
            assert_eq!(a.last_open_ms + 60_000, ds.t_ms[r]);
            let Some(t) = ds.targets[r][0] else { continue };
            let p = all[0].iter().find(|p| p.time_ms > a.last_open_ms).unwrap();
            let bars = (p.time_ms - a.last_open_ms) / 60_000;
            assert_eq!(PivotTarget::bars(t.time_offset).round() as i64, bars);
            assert_eq!(t.high, p.kind == crate::analysis::pivots::PivotKind::High);
            assert_eq!(ds.target_known_ms[r][0], p.known_ms);
            let price = a.price(f64::from(t.price_offset));
            assert!((price - p.price.to_f64()).abs() < 1e-4 * p.price.to_f64());
            checked += 1;
        }
        assert!(checked > 100);
        assert!(ds.actions.contains(&Action::Buy));
        assert!(ds.actions.contains(&Action::Sell));
    }

    #[test]
    fn five_minute_samples_keep_real_times_and_their_targets_are_the_real_pivots() {
        let m5 = 300_000;
        let cs: Vec<Candle> = candles(400, 4)
            .into_iter()
            .enumerate()
            .map(|(i, c)| Candle {
                open_time_ms: 1_614_556_800_000 + i as i64 * m5,
                ..c
            })
            .collect();
        let scale = TimeScale::new(m5, cs[0].open_time_ms).unwrap();
        let ds = CnnDataset::build("ETHUSDT", &cs, &[], &DatasetConfig::scaled(scale, 16)).unwrap();
        assert_eq!(ds.interval_ms, m5);
        // The pivots of the 5 m candles themselves, on real times.
        let cfg = PivotConfig {
            interval_ms: m5,
            ..PivotConfig::for_timeframe(Timeframe::M1)
        };
        let all = batch_pivots(&cs, cfg);
        let mut checked = 0;
        for r in 0..ds.len() {
            let a = ds.anchors[r];
            assert_eq!(
                ds.t_ms[r],
                a.last_open_ms + m5,
                "real close of the newest candle"
            );
            assert_eq!(a.interval_ms, m5);
            let Some(t) = ds.targets[r][0] else { continue };
            let p = all[0].iter().find(|p| p.time_ms > a.last_open_ms).unwrap();
            let bars = (p.time_ms - a.last_open_ms) / m5;
            assert_eq!(PivotTarget::bars(t.time_offset).round() as i64, bars);
            assert_eq!(t.high, p.kind == crate::analysis::pivots::PivotKind::High);
            assert_eq!(ds.target_known_ms[r][0], p.known_ms);
            checked += 1;
        }
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn split_is_by_time_and_labels_are_masked_at_the_cutoff() {
        let ds = CnnDataset::build("ETHUSDT", &candles(300, 2), &[], &cfg()).unwrap();
        let (train, val) = ds.split(0.25);
        assert_eq!(train.end, val.start);
        assert_eq!(val.end, ds.len());
        let cutoff = ds.t_ms[val.start];
        let rows: Vec<usize> = train.collect();
        let tg = ds.tensors(&rows, cutoff, Device::Cpu);
        let mask = super::super::cnn::flat_f64(&tg.mask);
        let mut hidden = 0;
        for (i, &r) in rows.iter().enumerate() {
            for l in 0..LEVELS {
                let visible = mask[i * LEVELS + l] > 0.0;
                let known = ds.target_known_ms[r][l] <= cutoff;
                assert_eq!(visible, ds.targets[r][l].is_some() && known);
                hidden += usize::from(ds.targets[r][l].is_some() && !known);
            }
        }
        assert!(
            hidden > 0,
            "some training labels were known only after the cutoff"
        );
    }

    /// Samples of `n` generated candles (seed `seed`) and a fresh small CNN for them.
    fn dataset_and_model(n: usize, seed: u64) -> (CnnDataset, CnnModel) {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let ds = CnnDataset::build("ETHUSDT", &candles(n, seed), &[], &cfg()).unwrap();
        let m = CnnModel::new(
            super::super::cnn::CnnConfig::small(ds.rows.shape),
            Device::Cpu,
        );
        (ds, m)
    }

    #[test]
    fn a_few_epochs_reduce_the_loss_and_report_progress() {
        let (ds, mut m) = dataset_and_model(500, 3);
        let (_, val) = ds.split(0.2);
        let rows: Vec<usize> = val.collect();
        let before = evaluate(&m, &ds, &rows, i64::MAX).loss;
        let mut seen = Vec::new();
        let cfg = CnnTrainConfig {
            epochs: 4,
            patience: 10,
            ..Default::default()
        };
        let report = train_cnn(&mut m, &ds, &cfg, &mut |p| seen.push(p.step)).unwrap();
        assert_eq!(seen, vec![1, 2, 3, 4]);
        assert!(
            report.validation.loss < before,
            "{} !< {before}",
            report.validation.loss
        );
        assert!(report.validation.levels[0].samples > 0);
    }

    #[test]
    fn early_stopping_ends_after_patience_epochs_without_improvement() {
        let (ds, mut m) = dataset_and_model(300, 5);
        let weights = |m: &CnnModel| {
            let mut v: Vec<(String, Vec<f64>)> =
                m.vs.variables()
                    .iter()
                    .map(|(k, t)| (k.clone(), crate::models::cnn::flat_f64(t)))
                    .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let start = weights(&m);
        // With a zero learning rate the validation loss never improves after epoch 1, so
        // training stops once `patience` further epochs have passed.
        let cfg = CnnTrainConfig {
            epochs: 10,
            patience: 2,
            lr: 0.0,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let report = train_cnn(&mut m, &ds, &cfg, &mut |p| seen.push(p.step)).unwrap();
        assert_eq!(report.epochs_run, 3);
        assert_eq!(report.best_epoch, 1);
        assert_eq!(seen, vec![1, 2, 3]);
        assert_eq!(start, weights(&m), "the kept weights are the starting ones");
    }
}
