//! `mmtrader backtest`: candle files through the orchestrator, with a progress bar, a printed
//! summary, and `equity.png` + `report.html` (+ `trades.csv`) in the output folder.

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::analysis::analyze::{detect_interval, parse_time, read_candles};
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::market::types::Candle;
use crate::orchestrator::backtest::{self, BacktestSpec, Fold, TradingSetup};
use crate::orchestrator::expert::{Expert, PivotMomentumConfig, PivotMomentumExpert};
use crate::orchestrator::report;

/// `mmtrader backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Candle files (any layout `mmtrader analyze` reads); several are merged in time order.
    #[arg(long = "data", value_name = "FILE", required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// First decision time (epoch s/ms or ISO-8601); earlier candles only warm up.
    #[arg(long)]
    pub from: Option<String>,
    /// Last decision time (epoch s/ms or ISO-8601).
    #[arg(long)]
    pub to: Option<String>,
    /// Symbol the candles are of.
    #[arg(long, default_value = "BTCUSDT")]
    pub symbol: String,
    /// Walk-forward windows, e.g. `7d:1d` (units s, m, h, d).
    #[arg(long = "walk-forward", value_name = "TRAIN:TEST")]
    pub walk_forward: Option<String>,
    /// Output folder for the chart and the reports.
    #[arg(long, default_value = "backtest-report")]
    pub out: PathBuf,
}

/// A duration like `90m`, `12h`, `7d`, in ms.
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|v| *v > 0)
}

/// The experts a command-line backtest uses: the rule-based baselines (model checkpoints are
/// loaded by the model runtime, which live trading uses).
fn experts() -> Vec<Box<dyn Expert>> {
    vec![
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig::default())),
        Box::new(PivotMomentumExpert::new(PivotMomentumConfig {
            name: "slow_momentum".into(),
            lookback: 60,
            min_candles: 80,
            ..PivotMomentumConfig::default()
        })),
    ]
}

fn load(files: &[PathBuf]) -> Result<Vec<Candle>, Failure> {
    let mut all = Vec::new();
    for f in files {
        let loaded =
            read_candles(f).map_err(|e| Failure::input(anyhow::anyhow!("{}: {e}", f.display())))?;
        for bad in &loaded.bad_rows {
            eprintln!(
                "{}: line {}: {} (skipped)",
                f.display(),
                bad.line,
                bad.error
            );
        }
        all.extend(loaded.candles);
    }
    all.sort_by_key(|c| c.open_time_ms);
    // Overlapping files: the first candle of each open time wins.
    all.dedup_by_key(|c| c.open_time_ms);
    Ok(all)
}

fn time_arg(name: &str, text: Option<&str>) -> Result<Option<i64>, Failure> {
    text.map(|t| {
        parse_time(t).map_err(|e| {
            Failure::input(anyhow::anyhow!(
                "--{name} {t:?}: {e} (expected epoch seconds/ms or ISO-8601)"
            ))
        })
    })
    .transpose()
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, bytes)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("writing {}: {e}", path.display())))
}

/// Runs the backtest and writes the reports.
pub fn run(config: Config, args: BacktestArgs) -> Result<i32, Failure> {
    let candles = load(&args.data)?;
    if candles.len() < 2 {
        return Err(Failure::input(anyhow::anyhow!(
            "need at least two candles, got {}",
            candles.len()
        )));
    }
    let interval = detect_interval(&candles);
    let from = time_arg("from", args.from.as_deref())?.unwrap_or(i64::MIN);
    let to = time_arg("to", args.to.as_deref())?.unwrap_or(i64::MAX);
    let spec = BacktestSpec {
        symbol: &args.symbol,
        candles: &candles,
        interval_ms: interval,
        from_ms: from,
        to_ms: to,
    };
    let cfg = &config.orchestrator;
    let setup = TradingSetup {
        risk: config.risk.clone(),
        execution: config.execution.clone(),
    };
    let bar = ProgressBar::new(candles.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} steps ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("backtest");
    let result = backtest::run(spec, cfg, &setup, experts(), None, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| Failure::input(anyhow::anyhow!("{e}")))?;
    bar.finish_and_clear();
    let folds: Vec<Fold> = match &args.walk_forward {
        None => Vec::new(),
        Some(w) => {
            let (train, test) = w
                .split_once(':')
                .and_then(|(a, b)| Some((parse_duration(a)?, parse_duration(b)?)))
                .ok_or_else(|| {
                    Failure::input(anyhow::anyhow!(
                        "--walk-forward {w:?}: expected TRAIN:TEST like 7d:1d (units s, m, h, d)"
                    ))
                })?;
            let wf_spec = BacktestSpec {
                from_ms: from.max(candles[0].open_time_ms),
                to_ms: to.min(candles[candles.len() - 1].open_time_ms + interval),
                ..spec
            };
            let bar = ProgressBar::new(1);
            bar.set_message("walk-forward folds");
            let folds =
                backtest::walk_forward(wf_spec, cfg, &setup, &experts, train, test, &mut |d, t| {
                    bar.set_length(t as u64);
                    bar.set_position(d as u64);
                })
                .map_err(|e| Failure::input(anyhow::anyhow!("{e}")))?;
            bar.finish_and_clear();
            folds
        }
    };
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::runtime(anyhow::anyhow!("creating {}: {e}", args.out.display())))?;
    let png = report::equity_png(&result).map_err(Failure::runtime)?;
    write(&args.out.join("equity.png"), &png)?;
    let title = format!("Backtest {}", args.symbol);
    write(
        &args.out.join("report.html"),
        report::html(&title, &result, &png, &folds).as_bytes(),
    )?;
    let mut csv = String::from("time_ms,side,price,qty,fee,position,reason\n");
    for t in &result.trades {
        csv.push_str(&format!(
            "{},{:?},{},{},{},{},\"{}\"\n",
            t.time_ms,
            t.side,
            t.price,
            t.qty,
            t.fee,
            t.position,
            t.reason.replace('"', "'")
        ));
    }
    write(&args.out.join("trades.csv"), csv.as_bytes())?;
    println!("{}", report::summary(&result));
    if result.refusals > 0 {
        println!(
            "risk manager refused {} intents, e.g. {}",
            result.refusals,
            result.refusal_reasons.first().map_or("", String::as_str)
        );
    }
    for f in &folds {
        println!(
            "fold test {}..{}: thresholds {:.2}, return {:.2}% (buy-and-hold {:.2}%), Sharpe {:.2}",
            f.test.0,
            f.test.1,
            f.chosen.buy,
            f.test_result.metrics.total_return * 100.0,
            f.test_result.benchmark_metrics.total_return * 100.0,
            f.test_result.metrics.sharpe
        );
    }
    println!("reports in {}", args.out.display());
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("7d"), Some(7 * 86_400_000));
        assert_eq!(parse_duration("90m"), Some(5_400_000));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("0h"), None);
        assert_eq!(parse_duration("3w"), None);
    }
}
