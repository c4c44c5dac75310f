//! `[collector]`: where the collector writes and how it batches.

use std::path::PathBuf;

use serde::Deserialize;

/// `[collector]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// PostgreSQL connection string (`host=… port=… user=… dbname=…` or `postgres://…`).
    pub database_url: String,
    /// Redis URL the collector publishes to (`redis://host:port/db`).
    pub redis_url: String,
    /// Prefix of every Redis key and stream.
    pub key_prefix: String,
    /// Rows per database batch (one binary COPY each).
    pub batch_rows: usize,
    /// A partial batch is written after this many milliseconds.
    pub flush_interval_ms: u64,
    /// Rows buffered in memory while the database is slow or down; the rest spill to disk.
    pub buffer_rows: usize,
    /// Folder of spill files (relative: inside `paths.data_dir`).
    pub spill_dir: PathBuf,
    /// Approximate length each Redis stream is trimmed to (`XADD MAXLEN ~`).
    pub stream_maxlen: usize,
    /// Events held for Redis while it is unreachable (oldest dropped beyond).
    pub redis_buffer: usize,
    /// Database and Redis connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// TimescaleDB: compress chunks older than this many days.
    pub compress_after_days: u32,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            database_url: "host=127.0.0.1 port=5432 user=mmtrader dbname=mmtrader".into(),
            redis_url: "redis://127.0.0.1:6379/".into(),
            key_prefix: "mmtrader".into(),
            batch_rows: 5_000,
            flush_interval_ms: 500,
            buffer_rows: 1_000_000,
            spill_dir: "spill".into(),
            stream_maxlen: 100_000,
            redis_buffer: 200_000,
            connect_timeout_ms: 3_000,
            compress_after_days: 7,
        }
    }
}

impl CollectorConfig {
    /// The first invalid key and what it expects.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.database_url.trim().is_empty() {
            return Err((
                "collector.database_url",
                "expected a connection string such as \"host=127.0.0.1 user=mmtrader dbname=mmtrader\"".into(),
            ));
        }
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") {
            return Err((
                "collector.redis_url",
                format!(
                    "expected a URL like \"redis://127.0.0.1:6379/\", got {:?}",
                    self.redis_url
                ),
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return Err((
                "collector.key_prefix",
                "expected a non-empty name without spaces".into(),
            ));
        }
        if self.batch_rows == 0 || self.buffer_rows < self.batch_rows {
            return Err((
                "collector.buffer_rows",
                "expected 0 < batch_rows <= buffer_rows".into(),
            ));
        }
        if self.flush_interval_ms == 0 || self.connect_timeout_ms == 0 {
            return Err((
                "collector.flush_interval_ms",
                "expected positive flush_interval_ms and connect_timeout_ms".into(),
            ));
        }
        if self.stream_maxlen == 0 || self.redis_buffer == 0 {
            return Err((
                "collector.stream_maxlen",
                "expected positive stream_maxlen and redis_buffer".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_documents_the_defaults() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = crate::config::Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(cfg.collector, CollectorConfig::default());
        assert_eq!(cfg.api, crate::api::config::ApiConfig::default());
        let def = crate::config::DataConfig::default();
        assert_eq!(
            (cfg.data.redis_url, cfg.data.redis_exchange),
            (def.redis_url, def.redis_exchange)
        );
    }

    #[test]
    fn bad_keys_name_file_key_and_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, needle) in [
            ("[collector]\nbatch_rows = 0\n", "collector.buffer_rows"),
            ("[collector]\nredis_url = \"x\"\n", "collector.redis_url"),
            ("[collector]\nbatchrows = 1\n", "batchrows"),
            ("[api]\nbind = \"localhost\"\n", "api.bind"),
            (
                "[data]\nsource = \"redis\"\nredis_url = \"x\"\n",
                "data.redis_url",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = crate::config::Config::load_with_env(Some(&path), &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("config.toml"),
                "{text:?}: {e}"
            );
        }
        std::fs::write(&path, "[data]\nsource = \"redis\"\n").unwrap();
        let cfg = crate::config::Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(cfg.data.source, crate::config::DataSource::Redis);
        assert!(cfg.live_endpoint().unwrap().is_none());
    }

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_key() {
        assert!(CollectorConfig::default().validate().is_ok());
        let c = CollectorConfig {
            redis_url: "localhost:6379".into(),
            ..CollectorConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "collector.redis_url");
        let c = CollectorConfig {
            batch_rows: 10,
            buffer_rows: 5,
            ..CollectorConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "collector.buffer_rows");
    }
}
