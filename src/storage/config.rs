//! `[storage]`: where the store lives, how long it keeps data, how often files are closed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Parquet page compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (level 3): the smallest files.
    Zstd,
    /// Snappy: faster, larger.
    Snappy,
    /// No compression.
    None,
}

impl Compression {
    /// The parquet writer setting.
    pub fn to_parquet(self) -> parquet::basic::Compression {
        match self {
            Compression::Zstd => parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(3).unwrap_or_default(),
            ),
            Compression::Snappy => parquet::basic::Compression::SNAPPY,
            Compression::None => parquet::basic::Compression::UNCOMPRESSED,
        }
    }
}

/// `[storage]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Store root; a relative path is taken inside `paths.data_dir`.
    pub root: PathBuf,
    /// Delete day partitions (and state rows) older than this many days; 0 keeps everything.
    pub max_age_days: u32,
    /// Delete the oldest day partitions while market data exceeds this many MiB; 0 = no limit.
    pub max_size_mb: u64,
    /// Close open Parquet files (making their rows durable and visible) at least this often.
    pub flush_secs: u64,
    /// Close a Parquet file once it holds this many rows.
    pub max_rows_per_file: usize,
    /// Parquet compression: `zstd`, `snappy` or `none`.
    pub compression: Compression,
    /// `[storage.history]`: the inference history in the state database.
    pub history: HistoryConfig,
}

/// `[storage.history]`: every orchestrator step (input, outputs with hidden states, decision)
/// and every prediction–outcome pair, kept in `state.sqlite` within limits of age and size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Write the history while inference runs (`mmtrader desk`).
    pub enabled: bool,
    /// Delete history rows older than this many days; 0 keeps them whatever their age.
    pub max_age_days: u32,
    /// Delete the oldest history rows while the state database exceeds this many MiB; 0 = no
    /// limit.
    pub max_size_mb: u64,
    /// Step reports waiting for the writer; more are dropped (and counted), never waited for.
    pub queue: usize,
    /// Commit what arrived at least this often, ms.
    pub flush_ms: u64,
    /// Apply the age and size limits this often, seconds.
    pub retention_secs: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_age_days: 30,
            max_size_mb: 2048,
            queue: 1024,
            flush_ms: 1_000,
            retention_secs: 300,
        }
    }
}

impl HistoryConfig {
    /// Size limit in bytes (`None`: unlimited).
    pub fn max_bytes(&self) -> Option<u64> {
        (self.max_size_mb > 0).then(|| self.max_size_mb.saturating_mul(1024 * 1024))
    }

    /// Age limit in ms (`None`: unlimited).
    pub fn max_age_ms(&self) -> Option<i64> {
        (self.max_age_days > 0).then(|| i64::from(self.max_age_days) * 86_400_000)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            root: "store".into(),
            max_age_days: 0,
            max_size_mb: 0,
            flush_secs: 60,
            max_rows_per_file: 1_000_000,
            compression: Compression::Zstd,
            history: HistoryConfig::default(),
        }
    }
}

impl StorageConfig {
    /// The store root resolved against the data directory.
    pub fn root_dir(&self, data_dir: &Path) -> PathBuf {
        if self.root.is_absolute() {
            self.root.clone()
        } else {
            data_dir.join(&self.root)
        }
    }

    /// Size limit in bytes (`None`: unlimited).
    pub fn max_bytes(&self) -> Option<u64> {
        (self.max_size_mb > 0).then(|| self.max_size_mb.saturating_mul(1024 * 1024))
    }

    /// Age limit in days (`None`: unlimited).
    pub fn max_age(&self) -> Option<u32> {
        (self.max_age_days > 0).then_some(self.max_age_days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: StorageConfig = toml::from_str("compression = \"snappy\"\nflush_secs = 5").unwrap();
        assert_eq!(c.compression, Compression::Snappy);
        assert_eq!(c.flush_secs, 5);
        assert_eq!(c.root, PathBuf::from("store"));
        assert!(toml::from_str::<StorageConfig>("flush = 5").is_err());
        assert!(toml::from_str::<StorageConfig>("compression = \"lz4\"").is_err());
        assert_eq!(c.root_dir(Path::new("/d")), PathBuf::from("/d/store"));
        assert_eq!(c.max_bytes(), None);
        let h: StorageConfig =
            toml::from_str("[history]\nmax_size_mb = 3\nmax_age_days = 0").unwrap();
        assert_eq!(h.history.max_bytes(), Some(3 * 1024 * 1024));
        assert_eq!(h.history.max_age_ms(), None);
        assert_eq!(h.history.queue, HistoryConfig::default().queue);
        assert!(toml::from_str::<StorageConfig>("[history]\nqueue_len = 5").is_err());
    }

    #[test]
    fn shipped_config_documents_the_defaults_and_errors_name_the_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let cfg = crate::config::Config::load_with_env(Some(&path), &[]).unwrap();
        assert_eq!(cfg.storage, StorageConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("config.toml");
        std::fs::write(&bad, "[storage]\ncompression = \"lz4\"\n").unwrap();
        let err = crate::config::Config::load_with_env(Some(&bad), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.toml") && err.contains("storage.compression"),
            "{err}"
        );
        assert!(err.contains("zstd"), "{err}");
        let env = [("MMTRADER_STORAGE__FLUSH_SECS".to_string(), "5".to_string())];
        let cfg = crate::config::Config::load_with_env(None, &env).unwrap();
        assert_eq!(cfg.storage.flush_secs, 5);
        std::fs::write(&bad, "[storage.history]\nmax_size_mb = \"big\"\n").unwrap();
        let err = crate::config::Config::load_with_env(Some(&bad), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("storage.history.max_size_mb"), "{err}");
    }
}
