//! The simulated exchange: a seeded market served over Binance's websocket and REST protocol.

pub mod config;
pub mod history;
pub mod random;

pub use config::{SimConfig, SimSymbolConfig};
