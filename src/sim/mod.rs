//! The simulated exchange: a seeded market served over Binance's websocket and REST protocol.

pub mod book;
pub mod config;
pub mod control;
pub mod history;
pub mod model;
pub mod protocol;
pub mod random;
pub mod server;
pub mod ws;

pub use config::{SimConfig, SimSymbolConfig};
pub use server::{SimError, SimHandle, start};
