//! `mmtrader backtest`: candle files through the orchestrator, with a progress bar, a printed
//! summary, and `equity.png` + `report.html` (+ `trades.csv`, `models.json`) in the output
//! folder.
//!
//! **Models.** The CNN and the DQN run from their best checkpoints (the ones the desk loads).
//! Fresh weights are refused unless `--allow-fresh`: a backtest of random weights measures
//! noise. Walk-forward does not use the checkpoints (they may have been trained on the test
//! windows): each fold trains fresh models on its train window only.
//!
//! **Determinism.** libtorch runs single-threaded and seeded, so the same input gives the same
//! trades.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::analysis::analyze::{detect_interval, parse_time, read_candles};
use crate::analysis::input::InputConfig;
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::market::types::Candle;
use crate::models::checkpoint::SkippedCheckpoint;
use crate::models::device::device_from_config;
use crate::models::runtime::{CheckpointInUse, InferenceCore};
use crate::orchestrator::backtest::{self, BacktestSpec, Fold, TradingSetup};
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
}

/// The models a run used, as `models.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsUsed {
    /// Expert selection.
    pub experts: ExpertSet,
    /// CNN checkpoint of the whole-range run (`fresh` or `none`).
    pub cnn: String,
    /// DQN checkpoint of the whole-range run (`fresh` or `none`).
    pub dqn: String,
    /// What each walk-forward fold trained.
    pub folds: Vec<FoldModels>,
    /// Model inputs refused by validation (whole-range run and folds), with the first reasons.
    pub invalid_steps: InvalidSteps,
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
fn models_html(used: &ModelsUsed, note: Option<&str>) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = format!(
        "<h2>Models</h2><p>Experts: {:?}. Whole-range run: CNN checkpoint <code>{}</code>, \
             DQN checkpoint <code>{}</code>.</p>",
        used.experts,
        esc(&used.cnn),
        esc(&used.dqn)
    );
    if let Some(n) = note {
        out.push_str(&format!("<p><b>{}</b></p>", esc(n)));
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
        risk: config.risk.clone(),
        execution: config.execution.clone(),
    };
    let bar = ProgressBar::new(candles.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} steps ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("backtest");
    let mut used = ModelsUsed {
        experts: args.experts,
        cnn: "none".into(),
        dqn: "none".into(),
        folds: Vec::new(),
        invalid_steps: InvalidSteps::default(),
    };
    let mut invalid_log: Option<InvalidLog> = None;
    let mut note = None;
    let mut experts: Vec<Box<dyn Expert>> = Vec::new();
    if args.experts.models() {
        let (core, cnn, dqn) = load_models(&config, &args, device, interval)?;
        match core {
            Some(core) => {
                (used.cnn, used.dqn) = (cnn, dqn);
                let (c, d) = model_experts(core, InputConfig::default(), false, false);
                invalid_log = Some(c.invalid_log());
                experts.push(Box::new(c));
                experts.push(Box::new(d));
            }
            // Walk-forward trains its own models; the whole-range run goes without them.
            None if args.walk_forward.is_some() && args.experts.rules() => {
                note = Some(
                    "No checkpoints: the whole-range run uses the rule experts only.".to_string(),
                );
            }
            None => {
                return Err(Failure::input(anyhow::anyhow!(
                    "no model checkpoints to backtest (see above)"
                )));
            }
        }
    }
    if args.experts.rules() {
        experts.extend(rule_experts());
    }
    if let Some(n) = &note {
        println!("{n}");
    }
    let result = backtest::run(spec, cfg, &setup, experts, None, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| Failure::input(anyhow::anyhow!("{e}")))?;
    bar.finish_and_clear();
    let folds: Vec<Fold> = match &args.walk_forward {
        None => Vec::new(),
        Some(w) => {
            let (train, test) = w
                .split_once(':')
                .and_then(|(a, b)| Some((parse_duration(a)?, parse_duration(b)?)))
                .ok_or_else(|| {
                    Failure::input(anyhow::anyhow!(
                        "--walk-forward {w:?}: expected TRAIN:TEST like 7d:1d (units s, m, h, d)"
                    ))
                })?;
            let wf_spec = BacktestSpec {
                from_ms: from.max(candles[0].open_time_ms),
                to_ms: to.min(candles[candles.len() - 1].open_time_ms + interval),
                ..spec
            };
            let bar = ProgressBar::new(1);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} folds")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message("walk-forward");
            let mut fold_progress = |d: usize, t: usize| {
                bar.set_length(t as u64);
                bar.set_position(d as u64);
            };
            let folds = if args.experts.models() {
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
                        bar.set_message(format!(
                            "walk-forward fold {fold}: training {} {}/{}",
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
                let folds = backtest::walk_forward_with(
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
                folds
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
            bar.finish_and_clear();
            folds
        }
    };
    if let Some(log) = &invalid_log {
        used.invalid_steps.merge(&log.get());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("creating {}: {e}", args.out.display())))?;
    let png = report::equity_png(&result).map_err(Failure::runtime)?;
    write(&args.out.join("equity.png"), &png)?;
    let title = format!("Backtest {}", args.symbol);
    let html = report::html(&title, &result, &png, &folds);
    // The models section goes right under the title.
    let section = models_html(&used, note.as_deref());
    let html = match html.find("</h1>") {
        Some(i) => format!("{}{section}{}", &html[..i + 5], &html[i + 5..]),
        None => html + &section,
    };
    write(&args.out.join("report.html"), html.as_bytes())?;
    let json = serde_json::to_string_pretty(&used)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("models.json: {e}")))?;
    write(&args.out.join("models.json"), json.as_bytes())?;
    let mut csv = String::from("time_ms,side,price,qty,fee,position,reason\n");
    for t in &result.trades {
        csv.push_str(&format!(
            "{},{:?},{},{},{},{},\"{}\"\n",
            t.time_ms,
            t.side,
            t.price,
            t.qty,
            t.fee,
            t.position,
            t.reason.replace('"', "'")
        ));
    }
    write(&args.out.join("trades.csv"), csv.as_bytes())?;
    if args.experts.models() {
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
    println!("{}", report::summary(&result));
    if result.refusals > 0 {
        println!(
            "risk manager refused {} intents, e.g. {}",
            result.refusals,
            result.refusal_reasons.first().map_or("", String::as_str)
        );
    }
    for f in &folds {
        println!(
            "fold test {}..{}: thresholds {:.2}, return {:.2}% (buy-and-hold {:.2}%), Sharpe {:.2}",
            f.test.0,
            f.test.1,
            f.chosen.buy,
            f.test_result.metrics.total_return * 100.0,
            f.test_result.benchmark_metrics.total_return * 100.0,
            f.test_result.metrics.sharpe
        );
        if let Some(t) = &f.trained {
            println!("  models {t}");
        }
    }
    println!("reports in {}", args.out.display());
    Ok(EXIT_OK)
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
        };
        let html = models_html(&used, None);
        assert!(
            html.contains("refused by validation at 3 steps")
                && html.contains("<li>input X at 60000 not valid: ohlcv_1m &lt;frame 7&gt;</li>"),
            "{html}"
        );
        let clean = ModelsUsed {
            invalid_steps: InvalidSteps::default(),
            ..used
        };
        assert!(!models_html(&clean, None).contains("refused"));
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
