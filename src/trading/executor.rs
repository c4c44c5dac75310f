//! The executor interface shared by the paper executor and the exchange executors.
//!
//! The trait is synchronous and non-blocking so one shape fits both: the paper executor does
//! its work inside the calls (a backtest steps it event by event, deterministically), while an
//! exchange executor queues requests to an async REST task in `submit`/`cancel` and hands back
//! what the venue reported in `poll_events`. Only an [`ApprovedOrder`] can be submitted, and
//! only the risk manager can make one, so no code path can send an unchecked order.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::market::book::OrderBook;
use crate::market::types::{Price, Trade};
use crate::trading::money::Money;
use crate::trading::order::{ClientOrderId, ExecutionEvent, OrderRequest, OrderState};
use crate::trading::position::Position;

pub use crate::trading::risk::{ApprovedOrder, Protection};

/// A market update an executor may need (the paper executor fills against it).
#[derive(Debug, Clone, Copy)]
pub enum MarketEvent<'a> {
    /// The symbol's whole book after an update.
    Book {
        /// Canonical symbol.
        symbol: &'a str,
        /// The book as it is now.
        book: &'a OrderBook,
    },
    /// One public trade.
    Trade(&'a Trade),
}

impl MarketEvent<'_> {
    /// The symbol the update is about.
    pub fn symbol(&self) -> &str {
        match self {
            MarketEvent::Book { symbol, .. } => symbol,
            MarketEvent::Trade(t) => &t.symbol,
        }
    }
}

/// Why an executor did not take a request (distinct from a venue rejection, which arrives
/// later as [`ExecutionEvent::Rejected`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    /// An order with this client id was already submitted.
    #[error("client order id {0} was already submitted")]
    DuplicateClientId(ClientOrderId),
    /// No open order has this client id.
    #[error("no open order with client order id {0}")]
    UnknownOrder(ClientOrderId),
    /// The executor is not connected or its request queue is full.
    #[error("executor unavailable: {0}")]
    Unavailable(String),
    /// The symbol is not traded by this executor.
    #[error("symbol {0} is not traded here")]
    UnknownSymbol(String),
}

/// Called with each order an executor places by itself (protective exits) before it is
/// placed, so the owner can journal it first; returning `false` keeps it unplaced.
pub type ExitHook = Box<dyn FnMut(&OrderRequest) -> bool + Send>;

/// Which executor runs orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// Simulated fills against the live book (the default).
    #[default]
    Paper,
    /// Binance spot.
    Binance,
    /// MEXC spot.
    Mexc,
    /// The built-in simulated exchange's trading endpoints.
    Sim,
}

/// `[execution]`: which executor runs orders, paper-fill costs, exits and the journal.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Executor: "paper" (default), "binance", "mexc" or "sim".
    pub executor: ExecutorKind,
    /// Paper maker fee in basis points of notional (exact decimal, e.g. "7.5").
    #[serde(deserialize_with = "crate::trading::serde_num::de_price")]
    pub maker_fee_bps: Price,
    /// Paper taker fee in basis points of notional (exact decimal).
    #[serde(deserialize_with = "crate::trading::serde_num::de_price")]
    pub taker_fee_bps: Price,
    /// Paper orders become active this many ms after submission.
    pub latency_ms: u64,
    /// Paper account's starting cash in quote currency.
    #[serde(deserialize_with = "crate::trading::serde_num::de_money")]
    pub starting_equity: Money,
    /// Default stop-loss distance from entry, basis points (attached when an intent has none).
    pub stop_loss_bps: u32,
    /// Default take-profit distance from entry, basis points (0: none).
    pub take_profit_bps: u32,
    /// Default trailing stop distance, basis points (0: none).
    pub trailing_stop_bps: u32,
    /// Journal directory, relative to `paths.data_dir` unless absolute.
    pub journal_dir: PathBuf,
    /// Client order id prefix (letters, digits, '-', '_'; at most 15 characters).
    pub client_id_prefix: String,
    /// A journaled intent the venue never saw is sent again after a restart or at go-live
    /// only while younger than this (and approved again by the risk check), seconds.
    pub resubmit_max_age_secs: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            executor: ExecutorKind::Paper,
            maker_fee_bps: Price::from_units(2),
            taker_fee_bps: Price::from_units(10),
            latency_ms: 50,
            starting_equity: Money::from_units(10_000),
            stop_loss_bps: 100,
            take_profit_bps: 0,
            trailing_stop_bps: 0,
            journal_dir: PathBuf::from("journal"),
            client_id_prefix: "mm".into(),
            resubmit_max_age_secs: 15,
        }
    }
}

impl ExecutionConfig {
    /// Checks the values serde cannot: `Err((dotted key, what is expected))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = crate::trading::order::ClientIdGen::new(&self.client_id_prefix, 0) {
            return Err((
                "execution.client_id_prefix",
                format!("expected 1 to 15 characters of a-z, A-Z, 0-9, '-', '_': {e}"),
            ));
        }
        if self.stop_loss_bps == 0 || self.stop_loss_bps >= 10_000 {
            return Err((
                "execution.stop_loss_bps",
                format!(
                    "expected basis points from 1 to 9999, got {}",
                    self.stop_loss_bps
                ),
            ));
        }
        if self.journal_dir.as_os_str().is_empty() {
            return Err(("execution.journal_dir", "expected a directory path".into()));
        }
        Ok(())
    }

    /// [`Self::resubmit_max_age_secs`] in ms.
    pub fn resubmit_max_age_ms(&self) -> i64 {
        (self.resubmit_max_age_secs.min(i64::MAX as u64 / 1000) * 1000) as i64
    }

    /// The journal directory: `journal_dir` under `data_dir` unless it is absolute.
    pub fn journal_path(&self, data_dir: &std::path::Path) -> PathBuf {
        data_dir.join(&self.journal_dir)
    }
}

/// Something that executes approved orders and reports what happened.
pub trait Executor {
    /// Short name for logs and the screen (`paper`, `binance`, ...).
    fn name(&self) -> &str;

    /// Queues an order; never blocks. Acceptance, fills or rejection follow as events.
    fn submit(&mut self, order: ApprovedOrder) -> Result<(), ExecutorError>;

    /// Requests cancellation of an open order; the outcome follows as an event.
    fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExecutorError>;

    /// Requests cancellation of every open order (of one symbol, or all).
    fn cancel_all(&mut self, symbol: Option<&str>) -> Result<(), ExecutorError> {
        let ids: Vec<ClientOrderId> = self
            .open_orders()
            .into_iter()
            .filter(|o| symbol.is_none_or(|s| o.request.symbol == s))
            .map(|o| o.request.client_id)
            .collect();
        for id in ids {
            match self.cancel(&id) {
                // Filled or cancelled in the meantime: nothing left to cancel.
                Ok(()) | Err(ExecutorError::UnknownOrder(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Feeds a market update at `now_ms` (simulated fills, stop triggers, latency).
    fn on_market(&mut self, event: MarketEvent<'_>, now_ms: i64);

    /// Advances time without market data (latency expiry, time-based stops).
    fn on_time(&mut self, now_ms: i64);

    /// Everything that happened since the last call, in order.
    fn poll_events(&mut self) -> Vec<ExecutionEvent>;

    /// Orders still working, as this executor knows them.
    fn open_orders(&self) -> Vec<OrderState>;

    /// Positions as this executor knows them (flat ones with realized PnL included).
    fn positions(&self) -> Vec<Position>;

    /// Last traded or mid price the executor has seen for a symbol.
    fn last_price(&self, symbol: &str) -> Option<Price>;

    /// Whether this executor protects filled entries by itself (venue stop orders, or the
    /// paper executor's watch); when not, the owner must watch the stops and close at market.
    fn places_exits(&self) -> bool {
        true
    }

    /// The stop-loss and take-profit protecting `symbol`'s position: by default its resting
    /// reduce-only stop and take-profit orders (a venue holds them); the paper executor
    /// watches them itself and says so.
    fn exits(&self, symbol: &str) -> ExitLevels {
        let mut levels = ExitLevels::default();
        for o in self.open_orders() {
            if o.request.symbol != symbol || !o.request.reduce_only {
                continue;
            }
            match o.request.kind {
                crate::trading::order::OrderKind::StopLoss { stop }
                | crate::trading::order::OrderKind::StopLossLimit { stop, .. } => {
                    levels.stop = Some(stop)
                }
                crate::trading::order::OrderKind::TakeProfit { stop }
                | crate::trading::order::OrderKind::TakeProfitLimit { stop, .. } => {
                    levels.take_profit = Some(stop)
                }
                _ => {}
            }
        }
        levels
    }
}

/// The exits protecting one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitLevels {
    /// Stop-loss trigger (after trailing).
    pub stop: Option<Price>,
    /// Take-profit trigger.
    pub take_profit: Option<Price>,
}
