//! Kraken against the recorded websocket v1 captures (trade, ticker and book channels of ten
//! pairs): every message parsed or typed unsupported, books rebuilt from the snapshots, every
//! CRC32 checksum verified, and a single altered level detected.
//!
//! The recordings are websocket v1 (arrays, `XBT`); the live connector subscribes v2, whose
//! parser is tested with v2 messages in the unit tests. No recording has a gap (Kraken books
//! carry no sequence numbers; the checksum is the integrity check).

mod venues_common;

use mmtrader::feeds::normalized::{IntegrityError, NormEvent};
use venues_common::{capture, lines, replay, temp_capture};

#[test]
fn trades_and_tickers_parse() {
    let (stats, _, events) = replay("kraken", &[capture("KRAKEN.ws.48.0")]);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.trades >= 8, "{stats:?}");
    for e in &events {
        if let NormEvent::Trade(t) = e {
            assert!(t.price.raw() > 0 && t.qty.raw() > 0 && t.time_ms > 1_618_000_000_000);
            assert!(
                t.symbol.contains('/') && !t.symbol.contains("XBT"),
                "{}",
                t.symbol
            );
        }
    }
    let (stats, _, _) = replay("kraken", &[capture("KRAKEN.ws.49.0")]);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(stats.unsupported.get("ticker"), Some(&18));
}

#[test]
fn books_rebuild_and_every_checksum_matches() {
    let (stats, session, _) = replay("kraken", &[capture("KRAKEN.ws.50.0")]);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(
        stats.integrity.is_empty(),
        "{:?}",
        &stats.integrity[..stats.integrity.len().min(5)]
    );
    assert_eq!(stats.snapshots, 10);
    assert_eq!(stats.deltas, 4269);
    assert!(stats.checksums_ok >= 4268, "{stats:?}");
    for inst in session.book_instruments() {
        let b = session.book(inst).unwrap();
        assert!(!b.is_crossed(), "{inst} crossed");
        assert!(b.depth(mmtrader::market::types::Side::Buy) > 10, "{inst}");
    }
}

#[test]
fn an_altered_level_fails_its_checksum_and_resubscribes() {
    let path = capture("KRAKEN.ws.50.0");
    let mut all = lines(&path);
    // Alter the quantity of the first book update after the snapshots (same length, other value).
    let i = all
        .iter()
        .position(|l| l.contains(",\"c\":\"") && l.contains("book-1000"))
        .unwrap();
    let pos = all[i].find("\",\"").unwrap() + 3;
    let digit = all[i].as_bytes()[pos];
    let new = if digit == b'1' { '2' } else { '1' };
    all[i].replace_range(pos..pos + 1, &new.to_string());
    let dir = tempfile::tempdir().unwrap();
    let altered = temp_capture(&dir, "KRAKEN.ws.50.0", &all);
    let (stats, _, _) = replay("kraken", &[altered]);
    assert!(
        matches!(
            stats.integrity.first(),
            Some((_, IntegrityError::Checksum { .. }))
        ),
        "{:?}",
        stats.integrity
    );
    assert!(
        stats.replies >= 2,
        "unsubscribe + subscribe sent: {stats:?}"
    );
}
