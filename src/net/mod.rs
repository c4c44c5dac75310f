//! What every HTTP client of the exchanges shares, whatever it is for (market data or orders).
//!
//! - [`rate_limit`]: the per-IP request-weight budget and the 429/418 back-off policy.

pub mod rate_limit;
