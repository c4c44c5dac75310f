//! Configuration: `config.toml` plus `MMTRADER_<SECTION>__<KEY>` environment overrides.
//!
//! Every error names the file (or environment variable), the key, and the form that was expected,
//! so a trader can fix a typo without reading code.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::market::types::Price;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "MMTRADER_";

/// A configuration problem, phrased for the person who edits the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has the wrong form or is unknown.
    #[error("{origin}: key `{key}`: {message}")]
    Key {
        /// The file or environment variable the bad value came from.
        origin: String,
        /// Dotted key path.
        key: String,
        /// What was wrong and what is expected.
        message: String,
    },
}

/// Where market data comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataSource {
    /// The built-in simulated exchange on loopback.
    Sim,
    /// Binance spot, live.
    Binance,
    /// Binance spot testnet.
    BinanceTestnet,
    /// A collector's Redis streams (`mmtrader collect` elsewhere); see `data.redis_url`.
    Redis,
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataSource::Sim => "sim",
            DataSource::Binance => "binance",
            DataSource::BinanceTestnet => "binance-testnet",
            DataSource::Redis => "redis",
        })
    }
}

/// `[data]`: what to follow and how much to keep.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Data source.
    pub source: DataSource,
    /// Instruments as written by the user (`ETH/USDT` or `ETHUSDT`).
    pub symbols: Vec<String>,
    /// Reference symbol carried in every model input.
    pub reference_symbol: String,
    /// Seconds without a message before a stream is flagged stale.
    pub stale_after_secs: u64,
    /// Candles kept per symbol and timeframe.
    pub candles_kept: usize,
    /// Candles backfilled per timeframe at start-up.
    pub backfill_frames: usize,
    /// Age bound of the raw tick buffer, seconds.
    pub tick_buffer_secs: u64,
    /// Capacity bound of the raw tick buffer.
    pub tick_buffer_capacity: usize,
    /// Notional at or above which a trade counts as large.
    #[serde(deserialize_with = "de_price")]
    pub large_trade_notional: Price,
    /// Redis URL of a collector (`source = "redis"`).
    pub redis_url: String,
    /// Exchange whose streams to follow on that Redis (`source = "redis"`).
    pub redis_exchange: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: DataSource::Sim,
            symbols: vec!["ETH/USDT".into(), "BTC/USDT".into()],
            reference_symbol: "BTC/USDT".into(),
            stale_after_secs: 5,
            candles_kept: 1500,
            backfill_frames: 300,
            tick_buffer_secs: 1800,
            tick_buffer_capacity: 200_000,
            large_trade_notional: Price::from_units(50_000),
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_exchange: "binance".into(),
        }
    }
}

/// `[symbols."X"]`: per-symbol settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolSettings {
    /// COB bucket width in quote currency.
    #[serde(deserialize_with = "de_price")]
    pub bucket_size: Price,
}

/// One exchange's REST and websocket base URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// REST base URL.
    pub rest: String,
    /// Websocket base URL.
    pub ws: String,
}

/// `[reconnect]`: backoff and connection lifetime.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First reconnect delay, ms.
    pub initial_backoff_ms: u64,
    /// Largest reconnect delay, ms.
    pub max_backoff_ms: u64,
    /// ± fraction of random jitter applied to each delay.
    pub jitter: f64,
    /// Reconnect proactively after this many seconds.
    pub max_connection_age_secs: u64,
    /// REST request timeout, ms.
    pub rest_timeout_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 250,
            max_backoff_ms: 30_000,
            jitter: 0.25,
            max_connection_age_secs: 86_000,
            rest_timeout_ms: 10_000,
        }
    }
}

/// `[buffers]`: queue and buffer sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BufferConfig {
    /// Diffs buffered per symbol while waiting for a snapshot.
    pub depth_buffer: usize,
    /// Events queued between reader and market state.
    pub event_channel: usize,
    /// Levels requested in a REST depth snapshot.
    pub snapshot_depth: u32,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            depth_buffer: 10_000,
            event_channel: 65_536,
            snapshot_depth: 1000,
        }
    }
}

/// `[sim]`: the embedded simulated exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    /// Market seed.
    pub seed: u64,
    /// Listen address (`127.0.0.1:0` = any free port).
    pub bind: String,
    /// `[sim.trading]`: accounts, keys and fees of the trading endpoints.
    pub trading: crate::sim::accounts::SimTradingConfig,
}

impl Default for SimSection {
    fn default() -> Self {
        Self {
            seed: 42,
            bind: "127.0.0.1:0".into(),
            trading: crate::sim::accounts::SimTradingConfig::default(),
        }
    }
}

/// `[paths]`: data and log directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log directory.
    pub log_dir: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            log_dir: "logs".into(),
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Level or tracing filter expression.
    pub level: String,
    /// Lines kept for the log pane.
    pub ring_lines: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            ring_lines: 2000,
        }
    }
}

/// `[ui]`: the screen's theme and key overrides.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Theme name: a built-in one or `<config dir>/themes/<name>.toml`.
    pub theme: String,
    /// Keys per action name, replacing that action's default keys.
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            theme: "dark".into(),
            keys: BTreeMap::new(),
        }
    }
}

/// The whole file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    data: DataConfig,
    symbols: BTreeMap<String, SymbolSettings>,
    endpoints: BTreeMap<String, Endpoint>,
    reconnect: ReconnectConfig,
    buffers: BufferConfig,
    sim: SimSection,
    paths: PathsConfig,
    logging: LoggingConfig,
    ui: UiConfig,
    orchestrator: crate::orchestrator::OrchestratorConfig,
    risk: crate::trading::risk::RiskConfig,
    execution: crate::trading::executor::ExecutionConfig,
    models: crate::models::runtime::ModelsConfig,
    storage: crate::storage::StorageConfig,
    exchanges: crate::feeds::fallback::ExchangesConfig,
    venues: crate::app::venues::VenuesConfig,
    collector: crate::collector::config::CollectorConfig,
    api: crate::api::config::ApiConfig,
    exec: crate::exec::connect::ExecSection,
}

/// One followed instrument, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolConfig {
    /// Display form, `ETH/USDT`.
    pub display: String,
    /// Exchange/canonical form, `ETHUSDT`.
    pub exchange: String,
    /// Base asset, `ETH`.
    pub base: String,
    /// Quote asset, `USDT`.
    pub quote: String,
    /// COB bucket width.
    pub bucket_size: Price,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File it was read from (None: built-in defaults).
    pub file: Option<PathBuf>,
    /// `[data]`.
    pub data: DataConfig,
    /// Followed symbols, in configured order.
    pub symbols: Vec<SymbolConfig>,
    /// The reference symbol, resolved.
    pub reference_symbol: SymbolConfig,
    /// Exchange endpoints by name.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// `[reconnect]`.
    pub reconnect: ReconnectConfig,
    /// `[buffers]`.
    pub buffers: BufferConfig,
    /// `[sim]`.
    pub sim: SimSection,
    /// `[paths]`, resolved against the config file's directory.
    pub paths: PathsConfig,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[ui]`.
    pub ui: UiConfig,
    /// `[orchestrator]`.
    pub orchestrator: crate::orchestrator::OrchestratorConfig,
    /// `[risk]`.
    pub risk: crate::trading::risk::RiskConfig,
    /// `[execution]`.
    pub execution: crate::trading::executor::ExecutionConfig,
    /// `[models]`.
    pub models: crate::models::runtime::ModelsConfig,
    /// `[storage]`: the embedded market-data and state store.
    pub storage: crate::storage::StorageConfig,
    /// `[exchanges]`: connectors beyond Binance and the market-data fallback.
    pub exchanges: crate::feeds::fallback::ExchangesConfig,
    /// `[venues]`: exchanges followed beside Binance for the aggregated COB.
    pub venues: crate::app::venues::VenuesConfig,
    /// `[collector]`.
    pub collector: crate::collector::config::CollectorConfig,
    /// `[api]`.
    pub api: crate::api::config::ApiConfig,
    /// `[exec]`: exchange venues of the exchange executors.
    pub exec: crate::exec::connect::ExecSection,
}

const KNOWN_QUOTES: [&str; 10] = [
    "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "EUR", "TRY", "BTC", "ETH", "BNB",
];

/// Splits `ETH/USDT`, `eth-usdt` or `ETHUSDT` into (base, quote).
pub fn split_symbol(text: &str) -> Option<(String, String)> {
    let upper = text.trim().to_ascii_uppercase();
    if let Some((b, q)) = upper.split_once(['/', '-', '_']) {
        let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
        return (ok(b) && ok(q)).then(|| (b.to_string(), q.to_string()));
    }
    KNOWN_QUOTES.iter().find_map(|q| {
        let base = upper.strip_suffix(q)?;
        (!base.is_empty() && base.chars().all(|c| c.is_ascii_alphanumeric()))
            .then(|| (base.to_string(), q.to_string()))
    })
}

fn default_bucket(base: &str) -> Price {
    match base {
        "BTC" => Price::from_units(10),
        _ => Price::from_units(1),
    }
}

fn de_price<'de, D: Deserializer<'de>>(d: D) -> Result<Price, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(i64),
        Float(f64),
        Text(String),
    }
    let text = match Num::deserialize(d)? {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => f.to_string(),
        Num::Text(s) => s,
    };
    Price::parse(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "expected a decimal number such as \"1\" or \"0.5\" (at most 8 decimals), got {text:?}: {e}"
        ))
    })
}

impl Default for Config {
    fn default() -> Self {
        Self::from_value(toml::Table::new(), None, "built-in defaults")
            .expect("built-in defaults are valid")
    }
}

impl Config {
    /// Loads `path` (or `./config.toml` when present, else the defaults), then applies overrides
    /// from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.is_file()),
        };
        let (mut table, origin) = match &file {
            Some(f) => {
                let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
                    file: f.clone(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            file: f.display().to_string(),
                            message: e.to_string().trim().to_string(),
                        })?;
                (table, f.display().to_string())
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        let overridden = apply_env_overrides(&mut table, env)?;
        let mut cfg = Self::from_value(table, file.clone(), &origin).map_err(|e| match e {
            // Name the environment variable when the bad key came from there.
            ConfigError::Key {
                key,
                message,
                origin,
            } => {
                let origin = overridden
                    .iter()
                    .find(|(k, _)| key == *k || key.starts_with(&format!("{k}.")))
                    .map(|(_, var)| format!("environment variable {var}"))
                    .unwrap_or(origin);
                ConfigError::Key {
                    origin,
                    key,
                    message,
                }
            }
            other => other,
        })?;
        if let Some(dir) = file.as_deref().and_then(Path::parent) {
            cfg.paths.data_dir = dir.join(&cfg.paths.data_dir);
            cfg.paths.log_dir = dir.join(&cfg.paths.log_dir);
        }
        Ok(cfg)
    }

    fn from_value(
        table: toml::Table,
        file: Option<PathBuf>,
        origin: &str,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::Key {
                    origin: origin.to_string(),
                    key,
                    message: e.into_inner().message().trim().to_string(),
                }
            })?;
        let key_err = |key: &str, message: String| ConfigError::Key {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };

        if raw.data.symbols.is_empty() {
            return Err(key_err(
                "data.symbols",
                "expected at least one symbol".into(),
            ));
        }
        let resolve = |key: &str, text: &str| -> Result<SymbolConfig, ConfigError> {
            let (base, quote) = split_symbol(text).ok_or_else(|| {
                key_err(
                    key,
                    format!("expected a symbol like \"ETH/USDT\", got {text:?}"),
                )
            })?;
            let settings = raw
                .symbols
                .get(text)
                .or_else(|| raw.symbols.get(&format!("{base}/{quote}")))
                .or_else(|| raw.symbols.get(&format!("{base}{quote}")));
            let bucket_size = settings
                .map(|s| s.bucket_size)
                .unwrap_or(default_bucket(&base));
            if bucket_size <= Price::ZERO {
                return Err(key_err(
                    &format!("symbols.\"{text}\".bucket_size"),
                    "expected a positive decimal".into(),
                ));
            }
            Ok(SymbolConfig {
                display: format!("{base}/{quote}"),
                exchange: format!("{base}{quote}"),
                base,
                quote,
                bucket_size,
            })
        };
        let mut symbols = Vec::new();
        for (i, s) in raw.data.symbols.iter().enumerate() {
            let sc = resolve(&format!("data.symbols[{i}]"), s)?;
            if symbols
                .iter()
                .any(|o: &SymbolConfig| o.exchange == sc.exchange)
            {
                return Err(key_err(
                    &format!("data.symbols[{i}]"),
                    format!("{s:?} is listed twice"),
                ));
            }
            symbols.push(sc);
        }
        // Settings may exist for symbols not followed right now (an env override can narrow
        // data.symbols); only a key that is not a symbol at all is an error.
        if let Some(name) = raw.symbols.keys().find(|n| split_symbol(n).is_none()) {
            return Err(key_err(
                &format!("symbols.\"{name}\""),
                "expected a symbol like \"ETH/USDT\" as the table name".into(),
            ));
        }
        let reference_symbol = resolve("data.reference_symbol", &raw.data.reference_symbol)?;

        let r = &raw.reconnect;
        if r.initial_backoff_ms == 0 || r.max_backoff_ms < r.initial_backoff_ms {
            return Err(key_err(
                "reconnect.max_backoff_ms",
                "expected 0 < initial_backoff_ms <= max_backoff_ms".into(),
            ));
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(key_err(
                "reconnect.jitter",
                "expected a fraction from 0 to 1".into(),
            ));
        }
        if raw.data.candles_kept < raw.data.backfill_frames {
            return Err(key_err(
                "data.candles_kept",
                "expected at least data.backfill_frames candles kept".into(),
            ));
        }
        if raw.data.stale_after_secs == 0 {
            return Err(key_err(
                "data.stale_after_secs",
                "expected a positive integer".into(),
            ));
        }
        if raw.buffers.depth_buffer == 0 || raw.buffers.event_channel == 0 {
            return Err(key_err("buffers", "expected positive buffer sizes".into()));
        }
        if !(1..=5000).contains(&raw.buffers.snapshot_depth) {
            return Err(key_err(
                "buffers.snapshot_depth",
                "expected an integer from 1 to 5000".into(),
            ));
        }
        if raw.sim.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(key_err(
                "sim.bind",
                format!(
                    "expected an address like \"127.0.0.1:0\", got {:?}",
                    raw.sim.bind
                ),
            ));
        }
        if raw.ui.theme.trim().is_empty() {
            return Err(key_err(
                "ui.theme",
                "expected a theme name such as \"dark\", \"light\" or \"high-contrast\"".into(),
            ));
        }
        if let Err(e) = crate::tui::keys::KeyMap::with_overrides(&raw.ui.keys) {
            return Err(key_err("ui.keys", e.to_string()));
        }
        if let Err((key, message)) = raw.orchestrator.validate() {
            return Err(key_err(&key, message));
        }
        if let Err((k, msg)) = raw.execution.validate().and(raw.risk.validate()) {
            return Err(key_err(k, msg));
        }
        if let Err((key, message)) = raw.models.check() {
            return Err(key_err(key, message));
        }
        if let Err((key, message)) = raw.exchanges.validate().and(raw.venues.validate()) {
            return Err(key_err(&key, message));
        }
        if let Err((key, message)) = raw.collector.validate().and(raw.api.validate()) {
            return Err(key_err(key, message));
        }
        if raw.data.source == DataSource::Redis && !raw.data.redis_url.starts_with("redis") {
            return Err(key_err(
                "data.redis_url",
                format!(
                    "expected a URL like \"redis://127.0.0.1:6379/\", got {:?}",
                    raw.data.redis_url
                ),
            ));
        }
        if let Err((k, msg)) = raw.exec.validate() {
            return Err(key_err(k, msg));
        }
        if let Err(e) = raw.sim.trading.build_accounts() {
            return Err(key_err("sim.trading.accounts", e.to_string()));
        }
        let mut endpoints = default_endpoints();
        endpoints.extend(raw.endpoints);

        Ok(Self {
            file,
            data: raw.data,
            symbols,
            reference_symbol,
            endpoints,
            reconnect: raw.reconnect,
            buffers: raw.buffers,
            sim: raw.sim,
            paths: raw.paths,
            logging: raw.logging,
            ui: raw.ui,
            orchestrator: raw.orchestrator,
            risk: raw.risk,
            execution: raw.execution,
            models: raw.models,
            storage: raw.storage,
            exchanges: raw.exchanges,
            venues: raw.venues,
            collector: raw.collector,
            api: raw.api,
            exec: raw.exec,
        })
    }

    /// The endpoints of the configured live source (None for the simulator).
    pub fn live_endpoint(&self) -> Result<Option<&Endpoint>, ConfigError> {
        match self.data.source {
            DataSource::Sim | DataSource::Redis => Ok(None),
            other => {
                let name = other.to_string();
                self.endpoints
                    .get(&name)
                    .map(Some)
                    .ok_or_else(|| ConfigError::Key {
                        origin: self.origin(),
                        key: format!("endpoints.{name}"),
                        message: "expected a table with `rest` and `ws` URLs".into(),
                    })
            }
        }
    }

    /// Where this configuration came from, for messages.
    pub fn origin(&self) -> String {
        self.file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into())
    }
}

fn default_endpoints() -> BTreeMap<String, Endpoint> {
    BTreeMap::from([
        (
            "binance".to_string(),
            Endpoint {
                rest: "https://api.binance.com".into(),
                ws: "wss://stream.binance.com:9443".into(),
            },
        ),
        (
            "binance-testnet".to_string(),
            Endpoint {
                rest: "https://testnet.binance.vision".into(),
                ws: "wss://stream.testnet.binance.vision".into(),
            },
        ),
    ])
}

/// Applies `MMTRADER_A__B=value` overrides; returns (dotted key, variable) for each applied.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut applied = Vec::new();
    for (var, value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // MMTRADER_TESTDATA and similar single-word variables are not config keys.
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(ConfigError::Key {
                origin: format!("environment variable {var}"),
                key: path.join("."),
                message: "expected MMTRADER_<SECTION>__<KEY>".into(),
            });
        }
        let parsed = parse_env_value(value);
        let mut node = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = node
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Key {
                        origin: format!("environment variable {var}"),
                        key: path.join("."),
                        message: format!("`{part}` is not a section"),
                    });
                }
            };
        }
        node.insert(path[path.len() - 1].clone(), parsed);
        applied.push((path.join("."), var.clone()));
    }
    Ok(applied)
}

fn parse_env_value(value: &str) -> toml::Value {
    let wrapped = format!("v = {value}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.into())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn shipped_config_file_is_valid_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = Config::load_with_env(Some(&path), &[]).unwrap();
        let def = Config::default();
        assert_eq!(cfg.symbols, def.symbols);
        assert_eq!(cfg.data.source, DataSource::Sim);
        assert_eq!(cfg.symbols[0].bucket_size, Price::from_units(1));
        assert_eq!(cfg.symbols[1].bucket_size, Price::from_units(10));
        assert_eq!(cfg.reference_symbol.exchange, "BTCUSDT");
    }

    #[test]
    fn env_overrides_apply_with_types() {
        let env = vec![
            (
                "MMTRADER_DATA__SOURCE".to_string(),
                "binance-testnet".to_string(),
            ),
            ("MMTRADER_SIM__SEED".to_string(), "7".to_string()),
            (
                "MMTRADER_DATA__SYMBOLS".to_string(),
                "[\"SOL/USDT\"]".to_string(),
            ),
            ("MMTRADER_TESTDATA".to_string(), "/x".to_string()),
        ];
        let cfg = Config::load_with_env(None, &env).unwrap();
        assert_eq!(cfg.data.source, DataSource::BinanceTestnet);
        assert_eq!(cfg.sim.seed, 7);
        assert_eq!(cfg.symbols[0].exchange, "SOLUSDT");
        assert!(cfg.live_endpoint().unwrap().unwrap().ws.contains("testnet"));
    }

    #[test]
    fn bad_values_name_file_key_and_form() {
        let (_d, path) = write("[data]\nsource = \"kraken\"\n");
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("data.source"), "{err}");
        assert!(err.contains("binance-testnet"), "{err}");

        let (_d, path) = write("[symbols.\"ETH/USDT\"]\nbucket_size = \"one\"\n");
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bucket_size") && err.contains("decimal"),
            "{err}"
        );

        let (_d, path) = write("[reconect]\n");
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("reconect"), "{err}");

        let (_d, path) = write("[data\n");
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not valid TOML") && err.contains("line"),
            "{err}"
        );

        let env = vec![("MMTRADER_SIM__SEED".to_string(), "\"abc\"".to_string())];
        let err = Config::load_with_env(None, &env).unwrap_err().to_string();
        assert!(
            err.contains("MMTRADER_SIM__SEED") && err.contains("sim.seed"),
            "{err}"
        );

        let (_d, path) = write("[data]\nsymbols = [\"ETH/USDT\", \"ETHUSDT\"]\n");
        let err = Config::load_with_env(Some(&path), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn ui_section_sets_theme_and_validates_keys() {
        assert_eq!(Config::default().ui, UiConfig::default());
        let (_d, p) = write("[ui]\ntheme = \"light\"\n[ui.keys]\nquit = [\"x\", \"home\"]\n");
        let cfg = Config::load_with_env(Some(&p), &[]).unwrap();
        assert_eq!(cfg.ui.theme, "light");
        assert_eq!(
            cfg.ui.keys["quit"],
            vec!["x".to_string(), "home".to_string()]
        );
        for (text, needle) in [
            ("[ui.keys]\nquit = [\"f\"]\n", "bound to both"),
            ("[ui.keys]\nfly = [\"y\"]\n", "unknown action"),
            ("[ui]\ntheme = \"\"\n", "ui.theme"),
            ("[ui]\ncolour = 1\n", "colour"),
        ] {
            let (_d, p) = write(text);
            let e = Config::load_with_env(Some(&p), &[])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn symbols_split_in_every_form() {
        assert_eq!(
            split_symbol("eth/usdt"),
            Some(("ETH".into(), "USDT".into()))
        );
        assert_eq!(split_symbol("BTCUSDT"), Some(("BTC".into(), "USDT".into())));
        assert_eq!(split_symbol("BTC-EUR"), Some(("BTC".into(), "EUR".into())));
        assert_eq!(split_symbol("USDT"), None);
        assert_eq!(split_symbol("E$/X"), None);
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let (dir, path) = write("[paths]\ndata_dir = \"d\"\n");
        let cfg = Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(cfg.paths.data_dir, dir.path().join("d"));
    }
}
