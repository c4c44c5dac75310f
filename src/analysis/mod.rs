//! Market analysis: Williams pivots, indicators, model input. Pure logic.
