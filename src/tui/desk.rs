//! What the screen shows beyond market data: process memory and the model and trading
//! processes. Those processes do not exist yet; their views are `Option`s that stay `None`
//! until one publishes, and the panes say so instead of inventing numbers.

use crate::market::types::{Price, Qty, Side};

/// One loaded model, as the models pane lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// Model name.
    pub name: String,
    /// Checkpoint it was loaded from.
    pub checkpoint: String,
    /// Last inference, ms since the epoch (None before the first).
    pub last_inference_ms: Option<i64>,
}

/// State published by the inference process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelsView {
    /// Loaded models.
    pub models: Vec<ModelRow>,
    /// True while training runs.
    pub training: bool,
}

/// One open position.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionRow {
    /// `ETHUSDT`.
    pub symbol: String,
    /// Long (buy) or short (sell).
    pub side: Side,
    /// Size.
    pub qty: Qty,
    /// Average entry price.
    pub entry: Price,
}

/// Risk limits enforced by the trading process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskLimits {
    /// Largest position per symbol.
    pub max_position: Qty,
    /// Loss per day that stops trading.
    pub max_daily_loss: Price,
}

/// State published by the (paper) trading process.
#[derive(Debug, Clone, PartialEq)]
pub struct TradingView {
    /// `paper` or `live`.
    pub mode: String,
    /// Open positions.
    pub positions: Vec<PositionRow>,
    /// Limits in force (None: none configured).
    pub limits: Option<RiskLimits>,
}

/// Everything non-market the screen shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeskStatus {
    /// Resident memory of this process in bytes (None where the OS does not say).
    pub rss_bytes: Option<u64>,
    /// Inference process state (None: not running).
    pub models: Option<ModelsView>,
    /// Trading process state (None: not running).
    pub trading: Option<TradingView>,
}

/// Resident set size from the text of `/proc/self/status` (`VmRSS:  1234 kB`); kB avoids
/// depending on the page size that `/proc/self/statm` counts in.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => kb.checked_mul(1024),
        Some(_) => None,
    }
}

/// `12.3 MiB`-style text.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parses_and_rejects_garbage() {
        let text = "Name:\tmmtrader\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss(text), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots kB"), None);
        assert_eq!(parse_vm_rss("VmRSS: 12 pages"), None);
        assert_eq!(parse_vm_rss("Name: x"), None);
    }

    #[test]
    fn bytes_are_humanized() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(50 * 1024 * 1024), "50.0 MiB");
    }
}
