//! The pivot CNN: 1-D convolutions over time per series (grouped: each timeframe's and the
//! reference symbol's candles are convolved on their own), a GRU that fuses the series,
//! additive attention, and heads for the next pivot of each level, the trade action and a
//! confidence.
//!
//! It reads the encoded `BaseDataInput` through [`ModelInput`] (candle series of every
//! timeframe and of the reference symbol as channels, everything else as context) and
//! predicts the next pivot of each level of one timeframe ([`CnnConfig::timeframe`]).

use super::input::{Anchor, InputShape, ModelInput, SeriesLayout};
use crate::analysis::input::SERIES;
use crate::analysis::model_output::{
    self as mo, ActionValues, ModelOutput, PredictedPivot, Predictions, SwingKind,
};
use crate::analysis::pivots::LEVELS;
use crate::market::types::{Price, Timeframe};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

/// Action index order shared by every model head: BUY, SELL, HOLD.
pub const ACTIONS: [Action; 3] = [Action::Buy, Action::Sell, Action::Hold];

/// A trade action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Go (or stay) long.
    Buy,
    /// Go (or stay) short.
    Sell,
    /// Keep the position.
    Hold,
}

impl Action {
    /// Position in [`ACTIONS`] and in every action head.
    pub const fn index(self) -> usize {
        match self {
            Action::Buy => 0,
            Action::Sell => 1,
            Action::Hold => 2,
        }
    }

    /// The action at a head index (anything out of range holds).
    pub const fn from_index(i: usize) -> Self {
        match i {
            0 => Action::Buy,
            1 => Action::Sell,
            _ => Action::Hold,
        }
    }

    /// `BUY`, `SELL` or `HOLD`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Buy => "BUY",
            Action::Sell => "SELL",
            Action::Hold => "HOLD",
        }
    }
}

impl From<Action> for mo::Action {
    fn from(a: Action) -> Self {
        match a {
            Action::Buy => mo::Action::Buy,
            Action::Sell => mo::Action::Sell,
            Action::Hold => mo::Action::Hold,
        }
    }
}

/// Probabilities (or any per-action numbers) in the model output's form.
pub fn action_values(v: [f64; 3]) -> ActionValues {
    ActionValues {
        buy: v[0],
        sell: v[1],
        hold: v[2],
    }
}

/// Direction −1..=1 and its confidence from BUY/SELL probabilities: the net lean and how
/// one-sided it is.
pub fn direction(p: [f64; 3]) -> (f64, f64) {
    let (b, s) = (p[0].max(0.0), p[1].max(0.0));
    let lean = (b - s).clamp(-1.0, 1.0);
    let conf = if b + s > 0.0 { b.max(s) / (b + s) } else { 0.0 };
    (lean, conf.clamp(0.0, 1.0))
}

/// Share of context features dropped during training.
pub const CONTEXT_DROPOUT: f64 = 0.3;

/// Outputs per pivot level: price offset, time offset, high/low logit.
pub const PIVOT_OUTPUTS: usize = 3;

/// CNN sizes (stored in every checkpoint, so a checkpoint rebuilds the network it holds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// Input shape the network is built for.
    pub input: InputShape,
    /// Timeframe whose pivots the heads predict.
    pub timeframe: Timeframe,
    /// Convolution channels (a multiple of `series_groups`: each series gets an equal share).
    pub conv_channels: usize,
    /// Convolution groups, one per input series ([`SERIES`]). Required in a checkpoint's
    /// config, so checkpoints of the earlier convolutions over all series at once (which lack
    /// it) are refused as incompatible instead of loading into the wrong shapes.
    pub series_groups: usize,
    /// GRU hidden size.
    pub hidden: usize,
    /// Width of the dense trunk before the heads.
    pub trunk: usize,
    /// Which candle interval each input series held in training (None: not recorded, as in
    /// older checkpoints and in models built for live-layout data).
    #[serde(default)]
    pub layout: Option<SeriesLayout>,
}

impl CnnConfig {
    /// Small defaults suited to CPU inference, predicting 1 m pivots.
    pub const fn small(input: InputShape) -> Self {
        Self {
            input,
            timeframe: Timeframe::M1,
            conv_channels: 8 * SERIES,
            series_groups: SERIES,
            hidden: 32,
            trunk: 64,
            layout: None,
        }
    }

    /// Why these sizes cannot build a network, if they cannot (groups must divide both the
    /// input channels and the convolution channels).
    pub fn check(&self) -> Result<(), String> {
        let g = self.series_groups;
        if g == 0 || !self.input.channels.is_multiple_of(g) || !self.conv_channels.is_multiple_of(g)
        {
            return Err(format!(
                "{} input and {} convolution channels do not split into {g} series groups",
                self.input.channels, self.conv_channels
            ));
        }
        Ok(())
    }

    /// Width of [`CnnOutput::state_features`].
    pub const fn state_features(&self) -> usize {
        LEVELS * PIVOT_OUTPUTS + 3 + 1 + self.conv_channels + self.hidden
    }
}

/// One forward pass's results.
#[derive(Debug)]
pub struct CnnOutput {
    /// `[B, LEVELS, 3]`: price offset, time offset, high logit per level.
    pub pivots: Tensor,
    /// `[B, 3]` BUY/SELL/HOLD logits.
    pub action_logits: Tensor,
    /// `[B]` confidence in 0..1.
    pub confidence: Tensor,
    /// `[B, conv_channels]`: convolution features averaged over time.
    pub conv_features: Tensor,
    /// `[B, hidden]`: the GRU's final state.
    pub rnn_hidden: Tensor,
    /// `[B, T]`: attention weights over time.
    pub attention: Tensor,
}

impl CnnOutput {
    /// `[B, 3]` action probabilities.
    pub fn action_probs(&self) -> Tensor {
        self.action_logits.softmax(-1, Kind::Float)
    }

    /// `[B, state_features]`: predictions and hidden states, flattened for the RL agent.
    pub fn state_features(&self) -> Tensor {
        let b = self.pivots.size()[0];
        Tensor::cat(
            &[
                self.pivots.view([b, -1]),
                self.action_probs(),
                self.confidence.view([b, 1]),
                self.conv_features.shallow_clone(),
                self.rnn_hidden.shallow_clone(),
            ],
            1,
        )
    }
}

/// The network (its variables live in the `VarStore` whose path built it).
#[derive(Debug)]
pub struct PivotCnn {
    cfg: CnnConfig,
    conv1: nn::Conv1D,
    conv2: nn::Conv1D,
    gru: nn::GRU,
    attn_w: nn::Linear,
    attn_v: nn::Linear,
    ctx: nn::Linear,
    newest: nn::Linear,
    trunk: nn::Linear,
    pivot_head: nn::Linear,
    action_head: nn::Linear,
    confidence_head: nn::Linear,
}

impl PivotCnn {
    /// Creates the variables under `p`.
    pub fn new(p: &nn::Path, cfg: CnnConfig) -> Self {
        let c = cfg.input.channels as i64;
        let cc = cfg.conv_channels as i64;
        let h = cfg.hidden as i64;
        let f = cfg.input.context as i64;
        let tr = cfg.trunk as i64;
        // conv1 is grouped by series: a filter reads one timeframe's (or the reference's)
        // features only. conv2 mixes the series' features (grouping it too lost the learning
        // test's price margin); the GRU, the newest-frame layer and the trunk fuse further.
        let pad = |k: i64, groups: usize| nn::ConvConfig {
            padding: k / 2,
            groups: groups.max(1) as i64,
            ..Default::default()
        };
        Self {
            cfg,
            conv1: nn::conv1d(p / "conv1", c, cc, 5, pad(5, cfg.series_groups)),
            conv2: nn::conv1d(p / "conv2", cc, cc, 3, pad(3, 1)),
            gru: nn::gru(p / "gru", cc, h, Default::default()),
            attn_w: nn::linear(p / "attn_w", h, h, Default::default()),
            attn_v: nn::linear(
                p / "attn_v",
                h,
                1,
                nn::LinearConfig {
                    bias: false,
                    ..Default::default()
                },
            ),
            ctx: nn::linear(p / "ctx", f, h, Default::default()),
            newest: nn::linear(p / "newest", c, h, Default::default()),
            trunk: nn::linear(p / "trunk", 4 * h, tr, Default::default()),
            pivot_head: nn::linear(
                p / "pivot_head",
                tr,
                (LEVELS * PIVOT_OUTPUTS) as i64,
                Default::default(),
            ),
            action_head: nn::linear(p / "action_head", tr, 3, Default::default()),
            confidence_head: nn::linear(p / "confidence_head", tr, 1, Default::default()),
        }
    }

    /// The sizes this network was built with.
    pub fn config(&self) -> CnnConfig {
        self.cfg
    }

    /// Runs the network on a batch for inference (no dropout).
    pub fn forward(&self, input: &ModelInput) -> CnnOutput {
        self.forward_t(input, false)
    }

    /// Runs the network; `train` drops context features at random (many context features
    /// drift slowly, like cumulative volume, and the network must not lean on any one).
    pub fn forward_t(&self, input: &ModelInput, train: bool) -> CnnOutput {
        let b = input.series.size()[0];
        let x = input
            .series
            .apply(&self.conv1)
            .relu()
            .apply(&self.conv2)
            .relu();
        let conv_features = x.mean_dim(-1, false, Kind::Float);
        // The GRU reads time-major features as [B, T, C] (batch-first).
        let seq = x.transpose(1, 2);
        let (out, state) = self.gru.seq(&seq);
        let rnn_hidden = state.value().squeeze_dim(0);
        let scores = out
            .apply(&self.attn_w)
            .tanh()
            .apply(&self.attn_v)
            .squeeze_dim(-1);
        let attention = scores.softmax(-1, Kind::Float);
        let attended = (out * attention.unsqueeze(-1)).sum_dim_intlist(1, false, Kind::Float);
        let ctx = input
            .context
            .dropout(CONTEXT_DROPOUT, train)
            .apply(&self.ctx)
            .relu();
        // The newest frame of every series goes straight to the trunk: the next pivot is
        // measured from the newest close, which the recurrent summary only blurs.
        let newest = input.series.select(2, -1).apply(&self.newest).relu();
        let trunk = Tensor::cat(&[attended, rnn_hidden.shallow_clone(), ctx, newest], 1)
            .apply(&self.trunk)
            .relu();
        CnnOutput {
            pivots: self
                .pivot_head
                .forward(&trunk)
                .view([b, LEVELS as i64, PIVOT_OUTPUTS as i64]),
            action_logits: self.action_head.forward(&trunk),
            confidence: self.confidence_head.forward(&trunk).sigmoid().view([b]),
            conv_features,
            rnn_hidden,
            attention,
        }
    }
}

/// A predicted pivot of one level, in model units (see `PivotTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PivotForecast {
    /// Level 1..=5.
    pub level: u8,
    /// Price offset from the newest close (units of `PivotTarget::price_offset`).
    pub price_offset: f64,
    /// Time offset (units of `PivotTarget::time_offset`).
    pub time_offset: f64,
    /// Probability that the pivot is a high.
    pub p_high: f64,
}

/// A host-side CNN prediction for one input row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CnnPrediction {
    /// Next pivot per level.
    pub pivots: Vec<PivotForecast>,
    /// Most probable action.
    pub action: Action,
    /// BUY, SELL, HOLD probabilities.
    pub probabilities: [f64; 3],
    /// Confidence head output, 0..1.
    pub confidence: f64,
    /// Convolution features averaged over time.
    pub conv_features: Vec<f32>,
    /// The GRU's final state.
    pub rnn_hidden: Vec<f32>,
}

/// Host-side predictions for every row of a forward pass.
pub fn predictions(out: &CnnOutput) -> Vec<CnnPrediction> {
    let b = out.pivots.size()[0] as usize;
    let pivots = flat_f64(&out.pivots);
    let probs = flat_f64(&out.action_probs());
    let conf = flat_f64(&out.confidence);
    let conv = flat_f64(&out.conv_features);
    let hidden = flat_f64(&out.rnn_hidden);
    let (cw, hw) = (conv.len() / b.max(1), hidden.len() / b.max(1));
    (0..b)
        .map(|i| {
            let p = [probs[i * 3], probs[i * 3 + 1], probs[i * 3 + 2]];
            let best = (0..3).fold(0, |a, j| if p[j] > p[a] { j } else { a });
            CnnPrediction {
                pivots: (0..LEVELS)
                    .map(|l| {
                        let o = (i * LEVELS + l) * PIVOT_OUTPUTS;
                        PivotForecast {
                            level: l as u8 + 1,
                            price_offset: pivots[o],
                            time_offset: pivots[o + 1],
                            p_high: 1.0 / (1.0 + (-pivots[o + 2]).exp()),
                        }
                    })
                    .collect(),
                action: Action::from_index(best),
                probabilities: p,
                confidence: conf[i].clamp(0.0, 1.0),
                conv_features: conv[i * cw..(i + 1) * cw]
                    .iter()
                    .map(|&v| v as f32)
                    .collect(),
                rnn_hidden: hidden[i * hw..(i + 1) * hw]
                    .iter()
                    .map(|&v| v as f32)
                    .collect(),
            }
        })
        .collect()
}

impl CnnPrediction {
    /// The prediction as the design's CNN `ModelOutput` (predicted pivots as prices and
    /// times through `anchor`; none when the timeframe's series is empty).
    pub fn to_model_output(
        &self,
        model_name: &str,
        symbol: &str,
        timestamp_ms: i64,
        anchor: Option<&Anchor>,
        metadata: BTreeMap<String, String>,
    ) -> ModelOutput {
        let p = self.probabilities;
        let (direction_vector, direction_confidence) = direction(p);
        let pivots = anchor
            .map(|a| {
                self.pivots
                    .iter()
                    .map(|f| PredictedPivot {
                        timeframe: a.timeframe,
                        level: f.level,
                        kind: if f.p_high >= 0.5 {
                            SwingKind::High
                        } else {
                            SwingKind::Low
                        },
                        // A price is never shown below one tick.
                        price: Price::from_f64_round(a.price(f.price_offset).max(1e-8)),
                        time_ms: a.time_ms(f.time_offset),
                        confidence: f.p_high.max(1.0 - f.p_high).clamp(0.0, 1.0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ModelOutput {
            model_type: "cnn".into(),
            model_name: model_name.into(),
            symbol: symbol.into(),
            timestamp_ms,
            confidence: self.confidence,
            predictions: Predictions {
                action: self.action.into(),
                action_confidence: p[self.action.index()].clamp(0.0, 1.0),
                probabilities: action_values(p.map(|v| v.clamp(0.0, 1.0))),
                direction_vector,
                direction_confidence,
                pivots,
                q_values: None,
                expected_reward: None,
            },
            hidden_states: BTreeMap::from([
                ("conv_features".to_string(), self.conv_features.clone()),
                ("gru_hidden".to_string(), self.rnn_hidden.clone()),
            ]),
            metadata,
        }
    }
}

/// A CNN with its own variables: what inference and training hold.
#[derive(Debug)]
pub struct CnnModel {
    /// The variables (save, load, copy).
    pub vs: nn::VarStore,
    /// The network.
    pub net: PivotCnn,
}

impl CnnModel {
    /// Fresh random weights on `device` (seed libtorch first for reproducibility).
    pub fn new(cfg: CnnConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let net = PivotCnn::new(&vs.root(), cfg);
        Self { vs, net }
    }

    /// Forward pass with autograd off.
    pub fn infer(&self, input: &ModelInput) -> CnnOutput {
        tch::no_grad(|| self.net.forward(&input.to_device(self.vs.device())))
    }

    /// Host-side predictions for every row of `input`.
    pub fn predict(&self, input: &ModelInput) -> Vec<CnnPrediction> {
        predictions(&self.infer(input))
    }

    /// Copies another model's weights into this one (the trainer → inference hand-off).
    pub fn copy_weights_from(&mut self, other: &nn::VarStore) -> Result<(), tch::TchError> {
        self.vs.copy(other)
    }
}

/// A tensor's values as f64 on the host, row-major.
pub(crate) fn flat_f64(t: &Tensor) -> Vec<f64> {
    let t = t
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .contiguous()
        .view([-1]);
    Vec::<f64>::try_from(&t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::pivots::LEVELS;

    fn input(b: i64, cfg: &InputShape) -> ModelInput {
        tch::manual_seed(3);
        ModelInput::new(
            Tensor::randn(
                [b, cfg.channels as i64, cfg.window as i64],
                (Kind::Float, Device::Cpu),
            ),
            Tensor::randn([b, cfg.context as i64], (Kind::Float, Device::Cpu)),
            cfg,
        )
        .unwrap()
    }

    #[test]
    fn forward_shapes_and_ranges() {
        tch::manual_seed(1);
        let cfg = CnnConfig::small(InputShape::encoded(24));
        let m = CnnModel::new(cfg, Device::Cpu);
        let x = input(4, &cfg.input);
        let out = m.infer(&x);
        assert_eq!(out.pivots.size(), vec![4, 5, 3]);
        assert_eq!(out.action_logits.size(), vec![4, 3]);
        assert_eq!(out.conv_features.size(), vec![4, 40]);
        // One group per series: each filter reads the 7 features of a single series.
        let vars = m.vs.variables();
        assert_eq!(vars["conv1.weight"].size(), vec![40, 7, 5]);
        assert_eq!(vars["conv2.weight"].size(), vec![40, 40, 3]);
        assert_eq!(out.rnn_hidden.size(), vec![4, 32]);
        assert_eq!(out.attention.size(), vec![4, 24]);
        assert_eq!(
            out.state_features().size(),
            vec![4, cfg.state_features() as i64]
        );
        let att_sum = flat_f64(&out.attention.sum_dim_intlist(1, false, Kind::Float));
        assert!(att_sum.iter().all(|s| (s - 1.0).abs() < 1e-5));
        let preds = m.predict(&x);
        assert_eq!(preds.len(), 4);
        for p in &preds {
            assert!((p.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-5);
            assert!((0.0..=1.0).contains(&p.confidence));
            assert_eq!(p.pivots.len(), LEVELS);
            assert_eq!((p.conv_features.len(), p.rnn_hidden.len()), (40, 32));
        }
    }

    #[test]
    fn model_output_follows_the_design_example_and_validates() {
        tch::manual_seed(2);
        let cfg = CnnConfig::small(InputShape::encoded(8));
        let m = CnnModel::new(cfg, Device::Cpu);
        let p = m.predict(&input(1, &cfg.input)).remove(0);
        let anchor = Anchor {
            timeframe: Timeframe::M1,
            close: 3000.0,
            range: 50.0,
            last_open_ms: 1_700_000_000_000,
            interval_ms: 60_000,
        };
        let meta = BTreeMap::from([("model_version".to_string(), "1".to_string())]);
        let o = p.to_model_output(
            "williams_cnn",
            "ETHUSDT",
            1_700_000_060_000,
            Some(&anchor),
            meta,
        );
        o.validate().unwrap();
        assert_eq!(o.model_type, "cnn");
        assert_eq!(o.predictions.action, p.action.into());
        assert_eq!(o.predictions.pivots.len(), LEVELS);
        for (f, pv) in p.pivots.iter().zip(&o.predictions.pivots) {
            assert_eq!(pv.level, f.level);
            assert!(pv.time_ms > anchor.last_open_ms);
            assert_eq!((pv.time_ms - anchor.last_open_ms) % 60_000, 0);
            let price = 3000.0 + f.price_offset / 10.0 * 50.0;
            assert!((pv.price.to_f64() - price).abs() < 1e-6);
        }
        let sum: f64 = o.predictions.probabilities.as_array().iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(o.hidden_states["conv_features"].len(), 40);
        assert_eq!(o.hidden_states["gru_hidden"].len(), 32);
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"pivots\":[{\"timeframe\""), "{json}");
        // Without an anchor (empty series) there are no pivots, and the output still holds.
        let bare = p.to_model_output("c", "ETHUSDT", 0, None, BTreeMap::new());
        assert!(bare.predictions.pivots.is_empty() && bare.validate().is_ok());
    }

    #[test]
    fn same_seed_same_weights_and_copy_hands_them_over() {
        let cfg = CnnConfig::small(InputShape::encoded(16));
        tch::manual_seed(7);
        let a = CnnModel::new(cfg, Device::Cpu);
        tch::manual_seed(8);
        let mut b = CnnModel::new(cfg, Device::Cpu);
        let x = input(2, &cfg.input);
        let before = flat_f64(&b.infer(&x).pivots);
        assert_ne!(flat_f64(&a.infer(&x).pivots), before);
        b.copy_weights_from(&a.vs).unwrap();
        assert_eq!(flat_f64(&a.infer(&x).pivots), flat_f64(&b.infer(&x).pivots));
    }

    #[test]
    fn checkpoints_of_the_ungrouped_convolutions_are_refused() {
        use crate::models::checkpoint::{
            CheckpointConfig, CheckpointError, CheckpointManager, DataRange, MetricGoal,
        };
        let dir = tempfile::tempdir().unwrap();
        let ck = CheckpointManager::new(CheckpointConfig {
            root: dir.path().to_path_buf(),
            model_name: "pivot_cnn".into(),
            keep: 5,
            metric: "loss".into(),
            goal: MetricGoal::Minimize,
        })
        .unwrap();
        let cfg = CnnConfig::small(InputShape::encoded(8));
        let old = CnnModel::new(cfg, Device::Cpu);
        // The earlier network's config: the same sizes without the series groups.
        let mut old_cfg = serde_json::to_value(cfg).unwrap();
        old_cfg.as_object_mut().unwrap().remove("series_groups");
        let metrics = BTreeMap::from([("loss".to_string(), 0.1)]);
        ck.save(&old.vs, &old_cfg, metrics, DataRange::default())
            .unwrap();
        let got = ck
            .load_best_model(
                |c: CnnConfig| {
                    c.check()?;
                    Ok(CnnModel::new(c, Device::Cpu))
                },
                |m: &mut CnnModel| &mut m.vs,
            )
            .unwrap();
        assert!(got.loaded.is_none());
        assert!(
            matches!(&got.skipped[0].1, CheckpointError::Config { message, .. }
                if message.contains("series_groups")),
            "{:?}",
            got.skipped
        );
        let bad = CnnConfig {
            conv_channels: 32,
            ..cfg
        };
        assert!(bad.check().unwrap_err().contains("5 series groups"));
        assert_eq!(cfg.check(), Ok(()));
    }
}
