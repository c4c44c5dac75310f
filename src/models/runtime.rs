//! The models as live processes: an inference thread that owns the CNN and the DQN for every
//! symbol, and a training thread that takes small online steps on examples labelled by newly
//! confirmed pivots and hands fresh weights to inference without stopping it.
//!
//! Neither thread runs on the tokio reactor: callers send requests over channels
//! ([`ModelRuntime::infer`] blocks on the answer; async callers wrap it in `spawn_blocking`, or
//! use [`ModelRuntime::submit`] and receive later). Both threads start and stop on command
//! ([`ModelRuntime::start`], [`ModelRuntime::stop`]); at start each model loads its best
//! checkpoint (rebuilt with the config it was saved with), and the trainer saves checkpoints
//! periodically, ranked by its prequential pivot loss (the loss on each batch of examples
//! measured before the step that learns from it).
//!
//! One step answers with the CNN's `ModelOutput`, then the DQN's, whose state holds the CNN's
//! predictions and hidden states of that same step (when its checkpoint was trained so).
//! `libtorch` threads are a process-wide setting: the inference thread sets them to
//! [`ModelsConfig::inference_threads`].

use super::checkpoint::{
    CheckpointConfig, CheckpointError, CheckpointManager, CheckpointMeta, DataRange, MetricGoal,
    SkippedCheckpoint, report_skipped,
};
use super::cnn::{CnnConfig, CnnModel, CnnOutput, predictions};
use super::dqn::{DqnAgent, DqnConfig};
use super::input::{Anchor, InputShape, InputShapeError, ModelRows};
use super::online::{InputHistory, OnlineExample, online_step};
use super::online_rl::{DqnTrainer, RlStep, dqn_trainer_loop};
use super::rl_train::{DqnModelConfig, MARKET_RECENT, RlStateSpec, market_features, market_width};
use super::split::CheckpointRef;
use crate::analysis::encoding::{INPUT_LAYOUT_VERSION, encode_validated};
use crate::analysis::input::{BaseDataInput, InputConfig, InputError};
use crate::analysis::model_output::ModelOutput;
use crate::market::types::{Symbol, Timeframe};
use crate::orchestrator::feedback::Feedback;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Tensor};

/// Metric CNN checkpoints are ranked by (lower is better).
pub const CNN_METRIC: &str = "pivot_loss";
/// Metric DQN checkpoints are ranked by (higher is better).
pub const DQN_METRIC: &str = "held_out_return";
/// Recent inputs kept per symbol for online labelling.
const HISTORY_PER_SYMBOL: usize = 4_096;

/// `[models]`: where the models run, where their checkpoints live, how they learn online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Device: `auto` (CUDA when present), `cpu` or `cuda:N`.
    pub device: String,
    /// Checkpoint folder; a relative path lies under `[paths] data_dir`.
    pub checkpoint_dir: PathBuf,
    /// Best checkpoints kept per model, 5..=10.
    pub keep_best: usize,
    /// Adam learning rate of the online CNN updates.
    pub online_learning_rate: f64,
    /// libtorch intra-op threads for inference (1 is fastest for single steps).
    pub inference_threads: usize,
    /// CNN name (its checkpoint folder and `model_name` in outputs).
    pub cnn_model: String,
    /// DQN name (its checkpoint folder and `model_name` in outputs).
    pub dqn_model: String,
    /// Frames per series the CNN reads when no checkpoint exists yet.
    pub window: usize,
    /// Online updates between CNN checkpoints (and between online DQN checkpoints).
    pub checkpoint_every: u64,
    /// Adam learning rate of the online DQN updates (learned from its own scored actions).
    pub dqn_learning_rate: f64,
    /// Live transitions the online DQN collects before its first update.
    pub dqn_learn_start: usize,
    /// Transitions per online DQN update.
    pub dqn_batch: usize,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            checkpoint_dir: PathBuf::from("checkpoints"),
            keep_best: 5,
            online_learning_rate: 1e-4,
            inference_threads: 1,
            cnn_model: "pivot_cnn".into(),
            dqn_model: "dqn_agent".into(),
            window: 64,
            checkpoint_every: 200,
            dqn_learning_rate: 1e-4,
            dqn_learn_start: 64,
            dqn_batch: 32,
        }
    }
}

impl ModelsConfig {
    /// The checkpoint folder, relative paths under `data_dir`.
    pub fn checkpoint_path(&self, data_dir: &std::path::Path) -> PathBuf {
        data_dir.join(&self.checkpoint_dir)
    }

    /// Checks value ranges; `Err((key, expected form))` for the first bad key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.device.parse::<super::device::DeviceSpec>().is_err() {
            return Err((
                "models.device",
                format!(
                    "expected \"auto\", \"cpu\" or \"cuda:N\", got {:?}",
                    self.device
                ),
            ));
        }
        if !(5..=10).contains(&self.keep_best) {
            return Err((
                "models.keep_best",
                format!("expected an integer in 5..=10, got {}", self.keep_best),
            ));
        }
        if !(self.online_learning_rate.is_finite() && self.online_learning_rate > 0.0) {
            return Err((
                "models.online_learning_rate",
                format!(
                    "expected a positive number, got {}",
                    self.online_learning_rate
                ),
            ));
        }
        if !(1..=64).contains(&self.inference_threads) {
            return Err((
                "models.inference_threads",
                format!(
                    "expected an integer in 1..=64, got {}",
                    self.inference_threads
                ),
            ));
        }
        if !(8..=crate::analysis::input::FRAMES).contains(&self.window) {
            return Err((
                "models.window",
                format!("expected an integer in 8..=300, got {}", self.window),
            ));
        }
        if !(self.dqn_learning_rate.is_finite() && self.dqn_learning_rate > 0.0) {
            return Err((
                "models.dqn_learning_rate",
                format!("expected a positive number, got {}", self.dqn_learning_rate),
            ));
        }
        if !(1..=4_096).contains(&self.dqn_batch) {
            return Err((
                "models.dqn_batch",
                format!("expected an integer in 1..=4096, got {}", self.dqn_batch),
            ));
        }
        if self.dqn_learn_start < self.dqn_batch {
            return Err((
                "models.dqn_learn_start",
                format!(
                    "expected an integer ≥ dqn_batch ({}), got {}",
                    self.dqn_batch, self.dqn_learn_start
                ),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(("models.checkpoint_every", "expected at least 1".into()));
        }
        for (key, name) in [
            ("models.cnn_model", &self.cnn_model),
            ("models.dqn_model", &self.dqn_model),
        ] {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.');
            if !ok {
                return Err((
                    key,
                    format!("expected letters, digits, '-', '_' or '.', got {name:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// Runtime settings: the `[models]` section plus the input validation rules.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// `[models]`.
    pub models: ModelsConfig,
    /// How inputs are validated before inference.
    pub input: InputConfig,
}

impl From<ModelsConfig> for RuntimeConfig {
    fn from(models: ModelsConfig) -> Self {
        Self {
            models,
            input: InputConfig::default(),
        }
    }
}

/// One inference request.
#[derive(Debug, Clone)]
pub struct InferenceRequest {
    /// Symbol the input is about.
    pub symbol: Symbol,
    /// Time of the step, ms since the epoch (stamped on the outputs).
    pub t_ms: i64,
    /// The model input (validated here before inference).
    pub input: BaseDataInput,
    /// Current position for the DQN's state: −1 short, 0 flat, 1 long.
    pub position: i8,
}

/// Why the runtime could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The input was refused.
    #[error(transparent)]
    Step(#[from] StepError),
    /// The threads are not running (call `start`).
    #[error("model runtime is stopped")]
    Stopped,
    /// The device string was rejected.
    #[error("device: {0}")]
    Device(#[from] super::device::DeviceError),
    /// A checkpoint folder could not be read.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// libtorch refused (building a model or an optimizer).
    #[error("libtorch: {0}")]
    Torch(String),
    /// A thread could not be started.
    #[error("starting the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Why one request of a step got no outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The input failed validation.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The encoded input does not fit the model.
    #[error(transparent)]
    Shape(#[from] InputShapeError),
}

/// A checkpoint a model is running with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointInUse {
    /// `<model>/<id>`.
    pub name: String,
    /// Ranking metric name.
    pub metric_name: String,
    /// Its value.
    pub metric: f64,
}

impl From<&CheckpointMeta> for CheckpointInUse {
    fn from(m: &CheckpointMeta) -> Self {
        Self {
            name: format!("{}/{}", m.model_name, m.id),
            metric_name: m.metric_name.clone(),
            metric: m.metric(),
        }
    }
}

/// What the screen shows about the models.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RuntimeStatus {
    /// Inference thread running.
    pub inference_running: bool,
    /// Training thread running.
    pub training_running: bool,
    /// Device the models run on.
    pub device: String,
    /// Wall time of the last inference step (all requests of one call).
    pub last_inference_latency: Option<Duration>,
    /// Requests answered.
    pub inference_steps: u64,
    /// Online update steps taken.
    pub training_steps: u64,
    /// Loss of the last online step.
    pub last_loss: Option<f64>,
    /// Online examples received.
    pub examples_received: u64,
    /// Weight hand-offs adopted by inference.
    pub weights_adopted: u64,
    /// CNN checkpoint in use (None: fresh weights).
    pub cnn_checkpoint: Option<CheckpointInUse>,
    /// DQN checkpoint in use (None: fresh weights).
    pub dqn_checkpoint: Option<CheckpointInUse>,
    /// Checkpoints passed over at the last load (another input layout, corrupt, ...).
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
    /// Last error seen by a thread (checkpoint save, ...).
    pub last_error: Option<String>,
    /// Online DQN learning steps taken (the trainer's agent, checkpoint included).
    pub dqn_training_steps: u64,
    /// Loss of the last online DQN step.
    pub dqn_last_loss: Option<f64>,
    /// Transitions in the online DQN's replay buffer.
    pub dqn_replay_len: usize,
    /// Live transitions completed from scored DQN actions.
    pub dqn_transitions: u64,
    /// Scored DQN actions that became no transition (no state recorded: learning was off).
    pub dqn_feedback_unmatched: u64,
    /// The newest live transition.
    pub dqn_last_transition: Option<super::online_rl::TransitionSummary>,
    /// DQN weight hand-offs adopted by inference.
    pub dqn_weights_adopted: u64,
    /// Online DQN checkpoints written.
    pub dqn_checkpoints_saved: u64,
    /// The last DQN checkpoint written (removed at once when it ranked below the kept ones).
    pub dqn_last_saved: Option<CheckpointInUse>,
    /// The CNN's scored predictions (pivots and actions) from the orchestrator's feedback.
    pub cnn_feedback: super::online_rl::FeedbackTally,
    /// The DQN's scored actions from the orchestrator's feedback.
    pub dqn_feedback: super::online_rl::FeedbackTally,
}

/// The CNN and the DQN with everything one inference step needs; no threads. The runtime's
/// inference thread owns one; backtests and benchmarks may use one directly.
#[derive(Debug)]
pub struct InferenceCore {
    /// The CNN.
    pub cnn: CnnModel,
    /// The DQN agent (greedy decisions only here).
    pub dqn: DqnAgent,
    /// The DQN's state layout.
    pub spec: RlStateSpec,
    /// `model_name` of the CNN's and the DQN's outputs.
    pub names: (String, String),
    input_cfg: InputConfig,
    metadata: (BTreeMap<String, String>, BTreeMap<String, String>),
}

/// The state spec a DQN fed by `cnn` uses.
pub fn spec_for(cnn: &CnnConfig) -> RlStateSpec {
    RlStateSpec {
        timeframe: cnn.timeframe,
        recent: MARKET_RECENT,
        cnn_features: cnn.state_features(),
    }
}

impl InferenceCore {
    /// Wraps loaded models; `spec` must match the DQN's state width.
    pub fn new(
        cnn: CnnModel,
        dqn: DqnAgent,
        spec: RlStateSpec,
        names: (String, String),
        input_cfg: InputConfig,
    ) -> Self {
        Self {
            cnn,
            dqn,
            spec,
            names,
            input_cfg,
            metadata: Default::default(),
        }
    }

    /// Fresh models (seeded by the caller through `tch::manual_seed`) for `cnn_cfg`.
    pub fn fresh(
        cnn_cfg: CnnConfig,
        device: Device,
        names: (String, String),
        input_cfg: InputConfig,
    ) -> Result<Self, RuntimeError> {
        let cnn = CnnModel::new(cnn_cfg, device);
        let spec = spec_for(&cnn_cfg);
        let dqn = DqnAgent::new(DqnConfig::new(spec.state_dim()), device)
            .map_err(|e| RuntimeError::Torch(e.to_string()))?;
        Ok(Self::new(cnn, dqn, spec, names, input_cfg))
    }

    /// Sets the metadata stamped on each model's outputs.
    pub fn set_metadata(&mut self, cnn: BTreeMap<String, String>, dqn: BTreeMap<String, String>) {
        self.metadata = (cnn, dqn);
    }

    /// Validates and encodes every request, runs the CNN on the valid ones as one batch and
    /// the DQN on the CNN's outputs, and answers `[cnn, dqn]` outputs per request. The
    /// encoded inputs and anchors are returned for online labelling.
    pub fn run(&self, reqs: &[InferenceRequest]) -> Vec<Result<Step, StepError>> {
        let shape = self.cnn.net.config().input;
        let tf = self.cnn.net.config().timeframe;
        let mut rows = ModelRows::new(shape);
        let mut market = Vec::new();
        let mut answers: Vec<Result<Step, StepError>> = Vec::with_capacity(reqs.len());
        let mut valid = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            match encode_validated(&r.input, &self.input_cfg) {
                Ok(enc) => {
                    if let Err(e) = rows.push(&enc) {
                        answers.push(Err(e.into()));
                        continue;
                    }
                    market.extend(market_features(&enc, self.spec.timeframe, self.spec.recent));
                    valid.push(i);
                    answers.push(Ok(Step {
                        outputs: Vec::new(),
                        anchor: Anchor::of(&r.input, tf),
                        series: Vec::new(),
                        context: Vec::new(),
                        state: Vec::new(),
                    }));
                }
                Err(e) => answers.push(Err(e.into())),
            }
        }
        if valid.is_empty() {
            return answers;
        }
        let device = self.cnn.vs.device();
        let out: CnnOutput = self.cnn.infer(&rows.all(device));
        let preds = predictions(&out);
        let n = valid.len() as i64;
        let md = market_width(self.spec.recent);
        let mut parts = vec![
            Tensor::from_slice(&market)
                .view([n, md as i64])
                .to_device(device),
        ];
        if self.spec.cnn_features > 0 {
            parts.push(out.state_features().to_device(device));
        }
        let pos: Vec<f32> = valid
            .iter()
            .map(|&i| f32::from(reqs[i].position.clamp(-1, 1)))
            .collect();
        parts.push(Tensor::from_slice(&pos).view([n, 1]).to_device(device));
        let states = Tensor::cat(&parts, 1);
        let decisions = self.dqn.decide_batch(&states);
        // The states as the DQN saw them, kept for its online transitions.
        let state_rows =
            Vec::<f32>::try_from(&states.to_device(Device::Cpu).contiguous().view([-1]))
                .unwrap_or_default();
        let width = state_rows.len() / valid.len();
        for (k, &i) in valid.iter().enumerate() {
            let r = &reqs[i];
            let Ok(step) = &mut answers[i] else { continue };
            let cnn_out = preds[k].to_model_output(
                &self.names.0,
                &r.symbol,
                r.t_ms,
                step.anchor.as_ref(),
                self.metadata.0.clone(),
            );
            let dqn_out = decisions[k].to_model_output(
                &self.names.1,
                &r.symbol,
                r.t_ms,
                self.metadata.1.clone(),
            );
            step.outputs = vec![cnn_out, dqn_out];
            let (s, c) = rows.row(k);
            step.series = s.to_vec();
            step.context = c.to_vec();
            step.state = state_rows
                .get(k * width..(k + 1) * width)
                .map(<[f32]>::to_vec)
                .unwrap_or_default();
        }
        answers
    }
}

/// One answered request: the outputs plus what online labelling keeps of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `[cnn, dqn]` outputs.
    pub outputs: Vec<ModelOutput>,
    /// The input's anchor for the CNN's timeframe.
    pub anchor: Option<Anchor>,
    /// The CNN's series floats of this input.
    pub series: Vec<f32>,
    /// The CNN's context floats of this input.
    pub context: Vec<f32>,
    /// The DQN's state row of this input (market features, CNN features, position).
    pub state: Vec<f32>,
}

type Reply = Sender<Vec<Result<Step, StepError>>>;

enum Job {
    Infer {
        reqs: Vec<InferenceRequest>,
        learn: bool,
        reply: Reply,
    },
}

struct Running {
    jobs: Sender<Job>,
    examples: Sender<Vec<OnlineExample>>,
    inference: JoinHandle<()>,
    trainer: JoinHandle<()>,
    dqn_trainer: JoinHandle<()>,
}

/// What the inference thread hands the trainers at start: copies of the weights it loaded.
struct TrainerSeed {
    cnn: CnnModel,
    dqn: nn::VarStore,
    dqn_config: DqnModelConfig,
}

/// What the threads and the handle share.
#[derive(Debug)]
struct Shared {
    cfg: RuntimeConfig,
    device: Device,
    checkpoint_dir: PathBuf,
    status: Mutex<RuntimeStatus>,
    learning: Arc<AtomicBool>,
    feedback_tx: Sender<Feedback>,
    feedback_rx: Arc<Mutex<Receiver<Feedback>>>,
    alive: AtomicUsize,
}

/// Counts a runtime thread as alive until the thread's closure returns (or unwinds).
struct Alive<'a>(&'a AtomicUsize);

impl<'a> Alive<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The models as two threads; see the module docs.
pub struct ModelRuntime {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for ModelRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRuntime")
            .field("device", &self.shared.device)
            .field("checkpoint_dir", &self.shared.checkpoint_dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ModelRuntime {
    /// Starts both threads on `device` (resolve `ModelsConfig::device` with
    /// `models::device::device_from_config`) with checkpoints under `checkpoint_dir`
    /// (`ModelsConfig::checkpoint_path`).
    pub fn spawn(
        cfg: impl Into<RuntimeConfig>,
        device: Device,
        checkpoint_dir: PathBuf,
    ) -> Result<Self, RuntimeError> {
        let rt = Self {
            shared: Arc::new(Shared::new(cfg.into(), device, checkpoint_dir)),
            running: Mutex::new(None),
        };
        rt.start()?;
        Ok(rt)
    }
}

impl Shared {
    fn new(cfg: RuntimeConfig, device: Device, checkpoint_dir: PathBuf) -> Self {
        // The feedback channel outlives restarts: the orchestrator registers its sender once.
        let (feedback_tx, feedback_rx) = mpsc::channel();
        Self {
            cfg,
            device,
            checkpoint_dir,
            status: Mutex::new(RuntimeStatus {
                device: format!("{device:?}"),
                ..Default::default()
            }),
            learning: Arc::new(AtomicBool::new(true)),
            feedback_tx,
            feedback_rx: Arc::new(Mutex::new(feedback_rx)),
            alive: AtomicUsize::new(0),
        }
    }

    fn manager(
        &self,
        name: &str,
        metric: &str,
        goal: MetricGoal,
    ) -> Result<CheckpointManager, CheckpointError> {
        CheckpointManager::new(CheckpointConfig {
            root: self.checkpoint_dir.clone(),
            model_name: name.to_string(),
            keep: self.cfg.models.keep_best,
            metric: metric.to_string(),
            goal,
        })
    }

    /// Loads the best checkpoints (or fresh weights) into an inference core.
    fn load_core(&self) -> Result<(InferenceCore, CnnModel, LoadedMetas), RuntimeError> {
        let m = &self.cfg.models;
        let device = self.device;
        let cnn_ck = self.manager(&m.cnn_model, CNN_METRIC, MetricGoal::Minimize)?;
        let got = cnn_ck.load_best_model(
            |c: CnnConfig| {
                if c.input != InputShape::encoded(c.input.window) {
                    return Err(format!("input shape {:?} is not this layout's", c.input));
                }
                // Live data are 1s/1m/1h/1d candles and 1 s reference candles: a CNN trained
                // on 5m or 4h series would read them as something they are not.
                if let Some(l) = c.layout.filter(|l| !l.is_standard()) {
                    return Err(format!(
                        "trained on the input layout ({l}), not the live 1s/1m/1h/1d series"
                    ));
                }
                c.check()?;
                Ok(CnnModel::new(c, device))
            },
            |m: &mut CnnModel| &mut m.vs,
        )?;
        let mut skipped = report_skipped(&m.cnn_model, &got.skipped);
        let (cnn, cnn_meta) = match got.loaded {
            Some((model, meta)) => (model, Some(meta)),
            None => {
                let mut c = CnnConfig::small(InputShape::encoded(m.window));
                c.timeframe = Timeframe::M1;
                (CnnModel::new(c, device), None)
            }
        };
        let spec = spec_for(&cnn.net.config());
        let dqn_ck = self.manager(&m.dqn_model, DQN_METRIC, MetricGoal::Maximize)?;
        // A DQN that records the CNN it learned from runs only beside that CNN: its state
        // holds that CNN's features. DQNs that record none (online, older builds) still load.
        let in_use = cnn_meta.as_ref().map(|c| CheckpointRef {
            model: c.model_name.clone(),
            id: c.id.clone(),
        });
        let got = dqn_ck.load_best_model_where(
            |meta| match &meta.lineage.cnn {
                Some(c) if Some(c) != in_use.as_ref() => Err(format!(
                    "trained with CNN checkpoint {c}, not beside {}",
                    in_use
                        .as_ref()
                        .map_or_else(|| "fresh CNN weights".to_string(), ToString::to_string)
                )),
                _ => Ok(()),
            },
            |c: DqnModelConfig| {
                if c.state != spec {
                    return Err(format!(
                        "state {:?} does not fit the CNN's {spec:?}",
                        c.state
                    ));
                }
                DqnAgent::new(c.agent, device).map_err(|e| e.to_string())
            },
            |a: &mut DqnAgent| &mut a.vs,
        )?;
        skipped.extend(report_skipped(&m.dqn_model, &got.skipped));
        let (dqn, dqn_meta) = match got.loaded {
            Some((agent, meta)) => (agent, Some(meta)),
            None => (
                DqnAgent::new(DqnConfig::new(spec.state_dim()), device)
                    .map_err(|e| RuntimeError::Torch(e.to_string()))?,
                None,
            ),
        };
        let meta = |ck: &Option<CheckpointMeta>| {
            BTreeMap::from([
                (
                    "input_layout_version".to_string(),
                    INPUT_LAYOUT_VERSION.to_string(),
                ),
                (
                    "checkpoint".to_string(),
                    ck.as_ref()
                        .map_or_else(|| "none".to_string(), |c| c.id.clone()),
                ),
            ])
        };
        let mut core = InferenceCore::new(
            cnn,
            dqn,
            spec,
            (m.cnn_model.clone(), m.dqn_model.clone()),
            self.cfg.input.clone(),
        );
        core.set_metadata(meta(&cnn_meta), meta(&dqn_meta));
        let mut copy = CnnModel::new(core.cnn.net.config(), device);
        copy.copy_weights_from(&core.cnn.vs)
            .map_err(|e| RuntimeError::Torch(e.to_string()))?;
        {
            let mut s = lock(&self.status);
            s.cnn_checkpoint = cnn_meta.as_ref().map(CheckpointInUse::from);
            s.dqn_checkpoint = dqn_meta.as_ref().map(CheckpointInUse::from);
            s.skipped_checkpoints = skipped;
        }
        Ok((core, copy, (cnn_meta, dqn_meta)))
    }
}

/// What [`InferenceCore::load_best_report`] loaded.
pub struct BestLoad {
    /// The core, fresh weights where a model has no usable checkpoint.
    pub core: InferenceCore,
    /// CNN checkpoint in use.
    pub cnn: Option<CheckpointInUse>,
    /// DQN checkpoint in use.
    pub dqn: Option<CheckpointInUse>,
    /// Checkpoints passed over, with the reason.
    pub skipped: Vec<SkippedCheckpoint>,
    /// The CNN checkpoint's metadata (training range and lineage), when one loaded.
    pub cnn_meta: Option<CheckpointMeta>,
    /// The DQN checkpoint's metadata, when one loaded.
    pub dqn_meta: Option<CheckpointMeta>,
}

/// The metadata of the CNN and DQN checkpoints a load used.
type LoadedMetas = (Option<CheckpointMeta>, Option<CheckpointMeta>);

impl InferenceCore {
    /// The best CNN and DQN checkpoints under `checkpoint_dir`, exactly as the runtime loads
    /// them at start (fresh weights where a model has none), with the checkpoints used.
    pub fn load_best(
        models: &ModelsConfig,
        input: &InputConfig,
        device: Device,
        checkpoint_dir: PathBuf,
    ) -> Result<(Self, Option<CheckpointInUse>, Option<CheckpointInUse>), RuntimeError> {
        let best = Self::load_best_report(models, input, device, checkpoint_dir)?;
        Ok((best.core, best.cnn, best.dqn))
    }

    /// [`Self::load_best`] that also says which checkpoints were passed over and why.
    pub fn load_best_report(
        models: &ModelsConfig,
        input: &InputConfig,
        device: Device,
        checkpoint_dir: PathBuf,
    ) -> Result<BestLoad, RuntimeError> {
        let shared = Shared::new(
            RuntimeConfig {
                models: models.clone(),
                input: input.clone(),
            },
            device,
            checkpoint_dir,
        );
        let (core, _, (cnn_meta, dqn_meta)) = shared.load_core()?;
        let s = lock(&shared.status);
        Ok(BestLoad {
            core,
            cnn: s.cnn_checkpoint.clone(),
            dqn: s.dqn_checkpoint.clone(),
            skipped: s.skipped_checkpoints.clone(),
            cnn_meta,
            dqn_meta,
        })
    }
}

impl ModelRuntime {
    /// Starts both threads (a no-op when running): loads the best checkpoints first.
    pub fn start(&self) -> Result<(), RuntimeError> {
        let mut running = lock(&self.running);
        if running.is_some() {
            return Ok(());
        }
        let (core_tx, core_rx) = mpsc::channel::<Result<(), RuntimeError>>();
        let (trainer_tx, trainer_rx) = mpsc::channel::<TrainerSeed>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ex_tx, ex_rx) = mpsc::channel::<Vec<OnlineExample>>();
        let (w_tx, w_rx) = mpsc::channel::<CnnModel>();
        let (rl_tx, rl_rx) = mpsc::channel::<RlStep>();
        let (dw_tx, dw_rx) = mpsc::channel::<nn::VarStore>();
        // Models are built inside the thread that uses them; the trainer gets a copy of the
        // inference CNN's starting weights.
        let this = Arc::clone(&self.shared);
        let ex_for_inference = ex_tx.clone();
        let inference = std::thread::Builder::new()
            .name("mmtrader-inference".into())
            .spawn(move || {
                let _alive = Alive::new(&this.alive);
                tch::set_num_threads(this.cfg.models.inference_threads as i32);
                match this.load_core().and_then(|(core, cnn, _)| {
                    let dqn = core
                        .dqn
                        .weights_snapshot()
                        .map_err(|e| RuntimeError::Torch(e.to_string()))?;
                    let dqn_config = DqnModelConfig {
                        agent: *core.dqn.config(),
                        state: core.spec,
                    };
                    Ok((
                        core,
                        TrainerSeed {
                            cnn,
                            dqn,
                            dqn_config,
                        },
                    ))
                }) {
                    Ok((core, seed)) => {
                        let _ = trainer_tx.send(seed);
                        let _ = core_tx.send(Ok(()));
                        let channels = InferenceChannels {
                            jobs: jobs_rx,
                            cnn_weights: w_rx,
                            dqn_weights: dw_rx,
                            examples: ex_for_inference,
                            rl_steps: rl_tx,
                            learning: Arc::clone(&this.learning),
                        };
                        inference_loop(core, channels, &this.status);
                    }
                    Err(e) => {
                        let _ = core_tx.send(Err(e));
                    }
                }
            })
            .map_err(|source| RuntimeError::Spawn {
                what: "inference",
                source,
            })?;
        match core_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = inference.join();
                return Err(e);
            }
            Err(_) => {
                let _ = inference.join();
                return Err(RuntimeError::Torch(
                    "inference thread ended while loading".into(),
                ));
            }
        }
        let Ok(seed) = trainer_rx.recv() else {
            return Err(RuntimeError::Torch(
                "no model copies for the trainers".into(),
            ));
        };
        let model = seed.cnn;
        let sh = &self.shared;
        let ck = sh.manager(&sh.cfg.models.cnn_model, CNN_METRIC, MetricGoal::Minimize)?;
        let lr = sh.cfg.models.online_learning_rate;
        let every = sh.cfg.models.checkpoint_every;
        let shared = Arc::clone(sh);
        let trainer = std::thread::Builder::new()
            .name("mmtrader-online-training".into())
            .spawn(move || {
                let _alive = Alive::new(&shared.alive);
                trainer_loop(model, lr, every, ck, ex_rx, w_tx, &shared.status);
            })
            .map_err(|source| RuntimeError::Spawn {
                what: "training",
                source,
            })?;
        let dqn_trainer = self.spawn_dqn_trainer(seed.dqn, seed.dqn_config, rl_rx, dw_tx)?;
        {
            let mut s = lock(&self.shared.status);
            s.inference_running = true;
            s.training_running = true;
        }
        *running = Some(Running {
            jobs: jobs_tx,
            examples: ex_tx,
            inference,
            trainer,
            dqn_trainer,
        });
        Ok(())
    }

    /// Starts the online DQN trainer from the inference DQN's weights, with the online
    /// learning settings of `[models]` over the agent's own config.
    fn spawn_dqn_trainer(
        &self,
        weights: nn::VarStore,
        loaded: DqnModelConfig,
        steps: Receiver<RlStep>,
        handoff: Sender<nn::VarStore>,
    ) -> Result<JoinHandle<()>, RuntimeError> {
        let sh = &self.shared;
        let m = &sh.cfg.models;
        let agent_cfg = DqnConfig {
            lr: m.dqn_learning_rate,
            learn_start: m.dqn_learn_start,
            batch: m.dqn_batch,
            ..loaded.agent
        };
        let checkpoints = sh.manager(&m.dqn_model, DQN_METRIC, MetricGoal::Maximize)?;
        let names = (m.cnn_model.clone(), m.dqn_model.clone());
        let (feedback, learning) = (Arc::clone(&sh.feedback_rx), Arc::clone(&sh.learning));
        let every = m.checkpoint_every;
        let shared = Arc::clone(sh);
        let device = sh.device;
        std::thread::Builder::new()
            .name("mmtrader-online-dqn".into())
            .spawn(move || {
                let _alive = Alive::new(&shared.alive);
                let agent = DqnAgent::new(agent_cfg, device).and_then(|mut a| {
                    a.load_weights(&weights)?;
                    a.sync_target()?;
                    Ok(a)
                });
                let agent = match agent {
                    Ok(a) => a,
                    Err(e) => {
                        lock(&shared.status).last_error = Some(format!("online DQN: {e}"));
                        return;
                    }
                };
                let trainer = DqnTrainer {
                    agent,
                    model_config: DqnModelConfig {
                        agent: agent_cfg,
                        state: loaded.state,
                    },
                    names,
                    steps,
                    feedback,
                    learning,
                    weights: handoff,
                    checkpoints,
                    checkpoint_every: every,
                    capacity: HISTORY_PER_SYMBOL,
                };
                dqn_trainer_loop(trainer, &shared.status);
            })
            .map_err(|source| RuntimeError::Spawn {
                what: "DQN training",
                source,
            })
    }

    /// Stops both threads after their queued work; the trainer saves a last checkpoint when it
    /// learned since the previous one. A no-op when stopped.
    pub fn stop(&self) {
        let Some(r) = lock(&self.running).take() else {
            return;
        };
        drop(r.jobs);
        drop(r.examples);
        let _ = r.inference.join();
        let _ = r.trainer.join();
        let _ = r.dqn_trainer.join();
        let mut s = lock(&self.shared.status);
        s.inference_running = false;
        s.training_running = false;
    }

    /// Runtime threads whose work has not returned yet (0 once stopped).
    pub fn live_threads(&self) -> usize {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// True while the threads run.
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    /// Queues requests and returns the receiver of their answers (one per request, in order);
    /// `learn` lets live inputs feed online learning (backtests pass false).
    pub fn submit(
        &self,
        reqs: Vec<InferenceRequest>,
        learn: bool,
    ) -> Result<Receiver<Vec<Result<Step, StepError>>>, RuntimeError> {
        let (tx, rx) = mpsc::channel();
        let jobs = lock(&self.running)
            .as_ref()
            .map(|r| r.jobs.clone())
            .ok_or(RuntimeError::Stopped)?;
        jobs.send(Job::Infer {
            reqs,
            learn,
            reply: tx,
        })
        .map_err(|_| RuntimeError::Stopped)?;
        Ok(rx)
    }

    /// One live step: the CNN's then the DQN's output for the request (blocks until answered).
    /// The input also feeds online learning.
    pub fn infer(&self, req: InferenceRequest) -> Result<Vec<ModelOutput>, RuntimeError> {
        let rx = self.submit(vec![req], true)?;
        let mut answers = rx.recv().map_err(|_| RuntimeError::Stopped)?;
        match answers.pop() {
            Some(Ok(step)) => Ok(step.outputs),
            Some(Err(e)) => Err(RuntimeError::Step(e)),
            None => Err(RuntimeError::Stopped),
        }
    }

    /// Many inputs in one batch (backtests): per request the outputs or why its input was
    /// refused; the same outputs as one-by-one inference. Does not feed online learning.
    pub fn infer_batch(
        &self,
        reqs: Vec<InferenceRequest>,
    ) -> Result<Vec<Result<Vec<ModelOutput>, StepError>>, RuntimeError> {
        let rx = self.submit(reqs, false)?;
        let answers = rx.recv().map_err(|_| RuntimeError::Stopped)?;
        Ok(answers.into_iter().map(|a| a.map(|s| s.outputs)).collect())
    }

    /// Queues online examples for the trainer; false when stopped.
    pub fn train_on(&self, examples: Vec<OnlineExample>) -> bool {
        lock(&self.running)
            .as_ref()
            .is_some_and(|r| r.examples.send(examples).is_ok())
    }

    /// The sender the orchestrator gives scored predictions of both models to
    /// (`Orchestrator::add_trainer`); valid across stop and start.
    pub fn feedback_sender(&self) -> Sender<Feedback> {
        self.shared.feedback_tx.clone()
    }

    /// Turns online learning (both models' trainers) on or off; inference goes on either way.
    /// Steps submitted with `learn = false` never feed learning whatever this says.
    pub fn set_learning(&self, on: bool) {
        self.shared.learning.store(on, Ordering::SeqCst);
    }

    /// Whether the learning switch is on.
    pub fn is_learning(&self) -> bool {
        self.shared.learning.load(Ordering::SeqCst)
    }

    /// A snapshot for the screen.
    pub fn status(&self) -> RuntimeStatus {
        lock(&self.shared.status).clone()
    }
}

impl Drop for ModelRuntime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The inference thread's channels.
struct InferenceChannels {
    jobs: Receiver<Job>,
    cnn_weights: Receiver<CnnModel>,
    dqn_weights: Receiver<nn::VarStore>,
    examples: Sender<Vec<OnlineExample>>,
    rl_steps: Sender<RlStep>,
    learning: Arc<AtomicBool>,
}

fn inference_loop(mut core: InferenceCore, ch: InferenceChannels, status: &Mutex<RuntimeStatus>) {
    let tf = core.cnn.net.config().timeframe;
    let mut histories: HashMap<Symbol, InputHistory> = HashMap::new();
    while let Ok(Job::Infer { reqs, learn, reply }) = ch.jobs.recv() {
        // Adopt the newest trained weights between steps: a copy, never a wait on training.
        let mut adopted = 0;
        if let Some(m) = ch.cnn_weights.try_iter().last()
            && core.cnn.copy_weights_from(&m.vs).is_ok()
        {
            adopted += 1;
        }
        let mut dqn_adopted = 0;
        if let Some(vs) = ch.dqn_weights.try_iter().last()
            && core.dqn.load_weights(&vs).is_ok()
        {
            dqn_adopted += 1;
        }
        let started = Instant::now();
        let answers = core.run(&reqs);
        let elapsed = started.elapsed();
        let answered = answers.iter().filter(|a| a.is_ok()).count() as u64;
        let mut batch = Vec::new();
        let mut rl = Vec::new();
        if learn && ch.learning.load(Ordering::SeqCst) {
            for (r, a) in reqs.iter().zip(&answers) {
                let Ok(step) = a else { continue };
                let h = histories
                    .entry(r.symbol.clone())
                    .or_insert_with(|| InputHistory::new(HISTORY_PER_SYMBOL, tf));
                batch.extend(h.observe(&r.input));
                if let Some(anchor) = step.anchor {
                    h.push(super::online::RecentInput {
                        t_ms: r.t_ms,
                        series: step.series.clone(),
                        context: step.context.clone(),
                        anchor,
                    });
                }
                rl.push(RlStep {
                    symbol: r.symbol.clone(),
                    t_ms: r.t_ms,
                    data_ms: r.input.timestamp_ms,
                    newest_candle_ms: r
                        .input
                        .ohlcv
                        .iter()
                        .filter_map(|s| s.last().map(|c| c.open_time_ms))
                        .max()
                        .unwrap_or(i64::MIN),
                    state: step.state.clone(),
                    position: r.position.clamp(-1, 1),
                });
            }
        }
        {
            let mut s = lock(status);
            s.last_inference_latency = Some(elapsed);
            s.inference_steps += answered;
            s.weights_adopted += adopted;
            s.dqn_weights_adopted += dqn_adopted;
        }
        // Steps go out before the answer, so feedback on an answer never beats its state.
        for step in rl {
            let _ = ch.rl_steps.send(step);
        }
        let _ = reply.send(answers);
        if !batch.is_empty() {
            let _ = ch.examples.send(batch);
        }
    }
}

fn trainer_loop(
    model: CnnModel,
    lr: f64,
    every: u64,
    ck: CheckpointManager,
    examples: Receiver<Vec<OnlineExample>>,
    weights: Sender<CnnModel>,
    status: &Mutex<RuntimeStatus>,
) {
    let mut opt = match nn::Adam::default().build(&model.vs, lr) {
        Ok(o) => o,
        Err(e) => {
            lock(status).last_error = Some(format!("online optimizer: {e}"));
            return;
        }
    };
    let cfg = model.net.config();
    let mut since_save = 0u64;
    let mut loss_sum = 0.0;
    let mut first_ms = i64::MAX;
    let mut last_ms = i64::MIN;
    let save = |loss: f64, n: u64, range: DataRange, status: &Mutex<RuntimeStatus>| {
        let metrics = BTreeMap::from([
            (CNN_METRIC.to_string(), loss / n.max(1) as f64),
            ("online_updates".to_string(), n as f64),
        ]);
        match ck.save(&model.vs, &cfg, metrics, range) {
            Ok(out) => {
                if out.kept {
                    lock(status).cnn_checkpoint = Some(CheckpointInUse::from(&out.meta));
                }
            }
            Err(e) => lock(status).last_error = Some(format!("saving the CNN: {e}")),
        }
    };
    while let Ok(batch) = examples.recv() {
        for e in &batch {
            first_ms = first_ms.min(e.input.t_ms);
            last_ms = last_ms.max(e.input.t_ms);
        }
        let received = batch.len() as u64;
        // The loss is measured before the step learns from these examples: prequential.
        let Some(loss) = online_step(&model, &mut opt, &batch) else {
            lock(status).examples_received += received;
            continue;
        };
        loss_sum += loss;
        since_save += 1;
        let mut snap = CnnModel::new(cfg, model.vs.device());
        if snap.copy_weights_from(&model.vs).is_ok() {
            let _ = weights.send(snap);
        }
        {
            let mut s = lock(status);
            s.examples_received += received;
            s.training_steps += 1;
            s.last_loss = Some(loss);
        }
        if since_save >= every {
            let range = DataRange {
                start_ms: first_ms,
                end_ms: last_ms,
                // Online examples are input times, not candles of one interval.
                interval_ms: 0,
            };
            save(loss_sum, since_save, range, status);
            since_save = 0;
            loss_sum = 0.0;
        }
    }
    if since_save > 0 {
        let range = DataRange {
            start_ms: first_ms,
            end_ms: last_ms,
            interval_ms: 0,
        };
        save(loss_sum, since_save, range, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::input::SymbolAnalysis;
    use crate::analysis::input::fixture::{T, market};
    use crate::analysis::model_output::ModelOutputStore;
    use crate::models::input::PivotTarget;
    use crate::models::online::RecentInput;

    fn load_config(text: &str) -> Result<crate::config::Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::Config::load_with_env(Some(&path), &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn models_section_has_defaults_and_errors_name_file_key_and_form() {
        let cfg = load_config("").unwrap();
        assert_eq!(cfg.models, ModelsConfig::default());
        assert_eq!(
            cfg.models.checkpoint_path(&cfg.paths.data_dir),
            cfg.paths.data_dir.join("checkpoints")
        );
        let cfg = load_config("[models]\ndevice = \"cpu\"\nkeep_best = 8\n").unwrap();
        assert_eq!(
            (cfg.models.device.as_str(), cfg.models.keep_best),
            ("cpu", 8)
        );
        for (text, expected) in [
            (
                "[models]\nkeep_best = 3\n",
                "models.keep_best`: expected an integer in 5..=10",
            ),
            (
                "[models]\ndevice = \"gpu\"\n",
                "models.device`: expected \"auto\"",
            ),
            (
                "[models]\nonline_learning_rate = -1.0\n",
                "expected a positive number",
            ),
            ("[models]\nwindow = 2\n", "models.window"),
            (
                "[models]\ndqn_learn_start = 2\n",
                "models.dqn_learn_start`: expected an integer ≥ dqn_batch (32), got 2",
            ),
            (
                "[models]\ndqn_learning_rate = 0.0\n",
                "models.dqn_learning_rate",
            ),
            ("[models]\ncnn_model = \"../x\"\n", "models.cnn_model"),
            ("[models]\nspeed = 1\n", "speed"),
        ] {
            let e = load_config(text).unwrap_err();
            assert!(e.contains("config.toml") && e.contains(expected), "{e}");
        }
        // The shipped config.toml's section parses to the defaults.
        let shipped = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml"),
        )
        .unwrap();
        assert_eq!(
            load_config(&shipped).unwrap().models,
            ModelsConfig::default()
        );
    }

    fn input(symbol: &str, t: i64) -> BaseDataInput {
        let m = market([320; 4], true);
        let mut a = SymbolAnalysis::new(symbol, InputConfig::default());
        a.build(&m, &m, &ModelOutputStore::default(), t)
    }

    fn req(symbol: &str, t: i64, position: i8) -> InferenceRequest {
        InferenceRequest {
            symbol: symbol.into(),
            t_ms: t,
            input: input(symbol, t),
            position,
        }
    }

    fn cfg(window: usize) -> ModelsConfig {
        ModelsConfig {
            device: "cpu".into(),
            window,
            checkpoint_every: 2,
            online_learning_rate: 1e-2,
            ..ModelsConfig::default()
        }
    }

    fn runtime(dir: &std::path::Path, window: usize) -> ModelRuntime {
        tch::set_num_threads(1);
        tch::manual_seed(5);
        ModelRuntime::spawn(cfg(window), Device::Cpu, dir.to_path_buf()).unwrap()
    }

    /// Waits (bounded, never measured) until `done` holds for the runtime's status.
    fn wait_for(rt: &ModelRuntime, done: impl Fn(&RuntimeStatus) -> bool) -> RuntimeStatus {
        for _ in 0..6_000 {
            let s = rt.status();
            if done(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "runtime never reached the expected state: {:?}",
            rt.status()
        );
    }

    #[test]
    fn one_step_answers_cnn_then_dqn_outputs_that_validate() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 16);
        let out = rt.infer(req("ETHUSDT", T, 0)).unwrap();
        assert_eq!(out.len(), 2);
        let (cnn, dqn) = (&out[0], &out[1]);
        assert_eq!(
            (cnn.model_type.as_str(), dqn.model_type.as_str()),
            ("cnn", "rl")
        );
        assert_eq!(
            (cnn.model_name.as_str(), dqn.model_name.as_str()),
            ("pivot_cnn", "dqn_agent")
        );
        for o in &out {
            o.validate().unwrap();
            assert_eq!((o.symbol.as_str(), o.timestamp_ms), ("ETHUSDT", T));
            assert_eq!(o.metadata["checkpoint"], "none");
        }
        assert_eq!(cnn.predictions.pivots.len(), 5);
        assert!(
            cnn.predictions
                .pivots
                .iter()
                .all(|p| p.time_ms > T - 60_000)
        );
        assert!(dqn.predictions.q_values.is_some() && dqn.predictions.expected_reward.is_some());
        let s = rt.status();
        assert!(s.inference_running && s.training_running);
        assert_eq!(s.inference_steps, 1);
        assert!(s.last_inference_latency.is_some());
        assert_eq!(s.device, "Cpu");
        assert!(s.cnn_checkpoint.is_none() && s.dqn_checkpoint.is_none());
    }

    #[test]
    fn invalid_inputs_are_refused_with_the_validation_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 16);
        let mut r = req("ETHUSDT", T, 0);
        r.input.ohlcv[2].truncate(10);
        let e = rt.infer(r).unwrap_err().to_string();
        assert!(e.contains("ohlcv_1h: expected ≥100 frames, got 10"), "{e}");
        // Batches answer per request: the bad one fails, the others are served.
        let mut bad = req("BTCUSDT", T, 0);
        bad.input.cob = None;
        let answers = rt.infer_batch(vec![req("ETHUSDT", T, 0), bad]).unwrap();
        assert!(answers[0].is_ok());
        assert!(
            answers[1]
                .as_ref()
                .unwrap_err()
                .to_string()
                .contains("cob: missing")
        );
    }

    #[test]
    fn batched_inference_equals_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 32);
        let reqs = vec![
            req("ETHUSDT", T, 0),
            req("BTCUSDT", T + 1_000, 1),
            req("ETHUSDT", T + 2_000, -1),
        ];
        let batch = rt.infer_batch(reqs.clone()).unwrap();
        for (r, b) in reqs.into_iter().zip(batch) {
            let one = rt.infer_batch(vec![r]).unwrap().remove(0).unwrap();
            let b = b.unwrap();
            for (x, y) in one.iter().zip(&b) {
                let (px, py) = (&x.predictions, &y.predictions);
                // A differing argmax is only right on a tie that rounding can tip either way.
                let (pa, pb) = (
                    px.probabilities.of(px.action),
                    px.probabilities.of(py.action),
                );
                assert!(px.action == py.action || (pa - pb).abs() < 1e-5);
                assert!((x.confidence - y.confidence).abs() < 1e-5);
                for (u, v) in px
                    .probabilities
                    .as_array()
                    .iter()
                    .zip(py.probabilities.as_array())
                {
                    assert!((u - v).abs() < 1e-5);
                }
                if let (Some(qx), Some(qy)) = (px.q_values, py.q_values) {
                    for (u, v) in qx.as_array().iter().zip(qy.as_array()) {
                        assert!((u - v).abs() < 1e-4);
                    }
                }
                for (u, v) in px.pivots.iter().zip(&py.pivots) {
                    assert_eq!((u.level, u.kind, u.time_ms), (v.level, v.kind, v.time_ms));
                    assert!((u.price.to_f64() - v.price.to_f64()).abs() < 1e-3);
                }
                for (k, h) in &x.hidden_states {
                    for (u, v) in h.iter().zip(&y.hidden_states[k]) {
                        assert!((u - v).abs() < 1e-4);
                    }
                }
            }
        }
    }

    #[test]
    fn stop_and_start_by_command() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 16);
        assert!(rt.is_running());
        rt.stop();
        assert!(!rt.is_running());
        let s = rt.status();
        assert!(!s.inference_running && !s.training_running);
        assert!(matches!(
            rt.infer(req("ETHUSDT", T, 0)),
            Err(RuntimeError::Stopped)
        ));
        assert!(!rt.train_on(Vec::new()));
        rt.start().unwrap();
        assert!(rt.is_running() && rt.status().inference_running);
        assert_eq!(rt.infer(req("ETHUSDT", T, 0)).unwrap().len(), 2);
    }

    #[test]
    fn start_loads_the_best_checkpoints_with_their_configs() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(1);
        let mut c = CnnConfig::small(InputShape::encoded(24));
        c.hidden = 16;
        let cnn = CnnModel::new(c, Device::Cpu);
        let mgr = |name: &str, metric: &str, goal| {
            CheckpointManager::new(CheckpointConfig {
                root: dir.path().to_path_buf(),
                model_name: name.into(),
                keep: 5,
                metric: metric.into(),
                goal,
            })
            .unwrap()
        };
        let metrics = |k: &str, v: f64| BTreeMap::from([(k.to_string(), v)]);
        let saved = mgr("pivot_cnn", CNN_METRIC, MetricGoal::Minimize)
            .save(&cnn.vs, &c, metrics(CNN_METRIC, 0.7), DataRange::default())
            .unwrap();
        // A DQN trained for another state layout cannot serve this CNN and is passed over;
        // the one made for it loads.
        let dq = mgr("dqn_agent", DQN_METRIC, MetricGoal::Maximize);
        let spec = spec_for(&c);
        let wrong = RlStateSpec {
            cnn_features: 0,
            ..spec
        };
        for (s, ret) in [(wrong, 0.5), (spec, 0.1)] {
            let agent = DqnAgent::new(DqnConfig::new(s.state_dim()), Device::Cpu).unwrap();
            let mc = DqnModelConfig {
                agent: *agent.config(),
                state: s,
            };
            dq.save(
                &agent.vs,
                &mc,
                metrics(DQN_METRIC, ret),
                DataRange::default(),
            )
            .unwrap();
        }
        let rt = runtime(dir.path(), 64);
        let s = rt.status();
        let ck = s.cnn_checkpoint.unwrap();
        assert_eq!(ck.name, format!("pivot_cnn/{}", saved.meta.id));
        assert_eq!((ck.metric_name.as_str(), ck.metric), (CNN_METRIC, 0.7));
        assert_eq!(s.dqn_checkpoint.unwrap().metric, 0.1);
        let out = rt.infer(req("ETHUSDT", T, 0)).unwrap();
        assert_eq!(out[0].metadata["checkpoint"], saved.meta.id);
        // The saved config (hidden 16) was rebuilt, not the runtime's default sizes.
        assert_eq!(out[0].hidden_states["gru_hidden"].len(), 16);
    }

    #[test]
    fn the_desk_passes_over_a_5m_cnn_and_a_dqn_bound_to_another_cnn() {
        use crate::models::input::{SeriesLayout, TimeScale};
        use crate::models::split::{CheckpointRef, Lineage};
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(2);
        let c = CnnConfig::small(InputShape::encoded(24));
        let cnn = CnnModel::new(c, Device::Cpu);
        let mgr = |name: &str, metric: &str, goal| {
            CheckpointManager::new(CheckpointConfig {
                root: dir.path().to_path_buf(),
                model_name: name.into(),
                keep: 5,
                metric: metric.into(),
                goal,
            })
            .unwrap()
        };
        let metrics = |k: &str, v: f64| BTreeMap::from([(k.to_string(), v)]);
        let cnns = mgr("pivot_cnn", CNN_METRIC, MetricGoal::Minimize);
        // The best CNN was trained on 5 m candles: live data would fill its series otherwise.
        let five = SeriesLayout::of(&TimeScale::new(300_000, 0).unwrap(), None).unwrap();
        let five_min = cnns
            .save(
                &cnn.vs,
                &CnnConfig {
                    layout: Some(five),
                    ..c
                },
                metrics(CNN_METRIC, 0.1),
                DataRange::default(),
            )
            .unwrap();
        let live = cnns
            .save(&cnn.vs, &c, metrics(CNN_METRIC, 0.5), DataRange::default())
            .unwrap();
        // The best DQN learned from another CNN's features; the next one from the live CNN.
        let dq = mgr("dqn_agent", DQN_METRIC, MetricGoal::Maximize);
        let spec = spec_for(&c);
        let mut ids = Vec::new();
        for (cnn_id, ret) in [("someone-else", 0.9), (live.meta.id.as_str(), 0.2)] {
            let agent = DqnAgent::new(DqnConfig::new(spec.state_dim()), Device::Cpu).unwrap();
            let mc = DqnModelConfig {
                agent: *agent.config(),
                state: spec,
            };
            let lineage = Lineage {
                cnn: Some(CheckpointRef {
                    model: "pivot_cnn".into(),
                    id: cnn_id.into(),
                }),
                ..Lineage::default()
            };
            let out = dq
                .save_with(
                    &agent.vs,
                    &mc,
                    metrics(DQN_METRIC, ret),
                    DataRange::default(),
                    lineage,
                )
                .unwrap();
            ids.push(out.meta.id);
        }
        let best = InferenceCore::load_best_report(
            &cfg(24),
            &InputConfig::default(),
            Device::Cpu,
            dir.path().to_path_buf(),
        )
        .unwrap();
        assert_eq!(
            best.cnn.unwrap().name,
            format!("pivot_cnn/{}", live.meta.id)
        );
        assert_eq!(best.dqn.unwrap().name, format!("dqn_agent/{}", ids[1]));
        assert_eq!(best.cnn_meta.unwrap().id, live.meta.id);
        assert_eq!(best.dqn_meta.unwrap().id, ids[1]);
        let reasons: Vec<&str> = best.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert!(
            best.skipped.iter().any(|s| s.id == five_min.meta.id
                && s.reason.contains("not the live 1s/1m/1h/1d series")),
            "{reasons:?}"
        );
        assert!(
            best.skipped.iter().any(|s| s.id == ids[0]
                && s.reason
                    .contains("trained with CNN checkpoint pivot_cnn/someone-else")
                && s.short == "lineage does not fit"),
            "{reasons:?}"
        );
    }

    /// The runtime's CNN checkpoints under `root` (default model name and metric).
    fn cnn_checkpoints(root: &std::path::Path) -> CheckpointManager {
        CheckpointManager::new(CheckpointConfig {
            root: root.to_path_buf(),
            model_name: "pivot_cnn".into(),
            keep: 5,
            metric: CNN_METRIC.into(),
            goal: MetricGoal::Minimize,
        })
        .unwrap()
    }

    #[test]
    fn checkpoints_of_another_layout_are_reported_not_silently_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = CnnConfig::small(InputShape::encoded(24));
        let cnn = CnnModel::new(c, Device::Cpu);
        let saved = cnn_checkpoints(dir.path())
            .save(
                &cnn.vs,
                &c,
                BTreeMap::from([(CNN_METRIC.to_string(), 0.5)]),
                DataRange::default(),
            )
            .unwrap();
        let json = dir
            .path()
            .join("pivot_cnn")
            .join(format!("{}.json", saved.meta.id));
        let mut meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let old = INPUT_LAYOUT_VERSION + 1;
        meta["input_layout_version"] = old.into();
        std::fs::write(&json, meta.to_string()).unwrap();

        let best = InferenceCore::load_best_report(
            &cfg(24),
            &InputConfig::default(),
            Device::Cpu,
            dir.path().to_path_buf(),
        )
        .unwrap();
        assert!(best.cnn.is_none());
        let mismatch = format!("layout v{old} != v{INPUT_LAYOUT_VERSION}");
        let note = crate::models::checkpoint::skipped_note(&best.skipped, "pivot_cnn").unwrap();
        assert_eq!(note, format!("1 checkpoint skipped: {mismatch}"));
        let message = crate::app::backtest::missing_checkpoint_message(
            &["pivot_cnn"],
            dir.path(),
            &best.skipped,
        );
        assert!(
            message.contains(&saved.meta.id) && message.contains(&format!("layout v{old}")),
            "{message}"
        );
        // The running runtime shows the same in its status, which the models pane reads.
        let rt = runtime(dir.path(), 24);
        let s = rt.status();
        assert!(s.cnn_checkpoint.is_none());
        assert_eq!(s.skipped_checkpoints, best.skipped);
    }

    /// An input built earlier (candles cut at `cut` frames from the end, pivots after that
    /// removed) so that the full input's newest level-1 pivot is its target.
    fn earlier(full: &BaseDataInput, cut: usize) -> BaseDataInput {
        let mut e = full.clone();
        let m1 = &mut e.ohlcv[1];
        m1.truncate(m1.len() - cut);
        let last_open = m1.last().unwrap().open_time_ms;
        for l in &mut e.pivots[1].levels {
            l.retain(|p| p.time_ms <= last_open);
        }
        e
    }

    #[test]
    fn confirmed_pivots_train_online_and_fresh_weights_reach_inference() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime(dir.path(), 16);
        let full = input("ETHUSDT", T);
        let newest = full.pivots[1].levels[0].last().unwrap().time_ms;
        let cut = ((T - 60_000 - newest) / 60_000) as usize + 2;
        let before = InferenceRequest {
            symbol: "ETHUSDT".into(),
            t_ms: T,
            input: earlier(&full, cut),
            position: 0,
        };
        let first = rt.infer(before).unwrap();
        rt.infer(req("ETHUSDT", T, 0)).unwrap();
        // The newest pivot labelled the earlier input: one online step follows.
        let s = wait_for(&rt, |s| s.training_steps >= 1);
        assert!(s.examples_received >= 1 && s.last_loss.is_some());
        // More examples through the public door; every update is handed to inference, which
        // keeps answering meanwhile.
        let ex = OnlineExample {
            input: RecentInput {
                t_ms: T,
                series: vec![0.3; 35 * 16],
                context: vec![0.1; InputShape::encoded(16).context],
                anchor: Anchor {
                    timeframe: Timeframe::M1,
                    close: 3000.0,
                    range: 30.0,
                    last_open_ms: T - 60_000,
                    interval_ms: 60_000,
                },
            },
            level: 1,
            target: PivotTarget {
                price_offset: 5.0,
                time_offset: 1.0,
                high: true,
            },
        };
        for _ in 0..5 {
            assert!(rt.train_on(vec![ex.clone(); 4]));
            assert_eq!(rt.infer(req("BTCUSDT", T, 0)).unwrap().len(), 2);
        }
        let s = wait_for(&rt, |s| s.training_steps >= 6);
        assert!(s.cnn_checkpoint.is_some(), "saved every 2 updates");
        // Inference adopts the trained weights before its next step.
        let later = rt
            .infer(InferenceRequest {
                symbol: "ETHUSDT".into(),
                t_ms: T,
                input: earlier(&full, cut),
                position: 0,
            })
            .unwrap();
        assert!(rt.status().weights_adopted >= 1);
        assert_ne!(first[0].hidden_states, later[0].hidden_states);
        rt.stop();
        let ck = cnn_checkpoints(dir.path());
        let listed = ck.list().unwrap();
        assert!(!listed.is_empty());
        assert!(listed.iter().all(|m| m.metrics[CNN_METRIC].is_finite()));
    }

    fn rl_cfg(window: usize) -> ModelsConfig {
        ModelsConfig {
            dqn_learn_start: 4,
            dqn_batch: 4,
            dqn_learning_rate: 1e-2,
            ..cfg(window)
        }
    }

    /// The fixture input with the newest 1 m candle closing at `close` (hundredths), so the
    /// DQN's state follows a price series; the input's own time stays at `T`.
    fn priced(symbol: &str, t: i64, close: i64) -> InferenceRequest {
        let mut r = req(symbol, t, 0);
        let c = r.input.ohlcv[1].last_mut().unwrap();
        c.close = crate::market::types::Price(close * 1_000_000);
        c.high = c.high.max(c.close);
        c.low = c.low.min(c.close);
        r
    }

    /// Deterministic prices in hundredths: a slow wave around 3 000.
    fn series(k: usize) -> i64 {
        300_000 + [0, 40, 90, 60, -20, -70, -30, 50][k % 8] + (k / 8) as i64 * 15
    }

    /// What the orchestrator sends for a DQN output scored `h` steps later.
    fn scored(out: &ModelOutput, entry: i64, exit: i64, at: i64) -> Feedback {
        use crate::market::types::Price;
        use crate::orchestrator::feedback::{ActionOutcome, Move, Outcome};
        let (entry, exit) = (Price(entry * 1_000_000), Price(exit * 1_000_000));
        let r = exit.to_f64() / entry.to_f64() - 1.0;
        Feedback {
            prediction: Arc::new(out.clone()),
            outcome: Outcome::Action(ActionOutcome {
                entry,
                exit,
                realized_return: r,
                market: if r > 0.0 { Move::Up } else { Move::Down },
                correct: false,
            }),
            scored_at_ms: at,
        }
    }

    /// Runs `n` live steps 200 ms apart (the fixture's book stays fresh for 5 s), scoring each DQN output two steps later (sent
    /// before the step that scores it, as the orchestrator does); returns the DQN outputs.
    fn live_steps(rt: &ModelRuntime, n: usize) -> Vec<ModelOutput> {
        let fb = rt.feedback_sender();
        let mut dqn = Vec::new();
        for k in 0..n {
            let t = T + k as i64 * 200;
            if k >= 2 {
                let o: &ModelOutput = &dqn[k - 2];
                fb.send(scored(o, series(k - 2), series(k), t)).unwrap();
            }
            let out = rt.infer(priced("ETHUSDT", t, series(k))).unwrap();
            dqn.push(out[1].clone());
        }
        dqn
    }

    fn mo_action(a: super::super::cnn::Action) -> crate::analysis::model_output::Action {
        a.into()
    }

    fn q_values(rt: &ModelRuntime) -> [f64; 3] {
        let out = rt
            .infer_batch(vec![priced("ETHUSDT", T, series(0))])
            .unwrap();
        let o = out[0].as_ref().unwrap();
        o[1].predictions.q_values.unwrap().as_array()
    }

    #[test]
    fn the_dqn_learns_online_from_its_scored_actions_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        tch::set_num_threads(1);
        tch::manual_seed(5);
        let rt = ModelRuntime::spawn(rl_cfg(16), Device::Cpu, dir.path().to_path_buf()).unwrap();
        // The first scored action alone: its transition is checked by hand.
        let first = live_steps(&rt, 3);
        let s = wait_for(&rt, |s| s.dqn_transitions >= 1);
        let lt = s.dqn_last_transition.clone().unwrap();
        assert_eq!((lt.t_ms, lt.next_t_ms), (T, T + 400));
        // No lookahead: the state was built from data at or before its time.
        assert!(lt.data_ms <= lt.t_ms && lt.newest_candle_ms <= lt.t_ms);
        let taken = super::super::cnn::ACTIONS
            .into_iter()
            .find(|a| mo_action(*a) == first[0].predictions.action)
            .unwrap();
        assert_eq!(lt.action, taken.as_str());
        let to: i8 = match lt.action {
            "BUY" => 1,
            "SELL" => -1,
            _ => 0,
        };
        assert_eq!(lt.positions, (0, to));
        let (p0, p2) = (series(0), series(2));
        let ret = (p2 - p0) as f64 / p0 as f64;
        let net = f64::from(to) * ret - f64::from(to.abs()) * 5e-4;
        let reward = 100.0 * (net - 0.5 * (-net).max(0.0));
        assert!((lt.net_return - net).abs() < 1e-12, "{lt:?}");
        assert!((lt.reward - reward).abs() < 1e-9, "{lt:?}");
        // More steps: transitions fill the replay, the trainer learns and hands weights over.
        rt.stop();
        rt.start().unwrap();
        let before = q_values(&rt);
        live_steps(&rt, 24);
        // Every scored action (1 before the restart, 22 after) becomes a transition.
        let s = wait_for(&rt, |s| {
            s.dqn_transitions == 23 && s.dqn_training_steps >= 4 && s.dqn_checkpoints_saved >= 1
        });
        assert!(s.dqn_replay_len >= 4 && s.dqn_last_loss.is_some(), "{s:?}");
        assert_eq!(s.dqn_feedback_unmatched, 0, "{s:?}");
        assert_eq!(s.dqn_feedback.actions_scored, 23);
        // Inference adopts the new weights before its next step: same input, other Q-values
        // (the CNN learned nothing here, so the DQN's own update is what changed them).
        let after = q_values(&rt);
        assert!(rt.status().dqn_weights_adopted >= 1);
        assert_eq!(rt.status().training_steps, 0);
        assert_ne!(before, after);
        rt.stop();
        assert_eq!(rt.live_threads(), 0);
        let saved = rt.status().dqn_last_saved.unwrap();
        // The next start loads the best DQN checkpoint: the one the trainer wrote.
        rt.start().unwrap();
        let s = rt.status();
        let best = s.dqn_checkpoint.unwrap();
        assert!(best.name.starts_with("dqn_agent/"), "{best:?}");
        assert_eq!(best.metric_name, DQN_METRIC);
        assert!(saved.name.starts_with("dqn_agent/"));
        let listed = CheckpointManager::new(CheckpointConfig {
            root: dir.path().to_path_buf(),
            model_name: "dqn_agent".into(),
            keep: 5,
            metric: DQN_METRIC.into(),
            goal: MetricGoal::Maximize,
        })
        .unwrap()
        .list()
        .unwrap();
        let top = listed
            .iter()
            .map(CheckpointMeta::metric)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(best.metric, top);
        let out = rt.infer(priced("ETHUSDT", T, series(0))).unwrap();
        assert_eq!(
            format!("dqn_agent/{}", out[1].metadata["checkpoint"]),
            best.name
        );
    }

    #[test]
    fn nothing_is_learned_while_learning_is_off_and_stop_leaves_no_thread() {
        let dir = tempfile::tempdir().unwrap();
        tch::set_num_threads(1);
        tch::manual_seed(5);
        let rt = ModelRuntime::spawn(rl_cfg(16), Device::Cpu, dir.path().to_path_buf()).unwrap();
        let _ = wait_for(&rt, |_| rt.live_threads() == 3);
        rt.set_learning(false);
        assert!(!rt.is_learning());
        let before = q_values(&rt);
        let outs = live_steps(&rt, 16);
        // The scored actions are still tallied for the screen, once all arrived.
        let s = wait_for(&rt, |s| s.dqn_feedback.actions_scored == 14);
        assert_eq!(
            (s.dqn_transitions, s.dqn_training_steps, s.dqn_replay_len),
            (0, 0, 0)
        );
        assert_eq!((s.training_steps, s.examples_received), (0, 0));
        assert_eq!(q_values(&rt), before);
        rt.stop();
        assert_eq!(rt.live_threads(), 0);
        assert!(!rt.status().training_running);
        // Feedback sent while stopped is kept for the next start (the sender stays valid).
        assert!(rt.feedback_sender().send(scored(&outs[0], 1, 1, T)).is_ok());
        rt.start().unwrap();
        let _ = wait_for(&rt, |_| rt.live_threads() == 3);
        rt.stop();
        assert_eq!(rt.live_threads(), 0);
        let ck = CheckpointManager::new(CheckpointConfig {
            root: dir.path().to_path_buf(),
            model_name: "dqn_agent".into(),
            keep: 5,
            metric: DQN_METRIC.into(),
            goal: MetricGoal::Maximize,
        })
        .unwrap();
        assert!(
            ck.list().unwrap().is_empty(),
            "nothing learned, nothing saved"
        );
    }
}
