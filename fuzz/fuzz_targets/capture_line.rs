//! Fuzz target: raw-replay capture lines (cryptofeed format, Python bytes literals); must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mmtrader::feeds::raw_replay::parse_capture_line(text);
        let _ = mmtrader::feeds::raw_replay::python_bytes(text);
    }
});
