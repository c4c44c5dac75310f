//! `mmtrader history`: prints the stored inference history of one symbol over a time range
//! (steps with their decisions, expert outputs, or prediction–outcome pairs), one row a line.

use std::path::PathBuf;

use super::history::{FeedbackRow, HistoryStep};
use super::state::StateDb;
use super::utc_date;
use crate::analysis::analyze::parse_time;
use crate::analysis::model_output::ModelOutput;
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::orchestrator::feedback::Outcome;
use crate::tui::panes::utc_hms;

/// Which rows `mmtrader history` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Show {
    /// Steps: decision, votes and skipped experts, candles in the input.
    Steps,
    /// Every expert output with its hidden states' sizes.
    Outputs,
    /// Prediction–outcome pairs.
    Feedback,
}

/// `mmtrader history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Canonical symbol, e.g. ETHUSDT.
    #[arg(long)]
    pub symbol: String,
    /// Start of the range, inclusive: epoch s/ms, ISO-8601 or YYYY-MM-DD (default: all).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<i64>,
    /// End of the range, exclusive, same forms (default: all).
    #[arg(long, value_parser = parse_instant)]
    pub to: Option<i64>,
    /// Only this model's outputs or pairs.
    #[arg(long)]
    pub model: Option<String>,
    /// Rows to print.
    #[arg(long, value_enum, default_value = "steps")]
    pub show: Show,
    /// Store root (default: `[storage] root` inside the data directory).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

fn parse_instant(text: &str) -> Result<i64, String> {
    parse_time(text).map_err(|e| format!("{e} (expected epoch s/ms, ISO-8601 or YYYY-MM-DD)"))
}

/// Prints the rows; undecodable rows are reported on stderr and skipped.
pub fn run(config: Config, args: HistoryArgs) -> Result<i32, Failure> {
    let root = crate::app::record::store_root(&config, args.store.as_ref());
    if !root.join(super::state::STATE_FILE).exists() {
        return Err(Failure::input(anyhow::anyhow!(
            "no state database in {} (the desk writes one while inference runs)",
            root.display()
        )));
    }
    let db = StateDb::open(&root).map_err(Failure::runtime)?;
    let (from, to) = (args.from.unwrap_or(i64::MIN), args.to.unwrap_or(i64::MAX));
    let model = args.model.as_deref();
    let (lines, undecodable) = match args.show {
        Show::Steps => {
            let d = db
                .history_steps(&args.symbol, from, to)
                .map_err(Failure::runtime)?;
            let lines = d
                .rows
                .iter()
                .filter(|s| model.is_none_or(|m| s.outputs.iter().any(|o| o.model_name == m)))
                .map(step_line)
                .collect::<Vec<_>>();
            (lines, d.undecodable)
        }
        Show::Outputs => {
            let d = db
                .history_outputs(&args.symbol, model, from, to)
                .map_err(Failure::runtime)?;
            (d.rows.iter().map(output_line).collect(), d.undecodable)
        }
        Show::Feedback => {
            let d = db
                .history_feedback(&args.symbol, model, from, to)
                .map_err(Failure::runtime)?;
            (d.rows.iter().map(feedback_line).collect(), d.undecodable)
        }
    };
    for line in &lines {
        println!("{line}");
    }
    for bad in &undecodable {
        eprintln!("{}: {bad} (skipped)", db.path().display());
    }
    eprintln!(
        "{} rows, {} undecodable skipped",
        lines.len(),
        undecodable.len()
    );
    Ok(EXIT_OK)
}

fn utc(ms: i64) -> String {
    format!("{} {}", utc_date(ms), utc_hms(ms))
}

/// One step: time, symbol, decision, votes, skipped experts and candles per series.
pub fn step_line(s: &HistoryStep) -> String {
    let d = &s.decision;
    let price = d.price.map_or("-".to_string(), |p| p.to_string());
    let votes: Vec<String> = d
        .votes
        .iter()
        .map(|v| format!("{}={:?}({:.2})", v.model, v.action, v.confidence))
        .collect();
    let skipped: Vec<String> = d
        .skipped
        .iter()
        .map(|k| format!("{}: {}", k.model, k.reason))
        .collect();
    let candles: Vec<String> = s.input.ohlcv.iter().map(|c| c.len().to_string()).collect();
    format!(
        "{}  {}  {:?} {:.2} @ {}  votes [{}]  skipped [{}]  candles 1s/1m/1h/1d {}",
        utc(s.input.timestamp_ms),
        s.input.symbol,
        d.action,
        d.confidence,
        price,
        votes.join(" "),
        skipped.join("; "),
        candles.join("/")
    )
}

/// One expert output: time, model, action, probabilities and hidden-state sizes.
pub fn output_line(o: &ModelOutput) -> String {
    let hidden: Vec<String> = o
        .hidden_states
        .iter()
        .map(|(k, v)| format!("{k}[{}]", v.len()))
        .collect();
    let p = &o.predictions.probabilities;
    format!(
        "{}  {}  {}  {:?} {:.2}  p(b/s/h) {:.2}/{:.2}/{:.2}  pivots {}  hidden {}",
        utc(o.timestamp_ms),
        o.symbol,
        o.model_name,
        o.predictions.action,
        o.confidence,
        p.buy,
        p.sell,
        p.hold,
        o.predictions.pivots.len(),
        hidden.join(" ")
    )
}

/// One prediction–outcome pair: prediction, what happened, when it was scored.
pub fn feedback_line(r: &FeedbackRow) -> String {
    let what = match &r.feedback.outcome {
        Outcome::Action(a) => format!(
            "{:?} vs {:?} ({:+.4}%, {} -> {})",
            r.feedback.prediction.predictions.action,
            a.market,
            a.realized_return * 100.0,
            a.entry,
            a.exit
        ),
        Outcome::Pivot(p) => format!(
            "pivot {:?} {} vs {:?} {} ({:.1} bps, {} ms)",
            p.predicted.kind,
            p.predicted.price,
            p.actual_kind,
            p.actual_price,
            p.price_error_bps,
            p.time_error_ms
        ),
    };
    format!(
        "{}  {}  {}  {}  {}  {}  scored {}",
        utc(r.time_ms),
        r.symbol,
        r.model_name,
        r.kind,
        if r.correct { "right" } else { "wrong" },
        what,
        utc(r.scored_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_and_parse_in_several_forms() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_640_995_261_000), "2022-01-01 00:01:01");
        assert_eq!(parse_instant("2022-01-01"), Ok(1_640_995_200_000));
        assert_eq!(parse_instant("1640995200"), Ok(1_640_995_200_000));
        assert_eq!(parse_instant("2022-01-01T00:01:01Z"), Ok(1_640_995_261_000));
        let err = parse_instant("yesterday").unwrap_err();
        assert!(err.contains("expected epoch"), "{err}");
    }
}
