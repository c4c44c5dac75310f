//! Store throughput: recording (events → Parquet, zstd) and replay reading (Parquet → decoded
//! `FeedEvent`s in recording order), on a live-like mix of depth diffs, trades and ticks.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::feeds::binance::connector::FeedEvent;
use mmtrader::feeds::binance::wire::{BinanceEvent, DepthUpdate};
use mmtrader::market::types::{Level, Price, Qty, Side, Trade};
use mmtrader::storage::StorageConfig;
use mmtrader::storage::market::{EventFilter, MarketWriter, read_events};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Events per recording: a few minutes of two busy symbols.
const EVENTS: usize = 200_000;
const MID: i64 = 3_000 * 100_000_000;
const TICK: i64 = 1_000_000;

/// `(recv_ms, event)`; `None` is a once-a-second step.
fn events() -> Vec<(i64, Option<FeedEvent>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let symbols = ["ETHUSDT", "BTCUSDT"];
    let mut ids = [1_000u64, 5_000u64];
    let mut trade_ids = [1u64, 1u64];
    let mut t = 1_795_392_000_000i64;
    let mut next_second = t + 1000;
    let mut out = Vec::with_capacity(EVENTS);
    while out.len() < EVENTS {
        t += rng.random_range(0..3);
        if t >= next_second {
            out.push((next_second, None));
            next_second += 1000;
        }
        let s = rng.random_range(0..2usize);
        let level = |rng: &mut ChaCha8Rng, side: i64| Level {
            price: Price(MID + side * TICK * rng.random_range(1..200)),
            qty: Qty(rng.random_range(0..5_000_000_000)),
        };
        let ev = if rng.random_bool(0.65) {
            let first = ids[s] + 1;
            ids[s] += rng.random_range(1..20);
            let n_b = rng.random_range(0..6);
            let n_a = rng.random_range(0..6);
            FeedEvent::Market(BinanceEvent::Depth(DepthUpdate {
                symbol: symbols[s].to_string(),
                event_time_ms: t - 3,
                transaction_time_ms: None,
                first_update_id: first,
                final_update_id: ids[s],
                prev_final_update_id: None,
                bids: (0..n_b).map(|_| level(&mut rng, -1)).collect(),
                asks: (0..n_a).map(|_| level(&mut rng, 1)).collect(),
            }))
        } else {
            trade_ids[s] += 1;
            FeedEvent::Market(BinanceEvent::AggTrade(Trade {
                symbol: symbols[s].to_string(),
                id: trade_ids[s],
                time_ms: t - 2,
                price: Price(MID + TICK * rng.random_range(-50..50)),
                qty: Qty(rng.random_range(1..1_000_000_000)),
                taker_side: if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                },
            }))
        };
        out.push((t, Some(ev)));
    }
    out
}

fn record(root: &std::path::Path, evs: &[(i64, Option<FeedEvent>)]) {
    let cfg = StorageConfig::default();
    let (mut w, _) = MarketWriter::open(root, &cfg, 1).unwrap();
    for (t, ev) in evs {
        match ev {
            Some(ev) => w.record(*t, ev).unwrap(),
            None => w.record_second(*t).unwrap(),
        }
    }
    w.close().unwrap();
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("storage");
    g.sample_size(10);
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("record_200k_events_zstd", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                record(dir.path(), &evs);
                dir
            },
            BatchSize::PerIteration,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), &evs);
    let bytes: u64 = walk_bytes(dir.path());
    eprintln!(
        "storage bench: {} events recorded into {} bytes ({:.1} bytes/event)",
        evs.len(),
        bytes,
        bytes as f64 / evs.len() as f64
    );
    g.bench_function("replay_read_decode_200k_events", |b| {
        b.iter(|| {
            let out = read_events(dir.path(), &EventFilter::default()).unwrap();
            assert_eq!(out.len(), evs.len());
            black_box(out)
        })
    });
    g.finish();
}

fn walk_bytes(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk_bytes(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
