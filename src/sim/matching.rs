//! The simulator's matching engine for account orders: pure, exact, no I/O.
//!
//! Account orders trade against the simulated market without changing it (the market-data
//! stream stays a function of the seed): a taker order walks a snapshot of the opposite side
//! of the simulated book, a resting limit order fills when the simulated tape trades through
//! its price (at its price only when the tape's taker hits that side, in price-time priority
//! among account orders, limited by the printed quantity), and stop orders trigger on the last
//! traded price. Balances are locked on placement and settled per fill with a fee charged in
//! the asset received, as Binance spot does by default.
//!
//! Asset amounts (balances, quote totals, commissions) are [`Qty`] values: exact 8-decimal
//! amounts of whichever asset they name.
//!
//! An OCO ([`Engine::place_oco`]) is two orders of one list sharing one lock: the quantity is
//! held once, and when one leg triggers or fills (even partly) the other expires, as on
//! Binance; cancelling either leg cancels both.

use std::collections::{BTreeMap, HashMap};

use crate::market::types::{Level, Price, Qty, SCALE, Side, notional};

/// Free and locked amount of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balance {
    /// Available for new orders.
    pub free: Qty,
    /// Held by open orders.
    pub locked: Qty,
}

/// One simulated account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Account {
    /// Display name.
    pub name: String,
    /// Balances by asset.
    pub balances: BTreeMap<String, Balance>,
}

/// Binance spot order types the simulator executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderType {
    /// Limit order.
    Limit,
    /// Market order.
    Market,
    /// Market order once the last price reaches the stop (against the position).
    StopLoss,
    /// Limit order once the last price reaches the stop.
    StopLossLimit,
    /// Market order once the last price reaches the stop (in favour of the position).
    TakeProfit,
    /// Limit order once the last price reaches the stop (in favour).
    TakeProfitLimit,
    /// Post-only limit order.
    LimitMaker,
}

impl OrderType {
    /// Binance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Limit => "LIMIT",
            Self::Market => "MARKET",
            Self::StopLoss => "STOP_LOSS",
            Self::StopLossLimit => "STOP_LOSS_LIMIT",
            Self::TakeProfit => "TAKE_PROFIT",
            Self::TakeProfitLimit => "TAKE_PROFIT_LIMIT",
            Self::LimitMaker => "LIMIT_MAKER",
        }
    }

    /// Parses Binance's name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "LIMIT" => Self::Limit,
            "MARKET" => Self::Market,
            "STOP_LOSS" => Self::StopLoss,
            "STOP_LOSS_LIMIT" => Self::StopLossLimit,
            "TAKE_PROFIT" => Self::TakeProfit,
            "TAKE_PROFIT_LIMIT" => Self::TakeProfitLimit,
            "LIMIT_MAKER" => Self::LimitMaker,
            _ => return None,
        })
    }

    fn has_price(self) -> bool {
        matches!(
            self,
            Self::Limit | Self::StopLossLimit | Self::TakeProfitLimit | Self::LimitMaker
        )
    }

    fn has_stop(self) -> bool {
        matches!(
            self,
            Self::StopLoss | Self::StopLossLimit | Self::TakeProfit | Self::TakeProfitLimit
        )
    }

    fn needs_tif(self) -> bool {
        matches!(
            self,
            Self::Limit | Self::StopLossLimit | Self::TakeProfitLimit
        )
    }
}

/// Time in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeInForce {
    /// Good till canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

impl TimeInForce {
    /// Binance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gtc => "GTC",
            Self::Ioc => "IOC",
            Self::Fok => "FOK",
        }
    }

    /// Parses Binance's name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GTC" => Self::Gtc,
            "IOC" => Self::Ioc,
            "FOK" => Self::Fok,
            _ => return None,
        })
    }
}

/// Order status (Binance's enum, the subset the simulator produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Accepted, nothing filled.
    New,
    /// Partly filled, still working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled by the account.
    Canceled,
    /// Ended by the engine (IOC/FOK/market remainder, no liquidity).
    Expired,
}

impl OrderStatus {
    /// Binance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::PartiallyFilled => "PARTIALLY_FILLED",
            Self::Filled => "FILLED",
            Self::Canceled => "CANCELED",
            Self::Expired => "EXPIRED",
        }
    }

    /// True while the order can still trade.
    pub fn is_open(self) -> bool {
        matches!(self, Self::New | Self::PartiallyFilled)
    }
}

/// Execution type of an `executionReport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecType {
    /// Order accepted.
    New,
    /// A fill.
    Trade,
    /// Canceled by the account.
    Canceled,
    /// Ended by the engine.
    Expired,
}

impl ExecType {
    /// Binance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Trade => "TRADE",
            Self::Canceled => "CANCELED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// Trading rules of one simulated symbol (what `exchangeInfo` publishes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketRules {
    /// Symbol.
    pub symbol: String,
    /// Base asset.
    pub base: String,
    /// Quote asset.
    pub quote: String,
    /// Price tick (also the minimum price).
    pub tick: Price,
    /// Maximum price.
    pub max_price: Price,
    /// Quantity step (also the minimum quantity).
    pub step: Qty,
    /// Maximum quantity.
    pub max_qty: Qty,
    /// Minimum notional in quote.
    pub min_notional: Qty,
}

/// An order as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Symbol index.
    pub sym: usize,
    /// Side.
    pub side: Side,
    /// Type.
    pub kind: OrderType,
    /// Time in force (limit types).
    pub tif: Option<TimeInForce>,
    /// Base quantity.
    pub qty: Qty,
    /// Limit price (limit types).
    pub price: Option<Price>,
    /// Stop price (stop types).
    pub stop: Option<Price>,
    /// Client order id.
    pub client_id: String,
}

/// An order in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Exchange order id.
    pub id: u64,
    /// Owning account index.
    pub account: usize,
    /// Symbol index.
    pub sym: usize,
    /// Client order id.
    pub client_id: String,
    /// Side.
    pub side: Side,
    /// Type.
    pub kind: OrderType,
    /// Time in force (GTC for types without one, as Binance reports).
    pub tif: TimeInForce,
    /// Quantity.
    pub qty: Qty,
    /// Limit price (zero for market types).
    pub price: Price,
    /// Stop price (zero for non-stop types).
    pub stop: Price,
    /// Filled quantity.
    pub executed: Qty,
    /// Filled quote amount.
    pub cum_quote: Qty,
    /// Status.
    pub status: OrderStatus,
    /// Creation time, ms.
    pub time_ms: i64,
    /// Last change, ms.
    pub update_ms: i64,
    /// False for a stop order that has not triggered yet.
    pub working: bool,
    /// Amount still locked for it (quote for buys, base for sells); the two legs of an OCO
    /// both show the list's one lock, and the balance holds it once.
    pub locked: Qty,
    /// Order list (OCO) it belongs to.
    pub list_id: Option<u64>,
    seq: u64,
}

impl Order {
    fn remaining(&self) -> Qty {
        self.qty - self.executed
    }
}

/// One execution of an account order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// Trade id (per engine).
    pub trade_id: u64,
    /// Order id.
    pub order_id: u64,
    /// Account index.
    pub account: usize,
    /// Symbol index.
    pub sym: usize,
    /// Side of the order.
    pub side: Side,
    /// Execution price.
    pub price: Price,
    /// Executed base quantity.
    pub qty: Qty,
    /// Quote amount.
    pub quote: Qty,
    /// Fee charged.
    pub commission: Qty,
    /// Asset of the fee (the asset received).
    pub commission_asset: String,
    /// True when the order was resting (maker).
    pub maker: bool,
    /// Time, ms.
    pub time_ms: i64,
}

/// Something an account should hear about on its user-data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// An order changed (`executionReport`).
    Execution {
        /// Order after the change.
        order: Order,
        /// What happened.
        exec: ExecType,
        /// The fill, for `Trade`.
        fill: Option<Fill>,
    },
    /// An order list changed (`listStatus`).
    List {
        /// The list after the change.
        list: OrderList,
        /// Client ids of its legs, above first.
        legs: [String; 2],
    },
    /// Balances changed (`outboundAccountPosition`, changed assets only).
    Balances {
        /// Account index.
        account: usize,
        /// Changed assets with their new balances.
        assets: Vec<(String, Balance)>,
        /// Time, ms.
        time_ms: i64,
    },
}

/// Why an order request was refused (Binance code and message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// A filter failed (-1013).
    #[error("Filter failure: {0}")]
    Filter(&'static str),
    /// A required parameter is missing (-1102).
    #[error("Mandatory parameter '{0}' was not sent, was empty/null, or malformed.")]
    Mandatory(&'static str),
    /// A parameter that this order type does not take (-1106).
    #[error("Parameter '{0}' sent when not required.")]
    NotRequired(&'static str),
    /// The engine refused the order (-2010).
    #[error("{0}")]
    Rejected(&'static str),
    /// Unknown order on query (-2013).
    #[error("Order does not exist.")]
    NoSuchOrder,
    /// Unknown or closed order on cancel (-2011).
    #[error("Unknown order sent.")]
    CancelUnknown,
}

impl Reject {
    /// Binance error code.
    pub fn code(&self) -> i64 {
        match self {
            Self::Filter(_) => -1013,
            Self::Mandatory(_) => -1102,
            Self::NotRequired(_) => -1106,
            Self::Rejected(_) => -2010,
            Self::NoSuchOrder => -2013,
            Self::CancelUnknown => -2011,
        }
    }
}

/// How an order is named in a query or cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// By exchange id.
    Id(u64),
    /// By client id (the latest order with it).
    Client(String),
}

/// One leg of an OCO as submitted (`above*` / `below*` parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcoLeg {
    /// Type.
    pub kind: OrderType,
    /// Limit price (limit types).
    pub price: Option<Price>,
    /// Stop price (stop types).
    pub stop: Option<Price>,
    /// Time in force (`*_LIMIT` types).
    pub tif: Option<TimeInForce>,
    /// Client order id of the leg.
    pub client_id: String,
}

/// An OCO as submitted (`POST /api/v3/orderList/oco`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOco {
    /// Symbol index.
    pub sym: usize,
    /// Side of both legs.
    pub side: Side,
    /// Quantity of each leg (held once).
    pub qty: Qty,
    /// The leg priced above the market.
    pub above: OcoLeg,
    /// The leg priced below the market.
    pub below: OcoLeg,
    /// Client id of the list.
    pub list_client_id: String,
}

/// Binance's `listOrderStatus` of an order list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStatus {
    /// Both legs working.
    Executing,
    /// One leg executed or both were cancelled: nothing contingent is left.
    AllDone,
}

impl ListStatus {
    /// `listOrderStatus` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executing => "EXECUTING",
            Self::AllDone => "ALL_DONE",
        }
    }

    /// `listStatusType` text.
    pub fn type_str(self) -> &'static str {
        match self {
            Self::Executing => "EXEC_STARTED",
            Self::AllDone => "ALL_DONE",
        }
    }
}

/// An order list (OCO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderList {
    /// List id.
    pub id: u64,
    /// Owning account.
    pub account: usize,
    /// Symbol index.
    pub sym: usize,
    /// Client id of the list.
    pub client_id: String,
    /// Order ids of the legs, above first.
    pub orders: [u64; 2],
    /// Status.
    pub status: ListStatus,
    /// Last change, ms.
    pub update_ms: i64,
}

/// Which of an account's fills `Engine::fills` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillQuery {
    /// Only this order's.
    pub order_id: Option<u64>,
    /// From this trade id on (oldest first).
    pub from_id: Option<u64>,
    /// Executed at or after, ms.
    pub start_ms: Option<i64>,
    /// Executed at or before, ms.
    pub end_ms: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// Best-first levels of both sides of the simulated book.
#[derive(Debug, Clone, Copy)]
pub struct BookView<'a> {
    /// Bids, best (highest) first.
    pub bids: &'a [Level],
    /// Asks, best (lowest) first.
    pub asks: &'a [Level],
}

/// Every account, order and fill of the simulated exchange.
#[derive(Debug, Clone)]
pub struct Engine {
    markets: Vec<MarketRules>,
    accounts: Vec<Account>,
    orders: BTreeMap<u64, Order>,
    lists: BTreeMap<u64, OrderList>,
    by_client: HashMap<(usize, String), u64>,
    fills: Vec<Fill>,
    open_count: Vec<usize>,
    last_price: Vec<Option<Price>>,
    maker_bps: i64,
    taker_bps: i64,
    next_order_id: u64,
    next_list_id: u64,
    next_trade_id: u64,
    seq: u64,
}

const INSUFFICIENT: &str = "Account has insufficient balance for requested action.";

fn ceil_notional(price: Price, qty: Qty) -> Qty {
    let n = price.raw() as i128 * qty.raw() as i128;
    let s = SCALE as i128;
    Qty(((n + s - 1) / s).min(i64::MAX as i128) as i64)
}

fn quote_of(price: Price, qty: Qty) -> Qty {
    Qty(notional(price, qty).min(i64::MAX as i128) as i64)
}

impl Engine {
    /// An engine for these markets and accounts; fees in basis points.
    pub fn new(
        markets: Vec<MarketRules>,
        accounts: Vec<Account>,
        maker_bps: u32,
        taker_bps: u32,
    ) -> Self {
        let n = markets.len();
        Self {
            markets,
            accounts,
            orders: BTreeMap::new(),
            lists: BTreeMap::new(),
            by_client: HashMap::new(),
            fills: Vec::new(),
            open_count: vec![0; n],
            last_price: vec![None; n],
            maker_bps: maker_bps as i64,
            taker_bps: taker_bps as i64,
            next_order_id: 1,
            next_list_id: 1,
            next_trade_id: 1,
            seq: 0,
        }
    }

    /// The symbols' rules.
    pub fn markets(&self) -> &[MarketRules] {
        &self.markets
    }

    /// An account.
    pub fn account(&self, account: usize) -> Option<&Account> {
        self.accounts.get(account)
    }

    /// Maker and taker fee in basis points.
    pub fn fees_bps(&self) -> (i64, i64) {
        (self.maker_bps, self.taker_bps)
    }

    /// Last traded price of a symbol seen by the engine.
    pub fn last_price(&self, sym: usize) -> Option<Price> {
        self.last_price.get(sym).copied().flatten()
    }

    /// Sets the last price (the simulator seeds it from the market at start).
    pub fn set_last_price(&mut self, sym: usize, price: Price) {
        if let Some(p) = self.last_price.get_mut(sym) {
            *p = Some(price);
        }
    }

    /// Looks up an order of an account.
    pub fn order(&self, account: usize, sym: usize, r: &OrderRef) -> Option<&Order> {
        let id = match r {
            OrderRef::Id(id) => *id,
            OrderRef::Client(c) => *self.by_client.get(&(account, c.clone()))?,
        };
        self.orders
            .get(&id)
            .filter(|o| o.account == account && o.sym == sym)
    }

    /// How many orders an account ever placed with this client id (a retry must not add one).
    pub fn orders_with_client_id(&self, account: usize, client_id: &str) -> usize {
        self.orders
            .values()
            .filter(|o| o.account == account && o.client_id == client_id)
            .count()
    }

    /// Client ids of every order an account placed, oldest first.
    pub fn client_ids(&self, account: usize) -> Vec<String> {
        self.orders
            .values()
            .filter(|o| o.account == account)
            .map(|o| o.client_id.clone())
            .collect()
    }

    /// True when any account has an open order on the symbol.
    pub fn has_open_orders(&self, sym: usize) -> bool {
        self.open_count.get(sym).is_some_and(|&n| n > 0)
    }

    /// Open orders of an account, optionally of one symbol, oldest first.
    pub fn open_orders(&self, account: usize, sym: Option<usize>) -> Vec<&Order> {
        self.orders
            .values()
            .filter(|o| {
                o.account == account && o.status.is_open() && sym.is_none_or(|s| s == o.sym)
            })
            .collect()
    }

    /// An account's fills of a symbol, oldest first: the latest `limit`, or the first `limit`
    /// from `from_id` or `start_ms` on (as `GET /api/v3/myTrades` pages).
    pub fn fills(&self, account: usize, sym: usize, q: &FillQuery) -> Vec<&Fill> {
        let mut v: Vec<&Fill> = self
            .fills
            .iter()
            .filter(|f| {
                f.account == account
                    && f.sym == sym
                    && q.order_id.is_none_or(|o| o == f.order_id)
                    && q.from_id.is_none_or(|t| f.trade_id >= t)
                    && q.start_ms.is_none_or(|t| f.time_ms >= t)
                    && q.end_ms.is_none_or(|t| f.time_ms <= t)
            })
            .collect();
        if q.from_id.is_none() && q.start_ms.is_none() && v.len() > q.limit {
            v.drain(..v.len() - q.limit);
        }
        v.truncate(q.limit);
        v
    }

    /// An order list of an account.
    pub fn list(&self, account: usize, id: u64) -> Option<&OrderList> {
        self.lists.get(&id).filter(|l| l.account == account)
    }

    fn check_filters(&self, req: &NewOrder, ref_price: Option<Price>) -> Result<(), Reject> {
        let m = &self.markets[req.sym];
        let price_ok = |p: Price| p >= m.tick && p <= m.max_price && p.raw() % m.tick.raw() == 0;
        if let Some(p) = req.price
            && !price_ok(p)
        {
            return Err(Reject::Filter("PRICE_FILTER"));
        }
        if let Some(p) = req.stop
            && !price_ok(p)
        {
            return Err(Reject::Filter("PRICE_FILTER"));
        }
        if req.qty < m.step || req.qty > m.max_qty || req.qty.raw() % m.step.raw() != 0 {
            return Err(Reject::Filter("LOT_SIZE"));
        }
        let p = req.price.or(req.stop).or(ref_price);
        if let Some(p) = p
            && quote_of(p, req.qty) < m.min_notional
        {
            return Err(Reject::Filter("NOTIONAL"));
        }
        Ok(())
    }

    /// Places an order; the fills it made at once and the events for its account's stream.
    pub fn place(
        &mut self,
        account: usize,
        req: NewOrder,
        book: BookView<'_>,
        now_ms: i64,
    ) -> Result<(Order, Vec<EngineEvent>), Reject> {
        if account >= self.accounts.len() || req.sym >= self.markets.len() {
            return Err(Reject::Rejected("Unknown account or symbol."));
        }
        let k = req.kind;
        check_params(
            k,
            req.price,
            req.stop,
            req.tif,
            ["price", "stopPrice", "timeInForce"],
        )?;
        let opposite = match req.side {
            Side::Buy => book.asks,
            Side::Sell => book.bids,
        };
        let ref_price = opposite
            .first()
            .map(|l| l.price)
            .or(self.last_price[req.sym]);
        self.check_filters(&req, ref_price)?;
        if let Some(open) = self.by_client.get(&(account, req.client_id.clone()))
            && self.orders.get(open).is_some_and(|o| o.status.is_open())
        {
            return Err(Reject::Rejected("Duplicate order sent."));
        }
        if k.has_stop() {
            let last = self.last_price[req.sym].ok_or(Reject::Rejected("Market is closed."))?;
            if triggered(k, req.side, req.stop.unwrap_or_default(), last) {
                return Err(Reject::Rejected("Order would trigger immediately."));
            }
        }
        if k == OrderType::LimitMaker
            && let (Some(p), Some(best)) = (req.price, opposite.first())
            && crosses(req.side, p, best.price)
        {
            return Err(Reject::Rejected("Order would immediately match and take."));
        }
        let m = &self.markets[req.sym];
        let (lock_asset, lock) = match req.side {
            Side::Sell => (m.base.clone(), req.qty),
            Side::Buy => {
                let amount = match (req.price, req.stop) {
                    (Some(p), _) => ceil_notional(p, req.qty),
                    (None, Some(s)) => ceil_notional(s, req.qty),
                    (None, None) => walk_cost(Side::Buy, opposite, req.qty, None).0,
                };
                (m.quote.clone(), amount)
            }
        };
        let bal = self.accounts[account]
            .balances
            .entry(lock_asset.clone())
            .or_default();
        if bal.free < lock {
            return Err(Reject::Rejected(INSUFFICIENT));
        }
        bal.free -= lock;
        bal.locked += lock;
        self.seq += 1;
        let order = Order {
            id: self.next_order_id,
            account,
            sym: req.sym,
            client_id: req.client_id.clone(),
            side: req.side,
            kind: k,
            tif: req.tif.unwrap_or(TimeInForce::Gtc),
            qty: req.qty,
            price: req.price.unwrap_or_default(),
            stop: req.stop.unwrap_or_default(),
            executed: Qty::ZERO,
            cum_quote: Qty::ZERO,
            status: OrderStatus::New,
            time_ms: now_ms,
            update_ms: now_ms,
            working: !k.has_stop(),
            locked: lock,
            list_id: None,
            seq: self.seq,
        };
        self.next_order_id += 1;
        let id = order.id;
        self.by_client.insert((account, req.client_id), id);
        self.orders.insert(id, order.clone());
        self.open_count[req.sym] += 1;
        let mut events = vec![EngineEvent::Execution {
            order,
            exec: ExecType::New,
            fill: None,
        }];
        let mut touched = vec![lock_asset];
        if !k.has_stop() {
            self.take(id, book, now_ms, &mut events, &mut touched);
        }
        self.push_balances(account, touched, now_ms, &mut events);
        let order = self.orders[&id].clone();
        Ok((order, events))
    }

    /// Cancels an open order.
    pub fn cancel(
        &mut self,
        account: usize,
        sym: usize,
        r: &OrderRef,
        now_ms: i64,
    ) -> Result<(Order, Vec<EngineEvent>), Reject> {
        let id = match self.order(account, sym, r) {
            Some(o) if o.status.is_open() => o.id,
            _ => return Err(Reject::CancelUnknown),
        };
        let mut events = Vec::new();
        let mut touched = Vec::new();
        self.finish(id, OrderStatus::Canceled, now_ms, &mut events, &mut touched);
        // Cancelling one leg of an order list cancels the list (the lock went with this leg).
        if let Some(other) = self.open_sibling(id) {
            if let Some(o) = self.orders.get_mut(&other) {
                o.locked = Qty::ZERO;
            }
            self.finish(
                other,
                OrderStatus::Canceled,
                now_ms,
                &mut events,
                &mut touched,
            );
        }
        self.close_list(id, now_ms, &mut events);
        self.push_balances(account, touched, now_ms, &mut events);
        Ok((self.orders[&id].clone(), events))
    }

    /// Places an OCO: two orders of one list holding the quantity once. Above the last price
    /// goes the take-profit of a sell (LIMIT_MAKER, TAKE_PROFIT, TAKE_PROFIT_LIMIT) or the stop
    /// of a buy (STOP_LOSS, STOP_LOSS_LIMIT); below, the other one.
    pub fn place_oco(
        &mut self,
        account: usize,
        req: NewOco,
        book: BookView<'_>,
        now_ms: i64,
    ) -> Result<(OrderList, [Order; 2], Vec<EngineEvent>), Reject> {
        if account >= self.accounts.len() || req.sym >= self.markets.len() {
            return Err(Reject::Rejected("Unknown account or symbol."));
        }
        let profit = |k| {
            matches!(
                k,
                OrderType::LimitMaker | OrderType::TakeProfit | OrderType::TakeProfitLimit
            )
        };
        let loss = |k| matches!(k, OrderType::StopLoss | OrderType::StopLossLimit);
        let (a, b) = (&req.above, &req.below);
        let combination = match req.side {
            Side::Sell => profit(a.kind) && loss(b.kind),
            Side::Buy => loss(a.kind) && profit(b.kind),
        };
        if !combination {
            return Err(Reject::Rejected("Unsupported order combination."));
        }
        check_params(
            a.kind,
            a.price,
            a.stop,
            a.tif,
            ["abovePrice", "aboveStopPrice", "aboveTimeInForce"],
        )?;
        check_params(
            b.kind,
            b.price,
            b.stop,
            b.tif,
            ["belowPrice", "belowStopPrice", "belowTimeInForce"],
        )?;
        let leg = |l: &OcoLeg| NewOrder {
            sym: req.sym,
            side: req.side,
            kind: l.kind,
            tif: l.tif,
            qty: req.qty,
            price: l.price,
            stop: l.stop,
            client_id: l.client_id.clone(),
        };
        let legs = [leg(a), leg(b)];
        let opposite = match req.side {
            Side::Buy => book.asks,
            Side::Sell => book.bids,
        };
        for l in &legs {
            self.check_filters(l, None)?;
        }
        let open_id = |c: &str| {
            self.by_client
                .get(&(account, c.to_string()))
                .and_then(|id| self.orders.get(id))
                .is_some_and(|o| o.status.is_open())
        };
        if a.client_id == b.client_id || open_id(&a.client_id) || open_id(&b.client_id) {
            return Err(Reject::Rejected("Duplicate order sent."));
        }
        let last = self.last_price[req.sym].ok_or(Reject::Rejected("Market is closed."))?;
        // The leg's trigger, or its limit for a LIMIT_MAKER.
        let reference = |l: &OcoLeg| l.stop.or(l.price).unwrap_or_default();
        if !(reference(a) > last && reference(b) < last) {
            return Err(Reject::Rejected(
                "The relationship of the prices for the orders is not correct.",
            ));
        }
        for l in [a, b] {
            if l.kind == OrderType::LimitMaker
                && let (Some(p), Some(best)) = (l.price, opposite.first())
                && crosses(req.side, p, best.price)
            {
                return Err(Reject::Rejected("Order would immediately match and take."));
            }
        }
        let m = &self.markets[req.sym];
        let (lock_asset, lock) = match req.side {
            Side::Sell => (m.base.clone(), req.qty),
            Side::Buy => (
                m.quote.clone(),
                legs.iter()
                    .map(|l| ceil_notional(l.price.or(l.stop).unwrap_or_default(), req.qty))
                    .max()
                    .unwrap_or_default(),
            ),
        };
        let bal = self.accounts[account]
            .balances
            .entry(lock_asset.clone())
            .or_default();
        if bal.free < lock {
            return Err(Reject::Rejected(INSUFFICIENT));
        }
        bal.free -= lock;
        bal.locked += lock;
        let list_id = self.next_list_id;
        self.next_list_id += 1;
        let mut events = Vec::new();
        let mut ids = [0u64; 2];
        for (i, l) in legs.into_iter().enumerate() {
            self.seq += 1;
            let o = Order {
                id: self.next_order_id,
                account,
                sym: req.sym,
                client_id: l.client_id.clone(),
                side: req.side,
                kind: l.kind,
                tif: l.tif.unwrap_or(TimeInForce::Gtc),
                qty: req.qty,
                price: l.price.unwrap_or_default(),
                stop: l.stop.unwrap_or_default(),
                executed: Qty::ZERO,
                cum_quote: Qty::ZERO,
                status: OrderStatus::New,
                time_ms: now_ms,
                update_ms: now_ms,
                working: !l.kind.has_stop(),
                locked: lock,
                list_id: Some(list_id),
                seq: self.seq,
            };
            self.next_order_id += 1;
            ids[i] = o.id;
            self.by_client.insert((account, l.client_id), o.id);
            self.orders.insert(o.id, o.clone());
            self.open_count[req.sym] += 1;
            events.push(EngineEvent::Execution {
                order: o,
                exec: ExecType::New,
                fill: None,
            });
        }
        let list = OrderList {
            id: list_id,
            account,
            sym: req.sym,
            client_id: req.list_client_id,
            orders: ids,
            status: ListStatus::Executing,
            update_ms: now_ms,
        };
        self.lists.insert(list_id, list.clone());
        events.push(EngineEvent::List {
            list: list.clone(),
            legs: [a.client_id.clone(), b.client_id.clone()],
        });
        self.push_balances(account, vec![lock_asset], now_ms, &mut events);
        let orders = [self.orders[&ids[0]].clone(), self.orders[&ids[1]].clone()];
        Ok((list, orders, events))
    }

    /// The other leg of `id`'s order list while that leg is still open.
    fn open_sibling(&self, id: u64) -> Option<u64> {
        let list = self.lists.get(&self.orders.get(&id)?.list_id?)?;
        let other = if list.orders[0] == id {
            list.orders[1]
        } else {
            list.orders[0]
        };
        self.orders
            .get(&other)
            .filter(|o| o.status.is_open())
            .map(|o| o.id)
    }

    /// Marks `id`'s order list done (once) and reports it.
    fn close_list(&mut self, id: u64, now_ms: i64, events: &mut Vec<EngineEvent>) {
        let Some(lid) = self.orders.get(&id).and_then(|o| o.list_id) else {
            return;
        };
        let Some(list) = self.lists.get_mut(&lid) else {
            return;
        };
        if list.status == ListStatus::AllDone {
            return;
        }
        list.status = ListStatus::AllDone;
        list.update_ms = now_ms;
        let list = list.clone();
        let legs = list.orders.map(|o| {
            self.orders
                .get(&o)
                .map_or(String::new(), |o| o.client_id.clone())
        });
        events.push(EngineEvent::List { list, legs });
    }

    /// `id` triggered or traded: the other leg of its OCO expires, leaving the shared lock to
    /// `id`.
    fn expire_sibling(
        &mut self,
        id: u64,
        now_ms: i64,
        events: &mut Vec<EngineEvent>,
        touched: &mut Vec<String>,
    ) {
        if let Some(other) = self.open_sibling(id) {
            if let Some(o) = self.orders.get_mut(&other) {
                o.locked = Qty::ZERO;
            }
            self.finish(other, OrderStatus::Expired, now_ms, events, touched);
        }
        self.close_list(id, now_ms, events);
    }

    /// The simulated tape printed a trade: trigger stops, fill resting orders it trades through.
    pub fn on_trade(
        &mut self,
        sym: usize,
        price: Price,
        qty: Qty,
        taker: Side,
        book: BookView<'_>,
        now_ms: i64,
    ) -> Vec<EngineEvent> {
        let mut events = Vec::new();
        if sym >= self.markets.len() {
            return events;
        }
        self.last_price[sym] = Some(price);
        let mut touched: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let stops: Vec<u64> = self
            .orders
            .values()
            .filter(|o| {
                o.sym == sym
                    && !o.working
                    && o.status.is_open()
                    && triggered(o.kind, o.side, o.stop, price)
            })
            .map(|o| o.id)
            .collect();
        for id in stops {
            if !self.orders[&id].status.is_open() {
                // The other leg of its OCO triggered first.
                continue;
            }
            let account = self.orders[&id].account;
            let t = touched.entry(account).or_default();
            self.expire_sibling(id, now_ms, &mut events, t);
            let (kind, side, qty, locked) = {
                let o = &self.orders[&id];
                (o.kind, o.side, o.qty, o.locked)
            };
            if side == Side::Buy && matches!(kind, OrderType::StopLoss | OrderType::TakeProfit) {
                // The lock was taken at the stop price; a market buy needs the walk's cost.
                let cost = walk_cost(Side::Buy, book.asks, qty, None).0;
                let quote = self.markets[sym].quote.clone();
                let free = self.accounts[account]
                    .balances
                    .get(&quote)
                    .map_or(Qty::ZERO, |b| b.free);
                if free + locked < cost {
                    self.finish(id, OrderStatus::Expired, now_ms, &mut events, t);
                    continue;
                }
                let bal = self.accounts[account]
                    .balances
                    .entry(quote.clone())
                    .or_default();
                bal.free = bal.free + locked - cost;
                bal.locked = bal.locked - locked + cost;
                if let Some(o) = self.orders.get_mut(&id) {
                    o.locked = cost;
                }
                t.push(quote);
            }
            if let Some(o) = self.orders.get_mut(&id) {
                o.working = true;
                self.seq += 1;
                o.seq = self.seq;
            }
            self.take(id, book, now_ms, &mut events, t);
        }
        // Resting orders the print trades through or hits at their price, price-time priority.
        let mut resting: Vec<&Order> = self
            .orders
            .values()
            .filter(|o| {
                o.sym == sym
                    && o.working
                    && o.status.is_open()
                    && o.kind.has_price()
                    && match o.side {
                        Side::Buy => o.price > price || (o.price == price && taker == Side::Sell),
                        Side::Sell => o.price < price || (o.price == price && taker == Side::Buy),
                    }
            })
            .collect();
        resting.sort_by(|a, b| match a.side {
            Side::Buy => b.price.cmp(&a.price).then(a.seq.cmp(&b.seq)),
            Side::Sell => a.price.cmp(&b.price).then(a.seq.cmp(&b.seq)),
        });
        let plan: Vec<(u64, Price, Qty, bool)> = resting
            .iter()
            .map(|o| (o.id, o.price, o.remaining(), o.price == price))
            .collect();
        let mut at_price_left = qty;
        for (id, p, remaining, at_price) in plan {
            let q = if at_price {
                let q = remaining.min(at_price_left);
                at_price_left -= q;
                q
            } else {
                remaining
            };
            if q.raw() <= 0 || !self.orders[&id].status.is_open() {
                continue;
            }
            let account = self.orders[&id].account;
            let t = touched.entry(account).or_default();
            self.fill(id, p, q, true, now_ms, &mut events, t);
        }
        for (account, assets) in touched {
            self.push_balances(account, assets, now_ms, &mut events);
        }
        events
    }

    /// Taker phase of a working order: walk the book up to its limit, then rest or expire.
    fn take(
        &mut self,
        id: u64,
        book: BookView<'_>,
        now_ms: i64,
        events: &mut Vec<EngineEvent>,
        touched: &mut Vec<String>,
    ) {
        let o = self.orders[&id].clone();
        let limit = o.kind.has_price().then_some(o.price);
        let opposite = match o.side {
            Side::Buy => book.asks,
            Side::Sell => book.bids,
        };
        let (_, available) = walk_cost(o.side, opposite, o.remaining(), limit);
        if o.tif == TimeInForce::Fok && available < o.remaining() {
            self.finish(id, OrderStatus::Expired, now_ms, events, touched);
            return;
        }
        let mut left = o.remaining();
        for l in opposite {
            if left.raw() <= 0 || limit.is_some_and(|p| !crosses(o.side, p, l.price)) {
                break;
            }
            let q = left.min(l.qty);
            self.fill(id, l.price, q, false, now_ms, events, touched);
            left -= q;
        }
        let rests = o.kind.has_price() && o.tif == TimeInForce::Gtc;
        if left.raw() > 0 && !rests {
            self.finish(id, OrderStatus::Expired, now_ms, events, touched);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        id: u64,
        price: Price,
        qty: Qty,
        maker: bool,
        now_ms: i64,
        events: &mut Vec<EngineEvent>,
        touched: &mut Vec<String>,
    ) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        let m = &self.markets[o.sym];
        let quote = quote_of(price, qty);
        let bps = if maker {
            self.maker_bps
        } else {
            self.taker_bps
        };
        let fee_of = |amount: Qty| Qty((amount.raw() as i128 * bps as i128 / 10_000) as i64);
        let acct = &mut self.accounts[o.account];
        let (paid_asset, paid, got_asset, got) = match o.side {
            Side::Buy => (m.quote.clone(), quote, m.base.clone(), qty),
            Side::Sell => (m.base.clone(), qty, m.quote.clone(), quote),
        };
        let commission = fee_of(got);
        let pb = acct.balances.entry(paid_asset.clone()).or_default();
        pb.locked -= paid;
        o.locked -= paid;
        let gb = acct.balances.entry(got_asset.clone()).or_default();
        gb.free += got - commission;
        o.executed += qty;
        o.cum_quote += quote;
        o.update_ms = now_ms;
        o.status = if o.executed >= o.qty {
            OrderStatus::Filled
        } else {
            OrderStatus::PartiallyFilled
        };
        let f = Fill {
            trade_id: self.next_trade_id,
            order_id: id,
            account: o.account,
            sym: o.sym,
            side: o.side,
            price,
            qty,
            quote,
            commission,
            commission_asset: got_asset.clone(),
            maker,
            time_ms: now_ms,
        };
        self.next_trade_id += 1;
        touched.push(paid_asset);
        touched.push(got_asset);
        self.fills.push(f.clone());
        let done = o.status == OrderStatus::Filled;
        let snapshot = o.clone();
        if done {
            self.open_count[snapshot.sym] -= 1;
        }
        if done {
            // A buy that filled below its limit leaves part of the lock unused.
            self.release(id);
        }
        let snapshot = if done {
            self.orders[&id].clone()
        } else {
            snapshot
        };
        events.push(EngineEvent::Execution {
            order: snapshot,
            exec: ExecType::Trade,
            fill: Some(f),
        });
        // A leg of an OCO that trades, even partly, ends the other leg.
        self.expire_sibling(id, now_ms, events, touched);
    }

    fn release(&mut self, id: u64) {
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        let m = &self.markets[o.sym];
        let asset = match o.side {
            Side::Buy => &m.quote,
            Side::Sell => &m.base,
        };
        let b = self.accounts[o.account]
            .balances
            .entry(asset.clone())
            .or_default();
        b.locked -= o.locked;
        b.free += o.locked;
        o.locked = Qty::ZERO;
    }

    fn finish(
        &mut self,
        id: u64,
        status: OrderStatus,
        now_ms: i64,
        events: &mut Vec<EngineEvent>,
        touched: &mut Vec<String>,
    ) {
        self.release(id);
        let Some(o) = self.orders.get_mut(&id) else {
            return;
        };
        o.status = status;
        o.update_ms = now_ms;
        self.open_count[o.sym] -= 1;
        let m = &self.markets[o.sym];
        touched.push(match o.side {
            Side::Buy => m.quote.clone(),
            Side::Sell => m.base.clone(),
        });
        events.push(EngineEvent::Execution {
            order: o.clone(),
            exec: if status == OrderStatus::Canceled {
                ExecType::Canceled
            } else {
                ExecType::Expired
            },
            fill: None,
        });
    }

    fn push_balances(
        &self,
        account: usize,
        mut assets: Vec<String>,
        now_ms: i64,
        events: &mut Vec<EngineEvent>,
    ) {
        assets.sort();
        assets.dedup();
        if assets.is_empty() {
            return;
        }
        let acct = &self.accounts[account];
        events.push(EngineEvent::Balances {
            account,
            assets: assets
                .into_iter()
                .map(|a| {
                    let b = acct.balances.get(&a).copied().unwrap_or_default();
                    (a, b)
                })
                .collect(),
            time_ms: now_ms,
        });
    }
}

/// Refuses a missing or superfluous price, stop price or time in force (`names` as the
/// request spells them).
fn check_params(
    k: OrderType,
    price: Option<Price>,
    stop: Option<Price>,
    tif: Option<TimeInForce>,
    names: [&'static str; 3],
) -> Result<(), Reject> {
    let [price_name, stop_name, tif_name] = names;
    if k.has_price() && price.is_none() {
        return Err(Reject::Mandatory(price_name));
    }
    if !k.has_price() && price.is_some() {
        return Err(Reject::NotRequired(price_name));
    }
    if k.has_stop() && stop.is_none() {
        return Err(Reject::Mandatory(stop_name));
    }
    if !k.has_stop() && stop.is_some() {
        return Err(Reject::NotRequired(stop_name));
    }
    if k.needs_tif() && tif.is_none() {
        return Err(Reject::Mandatory(tif_name));
    }
    if !k.needs_tif() && tif.is_some() {
        return Err(Reject::NotRequired(tif_name));
    }
    Ok(())
}

/// True when a buy at `limit` would trade with a level at `level` (or a sell symmetrically).
fn crosses(side: Side, limit: Price, level: Price) -> bool {
    match side {
        Side::Buy => level <= limit,
        Side::Sell => level >= limit,
    }
}

/// Whether a stop of this type and side fires at `last`.
fn triggered(kind: OrderType, side: Side, stop: Price, last: Price) -> bool {
    let rising = matches!(
        (kind, side),
        (OrderType::StopLoss | OrderType::StopLossLimit, Side::Buy)
            | (
                OrderType::TakeProfit | OrderType::TakeProfitLimit,
                Side::Sell
            )
    );
    if rising { last >= stop } else { last <= stop }
}

/// Quote cost and base quantity available walking `levels` for `qty`, up to `limit`.
fn walk_cost(side: Side, levels: &[Level], qty: Qty, limit: Option<Price>) -> (Qty, Qty) {
    let mut left = qty;
    let mut cost = Qty::ZERO;
    for l in levels {
        if left.raw() <= 0 || limit.is_some_and(|p| !crosses(side, p, l.price)) {
            break;
        }
        let q = left.min(l.qty);
        cost += quote_of(l.price, q);
        left -= q;
    }
    (cost, qty - left)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn engine() -> Engine {
        let m = MarketRules {
            symbol: "ETHUSDT".into(),
            base: "ETH".into(),
            quote: "USDT".into(),
            tick: p("0.01"),
            max_price: p("1000000"),
            step: q("0.0001"),
            max_qty: q("9000"),
            min_notional: q("5"),
        };
        let mut a = Account {
            name: "default".into(),
            ..Account::default()
        };
        a.balances.insert(
            "USDT".into(),
            Balance {
                free: q("10000"),
                locked: Qty::ZERO,
            },
        );
        a.balances.insert(
            "ETH".into(),
            Balance {
                free: q("2"),
                locked: Qty::ZERO,
            },
        );
        let mut e = Engine::new(vec![m], vec![a], 10, 10);
        e.set_last_price(0, p("3000"));
        e
    }

    fn order(side: Side, kind: OrderType, qty: &str, price: Option<&str>, cid: &str) -> NewOrder {
        NewOrder {
            sym: 0,
            side,
            kind,
            tif: kind.needs_tif().then_some(TimeInForce::Gtc),
            qty: q(qty),
            price: price.map(p),
            stop: None,
            client_id: cid.into(),
        }
    }

    fn bal(e: &Engine, a: &str) -> Balance {
        e.account(0).unwrap().balances[a]
    }

    #[test]
    fn market_buy_walks_the_book_and_pays_fees_in_base() {
        let mut e = engine();
        let asks = [lv("3000.01", "0.5"), lv("3000.02", "1")];
        let book = BookView {
            bids: &[],
            asks: &asks,
        };
        let (o, ev) = e
            .place(
                0,
                order(Side::Buy, OrderType::Market, "1", None, "a"),
                book,
                1,
            )
            .unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.cum_quote, q("1500.005") + q("1500.01"));
        let fills: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Execution { fill: Some(f), .. } => Some(f.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fills.len(), 2);
        assert_eq!(fills[1].price, p("3000.02"));
        assert_eq!(bal(&e, "ETH").free, q("2") + q("1") - q("0.001"));
        assert_eq!(bal(&e, "USDT").free, q("10000") - q("3000.015"));
        assert_eq!(bal(&e, "USDT").locked, Qty::ZERO);
    }

    #[test]
    fn limit_rests_then_fills_when_the_tape_trades_through() {
        let mut e = engine();
        let asks = [lv("3000.01", "5")];
        let bids = [lv("2999.99", "5")];
        let book = BookView {
            bids: &bids,
            asks: &asks,
        };
        let (o, _) = e
            .place(
                0,
                order(Side::Buy, OrderType::Limit, "1", Some("2999"), "l1"),
                book,
                1,
            )
            .unwrap();
        assert_eq!(o.status, OrderStatus::New);
        assert_eq!(bal(&e, "USDT").locked, q("2999"));
        // A print above the order does nothing; at the price by a buyer taker neither.
        assert!(
            e.on_trade(0, p("2999.5"), q("1"), Side::Sell, book, 2)
                .is_empty()
        );
        assert!(
            e.on_trade(0, p("2999"), q("1"), Side::Buy, book, 3)
                .is_empty()
        );
        // At the price by a seller: fills up to the printed quantity.
        e.on_trade(0, p("2999"), q("0.4"), Side::Sell, book, 4);
        let o = e.order(0, 0, &OrderRef::Client("l1".into())).unwrap();
        assert_eq!(o.status, OrderStatus::PartiallyFilled);
        assert_eq!(o.executed, q("0.4"));
        let id = o.id;
        // Through the price: the rest fills at the order's limit.
        e.on_trade(0, p("2998"), q("0.01"), Side::Sell, book, 5);
        let o = e.order(0, 0, &OrderRef::Id(id)).unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.cum_quote, q("2999"));
        assert_eq!(bal(&e, "USDT").locked, Qty::ZERO);
        assert_eq!(bal(&e, "USDT").free, q("7001"));
        assert_eq!(bal(&e, "ETH").free, q("2") + q("1") - q("0.001"));
    }

    #[test]
    fn price_time_priority_among_account_orders() {
        let mut e = engine();
        let book = BookView {
            bids: &[],
            asks: &[],
        };
        for cid in ["first", "second"] {
            e.place(
                0,
                order(Side::Sell, OrderType::Limit, "0.5", Some("3100"), cid),
                book,
                1,
            )
            .unwrap();
        }
        e.place(
            0,
            order(Side::Sell, OrderType::Limit, "0.5", Some("3099"), "better"),
            book,
            2,
        )
        .unwrap();
        assert!(e.has_open_orders(0));
        e.on_trade(0, p("3100"), q("0.7"), Side::Buy, book, 3);
        let get = |c: &str| e.order(0, 0, &OrderRef::Client(c.into())).unwrap().executed;
        assert_eq!(get("better"), q("0.5"));
        assert_eq!(get("first"), q("0.5"));
        assert_eq!(get("second"), q("0.2"));
    }

    #[test]
    fn stops_trigger_on_last_price() {
        let mut e = engine();
        let bids = [lv("2900", "3")];
        let book = BookView {
            bids: &bids,
            asks: &[],
        };
        let mut sl = order(Side::Sell, OrderType::StopLoss, "1", None, "sl");
        sl.stop = Some(p("2950"));
        let (o, _) = e.place(0, sl.clone(), book, 1).unwrap();
        assert!(!o.working);
        let mut bad = sl.clone();
        bad.client_id = "bad".into();
        bad.stop = Some(p("3050"));
        assert_eq!(
            e.place(0, bad, book, 1).unwrap_err(),
            Reject::Rejected("Order would trigger immediately.")
        );
        e.on_trade(0, p("2960"), q("1"), Side::Sell, book, 2);
        assert_eq!(
            e.order(0, 0, &OrderRef::Id(o.id)).unwrap().status,
            OrderStatus::New
        );
        e.on_trade(0, p("2950"), q("1"), Side::Sell, book, 3);
        let o = e.order(0, 0, &OrderRef::Id(o.id)).unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.cum_quote, q("2900"));
        assert_eq!(bal(&e, "ETH").free, q("1"));
        assert_eq!(bal(&e, "USDT").free, q("10000") + q("2900") - q("2.9"));
    }

    #[test]
    fn filters_duplicates_and_balance_are_enforced() {
        let mut e = engine();
        let asks = [lv("3000.01", "5")];
        let book = BookView {
            bids: &[],
            asks: &asks,
        };
        let r = |o| e.clone().place(0, o, book, 1).unwrap_err();
        assert_eq!(
            r(order(
                Side::Buy,
                OrderType::Limit,
                "1",
                Some("2999.001"),
                "x"
            )),
            Reject::Filter("PRICE_FILTER")
        );
        assert_eq!(
            r(order(
                Side::Buy,
                OrderType::Limit,
                "1.00001",
                Some("2999"),
                "x"
            )),
            Reject::Filter("LOT_SIZE")
        );
        assert_eq!(
            r(order(
                Side::Buy,
                OrderType::Limit,
                "0.001",
                Some("2999"),
                "x"
            )),
            Reject::Filter("NOTIONAL")
        );
        assert_eq!(
            r(order(Side::Buy, OrderType::Limit, "5", Some("2999"), "x")),
            Reject::Rejected(INSUFFICIENT)
        );
        assert_eq!(
            r(order(Side::Buy, OrderType::Limit, "1", None, "x")),
            Reject::Mandatory("price")
        );
        e.place(
            0,
            order(Side::Buy, OrderType::Limit, "1", Some("2999"), "dup"),
            book,
            1,
        )
        .unwrap();
        let again = e
            .place(
                0,
                order(Side::Buy, OrderType::Limit, "1", Some("2998"), "dup"),
                book,
                2,
            )
            .unwrap_err();
        assert_eq!(again, Reject::Rejected("Duplicate order sent."));
        assert_eq!(again.code(), -2010);
        e.cancel(0, 0, &OrderRef::Client("dup".into()), 3).unwrap();
        assert_eq!(bal(&e, "USDT").locked, Qty::ZERO);
        // Once the first order is closed the id may be reused.
        e.place(
            0,
            order(Side::Buy, OrderType::Limit, "1", Some("2998"), "dup"),
            book,
            4,
        )
        .unwrap();
        assert_eq!(
            e.cancel(0, 0, &OrderRef::Id(999), 5).unwrap_err(),
            Reject::CancelUnknown
        );
    }

    fn leg(kind: OrderType, price: Option<&str>, stop: Option<&str>, cid: &str) -> OcoLeg {
        OcoLeg {
            kind,
            price: price.map(p),
            stop: stop.map(p),
            tif: kind.needs_tif().then_some(TimeInForce::Gtc),
            client_id: cid.into(),
        }
    }

    fn sell_oco(qty: &str, tp: &str, sl: &str) -> NewOco {
        NewOco {
            sym: 0,
            side: Side::Sell,
            qty: q(qty),
            above: leg(OrderType::LimitMaker, Some(tp), None, "tp"),
            below: leg(OrderType::StopLoss, None, Some(sl), "sl"),
            list_client_id: "list".into(),
        }
    }

    fn status(e: &Engine, cid: &str) -> OrderStatus {
        e.order(0, 0, &OrderRef::Client(cid.into())).unwrap().status
    }

    #[test]
    fn a_stop_and_a_take_profit_on_the_same_quantity_need_an_oco() {
        let mut e = engine();
        let bids = [lv("2999.99", "5")];
        let asks = [lv("3000.01", "5")];
        let book = BookView {
            bids: &bids,
            asks: &asks,
        };
        let mut sl = order(Side::Sell, OrderType::StopLoss, "2", None, "sl");
        sl.stop = Some(p("2900"));
        e.place(0, sl, book, 1).unwrap();
        assert_eq!(bal(&e, "ETH").locked, q("2"));
        // The stop holds the whole balance: a take-profit on the same quantity is refused.
        let tp = order(Side::Sell, OrderType::LimitMaker, "2", Some("3100"), "tp");
        assert_eq!(
            e.place(0, tp, book, 2).unwrap_err(),
            Reject::Rejected(INSUFFICIENT)
        );
        e.cancel(0, 0, &OrderRef::Client("sl".into()), 3).unwrap();
        // As one OCO the quantity is held once.
        let (list, legs, ev) = e
            .place_oco(0, sell_oco("2", "3100", "2900"), book, 4)
            .unwrap();
        assert_eq!(list.status, ListStatus::Executing);
        assert_eq!(legs.map(|o| o.list_id), [Some(list.id); 2]);
        assert_eq!(
            bal(&e, "ETH"),
            Balance {
                free: Qty::ZERO,
                locked: q("2")
            }
        );
        assert!(ev.iter().any(|e| matches!(e, EngineEvent::List { .. })));
        // Prices on the wrong side of the last price are refused.
        let mut bad = sell_oco("0.1", "2950", "2900");
        bad.above.client_id = "tp2".into();
        bad.below.client_id = "sl2".into();
        let mut fresh = engine();
        assert_eq!(
            fresh.place_oco(0, bad, book, 5).unwrap_err(),
            Reject::Rejected("The relationship of the prices for the orders is not correct.")
        );
    }

    #[test]
    fn oco_take_profit_fill_expires_the_stop_and_settles_once() {
        let mut e = engine();
        let book = BookView {
            bids: &[],
            asks: &[],
        };
        e.place_oco(0, sell_oco("1", "3100", "2900"), book, 1)
            .unwrap();
        // A buyer trades through the take-profit: it fills (partly), the stop expires.
        let ev = e.on_trade(0, p("3100"), q("0.4"), Side::Buy, book, 2);
        assert_eq!(status(&e, "tp"), OrderStatus::PartiallyFilled);
        assert_eq!(status(&e, "sl"), OrderStatus::Expired);
        assert!(ev.iter().any(|x| matches!(
            x,
            EngineEvent::List { list, .. } if list.status == ListStatus::AllDone
        )));
        // The lock stays with the take-profit's remainder, held once.
        assert_eq!(bal(&e, "ETH").locked, q("0.6"));
        assert_eq!(bal(&e, "ETH").free, q("1"));
        // Falling through the old stop does nothing now.
        e.on_trade(0, p("2800"), q("1"), Side::Sell, book, 3);
        assert_eq!(bal(&e, "ETH").locked, q("0.6"));
        e.on_trade(0, p("3101"), q("1"), Side::Buy, book, 4);
        assert_eq!(status(&e, "tp"), OrderStatus::Filled);
        assert_eq!(
            bal(&e, "ETH"),
            Balance {
                free: q("1"),
                locked: Qty::ZERO
            }
        );
        assert_eq!(
            bal(&e, "USDT").free,
            q("10000") + q("3100") - q("3.1"),
            "quote received less its fee"
        );
    }

    #[test]
    fn oco_stop_trigger_expires_the_take_profit_and_cancel_ends_the_list() {
        let mut e = engine();
        let bids = [lv("2890", "5")];
        let book = BookView {
            bids: &bids,
            asks: &[],
        };
        e.place_oco(0, sell_oco("1", "3100", "2900"), book, 1)
            .unwrap();
        e.on_trade(0, p("2900"), q("0.1"), Side::Sell, book, 2);
        assert_eq!(status(&e, "sl"), OrderStatus::Filled);
        assert_eq!(status(&e, "tp"), OrderStatus::Expired);
        assert_eq!(
            bal(&e, "ETH"),
            Balance {
                free: q("1"),
                locked: Qty::ZERO
            }
        );
        // Cancelling one leg of a working OCO cancels both and frees the lock once.
        let mut again = sell_oco("1", "3100", "2800");
        again.above.client_id = "tp-b".into();
        again.below.client_id = "sl-b".into();
        e.set_last_price(0, p("3000"));
        e.place_oco(0, again, book, 3).unwrap();
        assert_eq!(bal(&e, "ETH").locked, q("1"));
        e.cancel(0, 0, &OrderRef::Client("sl-b".into()), 4).unwrap();
        assert_eq!(status(&e, "tp-b"), OrderStatus::Canceled);
        assert_eq!(
            bal(&e, "ETH"),
            Balance {
                free: q("1"),
                locked: Qty::ZERO
            }
        );
        assert!(!e.has_open_orders(0));
    }

    #[test]
    fn ioc_and_fok_never_rest() {
        let mut e = engine();
        let asks = [lv("3000.01", "0.5")];
        let book = BookView {
            bids: &[],
            asks: &asks,
        };
        let mut ioc = order(Side::Buy, OrderType::Limit, "1", Some("3001"), "ioc");
        ioc.tif = Some(TimeInForce::Ioc);
        let (o, _) = e.place(0, ioc, book, 1).unwrap();
        assert_eq!((o.status, o.executed), (OrderStatus::Expired, q("0.5")));
        let mut fok = order(Side::Buy, OrderType::Limit, "1", Some("3001"), "fok");
        fok.tif = Some(TimeInForce::Fok);
        let (o, _) = e.place(0, fok, book, 2).unwrap();
        assert_eq!((o.status, o.executed), (OrderStatus::Expired, Qty::ZERO));
        assert_eq!(bal(&e, "USDT").locked, Qty::ZERO);
        assert!(e.open_orders(0, None).is_empty());
        assert!(!e.has_open_orders(0));
    }
}
