//! Fuzz target: exact decimal tokens with exponents and the fixed-point parsers; must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mmtrader::feeds::parser_surface::decimal(data));
