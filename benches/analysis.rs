//! Analysis budgets: a month of 1 s candles through five pivot levels (≤ 1 s) and every
//! indicator over 1 M bars (≤ 100 ms), each on one core.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::analysis::indicators::{IndicatorConfig, IndicatorSet};
use mmtrader::analysis::pivots::{LEVELS, PivotConfig, WilliamsEngine};
use mmtrader::market::types::{Candle, Price, Qty, Timeframe};

/// A deterministic random-walk series of 1 s candles around 60 000 with 0.01 ticks.
fn candles(n: usize) -> Vec<Candle> {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tick = 1_000_000; // 0.01 in fixed point
    let mut close: i64 = 60_000 * 100_000_000;
    (0..n)
        .map(|i| {
            let open = close;
            close += ((next() % 21) as i64 - 10) * tick;
            let high = open.max(close) + (next() % 5) as i64 * tick;
            let low = open.min(close) - (next() % 5) as i64 * tick;
            Candle {
                open_time_ms: 1_700_000_000_000 + i as i64 * 1_000,
                open: Price(open),
                high: Price(high),
                low: Price(low),
                close: Price(close),
                volume: Qty((next() % 1_000_000_000) as i64),
                trades: 1,
            }
        })
        .collect()
}

fn pivots_month_of_seconds(c: &mut Criterion) {
    let data = candles(2_592_000);
    let mut g = c.benchmark_group("pivots");
    g.sample_size(10);
    g.bench_function("month_1s_2.6M_candles_5_levels", |b| {
        b.iter(|| {
            let mut e = WilliamsEngine::new(PivotConfig::for_timeframe(Timeframe::S1));
            for candle in &data {
                black_box(e.update(candle).map(|p| p.len()).unwrap_or(0));
            }
            black_box((1..=LEVELS as u8).map(|l| e.pivots(l).len()).sum::<usize>())
        })
    });
    g.finish();
}

fn indicators_million_bars(c: &mut Criterion) {
    let data = candles(1_000_000);
    let mut g = c.benchmark_group("indicators");
    g.sample_size(10);
    g.bench_function("indicator_set_1M_bars", |b| {
        b.iter(|| {
            let mut set = IndicatorSet::new(&IndicatorConfig::default());
            let mut acc = 0.0;
            for candle in &data {
                acc += set.update(candle).values[2].unwrap_or(0.0);
            }
            black_box(acc)
        })
    });
    g.finish();
}

criterion_group!(benches, pivots_month_of_seconds, indicators_million_bars);
criterion_main!(benches);
