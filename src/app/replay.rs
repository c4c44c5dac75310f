//! `mmtrader replay`: plays a recording from the store through the same pipeline
//! ([`MarketTaskState`]) the live feed uses, at recorded pace, N× or as fast as possible.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::pipeline::MarketTaskState;
use crate::cli::{EXIT_OK, Failure};
use crate::config::Config;
use crate::feeds::binance::connector::FeedEvent;
use crate::feeds::binance::wire::BinanceEvent;
use crate::market::snapshot::BookStatus;
use crate::market::types::{Level, Timeframe};
use crate::storage::columns::Dataset;
use crate::storage::market::{self, EventFilter, Stamped, StoredEvent, read_events};

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplaySpeed {
    /// As fast as possible.
    Max,
    /// This many times the recorded pace (1.0 = real time).
    Times(f64),
}

impl std::str::FromStr for ReplaySpeed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(ReplaySpeed::Max);
        }
        let t = s.trim_end_matches(['x', 'X']);
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(ReplaySpeed::Times(v)),
            _ => Err(format!(
                "expected `max` or a positive factor like 1, 10 or 0.5, got {s:?}"
            )),
        }
    }
}

/// `mmtrader replay` options (one struct so the lead can merge the raw-message replay's).
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Store root (default: `[storage] root` inside the data directory).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Pace: `1` (as recorded), `N` (N times faster) or `max`.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(ReplaySpeed))]
    pub speed: ReplaySpeed,
    /// Only these exchange symbols (repeatable; default: all recorded).
    #[arg(long, value_name = "SYMBOL")]
    pub symbol: Vec<String>,
    /// First receive time: `YYYY-MM-DD` (UTC) or ms since the epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<i64>,
    /// End receive time (exclusive): `YYYY-MM-DD` (UTC) or ms since the epoch.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<i64>,
    /// Raw mode: the exchange whose connector reads `--raw` files (binance, mexc, coinbase,
    /// kraken, htx, bitfinex, kucoin, bybit).
    #[arg(long, value_name = "NAME", requires = "raw")]
    pub exchange: Option<String>,
    /// Raw mode: recorded raw messages, one per line as received, or cryptofeed captures
    /// (repeatable; `.gz` is read as gzip). Prints events, top of book and integrity failures.
    #[arg(long, value_name = "FILE", requires = "exchange", conflicts_with_all = ["store", "symbol", "from", "to"])]
    pub raw: Vec<PathBuf>,
    /// Raw mode: print only integrity failures, errors and the summary.
    #[arg(long, requires = "raw")]
    pub quiet: bool,
}

fn parse_time(s: &str) -> Result<i64, String> {
    if let Some(day) = crate::storage::parse_date(s) {
        return Ok(day * 86_400_000);
    }
    s.parse::<i64>()
        .map_err(|_| format!("expected YYYY-MM-DD or ms since the epoch, got {s:?}"))
}

/// Counts of what a replay fed the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    /// Depth diffs.
    pub diffs: u64,
    /// REST depth snapshots (and partial-depth pushes).
    pub snapshots: u64,
    /// Stream and recovered trades.
    pub trades: u64,
    /// History pages.
    pub history_pages: u64,
    /// Once-a-second steps.
    pub seconds: u64,
    /// Connections, disconnections, errors, instruments.
    pub control: u64,
    /// Messages kept only as descriptions (not used by the pipeline).
    pub notes: u64,
}

/// Keeps replayed receive times in step with the wall clock at a chosen speed.
#[derive(Debug)]
pub struct Pacer {
    speed: ReplaySpeed,
    /// Wall-clock instant and receive time of the first event replayed.
    anchor: Option<(Instant, i64)>,
}

impl Pacer {
    /// A pacer for `speed`.
    pub fn new(speed: ReplaySpeed) -> Self {
        Self {
            speed,
            anchor: None,
        }
    }

    /// Sleeps until the event received at `recv_ms` is due.
    fn wait(&mut self, recv_ms: i64) {
        let ReplaySpeed::Times(factor) = self.speed else {
            return;
        };
        let (start, first) = *self.anchor.get_or_insert((Instant::now(), recv_ms));
        let due = Duration::from_secs_f64((recv_ms - first).max(0) as f64 / 1000.0 / factor);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Replays recorded events into `state`, paced by `pacer`. Returns the last receive time
/// replayed.
pub fn replay_events(
    state: &mut MarketTaskState,
    events: Vec<Stamped>,
    pacer: &mut Pacer,
    counts: &mut ReplayCounts,
) -> Option<i64> {
    let mut last = None;
    let mut ignored = Vec::new();
    for e in events {
        pacer.wait(e.recv_ms);
        last = Some(e.recv_ms);
        match e.event {
            StoredEvent::Second => {
                counts.seconds += 1;
                state.on_second(e.recv_ms);
            }
            StoredEvent::Note(_) => counts.notes += 1,
            StoredEvent::Feed(ev) => {
                match &ev {
                    FeedEvent::Market(BinanceEvent::Depth(_)) => counts.diffs += 1,
                    FeedEvent::Snapshot { .. }
                    | FeedEvent::Market(BinanceEvent::PartialDepth { .. }) => counts.snapshots += 1,
                    FeedEvent::Market(BinanceEvent::AggTrade(_) | BinanceEvent::Trade(_)) => {
                        counts.trades += 1
                    }
                    FeedEvent::RecoveredTrades { trades, .. } => {
                        counts.trades += trades.len() as u64
                    }
                    FeedEvent::History { .. } => counts.history_pages += 1,
                    _ => counts.control += 1,
                }
                // Requests the pipeline makes were answered in the recording itself.
                state.on_event(ev, e.recv_ms, &mut ignored);
                ignored.clear();
            }
        }
    }
    last
}

/// Result of one symbol after a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolResult {
    /// Exchange symbol.
    pub symbol: String,
    /// Book state at the end.
    pub status: BookStatus,
    /// Best bid.
    pub best_bid: Option<Level>,
    /// Best ask.
    pub best_ask: Option<Level>,
    /// Levels per side.
    pub levels: (usize, usize),
    /// Diffs applied, dropped, sequence gaps, resyncs.
    pub book: (u64, u64, u64, u64),
    /// Trades applied.
    pub trades: u64,
    /// Candles kept per timeframe and the intervals missing between them.
    pub candles: Vec<(Timeframe, usize, u64)>,
}

/// What `mmtrader replay` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Store replayed.
    pub store: String,
    /// Events fed.
    pub counts: ReplayCounts,
    /// First and last receive time.
    pub span: Option<(i64, i64)>,
    /// Per-symbol results.
    pub symbols: Vec<SymbolResult>,
}

fn fmt_level(l: Option<Level>) -> String {
    l.map_or_else(|| "-".to_owned(), |l| format!("{} x {}", l.price, l.qty))
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "replay of {}", self.store)?;
        if let Some((a, b)) = self.span {
            writeln!(f, "  received {a}..{b} ({:.1} s)", (b - a) as f64 / 1000.0)?;
        }
        let c = &self.counts;
        writeln!(
            f,
            "  diffs {}  snapshots {}  trades {}  history pages {}  seconds {}  control {}  \
             unused {}",
            c.diffs, c.snapshots, c.trades, c.history_pages, c.seconds, c.control, c.notes
        )?;
        for s in &self.symbols {
            writeln!(f, "  {} {:?}", s.symbol, s.status)?;
            writeln!(
                f,
                "    diffs applied {}  dropped {}  gaps {}  resyncs {}  trades {}",
                s.book.0, s.book.1, s.book.2, s.book.3, s.trades
            )?;
            writeln!(
                f,
                "    book: {} bids / {} asks  best bid {}  best ask {}",
                s.levels.0,
                s.levels.1,
                fmt_level(s.best_bid),
                fmt_level(s.best_ask)
            )?;
            let candles: Vec<String> = s
                .candles
                .iter()
                .map(|(tf, n, gaps)| format!("{tf} {n} (gaps {gaps})"))
                .collect();
            writeln!(f, "    candles: {}", candles.join("  "))?;
        }
        Ok(())
    }
}

/// Intervals missing between consecutive candles.
fn candle_gaps(state: &MarketTaskState, symbol: &str, tf: Timeframe) -> (usize, u64) {
    let Some(m) = state.market(symbol) else {
        return (0, 0);
    };
    let series = m.candles().series(tf);
    let times: Vec<i64> = series.candles().map(|c| c.open_time_ms).collect();
    let gaps = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) / tf.millis()).saturating_sub(1) as u64)
        .sum();
    (times.len(), gaps)
}

/// Per-symbol results of a pipeline state at `now`.
pub fn summarize(state: &MarketTaskState, now: i64) -> Vec<SymbolResult> {
    state
        .snapshot(now, true)
        .symbols
        .iter()
        .map(|s| SymbolResult {
            symbol: s.exchange.clone(),
            status: s.status,
            best_bid: s.best_bid,
            best_ask: s.best_ask,
            levels: (s.bid_levels, s.ask_levels),
            book: (s.book.applied, s.book.dropped, s.book.gaps, s.book.resyncs),
            trades: s.trades,
            candles: Timeframe::ALL
                .iter()
                .map(|&tf| {
                    let (n, gaps) = candle_gaps(state, &s.exchange, tf);
                    (tf, n, gaps)
                })
                .collect(),
        })
        .collect()
}

/// Reads a recording and replays it into a fresh pipeline state, one UTC day of events in
/// memory at a time (rows live in the day partition of their receive time).
pub fn replay_store(
    config: &Config,
    root: &Path,
    filter: &EventFilter,
    speed: ReplaySpeed,
) -> anyhow::Result<(MarketTaskState, ReplaySummary)> {
    const DAY_MS: i64 = 86_400_000;
    let mut state = MarketTaskState::new(config, &format!("replay {}", root.display()));
    let mut counts = ReplayCounts::default();
    let (mut first, mut last) = (None, None);
    let mut pacer = Pacer::new(speed);
    for day in market::recorded_days(root)? {
        let (start, end) = (day * DAY_MS, (day + 1) * DAY_MS);
        if filter.from_ms.is_some_and(|f| f >= end) || filter.to_ms.is_some_and(|t| t <= start) {
            continue;
        }
        let day_filter = EventFilter {
            symbols: filter.symbols.clone(),
            from_ms: Some(filter.from_ms.map_or(start, |f| f.max(start))),
            to_ms: Some(filter.to_ms.map_or(end, |t| t.min(end))),
        };
        let events = read_events(root, &day_filter)?;
        first = first.or(events.first().map(|e| e.recv_ms));
        last = replay_events(&mut state, events, &mut pacer, &mut counts).or(last);
    }
    let summary = ReplaySummary {
        store: root.display().to_string(),
        symbols: summarize(&state, last.unwrap_or_default()),
        counts,
        span: first.zip(last),
    };
    Ok((state, summary))
}

/// Replays a recording and prints per-symbol results.
pub fn run(config: Config, args: ReplayArgs) -> Result<i32, Failure> {
    if let Some(exchange) = args.exchange {
        let raw = crate::feeds::raw_replay::ReplayRawArgs {
            exchange,
            raw: args.raw,
            quiet: args.quiet,
        };
        return crate::feeds::raw_replay::run(config, raw);
    }
    let root = super::record::store_root(&config, args.store.as_ref());
    if !root.join(crate::storage::partition::MARKET_DIR).is_dir() {
        return Err(Failure::input(anyhow::anyhow!(
            "{}: no recording (no market/ folder)",
            root.display()
        )));
    }
    // The pipeline follows the configured symbols only; say so rather than drop data silently.
    for ds in [Dataset::Book, Dataset::Trades] {
        for sym in market::symbols(&root, ds).map_err(Failure::input)? {
            if !config.symbols.iter().any(|s| s.exchange == sym) {
                eprintln!(
                    "replay: {sym} is recorded ({}) but not configured; its events are skipped",
                    ds.name()
                );
            }
        }
    }
    let filter = EventFilter {
        symbols: args.symbol.iter().map(|s| s.to_ascii_uppercase()).collect(),
        from_ms: args.from,
        to_ms: args.to,
    };
    let (_, summary) = replay_store(&config, &root, &filter, args.speed).map_err(Failure::input)?;
    print!("{summary}");
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_speeds_and_times() {
        assert_eq!("max".parse::<ReplaySpeed>(), Ok(ReplaySpeed::Max));
        assert_eq!("10".parse::<ReplaySpeed>(), Ok(ReplaySpeed::Times(10.0)));
        assert_eq!("2x".parse::<ReplaySpeed>(), Ok(ReplaySpeed::Times(2.0)));
        assert!("0".parse::<ReplaySpeed>().is_err());
        assert!("fast".parse::<ReplaySpeed>().is_err());
        assert_eq!(parse_time("1970-01-02"), Ok(86_400_000));
        assert_eq!(parse_time("1234"), Ok(1234));
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn pacer_waits_in_recorded_time_divided_by_speed() {
        let mut p = Pacer::new(ReplaySpeed::Times(100.0));
        let t0 = Instant::now();
        p.wait(1_000);
        p.wait(1_500);
        // 500 ms of recording at 100x is at least 5 ms of wall clock.
        assert!(t0.elapsed() >= Duration::from_millis(5));
        let mut max = Pacer::new(ReplaySpeed::Max);
        max.wait(0);
        max.wait(i64::MAX / 2);
        assert!(max.anchor.is_none());
    }
}
