//! The CNN and the DQN as experts on recorded candles: the DQN runs after the CNN of the same
//! step, batches give the one-by-one outputs, and live validation refuses history inputs.

use std::sync::Arc;

use mmtrader::analysis::analyze::read_candles;
use mmtrader::analysis::input::{BaseDataInput, InputConfig};
use mmtrader::analysis::model_output::ModelOutputStore;
use mmtrader::market::types::Timeframe;
use mmtrader::models::cnn::CnnConfig;
use mmtrader::models::input::InputShape;
use mmtrader::models::runtime::InferenceCore;
use mmtrader::orchestrator::coordinator::{Coordinator, RunMode};
use mmtrader::orchestrator::expert::Expert;
use mmtrader::orchestrator::history::HistoryFeed;
use mmtrader::orchestrator::models::model_experts;

fn inputs(n: usize) -> Vec<BaseDataInput> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let candles = read_candles(&path).unwrap().candles;
    let mut feed = HistoryFeed::new("BTCUSDT", 60_000, InputConfig::default()).unwrap();
    let store = ModelOutputStore::default();
    candles[..n]
        .iter()
        .map(|c| {
            let t = feed.push(c).unwrap();
            feed.input(&store, t)
        })
        .collect()
}

/// libtorch's random generator is process-wide and these tests run in parallel: seeding and
/// drawing the fresh weights take turns, or two coordinators meant to be identical would draw
/// from each other's sequence.
static TORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn coordinator(validate: bool) -> Coordinator {
    let _turn = TORCH.lock().unwrap_or_else(|p| p.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(7);
    let core = InferenceCore::fresh(
        CnnConfig {
            timeframe: Timeframe::M1,
            ..CnnConfig::small(InputShape::encoded(64))
        },
        tch::Device::Cpu,
        ("pivot_cnn".into(), "dqn_agent".into()),
        InputConfig::default(),
    )
    .unwrap();
    let (cnn, dqn) = model_experts(core, InputConfig::default(), validate, false);
    // Registered DQN first: the dependency, not the order, decides who runs first.
    let experts: Vec<Box<dyn Expert>> = vec![Box::new(dqn), Box::new(cnn)];
    Coordinator::new(experts, RunMode::Inline).unwrap()
}

#[test]
fn dqn_runs_on_the_same_steps_cnn_and_batches_match() {
    let inputs: Vec<Arc<BaseDataInput>> = inputs(420).into_iter().skip(400).map(Arc::new).collect();
    let mut c = coordinator(false);
    assert_eq!(c.stages(), &[vec![1], vec![0]]);
    assert!(!c.needs_sequential_steps());
    let single: Vec<_> = inputs.iter().map(|i| c.step(Arc::clone(i))).collect();
    for s in &single {
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        let names: Vec<&str> = s.outputs.iter().map(|o| o.model_name.as_str()).collect();
        assert_eq!(names, ["dqn_agent", "pivot_cnn"]);
        let dqn = &s.outputs[0];
        assert!(dqn.predictions.q_values.is_some());
        assert_eq!(dqn.timestamp_ms, s.outputs[1].timestamp_ms);
        assert!(!s.outputs[1].predictions.pivots.is_empty());
    }
    let batched = coordinator(false).step_batch(&inputs);
    for (a, b) in single.iter().zip(&batched) {
        for (x, y) in a.outputs.iter().zip(&b.outputs) {
            let (p, q) = (x.predictions.probabilities, y.predictions.probabilities);
            // Fresh weights give near-equal probabilities, where batched and single kernels may
            // round an argmax either way; a different action is only right on such a tie.
            let (a, b) = (x.predictions.action, y.predictions.action);
            assert!(
                a == b || (p.of(a) - p.of(b)).abs() < 1e-5,
                "{a:?} vs {b:?}: {p:?} vs {q:?}"
            );
            for (u, v) in p.as_array().iter().zip(q.as_array()) {
                assert!((u - v).abs() < 1e-5, "{p:?} vs {q:?}");
            }
        }
    }
}

#[test]
fn live_validation_refuses_history_inputs_and_the_dqn_is_skipped_with_it() {
    let inputs = inputs(320);
    let mut c = coordinator(true);
    let s = c.step(Arc::new(inputs[319].clone()));
    assert!(s.outputs.is_empty());
    assert_eq!(s.skipped.len(), 2);
    assert_eq!(s.skipped[0].model, "dqn_agent");
    assert_eq!(s.skipped[0].reason, "missing same-step output of pivot_cnn");
    assert!(
        s.skipped[1].reason.contains("cob: missing"),
        "{}",
        s.skipped[1].reason
    );
}

#[test]
fn the_dqn_sees_the_observed_position_and_prefetching_keeps_every_output() {
    let inputs: Vec<Arc<BaseDataInput>> = inputs(410).into_iter().skip(400).map(Arc::new).collect();
    let q = |s: &mmtrader::orchestrator::coordinator::StepOutputs| {
        let dqn = s
            .outputs
            .iter()
            .find(|o| o.model_name == "dqn_agent")
            .unwrap();
        dqn.predictions.q_values.unwrap().as_array()
    };
    let mut c = coordinator(false);
    let flat = q(&c.step(Arc::clone(&inputs[0])));
    c.observe_position("BTCUSDT", 1);
    let long = q(&c.step(Arc::clone(&inputs[0])));
    c.observe_position("BTCUSDT", -1);
    let short = q(&c.step(Arc::clone(&inputs[0])));
    c.observe_position("ETHUSDT", 1);
    assert_eq!(
        short,
        q(&c.step(Arc::clone(&inputs[0]))),
        "another symbol's position"
    );
    c.observe_position("BTCUSDT", 0);
    assert_eq!(flat, q(&c.step(Arc::clone(&inputs[0]))));
    assert!(
        long != flat && short != flat && long != short,
        "{flat:?} {long:?} {short:?}"
    );

    // A batch prefetched ahead, then stepped with the position changing between steps, gives
    // the outputs of plain single steps under the same positions.
    let positions = [0i8, 1, 1, -1, 0, 1, -1, -1, 0, 1];
    let mut plain = coordinator(false);
    let mut ahead = coordinator(false);
    let refs: Vec<&BaseDataInput> = inputs.iter().map(|i| i.as_ref()).collect();
    ahead.prefetch(&refs);
    for (input, &p) in inputs.iter().zip(&positions) {
        plain.observe_position("BTCUSDT", p);
        ahead.observe_position("BTCUSDT", p);
        let (a, b) = (plain.step(Arc::clone(input)), ahead.step(Arc::clone(input)));
        assert_eq!(a.outputs.len(), 2);
        for (x, y) in q(&a).iter().zip(q(&b)) {
            assert!((x - y).abs() < 1e-5, "{:?} vs {:?}", q(&a), q(&b));
        }
    }
}
