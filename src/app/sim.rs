//! `mmtrader sim`: the simulated exchange alone, for other clients.

use crate::cli::{EXIT_INTERRUPTED, EXIT_OK, Failure, SimArgs};
use crate::config::{Config, ConfigError};
use crate::sim::{SimConfig, SimSymbolConfig};

/// Simulator settings for the configured symbols, listening on `bind` (`host:port`).
pub fn sim_config(config: &Config, bind: &str) -> Result<SimConfig, ConfigError> {
    let addr: std::net::SocketAddr = bind.parse().map_err(|_| ConfigError::Key {
        origin: config.origin(),
        key: "sim.bind".into(),
        message: format!("expected an address like \"127.0.0.1:9443\", got {bind:?}"),
    })?;
    let defaults = SimConfig::default();
    let symbols = config
        .symbols
        .iter()
        .map(|s| {
            // Known assets keep realistic prices and volumes; others are scaled copies of ETH.
            let template = defaults
                .symbols
                .iter()
                .find(|d| d.base_asset == s.base)
                .cloned()
                .unwrap_or_else(|| SimSymbolConfig {
                    start_price: 100.0,
                    ..SimSymbolConfig::default()
                });
            SimSymbolConfig {
                symbol: s.exchange.clone(),
                base_asset: s.base.clone(),
                quote_asset: s.quote.clone(),
                ..template
            }
        })
        .collect();
    Ok(SimConfig {
        seed: config.sim.seed,
        bind: addr.ip().to_string(),
        port: addr.port(),
        symbols,
        trading: config.sim.trading.clone(),
        ..defaults
    })
}

/// Runs the simulator until Ctrl-C.
pub fn run(config: Config, args: SimArgs) -> Result<i32, Failure> {
    let mut cfg = sim_config(&config, &args.bind)?;
    if let Some(seed) = args.seed {
        cfg.seed = seed;
    }
    let ring = crate::logging::LogRing::new(16);
    let _guard = crate::logging::init(
        &config.logging.level,
        crate::logging::LogOutput::Stderr,
        &ring,
    )
    .map_err(Failure::runtime)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let sim = crate::sim::start(cfg.clone())
            .await
            .map_err(|e| Failure::runtime(e.context(format!("cannot listen on {}", args.bind))))?;
        println!(
            "mmtrader sim: Binance-protocol exchange on {} (seed {})",
            sim.local_addr(),
            cfg.seed
        );
        println!("  REST       {}/api/v3/...", sim.rest_url());
        println!(
            "  websocket  {}/stream?streams=ethusdt@depth@100ms/...",
            sim.ws_url()
        );
        println!("Ctrl-C stops it.");
        let interrupted = tokio::signal::ctrl_c().await.is_ok();
        sim.shutdown().await;
        Ok(if interrupted {
            EXIT_INTERRUPTED
        } else {
            EXIT_OK
        })
    })
}
