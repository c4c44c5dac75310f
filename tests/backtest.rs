//! The backtester on a recorded BTC perpetual (1m): deterministic, no lookahead, batched =
//! stepwise, walk-forward folds roll without overlap.

use mmtrader::analysis::analyze::{detect_interval, read_candles};
use mmtrader::market::types::{Candle, Price};
use mmtrader::orchestrator::backtest::{self, BacktestResult, BacktestSpec, TradingSetup};
use mmtrader::orchestrator::config::OrchestratorConfig;
use mmtrader::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};

fn candles(n: usize) -> Vec<Candle> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let mut c = read_candles(&path).unwrap().candles;
    c.truncate(n);
    c
}

fn experts() -> Vec<Box<dyn Expert>> {
    vec![
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig::default())),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "slow_momentum".into(),
            lookback: 60,
            min_candles: 80,
            ..PivotMomentumConfig::default()
        })),
    ]
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

fn run(candles: &[Candle], batch: usize) -> BacktestResult {
    let interval = detect_interval(candles);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles,
        interval_ms: interval,
        // The first decision at the close of candle 300; earlier candles warm up.
        from_ms: candles[300].open_time_ms + interval,
        to_ms: i64::MAX,
    };
    backtest::run(
        spec,
        &cfg(batch),
        &TradingSetup::default(),
        experts(),
        None,
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn same_input_same_trades_and_batching_changes_nothing() {
    let c = candles(1_500);
    let a = run(&c, 1);
    assert!(a.trades.len() >= 4, "{} trades", a.trades.len());
    assert_eq!(a.decisions.len(), 1_500 - 300);
    let b = run(&c, 1);
    assert_eq!(a, b);
    let batched = run(&c, 64);
    assert_eq!(a.trades, batched.trades);
    assert_eq!(a.decisions, batched.decisions);
    assert_eq!(a.final_equity, batched.final_equity);
    // Fees are paid on every fill, and the equity curve ends at the exact final equity.
    assert!(a.trades.iter().all(|t| t.fee.raw() > 0));
    assert!((a.equity.last().unwrap().1 - a.final_equity.to_f64()).abs() < 1e-6);
    let m = &a.metrics;
    assert!(m.max_drawdown >= 0.0 && m.max_drawdown < 1.0);
    assert!((0.0..=1.0).contains(&m.exposure));
    assert_eq!(m.trades, a.trades.len());
    // Buy and hold: one fill, always exposed, and its return follows the price.
    let bm = &a.benchmark_metrics;
    assert_eq!((bm.trades, bm.exposure), (1, 1.0));
    let price_ret = c.last().unwrap().close.to_f64() / c[300].close.to_f64() - 1.0;
    assert!(
        (bm.total_return - 0.95 * price_ret).abs() < 0.01,
        "{bm:?} vs {price_ret}"
    );
}

#[test]
fn changing_the_future_leaves_past_decisions_unchanged() {
    let c = candles(1_200);
    let base = run(&c, 1);
    let cut = c[900].open_time_ms;
    let mut changed = c.clone();
    for k in &mut changed[900..] {
        // A crash after the cut: every later price halves.
        let half = |p: Price| Price(p.raw() / 2);
        k.open = half(k.open);
        k.high = half(k.high);
        k.low = half(k.low);
        k.close = half(k.close);
    }
    let other = run(&changed, 1);
    let before = |r: &BacktestResult| {
        (
            r.decisions
                .iter()
                .filter(|d| d.time_ms <= cut)
                .cloned()
                .collect::<Vec<_>>(),
            r.trades
                .iter()
                .filter(|t| t.time_ms <= cut)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(before(&base), before(&other));
    assert_eq!(before(&base).0.len(), 900 - 300);
    assert_ne!(base.decisions, other.decisions, "the future did change");
}

#[test]
fn walk_forward_rolls_train_then_test_windows() {
    let c = candles(2_000);
    let interval = detect_interval(&c);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: &c,
        interval_ms: interval,
        from_ms: c[300].open_time_ms,
        to_ms: c[1_999].open_time_ms + interval,
    };
    let hour = 3_600_000;
    let folds = backtest::walk_forward(
        spec,
        &cfg(64),
        &TradingSetup::default(),
        &experts,
        6 * hour,
        3 * hour,
        &mut |_, _| {},
    )
    .unwrap()
    .folds;
    assert!(folds.len() >= 3, "{}", folds.len());
    for w in folds.windows(2) {
        assert_eq!(w[1].train.0, w[0].train.0 + 3 * hour);
        assert_eq!(w[0].test.1, w[1].test.0);
    }
    for f in &folds {
        assert_eq!(f.train.1, f.test.0);
        assert!(backtest::THRESHOLD_GRID.contains(&f.chosen.buy));
        assert!(f.test_result.first_ms > f.test.0 && f.test_result.last_ms <= f.test.1);
    }
    assert!(matches!(
        backtest::walk_forward(
            spec,
            &cfg(1),
            &TradingSetup::default(),
            &experts,
            0,
            hour,
            &mut |_, _| {}
        ),
        Err(backtest::BacktestError::Windows { .. })
    ));
}

#[test]
fn orders_pass_the_live_risk_manager() {
    use mmtrader::trading::money::Money;
    use mmtrader::trading::risk::RiskConfig;
    let c = candles(1_500);
    let interval = detect_interval(&c);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: &c,
        interval_ms: interval,
        from_ms: c[300].open_time_ms + interval,
        to_ms: i64::MAX,
    };
    let tight = TradingSetup {
        risk: RiskConfig {
            // One quote unit of BTC at most.
            max_position_notional: Money::from_units(1),
            ..RiskConfig::default()
        },
        ..TradingSetup::default()
    };
    let r = backtest::run(spec, &cfg(64), &tight, experts(), None, &mut |_, _| {}).unwrap();
    assert!(!r.trades.is_empty());
    for t in &r.trades {
        let held = t.position.to_f64().abs() * t.price.to_f64();
        // The limit is checked at the close; the fill pays the 2 bps slippage and the 1 bp
        // impact on top.
        assert!(held <= 1.0004, "{t:?}");
    }
    let normal = run(&c, 64);
    assert_eq!(normal.refusals, 0, "{:?}", normal.refusal_reasons);
    // Entries are sized by the risk manager from the stop distance, not all-in.
    let first = &normal.trades[0];
    let notional = first.price.to_f64() * first.qty.to_f64();
    assert!(notional < 0.9 * 10_000.0, "{notional}");
}

/// Records the candles each fold's `prepare` was handed.
struct Recorder(Vec<(usize, i64, i64, usize)>);

impl backtest::FoldExperts for Recorder {
    fn prepare(
        &mut self,
        fold: usize,
        train: &[Candle],
        interval_ms: i64,
    ) -> Result<Option<String>, String> {
        let first = train.first().map_or(0, |c| c.open_time_ms);
        let last_close = train.last().map_or(0, |c| c.open_time_ms + interval_ms);
        self.0.push((fold, first, last_close, train.len()));
        Ok(Some(format!("fold {fold}")))
    }

    fn experts(&mut self) -> Result<Vec<Box<dyn Expert>>, String> {
        Ok(experts())
    }
}

#[test]
fn fold_experts_see_only_their_train_window() {
    let c = candles(1_000);
    let interval = detect_interval(&c);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: &c,
        interval_ms: interval,
        from_ms: c[100].open_time_ms,
        to_ms: c[999].open_time_ms + interval,
    };
    let hour = 3_600_000;
    let mut rec = Recorder(Vec::new());
    let folds = backtest::walk_forward_with(
        spec,
        &cfg(64),
        &TradingSetup::default(),
        &mut rec,
        5 * hour,
        2 * hour,
        &mut |_, _| {},
    )
    .unwrap()
    .folds;
    assert_eq!(rec.0.len(), folds.len());
    for (f, &(k, first, last_close, n)) in folds.iter().zip(&rec.0) {
        assert_eq!(f.trained.as_deref(), Some(format!("fold {k}").as_str()));
        // Exactly the candles inside the train window: nothing of the test window.
        assert_eq!((first, last_close), f.train);
        assert_eq!(n as i64, 5 * hour / interval);
        assert!(last_close <= f.test.0);
    }
    // A failing fold names itself and its window.
    struct Failing;
    impl backtest::FoldExperts for Failing {
        fn prepare(&mut self, _: usize, _: &[Candle], _: i64) -> Result<Option<String>, String> {
            Err("too few rows".into())
        }
        fn experts(&mut self) -> Result<Vec<Box<dyn Expert>>, String> {
            Ok(experts())
        }
    }
    let err = backtest::walk_forward_with(
        spec,
        &cfg(64),
        &TradingSetup::default(),
        &mut Failing,
        5 * hour,
        2 * hour,
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("walk-forward fold 0 (train ")
            && err.to_string().ends_with("too few rows"),
        "{err}"
    );
}

/// Remembers the position it was told and, at each step, which position it held.
struct PositionSpy {
    direction: i8,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(i64, i8)>>>,
}

impl Expert for PositionSpy {
    fn name(&self) -> &str {
        "position_spy"
    }

    fn uses_last_predictions(&self) -> bool {
        false
    }

    fn infer(
        &mut self,
        input: &mmtrader::analysis::input::BaseDataInput,
        _: &mmtrader::orchestrator::expert::Upstream,
    ) -> Result<
        mmtrader::analysis::model_output::ModelOutput,
        mmtrader::orchestrator::expert::ExpertError,
    > {
        self.seen
            .lock()
            .unwrap()
            .push((input.timestamp_ms, self.direction));
        Err(mmtrader::orchestrator::expert::ExpertError::Model(
            "a spy has no opinion".into(),
        ))
    }

    fn observe_position(&mut self, symbol: &str, direction: i8) {
        assert_eq!(symbol, "BTCUSDT");
        self.direction = direction;
    }
}

#[test]
fn every_step_sees_the_position_the_earlier_fills_left() {
    let c = candles(1_000);
    let interval = detect_interval(&c);
    for batch in [1, 64] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut experts = experts();
        experts.push(Box::new(PositionSpy {
            direction: 0,
            seen: std::sync::Arc::clone(&seen),
        }));
        let r = backtest::run(
            BacktestSpec {
                symbol: "BTCUSDT",
                candles: &c,
                interval_ms: interval,
                from_ms: c[300].open_time_ms + interval,
                to_ms: i64::MAX,
            },
            &cfg(batch),
            &TradingSetup::default(),
            experts,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), r.decisions.len());
        assert!(r.trades.len() > 2, "{} trades", r.trades.len());
        for &(t, direction) in seen.iter() {
            let expected = r
                .trades
                .iter()
                .rev()
                .find(|tr| tr.time_ms < t)
                .map_or(0, |tr| tr.position.raw().signum() as i8);
            assert_eq!(direction, expected, "batch {batch}, step at {t}");
        }
        assert!(seen.iter().any(|&(_, d)| d != 0), "never saw a position");
    }
}
