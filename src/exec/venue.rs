//! Translation between the trading model (`trading::order`) and an exchange account: requests
//! to order specs, exchange replies and stream reports to execution events, and the venue's
//! view of a set of orders for start-up reconciliation.

use std::collections::BTreeSet;

use super::binance_spot::{BinanceSpot, OrderKind as WireKind, OrderSpec, Tif};
use super::rest::ExecError;
use super::wire::{AccountTrade, ExchangeOrder, ExecutionReport, OrderState as VenueState};
use crate::market::types::{Price, Qty, Side};
use crate::trading::money::Money;
use crate::trading::order::{
    CancelReason, ClientOrderId, ExecutionEvent, Fill, OrderKind, OrderRequest, OrderStatus,
    RejectReason, TimeInForce,
};

/// The exchange symbol of a canonical one (`ETH/USDT`, `eth-usdt` or `ETHUSDT` → `ETHUSDT`).
pub fn exchange_symbol(canonical: &str) -> String {
    match crate::config::split_symbol(canonical) {
        Some((b, q)) => format!("{b}{q}"),
        None => canonical.to_ascii_uppercase(),
    }
}

fn tif(t: TimeInForce) -> Tif {
    match t {
        TimeInForce::Gtc => Tif::Gtc,
        TimeInForce::Ioc => Tif::Ioc,
        TimeInForce::Fok => Tif::Fok,
    }
}

/// The wire order for a request.
pub fn spec_of(req: &OrderRequest) -> OrderSpec {
    let t = tif(req.time_in_force);
    let kind = match req.kind {
        OrderKind::Market => WireKind::Market,
        OrderKind::Limit {
            price,
            post_only: true,
        } => WireKind::LimitMaker { price },
        OrderKind::Limit { price, .. } => WireKind::Limit { price, tif: t },
        OrderKind::StopLoss { stop } => WireKind::StopLoss { stop },
        OrderKind::StopLossLimit { stop, price } => WireKind::StopLossLimit {
            stop,
            price,
            tif: t,
        },
        OrderKind::TakeProfit { stop } => WireKind::TakeProfit { stop },
        OrderKind::TakeProfitLimit { stop, price } => WireKind::TakeProfitLimit {
            stop,
            price,
            tif: t,
        },
    };
    OrderSpec {
        symbol: exchange_symbol(&req.symbol),
        side: req.side,
        qty: req.qty,
        kind,
        client_id: req.client_id.as_str().to_string(),
    }
}

/// The rejection reason of an exchange error.
pub fn reject_reason(e: &ExecError) -> RejectReason {
    match e {
        ExecError::Filter(f) => RejectReason::Filter(f.to_string()),
        ExecError::Unsupported { what, .. } => RejectReason::Unsupported(what.clone()),
        ExecError::Rejected { code, msg, .. } => match (*code, msg.as_str()) {
            (-1013, m) => RejectReason::Filter(m.to_string()),
            (_, m) if m.contains("insufficient balance") => RejectReason::InsufficientBalance,
            (_, m) if m.contains("would trigger immediately") => RejectReason::WouldTrigger,
            (_, m) if m.contains("immediately match and take") => RejectReason::WouldTake,
            (_, m) if m.contains("Duplicate order") => RejectReason::Duplicate,
            (code, m) => RejectReason::Exchange {
                code,
                message: m.to_string(),
            },
        },
        other => RejectReason::Exchange {
            code: other.code().unwrap_or(0),
            message: other.to_string(),
        },
    }
}

/// Assets of a symbol, for fee conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// Base asset.
    pub base: String,
    /// Quote asset.
    pub quote: String,
}

/// A fee in quote currency: exact for quote- and base-denominated fees; other assets (e.g. a
/// fee-discount token) have no price here and count as zero.
pub fn fee_in_quote(assets: &Assets, fee: Qty, fee_asset: &str, price: Price) -> Money {
    if fee_asset == assets.quote {
        Money(fee.raw() as i128)
    } else if fee_asset == assets.base {
        Money::notional(price, fee)
    } else {
        Money::ZERO
    }
}

#[allow(clippy::too_many_arguments)]
fn fill(
    id: &ClientOrderId,
    symbol: &str,
    side: Side,
    assets: &Assets,
    price: Price,
    qty: Qty,
    fee: Qty,
    fee_asset: &str,
    maker: bool,
    time_ms: i64,
    trade_id: i64,
) -> Fill {
    Fill {
        client_id: id.clone(),
        symbol: symbol.to_string(),
        side,
        price,
        qty,
        fee,
        fee_asset: fee_asset.to_string(),
        fee_quote: fee_in_quote(assets, fee, fee_asset, price),
        is_maker: maker,
        time_ms,
        trade_id: trade_id.to_string(),
    }
}

fn terminal(id: &ClientOrderId, s: &VenueState, time_ms: i64) -> Option<ExecutionEvent> {
    match s {
        VenueState::Canceled | VenueState::PartiallyCanceled => Some(ExecutionEvent::Cancelled {
            client_id: id.clone(),
            reason: CancelReason::Requested,
            time_ms,
        }),
        VenueState::Expired => Some(ExecutionEvent::Expired {
            client_id: id.clone(),
            time_ms,
        }),
        VenueState::Rejected => Some(ExecutionEvent::Rejected {
            client_id: id.clone(),
            reason: RejectReason::Exchange {
                code: 0,
                message: "rejected by the venue".into(),
            },
            time_ms,
        }),
        _ => None,
    }
}

/// Events of a placement reply: the ack, the fills it lists, a final status when it has one.
pub fn events_of_reply(
    req: &OrderRequest,
    assets: &Assets,
    o: &ExchangeOrder,
) -> Vec<ExecutionEvent> {
    let id = &req.client_id;
    let mut out = vec![ExecutionEvent::Acknowledged {
        client_id: id.clone(),
        exchange_id: o.order_id.clone(),
        time_ms: o.time_ms,
    }];
    for f in &o.fills {
        out.push(ExecutionEvent::Filled(fill(
            id,
            &req.symbol,
            req.side,
            assets,
            f.price,
            f.qty,
            f.commission,
            &f.commission_asset,
            false,
            o.time_ms,
            f.trade_id,
        )));
    }
    if let Some(s) = &o.status {
        out.extend(terminal(id, s, o.time_ms));
    }
    out
}

/// Events of a user-data `executionReport` (`None` for reports that change nothing we track).
pub fn events_of_report(
    id: &ClientOrderId,
    symbol: &str,
    assets: &Assets,
    r: &ExecutionReport,
) -> Vec<ExecutionEvent> {
    match r.exec_type.as_str() {
        "NEW" => vec![ExecutionEvent::Acknowledged {
            client_id: id.clone(),
            exchange_id: r.order_id.clone(),
            time_ms: r.time_ms,
        }],
        "TRADE" if r.last_qty.raw() > 0 => vec![ExecutionEvent::Filled(fill(
            id,
            symbol,
            r.side,
            assets,
            r.last_price,
            r.last_qty,
            r.commission,
            r.commission_asset.as_deref().unwrap_or(""),
            r.maker,
            r.time_ms,
            r.trade_id,
        ))],
        "CANCELED" | "EXPIRED" | "REJECTED" => {
            terminal(id, &r.status, r.time_ms).into_iter().collect()
        }
        _ => Vec::new(),
    }
}

/// Fills of an order from the account's trade list.
pub fn fills_of_trades(
    id: &ClientOrderId,
    symbol: &str,
    side: Side,
    assets: &Assets,
    trades: &[AccountTrade],
) -> Vec<Fill> {
    trades
        .iter()
        .map(|t| {
            fill(
                id,
                symbol,
                side,
                assets,
                t.price,
                t.qty,
                t.commission,
                &t.commission_asset,
                t.is_maker,
                t.time_ms,
                t.id,
            )
        })
        .collect()
}

/// The venue's status in the trading model's terms.
pub fn status_of(s: Option<&VenueState>, executed: Qty) -> OrderStatus {
    match s {
        None | Some(VenueState::New) | Some(VenueState::PendingNew) => {
            if executed.raw() > 0 {
                OrderStatus::PartiallyFilled
            } else {
                OrderStatus::Acknowledged
            }
        }
        Some(VenueState::PartiallyFilled) => OrderStatus::PartiallyFilled,
        Some(VenueState::Filled) => OrderStatus::Filled,
        Some(VenueState::Canceled) | Some(VenueState::PartiallyCanceled) => OrderStatus::Cancelled,
        Some(VenueState::Rejected) => OrderStatus::Rejected,
        Some(VenueState::Expired) => OrderStatus::Expired,
    }
}

/// What the venue says about one of our orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VenueRecord {
    /// Our id.
    pub client_id: ClientOrderId,
    /// The venue's order, `None` when it has never seen the id.
    pub order: Option<ExchangeOrder>,
    /// Its fills from the account's trade list.
    pub fills: Vec<Fill>,
}

/// The venue's side of a reconciliation: our orders as it knows them, and its open orders
/// whose client ids we did not ask about (strays).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VenueSnapshot {
    /// One record per asked id.
    pub records: Vec<VenueRecord>,
    /// Open orders on the venue not among the asked ids.
    pub strays: Vec<ExchangeOrder>,
}

/// Asks the venue about each order (by client id; fills from `myTrades` of its order id) and
/// lists its open orders on the same symbols. `orders` are `(request, assets)` pairs.
pub async fn snapshot(
    client: &BinanceSpot,
    orders: &[(OrderRequest, Assets)],
) -> Result<VenueSnapshot, ExecError> {
    let mut snap = VenueSnapshot::default();
    let mut symbols = BTreeSet::new();
    for (req, assets) in orders {
        let sym = exchange_symbol(&req.symbol);
        symbols.insert(sym.clone());
        let order = client.lookup(&sym, req.client_id.as_str()).await?;
        let fills = match &order {
            Some(o) if o.executed_qty.raw() > 0 => {
                let trades = client.my_trades(&sym, Some(&o.order_id)).await?;
                fills_of_trades(&req.client_id, &req.symbol, req.side, assets, &trades)
            }
            _ => Vec::new(),
        };
        snap.records.push(VenueRecord {
            client_id: req.client_id.clone(),
            order,
            fills,
        });
    }
    let asked: BTreeSet<&str> = orders.iter().map(|(r, _)| r.client_id.as_str()).collect();
    for sym in symbols {
        for o in client.open_orders(Some(&sym)).await? {
            if !asked.contains(o.client_order_id.as_str()) {
                snap.strays.push(o);
            }
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::wire::OrderFill;

    fn req(kind: OrderKind) -> OrderRequest {
        OrderRequest {
            client_id: ClientOrderId::parse("mm-1").unwrap(),
            symbol: "ETH/USDT".into(),
            side: Side::Buy,
            kind,
            qty: Qty::parse("1").unwrap(),
            reduce_only: false,
            time_in_force: TimeInForce::Ioc,
        }
    }

    fn assets() -> Assets {
        Assets {
            base: "ETH".into(),
            quote: "USDT".into(),
        }
    }

    #[test]
    fn requests_map_to_wire_orders() {
        let p = Price::parse("3000").unwrap();
        let s = spec_of(&req(OrderKind::Limit {
            price: p,
            post_only: false,
        }));
        assert_eq!(s.symbol, "ETHUSDT");
        assert_eq!(
            s.kind,
            WireKind::Limit {
                price: p,
                tif: Tif::Ioc
            }
        );
        let s = spec_of(&req(OrderKind::Limit {
            price: p,
            post_only: true,
        }));
        assert_eq!(s.kind, WireKind::LimitMaker { price: p });
        assert_eq!(s.client_id, "mm-1");
    }

    #[test]
    fn a_full_reply_becomes_ack_fills_and_fees_in_quote() {
        let r = req(OrderKind::Market);
        let o = ExchangeOrder {
            symbol: "ETHUSDT".into(),
            order_id: "42".into(),
            client_order_id: "mm-1".into(),
            side: Some(Side::Buy),
            kind: "MARKET".into(),
            price: Price::ZERO,
            orig_qty: Qty::parse("1").unwrap(),
            executed_qty: Qty::parse("1").unwrap(),
            cum_quote: Qty::parse("3000").unwrap(),
            status: Some(VenueState::Filled),
            time_ms: 5,
            fills: vec![OrderFill {
                trade_id: 9,
                price: Price::parse("3000").unwrap(),
                qty: Qty::parse("1").unwrap(),
                commission: Qty::parse("0.001").unwrap(),
                commission_asset: "ETH".into(),
            }],
        };
        let ev = events_of_reply(&r, &assets(), &o);
        assert_eq!(ev.len(), 2);
        let ExecutionEvent::Filled(f) = &ev[1] else {
            panic!("second event is the fill")
        };
        assert_eq!(f.trade_id, "9");
        assert_eq!(f.fee_quote, Money::parse("3").unwrap());
        assert_eq!(
            status_of(o.status.as_ref(), o.executed_qty),
            OrderStatus::Filled
        );
    }

    #[test]
    fn exchange_errors_map_to_reasons() {
        let rej = |code, msg: &str| ExecError::Rejected {
            exchange: "binance",
            path: "/api/v3/order".into(),
            status: 400,
            code,
            msg: msg.into(),
        };
        assert_eq!(
            reject_reason(&rej(
                -2010,
                "Account has insufficient balance for requested action."
            )),
            RejectReason::InsufficientBalance
        );
        assert!(matches!(
            reject_reason(&rej(-1013, "Filter failure: LOT_SIZE")),
            RejectReason::Filter(_)
        ));
        assert_eq!(
            reject_reason(&rej(-1121, "Invalid symbol.")),
            RejectReason::Exchange {
                code: -1121,
                message: "Invalid symbol.".into()
            }
        );
    }
}
