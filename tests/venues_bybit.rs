//! Bybit against the recorded legacy v2 captures (USDT perpetual with `data.order_book`
//! snapshots and string ids; inverse with bare-array snapshots and numeric prices).
//!
//! The legacy feeds' `cross_seq` is monotonic but not contiguous, so it cannot detect a lost
//! message; the live connector uses v5 (`u` contiguous, `u == 1` restart snapshot), covered by
//! the protocol's unit-level test below with v5-shaped messages.

mod venues_common;

use mmtrader::feeds::normalized::{IntegrityError, NormEvent};
use mmtrader::feeds::raw_replay::{ReplayStats, feed_line, parse_capture_line};
use mmtrader::feeds::venue::VenueSession;
use mmtrader::market::types::Side;
use venues_common::{capture, replay};

#[test]
fn legacy_usdt_and_inverse_feeds_parse_and_rebuild() {
    for (file, books) in [("BYBIT.ws.25.0", 8), ("BYBIT.ws.26.0", 2)] {
        let (stats, session, events) = replay("bybit", &[capture(file)]);
        assert!(stats.errors.is_empty(), "{file}: {:?}", stats.errors);
        assert!(stats.integrity.is_empty(), "{file}");
        assert_eq!(stats.snapshots, books);
        assert!(
            stats.deltas > 1000 && stats.trades > 50,
            "{file}: {stats:?}"
        );
        assert_eq!(session.book_instruments().count() as u64, books);
        for inst in session.book_instruments() {
            let b = session.book(inst).unwrap();
            assert!(b.depth(Side::Buy) > 0 && !b.is_crossed(), "{file} {inst}");
        }
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, NormEvent::Unsupported(_)))
        );
    }
}

#[test]
fn v5_update_ids_restart_snapshots_and_gaps() {
    let proto = mmtrader::feeds::protocol_for(mmtrader::feeds::normalized::Venue::Bybit).unwrap();
    let mut s = VenueSession::open(proto);
    let mut stats = ReplayStats::default();
    let msg = |kind: &str, u: u64, bid: &str| {
        format!(
            r#"{{"topic":"orderbook.50.BTCUSDT","type":"{kind}","ts":1,"data":{{"s":"BTCUSDT","b":[["{bid}","1.5"]],"a":[["17440.50","2"]],"u":{u},"seq":9}},"cts":1}}"#
        )
    };
    for line in [
        msg("snapshot", 100, "17440.00"),
        msg("delta", 101, "17439.00"),
        msg("delta", 103, "17438.00"),
        msg("delta", 1, "17000.00"),
        r#"{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}"#.to_string(),
        "pong".to_string(),
    ] {
        feed_line(
            &mut s,
            parse_capture_line(&line).unwrap(),
            "t",
            &mut stats,
            &mut |_| {},
        );
    }
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(
        stats.integrity,
        [(
            "BTC/USDT".to_string(),
            IntegrityError::Gap {
                expected: 102,
                got: 103
            }
        )]
    );
    assert_eq!(stats.replies, 2, "unsubscribe + subscribe");
    // u == 1 restarted the book from that message alone.
    let b = s.book("BTC/USDT").unwrap();
    assert_eq!(b.depth(Side::Buy), 1);
    assert_eq!(b.best_bid().unwrap().price.to_string(), "17000");
}
