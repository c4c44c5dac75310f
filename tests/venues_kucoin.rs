//! KuCoin against the recorded websocket capture and its concurrent REST snapshots: level-2
//! diffs buffered until the snapshot, those it contains dropped, the rest applied by
//! `sequenceStart == previous sequenceEnd + 1`; a deleted diff is a gap that refetches.
//!
//! Several recorded pairs quote prices with more than 8 decimals (e.g. 0.0000001117 BTC);
//! those messages are typed number errors (the fixed-point scale cannot hold them) and their
//! books stay unsynced: the test checks that this is the only error.

mod venues_common;

use mmtrader::feeds::normalized::IntegrityError;
use mmtrader::feeds::raw_replay::{ReplayItem, replay_files, session_for};
use venues_common::{capture, lines, temp_capture};

#[test]
fn diffs_align_with_rest_snapshots() {
    let files = [capture("KUCOIN.ws.1.0"), capture("KUCOIN.http.0.0")];
    let mut session = session_for("kucoin").unwrap();
    let mut errors = Vec::new();
    let stats = replay_files(&mut session, &files, |i| {
        if let ReplayItem::Error { error, .. } = i {
            errors.push(error);
        }
    })
    .unwrap();
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(e.contains("needs more than 8 decimals"), "{e}");
    }
    assert!(stats.integrity.is_empty(), "{:?}", stats.integrity);
    assert!(stats.trades > 0 && stats.deltas > 0, "{stats:?}");
    assert!(stats.rest_snapshots >= 6, "{stats:?}");
    let mut synced = 0;
    for inst in session.book_instruments() {
        let vb = session.venue_book(inst).unwrap();
        if let Some(book) = vb.synced_book() {
            synced += 1;
            assert!(!book.is_crossed(), "{inst}");
            let st = vb.stats();
            // 1-19 buffered diffs per symbol predate the snapshot.
            assert!((1..=19).contains(&st.stale), "{inst}: {st:?}");
            assert!(st.applied > 0, "{inst}: {st:?}");
        }
    }
    assert_eq!(synced as u64, stats.rest_snapshots);
}

#[test]
fn a_deleted_diff_is_a_gap() {
    let ws = capture("KUCOIN.ws.1.0");
    let mut all = lines(&ws);
    // The last l2update of BCHSV-USDT but one (well after its snapshot).
    venues_common::remove_second_last(&mut all, |l| {
        l.contains("trade.l2update") && l.contains("BCHSV-USDT")
    });
    let dir = tempfile::tempdir().unwrap();
    let files = [
        temp_capture(&dir, "KUCOIN.ws.1.0", &all),
        capture("KUCOIN.http.0.0"),
    ];
    let (stats, session, _) = venues_common::replay("kucoin", &files);
    assert!(session.venue_book("BCHSV/USDT").unwrap().stats().applied > 1000);
    let gaps: Vec<_> = stats
        .integrity
        .iter()
        .filter(|(i, e)| i == "BCHSV/USDT" && matches!(e, IntegrityError::Gap { .. }))
        .collect();
    assert_eq!(gaps.len(), 1, "{:?}", stats.integrity);
}
