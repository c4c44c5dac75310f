//! The workstation side of the collector: reads the collector's Redis streams and turns their
//! entries back into the connector events the market pipeline consumes, so `[data] source =
//! "redis"` needs no exchange connection at all.
//!
//! Book snapshots come from the collector's latest book image, candle backfill and trade
//! recovery from the streams' retained history.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use tokio::sync::mpsc;

use super::redis_sink::connect;
use super::streams::{self, LatestKind, StreamItem, StreamKind};
use crate::feeds::binance::connector::{ConnectorHandle, FeedCommand, FeedEvent, TradeCursor};
use crate::feeds::binance::wire::BinanceEvent;

/// What the consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix used by the collector.
    pub key_prefix: String,
    /// Exchange name the collector published under (`binance`, `sim`, …).
    pub exchange: String,
    /// Exchange symbols.
    pub symbols: Vec<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// Entries per XREAD / XRANGE call.
const READ_COUNT: usize = 1_000;
/// How long one XREAD waits for new entries (ms).
const BLOCK_MS: usize = 1_000;
/// Delay before answering a snapshot request when no usable book image exists yet.
const SNAPSHOT_RETRY: Duration = Duration::from_millis(500);

/// Starts the consumer; events go to `events`, requests come through the returned handle.
pub fn spawn(cfg: ConsumerConfig, events: mpsc::Sender<FeedEvent>) -> ConnectorHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(cfg, events, cmd_tx.clone(), cmd_rx));
    ConnectorHandle::from_parts(cmd_tx, task)
}

async fn run(
    cfg: ConsumerConfig,
    events: mpsc::Sender<FeedEvent>,
    retry: mpsc::UnboundedSender<FeedCommand>,
    mut commands: mpsc::UnboundedReceiver<FeedCommand>,
) {
    let mut connects = 0u64;
    let mut backoff = Duration::from_millis(250);
    loop {
        let conns = async {
            let reader = connect(&cfg.url, cfg.connect_timeout).await?;
            let requests = connect(&cfg.url, cfg.connect_timeout).await?;
            Ok::<_, redis::RedisError>((reader, requests))
        }
        .await;
        let (mut reader, mut requests) = match conns {
            Ok(c) => c,
            Err(e) => {
                let _ = events
                    .send(FeedEvent::Disconnected {
                        reason: format!("redis: {e}"),
                        retry_in: backoff,
                    })
                    .await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        let mut served: HashMap<String, u64> = HashMap::new();
        // Start from the newest entry of each stream: history is served on request.
        let mut cursors: Vec<(String, StreamKind, String, String)> = Vec::new();
        let mut ok = true;
        for sym in &cfg.symbols {
            for kind in StreamKind::ALL {
                let key = streams::stream_key(&cfg.key_prefix, &cfg.exchange, sym, kind);
                match last_id(&mut reader, &key).await {
                    Ok(id) => cursors.push((key, kind, sym.clone(), id)),
                    Err(_) => ok = false,
                }
            }
        }
        if !ok {
            continue;
        }
        connects += 1;
        if events
            .send(FeedEvent::Connected { connects })
            .await
            .is_err()
        {
            return;
        }
        let reason = loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    if let Err(e) = answer(&cfg, &mut requests, cmd, &events, &retry, &mut served).await {
                        break format!("redis: {e}");
                    }
                }
                read = read_new(&mut reader, &mut cursors) => match read {
                    Ok(items) => {
                        for ev in items {
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => break format!("redis: {e}"),
                },
            }
        };
        let _ = events
            .send(FeedEvent::Disconnected {
                reason,
                retry_in: backoff,
            })
            .await;
        tokio::time::sleep(backoff).await;
    }
}

async fn last_id(conn: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<String> {
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(reply
        .ids
        .first()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "0-0".to_string()))
}

fn field(entry: &redis::streams::StreamId) -> Option<Vec<u8>> {
    match entry.map.get(streams::FIELD)? {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn to_event(item: StreamItem) -> FeedEvent {
    match item {
        StreamItem::Trade(t) => FeedEvent::Market(BinanceEvent::AggTrade(t)),
        StreamItem::Depth(d) => FeedEvent::Market(BinanceEvent::Depth(d.to_update())),
        StreamItem::Candle(c) => FeedEvent::History {
            symbol: c.symbol,
            timeframe: c.timeframe,
            candles: vec![c.candle],
        },
    }
}

/// New entries of every stream, in per-stream order; cursors advance past them.
async fn read_new(
    conn: &mut MultiplexedConnection,
    cursors: &mut [(String, StreamKind, String, String)],
) -> redis::RedisResult<Vec<FeedEvent>> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK_MS)
        .arg("STREAMS");
    for c in cursors.iter() {
        cmd.arg(&c.0);
    }
    for c in cursors.iter() {
        cmd.arg(&c.3);
    }
    let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
    let mut out = Vec::new();
    let index: HashMap<String, usize> = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| (c.0.clone(), i))
        .collect();
    for key in reply.map(|r| r.keys).unwrap_or_default() {
        let Some(&i) = index.get(&key.key) else {
            continue;
        };
        let kind = cursors[i].1;
        for entry in &key.ids {
            cursors[i].3 = entry.id.clone();
            match streams::decode(kind, &entry.id, field(entry).as_deref()) {
                Ok(item) => out.push(to_event(item)),
                Err(e) => out.push(FeedEvent::Malformed {
                    kind: "redis entry",
                    log: Some(e.to_string()),
                }),
            }
        }
    }
    Ok(out)
}

/// Entries of a stream from `start` (an id or `-`) on, at most `limit`.
async fn range(
    conn: &mut MultiplexedConnection,
    key: &str,
    start: &str,
    limit: usize,
) -> redis::RedisResult<Vec<redis::streams::StreamId>> {
    let mut out = Vec::new();
    let mut from = start.to_string();
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(READ_COUNT)
            .query_async(conn)
            .await?;
        let n = reply.ids.len();
        if let Some(last) = reply.ids.last() {
            from = format!("({}", last.id);
        }
        out.extend(reply.ids);
        if n < READ_COUNT || out.len() >= limit {
            return Ok(out);
        }
    }
}

async fn answer(
    cfg: &ConsumerConfig,
    conn: &mut MultiplexedConnection,
    cmd: FeedCommand,
    events: &mpsc::Sender<FeedEvent>,
    retry: &mpsc::UnboundedSender<FeedCommand>,
    served: &mut HashMap<String, u64>,
) -> redis::RedisResult<()> {
    match cmd {
        FeedCommand::FetchSnapshot(symbol) => {
            let key =
                streams::latest_key(&cfg.key_prefix, &cfg.exchange, &symbol, LatestKind::Book);
            let data: Option<Vec<u8>> = conn.get(&key).await?;
            match data.map(|d| streams::decode_book(&d)) {
                // The same image again cannot sync better: wait for the next one.
                Some(Ok(image)) if served.get(&symbol) == Some(&image.last_update_id) => {
                    let retry = retry.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(SNAPSHOT_RETRY).await;
                        let _ = retry.send(FeedCommand::FetchSnapshot(symbol));
                    });
                }
                Some(Ok(image)) => {
                    served.insert(symbol.clone(), image.last_update_id);
                    let _ = events
                        .send(FeedEvent::Snapshot {
                            symbol,
                            snapshot: image.to_snapshot(),
                        })
                        .await;
                }
                other => {
                    let why = match other {
                        Some(Err(e)) => format!("book image unreadable: {e}"),
                        _ => "no book image published yet".to_string(),
                    };
                    let _ = events
                        .send(FeedEvent::RestFailed {
                            what: format!("book {symbol}"),
                            error: why,
                        })
                        .await;
                    // Ask again shortly: the collector refreshes the image every second.
                    let retry = retry.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(SNAPSHOT_RETRY).await;
                        let _ = retry.send(FeedCommand::FetchSnapshot(symbol));
                    });
                }
            }
        }
        FeedCommand::Backfill {
            symbol,
            timeframe,
            from_ms,
        } => {
            let key =
                streams::stream_key(&cfg.key_prefix, &cfg.exchange, &symbol, StreamKind::Candles);
            let entries = range(conn, &key, "-", usize::MAX).await?;
            let candles: Vec<_> = entries
                .iter()
                .filter_map(|e| {
                    streams::decode(StreamKind::Candles, &e.id, field(e).as_deref()).ok()
                })
                .filter_map(|item| match item {
                    StreamItem::Candle(c)
                        if c.timeframe == timeframe && c.candle.open_time_ms >= from_ms =>
                    {
                        Some(c.candle)
                    }
                    _ => None,
                })
                .collect();
            if !candles.is_empty() {
                let _ = events
                    .send(FeedEvent::History {
                        symbol,
                        timeframe,
                        candles,
                    })
                    .await;
            }
        }
        FeedCommand::RecoverTrades { symbol, from } => {
            let key =
                streams::stream_key(&cfg.key_prefix, &cfg.exchange, &symbol, StreamKind::Trades);
            let start = match from {
                // Entries are stamped when published, never before the trade happened.
                TradeCursor::Time(ms) => format!("{ms}-0"),
                TradeCursor::Id(_) => "-".to_string(),
            };
            let entries = range(conn, &key, &start, usize::MAX).await?;
            let trades: Vec<_> = entries
                .iter()
                .filter_map(|e| {
                    streams::decode(StreamKind::Trades, &e.id, field(e).as_deref()).ok()
                })
                .filter_map(|item| match item {
                    StreamItem::Trade(t) => Some(t),
                    _ => None,
                })
                .filter(|t| match from {
                    TradeCursor::Time(ms) => t.time_ms >= ms,
                    TradeCursor::Id(id) => t.id >= id,
                })
                .collect();
            let _ = events
                .send(FeedEvent::RecoveredTrades {
                    symbol,
                    trades,
                    complete: true,
                })
                .await;
        }
    }
    Ok(())
}
