//! Immutable views of the market state, published to the screen and headless printers.
//!
//! The data path builds a new [`MarketSnapshot`] a few times a second and publishes it behind an
//! `Arc`; readers never touch the live state, so rendering cannot stall the feed.

use std::sync::Arc;

use serde::Serialize;

use super::cob::CobSnapshot;
use super::types::{Candle, Level, Price, Timeframe, Trade};
use crate::feeds::health::StreamHealth;

/// How far a symbol's local book is from being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BookStatus {
    /// No data yet (feed stopped or just started).
    Idle,
    /// Buffering diffs, waiting for a REST snapshot.
    Syncing,
    /// In sync: diffs chain onto the snapshot.
    Live,
}

/// Counters of one symbol's book synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BookCounters {
    /// Diffs applied to the book.
    pub applied: u64,
    /// Stale diffs dropped (already covered by the snapshot).
    pub dropped: u64,
    /// Sequence gaps detected.
    pub gaps: u64,
    /// Resynchronisations (new snapshot after a gap, reconnect or crossed book).
    pub resyncs: u64,
}

/// One symbol as the screen sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SymbolView {
    /// `ETH/USDT`.
    pub display: String,
    /// `ETHUSDT`.
    pub exchange: String,
    /// Book status.
    pub status: BookStatus,
    /// Best bid.
    pub best_bid: Option<Level>,
    /// Best ask.
    pub best_ask: Option<Level>,
    /// Best bids, best first.
    pub bids: Vec<Level>,
    /// Best asks, best first.
    pub asks: Vec<Level>,
    /// Bid levels held.
    pub bid_levels: usize,
    /// Ask levels held.
    pub ask_levels: usize,
    /// Last trade.
    pub last_trade: Option<Trade>,
    /// Trades received.
    pub trades: u64,
    /// Book synchronisation counters.
    pub book: BookCounters,
    /// Recent candles per timeframe (oldest first), in [`Timeframe::ALL`] order.
    pub candles: Vec<(Timeframe, Vec<Candle>)>,
    /// The latest COB computation (None until the book is live).
    pub cob: Option<Arc<CobSnapshot>>,
}

impl SymbolView {
    /// Best ask minus best bid.
    pub fn spread(&self) -> Option<Price> {
        Some(self.best_ask?.price - self.best_bid?.price)
    }

    /// Candles of one timeframe.
    pub fn candles(&self, tf: Timeframe) -> &[Candle] {
        self.candles
            .iter()
            .find(|(t, _)| *t == tf)
            .map(|(_, c)| c.as_slice())
            .unwrap_or(&[])
    }
}

/// Everything the screen shows about market data, at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct MarketSnapshot {
    /// When it was taken, ms since the epoch.
    pub time_ms: i64,
    /// Data source name (`sim`, `binance`, …) and where it is.
    pub source: String,
    /// True while the feed process runs.
    pub feed_running: bool,
    /// Connection health of each link.
    pub links: Vec<StreamHealth>,
    /// Per-symbol views, in configured order.
    pub symbols: Vec<SymbolView>,
}
