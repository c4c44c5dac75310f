//! Inference history in the state database: every orchestrator step (the input it used, every
//! expert's output with hidden states, the decision with its skipped experts) and every
//! prediction–outcome pair, written by a [`HistoryWriter`] on its own thread and read back by
//! symbol, model and time range.
//!
//! Blobs are CBOR (serde, via `ciborium`) compressed with the state database's zstd level.
//! CBOR because it keeps `f64`/`f32` bit-exact (NaN and infinities included, which JSON
//! cannot carry) and names fields, so a decoder reports what does not match; zstd because the
//! state database already uses it for blobs and it removes the repeated field names. Each step
//! row records [`HISTORY_INPUT_VERSION`], the layout of the encoded `BaseDataInput`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StorageError;
use super::config::HistoryConfig;
use super::retention;
use super::state::{StateDb, pack, unpack};
use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::ModelOutput;
use crate::orchestrator::decision::Decision;
use crate::orchestrator::engine::{HistorySink, StepReport};
use crate::orchestrator::feedback::{Feedback, Outcome};

/// Layout of the encoded input in `history_steps` (bump when `BaseDataInput` changes shape).
pub const HISTORY_INPUT_VERSION: u32 = 1;
/// Most step reports committed in one transaction.
const MAX_BATCH: usize = 256;

/// One stored step, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryStep {
    /// Row id (steps of one symbol at one time keep their write order by it).
    pub id: i64,
    /// The input the experts saw, with the stored outputs as `last_predictions`.
    pub input: BaseDataInput,
    /// The decision, with votes and skipped experts.
    pub decision: Decision,
    /// Every expert's output with hidden states, in the step's order.
    pub outputs: Vec<ModelOutput>,
}

/// One stored prediction–outcome pair, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackRow {
    /// Symbol of the prediction.
    pub symbol: String,
    /// Model that made it.
    pub model_name: String,
    /// When it was predicted, ms.
    pub time_ms: i64,
    /// When its outcome became known, ms.
    pub scored_ms: i64,
    /// `action` or `pivot`.
    pub kind: String,
    /// Whether the action (or the pivot's kind) was right.
    pub correct: bool,
    /// The pair as the trainers received it.
    pub feedback: Feedback,
}

/// Rows of a query and the rows that could not be decoded (skipped, each with its reason).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// Decoded rows, oldest first.
    pub rows: Vec<T>,
    /// `row <id>: <reason>` for each row left out.
    pub undecodable: Vec<String>,
}

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            undecodable: Vec::new(),
        }
    }
}

/// Encodes `value` as compressed CBOR.
pub fn encode_blob<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StorageError> {
    let mut cbor = Vec::new();
    ciborium::into_writer(value, &mut cbor).map_err(|e| StorageError::Encoding {
        what,
        message: e.to_string(),
    })?;
    pack(what, &cbor)
}

/// Decodes a blob written by [`encode_blob`].
pub fn decode_blob<T: DeserializeOwned>(
    what: &'static str,
    blob: &[u8],
) -> Result<T, StorageError> {
    let cbor = unpack(what, blob)?;
    ciborium::from_reader(cbor.as_slice()).map_err(|e| StorageError::Encoding {
        what,
        message: e.to_string(),
    })
}

fn outcome_fields(f: &Feedback) -> (&'static str, bool) {
    match &f.outcome {
        Outcome::Action(a) => ("action", a.correct),
        Outcome::Pivot(p) => ("pivot", p.kind_correct),
    }
}

impl StateDb {
    /// Writes step reports (steps, outputs, scored pairs) in one transaction; returns
    /// `(steps, pairs)` written. Nothing is written when any report fails to encode.
    pub fn insert_steps(&mut self, reports: &[StepReport]) -> Result<(usize, usize), StorageError> {
        struct Encoded<'a> {
            report: &'a StepReport,
            input: Vec<u8>,
            decision: Vec<u8>,
            outputs: Vec<Vec<u8>>,
            feedback: Vec<Vec<u8>>,
        }
        // Encode first so the transaction holds the write lock only for the inserts.
        let mut encoded = Vec::with_capacity(reports.len());
        for report in reports {
            encoded.push(Encoded {
                report,
                input: encode_blob("history input", &*report.input)?,
                decision: encode_blob("history decision", &report.decision)?,
                outputs: report
                    .outputs
                    .iter()
                    .map(|o| encode_blob("history output", o))
                    .collect::<Result<_, _>>()?,
                feedback: report
                    .feedback
                    .iter()
                    .map(|f| encode_blob("history feedback", f))
                    .collect::<Result<_, _>>()?,
            });
        }
        let path = self.path().display().to_string();
        let err = |source| StorageError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn_mut().transaction().map_err(err)?;
        let mut pairs = 0;
        {
            let mut step_stmt = tx
                .prepare_cached(
                    "INSERT INTO history_steps (symbol, time_ms, input_version, input_zstd, \
                     decision_zstd) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            let mut out_stmt = tx
                .prepare_cached(
                    "INSERT INTO history_outputs (step_id, symbol, model_name, time_ms, \
                     output_zstd) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            let mut fb_stmt = tx
                .prepare_cached(
                    "INSERT INTO history_feedback (symbol, model_name, time_ms, scored_ms, kind, \
                     correct, feedback_zstd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(err)?;
            for e in &encoded {
                let input = &e.report.input;
                step_stmt
                    .execute(params![
                        input.symbol,
                        input.timestamp_ms,
                        HISTORY_INPUT_VERSION,
                        e.input,
                        e.decision
                    ])
                    .map_err(err)?;
                let step_id = tx.last_insert_rowid();
                for (o, blob) in e.report.outputs.iter().zip(&e.outputs) {
                    out_stmt
                        .execute(params![
                            step_id,
                            input.symbol,
                            o.model_name,
                            input.timestamp_ms,
                            blob
                        ])
                        .map_err(err)?;
                }
                for (f, blob) in e.report.feedback.iter().zip(&e.feedback) {
                    let (kind, correct) = outcome_fields(f);
                    fb_stmt
                        .execute(params![
                            f.prediction.symbol,
                            f.prediction.model_name,
                            f.prediction.timestamp_ms,
                            f.scored_at_ms,
                            kind,
                            correct,
                            blob
                        ])
                        .map_err(err)?;
                    pairs += 1;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok((reports.len(), pairs))
    }

    /// Steps of `symbol` with `from_ms <= time < to_ms`, oldest first, with their outputs.
    pub fn history_steps(
        &self,
        symbol: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Decoded<HistoryStep>, StorageError> {
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT id, input_version, input_zstd, decision_zstd FROM history_steps \
                 WHERE symbol = ?1 AND time_ms >= ?2 AND time_ms < ?3 ORDER BY time_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![symbol, from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Decoded::default();
        for row in rows {
            let (id, version, input, decision) = row.map_err(|e| self.err(e))?;
            let step = if version != i64::from(HISTORY_INPUT_VERSION) {
                Err(format!(
                    "input layout v{version}, this build reads v{HISTORY_INPUT_VERSION}"
                ))
            } else {
                self.decode_step(id, &input, &decision)
                    .map_err(|e| e.to_string())
            };
            match step {
                Ok(s) => out.rows.push(s),
                Err(reason) => out.undecodable.push(format!("step {id}: {reason}")),
            }
        }
        Ok(out)
    }

    fn decode_step(
        &self,
        id: i64,
        input: &[u8],
        decision: &[u8],
    ) -> Result<HistoryStep, StorageError> {
        let input: BaseDataInput = decode_blob("history input", input)?;
        let decision: Decision = decode_blob("history decision", decision)?;
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT output_zstd FROM history_outputs WHERE step_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let blobs = stmt
            .query_map(params![id], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut outputs = Vec::new();
        for blob in blobs {
            let blob = blob.map_err(|e| self.err(e))?;
            outputs.push(decode_blob("history output", &blob)?);
        }
        Ok(HistoryStep {
            id,
            input,
            decision,
            outputs,
        })
    }

    /// Outputs (with hidden states) of `symbol`, of one model when given, from steps with
    /// `from_ms <= time < to_ms`, oldest first.
    pub fn history_outputs(
        &self,
        symbol: &str,
        model_name: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Decoded<ModelOutput>, StorageError> {
        self.decode_rows(
            "SELECT id, output_zstd FROM history_outputs WHERE symbol = ?1 \
             AND (?2 IS NULL OR model_name = ?2) AND time_ms >= ?3 AND time_ms < ?4 \
             ORDER BY time_ms, id",
            params![symbol, model_name, from_ms, to_ms],
            |_, blob| decode_blob("history output", blob),
        )
    }

    /// Prediction–outcome pairs of `symbol` (and model) predicted at `from_ms <= time < to_ms`,
    /// oldest prediction first.
    pub fn history_feedback(
        &self,
        symbol: &str,
        model_name: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Decoded<FeedbackRow>, StorageError> {
        self.decode_rows(
            "SELECT id, feedback_zstd, symbol, model_name, time_ms, scored_ms, kind, correct \
             FROM history_feedback WHERE symbol = ?1 AND (?2 IS NULL OR model_name = ?2) \
             AND time_ms >= ?3 AND time_ms < ?4 ORDER BY time_ms, id",
            params![symbol, model_name, from_ms, to_ms],
            |r, blob| {
                let sql = |e| StorageError::Encoding {
                    what: "history feedback row",
                    message: format!("{e}"),
                };
                Ok(FeedbackRow {
                    symbol: r.get(2).map_err(sql)?,
                    model_name: r.get(3).map_err(sql)?,
                    time_ms: r.get(4).map_err(sql)?,
                    scored_ms: r.get(5).map_err(sql)?,
                    kind: r.get(6).map_err(sql)?,
                    correct: r.get(7).map_err(sql)?,
                    feedback: decode_blob("history feedback", blob)?,
                })
            },
        )
    }

    fn decode_rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        decode: impl Fn(&rusqlite::Row<'_>, &[u8]) -> Result<T, StorageError>,
    ) -> Result<Decoded<T>, StorageError> {
        let mut stmt = self.conn().prepare_cached(sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(args).map_err(|e| self.err(e))?;
        let mut out = Decoded::default();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let blob: Vec<u8> = r.get(1).map_err(|e| self.err(e))?;
            match decode(r, &blob) {
                Ok(v) => out.rows.push(v),
                Err(e) => out.undecodable.push(format!("row {id}: {e}")),
            }
        }
        Ok(out)
    }

    /// Rows in the three history tables: `(steps, outputs, pairs)`.
    pub fn history_counts(&self) -> Result<(u64, u64, u64), StorageError> {
        let count = |table: &str| {
            self.conn()
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
                .map_err(|e| self.err(e))
        };
        Ok((
            count("history_steps")?,
            count("history_outputs")?,
            count("history_feedback")?,
        ))
    }

    /// Deletes history rows older than `cutoff_ms` (steps and outputs by step time, pairs by
    /// prediction time); returns rows deleted.
    pub fn delete_history_before(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        let mut n = 0;
        for table in ["history_outputs", "history_steps", "history_feedback"] {
            n += self
                .conn()
                .execute(
                    &format!("DELETE FROM {table} WHERE time_ms < ?1"),
                    params![cutoff_ms],
                )
                .map_err(|e| self.err(e))? as u64;
        }
        Ok(n)
    }

    /// Deletes the `n` oldest steps with their outputs and the pairs predicted up to the
    /// newest step deleted; returns rows deleted.
    pub fn delete_oldest_steps(&self, n: u64) -> Result<u64, StorageError> {
        if n == 0 {
            return Ok(0);
        }
        let newest: Option<i64> = self
            .conn()
            .query_row(
                "SELECT MAX(time_ms) FROM (SELECT time_ms FROM history_steps \
                 ORDER BY time_ms, id LIMIT ?1)",
                params![n as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        match newest {
            // Steps share times only across symbols, so deleting through that time is the
            // same "oldest first" cut.
            Some(t) => self.delete_history_before(t.saturating_add(1)),
            None => Ok(0),
        }
    }

    /// Bytes of live pages in the database (its size once free pages are released).
    pub fn used_bytes(&self) -> Result<u64, StorageError> {
        let get = |pragma: &str| {
            self.conn()
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                .map_err(|e| self.err(e))
        };
        let live = get("page_count")? - get("freelist_count")?;
        Ok((live.max(0) as u64).saturating_mul(get("page_size")?.max(0) as u64))
    }

    /// Releases free pages to the filesystem and folds the WAL back into the file, so the
    /// database file really shrinks after deletions.
    pub fn reclaim(&self) -> Result<(), StorageError> {
        // Each step of the pragma frees pages; it must run to completion.
        let mut stmt = self
            .conn()
            .prepare("PRAGMA incremental_vacuum")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while rows.next().map_err(|e| self.err(e))?.is_some() {}
        drop(rows);
        drop(stmt);
        // The checkpoint reports (busy, log, checkpointed) as a row.
        self.conn()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|e| self.err(e))
    }
}

/// What the history writer has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Steps committed.
    pub steps: u64,
    /// Prediction–outcome pairs committed.
    pub pairs: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Step reports the orchestrator dropped because the queue was full.
    pub dropped: u64,
    /// Batches that failed to write (their steps are lost).
    pub failed_batches: u64,
    /// Rows deleted by retention.
    pub rows_deleted: u64,
    /// The last write or retention error.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    steps: AtomicU64,
    pairs: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    rows_deleted: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn fail(&self, e: &StorageError) {
        tracing::warn!("inference history: {e}");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
    }
}

/// The history writer thread: batches step reports into the state database and applies the
/// age and size limits periodically. Dropping it commits what is queued and stops the thread.
pub struct HistoryWriter {
    counters: Arc<Counters>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("stats", &self.stats())
            .finish()
    }
}

impl HistoryWriter {
    /// Opens `<root>/state.sqlite` and starts the writer; give the sink to the orchestrator
    /// (`Orchestrator::add_history`). Retention runs once at the start, then every
    /// `retention_secs`, against the wall clock.
    pub fn spawn(root: &Path, cfg: &HistoryConfig) -> Result<(Self, HistorySink), StorageError> {
        Self::spawn_with_clock(root, cfg, crate::logging::now_ms)
    }

    /// [`Self::spawn`] with the clock retention measures age against.
    pub fn spawn_with_clock(
        root: &Path,
        cfg: &HistoryConfig,
        clock: fn() -> i64,
    ) -> Result<(Self, HistorySink), StorageError> {
        let db = StateDb::open(root)?;
        let (sink, rx) = HistorySink::bounded(cfg.queue);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            db,
            cfg: cfg.clone(),
            clock,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            dropped: sink.dropped_handle(),
            dropped_reported: 0,
        };
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || worker.run(&rx))
            .map_err(|e| StorageError::io("starting the history writer for", root, e))?;
        Ok((
            Self {
                counters,
                dropped: sink.dropped_handle(),
                stop,
                thread: Some(thread),
            },
            sink,
        ))
    }

    /// Counters so far.
    pub fn stats(&self) -> HistoryStats {
        let c = &self.counters;
        HistoryStats {
            steps: c.steps.load(Ordering::Relaxed),
            pairs: c.pairs.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            rows_deleted: c.rows_deleted.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Commits what is queued, stops the thread and returns the final counters.
    pub fn finish(mut self) -> HistoryStats {
        self.stop_and_join();
        self.stats()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

struct Worker {
    db: StateDb,
    cfg: HistoryConfig,
    clock: fn() -> i64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    dropped_reported: u64,
}

impl Worker {
    fn run(mut self, rx: &Receiver<StepReport>) {
        let flush_every = Duration::from_millis(self.cfg.flush_ms.max(1));
        let retention_every = Duration::from_secs(self.cfg.retention_secs.max(1));
        let mut batch: Vec<StepReport> = Vec::new();
        let mut last_flush = Instant::now();
        self.retain();
        let mut last_retention = Instant::now();
        loop {
            // Wake at least every 50 ms so a stop request is seen promptly.
            let wait = flush_every
                .saturating_sub(last_flush.elapsed())
                .clamp(Duration::from_millis(1), Duration::from_millis(50));
            let mut closed = false;
            match rx.recv_timeout(wait) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
            let stopping = closed || self.stop.load(Ordering::SeqCst);
            batch.extend(rx.try_iter().take(MAX_BATCH.saturating_sub(batch.len())));
            if stopping {
                batch.extend(rx.try_iter());
            }
            let due = batch.len() >= MAX_BATCH || last_flush.elapsed() >= flush_every;
            if !batch.is_empty() && (due || stopping) {
                for chunk in batch.chunks(MAX_BATCH) {
                    self.write(chunk);
                }
                batch.clear();
                last_flush = Instant::now();
            }
            if stopping {
                break;
            }
            if last_retention.elapsed() >= retention_every {
                self.retain();
                last_retention = Instant::now();
            }
        }
    }

    fn write(&mut self, batch: &[StepReport]) {
        // Drops happen on the orchestrator's thread, which must not log per step: say it here.
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported {
            tracing::warn!(
                "inference history: {} step reports dropped so far (queue of {} full)",
                dropped,
                self.cfg.queue
            );
            self.dropped_reported = dropped;
        }
        match self.db.insert_steps(batch) {
            Ok((steps, pairs)) => {
                self.counters
                    .steps
                    .fetch_add(steps as u64, Ordering::Relaxed);
                self.counters
                    .pairs
                    .fetch_add(pairs as u64, Ordering::Relaxed);
                self.counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                self.counters.fail(&e);
            }
        }
    }

    fn retain(&mut self) {
        let now = (self.clock)();
        match retention::apply_history(&self.db, self.cfg.max_age_ms(), self.cfg.max_bytes(), now) {
            Ok(r) => {
                self.counters
                    .rows_deleted
                    .fetch_add(r.rows_deleted, Ordering::Relaxed);
            }
            Err(e) => self.counters.fail(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::input::InputConfig;
    use crate::analysis::model_output::ModelOutputStore;
    use crate::orchestrator::config::{OrchestratorConfig, TriggerConfig};
    use crate::orchestrator::coordinator::RunMode;
    use crate::orchestrator::decision::ThresholdHandle;
    use crate::orchestrator::engine::Engine;
    use crate::orchestrator::expert::{PivotMomentumConfig, PivotMomentumExpert};
    use crate::orchestrator::history::HistoryFeed;
    use crate::orchestrator::history::tests::zigzag;

    /// Reports of `steps` steps over a zig-zag uptrend of 1 m candles.
    fn reports(steps: usize) -> Vec<StepReport> {
        let mut feed = HistoryFeed::new("ETHUSDT", 60_000, InputConfig::default()).unwrap();
        let cfg = OrchestratorConfig {
            trigger: TriggerConfig::Candle("1m".into()),
            horizon_secs: 120,
            ..OrchestratorConfig::default()
        };
        let expert = PivotMomentumExpert::new(PivotMomentumConfig::default());
        let thresholds = ThresholdHandle::new(0.6, 0.6).unwrap();
        let mut engine =
            Engine::new(cfg, vec![Box::new(expert)], RunMode::Inline, thresholds).unwrap();
        let mut out = Vec::new();
        for (i, c) in zigzag(40 + steps, 0.5).iter().enumerate() {
            let t = feed.push(c).unwrap();
            if i >= 40 {
                out.push(engine.step(feed.input(&ModelOutputStore::default(), t)));
            }
        }
        out
    }

    #[test]
    fn the_codec_keeps_floats_bit_exact() {
        let mut out = reports(1)[0].outputs[0].clone();
        let odd = vec![f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE / 3.0, 0.1];
        out.hidden_states.insert("odd".into(), odd.clone());
        out.confidence = 0.1 + 0.2;
        let back: ModelOutput = decode_blob("t", &encode_blob("t", &out).unwrap()).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.hidden_states["odd"]), bits(&odd));
        assert_eq!(back.confidence.to_bits(), out.confidence.to_bits());
        let err = decode_blob::<ModelOutput>("history output", b"not zstd").unwrap_err();
        assert!(err.to_string().contains("history output"), "{err}");
    }

    #[test]
    fn undecodable_rows_are_skipped_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        let reports = reports(3);
        assert_eq!(db.insert_steps(&reports).unwrap().0, 3);
        let ids: Vec<i64> = db
            .conn()
            .prepare("SELECT id FROM history_steps ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        db.conn()
            .execute(
                "UPDATE history_steps SET input_zstd = x'00' WHERE id = ?1",
                [ids[0]],
            )
            .unwrap();
        db.conn()
            .execute(
                "UPDATE history_steps SET input_version = 99 WHERE id = ?1",
                [ids[1]],
            )
            .unwrap();
        db.conn()
            .execute(
                "UPDATE history_outputs SET output_zstd = x'01' WHERE step_id = ?1",
                [ids[2]],
            )
            .unwrap();
        let got = db.history_steps("ETHUSDT", i64::MIN, i64::MAX).unwrap();
        assert!(got.rows.is_empty());
        assert_eq!(got.undecodable.len(), 3, "{:?}", got.undecodable);
        assert!(got.undecodable[0].contains("history input"));
        assert!(got.undecodable[1].contains("input layout v99"));
        assert!(got.undecodable[2].contains("history output"));
        let outs = db
            .history_outputs("ETHUSDT", None, i64::MIN, i64::MAX)
            .unwrap();
        assert_eq!(outs.rows.len(), 2);
        assert_eq!(outs.undecodable.len(), 1);
        assert_eq!(outs.rows[0], reports[0].outputs[0]);
    }
}
