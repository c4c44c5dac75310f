//! Cost of the simulated exchange: one simulated second of the live market (the CPU share it
//! takes when paced in real time) and the history queries REST clients make.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mmtrader::market::types::Timeframe;
use mmtrader::sim::SimConfig;
use mmtrader::sim::history::History;
use mmtrader::sim::model::MarketModel;

const T: i64 = 1_764_000_000_000;

fn bench(c: &mut Criterion) {
    let cfg = SimConfig::default();
    let history = Arc::new(History::new(
        cfg.seed,
        cfg.correlation,
        cfg.specs().unwrap(),
    ));
    let mut warm = MarketModel::new(history.clone(), T).unwrap();
    warm.advance_to(T + 10_000).unwrap();
    c.bench_function("sim_live_market_one_second_2_symbols", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut m| {
                let t = m.now_ms() + 1000;
                black_box(m.advance_to(t).unwrap())
            },
            BatchSize::SmallInput,
        )
    });
    c.bench_function("sim_history_1000_klines_1s", |b| {
        b.iter(|| {
            black_box(
                history
                    .range(0, Timeframe::S1, T - 5_000_000, T - 4_000_000)
                    .unwrap(),
            )
        })
    });
    c.bench_function("sim_history_1000_klines_1m", |b| {
        b.iter(|| black_box(history.range(0, Timeframe::M1, T - 60_000_000, T).unwrap()))
    });
    c.bench_function("sim_history_partial_1d", |b| {
        b.iter(|| {
            black_box(
                history
                    .partial(0, Timeframe::D1, Timeframe::D1.floor(T), T - 1)
                    .unwrap(),
            )
        })
    });
    c.bench_function("sim_build_history_2_symbols", |b| {
        b.iter(|| {
            black_box(History::new(
                cfg.seed,
                cfg.correlation,
                cfg.specs().unwrap(),
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
