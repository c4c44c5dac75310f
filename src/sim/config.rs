//! Simulator configuration (deserialised from the `[sim]` table of the workstation config).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::market::types::{Price, Qty};

/// One simulated instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimSymbolConfig {
    /// Exchange symbol, uppercase (`ETHUSDT`).
    pub symbol: String,
    /// Base asset (`ETH`).
    pub base_asset: String,
    /// Quote asset (`USDT`).
    pub quote_asset: String,
    /// Price the long-run history reverts to; the market stays near it.
    pub start_price: f64,
    /// Price tick.
    pub tick_size: f64,
    /// Quantity step.
    pub step_size: f64,
    /// Daily return volatility (fraction, e.g. 0.03).
    pub daily_volatility: f64,
    /// Typical base volume per day.
    pub daily_volume: f64,
    /// Typical number of aggregate trades per day.
    pub daily_trades: u64,
    /// Typical resting quantity per book level near the top.
    pub level_qty: f64,
}

impl Default for SimSymbolConfig {
    fn default() -> Self {
        Self {
            symbol: "ETHUSDT".into(),
            base_asset: "ETH".into(),
            quote_asset: "USDT".into(),
            start_price: 3000.0,
            tick_size: 0.01,
            step_size: 0.0001,
            daily_volatility: 0.03,
            daily_volume: 300_000.0,
            daily_trades: 800_000,
            level_qty: 2.0,
        }
    }
}

/// Everything `sim::start` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Seed of the whole market: same seed, same history and same live stream.
    pub seed: u64,
    /// Address to bind (loopback by default).
    pub bind: String,
    /// TCP port; 0 picks an ephemeral port.
    pub port: u16,
    /// Instruments served.
    pub symbols: Vec<SimSymbolConfig>,
    /// Correlation of the symbols' return shocks (common-factor loading squared).
    pub correlation: f64,
    /// Interval between websocket ping frames, ms.
    pub ping_interval_ms: u64,
    /// A connection with no pong for this long is closed, ms.
    pub pong_timeout_ms: u64,
    /// Websocket connections are closed after this long, seconds.
    pub max_connection_lifetime_s: u64,
    /// REST request weight allowed per minute before HTTP 429.
    pub weight_limit_per_minute: u32,
    /// Outgoing messages buffered per connection before a slow client is dropped.
    pub ws_queue_capacity: usize,
    /// Trading endpoints: accounts (keys, secrets, balances) and fees.
    pub trading: super::accounts::SimTradingConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            bind: "127.0.0.1".into(),
            port: 0,
            symbols: vec![
                SimSymbolConfig::default(),
                SimSymbolConfig {
                    symbol: "BTCUSDT".into(),
                    base_asset: "BTC".into(),
                    start_price: 60_000.0,
                    daily_volatility: 0.025,
                    daily_volume: 20_000.0,
                    daily_trades: 1_200_000,
                    level_qty: 0.1,
                    ..SimSymbolConfig::default()
                },
            ],
            correlation: 0.8,
            ping_interval_ms: 20_000,
            pong_timeout_ms: 60_000,
            max_connection_lifetime_s: 24 * 3600,
            weight_limit_per_minute: 6000,
            ws_queue_capacity: 4096,
            trading: super::accounts::SimTradingConfig::default(),
        }
    }
}

/// A configuration value the simulator cannot run with.
#[derive(Debug, Error, PartialEq)]
pub enum SimConfigError {
    /// No symbols configured.
    #[error("sim config lists no symbols")]
    NoSymbols,
    /// A numeric field is out of range.
    #[error("sim symbol {symbol}: {field} must be {rule} (got {value})")]
    BadValue {
        /// Symbol concerned.
        symbol: String,
        /// Field name.
        field: &'static str,
        /// What the value must satisfy.
        rule: &'static str,
        /// The offending value.
        value: f64,
    },
    /// Same symbol twice, or a name that is not uppercase alphanumeric.
    #[error("sim symbol name {0:?} is duplicated or not uppercase alphanumeric")]
    BadSymbol(String),
    /// Correlation outside [0, 1].
    #[error("sim correlation must be within [0, 1] (got {0})")]
    BadCorrelation(f64),
}

/// A validated instrument with exact tick and step.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    /// Exchange symbol, uppercase.
    pub symbol: String,
    /// Base asset.
    pub base_asset: String,
    /// Quote asset.
    pub quote_asset: String,
    /// Exact tick.
    pub tick: Price,
    /// Exact step.
    pub step: Qty,
    /// Start (mean-reversion) price in ticks.
    pub start_ticks: i64,
    /// Daily volatility.
    pub daily_volatility: f64,
    /// Typical daily volume in steps.
    pub daily_volume_steps: f64,
    /// Typical daily trade count.
    pub daily_trades: u64,
    /// Typical level quantity in steps.
    pub level_steps: f64,
    /// Stable key of the symbol for the random streams.
    pub key: u64,
}

impl SymbolSpec {
    /// Exact price of a tick count.
    pub fn price(&self, ticks: i64) -> Price {
        Price(ticks * self.tick.raw())
    }

    /// Exact quantity of a step count.
    pub fn qty(&self, steps: i64) -> Qty {
        Qty(steps * self.step.raw())
    }
}

impl SimConfig {
    /// Checks the configuration and converts the instruments to exact specs.
    pub fn specs(&self) -> Result<Vec<SymbolSpec>, SimConfigError> {
        if self.symbols.is_empty() {
            return Err(SimConfigError::NoSymbols);
        }
        if !(0.0..=1.0).contains(&self.correlation) {
            return Err(SimConfigError::BadCorrelation(self.correlation));
        }
        let mut out: Vec<SymbolSpec> = Vec::new();
        for s in &self.symbols {
            let ok_name = !s.symbol.is_empty()
                && s.symbol
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !ok_name || out.iter().any(|o| o.symbol == s.symbol) {
                return Err(SimConfigError::BadSymbol(s.symbol.clone()));
            }
            let bad = |field, rule, value| SimConfigError::BadValue {
                symbol: s.symbol.clone(),
                field,
                rule,
                value,
            };
            let tick = Price::from_f64_round(s.tick_size);
            let step = Qty::from_f64_round(s.step_size);
            if tick.raw() <= 0 || !s.tick_size.is_finite() {
                return Err(bad(
                    "tick_size",
                    "positive with at most 8 decimals",
                    s.tick_size,
                ));
            }
            if step.raw() <= 0 || !s.step_size.is_finite() {
                return Err(bad(
                    "step_size",
                    "positive with at most 8 decimals",
                    s.step_size,
                ));
            }
            let start_ticks = (s.start_price / tick.to_f64()).round();
            if !(1000.0..1e12).contains(&start_ticks) {
                return Err(bad(
                    "start_price",
                    "between 1000 and 1e12 ticks",
                    s.start_price,
                ));
            }
            if !(s.daily_volatility > 0.0 && s.daily_volatility < 0.5) {
                return Err(bad("daily_volatility", "in (0, 0.5)", s.daily_volatility));
            }
            let level_steps = s.level_qty / step.to_f64();
            if !(10.0..1e12).contains(&level_steps) {
                return Err(bad("level_qty", "between 10 and 1e12 steps", s.level_qty));
            }
            // Every simulated second carries at least four trades of at least one step each.
            let min_trades = 4 * 86_400;
            if s.daily_trades < min_trades as u64 * 2 {
                return Err(bad(
                    "daily_trades",
                    "at least 691200 (8 per second)",
                    s.daily_trades as f64,
                ));
            }
            let daily_volume_steps = s.daily_volume / step.to_f64();
            if !(daily_volume_steps >= s.daily_trades as f64 * 4.0 && daily_volume_steps < 1e15) {
                return Err(bad(
                    "daily_volume",
                    "at least 4 steps per trade and below 1e15 steps",
                    s.daily_volume,
                ));
            }
            out.push(SymbolSpec {
                symbol: s.symbol.clone(),
                base_asset: s.base_asset.clone(),
                quote_asset: s.quote_asset.clone(),
                tick,
                step,
                start_ticks: start_ticks as i64,
                daily_volatility: s.daily_volatility,
                daily_volume_steps,
                daily_trades: s.daily_trades,
                level_steps,
                key: crate::sim::random::key(&s.symbol.bytes().map(u64::from).collect::<Vec<_>>()),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let specs = SimConfig::default().specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].tick, Price::parse("0.01").unwrap());
        assert_eq!(specs[0].step, Qty::parse("0.0001").unwrap());
        assert_eq!(specs[1].start_ticks, 6_000_000);
    }

    #[test]
    fn rejects_bad_values() {
        let mut c = SimConfig::default();
        c.symbols[0].tick_size = 0.0;
        assert!(matches!(
            c.specs(),
            Err(SimConfigError::BadValue {
                field: "tick_size",
                ..
            })
        ));
        let mut c = SimConfig::default();
        c.symbols[1].symbol = "ETHUSDT".into();
        assert!(matches!(c.specs(), Err(SimConfigError::BadSymbol(_))));
        let c = SimConfig {
            symbols: vec![],
            ..SimConfig::default()
        };
        assert_eq!(c.specs(), Err(SimConfigError::NoSymbols));
    }

    #[test]
    fn deserialises_partial_toml() {
        let c: SimConfig = toml::from_str("seed = 7\nport = 9001\n").unwrap();
        assert_eq!(c.seed, 7);
        assert_eq!(c.port, 9001);
        assert_eq!(c.symbols.len(), 2);
    }
}
