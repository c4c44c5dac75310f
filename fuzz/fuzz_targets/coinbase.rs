//! Fuzz target: Coinbase parser, one or more frames (lines) per input; must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmtrader::feeds::normalized::Venue;
use mmtrader::feeds::venue::{Frame, Step, VenueSession};

fuzz_target!(|data: &[u8]| {
    // Text and binary frames through the protocol and its book-integrity state machine.
    let proto = mmtrader::feeds::protocol_for(Venue::Coinbase).expect("venue has a protocol");
    let mut session = VenueSession::open(proto);
    let mut step = Step::default();
    let _ = session.on_frame(Frame::Binary(data), &mut step);
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            let _ = session.on_frame(Frame::Text(line), &mut step);
        }
    }
});
