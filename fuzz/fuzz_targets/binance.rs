//! Fuzz target: Binance websocket frames and REST depth snapshots; must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mmtrader::feeds::binance::wire::parse_frame(text);
        let _ = mmtrader::feeds::binance::wire::parse_depth_snapshot(text);
    }
});
