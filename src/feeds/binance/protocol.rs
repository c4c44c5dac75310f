//! Binance as a [`VenueProtocol`]: a thin adapter over the optimized wire parser so Binance
//! yields the same normalized events as every other exchange (raw replay, normalized consumers,
//! the aggregated book). The desk's live Binance path keeps its own connector and `BookSync`.
//! Spot diffs carry `U..=u` ranges; USD-M futures diffs are linked by `pu`. Pure logic.

use std::time::Duration;

use super::wire::{self, BinanceEvent, DepthSnapshot, DepthUpdate, FrameError};
use crate::feeds::normalized::{
    BookData, NormEvent, NumberError, SeqInfo, Venue, canonical_from_exchange,
};
use crate::feeds::venue::{BookRules, Frame, Keepalive, SnapshotSource, VenueError, VenueProtocol};
use crate::market::types::Trade;

/// Binance spot (and USD-M futures, whose diffs carry `pu`) market data.
#[derive(Debug, Clone)]
pub struct BinanceProtocol {
    /// Levels requested per REST depth snapshot.
    pub snapshot_limit: u32,
}

impl Default for BinanceProtocol {
    fn default() -> Self {
        Self {
            snapshot_limit: 1000,
        }
    }
}

/// The spot REST depth snapshot URL (`/api/v3/depth`), which MEXC's REST copies too.
pub fn spot_depth_url(rest_base: &str, exchange_symbol: &str, limit: u32) -> String {
    format!(
        "{}/api/v3/depth?symbol={exchange_symbol}&limit={limit}",
        rest_base.trim_end_matches('/')
    )
}

/// The wire parser's error in the connector abstraction's terms.
pub fn venue_error(e: FrameError) -> VenueError {
    match e {
        FrameError::BadNumber(text) => VenueError::Number {
            field: "level",
            source: NumberError::Invalid(text),
        },
        FrameError::Exchange { code, msg } => VenueError::Exchange(format!("{code} {msg}")),
        FrameError::UnknownEvent(name) => VenueError::UnknownChannel(format!("event {name}")),
        other => VenueError::Json(other.to_string()),
    }
}

fn instrument_of(symbol: &str) -> Result<String, VenueError> {
    canonical_from_exchange(symbol).ok_or_else(|| VenueError::UnknownChannel(symbol.to_string()))
}

fn delta(d: DepthUpdate) -> Result<BookData, VenueError> {
    // Futures chain each diff to the previous one by `pu`; spot ids are contiguous ranges.
    let seq = match d.prev_final_update_id {
        Some(prev) => SeqInfo::Linked {
            prev,
            seq: d.final_update_id,
        },
        None => SeqInfo::Range {
            first: d.first_update_id,
            last: d.final_update_id,
        },
    };
    let mut b = BookData::new(instrument_of(&d.symbol)?, seq);
    b.bids = d.bids;
    b.asks = d.asks;
    b.time_ms = Some(d.event_time_ms);
    Ok(b)
}

fn snapshot(instrument: String, s: DepthSnapshot) -> BookData {
    let mut b = BookData::new(instrument, SeqInfo::Single(s.last_update_id));
    b.bids = s.bids;
    b.asks = s.asks;
    b.time_ms = s.event_time_ms;
    b
}

fn trade(t: Trade) -> Result<Trade, VenueError> {
    Ok(Trade {
        symbol: instrument_of(&t.symbol)?,
        ..t
    })
}

impl VenueProtocol for BinanceProtocol {
    fn venue(&self) -> Venue {
        Venue::Binance
    }

    fn exchange_symbol(&self, instrument: &str) -> String {
        instrument.replace('/', "").to_ascii_uppercase()
    }

    fn subscribe(&mut self, instruments: &[String]) -> Vec<String> {
        let params: Vec<String> = instruments
            .iter()
            .flat_map(|i| {
                let s = self.exchange_symbol(i).to_ascii_lowercase();
                [format!("{s}@depth@100ms"), format!("{s}@aggTrade")]
            })
            .collect();
        vec![serde_json::json!({"method": "SUBSCRIBE", "params": params, "id": 1}).to_string()]
    }

    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError> {
        let Frame::Text(text) = frame else {
            return Err(VenueError::FrameType("binary"));
        };
        match wire::parse_frame(text).map_err(venue_error)? {
            BinanceEvent::Depth(d) => out.push(NormEvent::BookDelta(delta(d)?)),
            BinanceEvent::PartialDepth {
                symbol,
                snapshot: s,
            } => {
                // A raw (non-combined) connection names no symbol: the image cannot be placed.
                let symbol = symbol.ok_or(VenueError::Field("partial depth stream name"))?;
                out.push(NormEvent::BookSnapshot(snapshot(
                    instrument_of(&symbol)?,
                    s,
                )));
            }
            BinanceEvent::Trade(t) | BinanceEvent::AggTrade(t) => {
                out.push(NormEvent::Trade(trade(t)?))
            }
            BinanceEvent::BookTicker(_) => out.push(NormEvent::Unsupported("book_ticker")),
            BinanceEvent::Ticker(_) => out.push(NormEvent::Unsupported("ticker")),
            BinanceEvent::Kline(_) => out.push(NormEvent::Unsupported("kline")),
            BinanceEvent::Ack(_) => out.push(NormEvent::Control("subscribed")),
            BinanceEvent::Shutdown { .. } => out.push(NormEvent::Control("shutdown")),
            BinanceEvent::Error(e) => {
                return Err(VenueError::Exchange(format!("{} {}", e.code, e.msg)));
            }
        }
        Ok(())
    }

    fn keepalive(&self) -> Keepalive {
        // The server pings every 20 s and tungstenite answers; no client message is needed.
        Keepalive::server_driven(Duration::from_secs(20))
    }

    fn book_rules(&self) -> BookRules {
        BookRules {
            snapshot: SnapshotSource::Rest,
            // As the desk's BookSync: a crossed book after a diff means the stream is broken.
            crossed_is_failure: true,
            ..BookRules::default()
        }
    }

    fn snapshot_url(&self, rest_base: &str, instrument: &str) -> Option<String> {
        Some(spot_depth_url(
            rest_base,
            &self.exchange_symbol(instrument),
            self.snapshot_limit,
        ))
    }

    fn parse_snapshot(&self, instrument: &str, body: &str) -> Result<BookData, VenueError> {
        let s = wire::parse_depth_snapshot(body).map_err(venue_error)?;
        Ok(snapshot(instrument.to_string(), s))
    }

    fn snapshot_instrument(&self, url: &str) -> Option<String> {
        // Spot `/api/v3/depth`, USD-M `/fapi/v1/depth`, COIN-M `/dapi/v1/depth`.
        let (path, query) = url.split_once('?')?;
        if !path.ends_with("/depth") {
            return None;
        }
        let symbol = query.split('&').find_map(|kv| kv.strip_prefix("symbol="))?;
        canonical_from_exchange(symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::venue::{Step, VenueSession};
    use crate::market::types::{Price, Qty};

    fn session() -> VenueSession {
        VenueSession::open(Box::new(BinanceProtocol::default()))
    }

    fn frame(s: &mut VenueSession, text: &str) -> Step {
        let mut step = Step::default();
        s.on_frame(Frame::Text(text), &mut step).unwrap();
        step
    }

    #[test]
    fn symbols_urls_and_subscriptions() {
        let mut p = BinanceProtocol::default();
        assert_eq!(p.exchange_symbol("ETH/USDT"), "ETHUSDT");
        assert_eq!(
            p.snapshot_url("https://api.binance.com/", "ETH/USDT")
                .unwrap(),
            "https://api.binance.com/api/v3/depth?symbol=ETHUSDT&limit=1000"
        );
        assert_eq!(
            p.snapshot_instrument(
                "https://fapi.binance.com/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
            ),
            Some("SUSHI/USDT".to_string())
        );
        assert_eq!(
            p.snapshot_instrument("https://api.binance.com/api/v3/exchangeInfo"),
            None
        );
        let sub = p.subscribe(&["ETH/USDT".to_string()]);
        assert_eq!(
            sub,
            vec![
                r#"{"id":1,"method":"SUBSCRIBE","params":["ethusdt@depth@100ms","ethusdt@aggTrade"]}"#
            ]
        );
    }

    #[test]
    fn spot_diffs_align_with_the_rest_snapshot_and_gaps_resync() {
        let mut s = session();
        let d = |u0: u64, u1: u64, bid: &str| {
            format!(
                r#"{{"stream":"ethusdt@depth@100ms","data":{{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":{u0},"u":{u1},"b":[["{bid}","1.00000000"]],"a":[["2001.00000000","2.00000000"]]}}}}"#
            )
        };
        let step = frame(&mut s, &d(5, 8, "1999.00000000"));
        assert_eq!(
            step.actions,
            vec![crate::feeds::venue::Action::FetchSnapshot(
                "ETH/USDT".into()
            )]
        );
        frame(&mut s, &d(9, 12, "1998.00000000"));
        let snap = s
            .protocol()
            .parse_snapshot(
                "ETH/USDT",
                r#"{"lastUpdateId":10,"bids":[["2000.00000000","3.00000000"]],"asks":[]}"#,
            )
            .unwrap();
        let mut step = Step::default();
        s.on_rest_snapshot(snap, &mut step);
        let book = s.book("ETH/USDT").unwrap();
        assert_eq!(
            book.best_bid().unwrap().price,
            Price::parse("2000").unwrap()
        );
        assert_eq!(book.best_ask().unwrap().qty, Qty::parse("2").unwrap());
        assert_eq!(
            book.depth(crate::market::types::Side::Buy),
            2,
            "8 dropped, 9..12 applied"
        );
        let step = frame(&mut s, &d(14, 15, "1997.00000000"));
        assert!(matches!(step.events[0], NormEvent::Integrity { .. }));
        assert!(s.book("ETH/USDT").is_none());
    }

    #[test]
    fn futures_pu_chain_bridges_the_snapshot() {
        let mut s = session();
        let d = |u0: u64, u1: u64, pu: u64| {
            format!(
                r#"{{"e":"depthUpdate","E":1,"T":1,"s":"BTCUSDT","U":{u0},"u":{u1},"pu":{pu},"b":[["100.0","1"]],"a":[["101.0","1"]]}}"#
            )
        };
        frame(&mut s, &d(90, 95, 80));
        frame(&mut s, &d(96, 120, 95));
        let snap = s
            .protocol()
            .parse_snapshot(
                "BTC/USDT",
                r#"{"lastUpdateId":100,"E":1,"T":1,"bids":[],"asks":[]}"#,
            )
            .unwrap();
        let mut step = Step::default();
        s.on_rest_snapshot(snap, &mut step);
        assert!(step.events.is_empty(), "{:?}", step.events);
        assert!(s.book("BTC/USDT").is_some());
        // Ids jump on futures: only `pu` links the diffs.
        assert!(
            frame(&mut s, &d(130, 140, 120))
                .events
                .iter()
                .all(|e| matches!(e, NormEvent::BookDelta(_)))
        );
        let broken = frame(&mut s, &d(150, 160, 145));
        assert!(matches!(broken.events[0], NormEvent::Integrity { .. }));
    }

    #[test]
    fn trades_tickers_and_errors() {
        let mut s = session();
        let step = frame(
            &mut s,
            r#"{"stream":"ethusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"ETHUSDT","a":7,"p":"2000.10","q":"0.5","f":1,"l":2,"T":3,"m":true,"M":true}}"#,
        );
        match &step.events[0] {
            NormEvent::Trade(t) => {
                assert_eq!(t.symbol, "ETH/USDT");
                assert_eq!(t.id, 7);
            }
            other => panic!("{other:?}"),
        }
        let mut step = Step::default();
        assert!(matches!(
            s.on_frame(Frame::Text(r#"{"code":2,"msg":"bad","id":1}"#), &mut step),
            Err(VenueError::Exchange(_))
        ));
        assert!(matches!(
            s.on_frame(Frame::Binary(b"x"), &mut step),
            Err(VenueError::FrameType(_))
        ));
        assert!(matches!(
            s.on_frame(Frame::Text("{"), &mut step),
            Err(VenueError::Json(_))
        ));
    }
}
