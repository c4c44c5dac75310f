//! The collector's tables and their time partitioning: TimescaleDB hypertables with a
//! compression policy when the extension is available, native daily range partitions otherwise.
//!
//! Prices and quantities are stored as the exact fixed-point integers (`*_e8`: value × 10^8),
//! so nothing is rounded on the way into the database.

use serde::Serialize;

/// Stored tables, in the order they are created.
pub const TABLES: [&str; 4] = ["trades", "candles", "book_top", "cob_snapshots"];

/// How time partitioning is done in this database (detected at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// TimescaleDB hypertables (1-day chunks) with compression after `compress_after_days`.
    Timescale,
    /// Declarative `PARTITION BY RANGE (time)` with one partition per UTC day, created on demand.
    Native,
}

/// Column lists (without types) per table, in COPY order.
pub fn columns(table: &str) -> &'static str {
    match table {
        "trades" => "exchange, symbol, id, time, price_e8, qty_e8, taker_buy",
        "candles" => {
            "exchange, symbol, timeframe, open_time, open_e8, high_e8, low_e8, close_e8, volume_e8, trades"
        }
        "book_top" => "exchange, symbol, time, bid_price_e8, bid_qty_e8, ask_price_e8, ask_qty_e8",
        _ => "exchange, symbol, time, mid_e8, cob",
    }
}

/// The time column a table is partitioned by.
pub fn time_column(table: &str) -> &'static str {
    match table {
        "candles" => "open_time",
        _ => "time",
    }
}

/// `CREATE TABLE` for one table; `partitioned` adds the native range-partitioning clause.
pub fn create_table(table: &str, partitioned: bool) -> String {
    let body = match table {
        "trades" => {
            "exchange text NOT NULL, symbol text NOT NULL, id bigint NOT NULL, \
             time timestamptz NOT NULL, price_e8 bigint NOT NULL, qty_e8 bigint NOT NULL, \
             taker_buy boolean NOT NULL, PRIMARY KEY (exchange, symbol, id, time)"
        }
        "candles" => {
            "exchange text NOT NULL, symbol text NOT NULL, timeframe text NOT NULL, \
             open_time timestamptz NOT NULL, open_e8 bigint NOT NULL, high_e8 bigint NOT NULL, \
             low_e8 bigint NOT NULL, close_e8 bigint NOT NULL, volume_e8 bigint NOT NULL, \
             trades bigint NOT NULL, PRIMARY KEY (exchange, symbol, timeframe, open_time)"
        }
        "book_top" => {
            "exchange text NOT NULL, symbol text NOT NULL, time timestamptz NOT NULL, \
             bid_price_e8 bigint, bid_qty_e8 bigint, ask_price_e8 bigint, ask_qty_e8 bigint, \
             PRIMARY KEY (exchange, symbol, time)"
        }
        _ => {
            "exchange text NOT NULL, symbol text NOT NULL, time timestamptz NOT NULL, \
             mid_e8 bigint NOT NULL, cob jsonb NOT NULL, PRIMARY KEY (exchange, symbol, time)"
        }
    };
    let part = if partitioned {
        format!(" PARTITION BY RANGE ({})", time_column(table))
    } else {
        String::new()
    };
    format!("CREATE TABLE IF NOT EXISTS {table} ({body}){part}")
}

/// The statements that turn a plain table into a compressed hypertable.
pub fn timescale_statements(table: &str, compress_after_days: u32) -> Vec<String> {
    vec![
        format!(
            "SELECT create_hypertable('{table}', '{}', chunk_time_interval => INTERVAL '1 day', \
             if_not_exists => TRUE)",
            time_column(table)
        ),
        format!(
            "ALTER TABLE {table} SET (timescaledb.compress, \
             timescaledb.compress_segmentby = 'exchange, symbol')"
        ),
        format!(
            "SELECT add_compression_policy('{table}', INTERVAL '{compress_after_days} days', \
             if_not_exists => TRUE)"
        ),
    ]
}

/// The temporary staging table rows are COPYed into before the idempotent insert.
pub fn create_staging(table: &str) -> String {
    format!("CREATE TEMP TABLE IF NOT EXISTS stage_{table} (LIKE {table}) ON COMMIT DELETE ROWS")
}

/// Moves staged rows into the table; rows already present (a retried batch) are skipped.
pub fn insert_from_staging(table: &str) -> String {
    let cols = columns(table);
    format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM stage_{table} ON CONFLICT DO NOTHING")
}

/// Milliseconds per UTC day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since the epoch) containing `time_ms`.
pub fn day_of(time_ms: i64) -> i64 {
    time_ms.div_euclid(DAY_MS)
}

/// Civil (year, month, day) of a day number (proleptic Gregorian; Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn iso_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `CREATE TABLE … PARTITION OF` for the native partition holding one UTC day.
pub fn create_day_partition(table: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!(
        "CREATE TABLE IF NOT EXISTS {table}_p{y:04}{m:02}{d:02} PARTITION OF {table} \
         FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
        iso_date(day),
        iso_date(day + 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2024-02-29 (leap day) is day 19782; 2026-11-23 is day 20780.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(day_of(20_780 * DAY_MS + DAY_MS - 1), 20_780);
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn partition_covers_exactly_one_day() {
        let sql = create_day_partition("trades", 20_780);
        assert!(sql.contains("trades_p20261123"), "{sql}");
        assert!(sql.contains("FROM ('2026-11-23 00:00:00+00') TO ('2026-11-24 00:00:00+00')"));
    }

    #[test]
    fn every_table_has_a_primary_key_including_its_time_column() {
        for t in TABLES {
            let sql = create_table(t, true);
            let pk = sql.split("PRIMARY KEY").nth(1).unwrap();
            assert!(pk.contains(time_column(t)), "{t}: {sql}");
            assert!(sql.ends_with(&format!("PARTITION BY RANGE ({})", time_column(t))));
            assert!(insert_from_staging(t).contains("ON CONFLICT DO NOTHING"));
        }
    }
}
