//! `[exec]` settings and building the configured exchange executor.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::binance_spot::{BinanceSpot, BinanceSpotConfig};
use super::executor::ExchangeExecutor;
use super::signing::{Credentials, Secret};
use super::user_stream::UserStreamConfig;
use crate::trading::executor::ExecutorKind;

/// `[exec]`: the venues the exchange executors talk to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecSection {
    /// Use Binance's spot testnet instead of production when `execution.executor = "binance"`.
    pub testnet: bool,
    /// `[exec.binance]`: Binance spot production.
    pub binance: BinanceSpotConfig,
    /// `[exec.binance_testnet]`: Binance spot testnet.
    pub binance_testnet: BinanceSpotConfig,
    /// `[exec.mexc]`: MEXC spot v3.
    pub mexc: BinanceSpotConfig,
}

impl Default for ExecSection {
    fn default() -> Self {
        Self {
            testnet: false,
            binance: BinanceSpotConfig::default(),
            binance_testnet: BinanceSpotConfig {
                rest_url: "https://testnet.binance.vision".into(),
                ws_url: "wss://stream.testnet.binance.vision".into(),
                ..BinanceSpotConfig::default()
            },
            mexc: super::mexc_spot::default_config(),
        }
    }
}

impl ExecSection {
    /// Checks what serde cannot: `Err((dotted key, expected form))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, c) in [
            ("exec.binance.recv_window_ms", &self.binance),
            ("exec.binance_testnet.recv_window_ms", &self.binance_testnet),
            ("exec.mexc.recv_window_ms", &self.mexc),
        ] {
            if !(1..=60_000).contains(&c.recv_window_ms) {
                return Err((key, "expected milliseconds between 1 and 60000".into()));
            }
        }
        for (key, c) in [
            ("exec.binance.rest_url", &self.binance),
            ("exec.binance_testnet.rest_url", &self.binance_testnet),
            ("exec.mexc.rest_url", &self.mexc),
        ] {
            if !(c.rest_url.starts_with("https://") || c.rest_url.starts_with("http://")) {
                return Err((key, "expected an http(s) URL".into()));
            }
        }
        Ok(())
    }
}

/// The name the executor of `kind` goes by in logs, on screen and in its journal directory.
pub fn executor_name(kind: ExecutorKind, section: &ExecSection) -> &'static str {
    match kind {
        ExecutorKind::Paper => "paper",
        ExecutorKind::Binance if section.testnet => "binance-testnet",
        ExecutorKind::Binance => "binance",
        ExecutorKind::Mexc => "mexc",
        ExecutorKind::Sim => "sim",
    }
}

/// Builds, syncs (server time, exchangeInfo filters) and starts the executor of `kind`.
/// `sim` gives the simulator's REST and websocket URLs for [`ExecutorKind::Sim`]; it trades
/// with the simulator's documented default account.
pub async fn start_executor(
    kind: ExecutorKind,
    section: &ExecSection,
    sim: Option<(&str, &str)>,
) -> anyhow::Result<ExchangeExecutor> {
    let name = executor_name(kind, section);
    let client = match kind {
        ExecutorKind::Paper => anyhow::bail!("the paper executor is not an exchange executor"),
        ExecutorKind::Binance if section.testnet => {
            BinanceSpot::from_env(section.binance_testnet.clone())?
        }
        ExecutorKind::Binance => BinanceSpot::from_env(section.binance.clone())?,
        ExecutorKind::Mexc => super::mexc_spot::from_env(section.mexc.clone())?,
        ExecutorKind::Sim => {
            let (rest, ws) =
                sim.ok_or_else(|| anyhow::anyhow!("the sim executor needs a running simulator"))?;
            let cfg = BinanceSpotConfig {
                rest_url: rest.into(),
                ws_url: ws.into(),
                ..section.binance.clone()
            };
            let creds = Credentials {
                api_key: crate::sim::accounts::DEFAULT_API_KEY.into(),
                secret: Secret::new(crate::sim::accounts::DEFAULT_SECRET),
            };
            BinanceSpot::new(cfg, creds)?
        }
    };
    client.rest().sync_time().await?;
    client.load_instruments().await?;
    let client = Arc::new(client);
    // MEXC's user stream is protobuf on another host: its fills are learned by REST lookups.
    let stream = (kind != ExecutorKind::Mexc).then(|| UserStreamConfig {
        ws_url: client.config().ws_url.clone(),
        keepalive: Duration::from_secs(client.config().keepalive_s.max(60)),
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
    });
    Ok(ExchangeExecutor::start(name, client, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_unknown_keys_are_refused() {
        assert!(ExecSection::default().validate().is_ok());
        let bad: Result<ExecSection, _> = toml::from_str("[binance]\nrecv_window = 5\n");
        assert!(bad.is_err());
        let c: ExecSection =
            toml::from_str("testnet = true\n[binance]\nrecv_window_ms = 70000\n").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "exec.binance.recv_window_ms");
    }
}
