//! The live CNN and DQN as experts of the orchestrator, over the model runtime's own threads:
//! the CNN expert sends the step's input to the runtime (which runs the CNN, then the DQN on
//! the CNN's hidden states of the same step) and answers with the CNN's output; the DQN
//! expert, a stage later, answers with the DQN's output of that same pass. Whether inputs
//! also feed online learning is the desk's training switch.
//!
//! The DQN's state holds the account's position in the symbol: the trading thread publishes
//! it to a [`PositionBoard`] (an immutable snapshot swapped in after each fill), which each
//! pass reads without waiting on the trading thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::trading::PositionBoard;
use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::{ModelOutput, PredictedPivot};
use crate::market::types::Symbol;
use crate::models::runtime::{InferenceRequest, ModelRuntime, RuntimeStatus, Step};
use crate::orchestrator::expert::{Expert, ExpertError, Upstream};
use crate::orchestrator::runtime::Orchestrator;

type Pending = BTreeMap<(Symbol, i64), Result<ModelOutput, ExpertError>>;

/// The runtime shared by the two experts and the screen.
pub struct LiveModels {
    runtime: ModelRuntime,
    learn: AtomicBool,
    pending: Mutex<Pending>,
    names: (String, String),
    last_cnn: Mutex<BTreeMap<Symbol, ModelOutput>>,
    positions: Arc<PositionBoard>,
}

impl std::fmt::Debug for LiveModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveModels")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveModels {
    /// Wraps a running runtime; online learning starts on when `learn` is true.
    pub fn new(runtime: ModelRuntime, names: (String, String), learn: bool) -> Arc<Self> {
        runtime.set_learning(learn);
        Arc::new(Self {
            runtime,
            learn: AtomicBool::new(learn),
            pending: Mutex::new(BTreeMap::new()),
            names,
            last_cnn: Mutex::new(BTreeMap::new()),
            positions: Arc::new(PositionBoard::default()),
        })
    }

    /// The board the trading session publishes the account's positions to (the DQN reads
    /// each symbol's position from it).
    pub fn positions(&self) -> Arc<PositionBoard> {
        Arc::clone(&self.positions)
    }

    /// The CNN and DQN experts.
    pub fn experts(self: &Arc<Self>) -> (RuntimeCnnExpert, RuntimeDqnExpert) {
        (
            RuntimeCnnExpert {
                models: Arc::clone(self),
            },
            RuntimeDqnExpert {
                models: Arc::clone(self),
            },
        )
    }

    /// Whether live inputs feed online learning.
    pub fn is_learning(&self) -> bool {
        self.learn.load(Ordering::SeqCst) && self.runtime.is_running()
    }

    /// Turns online learning on or off (inference continues either way).
    pub fn set_learning(&self, on: bool) {
        self.learn.store(on, Ordering::SeqCst);
        self.runtime.set_learning(on);
    }

    /// Registers the runtime as the trainer of both models with the orchestrator, so the
    /// outcomes of their predictions reach online learning.
    pub fn register_trainers(&self, orchestrator: &Orchestrator) {
        orchestrator.add_trainer(self.names.0.clone(), self.runtime.feedback_sender());
        orchestrator.add_trainer(self.names.1.clone(), self.runtime.feedback_sender());
    }

    /// The runtime's status for the screen.
    pub fn status(&self) -> RuntimeStatus {
        self.runtime.status()
    }

    /// The CNN's newest predicted pivots per symbol.
    pub fn predictions(&self) -> Vec<(String, Vec<PredictedPivot>)> {
        self.last_cnn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(s, o)| (s.to_string(), o.predictions.pivots.clone()))
            .collect()
    }

    /// The CNN's and the DQN's model names.
    pub fn names(&self) -> &(String, String) {
        &self.names
    }

    /// Stops the runtime's threads (the trainer saves a checkpoint).
    pub fn stop(&self) {
        self.runtime.stop();
    }

    /// One runtime pass on `input`, the DQN seeing the account's published position.
    fn pass(&self, input: &BaseDataInput) -> Result<Step, ExpertError> {
        let request = InferenceRequest {
            symbol: input.symbol.clone(),
            t_ms: input.timestamp_ms,
            input: input.clone(),
            position: self.positions.direction(&input.symbol),
        };
        self.runtime
            .submit(vec![request], self.learn.load(Ordering::SeqCst))
            .map_err(|e| ExpertError::Model(e.to_string()))
            .and_then(|rx| {
                rx.recv()
                    .map_err(|_| ExpertError::Model("model runtime stopped".into()))
            })
            .and_then(|mut steps| {
                steps
                    .pop()
                    .ok_or_else(|| ExpertError::Model("no answer".into()))?
                    .map_err(|e| ExpertError::InvalidInput(e.to_string()))
            })
    }

    fn run(&self, input: &BaseDataInput) -> Result<ModelOutput, ExpertError> {
        let key = (input.symbol.clone(), input.timestamp_ms);
        let answer = self.pass(input);
        let mut pending = lock(&self.pending);
        // Only the newest pass is waited for; older entries belong to skipped steps.
        pending.retain(|(_, t), _| *t >= input.timestamp_ms);
        match answer {
            Ok(step) => {
                let mut outputs = step.outputs.into_iter();
                let cnn = outputs.next();
                let dqn = outputs.next();
                pending.insert(
                    key,
                    dqn.ok_or_else(|| ExpertError::Model("no DQN output".into())),
                );
                if let Some(out) = &cnn {
                    self.last_cnn
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(input.symbol.clone(), out.clone());
                }
                cnn.ok_or_else(|| ExpertError::Model("no CNN output".into()))
            }
            Err(e) => {
                pending.insert(key, Err(e.clone()));
                Err(e)
            }
        }
    }
}

/// The CNN expert (runs the whole pass).
#[derive(Debug)]
pub struct RuntimeCnnExpert {
    models: Arc<LiveModels>,
}

/// The DQN expert (answers from the CNN expert's pass of the same step).
#[derive(Debug)]
pub struct RuntimeDqnExpert {
    models: Arc<LiveModels>,
}

impl Expert for RuntimeCnnExpert {
    fn name(&self) -> &str {
        &self.models.names.0
    }

    fn infer(&mut self, input: &BaseDataInput, _: &Upstream) -> Result<ModelOutput, ExpertError> {
        self.models.run(input)
    }
}

impl Expert for RuntimeDqnExpert {
    fn name(&self) -> &str {
        &self.models.names.1
    }

    fn depends_on(&self) -> Vec<String> {
        vec![self.models.names.0.clone()]
    }

    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        let cnn = &self.models.names.0;
        let missing = || ExpertError::MissingUpstream { needs: cnn.clone() };
        if !upstream.contains_key(cnn) {
            return Err(missing());
        }
        lock(&self.models.pending)
            .remove(&(input.symbol.clone(), input.timestamp_ms))
            .unwrap_or_else(|| Err(missing()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::runtime::ModelsConfig;

    /// Live models over a fresh CPU runtime whose checkpoints go under `dir`.
    fn live_models(dir: &std::path::Path) -> Arc<LiveModels> {
        let cfg = ModelsConfig {
            device: "cpu".into(),
            window: 16,
            ..ModelsConfig::default()
        };
        let rt = ModelRuntime::spawn(cfg, tch::Device::Cpu, dir.to_path_buf()).unwrap();
        LiveModels::new(rt, ("pivot_cnn".into(), "dqn_agent".into()), false)
    }

    #[test]
    fn the_training_switch_reaches_the_runtime_trainers() {
        let dir = tempfile::tempdir().unwrap();
        let m = live_models(dir.path());
        assert!(!m.is_learning() && !m.runtime.is_learning());
        m.set_learning(true);
        assert!(m.is_learning() && m.runtime.is_learning());
        m.stop();
        assert_eq!(m.runtime.live_threads(), 0);
        assert!(!m.is_learning(), "a stopped runtime learns nothing");
    }

    #[test]
    fn the_published_position_reaches_the_dqn_state() {
        use crate::analysis::input::fixture::{T, market};
        use crate::analysis::input::{InputConfig, SymbolAnalysis};
        use crate::analysis::model_output::ModelOutputStore;
        use crate::market::types::{Price, Qty, Side};
        use crate::trading::money::Money;
        use crate::trading::position::{Portfolio, Position};
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let m = live_models(dir.path());
        let mk = market([320; 4], true);
        let input = SymbolAnalysis::new("ETHUSDT", InputConfig::default()).build(
            &mk,
            &mk,
            &ModelOutputStore::default(),
            T,
        );
        let position_element = |m: &LiveModels| *m.pass(&input).unwrap().state.last().unwrap();
        assert_eq!(position_element(&m), 0.0, "flat before any fill");
        let account = |side: Side| {
            let mut a = Portfolio::new(Money::ZERO, 16);
            for (symbol, side) in [("ETHUSDT", side), ("BTCUSDT", Side::Sell)] {
                let mut p = Position::flat(symbol);
                p.apply(
                    side,
                    Price::from_units(100),
                    Qty::from_units(2),
                    Money::ZERO,
                );
                a.restore(p);
            }
            a
        };
        // The trading side publishes a long ETHUSDT position (and a short in another symbol).
        m.positions().publish(&account(Side::Buy));
        assert_eq!(position_element(&m), 1.0, "long reaches the DQN state");
        m.positions().publish(&account(Side::Sell));
        assert_eq!(position_element(&m), -1.0, "short reaches the DQN state");
        m.stop();
    }
}
