//! Every parser that reads bytes from an exchange or a recording, callable on arbitrary input
//! and ignoring the result. The cargo-fuzz targets (`fuzz/`) and the never-panic property test
//! both call these functions, so they cover the same set of parsers by construction: a parser
//! added here is fuzzed and property-tested at once. Pure logic.

use super::binance::wire;
use super::normalized::{Rounding, Venue, parse_decimal};
use super::venue::{Frame, Step, VenueSession};
use crate::market::types::{Price, Qty};

/// A depth-snapshot URL prefix, so `snapshot_instrument` also parses fuzzed query strings.
const URL_PREFIX: &str = "https://example.invalid/api/v3/depth?symbol=";

/// One venue: the input as a binary frame and each line as a text frame through the protocol
/// and its book state machine, then through the protocol's REST parsers (depth snapshot,
/// connect token, snapshot URL).
pub fn venue(venue: Venue, data: &[u8]) {
    let Some(proto) = super::protocol_for(venue) else {
        return;
    };
    let mut session = VenueSession::open(proto);
    let mut step = Step::default();
    let _ = session.on_frame(Frame::Binary(data), &mut step);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let _ = session.on_frame(Frame::Text(line), &mut step);
    }
    let proto = session.protocol();
    if let Ok(snap) = proto.parse_snapshot("BTC/USDT", text) {
        // A parsed snapshot also goes through the book (REST alignment, level checks).
        session.on_rest_snapshot(snap, &mut step);
    }
    let proto = session.protocol();
    let _ = proto.ws_url_from_token(text);
    let _ = proto.snapshot_instrument(text);
    let _ = proto.snapshot_instrument(&format!("{URL_PREFIX}{text}"));
}

/// Binance's wire and REST parsers (frames, depth snapshots, klines, aggregate trades,
/// exchange info, REST error bodies).
pub fn binance_wire(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wire::parse_frame(text);
    let _ = wire::parse_depth_snapshot(text);
    let _ = wire::parse_klines(text, "1m");
    let _ = wire::parse_agg_trades(text, "BTCUSDT");
    let _ = wire::parse_exchange_info(text);
    let _ = wire::parse_rest_error(text);
}

/// Recording lines: the recorded-session replay's line classifier and raw replay's capture
/// lines (cryptofeed format, Python bytes literals).
pub fn recording_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = super::replay::parse_line(text);
    let _ = super::raw_replay::parse_capture_line(text);
    let _ = super::raw_replay::python_bytes(text);
}

/// Number tokens: the connectors' exponent-aware decimal parser and the fixed-point parsers.
pub fn decimal(data: &[u8]) {
    let _ = parse_decimal(data, Rounding::Exact);
    let _ = parse_decimal(data, Rounding::HalfEven);
    let _ = Price::parse_bytes(data);
    let _ = Qty::parse_bytes(data);
}

/// Everything above on one input (every venue).
pub fn all(data: &[u8]) {
    for v in Venue::ALL {
        venue(v, data);
    }
    binance_wire(data);
    recording_line(data);
    decimal(data);
}
