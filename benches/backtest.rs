//! Backtest throughput: 1 s decisions of one symbol through the whole orchestrator (input
//! building, the CNN and the DQN on its same-step hidden states, the rule expert, mixture of
//! experts, feedback, fills), inference batched 64 steps at a time, libtorch single-threaded
//! as `mmtrader backtest` runs it.
//!
//! Criterion measures one hour (3,600 steps) and prints 24 times it as a day; that understates
//! a real day (measured 19 s extrapolated vs 35 s direct: later steps cost more than the
//! first hour's), so the day is measured directly, once, with
//! `MMTRADER_BENCH_DAY=1 cargo bench --bench backtest`: it prints wall and CPU time (a
//! measurement, not a test: nothing fails on a slow machine).

use criterion::{Criterion, criterion_group};
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
use std::time::Instant;
use tch::Device;

const WINDOW: usize = 64;
const WARMUP: usize = 600;
const STEPS: usize = 3_600;
const DAY: usize = 86_400;
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

fn spec(candles: &[Candle]) -> BacktestSpec<'_> {
    BacktestSpec {
        symbol: "ETHUSDT",
        candles,
        interval_ms: 1_000,
        from_ms: candles[WARMUP].open_time_ms + 1_000,
        to_ms: i64::MAX,
    }
}

fn run(candles: &[Candle]) -> mmtrader::orchestrator::backtest::BacktestResult {
    backtest::run(
        spec(candles),
        &OrchestratorConfig::default(),
        &TradingSetup::default(),
        experts(),
        None,
        &mut |_, _| {},
    )
    .expect("runs")
}

fn bench(c: &mut Criterion) {
    tch::set_num_threads(1);
    let candles = seconds(WARMUP + STEPS);
    let mut g = c.benchmark_group("backtest");
    g.sample_size(10);
    let mut hour = std::time::Duration::ZERO;
    let mut runs = 0u32;
    g.bench_function("1h_of_1s_decisions_cnn_dqn_rule_batched", |b| {
        b.iter(|| {
            let t = Instant::now();
            let r = run(&candles);
            hour += t.elapsed();
            runs += 1;
            assert_eq!(r.decisions.len(), STEPS);
            black_box(r.final_equity)
        })
    });
    g.finish();
    if runs > 0 {
        let per_hour = hour.as_secs_f64() / f64::from(runs);
        println!(
            "backtest: 1 h of 1 s decisions {per_hour:.2} s => a day (86,400 steps) \
             {:.1} s extrapolated (a lower bound; MMTRADER_BENCH_DAY=1 measures it)",
            per_hour * (DAY / STEPS) as f64
        );
    }
}

/// User + system CPU time of this process so far, from `/proc/self/stat` (Linux reports it
/// in USER_HZ = 100 ticks per second); None elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// One full day of 1 s decisions, measured once.
fn day() {
    tch::set_num_threads(1);
    let candles = seconds(WARMUP + DAY);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let r = run(&candles);
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r.decisions.len(), DAY);
    let cpu = cpu0
        .zip(cpu_seconds())
        .map_or("n/a".to_string(), |(a, b)| format!("{:.1} s", b - a));
    println!(
        "backtest: 1 day = {DAY} 1 s decisions with the CNN, the DQN and a rule expert: \
         wall {wall:.1} s, CPU {cpu}, {:.0} steps/s, {} fills",
        DAY as f64 / wall,
        r.trades.len()
    );
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("MMTRADER_BENCH_DAY").is_some() {
        day();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
