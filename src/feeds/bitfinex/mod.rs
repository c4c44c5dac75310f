//! Bitfinex v2 websocket: JSON arrays keyed by channel id, P0 books `[price, count, amount]`,
//! trades, the optional per-connection sequence number (`SEQ_ALL`) and CRC32 checksum (`cs`).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil::{self, text_of};
use super::normalized::{
    BookData, LevelText, NormEvent, Rounding, SeqInfo, Venue, price, qty, token_text,
};
use super::venue::{BookRules, ChecksumKind, Frame, Keepalive, VenueError, VenueProtocol};
use crate::market::types::{Level, Qty, Side, Trade};

/// Conf flags: sequence numbers (65536) and checksums (131072).
const CONF_FLAGS: u64 = 65_536 + 131_072;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Book,
    Trades,
    Other,
}

/// Bitfinex protocol state (channel ids and sequence are per connection).
#[derive(Debug, Clone)]
pub struct BitfinexProtocol {
    /// Book length subscribed (`len`): the local book is truncated to it.
    pub book_len: usize,
    channels: HashMap<u64, (Channel, String)>,
    last_seq: Option<u64>,
}

impl Default for BitfinexProtocol {
    fn default() -> Self {
        Self {
            book_len: 100,
            channels: HashMap::new(),
            last_seq: None,
        }
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow, default)]
    channel: Option<&'a str>,
    #[serde(default, rename = "chanId")]
    chan_id: Option<u64>,
    #[serde(borrow, default)]
    symbol: Option<&'a str>,
    #[serde(borrow, default)]
    msg: Option<&'a str>,
}

/// `tBTCUSD` → `BTC/USD`, `tTESTBTC:TESTUSD` → `TESTBTC/TESTUSD`; Bitfinex's `UST` is USDT.
fn instrument_of(symbol: &str) -> Result<String, VenueError> {
    let s = symbol.strip_prefix('t').unwrap_or(symbol);
    let (b, q) = match s.split_once(':') {
        Some(pair) => pair,
        None if s.len() == 6 && s.is_ascii() => s.split_at(3),
        None => return Err(VenueError::UnknownChannel(symbol.to_string())),
    };
    if b.is_empty() || q.is_empty() {
        return Err(VenueError::UnknownChannel(symbol.to_string()));
    }
    let q = if q.eq_ignore_ascii_case("UST") {
        "USDT"
    } else {
        q
    };
    Ok(super::normalized::canonical(b, q))
}

/// One `[price, count, amount]` row: its side, the level, and for a set level the text of
/// price and amount as sent (Bitfinex's checksum is computed over that text: `1e-7`, not `0.0000001`).
fn book_level(row: &[&RawValue]) -> Result<(Side, Level, Option<LevelText>), VenueError> {
    let [p, count, amount_token, ..] = row else {
        return Err(VenueError::Field("book [price, count, amount]"));
    };
    let price = price(p.get().as_bytes()).map_err(VenueError::number("price"))?;
    let amount = qty(amount_token.get().as_bytes(), Rounding::HalfEven)
        .map_err(VenueError::number("amount"))?;
    let count: i64 = count
        .get()
        .parse()
        .map_err(|_| VenueError::Field("count"))?;
    let side = if amount.raw() > 0 {
        Side::Buy
    } else {
        Side::Sell
    };
    // Count 0 deletes the level (amount ±1 only names the side).
    if count == 0 {
        return Ok((
            side,
            Level {
                price,
                qty: Qty::ZERO,
            },
            None,
        ));
    }
    let text = LevelText {
        side,
        price,
        price_text: token_text(p.get().as_bytes()),
        amount_text: token_text(amount_token.get().as_bytes()),
    };
    Ok((
        side,
        Level {
            price,
            qty: Qty(amount.raw().abs()),
        },
        Some(text),
    ))
}

fn trade(instrument: &str, row: &[&RawValue]) -> Result<Trade, VenueError> {
    let [id, mts, amount, p, ..] = row else {
        return Err(VenueError::Field("trade [id, mts, amount, price]"));
    };
    let amount =
        qty(amount.get().as_bytes(), Rounding::HalfEven).map_err(VenueError::number("amount"))?;
    Ok(Trade {
        symbol: instrument.to_string(),
        id: jsonutil::u64_of(id, "trade id")?,
        time_ms: mts.get().parse().map_err(|_| VenueError::Field("mts"))?,
        price: price(p.get().as_bytes()).map_err(VenueError::number("price"))?,
        qty: Qty(amount.raw().abs()),
        taker_side: if amount.raw() > 0 {
            Side::Buy
        } else {
            Side::Sell
        },
    })
}

impl BitfinexProtocol {
    fn check_seq(&mut self, seq: Option<&RawValue>) -> Result<(), VenueError> {
        let Some(seq) = seq else { return Ok(()) };
        let seq = jsonutil::u64_of(seq, "sequence")?;
        let last = self.last_seq.replace(seq);
        match last {
            Some(l) if seq != l.saturating_add(1) => Err(VenueError::ConnectionGap {
                expected: l.saturating_add(1),
                got: seq,
            }),
            _ => Ok(()),
        }
    }

    fn channel_message(
        &mut self,
        arr: &[&RawValue],
        out: &mut Vec<NormEvent>,
    ) -> Result<(), VenueError> {
        let chan = jsonutil::u64_of(arr[0], "chanId")?;
        let second = arr.get(1).ok_or(VenueError::Field("payload"))?;
        let (kind, base_len) = match second.get() {
            "\"hb\"" => ("hb", 2),
            "\"te\"" | "\"tu\"" | "\"fte\"" | "\"ftu\"" | "\"cs\"" => (text_of(second), 3),
            _ => ("data", 2),
        };
        if arr.len() < base_len {
            return Err(VenueError::Field("channel message payload"));
        }
        // With SEQ_ALL the message has one more element: the connection sequence.
        self.check_seq(
            arr.get(base_len)
                .filter(|_| arr.len() == base_len + 1)
                .copied(),
        )?;
        if kind == "hb" {
            out.push(NormEvent::Control("heartbeat"));
            return Ok(());
        }
        let Some((channel, instrument)) = self.channels.get(&chan).cloned() else {
            return Err(VenueError::UnknownChannel(format!("chanId {chan}")));
        };
        match (channel, kind) {
            (Channel::Book, "cs") => {
                let v: i64 = arr[2]
                    .get()
                    .parse()
                    .map_err(|_| VenueError::Field("checksum"))?;
                out.push(NormEvent::BookChecksum {
                    instrument,
                    checksum: v as i32 as u32,
                });
            }
            (Channel::Book, "data") => {
                let rows: Vec<&RawValue> = jsonutil::from_str(second.get())?;
                let snapshot = rows.first().is_some_and(|r| r.get().starts_with('['));
                let rows: Vec<Vec<&RawValue>> = if snapshot {
                    jsonutil::from_str(second.get())?
                } else {
                    vec![rows]
                };
                let mut d = BookData::new(instrument, SeqInfo::None);
                for r in &rows {
                    let (side, l, text) = book_level(r)?;
                    match side {
                        Side::Buy => d.bids.push(l),
                        Side::Sell => d.asks.push(l),
                    }
                    d.texts.extend(text);
                }
                out.push(if snapshot || rows.is_empty() {
                    NormEvent::BookSnapshot(d)
                } else {
                    NormEvent::BookDelta(d)
                });
            }
            (Channel::Trades, "data") => {
                let rows: Vec<Vec<&RawValue>> = jsonutil::from_str(second.get())?;
                for r in &rows {
                    out.push(NormEvent::Trade(trade(&instrument, r)?));
                }
            }
            (Channel::Trades, "te") => {
                let r: Vec<&RawValue> = jsonutil::from_str(arr[2].get())?;
                out.push(NormEvent::Trade(trade(&instrument, &r)?));
            }
            // `tu` repeats a `te` trade with its final id.
            (Channel::Trades, _) => out.push(NormEvent::Control("trade_update")),
            (Channel::Other, _) | (Channel::Book, _) => out.push(NormEvent::Unsupported("ticker")),
        }
        Ok(())
    }
}

impl VenueProtocol for BitfinexProtocol {
    fn venue(&self) -> Venue {
        Venue::Bitfinex
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        let (b, q) = super::normalized::split_canonical(instrument).unwrap_or((instrument, ""));
        // Bitfinex writes USDT as UST; long names need a colon.
        let q = if q == "USDT" { "UST" } else { q };
        if b.len() > 3 || q.len() > 3 {
            format!("t{b}:{q}")
        } else {
            format!("t{b}{q}")
        }
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        let mut out = vec![format!(r#"{{"event":"conf","flags":{CONF_FLAGS}}}"#)];
        for i in instruments {
            let s = self.exchange_symbol(i);
            out.push(serde_json::json!({"event":"subscribe","channel":"book","symbol":s,"prec":"P0","freq":"F0","len":self.book_len.to_string()}).to_string());
            out.push(
                serde_json::json!({"event":"subscribe","channel":"trades","symbol":s}).to_string(),
            );
        }
        out
    }

    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        let s = self.exchange_symbol(instrument);
        let mut out = Vec::new();
        if let Some((id, _)) = self
            .channels
            .iter()
            .find(|(_, (c, i))| *c == Channel::Book && i == instrument)
        {
            out.push(format!(r#"{{"event":"unsubscribe","chanId":{id}}}"#));
        }
        out.push(serde_json::json!({"event":"subscribe","channel":"book","symbol":s,"prec":"P0","freq":"F0","len":self.book_len.to_string()}).to_string());
        out
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        if text.trim_start().starts_with('{') {
            let e: Event = jsonutil::from_str(text)?;
            match e.event {
                "subscribed" => {
                    let id = e.chan_id.ok_or(VenueError::Field("chanId"))?;
                    let inst = instrument_of(e.symbol.unwrap_or_default())?;
                    let ch = match e.channel {
                        Some("book") => Channel::Book,
                        Some("trades") => Channel::Trades,
                        _ => Channel::Other,
                    };
                    self.channels.insert(id, (ch, inst));
                    out.push(NormEvent::Control("subscribed"));
                }
                "unsubscribed" => {
                    if let Some(id) = e.chan_id {
                        self.channels.remove(&id);
                    }
                    out.push(NormEvent::Control("unsubscribed"));
                }
                "pong" => out.push(NormEvent::Pong),
                "error" => return Err(VenueError::Exchange(e.msg.unwrap_or_default().to_string())),
                _ => out.push(NormEvent::Control("info")),
            }
            return Ok(());
        }
        let arr: Vec<&RawValue> = jsonutil::from_str(text)?;
        if arr.is_empty() {
            return Err(VenueError::Field("channel message"));
        }
        self.channel_message(&arr, out)
    }

    fn keepalive(&self) -> Keepalive {
        Keepalive {
            interval: Duration::from_secs(15),
            message: Some(r#"{"event":"ping","cid":1}"#.to_string()),
        }
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            checksum: ChecksumKind::BitfinexTop25,
            depth_limit: Some(self.book_len),
            ..BookRules::default()
        }
    }

    fn on_disconnect(&mut self) {
        self.channels.clear();
        self.last_seq = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_round_trip() {
        let p = BitfinexProtocol::default();
        assert_eq!(p.exchange_symbol("BTC/USDT"), "tBTCUST");
        assert_eq!(instrument_of("tBTCUST").unwrap(), "BTC/USDT");
        assert_eq!(instrument_of("tBFTUSD").unwrap(), "BFT/USD");
        assert_eq!(
            instrument_of("tTESTBTC:TESTUSD").unwrap(),
            "TESTBTC/TESTUSD"
        );
        assert_eq!(p.exchange_symbol("TESTBTC/TESTUSD"), "tTESTBTC:TESTUSD");
        assert!(instrument_of("tX").is_err());
    }
}
