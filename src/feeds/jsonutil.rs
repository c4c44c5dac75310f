//! Small helpers for exchange JSON: exact numbers from raw tokens, level arrays, ids.

use serde_json::value::RawValue;

use super::normalized::{Rounding, price, qty};
use super::venue::VenueError;
use crate::market::types::Level;

/// Deserializes a borrowed JSON value, naming the shape on failure.
pub fn from_str<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, VenueError> {
    serde_json::from_str(text).map_err(|e| VenueError::Json(e.to_string()))
}

/// One level from a price token and a quantity token (strings or numbers).
pub fn level(p: &RawValue, q: &RawValue, rounding: Rounding) -> Result<Level, VenueError> {
    Ok(Level {
        price: price(p.get().as_bytes()).map_err(VenueError::number("price"))?,
        qty: qty(q.get().as_bytes(), rounding).map_err(VenueError::number("quantity"))?,
    })
}

/// Levels from `[[price, qty, ...], ...]` (extra elements ignored).
pub fn levels(rows: &[Vec<&RawValue>], rounding: Rounding) -> Result<Vec<Level>, VenueError> {
    rows.iter()
        .map(|r| match r.as_slice() {
            [p, q, ..] => level(p, q, rounding),
            _ => Err(VenueError::Field("level [price, qty]")),
        })
        .collect()
}

/// An unsigned id written as a number or a decimal string.
pub fn u64_of(v: &RawValue, field: &'static str) -> Result<u64, VenueError> {
    let t = v.get().trim_matches('"');
    t.parse::<u64>().map_err(|_| VenueError::Field(field))
}

/// The text of a string token, or the raw text of any other token.
pub fn text_of(v: &RawValue) -> &str {
    let t = v.get();
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2021-04-17T16:43:36.123456Z`, a
/// space instead of `T` and a `+00:00` offset are accepted too).
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut ms = 0i64;
    let rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        let first3: String = digits.chars().chain("000".chars()).take(3).collect();
        ms = first3.parse().ok()?;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Milliseconds from a decimal seconds text (`"1618678133.481570"`).
pub fn seconds_text_ms(text: &str) -> Option<i64> {
    let scaled =
        super::normalized::parse_decimal(text.as_bytes(), super::normalized::Rounding::HalfEven)
            .ok()?;
    Some(scaled / 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            rfc3339_ms("2021-04-17T16:43:36.123456Z"),
            Some(1_618_677_816_123)
        );
        assert_eq!(
            rfc3339_ms("2026-04-07 14:30:10.000000000+00:00"),
            Some(1_775_572_210_000)
        );
        assert_eq!(rfc3339_ms("2021-13-17T16:43:36Z"), None);
        assert_eq!(rfc3339_ms("garbage"), None);
        assert_eq!(
            seconds_text_ms("1618678133.481570"),
            Some(1_618_678_133_481)
        );
    }
}
