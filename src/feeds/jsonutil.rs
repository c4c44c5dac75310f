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
