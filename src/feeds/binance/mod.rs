//! Binance spot (and USD-M futures book rules): the real websocket and REST protocol.

pub mod connector;
pub mod sync;
pub mod wire;
