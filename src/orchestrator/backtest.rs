//! The backtester: historical candles go through the same input builder, experts, mixture of
//! experts and feedback as live, candle by candle, and decisions are executed with fees,
//! slippage and market impact into exact position accounting. Pure logic: no I/O (the command
//! reads the files and writes the reports).
//!
//! **Same trading path as live.** Every order is an intent checked by the live
//! [`RiskManager`] (sizing from the stop distance, position/leverage/rate limits, drawdown and
//! daily-loss halts, a stop-loss attached to each entry) and executed by the live
//! [`PaperExecutor`] (fees, latency, protective exits).
//!
//! **Timing.** A decision is made at the close of candle `t` from an input built at that close
//! (only candles closed by then, see `analysis::input`). An order submitted at `t` becomes
//! active after the executor's latency and fills against a deep book whose best bid/ask lie
//! the slippage plus the impact ([`TradingSetup::impact_bps`]) around the close, paying the
//! taker fee. Nothing later than `t` is read before the decision at `t`, so changing the
//! future leaves past decisions unchanged.
//!
//! **Inside a candle (stops and take-profits).** The paper executor triggers exits on trades,
//! so each candle is fed to it as a path of trades, each with a book around its price:
//! the open (1 ms after the candle starts), then both extremes, then the close (1 ms before
//! the candle ends). The extreme against the position comes first: low then high for a long
//! (and when flat), high then low for a short, so when a candle's range holds both the stop
//! and the take-profit, the stop fills (the worse case for the trader). Every stop or
//! take-profit level a leg of the path crosses is fed as a trade at that level, at the time
//! interpolated along the leg, so an exit fills at its level (less slippage and impact), not
//! at the extreme; a candle that opens beyond a stop fills it at the open (a gap). The
//! executor's clock never runs back, so the open is seen once the previous close's entry is
//! active (after the latency). The experts are told the position these exits leave before
//! the step at the close. The breakers see closes only (below), not the path.
//!
//! **Orders.** BUY enters long (closing a short first), sized by the risk manager; SELL
//! closes a long (reduce-only) and, with `allow_short`, enters short; HOLD keeps the position.
//! Round trips run from flat to flat (a flip closes one and opens the next); a stop-out and a
//! re-entry in the same candle are two round trips. The buy-and-hold benchmark buys
//! `position_fraction` of the starting equity at the first close, paying the same costs.
//!
//! **Halts.** The risk manager's breakers run at every close on the close and the equity, as
//! live. A halt refuses entries (exits still pass) and, under `halt_policy = "flatten"`,
//! closes the position. A daily-loss halt ends at the next UTC day, an extreme-move halt
//! after its cool-down, a drawdown halt after [`TradingSetup::drawdown_resume_ms`] (the
//! drawdown is then measured from the equity at that time) or never; every halt is listed in
//! [`BacktestResult::halts`] with the intents it refused.
//!
//! **Batching.** When no expert reads earlier outputs, inputs are built `batch` candles ahead
//! and the experts compute what does not depend on the account for all of them at once (the
//! CNN); the steps then run one by one, and after each the experts are told the position its
//! fills left, which the next step's DQN state holds. This gives the same decisions and
//! trades as stepping one candle at a time.
//!
//! **Walk-forward.** Each fold picks its thresholds on its train window and trades its test
//! window from the starting equity; the folds' test curves are compounded into one
//! out-of-sample curve ([`WalkForward::oos`]), whose statistics, confidence intervals,
//! buy-and-hold benchmark (held across all test windows) and fills are the walk-forward's
//! result.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::OrchestratorConfig;
use super::coordinator::RunMode;
use super::decision::{Decision, ThresholdHandle, Thresholds};
use super::engine::{Engine, EngineError};
use super::expert::Expert;
use super::history::{HistoryError, HistoryFeed};
use super::metrics::{Ci95, Metrics, block_bootstrap, metrics, periods_per_year};
use crate::analysis::input::{BaseDataInput, InputConfig};
use crate::analysis::model_output::Action;
use crate::market::book::OrderBook;
use crate::market::instrument::{Instrument, InstrumentStatus};
use crate::market::types::{Candle, Level, Price, Qty, SCALE, Side, Symbol, Trade};
use crate::trading::executor::{ExecutionConfig, Executor, ExitLevels, MarketEvent};
use crate::trading::money::Money;
use crate::trading::order::{ClientIdGen, ClientOrderId, ExecutionEvent, Fill, OrderKind};
use crate::trading::paper::{PaperConfig, PaperExecutor};
use crate::trading::position::{Portfolio, Position};
use crate::trading::risk::{
    HaltReason, OrderIntent, Refusal, RiskAction, RiskConfig, RiskContext, RiskManager,
};

/// Market impact every backtest fill pays on top of the slippage unless told otherwise, bps.
pub const DEFAULT_IMPACT_BPS: u32 = 1;

/// Bootstrap resamples behind each confidence interval.
pub const CI_RESAMPLES: usize = 2_000;

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
    /// No walk-forward fold had a test window with candles.
    #[error(
        "walk-forward: no fold fits between {from_ms} and {to_ms} (train {train_ms} ms + test)"
    )]
    NoFolds {
        /// Range start, ms.
        from_ms: i64,
        /// Range end, ms.
        to_ms: i64,
        /// Train window, ms.
        train_ms: i64,
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

/// The live trading rules a backtest trades under (`[risk]` and `[execution]`), and what a
/// backtest adds to them.
#[derive(Debug, Clone)]
pub struct TradingSetup {
    /// Risk limits.
    pub risk: RiskConfig,
    /// Paper fees, latency, starting equity, default exits.
    pub execution: ExecutionConfig,
    /// Market impact every fill pays on top of the slippage, basis points (candles carry no
    /// book depth to measure it from).
    pub impact_bps: u32,
    /// How long a drawdown halt lasts before the backtest lifts it, ms (`None`: it stays to
    /// the end, as live until the trader resumes).
    pub drawdown_resume_ms: Option<i64>,
}

impl Default for TradingSetup {
    fn default() -> Self {
        Self {
            risk: RiskConfig::default(),
            execution: ExecutionConfig::default(),
            impact_bps: DEFAULT_IMPACT_BPS,
            drawdown_resume_ms: None,
        }
    }
}

impl TradingSetup {
    /// The live rules with the backtest defaults (impact [`DEFAULT_IMPACT_BPS`], drawdown
    /// halts kept to the end).
    pub fn new(risk: RiskConfig, execution: ExecutionConfig) -> Self {
        Self {
            risk,
            execution,
            ..Self::default()
        }
    }

    /// The halt policy in words, for reports.
    pub fn halt_policy(&self) -> String {
        let dd = match self.drawdown_resume_ms {
            None => "a drawdown halt stays in force to the end of the run".to_string(),
            Some(ms) => format!(
                "a drawdown halt is lifted {} after it starts (the drawdown is then measured \
                 from the equity at that time)",
                duration_text(ms)
            ),
        };
        format!(
            "entries are refused while halted (exits still fill); a daily-loss halt ({} bps) \
             ends at the next UTC day; {dd} ({} bps); an extreme-move halt ends after its \
             {} s cool-down; positions {} when a breaker halts",
            self.risk.daily_loss_limit_bps,
            self.risk.max_drawdown_bps,
            self.risk.extreme_move_cooldown_secs,
            match self.risk.halt_policy {
                crate::trading::risk::HaltPolicy::None => "keep their stops",
                crate::trading::risk::HaltPolicy::Flatten => "are closed at market",
            }
        )
    }
}

/// A duration in ms as `2d`, `6h`, `90m`, `30s` or `1500ms` (the largest exact unit).
pub fn duration_text(ms: i64) -> String {
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % len == 0 {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// The costs every fill of a backtest paid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Costs {
    /// Taker fee, basis points (exact decimal).
    pub taker_fee_bps: Price,
    /// Half-spread of the paper book (slippage), basis points.
    pub slippage_bps: u32,
    /// Market impact on top of the slippage, basis points.
    pub impact_bps: u32,
}

/// One executed fill.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TradeRecord {
    /// Execution time, ms.
    pub time_ms: i64,
    /// Buy or sell.
    pub side: Side,
    /// Execution price (after slippage and impact).
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
    /// Fee paid, quote.
    pub fee: Money,
    /// Position right after this fill.
    pub position: Qty,
    /// The round trip this fill belongs to (from 1; the fill that closes a trip belongs to
    /// it).
    pub trip: u32,
    /// The decision's reason, or which exit filled.
    pub reason: String,
}

/// One round trip: from flat to flat (or to a flip).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundTrip {
    /// Number, from 1 (as in [`TradeRecord::trip`]).
    pub number: u32,
    /// Buy for a long, sell for a short.
    pub side: Side,
    /// First fill's time, ms.
    pub entry_ms: i64,
    /// Closing fill's time, ms.
    pub exit_ms: i64,
    /// First fill's price.
    pub entry_price: Price,
    /// Closing fill's price.
    pub exit_price: Price,
    /// Largest absolute position held.
    pub qty: Qty,
    /// Realized PnL net of every fee of the trip, exact.
    pub pnl: Money,
    /// Why it closed (the closing fill's reason).
    pub exit_reason: String,
}

/// A risk halt during a backtest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HaltRecord {
    /// Why.
    pub reason: HaltReason,
    /// Start, ms.
    pub since_ms: i64,
    /// End, ms (`None`: still in force when the run ended).
    pub ended_ms: Option<i64>,
    /// What ended it (`next UTC day`, `cool-down`, `--resume-after 2d`, `end of run`, ...).
    pub ended_by: String,
    /// Entry intents it refused.
    pub refused_intents: u64,
}

impl HaltRecord {
    /// Short name of the halt's kind (`drawdown`, `daily loss`, ...).
    pub fn kind(&self) -> &'static str {
        halt_kind(&self.reason)
    }
}

/// Short name of a halt reason's kind.
pub fn halt_kind(reason: &HaltReason) -> &'static str {
    match reason {
        HaltReason::Drawdown { .. } => "drawdown",
        HaltReason::DailyLoss { .. } => "daily loss",
        HaltReason::StaleData { .. } => "stale data",
        HaltReason::ExtremeMove { .. } => "extreme move",
        HaltReason::KillSwitch => "kill switch",
    }
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
    /// Thresholds used (a walk-forward's chained result: the last fold's; each fold's are in
    /// its [`Fold::chosen`]).
    pub thresholds: Thresholds,
    /// Costs every fill paid.
    pub costs: Costs,
    /// Starting equity, quote.
    pub start_equity: f64,
    /// Strategy equity after each step, quote.
    pub equity: Vec<(i64, f64)>,
    /// Buy-and-hold equity after each step, quote.
    pub benchmark: Vec<(i64, f64)>,
    /// Every fill.
    pub trades: Vec<TradeRecord>,
    /// Every completed round trip.
    pub round_trips: Vec<RoundTrip>,
    /// Every decision.
    pub decisions: Vec<DecisionRecord>,
    /// Strategy statistics.
    pub metrics: Metrics,
    /// Buy-and-hold statistics.
    pub benchmark_metrics: Metrics,
    /// Staying flat (the other baseline): zero return, zero risk.
    pub flat_metrics: Metrics,
    /// 95 % confidence intervals of the strategy's return and Sharpe ratio (block bootstrap
    /// over days); `None` with fewer than two steps.
    pub ci95: Option<Ci95>,
    /// The same for buy-and-hold.
    pub benchmark_ci95: Option<Ci95>,
    /// Final equity (exact for one run; a walk-forward's compounded value is rounded down
    /// to 1e-8 at each fold).
    pub final_equity: Money,
    /// Experts' final accuracy (a walk-forward: the mean over its folds).
    pub accuracy: BTreeMap<String, f64>,
    /// Expert outputs missing (failed) over the run.
    pub skipped_outputs: u64,
    /// Intents the risk manager refused for a limit (those refused by a halt are counted in
    /// [`Self::halts`]).
    pub refusals: u64,
    /// The first refusal reasons (at most 20).
    pub refusal_reasons: Vec<String>,
    /// Every risk halt, in order.
    pub halts: Vec<HaltRecord>,
    /// The halt policy the run followed, in words.
    pub halt_policy: String,
}

impl BacktestResult {
    /// Halts by kind, e.g. `[("drawdown", 1), ("daily loss", 3)]`.
    pub fn halt_counts(&self) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for h in &self.halts {
            match out.iter_mut().find(|(k, _)| *k == h.kind()) {
                Some((_, n)) => *n += 1,
                None => out.push((h.kind(), 1)),
            }
        }
        out
    }

    /// Entry intents refused by halts.
    pub fn halted_intents(&self) -> u64 {
        self.halts.iter().map(|h| h.refused_intents).sum()
    }
}

/// `price` moved `bps` basis points against the trader on a `side` fill (rounded against
/// them).
fn worse_by(side: Side, price: Price, bps: u32) -> Price {
    let raw = price.raw() as i128;
    let bps = bps as i128;
    Price(match side {
        Side::Buy => (raw * (10_000 + bps) + 9_999) / 10_000,
        Side::Sell => raw * (10_000 - bps).max(1) / 10_000,
    } as i64)
}

/// Fills at a reference price with slippage, impact and taker fee, into a portfolio (the
/// buy-and-hold benchmark).
struct Broker {
    symbol: Symbol,
    fee_bps: Price,
    spread_bps: u32,
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
        spread_bps: u32,
    ) -> Result<Self, BacktestError> {
        Ok(Self {
            symbol: symbol.into(),
            fee_bps,
            spread_bps,
            seq: 0,
            ids: ClientIdGen::new(prefix, 1).map_err(|e| BacktestError::ClientId(e.to_string()))?,
            portfolio: Portfolio::new(equity, 1 << 20),
        })
    }

    /// Execution price of a `side` order at `reference`.
    fn price(&self, side: Side, reference: Price) -> Price {
        worse_by(side, reference, self.spread_bps)
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

    /// Buys `fraction` of `equity` at `close` (once, at the first step).
    fn buy_once(&mut self, equity: Money, fraction: f64, close: Price, t: i64) {
        if self.seq > 0 {
            return;
        }
        let budget = equity.mul_bps_floor((fraction * 10_000.0) as u32);
        let q = Self::qty_for(budget, self.price(Side::Buy, close));
        if !q.is_zero() {
            self.fill(Side::Buy, q, close, t);
        }
    }
}

/// Splits fills into round trips with exact PnL (the same arithmetic as the portfolio).
#[derive(Default)]
struct Trips {
    next: u32,
    open: Option<OpenTrip>,
    done: Vec<RoundTrip>,
}

struct OpenTrip {
    number: u32,
    side: Side,
    entry_ms: i64,
    entry_price: Price,
    position: Position,
    max_qty: i64,
}

impl Trips {
    /// Books `fill`; returns its trip number and the position after it.
    fn on_fill(&mut self, fill: &Fill, reason: &str) -> (u32, Qty) {
        let next = self.next + 1;
        let trip = self.open.get_or_insert_with(|| OpenTrip {
            number: next,
            side: fill.side,
            entry_ms: fill.time_ms,
            entry_price: fill.price,
            position: Position::flat(&fill.symbol),
            max_qty: 0,
        });
        if trip.number == next {
            self.next = next;
        }
        let before = trip.position.qty.raw();
        trip.position
            .apply(fill.side, fill.price, fill.qty, fill.fee_quote);
        let after = trip.position.qty.raw();
        trip.max_qty = trip.max_qty.max(after.abs());
        let number = trip.number;
        let flipped = after != 0 && before != 0 && after.signum() != before.signum();
        if (after == 0 || flipped)
            && let Some(t) = self.open.take()
        {
            self.done.push(RoundTrip {
                number: t.number,
                side: t.side,
                entry_ms: t.entry_ms,
                exit_ms: fill.time_ms,
                entry_price: t.entry_price,
                exit_price: fill.price,
                qty: Qty(t.max_qty.max(before.abs())),
                pnl: t.position.realized - t.position.fees,
                exit_reason: reason.to_string(),
            });
            if flipped {
                // The rest of the fill opens the next trip at the fill price.
                self.next += 1;
                let mut position = Position::flat(&fill.symbol);
                position.qty = Qty(after);
                position.cost = t.position.cost;
                self.open = Some(OpenTrip {
                    number: self.next,
                    side: fill.side,
                    entry_ms: fill.time_ms,
                    entry_price: fill.price,
                    position,
                    max_qty: after.abs(),
                });
            }
        }
        (number, Qty(after))
    }
}

/// Where a trade of the intrabar path lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathPoint {
    Open,
    Extreme,
    Level,
    Close,
}

/// What a protective exit filled on: the levels in force before the trade at `price`.
fn exit_reason(levels: ExitLevels, long: bool, price: Price, at: PathPoint) -> String {
    let stop_hit = levels
        .stop
        .filter(|&s| if long { price <= s } else { price >= s });
    let tp_hit = levels
        .take_profit
        .filter(|&tp| if long { price >= tp } else { price <= tp });
    let gap = |level: Price| at == PathPoint::Open && price != level;
    match (stop_hit, tp_hit) {
        (Some(s), _) if gap(s) => format!("stop-loss {s}: gapped, filled at the open {price}"),
        (Some(s), _) => format!("stop-loss {s}"),
        (None, Some(tp)) if gap(tp) => {
            format!("take-profit {tp}: gapped, filled at the open {price}")
        }
        (None, Some(tp)) => format!("take-profit {tp}"),
        (None, None) => "protective exit".to_string(),
    }
}

/// The live trading path at candle resolution: risk manager + paper executor.
struct Desk {
    symbol: Symbol,
    risk: RiskManager,
    paper: PaperExecutor,
    instrument: Instrument,
    ids: ClientIdGen,
    /// Half-spread of the paper book: slippage plus impact, bps.
    spread_bps: u32,
    latency_ms: i64,
    book: OrderBook,
    seq: u64,
    reasons: BTreeMap<ClientOrderId, String>,
    /// Fills not yet booked into round trips, with their reasons, in order.
    fills: Vec<(Fill, String)>,
    refusals: u64,
    refusal_reasons: Vec<String>,
    halts: Vec<HaltRecord>,
    drawdown_resume_ms: Option<i64>,
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
            spread_bps: slippage_bps.saturating_add(setup.impact_bps),
            latency_ms: setup.execution.latency_ms.min(60_000) as i64,
            book: OrderBook::new(),
            seq: 0,
            reasons: BTreeMap::new(),
            fills: Vec::new(),
            refusals: 0,
            refusal_reasons: Vec::new(),
            halts: Vec::new(),
            drawdown_resume_ms: setup.drawdown_resume_ms,
        })
    }

    fn position(&self) -> i64 {
        self.paper.portfolio().qty(&self.symbol).raw()
    }

    /// A deep book the spread around `price`, shown to the executor at `t`.
    fn quote(&mut self, price: Price, t: i64) {
        self.seq += 1;
        let deep = Qty::from_units(1_000_000_000);
        self.book.apply_snapshot(
            &[Level {
                price: worse_by(Side::Sell, price, self.spread_bps),
                qty: deep,
            }],
            &[Level {
                price: worse_by(Side::Buy, price, self.spread_bps),
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
    }

    /// A trade at `price` (with a book around it) at `t`; exits it triggers fill at once.
    fn trade(&mut self, price: Price, t: i64, at: PathPoint) {
        self.quote(price, t);
        let levels = self.paper.exits(&self.symbol);
        let long = self.position() > 0;
        let trade = Trade {
            symbol: self.symbol.clone(),
            id: self.seq,
            time_ms: t,
            price,
            qty: Qty(1),
            taker_side: Side::Buy,
        };
        self.paper.on_market(MarketEvent::Trade(&trade), t);
        self.collect(|| exit_reason(levels, long, price, at));
    }

    /// Takes the executor's fills, each with the reason of its order (or `exit()` for the
    /// exits the executor placed itself).
    fn collect(&mut self, exit: impl Fn() -> String) {
        for e in self.paper.poll_events() {
            if let ExecutionEvent::Filled(f) = e {
                let reason = self.reasons.remove(&f.client_id).unwrap_or_else(&exit);
                self.fills.push((f, reason));
            }
        }
    }

    /// Feeds candle `c` as the path open → adverse extreme → other extreme → close, with a
    /// trade at every stop/take-profit level a leg crosses (see the module docs).
    fn candle(&mut self, c: &Candle, interval_ms: i64) {
        let o = c.open_time_ms;
        let (first, second) = if self.position() < 0 {
            (c.high, c.low)
        } else {
            (c.low, c.high)
        };
        // Strictly inside the candle: the previous close's orders come first, and nothing of
        // this candle happens at or after its close, when the next decision is made.
        let end = o + interval_ms - 1;
        let at = |k: i64| (o + interval_ms * k / 3).clamp(o + 1, end.max(o + 1));
        let path = [
            (c.open, at(0), PathPoint::Open),
            (first, at(1), PathPoint::Extreme),
            (second, at(2), PathPoint::Extreme),
            (c.close, end.max(o + 1), PathPoint::Close),
        ];
        self.trade(path[0].0, path[0].1, PathPoint::Open);
        for leg in path.windows(2) {
            let (mut from, mut from_t) = (leg[0].0, leg[0].1);
            let (to, to_t, point) = leg[1];
            // At most the stop and the take-profit can lie on a leg; the bound is a guard.
            for _ in 0..4 {
                let lv = self.paper.exits(&self.symbol);
                let crossed = [lv.stop, lv.take_profit]
                    .into_iter()
                    .flatten()
                    .filter(|&l| (from < l && l < to) || (to < l && l < from))
                    .min_by_key(|l| (l.raw() - from.raw()).unsigned_abs());
                let Some(level) = crossed else { break };
                let span = (to.raw() - from.raw()) as i128;
                let part = (level.raw() - from.raw()) as i128;
                let t = from_t + ((to_t - from_t) as i128 * part / span) as i64;
                self.trade(level, t, PathPoint::Level);
                (from, from_t) = (level, t);
            }
            self.trade(to, to_t, point);
        }
    }

    /// The close at `t`: the breakers see the close and the equity, halts start, end and act.
    fn close(&mut self, close: Price, t: i64) {
        self.paper.on_time(t);
        self.risk.on_market(&self.symbol, close, t);
        self.risk.on_equity(self.paper.equity(), t);
        self.track_halt(t);
        if let (Some(after), Some(h)) = (self.drawdown_resume_ms, self.risk.halt())
            && matches!(h.reason, HaltReason::Drawdown { .. })
            && t - h.since_ms >= after
        {
            self.risk.resume(t, self.paper.equity());
            self.end_halt(t, format!("--resume-after {}", duration_text(after)));
        }
        for action in self.risk.take_actions() {
            match action {
                RiskAction::CancelEntries(_) => {
                    // Market entries fill on activation; anything still working is cancelled.
                    for o in self.paper.open_orders() {
                        if !o.request.reduce_only {
                            let _ = self.paper.cancel(o.client_id());
                        }
                    }
                }
                RiskAction::FlattenAll(reason) => {
                    let positions = self.paper.positions();
                    for order in self.risk.flatten_orders(&positions, &mut self.ids, t) {
                        let id = order.request().client_id.clone();
                        if self.paper.submit(order).is_ok() {
                            self.reasons
                                .insert(id, format!("flatten: halted ({reason})"));
                        }
                    }
                    self.activate(t);
                }
            }
        }
    }

    /// Records a halt that started and one that ended by itself (one may end and the next
    /// start in the same update: a daily-loss halt over at midnight, a drawdown breached).
    fn track_halt(&mut self, t: i64) {
        let current = self.risk.halt().cloned();
        let open = self.halts.last().filter(|h| h.ended_ms.is_none());
        let same = matches!((&current, open), (Some(h), Some(o)) if o.since_ms == h.since_ms && o.reason == h.reason);
        if same {
            return;
        }
        if let Some(o) = open {
            let why = match (&current, &o.reason) {
                (Some(h), _) if h.reason == HaltReason::KillSwitch => "replaced by the kill switch",
                (_, HaltReason::DailyLoss { .. }) => "next UTC day",
                (_, HaltReason::ExtremeMove { .. }) => "cool-down over",
                (_, HaltReason::StaleData { .. }) => "data resumed",
                _ => "lifted",
            };
            self.end_halt(t, why.into());
        }
        if let Some(h) = current {
            self.halts.push(HaltRecord {
                reason: h.reason,
                since_ms: h.since_ms,
                ended_ms: None,
                ended_by: "end of run".into(),
                refused_intents: 0,
            });
        }
    }

    fn end_halt(&mut self, t: i64, why: String) {
        if let Some(h) = self.halts.last_mut().filter(|h| h.ended_ms.is_none()) {
            h.ended_ms = Some(t);
            h.ended_by = why;
        }
    }

    /// Activates what was submitted at `t` after the latency, against the close's book.
    fn activate(&mut self, t: i64) {
        let at = t + self.latency_ms;
        self.paper.on_time(at);
        self.paper.on_market(
            MarketEvent::Book {
                symbol: &self.symbol,
                book: &self.book,
            },
            at,
        );
        self.collect(|| "protective exit".to_string());
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
        let checked = self.risk.check(intent, &ctx);
        self.track_halt(t);
        let refused = match checked {
            Ok(approved) => self.paper.submit(approved).err().map(|e| e.to_string()),
            Err(Refusal::Halted(_)) => {
                // Counted on the halt: one line per halt, not one per refused step.
                if let Some(h) = self.halts.last_mut() {
                    h.refused_intents += 1;
                }
                return;
            }
            Err(r) => Some(r.to_string()),
        };
        if let Some(why) = refused {
            self.refusals += 1;
            if self.refusal_reasons.len() < 20 {
                self.refusal_reasons
                    .push(format!("{}: {why}", super::report::iso_utc(t)));
            }
            return;
        }
        self.reasons.insert(id, reason.to_string());
        self.activate(t);
    }
}

/// Block length of the confidence intervals: one UTC day of steps, shorter when the run has
/// fewer than ten days so that it still has ten blocks.
pub fn ci_block_steps(interval_ms: i64, steps: usize) -> usize {
    let day = (86_400_000 / interval_ms.max(1)).max(1) as usize;
    day.min((steps / 10).max(1))
}

/// Statistics, baselines and confidence intervals of a strategy curve and its benchmark
/// (each the start, then one point per step).
struct Stats {
    metrics: Metrics,
    benchmark: Metrics,
    flat: Metrics,
    ci95: Option<Ci95>,
    benchmark_ci95: Option<Ci95>,
}

fn stats(
    start: f64,
    equity: &[(i64, f64)],
    benchmark: &[(i64, f64)],
    interval_ms: i64,
    exposure: f64,
    trips: &[f64],
    (fills, benchmark_fills): (usize, usize),
) -> Stats {
    let per_year = periods_per_year(interval_ms);
    let with_start = |curve: &[(i64, f64)]| {
        std::iter::once(start)
            .chain(curve.iter().map(|(_, e)| *e))
            .collect::<Vec<_>>()
    };
    let (eq, bh) = (with_start(equity), with_start(benchmark));
    let block = ci_block_steps(interval_ms, equity.len());
    Stats {
        metrics: metrics(&eq, per_year, exposure, trips, fills),
        benchmark: metrics(
            &bh,
            per_year,
            if benchmark_fills > 0 { 1.0 } else { 0.0 },
            &[],
            benchmark_fills,
        ),
        flat: metrics(&vec![start; eq.len()], per_year, 0.0, &[], 0),
        ci95: block_bootstrap(&eq, per_year, block, CI_RESAMPLES, 0),
        benchmark_ci95: block_bootstrap(&bh, per_year, block, CI_RESAMPLES, 0),
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
    // The benchmark buys once at the first close, with the same costs.
    let mut hold = Broker::new(
        spec.symbol,
        "bh",
        equity0,
        setup.execution.taker_fee_bps,
        b.slippage_bps.saturating_add(setup.impact_bps),
    )?;
    let batch = if engine.coordinator().needs_sequential_steps() {
        1
    } else {
        b.batch.max(1)
    };
    let total = end - first;
    progress(0, total);
    let mut equity = Vec::with_capacity(total);
    let mut benchmark = Vec::with_capacity(total);
    let mut trades = Vec::new();
    let mut decisions = Vec::with_capacity(total);
    let mut exposed = 0usize;
    let mut trips = Trips::default();
    let mut book = |desk: &mut Desk, trades: &mut Vec<TradeRecord>| {
        for (fill, reason) in std::mem::take(&mut desk.fills) {
            let (trip, position) = trips.on_fill(&fill, &reason);
            trades.push(TradeRecord {
                time_ms: fill.time_ms,
                side: fill.side,
                price: fill.price,
                qty: fill.qty,
                fee: fill.fee_quote,
                position,
                trip,
                reason,
            });
        }
        debug_assert_eq!(
            trades.last().map_or(0, |t| t.position.raw()),
            desk.position(),
            "round-trip book and portfolio disagree"
        );
    };
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
            let t = close_of(c);
            // The candle's own path first: its stops and take-profits fill before its close.
            desk.candle(c, spec.interval_ms);
            desk.close(c.close, t);
            book(&mut desk, &mut trades);
            engine.observe_position(spec.symbol, desk.position().signum() as i8);
            let r = engine.step(x);
            let d = &r.decision;
            hold.portfolio.mark(spec.symbol, c.close);
            hold.buy_once(equity0, b.position_fraction, c.close, t);
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
            book(&mut desk, &mut trades);
            if desk.position() != 0 {
                exposed += 1;
            }
            engine.observe_position(spec.symbol, desk.position().signum() as i8);
            equity.push((t, desk.paper.equity().to_f64()));
            benchmark.push((t, hold.portfolio.equity().to_f64()));
            decisions.push(DecisionRecord::from(d));
            done += 1;
        }
        progress(done, total);
        i = upto;
    }
    let last_t = equity.last().map_or(0, |e| e.0);
    desk.track_halt(last_t);
    let trip_pnls: Vec<f64> = trips.done.iter().map(|t| t.pnl.to_f64()).collect();
    let s = stats(
        equity0.to_f64(),
        &equity,
        &benchmark,
        spec.interval_ms,
        exposed as f64 / equity.len().max(1) as f64,
        &trip_pnls,
        (trades.len(), usize::from(hold.seq > 0)),
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
        last_ms: last_t,
        thresholds: th,
        costs: Costs {
            taker_fee_bps: setup.execution.taker_fee_bps,
            slippage_bps: b.slippage_bps,
            impact_bps: setup.impact_bps,
        },
        start_equity: equity0.to_f64(),
        final_equity: desk.paper.equity(),
        equity,
        benchmark,
        trades,
        round_trips: trips.done,
        decisions,
        metrics: s.metrics,
        benchmark_metrics: s.benchmark,
        flat_metrics: s.flat,
        ci95: s.ci95,
        benchmark_ci95: s.benchmark_ci95,
        accuracy,
        skipped_outputs: engine.snapshot(false).skipped,
        refusals: desk.refusals,
        refusal_reasons: desk.refusal_reasons,
        halts: desk.halts,
        halt_policy: setup.halt_policy(),
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

/// A walk-forward: its folds and their test windows chained into one out-of-sample result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalkForward {
    /// The folds, in time order.
    pub folds: Vec<Fold>,
    /// The folds' test windows compounded into one curve: the walk-forward's statistics,
    /// confidence intervals, fills and round trips (trip numbers run on across folds; each
    /// fill's position is its fold's account, which starts flat). Its benchmark buys and holds
    /// across all the test windows.
    pub oos: BacktestResult,
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
) -> Result<WalkForward, BacktestError> {
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

/// Number of folds [`walk_forward_with`] tries over `spec`.
pub fn fold_count(spec: &BacktestSpec<'_>, train_ms: i64, test_ms: i64) -> usize {
    if train_ms <= 0 || test_ms <= 0 || spec.to_ms.saturating_sub(spec.from_ms) <= train_ms {
        return 0;
    }
    ((spec.to_ms - spec.from_ms - train_ms - 1) / test_ms + 1) as usize
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
) -> Result<WalkForward, BacktestError> {
    if train_ms <= 0 || test_ms <= 0 {
        return Err(BacktestError::Windows { train_ms, test_ms });
    }
    let mut folds = Vec::new();
    let mut start = spec.from_ms;
    let total = fold_count(&spec, train_ms, test_ms);
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
        if let Some((chosen, train_metrics)) = best {
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
        }
        progress(fold, total);
        start += test_ms;
    }
    if folds.is_empty() {
        return Err(BacktestError::NoFolds {
            from_ms: spec.from_ms,
            to_ms: spec.to_ms,
            train_ms,
        });
    }
    let oos = chain(&spec, cfg, setup, &folds)?;
    Ok(WalkForward { folds, oos })
}

/// The folds' test windows as one out-of-sample result: each fold's curve scaled to start
/// where the previous one ended (compounded), and a buy-and-hold bought at the first test
/// close and held to the last.
pub fn chain(
    spec: &BacktestSpec<'_>,
    cfg: &OrchestratorConfig,
    setup: &TradingSetup,
    folds: &[Fold],
) -> Result<BacktestResult, BacktestError> {
    let Some(last_fold) = folds.last() else {
        return Err(BacktestError::NoFolds {
            from_ms: spec.from_ms,
            to_ms: spec.to_ms,
            train_ms: 0,
        });
    };
    let equity0 = setup.execution.starting_equity;
    let start = equity0.to_f64();
    let mut value = equity0;
    let mut equity = Vec::new();
    let mut trades = Vec::new();
    let mut round_trips = Vec::new();
    let mut decisions = Vec::new();
    let mut halts = Vec::new();
    let mut refusal_reasons = Vec::new();
    let (mut refusals, mut skipped, mut exposed) = (0, 0, 0.0);
    let mut accuracy: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut trip_base = 0;
    for f in folds {
        let r = &f.test_result;
        let scale = value.to_f64() / start;
        equity.extend(r.equity.iter().map(|&(t, e)| (t, e * scale)));
        trades.extend(r.trades.iter().map(|t| TradeRecord {
            trip: t.trip + trip_base,
            ..t.clone()
        }));
        round_trips.extend(r.round_trips.iter().map(|t| RoundTrip {
            number: t.number + trip_base,
            ..t.clone()
        }));
        trip_base += r.trades.iter().map(|t| t.trip).max().unwrap_or(0);
        decisions.extend(r.decisions.iter().cloned());
        halts.extend(r.halts.iter().cloned());
        refusals += r.refusals;
        skipped += r.skipped_outputs;
        exposed += r.metrics.exposure * r.equity.len() as f64;
        for why in &r.refusal_reasons {
            if refusal_reasons.len() < 20 {
                refusal_reasons.push(why.clone());
            }
        }
        for (k, a) in &r.accuracy {
            let e = accuracy.entry(k.clone()).or_insert((0.0, 0));
            *e = (e.0 + a, e.1 + 1);
        }
        // Exact compounding, rounded down to 1e-8 per fold.
        value = Money(value.raw() * r.final_equity.raw() / equity0.raw().max(1));
    }
    // Buy and hold across every test window, marked at each chained step's close.
    let b = &cfg.backtest;
    let mut hold = Broker::new(
        spec.symbol,
        "bh",
        equity0,
        setup.execution.taker_fee_bps,
        b.slippage_bps.saturating_add(setup.impact_bps),
    )?;
    let close_at = |t: i64| {
        let k = spec
            .candles
            .partition_point(|c| c.open_time_ms + spec.interval_ms < t);
        spec.candles.get(k).map(|c| c.close)
    };
    let mut benchmark = Vec::with_capacity(equity.len());
    for &(t, _) in &equity {
        if let Some(close) = close_at(t) {
            hold.portfolio.mark(spec.symbol, close);
            hold.buy_once(equity0, b.position_fraction, close, t);
        }
        benchmark.push((t, hold.portfolio.equity().to_f64()));
    }
    let trip_pnls: Vec<f64> = round_trips.iter().map(|t| t.pnl.to_f64()).collect();
    let s = stats(
        start,
        &equity,
        &benchmark,
        spec.interval_ms,
        exposed / equity.len().max(1) as f64,
        &trip_pnls,
        (trades.len(), usize::from(hold.seq > 0)),
    );
    Ok(BacktestResult {
        symbol: spec.symbol.into(),
        interval_ms: spec.interval_ms,
        first_ms: equity.first().map_or(0, |e| e.0),
        last_ms: equity.last().map_or(0, |e| e.0),
        thresholds: last_fold.chosen,
        costs: last_fold.test_result.costs,
        start_equity: start,
        equity,
        benchmark,
        trades,
        round_trips,
        decisions,
        metrics: s.metrics,
        benchmark_metrics: s.benchmark,
        flat_metrics: s.flat,
        ci95: s.ci95,
        benchmark_ci95: s.benchmark_ci95,
        final_equity: value,
        accuracy: accuracy
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / n as f64))
            .collect(),
        skipped_outputs: skipped,
        refusals,
        refusal_reasons,
        halts,
        halt_policy: setup.halt_policy(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(side: Side, price: &str, qty: &str, t: i64) -> Fill {
        Fill {
            client_id: ClientIdGen::new("t", 1).unwrap().next_id(),
            symbol: "X".into(),
            side,
            price: Price::parse(price).unwrap(),
            qty: Qty::parse(qty).unwrap(),
            fee: Qty::ZERO,
            fee_asset: "QUOTE".into(),
            fee_quote: Money::from_units(1),
            is_maker: false,
            time_ms: t,
            trade_id: String::new(),
        }
    }

    #[test]
    fn a_stop_out_and_a_re_entry_are_two_round_trips() {
        let mut trips = Trips::default();
        assert_eq!(
            trips.on_fill(&fill(Side::Buy, "100", "2", 1), "buy"),
            (1, Qty::parse("2").unwrap())
        );
        assert_eq!(
            trips.on_fill(&fill(Side::Sell, "99", "2", 2), "stop"),
            (1, Qty::ZERO)
        );
        assert_eq!(
            trips.on_fill(&fill(Side::Buy, "99", "1", 2), "buy"),
            (2, Qty::parse("1").unwrap())
        );
        assert_eq!(trips.on_fill(&fill(Side::Sell, "110", "1", 3), "sell").0, 2);
        assert_eq!(trips.done.len(), 2);
        // (99 − 100) × 2 − 2 fees; (110 − 99) × 1 − 2 fees.
        assert_eq!(trips.done[0].pnl, Money::from_units(-4));
        assert_eq!(trips.done[0].exit_reason, "stop");
        assert_eq!(trips.done[1].pnl, Money::from_units(9));
        // A fill through zero closes one trip and opens the next with the rest.
        let (n, after) = trips.on_fill(&fill(Side::Sell, "100", "1", 4), "short");
        assert_eq!((n, after), (3, Qty::parse("-1").unwrap()));
        let (n, after) = trips.on_fill(&fill(Side::Buy, "90", "3", 5), "flip");
        assert_eq!((n, after), (3, Qty::parse("2").unwrap()));
        assert_eq!(trips.done[2].pnl, Money::from_units(10 - 2));
        assert_eq!(trips.open.as_ref().map(|t| t.number), Some(4));
    }

    #[test]
    fn durations_read_back_in_their_largest_unit() {
        assert_eq!(duration_text(2 * 86_400_000), "2d");
        assert_eq!(duration_text(90 * 60_000), "90m");
        assert_eq!(duration_text(1_500), "1500ms");
    }
}
