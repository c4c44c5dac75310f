//! The live Binance connector: one combined-stream websocket for all symbols, REST for
//! snapshots, history and instruments. Network only: it parses frames and hands normalized
//! events to the market-state task, which owns the books.
//!
//! Reconnects use exponential backoff with jitter; a connection is renewed before Binance's
//! 24-hour cut; a silent socket (no data and no ping for `idle_timeout`) is treated as dead.
//! Server ping frames are answered by tungstenite as long as the socket keeps being read, which
//! this loop always does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::wire::{
    self, BinanceEvent, DepthSnapshot, FrameErrorCounter, parse_agg_trades, parse_depth_snapshot,
    parse_exchange_info, parse_klines,
};
use crate::config::{BufferConfig, ReconnectConfig};
use crate::feeds::backoff::Backoff;
use crate::feeds::rest::{RestClient, RestError};
use crate::logging::now_ms;
use crate::market::instrument::Instrument;
use crate::market::types::{Candle, Timeframe, Trade};

/// Klines per REST request (Binance's maximum).
pub const KLINES_PAGE: usize = 1000;
/// Aggregate trades per REST request (Binance's maximum).
pub const TRADES_PAGE: usize = 1000;
/// Most trades recovered after one reconnect; a longer outage is covered by klines alone.
pub const MAX_RECOVERED_TRADES: usize = 50_000;

/// What the connector needs to know.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// REST base URL.
    pub rest_url: String,
    /// Websocket base URL (without path).
    pub ws_url: String,
    /// Exchange symbols (`ETHUSDT`).
    pub symbols: Vec<String>,
    /// Backoff and lifetime settings.
    pub reconnect: ReconnectConfig,
    /// Buffer sizes.
    pub buffers: BufferConfig,
    /// A socket with no frame at all for this long is considered dead.
    pub idle_timeout: Duration,
    /// REST request weight budget per minute.
    pub weight_limit_1m: u32,
}

/// A normalized event from the connector.
#[derive(Debug)]
pub enum FeedEvent {
    /// The websocket is connected (`connects` counts every successful connection).
    Connected {
        /// Successful connections so far.
        connects: u64,
    },
    /// The websocket was lost; books must resync.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// One parsed market message.
    Market(BinanceEvent),
    /// A frame that could not be parsed (already counted per kind).
    Malformed {
        /// Error category.
        kind: &'static str,
        /// Detail, when this kind may be logged now (once a minute per kind).
        log: Option<String>,
    },
    /// A REST depth snapshot for one symbol.
    Snapshot {
        /// Exchange symbol.
        symbol: String,
        /// The snapshot.
        snapshot: DepthSnapshot,
    },
    /// Historical candles for one symbol and timeframe (one REST page).
    History {
        /// Exchange symbol.
        symbol: String,
        /// Timeframe.
        timeframe: Timeframe,
        /// Candles, oldest first (the newest may still be open).
        candles: Vec<Candle>,
    },
    /// Trades missed while disconnected, recovered by id over REST (one page).
    RecoveredTrades {
        /// Exchange symbol.
        symbol: String,
        /// Trades in id order.
        trades: Vec<Trade>,
        /// True on the last page of this recovery.
        complete: bool,
    },
    /// Instrument rules from exchangeInfo.
    Instruments(Vec<Instrument>),
    /// A REST request failed (it is retried by the connector where that makes sense).
    RestFailed {
        /// What was being fetched.
        what: String,
        /// The error (never contains secrets).
        error: String,
    },
}

/// Requests from the market-state task to the connector.
#[derive(Debug, Clone)]
pub enum FeedCommand {
    /// Fetch a REST depth snapshot for a symbol (after buffering diffs).
    FetchSnapshot(String),
    /// Fetch candles of a timeframe from `from_ms` up to now.
    Backfill {
        /// Exchange symbol.
        symbol: String,
        /// Timeframe.
        timeframe: Timeframe,
        /// First open time wanted.
        from_ms: i64,
    },
    /// Fetch aggregate trades from an id or a time on, up to the live stream.
    RecoverTrades {
        /// Exchange symbol.
        symbol: String,
        /// Where to start.
        from: TradeCursor,
    },
}

/// Where a trade recovery starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeCursor {
    /// From this aggregate trade id (after a reconnect or an id gap).
    Id(u64),
    /// From this time, ms (the interval in progress when the feed first connects).
    Time(i64),
}

/// A running connector; dropping it does not stop it, [`ConnectorHandle::stop`] does.
pub struct ConnectorHandle {
    commands: mpsc::UnboundedSender<FeedCommand>,
    task: JoinHandle<()>,
}

impl ConnectorHandle {
    /// A handle over another event source's request channel and task (the Redis consumer).
    pub fn from_parts(commands: mpsc::UnboundedSender<FeedCommand>, task: JoinHandle<()>) -> Self {
        Self { commands, task }
    }

    /// Sends a request to the connector.
    pub fn send(&self, cmd: FeedCommand) {
        let _ = self.commands.send(cmd);
    }

    /// Stops the connector and every request it has in flight.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The combined-stream URL for the symbols.
pub fn stream_url(ws_base: &str, symbols: &[String]) -> String {
    let streams: Vec<String> = symbols
        .iter()
        .flat_map(|s| {
            let s = s.to_ascii_lowercase();
            [
                format!("{s}@depth@100ms"),
                format!("{s}@aggTrade"),
                format!("{s}@ticker"),
            ]
        })
        .collect();
    format!(
        "{}/stream?streams={}",
        ws_base.trim_end_matches('/'),
        streams.join("/")
    )
}

/// Starts the connector; events go to `events`.
pub fn spawn(
    cfg: ConnectorConfig,
    events: mpsc::Sender<FeedEvent>,
) -> anyhow::Result<ConnectorHandle> {
    let rest = Arc::new(RestClient::new(
        &cfg.rest_url,
        Duration::from_millis(cfg.reconnect.rest_timeout_ms),
        cfg.weight_limit_1m,
    )?);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(cfg, rest, events, cmd_rx));
    Ok(ConnectorHandle {
        commands: cmd_tx,
        task,
    })
}

async fn run(
    cfg: ConnectorConfig,
    rest: Arc<RestClient>,
    events: mpsc::Sender<FeedEvent>,
    mut commands: mpsc::UnboundedReceiver<FeedCommand>,
) {
    // Child request tasks die with the connector: a JoinSet aborts them when dropped.
    let mut requests = tokio::task::JoinSet::new();
    requests.spawn(fetch_instruments(
        rest.clone(),
        cfg.reconnect.clone(),
        events.clone(),
    ));

    let url = stream_url(&cfg.ws_url, &cfg.symbols);
    let seed = std::process::id() as u64 ^ now_ms() as u64;
    let mut backoff = Backoff::new(
        cfg.reconnect.initial_backoff_ms,
        cfg.reconnect.max_backoff_ms,
        cfg.reconnect.jitter,
        seed,
    );
    let mut errors = FrameErrorCounter::new();
    let mut connects = 0u64;
    let max_age = Duration::from_secs(cfg.reconnect.max_connection_age_secs);

    loop {
        let reason = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                connects += 1;
                backoff.reset();
                if events
                    .send(FeedEvent::Connected { connects })
                    .await
                    .is_err()
                {
                    return;
                }
                let opened = Instant::now();
                loop {
                    let age_left = max_age.saturating_sub(opened.elapsed());
                    tokio::select! {
                        msg = tokio::time::timeout(cfg.idle_timeout, ws.next()) => {
                            match msg {
                                Err(_) => break format!("no frame for {:?}", cfg.idle_timeout),
                                Ok(None) => break "closed by server".to_string(),
                                Ok(Some(Err(e))) => break format!("websocket error: {e}"),
                                Ok(Some(Ok(Message::Close(frame)))) => {
                                    break match frame {
                                        Some(f) => format!("closed by server: {} {}", f.code, f.reason),
                                        None => "closed by server".to_string(),
                                    };
                                }
                                Ok(Some(Ok(m))) => {
                                    if let Some(ev) = handle_message(m, &mut errors)
                                        && events.send(ev).await.is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                        cmd = commands.recv() => match cmd {
                            Some(cmd) => dispatch(cmd, &rest, &cfg, &events, &mut requests),
                            None => return,
                        },
                        _ = tokio::time::sleep(age_left) => {
                            let _ = ws.close(None).await;
                            break "renewing the connection before the 24 h limit".to_string();
                        }
                        Some(_) = requests.join_next(), if !requests.is_empty() => {}
                    }
                }
            }
            Err(e) => format!("connect failed: {e}"),
        };
        let retry_in = backoff.next_delay();
        tracing::warn!(%reason, retry_ms = retry_in.as_millis() as u64, "market-data websocket lost");
        if events
            .send(FeedEvent::Disconnected { reason, retry_in })
            .await
            .is_err()
        {
            return;
        }
        // Keep serving REST requests while waiting to reconnect.
        let wake = tokio::time::sleep(retry_in);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                _ = &mut wake => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => dispatch(cmd, &rest, &cfg, &events, &mut requests),
                    None => return,
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
            }
        }
    }
}

fn handle_message(m: Message, errors: &mut FrameErrorCounter) -> Option<FeedEvent> {
    let now = now_ms();
    match m {
        Message::Text(text) => match wire::parse_frame(text.as_str()) {
            Ok(ev) => Some(FeedEvent::Market(ev)),
            Err(e) => {
                let kind = e.kind();
                let loggable = errors.record(&e, now);
                Some(FeedEvent::Malformed {
                    kind,
                    log: loggable.then(|| e.to_string()),
                })
            }
        },
        Message::Binary(_) => {
            let loggable = errors.record_kind("binary", now);
            Some(FeedEvent::Malformed {
                kind: "binary",
                log: loggable.then(|| "unexpected binary frame".to_string()),
            })
        }
        // Pings are answered by tungstenite on the next read; pongs and raw frames need nothing.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => None,
    }
}

fn dispatch(
    cmd: FeedCommand,
    rest: &Arc<RestClient>,
    cfg: &ConnectorConfig,
    events: &mpsc::Sender<FeedEvent>,
    requests: &mut tokio::task::JoinSet<()>,
) {
    match cmd {
        FeedCommand::FetchSnapshot(symbol) => {
            requests.spawn(fetch_snapshot(
                rest.clone(),
                symbol,
                cfg.buffers.snapshot_depth,
                cfg.reconnect.clone(),
                events.clone(),
            ));
        }
        FeedCommand::RecoverTrades { symbol, from } => {
            requests.spawn(recover_trades(
                rest.clone(),
                symbol,
                from,
                cfg.reconnect.clone(),
                events.clone(),
            ));
        }
        FeedCommand::Backfill {
            symbol,
            timeframe,
            from_ms,
        } => {
            requests.spawn(backfill(
                rest.clone(),
                symbol,
                timeframe,
                from_ms,
                cfg.reconnect.clone(),
                events.clone(),
            ));
        }
    }
}

/// Retries `attempt` with backoff (honouring Retry-After) until it succeeds; reports failures.
async fn with_retries<T, F, Fut>(
    what: String,
    reconnect: &ReconnectConfig,
    events: &mpsc::Sender<FeedEvent>,
    mut attempt: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RestError>>,
{
    let mut backoff = Backoff::new(
        reconnect.initial_backoff_ms,
        reconnect.max_backoff_ms,
        reconnect.jitter,
        now_ms() as u64,
    );
    loop {
        match attempt().await {
            Ok(v) => return Some(v),
            Err(e) => {
                let wait = e.retry_after().unwrap_or_else(|| backoff.next_delay());
                let failed = FeedEvent::RestFailed {
                    what: what.clone(),
                    error: e.to_string(),
                };
                if events.send(failed).await.is_err() {
                    return None;
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn decode_error(path: &str, e: impl std::fmt::Display) -> RestError {
    RestError::Transport {
        path: path.to_string(),
        message: format!("bad response: {e}"),
    }
}

async fn fetch_snapshot(
    rest: Arc<RestClient>,
    symbol: String,
    depth: u32,
    reconnect: ReconnectConfig,
    events: mpsc::Sender<FeedEvent>,
) {
    let weight = match depth {
        0..=100 => 5,
        101..=500 => 25,
        501..=1000 => 50,
        _ => 250,
    };
    let what = format!("depth snapshot {symbol}");
    let snapshot = with_retries(what, &reconnect, &events, || async {
        let body = rest
            .get(
                "/api/v3/depth",
                &[("symbol", symbol.clone()), ("limit", depth.to_string())],
                weight,
            )
            .await?;
        parse_depth_snapshot(&body).map_err(|e| decode_error("/api/v3/depth", e))
    })
    .await;
    if let Some(snapshot) = snapshot {
        let _ = events.send(FeedEvent::Snapshot { symbol, snapshot }).await;
    }
}

async fn backfill(
    rest: Arc<RestClient>,
    symbol: String,
    timeframe: Timeframe,
    from_ms: i64,
    reconnect: ReconnectConfig,
    events: mpsc::Sender<FeedEvent>,
) {
    let step = timeframe.millis();
    let mut cursor = timeframe.floor(from_ms);
    loop {
        let now = now_ms();
        if cursor > now {
            return;
        }
        let wanted = (((now - cursor) / step) as usize + 1).min(KLINES_PAGE);
        let what = format!("klines {symbol} {timeframe}");
        let page = with_retries(what, &reconnect, &events, || async {
            let body = rest
                .get(
                    "/api/v3/klines",
                    &[
                        ("symbol", symbol.clone()),
                        ("interval", timeframe.as_str().to_string()),
                        ("startTime", cursor.to_string()),
                        ("limit", wanted.to_string()),
                    ],
                    2,
                )
                .await?;
            parse_klines(&body, timeframe.as_str()).map_err(|e| decode_error("/api/v3/klines", e))
        })
        .await;
        let Some(page) = page else { return };
        let Some(last) = page.last().map(|k| k.candle.open_time_ms) else {
            return;
        };
        let full = page.len() >= wanted;
        let candles = page.into_iter().map(|k| k.candle).collect();
        if events
            .send(FeedEvent::History {
                symbol: symbol.clone(),
                timeframe,
                candles,
            })
            .await
            .is_err()
        {
            return;
        }
        if !full {
            return;
        }
        cursor = last + step;
    }
}

async fn recover_trades(
    rest: Arc<RestClient>,
    symbol: String,
    from: TradeCursor,
    reconnect: ReconnectConfig,
    events: mpsc::Sender<FeedEvent>,
) {
    let mut next = from;
    let mut recovered = 0usize;
    while recovered < MAX_RECOVERED_TRADES {
        let what = format!("aggTrades {symbol} from {next:?}");
        let page = with_retries(what, &reconnect, &events, || async {
            let start = match next {
                TradeCursor::Id(id) => ("fromId", id.to_string()),
                TradeCursor::Time(ms) => ("startTime", ms.to_string()),
            };
            let body = rest
                .get(
                    "/api/v3/aggTrades",
                    &[
                        ("symbol", symbol.clone()),
                        start,
                        ("limit", TRADES_PAGE.to_string()),
                    ],
                    4,
                )
                .await?;
            parse_agg_trades(&body, &symbol).map_err(|e| decode_error("/api/v3/aggTrades", e))
        })
        .await;
        let Some(page) = page else { return };
        recovered += page.len();
        let last = page.iter().map(|t| t.id).max();
        let complete = page.len() < TRADES_PAGE || recovered >= MAX_RECOVERED_TRADES;
        let ev = FeedEvent::RecoveredTrades {
            symbol: symbol.clone(),
            trades: page,
            complete,
        };
        if events.send(ev).await.is_err() || complete {
            return;
        }
        match last {
            Some(last) => next = TradeCursor::Id(last + 1),
            None => return,
        }
    }
}

async fn fetch_instruments(
    rest: Arc<RestClient>,
    reconnect: ReconnectConfig,
    events: mpsc::Sender<FeedEvent>,
) {
    let info = with_retries("exchangeInfo".to_string(), &reconnect, &events, || async {
        let body = rest.get("/api/v3/exchangeInfo", &[], 20).await?;
        parse_exchange_info(&body).map_err(|e| decode_error("/api/v3/exchangeInfo", e))
    })
    .await;
    if let Some(info) = info {
        let _ = events.send(FeedEvent::Instruments(info.instruments)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_stream_url_lists_every_stream_lowercase() {
        let url = stream_url("ws://127.0.0.1:1/", &["ETHUSDT".into(), "BTCUSDT".into()]);
        assert_eq!(
            url,
            "ws://127.0.0.1:1/stream?streams=ethusdt@depth@100ms/ethusdt@aggTrade/ethusdt@ticker/\
             btcusdt@depth@100ms/btcusdt@aggTrade/btcusdt@ticker"
        );
    }
}
