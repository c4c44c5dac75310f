//! Kraken spot websocket: v2 (current; JSON objects, prices as JSON numbers) for live use, and
//! the frozen v1 array format recordings are made of; both with the CRC32 top-10 checksum.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil::{self, rfc3339_ms, seconds_text_ms, text_of};
use super::normalized::{
    BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange, hash_id,
    written_decimals,
};
use super::venue::{BookRules, ChecksumKind, Frame, Keepalive, VenueError, VenueProtocol};
use crate::market::types::{Level, Side, Trade};

/// Kraken protocol state.
#[derive(Debug, Clone)]
pub struct KrakenProtocol {
    /// Subscribed book depth (the local book is truncated to it, as Kraken requires).
    pub depth: usize,
    /// Price and quantity decimals per canonical pair, from the v2 `instrument` channel.
    precision: HashMap<String, (u32, u32)>,
    req_id: u64,
}

impl Default for KrakenProtocol {
    fn default() -> Self {
        Self {
            depth: 1000,
            precision: HashMap::new(),
            req_id: 0,
        }
    }
}

fn level_v1(row: &[&RawValue]) -> Result<(Level, u32, u32), VenueError> {
    match row {
        [p, q, ..] => {
            let l = jsonutil::level(p, q, Rounding::Exact)?;
            Ok((
                l,
                written_decimals(p.get().as_bytes()),
                written_decimals(q.get().as_bytes()),
            ))
        }
        _ => Err(VenueError::Field("book level [price, volume, time]")),
    }
}

#[derive(Deserialize)]
struct V1Book<'a> {
    #[serde(borrow, default)]
    a: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    b: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default, rename = "as")]
    snap_a: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default, rename = "bs")]
    snap_b: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    c: Option<&'a str>,
}

#[derive(Deserialize)]
struct V2Msg<'a> {
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(borrow, default)]
    error: Option<&'a str>,
    #[serde(borrow, default)]
    event: Option<&'a str>,
    #[serde(borrow, default)]
    status: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct V2Level<'a> {
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    qty: &'a RawValue,
}

#[derive(Deserialize)]
struct V2Book<'a> {
    symbol: String,
    #[serde(borrow, default)]
    bids: Vec<V2Level<'a>>,
    #[serde(borrow, default)]
    asks: Vec<V2Level<'a>>,
    #[serde(default)]
    checksum: Option<u32>,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
}

#[derive(Deserialize)]
struct V2Trade<'a> {
    symbol: String,
    side: &'a str,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    qty: &'a RawValue,
    trade_id: u64,
    timestamp: &'a str,
}

#[derive(Deserialize)]
struct V2Pair {
    symbol: String,
    price_precision: u32,
    qty_precision: u32,
}

#[derive(Deserialize)]
struct V2Instruments {
    #[serde(default)]
    pairs: Vec<V2Pair>,
}

fn instrument_of(pair: &str) -> Result<String, VenueError> {
    canonical_from_exchange(pair).ok_or_else(|| VenueError::UnknownChannel(pair.to_string()))
}

fn side_of(s: &str) -> Result<Side, VenueError> {
    match s {
        "b" | "buy" => Ok(Side::Buy),
        "s" | "sell" => Ok(Side::Sell),
        _ => Err(VenueError::Field("side")),
    }
}

impl KrakenProtocol {
    fn parse_v1(&mut self, text: &str, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let arr: Vec<&RawValue> = jsonutil::from_str(text)?;
        if arr.len() < 4 {
            return Err(VenueError::Field(
                "v1 channel message [id, data.., name, pair]",
            ));
        }
        let name = text_of(arr[arr.len() - 2]);
        let pair = text_of(arr[arr.len() - 1]);
        let instrument = instrument_of(pair)?;
        let body = &arr[1..arr.len() - 2];
        if name == "trade" {
            let rows: Vec<Vec<&RawValue>> = jsonutil::from_str(body[0].get())?;
            for r in rows {
                let [p, v, t, side, ..] = r.as_slice() else {
                    return Err(VenueError::Field("trade [price, volume, time, side]"));
                };
                let l = jsonutil::level(p, v, Rounding::Exact)?;
                let time_ms = seconds_text_ms(text_of(t)).ok_or(VenueError::Field("trade time"))?;
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument.clone(),
                    id: hash_id(&format!(
                        "{pair}:{}:{}:{}",
                        text_of(t),
                        text_of(p),
                        text_of(v)
                    )),
                    time_ms,
                    price: l.price,
                    qty: l.qty,
                    taker_side: side_of(text_of(side))?,
                }));
            }
            return Ok(());
        }
        if !name.starts_with("book") {
            out.push(NormEvent::Unsupported(if name == "ticker" {
                "ticker"
            } else {
                "other_channel"
            }));
            return Ok(());
        }
        let mut data = BookData::new(instrument, SeqInfo::None);
        let (mut pd, mut qd) = (0u32, 0u32);
        let mut snapshot = false;
        for part in body {
            let b: V1Book = jsonutil::from_str(part.get())?;
            snapshot |= b.snap_a.is_some() || b.snap_b.is_some();
            for (rows, side) in [
                (b.a.or(b.snap_a), Side::Sell),
                (b.b.or(b.snap_b), Side::Buy),
            ] {
                for r in rows.unwrap_or_default() {
                    let (l, p, q) = level_v1(&r)?;
                    pd = pd.max(p);
                    qd = qd.max(q);
                    match side {
                        Side::Buy => data.bids.push(l),
                        Side::Sell => data.asks.push(l),
                    }
                }
            }
            if let Some(c) = b.c {
                data.checksum = Some(c.parse().map_err(|_| VenueError::Field("c"))?);
            }
        }
        if pd > 0 || qd > 0 {
            data.decimals = Some((pd, qd));
        }
        out.push(if snapshot {
            NormEvent::BookSnapshot(data)
        } else {
            NormEvent::BookDelta(data)
        });
        Ok(())
    }

    fn parse_v2(&mut self, m: V2Msg<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        if let Some(event) = m.event {
            // v1 events: systemStatus, subscriptionStatus, heartbeat, pong.
            match event {
                "pong" => out.push(NormEvent::Pong),
                "heartbeat" => out.push(NormEvent::Control("heartbeat")),
                "subscriptionStatus" if m.status == Some("error") => {
                    return Err(VenueError::Exchange(
                        m.error.unwrap_or("subscription error").into(),
                    ));
                }
                _ => out.push(NormEvent::Control("event")),
            }
            return Ok(());
        }
        if let Some(method) = m.method {
            if m.success == Some(false) {
                return Err(VenueError::Exchange(
                    m.error.unwrap_or("request failed").into(),
                ));
            }
            out.push(if method == "pong" {
                NormEvent::Pong
            } else {
                NormEvent::Control("ack")
            });
            return Ok(());
        }
        let channel = m.channel.unwrap_or_default();
        if matches!(channel, "heartbeat" | "status") {
            out.push(NormEvent::Control("heartbeat"));
            return Ok(());
        }
        let data = m.data.ok_or(VenueError::Field("data"))?;
        match channel {
            "book" => {
                let books: Vec<V2Book> = jsonutil::from_str(data.get())?;
                for b in books {
                    let instrument = instrument_of(&b.symbol)?;
                    let mut d = BookData::new(instrument.clone(), SeqInfo::None);
                    for (rows, dst) in [(&b.bids, &mut d.bids), (&b.asks, &mut d.asks)] {
                        for l in rows {
                            dst.push(jsonutil::level(l.price, l.qty, Rounding::Exact)?);
                        }
                    }
                    d.checksum = b.checksum;
                    d.decimals = self.precision.get(&instrument).copied();
                    d.time_ms = b.timestamp.and_then(rfc3339_ms);
                    out.push(if m.kind == Some("snapshot") {
                        NormEvent::BookSnapshot(d)
                    } else {
                        NormEvent::BookDelta(d)
                    });
                }
            }
            "trade" => {
                let trades: Vec<V2Trade> = jsonutil::from_str(data.get())?;
                for t in trades {
                    let l = jsonutil::level(t.price, t.qty, Rounding::Exact)?;
                    out.push(NormEvent::Trade(Trade {
                        symbol: instrument_of(&t.symbol)?,
                        id: t.trade_id,
                        time_ms: rfc3339_ms(t.timestamp).ok_or(VenueError::Field("timestamp"))?,
                        price: l.price,
                        qty: l.qty,
                        taker_side: side_of(t.side)?,
                    }));
                }
            }
            "instrument" => {
                let inst: V2Instruments = jsonutil::from_str(data.get())?;
                for p in inst.pairs {
                    if let Some(id) = canonical_from_exchange(&p.symbol) {
                        self.precision
                            .insert(id, (p.price_precision, p.qty_precision));
                    }
                }
                out.push(NormEvent::Control("instrument"));
            }
            _ => out.push(NormEvent::Unsupported("other_channel")),
        }
        Ok(())
    }
}

impl VenueProtocol for KrakenProtocol {
    fn venue(&self) -> Venue {
        Venue::Kraken
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.to_string()
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        self.req_id += 1;
        let symbols: Vec<String> = instruments
            .iter()
            .map(|i| self.exchange_symbol(i))
            .collect();
        vec![
            // Precisions first: the checksum is written with them.
            serde_json::json!({"method":"subscribe","params":{"channel":"instrument"},"req_id":self.req_id}).to_string(),
            serde_json::json!({"method":"subscribe","params":{"channel":"book","symbol":symbols,"depth":self.depth,"snapshot":true},"req_id":self.req_id}).to_string(),
            serde_json::json!({"method":"subscribe","params":{"channel":"trade","symbol":symbols,"snapshot":false},"req_id":self.req_id}).to_string(),
        ]
    }

    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        let symbols = [self.exchange_symbol(instrument)];
        vec![
            serde_json::json!({"method":"unsubscribe","params":{"channel":"book","symbol":symbols,"depth":self.depth}}).to_string(),
            serde_json::json!({"method":"subscribe","params":{"channel":"book","symbol":symbols,"depth":self.depth,"snapshot":true}}).to_string(),
        ]
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        if text.trim_start().starts_with('[') {
            return self.parse_v1(text, out);
        }
        let m: V2Msg = jsonutil::from_str(text)?;
        self.parse_v2(m, out)
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(30),
            message: Some(r#"{"method":"ping"}"#.to_string()),
        }
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            checksum: ChecksumKind::KrakenTop10,
            depth_limit: Some(self.depth),
            ..BookRules::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::venue::VenueSession;
    use crate::market::types::{Price, Qty};

    /// v2 messages as documented: instrument precisions, book snapshot/update with checksum, trades.
    #[test]
    fn v2_book_checksum_trades_and_control() {
        let mut s = VenueSession::open(Box::new(KrakenProtocol::default()));
        let mut step = crate::feeds::venue::Step::default();
        let frames = [
            r#"{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"BTC/USD","price_precision":1,"qty_precision":8}]}}"#,
            r#"{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,"qty":0.1},{"price":45283.4,"qty":1.5}],"asks":[{"price":45285.2,"qty":0.001}],"checksum":0}]}"#,
        ];
        s.on_frame(Frame::Text(frames[0]), &mut step).unwrap();
        // The checksum 0 cannot match: the integrity failure proves the check ran with the
        // instrument's precisions; compute the right one and replay.
        s.on_frame(Frame::Text(frames[1]), &mut step).unwrap();
        assert!(
            matches!(step.events.last(), Some(NormEvent::Integrity { .. })),
            "{:?}",
            step.events
        );
        let expected = crc32fast::hash(b"45285210000045283510000000452834150000000");
        let snap = frames[1].replace("\"checksum\":0", &format!("\"checksum\":{expected}"));
        let mut step = crate::feeds::venue::Step::default();
        s.on_frame(Frame::Text(&snap), &mut step).unwrap();
        assert_eq!(
            s.venue_book("BTC/USD").unwrap().stats().checksums_ok,
            1,
            "{:?}",
            step.events
        );
        let upd = r#"{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,"qty":0}],"asks":[],"checksum":CS,"timestamp":"2023-10-06T17:35:55.440295Z"}]}"#
            .replace("CS", &crc32fast::hash(b"452852100000452834150000000").to_string());
        s.on_frame(Frame::Text(&upd), &mut step).unwrap();
        assert_eq!(s.venue_book("BTC/USD").unwrap().stats().checksums_ok, 2);
        let b = s.book("BTC/USD").unwrap();
        assert_eq!(
            b.best_bid().unwrap().price,
            Price::parse("45283.4").unwrap()
        );

        let mut p = KrakenProtocol::default();
        let mut out = Vec::new();
        p.parse(Frame::Text(r#"{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":105944.2,"qty":0.00027625,"ord_type":"limit","trade_id":10218208,"timestamp":"2023-10-06T17:35:55.440295Z"}]}"#), &mut out).unwrap();
        let NormEvent::Trade(t) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (t.id, t.taker_side, t.qty),
            (10218208, Side::Sell, Qty::parse("0.00027625").unwrap())
        );
        out.clear();
        p.parse(Frame::Text(r#"{"method":"pong","req_id":42}"#), &mut out)
            .unwrap();
        p.parse(Frame::Text(r#"{"channel":"heartbeat"}"#), &mut out)
            .unwrap();
        assert_eq!(out, [NormEvent::Pong, NormEvent::Control("heartbeat")]);
        assert!(
            p.parse(
                Frame::Text(r#"{"method":"subscribe","success":false,"error":"bad"}"#),
                &mut out
            )
            .is_err()
        );
        assert_eq!(p.subscribe(&["BTC/USD".into()]).len(), 3);
    }
}
