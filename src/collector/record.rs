//! Normalized records the collector stores and publishes, whatever the source exchange.
//!
//! Connectors produce exchange-specific events; [`records_from_feed_event`] turns Binance (and
//! simulator) events into [`MarketRecord`]s, and other exchanges' connectors only need their own
//! conversion to plug into the same sinks. Pure logic: no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::feeds::binance::connector::FeedEvent;
use crate::feeds::binance::wire::{BinanceEvent, DepthSnapshot, DepthUpdate};
use crate::market::cob::{CobSnapshot, HeatmapRow};
use crate::market::types::{Candle, Level, Timeframe, Trade};

/// One diff-depth update in exchange-neutral form (Binance `U`/`u` semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthRecord {
    /// Exchange symbol.
    pub symbol: String,
    /// Exchange event time, ms.
    pub event_time_ms: i64,
    /// First update id covered.
    pub first_update_id: u64,
    /// Last update id covered.
    pub final_update_id: u64,
    /// Bid levels (absolute quantity; zero removes).
    pub bids: Vec<Level>,
    /// Ask levels (absolute quantity; zero removes).
    pub asks: Vec<Level>,
}

impl DepthRecord {
    /// From a Binance diff.
    pub fn from_update(d: &DepthUpdate) -> Self {
        Self {
            symbol: d.symbol.clone(),
            event_time_ms: d.event_time_ms,
            first_update_id: d.first_update_id,
            final_update_id: d.final_update_id,
            bids: d.bids.clone(),
            asks: d.asks.clone(),
        }
    }

    /// Back into the diff the book synchroniser consumes.
    pub fn to_update(&self) -> DepthUpdate {
        DepthUpdate {
            symbol: self.symbol.clone(),
            event_time_ms: self.event_time_ms,
            transaction_time_ms: None,
            first_update_id: self.first_update_id,
            final_update_id: self.final_update_id,
            prev_final_update_id: None,
            bids: self.bids.clone(),
            asks: self.asks.clone(),
        }
    }
}

/// A full local book at one update id: what a late consumer synchronises from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookImage {
    /// Exchange symbol.
    pub symbol: String,
    /// When the image was taken, ms.
    pub time_ms: i64,
    /// Update id the image reflects.
    pub last_update_id: u64,
    /// Bids, best first.
    pub bids: Vec<Level>,
    /// Asks, best first.
    pub asks: Vec<Level>,
}

impl BookImage {
    /// As the REST depth snapshot the synchroniser expects.
    pub fn to_snapshot(&self) -> DepthSnapshot {
        DepthSnapshot {
            last_update_id: self.last_update_id,
            event_time_ms: None,
            transaction_time_ms: None,
            bids: self.bids.clone(),
            asks: self.asks.clone(),
        }
    }
}

/// A closed candle of one symbol and timeframe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandleRecord {
    /// Exchange symbol.
    pub symbol: String,
    /// Timeframe.
    pub timeframe: Timeframe,
    /// The candle.
    pub candle: Candle,
}

/// Best bid and ask of one symbol at one second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookTopRecord {
    /// Exchange symbol.
    pub symbol: String,
    /// Sample time, ms.
    pub time_ms: i64,
    /// Best bid.
    pub bid: Option<Level>,
    /// Best ask.
    pub ask: Option<Level>,
}

/// One normalized market record, tagged with the exchange it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketRecord {
    /// Exchange name (`binance`, `sim`, …).
    pub exchange: Arc<str>,
    /// What happened.
    pub body: RecordBody,
}

/// The payload of a [`MarketRecord`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RecordBody {
    /// A trade (stored and streamed).
    Trade(Trade),
    /// A diff-depth update (streamed only: the book is rebuilt from it).
    Depth(DepthRecord),
    /// A closed candle (stored and streamed).
    Candle(CandleRecord),
    /// Best bid/ask sample (stored).
    BookTop(BookTopRecord),
    /// A COB computation (stored; latest kept in Redis).
    Cob {
        /// Exchange symbol.
        symbol: String,
        /// The computation.
        cob: Arc<CobSnapshot>,
    },
    /// The newest heatmap rows (latest kept in Redis).
    Heatmap {
        /// Exchange symbol.
        symbol: String,
        /// Rows, oldest first.
        rows: Arc<Vec<HeatmapRow>>,
    },
    /// A full book image (latest kept in Redis for consumers to sync from).
    Book(BookImage),
}

impl RecordBody {
    /// The symbol the record concerns.
    pub fn symbol(&self) -> &str {
        match self {
            RecordBody::Trade(t) => &t.symbol,
            RecordBody::Depth(d) => &d.symbol,
            RecordBody::Candle(c) => &c.symbol,
            RecordBody::BookTop(b) => &b.symbol,
            RecordBody::Cob { symbol, .. } | RecordBody::Heatmap { symbol, .. } => symbol,
            RecordBody::Book(b) => &b.symbol,
        }
    }

    /// True for records that go to the database.
    pub fn is_stored(&self) -> bool {
        matches!(
            self,
            RecordBody::Trade(_)
                | RecordBody::Candle(_)
                | RecordBody::BookTop(_)
                | RecordBody::Cob { .. }
        )
    }
}

/// The records carried by one connector event (trades and depth; candles, tops and COB come
/// from the market state once a second).
pub fn records_from_feed_event(exchange: &Arc<str>, ev: &FeedEvent, out: &mut Vec<MarketRecord>) {
    let rec = |body| MarketRecord {
        exchange: exchange.clone(),
        body,
    };
    match ev {
        FeedEvent::Market(BinanceEvent::AggTrade(t) | BinanceEvent::Trade(t)) => {
            out.push(rec(RecordBody::Trade(t.clone())));
        }
        FeedEvent::Market(BinanceEvent::Depth(d)) => {
            out.push(rec(RecordBody::Depth(DepthRecord::from_update(d))));
        }
        FeedEvent::RecoveredTrades { trades, .. } => {
            out.extend(trades.iter().map(|t| rec(RecordBody::Trade(t.clone()))));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty, Side};

    fn trade(id: u64) -> Trade {
        Trade {
            symbol: "ETHUSDT".into(),
            id,
            time_ms: 1_000 + id as i64,
            price: Price::parse("2500.01").unwrap(),
            qty: Qty::parse("0.5").unwrap(),
            taker_side: Side::Buy,
        }
    }

    #[test]
    fn trades_depth_and_recovered_trades_become_records() {
        let ex: Arc<str> = Arc::from("sim");
        let mut out = Vec::new();
        records_from_feed_event(
            &ex,
            &FeedEvent::Market(BinanceEvent::AggTrade(trade(1))),
            &mut out,
        );
        let d = DepthUpdate {
            symbol: "ETHUSDT".into(),
            event_time_ms: 5,
            first_update_id: 10,
            final_update_id: 12,
            bids: vec![Level {
                price: Price::from_units(1),
                qty: Qty::ZERO,
            }],
            ..DepthUpdate::default()
        };
        records_from_feed_event(
            &ex,
            &FeedEvent::Market(BinanceEvent::Depth(d.clone())),
            &mut out,
        );
        records_from_feed_event(
            &ex,
            &FeedEvent::RecoveredTrades {
                symbol: "ETHUSDT".into(),
                trades: vec![trade(2), trade(3)],
                complete: true,
            },
            &mut out,
        );
        records_from_feed_event(&ex, &FeedEvent::Connected { connects: 1 }, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].body, RecordBody::Trade(trade(1)));
        match &out[1].body {
            RecordBody::Depth(r) => assert_eq!(r.to_update(), d),
            other => panic!("{other:?}"),
        }
        assert!(out[0].body.is_stored() && !out[1].body.is_stored());
        assert!(out.iter().all(|r| r.body.symbol() == "ETHUSDT"));
    }
}
