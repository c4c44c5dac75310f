//! Fuzz target: Binance wire and REST parsers (frames, depth snapshots, klines, aggTrades,
//! exchangeInfo, REST errors), its normalized connector, and recorded-session replay lines;
//! must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmtrader::feeds::normalized::Venue;
use mmtrader::feeds::parser_surface;

fuzz_target!(|data: &[u8]| {
    parser_surface::binance_wire(data);
    parser_surface::venue(Venue::Binance, data);
    parser_surface::recording_line(data);
});
