//! `mmtrader feed`: the data path headless — normalized events and health on stdout — or a
//! recorded session replayed through the same connector code.

use std::io::Write;
use std::time::Duration;

use super::pipeline::FeedProcess;
use crate::cli::{EXIT_INTERRUPTED, EXIT_OK, Failure, FeedArgs};
use crate::config::Config;
use crate::feeds::binance::connector::FeedEvent;
use crate::feeds::binance::wire::BinanceEvent;
use crate::logging::{LogOutput, LogRing, now_ms};
use crate::market::snapshot::MarketSnapshot;

/// One line per normalized event.
pub fn describe_event(ev: &FeedEvent) -> Option<String> {
    Some(match ev {
        FeedEvent::Connected { connects } => format!("connected (connection #{connects})"),
        FeedEvent::Disconnected { reason, retry_in } => {
            format!(
                "disconnected: {reason}; retry in {} ms",
                retry_in.as_millis()
            )
        }
        FeedEvent::Market(BinanceEvent::Depth(d)) => format!(
            "depth {} U={} u={} bids={} asks={}",
            d.symbol,
            d.first_update_id,
            d.final_update_id,
            d.bids.len(),
            d.asks.len()
        ),
        FeedEvent::Market(BinanceEvent::AggTrade(t) | BinanceEvent::Trade(t)) => format!(
            "trade {} id={} {} x {} taker={:?} t={}",
            t.symbol, t.id, t.price, t.qty, t.taker_side, t.time_ms
        ),
        FeedEvent::Market(BinanceEvent::Ticker(t)) => format!(
            "ticker {} last={} 24h high={} low={} vol={}",
            t.symbol, t.last_price, t.high, t.low, t.base_volume
        ),
        FeedEvent::Market(BinanceEvent::BookTicker(b)) => format!(
            "top {} u={} bid={}@{} ask={}@{}",
            b.symbol, b.update_id, b.bid.qty, b.bid.price, b.ask.qty, b.ask.price
        ),
        FeedEvent::Market(other) => format!("message {other:?}"),
        FeedEvent::Malformed { kind, log } => {
            format!(
                "malformed frame ({kind}){}",
                log.as_ref().map(|l| format!(": {l}")).unwrap_or_default()
            )
        }
        FeedEvent::Snapshot { symbol, snapshot } => format!(
            "snapshot {symbol} lastUpdateId={} bids={} asks={}",
            snapshot.last_update_id,
            snapshot.bids.len(),
            snapshot.asks.len()
        ),
        FeedEvent::History {
            symbol,
            timeframe,
            candles,
        } => format!(
            "history {symbol} {timeframe} {} candles{}",
            candles.len(),
            match (candles.first(), candles.last()) {
                (Some(a), Some(b)) => format!(" {}..{}", a.open_time_ms, b.open_time_ms),
                _ => String::new(),
            }
        ),
        FeedEvent::Instruments(list) => format!("instruments {} listed", list.len()),
        FeedEvent::RecoveredTrades { symbol, trades, .. } => format!(
            "recovered {symbol} {} trades{}",
            trades.len(),
            match (trades.first(), trades.last()) {
                (Some(a), Some(b)) => format!(" ids {}..{}", a.id, b.id),
                _ => String::new(),
            }
        ),
        FeedEvent::RestFailed { what, error } => format!("rest failed {what}: {error}"),
    })
}

/// The once-a-second health lines.
pub fn health_lines(snap: &MarketSnapshot) -> Vec<String> {
    let mut out = Vec::new();
    for l in &snap.links {
        out.push(format!(
            "health {} {:?}{} age={} rate={:.1}/s connects={} resyncs={} errors={}",
            l.name,
            l.state,
            if l.is_stale(snap.time_ms) {
                " STALE"
            } else {
                ""
            },
            l.age_ms(snap.time_ms)
                .map(|a| format!("{a}ms"))
                .unwrap_or_else(|| "-".into()),
            l.rate_per_sec,
            l.connects,
            l.resyncs,
            l.errors
        ));
    }
    for s in &snap.symbols {
        let px = |l: Option<crate::market::types::Level>| {
            l.map(|l| format!("{}@{}", l.qty, l.price))
                .unwrap_or_else(|| "-".into())
        };
        out.push(format!(
            "book {} {:?} bid={} ask={} levels={}/{} diffs={} stale={} gaps={} resyncs={} trades={}",
            s.exchange,
            s.status,
            px(s.best_bid),
            px(s.best_ask),
            s.bid_levels,
            s.ask_levels,
            s.book.applied,
            s.book.dropped,
            s.book.gaps,
            s.book.resyncs,
            s.trades
        ));
        if let Some(a) = &s.agg_cob {
            let named = |v: &[crate::feeds::normalized::Venue]| {
                v.iter().map(|v| v.name()).collect::<Vec<_>>().join(",")
            };
            let included: Vec<_> = a.quotes.iter().map(|q| q.venue).collect();
            let skipped: Vec<String> = a
                .skipped
                .iter()
                .map(|(v, why)| format!("{v}:{}", why.label()))
                .collect();
            out.push(format!(
                "agg {} mid={} venues={} skipped={}",
                s.exchange,
                a.mid,
                named(&included),
                skipped.join(",")
            ));
        }
    }
    for v in &snap.venues {
        out.push(format!(
            "venue {} {:?} age={} books={}/{} integrity={} connects={} errors={} trades={}",
            v.venue,
            v.health.state,
            v.health
                .age_ms(snap.time_ms)
                .map_or("-".to_string(), |a| format!("{a}ms")),
            v.books,
            v.instruments,
            v.integrity_failures,
            v.health.connects,
            v.health.errors,
            v.trades
        ));
    }
    out
}

/// Runs the feed headless, or replays recordings.
pub fn run(config: Config, args: FeedArgs) -> Result<i32, Failure> {
    if !args.replay.is_empty() {
        return replay(&args);
    }
    let ring = LogRing::new(16);
    let _guard = crate::logging::init(&config.logging.level, LogOutput::Stderr, &ring)
        .map_err(Failure::runtime)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let (endpoints, sim) = super::endpoints(&config).await?;
        println!(
            "feed: source {} (REST {}, websocket {})",
            endpoints.name, endpoints.rest, endpoints.ws
        );
        let (mut feed, mut snapshots) = FeedProcess::new(config, endpoints);
        if args.events {
            feed.set_printer(Box::new(|ev| {
                if let Some(line) = describe_event(ev) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{} {line}", now_ms());
                }
            }));
            feed.set_venue_printer(Box::new(|venue, ev| {
                let item = crate::feeds::raw_replay::ReplayItem::Event(ev);
                if let Some(line) = crate::feeds::raw_replay::describe(&item, false) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{} {venue} {line}", now_ms());
                }
            }));
        }
        feed.start().map_err(Failure::runtime)?;
        let deadline = args
            .duration
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        let code = loop {
            tokio::select! {
                _ = every.tick() => {
                    let snap = snapshots.borrow_and_update().clone();
                    let mut out = std::io::stdout().lock();
                    for line in health_lines(&snap) {
                        let _ = writeln!(out, "{} {line}", snap.time_ms);
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        break EXIT_OK;
                    }
                }
                _ = tokio::signal::ctrl_c() => break EXIT_INTERRUPTED,
            }
        };
        feed.stop().await;
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        Ok(code)
    })
}

fn replay(args: &FeedArgs) -> Result<i32, Failure> {
    let report = crate::feeds::replay::replay_file(&args.replay, None).map_err(Failure::input)?;
    print!("{report}");
    Ok(EXIT_OK)
}
