//! Coinbase: the Advanced Trade websocket (`level2` as `l2_data`, `market_trades`, connection
//! `sequence_num`) for live use, and the Exchange/legacy Pro feed (`snapshot`, `l2update`,
//! `match`) that recordings are made of. Books come in-band; Pro level2 has no sequence.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil::{self, rfc3339_ms};
use super::normalized::{
    BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange, hash_id,
};
use super::venue::{BookRules, Frame, Keepalive, VenueError, VenueProtocol};
use crate::market::types::{Side, Trade};

/// Coinbase protocol state.
#[derive(Debug, Clone, Default)]
pub struct CoinbaseProtocol {
    /// Last Advanced Trade `sequence_num` on this connection.
    last_seq: Option<u64>,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(default)]
    sequence_num: Option<u64>,
    #[serde(borrow, default)]
    events: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    product_id: Option<&'a str>,
    #[serde(borrow, default)]
    bids: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    asks: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    changes: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(borrow, default)]
    time: Option<&'a str>,
    #[serde(borrow, default)]
    trade_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    side: Option<&'a str>,
    #[serde(borrow, default)]
    price: Option<&'a RawValue>,
    #[serde(borrow, default)]
    size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a str>,
}

#[derive(Deserialize)]
struct AdvEvent<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    product_id: Option<&'a str>,
    #[serde(borrow, default)]
    updates: Vec<AdvUpdate<'a>>,
    #[serde(borrow, default)]
    trades: Vec<AdvTrade<'a>>,
}

#[derive(Deserialize)]
struct AdvUpdate<'a> {
    side: &'a str,
    #[serde(borrow)]
    price_level: &'a RawValue,
    #[serde(borrow)]
    new_quantity: &'a RawValue,
}

#[derive(Deserialize)]
struct AdvTrade<'a> {
    #[serde(borrow)]
    trade_id: &'a RawValue,
    product_id: &'a str,
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    size: &'a RawValue,
    side: &'a str,
    time: &'a str,
}

fn instrument_of(p: &str) -> Result<String, VenueError> {
    canonical_from_exchange(p).ok_or_else(|| VenueError::UnknownChannel(p.to_string()))
}

fn trade_id(v: &RawValue) -> u64 {
    let t = jsonutil::text_of(v);
    t.parse().unwrap_or_else(|_| hash_id(t))
}

impl CoinbaseProtocol {
    fn advanced(
        &mut self,
        m: Msg<'_>,
        channel: &str,
        out: &mut Vec<NormEvent>,
    ) -> Result<(), VenueError> {
        if let Some(seq) = m.sequence_num {
            // Connection-wide counter: a jump means messages were dropped; smaller is out of order.
            if let Some(last) = self.last_seq
                && seq > last.saturating_add(1)
            {
                self.last_seq = Some(seq);
                return Err(VenueError::ConnectionGap {
                    expected: last.saturating_add(1),
                    got: seq,
                });
            }
            self.last_seq = Some(self.last_seq.map_or(seq, |l| l.max(seq)));
        }
        match channel {
            "l2_data" => {
                for raw in m.events.unwrap_or_default() {
                    let e: AdvEvent = jsonutil::from_str(raw.get())?;
                    let mut d = BookData::new(
                        instrument_of(e.product_id.unwrap_or_default())?,
                        SeqInfo::None,
                    );
                    for u in &e.updates {
                        let l = jsonutil::level(u.price_level, u.new_quantity, Rounding::HalfEven)?;
                        match u.side {
                            "bid" => d.bids.push(l),
                            "offer" | "ask" => d.asks.push(l),
                            _ => return Err(VenueError::Field("side")),
                        }
                    }
                    out.push(if e.kind == Some("snapshot") {
                        NormEvent::BookSnapshot(d)
                    } else {
                        NormEvent::BookDelta(d)
                    });
                }
            }
            "market_trades" => {
                for raw in m.events.unwrap_or_default() {
                    let e: AdvEvent = jsonutil::from_str(raw.get())?;
                    for t in &e.trades {
                        let l = jsonutil::level(t.price, t.size, Rounding::HalfEven)?;
                        out.push(NormEvent::Trade(Trade {
                            symbol: instrument_of(t.product_id)?,
                            id: trade_id(t.trade_id),
                            time_ms: rfc3339_ms(t.time).ok_or(VenueError::Field("time"))?,
                            price: l.price,
                            qty: l.qty,
                            // Advanced Trade reports the taker side.
                            taker_side: match t.side {
                                "BUY" => Side::Buy,
                                "SELL" => Side::Sell,
                                _ => return Err(VenueError::Field("side")),
                            },
                        }));
                    }
                }
            }
            "heartbeats" | "subscriptions" => out.push(NormEvent::Control("heartbeat")),
            _ => out.push(NormEvent::Unsupported("other_channel")),
        }
        Ok(())
    }

    fn exchange_feed(
        &mut self,
        m: Msg<'_>,
        kind: &str,
        out: &mut Vec<NormEvent>,
    ) -> Result<(), VenueError> {
        match kind {
            "snapshot" => {
                let mut d = BookData::new(
                    instrument_of(m.product_id.unwrap_or_default())?,
                    SeqInfo::None,
                );
                d.bids = jsonutil::levels(&m.bids.unwrap_or_default(), Rounding::HalfEven)?;
                d.asks = jsonutil::levels(&m.asks.unwrap_or_default(), Rounding::HalfEven)?;
                out.push(NormEvent::BookSnapshot(d));
            }
            "l2update" => {
                let mut d = BookData::new(
                    instrument_of(m.product_id.unwrap_or_default())?,
                    SeqInfo::None,
                );
                for c in m.changes.unwrap_or_default() {
                    let [side, p, q, ..] = c.as_slice() else {
                        return Err(VenueError::Field("change [side, price, size]"));
                    };
                    let l = jsonutil::level(p, q, Rounding::HalfEven)?;
                    match jsonutil::text_of(side) {
                        "buy" => d.bids.push(l),
                        "sell" => d.asks.push(l),
                        _ => return Err(VenueError::Field("side")),
                    }
                }
                d.time_ms = m.time.and_then(rfc3339_ms);
                out.push(NormEvent::BookDelta(d));
            }
            "match" | "last_match" => {
                let l = jsonutil::level(
                    m.price.ok_or(VenueError::Field("price"))?,
                    m.size.ok_or(VenueError::Field("size"))?,
                    Rounding::HalfEven,
                )?;
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument_of(m.product_id.unwrap_or_default())?,
                    id: trade_id(m.trade_id.ok_or(VenueError::Field("trade_id"))?),
                    time_ms: m
                        .time
                        .and_then(rfc3339_ms)
                        .ok_or(VenueError::Field("time"))?,
                    price: l.price,
                    qty: l.qty,
                    // The Exchange feed's side is the maker's: the taker took the other side.
                    taker_side: match m.side {
                        Some("buy") => Side::Sell,
                        Some("sell") => Side::Buy,
                        _ => return Err(VenueError::Field("side")),
                    },
                }));
            }
            "subscriptions" | "heartbeat" => out.push(NormEvent::Control("heartbeat")),
            "ticker" => out.push(NormEvent::Unsupported("ticker")),
            "error" => {
                return Err(VenueError::Exchange(
                    m.message.unwrap_or_default().to_string(),
                ));
            }
            _ => out.push(NormEvent::Unsupported("other_type")),
        }
        Ok(())
    }
}

impl VenueProtocol for CoinbaseProtocol {
    fn venue(&self) -> Venue {
        Venue::Coinbase
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "-")
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        let products: Vec<String> = instruments
            .iter()
            .map(|i| self.exchange_symbol(i))
            .collect();
        // One channel per message; heartbeats keep quiet products' connections open.
        ["heartbeats", "level2", "market_trades"]
            .iter()
            .map(|c| {
                serde_json::json!({"type":"subscribe","product_ids":products,"channel":c})
                    .to_string()
            })
            .collect()
    }

    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        let p = [self.exchange_symbol(instrument)];
        vec![
            serde_json::json!({"type":"unsubscribe","product_ids":p,"channel":"level2"})
                .to_string(),
            serde_json::json!({"type":"subscribe","product_ids":p,"channel":"level2"}).to_string(),
        ]
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        let m: Msg = jsonutil::from_str(text)?;
        if let Some(ch) = m.channel {
            return self.advanced(m, ch, out);
        }
        let kind = m.kind.ok_or(VenueError::Field("type"))?;
        self.exchange_feed(m, kind, out)
    }

    fn keepalive(&self) -> Keepalive {
        // The heartbeats channel keeps the connection alive; no client message is needed.
        Keepalive::server_driven(Duration::from_secs(20))
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            crossed_is_failure: true,
            ..BookRules::default()
        }
    }

    fn on_disconnect(&mut self) {
        self.last_seq = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::venue::{Step, VenueSession};
    use crate::market::types::Price;

    /// Advanced Trade messages as documented: l2_data snapshot/update, market_trades, and the
    /// connection-wide `sequence_num` whose jump is a gap.
    #[test]
    fn advanced_trade_level2_trades_and_sequence() {
        let mut s = VenueSession::open(Box::new(CoinbaseProtocol::default()));
        let mut step = Step::default();
        let snap = r#"{"channel":"l2_data","timestamp":"2026-04-07T14:30:01.456789Z","sequence_num":1,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"x","price_level":"68900.00","new_quantity":"2"},{"side":"offer","event_time":"x","price_level":"68901.00","new_quantity":"1"}]}]}"#;
        let upd = r#"{"channel":"l2_data","timestamp":"2026-04-07T14:30:01.5Z","sequence_num":2,"events":[{"type":"update","product_id":"BTC-USD","updates":[{"side":"offer","event_time":"x","price_level":"68901.00","new_quantity":"0"},{"side":"offer","event_time":"x","price_level":"68902.50","new_quantity":"3"}]}]}"#;
        let trades = r#"{"channel":"market_trades","sequence_num":3,"events":[{"type":"update","trades":[{"trade_id":"995098700","product_id":"BTC-USD","price":"68900.50","size":"0.0015","side":"BUY","time":"2026-04-07T14:30:02.000Z"}]}]}"#;
        for f in [snap, upd, trades] {
            s.on_frame(Frame::Text(f), &mut step).unwrap();
        }
        let b = s.book("BTC/USD").unwrap();
        assert_eq!(
            b.best_ask().unwrap().price,
            Price::parse("68902.5").unwrap()
        );
        let t = step.events.iter().find_map(|e| match e {
            NormEvent::Trade(t) => Some(t),
            _ => None,
        });
        assert_eq!(
            t.map(|t| (t.id, t.taker_side)),
            Some((995098700, Side::Buy))
        );
        let gap = r#"{"channel":"heartbeats","sequence_num":7,"events":[]}"#;
        let e = s.on_frame(Frame::Text(gap), &mut step).unwrap_err();
        assert_eq!(
            e,
            VenueError::ConnectionGap {
                expected: 4,
                got: 7
            }
        );
        assert!(
            step.actions
                .iter()
                .any(|a| matches!(a, crate::feeds::venue::Action::Reconnect(_)))
        );
    }
}
