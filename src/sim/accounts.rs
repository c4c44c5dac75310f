//! Simulated trading accounts: their API keys, secrets, starting balances and fees.
//!
//! The default account's key and secret are documented test values for the loopback simulator
//! (see `config.toml`), not real credentials.
//!
//! Strict mode ([`SimTradingConfig::strict`]) makes the endpoints behave as Binance documents
//! where the default is kinder: a taker order that closed at once (and its trades) is not
//! visible to `GET /api/v3/order` / `myTrades` for a while, user-data reports arrive a while
//! after the REST reply, and the strict test account ([`SimTradingConfig::strict_default`])
//! holds quote currency only, so every sell needs a buy first and base-asset fees show.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::matching::{Account, Balance};
use crate::market::types::Qty;

/// API key of the default simulated account (a documented test value).
pub const DEFAULT_API_KEY: &str = "mmtrader-sim-key-0000000000000000";
/// HMAC secret of the default simulated account (a documented test value).
pub const DEFAULT_SECRET: &str = "mmtrader-sim-secret-000000000000";

/// One simulated account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimAccountConfig {
    /// Name shown in logs.
    pub name: String,
    /// API key clients send in `X-MBX-APIKEY`.
    pub api_key: String,
    /// HMAC-SHA256 secret the signatures are checked with.
    pub secret: String,
    /// Starting balances, asset → decimal amount text (exact, e.g. `"10000"`).
    pub balances: BTreeMap<String, String>,
}

impl Default for SimAccountConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            api_key: DEFAULT_API_KEY.into(),
            secret: DEFAULT_SECRET.into(),
            balances: [("USDT", "100000"), ("ETH", "10"), ("BTC", "1")]
                .into_iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl SimAccountConfig {
    /// The default account's key and secret with 100000 USDT and nothing else: base assets
    /// come only from buys, so a sell the account cannot cover is refused as on Binance.
    pub fn quote_only() -> Self {
        Self {
            balances: [("USDT".to_string(), "100000".to_string())].into(),
            ..Self::default()
        }
    }
}

/// `[sim.trading]`: the simulator's trading endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimTradingConfig {
    /// Accounts that may trade (each with its own key and secret).
    pub accounts: Vec<SimAccountConfig>,
    /// Fee for resting (maker) fills, basis points of the asset received.
    pub maker_fee_bps: u32,
    /// Fee for taking (taker) fills, basis points of the asset received.
    pub taker_fee_bps: u32,
    /// Minutes a listenKey lives without a keepalive.
    pub listen_key_ttl_min: u64,
    /// Binance's visibility and delivery delays (the three delays below apply only when set).
    pub strict: bool,
    /// Strict mode: an order that closed on placement (a filled market order) answers -2013
    /// to `GET /api/v3/order` by `origClientOrderId` for this long, ms.
    pub query_delay_ms: u64,
    /// Strict mode: a trade is listed by `GET /api/v3/myTrades` this long after it executed, ms.
    pub trades_delay_ms: u64,
    /// Strict mode: user-data events are delivered this long after they happen (so after the
    /// REST reply of the request that caused them), ms.
    pub report_delay_ms: u64,
}

impl Default for SimTradingConfig {
    fn default() -> Self {
        Self {
            accounts: vec![SimAccountConfig::default()],
            maker_fee_bps: 10,
            taker_fee_bps: 10,
            listen_key_ttl_min: 60,
            strict: false,
            query_delay_ms: 1500,
            trades_delay_ms: 1500,
            report_delay_ms: 300,
        }
    }
}

impl SimTradingConfig {
    /// Strict mode with the quote-only test account: what tests that trade run against.
    pub fn strict_default() -> Self {
        Self {
            accounts: vec![SimAccountConfig::quote_only()],
            strict: true,
            ..Self::default()
        }
    }

    /// How long an order that closed on placement stays invisible to queries, ms.
    pub fn query_delay(&self) -> i64 {
        if self.strict {
            self.query_delay_ms as i64
        } else {
            0
        }
    }

    /// How long a trade stays out of `myTrades`, ms.
    pub fn trades_delay(&self) -> i64 {
        if self.strict {
            self.trades_delay_ms as i64
        } else {
            0
        }
    }

    /// How long user-data events are held back, ms.
    pub fn report_delay(&self) -> u64 {
        if self.strict { self.report_delay_ms } else { 0 }
    }
}

/// A trading configuration value the simulator cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountConfigError {
    /// Two accounts share a key, or a key/secret is empty.
    #[error("sim.trading.accounts[{index}]: api_key and secret must be non-empty and keys unique")]
    BadKey {
        /// Account index.
        index: usize,
    },
    /// A balance is not an exact non-negative decimal with at most 8 places.
    #[error(
        "sim.trading.accounts[{index}].balances.{asset}: expected a non-negative decimal string such as \"1000.5\""
    )]
    BadBalance {
        /// Account index.
        index: usize,
        /// Asset.
        asset: String,
    },
}

impl SimTradingConfig {
    /// Builds the engine's accounts; index = position in `accounts`.
    pub fn build_accounts(&self) -> Result<Vec<Account>, AccountConfigError> {
        let mut out = Vec::new();
        for (index, a) in self.accounts.iter().enumerate() {
            let dup = self.accounts[..index]
                .iter()
                .any(|b| b.api_key == a.api_key);
            if a.api_key.is_empty() || a.secret.is_empty() || dup {
                return Err(AccountConfigError::BadKey { index });
            }
            let mut balances = BTreeMap::new();
            for (asset, v) in &a.balances {
                let free = Qty::parse(v).ok().filter(|q| q.raw() >= 0).ok_or_else(|| {
                    AccountConfigError::BadBalance {
                        index,
                        asset: asset.clone(),
                    }
                })?;
                balances.insert(
                    asset.clone(),
                    Balance {
                        free,
                        locked: Qty::ZERO,
                    },
                );
            }
            out.push(Account {
                name: a.name.clone(),
                balances,
            });
        }
        Ok(out)
    }

    /// Index of the account with this API key.
    pub fn account_of_key(&self, api_key: &str) -> Option<usize> {
        self.accounts.iter().position(|a| a.api_key == api_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_account_builds() {
        let c = SimTradingConfig::default();
        let a = c.build_accounts().unwrap();
        assert_eq!(a[0].balances["USDT"].free, Qty::parse("100000").unwrap());
        assert_eq!(c.account_of_key(DEFAULT_API_KEY), Some(0));
        assert_eq!(c.account_of_key("nope"), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = SimTradingConfig::default();
        c.accounts[0].balances.insert("ETH".into(), "ten".into());
        let e = c.build_accounts().unwrap_err();
        assert!(e.to_string().contains("balances.ETH"));
        let mut c = SimTradingConfig::default();
        c.accounts.push(SimAccountConfig::default());
        assert_eq!(
            c.build_accounts().unwrap_err(),
            AccountConfigError::BadKey { index: 1 }
        );
        let c: Result<SimTradingConfig, _> = toml::from_str("maker_fee = 3");
        assert!(c.is_err());
    }
}
