//! The `train` command's work: train the pivot CNN or the DQN on a candle file, keep the
//! best checkpoints, and report. The CLI wiring (flags, progress bar) calls these functions.

use crate::analysis::analyze::{AnalyzeError, detect_interval, read_candles};
use crate::cli::Failure;
use crate::market::types::{Candle, Timeframe};
use crate::models::checkpoint::{
    CheckpointConfig, CheckpointError, CheckpointManager, CheckpointMeta, DataRange, MetricGoal,
    report_skipped,
};
use crate::models::cnn::{CnnConfig, CnnModel};
use crate::models::cnn_train::{
    CnnDataset, CnnMetrics, CnnTrainConfig, DatasetConfig, DatasetError, TrainError, TrainProgress,
    train_cnn,
};
use crate::models::device::{DeviceError, device_from_config};
use crate::models::dqn::{DqnAgent, DqnError};
use crate::models::env::{EnvConfig, EnvError, TradingEnv};
use crate::models::input::InputShape;
use crate::models::rl_train::{
    DqnModelConfig, MARKET_RECENT, PolicyComparison, RlStateSpec, RlTrainConfig, agent_config,
    compare_policies, rl_features, train_dqn,
};
use crate::models::runtime::{CNN_METRIC, DQN_METRIC};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Settings shared by both training commands.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainCommon {
    /// Candle file (any layout `analyze` reads, gzip allowed).
    pub candles: PathBuf,
    /// 1 s candles of the reference symbol (same layouts), encoded as the reference series.
    pub reference: Option<PathBuf>,
    /// Use only the last N candles (None: all).
    pub max_candles: Option<usize>,
    /// Input window length in candles.
    pub window: usize,
    /// `auto`, `cpu` or `cuda:N`.
    pub device: String,
    /// Checkpoint root folder.
    pub checkpoint_dir: PathBuf,
    /// Checkpoints kept per model.
    pub keep: usize,
    /// Seed for libtorch and the samplers.
    pub seed: u64,
}

/// `train cnn` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainCnnArgs {
    /// Shared settings.
    pub common: TrainCommon,
    /// Model name (checkpoint folder).
    pub model_name: String,
    /// Maximum epochs.
    pub epochs: usize,
    /// Share of the latest rows used for validation.
    pub val_fraction: f64,
}

/// `train rl` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRlArgs {
    /// Shared settings.
    pub common: TrainCommon,
    /// Model name (checkpoint folder).
    pub model_name: String,
    /// CNN whose best checkpoint feeds the state (None: market features only).
    pub cnn_model: Option<String>,
    /// Training episodes.
    pub episodes: usize,
    /// Steps per episode.
    pub episode_len: usize,
    /// Share of the latest rows held out for evaluation.
    pub held_out_fraction: f64,
    /// Costs and reward shaping.
    pub env: EnvConfig,
}

/// Why a training command failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainAppError {
    /// The device string was rejected.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    /// The candle file could not be read.
    #[error("candles: {0}")]
    Candles(#[from] AnalyzeError),
    /// Samples could not be built from the candles.
    #[error("samples: {0}")]
    Dataset(#[from] DatasetError),
    /// The candles' interval is not one of the model timeframes.
    #[error("candle interval {0} ms is not 1s, 1m, 1h or 1d")]
    Interval(i64),
    /// Training failed.
    #[error("training: {0}")]
    Train(#[from] TrainError),
    /// Checkpoint I/O failed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The environment could not be built.
    #[error("environment: {0}")]
    Env(#[from] EnvError),
    /// The agent could not be built.
    #[error("agent: {0}")]
    Agent(#[from] DqnError),
    /// The CNN named for the RL state has no usable checkpoint.
    #[error("no usable checkpoint of CNN {0:?}")]
    NoCnn(String),
    /// The CNN named for the RL state was trained on candles of the held-out period, so the
    /// evaluation would score the agent on data its features have already seen.
    #[error(
        "CNN {name:?} checkpoint {id} was trained on candles up to open time {trained_until_ms} ms, \
         which reaches into the held-out evaluation period starting at open time \
         {held_out_from_ms} ms; train the CNN on candles that end before it"
    )]
    CnnSawHeldOut {
        /// CNN model name.
        name: String,
        /// Its best checkpoint.
        id: String,
        /// Last candle open time the CNN was trained on.
        trained_until_ms: i64,
        /// Open time of the newest candle of the first held-out row.
        held_out_from_ms: i64,
    },
    /// The reference file does not hold 1 s candles.
    #[error("reference candles: interval {0} ms, expected 1 s candles (1000 ms)")]
    ReferenceInterval(i64),
    /// The checkpoint count is outside the supported range.
    #[error("keep: {0} checkpoints per model; expected 5..=10 (--keep or [models] keep_best)")]
    Keep(usize),
    /// Too little data for the requested split.
    #[error("{0} rows are too few for training and a held-out period")]
    TooFewRows(usize),
}

impl From<TrainAppError> for Failure {
    fn from(e: TrainAppError) -> Self {
        match e {
            TrainAppError::Candles(_)
            | TrainAppError::Dataset(_)
            | TrainAppError::Interval(_)
            | TrainAppError::ReferenceInterval(_) => Failure::input(e),
            _ => Failure::runtime(e),
        }
    }
}

/// What `train cnn` did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainCnnSummary {
    /// Candles used.
    pub candles: usize,
    /// Whether training started from a saved checkpoint.
    pub warm_start: bool,
    /// Epochs run and the epoch kept.
    pub epochs: (usize, usize),
    /// Validation metrics of the kept weights.
    pub validation: CnnMetrics,
    /// Saved checkpoint id, and whether it ranks among the best K.
    pub checkpoint: (String, bool),
}

/// What `train rl` did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRlSummary {
    /// Candles used.
    pub candles: usize,
    /// Learning steps taken.
    pub updates: u64,
    /// Held-out evaluation against the reference policies.
    pub held_out: PolicyComparison,
    /// Saved checkpoint id, and whether it ranks among the best K.
    pub checkpoint: (String, bool),
}

/// The candles (the last `max_candles`), their timeframe and a symbol name for the samples.
fn load(common: &TrainCommon) -> Result<(Vec<Candle>, Timeframe, String), TrainAppError> {
    let mut candles = read_candles(&common.candles)?.candles;
    if let Some(n) = common.max_candles
        && candles.len() > n
    {
        candles.drain(..candles.len() - n);
    }
    let interval = detect_interval(&candles);
    let base = Timeframe::ALL
        .into_iter()
        .find(|tf| tf.millis() == interval)
        .ok_or(TrainAppError::Interval(interval))?;
    let symbol = common.candles.file_stem().map_or_else(
        || "HISTORY".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Ok((candles, base, symbol))
}

/// The reference symbol's 1 s candles, if a file was given.
fn load_reference(common: &TrainCommon) -> Result<Vec<Candle>, TrainAppError> {
    let Some(path) = &common.reference else {
        return Ok(Vec::new());
    };
    let candles = read_candles(path)?.candles;
    let interval = detect_interval(&candles);
    if !candles.is_empty() && interval != Timeframe::S1.millis() {
        return Err(TrainAppError::ReferenceInterval(interval));
    }
    Ok(candles)
}

/// The training samples of both commands: the candles replayed with the reference series.
fn dataset(
    common: &TrainCommon,
    symbol: &str,
    candles: &[Candle],
    base: Timeframe,
    window: usize,
) -> Result<CnnDataset, TrainAppError> {
    let reference = load_reference(common)?;
    Ok(CnnDataset::build(
        symbol,
        candles,
        &reference,
        &DatasetConfig::new(base, window),
    )?)
}

fn range(candles: &[Candle]) -> DataRange {
    DataRange {
        start_ms: candles.first().map_or(0, |c| c.open_time_ms),
        end_ms: candles.last().map_or(0, |c| c.open_time_ms),
    }
}

fn manager(
    common: &TrainCommon,
    name: &str,
    metric: &str,
    goal: MetricGoal,
) -> Result<CheckpointManager, TrainAppError> {
    Ok(CheckpointManager::new(CheckpointConfig {
        root: common.checkpoint_dir.clone(),
        model_name: name.to_string(),
        keep: common.keep,
        metric: metric.to_string(),
        goal,
    })?)
}

/// The best checkpoint of CNN `name` rebuilt with its saved config, if one is usable.
fn load_cnn(
    common: &TrainCommon,
    name: &str,
    device: tch::Device,
) -> Result<Option<(CnnModel, CheckpointMeta)>, TrainAppError> {
    let ck = manager(common, name, CNN_METRIC, MetricGoal::Minimize)?;
    let got = ck.load_best_model(
        |c: CnnConfig| {
            c.check()?;
            Ok(CnnModel::new(c, device))
        },
        |m: &mut CnnModel| &mut m.vs,
    )?;
    // Logged (as warnings) so a warm start that silently became a cold one is explained.
    report_skipped(name, &got.skipped);
    Ok(got.loaded)
}

/// Trains the pivot CNN (warm-starting from its best checkpoint, whose config then decides
/// window and sizes) on samples replayed from the candles, and saves a checkpoint ranked by
/// validation loss.
pub fn run_train_cnn(
    args: &TrainCnnArgs,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainCnnSummary, TrainAppError> {
    let device = device_from_config(&args.common.device)?;
    tch::manual_seed(args.common.seed as i64);
    let (candles, base, symbol) = load(&args.common)?;
    let warm = load_cnn(&args.common, &args.model_name, device)?
        .map(|(m, _)| m)
        .filter(|m| m.net.config().timeframe == base);
    let warm_start = warm.is_some();
    let mut model = match warm {
        Some(m) => m,
        None => {
            let mut c = CnnConfig::small(InputShape::encoded(args.common.window));
            c.timeframe = base;
            CnnModel::new(c, device)
        }
    };
    let cfg = model.net.config();
    let ds = dataset(&args.common, &symbol, &candles, base, cfg.input.window)?;
    let ckpt = manager(
        &args.common,
        &args.model_name,
        CNN_METRIC,
        MetricGoal::Minimize,
    )?;
    let train_cfg = CnnTrainConfig {
        epochs: args.epochs,
        val_fraction: args.val_fraction,
        seed: args.common.seed,
        ..Default::default()
    };
    let report = train_cnn(&mut model, &ds, &train_cfg, progress)?;
    let v = &report.validation;
    let mut metrics = BTreeMap::from([
        ("val_loss".to_string(), v.loss),
        (CNN_METRIC.to_string(), v.pivot_loss),
        ("action_accuracy".to_string(), v.action_accuracy),
    ]);
    for (l, m) in v.levels.iter().enumerate() {
        metrics.insert(
            format!("l{}_direction_accuracy", l + 1),
            m.direction_accuracy,
        );
        metrics.insert(format!("l{}_price_error_bp", l + 1), m.price_error_bp);
        metrics.insert(format!("l{}_time_error_bars", l + 1), m.time_error_bars);
    }
    let saved = ckpt.save(&model.vs, &cfg, metrics, range(&candles))?;
    Ok(TrainCnnSummary {
        candles: candles.len(),
        warm_start,
        epochs: (report.epochs_run, report.best_epoch),
        validation: report.validation,
        checkpoint: (saved.meta.id, saved.kept),
    })
}

/// Trains the DQN on the earlier rows, evaluates it on the held-out later rows against
/// buy-and-hold, flat and random, and saves a checkpoint ranked by held-out return.
pub fn run_train_rl(
    args: &TrainRlArgs,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainRlSummary, TrainAppError> {
    let device = device_from_config(&args.common.device)?;
    tch::manual_seed(args.common.seed as i64);
    let (candles, base, symbol) = load(&args.common)?;
    let cnn = match &args.cnn_model {
        Some(name) => Some(
            load_cnn(&args.common, name, device)?
                .ok_or_else(|| TrainAppError::NoCnn(name.clone()))?,
        ),
        None => None,
    };
    let window = cnn
        .as_ref()
        .map_or(args.common.window, |(m, _)| m.net.config().input.window);
    let ds = dataset(&args.common, &symbol, &candles, base, window)?;
    let (cnn, cnn_meta) = match cnn {
        Some((m, meta)) => (Some(m), Some(meta)),
        None => (None, None),
    };
    let f = rl_features(&ds, cnn.as_ref());
    let spec = RlStateSpec {
        timeframe: base,
        recent: MARKET_RECENT,
        cnn_features: cnn.as_ref().map_or(0, |m| m.net.config().state_features()),
    };
    let mut env = TradingEnv::new(f.prices, f.rows, f.dim, args.env)?;
    let n = env.len();
    let held_out = ((n as f64) * (1.0 - args.held_out_fraction.clamp(0.05, 0.9))) as usize;
    if held_out < 100 || n - held_out < 20 {
        return Err(TrainAppError::TooFewRows(n));
    }
    if let (Some(meta), Some(name)) = (&cnn_meta, &args.cnn_model) {
        check_cnn_before(meta, name, ds.anchors[held_out].last_open_ms)?;
    }
    let steps = (args.episodes * args.episode_len) as u64;
    let cfg = agent_config(&spec, steps, args.common.seed);
    let ckpt = manager(
        &args.common,
        &args.model_name,
        DQN_METRIC,
        MetricGoal::Maximize,
    )?;
    // Warm start only from a checkpoint with the same state layout and network sizes.
    let warm = ckpt.load_best_model(
        |c: DqnModelConfig| {
            if c.state != spec || c.agent.hidden != cfg.hidden {
                return Err(format!("state {:?} differs from {spec:?}", c.state));
            }
            DqnAgent::new(cfg, device).map_err(|e| e.to_string())
        },
        |a: &mut DqnAgent| &mut a.vs,
    )?;
    let mut agent = match warm.loaded {
        Some((mut a, _)) => {
            let _ = a.sync_target();
            a
        }
        None => DqnAgent::new(cfg, device)?,
    };
    let train_cfg = RlTrainConfig {
        episodes: args.episodes,
        episode_len: args.episode_len,
        learn_every: 1,
        seed: args.common.seed,
    };
    let rep = train_dqn(&mut agent, &mut env, 0..held_out, &train_cfg, progress);
    let cmp = compare_policies(&agent, &mut env, held_out..n, args.common.seed);
    let metrics = BTreeMap::from([
        (DQN_METRIC.to_string(), cmp.agent.total_return),
        ("held_out_max_drawdown".to_string(), cmp.agent.max_drawdown),
        (
            "buy_and_hold_return".to_string(),
            cmp.buy_and_hold.total_return,
        ),
        ("random_return".to_string(), cmp.random_mean_return),
    ]);
    let model_cfg = DqnModelConfig {
        agent: *agent.config(),
        state: spec,
    };
    let saved = ckpt.save(&agent.vs, &model_cfg, metrics, range(&candles))?;
    Ok(TrainRlSummary {
        candles: candles.len(),
        updates: rep.updates,
        held_out: cmp,
        checkpoint: (saved.meta.id, saved.kept),
    })
}

/// Refuses a CNN whose training candles reach the held-out period that starts with the
/// candle opened at `held_out_from_ms` (the DQN's evaluation would use features fitted to it).
fn check_cnn_before(
    meta: &CheckpointMeta,
    name: &str,
    held_out_from_ms: i64,
) -> Result<(), TrainAppError> {
    if meta.data_range.end_ms >= held_out_from_ms {
        return Err(TrainAppError::CnnSawHeldOut {
            name: name.to_string(),
            id: meta.id.clone(),
            trained_until_ms: meta.data_range.end_ms,
            held_out_from_ms,
        });
    }
    Ok(())
}

/// The CLI's shared options, with device and checkpoint count from `[models]` when the
/// flags are left out.
fn common_from_cli(
    config: &crate::config::Config,
    c: crate::cli::TrainCommonCli,
) -> Result<TrainCommon, TrainAppError> {
    let keep = c.keep.unwrap_or(config.models.keep_best);
    if !(5..=10).contains(&keep) {
        return Err(TrainAppError::Keep(keep));
    }
    Ok(TrainCommon {
        candles: c.data,
        reference: c.reference,
        max_candles: c.max_candles,
        window: c.window,
        device: c.device.unwrap_or_else(|| config.models.device.clone()),
        checkpoint_dir: c
            .checkpoints
            .unwrap_or_else(|| config.models.checkpoint_path(&config.paths.data_dir)),
        keep,
        seed: c.seed,
    })
}

fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// `mmtrader train cnn|rl`: trains with a progress bar and prints the metrics.
pub fn run_cli(
    config: crate::config::Config,
    cmd: crate::cli::TrainCommand,
) -> Result<i32, Failure> {
    use crate::cli::TrainCommand;
    match cmd {
        TrainCommand::Cnn(a) => {
            let args = TrainCnnArgs {
                common: common_from_cli(&config, a.common)?,
                model_name: a.model,
                epochs: a.epochs,
                val_fraction: a.val_fraction,
            };
            let bar = progress_bar(args.epochs as u64, "cnn epochs");
            let summary = run_train_cnn(&args, &mut |p| {
                bar.set_length(p.total as u64);
                bar.set_position(p.step as u64);
                bar.set_message(match p.validation {
                    Some(v) => format!("loss {:.4} val {v:.4}", p.train),
                    None => format!("loss {:.4}", p.train),
                });
            })?;
            bar.finish();
            println!(
                "trained on {} candles{}; epochs run {}, kept epoch {}",
                summary.candles,
                if summary.warm_start {
                    " (warm start)"
                } else {
                    ""
                },
                summary.epochs.0,
                summary.epochs.1
            );
            let v = &summary.validation;
            println!(
                "validation loss {:.4}, action accuracy {:.3}",
                v.loss, v.action_accuracy
            );
            for (i, l) in v.levels.iter().enumerate() {
                println!(
                    "  level {}: {} samples, direction accuracy {:.3}, price error {:.1} bp, time error {:.1} bars",
                    i + 1,
                    l.samples,
                    l.direction_accuracy,
                    l.price_error_bp,
                    l.time_error_bars
                );
            }
            println!(
                "checkpoint {}{}",
                summary.checkpoint.0,
                if summary.checkpoint.1 {
                    " (kept among the best)"
                } else {
                    " (not among the best; deleted)"
                }
            );
        }
        TrainCommand::Rl(a) => {
            let args = TrainRlArgs {
                common: common_from_cli(&config, a.common)?,
                model_name: a.model,
                cnn_model: a.cnn,
                episodes: a.episodes,
                episode_len: a.episode_len,
                held_out_fraction: a.held_out,
                env: EnvConfig::default(),
            };
            let bar = progress_bar(args.episodes as u64, "dqn episodes");
            let summary = run_train_rl(&args, &mut |p| {
                bar.set_length(p.total as u64);
                bar.set_position(p.step as u64);
                bar.set_message(format!("return {:.4}", p.train));
            })?;
            bar.finish();
            println!(
                "trained on {} candles with {} updates",
                summary.candles, summary.updates
            );
            let json = serde_json::to_string_pretty(&summary.held_out).unwrap_or_default();
            println!("held-out evaluation (agent vs flat, buy-and-hold, random):\n{json}");
            println!(
                "checkpoint {}{}",
                summary.checkpoint.0,
                if summary.checkpoint.1 {
                    " (kept among the best)"
                } else {
                    " (not among the best; deleted)"
                }
            );
        }
    }
    Ok(crate::cli::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(dir: &std::path::Path) -> TrainCommon {
        TrainCommon {
            candles: crate::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json"),
            reference: None,
            max_candles: Some(700),
            window: 16,
            device: "cpu".into(),
            checkpoint_dir: dir.to_path_buf(),
            keep: 5,
            seed: 1,
        }
    }

    /// The first `n` of the candles `common` trains on, written as a JSON kline file of the
    /// same name under `dir` (so the CNN can be trained on an earlier period).
    fn earlier_part(common: &TrainCommon, dir: &std::path::Path, n: usize) -> PathBuf {
        let all = read_candles(&common.candles).unwrap().candles;
        let used = &all[all.len() - common.max_candles.unwrap()..];
        let rows: Vec<serde_json::Value> = used[..n]
            .iter()
            .map(|c| {
                serde_json::json!([
                    c.open_time_ms,
                    c.open.to_string(),
                    c.high.to_string(),
                    c.low.to_string(),
                    c.close.to_string(),
                    c.volume.to_string()
                ])
            })
            .collect();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(common.candles.file_name().unwrap());
        std::fs::write(&path, serde_json::to_vec(&rows).unwrap()).unwrap();
        path
    }

    #[test]
    fn trains_both_models_on_recorded_candles_and_checkpoints_them() {
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let args = TrainCnnArgs {
            common: common(dir.path()),
            model_name: "williams_cnn".into(),
            epochs: 1,
            val_fraction: 0.2,
        };
        let mut epochs = 0;
        let s = run_train_cnn(&args, &mut |_| epochs += 1).unwrap();
        assert_eq!(s.candles, 700);
        assert_eq!(epochs, 1);
        assert!(!s.warm_start && s.checkpoint.1);
        assert!(s.validation.levels[0].samples > 0);
        // The second run starts from the first run's checkpoint.
        let s2 = run_train_cnn(&args, &mut |_| {}).unwrap();
        assert!(s2.warm_start);
        // A CNN trained on the whole file has seen the DQN's held-out period: refused.
        let rl = TrainRlArgs {
            common: common(dir.path()),
            model_name: "dqn_agent".into(),
            cnn_model: Some("williams_cnn".into()),
            episodes: 2,
            episode_len: 100,
            held_out_fraction: 0.25,
            env: EnvConfig::default(),
        };
        let err = run_train_rl(&rl, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, TrainAppError::CnnSawHeldOut { trained_until_ms, held_out_from_ms, .. }
                if trained_until_ms >= held_out_from_ms),
            "{err}"
        );
        assert!(
            err.to_string().contains("held-out evaluation period"),
            "{err}"
        );
        // The same CNN trained on the earlier part only feeds the DQN.
        let mut early = common(dir.path());
        early.candles = earlier_part(&early, &dir.path().join("early"), 450);
        early.max_candles = None;
        let args = TrainCnnArgs {
            common: early,
            model_name: "early_cnn".into(),
            ..args
        };
        let s3 = run_train_cnn(&args, &mut |_| {}).unwrap();
        assert_eq!(s3.candles, 450);

        let rl = TrainRlArgs {
            cnn_model: Some("early_cnn".into()),
            ..rl
        };
        let r = run_train_rl(&rl, &mut |_| {}).unwrap();
        assert_eq!(r.held_out.flat.total_return, 0.0);
        assert!(r.checkpoint.1);
        let missing = TrainRlArgs {
            cnn_model: Some("no_such_cnn".into()),
            ..rl
        };
        assert!(matches!(
            run_train_rl(&missing, &mut |_| {}),
            Err(TrainAppError::NoCnn(_))
        ));
    }

    #[test]
    fn bad_device_and_missing_file_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = common(dir.path());
        c.device = "tpu".into();
        let args = TrainCnnArgs {
            common: c,
            model_name: "m".into(),
            epochs: 1,
            val_fraction: 0.2,
        };
        assert!(matches!(
            run_train_cnn(&args, &mut |_| {}),
            Err(TrainAppError::Device(_))
        ));
        let mut c = common(dir.path());
        c.candles = dir.path().join("missing.json");
        let args = TrainCnnArgs { common: c, ..args };
        assert!(matches!(
            run_train_cnn(&args, &mut |_| {}),
            Err(TrainAppError::Candles(_))
        ));
    }

    fn cli(keep: Option<usize>, device: Option<&str>) -> crate::cli::TrainCommonCli {
        crate::cli::TrainCommonCli {
            data: PathBuf::from("candles.csv"),
            reference: None,
            max_candles: None,
            window: 16,
            device: device.map(str::to_string),
            checkpoints: None,
            keep,
            seed: 1,
        }
    }

    #[test]
    fn device_and_keep_come_from_the_config_unless_given() {
        let mut config = crate::config::Config::default();
        config.models.keep_best = 8;
        config.models.device = "cpu".into();
        let c = common_from_cli(&config, cli(None, None)).unwrap();
        assert_eq!((c.keep, c.device.as_str()), (8, "cpu"));
        let c = common_from_cli(&config, cli(Some(6), Some("cuda:1"))).unwrap();
        assert_eq!((c.keep, c.device.as_str()), (6, "cuda:1"));
        for bad in [4, 11] {
            let err = common_from_cli(&config, cli(Some(bad), None)).unwrap_err();
            assert!(matches!(err, TrainAppError::Keep(k) if k == bad));
            assert!(err.to_string().contains("5..=10"), "{err}");
        }
        // The manager built from the config's keep_best keeps 8 checkpoints.
        let dir = tempfile::tempdir().unwrap();
        let mut c = common_from_cli(&config, cli(None, None)).unwrap();
        c.checkpoint_dir = dir.path().to_path_buf();
        let ck = manager(&c, "m", "loss", MetricGoal::Minimize).unwrap();
        for i in 0..10 {
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let _w = vs.root().zeros("w", &[1]);
            ck.save(
                &vs,
                &"cfg",
                BTreeMap::from([("loss".to_string(), f64::from(i))]),
                DataRange::default(),
            )
            .unwrap();
        }
        assert_eq!(ck.list().unwrap().len(), 8);
    }

    /// Writes `n` generated candles of `tf` from `start_ms` as a CSV with a header.
    fn write_csv(path: &std::path::Path, tf: Timeframe, start_ms: i64, n: usize, base: f64) {
        let mut text = String::from("time,open,high,low,close,volume\n");
        for i in 0..n {
            let c = base + (i as f64 * 0.37).sin() * base * 0.01 + (i % 7) as f64 * 0.1;
            text.push_str(&format!(
                "{},{c},{},{},{c},{}\n",
                start_ms + i as i64 * tf.millis(),
                c + 0.5,
                c - 0.5,
                1.0 + (i % 3) as f64
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_reference_file_fills_the_reference_series() {
        let dir = tempfile::tempdir().unwrap();
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        let main = dir.path().join("ETHUSDT.csv");
        let reference = dir.path().join("BTCUSDT-1s.csv");
        write_csv(&main, Timeframe::M1, start, 40, 2_000.0);
        write_csv(&reference, Timeframe::S1, start, 40 * 60, 60_000.0);
        let mut c = common(dir.path());
        c.candles = main;
        c.max_candles = None;
        let (candles, base, symbol) = load(&c).unwrap();
        let window = 8;
        let without = dataset(&c, &symbol, &candles, base, window).unwrap();
        c.reference = Some(reference);
        let with = dataset(&c, &symbol, &candles, base, window).unwrap();
        assert_eq!(with.len(), without.len());
        assert!(!with.is_empty());
        // The reference series is the last of the five: its channels are the row's tail.
        let shape = with.rows.shape;
        let row = shape.channels * shape.window;
        let ref_len = shape.channels / crate::analysis::input::SERIES * shape.window;
        let last = with.len() - 1;
        let tail =
            |ds: &CnnDataset| ds.rows.series[(last + 1) * row - ref_len..(last + 1) * row].to_vec();
        assert!(tail(&without).iter().all(|&v| v == 0.0));
        assert!(tail(&with).iter().any(|&v| v != 0.0));
        // A reference file that is not 1 s candles is refused.
        c.reference = Some(c.candles.clone());
        assert!(matches!(
            dataset(&c, &symbol, &candles, base, window),
            Err(TrainAppError::ReferenceInterval(60_000))
        ));
    }
}
