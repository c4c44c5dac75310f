//! The trading process behind the screen: the orchestrator's decisions become intents, the
//! risk manager sizes, checks and protects them, and the executor in force runs them: the
//! paper executor (fills against the live book) until the user goes live, then an exchange
//! executor. Every approved order is journaled before it is sent and every execution report
//! before the account acts on it, so a restart resumes the same positions and ids.
//!
//! **Going live.** The desk must be flat on paper (no position, no working order) and not
//! halted: paper positions are never carried over to a real account, and nothing is closed
//! on the trader's behalf. The live executor keeps its own journal (`<journal_dir>/live-<name>`)
//! so paper history can never be sent to a venue; it is reconciled with the account before it
//! takes over (see [`crate::exec::reconcile::reconcile_for_live`]), and the live account
//! starts from the venue's quote balance plus the journal's live positions. The risk manager
//! starts afresh on the live equity (paper drawdown says nothing about the real account).
//! Whether orders are being sent (`running`) is kept across the switch.
//!
//! **Policy (spot, long only).** BUY opens a long from flat, sized by the risk manager from
//! the stop distance; SELL closes a long with a reduce-only market order; HOLD does nothing.
//! A symbol with a working entry or exit gets no new order until that one is done.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::analysis::model_output::Action;
use crate::config::{Config, DataSource};
use crate::exec::connect::{ExecSection, executor_name, start_executor};
use crate::exec::executor::ExchangeExecutor;
use crate::exec::reconcile::{LiveCheck, ReconcileError, policy_for, reconcile_for_live};
use crate::exec::venue::exchange_symbol;
use crate::market::book::OrderBook;
use crate::market::instrument::Instrument;
use crate::market::snapshot::{MarketSnapshot, SymbolView};
use crate::market::types::{Price, Qty, SCALE, SCALE_DECIMALS, Side};
use crate::orchestrator::decision::Decision;
use crate::trading::executor::{
    ExecutionConfig, Executor, ExecutorKind, ExitLevels, MarketEvent, Protection,
};
use crate::trading::journal::{Journal, JournalError, JournalRecord, JournalState};
use crate::trading::money::Money;
use crate::trading::order::{
    ClientIdGen, ClientOrderId, ExecutionEvent, OrderKind, OrderRequest, OrderStatus,
};
use crate::trading::paper::{PaperConfig, PaperExecutor};
use crate::trading::position::{Portfolio, Position};
use crate::trading::risk::{OrderIntent, RiskAction, RiskConfig, RiskContext, RiskManager};
use crate::trading::risk_state::{RiskState, RiskStore, RiskStoreError};
use crate::tui::desk::{LimitUsage, OrderRow, PositionRow, TradingView};

/// Why the trading session could not start.
#[derive(Debug, thiserror::Error)]
pub enum TradingError {
    /// The journal could not be opened or replayed.
    #[error("order journal: {0}")]
    Journal(#[from] JournalError),
    /// The configured client id prefix is not valid.
    #[error("execution.client_id_prefix: {0}")]
    Prefix(String),
    /// The saved risk state (halt, equity peak, day baseline) exists but cannot be read:
    /// starting without the halt it may hold could trade when it must not.
    #[error("{0}; fix or remove the file after checking why trading was halted")]
    RiskState(#[from] RiskStoreError),
}

/// Why the desk stays on paper after the user asked to go live. Messages never carry
/// credentials: they name what to fix.
#[derive(Debug, thiserror::Error)]
pub enum GoLiveError {
    /// `[execution] executor` is paper and the data do not come from the simulator.
    #[error(
        "no live executor configured: set [execution] executor = \"binance\" or \"mexc\" \
         (keys from the environment or a 0600 credentials file)"
    )]
    NotConfigured,
    /// The paper account holds positions or working orders.
    #[error(
        "the paper account is not flat ({0}): flatten it first; paper positions are not carried over"
    )]
    NotFlat(String),
    /// Trading is halted.
    #[error("trading is halted ({0}): resolve the halt first")]
    Halted(String),
    /// A live executor is already in force.
    #[error("already live on {0}")]
    AlreadyLive(String),
    /// The live journal could not be opened or written.
    #[error("live order journal: {0}")]
    Journal(#[from] JournalError),
    /// The executor could not be built or the venue not reached (keys, URL, exchangeInfo).
    #[error("cannot connect the {name} executor: {reason}")]
    Connect {
        /// Executor name.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// The journal and the account disagree, or the venue could not be asked.
    #[error("{0}")]
    Reconcile(#[from] ReconcileError),
    /// The configured client id prefix is not valid.
    #[error("execution.client_id_prefix: {0}")]
    Prefix(String),
    /// The live account's saved risk state exists but cannot be read.
    #[error("{0}")]
    RiskState(#[from] RiskStoreError),
}

/// What going live connects to: the configured exchange executor, or the simulator's signed
/// trading endpoints when the executor is paper and the data come from the simulator (so the
/// demo path is the live path).
#[derive(Debug, Clone)]
pub struct LiveTarget {
    /// The executor to start.
    pub kind: ExecutorKind,
    /// `[exec]` venue settings.
    pub section: ExecSection,
    /// The simulator's REST and websocket base URLs, when it runs.
    pub sim: Option<(String, String)>,
    /// Journaled intents older than this are never resubmitted by reconciliation, ms.
    pub resubmit_max_age_ms: i64,
}

impl LiveTarget {
    /// The target `cfg` names; `sim` gives the running simulator's (REST, websocket) URLs.
    pub fn resolve(cfg: &Config, sim: Option<(String, String)>) -> Result<Self, GoLiveError> {
        let kind = match cfg.execution.executor {
            ExecutorKind::Paper if cfg.data.source == DataSource::Sim && sim.is_some() => {
                ExecutorKind::Sim
            }
            ExecutorKind::Paper => return Err(GoLiveError::NotConfigured),
            other => other,
        };
        Ok(Self {
            kind,
            section: cfg.exec.clone(),
            sim,
            resubmit_max_age_ms: cfg.execution.resubmit_max_age_ms(),
        })
    }

    /// The executor's name (`sim`, `binance`, `binance-testnet`, `mexc`).
    pub fn name(&self) -> &'static str {
        executor_name(self.kind, &self.section)
    }
}

/// Where the `name` executor's live journal lives under the desk's journal directory.
pub fn live_journal_dir(journal_dir: &Path, name: &str) -> PathBuf {
    journal_dir.join(format!("live-{name}"))
}

/// A connected, reconciled live executor with its journal, ready to take over.
pub struct LiveHandover {
    name: &'static str,
    exec: ExchangeExecutor,
    journal: Journal,
    check: LiveCheck,
}

impl std::fmt::Debug for LiveHandover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHandover")
            .field("name", &self.name)
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl LiveHandover {
    /// The executor's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// What reconciliation did and the account's balances.
    pub fn check(&self) -> &LiveCheck {
        &self.check
    }

    /// Stops the executor without using it (the desk stayed on paper).
    pub fn abandon(self) {
        self.exec.shutdown();
    }
}

/// Connects the executor of `target` (on the current tokio runtime), reconciles `journal`
/// (the live journal, see [`TradingSession::open_live_journal`]) with its account on
/// `symbols`, and hands both back for [`TradingSession::go_live`].
pub async fn connect_live(
    target: &LiveTarget,
    mut journal: Journal,
    symbols: &[String],
) -> Result<LiveHandover, GoLiveError> {
    let name = target.name();
    let sim = target.sim.as_ref().map(|(r, w)| (r.as_str(), w.as_str()));
    let exec = start_executor(target.kind, &target.section, sim)
        .await
        .map_err(|e| GoLiveError::Connect {
            name,
            reason: format!("{e:#}"),
        })?;
    let policy = policy_for(exec.client(), target.resubmit_max_age_ms);
    match reconcile_for_live(
        exec.client(),
        &mut journal,
        symbols,
        crate::logging::now_ms(),
        &policy,
    )
    .await
    {
        Ok(check) => Ok(LiveHandover {
            name,
            exec,
            journal,
            check,
        }),
        Err(e) => {
            exec.shutdown();
            Err(e.into())
        }
    }
}

/// What happened to one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Trading is stopped, the action is HOLD, or nothing is to be done for it.
    Ignored(&'static str),
    /// The risk manager refused it; the reason names the limit and the value.
    Refused(String),
    /// An order was approved, journaled and sent.
    Sent(String),
}

/// The account's position direction per symbol (−1 short, 0 flat, 1 long), published by the
/// trading thread whenever the account may have changed. Readers (the live models) load an
/// immutable snapshot, so they never wait on the trading thread nor it on them.
#[derive(Debug, Default)]
pub struct PositionBoard {
    current: arc_swap::ArcSwap<BTreeMap<String, i8>>,
}

impl PositionBoard {
    /// The published direction of `symbol` (0 when flat or never traded).
    pub fn direction(&self, symbol: &str) -> i8 {
        self.current.load().get(symbol).copied().unwrap_or(0)
    }

    /// Publishes the direction of every open position of `portfolio`.
    pub fn publish(&self, portfolio: &Portfolio) {
        let next: BTreeMap<String, i8> = portfolio
            .positions()
            .filter(|p| p.qty.raw() != 0)
            .map(|p| (p.symbol.clone(), p.qty.raw().signum() as i8))
            .collect();
        if **self.current.load() != next {
            self.current.store(Arc::new(next));
        }
    }
}

/// Decisions → risk → executor (paper, or live once the user goes live), journal in front.
pub struct TradingSession {
    risk: RiskManager,
    risk_cfg: RiskConfig,
    exec_cfg: ExecutionConfig,
    exec: Box<dyn Executor + Send>,
    executor_label: String,
    live: bool,
    portfolio: Portfolio,
    journal: Arc<Mutex<Journal>>,
    journal_dir: PathBuf,
    ids: ClientIdGen,
    quote: String,
    symbols: Vec<String>,
    instruments: HashMap<String, Instrument>,
    books: HashMap<String, OrderBook>,
    last_trade_ids: HashMap<String, u64>,
    running: bool,
    sent: u64,
    refused: u64,
    last_refusal: Option<String>,
    fills: u64,
    max_position: BTreeMap<String, Qty>,
    positions: Arc<PositionBoard>,
    book_updates: HashMap<String, u64>,
    flattening: Option<Flattening>,
    journal_failure: Arc<Mutex<Option<String>>>,
    unjournaled: Vec<ExecutionEvent>,
    risk_store: RiskStore,
    risk_saved: RiskState,
    risk_saved_ms: i64,
    protections: HashMap<ClientOrderId, Protection>,
    desk_exits: BTreeMap<String, ExitLevels>,
    /// The latest time the session has been told (snapshots, commands), ms.
    clock_ms: i64,
}

/// How often an unchanged halt's risk state (a new equity peak, an approval) is saved at most.
const RISK_SAVE_EVERY_MS: i64 = 1_000;

/// A flatten in progress (`X`, the kill switch, a flatten halt): kept until every position is
/// flat, so a flatten order that expires or is rejected is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flattening {
    last_sent_ms: i64,
}

/// How long a flatten waits for its working orders before sending fresh ones.
const FLATTEN_RETRY_MS: i64 = 1_000;

impl std::fmt::Debug for TradingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TradingSession")
            .field("executor", &self.executor_label)
            .field("running", &self.running)
            .field("sent", &self.sent)
            .field("refused", &self.refused)
            .finish()
    }
}

/// Journals each protective exit an executor places by itself before it is placed; a failed
/// write keeps the exit unplaced and halts trading through `failure`.
fn exit_hook(
    journal: &Arc<Mutex<Journal>>,
    failure: &Arc<Mutex<Option<String>>>,
) -> Box<dyn FnMut(&OrderRequest) -> bool + Send> {
    let journal = Arc::clone(journal);
    let failure = Arc::clone(failure);
    Box::new(move |request| {
        let result = match journal.lock() {
            Ok(mut j) => j
                .record(JournalRecord::Intent {
                    request: request.clone(),
                    protection: Default::default(),
                    time_ms: crate::logging::now_ms(),
                })
                .map_err(|e| e.to_string()),
            Err(_) => Err("journal lock poisoned".to_string()),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; exit not placed");
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(format!("journal write failed: {e}"));
                }
                false
            }
        }
    })
}

impl TradingSession {
    /// Opens the journal under `journal_dir`, restores positions and ids from it, and starts
    /// stopped on the paper executor (trading begins on the user's command).
    pub fn open(cfg: &Config, journal_dir: &Path) -> Result<Self, TradingError> {
        let exec = &cfg.execution;
        let journal = Journal::open(journal_dir, &exec.client_id_prefix, true)?;
        let state = journal.state();
        let ids = ClientIdGen::new(&exec.client_id_prefix, state.next_seq())
            .map_err(|e| TradingError::Prefix(e.to_string()))?;
        let quote = cfg
            .symbols
            .first()
            .map(|s| s.quote.clone())
            .unwrap_or_else(|| "USDT".into());
        let mut paper = PaperExecutor::new(PaperConfig::from_execution(exec, &quote));
        let mut portfolio = Portfolio::new(exec.starting_equity, 4096);
        for p in state.positions() {
            portfolio.restore(p);
        }
        // Positions, their stops and take-profits, and the exit id sequence: a restarted paper
        // account protects what it holds and never reuses an exit id.
        paper.restore_from_journal(state);
        let journal = Arc::new(Mutex::new(journal));
        let journal_failure = Arc::new(Mutex::new(None));
        paper.set_exit_hook(exit_hook(&journal, &journal_failure));
        // The halt, peak and day baseline of the last run: a kill switch survives a restart.
        let risk_store = RiskStore::in_dir(journal_dir);
        let mut risk = RiskManager::new(cfg.risk.clone(), exec);
        let risk_saved = risk_store.load()?.unwrap_or_default();
        if risk_saved != RiskState::default() {
            risk.restore(risk_saved.clone(), crate::logging::now_ms());
        }
        Ok(Self {
            risk,
            risk_store,
            risk_saved,
            risk_saved_ms: i64::MIN,
            protections: HashMap::new(),
            desk_exits: BTreeMap::new(),
            clock_ms: i64::MIN,
            risk_cfg: cfg.risk.clone(),
            exec_cfg: exec.clone(),
            exec: Box::new(paper),
            executor_label: "paper".into(),
            live: false,
            portfolio,
            journal,
            journal_dir: journal_dir.to_path_buf(),
            ids,
            quote,
            symbols: cfg.symbols.iter().map(|s| s.exchange.clone()).collect(),
            instruments: HashMap::new(),
            books: HashMap::new(),
            last_trade_ids: HashMap::new(),
            running: false,
            sent: 0,
            refused: 0,
            last_refusal: None,
            fills: 0,
            max_position: cfg.risk.max_position_qty.clone(),
            positions: Arc::new(PositionBoard::default()),
            book_updates: HashMap::new(),
            flattening: None,
            journal_failure,
            unjournaled: Vec::new(),
        })
    }

    /// Publishes the account's positions to `board` from now on (the live models' source).
    pub fn share_positions(&mut self, board: Arc<PositionBoard>) {
        board.publish(&self.portfolio);
        self.positions = board;
    }

    /// Whether decisions are turned into orders.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Turns order sending on or off (positions and their stops stay managed either way).
    pub fn set_running(&mut self, on: bool) {
        if on && let Some(why) = self.journal_failure() {
            tracing::error!("trading stays stopped: the journal failed ({why}); resume first");
            return;
        }
        self.running = on;
    }

    /// Lifts the halt in force by hand (the trader confirmed): a failed journal must take
    /// records again first, and the reports it held back are applied. Trading stays stopped
    /// until started. Returns what was lifted (`None`: nothing was halted).
    pub fn resume(&mut self, now: i64) -> Result<Option<String>, String> {
        let journal = self.journal_failure();
        if journal.is_some() {
            if let Ok(mut f) = self.journal_failure.lock() {
                *f = None;
            }
            self.pump();
            if let Some(why) = self.journal_failure() {
                return Err(format!("the journal still fails: {why}"));
            }
        }
        let halt = self.risk.status(now).halt.map(|h| h.reason.to_string());
        if halt.is_some() {
            self.risk.resume(now, self.portfolio.equity());
        }
        self.running = false;
        self.persist_risk(now);
        if let Some(why) = self.journal_failure() {
            return Err(why);
        }
        Ok(match (journal, halt) {
            (Some(j), Some(h)) => Some(format!("{j}, and {h}")),
            (Some(j), None) => Some(j),
            (None, h) => h,
        })
    }

    /// The executor in force as the screen names it: `paper`, `live: sim`, `live: binance`.
    pub fn executor_label(&self) -> &str {
        &self.executor_label
    }

    /// Whether a live executor is in force.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Whether the desk may go live now: not live already, not halted, flat on paper.
    pub fn check_can_go_live(&self, now: i64) -> Result<(), GoLiveError> {
        if self.live {
            return Err(GoLiveError::AlreadyLive(self.executor_label.clone()));
        }
        if let Some(h) = self.risk.status(now).halt {
            return Err(GoLiveError::Halted(h.reason.to_string()));
        }
        let open: Vec<String> = self
            .portfolio
            .positions()
            .filter(|p| !p.is_flat())
            .map(|p| format!("{} {}", p.qty, p.symbol))
            .chain(
                self.exec
                    .open_orders()
                    .iter()
                    .map(|o| format!("order {}", o.request.client_id)),
            )
            .collect();
        if open.is_empty() {
            Ok(())
        } else {
            Err(GoLiveError::NotFlat(open.join(", ")))
        }
    }

    /// The configured symbols (exchange form), which going live reconciles.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Opens the journal the `name` executor keeps beside the paper one.
    pub fn open_live_journal(&self, name: &str) -> Result<Journal, GoLiveError> {
        let dir = live_journal_dir(&self.journal_dir, name);
        Ok(Journal::open(&dir, &self.exec_cfg.client_id_prefix, true)?)
    }

    /// Hands orders over to a connected live executor (checked again: the desk may have
    /// traded on paper while it connected). On refusal the executor is shut down and the
    /// desk stays on paper.
    pub fn go_live(&mut self, handover: LiveHandover, now: i64) -> Result<(), GoLiveError> {
        if let Err(e) = self.check_can_go_live(now) {
            handover.abandon();
            return Err(e);
        }
        let LiveHandover {
            name,
            mut exec,
            journal,
            check,
        } = handover;
        let state = journal.state();
        let ids = match ClientIdGen::new(&self.exec_cfg.client_id_prefix, state.next_seq()) {
            Ok(ids) => ids,
            Err(e) => {
                exec.shutdown();
                return Err(GoLiveError::Prefix(e.to_string()));
            }
        };
        // The live account's own halt, peak and day baseline, kept beside its journal.
        let live_store = RiskStore::in_dir(journal.path().parent().unwrap_or(Path::new(".")));
        let live_risk = match live_store.load() {
            Ok(saved) => saved.unwrap_or_default(),
            Err(e) => {
                exec.shutdown();
                return Err(e.into());
            }
        };
        let quote_held = check
            .balances
            .iter()
            .filter(|b| b.asset == self.quote)
            .fold(Money::ZERO, |acc, b| {
                acc + Money::notional(Price::from_units(1), b.free + b.locked)
            });
        // Equity is the quote cash plus the journal's live positions at their marks.
        let positions = state.positions();
        let held_cost: Money = positions
            .iter()
            .filter_map(|p| p.avg_entry().map(|e| Money::notional(e, p.qty)))
            .sum();
        let realized: Money = positions.iter().map(|p| p.realized_net()).sum();
        let mut portfolio = Portfolio::new(quote_held + held_cost - realized, 4096);
        for p in positions {
            portfolio.restore(p);
        }
        // The venue's own rules replace the feed's for every symbol it trades.
        for symbol in &self.symbols {
            if let Some(inst) = exec.client().instrument(&exchange_symbol(symbol)) {
                self.instruments.insert(symbol.clone(), inst);
            }
        }
        // Intents handed back for resubmission are not at the venue: they are checked and
        // sent below, never adopted as working orders.
        let unsent: Vec<&ClientOrderId> = check
            .summary
            .to_resubmit
            .iter()
            .map(|(r, _)| &r.client_id)
            .collect();
        exec.adopt(
            state
                .orders()
                .filter(|(o, _)| o.status.is_open() && !unsent.contains(&o.client_id()))
                .map(|(o, p)| (o.clone(), *p)),
        );
        let protections: HashMap<ClientOrderId, Protection> = state
            .orders()
            .map(|(o, p)| (o.client_id().clone(), *p))
            .collect();
        let exec_places_exits = exec.places_exits();
        let desk_exits = if exec_places_exits {
            BTreeMap::new()
        } else {
            desk_exits_from_journal(state)
        };
        let journal = Arc::new(Mutex::new(journal));
        exec.set_exit_hook(exit_hook(&journal, &self.journal_failure));
        for (symbol, book) in &self.books {
            if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                portfolio.mark(symbol, Price((b.price.raw() + a.price.raw()) / 2));
            }
            // The new executor prices its first checks (a resubmission's) from today's book.
            exec.on_market(MarketEvent::Book { symbol, book }, now);
        }
        let s = &check.summary;
        tracing::warn!(
            executor = name,
            adopted = s.adopted,
            to_resubmit = s.to_resubmit.len(),
            stale_rejected = ?s.stale_rejected,
            strays_cancelled = ?s.strays_cancelled,
            "LIVE: orders now go to {name}; the paper account is left behind (paper positions \
             are not carried over)"
        );
        if !exec_places_exits {
            tracing::warn!(
                "{name} has no stop orders: the desk watches every position's stop-loss and \
                 take-profit itself and closes at market (only while the desk runs)"
            );
        }
        self.exec = Box::new(exec);
        self.journal = journal;
        self.ids = ids;
        self.portfolio = portfolio;
        self.positions.publish(&self.portfolio);
        self.risk = RiskManager::new(self.risk_cfg.clone(), &self.exec_cfg);
        if live_risk != RiskState::default() {
            self.risk.restore(live_risk.clone(), now);
        }
        self.risk_store = live_store;
        self.risk_saved = live_risk;
        self.protections = protections;
        self.desk_exits = desk_exits;
        self.executor_label = format!("live: {name}");
        self.live = true;
        self.pump();
        self.resubmit(check.summary.to_resubmit, now);
        Ok(())
    }

    /// Sends again the intents reconciliation found the venue certainly never saw, each only
    /// if the risk manager approves it again, unchanged, at today's prices; every other one
    /// is journaled as rejected so no later recovery sends it.
    fn resubmit(
        &mut self,
        intents: Vec<(OrderRequest, crate::trading::risk::Protection)>,
        now: i64,
    ) {
        for (request, protection) in intents {
            let id = request.client_id.clone();
            self.protections.insert(id.clone(), protection);
            let verdict = self.recheck(&request, &protection, now);
            match verdict {
                // Journaled first: a restart judges the venue's answer from this send on.
                Ok(_)
                    if !self.journal_record(JournalRecord::Resent {
                        client_id: id.clone(),
                        time_ms: crate::logging::now_ms().max(now),
                    }) => {}
                Ok(approved) => match self.exec.submit(approved) {
                    Ok(()) => tracing::warn!(client_id = %id, "reconciliation: intent resubmitted"),
                    Err(e) => self.reject_unsent(&id, format!("resubmission not taken: {e}"), now),
                },
                Err(why) => {
                    tracing::warn!(client_id = %id, "reconciliation: intent not resubmitted: {why}");
                    self.reject_unsent(&id, why, now);
                }
            }
        }
        self.pump();
    }

    fn recheck(
        &mut self,
        request: &OrderRequest,
        protection: &crate::trading::risk::Protection,
        now: i64,
    ) -> Result<crate::trading::risk::ApprovedOrder, String> {
        let instrument = self
            .instruments
            .get(&request.symbol)
            .ok_or_else(|| format!("no instrument rules for {}", request.symbol))?;
        let reference = self
            .exec
            .last_price(&request.symbol)
            .filter(|p| p.raw() > 0)
            .ok_or_else(|| format!("no price for {} to check it again at", request.symbol))?;
        let open = self.exec.open_orders();
        let ctx = RiskContext::from_account(now, instrument, reference, &self.portfolio, &open);
        let approved = self
            .risk
            .check(OrderIntent::from_request(request, protection), &ctx)
            .map_err(|r| format!("refused by the risk check at today's prices: {r}"))?;
        if approved.request() != request {
            return Err(format!(
                "the risk check at today's prices changed it ({} -> {})",
                request.qty,
                approved.request().qty
            ));
        }
        Ok(approved)
    }

    /// Journals that an intent ended without reaching the executor, so no recovery sends it.
    fn reject_unsent(&mut self, id: &ClientOrderId, why: String, now: i64) {
        self.journal_record(JournalRecord::Event(ExecutionEvent::Rejected {
            client_id: id.clone(),
            reason: crate::trading::order::RejectReason::NotSent(why),
            time_ms: now,
        }));
    }

    /// The instrument rules orders are rounded and checked against (from exchangeInfo).
    pub fn set_instrument(&mut self, instrument: Instrument) {
        self.instruments
            .insert(instrument.symbol.clone(), instrument);
    }

    /// Feeds the latest market snapshot: books and trades to the executor (fills, stops),
    /// prices and time to the risk manager (breakers), then applies what a halt requires.
    pub fn on_snapshot(&mut self, snap: &MarketSnapshot) {
        let now = snap.time_ms;
        self.clock_ms = self.clock_ms.max(now);
        for view in &snap.symbols {
            if let Some(inst) = &view.instrument {
                self.instruments
                    .entry(inst.symbol.clone())
                    .or_insert_with(|| (**inst).clone());
            }
            self.feed_symbol(view, now);
        }
        self.risk.on_time(now);
        self.risk.on_equity(self.portfolio.equity(), now);
        self.apply_risk_actions(now);
        self.exec.on_time(now);
        self.pump();
        self.drive_flatten(now);
        self.persist_risk(now);
    }

    /// Saves the risk state when it changed: at once for a new halt, resume or day, at most
    /// once a second for a new peak or approval. A save that fails halts trading like a
    /// journal failure (fail closed: a halt must not be forgotten by the next start).
    fn persist_risk(&mut self, now: i64) {
        let state = self.risk.state();
        if state == self.risk_saved {
            return;
        }
        let urgent = state.halt != self.risk_saved.halt || state.day != self.risk_saved.day;
        if !urgent && now.saturating_sub(self.risk_saved_ms) < RISK_SAVE_EVERY_MS {
            return;
        }
        match self.risk_store.save(&state) {
            Ok(()) => {
                self.risk_saved = state;
                self.risk_saved_ms = now;
            }
            Err(e) => self.fail_journal(format!("risk state not saved: {e}")),
        }
    }

    fn feed_symbol(&mut self, view: &SymbolView, now: i64) {
        let symbol = view.exchange.as_str();
        if !view.bids.is_empty() && !view.asks.is_empty() {
            let book = self.books.entry(symbol.to_string()).or_default();
            book.apply_snapshot(&view.bids, &view.asks, now.max(0) as u64);
            let mid = match (book.best_bid(), book.best_ask()) {
                (Some(b), Some(a)) => Some(Price((b.price.raw() + a.price.raw()) / 2)),
                _ => None,
            };
            if let Some(mid) = mid {
                self.portfolio.mark(symbol, mid);
            }
            self.exec.on_market(MarketEvent::Book { symbol, book }, now);
            // A live book that keeps changing is market data even when nobody trades: the
            // stale-data breaker must not halt a quiet symbol whose book is alive.
            let updates = view.book.applied + view.book.resyncs;
            let changed = self.book_updates.insert(symbol.to_string(), updates) != Some(updates);
            if changed
                && view.status == crate::market::snapshot::BookStatus::Live
                && let Some(mid) = mid
            {
                self.risk.on_market(symbol, mid, now);
            }
        }
        if let Some(t) = &view.last_trade
            && self.last_trade_ids.get(symbol) != Some(&t.id)
        {
            self.last_trade_ids.insert(symbol.to_string(), t.id);
            self.exec.on_market(MarketEvent::Trade(t), now);
            self.risk.on_market(symbol, t.price, t.time_ms);
            self.watch_desk_exits(symbol, t.price, now);
        }
    }

    fn apply_risk_actions(&mut self, now: i64) {
        for action in self.risk.take_actions() {
            match action {
                RiskAction::CancelEntries(reason) => {
                    tracing::warn!(
                        %reason,
                        "risk: cancelling working entries (stops and take-profits stay)"
                    );
                    self.cancel_entries(now);
                }
                RiskAction::FlattenAll(reason) => {
                    tracing::warn!(%reason, "risk: flattening every position");
                    self.flatten(now);
                }
            }
        }
    }

    /// Cancels every working entry; reduce-only orders (stops, take-profits, flattens) stay,
    /// so a halt never leaves a position without its protection.
    fn cancel_entries(&mut self, now: i64) {
        let entries: Vec<_> = self
            .exec
            .open_orders()
            .into_iter()
            .filter(|o| !o.request.reduce_only)
            .map(|o| o.request.client_id)
            .collect();
        for id in entries {
            self.cancel_order(&id, now);
        }
        self.pump();
    }

    fn cancel_order(&mut self, id: &ClientOrderId, now: i64) {
        if self.journal_record(JournalRecord::CancelRequest {
            client_id: id.clone(),
            time_ms: now,
        }) && let Err(e) = self.exec.cancel(id)
        {
            tracing::warn!(error = %e, client_id = %id, "cancel failed");
        }
    }

    /// Closes every position at market: working entries are cancelled, resting exits of each
    /// position are cancelled (they hold the balance the close needs), then one reduce-only
    /// market order per position is sent. The flatten stays in force until the account is
    /// flat: an order that expires or is rejected is followed by a fresh one.
    pub fn flatten(&mut self, now: i64) {
        self.clock_ms = self.clock_ms.max(now);
        self.flattening = Some(Flattening {
            last_sent_ms: i64::MIN,
        });
        self.cancel_entries(now);
        self.drive_flatten(now);
    }

    /// Ends a flatten once every position is closed, and says so; `false` while one is open.
    fn finish_flatten(&mut self, now: i64) -> bool {
        if self.flattening.is_none() || !self.open_positions().is_empty() {
            return false;
        }
        // Exits left resting for a position that is gone would sell what the account no
        // longer holds: cancel them with the flatten's end.
        let stale_exits: Vec<_> = self
            .exec
            .open_orders()
            .into_iter()
            .filter(|o| o.request.reduce_only && !matches!(o.request.kind, OrderKind::Market))
            .map(|o| o.request.client_id)
            .collect();
        for id in &stale_exits {
            self.cancel_order(id, now);
        }
        self.flattening = None;
        tracing::warn!("flatten done: the account is flat");
        true
    }

    /// Sends what an unfinished flatten still needs, and says when the account is flat.
    fn drive_flatten(&mut self, now: i64) {
        let Some(mut f) = self.flattening else {
            return;
        };
        if self.finish_flatten(now) {
            return;
        }
        let open = self.open_positions();
        let working = self.exec.open_orders();
        let closing = |symbol: &str| {
            working.iter().any(|o| {
                o.request.symbol == symbol
                    && o.request.reduce_only
                    && matches!(o.request.kind, OrderKind::Market)
            })
        };
        let need: Vec<_> = open.into_iter().filter(|p| !closing(&p.symbol)).collect();
        if need.is_empty() || now.saturating_sub(f.last_sent_ms) < FLATTEN_RETRY_MS {
            return;
        }
        // Resting exits lock the quantity on a venue: cancel them before the close is sent.
        let resting: Vec<_> = working
            .iter()
            .filter(|o| o.request.reduce_only && need.iter().any(|p| p.symbol == o.request.symbol))
            .map(|o| o.request.client_id.clone())
            .collect();
        for id in &resting {
            self.cancel_order(id, now);
        }
        self.send_closes(&need, now, "flatten");
        f.last_sent_ms = now;
        self.flattening = Some(f);
        self.pump();
    }

    /// The kill switch: halt, stop sending model orders, cancel every working entry, and
    /// (when configured) flatten every position; the flatten orders themselves are never
    /// cancelled by it.
    pub fn kill_switch(&mut self, now: i64) {
        self.clock_ms = self.clock_ms.max(now);
        self.risk.kill_switch(now);
        self.running = false;
        self.apply_risk_actions(now);
        self.cancel_entries(now);
        // Pressed again while already halted: the halt raised no new action, but whatever
        // is still open is closed all the same.
        if self.risk.config().kill_switch_flattens
            && self.flattening.is_none()
            && !self.open_positions().is_empty()
        {
            self.flatten(now);
        }
        self.persist_risk(now);
    }

    /// After a fill on an executor that does not place exits: a protected entry sets the
    /// position's stop and take-profit (the latest entry's, for the whole position); a flat
    /// position has none.
    fn arm_desk_exits(&mut self, f: &crate::trading::order::Fill) {
        if self.exec.places_exits() {
            return;
        }
        if self.portfolio.qty(&f.symbol).is_zero() {
            self.desk_exits.remove(&f.symbol);
            return;
        }
        if let Some(p) = self.protections.get(&f.client_id)
            && (p.stop_loss.is_some() || p.take_profit.is_some())
        {
            self.desk_exits.insert(
                f.symbol.clone(),
                ExitLevels {
                    stop: p.stop_loss,
                    take_profit: p.take_profit,
                },
            );
        }
    }

    /// The desk's own stop watch (venues without stop orders): a trade at or beyond a
    /// position's stop or take-profit closes it at market, journaled first.
    fn watch_desk_exits(&mut self, symbol: &str, last: Price, now: i64) {
        if self.exec.places_exits() {
            return;
        }
        let Some(levels) = self.desk_exits.get(symbol).copied() else {
            return;
        };
        let Some(position) = self
            .open_positions()
            .into_iter()
            .find(|p| p.symbol == symbol)
        else {
            self.desk_exits.remove(symbol);
            return;
        };
        let long = position.qty.raw() > 0;
        let stop_hit = levels
            .stop
            .is_some_and(|s| if long { last <= s } else { last >= s });
        let tp_hit = levels
            .take_profit
            .is_some_and(|tp| if long { last >= tp } else { last <= tp });
        let closing = self.exec.open_orders().iter().any(|o| {
            o.request.symbol == symbol
                && o.request.reduce_only
                && matches!(o.request.kind, OrderKind::Market)
        });
        if !(stop_hit || tp_hit) || closing {
            return;
        }
        tracing::warn!(
            %symbol,
            %last,
            "desk-watched {} reached: closing at market",
            if stop_hit { "stop-loss" } else { "take-profit" }
        );
        self.send_closes(&[position], now, "desk-watched exit");
        self.pump();
    }

    /// One reduce-only market order per position (journaled first; one the executor does not
    /// take is journaled as rejected).
    fn send_closes(&mut self, positions: &[Position], now: i64, what: &str) {
        for order in self.risk.flatten_orders(positions, &mut self.ids, now) {
            let (request, protection) = (order.request().clone(), *order.protection());
            if !self.journal_record(JournalRecord::Intent {
                request: request.clone(),
                protection,
                time_ms: now,
            }) {
                continue;
            }
            if let Err(e) = self.exec.submit(order) {
                tracing::error!(error = %e, "{what} order not accepted");
                self.reject_unsent(&request.client_id, e.to_string(), now);
            }
        }
    }

    /// The part of a position that can be traded: its size floored to the instrument's lot
    /// step, `None` when that is below the minimum lot (dust a commission charged in the
    /// base asset leaves behind, which no order can sell). The sign is the position's.
    fn closable(&self, p: &Position) -> Option<Position> {
        if p.is_flat() {
            return None;
        }
        let abs = p.qty.raw().abs();
        let tradable = match self.instruments.get(&p.symbol) {
            Some(i) => {
                let step = i.step_size.raw();
                let floored = if step > 0 { abs - abs % step } else { abs };
                if floored < i.min_qty.raw().max(1) {
                    return None;
                }
                floored
            }
            None => abs,
        };
        let mut out = p.clone();
        out.qty = Qty(tradable * p.qty.raw().signum());
        Some(out)
    }

    /// Every position with a tradable size, sized to the lot step (see [`Self::closable`]).
    fn open_positions(&self) -> Vec<Position> {
        self.portfolio
            .positions()
            .filter_map(|p| self.closable(p))
            .collect()
    }

    /// Whether a flatten is still working toward a flat account.
    pub fn is_flattening(&self) -> bool {
        self.flattening.is_some()
    }

    /// Turns one decision into at most one approved, journaled order.
    pub fn on_decision(&mut self, d: &Decision) -> DecisionOutcome {
        if !self.running {
            return DecisionOutcome::Ignored("trading stopped");
        }
        let symbol = d.symbol.as_str();
        let side = match d.action {
            Action::Hold => return DecisionOutcome::Ignored("hold"),
            Action::Buy => Side::Buy,
            Action::Sell => Side::Sell,
        };
        if self
            .exec
            .open_orders()
            .iter()
            .any(|o| o.request.symbol == symbol && !o.request.reduce_only)
        {
            return DecisionOutcome::Ignored("an order is already working");
        }
        let position = self
            .portfolio
            .positions()
            .find(|p| p.symbol == symbol)
            .and_then(|p| self.closable(p))
            .map_or(Qty::ZERO, |p| p.qty);
        let mut intent = OrderIntent::new(self.ids.next_id(), symbol, side, OrderKind::Market);
        match side {
            Side::Buy if position.raw() > 0 => return DecisionOutcome::Ignored("already long"),
            Side::Buy => {}
            Side::Sell if position.raw() <= 0 => {
                return DecisionOutcome::Ignored("nothing to sell");
            }
            Side::Sell => {
                let working = self.exec.open_orders();
                if working.iter().any(|o| {
                    o.request.symbol == symbol
                        && o.request.reduce_only
                        && matches!(o.request.kind, OrderKind::Market)
                }) {
                    return DecisionOutcome::Ignored("a close is already working");
                }
                // A resting stop or take-profit holds the quantity on a venue (and would
                // close it a second time): cancel it before the close goes out.
                let resting: Vec<ClientOrderId> = working
                    .iter()
                    .filter(|o| o.request.symbol == symbol && o.request.reduce_only)
                    .map(|o| o.request.client_id.clone())
                    .collect();
                for id in &resting {
                    self.cancel_order(id, d.time_ms);
                }
                intent.qty = Some(position);
                intent.reduce_only = true;
            }
        }
        self.place(intent, d.price, d.time_ms, &d.reason)
    }

    /// A fresh client id for an intent placed through [`Self::place`].
    pub fn next_client_id(&mut self) -> crate::trading::order::ClientOrderId {
        self.ids.next_id()
    }

    /// Sends one intent through the risk manager and the journal to the executor in force
    /// (`reference` prices the risk checks; the executor's last price when None).
    pub fn place(
        &mut self,
        intent: OrderIntent,
        reference: Option<Price>,
        time_ms: i64,
        reason: &str,
    ) -> DecisionOutcome {
        if let Some(why) = self.journal_failure() {
            self.running = false;
            return DecisionOutcome::Refused(format!("journal failed: {why}"));
        }
        if !self.running {
            return DecisionOutcome::Ignored("trading stopped");
        }
        let symbol = intent.symbol.clone();
        let Some(instrument) = self.instruments.get(&symbol) else {
            return DecisionOutcome::Ignored("no instrument rules yet");
        };
        let Some(reference) = reference
            .or_else(|| self.exec.last_price(&symbol))
            .filter(|p| p.raw() > 0)
        else {
            return DecisionOutcome::Ignored("no price yet");
        };
        let open = self.exec.open_orders();
        let ctx = RiskContext::from_account(time_ms, instrument, reference, &self.portfolio, &open);
        match self.risk.check(intent, &ctx) {
            Err(refusal) => {
                self.refused += 1;
                let text = refusal.to_string();
                tracing::info!(%symbol, reason = %text, "risk refused the order");
                self.last_refusal = Some(text.clone());
                DecisionOutcome::Refused(text)
            }
            Ok(approved) => {
                let request = approved.request().clone();
                self.protections
                    .insert(request.client_id.clone(), *approved.protection());
                if !self.journal_record(JournalRecord::Intent {
                    request: request.clone(),
                    protection: *approved.protection(),
                    time_ms,
                }) {
                    return DecisionOutcome::Refused("journal unavailable".into());
                }
                if let Err(e) = self.exec.submit(approved) {
                    tracing::error!(error = %e, "executor refused an approved order");
                    // Journaled as ended, so no restart or reconciliation ever sends it.
                    self.reject_unsent(&request.client_id, e.to_string(), time_ms);
                    return DecisionOutcome::Refused(e.to_string());
                }
                self.sent += 1;
                tracing::info!(
                    %symbol,
                    side = ?request.side,
                    qty = %request.qty,
                    id = %request.client_id,
                    executor = %self.executor_label,
                    %reason,
                    "order sent"
                );
                self.pump();
                self.persist_risk(time_ms);
                DecisionOutcome::Sent(request.client_id.to_string())
            }
        }
    }

    /// Journals every execution report before the account moves on. A report the journal
    /// cannot take is kept (with every later one, in order) and applied only once it is
    /// journaled: the account never moves on a report a restart would not know.
    pub fn pump(&mut self) {
        let mut reports = std::mem::take(&mut self.unjournaled);
        reports.extend(self.exec.poll_events());
        let mut filled = false;
        let mut reports = reports.into_iter();
        while let Some(ev) = reports.next() {
            if !self.journal_record(JournalRecord::Event(ev.clone())) {
                self.unjournaled.push(ev);
                self.unjournaled.extend(reports);
                break;
            }
            if let ExecutionEvent::Filled(f) = &ev {
                self.fills += 1;
                self.portfolio.apply_fill(f);
                self.arm_desk_exits(f);
                filled = true;
            }
        }
        if filled {
            self.positions.publish(&self.portfolio);
            // The fill that closed the last position ends the flatten at once.
            let now = self.clock_ms;
            self.finish_flatten(now);
        }
    }

    /// Writes one record; a failure halts trading (fail closed) until the journal takes
    /// records again and the trader resumes.
    fn journal_record(&mut self, record: JournalRecord) -> bool {
        let result = match self.journal.lock() {
            Ok(mut j) => j.record(record).map_err(|e| e.to_string()),
            Err(_) => Err("journal lock poisoned".to_string()),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                self.fail_journal(format!("journal write failed: {e}"));
                false
            }
        }
    }

    fn fail_journal(&mut self, why: String) {
        self.running = false;
        if let Ok(mut f) = self.journal_failure.lock()
            && f.is_none()
        {
            tracing::error!(
                "{why}; trading HALTED (no order is sent and no report applied until the \
                 disk works again and the halt is lifted)"
            );
            *f = Some(why);
        }
    }

    /// Why the journal (or the risk state file) refused a write, while that halts trading.
    pub fn journal_failure(&self) -> Option<String> {
        self.journal_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Runs `f` on the journal in force (paper or live).
    pub fn with_journal<T>(&self, f: impl FnOnce(&Journal) -> T) -> Option<T> {
        self.journal.lock().ok().map(|j| f(&j))
    }

    /// The screen's view of the account, risk usage and halt.
    pub fn view(&self, now: i64) -> TradingView {
        let portfolio = &self.portfolio;
        let decimals = |symbol: &str| {
            self.instruments
                .get(symbol)
                .map_or(2, |i| tick_decimals(i.tick_size))
        };
        // Dust below the minimum lot cannot be sold or protected; it counts in equity only.
        let positions: Vec<PositionRow> = portfolio
            .positions()
            .filter(|p| self.closable(p).is_some())
            .map(|p| {
                let mark = portfolio.mark_of(&p.symbol);
                let by_desk = !self.exec.places_exits();
                let exits = if by_desk {
                    self.desk_exits.get(&p.symbol).copied().unwrap_or_default()
                } else {
                    self.exec.exits(&p.symbol)
                };
                let tick = self.instruments.get(&p.symbol).map(|i| i.tick_size);
                PositionRow {
                    symbol: p.symbol.clone(),
                    side: if p.qty.raw() > 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                    qty: Qty(p.qty.raw().abs()),
                    entry: round_to_tick(p.avg_entry().unwrap_or(Price::ZERO), tick),
                    unrealized: mark.map(|m| money_to_price(p.unrealized(m))),
                    stop: exits.stop,
                    take_profit: exits.take_profit,
                    exits_by_desk: by_desk,
                    mark,
                    price_decimals: decimals(&p.symbol),
                }
            })
            .collect();
        let orders: Vec<OrderRow> = self
            .exec
            .open_orders()
            .iter()
            .filter(|o| !matches!(o.status, OrderStatus::Filled | OrderStatus::Cancelled))
            .map(|o| OrderRow {
                symbol: o.request.symbol.clone(),
                side: o.request.side,
                kind: o.request.kind.exchange_type().to_ascii_lowercase(),
                qty: o.request.qty,
                filled: o.filled_qty,
                price: o.request.kind.limit_price().or(o.request.kind.stop_price()),
                price_decimals: decimals(&o.request.symbol),
            })
            .collect();
        let status = self.risk.status(now);
        let cfg = self.risk.config();
        let equity = portfolio.equity();
        let mut limits = Vec::new();
        for p in portfolio.positions().filter(|p| !p.is_flat()) {
            if let Some(max) = self.max_position.get(&p.symbol).filter(|m| m.raw() > 0) {
                let used = p.qty.raw().abs() as f64 / max.raw() as f64;
                limits.push(LimitUsage {
                    name: format!("position {}", p.symbol),
                    used,
                    text: format!("{} / {}", Qty(p.qty.raw().abs()), max),
                });
            }
        }
        // Gross exposure is bounded by equity × max leverage (the risk manager's check); the
        // per-symbol notional limit is a bound of its own, one bar per open position.
        let gross = portfolio.gross_exposure();
        let exposure_limit =
            Money(equity.raw().max(0) * cfg.max_leverage.raw() as i128 / SCALE as i128);
        if exposure_limit.raw() > 0 {
            limits.push(LimitUsage {
                name: "exposure".into(),
                used: gross.raw() as f64 / exposure_limit.raw() as f64,
                text: format!(
                    "{:.0} / {:.0} ({}x equity)",
                    money_to_price(gross).to_f64(),
                    money_to_price(exposure_limit).to_f64(),
                    cfg.max_leverage
                ),
            });
        }
        if cfg.max_position_notional.raw() > 0 {
            for p in portfolio.positions().filter(|p| !p.is_flat()) {
                let Some(mark) = portfolio.mark_of(&p.symbol) else {
                    continue;
                };
                let notional = Money::notional(mark, Qty(p.qty.raw().abs()));
                limits.push(LimitUsage {
                    name: format!("notional {}", p.symbol),
                    used: notional.raw() as f64 / cfg.max_position_notional.raw() as f64,
                    text: format!(
                        "{:.0} / {:.0}",
                        money_to_price(notional).to_f64(),
                        money_to_price(cfg.max_position_notional).to_f64()
                    ),
                });
            }
        }
        if cfg.max_drawdown_bps > 0 && status.equity_peak.raw() > 0 {
            let dd = (status.equity_peak - equity).raw().max(0) as f64 * 10_000.0
                / status.equity_peak.raw() as f64;
            limits.push(LimitUsage {
                name: "drawdown".into(),
                used: dd / f64::from(cfg.max_drawdown_bps),
                text: format!("{:.0} / {} bp", dd, cfg.max_drawdown_bps),
            });
        }
        if cfg.daily_loss_limit_bps > 0 && status.day_start_equity.raw() > 0 {
            let loss = (status.day_start_equity - equity).raw().max(0) as f64 * 10_000.0
                / status.day_start_equity.raw() as f64;
            limits.push(LimitUsage {
                name: "daily loss".into(),
                used: loss / f64::from(cfg.daily_loss_limit_bps),
                text: format!("{:.0} / {} bp", loss, cfg.daily_loss_limit_bps),
            });
        }
        if cfg.max_orders_per_minute > 0 {
            limits.push(LimitUsage {
                name: "orders/min".into(),
                used: f64::from(status.orders_last_minute) / f64::from(cfg.max_orders_per_minute),
                text: format!(
                    "{} / {}",
                    status.orders_last_minute, cfg.max_orders_per_minute
                ),
            });
        }
        TradingView {
            mode: self.executor_label.clone(),
            running: self.running,
            positions,
            orders,
            realized: money_to_price(portfolio.realized_net()),
            unrealized: money_to_price(portfolio.unrealized()),
            equity: money_to_price(equity),
            fills: self.fills,
            limits,
            halted: match (self.journal_failure(), status.halt) {
                (Some(j), _) => Some(j),
                (None, h) => h.map(|h| h.reason.to_string()),
            },
            flatten: self.flattening.map(|_| {
                let n = portfolio.positions().filter(|p| !p.is_flat()).count();
                format!("flattening: {n} position(s) still open")
            }),
        }
    }

    /// Orders sent and refused so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.sent, self.refused)
    }

    /// The last refusal's reason.
    pub fn last_refusal(&self) -> Option<&str> {
        self.last_refusal.as_deref()
    }

    /// The account's equity now.
    pub fn equity(&self) -> Money {
        self.portfolio.equity()
    }

    /// The account's position in `symbol` (signed quantity).
    pub fn position_qty(&self, symbol: &str) -> Qty {
        self.portfolio.qty(symbol)
    }
}

/// The exits of every open position a replayed journal holds: the latest filled, protected
/// entry on the position's side sets them (as the paper executor restores its own).
fn desk_exits_from_journal(state: &JournalState) -> BTreeMap<String, ExitLevels> {
    let positions = state.positions();
    let mut latest: BTreeMap<String, (i64, ExitLevels)> = BTreeMap::new();
    for (o, p) in state.orders() {
        let req = &o.request;
        if req.reduce_only || o.filled_qty.is_zero() || p.stop_loss.is_none() {
            continue;
        }
        let Some(pos) = positions
            .iter()
            .find(|x| x.symbol == req.symbol && !x.is_flat())
        else {
            continue;
        };
        if (pos.qty.raw() > 0) != (req.side == Side::Buy) {
            continue;
        }
        if latest
            .get(&req.symbol)
            .is_none_or(|(t, _)| o.updated_ms >= *t)
        {
            let levels = ExitLevels {
                stop: p.stop_loss,
                take_profit: p.take_profit,
            };
            latest.insert(req.symbol.clone(), (o.updated_ms, levels));
        }
    }
    latest.into_iter().map(|(s, (_, l))| (s, l)).collect()
}

/// Decimals a tick size has (`0.01` → 2); prices are shown at the instrument's tick.
fn tick_decimals(tick: Price) -> usize {
    let mut raw = tick.raw();
    if raw <= 0 {
        return SCALE_DECIMALS as usize;
    }
    let mut d = SCALE_DECIMALS as usize;
    while d > 0 && raw % 10 == 0 {
        raw /= 10;
        d -= 1;
    }
    d
}

/// `p` to the nearest multiple of `tick` (half away from zero); unchanged without a tick.
fn round_to_tick(p: Price, tick: Option<Price>) -> Price {
    match tick.map(Price::raw).filter(|&t| t > 0) {
        Some(t) => Price((p.raw() + t / 2).div_euclid(t) * t),
        None => p,
    }
}

/// A quote amount as the screen's exact fixed-point type (saturating: the screen cannot show
/// more than i64 allows anyway).
fn money_to_price(m: Money) -> Price {
    Price(m.raw().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::model_output::ActionValues;
    use crate::market::instrument::InstrumentStatus;
    use crate::orchestrator::decision::Thresholds;
    use crate::tui::fixture;

    fn instrument() -> Instrument {
        Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: Price::parse("0.01").unwrap(),
            step_size: Qty::parse("0.0001").unwrap(),
            min_qty: Qty::parse("0.0001").unwrap(),
            max_qty: Qty::ZERO,
            min_notional: Price::from_units(5),
            status: InstrumentStatus::Trading,
        }
    }

    fn market(t_ms: i64) -> MarketSnapshot {
        let mut snap = fixture::market();
        snap.time_ms = t_ms;
        for s in &mut snap.symbols {
            if let Some(t) = s.last_trade.as_mut() {
                t.time_ms = t_ms;
            }
        }
        snap.symbols[0].instrument = Some(Arc::new(instrument()));
        snap
    }

    fn btc_instrument() -> Instrument {
        Instrument {
            symbol: "BTCUSDT".into(),
            base_asset: "BTC".into(),
            step_size: Qty::parse("0.00001").unwrap(),
            min_qty: Qty::parse("0.00001").unwrap(),
            ..instrument()
        }
    }

    /// Both symbols tradable, trades stamped at `t_ms`.
    fn market2(t_ms: i64) -> MarketSnapshot {
        let mut snap = market(t_ms);
        snap.symbols[1].instrument = Some(Arc::new(btc_instrument()));
        snap
    }

    /// A new public trade on symbol `i` at `price`.
    fn trade(mut snap: MarketSnapshot, i: usize, id: u64, price: Price) -> MarketSnapshot {
        let t = snap.symbols[i].last_trade.as_mut().unwrap();
        t.id = id;
        t.price = price;
        snap
    }

    fn decision_for(symbol: &str, action: Action, t_ms: i64, price: Price) -> Decision {
        Decision {
            symbol: symbol.into(),
            ..decision(action, t_ms, price)
        }
    }

    fn pct(p: Price, bps: i64) -> Price {
        Price(p.raw() + p.raw() / 10_000 * bps)
    }

    /// A session whose paper orders execute at once, fed one snapshot at `t0`.
    fn instant_session(dir: &Path, t0: i64) -> TradingSession {
        let mut cfg = Config::default();
        cfg.execution.latency_ms = 0;
        let mut s = TradingSession::open(&cfg, dir).unwrap();
        s.on_snapshot(&market(t0));
        s
    }

    /// A session at the default paper latency holding a long in both symbols.
    fn two_longs(dir: &Path, t0: i64) -> (TradingSession, Config) {
        let mut cfg = Config::default();
        cfg.risk.max_position_notional = Money::from_units(4_000);
        assert_eq!(cfg.execution.latency_ms, 50, "the desk's default latency");
        let mut s = TradingSession::open(&cfg, dir).unwrap();
        s.on_snapshot(&market2(t0));
        s.set_running(true);
        for sym in ["ETHUSDT", "BTCUSDT"] {
            let mid = s.exec.last_price(sym).unwrap();
            assert!(matches!(
                s.on_decision(&decision_for(sym, Action::Buy, t0, mid)),
                DecisionOutcome::Sent(_)
            ));
        }
        s.on_snapshot(&market2(t0 + 100));
        s.on_snapshot(&market2(t0 + 200));
        assert!(s.position_qty("ETHUSDT").raw() > 0);
        assert!(s.position_qty("BTCUSDT").raw() > 0);
        (s, cfg)
    }

    fn decision(action: Action, t_ms: i64, price: Price) -> Decision {
        Decision {
            symbol: "ETHUSDT".into(),
            time_ms: t_ms,
            action,
            confidence: 0.8,
            combined: ActionValues {
                buy: 0.8,
                sell: 0.1,
                hold: 0.1,
            },
            price: Some(price),
            thresholds: Thresholds {
                buy: 0.55,
                sell: 0.55,
            },
            votes: Vec::new(),
            skipped: Vec::new(),
            reason: "test".into(),
        }
    }

    #[test]
    fn decisions_become_journaled_paper_orders_that_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.execution.latency_ms = 0;
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        let board = Arc::new(PositionBoard::default());
        s.share_positions(Arc::clone(&board));
        s.on_snapshot(&market(t0));
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        // Stopped: nothing is sent.
        assert_eq!(
            s.on_decision(&decision(Action::Buy, t0, mid)),
            DecisionOutcome::Ignored("trading stopped")
        );
        s.set_running(true);
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0, mid)),
            DecisionOutcome::Sent(_)
        ));
        s.on_snapshot(&market(t0 + 1_000));
        let long = s.position_qty("ETHUSDT");
        assert!(long.raw() > 0, "the buy filled against the book");
        assert_eq!(
            board.direction("ETHUSDT"),
            1,
            "the fill reached the models' board"
        );
        // Sized by the risk manager, within its notional limit.
        let notional = Money::notional(mid, long);
        assert!(notional <= cfg.risk.max_position_notional, "{notional:?}");
        let view = s.view(t0 + 1_000);
        assert_eq!(view.positions.len(), 1);
        assert!(view.fills >= 1);
        assert!(view.limits.iter().any(|l| l.name == "orders/min"));
        // Already long: a second BUY is not doubled.
        assert_eq!(
            s.on_decision(&decision(Action::Buy, t0 + 1_000, mid)),
            DecisionOutcome::Ignored("already long")
        );
        drop(s);

        // A restart restores the position from the journal; SELL closes it, ids continue.
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        assert_eq!(s.position_qty("ETHUSDT"), long);
        let board = Arc::new(PositionBoard::default());
        s.share_positions(Arc::clone(&board));
        assert_eq!(
            board.direction("ETHUSDT"),
            1,
            "a restored position is published"
        );
        s.set_running(true);
        s.on_snapshot(&market(t0 + 2_000));
        let DecisionOutcome::Sent(exit_id) =
            s.on_decision(&decision(Action::Sell, t0 + 2_000, mid))
        else {
            panic!("the exit was not sent");
        };
        assert!(
            !exit_id.ends_with("-1"),
            "client ids continue after a restart: {exit_id}"
        );
        s.on_snapshot(&market(t0 + 3_000));
        assert_eq!(s.position_qty("ETHUSDT"), Qty::ZERO);
        assert_eq!(board.direction("ETHUSDT"), 0);
        assert_eq!(
            s.on_decision(&decision(Action::Sell, t0 + 3_000, mid)),
            DecisionOutcome::Ignored("nothing to sell")
        );
    }

    #[test]
    fn going_live_needs_a_flat_unhalted_paper_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.execution.latency_ms = 0;
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        assert_eq!(s.executor_label(), "paper");
        assert_eq!(s.view(t0).mode, "paper");
        assert!(s.check_can_go_live(t0).is_ok());
        s.on_snapshot(&market(t0));
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        s.set_running(true);
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0, mid)),
            DecisionOutcome::Sent(_)
        ));
        s.on_snapshot(&market(t0 + 1_000));
        // Paper positions are never carried over: the trader flattens first.
        match s.check_can_go_live(t0 + 1_000) {
            Err(GoLiveError::NotFlat(what)) => assert!(what.contains("ETHUSDT"), "{what}"),
            other => panic!("a long paper account must not go live: {other:?}"),
        }
        s.kill_switch(t0 + 1_000);
        assert!(matches!(
            s.check_can_go_live(t0 + 1_000),
            Err(GoLiveError::Halted(_))
        ));
        // The live journal lives beside the paper one, never in it.
        let live = s.open_live_journal("sim").unwrap();
        assert!(live.state().open_orders().is_empty());
        assert!(dir.path().join("live-sim").is_dir());
    }

    #[test]
    fn the_live_target_follows_the_configured_executor() {
        let mut cfg = Config::default();
        cfg.data.source = DataSource::Sim;
        let sim = Some((
            "http://127.0.0.1:1".to_string(),
            "ws://127.0.0.1:1".to_string(),
        ));
        let t = LiveTarget::resolve(&cfg, sim.clone()).unwrap();
        assert_eq!((t.kind, t.name()), (ExecutorKind::Sim, "sim"));
        // Without a running simulator, paper has nothing live to become.
        assert!(matches!(
            LiveTarget::resolve(&cfg, None),
            Err(GoLiveError::NotConfigured)
        ));
        cfg.execution.executor = ExecutorKind::Binance;
        let t = LiveTarget::resolve(&cfg, sim).unwrap();
        assert_eq!((t.kind, t.name()), (ExecutorKind::Binance, "binance"));
        cfg.exec.testnet = true;
        assert_eq!(
            LiveTarget::resolve(&cfg, None).unwrap().name(),
            "binance-testnet"
        );
    }

    #[test]
    fn the_kill_switch_halts_and_refusals_carry_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let mut s = instant_session(dir.path(), t0);
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        s.set_running(true);
        s.kill_switch(t0);
        assert!(!s.is_running());
        s.set_running(true);
        match s.on_decision(&decision(Action::Buy, t0, mid)) {
            DecisionOutcome::Refused(why) => assert!(!why.is_empty()),
            other => panic!("a halted desk must refuse, got {other:?}"),
        }
        assert_eq!(s.counts().1, 1);
        assert!(s.view(t0).halted.is_some());
    }

    #[test]
    fn the_kill_switch_flattens_at_the_default_latency() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let (mut s, _) = two_longs(dir.path(), t0);
        s.kill_switch(t0 + 300);
        assert!(s.is_flattening());
        let view = s.view(t0 + 300);
        assert!(
            view.flatten.is_some(),
            "the screen says a flatten is working"
        );
        for k in 1..=10 {
            s.on_snapshot(&market2(t0 + 300 + k * 100));
        }
        assert_eq!(s.position_qty("ETHUSDT"), Qty::ZERO, "ETH still open");
        assert_eq!(s.position_qty("BTCUSDT"), Qty::ZERO, "BTC still open");
        let view = s.view(t0 + 1_300);
        assert!(view.positions.is_empty());
        assert!(view.orders.is_empty(), "{:?}", view.orders);
        assert!(view.halted.is_some(), "still halted after flattening");
        assert_eq!(
            view.flatten, None,
            "the flatten is over once the account is flat"
        );
        assert!(!s.is_flattening());
        // Pressing it again on a flat, halted account sends nothing.
        let sent = s.counts().0;
        s.kill_switch(t0 + 1_400);
        s.on_snapshot(&market2(t0 + 1_500));
        assert_eq!(s.counts().0, sent);
        assert!(
            s.with_journal(|j| j.state().open_orders().is_empty())
                .unwrap()
        );
    }

    #[test]
    fn a_flatten_whose_order_finds_no_book_is_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let (mut s, _) = two_longs(dir.path(), t0);
        s.flatten(t0 + 300);
        // The ETH bids vanish while the flatten order waits out its latency: it expires.
        let mut empty = market2(t0 + 400);
        empty.symbols[0].bids.clear();
        // The session skips a one-sided book, so the executor is shown the empty one directly.
        for t in [t0 + 400, t0 + 401] {
            let book = OrderBook::default();
            let event = MarketEvent::Book {
                symbol: "ETHUSDT",
                book: &book,
            };
            s.exec.on_market(event, t);
            s.on_snapshot(&empty);
        }
        assert!(s.position_qty("ETHUSDT").raw() > 0, "nothing to sell into");
        assert!(s.is_flattening());
        // The book comes back: a fresh flatten order closes what is left.
        for k in 0..20 {
            s.on_snapshot(&market2(t0 + 1_500 + k * 100));
        }
        assert_eq!(s.position_qty("ETHUSDT"), Qty::ZERO);
        assert_eq!(s.position_qty("BTCUSDT"), Qty::ZERO);
        assert!(!s.is_flattening());
    }

    #[test]
    fn a_breaker_halt_cancels_entries_and_keeps_every_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.risk.max_position_notional = Money::from_units(4_000);
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        s.on_snapshot(&market2(t0));
        s.set_running(true);
        let eth = s.exec.last_price("ETHUSDT").unwrap();
        assert!(matches!(
            s.on_decision(&decision_for("ETHUSDT", Action::Buy, t0, eth)),
            DecisionOutcome::Sent(_)
        ));
        s.on_snapshot(&market2(t0 + 100));
        let long = s.position_qty("ETHUSDT");
        assert!(long.raw() > 0);
        // A resting take-profit on the position and a resting entry on BTC.
        let mut tp = OrderIntent::new(
            s.next_client_id(),
            "ETHUSDT",
            Side::Sell,
            OrderKind::Limit {
                price: pct(eth, 300),
                post_only: false,
            },
        );
        tp.qty = Some(long);
        tp.reduce_only = true;
        assert!(matches!(
            s.place(tp, Some(eth), t0 + 100, "test"),
            DecisionOutcome::Sent(_)
        ));
        let btc = s.exec.last_price("BTCUSDT").unwrap();
        let mut entry = OrderIntent::new(
            s.next_client_id(),
            "BTCUSDT",
            Side::Buy,
            OrderKind::Limit {
                price: pct(btc, -300),
                post_only: false,
            },
        );
        entry.qty = Some(Qty::parse("0.001").unwrap());
        assert!(matches!(
            s.place(entry, Some(btc), t0 + 100, "test"),
            DecisionOutcome::Sent(_)
        ));
        s.on_snapshot(&market2(t0 + 200));
        assert_eq!(s.view(t0 + 200).orders.len(), 2);
        // No trade and no book change for longer than stale_data_secs: a breaker halt.
        s.on_snapshot(&market2(t0 + 11_000));
        let view = s.view(t0 + 11_000);
        let halted = view.halted.clone().expect("stale data halts");
        assert!(halted.contains("no market data"), "{halted}");
        assert_eq!(view.orders.len(), 1, "{:?}", view.orders);
        assert_eq!(
            view.orders[0].symbol, "ETHUSDT",
            "the exit stays, the entry goes"
        );
        assert_eq!(view.positions.len(), 1);
        assert!(
            view.positions[0].stop.is_some(),
            "the position keeps its stop"
        );
        assert_eq!(
            s.position_qty("ETHUSDT"),
            long,
            "a breaker halt does not flatten"
        );
    }

    #[test]
    fn a_live_book_keeps_a_quiet_symbol_from_going_stale() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        let mut updates = 0;
        // 30 s without a single new trade, but the books keep changing every second.
        for k in 0..=30 {
            let mut snap = market2(t0 + k * 1_000);
            for v in &mut snap.symbols {
                updates += 1;
                v.book.applied = updates;
            }
            s.on_snapshot(&snap);
            assert_eq!(s.view(t0 + k * 1_000).halted, None, "halted at {k} s");
        }
        // Then the books freeze too: that is stale data.
        for k in 31..=42 {
            let mut snap = market2(t0 + k * 1_000);
            for v in &mut snap.symbols {
                v.book.applied = updates;
            }
            s.on_snapshot(&snap);
        }
        let halted = s.view(t0 + 42_000).halted.expect("a frozen book is stale");
        assert!(halted.contains("no market data"), "{halted}");
    }

    #[test]
    fn a_paper_restart_restores_exits_and_never_reuses_an_exit_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.execution.latency_ms = 0;
        let t0 = fixture::NOW_MS;
        let mut id = 1_000;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        s.on_snapshot(&market(t0));
        s.set_running(true);
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        // Long, stopped out (exit id one), long again.
        for round in 0..2 {
            let t = t0 + round * 10_000;
            assert!(matches!(
                s.on_decision(&decision(Action::Buy, t, mid)),
                DecisionOutcome::Sent(_)
            ));
            s.on_snapshot(&market(t + 100));
            assert!(s.position_qty("ETHUSDT").raw() > 0);
            if round == 0 {
                id += 1;
                s.on_snapshot(&trade(market(t + 200), 0, id, pct(mid, -200)));
                s.on_snapshot(&market(t + 300));
                assert_eq!(s.position_qty("ETHUSDT"), Qty::ZERO, "stopped out");
            }
        }
        let stop = s.view(t0 + 10_200).positions[0].stop;
        assert!(stop.is_some());
        drop(s);

        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        let view = s.view(t0 + 20_000);
        assert_eq!(view.positions.len(), 1);
        assert_eq!(
            view.positions[0].stop, stop,
            "the restored position keeps its stop"
        );
        s.on_snapshot(&market(t0 + 20_000));
        id += 1;
        s.on_snapshot(&trade(market(t0 + 20_100), 0, id, pct(mid, -200)));
        s.on_snapshot(&market(t0 + 20_200));
        assert_eq!(
            s.position_qty("ETHUSDT"),
            Qty::ZERO,
            "the restored stop fired"
        );
        let ids: Vec<String> = s
            .with_journal(|j| {
                j.state()
                    .orders()
                    .map(|(o, _)| o.request.client_id.to_string())
                    .collect()
            })
            .unwrap();
        let exits: Vec<&String> = ids.iter().filter(|i| i.starts_with("mmx-")).collect();
        assert_eq!(exits.len(), 2, "two distinct exits journaled: {ids:?}");
        assert_ne!(exits[0], exits[1]);
    }

    #[test]
    fn the_screen_shows_exposure_against_its_real_limit_and_exits_at_the_tick() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let (s, cfg) = two_longs(dir.path(), t0);
        let view = s.view(t0 + 200);
        let exposure = view
            .limits
            .iter()
            .find(|l| l.name == "exposure")
            .expect("an exposure bar");
        assert!(exposure.used > 0.5 && exposure.used <= 1.0, "{exposure:?}");
        assert!(exposure.text.contains("1x equity"), "{}", exposure.text);
        let limit = money_to_price(cfg.risk.max_position_notional).to_f64();
        for l in view
            .limits
            .iter()
            .filter(|l| l.name.starts_with("notional"))
        {
            assert!(
                l.used <= 1.0 && l.text.ends_with(&format!("{limit:.0}")),
                "{l:?}"
            );
        }
        assert_eq!(view.positions.len(), 2);
        let tick = instrument().tick_size.raw();
        for p in &view.positions {
            assert_eq!(p.price_decimals, 2);
            assert_eq!(p.entry.raw() % tick, 0, "entry at the tick: {}", p.entry);
            let stop = p.stop.expect("every position shows its stop");
            assert!(stop < p.entry);
        }
    }

    #[test]
    fn a_halt_is_lifted_by_resume_and_trading_stays_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let mut s = instant_session(dir.path(), t0);
        assert_eq!(s.resume(t0), Ok(None), "nothing to lift");
        s.kill_switch(t0);
        assert!(s.view(t0).halted.is_some());
        let lifted = s
            .resume(t0 + 1)
            .unwrap()
            .expect("the kill switch was lifted");
        assert!(lifted.contains("kill switch"), "{lifted}");
        assert_eq!(s.view(t0 + 1).halted, None);
        assert!(!s.is_running());
        s.set_running(true);
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0 + 2, mid)),
            DecisionOutcome::Sent(_)
        ));
    }

    #[test]
    fn a_journal_write_failure_halts_trading_and_loses_no_report() {
        use crate::trading::journal::faults::{FaultyFile, Plan};
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        // The same journal file, through a seam that fails writes on demand.
        let plan = Arc::new(Mutex::new(Plan::default()));
        let handle = Arc::clone(&plan);
        let faulty =
            Journal::open_with(dir.path(), "mm", true, move |f| FaultyFile::new(f, handle))
                .unwrap();
        *s.journal.lock().unwrap() = faulty;
        s.on_snapshot(&market(t0));
        s.set_running(true);
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0, mid)),
            DecisionOutcome::Sent(_)
        ));
        // The disk fails before the executor reports the fill.
        plan.lock().unwrap().sync_data_failures = u32::MAX;
        s.on_snapshot(&market(t0 + 100));
        assert_eq!(
            s.position_qty("ETHUSDT"),
            Qty::ZERO,
            "a report the journal did not take is not applied"
        );
        let halted = s.view(t0 + 100).halted.expect("a journal failure halts");
        assert!(halted.contains("journal write failed"), "{halted}");
        assert!(!s.is_running());
        s.set_running(true);
        assert!(
            !s.is_running(),
            "trading cannot be started while the journal fails"
        );
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0 + 100, mid)),
            DecisionOutcome::Ignored(_) | DecisionOutcome::Refused(_)
        ));
        assert!(
            s.resume(t0 + 150).is_err(),
            "not while the disk still fails"
        );
        // The disk recovers: resuming journals the held reports, in order, then applies them.
        plan.lock().unwrap().sync_data_failures = 0;
        let lifted = s
            .resume(t0 + 200)
            .unwrap()
            .expect("the journal halt is lifted");
        assert!(lifted.contains("journal"), "{lifted}");
        let long = s.position_qty("ETHUSDT");
        assert!(long.raw() > 0, "the held fill is applied once journaled");
        assert_eq!(s.view(t0 + 200).halted, None);
        drop(s);
        let replayed = TradingSession::open(&cfg, dir.path()).unwrap();
        assert_eq!(
            replayed.position_qty("ETHUSDT"),
            long,
            "the journal has the fill"
        );
    }

    #[test]
    fn the_kill_switch_and_the_equity_peak_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let mut s = instant_session(dir.path(), t0);
        let peak = s.risk.status(t0).equity_peak;
        assert!(peak.raw() > 0);
        s.kill_switch(t0 + 1);
        drop(s);
        let cfg = {
            let mut c = Config::default();
            c.execution.latency_ms = 0;
            c
        };
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        let halted = s
            .view(t0 + 2)
            .halted
            .expect("the kill switch survives a restart");
        assert!(halted.contains("kill switch"), "{halted}");
        assert_eq!(s.risk.status(t0 + 2).equity_peak, peak);
        s.on_snapshot(&market(t0 + 3));
        s.set_running(true);
        let mid = s.exec.last_price("ETHUSDT").unwrap();
        assert!(matches!(
            s.on_decision(&decision(Action::Buy, t0 + 3, mid)),
            DecisionOutcome::Refused(_)
        ));
        // Lifted by hand, and that too survives a restart.
        s.resume(t0 + 4).unwrap();
        drop(s);
        let s = TradingSession::open(&cfg, dir.path()).unwrap();
        assert_eq!(s.view(t0 + 5).halted, None);
    }

    #[test]
    fn an_unreadable_risk_state_refuses_to_start_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::trading::risk_state::RISK_STATE_FILE);
        std::fs::write(&path, b"{ not json").unwrap();
        let err = TradingSession::open(&Config::default(), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
    }

    #[test]
    fn a_model_sell_cancels_the_resting_exit_and_never_stacks_a_second_close() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = fixture::NOW_MS;
        let (mut s, _) = two_longs(dir.path(), t0);
        let eth = s.exec.last_price("ETHUSDT").unwrap();
        let long = s.position_qty("ETHUSDT");
        let mut tp = OrderIntent::new(
            s.next_client_id(),
            "ETHUSDT",
            Side::Sell,
            OrderKind::Limit {
                price: pct(eth, 300),
                post_only: false,
            },
        );
        tp.qty = Some(long);
        tp.reduce_only = true;
        assert!(matches!(
            s.place(tp, Some(eth), t0 + 200, "test"),
            DecisionOutcome::Sent(_)
        ));
        s.on_snapshot(&market2(t0 + 250));
        assert_eq!(s.view(t0 + 250).orders.len(), 1, "the take-profit rests");
        assert!(matches!(
            s.on_decision(&decision_for("ETHUSDT", Action::Sell, t0 + 300, eth)),
            DecisionOutcome::Sent(_)
        ));
        // The resting take-profit is gone; only the close works (latency not yet over).
        let orders = s.view(t0 + 300).orders;
        assert_eq!(orders.len(), 1, "{orders:?}");
        assert_eq!(orders[0].kind, "market");
        assert_eq!(
            s.on_decision(&decision_for("ETHUSDT", Action::Sell, t0 + 310, eth)),
            DecisionOutcome::Ignored("a close is already working")
        );
        s.on_snapshot(&market2(t0 + 400));
        assert_eq!(s.position_qty("ETHUSDT"), Qty::ZERO);
    }
}
