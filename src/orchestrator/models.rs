//! The CNN and the DQN as experts of the mixture, over part-i's [`InferenceCore`]: one pass
//! runs the CNN and then the DQN on the CNN's hidden states of the same step; the CNN expert
//! answers with the CNN's output and leaves the DQN's for the DQN expert, which depends on the
//! CNN so it runs in the next stage of the step.
//!
//! **Validation.** Every input is validated before inference under a [`ValidationPolicy`]:
//! live inputs (`has_order_book = true`) as the runtime does; inputs replayed from kline
//! history, which have no order book, under [`ValidationPolicy::Klines`] on the CNN's
//! timeframe: no COB asked for, every other check kept (frame minimum on the series the model
//! reads, NaN/infinity, time order, future stamps). An invalid step goes to no model; it is
//! counted with its reason in [`InvalidSteps`] (shown in the backtest report).
//!
//! **Earlier outputs.** With `see_last_predictions = false` the models get the input without
//! `last_predictions` (empty), so steps do not depend on each other and backtests may batch
//! them; with `true` they see them and steps run in time order.
//!
//! **Position.** The DQN's state ends with the account's position in the symbol, as the
//! backtest reports it after each step's fills ([`Expert::observe_position`]). The CNN does
//! not depend on it, so a backtest computes the CNN for a batch ahead ([`Expert::prefetch`])
//! and then runs the DQN step by step with the position of that moment.
//!
//! **Walk-forward.** [`ModelFolds`] trains fresh models on each fold's train window (the only
//! candles walk-forward hands it) and tests with exactly those weights.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tch::{Device, Tensor};

use super::backtest::FoldExperts;
use super::expert::{Expert, ExpertError, Upstream};
use crate::analysis::encoding::encode;
use crate::analysis::input::{BaseDataInput, InputConfig, ValidationPolicy};
use crate::analysis::model_output::ModelOutput;
use crate::market::types::{Candle, Symbol, Timeframe};
use crate::models::cnn::{CnnConfig, CnnModel, CnnOutput, predictions};
use crate::models::cnn_train::{
    CnnDataset, CnnTrainConfig, DatasetConfig, DatasetError, TrainError, TrainProgress, train_cnn,
};
use crate::models::dqn::{DqnAgent, DqnError};
use crate::models::env::{EnvConfig, EnvError, TradingEnv};
use crate::models::input::{Anchor, InputShape, ModelRows};
use crate::models::rl_train::{
    RlTrainConfig, agent_config, market_features, rl_features, train_dqn,
};
use crate::models::runtime::{InferenceCore, spec_for};

/// Inference steps refused by validation: how many, and the first reasons.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InvalidSteps {
    /// Inputs refused.
    pub count: u64,
    /// The first [`InvalidSteps::KEPT`] reasons.
    pub reasons: Vec<String>,
}

impl InvalidSteps {
    /// Reasons kept.
    pub const KEPT: usize = 20;

    fn record(&mut self, reason: &str) {
        self.count += 1;
        if self.reasons.len() < Self::KEPT {
            self.reasons.push(reason.to_string());
        }
    }

    /// Adds another tally (walk-forward folds).
    pub fn merge(&mut self, other: &InvalidSteps) {
        self.count += other.count;
        for r in &other.reasons {
            if self.reasons.len() < Self::KEPT {
                self.reasons.push(r.clone());
            }
        }
    }
}

/// A shared view of the invalid steps of one pair of model experts.
#[derive(Debug, Clone, Default)]
pub struct InvalidLog(Arc<Mutex<InvalidSteps>>);

impl InvalidLog {
    /// The tally so far.
    pub fn get(&self) -> InvalidSteps {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A step's account-independent part: the CNN's output and the DQN's state without the
/// position.
struct Prepared {
    cnn: ModelOutput,
    state: Vec<f32>,
}

/// The models and the DQN outputs waiting for their expert.
struct Shared {
    core: InferenceCore,
    policy: ValidationPolicy,
    invalid: InvalidLog,
    input_cfg: InputConfig,
    see_last_predictions: bool,
    /// DQN outputs of the newest CNN pass, by (symbol, time).
    pending: BTreeMap<(Symbol, i64), Result<ModelOutput, ExpertError>>,
    /// CNN passes computed ahead by [`Expert::prefetch`], by (symbol, time).
    prefetched: BTreeMap<(Symbol, i64), Result<Prepared, ExpertError>>,
    /// The account's position direction per symbol, as last observed.
    positions: BTreeMap<Symbol, i8>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(input: &BaseDataInput) -> (Symbol, i64) {
    (input.symbol.clone(), input.timestamp_ms)
}

impl Shared {
    /// The CNN pass (in one batch) and the DQN's state without the position, per input.
    fn prepare(&self, inputs: &[&BaseDataInput]) -> Vec<Result<Prepared, ExpertError>> {
        let cnn_cfg = self.core.cnn.net.config();
        let mut rows = ModelRows::new(cnn_cfg.input);
        let mut market = Vec::new();
        let mut answers = Vec::with_capacity(inputs.len());
        let mut valid = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let stripped;
            let input: &BaseDataInput =
                if self.see_last_predictions || input.last_predictions.is_empty() {
                    input
                } else {
                    stripped = BaseDataInput {
                        last_predictions: BTreeMap::new(),
                        ..(*input).clone()
                    };
                    &stripped
                };
            let enc = match input.validate_with(&self.input_cfg, self.policy) {
                Ok(()) => Ok(encode(input)),
                Err(e) => {
                    let reason = e.to_string();
                    lock_invalid(&self.invalid).record(&reason);
                    Err(ExpertError::InvalidInput(reason))
                }
            };
            let pushed = enc.and_then(|enc| {
                rows.push(&enc)
                    .map_err(|e| ExpertError::InvalidInput(e.to_string()))?;
                Ok(enc)
            });
            match pushed {
                Ok(enc) => {
                    market.push(market_features(
                        &enc,
                        self.core.spec.timeframe,
                        self.core.spec.recent,
                    ));
                    valid.push(i);
                    answers.push(Err(ExpertError::Model("not run".into())));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        if valid.is_empty() {
            return answers;
        }
        let device = self.core.cnn.vs.device();
        let out: CnnOutput = self.core.cnn.infer(&rows.all(device));
        let preds = predictions(&out);
        let cnn_state = if self.core.spec.cnn_features > 0 {
            Vec::<f32>::try_from(
                &out.state_features()
                    .to_device(Device::Cpu)
                    .contiguous()
                    .view([-1]),
            )
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let cw = cnn_state.len() / valid.len();
        for ((k, &i), mut state) in valid.iter().enumerate().zip(market) {
            let input = inputs[i];
            state.extend_from_slice(&cnn_state[k * cw..(k + 1) * cw]);
            let cnn = preds[k].to_model_output(
                &self.core.names.0,
                &input.symbol,
                input.timestamp_ms,
                Anchor::of(input, cnn_cfg.timeframe).as_ref(),
                BTreeMap::new(),
            );
            answers[i] = Ok(Prepared { cnn, state });
        }
        answers
    }

    /// The DQN's outputs on prepared steps, each state ending with the symbol's observed
    /// position (the one the training environment's state holds).
    fn decide(&self, inputs: &[&BaseDataInput], prepared: &[&Prepared]) -> Vec<ModelOutput> {
        if prepared.is_empty() {
            return Vec::new();
        }
        let device = self.core.dqn.vs.device();
        let width = prepared[0].state.len() + 1;
        let mut states = Vec::with_capacity(prepared.len() * width);
        for (input, p) in inputs.iter().zip(prepared) {
            states.extend_from_slice(&p.state);
            states.push(f32::from(
                self.positions
                    .get(&input.symbol)
                    .copied()
                    .unwrap_or(0)
                    .clamp(-1, 1),
            ));
        }
        let states = Tensor::from_slice(&states)
            .view([prepared.len() as i64, width as i64])
            .to_device(device);
        self.core
            .dqn
            .decide_batch(&states)
            .iter()
            .zip(inputs)
            .map(|(d, input)| {
                d.to_model_output(
                    &self.core.names.1,
                    &input.symbol,
                    input.timestamp_ms,
                    BTreeMap::new(),
                )
            })
            .collect()
    }

    /// Computes the CNN passes of `inputs` ahead (only when steps do not read earlier
    /// outputs, so a pass does not depend on the steps before it).
    fn prefetch(&mut self, inputs: &[&BaseDataInput]) {
        self.prefetched.clear();
        if self.see_last_predictions {
            return;
        }
        let prepared = self.prepare(inputs);
        for (input, p) in inputs.iter().zip(prepared) {
            self.prefetched.insert(key(input), p);
        }
    }

    fn infer_cnn(&mut self, inputs: &[&BaseDataInput]) -> Vec<Result<ModelOutput, ExpertError>> {
        let mut ready: Vec<Option<Result<Prepared, ExpertError>>> = inputs
            .iter()
            .map(|input| self.prefetched.remove(&key(input)))
            .collect();
        let missing: Vec<&BaseDataInput> = inputs
            .iter()
            .zip(&ready)
            .filter(|(_, r)| r.is_none())
            .map(|(input, _)| *input)
            .collect();
        let mut computed = self.prepare(&missing).into_iter();
        let ready: Vec<Result<Prepared, ExpertError>> = ready
            .iter_mut()
            .map(|r| {
                r.take().unwrap_or_else(|| {
                    computed
                        .next()
                        .unwrap_or_else(|| Err(ExpertError::Model("no answer".into())))
                })
            })
            .collect();
        let (ok_inputs, ok): (Vec<&BaseDataInput>, Vec<&Prepared>) = inputs
            .iter()
            .zip(&ready)
            .filter_map(|(input, r)| r.as_ref().ok().map(|p| (*input, p)))
            .unzip();
        let mut dqn = self.decide(&ok_inputs, &ok).into_iter();
        self.pending.clear();
        inputs
            .iter()
            .zip(ready)
            .map(|(input, r)| match r {
                Ok(p) => {
                    let out = dqn
                        .next()
                        .ok_or_else(|| ExpertError::Model("no DQN output".into()));
                    self.pending.insert(key(input), out);
                    Ok(p.cnn)
                }
                Err(e) => {
                    self.pending.insert(key(input), Err(e.clone()));
                    Err(e)
                }
            })
            .collect()
    }
}

/// The CNN as an expert (runs both models; see the module docs).
pub struct CnnExpert {
    name: String,
    shared: Arc<Mutex<Shared>>,
}

impl CnnExpert {
    /// The steps validation refused so far (shared by both experts of the pair).
    pub fn invalid_log(&self) -> InvalidLog {
        lock(&self.shared).invalid.clone()
    }
}

/// The DQN agent as an expert: the output computed on the CNN's same-step hidden states.
pub struct DqnExpert {
    name: String,
    cnn: String,
    shared: Arc<Mutex<Shared>>,
}

fn lock_invalid(log: &InvalidLog) -> MutexGuard<'_, InvalidSteps> {
    log.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// The two experts over one inference core; `has_order_book = false` (kline replay) validates
/// under [`ValidationPolicy::Klines`] on the CNN's timeframe (see the module docs).
pub fn model_experts(
    core: InferenceCore,
    input_cfg: InputConfig,
    has_order_book: bool,
    see_last_predictions: bool,
) -> (CnnExpert, DqnExpert) {
    let policy = if has_order_book {
        ValidationPolicy::Live
    } else {
        ValidationPolicy::Klines {
            base: core.cnn.net.config().timeframe,
        }
    };
    model_experts_with(core, input_cfg, policy, see_last_predictions)
}

/// [`model_experts`] under an explicit validation policy.
pub fn model_experts_with(
    core: InferenceCore,
    input_cfg: InputConfig,
    policy: ValidationPolicy,
    see_last_predictions: bool,
) -> (CnnExpert, DqnExpert) {
    let (cnn, dqn) = core.names.clone();
    let shared = Arc::new(Mutex::new(Shared {
        core,
        policy,
        invalid: InvalidLog::default(),
        input_cfg,
        see_last_predictions,
        pending: BTreeMap::new(),
        prefetched: BTreeMap::new(),
        positions: BTreeMap::new(),
    }));
    (
        CnnExpert {
            name: cnn.clone(),
            shared: Arc::clone(&shared),
        },
        DqnExpert {
            name: dqn,
            cnn,
            shared,
        },
    )
}

impl Expert for CnnExpert {
    fn name(&self) -> &str {
        &self.name
    }

    fn uses_last_predictions(&self) -> bool {
        lock(&self.shared).see_last_predictions
    }

    fn infer(&mut self, input: &BaseDataInput, _: &Upstream) -> Result<ModelOutput, ExpertError> {
        lock(&self.shared)
            .infer_cnn(&[input])
            .pop()
            .unwrap_or_else(|| Err(ExpertError::Model("no answer".into())))
    }

    fn infer_batch(
        &mut self,
        steps: &[(&BaseDataInput, &Upstream)],
    ) -> Vec<Result<ModelOutput, ExpertError>> {
        let inputs: Vec<&BaseDataInput> = steps.iter().map(|(i, _)| *i).collect();
        lock(&self.shared).infer_cnn(&inputs)
    }

    fn prefetch(&mut self, inputs: &[&BaseDataInput]) {
        lock(&self.shared).prefetch(inputs);
    }

    fn observe_position(&mut self, symbol: &str, direction: i8) {
        lock(&self.shared)
            .positions
            .insert(symbol.to_string(), direction);
    }
}

impl Expert for DqnExpert {
    fn name(&self) -> &str {
        &self.name
    }

    fn depends_on(&self) -> Vec<String> {
        vec![self.cnn.clone()]
    }

    fn uses_last_predictions(&self) -> bool {
        lock(&self.shared).see_last_predictions
    }

    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        if !upstream.contains_key(&self.cnn) {
            return Err(ExpertError::MissingUpstream {
                needs: self.cnn.clone(),
            });
        }
        lock(&self.shared)
            .pending
            .remove(&(input.symbol.clone(), input.timestamp_ms))
            .unwrap_or_else(|| {
                Err(ExpertError::MissingUpstream {
                    needs: self.cnn.clone(),
                })
            })
    }
}

/// How each walk-forward fold trains its models: small and bounded, seeded the same for every
/// fold so a fold's weights depend on its train window only.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldTraining {
    /// Frames of each series the CNN reads.
    pub window: usize,
    /// Maximum CNN epochs (early stopping may end sooner).
    pub cnn_epochs: usize,
    /// DQN episodes in its trading environment.
    pub dqn_episodes: usize,
    /// Steps per DQN episode.
    pub episode_len: usize,
    /// Seed of libtorch, the CNN's shuffling and the DQN's sampling.
    pub seed: u64,
    /// `model_name` of the CNN's and the DQN's outputs.
    pub names: (String, String),
}

/// Why a fold's models could not be trained.
#[derive(Debug, thiserror::Error)]
pub enum FoldTrainError {
    /// The candle interval is not a model timeframe.
    #[error("candle interval {0} ms is not 1s, 1m, 1h or 1d")]
    Interval(i64),
    /// Samples could not be built from the candles.
    #[error("samples: {0}")]
    Dataset(#[from] DatasetError),
    /// The CNN could not be trained (e.g. too few rows in the window).
    #[error("cnn: {0}")]
    Cnn(#[from] TrainError),
    /// The DQN's environment could not be built.
    #[error("dqn environment: {0}")]
    Env(#[from] EnvError),
    /// The DQN could not be built.
    #[error("dqn: {0}")]
    Agent(#[from] DqnError),
    /// libtorch refused.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// What one fold's training produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldModels {
    /// Fold number, from 0.
    pub fold: usize,
    /// Candles in the train window.
    pub candles: usize,
    /// Sample rows the models trained on.
    pub rows: usize,
    /// CNN epochs run and the epoch kept.
    pub cnn_epochs: (usize, usize),
    /// CNN validation loss (on the window's latest rows).
    pub cnn_val_loss: f64,
    /// DQN learning steps.
    pub dqn_updates: u64,
    /// SHA-256 (hex, first 16 digits) of the CNN's weights.
    pub cnn_digest: String,
    /// SHA-256 (hex, first 16 digits) of the DQN's weights.
    pub dqn_digest: String,
}

impl std::fmt::Display for FoldModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trained on {} candles ({} rows): CNN {} epochs (kept {}), val loss {:.4}, weights {}; \
             DQN {} updates, weights {}",
            self.candles,
            self.rows,
            self.cnn_epochs.0,
            self.cnn_epochs.1,
            self.cnn_val_loss,
            self.cnn_digest,
            self.dqn_updates,
            self.dqn_digest
        )
    }
}

/// SHA-256 of every variable of `vs` (by name, values as little-endian f32), first 16 hex
/// digits: equal digests mean equal weights.
pub fn weights_digest(vs: &tch::nn::VarStore) -> String {
    use sha2::{Digest, Sha256};
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in vars {
        h.update(name.as_bytes());
        let flat = t
            .to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Float)
            .contiguous()
            .view([-1]);
        for x in Vec::<f32>::try_from(&flat).unwrap_or_default() {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Trains a fresh CNN on `candles` (`interval_ms` apart) and then the DQN in its trading
/// environment on the CNN's hidden states of the same rows; both only ever see `candles`.
/// Seeds libtorch's process-wide generator: reproducible unless another thread draws from it
/// meanwhile.
pub fn train_models(
    symbol: &str,
    candles: &[Candle],
    interval_ms: i64,
    t: &FoldTraining,
    input_cfg: &InputConfig,
    device: Device,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<(InferenceCore, FoldModels), FoldTrainError> {
    let base = Timeframe::ALL
        .into_iter()
        .find(|tf| tf.millis() == interval_ms)
        .ok_or(FoldTrainError::Interval(interval_ms))?;
    tch::manual_seed(t.seed as i64);
    let mut cnn = CnnModel::new(
        CnnConfig {
            timeframe: base,
            ..CnnConfig::small(InputShape::encoded(t.window))
        },
        device,
    );
    let ds = CnnDataset::build(symbol, candles, &[], &DatasetConfig::new(base, t.window))?;
    let report = train_cnn(
        &mut cnn,
        &ds,
        &CnnTrainConfig {
            epochs: t.cnn_epochs,
            seed: t.seed,
            ..CnnTrainConfig::default()
        },
        progress,
    )?;
    let spec = spec_for(&cnn.net.config());
    let f = rl_features(&ds, Some(&cnn));
    let mut env = TradingEnv::new(f.prices, f.rows, f.dim, EnvConfig::default())?;
    let rows = env.len();
    let steps = (t.dqn_episodes * t.episode_len) as u64;
    let mut dqn = DqnAgent::new(agent_config(&spec, steps, t.seed), device)?;
    let rl = train_dqn(
        &mut dqn,
        &mut env,
        0..rows,
        &RlTrainConfig {
            episodes: t.dqn_episodes,
            episode_len: t.episode_len,
            learn_every: 1,
            seed: t.seed,
        },
        progress,
    );
    let record = FoldModels {
        fold: 0,
        candles: candles.len(),
        rows: ds.len(),
        cnn_epochs: (report.epochs_run, report.best_epoch),
        cnn_val_loss: report.validation.loss,
        dqn_updates: rl.updates,
        cnn_digest: weights_digest(&cnn.vs),
        dqn_digest: weights_digest(&dqn.vs),
    };
    let core = InferenceCore::new(cnn, dqn, spec, t.names.clone(), input_cfg.clone());
    Ok((core, record))
}

/// An independent copy of `core`'s weights (each backtest run gets its own experts).
pub fn copy_core(
    core: &InferenceCore,
    input_cfg: &InputConfig,
) -> Result<InferenceCore, FoldTrainError> {
    let device = core.cnn.vs.device();
    let mut cnn = CnnModel::new(core.cnn.net.config(), device);
    cnn.copy_weights_from(&core.cnn.vs)?;
    let mut dqn = DqnAgent::new(*core.dqn.config(), device)?;
    core.dqn.copy_weights_to(&mut dqn.vs)?;
    Ok(InferenceCore::new(
        cnn,
        dqn,
        core.spec,
        core.names.clone(),
        input_cfg.clone(),
    ))
}

/// Walk-forward experts that train the CNN and the DQN on each fold's train window
/// ([`train_models`]) and test with those weights, next to `others()` (e.g. the rule experts).
/// Replayed history has no order book: inputs are validated under
/// [`ValidationPolicy::Klines`] (see the module docs).
pub struct ModelFolds<'a> {
    symbol: String,
    training: FoldTraining,
    input_cfg: InputConfig,
    device: Device,
    others: &'a dyn Fn() -> Vec<Box<dyn Expert>>,
    progress: &'a mut dyn FnMut(usize, &TrainProgress),
    core: Option<InferenceCore>,
    trained: Vec<FoldModels>,
    invalid: Vec<InvalidLog>,
}

impl<'a> ModelFolds<'a> {
    /// Folds of `symbol` trained per `training` on `device`; `progress(fold, step)` follows
    /// the training.
    pub fn new(
        symbol: &str,
        training: FoldTraining,
        input_cfg: InputConfig,
        device: Device,
        others: &'a dyn Fn() -> Vec<Box<dyn Expert>>,
        progress: &'a mut dyn FnMut(usize, &TrainProgress),
    ) -> Self {
        Self {
            symbol: symbol.into(),
            training,
            input_cfg,
            device,
            others,
            progress,
            core: None,
            trained: Vec::new(),
            invalid: Vec::new(),
        }
    }

    /// What each fold trained so far, in fold order.
    pub fn trained(&self) -> &[FoldModels] {
        &self.trained
    }

    /// Steps refused by validation over every fold's test run.
    pub fn invalid_steps(&self) -> InvalidSteps {
        let mut all = InvalidSteps::default();
        for log in &self.invalid {
            all.merge(&log.get());
        }
        all
    }
}

impl FoldExperts for ModelFolds<'_> {
    fn prepare(
        &mut self,
        fold: usize,
        train: &[Candle],
        interval_ms: i64,
    ) -> Result<Option<String>, String> {
        self.core = None;
        let progress = &mut *self.progress;
        let (core, mut record) = train_models(
            &self.symbol,
            train,
            interval_ms,
            &self.training,
            &self.input_cfg,
            self.device,
            &mut |p| progress(fold, p),
        )
        .map_err(|e| e.to_string())?;
        record.fold = fold;
        let note = record.to_string();
        self.trained.push(record);
        self.core = Some(core);
        Ok(Some(note))
    }

    fn experts(&mut self) -> Result<Vec<Box<dyn Expert>>, String> {
        let core = self
            .core
            .as_ref()
            .ok_or_else(|| "no models trained for this fold".to_string())?;
        let copy = copy_core(core, &self.input_cfg).map_err(|e| e.to_string())?;
        let (cnn, dqn) = model_experts(copy, self.input_cfg.clone(), false, false);
        self.invalid.push(cnn.invalid_log());
        let mut all: Vec<Box<dyn Expert>> = vec![Box::new(cnn), Box::new(dqn)];
        all.extend((self.others)());
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::analyze::read_candles;
    use crate::analysis::model_output::ModelOutputStore;
    use crate::orchestrator::coordinator::{Coordinator, RunMode};
    use crate::orchestrator::history::HistoryFeed;

    #[test]
    fn kline_replay_validates_and_skips_invalid_steps_with_their_reason() {
        // The loader refuses unparsable and out-of-order rows and the feed non-positive prices;
        // what still reaches the models is checked here, step by step.
        let path =
            crate::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
        let candles = read_candles(&path).unwrap().candles;
        let mut feed = HistoryFeed::new("BTCUSDT", 60_000, InputConfig::default()).unwrap();
        let store = ModelOutputStore::default();
        let mut inputs: Vec<BaseDataInput> = candles[..420]
            .iter()
            .map(|c| {
                let t = feed.push(c).unwrap();
                feed.input(&store, t)
            })
            .collect();
        // A NaN, times going backwards, a candle from after the input time.
        inputs[410].microstructure.spread_bps = Some(f64::NAN);
        inputs[411].ohlcv[1].swap(150, 151);
        let last = inputs[412].ohlcv[1].last_mut().unwrap();
        last.open_time_ms += 120_000;
        tch::manual_seed(7);
        let core = InferenceCore::fresh(
            CnnConfig {
                timeframe: Timeframe::M1,
                ..CnnConfig::small(InputShape::encoded(64))
            },
            Device::Cpu,
            ("pivot_cnn".into(), "dqn_agent".into()),
            InputConfig::default(),
        )
        .unwrap();
        let (cnn, dqn) = model_experts(core, InputConfig::default(), false, false);
        let log = cnn.invalid_log();
        let experts: Vec<Box<dyn Expert>> = vec![Box::new(cnn), Box::new(dqn)];
        let mut c = Coordinator::new(experts, RunMode::Inline).unwrap();
        let steps: Vec<_> = inputs[90..92]
            .iter()
            .chain(&inputs[408..415])
            .map(|i| c.step(Arc::new(i.clone())))
            .collect();
        // Below 100 one-minute frames the model's series is too short; without a COB the
        // models run; the three broken inputs go to no model.
        let ran: Vec<bool> = steps.iter().map(|s| !s.outputs.is_empty()).collect();
        assert_eq!(
            ran,
            [false, false, true, true, false, false, false, true, true]
        );
        let tally = log.get();
        assert_eq!(tally.count, 5);
        let expect = [
            "ohlcv_1m: expected ≥100 frames, got 91",
            "ohlcv_1m: expected ≥100 frames",
            "microstructure.spread_bps: not finite (NaN)",
            "ohlcv_1m: timestamps not increasing at frame 151",
            "ohlcv_1m last candle close",
        ];
        for (reason, want) in tally.reasons.iter().zip(expect) {
            assert!(reason.contains(want), "{reason:?} lacks {want:?}");
            assert!(!reason.contains("cob"), "{reason}");
        }
    }
}
