//! The live orchestrator: its own thread (never the async reactor) keeps the freshest input
//! per symbol, runs a step whenever the trigger says so while inference is on, publishes a
//! snapshot for the screen and sends decisions and feedback on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::config::OrchestratorConfig;
use super::coordinator::RunMode;
use super::decision::{Decision, ThresholdError, ThresholdHandle, Thresholds};
use super::engine::{Engine, EngineError, HistorySink, OrchestratorSnapshot};
use super::expert::Expert;
use super::feedback::Feedback;
use crate::analysis::input::BaseDataInput;
use crate::market::types::Symbol;

enum Msg {
    Input(Box<BaseDataInput>),
    Trainer(String, Sender<Feedback>),
    History(HistorySink),
}

struct Shared {
    running: AtomicBool,
    shutdown: AtomicBool,
    snapshot: ArcSwap<OrchestratorSnapshot>,
}

/// Handle on the live orchestrator thread.
pub struct Orchestrator {
    shared: Arc<Shared>,
    thresholds: ThresholdHandle,
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("running", &self.is_running())
            .finish()
    }
}

impl Orchestrator {
    /// Starts the orchestrator thread over `experts` (each on its own worker thread with the
    /// configured deadline); inference starts on. Decisions arrive on the returned receiver.
    pub fn spawn(
        cfg: OrchestratorConfig,
        experts: Vec<Box<dyn Expert>>,
    ) -> Result<(Self, Receiver<Decision>), EngineError> {
        let thresholds =
            ThresholdHandle::new(cfg.buy_threshold, cfg.sell_threshold).map_err(|e| {
                EngineError::Config(format!("orchestrator.{}_threshold", e.side), e.to_string())
            })?;
        let mode = RunMode::Threads {
            deadline: Duration::from_millis(cfg.deadline_ms),
        };
        let mut engine = Engine::new(cfg, experts, mode, thresholds.clone())?;
        let shared = Arc::new(Shared {
            running: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
            snapshot: ArcSwap::from_pointee(engine.snapshot(true)),
        });
        let (tx, rx) = mpsc::channel::<Msg>();
        let (dtx, drx) = mpsc::channel::<Decision>();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("orchestrator".into())
            .spawn(move || run_loop(&mut engine, &sh, &rx, &dtx))
            .map_err(|e| {
                EngineError::Config("orchestrator".into(), format!("cannot start thread: {e}"))
            })?;
        Ok((
            Self {
                shared,
                thresholds,
                tx,
                thread: Some(thread),
            },
            drx,
        ))
    }

    /// Offers a new input (from the market snapshot); only the freshest per symbol is used.
    pub fn submit(&self, input: BaseDataInput) {
        let _ = self.tx.send(Msg::Input(Box::new(input)));
    }

    /// A cheap, non-blocking sender of inputs for another thread or task (the feed's tap).
    pub fn input_sender(&self) -> impl Fn(BaseDataInput) + Send + 'static {
        let tx = self.tx.clone();
        move |input| {
            let _ = tx.send(Msg::Input(Box::new(input)));
        }
    }

    /// Sends scored pairs of `model` to `trainer` (the model runtime's training channel).
    pub fn add_trainer(&self, model: impl Into<String>, trainer: Sender<Feedback>) {
        let _ = self.tx.send(Msg::Trainer(model.into(), trainer));
    }

    /// Offers every step's report (input, outputs with hidden states, skipped experts,
    /// decision, scored pairs) to `sink` from the next step on; a full sink drops and counts.
    pub fn add_history(&self, sink: HistorySink) {
        let _ = self.tx.send(Msg::History(sink));
    }

    /// Turns inference on.
    pub fn start(&self) {
        self.shared.running.store(true, Ordering::SeqCst);
    }

    /// Turns inference off (inputs keep being taken; no steps run).
    pub fn stop(&self) {
        self.shared.running.store(false, Ordering::SeqCst);
    }

    /// Whether inference is on.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Changes the thresholds; the next step uses them.
    pub fn set_thresholds(&self, buy: f64, sell: f64) -> Result<(), ThresholdError> {
        self.thresholds.set_thresholds(buy, sell)
    }

    /// The thresholds now.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds.get()
    }

    /// The shared threshold handle (for the screen).
    pub fn threshold_handle(&self) -> ThresholdHandle {
        self.thresholds.clone()
    }

    /// The latest published snapshot.
    pub fn snapshot(&self) -> Arc<OrchestratorSnapshot> {
        let mut s = self.shared.snapshot.load_full();
        if s.running != self.is_running() || s.thresholds != Some(self.thresholds()) {
            let mut fresh = (*s).clone();
            fresh.running = self.is_running();
            fresh.thresholds = Some(self.thresholds());
            s = Arc::new(fresh);
        }
        s
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_loop(
    engine: &mut Engine,
    shared: &Shared,
    rx: &Receiver<Msg>,
    decisions: &Sender<Decision>,
) {
    let mut latest: BTreeMap<Symbol, BaseDataInput> = BTreeMap::new();
    while !shared.shutdown.load(Ordering::SeqCst) {
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take everything queued: only the freshest input per symbol matters.
        for m in first.into_iter().chain(rx.try_iter()) {
            match m {
                Msg::Input(i) => {
                    if latest
                        .get(&i.symbol)
                        .is_none_or(|old| old.timestamp_ms <= i.timestamp_ms)
                    {
                        latest.insert(i.symbol.clone(), *i);
                    }
                }
                Msg::Trainer(model, tx) => engine.add_trainer(model, tx),
                Msg::History(sink) => engine.set_history(sink),
            }
        }
        let running = shared.running.load(Ordering::SeqCst);
        if running {
            let symbols: Vec<Symbol> = latest.keys().cloned().collect();
            for s in symbols {
                let due = latest.get(&s).is_some_and(|i| engine.due(i).is_some());
                if due
                    && let Some(input) = latest.remove(&s)
                    && let Some(report) = engine.step_if_due(input)
                {
                    let _ = decisions.send(report.decision);
                }
            }
        }
        shared.snapshot.store(Arc::new(engine.snapshot(running)));
    }
}
