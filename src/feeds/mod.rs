//! Exchange connectors: wire protocols, local-book synchronisation, recorded-session replay.

pub mod backoff;
pub mod binance;
pub mod health;
pub mod normalized;
pub mod replay;
pub mod rest;
pub mod venue;
