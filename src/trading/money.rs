//! Exact quote-currency amounts (equity, PnL, fees in quote, notionals).
//!
//! A [`Money`] is an `i128` scaled by [`SCALE`] like [`Price`], so the product of any
//! [`Price`] and [`Qty`] fits without overflow and sums over a whole trading life stay exact.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::market::types::{FixedParseError, Price, Qty, SCALE, SCALE_DECIMALS, parse_fixed};

/// An exact amount of quote currency with 8 decimals.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(pub i128);

impl Money {
    /// Zero.
    pub const ZERO: Self = Self(0);

    /// Whole quote units (`from_units(5)` is 5.0).
    pub const fn from_units(units: i64) -> Self {
        Self(units as i128 * SCALE as i128)
    }

    /// Parses exact decimal text such as `"1000.5"`.
    pub fn parse(text: &str) -> Result<Self, FixedParseError> {
        parse_fixed(text.as_bytes()).map(|v| Self(v as i128))
    }

    /// `price × qty`, truncated toward zero at the 8th decimal (the exchange's own rounding
    /// of `cummulativeQuoteQty` is to the asset precision, so the truncated digit is dust).
    pub fn notional(price: Price, qty: Qty) -> Self {
        Self(price.raw() as i128 * qty.raw() as i128 / SCALE as i128)
    }

    /// A price read as a quote amount (a per-unit value).
    pub const fn from_price(p: Price) -> Self {
        Self(p.raw() as i128)
    }

    /// The raw scaled integer.
    pub const fn raw(self) -> i128 {
        self.0
    }

    /// Absolute value.
    pub const fn abs(self) -> Self {
        Self(self.0.abs())
    }

    /// True when exactly zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True when below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Lossy float for statistics and display; never for money comparisons.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// `self × bps / 10_000`, rounded up in magnitude (fees and limits are never understated).
    pub fn mul_bps_ceil(self, bps: u32) -> Self {
        let num = self.0 * bps as i128;
        let q = num / 10_000;
        let r = num % 10_000;
        Self(if r == 0 { q } else { q + num.signum() })
    }

    /// `self × bps / 10_000` for an exact decimal `bps` (e.g. 7.5), rounded up in magnitude.
    pub fn mul_decimal_bps_ceil(self, bps: Price) -> Self {
        let den = 10_000 * SCALE as i128;
        let num = self.0 * bps.raw() as i128;
        let q = num / den;
        Self(if num % den == 0 { q } else { q + num.signum() })
    }

    /// `self × bps / 10_000`, truncated toward zero (for budgets that must not be overstated).
    pub fn mul_bps_floor(self, bps: u32) -> Self {
        Self(self.0 * bps as i128 / 10_000)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = SCALE as u128;
        let (int, frac) = (abs / scale, abs % scale);
        if let Some(prec) = f.precision() {
            let prec = prec.min(SCALE_DECIMALS as usize);
            if prec == 0 {
                return write!(f, "{sign}{int}");
            }
            let shown = frac / 10u128.pow(SCALE_DECIMALS - prec as u32);
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
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::ops::Add for Money {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self(self.0 + o.0)
    }
}

impl std::ops::Sub for Money {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self(self.0 - o.0)
    }
}

impl std::ops::Neg for Money {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl std::ops::AddAssign for Money {
    fn add_assign(&mut self, o: Self) {
        self.0 += o.0;
    }
}

impl std::ops::SubAssign for Money {
    fn sub_assign(&mut self, o: Self) {
        self.0 -= o.0;
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notional_is_exact_and_displays() {
        let n = Money::notional(
            Price::parse("3000.5").unwrap(),
            Qty::parse("0.002").unwrap(),
        );
        assert_eq!(n.to_string(), "6.001");
        assert_eq!(Money::parse("-12.5").unwrap().to_string(), "-12.5");
        assert_eq!(format!("{:.2}", Money::parse("1.239").unwrap()), "1.23");
    }

    #[test]
    fn bps_rounding_directions() {
        let m = Money(1_000_001);
        assert_eq!(m.mul_bps_ceil(10).raw(), 1001);
        assert_eq!(m.mul_bps_floor(10).raw(), 1000);
        assert_eq!(Money(-1_000_001).mul_bps_ceil(10).raw(), -1001);
        assert_eq!(Money(10_000).mul_bps_ceil(10).raw(), 10);
        let fee = Money::from_units(1000).mul_decimal_bps_ceil(Price::parse("7.5").unwrap());
        assert_eq!(fee, Money::parse("0.75").unwrap());
        assert_eq!(Money(1).mul_decimal_bps_ceil(Price::from_units(1)).raw(), 1);
    }

    #[test]
    fn huge_notionals_do_not_overflow() {
        let n = Money::notional(Price(i64::MAX), Qty(i64::MAX));
        assert!(n.raw() > 0);
    }
}
