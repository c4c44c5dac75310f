//! Transactional state in SQLite (WAL): model outputs, inference history, metrics.
//!
//! Inference records keep the encoded model input and outputs as zstd blobs so a past decision
//! can be re-examined byte for byte.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::StorageError;
use crate::analysis::model_output::ModelOutput;

/// File name of the state database inside the storage root.
pub const STATE_FILE: &str = "state.sqlite";
/// zstd level for inference blobs (fast; inputs are mostly floats).
const BLOB_LEVEL: i32 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS model_outputs (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_type TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    confidence REAL NOT NULL,
    output_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS model_outputs_by_key ON model_outputs(symbol, model_name, time_ms);
CREATE TABLE IF NOT EXISTS inferences (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    model_name TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    input_version INTEGER NOT NULL,
    input_zstd BLOB NOT NULL,
    output_zstd BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inferences_by_key ON inferences(symbol, model_name, time_ms);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    symbol TEXT,
    model_name TEXT,
    time_ms INTEGER NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_name ON metrics(name, time_ms);
CREATE TABLE IF NOT EXISTS history_steps (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    input_version INTEGER NOT NULL,
    input_zstd BLOB NOT NULL,
    decision_zstd BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_steps_by_key ON history_steps(symbol, time_ms);
CREATE INDEX IF NOT EXISTS history_steps_by_time ON history_steps(time_ms);
CREATE TABLE IF NOT EXISTS history_outputs (
    id INTEGER PRIMARY KEY,
    step_id INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    model_name TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    output_zstd BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_outputs_by_key ON history_outputs(symbol, model_name, time_ms);
CREATE INDEX IF NOT EXISTS history_outputs_by_step ON history_outputs(step_id);
CREATE INDEX IF NOT EXISTS history_outputs_by_time ON history_outputs(time_ms);
CREATE TABLE IF NOT EXISTS history_feedback (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    model_name TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    scored_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    correct INTEGER NOT NULL,
    feedback_zstd BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS history_feedback_by_key ON history_feedback(symbol, model_name, time_ms);
CREATE INDEX IF NOT EXISTS history_feedback_by_time ON history_feedback(time_ms);
";

/// Tables whose rows carry a `time_ms` and go by age.
const TIMED_TABLES: [&str; 6] = [
    "model_outputs",
    "inferences",
    "metrics",
    "history_steps",
    "history_outputs",
    "history_feedback",
];

/// zstd-compresses `bytes` at the state database's blob level.
pub(crate) fn pack(what: &'static str, bytes: &[u8]) -> Result<Vec<u8>, StorageError> {
    zstd::bulk::compress(bytes, BLOB_LEVEL).map_err(|e| StorageError::Encoding {
        what,
        message: e.to_string(),
    })
}

/// Decompresses a blob written by [`pack`].
pub(crate) fn unpack(what: &'static str, bytes: &[u8]) -> Result<Vec<u8>, StorageError> {
    zstd::stream::decode_all(bytes).map_err(|e| StorageError::Encoding {
        what,
        message: e.to_string(),
    })
}

/// One inference, decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inference {
    /// Canonical symbol.
    pub symbol: String,
    /// Model identifier.
    pub model_name: String,
    /// When the inference ran, ms.
    pub time_ms: i64,
    /// Version of the input encoding the bytes follow.
    pub input_version: u32,
    /// Encoded model input.
    pub input: Vec<u8>,
    /// Encoded outputs.
    pub output: Vec<u8>,
}

/// One metric sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name (`pnl`, `val_loss`, ...).
    pub name: String,
    /// Symbol, when the metric is per symbol.
    pub symbol: Option<String>,
    /// Model, when the metric is per model.
    pub model_name: Option<String>,
    /// Sample time, ms.
    pub time_ms: i64,
    /// Value.
    pub value: f64,
}

/// The state database.
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl StateDb {
    /// Opens (creating) `<root>/state.sqlite` in WAL mode.
    pub fn open(root: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| StorageError::io("creating", root, e))?;
        let path = root.join(STATE_FILE);
        let conn = Connection::open(&path).map_err(|source| StorageError::Sqlite {
            path: path.display().to_string(),
            source,
        })?;
        let db = Self { conn, path };
        db.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| db.err(e))?;
        // Incremental auto-vacuum lets retention hand freed pages back to the filesystem without
        // rewriting the whole file; a database created before it is converted once by VACUUM.
        let auto_vacuum: i64 = db
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .map_err(|e| db.err(e))?;
        if auto_vacuum != 2 {
            db.conn
                .execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
                .map_err(|e| db.err(e))?;
        }
        db.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| db.err(e))?;
        // WAL with NORMAL sync is durable against process crashes and only loses the last
        // transactions on power loss, at a fraction of FULL's cost.
        db.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| db.err(e))?;
        db.conn.execute_batch(SCHEMA).map_err(|e| db.err(e))?;
        Ok(db)
    }

    /// The connection, for the other state modules (history) of this folder.
    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The connection, mutably (transactions).
    pub(super) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn err(&self, source: rusqlite::Error) -> StorageError {
        StorageError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// The journal mode in effect (`wal` once opened).
    pub fn journal_mode(&self) -> Result<String, StorageError> {
        self.conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Stores a model output.
    pub fn insert_model_output(&self, out: &ModelOutput) -> Result<(), StorageError> {
        let json = serde_json::to_string(out).map_err(|e| StorageError::Encoding {
            what: "model output",
            message: e.to_string(),
        })?;
        self.conn
            .execute(
                "INSERT INTO model_outputs (symbol, model_name, model_type, time_ms, confidence, \
                 output_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    out.symbol,
                    out.model_name,
                    out.model_type,
                    out.timestamp_ms,
                    out.confidence,
                    json
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Outputs of one symbol (and model, when given) with `from_ms <= time < to_ms`, oldest
    /// first.
    pub fn model_outputs(
        &self,
        symbol: &str,
        model_name: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ModelOutput>, StorageError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT output_json FROM model_outputs WHERE symbol = ?1 \
                 AND (?2 IS NULL OR model_name = ?2) AND time_ms >= ?3 AND time_ms < ?4 \
                 ORDER BY time_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![symbol, model_name, from_ms, to_ms], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for json in rows {
            let json = json.map_err(|e| self.err(e))?;
            out.push(
                serde_json::from_str(&json).map_err(|e| StorageError::Encoding {
                    what: "model output",
                    message: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// The newest output of a model for a symbol at or before `t_ms`.
    pub fn latest_model_output(
        &self,
        symbol: &str,
        model_name: &str,
        t_ms: i64,
    ) -> Result<Option<ModelOutput>, StorageError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT output_json FROM model_outputs WHERE symbol = ?1 AND model_name = ?2 \
                 AND time_ms <= ?3 ORDER BY time_ms DESC, id DESC LIMIT 1",
                params![symbol, model_name, t_ms],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| StorageError::Encoding {
                what: "model output",
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores one inference with its input and outputs compressed.
    pub fn insert_inference(&self, inf: &Inference) -> Result<(), StorageError> {
        let pack = |bytes: &[u8]| pack("inference blob", bytes);
        self.conn
            .execute(
                "INSERT INTO inferences (symbol, model_name, time_ms, input_version, input_zstd, \
                 output_zstd) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    inf.symbol,
                    inf.model_name,
                    inf.time_ms,
                    inf.input_version,
                    pack(&inf.input)?,
                    pack(&inf.output)?
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Inferences of one symbol (and model) with `from_ms <= time < to_ms`, oldest first.
    pub fn inferences(
        &self,
        symbol: &str,
        model_name: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Inference>, StorageError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT symbol, model_name, time_ms, input_version, input_zstd, output_zstd \
                 FROM inferences WHERE symbol = ?1 AND (?2 IS NULL OR model_name = ?2) \
                 AND time_ms >= ?3 AND time_ms < ?4 ORDER BY time_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![symbol, model_name, from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let unpack = |bytes: &[u8]| unpack("inference blob", bytes);
        let mut out = Vec::new();
        for row in rows {
            let (symbol, model_name, time_ms, input_version, input, output) =
                row.map_err(|e| self.err(e))?;
            out.push(Inference {
                symbol,
                model_name,
                time_ms,
                input_version,
                input: unpack(&input)?,
                output: unpack(&output)?,
            });
        }
        Ok(out)
    }

    /// Stores metric samples in one transaction.
    pub fn insert_metrics(&mut self, samples: &[Metric]) -> Result<(), StorageError> {
        let path = self.path.display().to_string();
        let err = |source| StorageError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO metrics (name, symbol, model_name, time_ms, value) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for m in samples {
                stmt.execute(params![m.name, m.symbol, m.model_name, m.time_ms, m.value])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Samples of a metric with `from_ms <= time < to_ms`, optionally for one symbol/model.
    pub fn metrics(
        &self,
        name: &str,
        symbol: Option<&str>,
        model_name: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Metric>, StorageError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, symbol, model_name, time_ms, value FROM metrics WHERE name = ?1 \
                 AND (?2 IS NULL OR symbol = ?2) AND (?3 IS NULL OR model_name = ?3) \
                 AND time_ms >= ?4 AND time_ms < ?5 ORDER BY time_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![name, symbol, model_name, from_ms, to_ms], |r| {
                Ok(Metric {
                    name: r.get(0)?,
                    symbol: r.get(1)?,
                    model_name: r.get(2)?,
                    time_ms: r.get(3)?,
                    value: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Deletes every row older than `cutoff_ms` (retention by age); returns rows deleted.
    pub fn delete_before(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        let mut n = 0;
        for table in TIMED_TABLES {
            n += self
                .conn
                .execute(
                    &format!("DELETE FROM {table} WHERE time_ms < ?1"),
                    params![cutoff_ms],
                )
                .map_err(|e| self.err(e))? as u64;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::model_output::{Action, ActionValues, Predictions};

    fn output(symbol: &str, model: &str, t: i64) -> ModelOutput {
        ModelOutput {
            model_type: "cnn".into(),
            model_name: model.into(),
            symbol: symbol.into(),
            timestamp_ms: t,
            confidence: 0.75,
            predictions: Predictions {
                action: Action::Buy,
                action_confidence: 0.7,
                probabilities: ActionValues {
                    buy: 0.7,
                    sell: 0.1,
                    hold: 0.2,
                },
                direction_vector: 0.4,
                direction_confidence: 0.6,
                pivots: Vec::new(),
                q_values: None,
                expected_reward: None,
            },
            hidden_states: [("h".to_string(), vec![0.5f32, -1.0])]
                .into_iter()
                .collect(),
            metadata: [("version".to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn an_old_database_is_converted_to_incremental_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(STATE_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE metrics (id INTEGER PRIMARY KEY, name TEXT NOT NULL, symbol TEXT, \
             model_name TEXT, time_ms INTEGER NOT NULL, value REAL NOT NULL); \
             INSERT INTO metrics (name, time_ms, value) VALUES ('pnl', 5, 1.5);",
        )
        .unwrap();
        drop(old);
        let db = StateDb::open(dir.path()).unwrap();
        let mode: i64 = db
            .conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 2);
        assert_eq!(db.journal_mode().unwrap(), "wal");
        assert_eq!(db.metrics("pnl", None, None, 0, 10).unwrap().len(), 1);
    }

    #[test]
    fn model_outputs_by_symbol_model_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.journal_mode().unwrap(), "wal");
        for t in [1000, 2000, 3000] {
            db.insert_model_output(&output("ETHUSDT", "cnn_a", t))
                .unwrap();
            db.insert_model_output(&output("BTCUSDT", "cnn_a", t))
                .unwrap();
        }
        db.insert_model_output(&output("ETHUSDT", "cnn_b", 2500))
            .unwrap();
        let got = db
            .model_outputs("ETHUSDT", Some("cnn_a"), 1500, 3000)
            .unwrap();
        assert_eq!(got, vec![output("ETHUSDT", "cnn_a", 2000)]);
        let all = db.model_outputs("ETHUSDT", None, 0, i64::MAX).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].model_name, "cnn_b");
        let latest = db.latest_model_output("ETHUSDT", "cnn_a", 2999).unwrap();
        assert_eq!(latest.unwrap().timestamp_ms, 2000);
        assert!(
            db.latest_model_output("ETHUSDT", "cnn_a", 999)
                .unwrap()
                .is_none()
        );
        // Survives a reopen (committed, not just cached).
        drop(db);
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.model_outputs("BTCUSDT", None, 0, i64::MAX)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn inferences_round_trip_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let input: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let inf = Inference {
            symbol: "ETHUSDT".into(),
            model_name: "dqn".into(),
            time_ms: 5,
            input_version: 3,
            input: input.clone(),
            output: vec![1, 2, 3],
        };
        db.insert_inference(&inf).unwrap();
        let stored: i64 = db
            .conn
            .query_row("SELECT length(input_zstd) FROM inferences", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert!((stored as usize) < input.len() / 10, "{stored}");
        assert_eq!(
            db.inferences("ETHUSDT", Some("dqn"), 0, 10).unwrap(),
            vec![inf]
        );
        assert!(
            db.inferences("ETHUSDT", Some("cnn"), 0, 10)
                .unwrap()
                .is_empty()
        );
        assert!(db.inferences("ETHUSDT", None, 6, 10).unwrap().is_empty());
    }

    #[test]
    fn metrics_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        let m = |t: i64, sym: Option<&str>| Metric {
            name: "pnl".into(),
            symbol: sym.map(str::to_string),
            model_name: None,
            time_ms: t,
            value: t as f64 / 2.0,
        };
        db.insert_metrics(&[m(1, Some("ETHUSDT")), m(2, Some("BTCUSDT")), m(3, None)])
            .unwrap();
        assert_eq!(db.metrics("pnl", None, None, 0, 10).unwrap().len(), 3);
        assert_eq!(
            db.metrics("pnl", Some("BTCUSDT"), None, 0, 10).unwrap(),
            vec![m(2, Some("BTCUSDT"))]
        );
        db.insert_model_output(&output("ETHUSDT", "a", 1)).unwrap();
        assert_eq!(db.delete_before(3).unwrap(), 3);
        assert_eq!(
            db.metrics("pnl", None, None, 0, 10).unwrap(),
            vec![m(3, None)]
        );
    }
}
