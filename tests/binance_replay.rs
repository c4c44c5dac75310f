//! Whole-capability tests: recorded Binance sessions (shared/testdata) replayed through the live
//! parser and `BookSync`, including gaps made by deleting single diff lines.

use std::collections::BTreeMap;
use std::io::{BufRead, Cursor};

use mmtrader::feeds::binance::sync::{ResyncReason, Rules, SyncConfig};
use mmtrader::feeds::binance::wire::{BinanceEvent, parse_depth_snapshot, parse_frame};
use mmtrader::feeds::replay::{
    LineRecord, ReplayInput, ReplayReport, open_recording, parse_line, replay_file, replay_readers,
};
use mmtrader::testdata::require;

const SPOT_0808: &str = "exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz";
const SPOT_0809: &str = "exchange_raw/hftbacktest_binance/spot_btcusdt_20240809.gz";
const USDM: &str = "exchange_raw/hftbacktest_binance/usdm_btcusdt_20240808.gz";
const CF_SPOT_WS: &str = "exchange_raw/cryptofeed_sample_data/BINANCE.ws.1.0";
const CF_SPOT_HTTP: &str = "exchange_raw/cryptofeed_sample_data/BINANCE.http.0.0";
const CF_FUT_WS: &str = "exchange_raw/cryptofeed_sample_data/BINANCE_FUTURES.ws.1.0";
const CF_FUT_HTTP: &str = "exchange_raw/cryptofeed_sample_data/BINANCE_FUTURES.http.0.0";

/// A recording as decompressed lines.
fn lines_of(rel: &str) -> Vec<String> {
    let input = open_recording(&require(rel)).expect("recording opens");
    input
        .reader
        .lines()
        .collect::<Result<_, _>>()
        .expect("recording reads")
}

fn mem_input(name: &str, lines: &[String]) -> ReplayInput {
    let mut text = lines.join("\n");
    text.push('\n');
    ReplayInput {
        name: name.to_owned(),
        reader: Box::new(Cursor::new(text.into_bytes())),
    }
}

fn replay_mem(inputs: Vec<(&str, &[String])>) -> ReplayReport {
    let inputs = inputs
        .into_iter()
        .map(|(name, lines)| mem_input(name, lines))
        .collect();
    replay_readers(inputs, None, SyncConfig::default()).expect("replay runs")
}

/// Every checkpoint of every symbol matched, and no malformed line.
fn assert_clean(rep: &ReplayReport) {
    assert!(rep.malformed.is_empty(), "malformed lines: {rep}");
    for s in rep.symbols.values() {
        assert_eq!(
            s.checkpoints_matched, s.checkpoints_checked,
            "checkpoint mismatch for {}: {rep}",
            s.symbol
        );
    }
}

/// One depth diff as seen in a recording.
#[derive(Debug, Clone)]
struct DiffLine {
    index: usize,
    symbol: String,
    last: u64,
}

fn diff_lines(lines: &[String]) -> Vec<DiffLine> {
    lines
        .iter()
        .enumerate()
        .filter_map(|(index, l)| match parse_line(l) {
            Ok((_, LineRecord::Received(p))) => match parse_frame(p) {
                Ok(BinanceEvent::Depth(d)) => Some(DiffLine {
                    index,
                    symbol: d.symbol,
                    last: d.final_update_id,
                }),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Snapshot `lastUpdateId` per symbol from a cryptofeed http log.
fn cryptofeed_snapshot_ids(lines: &[String]) -> BTreeMap<String, u64> {
    lines
        .iter()
        .filter_map(|l| match parse_line(l) {
            Ok((_, LineRecord::Rest { url, body })) => {
                let sym = url.split("symbol=").nth(1)?.split('&').next()?.to_owned();
                Some((sym, parse_depth_snapshot(body).ok()?.last_update_id))
            }
            _ => None,
        })
        .collect()
}

/// Diffs of one symbol that the sync applies after the first applied one, except the last
/// (deleting the very last diff leaves nothing that could reveal the gap).
fn deletable(diffs: &[DiffLine], symbol: &str, snapshot_id: u64, rules: Rules) -> Vec<DiffLine> {
    let applied: Vec<DiffLine> = diffs
        .iter()
        .filter(|d| d.symbol == symbol)
        .filter(|d| match rules {
            Rules::Spot => d.last > snapshot_id,
            Rules::Futures => d.last >= snapshot_id,
        })
        .cloned()
        .collect();
    if applied.len() < 3 {
        return Vec::new();
    }
    applied[1..applied.len() - 1].to_vec()
}

fn without(lines: &[String], index: usize) -> Vec<String> {
    let mut v = lines.to_vec();
    v.remove(index);
    v
}

#[test]
fn hftbacktest_spot_rebuilds_book_matching_every_book_ticker() {
    let rep = replay_file(&[require(SPOT_0808), require(SPOT_0809)], None).unwrap();
    assert_clean(&rep);
    assert_eq!(rep.symbols.len(), 1);
    let s = &rep.symbols["BTCUSDT"];
    assert_eq!(s.rules, Some(Rules::Spot));
    assert!(s.synced);
    // SOURCES.md oracle: snapshot after the first diffs, 2 stale drops, 6,495 diffs in all,
    // 1,072 of 1,072 bookTicker checkpoints, 19,904 contiguous trades.
    assert_eq!(s.sync.snapshots, 1);
    assert_eq!(s.sync.dropped, 2);
    assert_eq!(s.sync.applied + s.sync.dropped, 6_495);
    assert!(s.sync.buffered >= 3, "the snapshot arrives after diffs");
    assert_eq!((s.sync.gaps, s.sync.resyncs, s.sync.crossed), (0, 0, 0));
    assert_eq!(s.checkpoints_checked, 1_072);
    assert_eq!(s.checkpoints_matched, 1_072);
    assert_eq!((s.trades, s.trade_id_gaps), (19_904, 0));
    assert!(s.bid_levels > 100 && s.ask_levels > 100);
    assert!(s.best_bid.unwrap().price < s.best_ask.unwrap().price);
    let text = rep.to_string();
    assert!(
        text.contains("bookTicker checkpoints matched 1072 of 1072"),
        "{text}"
    );
}

#[test]
fn hftbacktest_spot_deleted_diff_is_a_gap_and_resync() {
    let day1 = lines_of(SPOT_0808);
    let day2 = lines_of(SPOT_0809);
    let snap_index = day1
        .iter()
        .position(|l| l.contains(" {\"lastUpdateId\":"))
        .expect("snapshot line");
    let snap_id = parse_depth_snapshot(day1[snap_index].split_once(' ').unwrap().1)
        .unwrap()
        .last_update_id;
    let d1 = deletable(&diff_lines(&day1), "BTCUSDT", snap_id, Rules::Spot);
    let d2 = diff_lines(&day2);
    // Early, middle and late in the first file, and inside the second file.
    let cases: Vec<(usize, usize)> = vec![
        (0, d1[0].index),
        (0, d1[d1.len() / 2].index),
        (0, d1[d1.len() - 1].index),
        (1, d2[d2.len() / 3].index),
    ];
    for (file, index) in cases {
        let (a, b) = if file == 0 {
            (without(&day1, index), day2.clone())
        } else {
            (day1.clone(), without(&day2, index))
        };
        let rep = replay_mem(vec![(SPOT_0808, &a), (SPOT_0809, &b)]);
        assert_clean(&rep);
        let s = &rep.symbols["BTCUSDT"];
        assert_eq!(
            (s.sync.gaps, s.sync.resyncs),
            (1, 1),
            "deleting line {index} of file {file}: {rep}"
        );
        assert!(
            matches!(s.resync_reasons[0], ResyncReason::Gap { .. }),
            "{:?}",
            s.resync_reasons
        );
        // No second snapshot in the recording, so the book stays discarded.
        assert!(!s.synced);
        assert!(s.checkpoints_checked < 1_072);
    }
}

#[test]
fn hftbacktest_usdm_follows_pu_chain_and_matches_book_tickers() {
    let rep = replay_file(&[require(USDM)], None).unwrap();
    assert_clean(&rep);
    let s = &rep.symbols["BTCUSDT"];
    assert_eq!(s.rules, Some(Rules::Futures));
    assert!(s.synced);
    assert_eq!(s.sync.dropped, 4);
    assert_eq!((s.sync.gaps, s.sync.resyncs), (0, 0));
    assert!(s.sync.applied > 6_000);
    // SOURCES.md counts 503 checkpoints; bookTickers that arrive after their diff are checked
    // here as well, so at least as many, all matching.
    assert!(s.checkpoints_checked >= 503, "{rep}");
    assert_eq!(s.trade_id_gaps, 0);

    // The same stream under spot rules breaks at once: futures ids are not contiguous.
    let forced = replay_file(&[require(USDM)], Some(Rules::Spot)).unwrap();
    assert!(forced.symbols["BTCUSDT"].sync.gaps >= 1);
}

#[test]
fn hftbacktest_usdm_deleted_diff_breaks_the_pu_chain() {
    let lines = lines_of(USDM);
    let snap_line = lines
        .iter()
        .find(|l| l.contains(" {\"lastUpdateId\":"))
        .expect("snapshot line");
    let snap_id = parse_depth_snapshot(snap_line.split_once(' ').unwrap().1)
        .unwrap()
        .last_update_id;
    let d = deletable(&diff_lines(&lines), "BTCUSDT", snap_id, Rules::Futures);
    for pick in [0, d.len() / 2, d.len() - 1] {
        let rep = replay_mem(vec![(USDM, &without(&lines, d[pick].index))]);
        let s = &rep.symbols["BTCUSDT"];
        assert_eq!((s.sync.gaps, s.sync.resyncs), (1, 1), "{rep}");
        assert!(matches!(
            s.resync_reasons[0],
            ResyncReason::BrokenChain { .. }
        ));
        assert!(!s.synced);
        assert_eq!(s.checkpoints_matched, s.checkpoints_checked);
    }
}

#[test]
fn cryptofeed_spot_syncs_all_four_symbols_dropping_stale_diffs() {
    let rep = replay_file(&[require(CF_SPOT_WS), require(CF_SPOT_HTTP)], None).unwrap();
    assert_clean(&rep);
    assert_eq!(rep.rest_responses, 4);
    let names: Vec<&str> = rep.symbols.keys().map(String::as_str).collect();
    assert_eq!(names, ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]);
    for s in rep.symbols.values() {
        assert_eq!(s.rules, Some(Rules::Spot));
        assert!(s.synced, "{rep}");
        assert_eq!(s.sync.snapshots, 1);
        // SOURCES.md: 1-2 buffered diffs per symbol have u <= lastUpdateId.
        assert!((1..=2).contains(&s.sync.dropped), "{rep}");
        assert!(s.sync.buffered >= 1);
        assert_eq!((s.sync.gaps, s.sync.resyncs), (0, 0));
        assert!(s.sync.applied >= 1);
    }
    let checked: u64 = rep.symbols.values().map(|s| s.checkpoints_checked).sum();
    assert!(checked >= 10, "{rep}");
}

/// Deletes one applied diff of each symbol in turn: only that symbol resyncs.
fn only_affected_symbol_resyncs(ws: &str, http: &str, rules: Rules) {
    let ws_lines = lines_of(ws);
    let http_lines = lines_of(http);
    let snaps = cryptofeed_snapshot_ids(&http_lines);
    let diffs = diff_lines(&ws_lines);
    let mut tested = 0;
    for (symbol, &snap_id) in &snaps {
        let candidates = deletable(&diffs, symbol, snap_id, rules);
        let Some(victim) = candidates.get(candidates.len() / 2) else {
            continue;
        };
        let rep = replay_mem(vec![
            (ws, &without(&ws_lines, victim.index)),
            (http, &http_lines),
        ]);
        assert_clean(&rep);
        for s in rep.symbols.values() {
            if &s.symbol == symbol {
                assert_eq!((s.sync.gaps, s.sync.resyncs), (1, 1), "{symbol}: {rep}");
                assert!(!s.synced);
            } else {
                assert_eq!((s.sync.gaps, s.sync.resyncs), (0, 0), "{symbol}: {rep}");
                assert!(s.synced);
            }
        }
        tested += 1;
    }
    assert!(
        tested >= 3,
        "too few symbols with deletable diffs ({tested})"
    );
}

#[test]
fn cryptofeed_spot_deleted_diff_resyncs_only_that_symbol() {
    only_affected_symbol_resyncs(CF_SPOT_WS, CF_SPOT_HTTP, Rules::Spot);
}

#[test]
fn cryptofeed_futures_sync_on_pu_chain_and_match_book_tickers() {
    let rep = replay_file(&[require(CF_FUT_WS), require(CF_FUT_HTTP)], None).unwrap();
    assert_clean(&rep);
    assert_eq!(rep.symbols.len(), 4);
    for s in rep.symbols.values() {
        assert_eq!(s.rules, Some(Rules::Futures));
        assert!(s.synced, "{rep}");
        assert_eq!((s.sync.gaps, s.sync.resyncs), (0, 0));
        assert!(s.sync.applied > 50);
        assert!(s.checkpoints_checked > 0, "{rep}");
    }
}

#[test]
fn cryptofeed_futures_deleted_diff_resyncs_only_that_symbol() {
    only_affected_symbol_resyncs(CF_FUT_WS, CF_FUT_HTTP, Rules::Futures);
}

/// Real captured messages of every Binance market (spot, USD-M, COIN-M, options) from
/// crypto-msg-parser: every shape this parser supports comes out exact, the rest gives a typed
/// error, none panics.
#[test]
fn captured_binance_messages_parse_or_give_typed_errors() {
    let text =
        std::fs::read_to_string(require("exchange_raw/crypto_msg_parser/raw_messages.jsonl"))
            .unwrap();
    let mut parsed = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["exchange"] != "binance" {
            continue;
        }
        let raw = v["raw_msg"].as_str().unwrap();
        let module = v["test_module"].as_str().unwrap();
        let result = if module == "l2_snapshot" {
            parse_depth_snapshot(raw).map(|s| {
                assert!(!s.bids.is_empty() && !s.asks.is_empty());
            })
        } else {
            parse_frame(raw).map(|ev| {
                let ok = match (module, &ev) {
                    ("trade", BinanceEvent::AggTrade(t)) => t.qty.raw() > 0,
                    ("l2_event" | "l2_topk", BinanceEvent::Depth(d)) => {
                        d.first_update_id <= d.final_update_id
                    }
                    ("l2_topk", BinanceEvent::PartialDepth { symbol, .. }) => symbol.is_some(),
                    ("bbo", BinanceEvent::BookTicker(b)) => b.bid.price < b.ask.price,
                    ("ticker", BinanceEvent::Ticker(t)) => t.low <= t.high,
                    ("candlestick", BinanceEvent::Kline(k)) => k.candle.low <= k.candle.high,
                    _ => false,
                };
                assert!(ok, "{module}: unexpected {ev:?}");
            })
        };
        match result {
            Ok(()) => parsed += 1,
            Err(e) => {
                // Mark price, option and all-market array streams are not handled: typed errors.
                assert!(
                    matches!(
                        e.kind(),
                        "unknown_event" | "unknown_shape" | "missing_field"
                    ),
                    "{module}: {e} for {raw}"
                );
                assert!(
                    matches!(
                        module,
                        "funding_rate" | "open_interest" | "ticker" | "trade"
                    ),
                    "{module} should parse: {e}"
                );
            }
        }
    }
    assert!(parsed >= 35, "only {parsed} parsed");
}

#[test]
fn recorded_rest_bodies_parse_exactly() {
    use mmtrader::feeds::binance::wire::{parse_exchange_info, parse_klines};
    use mmtrader::market::types::{Price, Qty};
    let read = |rel: &str| std::fs::read_to_string(require(rel)).unwrap();

    let depth = parse_depth_snapshot(&read(
        "exchange_raw/nautilus_rest/binance/http_spot_market_depth.json",
    ))
    .unwrap();
    assert_eq!(depth.last_update_id, 14_527_958_487);
    assert_eq!(depth.bids[0].price, Price::parse("60650").unwrap());
    assert_eq!(depth.bids[0].qty, Qty::parse("0.00213").unwrap());

    let klines = parse_klines(
        &read("exchange_raw/nautilus_rest/binance/http_spot_market_klines.json"),
        "1m",
    )
    .unwrap();
    assert_eq!(klines.len(), 10);
    assert_eq!(klines[0].candle.open_time_ms, 1_634_943_780_000);
    assert_eq!(klines[0].candle.open, Price::parse("60685.22").unwrap());
    assert_eq!(klines[0].candle.trades, 617);
    for w in klines.windows(2) {
        assert_eq!(w[1].candle.open_time_ms, w[0].close_time_ms + 1);
    }

    let info = parse_exchange_info(&read(
        "exchange_raw/nautilus_rest/binance/http_spot_market_exchange_info.json",
    ))
    .unwrap();
    assert!(info.rejected.is_empty(), "{:?}", info.rejected);
    let btc = info
        .instruments
        .iter()
        .find(|i| i.symbol == "BTCUSDT")
        .unwrap();
    assert_eq!(
        (btc.base_asset.as_str(), btc.quote_asset.as_str()),
        ("BTC", "USDT")
    );
    assert_eq!(btc.tick_size, Price::parse("0.01").unwrap());
    assert_eq!(btc.step_size, Qty::parse("0.00001").unwrap());
    assert_eq!(btc.min_qty, Qty::parse("0.00001").unwrap());
    assert_eq!(btc.max_qty, Qty::parse("9000").unwrap());
    assert_eq!(btc.min_notional, Price::parse("10").unwrap());
    assert_eq!(
        btc.status,
        mmtrader::market::instrument::InstrumentStatus::Trading
    );

    // Full spot and USD-M exchangeInfo bodies recorded by cryptofeed (REST lines).
    for rel in [
        "exchange_raw/cryptofeed_sample_data/BINANCE.0.gz",
        "exchange_raw/cryptofeed_sample_data/BINANCE_FUTURES.0.gz",
    ] {
        let lines = lines_of(rel);
        let body = lines
            .iter()
            .find_map(|l| match parse_line(l) {
                Ok((_, LineRecord::Rest { url, body })) if url.contains("exchangeInfo") => {
                    Some(body.to_owned())
                }
                _ => None,
            })
            .expect("exchangeInfo line");
        let info = parse_exchange_info(&body).unwrap();
        assert!(info.rejected.is_empty(), "{rel}: {:?}", info.rejected);
        assert!(info.instruments.len() > 10, "{rel}");
        assert!(
            info.instruments
                .iter()
                .all(|i| i.tick_size.raw() > 0 && i.step_size.raw() > 0),
            "{rel}"
        );
    }
}
