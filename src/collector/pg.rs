//! Batched, idempotent writes to PostgreSQL.
//!
//! A batch is first binary-COPYed straight into its tables (one pass over the rows, no second
//! copy through a staging table). Rows carry their primary key, so a row that is already stored
//! cannot be doubled: the COPY fails with a unique violation instead, and the batch is written
//! again through the idempotent path, a per-connection staging table followed by
//! `INSERT … ON CONFLICT DO NOTHING` in the same transaction. A batch retried after any failure
//! (an acknowledgement lost with the connection may mean it was committed) takes the idempotent
//! path at once.
//!
//! `synchronous_commit` is left at the server's setting (on by default) on purpose: the sink
//! drops a batch from its buffer as soon as the commit is acknowledged, so an asynchronous
//! commit would turn a database crash into rows silently lost, and the wait for the WAL flush
//! is paid once per batch of thousands of rows, not per row.

use std::collections::HashSet;
use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::record::{MarketRecord, RecordBody};
use super::schema::{self, Layout};
use crate::market::types::Side;

/// One row for one table, in storage form (exact integers, JSON for COB).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Row {
    /// `trades`.
    Trade {
        /// Exchange.
        exchange: String,
        /// Symbol.
        symbol: String,
        /// Trade id.
        id: i64,
        /// Trade time, ms.
        time_ms: i64,
        /// Price × 10^8.
        price_e8: i64,
        /// Quantity × 10^8.
        qty_e8: i64,
        /// Buyer was the taker.
        taker_buy: bool,
    },
    /// `candles`.
    Candle {
        /// Exchange.
        exchange: String,
        /// Symbol.
        symbol: String,
        /// `1s`, `1m`, `1h`, `1d`.
        timeframe: String,
        /// Interval start, ms.
        open_time_ms: i64,
        /// Open, high, low, close × 10^8.
        ohlc_e8: [i64; 4],
        /// Base volume × 10^8.
        volume_e8: i64,
        /// Trades aggregated.
        trades: i64,
    },
    /// `book_top`.
    BookTop {
        /// Exchange.
        exchange: String,
        /// Symbol.
        symbol: String,
        /// Sample time, ms.
        time_ms: i64,
        /// Best bid (price, qty) × 10^8.
        bid_e8: Option<(i64, i64)>,
        /// Best ask (price, qty) × 10^8.
        ask_e8: Option<(i64, i64)>,
    },
    /// `cob_snapshots`.
    Cob {
        /// Exchange.
        exchange: String,
        /// Symbol.
        symbol: String,
        /// Computation time, ms.
        time_ms: i64,
        /// Mid × 10^8.
        mid_e8: i64,
        /// The whole computation as JSON.
        cob: serde_json::Value,
    },
}

impl Row {
    /// The table the row belongs to.
    pub fn table(&self) -> &'static str {
        match self {
            Row::Trade { .. } => "trades",
            Row::Candle { .. } => "candles",
            Row::BookTop { .. } => "book_top",
            Row::Cob { .. } => "cob_snapshots",
        }
    }

    /// The row's partitioning time, ms.
    pub fn time_ms(&self) -> i64 {
        match self {
            Row::Trade { time_ms, .. }
            | Row::BookTop { time_ms, .. }
            | Row::Cob { time_ms, .. } => *time_ms,
            Row::Candle { open_time_ms, .. } => *open_time_ms,
        }
    }

    /// The storage row for a record; `None` for records that are not stored (depth, heatmap,
    /// book images) and for values the schema cannot hold (trade id beyond `i64`).
    pub fn from_record(r: &MarketRecord) -> Option<Row> {
        let exchange = r.exchange.to_string();
        Some(match &r.body {
            RecordBody::Trade(t) => Row::Trade {
                exchange,
                symbol: t.symbol.clone(),
                id: i64::try_from(t.id).ok()?,
                time_ms: t.time_ms,
                price_e8: t.price.raw(),
                qty_e8: t.qty.raw(),
                taker_buy: t.taker_side == Side::Buy,
            },
            RecordBody::Candle(c) => Row::Candle {
                exchange,
                symbol: c.symbol.clone(),
                timeframe: c.timeframe.as_str().to_string(),
                open_time_ms: c.candle.open_time_ms,
                ohlc_e8: [
                    c.candle.open.raw(),
                    c.candle.high.raw(),
                    c.candle.low.raw(),
                    c.candle.close.raw(),
                ],
                volume_e8: c.candle.volume.raw(),
                trades: i64::try_from(c.candle.trades).ok()?,
            },
            RecordBody::BookTop(b) => Row::BookTop {
                exchange,
                symbol: b.symbol.clone(),
                time_ms: b.time_ms,
                bid_e8: b.bid.map(|l| (l.price.raw(), l.qty.raw())),
                ask_e8: b.ask.map(|l| (l.price.raw(), l.qty.raw())),
            },
            RecordBody::Cob { symbol, cob } => Row::Cob {
                exchange,
                symbol: symbol.clone(),
                time_ms: cob.time_ms,
                mid_e8: cob.mid.raw(),
                cob: serde_json::to_value(cob.as_ref()).ok()?,
            },
            RecordBody::Depth(_) | RecordBody::Heatmap { .. } | RecordBody::Book(_) => return None,
        })
    }
}

/// Why a database write failed (the batch stays buffered and is retried).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Connecting failed.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// Creating tables, partitions or policies failed.
    #[error("cannot prepare the schema ({what}): {source}")]
    Schema {
        /// The statement's purpose.
        what: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Writing a batch failed.
    #[error("writing to {table} failed: {source}")]
    Write {
        /// Target table.
        table: &'static str,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A timestamp outside what the database column holds.
    #[error("time {0} ms is outside the storable range")]
    Time(i64),
}

impl PgError {
    /// True when the server refused a row because its key is already stored.
    pub fn is_duplicate_key(&self) -> bool {
        match self {
            PgError::Write { source, .. } => source.code() == Some(&SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// How a batch goes into its tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// COPY straight into the tables: one pass, fails on a key already stored.
    Direct,
    /// COPY into staging, then `INSERT … ON CONFLICT DO NOTHING`: skips keys already stored.
    Idempotent,
}

fn system_time(ms: i64) -> Result<SystemTime, PgError> {
    let d = Duration::from_millis(ms.unsigned_abs());
    let t = if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.ok_or(PgError::Time(ms))
}

/// Milliseconds since the epoch of a database timestamp.
pub fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// Connects with a bounded connect time and drives the connection in the background.
pub async fn connect(url: &str, timeout: Duration) -> Result<Client, PgError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(PgError::Connect)?;
    cfg.connect_timeout(timeout);
    let (client, conn) = cfg.connect(NoTls).await.map_err(PgError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// Column types of each table in COPY order.
fn copy_types(table: &str) -> &'static [Type] {
    match table {
        "trades" => &[
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::INT8,
            Type::BOOL,
        ],
        "candles" => &[
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
        "book_top" => &[
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
        ],
        _ => &[
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::INT8,
            Type::JSONB,
        ],
    }
}

/// A database writer: connects lazily, prepares the schema once per connection, and forgets
/// the connection after any error so the next attempt starts clean.
pub struct PgWriter {
    url: String,
    connect_timeout: Duration,
    compress_after_days: u32,
    client: Option<Client>,
    layout: Option<Layout>,
    partitions: HashSet<(&'static str, i64)>,
    /// The last write failed: its batch may have been committed before the error surfaced.
    retrying: bool,
    fallbacks: u64,
}

impl PgWriter {
    /// A writer for `url` (`host=… port=… user=… dbname=…` or `postgres://…`).
    pub fn new(
        url: impl Into<String>,
        connect_timeout: Duration,
        compress_after_days: u32,
    ) -> Self {
        Self {
            url: url.into(),
            connect_timeout,
            compress_after_days,
            client: None,
            layout: None,
            partitions: HashSet::new(),
            retrying: false,
            fallbacks: 0,
        }
    }

    /// Batches that met a key already stored on the direct path and were written again
    /// idempotently (re-delivered rows, or a retry whose first attempt had been committed).
    pub fn duplicate_fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// The partitioning layout detected on the last connection.
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// True while a connection is held.
    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    async fn ensure_client(&mut self) -> Result<(), PgError> {
        if self.is_connected() {
            return Ok(());
        }
        self.client = None;
        let client = connect(&self.url, self.connect_timeout).await?;
        let layout = prepare_schema(&client, self.compress_after_days).await?;
        for t in schema::TABLES {
            client
                .batch_execute(&schema::create_staging(t))
                .await
                .map_err(|source| PgError::Schema {
                    what: format!("staging table for {t}"),
                    source,
                })?;
        }
        self.layout = Some(layout);
        self.partitions.clear();
        self.client = Some(client);
        Ok(())
    }

    /// Writes a batch in one transaction; rows already stored are skipped. Returns rows new to
    /// the database.
    pub async fn write(&mut self, rows: &[Row]) -> Result<u64, PgError> {
        let mode = if self.retrying {
            WriteMode::Idempotent
        } else {
            WriteMode::Direct
        };
        let mut result = self.write_with(rows, mode).await;
        if mode == WriteMode::Direct && result.as_ref().is_err_and(PgError::is_duplicate_key) {
            // The direct transaction rolled back whole; the connection is still good.
            self.fallbacks += 1;
            result = self.write_with(rows, WriteMode::Idempotent).await;
        }
        self.retrying = result.is_err();
        if result.is_err() {
            self.client = None;
        }
        result
    }

    /// Writes a batch in one transaction the way `mode` says; the connection is kept after an
    /// error (callers decide whether to drop it). Returns rows new to the database.
    pub async fn write_with(&mut self, rows: &[Row], mode: WriteMode) -> Result<u64, PgError> {
        self.ensure_client().await?;
        if self.layout == Some(Layout::Native) {
            self.ensure_partitions(rows).await?;
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(0);
        };
        let tx = client
            .transaction()
            .await
            .map_err(|source| PgError::Write {
                table: "transaction",
                source,
            })?;
        let mut inserted = 0;
        for table in schema::TABLES {
            if !rows.iter().any(|r| r.table() == table) {
                continue;
            }
            let werr = |source| PgError::Write { table, source };
            let target = match mode {
                WriteMode::Direct => table.to_string(),
                WriteMode::Idempotent => format!("stage_{table}"),
            };
            let sink = tx
                .copy_in(&format!(
                    "COPY {target} ({}) FROM STDIN BINARY",
                    schema::columns(table)
                ))
                .await
                .map_err(werr)?;
            let mut writer = pin!(BinaryCopyInWriter::new(sink, copy_types(table)));
            for row in rows.iter().filter(|r| r.table() == table) {
                write_row(writer.as_mut(), row).await?;
            }
            let copied = writer.as_mut().finish().await.map_err(werr)?;
            inserted += match mode {
                WriteMode::Direct => copied,
                WriteMode::Idempotent => tx
                    .execute(&schema::insert_from_staging(table), &[])
                    .await
                    .map_err(werr)?,
            };
        }
        tx.commit().await.map_err(|source| PgError::Write {
            table: "commit",
            source,
        })?;
        Ok(inserted)
    }

    async fn ensure_partitions(&mut self, rows: &[Row]) -> Result<(), PgError> {
        let mut wanted: Vec<(&'static str, i64)> = rows
            .iter()
            .map(|r| (r.table(), schema::day_of(r.time_ms())))
            .filter(|k| !self.partitions.contains(k))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        for (table, day) in wanted {
            client
                .batch_execute(&schema::create_day_partition(table, day))
                .await
                .map_err(|source| PgError::Schema {
                    what: format!("partition of {table} for day {day}"),
                    source,
                })?;
            self.partitions.insert((table, day));
        }
        Ok(())
    }
}

async fn write_row(
    mut w: std::pin::Pin<&mut BinaryCopyInWriter>,
    row: &Row,
) -> Result<(), PgError> {
    let table = row.table();
    let werr = |source| PgError::Write { table, source };
    match row {
        Row::Trade {
            exchange,
            symbol,
            id,
            time_ms,
            price_e8,
            qty_e8,
            taker_buy,
        } => {
            let t = system_time(*time_ms)?;
            let v: [&(dyn ToSql + Sync); 7] =
                [exchange, symbol, id, &t, price_e8, qty_e8, taker_buy];
            w.as_mut().write(&v).await.map_err(werr)
        }
        Row::Candle {
            exchange,
            symbol,
            timeframe,
            open_time_ms,
            ohlc_e8,
            volume_e8,
            trades,
        } => {
            let t = system_time(*open_time_ms)?;
            let v: [&(dyn ToSql + Sync); 10] = [
                exchange,
                symbol,
                timeframe,
                &t,
                &ohlc_e8[0],
                &ohlc_e8[1],
                &ohlc_e8[2],
                &ohlc_e8[3],
                volume_e8,
                trades,
            ];
            w.as_mut().write(&v).await.map_err(werr)
        }
        Row::BookTop {
            exchange,
            symbol,
            time_ms,
            bid_e8,
            ask_e8,
        } => {
            let t = system_time(*time_ms)?;
            let (bp, bq) = (bid_e8.map(|b| b.0), bid_e8.map(|b| b.1));
            let (ap, aq) = (ask_e8.map(|a| a.0), ask_e8.map(|a| a.1));
            let v: [&(dyn ToSql + Sync); 7] = [exchange, symbol, &t, &bp, &bq, &ap, &aq];
            w.as_mut().write(&v).await.map_err(werr)
        }
        Row::Cob {
            exchange,
            symbol,
            time_ms,
            mid_e8,
            cob,
        } => {
            let t = system_time(*time_ms)?;
            let v: [&(dyn ToSql + Sync); 5] = [exchange, symbol, &t, mid_e8, cob];
            w.as_mut().write(&v).await.map_err(werr)
        }
    }
}

/// Creates the tables (idempotent) and returns the layout in use: TimescaleDB when the
/// extension can be created, native partitioning otherwise. An existing database keeps the
/// layout its tables were created with.
pub async fn prepare_schema(client: &Client, compress_after_days: u32) -> Result<Layout, PgError> {
    let serr = |what: &str| {
        let what = what.to_string();
        move |source| PgError::Schema { what, source }
    };
    let existing = client
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'trades' AND n.nspname = current_schema()",
            &[],
        )
        .await
        .map_err(serr("existing tables"))?
        .map(|r| r.get::<_, String>(0));
    let layout = match existing.as_deref() {
        Some("p") => Layout::Native,
        Some(_) => Layout::Timescale,
        None => {
            let available = client
                .query_opt(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'",
                    &[],
                )
                .await
                .map_err(serr("extension check"))?
                .is_some();
            // The extension may be installed but not preloaded; then native partitioning.
            if available
                && client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                    .await
                    .is_ok()
            {
                Layout::Timescale
            } else {
                Layout::Native
            }
        }
    };
    for t in schema::TABLES {
        client
            .batch_execute(&schema::create_table(t, layout == Layout::Native))
            .await
            .map_err(serr(&format!("table {t}")))?;
        if layout == Layout::Timescale {
            for sql in schema::timescale_statements(t, compress_after_days) {
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(serr(&format!("hypertable {t}")))?;
            }
        }
    }
    tracing::info!(?layout, "database schema ready");
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty, Trade};
    use std::sync::Arc;

    #[test]
    fn records_map_to_exact_rows() {
        let r = MarketRecord {
            exchange: Arc::from("sim"),
            body: RecordBody::Trade(Trade {
                symbol: "ETHUSDT".into(),
                id: 7,
                time_ms: 1_700_000_000_123,
                price: Price::parse("2500.12345678").unwrap(),
                qty: Qty::parse("0.00000001").unwrap(),
                taker_side: Side::Sell,
            }),
        };
        let row = Row::from_record(&r).unwrap();
        assert_eq!(
            row,
            Row::Trade {
                exchange: "sim".into(),
                symbol: "ETHUSDT".into(),
                id: 7,
                time_ms: 1_700_000_000_123,
                price_e8: 250_012_345_678,
                qty_e8: 1,
                taker_buy: false,
            }
        );
        assert_eq!(row.table(), "trades");
        let back: Row = serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn ids_beyond_the_column_are_not_stored() {
        let r = MarketRecord {
            exchange: Arc::from("sim"),
            body: RecordBody::Trade(Trade {
                symbol: "X".into(),
                id: u64::MAX,
                time_ms: 0,
                price: Price::ZERO,
                qty: Qty::ZERO,
                taker_side: Side::Buy,
            }),
        };
        assert!(Row::from_record(&r).is_none());
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -5_000] {
            assert_eq!(millis(system_time(ms).unwrap()), ms);
        }
    }
}
