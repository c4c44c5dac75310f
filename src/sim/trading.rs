//! The simulator's Binance spot trading endpoints: signed order entry, account queries, listen
//! keys and the user-data websocket, over the [`matching`](super::matching) engine.
//!
//! Signed requests are checked like Binance checks them: the account comes from the
//! `X-MBX-APIKEY` header (or MEXC's `X-MEXC-APIKEY`, whose requests are read in MEXC's spelling:
//! IOC and FOK as order types, no time in force), the signature is HMAC-SHA256 over the exact query string followed by
//! the exact body (the `signature` pair removed), and the `timestamp` must fall in
//! `[serverTime - recvWindow, serverTime + 1000)`. Tests can skew the server clock and inject
//! order-entry and cancel faults (a lost response, a 5xx before or after the engine acted).
//!
//! In strict mode (`[sim.trading] strict`) an order that closed on placement answers -2013 to a
//! lookup by client id for `query_delay_ms` (by order id it is found: its trades name it so),
//! trades stay out of `myTrades` for `trades_delay_ms`, and user-data events
//! are delivered `report_delay_ms` after they happen: a filled market order can be invisible
//! while its client id is already free again, as on Binance.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, interval_at};

use super::accounts::SimTradingConfig;
use super::config::SymbolSpec;
use super::matching::{
    BookView, Engine, EngineEvent, ExecType, Fill, FillQuery, MarketRules, NewOco, NewOrder,
    OcoLeg, Order, OrderList, OrderRef, OrderType, Reject, TimeInForce,
};
use super::model::{MarketEvent, MarketModel};
use super::protocol::{px, qt};
use super::server::{ApiError, ConnCommand, Shared, ok, query_pairs, wall_ms};
use crate::exec::signing::{Secret, sign, signatures_match};
use crate::market::types::{Level, Price, Qty, Side};

/// Largest price the PRICE_FILTER allows (as published in exchangeInfo).
pub const MAX_PRICE_UNITS: i64 = 1_000_000;
/// Largest quantity the LOT_SIZE filter allows (as published in exchangeInfo).
pub const MAX_QTY_UNITS: i64 = 9000;
/// Minimum notional (MIN_NOTIONAL / NOTIONAL, as published in exchangeInfo).
pub const MIN_NOTIONAL_UNITS: i64 = 5;
/// Largest `recvWindow` Binance accepts, ms.
pub const MAX_RECV_WINDOW_MS: i64 = 60_000;
/// Book levels per side a taker order may walk.
const WALK_LEVELS: usize = 500;

/// A fault to inject into the next `POST /api/v3/order` (or, queued with
/// [`Trading::inject_cancel_fault`], the next `DELETE /api/v3/order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFault {
    /// Answer 503 without placing (cancelling) the order.
    UnavailableBeforeEngine,
    /// Place (cancel) the order, then answer 503 with -1007 (execution status unknown).
    UnknownAfterEngine,
    /// Place (cancel) the order, then hold the response this long (the client times out).
    SlowResponse(Duration),
}

#[derive(Debug, Clone)]
struct ListenKey {
    account: usize,
    expires_ms: i64,
}

/// Trading state of the simulator; it outlives server restarts of one handle.
pub struct Trading {
    cfg: SimTradingConfig,
    secrets: Vec<Secret>,
    engine: Mutex<Engine>,
    listen_keys: Mutex<HashMap<String, ListenKey>>,
    user_tx: Vec<broadcast::Sender<Arc<str>>>,
    clock_offset_ms: AtomicI64,
    faults: Mutex<VecDeque<OrderFault>>,
    cancel_faults: Mutex<VecDeque<OrderFault>>,
    /// Strict mode: orders that closed on placement, invisible to queries until this time.
    hidden_until: Mutex<HashMap<u64, i64>>,
    /// Strict mode: user-data events waiting out the report delay, in order.
    delayed: Option<mpsc::UnboundedSender<(Instant, usize, Arc<str>)>>,
    key_counter: AtomicU64,
    exec_counter: AtomicU64,
}

impl std::fmt::Debug for Trading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trading")
            .field("accounts", &self.cfg.accounts.len())
            .finish_non_exhaustive()
    }
}

/// The rules a simulated symbol publishes in exchangeInfo.
pub fn market_rules(spec: &SymbolSpec) -> MarketRules {
    MarketRules {
        symbol: spec.symbol.clone(),
        base: spec.base_asset.clone(),
        quote: spec.quote_asset.clone(),
        tick: spec.tick,
        max_price: Price::from_units(MAX_PRICE_UNITS),
        step: spec.step,
        max_qty: Qty::from_units(MAX_QTY_UNITS),
        min_notional: Qty::from_units(MIN_NOTIONAL_UNITS),
    }
}

impl Trading {
    /// Trading over these symbols and the configured accounts.
    pub fn new(cfg: &SimTradingConfig, specs: &[SymbolSpec]) -> anyhow::Result<Self> {
        let accounts = cfg.build_accounts()?;
        let n = accounts.len();
        let engine = Engine::new(
            specs.iter().map(market_rules).collect(),
            accounts,
            cfg.maker_fee_bps,
            cfg.taker_fee_bps,
        );
        let user_tx: Vec<broadcast::Sender<Arc<str>>> =
            (0..n).map(|_| broadcast::channel(4096).0).collect();
        let delay = Duration::from_millis(cfg.report_delay());
        // One forwarder for all accounts: the delay is the same for every event, so sending in
        // arrival order keeps the stream's order.
        let delayed = (!delay.is_zero())
            .then(tokio::runtime::Handle::try_current)
            .and_then(Result::ok)
            .map(|rt| {
                let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, usize, Arc<str>)>();
                let out = user_tx.clone();
                rt.spawn(async move {
                    while let Some((due, account, text)) = rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        if let Some(tx) = out.get(account) {
                            let _ = tx.send(text);
                        }
                    }
                });
                tx
            });
        if !delay.is_zero() && delayed.is_none() {
            anyhow::bail!("sim.trading.report_delay_ms needs a tokio runtime to deliver reports");
        }
        Ok(Self {
            cfg: cfg.clone(),
            secrets: cfg
                .accounts
                .iter()
                .map(|a| Secret::new(a.secret.clone()))
                .collect(),
            engine: Mutex::new(engine),
            listen_keys: Mutex::new(HashMap::new()),
            user_tx,
            clock_offset_ms: AtomicI64::new(0),
            faults: Mutex::new(VecDeque::new()),
            cancel_faults: Mutex::new(VecDeque::new()),
            hidden_until: Mutex::new(HashMap::new()),
            delayed,
            key_counter: AtomicU64::new(0),
            exec_counter: AtomicU64::new(0),
        })
    }

    /// Server time as the trading endpoints see it (wall clock plus the injected skew).
    pub fn server_time(&self) -> i64 {
        wall_ms() + self.clock_offset_ms.load(Ordering::SeqCst)
    }

    /// Skews the server clock by `ms` (fault injection for clock-skew handling).
    pub fn set_clock_offset_ms(&self, ms: i64) {
        self.clock_offset_ms.store(ms, Ordering::SeqCst);
    }

    /// Queues a fault for the next order placement.
    pub fn inject_order_fault(&self, f: OrderFault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
    }

    /// Queues a fault for the next order cancellation.
    pub fn inject_cancel_fault(&self, f: OrderFault) {
        self.cancel_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(f);
    }

    fn hide_until(&self, order_id: u64, until_ms: i64) {
        self.hidden_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(order_id, until_ms);
    }

    fn hidden(&self, order_id: u64, now_ms: i64) -> bool {
        self.hidden_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&order_id)
            .is_some_and(|&t| now_ms < t)
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listen_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, ListenKey>> {
        self.listen_keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of open orders of an account (for tests and the console).
    pub fn open_order_count(&self, account: usize) -> usize {
        self.engine().open_orders(account, None).len()
    }

    /// How many orders an account ever placed with this client id (test helper: retries
    /// must never add a second one).
    pub fn orders_with_client_id(&self, account: usize, client_id: &str) -> usize {
        self.engine().orders_with_client_id(account, client_id)
    }

    /// Client ids of every order an account placed, oldest first (test helper).
    pub fn client_ids(&self, account: usize) -> Vec<String> {
        self.engine().client_ids(account)
    }

    /// A receiver of the account's user-data events.
    pub fn subscribe(&self, account: usize) -> Option<broadcast::Receiver<Arc<str>>> {
        self.user_tx.get(account).map(broadcast::Sender::subscribe)
    }

    /// The account owning a live listen key.
    pub fn listen_key_account(&self, key: &str) -> Option<usize> {
        let now = wall_ms();
        self.listen_keys()
            .get(key)
            .filter(|k| k.expires_ms > now)
            .map(|k| k.account)
    }

    fn ttl_ms(&self) -> i64 {
        self.cfg.listen_key_ttl_min.max(1) as i64 * 60_000
    }

    /// Feeds the market's prints to the engine (called by the market task under the model lock).
    /// Book snapshots are taken only for symbols with open orders: the market task must stay
    /// cheap, its websocket clients are waiting on it.
    pub fn on_market(&self, model: &MarketModel, events: &[MarketEvent]) {
        let mut engine = self.engine();
        let mut out = Vec::new();
        let mut books: HashMap<usize, (Vec<Level>, Vec<Level>)> = HashMap::new();
        for e in events {
            let MarketEvent::Trade { sym, trade } = e else {
                continue;
            };
            if !engine.has_open_orders(*sym) {
                engine.set_last_price(*sym, trade.price);
                continue;
            }
            let (bids, asks) = books
                .entry(*sym)
                .or_insert_with(|| book_levels(model, *sym));
            out.extend(engine.on_trade(
                *sym,
                trade.price,
                trade.qty,
                trade.taker_side,
                BookView { bids, asks },
                trade.time_ms,
            ));
        }
        if !out.is_empty() {
            self.publish(&engine, out);
        }
    }

    fn publish(&self, engine: &Engine, events: Vec<EngineEvent>) {
        let due = Instant::now() + Duration::from_millis(self.cfg.report_delay());
        for e in events {
            let (account, text) = match &e {
                EngineEvent::Execution { order, exec, fill } => (
                    order.account,
                    self.execution_report(engine, order, *exec, fill.as_ref()),
                ),
                EngineEvent::List { list, legs } => {
                    (list.account, list_status(engine, list, legs).to_string())
                }
                EngineEvent::Balances {
                    account,
                    assets,
                    time_ms,
                } => (
                    *account,
                    json!({"e": "outboundAccountPosition", "E": time_ms, "u": time_ms,
                           "B": assets.iter().map(|(a, b)| json!({"a": a, "f": qt(b.free), "l": qt(b.locked)})).collect::<Vec<_>>()})
                    .to_string(),
                ),
            };
            match &self.delayed {
                Some(d) => {
                    let _ = d.send((due, account, Arc::from(text)));
                }
                None => {
                    if let Some(tx) = self.user_tx.get(account) {
                        let _ = tx.send(Arc::from(text));
                    }
                }
            }
        }
    }

    fn execution_report(
        &self,
        engine: &Engine,
        o: &Order,
        exec: ExecType,
        fill: Option<&Fill>,
    ) -> String {
        let m = &engine.markets()[o.sym];
        let canceled = exec == ExecType::Canceled;
        let (c, orig) = if canceled {
            (format!("sim-cxl-{}", o.id), o.client_id.clone())
        } else {
            (o.client_id.clone(), String::new())
        };
        let exec_id = self.exec_counter.fetch_add(1, Ordering::SeqCst) + 1;
        let time = fill.map_or(o.update_ms, |f| f.time_ms);
        json!({
            "e": "executionReport", "E": time, "s": m.symbol, "c": c,
            "S": side_str(o.side), "o": o.kind.as_str(), "f": o.tif.as_str(),
            "q": qt(o.qty), "p": px(o.price), "P": px(o.stop), "F": "0.00000000",
            "g": o.list_id.map_or(-1, |l| l as i64),
            "C": orig, "x": exec.as_str(), "X": o.status.as_str(), "r": "NONE", "i": o.id,
            "l": qt(fill.map_or(Qty::ZERO, |f| f.qty)), "z": qt(o.executed),
            "L": px(fill.map_or(Price::ZERO, |f| f.price)),
            "n": qt(fill.map_or(Qty::ZERO, |f| f.commission)),
            "N": fill.map(|f| f.commission_asset.clone()),
            "T": time, "t": fill.map_or(-1, |f| f.trade_id as i64), "I": exec_id,
            "w": o.working && o.status.is_open(), "m": fill.is_some_and(|f| f.maker), "M": false,
            "O": o.time_ms, "Z": qt(o.cum_quote), "Y": qt(fill.map_or(Qty::ZERO, |f| f.quote)),
            "Q": "0.00000000", "W": o.time_ms, "V": "NONE",
        })
        .to_string()
    }
}

/// A `listStatus` user-data event (and the list part of an order-list reply).
fn list_status(engine: &Engine, list: &OrderList, legs: &[String; 2]) -> Value {
    let symbol = &engine.markets()[list.sym].symbol;
    json!({
        "e": "listStatus", "E": list.update_ms, "s": symbol, "g": list.id, "c": "OCO",
        "l": list.status.type_str(), "L": list.status.as_str(), "r": "NONE",
        "C": list.client_id, "T": list.update_ms,
        "O": list.orders.iter().zip(legs).map(|(i, c)| json!({"s": symbol, "i": i, "c": c}))
            .collect::<Vec<_>>(),
    })
}

fn side_str(s: Side) -> &'static str {
    match s {
        Side::Buy => "BUY",
        Side::Sell => "SELL",
    }
}

fn book_levels(model: &MarketModel, sym: usize) -> (Vec<Level>, Vec<Level>) {
    let spec = &model.history().specs()[sym];
    let conv = |v: Vec<(i64, i64)>| -> Vec<Level> {
        v.into_iter()
            .map(|(p, q)| Level {
                price: spec.price(p),
                qty: spec.qty(q),
            })
            .collect()
    };
    (
        conv(model.book(sym).top(true, WALK_LEVELS)),
        conv(model.book(sym).top(false, WALK_LEVELS)),
    )
}

// ---------------------------------------------------------------------------------------------
// Request authentication

/// A signed request's parameters (query wins over body) and the authenticated account; as an
/// extractor it answers Binance's error JSON when authentication fails.
pub(crate) struct Signed {
    account: usize,
    params: HashMap<String, String>,
    dialect: Dialect,
}

/// Whose spelling of the spot v3 protocol a request uses. MEXC's spot v3 is Binance's with its
/// own key header and order types; speaking both lets the MEXC executor run against the
/// simulator too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Binance,
    Mexc,
}

impl Dialect {
    fn key_header(self) -> &'static str {
        match self {
            Dialect::Binance => "x-mbx-apikey",
            Dialect::Mexc => "x-mexc-apikey",
        }
    }
}

/// A request in MEXC's dialect carries MEXC's key header.
fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key(Dialect::Mexc.key_header()) {
        Dialect::Mexc
    } else {
        Dialect::Binance
    }
}

/// The raw query and body of a request, as a signature covers them. Binance reads no body on
/// GET, so neither do we.
async fn query_and_body(
    req: Request,
    s: &Arc<Shared>,
) -> Result<(HeaderMap, Option<String>, String), Response> {
    let headers = req.headers().clone();
    let query = req.uri().query().map(str::to_owned);
    let body = if req.method() == Method::GET {
        String::new()
    } else {
        String::from_request(req, s)
            .await
            .map_err(IntoResponse::into_response)?
    };
    Ok((headers, query, body))
}

impl FromRequest<Arc<Shared>> for Signed {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Arc<Shared>) -> Result<Self, Response> {
        let (headers, query, body) = query_and_body(req, s).await?;
        authenticate(&s.trading, &headers, query.as_deref(), &body)
            .map_err(IntoResponse::into_response)
    }
}

/// A listen-key request (`PUT`/`DELETE /api/v3/userDataStream`): the account of the API key
/// and the `listenKey` parameter.
pub(crate) struct ListenKeyRequest {
    account: usize,
    key: String,
}

impl FromRequest<Arc<Shared>> for ListenKeyRequest {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Arc<Shared>) -> Result<Self, Response> {
        let (headers, query, body) = query_and_body(req, s).await?;
        let parse = || {
            let account = api_key_account(&s.trading, &headers)?;
            let key = listen_key_param(query.as_deref(), &body)?;
            Ok::<_, ApiError>(Self { account, key })
        };
        parse().map_err(IntoResponse::into_response)
    }
}

fn rejected(code: i64, msg: &str) -> ApiError {
    ApiError::bad(code, msg)
}

fn unauthorized() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: -2015,
        msg: "Invalid API-key, IP, or permissions for action.".into(),
    }
}

fn api_key_account(t: &Trading, headers: &HeaderMap) -> Result<usize, ApiError> {
    let key = headers
        .get(dialect_of(headers).key_header())
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| rejected(-2014, "API-key format invalid."))?;
    t.cfg.account_of_key(key).ok_or_else(unauthorized)
}

/// Removes the `signature=` pair from a raw parameter string, keeping everything else verbatim.
fn split_signature(raw: &str) -> (String, Option<String>) {
    let mut rest = Vec::new();
    let mut sig = None;
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("signature=") {
            Some(s) => sig = Some(s.to_owned()),
            None => rest.push(pair),
        }
    }
    (rest.join("&"), sig)
}

fn authenticate(
    t: &Trading,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &str,
) -> Result<Signed, ApiError> {
    let account = api_key_account(t, headers)?;
    let (q, qsig) = split_signature(query.unwrap_or(""));
    let (b, bsig) = split_signature(body);
    let sig = qsig
        .or(bsig)
        .ok_or_else(|| ApiError::mandatory("signature"))?;
    let payload = format!("{q}{b}");
    if !signatures_match(&sign(&t.secrets[account], &payload), &sig) {
        return Err(rejected(-1022, "Signature for this request is not valid."));
    }
    let mut params = query_pairs(&b).ok_or_else(|| ApiError::illegal("body"))?;
    params.extend(query_pairs(&q).ok_or_else(|| ApiError::illegal("query"))?);
    let ts = params
        .get("timestamp")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| ApiError::mandatory("timestamp"))?;
    let window = match params.get("recvWindow") {
        None => 5000,
        Some(v) => {
            let w = v
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w > 0.0)
                .ok_or_else(|| ApiError::illegal("recvWindow"))?;
            if w > MAX_RECV_WINDOW_MS as f64 {
                return Err(rejected(-1131, "recvWindow must be less than 60000"));
            }
            w as i64
        }
    };
    let now = t.server_time();
    if ts >= now + 1000 {
        return Err(rejected(
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        ));
    }
    if now - ts > window {
        return Err(rejected(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ));
    }
    Ok(Signed {
        account,
        params,
        dialect: dialect_of(headers),
    })
}

fn unknown_listen_key() -> ApiError {
    rejected(-1125, "This listenKey does not exist.")
}

fn reject(r: Reject) -> ApiError {
    rejected(r.code(), &r.to_string())
}

fn sym_of(s: &Shared, p: &HashMap<String, String>) -> Result<usize, ApiError> {
    let name = p
        .get("symbol")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::mandatory("symbol"))?;
    s.symbol_index(name).ok_or_else(ApiError::symbol)
}

fn decimal<T>(
    p: &HashMap<String, String>,
    name: &'static str,
    parse: fn(&str) -> Result<T, crate::market::types::FixedParseError>,
) -> Result<Option<T>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).map_err(|_| ApiError::mandatory(name)),
    }
}

fn order_ref(p: &HashMap<String, String>) -> Result<OrderRef, ApiError> {
    if let Some(id) = p.get("orderId") {
        return id
            .parse::<u64>()
            .map(OrderRef::Id)
            .map_err(|_| ApiError::illegal("orderId"));
    }
    p.get("origClientOrderId")
        .filter(|v| !v.is_empty())
        .map(|c| OrderRef::Client(c.clone()))
        .ok_or_else(|| {
            rejected(
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        })
}

fn valid_client_id(c: &str) -> bool {
    (1..=36).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Binance's order JSON (RESULT shape, plus fields of `GET /api/v3/order`).
fn order_json(engine: &Engine, o: &Order) -> Value {
    let m = &engine.markets()[o.sym];
    json!({
        "symbol": m.symbol, "orderId": o.id, "orderListId": o.list_id.map_or(-1, |l| l as i64),
        "clientOrderId": o.client_id,
        "price": px(o.price), "origQty": qt(o.qty), "executedQty": qt(o.executed),
        "cummulativeQuoteQty": qt(o.cum_quote), "status": o.status.as_str(),
        "timeInForce": o.tif.as_str(), "type": o.kind.as_str(), "side": side_str(o.side),
        "stopPrice": px(o.stop), "icebergQty": "0.00000000", "time": o.time_ms,
        "updateTime": o.update_ms, "isWorking": o.working, "workingTime": o.time_ms,
        "origQuoteOrderQty": "0.00000000", "selfTradePreventionMode": "NONE",
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `GET /api/v3/time` (with the injected skew).
pub async fn time(State(s): State<Arc<Shared>>) -> Response {
    ok(json!({"serverTime": s.trading.server_time()}))
}

/// `POST /api/v3/order`.
pub(crate) async fn post_order(
    State(s): State<Arc<Shared>>,
    Signed {
        account,
        params,
        dialect,
    }: Signed,
) -> Result<Response, ApiError> {
    let t = &s.trading;
    let fault = t
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    if fault == Some(OrderFault::UnavailableBeforeEngine) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: -1001,
            msg: "Internal error; unable to process your request. Please try again.".into(),
        });
    }
    let sym = sym_of(&s, &params)?;
    let side = match params.get("side").map(String::as_str) {
        Some("BUY") => Side::Buy,
        Some("SELL") => Side::Sell,
        Some(_) => return Err(rejected(-1117, "Invalid side.")),
        None => return Err(ApiError::mandatory("side")),
    };
    let Some(v) = params.get("type").map(String::as_str) else {
        return Err(ApiError::mandatory("type"));
    };
    let invalid_type = || rejected(-1116, "Invalid orderType.");
    let (kind, tif) = match dialect {
        Dialect::Binance => {
            let kind = OrderType::parse(v).ok_or_else(invalid_type)?;
            let tif = match params.get("timeInForce") {
                None => None,
                Some(t) => Some(
                    TimeInForce::parse(t).ok_or_else(|| rejected(-1115, "Invalid timeInForce."))?,
                ),
            };
            (kind, tif)
        }
        // MEXC spells a limit order's time in force as its order type.
        Dialect::Mexc => {
            if params.contains_key("timeInForce") {
                return Err(rejected(
                    -1106,
                    "Parameter 'timeInForce' sent when not required.",
                ));
            }
            match v {
                "LIMIT" => (OrderType::Limit, Some(TimeInForce::Gtc)),
                "IMMEDIATE_OR_CANCEL" => (OrderType::Limit, Some(TimeInForce::Ioc)),
                "FILL_OR_KILL" => (OrderType::Limit, Some(TimeInForce::Fok)),
                "MARKET" => (OrderType::Market, None),
                "LIMIT_MAKER" => (OrderType::LimitMaker, None),
                _ => return Err(invalid_type()),
            }
        }
    };
    if params.contains_key("quoteOrderQty") {
        return Err(rejected(
            -1106,
            "Parameter 'quoteOrderQty' sent when not required (the simulator takes 'quantity').",
        ));
    }
    let qty =
        decimal(&params, "quantity", Qty::parse)?.ok_or_else(|| ApiError::mandatory("quantity"))?;
    let price = decimal(&params, "price", Price::parse)?;
    let stop = decimal(&params, "stopPrice", Price::parse)?;
    let client_id = match params.get("newClientOrderId") {
        Some(c) if valid_client_id(c) => c.clone(),
        Some(_) => return Err(ApiError::illegal("newClientOrderId")),
        None => format!(
            "sim-{:016x}",
            crate::sim::random::key(&[
                wall_ms() as u64,
                t.key_counter.fetch_add(1, Ordering::SeqCst)
            ])
        ),
    };
    let resp_type = params.get("newOrderRespType").cloned().unwrap_or_else(|| {
        if matches!(kind, OrderType::Market | OrderType::Limit) {
            "FULL".into()
        } else {
            "ACK".into()
        }
    });
    let (bids, asks, last) = {
        let m = s.model.lock().unwrap_or_else(|e| e.into_inner());
        let (b, a) = book_levels(&m, sym);
        let spec = &s.history.specs()[sym];
        (b, a, spec.price(m.last_price(sym)))
    };
    let now = t.server_time();
    let body = {
        let mut engine = t.engine();
        if engine.last_price(sym).is_none() {
            engine.set_last_price(sym, last);
        }
        let req = NewOrder {
            sym,
            side,
            kind,
            tif,
            qty,
            price,
            stop,
            client_id,
        };
        let (order, events) = engine
            .place(
                account,
                req,
                BookView {
                    bids: &bids,
                    asks: &asks,
                },
                now,
            )
            .map_err(reject)?;
        if !order.status.is_open() && t.cfg.query_delay() > 0 {
            // Never on the book: like Binance's, the record reaches the query path later.
            t.hide_until(order.id, now + t.cfg.query_delay());
        }
        let fills: Vec<Value> = events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::Execution { fill: Some(f), .. } => Some(json!({
                    "price": px(f.price), "qty": qt(f.qty), "commission": qt(f.commission),
                    "commissionAsset": f.commission_asset, "tradeId": f.trade_id})),
                _ => None,
            })
            .collect();
        t.publish(&engine, events);
        let mut v = order_json(&engine, &order);
        v["transactTime"] = json!(now);
        match resp_type.as_str() {
            "ACK" => json!({"symbol": v["symbol"], "orderId": order.id, "orderListId": -1,
                            "clientOrderId": order.client_id, "transactTime": now}),
            "RESULT" => v,
            _ => {
                v["fills"] = Value::Array(fills);
                v
            }
        }
    };
    match fault {
        Some(OrderFault::UnknownAfterEngine) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: -1007,
            msg: "Timeout waiting for response from backend server. Send status unknown; execution status unknown.".into(),
        }),
        Some(OrderFault::SlowResponse(d)) => {
            tokio::time::sleep(d).await;
            Ok(ok(body))
        }
        _ => Ok(ok(body)),
    }
}

/// A client id parameter, or a generated one when absent.
fn client_id_param(
    t: &Trading,
    p: &HashMap<String, String>,
    name: &'static str,
) -> Result<String, ApiError> {
    match p.get(name) {
        Some(c) if valid_client_id(c) => Ok(c.clone()),
        Some(_) => Err(ApiError::illegal(name)),
        None => Ok(format!(
            "sim-{:016x}",
            crate::sim::random::key(&[
                wall_ms() as u64,
                t.key_counter.fetch_add(1, Ordering::SeqCst)
            ])
        )),
    }
}

/// `POST /api/v3/orderList/oco`: the current OCO endpoint (`above*` / `below*` legs).
pub(crate) async fn post_oco(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let t = &s.trading;
    let sym = sym_of(&s, &params)?;
    let side = match params.get("side").map(String::as_str) {
        Some("BUY") => Side::Buy,
        Some("SELL") => Side::Sell,
        Some(_) => return Err(rejected(-1117, "Invalid side.")),
        None => return Err(ApiError::mandatory("side")),
    };
    for unsupported in [
        "aboveTrailingDelta",
        "belowTrailingDelta",
        "aboveIcebergQty",
        "belowIcebergQty",
        "abovePegPriceType",
        "belowPegPriceType",
    ] {
        if params.contains_key(unsupported) {
            return Err(rejected(
                -1106,
                &format!("Parameter '{unsupported}' sent when not required (not simulated)."),
            ));
        }
    }
    let qty =
        decimal(&params, "quantity", Qty::parse)?.ok_or_else(|| ApiError::mandatory("quantity"))?;
    let leg = |prefix: &'static str, names: [&'static str; 5]| -> Result<OcoLeg, ApiError> {
        let [type_name, price_name, stop_name, tif_name, cid_name] = names;
        let kind = params
            .get(type_name)
            .ok_or_else(|| ApiError::mandatory(type_name))
            .and_then(|v| {
                OrderType::parse(v)
                    .filter(|k| !matches!(k, OrderType::Limit | OrderType::Market))
                    .ok_or_else(|| rejected(-1116, &format!("Invalid {prefix}Type.")))
            })?;
        let tif = match params.get(tif_name) {
            None => None,
            Some(v) => {
                Some(TimeInForce::parse(v).ok_or_else(|| rejected(-1115, "Invalid timeInForce."))?)
            }
        };
        Ok(OcoLeg {
            kind,
            price: decimal(&params, price_name, Price::parse)?,
            stop: decimal(&params, stop_name, Price::parse)?,
            tif,
            client_id: client_id_param(t, &params, cid_name)?,
        })
    };
    let above = leg(
        "above",
        [
            "aboveType",
            "abovePrice",
            "aboveStopPrice",
            "aboveTimeInForce",
            "aboveClientOrderId",
        ],
    )?;
    let below = leg(
        "below",
        [
            "belowType",
            "belowPrice",
            "belowStopPrice",
            "belowTimeInForce",
            "belowClientOrderId",
        ],
    )?;
    let list_client_id = client_id_param(t, &params, "listClientOrderId")?;
    let (bids, asks, last) = {
        let m = s.model.lock().unwrap_or_else(|e| e.into_inner());
        let (b, a) = book_levels(&m, sym);
        let spec = &s.history.specs()[sym];
        (b, a, spec.price(m.last_price(sym)))
    };
    let now = t.server_time();
    let mut engine = t.engine();
    if engine.last_price(sym).is_none() {
        engine.set_last_price(sym, last);
    }
    let req = NewOco {
        sym,
        side,
        qty,
        above,
        below,
        list_client_id,
    };
    let (list, orders, events) = engine
        .place_oco(
            account,
            req,
            BookView {
                bids: &bids,
                asks: &asks,
            },
            now,
        )
        .map_err(reject)?;
    t.publish(&engine, events);
    let legs = [orders[0].client_id.clone(), orders[1].client_id.clone()];
    let status = list_status(&engine, &list, &legs);
    let symbol = engine.markets()[sym].symbol.clone();
    let reports: Vec<Value> = orders
        .iter()
        .map(|o| {
            let mut v = order_json(&engine, o);
            v["transactTime"] = json!(now);
            v
        })
        .collect();
    Ok(ok(json!({
        "orderListId": list.id, "contingencyType": "OCO",
        "listStatusType": status["l"], "listOrderStatus": status["L"],
        "listClientOrderId": list.client_id, "transactionTime": now, "symbol": symbol,
        "orders": status["O"].as_array().map(|o| o.iter().map(|l| json!({
            "symbol": l["s"], "orderId": l["i"], "clientOrderId": l["c"]})).collect::<Vec<_>>()),
        "orderReports": reports,
    })))
}

/// `GET /api/v3/order`.
pub(crate) async fn get_order(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let sym = sym_of(&s, &params)?;
    let r = order_ref(&params)?;
    let t = &s.trading;
    let now = t.server_time();
    let engine = t.engine();
    // Strict mode hides a just-closed order from lookups by client id only: that index is
    // what lags, while its trades name it by order id.
    let by_client = matches!(r, OrderRef::Client(_));
    let o = engine
        .order(account, sym, &r)
        .filter(|o| !(by_client && t.hidden(o.id, now)))
        .ok_or_else(|| reject(Reject::NoSuchOrder))?;
    Ok(ok(order_json(&engine, o)))
}

/// `DELETE /api/v3/order`.
pub(crate) async fn delete_order(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let t = &s.trading;
    let fault = t
        .cancel_faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    if fault == Some(OrderFault::UnavailableBeforeEngine) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: -1001,
            msg: "Internal error; unable to process your request. Please try again.".into(),
        });
    }
    let sym = sym_of(&s, &params)?;
    let r = order_ref(&params)?;
    let v = {
        let mut engine = t.engine();
        let (o, events) = engine
            .cancel(account, sym, &r, t.server_time())
            .map_err(reject)?;
        t.publish(&engine, events);
        let mut v = order_json(&engine, &o);
        v["origClientOrderId"] = json!(o.client_id);
        v["clientOrderId"] = json!(
            params
                .get("newClientOrderId")
                .cloned()
                .unwrap_or_else(|| format!("sim-cxl-{}", o.id))
        );
        v
    };
    match fault {
        Some(OrderFault::UnknownAfterEngine) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: -1007,
            msg: "Timeout waiting for response from backend server. Send status unknown; execution status unknown.".into(),
        }),
        Some(OrderFault::SlowResponse(d)) => {
            tokio::time::sleep(d).await;
            Ok(ok(v))
        }
        _ => Ok(ok(v)),
    }
}

/// `GET /api/v3/openOrders`.
pub(crate) async fn open_orders(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let sym = if params.contains_key("symbol") {
        Some(sym_of(&s, &params)?)
    } else {
        None
    };
    let engine = s.trading.engine();
    let v: Vec<Value> = engine
        .open_orders(account, sym)
        .into_iter()
        .map(|o| order_json(&engine, o))
        .collect();
    Ok(ok(Value::Array(v)))
}

/// `GET /api/v3/account`.
pub(crate) async fn account(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let omit_zero = params.get("omitZeroBalances").is_some_and(|v| v == "true");
    let engine = s.trading.engine();
    let (maker, taker) = engine.fees_bps();
    let rate = |bps: i64| qt(Qty(bps * 10_000));
    let a = engine.account(account).ok_or_else(unauthorized)?;
    let balances: Vec<Value> = a
        .balances
        .iter()
        .filter(|(_, b)| !omit_zero || b.free.raw() != 0 || b.locked.raw() != 0)
        .map(|(asset, b)| json!({"asset": asset, "free": qt(b.free), "locked": qt(b.locked)}))
        .collect();
    Ok(ok(json!({
        "makerCommission": maker, "takerCommission": taker, "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate(maker), "taker": rate(taker),
                            "buyer": "0.00000000", "seller": "0.00000000"},
        "canTrade": true, "canWithdraw": false, "canDeposit": false, "brokered": false,
        "requireSelfTradePrevention": false, "preventSor": false,
        "updateTime": s.trading.server_time(), "accountType": "SPOT",
        "balances": balances, "permissions": ["SPOT"], "uid": account,
    })))
}

/// `GET /api/v3/myTrades`.
pub(crate) async fn my_trades(
    State(s): State<Arc<Shared>>,
    Signed {
        account, params, ..
    }: Signed,
) -> Result<Response, ApiError> {
    let sym = sym_of(&s, &params)?;
    let parse_id = |name: &'static str| -> Result<Option<u64>, ApiError> {
        params
            .get(name)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::illegal(name)))
            .transpose()
    };
    let parse_ms = |name: &'static str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::illegal(name)))
            .transpose()
    };
    let t = &s.trading;
    // Strict mode: trades reach this (database-backed) endpoint a while after they execute.
    let visible_until = t.server_time() - t.cfg.trades_delay();
    let q = FillQuery {
        order_id: parse_id("orderId")?,
        from_id: parse_id("fromId")?,
        start_ms: parse_ms("startTime")?,
        end_ms: Some(parse_ms("endTime")?.map_or(visible_until, |e| e.min(visible_until))),
        limit: parse_id("limit")?.unwrap_or(500).clamp(1, 1000) as usize,
    };
    let engine = t.engine();
    let symbol = engine.markets()[sym].symbol.clone();
    let v: Vec<Value> = engine
        .fills(account, sym, &q)
        .into_iter()
        .map(|f| {
            let list = engine
                .order(account, sym, &OrderRef::Id(f.order_id))
                .and_then(|o| o.list_id)
                .map_or(-1, |l| l as i64);
            json!({"symbol": symbol, "id": f.trade_id, "orderId": f.order_id, "orderListId": list,
                   "price": px(f.price), "qty": qt(f.qty), "quoteQty": qt(f.quote),
                   "commission": qt(f.commission), "commissionAsset": f.commission_asset,
                   "time": f.time_ms, "isBuyer": f.side == Side::Buy, "isMaker": f.maker,
                   "isBestMatch": true})
        })
        .collect();
    Ok(ok(Value::Array(v)))
}

fn listen_key_param(q: Option<&str>, body: &str) -> Result<String, ApiError> {
    let mut p = query_pairs(body).unwrap_or_default();
    p.extend(query_pairs(q.unwrap_or("")).unwrap_or_default());
    p.remove("listenKey")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::mandatory("listenKey"))
}

/// `POST /api/v3/userDataStream`: the account's live key (extended) or a new one.
pub(crate) async fn create_listen_key(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = &s.trading;
    let account = api_key_account(t, &headers)?;
    let now = wall_ms();
    let mut keys = t.listen_keys();
    let existing = keys
        .iter()
        .find(|(_, k)| k.account == account && k.expires_ms > now)
        .map(|(name, _)| name.clone());
    let key = existing.unwrap_or_else(|| {
        let n = t.key_counter.fetch_add(1, Ordering::SeqCst);
        (0..4)
            .map(|i| {
                format!(
                    "{:016x}",
                    crate::sim::random::key(&[now as u64, n, account as u64, i])
                )
            })
            .collect()
    });
    keys.insert(
        key.clone(),
        ListenKey {
            account,
            expires_ms: now + t.ttl_ms(),
        },
    );
    Ok(ok(json!({"listenKey": key})))
}

/// `PUT /api/v3/userDataStream`: keepalive.
pub(crate) async fn keepalive_listen_key(
    State(s): State<Arc<Shared>>,
    ListenKeyRequest { account, key }: ListenKeyRequest,
) -> Result<Response, ApiError> {
    let t = &s.trading;
    let now = wall_ms();
    match t.listen_keys().get_mut(&key) {
        Some(k) if k.account == account && k.expires_ms > now => {
            k.expires_ms = now + t.ttl_ms();
            Ok(ok(json!({})))
        }
        _ => Err(unknown_listen_key()),
    }
}

/// `DELETE /api/v3/userDataStream`.
pub(crate) async fn close_listen_key(
    State(s): State<Arc<Shared>>,
    ListenKeyRequest { account, key }: ListenKeyRequest,
) -> Result<Response, ApiError> {
    let mut keys = s.trading.listen_keys();
    match keys.get(&key) {
        Some(k) if k.account == account => {
            keys.remove(&key);
            Ok(ok(json!({})))
        }
        _ => Err(unknown_listen_key()),
    }
}

/// The user-data stream of `/ws/<listenKey>`: the account's events (subscribed with
/// [`Trading::subscribe`] before the upgrade, so nothing placed after the handshake is missed),
/// pings, listen-key expiry.
pub async fn user_connection(
    socket: WebSocket,
    shared: Arc<Shared>,
    key: String,
    mut events: broadcast::Receiver<Arc<str>>,
) {
    let t = shared.trading.clone();
    let mut commands = shared.commands.subscribe();
    let mut stop = shared.stop.clone();
    let (mut wtx, mut rx) = socket.split();
    let ping_every = Duration::from_millis(shared.cfg.ping_interval_ms.max(10));
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    let close: Option<(u16, &'static str)> = loop {
        let out: Option<Message> = tokio::select! {
            m = events.recv() => match m {
                Ok(text) => Some(Message::Text(text.to_string().into())),
                Err(broadcast::error::RecvError::Lagged(_)) => break Some((1008, "slow client: queue overflow")),
                Err(broadcast::error::RecvError::Closed) => break Some((1001, "server shutting down")),
            },
            c = commands.recv() => match c {
                Ok(ConnCommand::Disconnect) => break Some((1001, "disconnected by fault injection")),
                Ok(ConnCommand::Garbage) => Some(Message::Text("\u{1}garbage{{not json".into())),
                Err(_) => None,
            },
            incoming = rx.next() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                Some(Ok(_)) => None,
            },
            _ = ping.tick() => Some(Message::Ping(wall_ms().to_string().into_bytes().into())),
            _ = expiry.tick() => {
                if t.listen_key_account(&key).is_none() {
                    let ev = json!({"e": "listenKeyExpired", "E": wall_ms(), "listenKey": key});
                    let _ = wtx.send(Message::Text(ev.to_string().into())).await;
                    break Some((1000, "listenKey expired"));
                }
                None
            },
            _ = stop.changed() => break Some((1001, "server shutting down")),
        };
        if let Some(m) = out {
            match tokio::time::timeout(Duration::from_secs(5), wtx.send(m)).await {
                Ok(Ok(())) => {}
                _ => break None,
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            wtx.send(Message::Close(Some(frame))),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_pair_is_removed_verbatim() {
        let (rest, sig) = split_signature("a=1&b=%20x&signature=abc&c=3");
        assert_eq!(rest, "a=1&b=%20x&c=3");
        assert_eq!(sig.as_deref(), Some("abc"));
        assert_eq!(split_signature("a=1"), ("a=1".to_string(), None));
    }

    /// Sends `body` to `path` of a running simulator; answers (status, body text).
    async fn call(
        sim: &crate::sim::SimHandle,
        method: reqwest::Method,
        path_and_query: &str,
        api_key: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path_and_query}", sim.rest_url()))
            .body(body);
        if let Some(k) = api_key {
            req = req.header("X-MBX-APIKEY", k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn signed_params(extra: &[(&str, &str)]) -> String {
        let mut q = crate::exec::signing::Query::new();
        for (k, v) in extra {
            q.push(k, v);
        }
        q.push("recvWindow", "5000");
        q.push("timestamp", wall_ms().to_string());
        q.signed(&Secret::new(crate::sim::accounts::DEFAULT_SECRET))
    }

    #[tokio::test]
    async fn extractors_answer_as_binance_does() {
        use crate::sim::accounts::DEFAULT_API_KEY;
        use reqwest::Method;
        let sim = crate::sim::start(crate::sim::SimConfig::default())
            .await
            .unwrap();
        let key = Some(DEFAULT_API_KEY);
        // No API key: Binance's -2014 JSON before anything else is looked at.
        let (st, body) = call(&sim, Method::GET, "/api/v3/account", None, "").await;
        assert_eq!(st, 400);
        assert_eq!(body, r#"{"code":-2014,"msg":"API-key format invalid."}"#);
        // GET signs the query only: a body is not read.
        let q = format!("/api/v3/openOrders?{}", signed_params(&[]));
        let (st, body) = call(&sim, Method::GET, &q, key, "junk=1&signature=00").await;
        assert_eq!((st, body.as_str()), (200, "[]"));
        // POST may sign its body.
        let order = signed_params(&[
            ("symbol", "ETHUSDT"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "body-signed"),
        ]);
        let (st, body) = call(&sim, Method::POST, "/api/v3/order", key, order).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(sim.trading().orders_with_client_id(0, "body-signed"), 1);
        // An unsigned POST names the missing signature.
        let (st, body) = call(&sim, Method::POST, "/api/v3/order", key, "symbol=ETHUSDT").await;
        assert_eq!(st, 400);
        assert!(
            body.contains("\"code\":-1102") && body.contains("'signature'"),
            "{body}"
        );
        // A body that is not UTF-8 is refused before authentication, by the body extractor.
        let (st, body) = call(&sim, Method::POST, "/api/v3/order", key, vec![0xff, 0xfe]).await;
        assert_eq!(st, 400);
        assert!(!body.contains("\"code\""), "{body}");
        // Listen keys: the API key, then the key parameter, then the key itself.
        let (st, body) = call(&sim, Method::PUT, "/api/v3/userDataStream", None, "").await;
        assert_eq!((st, body.contains("-2014")), (400, true), "{body}");
        let (st, body) = call(&sim, Method::PUT, "/api/v3/userDataStream", key, "").await;
        assert_eq!(st, 400);
        assert!(body.contains("'listenKey'"), "{body}");
        for method in [Method::PUT, Method::DELETE] {
            let (st, body) = call(
                &sim,
                method,
                "/api/v3/userDataStream",
                key,
                "listenKey=nope",
            )
            .await;
            assert_eq!(st, 400);
            assert_eq!(
                body,
                r#"{"code":-1125,"msg":"This listenKey does not exist."}"#
            );
        }
        let (st, body) = call(&sim, Method::POST, "/api/v3/userDataStream", key, "").await;
        assert_eq!(st, 200);
        let lk: Value = serde_json::from_str(&body).unwrap();
        let lk = format!("listenKey={}", lk["listenKey"].as_str().unwrap());
        let (st, body) = call(&sim, Method::PUT, "/api/v3/userDataStream", key, lk.clone()).await;
        assert_eq!((st, body.as_str()), (200, "{}"));
        let (st, _) = call(
            &sim,
            Method::DELETE,
            "/api/v3/userDataStream",
            key,
            lk.clone(),
        )
        .await;
        assert_eq!(st, 200);
        let (st, _) = call(&sim, Method::PUT, "/api/v3/userDataStream", key, lk).await;
        assert_eq!(st, 400);
        sim.shutdown().await;
    }

    #[test]
    fn client_ids_follow_binance_charset() {
        assert!(valid_client_id("mm-1a2b_C"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("has space"));
        assert!(!valid_client_id(&"x".repeat(37)));
    }
}
