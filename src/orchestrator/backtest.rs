//! The backtester: historical candles go through the same input builder, experts, mixture of
//! experts and feedback as live, candle by candle, and decisions are executed with fees and
//! slippage into exact position accounting. Pure logic: no I/O (the command reads the files
//! and writes the reports).
//!
//! **Same trading path as live.** Every order is an intent checked by the live
//! [`RiskManager`] (sizing from the stop distance, position/leverage/rate limits, drawdown and
//! daily-loss halts, a stop-loss attached to each entry) and executed by the live
//! [`PaperExecutor`] (fees, latency, protective exits).
//!
//! **Timing.** A decision is made at the close of candle `t` from an input built at that close
//! (only candles closed by then, see `analysis::input`). At each close the paper executor sees
//! a book around the close (best bid/ask the slippage away, deep) and a trade at the close;
//! an order submitted at `t` becomes active after the executor's latency and fills against
//! that book, paying the taker fee. Nothing later than `t` is read before the decision at `t`,
//! so changing the future leaves past decisions unchanged.
//!
//! **Orders.** BUY enters long (closing a short first), sized by the risk manager; SELL
//! closes a long (reduce-only) and, with `allow_short`, enters short; HOLD keeps the position.
//! Round trips run from flat to flat (a flip closes one and opens the next). The buy-and-hold
//! benchmark buys `position_fraction` of the starting equity at the first close.
//!
//! **Batching.** When no expert reads earlier outputs, inputs are built `batch` candles ahead
//! and the experts compute what does not depend on the account for all of them at once (the
//! CNN); the steps then run one by one, and after each the experts are told the position its
//! fills left, which the next step's DQN state holds. This gives the same decisions and
//! trades as stepping one candle at a time.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::OrchestratorConfig;
use super::coordinator::RunMode;
use super::decision::{Decision, ThresholdHandle, Thresholds};
use super::engine::{Engine, EngineError};
use super::expert::Expert;
use super::history::{HistoryError, HistoryFeed};
use super::metrics::{Metrics, metrics, periods_per_year};
use crate::analysis::input::{BaseDataInput, InputConfig};
use crate::analysis::model_output::Action;
use crate::market::book::OrderBook;
use crate::market::instrument::{Instrument, InstrumentStatus};
use crate::market::types::{Candle, Level, Price, Qty, SCALE, Side, Symbol, Trade};
use crate::trading::executor::{ExecutionConfig, Executor, MarketEvent};
use crate::trading::money::Money;
use crate::trading::order::{ClientIdGen, ClientOrderId, ExecutionEvent, Fill, OrderKind};
use crate::trading::paper::{PaperConfig, PaperExecutor};
use crate::trading::position::Portfolio;
use crate::trading::risk::{OrderIntent, RiskConfig, RiskContext, RiskManager};

/// Why a backtest could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BacktestError {
    /// The orchestrator could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The candles cannot be fed.
    #[error("candle {index}: {source}")]
    Candle {
        /// Index in the candle list.
        index: usize,
        /// What was wrong.
        source: HistoryError,
    },
    /// The interval fits no timeframe.
    #[error(transparent)]
    Interval(HistoryError),
    /// No candle closes inside the requested range.
    #[error("no candle closes between {from_ms} and {to_ms}")]
    EmptyRange {
        /// Start, ms.
        from_ms: i64,
        /// End, ms.
        to_ms: i64,
    },
    /// Client order ids cannot be generated.
    #[error("client order ids: {0}")]
    ClientId(String),
    /// A fold's experts could not be prepared (e.g. its models failed to train).
    #[error("walk-forward fold {fold} (train {train_from_ms}..{train_to_ms}): {message}")]
    FoldExperts {
        /// Fold number, from 0.
        fold: usize,
        /// Train window start, ms.
        train_from_ms: i64,
        /// Train window end, ms.
        train_to_ms: i64,
        /// What went wrong.
        message: String,
    },
    /// A walk-forward window is not positive.
    #[error("walk-forward windows must be positive, got train {train_ms} ms, test {test_ms} ms")]
    Windows {
        /// Train window, ms.
        train_ms: i64,
        /// Test window, ms.
        test_ms: i64,
    },
}

/// What to backtest.
#[derive(Debug, Clone, Copy)]
pub struct BacktestSpec<'a> {
    /// Canonical symbol.
    pub symbol: &'a str,
    /// Candles, strictly ascending, on the `interval_ms` grid.
    pub candles: &'a [Candle],
    /// Candle length, ms.
    pub interval_ms: i64,
    /// First decision at the first candle close at or after this (earlier candles warm up).
    pub from_ms: i64,
    /// Last decision at the last candle close at or before this.
    pub to_ms: i64,
}

/// The live trading rules a backtest trades under (`[risk]` and `[execution]`).
#[derive(Debug, Clone, Default)]
pub struct TradingSetup {
    /// Risk limits.
    pub risk: RiskConfig,
    /// Paper fees, latency, starting equity, default exits.
    pub execution: ExecutionConfig,
}

/// One executed fill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradeRecord {
    /// Execution time, ms.
    pub time_ms: i64,
    /// Buy or sell.
    pub side: Side,
    /// Execution price (after slippage).
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
    /// Fee paid, quote.
    pub fee: Money,
    /// Position after the fill.
    pub position: Qty,
    /// The decision's reason.
    pub reason: String,
}

/// A compact decision record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Step time, ms.
    pub time_ms: i64,
    /// The action.
    pub action: Action,
    /// Its combined probability.
    pub confidence: f64,
    /// Why.
    pub reason: String,
}

impl From<&Decision> for DecisionRecord {
    fn from(d: &Decision) -> Self {
        Self {
            time_ms: d.time_ms,
            action: d.action,
            confidence: d.confidence,
            reason: d.reason.clone(),
        }
    }
}

/// Everything a backtest produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestResult {
    /// Symbol.
    pub symbol: Symbol,
    /// Candle length, ms.
    pub interval_ms: i64,
    /// First decision time.
    pub first_ms: i64,
    /// Last decision time.
    pub last_ms: i64,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Strategy equity after each step, quote.
    pub equity: Vec<(i64, f64)>,
    /// Buy-and-hold equity after each step, quote.
    pub benchmark: Vec<(i64, f64)>,
    /// Every fill.
    pub trades: Vec<TradeRecord>,
    /// Every decision.
    pub decisions: Vec<DecisionRecord>,
    /// Strategy statistics.
    pub metrics: Metrics,
    /// Buy-and-hold statistics.
    pub benchmark_metrics: Metrics,
    /// Final exact equity.
    pub final_equity: Money,
    /// Experts' final accuracy.
    pub accuracy: BTreeMap<String, f64>,
    /// Expert outputs missing (failed) over the run.
    pub skipped_outputs: u64,
    /// Intents the risk manager refused, with the first few reasons.
    pub refusals: u64,
    /// The first refusal reasons (at most 20).
    pub refusal_reasons: Vec<String>,
}

/// Fills at a reference price with slippage and taker fee, into a portfolio (the buy-and-hold
/// benchmark).
struct Broker {
    symbol: Symbol,
    fee_bps: Price,
    slippage_bps: u32,
    seq: u64,
    ids: ClientIdGen,
    portfolio: Portfolio,
}

impl Broker {
    fn new(
        symbol: &str,
        prefix: &str,
        equity: Money,
        fee_bps: Price,
        slippage_bps: u32,
    ) -> Result<Self, BacktestError> {
        Ok(Self {
            symbol: symbol.into(),
            fee_bps,
            slippage_bps,
            seq: 0,
            ids: ClientIdGen::new(prefix, 1).map_err(|e| BacktestError::ClientId(e.to_string()))?,
            portfolio: Portfolio::new(equity, 1 << 20),
        })
    }

    /// Execution price of a `side` order at `reference`: worse by the slippage, rounded
    /// against the trader.
    fn price(&self, side: Side, reference: Price) -> Price {
        let raw = reference.raw() as i128;
        let bps = self.slippage_bps as i128;
        Price(match side {
            Side::Buy => (raw * (10_000 + bps) + 9_999) / 10_000,
            Side::Sell => raw * (10_000 - bps).max(0) / 10_000,
        } as i64)
    }

    /// Quantity worth `budget` at `price`, floored to 1e-8.
    fn qty_for(budget: Money, price: Price) -> Qty {
        if price.raw() <= 0 || budget.raw() <= 0 {
            return Qty::ZERO;
        }
        let q = budget.raw() * SCALE as i128 / price.raw() as i128;
        Qty(q.min(i64::MAX as i128) as i64)
    }

    fn fill(&mut self, side: Side, qty: Qty, reference: Price, time_ms: i64) -> Fill {
        self.seq += 1;
        let price = self.price(side, reference);
        // Exact fee: notional × bps / 10 000, rounded up to 1e-8.
        let num = Money::notional(price, qty).raw() * self.fee_bps.raw() as i128;
        let den = 10_000 * SCALE as i128;
        let fee_quote = Money((num + den - 1).div_euclid(den));
        let fill = Fill {
            client_id: self.ids.next_id(),
            symbol: self.symbol.clone(),
            side,
            price,
            qty,
            fee: Qty(fee_quote.raw().clamp(0, i64::MAX as i128) as i64),
            fee_asset: "QUOTE".into(),
            fee_quote,
            is_maker: false,
            time_ms,
            trade_id: format!("bt-{}", self.seq),
        };
        self.portfolio.apply_fill(&fill);
        fill
    }
}

/// The live trading path at candle resolution: risk manager + paper executor.
struct Desk {
    symbol: Symbol,
    risk: RiskManager,
    paper: PaperExecutor,
    instrument: Instrument,
    ids: ClientIdGen,
    slippage_bps: u32,
    latency_ms: i64,
    book: OrderBook,
    seq: u64,
    reasons: BTreeMap<ClientOrderId, String>,
    refusals: u64,
    refusal_reasons: Vec<String>,
}

impl Desk {
    fn new(symbol: &str, setup: &TradingSetup, slippage_bps: u32) -> Result<Self, BacktestError> {
        let mut paper_cfg = PaperConfig::from_execution(&setup.execution, "QUOTE");
        paper_cfg.exit_prefix = "btx".into();
        Ok(Self {
            symbol: symbol.into(),
            risk: RiskManager::new(setup.risk.clone(), &setup.execution),
            paper: PaperExecutor::new(paper_cfg),
            instrument: Instrument {
                symbol: symbol.into(),
                base_asset: "BASE".into(),
                quote_asset: "QUOTE".into(),
                tick_size: Price(1),
                step_size: Qty(1),
                min_qty: Qty(1),
                max_qty: Qty::ZERO,
                min_notional: Price::ZERO,
                status: InstrumentStatus::Trading,
            },
            ids: ClientIdGen::new("bt", 1).map_err(|e| BacktestError::ClientId(e.to_string()))?,
            slippage_bps,
            latency_ms: setup.execution.latency_ms.min(60_000) as i64,
            book: OrderBook::new(),
            seq: 0,
            reasons: BTreeMap::new(),
            refusals: 0,
            refusal_reasons: Vec::new(),
        })
    }

    /// The market at candle close `t`: a deep book the slippage around the close, a trade at
    /// the close (stops trigger on it), and the account's equity for the risk limits.
    fn market(&mut self, close: Price, t: i64) {
        self.seq += 1;
        let bps = i128::from(self.slippage_bps);
        let raw = close.raw() as i128;
        let bid = Price((raw * (10_000 - bps).max(1) / 10_000) as i64);
        let ask = Price(((raw * (10_000 + bps) + 9_999) / 10_000) as i64);
        let deep = Qty::from_units(1_000_000_000);
        self.book.apply_snapshot(
            &[Level {
                price: bid,
                qty: deep,
            }],
            &[Level {
                price: ask,
                qty: deep,
            }],
            self.seq,
        );
        self.paper.on_time(t);
        self.paper.on_market(
            MarketEvent::Book {
                symbol: &self.symbol,
                book: &self.book,
            },
            t,
        );
        let trade = Trade {
            symbol: self.symbol.clone(),
            id: self.seq,
            time_ms: t,
            price: close,
            qty: Qty(1),
            taker_side: Side::Buy,
        };
        self.paper.on_market(MarketEvent::Trade(&trade), t);
        self.risk.on_market(&self.symbol, close, t);
        self.risk.on_equity(self.paper.equity(), t);
    }

    /// Sends an intent through the risk manager to the paper executor; fills after latency.
    fn order(
        &mut self,
        side: Side,
        qty: Option<Qty>,
        reduce_only: bool,
        close: Price,
        t: i64,
        reason: &str,
    ) {
        let id = self.ids.next_id();
        let intent = OrderIntent {
            qty,
            reduce_only,
            ..OrderIntent::new(id.clone(), &self.symbol, side, OrderKind::Market)
        };
        let portfolio = self.paper.portfolio();
        let ctx = RiskContext {
            now_ms: t,
            instrument: &self.instrument,
            reference_price: close,
            equity: self.paper.equity(),
            position_qty: portfolio.qty(&self.symbol),
            open_buy_qty: Qty::ZERO,
            open_sell_qty: Qty::ZERO,
            gross_exposure: portfolio.gross_exposure(),
            open_order_exposure: Money::ZERO,
        };
        let refused = match self.risk.check(intent, &ctx) {
            Ok(approved) => self.paper.submit(approved).err().map(|e| e.to_string()),
            Err(r) => Some(r.to_string()),
        };
        if let Some(why) = refused {
            self.refusals += 1;
            if self.refusal_reasons.len() < 20 {
                self.refusal_reasons.push(format!("{t}: {why}"));
            }
            return;
        }
        self.reasons.insert(id, reason.to_string());
        let at = t + self.latency_ms;
        self.paper.on_time(at);
        self.paper.on_market(
            MarketEvent::Book {
                symbol: &self.symbol,
                book: &self.book,
            },
            at,
        );
    }

    fn fills(&mut self) -> Vec<Fill> {
        self.paper
            .poll_events()
            .into_iter()
            .filter_map(|e| match e {
                ExecutionEvent::Filled(f) => Some(f),
                _ => None,
            })
            .collect()
    }
}

/// Runs one backtest over `spec` with `experts` under `cfg` (thresholds from `thresholds`,
/// or the configured ones). `progress(done, total)` is called as steps complete.
pub fn run(
    spec: BacktestSpec<'_>,
    cfg: &OrchestratorConfig,
    setup: &TradingSetup,
    experts: Vec<Box<dyn Expert>>,
    thresholds: Option<Thresholds>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BacktestResult, BacktestError> {
    let th = thresholds.unwrap_or(Thresholds {
        buy: cfg.buy_threshold,
        sell: cfg.sell_threshold,
    });
    let handle = ThresholdHandle::new(th.buy, th.sell).map_err(|e| {
        EngineError::Config(format!("orchestrator.{}_threshold", e.side), e.to_string())
    })?;
    let mut engine = Engine::new(cfg.clone(), experts, RunMode::Inline, handle)?;
    let mut feed = HistoryFeed::new(spec.symbol, spec.interval_ms, InputConfig::default())
        .map_err(BacktestError::Interval)?;
    let close_of = |c: &Candle| c.open_time_ms + spec.interval_ms;
    let first = spec.candles.partition_point(|c| close_of(c) < spec.from_ms);
    let end = spec.candles.partition_point(|c| close_of(c) <= spec.to_ms);
    if first >= end {
        return Err(BacktestError::EmptyRange {
            from_ms: spec.from_ms,
            to_ms: spec.to_ms,
        });
    }
    for (index, c) in spec.candles[..first].iter().enumerate() {
        feed.push(c)
            .map_err(|source| BacktestError::Candle { index, source })?;
    }
    let b = &cfg.backtest;
    let equity0 = setup.execution.starting_equity;
    let mut desk = Desk::new(spec.symbol, setup, b.slippage_bps)?;
    // The benchmark buys once at the first close, with the same slippage and taker fee.
    let mut hold = Broker::new(
        spec.symbol,
        "bh",
        equity0,
        setup.execution.taker_fee_bps,
        b.slippage_bps,
    )?;
    let batch = if engine.coordinator().needs_sequential_steps() {
        1
    } else {
        b.batch.max(1)
    };
    let total = end - first;
    let mut equity = Vec::with_capacity(total);
    let mut benchmark = Vec::with_capacity(total);
    let mut trades = Vec::new();
    let mut decisions = Vec::with_capacity(total);
    let mut exposed = 0usize;
    let mut trips: Vec<f64> = Vec::new();
    let mut trip_start: Option<Money> = None;
    let mut done = 0;
    let mut i = first;
    while i < end {
        let upto = (i + batch).min(end);
        let mut inputs: Vec<BaseDataInput> = Vec::with_capacity(upto - i);
        for (index, c) in spec.candles.iter().enumerate().take(upto).skip(i) {
            let t = feed
                .push(c)
                .map_err(|source| BacktestError::Candle { index, source })?;
            inputs.push(feed.input(engine.store().outputs(), t));
        }
        if batch > 1 {
            engine.prefetch(&inputs);
        }
        // Steps run one by one so each sees the position the earlier steps' fills left.
        for (c, x) in spec.candles[i..upto].iter().zip(inputs) {
            let r = engine.step(x);
            let t = close_of(c);
            let d = &r.decision;
            hold.portfolio.mark(spec.symbol, c.close);
            if hold.seq == 0 {
                let budget = equity0.mul_bps_floor((b.position_fraction * 10_000.0) as u32);
                let q = Broker::qty_for(budget, hold.price(Side::Buy, c.close));
                if !q.is_zero() {
                    hold.fill(Side::Buy, q, c.close, t);
                }
            }
            desk.market(c.close, t);
            let pos = desk.paper.portfolio().qty(spec.symbol);
            match d.action {
                Action::Buy if pos.raw() < 0 => {
                    desk.order(
                        Side::Buy,
                        Some(Qty(-pos.raw())),
                        true,
                        c.close,
                        t,
                        &d.reason,
                    );
                    desk.order(Side::Buy, None, false, c.close, t, &d.reason);
                }
                Action::Buy if pos.raw() == 0 => {
                    desk.order(Side::Buy, None, false, c.close, t, &d.reason);
                }
                Action::Sell if pos.raw() > 0 => {
                    desk.order(Side::Sell, Some(pos), true, c.close, t, &d.reason);
                    if b.allow_short {
                        desk.order(Side::Sell, None, false, c.close, t, &d.reason);
                    }
                }
                Action::Sell if pos.raw() == 0 && b.allow_short => {
                    desk.order(Side::Sell, None, false, c.close, t, &d.reason);
                }
                _ => {}
            }
            for fill in desk.fills() {
                let after = desk.paper.portfolio().qty(spec.symbol);
                let realized = desk.paper.portfolio().realized_net();
                let before = match fill.side {
                    Side::Buy => after.raw() - fill.qty.raw(),
                    Side::Sell => after.raw() + fill.qty.raw(),
                };
                if before == 0 {
                    trip_start = Some(realized + fill.fee_quote);
                }
                let closed =
                    before != 0 && (after.is_zero() || after.raw().signum() != before.signum());
                if closed && let Some(start) = trip_start.take() {
                    trips.push((realized - start).to_f64());
                    if !after.is_zero() {
                        trip_start = Some(realized);
                    }
                }
                let reason = desk
                    .reasons
                    .get(&fill.client_id)
                    .cloned()
                    .unwrap_or_else(|| {
                        "protective exit (stop-loss / take-profit / trailing)".into()
                    });
                trades.push(TradeRecord {
                    time_ms: fill.time_ms,
                    side: fill.side,
                    price: fill.price,
                    qty: fill.qty,
                    fee: fill.fee_quote,
                    position: after,
                    reason,
                });
            }
            if !desk.paper.portfolio().qty(spec.symbol).is_zero() {
                exposed += 1;
            }
            let direction = desk.paper.portfolio().qty(spec.symbol).raw().signum() as i8;
            engine.observe_position(spec.symbol, direction);
            equity.push((t, desk.paper.equity().to_f64()));
            benchmark.push((t, hold.portfolio.equity().to_f64()));
            decisions.push(DecisionRecord::from(d));
            done += 1;
        }
        progress(done, total);
        i = upto;
    }
    let per_year = periods_per_year(spec.interval_ms);
    let with_start = |curve: &[(i64, f64)]| {
        std::iter::once(equity0.to_f64())
            .chain(curve.iter().map(|(_, e)| *e))
            .collect::<Vec<_>>()
    };
    let steps = equity.len().max(1) as f64;
    let m = metrics(
        &with_start(&equity),
        per_year,
        exposed as f64 / steps,
        &trips,
        trades.len(),
    );
    let bm = metrics(
        &with_start(&benchmark),
        per_year,
        if hold.seq > 0 { 1.0 } else { 0.0 },
        &[],
        usize::from(hold.seq > 0),
    );
    let accuracy = engine
        .feedback()
        .accuracy()
        .iter()
        .map(|(k, a)| (k.clone(), a.ewma))
        .collect();
    Ok(BacktestResult {
        symbol: spec.symbol.into(),
        interval_ms: spec.interval_ms,
        first_ms: equity.first().map_or(0, |e| e.0),
        last_ms: equity.last().map_or(0, |e| e.0),
        thresholds: th,
        final_equity: desk.paper.equity(),
        equity,
        benchmark,
        trades,
        decisions,
        metrics: m,
        benchmark_metrics: bm,
        accuracy,
        skipped_outputs: engine.snapshot(false).skipped,
        refusals: desk.refusals,
        refusal_reasons: desk.refusal_reasons,
    })
}

/// One walk-forward fold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fold {
    /// Train window `[from, to]`, ms.
    pub train: (i64, i64),
    /// Test window `[from, to]`, ms.
    pub test: (i64, i64),
    /// Thresholds chosen on the train window.
    pub chosen: Thresholds,
    /// Train statistics with the chosen thresholds.
    pub train_metrics: Metrics,
    /// The out-of-sample run.
    pub test_result: BacktestResult,
    /// What the fold's experts learned on the train window (e.g. the models trained), if any.
    pub trained: Option<String>,
}

/// The experts of each walk-forward fold. [`walk_forward_with`] hands `prepare` only the
/// candles of the fold's train window, so whatever it learns cannot see the test window.
pub trait FoldExperts {
    /// Gets ready for fold `fold` from `train` (the candles closing inside its train window,
    /// `interval_ms` long); returns a note on what was learned, or why it failed.
    fn prepare(
        &mut self,
        fold: usize,
        train: &[Candle],
        interval_ms: i64,
    ) -> Result<Option<String>, String>;

    /// A fresh expert set for one run of the prepared fold.
    fn experts(&mut self) -> Result<Vec<Box<dyn Expert>>, String>;
}

/// Experts that learn nothing per fold: a fresh set from the factory for every run.
struct Stateless<'a>(&'a dyn Fn() -> Vec<Box<dyn Expert>>);

impl FoldExperts for Stateless<'_> {
    fn prepare(&mut self, _: usize, _: &[Candle], _: i64) -> Result<Option<String>, String> {
        Ok(None)
    }

    fn experts(&mut self) -> Result<Vec<Box<dyn Expert>>, String> {
        Ok((self.0)())
    }
}

/// Symmetric threshold candidates tried on each train window.
pub const THRESHOLD_GRID: [f64; 5] = [0.35, 0.45, 0.55, 0.65, 0.75];

/// Walk-forward: on each train window, pick the thresholds (from [`THRESHOLD_GRID`]) with the
/// best Sharpe ratio (the experts' accuracies warm up there too), then run the next test
/// window with them; roll by the test length. `experts()` builds a fresh set per run.
pub fn walk_forward(
    spec: BacktestSpec<'_>,
    cfg: &OrchestratorConfig,
    setup: &TradingSetup,
    experts: &dyn Fn() -> Vec<Box<dyn Expert>>,
    train_ms: i64,
    test_ms: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Fold>, BacktestError> {
    walk_forward_with(
        spec,
        cfg,
        setup,
        &mut Stateless(experts),
        train_ms,
        test_ms,
        progress,
    )
}

/// The candles of `spec` that open at or after `from_ms` and close at or before `to_ms`.
fn window<'a>(spec: &BacktestSpec<'a>, from_ms: i64, to_ms: i64) -> &'a [Candle] {
    let c = spec.candles;
    let a = c.partition_point(|x| x.open_time_ms < from_ms);
    let b = c.partition_point(|x| x.open_time_ms + spec.interval_ms <= to_ms);
    &c[a..b.max(a)]
}

/// [`walk_forward`] with experts that learn on each fold's train window first (e.g. models
/// trained there): `experts.prepare` gets that window's candles and nothing later.
pub fn walk_forward_with(
    spec: BacktestSpec<'_>,
    cfg: &OrchestratorConfig,
    setup: &TradingSetup,
    experts: &mut dyn FoldExperts,
    train_ms: i64,
    test_ms: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Fold>, BacktestError> {
    if train_ms <= 0 || test_ms <= 0 {
        return Err(BacktestError::Windows { train_ms, test_ms });
    }
    let mut folds = Vec::new();
    let mut start = spec.from_ms;
    let total = ((spec.to_ms - spec.from_ms - train_ms).max(0) / test_ms + 1) as usize;
    let mut fold = 0;
    while start + train_ms < spec.to_ms {
        let train = (start, start + train_ms);
        let test = (
            start + train_ms,
            (start + train_ms + test_ms).min(spec.to_ms),
        );
        let index = fold;
        let failed = move |message: String| BacktestError::FoldExperts {
            fold: index,
            train_from_ms: train.0,
            train_to_ms: train.1,
            message,
        };
        let trained = experts
            .prepare(fold, window(&spec, train.0, train.1), spec.interval_ms)
            .map_err(failed)?;
        fold += 1;
        let mut best: Option<(Thresholds, Metrics)> = None;
        for &g in &THRESHOLD_GRID {
            let th = Thresholds { buy: g, sell: g };
            let r = run(
                BacktestSpec {
                    from_ms: train.0,
                    to_ms: train.1,
                    ..spec
                },
                cfg,
                setup,
                experts.experts().map_err(failed)?,
                Some(th),
                &mut |_, _| {},
            );
            let m = match r {
                Ok(r) => r.metrics,
                Err(BacktestError::EmptyRange { .. }) => continue,
                Err(e) => return Err(e),
            };
            if best.as_ref().is_none_or(|(_, b)| m.sharpe > b.sharpe) {
                best = Some((th, m));
            }
        }
        let Some((chosen, train_metrics)) = best else {
            start += test_ms;
            continue;
        };
        match run(
            BacktestSpec {
                from_ms: test.0 + 1,
                to_ms: test.1,
                ..spec
            },
            cfg,
            setup,
            experts.experts().map_err(failed)?,
            Some(chosen),
            &mut |_, _| {},
        ) {
            Ok(test_result) => folds.push(Fold {
                train,
                test,
                chosen,
                train_metrics,
                test_result,
                trained,
            }),
            Err(BacktestError::EmptyRange { .. }) => {}
            Err(e) => return Err(e),
        }
        progress(folds.len(), total);
        start += test_ms;
    }
    Ok(folds)
}
