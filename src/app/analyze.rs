//! `mmtrader analyze`: indicators and known pivots per candle, as CSV.

use crate::analysis::analyze::{AnalyzeConfig, AnalyzeError, analyze_file};
use crate::cli::{AnalyzeArgs, EXIT_OK, Failure};
use crate::config::Config;

/// Analyzes the file and reports bad rows by line number.
pub fn run(_config: Config, args: AnalyzeArgs) -> Result<i32, Failure> {
    let summary =
        analyze_file(&args.candles, &args.out, &AnalyzeConfig::default()).map_err(|e| match e {
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
