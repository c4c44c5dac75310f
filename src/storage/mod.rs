//! Embedded storage: market data as hive-partitioned Parquet files, transactional state in
//! SQLite (WAL), retention, and Binance historical-data import.
//!
//! Layout under the storage root:
//! `market/<kind>/symbol=<SYMBOL>/date=<YYYY-MM-DD>/part-NNNN.parquet` for candles, trades and
//! book updates; `market/control/date=<YYYY-MM-DD>/part-NNNN.parquet` for connection events and
//! once-a-second ticks (not tied to a symbol); `state.sqlite` for model outputs, inference
//! history and metrics. Prices and quantities are int64 scaled by 1e8 (recorded in each file's
//! metadata under `mmtrader.price_scale`).

pub mod columns;
pub mod config;
pub mod history;
pub mod history_view;
pub mod import;
pub mod market;
pub mod partition;
pub mod retention;
pub mod state;

pub use config::{Compression, HistoryConfig, StorageConfig};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Parquet could not be written or read.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file involved.
        path: String,
        /// The parquet error.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow batch could not be built (a schema mismatch: a bug, reported rather than panicking).
    #[error("arrow batch for {what}: {source}")]
    Arrow {
        /// Which dataset.
        what: &'static str,
        /// The arrow error.
        source: arrow_schema::ArrowError,
    },
    /// A stored file does not have the expected columns or values.
    #[error("{path}: {message}")]
    Schema {
        /// The file involved.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The SQLite state database failed.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A value could not be encoded or decoded (JSON or zstd).
    #[error("encoding {what}: {message}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The codec's message.
        message: String,
    },
}

impl StorageError {
    /// An I/O error with the path and operation it came from.
    pub fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// UTC calendar date `YYYY-MM-DD` of a time in ms since the UNIX epoch.
pub fn utc_date(time_ms: i64) -> String {
    let (y, m, d) = civil_from_days(time_ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since the UNIX epoch of a `YYYY-MM-DD` date, or `None` when it is not one.
pub fn parse_date(text: &str) -> Option<i64> {
    let mut it = text.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if text.len() != 10 || !(1..=12).contains(&m) || d == 0 || d > 31 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Reject dates like 2026-02-31 that normalise into another month.
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

// Howard Hinnant's proleptic Gregorian conversions (exact for every i64 day in range).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        // 2026-11-23 00:00:00 UTC.
        assert_eq!(utc_date(1_795_392_000_000), "2026-11-23");
        assert_eq!(
            parse_date("2026-11-23"),
            Some(1_795_392_000_000 / 86_400_000)
        );
        assert_eq!(
            parse_date("2024-02-29")
                .map(|d| utc_date(d * 86_400_000))
                .as_deref(),
            Some("2024-02-29")
        );
        assert_eq!(parse_date("2026-02-29"), None);
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("date"), None);
        for day in [-700_000i64, -1, 0, 1, 19_000, 20_415, 2_000_000] {
            assert_eq!(parse_date(&utc_date(day * 86_400_000)), Some(day));
        }
    }
}
