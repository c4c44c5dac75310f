//! Commands: wiring of the data path, the simulator and the screen.

pub mod analyze;
pub mod backtest;
pub mod collect;
pub mod desk;
pub mod desk_models;
pub mod evaluate;
pub mod feed;
pub mod import;
pub mod pipeline;
pub mod progress;
pub mod record;
pub mod replay;
pub mod sim;
pub mod trading;
pub mod train;
pub mod venues;
pub mod workstation;

use crate::cli::Failure;
use crate::config::{Config, DataSource};
use pipeline::Endpoints;

/// A multi-threaded tokio runtime sized for the data path (I/O only; models get own threads).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mmtrader-io")
        .enable_all()
        .build()
        .map_err(Failure::runtime)
}

/// The exchange endpoints for the configured source, starting the embedded simulator when
/// the source is `sim` (the returned handle keeps it alive).
pub async fn endpoints(
    config: &Config,
) -> Result<(Endpoints, Option<crate::sim::SimHandle>), Failure> {
    match config.data.source {
        DataSource::Sim => {
            let sim = crate::sim::start(sim::sim_config(config, &config.sim.bind)?)
                .await
                .map_err(|e| Failure::runtime(e.context("starting the simulated exchange")))?;
            let ep = Endpoints::of_sim(&sim, format!("sim {}", sim.local_addr()));
            Ok((ep, Some(sim)))
        }
        DataSource::Redis => Ok((
            Endpoints {
                name: format!(
                    "redis {} {}",
                    config.data.redis_url, config.data.redis_exchange
                ),
                rest: String::new(),
                ws: String::new(),
            },
            None,
        )),
        other => {
            let ep = config.live_endpoint()?.ok_or_else(|| {
                Failure::runtime(anyhow::anyhow!("no endpoints for source {other}"))
            })?;
            Ok((
                Endpoints {
                    name: other.to_string(),
                    rest: ep.rest.clone(),
                    ws: ep.ws.clone(),
                },
                None,
            ))
        }
    }
}
