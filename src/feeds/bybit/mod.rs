//! Bybit public websocket: v5 (`orderbook.<depth>.<symbol>` snapshot/delta with update id `u`,
//! `u == 1` meaning a restart snapshot; `publicTrade`) for live use, and the legacy v2 feeds
//! recordings are made of (`orderBookL2_25` with delete/update/insert lists, `trade`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil::{self, rfc3339_ms, text_of};
use super::normalized::{
    BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange, hash_id,
};
use super::venue::{BookRules, Frame, Keepalive, VenueError, VenueProtocol};
use crate::market::types::{Level, Qty, Side, Trade};

/// Bybit protocol state.
#[derive(Debug, Clone)]
pub struct BybitProtocol {
    /// Book depth subscribed (v5: 1, 50, 200 or 1000 on spot).
    pub depth: usize,
    next_id: u64,
}

impl Default for BybitProtocol {
    fn default() -> Self {
        Self {
            depth: 50,
            next_id: 0,
        }
    }
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    topic: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    op: Option<&'a str>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    ret_msg: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct V5Book<'a> {
    s: String,
    #[serde(borrow, default)]
    b: Vec<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    a: Vec<Vec<&'a RawValue>>,
    u: u64,
}

#[derive(Deserialize)]
struct V5Trade<'a> {
    #[serde(rename = "T")]
    time: i64,
    s: String,
    #[serde(rename = "S")]
    side: &'a str,
    #[serde(borrow)]
    v: &'a RawValue,
    #[serde(borrow)]
    p: &'a RawValue,
    #[serde(borrow)]
    i: &'a RawValue,
}

#[derive(Deserialize)]
struct LegacyLevel<'a> {
    #[serde(borrow)]
    price: &'a RawValue,
    side: &'a str,
    #[serde(borrow, default)]
    size: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LegacyDelta<'a> {
    #[serde(borrow, default)]
    delete: Vec<LegacyLevel<'a>>,
    #[serde(borrow, default)]
    update: Vec<LegacyLevel<'a>>,
    #[serde(borrow, default)]
    insert: Vec<LegacyLevel<'a>>,
}

#[derive(Deserialize)]
struct LegacySnapshot<'a> {
    #[serde(borrow)]
    order_book: Vec<LegacyLevel<'a>>,
}

#[derive(Deserialize)]
struct LegacyTrade<'a> {
    #[serde(borrow)]
    trade_time_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
    symbol: String,
    side: &'a str,
    #[serde(borrow)]
    size: &'a RawValue,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    trade_id: &'a RawValue,
}

fn instrument_of(s: &str) -> Result<String, VenueError> {
    canonical_from_exchange(s).ok_or_else(|| VenueError::UnknownChannel(s.to_string()))
}

fn side_of(s: &str) -> Result<Side, VenueError> {
    match s {
        "Buy" => Ok(Side::Buy),
        "Sell" => Ok(Side::Sell),
        _ => Err(VenueError::Field("side")),
    }
}

fn legacy_levels(
    d: &mut BookData,
    rows: &[LegacyLevel<'_>],
    delete: bool,
) -> Result<(), VenueError> {
    for r in rows {
        let price = super::normalized::price(r.price.get().as_bytes())
            .map_err(VenueError::number("price"))?;
        let qty = if delete {
            Qty::ZERO
        } else {
            let size = r.size.ok_or(VenueError::Field("size"))?;
            super::normalized::qty(size.get().as_bytes(), Rounding::HalfEven)
                .map_err(VenueError::number("size"))?
        };
        let l = Level { price, qty };
        match side_of(r.side)? {
            Side::Buy => d.bids.push(l),
            Side::Sell => d.asks.push(l),
        }
    }
    Ok(())
}

impl BybitProtocol {
    fn v5_book(
        &self,
        m: &Msg<'_>,
        data: &RawValue,
        out: &mut Vec<NormEvent>,
    ) -> Result<(), VenueError> {
        let b: V5Book = jsonutil::from_str(data.get())?;
        let mut d = BookData::new(instrument_of(&b.s)?, SeqInfo::Single(b.u));
        d.bids = jsonutil::levels(&b.b, Rounding::HalfEven)?;
        d.asks = jsonutil::levels(&b.a, Rounding::HalfEven)?;
        d.time_ms = m.ts;
        // u == 1: the service restarted; the message is a full image.
        out.push(if m.kind == Some("snapshot") || b.u == 1 {
            NormEvent::BookSnapshot(d)
        } else {
            NormEvent::BookDelta(d)
        });
        Ok(())
    }

    fn legacy_book(
        &self,
        topic: &str,
        m: &Msg<'_>,
        data: &RawValue,
        out: &mut Vec<NormEvent>,
    ) -> Result<(), VenueError> {
        let sym = topic.rsplit('.').next().unwrap_or_default();
        let mut d = BookData::new(instrument_of(sym)?, SeqInfo::None);
        if m.kind == Some("snapshot") {
            // USDT perps wrap the list in `order_book`; inverse feeds send the bare list.
            let rows: Vec<LegacyLevel> = if data.get().trim_start().starts_with('[') {
                jsonutil::from_str(data.get())?
            } else {
                jsonutil::from_str::<LegacySnapshot>(data.get())?.order_book
            };
            legacy_levels(&mut d, &rows, false)?;
            out.push(NormEvent::BookSnapshot(d));
        } else {
            let delta: LegacyDelta = jsonutil::from_str(data.get())?;
            legacy_levels(&mut d, &delta.delete, true)?;
            legacy_levels(&mut d, &delta.update, false)?;
            legacy_levels(&mut d, &delta.insert, false)?;
            out.push(NormEvent::BookDelta(d));
        }
        Ok(())
    }
}

impl VenueProtocol for BybitProtocol {
    fn venue(&self) -> Venue {
        Venue::Bybit
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "")
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        let mut args = Vec::new();
        for i in instruments {
            let s = self.exchange_symbol(i);
            args.push(format!("orderbook.{}.{s}", self.depth));
            args.push(format!("publicTrade.{s}"));
        }
        // Spot allows 10 args per subscribe request.
        args.chunks(10)
            .map(|c| {
                self.next_id += 1;
                serde_json::json!({"req_id": format!("sub-{}", self.next_id), "op": "subscribe", "args": c}).to_string()
            })
            .collect()
    }

    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        let topic = format!(
            "orderbook.{}.{}",
            self.depth,
            self.exchange_symbol(instrument)
        );
        vec![
            serde_json::json!({"op":"unsubscribe","args":[topic]}).to_string(),
            serde_json::json!({"op":"subscribe","args":[topic]}).to_string(),
        ]
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        if text.trim() == "pong" {
            out.push(NormEvent::Pong);
            return Ok(());
        }
        let m: Msg = jsonutil::from_str(text)?;
        let Some(topic) = m.topic else {
            if m.success == Some(false) {
                return Err(VenueError::Exchange(
                    m.ret_msg.unwrap_or_default().to_string(),
                ));
            }
            out.push(if m.op == Some("pong") || m.ret_msg == Some("pong") {
                NormEvent::Pong
            } else {
                NormEvent::Control("ack")
            });
            return Ok(());
        };
        let data = m.data.ok_or(VenueError::Field("data"))?;
        if topic.starts_with("orderbook.") {
            self.v5_book(&m, data, out)?;
        } else if topic.starts_with("orderBookL2") {
            self.legacy_book(topic, &m, data, out)?;
        } else if topic.starts_with("publicTrade.") {
            let trades: Vec<V5Trade> = jsonutil::from_str(data.get())?;
            for t in trades {
                let l = jsonutil::level(t.p, t.v, Rounding::HalfEven)?;
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument_of(&t.s)?,
                    id: hash_id(text_of(t.i)),
                    time_ms: t.time,
                    price: l.price,
                    qty: l.qty,
                    taker_side: side_of(t.side)?,
                }));
            }
        } else if topic.starts_with("trade.") {
            let trades: Vec<LegacyTrade> = jsonutil::from_str(data.get())?;
            for t in trades {
                let l = jsonutil::level(t.price, t.size, Rounding::HalfEven)?;
                let time_ms = match t.trade_time_ms {
                    Some(v) => text_of(v)
                        .parse()
                        .map_err(|_| VenueError::Field("trade_time_ms"))?,
                    None => t
                        .timestamp
                        .and_then(rfc3339_ms)
                        .ok_or(VenueError::Field("timestamp"))?,
                };
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument_of(&t.symbol)?,
                    id: hash_id(text_of(t.trade_id)),
                    time_ms,
                    price: l.price,
                    qty: l.qty,
                    taker_side: side_of(t.side)?,
                }));
            }
        } else {
            out.push(NormEvent::Unsupported("other_topic"));
        }
        Ok(())
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(20),
            message: Some(r#"{"op":"ping"}"#.to_string()),
        }
    }

    fn book_rules(&self) -> BookRules {
        BookRules::default()
    }
}
