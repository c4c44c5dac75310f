//! `mmtrader collect`: the standalone collector — the configured feed headless, records to
//! PostgreSQL and Redis, and the HTTP API with metrics.

use std::sync::Arc;
use std::time::Duration;

use super::pipeline::FeedProcess;
use crate::api::auth::{check_bind, load_token};
use crate::api::server::{ApiHandle, ApiState, serve};
use crate::cli::{CollectArgs, EXIT_INTERRUPTED, EXIT_OK, Failure};
use crate::collector::metrics::Metrics;
use crate::collector::service::Collector;
use crate::config::{Config, ConfigError, DataSource};
use crate::logging::{LogOutput, LogRing};

/// Runs the collector until Ctrl-C, SIGTERM or `--duration`.
pub fn run(config: Config, args: CollectArgs) -> Result<i32, Failure> {
    if config.data.source == DataSource::Redis {
        return Err(ConfigError::Key {
            origin: config.origin(),
            key: "data.source".into(),
            message:
                "the collector needs an exchange source (sim, binance, binance-testnet), not redis"
                    .into(),
        }
        .into());
    }
    let token =
        load_token(&config.api, |name| std::env::var(name).ok()).map_err(Failure::runtime)?;
    // Refuse an open bind without a token before starting anything.
    if config.api.enabled
        && let Ok(addr) = config.api.bind.parse()
    {
        check_bind(addr, token.as_ref(), &config.api.token_env).map_err(Failure::runtime)?;
    }
    let ring = LogRing::new(16);
    let _guard = crate::logging::init(&config.logging.level, LogOutput::Stderr, &ring)
        .map_err(Failure::runtime)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let (endpoints, sim) = super::endpoints(&config).await?;
        let exchange = config.data.source.to_string();
        let metrics = Arc::new(Metrics::new());
        let mut collector = Collector::start(
            &config.collector,
            &exchange,
            &config.paths.data_dir,
            metrics.clone(),
        )
        .map_err(Failure::runtime)?;
        let (mut feed, mut snapshots) = FeedProcess::new(config.clone(), endpoints.clone());
        let symbols: Vec<String> = config.symbols.iter().map(|s| s.exchange.clone()).collect();
        feed.set_printer(collector.tap(&symbols, config.buffers.depth_buffer));
        // Followed venues' trades and tops go to the same sinks, tagged with the venue.
        let mut venue_records = super::venues::VenueRecorder::new(&config);
        if !config.venues.follow.is_empty() {
            // The printer holds a sink sender: the feed must be dropped before the sinks can
            // drain and shut down (below).
            let (trades, fanout) = (venue_records.clone(), collector.fanout().clone());
            feed.set_venue_printer(Box::new(move |venue, ev| {
                if let Some(r) = trades.trade(venue, ev) {
                    fanout.send(r);
                }
            }));
        }
        let api: Option<ApiHandle> = if config.api.enabled {
            let handle = serve(
                &config.api.bind,
                token,
                &config.api.token_env,
                ApiState {
                    snapshots: snapshots.clone(),
                    exchange: exchange.clone(),
                    database_url: Some(config.collector.database_url.clone()),
                    connect_timeout: Duration::from_millis(config.collector.connect_timeout_ms),
                    metrics: metrics.clone(),
                    live: collector.live(),
                },
            )
            .await
            .map_err(Failure::runtime)?;
            println!("collect: api on http://{}", handle.local_addr());
            Some(handle)
        } else {
            None
        };
        feed.start().map_err(Failure::runtime)?;
        println!(
            "collect: source {} ({}), {} symbols",
            endpoints.name,
            exchange,
            symbols.len()
        );
        let deadline = args
            .duration
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        let code = loop {
            tokio::select! {
                _ = every.tick() => {
                    let snap = snapshots.borrow_and_update().clone();
                    collector.on_snapshot(&snap);
                    for r in venue_records.tops(&snap) {
                        collector.fanout().send(r);
                    }
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        break EXIT_OK;
                    }
                }
                _ = shutdown_signal() => break EXIT_INTERRUPTED,
            }
        };
        feed.stop().await;
        drop(feed);
        collector.on_snapshot(&snapshots.borrow().clone());
        let report = collector.shutdown().await.map_err(Failure::runtime)?;
        println!(
            "collect: {} rows stored, {} write errors, {} rows left in spill files",
            report.rows_written, report.write_errors, report.rows_spilled
        );
        if let Some(api) = api {
            api.shutdown().await;
        }
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        Ok(code)
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
