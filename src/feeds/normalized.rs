//! Normalized market-data events of one shape for every exchange, canonical instrument ids,
//! and exact number parsing for the JSON forms exchanges use. Pure logic.

use std::fmt;

use crate::market::types::{FixedParseError, Level, Price, Qty, SCALE_DECIMALS, Side, Trade};

/// Exchanges with a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Venue {
    /// Binance spot.
    Binance,
    /// MEXC spot (protobuf websocket).
    Mexc,
    /// Coinbase (Exchange / legacy Pro feed and Advanced Trade).
    Coinbase,
    /// Kraken (websocket v1 arrays and v2 objects).
    Kraken,
    /// HTX, formerly Huobi (gzip frames).
    Htx,
    /// Bitfinex v2.
    Bitfinex,
    /// KuCoin spot.
    Kucoin,
    /// Bybit (v5 and the legacy v2 public feeds).
    Bybit,
}

impl Venue {
    /// Every venue.
    pub const ALL: [Venue; 8] = [
        Venue::Binance,
        Venue::Mexc,
        Venue::Coinbase,
        Venue::Kraken,
        Venue::Htx,
        Venue::Bitfinex,
        Venue::Kucoin,
        Venue::Bybit,
    ];

    /// Lower-case name used in config and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Venue::Binance => "binance",
            Venue::Mexc => "mexc",
            Venue::Coinbase => "coinbase",
            Venue::Kraken => "kraken",
            Venue::Htx => "htx",
            Venue::Bitfinex => "bitfinex",
            Venue::Kucoin => "kucoin",
            Venue::Bybit => "bybit",
        }
    }

    /// Parses a name (`huobi` is accepted for HTX).
    pub fn parse(name: &str) -> Option<Venue> {
        let lower = name.to_ascii_lowercase();
        if lower == "huobi" {
            return Some(Venue::Htx);
        }
        Self::ALL.into_iter().find(|v| v.name() == lower)
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Quote currencies recognised when an exchange writes symbols without a separator, longest
/// first so `USDT` wins over `USD`.
const QUOTES: [&str; 17] = [
    "FDUSD", "USDT", "USDC", "TUSD", "BUSD", "HUSD", "USD", "EUR", "GBP", "BTC", "ETH", "XBT",
    "BNB", "CHF", "JPY", "TRY", "DAI",
];

/// Canonical currency code (Kraken's `XBT` is `BTC`, Kraken's `XDG` is `DOGE`).
pub fn canonical_currency(code: &str) -> String {
    let up = code.to_ascii_uppercase();
    match up.as_str() {
        "XBT" => "BTC".to_string(),
        "XDG" => "DOGE".to_string(),
        _ => up,
    }
}

/// Canonical instrument id `BASE/QUOTE` (e.g. `ETH/USDT`).
pub fn canonical(base: &str, quote: &str) -> String {
    format!("{}/{}", canonical_currency(base), canonical_currency(quote))
}

/// Canonical id from an exchange symbol: separators `-`, `/`, `_`, `:` are honoured, otherwise
/// a known quote suffix splits it (`btcusdt` → `BTC/USDT`). None when nothing splits it.
pub fn canonical_from_exchange(symbol: &str) -> Option<String> {
    for sep in ['-', '/', '_', ':'] {
        if let Some((b, q)) = symbol.split_once(sep)
            && !b.is_empty()
            && !q.is_empty()
        {
            return Some(canonical(b, q));
        }
    }
    let up = symbol.to_ascii_uppercase();
    let split = |min_base: usize| {
        QUOTES.iter().find_map(|q| {
            let base = up.strip_suffix(q)?;
            (base.len() >= min_base).then(|| canonical(base, q))
        })
    };
    // Prefer a base of 3+ letters (`ETHUSD` is ETH/USD, not ET/HUSD), else any split.
    split(3).or_else(|| split(1))
}

/// Splits a canonical id into base and quote.
pub fn split_canonical(instrument: &str) -> Option<(&str, &str)> {
    instrument
        .split_once('/')
        .filter(|(b, q)| !b.is_empty() && !q.is_empty())
}

/// Stable 64-bit id for exchanges whose trade ids are strings (FNV-1a of the text).
pub fn hash_id(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Sequence information a book message carries, as the exchange defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SeqInfo {
    /// No sequence numbers (integrity by snapshot and checksum only).
    None,
    /// Covers update ids `first..=last` (Binance U/u, MEXC from/toVersion, KuCoin sequenceStart/End).
    Range {
        /// First id in the message.
        first: u64,
        /// Last id in the message.
        last: u64,
    },
    /// Chained to the previous message (HTX prevSeqNum/seqNum, Binance futures pu/u).
    Linked {
        /// The id the previous message must have had.
        prev: u64,
        /// This message's id.
        seq: u64,
    },
    /// One update id per message that grows by one (Bybit `u`, Bitfinex per-connection seq).
    Single(u64),
}

/// One book message: a full snapshot or a delta of absolute quantities (zero removes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BookData {
    /// Canonical instrument id.
    pub instrument: String,
    /// Bid levels.
    pub bids: Vec<Level>,
    /// Ask levels.
    pub asks: Vec<Level>,
    /// The exchange's sequence information.
    pub seq: SeqInfo,
    /// A checksum of the book after this message, when the exchange sends one.
    pub checksum: Option<u32>,
    /// Decimal places of prices and quantities as written on the wire, where a checksum needs
    /// the exchange's own formatting (Kraken).
    pub decimals: Option<(u32, u32)>,
    /// Exchange time, ms, when given.
    pub time_ms: Option<i64>,
    /// The number text of each level as sent, where a checksum is computed over the wire text
    /// (Bitfinex); empty otherwise.
    pub texts: Vec<LevelText>,
}

/// A level's price and amount exactly as the exchange wrote them (`1e-7`, `-0.5`), quotes
/// stripped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LevelText {
    /// Book side.
    pub side: Side,
    /// The parsed price, to find the level.
    pub price: Price,
    /// Price token as sent.
    pub price_text: String,
    /// Amount token as sent (signed where the exchange signs it).
    pub amount_text: String,
}

/// A number token without its JSON string quotes.
pub fn token_text(token: &[u8]) -> String {
    String::from_utf8_lossy(unquote(token)).into_owned()
}

/// The token inside its JSON string quotes, if quoted.
fn unquote(token: &[u8]) -> &[u8] {
    token
        .strip_prefix(b"\"")
        .and_then(|t| t.strip_suffix(b"\""))
        .unwrap_or(token)
}

impl BookData {
    /// An empty message for an instrument.
    pub fn new(instrument: impl Into<String>, seq: SeqInfo) -> Self {
        Self {
            instrument: instrument.into(),
            bids: Vec::new(),
            asks: Vec::new(),
            seq,
            checksum: None,
            decimals: None,
            time_ms: None,
            texts: Vec::new(),
        }
    }
}

/// Connection state reported by the runner.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum ConnectionState {
    /// Connected (`connects` counts successful connections).
    Connected {
        /// Successful connections so far.
        connects: u64,
    },
    /// Lost; the runner retries after `retry_in_ms`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in_ms: u64,
    },
}

/// Why a book could not be kept in sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum IntegrityError {
    /// A sequence number was skipped.
    #[error("sequence gap: expected {expected}, got {got}")]
    Gap {
        /// The id that should have come next.
        expected: u64,
        /// The id that came.
        got: u64,
    },
    /// The book's checksum differs from the exchange's.
    #[error("checksum mismatch: exchange {expected}, local {computed}")]
    Checksum {
        /// Exchange's checksum.
        expected: u32,
        /// Checksum of the local book.
        computed: u32,
    },
    /// Best bid at or above best ask after an update.
    #[error("book crossed after update")]
    Crossed,
    /// The snapshot is older than the first buffered update.
    #[error("snapshot {snapshot} older than buffered updates starting at {first}")]
    SnapshotTooOld {
        /// Snapshot id.
        snapshot: u64,
        /// First buffered id.
        first: u64,
    },
    /// Too many updates buffered while waiting for a snapshot.
    #[error("update buffer overflow while waiting for a snapshot")]
    BufferOverflow,
    /// A level with a non-positive price or negative quantity.
    #[error("invalid level: {0}")]
    BadLevel(String),
}

/// One normalized event, identical in shape for every exchange.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum NormEvent {
    /// A trade (symbol is the canonical id).
    Trade(Trade),
    /// A full book image.
    BookSnapshot(BookData),
    /// A book change.
    BookDelta(BookData),
    /// A checksum sent as its own message (Bitfinex `cs`).
    BookChecksum {
        /// Canonical instrument id.
        instrument: String,
        /// The checksum as an unsigned 32-bit value.
        checksum: u32,
    },
    /// A book failed its integrity check and is being resynced.
    Integrity {
        /// Canonical instrument id.
        instrument: String,
        /// What failed.
        error: IntegrityError,
    },
    /// Connection state change.
    Connection(ConnectionState),
    /// A message the client must send back at once (HTX `{"pong":ts}`).
    Reply(String),
    /// The exchange answered a keepalive.
    Pong,
    /// Subscription acks, info and heartbeat messages (kind named).
    Control(&'static str),
    /// A message kind this connector knowingly does not use (kind named), e.g. tickers.
    Unsupported(&'static str),
}

/// Why a number token could not be read exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Not a decimal number.
    #[error("not a number: {0:?}")]
    Invalid(String),
    /// More decimals than the fixed-point scale, in a field that must be exact.
    #[error("{0:?} needs more than 8 decimals")]
    TooPrecise(String),
    /// Too large.
    #[error("{0:?} is out of range")]
    Overflow(String),
}

impl From<FixedParseError> for NumberError {
    fn from(e: FixedParseError) -> Self {
        match e {
            FixedParseError::Empty => NumberError::Invalid(String::new()),
            FixedParseError::Invalid(s) => NumberError::Invalid(s),
            FixedParseError::TooPrecise(s) => NumberError::TooPrecise(s),
            FixedParseError::Overflow(s) => NumberError::Overflow(s),
        }
    }
}

/// How digits beyond the 8th decimal are treated.
///
/// The rule used by every connector here: prices are always [`Rounding::Exact`] (a rounded
/// price would merge distinct levels, so such a message is a typed error); quantities are
/// [`Rounding::HalfEven`] except where a checksum is computed from their text (Kraken), since
/// a size beyond 1e-8 is dust and rejecting a whole snapshot for it would leave a book unsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Any non-zero digit beyond 8 decimals is an error (prices: rounding would merge levels).
    Exact,
    /// Round half to even at 8 decimals: for quantities of exchanges that print binary floats
    /// (`19203.444049780002`), where the tail is float noise, not information.
    HalfEven,
}

/// Parses a decimal token that may carry quotes, a sign and an exponent (`"1.5"`, `9.121E-7`,
/// `-0.5`) into a value scaled by 1e8.
pub fn parse_decimal(token: &[u8], rounding: Rounding) -> Result<i64, NumberError> {
    let lossy = || String::from_utf8_lossy(token).into_owned();
    let t = unquote(token);
    let (mant, exp) = match t.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => {
            let e = std::str::from_utf8(&t[i + 1..])
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .filter(|e| e.abs() <= 40)
                .ok_or_else(|| NumberError::Invalid(lossy()))?;
            (&t[..i], e)
        }
        None => (t, 0),
    };
    let (neg, digits) = match mant.first() {
        Some(b'-') => (true, &mant[1..]),
        Some(b'+') => (false, &mant[1..]),
        _ => (false, mant),
    };
    // Collect all digits and the position of the decimal point.
    let mut all: Vec<u8> = Vec::with_capacity(digits.len());
    let mut dot: Option<usize> = None;
    for &b in digits {
        match b {
            b'0'..=b'9' => all.push(b - b'0'),
            b'.' if dot.is_none() => dot = Some(all.len()),
            _ => return Err(NumberError::Invalid(lossy())),
        }
    }
    if all.is_empty() {
        return Err(NumberError::Invalid(lossy()));
    }
    // Number of digits after the point, after applying the exponent.
    let frac_len = (all.len() - dot.unwrap_or(all.len())) as i32 - exp;
    let scale = SCALE_DECIMALS as i32;
    let mut value: i128 = 0;
    let keep = all.len() as i32 - (frac_len - scale).max(0);
    for &d in all.iter().take(keep.max(0) as usize) {
        value = value * 10 + i128::from(d);
        if value > i128::from(i64::MAX) * 10 {
            return Err(NumberError::Overflow(lossy()));
        }
    }
    let dropped: &[u8] = &all[keep.clamp(0, all.len() as i32) as usize..];
    if frac_len < scale {
        // frac_len >= -40 because the exponent is bounded.
        for _ in 0..(scale - frac_len) {
            value = value
                .checked_mul(10)
                .ok_or_else(|| NumberError::Overflow(lossy()))?;
        }
    }
    if dropped.iter().any(|&d| d != 0) {
        match rounding {
            Rounding::Exact => return Err(NumberError::TooPrecise(lossy())),
            Rounding::HalfEven => {
                // With keep < 0 the first dropped position is an implied leading zero.
                let (first, rest) = if keep < 0 {
                    (0, dropped)
                } else {
                    (dropped[0], &dropped[1..])
                };
                let rest_nonzero = rest.iter().any(|&d| d != 0);
                if first > 5 || (first == 5 && (rest_nonzero || value % 2 == 1)) {
                    value += 1;
                }
            }
        }
    }
    let value = i64::try_from(value).map_err(|_| NumberError::Overflow(lossy()))?;
    Ok(if neg { -value } else { value })
}

/// An exact price from a token.
pub fn price(token: &[u8]) -> Result<Price, NumberError> {
    parse_decimal(token, Rounding::Exact).map(Price)
}

/// A quantity from a token with the given rounding.
pub fn qty(token: &[u8], rounding: Rounding) -> Result<Qty, NumberError> {
    parse_decimal(token, rounding).map(Qty)
}

/// Decimal places written in a token (`"13.284500"` → 6), for exchange-formatted checksums.
pub fn written_decimals(token: &[u8]) -> u32 {
    let t = unquote(token);
    t.iter()
        .position(|&b| b == b'.')
        .map(|i| (t.len() - i - 1) as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids() {
        assert_eq!(canonical_from_exchange("btcusdt").unwrap(), "BTC/USDT");
        assert_eq!(canonical_from_exchange("BTC-USDT").unwrap(), "BTC/USDT");
        assert_eq!(canonical_from_exchange("XBT/USD").unwrap(), "BTC/USD");
        assert_eq!(canonical_from_exchange("ETHUSD").unwrap(), "ETH/USD");
        assert_eq!(canonical_from_exchange("yfihusd").unwrap(), "YFI/HUSD");
        assert_eq!(
            canonical_from_exchange("TESTBTC:TESTUSD").unwrap(),
            "TESTBTC/TESTUSD"
        );
        assert!(canonical_from_exchange("USDT").is_none());
        assert_eq!(canonical_from_exchange("OPUSDT").unwrap(), "OP/USDT");
        assert_eq!(split_canonical("ETH/USDT"), Some(("ETH", "USDT")));
        assert_eq!(Venue::parse("HUOBI"), Some(Venue::Htx));
    }

    #[test]
    fn decimals_with_exponents_and_rounding() {
        let ex = |s: &str| parse_decimal(s.as_bytes(), Rounding::Exact);
        assert_eq!(ex("1.5").unwrap(), 150_000_000);
        assert_eq!(ex("\"0.00000001\"").unwrap(), 1);
        assert_eq!(ex("9.1E-7").unwrap(), 91);
        assert!(matches!(ex("9.12E-7"), Err(NumberError::TooPrecise(_))));
        assert_eq!(parse_decimal(b"9e-10", Rounding::HalfEven).unwrap(), 0);
        assert_eq!(ex("1e3").unwrap(), 100_000_000_000);
        assert_eq!(ex("-0.25").unwrap(), -25_000_000);
        assert_eq!(ex("3.0000000000").unwrap(), 300_000_000);
        assert!(matches!(ex("9.121E-7"), Err(NumberError::TooPrecise(_))));
        assert!(matches!(ex("1.2.3"), Err(NumberError::Invalid(_))));
        assert!(matches!(ex(""), Err(NumberError::Invalid(_))));
        assert!(matches!(ex("1e999"), Err(NumberError::Invalid(_))));
        assert!(matches!(
            ex("99999999999999999999"),
            Err(NumberError::Overflow(_))
        ));
        let r = |s: &str| parse_decimal(s.as_bytes(), Rounding::HalfEven).unwrap();
        assert_eq!(r("19203.444049780002"), 1_920_344_404_978);
        assert_eq!(r("0.000000015"), 2);
        assert_eq!(r("0.000000025"), 2);
        assert_eq!(r("0.0000000251"), 3);
        assert_eq!(written_decimals(b"\"13.284500\""), 6);
        assert_eq!(written_decimals(b"7"), 0);
    }

    #[test]
    fn string_ids_hash_stably() {
        assert_eq!(hash_id("abc"), hash_id("abc"));
        assert_ne!(hash_id("abc"), hash_id("abd"));
    }
}
