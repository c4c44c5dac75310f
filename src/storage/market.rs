//! Market-data store: the recorder's writer and the readers replay, backtests and training use.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::columns::{
    CandleView, Columns, ControlRow, Dataset, KeyView, RowKey, Rows, TradeView, book_kind,
    control_kind, opt_bool, opt_i64, opt_str, opt_u64, zip_levels,
};
use super::partition::{
    self, MARKET_DIR, PartId, PartWriter, Recovery, StoreLock, hive_children, part_files,
    writer_properties,
};
use super::{StorageConfig, StorageError, parse_date, utc_date};
use crate::feeds::binance::connector::FeedEvent;
use crate::feeds::binance::wire::{BinanceEvent, DepthSnapshot, DepthUpdate};
use crate::market::instrument::Instrument;
use crate::market::types::{Candle, Timeframe, Trade};

/// Rows buffered per partition before they are handed to the Parquet writer as one batch.
const BATCH_ROWS: usize = 16_384;

/// Trade row sources.
pub mod trade_source {
    /// `aggTrade` stream.
    pub const AGG: &str = "agg";
    /// `trade` stream.
    pub const TRADE: &str = "trade";
    /// Recovered over REST after a gap.
    pub const RECOVERED: &str = "recovered";
    /// Imported from a historical-data file.
    pub const IMPORT: &str = "import";
}

/// Candle row sources.
pub mod candle_source {
    /// A REST history page received by the feed.
    pub const HISTORY: &str = "history";
    /// Imported from a historical-data file.
    pub const IMPORT: &str = "import";
    /// Closed by the recorder's own pipeline from the trades it received.
    pub const LIVE: &str = "live";
}

/// Totals of a writer, for progress lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Events recorded (an import batch counts its rows).
    pub events: u64,
    /// Rows written into files (closed or still open).
    pub rows: u64,
    /// Files closed and visible.
    pub files: u64,
    /// Bytes of the closed files.
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PartKey {
    dataset: Dataset,
    symbol: Option<String>,
    date: String,
}

struct OpenPart {
    rows: Rows,
    /// The part file on the writer thread, and the rows handed to it so far.
    file: Option<(PartId, usize)>,
}

/// Writes market events into day partitions; holds the store's writer lock.
///
/// Rows are buffered on the caller's thread; full batches are encoded, compressed, synced and
/// published by a [`PartWriter`] thread, so recording from an async task never blocks on the
/// disk (unless the disk falls a whole queue of batches behind).
pub struct MarketWriter {
    root: PathBuf,
    config: StorageConfig,
    session: u64,
    seq: u64,
    open: BTreeMap<PartKey, OpenPart>,
    last_flush_ms: Option<i64>,
    stats: WriteStats,
    // Declared before the lock: the thread finishes its renames before the lock is released.
    parts: PartWriter,
    _lock: StoreLock,
}

impl MarketWriter {
    /// Opens the store at `root` for writing: takes the lock, then recovers or sets aside the
    /// part files an earlier crash left. `session` orders this writer's rows after earlier
    /// sessions' (use the start time in ms).
    pub fn open(
        root: &Path,
        config: &StorageConfig,
        session: u64,
    ) -> Result<(Self, Recovery), StorageError> {
        let lock = StoreLock::acquire(root)?;
        let recovery = partition::recover(root)?;
        let parts = PartWriter::spawn()?;
        Ok((
            Self {
                root: root.to_path_buf(),
                config: config.clone(),
                session,
                seq: 0,
                open: BTreeMap::new(),
                last_flush_ms: None,
                stats: WriteStats::default(),
                parts,
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Totals so far (files and bytes count the files the writer thread has published).
    pub fn stats(&self) -> WriteStats {
        let (files, bytes) = self.parts.closed();
        WriteStats {
            files,
            bytes,
            ..self.stats
        }
    }

    /// Files currently being written (invisible until closed).
    pub fn open_files(&self) -> usize {
        self.open.values().filter(|p| p.file.is_some()).count()
    }

    fn next_key(&mut self) -> RowKey {
        self.seq += 1;
        RowKey {
            session: self.session,
            seq: self.seq,
        }
    }

    fn rows(&mut self, dataset: Dataset, symbol: Option<&str>, date: String) -> &mut Rows {
        let key = PartKey {
            dataset,
            symbol: symbol.map(str::to_string),
            date,
        };
        &mut self
            .open
            .entry(key)
            .or_insert_with(|| OpenPart {
                rows: Rows::new(dataset),
                file: None,
            })
            .rows
    }

    fn control(&mut self, recv_ms: i64, row: ControlRow) {
        let key = self.next_key();
        if let Rows::Control(r) = self.rows(Dataset::Control, None, utc_date(recv_ms)) {
            r.push(key, recv_ms, &row);
        }
    }

    /// Records one connector event as received at `recv_ms` (local clock), before the pipeline
    /// applies it.
    pub fn record(&mut self, recv_ms: i64, ev: &FeedEvent) -> Result<(), StorageError> {
        self.stats.events += 1;
        let date = utc_date(recv_ms);
        match ev {
            FeedEvent::Connected { connects } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::CONNECTED,
                    connects: Some(*connects),
                    ..Default::default()
                },
            ),
            FeedEvent::Disconnected { reason, retry_in } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::DISCONNECTED,
                    retry_ms: Some(retry_in.as_millis() as i64),
                    text: Some(reason.clone()),
                    ..Default::default()
                },
            ),
            FeedEvent::Market(BinanceEvent::Depth(d)) => {
                let key = self.next_key();
                if let Rows::Book(r) = self.rows(Dataset::Book, Some(&d.symbol), date) {
                    r.push_diff(key, recv_ms, d);
                }
            }
            FeedEvent::Market(BinanceEvent::PartialDepth {
                symbol: Some(symbol),
                snapshot,
            }) => {
                let key = self.next_key();
                if let Rows::Book(r) = self.rows(Dataset::Book, Some(symbol), date) {
                    r.push_snapshot(key, recv_ms, book_kind::PARTIAL, snapshot);
                }
            }
            FeedEvent::Market(BinanceEvent::AggTrade(t) | BinanceEvent::Trade(t)) => {
                let source = match ev {
                    FeedEvent::Market(BinanceEvent::AggTrade(_)) => trade_source::AGG,
                    _ => trade_source::TRADE,
                };
                let key = self.next_key();
                if let Rows::Trades(r) = self.rows(Dataset::Trades, Some(&t.symbol), date) {
                    r.push(key, Some(recv_ms), source, t, None);
                }
            }
            FeedEvent::Market(other) => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::OTHER,
                    symbol: other.symbol().map(str::to_string),
                    text: Some(format!("{other:?}")),
                    ..Default::default()
                },
            ),
            FeedEvent::Malformed { kind, log } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::MALFORMED,
                    text: Some(kind.to_string()),
                    detail: log.clone(),
                    ..Default::default()
                },
            ),
            FeedEvent::Snapshot { symbol, snapshot } => {
                let key = self.next_key();
                if let Rows::Book(r) = self.rows(Dataset::Book, Some(symbol), date) {
                    r.push_snapshot(key, recv_ms, book_kind::SNAPSHOT, snapshot);
                }
            }
            FeedEvent::History {
                symbol,
                timeframe,
                candles,
            } if !candles.is_empty() => {
                let key = self.next_key();
                if let Rows::Candles(r) = self.rows(Dataset::Candles, Some(symbol), date) {
                    for c in candles {
                        r.push(
                            key,
                            Some(recv_ms),
                            candle_source::HISTORY,
                            timeframe.as_str(),
                            c,
                        );
                    }
                }
            }
            FeedEvent::History {
                symbol, timeframe, ..
            } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::HISTORY_EMPTY,
                    symbol: Some(symbol.clone()),
                    timeframe: Some(timeframe.as_str().to_string()),
                    ..Default::default()
                },
            ),
            FeedEvent::RecoveredTrades {
                symbol,
                trades,
                complete,
            } if !trades.is_empty() => {
                let key = self.next_key();
                if let Rows::Trades(r) = self.rows(Dataset::Trades, Some(symbol), date) {
                    for t in trades {
                        r.push(
                            key,
                            Some(recv_ms),
                            trade_source::RECOVERED,
                            t,
                            Some(*complete),
                        );
                    }
                }
            }
            FeedEvent::RecoveredTrades {
                symbol, complete, ..
            } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::RECOVERED_EMPTY,
                    symbol: Some(symbol.clone()),
                    complete: Some(*complete),
                    ..Default::default()
                },
            ),
            FeedEvent::Instruments(list) => {
                let json = serde_json::to_string(list).map_err(|e| StorageError::Encoding {
                    what: "instruments",
                    message: e.to_string(),
                })?;
                self.control(
                    recv_ms,
                    ControlRow {
                        kind: control_kind::INSTRUMENTS,
                        text: Some(json),
                        ..Default::default()
                    },
                )
            }
            FeedEvent::RestFailed { what, error } => self.control(
                recv_ms,
                ControlRow {
                    kind: control_kind::REST_FAILED,
                    text: Some(what.clone()),
                    detail: Some(error.clone()),
                    ..Default::default()
                },
            ),
        }
        self.after_write(recv_ms)
    }

    /// Records that the once-a-second pipeline step ran at `now_ms`.
    pub fn record_second(&mut self, now_ms: i64) -> Result<(), StorageError> {
        self.stats.events += 1;
        self.control(
            now_ms,
            ControlRow {
                kind: control_kind::SECOND,
                ..Default::default()
            },
        );
        self.after_write(now_ms)
    }

    /// Writes candles the recording pipeline closed (not replayed: replay rebuilds them from
    /// the trades; kept so `read_candles` covers recorded periods).
    pub fn record_closed_candles(
        &mut self,
        recv_ms: i64,
        symbol: &str,
        timeframe: Timeframe,
        candles: &[Candle],
    ) -> Result<(), StorageError> {
        if candles.is_empty() {
            return Ok(());
        }
        let key = self.next_key();
        if let Rows::Candles(r) = self.rows(Dataset::Candles, Some(symbol), utc_date(recv_ms)) {
            for c in candles {
                r.push(
                    key,
                    Some(recv_ms),
                    candle_source::LIVE,
                    timeframe.as_str(),
                    c,
                );
            }
        }
        self.spill()
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes imported candles (partitioned by their open day; no receive time).
    pub fn import_candles(
        &mut self,
        symbol: &str,
        timeframe: Timeframe,
        candles: &[Candle],
    ) -> Result<(), StorageError> {
        for c in candles {
            let key = self.next_key();
            self.stats.events += 1;
            if let Rows::Candles(r) =
                self.rows(Dataset::Candles, Some(symbol), utc_date(c.open_time_ms))
            {
                r.push(key, None, candle_source::IMPORT, timeframe.as_str(), c);
            }
        }
        self.spill()
    }

    /// Writes imported trades (partitioned by their trade day; no receive time).
    pub fn import_trades(&mut self, symbol: &str, trades: &[Trade]) -> Result<(), StorageError> {
        for t in trades {
            let key = self.next_key();
            self.stats.events += 1;
            if let Rows::Trades(r) = self.rows(Dataset::Trades, Some(symbol), utc_date(t.time_ms)) {
                r.push(key, None, trade_source::IMPORT, t, None);
            }
        }
        self.spill()
    }

    fn after_write(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let last = *self.last_flush_ms.get_or_insert(now_ms);
        if now_ms - last >= self.config.flush_secs as i64 * 1000 {
            // Queued, not awaited: the writer thread publishes the files in the background.
            self.close_all()?;
            self.last_flush_ms = Some(now_ms);
            return Ok(());
        }
        self.spill()
    }

    /// Hands full buffers to their files and closes files that reached the row limit.
    fn spill(&mut self) -> Result<(), StorageError> {
        let max_rows = self.config.max_rows_per_file.max(1);
        for (key, part) in self.open.iter_mut() {
            if part.rows.len() >= BATCH_ROWS {
                write_rows(
                    &self.root,
                    &self.config,
                    key,
                    part,
                    &mut self.parts,
                    &mut self.stats,
                )?;
            }
            if let Some((id, rows)) = part.file
                && rows >= max_rows
            {
                part.file = None;
                self.parts.close(id)?;
            }
        }
        Ok(())
    }

    /// Hands everything buffered to the writer thread and queues every open file to close.
    fn close_all(&mut self) -> Result<(), StorageError> {
        let open = std::mem::take(&mut self.open);
        for (key, mut part) in open {
            if !part.rows.is_empty() {
                write_rows(
                    &self.root,
                    &self.config,
                    &key,
                    &mut part,
                    &mut self.parts,
                    &mut self.stats,
                )?;
            }
            if let Some((id, _)) = part.file.take() {
                self.parts.close(id)?;
            }
        }
        Ok(())
    }

    /// Writes everything buffered and closes every open file, making all rows durable and
    /// visible to readers when it returns.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.close_all()?;
        self.parts.wait()
    }

    /// Flushes and releases the store.
    pub fn close(mut self) -> Result<WriteStats, StorageError> {
        self.flush()?;
        Ok(self.stats())
    }
}

impl Drop for MarketWriter {
    fn drop(&mut self) {
        // An early return (error, panic unwinding) still closes what it can; `close` already
        // emptied `open` on the normal path.
        if !self.open.is_empty()
            && let Err(e) = self.flush()
        {
            tracing::warn!(error = %e, "closing market files on drop failed");
        }
    }
}

fn write_rows(
    root: &Path,
    config: &StorageConfig,
    key: &PartKey,
    part: &mut OpenPart,
    parts: &mut PartWriter,
    stats: &mut WriteStats,
) -> Result<(), StorageError> {
    let batch = part.rows.finish()?;
    let n = batch.num_rows();
    let (id, rows) = match part.file {
        Some(f) => f,
        None => {
            let dir = partition::partition_dir(
                root,
                key.dataset.name(),
                key.symbol.as_deref(),
                &key.date,
            );
            let id = parts.open(
                dir,
                key.dataset.schema(),
                writer_properties(config.compression, key.dataset.name()),
            )?;
            (id, 0)
        }
    };
    part.file = Some((id, rows + n));
    parts.write(id, batch)?;
    stats.rows += n as u64;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Reads every batch of one part file.
pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, StorageError> {
    read_file_columns(path, None)
}

/// Reads the batches of one part file, decoding only the named columns when `columns` is
/// given (the others are not even decompressed).
pub fn read_file_columns(
    path: &Path,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>, StorageError> {
    let perr = |source| StorageError::Parquet {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(|e| StorageError::io("opening", path, e))?;
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(perr)?
        .with_batch_size(65_536);
    if let Some(names) = columns {
        let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
        builder = builder.with_projection(mask);
    }
    builder
        .build()
        .map_err(perr)?
        .map(|b| {
            b.map_err(|source| StorageError::Arrow {
                what: "reading",
                source,
            })
        })
        .collect()
}

/// Symbols that have data in a dataset.
pub fn symbols(root: &Path, dataset: Dataset) -> Result<Vec<String>, StorageError> {
    Ok(
        hive_children(&root.join(MARKET_DIR).join(dataset.name()), "symbol")?
            .into_iter()
            .map(|(s, _)| s)
            .collect(),
    )
}

/// Days (since the epoch) that hold any market data, ascending.
pub fn recorded_days(root: &Path) -> Result<Vec<i64>, StorageError> {
    let mut days = std::collections::BTreeSet::new();
    for ds in Dataset::ALL {
        let base = root.join(MARKET_DIR).join(ds.name());
        let parents: Vec<PathBuf> = if ds.by_symbol() {
            hive_children(&base, "symbol")?
                .into_iter()
                .map(|(_, p)| p)
                .collect()
        } else {
            vec![base]
        };
        for parent in parents {
            days.extend(
                hive_children(&parent, "date")?
                    .into_iter()
                    .filter_map(|(d, _)| parse_date(&d)),
            );
        }
    }
    Ok(days.into_iter().collect())
}

/// Part files of a dataset for one symbol (or the control dataset with `None`) whose day lies
/// in `[from_day, to_day]` (days since the epoch), in date then part order.
pub fn dataset_files(
    root: &Path,
    dataset: Dataset,
    symbol: Option<&str>,
    from_day: Option<i64>,
    to_day: Option<i64>,
) -> Result<Vec<PathBuf>, StorageError> {
    let mut dir = root.join(MARKET_DIR).join(dataset.name());
    if let Some(s) = symbol {
        dir.push(format!("symbol={s}"));
    }
    let mut files = Vec::new();
    for (date, path) in hive_children(&dir, "date")? {
        let Some(day) = parse_date(&date) else {
            tracing::warn!(folder = %path.display(), "ignoring a folder with an invalid date");
            continue;
        };
        if from_day.is_some_and(|f| day < f) || to_day.is_some_and(|t| day > t) {
            continue;
        }
        files.extend(part_files(&path)?);
    }
    Ok(files)
}

fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// Candles of one symbol and timeframe with `from_ms <= open_time < to_ms`, oldest first.
///
/// Recorded history pages and imports may overlap; for each open time the row written last
/// wins (a later page completes the candle an earlier page saw still open).
pub fn read_candles(
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Candle>, StorageError> {
    // A candle is stored on its open day (import) or later (history received afterwards).
    let files = dataset_files(
        root,
        Dataset::Candles,
        Some(symbol),
        Some(day_of(from_ms) - 1),
        None,
    )?;
    let tf = timeframe.as_str();
    let mut found: BTreeMap<i64, (RowKey, Candle)> = BTreeMap::new();
    const COLUMNS: [&str; 11] = [
        "session",
        "seq",
        "recv_ms",
        "timeframe",
        "open_time_ms",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "trades",
    ];
    for path in files {
        let name = path.display().to_string();
        for batch in read_file_columns(&path, Some(&COLUMNS))? {
            let c = Columns::new(&batch, &name);
            let (keys, candles) = (KeyView::bind(&c)?, CandleView::bind(&c)?);
            for i in 0..batch.num_rows() {
                let t = candles.open_time_ms(i);
                if candles.timeframe(i) != tf || t < from_ms || t >= to_ms {
                    continue;
                }
                let key = keys.key(i);
                match found.get(&t) {
                    Some((k, _)) if *k > key => {}
                    _ => {
                        found.insert(t, (key, candles.candle(i)));
                    }
                }
            }
        }
    }
    Ok(found.into_values().map(|(_, c)| c).collect())
}

/// Trades of one symbol with `from_ms <= time < to_ms`, in time then id order, each id once.
pub fn read_trades(
    root: &Path,
    symbol: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Trade>, StorageError> {
    let files = dataset_files(
        root,
        Dataset::Trades,
        Some(symbol),
        Some(day_of(from_ms) - 1),
        Some(day_of(to_ms) + 1),
    )?;
    let mut out = Vec::new();
    let columns = ["id", "time_ms", "price", "qty", "taker_buy"];
    for path in files {
        let name = path.display().to_string();
        for batch in read_file_columns(&path, Some(&columns))? {
            let trades = TradeView::bind(&Columns::new(&batch, &name))?;
            for i in 0..batch.num_rows() {
                let t = trades.time_ms(i);
                if t >= from_ms && t < to_ms {
                    out.push(trades.trade(i, symbol));
                }
            }
        }
    }
    out.sort_by_key(|t| (t.time_ms, t.id));
    out.dedup_by_key(|t| t.id);
    Ok(out)
}

/// One recorded item, ready to replay.
#[derive(Debug)]
pub enum StoredEvent {
    /// A connector event, exactly as the pipeline received it.
    Feed(FeedEvent),
    /// The once-a-second pipeline step.
    Second,
    /// A message the pipeline does not use, kept only as a description.
    Note(String),
}

/// A recorded item with its order key and local receive time.
#[derive(Debug)]
pub struct Stamped {
    /// Session and order.
    pub key: RowKey,
    /// Local receive time, ms.
    pub recv_ms: i64,
    /// What was recorded.
    pub event: StoredEvent,
}

/// Which recorded events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these exchange symbols (empty: all).
    pub symbols: Vec<String>,
    /// Only events received at or after this time.
    pub from_ms: Option<i64>,
    /// Only events received before this time.
    pub to_ms: Option<i64>,
}

impl EventFilter {
    fn wants_symbol(&self, s: &str) -> bool {
        self.symbols.is_empty() || self.symbols.iter().any(|x| x == s)
    }

    fn wants_time(&self, t: i64) -> bool {
        self.from_ms.is_none_or(|f| t >= f) && self.to_ms.is_none_or(|e| t < e)
    }
}

/// Recorded events (imports excluded) in recording order: by session, then sequence.
///
/// Files are decoded in parallel (each into its own run, in file order), then merged.
pub fn read_events(root: &Path, filter: &EventFilter) -> Result<Vec<Stamped>, StorageError> {
    let from_day = filter.from_ms.map(day_of);
    let to_day = filter.to_ms.map(day_of);
    let mut files = Vec::new();
    for ds in [Dataset::Candles, Dataset::Trades, Dataset::Book] {
        for symbol in symbols(root, ds)? {
            if !filter.wants_symbol(&symbol) {
                continue;
            }
            for path in dataset_files(root, ds, Some(&symbol), from_day, to_day)? {
                files.push(EventFile {
                    dataset: ds,
                    symbol: symbol.clone(),
                    path,
                });
            }
        }
    }
    for path in dataset_files(root, Dataset::Control, None, from_day, to_day)? {
        files.push(EventFile {
            dataset: Dataset::Control,
            symbol: String::new(),
            path,
        });
    }
    Ok(merge_runs(decode_files(&files, filter)?))
}

/// Merges runs that are each in key order into one, moving every event once (a concatenation
/// plus sort moved them several times); equal keys keep run order, as a stable sort would.
fn merge_runs(runs: Vec<Vec<Stamped>>) -> Vec<Stamped> {
    use std::cmp::Reverse;
    let mut out = Vec::with_capacity(runs.iter().map(Vec::len).sum());
    let mut iters: Vec<std::iter::Peekable<std::vec::IntoIter<Stamped>>> =
        runs.into_iter().map(|r| r.into_iter().peekable()).collect();
    let mut heads: std::collections::BinaryHeap<Reverse<(RowKey, usize)>> = iters
        .iter_mut()
        .enumerate()
        .filter_map(|(i, it)| it.peek().map(|e| Reverse((e.key, i))))
        .collect();
    while let Some(Reverse((_, i))) = heads.pop() {
        let run = &mut iters[i];
        out.extend(run.next());
        if let Some(next) = run.peek() {
            heads.push(Reverse((next.key, i)));
        }
    }
    out
}

/// One part file to decode into events.
struct EventFile {
    dataset: Dataset,
    /// The partition's symbol (empty for the control dataset).
    symbol: String,
    path: PathBuf,
}

/// Decodes one part file into events in key order.
fn decode_file(f: &EventFile, filter: &EventFilter) -> Result<Vec<Stamped>, StorageError> {
    let name = f.path.display().to_string();
    let mut out = Vec::new();
    for batch in read_file(&f.path)? {
        // Events are large: growing the vector by doubling would copy them over and over.
        out.reserve(batch.num_rows());
        let c = Columns::new(&batch, &name);
        match f.dataset {
            Dataset::Candles => decode_candles(&c, &batch, &f.symbol, filter, &mut out)?,
            Dataset::Trades => decode_trades(&c, &batch, &f.symbol, filter, &mut out)?,
            Dataset::Book => decode_book(&c, &batch, &f.symbol, filter, &mut out)?,
            Dataset::Control => decode_control(&c, &batch, filter, &mut out)?,
        }
    }
    // The recorder writes each file in order; a file from elsewhere may not be.
    if !out.is_sorted_by_key(|e| e.key) {
        out.sort_by_key(|e| e.key);
    }
    Ok(out)
}

/// Decodes files on up to as many threads as the machine has cores; runs come back in file
/// order, and the first failing file (in that order) is the error.
fn decode_files(
    files: &[EventFile],
    filter: &EventFilter,
) -> Result<Vec<Vec<Stamped>>, StorageError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if threads <= 1 {
        return files.iter().map(|f| decode_file(f, filter)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut runs: Vec<Option<Result<Vec<Stamped>, StorageError>>> =
        std::iter::repeat_with(|| None).take(files.len()).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        done.push((i, decode_file(f, filter)));
                    }
                    done
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(done) => {
                    for (i, run) in done {
                        runs[i] = Some(run);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    runs.into_iter()
        .zip(files)
        .map(|(run, f)| {
            run.unwrap_or_else(|| {
                Err(StorageError::Schema {
                    path: f.path.display().to_string(),
                    message: "file was not decoded".into(),
                })
            })
        })
        .collect()
}

/// Decodes the book rows of one batch into events (benchmarks call this directly).
pub fn decode_book(
    c: &Columns<'_>,
    batch: &RecordBatch,
    symbol: &str,
    filter: &EventFilter,
    out: &mut Vec<Stamped>,
) -> Result<(), StorageError> {
    let keys = KeyView::bind(c)?;
    let kind = c.str("kind")?;
    let (et, tt) = (c.i64("event_time_ms")?, c.i64("transaction_time_ms")?);
    let (first, last, prev) = (
        c.u64("first_update_id")?,
        c.u64("final_update_id")?,
        c.u64("prev_final_update_id")?,
    );
    let (bp, bq, ap, aq) = (
        c.list("bid_price")?,
        c.list("bid_qty")?,
        c.list("ask_price")?,
        c.list("ask_qty")?,
    );
    for i in 0..batch.num_rows() {
        let Some(recv_ms) = keys.recv_ms(i).filter(|t| filter.wants_time(*t)) else {
            continue;
        };
        let (Some(bids), Some(asks)) = (
            zip_levels(bp.row(i), bq.row(i)),
            zip_levels(ap.row(i), aq.row(i)),
        ) else {
            return Err(c.bad_value(i, "price and quantity lists differ in length"));
        };
        let event = match kind.value(i) {
            book_kind::DIFF => {
                let Some(first_update_id) = opt_u64(first, i) else {
                    return Err(c.bad_value(i, "diff without first_update_id"));
                };
                FeedEvent::Market(BinanceEvent::Depth(DepthUpdate {
                    symbol: symbol.to_string(),
                    event_time_ms: opt_i64(et, i).unwrap_or_default(),
                    transaction_time_ms: opt_i64(tt, i),
                    first_update_id,
                    final_update_id: last.value(i),
                    prev_final_update_id: opt_u64(prev, i),
                    bids,
                    asks,
                }))
            }
            k @ (book_kind::SNAPSHOT | book_kind::PARTIAL) => {
                let snapshot = DepthSnapshot {
                    last_update_id: last.value(i),
                    event_time_ms: opt_i64(et, i),
                    transaction_time_ms: opt_i64(tt, i),
                    bids,
                    asks,
                };
                if k == book_kind::SNAPSHOT {
                    FeedEvent::Snapshot {
                        symbol: symbol.to_string(),
                        snapshot,
                    }
                } else {
                    FeedEvent::Market(BinanceEvent::PartialDepth {
                        symbol: Some(symbol.to_string()),
                        snapshot,
                    })
                }
            }
            other => return Err(c.bad_value(i, format!("unknown book row kind {other:?}"))),
        };
        out.push(Stamped {
            key: keys.key(i),
            recv_ms,
            event: StoredEvent::Feed(event),
        });
    }
    Ok(())
}

/// Decodes the trade rows of one batch into events; imported rows are skipped.
pub fn decode_trades(
    c: &Columns<'_>,
    batch: &RecordBatch,
    symbol: &str,
    filter: &EventFilter,
    out: &mut Vec<Stamped>,
) -> Result<(), StorageError> {
    let (keys, view) = (KeyView::bind(c)?, TradeView::bind(c)?);
    let (source, complete) = (c.str("source")?, c.bool("complete")?);
    for i in 0..batch.num_rows() {
        // Imported rows have no receive time and are not replayed.
        let Some(recv_ms) = keys.recv_ms(i).filter(|t| filter.wants_time(*t)) else {
            continue;
        };
        let key = keys.key(i);
        let trade = view.trade(i, symbol);
        let event = match source.value(i) {
            trade_source::AGG => FeedEvent::Market(BinanceEvent::AggTrade(trade)),
            trade_source::TRADE => FeedEvent::Market(BinanceEvent::Trade(trade)),
            trade_source::RECOVERED => {
                // Rows of one recovery page share a key: append to the page in progress.
                if let Some(Stamped {
                    key: k,
                    event: StoredEvent::Feed(FeedEvent::RecoveredTrades { trades, .. }),
                    ..
                }) = out.last_mut()
                    && *k == key
                {
                    trades.push(trade);
                    continue;
                }
                FeedEvent::RecoveredTrades {
                    symbol: symbol.to_string(),
                    trades: vec![trade],
                    complete: opt_bool(complete, i).unwrap_or(true),
                }
            }
            trade_source::IMPORT => continue,
            other => return Err(c.bad_value(i, format!("unknown trade source {other:?}"))),
        };
        out.push(Stamped {
            key,
            recv_ms,
            event: StoredEvent::Feed(event),
        });
    }
    Ok(())
}

/// Decodes the candle rows of one batch into history events; imported rows are skipped.
pub fn decode_candles(
    c: &Columns<'_>,
    batch: &RecordBatch,
    symbol: &str,
    filter: &EventFilter,
    out: &mut Vec<Stamped>,
) -> Result<(), StorageError> {
    let (keys, candles) = (KeyView::bind(c)?, CandleView::bind(c)?);
    let source = c.str("source")?;
    for i in 0..batch.num_rows() {
        if source.value(i) != candle_source::HISTORY {
            continue;
        }
        let Some(recv_ms) = keys.recv_ms(i).filter(|t| filter.wants_time(*t)) else {
            continue;
        };
        let name = candles.timeframe(i);
        let Some(timeframe) = Timeframe::parse(name) else {
            return Err(c.bad_value(i, format!("unknown timeframe {name:?}")));
        };
        let key = keys.key(i);
        let candle = candles.candle(i);
        if let Some(Stamped {
            key: k,
            event: StoredEvent::Feed(FeedEvent::History { candles, .. }),
            ..
        }) = out.last_mut()
            && *k == key
        {
            candles.push(candle);
            continue;
        }
        out.push(Stamped {
            key,
            recv_ms,
            event: StoredEvent::Feed(FeedEvent::History {
                symbol: symbol.to_string(),
                timeframe,
                candles: vec![candle],
            }),
        });
    }
    Ok(())
}

/// `Malformed` kinds are static strings; map a stored one back onto the connector's set.
fn malformed_kind(text: &str) -> &'static str {
    const KINDS: [&str; 9] = [
        "empty",
        "json",
        "missing_field",
        "bad_number",
        "bad_field",
        "unknown_event",
        "unknown_shape",
        "exchange_error",
        "binary",
    ];
    KINDS.into_iter().find(|k| *k == text).unwrap_or("recorded")
}

/// Decodes control rows into events.
pub fn decode_control(
    c: &Columns<'_>,
    batch: &RecordBatch,
    filter: &EventFilter,
    out: &mut Vec<Stamped>,
) -> Result<(), StorageError> {
    let keys = KeyView::bind(c)?;
    let (kind, symbol, tf) = (c.str("kind")?, c.str("symbol")?, c.str("timeframe")?);
    let (connects, retry, complete) = (c.u64("connects")?, c.i64("retry_ms")?, c.bool("complete")?);
    let (text, detail) = (c.str("text")?, c.str("detail")?);
    for i in 0..batch.num_rows() {
        let Some(recv_ms) = keys.recv_ms(i).filter(|t| filter.wants_time(*t)) else {
            continue;
        };
        let sym = opt_str(symbol, i);
        if let Some(s) = sym
            && !filter.wants_symbol(s)
        {
            continue;
        }
        let need_symbol = || {
            sym.map(str::to_string)
                .ok_or_else(|| c.bad_value(i, "row without symbol"))
        };
        let text_of = || opt_str(text, i).unwrap_or_default().to_string();
        let event = match kind.value(i) {
            control_kind::SECOND => StoredEvent::Second,
            control_kind::CONNECTED => StoredEvent::Feed(FeedEvent::Connected {
                connects: opt_u64(connects, i).unwrap_or_default(),
            }),
            control_kind::DISCONNECTED => StoredEvent::Feed(FeedEvent::Disconnected {
                reason: text_of(),
                retry_in: std::time::Duration::from_millis(
                    opt_i64(retry, i).unwrap_or_default().max(0) as u64,
                ),
            }),
            control_kind::MALFORMED => StoredEvent::Feed(FeedEvent::Malformed {
                kind: malformed_kind(&text_of()),
                log: opt_str(detail, i).map(str::to_string),
            }),
            control_kind::REST_FAILED => StoredEvent::Feed(FeedEvent::RestFailed {
                what: text_of(),
                error: opt_str(detail, i).unwrap_or_default().to_string(),
            }),
            control_kind::INSTRUMENTS => {
                let list: Vec<Instrument> = serde_json::from_str(&text_of())
                    .map_err(|e| c.bad_value(i, format!("instruments JSON: {e}")))?;
                StoredEvent::Feed(FeedEvent::Instruments(list))
            }
            control_kind::HISTORY_EMPTY => {
                let name = opt_str(tf, i).unwrap_or_default();
                let timeframe = Timeframe::parse(name)
                    .ok_or_else(|| c.bad_value(i, format!("unknown timeframe {name:?}")))?;
                StoredEvent::Feed(FeedEvent::History {
                    symbol: need_symbol()?,
                    timeframe,
                    candles: Vec::new(),
                })
            }
            control_kind::RECOVERED_EMPTY => StoredEvent::Feed(FeedEvent::RecoveredTrades {
                symbol: need_symbol()?,
                trades: Vec::new(),
                complete: opt_bool(complete, i).unwrap_or(true),
            }),
            control_kind::OTHER => StoredEvent::Note(text_of()),
            other => return Err(c.bad_value(i, format!("unknown control row kind {other:?}"))),
        };
        out.push(Stamped {
            key: keys.key(i),
            recv_ms,
            event,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tag: &str, keys: &[(u64, u64)]) -> Vec<Stamped> {
        keys.iter()
            .map(|&(session, seq)| Stamped {
                key: RowKey { session, seq },
                recv_ms: seq as i64,
                event: StoredEvent::Note(tag.to_string()),
            })
            .collect()
    }

    #[test]
    fn runs_merge_in_key_order_and_ties_keep_run_order() {
        let merged = merge_runs(vec![
            run("a", &[(1, 1), (1, 4), (2, 1)]),
            Vec::new(),
            run("b", &[(1, 2), (1, 3), (1, 4)]),
            run("c", &[(0, 9)]),
        ]);
        let keys: Vec<(u64, u64)> = merged.iter().map(|e| (e.key.session, e.key.seq)).collect();
        assert_eq!(
            keys,
            [(0, 9), (1, 1), (1, 2), (1, 3), (1, 4), (1, 4), (2, 1)]
        );
        // The tie on (1, 4): the first run's event comes first, as a stable sort would keep it.
        let notes: Vec<&str> = merged
            .iter()
            .filter_map(|e| match &e.event {
                StoredEvent::Note(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notes, ["c", "a", "b", "b", "a", "b", "a"]);
        assert!(merge_runs(Vec::new()).is_empty());
    }
}
