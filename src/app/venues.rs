//! The cross-exchange venues the desk follows beside Binance (`[venues]`): one websocket runner
//! per venue for the configured symbols, the latest synced book per (venue, symbol), each
//! link's health, and the aggregated cross-exchange COB built from them once a second.
//!
//! Venue books never feed candles or trades of the desk (those stay Binance, or the MEXC
//! fallback): they only widen the COB. [`VenueLinks`] is pure logic owned by the market task;
//! [`spawn`] starts the runners and merges their events into one channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

use crate::collector::record::{BookTopRecord, MarketRecord, RecordBody};
use crate::config::Config;
use crate::feeds::aggregate::{AggregatedCob, Skipped, aggregate_cob};
use crate::feeds::health::{LinkState, StreamHealth};
use crate::feeds::normalized::{ConnectionState, NormEvent, Venue, canonical, canonical_currency};
use crate::feeds::runner::{RunnerConfig, RunnerEvent, RunnerHandle, spawn_runner};
use crate::feeds::venue::VenueSession;
use crate::market::book::OrderBook;
use crate::market::snapshot::{MarketSnapshot, VenueLinkView};
use crate::market::types::{Price, Timeframe, Trade};

/// `[venues]`: exchanges followed beside Binance for the aggregated cross-exchange COB.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VenuesConfig {
    /// Venues to follow, by name: coinbase, kraken, htx, bitfinex, kucoin, bybit, mexc.
    /// Empty (the default): none, so nothing beyond the data source is contacted.
    pub follow: Vec<String>,
    /// A venue link silent this long is stale and left out of the aggregate, ms.
    pub stale_after_ms: u64,
    /// Buckets on each side of the aggregate's center (the width is the symbol's bucket_size).
    pub half_buckets: usize,
    /// Per-venue overrides, keyed by venue name (`[venues.endpoints.kraken]`).
    pub endpoints: BTreeMap<String, VenueEndpoint>,
}

impl Default for VenuesConfig {
    fn default() -> Self {
        Self {
            follow: Vec::new(),
            stale_after_ms: 10_000,
            half_buckets: 20,
            endpoints: BTreeMap::new(),
        }
    }
}

/// `[venues.endpoints.NAME]`: where one venue is, and how it names our quote currencies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VenueEndpoint {
    /// Websocket URL (default: the venue's public endpoint).
    pub ws: Option<String>,
    /// REST base URL for book snapshots and connect tokens (default: the public one).
    pub rest: Option<String>,
    /// Our quote currency → the venue's, for venues that list another one (`{ USDT = "USD" }`).
    pub quotes: BTreeMap<String, String>,
}

/// The public websocket and REST endpoints of a venue (None for Binance, the primary).
pub fn default_urls(venue: Venue) -> Option<(&'static str, &'static str)> {
    Some(match venue {
        Venue::Binance => return None,
        Venue::Mexc => ("wss://wbs-api.mexc.com/ws", "https://api.mexc.com"),
        Venue::Coinbase => (
            "wss://advanced-trade-ws.coinbase.com",
            "https://api.coinbase.com",
        ),
        Venue::Kraken => ("wss://ws.kraken.com/v2", "https://api.kraken.com"),
        Venue::Htx => ("wss://api.huobi.pro/ws", "https://api.huobi.pro"),
        Venue::Bitfinex => (
            "wss://api-pub.bitfinex.com/ws/2",
            "https://api-pub.bitfinex.com",
        ),
        // The websocket URL comes from the connect-token request; this is its fallback.
        Venue::Kucoin => ("wss://ws-api-spot.kucoin.com", "https://api.kucoin.com"),
        Venue::Bybit => (
            "wss://stream.bybit.com/v5/public/spot",
            "https://api.bybit.com",
        ),
    })
}

const NAMES: &str = "coinbase, kraken, htx, bitfinex, kucoin, bybit or mexc";

fn parse_follow(name: &str) -> Option<Venue> {
    Venue::parse(name).filter(|v| *v != Venue::Binance)
}

impl VenuesConfig {
    /// Checks values serde cannot: returns the offending key and the expected form.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, name) in self.follow.iter().enumerate() {
            if parse_follow(name).is_none() {
                return Err((
                    format!("venues.follow[{i}]"),
                    format!("expected a venue name ({NAMES}), got {name:?}"),
                ));
            }
        }
        for (name, ep) in &self.endpoints {
            if parse_follow(name).is_none() {
                return Err((
                    format!("venues.endpoints.{name}"),
                    format!("expected a venue name ({NAMES}) as the table name"),
                ));
            }
            for (key, url, schemes) in [
                ("ws", &ep.ws, ["ws://", "wss://"]),
                ("rest", &ep.rest, ["http://", "https://"]),
            ] {
                if let Some(url) = url
                    && !schemes.iter().any(|s| url.starts_with(s))
                {
                    return Err((
                        format!("venues.endpoints.{name}.{key}"),
                        format!(
                            "expected a URL starting with {} or {}, got {url:?}",
                            schemes[0], schemes[1]
                        ),
                    ));
                }
            }
            for (ours, theirs) in &ep.quotes {
                if theirs.is_empty() || !theirs.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err((
                        format!("venues.endpoints.{name}.quotes.{ours}"),
                        format!("expected a currency code such as \"USD\", got {theirs:?}"),
                    ));
                }
            }
        }
        if self.stale_after_ms == 0 {
            return Err((
                "venues.stale_after_ms".into(),
                "expected a positive number of milliseconds".into(),
            ));
        }
        if self.half_buckets == 0 || self.half_buckets > 500 {
            return Err((
                "venues.half_buckets".into(),
                format!("expected 1 to 500 buckets, got {}", self.half_buckets),
            ));
        }
        Ok(())
    }

    /// The followed venues, in configured order, each once (names are validated on load).
    pub fn venues(&self) -> Vec<Venue> {
        let mut out: Vec<Venue> = Vec::new();
        for v in self.follow.iter().filter_map(|n| parse_follow(n)) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    fn endpoint(&self, venue: Venue) -> Option<&VenueEndpoint> {
        self.endpoints
            .iter()
            .find(|(name, _)| Venue::parse(name) == Some(venue))
            .map(|(_, e)| e)
    }

    /// The venue's websocket and REST URLs: the override, else the public endpoint.
    pub fn urls(&self, venue: Venue) -> (String, String) {
        let (ws, rest) = default_urls(venue).unwrap_or_default();
        let ep = self.endpoint(venue);
        (
            ep.and_then(|e| e.ws.clone()).unwrap_or_else(|| ws.into()),
            ep.and_then(|e| e.rest.clone())
                .unwrap_or_else(|| rest.into()),
        )
    }

    /// The venue's canonical instrument id for our `base`/`quote` (quote renamed as configured).
    pub fn instrument(&self, venue: Venue, base: &str, quote: &str) -> String {
        let quote = canonical_currency(quote);
        let theirs = self
            .endpoint(venue)
            .and_then(|e| {
                e.quotes
                    .iter()
                    .find(|(ours, _)| canonical_currency(ours) == quote)
            })
            .map_or(quote.clone(), |(_, t)| t.clone());
        canonical(base, &theirs)
    }
}

/// Settings of a market-data runner from the desk's reconnect policy.
pub fn runner_config(cfg: &Config, ws: &str, rest: &str, stale_after_ms: u64) -> RunnerConfig {
    RunnerConfig {
        ws_url: ws.to_string(),
        rest_url: rest.to_string(),
        initial_backoff_ms: cfg.reconnect.initial_backoff_ms,
        max_backoff_ms: cfg.reconnect.max_backoff_ms,
        jitter: cfg.reconnect.jitter,
        idle_timeout: Duration::from_secs(60),
        stale_after_ms: stale_after_ms as i64,
        seed: crate::logging::now_ms() as u64,
    }
}

/// Running venue runners and their merged events (tagged with the venue's index).
pub struct VenueRunners {
    handles: Vec<RunnerHandle>,
    /// Events of every runner, `(index in VenuesConfig::venues(), event)`.
    pub events: mpsc::Receiver<(usize, RunnerEvent)>,
}

impl VenueRunners {
    /// Stops every runner and waits for them.
    pub async fn stop(self) {
        for h in self.handles {
            h.stop().await;
        }
    }
}

/// Starts one runner per followed venue for the configured symbols (None when none is followed).
pub fn spawn(cfg: &Config) -> Option<VenueRunners> {
    let venues = cfg.venues.venues();
    if venues.is_empty() {
        return None;
    }
    let (tx, events) = mpsc::channel(cfg.buffers.event_channel);
    let mut handles = Vec::new();
    for (k, venue) in venues.into_iter().enumerate() {
        let Some(proto) = crate::feeds::protocol_for(venue) else {
            continue;
        };
        let instruments = cfg
            .symbols
            .iter()
            .map(|s| cfg.venues.instrument(venue, &s.base, &s.quote))
            .collect();
        let (ws, rest) = cfg.venues.urls(venue);
        let (runner_tx, mut runner_rx) = mpsc::channel(cfg.buffers.event_channel);
        let mut rc = runner_config(cfg, &ws, &rest, cfg.venues.stale_after_ms);
        rc.seed = rc.seed.wrapping_add(k as u64);
        handles.push(spawn_runner(
            VenueSession::new(proto, instruments),
            rc,
            runner_tx,
        ));
        let tx = tx.clone();
        // Ends when the runner stops (its sender drops) or the market task is gone.
        tokio::spawn(async move {
            while let Some(ev) = runner_rx.recv().await {
                if tx.send((k, ev)).await.is_err() {
                    break;
                }
            }
        });
        tracing::info!(%venue, %ws, "following venue");
    }
    Some(VenueRunners { handles, events })
}

/// One followed venue's side of the market task.
struct VenueLink {
    venue: Venue,
    health: StreamHealth,
    integrity: u64,
    trades: u64,
    /// Venue instrument id → symbol index.
    instruments: HashMap<String, usize>,
    /// The latest synced book per symbol (None until synced, and after a loss or resync).
    books: Vec<Option<Arc<OrderBook>>>,
}

impl VenueLink {
    /// Why this link's book of symbol `i` cannot be aggregated now, if it cannot.
    fn unusable(&self, i: usize, now: i64) -> Option<Skipped> {
        if self.health.state != LinkState::Connected {
            Some(Skipped::Down)
        } else if self.health.is_stale(now) {
            Some(Skipped::Stale)
        } else if self.books[i].is_none() {
            Some(Skipped::NoBook)
        } else {
            None
        }
    }
}

/// Every followed venue's books and health, and the latest aggregate per symbol. Pure logic.
pub struct VenueLinks {
    links: Vec<VenueLink>,
    half_buckets: usize,
    /// Desk symbol canonical ids and bucket widths, in configured order.
    symbols: Vec<(String, Price)>,
    aggregates: Vec<Option<Arc<AggregatedCob>>>,
}

impl VenueLinks {
    /// Links for the configured venues and symbols (none followed: an empty, inert set).
    pub fn new(cfg: &Config) -> Self {
        let v = &cfg.venues;
        let links = v
            .venues()
            .into_iter()
            .map(|venue| VenueLink {
                venue,
                health: StreamHealth::new(format!("{venue} ws"), v.stale_after_ms as i64),
                integrity: 0,
                trades: 0,
                instruments: cfg
                    .symbols
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (v.instrument(venue, &s.base, &s.quote), i))
                    .collect(),
                books: vec![None; cfg.symbols.len()],
            })
            .collect();
        Self {
            links,
            half_buckets: v.half_buckets,
            symbols: cfg
                .symbols
                .iter()
                .map(|s| (canonical(&s.base, &s.quote), s.bucket_size))
                .collect(),
            aggregates: vec![None; cfg.symbols.len()],
        }
    }

    /// The followed venues, indexed as the runners' events are.
    pub fn venues(&self) -> Vec<Venue> {
        self.links.iter().map(|l| l.venue).collect()
    }

    /// True when no venue is followed.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Applies one event of venue `k`'s runner.
    pub fn on_event(&mut self, k: usize, ev: RunnerEvent, now: i64) {
        let Some(link) = self.links.get_mut(k) else {
            return;
        };
        let venue = link.venue;
        match ev {
            RunnerEvent::Book { instrument, book } => {
                link.health.on_message(now);
                if let Some(&i) = link.instruments.get(&instrument) {
                    link.books[i] = Some(book);
                }
            }
            RunnerEvent::Event(NormEvent::Trade(_)) => {
                link.health.on_message(now);
                link.trades += 1;
            }
            RunnerEvent::Event(NormEvent::Connection(c)) => match c {
                ConnectionState::Connected { connects } => {
                    link.health.state = LinkState::Connected;
                    link.health.connects = connects;
                    link.health.on_message(now);
                    tracing::info!(%venue, connects, "venue connected");
                }
                ConnectionState::Disconnected {
                    reason,
                    retry_in_ms,
                } => {
                    link.health.state = LinkState::Reconnecting;
                    link.health.errors += 1;
                    // A broken connection breaks every book's chain: they resync on reconnect.
                    link.books.iter_mut().for_each(|b| *b = None);
                    tracing::warn!(%venue, %reason, retry_in_ms, "venue disconnected; left out of the aggregated COB");
                }
            },
            RunnerEvent::Event(NormEvent::Integrity { instrument, error }) => {
                link.health.on_message(now);
                link.health.resyncs += 1;
                link.integrity += 1;
                if let Some(&i) = link.instruments.get(&instrument) {
                    link.books[i] = None;
                }
                tracing::warn!(%venue, %instrument, %error, "venue book failed its integrity check; resyncing");
            }
            RunnerEvent::Malformed { kind, detail } => {
                link.health.on_message(now);
                link.health.errors += 1;
                tracing::debug!(%venue, kind, %detail, "venue frame skipped");
            }
            RunnerEvent::Event(_) => link.health.on_message(now),
        }
    }

    /// The aggregate of symbol `i` over the desk's `primary` book and every usable venue book;
    /// venues that cannot contribute are listed in `skipped` with the reason.
    pub fn aggregate(
        &self,
        i: usize,
        primary: (Venue, Option<&OrderBook>),
        now: i64,
    ) -> Option<AggregatedCob> {
        let (instrument, bucket) = self.symbols.get(i)?;
        let mut books: Vec<(Venue, &OrderBook)> = Vec::new();
        let mut skipped = Vec::new();
        match primary.1 {
            Some(b) => books.push((primary.0, b)),
            None => skipped.push((primary.0, Skipped::NoBook)),
        }
        // A venue that is also the active primary (MEXC on the fallback) counts once.
        for l in self.links.iter().filter(|l| l.venue != primary.0) {
            match (l.unusable(i, now), l.books[i].as_deref()) {
                (None, Some(b)) => books.push((l.venue, b)),
                (reason, _) => skipped.push((l.venue, reason.unwrap_or(Skipped::NoBook))),
            }
        }
        match aggregate_cob(instrument, &books, *bucket, self.half_buckets) {
            Ok(mut agg) => {
                skipped.append(&mut agg.skipped);
                agg.skipped = skipped;
                Some(agg)
            }
            Err(e) => {
                tracing::debug!(%instrument, error = %e, "no aggregated COB this second");
                None
            }
        }
    }

    /// Recomputes every symbol's aggregate; `primary(i)` is the desk's book of symbol `i`.
    pub fn on_second<'a>(
        &mut self,
        primary: impl Fn(usize) -> (Venue, Option<&'a OrderBook>),
        now: i64,
    ) {
        if self.is_empty() {
            return;
        }
        for l in &mut self.links {
            l.health.roll(now);
        }
        self.aggregates = (0..self.symbols.len())
            .map(|i| self.aggregate(i, primary(i), now).map(Arc::new))
            .collect();
    }

    /// The latest aggregate of symbol `i`.
    pub fn aggregated(&self, i: usize) -> Option<Arc<AggregatedCob>> {
        self.aggregates.get(i).cloned().flatten()
    }

    /// Each link as the screen sees it.
    pub fn views(&self, now: i64, running: bool) -> Vec<VenueLinkView> {
        self.links
            .iter()
            .map(|l| {
                let mut health = l.health.clone();
                health.roll(now);
                if !running {
                    health.state = LinkState::Stopped;
                }
                VenueLinkView {
                    venue: l.venue,
                    health,
                    integrity_failures: l.integrity,
                    books: l.books.iter().filter(|b| b.is_some()).count(),
                    instruments: l.books.len(),
                    trades: l.trades,
                }
            })
            .collect()
    }

    /// The runners stopped: links are stopped, books and aggregates dropped.
    pub fn on_stopped(&mut self) {
        for l in &mut self.links {
            l.health.state = LinkState::Stopped;
            l.books.iter_mut().for_each(|b| *b = None);
        }
        self.aggregates.iter_mut().for_each(|a| *a = None);
    }
}

/// Turns the followed venues' data into collector records (the `exchange` column is the
/// venue's name, the symbol the desk's, e.g. `ETHUSDT`): their trades as they arrive, and
/// each included venue's best bid and ask once a second from the aggregated COB's quotes.
#[derive(Debug, Clone)]
pub struct VenueRecorder {
    /// (venue, venue instrument id) → desk exchange symbol.
    symbols: HashMap<(Venue, String), String>,
    followed: Vec<Venue>,
    /// Last second recorded per (venue, desk symbol), so a second is stored once.
    last_top: HashMap<(Venue, String), i64>,
}

impl VenueRecorder {
    /// A recorder for the configured venues and symbols.
    pub fn new(cfg: &Config) -> Self {
        let followed = cfg.venues.venues();
        let symbols = followed
            .iter()
            .flat_map(|&v| {
                cfg.symbols.iter().map(move |s| {
                    (
                        (v, cfg.venues.instrument(v, &s.base, &s.quote)),
                        s.exchange.clone(),
                    )
                })
            })
            .collect();
        Self {
            symbols,
            followed,
            last_top: HashMap::new(),
        }
    }

    /// The record of a venue trade of a followed symbol (None for other events).
    pub fn trade(&self, venue: Venue, ev: &NormEvent) -> Option<MarketRecord> {
        let NormEvent::Trade(t) = ev else {
            return None;
        };
        let symbol = self.symbols.get(&(venue, t.symbol.clone()))?;
        Some(MarketRecord {
            exchange: venue.name().into(),
            body: RecordBody::Trade(Trade {
                symbol: symbol.clone(),
                // Ids are stored as bigint: hashed venue ids (Bybit, Kraken v1) use all 64 bits
                // and would be refused; their low 63 bits keep them distinct. Numeric exchange
                // ids are below 2^63 and unchanged.
                id: t.id & i64::MAX as u64,
                ..t.clone()
            }),
        })
    }

    /// Book tops of the followed venues in the snapshot's aggregates, once per second each.
    pub fn tops(&mut self, snap: &MarketSnapshot) -> Vec<MarketRecord> {
        let second = Timeframe::S1.floor(snap.time_ms);
        let mut out = Vec::new();
        for s in &snap.symbols {
            let Some(agg) = &s.agg_cob else { continue };
            for q in agg
                .quotes
                .iter()
                .filter(|q| self.followed.contains(&q.venue))
            {
                let key = (q.venue, s.exchange.clone());
                if self.last_top.get(&key) == Some(&second) {
                    continue;
                }
                self.last_top.insert(key, second);
                out.push(MarketRecord {
                    exchange: q.venue.name().into(),
                    body: RecordBody::BookTop(BookTopRecord {
                        symbol: s.exchange.clone(),
                        time_ms: second,
                        bid: Some(q.best_bid),
                        ask: Some(q.best_ask),
                    }),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::normalized::IntegrityError;
    use crate::market::types::{Level, Qty};

    fn book(bid: i64, ask: i64, qty: i64) -> Arc<OrderBook> {
        let lv = |p: i64| Level {
            price: Price::from_units(p),
            qty: Qty::from_units(qty),
        };
        let mut b = OrderBook::new();
        b.apply_snapshot(&[lv(bid)], &[lv(ask)], 1);
        Arc::new(b)
    }

    fn config(toml_text: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml_text).unwrap();
        Config::load_with_env(Some(&path), &[]).unwrap()
    }

    fn connected(links: &mut VenueLinks, k: usize, now: i64) {
        links.on_event(
            k,
            RunnerEvent::Event(NormEvent::Connection(ConnectionState::Connected {
                connects: 1,
            })),
            now,
        );
    }

    /// The config of `toml_text` and its links, the first venue connected at `now`.
    fn started(toml_text: &str, now: i64) -> (Config, VenueLinks) {
        let cfg = config(toml_text);
        let mut links = VenueLinks::new(&cfg);
        connected(&mut links, 0, now);
        (cfg, links)
    }

    fn put_book(links: &mut VenueLinks, k: usize, instrument: &str, b: Arc<OrderBook>, now: i64) {
        let ev = RunnerEvent::Book {
            instrument: instrument.into(),
            book: b,
        };
        links.on_event(k, ev, now);
    }

    #[test]
    fn config_maps_symbols_and_urls_per_venue() {
        let cfg = config(
            "[venues]\nfollow = [\"kraken\", \"huobi\", \"kraken\"]\n\
             [venues.endpoints.kraken]\nws = \"ws://127.0.0.1:1/\"\nquotes = { USDT = \"USD\" }\n",
        );
        assert_eq!(cfg.venues.venues(), [Venue::Kraken, Venue::Htx]);
        assert_eq!(
            cfg.venues.instrument(Venue::Kraken, "ETH", "USDT"),
            "ETH/USD"
        );
        assert_eq!(cfg.venues.instrument(Venue::Htx, "ETH", "USDT"), "ETH/USDT");
        assert_eq!(
            cfg.venues.urls(Venue::Kraken),
            (
                "ws://127.0.0.1:1/".to_string(),
                "https://api.kraken.com".to_string()
            )
        );
        assert_eq!(cfg.venues.urls(Venue::Htx).0, "wss://api.huobi.pro/ws");
        // The default follows nothing.
        assert!(Config::default().venues.venues().is_empty());
        assert!(VenueLinks::new(&Config::default()).is_empty());
    }

    #[test]
    fn config_errors_name_the_key_and_the_expected_form() {
        let bad = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, text).unwrap();
            Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string()
        };
        let e = bad("[venues]\nfollow = [\"krakn\"]\n");
        assert!(
            e.contains("bad.toml") && e.contains("venues.follow[0]") && e.contains("krakn"),
            "{e}"
        );
        let e = bad("[venues]\nfollow = [\"binance\"]\n");
        assert!(e.contains("venues.follow[0]"), "{e}");
        let e = bad("[venues.endpoints.bybit]\nws = \"http://x\"\n");
        assert!(
            e.contains("venues.endpoints.bybit.ws") && e.contains("wss://"),
            "{e}"
        );
        let e = bad("[venues.endpoints.nope]\n");
        assert!(e.contains("venues.endpoints.nope"), "{e}");
        let e = bad("[venues]\nstale_after_ms = 0\n");
        assert!(e.contains("venues.stale_after_ms"), "{e}");
        let e = bad("[venues]\nfolow = []\n");
        assert!(e.contains("folow"), "{e}");
    }

    #[test]
    fn aggregate_includes_healthy_venues_and_says_why_others_are_left_out() {
        let now = 1_700_000_000_000;
        // Kraken: connected with an ETH book. Bybit: connected, book later lost to an
        // integrity failure. Coinbase: never connected.
        let (cfg, mut links) = started(
            "[venues]\nfollow = [\"kraken\", \"bybit\", \"coinbase\"]\n",
            now,
        );
        connected(&mut links, 1, now);
        put_book(&mut links, 0, "ETH/USDT", book(99, 101, 2), now);
        put_book(&mut links, 0, "SOL/USDT", book(9, 11, 2), now);
        put_book(&mut links, 1, "ETH/USDT", book(100, 102, 1), now);
        links.on_event(
            1,
            RunnerEvent::Event(NormEvent::Integrity {
                instrument: "ETH/USDT".into(),
                error: IntegrityError::Gap {
                    expected: 5,
                    got: 7,
                },
            }),
            now,
        );
        let desk = book(100, 101, 6);
        // The desk has an ETH book only.
        links.on_second(
            |i| (Venue::Binance, (i == 0).then_some(desk.as_ref())),
            now + 500,
        );
        let agg = links.aggregated(0).unwrap();
        let included: Vec<Venue> = agg.quotes.iter().map(|q| q.venue).collect();
        assert_eq!(included, [Venue::Binance, Venue::Kraken]);
        assert_eq!(
            agg.skipped,
            [
                (Venue::Bybit, Skipped::NoBook),
                (Venue::Coinbase, Skipped::Down)
            ]
        );
        // 6+6 of the desk and 2+2 of Kraken in range.
        let shares = agg.depth_shares();
        assert_eq!(shares, [(Venue::Binance, 0.75), (Venue::Kraken, 0.25)]);
        // BTC: no desk book and no venue book; nothing usable, so no aggregate.
        assert!(links.aggregated(1).is_none());

        // Kraken goes silent past the stale threshold: left out, the desk's book remains.
        let later = now + cfg.venues.stale_after_ms as i64 + 1;
        links.on_second(|_| (Venue::Binance, Some(&desk)), later);
        let agg = links.aggregated(0).unwrap();
        assert_eq!(agg.quotes.len(), 1);
        assert!(agg.skipped.contains(&(Venue::Kraken, Skipped::Stale)));

        // A disconnect drops Kraken's books and marks it down.
        links.on_event(
            0,
            RunnerEvent::Event(NormEvent::Connection(ConnectionState::Disconnected {
                reason: "closed".into(),
                retry_in_ms: 100,
            })),
            later,
        );
        links.on_second(|_| (Venue::Binance, Some(&desk)), later);
        let agg = links.aggregated(0).unwrap();
        assert!(agg.skipped.contains(&(Venue::Kraken, Skipped::Down)));
        let views = links.views(later, true);
        assert_eq!(views[0].health.state, LinkState::Reconnecting);
        assert_eq!((views[0].books, views[0].instruments), (0, 2));
        assert_eq!(views[1].integrity_failures, 1);
        assert_eq!(views[1].health.resyncs, 1);
        links.on_stopped();
        assert!(links.aggregated(0).is_none());
        assert_eq!(
            links.views(later, false)[1].health.state,
            LinkState::Stopped
        );
    }

    #[test]
    fn recorder_tags_venue_trades_and_tops_with_the_venue() {
        use crate::market::types::Side;
        let cfg = config(
            "[venues]\nfollow = [\"kraken\"]\n[venues.endpoints.kraken]\nquotes = { USDT = \"USD\" }\n",
        );
        let mut rec = VenueRecorder::new(&cfg);
        let trade = |symbol: &str| {
            NormEvent::Trade(Trade {
                symbol: symbol.into(),
                id: 7,
                price: Price::from_units(100),
                qty: Qty::from_units(1),
                time_ms: 5,
                taker_side: Side::Sell,
            })
        };
        let r = rec.trade(Venue::Kraken, &trade("ETH/USD")).unwrap();
        assert_eq!(&*r.exchange, "kraken");
        let RecordBody::Trade(t) = &r.body else {
            panic!("{r:?}")
        };
        assert_eq!((t.symbol.as_str(), t.id), ("ETHUSDT", 7));
        // Not followed, or another venue's: nothing.
        assert!(rec.trade(Venue::Kraken, &trade("SOL/USD")).is_none());
        assert!(rec.trade(Venue::Bybit, &trade("ETH/USD")).is_none());
        let mut hashed = trade("ETH/USD");
        if let NormEvent::Trade(t) = &mut hashed {
            t.id = u64::MAX - 1;
        }
        let r = rec.trade(Venue::Kraken, &hashed).unwrap();
        assert!(matches!(&r.body, RecordBody::Trade(t) if t.id == i64::MAX as u64 - 1));

        let now = 1_700_000_000_400;
        let mut links = VenueLinks::new(&cfg);
        connected(&mut links, 0, now);
        put_book(&mut links, 0, "ETH/USD", book(99, 101, 2), now);
        let desk = book(100, 101, 1);
        links.on_second(|_| (Venue::Binance, Some(desk.as_ref())), now);
        let mut snap = crate::tui::fixture::market();
        snap.time_ms = now;
        snap.symbols[0].agg_cob = links.aggregated(0);
        let tops = rec.tops(&snap);
        // Kraken's top only: the desk's own top is stored by the collector itself.
        assert_eq!(tops.len(), 1);
        assert_eq!(&*tops[0].exchange, "kraken");
        let RecordBody::BookTop(top) = &tops[0].body else {
            panic!("{tops:?}")
        };
        assert_eq!(top.symbol, "ETHUSDT");
        assert_eq!(top.time_ms, 1_700_000_000_000);
        assert_eq!(top.bid.unwrap().price, Price::from_units(99));
        // The same second is stored once.
        assert!(rec.tops(&snap).is_empty());
    }

    #[test]
    fn the_active_primary_venue_counts_once() {
        let now = 1_700_000_000_000;
        let (_, mut links) = started("[venues]\nfollow = [\"mexc\"]\n", now);
        let b = book(100, 101, 1);
        put_book(&mut links, 0, "ETH/USDT", b.clone(), now);
        links.on_second(|_| (Venue::Mexc, Some(&b)), now);
        let agg = links.aggregated(0).unwrap();
        assert_eq!(agg.quotes.len(), 1);
        assert!(agg.skipped.is_empty());
    }
}
