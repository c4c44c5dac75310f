//! The terminal screen.
pub mod theme;
