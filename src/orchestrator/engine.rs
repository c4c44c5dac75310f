//! One orchestrator step, the same live and in backtests: score what the new input resolves,
//! feed the stored outputs into the input, run the experts, store their outputs, register them
//! for scoring, and decide.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use serde::Serialize;

use super::config::{OrchestratorConfig, Trigger};
use super::coordinator::{Coordinator, CoordinatorError, RunMode, StepOutputs};
use super::decision::{Decision, ThresholdHandle, Thresholds, decide};
use super::expert::{Expert, last_close};
use super::feedback::{Feedback, Feedbacks, ScoringConfig};
use super::store::OutputStore;
use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::{Action, ActionValues, ModelOutput};
use crate::market::types::{Symbol, Timeframe};

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid (`key`, expected form).
    #[error("{0}: {1}")]
    Config(String, String),
    /// The experts cannot be coordinated.
    #[error(transparent)]
    Experts(#[from] CoordinatorError),
}

/// The screen's view of one expert about one symbol.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertStatus {
    /// Model name.
    pub model: String,
    /// Symbol.
    pub symbol: Symbol,
    /// Time of its last output.
    pub time_ms: Option<i64>,
    /// Last action.
    pub action: Option<Action>,
    /// Last confidence.
    pub confidence: Option<f64>,
    /// Last probabilities.
    pub probabilities: Option<ActionValues>,
    /// Last Q-values (RL).
    pub q_values: Option<ActionValues>,
    /// Why its last step gave no output, if it did not.
    pub last_problem: Option<String>,
    /// Latency of its last answer, ms.
    pub latency_ms: Option<f64>,
    /// Recent accuracy (gating input).
    pub accuracy: f64,
    /// Accuracy over time, oldest first.
    pub accuracy_history: Vec<f64>,
    /// Action predictions scored.
    pub scored: u64,
}

/// Everything the screen shows about the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct OrchestratorSnapshot {
    /// Inference running (toggled by the screen).
    pub running: bool,
    /// Thresholds in force.
    pub thresholds: Option<Thresholds>,
    /// Per expert and symbol.
    pub experts: Vec<ExpertStatus>,
    /// Last decision per symbol.
    pub decisions: Vec<Decision>,
    /// Steps run.
    pub steps: u64,
    /// Expert answers missing (late, failed, busy) so far.
    pub skipped: u64,
    /// Step reports the inference history could not take (its channel was full).
    pub history_dropped: u64,
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The input the experts saw (with the stored outputs as `last_predictions`).
    pub input: Arc<BaseDataInput>,
    /// The decision.
    pub decision: Decision,
    /// The experts' outputs.
    pub outputs: Vec<ModelOutput>,
    /// Predictions scored by this input.
    pub feedback: Vec<Feedback>,
}

/// Where every step's report goes for the inference history. Offering never blocks the step:
/// when the bounded channel is full the report is dropped and counted, so a slow disk costs
/// history rows, never inference latency.
#[derive(Debug, Clone)]
pub struct HistorySink {
    tx: SyncSender<StepReport>,
    dropped: Arc<AtomicU64>,
}

impl HistorySink {
    /// A sink holding at most `capacity` reports (at least 1) and its receiving end.
    pub fn bounded(capacity: usize) -> (Self, Receiver<StepReport>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let sink = Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (sink, rx)
    }

    /// Hands `report` over without waiting; false (and counted) when it was dropped.
    pub fn offer(&self, report: StepReport) -> bool {
        match self.tx.try_send(report) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Reports dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The drop counter, shared, for whoever shows it after the sink moved to the engine.
    pub fn dropped_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }
}

/// The orchestrator's state machine.
pub struct Engine {
    cfg: OrchestratorConfig,
    trigger: Trigger,
    coordinator: Coordinator,
    store: OutputStore,
    feedback: Feedbacks,
    thresholds: ThresholdHandle,
    last_key: BTreeMap<Symbol, i64>,
    decisions: BTreeMap<Symbol, Decision>,
    status: BTreeMap<(Symbol, String), ExpertStatus>,
    steps: u64,
    skipped: u64,
    history: Option<HistorySink>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("coordinator", &self.coordinator)
            .field("steps", &self.steps)
            .finish()
    }
}

impl Engine {
    /// An engine over `experts`, run in `mode`, reading thresholds from `thresholds`.
    pub fn new(
        cfg: OrchestratorConfig,
        experts: Vec<Box<dyn Expert>>,
        mode: RunMode,
        thresholds: ThresholdHandle,
    ) -> Result<Self, EngineError> {
        cfg.validate().map_err(|(k, m)| EngineError::Config(k, m))?;
        let trigger = cfg.trigger().map_err(|(k, m)| EngineError::Config(k, m))?;
        let coordinator = Coordinator::new(experts, mode)?;
        let feedback = Feedbacks::new(ScoringConfig {
            horizon_ms: cfg.horizon_ms(),
            band: cfg.no_trade_band_bps / 10_000.0,
            pivot_timeout_ms: cfg.pivot_timeout_secs as i64 * 1_000,
            decay: cfg.gating.accuracy_decay,
            prior: cfg.gating.prior_accuracy,
            history: cfg.accuracy_history,
            pairs_kept: cfg.outputs_kept,
        });
        Ok(Self {
            store: OutputStore::new(cfg.outputs_kept),
            trigger,
            coordinator,
            feedback,
            thresholds,
            last_key: BTreeMap::new(),
            decisions: BTreeMap::new(),
            status: BTreeMap::new(),
            steps: 0,
            skipped: 0,
            history: None,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.cfg
    }

    /// The coordinator (expert names, stages).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The output store.
    pub fn store(&self) -> &OutputStore {
        &self.store
    }

    /// Scores, pairs and accuracies.
    pub fn feedback(&self) -> &Feedbacks {
        &self.feedback
    }

    /// Scored pairs of `model` go to `trainer` from now on.
    pub fn add_trainer(
        &mut self,
        model: impl Into<String>,
        trainer: std::sync::mpsc::Sender<Feedback>,
    ) {
        self.feedback.add_trainer(model, trainer);
    }

    /// Every step's report is offered to `sink` from now on (replacing any earlier sink).
    pub fn set_history(&mut self, sink: HistorySink) {
        self.history = Some(sink);
    }

    /// The step key when `input` is due for a step under the trigger.
    pub fn due(&self, input: &BaseDataInput) -> Option<i64> {
        self.trigger.due(
            self.last_key.get(&input.symbol).copied(),
            input.timestamp_ms,
            |tf: Timeframe| {
                let i = Timeframe::ALL.iter().position(|t| *t == tf)?;
                input.ohlcv[i].last().map(|c| c.open_time_ms)
            },
        )
    }

    /// Runs a step on `input` when the trigger says it is due.
    pub fn step_if_due(&mut self, input: BaseDataInput) -> Option<StepReport> {
        let key = self.due(&input)?;
        self.last_key.insert(input.symbol.clone(), key);
        Some(self.step(input))
    }

    /// Runs one step on `input` (its `last_predictions` are replaced by the stored outputs
    /// known at its time).
    pub fn step(&mut self, input: BaseDataInput) -> StepReport {
        let input = self.prepare(input);
        let outs = self.coordinator.step(Arc::clone(&input));
        self.finish(input, outs)
    }

    /// Runs many steps with batched inference; same results as [`Self::step`] one by one when
    /// [`Coordinator::needs_sequential_steps`] is false (otherwise it runs them one by one).
    pub fn step_batch(&mut self, inputs: Vec<BaseDataInput>) -> Vec<StepReport> {
        if self.coordinator.needs_sequential_steps() {
            return inputs.into_iter().map(|i| self.step(i)).collect();
        }
        let prepared: Vec<Arc<BaseDataInput>> =
            inputs.into_iter().map(|i| self.prepare(i)).collect();
        let outs = self.coordinator.step_batch(&prepared);
        prepared
            .into_iter()
            .zip(outs)
            .map(|(i, o)| self.finish(i, o))
            .collect()
    }

    /// Lets the experts compute ahead what of `inputs` does not depend on the account; the
    /// caller then steps them one by one with [`Self::step`].
    pub fn prefetch(&mut self, inputs: &[BaseDataInput]) {
        let refs: Vec<&BaseDataInput> = inputs.iter().collect();
        self.coordinator.prefetch(&refs);
    }

    /// Tells the experts the account's position direction in `symbol` (−1, 0, 1).
    pub fn observe_position(&mut self, symbol: &str, direction: i8) {
        self.coordinator.observe_position(symbol, direction);
    }

    fn prepare(&mut self, mut input: BaseDataInput) -> Arc<BaseDataInput> {
        input.last_predictions = self
            .store
            .outputs()
            .all_at(&input.symbol, input.timestamp_ms);
        Arc::new(input)
    }

    fn finish(&mut self, input: Arc<BaseDataInput>, outs: StepOutputs) -> StepReport {
        let feedback = self.feedback.observe(&input);
        self.steps += 1;
        self.skipped += outs.skipped.len() as u64;
        for o in &outs.outputs {
            // Coordinator outputs are validated; a refusal here cannot happen but is not fatal.
            let _ = self.store.record(o.clone());
            self.feedback.register(&input, Arc::new(o.clone()));
        }
        let refs: Vec<&ModelOutput> = outs.outputs.iter().collect();
        let decision = decide(
            &input.symbol,
            input.timestamp_ms,
            last_close(&input),
            &refs,
            outs.skipped.clone(),
            |m| self.feedback.accuracy_of(m),
            &self.cfg.gating,
            self.thresholds.get(),
        );
        for o in &outs.outputs {
            let st = self.status_entry(&input.symbol, &o.model_name);
            st.time_ms = Some(o.timestamp_ms);
            st.action = Some(o.predictions.action);
            st.confidence = Some(o.confidence);
            st.probabilities = Some(o.predictions.probabilities);
            st.q_values = o.predictions.q_values;
            st.last_problem = None;
            st.latency_ms = outs
                .latency
                .get(&o.model_name)
                .map(|d| d.as_secs_f64() * 1e3);
        }
        for s in &outs.skipped {
            self.status_entry(&input.symbol, &s.model).last_problem = Some(s.reason.clone());
        }
        self.decisions
            .insert(input.symbol.clone(), decision.clone());
        let report = StepReport {
            input,
            decision,
            outputs: outs.outputs,
            feedback,
        };
        if let Some(sink) = &self.history {
            sink.offer(report.clone());
        }
        report
    }

    fn status_entry(&mut self, symbol: &str, model: &str) -> &mut ExpertStatus {
        self.status
            .entry((symbol.to_string(), model.to_string()))
            .or_insert_with(|| ExpertStatus {
                model: model.to_string(),
                symbol: symbol.to_string(),
                time_ms: None,
                action: None,
                confidence: None,
                probabilities: None,
                q_values: None,
                last_problem: None,
                latency_ms: None,
                accuracy: 0.0,
                accuracy_history: Vec::new(),
                scored: 0,
            })
    }

    /// The screen's view (`running` as given).
    pub fn snapshot(&self, running: bool) -> OrchestratorSnapshot {
        let acc = self.feedback.accuracy();
        OrchestratorSnapshot {
            running,
            thresholds: Some(self.thresholds.get()),
            experts: self
                .status
                .values()
                .map(|s| {
                    let mut s = s.clone();
                    s.accuracy = self.feedback.accuracy_of(&s.model);
                    if let Some(a) = acc.get(&s.model) {
                        s.accuracy_history = a.history.iter().map(|(_, v)| *v).collect();
                        s.scored = a.scored;
                    }
                    s
                })
                .collect(),
            decisions: self.decisions.values().cloned().collect(),
            steps: self.steps,
            skipped: self.skipped,
            history_dropped: self.history.as_ref().map_or(0, HistorySink::dropped),
        }
    }
}
