//! Inference history costs: handing a step report to the sink (on the orchestrator's thread,
//! must stay far below a step), encoding one step (CBOR + zstd) and committing a batch of 32
//! steps (on the writer thread).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mmtrader::analysis::analyze::read_candles;
use mmtrader::analysis::input::InputConfig;
use mmtrader::analysis::model_output::ModelOutputStore;
use mmtrader::orchestrator::config::{OrchestratorConfig, TriggerConfig};
use mmtrader::orchestrator::coordinator::RunMode;
use mmtrader::orchestrator::decision::ThresholdHandle;
use mmtrader::orchestrator::engine::{Engine, HistorySink, StepReport};
use mmtrader::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use mmtrader::orchestrator::history::HistoryFeed;
use mmtrader::storage::history::encode_blob;
use mmtrader::storage::state::StateDb;

/// 32 steps of two experts on recorded 1 m BTC candles, each input with 300 candles.
fn reports() -> Vec<StepReport> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let candles = read_candles(&path).unwrap().candles;
    let mut feed = HistoryFeed::new("BTCUSDT", 60_000, InputConfig::default()).unwrap();
    let experts: Vec<Box<dyn Expert>> = ["a", "b"]
        .into_iter()
        .map(|n| {
            Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
                name: n.into(),
                ..PivotMomentumConfig::default()
            })) as Box<dyn Expert>
        })
        .collect();
    let cfg = OrchestratorConfig {
        trigger: TriggerConfig::Candle("1m".into()),
        horizon_secs: 120,
        ..OrchestratorConfig::default()
    };
    let thresholds = ThresholdHandle::new(0.6, 0.6).unwrap();
    let mut engine = Engine::new(cfg, experts, RunMode::Inline, thresholds).unwrap();
    let store = ModelOutputStore::default();
    let mut out = Vec::new();
    for (i, c) in candles.iter().take(332).enumerate() {
        let t = feed.push(c).unwrap();
        if i >= 300 {
            out.push(engine.step(feed.input(&store, t)));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let reports = reports();
    let (sink, rx) = HistorySink::bounded(1 << 20);
    c.bench_function("history_offer_step", |b| {
        b.iter(|| sink.offer(black_box(&reports[0]).clone()));
        rx.try_iter().for_each(drop);
    });
    c.bench_function("history_encode_step_input", |b| {
        b.iter(|| encode_blob("input", black_box(&*reports[0].input)).unwrap());
    });
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    c.bench_function("history_commit_32_steps", |b| {
        b.iter_batched(
            || reports.clone(),
            |r| db.insert_steps(&r).unwrap(),
            BatchSize::LargeInput,
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
