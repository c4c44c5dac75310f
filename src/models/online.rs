//! Online learning: a newly confirmed pivot becomes training examples for the recent inputs
//! whose target it is, a trainer thread takes small steps on them, and fresh weights are
//! handed to inference by copying the VarStore (inference never waits on training).

use super::cnn::{CnnConfig, CnnModel};
use super::features::{FeatureSet, ModelInput, PRICE_SCALE, PivotTarget};
use crate::analysis::pivots::{LEVELS, PivotKind, PivotPoint};
use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// One input row kept for later labelling.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentInput {
    /// Candle index of the row's newest candle.
    pub index: usize,
    /// `C * T` series values.
    pub series: Vec<f32>,
    /// `F` context values.
    pub context: Vec<f32>,
    /// Close of the newest candle.
    pub close: f64,
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

/// Bounded history of recent inputs plus the last pivot seen per level.
#[derive(Debug, Clone)]
pub struct InputHistory {
    rows: VecDeque<RecentInput>,
    capacity: usize,
    last_pivot: [Option<usize>; LEVELS],
}

impl InputHistory {
    /// Keeps up to `capacity` inputs.
    pub fn new(capacity: usize) -> Self {
        Self {
            rows: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
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

    /// Appends an input (indices must increase; older duplicates are ignored).
    pub fn push(&mut self, row: RecentInput) {
        if self.rows.back().is_some_and(|b| b.index >= row.index) {
            return;
        }
        if self.rows.len() == self.capacity {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
    }

    /// Appends row `row` of a feature set.
    pub fn push_row(&mut self, fs: &FeatureSet, row: usize) {
        let (cs, f) = (fs.input.channels * fs.input.window, fs.input.context);
        self.push(RecentInput {
            index: fs.index[row],
            series: fs.series[row * cs..(row + 1) * cs].to_vec(),
            context: fs.context[row * f..(row + 1) * f].to_vec(),
            close: fs.close[row],
        });
    }

    /// Examples for a newly confirmed pivot: every held input at or after the previous pivot
    /// of the same level and before this one has it as its next pivot.
    pub fn examples_for(&mut self, pivot: &PivotPoint) -> Vec<OnlineExample> {
        let l = usize::from(pivot.level.clamp(1, LEVELS as u8)) - 1;
        let from = self.last_pivot[l].unwrap_or(0);
        if self.last_pivot[l].is_some_and(|p| p >= pivot.index) {
            return Vec::new();
        }
        self.last_pivot[l] = Some(pivot.index);
        self.rows
            .iter()
            .filter(|r| r.index >= from && r.index < pivot.index && r.close > 0.0)
            .map(|r| OnlineExample {
                input: r.clone(),
                level: l as u8 + 1,
                target: PivotTarget {
                    price_offset: ((pivot.price.to_f64() / r.close).ln() * PRICE_SCALE) as f32,
                    time_offset: ((pivot.index - r.index) as f64).ln() as f32,
                    high: pivot.kind == PivotKind::High,
                },
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
    let first = examples.first()?;
    let cfg = model.net.config().input;
    let n = examples.len() as i64;
    let device = model.vs.device();
    if first.input.series.len() != cfg.channels * cfg.window
        || first.input.context.len() != cfg.context
    {
        return None;
    }
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
    let out = model.net.forward(&x);
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

/// A running online trainer: send examples in, receive weight snapshots out.
#[derive(Debug)]
pub struct OnlineTrainer {
    examples: Option<Sender<Vec<OnlineExample>>>,
    /// Snapshots published after each update (a fresh model holding a copy of the weights).
    pub weights: Receiver<CnnModel>,
    handle: JoinHandle<usize>,
}

impl OnlineTrainer {
    /// Starts the trainer thread from `initial` weights (copied); it stops when `examples`
    /// is dropped and returns the number of updates.
    pub fn spawn(cfg: CnnConfig, initial: &nn::VarStore, lr: f64) -> Result<Self, tch::TchError> {
        let mut model = CnnModel::new(cfg, Device::Cpu);
        model.copy_weights_from(initial)?;
        let (ex_tx, ex_rx) = std::sync::mpsc::channel::<Vec<OnlineExample>>();
        let (w_tx, w_rx) = std::sync::mpsc::channel::<CnnModel>();
        let handle = std::thread::Builder::new()
            .name("mmtrader-online-cnn".into())
            .spawn(move || {
                let Ok(mut opt) = nn::Adam::default().build(&model.vs, lr) else {
                    return 0;
                };
                let mut updates = 0;
                while let Ok(batch) = ex_rx.recv() {
                    if online_step(&model, &mut opt, &batch).is_none() {
                        continue;
                    }
                    updates += 1;
                    let mut snap = CnnModel::new(cfg, Device::Cpu);
                    if snap.copy_weights_from(&model.vs).is_ok() && w_tx.send(snap).is_err() {
                        break;
                    }
                }
                updates
            })
            .map_err(|e| tch::TchError::Kind(format!("spawning the online trainer: {e}")))?;
        Ok(Self {
            examples: Some(ex_tx),
            weights: w_rx,
            handle,
        })
    }

    /// Queues a batch of examples; false once the trainer is closed or gone.
    pub fn send(&self, batch: Vec<OnlineExample>) -> bool {
        self.examples
            .as_ref()
            .is_some_and(|tx| tx.send(batch).is_ok())
    }

    /// Stops accepting examples; the thread ends after the queued ones.
    pub fn close(&mut self) {
        self.examples = None;
    }

    /// Closes the example channel and waits for the thread; returns its update count.
    pub fn finish(mut self) -> usize {
        self.close();
        self.handle.join().unwrap_or(0)
    }
}

/// Installs the newest published snapshot into `live`, if one arrived; never blocks.
pub fn adopt_latest(live: &mut CnnModel, weights: &Receiver<CnnModel>) -> bool {
    let mut latest = None;
    while let Ok(m) = weights.try_recv() {
        latest = Some(m);
    }
    match latest {
        Some(m) => live.copy_weights_from(&m.vs).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::pivots::{PivotConfig, WilliamsEngine};
    use crate::market::types::{Candle, Price, Qty, Timeframe};
    use crate::models::features::{FeatureBuilder, InputConfig};
    use std::sync::mpsc::TryRecvError;

    fn candles(n: usize) -> Vec<Candle> {
        (0..n)
            .map(|i| {
                let c = 100.0 + 3.0 * (i as f64 / 5.0).sin();
                let p = Price::from_f64_round;
                Candle {
                    open_time_ms: i as i64 * 60_000,
                    open: p(c),
                    high: p(c + 0.2),
                    low: p(c - 0.2),
                    close: p(c),
                    volume: Qty::from_f64_round(1.0),
                    trades: 1,
                }
            })
            .collect()
    }

    #[test]
    fn confirmed_pivot_labels_the_inputs_since_the_previous_one() {
        let cs = candles(120);
        let pc = PivotConfig::for_timeframe(Timeframe::M1);
        let fs = FeatureBuilder::new(8, pc).build(&cs).unwrap();
        let mut hist = InputHistory::new(1000);
        let mut engine = WilliamsEngine::new(pc);
        let mut labelled = Vec::new();
        for (t, c) in cs.iter().enumerate() {
            let fresh: Vec<PivotPoint> = engine.update(c).unwrap().to_vec();
            if t >= 7 {
                hist.push_row(&fs, t - 7);
            }
            for p in fresh.iter().filter(|p| p.level == 1) {
                labelled.push((*p, hist.examples_for(p)));
            }
        }
        assert!(labelled.len() > 5);
        for w in labelled.windows(2) {
            let (prev, _) = &w[0];
            let (p, ex) = &w[1];
            assert!(!ex.is_empty());
            // Exactly the inputs from the previous pivot's candle up to before this one's.
            let idx: Vec<usize> = ex.iter().map(|e| e.input.index).collect();
            let expected: Vec<usize> = (prev.index.max(7)..p.index).collect();
            assert_eq!(idx, expected);
            for e in ex {
                assert_eq!(e.target.high, p.kind == PivotKind::High);
                assert!(e.input.index < p.index);
            }
        }
    }

    #[test]
    fn inference_keeps_answering_while_the_trainer_runs() {
        tch::set_num_threads(1);
        tch::manual_seed(4);
        let cfg = CnnConfig::small(InputConfig::candles(8));
        let mut live = CnnModel::new(cfg, Device::Cpu);
        let before = crate::models::cnn::flat_f64(&live.vs.variables()["pivot_head.weight"]);
        let mut trainer = OnlineTrainer::spawn(cfg, &live.vs, 1e-2).unwrap();
        let ex = OnlineExample {
            input: RecentInput {
                index: 1,
                series: vec![0.5; 5 * 8],
                context: vec![0.1; 20],
                close: 100.0,
            },
            level: 1,
            target: PivotTarget {
                price_offset: 1.0,
                time_offset: 1.0,
                high: true,
            },
        };
        for _ in 0..20 {
            assert!(trainer.send(vec![ex.clone(); 8]));
        }
        trainer.close();
        let x = ModelInput {
            series: Tensor::zeros([1, 5, 8], (Kind::Float, Device::Cpu)),
            context: Tensor::zeros([1, 20], (Kind::Float, Device::Cpu)),
        };
        // Inference runs on its own model and answers between hand-offs; adopting a snapshot
        // is a copy, so it never waits for a training step.
        let mut answers = 0;
        let mut adopted = 0;
        loop {
            assert_eq!(live.predict(&x).len(), 1);
            answers += 1;
            match trainer.weights.try_recv() {
                Ok(snap) => {
                    live.copy_weights_from(&snap.vs).unwrap();
                    adopted += 1;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => break,
            }
        }
        assert_eq!(trainer.finish(), 20);
        assert_eq!(adopted, 20);
        assert!(answers > adopted);
        let after = crate::models::cnn::flat_f64(&live.vs.variables()["pivot_head.weight"]);
        assert_ne!(before, after, "trained weights reached the inference model");
    }
}
