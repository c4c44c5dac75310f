//! Market-data core: exact values, order book, candles, tick buffer and the COB. Pure logic.

pub mod book;
pub mod candles;
pub mod cob;
pub mod instrument;
pub mod snapshot;
pub mod state;
pub mod ticks;
pub mod types;
