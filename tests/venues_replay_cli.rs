//! `mmtrader replay --exchange NAME --raw FILE`: events, top of book and integrity failures
//! printed for a recorded capture.

mod venues_common;

use std::collections::BTreeMap;
use std::process::Command;

use mmtrader::feeds::binance::sync::{BookSync, Rules, SyncConfig};
use mmtrader::feeds::binance::wire::{self, BinanceEvent};
use mmtrader::feeds::normalized::canonical_from_exchange;
use mmtrader::feeds::raw_replay::{
    CaptureLine, Payload, ReplayStats, feed_line, parse_capture_line, session_for,
};
use venues_common::{capture, lines, temp_capture};

fn replay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
        .arg("replay")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_events_tops_and_integrity_failures() {
    let trades = capture("KRAKEN.ws.48.0");
    let (code, out, err) = replay(&["--exchange", "kraken", "--raw", trades.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TRADE ") && l.contains('@')),
        "{out}"
    );

    let book = capture("KRAKEN.ws.50.0");
    let mut all = lines(&book);
    let i = all.iter().position(|l| l.contains(",\"c\":\"")).unwrap();
    all.remove(i);
    let dir = tempfile::tempdir().unwrap();
    let altered = temp_capture(&dir, "kraken.txt", &all);
    let (code, out, err) = replay(&["--exchange", "kraken", "--raw", altered.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TOP ") && l.contains(" | ask "))
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("INTEGRITY ") && l.contains("checksum")),
        "{err}"
    );
    assert!(err.contains("1 integrity failures"), "{err}");

    let (code, _, err) = replay(&["--exchange", "nope", "--raw", altered.to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
}

#[test]
fn binance_capture_prints_events_tops_and_one_gap_for_a_deleted_diff() {
    let ws = capture("BINANCE.ws.1.0");
    let http = capture("BINANCE.http.0.0");
    let (ws_s, http_s) = (ws.to_str().unwrap(), http.to_str().unwrap());
    let (code, out, err) = replay(&["--exchange", "binance", "--raw", ws_s, "--raw", http_s]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TRADE ") && l.contains('@')),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("DELTA ") && l.contains("Range")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("TOP NKN/USDT bid ")),
        "{out}"
    );
    assert!(!out.contains("INTEGRITY"), "{out}");
    assert!(
        err.contains("(4 REST)") && err.contains(" 0 integrity failures"),
        "{err}"
    );

    // One diff of a synced book removed: exactly one gap, then the book resyncs.
    let mut all = lines(&ws);
    let diffs: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].contains("nknusdt@depth"))
        .collect();
    all.remove(diffs[diffs.len() / 2]);
    let dir = tempfile::tempdir().unwrap();
    let altered = temp_capture(&dir, "binance.txt", &all);
    let (code, out, err) = replay(&[
        "--exchange",
        "binance",
        "--raw",
        altered.to_str().unwrap(),
        "--raw",
        http_s,
    ]);
    assert_eq!(code, 0, "{err}");
    let failures: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("INTEGRITY "))
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("INTEGRITY NKN/USDT sequence gap")
            && failures[0].ends_with("(resync)"),
        "{failures:?}"
    );
    assert!(err.contains(" 1 integrity failures"), "{err}");
}

#[test]
fn kraken_checksum_without_precision_is_reported() {
    // A v2 book with a checksum but no `instrument` message first: the precision is unknown.
    let dir = tempfile::tempdir().unwrap();
    let file = temp_capture(
        &dir,
        "kraken_v2.txt",
        &[r#"{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,"qty":0.1}],"asks":[{"price":45285.2,"qty":0.001}],"checksum":12345}]}"#.to_string()],
    );
    let (code, _, err) = replay(&["--exchange", "kraken", "--raw", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("WARNING 1 checksums could not be verified"),
        "{err}"
    );
}

/// Top 20 levels of each side of a book, for comparisons.
fn depth(b: &mmtrader::market::book::OrderBook) -> [Vec<mmtrader::market::types::Level>; 2] {
    use mmtrader::market::types::Side;
    [b.top(Side::Buy, 20), b.top(Side::Sell, 20)]
}

/// Replays a capture and its REST log through both the normalized Binance connector and the
/// desk's `BookSync`, comparing every symbol's book after each line; returns the number of
/// comparisons where both books were synced.
fn compare_with_book_sync(ws: &str, http: &str, rules: Rules) -> usize {
    let mut merged: Vec<(f64, CaptureLine)> = Vec::new();
    for f in [ws, http] {
        for l in lines(&capture(f)) {
            let line = parse_capture_line(&l).unwrap();
            let t = match &line {
                CaptureLine::Received { time, .. } => time.unwrap_or(f64::MIN),
                CaptureLine::Rest { time, .. } => *time,
                _ => continue,
            };
            merged.push((t, line));
        }
    }
    // Stable: each file keeps its own order among equal times.
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut session = session_for("binance").unwrap();
    let mut stats = ReplayStats::default();
    let mut syncs: BTreeMap<String, BookSync> = BTreeMap::new();
    let mut both_synced = 0;
    for (n, (_, line)) in merged.into_iter().enumerate() {
        match &line {
            CaptureLine::Received {
                payload: Payload::Text(t),
                ..
            } => {
                if let Ok(BinanceEvent::Depth(d)) = wire::parse_frame(t) {
                    syncs
                        .entry(d.symbol.clone())
                        .or_insert_with(|| BookSync::new(&d.symbol, rules, SyncConfig::default()))
                        .on_diff(&d);
                }
            }
            CaptureLine::Rest { url, body, .. } => {
                let symbol = url
                    .split("symbol=")
                    .nth(1)
                    .unwrap()
                    .split('&')
                    .next()
                    .unwrap();
                let snap = wire::parse_depth_snapshot(body).unwrap();
                syncs
                    .entry(symbol.to_string())
                    .or_insert_with(|| BookSync::new(symbol, rules, SyncConfig::default()))
                    .on_snapshot(snap);
            }
            _ => {}
        }
        feed_line(
            &mut session,
            line,
            &format!("line {n}"),
            &mut stats,
            &mut |_| {},
        );
        for (symbol, sync) in &syncs {
            let inst = canonical_from_exchange(symbol).unwrap();
            let ours = session.book(&inst).map(depth);
            let theirs = sync.synced_book().map(depth);
            assert_eq!(ours, theirs, "{inst} after line {n}");
            both_synced += usize::from(ours.is_some());
        }
    }
    assert!(stats.integrity.is_empty(), "{:?}", stats.integrity);
    assert_eq!(stats.rest_snapshots, 4);
    both_synced
}

#[test]
fn binance_books_match_book_sync_after_every_update() {
    let spot = compare_with_book_sync("BINANCE.ws.1.0", "BINANCE.http.0.0", Rules::Spot);
    assert!(spot > 100, "{spot} synced comparisons");
    let futures = compare_with_book_sync(
        "BINANCE_FUTURES.ws.1.0",
        "BINANCE_FUTURES.http.0.0",
        Rules::Futures,
    );
    assert!(futures > 100, "{futures} synced comparisons");
}
