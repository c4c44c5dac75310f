//! `mmtrader analyze`: indicators and known pivots per candle, as CSV.

use crate::analysis::analyze::{AnalyzeConfig, AnalyzeError, analyze_file, parse_date};
use crate::cli::{AnalyzeArgs, EXIT_OK, EXIT_USAGE, Failure};
use crate::config::Config;

/// Analyzes the file and reports bad rows by line number.
pub fn run(_config: Config, args: AnalyzeArgs) -> Result<i32, Failure> {
    let date_ms = match args.date.as_deref() {
        None => None,
        Some(text) => Some(parse_date(text).ok_or_else(|| Failure {
            code: EXIT_USAGE,
            error: anyhow::anyhow!("--date {text:?}: expected a day as YYYY-MM-DD"),
        })?),
    };
    let cfg = AnalyzeConfig {
        date_ms,
        ..AnalyzeConfig::default()
    };
    let summary = analyze_file(&args.candles, &args.out, &cfg).map_err(|e| match e {
        AnalyzeError::Io { .. } => Failure::input(e),
        other => Failure::input(anyhow::anyhow!("{}: {other}", args.candles.display())),
    })?;
    for bad in &summary.bad_rows {
        eprintln!(
            "{}: line {}: {} (skipped)",
            args.candles.display(),
            bad.line,
            bad.error
        );
    }
    println!(
        "analyzed {} candles ({:?}, interval {} ms) → {}; pivots per level {:?}; {} bad rows skipped",
        summary.candles,
        summary.format,
        summary.interval_ms,
        args.out.display(),
        summary.pivots_per_level,
        summary.bad_rows.len()
    );
    Ok(EXIT_OK)
}
