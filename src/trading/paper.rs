//! The paper executor: simulated fills against the live book, deterministic, no I/O.
//!
//! Rules, chosen to be a little pessimistic rather than flattering:
//! - An order becomes active `latency_ms` after submission (submission time is the last time
//!   seen through `on_market`/`on_time`); it is acknowledged when it becomes active.
//! - Market orders (and marketable limit orders) walk the opposite side of the book; each
//!   activation gives one fill at the VWAP of the levels consumed, rounded against us (up for
//!   a buy, down for a sell). Consumed liquidity is removed from the executor's copy of the
//!   book until the next book update, so two orders cannot take the same quantity. A market
//!   order's remainder when the book runs out expires, as on Binance.
//! - A resting limit order waits behind the quantity visible at its price when it became
//!   active. That queue shrinks by trades at the price (taker hitting our side) and by
//!   quantity removed from the level; once it is gone, further trades at the price fill us.
//!   A trade through the price, or the opposite side crossing it, fills what is left.
//! - Stop and take-profit orders trigger on the last trade price.
//! - Entries carry a [`Protection`]; once filled, the position's stop-loss, take-profit and
//!   trailing stop are watched on every trade and close the whole position at market with a
//!   reduce-only order `<prefix>x-<n>`.
//! - Fees are `notional × bps`, rounded up, charged in the quote asset (maker for resting
//!   fills, taker otherwise).
//! - Cancels take effect at once.

use std::collections::{BTreeMap, BTreeSet};

use crate::market::book::OrderBook;
use crate::market::types::{Level, Price, Qty, Side, Symbol, Trade};
use crate::trading::executor::{ExecutionConfig, Executor, ExecutorError, ExitHook, MarketEvent};
use crate::trading::journal::JournalState;
use crate::trading::money::Money;
use crate::trading::order::{
    CancelReason, ClientIdGen, ClientOrderId, ExecutionEvent, Fill, OrderKind, OrderRequest,
    OrderState, RejectReason, TimeInForce,
};
use crate::trading::position::{Portfolio, Position};
use crate::trading::risk::{ApprovedOrder, Protection};

/// Paper executor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperConfig {
    /// Maker fee, basis points (exact decimal).
    pub maker_fee_bps: Price,
    /// Taker fee, basis points (exact decimal).
    pub taker_fee_bps: Price,
    /// Submission-to-active delay, ms.
    pub latency_ms: i64,
    /// Starting cash in quote.
    pub starting_equity: Money,
    /// Asset fees are charged in (the quote asset).
    pub fee_asset: String,
    /// Prefix of the exit orders the executor places itself.
    pub exit_prefix: String,
}

impl PaperConfig {
    /// From `[execution]`, charging fees in `quote_asset`.
    pub fn from_execution(cfg: &ExecutionConfig, quote_asset: &str) -> Self {
        Self {
            maker_fee_bps: cfg.maker_fee_bps,
            taker_fee_bps: cfg.taker_fee_bps,
            latency_ms: cfg.latency_ms.min(i64::MAX as u64) as i64,
            starting_equity: cfg.starting_equity,
            fee_asset: quote_asset.to_string(),
            exit_prefix: format!("{}x", cfg.client_id_prefix),
        }
    }
}

/// Where a paper order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for its latency to pass.
    Pending { active_at: i64 },
    /// A stop/take-profit waiting for its trigger.
    Armed,
    /// Resting on the book behind `ahead` of visible quantity.
    Resting { ahead: Qty },
    /// Nothing more to do (terminal status).
    Done,
}

#[derive(Debug, Clone)]
struct PaperOrder {
    state: OrderState,
    protection: Protection,
    phase: Phase,
    /// Limit price once working (the triggered limit of a stop-limit).
    limit: Option<Price>,
}

/// Exits watched on one symbol's position.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExitPlan {
    stop: Option<Price>,
    take_profit: Option<Price>,
    trailing_bps: Option<u32>,
    /// Best price since entry (highest for a long, lowest for a short).
    best: Price,
}

/// Simulated executor (see the module docs for the fill rules).
pub struct PaperExecutor {
    cfg: PaperConfig,
    now_ms: i64,
    orders: Vec<PaperOrder>,
    index: BTreeMap<ClientOrderId, usize>,
    seen: BTreeSet<ClientOrderId>,
    books: BTreeMap<Symbol, OrderBook>,
    last_trade: BTreeMap<Symbol, Price>,
    portfolio: Portfolio,
    exits: BTreeMap<Symbol, ExitPlan>,
    exit_ids: ClientIdGen,
    events: Vec<ExecutionEvent>,
    next_exchange_id: u64,
    next_trade_id: u64,
    exit_hook: Option<ExitHook>,
}

impl std::fmt::Debug for PaperExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaperExecutor")
            .field("now_ms", &self.now_ms)
            .field("orders", &self.orders.len())
            .field("exits", &self.exits)
            .field("equity", &self.portfolio.equity())
            .finish()
    }
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    }
}

/// `a` is at least as good as `b` for a taker on `side` (a buyer wants lower prices).
fn within(side: Side, level: Price, limit: Price) -> bool {
    match side {
        Side::Buy => level <= limit,
        Side::Sell => level >= limit,
    }
}

impl PaperExecutor {
    /// A paper account with `cfg.starting_equity` of cash and no positions.
    pub fn new(cfg: PaperConfig) -> Self {
        // An invalid prefix falls back to a fixed valid one: exits must always be placeable.
        let exit_ids = ClientIdGen::new(&cfg.exit_prefix, 1).unwrap_or_else(|_| {
            match ClientIdGen::new("x", 1) {
                Ok(g) => g,
                Err(_) => unreachable!("\"x\" is a valid prefix"),
            }
        });
        Self {
            portfolio: Portfolio::new(cfg.starting_equity, 4096),
            cfg,
            now_ms: 0,
            orders: Vec::new(),
            index: BTreeMap::new(),
            seen: BTreeSet::new(),
            books: BTreeMap::new(),
            last_trade: BTreeMap::new(),
            exits: BTreeMap::new(),
            exit_ids,
            events: Vec::new(),
            next_exchange_id: 1,
            next_trade_id: 1,
            exit_hook: None,
        }
    }

    /// Journals protective exits: the hook sees each exit before it is placed.
    pub fn set_exit_hook(&mut self, hook: ExitHook) {
        self.exit_hook = Some(hook);
    }

    /// Continues exit ids at `<prefix>x-<seq>` (after a restart, above every journaled one).
    pub fn set_next_exit_seq(&mut self, seq: u64) {
        if let Ok(g) = ClientIdGen::new(self.exit_ids.prefix(), seq) {
            self.exit_ids = g;
        }
    }

    /// The prefix of the exit orders' ids.
    pub fn exit_prefix(&self) -> &str {
        self.exit_ids.prefix()
    }

    /// The account: positions, marks, equity and its curve.
    pub fn portfolio(&self) -> &Portfolio {
        &self.portfolio
    }

    /// Equity at the current marks.
    pub fn equity(&self) -> Money {
        self.portfolio.equity()
    }

    /// The time the executor has reached, ms.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Restores a position (journal replay on start-up).
    pub fn restore_position(&mut self, position: Position) {
        self.portfolio.restore(position);
    }

    /// Start-up from a replayed journal: positions, the protective exits of every open
    /// position (from its latest filled protected entry, trailing from that entry's average
    /// price) and the exit id sequence. Working orders are not restored: a paper venue forgets
    /// them, and reconciliation closes or resubmits them.
    pub fn restore_from_journal(&mut self, state: &JournalState) {
        for p in state.positions() {
            self.portfolio.restore(p);
        }
        let mut latest: BTreeMap<Symbol, (i64, &OrderState, Protection)> = BTreeMap::new();
        for (o, prot) in state.orders() {
            let req = &o.request;
            if req.reduce_only || prot.stop_loss.is_none() || o.filled_qty.is_zero() {
                continue;
            }
            if latest
                .get(&req.symbol)
                .is_none_or(|(t, _, _)| o.updated_ms >= *t)
            {
                latest.insert(req.symbol.clone(), (o.updated_ms, o, *prot));
            }
        }
        for (symbol, (_, o, prot)) in latest {
            let qty = self.portfolio.qty(&symbol);
            let long = o.request.side == Side::Buy;
            // Exits of a long do not apply to a short the position has since flipped into.
            if qty.is_zero() || (qty.raw() > 0) != long {
                continue;
            }
            let Some(best) = o.avg_fill_price() else {
                continue;
            };
            self.exits.insert(
                symbol,
                ExitPlan {
                    stop: prot.stop_loss,
                    take_profit: prot.take_profit,
                    trailing_bps: prot.trailing_bps,
                    best,
                },
            );
        }
        self.set_next_exit_seq(state.next_seq_for(self.exit_ids.prefix()));
    }

    fn emit(&mut self, ev: ExecutionEvent) {
        if let Some(&i) = self.index.get(ev.client_id()) {
            if let Err(e) = self.orders[i].state.apply(&ev) {
                // The executor produces only legal sequences; a failure is a logic error,
                // reported rather than panicking in a trading process.
                tracing::error!(error = %e, "paper executor produced an illegal event");
                return;
            }
            if self.orders[i].state.status.is_terminal() {
                self.orders[i].phase = Phase::Done;
            }
        }
        self.events.push(ev);
    }

    fn ack(&mut self, i: usize) {
        let id = self.next_exchange_id;
        self.next_exchange_id += 1;
        let ev = ExecutionEvent::Acknowledged {
            client_id: self.orders[i].state.client_id().clone(),
            exchange_id: format!("paper-{id}"),
            time_ms: self.now_ms,
        };
        self.emit(ev);
    }

    fn end(&mut self, i: usize, ev: fn(ClientOrderId, i64) -> ExecutionEvent) {
        let e = ev(self.orders[i].state.client_id().clone(), self.now_ms);
        self.emit(e);
    }

    fn expire(&mut self, i: usize) {
        self.end(i, |client_id, time_ms| ExecutionEvent::Expired {
            client_id,
            time_ms,
        });
    }

    fn reject(&mut self, i: usize, reason: RejectReason) {
        let ev = ExecutionEvent::Rejected {
            client_id: self.orders[i].state.client_id().clone(),
            reason,
            time_ms: self.now_ms,
        };
        self.emit(ev);
    }

    /// Caps a reduce-only quantity at what the position still holds on the reducing side.
    fn allowed_qty(&self, req: &OrderRequest, want: Qty) -> Qty {
        if !req.reduce_only {
            return want;
        }
        let pos = self.portfolio.qty(&req.symbol).raw();
        let reducible = match req.side {
            Side::Sell => pos.max(0),
            Side::Buy => (-pos).max(0),
        };
        Qty(want.raw().min(reducible))
    }

    /// Books a fill of order `i`.
    fn fill(&mut self, i: usize, price: Price, qty: Qty, maker: bool) {
        if qty.raw() <= 0 {
            return;
        }
        let req = self.orders[i].state.request.clone();
        let bps = if maker {
            self.cfg.maker_fee_bps
        } else {
            self.cfg.taker_fee_bps
        };
        let fee_quote = Money::notional(price, qty).mul_decimal_bps_ceil(bps);
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        let fill = Fill {
            client_id: req.client_id.clone(),
            symbol: req.symbol.clone(),
            side: req.side,
            price,
            qty,
            fee: Qty(fee_quote.raw().min(i64::MAX as i128) as i64),
            fee_asset: self.cfg.fee_asset.clone(),
            fee_quote,
            is_maker: maker,
            time_ms: self.now_ms,
            trade_id: format!("p{trade_id}"),
        };
        self.portfolio.apply_fill(&fill);
        self.emit(ExecutionEvent::Filled(fill));
        self.update_exit_plan(&req, self.orders[i].protection, price);
    }

    fn update_exit_plan(&mut self, req: &OrderRequest, protection: Protection, price: Price) {
        let pos = self.portfolio.qty(&req.symbol);
        if pos.is_zero() {
            self.exits.remove(&req.symbol);
            return;
        }
        if req.reduce_only || protection.stop_loss.is_none() {
            return;
        }
        // The latest protected entry sets the exits of the whole position.
        self.exits.insert(
            req.symbol.clone(),
            ExitPlan {
                stop: protection.stop_loss,
                take_profit: protection.take_profit,
                trailing_bps: protection.trailing_bps,
                best: price,
            },
        );
    }

    /// Takes liquidity for order `i` up to `limit` (None: any price); returns the quantity
    /// filled. Consumed levels are removed from the executor's copy of the book.
    fn take(&mut self, i: usize, limit: Option<Price>) -> Qty {
        let req = &self.orders[i].state.request;
        let side = req.side;
        let symbol = req.symbol.clone();
        let want = self.allowed_qty(req, self.orders[i].state.remaining());
        let Some(book) = self.books.get_mut(&symbol) else {
            return Qty::ZERO;
        };
        let mut left = want.raw();
        let mut notional: i128 = 0;
        let mut consumed: Vec<Level> = Vec::new();
        for level in book.levels(opposite(side)) {
            if left == 0 || limit.is_some_and(|l| !within(side, level.price, l)) {
                break;
            }
            let take = level.qty.raw().min(left);
            notional += level.price.raw() as i128 * take as i128;
            left -= take;
            consumed.push(Level {
                price: level.price,
                qty: Qty(level.qty.raw() - take),
            });
        }
        for l in &consumed {
            book.apply_level(opposite(side), l.price, l.qty);
        }
        let filled = want.raw() - left;
        if filled == 0 {
            return Qty::ZERO;
        }
        let den = filled as i128;
        let vwap = match side {
            Side::Buy => (notional + den - 1).div_euclid(den),
            Side::Sell => notional.div_euclid(den),
        };
        self.fill(i, Price(vwap as i64), Qty(filled), false);
        Qty(filled)
    }

    /// Quantity that can be taken for `side` up to `limit` (for fill-or-kill).
    fn available(&self, symbol: &str, side: Side, limit: Option<Price>) -> Qty {
        let Some(book) = self.books.get(symbol) else {
            return Qty::ZERO;
        };
        let mut total: i64 = 0;
        for level in book.levels(opposite(side)) {
            if limit.is_some_and(|l| !within(side, level.price, l)) {
                break;
            }
            total = total.saturating_add(level.qty.raw());
        }
        Qty(total)
    }

    fn visible_at(&self, symbol: &str, side: Side, price: Price) -> Qty {
        self.books.get(symbol).map_or(Qty::ZERO, |b| {
            b.volume_in_range(side, price, Price(price.raw() + 1))
        })
    }

    /// Whether the opposite side's best price crosses `limit` for an order on `side`.
    fn crosses(&self, symbol: &str, side: Side, limit: Price) -> bool {
        self.books
            .get(symbol)
            .and_then(|b| b.best(opposite(side)))
            .is_some_and(|best| within(side, best.price, limit))
    }

    /// Runs a market order (fresh or triggered) to its end.
    fn run_market(&mut self, i: usize) {
        if self
            .allowed_qty(
                &self.orders[i].state.request,
                self.orders[i].state.remaining(),
            )
            .is_zero()
        {
            self.expire(i);
            return;
        }
        let fok = self.orders[i].state.request.time_in_force == TimeInForce::Fok;
        if fok {
            let req = &self.orders[i].state.request;
            if self.available(&req.symbol, req.side, None) < self.orders[i].state.remaining() {
                self.expire(i);
                return;
            }
        }
        self.take(i, None);
        if self.orders[i].state.status.is_open() {
            self.expire(i);
        }
    }

    /// Works a limit order (fresh or triggered): takes what crosses, rests the rest.
    fn run_limit(&mut self, i: usize, price: Price) {
        let req = self.orders[i].state.request.clone();
        let crosses = self.crosses(&req.symbol, req.side, price);
        if req.time_in_force == TimeInForce::Fok
            && self.available(&req.symbol, req.side, Some(price)) < self.orders[i].state.remaining()
        {
            self.expire(i);
            return;
        }
        if crosses {
            self.take(i, Some(price));
        }
        if !self.orders[i].state.status.is_open() {
            return;
        }
        if req.time_in_force != TimeInForce::Gtc {
            self.expire(i);
            return;
        }
        let ahead = self.visible_at(&req.symbol, req.side, price);
        self.orders[i].limit = Some(price);
        self.orders[i].phase = Phase::Resting { ahead };
    }

    /// Order `i` goes live now: refused outright (never acknowledged) when it cannot work,
    /// otherwise acknowledged and worked.
    fn activate(&mut self, i: usize) {
        let req = &self.orders[i].state.request;
        if req.reduce_only && self.allowed_qty(req, req.qty).is_zero() {
            self.expire(i);
            return;
        }
        match req.kind {
            OrderKind::Market => {
                if self.available(&req.symbol, req.side, None).is_zero() {
                    self.reject(i, RejectReason::NoLiquidity);
                    return;
                }
                self.ack(i);
                self.run_market(i);
            }
            OrderKind::Limit { price, post_only } => {
                if post_only && self.crosses(&req.symbol, req.side, price) {
                    self.reject(i, RejectReason::WouldTake);
                    return;
                }
                self.ack(i);
                self.run_limit(i, price);
            }
            _ => {
                self.ack(i);
                self.orders[i].phase = Phase::Armed;
                // A trigger already reached fires on the last trade seen.
                if let Some(&last) = self.last_trade.get(&self.orders[i].state.request.symbol) {
                    self.check_trigger(i, last);
                }
            }
        }
    }

    fn check_trigger(&mut self, i: usize, last: Price) {
        let req = &self.orders[i].state.request;
        let buy = req.side == Side::Buy;
        let (stop, limit, on_rise) = match req.kind {
            OrderKind::StopLoss { stop } => (stop, None, buy),
            OrderKind::StopLossLimit { stop, price } => (stop, Some(price), buy),
            OrderKind::TakeProfit { stop } => (stop, None, !buy),
            OrderKind::TakeProfitLimit { stop, price } => (stop, Some(price), !buy),
            _ => return,
        };
        let hit = if on_rise { last >= stop } else { last <= stop };
        if !hit {
            return;
        }
        match limit {
            None => self.run_market(i),
            Some(p) => self.run_limit(i, p),
        }
    }

    /// Activates every pending order whose latency has passed, in submission order.
    fn activate_due(&mut self, symbol: Option<&str>) {
        for i in 0..self.orders.len() {
            if let Phase::Pending { active_at } = self.orders[i].phase
                && active_at <= self.now_ms
                && symbol.is_none_or(|s| self.orders[i].state.request.symbol == s)
                && self
                    .books
                    .contains_key(&self.orders[i].state.request.symbol)
            {
                self.activate(i);
            }
        }
    }

    fn on_book(&mut self, symbol: &str, book: &OrderBook) {
        match self.books.get_mut(symbol) {
            Some(b) => b.clone_from(book),
            None => {
                self.books.insert(symbol.to_string(), book.clone());
            }
        }
        if !self.last_trade.contains_key(symbol)
            && let Some(mid) = book.mid()
        {
            self.portfolio.mark(symbol, mid);
        }
        self.activate_due(Some(symbol));
        for i in 0..self.orders.len() {
            let o = &self.orders[i];
            let (Phase::Resting { ahead }, Some(limit)) = (o.phase, o.limit) else {
                continue;
            };
            if o.state.request.symbol != symbol {
                continue;
            }
            let side = o.state.request.side;
            if self.crosses(symbol, side, limit) {
                // The other side moved through our price: we were hit at our price.
                let want = self.allowed_qty(&o.state.request, o.state.remaining());
                self.fill_resting(i, limit, want);
                continue;
            }
            let visible = self.visible_at(symbol, side, limit);
            self.orders[i].phase = Phase::Resting {
                ahead: ahead.min(visible),
            };
        }
    }

    fn fill_resting(&mut self, i: usize, price: Price, qty: Qty) {
        let remaining = self.orders[i].state.remaining();
        let capped = self.allowed_qty(&self.orders[i].state.request, qty.min(remaining));
        if capped.is_zero() {
            if self.orders[i].state.request.reduce_only
                && self
                    .allowed_qty(&self.orders[i].state.request, remaining)
                    .is_zero()
            {
                self.expire(i);
            }
            return;
        }
        self.fill(i, price, capped, true);
    }

    fn on_trade(&mut self, t: &Trade) {
        self.last_trade.insert(t.symbol.clone(), t.price);
        self.portfolio.mark(&t.symbol, t.price);
        self.activate_due(Some(&t.symbol));
        for i in 0..self.orders.len() {
            if self.orders[i].state.request.symbol != t.symbol {
                continue;
            }
            match (self.orders[i].phase, self.orders[i].limit) {
                (Phase::Armed, _) => self.check_trigger(i, t.price),
                (Phase::Resting { ahead }, Some(limit)) => {
                    let side = self.orders[i].state.request.side;
                    let through = match side {
                        Side::Buy => t.price < limit,
                        Side::Sell => t.price > limit,
                    };
                    if through {
                        let rem = self.orders[i].state.remaining();
                        self.fill_resting(i, limit, rem);
                    } else if t.price == limit && t.taker_side != side {
                        // Trades at our price eat the queue ahead first, then us.
                        let past = t.qty.raw() - ahead.raw();
                        self.orders[i].phase = Phase::Resting {
                            ahead: Qty((ahead.raw() - t.qty.raw()).max(0)),
                        };
                        if past > 0 {
                            self.fill_resting(i, limit, Qty(past));
                        }
                    }
                }
                _ => {}
            }
        }
        self.run_exits(&t.symbol, t.price);
    }

    /// Trailing update and stop/take-profit check for a symbol's position on a trade.
    fn run_exits(&mut self, symbol: &str, last: Price) {
        let pos = self.portfolio.qty(symbol).raw();
        let Some(plan) = self.exits.get_mut(symbol) else {
            return;
        };
        if pos == 0 {
            self.exits.remove(symbol);
            return;
        }
        let long = pos > 0;
        if let Some(bps) = plan.trailing_bps {
            plan.best = if long {
                plan.best.max(last)
            } else {
                plan.best.min(last)
            };
            let d = plan.best.raw() as i128 * bps as i128 / 10_000;
            let trail = Price(if long {
                plan.best.raw() - d as i64
            } else {
                plan.best.raw() + d as i64
            });
            plan.stop = Some(match plan.stop {
                Some(s) if long => s.max(trail),
                Some(s) => s.min(trail),
                None => trail,
            });
        }
        let stop_hit = plan
            .stop
            .is_some_and(|s| if long { last <= s } else { last >= s });
        let tp_hit = plan
            .take_profit
            .is_some_and(|tp| if long { last >= tp } else { last <= tp });
        if !(stop_hit || tp_hit) {
            return;
        }
        let request = OrderRequest {
            client_id: self.exit_ids.next_id(),
            symbol: symbol.to_string(),
            side: if long { Side::Sell } else { Side::Buy },
            kind: OrderKind::Market,
            qty: Qty(pos.abs()),
            reduce_only: true,
            time_in_force: TimeInForce::Gtc,
        };
        if let Some(hook) = self.exit_hook.as_mut()
            && !hook(&request)
        {
            // Not journaled, not placed: the plan stays and the next trade tries again.
            tracing::warn!(exit = %request.client_id, "exit not journaled; not placed");
            return;
        }
        let plan = self.exits.remove(symbol);
        let i = self.insert(request, Protection::default());
        // Exits skip the latency: the venue-side stop order was already resting there.
        self.activate(i);
        // A thin book can leave part of the position after the exit's remainder expired: the
        // stop stays in force for what is left, so the next trade beyond it closes more.
        let left = self.portfolio.qty(symbol).raw();
        if left != 0
            && (left > 0) == long
            && let Some(plan) = plan
        {
            self.exits.entry(symbol.to_string()).or_insert(plan);
        }
    }

    fn insert(&mut self, request: OrderRequest, protection: Protection) -> usize {
        let id = request.client_id.clone();
        self.seen.insert(id.clone());
        self.orders.push(PaperOrder {
            state: OrderState::new(request, self.now_ms),
            protection,
            phase: Phase::Pending {
                active_at: self.now_ms.saturating_add(self.cfg.latency_ms),
            },
            limit: None,
        });
        let i = self.orders.len() - 1;
        self.index.insert(id, i);
        i
    }

    /// Drops finished orders from the working list (their events were already emitted).
    fn compact(&mut self) {
        if self.orders.iter().all(|o| o.phase != Phase::Done) {
            return;
        }
        self.orders.retain(|o| o.phase != Phase::Done);
        self.index = self
            .orders
            .iter()
            .enumerate()
            .map(|(i, o)| (o.state.client_id().clone(), i))
            .collect();
    }
}

impl Executor for PaperExecutor {
    fn name(&self) -> &str {
        "paper"
    }

    fn submit(&mut self, order: ApprovedOrder) -> Result<(), ExecutorError> {
        let (request, protection) = order.into_parts();
        if self.seen.contains(&request.client_id) {
            return Err(ExecutorError::DuplicateClientId(request.client_id));
        }
        let i = self.insert(request, protection);
        if self.cfg.latency_ms == 0
            && self
                .books
                .contains_key(&self.orders[i].state.request.symbol)
        {
            self.activate(i);
            self.compact();
        }
        Ok(())
    }

    fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExecutorError> {
        let Some(&i) = self.index.get(client_id) else {
            return Err(ExecutorError::UnknownOrder(client_id.clone()));
        };
        if self.orders[i].phase == Phase::Done {
            return Err(ExecutorError::UnknownOrder(client_id.clone()));
        }
        let ev = ExecutionEvent::Cancelled {
            client_id: client_id.clone(),
            reason: CancelReason::Requested,
            time_ms: self.now_ms,
        };
        self.emit(ev);
        self.compact();
        Ok(())
    }

    fn on_market(&mut self, event: MarketEvent<'_>, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            MarketEvent::Book { symbol, book } => self.on_book(symbol, book),
            MarketEvent::Trade(t) => self.on_trade(t),
        }
        self.compact();
    }

    fn on_time(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.activate_due(None);
        self.compact();
    }

    fn poll_events(&mut self) -> Vec<ExecutionEvent> {
        std::mem::take(&mut self.events)
    }

    fn open_orders(&self) -> Vec<OrderState> {
        self.orders
            .iter()
            .filter(|o| o.state.status.is_open())
            .map(|o| o.state.clone())
            .collect()
    }

    fn positions(&self) -> Vec<Position> {
        self.portfolio.positions().cloned().collect()
    }

    fn last_price(&self, symbol: &str) -> Option<Price> {
        self.last_trade
            .get(symbol)
            .copied()
            .or_else(|| self.books.get(symbol).and_then(OrderBook::mid))
    }

    fn exits(&self, symbol: &str) -> crate::trading::executor::ExitLevels {
        self.exits
            .get(symbol)
            .map(|plan| crate::trading::executor::ExitLevels {
                stop: plan.stop,
                take_profit: plan.take_profit,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::instrument::{Instrument, InstrumentStatus};
    use crate::trading::risk::{OrderIntent, RiskConfig, RiskContext, RiskManager};

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }
    fn lv(price: &str, qty: &str) -> Level {
        Level {
            price: p(price),
            qty: q(qty),
        }
    }

    fn inst() -> Instrument {
        Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: p("0.01"),
            step_size: q("0.001"),
            min_qty: q("0.001"),
            max_qty: Qty::ZERO,
            min_notional: p("1"),
            status: InstrumentStatus::Trading,
        }
    }

    struct Rig {
        inst: Instrument,
        risk: RiskManager,
        ex: PaperExecutor,
        book: OrderBook,
        n: u64,
    }

    impl Rig {
        fn new(latency_ms: i64) -> Self {
            let cfg = RiskConfig {
                max_position_notional: Money::from_units(1_000_000),
                max_leverage: Price::from_units(100),
                risk_per_trade_bps: 10_000,
                max_orders_per_minute: 100_000,
                stale_data_secs: 0,
                extreme_move_bps: 0,
                ..RiskConfig::default()
            };
            let exec = ExecutionConfig::default();
            let mut pc = PaperConfig::from_execution(&exec, "USDT");
            pc.latency_ms = latency_ms;
            let mut book = OrderBook::new();
            book.apply_snapshot(
                &[lv("99", "3"), lv("98", "5")],
                &[lv("100", "1"), lv("101", "2")],
                1,
            );
            Self {
                inst: inst(),
                risk: RiskManager::new(cfg, &exec),
                ex: PaperExecutor::new(pc),
                book,
                n: 0,
            }
        }

        fn book(&mut self, t: i64) {
            self.ex.on_market(
                MarketEvent::Book {
                    symbol: "ETHUSDT",
                    book: &self.book,
                },
                t,
            );
        }

        fn trade(&mut self, t: i64, price: &str, qty: &str, taker: Side) {
            let tr = Trade {
                symbol: "ETHUSDT".into(),
                id: t as u64,
                time_ms: t,
                price: p(price),
                qty: q(qty),
                taker_side: taker,
            };
            self.ex.on_market(MarketEvent::Trade(&tr), t);
        }

        fn submit(
            &mut self,
            side: Side,
            kind: OrderKind,
            qty: &str,
            stop: Option<&str>,
        ) -> ClientOrderId {
            self.submit_with(side, kind, qty, stop, |_| {})
        }

        fn submit_with(
            &mut self,
            side: Side,
            kind: OrderKind,
            qty: &str,
            stop: Option<&str>,
            edit: impl FnOnce(&mut OrderIntent),
        ) -> ClientOrderId {
            self.n += 1;
            let id = ClientOrderId::new("t", self.n).unwrap();
            let mut i = OrderIntent::new(id.clone(), "ETHUSDT", side, kind);
            i.qty = Some(q(qty));
            i.stop_loss = stop.map(p);
            edit(&mut i);
            let pos = self.ex.portfolio().qty("ETHUSDT");
            let ctx = RiskContext {
                now_ms: self.ex.now_ms(),
                instrument: &self.inst,
                reference_price: self.ex.last_price("ETHUSDT").unwrap_or(p("100")),
                equity: self.ex.equity(),
                position_qty: pos,
                open_buy_qty: Qty::ZERO,
                open_sell_qty: Qty::ZERO,
                gross_exposure: self.ex.portfolio().gross_exposure(),
                open_order_exposure: Money::ZERO,
            };
            let a = self.risk.check(i, &ctx).unwrap();
            self.ex.submit(a).unwrap();
            id
        }

        fn fills(&mut self) -> Vec<Fill> {
            self.ex
                .poll_events()
                .into_iter()
                .filter_map(|e| match e {
                    ExecutionEvent::Filled(f) => Some(f),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn market_order_walks_levels_at_vwap_with_taker_fee() {
        let mut r = Rig::new(0);
        r.book(1);
        r.submit(Side::Buy, OrderKind::Market, "2", Some("90"));
        let ev = r.ex.poll_events();
        assert!(matches!(ev[0], ExecutionEvent::Acknowledged { .. }));
        let ExecutionEvent::Filled(f) = &ev[1] else {
            panic!("{ev:?}")
        };
        assert_eq!((f.price, f.qty, f.is_maker), (p("100.5"), q("2"), false));
        // 201 × 10 bps.
        assert_eq!(f.fee_quote, Money::parse("0.201").unwrap());
        assert_eq!(ev.len(), 2);
        assert_eq!(r.ex.portfolio().qty("ETHUSDT"), q("2"));
        // The liquidity taken is gone until the next book update.
        r.submit(Side::Buy, OrderKind::Market, "1", Some("90"));
        let f = r.fills();
        assert_eq!((f[0].price, f[0].qty), (p("101"), q("1")));
    }

    #[test]
    fn market_order_expires_remainder_when_depth_runs_out() {
        let mut r = Rig::new(0);
        r.book(1);
        let id = r.submit(Side::Buy, OrderKind::Market, "5", Some("90"));
        let ev = r.ex.poll_events();
        let ExecutionEvent::Filled(f) = &ev[1] else {
            panic!()
        };
        assert_eq!(f.qty, q("3"));
        // (100 + 2 × 101) / 3 = 100.666..., rounded up for a buy.
        assert_eq!(f.price, p("100.66666667"));
        assert_eq!(
            ev[2],
            ExecutionEvent::Expired {
                client_id: id,
                time_ms: 1
            }
        );
    }

    #[test]
    fn orders_wait_for_latency() {
        let mut r = Rig::new(50);
        r.book(0);
        r.submit(Side::Sell, OrderKind::Market, "1", Some("110"));
        r.book(49);
        assert!(r.ex.poll_events().is_empty());
        assert_eq!(r.ex.open_orders().len(), 1);
        r.ex.on_time(50);
        let f = r.fills();
        assert_eq!((f[0].price, f[0].side), (p("99"), Side::Sell));
        assert!(r.ex.open_orders().is_empty());
    }

    #[test]
    fn resting_limit_waits_for_the_queue_ahead() {
        let mut r = Rig::new(0);
        r.book(0);
        let kind = OrderKind::Limit {
            price: p("99"),
            post_only: true,
        };
        r.submit(Side::Buy, kind, "1", Some("90"));
        assert!(r.fills().is_empty());
        // 3 ahead: a 2 sale at 99 leaves 1 ahead.
        r.trade(1, "99", "2", Side::Sell);
        assert!(r.fills().is_empty());
        // Buys at 99 do not touch our bid.
        r.trade(2, "99", "5", Side::Buy);
        assert!(r.fills().is_empty());
        r.trade(3, "99", "1.4", Side::Sell);
        let f = r.fills();
        assert_eq!((f[0].qty, f[0].is_maker), (q("0.4"), true));
        assert_eq!(f[0].fee_quote, Money::parse("0.00792").unwrap());
        // A trade through our price fills the rest.
        r.trade(4, "98.5", "0.1", Side::Sell);
        let f = r.fills();
        assert_eq!((f[0].price, f[0].qty), (p("99"), q("0.6")));
        assert_eq!(r.ex.portfolio().qty("ETHUSDT"), q("1"));
    }

    #[test]
    fn removed_quantity_ahead_moves_us_up() {
        let mut r = Rig::new(0);
        r.book(0);
        let kind = OrderKind::Limit {
            price: p("99"),
            post_only: false,
        };
        r.submit(Side::Buy, kind, "1", Some("90"));
        r.book.apply_level(Side::Buy, p("99"), q("0.5"));
        r.book(1);
        r.trade(2, "99", "0.7", Side::Sell);
        let f = r.fills();
        assert_eq!(f[0].qty, q("0.2"));
        // The ask side crossing our bid fills what is left at our price.
        r.book.apply_level(Side::Sell, p("98.9"), q("4"));
        r.book(3);
        let f = r.fills();
        assert_eq!((f[0].price, f[0].qty), (p("99"), q("0.8")));
    }

    #[test]
    fn post_only_that_would_take_is_rejected_and_fok_expires() {
        let mut r = Rig::new(0);
        r.book(0);
        let kind = OrderKind::Limit {
            price: p("100"),
            post_only: true,
        };
        let id = r.submit(Side::Buy, kind, "0.5", Some("90"));
        let ev = r.ex.poll_events();
        assert_eq!(
            ev[0],
            ExecutionEvent::Rejected {
                client_id: id,
                reason: RejectReason::WouldTake,
                time_ms: 0
            }
        );
        let kind = OrderKind::Limit {
            price: p("100"),
            post_only: false,
        };
        let id = r.submit_with(Side::Buy, kind, "2", Some("90"), |i| {
            i.time_in_force = TimeInForce::Fok
        });
        let ev = r.ex.poll_events();
        assert_eq!(
            ev[1],
            ExecutionEvent::Expired {
                client_id: id,
                time_ms: 0
            }
        );
        // Marketable limit: takes 1 at 100, rests 1 at 100.
        r.submit(Side::Buy, kind, "2", Some("90"));
        let f = r.fills();
        assert_eq!((f[0].price, f[0].qty), (p("100"), q("1")));
        assert_eq!(r.ex.open_orders()[0].remaining(), q("1"));
    }

    #[test]
    fn protective_stop_closes_the_position() {
        let mut r = Rig::new(0);
        r.book(0);
        r.submit(Side::Buy, OrderKind::Market, "1", Some("95"));
        r.ex.poll_events();
        r.trade(1, "97", "1", Side::Sell);
        assert!(r.fills().is_empty());
        r.trade(2, "95", "1", Side::Sell);
        let f = r.fills();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].side, f[0].qty, f[0].price),
            (Side::Sell, q("1"), p("99"))
        );
        assert_eq!(f[0].client_id.as_str(), "mmx-1");
        assert!(r.ex.portfolio().qty("ETHUSDT").is_zero());
        // Flat: no more exits fire.
        r.trade(3, "90", "1", Side::Sell);
        assert!(r.fills().is_empty());
    }

    #[test]
    fn trailing_stop_follows_the_best_price() {
        let mut r = Rig::new(0);
        r.book(0);
        r.submit_with(Side::Buy, OrderKind::Market, "1", Some("90"), |i| {
            i.trailing_bps = Some(200)
        });
        r.ex.poll_events();
        r.trade(1, "110", "1", Side::Buy);
        r.trade(2, "108", "1", Side::Sell);
        assert!(r.fills().is_empty());
        // 2% under the 110 peak is 107.8.
        r.trade(3, "107.8", "1", Side::Sell);
        assert_eq!(r.fills().len(), 1);
    }

    #[test]
    fn stop_orders_trigger_on_last_trade() {
        let mut r = Rig::new(0);
        r.book(0);
        r.submit(Side::Buy, OrderKind::Market, "1", Some("80"));
        r.fills();
        let kind = OrderKind::TakeProfitLimit {
            stop: p("105"),
            price: p("104"),
        };
        r.submit_with(Side::Sell, kind, "1", None, |i| i.reduce_only = true);
        r.trade(1, "104", "1", Side::Buy);
        assert!(r.fills().is_empty());
        r.trade(2, "105", "1", Side::Buy);
        // Triggered into a sell limit at 104: rests behind nothing on the ask at 104, the
        // next buy at 104 fills it.
        assert!(r.fills().is_empty());
        r.trade(3, "104", "1", Side::Buy);
        let f = r.fills();
        assert_eq!((f[0].price, f[0].qty), (p("104"), q("1")));
    }

    #[test]
    fn cancel_and_duplicate_ids() {
        let mut r = Rig::new(0);
        r.book(0);
        let kind = OrderKind::Limit {
            price: p("95"),
            post_only: false,
        };
        let id = r.submit(Side::Buy, kind, "1", Some("90"));
        r.ex.cancel(&id).unwrap();
        let ev = r.ex.poll_events();
        assert!(matches!(ev.last(), Some(ExecutionEvent::Cancelled { .. })));
        assert_eq!(
            r.ex.cancel(&id),
            Err(ExecutorError::UnknownOrder(id.clone()))
        );
        assert!(r.ex.open_orders().is_empty());
        let mut i = OrderIntent::new(id.clone(), "ETHUSDT", Side::Buy, kind);
        i.qty = Some(q("1"));
        i.stop_loss = Some(p("90"));
        let ctx = RiskContext {
            now_ms: 0,
            instrument: &r.inst,
            reference_price: p("100"),
            equity: r.ex.equity(),
            position_qty: Qty::ZERO,
            open_buy_qty: Qty::ZERO,
            open_sell_qty: Qty::ZERO,
            gross_exposure: Money::ZERO,
            open_order_exposure: Money::ZERO,
        };
        let a = r.risk.check(i, &ctx).unwrap();
        assert_eq!(r.ex.submit(a), Err(ExecutorError::DuplicateClientId(id)));
    }

    #[test]
    fn same_events_give_same_results() {
        let run = || {
            let mut r = Rig::new(20);
            r.book(0);
            r.submit(Side::Buy, OrderKind::Market, "1.5", Some("95"));
            let kind = OrderKind::Limit {
                price: p("99"),
                post_only: false,
            };
            r.submit(Side::Buy, kind, "1", Some("95"));
            let mut all = Vec::new();
            for t in 1..40 {
                r.book(t * 10);
                let px = format!("{}", 96 + (t * 7) % 6);
                r.trade(
                    t * 10 + 5,
                    &px,
                    "0.7",
                    if t % 2 == 0 { Side::Buy } else { Side::Sell },
                );
                all.extend(r.ex.poll_events());
            }
            (all, r.ex.equity())
        };
        let (a, ea) = run();
        let (b, eb) = run();
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(ea, eb);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Level(bool, i64, i64),
        Trade(i64, i64, bool),
        Submit(bool, u8, i64, i64, bool),
        Cancel(usize),
        Wait(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<bool>(), 95i64..106, 0i64..5).prop_map(|(b, p, q)| Op::Level(b, p, q)),
            (95i64..106, 1i64..4000, any::<bool>()).prop_map(|(p, q, b)| Op::Trade(p, q, b)),
            (any::<bool>(), 0u8..6, 1i64..3000, 96i64..105, any::<bool>())
                .prop_map(|(b, k, q, p, r)| Op::Submit(b, k, q, p, r)),
            (0usize..8).prop_map(Op::Cancel),
            (0i64..40).prop_map(Op::Wait),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
        /// Whatever the market and the orders do, every event the executor emits is legal for
        /// its order, no order fills past its quantity, and no reduce-only fill flips or grows
        /// the position.
        #[test]
        fn events_are_always_legal(ops in proptest::collection::vec(op(), 1..150)) {
            use crate::trading::journal::{JournalRecord, JournalState};
            use std::sync::{Arc, Mutex};
            let mut r = Rig::new(10);
            let shadow = Arc::new(Mutex::new(JournalState::new("t")));
            let hook_shadow = shadow.clone();
            r.ex.set_exit_hook(Box::new(move |req| {
                hook_shadow
                    .lock()
                    .unwrap()
                    .apply(&JournalRecord::Intent {
                        request: req.clone(),
                        protection: Protection::default(),
                        time_ms: 0,
                    })
                    .is_ok()
            }));
            let mut t = 0i64;
            r.book(t);
            for op in ops {
                match op {
                    Op::Level(bid, px, q) => {
                        let side = if bid { Side::Buy } else { Side::Sell };
                        r.book.apply_level(side, Price::from_units(px), Qty::from_units(q));
                        if !r.book.is_crossed() {
                            r.book(t);
                        }
                    }
                    Op::Trade(px, q, buy) => {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        r.trade(t, &px.to_string(), &format!("0.{q:04}"), side);
                    }
                    Op::Submit(buy, k, q, px, reduce) => {
                        let side = if buy { Side::Buy } else { Side::Sell };
                        let price = Price::from_units(px);
                        let kind = match k {
                            0 => OrderKind::Market,
                            1 => OrderKind::Limit { price, post_only: false },
                            2 => OrderKind::Limit { price, post_only: true },
                            3 => OrderKind::StopLoss { stop: price },
                            4 => OrderKind::TakeProfitLimit { stop: price, price },
                            _ => OrderKind::StopLossLimit { stop: price, price },
                        };
                        r.n += 1;
                        let id = ClientOrderId::new("t", r.n).unwrap();
                        let mut i = OrderIntent::new(id, "ETHUSDT", side, kind);
                        i.qty = Some(Qty(q * 100_000));
                        i.reduce_only = reduce;
                        let ctx = RiskContext::from_account(
                            t,
                            &r.inst,
                            r.ex.last_price("ETHUSDT").unwrap_or(Price::from_units(100)),
                            r.ex.portfolio(),
                            &r.ex.open_orders(),
                        );
                        if let Ok(a) = r.risk.check(i, &ctx) {
                            shadow.lock().unwrap().apply(&JournalRecord::Intent {
                                request: a.request().clone(),
                                protection: *a.protection(),
                                time_ms: t,
                            }).unwrap();
                            r.ex.submit(a).unwrap();
                        }
                    }
                    Op::Cancel(k) => {
                        let open = r.ex.open_orders();
                        if let Some(o) = open.get(k % open.len().max(1)) {
                            r.ex.cancel(o.client_id()).unwrap();
                        }
                    }
                    Op::Wait(ms) => {
                        t += ms;
                        r.ex.on_time(t);
                    }
                }
                let before = shadow.lock().unwrap().position_qty("ETHUSDT");
                let mut pos = before.raw();
                for ev in r.ex.poll_events() {
                    let mut sh = shadow.lock().unwrap();
                    if let ExecutionEvent::Filled(f) = &ev {
                        let reduce = sh.order(&f.client_id).is_some_and(|o| o.request.reduce_only);
                        let signed = if f.side == Side::Buy { f.qty.raw() } else { -f.qty.raw() };
                        if reduce {
                            proptest::prop_assert!(pos != 0 && (pos + signed).signum() != -pos.signum());
                            proptest::prop_assert!((pos + signed).abs() < pos.abs());
                        }
                        pos += signed;
                    }
                    let res = sh.apply(&JournalRecord::Event(ev.clone()));
                    proptest::prop_assert!(res.is_ok(), "{ev:?}: {res:?}");
                }
                proptest::prop_assert_eq!(Qty(pos), r.ex.portfolio().qty("ETHUSDT"));
                for o in r.ex.open_orders() {
                    proptest::prop_assert!(o.filled_qty < o.request.qty);
                }
            }
        }
    }

    #[test]
    fn restart_restores_positions_and_their_exits() {
        use crate::trading::journal::{JournalRecord, JournalState};
        let mut r = Rig::new(0);
        r.book(0);
        let mut state = JournalState::new("t");
        let id = r.submit(Side::Buy, OrderKind::Market, "1", Some("95"));
        let req = r.ex.open_orders();
        assert!(req.is_empty());
        state
            .apply(&JournalRecord::Intent {
                request: OrderRequest {
                    client_id: id.clone(),
                    symbol: "ETHUSDT".into(),
                    side: Side::Buy,
                    kind: OrderKind::Market,
                    qty: q("1"),
                    reduce_only: false,
                    time_in_force: TimeInForce::Gtc,
                },
                protection: Protection {
                    stop_loss: Some(p("95")),
                    ..Protection::default()
                },
                time_ms: 0,
            })
            .unwrap();
        for ev in r.ex.poll_events() {
            state.apply(&JournalRecord::Event(ev)).unwrap();
        }
        // A fresh executor after a restart.
        let mut fresh = Rig::new(0);
        fresh.ex.restore_from_journal(&state);
        assert_eq!(fresh.ex.portfolio().qty("ETHUSDT"), q("1"));
        fresh.book(1);
        fresh.trade(2, "96", "1", Side::Sell);
        assert!(fresh.fills().is_empty());
        fresh.trade(3, "95", "1", Side::Sell);
        let f = fresh.fills();
        assert_eq!((f.len(), f[0].side), (1, Side::Sell));
        assert!(fresh.ex.portfolio().qty("ETHUSDT").is_zero());
    }
}
