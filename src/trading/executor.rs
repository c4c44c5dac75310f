//! The executor interface shared by the paper executor and the exchange executors.
//!
//! The trait is synchronous and non-blocking so one shape fits both: the paper executor does
//! its work inside the calls (a backtest steps it event by event, deterministically), while an
//! exchange executor queues requests to an async REST task in `submit`/`cancel` and hands back
//! what the venue reported in `poll_events`. Only an [`ApprovedOrder`] can be submitted, and
//! only the risk manager can make one, so no code path can send an unchecked order.

use serde::{Deserialize, Serialize};

use crate::market::book::OrderBook;
use crate::market::types::{Price, Trade};
use crate::trading::order::{ClientOrderId, ExecutionEvent, OrderState};
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
}
