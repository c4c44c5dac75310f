//! The `train` command's work: train the pivot CNN or the DQN on a candle file, keep the
//! best checkpoints, and report. The CLI wiring (flags, progress bar) calls these functions.

use crate::analysis::analyze::{AnalyzeError, detect_interval, read_candles};
use crate::cli::Failure;
use crate::market::types::Candle;
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
use crate::models::input::{InputShape, IntervalError, SeriesLayout, TimeScale};
use crate::models::rl_train::{
    DqnModelConfig, MARKET_RECENT, PolicyComparison, RlStateSpec, RlTrainConfig, agent_config,
    compare_policies, rl_features, train_dqn,
};
use crate::models::runtime::{CNN_METRIC, DQN_METRIC};
use crate::models::split::{CheckpointRef, DataSource, Lineage, iso};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Settings shared by both training commands.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainCommon {
    /// Candle file (any layout `analyze` reads, gzip allowed).
    pub candles: PathBuf,
    /// 1 s candles of the reference symbol (same layouts), encoded as the reference series.
    pub reference: Option<PathBuf>,
    /// Use only the last N candles (None: all), of those `until_ms` keeps.
    pub max_candles: Option<usize>,
    /// Train only on candles that close at or before this time, ms (None: all).
    pub until_ms: Option<i64>,
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
    /// The candles' interval is too short for any timeframe slot.
    #[error("candle interval {0} ms is below 1 s; expected a regular interval of at least 1 s")]
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
        "CNN {name:?} checkpoint {id} was trained on candles up to {trained_until_ms} ms, which \
         reaches into the held-out evaluation period starting at open time {held_out_from_ms} \
         ms; train the CNN on candles that end before it (train cnn --until)"
    )]
    CnnSawHeldOut {
        /// CNN model name.
        name: String,
        /// Its best checkpoint.
        id: String,
        /// Last instant the CNN's training candles (its ancestors' included) covered.
        trained_until_ms: i64,
        /// Open time of the newest candle of the first held-out row.
        held_out_from_ms: i64,
    },
    /// The reference file's interval fits neither the data's nor the 1 s series.
    #[error("--reference: {0}")]
    ReferenceInterval(#[from] IntervalError),
    /// The CNN named for the RL state reads another input layout than these candles give.
    #[error(
        "CNN {name:?} checkpoint {id} was trained on the input layout ({trained}), not the one \
         these candles give ({data}): train the DQN on data of the CNN's interval and reference"
    )]
    CnnLayout {
        /// CNN model name.
        name: String,
        /// Its checkpoint.
        id: String,
        /// Its layout.
        trained: String,
        /// The data's.
        data: String,
    },
    /// The checkpoint count is outside the supported range.
    #[error("keep: {0} checkpoints per model; expected 5..=10 (--keep or [models] keep_best)")]
    Keep(usize),
    /// Too little data for the requested split.
    #[error("{0} rows are too few for training and a held-out period")]
    TooFewRows(usize),
    /// No candle of the file closes by `--until`.
    #[error(
        "--until {until}: no candle of {file} closes at or before it (its candles run \
         {first} .. {last}); expected a time after the first candle's close"
    )]
    NothingBefore {
        /// The file.
        file: String,
        /// `--until`, ISO.
        until: String,
        /// First candle open, ISO.
        first: String,
        /// Last candle open, ISO.
        last: String,
    },
    /// `--until` could not be read.
    #[error(transparent)]
    Time(#[from] crate::models::split::TimeArgError),
    /// A file could not be hashed for the lineage.
    #[error("{path}: {source}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CheckpointError,
    },
}

impl From<TrainAppError> for Failure {
    fn from(e: TrainAppError) -> Self {
        match e {
            TrainAppError::Candles(_)
            | TrainAppError::Dataset(_)
            | TrainAppError::Interval(_)
            | TrainAppError::ReferenceInterval(_)
            | TrainAppError::CnnLayout { .. }
            | TrainAppError::NothingBefore { .. } => Failure::input(e),
            TrainAppError::Time(_) => Failure {
                code: crate::cli::EXIT_USAGE,
                error: e.into(),
            },
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
    /// The training range and lineage recorded in the checkpoint.
    pub lineage: Lineage,
    /// Things the user should know (a warm start refused, ...).
    pub notes: Vec<String>,
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
    /// The training range and lineage recorded in the checkpoint.
    pub lineage: Lineage,
    /// Things the user should know (a warm start refused, ...).
    pub notes: Vec<String>,
}

/// The candles of a training run: those closing by `--until`, the last `max_candles` of them.
struct Loaded {
    candles: Vec<Candle>,
    /// Their interval and the timeframe slot that holds it.
    scale: TimeScale,
    symbol: String,
    /// The data file's lineage entry.
    source: DataSource,
}

/// Keeps the candles that close at or before `until_ms` (all without it).
fn until(candles: &mut Vec<Candle>, interval_ms: i64, until_ms: Option<i64>) {
    if let Some(u) = until_ms {
        candles.retain(|c| c.open_time_ms.saturating_add(interval_ms) <= u);
    }
}

fn source(path: &Path, candles: &[Candle], interval_ms: i64) -> Result<DataSource, TrainAppError> {
    let sha256 =
        crate::models::checkpoint::sha256_file(path).map_err(|source| TrainAppError::Hash {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(DataSource {
        file: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        sha256,
        candles: candles.len(),
        interval_ms,
    })
}

/// The candles (closing by `until_ms`, then the last `max_candles`), their timeframe and a
/// symbol name for the samples.
fn load(common: &TrainCommon) -> Result<Loaded, TrainAppError> {
    let mut candles = read_candles(&common.candles)?.candles;
    // The interval of the whole file: a short remainder before --until could look irregular.
    let interval = detect_interval(&candles);
    let (first, last) = (
        candles.first().map(|c| c.open_time_ms),
        candles.last().map(|c| c.open_time_ms),
    );
    until(&mut candles, interval, common.until_ms);
    if let (Some(u), true) = (common.until_ms, candles.is_empty()) {
        return Err(TrainAppError::NothingBefore {
            file: common.candles.display().to_string(),
            until: iso(u),
            first: first.map_or_else(|| "none".into(), iso),
            last: last.map_or_else(|| "none".into(), iso),
        });
    }
    if let Some(n) = common.max_candles
        && candles.len() > n
    {
        candles.drain(..candles.len() - n);
    }
    let scale = TimeScale::new(interval, candles.first().map_or(0, |c| c.open_time_ms))
        .ok_or(TrainAppError::Interval(interval))?;
    let symbol = common.candles.file_stem().map_or_else(
        || "HISTORY".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let source = source(&common.candles, &candles, interval)?;
    Ok(Loaded {
        candles,
        scale,
        symbol,
        source,
    })
}

/// The reference symbol's candles closing by `--until` (of the data's interval, or 1 s
/// beside 1s/1m/1h/1d data), if a file was given, its lineage entry, and the input layout
/// the data and the reference give.
fn load_reference(
    common: &TrainCommon,
    scale: &TimeScale,
) -> Result<(Vec<Candle>, Option<DataSource>, SeriesLayout), TrainAppError> {
    let Some(path) = &common.reference else {
        return Ok((Vec::new(), None, SeriesLayout::of(scale, None)?));
    };
    let mut candles = read_candles(path)?.candles;
    let interval = detect_interval(&candles);
    let layout = SeriesLayout::of(scale, (!candles.is_empty()).then_some(interval))?;
    until(&mut candles, interval, common.until_ms);
    let src = source(path, &candles, interval)?;
    Ok((candles, Some(src), layout))
}

/// The training samples of both commands: the candles replayed with the reference series.
fn dataset(
    loaded: &Loaded,
    reference: &[Candle],
    window: usize,
) -> Result<CnnDataset, TrainAppError> {
    Ok(CnnDataset::build(
        &loaded.symbol,
        &loaded.candles,
        reference,
        &DatasetConfig::scaled(loaded.scale, window),
    )?)
}

/// True when a CNN of `cfg` reads the layout `layout` (a config without one, from older
/// builds, reads the 1s/1m/1h/1d layout it was built for).
fn reads(cfg: &CnnConfig, layout: &SeriesLayout) -> bool {
    match cfg.layout {
        Some(l) => l == *layout,
        None => layout.is_standard(),
    }
}

fn range(candles: &[Candle], interval_ms: i64) -> DataRange {
    DataRange {
        start_ms: candles.first().map_or(0, |c| c.open_time_ms),
        end_ms: candles.last().map_or(0, |c| c.open_time_ms),
        interval_ms,
    }
}

/// Why a checkpoint may not be the parent of a run limited by `until_ms`, if it may not: its
/// ancestry is unrecorded or it learned from candles after `until_ms` (warm-starting from it
/// would carry them into a model meant to know nothing after that time).
fn parent_refusal(meta: &CheckpointMeta, until_ms: Option<i64>) -> Option<String> {
    let u = until_ms?;
    let name = format!("{}/{}", meta.model_name, meta.id);
    match meta.lineage.hull() {
        None => Some(format!(
            "not warm-starting from {name}: its training range is not recorded, so it may \
             have learned from candles after --until {}; training from fresh weights",
            iso(u)
        )),
        Some(h) if h.to_ms > u => Some(format!(
            "not warm-starting from {name}: it learned from candles up to {}, after --until \
             {}; training from fresh weights",
            iso(h.to_ms),
            iso(u)
        )),
        Some(_) => None,
    }
}

/// The lineage of a run on `candles` (and `reference`), from `parent` if warm-started.
fn lineage_of(
    loaded: &Loaded,
    reference: Option<DataSource>,
    parent: Option<&CheckpointMeta>,
    cnn: Option<&CheckpointMeta>,
    until_ms: Option<i64>,
) -> Lineage {
    let own = range(&loaded.candles, loaded.scale.interval_ms);
    let mut ranges = vec![own];
    let mut complete = true;
    if let Some(p) = parent {
        ranges.extend(p.lineage.training_ranges.iter().copied());
        complete = p.lineage.complete;
    }
    let as_ref = |m: &CheckpointMeta| CheckpointRef {
        model: m.model_name.clone(),
        id: m.id.clone(),
    };
    Lineage {
        data: Some(loaded.source.clone()),
        reference,
        parent: parent.map(as_ref),
        cnn: cnn.map(as_ref),
        until_ms,
        training_ranges: ranges,
        complete,
    }
}

/// Share of level-`l` targets that are highs and their median time offset, per level, over
/// `rows` (targets known by `cutoff_ms` only): the class prior and typical horizon `evaluate`
/// compares the model with.
fn priors(ds: &CnnDataset, rows: &[usize], cutoff_ms: i64, metrics: &mut BTreeMap<String, f64>) {
    for l in 0..crate::analysis::pivots::LEVELS {
        let known: Vec<_> = rows
            .iter()
            .filter(|&&r| ds.target_known_ms[r][l] <= cutoff_ms)
            .filter_map(|&r| ds.targets[r][l])
            .collect();
        if known.is_empty() {
            continue;
        }
        let high = known.iter().filter(|t| t.high).count();
        let mut times: Vec<f32> = known.iter().map(|t| t.time_offset).collect();
        times.sort_by(f32::total_cmp);
        metrics.insert(
            format!("l{}_{PRIOR_HIGH}", l + 1),
            high as f64 / known.len() as f64,
        );
        metrics.insert(
            format!("l{}_{MEDIAN_TIME}", l + 1),
            f64::from(times[times.len() / 2]),
        );
    }
}

/// Metric suffix: share of training targets that are highs (`l1_prior_high`, ...).
pub const PRIOR_HIGH: &str = "prior_high";
/// Metric suffix: median training target time offset (`l1_median_time_offset`, ...).
pub const MEDIAN_TIME: &str = "median_time_offset";

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
/// window and sizes, unless `--until` rules it out) on samples replayed from the candles, and
/// saves a checkpoint ranked by validation loss with its training range and lineage.
pub fn run_train_cnn(
    args: &TrainCnnArgs,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainCnnSummary, TrainAppError> {
    let device = device_from_config(&args.common.device)?;
    tch::manual_seed(args.common.seed as i64);
    let loaded = load(&args.common)?;
    let base = loaded.scale.slot;
    let (reference, ref_source, layout) = load_reference(&args.common, &loaded.scale)?;
    let mut notes = Vec::new();
    let warm = load_cnn(&args.common, &args.model_name, device)?
        .filter(|(m, _)| m.net.config().timeframe == base && reads(&m.net.config(), &layout))
        .filter(
            |(_, meta)| match parent_refusal(meta, args.common.until_ms) {
                Some(note) => {
                    notes.push(note);
                    false
                }
                None => true,
            },
        );
    let warm_start = warm.is_some();
    let (mut model, parent) = match warm {
        Some((m, meta)) => (m, Some(meta)),
        None => {
            let mut c = CnnConfig::small(InputShape::encoded(args.common.window));
            c.timeframe = base;
            (CnnModel::new(c, device), None)
        }
    };
    // The layout is recorded with the config; the network does not depend on it.
    let cfg = CnnConfig {
        layout: Some(layout),
        ..model.net.config()
    };
    let ds = dataset(&loaded, &reference, cfg.input.window)?;
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
        ("epochs_run".to_string(), report.epochs_run as f64),
    ]);
    for (l, m) in v.levels.iter().enumerate() {
        // A level without validation samples has no accuracy to record.
        if m.samples == 0 {
            continue;
        }
        metrics.insert(
            format!("l{}_direction_accuracy", l + 1),
            m.direction_accuracy,
        );
        metrics.insert(format!("l{}_price_error_bp", l + 1), m.price_error_bp);
        metrics.insert(format!("l{}_time_error_bars", l + 1), m.time_error_bars);
    }
    let (train_rows, val_rows) = ds.split(args.val_fraction);
    let cutoff = ds.t_ms.get(val_rows.start).copied().unwrap_or(i64::MAX);
    priors(&ds, &train_rows.collect::<Vec<_>>(), cutoff, &mut metrics);
    let lineage = lineage_of(
        &loaded,
        ref_source,
        parent.as_ref(),
        None,
        args.common.until_ms,
    );
    let saved = ckpt.save_with(
        &model.vs,
        &cfg,
        metrics,
        range(&loaded.candles, loaded.scale.interval_ms),
        lineage.clone(),
    )?;
    Ok(TrainCnnSummary {
        candles: loaded.candles.len(),
        warm_start,
        epochs: (report.epochs_run, report.best_epoch),
        validation: report.validation,
        checkpoint: (saved.meta.id, saved.kept),
        lineage,
        notes,
    })
}

/// Trains the DQN on the earlier rows, evaluates it on the held-out later rows against
/// buy-and-hold, flat and random, and saves a checkpoint ranked by held-out return, bound to
/// the CNN whose features it learned.
pub fn run_train_rl(
    args: &TrainRlArgs,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<TrainRlSummary, TrainAppError> {
    let device = device_from_config(&args.common.device)?;
    tch::manual_seed(args.common.seed as i64);
    let loaded = load(&args.common)?;
    let base = loaded.scale.slot;
    let (reference, ref_source, layout) = load_reference(&args.common, &loaded.scale)?;
    let cnn = match &args.cnn_model {
        Some(name) => Some(
            load_cnn(&args.common, name, device)?
                .ok_or_else(|| TrainAppError::NoCnn(name.clone()))?,
        ),
        None => None,
    };
    if let (Some((m, meta)), Some(name)) = (&cnn, &args.cnn_model) {
        let c = m.net.config();
        if c.timeframe != base || !reads(&c, &layout) {
            return Err(TrainAppError::CnnLayout {
                name: name.clone(),
                id: meta.id.clone(),
                trained: c
                    .layout
                    .map_or_else(|| SeriesLayout::LIVE.to_string(), |l| l.to_string()),
                data: layout.to_string(),
            });
        }
    }
    let window = cnn
        .as_ref()
        .map_or(args.common.window, |(m, _)| m.net.config().input.window);
    let ds = dataset(&loaded, &reference, window)?;
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
    let mut notes = Vec::new();
    let cnn_ref = cnn_meta.as_ref().map(|m| CheckpointRef {
        model: m.model_name.clone(),
        id: m.id.clone(),
    });
    let warm = warm.loaded.filter(|(_, meta)| {
        // A DQN learned on another CNN's features would carry that CNN's meaning over.
        if meta.lineage.cnn != cnn_ref {
            notes.push(format!(
                "not warm-starting from {}/{}: it learned its state from {}, not {}; \
                 training from fresh weights",
                meta.model_name,
                meta.id,
                meta.lineage
                    .cnn
                    .as_ref()
                    .map_or_else(|| "no recorded CNN".to_string(), ToString::to_string),
                cnn_ref
                    .as_ref()
                    .map_or_else(|| "no CNN".to_string(), ToString::to_string)
            ));
            return false;
        }
        match parent_refusal(meta, args.common.until_ms) {
            Some(note) => {
                notes.push(note);
                false
            }
            None => true,
        }
    });
    let (mut agent, parent) = match warm {
        Some((mut a, meta)) => {
            let _ = a.sync_target();
            (a, Some(meta))
        }
        None => (DqnAgent::new(cfg, device)?, None),
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
    let lineage = lineage_of(
        &loaded,
        ref_source,
        parent.as_ref(),
        cnn_meta.as_ref(),
        args.common.until_ms,
    );
    let saved = ckpt.save_with(
        &agent.vs,
        &model_cfg,
        metrics,
        range(&loaded.candles, loaded.scale.interval_ms),
        lineage.clone(),
    )?;
    Ok(TrainRlSummary {
        candles: loaded.candles.len(),
        updates: rep.updates,
        held_out: cmp,
        checkpoint: (saved.meta.id, saved.kept),
        lineage,
        notes,
    })
}

/// Refuses a CNN whose training candles reach the held-out period that starts with the
/// candle opened at `held_out_from_ms` (the DQN's evaluation would use features fitted to it).
fn check_cnn_before(
    meta: &CheckpointMeta,
    name: &str,
    held_out_from_ms: i64,
) -> Result<(), TrainAppError> {
    // Its ancestors count too: a warm start carries what they learned. The last instant a
    // candle of the lineage covered is its close minus one ms.
    let until = meta
        .lineage
        .hull()
        .map_or(meta.data_range.end_ms, |h| h.to_ms - 1)
        .max(meta.data_range.end_ms);
    if until >= held_out_from_ms {
        return Err(TrainAppError::CnnSawHeldOut {
            name: name.to_string(),
            id: meta.id.clone(),
            trained_until_ms: until,
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
    let until_ms = c
        .until
        .as_deref()
        .map(|t| crate::models::split::parse_instant("--until", t))
        .transpose()?;
    Ok(TrainCommon {
        candles: c.data,
        reference: c.reference,
        max_candles: c.max_candles,
        until_ms,
        window: c.window,
        device: c.device.unwrap_or_else(|| config.models.device.clone()),
        checkpoint_dir: c
            .checkpoints
            .unwrap_or_else(|| config.models.checkpoint_path(&config.paths.data_dir)),
        keep,
        seed: c.seed,
    })
}

/// One line per level: samples and the errors, or n/a for a level without samples.
pub fn level_line(level: usize, m: &crate::models::cnn_train::LevelMetrics) -> String {
    if m.samples == 0 {
        return format!("  level {level}: n/a (no samples)");
    }
    format!(
        "  level {level}: {} samples, direction accuracy {:.3}, price error {:.1} bp, time \
         error {:.1} bars",
        m.samples, m.direction_accuracy, m.price_error_bp, m.time_error_bars
    )
}

fn print_lineage(l: &Lineage) {
    match l.known_ranges() {
        Some(r) => {
            let spans: Vec<String> = r.iter().map(ToString::to_string).collect();
            println!("training range {}", spans.join(" + "));
        }
        None => println!(
            "training range: not fully recorded (warm-started from a checkpoint without one)"
        ),
    }
    if let Some(p) = &l.parent {
        println!("warm-started from {p}");
    }
    if let Some(c) = &l.cnn {
        println!("state features from CNN {c}");
    }
}

fn kept(k: bool) -> &'static str {
    if k {
        " (kept among the best)"
    } else {
        " (not among the best; deleted)"
    }
}

/// `mmtrader train cnn|rl`: trains with progress (a bar, or lines off a terminal) and prints
/// the metrics, the training range and the lineage.
pub fn run_cli(
    config: crate::config::Config,
    cmd: crate::cli::TrainCommand,
) -> Result<i32, Failure> {
    use crate::app::progress::Progress;
    use crate::cli::TrainCommand;
    match cmd {
        TrainCommand::Cnn(a) => {
            let args = TrainCnnArgs {
                common: common_from_cli(&config, a.common)?,
                model_name: a.model,
                epochs: a.epochs,
                val_fraction: a.val_fraction,
            };
            let bar = Progress::new("cnn epoch", args.epochs as u64);
            let summary = run_train_cnn(&args, &mut |p| {
                let msg = match p.validation {
                    Some(v) => format!("loss {:.4} val {v:.4}", p.train),
                    None => format!("loss {:.4}", p.train),
                };
                bar.update(p.step as u64, p.total as u64, &msg);
            })?;
            let (run, best) = summary.epochs;
            let end = if run < args.epochs {
                format!("early stop, kept epoch {best}")
            } else {
                format!("done, kept epoch {best}")
            };
            bar.finish(run as u64, &end);
            for n in &summary.notes {
                println!("note: {n}");
            }
            println!(
                "trained on {} candles{}; epochs run {run} of at most {}, kept epoch {best}",
                summary.candles,
                if summary.warm_start {
                    " (warm start)"
                } else {
                    ""
                },
                args.epochs
            );
            let v = &summary.validation;
            println!(
                "validation loss {:.4}, action accuracy {:.3}",
                v.loss, v.action_accuracy
            );
            for (i, l) in v.levels.iter().enumerate() {
                println!("{}", level_line(i + 1, l));
            }
            print_lineage(&summary.lineage);
            println!(
                "checkpoint {}{}",
                summary.checkpoint.0,
                kept(summary.checkpoint.1)
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
            let bar = Progress::new("dqn episode", args.episodes as u64);
            let summary = run_train_rl(&args, &mut |p| {
                bar.update(
                    p.step as u64,
                    p.total as u64,
                    &format!("return {:.4}", p.train),
                );
            })?;
            bar.finish(args.episodes as u64, "done");
            for n in &summary.notes {
                println!("note: {n}");
            }
            println!(
                "trained on {} candles with {} updates",
                summary.candles, summary.updates
            );
            let json = serde_json::to_string_pretty(&summary.held_out).unwrap_or_default();
            println!("held-out evaluation (agent vs flat, buy-and-hold, random):\n{json}");
            print_lineage(&summary.lineage);
            println!(
                "checkpoint {}{}",
                summary.checkpoint.0,
                kept(summary.checkpoint.1)
            );
        }
    }
    Ok(crate::cli::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Timeframe;

    fn common(dir: &std::path::Path) -> TrainCommon {
        TrainCommon {
            candles: crate::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json"),
            reference: None,
            max_candles: Some(700),
            until_ms: None,
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
            until: None,
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
        let loaded = load(&c).unwrap();
        let window = 8;
        let (none, _, layout) = load_reference(&c, &loaded.scale).unwrap();
        assert_eq!(layout.intervals_ms, [0, 60_000, 3_600_000, 86_400_000, 0]);
        let without = dataset(&loaded, &none, window).unwrap();
        c.reference = Some(reference);
        let (ref_1s, source, layout) = load_reference(&c, &loaded.scale).unwrap();
        assert_eq!(source.unwrap().file, "BTCUSDT-1s.csv");
        assert_eq!(layout.intervals_ms[4], 1_000);
        let with = dataset(&loaded, &ref_1s, window).unwrap();
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
        // A reference at the data's own interval fills it too (the layout says 1m), since
        // users have two symbols' files of one interval, not 1 s files (issue 14).
        let reference_1m = dir.path().join("BTCUSDT-1m.csv");
        write_csv(&reference_1m, Timeframe::M1, start, 40, 60_000.0);
        c.reference = Some(reference_1m);
        let (ref_1m, _, layout) = load_reference(&c, &loaded.scale).unwrap();
        assert_eq!(layout.intervals_ms[4], 60_000);
        let with_1m = dataset(&loaded, &ref_1m, window).unwrap();
        assert_eq!(with_1m.len(), without.len());
        assert!(tail(&with_1m).iter().any(|&v| v != 0.0));
        assert_ne!(tail(&with_1m), tail(&with));
        // A reference of a third interval fits neither way: refused, naming both.
        let reference_1h = dir.path().join("BTCUSDT-1h.csv");
        write_csv(&reference_1h, Timeframe::H1, start, 40, 60_000.0);
        c.reference = Some(reference_1h);
        let err = load_reference(&c, &loaded.scale).unwrap_err();
        assert!(
            matches!(
                err,
                TrainAppError::ReferenceInterval(IntervalError::Reference {
                    data_ms: 60_000,
                    reference_ms: 3_600_000
                })
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("--reference: reference candles of 3600000 ms")
        );
    }

    #[test]
    fn until_trains_only_on_earlier_candles_and_the_lineage_says_so() {
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let all = read_candles(&common(dir.path()).candles).unwrap().candles;
        let hour = Timeframe::H1.millis();
        // T is the close of candle 1000: candles 0..=999 close by it.
        let t = all[1000].open_time_ms;
        let mut c = common(dir.path());
        c.max_candles = Some(400);
        c.until_ms = Some(t);
        let args = TrainCnnArgs {
            common: c.clone(),
            model_name: "pivot_cnn".into(),
            epochs: 1,
            val_fraction: 0.2,
        };
        let s = run_train_cnn(&args, &mut |_| {}).unwrap();
        assert_eq!(s.candles, 400);
        let l = &s.lineage;
        assert!(l.complete && l.parent.is_none());
        assert_eq!(l.until_ms, Some(t));
        assert_eq!(
            l.training_ranges,
            vec![DataRange {
                start_ms: all[600].open_time_ms,
                end_ms: all[999].open_time_ms,
                interval_ms: hour,
            }]
        );
        assert_eq!(l.hull().unwrap().to_ms, t, "the last candle closes at T");
        let data = l.data.as_ref().unwrap();
        assert_eq!(data.file, "BTC_USDT-1h.json");
        assert_eq!(
            data.sha256,
            crate::models::checkpoint::sha256_file(&c.candles).unwrap()
        );
        // The checkpoint on disk records the same, and the class prior of the training
        // targets the evaluation's baselines need.
        let ck = manager(&c, "pivot_cnn", CNN_METRIC, MetricGoal::Minimize).unwrap();
        let meta = ck.list().unwrap().remove(0);
        assert_eq!(meta.lineage, *l);
        let prior = meta.metrics[&format!("l1_{PRIOR_HIGH}")];
        assert!((0.0..=1.0).contains(&prior), "{prior}");
        assert!(meta.metrics.contains_key(&format!("l1_{MEDIAN_TIME}")));

        // Without --until, a later run warm-starts from it and inherits its range.
        let mut later = c.clone();
        later.until_ms = None;
        let args2 = TrainCnnArgs {
            common: later,
            ..args.clone()
        };
        let s2 = run_train_cnn(&args2, &mut |_| {}).unwrap();
        assert!(s2.warm_start && s2.notes.is_empty());
        assert_eq!(s2.lineage.parent.as_ref().unwrap().id, s.checkpoint.0);
        assert_eq!(s2.lineage.training_ranges.len(), 2);
        assert_eq!(s2.lineage.training_ranges[1], l.training_ranges[0]);
        // A model whose only checkpoint learned from candles after T: a run with --until T
        // starts from fresh weights and says why.
        let late = TrainCnnArgs {
            model_name: "late_cnn".into(),
            ..args2.clone()
        };
        run_train_cnn(&late, &mut |_| {}).unwrap();
        let s3 = run_train_cnn(
            &TrainCnnArgs {
                model_name: "late_cnn".into(),
                ..args.clone()
            },
            &mut |_| {},
        )
        .unwrap();
        assert!(!s3.warm_start);
        assert!(s3.lineage.parent.is_none());
        assert_eq!(s3.notes.len(), 1);
        assert!(
            s3.notes[0].contains("not warm-starting from late_cnn/")
                && s3.notes[0].contains("after --until 2021-"),
            "{:?}",
            s3.notes
        );
        // A time before every candle's close is refused, naming the flag and the file's span.
        let mut early = c.clone();
        early.until_ms = Some(all[0].open_time_ms);
        let err = run_train_cnn(
            &TrainCnnArgs {
                common: early,
                ..args.clone()
            },
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, TrainAppError::NothingBefore { .. }));
        let msg = err.to_string();
        assert!(
            msg.starts_with("--until 2020-12-01T00:00:00Z: no candle of")
                && msg.contains("2020-12-01T00:00:00Z .. 2021-07-17T20:00:00Z"),
            "{msg}"
        );
        // The CLI form names the flag and the accepted forms.
        let mut cfg = crate::config::Config::default();
        cfg.models.device = "cpu".into();
        let mut bad = cli(None, None);
        bad.until = Some("yesterday".into());
        let err = common_from_cli(&cfg, bad).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--until \"yesterday\": expected an ISO-8601"),
            "{err}"
        );
        assert_eq!(Failure::from(err).code, crate::cli::EXIT_USAGE);
    }

    #[test]
    fn a_dqn_records_its_cnn_and_warm_starts_only_from_one_of_the_same_cnn() {
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let all = read_candles(&common(dir.path()).candles).unwrap().candles;
        let mut c = common(dir.path());
        c.max_candles = Some(300);
        c.until_ms = Some(all[2000].open_time_ms);
        let cnn = |name: &str| {
            run_train_cnn(
                &TrainCnnArgs {
                    common: c.clone(),
                    model_name: name.into(),
                    epochs: 1,
                    val_fraction: 0.2,
                },
                &mut |_| {},
            )
            .unwrap()
        };
        let a = cnn("cnn_a");
        let b = cnn("cnn_b");
        // The DQN's period ends later, so both CNNs end before its held-out part.
        let mut d = common(dir.path());
        d.max_candles = Some(600);
        d.until_ms = Some(all[2300].open_time_ms);
        let rl = |cnn: &str| TrainRlArgs {
            common: d.clone(),
            model_name: "dqn_agent".into(),
            cnn_model: Some(cnn.into()),
            episodes: 1,
            episode_len: 50,
            held_out_fraction: 0.25,
            env: EnvConfig::default(),
        };
        let r1 = run_train_rl(&rl("cnn_a"), &mut |_| {}).unwrap();
        let bound = r1.lineage.cnn.clone().unwrap();
        assert_eq!(
            (bound.model.as_str(), bound.id.as_str()),
            ("cnn_a", a.checkpoint.0.as_str())
        );
        assert!(r1.lineage.parent.is_none());
        // Same CNN: warm start. Another CNN: fresh weights, with the reason.
        let r2 = run_train_rl(&rl("cnn_a"), &mut |_| {}).unwrap();
        assert!(r2.notes.is_empty(), "{:?}", r2.notes);
        assert!(r2.lineage.parent.is_some());
        let r3 = run_train_rl(&rl("cnn_b"), &mut |_| {}).unwrap();
        assert!(r3.lineage.parent.is_none());
        assert_eq!(r3.lineage.cnn.unwrap().id, b.checkpoint.0);
        assert!(
            r3.notes
                .iter()
                .any(|n| n.contains("learned its state from cnn_a/")),
            "{:?}",
            r3.notes
        );
    }
}
