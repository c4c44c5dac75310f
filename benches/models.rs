//! CNN + DQN inference cost on CPU: one live step for two symbols, and batched backtests.

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::models::cnn::{CnnConfig, CnnModel};
use mmtrader::models::dqn::{DqnAgent, DqnConfig};
use mmtrader::models::features::{InputConfig, ModelInput};
use std::hint::black_box;
use tch::{Device, Kind, Tensor};

const WINDOW: usize = 64;
/// Market features per row used by the RL state besides the CNN's (8 closes + pivot context).
const MARKET: usize = 8 + 20;

fn input(b: i64, cfg: &InputConfig) -> ModelInput {
    ModelInput::new(
        Tensor::randn(
            [b, cfg.channels as i64, cfg.window as i64],
            (Kind::Float, Device::Cpu),
        ),
        Tensor::randn([b, cfg.context as i64], (Kind::Float, Device::Cpu)),
        cfg,
    )
    .expect("bench input has the configured shape")
}

fn bench(c: &mut Criterion) {
    // One intra-op thread: for batches this small, thread hand-offs cost more than they save.
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg = CnnConfig::small(InputConfig::candles(WINDOW));
    let cnn = CnnModel::new(cfg, Device::Cpu);
    let state_dim = MARKET + cfg.state_features() + 1;
    let dqn = DqnAgent::new(DqnConfig::new(state_dim), Device::Cpu).expect("agent builds");
    let market = Tensor::randn([2, MARKET as i64], (Kind::Float, Device::Cpu));
    let position = Tensor::zeros([2, 1], (Kind::Float, Device::Cpu));

    // Live step: both symbols in one batch of two, CNN then DQN on its outputs.
    let two = input(2, &cfg.input);
    c.bench_function("cnn+dqn step, 2 symbols", |b| {
        b.iter(|| {
            let out = cnn.infer(black_box(&two));
            let state = Tensor::cat(&[&market, &out.state_features(), &position], 1);
            black_box(dqn.decide_batch(&state))
        })
    });

    let mut g = c.benchmark_group("backtest batch");
    for rows in [256i64, 1024] {
        let x = input(rows, &cfg.input);
        let m = Tensor::randn([rows, MARKET as i64], (Kind::Float, Device::Cpu));
        let p = Tensor::zeros([rows, 1], (Kind::Float, Device::Cpu));
        g.throughput(criterion::Throughput::Elements(rows as u64));
        g.bench_function(format!("cnn+dqn {rows} rows"), |b| {
            b.iter(|| {
                let out = cnn.infer(black_box(&x));
                let state = Tensor::cat(&[&m, &out.state_features(), &p], 1);
                black_box(dqn.decide_batch(&state))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
