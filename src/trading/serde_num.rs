//! Config deserializers for exact decimals written as TOML numbers or strings.
//!
//! `"0.5"`, `0.5` and `1` are all accepted; the error says what form is expected, so the
//! config loader can name the key and file around it.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::market::types::{Price, Qty, parse_fixed};
use crate::trading::money::Money;

#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Float(f64),
    Text(String),
}

fn fixed<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let text = match Num::deserialize(d)? {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => f.to_string(),
        Num::Text(s) => s,
    };
    let v = parse_fixed(text.trim().as_bytes()).map_err(|e| {
        serde::de::Error::custom(format!(
            "expected a non-negative decimal such as \"1\" or \"0.5\" (at most 8 decimals), got {text:?}: {e}"
        ))
    })?;
    if v < 0 {
        return Err(serde::de::Error::custom(format!(
            "expected a non-negative decimal, got {text:?}"
        )));
    }
    Ok(v)
}

/// A non-negative exact quantity.
pub fn de_qty<'de, D: Deserializer<'de>>(d: D) -> Result<Qty, D::Error> {
    fixed(d).map(Qty)
}

/// A non-negative exact price or multiplier.
pub fn de_price<'de, D: Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
    fixed(d).map(Price)
}

/// A non-negative exact quote amount.
pub fn de_money<'de, D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    fixed(d).map(|v| Money(v as i128))
}

/// A table of symbol → non-negative exact quantity.
pub fn de_qty_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Qty>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "de_qty")] Qty);
    let m = BTreeMap::<String, Wrapped>::deserialize(d)?;
    Ok(m.into_iter().map(|(k, Wrapped(q))| (k, q)).collect())
}
