//! Checkpoints: safetensors weights plus a JSON metadata file per checkpoint, the best K kept
//! per model by a declared metric, written atomically and verified by SHA-256 on load.
//!
//! Layout: `<root>/<model>/<id>.safetensors` and `<id>.json`. The JSON is written last, so a
//! checkpoint exists only once its metadata is in place; temporary files start with `.tmp-`
//! and are never listed. Deletion removes the JSON first for the same reason.
//!
//! The metadata records the input layout version the model reads
//! ([`INPUT_LAYOUT_VERSION`]) and the model's own config, so a checkpoint of another layout is
//! refused with [`check_layout`]'s message and a model is rebuilt with the sizes it was saved
//! with ([`CheckpointManager::load_best_model`]).

use super::split::Lineage;
use crate::analysis::encoding::{INPUT_LAYOUT_VERSION, LayoutMismatch, check_layout};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tch::nn::VarStore;

const TMP_PREFIX: &str = ".tmp-";

/// Whether a larger or a smaller metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricGoal {
    /// Larger is better (accuracy, return).
    Maximize,
    /// Smaller is better (loss, error).
    Minimize,
}

/// Time span of the data a checkpoint was trained on, ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataRange {
    /// First candle's open time.
    pub start_ms: i64,
    /// Last candle's open time.
    pub end_ms: i64,
    /// Candle interval, ms, so the last candle's close is known (0: not recorded).
    #[serde(default)]
    pub interval_ms: i64,
}

/// What is stored beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Unique id (also the file stem).
    pub id: String,
    /// Model name (the folder).
    pub model_name: String,
    /// Input layout the weights were trained on.
    pub input_layout_version: u32,
    /// Name of the ranking metric.
    pub metric_name: String,
    /// All recorded metrics, the ranking one included.
    pub metrics: BTreeMap<String, f64>,
    /// Training data span.
    pub data_range: DataRange,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// Weights file name inside the model folder.
    pub weights_file: String,
    /// Lower-case hex SHA-256 of the weights file.
    pub weights_sha256: String,
    /// The model's config (e.g. `CnnConfig`), as JSON; null in checkpoints saved without.
    #[serde(default)]
    pub model_config: serde_json::Value,
    /// Training ranges, data, parent and CNN (empty in checkpoints saved without).
    #[serde(default)]
    pub lineage: Lineage,
}

impl CheckpointMeta {
    /// The ranking metric's value (NaN when absent, which ranks last).
    pub fn metric(&self) -> f64 {
        self.metrics
            .get(&self.metric_name)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// Manager settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    /// Root folder of all models' checkpoints.
    pub root: PathBuf,
    /// Model name (one folder per model).
    pub model_name: String,
    /// Checkpoints kept (best K).
    pub keep: usize,
    /// Ranking metric name.
    pub metric: String,
    /// Direction of the ranking metric.
    pub goal: MetricGoal,
}

/// Why a checkpoint operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Metadata is not valid JSON of the expected shape.
    #[error("{path}: bad checkpoint metadata: {source}")]
    Json {
        /// The metadata file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// libtorch could not save or load the weights.
    #[error("{path}: {source}")]
    Torch {
        /// The weights file.
        path: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The checkpoint was trained on another input layout.
    #[error("checkpoint {id}: {source}")]
    Layout {
        /// Checkpoint id.
        id: String,
        /// The mismatch, as `check_layout` explains it.
        source: LayoutMismatch,
    },
    /// The stored model config is missing, unreadable, or builds no model.
    #[error("checkpoint {id}: model config: {message}")]
    Config {
        /// Checkpoint id.
        id: String,
        /// What was wrong.
        message: String,
    },
    /// The checkpoint's lineage rules it out here (e.g. a DQN trained with another CNN).
    #[error("checkpoint {id}: {message}")]
    Lineage {
        /// Checkpoint id.
        id: String,
        /// Why.
        message: String,
    },
    /// The checkpoint belongs to another model.
    #[error("checkpoint {id} belongs to model {found:?}, not {expected:?}")]
    WrongModel {
        /// Checkpoint id.
        id: String,
        /// Its model name.
        found: String,
        /// The manager's model name.
        expected: String,
    },
    /// The weights file does not match its recorded hash (corrupt or truncated).
    #[error("{path}: SHA-256 {actual} does not match the recorded {expected}")]
    Checksum {
        /// The weights file.
        path: PathBuf,
        /// Recorded hash.
        expected: String,
        /// Hash of the file on disk.
        actual: String,
    },
    /// The weights do not fit the model (another architecture or size).
    #[error(
        "checkpoint {id}: variable {variable} has shape {found:?} on disk, model expects {expected:?}"
    )]
    Incompatible {
        /// Checkpoint id.
        id: String,
        /// First mismatching variable.
        variable: String,
        /// Shape on disk (None: missing).
        found: Option<Vec<i64>>,
        /// Shape in the model.
        expected: Vec<i64>,
    },
    /// A metric needed for ranking was not supplied.
    #[error("metrics lack the ranking metric {0:?}")]
    MissingMetric(String),
    /// The model name cannot be a folder name.
    #[error("model name {0:?} must be non-empty letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// `keep` is zero.
    #[error("keep must be at least 1")]
    BadKeep,
}

/// Result of [`CheckpointManager::save`].
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOutcome {
    /// The new checkpoint's metadata.
    pub meta: CheckpointMeta,
    /// False when it ranked below the best K and was removed at once.
    pub kept: bool,
    /// Ids removed to keep the bound.
    pub removed: Vec<String>,
}

/// Checkpoints passed over, each with its id and the reason.
type Skipped = Vec<(String, CheckpointError)>;

/// Result of [`CheckpointManager::load_best`].
#[derive(Debug)]
pub struct LoadReport {
    /// The checkpoint now in the VarStore, if any was usable.
    pub loaded: Option<CheckpointMeta>,
    /// Checkpoints passed over with the reason: unreadable metadata first, then best first.
    pub skipped: Vec<(String, CheckpointError)>,
}

/// Result of [`CheckpointManager::load_best_model`].
#[derive(Debug)]
pub struct ModelLoad<M> {
    /// The rebuilt model with its checkpoint, if any was usable.
    pub loaded: Option<(M, CheckpointMeta)>,
    /// Checkpoints passed over with the reason: unreadable metadata first, then best first.
    pub skipped: Vec<(String, CheckpointError)>,
}

/// Keeps the best K checkpoints of one model.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    cfg: CheckpointConfig,
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn fsync_file(path: &Path) -> Result<(), CheckpointError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn fsync_dir(dir: &Path) -> Result<(), CheckpointError> {
    // Directory fsync makes the renames durable; platforms without it (Windows) skip it.
    match fs::File::open(dir).and_then(|f| f.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

impl CheckpointManager {
    /// Opens (creating) the model's folder and removes leftovers of interrupted writes.
    pub fn new(cfg: CheckpointConfig) -> Result<Self, CheckpointError> {
        let name_ok = !cfg.model_name.is_empty()
            && !cfg.model_name.starts_with('.')
            && cfg
                .model_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(CheckpointError::BadName(cfg.model_name));
        }
        if cfg.keep == 0 {
            return Err(CheckpointError::BadKeep);
        }
        let dir = cfg.root.join(&cfg.model_name);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let m = Self { cfg, dir };
        m.clean_leftovers()?;
        Ok(m)
    }

    /// The model's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Settings.
    pub fn config(&self) -> &CheckpointConfig {
        &self.cfg
    }

    fn clean_leftovers(&self) -> Result<(), CheckpointError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let orphan_weights = name.ends_with(".safetensors")
                && !name.starts_with(TMP_PREFIX)
                && !path.with_extension("json").exists();
            if name.starts_with(TMP_PREFIX) || orphan_weights {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Saves `vs` built from `model_config` with `metrics` (which must contain the ranking
    /// metric), then prunes to K. The lineage is left unrecorded (see [`Self::save_with`]).
    pub fn save(
        &self,
        vs: &VarStore,
        model_config: &impl Serialize,
        metrics: BTreeMap<String, f64>,
        data_range: DataRange,
    ) -> Result<SaveOutcome, CheckpointError> {
        self.save_with(vs, model_config, metrics, data_range, Lineage::default())
    }

    /// [`Self::save`] with the checkpoint's lineage (training ranges, data, parent, CNN).
    pub fn save_with(
        &self,
        vs: &VarStore,
        model_config: &impl Serialize,
        metrics: BTreeMap<String, f64>,
        data_range: DataRange,
        lineage: Lineage,
    ) -> Result<SaveOutcome, CheckpointError> {
        if !metrics.contains_key(&self.cfg.metric) {
            return Err(CheckpointError::MissingMetric(self.cfg.metric.clone()));
        }
        let model_config =
            serde_json::to_value(model_config).map_err(|e| CheckpointError::Config {
                id: "(new)".into(),
                message: e.to_string(),
            })?;
        let created_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let id = format!(
            "{created_ms}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let weights_file = format!("{id}.safetensors");
        let weights = self.dir.join(&weights_file);
        let tmp_weights = self.dir.join(format!("{TMP_PREFIX}{weights_file}"));
        vs.save(&tmp_weights)
            .map_err(|source| CheckpointError::Torch {
                path: tmp_weights.clone(),
                source,
            })?;
        fsync_file(&tmp_weights)?;
        let weights_sha256 = sha256_file(&tmp_weights)?;
        fs::rename(&tmp_weights, &weights).map_err(io_err(&weights))?;
        let meta = CheckpointMeta {
            id: id.clone(),
            model_name: self.cfg.model_name.clone(),
            input_layout_version: INPUT_LAYOUT_VERSION,
            metric_name: self.cfg.metric.clone(),
            metrics,
            data_range,
            created_ms,
            weights_file,
            weights_sha256,
            model_config,
            lineage,
        };
        let json_path = self.dir.join(format!("{id}.json"));
        let tmp_json = self.dir.join(format!("{TMP_PREFIX}{id}.json"));
        let body = serde_json::to_vec_pretty(&meta).map_err(|source| CheckpointError::Json {
            path: json_path.clone(),
            source,
        })?;
        {
            let mut f = fs::File::create(&tmp_json).map_err(io_err(&tmp_json))?;
            f.write_all(&body).map_err(io_err(&tmp_json))?;
            f.sync_all().map_err(io_err(&tmp_json))?;
        }
        fs::rename(&tmp_json, &json_path).map_err(io_err(&json_path))?;
        fsync_dir(&self.dir)?;
        let removed = self.prune()?;
        let kept = !removed.contains(&id);
        Ok(SaveOutcome {
            meta,
            kept,
            removed,
        })
    }

    fn better(&self, a: f64, b: f64) -> std::cmp::Ordering {
        // NaN ranks last whatever the goal.
        match (a.is_nan(), b.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => match self.cfg.goal {
                MetricGoal::Maximize => b.total_cmp(&a),
                MetricGoal::Minimize => a.total_cmp(&b),
            },
        }
    }

    /// Every readable checkpoint of this model, best first (ties: newest first); the loaders
    /// report the unreadable ones in their `skipped`.
    pub fn list(&self) -> Result<Vec<CheckpointMeta>, CheckpointError> {
        Ok(self.scan()?.0)
    }

    /// The readable checkpoints, best first, and the metadata files that could not be read
    /// (by file stem, with the reason).
    fn scan(&self) -> Result<(Vec<CheckpointMeta>, Skipped), CheckpointError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(TMP_PREFIX) || !name.ends_with(".json") {
                continue;
            }
            match read_meta(&path) {
                Ok(m) => out.push(m),
                Err(e) => unreadable.push((name.trim_end_matches(".json").to_string(), e)),
            }
        }
        out.sort_by(|a, b| {
            self.better(a.metric(), b.metric())
                .then(b.created_ms.cmp(&a.created_ms))
                .then(b.id.cmp(&a.id))
        });
        unreadable.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, unreadable))
    }

    fn prune(&self) -> Result<Vec<String>, CheckpointError> {
        let all = self.list()?;
        let mut removed = Vec::new();
        for m in all.iter().skip(self.cfg.keep) {
            self.remove(m)?;
            removed.push(m.id.clone());
        }
        if !removed.is_empty() {
            fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    fn remove(&self, m: &CheckpointMeta) -> Result<(), CheckpointError> {
        let json = self.dir.join(format!("{}.json", m.id));
        fs::remove_file(&json).map_err(io_err(&json))?;
        let w = self.dir.join(&m.weights_file);
        match fs::remove_file(&w) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&w)(e)),
            _ => Ok(()),
        }
    }

    /// Checks model, layout and hash, then loads the weights into `vs`.
    pub fn load(&self, meta: &CheckpointMeta, vs: &mut VarStore) -> Result<(), CheckpointError> {
        if meta.model_name != self.cfg.model_name {
            return Err(CheckpointError::WrongModel {
                id: meta.id.clone(),
                found: meta.model_name.clone(),
                expected: self.cfg.model_name.clone(),
            });
        }
        check_layout(meta.input_layout_version).map_err(|source| CheckpointError::Layout {
            id: meta.id.clone(),
            source,
        })?;
        // The file name comes from disk, so refuse anything that could leave the folder.
        let w = self.dir.join(
            Path::new(&meta.weights_file)
                .file_name()
                .unwrap_or_default(),
        );
        let actual = sha256_file(&w)?;
        if actual != meta.weights_sha256 {
            return Err(CheckpointError::Checksum {
                path: w,
                expected: meta.weights_sha256.clone(),
                actual,
            });
        }
        let named = tch::Tensor::read_safetensors(&w).map_err(|source| CheckpointError::Torch {
            path: w.clone(),
            source,
        })?;
        let named: std::collections::HashMap<String, tch::Tensor> = named.into_iter().collect();
        let mut vars = vs.variables();
        // Check every variable before copying any, so a mismatch never leaves a half-loaded
        // store behind for the next fallback.
        for (name, var) in &vars {
            match named.get(name) {
                Some(t) if t.size() == var.size() => {}
                found => {
                    return Err(CheckpointError::Incompatible {
                        id: meta.id.clone(),
                        variable: name.clone(),
                        found: found.map(|t| t.size()),
                        expected: var.size(),
                    });
                }
            }
        }
        tch::no_grad(|| {
            for (name, var) in vars.iter_mut() {
                if let Some(src) = named.get(name) {
                    var.f_copy_(&src.to_device(var.device()))?;
                }
            }
            Ok(())
        })
        .map_err(|source| CheckpointError::Torch { path: w, source })
    }

    /// Loads the best usable checkpoint, falling back past corrupt or mismatched ones.
    pub fn load_best(&self, vs: &mut VarStore) -> Result<LoadReport, CheckpointError> {
        let (listed, mut skipped) = self.scan()?;
        for m in listed {
            match self.load(&m, vs) {
                Ok(()) => {
                    return Ok(LoadReport {
                        loaded: Some(m),
                        skipped,
                    });
                }
                Err(e) => skipped.push((m.id.clone(), e)),
            }
        }
        Ok(LoadReport {
            loaded: None,
            skipped,
        })
    }
}

impl CheckpointManager {
    /// Rebuilds the model of checkpoint `meta` from its stored config (`build`) and loads its
    /// weights (model, layout and hash checked as by [`Self::load`]).
    pub fn load_model<C: DeserializeOwned, M>(
        &self,
        meta: &CheckpointMeta,
        build: impl FnOnce(C) -> Result<M, String>,
        vs_of: impl Fn(&mut M) -> &mut VarStore,
    ) -> Result<M, CheckpointError> {
        check_layout(meta.input_layout_version).map_err(|source| CheckpointError::Layout {
            id: meta.id.clone(),
            source,
        })?;
        let config = |message: String| CheckpointError::Config {
            id: meta.id.clone(),
            message,
        };
        let mut model = serde_json::from_value::<C>(meta.model_config.clone())
            .map_err(|e| config(e.to_string()))
            .and_then(|c| build(c).map_err(config))?;
        self.load(meta, vs_of(&mut model))?;
        Ok(model)
    }

    /// Rebuilds the model of the best usable checkpoint from its stored config (`build`), then
    /// loads its weights; falls back past checkpoints of another layout, with an unreadable
    /// config, or with corrupt or mismatched weights.
    pub fn load_best_model<C: DeserializeOwned, M>(
        &self,
        build: impl FnMut(C) -> Result<M, String>,
        vs_of: impl Fn(&mut M) -> &mut VarStore,
    ) -> Result<ModelLoad<M>, CheckpointError> {
        self.load_best_model_where(|_| Ok(()), build, vs_of)
    }

    /// [`Self::load_best_model`] past checkpoints `accept` refuses (by their metadata, e.g. a
    /// lineage that does not fit), each skipped with `accept`'s reason.
    pub fn load_best_model_where<C: DeserializeOwned, M>(
        &self,
        accept: impl Fn(&CheckpointMeta) -> Result<(), String>,
        mut build: impl FnMut(C) -> Result<M, String>,
        vs_of: impl Fn(&mut M) -> &mut VarStore,
    ) -> Result<ModelLoad<M>, CheckpointError> {
        let (listed, mut skipped) = self.scan()?;
        for m in listed {
            let id = m.id.clone();
            if let Err(message) = accept(&m) {
                skipped.push((id.clone(), CheckpointError::Lineage { id, message }));
                continue;
            }
            if let Err(source) = check_layout(m.input_layout_version) {
                skipped.push((
                    id,
                    CheckpointError::Layout {
                        id: m.id.clone(),
                        source,
                    },
                ));
                continue;
            }
            let built = serde_json::from_value::<C>(m.model_config.clone())
                .map_err(|e| e.to_string())
                .and_then(&mut build);
            let mut model = match built {
                Ok(model) => model,
                Err(message) => {
                    skipped.push((id.clone(), CheckpointError::Config { id, message }));
                    continue;
                }
            };
            match self.load(&m, vs_of(&mut model)) {
                Ok(()) => {
                    return Ok(ModelLoad {
                        loaded: Some((model, m)),
                        skipped,
                    });
                }
                Err(e) => skipped.push((id, e)),
            }
        }
        Ok(ModelLoad {
            loaded: None,
            skipped,
        })
    }
}

fn read_meta(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let text = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&text).map_err(|source| CheckpointError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A checkpoint passed over at load, kept so the user learns why a model runs without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedCheckpoint {
    /// Model name.
    pub model: String,
    /// Checkpoint id.
    pub id: String,
    /// Full reason.
    pub reason: String,
    /// A few words for a narrow pane (`layout v1 != v2`).
    pub short: String,
}

/// Logs each skipped checkpoint of `model` as a warning and returns them for display.
pub fn report_skipped(
    model: &str,
    skipped: &[(String, CheckpointError)],
) -> Vec<SkippedCheckpoint> {
    skipped
        .iter()
        .map(|(id, e)| {
            tracing::warn!(model, checkpoint = %id, "checkpoint skipped: {e}");
            let short = match e {
                CheckpointError::Layout { source, .. } => {
                    format!("layout v{} != v{}", source.found, source.current)
                }
                CheckpointError::Config { .. } => "model config unusable".to_string(),
                CheckpointError::Lineage { .. } => "lineage does not fit".to_string(),
                _ => "unreadable or corrupt".to_string(),
            };
            SkippedCheckpoint {
                model: model.to_string(),
                id: id.clone(),
                reason: e.to_string(),
                short,
            }
        })
        .collect()
}

/// `N checkpoints skipped: <distinct short reasons>` for `model`, or None when none were.
pub fn skipped_note(skipped: &[SkippedCheckpoint], model: &str) -> Option<String> {
    let mine: Vec<&SkippedCheckpoint> = skipped.iter().filter(|s| s.model == model).collect();
    if mine.is_empty() {
        return None;
    }
    let mut reasons: Vec<&str> = Vec::new();
    for s in &mine {
        if !reasons.contains(&s.short.as_str()) {
            reasons.push(&s.short);
        }
    }
    let plural = if mine.len() == 1 { "" } else { "s" };
    Some(format!(
        "{} checkpoint{plural} skipped: {}",
        mine.len(),
        reasons.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg(root: &Path, keep: usize) -> CheckpointConfig {
        CheckpointConfig {
            root: root.to_path_buf(),
            model_name: "test_model".into(),
            keep,
            metric: "loss".into(),
            goal: MetricGoal::Minimize,
        }
    }

    fn store(value: f64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[4]);
        tch::no_grad(|| {
            let _ = w.shallow_clone().fill_(value);
        });
        vs
    }

    fn value(vs: &VarStore) -> f64 {
        vs.variables()["w"].double_value(&[0])
    }

    fn metrics(loss: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([("loss".to_string(), loss), ("acc".to_string(), 0.5)])
    }

    #[test]
    fn keeps_best_k_and_loads_the_best() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 3)).unwrap();
        for (i, loss) in [0.5, 0.2, 0.9, 0.1, 0.7].iter().enumerate() {
            let out = m
                .save(
                    &store(i as f64),
                    &"test",
                    metrics(*loss),
                    DataRange::default(),
                )
                .unwrap();
            // 0.9 fits while fewer than three exist; 0.7 arrives when three better ones do.
            assert_eq!(out.kept, *loss != 0.7);
        }
        let listed = m.list().unwrap();
        let losses: Vec<f64> = listed.iter().map(|c| c.metric()).collect();
        assert_eq!(losses, vec![0.1, 0.2, 0.5]);
        let files = fs::read_dir(m.dir()).unwrap().count();
        assert_eq!(files, 6, "three weights plus three metadata files");
        let mut vs = store(-1.0);
        let report = m.load_best(&mut vs).unwrap();
        assert_eq!(report.loaded.unwrap().metric(), 0.1);
        assert_eq!(value(&vs), 3.0);
    }

    /// Saves a checkpoint of loss 0.3 (weight 1) and a better one of loss 0.1 (weight 2);
    /// returns the better one.
    fn save_two(m: &CheckpointManager) -> SaveOutcome {
        m.save(&store(1.0), &"test", metrics(0.3), DataRange::default())
            .unwrap();
        m.save(&store(2.0), &"test", metrics(0.1), DataRange::default())
            .unwrap()
    }

    #[test]
    fn corrupt_weights_fall_back_to_the_next_best() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let best = save_two(&m);
        let path = m.dir().join(&best.meta.weights_file);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let mut vs = store(0.0);
        let report = m.load_best(&mut vs).unwrap();
        assert_eq!(report.loaded.unwrap().metric(), 0.3);
        assert_eq!(value(&vs), 1.0);
        assert_eq!(report.skipped.len(), 1);
        assert!(matches!(
            report.skipped[0].1,
            CheckpointError::Checksum { .. }
        ));
    }

    #[test]
    fn unreadable_metadata_is_reported_by_both_loaders() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let best = save_two(&m);
        let json = m.dir().join(format!("{}.json", best.meta.id));
        fs::write(&json, b"{ not json").unwrap();
        assert_eq!(m.list().unwrap().len(), 1);
        let mut vs = store(0.0);
        let report = m.load_best(&mut vs).unwrap();
        assert_eq!(report.loaded.unwrap().metric(), 0.3);
        assert_eq!(report.skipped.len(), 1);
        assert_eq!(report.skipped[0].0, best.meta.id);
        assert!(matches!(report.skipped[0].1, CheckpointError::Json { .. }));
        let built = m
            .load_best_model(|_: String| Ok(store(0.0)), |vs| vs)
            .unwrap();
        assert!(built.loaded.is_some());
        assert_eq!(built.skipped.len(), 1);
        assert!(matches!(built.skipped[0].1, CheckpointError::Json { .. }));
    }

    #[test]
    fn refuses_another_input_layout_with_check_layouts_message() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let saved = m
            .save(&store(1.0), &"test", metrics(0.3), DataRange::default())
            .unwrap();
        assert_eq!(saved.meta.input_layout_version, INPUT_LAYOUT_VERSION);
        // The same checkpoint as if written by a build with another layout.
        let json = m.dir().join(format!("{}.json", saved.meta.id));
        let mut meta: CheckpointMeta = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
        meta.input_layout_version = INPUT_LAYOUT_VERSION + 1;
        fs::write(&json, serde_json::to_vec(&meta).unwrap()).unwrap();
        let err = m.load(&meta, &mut store(0.0)).unwrap_err();
        let expected = check_layout(INPUT_LAYOUT_VERSION + 1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err.to_string(),
            format!("checkpoint {}: {expected}", meta.id)
        );
        let mut vs = store(0.0);
        let report = m.load_best(&mut vs).unwrap();
        assert!(report.loaded.is_none());
        assert!(matches!(
            report.skipped[0].1,
            CheckpointError::Layout { .. }
        ));
        assert_eq!(value(&vs), 0.0, "nothing was copied");
        let built = m
            .load_best_model(|n: usize| Ok(sized(n, 0.0)), |vs| vs)
            .unwrap();
        assert!(built.loaded.is_none());
        assert!(matches!(built.skipped[0].1, CheckpointError::Layout { .. }));
    }

    fn sized(n: usize, value: f64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().zeros("w", &[n as i64]);
        tch::no_grad(|| {
            let _ = w.shallow_clone().fill_(value);
        });
        vs
    }

    #[test]
    fn a_model_is_rebuilt_with_the_config_it_was_saved_with() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        // The best checkpoint holds a model of size 7, the other one of size 4.
        m.save(&sized(4, 1.0), &4usize, metrics(0.5), DataRange::default())
            .unwrap();
        m.save(&sized(7, 2.0), &7usize, metrics(0.1), DataRange::default())
            .unwrap();
        let mut sizes = Vec::new();
        let got = m
            .load_best_model(
                |n: usize| {
                    sizes.push(n);
                    Ok(sized(n, 0.0))
                },
                |vs| vs,
            )
            .unwrap();
        let (vs, meta) = got.loaded.unwrap();
        assert_eq!(meta.model_config, serde_json::json!(7));
        assert_eq!(vs.variables()["w"].size(), vec![7]);
        assert_eq!(value(&vs), 2.0);
        assert_eq!(sizes, vec![7]);
        // A config that does not parse is skipped with its reason, and the next one loads.
        let bad = m
            .load_best_model(
                |n: usize| {
                    if n == 7 {
                        Err("too big".into())
                    } else {
                        Ok(sized(n, 0.0))
                    }
                },
                |vs| vs,
            )
            .unwrap();
        assert_eq!(value(&bad.loaded.unwrap().0), 1.0);
        assert!(
            bad.skipped[0]
                .1
                .to_string()
                .contains("model config: too big")
        );
    }

    #[test]
    fn interrupted_writes_are_invisible_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        m.save(&store(1.0), &"test", metrics(0.3), DataRange::default())
            .unwrap();
        // A crash after the weights but before the metadata rename, and a torn temp file.
        fs::write(m.dir().join("999-1-1.safetensors"), b"partial").unwrap();
        fs::write(m.dir().join(".tmp-999-1-1.json"), b"{\"id\":").unwrap();
        assert_eq!(m.list().unwrap().len(), 1);
        let reopened = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let names: Vec<String> = fs::read_dir(reopened.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| !n.starts_with("999") && !n.starts_with(".tmp"))
        );
    }

    #[test]
    fn save_leaves_no_temporary_files_and_hash_matches() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let out = m
            .save(&store(4.0), &"test", metrics(0.3), DataRange::default())
            .unwrap();
        for e in fs::read_dir(m.dir()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with(TMP_PREFIX));
        }
        let h = sha256_file(&m.dir().join(&out.meta.weights_file)).unwrap();
        assert_eq!(h, out.meta.weights_sha256);
        assert_eq!(h.len(), 64);
    }

    #[test]
    fn a_differently_shaped_model_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        m.save(&store(2.0), &"test", metrics(0.3), DataRange::default())
            .unwrap();
        let other = VarStore::new(Device::Cpu);
        let a = other.root().zeros("a", &[1]);
        let w = other.root().zeros("w", &[5]);
        let mut other = other;
        let report = m.load_best(&mut other).unwrap();
        assert!(report.loaded.is_none());
        assert!(matches!(
            report.skipped[0].1,
            CheckpointError::Incompatible { .. }
        ));
        assert_eq!(a.double_value(&[0]), 0.0);
        assert_eq!(w.double_value(&[0]), 0.0);
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 5);
        c.model_name = "../escape".into();
        assert!(matches!(
            CheckpointManager::new(c),
            Err(CheckpointError::BadName(_))
        ));
        assert!(matches!(
            CheckpointManager::new(cfg(dir.path(), 0)),
            Err(CheckpointError::BadKeep)
        ));
        let m = CheckpointManager::new(cfg(dir.path(), 5)).unwrap();
        let no_metric = BTreeMap::from([("acc".to_string(), 1.0)]);
        assert!(matches!(
            m.save(&store(0.0), &"test", no_metric, DataRange::default()),
            Err(CheckpointError::MissingMetric(_))
        ));
    }
}
