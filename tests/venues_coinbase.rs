//! Coinbase against the recorded legacy Pro capture (level2 + matches, ten products).
//!
//! The recording's level2 messages carry no sequence numbers, so a lost message cannot be
//! detected from the data; the book is checked for being uncrossed after every update (a
//! crossed book is an integrity failure for this exchange), and match trade ids are checked
//! contiguous per product.

mod venues_common;

use std::collections::BTreeMap;

use mmtrader::feeds::normalized::NormEvent;
use mmtrader::market::types::Side;
use venues_common::{capture, replay};

#[test]
fn every_message_parses_and_books_stay_consistent() {
    let (stats, session, events) = replay("coinbase", &[capture("COINBASE.ws.28.0")]);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.integrity.is_empty(), "{:?}", stats.integrity);
    assert_eq!(stats.snapshots, 10);
    assert_eq!(stats.deltas, 9719);
    assert_eq!(stats.trades, 107);
    assert_eq!(stats.unsupported.get("ticker"), Some(&107));
    assert_eq!(session.book_instruments().count(), 10);
    for inst in session.book_instruments() {
        let b = session.book(inst).unwrap();
        assert!(
            b.depth(Side::Buy) > 0 && b.depth(Side::Sell) > 0 && !b.is_crossed(),
            "{inst}"
        );
    }
    let mut ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        if let NormEvent::Trade(t) = e {
            ids.entry(t.symbol.clone()).or_default().push(t.id);
        }
    }
    for (sym, v) in &ids {
        // The first is the `last_match` replayed on subscribe; matches follow contiguously.
        for w in v[1..].windows(2) {
            assert_eq!(w[1], w[0] + 1, "{sym}: {v:?}");
        }
    }
}
