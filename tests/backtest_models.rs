//! Backtests with trained models on a recorded BTC perpetual (1m): walk-forward trains the CNN
//! and the DQN on each fold's train window only (changing later candles leaves a fold's
//! weights and train-window choices unchanged), training is reproducible, and batched model
//! inference gives the one-by-one decisions.

use mmtrader::analysis::analyze::read_candles;
use mmtrader::analysis::input::InputConfig;
use mmtrader::market::types::{Candle, Price};
use mmtrader::orchestrator::backtest::{
    self, BacktestResult, BacktestSpec, Fold, THRESHOLD_GRID, TradingSetup,
};
use mmtrader::orchestrator::config::OrchestratorConfig;
use mmtrader::orchestrator::expert::Expert;
use mmtrader::orchestrator::models::{
    FoldModels, FoldTraining, ModelFolds, copy_core, model_experts, train_models,
};
use tch::Device;

const MINUTE: i64 = 60_000;

/// libtorch's random generator is process-wide: tests that train take turns, or each would
/// draw from the other's seeded sequence.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn torch_turn() -> std::sync::MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|p| p.into_inner())
}

fn candles(n: usize) -> Vec<Candle> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let mut c = read_candles(&path).unwrap().candles;
    c.truncate(n);
    c
}

fn training() -> FoldTraining {
    FoldTraining {
        window: 16,
        cnn_epochs: 2,
        dqn_episodes: 4,
        episode_len: 150,
        seed: 3,
        names: ("pivot_cnn".into(), "dqn_agent".into()),
    }
}

fn cfg(batch: usize) -> OrchestratorConfig {
    let mut c = OrchestratorConfig {
        buy_threshold: 0.45,
        sell_threshold: 0.45,
        horizon_secs: 600,
        ..OrchestratorConfig::default()
    };
    c.backtest.batch = batch;
    c
}

fn no_rules() -> Vec<Box<dyn Expert>> {
    Vec::new()
}

fn walk(c: &[Candle]) -> (Vec<Fold>, Vec<FoldModels>) {
    tch::set_num_threads(1);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: c,
        interval_ms: MINUTE,
        from_ms: c[0].open_time_ms,
        to_ms: c[c.len() - 1].open_time_ms + MINUTE,
    };
    let mut progress = |_: usize, _: &mmtrader::models::cnn_train::TrainProgress| {};
    let mut fe = ModelFolds::new(
        "BTCUSDT",
        training(),
        InputConfig::default(),
        Device::Cpu,
        &no_rules,
        &mut progress,
    );
    let folds = backtest::walk_forward_with(
        spec,
        &cfg(64),
        &TradingSetup::default(),
        &mut fe,
        400 * MINUTE,
        100 * MINUTE,
        &mut |_, _| {},
    )
    .unwrap()
    .folds;
    (folds, fe.trained().to_vec())
}

#[test]
fn walk_forward_trains_each_fold_on_its_train_window_only() {
    let _turn = torch_turn();
    let c = candles(700);
    let (folds, trained) = walk(&c);
    assert_eq!(folds.len(), 3, "{folds:?}");
    assert_eq!(trained.len(), 3);
    for (f, t) in folds.iter().zip(&trained) {
        assert_eq!(f.trained.as_deref(), Some(t.to_string().as_str()));
        assert_eq!(t.candles, 400, "{t}");
        assert!(t.rows > 300 && t.dqn_updates > 0, "{t}");
        assert!(THRESHOLD_GRID.contains(&f.chosen.buy));
        assert!(f.test_result.first_ms > f.test.0 && f.test_result.last_ms <= f.test.1);
        // The models answered at every test step.
        assert_eq!(f.test_result.skipped_outputs, 0);
        assert!(f.test_result.accuracy.contains_key("pivot_cnn"));
        assert!(f.test_result.accuracy.contains_key("dqn_agent"));
    }
    // Each fold trained other weights (other windows).
    assert_ne!(trained[0].cnn_digest, trained[1].cnn_digest);

    // A crash right after fold 0's train window: every later price halves.
    let cut = folds[0].train.1;
    let mut changed = c.clone();
    for k in changed.iter_mut().filter(|k| k.open_time_ms >= cut) {
        let half = |p: Price| Price(p.raw() / 2);
        k.open = half(k.open);
        k.high = half(k.high);
        k.low = half(k.low);
        k.close = half(k.close);
    }
    let (folds2, trained2) = walk(&changed);
    // Fold 0 never saw it: same weights, same thresholds chosen on the same train results.
    assert_eq!(trained[0], trained2[0]);
    assert_eq!(folds[0].chosen, folds2[0].chosen);
    assert_eq!(folds[0].train_metrics, folds2[0].train_metrics);
    // Its test window did change, and fold 1 trained on the changed candles.
    assert_ne!(folds[0].test_result.equity, folds2[0].test_result.equity);
    assert_ne!(trained[1].cnn_digest, trained2[1].cnn_digest);
}

fn run_with(
    c: &[Candle],
    core: &mmtrader::models::runtime::InferenceCore,
    batch: usize,
) -> BacktestResult {
    let (cnn, dqn) = model_experts(
        copy_core(core, &InputConfig::default()).unwrap(),
        InputConfig::default(),
        false,
        false,
    );
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: c,
        interval_ms: MINUTE,
        from_ms: c[500].open_time_ms + MINUTE,
        to_ms: i64::MAX,
    };
    backtest::run(
        spec,
        &cfg(batch),
        &TradingSetup::default(),
        vec![Box::new(cnn), Box::new(dqn)],
        None,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn trained_models_are_reproducible_and_batches_decide_as_single_steps() {
    let _turn = torch_turn();
    tch::set_num_threads(1);
    let c = candles(800);
    let train = &c[..500];
    let t = training();
    let fit = || {
        train_models(
            "BTCUSDT",
            train,
            MINUTE,
            &t,
            &InputConfig::default(),
            Device::Cpu,
            &mut |_| {},
        )
        .unwrap()
    };
    let (core, rec) = fit();
    let (_, again) = fit();
    assert_eq!(rec, again, "same candles and seed, same weights");
    let other = FoldTraining {
        seed: 4,
        ..t.clone()
    };
    let (_, reseeded) = train_models(
        "BTCUSDT",
        train,
        MINUTE,
        &other,
        &InputConfig::default(),
        Device::Cpu,
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(rec.cnn_digest, reseeded.cnn_digest);

    let single = run_with(&c, &core, 1);
    assert_eq!(single.decisions.len(), 300);
    assert_eq!(single.skipped_outputs, 0);
    assert_eq!(single, run_with(&c, &core, 1), "same input, same run");
    let batched = run_with(&c, &core, 64);
    let mut differ = 0;
    for (a, b) in single.decisions.iter().zip(&batched.decisions) {
        assert_eq!(a.time_ms, b.time_ms);
        assert!((a.confidence - b.confidence).abs() < 1e-4, "{a:?} vs {b:?}");
        if a.action != b.action {
            // Batched and single kernels may round differently; only a threshold tie flips.
            assert!((a.confidence - 0.45).abs() < 1e-4, "{a:?} vs {b:?}");
            differ += 1;
        }
    }
    if differ == 0 {
        assert_eq!(single.trades, batched.trades);
        assert_eq!(single.final_equity, batched.final_equity);
    }
}
