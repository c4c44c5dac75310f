//! HTX (Huobi) spot websocket: every market frame is gzip-compressed JSON; the server pings
//! `{"ping":ts}` and expects `{"pong":ts}`. Books: `depth.step0` pushes full images; the
//! incremental `mbp.<n>` channel chains `prevSeqNum` → `seqNum` from a `req` image.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::jsonutil;
use super::normalized::{BookData, NormEvent, Rounding, SeqInfo, Venue, canonical_from_exchange};
use super::venue::{BookRules, Frame, Keepalive, VenueError, VenueProtocol};
use crate::market::types::{Side, Trade};

/// Largest decompressed frame accepted (a gzip bomb must not exhaust memory).
const MAX_FRAME: u64 = 16 << 20;

/// HTX protocol state.
#[derive(Debug, Clone, Default)]
pub struct HtxProtocol {
    next_id: u64,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    ping: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ch: Option<&'a str>,
    #[serde(borrow, default)]
    rep: Option<&'a str>,
    #[serde(borrow, default)]
    status: Option<&'a str>,
    #[serde(borrow, default, rename = "err-msg")]
    err_msg: Option<&'a str>,
    #[serde(borrow, default)]
    tick: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    ts: Option<i64>,
}

#[derive(Deserialize)]
struct BookTick<'a> {
    #[serde(borrow, default)]
    bids: Vec<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    asks: Vec<Vec<&'a RawValue>>,
    #[serde(default, rename = "seqNum")]
    seq_num: Option<u64>,
    #[serde(default, rename = "prevSeqNum")]
    prev_seq_num: Option<u64>,
}

#[derive(Deserialize)]
struct TradeTick<'a> {
    #[serde(borrow)]
    data: Vec<TradeItem<'a>>,
}

#[derive(Deserialize)]
struct TradeItem<'a> {
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(borrow)]
    amount: &'a RawValue,
    ts: i64,
    /// The old `id` exceeds 64 bits; `tradeId` is the one to use.
    #[serde(default, rename = "tradeId")]
    trade_id: Option<u64>,
    direction: &'a str,
}

/// Decompresses one gzip frame.
pub fn gunzip(bytes: &[u8]) -> Result<String, VenueError> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_FRAME)
        .read_to_string(&mut s)
        .map_err(|e| VenueError::Gzip(e.to_string()))?;
    Ok(s)
}

fn instrument_of(ch: &str) -> Result<String, VenueError> {
    let sym = ch.split('.').nth(1).ok_or(VenueError::Field("ch"))?;
    canonical_from_exchange(sym).ok_or_else(|| VenueError::UnknownChannel(ch.to_string()))
}

fn book(instrument: String, tick: &RawValue, full: bool) -> Result<NormEvent, VenueError> {
    let t: BookTick = jsonutil::from_str(tick.get())?;
    let seq = match (t.prev_seq_num, t.seq_num) {
        (Some(prev), Some(seq)) if !full => SeqInfo::Linked { prev, seq },
        (_, Some(seq)) => SeqInfo::Single(seq),
        _ => SeqInfo::None,
    };
    let mut d = BookData::new(instrument, seq);
    // Sizes are binary floats on the wire; prices must be exact.
    d.bids = jsonutil::levels(&t.bids, Rounding::HalfEven)?;
    d.asks = jsonutil::levels(&t.asks, Rounding::HalfEven)?;
    Ok(if full {
        NormEvent::BookSnapshot(d)
    } else {
        NormEvent::BookDelta(d)
    })
}

impl HtxProtocol {
    /// Parses the JSON text of one (already decompressed) frame.
    pub fn parse_json(&mut self, text: &str, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let m: Msg = jsonutil::from_str(text)?;
        if let Some(ping) = m.ping {
            out.push(NormEvent::Reply(format!("{{\"pong\":{}}}", ping.get())));
            return Ok(());
        }
        if m.status == Some("error") {
            return Err(VenueError::Exchange(
                m.err_msg.unwrap_or_default().to_string(),
            ));
        }
        if let (Some(rep), Some(data)) = (m.rep, m.data) {
            // The `req` image of an mbp channel.
            out.push(book(instrument_of(rep)?, data, true)?);
            return Ok(());
        }
        let Some(ch) = m.ch else {
            out.push(NormEvent::Control("subbed"));
            return Ok(());
        };
        let tick = m.tick.ok_or(VenueError::Field("tick"))?;
        let instrument = instrument_of(ch)?;
        if ch.contains(".depth.") || ch.contains(".mbp.refresh.") {
            let mut ev = book(instrument, tick, true)?;
            if let NormEvent::BookSnapshot(d) = &mut ev {
                d.time_ms = m.ts;
            }
            out.push(ev);
        } else if ch.contains(".mbp.") {
            out.push(book(instrument, tick, false)?);
        } else if ch.ends_with(".trade.detail") {
            let t: TradeTick = jsonutil::from_str(tick.get())?;
            for item in t.data {
                let l = jsonutil::level(item.price, item.amount, Rounding::HalfEven)?;
                out.push(NormEvent::Trade(Trade {
                    symbol: instrument.clone(),
                    id: item.trade_id.ok_or(VenueError::Field("tradeId"))?,
                    time_ms: item.ts,
                    price: l.price,
                    qty: l.qty,
                    taker_side: match item.direction {
                        "buy" => Side::Buy,
                        "sell" => Side::Sell,
                        _ => return Err(VenueError::Field("direction")),
                    },
                }));
            }
        } else {
            out.push(NormEvent::Unsupported("other_channel"));
        }
        Ok(())
    }
}

impl VenueProtocol for HtxProtocol {
    fn venue(&self) -> Venue {
        Venue::Htx
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "").to_ascii_lowercase()
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for i in instruments {
            let sym = self.exchange_symbol(i);
            for topic in ["depth.step0", "trade.detail"] {
                self.next_id += 1;
                out.push(format!(
                    r#"{{"sub":"market.{sym}.{topic}","id":"{}"}}"#,
                    self.next_id
                ));
            }
        }
        out
    }

    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        let sym = self.exchange_symbol(instrument);
        self.next_id += 1;
        // step0 pushes a full image every time; the next push resyncs by itself.
        vec![format!(
            r#"{{"req":"market.{sym}.depth.step0","id":"{}"}}"#,
            self.next_id
        )]
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        match frame {
            Frame::Binary(b) => {
                let text = gunzip(b)?;
                self.parse_json(&text, out)
            }
            // Uncompressed JSON (private endpoint, or a decoded recording).
            Frame::Text(t) => self.parse_json(t, out),
        }
    }

    fn keepalive(&self) -> Keepalive {
        // The server pings every 5 s; answering is the keepalive.
        Keepalive::server_driven(Duration::from_secs(5))
    }

    fn book_rules(&self) -> BookRules {
        BookRules::default()
    }
}
