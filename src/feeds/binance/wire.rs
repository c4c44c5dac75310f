//! Binance websocket and REST wire formats (spot and USD-M futures) turned into normalized values.
//!
//! Every price and quantity is parsed from its JSON string straight into [`Price`]/[`Qty`]; no
//! value ever passes through `f64`. Malformed or unknown input yields a [`FrameError`] whose
//! [`FrameError::kind`] is a short static category, so callers can count and skip.
//!
//! Speed: the common frames (`{"stream":..,"data":{"e":..}}`, bookTicker, snapshots) are
//! recognised by their leading bytes and parsed in a single serde pass; anything else (other key
//! order, unusual shapes) falls back to a generic but slower two-pass route, so the fast path is
//! an optimisation, never a different interpretation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::market::instrument::Instrument;
use crate::market::types::{
    Candle, FixedParseError, Level, Price, Qty, SCALE, Side, Timeframe, Trade,
};

/// Marker that lets a serde error raised inside a number visitor be recognised as a bad number.
const BAD_NUMBER_MARK: &str = "bad number";
/// Longest excerpt of offending input kept inside an error (frames can be megabytes long).
const EXCERPT_LEN: usize = 96;

/// Why a frame or REST body could not be turned into a [`BinanceEvent`] (or REST value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Nothing but whitespace.
    #[error("empty frame")]
    Empty,
    /// Not valid JSON (syntax error or truncated input).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A required field is absent.
    #[error("missing field: {0}")]
    MissingField(String),
    /// A price, quantity or id that is not an exact decimal in range.
    #[error("bad number: {0}")]
    BadNumber(String),
    /// A field with the wrong JSON type or shape.
    #[error("bad field: {0}")]
    BadField(String),
    /// A well-formed event whose `e` type this parser does not handle.
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
    /// Valid JSON that matches no known Binance message shape.
    #[error("unrecognised message shape")]
    UnknownShape,
    /// The exchange answered with an error body `{"code":..,"msg":..}`.
    #[error("exchange error {code}: {msg}")]
    Exchange {
        /// Binance error code (negative for REST errors).
        code: i64,
        /// Binance error text.
        msg: String,
    },
}

impl FrameError {
    /// Short static category, stable for counting and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Empty => "empty",
            FrameError::Json(_) => "json",
            FrameError::MissingField(_) => "missing_field",
            FrameError::BadNumber(_) => "bad_number",
            FrameError::BadField(_) => "bad_field",
            FrameError::UnknownEvent(_) => "unknown_event",
            FrameError::UnknownShape => "unknown_shape",
            FrameError::Exchange { .. } => "exchange_error",
        }
    }
}

fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_LEN {
        return text.to_owned();
    }
    let mut end = EXCERPT_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let msg = excerpt(&e.to_string());
        match e.classify() {
            Category::Data if msg.starts_with("missing field") => FrameError::MissingField(msg),
            Category::Data if msg.starts_with(BAD_NUMBER_MARK) => FrameError::BadNumber(msg),
            Category::Data => FrameError::BadField(msg),
            Category::Syntax | Category::Eof | Category::Io => FrameError::Json(msg),
        }
    }
}

fn bad_number<E: de::Error>(err: FixedParseError) -> E {
    let text = err.to_string();
    E::custom(format_args!("{BAD_NUMBER_MARK}: {}", excerpt(&text)))
}

/// Counts frame errors per kind and rate-limits their logging (pure; the caller supplies time).
#[derive(Debug, Clone, Default)]
pub struct FrameErrorCounter {
    per_kind: HashMap<&'static str, KindCount>,
}

#[derive(Debug, Clone, Copy)]
struct KindCount {
    count: u64,
    last_logged_ms: Option<i64>,
}

impl FrameErrorCounter {
    /// At most one log line per kind within this window.
    pub const LOG_INTERVAL_MS: i64 = 60_000;

    /// An empty counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one error; returns true when this kind may be logged now (first time, or at least
    /// [`Self::LOG_INTERVAL_MS`] since it was last allowed).
    pub fn record(&mut self, err: &FrameError, now_ms: i64) -> bool {
        self.record_kind(err.kind(), now_ms)
    }

    /// Counts one error of a kind given by name; same logging rule as [`Self::record`].
    pub fn record_kind(&mut self, kind: &'static str, now_ms: i64) -> bool {
        let entry = self.per_kind.entry(kind).or_insert(KindCount {
            count: 0,
            last_logged_ms: None,
        });
        entry.count += 1;
        let may_log = match entry.last_logged_ms {
            None => true,
            Some(last) => now_ms.saturating_sub(last) >= Self::LOG_INTERVAL_MS,
        };
        if may_log {
            entry.last_logged_ms = Some(now_ms);
        }
        may_log
    }

    /// Errors counted for one kind.
    pub fn count(&self, kind: &str) -> u64 {
        self.per_kind.get(kind).map_or(0, |k| k.count)
    }

    /// Errors counted over all kinds.
    pub fn total(&self) -> u64 {
        self.per_kind.values().map(|k| k.count).sum()
    }

    /// `(kind, count)` pairs sorted by kind, for reports.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self.per_kind.iter().map(|(k, c)| (*k, c.count)).collect();
        v.sort_unstable();
        v
    }
}

/// Exact quote-asset amount scaled by [`SCALE`], as [`crate::market::types::notional`] returns:
/// monthly quote volumes (4.2e11 USDT on BTCUSDT) overflow the `i64` of [`Price`].
pub type QuoteAmount = i128;

/// One diff-depth event (`depthUpdate`); futures events also carry `pu` and `T`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepthUpdate {
    /// Exchange symbol, uppercase.
    pub symbol: String,
    /// Event time `E`, ms.
    pub event_time_ms: i64,
    /// Transaction time `T` (futures only), ms.
    pub transaction_time_ms: Option<i64>,
    /// First update id in the event (`U`).
    pub first_update_id: u64,
    /// Final update id in the event (`u`).
    pub final_update_id: u64,
    /// Final update id of the previous event (`pu`, futures only; `-1` on the wire = `None`).
    pub prev_final_update_id: Option<u64>,
    /// Bid levels: new absolute quantity per price; zero removes.
    pub bids: Vec<Level>,
    /// Ask levels: new absolute quantity per price; zero removes.
    pub asks: Vec<Level>,
}

/// A full top-of-book snapshot: REST `/depth` response or a partial-depth stream push.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DepthSnapshot {
    /// Update id the snapshot reflects.
    pub last_update_id: u64,
    /// Message output time `E` (futures REST only), ms.
    pub event_time_ms: Option<i64>,
    /// Transaction time `T` (futures REST only), ms.
    pub transaction_time_ms: Option<i64>,
    /// Bid levels, best first as sent.
    pub bids: Vec<Level>,
    /// Ask levels, best first as sent.
    pub asks: Vec<Level>,
}

/// Best bid and ask pushed by the `bookTicker` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookTicker {
    /// Exchange symbol.
    pub symbol: String,
    /// Order-book update id this top of book corresponds to.
    pub update_id: u64,
    /// Best bid price and quantity.
    pub bid: Level,
    /// Best ask price and quantity.
    pub ask: Level,
    /// Event time `E` (futures only), ms.
    pub event_time_ms: Option<i64>,
}

/// Rolling 24 h statistics (`24hrTicker`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker24h {
    /// Exchange symbol.
    pub symbol: String,
    /// Event time, ms.
    pub event_time_ms: i64,
    /// Absolute price change over the window.
    pub price_change: Price,
    /// Price change in percent (exact decimal, e.g. 2.5 = 2.5 %).
    pub price_change_percent: Price,
    /// Volume-weighted average price.
    pub weighted_avg_price: Price,
    /// Last trade price.
    pub last_price: Price,
    /// Last trade quantity.
    pub last_qty: Qty,
    /// Best bid (spot streams carry it; absent on futures).
    pub best_bid: Option<Level>,
    /// Best ask (spot streams carry it; absent on futures).
    pub best_ask: Option<Level>,
    /// Open price of the window.
    pub open: Price,
    /// Highest price of the window.
    pub high: Price,
    /// Lowest price of the window.
    pub low: Price,
    /// Base-asset volume.
    pub base_volume: Qty,
    /// Quote-asset volume (quote units, exact).
    pub quote_volume: QuoteAmount,
    /// Window open time, ms.
    pub open_time_ms: i64,
    /// Window close time, ms.
    pub close_time_ms: i64,
    /// Number of trades in the window.
    pub trade_count: u64,
}

/// One kline (candlestick) update from the stream or one REST kline row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    /// Exchange symbol (empty for REST rows, which the request names instead).
    pub symbol: String,
    /// Binance interval name (`1s`, `1m`, `3m`, ... `1M`).
    pub interval: String,
    /// The candle (open time, OHLC, base volume, trade count).
    pub candle: Candle,
    /// Close time (ms, next open − 1).
    pub close_time_ms: i64,
    /// Quote-asset volume (quote units, exact).
    pub quote_volume: QuoteAmount,
    /// Taker-buy base volume.
    pub taker_buy_base_volume: Qty,
    /// Taker-buy quote volume (quote units, exact).
    pub taker_buy_quote_volume: QuoteAmount,
    /// True on the final update of a bar (stream `x`; REST rows report false).
    pub closed: bool,
}

impl Kline {
    /// The interval as one of the workstation's kept timeframes, if it is one.
    pub fn timeframe(&self) -> Option<Timeframe> {
        Timeframe::parse(&self.interval)
    }
}

/// A subscription-control reply `{"result":..,"id":..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Request id as JSON text (`1`, `"abc"` or `null`).
    pub id: String,
    /// Result as JSON text (`null` on success of a non-query request).
    pub result: String,
}

/// An error reply on the websocket control channel `{"code":..,"msg":..,"id":..}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// Binance code.
    pub code: i64,
    /// Binance message.
    pub msg: String,
    /// Request id as JSON text, when present.
    pub id: Option<String>,
}

/// A normalized Binance websocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinanceEvent {
    /// Diff-depth event.
    Depth(DepthUpdate),
    /// Partial-depth push (top N levels); `symbol` comes from the stream name, `None` on a raw
    /// connection where no stream name is available.
    PartialDepth {
        /// Symbol taken from the combined-stream name.
        symbol: Option<String>,
        /// The top-N book.
        snapshot: DepthSnapshot,
    },
    /// One individual trade (`trade` stream).
    Trade(Trade),
    /// One aggregate trade (`aggTrade` stream); `Trade::id` is the aggregate id.
    AggTrade(Trade),
    /// Best bid/ask.
    BookTicker(BookTicker),
    /// Rolling 24 h ticker.
    Ticker(Ticker24h),
    /// Kline update.
    Kline(Kline),
    /// Subscription-control acknowledgement.
    Ack(Ack),
    /// Error reply to a control request.
    Error(ErrorReply),
    /// The server announces it will close the connection soon (maintenance).
    Shutdown {
        /// Event time, ms.
        event_time_ms: i64,
    },
}

impl BinanceEvent {
    /// The symbol the event concerns, when it names one.
    pub fn symbol(&self) -> Option<&str> {
        match self {
            BinanceEvent::Depth(d) => Some(&d.symbol),
            BinanceEvent::PartialDepth { symbol, .. } => symbol.as_deref(),
            BinanceEvent::Trade(t) | BinanceEvent::AggTrade(t) => Some(&t.symbol),
            BinanceEvent::BookTicker(b) => Some(&b.symbol),
            BinanceEvent::Ticker(t) => Some(&t.symbol),
            BinanceEvent::Kline(k) => Some(&k.symbol),
            BinanceEvent::Ack(_) | BinanceEvent::Error(_) | BinanceEvent::Shutdown { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exact-number and level deserializers.

/// Powers of ten that scale `n` fraction digits up to 8 decimals (index = digits given).
const FRACTION_SCALE: [i64; 9] = [
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// Exact decimal in the canonical Binance form (unsigned, at most 10 integer digits, at most 8
/// fraction digits); anything else returns `None` and goes to the general
/// [`crate::market::types::parse_fixed`], so results never differ, only speed.
#[inline]
fn fixed_fast(t: &[u8]) -> Option<i64> {
    let mut int: i64 = 0;
    let mut i = 0;
    while let Some(&c) = t.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        int = int * 10 + i64::from(c - b'0');
        i += 1;
        if i > 10 {
            return None;
        }
    }
    if i == 0 {
        return None;
    }
    let mut frac: i64 = 0;
    let mut digits = 0;
    if let Some(&c) = t.get(i) {
        if c != b'.' {
            return None;
        }
        for &c in &t[i + 1..] {
            if !c.is_ascii_digit() || digits == 8 {
                return None;
            }
            frac = frac * 10 + i64::from(c - b'0');
            digits += 1;
        }
    }
    Some(int * SCALE + frac * FRACTION_SCALE[digits])
}

/// Exact decimal: the fast canonical form first, the general parser otherwise.
#[inline]
fn fixed(t: &[u8]) -> Result<i64, FixedParseError> {
    match fixed_fast(t) {
        Some(v) => Ok(v),
        None => crate::market::types::parse_fixed(t),
    }
}

/// A JSON string holding an exact decimal, parsed on the fly (no allocation, borrowed or not).
struct Fx(i64);

impl<'de> Deserialize<'de> for Fx {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Fx;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal number as a JSON string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Fx, E> {
                fixed(s.as_bytes()).map(Fx).map_err(bad_number)
            }
        }
        d.deserialize_str(V)
    }
}

impl Fx {
    fn price(self) -> Price {
        Price(self.0)
    }
    fn qty(self) -> Qty {
        Qty(self.0)
    }
}

/// Exact decimal into `i128` scaled by [`SCALE`] (quote amounts beyond the `i64` range).
fn parse_wide(t: &[u8]) -> Result<i128, FixedParseError> {
    let lossy = || excerpt(&String::from_utf8_lossy(t));
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(_) => (false, t),
        None => return Err(FixedParseError::Empty),
    };
    let (int_part, frac_part) = match digits.iter().position(|&c| c == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(FixedParseError::Invalid(lossy()));
    }
    let mut value: i128 = 0;
    for &c in int_part {
        if !c.is_ascii_digit() {
            return Err(FixedParseError::Invalid(lossy()));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(c - b'0')))
            .ok_or_else(|| FixedParseError::Overflow(lossy()))?;
    }
    let mut frac: i128 = 0;
    for (i, &c) in frac_part.iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(FixedParseError::Invalid(lossy()));
        }
        if i < 8 {
            frac = frac * 10 + i128::from(c - b'0');
        } else if c != b'0' {
            return Err(FixedParseError::TooPrecise(lossy()));
        }
    }
    let frac_digits = frac_part.len().min(8);
    frac *= 10i128.pow(8 - frac_digits as u32);
    let v = value
        .checked_mul(i128::from(SCALE))
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(|| FixedParseError::Overflow(lossy()))?;
    Ok(if neg { -v } else { v })
}

/// A JSON string holding a wide exact decimal (see [`parse_wide`]).
struct Wide(i128);

impl<'de> Deserialize<'de> for Wide {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Wide;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal number as a JSON string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Wide, E> {
                parse_wide(s.as_bytes()).map(Wide).map_err(bad_number)
            }
        }
        d.deserialize_str(V)
    }
}

/// Appends `[price, qty, ...]` pairs to an existing vector (so hot paths can reuse buffers).
struct LevelsInto<'v>(&'v mut Vec<Level>);

impl<'de> DeserializeSeed<'de> for LevelsInto<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for LevelsInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [price, quantity] string pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(level) = seq.next_element::<LevelWire>()? {
            self.0.push(level.0);
        }
        Ok(())
    }
}

/// One `[price, qty]` pair; extra trailing elements (seen in old formats) are ignored.
struct LevelWire(Level);

impl<'de> Deserialize<'de> for LevelWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LevelWire;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a [price, quantity] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LevelWire, A::Error> {
                let price: Fx = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let qty: Fx = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                if qty.0 < 0 {
                    return Err(de::Error::custom(format_args!(
                        "{BAD_NUMBER_MARK}: negative quantity"
                    )));
                }
                Ok(LevelWire(Level {
                    price: price.price(),
                    qty: qty.qty(),
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A level list deserialized into a fresh vector.
struct Levels(Vec<Level>);

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Vec::new();
        LevelsInto(&mut v).deserialize(d)?;
        Ok(Levels(v))
    }
}

/// Deserializes any value and records only that the key was present (even when it is `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

// ---------------------------------------------------------------------------------------------
// Wire structs.

#[derive(Deserialize)]
struct TradeWire<'a> {
    #[serde(borrow, rename = "s")]
    symbol: Cow<'a, str>,
    #[serde(rename = "t")]
    id: u64,
    #[serde(rename = "p")]
    price: Fx,
    #[serde(rename = "q")]
    qty: Fx,
    #[serde(rename = "T")]
    time_ms: i64,
    #[serde(rename = "m")]
    buyer_is_maker: bool,
}

#[derive(Deserialize)]
struct AggTradeWire<'a> {
    #[serde(borrow, rename = "s")]
    symbol: Cow<'a, str>,
    #[serde(rename = "a")]
    id: u64,
    #[serde(rename = "p")]
    price: Fx,
    #[serde(rename = "q")]
    qty: Fx,
    #[serde(rename = "T")]
    time_ms: i64,
    #[serde(rename = "m")]
    buyer_is_maker: bool,
}

fn taker_side(buyer_is_maker: bool) -> Side {
    // The maker buyer means the aggressor sold.
    if buyer_is_maker {
        Side::Sell
    } else {
        Side::Buy
    }
}

#[derive(Deserialize)]
struct BookTickerWire<'a> {
    #[serde(borrow, rename = "s")]
    symbol: Cow<'a, str>,
    #[serde(rename = "u")]
    update_id: u64,
    #[serde(rename = "b")]
    bid: Fx,
    #[serde(rename = "B")]
    bid_qty: Fx,
    #[serde(rename = "a")]
    ask: Fx,
    #[serde(rename = "A")]
    ask_qty: Fx,
    #[serde(rename = "E", default)]
    event_time_ms: Option<i64>,
}

#[derive(Deserialize)]
struct SnapshotWire {
    #[serde(rename = "lastUpdateId")]
    last_update_id: u64,
    #[serde(rename = "E", default)]
    event_time_ms: Option<i64>,
    #[serde(rename = "T", default)]
    transaction_time_ms: Option<i64>,
    bids: Levels,
    asks: Levels,
}

impl From<SnapshotWire> for DepthSnapshot {
    fn from(w: SnapshotWire) -> Self {
        DepthSnapshot {
            last_update_id: w.last_update_id,
            event_time_ms: w.event_time_ms,
            transaction_time_ms: w.transaction_time_ms,
            bids: w.bids.0,
            asks: w.asks.0,
        }
    }
}

#[derive(Deserialize)]
struct TickerWire<'a> {
    #[serde(borrow, rename = "s")]
    symbol: Cow<'a, str>,
    #[serde(rename = "E")]
    event_time_ms: i64,
    #[serde(rename = "p")]
    price_change: Fx,
    #[serde(rename = "P")]
    price_change_percent: Fx,
    #[serde(rename = "w")]
    weighted_avg_price: Fx,
    #[serde(rename = "c")]
    last_price: Fx,
    #[serde(rename = "Q")]
    last_qty: Fx,
    #[serde(rename = "b", default)]
    bid: Option<Fx>,
    #[serde(rename = "B", default)]
    bid_qty: Option<Fx>,
    #[serde(rename = "a", default)]
    ask: Option<Fx>,
    #[serde(rename = "A", default)]
    ask_qty: Option<Fx>,
    #[serde(rename = "o")]
    open: Fx,
    #[serde(rename = "h")]
    high: Fx,
    #[serde(rename = "l")]
    low: Fx,
    #[serde(rename = "v")]
    base_volume: Fx,
    #[serde(rename = "q")]
    quote_volume: Wide,
    #[serde(rename = "O")]
    open_time_ms: i64,
    #[serde(rename = "C")]
    close_time_ms: i64,
    #[serde(rename = "n")]
    trade_count: u64,
}

fn level_pair(price: Option<Fx>, qty: Option<Fx>) -> Option<Level> {
    match (price, qty) {
        (Some(p), Some(q)) => Some(Level {
            price: p.price(),
            qty: q.qty(),
        }),
        _ => None,
    }
}

#[derive(Deserialize)]
struct KlineEventWire<'a> {
    #[serde(borrow, rename = "s")]
    symbol: Cow<'a, str>,
    #[serde(borrow, rename = "k")]
    k: KlineBodyWire<'a>,
}

#[derive(Deserialize)]
struct KlineBodyWire<'a> {
    #[serde(rename = "t")]
    open_time_ms: i64,
    #[serde(rename = "T")]
    close_time_ms: i64,
    #[serde(borrow, rename = "i")]
    interval: Cow<'a, str>,
    #[serde(rename = "o")]
    open: Fx,
    #[serde(rename = "c")]
    close: Fx,
    #[serde(rename = "h")]
    high: Fx,
    #[serde(rename = "l")]
    low: Fx,
    #[serde(rename = "v")]
    volume: Fx,
    #[serde(rename = "n")]
    trades: u64,
    #[serde(rename = "x")]
    closed: bool,
    #[serde(rename = "q")]
    quote_volume: Wide,
    #[serde(rename = "V")]
    taker_buy_base: Fx,
    #[serde(rename = "Q")]
    taker_buy_quote: Wide,
}

#[derive(Deserialize)]
struct ShutdownWire {
    #[serde(rename = "E")]
    event_time_ms: i64,
}

#[derive(Deserialize)]
struct AckWire<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorWire<'a> {
    code: i64,
    #[serde(borrow)]
    msg: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Keys whose presence decides the message shape when the fast byte sniff does not apply.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    e: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    stream: bool,
    #[serde(default, deserialize_with = "present")]
    data: bool,
    #[serde(rename = "lastUpdateId", default, deserialize_with = "present")]
    last_update_id: bool,
    #[serde(default, deserialize_with = "present")]
    code: bool,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    u: bool,
}

#[derive(Deserialize)]
struct EnvelopeWire<'a> {
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `pu`: a previous final update id, or `-1` (seen on COIN-M partial-depth pushes) for "none".
struct PrevId(Option<u64>);

impl<'de> Deserialize<'de> for PrevId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PrevId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an update id or -1")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PrevId, E> {
                Ok(PrevId(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PrevId, E> {
                match v {
                    -1 => Ok(PrevId(None)),
                    _ => u64::try_from(v)
                        .map(|v| PrevId(Some(v)))
                        .map_err(|_| E::custom(format_args!("{BAD_NUMBER_MARK}: pu {v}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Depth fields with the level lists written into caller-provided buffers.
struct DepthSeed<'o>(&'o mut DepthUpdate);

impl<'de> DeserializeSeed<'de> for DepthSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DepthSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a depthUpdate object")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.0;
        out.symbol.clear();
        out.bids.clear();
        out.asks.clear();
        out.transaction_time_ms = None;
        out.prev_final_update_id = None;
        let (mut e_time, mut first, mut last, mut sym, mut bids, mut asks) =
            (false, false, false, false, false, false);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "E" => {
                    out.event_time_ms = map.next_value()?;
                    e_time = true;
                }
                "T" => out.transaction_time_ms = Some(map.next_value()?),
                "s" => {
                    let s: Cow<'de, str> = map.next_value()?;
                    out.symbol.push_str(&s);
                    sym = true;
                }
                "U" => {
                    out.first_update_id = map.next_value()?;
                    first = true;
                }
                "u" => {
                    out.final_update_id = map.next_value()?;
                    last = true;
                }
                "pu" => out.prev_final_update_id = map.next_value::<PrevId>()?.0,
                "b" => {
                    if bids {
                        return Err(de::Error::duplicate_field("b"));
                    }
                    map.next_value_seed(LevelsInto(&mut out.bids))?;
                    bids = true;
                }
                "a" => {
                    if asks {
                        return Err(de::Error::duplicate_field("a"));
                    }
                    map.next_value_seed(LevelsInto(&mut out.asks))?;
                    asks = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (seen, name) in [
            (e_time, "E"),
            (sym, "s"),
            (first, "U"),
            (last, "u"),
            (bids, "b"),
            (asks, "a"),
        ] {
            if !seen {
                return Err(de::Error::missing_field(name));
            }
        }
        if out.first_update_id > out.final_update_id {
            return Err(de::Error::custom(format_args!(
                "{BAD_NUMBER_MARK}: first update id U {} above final update id u {}",
                out.first_update_id, out.final_update_id
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Depth fast path.

/// Strict scanner for the canonical `depthUpdate` layout Binance sends (no whitespace, no
/// escapes, known keys only). It returns `None` at the first deviation of any kind and the caller
/// then runs the serde route, which accepts every valid layout and produces the typed error for
/// invalid ones; so this path only ever speeds up, never changes, the result.
fn fast_depth(d: &[u8], out: &mut DepthUpdate) -> Option<()> {
    let mut s = Scan { b: d, i: 0 };
    out.symbol.clear();
    out.bids.clear();
    out.asks.clear();
    out.transaction_time_ms = None;
    out.prev_final_update_id = None;
    let mut seen = 0u16;
    s.eat(b'{')?;
    loop {
        let key = s.string()?;
        s.eat(b':')?;
        let bit = match key {
            b"e" => {
                (s.string()? == b"depthUpdate").then_some(())?;
                1
            }
            b"E" => {
                out.event_time_ms = i64::try_from(s.uint()?).ok()?;
                2
            }
            b"s" => {
                out.symbol.push_str(std::str::from_utf8(s.string()?).ok()?);
                4
            }
            b"U" => {
                out.first_update_id = s.uint()?;
                8
            }
            b"u" => {
                out.final_update_id = s.uint()?;
                16
            }
            b"b" => {
                s.levels(&mut out.bids)?;
                32
            }
            b"a" => {
                s.levels(&mut out.asks)?;
                64
            }
            b"T" => {
                out.transaction_time_ms = Some(i64::try_from(s.uint()?).ok()?);
                128
            }
            b"pu" => {
                out.prev_final_update_id = Some(s.uint()?);
                256
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    let required = 1 | 2 | 4 | 8 | 16 | 32 | 64;
    (s.i == d.len() && seen & required == required).then_some(())?;
    (out.first_update_id <= out.final_update_id).then_some(())
}

/// Eight ASCII digits as their decimal value, or `None` when any byte is not a digit (SWAR, as
/// in fast_float: a digit byte has high nibble 3 both before and after adding 6).
#[inline(always)]
fn eight_digits(bytes: &[u8]) -> Option<i64> {
    let v = u64::from_le_bytes(bytes.try_into().ok()?);
    (non_digit_bytes(v) == 0).then(|| digits_value(v))
}

/// Per byte of a little-endian word: nonzero where the byte is not an ASCII digit. Exact up to
/// and including the first non-digit byte (a carry can only start at a byte `>= 0xFA`), which
/// is all that counting leading digits needs.
#[inline(always)]
fn non_digit_bytes(v: u64) -> u64 {
    let high = (v & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    let plus6 =
        (v.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) ^ 0x3030_3030_3030_3030;
    high | plus6
}

/// Value of eight ASCII digits in a little-endian word (first byte most significant).
#[inline(always)]
fn digits_value(v: u64) -> i64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let d = v.wrapping_sub(0x3030_3030_3030_3030);
    // Pairs of digits into bytes, then pairs of pairs into 32-bit lanes combined by the muls.
    let d = d.wrapping_mul(10).wrapping_add(d >> 8);
    let hi = (d & MASK).wrapping_mul(MUL1);
    let lo = ((d >> 16) & MASK).wrapping_mul(MUL2);
    i64::from((hi.wrapping_add(lo) >> 32) as u32)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// A string without escapes or control characters; returns its content.
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => self.i += 1,
            }
        }
        self.i += 1;
        Some(&self.b[start..self.i - 1])
    }

    /// A quoted canonical decimal (see [`fixed_fast`]) parsed in the same pass that finds its
    /// closing quote; any other text (sign, more decimals, escapes) returns `None`.
    #[inline(always)]
    fn quoted_fixed(&mut self) -> Option<i64> {
        self.eat(b'"')?;
        if let Some(v) = self.swar_fixed() {
            return Some(v);
        }
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut int: i64 = 0;
        while let Some(&c) = b.get(i) {
            if !c.is_ascii_digit() {
                break;
            }
            int = int * 10 + i64::from(c - b'0');
            i += 1;
            if i - start > 10 {
                return None;
            }
        }
        if i == start {
            return None;
        }
        let mut frac: i64 = 0;
        let mut digits = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            // Binance always sends exactly 8 decimals: convert them in one word.
            if b.get(i + 8) == Some(&b'"')
                && let Some(f) = b.get(i..i + 8).and_then(eight_digits)
            {
                self.i = i + 9;
                return Some(int * SCALE + f);
            }
            while let Some(&c) = b.get(i) {
                if !c.is_ascii_digit() {
                    break;
                }
                if digits == 8 {
                    return None;
                }
                frac = frac * 10 + i64::from(c - b'0');
                digits += 1;
                i += 1;
            }
        }
        if b.get(i) != Some(&b'"') {
            return None;
        }
        self.i = i + 1;
        Some(int * SCALE + frac * FRACTION_SCALE[digits])
    }

    /// `I.FFFFFFFF"` with 1 to 7 integer digits and exactly 8 decimals (every Binance price and
    /// quantity) in two SWAR words, consuming the closing quote. `None` sends the caller to the
    /// scalar route, which gives the same value for this form; it never means "invalid".
    #[inline(always)]
    fn swar_fixed(&mut self) -> Option<i64> {
        let (b, i) = (self.b, self.i);
        let word = u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?);
        let n = (non_digit_bytes(word).trailing_zeros() / 8) as usize;
        if n == 0 || n == 8 {
            return None;
        }
        let dot = i + n;
        if b.get(dot) != Some(&b'.') || b.get(dot + 9) != Some(&b'"') {
            return None;
        }
        let frac = eight_digits(b.get(dot + 1..dot + 9)?)?;
        // Left-align the n digits and pad the freed low bytes with '0'.
        let shift = 8 * (8 - n) as u32;
        let padded = (word << shift) | (0x3030_3030_3030_3030u64 >> (64 - shift));
        self.i = dot + 10;
        Some(digits_value(padded) * SCALE + frac)
    }

    /// An unsigned JSON integer (no sign, no leading zero unless it is 0, no fraction).
    #[inline]
    fn uint(&mut self) -> Option<u64> {
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        (n > 0 && !(n > 1 && self.b[start] == b'0')).then_some(v)
    }

    /// `[["price","qty"],...]` appended to `out`; canonical decimals are never negative.
    #[inline]
    fn levels(&mut self, out: &mut Vec<Level>) -> Option<()> {
        self.eat(b'[')?;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'[')?;
            let price = self.quoted_fixed()?;
            self.eat(b',')?;
            let qty = self.quoted_fixed()?;
            self.eat(b']')?;
            out.push(Level {
                price: Price(price),
                qty: Qty(qty),
            });
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frame entry points.

/// Parses one websocket text frame (combined-stream envelope or raw payload).
pub fn parse_frame(text: &str) -> Result<BinanceEvent, FrameError> {
    let mut scratch = DepthUpdate::default();
    match parse_frame_reusing(text, &mut scratch)? {
        Parsed::Depth => Ok(BinanceEvent::Depth(scratch)),
        Parsed::Other(ev) => Ok(ev),
    }
}

/// Result of [`parse_frame_reusing`]: a depth diff lands in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The frame was a `depthUpdate`; it now sits in the buffer passed in.
    Depth,
    /// Any other event.
    Other(BinanceEvent),
}

/// Like [`parse_frame`], but a `depthUpdate` overwrites `depth` in place so its level vectors are
/// reused (the hot path allocates nothing once the buffers are warm). On error `depth` holds
/// unspecified partial content.
pub fn parse_frame_reusing(text: &str, depth: &mut DepthUpdate) -> Result<Parsed, FrameError> {
    let t = text.trim_ascii();
    if t.is_empty() {
        return Err(FrameError::Empty);
    }
    if let Some((stream, data)) = sniff_envelope(t) {
        return parse_payload(data, Some(stream), depth);
    }
    // Raw payloads that open with a key no envelope starts with skip the envelope probe.
    const PAYLOAD_PREFIXES: [&str; 5] = [
        "{\"e\":",
        "{\"u\":",
        "{\"lastUpdateId\":",
        "{\"result\":",
        "{\"code\":",
    ];
    if t.starts_with('{') && !PAYLOAD_PREFIXES.iter().any(|p| t.starts_with(p)) {
        let head: Head = serde_json::from_str(t)?;
        if head.stream && head.data {
            let env: EnvelopeWire = serde_json::from_str(t)?;
            return parse_payload(env.data.get(), Some(&env.stream), depth);
        }
    }
    parse_payload(t, None, depth)
}

/// Splits `{"stream":"NAME","data":PAYLOAD}` without a JSON pass; `None` when the frame does not
/// have exactly this layout (the generic route then handles it).
fn sniff_envelope(t: &str) -> Option<(&str, &str)> {
    let rest = t.strip_prefix("{\"stream\":\"")?;
    let end = rest.find('"')?;
    let stream = &rest[..end];
    if stream.contains('\\') {
        return None;
    }
    let body = rest[end + 1..].strip_prefix(",\"data\":")?;
    let data = body.strip_suffix('}')?.trim_ascii();
    Some((stream, data))
}

/// Event type from a payload starting with `{"e":"NAME"`.
fn sniff_event_type(d: &str) -> Option<&str> {
    let rest = d.strip_prefix("{\"e\":\"")?;
    let end = rest.find('"')?;
    let name = &rest[..end];
    (!name.contains('\\')).then_some(name)
}

#[derive(Clone, Copy)]
enum Shape<'a> {
    Event(&'a str),
    Snapshot,
    BookTicker,
    Ack,
    Error,
}

fn parse_payload(
    d: &str,
    stream: Option<&str>,
    depth: &mut DepthUpdate,
) -> Result<Parsed, FrameError> {
    let d = d.trim_ascii();
    if d.is_empty() {
        return Err(FrameError::Empty);
    }
    if !d.starts_with('{') {
        serde_json::from_str::<IgnoredAny>(d)?;
        return Err(FrameError::UnknownShape);
    }
    let owned_name;
    let shape = if let Some(name) = sniff_event_type(d) {
        Shape::Event(name)
    } else if d.starts_with("{\"u\":") {
        Shape::BookTicker
    } else if d.starts_with("{\"lastUpdateId\":") {
        Shape::Snapshot
    } else if d.starts_with("{\"code\":") {
        Shape::Error
    } else if d.starts_with("{\"result\":") {
        Shape::Ack
    } else {
        let head: Head = serde_json::from_str(d)?;
        if let Some(e) = head.e {
            owned_name = e.into_owned();
            Shape::Event(&owned_name)
        } else if head.last_update_id {
            Shape::Snapshot
        } else if head.code {
            Shape::Error
        } else if head.result {
            Shape::Ack
        } else if head.u {
            Shape::BookTicker
        } else {
            return Err(FrameError::UnknownShape);
        }
    };
    let ev = match shape {
        Shape::Event("depthUpdate") => {
            if fast_depth(d.as_bytes(), depth).is_some() {
                return Ok(Parsed::Depth);
            }
            let mut de = serde_json::Deserializer::from_str(d);
            DepthSeed(depth).deserialize(&mut de)?;
            de.end()?;
            return Ok(Parsed::Depth);
        }
        Shape::Event("trade") => {
            let w: TradeWire = serde_json::from_str(d)?;
            BinanceEvent::Trade(Trade {
                symbol: w.symbol.into_owned(),
                id: w.id,
                time_ms: w.time_ms,
                price: w.price.price(),
                qty: w.qty.qty(),
                taker_side: taker_side(w.buyer_is_maker),
            })
        }
        Shape::Event("aggTrade") => {
            let w: AggTradeWire = serde_json::from_str(d)?;
            BinanceEvent::AggTrade(Trade {
                symbol: w.symbol.into_owned(),
                id: w.id,
                time_ms: w.time_ms,
                price: w.price.price(),
                qty: w.qty.qty(),
                taker_side: taker_side(w.buyer_is_maker),
            })
        }
        Shape::Event("bookTicker") | Shape::BookTicker => {
            let w: BookTickerWire = serde_json::from_str(d)?;
            BinanceEvent::BookTicker(BookTicker {
                symbol: w.symbol.into_owned(),
                update_id: w.update_id,
                bid: Level {
                    price: w.bid.price(),
                    qty: w.bid_qty.qty(),
                },
                ask: Level {
                    price: w.ask.price(),
                    qty: w.ask_qty.qty(),
                },
                event_time_ms: w.event_time_ms,
            })
        }
        Shape::Event("24hrTicker") => {
            let w: TickerWire = serde_json::from_str(d)?;
            BinanceEvent::Ticker(Ticker24h {
                symbol: w.symbol.into_owned(),
                event_time_ms: w.event_time_ms,
                price_change: w.price_change.price(),
                price_change_percent: w.price_change_percent.price(),
                weighted_avg_price: w.weighted_avg_price.price(),
                last_price: w.last_price.price(),
                last_qty: w.last_qty.qty(),
                best_bid: level_pair(w.bid, w.bid_qty),
                best_ask: level_pair(w.ask, w.ask_qty),
                open: w.open.price(),
                high: w.high.price(),
                low: w.low.price(),
                base_volume: w.base_volume.qty(),
                quote_volume: w.quote_volume.0,
                open_time_ms: w.open_time_ms,
                close_time_ms: w.close_time_ms,
                trade_count: w.trade_count,
            })
        }
        Shape::Event("kline") => {
            let w: KlineEventWire = serde_json::from_str(d)?;
            let k = w.k;
            BinanceEvent::Kline(Kline {
                symbol: w.symbol.into_owned(),
                interval: k.interval.into_owned(),
                candle: Candle {
                    open_time_ms: k.open_time_ms,
                    open: k.open.price(),
                    high: k.high.price(),
                    low: k.low.price(),
                    close: k.close.price(),
                    volume: k.volume.qty(),
                    trades: k.trades,
                },
                close_time_ms: k.close_time_ms,
                quote_volume: k.quote_volume.0,
                taker_buy_base_volume: k.taker_buy_base.qty(),
                taker_buy_quote_volume: k.taker_buy_quote.0,
                closed: k.closed,
            })
        }
        Shape::Event("serverShutdown") => {
            let w: ShutdownWire = serde_json::from_str(d)?;
            BinanceEvent::Shutdown {
                event_time_ms: w.event_time_ms,
            }
        }
        Shape::Event(other) => return Err(FrameError::UnknownEvent(excerpt(other))),
        Shape::Snapshot => {
            let w: SnapshotWire = serde_json::from_str(d)?;
            BinanceEvent::PartialDepth {
                symbol: stream.map(symbol_from_stream),
                snapshot: w.into(),
            }
        }
        Shape::Ack => {
            let w: AckWire = serde_json::from_str(d)?;
            BinanceEvent::Ack(Ack {
                id: w
                    .id
                    .map_or_else(|| "null".to_owned(), |r| r.get().to_owned()),
                result: w
                    .result
                    .map_or_else(|| "null".to_owned(), |r| r.get().to_owned()),
            })
        }
        Shape::Error => {
            let w: ErrorWire = serde_json::from_str(d)?;
            BinanceEvent::Error(ErrorReply {
                code: w.code,
                msg: w.msg.into_owned(),
                id: w.id.map(|r| r.get().to_owned()),
            })
        }
    };
    Ok(Parsed::Other(ev))
}

/// Uppercase symbol of a stream name (`btcusdt@depth5@100ms` → `BTCUSDT`).
pub fn symbol_from_stream(stream: &str) -> String {
    stream
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

// ---------------------------------------------------------------------------------------------
// REST bodies.

/// Returns the exchange error carried by a REST body `{"code":..,"msg":..}`, if it is one.
pub fn parse_rest_error(body: &str) -> Option<FrameError> {
    let t = body.trim_ascii();
    if !t.starts_with('{') {
        return None;
    }
    #[derive(Deserialize)]
    struct RestErr<'a> {
        code: i64,
        #[serde(borrow)]
        msg: Cow<'a, str>,
    }
    serde_json::from_str::<RestErr>(t)
        .ok()
        .map(|e| FrameError::Exchange {
            code: e.code,
            msg: excerpt(&e.msg),
        })
}

/// Parses a REST depth snapshot (spot `lastUpdateId,bids,asks`; futures adds `E,T`).
pub fn parse_depth_snapshot(body: &str) -> Result<DepthSnapshot, FrameError> {
    let t = body.trim_ascii();
    if t.is_empty() {
        return Err(FrameError::Empty);
    }
    if let Some(err) = parse_rest_error(t) {
        return Err(err);
    }
    let w: SnapshotWire = serde_json::from_str(t)?;
    Ok(w.into())
}

type KlineRowWire = (
    i64,
    Fx,
    Fx,
    Fx,
    Fx,
    Fx,
    i64,
    Wide,
    u64,
    Fx,
    Wide,
    IgnoredAny,
);

/// Parses a REST klines response: an array of 12-element arrays.
pub fn parse_klines(body: &str, interval: &str) -> Result<Vec<Kline>, FrameError> {
    let t = body.trim_ascii();
    if t.is_empty() {
        return Err(FrameError::Empty);
    }
    if let Some(err) = parse_rest_error(t) {
        return Err(err);
    }
    let rows: Vec<KlineRowWire> = serde_json::from_str(t)?;
    Ok(rows
        .into_iter()
        .map(
            |(open_time, o, h, l, c, v, close_time, qv, n, tb, tq, _)| Kline {
                symbol: String::new(),
                interval: interval.to_owned(),
                candle: Candle {
                    open_time_ms: open_time,
                    open: o.price(),
                    high: h.price(),
                    low: l.price(),
                    close: c.price(),
                    volume: v.qty(),
                    trades: n,
                },
                close_time_ms: close_time,
                quote_volume: qv.0,
                taker_buy_base_volume: tb.qty(),
                taker_buy_quote_volume: tq.0,
                closed: false,
            },
        )
        .collect())
}

#[derive(Deserialize)]
struct AggTradeRestWire {
    a: u64,
    p: Fx,
    q: Fx,
    #[serde(rename = "T")]
    time: i64,
    m: bool,
}

/// Parses a REST `aggTrades` response (an array of `{"a","p","q","f","l","T","m","M"}`) into
/// trades of `symbol` (the request names it; the rows do not).
pub fn parse_agg_trades(body: &str, symbol: &str) -> Result<Vec<Trade>, FrameError> {
    let t = body.trim_ascii();
    if t.is_empty() {
        return Err(FrameError::Empty);
    }
    if let Some(err) = parse_rest_error(t) {
        return Err(err);
    }
    let rows: Vec<AggTradeRestWire> = serde_json::from_str(t)?;
    Ok(rows
        .into_iter()
        .map(|r| Trade {
            symbol: symbol.to_owned(),
            id: r.a,
            time_ms: r.time,
            price: r.p.price(),
            qty: r.q.qty(),
            // `m`: the buyer was the maker, so the taker sold.
            taker_side: if r.m { Side::Sell } else { Side::Buy },
        })
        .collect())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeInfoWire<'a> {
    #[serde(borrow)]
    symbols: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SymbolWire<'a> {
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    base_asset: Cow<'a, str>,
    #[serde(borrow)]
    quote_asset: Cow<'a, str>,
    #[serde(borrow, default)]
    filters: Vec<FilterWire<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterWire<'a> {
    #[serde(borrow)]
    filter_type: Cow<'a, str>,
    #[serde(default)]
    tick_size: Option<Fx>,
    #[serde(default)]
    step_size: Option<Fx>,
    #[serde(default)]
    min_qty: Option<Fx>,
    #[serde(default)]
    max_qty: Option<Fx>,
    #[serde(default)]
    min_notional: Option<Fx>,
    /// USD-M futures name the minimum notional `notional` in `MIN_NOTIONAL`.
    #[serde(default)]
    notional: Option<Fx>,
}

/// Instruments of an exchangeInfo response, plus the symbols that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExchangeInfo {
    /// Successfully parsed instruments, in response order.
    pub instruments: Vec<Instrument>,
    /// Symbols (or their index when even the name is unreadable) with the reason they were skipped.
    pub rejected: Vec<(String, FrameError)>,
}

/// Parses `GET /api/v3/exchangeInfo` (or `/fapi/v1/exchangeInfo`) into instruments.
///
/// Filter values of 0 mean "rule disabled" on Binance; an absent filter is reported the same way
/// (zero), which is the exchange's own convention rather than an invented default.
pub fn parse_exchange_info(body: &str) -> Result<ExchangeInfo, FrameError> {
    let t = body.trim_ascii();
    if t.is_empty() {
        return Err(FrameError::Empty);
    }
    if let Some(err) = parse_rest_error(t) {
        return Err(err);
    }
    let w: ExchangeInfoWire = serde_json::from_str(t)?;
    let mut info = ExchangeInfo::default();
    for (i, raw) in w.symbols.into_iter().enumerate() {
        match serde_json::from_str::<SymbolWire>(raw.get()) {
            Ok(s) => info.instruments.push(instrument_from(s)),
            Err(e) => {
                #[derive(Deserialize)]
                struct NameOnly<'a> {
                    #[serde(borrow)]
                    symbol: Cow<'a, str>,
                }
                let name = serde_json::from_str::<NameOnly>(raw.get())
                    .map(|n| n.symbol.into_owned())
                    .unwrap_or_else(|_| format!("#{i}"));
                info.rejected.push((name, e.into()));
            }
        }
    }
    Ok(info)
}

fn instrument_from(s: SymbolWire) -> Instrument {
    let mut inst = Instrument {
        symbol: s.symbol.into_owned(),
        base_asset: s.base_asset.into_owned(),
        quote_asset: s.quote_asset.into_owned(),
        tick_size: Price::ZERO,
        step_size: Qty::ZERO,
        min_qty: Qty::ZERO,
        max_qty: Qty::ZERO,
        min_notional: Price::ZERO,
        status: crate::market::instrument::InstrumentStatus::from_exchange(&s.status),
    };
    for f in s.filters {
        match f.filter_type.as_ref() {
            "PRICE_FILTER" => {
                if let Some(t) = f.tick_size {
                    inst.tick_size = t.price();
                }
            }
            "LOT_SIZE" => {
                if let Some(v) = f.step_size {
                    inst.step_size = v.qty();
                }
                if let Some(v) = f.min_qty {
                    inst.min_qty = v.qty();
                }
                if let Some(v) = f.max_qty {
                    inst.max_qty = v.qty();
                }
            }
            "MIN_NOTIONAL" | "NOTIONAL" => {
                if let Some(v) = f.min_notional.or(f.notional) {
                    inst.min_notional = v.price();
                }
            }
            _ => {}
        }
    }
    inst
}

#[cfg(test)]
mod agg_trades_rest_tests {
    use super::*;

    #[test]
    fn parses_rest_agg_trades_exactly() {
        let body = r#"[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true},
                      {"a":26130,"p":"0.01633200","q":"1","f":27782,"l":27783,"T":1498793709160,"m":false,"M":true}]"#;
        let t = parse_agg_trades(body, "ETHBTC").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].id, 26129);
        assert_eq!(t[0].price, Price::parse("0.01633102").unwrap());
        assert_eq!(t[0].taker_side, Side::Sell);
        assert_eq!(t[1].taker_side, Side::Buy);
        assert_eq!(t[1].symbol, "ETHBTC");
        assert!(parse_agg_trades(r#"{"code":-1121,"msg":"Invalid symbol."}"#, "X").is_err());
        assert!(parse_agg_trades(r#"[{"a":1,"p":1.5}]"#, "X").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }
    fn q(s: &str) -> Qty {
        Qty::parse(s).unwrap()
    }

    const SPOT_DEPTH: &str = r#"{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT","U":50093239203,"u":50093239207,"b":[["55653.87000000","0.00000000"]],"a":[["61838.04000000","0.32332000"],["61844.30000000","0.40163000"]]}}"#;

    #[test]
    fn parses_spot_depth_envelope_exactly() {
        let BinanceEvent::Depth(d) = parse_frame(SPOT_DEPTH).unwrap() else {
            panic!("not depth")
        };
        assert_eq!(d.symbol, "BTCUSDT");
        assert_eq!(d.event_time_ms, 1723161255308);
        assert_eq!(
            (d.first_update_id, d.final_update_id),
            (50093239203, 50093239207)
        );
        assert_eq!(d.prev_final_update_id, None);
        assert_eq!(d.transaction_time_ms, None);
        assert_eq!(
            d.bids,
            vec![Level {
                price: p("55653.87"),
                qty: Qty::ZERO
            }]
        );
        assert_eq!(d.asks[1].price, p("61844.3"));
        assert_eq!(d.asks[1].qty, q("0.40163"));
    }

    #[test]
    fn parses_futures_depth_with_pu_and_reordered_keys() {
        let raw = r#"{"s":"BTCUSDT","e":"depthUpdate","E":2,"T":1,"U":10,"u":12,"pu":9,"b":[],"a":[["61510.90","0.000"]]}"#;
        let BinanceEvent::Depth(d) = parse_frame(raw).unwrap() else {
            panic!()
        };
        assert_eq!(d.prev_final_update_id, Some(9));
        let no_prev = raw.replace("\"pu\":9", "\"pu\":-1");
        let BinanceEvent::Depth(n) = parse_frame(&no_prev).unwrap() else {
            panic!()
        };
        assert_eq!(n.prev_final_update_id, None);
        let bad = raw.replace("\"pu\":9", "\"pu\":-2");
        assert_eq!(parse_frame(&bad).unwrap_err().kind(), "bad_number");
        assert_eq!(d.transaction_time_ms, Some(1));
        assert!(d.bids.is_empty());
        assert_eq!(d.asks[0].price, p("61510.9"));
        // Envelope with keys in the other order takes the generic route to the same result.
        let env = format!(r#"{{"data":{raw},"stream":"btcusdt@depth"}}"#);
        assert_eq!(parse_frame(&env).unwrap(), parse_frame(raw).unwrap());
    }

    #[test]
    fn canonical_depth_takes_the_fast_path() {
        let data = &SPOT_DEPTH[SPOT_DEPTH.find("\"data\":").unwrap() + 7..SPOT_DEPTH.len() - 1];
        let mut buf = DepthUpdate::default();
        assert!(fast_depth(data.as_bytes(), &mut buf).is_some());
        assert_eq!(BinanceEvent::Depth(buf), parse_frame(SPOT_DEPTH).unwrap());
        // Whitespace is valid JSON but not canonical: the serde route handles it identically.
        let spaced = data.replace(",\"s\"", ", \"s\"");
        assert!(fast_depth(spaced.as_bytes(), &mut DepthUpdate::default()).is_none());
        assert_eq!(
            parse_frame(&spaced).unwrap(),
            parse_frame(SPOT_DEPTH).unwrap()
        );
    }

    #[test]
    fn reusing_parser_overwrites_previous_frame() {
        let mut buf = DepthUpdate::default();
        assert_eq!(
            parse_frame_reusing(SPOT_DEPTH, &mut buf).unwrap(),
            Parsed::Depth
        );
        let small = r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":1,"b":[],"a":[]}"#;
        assert_eq!(parse_frame_reusing(small, &mut buf).unwrap(), Parsed::Depth);
        assert_eq!(buf.symbol, "X");
        assert!(buf.bids.is_empty() && buf.asks.is_empty());
    }

    #[test]
    fn parses_trades_and_taker_side() {
        let t = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}"#;
        let BinanceEvent::Trade(t) = parse_frame(t).unwrap() else {
            panic!()
        };
        assert_eq!(t.id, 3735683259);
        assert_eq!(t.taker_side, Side::Sell);
        assert_eq!(t.qty, q("0.02"));
        let a = r#"{"e":"aggTrade","E":1,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":7,"m":false,"M":true}"#;
        let BinanceEvent::AggTrade(a) = parse_frame(a).unwrap() else {
            panic!()
        };
        assert_eq!((a.id, a.time_ms, a.taker_side), (12345, 7, Side::Buy));
    }

    #[test]
    fn parses_book_ticker_spot_and_futures() {
        let spot = r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
        let BinanceEvent::BookTicker(b) = parse_frame(spot).unwrap() else {
            panic!()
        };
        assert_eq!(b.update_id, 400900217);
        assert_eq!(b.bid.price, p("25.3519"));
        assert_eq!(b.ask.qty, q("40.66"));
        let fut = r#"{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5,"s":"BTCUSDT","b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1,"E":2}}"#;
        let BinanceEvent::BookTicker(b) = parse_frame(fut).unwrap() else {
            panic!()
        };
        assert_eq!(b.event_time_ms, Some(2));
    }

    #[test]
    fn parses_ticker_kline_partial_ack_error_shutdown() {
        let tk = r#"{"e":"24hrTicker","E":1672515782136,"s":"BNBBTC","p":"0.0015","P":"250.00","w":"0.0018","x":"0.0009","c":"0.0025","Q":"10","b":"0.0024","B":"10","a":"0.0026","A":"100","o":"0.0010","h":"0.0025","l":"0.0010","v":"10000","q":"18","O":0,"C":86400000,"F":0,"L":18150,"n":18151}"#;
        let BinanceEvent::Ticker(t) = parse_frame(tk).unwrap() else {
            panic!()
        };
        assert_eq!(t.price_change_percent, p("250"));
        assert_eq!(t.best_ask.unwrap().qty, q("100"));
        assert_eq!(t.trade_count, 18151);

        let kl = r#"{"e":"kline","E":1,"s":"BNBBTC","k":{"t":1672515780000,"T":1672515839999,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500","B":"123456"}}"#;
        let BinanceEvent::Kline(k) = parse_frame(kl).unwrap() else {
            panic!()
        };
        assert_eq!(k.timeframe(), Some(Timeframe::M1));
        assert_eq!(k.candle.high, p("0.0025"));
        assert!(!k.closed);

        let pd = r#"{"stream":"bnbbtc@depth5@100ms","data":{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}}"#;
        let BinanceEvent::PartialDepth { symbol, snapshot } = parse_frame(pd).unwrap() else {
            panic!()
        };
        assert_eq!(symbol.as_deref(), Some("BNBBTC"));
        assert_eq!(snapshot.last_update_id, 160);

        assert_eq!(
            parse_frame(r#"{"result":null,"id":1}"#).unwrap(),
            BinanceEvent::Ack(Ack {
                id: "1".into(),
                result: "null".into()
            })
        );
        assert_eq!(
            parse_frame(r#"{"id":"a1","result":["btcusdt@aggTrade"]}"#).unwrap(),
            BinanceEvent::Ack(Ack {
                id: "\"a1\"".into(),
                result: "[\"btcusdt@aggTrade\"]".into()
            })
        );
        let BinanceEvent::Error(e) =
            parse_frame(r#"{"code":2,"msg":"Invalid request: too many parameters"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((e.code, e.id), (2, None));
        assert_eq!(
            parse_frame(r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}"#)
                .unwrap(),
            BinanceEvent::Shutdown { event_time_ms: 5 }
        );
    }

    #[test]
    fn errors_have_kinds() {
        let kind = |s: &str| parse_frame(s).unwrap_err().kind();
        assert_eq!(kind("   "), "empty");
        assert_eq!(kind("{\"e\":"), "json");
        assert_eq!(kind("not json"), "json");
        assert_eq!(
            kind(r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"b":[],"a":[]}"#),
            "missing_field"
        );
        assert_eq!(
            kind(r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1.0x","1"]],"a":[]}"#),
            "bad_number"
        );
        assert_eq!(
            kind(r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1","-1"]],"a":[]}"#),
            "bad_number"
        );
        assert_eq!(
            kind(r#"{"e":"depthUpdate","E":1,"s":"X","U":3,"u":2,"b":[],"a":[]}"#),
            "bad_number"
        );
        assert_eq!(
            kind(r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[[1.5,"1"]],"a":[]}"#),
            "bad_field"
        );
        assert_eq!(kind(r#"{"e":"avgPrice","E":1}"#), "unknown_event");
        assert_eq!(kind(r#"{"foo":1}"#), "unknown_shape");
        assert_eq!(kind("[1,2]"), "unknown_shape");
        assert_eq!(kind("[1,"), "json");
    }

    #[test]
    fn rest_snapshot_klines_exchange_info_and_errors() {
        let s = parse_depth_snapshot(
            r#"{"lastUpdateId":1027024,"E":5,"T":4,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#,
        )
        .unwrap();
        assert_eq!(s.last_update_id, 1027024);
        assert_eq!(s.event_time_ms, Some(5));
        assert_eq!(s.asks[0].price, p("4.000002"));
        let err = parse_depth_snapshot(r#"{"code":-1121,"msg":"Invalid symbol."}"#).unwrap_err();
        assert_eq!(err.kind(), "exchange_error");

        let k = parse_klines(
            r#"[[1634943780000,"60685.22","60729.84","60670.90","60719.27","21.63272",1634943839999,"1313200.0134041",617,"12.28492","745719.4102284","0"]]"#,
            "1m",
        )
        .unwrap();
        assert_eq!(k[0].candle.trades, 617);
        assert_eq!(k[0].close_time_ms, 1634943839999);
        assert_eq!(
            parse_wide(b"423075730671.12853"),
            Ok(42_307_573_067_112_853_000)
        );
        assert!(parse_wide(b"1.000000001").is_err());
        assert_eq!(
            k[0].taker_buy_quote_volume,
            p("745719.4102284").raw() as i128
        );
        let short = parse_klines(r#"[[1,"1","1","1","1","1",2,"1",3,"1","1"]]"#, "1m");
        assert!(short.is_err());

        let info = parse_exchange_info(
            r#"{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT",
            "filters":[{"filterType":"PRICE_FILTER","minPrice":"0.01","maxPrice":"1000000","tickSize":"0.01000000"},
            {"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"},
            {"filterType":"MIN_NOTIONAL","minNotional":"10.00000000","applyToMarket":true,"avgPriceMins":5}]},
            {"symbol":"BAD","status":"TRADING","baseAsset":"B","quoteAsset":"A","filters":[{"filterType":"PRICE_FILTER","tickSize":"x"}]},
            {"symbol":"FUT","status":"TRADING","baseAsset":"F","quoteAsset":"USDT","filters":[{"filterType":"MIN_NOTIONAL","notional":"5"}]}]}"#,
        )
        .unwrap();
        assert_eq!(info.instruments.len(), 2);
        let btc = &info.instruments[0];
        assert_eq!(btc.tick_size, p("0.01"));
        assert_eq!(btc.step_size, q("0.00001"));
        assert_eq!(btc.max_qty, q("9000"));
        assert_eq!(btc.min_notional, p("10"));
        assert_eq!(info.instruments[1].min_notional, p("5"));
        assert_eq!(info.rejected[0].0, "BAD");
        assert_eq!(info.rejected[0].1.kind(), "bad_number");
    }

    #[test]
    fn error_counter_counts_and_rate_limits_logging() {
        let mut c = FrameErrorCounter::new();
        let e = FrameError::UnknownShape;
        assert!(c.record(&e, 1_000));
        assert!(!c.record(&e, 30_000));
        assert!(!c.record(&e, 60_999));
        assert!(c.record(&e, 61_000));
        assert!(c.record(&FrameError::Empty, 61_001));
        assert_eq!(c.count("unknown_shape"), 4);
        assert_eq!(c.total(), 5);
        assert_eq!(c.counts(), vec![("empty", 1), ("unknown_shape", 4)]);
    }

    #[test]
    fn swar_route_reads_canonical_binance_numbers() {
        for (text, want) in [
            ("\"61837.63000000\"", 6_183_763_000_000),
            ("\"0.00000001\"", 1),
            ("\"1234567.12345678\"", 123_456_712_345_678),
        ] {
            let mut s = Scan {
                b: text.as_bytes(),
                i: 1,
            };
            assert_eq!(s.swar_fixed(), Some(want), "{text}");
            assert_eq!(s.i, text.len());
        }
        // Not the canonical shape: left to the scalar route, position untouched.
        for text in [
            "\"12345678.00000000\"",
            "\"1.0000000\"",
            "\"1.000000000\"",
            "\"-1.00000000\"",
        ] {
            let mut s = Scan {
                b: text.as_bytes(),
                i: 1,
            };
            assert_eq!(s.swar_fixed(), None, "{text}");
            assert_eq!(s.i, 1);
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const VALID: &[&str] = &[
            super::SPOT_DEPTH,
            r#"{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":2,"T":1,"s":"BTCUSDT","U":10,"u":12,"pu":9,"b":[["1.5","2"]],"a":[]}}"#,
            r#"{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000","B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}"#,
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":3,"p":"61837.63","q":"0.02","T":1,"m":true,"M":true}}"#,
            r#"{"e":"aggTrade","E":1,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":7,"m":false,"M":true}"#,
            r#"{"e":"kline","E":1,"s":"B","k":{"t":1,"T":2,"s":"B","i":"1m","f":1,"L":2,"o":"1","c":"2","h":"3","l":"1","v":"1","n":1,"x":true,"q":"1","V":"1","Q":"1","B":"0"}}"#,
            r#"{"lastUpdateId":160,"E":1,"T":1,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}"#,
            r#"{"result":null,"id":1}"#,
            r#"{"code":2,"msg":"Invalid request","id":"x"}"#,
            r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":5}}"#,
            r#"[[1,"1","1","1","1","1",2,"1",3,"1","1","0"]]"#,
            r#"{"symbols":[{"symbol":"A","status":"TRADING","baseAsset":"A","quoteAsset":"B","filters":[{"filterType":"LOT_SIZE","stepSize":"1","minQty":"1","maxQty":"9"}]}]}"#,
        ];

        fn run_all(text: &str) {
            let _ = parse_frame(text);
            let mut buf = DepthUpdate::default();
            let _ = parse_frame_reusing(text, &mut buf);
            let _ = parse_depth_snapshot(text);
            let _ = parse_klines(text, "1m");
            let _ = parse_exchange_info(text);
            let _ = parse_rest_error(text);
            if let Err(e) = parse_frame(text) {
                assert!(!e.kind().is_empty());
            }
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Replace(usize, u8),
            Insert(usize, u8),
            Delete(usize, usize),
            Truncate(usize),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            let b = prop_oneof![
                Just(b'"'),
                Just(b'{'),
                Just(b'}'),
                Just(b'['),
                Just(b']'),
                Just(b','),
                Just(b':'),
                Just(b'-'),
                Just(b'.'),
                Just(b'\\'),
                b'0'..=b'9',
                any::<u8>()
            ];
            prop_oneof![
                (any::<usize>(), b.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
                (any::<usize>(), b).prop_map(|(i, c)| Mutation::Insert(i, c)),
                (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
                any::<usize>().prop_map(Mutation::Truncate),
            ]
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                run_all(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn mutated_valid_frames_never_panic(
                which in 0..VALID.len(),
                muts in proptest::collection::vec(mutation(), 1..6),
            ) {
                let mut bytes = VALID[which].as_bytes().to_vec();
                for m in muts {
                    let len = bytes.len().max(1);
                    match m {
                        Mutation::Replace(i, c) if !bytes.is_empty() => bytes[i % len] = c,
                        Mutation::Replace(..) => {}
                        Mutation::Insert(i, c) => bytes.insert(i % (bytes.len() + 1), c),
                        Mutation::Delete(i, n) if !bytes.is_empty() => {
                            let start = i % len;
                            let end = (start + n).min(bytes.len());
                            bytes.drain(start..end);
                        }
                        Mutation::Delete(..) => {}
                        Mutation::Truncate(i) => bytes.truncate(i % len),
                    }
                }
                run_all(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn fast_depth_path_agrees_with_serde(
                which in 0..2usize,
                muts in proptest::collection::vec(mutation(), 0..4),
            ) {
                let full = VALID[which];
                let data = &full[full.find("\"data\":").unwrap() + 7..full.len() - 1];
                let mut bytes = data.as_bytes().to_vec();
                for m in muts {
                    let len = bytes.len().max(1);
                    match m {
                        Mutation::Replace(i, c) if c.is_ascii() => bytes[i % len] = c,
                        Mutation::Insert(i, c) if c.is_ascii() => bytes.insert(i % (bytes.len() + 1), c),
                        _ => {}
                    }
                }
                let text = String::from_utf8(bytes).unwrap();
                let mut fast = DepthUpdate::default();
                if fast_depth(text.as_bytes(), &mut fast).is_some() {
                    let mut slow = DepthUpdate::default();
                    let mut de = serde_json::Deserializer::from_str(&text);
                    DepthSeed(&mut slow).deserialize(&mut de).unwrap();
                    de.end().unwrap();
                    prop_assert_eq!(fast, slow);
                }
            }

            #[test]
            fn quoted_scan_agrees_with_general_parser(text in "[0-9]{0,12}[.]?[0-9x]{0,10}[\"x]?") {
                let quoted = format!("\"{text}");
                let mut s = Scan { b: quoted.as_bytes(), i: 0 };
                if let Some(v) = s.quoted_fixed() {
                    let body = &quoted.as_bytes()[1..s.i - 1];
                    prop_assert_eq!(s.i, quoted.len());
                    prop_assert_eq!(Ok(v), crate::market::types::parse_fixed(body));
                } else if let Some(body) = text.strip_suffix('"') {
                    prop_assert!(fixed_fast(body.as_bytes()).is_none());
                }
            }

            #[test]
            fn swar_route_agrees_with_general_parser(text in "[0-9]{0,9}[.][0-9]{7,9}[\"x]?[0-9]{0,3}") {
                let quoted = format!("\"{text}");
                let mut s = Scan { b: quoted.as_bytes(), i: 1 };
                match s.swar_fixed() {
                    Some(v) => {
                        let body = &quoted.as_bytes()[1..s.i - 1];
                        prop_assert_eq!(Ok(v), crate::market::types::parse_fixed(body));
                        prop_assert_eq!(quoted.as_bytes()[s.i - 1], b'"');
                    }
                    None => prop_assert_eq!(s.i, 1),
                }
            }

            #[test]
            fn eight_digits_matches_scalar(bytes in proptest::array::uniform8(any::<u8>()),
                                           digits in proptest::array::uniform8(b'0'..=b'9')) {
                for b in [bytes, digits] {
                    let scalar = b.iter().all(u8::is_ascii_digit).then(|| {
                        b.iter().fold(0i64, |v, &c| v * 10 + i64::from(c - b'0'))
                    });
                    prop_assert_eq!(eight_digits(&b), scalar);
                }
            }

            #[test]
            fn fast_fixed_agrees_with_general_parser(text in "[-+]?[0-9]{0,12}[.]?[0-9]{0,10}") {
                if let Some(v) = fixed_fast(text.as_bytes()) {
                    prop_assert_eq!(Ok(v), crate::market::types::parse_fixed(text.as_bytes()));
                }
                prop_assert_eq!(
                    fixed(text.as_bytes()),
                    crate::market::types::parse_fixed(text.as_bytes())
                );
            }

            #[test]
            fn wide_parser_agrees_with_fixed_in_range(text in "-?[0-9]{0,12}[.]?[0-9]{0,10}") {
                let narrow = crate::market::types::parse_fixed(text.as_bytes());
                let wide = parse_wide(text.as_bytes());
                match narrow {
                    Ok(v) => prop_assert_eq!(wide, Ok(i128::from(v))),
                    Err(FixedParseError::Overflow(_)) => {}
                    Err(_) => prop_assert!(wide.is_err()),
                }
            }

            #[test]
            fn valid_depth_round_trips_exactly(
                first in 0u64..1_000_000,
                span in 0u64..100,
                raw in proptest::collection::vec((1i64..10_000_000_000_000, 0i64..10_000_000_000_000), 0..30),
            ) {
                let levels: Vec<String> = raw
                    .iter()
                    .map(|(p, q)| format!("[\"{}\",\"{}\"]", Price(*p), Qty(*q)))
                    .collect();
                let text = format!(
                    r#"{{"e":"depthUpdate","E":1,"s":"X","U":{first},"u":{},"b":[{}],"a":[]}}"#,
                    first + span,
                    levels.join(",")
                );
                let BinanceEvent::Depth(d) = parse_frame(&text).unwrap() else {
                    panic!("not depth")
                };
                let got: Vec<(i64, i64)> = d.bids.iter().map(|l| (l.price.raw(), l.qty.raw())).collect();
                prop_assert_eq!(got, raw);
            }
        }
    }
}
