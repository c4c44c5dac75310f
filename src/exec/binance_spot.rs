//! Binance spot (and testnet, and the simulator) signed REST client.
//!
//! Orders go out only after the instrument's filters are applied: prices rounded to the tick
//! toward the passive side, quantities floored to the step, below-minimum notionals refused.
//!
//! No order is sent twice. Binance refuses a duplicate `newClientOrderId` only while the first
//! order is open, and a filled market order can be invisible to `GET /api/v3/order` for a
//! while, so "the lookup found nothing" proves nothing and a resend could execute again. The
//! rule here: a send that failed before the request left (connection refused) is retried under
//! the same id; a send whose outcome is unknown (timeout, 5xx, -1007) is only ever resolved by
//! asking: the order by client id, and the account's trades since the send (a trade of an
//! order id we do not know is looked up by order id to learn its client id). It is declared
//! never received only once it is still unknown after its request can no longer execute
//! (timestamp + recvWindow) plus `visibility_margin_ms`: then [`ExecError::NotReceived`], and
//! nothing is resent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::rest::{BINANCE, Dialect, ExecError, SignedRest, local_ms};
use super::signing::{Credentials, Query};
use super::wire::{
    self, AccountTrade, AssetBalance, ExchangeOrder, WireError, parse_account, parse_order,
    parse_orders, parse_trades,
};
use crate::market::instrument::{FilterError, Instrument};
use crate::market::types::{Price, Qty, Side, notional};

/// `[exec.binance]`-style settings of one Binance-protocol venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BinanceSpotConfig {
    /// REST base URL (`https://api.binance.com`, `https://testnet.binance.vision`, or the sim).
    pub rest_url: String,
    /// Websocket base URL for the user-data stream (`wss://stream.binance.com:9443`).
    pub ws_url: String,
    /// recvWindow sent with signed requests, ms (≤ 60000).
    pub recv_window_ms: u64,
    /// HTTP timeout per request, ms.
    pub timeout_ms: u64,
    /// Request weight per minute the client allows itself (it stops at 90 %).
    pub weight_limit_1m: u32,
    /// Sends of one order when the connection cannot be made (nothing left; same client id).
    pub place_attempts: u32,
    /// Wait before looking up an order whose placement outcome is unknown, ms; the wait
    /// doubles after each inconclusive look, up to `resolve_backoff_max_ms`.
    pub unknown_settle_ms: u64,
    /// Longest wait between looks at an order whose outcome is unknown, ms.
    pub resolve_backoff_max_ms: u64,
    /// How long past its timestamp + recvWindow an in-doubt order the venue does not know is
    /// still looked for before it is declared never received, ms. It covers the venue's delay
    /// in making a filled order queryable, so it must exceed that delay.
    pub visibility_margin_ms: u64,
    /// [`BinanceSpot::place`] gives up with an unknown outcome after asking this long, ms.
    pub resolve_timeout_ms: u64,
    /// Listen-key keepalive interval, seconds (Binance: every 30 minutes).
    pub keepalive_s: u64,
    /// Credentials file (TOML, mode 0600) used when the environment has none.
    pub credentials_file: Option<PathBuf>,
}

impl Default for BinanceSpotConfig {
    fn default() -> Self {
        Self {
            rest_url: "https://api.binance.com".into(),
            ws_url: "wss://stream.binance.com:9443".into(),
            recv_window_ms: 5000,
            timeout_ms: 10_000,
            weight_limit_1m: 6000,
            place_attempts: 3,
            unknown_settle_ms: 500,
            resolve_backoff_max_ms: 2000,
            visibility_margin_ms: 5000,
            resolve_timeout_ms: 60_000,
            keepalive_s: 30 * 60,
            credentials_file: None,
        }
    }
}

/// Environment prefix of Binance credentials (`MMTRADER_BINANCE_API_KEY`/`_API_SECRET`).
pub const BINANCE_ENV: &str = "MMTRADER_BINANCE";

/// Time in force of a limit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tif {
    /// Good till canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

impl Tif {
    /// Binance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gtc => "GTC",
            Self::Ioc => "IOC",
            Self::Fok => "FOK",
        }
    }
}

/// Order type and its prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderKind {
    /// Market order.
    Market,
    /// Limit order.
    Limit {
        /// Limit price.
        price: Price,
        /// Time in force.
        tif: Tif,
    },
    /// Post-only limit order.
    LimitMaker {
        /// Limit price.
        price: Price,
    },
    /// Market order triggered at `stop`.
    StopLoss {
        /// Trigger price.
        stop: Price,
    },
    /// Limit order triggered at `stop`.
    StopLossLimit {
        /// Trigger price.
        stop: Price,
        /// Limit price once triggered.
        price: Price,
        /// Time in force.
        tif: Tif,
    },
    /// Market order triggered at `stop` in the position's favour.
    TakeProfit {
        /// Trigger price.
        stop: Price,
    },
    /// Limit order triggered at `stop` in the position's favour.
    TakeProfitLimit {
        /// Trigger price.
        stop: Price,
        /// Limit price once triggered.
        price: Price,
        /// Time in force.
        tif: Tif,
    },
}

impl OrderKind {
    /// Binance's type name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Market => "MARKET",
            Self::Limit { .. } => "LIMIT",
            Self::LimitMaker { .. } => "LIMIT_MAKER",
            Self::StopLoss { .. } => "STOP_LOSS",
            Self::StopLossLimit { .. } => "STOP_LOSS_LIMIT",
            Self::TakeProfit { .. } => "TAKE_PROFIT",
            Self::TakeProfitLimit { .. } => "TAKE_PROFIT_LIMIT",
        }
    }

    /// The trigger price, when the type has one.
    pub fn stop(&self) -> Option<Price> {
        match *self {
            Self::StopLoss { stop }
            | Self::StopLossLimit { stop, .. }
            | Self::TakeProfit { stop }
            | Self::TakeProfitLimit { stop, .. } => Some(stop),
            _ => None,
        }
    }

    /// The limit price, when the type has one.
    pub fn price(&self) -> Option<Price> {
        match *self {
            Self::Limit { price, .. }
            | Self::LimitMaker { price }
            | Self::StopLossLimit { price, .. }
            | Self::TakeProfitLimit { price, .. } => Some(price),
            _ => None,
        }
    }
}

/// One order to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSpec {
    /// Exchange symbol (`ETHUSDT`).
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Base quantity.
    pub qty: Qty,
    /// Type and prices.
    pub kind: OrderKind,
    /// Client order id, `[A-Za-z0-9_-]{1,36}`; the key that makes retries safe.
    pub client_id: String,
}

/// True when `id` is a client order id every supported exchange accepts.
pub fn valid_client_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Applies the instrument's filters: rounds prices toward the passive side (stops toward the
/// market, so protection triggers no later than asked), floors the quantity to the step, and
/// refuses what still breaks a filter.
pub fn apply_filters(inst: &Instrument, spec: &OrderSpec) -> Result<OrderSpec, FilterError> {
    if !inst.is_trading() {
        return Err(FilterError::NotTrading {
            symbol: inst.symbol.clone(),
            status: inst.status.clone(),
        });
    }
    let side = spec.side;
    let round = |p: Price| inst.round_price(side, p);
    let kind = match spec.kind {
        OrderKind::Market => OrderKind::Market,
        OrderKind::Limit { price, tif } => OrderKind::Limit {
            price: round(price),
            tif,
        },
        OrderKind::LimitMaker { price } => OrderKind::LimitMaker {
            price: round(price),
        },
        OrderKind::StopLoss { stop } => OrderKind::StopLoss { stop: round(stop) },
        OrderKind::StopLossLimit { stop, price, tif } => OrderKind::StopLossLimit {
            stop: round(stop),
            price: round(price),
            tif,
        },
        // A take-profit fires in our favour: its trigger rounds away from the market.
        OrderKind::TakeProfit { stop } => OrderKind::TakeProfit {
            stop: inst.round_price(opposite(side), stop),
        },
        OrderKind::TakeProfitLimit { stop, price, tif } => OrderKind::TakeProfitLimit {
            stop: inst.round_price(opposite(side), stop),
            price: round(price),
            tif,
        },
    };
    let qty = inst.floor_qty(spec.qty);
    inst.check_qty(qty)?;
    let reference = kind.price().or(kind.stop());
    if let Some(p) = reference {
        inst.check_price(p)?;
        let n = notional(p, qty);
        if n < inst.min_notional.raw() as i128 {
            return Err(FilterError::NotionalBelowMin {
                notional: Price(n.min(i64::MAX as i128) as i64),
                min: inst.min_notional,
            });
        }
    }
    if let Some(stop) = kind.stop() {
        inst.check_price(stop)?;
    }
    Ok(OrderSpec {
        symbol: spec.symbol.clone(),
        side,
        qty,
        kind,
        client_id: spec.client_id.clone(),
    })
}

fn opposite(side: Side) -> Side {
    match side {
        Side::Buy => Side::Sell,
        Side::Sell => Side::Buy,
    }
}

/// The `POST /api/v3/order` parameters of a (filtered) order, in Binance's documented order.
pub fn order_params(spec: &OrderSpec) -> Query {
    let mut q = Query::new()
        .with("symbol", &spec.symbol)
        .with(
            "side",
            match spec.side {
                Side::Buy => "BUY",
                Side::Sell => "SELL",
            },
        )
        .with("type", spec.kind.as_str());
    match spec.kind {
        OrderKind::Market => {
            q.push("quantity", spec.qty.to_string());
        }
        OrderKind::Limit { price, tif } => {
            q.push("timeInForce", tif.as_str())
                .push("quantity", spec.qty.to_string())
                .push("price", price.to_string());
        }
        OrderKind::LimitMaker { price } => {
            q.push("quantity", spec.qty.to_string())
                .push("price", price.to_string());
        }
        OrderKind::StopLoss { stop } | OrderKind::TakeProfit { stop } => {
            q.push("quantity", spec.qty.to_string())
                .push("stopPrice", stop.to_string());
        }
        OrderKind::StopLossLimit { stop, price, tif }
        | OrderKind::TakeProfitLimit { stop, price, tif } => {
            q.push("timeInForce", tif.as_str())
                .push("quantity", spec.qty.to_string())
                .push("price", price.to_string())
                .push("stopPrice", stop.to_string());
        }
    }
    q.push("newClientOrderId", &spec.client_id);
    q
}

/// What one send of an order left us knowing.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    /// The exchange answered: the order as it has it.
    Placed(ExchangeOrder),
    /// No certain answer: the order may or may not have executed. Resolve it with
    /// [`BinanceSpot::probe`], never by sending again.
    InDoubt {
        /// The request's `timestamp` (server clock, ms).
        sent_ms: i64,
        /// What went wrong.
        reason: ExecError,
    },
}

/// One look at an order whose send was in doubt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The exchange has it.
    Found(ExchangeOrder),
    /// It never reached the engine: still unknown after its request expired plus the margin.
    NeverReceived {
        /// Time from the request's timestamp to this verdict, ms.
        waited_ms: i64,
    },
    /// Not known yet; look again later.
    NotYet,
}

/// A stop-loss and a take-profit for one quantity as one OCO (`POST /api/v3/orderList/oco`):
/// the venue holds the quantity once and expires one leg when the other executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcoSpec {
    /// Exchange symbol.
    pub symbol: String,
    /// Side of both legs (the exit's side).
    pub side: Side,
    /// Quantity of each leg.
    pub qty: Qty,
    /// Stop-loss trigger (below the market for a sell, above for a buy).
    pub stop: Price,
    /// Client id of the stop-loss leg.
    pub stop_id: String,
    /// Take-profit trigger (above the market for a sell, below for a buy).
    pub take_profit: Price,
    /// Client id of the take-profit leg.
    pub take_profit_id: String,
    /// Client id of the list.
    pub list_id: String,
}

/// The `POST /api/v3/orderList/oco` parameters of a (filtered) OCO: the take-profit above and
/// the stop below for a sell, the other way round for a buy; both trigger market orders.
pub fn oco_params(o: &OcoSpec) -> Query {
    let stop = ("STOP_LOSS", o.stop, o.stop_id.as_str());
    let take = ("TAKE_PROFIT", o.take_profit, o.take_profit_id.as_str());
    let (above, below) = match o.side {
        Side::Sell => (take, stop),
        Side::Buy => (stop, take),
    };
    Query::new()
        .with("symbol", &o.symbol)
        .with("listClientOrderId", &o.list_id)
        .with(
            "side",
            match o.side {
                Side::Buy => "BUY",
                Side::Sell => "SELL",
            },
        )
        .with("quantity", o.qty.to_string())
        .with("aboveType", above.0)
        .with("aboveStopPrice", above.1.to_string())
        .with("aboveClientOrderId", above.2)
        .with("belowType", below.0)
        .with("belowStopPrice", below.1.to_string())
        .with("belowClientOrderId", below.2)
}

/// What one send of an OCO left us knowing.
#[derive(Debug, Clone, PartialEq)]
pub enum SentList {
    /// The exchange answered: the legs as it has them.
    Placed(Vec<ExchangeOrder>),
    /// No certain answer: probe each leg by its client id (see [`Sent::InDoubt`]).
    InDoubt {
        /// The request's `timestamp` (server clock, ms).
        sent_ms: i64,
        /// What went wrong.
        reason: ExecError,
    },
}

/// Which order dialect the account speaks (the signed transport is shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Binance spot, its testnet, and the simulator.
    Binance,
    /// MEXC spot v3.
    Mexc,
}

/// A Binance-protocol spot account.
#[derive(Debug)]
pub struct BinanceSpot {
    flavor: Flavor,
    rest: SignedRest,
    cfg: BinanceSpotConfig,
    instruments: RwLock<HashMap<String, Instrument>>,
    /// Client id of every order id seen in a reply: a trade of an order id not in here may be
    /// an in-doubt order of ours and is looked up.
    known: RwLock<HashMap<(String, String), String>>,
}

impl BinanceSpot {
    /// A client with explicit credentials.
    pub fn new(cfg: BinanceSpotConfig, creds: Credentials) -> anyhow::Result<Self> {
        Self::with_flavor(cfg, creds, Flavor::Binance, BINANCE)
    }

    /// A client with credentials from `MMTRADER_BINANCE_API_KEY`/`_API_SECRET` or the file.
    pub fn from_env(cfg: BinanceSpotConfig) -> anyhow::Result<Self> {
        let creds = Credentials::load(BINANCE_ENV, cfg.credentials_file.as_deref())?;
        Self::new(cfg, creds)
    }

    pub(crate) fn with_flavor(
        cfg: BinanceSpotConfig,
        creds: Credentials,
        flavor: Flavor,
        dialect: Dialect,
    ) -> anyhow::Result<Self> {
        let rest = SignedRest::new(
            &cfg.rest_url,
            creds,
            dialect,
            Duration::from_millis(cfg.timeout_ms.max(1)),
            cfg.recv_window_ms,
            cfg.weight_limit_1m,
        )?;
        Ok(Self {
            flavor,
            rest,
            cfg,
            instruments: RwLock::new(HashMap::new()),
            known: RwLock::new(HashMap::new()),
        })
    }

    /// The order dialect.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The signed transport (clock offset, weight).
    pub fn rest(&self) -> &SignedRest {
        &self.rest
    }

    /// The configuration.
    pub fn config(&self) -> &BinanceSpotConfig {
        &self.cfg
    }

    fn remember(&self, o: &ExchangeOrder) {
        if !o.client_order_id.is_empty() {
            self.known
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    (o.symbol.clone(), o.order_id.clone()),
                    o.client_order_id.clone(),
                );
        }
    }

    fn known_client_id(&self, symbol: &str, order_id: &str) -> Option<String> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(symbol.to_string(), order_id.to_string()))
            .cloned()
    }

    fn decode_order(&self, path: &str, body: &str) -> Result<ExchangeOrder, ExecError> {
        let o = self.decode(path, parse_order(body))?;
        self.remember(&o);
        Ok(o)
    }

    fn decode<T>(&self, path: &str, r: Result<T, WireError>) -> Result<T, ExecError> {
        r.map_err(|source| ExecError::Decode {
            exchange: self.rest.dialect().name,
            path: path.to_string(),
            source,
        })
    }

    /// Loads the instruments' filters from `GET /api/v3/exchangeInfo`.
    pub async fn load_instruments(&self) -> Result<usize, ExecError> {
        let path = "/api/v3/exchangeInfo";
        let body = self
            .rest
            .keyed(Method::GET, path, &Query::new(), 20)
            .await?;
        let info = crate::feeds::binance::wire::parse_exchange_info(&body).map_err(|e| {
            ExecError::Decode {
                exchange: self.rest.dialect().name,
                path: path.into(),
                source: WireError::Malformed {
                    what: "exchangeInfo",
                    reason: e.to_string(),
                },
            }
        })?;
        let n = info.instruments.len();
        let mut map = self.instruments.write().unwrap_or_else(|p| p.into_inner());
        for i in info.instruments {
            map.insert(i.symbol.clone(), i);
        }
        Ok(n)
    }

    /// Sets one instrument's filters (for venues whose exchangeInfo is loaded elsewhere).
    pub fn set_instrument(&self, inst: Instrument) {
        self.instruments
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(inst.symbol.clone(), inst);
    }

    /// The filters of a symbol.
    pub fn instrument(&self, symbol: &str) -> Option<Instrument> {
        self.instruments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(symbol)
            .cloned()
    }

    /// The order after the symbol's filters (see [`apply_filters`]).
    pub fn prepare(&self, spec: &OrderSpec) -> Result<OrderSpec, ExecError> {
        if !valid_client_id(&spec.client_id) {
            return Err(ExecError::Unsupported {
                exchange: self.rest.dialect().name,
                what: format!(
                    "client order id {:?} (needs [A-Za-z0-9_-]{{1,36}})",
                    spec.client_id
                ),
            });
        }
        let inst = self
            .instrument(&spec.symbol)
            .ok_or_else(|| ExecError::UnknownInstrument(spec.symbol.clone()))?;
        Ok(apply_filters(&inst, spec)?)
    }

    /// Sends an order once: filters, sends, and retries only a send that never left (the
    /// connection could not be made). A duplicate-id rejection resolves to the open order of
    /// that id. A timeout, 5xx or -1007 is [`Sent::InDoubt`]: the caller resolves it with
    /// [`BinanceSpot::probe`].
    pub async fn send_order(&self, spec: &OrderSpec) -> Result<Sent, ExecError> {
        let spec = self.prepare(spec)?;
        let params = match self.flavor {
            Flavor::Binance => order_params(&spec),
            Flavor::Mexc => super::mexc_spot::order_params(&spec)?,
        };
        let path = "/api/v3/order";
        let attempts = self.cfg.place_attempts.max(1);
        let mut delay = Duration::from_millis(self.cfg.unknown_settle_ms.max(10));
        let mut attempt = 1;
        loop {
            let (r, sent_ms) = self
                .rest
                .signed_stamped(Method::POST, path, &params, 1)
                .await;
            match r {
                Ok(body) => {
                    return Ok(match self.decode_order(path, &body) {
                        Ok(o) => Sent::Placed(o),
                        // Accepted, but the reply is unreadable: its state must be asked for.
                        Err(reason) => Sent::InDoubt { sent_ms, reason },
                    });
                }
                Err(e) if is_duplicate(&e) => {
                    // An open order already carries this id: that order is this one.
                    return Ok(match self.query(&spec.symbol, &spec.client_id).await {
                        Ok(o) => Sent::Placed(o),
                        Err(_) => Sent::InDoubt { sent_ms, reason: e },
                    });
                }
                Err(e @ ExecError::Connect { .. }) if attempt < attempts => {
                    tracing::warn!(
                        client_id = %spec.client_id,
                        attempt,
                        "order not sent ({e}); sending again under the same id"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff_max());
                    attempt += 1;
                }
                Err(reason) if reason.outcome_unknown() => {
                    tracing::warn!(
                        client_id = %spec.client_id,
                        "order outcome unknown ({reason}); resolving it by asking, not by resending"
                    );
                    return Ok(Sent::InDoubt { sent_ms, reason });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends an OCO once, with the same rules as [`BinanceSpot::send_order`]: both legs pass
    /// the filters (stop rounded toward the market, take-profit away from it), only a send that
    /// never left is retried, anything in doubt is for the caller to probe leg by leg.
    pub async fn send_oco(&self, oco: &OcoSpec) -> Result<SentList, ExecError> {
        if self.flavor != Flavor::Binance {
            return Err(ExecError::Unsupported {
                exchange: self.rest.dialect().name,
                what: "OCO order lists".into(),
            });
        }
        let leg = |kind, client_id: &str| OrderSpec {
            symbol: oco.symbol.clone(),
            side: oco.side,
            qty: oco.qty,
            kind,
            client_id: client_id.to_string(),
        };
        let stop = self.prepare(&leg(OrderKind::StopLoss { stop: oco.stop }, &oco.stop_id))?;
        let take = self.prepare(&leg(
            OrderKind::TakeProfit {
                stop: oco.take_profit,
            },
            &oco.take_profit_id,
        ))?;
        if !valid_client_id(&oco.list_id) {
            return Err(ExecError::Unsupported {
                exchange: self.rest.dialect().name,
                what: format!("order list id {:?}", oco.list_id),
            });
        }
        let filtered = OcoSpec {
            qty: stop.qty,
            stop: stop.kind.stop().unwrap_or(oco.stop),
            take_profit: take.kind.stop().unwrap_or(oco.take_profit),
            ..oco.clone()
        };
        let params = oco_params(&filtered);
        let path = "/api/v3/orderList/oco";
        let attempts = self.cfg.place_attempts.max(1);
        let mut delay = Duration::from_millis(self.cfg.unknown_settle_ms.max(10));
        let mut attempt = 1;
        loop {
            let (r, sent_ms) = self
                .rest
                .signed_stamped(Method::POST, path, &params, 1)
                .await;
            match r {
                Ok(body) => {
                    return Ok(match self.decode(path, wire::parse_order_list(&body)) {
                        Ok(legs) => {
                            for o in &legs {
                                self.remember(o);
                            }
                            SentList::Placed(legs)
                        }
                        Err(reason) => SentList::InDoubt { sent_ms, reason },
                    });
                }
                // A leg id is already open: probing finds the legs as they are.
                Err(e) if is_duplicate(&e) => return Ok(SentList::InDoubt { sent_ms, reason: e }),
                Err(e @ ExecError::Connect { .. }) if attempt < attempts => {
                    tracing::warn!(list_id = %oco.list_id, attempt, "OCO not sent ({e}); sending again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.backoff_max());
                    attempt += 1;
                }
                Err(reason) if reason.outcome_unknown() => {
                    return Ok(SentList::InDoubt { sent_ms, reason });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.cfg.resolve_backoff_max_ms.max(10))
    }

    /// One look at an order whose send at `sent_ms` (its timestamp, server clock) was in
    /// doubt: by client id, then among the account's trades since the send (trades of order
    /// ids we do not know are looked up by order id). An error means the exchange could not be
    /// asked; look again later.
    pub async fn probe(
        &self,
        symbol: &str,
        client_id: &str,
        sent_ms: i64,
    ) -> Result<Probe, ExecError> {
        let dialect = self.rest.dialect();
        match self.query(symbol, client_id).await {
            Ok(o) => return Ok(Probe::Found(o)),
            Err(e) if e.is_unknown_order(dialect) => {}
            Err(e) => return Err(e),
        }
        // Trades carry their time; allow for the estimated clock offset being off.
        let since = sent_ms - 2000;
        let trades = self.my_trades_since(symbol, since).await?;
        let mut unidentified = false;
        let mut asked = std::collections::HashSet::new();
        for t in &trades {
            match self.known_client_id(symbol, &t.order_id) {
                Some(c) if c != client_id => continue,
                _ => {}
            }
            if !asked.insert(t.order_id.clone()) {
                continue;
            }
            match self.query_by_id(symbol, &t.order_id).await {
                Ok(o) if o.client_order_id == client_id => return Ok(Probe::Found(o)),
                Ok(_) => {}
                // A trade whose order cannot be named yet might be ours: no verdict.
                Err(e) if e.is_unknown_order(dialect) => unidentified = true,
                Err(e) => return Err(e),
            }
        }
        let waited_ms = self.rest.server_ms() - sent_ms;
        let expired_after = (self.rest.recv_window_ms() + self.cfg.visibility_margin_ms) as i64;
        if !unidentified && waited_ms > expired_after {
            Ok(Probe::NeverReceived { waited_ms })
        } else {
            Ok(Probe::NotYet)
        }
    }

    /// Probes an in-doubt order with backoff until the exchange answers for certain (at most
    /// `resolve_timeout_ms`, then an unknown outcome); a found order comes with its fills.
    pub async fn resolve(
        &self,
        spec: &OrderSpec,
        sent_ms: i64,
    ) -> Result<ExchangeOrder, ExecError> {
        let path = "/api/v3/order";
        let give_up = local_ms() + self.cfg.resolve_timeout_ms as i64;
        let mut delay = Duration::from_millis(self.cfg.unknown_settle_ms.max(10));
        loop {
            tokio::time::sleep(delay).await;
            match self.probe(&spec.symbol, &spec.client_id, sent_ms).await {
                Ok(Probe::Found(o)) => return self.with_fills(o, give_up).await,
                Ok(Probe::NeverReceived { waited_ms }) => {
                    return Err(ExecError::NotReceived {
                        exchange: self.rest.dialect().name,
                        path: path.into(),
                        waited_ms,
                    });
                }
                Ok(Probe::NotYet) => {}
                Err(e) => tracing::warn!(client_id = %spec.client_id, "order lookup failed: {e}"),
            }
            if local_ms() > give_up {
                return Err(ExecError::Unknown {
                    exchange: self.rest.dialect().name,
                    path: path.into(),
                    reason: format!(
                        "still unknown {} s after sending",
                        (self.rest.server_ms() - sent_ms) / 1000
                    ),
                });
            }
            delay = (delay * 2).min(self.backoff_max());
        }
    }

    /// `o` with its fills from the account's trades, waiting until they add up to its executed
    /// quantity (trades can be listed later than the order).
    async fn with_fills(
        &self,
        mut o: ExchangeOrder,
        give_up: i64,
    ) -> Result<ExchangeOrder, ExecError> {
        let mut delay = Duration::from_millis(self.cfg.unknown_settle_ms.max(10));
        while o.executed_qty.raw() > 0 {
            let trades = self.my_trades(&o.symbol, Some(&o.order_id)).await?;
            let got = trades.iter().fold(Qty::ZERO, |a, t| a + t.qty);
            if got >= o.executed_qty {
                o.fills = trades
                    .iter()
                    .map(|t| wire::OrderFill {
                        trade_id: t.id,
                        price: t.price,
                        qty: t.qty,
                        commission: t.commission,
                        commission_asset: t.commission_asset.clone(),
                    })
                    .collect();
                break;
            }
            if local_ms() > give_up {
                return Err(ExecError::Unknown {
                    exchange: self.rest.dialect().name,
                    path: "/api/v3/myTrades".into(),
                    reason: format!(
                        "order {} executed {} but its trades list {got}",
                        o.order_id, o.executed_qty
                    ),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.backoff_max());
        }
        Ok(o)
    }

    /// Places an order and learns its fate for certain: [`BinanceSpot::send_order`], then for
    /// an in-doubt send [`BinanceSpot::resolve`]. `Err(NotReceived)` means it never reached the
    /// engine (and was not resent); `Err(Unknown)` that its fate could not be learned within
    /// `resolve_timeout_ms`: reconcile later, never resend blindly.
    pub async fn place(&self, spec: &OrderSpec) -> Result<ExchangeOrder, ExecError> {
        match self.send_order(spec).await? {
            Sent::Placed(o) => Ok(o),
            Sent::InDoubt { sent_ms, .. } => self.resolve(spec, sent_ms).await,
        }
    }

    /// `Some(order)` when the exchange knows the client id, `None` when it says it does not;
    /// an error when it cannot tell (after a few tries). `None` is not proof that the order
    /// never reached the venue (a filled order can be invisible for a while): to settle an
    /// in-doubt send use [`BinanceSpot::probe`], which judges against the send time.
    pub async fn lookup(
        &self,
        symbol: &str,
        client_id: &str,
    ) -> Result<Option<ExchangeOrder>, ExecError> {
        let mut delay = Duration::from_millis(100);
        let mut last = None;
        for _ in 0..4 {
            match self.query(symbol, client_id).await {
                Ok(o) => return Ok(Some(o)),
                Err(e)
                    if e.code()
                        .is_some_and(|c| self.rest.dialect().unknown_order_codes.contains(&c)) =>
                {
                    return Ok(None);
                }
                Err(e @ (ExecError::Unknown { .. } | ExecError::Connect { .. })) => {
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ExecError::Unknown {
            exchange: self.rest.dialect().name,
            path: "/api/v3/order".into(),
            reason: "lookup failed".into(),
        }))
    }

    /// `GET /api/v3/order` by client id.
    pub async fn query(&self, symbol: &str, client_id: &str) -> Result<ExchangeOrder, ExecError> {
        let q = Query::new()
            .with("symbol", symbol)
            .with("origClientOrderId", client_id);
        let path = "/api/v3/order";
        let body = self.rest.signed(Method::GET, path, &q, 4).await?;
        self.decode_order(path, &body)
    }

    /// `GET /api/v3/order` by exchange order id.
    pub async fn query_by_id(
        &self,
        symbol: &str,
        order_id: &str,
    ) -> Result<ExchangeOrder, ExecError> {
        let q = Query::new()
            .with("symbol", symbol)
            .with("orderId", order_id);
        let path = "/api/v3/order";
        let body = self.rest.signed(Method::GET, path, &q, 4).await?;
        self.decode_order(path, &body)
    }

    /// `DELETE /api/v3/order` by client id.
    pub async fn cancel(&self, symbol: &str, client_id: &str) -> Result<ExchangeOrder, ExecError> {
        let q = Query::new()
            .with("symbol", symbol)
            .with("origClientOrderId", client_id);
        let path = "/api/v3/order";
        let body = self.rest.signed(Method::DELETE, path, &q, 1).await?;
        self.decode_order(path, &body)
    }

    /// `GET /api/v3/openOrders` (one symbol, or all at weight 80).
    pub async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<ExchangeOrder>, ExecError> {
        let mut q = Query::new();
        if let Some(s) = symbol {
            q.push("symbol", s);
        }
        let path = "/api/v3/openOrders";
        let weight = if symbol.is_some() { 6 } else { 80 };
        let body = self.rest.signed(Method::GET, path, &q, weight).await?;
        let orders = self.decode(path, parse_orders(&body))?;
        for o in &orders {
            self.remember(o);
        }
        Ok(orders)
    }

    /// `GET /api/v3/myTrades` of a symbol, optionally of one order.
    pub async fn my_trades(
        &self,
        symbol: &str,
        order_id: Option<&str>,
    ) -> Result<Vec<AccountTrade>, ExecError> {
        let mut q = Query::new().with("symbol", symbol);
        if let Some(id) = order_id {
            q.push("orderId", id);
        }
        q.push("limit", "1000");
        let path = "/api/v3/myTrades";
        let weight = if order_id.is_some() { 5 } else { 20 };
        let body = self.rest.signed(Method::GET, path, &q, weight).await?;
        self.decode(path, parse_trades(&body))
    }

    /// `GET /api/v3/myTrades` of a symbol from `start_ms` on (the oldest 1000).
    pub async fn my_trades_since(
        &self,
        symbol: &str,
        start_ms: i64,
    ) -> Result<Vec<AccountTrade>, ExecError> {
        let q = Query::new()
            .with("symbol", symbol)
            .with("startTime", start_ms.to_string())
            .with("limit", "1000");
        let path = "/api/v3/myTrades";
        let body = self.rest.signed(Method::GET, path, &q, 20).await?;
        self.decode(path, parse_trades(&body))
    }

    /// `GET /api/v3/account` balances.
    pub async fn balances(&self) -> Result<Vec<AssetBalance>, ExecError> {
        let path = "/api/v3/account";
        let body = self
            .rest
            .signed(Method::GET, path, &Query::new(), 20)
            .await?;
        self.decode(path, parse_account(&body))
    }

    /// `POST /api/v3/userDataStream`.
    pub async fn create_listen_key(&self) -> Result<String, ExecError> {
        let path = "/api/v3/userDataStream";
        let body = self
            .rest
            .keyed(Method::POST, path, &Query::new(), 2)
            .await?;
        #[derive(Deserialize)]
        struct K {
            #[serde(rename = "listenKey")]
            listen_key: String,
        }
        let k: K = self.decode(
            path,
            serde_json::from_str(&body).map_err(|e| WireError::Malformed {
                what: "listenKey",
                reason: e.to_string(),
            }),
        )?;
        Ok(k.listen_key)
    }

    /// `PUT /api/v3/userDataStream` (keepalive).
    pub async fn keepalive_listen_key(&self, key: &str) -> Result<(), ExecError> {
        let q = Query::new().with("listenKey", key);
        self.rest
            .keyed(Method::PUT, "/api/v3/userDataStream", &q, 2)
            .await
            .map(|_| ())
    }

    /// `DELETE /api/v3/userDataStream`.
    pub async fn close_listen_key(&self, key: &str) -> Result<(), ExecError> {
        let q = Query::new().with("listenKey", key);
        self.rest
            .keyed(Method::DELETE, "/api/v3/userDataStream", &q, 2)
            .await
            .map(|_| ())
    }
}

fn is_duplicate(e: &ExecError) -> bool {
    matches!(e, ExecError::Rejected { code: -2010, msg, .. } if msg.contains("Duplicate order"))
}

/// Re-exported for callers that only need the parsers.
pub use wire::OrderState;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::instrument::InstrumentStatus;

    fn eth() -> Instrument {
        Instrument {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            tick_size: Price::parse("0.01").unwrap(),
            step_size: Qty::parse("0.0001").unwrap(),
            min_qty: Qty::parse("0.0001").unwrap(),
            max_qty: Qty::parse("9000").unwrap(),
            min_notional: Price::parse("5").unwrap(),
            status: InstrumentStatus::Trading,
        }
    }

    fn spec(side: Side, qty: &str, kind: OrderKind) -> OrderSpec {
        OrderSpec {
            symbol: "ETHUSDT".into(),
            side,
            qty: Qty::parse(qty).unwrap(),
            kind,
            client_id: "mm-1".into(),
        }
    }

    #[test]
    fn filters_round_toward_the_passive_side() {
        let p = |s: &str| Price::parse(s).unwrap();
        let buy = spec(
            Side::Buy,
            "0.123456",
            OrderKind::Limit {
                price: p("3000.019"),
                tif: Tif::Gtc,
            },
        );
        let out = apply_filters(&eth(), &buy).unwrap();
        assert_eq!(out.qty, Qty::parse("0.1234").unwrap());
        assert_eq!(out.kind.price(), Some(p("3000.01")));
        let sell = spec(
            Side::Sell,
            "1",
            OrderKind::StopLossLimit {
                stop: p("2900.001"),
                price: p("2899.991"),
                tif: Tif::Gtc,
            },
        );
        let out = apply_filters(&eth(), &sell).unwrap();
        assert_eq!(
            out.kind,
            OrderKind::StopLossLimit {
                stop: p("2900.01"),
                price: p("2900"),
                tif: Tif::Gtc
            }
        );
        let tiny = spec(
            Side::Buy,
            "0.001",
            OrderKind::Limit {
                price: p("3000"),
                tif: Tif::Gtc,
            },
        );
        assert!(matches!(
            apply_filters(&eth(), &tiny),
            Err(FilterError::NotionalBelowMin { .. })
        ));
        assert!(matches!(
            apply_filters(&eth(), &spec(Side::Buy, "0.00001", OrderKind::Market)),
            Err(FilterError::QtyNotPositive(_))
        ));
    }

    #[test]
    fn order_params_follow_binance_documentation() {
        let s = OrderSpec {
            symbol: "ETHUSDT".into(),
            side: Side::Sell,
            qty: Qty::parse("0.5").unwrap(),
            kind: OrderKind::StopLossLimit {
                stop: Price::parse("3000").unwrap(),
                price: Price::parse("2990").unwrap(),
                tif: Tif::Gtc,
            },
            client_id: "mm-1a2b".into(),
        };
        assert_eq!(
            order_params(&s).as_str(),
            "symbol=ETHUSDT&side=SELL&type=STOP_LOSS_LIMIT&timeInForce=GTC&quantity=0.5&price=2990&stopPrice=3000&newClientOrderId=mm-1a2b"
        );
        let m = OrderSpec {
            kind: OrderKind::Market,
            side: Side::Buy,
            qty: Qty::parse("0.01").unwrap(),
            ..s
        };
        assert_eq!(
            order_params(&m).as_str(),
            "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.01&newClientOrderId=mm-1a2b"
        );
    }

    #[test]
    fn oco_params_put_each_exit_on_its_side_of_the_market() {
        let o = OcoSpec {
            symbol: "ETHUSDT".into(),
            side: Side::Sell,
            qty: Qty::parse("0.5").unwrap(),
            stop: Price::parse("2900").unwrap(),
            stop_id: "e-s".into(),
            take_profit: Price::parse("3300").unwrap(),
            take_profit_id: "e-t".into(),
            list_id: "e-o".into(),
        };
        assert_eq!(
            oco_params(&o).as_str(),
            "symbol=ETHUSDT&listClientOrderId=e-o&side=SELL&quantity=0.5&aboveType=TAKE_PROFIT&aboveStopPrice=3300&aboveClientOrderId=e-t&belowType=STOP_LOSS&belowStopPrice=2900&belowClientOrderId=e-s"
        );
        let buy = OcoSpec {
            side: Side::Buy,
            stop: Price::parse("3300").unwrap(),
            take_profit: Price::parse("2900").unwrap(),
            ..o
        };
        assert!(
            oco_params(&buy)
                .as_str()
                .contains("aboveType=STOP_LOSS&aboveStopPrice=3300&aboveClientOrderId=e-s&belowType=TAKE_PROFIT&belowStopPrice=2900")
        );
    }

    #[test]
    fn client_ids_are_checked() {
        assert!(valid_client_id("mm-20240101-0001_a"));
        assert!(!valid_client_id("bad id"));
        assert!(!valid_client_id(""));
    }

    #[test]
    fn client_debug_hides_the_secret() {
        let c = BinanceSpot::new(
            BinanceSpotConfig::default(),
            Credentials {
                api_key: "KEYKEYKEY".into(),
                secret: super::super::signing::Secret::new("SUPERSECRETVALUE"),
            },
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("SUPERSECRETVALUE"));
        assert!(!shown.contains("KEYKEYKEY"));
    }
}
