//! The MEXC spot websocket protocol: subscriptions, `{"method":"PING"}` keepalive, protobuf
//! pushes decoded into normalized events, and the REST depth snapshot.

use std::time::Duration;

use prost::Message;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::proto::{Body, DealItem, DepthItem, PushDataV3ApiWrapper};
use crate::feeds::jsonutil;
use crate::feeds::normalized::{
    BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange, hash_id, price, qty,
};
use crate::feeds::venue::{BookRules, Frame, Keepalive, SnapshotSource, VenueError, VenueProtocol};
use crate::market::types::{Level, Side, Trade};

/// MEXC spot protocol state.
#[derive(Debug, Clone)]
pub struct MexcProtocol {
    /// Push interval in channel names (`100ms` or `10ms`).
    pub interval: &'static str,
    /// Levels requested in the REST snapshot.
    pub snapshot_limit: u32,
}

impl Default for MexcProtocol {
    fn default() -> Self {
        Self {
            interval: "100ms",
            snapshot_limit: 1000,
        }
    }
}

#[derive(Deserialize)]
struct ControlReply<'a> {
    #[serde(default)]
    code: Option<i64>,
    #[serde(borrow, default)]
    msg: Option<&'a str>,
    /// The retired JSON API's pushes carry `channel` or `c` and `data`/`d`.
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(borrow, default)]
    c: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RestDepth<'a> {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
    #[serde(borrow)]
    bids: Vec<Vec<&'a RawValue>>,
    #[serde(borrow)]
    asks: Vec<Vec<&'a RawValue>>,
}

fn levels(items: &[DepthItem]) -> Result<Vec<Level>, VenueError> {
    items
        .iter()
        .map(|i| {
            Ok(Level {
                price: price(i.price.as_bytes()).map_err(VenueError::number("price"))?,
                qty: qty(i.quantity.as_bytes(), Rounding::HalfEven)
                    .map_err(VenueError::number("quantity"))?,
            })
        })
        .collect()
}

fn version(text: &str, field: &'static str) -> Result<u64, VenueError> {
    text.trim().parse().map_err(|_| VenueError::Field(field))
}

fn trade(instrument: &str, d: &DealItem) -> Result<Trade, VenueError> {
    let taker_side = match d.trade_type {
        1 => Side::Buy,
        2 => Side::Sell,
        _ => return Err(VenueError::Field("tradeType")),
    };
    let price = price(d.price.as_bytes()).map_err(VenueError::number("price"))?;
    let qty =
        qty(d.quantity.as_bytes(), Rounding::HalfEven).map_err(VenueError::number("quantity"))?;
    // Aggregated deals carry a string id; legacy deals none, so time/price/qty identify them.
    let id = if d.trade_id.is_empty() {
        hash_id(&format!(
            "{}:{}:{}:{}",
            d.time, d.price, d.quantity, d.trade_type
        ))
    } else {
        d.trade_id
            .parse::<u64>()
            .unwrap_or_else(|_| hash_id(&d.trade_id))
    };
    Ok(Trade {
        symbol: instrument.to_string(),
        id,
        time_ms: d.time,
        price,
        qty,
        taker_side,
    })
}

impl MexcProtocol {
    fn channels(&self, sym: &str) -> [String; 2] {
        [
            format!("spot@public.aggre.deals.v3.api.pb@{}@{sym}", self.interval),
            format!("spot@public.aggre.depth.v3.api.pb@{}@{sym}", self.interval),
        ]
    }

    fn parse_binary(&self, bytes: &[u8], out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let w =
            PushDataV3ApiWrapper::decode(bytes).map_err(|e| VenueError::Protobuf(e.to_string()))?;
        let sym = w
            .symbol
            .clone()
            .or_else(|| w.channel.rsplit('@').next().map(str::to_string))
            .unwrap_or_default();
        let instrument = canonical_from_exchange(&sym)
            .ok_or_else(|| VenueError::UnknownChannel(w.channel.clone()))?;
        match w.body {
            Some(Body::PublicAggreDeals(d)) => {
                for item in &d.deals {
                    out.push(NormEvent::Trade(trade(&instrument, item)?));
                }
            }
            Some(Body::PublicDeals(d)) => {
                for item in &d.deals {
                    out.push(NormEvent::Trade(trade(&instrument, item)?));
                }
            }
            Some(Body::PublicAggreDepths(d)) => {
                let mut b = BookData::new(
                    instrument,
                    SeqInfo::Range {
                        first: version(&d.from_version, "fromVersion")?,
                        last: version(&d.to_version, "toVersion")?,
                    },
                );
                b.bids = levels(&d.bids)?;
                b.asks = levels(&d.asks)?;
                b.time_ms = w.send_time.or(w.create_time);
                out.push(NormEvent::BookDelta(b));
            }
            Some(Body::PublicIncreaseDepths(d)) => {
                let v = version(&d.version, "version")?;
                let mut b = BookData::new(instrument, SeqInfo::Range { first: v, last: v });
                b.bids = levels(&d.bids)?;
                b.asks = levels(&d.asks)?;
                out.push(NormEvent::BookDelta(b));
            }
            Some(Body::PublicLimitDepths(_)) => out.push(NormEvent::Unsupported("limit_depth")),
            None => out.push(NormEvent::Unsupported("other_push")),
        }
        Ok(())
    }
}

impl VenueProtocol for MexcProtocol {
    fn venue(&self) -> Venue {
        Venue::Mexc
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "").to_ascii_uppercase()
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        // MEXC allows 30 subscriptions per connection; one message per instrument keeps
        // every message small.
        instruments
            .iter()
            .map(|i| {
                let params = self.channels(&self.exchange_symbol(i));
                serde_json::json!({"method": "SUBSCRIPTION", "params": params}).to_string()
            })
            .collect()
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        match frame {
            Frame::Binary(b) => self.parse_binary(b, out),
            Frame::Text(t) => {
                if t.trim_start().starts_with('[') {
                    // The retired JSON API's `["push.symbol", {...}]` form.
                    out.push(NormEvent::Unsupported("legacy_json_push"));
                    return Ok(());
                }
                let r: ControlReply = jsonutil::from_str(t)?;
                if r.channel.is_some() || r.c.is_some() || r.data.is_some() {
                    // The JSON API retired in 2025 (push.deal, push.depth, …).
                    out.push(NormEvent::Unsupported("legacy_json_push"));
                    return Ok(());
                }
                match (r.code, r.msg) {
                    (Some(0), Some("PONG")) => out.push(NormEvent::Pong),
                    (Some(0), Some(_)) => out.push(NormEvent::Control("subscribed")),
                    (Some(_), msg) => {
                        return Err(VenueError::Exchange(msg.unwrap_or_default().to_string()));
                    }
                    (None, _) => out.push(NormEvent::Unsupported("legacy_json_push")),
                }
                Ok(())
            }
        }
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(20),
            message: Some(r#"{"method":"PING"}"#.to_string()),
        }
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            snapshot: SnapshotSource::Rest,
            ..BookRules::default()
        }
    }

    fn snapshot_url(&self, rest_base: &str, instrument: &str) -> Option<String> {
        Some(crate::feeds::binance::protocol::spot_depth_url(
            rest_base,
            &self.exchange_symbol(instrument),
            self.snapshot_limit,
        ))
    }

    fn parse_snapshot(&self, instrument: &str, body: &str) -> Result<BookData, VenueError> {
        let d: RestDepth = jsonutil::from_str(body)?;
        let mut b = BookData::new(instrument, SeqInfo::Single(d.last_update_id));
        b.bids = jsonutil::levels(&d.bids, Rounding::HalfEven)?;
        b.asks = jsonutil::levels(&d.asks, Rounding::HalfEven)?;
        Ok(b)
    }
}

/// Encodes a push (the loopback test server and fuzz seeds use it).
pub fn encode_push(symbol: &str, channel: &str, body: Body, send_time: i64) -> Vec<u8> {
    PushDataV3ApiWrapper {
        channel: channel.to_string(),
        symbol: Some(symbol.to_string()),
        symbol_id: None,
        create_time: Some(send_time),
        send_time: Some(send_time),
        body: Some(body),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::proto::{PublicAggreDeals, PublicAggreDepths};
    use super::*;
    use crate::market::types::{Price, Qty};

    fn item(p: &str, q: &str) -> DepthItem {
        DepthItem {
            price: p.into(),
            quantity: q.into(),
        }
    }

    #[test]
    fn decodes_deals_depth_and_control() {
        let mut p = MexcProtocol::default();
        let mut out = Vec::new();
        let deals = encode_push(
            "ETHUSDT",
            "spot@public.aggre.deals.v3.api.pb@100ms@ETHUSDT",
            Body::PublicAggreDeals(PublicAggreDeals {
                deals: vec![DealItem {
                    price: "2500.5".into(),
                    quantity: "0.1".into(),
                    trade_type: 2,
                    time: 1_700_000_000_000,
                    trade_id: "12345".into(),
                }],
                event_type: "spot@public.aggre.deals.v3.api.pb@100ms".into(),
            }),
            1,
        );
        p.parse(Frame::Binary(&deals), &mut out).unwrap();
        let NormEvent::Trade(t) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(t.symbol, "ETH/USDT");
        assert_eq!((t.id, t.taker_side), (12345, Side::Sell));
        assert_eq!(t.price, Price::parse("2500.5").unwrap());
        let depth = encode_push(
            "ETHUSDT",
            "spot@public.aggre.depth.v3.api.pb@100ms@ETHUSDT",
            Body::PublicAggreDepths(PublicAggreDepths {
                asks: vec![item("2501", "0")],
                bids: vec![item("2500", "3.5")],
                event_type: String::new(),
                from_version: "10".into(),
                to_version: "12".into(),
            }),
            1,
        );
        out.clear();
        p.parse(Frame::Binary(&depth), &mut out).unwrap();
        let NormEvent::BookDelta(d) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            d.seq,
            SeqInfo::Range {
                first: 10,
                last: 12
            }
        );
        assert_eq!(d.bids[0].qty, Qty::parse("3.5").unwrap());
        out.clear();
        p.parse(Frame::Text(r#"{"id":0,"code":0,"msg":"PONG"}"#), &mut out)
            .unwrap();
        assert_eq!(out, [NormEvent::Pong]);
        assert!(matches!(
            p.parse(Frame::Text(r#"{"id":0,"code":1,"msg":"bad"}"#), &mut out),
            Err(VenueError::Exchange(_))
        ));
        assert!(matches!(
            p.parse(Frame::Binary(b"\xff\xff\xff"), &mut out),
            Err(VenueError::Protobuf(_))
        ));
        let snap = p
            .parse_snapshot(
                "ETH/USDT",
                r#"{"lastUpdateId":11,"bids":[["2500","1"]],"asks":[["2501","2"]]}"#,
            )
            .unwrap();
        assert_eq!(snap.seq, SeqInfo::Single(11));
        assert_eq!(p.subscribe(&["ETH/USDT".into()]).len(), 1);
    }

    #[test]
    fn recorded_legacy_json_messages_are_typed_unsupported() {
        let text = std::fs::read_to_string(crate::testdata::require(
            "exchange_raw/crypto_msg_parser/raw_messages.jsonl",
        ))
        .unwrap();
        let mut p = MexcProtocol::default();
        let mut n = 0;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["exchange"] != "mexc" {
                continue;
            }
            let raw = v["raw_msg"].as_str().unwrap();
            let mut out = Vec::new();
            p.parse(Frame::Text(raw), &mut out).unwrap();
            assert_eq!(out, [NormEvent::Unsupported("legacy_json_push")], "{raw}");
            n += 1;
        }
        assert_eq!(n, 24);
    }
}
