//! Bitfinex against the recorded v2 capture (SEQ_ALL flag set): channel ids mapped from the
//! `subscribed` events, P0 book snapshots and updates applied, trade snapshots and `te`
//! trades parsed, the per-connection sequence unbroken.
//!
//! The recording subscribed without the checksum flag and holds no `cs` message, so the
//! checksum is checked against the books rebuilt from it: the value computed from a real
//! book passes, and fails once a level is altered.

mod venues_common;

use mmtrader::feeds::normalized::{IntegrityError, NormEvent};
use mmtrader::feeds::venue::{BookRules, ChecksumKind, VenueBook, bitfinex_checksum};
use mmtrader::market::types::{Qty, Side};
use venues_common::{capture, replay};

#[test]
fn every_message_parses_and_books_rebuild() {
    let (stats, session, events) = replay("bitfinex", &[capture("BITFINEX.ws.11.0")]);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert!(stats.integrity.is_empty(), "{:?}", stats.integrity);
    assert_eq!(stats.snapshots, 7);
    assert_eq!(stats.deltas, 1593);
    assert_eq!(stats.unsupported.get("ticker"), Some(&21));
    assert!(events.iter().any(|e| matches!(e, NormEvent::Trade(_))));
    let mut books = 0;
    for inst in session.book_instruments() {
        let b = session.book(inst).unwrap();
        assert!(b.depth(Side::Buy) <= 100 && b.depth(Side::Sell) <= 100);
        assert!(!b.is_crossed(), "{inst}");
        books += 1;

        // The checksum of the real book passes; one altered level fails.
        let mut vb = VenueBook::new(BookRules {
            checksum: ChecksumKind::BitfinexTop25,
            ..BookRules::default()
        });
        let mut snap = mmtrader::feeds::normalized::BookData::new(
            inst,
            mmtrader::feeds::normalized::SeqInfo::None,
        );
        snap.bids = b.top(Side::Buy, 100);
        snap.asks = b.top(Side::Sell, 100);
        vb.on_snapshot(&snap);
        let cs = bitfinex_checksum(b);
        assert_eq!(vb.on_checksum(cs), mmtrader::feeds::venue::Verdict::Applied);
        let mut altered = snap.clone();
        if let Some(l) = altered.bids.first_mut() {
            l.qty += Qty(1);
        }
        vb.on_snapshot(&altered);
        assert!(matches!(
            vb.on_checksum(cs),
            mmtrader::feeds::venue::Verdict::Resync(IntegrityError::Checksum { .. })
        ));
    }
    assert_eq!(books, 7);
}
