//! Backtest throughput: 1 s decisions of one symbol through the whole orchestrator (input
//! building, the CNN and the DQN on its same-step hidden states, the rule expert, mixture of
//! experts, feedback, fills), inference batched 64 steps at a time. One hour (3,600 steps) is
//! measured; a day (86,400 steps) takes 24 times as long (the per-step cost does not grow with
//! the run length: every history is bounded).

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::analysis::input::InputConfig;
use mmtrader::market::types::Timeframe;
use mmtrader::market::types::{Candle, Price, Qty};
use mmtrader::models::cnn::CnnConfig;
use mmtrader::models::input::InputShape;
use mmtrader::models::runtime::InferenceCore;
use mmtrader::orchestrator::backtest::{self, BacktestSpec, TradingSetup};
use mmtrader::orchestrator::config::OrchestratorConfig;
use mmtrader::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use mmtrader::orchestrator::models::model_experts;
use std::hint::black_box;
use tch::Device;

const WINDOW: usize = 64;
const WARMUP: usize = 600;
const STEPS: usize = 3_600;
const START: i64 = 19_675 * 86_400_000;

/// A deterministic 1 s random walk around 3,000.
fn seconds(n: usize) -> Vec<Candle> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let tick = 1_000_000;
    let mut close: i64 = 3_000 * 100_000_000;
    (0..n)
        .map(|i| {
            let open = close;
            close += ((next() % 41) as i64 - 20) * tick;
            Candle {
                open_time_ms: START + i as i64 * 1_000,
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

fn experts() -> Vec<Box<dyn Expert>> {
    tch::manual_seed(0);
    let core = InferenceCore::fresh(
        CnnConfig {
            timeframe: Timeframe::S1,
            ..CnnConfig::small(InputShape::encoded(WINDOW))
        },
        Device::Cpu,
        ("cnn".into(), "dqn".into()),
        InputConfig::default(),
    )
    .expect("fresh models");
    let (cnn, dqn) = model_experts(core, InputConfig::default(), false, false);
    vec![
        Box::new(cnn),
        Box::new(dqn),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig::default())),
    ]
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    let candles = seconds(WARMUP + STEPS);
    let cfg = OrchestratorConfig::default();
    let spec = BacktestSpec {
        symbol: "ETHUSDT",
        candles: &candles,
        interval_ms: 1_000,
        from_ms: candles[WARMUP].open_time_ms + 1_000,
        to_ms: i64::MAX,
    };
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    g.bench_function("1h_of_1s_decisions_cnn_dqn_rule_batched", |b| {
        b.iter(|| {
            let r = backtest::run(
                spec,
                &cfg,
                &TradingSetup::default(),
                experts(),
                None,
                &mut |_, _| {},
            )
            .expect("runs");
            assert_eq!(r.decisions.len(), STEPS);
            black_box(r.final_equity)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
