//! The collector's HTTP API: health, status, latest COB and heatmap, stored candles and trades
//! by time range, a live WebSocket, Prometheus metrics and the OpenAPI description. Loopback
//! by default; any other bind address requires a bearer token.

pub mod auth;
pub mod config;
pub mod openapi;
pub mod server;
