//! The database sink task: rows arrive on a channel, are cut into batches, wait in the
//! [`WriteBuffer`] and are written oldest first with retries and backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::buffer::{SpillError, WriteBuffer};
use super::metrics::Metrics;
use super::pg::{PgWriter, Row};

/// How the sink batches and where it spills.
#[derive(Debug, Clone)]
pub struct DbSinkConfig {
    /// Connection string.
    pub database_url: String,
    /// Rows per batch.
    pub batch_rows: usize,
    /// A partial batch is queued after this long.
    pub flush_interval: Duration,
    /// Rows kept in memory before spilling.
    pub buffer_rows: usize,
    /// Spill folder.
    pub spill_dir: PathBuf,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// TimescaleDB compression age, days.
    pub compress_after_days: u32,
    /// Time allowed at shutdown to write what is buffered before spilling the rest.
    pub shutdown_grace: Duration,
}

/// Counts reported when the sink stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbSinkReport {
    /// Rows newly stored.
    pub rows_written: u64,
    /// Failed write attempts.
    pub write_errors: u64,
    /// Rows left in spill files for the next run.
    pub rows_spilled: usize,
}

/// A running database sink.
pub struct DbSink {
    tx: mpsc::UnboundedSender<Row>,
    task: JoinHandle<Result<DbSinkReport, SpillError>>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest a single batch write may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl DbSink {
    /// Opens the spill folder (picking up leftovers) and starts the task.
    pub fn spawn(cfg: DbSinkConfig, metrics: Arc<Metrics>) -> Result<Self, SpillError> {
        let buffer = WriteBuffer::open(&cfg.spill_dir, cfg.buffer_rows)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(cfg, buffer, rx, metrics));
        Ok(Self { tx, task })
    }

    /// A sender for rows (cheap to clone).
    pub fn sender(&self) -> mpsc::UnboundedSender<Row> {
        self.tx.clone()
    }

    /// Stops accepting rows, writes what it can within the grace time, spills the rest.
    pub async fn shutdown(self) -> Result<DbSinkReport, SpillError> {
        drop(self.tx);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(SpillError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(format!("database sink task failed: {e}")),
            }),
        }
    }
}

struct State {
    writer: PgWriter,
    buffer: WriteBuffer,
    backoff: Duration,
    next_attempt: Instant,
    unwritten_since: Option<Instant>,
    report: DbSinkReport,
    metrics: Arc<Metrics>,
}

impl State {
    fn queue(&mut self, rows: Vec<Row>) -> Result<(), SpillError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.unwritten_since.get_or_insert_with(Instant::now);
        self.buffer.push(rows)?;
        self.gauges();
        Ok(())
    }

    fn gauges(&self) {
        self.metrics
            .db_buffered_rows
            .set(self.buffer.memory_rows() as i64);
        self.metrics
            .db_spilled_rows
            .set(self.buffer.spilled_rows() as i64);
        self.metrics.db_write_lag.set(
            self.unwritten_since
                .map(|t| t.elapsed().as_secs_f64())
                .unwrap_or(0.0),
        );
    }

    /// Writes the front batch; false when it failed (backoff set) or nothing waits.
    async fn write_front(&mut self) -> bool {
        let batch = match self.buffer.front() {
            Ok(Some(p)) => p,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(error = %e, "spill file unreadable; set aside");
                return true;
            }
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, self.writer.write(&batch.rows)).await;
        let mut per_table: Vec<(&'static str, u64)> = Vec::new();
        for r in &batch.rows {
            match per_table.iter_mut().find(|(t, _)| *t == r.table()) {
                Some((_, n)) => *n += 1,
                None => per_table.push((r.table(), 1)),
            }
        }
        match result {
            Ok(Ok(inserted)) => {
                if let Err(e) = self.buffer.complete_front() {
                    tracing::error!(error = %e, "written spill file could not be removed");
                }
                self.report.rows_written += inserted;
                for (table, n) in per_table {
                    self.metrics.db_rows.with_label_values(&[table]).inc_by(n);
                }
                self.metrics.db_up.set(1);
                self.backoff = FIRST_BACKOFF;
                if self.buffer.is_empty() {
                    self.unwritten_since = None;
                } else {
                    self.unwritten_since = Some(Instant::now());
                }
                self.gauges();
                true
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                false
            }
            Err(_) => {
                self.failed("timed out");
                false
            }
        }
    }

    fn failed(&mut self, why: &str) {
        self.report.write_errors += 1;
        self.metrics.db_errors.inc();
        self.metrics.db_up.set(0);
        tracing::warn!(error = %why, retry_ms = self.backoff.as_millis() as u64, "database write failed; batch kept");
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.gauges();
    }
}

async fn run(
    cfg: DbSinkConfig,
    buffer: WriteBuffer,
    mut rx: mpsc::UnboundedReceiver<Row>,
    metrics: Arc<Metrics>,
) -> Result<DbSinkReport, SpillError> {
    let mut st = State {
        writer: PgWriter::new(
            cfg.database_url.clone(),
            cfg.connect_timeout,
            cfg.compress_after_days,
        ),
        unwritten_since: (!buffer.is_empty()).then(Instant::now),
        buffer,
        backoff: FIRST_BACKOFF,
        next_attempt: Instant::now(),
        report: DbSinkReport::default(),
        metrics,
    };
    let mut current: Vec<Row> = Vec::with_capacity(cfg.batch_rows);
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let has_work = !st.buffer.is_empty();
        tokio::select! {
            row = rx.recv() => {
                let Some(row) = row else { break };
                current.push(row);
                // Take whatever else is already queued without yielding per row.
                while current.len() < cfg.batch_rows {
                    match rx.try_recv() {
                        Ok(r) => current.push(r),
                        Err(_) => break,
                    }
                }
                if current.len() >= cfg.batch_rows {
                    st.queue(std::mem::replace(&mut current, Vec::with_capacity(cfg.batch_rows)))?;
                }
            }
            _ = flush.tick() => {
                st.queue(std::mem::take(&mut current))?;
                st.gauges();
            }
            _ = tokio::time::sleep_until(st.next_attempt), if has_work => {
                st.write_front().await;
            }
        }
    }
    // Shutdown: everything received is queued, written while the grace time lasts, and
    // whatever is left goes to disk for the next run.
    st.queue(current)?;
    let deadline = Instant::now() + cfg.shutdown_grace;
    while !st.buffer.is_empty() && Instant::now() < deadline {
        if !st.write_front().await {
            if st.buffer.is_empty() {
                break;
            }
            tokio::time::sleep_until(st.next_attempt.min(deadline)).await;
        }
    }
    st.buffer.spill_all()?;
    st.report.rows_spilled = st.buffer.spilled_rows();
    st.gauges();
    Ok(st.report)
}
