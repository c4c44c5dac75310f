//! The simulated exchange: a seeded market served over Binance's websocket and REST protocol.
//!
//! - [`history`]: deterministic, lazily generated candles (1d → 1h → 1m → 1s) that aggregate
//!   exactly, plus the trades of every second.
//! - [`model`]: the live market (book, trades, depth diffs) printing those trades; pure.
//! - [`server`]: axum on loopback, Binance REST and streams, weights, fault injection.
//!
//! Wiring: `let h = sim::start(cfg).await?; /* ctrl-c */ h.shutdown().await;`.

pub mod accounts;
pub mod book;
pub mod config;
pub mod control;
pub mod history;
pub mod matching;
pub mod model;
pub mod protocol;
pub mod random;
pub mod server;
pub mod trading;
pub mod ws;

pub use config::{SimConfig, SimSymbolConfig};
pub use server::{SimError, SimHandle, start};
