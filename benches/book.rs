//! Order-book throughput: level updates/s on a realistic book, snapshot apply, and the same
//! update stream on a naive BTreeMap book for comparison.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::market::book::OrderBook;
use mmtrader::market::types::{Level, Price, Qty, Side};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LEVELS: i64 = 2_500;
const TICK: i64 = 1_000_000; // 0.01 in raw units
const MID: i64 = 60_000 * 100_000_000;

fn snapshot() -> (Vec<Level>, Vec<Level>) {
    let bids = (1..=LEVELS)
        .map(|i| Level {
            price: Price(MID - i * TICK),
            qty: Qty(1_000_000 + i * 37),
        })
        .collect();
    let asks = (1..=LEVELS)
        .map(|i| Level {
            price: Price(MID + i * TICK),
            qty: Qty(1_000_000 + i * 41),
        })
        .collect();
    (bids, asks)
}

/// Diffs concentrated near the top: distance from the touch is geometric (mean ~20 ticks);
/// 20% are removals, the rest set a (possibly new) quantity, so levels churn in and out.
fn updates(n: usize) -> Vec<(Side, Price, Qty)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let side = if rng.random::<bool>() {
                Side::Buy
            } else {
                Side::Sell
            };
            let u: f64 = rng.random::<f64>().max(1e-12);
            let dist = 1 + ((-u.ln() * 20.0) as i64).min(LEVELS - 1);
            let price = match side {
                Side::Buy => MID - dist * TICK,
                Side::Sell => MID + dist * TICK,
            };
            let qty = if rng.random_range(0..5) == 0 {
                0
            } else {
                rng.random_range(1..10_000_000)
            };
            (side, Price(price), Qty(qty))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let (bids, asks) = snapshot();
    let ups = updates(100_000);

    let mut g = c.benchmark_group("book");
    g.throughput(Throughput::Elements(ups.len() as u64));
    g.bench_function("level_updates_vec_ladder", |b| {
        let mut book = OrderBook::new();
        book.apply_snapshot(&bids, &asks, 1);
        b.iter(|| {
            for &(s, p, q) in &ups {
                book.apply_level(s, p, q);
            }
            black_box(book.best_bid());
        })
    });
    g.bench_function("level_updates_btreemap", |b| {
        let mut bm: [BTreeMap<Price, Qty>; 2] = [BTreeMap::new(), BTreeMap::new()];
        for l in &bids {
            bm[0].insert(l.price, l.qty);
        }
        for l in &asks {
            bm[1].insert(l.price, l.qty);
        }
        b.iter(|| {
            for &(s, p, q) in &ups {
                let m = &mut bm[(s == Side::Sell) as usize];
                if q.is_zero() {
                    m.remove(&p);
                } else {
                    m.insert(p, q);
                }
            }
            black_box(bm[0].last_key_value());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("book_snapshot");
    g.throughput(Throughput::Elements((bids.len() + asks.len()) as u64));
    let mut asks_best_first = asks.clone();
    asks_best_first.sort_by_key(|l| l.price);
    let mut bids_best_first = bids.clone();
    bids_best_first.sort_by_key(|l| std::cmp::Reverse(l.price));
    g.bench_function("apply_snapshot_5000_levels", |b| {
        let mut book = OrderBook::new();
        b.iter(|| {
            book.apply_snapshot(black_box(&bids_best_first), black_box(&asks_best_first), 1);
            black_box(book.depth(Side::Buy));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
