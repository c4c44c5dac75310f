//! Online learning: a newly confirmed pivot becomes training examples for the recent inputs
//! whose target it is, a trainer thread takes small steps on them, and fresh weights are
//! handed to inference by copying the VarStore (inference never waits on training).
//!
//! Inputs are kept as model rows of the encoded `BaseDataInput` ([`ModelRows::push`]), with
//! the anchor that turns a later pivot into a target ([`Anchor::target`]), so online examples
//! are exactly what offline training would have built for the same input.

use super::cnn::CnnModel;
use super::input::{Anchor, ModelInput, ModelRows, PivotTarget, timeframe_index};
use crate::analysis::encoding::EncodedInput;
use crate::analysis::input::BaseDataInput;
use crate::analysis::pivots::{LEVELS, PivotPoint};
use crate::market::types::Timeframe;
use std::collections::VecDeque;
use tch::nn;
use tch::{Kind, Reduction, Tensor};

/// One input kept for later labelling.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentInput {
    /// Input time.
    pub t_ms: i64,
    /// The CNN's series floats (`C * T`).
    pub series: Vec<f32>,
    /// The CNN's context floats (`F`).
    pub context: Vec<f32>,
    /// Where the input's predictions are anchored.
    pub anchor: Anchor,
}

/// A labelled example for one level.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineExample {
    /// The input.
    pub input: RecentInput,
    /// Level 1..=5.
    pub level: u8,
    /// What the model should have predicted.
    pub target: PivotTarget,
}

/// Bounded history of recent inputs of one symbol plus the newest pivot seen per level.
#[derive(Debug, Clone)]
pub struct InputHistory {
    rows: VecDeque<RecentInput>,
    capacity: usize,
    timeframe: Timeframe,
    last_pivot: [Option<i64>; LEVELS],
}

impl InputHistory {
    /// Keeps up to `capacity` inputs labelled by pivots of `timeframe`.
    pub fn new(capacity: usize, timeframe: Timeframe) -> Self {
        Self {
            rows: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            timeframe,
            last_pivot: [None; LEVELS],
        }
    }

    /// Inputs held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Appends an input (newest candles must advance; older or equal ones are ignored).
    pub fn push(&mut self, row: RecentInput) {
        if self
            .rows
            .back()
            .is_some_and(|b| b.anchor.last_open_ms >= row.anchor.last_open_ms)
        {
            return;
        }
        if self.rows.len() == self.capacity {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
    }

    /// Keeps the model rows of an encoded input (shape `rows.shape`); false when the input has
    /// no candles of the timeframe or does not fit the shape.
    pub fn push_encoded(
        &mut self,
        input: &BaseDataInput,
        enc: &EncodedInput,
        shape: super::input::InputShape,
    ) -> bool {
        let Some(anchor) = Anchor::of(input, self.timeframe) else {
            return false;
        };
        let mut rows = ModelRows::new(shape);
        if rows.push(enc).is_err() {
            return false;
        }
        self.push(RecentInput {
            t_ms: input.timestamp_ms,
            series: rows.series,
            context: rows.context,
            anchor,
        });
        true
    }

    /// Examples for every pivot of the timeframe that `input` knows and this history had not
    /// seen yet, oldest first.
    pub fn observe(&mut self, input: &BaseDataInput) -> Vec<OnlineExample> {
        let pivots = &input.pivots[timeframe_index(self.timeframe)];
        let mut fresh: Vec<PivotPoint> = pivots
            .levels
            .iter()
            .enumerate()
            .flat_map(|(l, ps)| {
                let last = self.last_pivot[l];
                ps.iter()
                    .filter(move |p| last.is_none_or(|t| p.time_ms > t))
                    .copied()
            })
            .collect();
        fresh.sort_by_key(|p| (p.time_ms, p.level));
        fresh.iter().flat_map(|p| self.examples_for(p)).collect()
    }

    /// Examples for a newly confirmed pivot: every held input whose newest candle opened at or
    /// after the previous pivot of the same level and before this one has it as its next
    /// pivot.
    pub fn examples_for(&mut self, pivot: &PivotPoint) -> Vec<OnlineExample> {
        let l = usize::from(pivot.level.clamp(1, LEVELS as u8)) - 1;
        let from = self.last_pivot[l].unwrap_or(i64::MIN);
        if self.last_pivot[l].is_some_and(|p| p >= pivot.time_ms) {
            return Vec::new();
        }
        self.last_pivot[l] = Some(pivot.time_ms);
        self.rows
            .iter()
            .filter(|r| r.anchor.last_open_ms >= from && r.anchor.last_open_ms < pivot.time_ms)
            .filter_map(|r| {
                Some(OnlineExample {
                    input: r.clone(),
                    level: l as u8 + 1,
                    target: r.anchor.target(pivot)?,
                })
            })
            .collect()
    }
}

/// One small gradient step on online examples (only the levels they label); returns the loss.
pub fn online_step(
    model: &CnnModel,
    opt: &mut nn::Optimizer,
    examples: &[OnlineExample],
) -> Option<f64> {
    examples.first()?;
    let cfg = model.net.config().input;
    let device = model.vs.device();
    // Rows of another shape (another window or layout) cannot train this model.
    let examples: Vec<&OnlineExample> = examples
        .iter()
        .filter(|e| {
            e.input.series.len() == cfg.channels * cfg.window
                && e.input.context.len() == cfg.context
        })
        .collect();
    if examples.is_empty() {
        return None;
    }
    let n = examples.len() as i64;
    let series: Vec<f32> = examples
        .iter()
        .flat_map(|e| e.input.series.clone())
        .collect();
    let context: Vec<f32> = examples
        .iter()
        .flat_map(|e| e.input.context.clone())
        .collect();
    let x = ModelInput {
        series: Tensor::from_slice(&series)
            .view([n, cfg.channels as i64, cfg.window as i64])
            .to_device(device),
        context: Tensor::from_slice(&context)
            .view([n, cfg.context as i64])
            .to_device(device),
    };
    let mut mask = vec![0.0f32; examples.len() * LEVELS];
    let mut price = vec![0.0f32; examples.len() * LEVELS];
    let mut time = vec![0.0f32; examples.len() * LEVELS];
    let mut high = vec![0.0f32; examples.len() * LEVELS];
    for (i, e) in examples.iter().enumerate() {
        let o = i * LEVELS + usize::from(e.level) - 1;
        mask[o] = 1.0;
        price[o] = e.target.price_offset;
        time[o] = e.target.time_offset;
        high[o] = if e.target.high { 1.0 } else { 0.0 };
    }
    let t = |v: &[f32]| {
        Tensor::from_slice(v)
            .view([n, LEVELS as i64])
            .to_device(device)
    };
    let (mask, price, time, high) = (t(&mask), t(&price), t(&time), t(&high));
    let out = model.net.forward_t(&x, true);
    let per = out
        .pivots
        .select(2, 0)
        .smooth_l1_loss(&price, Reduction::None, 1.0)
        + out
            .pivots
            .select(2, 1)
            .smooth_l1_loss(&time, Reduction::None, 1.0)
        + out
            .pivots
            .select(2, 2)
            .binary_cross_entropy_with_logits::<Tensor>(&high, None, None, Reduction::None);
    let loss = (per * &mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0);
    opt.backward_step_clip_norm(&loss, 5.0);
    Some(loss.double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::encoding::encode;
    use crate::analysis::input::InputConfig;
    use crate::models::cnn::CnnConfig;
    use crate::models::input::InputShape;
    use crate::models::samples::replay_history;
    use tch::Device;
    use tch::nn::OptimizerConfig;

    #[test]
    fn confirmed_pivot_labels_the_inputs_since_the_previous_one() {
        let cs = crate::models::samples::tests::wave(200, Timeframe::M1, 1_699_999_200_000);
        let shape = InputShape::encoded(8);
        let mut hist = InputHistory::new(1000, Timeframe::M1);
        let mut labelled: Vec<OnlineExample> = Vec::new();
        let mut t_last = 0;
        replay_history(
            "ETHUSDT",
            &cs,
            Timeframe::M1,
            &[],
            &InputConfig::default(),
            |input| {
                labelled.extend(hist.observe(input).into_iter().filter(|e| e.level == 1));
                assert!(hist.push_encoded(input, &encode(input), shape));
                t_last = input.timestamp_ms;
            },
        )
        .unwrap();
        let all = crate::analysis::pivots::batch_pivots(
            &cs,
            crate::analysis::pivots::PivotConfig::for_timeframe(Timeframe::M1),
        );
        for e in &labelled {
            // The target is the first level-1 pivot after the input's newest candle.
            let a = e.input.anchor;
            let p = all[0].iter().find(|p| p.time_ms > a.last_open_ms).unwrap();
            assert_eq!(e.target, a.target(p).unwrap());
            assert!(e.input.t_ms <= p.known_ms);
        }
        // Every input whose next pivot was known by the end is labelled exactly once.
        let expected = hist
            .rows
            .iter()
            .filter(|r| {
                all[0]
                    .iter()
                    .find(|p| p.time_ms > r.anchor.last_open_ms)
                    .is_some_and(|p| p.known_ms <= t_last)
            })
            .count();
        assert!(expected > 100, "{expected}");
        assert_eq!(labelled.len(), expected);
    }

    #[test]
    fn an_online_step_trains_only_on_rows_of_the_models_shape() {
        tch::set_num_threads(1);
        tch::manual_seed(4);
        let shape = InputShape::encoded(8);
        let model = CnnModel::new(CnnConfig::small(shape), Device::Cpu);
        let mut opt = nn::Adam::default().build(&model.vs, 1e-2).unwrap();
        let before = crate::models::cnn::flat_f64(&model.vs.variables()["pivot_head.weight"]);
        let ex = OnlineExample {
            input: RecentInput {
                t_ms: 60_000,
                series: vec![0.5; shape.channels * shape.window],
                context: vec![0.1; shape.context],
                anchor: Anchor {
                    timeframe: Timeframe::M1,
                    close: 100.0,
                    range: 2.0,
                    last_open_ms: 0,
                    interval_ms: 60_000,
                },
            },
            level: 1,
            target: PivotTarget {
                price_offset: 1.0,
                time_offset: 1.0,
                high: true,
            },
        };
        let mut wrong = ex.clone();
        wrong.input.series.pop();
        assert_eq!(online_step(&model, &mut opt, &[wrong]), None);
        assert_eq!(online_step(&model, &mut opt, &[]), None);
        assert_eq!(
            before,
            crate::models::cnn::flat_f64(&model.vs.variables()["pivot_head.weight"])
        );
        let loss = online_step(&model, &mut opt, &vec![ex; 8]).unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{loss}");
        let after = crate::models::cnn::flat_f64(&model.vs.variables()["pivot_head.weight"]);
        assert_ne!(before, after, "the step changed the weights");
    }
}
