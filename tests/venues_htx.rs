//! HTX (Huobi) against the recorded capture of gzip frames (stored as Python bytes literals)
//! and its decoded companion: identical events from both, every ping answered with the same
//! number, `tradeId` used (the legacy `id` exceeds 64 bits), full depth images applied.
//!
//! trioeth quotes prices like 9.121E-7 (more than 8 decimals): its messages are typed number
//! errors and are the only errors. The recording has no incremental (mbp) channel, so
//! `prevSeqNum` chaining is covered by unit tests of the book state machine only.

mod venues_common;

use mmtrader::feeds::normalized::NormEvent;
use mmtrader::feeds::raw_replay::{ReplayItem, replay_files, session_for};
use mmtrader::feeds::venue::{Frame, VenueProtocol};
use venues_common::{capture, replay};

#[test]
fn gzip_frames_and_decoded_text_give_the_same_events() {
    let (gz, session, gz_events) = replay("htx", &[capture("HUOBI.ws.44.0")]);
    let (text, _, text_events) = replay("htx", &[capture("HUOBI.ws.44.0.decoded")]);
    assert_eq!(gz_events, text_events);
    assert_eq!(gz, text);
    assert_eq!(gz.errors.keys().collect::<Vec<_>>(), ["number"]);
    assert!(gz.integrity.is_empty());
    assert_eq!(gz.replies, 6, "six pings answered");
    assert!(gz.trades > 0 && gz.snapshots > 0);
    for e in &gz_events {
        if let NormEvent::Trade(t) = e {
            assert!(t.id < 1u64 << 53, "tradeId, not the legacy id: {}", t.id);
        }
    }
    for inst in session.book_instruments() {
        if let Some(b) = session.book(inst) {
            assert!(!b.is_crossed(), "{inst}");
        }
    }
    let mut errors = Vec::new();
    let mut s = session_for("htx").unwrap();
    replay_files(&mut s, &[capture("HUOBI.ws.44.0")], |i| {
        if let ReplayItem::Error { error, .. } = i {
            errors.push(error);
        }
    })
    .unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e.contains("needs more than 8 decimals")),
        "{errors:?}"
    );
}

#[test]
fn ping_gets_the_same_number_back_and_bad_gzip_is_typed() {
    let mut p = mmtrader::feeds::htx::HtxProtocol::default();
    let mut out = Vec::new();
    p.parse(Frame::Text(r#"{"ping":1618678075000}"#), &mut out)
        .unwrap();
    assert_eq!(out, [NormEvent::Reply(r#"{"pong":1618678075000}"#.into())]);
    let err = p
        .parse(Frame::Binary(b"\x1f\x8bnot gzip"), &mut out)
        .unwrap_err();
    assert_eq!(err.kind(), "gzip");
}
