//! Williams market structure: swing pivots over five recursive levels, computed incrementally.
//!
//! Level 1 pivots come from candles; level `n + 1` pivots come from the level-`n` pivots of the
//! same kind. One [`WilliamsEngine`] follows one series (symbol × timeframe).
//!
//! **Rule.** With `k` bars per side, candle `i` is a level-1 high when its high is strictly
//! above the highs of the `k` candles before it and at least as high as the highs of the `k`
//! candles after it (lows mirrored). **Tie rule:** of equal highs inside a window the earliest
//! one is the pivot, so a flat top yields exactly one pivot, on its first bar. A candle can be
//! both a high and a low pivot (an outside bar). The first `k` candles cannot be pivots (their
//! left side is incomplete). The same rule applies to the sequence of level-`n` highs (lows) to
//! find level-`n + 1` highs (lows).
//!
//! **Causality.** A level-1 pivot at candle `i` becomes known when candle `i + k` closes:
//! `known_ms = open_time_ms(i + k) + interval_ms`. A higher-level pivot becomes known when its
//! `k`-th right-side lower-level pivot became known. Use [`WilliamsEngine::known_at`] or
//! [`WilliamsEngine::level_at`] so nothing downstream sees a pivot before it was known.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::market::types::{Candle, Price, Timeframe};

/// Number of recursive pivot levels.
pub const LEVELS: usize = 5;

/// Which extreme a pivot marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PivotKind {
    /// A swing high.
    High,
    /// A swing low.
    Low,
}

impl PivotKind {
    /// `H` or `L`, for compact text output.
    pub const fn letter(self) -> char {
        match self {
            PivotKind::High => 'H',
            PivotKind::Low => 'L',
        }
    }
}

/// One confirmed pivot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PivotPoint {
    /// Level 1..=5.
    pub level: u8,
    /// High or low.
    pub kind: PivotKind,
    /// The pivot candle's high (for highs) or low (for lows).
    pub price: Price,
    /// Open time of the pivot candle, ms since the epoch.
    pub time_ms: i64,
    /// When the pivot became known (close time of the confirming candle), ms since the epoch.
    pub known_ms: i64,
    /// Index of the pivot candle among the candles fed to the engine (0-based).
    pub index: usize,
}

/// Engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PivotConfig {
    /// Bars (or lower-level pivots) required on each side; at least 1.
    pub bars_per_side: usize,
    /// Candle length in ms; a candle closes at `open_time_ms + interval_ms`.
    pub interval_ms: i64,
    /// Pivots kept per level for queries (0 keeps all). Memory stays bounded for live series:
    /// a level trims its oldest pivots once it holds twice this many (amortized O(1)).
    pub history: usize,
}

impl PivotConfig {
    /// Two bars per side for candles of `tf`, full history.
    pub const fn for_timeframe(tf: Timeframe) -> Self {
        Self {
            bars_per_side: 2,
            interval_ms: tf.millis(),
            history: 0,
        }
    }
}

/// Why a candle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PivotError {
    /// Candles must arrive in strictly increasing open time.
    #[error("candle open time {got} ms is not after the previous candle's {prev} ms")]
    NotIncreasing {
        /// Previous candle's open time.
        prev: i64,
        /// Rejected candle's open time.
        got: i64,
    },
    /// A candle whose low is above its high.
    #[error("candle at {time_ms} ms has low {low} above high {high}")]
    LowAboveHigh {
        /// Candle open time.
        time_ms: i64,
        /// Its high.
        high: Price,
        /// Its low.
        low: Price,
    },
}

/// Direction of a level's structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trend {
    /// Higher highs and higher lows.
    Up,
    /// Lower highs and lower lows.
    Down,
    /// Mixed (e.g. higher high with lower low) or equal.
    Sideways,
    /// Fewer than two highs or two lows known.
    Unknown,
}

/// Pivot-based normalization range of one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PivotBounds {
    /// Lowest of the recent pivot lows.
    pub low: Price,
    /// Highest of the recent pivot highs.
    pub high: Price,
}

impl PivotBounds {
    /// Position of `price` in the range: 0 at `low`, 1 at `high`, outside [0, 1] beyond them.
    pub fn normalize(&self, price: Price) -> f64 {
        let low = self.low.raw() as f64;
        (price.raw() as f64 - low) / (self.high.raw() as f64 - low)
    }

    /// True when `low <= price <= high`.
    pub fn contains(&self, price: Price) -> bool {
        self.low <= price && price <= self.high
    }
}

/// Read-only view of one level's pivots (all confirmed ones, or those known at some time).
#[derive(Debug, Clone, Copy)]
pub struct LevelView<'a> {
    pivots: &'a [PivotPoint],
}

impl<'a> LevelView<'a> {
    /// The pivots in confirmation order (ascending `known_ms`).
    pub fn pivots(&self) -> &'a [PivotPoint] {
        self.pivots
    }

    /// Pivots of one kind, newest first.
    pub fn recent(&self, kind: PivotKind) -> impl Iterator<Item = &'a PivotPoint> + 'a {
        self.pivots.iter().rev().filter(move |p| p.kind == kind)
    }

    /// Newest high pivot.
    pub fn last_high(&self) -> Option<&'a PivotPoint> {
        self.recent(PivotKind::High).next()
    }

    /// Newest low pivot.
    pub fn last_low(&self) -> Option<&'a PivotPoint> {
        self.recent(PivotKind::Low).next()
    }

    /// Up for higher highs and higher lows, down for lower highs and lower lows.
    pub fn trend(&self) -> Trend {
        let mut highs = self.recent(PivotKind::High);
        let mut lows = self.recent(PivotKind::Low);
        let (Some(h2), Some(h1), Some(l2), Some(l1)) =
            (highs.next(), highs.next(), lows.next(), lows.next())
        else {
            return Trend::Unknown;
        };
        if h2.price > h1.price && l2.price > l1.price {
            Trend::Up
        } else if h2.price < h1.price && l2.price < l1.price {
            Trend::Down
        } else {
            Trend::Sideways
        }
    }

    /// Prices of the `n` newest pivot lows, newest first.
    pub fn support(&self, n: usize) -> Vec<Price> {
        self.recent(PivotKind::Low)
            .take(n)
            .map(|p| p.price)
            .collect()
    }

    /// Prices of the `n` newest pivot highs, newest first.
    pub fn resistance(&self, n: usize) -> Vec<Price> {
        self.recent(PivotKind::High)
            .take(n)
            .map(|p| p.price)
            .collect()
    }

    /// Min of the `n` newest lows and max of the `n` newest highs; `None` without both kinds
    /// or when that range is empty (high not above low).
    pub fn bounds(&self, n: usize) -> Option<PivotBounds> {
        let low = self.recent(PivotKind::Low).take(n).map(|p| p.price).min()?;
        let high = self
            .recent(PivotKind::High)
            .take(n)
            .map(|p| p.price)
            .max()?;
        (high > low).then_some(PivotBounds { low, high })
    }
}

/// Is `c` (at the centre of `window`, with `k` on each side) a pivot of `kind`?
#[inline]
fn is_pivot<T: Copy + PartialOrd>(window: impl Fn(usize) -> T, k: usize, kind: PivotKind) -> bool {
    let c = window(k);
    let beats = |o: T, strict: bool| match (kind, strict) {
        (PivotKind::High, true) => c > o,
        (PivotKind::High, false) => c >= o,
        (PivotKind::Low, true) => c < o,
        (PivotKind::Low, false) => c <= o,
    };
    (0..k).all(|i| beats(window(i), true)) && (k + 1..=2 * k).all(|i| beats(window(i), false))
}

/// Fixed ring of the last `2k + 1` items.
#[derive(Debug, Clone)]
struct Ring<T> {
    items: VecDeque<T>,
    cap: usize,
}

impl<T: Copy> Ring<T> {
    fn new(cap: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(cap + 1),
            cap,
        }
    }

    fn push(&mut self, x: T) -> bool {
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back(x);
        self.items.len() == self.cap
    }
}

/// Incremental Williams market structure over [`LEVELS`] levels for one series.
#[derive(Debug, Clone)]
pub struct WilliamsEngine {
    cfg: PivotConfig,
    /// Last `2k + 1` candles as (high, low, open time).
    candles: Ring<(Price, Price, i64)>,
    count: usize,
    last_time: Option<i64>,
    /// Confirmed pivots per level, in confirmation order.
    levels: [Vec<PivotPoint>; LEVELS],
    /// Last `2k + 1` highs / lows of level `n` feeding level `n + 1` (indices 0..LEVELS-1).
    feed_highs: Vec<Ring<PivotPoint>>,
    feed_lows: Vec<Ring<PivotPoint>>,
    fresh: Vec<PivotPoint>,
}

impl WilliamsEngine {
    /// An empty engine.
    pub fn new(cfg: PivotConfig) -> Self {
        let k = cfg.bars_per_side.max(1);
        let cfg = PivotConfig {
            bars_per_side: k,
            ..cfg
        };
        Self {
            cfg,
            candles: Ring::new(2 * k + 1),
            count: 0,
            last_time: None,
            levels: Default::default(),
            feed_highs: (0..LEVELS - 1).map(|_| Ring::new(2 * k + 1)).collect(),
            feed_lows: (0..LEVELS - 1).map(|_| Ring::new(2 * k + 1)).collect(),
            fresh: Vec::new(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> PivotConfig {
        self.cfg
    }

    /// Candles accepted so far.
    pub fn candles_seen(&self) -> usize {
        self.count
    }

    /// Feeds the next candle; returns the pivots (all levels) that became known with it.
    pub fn update(&mut self, candle: &Candle) -> Result<&[PivotPoint], PivotError> {
        if let Some(prev) = self.last_time
            && candle.open_time_ms <= prev
        {
            return Err(PivotError::NotIncreasing {
                prev,
                got: candle.open_time_ms,
            });
        }
        if candle.low > candle.high {
            return Err(PivotError::LowAboveHigh {
                time_ms: candle.open_time_ms,
                high: candle.high,
                low: candle.low,
            });
        }
        self.last_time = Some(candle.open_time_ms);
        self.fresh.clear();
        let k = self.cfg.bars_per_side;
        let full = self
            .candles
            .push((candle.high, candle.low, candle.open_time_ms));
        self.count += 1;
        if full {
            let known_ms = candle.open_time_ms.saturating_add(self.cfg.interval_ms);
            let index = self.count - 1 - k;
            let w = &self.candles.items;
            let (high, low, time_ms) = w[k];
            for kind in [PivotKind::High, PivotKind::Low] {
                let hit = match kind {
                    PivotKind::High => is_pivot(|i| w[i].0, k, kind),
                    PivotKind::Low => is_pivot(|i| w[i].1, k, kind),
                };
                if hit {
                    let price = if kind == PivotKind::High { high } else { low };
                    self.fresh.push(PivotPoint {
                        level: 1,
                        kind,
                        price,
                        time_ms,
                        known_ms,
                        index,
                    });
                }
            }
            // Cascade: every fresh pivot of level n may confirm one of level n + 1.
            let mut i = 0;
            while i < self.fresh.len() {
                let p = self.fresh[i];
                let kept = &mut self.levels[p.level as usize - 1];
                kept.push(p);
                let h = self.cfg.history;
                if h > 0 && kept.len() >= 2 * h {
                    kept.drain(..kept.len() - h);
                }
                if (p.level as usize) < LEVELS {
                    let ring = match p.kind {
                        PivotKind::High => &mut self.feed_highs[p.level as usize - 1],
                        PivotKind::Low => &mut self.feed_lows[p.level as usize - 1],
                    };
                    if ring.push(p) && is_pivot(|j| ring.items[j].price, k, p.kind) {
                        let c = ring.items[k];
                        self.fresh.push(PivotPoint {
                            level: p.level + 1,
                            known_ms: p.known_ms,
                            ..c
                        });
                    }
                }
                i += 1;
            }
        }
        Ok(&self.fresh)
    }

    /// Confirmed pivots of `level` (1..=5) in confirmation order (the retained ones when
    /// `history` is set); empty for other levels.
    pub fn pivots(&self, level: u8) -> &[PivotPoint] {
        match level {
            1..=5 => &self.levels[level as usize - 1],
            _ => &[],
        }
    }

    /// Pivots of `level` that were known at `t_ms` (`known_ms <= t_ms`).
    pub fn known_at(&self, level: u8, t_ms: i64) -> &[PivotPoint] {
        let all = self.pivots(level);
        &all[..all.partition_point(|p| p.known_ms <= t_ms)]
    }

    /// View over every confirmed pivot of `level`.
    pub fn level(&self, level: u8) -> LevelView<'_> {
        LevelView {
            pivots: self.pivots(level),
        }
    }

    /// View over the pivots of `level` known at `t_ms`.
    pub fn level_at(&self, level: u8, t_ms: i64) -> LevelView<'_> {
        LevelView {
            pivots: self.known_at(level, t_ms),
        }
    }
}

/// Batch (non-incremental) computation over a whole series; equals feeding the candles to a
/// [`WilliamsEngine`] one by one (rejected candles are skipped the same way).
pub fn batch_pivots(candles: &[Candle], cfg: PivotConfig) -> [Vec<PivotPoint>; LEVELS] {
    let k = cfg.bars_per_side.max(1);
    let mut accepted: Vec<&Candle> = Vec::with_capacity(candles.len());
    for c in candles {
        let increasing = accepted
            .last()
            .is_none_or(|p| c.open_time_ms > p.open_time_ms);
        if increasing && c.low <= c.high {
            accepted.push(c);
        }
    }
    let mut out: [Vec<PivotPoint>; LEVELS] = Default::default();
    let n = accepted.len();
    for i in k..n.saturating_sub(k) {
        let c = accepted[i];
        let known_ms = accepted[i + k].open_time_ms.saturating_add(cfg.interval_ms);
        for kind in [PivotKind::High, PivotKind::Low] {
            let price_of = |j: usize| match kind {
                PivotKind::High => accepted[i - k + j].high,
                PivotKind::Low => accepted[i - k + j].low,
            };
            if is_pivot(price_of, k, kind) {
                out[0].push(PivotPoint {
                    level: 1,
                    kind,
                    price: price_of(k),
                    time_ms: c.open_time_ms,
                    known_ms,
                    index: i,
                });
            }
        }
    }
    for level in 1..LEVELS {
        let lower = &out[level - 1];
        // (position in the lower list of the confirming pivot, new pivot)
        let mut found: Vec<(usize, PivotPoint)> = Vec::new();
        for kind in [PivotKind::High, PivotKind::Low] {
            let same: Vec<(usize, &PivotPoint)> = lower
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == kind)
                .collect();
            for m in k..same.len().saturating_sub(k) {
                if is_pivot(|j| same[m - k + j].1.price, k, kind) {
                    let (pos, confirming) = same[m + k];
                    found.push((
                        pos,
                        PivotPoint {
                            level: level as u8 + 1,
                            known_ms: confirming.known_ms,
                            ..*same[m].1
                        },
                    ));
                }
            }
        }
        found.sort_by_key(|(pos, _)| *pos);
        out[level] = found.into_iter().map(|(_, p)| p).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Qty;

    fn candle(i: i64, high: i64, low: i64) -> Candle {
        Candle {
            open_time_ms: i * 1_000,
            open: Price::from_units(low),
            high: Price::from_units(high),
            low: Price::from_units(low),
            close: Price::from_units(high),
            volume: Qty::from_units(1),
            trades: 1,
        }
    }

    fn cfg(k: usize) -> PivotConfig {
        PivotConfig {
            bars_per_side: k,
            interval_ms: 1_000,
            history: 0,
        }
    }

    #[test]
    fn bounded_history_keeps_the_newest_pivots() {
        let mut full = WilliamsEngine::new(cfg(1));
        let mut bounded = WilliamsEngine::new(PivotConfig {
            history: 3,
            ..cfg(1)
        });
        for i in 0..200 {
            let h = 10 + (i * 7919 % 13);
            let c = candle(i, h, h - 1 - (i % 3));
            full.update(&c).unwrap();
            bounded.update(&c).unwrap();
            for level in 1..=LEVELS as u8 {
                let (a, b) = (full.pivots(level), bounded.pivots(level));
                assert!(b.len() < 6);
                assert_eq!(b, &a[a.len() - b.len()..]);
            }
        }
        assert!(full.pivots(1).len() > 20);
    }

    #[test]
    fn level1_high_and_low_with_known_time() {
        let highs = [10, 11, 15, 12, 11, 13, 14];
        let lows = [9, 8, 10, 9, 7, 9, 10];
        let mut e = WilliamsEngine::new(cfg(2));
        let mut seen = Vec::new();
        for (i, (&h, &l)) in highs.iter().zip(&lows).enumerate() {
            seen.extend_from_slice(e.update(&candle(i as i64, h, l)).unwrap());
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(
            seen[0],
            PivotPoint {
                level: 1,
                kind: PivotKind::High,
                price: Price::from_units(15),
                time_ms: 2_000,
                known_ms: 5_000,
                index: 2,
            }
        );
        assert_eq!(seen[1].kind, PivotKind::Low);
        assert_eq!(seen[1].index, 4);
        assert_eq!(seen[1].known_ms, 7_000);
        assert!(e.known_at(1, 4_999).is_empty());
        assert_eq!(e.known_at(1, 5_000).len(), 1);
    }

    #[test]
    fn equal_highs_give_one_pivot_on_the_first_bar() {
        let highs = [1, 2, 5, 5, 2, 1, 1];
        let mut e = WilliamsEngine::new(cfg(2));
        for (i, &h) in highs.iter().enumerate() {
            e.update(&candle(i as i64, h, 0)).unwrap();
        }
        let hs: Vec<_> = e.level(1).recent(PivotKind::High).collect();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].index, 2);
    }

    #[test]
    fn rejects_bad_candles_without_state_change() {
        let mut e = WilliamsEngine::new(cfg(2));
        e.update(&candle(5, 10, 9)).unwrap();
        assert!(matches!(
            e.update(&candle(5, 10, 9)),
            Err(PivotError::NotIncreasing { .. })
        ));
        assert!(matches!(
            e.update(&candle(6, 8, 9)),
            Err(PivotError::LowAboveHigh { .. })
        ));
        assert_eq!(e.candles_seen(), 1);
    }

    #[test]
    fn higher_levels_come_from_lower_pivots() {
        // A zig-zag whose swing highs rise then fall: 1-bar-per-side level 2 high at the top.
        let mut highs = Vec::new();
        for peak in [10, 12, 14, 20, 15, 13, 11] {
            highs.extend_from_slice(&[peak, 1]);
        }
        let mut e = WilliamsEngine::new(cfg(1));
        for (i, &h) in highs.iter().enumerate() {
            e.update(&candle(i as i64, h, 0)).unwrap();
        }
        let l2: Vec<_> = e.level(2).recent(PivotKind::High).collect();
        assert_eq!(l2.len(), 1);
        assert_eq!(l2[0].price, Price::from_units(20));
        // Known when the next level-1 high (15, candle 8) was confirmed by candle 9.
        assert_eq!(l2[0].known_ms, 10_000);
        assert_eq!(l2[0].index, 6);
    }

    #[test]
    fn trend_support_resistance_and_bounds() {
        let mut highs = Vec::new();
        for i in 0..6 {
            highs.extend_from_slice(&[(10 + i * 2, 5 + i * 2), (8 + i * 2, 3 + i * 2)]);
        }
        let mut e = WilliamsEngine::new(cfg(1));
        for (i, &(h, l)) in highs.iter().enumerate() {
            e.update(&candle(i as i64, h, l)).unwrap();
        }
        let v = e.level(1);
        assert_eq!(v.trend(), Trend::Up);
        assert_eq!(
            v.resistance(2),
            vec![Price::from_units(20), Price::from_units(18)]
        );
        assert_eq!(v.support(1), vec![Price::from_units(11)]);
        let b = v.bounds(2).unwrap();
        assert_eq!(
            (b.low, b.high),
            (Price::from_units(9), Price::from_units(20))
        );
        assert_eq!(b.normalize(Price::from_units(9)), 0.0);
        assert_eq!(b.normalize(Price::from_units(20)), 1.0);
        assert_eq!(b.normalize(Price::from_units(31)), 2.0);
        assert!(b.contains(Price::from_units(20)) && !b.contains(Price::from_units(8)));
        assert_eq!(e.level(3).trend(), Trend::Unknown);
    }
}
