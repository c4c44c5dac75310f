//! The simulator's own order book in integer ticks/steps, recording every change with an update id
//! so depth diffs can be cut into Binance-style `U..u` batches.

use std::collections::BTreeMap;

/// Changes since the last batch: the final quantity of every touched level.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookBatch {
    /// First update id in the batch (`U`).
    pub first_id: u64,
    /// Last update id in the batch (`u`).
    pub last_id: u64,
    /// Touched bid levels `(price ticks, qty steps)`, 0 = removed; best first.
    pub bids: Vec<(i64, i64)>,
    /// Touched ask levels, best first.
    pub asks: Vec<(i64, i64)>,
}

/// Bids and asks keyed by price in ticks, quantities in steps.
#[derive(Debug, Clone, Default)]
pub struct SimBook {
    bids: BTreeMap<i64, i64>,
    asks: BTreeMap<i64, i64>,
    update_id: u64,
    pending_first: Option<u64>,
    pending: BTreeMap<(bool, i64), i64>,
}

impl SimBook {
    /// An empty book whose next change gets id `start_id + 1`.
    pub fn new(start_id: u64) -> Self {
        Self {
            update_id: start_id,
            ..Self::default()
        }
    }

    /// Last assigned update id.
    pub fn update_id(&self) -> u64 {
        self.update_id
    }

    /// Skips `n` ids (fault injection: a client sees a sequence gap).
    pub fn skip_ids(&mut self, n: u64) {
        self.update_id += n;
    }

    /// Best bid `(ticks, steps)`.
    pub fn best_bid(&self) -> Option<(i64, i64)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    /// Best ask `(ticks, steps)`.
    pub fn best_ask(&self) -> Option<(i64, i64)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// Quantity at a level (0 when absent).
    pub fn qty(&self, bid: bool, price: i64) -> i64 {
        let side = if bid { &self.bids } else { &self.asks };
        side.get(&price).copied().unwrap_or(0)
    }

    /// Number of levels on a side.
    pub fn depth(&self, bid: bool) -> usize {
        if bid {
            self.bids.len()
        } else {
            self.asks.len()
        }
    }

    /// Top `n` levels of a side, best first.
    pub fn top(&self, bid: bool, n: usize) -> Vec<(i64, i64)> {
        if bid {
            self.bids
                .iter()
                .rev()
                .take(n)
                .map(|(p, q)| (*p, *q))
                .collect()
        } else {
            self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect()
        }
    }

    /// True when best bid ≥ best ask.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.0 >= a.0)
    }

    /// Sets a level's absolute quantity (0 removes); a real change consumes one update id.
    pub fn set(&mut self, bid: bool, price: i64, qty: i64) {
        let side = if bid { &mut self.bids } else { &mut self.asks };
        let old = side.get(&price).copied().unwrap_or(0);
        let qty = qty.max(0);
        if old == qty {
            return;
        }
        if qty == 0 {
            side.remove(&price);
        } else {
            side.insert(price, qty);
        }
        self.update_id += 1;
        self.pending_first.get_or_insert(self.update_id);
        self.pending.insert((bid, price), qty);
    }

    /// Removes every level of a side whose price lies in `range`.
    pub fn remove_range(&mut self, bid: bool, range: impl std::ops::RangeBounds<i64>) {
        let side = if bid { &self.bids } else { &self.asks };
        let doomed: Vec<i64> = side.range(range).map(|(p, _)| *p).collect();
        for p in doomed {
            self.set(bid, p, 0);
        }
    }

    /// Takes the changes since the last call (None when nothing changed).
    pub fn take_batch(&mut self) -> Option<BookBatch> {
        let first_id = self.pending_first.take()?;
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for ((bid, p), q) in std::mem::take(&mut self.pending) {
            if bid {
                bids.push((p, q))
            } else {
                asks.push((p, q))
            }
        }
        bids.reverse();
        Some(BookBatch {
            first_id,
            last_id: self.update_id,
            bids,
            asks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_carry_consecutive_ids_and_final_quantities() {
        let mut b = SimBook::new(100);
        b.set(true, 10, 5);
        b.set(false, 12, 7);
        b.set(true, 10, 6);
        b.set(true, 9, 0); // absent → no change, no id
        let x = b.take_batch().unwrap();
        assert_eq!((x.first_id, x.last_id), (101, 103));
        assert_eq!(x.bids, vec![(10, 6)]);
        assert_eq!(x.asks, vec![(12, 7)]);
        assert!(b.take_batch().is_none());
        b.set(false, 12, 0);
        let y = b.take_batch().unwrap();
        assert_eq!((y.first_id, y.last_id), (104, 104));
        assert_eq!(y.asks, vec![(12, 0)]);
        assert!(!b.is_crossed());
        b.set(true, 13, 1);
        b.set(false, 13, 1);
        assert!(b.is_crossed());
    }

    #[test]
    fn skip_makes_a_visible_gap() {
        let mut b = SimBook::new(0);
        b.set(true, 1, 1);
        let x = b.take_batch().unwrap();
        b.skip_ids(5);
        b.set(true, 1, 2);
        let y = b.take_batch().unwrap();
        assert_eq!(y.first_id, x.last_id + 6);
    }
}
