//! The processes behind the screen besides the feed: the orchestrator (inference and
//! decisions, on its own threads) and the trading loop (risk manager, executor and journal,
//! on its own thread; paper until the user goes live, see [`super::trading`]). The screen
//! talks to them through [`DeskCommand`]s and reads their published state; nothing here runs
//! on the async reactor or blocks the render path (going live connects on the runtime).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use super::desk_models::LiveModels;
use super::pipeline::InputTap;
use super::trading::{
    GoLiveError, LiveHandover, LiveTarget, TradingSession, connect_live, live_journal_dir,
};
use crate::analysis::input::InputConfig;
use crate::analysis::model_output::PredictedPivot;
use crate::config::Config;
use crate::exec::connect::executor_name;
use crate::logging::now_ms;
use crate::market::snapshot::MarketSnapshot;
use crate::models::checkpoint::skipped_note;
use crate::orchestrator::decision::Decision;
use crate::orchestrator::engine::OrchestratorSnapshot;
use crate::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use crate::orchestrator::runtime::Orchestrator;
use crate::storage::history::HistoryWriter;
use crate::trading::executor::ExecutorKind;
use crate::tui::desk::{
    DecisionView, DeskCommand, ExpertRow, ModelsView, Process, TradingView, Tunable,
};

/// How often the trading thread republishes its view for the screen.
const TRADING_PUBLISH_EVERY: Duration = Duration::from_millis(250);

enum TradingCommand {
    SetRunning(bool),
    Flatten,
    KillSwitch,
    Resume,
    GoLive(Box<Result<LiveTarget, GoLiveError>>),
    LiveReady(Box<Result<LiveHandover, GoLiveError>>),
    Shutdown,
}

/// The orchestrator and the trading loop, started together with the workstation.
pub struct DeskProcesses {
    orchestrator: Orchestrator,
    // Declared after the orchestrator: dropped once its sink is gone, committing the queue.
    history: Option<HistoryWriter>,
    models: Option<Arc<LiveModels>>,
    trading_tx: Sender<TradingCommand>,
    trading_view: Arc<ArcSwapOption<TradingView>>,
    trading_running: Arc<AtomicBool>,
    trading_thread: Option<JoinHandle<()>>,
    config: Config,
    sim_urls: Option<(String, String)>,
    journal_dir: PathBuf,
}

impl std::fmt::Debug for DeskProcesses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeskProcesses").finish_non_exhaustive()
    }
}

/// The experts the live desk runs: the rule-based pivot-momentum baselines. (Model experts
/// plug in through `orchestrator::models` once checkpoints exist.)
pub fn baseline_experts() -> Vec<Box<dyn Expert>> {
    vec![
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig::default())),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "slow_momentum".into(),
            lookback: 60,
            min_candles: 80,
            ..PivotMomentumConfig::default()
        })),
    ]
}

impl DeskProcesses {
    /// Starts the orchestrator over `experts` and the trading thread (trading itself stays
    /// off until the user starts it). Returns the input tap the feed must be given.
    pub fn start(
        cfg: &Config,
        mut experts: Vec<Box<dyn Expert>>,
        models: Option<Arc<LiveModels>>,
        snapshots: watch::Receiver<Arc<MarketSnapshot>>,
        journal_dir: &Path,
    ) -> anyhow::Result<(Self, InputTap)> {
        if let Some(m) = &models {
            let (cnn, dqn) = m.experts();
            experts.push(Box::new(cnn));
            experts.push(Box::new(dqn));
        }
        let (orchestrator, decisions) = Orchestrator::spawn(cfg.orchestrator.clone(), experts)?;
        if let Some(m) = &models {
            m.register_trainers(&orchestrator);
        }
        let history = start_history(cfg, &orchestrator);
        let submit = orchestrator.input_sender();
        let tap = InputTap::new(cfg, InputConfig::default(), Box::new(submit));
        let mut session = TradingSession::open(cfg, journal_dir)?;
        if let Some(m) = &models {
            session.share_positions(m.positions());
        }
        let (trading_tx, trading_rx) = mpsc::channel();
        let trading_view = Arc::new(ArcSwapOption::empty());
        let trading_running = Arc::new(AtomicBool::new(false));
        let view = Arc::clone(&trading_view);
        let running = Arc::clone(&trading_running);
        // Going live connects on the runtime the desk was started from.
        let live = LiveLink {
            runtime: tokio::runtime::Handle::try_current().ok(),
            commands: trading_tx.clone(),
        };
        let trading_thread =
            std::thread::Builder::new()
                .name("trading".into())
                .spawn(move || {
                    trading_loop(
                        session,
                        &decisions,
                        &trading_rx,
                        snapshots,
                        &view,
                        &running,
                        &live,
                    )
                })?;
        Ok((
            Self {
                orchestrator,
                history,
                models,
                trading_tx,
                trading_view,
                trading_running,
                trading_thread: Some(trading_thread),
                config: cfg.clone(),
                sim_urls: None,
                journal_dir: journal_dir.to_path_buf(),
            },
            tap,
        ))
    }

    /// The running simulator's REST and websocket URLs: with `[execution] executor = "paper"`
    /// going live trades on its signed endpoints.
    pub fn set_sim_endpoints(&mut self, rest: String, ws: String) {
        // The embedded simulator opens a fresh account every run: a live journal from an
        // earlier run names orders and positions this account never had. It is kept, renamed
        // aside, and never reconciled against the new account.
        let dir = live_journal_dir(
            &self.journal_dir,
            executor_name(ExecutorKind::Sim, &self.config.exec),
        );
        if dir.exists() {
            let aside = dir.with_extension(now_ms().to_string());
            match std::fs::rename(&dir, &aside) {
                Ok(()) => tracing::info!(
                    "earlier simulator session's live journal kept as {}",
                    aside.display()
                ),
                Err(e) => tracing::warn!(
                    "cannot set aside the earlier simulator journal {}: {e}",
                    dir.display()
                ),
            }
        }
        self.sim_urls = Some((rest, ws));
    }

    /// At start-up: when the configured live venue's journal still holds working orders or
    /// open positions, asks the trading thread to reconcile it with the venue and resume live
    /// (the go-live path: the paper account must be flat, and a mismatch keeps the desk on
    /// paper with the reason in the log). Returns the venue it asked for.
    pub fn resume_live_if_journaled(&self) -> Option<&'static str> {
        let target = live_target_to_resume(&self.config, &self.journal_dir, self.sim_urls.clone())?;
        let name = target.name();
        let _ = self
            .trading_tx
            .send(TradingCommand::GoLive(Box::new(Ok(target))));
        Some(name)
    }

    /// Carries out a command from the screen (the feed's own toggle is the caller's).
    pub fn command(&self, cmd: &DeskCommand) {
        match cmd {
            DeskCommand::Toggle(Process::Inference) => {
                if self.orchestrator.is_running() {
                    self.orchestrator.stop();
                    tracing::info!("inference stopped");
                } else {
                    self.orchestrator.start();
                    tracing::info!("inference started");
                }
            }
            DeskCommand::Toggle(Process::Trading) => {
                let on = !self.trading_running.load(Ordering::SeqCst);
                let _ = self.trading_tx.send(TradingCommand::SetRunning(on));
            }
            DeskCommand::Toggle(Process::Training) => match &self.models {
                Some(m) => {
                    let on = !m.is_learning();
                    m.set_learning(on);
                    tracing::info!(
                        on,
                        "online training {}",
                        if on { "started" } else { "stopped" }
                    );
                }
                None => {
                    tracing::warn!("online training needs the model runtime, which is not running")
                }
            },
            DeskCommand::Toggle(Process::Feed) => {}
            DeskCommand::SetParam { key, value } => self.set_param(key, *value),
            DeskCommand::Flatten => {
                let _ = self.trading_tx.send(TradingCommand::Flatten);
            }
            DeskCommand::KillSwitch => {
                let _ = self.trading_tx.send(TradingCommand::KillSwitch);
            }
            DeskCommand::Resume => {
                let _ = self.trading_tx.send(TradingCommand::Resume);
            }
            DeskCommand::GoLive => {
                let target = LiveTarget::resolve(&self.config, self.sim_urls.clone());
                let _ = self
                    .trading_tx
                    .send(TradingCommand::GoLive(Box::new(target)));
            }
        }
    }

    fn set_param(&self, key: &str, value: f64) {
        let t = self.orchestrator.thresholds();
        let (buy, sell) = match key {
            "buy_threshold" => (value, t.sell),
            "sell_threshold" => (t.buy, value),
            other => {
                tracing::warn!(key = other, "unknown live parameter");
                return;
            }
        };
        match self.orchestrator.set_thresholds(buy, sell) {
            Ok(()) => tracing::info!(buy, sell, "thresholds changed"),
            Err(e) => tracing::warn!(error = %e, "threshold refused"),
        }
    }

    /// The live-tunable parameters with the values in force.
    pub fn tunables(&self) -> Vec<Tunable> {
        let t = self.orchestrator.thresholds();
        let tunable = |key: &str, label: &str, value: f64| Tunable {
            key: key.into(),
            label: label.into(),
            value,
            step: 0.05,
            min: 0.05,
            max: 1.0,
            decimals: 2,
        };
        vec![
            tunable("buy_threshold", "buy ≥", t.buy),
            tunable("sell_threshold", "sell ≥", t.sell),
        ]
    }

    /// The models pane's view for `symbol` (exchange form).
    pub fn models_view(&self, symbol: &str) -> ModelsView {
        let mut view = models_view(&self.orchestrator.snapshot(), symbol);
        if let Some(m) = &self.models {
            let status = m.status();
            view.training = m.is_learning();
            view.device = device_label(&status.device);
            view.training_steps = status.training_steps;
            view.last_loss = status.last_loss;
            view.dqn_training_steps = status.dqn_training_steps;
            view.dqn_last_loss = status.dqn_last_loss;
            for (name, ck) in [
                (&m.names().0, &status.cnn_checkpoint),
                (&m.names().1, &status.dqn_checkpoint),
            ] {
                let mut text = ck.as_ref().map_or_else(
                    || "fresh weights".to_string(),
                    |c| format!("{} {} {:.4}", c.name, c.metric_name, c.metric),
                );
                if let Some(note) = skipped_note(&status.skipped_checkpoints, name) {
                    text.push_str(&format!(" ({note})"));
                }
                for row in view.experts.iter_mut().filter(|r| &r.name == name) {
                    row.checkpoint = Some(text.clone());
                }
            }
        }
        view
    }

    /// The CNN's newest predicted pivots per symbol (None: the models are not running).
    pub fn predictions(&self) -> Option<Vec<(String, Vec<PredictedPivot>)>> {
        self.models.as_ref().map(|m| m.predictions())
    }

    /// The positions pane's view (None until the trading thread published once).
    pub fn trading_view(&self) -> Option<TradingView> {
        self.trading_view.load_full().map(|v| (*v).clone())
    }

    /// What the inference history writer has done (`None` when it is off).
    pub fn history_stats(&self) -> Option<crate::storage::history::HistoryStats> {
        self.history.as_ref().map(HistoryWriter::stats)
    }

    /// Stops the trading thread (orders and positions are in the journal) and the
    /// orchestrator.
    pub fn shutdown(mut self) {
        let _ = self.trading_tx.send(TradingCommand::Shutdown);
        if let Some(t) = self.trading_thread.take() {
            let _ = t.join();
        }
        self.orchestrator.stop();
        if let Some(m) = &self.models {
            m.stop();
        }
    }
}

/// How the trading thread connects a live executor without blocking: on the runtime, with
/// the outcome coming back as a command.
struct LiveLink {
    runtime: Option<tokio::runtime::Handle>,
    commands: Sender<TradingCommand>,
}

impl LiveLink {
    /// Starts connecting `target` unless the session cannot go live; `false` when nothing
    /// was started (the reason is logged).
    fn start(&self, session: &TradingSession, target: LiveTarget) -> bool {
        match session.check_can_go_live(now_ms()) {
            Ok(()) => {}
            Err(GoLiveError::AlreadyLive(name)) => {
                tracing::info!("already live on {name}");
                return false;
            }
            Err(e) => {
                tracing::error!("going live refused, staying on paper: {e}");
                return false;
            }
        }
        let Some(runtime) = self.runtime.clone() else {
            tracing::error!("going live needs the async runtime, which is not running");
            return false;
        };
        let journal = match session.open_live_journal(target.name()) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("going live failed, staying on paper: {e}");
                return false;
            }
        };
        let symbols = session.symbols().to_vec();
        let tx = self.commands.clone();
        tracing::warn!(
            "going live on {}: connecting and reconciling (paper trading continues meanwhile)",
            target.name()
        );
        runtime.spawn(async move {
            let outcome = connect_live(&target, journal, &symbols).await;
            // A trading thread gone by now drops the executor, which stops its worker.
            let _ = tx.send(TradingCommand::LiveReady(Box::new(outcome)));
        });
        true
    }
}

/// The live target whose journal (under `journal_dir`) still holds working orders or open
/// positions, if any. The embedded simulator's account is new every run, so its journal is
/// never resumed (it is set aside instead, see [`DeskProcesses::set_sim_endpoints`]).
pub fn live_target_to_resume(
    cfg: &Config,
    journal_dir: &Path,
    sim: Option<(String, String)>,
) -> Option<LiveTarget> {
    let target = LiveTarget::resolve(cfg, sim).ok()?;
    if target.kind == ExecutorKind::Sim {
        return None;
    }
    let dir = live_journal_dir(journal_dir, target.name());
    if !dir.join(crate::trading::journal::JOURNAL_FILE).exists() {
        return None;
    }
    let journal =
        match crate::trading::journal::Journal::open(&dir, &cfg.execution.client_id_prefix, true) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("live journal {} cannot be read: {e}", dir.display());
                return None;
            }
        };
    let state = journal.state();
    let orders = state.open_orders().len();
    let positions = state.positions().iter().filter(|p| !p.is_flat()).count();
    if orders == 0 && positions == 0 {
        return None;
    }
    tracing::warn!(
        "the {} live journal holds {orders} working order(s) and {positions} open position(s): \
         reconciling with the venue and resuming LIVE",
        target.name()
    );
    Some(target)
}

/// Starts the inference history (`[storage.history]`) in the store `record` uses; a store
/// that cannot be opened leaves the desk running without history, said in the log.
fn start_history(cfg: &Config, orchestrator: &Orchestrator) -> Option<HistoryWriter> {
    if !cfg.storage.history.enabled {
        return None;
    }
    let root = super::record::store_root(cfg, None);
    match HistoryWriter::spawn(&root, &cfg.storage.history) {
        Ok((writer, sink)) => {
            orchestrator.add_history(sink);
            Some(writer)
        }
        Err(e) => {
            tracing::warn!("inference history off: {e}");
            None
        }
    }
}

fn trading_loop(
    mut session: TradingSession,
    decisions: &Receiver<Decision>,
    commands: &Receiver<TradingCommand>,
    mut snapshots: watch::Receiver<Arc<MarketSnapshot>>,
    view: &ArcSwapOption<TradingView>,
    running: &AtomicBool,
    live: &LiveLink,
) {
    let mut last_publish = Instant::now() - TRADING_PUBLISH_EVERY;
    let mut connecting = false;
    loop {
        while let Ok(cmd) = commands.try_recv() {
            let now = now_ms();
            match cmd {
                TradingCommand::SetRunning(on) => {
                    session.set_running(on);
                    tracing::info!(on, "trading {}", if on { "started" } else { "stopped" });
                }
                TradingCommand::Flatten => session.flatten(now),
                TradingCommand::KillSwitch => {
                    tracing::warn!("kill switch");
                    session.kill_switch(now);
                }
                TradingCommand::Resume => match session.resume(now) {
                    Ok(Some(was)) => tracing::warn!(
                        "halt lifted by hand (was: {was}); trading stays stopped until started"
                    ),
                    Ok(None) => tracing::info!("nothing to resume: trading is not halted"),
                    Err(e) => tracing::error!("cannot resume: {e}"),
                },
                TradingCommand::GoLive(target) => match *target {
                    Err(e) => tracing::error!("going live refused, staying on paper: {e}"),
                    Ok(_) if connecting => tracing::info!("already connecting the live executor"),
                    Ok(target) => connecting = live.start(&session, target),
                },
                TradingCommand::LiveReady(outcome) => {
                    connecting = false;
                    match (*outcome).and_then(|h| session.go_live(h, now)) {
                        Ok(()) => {}
                        Err(e) => tracing::error!("going live failed, staying on paper: {e}"),
                    }
                }
                TradingCommand::Shutdown => return,
            }
            running.store(session.is_running(), Ordering::SeqCst);
        }
        if snapshots.has_changed().unwrap_or(false) {
            let snap = snapshots.borrow_and_update().clone();
            session.on_snapshot(&snap);
        }
        match decisions.recv_timeout(Duration::from_millis(50)) {
            Ok(d) => {
                session.on_decision(&d);
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The orchestrator is gone: keep managing positions from market data.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
        }
        if last_publish.elapsed() >= TRADING_PUBLISH_EVERY {
            view.store(Some(Arc::new(session.view(now_ms()))));
            last_publish = Instant::now();
        }
    }
}

/// `cpu` / `cuda:0` from tch's `Cpu` / `Cuda(0)`.
fn device_label(debug: &str) -> String {
    match debug
        .strip_prefix("Cuda(")
        .and_then(|r| r.strip_suffix(')'))
    {
        Some(n) => format!("cuda:{n}"),
        None => debug.to_ascii_lowercase(),
    }
}

/// The models pane's view of an orchestrator snapshot for one symbol.
pub fn models_view(snap: &OrchestratorSnapshot, symbol: &str) -> ModelsView {
    let decision = snap.decisions.iter().find(|d| d.symbol == symbol);
    let experts = snap
        .experts
        .iter()
        .filter(|e| e.symbol == symbol)
        .filter_map(|e| {
            Some(ExpertRow {
                name: e.model.clone(),
                action: e.action?,
                confidence: e.confidence.unwrap_or(0.0),
                probabilities: e.probabilities.as_ref().map(|p| p.as_array()),
                q_values: e.q_values.as_ref().map(|q| q.as_array()),
                time_ms: e.time_ms.unwrap_or(0),
                latency_ms: e.latency_ms,
                checkpoint: None,
                flagged: e.last_problem.clone(),
                weight: decision.and_then(|d| {
                    d.votes
                        .iter()
                        .find(|v| v.model == e.model)
                        .map(|v| v.weight)
                }),
            })
        })
        .collect();
    let accuracy = snap
        .experts
        .iter()
        .filter(|e| e.symbol == symbol && !e.accuracy_history.is_empty())
        .map(|e| (e.model.clone(), e.accuracy_history.clone()))
        .collect();
    ModelsView {
        inference: snap.running,
        training: false,
        device: "cpu".into(),
        experts,
        decision: decision.map(|d| DecisionView {
            symbol: d.symbol.to_string(),
            action: d.action,
            confidence: d.confidence,
            reason: d.reason.clone(),
            time_ms: d.time_ms,
        }),
        accuracy,
        training_steps: 0,
        last_loss: None,
        dqn_training_steps: 0,
        dqn_last_loss: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataSource;
    use crate::market::types::{Qty, Side};
    use crate::trading::journal::{Journal, JournalRecord};
    use crate::trading::order::{ClientOrderId, ExecutionEvent, OrderKind, OrderRequest};

    fn intent(dir: &Path, id: &str) -> Journal {
        let mut j = Journal::open(dir, "mm", true).unwrap();
        j.record(JournalRecord::Intent {
            request: OrderRequest {
                client_id: ClientOrderId::parse(id).unwrap(),
                symbol: "ETHUSDT".into(),
                side: Side::Buy,
                kind: OrderKind::Market,
                qty: Qty::parse("0.01").unwrap(),
                reduce_only: false,
                time_in_force: crate::trading::order::TimeInForce::Gtc,
            },
            protection: Default::default(),
            time_ms: 1,
        })
        .unwrap();
        j
    }

    #[test]
    fn a_live_journal_with_open_orders_is_resumed_at_start_and_a_settled_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.execution.executor = ExecutorKind::Binance;
        assert!(
            live_target_to_resume(&cfg, root.path(), None).is_none(),
            "no journal"
        );
        let dir = live_journal_dir(root.path(), "binance");
        drop(intent(&dir, "mm-1"));
        drop(intent(&dir, "mm-2"));
        let target = live_target_to_resume(&cfg, root.path(), None).expect("open orders");
        assert_eq!(target.name(), "binance");
        // Everything settled and flat: nothing to resume.
        let mut j = Journal::open(&dir, "mm", true).unwrap();
        for id in ["mm-1", "mm-2"] {
            j.record(JournalRecord::Event(ExecutionEvent::Rejected {
                client_id: ClientOrderId::parse(id).unwrap(),
                reason: crate::trading::order::RejectReason::NotSent("test".into()),
                time_ms: 2,
            }))
            .unwrap();
        }
        drop(j);
        assert!(live_target_to_resume(&cfg, root.path(), None).is_none());
    }

    #[test]
    fn the_embedded_simulators_journal_is_never_resumed() {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.data.source = DataSource::Sim;
        drop(intent(&live_journal_dir(root.path(), "sim"), "mm-1"));
        let sim = Some(("http://127.0.0.1:1".into(), "ws://127.0.0.1:1".into()));
        assert!(live_target_to_resume(&cfg, root.path(), sim).is_none());
    }
}
