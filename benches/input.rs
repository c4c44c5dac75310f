//! Model-input budget: both symbols' `BaseDataInput`s built, validated, encoded and turned into
//! tensors in at most 2 ms, on one core.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mmtrader::analysis::encoding::encode;
use mmtrader::analysis::input::{InputConfig, SymbolAnalysis};
use mmtrader::analysis::model_output::{
    Action, ActionValues, ModelOutput, ModelOutputStore, Predictions,
};
use mmtrader::market::book::OrderBook;
use mmtrader::market::state::{SymbolMarket, SymbolMarketConfig};
use mmtrader::market::types::{Candle, Level, Price, Qty, Side, Timeframe, Trade};
use mmtrader::models::encoding::to_tensors;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DAY0: i64 = 19_675 * 86_400_000;
const LIVE: i64 = DAY0 + 5 * 3_600_000;
/// Live seconds streamed after the history (trades, book, COB each second).
const LIVE_SECONDS: i64 = 120;

/// A market with 320 exchange candles of every timeframe, then two minutes of live trades
/// and a COB every second.
fn market(symbol: &str, base: i64, bucket: i64, seed: u64) -> SymbolMarket {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = SymbolMarket::new(SymbolMarketConfig {
        bucket_size: Price::from_units(bucket),
        large_trade_notional: Price::from_units(30_000),
        candles_kept: 1_500,
        tick_capacity: 100_000,
        tick_max_age_ms: 1_800_000,
    });
    let tick = bucket * 1_000_000;
    for (tf, end) in Timeframe::ALL.into_iter().zip([LIVE, LIVE, LIVE, DAY0]) {
        let mut close = base * 100_000_000;
        let k: Vec<Candle> = (0..320)
            .map(|i| {
                let open = close;
                close += rng.random_range(-40..=40) * tick;
                Candle {
                    open_time_ms: end - (320 - i) * tf.millis(),
                    open: Price(open),
                    high: Price(open.max(close) + rng.random_range(0..8) * tick),
                    low: Price(open.min(close) - rng.random_range(0..8) * tick),
                    close: Price(close),
                    volume: Qty(rng.random_range(1..5_000_000_000)),
                    trades: rng.random_range(1..60),
                }
            })
            .collect();
        m.on_history(tf, &k);
    }
    let mut price = base * 100_000_000;
    let mut id = 0;
    for s in 0..LIVE_SECONDS {
        let start = LIVE + s * 1_000;
        for j in 0..20 {
            price += rng.random_range(-3..=3) * tick;
            id += 1;
            let trade = Trade {
                symbol: symbol.into(),
                id,
                time_ms: start + j * 50,
                price: Price(price),
                qty: Qty(rng.random_range(1_000_000..2_000_000_000)),
                taker_side: if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                },
            };
            m.on_trade(&trade).unwrap();
        }
        let level = |p: i64, rng: &mut ChaCha8Rng| Level {
            price: Price(p),
            qty: Qty(rng.random_range(1_000_000..900_000_000)),
        };
        let bids: Vec<Level> = (1..200)
            .map(|i| level(price - i * tick / 4, &mut rng))
            .collect();
        let asks: Vec<Level> = (1..200)
            .map(|i| level(price + i * tick / 4, &mut rng))
            .collect();
        let mut book = OrderBook::new();
        book.apply_snapshot(&bids, &asks, 1);
        m.on_second(Some(&book), start + 1_000).unwrap();
    }
    m
}

fn outputs(t: i64) -> ModelOutputStore {
    let mut store = ModelOutputStore::default();
    for (kind, name) in [("cnn", "williams_cnn"), ("rl", "dqn")] {
        store.record(ModelOutput {
            model_type: kind.into(),
            model_name: name.into(),
            symbol: "ETHUSDT".into(),
            timestamp_ms: t - 500,
            confidence: 0.8,
            predictions: Predictions {
                action: Action::Buy,
                action_confidence: 0.8,
                probabilities: ActionValues {
                    buy: 0.8,
                    sell: 0.1,
                    hold: 0.1,
                },
                direction_vector: 0.5,
                direction_confidence: 0.7,
                pivots: vec![],
                q_values: None,
                expected_reward: None,
            },
            hidden_states: [("h".to_string(), vec![0.5; 64])].into(),
            metadata: Default::default(),
        });
    }
    store
}

fn bench(c: &mut Criterion) {
    let eth = market("ETHUSDT", 3_000, 1, 1);
    let btc = market("BTCUSDT", 60_000, 10, 2);
    let t = LIVE + LIVE_SECONDS * 1_000;
    let cfg = InputConfig::default();
    let store = outputs(t);
    // Engines fed up to one second before `t`, as after the previous second's build.
    let mut eth_a = SymbolAnalysis::new("ETHUSDT", cfg.clone());
    let mut btc_a = SymbolAnalysis::new("BTCUSDT", cfg.clone());
    eth_a.update(&eth, t - 1_000);
    btc_a.update(&btc, t - 1_000);
    {
        let (mut e, mut b) = (eth_a.clone(), btc_a.clone());
        let ie = e.build(&eth, &btc, &store, t);
        let ib = b.build(&btc, &btc, &store, t);
        ie.validate(&cfg).expect("benchmark input is valid");
        ib.validate(&cfg).expect("benchmark input is valid");
    }

    c.bench_function(
        "input: both symbols, next second (build+validate+encode+tensors)",
        |bn| {
            bn.iter_batched(
                || (eth_a.clone(), btc_a.clone()),
                |(mut e, mut b)| {
                    let ie = e.build(&eth, &btc, &store, t);
                    let ib = b.build(&btc, &btc, &store, t);
                    ie.validate(&cfg).unwrap();
                    ib.validate(&cfg).unwrap();
                    let te = to_tensors(&encode(&ie), tch::Device::Cpu);
                    let tb = to_tensors(&encode(&ib), tch::Device::Cpu);
                    black_box((te, tb))
                },
                BatchSize::SmallInput,
            )
        },
    );

    let (mut e, mut b) = (eth_a.clone(), btc_a.clone());
    e.update(&eth, t);
    b.update(&btc, t);
    c.bench_function("input: both symbols, build only (engines synced)", |bn| {
        bn.iter(|| {
            let ie = e.build(&eth, &btc, &store, t);
            let ib = b.build(&btc, &btc, &store, t);
            black_box((ie, ib))
        })
    });
    let ie = e.build(&eth, &btc, &store, t);
    c.bench_function("input: encode one symbol", |bn| {
        bn.iter(|| black_box(encode(black_box(&ie))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
