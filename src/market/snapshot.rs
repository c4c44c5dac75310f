//! Immutable views of the market state, published to the screen and headless printers.
//!
//! The data path builds a new [`MarketSnapshot`] a few times a second and publishes it behind an
//! `Arc`; readers never touch the live state, so rendering cannot stall the feed.

use std::sync::Arc;

use serde::Serialize;

use super::cob::{CobSnapshot, HeatmapRow};
use super::types::{Candle, Level, Price, Timeframe, Trade};
use crate::analysis::pivots::{LEVELS, PivotKind, PivotPoint};
use crate::feeds::aggregate::AggregatedCob;
use crate::feeds::health::StreamHealth;
use crate::feeds::normalized::Venue;

/// Williams pivots of one candle series, per level (index 0 is level 1), each in confirmation
/// order and holding only pivots known by the snapshot time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeriesPivots {
    /// Pivots of levels 1..=5.
    pub levels: [Vec<PivotPoint>; LEVELS],
}

impl SeriesPivots {
    /// Pivots of one level (1..=5); empty for other numbers.
    pub fn level(&self, level: u8) -> &[PivotPoint] {
        match usize::from(level).checked_sub(1) {
            Some(i) if i < LEVELS => &self.levels[i],
            _ => &[],
        }
    }

    /// Newest pivot of `kind` on `level`: its price is that level's current support (lows)
    /// or resistance (highs).
    pub fn latest(&self, level: u8, kind: PivotKind) -> Option<&PivotPoint> {
        self.level(level).iter().rev().find(|p| p.kind == kind)
    }

    /// True when no level holds a pivot.
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(Vec::is_empty)
    }
}

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
    /// Williams pivots of each timeframe's candles above, in [`Timeframe::ALL`] order.
    pub pivots: Vec<(Timeframe, SeriesPivots)>,
    /// The newest COB heatmap rows, oldest first (empty until the book is live).
    pub heatmap: Arc<Vec<HeatmapRow>>,
    /// The exchange's trading rules for the symbol (None until exchangeInfo arrived).
    pub instrument: Option<Arc<crate::market::instrument::Instrument>>,
    /// The cross-exchange COB over the desk's book and the followed venues' books (None
    /// without followed venues, or while no book is usable), recomputed once a second.
    pub agg_cob: Option<Arc<AggregatedCob>>,
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

    /// Pivots of one timeframe (empty when none were computed).
    pub fn pivots(&self, tf: Timeframe) -> Option<&SeriesPivots> {
        self.pivots.iter().find(|(t, _)| *t == tf).map(|(_, p)| p)
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
    /// The followed cross-exchange venues' links, in configured order (empty when none).
    pub venues: Vec<VenueLinkView>,
}

/// One followed venue's link as the screen sees it.
#[derive(Debug, Clone, Serialize)]
pub struct VenueLinkView {
    /// The exchange.
    pub venue: Venue,
    /// Connection state, message age and rate, reconnects, errors.
    pub health: StreamHealth,
    /// Books that failed their integrity check (sequence gap, checksum) and were resynced.
    pub integrity_failures: u64,
    /// Instruments with a synced book now, of those followed.
    pub books: usize,
    /// Instruments followed on this venue.
    pub instruments: usize,
    /// Trades received.
    pub trades: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pivot(level: u8, kind: PivotKind, units: i64, t: i64) -> PivotPoint {
        PivotPoint {
            level,
            kind,
            price: Price::from_units(units),
            time_ms: t,
            known_ms: t + 2,
            index: t as usize,
        }
    }

    #[test]
    fn series_pivots_lookup_by_level_and_kind() {
        let mut p = SeriesPivots::default();
        assert!(p.is_empty());
        p.levels[1] = vec![
            pivot(2, PivotKind::Low, 90, 1),
            pivot(2, PivotKind::High, 110, 2),
            pivot(2, PivotKind::Low, 95, 3),
        ];
        assert!(!p.is_empty());
        assert_eq!(p.level(2).len(), 3);
        assert!(p.level(0).is_empty() && p.level(6).is_empty());
        assert_eq!(
            p.latest(2, PivotKind::Low).map(|x| x.price),
            Some(Price::from_units(95))
        );
        assert_eq!(
            p.latest(2, PivotKind::High).map(|x| x.price),
            Some(Price::from_units(110))
        );
        assert!(p.latest(1, PivotKind::High).is_none());
    }
}
