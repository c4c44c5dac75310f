//! The orchestrator on real recorded candles: deadlines and failures never stall a step,
//! outputs feed the next input, live start/stop and thresholds, batched = stepwise.

use std::sync::Arc;
use std::time::Duration;

use mmtrader::analysis::analyze::read_candles;
use mmtrader::analysis::input::{BaseDataInput, InputConfig};
use mmtrader::analysis::model_output::{Action, ModelOutputStore};
use mmtrader::orchestrator::config::OrchestratorConfig;
use mmtrader::orchestrator::coordinator::{Coordinator, RunMode};
use mmtrader::orchestrator::decision::ThresholdHandle;
use mmtrader::orchestrator::engine::Engine;
use mmtrader::orchestrator::expert::{Delayed, Expert, PivotMomentumConfig, PivotMomentumExpert};
use mmtrader::orchestrator::history::HistoryFeed;
use mmtrader::orchestrator::{Orchestrator, runtime};

/// Inputs at each candle close of a recorded BTC perpetual, 1m (real data).
fn inputs(n: usize) -> Vec<BaseDataInput> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let candles = read_candles(&path).unwrap().candles;
    let mut feed = HistoryFeed::new("BTCUSDT", 60_000, InputConfig::default()).unwrap();
    let store = ModelOutputStore::default();
    candles
        .iter()
        .take(n)
        .map(|c| {
            let t = feed.push(c).unwrap();
            feed.input(&store, t)
        })
        .collect()
}

fn momentum(name: &str) -> PivotMomentumExpert {
    PivotMomentumExpert::new(PivotMomentumConfig {
        name: name.into(),
        ..PivotMomentumConfig::default()
    })
}

fn one_minute_cfg() -> OrchestratorConfig {
    OrchestratorConfig {
        trigger: mmtrader::orchestrator::config::TriggerConfig::Candle("1m".into()),
        horizon_secs: 300,
        ..OrchestratorConfig::default()
    }
}

#[test]
fn slow_and_failing_experts_are_skipped_and_flagged_without_stalling() {
    let inputs = inputs(80);
    let experts: Vec<Box<dyn Expert>> = vec![
        Box::new(momentum("fast")),
        Box::new(Delayed::new(momentum("slow"), Duration::from_millis(1_500))),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "starved".into(),
            min_candles: 10_000,
            ..PivotMomentumConfig::default()
        })),
    ];
    let mut c = Coordinator::new(
        experts,
        RunMode::Threads {
            deadline: Duration::from_millis(100),
        },
    )
    .unwrap();
    let first = c.step(Arc::new(inputs[60].clone()));
    let names: Vec<&str> = first
        .outputs
        .iter()
        .map(|o| o.model_name.as_str())
        .collect();
    assert_eq!(names, ["fast"]);
    let reasons: Vec<(&str, &str)> = first
        .skipped
        .iter()
        .map(|s| (s.model.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("slow", "no answer within 100 ms"),
            ("starved", "ohlcv_1m: need ≥10000 candles, got 61")
        ]
    );
    // Still working on the previous step: not handed this one, and the step does not wait.
    let second = c.step(Arc::new(inputs[61].clone()));
    assert_eq!(second.outputs.len(), 1);
    assert_eq!(second.skipped[0].reason, "still busy with an earlier step");
    // Once its late answer is in, it is free again (the stale answer is discarded).
    std::thread::sleep(Duration::from_millis(1_600));
    let third = c.step(Arc::new(inputs[62].clone()));
    assert!(
        third
            .skipped
            .iter()
            .any(|s| s.model == "slow" && s.reason == "no answer within 100 ms")
    );
}

#[test]
fn each_step_sees_the_previous_outputs_and_decisions_carry_reasons() {
    let inputs = inputs(200);
    let th = ThresholdHandle::new(0.4, 0.4).unwrap();
    let experts: Vec<Box<dyn Expert>> = vec![Box::new(momentum("a")), Box::new(momentum("b"))];
    let mut e = Engine::new(one_minute_cfg(), experts, RunMode::Inline, th.clone()).unwrap();
    let mut prev_t = None;
    let mut acted = 0;
    let mut scored = 0;
    for input in inputs.into_iter().skip(40) {
        let r = e.step_if_due(input).expect("a new minute each time");
        if let Some(t) = prev_t {
            let last = &r.input.last_predictions;
            assert_eq!(last.len(), 2);
            assert!(last.values().all(|o| o.timestamp_ms == t));
        }
        prev_t = Some(r.input.timestamp_ms);
        let d = &r.decision;
        assert_eq!(d.votes.len(), 2);
        assert_eq!(d.thresholds.buy, 0.4);
        assert!(!d.reason.is_empty());
        if d.action != Action::Hold {
            acted += 1;
            assert!(d.confidence >= 0.4, "{d:?}");
        }
        scored += r.feedback.len();
    }
    assert!(acted > 0, "a momentum expert acts at least once in a day");
    assert!(scored > 100, "{scored}");
    let snap = e.snapshot(true);
    assert_eq!(snap.experts.len(), 2);
    assert!(
        snap.experts
            .iter()
            .all(|x| x.scored > 0 && !x.accuracy_history.is_empty())
    );
    assert_eq!(
        e.store().range("BTCUSDT", "a", i64::MIN, i64::MAX).len(),
        160
    );
}

#[test]
fn batched_steps_equal_stepwise_steps() {
    let inputs = inputs(160);
    let run = |batched: bool| {
        let th = ThresholdHandle::new(0.4, 0.4).unwrap();
        let experts: Vec<Box<dyn Expert>> = vec![Box::new(momentum("a")), Box::new(momentum("b"))];
        let mut e = Engine::new(one_minute_cfg(), experts, RunMode::Inline, th).unwrap();
        let rest: Vec<BaseDataInput> = inputs[40..].to_vec();
        let reports = if batched {
            rest.chunks(16)
                .flat_map(|c| e.step_batch(c.to_vec()))
                .collect::<Vec<_>>()
        } else {
            rest.into_iter().map(|i| e.step(i)).collect()
        };
        reports.into_iter().map(|r| r.decision).collect::<Vec<_>>()
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn live_orchestrator_starts_stops_and_takes_new_thresholds() {
    let inputs = inputs(120);
    let experts: Vec<Box<dyn Expert>> = vec![Box::new(momentum("a"))];
    let (o, decisions): (Orchestrator, _) =
        runtime::Orchestrator::spawn(one_minute_cfg(), experts).unwrap();
    assert!(o.is_running());
    o.submit(inputs[60].clone());
    let d = decisions.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(d.time_ms, inputs[60].timestamp_ms);
    o.stop();
    assert!(!o.is_running());
    o.submit(inputs[61].clone());
    assert!(decisions.recv_timeout(Duration::from_millis(300)).is_err());
    o.set_thresholds(0.9, 0.8).unwrap();
    o.start();
    // The input kept while stopped is used once inference is on again.
    let d = decisions.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(d.time_ms, inputs[61].timestamp_ms);
    assert_eq!((d.thresholds.buy, d.thresholds.sell), (0.9, 0.8));
    // Only the freshest of several queued inputs is stepped.
    for i in &inputs[62..70] {
        o.submit(i.clone());
    }
    let d = decisions.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(d.time_ms > inputs[61].timestamp_ms);
    let snap = o.snapshot();
    assert!(snap.running);
    assert_eq!(snap.thresholds.unwrap().buy, 0.9);
    assert!(o.set_thresholds(f64::NAN, 0.5).is_err());
}
