//! Publishing to Redis: pipelined `XADD … MAXLEN ~` per event and `SET` of the latest COB,
//! heatmap and book per symbol, so any number of workstations consume one feed.
//!
//! Redis is the live fan-out, not the store of record: while it is unreachable events wait in
//! a bounded queue and the oldest are dropped (and counted) beyond it; PostgreSQL keeps all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use super::record::MarketRecord;
use super::streams::{self, Target};

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct RedisSinkConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key prefix.
    pub key_prefix: String,
    /// Approximate stream length kept.
    pub stream_maxlen: usize,
    /// Events held while Redis is unreachable.
    pub buffer: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

/// Connects with bounded connect and response times.
pub async fn connect(url: &str, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout.max(Duration::from_secs(5))));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// A pipelined publisher on one connection.
pub struct Publisher {
    conn: MultiplexedConnection,
    prefix: String,
    maxlen: usize,
    /// Key names by (exchange, symbol, target): formatted once, not per event.
    keys: HashMap<(Arc<str>, String, Target), String>,
}

impl Publisher {
    /// A publisher on an open connection.
    pub fn new(conn: MultiplexedConnection, prefix: impl Into<String>, maxlen: usize) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            maxlen,
            keys: HashMap::new(),
        }
    }

    fn key(&mut self, exchange: &Arc<str>, symbol: &str, target: &Target) -> &str {
        let k = (exchange.clone(), symbol.to_string(), target.clone());
        let prefix = &self.prefix;
        self.keys.entry(k).or_insert_with(|| match target {
            Target::Stream(kind) => streams::stream_key(prefix, exchange, symbol, *kind),
            Target::Latest(kind) => streams::latest_key(prefix, exchange, symbol, *kind),
            Target::None => String::new(),
        })
    }

    /// Publishes records in one round trip; returns how many commands were sent.
    pub async fn publish<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a MarketRecord>,
    ) -> redis::RedisResult<usize> {
        let mut pipe = redis::pipe();
        let mut n = 0;
        for r in records {
            let (target, json) = streams::encode(&r.body);
            let Some(json) = json else { continue };
            let maxlen = self.maxlen;
            let key = self.key(&r.exchange, r.body.symbol(), &target);
            match target {
                Target::Stream(_) => {
                    pipe.cmd("XADD")
                        .arg(key)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(maxlen)
                        .arg("*")
                        .arg(streams::FIELD)
                        .arg(json)
                        .ignore();
                }
                Target::Latest(_) => {
                    pipe.cmd("SET").arg(key).arg(json).ignore();
                }
                Target::None => continue,
            }
            n += 1;
        }
        if n > 0 {
            pipe.query_async::<()>(&mut self.conn).await?;
        }
        Ok(n)
    }
}

/// A running Redis sink.
pub struct RedisSink {
    tx: mpsc::UnboundedSender<MarketRecord>,
    task: JoinHandle<()>,
}

/// Records per pipeline round trip.
const PIPELINE: usize = 2_000;

impl RedisSink {
    /// Starts the publishing task (it connects, and reconnects, by itself).
    pub fn spawn(cfg: RedisSinkConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(cfg, rx, metrics));
        Self { tx, task }
    }

    /// A sender for records.
    pub fn sender(&self) -> mpsc::UnboundedSender<MarketRecord> {
        self.tx.clone()
    }

    /// Publishes what is queued (when Redis is reachable) and stops.
    pub async fn shutdown(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn run(
    cfg: RedisSinkConfig,
    mut rx: mpsc::UnboundedReceiver<MarketRecord>,
    metrics: Arc<Metrics>,
) {
    let mut queue: VecDeque<MarketRecord> = VecDeque::new();
    let mut publisher: Option<Publisher> = None;
    let mut backoff = Duration::from_millis(200);
    let mut open = true;
    while open || !queue.is_empty() {
        if queue.is_empty() {
            match rx.recv().await {
                Some(r) => queue.push_back(r),
                None => break,
            }
        }
        while queue.len() < PIPELINE * 4 {
            match rx.try_recv() {
                Ok(r) => queue.push_back(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        while queue.len() > cfg.buffer {
            queue.pop_front();
            metrics.redis_dropped.inc();
        }
        if publisher.is_none() {
            match connect(&cfg.url, cfg.connect_timeout).await {
                Ok(conn) => {
                    publisher = Some(Publisher::new(conn, &cfg.key_prefix, cfg.stream_maxlen));
                    metrics.redis_up.set(1);
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    metrics.redis_up.set(0);
                    metrics.redis_errors.inc();
                    tracing::warn!(error = %e, "redis unreachable; events queued");
                    if !open {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let Some(p) = publisher.as_mut() else {
            continue;
        };
        let n = queue.len().min(PIPELINE);
        match p.publish(queue.range(..n)).await {
            Ok(sent) => {
                queue.drain(..n);
                metrics.redis_published.inc_by(sent as u64);
            }
            Err(e) => {
                metrics.redis_up.set(0);
                metrics.redis_errors.inc();
                tracing::warn!(error = %e, "redis publish failed; reconnecting");
                publisher = None;
                if !open {
                    break;
                }
            }
        }
    }
    if !queue.is_empty() {
        metrics.redis_dropped.inc_by(queue.len() as u64);
        tracing::warn!(
            dropped = queue.len(),
            "redis unreachable at shutdown; live events not published"
        );
    }
}
