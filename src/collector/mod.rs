//! The standalone collector: runs the data path headless and stores normalized records in
//! PostgreSQL (batched binary COPY, idempotent, buffered and spilled while the database is
//! away), publishes them on Redis streams for any number of workstations, and serves the HTTP
//! API and Prometheus metrics (see [`crate::api`]).

pub mod buffer;
pub mod config;
pub mod consumer;
pub mod db_sink;
pub mod metrics;
pub mod pg;
pub mod record;
pub mod redis_sink;
pub mod schema;
pub mod service;
pub mod streams;
