//! One COB computation (±20 buckets, moving averages, heatmap row, order flow) on a
//! BTC-like book: 2,500 levels a side at a 0.01 tick, $10 buckets, 50 trades since last step.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::market::book::OrderBook;
use mmtrader::market::cob::{CobConfig, CobEngine};
use mmtrader::market::types::{Level, Price, Qty, Side, Trade};

const MID: i64 = 60_000 * 100_000_000;

fn book(levels: i64, tick: i64) -> OrderBook {
    let side = |sign: i64| -> Vec<Level> {
        (1..=levels)
            .map(|i| Level {
                price: Price(MID + sign * i * tick),
                qty: Qty(1_000_000 + i * 37),
            })
            .collect()
    };
    let mut b = OrderBook::new();
    b.apply_snapshot(&side(-1), &side(1), 1);
    b
}

fn bench(c: &mut Criterion) {
    let trades: Vec<Trade> = (0..50)
        .map(|i| Trade {
            symbol: "BTCUSDT".into(),
            id: i,
            time_ms: i as i64,
            price: Price(MID),
            qty: Qty(1_000_000 * (i as i64 % 7 + 1)),
            taker_side: if i % 3 == 0 { Side::Sell } else { Side::Buy },
        })
        .collect();
    let mut g = c.benchmark_group("cob");
    // 2,500 levels at 0.01: $25 deep, all inside the $410 bucket range (every level visited).
    // 2,500 levels at $0.10: $250 deep, the range cuts the book.
    for (name, tick) in [
        ("compute_dense_2500", 1_000_000i64),
        ("compute_wide_2500", 10_000_000),
    ] {
        let b = book(2_500, tick);
        let mut e = CobEngine::new(Price::from_units(10), CobConfig::default()).unwrap();
        let mut now = 0i64;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                now += 1_000;
                black_box(e.compute(black_box(&b), black_box(&trades), now).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
