//! The order model: client ids, requests, the status lifecycle, fills and execution events.
//!
//! Every amount is exact: prices and quantities are [`Price`]/[`Qty`], fees are exact 8-decimal
//! amounts of their asset. Statuses move only along the legal lifecycle, so a replayed or
//! duplicated exchange message cannot resurrect a finished order.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::market::types::{Price, Qty, SCALE, Side, Symbol};
use crate::trading::money::Money;

/// Longest client order id the exchanges accept (`^[a-zA-Z0-9-_]{1,36}$`).
pub const MAX_CLIENT_ID_LEN: usize = 36;

/// Why a text is not a valid client order id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    /// Empty or longer than [`MAX_CLIENT_ID_LEN`].
    #[error("client order id {0:?} must be 1 to 36 characters")]
    Length(String),
    /// A character outside `[a-zA-Z0-9-_]`.
    #[error("client order id {0:?} may contain only a-z, A-Z, 0-9, '-' and '_'")]
    Charset(String),
}

/// A client order id: `<prefix>-<sequence>`, deterministic so a retry reuses the same id and
/// the exchange rejects the duplicate instead of opening a second order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientOrderId(String);

impl ClientOrderId {
    /// Builds `<prefix>-<seq>`; the prefix must leave room for the sequence within 36 chars.
    pub fn new(prefix: &str, seq: u64) -> Result<Self, ClientIdError> {
        Self::parse(&format!("{prefix}-{seq}"))
    }

    /// Validates an id received from an exchange or the journal.
    pub fn parse(text: &str) -> Result<Self, ClientIdError> {
        if text.is_empty() || text.len() > MAX_CLIENT_ID_LEN {
            return Err(ClientIdError::Length(text.to_string()));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ClientIdError::Charset(text.to_string()));
        }
        Ok(Self(text.to_string()))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The sequence number when the id has the form `<prefix>-<seq>`.
    pub fn sequence(&self, prefix: &str) -> Option<u64> {
        self.0.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
    }
}

impl TryFrom<String> for ClientOrderId {
    type Error = ClientIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ClientOrderId> for String {
    fn from(id: ClientOrderId) -> Self {
        id.0
    }
}

impl fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hands out client ids `<prefix>-<n>` with strictly increasing `n`; the journal restores
/// `next` on start-up so ids are never reused across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdGen {
    prefix: String,
    next: u64,
}

impl ClientIdGen {
    /// A generator whose first id is `<prefix>-<next>`; the prefix is checked once here.
    pub fn new(prefix: &str, next: u64) -> Result<Self, ClientIdError> {
        // The widest id this generator can produce must still be valid.
        ClientOrderId::new(prefix, u64::MAX)?;
        Ok(Self {
            prefix: prefix.to_string(),
            next,
        })
    }

    /// The next id; advances the sequence.
    pub fn next_id(&mut self) -> ClientOrderId {
        let id = ClientOrderId(format!("{}-{}", self.prefix, self.next));
        self.next += 1;
        id
    }

    /// The sequence the next id will carry.
    pub fn peek_seq(&self) -> u64 {
        self.next
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Makes sure the next id is above `seq` (used when replaying ids seen in the journal).
    pub fn observe(&mut self, id: &ClientOrderId) {
        if let Some(seq) = id.sequence(&self.prefix) {
            self.next = self.next.max(seq.saturating_add(1));
        }
    }
}

/// How long an order stays working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TimeInForce {
    /// Good till cancelled.
    #[default]
    Gtc,
    /// Immediate or cancel: whatever does not fill at once expires.
    Ioc,
    /// Fill or kill: all at once or nothing.
    Fok,
}

/// What kind of order, with its prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderKind {
    /// Take liquidity at whatever the book offers.
    Market,
    /// Rest at `price` or better; `post_only` rejects it instead of letting it take.
    Limit {
        /// Limit price.
        price: Price,
        /// Reject rather than take liquidity (Binance `LIMIT_MAKER`).
        post_only: bool,
    },
    /// A market order once the last trade reaches `stop` against the position.
    StopLoss {
        /// Trigger price.
        stop: Price,
    },
    /// A limit order at `price` once the last trade reaches `stop` against the position.
    StopLossLimit {
        /// Trigger price.
        stop: Price,
        /// Limit price once triggered.
        price: Price,
    },
    /// A market order once the last trade reaches `stop` in the position's favour.
    TakeProfit {
        /// Trigger price.
        stop: Price,
    },
    /// A limit order at `price` once the last trade reaches `stop` in the position's favour.
    TakeProfitLimit {
        /// Trigger price.
        stop: Price,
        /// Limit price once triggered.
        price: Price,
    },
}

impl OrderKind {
    /// The limit price, when the order has one.
    pub fn limit_price(&self) -> Option<Price> {
        match *self {
            OrderKind::Limit { price, .. }
            | OrderKind::StopLossLimit { price, .. }
            | OrderKind::TakeProfitLimit { price, .. } => Some(price),
            _ => None,
        }
    }

    /// The trigger price of a conditional order.
    pub fn stop_price(&self) -> Option<Price> {
        match *self {
            OrderKind::StopLoss { stop }
            | OrderKind::StopLossLimit { stop, .. }
            | OrderKind::TakeProfit { stop }
            | OrderKind::TakeProfitLimit { stop, .. } => Some(stop),
            _ => None,
        }
    }

    /// True for stop-loss and take-profit kinds (they wait for a trigger).
    pub fn is_conditional(&self) -> bool {
        self.stop_price().is_some()
    }

    /// Binance's `type` name.
    pub fn exchange_type(&self) -> &'static str {
        match self {
            OrderKind::Market => "MARKET",
            OrderKind::Limit {
                post_only: true, ..
            } => "LIMIT_MAKER",
            OrderKind::Limit { .. } => "LIMIT",
            OrderKind::StopLoss { .. } => "STOP_LOSS",
            OrderKind::StopLossLimit { .. } => "STOP_LOSS_LIMIT",
            OrderKind::TakeProfit { .. } => "TAKE_PROFIT",
            OrderKind::TakeProfitLimit { .. } => "TAKE_PROFIT_LIMIT",
        }
    }
}

/// A fully specified order, ready for an executor once the risk manager approved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// Deterministic client id (retries reuse it).
    pub client_id: ClientOrderId,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Order type and prices.
    pub kind: OrderKind,
    /// Base quantity.
    pub qty: Qty,
    /// Only ever reduce an existing position (protective exits).
    pub reduce_only: bool,
    /// Time in force (limit kinds).
    pub time_in_force: TimeInForce,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created locally, not yet confirmed by the executor.
    New,
    /// Accepted by the exchange (or the paper executor) and working.
    Acknowledged,
    /// Some quantity filled, the rest working.
    PartiallyFilled,
    /// Completely filled (terminal).
    Filled,
    /// Cancelled by us or the venue (terminal).
    Cancelled,
    /// Refused by the venue (terminal).
    Rejected,
    /// Ended by its time in force or the venue (terminal).
    Expired,
}

/// An illegal status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal order status transition {from:?} -> {to:?}")]
pub struct TransitionError {
    /// Status before.
    pub from: OrderStatus,
    /// Status requested.
    pub to: OrderStatus,
}

impl OrderStatus {
    /// True once nothing more can happen to the order.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Cancelled
                | OrderStatus::Rejected
                | OrderStatus::Expired
        )
    }

    /// True while the order may still fill.
    pub fn is_open(self) -> bool {
        !self.is_terminal()
    }

    /// Whether `self -> to` is part of the lifecycle
    /// New → Acknowledged → PartiallyFilled → Filled | Cancelled | Rejected | Expired.
    pub fn can_become(self, to: OrderStatus) -> bool {
        use OrderStatus::*;
        match self {
            // A fill may be reported before the ack reaches us (user stream vs REST race).
            New => matches!(
                to,
                Acknowledged | PartiallyFilled | Filled | Cancelled | Rejected | Expired
            ),
            Acknowledged => matches!(to, PartiallyFilled | Filled | Cancelled | Expired),
            PartiallyFilled => matches!(to, PartiallyFilled | Filled | Cancelled | Expired),
            Filled | Cancelled | Rejected | Expired => false,
        }
    }

    /// The new status, or the typed error for an illegal move.
    pub fn transition(self, to: OrderStatus) -> Result<OrderStatus, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

/// One execution of (part of) an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    /// The order that filled.
    pub client_id: ClientOrderId,
    /// Canonical symbol.
    pub symbol: Symbol,
    /// The order's side.
    pub side: Side,
    /// Execution price.
    pub price: Price,
    /// Executed base quantity.
    pub qty: Qty,
    /// Commission, an exact amount of `fee_asset`.
    pub fee: Qty,
    /// Asset the commission was charged in.
    pub fee_asset: String,
    /// Commission converted to quote currency (equal to `fee` when `fee_asset` is the quote).
    pub fee_quote: Money,
    /// True when the order provided liquidity.
    pub is_maker: bool,
    /// Execution time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Venue trade id, unique per symbol: the key that deduplicates fills.
    pub trade_id: String,
}

impl Fill {
    /// Exact quote value of this fill (price × qty).
    pub fn notional(&self) -> Money {
        Money::notional(self.price, self.qty)
    }

    /// How much the position changes by: a buy whose commission is charged in the base asset
    /// (Binance charges the received asset) holds its quantity less that fee, so exits sized
    /// from the position never ask for more than the balance holds. The fee's quote value is
    /// in [`Self::fee_quote`], so the cost basis still counts what was paid.
    pub fn position_qty(&self) -> Qty {
        let base_fee = self.side == Side::Buy
            && !self.fee_asset.is_empty()
            && self.symbol.len() > self.fee_asset.len()
            && self.symbol.starts_with(&self.fee_asset);
        if base_fee {
            Qty((self.qty.raw() - self.fee.raw()).max(0))
        } else {
            self.qty
        }
    }
}

/// Why the venue (or the executor) refused an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// An exchange filter failed (tick, lot, notional).
    #[error("filter failure: {0}")]
    Filter(String),
    /// Not enough balance.
    #[error("insufficient balance")]
    InsufficientBalance,
    /// A post-only order would have taken liquidity.
    #[error("post-only order would take liquidity")]
    WouldTake,
    /// A stop order would trigger at once.
    #[error("order would trigger immediately")]
    WouldTrigger,
    /// No liquidity to fill a market order.
    #[error("no liquidity")]
    NoLiquidity,
    /// The client id is already in use.
    #[error("duplicate client order id")]
    Duplicate,
    /// The venue does not support this order type.
    #[error("unsupported order type {0}")]
    Unsupported(String),
    /// Never sent: the desk itself ended it (a stale intent after a restart, a refusal on
    /// resubmission, a submit the executor did not take).
    #[error("not sent: {0}")]
    NotSent(String),
    /// Any other venue error, with its code and message.
    #[error("exchange error {code}: {message}")]
    Exchange {
        /// Venue error code.
        code: i64,
        /// Venue message.
        message: String,
    },
}

/// Why an order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelReason {
    /// We asked for it.
    Requested,
    /// The risk manager's halt or kill switch.
    RiskHalt,
    /// The other leg of a protective pair (stop-loss vs take-profit) executed.
    OcoSibling,
    /// The venue cancelled it (reason text as given).
    Venue(String),
    /// Reconciliation found the venue no longer knows the order.
    Reconciled,
}

/// What an executor reports back, in order of occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionEvent {
    /// The venue accepted the order.
    Acknowledged {
        /// Our id.
        client_id: ClientOrderId,
        /// The venue's id (a string: MEXC ids are not numeric).
        exchange_id: String,
        /// Venue time, ms.
        time_ms: i64,
    },
    /// Part or all of an order executed.
    Filled(Fill),
    /// The order was cancelled; `filled` is what executed before.
    Cancelled {
        /// Our id.
        client_id: ClientOrderId,
        /// Why.
        reason: CancelReason,
        /// Time, ms.
        time_ms: i64,
    },
    /// The order was refused.
    Rejected {
        /// Our id.
        client_id: ClientOrderId,
        /// Why.
        reason: RejectReason,
        /// Time, ms.
        time_ms: i64,
    },
    /// The order ended by its time in force (IOC remainder, FOK miss) or the venue.
    Expired {
        /// Our id.
        client_id: ClientOrderId,
        /// Time, ms.
        time_ms: i64,
    },
}

impl ExecutionEvent {
    /// The order this event is about.
    pub fn client_id(&self) -> &ClientOrderId {
        match self {
            ExecutionEvent::Acknowledged { client_id, .. }
            | ExecutionEvent::Cancelled { client_id, .. }
            | ExecutionEvent::Rejected { client_id, .. }
            | ExecutionEvent::Expired { client_id, .. } => client_id,
            ExecutionEvent::Filled(f) => &f.client_id,
        }
    }

    /// Event time, ms.
    pub fn time_ms(&self) -> i64 {
        match self {
            ExecutionEvent::Acknowledged { time_ms, .. }
            | ExecutionEvent::Cancelled { time_ms, .. }
            | ExecutionEvent::Rejected { time_ms, .. }
            | ExecutionEvent::Expired { time_ms, .. } => *time_ms,
            ExecutionEvent::Filled(f) => f.time_ms,
        }
    }
}

/// Why an event could not be applied to an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The event is for another order.
    #[error("event for {event} applied to order {order}")]
    WrongOrder {
        /// The order's id.
        order: ClientOrderId,
        /// The event's id.
        event: ClientOrderId,
    },
    /// The status change is not in the lifecycle.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A fill would take the executed quantity above the order quantity.
    #[error("fill of {fill} would overfill order {client_id}: {filled} of {qty} already executed")]
    Overfill {
        /// The order.
        client_id: ClientOrderId,
        /// Order quantity.
        qty: Qty,
        /// Already executed.
        filled: Qty,
        /// The offending fill quantity.
        fill: Qty,
    },
    /// A fill with a non-positive quantity or price.
    #[error("fill for {client_id} has non-positive price {price} or quantity {qty}")]
    BadFill {
        /// The order.
        client_id: ClientOrderId,
        /// Fill price.
        price: Price,
        /// Fill quantity.
        qty: Qty,
    },
    /// The same venue trade was already applied to this order.
    #[error("trade {trade_id} already applied to order {client_id}")]
    DuplicateFill {
        /// The order.
        client_id: ClientOrderId,
        /// The repeated trade id.
        trade_id: String,
    },
}

/// An order and everything that happened to it so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The request as submitted.
    pub request: OrderRequest,
    /// Current status.
    pub status: OrderStatus,
    /// Venue id once acknowledged.
    pub exchange_id: Option<String>,
    /// Executed base quantity.
    pub filled_qty: Qty,
    /// Exact Σ price × qty of the fills, in quote.
    pub filled_notional: Money,
    /// Σ fees in quote.
    pub fees_quote: Money,
    /// Venue trade ids applied, to refuse a fill reported twice.
    pub trade_ids: Vec<String>,
    /// Time of the last change, ms.
    pub updated_ms: i64,
}

impl OrderState {
    /// A fresh order in status `New`.
    pub fn new(request: OrderRequest, time_ms: i64) -> Self {
        Self {
            request,
            status: OrderStatus::New,
            exchange_id: None,
            filled_qty: Qty::ZERO,
            filled_notional: Money::ZERO,
            fees_quote: Money::ZERO,
            trade_ids: Vec::new(),
            updated_ms: time_ms,
        }
    }

    /// The order's client id.
    pub fn client_id(&self) -> &ClientOrderId {
        &self.request.client_id
    }

    /// Quantity still working.
    pub fn remaining(&self) -> Qty {
        self.request.qty - self.filled_qty
    }

    /// Average fill price, floored to the 8th decimal; `None` before any fill.
    pub fn avg_fill_price(&self) -> Option<Price> {
        if self.filled_qty.is_zero() {
            return None;
        }
        let v = self.filled_notional.raw() * SCALE as i128 / self.filled_qty.raw() as i128;
        Some(Price(v as i64))
    }

    /// Applies an event, enforcing the lifecycle, quantity bounds and fill uniqueness;
    /// on error the state is unchanged.
    pub fn apply(&mut self, event: &ExecutionEvent) -> Result<(), OrderError> {
        if event.client_id() != self.client_id() {
            return Err(OrderError::WrongOrder {
                order: self.client_id().clone(),
                event: event.client_id().clone(),
            });
        }
        match event {
            ExecutionEvent::Acknowledged { exchange_id, .. } => {
                self.status = self.status.transition(OrderStatus::Acknowledged)?;
                self.exchange_id = Some(exchange_id.clone());
            }
            ExecutionEvent::Filled(f) => {
                if f.qty.raw() <= 0 || f.price.raw() <= 0 {
                    return Err(OrderError::BadFill {
                        client_id: self.client_id().clone(),
                        price: f.price,
                        qty: f.qty,
                    });
                }
                if self.trade_ids.contains(&f.trade_id) {
                    return Err(OrderError::DuplicateFill {
                        client_id: self.client_id().clone(),
                        trade_id: f.trade_id.clone(),
                    });
                }
                let filled = self.filled_qty + f.qty;
                if filled > self.request.qty {
                    return Err(OrderError::Overfill {
                        client_id: self.client_id().clone(),
                        qty: self.request.qty,
                        filled: self.filled_qty,
                        fill: f.qty,
                    });
                }
                // A trade reported after the order's final status (Binance can send the cancel
                // reply before the fill report) still happened: it counts, and the final
                // status stays.
                let late = matches!(
                    self.status,
                    OrderStatus::Cancelled | OrderStatus::Expired | OrderStatus::Rejected
                );
                if !late {
                    let to = if filled == self.request.qty {
                        OrderStatus::Filled
                    } else {
                        OrderStatus::PartiallyFilled
                    };
                    self.status = self.status.transition(to)?;
                }
                self.filled_qty = filled;
                self.filled_notional += f.notional();
                self.fees_quote += f.fee_quote;
                self.trade_ids.push(f.trade_id.clone());
            }
            ExecutionEvent::Cancelled { .. } => {
                self.status = self.status.transition(OrderStatus::Cancelled)?;
            }
            ExecutionEvent::Rejected { .. } => {
                self.status = self.status.transition(OrderStatus::Rejected)?;
            }
            ExecutionEvent::Expired { .. } => {
                self.status = self.status.transition(OrderStatus::Expired)?;
            }
        }
        self.updated_ms = event.time_ms();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ClientOrderId {
        ClientOrderId::new("mm", n).unwrap()
    }

    fn request(qty: &str) -> OrderRequest {
        OrderRequest {
            client_id: id(1),
            symbol: "ETHUSDT".into(),
            side: Side::Buy,
            kind: OrderKind::Limit {
                price: Price::parse("3000").unwrap(),
                post_only: false,
            },
            qty: Qty::parse(qty).unwrap(),
            reduce_only: false,
            time_in_force: TimeInForce::Gtc,
        }
    }

    fn fill(qty: &str, trade: &str) -> ExecutionEvent {
        ExecutionEvent::Filled(Fill {
            client_id: id(1),
            symbol: "ETHUSDT".into(),
            side: Side::Buy,
            price: Price::parse("3000").unwrap(),
            qty: Qty::parse(qty).unwrap(),
            fee: Qty::parse("0.003").unwrap(),
            fee_asset: "USDT".into(),
            fee_quote: Money::parse("0.003").unwrap(),
            is_maker: true,
            time_ms: 5,
            trade_id: trade.into(),
        })
    }

    #[test]
    fn client_ids_are_deterministic_and_validated() {
        let mut g = ClientIdGen::new("mm-ab", 7).unwrap();
        assert_eq!(g.next_id().as_str(), "mm-ab-7");
        assert_eq!(g.next_id().as_str(), "mm-ab-8");
        assert_eq!(
            ClientOrderId::parse("mm-ab-8").unwrap().sequence("mm-ab"),
            Some(8)
        );
        g.observe(&ClientOrderId::parse("mm-ab-41").unwrap());
        assert_eq!(g.peek_seq(), 42);
        g.observe(&ClientOrderId::parse("other-99").unwrap());
        assert_eq!(g.peek_seq(), 42);
        assert!(matches!(
            ClientOrderId::parse("a b"),
            Err(ClientIdError::Charset(_))
        ));
        assert!(matches!(
            ClientOrderId::parse(""),
            Err(ClientIdError::Length(_))
        ));
        assert!(ClientIdGen::new("a-prefix-that-is-far-too-long", 0).is_err());
        let json = serde_json::to_string(&id(3)).unwrap();
        assert_eq!(json, "\"mm-3\"");
        assert!(serde_json::from_str::<ClientOrderId>("\"bad id\"").is_err());
    }

    #[test]
    fn lifecycle_transitions_are_enforced() {
        use OrderStatus::*;
        assert!(New.can_become(Acknowledged));
        assert!(Acknowledged.can_become(PartiallyFilled));
        assert!(PartiallyFilled.can_become(Filled));
        assert!(!Acknowledged.can_become(Rejected));
        assert!(!Acknowledged.can_become(New));
        for t in [Filled, Cancelled, Rejected, Expired] {
            assert!(t.is_terminal());
            for to in [
                New,
                Acknowledged,
                PartiallyFilled,
                Filled,
                Cancelled,
                Rejected,
                Expired,
            ] {
                assert_eq!(t.transition(to), Err(TransitionError { from: t, to }));
            }
        }
    }

    #[test]
    fn order_state_applies_fills_exactly() {
        let mut o = OrderState::new(request("1"), 0);
        o.apply(&ExecutionEvent::Acknowledged {
            client_id: id(1),
            exchange_id: "42".into(),
            time_ms: 1,
        })
        .unwrap();
        o.apply(&fill("0.4", "t1")).unwrap();
        assert_eq!(o.status, OrderStatus::PartiallyFilled);
        assert_eq!(o.remaining(), Qty::parse("0.6").unwrap());
        assert!(matches!(
            o.apply(&fill("0.4", "t1")),
            Err(OrderError::DuplicateFill { .. })
        ));
        assert!(matches!(
            o.apply(&fill("0.7", "t2")),
            Err(OrderError::Overfill { .. })
        ));
        o.apply(&fill("0.6", "t2")).unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.avg_fill_price(), Some(Price::parse("3000").unwrap()));
        assert_eq!(o.fees_quote, Money::parse("0.006").unwrap());
        let cancel = ExecutionEvent::Cancelled {
            client_id: id(1),
            reason: CancelReason::Requested,
            time_ms: 9,
        };
        let before = o.clone();
        assert!(matches!(o.apply(&cancel), Err(OrderError::Transition(_))));
        assert_eq!(o, before);
    }

    #[test]
    fn events_for_other_orders_are_refused() {
        let mut o = OrderState::new(request("1"), 0);
        let ev = ExecutionEvent::Expired {
            client_id: id(2),
            time_ms: 1,
        };
        assert!(matches!(o.apply(&ev), Err(OrderError::WrongOrder { .. })));
        assert!(matches!(
            o.apply(&fill("0", "t0")),
            Err(OrderError::BadFill { .. })
        ));
    }
}
