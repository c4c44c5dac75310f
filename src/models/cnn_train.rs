//! Supervised training of the pivot CNN on historical candles.
//!
//! Ground truth at row t is the next pivot of each level whose candle lies after t
//! ([`next_pivot_targets`] over `batch_pivots`); inputs come from [`FeatureBuilder`], which
//! only reads candles up to t. The validation split is by time, and training targets whose
//! pivot lies inside the validation span are masked so no training label peeks into it.

use super::cnn::{Action, CnnModel, CnnOutput, PIVOT_OUTPUTS};
use super::features::{FeatureBuilder, FeatureError, FeatureSet, PivotTarget, next_pivot_targets};
use crate::analysis::pivots::{LEVELS, batch_pivots};
use crate::market::types::Candle;
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
    /// Expected move (price-offset units, 1.0 = 1 %) below which the action label is HOLD.
    pub hold_threshold: f32,
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
            hold_threshold: 0.1,
        }
    }
}

/// Inputs with their targets.
#[derive(Debug, Clone)]
pub struct CnnDataset {
    /// Input rows.
    pub features: FeatureSet,
    /// Next pivot per level for each row (None: no pivot follows in the data).
    pub targets: Vec<[Option<PivotTarget>; LEVELS]>,
    /// Candle index of each target pivot (for masking across the split).
    pub target_index: Vec<[usize; LEVELS]>,
    /// Action label per row.
    pub actions: Vec<Action>,
}

impl CnnDataset {
    /// Builds inputs and targets from candles.
    pub fn build(
        candles: &[Candle],
        builder: &FeatureBuilder,
        hold_threshold: f32,
    ) -> Result<Self, FeatureError> {
        let features = builder.build(candles)?;
        let all = batch_pivots(candles, builder.pivots);
        let mut targets = Vec::with_capacity(features.len());
        let mut target_index = Vec::with_capacity(features.len());
        let mut actions = Vec::with_capacity(features.len());
        for (row, &t) in features.index.iter().enumerate() {
            let tg = next_pivot_targets(&all, t, features.close[row]);
            let idx: [usize; LEVELS] = std::array::from_fn(|l| {
                let ps = &all[l];
                ps.get(ps.partition_point(|p| p.index <= t))
                    .map_or(usize::MAX, |p| p.index)
            });
            actions.push(action_label(&tg, hold_threshold));
            targets.push(tg);
            target_index.push(idx);
        }
        Ok(Self {
            features,
            targets,
            target_index,
            actions,
        })
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

    fn tensors(&self, rows: &[usize], cutoff: usize, device: Device) -> Targets {
        let n = rows.len() as i64;
        let mut price = Vec::with_capacity(rows.len() * LEVELS);
        let mut time = Vec::with_capacity(rows.len() * LEVELS);
        let mut high = Vec::with_capacity(rows.len() * LEVELS);
        let mut mask = Vec::with_capacity(rows.len() * LEVELS);
        let mut action = Vec::with_capacity(rows.len());
        for &r in rows {
            for l in 0..LEVELS {
                // A target pivot at or beyond the cutoff candle is unknown to this split.
                match self.targets[r][l].filter(|_| self.target_index[r][l] < cutoff) {
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

    fn input_rows(&self, rows: &[usize], device: Device) -> super::features::ModelInput {
        let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>());
        self.features
            .input(0..self.len(), Device::Cpu)
            .select(&idx)
            .to_device(device)
    }
}

/// BUY when the next level-1 pivot is a high clearly above the close, SELL for a low clearly
/// below, else HOLD.
pub fn action_label(targets: &[Option<PivotTarget>; LEVELS], hold_threshold: f32) -> Action {
    match targets[0] {
        Some(t) if t.high && t.price_offset > hold_threshold => Action::Buy,
        Some(t) if !t.high && t.price_offset < -hold_threshold => Action::Sell,
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

fn loss(out: &CnnOutput, tg: &Targets) -> Tensor {
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
    lp + lt + lk + la * 0.5 + lc * 0.2
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
    // Training labels may not reach into validation candles.
    let cutoff = ds.features.index[val.start] + 1 - ds.features.input.window;
    let mut opt = nn::Adam::default().build(&model.vs, cfg.lr)?;
    let mut best = CnnModel::new(model.net.config(), device);
    best.copy_weights_from(&model.vs)?;
    let mut best_loss = f64::INFINITY;
    let mut best_epoch = 0;
    let mut since_best = 0;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = train.clone().collect();
    let all_input = ds.features.input(0..ds.len(), device);
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
            let l = loss(&model.net.forward(&x), &tg);
            opt.backward_step_clip_norm(&l, 5.0);
            sum += l.double_value(&[]);
            batches += 1;
        }
        let val_loss = evaluate(model, ds, &val_rows, usize::MAX).loss;
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
        validation: evaluate(model, ds, &val_rows, usize::MAX),
        rows: (train.len(), val.len()),
    })
}

/// Metrics of `model` on `rows`; targets at candles `>= cutoff` are ignored.
pub fn evaluate(model: &CnnModel, ds: &CnnDataset, rows: &[usize], cutoff: usize) -> CnnMetrics {
    let device = model.vs.device();
    let mut preds = Vec::with_capacity(rows.len() * LEVELS * PIVOT_OUTPUTS);
    let mut act = Vec::with_capacity(rows.len());
    let mut loss_sum = 0.0;
    for chunk in rows.chunks(512) {
        let x = ds.input_rows(chunk, device);
        let out = model.infer(&x);
        loss_sum +=
            loss(&out, &ds.tensors(chunk, cutoff, device)).double_value(&[]) * chunk.len() as f64;
        preds.extend(super::cnn::flat_f64(&out.pivots));
        act.extend(super::cnn::flat_f64(&out.action_logits));
    }
    let pivot = |i: usize, l: usize| {
        let o = (i * LEVELS + l) * PIVOT_OUTPUTS;
        (preds[o], preds[o + 1], preds[o + 2] >= 0.0)
    };
    let mut m = score(ds, rows, cutoff, pivot);
    m.loss = loss_sum / rows.len().max(1) as f64;
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

fn score(
    ds: &CnnDataset,
    rows: &[usize],
    cutoff: usize,
    pred: impl Fn(usize, usize) -> (f64, f64, bool),
) -> CnnMetrics {
    let mut m = CnnMetrics::default();
    for l in 0..LEVELS {
        let mut lm = LevelMetrics::default();
        for (i, &r) in rows.iter().enumerate() {
            let Some(t) = ds.targets[r][l].filter(|_| ds.target_index[r][l] < cutoff) else {
                continue;
            };
            let (p, tt, high) = pred(i, l);
            lm.samples += 1;
            lm.direction_accuracy += f64::from(u8::from(high == t.high));
            // Offsets are 100 × log-ratios, so one unit is 100 bp.
            lm.price_error_bp += (p - f64::from(t.price_offset)).abs() * 100.0;
            lm.time_error_bars +=
                (tt.clamp(-5.0, 12.0).exp() - PivotTarget::bars(t.time_offset)).abs();
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
/// (log bars, e.g. the training median). It reads only the input's pivot context.
pub fn naive_baseline(ds: &CnnDataset, rows: &[usize], typical_time: [f64; LEVELS]) -> CnnMetrics {
    let f = ds.features.input.context;
    let pred = |i: usize, l: usize| {
        let c = &ds.features.context[rows[i] * f..(rows[i] + 1) * f];
        let (hi_off, hi_age, lo_off, lo_age) = (c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]);
        // The latest known pivot is the one with the smaller age; the next is the other kind.
        let next_high = lo_age < hi_age;
        let price = if next_high { hi_off } else { lo_off };
        (f64::from(price), typical_time[l], next_high)
    };
    score(ds, rows, usize::MAX, pred)
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
    use crate::analysis::pivots::PivotConfig;
    use crate::market::types::{Price, Qty, Timeframe};

    fn candles(n: usize, seed: u64) -> Vec<Candle> {
        use rand::RngExt;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let base = 100.0 * (0.02 * (i as f64 / 8.0).sin()).exp();
                let c = base * (1.0 + 0.002 * (rng.random::<f64>() - 0.5));
                let p = Price::from_f64_round;
                Candle {
                    open_time_ms: i as i64 * 60_000,
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

    #[test]
    fn changing_later_candles_does_not_change_earlier_inputs() {
        let b = FeatureBuilder::new(16, PivotConfig::for_timeframe(Timeframe::M1));
        let a = candles(400, 1);
        let (t, h) = (250usize, 10usize);
        let mut z = a.clone();
        for c in z.iter_mut().skip(t + h) {
            c.close = Price::from_f64_round(c.close.to_f64() * 1.05);
            c.high = Price::from_f64_round(c.high.to_f64() * 1.06);
            c.low = Price::from_f64_round(c.low.to_f64() * 0.9);
        }
        let da = CnnDataset::build(&a, &b, 0.1).unwrap();
        let dz = CnnDataset::build(&z, &b, 0.1).unwrap();
        let (cs, f) = (5 * 16, 20);
        for (row, &ti) in da.features.index.iter().enumerate() {
            if ti > t {
                break;
            }
            assert_eq!(
                da.features.series[row * cs..(row + 1) * cs],
                dz.features.series[row * cs..(row + 1) * cs]
            );
            assert_eq!(
                da.features.context[row * f..(row + 1) * f],
                dz.features.context[row * f..(row + 1) * f]
            );
            // A level-1 target whose pivot was confirmed before the change is the same too.
            if da.target_index[row][0] + 2 < t + h {
                assert_eq!(da.targets[row][0], dz.targets[row][0]);
            }
        }
        // The change is visible after t + h, so the comparison above is not vacuous.
        let row = da
            .features
            .index
            .iter()
            .position(|&i| i == t + h + 5)
            .unwrap();
        assert_ne!(
            da.features.series[row * cs..(row + 1) * cs],
            dz.features.series[row * cs..(row + 1) * cs]
        );
    }

    #[test]
    fn split_is_by_time_and_labels_are_masked_at_the_cutoff() {
        let b = FeatureBuilder::new(16, PivotConfig::for_timeframe(Timeframe::M1));
        let ds = CnnDataset::build(&candles(300, 2), &b, 0.1).unwrap();
        let (train, val) = ds.split(0.25);
        assert_eq!(train.end, val.start);
        assert_eq!(val.end, ds.len());
        let cutoff = ds.features.index[val.start] + 1 - 16;
        let rows: Vec<usize> = train.collect();
        let tg = ds.tensors(&rows, cutoff, Device::Cpu);
        let mask = super::super::cnn::flat_f64(&tg.mask);
        for (i, &r) in rows.iter().enumerate() {
            for l in 0..LEVELS {
                let visible = mask[i * LEVELS + l] > 0.0;
                assert_eq!(
                    visible,
                    ds.targets[r][l].is_some() && ds.target_index[r][l] < cutoff
                );
            }
        }
    }

    #[test]
    fn a_few_epochs_reduce_the_loss_and_report_progress() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let b = FeatureBuilder::new(16, PivotConfig::for_timeframe(Timeframe::M1));
        let ds = CnnDataset::build(&candles(600, 3), &b, 0.1).unwrap();
        let mut m = CnnModel::new(super::super::cnn::CnnConfig::small(b.input), Device::Cpu);
        let (_, val) = ds.split(0.2);
        let rows: Vec<usize> = val.collect();
        let before = evaluate(&m, &ds, &rows, usize::MAX).loss;
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
}
