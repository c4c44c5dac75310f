//! Market analysis: Williams pivots, indicators, model input. Pure logic (the `analyze` file
//! helper aside).

pub mod analyze;
pub mod indicators;
pub mod pivots;
