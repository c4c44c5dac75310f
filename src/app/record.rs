//! `mmtrader record`: the live data path (same connector and pipeline as `mmtrader feed`) with
//! every event written to the store before the pipeline applies it, so a replay rebuilds the
//! same books and candles.
//!
//! Nothing here touches the disk on the reactor: the store's writer hands full batches to its
//! part-file thread (encoding, `fsync`, renames), and retention runs on a blocking thread.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::pipeline::{Endpoints, MarketTaskState};
use crate::cli::{EXIT_INTERRUPTED, EXIT_OK, Failure};
use crate::config::Config;
use crate::feeds::binance::connector::{self, ConnectorConfig};
use crate::logging::{LogOutput, LogRing, now_ms};
use crate::market::types::{Candle, Timeframe};
use crate::storage::market::{MarketWriter, WriteStats};
use crate::storage::{StorageError, retention, state::StateDb};

/// `mmtrader record` options.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
    /// Store root (default: `[storage] root` inside the data directory).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

/// The store root for a command: the flag, else the configured one.
pub fn store_root(config: &Config, flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned()
        .unwrap_or_else(|| config.storage.root_dir(&config.paths.data_dir))
}

/// Applies the configured retention to market data and the state database.
pub fn apply_retention(
    config: &Config,
    root: &std::path::Path,
) -> Result<retention::RetentionReport, StorageError> {
    let now = now_ms();
    let report = retention::apply(
        root,
        config.storage.max_age(),
        config.storage.max_bytes(),
        now.div_euclid(86_400_000),
    )?;
    if let Some(days) = config.storage.max_age() {
        let db = StateDb::open(root)?;
        db.delete_before(now - i64::from(days) * 86_400_000)?;
    }
    Ok(report)
}

/// A closed candle is stored once its interval ended this long ago, so trades recovered
/// right after a reconnect are already in it.
const CANDLE_SETTLE_MS: i64 = 10_000;
/// How often retention runs while recording.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// Closed candles not yet stored, per symbol and timeframe (open time of the newest stored).
#[derive(Default)]
struct CandleCursor {
    written: std::collections::HashMap<(String, Timeframe), i64>,
}

impl CandleCursor {
    /// Stores the pipeline's settled closed candles that are newer than the ones stored.
    fn store(
        &mut self,
        config: &Config,
        state: &MarketTaskState,
        writer: &mut MarketWriter,
        now: i64,
    ) -> Result<(), StorageError> {
        for s in &config.symbols {
            let Some(market) = state.market(&s.exchange) else {
                continue;
            };
            for tf in Timeframe::ALL {
                let last = self.written.get(&(s.exchange.clone(), tf)).copied();
                let fresh: Vec<Candle> = market
                    .candles()
                    .series(tf)
                    .closed()
                    .filter(|c| last.is_none_or(|l| c.open_time_ms > l))
                    .filter(|c| c.open_time_ms + tf.millis() + CANDLE_SETTLE_MS <= now)
                    .cloned()
                    .collect();
                if let Some(newest) = fresh.last() {
                    self.written
                        .insert((s.exchange.clone(), tf), newest.open_time_ms);
                    writer.record_closed_candles(now, &s.exchange, tf, &fresh)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs connector and pipeline until `stop` resolves, recording every event and every
/// once-a-second step into `writer`; returns the pipeline state as the live run left it.
pub async fn record_session(
    config: &Config,
    endpoints: &Endpoints,
    writer: &mut MarketWriter,
    stop: impl Future<Output = ()>,
    mut progress: impl FnMut(&WriteStats, usize),
) -> anyhow::Result<MarketTaskState> {
    let mut state = MarketTaskState::new(config, &endpoints.name);
    let (tx, mut rx) = mpsc::channel(config.buffers.event_channel);
    let connector = connector::spawn(
        ConnectorConfig {
            rest_url: endpoints.rest.clone(),
            ws_url: endpoints.ws.clone(),
            symbols: config.symbols.iter().map(|s| s.exchange.clone()).collect(),
            reconnect: config.reconnect.clone(),
            buffers: config.buffers.clone(),
            idle_timeout: Duration::from_secs(60),
            weight_limit_1m: 6000,
        },
        tx,
    )?;
    let mut second = tokio::time::interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut report = tokio::time::interval(Duration::from_secs(5));
    report.tick().await;
    let mut retain = tokio::time::interval(RETENTION_EVERY);
    retain.tick().await;
    let mut cursor = CandleCursor::default();
    let mut retention_pass: Option<tokio::task::JoinHandle<()>> = None;
    let mut commands = Vec::new();
    tokio::pin!(stop);
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    let now = now_ms();
                    writer.record(now, &ev)?;
                    state.on_event(ev, now, &mut commands);
                    for cmd in commands.drain(..) {
                        connector.send(cmd);
                    }
                }
                _ = second.tick() => {
                    let now = now_ms();
                    writer.record_second(now)?;
                    state.on_second(now);
                    cursor.store(config, &state, writer, now)?;
                }
                _ = retain.tick() => {
                    // Walking and deleting folders is blocking I/O: keep it off the reactor,
                    // and never run two passes at once.
                    if retention_pass.as_ref().is_none_or(|r| r.is_finished()) {
                        let (cfg, root) = (config.clone(), writer.root().to_path_buf());
                        retention_pass = Some(tokio::task::spawn_blocking(move || {
                            match apply_retention(&cfg, &root) {
                                Ok(r) if !r.removed.is_empty() => tracing::info!(
                                    partitions = r.removed.len(), bytes = r.bytes_freed, "retention"
                                ),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "retention failed"),
                            }
                        }));
                    }
                }
                _ = report.tick() => progress(&writer.stats(), writer.open_files()),
                _ = &mut stop => break,
            }
        }
        Ok(())
    }
    .await;
    connector.stop().await;
    if let Some(r) = retention_pass {
        let _ = r.await;
    }
    result.map(|()| state)
}

/// Records until interrupted.
pub fn run(config: Config, args: RecordArgs) -> Result<i32, Failure> {
    let ring = LogRing::new(16);
    let _guard = crate::logging::init(&config.logging.level, LogOutput::Stderr, &ring)
        .map_err(Failure::runtime)?;
    let root = store_root(&config, args.store.as_ref());
    let session = now_ms().max(0) as u64;
    let (mut writer, recovery) =
        MarketWriter::open(&root, &config.storage, session).map_err(Failure::runtime)?;
    for f in &recovery.recovered {
        println!("record: recovered {}", f.display());
    }
    for f in &recovery.broken {
        println!("record: set aside incomplete file {}", f.display());
    }
    let removed = apply_retention(&config, &root).map_err(Failure::runtime)?;
    if !removed.removed.is_empty() {
        println!(
            "record: retention removed {} day partitions ({} bytes)",
            removed.removed.len(),
            removed.bytes_freed
        );
    }
    let rt = super::runtime()?;
    let code = rt.block_on(async {
        let (endpoints, sim) = super::endpoints(&config).await?;
        println!(
            "record: source {} into {} (files close every {} s)",
            endpoints.name,
            root.display(),
            config.storage.flush_secs
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<i32>();
        let duration = args.duration;
        tokio::spawn(async move {
            let code = wait_for_stop(duration).await;
            let _ = stop_tx.send(code);
        });
        let code = std::cell::Cell::new(EXIT_OK);
        let stop = async {
            code.set(stop_rx.await.unwrap_or(EXIT_OK));
        };
        let result = record_session(&config, &endpoints, &mut writer, stop, |s, open| {
            println!(
                "record: {} events, {} rows, {} files closed ({} bytes), {} open",
                s.events, s.rows, s.files, s.bytes, open
            );
        })
        .await;
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        result.map_err(Failure::runtime)?;
        Ok::<i32, Failure>(code.get())
    })?;
    let stats = writer.close().map_err(Failure::runtime)?;
    println!(
        "record: done: {} events, {} rows in {} files ({} bytes)",
        stats.events, stats.rows, stats.files, stats.bytes
    );
    Ok(code)
}

/// Resolves on Ctrl-C (130), SIGTERM or the end of `duration` (0).
async fn wait_for_stop(duration: Option<u64>) -> i32 {
    let timer = async {
        match duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = timer => EXIT_OK,
        _ = tokio::signal::ctrl_c() => EXIT_INTERRUPTED,
        _ = term => EXIT_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::binance::connector::FeedEvent;
    use crate::feeds::binance::wire::BinanceEvent;
    use crate::market::types::{Price, Qty, Side, Trade};
    use crate::storage::market::read_candles;

    #[test]
    fn settled_closed_candles_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let mut state = MarketTaskState::new(&config, "test");
        let (mut writer, _) = MarketWriter::open(dir.path(), &config.storage, 1).unwrap();
        let mut cursor = CandleCursor::default();
        let t0 = 1_795_392_000_000;
        let mut out = Vec::new();
        for (i, px) in [100, 101, 99, 102].into_iter().enumerate() {
            let t = t0 + i as i64 * 1000;
            state.on_event(
                FeedEvent::Market(BinanceEvent::AggTrade(Trade {
                    symbol: "ETHUSDT".into(),
                    id: i as u64 + 1,
                    time_ms: t,
                    price: Price::from_units(px),
                    qty: Qty::from_units(1),
                    taker_side: Side::Buy,
                })),
                t,
                &mut out,
            );
        }
        // 3 s after the last trade nothing has settled yet.
        cursor
            .store(&config, &state, &mut writer, t0 + 6_000)
            .unwrap();
        assert!(cursor.written.is_empty());
        // Later, the first three one-second candles have; the fourth is still open.
        cursor
            .store(&config, &state, &mut writer, t0 + 14_000)
            .unwrap();
        cursor
            .store(&config, &state, &mut writer, t0 + 14_500)
            .unwrap();
        assert_eq!(
            cursor.written.get(&("ETHUSDT".to_string(), Timeframe::S1)),
            Some(&(t0 + 2_000))
        );
        let stats = writer.close().unwrap();
        assert_eq!(stats.rows, 3, "{stats:?}");
        let got = read_candles(dir.path(), "ETHUSDT", Timeframe::S1, 0, i64::MAX).unwrap();
        let closes: Vec<Price> = got.iter().map(|c| c.close).collect();
        assert_eq!(
            closes,
            [100, 101, 99].map(Price::from_units).to_vec(),
            "{got:?}"
        );
    }
}
