//! Fuzz target: the Htx connector (frames through protocol and book, REST snapshot and token
//! parsers); must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmtrader::feeds::normalized::Venue;

fuzz_target!(|data: &[u8]| mmtrader::feeds::parser_surface::venue(Venue::Htx, data));
