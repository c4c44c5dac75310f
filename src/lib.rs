//! mmtrader: a terminal trading workstation for machine-learning trading desks.
//!
//! Data flows one way: feeds → market state → analysis → models → orchestrator → risk →
//! executor, and immutable snapshots of all of it → screen.

pub mod analysis;
pub mod api;
pub mod app;

pub mod cli;
pub mod collector;
pub mod config;
pub mod exec;
pub mod feeds;
pub mod logging;
pub mod market;
pub mod models;
pub mod net;
pub mod orchestrator;
pub mod sim;
pub mod storage;
pub mod testdata;
pub mod trading;
pub mod tui;
