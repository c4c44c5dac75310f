//! Exact market values and the normalized records every feed produces.
//!
//! Prices and quantities are fixed-point integers with [`SCALE_DECIMALS`] decimals. Binance and
//! MEXC quote every price and quantity with at most 8 decimals, so the conversion from the wire
//! text is exact and comparisons never involve floats.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Decimal places carried by [`Price`] and [`Qty`].
pub const SCALE_DECIMALS: u32 = 8;
/// `10^SCALE_DECIMALS`: the integer that represents 1.0.
pub const SCALE: i64 = 100_000_000;

/// Why a decimal text could not be turned into a fixed-point value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedParseError {
    /// The text was empty.
    #[error("empty number")]
    Empty,
    /// A character other than digits, one '.', or a leading '-'.
    #[error("invalid character in number {0:?}")]
    Invalid(String),
    /// More significant decimals than the fixed-point scale holds.
    #[error("number {0:?} has more than 8 significant decimals")]
    TooPrecise(String),
    /// The value does not fit in the fixed-point range.
    #[error("number {0:?} is out of range")]
    Overflow(String),
}

/// Parses decimal text ("123.45", "-0.001", "7") into an integer scaled by [`SCALE`], exactly.
///
/// Trailing zeros beyond 8 decimals are accepted ("0.0000000100" is exact); any other digit
/// beyond 8 decimals is an error rather than a silent rounding.
#[inline]
pub fn parse_fixed(text: &[u8]) -> Result<i64, FixedParseError> {
    let lossy = || String::from_utf8_lossy(text).into_owned();
    let (neg, digits) = match text.first() {
        None => return Err(FixedParseError::Empty),
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
    };
    if digits.is_empty() {
        return Err(FixedParseError::Empty);
    }
    let mut int: i64 = 0;
    let mut frac: i64 = 0;
    let mut frac_digits: u32 = 0;
    let mut seen_dot = false;
    let mut any_digit = false;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                any_digit = true;
                let d = (b - b'0') as i64;
                if seen_dot {
                    if frac_digits < SCALE_DECIMALS {
                        frac = frac * 10 + d;
                        frac_digits += 1;
                    } else if d != 0 {
                        return Err(FixedParseError::TooPrecise(lossy()));
                    }
                } else {
                    int = int
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(d))
                        .ok_or_else(|| FixedParseError::Overflow(lossy()))?;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return Err(FixedParseError::Invalid(lossy())),
        }
    }
    if !any_digit {
        return Err(FixedParseError::Invalid(lossy()));
    }
    frac *= 10i64.pow(SCALE_DECIMALS - frac_digits);
    let value = int
        .checked_mul(SCALE)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(|| FixedParseError::Overflow(lossy()))?;
    Ok(if neg { -value } else { value })
}

fn fmt_fixed(raw: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    let int = abs / SCALE as u64;
    let frac = abs % SCALE as u64;
    if let Some(prec) = f.precision() {
        // Truncating display for the screen; the value itself stays exact.
        let prec = prec.min(SCALE_DECIMALS as usize);
        if prec == 0 {
            return write!(f, "{sign}{int}");
        }
        let shown = frac / 10u64.pow(SCALE_DECIMALS - prec as u32);
        return write!(f, "{sign}{int}.{shown:0prec$}");
    }
    if frac == 0 {
        return write!(f, "{sign}{int}");
    }
    let mut s = format!("{frac:08}");
    while s.ends_with('0') {
        s.pop();
    }
    write!(f, "{sign}{int}.{s}")
}

macro_rules! fixed_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// Zero.
            pub const ZERO: Self = Self(0);

            /// Parses exact decimal text (see [`parse_fixed`]).
            #[inline]
            pub fn parse(text: &str) -> Result<Self, FixedParseError> {
                parse_fixed(text.as_bytes()).map(Self)
            }

            /// Parses exact decimal bytes (see [`parse_fixed`]).
            #[inline]
            pub fn parse_bytes(text: &[u8]) -> Result<Self, FixedParseError> {
                parse_fixed(text).map(Self)
            }

            /// Builds a value from whole units (`from_units(3)` is 3.0).
            pub const fn from_units(units: i64) -> Self {
                Self(units * SCALE)
            }

            /// The raw scaled integer.
            #[inline]
            pub const fn raw(self) -> i64 {
                self.0
            }

            /// True when the value is exactly zero.
            #[inline]
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }

            /// Lossy float for features, models and plots; never for comparisons of money.
            #[inline]
            pub fn to_f64(self) -> f64 {
                self.0 as f64 / SCALE as f64
            }

            /// Nearest representable value to a float (simulator and model output only).
            pub fn from_f64_round(v: f64) -> Self {
                Self((v * SCALE as f64).round() as i64)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_fixed(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_fixed(self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = FixedParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl std::ops::Add for $name {
            type Output = Self;
            fn add(self, o: Self) -> Self {
                Self(self.0 + o.0)
            }
        }

        impl std::ops::Sub for $name {
            type Output = Self;
            fn sub(self, o: Self) -> Self {
                Self(self.0 - o.0)
            }
        }

        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, o: Self) {
                self.0 += o.0;
            }
        }

        impl std::ops::SubAssign for $name {
            fn sub_assign(&mut self, o: Self) {
                self.0 -= o.0;
            }
        }
    };
}

fixed_type!(Price, "An exact price with 8 decimals.");
fixed_type!(Qty, "An exact quantity (base asset) with 8 decimals.");

/// Exact notional `price × qty` in quote units, scaled by [`SCALE`] (i128 so it cannot overflow).
pub fn notional(price: Price, qty: Qty) -> i128 {
    price.0 as i128 * qty.0 as i128 / SCALE as i128
}

/// Canonical instrument id, e.g. `ETHUSDT` (exchange symbols map onto it).
pub type Symbol = String;

/// Book or trade side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The bid side / an aggressive buy.
    Buy,
    /// The ask side / an aggressive sell.
    Sell,
}

/// One trade as printed by the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    /// Canonical symbol.
    pub symbol: Symbol,
    /// Exchange trade id (aggregate trade id on Binance).
    pub id: u64,
    /// Exchange trade time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Trade price.
    pub price: Price,
    /// Trade quantity.
    pub qty: Qty,
    /// The aggressor's side: `Buy` when the buyer took liquidity.
    pub taker_side: Side,
}

/// One price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    /// Level price.
    pub price: Price,
    /// Absolute quantity resting at the price; zero removes the level in a diff.
    pub qty: Qty,
}

/// Candle intervals the workstation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timeframe {
    /// One second.
    S1,
    /// One minute.
    M1,
    /// One hour.
    H1,
    /// One day (UTC).
    D1,
}

impl Timeframe {
    /// All kept timeframes, shortest first.
    pub const ALL: [Timeframe; 4] = [Timeframe::S1, Timeframe::M1, Timeframe::H1, Timeframe::D1];

    /// Interval length in milliseconds.
    pub const fn millis(self) -> i64 {
        match self {
            Timeframe::S1 => 1_000,
            Timeframe::M1 => 60_000,
            Timeframe::H1 => 3_600_000,
            Timeframe::D1 => 86_400_000,
        }
    }

    /// Binance's interval name (`1s`, `1m`, `1h`, `1d`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Timeframe::S1 => "1s",
            Timeframe::M1 => "1m",
            Timeframe::H1 => "1h",
            Timeframe::D1 => "1d",
        }
    }

    /// Parses Binance's interval name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Start of the interval containing `time_ms` (UTC-aligned; epoch-aligned is UTC-aligned).
    pub const fn floor(self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.millis()) * self.millis()
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One OHLCV candle; prices exact, volume exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Interval start, ms since the UNIX epoch, UTC-aligned.
    pub open_time_ms: i64,
    /// First trade price (or the previous close for an empty interval).
    pub open: Price,
    /// Highest trade price.
    pub high: Price,
    /// Lowest trade price.
    pub low: Price,
    /// Last trade price.
    pub close: Price,
    /// Base volume traded.
    pub volume: Qty,
    /// Number of trades aggregated.
    pub trades: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Price::parse("123.45").unwrap().raw(), 12_345_000_000);
        assert_eq!(Price::parse("0.00000001").unwrap().raw(), 1);
        assert_eq!(Qty::parse("0.0000000100").unwrap().raw(), 1);
        assert_eq!(Qty::parse("-2").unwrap().raw(), -200_000_000);
        assert_eq!(Qty::parse("5.").unwrap().raw(), 500_000_000);
        assert!(matches!(
            Qty::parse("0.000000001"),
            Err(FixedParseError::TooPrecise(_))
        ));
        assert!(matches!(
            Qty::parse("1e5"),
            Err(FixedParseError::Invalid(_))
        ));
        assert!(matches!(Qty::parse(""), Err(FixedParseError::Empty)));
        assert!(matches!(Qty::parse("."), Err(FixedParseError::Invalid(_))));
        assert!(matches!(
            Qty::parse("99999999999999999999"),
            Err(FixedParseError::Overflow(_))
        ));
    }

    #[test]
    fn displays_round_trip() {
        for s in ["123.45", "0.00000001", "-2", "60123.1", "0"] {
            assert_eq!(Price::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            format!("{:.2}", Price::parse("60123.129").unwrap()),
            "60123.12"
        );
    }

    #[test]
    fn timeframe_floor_is_utc_aligned() {
        assert_eq!(Timeframe::M1.floor(61_500), 60_000);
        assert_eq!(Timeframe::D1.floor(86_400_000 * 3 + 5), 86_400_000 * 3);
        assert_eq!(Timeframe::S1.floor(-1), -1_000);
    }
}
