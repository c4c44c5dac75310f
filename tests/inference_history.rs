//! Inference history on real recorded candles: a live orchestrator's steps written by the
//! history writer come back by symbol and time range exactly as they were (inputs, outputs
//! with hidden states, decisions, prediction–outcome pairs); retention by age and size; a full
//! queue drops and counts instead of stalling the loop; a killed writer keeps what it committed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mmtrader::analysis::analyze::read_candles;
use mmtrader::analysis::input::{BaseDataInput, InputConfig};
use mmtrader::analysis::model_output::ModelOutputStore;
use mmtrader::orchestrator::config::{OrchestratorConfig, TriggerConfig};
use mmtrader::orchestrator::coordinator::RunMode;
use mmtrader::orchestrator::decision::ThresholdHandle;
use mmtrader::orchestrator::engine::{Engine, HistorySink, StepReport};
use mmtrader::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use mmtrader::orchestrator::history::HistoryFeed;
use mmtrader::orchestrator::runtime::Orchestrator;
use mmtrader::storage::HistoryConfig;
use mmtrader::storage::history::HistoryWriter;
use mmtrader::storage::retention::apply_history;
use mmtrader::storage::state::{STATE_FILE, StateDb};

const SYMBOL: &str = "BTCUSDT";
const KILL_CHILD_ENV: &str = "MMTRADER_HISTORY_KILL_CHILD";

/// Inputs at each candle close of a recorded BTC perpetual, 1m (real data), from the first
/// one with enough candles for the experts.
fn inputs(n: usize) -> Vec<BaseDataInput> {
    let path = mmtrader::testdata::require("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
    let candles = read_candles(&path).unwrap().candles;
    let mut feed = HistoryFeed::new(SYMBOL, 60_000, InputConfig::default()).unwrap();
    let store = ModelOutputStore::default();
    candles
        .iter()
        .take(60 + n)
        .map(|c| {
            let t = feed.push(c).unwrap();
            feed.input(&store, t)
        })
        .skip(60)
        .collect()
}

fn experts() -> Vec<Box<dyn Expert>> {
    vec![
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "fast".into(),
            ..PivotMomentumConfig::default()
        })),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "slow".into(),
            lookback: 40,
            min_candles: 50,
            ..PivotMomentumConfig::default()
        })),
        // Never has enough candles: a skipped expert in every step.
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "starved".into(),
            min_candles: 100_000,
            ..PivotMomentumConfig::default()
        })),
    ]
}

/// Steps every minute, scores after three minutes (so pairs appear within a short run).
fn cfg() -> OrchestratorConfig {
    OrchestratorConfig {
        trigger: TriggerConfig::Candle("1m".into()),
        horizon_secs: 180,
        ..OrchestratorConfig::default()
    }
}

fn history_cfg() -> HistoryConfig {
    HistoryConfig {
        max_age_days: 0,
        max_size_mb: 0,
        flush_ms: 20,
        ..HistoryConfig::default()
    }
}

/// Runs an inline engine over `inputs`, returning what each step reported.
fn engine_reports(inputs: &[BaseDataInput]) -> Vec<StepReport> {
    let thresholds = ThresholdHandle::new(0.6, 0.6).unwrap();
    let mut engine = Engine::new(cfg(), experts(), RunMode::Inline, thresholds).unwrap();
    inputs.iter().map(|i| engine.step(i.clone())).collect()
}

#[test]
fn live_steps_come_back_by_symbol_and_time_range() {
    let inputs = inputs(40);
    let dir = tempfile::tempdir().unwrap();
    let (writer, sink) = HistoryWriter::spawn(dir.path(), &history_cfg()).unwrap();
    let (o, decisions) = Orchestrator::spawn(cfg(), experts()).unwrap();
    o.add_history(sink);
    let mut decided = Vec::new();
    for i in &inputs {
        o.submit(i.clone());
        decided.push(decisions.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    assert_eq!(o.snapshot().history_dropped, 0);
    drop(o);
    let stats = writer.finish();
    assert_eq!(stats.steps, inputs.len() as u64);
    assert_eq!(stats.dropped, 0);
    assert!(stats.pairs > 0, "{stats:?}");
    assert_eq!(stats.last_error, None);

    // The same steps through an engine here: the history must hold exactly what it reported.
    let expected = engine_reports(&inputs);
    let db = StateDb::open(dir.path()).unwrap();
    let all = db.history_steps(SYMBOL, i64::MIN, i64::MAX).unwrap();
    assert!(all.undecodable.is_empty(), "{:?}", all.undecodable);
    assert_eq!(all.rows.len(), expected.len());
    for ((got, want), decision) in all.rows.iter().zip(&expected).zip(&decided) {
        assert_eq!(got.input, *want.input);
        assert_eq!(got.outputs, want.outputs);
        assert_eq!(got.decision, *decision);
        assert_eq!(got.decision.skipped.len(), 1);
        assert_eq!(got.decision.skipped[0].model, "starved");
        assert!(got.outputs.iter().all(|o| !o.hidden_states.is_empty()));
    }

    // A time range is half-open and picks the steps inside it.
    let (from, to) = (inputs[10].timestamp_ms, inputs[20].timestamp_ms);
    let range = db.history_steps(SYMBOL, from, to).unwrap().rows;
    let times: Vec<i64> = range.iter().map(|s| s.input.timestamp_ms).collect();
    let want: Vec<i64> = inputs[10..20].iter().map(|i| i.timestamp_ms).collect();
    assert_eq!(times, want);
    assert!(
        db.history_steps("ETHUSDT", i64::MIN, i64::MAX)
            .unwrap()
            .rows
            .is_empty()
    );

    // Outputs by model, with hidden states, as the engine produced them.
    let slow = db.history_outputs(SYMBOL, Some("slow"), from, to).unwrap();
    let want_slow: Vec<_> = expected[10..20]
        .iter()
        .flat_map(|r| r.outputs.iter().filter(|o| o.model_name == "slow").cloned())
        .collect();
    assert!(!want_slow.is_empty());
    assert_eq!(slow.rows, want_slow);

    // Every prediction–outcome pair, queryable by model.
    let want_pairs: Vec<_> = expected.iter().flat_map(|r| r.feedback.clone()).collect();
    let pairs = db
        .history_feedback(SYMBOL, None, i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(pairs.rows.len(), want_pairs.len());
    for w in &want_pairs {
        assert!(pairs.rows.iter().any(|r| r.feedback == *w), "{w:?} missing");
    }
    let fast = db
        .history_feedback(SYMBOL, Some("fast"), i64::MIN, i64::MAX)
        .unwrap();
    assert!(!fast.rows.is_empty());
    assert!(fast.rows.iter().all(|r| r.model_name == "fast"
        && r.feedback.prediction.model_name == "fast"
        && r.scored_ms == r.feedback.scored_at_ms
        && (r.kind != "action" || r.scored_ms - r.time_ms >= 180_000)));
    drop(db);

    // `mmtrader history` prints the same rows.
    let history = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mmtrader"))
            .args(["history", "--store", dir.path().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let (from, to) = (from.to_string(), to.to_string());
    let steps = history(&["--symbol", SYMBOL, "--from", &from, "--to", &to]);
    assert_eq!(steps.lines().count(), 10, "{steps}");
    assert!(
        steps.lines().all(|l| l.contains("skipped [starved:")),
        "{steps}"
    );
    let outs = history(&["--symbol", SYMBOL, "--show", "outputs", "--model", "slow"]);
    assert_eq!(outs.lines().count(), want_slow_all(&expected), "{outs}");
    let pairs = history(&["--symbol", SYMBOL, "--show", "feedback"]);
    assert_eq!(pairs.lines().count(), want_pairs.len(), "{pairs}");
}

fn want_slow_all(reports: &[StepReport]) -> usize {
    reports
        .iter()
        .flat_map(|r| &r.outputs)
        .filter(|o| o.model_name == "slow")
        .count()
}

#[test]
fn a_full_queue_drops_and_counts_without_stalling_the_loop() {
    let inputs = inputs(12);
    let (sink, rx) = HistorySink::bounded(2);
    let (o, decisions) = Orchestrator::spawn(cfg(), experts()).unwrap();
    o.add_history(sink);
    // Nobody reads `rx`: every step past the first two must still decide.
    for i in &inputs {
        o.submit(i.clone());
        decisions.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    // The snapshot is published after the decision is sent: wait for the last one.
    let want = inputs.len() as u64 - 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while o.snapshot().history_dropped < want && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(o.snapshot().history_dropped, want);
    assert_eq!(rx.try_iter().count(), 2);
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(STATE_FILE)).unwrap().len()
}

#[test]
fn retention_by_age_and_by_size() {
    let inputs = inputs(90);
    let reports = engine_reports(&inputs);
    let dir = tempfile::tempdir().unwrap();
    let mut db = StateDb::open(dir.path()).unwrap();
    for chunk in reports.chunks(16) {
        db.insert_steps(chunk).unwrap();
    }
    let (steps, outputs, pairs) = db.history_counts().unwrap();
    assert_eq!(steps, 90);
    assert!(outputs > 0 && pairs > 0);

    // By age: only the last 30 minutes before the newest step stay.
    let now = inputs[89].timestamp_ms;
    let r = apply_history(&db, Some(30 * 60_000), None, now).unwrap();
    assert!(r.rows_deleted > 0);
    let left = db.history_steps(SYMBOL, i64::MIN, i64::MAX).unwrap().rows;
    let times: Vec<i64> = left.iter().map(|s| s.input.timestamp_ms).collect();
    let want: Vec<i64> = inputs
        .iter()
        .map(|i| i.timestamp_ms)
        .filter(|t| *t >= now - 30 * 60_000)
        .collect();
    assert_eq!(times, want);
    let old_outputs = db
        .history_outputs(SYMBOL, None, i64::MIN, now - 30 * 60_000)
        .unwrap();
    assert!(old_outputs.rows.is_empty());
    let old_pairs = db
        .history_feedback(SYMBOL, None, i64::MIN, now - 30 * 60_000)
        .unwrap();
    assert!(old_pairs.rows.is_empty());

    // By size: write everything again, then cap below what it takes; the file shrinks under
    // the cap and the newest steps are the ones kept.
    for chunk in reports.chunks(16) {
        db.insert_steps(chunk).unwrap();
    }
    db.reclaim().unwrap();
    let full = file_bytes(dir.path());
    let cap = full / 3;
    let r = apply_history(&db, None, Some(cap), now).unwrap();
    assert!(
        r.rows_deleted > 0 && r.bytes_after <= cap,
        "{r:?} cap {cap}"
    );
    let on_disk = file_bytes(dir.path());
    assert!(
        on_disk <= cap,
        "file {on_disk} bytes over the cap {cap} (was {full})"
    );
    let kept = db.history_steps(SYMBOL, i64::MIN, i64::MAX).unwrap().rows;
    assert!(!kept.is_empty());
    assert_eq!(
        kept.last().unwrap().input.timestamp_ms,
        inputs[89].timestamp_ms
    );
    let oldest_kept = kept[0].input.timestamp_ms;
    assert!(oldest_kept > inputs[0].timestamp_ms);
    // Nothing older than the oldest kept step survives in any table.
    assert!(
        db.history_outputs(SYMBOL, None, i64::MIN, oldest_kept)
            .unwrap()
            .rows
            .is_empty()
    );
    // Under the cap again: nothing more goes.
    let again = apply_history(&db, None, Some(cap), now).unwrap();
    assert_eq!(again.rows_deleted, 0);
}

#[test]
fn writer_applies_retention_from_config() {
    let inputs = inputs(20);
    let dir = tempfile::tempdir().unwrap();
    // Recorded candles are years old: a 1-day age limit against the wall clock removes all.
    let aged = HistoryConfig {
        max_age_days: 1,
        retention_secs: 1,
        ..history_cfg()
    };
    let (writer, sink) = HistoryWriter::spawn(dir.path(), &aged).unwrap();
    let mut engine = Engine::new(
        cfg(),
        experts(),
        RunMode::Inline,
        ThresholdHandle::new(0.6, 0.6).unwrap(),
    )
    .unwrap();
    engine.set_history(sink);
    for i in &inputs {
        engine.step(i.clone());
    }
    // Committed first, then aged out by a later retention pass (read beside the writer: WAL);
    // the engine stays, as the writer stops once its sink is gone.
    let db = StateDb::open(dir.path()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (writer.stats().steps < 20 || db.history_counts().unwrap() != (0, 0, 0))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(engine);
    let stats = writer.finish();
    assert_eq!(stats.steps, 20);
    assert!(stats.rows_deleted >= 20, "{stats:?}");
    assert_eq!(db.history_counts().unwrap(), (0, 0, 0));
}

/// The killed process: writes steps forever, publishing how many are committed.
fn run_kill_child(dir: &Path) {
    let inputs = inputs(60);
    let (writer, sink) = HistoryWriter::spawn(dir, &history_cfg()).unwrap();
    let thresholds = ThresholdHandle::new(0.6, 0.6).unwrap();
    let mut engine = Engine::new(cfg(), experts(), RunMode::Inline, thresholds).unwrap();
    engine.set_history(sink);
    for i in &inputs {
        engine.step(i.clone());
        let committed = writer.stats().steps;
        let tmp = dir.join("progress.tmp");
        std::fs::write(&tmp, committed.to_string()).unwrap();
        std::fs::rename(&tmp, dir.join("progress")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Wait to be killed with everything written.
    std::thread::sleep(Duration::from_secs(60));
    drop(writer);
}

#[test]
fn a_killed_writer_keeps_what_it_committed() {
    if let Some(dir) = std::env::var_os(KILL_CHILD_ENV) {
        run_kill_child(Path::new(&dir));
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args(["--exact", "a_killed_writer_keeps_what_it_committed"])
        .env(KILL_CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progress = || {
        std::fs::read_to_string(dir.path().join("progress"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while progress() < 10 && std::time::Instant::now() < deadline {
        assert!(child.try_wait().unwrap().is_none(), "child ended early");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = progress();
    assert!(committed >= 10, "child committed only {committed} steps");

    // Reopened after the kill: at least what it had committed, all decodable, in order.
    let inputs = inputs(60);
    let expected = engine_reports(&inputs);
    let db = StateDb::open(dir.path()).unwrap();
    let kept = db.history_steps(SYMBOL, i64::MIN, i64::MAX).unwrap();
    assert!(kept.undecodable.is_empty(), "{:?}", kept.undecodable);
    let n = kept.rows.len();
    assert!(n as u64 >= committed, "{n} rows, {committed} committed");
    for (got, want) in kept.rows.iter().zip(&expected) {
        assert_eq!(got.input, *want.input);
        assert_eq!(got.outputs, want.outputs);
    }
    drop(db);

    // A restarted writer appends after them.
    let (writer, sink) = HistoryWriter::spawn(dir.path(), &history_cfg()).unwrap();
    sink.offer(expected[0].clone());
    drop(sink);
    assert_eq!(writer.finish().steps, 1);
    let db = StateDb::open(dir.path()).unwrap();
    assert_eq!(db.history_counts().unwrap().0, n as u64 + 1);
}
