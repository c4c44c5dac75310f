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

/// A Bitfinex session with book channel 123 subscribed for `symbol`.
fn book_session(symbol: &str) -> mmtrader::feeds::venue::VenueSession {
    let mut s = mmtrader::feeds::raw_replay::session_for("bitfinex").unwrap();
    feed(
        &mut s,
        &format!(
            r#"{{"event":"subscribed","channel":"book","chanId":123,"symbol":"{symbol}","prec":"P0","freq":"F0","len":"25"}}"#
        ),
    );
    s
}

fn feed(s: &mut mmtrader::feeds::venue::VenueSession, text: &str) -> Vec<NormEvent> {
    let mut step = mmtrader::feeds::venue::Step::default();
    s.on_frame(mmtrader::feeds::venue::Frame::Text(text), &mut step)
        .unwrap();
    step.events
}

/// Feeds the messages, then the exchange's checksum; returns the integrity failures.
fn verify(
    s: &mut mmtrader::feeds::venue::VenueSession,
    messages: &[&str],
    cs: i32,
) -> Vec<NormEvent> {
    for m in messages {
        feed(s, m);
    }
    feed(s, &format!(r#"[123,"cs",{cs}]"#))
        .into_iter()
        .filter(|e| matches!(e, NormEvent::Integrity { .. }))
        .collect()
}

#[test]
fn published_checksum_vectors_verify() {
    // Known answers published with Bitfinex's own Python client (bitfinexcom/bitfinex-api-py,
    // bfxapi/tests/test_ws_orderbook.py): a book snapshot, updates, and the expected checksum.
    let mut s = book_session("tXRPBTC");
    let snapshot = "[123, [[0.0000886,1,1060.55466114],[0.00008859,1,1000],[0.00008858,1,2713.47159343],[0.00008857,1,4276.92870916],[0.00008856,2,6764.75562319],\
        [0.00008854,1,5641.48532401],[0.00008853,1,2255.92632223],[0.0000885,1,2256.69584601],[0.00008848,2,3630.3],[0.00008845,1,28195.70625766],\
        [0.00008844,1,15571.7],[0.00008843,1,2500],[0.00008841,1,64196.16117814],[0.00008838,1,7500],[0.00008837,2,2764.12999012],[0.00008834,2,10886.476298],\
        [0.00008831,1,20000],[0.0000883,1,1000],[0.00008829,2,2517.22175358],[0.00008828,1,450.45],[0.00008827,1,13000],[0.00008824,1,1500],[0.0000882,1,300],\
        [0.00008817,1,3000],[0.00008816,1,100],[0.00008864,1,-481.8549041],[0.0000887,2,-2141.77009092],[0.00008871,1,-2256.45433182],[0.00008872,1,-2707.58122743],\
        [0.00008874,1,-5640.31794092],[0.00008876,1,-29004.93294912],[0.00008878,1,-2500],[0.0000888,1,-20000],[0.00008881,2,-2880.15595827],[0.00008882,1,-27705.42933984],\
        [0.00008883,1,-4509.83708214],[0.00008884,1,-1500],[0.00008885,1,-2500],[0.00008888,1,-902.91405442],[0.00008889,1,-900],[0.00008891,1,-7500],\
        [0.00008894,1,-775.08564697],[0.00008896,1,-150],[0.00008899,3,-11628.02590049],[0.000089,2,-1299.7],[0.00008902,2,-4841.8],[0.00008904,3,-25320.46250083],\
        [0.00008909,1,-14000],[0.00008913,1,-123947.999],[0.00008915,2,-28019.6]]]";
    let updates = [
        "[123,[0.00008915,0,-1]]",
        "[123,[0.00008837,1,56.54876269]]",
        "[123,[0.00008873,1,-15699.9]]",
    ];
    feed(&mut s, snapshot);
    assert_eq!(verify(&mut s, &updates, 30026640), vec![]);

    // Prices written in exponent notation (`7e-7`, `6.6e-7`) inside the top 25.
    let mut s = book_session("tVETBTC");
    let snapshot = "[123, [[0.00000121,5,249013.0209708],[0.0000012,6,518315.33310128],[0.00000119,4,566200.89],[0.00000118,2,260000],[0.00000117,1,100000],\
        [0.00000116,2,160000],[0.00000114,1,60000],[0.00000113,2,198500],[0.00000112,1,60000],[0.0000011,1,60000],[0.00000106,2,113868.87735849],[0.00000105,2,105000],\
        [0.00000103,1,3000],[0.00000102,2,105000],[0.00000101,2,202970],[0.000001,2,21000],[7e-7,1,10000],[6.6e-7,1,10000],[6e-7,1,100000],[4.9e-7,1,10000],[2.5e-7,1,2000],\
        [6e-8,1,100000],[5e-8,1,200000],[1e-8,4,640000],[0.00000122,7,-312043.19],[0.00000123,6,-415094.8939744],[0.00000124,5,-348181.23],[0.00000125,1,-12000],\
        [0.00000126,2,-143872.31],[0.00000127,1,-5000],[0.0000013,1,-5000],[0.00000134,1,-8249.18938656],[0.00000135,2,-230043.1337899],[0.00000136,1,-13161.25184766],\
        [0.00000145,1,-2914],[0.0000015,3,-54448.5],[0.00000152,2,-5538.54849594],[0.00000153,1,-62691.75475079],[0.00000159,1,-2914],[0.0000016,1,-52631.10296831],\
        [0.00000164,1,-4000],[0.00000166,1,-3831.46784605],[0.00000171,1,-14575.17730379],[0.00000174,1,-3124.81815395],[0.0000018,1,-18000],[0.00000182,1,-16000],\
        [0.00000186,1,-4000],[0.00000189,1,-10000.686624],[0.00000191,1,-14500]]]";
    let updates = [
        "[123,[0.00000121,4,228442.6609708]]",
        "[123,[0.00000121,6,304023.8109708]]",
    ];
    feed(&mut s, snapshot);
    assert_eq!(verify(&mut s, &updates, 1770440002), vec![]);
    let book = s.book("VET/BTC").unwrap();
    // The value-formatted checksum (`0.0000007`, not `7e-7`) would have failed this book.
    assert_ne!(bitfinex_checksum(book) as i32, 1770440002);
    // A wrong checksum is an integrity failure.
    assert_eq!(verify(&mut s, &[], 1770440003).len(), 1);
}

#[test]
fn exponent_amounts_verify_against_the_raw_text() {
    let mut s = book_session("tBTCUSD");
    let snapshot = "[123,[[0.5,1,1e-7],[0.4,2,2.5E-7],[0.6,1,-3e-7],[0.7,1,-1.10]]]";
    let update = "[123,[0.4,1,4e-7]]";
    // Built from Bitfinex's documented algorithm over the text as sent (derived, not published).
    let text = "0.5:1e-7:0.6:-3e-7:0.4:4e-7:0.7:-1.10";
    let cs = crc32fast::hash(text.as_bytes()) as i32;
    assert_eq!(verify(&mut s, &[snapshot, update], cs), vec![]);
    let book = s.book("BTC/USD").unwrap();
    assert_eq!(book.best_bid().unwrap().qty, Qty(10));
    assert_ne!(bitfinex_checksum(book) as i32, cs);
    assert_eq!(
        s.venue_book("BTC/USD").unwrap().stats().checksums_ok,
        1,
        "verified once"
    );
}
