//! The risk manager: every order passes [`RiskManager::check`], which alone can produce an
//! [`ApprovedOrder`]. Pure logic: no I/O, no clock (time comes in with each call).
//!
//! Limits compare exact integers: quantities as [`Qty`], notionals and equity as [`Money`],
//! percentages as whole basis points, leverage as an exact decimal multiplier.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::market::instrument::{FilterError, Instrument};
use crate::market::types::{Price, Qty, SCALE, Side, Symbol};
use crate::trading::executor::ExecutionConfig;
use crate::trading::money::Money;
use crate::trading::order::{
    ClientIdGen, ClientOrderId, OrderKind, OrderRequest, OrderState, TimeInForce,
};
use crate::trading::position::{Portfolio, Position};
use crate::trading::risk_state::{DayBaseline, RiskState};
use crate::trading::serde_num::{de_money, de_price, de_qty_map};

/// One UTC day in ms.
const DAY_MS: i64 = 86_400_000;
/// The order-rate window.
const MINUTE_MS: i64 = 60_000;

/// What a halt does to open positions. Either way working entries are cancelled and every
/// protective exit (stop-loss, take-profit) stays: a halt never leaves a position naked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaltPolicy {
    /// Cancel working entries, keep positions with their stop-loss and take-profit.
    #[default]
    None,
    /// Cancel working entries and close every position at market.
    Flatten,
}

/// `[risk]`: limits every order is checked against.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Largest absolute position per symbol in base units, by exchange symbol (`ETHUSDT = "5"`);
    /// symbols not listed are bounded by `max_position_notional` alone.
    #[serde(deserialize_with = "de_qty_map")]
    pub max_position_qty: BTreeMap<String, Qty>,
    /// Largest absolute position per symbol in quote currency.
    #[serde(deserialize_with = "de_money")]
    pub max_position_notional: Money,
    /// Equity risked per trade (entry-to-stop loss), basis points of equity.
    pub risk_per_trade_bps: u32,
    /// Largest gross exposure (positions plus working orders) as a multiple of equity.
    #[serde(deserialize_with = "de_price")]
    pub max_leverage: Price,
    /// Drawdown from the equity peak that halts trading, basis points.
    pub max_drawdown_bps: u32,
    /// Loss since the UTC day's start that halts trading until the next UTC day, basis points.
    pub daily_loss_limit_bps: u32,
    /// Most orders approved in any 60 s window.
    pub max_orders_per_minute: u32,
    /// A symbol with no market update for this many seconds halts trading (0: off).
    pub stale_data_secs: u64,
    /// A move beyond this many basis points within `extreme_move_window_secs` halts trading
    /// (0: off).
    pub extreme_move_bps: u32,
    /// Window of the extreme-move breaker, seconds.
    pub extreme_move_window_secs: u64,
    /// How long an extreme-move halt lasts, seconds.
    pub extreme_move_cooldown_secs: u64,
    /// What a breaker halt does to positions: "none" or "flatten".
    pub halt_policy: HaltPolicy,
    /// Whether the kill switch also closes every position at market.
    pub kill_switch_flattens: bool,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            max_position_qty: BTreeMap::new(),
            max_position_notional: Money::from_units(5_000),
            risk_per_trade_bps: 50,
            max_leverage: Price::from_units(1),
            max_drawdown_bps: 1_000,
            daily_loss_limit_bps: 300,
            max_orders_per_minute: 30,
            stale_data_secs: 10,
            extreme_move_bps: 500,
            extreme_move_window_secs: 60,
            extreme_move_cooldown_secs: 300,
            halt_policy: HaltPolicy::None,
            kill_switch_flattens: true,
        }
    }
}

impl RiskConfig {
    /// Checks the values serde cannot: `Err((dotted key, what is expected))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_leverage.raw() <= 0 {
            return Err((
                "risk.max_leverage",
                "expected a positive multiple of equity such as \"1\" or \"2.5\"".into(),
            ));
        }
        if self.max_orders_per_minute == 0 {
            return Err((
                "risk.max_orders_per_minute",
                "expected a positive integer".into(),
            ));
        }
        if self.risk_per_trade_bps == 0 || self.risk_per_trade_bps > 10_000 {
            return Err((
                "risk.risk_per_trade_bps",
                format!(
                    "expected basis points from 1 to 10000, got {}",
                    self.risk_per_trade_bps
                ),
            ));
        }
        if self.extreme_move_bps > 0 && self.extreme_move_window_secs == 0 {
            return Err((
                "risk.extreme_move_window_secs",
                "expected a positive window when extreme_move_bps is set".into(),
            ));
        }
        Ok(())
    }
}

/// Exits attached to an approved entry; the executor manages them on the resulting position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Protection {
    /// Stop-loss trigger price (always set on an approved entry).
    pub stop_loss: Option<Price>,
    /// Take-profit trigger price.
    pub take_profit: Option<Price>,
    /// Trailing stop distance in basis points of the best price since entry.
    pub trailing_bps: Option<u32>,
}

/// An order the risk manager approved. Its fields are private and it has no public
/// constructor (nor `Clone` or `Deserialize`), so holding one proves it passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub struct ApprovedOrder {
    request: OrderRequest,
    protection: Protection,
    approved_ms: i64,
}

impl ApprovedOrder {
    fn new(request: OrderRequest, protection: Protection, approved_ms: i64) -> Self {
        Self {
            request,
            protection,
            approved_ms,
        }
    }

    /// The order to send.
    pub fn request(&self) -> &OrderRequest {
        &self.request
    }

    /// Exits to manage once it fills.
    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// When it was approved, ms.
    pub fn approved_ms(&self) -> i64 {
        self.approved_ms
    }

    /// Splits into the request and its protection (for executors that store them).
    pub fn into_parts(self) -> (OrderRequest, Protection) {
        (self.request, self.protection)
    }
}

/// What a strategy wants; the risk manager sizes, rounds, checks and protects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderIntent {
    /// Client id (from the journal's generator, so a retried intent keeps it).
    pub client_id: ClientOrderId,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Order type and prices (limit prices are rounded to the tick, passive side).
    pub kind: OrderKind,
    /// Base quantity; `None` sizes the order from the stop distance and `risk_per_trade_bps`.
    pub qty: Option<Qty>,
    /// Stop-loss price; `None` takes the default distance from `[execution]`.
    pub stop_loss: Option<Price>,
    /// Take-profit price; `None` takes the default distance (if configured).
    pub take_profit: Option<Price>,
    /// Trailing stop distance, basis points; `None` takes the default (if configured).
    pub trailing_bps: Option<u32>,
    /// Only reduce the position (exits skip halts, sizing and stops).
    pub reduce_only: bool,
    /// Time in force.
    pub time_in_force: TimeInForce,
}

impl OrderIntent {
    /// A plain entry/exit intent with defaults for everything optional.
    pub fn new(client_id: ClientOrderId, symbol: &str, side: Side, kind: OrderKind) -> Self {
        Self {
            client_id,
            symbol: symbol.to_string(),
            side,
            kind,
            qty: None,
            stop_loss: None,
            take_profit: None,
            trailing_bps: None,
            reduce_only: false,
            time_in_force: TimeInForce::Gtc,
        }
    }
}

impl OrderIntent {
    /// The intent that re-approves a journaled order (reconciliation's resubmit), keeping its
    /// client id, quantity and exits.
    pub fn from_request(request: &OrderRequest, protection: &Protection) -> Self {
        Self {
            client_id: request.client_id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            kind: request.kind,
            qty: Some(request.qty),
            stop_loss: protection.stop_loss,
            take_profit: protection.take_profit,
            trailing_bps: protection.trailing_bps,
            reduce_only: request.reduce_only,
            time_in_force: request.time_in_force,
        }
    }
}

/// The account as it stands when an intent is checked.
#[derive(Debug, Clone, Copy)]
pub struct RiskContext<'a> {
    /// Now, ms since the UNIX epoch.
    pub now_ms: i64,
    /// The instrument and its exchange filters.
    pub instrument: &'a Instrument,
    /// Last trade or mid price of the symbol (market orders are valued at it).
    pub reference_price: Price,
    /// Account equity at the marks.
    pub equity: Money,
    /// Signed position of the symbol.
    pub position_qty: Qty,
    /// Working buy quantity of the symbol (orders not yet filled, reduce-only excluded).
    pub open_buy_qty: Qty,
    /// Working sell quantity of the symbol (reduce-only excluded).
    pub open_sell_qty: Qty,
    /// Σ |position| × mark over every symbol.
    pub gross_exposure: Money,
    /// Σ notional of working orders over every symbol (reduce-only excluded).
    pub open_order_exposure: Money,
}

impl<'a> RiskContext<'a> {
    /// The context for `instrument` from the account and its working orders: open quantity per
    /// side of this symbol and the notional of every working order (reduce-only orders are
    /// exits and do not count; orders are valued at their limit or trigger price, else at the
    /// symbol's mark, else at `reference_price`).
    pub fn from_account(
        now_ms: i64,
        instrument: &'a Instrument,
        reference_price: Price,
        portfolio: &Portfolio,
        open_orders: &[OrderState],
    ) -> Self {
        let mut open_buy = Qty::ZERO;
        let mut open_sell = Qty::ZERO;
        let mut exposure = Money::ZERO;
        for o in open_orders.iter().filter(|o| o.status.is_open()) {
            let req = &o.request;
            if req.reduce_only {
                continue;
            }
            let rest = o.remaining();
            if req.symbol == instrument.symbol {
                match req.side {
                    Side::Buy => open_buy += rest,
                    Side::Sell => open_sell += rest,
                }
            }
            let price = req
                .kind
                .limit_price()
                .or(req.kind.stop_price())
                .or_else(|| portfolio.mark_of(&req.symbol))
                .unwrap_or(reference_price);
            exposure += Money::notional(price, rest);
        }
        Self {
            now_ms,
            instrument,
            reference_price,
            equity: portfolio.equity(),
            position_qty: portfolio.qty(&instrument.symbol),
            open_buy_qty: open_buy,
            open_sell_qty: open_sell,
            gross_exposure: portfolio.gross_exposure(),
            open_order_exposure: exposure,
        }
    }
}

/// Why trading is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum HaltReason {
    /// Equity fell too far below its peak (until reset by hand).
    #[error("drawdown {drawdown} from peak {peak} exceeds {limit_bps} bps")]
    Drawdown {
        /// Equity peak.
        peak: Money,
        /// Peak minus equity.
        drawdown: Money,
        /// Limit, bps of the peak.
        limit_bps: u32,
    },
    /// The day's loss exceeded the daily limit (until the next UTC day).
    #[error("daily loss {loss} from {day_start} exceeds {limit_bps} bps")]
    DailyLoss {
        /// Equity at the UTC day's start.
        day_start: Money,
        /// Loss since then.
        loss: Money,
        /// Limit, bps of the day's start.
        limit_bps: u32,
    },
    /// A symbol's market data stopped (until it resumes).
    #[error("no market data for {symbol} for {silent_ms} ms (limit {limit_ms} ms)")]
    StaleData {
        /// Silent symbol.
        symbol: Symbol,
        /// How long it has been silent.
        silent_ms: i64,
        /// The limit.
        limit_ms: i64,
    },
    /// A symbol moved too far too fast (until the cool-down ends).
    #[error("{symbol} moved {move_bps} bps within {window_ms} ms (limit {limit_bps} bps)")]
    ExtremeMove {
        /// Symbol.
        symbol: Symbol,
        /// Size of the move, bps of the window's low.
        move_bps: u64,
        /// Limit.
        limit_bps: u32,
        /// Window length.
        window_ms: i64,
    },
    /// The kill switch was pressed (until reset by hand).
    #[error("kill switch")]
    KillSwitch,
}

/// A halt in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// Why.
    pub reason: HaltReason,
    /// Since when, ms.
    pub since_ms: i64,
    /// Automatic end, ms (`None`: until resumed by data or by hand).
    pub until_ms: Option<i64>,
}

/// Why an intent was refused; each carries the limit and the value it would have reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Trading is halted.
    #[error("trading halted: {0}")]
    Halted(HaltReason),
    /// The intent's symbol is not the context's instrument.
    #[error("intent for {intent} checked against instrument {instrument}")]
    SymbolMismatch {
        /// Intent symbol.
        intent: Symbol,
        /// Instrument symbol.
        instrument: Symbol,
    },
    /// No usable reference price for the symbol.
    #[error("no reference price for {0}")]
    NoPrice(Symbol),
    /// Equity is zero or negative: nothing can be risked.
    #[error("equity {0} is not positive")]
    EquityNotPositive(Money),
    /// An exchange filter fails after rounding.
    #[error("exchange filter: {0}")]
    Filter(#[from] FilterError),
    /// The stop is on the wrong side of the entry (or equal to it).
    #[error("stop {stop} is not on the losing side of entry {entry} for a {side:?}")]
    BadStop {
        /// Order side.
        side: Side,
        /// Entry price.
        entry: Price,
        /// Stop price.
        stop: Price,
    },
    /// The take-profit is on the wrong side of the entry.
    #[error("take-profit {take_profit} is not on the winning side of entry {entry} for a {side:?}")]
    BadTakeProfit {
        /// Order side.
        side: Side,
        /// Entry price.
        entry: Price,
        /// Take-profit price.
        take_profit: Price,
    },
    /// The loss at the stop would exceed the per-trade budget.
    #[error("risk at stop {would_be} exceeds per-trade limit {limit}")]
    RiskPerTrade {
        /// Budget.
        limit: Money,
        /// Loss at the stop.
        would_be: Money,
    },
    /// The position (with working orders) would exceed the base-quantity limit.
    #[error("position {would_be} would exceed limit {limit}")]
    PositionQty {
        /// Limit.
        limit: Qty,
        /// Worst-case absolute position.
        would_be: Qty,
    },
    /// The position would exceed the notional limit.
    #[error("position notional {would_be} would exceed limit {limit}")]
    PositionNotional {
        /// Limit.
        limit: Money,
        /// Worst-case notional.
        would_be: Money,
    },
    /// Gross exposure would exceed equity × max leverage.
    #[error("gross exposure {would_be} would exceed {limit} (equity × max leverage)")]
    Leverage {
        /// Equity × max leverage.
        limit: Money,
        /// Gross exposure after the order.
        would_be: Money,
    },
    /// Too many orders in the last minute.
    #[error("{count} orders in the last minute, limit {limit}")]
    OrderRate {
        /// Limit.
        limit: u32,
        /// Orders already approved in the window.
        count: u32,
    },
    /// A reduce-only intent with no position to reduce on that side.
    #[error("reduce-only {side:?} with position {position}")]
    NothingToReduce {
        /// Order side.
        side: Side,
        /// Current position.
        position: Qty,
    },
}

/// Something the owner of the executor must do because of a halt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskAction {
    /// Cancel every working entry (orders that are not reduce-only). Protective exits
    /// (stop-loss, take-profit, trailing stops) and flatten orders stay working, so no
    /// position loses its protection.
    CancelEntries(HaltReason),
    /// Close every position at market (see [`RiskManager::flatten_orders`]).
    FlattenAll(HaltReason),
}

/// Sliding min/max of prices over a time window (monotonic deques: O(1) amortized).
#[derive(Debug, Clone, Default)]
struct MoveWindow {
    mins: VecDeque<(i64, Price)>,
    maxs: VecDeque<(i64, Price)>,
}

impl MoveWindow {
    fn push(&mut self, t: i64, p: Price, window_ms: i64) {
        while self.mins.back().is_some_and(|&(_, q)| q >= p) {
            self.mins.pop_back();
        }
        self.mins.push_back((t, p));
        while self.maxs.back().is_some_and(|&(_, q)| q <= p) {
            self.maxs.pop_back();
        }
        self.maxs.push_back((t, p));
        let from = t - window_ms;
        while self.mins.front().is_some_and(|&(s, _)| s < from) {
            self.mins.pop_front();
        }
        while self.maxs.front().is_some_and(|&(s, _)| s < from) {
            self.maxs.pop_front();
        }
    }

    /// (max − min) / min in bps, exact integer division.
    fn range_bps(&self) -> u64 {
        match (self.mins.front(), self.maxs.front()) {
            (Some(&(_, lo)), Some(&(_, hi))) if lo.raw() > 0 => {
                ((hi.raw() - lo.raw()) as i128 * 10_000 / lo.raw() as i128) as u64
            }
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct SymbolFeed {
    last_update_ms: i64,
    window: MoveWindow,
}

/// A snapshot of the risk state for the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskStatus {
    /// The halt in force, if any.
    pub halt: Option<Halt>,
    /// Equity peak seen.
    pub equity_peak: Money,
    /// Equity at the UTC day's start.
    pub day_start_equity: Money,
    /// Orders approved in the last minute.
    pub orders_last_minute: u32,
}

/// Default exits attached to entries that name none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExitDefaults {
    stop_bps: u32,
    take_profit_bps: u32,
    trailing_bps: u32,
}

/// Checks intents against the limits and runs the circuit breakers.
#[derive(Debug, Clone)]
pub struct RiskManager {
    cfg: RiskConfig,
    exits: ExitDefaults,
    halt: Option<Halt>,
    equity_peak: Option<Money>,
    day: Option<(i64, Money)>,
    approvals: VecDeque<i64>,
    feeds: BTreeMap<Symbol, SymbolFeed>,
    actions: Vec<RiskAction>,
}

/// Rounds `p` to the tick toward `up` or down.
fn round_tick(inst: &Instrument, p: Price, up: bool) -> Price {
    let tick = inst.tick_size.raw();
    if tick <= 0 {
        return p;
    }
    let floor = p.raw().div_euclid(tick) * tick;
    Price(if up && floor != p.raw() {
        floor + tick
    } else {
        floor
    })
}

/// Whether `price × qty` exceeds `limit`, compared exactly (no truncation at the 8th decimal,
/// which would let a product a fraction of a unit over the limit pass).
fn exceeds(price: Price, qty: Qty, limit: Money) -> bool {
    let exact = price.raw() as i128 * qty.raw() as i128;
    exact > limit.raw().saturating_mul(SCALE as i128)
}

/// `price × qty` rounded up at the 8th decimal (for amounts that must not be understated).
fn notional_ceil(price: Price, qty: Qty) -> Money {
    let exact = price.raw() as i128 * qty.raw() as i128;
    let scale = SCALE as i128;
    Money(exact.div_euclid(scale) + i128::from(exact.rem_euclid(scale) != 0))
}

/// `price × (1 ± bps)`, exact then floored to the 8th decimal.
fn offset_bps(price: Price, bps: u32, up: bool) -> Price {
    let d = price.raw() as i128 * bps as i128 / 10_000;
    Price(if up {
        price.raw() as i128 + d
    } else {
        price.raw() as i128 - d
    } as i64)
}

impl RiskManager {
    /// A manager with the `[risk]` limits and the default exits from `[execution]`.
    pub fn new(cfg: RiskConfig, execution: &ExecutionConfig) -> Self {
        Self {
            cfg,
            exits: ExitDefaults {
                stop_bps: execution.stop_loss_bps,
                take_profit_bps: execution.take_profit_bps,
                trailing_bps: execution.trailing_stop_bps,
            },
            halt: None,
            equity_peak: None,
            day: None,
            approvals: VecDeque::new(),
            feeds: BTreeMap::new(),
            actions: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &RiskConfig {
        &self.cfg
    }

    /// The halt in force, if any (expired halts are cleared by the next update).
    pub fn halt(&self) -> Option<&Halt> {
        self.halt.as_ref()
    }

    /// State for the screen.
    pub fn status(&self, now_ms: i64) -> RiskStatus {
        RiskStatus {
            halt: self.halt.clone(),
            equity_peak: self.equity_peak.unwrap_or_default(),
            day_start_equity: self.day.map(|d| d.1).unwrap_or_default(),
            orders_last_minute: self
                .approvals
                .iter()
                .filter(|&&t| t > now_ms - MINUTE_MS)
                .count() as u32,
        }
    }

    /// Actions the halts since the last call require, in order.
    pub fn take_actions(&mut self) -> Vec<RiskAction> {
        std::mem::take(&mut self.actions)
    }

    fn start_halt(
        &mut self,
        reason: HaltReason,
        now_ms: i64,
        until_ms: Option<i64>,
        flatten: bool,
    ) {
        // A manual halt outranks an automatic one; an automatic one does not replace a halt.
        let replace = match &self.halt {
            None => true,
            Some(h) => reason == HaltReason::KillSwitch && h.reason != HaltReason::KillSwitch,
        };
        if !replace {
            return;
        }
        tracing::warn!(%reason, "trading halted");
        self.actions.push(RiskAction::CancelEntries(reason.clone()));
        if flatten {
            self.actions.push(RiskAction::FlattenAll(reason.clone()));
        }
        self.halt = Some(Halt {
            reason,
            since_ms: now_ms,
            until_ms,
        });
    }

    fn breaker_halt(&mut self, reason: HaltReason, now_ms: i64, until_ms: Option<i64>) {
        let flatten = self.cfg.halt_policy == HaltPolicy::Flatten;
        self.start_halt(reason, now_ms, until_ms, flatten);
    }

    /// Halts, cancels working entries and (when configured) flattens: until [`Self::resume`].
    pub fn kill_switch(&mut self, now_ms: i64) {
        let flatten = self.cfg.kill_switch_flattens;
        self.start_halt(HaltReason::KillSwitch, now_ms, None, flatten);
    }

    /// Clears any halt by hand (drawdown and kill-switch halts need this).
    pub fn resume(&mut self, now_ms: i64, equity: Money) {
        self.halt = None;
        // The drawdown is measured from here on, or it would halt again at once.
        self.equity_peak = Some(equity);
        let day = now_ms.div_euclid(DAY_MS);
        self.day = Some((day, equity));
    }

    /// What a restart must not forget: the halt, the equity peak, the UTC-day baseline and
    /// the order-rate window. Save it (see [`crate::trading::risk_state::RiskStore`]) after
    /// every change that matters: a halt, a resume, a new peak or day, an approval.
    pub fn state(&self) -> RiskState {
        RiskState {
            halt: self.halt.clone(),
            equity_peak: self.equity_peak,
            day: self
                .day
                .map(|(day, start_equity)| DayBaseline { day, start_equity }),
            approvals_ms: self.approvals.iter().copied().collect(),
        }
    }

    /// Takes back a saved state at `now_ms` (on a fresh manager, before any update).
    ///
    /// The peak, the day baseline and the approvals still inside the order-rate window are
    /// restored as saved. A saved halt whose time is up ends (a daily-loss halt from an
    /// earlier UTC day, an extreme-move halt past its cool-down); any other stays: a
    /// kill-switch or drawdown halt until [`Self::resume`], a stale-data halt until its
    /// symbol's data is seen fresh. A halt already in force is replaced only by a kill switch
    /// (the precedence of a new halt). A halt that stays queues
    /// [`RiskAction::CancelEntries`], so entries left working before the restart are
    /// cancelled; it does not flatten again.
    pub fn restore(&mut self, state: RiskState, now_ms: i64) {
        self.equity_peak = state.equity_peak;
        self.day = state.day.map(|d| (d.day, d.start_equity));
        let mut approvals = state.approvals_ms;
        // Pruning pops from the front, so the window must be oldest first.
        approvals.sort_unstable();
        self.approvals = approvals
            .into_iter()
            .filter(|&t| t > now_ms - MINUTE_MS)
            .collect();
        let Some(h) = state.halt else { return };
        let over = match &h.reason {
            HaltReason::DailyLoss { .. } => {
                h.until_ms.is_some_and(|u| now_ms >= u)
                    || now_ms.div_euclid(DAY_MS) > h.since_ms.div_euclid(DAY_MS)
            }
            _ => h.until_ms.is_some_and(|u| now_ms >= u),
        };
        if over {
            tracing::info!(reason = %h.reason, "restored halt is over");
            return;
        }
        let replace = match &self.halt {
            None => true,
            Some(cur) => h.reason == HaltReason::KillSwitch && cur.reason != HaltReason::KillSwitch,
        };
        if replace {
            tracing::warn!(reason = %h.reason, "trading halted (restored)");
            self.actions
                .push(RiskAction::CancelEntries(h.reason.clone()));
            self.halt = Some(h);
        }
    }

    /// Ends halts whose time is up or whose cause is gone.
    fn expire_halt(&mut self, now_ms: i64) {
        let Some(h) = &self.halt else { return };
        let over = match &h.reason {
            HaltReason::StaleData { symbol, .. } => {
                let limit = self.stale_limit_ms();
                self.feeds
                    .get(symbol)
                    .is_some_and(|f| limit == 0 || now_ms - f.last_update_ms <= limit)
                    && h.until_ms.is_none_or(|u| now_ms >= u)
            }
            _ => h.until_ms.is_some_and(|u| now_ms >= u),
        };
        if over {
            tracing::info!(reason = %h.reason, "halt over");
            self.halt = None;
        }
    }

    fn stale_limit_ms(&self) -> i64 {
        (self.cfg.stale_data_secs as i64).saturating_mul(1000)
    }

    /// A market price update (trade or mid) for the breakers.
    pub fn on_market(&mut self, symbol: &str, price: Price, time_ms: i64) {
        // A halt that is over must not mask a breaker this update trips.
        self.expire_halt(time_ms);
        let window_ms = (self.cfg.extreme_move_window_secs as i64).saturating_mul(1000);
        let feed = if let Some(f) = self.feeds.get_mut(symbol) {
            f
        } else {
            self.feeds.entry(symbol.to_string()).or_default()
        };
        feed.last_update_ms = feed.last_update_ms.max(time_ms);
        feed.window.push(time_ms, price, window_ms);
        let move_bps = feed.window.range_bps();
        let limit = self.cfg.extreme_move_bps;
        if limit > 0 && move_bps > limit as u64 {
            let cooldown = (self.cfg.extreme_move_cooldown_secs as i64).saturating_mul(1000);
            self.breaker_halt(
                HaltReason::ExtremeMove {
                    symbol: symbol.to_string(),
                    move_bps,
                    limit_bps: limit,
                    window_ms,
                },
                time_ms,
                Some(time_ms + cooldown),
            );
        }
        self.expire_halt(time_ms);
    }

    /// Advances the clock: stale-data breaker and halt expiry.
    pub fn on_time(&mut self, now_ms: i64) {
        self.expire_halt(now_ms);
        let limit = self.stale_limit_ms();
        if limit > 0 {
            let stale = self
                .feeds
                .iter()
                .find(|(_, f)| now_ms - f.last_update_ms > limit)
                .map(|(s, f)| (s.clone(), now_ms - f.last_update_ms));
            if let Some((symbol, silent_ms)) = stale {
                self.breaker_halt(
                    HaltReason::StaleData {
                        symbol,
                        silent_ms,
                        limit_ms: limit,
                    },
                    now_ms,
                    None,
                );
            }
        }
        self.expire_halt(now_ms);
    }

    /// An equity update: peak, UTC-day start, drawdown and daily-loss breakers.
    pub fn on_equity(&mut self, equity: Money, now_ms: i64) {
        self.expire_halt(now_ms);
        let day = now_ms.div_euclid(DAY_MS);
        match self.day {
            Some((d, _)) if d == day => {}
            _ => self.day = Some((day, equity)),
        }
        let peak = self.equity_peak.map_or(equity, |p| p.max(equity));
        self.equity_peak = Some(peak);
        let dd = peak - equity;
        let dd_limit = self.cfg.max_drawdown_bps;
        if dd_limit > 0 && peak.raw() > 0 && dd.raw() * 10_000 > peak.raw() * dd_limit as i128 {
            self.breaker_halt(
                HaltReason::Drawdown {
                    peak,
                    drawdown: dd,
                    limit_bps: dd_limit,
                },
                now_ms,
                None,
            );
        }
        let (_, start) = self.day.unwrap_or((day, equity));
        let loss = start - equity;
        let daily = self.cfg.daily_loss_limit_bps;
        if daily > 0 && start.raw() > 0 && loss.raw() * 10_000 > start.raw() * daily as i128 {
            self.breaker_halt(
                HaltReason::DailyLoss {
                    day_start: start,
                    loss,
                    limit_bps: daily,
                },
                now_ms,
                Some((day + 1) * DAY_MS),
            );
        }
        self.expire_halt(now_ms);
    }

    /// Reduce-only market orders that close every non-flat position (kill switch, flatten
    /// policy). They skip the checks on purpose: exits are never refused.
    pub fn flatten_orders(
        &mut self,
        positions: &[Position],
        ids: &mut ClientIdGen,
        now_ms: i64,
    ) -> Vec<ApprovedOrder> {
        positions
            .iter()
            .filter(|p| !p.is_flat())
            .map(|p| {
                let side = if p.qty.raw() > 0 {
                    Side::Sell
                } else {
                    Side::Buy
                };
                self.approvals.push_back(now_ms);
                ApprovedOrder::new(
                    OrderRequest {
                        client_id: ids.next_id(),
                        symbol: p.symbol.clone(),
                        side,
                        kind: OrderKind::Market,
                        qty: Qty(p.qty.raw().abs()),
                        reduce_only: true,
                        time_in_force: TimeInForce::Gtc,
                    },
                    Protection::default(),
                    now_ms,
                )
            })
            .collect()
    }

    /// Checks, sizes, rounds and protects an intent; the only way to an [`ApprovedOrder`].
    pub fn check(
        &mut self,
        intent: OrderIntent,
        ctx: &RiskContext<'_>,
    ) -> Result<ApprovedOrder, Refusal> {
        let inst = ctx.instrument;
        if intent.symbol != inst.symbol {
            return Err(Refusal::SymbolMismatch {
                intent: intent.symbol,
                instrument: inst.symbol.clone(),
            });
        }
        self.on_time(ctx.now_ms);
        if !intent.reduce_only
            && let Some(h) = &self.halt
        {
            return Err(Refusal::Halted(h.reason.clone()));
        }
        if !inst.is_trading() {
            return Err(FilterError::NotTrading {
                symbol: inst.symbol.clone(),
                status: inst.status.clone(),
            }
            .into());
        }
        // Order rate first: a refused burst must not cost sizing work or change state.
        while self
            .approvals
            .front()
            .is_some_and(|&t| t <= ctx.now_ms - MINUTE_MS)
        {
            self.approvals.pop_front();
        }
        let count = self.approvals.len() as u32;
        if count >= self.cfg.max_orders_per_minute {
            return Err(Refusal::OrderRate {
                limit: self.cfg.max_orders_per_minute,
                count,
            });
        }
        if ctx.reference_price.raw() <= 0 {
            return Err(Refusal::NoPrice(intent.symbol));
        }
        let side = intent.side;
        let kind = round_kind(inst, side, intent.kind, intent.reduce_only);
        // Where the entry fills: at its limit, else (a conditional market order) at its
        // trigger, else at the market. Taking the market for a triggered order would measure
        // the stop distance, and so the risk, from a price it never fills at.
        let entry = kind
            .limit_price()
            .or(kind.stop_price())
            .unwrap_or(ctx.reference_price);
        // The price the order is valued at: its limit/trigger or the market, whichever is
        // worse for the limits (the larger).
        let value_price = [
            Some(ctx.reference_price),
            kind.limit_price(),
            kind.stop_price(),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(ctx.reference_price);
        if let Some(p) = kind.limit_price() {
            inst.check_price(p)?;
        }
        if let Some(p) = kind.stop_price() {
            inst.check_price(p)?;
        }

        if intent.reduce_only {
            return self.check_reduce_only(intent, kind, ctx);
        }
        if ctx.equity.raw() <= 0 {
            return Err(Refusal::EquityNotPositive(ctx.equity));
        }

        let protection = self.protection(&intent, inst, side, entry)?;
        let stop = protection.stop_loss.unwrap_or(entry);
        let dist = Price((entry.raw() - stop.raw()).abs());
        let budget = ctx.equity.mul_bps_floor(self.cfg.risk_per_trade_bps);
        let qty = match intent.qty {
            Some(q) => inst.floor_qty(q),
            None => {
                let raw = budget.raw() * SCALE as i128 / dist.raw() as i128;
                let cap = self.exposure_headroom(ctx, side, value_price);
                inst.floor_qty(Qty(raw.min(cap).clamp(0, i64::MAX as i128) as i64))
            }
        };
        inst.check_qty(qty)?;
        if exceeds(dist, qty, budget) {
            return Err(Refusal::RiskPerTrade {
                limit: budget,
                would_be: notional_ceil(dist, qty),
            });
        }
        let n = Money::notional(entry, qty);
        if n < Money::from_price(inst.min_notional) {
            return Err(FilterError::NotionalBelowMin {
                notional: Price(n.raw().min(i64::MAX as i128) as i64),
                min: inst.min_notional,
            }
            .into());
        }
        self.check_exposure(ctx, side, qty, value_price)?;

        self.approvals.push_back(ctx.now_ms);
        Ok(ApprovedOrder::new(
            OrderRequest {
                client_id: intent.client_id,
                symbol: intent.symbol,
                side,
                kind,
                qty,
                reduce_only: false,
                time_in_force: intent.time_in_force,
            },
            protection,
            ctx.now_ms,
        ))
    }

    /// The largest quantity on `side` the position, notional and leverage limits leave room
    /// for (sizing from the stop distance is capped by it instead of being refused).
    fn exposure_headroom(&self, ctx: &RiskContext<'_>, side: Side, value_price: Price) -> i128 {
        let pos = ctx.position_qty.raw() as i128;
        // Signed worst-case position, seen from the side that grows: positive means "more of
        // this side".
        let before = match side {
            Side::Buy => pos + ctx.open_buy_qty.raw() as i128,
            Side::Sell => -(pos - ctx.open_sell_qty.raw() as i128),
        };
        let vp = (value_price.raw() as i128).max(1);
        let mut bound = self.cfg.max_position_notional.raw() * SCALE as i128 / vp;
        if let Some(&limit) = self.cfg.max_position_qty.get(&ctx.instrument.symbol) {
            bound = bound.min(limit.raw() as i128);
        }
        let by_position = bound - before;
        let lev_limit = ctx.equity.raw() * self.cfg.max_leverage.raw() as i128 / SCALE as i128;
        let room = lev_limit - ctx.gross_exposure.raw() - ctx.open_order_exposure.raw();
        let by_leverage = before.min(0).abs() + (room.max(0) * SCALE as i128 / vp);
        by_position.min(by_leverage).max(0)
    }

    /// Position, notional and leverage limits for `qty` more on `side`, counting working
    /// orders as if they filled (the worst case).
    fn check_exposure(
        &self,
        ctx: &RiskContext<'_>,
        side: Side,
        qty: Qty,
        value_price: Price,
    ) -> Result<(), Refusal> {
        let pos = ctx.position_qty.raw() as i128;
        let (before, after) = match side {
            Side::Buy => {
                let b = pos + ctx.open_buy_qty.raw() as i128;
                (b, b + qty.raw() as i128)
            }
            Side::Sell => {
                let b = pos - ctx.open_sell_qty.raw() as i128;
                (b, b - qty.raw() as i128)
            }
        };
        let after_abs = after.unsigned_abs();
        let grows = after_abs > before.unsigned_abs();
        if !grows {
            return Ok(());
        }
        let would_be = Qty(after_abs.min(i64::MAX as u128) as i64);
        if let Some(&limit) = self.cfg.max_position_qty.get(&ctx.instrument.symbol)
            && would_be > limit
        {
            return Err(Refusal::PositionQty { limit, would_be });
        }
        if exceeds(value_price, would_be, self.cfg.max_position_notional) {
            return Err(Refusal::PositionNotional {
                limit: self.cfg.max_position_notional,
                would_be: notional_ceil(value_price, would_be),
            });
        }
        let growth = (after_abs - before.unsigned_abs()).min(i64::MAX as u128) as i64;
        // Rounded up: the position's exposure is truncated once as a whole, which can exceed
        // the truncated exposure before plus a truncated growth by one unit of the 8th decimal.
        let gross =
            ctx.gross_exposure + ctx.open_order_exposure + notional_ceil(value_price, Qty(growth));
        let limit = Money(ctx.equity.raw() * self.cfg.max_leverage.raw() as i128 / SCALE as i128);
        if gross > limit {
            return Err(Refusal::Leverage {
                limit,
                would_be: gross,
            });
        }
        Ok(())
    }

    fn check_reduce_only(
        &mut self,
        intent: OrderIntent,
        kind: OrderKind,
        ctx: &RiskContext<'_>,
    ) -> Result<ApprovedOrder, Refusal> {
        let pos = ctx.position_qty.raw();
        let reducible = match intent.side {
            Side::Sell if pos > 0 => pos,
            Side::Buy if pos < 0 => -pos,
            _ => 0,
        };
        if reducible == 0 {
            return Err(Refusal::NothingToReduce {
                side: intent.side,
                position: ctx.position_qty,
            });
        }
        // An exit never exceeds the position; the whole position may be closed even when it
        // is not a lot multiple (exchanges accept the remainder of a position).
        let want = intent.qty.map_or(reducible, |q| q.raw().min(reducible));
        let qty = Qty(want);
        if qty.raw() <= 0 {
            return Err(FilterError::QtyNotPositive(qty).into());
        }
        self.approvals.push_back(ctx.now_ms);
        Ok(ApprovedOrder::new(
            OrderRequest {
                client_id: intent.client_id,
                symbol: intent.symbol,
                side: intent.side,
                kind,
                qty,
                reduce_only: true,
                time_in_force: intent.time_in_force,
            },
            Protection::default(),
            ctx.now_ms,
        ))
    }

    /// Stop-loss (always), take-profit and trailing distance for an entry, rounded to the
    /// tick toward the entry so the exits are never wider than asked.
    fn protection(
        &self,
        intent: &OrderIntent,
        inst: &Instrument,
        side: Side,
        entry: Price,
    ) -> Result<Protection, Refusal> {
        let long = side == Side::Buy;
        let stop = intent
            .stop_loss
            .unwrap_or_else(|| offset_bps(entry, self.exits.stop_bps.max(1), !long));
        let stop = round_tick(inst, stop, long);
        let stop_ok = if long { stop < entry } else { stop > entry };
        if !stop_ok || stop.raw() <= 0 {
            return Err(Refusal::BadStop { side, entry, stop });
        }
        let take_profit = match intent.take_profit {
            Some(tp) => Some(tp),
            None if self.exits.take_profit_bps > 0 => {
                Some(offset_bps(entry, self.exits.take_profit_bps, long))
            }
            None => None,
        }
        .map(|tp| round_tick(inst, tp, !long));
        if let Some(tp) = take_profit {
            let ok = if long { tp > entry } else { tp < entry };
            if !ok {
                return Err(Refusal::BadTakeProfit {
                    side,
                    entry,
                    take_profit: tp,
                });
            }
        }
        let trailing_bps = intent
            .trailing_bps
            .or((self.exits.trailing_bps > 0).then_some(self.exits.trailing_bps))
            .filter(|&b| b > 0);
        Ok(Protection {
            stop_loss: Some(stop),
            take_profit,
            trailing_bps,
        })
    }
}

/// Limit prices to the tick on the passive side. Trigger prices to the tick on the safe side:
/// an exit (reduce-only) triggers no later than asked, an entry no earlier.
fn round_kind(inst: &Instrument, side: Side, kind: OrderKind, reduce_only: bool) -> OrderKind {
    let lim = |p| inst.round_price(side, p);
    // Buy stops and sell take-profits trigger on a rise; the others on a fall.
    let trig = |p, on_rise: bool| {
        let earlier_is_down = on_rise;
        round_tick(inst, p, earlier_is_down != reduce_only)
    };
    let buy = side == Side::Buy;
    let trig_stop = |p| trig(p, buy);
    let trig_tp = |p| trig(p, !buy);
    match kind {
        OrderKind::Market => OrderKind::Market,
        OrderKind::Limit { price, post_only } => OrderKind::Limit {
            price: lim(price),
            post_only,
        },
        OrderKind::StopLoss { stop } => OrderKind::StopLoss {
            stop: trig_stop(stop),
        },
        OrderKind::StopLossLimit { stop, price } => OrderKind::StopLossLimit {
            stop: trig_stop(stop),
            price: lim(price),
        },
        OrderKind::TakeProfit { stop } => OrderKind::TakeProfit {
            stop: trig_tp(stop),
        },
        OrderKind::TakeProfitLimit { stop, price } => OrderKind::TakeProfitLimit {
            stop: trig_tp(stop),
            price: lim(price),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }
    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }

    fn eth() -> Instrument {
        Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: p("0.01"),
            step_size: q("0.0001"),
            min_qty: q("0.0001"),
            max_qty: q("9000"),
            min_notional: p("5"),
            status: InstrumentStatus::Trading,
        }
    }

    fn ctx<'a>(inst: &'a Instrument, now_ms: i64, price: &str) -> RiskContext<'a> {
        RiskContext {
            now_ms,
            instrument: inst,
            reference_price: p(price),
            equity: Money::from_units(10_000),
            position_qty: Qty::ZERO,
            open_buy_qty: Qty::ZERO,
            open_sell_qty: Qty::ZERO,
            gross_exposure: Money::ZERO,
            open_order_exposure: Money::ZERO,
        }
    }

    fn rm() -> RiskManager {
        RiskManager::new(RiskConfig::default(), &ExecutionConfig::default())
    }

    fn intent(n: u64, side: Side, kind: OrderKind) -> OrderIntent {
        OrderIntent::new(ClientOrderId::new("t", n).unwrap(), "ETHUSDT", side, kind)
    }

    #[test]
    fn sizes_from_stop_distance_and_attaches_stop() {
        let inst = eth();
        let mut r = rm();
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.stop_loss = Some(p("1980"));
        let a = r.check(i, &ctx(&inst, 0, "2000")).unwrap();
        // 10000 × 0.5% = 50 at risk over a 20 distance: 2.5 ETH.
        assert_eq!(a.request().qty, q("2.5"));
        assert_eq!(a.protection().stop_loss, Some(p("1980")));
        // Default stop: 1% below entry, rounded toward the entry.
        let a = r
            .check(
                intent(2, Side::Sell, OrderKind::Market),
                &ctx(&inst, 0, "2000.003"),
            )
            .unwrap();
        // 2000.003 × 1.01 = 2020.00303, rounded toward the entry.
        assert_eq!(a.protection().stop_loss, Some(p("2020")));
        // 50 / 19.997 would be 2.5003 ETH; the 5000 notional cap leaves 2.4999.
        assert_eq!(a.request().qty, q("2.4999"));
    }

    #[test]
    fn limit_prices_round_passive_and_quantities_down() {
        let inst = eth();
        let mut r = rm();
        let kind = OrderKind::Limit {
            price: p("1999.999"),
            post_only: false,
        };
        let mut i = intent(1, Side::Buy, kind);
        i.qty = Some(q("0.123456"));
        let a = r.check(i, &ctx(&inst, 0, "2000")).unwrap();
        assert_eq!(a.request().kind.limit_price(), Some(p("1999.99")));
        assert_eq!(a.request().qty, q("0.1234"));
        let mut i = intent(2, Side::Sell, kind);
        i.qty = Some(q("0.1"));
        let a = r.check(i, &ctx(&inst, 0, "2000")).unwrap();
        assert_eq!(a.request().kind.limit_price(), Some(p("2000")));
    }

    #[test]
    fn refusals_carry_their_numbers() {
        let inst = eth();
        let mut cfg = RiskConfig::default();
        cfg.max_position_qty.insert("ETHUSDT".into(), q("1"));
        let mut r = RiskManager::new(cfg, &ExecutionConfig::default());
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.6"));
        let mut c = ctx(&inst, 0, "2000");
        c.position_qty = q("0.5");
        assert_eq!(
            r.check(i.clone(), &c),
            Err(Refusal::PositionQty {
                limit: q("1"),
                would_be: q("1.1")
            })
        );
        // A sell against the long only shrinks it: allowed past the limit.
        c.position_qty = q("1.5");
        let mut s = intent(2, Side::Sell, OrderKind::Market);
        s.qty = Some(q("0.6"));
        assert!(r.check(s, &c).is_ok());

        c.position_qty = Qty::ZERO;
        i.qty = Some(q("0.002"));
        assert!(matches!(
            r.check(i.clone(), &c),
            Err(Refusal::Filter(FilterError::NotionalBelowMin { .. }))
        ));
        i.qty = Some(q("0.9"));
        i.stop_loss = Some(p("1900"));
        assert_eq!(
            r.check(i.clone(), &c),
            Err(Refusal::RiskPerTrade {
                limit: m("50"),
                would_be: m("90")
            })
        );
        i.stop_loss = Some(p("2001"));
        assert!(matches!(
            r.check(i.clone(), &c),
            Err(Refusal::BadStop { .. })
        ));
        i.stop_loss = Some(p("1990"));
        c.gross_exposure = m("8500");
        assert_eq!(
            r.check(i.clone(), &c),
            Err(Refusal::Leverage {
                limit: m("10000"),
                would_be: m("10300")
            })
        );
    }

    #[test]
    fn notional_limit_counts_working_orders() {
        let inst = eth();
        let mut r = rm();
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("1"));
        i.stop_loss = Some(p("1990"));
        let mut c = ctx(&inst, 0, "2000");
        c.open_buy_qty = q("1.6");
        assert_eq!(
            r.check(i, &c),
            Err(Refusal::PositionNotional {
                limit: m("5000"),
                would_be: m("5200")
            })
        );
    }

    #[test]
    fn order_rate_window_slides() {
        let inst = eth();
        let cfg = RiskConfig {
            max_orders_per_minute: 3,
            ..RiskConfig::default()
        };
        let mut r = RiskManager::new(cfg, &ExecutionConfig::default());
        let mk = |n| {
            let mut i = intent(n, Side::Buy, OrderKind::Market);
            i.qty = Some(q("0.01"));
            i
        };
        for n in 0..3 {
            r.check(mk(n), &ctx(&inst, n as i64 * 1000, "2000"))
                .unwrap();
        }
        assert_eq!(
            r.check(mk(9), &ctx(&inst, 59_000, "2000")),
            Err(Refusal::OrderRate { limit: 3, count: 3 })
        );
        assert!(r.check(mk(10), &ctx(&inst, 60_000, "2000")).is_ok());
    }

    #[test]
    fn drawdown_halts_until_resumed_and_exits_still_pass() {
        let inst = eth();
        let cfg = RiskConfig {
            daily_loss_limit_bps: 0,
            ..RiskConfig::default()
        };
        let mut r = RiskManager::new(cfg, &ExecutionConfig::default());
        r.on_equity(Money::from_units(10_000), 0);
        r.on_equity(Money::from_units(9_500), 1);
        assert!(r.halt().is_none());
        r.on_equity(Money::from_units(8_999), 2);
        assert!(matches!(
            r.halt().unwrap().reason,
            HaltReason::Drawdown { .. }
        ));
        assert!(matches!(
            r.take_actions()[..],
            [RiskAction::CancelEntries(_)]
        ));
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.01"));
        assert!(matches!(
            r.check(i.clone(), &ctx(&inst, 3, "2000")),
            Err(Refusal::Halted(_))
        ));
        let mut exit = intent(2, Side::Sell, OrderKind::Market);
        exit.reduce_only = true;
        let mut c = ctx(&inst, 3, "2000");
        c.position_qty = q("0.3");
        let a = r.check(exit, &c).unwrap();
        assert_eq!(a.request().qty, q("0.3"));
        assert!(a.request().reduce_only);
        r.resume(4, Money::from_units(8_999));
        assert!(r.check(i, &ctx(&inst, 5, "2000")).is_ok());
    }

    #[test]
    fn daily_loss_halts_until_next_utc_day() {
        let inst = eth();
        let mut r = rm();
        let t0 = 5 * DAY_MS + 1000;
        r.on_equity(Money::from_units(10_000), t0);
        r.on_equity(Money::from_units(9_650), t0 + 10);
        let h = r.halt().unwrap().clone();
        assert_eq!(h.until_ms, Some(6 * DAY_MS));
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.01"));
        assert!(
            r.check(i.clone(), &ctx(&inst, 6 * DAY_MS - 1, "2000"))
                .is_err()
        );
        r.on_market("ETHUSDT", p("2000"), 6 * DAY_MS);
        r.on_equity(Money::from_units(9_650), 6 * DAY_MS);
        assert!(r.check(i, &ctx(&inst, 6 * DAY_MS + 1, "2000")).is_ok());
    }

    #[test]
    fn stale_data_halts_until_data_resumes() {
        let inst = eth();
        let mut r = rm();
        r.on_market("ETHUSDT", p("2000"), 0);
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.01"));
        assert!(r.check(i.clone(), &ctx(&inst, 10_000, "2000")).is_ok());
        i.client_id = ClientOrderId::new("t", 2).unwrap();
        assert_eq!(
            r.check(i.clone(), &ctx(&inst, 10_001, "2000")),
            Err(Refusal::Halted(HaltReason::StaleData {
                symbol: "ETHUSDT".into(),
                silent_ms: 10_001,
                limit_ms: 10_000
            }))
        );
        r.on_market("ETHUSDT", p("2000"), 12_000);
        assert!(r.check(i, &ctx(&inst, 12_001, "2000")).is_ok());
    }

    #[test]
    fn extreme_move_halts_and_flattens_per_policy() {
        let cfg = RiskConfig {
            halt_policy: HaltPolicy::Flatten,
            ..RiskConfig::default()
        };
        let mut r = RiskManager::new(cfg, &ExecutionConfig::default());
        r.on_market("ETHUSDT", p("2000"), 0);
        r.on_market("ETHUSDT", p("2090"), 30_000);
        assert!(r.halt().is_none());
        // 2000 left the 60 s window; 1990 vs 2090 is 502 bps.
        r.on_market("ETHUSDT", p("1990"), 61_000);
        let h = r.halt().unwrap().clone();
        assert!(matches!(
            h.reason,
            HaltReason::ExtremeMove { move_bps: 502, .. }
        ));
        assert_eq!(h.until_ms, Some(61_000 + 300_000));
        let acts = r.take_actions();
        assert!(matches!(
            acts[..],
            [RiskAction::CancelEntries(_), RiskAction::FlattenAll(_)]
        ));
        r.on_market("ETHUSDT", p("1990"), 361_000);
        assert!(r.halt().is_none());
    }

    #[test]
    fn kill_switch_cancels_flattens_and_holds() {
        let mut r = rm();
        r.kill_switch(7);
        assert!(matches!(
            r.take_actions()[..],
            [
                RiskAction::CancelEntries(HaltReason::KillSwitch),
                RiskAction::FlattenAll(_)
            ]
        ));
        let mut long = Position::flat("ETHUSDT");
        long.qty = q("1.5");
        let mut ids = ClientIdGen::new("k", 1).unwrap();
        let orders = r.flatten_orders(&[long, Position::flat("BTCUSDT")], &mut ids, 8);
        assert_eq!(orders.len(), 1);
        let req = orders[0].request();
        assert_eq!(
            (req.side, req.qty, req.reduce_only),
            (Side::Sell, q("1.5"), true)
        );
        r.on_time(10 * DAY_MS);
        assert_eq!(r.halt().unwrap().reason, HaltReason::KillSwitch);
    }

    #[test]
    fn an_expired_halt_does_not_mask_a_new_breaker() {
        let mut r = rm();
        let t0 = 5 * DAY_MS;
        r.on_equity(Money::from_units(10_000), t0);
        r.on_equity(Money::from_units(9_650), t0 + 1);
        assert!(matches!(
            r.halt().map(|h| &h.reason),
            Some(HaltReason::DailyLoss { .. })
        ));
        // The daily-loss halt is over at midnight; the same update breaches the drawdown.
        r.on_equity(Money::from_units(8_900), 6 * DAY_MS);
        assert!(
            matches!(
                r.halt().map(|h| &h.reason),
                Some(HaltReason::Drawdown { .. })
            ),
            "{:?}",
            r.halt()
        );
    }

    #[test]
    fn conditional_entry_is_measured_from_its_trigger() {
        let inst = eth();
        let mut r = rm();
        // A buy stop at 2100 fills there, not at the 2000 market: 120 to the stop, not 20.
        let mut i = intent(1, Side::Buy, OrderKind::StopLoss { stop: p("2100") });
        i.qty = Some(q("2.5"));
        i.stop_loss = Some(p("1980"));
        assert_eq!(
            r.check(i.clone(), &ctx(&inst, 0, "2000")),
            Err(Refusal::RiskPerTrade {
                limit: m("50"),
                would_be: m("300")
            })
        );
        i.qty = None;
        let a = r.check(i, &ctx(&inst, 0, "2000")).unwrap();
        // 50 at risk over 120: 0.41666…, floored to the step.
        assert_eq!(a.request().qty, q("0.4166"));
        // A buy triggered on a fall below its own stop would be stopped out at once.
        let mut dip = intent(2, Side::Buy, OrderKind::TakeProfit { stop: p("1950") });
        dip.qty = Some(q("0.1"));
        dip.stop_loss = Some(p("1980"));
        assert_eq!(
            r.check(dip, &ctx(&inst, 0, "2000")),
            Err(Refusal::BadStop {
                side: Side::Buy,
                entry: p("1950"),
                stop: p("1980")
            })
        );
    }

    /// An instrument whose products of price and quantity leave digits past the 8th decimal.
    fn fine() -> Instrument {
        Instrument {
            tick_size: Price(1),
            step_size: Qty(1),
            min_qty: Qty(1),
            min_notional: Price::ZERO,
            max_qty: Qty::ZERO,
            ..eth()
        }
    }

    #[test]
    fn limits_compare_exact_products_not_truncated_notionals() {
        let inst = fine();
        let mut r = rm();
        // 0.0007 × 71428.57142858 = 50.0000000000006: over the 50 budget, though its
        // notional truncated at the 8th decimal is exactly 50.
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.0007"));
        i.stop_loss = Some(p("28571.42857142"));
        assert_eq!(
            r.check(i, &ctx(&inst, 0, "100000")),
            Err(Refusal::RiskPerTrade {
                limit: m("50"),
                would_be: m("50.00000001")
            })
        );
        // 0.0007 × 100000.00000001 = 70.000000000007: over a 70 notional limit.
        let mut r = RiskManager::new(
            RiskConfig {
                max_position_notional: m("70"),
                ..RiskConfig::default()
            },
            &ExecutionConfig::default(),
        );
        let mut i = intent(2, Side::Buy, OrderKind::Market);
        i.qty = Some(q("0.0007"));
        i.stop_loss = Some(p("99000"));
        assert_eq!(
            r.check(i, &ctx(&inst, 0, "100000.00000001")),
            Err(Refusal::PositionNotional {
                limit: m("70"),
                would_be: m("70.00000001")
            })
        );
    }

    #[test]
    fn leverage_counts_the_rounding_of_the_grown_position() {
        let inst = fine();
        let mut r = RiskManager::new(
            RiskConfig {
                max_leverage: p("0.5"),
                risk_per_trade_bps: 10_000,
                ..RiskConfig::default()
            },
            &ExecutionConfig::default(),
        );
        let mark = p("0.6");
        let held = Qty(50_000_000_001);
        let mut c = ctx(&inst, 0, "0.6");
        c.equity = m("600");
        c.position_qty = held;
        c.gross_exposure = Money::notional(mark, held);
        assert_eq!(c.gross_exposure, m("300"));
        let mut i = intent(1, Side::Buy, OrderKind::Market);
        i.qty = Some(Qty(1));
        // Filled, the position's exposure would be 300.00000001 (its truncation as a whole
        // gains the unit that the truncated parts lose): over 600 × 0.5.
        let limit = m("300");
        assert!(Money::notional(mark, Qty(held.raw() + 1)) > limit);
        assert_eq!(
            r.check(i, &c),
            Err(Refusal::Leverage {
                limit,
                would_be: m("300.00000001")
            })
        );
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn shipped_config_loads_risk_and_execution() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(
            cfg.risk.max_position_qty.get("ETHUSDT"),
            Some(&Qty::from_units(5))
        );
        assert_eq!(cfg.risk.max_leverage, Price::from_units(1));
        assert_eq!(cfg.execution.taker_fee_bps, Price::from_units(10));
        assert_eq!(cfg.execution.stop_loss_bps, 100);
    }

    #[test]
    fn bad_values_name_file_key_and_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, key) in [
            ("[risk]\nmax_leverage = \"abc\"\n", "risk.max_leverage"),
            ("[risk]\nmax_leverage = \"0\"\n", "risk.max_leverage"),
            ("[risk]\nbogus = 1\n", "risk"),
            (
                "[execution]\nclient_id_prefix = \"bad prefix\"\n",
                "execution.client_id_prefix",
            ),
            (
                "[execution]\ntaker_fee_bps = -1\n",
                "execution.taker_fee_bps",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("config.toml"), "{err}");
            assert!(err.contains(key), "{text} -> {err}");
        }
    }
}

#[cfg(test)]
mod context_tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;

    #[test]
    fn context_counts_working_entries_not_exits() {
        let inst = Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: Price::parse("0.01").unwrap(),
            step_size: Qty::parse("0.001").unwrap(),
            min_qty: Qty::parse("0.001").unwrap(),
            max_qty: Qty::ZERO,
            min_notional: Price::from_units(1),
            status: InstrumentStatus::Trading,
        };
        let order = |n, side, kind, qty: i64, reduce_only| {
            OrderState::new(
                OrderRequest {
                    client_id: ClientOrderId::new("c", n).unwrap(),
                    symbol: "ETHUSDT".into(),
                    side,
                    kind,
                    qty: Qty::from_units(qty),
                    reduce_only,
                    time_in_force: TimeInForce::Gtc,
                },
                0,
            )
        };
        let limit = OrderKind::Limit {
            price: Price::from_units(90),
            post_only: false,
        };
        let orders = [
            order(1, Side::Buy, limit, 2, false),
            order(2, Side::Sell, OrderKind::Market, 1, false),
            order(3, Side::Sell, OrderKind::Market, 5, true),
        ];
        let mut pf = Portfolio::new(Money::from_units(1000), 8);
        pf.mark("ETHUSDT", Price::from_units(100));
        let c = RiskContext::from_account(5, &inst, Price::from_units(100), &pf, &orders);
        assert_eq!(c.open_buy_qty, Qty::from_units(2));
        assert_eq!(c.open_sell_qty, Qty::from_units(1));
        assert_eq!(c.open_order_exposure, Money::from_units(280));
        assert_eq!(c.equity, Money::from_units(1000));
    }
}

#[cfg(test)]
mod working_order_tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;
    use crate::trading::order::Fill;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Price(i64),
        Entry { buy: bool, qty: i64, limit: bool },
        FillOldest,
        CancelOldest,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1_000i64..3_000).prop_map(Op::Price),
            (any::<bool>(), 1i64..200_000_000, any::<bool>())
                .prop_map(|(buy, qty, limit)| Op::Entry { buy, qty, limit }),
            Just(Op::FillOldest),
            Just(Op::CancelOldest),
        ]
    }

    fn fill(pf: &mut Portfolio, o: &OrderState, price: Price, n: usize) {
        pf.apply_fill(&Fill {
            client_id: o.request.client_id.clone(),
            symbol: o.request.symbol.clone(),
            side: o.request.side,
            price,
            qty: o.request.qty,
            fee: Qty::ZERO,
            fee_asset: "USDT".into(),
            fee_quote: Money::ZERO,
            is_maker: true,
            time_ms: 0,
            trade_id: n.to_string(),
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Orders that rest and fill later (or never) are counted at approval, so however
        /// fills and cancels interleave with new intents, the position stays within its
        /// base-quantity limit.
        #[test]
        fn working_orders_never_push_the_position_past_its_limit(
            ops in proptest::collection::vec(op(), 1..150)
        ) {
            let inst = Instrument {
                symbol: "ETHUSDT".into(),
                base_asset: "ETH".into(),
                quote_asset: "USDT".into(),
                tick_size: Price::parse("0.01").unwrap(),
                step_size: Qty::parse("0.0001").unwrap(),
                min_qty: Qty::parse("0.0001").unwrap(),
                max_qty: Qty::ZERO,
                min_notional: Price::from_units(5),
                status: InstrumentStatus::Trading,
            };
            let limit = Qty::from_units(2);
            let cfg = RiskConfig {
                max_position_qty: [("ETHUSDT".to_string(), limit)].into(),
                max_position_notional: Money::from_units(1_000_000),
                max_leverage: Price::from_units(100),
                risk_per_trade_bps: 10_000,
                max_orders_per_minute: u32::MAX,
                stale_data_secs: 0,
                extreme_move_bps: 0,
                ..RiskConfig::default()
            };
            let mut risk = RiskManager::new(cfg, &ExecutionConfig::default());
            let mut pf = Portfolio::new(Money::from_units(100_000), 8);
            let mut working: Vec<OrderState> = Vec::new();
            let mut price = Price::from_units(2_000);
            pf.mark("ETHUSDT", price);
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Price(p) => {
                        price = Price::from_units(p);
                        pf.mark("ETHUSDT", price);
                    }
                    Op::Entry { buy, qty, limit: is_limit } => {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let kind = if is_limit {
                            OrderKind::Limit { price, post_only: false }
                        } else {
                            OrderKind::Market
                        };
                        let mut i = OrderIntent::new(
                            ClientOrderId::new("w", n as u64).unwrap(),
                            "ETHUSDT",
                            side,
                            kind,
                        );
                        i.qty = Some(Qty(qty));
                        let ctx = RiskContext::from_account(0, &inst, price, &pf, &working);
                        if let Ok(a) = risk.check(i, &ctx) {
                            let o = OrderState::new(a.request().clone(), 0);
                            if is_limit {
                                working.push(o);
                            } else {
                                // Market orders fill at once.
                                fill(&mut pf, &o, price, n);
                            }
                        }
                    }
                    Op::FillOldest => {
                        if !working.is_empty() {
                            let o = working.remove(0);
                            fill(&mut pf, &o, price, n);
                        }
                    }
                    Op::CancelOldest => {
                        if !working.is_empty() {
                            working.remove(0);
                        }
                    }
                }
                let pos = pf.qty("ETHUSDT");
                prop_assert!(Qty(pos.raw().abs()) <= limit, "position {} over {}", pos, limit);
            }
        }
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;
    use crate::trading::risk_state::RiskStore;

    fn eth() -> Instrument {
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

    fn ctx(inst: &Instrument, now_ms: i64) -> RiskContext<'_> {
        RiskContext {
            now_ms,
            instrument: inst,
            reference_price: Price::from_units(2_000),
            equity: Money::from_units(10_000),
            position_qty: Qty::ZERO,
            open_buy_qty: Qty::ZERO,
            open_sell_qty: Qty::ZERO,
            gross_exposure: Money::ZERO,
            open_order_exposure: Money::ZERO,
        }
    }

    fn buy(n: u64) -> OrderIntent {
        let mut i = OrderIntent::new(
            ClientOrderId::new("r", n).unwrap(),
            "ETHUSDT",
            Side::Buy,
            OrderKind::Market,
        );
        i.qty = Some(Qty::parse("0.01").unwrap());
        i
    }

    fn cfg() -> RiskConfig {
        RiskConfig {
            stale_data_secs: 0,
            extreme_move_bps: 0,
            ..RiskConfig::default()
        }
    }

    fn fresh() -> RiskManager {
        RiskManager::new(cfg(), &ExecutionConfig::default())
    }

    /// Saves `r`'s state to a file and restores it into a fresh manager at `now_ms`.
    fn restart(r: &RiskManager, now_ms: i64) -> RiskManager {
        let dir = tempfile::tempdir().unwrap();
        let store = RiskStore::in_dir(dir.path());
        store.save(&r.state()).unwrap();
        let mut back = fresh();
        back.restore(store.load().unwrap().unwrap(), now_ms);
        back
    }

    #[test]
    fn kill_switch_halt_survives_a_restart() {
        let inst = eth();
        let mut r = fresh();
        r.kill_switch(1_000);
        let mut back = restart(&r, 30 * DAY_MS);
        assert!(back.state().kill_switch());
        assert_eq!(
            back.halt(),
            Some(&Halt {
                reason: HaltReason::KillSwitch,
                since_ms: 1_000,
                until_ms: None
            })
        );
        assert_eq!(
            back.take_actions(),
            vec![RiskAction::CancelEntries(HaltReason::KillSwitch)]
        );
        back.on_equity(Money::from_units(10_000), 30 * DAY_MS + 1);
        back.on_time(31 * DAY_MS);
        assert_eq!(
            back.check(buy(1), &ctx(&inst, 31 * DAY_MS)),
            Err(Refusal::Halted(HaltReason::KillSwitch))
        );
        back.resume(31 * DAY_MS, Money::from_units(10_000));
        assert!(back.check(buy(2), &ctx(&inst, 31 * DAY_MS + 1)).is_ok());
    }

    #[test]
    fn drawdown_halt_survives_with_its_peak() {
        let inst = eth();
        let mut r = RiskManager::new(
            RiskConfig {
                daily_loss_limit_bps: 0,
                ..cfg()
            },
            &ExecutionConfig::default(),
        );
        r.on_equity(Money::from_units(10_000), 0);
        // Without a halt the peak alone must survive: a fresh manager would measure the
        // drawdown from the first equity it sees.
        let mut quiet = restart(&r, 5);
        assert_eq!(quiet.state().equity_peak, Some(Money::from_units(10_000)));
        quiet.on_equity(Money::from_units(8_999), 6);
        assert!(matches!(
            quiet.halt().map(|h| &h.reason),
            Some(HaltReason::Drawdown { .. })
        ));
        r.on_equity(Money::from_units(8_999), 10);
        let mut back = restart(&r, DAY_MS * 3);
        let want = HaltReason::Drawdown {
            peak: Money::from_units(10_000),
            drawdown: Money::from_units(1_001),
            limit_bps: 1_000,
        };
        assert_eq!(back.halt().map(|h| &h.reason), Some(&want));
        assert_eq!(
            back.status(DAY_MS * 3).equity_peak,
            Money::from_units(10_000)
        );
        // Equity recovering a little does not end it; only a resume does.
        back.on_equity(Money::from_units(9_500), DAY_MS * 3 + 1);
        assert_eq!(
            back.check(buy(1), &ctx(&inst, DAY_MS * 3 + 2)),
            Err(Refusal::Halted(want))
        );
        back.resume(DAY_MS * 3 + 3, Money::from_units(9_500));
        assert!(back.check(buy(2), &ctx(&inst, DAY_MS * 3 + 4)).is_ok());
    }

    #[test]
    fn daily_loss_halt_from_yesterday_ends_on_restore() {
        let inst = eth();
        let mut r = fresh();
        let t0 = 5 * DAY_MS + 1_000;
        r.on_equity(Money::from_units(10_000), t0);
        r.on_equity(Money::from_units(9_650), t0 + 10);
        assert!(matches!(
            r.halt().map(|h| &h.reason),
            Some(HaltReason::DailyLoss { .. })
        ));
        // Restored the same day it stays, with the day's baseline.
        let mut same_day = restart(&r, 6 * DAY_MS - 1);
        assert!(matches!(
            same_day.check(buy(1), &ctx(&inst, 6 * DAY_MS - 1)),
            Err(Refusal::Halted(HaltReason::DailyLoss { .. }))
        ));
        assert_eq!(
            same_day.status(0).day_start_equity,
            Money::from_units(10_000)
        );
        // Restored the next UTC day it is over, even with its end time removed by hand.
        let mut state = r.state();
        state.halt.as_mut().unwrap().until_ms = None;
        let mut next_day = fresh();
        next_day.restore(state, 6 * DAY_MS + 5);
        assert_eq!(next_day.halt(), None);
        assert!(next_day.take_actions().is_empty());
        next_day.on_equity(Money::from_units(9_650), 6 * DAY_MS + 6);
        assert!(next_day.check(buy(2), &ctx(&inst, 6 * DAY_MS + 7)).is_ok());
    }

    #[test]
    fn order_rate_window_and_data_halts_survive() {
        let inst = eth();
        let mut r = RiskManager::new(
            RiskConfig {
                max_orders_per_minute: 3,
                ..cfg()
            },
            &ExecutionConfig::default(),
        );
        for n in 0..3 {
            r.check(buy(n), &ctx(&inst, n as i64 * 1_000)).unwrap();
        }
        let mut back = RiskManager::new(r.config().clone(), &ExecutionConfig::default());
        back.restore(r.state(), 30_000);
        assert_eq!(
            back.check(buy(9), &ctx(&inst, 59_000)),
            Err(Refusal::OrderRate { limit: 3, count: 3 })
        );
        assert!(back.check(buy(10), &ctx(&inst, 60_000)).is_ok());

        // A stale-data halt stays until the symbol's data is seen again.
        let stale = RiskState {
            halt: Some(Halt {
                reason: HaltReason::StaleData {
                    symbol: "ETHUSDT".into(),
                    silent_ms: 10_001,
                    limit_ms: 10_000,
                },
                since_ms: 100,
                until_ms: None,
            }),
            ..RiskState::default()
        };
        let mut back = RiskManager::new(RiskConfig::default(), &ExecutionConfig::default());
        back.restore(stale, 200_000);
        assert!(matches!(
            back.check(buy(1), &ctx(&inst, 200_001)),
            Err(Refusal::Halted(HaltReason::StaleData { .. }))
        ));
        back.on_market("ETHUSDT", Price::from_units(2_000), 200_002);
        assert!(back.check(buy(2), &ctx(&inst, 200_003)).is_ok());

        // An extreme-move halt past its cool-down is over; one within it stays.
        let moved = |until| RiskState {
            halt: Some(Halt {
                reason: HaltReason::ExtremeMove {
                    symbol: "ETHUSDT".into(),
                    move_bps: 600,
                    limit_bps: 500,
                    window_ms: 60_000,
                },
                since_ms: 0,
                until_ms: Some(until),
            }),
            ..RiskState::default()
        };
        let mut over = fresh();
        over.restore(moved(1_000), 1_000);
        assert_eq!(over.halt(), None);
        let mut held = fresh();
        held.restore(moved(1_001), 1_000);
        assert!(held.halt().is_some());
    }

    #[test]
    fn a_kill_switch_in_force_is_not_replaced_by_a_restored_breaker() {
        let mut r = fresh();
        r.kill_switch(5);
        let _ = r.take_actions();
        let mut other = fresh();
        other.on_equity(Money::from_units(10_000), 0);
        other.on_equity(Money::from_units(8_000), 1);
        r.restore(other.state(), 10);
        assert_eq!(r.halt().unwrap().reason, HaltReason::KillSwitch);
        // And a restored kill switch outranks a breaker already in force.
        other.restore(
            RiskState {
                halt: Some(Halt {
                    reason: HaltReason::KillSwitch,
                    since_ms: 3,
                    until_ms: None,
                }),
                ..other.state()
            },
            10,
        );
        assert_eq!(other.halt().unwrap().reason, HaltReason::KillSwitch);
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;
    use crate::trading::order::Fill;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A new reference price (and mark): whole units plus a raw fraction.
        Price(i64, i64),
        /// Time passes, ms.
        Wait(i64),
        /// Half a UTC day passes.
        HalfDay,
        /// The account's equity goes to the breakers.
        Equity,
        Kill,
        Resume,
        /// Flatten orders for every position, filled at the reference price.
        Flatten,
        /// The manager's state goes through JSON into a fresh manager.
        Restart,
        Intent {
            buy: bool,
            /// Raw quantity; `None` sizes from the stop.
            qty: Option<i64>,
            /// Limit price, bps from the reference (`None`: market).
            limit_bps: Option<i64>,
            /// Stop distance, bps from the reference on the losing side (`None`: default;
            /// negative: the wrong side).
            stop_bps: Option<i64>,
            reduce: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1_000i64..3_000, 0i64..100_000_000).prop_map(|(u, f)| Op::Price(u, f)),
            2 => (0i64..40_000).prop_map(Op::Wait),
            1 => Just(Op::HalfDay),
            3 => Just(Op::Equity),
            1 => Just(Op::Kill),
            3 => Just(Op::Resume),
            1 => Just(Op::Flatten),
            1 => Just(Op::Restart),
            8 => (
                any::<bool>(),
                proptest::option::of(1i64..400_000_000),
                proptest::option::weighted(0.4, -300i64..300),
                proptest::option::weighted(0.7, -20i64..400),
                proptest::bool::weighted(0.2),
            )
                .prop_map(|(buy, qty, limit_bps, stop_bps, reduce)| Op::Intent {
                    buy,
                    qty,
                    limit_bps,
                    stop_bps,
                    reduce,
                }),
        ]
    }

    /// Limits and instrument precision for one run.
    #[derive(Debug, Clone)]
    struct Setup {
        /// (tick, step), raw: coarse like Binance ETHUSDT, or fine enough that products of
        /// price and quantity have digits past the 8th decimal.
        precision: (i64, i64),
        qty_limit: Option<i64>,
        notional_limit: i64,
        leverage: &'static str,
        risk_bps: u32,
        rate: u32,
        drawdown_bps: u32,
        daily_bps: u32,
        /// Quantity of another symbol held throughout (BTC at 50000), raw: gross exposure
        /// that is not the traded symbol's.
        other_qty: i64,
    }

    fn setup() -> impl Strategy<Value = Setup> {
        (
            prop_oneof![
                Just((1_000_000i64, 10_000i64)),
                Just((1, 1)),
                Just((1_000_000, 1)),
                Just((1, 100_000)),
            ],
            proptest::option::of(1i64..5),
            1_000i64..8_000,
            prop_oneof![Just("0.5"), Just("1"), Just("2.5")],
            10u32..300,
            2u32..30,
            200u32..1_500,
            100u32..600,
            0i64..12_000_000,
        )
            .prop_map(
                |(
                    precision,
                    qty_limit,
                    notional_limit,
                    leverage,
                    risk_bps,
                    rate,
                    dd,
                    daily,
                    other_qty,
                )| {
                    Setup {
                        other_qty,
                        precision,
                        qty_limit,
                        notional_limit,
                        leverage,
                        risk_bps,
                        rate,
                        drawdown_bps: dd,
                        daily_bps: daily,
                    }
                },
            )
    }

    fn bps_from(p: Price, bps: i64) -> Price {
        Price(p.raw() + (p.raw() as i128 * bps as i128 / 10_000) as i64)
    }

    fn fill_at(pf: &mut Portfolio, req: &OrderRequest, price: Price, n: usize) {
        pf.apply_fill(&Fill {
            client_id: req.client_id.clone(),
            symbol: req.symbol.clone(),
            side: req.side,
            price,
            qty: req.qty,
            fee: Qty::ZERO,
            fee_asset: "USDT".into(),
            fee_quote: Money::ZERO,
            is_maker: false,
            time_ms: 0,
            trade_id: format!("t{n}"),
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Every approved order is filled at once (market orders and marketable limits at
        /// the reference price, passive limits at their limit: the worst each can get).
        /// Whatever the intents, prices, times, halts, flattens and restarts:
        /// - an entry that grows the position leaves its quantity, its notional at the mark
        ///   and the gross exposure within their limits, and its loss at the stop within the
        ///   per-trade budget, each computed here from the config, exactly;
        /// - an exit only shrinks the position, never flips it;
        /// - approvals in any 60 s window never exceed the order rate;
        /// - while the kill switch is on, every entry is refused;
        /// - a manager restored from the JSON of another's `state()` gives the same answer to
        ///   every later check as the original (so it refuses everything the original does).
        #[test]
        fn approved_orders_stay_within_limits_and_restarts_change_nothing(
            setup in setup(),
            ops in proptest::collection::vec(op(), 1..100),
        ) {
            let (tick, step) = setup.precision;
            let inst = Instrument {
                symbol: "ETHUSDT".into(),
                base_asset: "ETH".into(),
                quote_asset: "USDT".into(),
                tick_size: Price(tick),
                step_size: Qty(step),
                min_qty: Qty(step),
                max_qty: Qty::ZERO,
                min_notional: Price::from_units(5),
                status: InstrumentStatus::Trading,
            };
            let cfg = RiskConfig {
                max_position_qty: setup
                    .qty_limit
                    .map(|u| ("ETHUSDT".to_string(), Qty::from_units(u)))
                    .into_iter()
                    .collect(),
                max_position_notional: Money::from_units(setup.notional_limit),
                risk_per_trade_bps: setup.risk_bps,
                max_leverage: Price::parse(setup.leverage).unwrap(),
                max_drawdown_bps: setup.drawdown_bps,
                daily_loss_limit_bps: setup.daily_bps,
                max_orders_per_minute: setup.rate,
                stale_data_secs: 0,
                extreme_move_bps: 0,
                ..RiskConfig::default()
            };
            let exec = ExecutionConfig::default();
            let scale = SCALE as i128;
            let mut a = RiskManager::new(cfg.clone(), &exec);
            let mut b = a.clone();
            let mut ids_a = ClientIdGen::new("fl", 1).unwrap();
            let mut ids_b = ids_a.clone();
            let mut pf = Portfolio::new(Money::from_units(10_000), 16);
            let mut price = Price::from_units(2_000);
            pf.mark("ETHUSDT", price);
            if setup.other_qty > 0 {
                let btc = OrderRequest {
                    client_id: ClientOrderId::new("btc", 1).unwrap(),
                    symbol: "BTCUSDT".into(),
                    side: Side::Buy,
                    kind: OrderKind::Market,
                    qty: Qty(setup.other_qty),
                    reduce_only: false,
                    time_in_force: TimeInForce::Gtc,
                };
                fill_at(&mut pf, &btc, Price::from_units(50_000), 0);
            }
            let mut now = 100 * DAY_MS + 1;
            let mut approvals: Vec<i64> = Vec::new();
            let mut killed = false;
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Price(units, frac) => {
                        price = Price(units * SCALE + frac);
                        pf.mark("ETHUSDT", price);
                    }
                    Op::Wait(ms) => {
                        now += ms;
                        a.on_time(now);
                        b.on_time(now);
                    }
                    Op::HalfDay => now += DAY_MS / 2,
                    Op::Equity => {
                        let e = pf.equity();
                        a.on_equity(e, now);
                        b.on_equity(e, now);
                    }
                    Op::Kill => {
                        a.kill_switch(now);
                        b.kill_switch(now);
                        killed = true;
                    }
                    Op::Resume => {
                        let e = pf.equity();
                        a.resume(now, e);
                        b.resume(now, e);
                        killed = false;
                    }
                    Op::Flatten => {
                        let positions: Vec<Position> = pf.positions().cloned().collect();
                        let fa = a.flatten_orders(&positions, &mut ids_a, now);
                        let fb = b.flatten_orders(&positions, &mut ids_b, now);
                        prop_assert_eq!(&fa, &fb);
                        for o in &fa {
                            prop_assert!(o.request().reduce_only);
                            fill_at(&mut pf, o.request(), price, n);
                        }
                        prop_assert!(pf.positions().all(Position::is_flat));
                    }
                    Op::Restart => {
                        let json = serde_json::to_string(&a.state()).unwrap();
                        let saved: RiskState = serde_json::from_str(&json).unwrap();
                        prop_assert_eq!(&saved, &a.state());
                        b = RiskManager::new(cfg.clone(), &exec);
                        b.restore(saved, now);
                        let _ = a.take_actions();
                        let _ = b.take_actions();
                    }
                    Op::Intent { buy, qty, limit_bps, stop_bps, reduce } => {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let kind = match limit_bps {
                            None => OrderKind::Market,
                            Some(bps) => OrderKind::Limit {
                                price: bps_from(price, bps),
                                post_only: false,
                            },
                        };
                        let mut i = OrderIntent::new(
                            ClientOrderId::new("p", n as u64).unwrap(),
                            "ETHUSDT",
                            side,
                            kind,
                        );
                        i.qty = qty.map(Qty);
                        i.stop_loss = stop_bps.map(|bps| bps_from(price, if buy { -bps } else { bps }));
                        i.reduce_only = reduce;
                        let before = pf.qty("ETHUSDT").raw();
                        let equity = pf.equity();
                        let c = RiskContext {
                            now_ms: now,
                            instrument: &inst,
                            reference_price: price,
                            equity,
                            position_qty: Qty(before),
                            open_buy_qty: Qty::ZERO,
                            open_sell_qty: Qty::ZERO,
                            gross_exposure: pf.gross_exposure(),
                            open_order_exposure: Money::ZERO,
                        };
                        let ra = a.check(i.clone(), &c);
                        let rb = b.check(i, &c);
                        prop_assert_eq!(&ra, &rb, "restored manager disagrees at op {}", n);
                        if killed && !reduce {
                            prop_assert_eq!(
                                ra.as_ref().err(),
                                Some(&Refusal::Halted(HaltReason::KillSwitch))
                            );
                        }
                        let Ok(approved) = ra else { continue };
                        approvals.push(now);
                        let req = approved.request().clone();
                        let fill_price = match req.kind {
                            OrderKind::Limit { price: l, .. } if buy => l.min(price),
                            OrderKind::Limit { price: l, .. } => l.max(price),
                            _ => price,
                        };
                        if !req.reduce_only {
                            let stop = approved.protection().stop_loss;
                            prop_assert!(stop.is_some(), "entry without a stop");
                            // The loss if the stop is hit (none when it lies beyond the fill on
                            // the winning side: it triggers at once, at the market).
                            let against = if buy {
                                fill_price.raw() - stop.unwrap().raw()
                            } else {
                                stop.unwrap().raw() - fill_price.raw()
                            };
                            let dist = against.max(0) as i128;
                            let budget = equity.raw() * setup.risk_bps as i128 / 10_000;
                            prop_assert!(
                                dist * req.qty.raw() as i128 <= budget * scale,
                                "risk {} × {} over budget {}", dist, req.qty, budget
                            );
                        }
                        fill_at(&mut pf, &req, fill_price, n);
                        let after = pf.qty("ETHUSDT").raw();
                        if req.reduce_only {
                            prop_assert!(after.abs() < before.abs());
                            prop_assert!(after == 0 || after.signum() == before.signum());
                        } else if after.abs() > before.abs() {
                            let held = after.unsigned_abs() as i128;
                            if let Some(u) = setup.qty_limit {
                                prop_assert!(held <= u as i128 * scale, "qty {}", after);
                            }
                            prop_assert!(
                                price.raw() as i128 * held <= setup.notional_limit as i128 * scale * scale,
                                "notional of {} at {}", after, price
                            );
                            let lev_limit = equity.raw() * cfg.max_leverage.raw() as i128 / scale;
                            prop_assert!(
                                pf.gross_exposure().raw() <= lev_limit,
                                "gross {} over {}", pf.gross_exposure(), Money(lev_limit)
                            );
                        }
                        for (k, &t) in approvals.iter().enumerate() {
                            let in_window = approvals[k..].iter().filter(|&&u| u < t + MINUTE_MS).count();
                            prop_assert!(in_window <= setup.rate as usize);
                        }
                    }
                }
            }
        }
    }
}
