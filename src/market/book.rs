//! L2 order book with exact prices and quantities.
//!
//! This first version is a straightforward BTreeMap book; it defines the API the rest of the
//! crate uses.

use std::collections::BTreeMap;

use super::types::{Level, Price, Qty, Side};

/// A local L2 order book: absolute quantity per price level on each side.
#[derive(Debug, Clone, Default)]
pub struct OrderBook {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    /// Exchange update id the book reflects (the last applied diff's final id).
    pub last_update_id: u64,
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole book with a snapshot.
    pub fn apply_snapshot(&mut self, bids: &[Level], asks: &[Level], last_update_id: u64) {
        self.clear();
        for l in bids {
            self.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in asks {
            self.apply_level(Side::Sell, l.price, l.qty);
        }
        self.last_update_id = last_update_id;
    }

    /// Sets the absolute quantity at a price; zero removes the level (absent levels are fine).
    #[inline]
    pub fn apply_level(&mut self, side: Side, price: Price, qty: Qty) {
        let map = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        if qty.is_zero() {
            map.remove(&price);
        } else {
            map.insert(price, qty);
        }
    }

    /// Empties both sides.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.last_update_id = 0;
    }

    /// Highest bid.
    pub fn best_bid(&self) -> Option<Level> {
        self.bids
            .iter()
            .next_back()
            .map(|(&price, &qty)| Level { price, qty })
    }

    /// Lowest ask.
    pub fn best_ask(&self) -> Option<Level> {
        self.asks
            .iter()
            .next()
            .map(|(&price, &qty)| Level { price, qty })
    }

    /// Number of levels on one side.
    pub fn depth(&self, side: Side) -> usize {
        match side {
            Side::Buy => self.bids.len(),
            Side::Sell => self.asks.len(),
        }
    }

    /// Best `n` levels of a side, best first.
    pub fn top(&self, side: Side, n: usize) -> Vec<Level> {
        match side {
            Side::Buy => self
                .bids
                .iter()
                .rev()
                .take(n)
                .map(|(&price, &qty)| Level { price, qty })
                .collect(),
            Side::Sell => self
                .asks
                .iter()
                .take(n)
                .map(|(&price, &qty)| Level { price, qty })
                .collect(),
        }
    }

    /// True when the best bid is at or above the best ask (an invalid book).
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price >= a.price)
    }
}
