//! Binance spot (and USD-M futures book rules): the real websocket and REST protocol.

pub mod connector;
pub mod protocol;
pub mod sync;
pub mod wire;
