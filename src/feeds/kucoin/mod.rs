//! KuCoin spot websocket: level-2 diffs numbered `sequenceStart..=sequenceEnd` synced against
//! the REST snapshot's `sequence`, and matches.
//!
//! The websocket URL carries a token from `POST /api/v1/bullet-public`; the runner is given
//! the full URL (token included).

use std::cell::Cell;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil::{self, text_of};
use super::normalized::{
    BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange, hash_id,
};
use super::venue::{BookRules, Frame, Keepalive, SnapshotSource, VenueError, VenueProtocol};
use crate::market::types::{Level, Side, Trade};

/// KuCoin's advertised ping interval when no bullet token has been read yet.
const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(18);

/// KuCoin protocol state.
#[derive(Debug, Clone, Default)]
pub struct KucoinProtocol {
    next_id: u64,
    /// `pingInterval` of the last bullet token; a `Cell` because the token is read through
    /// `&self` (the runner asks the protocol for the URL before every connection).
    ping_interval: Cell<Option<Duration>>,
    /// `pingTimeout` of the last bullet token.
    ping_timeout: Cell<Option<Duration>>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    subject: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Changes<'a> {
    #[serde(borrow, default)]
    asks: Vec<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    bids: Vec<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct L2Update<'a> {
    #[serde(rename = "sequenceStart")]
    sequence_start: u64,
    #[serde(rename = "sequenceEnd")]
    sequence_end: u64,
    symbol: String,
    #[serde(borrow)]
    changes: Changes<'a>,
    #[serde(default)]
    time: Option<i64>,
}

#[derive(Deserialize)]
struct Match<'a> {
    symbol: String,
    side: &'a str,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    size: &'a RawValue,
    #[serde(borrow, rename = "tradeId")]
    trade_id: &'a str,
    #[serde(borrow)]
    time: &'a RawValue,
}

#[derive(Deserialize)]
struct Rest<'a> {
    #[serde(borrow)]
    code: &'a str,
    #[serde(borrow, default)]
    msg: Option<&'a str>,
    #[serde(borrow, default)]
    data: Option<RestBook<'a>>,
}

#[derive(Deserialize)]
struct RestBook<'a> {
    #[serde(borrow)]
    sequence: &'a RawValue,
    #[serde(borrow)]
    bids: Vec<Vec<&'a RawValue>>,
    #[serde(borrow)]
    asks: Vec<Vec<&'a RawValue>>,
    #[serde(default)]
    time: Option<i64>,
}

#[derive(Deserialize)]
struct Bullet {
    code: String,
    #[serde(default)]
    data: Option<BulletData>,
}

#[derive(Deserialize)]
struct BulletData {
    token: String,
    #[serde(rename = "instanceServers")]
    instance_servers: Vec<BulletServer>,
}

#[derive(Deserialize)]
struct BulletServer {
    endpoint: String,
    /// Milliseconds between client pings.
    #[serde(default, rename = "pingInterval")]
    ping_interval: Option<u64>,
    /// Milliseconds after which a ping without answer means a dead connection.
    #[serde(default, rename = "pingTimeout")]
    ping_timeout: Option<u64>,
}

fn changes(rows: &[Vec<&RawValue>]) -> Result<Vec<Level>, VenueError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let [p, q, ..] = r.as_slice() else {
            return Err(VenueError::Field("change [price, size, sequence]"));
        };
        // Price "0" marks a sequence-only entry (KuCoin advances the sequence without a book change), not a level.
        if text_of(p) == "0" {
            continue;
        }
        out.push(jsonutil::level(p, q, Rounding::HalfEven)?);
    }
    Ok(out)
}

fn instrument_of(sym: &str) -> Result<String, VenueError> {
    canonical_from_exchange(sym).ok_or_else(|| VenueError::UnknownChannel(sym.to_string()))
}

impl VenueProtocol for KucoinProtocol {
    fn venue(&self) -> Venue {
        Venue::Kucoin
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "-")
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        // At most 100 topics per subscribe message.
        let mut out = Vec::new();
        for chunk in instruments.chunks(100) {
            let syms: Vec<String> = chunk.iter().map(|i| self.exchange_symbol(i)).collect();
            for topic in ["/market/level2", "/market/match"] {
                self.next_id += 1;
                out.push(
                    serde_json::json!({"id": self.next_id.to_string(), "type": "subscribe",
                        "topic": format!("{topic}:{}", syms.join(",")), "privateChannel": false, "response": true})
                    .to_string(),
                );
            }
        }
        out
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        let m: Msg = jsonutil::from_str(text)?;
        match m.kind {
            Some("welcome") | Some("ack") => {
                out.push(NormEvent::Control("ack"));
                return Ok(());
            }
            Some("pong") => {
                out.push(NormEvent::Pong);
                return Ok(());
            }
            Some("error") => return Err(VenueError::Exchange(text.chars().take(200).collect())),
            _ => {}
        }
        let data = m.data.ok_or(VenueError::Field("data"))?;
        match m.subject.unwrap_or_default() {
            "trade.l2update" => {
                let u: L2Update = jsonutil::from_str(data.get())?;
                let mut d = BookData::new(
                    instrument_of(&u.symbol)?,
                    SeqInfo::Range {
                        first: u.sequence_start,
                        last: u.sequence_end,
                    },
                );
                d.bids = changes(&u.changes.bids)?;
                d.asks = changes(&u.changes.asks)?;
                d.time_ms = u.time;
                out.push(NormEvent::BookDelta(d));
            }
            "trade.l3match" => {
                let t: Match = jsonutil::from_str(data.get())?;
                let l = jsonutil::level(t.price, t.size, Rounding::HalfEven)?;
                let ns: i64 = text_of(t.time)
                    .parse()
                    .map_err(|_| VenueError::Field("time"))?;
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument_of(&t.symbol)?,
                    id: hash_id(t.trade_id),
                    time_ms: ns / 1_000_000,
                    price: l.price,
                    qty: l.qty,
                    taker_side: match t.side {
                        "buy" => Side::Buy,
                        "sell" => Side::Sell,
                        _ => return Err(VenueError::Field("side")),
                    },
                }));
            }
            "trade.ticker" => out.push(NormEvent::Unsupported("ticker")),
            s if s.starts_with("trade.candles") => out.push(NormEvent::Unsupported("candles")),
            _ => out.push(NormEvent::Unsupported("other_subject")),
        }
        Ok(())
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: self.ping_interval.get().unwrap_or(DEFAULT_PING_INTERVAL),
            message: Some(r#"{"id":"ping","type":"ping"}"#.to_string()),
        }
    }

    fn ping_timeout(&self) -> Option<Duration> {
        self.ping_timeout.get()
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            snapshot: SnapshotSource::Rest,
            ..BookRules::default()
        }
    }

    fn snapshot_url(&self, rest_base: &str, instrument: &str) -> Option<String> {
        Some(format!(
            "{}/api/v1/market/orderbook/level2_100?symbol={}",
            rest_base.trim_end_matches('/'),
            self.exchange_symbol(instrument)
        ))
    }

    fn connect_token_url(&self, rest_base: &str) -> Option<String> {
        Some(format!(
            "{}/api/v1/bullet-public",
            rest_base.trim_end_matches('/')
        ))
    }

    fn ws_url_from_token(&self, body: &str) -> Result<String, VenueError> {
        let b: Bullet = jsonutil::from_str(body)?;
        if b.code != "200000" {
            return Err(VenueError::Exchange(format!(
                "bullet-public code {}",
                b.code
            )));
        }
        let d = b.data.ok_or(VenueError::Field("data"))?;
        let server = d
            .instance_servers
            .first()
            .ok_or(VenueError::Field("instanceServers"))?;
        // A zero interval would make the runner ping in a busy loop, a zero timeout drop every
        // connection: treat zero as absent.
        self.ping_interval.set(
            server
                .ping_interval
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        );
        self.ping_timeout.set(
            server
                .ping_timeout
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
        );
        Ok(format!("{}?token={}", server.endpoint, d.token))
    }

    fn snapshot_instrument(&self, url: &str) -> Option<String> {
        if !url.contains("/market/orderbook/level2") {
            return None;
        }
        let q = url.split_once("symbol=")?.1;
        canonical_from_exchange(q.split('&').next()?)
    }

    fn parse_snapshot(&self, instrument: &str, body: &str) -> Result<BookData, VenueError> {
        let r: Rest = jsonutil::from_str(body)?;
        if r.code != "200000" {
            return Err(VenueError::Exchange(format!(
                "{} {}",
                r.code,
                r.msg.unwrap_or_default()
            )));
        }
        let b = r.data.ok_or(VenueError::Field("data"))?;
        let mut d = BookData::new(
            instrument,
            SeqInfo::Single(jsonutil::u64_of(b.sequence, "sequence")?),
        );
        d.bids = jsonutil::levels(&b.bids, Rounding::HalfEven)?;
        d.asks = jsonutil::levels(&b.asks, Rounding::HalfEven)?;
        d.time_ms = b.time;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bullet_token_gives_the_websocket_url() {
        let p = KucoinProtocol::default();
        assert_eq!(
            p.connect_token_url("https://api.kucoin.com/").unwrap(),
            "https://api.kucoin.com/api/v1/bullet-public"
        );
        let body = r#"{"code":"200000","data":{"token":"T0K","instanceServers":[{"endpoint":"wss://ws-api-spot.kucoin.com/","encrypt":true,"protocol":"websocket","pingInterval":18000,"pingTimeout":10000}]}}"#;
        assert_eq!(
            p.ws_url_from_token(body).unwrap(),
            "wss://ws-api-spot.kucoin.com/?token=T0K"
        );
        assert!(p.ws_url_from_token(r#"{"code":"400100"}"#).is_err());
    }

    #[test]
    fn bullet_token_ping_interval_drives_the_keepalive() {
        let p = KucoinProtocol::default();
        assert_eq!(p.keepalive().interval, DEFAULT_PING_INTERVAL);
        let body = r#"{"code":"200000","data":{"token":"T","instanceServers":[{"endpoint":"ws://x/","pingInterval":7000,"pingTimeout":3000}]}}"#;
        p.ws_url_from_token(body).unwrap();
        assert_eq!(p.keepalive().interval, Duration::from_millis(7_000));
        assert_eq!(p.ping_timeout(), Some(Duration::from_millis(3_000)));
        // A later token without the fields (or a zero interval) falls back to the default.
        let body = r#"{"code":"200000","data":{"token":"T","instanceServers":[{"endpoint":"ws://x/","pingInterval":0}]}}"#;
        p.ws_url_from_token(body).unwrap();
        assert_eq!(p.keepalive().interval, DEFAULT_PING_INTERVAL);
        assert_eq!(p.ping_timeout(), None);
    }
}
