//! Property: no byte sequence panics any exchange parser (Binance's included) or the book
//! state machines behind them; malformed input is a typed error. Inputs are arbitrary bytes
//! and real recorded messages with random byte mutations (which reach deep parser paths).

mod venues_common;

use std::sync::OnceLock;

use mmtrader::feeds::normalized::Venue;
use mmtrader::feeds::raw_replay::{CaptureLine, Payload, parse_capture_line};
use mmtrader::feeds::venue::{Frame, Step, VenueSession};
use proptest::prelude::*;
use venues_common::{capture, lines};

const VENUES: [(Venue, &str); 7] = [
    (Venue::Kraken, "KRAKEN.ws.50.0"),
    (Venue::Coinbase, "COINBASE.ws.28.0"),
    (Venue::Htx, "HUOBI.ws.44.0"),
    (Venue::Bitfinex, "BITFINEX.ws.11.0"),
    (Venue::Kucoin, "KUCOIN.ws.1.0"),
    (Venue::Bybit, "BYBIT.ws.25.0"),
    (Venue::Mexc, "BINANCE.ws.1.0"),
];

/// Up to 300 received payloads per capture (MEXC has no capture; it gets Binance's text).
fn corpus() -> &'static Vec<Vec<Vec<u8>>> {
    static C: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
    C.get_or_init(|| {
        VENUES
            .iter()
            .map(|(_, f)| {
                lines(&capture(f))
                    .iter()
                    .filter_map(|l| match parse_capture_line(l).ok()? {
                        CaptureLine::Received {
                            payload: Payload::Text(t),
                            ..
                        } => Some(t.into_bytes()),
                        CaptureLine::Received {
                            payload: Payload::Binary(b),
                            ..
                        } => Some(b),
                        _ => None,
                    })
                    .take(300)
                    .collect()
            })
            .collect()
    })
}

fn feed_all(bytes: &[u8]) {
    for (venue, _) in VENUES {
        let mut s = VenueSession::open(mmtrader::feeds::protocol_for(venue).unwrap());
        let mut step = Step::default();
        let _ = s.on_frame(Frame::Binary(bytes), &mut step);
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = s.on_frame(Frame::Text(text), &mut step);
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = mmtrader::feeds::binance::wire::parse_frame(text);
        let _ = parse_capture_line(text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        feed_all(&bytes);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        venue in 0usize..VENUES.len(),
        pick in any::<prop::sample::Index>(),
        prefix in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        let c = &corpus()[venue];
        // A session primed with a few real messages, so mutations hit synced books too.
        let mut s = VenueSession::open(mmtrader::feeds::protocol_for(VENUES[venue].0).unwrap());
        let mut step = Step::default();
        for p in &prefix {
            let m = &c[p.index(c.len())];
            let _ = match std::str::from_utf8(m) {
                Ok(t) => s.on_frame(Frame::Text(t), &mut step),
                Err(_) => s.on_frame(Frame::Binary(m), &mut step),
            };
        }
        let mut m = c[pick.index(c.len())].clone();
        for (at, b) in &edits {
            let i = at.index(m.len().max(1));
            if i < m.len() {
                m[i] = *b;
            }
        }
        if let Some(t) = truncate {
            m.truncate(t.index(m.len() + 1));
        }
        let _ = match std::str::from_utf8(&m) {
            Ok(t) => s.on_frame(Frame::Text(t), &mut step),
            Err(_) => s.on_frame(Frame::Binary(&m), &mut step),
        };
        feed_all(&m);
    }
}
