//! Raw tick buffer: the most recent trades of one symbol, bounded by count and by age.
//!
//! Ticks are kept ordered by (time, id) so `since` is a binary search; a late tick is inserted
//! in place. Memory is bounded by the fixed capacity (the oldest tick is evicted when full) and
//! by age (ticks older than `max_age_ms` before the newest tick are evicted).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::types::{Price, Qty, Side, Trade};

/// Thirty minutes, the default age window.
pub const DEFAULT_MAX_AGE_MS: i64 = 30 * 60 * 1_000;
/// Default capacity: 2^18 ticks, above the 180,000 (100 trades/s for 30 min) the design asks.
pub const DEFAULT_CAPACITY: usize = 1 << 18;

/// One trade without its symbol (the buffer is per symbol), 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// Exchange trade id.
    pub id: u64,
    /// Exchange trade time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Trade price.
    pub price: Price,
    /// Trade quantity.
    pub qty: Qty,
    /// The aggressor's side.
    pub taker_side: Side,
}

impl From<&Trade> for Tick {
    fn from(t: &Trade) -> Self {
        Self {
            id: t.id,
            time_ms: t.time_ms,
            price: t.price,
            qty: t.qty,
            taker_side: t.taker_side,
        }
    }
}

impl Tick {
    #[inline]
    fn key(&self) -> (i64, u64) {
        (self.time_ms, self.id)
    }
}

/// Bounded ring of recent ticks for one symbol, ordered by (time, id).
#[derive(Debug, Clone)]
pub struct TickBuffer {
    ticks: VecDeque<Tick>,
    capacity: usize,
    max_age_ms: i64,
    evicted: u64,
}

impl Default for TickBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_MAX_AGE_MS)
    }
}

impl TickBuffer {
    /// A buffer holding at most `capacity` ticks (at least 1) no older than `max_age_ms`.
    pub fn new(capacity: usize, max_age_ms: i64) -> Self {
        Self {
            ticks: VecDeque::new(),
            capacity: capacity.max(1),
            max_age_ms,
            evicted: 0,
        }
    }

    /// Adds a tick (late ticks are inserted in order), then evicts by capacity and age.
    pub fn push(&mut self, tick: Tick) {
        match self.ticks.back() {
            Some(last) if tick.key() < last.key() => {
                let at = self.ticks.partition_point(|t| t.key() <= tick.key());
                self.ticks.insert(at, tick);
            }
            _ => self.ticks.push_back(tick),
        }
        if self.ticks.len() > self.capacity {
            self.ticks.pop_front();
            self.evicted += 1;
        }
        if let Some(newest) = self.ticks.back().map(|t| t.time_ms) {
            self.evict_before(newest.saturating_sub(self.max_age_ms));
        }
    }

    /// Adds a trade.
    pub fn push_trade(&mut self, trade: &Trade) {
        self.push(Tick::from(trade));
    }

    /// Drops ticks with `time_ms < cutoff_ms` (for a clock-driven age sweep).
    pub fn evict_before(&mut self, cutoff_ms: i64) {
        while self.ticks.front().is_some_and(|t| t.time_ms < cutoff_ms) {
            self.ticks.pop_front();
            self.evicted += 1;
        }
    }

    /// Ticks with `time_ms >= time_ms`, oldest first.
    pub fn since(&self, time_ms: i64) -> impl ExactSizeIterator<Item = &Tick> + '_ {
        let at = self.ticks.partition_point(|t| t.time_ms < time_ms);
        self.ticks.range(at..)
    }

    /// The newest `n` ticks (fewer when the buffer holds fewer), oldest first.
    pub fn last_n(&self, n: usize) -> impl ExactSizeIterator<Item = &Tick> + '_ {
        self.ticks.range(self.ticks.len().saturating_sub(n)..)
    }

    /// All ticks, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Tick> + '_ {
        self.ticks.iter()
    }

    /// Newest tick.
    pub fn last(&self) -> Option<&Tick> {
        self.ticks.back()
    }

    /// Number of ticks held.
    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    /// True when no tick is held.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }

    /// Fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ticks evicted so far (by capacity or age).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(id: u64, time_ms: i64) -> Tick {
        Tick {
            id,
            time_ms,
            price: Price::from_units(100),
            qty: Qty::from_units(1),
            taker_side: Side::Buy,
        }
    }

    #[test]
    fn default_holds_thirty_minutes_of_180k_ticks() {
        let mut b = TickBuffer::default();
        // 100 ticks/s for 30 minutes = 180,000 ticks inside the age window.
        for i in 0..180_000u64 {
            b.push(tick(i, (i as i64) * 10));
        }
        assert_eq!(b.len(), 180_000);
        assert_eq!(b.evicted(), 0);
        assert_eq!(b.iter().next().unwrap().id, 0);
    }

    #[test]
    fn evicts_by_capacity_and_age() {
        let mut b = TickBuffer::new(3, 1_000);
        for i in 0..5 {
            b.push(tick(i, i as i64));
        }
        assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), vec![2, 3, 4]);
        b.push(tick(9, 1_003));
        // Capacity pushes out tick 2; the age cutoff (3) keeps tick 3.
        assert_eq!(b.iter().map(|t| t.id).collect::<Vec<_>>(), vec![3, 4, 9]);
        b.evict_before(1_000);
        assert_eq!(b.len(), 1);
        assert_eq!(b.evicted(), 5);
    }

    #[test]
    fn queries_and_late_insert() {
        let mut b = TickBuffer::new(100, 60_000);
        for (id, t) in [(1, 10), (2, 20), (4, 40), (3, 30), (5, 40)] {
            b.push(tick(id, t));
        }
        assert_eq!(
            b.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(b.since(30).map(|t| t.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(b.since(41).count(), 0);
        assert_eq!(b.last_n(2).map(|t| t.id).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(b.last_n(10).len(), 5);
        assert_eq!(b.last().unwrap().id, 5);
    }
}
