//! The terminal screen.
pub mod app;
pub mod desk;
pub mod fixture;
pub mod keys;
pub mod panes;
pub mod svg;
pub mod terminal;
pub mod theme;
