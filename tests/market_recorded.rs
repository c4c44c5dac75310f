//! The market-data core on real recordings from shared/testdata: a Binance spot depth replay
//! checked against the exchange's own bookTicker, COB invariants on that live book, and
//! candles from real trades checked against an independently built 1m OHLCV file.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use flate2::read::GzDecoder;
use mmtrader::market::book::OrderBook;
use mmtrader::market::candles::{CandleSeries, CandleSource};
use mmtrader::market::cob::{CobConfig, CobEngine};
use mmtrader::market::types::{Level, Price, Qty, Side, Timeframe, Trade};
use mmtrader::testdata::require;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn gz_lines(rel: &str) -> Vec<String> {
    let f = std::fs::File::open(require(rel)).unwrap();
    BufReader::new(GzDecoder::new(f))
        .lines()
        .map(|l| l.unwrap())
        .collect()
}

fn levels(v: &Value) -> Vec<Level> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|pq| Level {
            price: Price::parse(pq[0].as_str().unwrap()).unwrap(),
            qty: Qty::parse(pq[1].as_str().unwrap()).unwrap(),
        })
        .collect()
}

/// Exact fixed-point value of a JSON/CSV float that was written from an 8-decimal quantity.
fn fixed_from_f64(x: f64) -> i64 {
    Price::parse(&format!("{x:.8}")).unwrap().raw()
}

#[test]
fn binance_spot_replay_matches_book_ticker_and_cob_invariants() {
    let mut lines = gz_lines("exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz");
    lines.extend(gz_lines(
        "exchange_raw/hftbacktest_binance/spot_btcusdt_20240809.gz",
    ));
    let mut book = OrderBook::new();
    let mut synced = false;
    let mut buffered: Vec<Value> = vec![];
    let mut tickers: HashMap<u64, Value> = HashMap::new();
    let mut diffs: Vec<Value> = vec![];
    for line in &lines {
        let (_, json) = line.split_once(' ').unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        if let Some(lid) = v.get("lastUpdateId").and_then(Value::as_u64) {
            book.apply_snapshot(&levels(&v["bids"]), &levels(&v["asks"]), lid);
            synced = true;
            diffs.append(&mut buffered);
            continue;
        }
        let data = &v["data"];
        match data.get("e").and_then(Value::as_str) {
            Some("depthUpdate") if synced => diffs.push(data.clone()),
            Some("depthUpdate") => buffered.push(data.clone()),
            Some(_) => {}
            None if v["stream"].as_str().unwrap().ends_with("@bookTicker") => {
                tickers.insert(data["u"].as_u64().unwrap(), data.clone());
            }
            None => {}
        }
    }
    assert!(synced, "recording has a REST snapshot");

    let mut cob = CobEngine::new(Price::from_units(10), CobConfig::default()).unwrap();
    let mut prev_u: Option<u64> = None;
    let (mut checked, mut dropped) = (0usize, 0usize);
    for d in &diffs {
        let (first, last) = (d["U"].as_u64().unwrap(), d["u"].as_u64().unwrap());
        if last <= book.last_update_id && prev_u.is_none() {
            dropped += 1;
            continue;
        }
        match prev_u {
            None => assert!(first <= book.last_update_id + 1 && book.last_update_id < last),
            Some(p) => assert_eq!(first, p + 1, "gap in the diff chain"),
        }
        book.apply_diff(&levels(&d["b"]), &levels(&d["a"]), last);
        prev_u = Some(last);
        assert!(!book.is_crossed());
        if let Some(t) = tickers.get(&last) {
            let bid = book.best_bid().unwrap();
            let ask = book.best_ask().unwrap();
            assert_eq!(bid.price, Price::parse(t["b"].as_str().unwrap()).unwrap());
            assert_eq!(bid.qty, Qty::parse(t["B"].as_str().unwrap()).unwrap());
            assert_eq!(ask.price, Price::parse(t["a"].as_str().unwrap()).unwrap());
            assert_eq!(ask.qty, Qty::parse(t["A"].as_str().unwrap()).unwrap());
            checked += 1;

            let snap = cob.compute(&book, &[], d["E"].as_i64().unwrap()).unwrap();
            let (lo, hi) = cob.covered_range(snap.mid).unwrap();
            let bids = snap.buckets.iter().fold(Qty::ZERO, |a, b| a + b.bid_qty);
            let asks = snap.buckets.iter().fold(Qty::ZERO, |a, b| a + b.ask_qty);
            assert_eq!(bids, book.volume_in_range(Side::Buy, lo, hi));
            assert_eq!(asks, book.volume_in_range(Side::Sell, lo, hi));
            // Walking the asks for the best ask's own size fills at exactly that price.
            let fill = book.walk(Side::Buy, ask.qty).unwrap();
            assert_eq!((fill.filled, fill.avg_price()), (ask.qty, ask.price));
        }
    }
    assert!(dropped >= 1, "stale buffered diffs are dropped");
    assert!(
        checked >= 1_000,
        "only {checked} bookTicker checkpoints matched a diff"
    );
    assert_eq!(cob.heatmap().len(), checked.min(1_800));
}

fn xrp_eth_trades() -> Vec<Trade> {
    let mut raw = String::new();
    GzDecoder::new(
        std::fs::File::open(require("candles/freqtrade_xrp_eth/XRP_ETH-trades.json.gz")).unwrap(),
    )
    .read_to_string(&mut raw)
    .unwrap();
    let rows: Vec<Value> = serde_json::from_str(&raw).unwrap();
    rows.iter()
        .map(|r| Trade {
            symbol: "XRPETH".into(),
            id: r[1].as_str().unwrap().parse().unwrap(),
            time_ms: r[0].as_i64().unwrap(),
            price: Price(fixed_from_f64(r[4].as_f64().unwrap())),
            qty: Qty(fixed_from_f64(r[5].as_f64().unwrap())),
            taker_side: if r[3] == "buy" { Side::Buy } else { Side::Sell },
        })
        .collect()
}

#[test]
fn real_trades_build_the_reference_one_minute_candles_in_any_order() {
    let trades = xrp_eth_trades();
    let csv = std::fs::read_to_string(require("candles/freqtrade_xrp_eth/XRP_ETH-1m.csv")).unwrap();
    let reference: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.trim().parse().unwrap()).collect())
        .collect();

    let build = |order: &[Trade]| {
        let mut s = CandleSeries::with_capacity(Timeframe::M1, 10_000);
        for t in order {
            s.push_trade(t).unwrap();
        }
        s
    };
    let series = build(&trades);
    let live: Vec<_> = series
        .candles_with_source()
        .filter(|(_, src)| *src == CandleSource::Live)
        .collect();
    assert_eq!(live.len(), reference.len());
    for (row, (c, _)) in reference.iter().zip(&live) {
        assert_eq!(c.open_time_ms, row[0] as i64);
        assert_eq!(c.open.raw(), fixed_from_f64(row[1]));
        assert_eq!(c.high.raw(), fixed_from_f64(row[2]));
        assert_eq!(c.low.raw(), fixed_from_f64(row[3]));
        assert_eq!(c.close.raw(), fixed_from_f64(row[4]));
        assert!((c.volume.to_f64() - row[5]).abs() <= 1e-9 * row[5].max(1.0));
    }
    // Minutes without trades are filled flat at the previous close.
    let all: Vec<_> = series.candles().collect();
    for w in all.windows(2) {
        assert_eq!(w[1].open_time_ms - w[0].open_time_ms, 60_000);
        if w[1].trades == 0 {
            assert_eq!(
                (w[1].open, w[1].low, w[1].high),
                (w[0].close, w[0].close, w[0].close)
            );
        }
    }

    let mut shuffled = trades.clone();
    shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(11));
    let again = build(&shuffled);
    assert!(series.candles().eq(again.candles()));

    // With the default 1,500-candle window at 1s the result is still order-independent.
    let mut in_order = CandleSeries::new(Timeframe::S1);
    let mut mixed = CandleSeries::new(Timeframe::S1);
    for t in &trades {
        in_order.push_trade(t).unwrap();
    }
    for t in &shuffled {
        mixed.push_trade(t).unwrap();
    }
    // The window is the newest 1,500 seconds; it may start later when it began with no trade.
    let span =
        in_order.current().unwrap().open_time_ms - in_order.candles().next().unwrap().open_time_ms;
    assert!(in_order.len() <= 1_500 && span < 1_500_000 && in_order.len() > 1_000);
    assert!(in_order.candles().eq(mixed.candles()));
    assert!(mixed.dropped() > 0);
}

#[test]
fn real_rest_klines_merge_without_duplicates_or_holes() {
    let raw = std::fs::read_to_string(require(
        "exchange_raw/nautilus_rest/binance/http_spot_market_klines.json",
    ))
    .unwrap();
    let rows: Vec<Value> = serde_json::from_str(&raw).unwrap();
    let fixed = |v: &Value| Price::parse(v.as_str().unwrap()).unwrap();
    let klines: Vec<mmtrader::market::types::Candle> = rows
        .iter()
        .map(|r| mmtrader::market::types::Candle {
            open_time_ms: r[0].as_i64().unwrap(),
            open: fixed(&r[1]),
            high: fixed(&r[2]),
            low: fixed(&r[3]),
            close: fixed(&r[4]),
            volume: Qty::parse(r[5].as_str().unwrap()).unwrap(),
            trades: r[8].as_u64().unwrap(),
        })
        .collect();
    let last = klines.last().unwrap().clone();

    let mut s = CandleSeries::new(Timeframe::M1);
    // A live trade inside the newest (still open) kline's interval, before the merge.
    let live_price = last.close + Price::from_units(1);
    s.push_trade(&Trade {
        symbol: "BTCUSDT".into(),
        id: 1,
        time_ms: last.open_time_ms + 30_000,
        price: live_price,
        qty: Qty::from_units(1),
        taker_side: Side::Buy,
    })
    .unwrap();
    // Merging twice (overlapping, reversed) changes nothing: no duplicates.
    let stats = s.merge_history(&klines);
    assert!(stats.invalid.is_empty());
    assert_eq!((stats.applied, stats.kept_live), (klines.len() - 1, 1));
    let once: Vec<_> = s.candles().cloned().collect();
    let mut reversed = klines.clone();
    reversed.reverse();
    s.merge_history(&reversed);
    assert!(s.candles().eq(once.iter()));

    assert_eq!(s.len(), klines.len());
    for (got, want) in s.candles().zip(&klines[..klines.len() - 1]) {
        assert_eq!(got, want);
    }
    assert_eq!(s.current().unwrap().close, live_price);
    assert!(
        s.candles()
            .zip(s.candles().skip(1))
            .all(|(a, b)| b.open_time_ms - a.open_time_ms == 60_000)
    );
}
