//! `mmtrader analyze`: candles file in, one CSV row per candle with every indicator and the
//! pivots known at that candle out. The only part of `analysis` that touches files.
//!
//! Input formats are detected from the content (gzip is unpacked first):
//! - JSON array of klines `[[open_time, open, high, low, close, volume, ...], ...]`, numbers as
//!   JSON numbers or strings (freqtrade, Binance REST);
//! - CSV with a header naming time/open/high/low/close/volume (any order, case-insensitive;
//!   an empty first header cell is taken as the time index, as pandas writes it);
//! - CSV without header: the Binance kline layout (12 columns) or any `time,o,h,l,c,v,...`,
//!   including LEAN's trade bars. LEAN minute and second files carry milliseconds since
//!   midnight UTC and keep the date only in the file name (`20221213_trade.csv`): a header-less
//!   file whose integer times all fall within one day is read that way, its date taken from an
//!   8-digit `yyyyMMdd` in the file name or from [`AnalyzeConfig::date_ms`] (`--date`).
//!   LEAN quote bars (bid OHLC, bid size, ask OHLC, ask size: 11 columns) are refused, since
//!   reading their bid columns as trades would be silently wrong.
//!
//! Times may be epoch seconds, ms, µs or ns (told apart by magnitude), ISO-8601 dates or
//! date-times (`Z` or `±hh:mm` offsets), or `yyyyMMdd HH:mm`. Prices with at most 8 decimals are
//! read exactly; float-printed values with more digits or an exponent (freqtrade JSON) are
//! rounded to the nearest 1e-8, which is the most a [`Price`] carries.

use std::fmt::Write as _;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::analysis::indicators::{INDICATOR_NAMES, IndicatorConfig, IndicatorSet};
use crate::analysis::pivots::{LEVELS, PivotConfig, Trend, WilliamsEngine};
use crate::market::types::{Candle, FixedParseError, Price, Qty, SCALE, parse_fixed};

/// Settings for [`analyze_file`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalyzeConfig {
    /// Indicator periods.
    pub indicators: IndicatorConfig,
    /// Pivot bars per side (0 means the default, 2).
    pub pivot_bars_per_side: usize,
    /// Candle length in ms; `None` detects it as the most common spacing of open times.
    pub interval_ms: Option<i64>,
    /// Midnight UTC (ms) of the day a LEAN intraday file covers; overrides the file name's date.
    pub date_ms: Option<i64>,
}

/// The layout a candle file was recognized as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// JSON array of kline arrays.
    JsonKlines,
    /// CSV with a named header.
    CsvHeader,
    /// Binance kline CSV (12 columns, no header).
    BinanceKlineCsv,
    /// Header-less CSV `time,open,high,low,close,volume[,...]`.
    CsvPositional,
    /// LEAN minute/second trade bars: header-less, times in ms since midnight of the file's day.
    LeanIntraday,
}

/// What was wrong with one input row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    /// Too few columns or array entries.
    #[error("expected at least {expected} fields, found {found}")]
    TooFewFields {
        /// Fields needed.
        expected: usize,
        /// Fields present.
        found: usize,
    },
    /// A time that matches none of the accepted forms.
    #[error("unrecognized time {0:?}")]
    BadTime(String),
    /// A price or volume that is not a number.
    #[error("{field}: {source}")]
    BadNumber {
        /// Which field.
        field: &'static str,
        /// Why it did not parse.
        source: FixedParseError,
    },
    /// A negative price or volume.
    #[error("{field} is negative: {text}")]
    Negative {
        /// Which field.
        field: &'static str,
        /// The value as written.
        text: String,
    },
    /// Low above high.
    #[error("low {low} is above high {high}")]
    LowAboveHigh {
        /// The high.
        high: Price,
        /// The low.
        low: Price,
    },
    /// Open time not after the previous good row's.
    #[error("time {got} ms is not after the previous row's {prev} ms")]
    NotIncreasing {
        /// Previous good row's time.
        prev: i64,
        /// This row's time.
        got: i64,
    },
    /// A JSON element that is not an array.
    #[error("JSON element is not an array")]
    NotArray,
}

/// A skipped row and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    /// 1-based line number (CSV) or 1-based element number (JSON).
    pub line: usize,
    /// What was wrong.
    pub error: RowError,
}

/// Why the whole analysis failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// Reading the input or writing the output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input is not UTF-8 text (after gunzip).
    #[error("input is not UTF-8 text")]
    NotText,
    /// The input is JSON but not an array of arrays.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// The CSV header lacks a required column.
    #[error("CSV header has no {0:?} column")]
    MissingColumn(&'static str),
    /// The input is empty.
    #[error("input has no rows")]
    Empty,
    /// LEAN intraday times (ms since midnight) with no day to anchor them to.
    #[error(
        "times are milliseconds since midnight (LEAN minute/second layout) but no date is known: \
         put the day as yyyyMMdd in the file name (as LEAN does, e.g. 20221213_trade.csv) or, \
         with analyze, pass --date YYYY-MM-DD"
    )]
    LeanDateMissing,
    /// LEAN quote bars, which are not trade candles.
    #[error(
        "line {line}: 11 columns of bid OHLC, bid size, ask OHLC, ask size: these are LEAN quote \
         bars, not trade candles; use the matching *_trade file"
    )]
    QuoteBars {
        /// The line that showed the quote layout.
        line: usize,
    },
    /// Not a single row parsed; the first bad rows say why.
    #[error("no candle parsed ({} bad rows; first: line {}: {})",
        .0.len(), .0.first().map_or(0, |b| b.line),
        .0.first().map_or(String::new(), |b| b.error.to_string()))]
    NoCandles(Vec<BadRow>),
}

/// Candles read from a file plus the rows that were skipped.
#[derive(Debug, Clone)]
pub struct LoadedCandles {
    /// Detected layout.
    pub format: InputFormat,
    /// Good candles, strictly ascending open time.
    pub candles: Vec<Candle>,
    /// Skipped rows with line numbers.
    pub bad_rows: Vec<BadRow>,
}

/// What [`analyze_file`] did.
#[derive(Debug, Clone)]
pub struct AnalyzeSummary {
    /// Detected layout.
    pub format: InputFormat,
    /// Candles analysed (= rows written).
    pub candles: usize,
    /// Skipped input rows.
    pub bad_rows: Vec<BadRow>,
    /// Candle length used for pivot confirmation times.
    pub interval_ms: i64,
    /// Confirmed pivots per level at the end.
    pub pivots_per_level: [usize; LEVELS],
}

/// Reads candles from `input`, writes the analysis CSV to `output`.
pub fn analyze_file(
    input: &Path,
    output: &Path,
    cfg: &AnalyzeConfig,
) -> Result<AnalyzeSummary, AnalyzeError> {
    let loaded = read_candles_on(input, cfg.date_ms)?;
    let interval_ms = cfg
        .interval_ms
        .filter(|&i| i > 0)
        .unwrap_or_else(|| detect_interval(&loaded.candles));
    let io_err = |source| AnalyzeError::Io {
        path: output.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(output).map_err(io_err)?;
    let mut out = BufWriter::new(file);
    let pivots_per_level = write_analysis(&loaded.candles, cfg, interval_ms, &mut out)
        .and_then(|n| out.flush().map(|_| n))
        .map_err(io_err)?;
    Ok(AnalyzeSummary {
        format: loaded.format,
        candles: loaded.candles.len(),
        bad_rows: loaded.bad_rows,
        interval_ms,
        pivots_per_level,
    })
}

/// The analysis CSV header, in column order.
pub fn output_header() -> Vec<String> {
    let mut cols: Vec<String> = ["time_ms", "open", "high", "low", "close", "volume"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(INDICATOR_NAMES.iter().map(|s| s.to_string()));
    for l in 1..=LEVELS {
        for c in ["high", "high_time", "low", "low_time", "trend"] {
            cols.push(format!("l{l}_{c}"));
        }
    }
    cols.push("new_pivots".into());
    cols
}

/// Writes the header and one row per candle; returns confirmed pivots per level.
fn write_analysis(
    candles: &[Candle],
    cfg: &AnalyzeConfig,
    interval_ms: i64,
    out: &mut impl Write,
) -> std::io::Result<[usize; LEVELS]> {
    let mut set = IndicatorSet::new(&cfg.indicators);
    let bars = if cfg.pivot_bars_per_side == 0 {
        2
    } else {
        cfg.pivot_bars_per_side
    };
    let mut engine = WilliamsEngine::new(PivotConfig {
        bars_per_side: bars,
        interval_ms,
        history: 0,
    });
    writeln!(out, "{}", output_header().join(","))?;
    let mut row = String::with_capacity(512);
    for c in candles {
        row.clear();
        let _ = write!(
            row,
            "{},{},{},{},{},{}",
            c.open_time_ms, c.open, c.high, c.low, c.close, c.volume
        );
        for (_, v) in set.update(c).iter() {
            row.push(',');
            if let Some(v) = v {
                let _ = write!(row, "{v}");
            }
        }
        let mut fresh = String::new();
        // The loader guarantees ascending times and low <= high, so update cannot fail; a
        // rejected candle would simply contribute no pivots.
        if let Ok(new) = engine.update(c) {
            for p in new {
                if !fresh.is_empty() {
                    fresh.push(';');
                }
                let _ = write!(
                    fresh,
                    "{}:{}:{}:{}",
                    p.level,
                    p.kind.letter(),
                    p.price,
                    p.time_ms
                );
            }
        }
        let close_ms = c.open_time_ms.saturating_add(interval_ms);
        for level in 1..=LEVELS as u8 {
            let view = engine.level_at(level, close_ms);
            for p in [view.last_high(), view.last_low()] {
                match p {
                    Some(p) => {
                        let _ = write!(row, ",{},{}", p.price, p.time_ms);
                    }
                    None => row.push_str(",,"),
                }
            }
            row.push_str(match view.trend() {
                Trend::Up => ",up",
                Trend::Down => ",down",
                Trend::Sideways => ",sideways",
                Trend::Unknown => ",",
            });
        }
        row.push(',');
        row.push_str(&fresh);
        writeln!(out, "{row}")?;
    }
    let mut counts = [0; LEVELS];
    for (i, n) in counts.iter_mut().enumerate() {
        *n = engine.pivots(i as u8 + 1).len();
    }
    Ok(counts)
}

/// Most common spacing of consecutive open times (the first 10 000), else one minute.
pub fn detect_interval(candles: &[Candle]) -> i64 {
    let mut diffs: Vec<i64> = candles
        .windows(2)
        .take(10_000)
        .map(|w| w[1].open_time_ms - w[0].open_time_ms)
        .collect();
    diffs.sort_unstable();
    let mut best = (60_000, 0);
    let mut i = 0;
    while i < diffs.len() {
        let j = diffs[i..].partition_point(|&d| d == diffs[i]) + i;
        // Ties go to the longer spacing: a late confirmation time never leaks the future.
        if j - i >= best.1 {
            best = (diffs[i], j - i);
        }
        i = j;
    }
    best.0
}

/// Reads and parses a candle file in any supported layout (see the module docs).
pub fn read_candles(path: &Path) -> Result<LoadedCandles, AnalyzeError> {
    read_candles_on(path, None)
}

/// [`read_candles`] with the day of a LEAN intraday file given (midnight UTC, ms); without it
/// the day comes from the file name.
pub fn read_candles_on(path: &Path, date_ms: Option<i64>) -> Result<LoadedCandles, AnalyzeError> {
    let io_err = |source| AnalyzeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io_err)?;
        out
    } else {
        raw
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| AnalyzeError::NotText)?;
    let date_ms = date_ms.or_else(|| {
        path.file_name()
            .and_then(|n| date_in_name(&n.to_string_lossy()))
    });
    parse_candles_on(text, date_ms)
}

/// Midnight UTC (ms) of the first 8-digit `yyyyMMdd` run in a file name that is a valid date.
pub fn date_in_name(name: &str) -> Option<i64> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 8 {
            // A longer digit run is an epoch number or an id, not a date.
            let day = parse_date(&name[i..i + 8]);
            if day.is_some() {
                return day;
            }
        }
        i += run.max(1);
    }
    None
}

/// Midnight UTC (ms) of a bare date, `YYYY-MM-DD` or `yyyyMMdd` (what `--date` accepts).
pub fn parse_date(text: &str) -> Option<i64> {
    let t = text.trim();
    let plain = t.len() == 8 || (t.len() == 10 && t.as_bytes()[4] == b'-');
    plain.then(|| parse_datetime(t)).flatten()
}

/// Parses candle text in any supported layout (see the module docs).
pub fn parse_candles(text: &str) -> Result<LoadedCandles, AnalyzeError> {
    parse_candles_on(text, None)
}

/// [`parse_candles`] with the day of a LEAN intraday file (midnight UTC, ms).
pub fn parse_candles_on(text: &str, date_ms: Option<i64>) -> Result<LoadedCandles, AnalyzeError> {
    let text = text.trim_start_matches('\u{feff}');
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(AnalyzeError::Empty);
    }
    let (format, rows) = if trimmed.starts_with('[') {
        (InputFormat::JsonKlines, parse_json(trimmed)?)
    } else {
        parse_csv(text, date_ms)?
    };
    let mut candles: Vec<Candle> = Vec::with_capacity(rows.len());
    let mut bad_rows = Vec::new();
    for (line, row) in rows {
        let checked = row.and_then(|c| match candles.last() {
            Some(prev) if c.open_time_ms <= prev.open_time_ms => Err(RowError::NotIncreasing {
                prev: prev.open_time_ms,
                got: c.open_time_ms,
            }),
            _ => Ok(c),
        });
        match checked {
            Ok(c) => candles.push(c),
            Err(error) => bad_rows.push(BadRow { line, error }),
        }
    }
    if candles.is_empty() {
        return Err(AnalyzeError::NoCandles(bad_rows));
    }
    Ok(LoadedCandles {
        format,
        candles,
        bad_rows,
    })
}

type Rows = Vec<(usize, Result<Candle, RowError>)>;

fn parse_json(text: &str) -> Result<Rows, AnalyzeError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| AnalyzeError::Json(e.to_string()))?;
    let serde_json::Value::Array(items) = value else {
        return Err(AnalyzeError::Json("top level is not an array".into()));
    };
    let field_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok(items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let row = match item {
                serde_json::Value::Array(fields) => {
                    let texts: Vec<String> = fields.iter().take(6).map(field_text).collect();
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    candle_from_fields(&refs, [0, 1, 2, 3, 4, 5], None)
                }
                _ => Err(RowError::NotArray),
            };
            (i + 1, row)
        })
        .collect())
}

fn parse_csv(text: &str, date_ms: Option<i64>) -> Result<(InputFormat, Rows), AnalyzeError> {
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let Some(&(_, first)) = lines.first() else {
        return Err(AnalyzeError::Empty);
    };
    let first_fields = split_csv(first);
    // A header has no numeric cell; a malformed first data row still has some.
    let is_header = first_fields
        .iter()
        .all(|f| parse_decimal(f, "open").is_err());
    let positional = [0, 1, 2, 3, 4, 5];
    let (format, cols, data, day) = if is_header {
        let cols = header_columns(&first_fields)?;
        (InputFormat::CsvHeader, cols, &lines[1..], None)
    } else if first_fields.len() == 12 {
        (InputFormat::BinanceKlineCsv, positional, &lines[..], None)
    } else {
        if first_fields.len() == QUOTE_BAR_FIELDS
            && let Some(line) = quote_bar_line(&lines)
        {
            return Err(AnalyzeError::QuoteBars { line });
        }
        if is_lean_intraday(&lines) {
            let day = date_ms.ok_or(AnalyzeError::LeanDateMissing)?;
            (InputFormat::LeanIntraday, positional, &lines[..], Some(day))
        } else {
            (InputFormat::CsvPositional, positional, &lines[..], None)
        }
    };
    let rows = data
        .iter()
        .map(|&(no, line)| (no, candle_from_fields(&split_csv(line), cols, day)))
        .collect();
    Ok((format, rows))
}

const DAY_MS: i64 = 86_400_000;

/// Some integer time, and every integer time inside one day in ms: LEAN's minute/second layout.
/// Epoch times are all larger from 1972-09-28 on (seconds) or 1970-01-02 on (ms and finer).
fn is_lean_intraday(lines: &[(usize, &str)]) -> bool {
    let mut any = false;
    for (_, line) in lines {
        let time = line
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if let Ok(t) = time.parse::<i64>() {
            if !(0..DAY_MS).contains(&t) {
                return false;
            }
            any = true;
        }
    }
    any
}

/// Fields of a LEAN quote bar: time, bid OHLC, bid size, ask OHLC, ask size.
const QUOTE_BAR_FIELDS: usize = 11;

/// The first line with 11 columns holding two OHLC groups, fields 1-4 and 6-9: LEAN's quote
/// bar. Any line will do, since a bar without quotes on one side leaves those fields empty.
fn quote_bar_line(lines: &[(usize, &str)]) -> Option<usize> {
    let ohlc = |f: &[&str]| -> bool {
        let p: Vec<i64> = f
            .iter()
            .filter_map(|t| parse_decimal(t, "price").ok())
            .collect();
        p.len() == 4 && p[2] <= p[0].min(p[3]) && p[0].max(p[3]) <= p[1]
    };
    lines.iter().find_map(|&(no, line)| {
        let f = split_csv(line);
        (f.len() == QUOTE_BAR_FIELDS && ohlc(&f[1..5]) && ohlc(&f[6..10])).then_some(no)
    })
}

fn split_csv(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"').trim())
        .collect()
}

/// Column positions of time, open, high, low, close, volume (`usize::MAX`: no volume column).
fn header_columns(header: &[&str]) -> Result<[usize; 6], AnalyzeError> {
    let lower: Vec<String> = header.iter().map(|h| h.to_ascii_lowercase()).collect();
    let find = |names: &[&str]| lower.iter().position(|h| names.contains(&h.as_str()));
    let time = find(&[
        "time",
        "timestamp",
        "timestamp_ms",
        "date",
        "datetime",
        "open_time",
        "opentime",
        "ts",
        "",
    ])
    .unwrap_or(0);
    let need =
        |names: &[&str], what: &'static str| find(names).ok_or(AnalyzeError::MissingColumn(what));
    Ok([
        time,
        need(&["open", "o"], "open")?,
        need(&["high", "h"], "high")?,
        need(&["low", "l"], "low")?,
        need(&["close", "c"], "close")?,
        find(&["volume", "vol", "v", "base_volume"]).unwrap_or(usize::MAX),
    ])
}

/// One candle from split fields; `day_ms` set: times are ms since that midnight (LEAN intraday).
fn candle_from_fields(
    fields: &[&str],
    cols: [usize; 6],
    day_ms: Option<i64>,
) -> Result<Candle, RowError> {
    let needed = cols
        .iter()
        .filter(|&&c| c != usize::MAX)
        .max()
        .map_or(0, |m| m + 1);
    if fields.len() < needed {
        return Err(RowError::TooFewFields {
            expected: needed,
            found: fields.len(),
        });
    }
    let open_time_ms = match day_ms {
        Some(day) => day + parse_ms_of_day(fields[cols[0]])?,
        None => parse_time(fields[cols[0]])?,
    };
    let price = |i: usize, name| parse_decimal(fields[cols[i]], name).map(Price);
    let (open, high, low, close) = (
        price(1, "open")?,
        price(2, "high")?,
        price(3, "low")?,
        price(4, "close")?,
    );
    let volume = match cols[5] {
        usize::MAX => Qty::ZERO,
        c => Qty(parse_decimal(fields[c], "volume")?),
    };
    if low > high {
        return Err(RowError::LowAboveHigh { high, low });
    }
    Ok(Candle {
        open_time_ms,
        open,
        high,
        low,
        close,
        volume,
        trades: 0,
    })
}

/// Exact decimal when possible, else a float rounded to 1e-8; negatives are rejected.
fn parse_decimal(text: &str, field: &'static str) -> Result<i64, RowError> {
    let value = match parse_fixed(text.as_bytes()) {
        Ok(v) => v,
        Err(e @ (FixedParseError::TooPrecise(_) | FixedParseError::Invalid(_))) => {
            match text.parse::<f64>() {
                Ok(f) if f.is_finite() && f.abs() < (i64::MAX / SCALE) as f64 => {
                    (f * SCALE as f64).round() as i64
                }
                _ => return Err(RowError::BadNumber { field, source: e }),
            }
        }
        Err(source) => return Err(RowError::BadNumber { field, source }),
    };
    if value < 0 {
        return Err(RowError::Negative {
            field,
            text: text.to_string(),
        });
    }
    Ok(value)
}

/// Epoch number (s/ms/µs/ns by magnitude), ISO-8601, or `yyyyMMdd HH:mm`, to ms since epoch.
pub fn parse_time(text: &str) -> Result<i64, RowError> {
    let bad = || RowError::BadTime(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(v) = t.parse::<i64>() {
        return Ok(epoch_to_ms(v as f64, v));
    }
    if t.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'-')
        && t.contains(['.', 'e', 'E'])
    {
        let f: f64 = t.parse().map_err(|_| bad())?;
        if !f.is_finite() {
            return Err(bad());
        }
        return Ok(epoch_to_ms(f, f as i64));
    }
    parse_datetime(t).ok_or_else(bad)
}

/// A LEAN intraday time: integer ms since midnight, below one day.
fn parse_ms_of_day(text: &str) -> Result<i64, RowError> {
    match text.trim().parse::<i64>() {
        Ok(ms) if (0..DAY_MS).contains(&ms) => Ok(ms),
        _ => Err(RowError::BadTime(text.to_string())),
    }
}

fn epoch_to_ms(f: f64, i: i64) -> i64 {
    let a = f.abs();
    if a >= 1e17 {
        i / 1_000_000
    } else if a >= 1e14 {
        i / 1_000
    } else if a >= 1e11 {
        i
    } else {
        (f * 1000.0).round() as i64
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_datetime(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let (y, mo, d, rest) = if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
        (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?, &b[10..])
    } else if b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit) {
        (num(&b[0..4])?, num(&b[4..6])?, num(&b[6..8])?, &b[8..])
    } else {
        return None;
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo, d) * 86_400_000;
    let mut rest = rest;
    if let Some((&sep, tail)) = rest.split_first()
        && (sep == b'T' || sep == b' ')
    {
        if tail.len() < 5 || tail[2] != b':' {
            return None;
        }
        let (h, mi) = (num(&tail[0..2])?, num(&tail[3..5])?);
        if h > 23 || mi > 59 {
            return None;
        }
        ms += (h * 3600 + mi * 60) * 1000;
        rest = &tail[5..];
        if rest.first() == Some(&b':') {
            let s = num(rest.get(1..3)?)?;
            if s > 60 {
                return None;
            }
            ms += s * 1000;
            rest = &rest[3..];
            if rest.first() == Some(&b'.') {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                let frac = &rest[1..1 + digits];
                let first3: Vec<u8> = frac.iter().copied().chain(*b"000").take(3).collect();
                ms += num(&first3)?;
                rest = &rest[1 + digits..];
            }
        }
    }
    match rest {
        [] | [b'Z'] | [b'z'] => Some(ms),
        [sign @ (b'+' | b'-'), tz @ ..] => {
            let (h, m) = match tz {
                [a, b, b':', c, d] | [a, b, c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                [a, b] => (num(&[*a, *b])?, 0),
                _ => return None,
            };
            let offset = (h * 60 + m) * 60_000;
            Some(if *sign == b'+' {
                ms - offset
            } else {
                ms + offset
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_form() {
        assert_eq!(parse_time("1609459200"), Ok(1_609_459_200_000));
        assert_eq!(parse_time("1609459200000"), Ok(1_609_459_200_000));
        assert_eq!(parse_time("1609459200000000"), Ok(1_609_459_200_000));
        assert_eq!(parse_time("1609459200000000000"), Ok(1_609_459_200_000));
        assert_eq!(parse_time("1609459200.5"), Ok(1_609_459_200_500));
        assert_eq!(parse_time("2021-01-01"), Ok(1_609_459_200_000));
        assert_eq!(parse_time("2021-01-01T00:00:01Z"), Ok(1_609_459_201_000));
        assert_eq!(
            parse_time("2021-12-31 23:01:00.000000"),
            Ok(1_640_991_660_000)
        );
        assert_eq!(
            parse_time("2021-01-01T02:00:00+02:00"),
            Ok(1_609_459_200_000)
        );
        assert_eq!(parse_time("20210101 01:00"), Ok(1_609_462_800_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2021-13-01").is_err());
        assert!(parse_time("").is_err());
    }

    #[test]
    fn malformed_rows_are_reported_by_line() {
        let text = "time,open,high,low,close,volume\r\n\
                    1000,1,2,0.5,1.5,10\r\n\
                    2000,1,x,0.5,1.5,10\r\n\
                    3000,1,2,3,1.5,10\r\n\
                    500,1,2,0.5,1.5,10\r\n\
                    4000,1,2\r\n\
                    5000,1.5,2.5,1,2,-1\r\n\
                    6000,1.5,2.5,1,2,1e-3\r\n";
        let got = parse_candles(text).unwrap();
        assert_eq!(got.format, InputFormat::CsvHeader);
        assert_eq!(got.candles.len(), 2);
        assert_eq!(got.candles[1].volume, Qty::parse("0.001").unwrap());
        let lines: Vec<usize> = got.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7]);
        assert!(matches!(
            got.bad_rows[0].error,
            RowError::BadNumber { field: "high", .. }
        ));
        assert!(matches!(
            got.bad_rows[1].error,
            RowError::LowAboveHigh { .. }
        ));
        assert!(matches!(
            got.bad_rows[2].error,
            RowError::NotIncreasing { .. }
        ));
        assert!(matches!(
            got.bad_rows[3].error,
            RowError::TooFewFields { .. }
        ));
        assert!(matches!(got.bad_rows[4].error, RowError::Negative { .. }));
    }

    #[test]
    fn nothing_parsable_is_an_error_listing_rows() {
        match parse_candles("a,b\n1,2\n") {
            Err(AnalyzeError::MissingColumn("open")) => {}
            other => panic!("unexpected {other:?}"),
        }
        match parse_candles("[[1,\"x\",1,1,1,1],[2]]") {
            Err(AnalyzeError::NoCandles(rows)) => assert_eq!(rows.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(parse_candles("[1,2"), Err(AnalyzeError::Json(_))));
        assert!(matches!(parse_candles("  \n"), Err(AnalyzeError::Empty)));
        match parse_candles("[5, [1000,\"1\",\"2\",\"0.5\",\"1.5\",\"3\"]]") {
            Ok(l) => {
                assert_eq!(l.bad_rows[0].error, RowError::NotArray);
                assert_eq!(l.candles[0].high, Price::from_units(2));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_first_row_is_data_not_header() {
        let l = parse_candles("1600000000,x,2,1,2,3\n1600000060,1,2,1,2,3\n").unwrap();
        assert_eq!(l.format, InputFormat::CsvPositional);
        assert_eq!(l.candles.len(), 1);
        assert_eq!(l.bad_rows[0].line, 1);
    }

    #[test]
    fn positional_and_binance_layouts() {
        let binance = "1637971200000,0.00002853,0.00002854,0.00002851,0.00002854,36304.2,\
                       1637971259999,1.03,79,19523.0,0.55,0\n";
        let l = parse_candles(binance).unwrap();
        assert_eq!(l.format, InputFormat::BinanceKlineCsv);
        assert_eq!(l.candles[0].low, Price::parse("0.00002851").unwrap());
        let lean = "20180501 00:00,9246.01,9248.99,8934.44,8955.01,5263.799551\n";
        let l = parse_candles(lean).unwrap();
        assert_eq!(l.format, InputFormat::CsvPositional);
        assert_eq!(l.candles[0].open_time_ms, 1_525_132_800_000);
    }

    fn load(relative: &str) -> LoadedCandles {
        read_candles(&crate::testdata::require(relative)).expect("recorded candles load")
    }

    #[test]
    fn recorded_files_in_every_layout() {
        let nfi = load("candles/binance_spot_nfi/BTC_USDT-1h.json");
        assert_eq!(nfi.format, InputFormat::JsonKlines);
        assert_eq!(nfi.candles.len(), 5_482);
        assert_eq!(nfi.candles[0].open_time_ms, 1_606_780_800_000);
        assert_eq!(nfi.candles[0].high, Price::parse("19720").unwrap());
        assert_eq!(detect_interval(&nfi.candles), 3_600_000);

        let ada = load("candles/nautilus/ADABTC-1m-2021-11-27.csv");
        assert_eq!(ada.format, InputFormat::BinanceKlineCsv);
        assert_eq!(ada.candles.len(), 10);
        assert!(ada.bad_rows.is_empty());

        let perp = load("candles/nautilus/btc-perp-20211231-20220201_1m.csv.gz");
        assert_eq!(perp.format, InputFormat::CsvHeader);
        assert_eq!(perp.candles.len(), 45_031);
        assert_eq!(perp.candles[0].open_time_ms, 1_640_991_660_000);

        let xrp = load("candles/freqtrade_xrp_eth/XRP_ETH-1m.csv");
        assert_eq!(xrp.candles.len(), 2_469);
        assert_eq!(xrp.candles[0].open, Price::parse("0.00141342").unwrap());

        let monthly = load("candles/backtesting_py/BTCUSD_monthly.csv");
        assert_eq!(monthly.format, InputFormat::CsvHeader);
        assert_eq!(monthly.candles.len(), 156);

        // CRLF, header-less, `yyyyMMdd HH:mm` times, with hours missing.
        let bitfinex = load("candles/lean/bitfinex_hour_btcusd_trade.csv");
        assert_eq!(bitfinex.format, InputFormat::CsvPositional);
        assert_eq!(bitfinex.candles.len(), 733);
        assert!(bitfinex.bad_rows.is_empty());
        assert_eq!(detect_interval(&bitfinex.candles), 3_600_000);
    }

    #[test]
    fn lean_minute_times_are_ms_since_the_file_names_midnight() {
        let lean = load("candles/lean/binance_minute_btcbusd_20221213_trade.csv");
        assert_eq!(lean.format, InputFormat::LeanIntraday);
        assert_eq!(lean.candles.len(), 1_440);
        assert!(lean.bad_rows.is_empty());
        assert_eq!(lean.candles[0].open_time_ms, 1_670_889_600_000);
        assert_eq!(
            lean.candles[1_439].open_time_ms,
            1_670_889_600_000 + 1_439 * 60_000
        );
        assert_eq!(detect_interval(&lean.candles), 60_000);
        assert_eq!(lean.candles[0].open, Price::parse("17212.12").unwrap());
    }

    #[test]
    fn lean_intraday_without_a_date_is_refused_unless_one_is_given() {
        let path = crate::testdata::require("candles/lean/bybit_minute_btcusdt_20221213_trade.csv");
        let text = std::fs::read_to_string(&path).unwrap();
        let err = parse_candles(&text).unwrap_err();
        assert!(matches!(err, AnalyzeError::LeanDateMissing));
        let msg = err.to_string();
        assert!(msg.contains("--date") && msg.contains("file name"), "{msg}");

        let dir = tempfile::tempdir().unwrap();
        let undated = dir.path().join("btcusdt_minute_trade.csv");
        std::fs::write(&undated, &text).unwrap();
        assert!(matches!(
            read_candles(&undated),
            Err(AnalyzeError::LeanDateMissing)
        ));
        let day = parse_date("2022-12-14").unwrap();
        let got = read_candles_on(&undated, Some(day)).unwrap();
        assert_eq!(got.candles[0].open_time_ms, 1_670_976_000_000);
        // An explicit date wins over the one in the name.
        let got = read_candles_on(&path, Some(day)).unwrap();
        assert_eq!(got.candles[0].open_time_ms, 1_670_976_000_000);
    }

    #[test]
    fn lean_quote_bars_are_refused() {
        let path = crate::testdata::require("candles/lean/bybit_minute_btcusdt_20221213_quote.csv");
        let err = read_candles(&path).unwrap_err();
        assert!(
            matches!(err, AnalyzeError::QuoteBars { line: 1 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("quote bars"), "{err}");
        // The same layout with hour-file times is just as much a quote file, also when its
        // first bars have no bid side.
        let hour = "20221213 00:00,,,,,0,1.1,2.1,0.6,1.6,4\n\
                    20221213 01:00,1,2,0.5,1.5,3,1.1,2.1,0.6,1.6,4\n";
        assert!(matches!(
            parse_candles(hour),
            Err(AnalyzeError::QuoteBars { line: 2 })
        ));
    }

    #[test]
    fn dates_in_file_names_and_flags() {
        assert_eq!(
            date_in_name("20221213_btcusdt_minute_trade.csv"),
            Some(1_670_889_600_000)
        );
        assert_eq!(date_in_name("btc_1670889600000.csv"), None);
        assert_eq!(date_in_name("btc_20221399_x.csv"), None);
        assert_eq!(parse_date("20221213"), Some(1_670_889_600_000));
        assert_eq!(parse_date("2022-12-13"), Some(1_670_889_600_000));
        assert_eq!(parse_date("2022-12-13 01:00"), None);
        assert_eq!(parse_date("13/12/2022"), None);
    }

    #[test]
    fn analyze_file_writes_one_row_per_candle_with_causal_pivots() {
        let input = crate::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json");
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let summary = analyze_file(&input, &output, &AnalyzeConfig::default()).unwrap();
        assert_eq!(summary.candles, 5_482);
        assert_eq!(summary.interval_ms, 3_600_000);
        assert!(summary.pivots_per_level[3] > 0);
        let text = std::fs::read_to_string(&output).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(header, output_header());
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 5_482);
        assert!(rows.iter().all(|r| r.len() == header.len()));
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (rsi, l1h, l1ht, fresh) = (
            col("rsi"),
            col("l1_high"),
            col("l1_high_time"),
            col("new_pivots"),
        );
        assert!(rows[13][rsi].is_empty() && !rows[14][rsi].is_empty());
        let mut announced = 0;
        for (i, r) in rows.iter().enumerate() {
            let close_ms: i64 = r[0].parse::<i64>().unwrap() + 3_600_000;
            if !r[l1ht].is_empty() {
                // The last known level-1 high is at least two candles old.
                let t: i64 = r[l1ht].parse().unwrap();
                assert!(
                    t + 2 * 3_600_000 < close_ms,
                    "row {i} sees a pivot too early"
                );
                assert!(Price::parse(r[l1h]).is_ok());
            }
            for p in r[fresh].split(';').filter(|p| !p.is_empty()) {
                let parts: Vec<&str> = p.split(':').collect();
                assert_eq!(parts.len(), 4, "{p}");
                announced += 1;
            }
        }
        assert_eq!(announced, summary.pivots_per_level.iter().sum::<usize>());
    }

    #[test]
    fn analyze_file_reports_bad_rows_and_missing_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(
            &input,
            "ts,open,high,low,close\n60,1,2,1,2\nbad,1,2,1,2\n120,1,2,1,2\n",
        )
        .unwrap();
        let out = dir.path().join("out.csv");
        let s = analyze_file(&input, &out, &AnalyzeConfig::default()).unwrap();
        assert_eq!(s.candles, 2);
        assert_eq!(s.bad_rows.len(), 1);
        assert_eq!(s.bad_rows[0].line, 3);
        assert_eq!(s.interval_ms, 60_000);
        let missing = dir.path().join("nope.csv");
        assert!(matches!(
            analyze_file(&missing, &out, &AnalyzeConfig::default()),
            Err(AnalyzeError::Io { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_candles(&text);
            let _ = parse_time(&text);
        }

        #[test]
        fn csv_like_text_never_panics(
            rows in proptest::collection::vec("[0-9TZ:+. -]{0,20}(,[0-9eE.+-]{0,12}){0,7}", 0..20),
        ) {
            let _ = parse_candles(&rows.join("\n"));
            let _ = parse_candles(&format!("time,open,high,low,close,volume\n{}", rows.join("\r\n")));
        }
    }

    #[test]
    fn interval_is_the_most_common_spacing() {
        let c = |t: i64| Candle {
            open_time_ms: t,
            open: Price::ZERO,
            high: Price::ZERO,
            low: Price::ZERO,
            close: Price::ZERO,
            volume: Qty::ZERO,
            trades: 0,
        };
        let cs: Vec<Candle> = [0, 60, 120, 300, 360, 420].iter().map(|&t| c(t)).collect();
        assert_eq!(detect_interval(&cs), 60);
    }
}
