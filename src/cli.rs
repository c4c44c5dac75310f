//! Command line: parses arguments, loads configuration, dispatches, and maps failures to exit
//! codes that scripts can rely on.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: a failure while running.
pub const EXIT_RUNTIME: i32 = 1;
/// Exit code: bad command line (clap's own convention).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: invalid configuration.
pub const EXIT_CONFIG: i32 = 3;
/// Exit code: an input file is unreadable or invalid.
pub const EXIT_INPUT: i32 = 4;
/// Exit code: interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

const AFTER_HELP: &str = "\
Without a command, mmtrader starts the workstation: market data from the configured source
(the built-in simulated exchange by default: no keys, no internet), the screen, paper trading.

Configuration: --config PATH, else ./config.toml, else built-in defaults. Any key can be
overridden as MMTRADER_<SECTION>__<KEY>, e.g. MMTRADER_DATA__SOURCE=binance.

Exit codes: 0 success, 1 runtime failure, 2 bad command line, 3 configuration error,
4 unreadable or invalid input file, 130 interrupted.";

/// mmtrader: a machine-learning trading workstation for the terminal.
#[derive(Debug, Parser)]
#[command(name = "mmtrader", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to run (default: the workstation).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the simulated exchange alone (Binance websocket + REST protocol on loopback).
    Sim(SimArgs),
    /// Run the data path headless and print normalized events and health; or replay a recording.
    Feed(FeedArgs),
    /// Compute indicators and known pivots for a candle file and write them as CSV.
    Analyze(AnalyzeArgs),
    /// Train a model on a candle file and keep its best checkpoints.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Replay candle files through the orchestrator with fees and slippage; report statistics
    /// against buy-and-hold, an equity chart and an HTML page.
    Backtest(crate::app::backtest::BacktestArgs),
    /// Score checkpoints on a date range they were not trained on: the CNN's pivots per level
    /// and the desk's trading, each number beside its baselines, with confidence intervals.
    Evaluate(crate::app::evaluate::EvaluateArgs),
    /// Record the live data path (default source: the simulator) into the store until Ctrl-C.
    Record(crate::app::record::RecordArgs),
    /// Replay a recording from the store through the market pipeline (1x, Nx or max speed).
    Replay(crate::app::replay::ReplayArgs),
    /// Import Binance historical kline or aggTrade files (CSV or zip) into the store.
    Import(crate::app::import::ImportArgs),
    /// Run the collector: the feed headless into PostgreSQL and Redis, with the HTTP API.
    Collect(CollectArgs),
    /// Print the stored inference history (steps, outputs, prediction–outcome pairs).
    History(crate::storage::history_view::HistoryArgs),
}

/// `mmtrader collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// `mmtrader train …`.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// The pivot CNN: next pivot of each level and an action; validation split by time,
    /// metrics per level, early stopping; warm-starts from its best checkpoint.
    Cnn(TrainCnnCli),
    /// The DQN agent in a trading environment with fees and slippage; evaluated on the later,
    /// held-out part against buy-and-hold, flat and random.
    Rl(TrainRlCli),
}

/// Options shared by both training commands.
#[derive(Debug, Args)]
pub struct TrainCommonCli {
    /// Candle file (CSV with a header, Binance kline CSV, or JSON klines; gzip allowed).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// 1 s candles of the reference symbol (same layouts), fed to the CNN's reference series.
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Use only the last N candles (of those --until keeps).
    #[arg(long, value_name = "N")]
    pub max_candles: Option<usize>,
    /// Train only on candles that close at or before T (validation and held-out parts inside
    /// that range, by time): an ISO-8601 date or datetime in UTC (2021-03-01,
    /// 2021-03-01T12:00:00Z) or epoch milliseconds. Test from T on.
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Input window in candles.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Device: auto (CUDA when present), cpu, or cuda:N (default: [models] device).
    #[arg(long)]
    pub device: Option<String>,
    /// Checkpoint folder (default: <data_dir>/checkpoints).
    #[arg(long, value_name = "DIR")]
    pub checkpoints: Option<PathBuf>,
    /// Checkpoints kept per model, 5..=10, the best by the model's metric (default:
    /// [models] keep_best).
    #[arg(long)]
    pub keep: Option<usize>,
    /// Seed for libtorch and the samplers.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// `mmtrader train cnn`.
#[derive(Debug, Args)]
pub struct TrainCnnCli {
    /// Shared options.
    #[command(flatten)]
    pub common: TrainCommonCli,
    /// Maximum epochs (early stopping may end sooner).
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Share of the latest rows used for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Model name (checkpoint sub-folder).
    #[arg(long, default_value = "pivot_cnn")]
    pub model: String,
}

/// `mmtrader train rl`.
#[derive(Debug, Args)]
pub struct TrainRlCli {
    /// Shared options.
    #[command(flatten)]
    pub common: TrainCommonCli,
    /// Training episodes.
    #[arg(long, default_value_t = 40)]
    pub episodes: usize,
    /// Steps per episode.
    #[arg(long, default_value_t = 512)]
    pub episode_len: usize,
    /// Share of the latest rows held out for evaluation.
    #[arg(long, default_value_t = 0.25)]
    pub held_out: f64,
    /// Feed this CNN's best checkpoint into the state.
    #[arg(long, value_name = "NAME")]
    pub cnn: Option<String>,
    /// Model name (checkpoint sub-folder).
    #[arg(long, default_value = "dqn_agent")]
    pub model: String,
}

/// `mmtrader sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Listen address (default: 127.0.0.1:9443 for standalone use).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9443")]
    pub bind: String,
    /// Market seed (default: sim.seed from the configuration).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `mmtrader feed`.
#[derive(Debug, Args)]
pub struct FeedArgs {
    /// Replay a recorded session file instead of connecting (repeat for a websocket log and
    /// its REST companion recorded at the same time).
    #[arg(long, value_name = "FILE")]
    pub replay: Vec<PathBuf>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Print every normalized event, not only the health summary each second.
    #[arg(long)]
    pub events: bool,
}

/// `mmtrader analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Candle file: CSV with a time/open/high/low/close/volume header, Binance kline CSV, or a
    /// JSON array of klines.
    #[arg(long, value_name = "FILE")]
    pub candles: PathBuf,
    /// Output CSV file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Day of a LEAN minute/second file (times are ms since midnight) when its name has no
    /// yyyyMMdd.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: i32,
    /// What to tell the user.
    pub error: anyhow::Error,
}

impl Failure {
    /// A runtime failure (exit 1).
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_RUNTIME,
            error: error.into(),
        }
    }

    /// An input-file failure (exit 4).
    pub fn input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_INPUT,
            error: error.into(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self {
            code: EXIT_CONFIG,
            error: e.into(),
        }
    }
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("mmtrader: {}", error_chain(&f.error));
            f.code
        }
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes (typed
/// errors often embed their source in their own message).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !text.contains(&msg) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&msg);
        }
    }
    text
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<i32, Failure> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        None => crate::app::workstation::run(config),
        Some(Command::Sim(args)) => crate::app::sim::run(config, args),
        Some(Command::Feed(args)) => crate::app::feed::run(config, args),
        Some(Command::Analyze(args)) => crate::app::analyze::run(config, args),
        Some(Command::Train(cmd)) => crate::app::train::run_cli(config, cmd),
        Some(Command::Backtest(args)) => crate::app::backtest::run(config, args),
        Some(Command::Evaluate(args)) => crate::app::evaluate::run(config, args),
        Some(Command::Record(args)) => crate::app::record::run(config, args),
        Some(Command::Replay(args)) => crate::app::replay::run(config, args),
        Some(Command::Import(args)) => crate::app::import::run(config, args),
        Some(Command::Collect(args)) => crate::app::collect::run(config, args),
        Some(Command::History(args)) => crate::storage::history_view::run(config, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn error_chain_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(io)
            .context("cannot read x: no such file")
            .context("replay");
        assert_eq!(error_chain(&e), "replay: cannot read x: no such file");
    }

    #[test]
    fn parses_each_command() {
        let c = Cli::try_parse_from(["mmtrader", "--config", "x.toml"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.config.as_deref(), Some(std::path::Path::new("x.toml")));
        let c =
            Cli::try_parse_from(["mmtrader", "feed", "--replay", "a", "--replay", "b"]).unwrap();
        match c.command {
            Some(Command::Feed(f)) => assert_eq!(f.replay.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["mmtrader", "analyze", "--candles", "a"]).is_err());
    }
}
