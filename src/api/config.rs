//! `[api]`: where the collector's HTTP API listens and where its token comes from.

use std::path::PathBuf;

use serde::Deserialize;

/// `[api]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API at all.
    pub enabled: bool,
    /// Listen address; anything but loopback requires a token.
    pub bind: String,
    /// Environment variable holding the bearer token (checked first).
    pub token_env: String,
    /// File holding the bearer token (mode 0600); empty for none.
    pub token_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: "127.0.0.1:8686".into(),
            token_env: "MMTRADER_API_TOKEN".into(),
            token_file: PathBuf::new(),
        }
    }
}

impl ApiConfig {
    /// The first invalid key and what it expects.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "api.bind",
                format!(
                    "expected an address like \"127.0.0.1:8686\", got {:?}",
                    self.bind
                ),
            ));
        }
        if self.token_env.is_empty() {
            return Err((
                "api.token_env",
                "expected an environment variable name".into(),
            ));
        }
        Ok(())
    }
}
