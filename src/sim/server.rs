//! The simulated exchange over loopback: Binance REST and websocket market streams, paced to the
//! wall clock, with request-weight limits and fault injection for tests.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::config::SimConfig;
use super::history::{History, SimCandle};
use super::model::{MarketEvent, MarketModel};
use super::protocol::{self, KlineView, Ticker24h};
use super::trading::{self, OrderFault, Trading};
use super::ws;
use crate::market::types::{Level, Price, Qty, Side, Timeframe, Trade};

/// Consecutive 429 replies in one minute before the client is banned with 418.
pub const BAN_AFTER_429S: u32 = 3;
/// Length of a 418 ban, ms.
pub const BAN_MS: i64 = 120_000;
/// Update ids skipped by [`SimHandle::inject_gap`].
pub const GAP_IDS: u64 = 10;

/// Milliseconds since the UNIX epoch, from the wall clock.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One published message: its stream name and raw payload.
#[derive(Debug)]
pub struct StreamMsg {
    /// Stream name (`ethusdt@depth@100ms`).
    pub stream: String,
    /// Raw event JSON.
    pub payload: String,
}

/// Commands to every websocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCommand {
    /// Close now (fault injection).
    Disconnect,
    /// Send a non-JSON frame and an unknown event (fault injection).
    Garbage,
}

/// A fault the handle could not inject.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SimError {
    /// The symbol is not simulated.
    #[error("unknown simulated symbol {0}")]
    UnknownSymbol(String),
    /// The server is stopped.
    #[error("the simulator is stopped")]
    Stopped,
}

#[derive(Debug, Default)]
struct Weights {
    minute: i64,
    used: u32,
    rejected: u32,
    banned_until_ms: i64,
}

/// State shared by the market task, REST handlers and connections.
pub struct Shared {
    /// Configuration in force.
    pub cfg: SimConfig,
    /// The deterministic history.
    pub history: Arc<History>,
    /// The live market.
    pub model: Mutex<MarketModel>,
    /// Published stream messages.
    pub hub: broadcast::Sender<Arc<StreamMsg>>,
    /// Fault-injection commands.
    pub commands: broadcast::Sender<ConnCommand>,
    /// Flips to true when the server stops.
    pub stop: watch::Receiver<bool>,
    paused: AtomicBool,
    gaps: Mutex<Vec<usize>>,
    weights: Mutex<Weights>,
    subscriptions: Mutex<HashMap<String, usize>>,
    lower: Vec<String>,
    /// Accounts, orders and the matching engine (kept across restarts of one handle).
    pub trading: Arc<Trading>,
}

impl Shared {
    /// Index of an uppercase symbol.
    pub fn symbol_index(&self, symbol: &str) -> Option<usize> {
        self.history.specs().iter().position(|s| s.symbol == symbol)
    }

    /// True when `name` is a stream this exchange serves.
    pub fn valid_stream(&self, name: &str) -> bool {
        let Some((sym, kind)) = name.split_once('@') else {
            return false;
        };
        if !self.lower.iter().any(|l| l == sym) {
            return false;
        }
        matches!(
            kind,
            "depth"
                | "depth@100ms"
                | "depth@1000ms"
                | "aggTrade"
                | "trade"
                | "bookTicker"
                | "ticker"
                | "kline_1s"
                | "kline_1m"
                | "kline_1h"
                | "kline_1d"
                | "depth5"
                | "depth10"
                | "depth20"
                | "depth5@100ms"
                | "depth10@100ms"
                | "depth20@100ms"
        )
    }

    /// Counts a connection's interest in a stream (the market only encodes watched streams).
    pub fn watch_stream(&self, name: &str, delta: isize) {
        let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        let n = subs.entry(name.to_owned()).or_insert(0);
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            subs.remove(name);
        }
    }

    fn watched(&self) -> HashSet<String> {
        let subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        subs.keys().cloned().collect()
    }

    fn model(&self) -> std::sync::MutexGuard<'_, MarketModel> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rolling 24 h statistics ending at `end_ms` (second-aligned).
    fn ticker(&self, sym: usize, end_ms: i64, bid: Level, ask: Level) -> Option<Ticker24h> {
        let h = &self.history;
        let spec = &h.specs()[sym];
        let end = Timeframe::S1.floor(end_ms);
        let start = Timeframe::M1.floor(end - Timeframe::D1.millis()) + Timeframe::M1.millis();
        let mut parts = h
            .range(sym, Timeframe::M1, start, Timeframe::M1.floor(end))
            .ok()?;
        parts.extend(
            h.range(sym, Timeframe::S1, Timeframe::M1.floor(end), end)
                .ok()?,
        );
        let agg = SimCandle::aggregate(start, &parts)?;
        let prev = h.candle(sym, Timeframe::S1, start - 1000).ok()?;
        let first_id = h.trades_before(sym, start).ok()? as i64;
        let (_, last_trades) = h.leaf_trades(sym, end - 1000).ok()?;
        let last = last_trades.last()?;
        let kv = KlineView::new(spec, Timeframe::D1, &agg, first_id as u64);
        Some(Ticker24h {
            open_time_ms: start,
            close_time_ms: end - 1,
            open: spec.price(agg.o),
            high: spec.price(agg.h),
            low: spec.price(agg.l),
            last: spec.price(agg.c),
            last_qty: spec.qty(last.qty),
            prev_close: spec.price(prev.c),
            volume: spec.qty(agg.v),
            quote_volume: kv.quote_volume,
            first_id,
            last_id: first_id + agg.n - 1,
            count: agg.n,
            bid,
            ask,
        })
    }

    fn top_levels(&self, sym: usize) -> (Level, Level) {
        let m = self.model();
        let spec = &self.history.specs()[sym];
        let lv = |x: Option<(i64, i64)>| {
            x.map_or(
                Level {
                    price: Price::ZERO,
                    qty: Qty::ZERO,
                },
                |(p, q)| Level {
                    price: spec.price(p),
                    qty: spec.qty(q),
                },
            )
        };
        (lv(m.book(sym).best_bid()), lv(m.book(sym).best_ask()))
    }

    fn kline(&self, sym: usize, tf: Timeframe, c: &SimCandle) -> Option<KlineView> {
        let first = self.history.trades_before(sym, c.open_time_ms).ok()?;
        Some(KlineView::new(&self.history.specs()[sym], tf, c, first))
    }
}

struct Running {
    shared: Arc<Shared>,
    stop_tx: watch::Sender<bool>,
    server: JoinHandle<()>,
    market: JoinHandle<()>,
}

/// A running simulated exchange; dropping it without `shutdown` leaves the tasks to the runtime.
pub struct SimHandle {
    cfg: SimConfig,
    history: Arc<History>,
    trading: Arc<Trading>,
    addr: SocketAddr,
    running: Option<Running>,
}

/// Starts the simulator: binds, builds the market from the last historical close, serves.
pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let specs = cfg.specs().context("invalid simulator configuration")?;
    let trading = Arc::new(
        Trading::new(&cfg.trading, &specs).context("invalid simulator trading configuration")?,
    );
    let history = Arc::new(History::new(cfg.seed, cfg.correlation, specs));
    let addr: SocketAddr = format!("{}:{}", cfg.bind, cfg.port)
        .parse()
        .with_context(|| format!("bad bind address {}:{}", cfg.bind, cfg.port))?;
    let mut h = SimHandle {
        cfg,
        history,
        trading,
        addr,
        running: None,
    };
    h.serve(addr).await?;
    Ok(h)
}

impl SimHandle {
    async fn serve(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // A restart must get the same port back even with connections lingering in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("cannot bind simulator to {addr}"))?;
        let listener = socket.listen(1024)?;
        self.addr = listener.local_addr()?;
        let now = wall_ms();
        let model = MarketModel::new(self.history.clone(), now)
            .context("the simulated history does not cover the current time")?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let lower = self
            .history
            .specs()
            .iter()
            .map(|s| s.symbol.to_ascii_lowercase())
            .collect();
        let shared = Arc::new(Shared {
            cfg: self.cfg.clone(),
            history: self.history.clone(),
            model: Mutex::new(model),
            hub: broadcast::channel(self.cfg.ws_queue_capacity.max(16)).0,
            commands: broadcast::channel(64).0,
            stop: stop_rx.clone(),
            paused: AtomicBool::new(false),
            gaps: Mutex::new(Vec::new()),
            weights: Mutex::new(Weights::default()),
            subscriptions: Mutex::new(HashMap::new()),
            lower,
            trading: self.trading.clone(),
        });
        let app = router(shared.clone());
        let mut stop_srv = stop_rx.clone();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_srv.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!("simulator server ended: {e}");
            }
        });
        let market = tokio::spawn(market_loop(shared.clone(), stop_rx));
        self.running = Some(Running {
            shared,
            stop_tx,
            server,
            market,
        });
        Ok(())
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base REST URL (`http://127.0.0.1:PORT`).
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base websocket URL (`ws://127.0.0.1:PORT`); append `/ws/<stream>` or `/stream?streams=`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The history being served.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Accounts, orders and trading fault injection.
    pub fn trading(&self) -> &Arc<Trading> {
        &self.trading
    }

    /// Skews the clock the trading endpoints (and `/api/v3/time`) use by `ms`.
    pub fn set_clock_offset_ms(&self, ms: i64) {
        self.trading.set_clock_offset_ms(ms);
    }

    /// Makes the next order placement fail in the given way.
    pub fn inject_order_fault(&self, fault: OrderFault) {
        self.trading.inject_order_fault(fault);
    }

    /// Makes the next order cancellation fail in the given way.
    pub fn inject_cancel_fault(&self, fault: OrderFault) {
        self.trading.inject_cancel_fault(fault);
    }

    fn shared(&self) -> Result<&Arc<Shared>, SimError> {
        self.running
            .as_ref()
            .map(|r| &r.shared)
            .ok_or(SimError::Stopped)
    }

    /// Closes every websocket connection now.
    pub fn disconnect_all(&self) -> Result<(), SimError> {
        let _ = self.shared()?.commands.send(ConnCommand::Disconnect);
        Ok(())
    }

    /// Makes the next depth diff of `symbol` skip update ids (clients must resync).
    pub fn inject_gap(&self, symbol: &str) -> Result<(), SimError> {
        let s = self.shared()?;
        let sym = s
            .symbol_index(symbol)
            .ok_or_else(|| SimError::UnknownSymbol(symbol.to_owned()))?;
        s.gaps.lock().unwrap_or_else(|e| e.into_inner()).push(sym);
        Ok(())
    }

    /// Sends every websocket client a non-JSON frame and an unknown event.
    pub fn inject_garbage(&self) -> Result<(), SimError> {
        let _ = self.shared()?.commands.send(ConnCommand::Garbage);
        Ok(())
    }

    /// Stops streaming (the market keeps moving, so clients see stale data, then a gap).
    pub fn pause(&self) -> Result<(), SimError> {
        self.shared()?.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resumes streaming after [`SimHandle::pause`].
    pub fn resume(&self) -> Result<(), SimError> {
        self.shared()?.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// True while serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops serving and frees the port; `start_again` serves again on the same port.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop_tx.send(true);
            let mut server = r.server;
            if tokio::time::timeout(Duration::from_secs(5), &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
            r.market.abort();
            let _ = r.market.await;
        }
    }

    /// Serves again on the port used before (the market restarts from the history at "now").
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        self.serve(self.addr).await
    }

    /// Stops and starts again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.start_again().await
    }

    /// Stops everything.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }
}

/// Per-symbol accumulator for the 1000 ms `@depth` stream.
#[derive(Default)]
struct SlowDepth {
    first: Option<u64>,
    last: u64,
    /// End of the second the accumulated diffs belong to.
    second_end: i64,
    bids: std::collections::BTreeMap<Price, Qty>,
    asks: std::collections::BTreeMap<Price, Qty>,
}

impl SlowDepth {
    fn flush(&mut self, symbol: &str, sym: usize, time_ms: i64) -> Option<String> {
        let first = self.first.take()?;
        let d = super::model::DepthDiff {
            sym,
            time_ms,
            first_id: first,
            last_id: self.last,
            bids: std::mem::take(&mut self.bids)
                .into_iter()
                .rev()
                .map(|(price, qty)| Level { price, qty })
                .collect(),
            asks: std::mem::take(&mut self.asks)
                .into_iter()
                .map(|(price, qty)| Level { price, qty })
                .collect(),
        };
        Some(protocol::depth_update(symbol, &d))
    }
}

fn publish(shared: &Shared, stream: String, payload: String) {
    let _ = shared.hub.send(Arc::new(StreamMsg { stream, payload }));
}

/// Update id, top bids and top asks `(ticks, steps)` of one symbol.
type BookTop = (u64, Vec<(i64, i64)>, Vec<(i64, i64)>);

async fn market_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut iv = tokio::time::interval(Duration::from_millis(super::model::STEP_MS as u64));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let n = shared.history.specs().len();
    let mut slow: Vec<SlowDepth> = (0..n).map(|_| SlowDepth::default()).collect();
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => return,
        }
        let (events, now, tops) = {
            let mut m = shared.model();
            for sym in std::mem::take(&mut *shared.gaps.lock().unwrap_or_else(|e| e.into_inner())) {
                m.skip_update_ids(sym, GAP_IDS);
            }
            let events = match m.advance_to(wall_ms()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("simulated market stopped: {e}");
                    return;
                }
            };
            shared.trading.on_market(&m, &events);
            let tops: Vec<BookTop> = (0..n)
                .map(|i| {
                    (
                        m.update_id(i),
                        m.book(i).top(true, 20),
                        m.book(i).top(false, 20),
                    )
                })
                .collect();
            (events, m.now_ms(), tops)
        };
        if shared.paused.load(Ordering::SeqCst) || shared.hub.receiver_count() == 0 {
            for s in &mut slow {
                *s = SlowDepth::default();
            }
            continue;
        }
        let watched = shared.watched();
        let specs = shared.history.specs();
        for e in events {
            match e {
                MarketEvent::Trade { sym, trade } => {
                    let l = &shared.lower[sym];
                    let name = format!("{l}@aggTrade");
                    if watched.contains(&name) {
                        publish(&shared, name, protocol::agg_trade(&trade, trade.time_ms));
                    }
                    let name = format!("{l}@trade");
                    if watched.contains(&name) {
                        publish(&shared, name, protocol::trade(&trade, trade.time_ms));
                    }
                }
                MarketEvent::Depth(d) => {
                    let l = &shared.lower[d.sym];
                    let symbol = &specs[d.sym].symbol;
                    let name = format!("{l}@depth@100ms");
                    if watched.contains(&name) {
                        publish(&shared, name, protocol::depth_update(symbol, &d));
                    }
                    let slow_names = [format!("{l}@depth"), format!("{l}@depth@1000ms")];
                    if slow_names.iter().any(|s| watched.contains(s)) {
                        let acc = &mut slow[d.sym];
                        let gap = d.first_id != acc.last + 1;
                        if acc.first.is_some() && (gap || d.time_ms > acc.second_end) {
                            // Never merge across a gap (the slow stream must show it too) or
                            // across a second whose last step had no changes.
                            let at = if gap { d.time_ms - 100 } else { acc.second_end };
                            if let Some(p) = acc.flush(symbol, d.sym, at) {
                                for s in &slow_names {
                                    publish(&shared, s.clone(), p.clone());
                                }
                            }
                        }
                        if acc.first.is_none() {
                            acc.first = Some(d.first_id);
                            acc.second_end = (d.time_ms + 999).div_euclid(1000) * 1000;
                        }
                        acc.last = d.last_id;
                        for lv in d.bids {
                            acc.bids.insert(lv.price, lv.qty);
                        }
                        for lv in d.asks {
                            acc.asks.insert(lv.price, lv.qty);
                        }
                        if d.time_ms % 1000 == 0
                            && let Some(p) = acc.flush(symbol, d.sym, d.time_ms)
                        {
                            for s in &slow_names {
                                publish(&shared, s.clone(), p.clone());
                            }
                        }
                    } else {
                        slow[d.sym] = SlowDepth::default();
                    }
                }
                MarketEvent::BookTicker {
                    sym,
                    update_id,
                    bid,
                    ask,
                } => {
                    let name = format!("{}@bookTicker", shared.lower[sym]);
                    if watched.contains(&name) {
                        let p = protocol::book_ticker(&specs[sym].symbol, update_id, bid, ask);
                        publish(&shared, name, p);
                    }
                }
                MarketEvent::SecondClosed { sym, candle } => {
                    second_closed(&shared, &watched, sym, &candle);
                }
            }
        }
        for (sym, (uid, bids, asks)) in tops.into_iter().enumerate() {
            let spec = &specs[sym];
            for levels in [5usize, 10, 20] {
                let fast = format!("{}@depth{levels}@100ms", shared.lower[sym]);
                let slow_name = format!("{}@depth{levels}", shared.lower[sym]);
                let want_fast = watched.contains(&fast);
                let want_slow = watched.contains(&slow_name) && now % 1000 == 0;
                if want_fast || want_slow {
                    let lv = |v: &[(i64, i64)]| -> Vec<Level> {
                        v.iter()
                            .take(levels)
                            .map(|&(p, q)| Level {
                                price: spec.price(p),
                                qty: spec.qty(q),
                            })
                            .collect()
                    };
                    let p = protocol::depth_snapshot(uid, &lv(&bids), &lv(&asks));
                    if want_fast {
                        publish(&shared, fast, p.clone());
                    }
                    if want_slow {
                        publish(&shared, slow_name, p);
                    }
                }
            }
        }
    }
}

fn second_closed(shared: &Shared, watched: &HashSet<String>, sym: usize, c: &SimCandle) {
    let l = &shared.lower[sym];
    let symbol = &shared.history.specs()[sym].symbol;
    let end = c.open_time_ms + 1000;
    let name = format!("{l}@kline_1s");
    if watched.contains(&name)
        && let Some(k) = shared.kline(sym, Timeframe::S1, c)
    {
        publish(shared, name, k.event(symbol, end, true));
    }
    for tf in [Timeframe::M1, Timeframe::H1, Timeframe::D1] {
        let name = format!("{l}@kline_{}", tf.as_str());
        if !watched.contains(&name) {
            continue;
        }
        let closed = end % tf.millis() == 0;
        if !closed && (end / 1000) % 2 != 0 {
            continue;
        }
        let open = tf.floor(end - 1);
        let Ok(candle) = shared.history.partial(sym, tf, open, end) else {
            continue;
        };
        if let Some(k) = shared.kline(sym, tf, &candle) {
            publish(shared, name, k.event(symbol, end, closed));
        }
    }
    let name = format!("{l}@ticker");
    if watched.contains(&name) {
        let (bid, ask) = shared.top_levels(sym);
        if let Some(t) = shared.ticker(sym, end, bid, ask) {
            publish(shared, name, t.event(symbol, end));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST

/// A Binance-style error reply.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: i64,
    pub(crate) msg: String,
}

impl ApiError {
    pub(crate) fn bad(code: i64, msg: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            msg: msg.into(),
        }
    }

    pub(crate) fn mandatory(name: &str) -> Self {
        Self::bad(
            -1102,
            format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
        )
    }

    pub(crate) fn illegal(name: &str) -> Self {
        Self::bad(
            -1100,
            format!(
                "Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
            ),
        )
    }

    pub(crate) fn symbol() -> Self {
        Self::bad(-1121, "Invalid symbol.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            json!({"code": self.code, "msg": self.msg}).to_string(),
        )
    }
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

pub(crate) fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, v.to_string())
}

type Params = Query<HashMap<String, String>>;

/// Largest accepted integer parameter (ids, times in ms, limits): far beyond any real value.
const MAX_INT_PARAM: i64 = 1_000_000_000_000_000;

fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) if v.is_empty() => Err(ApiError::mandatory(name)),
        // Bounded so time arithmetic on it can never overflow.
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|x| (0..=MAX_INT_PARAM).contains(x))
            .map(Some)
            .ok_or_else(|| ApiError::illegal(name)),
    }
}

fn symbol_param(s: &Shared, q: &HashMap<String, String>) -> Result<usize, ApiError> {
    let sym = q
        .get("symbol")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::mandatory("symbol"))?;
    s.symbol_index(sym).ok_or_else(ApiError::symbol)
}

/// The symbols a request names (`symbol`, `symbols=[...]`, or all).
fn symbols_param(s: &Shared, q: &HashMap<String, String>) -> Result<(Vec<usize>, bool), ApiError> {
    if q.contains_key("symbol") {
        return Ok((vec![symbol_param(s, q)?], true));
    }
    if let Some(list) = q.get("symbols") {
        let names: Vec<String> = serde_json::from_str(list).map_err(|_| {
            ApiError::bad(-1100, "Illegal characters found in parameter 'symbols'.")
        })?;
        let idx = names
            .iter()
            .map(|n| s.symbol_index(n).ok_or_else(ApiError::symbol))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((idx, false));
    }
    Ok(((0..s.history.specs().len()).collect(), false))
}

fn weight_of(path: &str, q: &HashMap<String, String>) -> u32 {
    let one = q.contains_key("symbol");
    match path {
        "/api/v3/exchangeInfo" => 20,
        "/api/v3/depth" => match q
            .get("limit")
            .and_then(|l| l.parse::<u32>().ok())
            .unwrap_or(100)
        {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        "/api/v3/klines" => 2,
        "/api/v3/aggTrades" => 4,
        "/api/v3/ticker/24hr" if one => 2,
        "/api/v3/ticker/24hr" => 80,
        "/api/v3/ticker/bookTicker" if one => 2,
        "/api/v3/ticker/bookTicker" => 4,
        "/api/v3/openOrders" if one => 6,
        "/api/v3/openOrders" => 80,
        "/api/v3/account" | "/api/v3/myTrades" => 20,
        "/api/v3/order" if q.contains_key("signature") && !q.contains_key("side") => 4,
        "/api/v3/userDataStream" => 2,
        _ => 1,
    }
}

async fn weight_layer(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .and_then(serde_urlencoded_pairs)
        .unwrap_or_default();
    let w = weight_of(req.uri().path(), &q);
    let now = wall_ms();
    let limit = s.cfg.weight_limit_per_minute;
    let verdict = {
        let mut st = s.weights.lock().unwrap_or_else(|e| e.into_inner());
        let minute = now / 60_000;
        if minute != st.minute {
            st.minute = minute;
            st.used = 0;
            st.rejected = 0;
        }
        if now < st.banned_until_ms {
            Err((
                StatusCode::IM_A_TEAPOT,
                (st.banned_until_ms - now + 999) / 1000,
                st.used,
            ))
        } else if st.used + w > limit {
            st.rejected += 1;
            if st.rejected > BAN_AFTER_429S {
                st.banned_until_ms = now + BAN_MS;
                Err((StatusCode::IM_A_TEAPOT, BAN_MS / 1000, st.used))
            } else {
                Err((
                    StatusCode::TOO_MANY_REQUESTS,
                    60 - (now % 60_000) / 1000,
                    st.used,
                ))
            }
        } else {
            st.used += w;
            Ok(st.used)
        }
    };
    let (mut resp, used) = match verdict {
        Ok(used) => (next.run(req).await, used),
        Err((status, retry, used)) => {
            let msg = if status == StatusCode::IM_A_TEAPOT {
                format!(
                    "Way too many requests; IP(127.0.0.1) banned until {}. Please use the websocket for live updates to avoid bans.",
                    now + retry * 1000
                )
            } else {
                format!(
                    "Too many requests; current limit of IP(127.0.0.1) request weight is {limit} per MINUTE. Please use the websocket for live updates to avoid polling the API."
                )
            };
            let mut r = ApiError {
                status,
                code: -1003,
                msg,
            }
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry.max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            (r, used)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&used.to_string()) {
        resp.headers_mut().insert("x-mbx-used-weight-1m", v.clone());
        resp.headers_mut().insert("x-mbx-used-weight", v);
    }
    resp
}

/// Decodes `a=1&b=2` (percent-decoding included); `None` on bad escapes.
pub(crate) fn query_pairs(q: &str) -> Option<HashMap<String, String>> {
    serde_urlencoded_pairs(q)
}

/// Decodes `a=1&b=2` (percent-decoding included) without another dependency.
fn serde_urlencoded_pairs(q: &str) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v3/ping", get(|| async { ok(json!({})) }))
        .route("/api/v3/time", get(trading::time))
        .route(
            "/api/v3/order",
            get(trading::get_order)
                .post(trading::post_order)
                .delete(trading::delete_order),
        )
        .route("/api/v3/orderList/oco", post(trading::post_oco))
        .route("/api/v3/openOrders", get(trading::open_orders))
        .route("/api/v3/account", get(trading::account))
        .route("/api/v3/myTrades", get(trading::my_trades))
        .route(
            "/api/v3/userDataStream",
            post(trading::create_listen_key)
                .put(trading::keepalive_listen_key)
                .delete(trading::close_listen_key),
        )
        .route("/api/v3/exchangeInfo", get(exchange_info))
        .route("/api/v3/depth", get(depth))
        .route("/api/v3/klines", get(klines))
        .route("/api/v3/uiKlines", get(klines))
        .route("/api/v3/aggTrades", get(agg_trades))
        .route("/api/v3/ticker/bookTicker", get(book_ticker))
        .route("/api/v3/ticker/24hr", get(ticker_24h))
        .layer(middleware::from_fn_with_state(shared.clone(), weight_layer));
    Router::new()
        .merge(api)
        .route("/ws", get(ws::raw_root))
        .route("/ws/{*streams}", get(ws::raw))
        .route("/stream", get(ws::combined))
        .with_state(shared)
}

async fn exchange_info(
    State(s): State<Arc<Shared>>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (idx, _) = symbols_param(&s, &q)?;
    let limit = s.cfg.weight_limit_per_minute;
    Ok(ok(json!({
        "timezone": "UTC",
        "serverTime": wall_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
        ],
        "exchangeFilters": [],
        "symbols": idx.iter().map(|&i| protocol::symbol_info(&s.history.specs()[i])).collect::<Vec<_>>(),
    })))
}

async fn depth(State(s): State<Arc<Shared>>, Query(q): Params) -> Result<Response, ApiError> {
    let sym = symbol_param(&s, &q)?;
    let limit = int_param(&q, "limit")?.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::illegal("limit"));
    }
    let limit = limit.min(5000) as usize;
    let spec = &s.history.specs()[sym];
    let (uid, bids, asks) = {
        let m = s.model();
        (
            m.update_id(sym),
            m.book(sym).top(true, limit),
            m.book(sym).top(false, limit),
        )
    };
    let lv = |v: Vec<(i64, i64)>| -> Vec<Level> {
        v.into_iter()
            .map(|(p, q)| Level {
                price: spec.price(p),
                qty: spec.qty(q),
            })
            .collect()
    };
    Ok(json_response(
        StatusCode::OK,
        protocol::depth_snapshot(uid, &lv(bids), &lv(asks)),
    ))
}

/// A REST handler body that may run for a while.
type BlockingHandler = fn(Arc<Shared>, HashMap<String, String>) -> Result<Response, ApiError>;

/// Runs a history-heavy handler on the blocking pool: generating old candles and trades is
/// CPU work that must not stall the websocket tasks (pings, streams) on the async workers.
async fn off_reactor(
    s: Arc<Shared>,
    q: HashMap<String, String>,
    f: BlockingHandler,
) -> Result<Response, ApiError> {
    tokio::task::spawn_blocking(move || f(s, q))
        .await
        .unwrap_or_else(|e| Err(ApiError::bad(-1000, format!("internal error: {e}"))))
}

async fn klines(State(s): State<Arc<Shared>>, Query(q): Params) -> Result<Response, ApiError> {
    off_reactor(s, q, klines_blocking).await
}

fn klines_blocking(s: Arc<Shared>, q: HashMap<String, String>) -> Result<Response, ApiError> {
    let sym = symbol_param(&s, &q)?;
    let interval = q
        .get("interval")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::mandatory("interval"))?;
    let tf = Timeframe::parse(interval).ok_or_else(|| ApiError::bad(-1120, "Invalid interval."))?;
    let limit = int_param(&q, "limit")?.unwrap_or(500);
    if limit == 0 {
        return Err(ApiError::illegal("limit"));
    }
    let limit = limit.min(1000);
    let start = int_param(&q, "startTime")?;
    let end = int_param(&q, "endTime")?;
    let now = s.model().now_ms();
    let h = &s.history;
    let step = tf.millis();
    let current = tf.floor(now);
    let earliest = tf.floor(h.start_ms() + step - 1);
    let (first, last) = match (start, end) {
        (Some(st), e) => {
            let first = tf.floor(st + step - 1).max(earliest);
            let mut last = first + (limit - 1) * step;
            if let Some(e) = e {
                last = last.min(tf.floor(e));
            }
            (first, last.min(current))
        }
        (None, Some(e)) => {
            let last = tf.floor(e).min(current);
            ((last - (limit - 1) * step).max(earliest), last)
        }
        (None, None) => ((current - (limit - 1) * step).max(earliest), current),
    };
    if first > last {
        return Ok(ok(json!([])));
    }
    let complete_end = (last + step).min(current);
    let mut candles = h
        .range(sym, tf, first, complete_end)
        .map_err(|e| ApiError::bad(-1100, e.to_string()))?;
    if last >= current
        && first <= current
        && let Ok(p) = h.partial(sym, tf, current, now)
    {
        candles.push(p);
    }
    let rows: Vec<Value> = candles
        .iter()
        .filter_map(|c| s.kline(sym, tf, c).map(|k| k.rest_row()))
        .collect();
    Ok(ok(Value::Array(rows)))
}

fn trade_of(s: &Shared, sym: usize, t: &super::history::LeafTrade) -> Trade {
    let spec = &s.history.specs()[sym];
    Trade {
        symbol: spec.symbol.clone(),
        id: t.id,
        time_ms: t.time_ms,
        price: spec.price(t.price),
        qty: spec.qty(t.qty),
        taker_side: if t.taker_buy { Side::Buy } else { Side::Sell },
    }
}

async fn agg_trades(State(s): State<Arc<Shared>>, Query(q): Params) -> Result<Response, ApiError> {
    off_reactor(s, q, agg_trades_blocking).await
}

fn agg_trades_blocking(s: Arc<Shared>, q: HashMap<String, String>) -> Result<Response, ApiError> {
    let sym = symbol_param(&s, &q)?;
    let limit = int_param(&q, "limit")?.unwrap_or(500).clamp(1, 1000) as usize;
    let now = s.model().now_ms();
    let h = &s.history;
    let from_id = int_param(&q, "fromId")?;
    let start = int_param(&q, "startTime")?;
    let end = int_param(&q, "endTime")?;
    let mut out = Vec::new();
    let first_second = if let Some(id) = from_id {
        // Trade ids grow with time: binary-search the second that holds the id.
        let (mut lo, mut hi) = (h.start_ms() / 1000, Timeframe::S1.floor(now) / 1000);
        while lo < hi {
            let mid = (lo + hi + 1) / 2;
            match h.trades_before(sym, mid * 1000) {
                Ok(b) if b as i64 <= id => lo = mid,
                _ => hi = mid - 1,
            }
        }
        Some(lo * 1000)
    } else {
        start.map(|st| Timeframe::S1.floor(st))
    };
    if let Some(mut t) = first_second {
        let stop = end.map_or(now, |e| (e + 1).min(now));
        while t < stop && out.len() < limit {
            let Ok((_, trades)) = h.leaf_trades(sym, t) else {
                break;
            };
            for tr in trades {
                let after_start = start.is_none_or(|st| tr.time_ms >= st);
                let after_id = from_id.is_none_or(|id| tr.id as i64 >= id);
                if after_start && after_id && tr.time_ms < stop && out.len() < limit {
                    out.push(trade_of(&s, sym, &tr));
                }
            }
            t += 1000;
        }
    } else {
        let mut t = Timeframe::S1.floor(now);
        let mut rev = Vec::new();
        while rev.len() < limit && t >= h.start_ms() {
            let Ok((_, trades)) = h.leaf_trades(sym, t) else {
                break;
            };
            for tr in trades.iter().rev() {
                if tr.time_ms < now && rev.len() < limit {
                    rev.push(trade_of(&s, sym, tr));
                }
            }
            t -= 1000;
        }
        rev.reverse();
        out = rev;
    }
    Ok(ok(Value::Array(
        out.iter().map(protocol::agg_trade_rest).collect(),
    )))
}

async fn book_ticker(State(s): State<Arc<Shared>>, Query(q): Params) -> Result<Response, ApiError> {
    let (idx, single) = symbols_param(&s, &q)?;
    let rows: Vec<Value> = idx
        .iter()
        .map(|&i| {
            let (b, a) = s.top_levels(i);
            protocol::book_ticker_rest(&s.history.specs()[i].symbol, b, a)
        })
        .collect();
    Ok(ok(if single {
        rows[0].clone()
    } else {
        Value::Array(rows)
    }))
}

async fn ticker_24h(State(s): State<Arc<Shared>>, Query(q): Params) -> Result<Response, ApiError> {
    let (idx, single) = symbols_param(&s, &q)?;
    let now = s.model().now_ms();
    let mut rows = Vec::new();
    for i in idx {
        let (b, a) = s.top_levels(i);
        let t = s
            .ticker(i, now, b, a)
            .ok_or_else(|| ApiError::bad(-1000, "statistics unavailable"))?;
        rows.push(t.rest(&s.history.specs()[i].symbol));
    }
    Ok(ok(if single {
        rows[0].clone()
    } else {
        Value::Array(rows)
    }))
}
