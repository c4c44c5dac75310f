//! Market analysis: Williams pivots, indicators, model input. Pure logic (the `analyze` file
//! helper aside).

pub mod analyze;
pub mod encoding;
pub mod indicators;
pub mod input;
pub mod model_output;
pub mod pivots;
