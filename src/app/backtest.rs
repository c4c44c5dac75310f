//! `mmtrader backtest`: candle files through the orchestrator, with progress on stderr (a bar
//! on a terminal, a line at least every [`PROGRESS_EVERY`] elsewhere), a printed summary
//! beside buy-and-hold and flat, and `equity.png` + `report.html` (+ `trades.csv`,
//! `models.json`) in the output folder.
//!
//! **Models.** The CNN and the DQN run from their best checkpoints (the ones the desk loads).
//! Fresh weights are refused unless `--allow-fresh`: a backtest of random weights measures
//! noise. Walk-forward does not use the checkpoints (they may have been trained on the test
//! windows): each fold trains fresh models on its train window only, and the reports show
//! the folds' test windows compounded into one out-of-sample result, nothing else.
//!
//! **Determinism.** libtorch runs single-threaded and seeded, so the same input gives the same
//! trades.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::analysis::analyze::{detect_interval, parse_time, read_candles};
use crate::analysis::input::InputConfig;
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::market::types::Candle;
use crate::models::checkpoint::{CheckpointMeta, SkippedCheckpoint};
use crate::models::device::device_from_config;
use crate::models::runtime::{CheckpointInUse, InferenceCore};
use crate::models::split::{TimeRange, lineage_line, refuse_in_sample};
use crate::orchestrator::backtest::{
    self, BacktestResult, BacktestSpec, DEFAULT_IMPACT_BPS, Fold, TradingSetup, duration_text,
};
use crate::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use crate::orchestrator::models::{
    FoldModels, FoldTraining, InvalidLog, InvalidSteps, ModelFolds, model_experts,
};
use crate::orchestrator::report;

/// Which experts a backtest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpertSet {
    /// The CNN and the DQN only.
    Models,
    /// The rule-based experts only.
    Rules,
    /// The models and the rule-based experts.
    All,
}

impl ExpertSet {
    fn models(self) -> bool {
        self != Self::Rules
    }

    fn rules(self) -> bool {
        self != Self::Models
    }
}

/// `mmtrader backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Candle files (any layout `mmtrader analyze` reads); several are merged in time order.
    #[arg(long = "data", value_name = "FILE", required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// First decision time (epoch s/ms or ISO-8601); earlier candles only warm up.
    #[arg(long)]
    pub from: Option<String>,
    /// Last decision time (epoch s/ms or ISO-8601).
    #[arg(long)]
    pub to: Option<String>,
    /// Symbol the candles are of.
    #[arg(long, default_value = "BTCUSDT")]
    pub symbol: String,
    /// Walk-forward windows, e.g. `7d:1d` (units s, m, h, d).
    #[arg(long = "walk-forward", value_name = "TRAIN:TEST")]
    pub walk_forward: Option<String>,
    /// Output folder for the chart and the reports.
    #[arg(long, default_value = "backtest-report")]
    pub out: PathBuf,
    /// Experts to run: the CNN and DQN checkpoints, the rule experts, or both.
    #[arg(long, value_enum, default_value_t = ExpertSet::All)]
    pub experts: ExpertSet,
    /// Run models without a checkpoint on fresh random weights (misleading: their decisions
    /// are noise).
    #[arg(long)]
    pub allow_fresh: bool,
    /// Backtest checkpoints on candles they were trained on: refused without this; with it
    /// every number of the report is marked in-sample.
    #[arg(long)]
    pub allow_in_sample: bool,
    /// Checkpoint folder (default: `[models] checkpoint_dir`).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
    /// Torch device: `cpu` (deterministic), `auto` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of libtorch and of walk-forward training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Walk-forward: maximum CNN epochs per fold.
    #[arg(long, default_value_t = 3)]
    pub train_epochs: usize,
    /// Walk-forward: DQN episodes per fold.
    #[arg(long, default_value_t = 8)]
    pub train_episodes: usize,
    /// Walk-forward: steps per DQN episode.
    #[arg(long, default_value_t = 256)]
    pub episode_len: usize,
    /// Walk-forward: CNN input window in candles (default: `[models] window`).
    #[arg(long)]
    pub window: Option<usize>,
    /// Market impact every fill pays on top of the fee and the slippage
    /// (`[orchestrator.backtest] slippage_bps`), basis points.
    #[arg(long, value_name = "BPS", default_value_t = DEFAULT_IMPACT_BPS)]
    pub impact_bps: u32,
    /// Lift a drawdown halt this long after it starts, e.g. `2d` (units s, m, h, d); by
    /// default it stays to the end of the run. A daily-loss halt always ends at the next UTC
    /// day.
    #[arg(long, value_name = "DURATION")]
    pub resume_after: Option<String>,
}

/// Longest silence of the progress lines off a terminal.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// One progress line: `what: unit done/total (percent), elapsed, ETA; message`.
pub fn progress_line(
    label: &str,
    unit: &str,
    (done, total): (usize, usize),
    message: &str,
    elapsed: Duration,
) -> String {
    let clock = |d: Duration| {
        let s = d.as_secs();
        match s {
            0..60 => format!("{s}s"),
            60..3_600 => format!("{}m{:02}s", s / 60, s % 60),
            _ => format!("{}h{:02}m", s / 3_600, s / 60 % 60),
        }
    };
    let pct = if total > 0 {
        100.0 * done as f64 / total as f64
    } else {
        0.0
    };
    let eta = if done >= total && total > 0 {
        "done".to_string()
    } else if done > 0 {
        let left = elapsed.as_secs_f64() * (total.saturating_sub(done)) as f64 / done as f64;
        format!("ETA {}", clock(Duration::from_secs_f64(left)))
    } else {
        "ETA unknown".to_string()
    };
    let mut line = format!(
        "{label}: {unit} {done}/{total} ({pct:.1}%), elapsed {}, {eta}",
        clock(elapsed)
    );
    if !message.is_empty() {
        line.push_str("; ");
        line.push_str(message);
    }
    line
}

struct ProgressState {
    label: String,
    unit: &'static str,
    done: usize,
    total: usize,
    message: String,
    start: Instant,
    out: Box<dyn Write + Send>,
    /// Lines go out (off a terminal); the first one waits for the first count.
    lines: bool,
    printed: bool,
}

impl ProgressState {
    fn print(&mut self) {
        self.printed = true;
        let line = progress_line(
            &self.label,
            self.unit,
            (self.done, self.total),
            &self.message,
            self.start.elapsed(),
        );
        // Progress is best effort: a closed stderr must not fail the run.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

/// Progress of a long run on stderr: the bar on a terminal; elsewhere (piped, in the
/// background, into a log) a line when it starts, then at least every `every` whether or not
/// a step finished (a fold's training can take minutes), and one when it ends.
pub struct Progress {
    state: Arc<Mutex<ProgressState>>,
    bar: Option<ProgressBar>,
    stop: Option<mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Progress of `label` counted in `unit`s, on stderr.
    pub fn new(label: &str, unit: &'static str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(1);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:40}}] {{pos}}/{{len}} {unit}s ({{eta}}) {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(label.to_string());
            let mut p = Self::lines(label, unit, Box::new(std::io::sink()), None);
            p.bar = Some(bar);
            p
        } else {
            Self::lines(
                label,
                unit,
                Box::new(std::io::stderr()),
                Some(PROGRESS_EVERY),
            )
        }
    }

    /// Progress as lines into `out`: the first at the first count, then one at least every
    /// `every` (`None`: no lines).
    pub fn lines(
        label: &str,
        unit: &'static str,
        out: Box<dyn Write + Send>,
        every: Option<Duration>,
    ) -> Self {
        let state = Arc::new(Mutex::new(ProgressState {
            label: label.to_string(),
            unit,
            done: 0,
            total: 0,
            message: String::new(),
            start: Instant::now(),
            out,
            lines: every.is_some(),
            printed: false,
        }));
        let (stop, ticker) = match every {
            None => (None, None),
            Some(every) => {
                let (tx, rx) = mpsc::channel::<()>();
                let shared = Arc::clone(&state);
                let ticker = std::thread::spawn(move || {
                    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                        lock(&shared).print();
                    }
                });
                (Some(tx), Some(ticker))
            }
        };
        Self {
            state,
            bar: None,
            stop,
            ticker,
        }
    }

    /// `done` of `total` units finished.
    pub fn set(&self, done: usize, total: usize) {
        {
            let mut s = lock(&self.state);
            (s.done, s.total) = (done, total);
            if s.lines && !s.printed {
                s.print();
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    /// What is being done now (e.g. a fold's training epoch).
    pub fn message(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        lock(&self.state).message = message;
    }

    /// Ends the progress: the last line off a terminal, the bar cleared on one.
    pub fn finish(mut self) {
        self.stop_ticker();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else {
            let mut s = lock(&self.state);
            if s.lines {
                s.message.clear();
                s.print();
            }
        }
    }

    fn stop_ticker(&mut self) {
        self.stop.take();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

/// The progress state, also after a panic elsewhere (it holds nothing a panic can break).
fn lock(state: &Mutex<ProgressState>) -> std::sync::MutexGuard<'_, ProgressState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The models a run used, as `models.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsUsed {
    /// Expert selection.
    pub experts: ExpertSet,
    /// CNN checkpoint of the run (`fresh`, or `none` when no checkpoint is used: rules only,
    /// or walk-forward).
    pub cnn: String,
    /// DQN checkpoint of the run (`fresh` or `none`, as for the CNN).
    pub dqn: String,
    /// What each walk-forward fold trained.
    pub folds: Vec<FoldModels>,
    /// Model inputs refused by validation (whole-range run and folds), with the first reasons.
    pub invalid_steps: InvalidSteps,
    /// The checkpoints were trained on part of the tested range (`--allow-in-sample`): every
    /// number is in-sample.
    pub in_sample: bool,
    /// Each checkpoint's training range and lineage.
    pub lineage: Vec<String>,
}

/// A duration like `90m`, `12h`, `7d`, in ms.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|v| *v > 0)
}

/// The rule-based baselines.
fn rule_experts() -> Vec<Box<dyn Expert>> {
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

fn no_experts() -> Vec<Box<dyn Expert>> {
    Vec::new()
}

fn checkpoint_name(ck: &Option<CheckpointInUse>) -> String {
    ck.as_ref()
        .map_or_else(|| "fresh".to_string(), |c| c.name.clone())
}

/// Why a backtest cannot use its models: which have no usable checkpoint, what the user can
/// do, and every checkpoint that was there but passed over (another input layout, ...).
pub fn missing_checkpoint_message(
    missing: &[&str],
    dir: &std::path::Path,
    skipped: &[SkippedCheckpoint],
) -> String {
    let mut msg = format!(
        "no usable checkpoint of {} in {}: train first (`mmtrader train cnn|rl`), pick \
         another folder with --checkpoints, run --experts rules, or pass --allow-fresh to \
         backtest random weights (misleading: their decisions are noise)",
        missing.join(" and "),
        dir.display()
    );
    for s in skipped {
        msg.push_str(&format!("\n  skipped {}/{}: {}", s.model, s.id, s.reason));
    }
    msg
}

/// The best checkpoints as a loaded core, or why they cannot be backtested. `Ok(None)`: some
/// model has no checkpoint and the caller decides what runs instead.
fn load_models(
    config: &Config,
    args: &BacktestArgs,
    device: tch::Device,
    interval_ms: i64,
    tested: TimeRange,
    used: &mut ModelsUsed,
) -> Result<(Option<InferenceCore>, String, String), Failure> {
    let dir = args
        .checkpoints
        .clone()
        .unwrap_or_else(|| config.models.checkpoint_path(&config.paths.data_dir));
    let best = InferenceCore::load_best_report(
        &config.models,
        &InputConfig::default(),
        device,
        dir.clone(),
    )
    .map_err(|e| {
        Failure::runtime(anyhow::anyhow!(
            "loading checkpoints in {}: {e}",
            dir.display()
        ))
    })?;
    // A checkpoint trained on the tested candles measures its memory, not its skill.
    let metas: Vec<&CheckpointMeta> = [best.cnn_meta.as_ref(), best.dqn_meta.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    used.lineage = metas.iter().map(|m| lineage_line(m)).collect();
    used.in_sample = refuse_in_sample(&metas, tested, args.allow_in_sample).map_err(|e| {
        Failure::input(anyhow::anyhow!(
            "{e} (--allow-in-sample to run it anyway, marked in-sample)"
        ))
    })?;
    let (core, cnn, dqn) = (best.core, best.cnn, best.dqn);
    let missing: Vec<&str> = [
        (&cnn, &config.models.cnn_model),
        (&dqn, &config.models.dqn_model),
    ]
    .into_iter()
    .filter(|(ck, _)| ck.is_none())
    .map(|(_, name)| name.as_str())
    .collect();
    let (cnn, dqn) = (checkpoint_name(&cnn), checkpoint_name(&dqn));
    if !missing.is_empty() && !args.allow_fresh {
        eprintln!(
            "{}",
            missing_checkpoint_message(&missing, &dir, &best.skipped)
        );
        return Ok((None, cnn, dqn));
    }
    if !missing.is_empty() {
        eprintln!(
            "warning: {} run on FRESH RANDOM WEIGHTS (--allow-fresh): their decisions are noise",
            missing.join(" and ")
        );
    }
    let tf = core.cnn.net.config().timeframe;
    if tf.millis() < interval_ms || tf.millis() % interval_ms != 0 {
        return Err(Failure::input(anyhow::anyhow!(
            "CNN checkpoint {cnn} reads {} ms candles, which {interval_ms} ms candles cannot \
             build: backtest it on candles of {} ms or a divisor of it",
            tf.millis(),
            tf.millis()
        )));
    }
    Ok((Some(core), cnn, dqn))
}

/// The models section of the HTML report.
fn models_html(used: &ModelsUsed) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = if used.folds.is_empty() {
        format!(
            "<h2>Models</h2><p>Experts: {:?}. CNN checkpoint <code>{}</code>, DQN checkpoint \
             <code>{}</code>.</p>",
            used.experts,
            esc(&used.cnn),
            esc(&used.dqn)
        )
    } else {
        format!(
            "<h2>Models</h2><p>Experts: {:?}. Walk-forward uses no checkpoint.</p>",
            used.experts
        )
    };
    if used.in_sample {
        out.insert_str(
            0,
            "<p><strong>IN-SAMPLE: the checkpoints were trained on part of this range; every \
             number in this report measures memory, not skill.</strong></p>",
        );
    }
    if !used.lineage.is_empty() {
        out.push_str("<p>Checkpoints, their training ranges and lineage:</p><ul>");
        for l in &used.lineage {
            out.push_str(&format!("<li>{}</li>", esc(l)));
        }
        out.push_str("</ul>");
    }
    if used.invalid_steps.count > 0 {
        out.push_str(&format!(
            "<p>Model inputs refused by validation at {} steps (no model ran there). First \
             reasons:</p><ul>",
            used.invalid_steps.count
        ));
        for r in &used.invalid_steps.reasons {
            out.push_str(&format!("<li>{}</li>", esc(r)));
        }
        out.push_str("</ul>");
    }
    if !used.folds.is_empty() {
        out.push_str(
            "<p>Walk-forward folds trained their own models on their train windows:</p><ul>",
        );
        for f in &used.folds {
            out.push_str(&format!(
                "<li>fold {}: {}</li>",
                f.fold,
                esc(&f.to_string())
            ));
        }
        out.push_str("</ul>");
    }
    out
}

fn load(files: &[PathBuf]) -> Result<Vec<Candle>, Failure> {
    let mut all = Vec::new();
    for f in files {
        let loaded =
            read_candles(f).map_err(|e| Failure::input(anyhow::anyhow!("{}: {e}", f.display())))?;
        for bad in &loaded.bad_rows {
            eprintln!(
                "{}: line {}: {} (skipped)",
                f.display(),
                bad.line,
                bad.error
            );
        }
        all.extend(loaded.candles);
    }
    all.sort_by_key(|c| c.open_time_ms);
    // Overlapping files: the first candle of each open time wins.
    all.dedup_by_key(|c| c.open_time_ms);
    Ok(all)
}

fn time_arg(name: &str, text: Option<&str>) -> Result<Option<i64>, Failure> {
    text.map(|t| {
        parse_time(t).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "--{name} {t:?}: {e} (expected epoch seconds/ms or ISO-8601)"
            ))
        })
    })
    .transpose()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("writing {}: {e}", path.display())))
}

/// Runs the backtest and writes the reports.
pub fn run(config: Config, args: BacktestArgs) -> Result<i32, Failure> {
    // Single-threaded, seeded libtorch: the same input gives the same trades.
    tch::set_num_threads(1);
    tch::manual_seed(args.seed as i64);
    let device = device_from_config(&args.device)
        .map_err(|e| Failure::input(anyhow::anyhow!("--device {:?}: {e}", args.device)))?;
    let drawdown_resume_ms = args
        .resume_after
        .as_deref()
        .map(|t| {
            parse_duration(t).ok_or_else(|| {
                Failure::input(anyhow::anyhow!(
                    "--resume-after {t:?}: expected a duration like 12h or 2d (units s, m, h, d)"
                ))
            })
        })
        .transpose()?;
    let walk = args
        .walk_forward
        .as_deref()
        .map(|w| {
            w.split_once(':')
                .and_then(|(a, b)| Some((parse_duration(a)?, parse_duration(b)?)))
                .ok_or_else(|| {
                    Failure::input(anyhow::anyhow!(
                        "--walk-forward {w:?}: expected TRAIN:TEST like 7d:1d (units s, m, h, d)"
                    ))
                })
        })
        .transpose()?;
    let candles = load(&args.data)?;
    if candles.len() < 2 {
        return Err(Failure::input(anyhow::anyhow!(
            "need at least two candles, got {}",
            candles.len()
        )));
    }
    let interval = detect_interval(&candles);
    let from = time_arg("from", args.from.as_deref())?.unwrap_or(i64::MIN);
    let to = time_arg("to", args.to.as_deref())?.unwrap_or(i64::MAX);
    let spec = BacktestSpec {
        symbol: &args.symbol,
        candles: &candles,
        interval_ms: interval,
        from_ms: from,
        to_ms: to,
    };
    let cfg = &config.orchestrator;
    let setup = TradingSetup {
        impact_bps: args.impact_bps,
        drawdown_resume_ms,
        ..TradingSetup::new(config.risk.clone(), config.execution.clone())
    };
    let mut used = ModelsUsed {
        experts: args.experts,
        cnn: "none".into(),
        dqn: "none".into(),
        folds: Vec::new(),
        invalid_steps: InvalidSteps::default(),
        in_sample: false,
        lineage: Vec::new(),
    };
    let (result, folds) = match walk {
        None => {
            let mut invalid_log: Option<InvalidLog> = None;
            let mut experts: Vec<Box<dyn Expert>> = Vec::new();
            if args.experts.models() {
                let tested = TimeRange {
                    from_ms: from,
                    to_ms: to.saturating_add(1),
                };
                let (core, cnn, dqn) =
                    load_models(&config, &args, device, interval, tested, &mut used)?;
                let Some(core) = core else {
                    return Err(Failure::input(anyhow::anyhow!(
                        "no model checkpoints to backtest (see above)"
                    )));
                };
                (used.cnn, used.dqn) = (cnn, dqn);
                let (c, d) = model_experts(core, InputConfig::default(), false, false);
                invalid_log = Some(c.invalid_log());
                experts.push(Box::new(c));
                experts.push(Box::new(d));
            }
            if args.experts.rules() {
                experts.extend(rule_experts());
            }
            let progress = Progress::new("backtest", "step");
            let result = backtest::run(spec, cfg, &setup, experts, None, &mut |d, t| {
                progress.set(d, t)
            })
            .map_err(|e| Failure::input(anyhow::anyhow!("{e}")))?;
            progress.finish();
            if let Some(log) = &invalid_log {
                used.invalid_steps.merge(&log.get());
            }
            (result, Vec::new())
        }
        Some((train, test)) => {
            let wf_spec = BacktestSpec {
                from_ms: from.max(candles[0].open_time_ms),
                to_ms: to.min(candles[candles.len() - 1].open_time_ms + interval),
                ..spec
            };
            let progress = Progress::new("walk-forward", "fold");
            progress.set(0, backtest::fold_count(&wf_spec, train, test));
            let mut fold_progress = |d: usize, t: usize| progress.set(d, t);
            let wf = if args.experts.models() {
                let training = FoldTraining {
                    window: args.window.unwrap_or(config.models.window),
                    cnn_epochs: args.train_epochs,
                    dqn_episodes: args.train_episodes,
                    episode_len: args.episode_len,
                    seed: args.seed,
                    names: (
                        config.models.cnn_model.clone(),
                        config.models.dqn_model.clone(),
                    ),
                };
                let others: &dyn Fn() -> Vec<Box<dyn Expert>> = if args.experts.rules() {
                    &rule_experts
                } else {
                    &no_experts
                };
                let mut train_progress =
                    |fold: usize, p: &crate::models::cnn_train::TrainProgress| {
                        progress.message(format!(
                            "fold {fold}: training {} {}/{}",
                            p.phase, p.step, p.total
                        ));
                    };
                let mut fe = ModelFolds::new(
                    &args.symbol,
                    training,
                    InputConfig::default(),
                    device,
                    others,
                    &mut train_progress,
                );
                let wf = backtest::walk_forward_with(
                    wf_spec,
                    cfg,
                    &setup,
                    &mut fe,
                    train,
                    test,
                    &mut fold_progress,
                );
                used.folds = fe.trained().to_vec();
                used.invalid_steps.merge(&fe.invalid_steps());
                wf
            } else {
                backtest::walk_forward(
                    wf_spec,
                    cfg,
                    &setup,
                    &rule_experts,
                    train,
                    test,
                    &mut fold_progress,
                )
            }
            .map_err(|e| Failure::input(anyhow::anyhow!("{e}")))?;
            progress.finish();
            (wf.oos, wf.folds)
        }
    };
    write_reports(&args, &used, &result, &folds)?;
    print_outcome(&args, &used, &result, &folds);
    Ok(EXIT_OK)
}

/// `equity.png`, `report.html`, `models.json` and `trades.csv` in `--out`.
fn write_reports(
    args: &BacktestArgs,
    used: &ModelsUsed,
    result: &BacktestResult,
    folds: &[Fold],
) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("creating {}: {e}", args.out.display())))?;
    let title = if folds.is_empty() {
        format!("Backtest {}", args.symbol)
    } else {
        format!(
            "Walk-forward {} (out of sample, {} folds)",
            args.symbol,
            folds.len()
        )
    };
    let chart = report::equity_chart(&title, result, folds);
    let png = report::equity_png(&chart).map_err(Failure::runtime)?;
    write(&args.out.join("equity.png"), &png)?;
    let sections = [models_html(used)];
    let html = report::html(&report::HtmlReport {
        title: &title,
        result,
        folds,
        sections: &sections,
    });
    write(&args.out.join("report.html"), html.as_bytes())?;
    let json = serde_json::to_string_pretty(used)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("models.json: {e}")))?;
    write(&args.out.join("models.json"), json.as_bytes())?;
    write(
        &args.out.join("trades.csv"),
        report::trades_csv(result).as_bytes(),
    )
}

/// The printed outcome: models, folds with their dates, then the summary beside baselines.
fn print_outcome(args: &BacktestArgs, used: &ModelsUsed, result: &BacktestResult, folds: &[Fold]) {
    if args.experts.models() && folds.is_empty() {
        println!("models: CNN {}, DQN {}", used.cnn, used.dqn);
    }
    if used.invalid_steps.count > 0 {
        println!(
            "model inputs refused by validation at {} steps (no model ran there), e.g. {}",
            used.invalid_steps.count,
            used.invalid_steps
                .reasons
                .first()
                .map_or("", String::as_str)
        );
    }
    for (k, f) in folds.iter().enumerate() {
        println!(
            "fold {k}: train {}..{}, test {}..{}: thresholds {:.2}, return {:+.2}% \
             (buy-and-hold {:+.2}%), Sharpe {:.2}, {} round trips",
            report::iso_utc(f.train.0),
            report::iso_utc(f.train.1),
            report::iso_utc(f.test.0),
            report::iso_utc(f.test.1),
            f.chosen.buy,
            f.test_result.metrics.total_return * 100.0,
            f.test_result.benchmark_metrics.total_return * 100.0,
            f.test_result.metrics.sharpe,
            f.test_result.metrics.round_trips
        );
        if let Some(t) = &f.trained {
            println!("  models {t}");
        }
    }
    if !folds.is_empty() {
        println!(
            "walk-forward out of sample: the {} test windows ({} each) compounded",
            folds.len(),
            duration_text(folds[0].test.1 - folds[0].test.0)
        );
    }
    for line in &used.lineage {
        println!("checkpoint {line}");
    }
    if used.in_sample {
        println!(
            "IN-SAMPLE: the checkpoints were trained on part of this range; every number below measures memory, not skill"
        );
    }
    println!("{}", report::summary(result));
    if used.in_sample {
        println!("(in-sample)");
    }
    if result.refusals > 0 {
        println!(
            "risk manager refused {} intents for a limit, e.g. {}",
            result.refusals,
            result.refusal_reasons.first().map_or("", String::as_str)
        );
    }
    println!("reports in {}", args.out.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_the_model_inputs_validation_refused() {
        let used = ModelsUsed {
            experts: ExpertSet::Models,
            cnn: "pivot_cnn/1".into(),
            dqn: "dqn_agent/1".into(),
            folds: Vec::new(),
            invalid_steps: InvalidSteps {
                count: 3,
                reasons: vec!["input X at 60000 not valid: ohlcv_1m <frame 7>".into()],
            },
            in_sample: false,
            lineage: Vec::new(),
        };
        let html = models_html(&used);
        assert!(
            html.contains("refused by validation at 3 steps")
                && html.contains("<li>input X at 60000 not valid: ohlcv_1m &lt;frame 7&gt;</li>"),
            "{html}"
        );
        let clean = ModelsUsed {
            invalid_steps: InvalidSteps::default(),
            ..used
        };
        assert!(!models_html(&clean).contains("refused"));
        // In-sample runs say so at the top; every checkpoint's lineage is listed.
        let marked = ModelsUsed {
            in_sample: true,
            lineage: vec!["pivot_cnn/1: trained on 2021-01-01..2021-06-01".into()],
            ..clean
        };
        let html = models_html(&marked);
        assert!(html.starts_with("<p><strong>IN-SAMPLE"), "{html}");
        assert!(html.contains("<li>pivot_cnn/1: trained on 2021-01-01..2021-06-01</li>"));
    }

    #[test]
    fn progress_lines_say_step_percent_and_eta() {
        let s = Duration::from_secs;
        assert_eq!(
            progress_line("backtest", "step", (0, 5_482), "", s(0)),
            "backtest: step 0/5482 (0.0%), elapsed 0s, ETA unknown"
        );
        assert_eq!(
            progress_line(
                "walk-forward",
                "fold",
                (2, 6),
                "fold 2: training dqn 3/8",
                s(130)
            ),
            "walk-forward: fold 2/6 (33.3%), elapsed 2m10s, ETA 4m20s; fold 2: training dqn 3/8"
        );
        assert_eq!(
            progress_line("backtest", "step", (10, 10), "", s(7_380)),
            "backtest: step 10/10 (100.0%), elapsed 2h03m, done"
        );
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn off_a_terminal_a_line_comes_every_interval_even_while_a_step_takes_long() {
        let out = Shared::default();
        let every = Duration::from_millis(20);
        let p = Progress::lines("backtest", "step", Box::new(out.clone()), Some(every));
        p.set(0, 200);
        p.set(50, 200);
        // One long step (a fold's training): the lines keep coming.
        std::thread::sleep(every * 8);
        p.message("fold 1: training cnn 1/3".into());
        std::thread::sleep(every * 4);
        p.set(200, 200);
        p.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "backtest: step 0/200 (0.0%), elapsed 0s, ETA unknown"
        );
        let ticks = lines
            .iter()
            .filter(|l| l.starts_with("backtest: step 50/200 (25.0%)") && l.contains("ETA "))
            .count();
        assert!(ticks >= 4, "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("; fold 1: training cnn 1/3")),
            "{text}"
        );
        assert!(
            lines.last().is_some_and(
                |l| l.starts_with("backtest: step 200/200 (100.0%)") && l.ends_with("done")
            ),
            "{text}"
        );
        // Without lines (on a terminal the bar shows instead) nothing is written.
        let quiet = Shared::default();
        let p = Progress::lines("backtest", "step", Box::new(quiet.clone()), None);
        p.set(1, 2);
        p.finish();
        assert!(quiet.0.lock().unwrap().is_empty());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_duration("90m"), Some(5_400_000));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("0h"), None);
        assert_eq!(parse_duration("3w"), None);
    }
}
