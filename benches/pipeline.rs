//! Replay of a recorded session through the whole market-data core on one core: parse every
//! frame, keep the book in sync, aggregate trades into candles and ticks, and compute the COB
//! once per second of exchange time (the work the live market task does per frame).

use std::hint::black_box;
use std::io::{BufRead, BufReader};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::read::MultiGzDecoder;

use mmtrader::feeds::binance::sync::{BookSync, Rules, SyncConfig};
use mmtrader::feeds::binance::wire::{BinanceEvent, parse_depth_snapshot, parse_frame};
use mmtrader::market::state::{SymbolMarket, SymbolMarketConfig};
use mmtrader::market::types::Price;

const RECORDING: &str = "exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz";

fn payloads() -> Vec<String> {
    let path = mmtrader::testdata::require(RECORDING);
    let file = std::fs::File::open(path).expect("open recording");
    BufReader::new(MultiGzDecoder::new(file))
        .lines()
        .map(|l| {
            let l = l.expect("read line");
            l.split_once(' ').map_or(l.clone(), |(_, p)| p.to_string())
        })
        .collect()
}

fn market() -> SymbolMarket {
    SymbolMarket::new(SymbolMarketConfig {
        bucket_size: Price::from_units(10),
        large_trade_notional: Price::from_units(50_000),
        candles_kept: 1500,
        tick_capacity: 1 << 18,
        tick_max_age_ms: 1_800_000,
    })
}

fn replay(frames: &[String]) -> (BookSync, SymbolMarket) {
    let mut sync = BookSync::new("BTCUSDT", Rules::Spot, SyncConfig::default());
    let mut m = market();
    let mut next_second = i64::MIN;
    for f in frames {
        if f.starts_with("{\"lastUpdateId\"") {
            if let Ok(s) = parse_depth_snapshot(f) {
                sync.on_snapshot(s);
            }
            continue;
        }
        let now = match parse_frame(f) {
            Ok(BinanceEvent::Depth(d)) => {
                sync.on_diff(&d);
                d.event_time_ms
            }
            Ok(BinanceEvent::Trade(t) | BinanceEvent::AggTrade(t)) => {
                let _ = m.on_trade(&t);
                t.time_ms
            }
            _ => continue,
        };
        if next_second == i64::MIN {
            next_second = now - now.rem_euclid(1000) + 1000;
        }
        while now >= next_second {
            let _ = m.on_second(sync.synced_book(), next_second);
            next_second += 1000;
        }
    }
    (sync, m)
}

fn benches(c: &mut Criterion) {
    let frames = payloads();
    let (sync, m) = replay(&frames);
    eprintln!(
        "pipeline bench: {} frames, {} diffs applied, {} trades, {} COB rows",
        frames.len(),
        sync.stats().applied,
        m.trades(),
        m.cob_engine().map_or(0, |e| e.heatmap().len())
    );
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(10);
    g.bench_function("recorded_frames_through_book_candles_cob", |b| {
        b.iter(|| black_box(replay(black_box(&frames))))
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
