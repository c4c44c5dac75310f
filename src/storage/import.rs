//! Binance public historical data (data.binance.vision) CSV layouts, parsed exactly.
//!
//! Kline files: `open_time,open,high,low,close,volume,close_time,quote_volume,count,
//! taker_buy_volume,taker_buy_quote_volume,ignore`. AggTrade files: `agg_trade_id,price,
//! quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,is_best_match]`.
//! Spot files carry no header, futures files one; spot files from 2025 on stamp times in
//! microseconds, older ones in milliseconds, so the unit is detected per value. Pure logic: the
//! caller reads the files (plain or zipped).

use crate::market::types::{Candle, Price, Qty, Side, Timeframe, Trade};

/// Which file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    /// Kline (candlestick) files.
    Klines,
    /// Aggregate-trade files.
    AggTrades,
}

impl ImportKind {
    /// Parses the command-line name (`klines`, `aggtrades`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "klines" | "kline" => Some(ImportKind::Klines),
            "aggtrades" | "aggtrade" | "agg_trades" => Some(ImportKind::AggTrades),
            _ => None,
        }
    }
}

/// One CSV row that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RowError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

/// Converts an epoch timestamp in ms, µs or ns (detected by magnitude) to ms.
///
/// Any time from 1973 to 5138 is above 1e11 in ms and below 1e14, so values from 1e14 are
/// microseconds and from 1e17 nanoseconds.
pub fn to_millis(value: i64) -> i64 {
    if value >= 100_000_000_000_000_000 {
        value.div_euclid(1_000_000)
    } else if value >= 100_000_000_000_000 {
        value.div_euclid(1_000)
    } else {
        value
    }
}

fn field<'a>(fields: &[&'a str], i: usize, name: &str) -> Result<&'a str, String> {
    fields
        .get(i)
        .map(|f| f.trim())
        .ok_or_else(|| format!("missing column {} ({name})", i + 1))
}

fn int(fields: &[&str], i: usize, name: &str) -> Result<i64, String> {
    let f = field(fields, i, name)?;
    f.parse()
        .map_err(|_| format!("{name} {f:?} is not an integer"))
}

fn fixed<T>(
    fields: &[&str],
    i: usize,
    name: &str,
    parse: fn(&[u8]) -> Result<T, crate::market::types::FixedParseError>,
) -> Result<T, String> {
    let f = field(fields, i, name)?;
    parse(f.as_bytes()).map_err(|e| format!("{name}: {e}"))
}

fn boolean(fields: &[&str], i: usize, name: &str) -> Result<bool, String> {
    let f = field(fields, i, name)?;
    match f.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{name} {f:?} is not true/false")),
    }
}

/// A header line: its first field is a column name (`open_time`, `agg_trade_id`), not data.
fn is_header(line: &str) -> bool {
    line.split(',').next().is_some_and(|f| {
        let f = f.trim();
        !f.is_empty() && f.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_')
    })
}

/// Parses one kline row of a file of `timeframe` candles.
pub fn parse_kline_row(line: &str, timeframe: Timeframe) -> Result<Candle, String> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() < 9 {
        return Err(format!("expected 12 columns (at least 9), got {}", f.len()));
    }
    let open_time = to_millis(int(&f, 0, "open_time")?);
    let close_time = to_millis(int(&f, 6, "close_time")?);
    if close_time - open_time + 1 != timeframe.millis() || timeframe.floor(open_time) != open_time {
        return Err(format!(
            "candle {open_time}..{close_time} is not one {timeframe} interval (wrong --timeframe?)"
        ));
    }
    let candle = Candle {
        open_time_ms: open_time,
        open: fixed(&f, 1, "open", Price::parse_bytes)?,
        high: fixed(&f, 2, "high", Price::parse_bytes)?,
        low: fixed(&f, 3, "low", Price::parse_bytes)?,
        close: fixed(&f, 4, "close", Price::parse_bytes)?,
        volume: fixed(&f, 5, "volume", Qty::parse_bytes)?,
        trades: {
            let n = int(&f, 8, "count")?;
            u64::try_from(n).map_err(|_| format!("count {n} is negative"))?
        },
    };
    let lo = candle.open.min(candle.close).min(candle.high);
    let hi = candle.open.max(candle.close).max(candle.low);
    if candle.low > lo || candle.high < hi {
        return Err(format!(
            "inconsistent OHLC: open {} high {} low {} close {}",
            candle.open, candle.high, candle.low, candle.close
        ));
    }
    if candle.volume < Qty::ZERO {
        return Err(format!("negative volume {}", candle.volume));
    }
    Ok(candle)
}

/// Parses one aggTrade row for `symbol`.
pub fn parse_agg_trade_row(symbol: &str, line: &str) -> Result<Trade, String> {
    let f: Vec<&str> = line.split(',').collect();
    if f.len() < 7 {
        return Err(format!("expected 7 or 8 columns, got {}", f.len()));
    }
    let id = int(&f, 0, "agg_trade_id")?;
    let price = fixed(&f, 1, "price", Price::parse_bytes)?;
    let qty = fixed(&f, 2, "quantity", Qty::parse_bytes)?;
    if price <= Price::ZERO || qty <= Qty::ZERO {
        return Err(format!("non-positive price {price} or quantity {qty}"));
    }
    let buyer_maker = boolean(&f, 6, "is_buyer_maker")?;
    Ok(Trade {
        symbol: symbol.to_string(),
        id: u64::try_from(id).map_err(|_| format!("agg_trade_id {id} is negative"))?,
        time_ms: to_millis(int(&f, 5, "transact_time")?),
        price,
        qty,
        // The buyer was the maker, so the aggressor sold.
        taker_side: if buyer_maker { Side::Sell } else { Side::Buy },
    })
}

/// Rows parsed from one file, and the ones rejected.
#[derive(Debug, Default)]
pub struct Parsed<T> {
    /// Good rows in file order.
    pub rows: Vec<T>,
    /// Rejected rows with their line numbers.
    pub errors: Vec<RowError>,
}

/// Parses a whole file's text; a header line and blank lines are skipped.
pub fn parse_text<T>(text: &str, mut parse: impl FnMut(&str) -> Result<T, String>) -> Parsed<T> {
    let mut out = Parsed {
        rows: Vec::new(),
        errors: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (i == 0 && is_header(line)) {
            continue;
        }
        match parse(line) {
            Ok(r) => out.rows.push(r),
            Err(message) => out.errors.push(RowError {
                line: i + 1,
                message,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_timestamp_units() {
        assert_eq!(to_millis(1_637_971_200_000), 1_637_971_200_000);
        assert_eq!(to_millis(1_735_689_600_000_000), 1_735_689_600_000);
        assert_eq!(to_millis(1_735_689_600_123_999), 1_735_689_600_123);
        assert_eq!(to_millis(1_735_689_600_123_456_789), 1_735_689_600_123);
    }

    #[test]
    fn parses_klines_with_and_without_header_and_reports_bad_lines() {
        let text = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n\
            1735689600000000,93576.00,93610.93,93537.50,93610.93,8.21827,1735689659999999,769109.0,1189,4.3,402.1,0\n\
            1735689660000000,93610.93,93500,93600,93600,1,1735689719999999,1,1,1,1,0\n\
            \n\
            1735689720000000,abc,1,1,1,1,1735689779999999,1,1,1,1,0\n";
        let p = parse_text(text, |l| parse_kline_row(l, Timeframe::M1));
        assert_eq!(p.rows.len(), 1);
        assert_eq!(p.rows[0].open_time_ms, 1_735_689_600_000);
        assert_eq!(p.rows[0].high, Price::parse("93610.93").unwrap());
        assert_eq!(p.rows[0].volume, Qty::parse("8.21827").unwrap());
        assert_eq!(p.rows[0].trades, 1189);
        let lines: Vec<usize> = p.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 5]);
        assert!(
            p.errors[0].message.contains("inconsistent OHLC"),
            "{}",
            p.errors[0]
        );
        assert!(p.errors[1].message.contains("open"), "{}", p.errors[1]);
        // The same rows are not hourly candles.
        let p = parse_text(text, |l| parse_kline_row(l, Timeframe::H1));
        assert!(p.rows.is_empty());
        assert!(
            p.errors[0].message.contains("wrong --timeframe"),
            "{}",
            p.errors[0]
        );
        // A data line that merely fails to parse as a number is reported, not skipped.
        let p = parse_text("20180501 00:00,1,1,1,1,1\n", |l| {
            parse_kline_row(l, Timeframe::M1)
        });
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 1);
    }

    #[test]
    fn parses_agg_trades_in_both_units() {
        let text = "26129,0.01633102,4.70443515,27781,27781,1498793709153,true,true\n\
                    3,1.5,2,1,1,1735689600123456,False,True\n\
                    4,1.5,2,1,1\n";
        let p = parse_text(text, |l| parse_agg_trade_row("ETHUSDT", l));
        assert_eq!(p.rows.len(), 2);
        assert_eq!(p.rows[0].id, 26129);
        assert_eq!(p.rows[0].time_ms, 1_498_793_709_153);
        assert_eq!(p.rows[0].taker_side, Side::Sell);
        assert_eq!(p.rows[1].time_ms, 1_735_689_600_123);
        assert_eq!(p.rows[1].taker_side, Side::Buy);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 3);
    }

    #[test]
    fn kind_names() {
        assert_eq!(ImportKind::parse("klines"), Some(ImportKind::Klines));
        assert_eq!(ImportKind::parse("aggTrades"), Some(ImportKind::AggTrades));
        assert_eq!(ImportKind::parse("trades"), None);
    }
}
