//! The collector service: taps the headless market pipeline, turns what it sees into
//! normalized records, and fans them out to PostgreSQL, Redis and live API subscribers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::buffer::SpillError;
use super::config::CollectorConfig;
use super::db_sink::{DbSink, DbSinkConfig, DbSinkReport};
use super::metrics::Metrics;
use super::pg::Row;
use super::record::{
    BookImage, BookTopRecord, CandleRecord, MarketRecord, RecordBody, records_from_feed_event,
};
use super::redis_sink::{RedisSink, RedisSinkConfig};
use crate::app::pipeline::EventPrinter;
use crate::feeds::binance::connector::FeedEvent;
use crate::feeds::binance::sync::{BookSync, Rules, SyncConfig, SyncState};
use crate::feeds::binance::wire::BinanceEvent;
use crate::logging::now_ms;
use crate::market::snapshot::MarketSnapshot;
use crate::market::types::{Side, Timeframe};

/// Live updates for API subscribers, as JSON text.
pub type LiveSender = broadcast::Sender<Arc<str>>;

/// Where records go: database rows, Redis records, live subscribers.
#[derive(Clone)]
pub struct Fanout {
    exchange: Arc<str>,
    db: Option<mpsc::UnboundedSender<Row>>,
    redis: Option<mpsc::UnboundedSender<MarketRecord>>,
    live: LiveSender,
    metrics: Arc<Metrics>,
}

impl Fanout {
    /// The exchange name records are tagged with.
    pub fn exchange(&self) -> &Arc<str> {
        &self.exchange
    }

    /// Sends one record everywhere it belongs.
    pub fn send(&self, r: MarketRecord) {
        if self.live.receiver_count() > 0
            && let Some(msg) = live_message(&r)
        {
            let _ = self.live.send(msg.into());
        }
        if let Some(db) = &self.db
            && r.body.is_stored()
            && let Some(row) = Row::from_record(&r)
        {
            let _ = db.send(row);
        }
        if let Some(redis) = &self.redis
            && !matches!(r.body, RecordBody::BookTop(_))
        {
            let _ = redis.send(r);
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The JSON pushed to WebSocket subscribers for a record (trades, candles, tops).
pub fn live_message(r: &MarketRecord) -> Option<String> {
    let v = match &r.body {
        RecordBody::Trade(t) => serde_json::json!({
            "type": "trade", "exchange": &*r.exchange, "symbol": t.symbol, "id": t.id,
            "time_ms": t.time_ms, "price": t.price.to_string(), "qty": t.qty.to_string(),
            "side": if t.taker_side == Side::Buy { "buy" } else { "sell" },
        }),
        RecordBody::Candle(c) => serde_json::json!({
            "type": "candle", "exchange": &*r.exchange, "symbol": c.symbol,
            "timeframe": c.timeframe.as_str(), "open_time_ms": c.candle.open_time_ms,
            "open": c.candle.open.to_string(), "high": c.candle.high.to_string(),
            "low": c.candle.low.to_string(), "close": c.candle.close.to_string(),
            "volume": c.candle.volume.to_string(), "trades": c.candle.trades,
        }),
        RecordBody::BookTop(b) => serde_json::json!({
            "type": "top", "exchange": &*r.exchange, "symbol": b.symbol, "time_ms": b.time_ms,
            "bid": b.bid.map(|l| [l.price.to_string(), l.qty.to_string()]),
            "ask": b.ask.map(|l| [l.price.to_string(), l.qty.to_string()]),
        }),
        _ => return None,
    };
    Some(v.to_string())
}

/// The running sinks of one collector.
pub struct Collector {
    fanout: Fanout,
    db: Option<DbSink>,
    redis: Option<RedisSink>,
    written_candles: HashMap<(String, Timeframe), i64>,
    written_cob: HashMap<String, i64>,
    written_heatmap: HashMap<String, i64>,
    last_top_second: HashMap<String, i64>,
}

impl Collector {
    /// Starts the database and Redis sinks for records of `exchange`; relative spill folders
    /// are resolved against `data_dir`.
    pub fn start(
        cfg: &CollectorConfig,
        exchange: &str,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SpillError> {
        let db = DbSink::spawn(
            DbSinkConfig {
                database_url: cfg.database_url.clone(),
                batch_rows: cfg.batch_rows,
                flush_interval: Duration::from_millis(cfg.flush_interval_ms),
                buffer_rows: cfg.buffer_rows,
                spill_dir: data_dir.join(&cfg.spill_dir),
                connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
                compress_after_days: cfg.compress_after_days,
                shutdown_grace: Duration::from_secs(10),
            },
            metrics.clone(),
        )?;
        let redis = RedisSink::spawn(
            RedisSinkConfig {
                url: cfg.redis_url.clone(),
                key_prefix: cfg.key_prefix.clone(),
                stream_maxlen: cfg.stream_maxlen,
                buffer: cfg.redis_buffer,
                connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
            },
            metrics.clone(),
        );
        let (live, _) = broadcast::channel(4096);
        Ok(Self {
            fanout: Fanout {
                exchange: Arc::from(exchange),
                db: Some(db.sender()),
                redis: Some(redis.sender()),
                live,
                metrics,
            },
            db: Some(db),
            redis: Some(redis),
            written_candles: HashMap::new(),
            written_cob: HashMap::new(),
            written_heatmap: HashMap::new(),
            last_top_second: HashMap::new(),
        })
    }

    /// Where records go (for other sources' connectors to plug in).
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Live updates for the API's WebSocket.
    pub fn live(&self) -> LiveSender {
        self.fanout.live.clone()
    }

    /// The printer hook for the market pipeline: every connector event becomes records, and a
    /// mirror of each book yields a full image once a second for late Redis consumers.
    pub fn tap(&self, symbols: &[String], depth_buffer: usize) -> EventPrinter {
        let fanout = self.fanout.clone();
        let sync_cfg = SyncConfig {
            max_buffered: depth_buffer,
        };
        let mut mirrors: HashMap<String, (BookSync, i64)> = symbols
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    (BookSync::new(s.clone(), Rules::Spot, sync_cfg), 0),
                )
            })
            .collect();
        let mut out = Vec::new();
        Box::new(move |ev: &FeedEvent| {
            let now = now_ms();
            let ex = fanout.exchange.clone();
            match ev {
                FeedEvent::Connected { .. } => {
                    for (sym, (sync, _)) in mirrors.iter_mut() {
                        *sync = BookSync::new(sym.clone(), Rules::Spot, sync_cfg);
                    }
                }
                FeedEvent::Market(m) => {
                    fanout.metrics.messages.with_label_values(&[&ex]).inc();
                    let event_ms = match m {
                        BinanceEvent::Depth(d) => Some(d.event_time_ms),
                        BinanceEvent::AggTrade(t) | BinanceEvent::Trade(t) => Some(t.time_ms),
                        _ => None,
                    };
                    if let Some(t) = event_ms {
                        let secs = (now - t).max(0) as f64 / 1000.0;
                        fanout
                            .metrics
                            .latency
                            .with_label_values(&[&ex])
                            .observe(secs);
                    }
                    if let BinanceEvent::Depth(d) = m
                        && let Some((sync, last_image)) = mirrors.get_mut(&d.symbol)
                    {
                        sync.on_diff(d);
                        if sync.state() == SyncState::Synced && now - *last_image >= 1_000 {
                            *last_image = now;
                            if let Some(image) = book_image(sync, now) {
                                fanout.send(MarketRecord {
                                    exchange: ex.clone(),
                                    body: RecordBody::Book(image),
                                });
                            }
                        }
                    }
                }
                FeedEvent::Snapshot { symbol, snapshot } => {
                    if let Some((sync, _)) = mirrors.get_mut(symbol) {
                        sync.on_snapshot(snapshot.clone());
                    }
                }
                _ => {}
            }
            records_from_feed_event(&ex, ev, &mut out);
            for r in out.drain(..) {
                fanout.send(r);
            }
        })
    }

    /// Once a second: closed candles, best bid/ask, new COB and heatmap rows, and health
    /// gauges from the pipeline's latest snapshot.
    pub fn on_snapshot(&mut self, snap: &MarketSnapshot) {
        let ex = self.fanout.exchange.clone();
        let m = &self.fanout.metrics;
        if let Some(link) = snap.links.first() {
            m.message_rate
                .with_label_values(&[&ex])
                .set(link.rate_per_sec);
        }
        let second = Timeframe::S1.floor(snap.time_ms);
        for s in &snap.symbols {
            m.resyncs
                .with_label_values(&[&*ex, s.exchange.as_str()])
                .set(s.book.resyncs as i64);
            for (tf, candles) in &s.candles {
                let key = (s.exchange.clone(), *tf);
                let last = self.written_candles.get(&key).copied().unwrap_or(i64::MIN);
                let mut newest = last;
                for c in candles {
                    if c.open_time_ms > last && c.open_time_ms + tf.millis() <= snap.time_ms {
                        newest = newest.max(c.open_time_ms);
                        self.fanout.send(MarketRecord {
                            exchange: ex.clone(),
                            body: RecordBody::Candle(CandleRecord {
                                symbol: s.exchange.clone(),
                                timeframe: *tf,
                                candle: c.clone(),
                            }),
                        });
                    }
                }
                self.written_candles.insert(key, newest);
            }
            if (s.best_bid.is_some() || s.best_ask.is_some())
                && self.last_top_second.get(&s.exchange) != Some(&second)
            {
                self.last_top_second.insert(s.exchange.clone(), second);
                self.fanout.send(MarketRecord {
                    exchange: ex.clone(),
                    body: RecordBody::BookTop(BookTopRecord {
                        symbol: s.exchange.clone(),
                        time_ms: second,
                        bid: s.best_bid,
                        ask: s.best_ask,
                    }),
                });
            }
            if let Some(cob) = &s.cob
                && self.written_cob.get(&s.exchange) != Some(&cob.time_ms)
            {
                self.written_cob.insert(s.exchange.clone(), cob.time_ms);
                self.fanout.send(MarketRecord {
                    exchange: ex.clone(),
                    body: RecordBody::Cob {
                        symbol: s.exchange.clone(),
                        cob: cob.clone(),
                    },
                });
            }
            if let Some(last_row) = s.heatmap.last()
                && self.written_heatmap.get(&s.exchange) != Some(&last_row.time_ms)
            {
                self.written_heatmap
                    .insert(s.exchange.clone(), last_row.time_ms);
                self.fanout.send(MarketRecord {
                    exchange: ex.clone(),
                    body: RecordBody::Heatmap {
                        symbol: s.exchange.clone(),
                        rows: s.heatmap.clone(),
                    },
                });
            }
        }
        m.refresh_rss();
    }

    /// Stops both sinks: the database gets what is buffered (or it is spilled to disk).
    pub async fn shutdown(mut self) -> Result<DbSinkReport, SpillError> {
        self.fanout.db = None;
        self.fanout.redis = None;
        if let Some(redis) = self.redis.take() {
            redis.shutdown().await;
        }
        match self.db.take() {
            Some(db) => db.shutdown().await,
            None => Ok(DbSinkReport::default()),
        }
    }
}

fn book_image(sync: &BookSync, now: i64) -> Option<BookImage> {
    let book = sync.synced_book()?;
    Some(BookImage {
        symbol: sync.symbol().to_string(),
        time_ms: now,
        last_update_id: book.last_update_id,
        bids: book.top(Side::Buy, usize::MAX),
        asks: book.top(Side::Sell, usize::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty, Trade};

    #[test]
    fn live_messages_carry_exact_decimals() {
        let r = MarketRecord {
            exchange: Arc::from("sim"),
            body: RecordBody::Trade(Trade {
                symbol: "ETHUSDT".into(),
                id: 9,
                time_ms: 5,
                price: Price::parse("2500.10000001").unwrap(),
                qty: Qty::parse("0.3").unwrap(),
                taker_side: Side::Sell,
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&live_message(&r).unwrap()).unwrap();
        assert_eq!(v["type"], "trade");
        assert_eq!(v["price"], "2500.10000001");
        assert_eq!(v["side"], "sell");
    }
}
