//! Order execution on real exchanges: signed REST clients, user-data streams and executors.
//!
//! - [`signing`]: HMAC-SHA256 request signing, credentials and the [`signing::Secret`] newtype.
//! - [`wire`]: the exchanges' order, trade, account and user-data replies, parsed exactly.
//! - [`rest`]: signed transport with clock-skew correction and request-weight limits.
//! - [`binance_spot`]: Binance spot orders (filters, client ids, retries that never double).
//! - [`mexc_spot`]: MEXC spot v3 over the same transport.
//! - [`user_stream`]: the listen-key user-data stream turned into fills and acks.
//! - [`venue`]: requests ↔ wire orders, replies and reports → execution events, venue snapshots.
//! - [`reconcile`]: start-up reconciliation of the order journal with the venue.
//! - [`connect`]: the `[exec]` settings and building the configured executor.
//! - [`executor`]: the `trading::executor::Executor` implementation over an exchange account.

pub mod binance_spot;
pub mod connect;
pub mod executor;
pub mod mexc_spot;
pub mod reconcile;
pub mod rest;
pub mod signing;
pub mod user_stream;
pub mod venue;
pub mod wire;
