//! The data path: connector → book sync → market state, published as immutable snapshots.
//!
//! One task owns every book, candle series and COB engine (no locks); the screen and the
//! headless printer read `Arc<MarketSnapshot>`s from a `watch` channel. The feed can be stopped
//! and started again by command; candles and ticks survive a restart, books resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::analysis::input::{BaseDataInput, InputConfig, SymbolAnalysis};
use crate::analysis::model_output::ModelOutputStore;
use crate::analysis::pivots::{PivotConfig, batch_pivots};
use crate::config::Config;
use crate::feeds::binance::connector::{
    self, ConnectorConfig, FeedCommand, FeedEvent, TradeCursor,
};
use crate::feeds::binance::sync::{BookSync, Rules, SyncConfig, SyncOutcome, SyncState};
use crate::feeds::binance::wire::BinanceEvent;
use crate::feeds::fallback::{
    FallbackConfig, FallbackController, SecondaryHealth, Source, TradeMerger,
};
use crate::feeds::health::{LinkState, StreamHealth};
use crate::feeds::normalized::{ConnectionState, NormEvent, Venue};
use crate::feeds::runner::{RunnerEvent, RunnerHandle};
use crate::logging::now_ms;
use crate::market::book::OrderBook;
use crate::market::cob::HeatmapRow;
use crate::market::instrument::Instrument;
use crate::market::snapshot::{BookCounters, BookStatus, MarketSnapshot, SeriesPivots, SymbolView};
use crate::market::state::{SymbolMarket, SymbolMarketConfig};
use crate::market::types::{Candle, Timeframe, Trade};

use super::venues::{VenueLinks, VenueRunners};

/// Levels per side copied into each snapshot.
const SNAPSHOT_LEVELS: usize = 20;
/// Candles per timeframe copied into each snapshot by default (a wide chart's worth).
pub const SNAPSHOT_CANDLES: usize = 300;
/// COB heatmap rows copied into each snapshot (wider than any heatmap pane is tall or wide).
pub const SNAPSHOT_HEATMAP_ROWS: usize = 240;
/// Snapshot publication period (the screen redraws at most this often from data).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Where the exchange is.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Name for the screen (`sim 127.0.0.1:9443`, `binance`).
    pub name: String,
    /// REST base URL.
    pub rest: String,
    /// Websocket base URL.
    pub ws: String,
}

impl Endpoints {
    /// A running simulator's REST and websocket endpoints, shown as `name`.
    pub fn of_sim(sim: &crate::sim::SimHandle, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rest: sim.rest_url(),
            ws: sim.ws_url(),
        }
    }
}

/// One symbol's feed-side state.
struct SymbolFeed {
    display: String,
    exchange: String,
    sync: BookSync,
    /// Counters of books discarded by reconnects (the live `BookSync` starts from zero).
    carried: BookCounters,
    snapshot_pending: bool,
    health: StreamHealth,
    market: SymbolMarket,
    instrument: Option<Instrument>,
    seen_data: bool,
    /// A REST recovery of missed trades is in flight.
    recovering_trades: bool,
    /// Highest primary-exchange trade id applied or held (trade recovery works by these ids).
    last_primary_id: Option<u64>,
}

impl SymbolFeed {
    fn counters(&self) -> BookCounters {
        let s = self.sync.stats();
        BookCounters {
            applied: self.carried.applied + s.applied,
            dropped: self.carried.dropped + s.dropped,
            gaps: self.carried.gaps + s.gaps,
            resyncs: self.carried.resyncs + s.resyncs,
        }
    }

    /// Drops the book after a lost connection: the diff chain is broken by definition.
    fn reset_book(&mut self, sync_cfg: SyncConfig) {
        let had_book = self.sync.state() == SyncState::Synced || self.sync.buffered_len() > 0;
        let s = self.sync.stats();
        self.carried.applied += s.applied;
        self.carried.dropped += s.dropped;
        self.carried.gaps += s.gaps;
        self.carried.resyncs += s.resyncs + u64::from(had_book);
        self.sync = BookSync::new(self.exchange.clone(), Rules::Spot, sync_cfg);
        self.snapshot_pending = false;
        self.recovering_trades = false;
    }

    fn status(&self) -> BookStatus {
        match (self.sync.state(), self.seen_data) {
            (SyncState::Synced, _) => BookStatus::Live,
            (_, true) => BookStatus::Syncing,
            (_, false) => BookStatus::Idle,
        }
    }
}

/// Receives each symbol's model input once a second (the orchestrator's `submit`).
pub type InputSink = Box<dyn FnMut(BaseDataInput) + Send>;

/// Builds every symbol's [`BaseDataInput`] at the end of each second, from the same market
/// state the screen shows, and hands it on; the analysis state is incremental, so this costs
/// well under a millisecond per second for two symbols.
pub struct InputTap {
    analyses: Vec<SymbolAnalysis>,
    /// Index of the reference symbol among the followed ones (None: each is its own).
    reference: Option<usize>,
    /// Model outputs are added by the orchestrator, which owns them; this stays empty.
    outputs: ModelOutputStore,
    sink: InputSink,
}

impl InputTap {
    /// A tap for the configured symbols.
    pub fn new(cfg: &Config, input: InputConfig, sink: InputSink) -> Self {
        let reference = cfg
            .symbols
            .iter()
            .position(|s| s.exchange == cfg.reference_symbol.exchange);
        let input = InputConfig {
            reference_symbol: cfg.reference_symbol.exchange.clone(),
            ..input
        };
        Self {
            analyses: cfg
                .symbols
                .iter()
                .map(|s| SymbolAnalysis::new(s.exchange.clone(), input.clone()))
                .collect(),
            reference,
            outputs: ModelOutputStore::default(),
            sink,
        }
    }

    fn on_second(&mut self, symbols: &[SymbolFeed], now: i64) {
        for (i, (analysis, s)) in self.analyses.iter_mut().zip(symbols).enumerate() {
            if !s.seen_data {
                continue;
            }
            let reference = &symbols[self.reference.unwrap_or(i)].market;
            let input = analysis.build(&s.market, reference, &self.outputs, now);
            (self.sink)(input);
        }
    }
}

/// The secondary exchange's side of the market task (see [`crate::feeds::fallback`]).
struct FallbackState {
    cfg: FallbackConfig,
    controller: FallbackController,
    /// Per symbol (same order as `symbols`).
    mergers: Vec<TradeMerger>,
    books: Vec<Option<Arc<OrderBook>>>,
    /// Canonical instrument id → symbol index.
    instruments: HashMap<String, usize>,
    health: StreamHealth,
}

/// Everything the market task owns; survives stop/start of the feed.
pub struct MarketTaskState {
    fallback: Option<FallbackState>,
    symbols: Vec<SymbolFeed>,
    index: HashMap<String, usize>,
    link: StreamHealth,
    sync_cfg: SyncConfig,
    backfill_frames: usize,
    source_name: String,
    snapshot_candles: usize,
    inputs: Option<InputTap>,
    /// The followed cross-exchange venues and the aggregated COB.
    venues: VenueLinks,
}

impl MarketTaskState {
    /// Fresh state for the configured symbols.
    pub fn new(cfg: &Config, source_name: &str) -> Self {
        let stale_ms = cfg.data.stale_after_secs as i64 * 1000;
        let sync_cfg = SyncConfig {
            max_buffered: cfg.buffers.depth_buffer,
        };
        let symbols: Vec<SymbolFeed> = cfg
            .symbols
            .iter()
            .map(|s| SymbolFeed {
                display: s.display.clone(),
                exchange: s.exchange.clone(),
                sync: BookSync::new(s.exchange.clone(), Rules::Spot, sync_cfg),
                carried: BookCounters::default(),
                snapshot_pending: false,
                health: StreamHealth::new(format!("{} depth", s.exchange), stale_ms),
                market: SymbolMarket::new(SymbolMarketConfig {
                    bucket_size: s.bucket_size,
                    large_trade_notional: cfg.data.large_trade_notional,
                    candles_kept: cfg.data.candles_kept,
                    tick_capacity: cfg.data.tick_buffer_capacity,
                    tick_max_age_ms: cfg.data.tick_buffer_secs as i64 * 1000,
                }),
                instrument: None,
                seen_data: false,
                recovering_trades: false,
                last_primary_id: None,
            })
            .collect();
        let fb = &cfg.exchanges.fallback;
        let fallback = fb.enabled.then(|| FallbackState {
            cfg: fb.clone(),
            controller: FallbackController::new(fb.clone()),
            mergers: symbols.iter().map(|_| TradeMerger::new(fb)).collect(),
            books: vec![None; symbols.len()],
            instruments: cfg
                .symbols
                .iter()
                .enumerate()
                .map(|(i, s)| (crate::feeds::normalized::canonical(&s.base, &s.quote), i))
                .collect(),
            health: StreamHealth::new(format!("{} ws (fallback)", fb.exchange), stale_ms),
        });
        let index = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.exchange.clone(), i))
            .collect();
        Self {
            fallback,
            symbols,
            index,
            link: StreamHealth::new("exchange ws", stale_ms),
            sync_cfg,
            backfill_frames: cfg.data.backfill_frames,
            source_name: source_name.to_string(),
            snapshot_candles: SNAPSHOT_CANDLES,
            inputs: None,
            venues: VenueLinks::new(cfg),
        }
    }

    /// The market state of one symbol (for models and tests).
    pub fn market(&self, exchange_symbol: &str) -> Option<&SymbolMarket> {
        self.index
            .get(exchange_symbol)
            .map(|&i| &self.symbols[i].market)
    }

    /// An immutable view of everything.
    pub fn snapshot(&self, now: i64, running: bool) -> MarketSnapshot {
        let mut link = self.link.clone();
        link.roll(now);
        if !running {
            link.state = LinkState::Stopped;
        }
        let symbols = self
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let book = self.active_book(i);
                let candles: Vec<(Timeframe, Vec<Candle>)> = Timeframe::ALL
                    .iter()
                    .map(|&tf| {
                        let series = s.market.candles().series(tf);
                        (tf, series.last_n(self.snapshot_candles).cloned().collect())
                    })
                    .collect();
                let pivots = candles
                    .iter()
                    .map(|(tf, c)| (*tf, known_pivots(c, *tf, now)))
                    .collect();
                SymbolView {
                    display: s.display.clone(),
                    exchange: s.exchange.clone(),
                    status: match (running, self.active_source()) {
                        (false, _) => BookStatus::Idle,
                        // On the fallback the shown book is the secondary's.
                        (true, Source::Secondary) if book.is_some() => BookStatus::Live,
                        (true, _) => s.status(),
                    },
                    best_bid: book.and_then(|b| b.best_bid()),
                    best_ask: book.and_then(|b| b.best_ask()),
                    bids: book
                        .map(|b| b.top(crate::market::types::Side::Buy, SNAPSHOT_LEVELS))
                        .unwrap_or_default(),
                    asks: book
                        .map(|b| b.top(crate::market::types::Side::Sell, SNAPSHOT_LEVELS))
                        .unwrap_or_default(),
                    bid_levels: book
                        .map(|b| b.depth(crate::market::types::Side::Buy))
                        .unwrap_or(0),
                    ask_levels: book
                        .map(|b| b.depth(crate::market::types::Side::Sell))
                        .unwrap_or(0),
                    last_trade: s.market.last_trade().cloned(),
                    trades: s.market.trades(),
                    book: s.counters(),
                    candles,
                    pivots,
                    heatmap: Arc::new(heatmap_tail(&s.market, SNAPSHOT_HEATMAP_ROWS)),
                    cob: s.market.last_cob().cloned(),
                    instrument: s.instrument.clone().map(Arc::new),
                    agg_cob: self.venues.aggregated(i),
                }
            })
            .collect();
        let mut links = vec![link];
        if let Some(fb) = &self.fallback {
            let mut h = fb.health.clone();
            h.roll(now);
            links.push(h);
        }
        links.extend(self.symbols.iter().map(|s| {
            let mut h = s.health.clone();
            h.roll(now);
            h.resyncs = s.counters().resyncs;
            if !running {
                h.state = LinkState::Stopped;
            }
            h
        }));
        let source = match &self.fallback {
            Some(fb) if fb.controller.active() == Source::Secondary => format!(
                "{} (down) → {} fallback, {} switches",
                self.source_name,
                fb.cfg.exchange,
                fb.controller.switches()
            ),
            Some(fb) if let Some(why) = fb.controller.held() => {
                format!("{} ({why})", self.source_name)
            }
            _ => self.source_name.clone(),
        };
        MarketSnapshot {
            time_ms: now,
            source,
            feed_running: running,
            links,
            symbols,
            venues: self.venues.views(now, running),
        }
    }

    /// Applies one connector event; returns requests for the connector.
    pub fn on_event(&mut self, ev: FeedEvent, now: i64, out: &mut Vec<FeedCommand>) {
        match ev {
            FeedEvent::Connected { connects } => {
                self.link.state = LinkState::Connected;
                self.link.connects = connects;
                self.link.on_message(now);
                tracing::info!(connects, "market-data websocket connected");
                for s in &mut self.symbols {
                    s.reset_book(self.sync_cfg);
                    s.health.state = LinkState::Connected;
                    s.health.connects = connects;
                    // Trades missed while disconnected, by id, so candles stay exact.
                    if let Some(last) = s.last_primary_id {
                        s.recovering_trades = true;
                        out.push(FeedCommand::RecoverTrades {
                            symbol: s.exchange.clone(),
                            from: TradeCursor::Id(last + 1),
                        });
                    }
                    // Initial history, or the candles missed while disconnected.
                    for tf in Timeframe::ALL {
                        let wanted = now - tf.millis() * (self.backfill_frames as i64 - 1);
                        let series = s.market.candles().series(tf);
                        let from = match series.candles().last() {
                            Some(c) if series.candles().len() >= self.backfill_frames => {
                                c.open_time_ms
                            }
                            // Short of the history (the feed stopped before the first backfill
                            // arrived, and live trades made a candle or two): all of it again.
                            Some(c) => wanted.min(c.open_time_ms),
                            None => wanted,
                        };
                        out.push(FeedCommand::Backfill {
                            symbol: s.exchange.clone(),
                            timeframe: tf,
                            from_ms: from,
                        });
                    }
                }
            }
            FeedEvent::Disconnected { reason, retry_in } => {
                self.link.state = LinkState::Reconnecting;
                self.link.errors += 1;
                tracing::warn!(%reason, retry_ms = retry_in.as_millis() as u64, "feed disconnected; books will resync");
                for s in &mut self.symbols {
                    s.health.state = LinkState::Reconnecting;
                }
            }
            FeedEvent::Market(m) => {
                self.link.on_message(now);
                self.on_market(m, now, out);
            }
            FeedEvent::Malformed { kind, log } => {
                self.link.on_message(now);
                self.link.errors += 1;
                if let Some(detail) = log {
                    tracing::warn!(kind, %detail, "malformed frame skipped");
                }
            }
            FeedEvent::Snapshot { symbol, snapshot } => {
                let Some(&i) = self.index.get(&symbol) else {
                    return;
                };
                let s = &mut self.symbols[i];
                s.snapshot_pending = false;
                match s.sync.on_snapshot(snapshot) {
                    SyncOutcome::Synced { applied, dropped } => {
                        tracing::info!(symbol = %s.exchange, applied, dropped, "book synced");
                    }
                    SyncOutcome::FetchSnapshot(reason) => {
                        tracing::warn!(symbol = %s.exchange, ?reason, "snapshot unusable; fetching again");
                        s.snapshot_pending = true;
                        out.push(FeedCommand::FetchSnapshot(s.exchange.clone()));
                    }
                    _ => {}
                }
            }
            FeedEvent::History {
                symbol,
                timeframe,
                candles,
            } => {
                let Some(&i) = self.index.get(&symbol) else {
                    return;
                };
                let stats = self.symbols[i].market.on_history(timeframe, &candles);
                if !stats.invalid.is_empty() {
                    tracing::warn!(%symbol, %timeframe, invalid = stats.invalid.len(), "invalid klines skipped");
                }
            }
            FeedEvent::RecoveredTrades {
                symbol,
                trades,
                complete,
            } => {
                let Some(&i) = self.index.get(&symbol) else {
                    return;
                };
                for t in trades.iter().cloned() {
                    self.primary_trade(i, t);
                }
                if complete {
                    self.symbols[i].recovering_trades = false;
                }
                tracing::info!(%symbol, count = trades.len(), complete, "missed trades recovered");
            }
            FeedEvent::Instruments(list) => {
                for inst in list {
                    if let Some(&i) = self.index.get(&inst.symbol) {
                        self.symbols[i].instrument = Some(inst);
                    }
                }
                for s in &self.symbols {
                    if s.instrument.is_none() {
                        tracing::warn!(symbol = %s.exchange, "symbol not listed by the exchange");
                    }
                }
            }
            FeedEvent::RestFailed { what, error } => {
                self.link.errors += 1;
                tracing::warn!(%what, %error, "REST request failed; retrying");
            }
        }
    }

    fn on_market(&mut self, m: BinanceEvent, now: i64, out: &mut Vec<FeedCommand>) {
        match m {
            BinanceEvent::Depth(d) => {
                let Some(&i) = self.index.get(&d.symbol) else {
                    return;
                };
                let s = &mut self.symbols[i];
                s.seen_data = true;
                s.health.on_message(now);
                let outcome = s.sync.on_diff(&d);
                match outcome {
                    SyncOutcome::Buffered if !s.snapshot_pending => {
                        s.snapshot_pending = true;
                        out.push(FeedCommand::FetchSnapshot(s.exchange.clone()));
                    }
                    SyncOutcome::FetchSnapshot(reason) => {
                        tracing::warn!(symbol = %s.exchange, ?reason, "book out of sync; resyncing");
                        if !s.snapshot_pending {
                            s.snapshot_pending = true;
                            out.push(FeedCommand::FetchSnapshot(s.exchange.clone()));
                        }
                    }
                    _ => {}
                }
            }
            BinanceEvent::AggTrade(t) => {
                let Some(&i) = self.index.get(&t.symbol) else {
                    return;
                };
                let s = &mut self.symbols[i];
                let recover_from = match s.last_primary_id {
                    // The first trade: fetch the rest of its minute, so the candle in progress
                    // at start-up is complete rather than built from a few seconds of trades.
                    None => Some(TradeCursor::Time(Timeframe::M1.floor(t.time_ms))),
                    // Aggregate trade ids are consecutive per symbol: a jump means trades were
                    // missed without a disconnect (a stalled stream); fetch them by id.
                    Some(last) if t.id > last + 1 => {
                        tracing::warn!(symbol = %t.symbol, missed = t.id - last - 1, "aggTrade id gap; recovering");
                        Some(TradeCursor::Id(last + 1))
                    }
                    Some(_) => None,
                };
                if let Some(from) = recover_from
                    && !s.recovering_trades
                {
                    s.recovering_trades = true;
                    out.push(FeedCommand::RecoverTrades {
                        symbol: s.exchange.clone(),
                        from,
                    });
                }
                self.primary_trade(i, t);
            }
            BinanceEvent::Trade(t) => {
                let Some(&i) = self.index.get(&t.symbol) else {
                    return;
                };
                self.primary_trade(i, t);
            }
            BinanceEvent::Shutdown { .. } => {
                tracing::info!("exchange announced a server shutdown; expecting a reconnect");
            }
            BinanceEvent::Error(e) => {
                tracing::warn!(code = e.code, msg = %e.msg, "exchange error reply");
            }
            BinanceEvent::Ticker(_)
            | BinanceEvent::BookTicker(_)
            | BinanceEvent::Kline(_)
            | BinanceEvent::PartialDepth { .. }
            | BinanceEvent::Ack(_) => {}
        }
    }

    /// The book market data uses for a symbol: the primary's, or the secondary's while the
    /// fallback is active.
    fn active_book(&self, i: usize) -> Option<&OrderBook> {
        active_book_of(self.fallback.as_ref(), &self.symbols, i)
    }

    /// A primary-exchange trade, through the fallback merger when there is one.
    fn primary_trade(&mut self, i: usize, t: Trade) {
        let s = &mut self.symbols[i];
        s.last_primary_id = Some(s.last_primary_id.map_or(t.id, |l| l.max(t.id)));
        match self.fallback.as_mut() {
            Some(fb) => {
                let mut out = Vec::new();
                fb.mergers[i].on_trade(Source::Primary, t, &mut out);
                self.apply_trades(i, out);
            }
            None => self.apply_trades(i, vec![(Source::Primary, t)]),
        }
    }

    fn apply_trades(&mut self, i: usize, trades: Vec<(Source, Trade)>) {
        let s = &mut self.symbols[i];
        for (source, t) in &trades {
            if let Err(e) = s.market.on_feed_trade(*source as u8, t) {
                tracing::warn!(symbol = %s.exchange, error = %e, "trade rejected");
            }
        }
    }

    /// Applies one event of the secondary (fallback) exchange's runner.
    pub fn on_fallback_event(&mut self, ev: RunnerEvent, now: i64) {
        let Some(fb) = self.fallback.as_mut() else {
            return;
        };
        match ev {
            RunnerEvent::Event(NormEvent::Trade(mut t)) => {
                fb.health.on_message(now);
                let Some(&i) = fb.instruments.get(&t.symbol) else {
                    return;
                };
                t.symbol = self.symbols[i].exchange.clone();
                let mut out = Vec::new();
                fb.mergers[i].on_trade(Source::Secondary, t, &mut out);
                self.apply_trades(i, out);
            }
            RunnerEvent::Book { instrument, book } => {
                fb.health.on_message(now);
                if let Some(&i) = fb.instruments.get(&instrument) {
                    fb.books[i] = Some(book);
                }
            }
            RunnerEvent::Event(NormEvent::Connection(c)) => match c {
                ConnectionState::Connected { connects } => {
                    fb.health.state = LinkState::Connected;
                    fb.health.connects = connects;
                    fb.health.on_message(now);
                }
                ConnectionState::Disconnected { reason, .. } => {
                    fb.health.state = LinkState::Reconnecting;
                    fb.health.errors += 1;
                    fb.books.iter_mut().for_each(|b| *b = None);
                    tracing::warn!(%reason, "fallback exchange disconnected");
                }
            },
            RunnerEvent::Event(NormEvent::Integrity { instrument, error }) => {
                fb.health.resyncs += 1;
                if let Some(&i) = fb.instruments.get(&instrument) {
                    fb.books[i] = None;
                }
                tracing::warn!(%instrument, %error, "fallback book resync");
            }
            RunnerEvent::Malformed { kind, detail } => {
                fb.health.errors += 1;
                tracing::debug!(kind, %detail, "fallback frame skipped");
            }
            RunnerEvent::Event(_) => fb.health.on_message(now),
        }
    }

    /// Decides the fallback switch from the primary link's health.
    fn check_fallback(&mut self, now: i64) {
        let Some(fb) = self.fallback.as_mut() else {
            return;
        };
        let connected = self.link.state == LinkState::Connected;
        fb.controller.on_secondary(SecondaryHealth {
            connected: fb.health.state == LinkState::Connected,
            books_synced: fb.books.iter().all(Option::is_some),
        });
        let was_held = fb.controller.held().map(str::to_string);
        let switch = fb
            .controller
            .on_primary(connected, self.link.last_message_ms, now);
        if let Some(why) = fb.controller.held()
            && was_held.as_deref() != Some(why)
        {
            tracing::warn!(reason = %why, exchange = %fb.cfg.exchange, "market-data fallback held back");
        }
        let Some(switch) = switch else {
            return;
        };
        tracing::warn!(to = ?switch.to, reason = %switch.reason, exchange = %fb.cfg.exchange, "market-data source switched");
        let mut batches = Vec::new();
        for (i, m) in fb.mergers.iter_mut().enumerate() {
            let mut out = Vec::new();
            m.switch_to(switch.to, now, &mut out);
            batches.push((i, out));
        }
        for (i, out) in batches {
            self.apply_trades(i, out);
        }
    }

    /// The active market-data source (Primary without a fallback).
    pub fn active_source(&self) -> Source {
        self.fallback
            .as_ref()
            .map_or(Source::Primary, |f| f.controller.active())
    }

    /// The once-a-second step for every symbol.
    pub fn on_second(&mut self, now: i64) {
        self.check_fallback(now);
        let secondary = self.active_source() == Source::Secondary;
        for (i, s) in self.symbols.iter_mut().enumerate() {
            let book = match &self.fallback {
                Some(fb) if secondary => fb.books[i].as_deref(),
                _ => s.sync.synced_book(),
            };
            s.health.roll(now);
            let _ = s.market.on_second(book, now);
        }
        self.link.roll(now);
        if let Some(tap) = self.inputs.as_mut() {
            tap.on_second(&self.symbols, now);
        }
        if let Some(fb) = self.fallback.as_mut() {
            fb.health.roll(now);
        }
        let (fallback, symbols) = (self.fallback.as_ref(), &self.symbols);
        let primary = if secondary {
            Venue::Mexc
        } else {
            Venue::Binance
        };
        self.venues
            .on_second(|i| (primary, active_book_of(fallback, symbols, i)), now);
    }

    /// Applies one event of a followed venue's runner (`k` indexes the followed venues).
    pub fn on_venue_event(&mut self, k: usize, ev: RunnerEvent, now: i64) {
        self.venues.on_event(k, ev, now);
    }
}

/// The book market data uses for symbol `i` (see [`MarketTaskState::active_book`]); a free
/// function so the venue aggregation can read it while it updates its own state.
fn active_book_of<'a>(
    fallback: Option<&'a FallbackState>,
    symbols: &'a [SymbolFeed],
    i: usize,
) -> Option<&'a OrderBook> {
    match fallback {
        Some(fb) if fb.controller.active() == Source::Secondary => fb.books[i].as_deref(),
        _ => symbols[i].sync.synced_book(),
    }
}

/// Williams pivots of `candles` known at `now` (the forming candle cannot confirm a pivot).
fn known_pivots(candles: &[Candle], tf: Timeframe, now: i64) -> SeriesPivots {
    let mut levels = batch_pivots(candles, PivotConfig::for_timeframe(tf));
    for level in &mut levels {
        level.retain(|p| p.known_ms <= now);
    }
    SeriesPivots { levels }
}

/// The newest `n` heatmap rows of a symbol, oldest first.
fn heatmap_tail(market: &SymbolMarket, n: usize) -> Vec<HeatmapRow> {
    market
        .cob_engine()
        .map(|e| {
            let rows = e.heatmap();
            rows.rows()
                .skip(rows.len().saturating_sub(n))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Prints normalized events and health (the headless `feed` command).
pub type EventPrinter = Box<dyn FnMut(&FeedEvent) + Send>;

/// Prints the followed venues' normalized events (the headless `feed` command).
pub type VenuePrinter = Box<dyn FnMut(Venue, &NormEvent) + Send>;

/// The feed process: connector plus market task, stoppable and restartable.
pub struct FeedProcess {
    cfg: Config,
    endpoints: Endpoints,
    publish: watch::Sender<Arc<MarketSnapshot>>,
    state: Option<MarketTaskState>,
    running: Option<(oneshot::Sender<()>, JoinHandle<MarketTaskState>)>,
    printer: Option<EventPrinter>,
    venue_printer: Option<VenuePrinter>,
}

impl FeedProcess {
    /// A stopped feed; snapshots go to the returned receiver.
    pub fn new(cfg: Config, endpoints: Endpoints) -> (Self, watch::Receiver<Arc<MarketSnapshot>>) {
        let state = MarketTaskState::new(&cfg, &endpoints.name);
        let (tx, rx) = watch::channel(Arc::new(state.snapshot(now_ms(), false)));
        (
            Self {
                cfg,
                endpoints,
                publish: tx,
                state: Some(state),
                running: None,
                printer: None,
                venue_printer: None,
            },
            rx,
        )
    }

    /// Candles per timeframe in each published snapshot (default [`SNAPSHOT_CANDLES`]).
    pub fn set_snapshot_candles(&mut self, n: usize) {
        if let Some(state) = self.state.as_mut() {
            state.snapshot_candles = n;
        }
    }

    /// Builds model inputs each second and hands them to the tap's sink.
    pub fn set_input_tap(&mut self, tap: InputTap) {
        if let Some(state) = self.state.as_mut() {
            state.inputs = Some(tap);
        }
    }

    /// Prints every event through `printer` (headless use).
    pub fn set_printer(&mut self, printer: EventPrinter) {
        self.printer = Some(printer);
    }

    /// Prints every followed venue's normalized event through `printer` (headless use).
    pub fn set_venue_printer(&mut self, printer: VenuePrinter) {
        self.venue_printer = Some(printer);
    }

    /// True while running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts the connector and the market task.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let Some(state) = self.state.take() else {
            anyhow::bail!("feed state lost after a failed stop");
        };
        let (ev_tx, ev_rx) = mpsc::channel(self.cfg.buffers.event_channel);
        let connector = if self.cfg.data.source == crate::config::DataSource::Redis {
            crate::collector::consumer::spawn(
                crate::collector::consumer::ConsumerConfig {
                    url: self.cfg.data.redis_url.clone(),
                    key_prefix: self.cfg.collector.key_prefix.clone(),
                    exchange: self.cfg.data.redis_exchange.clone(),
                    symbols: self
                        .cfg
                        .symbols
                        .iter()
                        .map(|s| s.exchange.clone())
                        .collect(),
                    connect_timeout: Duration::from_millis(self.cfg.collector.connect_timeout_ms),
                },
                ev_tx,
            )
        } else {
            connector::spawn(
                ConnectorConfig {
                    rest_url: self.endpoints.rest.clone(),
                    ws_url: self.endpoints.ws.clone(),
                    symbols: self
                        .cfg
                        .symbols
                        .iter()
                        .map(|s| s.exchange.clone())
                        .collect(),
                    reconnect: self.cfg.reconnect.clone(),
                    buffers: self.cfg.buffers.clone(),
                    idle_timeout: Duration::from_secs(60),
                    weight_limit_1m: 6000,
                },
                ev_tx,
            )?
        };
        let fallback = if self.cfg.exchanges.fallback.enabled {
            Some(spawn_fallback(&self.cfg))
        } else {
            None
        };
        let venues = super::venues::spawn(&self.cfg).map(|r| (r, self.venue_printer.take()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(market_task(
            state,
            connector,
            fallback,
            venues,
            ev_rx,
            stop_rx,
            self.publish.clone(),
            self.printer.take(),
        ));
        self.running = Some((stop_tx, task));
        tracing::info!(source = %self.endpoints.name, "feed started");
        Ok(())
    }

    /// Stops the feed; market state is kept for the next start.
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            match task.await {
                Ok(state) => {
                    let _ = self.publish.send(Arc::new(state.snapshot(now_ms(), false)));
                    self.state = Some(state);
                }
                Err(e) => {
                    tracing::error!(error = %e, "feed task failed; starting from empty state");
                    self.state = Some(MarketTaskState::new(&self.cfg, &self.endpoints.name));
                }
            }
            tracing::info!("feed stopped");
        }
    }
}

/// Starts the secondary exchange's runner for the configured symbols.
fn spawn_fallback(cfg: &Config) -> (RunnerHandle, mpsc::Receiver<RunnerEvent>) {
    let fb = &cfg.exchanges.fallback;
    let instruments = cfg
        .symbols
        .iter()
        .map(|s| crate::feeds::normalized::canonical(&s.base, &s.quote))
        .collect();
    let session = crate::feeds::venue::VenueSession::new(
        Box::new(crate::feeds::mexc::MexcProtocol::default()),
        instruments,
    );
    let (tx, rx) = mpsc::channel(cfg.buffers.event_channel);
    let handle = crate::feeds::runner::spawn_runner(
        session,
        super::venues::runner_config(cfg, &fb.ws, &fb.rest, fb.stale_after_ms),
        tx,
    );
    (handle, rx)
}

#[allow(clippy::too_many_arguments)]
async fn market_task(
    mut state: MarketTaskState,
    connector: connector::ConnectorHandle,
    fallback: Option<(RunnerHandle, mpsc::Receiver<RunnerEvent>)>,
    venues: Option<(VenueRunners, Option<VenuePrinter>)>,
    mut events: mpsc::Receiver<FeedEvent>,
    mut stop: oneshot::Receiver<()>,
    publish: watch::Sender<Arc<MarketSnapshot>>,
    mut printer: Option<EventPrinter>,
) -> MarketTaskState {
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut publish_tick = tokio::time::interval(PUBLISH_EVERY);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut commands = Vec::new();
    for s in &mut state.symbols {
        s.health.state = LinkState::Connecting;
    }
    state.link.state = LinkState::Connecting;
    let (fallback_runner, mut fallback_events) = match fallback {
        Some((h, rx)) => (Some(h), Some(rx)),
        None => (None, None),
    };
    let (mut venue_runners, mut venue_printer) = match venues {
        Some((r, p)) => (Some(r), p),
        None => (None, None),
    };
    let venue_names = state.venues.venues();
    loop {
        tokio::select! {
            Some((k, ev)) = async {
                match venue_runners.as_mut() {
                    Some(r) => r.events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let (Some(p), RunnerEvent::Event(e), Some(&v)) = (venue_printer.as_mut(), &ev, venue_names.get(k)) {
                    p(v, e);
                }
                state.on_venue_event(k, ev, now_ms());
            }
            Some(ev) = async {
                match fallback_events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => state.on_fallback_event(ev, now_ms()),
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if let Some(p) = printer.as_mut() {
                    p(&ev);
                }
                state.on_event(ev, now_ms(), &mut commands);
                for cmd in commands.drain(..) {
                    connector.send(cmd);
                }
            }
            _ = second.tick() => state.on_second(now_ms()),
            _ = publish_tick.tick() => {
                let _ = publish.send(Arc::new(state.snapshot(now_ms(), true)));
            }
            _ = &mut stop => break,
        }
    }
    connector.stop().await;
    if let Some(r) = fallback_runner {
        r.stop().await;
    }
    if let Some(r) = venue_runners {
        r.stop().await;
    }
    state.venues.on_stopped();
    for s in &mut state.symbols {
        s.reset_book(state.sync_cfg);
        s.health.state = LinkState::Stopped;
        s.seen_data = false;
    }
    state.link.state = LinkState::Stopped;
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::pivots::PivotKind;
    use crate::market::book::OrderBook;
    use crate::market::types::{Level, Price, Qty};

    fn candle(i: i64, high: i64, low: i64) -> Candle {
        Candle {
            open_time_ms: i * 60_000,
            open: Price::from_units(low),
            high: Price::from_units(high),
            low: Price::from_units(low),
            close: Price::from_units(high),
            volume: Qty::from_units(1),
            trades: 1,
        }
    }

    #[test]
    fn pivots_appear_only_once_confirmed() {
        // A level-1 high at candle 2, confirmed when candle 4 closes (two bars per side).
        let highs = [10, 11, 15, 12, 11, 10];
        let candles: Vec<Candle> = highs
            .iter()
            .enumerate()
            .map(|(i, &h)| candle(i as i64, h, h - 5))
            .collect();
        let confirm = 5 * 60_000;
        let before = known_pivots(&candles, Timeframe::M1, confirm - 1);
        assert!(before.latest(1, PivotKind::High).is_none());
        let after = known_pivots(&candles, Timeframe::M1, confirm);
        let p = after.latest(1, PivotKind::High).unwrap();
        assert_eq!((p.price, p.time_ms), (Price::from_units(15), 2 * 60_000));
    }

    #[test]
    fn a_reconnect_backfills_the_whole_history_when_the_first_backfill_never_arrived() {
        use crate::market::types::{Side, Trade};
        let cfg = Config::default();
        let mut state = MarketTaskState::new(&cfg, "test");
        let t0 = 1_700_000_000_000;
        // Live trades made a 1 m candle, but no backfill was ever applied.
        let trade = Trade {
            symbol: state.symbols[0].exchange.clone(),
            id: 1,
            price: Price::from_units(100),
            qty: Qty::from_units(1),
            time_ms: t0,
            taker_side: Side::Buy,
        };
        state.symbols[0].market.on_trade(&trade).unwrap();
        let mut out = Vec::new();
        state.on_event(FeedEvent::Connected { connects: 2 }, t0 + 1_000, &mut out);
        let from_1m = out.iter().find_map(|c| match c {
            FeedCommand::Backfill {
                symbol,
                timeframe: Timeframe::M1,
                from_ms,
            } if *symbol == state.symbols[0].exchange => Some(*from_ms),
            _ => None,
        });
        let frames = cfg.data.backfill_frames as i64;
        assert_eq!(from_1m, Some(t0 + 1_000 - 60_000 * (frames - 1)));
    }

    /// The desk's side of the no-hole rule at a fallback switch: the first live trade came at
    /// +229 ms, the REST recovery of the earlier ones was still in flight when Binance died and
    /// lands after the switch to MEXC. Those trades are Binance's own time (before the cut) and
    /// must complete the boundary second, next to MEXC's trades from the cut on.
    #[test]
    fn a_trade_recovery_in_flight_at_a_fallback_switch_still_completes_the_boundary_second() {
        use crate::market::types::{Side, Trade};
        let mut cfg = Config::default();
        cfg.exchanges.fallback.enabled = true;
        cfg.exchanges.fallback.stale_after_ms = 1_000;
        let mut state = MarketTaskState::new(&cfg, "test");
        let t0 = 1_700_000_000_000;
        let exchange = state.symbols[0].exchange.clone();
        let trade = |symbol: &str, id: u64, at: i64, units: i64| Trade {
            symbol: symbol.to_string(),
            id,
            price: Price::from_units(100 + units),
            qty: Qty::from_units(units),
            time_ms: t0 + at,
            taker_side: Side::Buy,
        };
        let mut out = Vec::new();
        state.on_event(FeedEvent::Connected { connects: 1 }, t0, &mut out);
        state.on_second(t0);
        out.clear();
        let live = BinanceEvent::AggTrade(trade(&exchange, 40, 229, 1));
        state.on_event(FeedEvent::Market(live), t0 + 230, &mut out);
        assert!(
            out.iter()
                .any(|c| matches!(c, FeedCommand::RecoverTrades { .. })),
            "the first live trade asks for the rest of its minute: {out:?}"
        );
        // MEXC is connected with every book synced, and prints from +250.
        let mut book = OrderBook::new();
        let level = |units| Level {
            price: Price::from_units(units),
            qty: Qty::from_units(1),
        };
        book.apply_snapshot(&[level(99)], &[level(101)], 1);
        let connected = ConnectionState::Connected { connects: 1 };
        state.on_fallback_event(RunnerEvent::Event(NormEvent::Connection(connected)), t0);
        let instruments: Vec<String> = state
            .fallback
            .as_ref()
            .unwrap()
            .instruments
            .keys()
            .cloned()
            .collect();
        for instrument in &instruments {
            let book = Arc::new(book.clone());
            state.on_fallback_event(
                RunnerEvent::Book {
                    instrument: instrument.clone(),
                    book,
                },
                t0,
            );
        }
        let eth = crate::feeds::normalized::canonical(&cfg.symbols[0].base, &cfg.symbols[0].quote);
        // Its id equals the Binance trade's: ids are unique per exchange only.
        let mexc = trade(&eth, 40, 250, 10);
        state.on_fallback_event(RunnerEvent::Event(NormEvent::Trade(mexc)), t0 + 260);
        let down = FeedEvent::Disconnected {
            reason: "closed by server".into(),
            retry_in: Duration::from_millis(100),
        };
        state.on_event(down, t0 + 300, &mut out);
        state.on_second(t0 + 2_000);
        assert_eq!(state.active_source(), Source::Secondary);
        // The recovery lands now, on MEXC.
        let recovered = FeedEvent::RecoveredTrades {
            symbol: exchange.clone(),
            trades: vec![
                trade(&exchange, 37, 6, 2),
                trade(&exchange, 38, 93, 3),
                trade(&exchange, 39, 188, 4),
            ],
            complete: true,
        };
        state.on_event(recovered, t0 + 2_100, &mut out);
        let market = &state.symbols[0].market;
        let second = market
            .candles()
            .series(Timeframe::S1)
            .candles()
            .find(|c| c.open_time_ms == t0)
            .unwrap()
            .clone();
        assert_eq!(
            (second.trades, second.volume),
            (5, Qty::from_units(1 + 2 + 3 + 4 + 10))
        );
        assert_eq!(
            (second.open, second.close),
            (Price::from_units(102), Price::from_units(110))
        );
    }

    #[test]
    fn input_tap_builds_each_live_symbols_input_with_the_reference_series() {
        use crate::market::types::{Side, Trade};
        use std::sync::{Arc, Mutex};
        let cfg = Config::default();
        let mut state = MarketTaskState::new(&cfg, "test");
        let got: Arc<Mutex<Vec<BaseDataInput>>> = Arc::default();
        let sink = Arc::clone(&got);
        state.inputs = Some(InputTap::new(
            &cfg,
            InputConfig::default(),
            Box::new(move |i| sink.lock().unwrap().push(i)),
        ));
        let t0 = 1_700_000_000_000;
        for (n, s) in state.symbols.iter_mut().enumerate() {
            for k in 0..5 {
                let trade = Trade {
                    symbol: s.exchange.clone(),
                    id: k,
                    price: Price::from_units(100 * (n as i64 + 1) + k as i64),
                    qty: Qty::from_units(1),
                    time_ms: t0 + k as i64 * 1000,
                    taker_side: Side::Buy,
                };
                s.market.on_trade(&trade).unwrap();
            }
        }
        // Nothing is built for symbols that have not seen data yet.
        state.on_second(t0 + 5_000);
        assert!(got.lock().unwrap().is_empty());
        state.symbols[0].seen_data = true;
        state.symbols[1].seen_data = true;
        state.on_second(t0 + 5_000);
        let inputs = got.lock().unwrap();
        assert_eq!(inputs.len(), 2);
        let eth = inputs.iter().find(|i| &*i.symbol == "ETHUSDT").unwrap();
        assert_eq!(eth.timestamp_ms, t0 + 5_000);
        assert_eq!(&*eth.reference_symbol, "BTCUSDT");
        // 1 s candles closed by t: the five seconds that traded; the reference is BTC's.
        assert_eq!(eth.ohlcv[0].len(), 5);
        assert_eq!(eth.reference_ohlcv_1s.len(), 5);
        assert_eq!(eth.reference_ohlcv_1s[0].open, Price::from_units(200));
        assert_eq!(eth.ohlcv[0][0].open, Price::from_units(100));
    }

    #[test]
    fn heatmap_tail_keeps_the_newest_rows_oldest_first() {
        let mut m = SymbolMarket::new(SymbolMarketConfig {
            bucket_size: Price::from_units(1),
            large_trade_notional: Price::from_units(10_000),
            candles_kept: 10,
            tick_capacity: 10,
            tick_max_age_ms: 10_000,
        });
        assert!(heatmap_tail(&m, 3).is_empty());
        let mut book = OrderBook::new();
        book.apply_snapshot(
            &[Level {
                price: Price::from_units(99),
                qty: Qty::from_units(2),
            }],
            &[Level {
                price: Price::from_units(101),
                qty: Qty::from_units(3),
            }],
            1,
        );
        for s in 1..=5 {
            m.on_second(Some(&book), s * 1000).unwrap();
        }
        let tail = heatmap_tail(&m, 3);
        let times: Vec<i64> = tail.iter().map(|r| r.time_ms).collect();
        assert_eq!(times, [3000, 4000, 5000]);
        assert_eq!(heatmap_tail(&m, 100).len(), 5);
    }
}
