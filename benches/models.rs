//! CNN + DQN inference cost on the real encoded input: one live step for two symbols
//! (validate, encode, CNN, DQN on the CNN's outputs, `ModelOutput`s), and batched backtests.
//! The same on CUDA when libtorch sees a GPU.
//!
//! Budget: the live step (CNN + DQN for both symbols) must take at most 10 ms on 2 CPU
//! cores (`cpu: cnn+dqn step, 2 symbols`); the `cuda:` rows are the GPU figure, measured and
//! printed when CUDA is present.

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::analysis::input::{BaseDataInput, InputConfig, SymbolAnalysis};
use mmtrader::analysis::model_output::ModelOutputStore;
use mmtrader::market::book::OrderBook;
use mmtrader::market::state::{SymbolMarket, SymbolMarketConfig};
use mmtrader::market::types::{Candle, Level, Price, Qty, Timeframe};
use mmtrader::models::cnn::CnnConfig;
use mmtrader::models::input::InputShape;
use mmtrader::models::runtime::{InferenceCore, InferenceRequest};
use std::hint::black_box;
use tch::Device;

const WINDOW: usize = 64;
/// A day-aligned time, so every timeframe's history ends exactly here.
const T: i64 = 19_675 * 86_400_000;

fn klines(tf: Timeframe, n: usize, base: i64, seed: u64) -> Vec<Candle> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tick = 1_000_000;
    let mut close = base * 100_000_000;
    (0..n)
        .map(|i| {
            let open = close;
            close += ((next() % 41) as i64 - 20) * tick;
            Candle {
                open_time_ms: T - (n - i) as i64 * tf.millis(),
                open: Price(open),
                high: Price(open.max(close) + (next() % 7) as i64 * tick),
                low: Price(open.min(close) - (next() % 7) as i64 * tick),
                close: Price(close),
                volume: Qty((next() % 5_000_000_000) as i64 + 1),
                trades: next() % 50 + 1,
            }
        })
        .collect()
}

/// A valid input: 320 candles of every timeframe and a COB computed at `T`.
fn input(symbol: &str, base: i64, seed: u64) -> BaseDataInput {
    let mut m = SymbolMarket::new(SymbolMarketConfig {
        bucket_size: Price::from_units(1),
        large_trade_notional: Price::from_units(30_000),
        candles_kept: 1_500,
        tick_capacity: 10_000,
        tick_max_age_ms: 1_800_000,
    });
    for (i, tf) in Timeframe::ALL.into_iter().enumerate() {
        m.on_history(tf, &klines(tf, 320, base, seed + i as u64));
    }
    let lv = |p: i64, q: i64| Level {
        price: Price(p * 1_000_000),
        qty: Qty(q * 10_000_000),
    };
    let mid = base * 100;
    let bids: Vec<Level> = (0..40).map(|i| lv(mid - 10 - 30 * i, 3 + i % 5)).collect();
    let asks: Vec<Level> = (0..40).map(|i| lv(mid + 10 + 30 * i, 2 + i % 7)).collect();
    let mut book = OrderBook::new();
    book.apply_snapshot(&bids, &asks, 1);
    m.on_second(Some(&book), T)
        .expect("the bench book has a quote");
    let mut a = SymbolAnalysis::new(symbol, InputConfig::default());
    let input = a.build(&m, &m, &ModelOutputStore::default(), T);
    input
        .validate(a.config())
        .expect("the bench input is valid");
    input
}

fn core(device: Device) -> InferenceCore {
    tch::manual_seed(0);
    InferenceCore::fresh(
        CnnConfig::small(InputShape::encoded(WINDOW)),
        device,
        ("pivot_cnn".into(), "dqn_agent".into()),
        InputConfig::default(),
    )
    .expect("models build")
}

fn bench(c: &mut Criterion) {
    // One intra-op thread: for batches this small, thread hand-offs cost more than they save.
    tch::set_num_threads(1);
    let reqs = vec![
        InferenceRequest {
            symbol: "ETHUSDT".into(),
            t_ms: T,
            input: input("ETHUSDT", 3_000, 7),
            position: 0,
        },
        InferenceRequest {
            symbol: "BTCUSDT".into(),
            t_ms: T,
            input: input("BTCUSDT", 60_000, 17),
            position: 1,
        },
    ];
    let mut devices = vec![("cpu", Device::Cpu)];
    if tch::Cuda::is_available() {
        devices.push(("cuda", Device::Cuda(0)));
    } else {
        eprintln!("CUDA not available: GPU figures skipped");
    }
    for (name, device) in devices {
        let core = core(device);
        assert!(core.run(&reqs).iter().all(Result::is_ok));
        c.bench_function(&format!("{name}: cnn+dqn step, 2 symbols"), |b| {
            b.iter(|| black_box(core.run(black_box(&reqs))))
        });
        let mut g = c.benchmark_group(format!("{name}: backtest batch"));
        for rows in [64usize, 256] {
            let many: Vec<InferenceRequest> = reqs.iter().cycle().take(rows).cloned().collect();
            g.throughput(criterion::Throughput::Elements(rows as u64));
            g.bench_function(format!("cnn+dqn {rows} inputs"), |b| {
                b.iter(|| black_box(core.run(black_box(&many))))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
