//! Fuzz target: recording lines (raw-replay capture lines with Python bytes literals, and the
//! recorded-session replay's line classifier); must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mmtrader::feeds::parser_surface::recording_line(data));
