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
use crate::exec::reconcile::{LiveCheck, ReconcileError, reconcile_for_live};
use crate::exec::venue::exchange_symbol;
use crate::market::book::OrderBook;
use crate::market::instrument::Instrument;
use crate::market::snapshot::{MarketSnapshot, SymbolView};
use crate::market::types::{Price, Qty, Side};
use crate::orchestrator::decision::Decision;
use crate::trading::executor::{ExecutionConfig, Executor, ExecutorKind, MarketEvent};
use crate::trading::journal::{Journal, JournalError, JournalRecord};
use crate::trading::money::Money;
use crate::trading::order::{ClientIdGen, ExecutionEvent, OrderKind, OrderRequest, OrderStatus};
use crate::trading::paper::{PaperConfig, PaperExecutor};
use crate::trading::position::Portfolio;
use crate::trading::risk::{OrderIntent, RiskAction, RiskConfig, RiskContext, RiskManager};
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
    match reconcile_for_live(
        exec.client(),
        &mut journal,
        symbols,
        crate::logging::now_ms(),
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
}

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

/// Journals each protective exit an executor places by itself before it is placed.
fn exit_hook(journal: &Arc<Mutex<Journal>>) -> Box<dyn FnMut(&OrderRequest) -> bool + Send> {
    let journal = Arc::clone(journal);
    Box::new(move |request| {
        let Ok(mut j) = journal.lock() else {
            return false;
        };
        j.record(JournalRecord::Intent {
            request: request.clone(),
            protection: Default::default(),
            time_ms: crate::logging::now_ms(),
        })
        .map_err(|e| tracing::error!(error = %e, "journal write failed; exit not placed"))
        .is_ok()
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
            portfolio.restore(p.clone());
            paper.restore_position(p);
        }
        let journal = Arc::new(Mutex::new(journal));
        paper.set_exit_hook(exit_hook(&journal));
        Ok(Self {
            risk: RiskManager::new(cfg.risk.clone(), exec),
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
        self.running = on;
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
        exec.adopt(
            state
                .orders()
                .filter(|(o, _)| o.status.is_open())
                .map(|(o, p)| (o.clone(), *p)),
        );
        let journal = Arc::new(Mutex::new(journal));
        exec.set_exit_hook(exit_hook(&journal));
        for (symbol, book) in &self.books {
            if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                portfolio.mark(symbol, Price((b.price.raw() + a.price.raw()) / 2));
            }
        }
        let s = &check.summary;
        tracing::warn!(
            executor = name,
            adopted = s.adopted,
            resubmitted = ?s.resubmitted,
            strays_cancelled = ?s.strays_cancelled,
            "LIVE: orders now go to {name}; the paper account is left behind (paper positions \
             are not carried over)"
        );
        self.exec = Box::new(exec);
        self.journal = journal;
        self.ids = ids;
        self.portfolio = portfolio;
        self.positions.publish(&self.portfolio);
        self.risk = RiskManager::new(self.risk_cfg.clone(), &self.exec_cfg);
        self.executor_label = format!("live: {name}");
        self.live = true;
        self.pump();
        Ok(())
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
    }

    fn feed_symbol(&mut self, view: &SymbolView, now: i64) {
        let symbol = view.exchange.as_str();
        if !view.bids.is_empty() && !view.asks.is_empty() {
            let book = self.books.entry(symbol.to_string()).or_default();
            book.apply_snapshot(&view.bids, &view.asks, now.max(0) as u64);
            if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                self.portfolio
                    .mark(symbol, Price((b.price.raw() + a.price.raw()) / 2));
            }
            self.exec.on_market(MarketEvent::Book { symbol, book }, now);
        }
        if let Some(t) = &view.last_trade
            && self.last_trade_ids.get(symbol) != Some(&t.id)
        {
            self.last_trade_ids.insert(symbol.to_string(), t.id);
            self.exec.on_market(MarketEvent::Trade(t), now);
            self.risk.on_market(symbol, t.price, t.time_ms);
        }
    }

    fn apply_risk_actions(&mut self, now: i64) {
        for action in self.risk.take_actions() {
            match action {
                RiskAction::CancelEntries(reason) => {
                    tracing::warn!(%reason, "risk: cancelling every working order");
                    self.cancel_all(now);
                }
                RiskAction::FlattenAll(reason) => {
                    tracing::warn!(%reason, "risk: flattening every position");
                    self.flatten(now);
                }
            }
        }
    }

    fn cancel_all(&mut self, now: i64) {
        for o in self.exec.open_orders() {
            let id = o.request.client_id.clone();
            if self.journal_record(JournalRecord::CancelRequest {
                client_id: id.clone(),
                time_ms: now,
            }) && let Err(e) = self.exec.cancel(&id)
            {
                tracing::warn!(error = %e, "cancel failed");
            }
        }
        self.pump();
    }

    /// Closes every position at market (reduce-only orders the risk manager never refuses).
    pub fn flatten(&mut self, now: i64) {
        let positions: Vec<_> = self.portfolio.positions().cloned().collect();
        for order in self.risk.flatten_orders(&positions, &mut self.ids, now) {
            let (request, protection) = (order.request().clone(), *order.protection());
            if !self.journal_record(JournalRecord::Intent {
                request,
                protection,
                time_ms: now,
            }) {
                continue;
            }
            if let Err(e) = self.exec.submit(order) {
                tracing::error!(error = %e, "flatten order not accepted");
            }
        }
        self.pump();
    }

    /// The kill switch: halt, cancel every order, and flatten when configured.
    pub fn kill_switch(&mut self, now: i64) {
        self.risk.kill_switch(now);
        self.running = false;
        self.apply_risk_actions(now);
        self.cancel_all(now);
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
        let position = self.portfolio.qty(symbol);
        let mut intent = OrderIntent::new(self.ids.next_id(), symbol, side, OrderKind::Market);
        match side {
            Side::Buy if position.raw() > 0 => return DecisionOutcome::Ignored("already long"),
            Side::Buy => {}
            Side::Sell if position.raw() <= 0 => {
                return DecisionOutcome::Ignored("nothing to sell");
            }
            Side::Sell => {
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
                if !self.journal_record(JournalRecord::Intent {
                    request: request.clone(),
                    protection: *approved.protection(),
                    time_ms,
                }) {
                    return DecisionOutcome::Refused("journal unavailable".into());
                }
                if let Err(e) = self.exec.submit(approved) {
                    tracing::error!(error = %e, "executor refused an approved order");
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
                DecisionOutcome::Sent(request.client_id.to_string())
            }
        }
    }

    /// Journals every execution report before the account moves on.
    pub fn pump(&mut self) {
        let mut filled = false;
        for ev in self.exec.poll_events() {
            if !self.journal_record(JournalRecord::Event(ev.clone())) {
                continue;
            }
            if let ExecutionEvent::Filled(f) = &ev {
                self.fills += 1;
                self.portfolio.apply_fill(f);
                filled = true;
            }
        }
        if filled {
            self.positions.publish(&self.portfolio);
        }
    }

    fn journal_record(&self, record: JournalRecord) -> bool {
        match self.journal.lock() {
            Ok(mut j) => match j.record(record) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "journal write failed");
                    false
                }
            },
            Err(_) => false,
        }
    }

    /// Runs `f` on the journal in force (paper or live).
    pub fn with_journal<T>(&self, f: impl FnOnce(&Journal) -> T) -> Option<T> {
        self.journal.lock().ok().map(|j| f(&j))
    }

    /// The screen's view of the account, risk usage and halt.
    pub fn view(&self, now: i64) -> TradingView {
        let portfolio = &self.portfolio;
        let positions: Vec<PositionRow> = portfolio
            .positions()
            .filter(|p| !p.is_flat())
            .map(|p| {
                let mark = portfolio.mark_of(&p.symbol);
                PositionRow {
                    symbol: p.symbol.clone(),
                    side: if p.qty.raw() > 0 {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                    qty: Qty(p.qty.raw().abs()),
                    entry: p.avg_entry().unwrap_or(Price::ZERO),
                    unrealized: mark.map(|m| money_to_price(p.unrealized(m))),
                    stop: None,
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
        if cfg.max_position_notional.raw() > 0 {
            let gross = portfolio.gross_exposure();
            limits.push(LimitUsage {
                name: "exposure".into(),
                used: gross.raw() as f64 / cfg.max_position_notional.raw() as f64,
                text: format!(
                    "{:.0} / {:.0}",
                    money_to_price(gross).to_f64(),
                    money_to_price(cfg.max_position_notional).to_f64()
                ),
            });
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
            halted: status.halt.map(|h| h.reason.to_string()),
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
        let mut cfg = Config::default();
        cfg.execution.latency_ms = 0;
        let t0 = fixture::NOW_MS;
        let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
        s.on_snapshot(&market(t0));
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
}
