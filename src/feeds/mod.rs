//! Exchange connectors: wire protocols, local-book synchronisation, recorded-session replay.

pub mod binance;
pub mod replay;
