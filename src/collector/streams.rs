//! Redis key and stream names, and the encoding of stream entries. Pure logic: no I/O.
//!
//! Streams: `{prefix}:{exchange}:{symbol}:{trades|depth|candles}`, one entry per event with a
//! single field `d` holding the record as JSON (exact integers for prices and quantities).
//! Keys with the latest state: `{prefix}:{exchange}:{symbol}:{cob|heatmap|book}`.

use serde::de::DeserializeOwned;

use super::record::{BookImage, CandleRecord, DepthRecord, RecordBody};
use crate::market::types::Trade;

/// The field holding an entry's JSON.
pub const FIELD: &str = "d";

/// Kinds of stream per symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// Trades.
    Trades,
    /// Diff-depth updates.
    Depth,
    /// Closed candles.
    Candles,
}

impl StreamKind {
    /// Every kind, in the order a consumer reads them.
    pub const ALL: [StreamKind; 3] = [StreamKind::Trades, StreamKind::Depth, StreamKind::Candles];

    /// Name used in the stream key.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Trades => "trades",
            StreamKind::Depth => "depth",
            StreamKind::Candles => "candles",
        }
    }
}

/// Latest-state keys per symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatestKind {
    /// The latest COB computation.
    Cob,
    /// The latest heatmap rows.
    Heatmap,
    /// The latest full book image.
    Book,
}

impl LatestKind {
    /// Name used in the key.
    pub fn as_str(self) -> &'static str {
        match self {
            LatestKind::Cob => "cob",
            LatestKind::Heatmap => "heatmap",
            LatestKind::Book => "book",
        }
    }
}

/// A stream key.
pub fn stream_key(prefix: &str, exchange: &str, symbol: &str, kind: StreamKind) -> String {
    format!("{prefix}:{exchange}:{symbol}:{}", kind.as_str())
}

/// A latest-state key.
pub fn latest_key(prefix: &str, exchange: &str, symbol: &str, kind: LatestKind) -> String {
    format!("{prefix}:{exchange}:{symbol}:{}", kind.as_str())
}

/// Where a record goes in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Appended to a stream.
    Stream(StreamKind),
    /// Replaces a latest-state key.
    Latest(LatestKind),
    /// Not published (database only).
    None,
}

/// The Redis target of a record and its JSON payload.
pub fn encode(body: &RecordBody) -> (Target, Option<String>) {
    let (target, json) = match body {
        RecordBody::Trade(t) => (Target::Stream(StreamKind::Trades), serde_json::to_string(t)),
        RecordBody::Depth(d) => (Target::Stream(StreamKind::Depth), serde_json::to_string(d)),
        RecordBody::Candle(c) => (
            Target::Stream(StreamKind::Candles),
            serde_json::to_string(c),
        ),
        RecordBody::Cob { cob, .. } => (
            Target::Latest(LatestKind::Cob),
            serde_json::to_string(cob.as_ref()),
        ),
        RecordBody::Heatmap { rows, .. } => (
            Target::Latest(LatestKind::Heatmap),
            serde_json::to_string(rows.as_ref()),
        ),
        RecordBody::Book(b) => (Target::Latest(LatestKind::Book), serde_json::to_string(b)),
        RecordBody::BookTop(_) => return (Target::None, None),
    };
    // Serialising these plain structs cannot fail; a failure would only drop the payload.
    (target, json.ok())
}

/// A stream entry that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The entry has no `d` field.
    #[error("stream entry {id} has no field `{FIELD}`")]
    MissingField {
        /// Entry id.
        id: String,
    },
    /// The payload is not the expected JSON.
    #[error("stream entry {id} of {kind}: {message}")]
    Json {
        /// Entry id.
        id: String,
        /// Stream kind.
        kind: &'static str,
        /// Parser message.
        message: String,
    },
}

/// One decoded stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A trade.
    Trade(Trade),
    /// A depth diff.
    Depth(DepthRecord),
    /// A closed candle.
    Candle(CandleRecord),
}

fn parse<T: DeserializeOwned>(id: &str, kind: StreamKind, data: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(data).map_err(|e| DecodeError::Json {
        id: id.to_string(),
        kind: kind.as_str(),
        message: e.to_string(),
    })
}

/// Decodes an entry's `d` payload read from a stream of `kind`.
pub fn decode(kind: StreamKind, id: &str, data: Option<&[u8]>) -> Result<StreamItem, DecodeError> {
    let data = data.ok_or_else(|| DecodeError::MissingField { id: id.to_string() })?;
    Ok(match kind {
        StreamKind::Trades => StreamItem::Trade(parse(id, kind, data)?),
        StreamKind::Depth => StreamItem::Depth(parse(id, kind, data)?),
        StreamKind::Candles => StreamItem::Candle(parse(id, kind, data)?),
    })
}

/// Decodes a stored book image.
pub fn decode_book(data: &[u8]) -> Result<BookImage, serde_json::Error> {
    serde_json::from_slice(data)
}

/// The millisecond part of a stream entry id (`1700000000000-3`).
pub fn id_millis(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Candle, Price, Qty, Side, Timeframe};

    #[test]
    fn records_round_trip_through_their_stream_encoding() {
        let t = Trade {
            symbol: "BTCUSDT".into(),
            id: 42,
            time_ms: 1_700_000_000_000,
            price: Price::parse("65000.12345678").unwrap(),
            qty: Qty::parse("0.001").unwrap(),
            taker_side: Side::Sell,
        };
        let (target, json) = encode(&RecordBody::Trade(t.clone()));
        assert_eq!(target, Target::Stream(StreamKind::Trades));
        let back = decode(
            StreamKind::Trades,
            "1-0",
            json.as_deref().map(str::as_bytes),
        )
        .unwrap();
        assert_eq!(back, StreamItem::Trade(t));

        let c = CandleRecord {
            symbol: "BTCUSDT".into(),
            timeframe: Timeframe::M1,
            candle: Candle {
                open_time_ms: 60_000,
                open: Price::from_units(1),
                high: Price::from_units(3),
                low: Price::from_units(1),
                close: Price::from_units(2),
                volume: Qty::parse("1.5").unwrap(),
                trades: 3,
            },
        };
        let (target, json) = encode(&RecordBody::Candle(c.clone()));
        assert_eq!(target, Target::Stream(StreamKind::Candles));
        let back = decode(
            StreamKind::Candles,
            "1-0",
            json.as_deref().map(str::as_bytes),
        )
        .unwrap();
        assert_eq!(back, StreamItem::Candle(c));
    }

    #[test]
    fn bad_entries_are_typed_errors() {
        assert!(matches!(
            decode(StreamKind::Trades, "5-1", None),
            Err(DecodeError::MissingField { .. })
        ));
        let e = decode(StreamKind::Depth, "5-1", Some(b"{\"symbol\":1}")).unwrap_err();
        assert!(
            e.to_string().contains("5-1") && e.to_string().contains("depth"),
            "{e}"
        );
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(
            stream_key("mm", "sim", "ETHUSDT", StreamKind::Depth),
            "mm:sim:ETHUSDT:depth"
        );
        assert_eq!(
            latest_key("mm", "binance", "BTCUSDT", LatestKind::Cob),
            "mm:binance:BTCUSDT:cob"
        );
        assert_eq!(id_millis("1700000000000-3"), Some(1_700_000_000_000));
        assert_eq!(id_millis("x"), None);
    }
}
