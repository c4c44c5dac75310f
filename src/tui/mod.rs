//! The terminal screen.
pub mod keys;
pub mod status;
pub mod terminal;
pub mod theme;
