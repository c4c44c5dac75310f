//! Exchange replies of the Binance-style spot trading API, parsed exactly (pure, no I/O).
//!
//! MEXC spot v3 answers in the same shapes with small differences (string order ids, `Qty`
//! instead of `origQty` in places, `PARTIALLY_CANCELED`); the parsers accept both.

use serde::Deserialize;
use serde_json::Value;

use crate::market::types::{Price, Qty, Side};

/// A reply that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not JSON, or not the expected shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Parser message (never includes request secrets: replies carry none).
        reason: String,
    },
    /// A decimal field is not an exact decimal.
    #[error("{what}: field {field} is not an exact decimal: {value:?}")]
    BadDecimal {
        /// What was being parsed.
        what: &'static str,
        /// Field name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// An enum field has a value this client does not know.
    #[error("{what}: field {field} has unknown value {value:?}")]
    BadEnum {
        /// What was being parsed.
        what: &'static str,
        /// Field name.
        field: &'static str,
        /// The text found.
        value: String,
    },
}

/// Binance's error body `{"code":-2010,"msg":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiErrorBody {
    /// Error code.
    pub code: i64,
    /// Message.
    pub msg: String,
}

/// Parses an error body; `None` when the text is not one.
pub fn parse_error(body: &str) -> Option<ApiErrorBody> {
    serde_json::from_str(body).ok()
}

/// Order status as the exchange reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Accepted, nothing filled.
    New,
    /// Accepted by the engine but not yet working (Binance `PENDING_NEW`).
    PendingNew,
    /// Partly filled, working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled (possibly after partial fills).
    Canceled,
    /// Canceled after partial fills (MEXC).
    PartiallyCanceled,
    /// Rejected by the engine.
    Rejected,
    /// Expired (IOC/FOK/market remainder, STP).
    Expired,
}

impl OrderState {
    /// Parses the exchange's status text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NEW" => Self::New,
            "PENDING_NEW" => Self::PendingNew,
            "PARTIALLY_FILLED" => Self::PartiallyFilled,
            "FILLED" => Self::Filled,
            "CANCELED" | "PENDING_CANCEL" => Self::Canceled,
            "PARTIALLY_CANCELED" => Self::PartiallyCanceled,
            "REJECTED" => Self::Rejected,
            "EXPIRED" | "EXPIRED_IN_MATCH" => Self::Expired,
            _ => return None,
        })
    }

    /// True while the order may still trade.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::New | Self::PendingNew | Self::PartiallyFilled)
    }
}

/// One fill listed in a FULL order response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFill {
    /// Trade id.
    pub trade_id: i64,
    /// Price.
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
    /// Fee amount.
    pub commission: Qty,
    /// Fee asset.
    pub commission_asset: String,
}

/// An order as the exchange reports it (place, query, cancel, open orders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeOrder {
    /// Symbol.
    pub symbol: String,
    /// Exchange order id (a string: MEXC's ids are not numbers).
    pub order_id: String,
    /// Client order id (for a cancel reply: the canceled order's id).
    pub client_order_id: String,
    /// Side.
    pub side: Option<Side>,
    /// Order type text.
    pub kind: String,
    /// Limit price (zero for market orders).
    pub price: Price,
    /// Ordered quantity.
    pub orig_qty: Qty,
    /// Filled quantity.
    pub executed_qty: Qty,
    /// Filled quote amount.
    pub cum_quote: Qty,
    /// Status; `None` in ACK replies, which carry none.
    pub status: Option<OrderState>,
    /// Creation or transaction time, ms.
    pub time_ms: i64,
    /// Fills of a FULL reply.
    pub fills: Vec<OrderFill>,
}

fn dec<T>(
    what: &'static str,
    field: &'static str,
    v: Option<&Value>,
    parse: fn(&str) -> Result<T, crate::market::types::FixedParseError>,
    zero: T,
) -> Result<T, WireError> {
    match v {
        None | Some(Value::Null) => Ok(zero),
        Some(Value::String(s)) => parse(s).map_err(|_| WireError::BadDecimal {
            what,
            field,
            value: s.clone(),
        }),
        Some(other) => Err(WireError::BadDecimal {
            what,
            field,
            value: other.to_string(),
        }),
    }
}

fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn side_of(what: &'static str, v: Option<&Value>) -> Result<Option<Side>, WireError> {
    match v.and_then(Value::as_str) {
        None => Ok(None),
        Some("BUY") => Ok(Some(Side::Buy)),
        Some("SELL") => Ok(Some(Side::Sell)),
        Some(other) => Err(WireError::BadEnum {
            what,
            field: "side",
            value: other.to_string(),
        }),
    }
}

fn object(what: &'static str, body: &str) -> Result<Value, WireError> {
    let v: Value = serde_json::from_str(body).map_err(|e| WireError::Malformed {
        what,
        reason: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(WireError::Malformed {
            what,
            reason: "expected a JSON object".into(),
        });
    }
    Ok(v)
}

/// Parses one order object.
pub fn order_from_value(v: &Value) -> Result<ExchangeOrder, WireError> {
    const W: &str = "order";
    let symbol = v
        .get("symbol")
        .and_then(Value::as_str)
        .ok_or_else(|| WireError::Malformed {
            what: W,
            reason: "missing symbol".into(),
        })?
        .to_string();
    let order_id = id_text(v.get("orderId")).ok_or_else(|| WireError::Malformed {
        what: W,
        reason: "missing orderId".into(),
    })?;
    // A cancel reply names the canceled order in origClientOrderId.
    let client_order_id = v
        .get("origClientOrderId")
        .or_else(|| v.get("clientOrderId"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let status = match v.get("status").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(OrderState::parse(s).ok_or_else(|| WireError::BadEnum {
            what: W,
            field: "status",
            value: s.to_string(),
        })?),
    };
    let mut fills = Vec::new();
    if let Some(Value::Array(fs)) = v.get("fills") {
        for f in fs {
            fills.push(OrderFill {
                trade_id: f.get("tradeId").and_then(Value::as_i64).unwrap_or(-1),
                price: dec(W, "fills.price", f.get("price"), Price::parse, Price::ZERO)?,
                qty: dec(W, "fills.qty", f.get("qty"), Qty::parse, Qty::ZERO)?,
                commission: dec(
                    W,
                    "fills.commission",
                    f.get("commission"),
                    Qty::parse,
                    Qty::ZERO,
                )?,
                commission_asset: f
                    .get("commissionAsset")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
    }
    Ok(ExchangeOrder {
        symbol,
        order_id,
        client_order_id,
        side: side_of(W, v.get("side"))?,
        kind: v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        price: dec(W, "price", v.get("price"), Price::parse, Price::ZERO)?,
        orig_qty: dec(
            W,
            "origQty",
            v.get("origQty").or_else(|| v.get("Qty")),
            Qty::parse,
            Qty::ZERO,
        )?,
        executed_qty: dec(
            W,
            "executedQty",
            v.get("executedQty"),
            Qty::parse,
            Qty::ZERO,
        )?,
        cum_quote: dec(
            W,
            "cummulativeQuoteQty",
            v.get("cummulativeQuoteQty"),
            Qty::parse,
            Qty::ZERO,
        )?,
        status,
        time_ms: v
            .get("transactTime")
            .or_else(|| v.get("time"))
            .and_then(Value::as_i64)
            .unwrap_or(0),
        fills,
    })
}

/// Parses an order reply.
pub fn parse_order(body: &str) -> Result<ExchangeOrder, WireError> {
    order_from_value(&object("order", body)?)
}

/// Parses the reply of an order-list placement (`POST /api/v3/orderList/oco`): its legs, from
/// `orderReports`, in the reply's order.
pub fn parse_order_list(body: &str) -> Result<Vec<ExchangeOrder>, WireError> {
    let v = object("order list", body)?;
    let Some(Value::Array(reports)) = v.get("orderReports") else {
        return Err(WireError::Malformed {
            what: "order list",
            reason: "missing orderReports".into(),
        });
    };
    reports.iter().map(order_from_value).collect()
}

/// Parses `GET /api/v3/openOrders`.
pub fn parse_orders(body: &str) -> Result<Vec<ExchangeOrder>, WireError> {
    let v: Value = serde_json::from_str(body).map_err(|e| WireError::Malformed {
        what: "order list",
        reason: e.to_string(),
    })?;
    let Value::Array(items) = v else {
        return Err(WireError::Malformed {
            what: "order list",
            reason: "expected a JSON array".into(),
        });
    };
    items.iter().map(order_from_value).collect()
}

/// One of the account's trades (`GET /api/v3/myTrades`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTrade {
    /// Symbol.
    pub symbol: String,
    /// Trade id.
    pub id: i64,
    /// Order id.
    pub order_id: String,
    /// Price.
    pub price: Price,
    /// Quantity.
    pub qty: Qty,
    /// Quote amount.
    pub quote_qty: Qty,
    /// Fee.
    pub commission: Qty,
    /// Fee asset.
    pub commission_asset: String,
    /// Time, ms.
    pub time_ms: i64,
    /// True when the account bought.
    pub is_buyer: bool,
    /// True when the account's order was resting.
    pub is_maker: bool,
}

/// Parses `GET /api/v3/myTrades`.
pub fn parse_trades(body: &str) -> Result<Vec<AccountTrade>, WireError> {
    const W: &str = "trade list";
    let v: Value = serde_json::from_str(body).map_err(|e| WireError::Malformed {
        what: W,
        reason: e.to_string(),
    })?;
    let Value::Array(items) = v else {
        return Err(WireError::Malformed {
            what: W,
            reason: "expected a JSON array".into(),
        });
    };
    items
        .iter()
        .map(|t| {
            Ok(AccountTrade {
                symbol: t.get("symbol").and_then(Value::as_str).unwrap_or("").into(),
                id: t.get("id").and_then(Value::as_i64).unwrap_or(-1),
                order_id: id_text(t.get("orderId")).unwrap_or_default(),
                price: dec(W, "price", t.get("price"), Price::parse, Price::ZERO)?,
                qty: dec(W, "qty", t.get("qty"), Qty::parse, Qty::ZERO)?,
                quote_qty: dec(W, "quoteQty", t.get("quoteQty"), Qty::parse, Qty::ZERO)?,
                commission: dec(W, "commission", t.get("commission"), Qty::parse, Qty::ZERO)?,
                commission_asset: t
                    .get("commissionAsset")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                time_ms: t.get("time").and_then(Value::as_i64).unwrap_or(0),
                is_buyer: t.get("isBuyer").and_then(Value::as_bool).unwrap_or(false),
                is_maker: t.get("isMaker").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect()
}

/// One asset's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetBalance {
    /// Asset.
    pub asset: String,
    /// Free amount.
    pub free: Qty,
    /// Locked amount.
    pub locked: Qty,
}

/// Parses `GET /api/v3/account` into balances.
pub fn parse_account(body: &str) -> Result<Vec<AssetBalance>, WireError> {
    const W: &str = "account";
    let v = object(W, body)?;
    let Some(Value::Array(items)) = v.get("balances") else {
        return Err(WireError::Malformed {
            what: W,
            reason: "missing balances".into(),
        });
    };
    items
        .iter()
        .map(|b| {
            Ok(AssetBalance {
                asset: b.get("asset").and_then(Value::as_str).unwrap_or("").into(),
                free: dec(W, "free", b.get("free"), Qty::parse, Qty::ZERO)?,
                locked: dec(W, "locked", b.get("locked"), Qty::parse, Qty::ZERO)?,
            })
        })
        .collect()
}

/// An `executionReport` of the user-data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    /// Event time, ms.
    pub event_ms: i64,
    /// Symbol.
    pub symbol: String,
    /// Client id of the order concerned (`C` for cancels, `c` otherwise).
    pub client_order_id: String,
    /// Side.
    pub side: Side,
    /// Order type text.
    pub kind: String,
    /// Execution type text (`NEW`, `TRADE`, `CANCELED`, `EXPIRED`, `REJECTED`, ...).
    pub exec_type: String,
    /// Order status after the event.
    pub status: OrderState,
    /// Exchange order id.
    pub order_id: String,
    /// Order quantity.
    pub qty: Qty,
    /// Order limit price.
    pub price: Price,
    /// Quantity of this fill.
    pub last_qty: Qty,
    /// Price of this fill.
    pub last_price: Price,
    /// Cumulative filled quantity.
    pub cum_qty: Qty,
    /// Cumulative quote amount.
    pub cum_quote: Qty,
    /// Fee of this fill.
    pub commission: Qty,
    /// Fee asset, when charged.
    pub commission_asset: Option<String>,
    /// Trade id, -1 when not a fill.
    pub trade_id: i64,
    /// Fill was on the maker side.
    pub maker: bool,
    /// Transaction time, ms.
    pub time_ms: i64,
}

/// A user-data stream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserStreamEvent {
    /// Order update (boxed: it is much larger than the other variants).
    Execution(Box<ExecutionReport>),
    /// Changed balances.
    Balances(Vec<AssetBalance>),
    /// The listen key expired: the stream must be reopened.
    ListenKeyExpired,
    /// A type this client ignores (kept by name for counting).
    Other(String),
}

/// Parses one user-data stream frame (bare or wrapped in `{"event": ...}`).
pub fn parse_user_event(text: &str) -> Result<UserStreamEvent, WireError> {
    const W: &str = "user-data event";
    let mut v = object(W, text)?;
    if let Some(inner) = v.get_mut("event") {
        v = inner.take();
    }
    let e = v.get("e").and_then(Value::as_str).unwrap_or("").to_string();
    match e.as_str() {
        "executionReport" => {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let exec_type = s("x");
            let orig = s("C");
            let client_order_id = if exec_type == "CANCELED" && !orig.is_empty() {
                orig
            } else {
                s("c")
            };
            let status_text = s("X");
            Ok(UserStreamEvent::Execution(Box::new(ExecutionReport {
                event_ms: v.get("E").and_then(Value::as_i64).unwrap_or(0),
                symbol: s("s"),
                client_order_id,
                side: side_of(W, v.get("S"))?.ok_or_else(|| WireError::Malformed {
                    what: W,
                    reason: "missing side".into(),
                })?,
                kind: s("o"),
                exec_type,
                status: OrderState::parse(&status_text).ok_or(WireError::BadEnum {
                    what: W,
                    field: "X",
                    value: status_text,
                })?,
                order_id: id_text(v.get("i")).unwrap_or_default(),
                qty: dec(W, "q", v.get("q"), Qty::parse, Qty::ZERO)?,
                price: dec(W, "p", v.get("p"), Price::parse, Price::ZERO)?,
                last_qty: dec(W, "l", v.get("l"), Qty::parse, Qty::ZERO)?,
                last_price: dec(W, "L", v.get("L"), Price::parse, Price::ZERO)?,
                cum_qty: dec(W, "z", v.get("z"), Qty::parse, Qty::ZERO)?,
                cum_quote: dec(W, "Z", v.get("Z"), Qty::parse, Qty::ZERO)?,
                commission: dec(W, "n", v.get("n"), Qty::parse, Qty::ZERO)?,
                commission_asset: v.get("N").and_then(Value::as_str).map(str::to_string),
                trade_id: v.get("t").and_then(Value::as_i64).unwrap_or(-1),
                maker: v.get("m").and_then(Value::as_bool).unwrap_or(false),
                time_ms: v.get("T").and_then(Value::as_i64).unwrap_or(0),
            })))
        }
        "outboundAccountPosition" => {
            let Some(Value::Array(items)) = v.get("B") else {
                return Err(WireError::Malformed {
                    what: W,
                    reason: "outboundAccountPosition without B".into(),
                });
            };
            items
                .iter()
                .map(|b| {
                    Ok(AssetBalance {
                        asset: b.get("a").and_then(Value::as_str).unwrap_or("").into(),
                        free: dec(W, "f", b.get("f"), Qty::parse, Qty::ZERO)?,
                        locked: dec(W, "l", b.get("l"), Qty::parse, Qty::ZERO)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(UserStreamEvent::Balances)
        }
        "listenKeyExpired" => Ok(UserStreamEvent::ListenKeyExpired),
        _ => Ok(UserStreamEvent::Other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_execution_report() {
        let t = r#"{"e":"executionReport","E":1499405658658,"s":"ETHBTC","c":"mUvoqJxFIILMdfAW5iGSOW","S":"BUY",
 "o":"LIMIT","f":"GTC","q":"1.00000000","p":"0.10264410","P":"0.00000000","F":"0.00000000",
 "g":-1,"C":"","x":"NEW","X":"NEW","r":"NONE","i":4293153,"l":"0.00000000","z":"0.00000000",
 "L":"0.00000000","n":"0","N":null,"T":1499405658657,"t":-1,"v":3,"I":8641984,"w":true,
 "m":false,"M":false,"O":1499405658657,"Z":"0.00000000","Y":"0.00000000","Q":"0.00000000",
 "W":1499405658657,"V":"NONE"}"#;
        let UserStreamEvent::Execution(r) = parse_user_event(t).unwrap() else {
            panic!("not an execution report")
        };
        assert_eq!(r.client_order_id, "mUvoqJxFIILMdfAW5iGSOW");
        assert_eq!(r.order_id, "4293153");
        assert_eq!(r.price, Price::parse("0.10264410").unwrap());
        assert_eq!(r.status, OrderState::New);
        assert_eq!(r.trade_id, -1);
        assert_eq!(r.commission_asset, None);
    }

    #[test]
    fn cancel_reports_name_the_original_client_id() {
        let t = r#"{"event":{"e":"executionReport","E":1,"s":"ETHUSDT","c":"cxl-9","C":"mine-1","S":"SELL","o":"LIMIT",
            "q":"1","p":"3000","x":"CANCELED","X":"CANCELED","i":"77","l":"0","z":"0","L":"0","n":"0","t":-1,"T":2}}"#;
        let UserStreamEvent::Execution(r) = parse_user_event(t).unwrap() else {
            panic!("not an execution report")
        };
        assert_eq!(r.client_order_id, "mine-1");
        assert_eq!(r.status, OrderState::Canceled);
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        assert!(matches!(
            parse_order("not json"),
            Err(WireError::Malformed { .. })
        ));
        let e = parse_order(r#"{"symbol":"X","orderId":1,"price":"1.2.3"}"#).unwrap_err();
        assert!(matches!(e, WireError::BadDecimal { field: "price", .. }));
        let e = parse_user_event(r#"{"e":"executionReport","S":"UP","X":"NEW"}"#).unwrap_err();
        assert!(matches!(e, WireError::BadEnum { field: "side", .. }));
        assert_eq!(
            parse_user_event(r#"{"e":"balanceUpdate"}"#).unwrap(),
            UserStreamEvent::Other("balanceUpdate".into())
        );
    }

    #[test]
    fn parses_an_oco_reply_into_its_legs() {
        let b = r#"{"orderListId":1,"contingencyType":"OCO","listStatusType":"EXEC_STARTED",
          "listOrderStatus":"EXECUTING","listClientOrderId":"l-1","transactionTime":1710485608839,
          "symbol":"ETHUSDT","orders":[{"symbol":"ETHUSDT","orderId":10,"clientOrderId":"e-t"},
          {"symbol":"ETHUSDT","orderId":11,"clientOrderId":"e-s"}],
          "orderReports":[{"symbol":"ETHUSDT","orderId":10,"orderListId":1,"clientOrderId":"e-t",
          "transactTime":1710485608839,"price":"0.00000000","origQty":"0.50000000",
          "executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"NEW",
          "timeInForce":"GTC","type":"TAKE_PROFIT","side":"SELL","stopPrice":"3300.00000000"},
          {"symbol":"ETHUSDT","orderId":11,"orderListId":1,"clientOrderId":"e-s",
          "transactTime":1710485608839,"price":"0.00000000","origQty":"0.50000000",
          "executedQty":"0.00000000","cummulativeQuoteQty":"0.00000000","status":"NEW",
          "timeInForce":"GTC","type":"STOP_LOSS","side":"SELL","stopPrice":"2900.00000000"}]}"#;
        let legs = parse_order_list(b).unwrap();
        assert_eq!(legs.len(), 2);
        assert_eq!(
            (legs[0].client_order_id.as_str(), legs[0].kind.as_str()),
            ("e-t", "TAKE_PROFIT")
        );
        assert_eq!(legs[1].order_id, "11");
        assert_eq!(legs[1].status, Some(OrderState::New));
        assert!(matches!(
            parse_order_list(r#"{"orderListId":1}"#),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn parses_full_order_reply_and_mexc_string_ids() {
        let b = r#"{"symbol":"BTCUSDT","orderId":28,"orderListId":-1,"clientOrderId":"6gCrw2kRUAF9CvJDGP16IP",
          "transactTime":1507725176595,"price":"0.00000000","origQty":"10.00000000","executedQty":"10.00000000",
          "cummulativeQuoteQty":"10.00000000","status":"FILLED","timeInForce":"GTC","type":"MARKET","side":"SELL",
          "fills":[{"price":"4000.00000000","qty":"1.00000000","commission":"4.00000000","commissionAsset":"USDT","tradeId":56}]}"#;
        let o = parse_order(b).unwrap();
        assert_eq!(o.order_id, "28");
        assert_eq!(o.status, Some(OrderState::Filled));
        assert_eq!(o.fills[0].trade_id, 56);
        assert_eq!(o.fills[0].commission, Qty::parse("4").unwrap());
        let m = r#"{"symbol":"MXUSDT","orderId":"06a480e69e604477bfb48dddd5f0b750","orderListId":-1,
          "price":"0.1","origQty":"50","type":"LIMIT","side":"BUY","transactTime":1666676533741}"#;
        let o = parse_order(m).unwrap();
        assert_eq!(o.order_id, "06a480e69e604477bfb48dddd5f0b750");
        assert_eq!(o.status, None);
    }
}
