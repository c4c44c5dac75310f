//! Market analysis: Williams pivots, indicators, model input. Pure logic.

pub mod indicators;
