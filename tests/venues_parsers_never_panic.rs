//! Property: no byte sequence panics any exchange parser or the book state machines behind
//! them; malformed input is a typed error. Inputs are arbitrary bytes and real recorded
//! messages and REST bodies with random byte mutations (which reach deep parser paths).
//!
//! Every input goes through `feeds::parser_surface::all`, the same functions the cargo-fuzz
//! targets call: each venue's frames, REST snapshot and connect-token parsers, Binance's wire
//! and REST parsers (klines, aggTrades, exchangeInfo, errors, depth snapshots), both replay line
//! formats, and the decimal and fixed-point number parsers.

mod venues_common;

use std::sync::OnceLock;

use mmtrader::feeds::normalized::Venue;
use mmtrader::feeds::parser_surface;
use mmtrader::feeds::raw_replay::{CaptureLine, Payload, parse_capture_line};
use mmtrader::feeds::venue::{Frame, Step, VenueSession};
use proptest::prelude::*;
use venues_common::{capture, lines};

const VENUES: [(Venue, &str); 8] = [
    (Venue::Kraken, "KRAKEN.ws.50.0"),
    (Venue::Coinbase, "COINBASE.ws.28.0"),
    (Venue::Htx, "HUOBI.ws.44.0"),
    (Venue::Bitfinex, "BITFINEX.ws.11.0"),
    (Venue::Kucoin, "KUCOIN.ws.1.0"),
    (Venue::Bybit, "BYBIT.ws.25.0"),
    (Venue::Mexc, "BINANCE.ws.1.0"),
    (Venue::Binance, "BINANCE.ws.1.0"),
];

/// Recorded REST logs (depth snapshots, KuCoin level2) and single REST bodies.
const REST_LOGS: [&str; 3] = [
    "BINANCE.http.0.0",
    "BINANCE_FUTURES.http.0.0",
    "KUCOIN.http.0.0",
];
const REST_BODIES: [&str; 4] = [
    "exchange_raw/nautilus_rest/binance/http_spot_market_klines.json",
    "exchange_raw/nautilus_rest/binance/http_spot_market_agg_trades.json",
    "exchange_raw/nautilus_rest/binance/http_spot_market_exchange_info.json",
    "exchange_raw/nautilus_rest/binance/http_spot_market_depth.json",
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

/// REST bodies: every response of the REST logs, and the single-response files.
fn rest_corpus() -> &'static Vec<Vec<u8>> {
    static C: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    C.get_or_init(|| {
        let mut out: Vec<Vec<u8>> = REST_LOGS
            .iter()
            .flat_map(|f| lines(&capture(f)))
            .filter_map(|l| match parse_capture_line(&l).ok()? {
                CaptureLine::Rest { body, .. } => Some(body.into_bytes()),
                _ => None,
            })
            .collect();
        for f in REST_BODIES {
            out.push(std::fs::read(mmtrader::testdata::require(f)).unwrap());
        }
        assert!(out.len() >= 10, "REST corpus: {} bodies", out.len());
        out
    })
}

fn mutate(
    mut m: Vec<u8>,
    edits: &[(prop::sample::Index, u8)],
    truncate: Option<prop::sample::Index>,
) -> Vec<u8> {
    for (at, b) in edits {
        let i = at.index(m.len().max(1));
        if i < m.len() {
            m[i] = *b;
        }
    }
    if let Some(t) = truncate {
        m.truncate(t.index(m.len() + 1));
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parser_surface::all(&bytes);
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
        let m = mutate(c[pick.index(c.len())].clone(), &edits, truncate);
        let _ = match std::str::from_utf8(&m) {
            Ok(t) => s.on_frame(Frame::Text(t), &mut step),
            Err(_) => s.on_frame(Frame::Binary(&m), &mut step),
        };
        parser_surface::all(&m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_rest_bodies_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        let c = rest_corpus();
        parser_surface::all(&mutate(c[pick.index(c.len())].clone(), &edits, truncate));
    }
}
