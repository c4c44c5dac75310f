//! L2 order book with exact prices and quantities.
//!
//! Each side is a sorted `Vec` of levels with the best price at the END: diffs cluster near the
//! top of the book, so inserts and removals there shift only a handful of elements, and the
//! search gallops down from the best end before a binary search. Bids are keyed
//! by price and asks by negated price, so both sides share one ascending "ladder" whose last
//! element is the best level (measured against a BTreeMap book in `benches/book.rs`).

use super::types::{Level, Price, Qty, SCALE, Side};

/// One side of the book: keys ascending (best last); asks store `-price` as the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ladder {
    keys: Vec<i64>,
    qtys: Vec<i64>,
}

impl Ladder {
    /// `Ok(index)` when `key` is present, `Err(insert_at)` otherwise. Gallops down from the
    /// best end (distance 1, 2, 4, ...) and then binary-searches the bracketed span, so the
    /// cost grows with the distance from the top, not with the book size.
    #[inline]
    fn find(&self, key: i64) -> Result<usize, usize> {
        let keys = &self.keys;
        let n = keys.len();
        let mut hi = n; // keys[hi..] are all > key
        let mut step = 1;
        while step <= n {
            let i = n - step;
            let k = keys[i];
            if k == key {
                return Ok(i);
            }
            if k < key {
                return keys[i + 1..hi]
                    .binary_search(&key)
                    .map_or_else(|e| Err(e + i + 1), |f| Ok(f + i + 1));
            }
            hi = i;
            step *= 2;
        }
        keys[..hi].binary_search(&key)
    }

    #[inline]
    fn set(&mut self, key: i64, qty: i64) {
        match self.find(key) {
            Ok(i) => {
                if qty <= 0 {
                    self.keys.remove(i);
                    self.qtys.remove(i);
                } else {
                    self.qtys[i] = qty;
                }
            }
            Err(i) => {
                if qty > 0 {
                    if i == self.keys.len() {
                        self.keys.push(key);
                        self.qtys.push(qty);
                    } else {
                        self.keys.insert(i, key);
                        self.qtys.insert(i, qty);
                    }
                }
            }
        }
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.qtys.clear();
    }

    /// Rebuilds from unsorted levels; a later duplicate price wins, as if applied in order.
    fn rebuild(&mut self, levels: &[Level], key_of: impl Fn(Price) -> i64) {
        self.clear();
        let mut pairs: Vec<(i64, i64)> = levels
            .iter()
            .map(|l| (key_of(l.price), l.qty.raw()))
            .collect();
        // Exchanges send each side best-first, which for our key order is strictly descending.
        if pairs.windows(2).all(|w| w[0].0 > w[1].0) {
            pairs.reverse();
        } else if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable sort keeps input order among equal keys, so "last wins" survives dedup.
            pairs.sort_by_key(|p| p.0);
        }
        self.keys.reserve(pairs.len());
        self.qtys.reserve(pairs.len());
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
                j += 1;
            }
            let (key, qty) = pairs[j];
            if qty > 0 {
                self.keys.push(key);
                self.qtys.push(qty);
            }
            i = j + 1;
        }
    }

    /// Index of the first key `>= key` (levels at or better than the key's price start there).
    #[inline]
    fn lower_bound(&self, key: i64) -> usize {
        self.keys.partition_point(|&k| k < key)
    }

    fn sum_qty(&self, from: usize, to: usize) -> Qty {
        Qty(self.qtys[from..to].iter().sum())
    }
}

/// Why a level from the wire cannot go into a book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Price zero or negative.
    #[error("{side:?} level price {price} is not positive")]
    Price {
        /// Book side.
        side: Side,
        /// Offending price.
        price: Price,
    },
    /// Negative quantity (zero is a valid removal).
    #[error("{side:?} level at {price} has negative quantity {qty}")]
    NegativeQty {
        /// Book side.
        side: Side,
        /// Level price.
        price: Price,
        /// Offending quantity.
        qty: Qty,
    },
}

/// Checks one wire level: positive price, non-negative quantity.
pub fn validate_level(side: Side, level: &Level) -> Result<(), BookError> {
    if level.price.raw() <= 0 {
        return Err(BookError::Price {
            side,
            price: level.price,
        });
    }
    if level.qty.raw() < 0 {
        return Err(BookError::NegativeQty {
            side,
            price: level.price,
            qty: level.qty,
        });
    }
    Ok(())
}

/// Result of walking one side of the book for a given size (a market order estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// Quantity the book could fill (less than requested when the side runs out).
    pub filled: Qty,
    /// Exact Σ price_raw × qty_raw over the consumed levels (scale 10^16); numerator of the
    /// average price with `filled.raw()` as denominator.
    pub notional_raw: i128,
    /// Worst (last) price touched.
    pub worst_price: Price,
}

impl Fill {
    /// True when the whole requested size was available.
    pub fn is_complete(&self, requested: Qty) -> bool {
        self.filled >= requested
    }

    /// Volume-weighted average fill price, floored to the fixed-point grid.
    pub fn avg_price(&self) -> Price {
        Price(self.notional_raw.div_euclid(self.filled.raw() as i128) as i64)
    }

    /// Exact quote notional, scaled by [`SCALE`] like [`super::types::notional`].
    pub fn quote_notional(&self) -> i128 {
        self.notional_raw / SCALE as i128
    }
}

/// A local L2 order book: absolute quantity per price level on each side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderBook {
    bids: Ladder,
    asks: Ladder,
    /// Exchange update id the book reflects (the last applied diff's final id).
    pub last_update_id: u64,
}

fn check_levels(bids: &[Level], asks: &[Level]) -> Result<(), BookError> {
    bids.iter().try_for_each(|l| validate_level(Side::Buy, l))?;
    asks.iter().try_for_each(|l| validate_level(Side::Sell, l))
}

#[inline]
fn key_of(side: Side, price: Price) -> i64 {
    match side {
        Side::Buy => price.raw(),
        Side::Sell => -price.raw(),
    }
}

#[inline]
fn price_of(side: Side, key: i64) -> Price {
    match side {
        Side::Buy => Price(key),
        Side::Sell => Price(-key),
    }
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole book with a snapshot (levels in any order; zero quantities skipped).
    pub fn apply_snapshot(&mut self, bids: &[Level], asks: &[Level], last_update_id: u64) {
        self.bids.rebuild(bids, |p| key_of(Side::Buy, p));
        self.asks.rebuild(asks, |p| key_of(Side::Sell, p));
        self.last_update_id = last_update_id;
    }

    /// Sets the absolute quantity at a price; zero (or a negative qty, which parsers reject
    /// anyway) removes the level, and removing an absent level is a no-op.
    #[inline]
    pub fn apply_level(&mut self, side: Side, price: Price, qty: Qty) {
        self.ladder_mut(side).set(key_of(side, price), qty.raw());
    }

    /// Applies one diff batch (both sides) and records its final update id.
    pub fn apply_diff(&mut self, bids: &[Level], asks: &[Level], last_update_id: u64) {
        for l in bids {
            self.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in asks {
            self.apply_level(Side::Sell, l.price, l.qty);
        }
        self.last_update_id = last_update_id;
    }

    /// Validates a whole diff first and applies it only when every level is valid, so a bad
    /// message leaves the book untouched (the caller counts it and resyncs).
    pub fn try_apply_diff(
        &mut self,
        bids: &[Level],
        asks: &[Level],
        last_update_id: u64,
    ) -> Result<(), BookError> {
        check_levels(bids, asks)?;
        self.apply_diff(bids, asks, last_update_id);
        Ok(())
    }

    /// Validates a whole snapshot first and applies it only when every level is valid.
    pub fn try_apply_snapshot(
        &mut self,
        bids: &[Level],
        asks: &[Level],
        last_update_id: u64,
    ) -> Result<(), BookError> {
        check_levels(bids, asks)?;
        self.apply_snapshot(bids, asks, last_update_id);
        Ok(())
    }

    /// Empties both sides.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.last_update_id = 0;
    }

    #[inline]
    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    #[inline]
    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Best level of a side.
    #[inline]
    pub fn best(&self, side: Side) -> Option<Level> {
        let l = self.ladder(side);
        let i = l.keys.len().checked_sub(1)?;
        Some(Level {
            price: price_of(side, l.keys[i]),
            qty: Qty(l.qtys[i]),
        })
    }

    /// Highest bid.
    #[inline]
    pub fn best_bid(&self) -> Option<Level> {
        self.best(Side::Buy)
    }

    /// Lowest ask.
    #[inline]
    pub fn best_ask(&self) -> Option<Level> {
        self.best(Side::Sell)
    }

    /// Best ask minus best bid (negative when crossed).
    pub fn spread(&self) -> Option<Price> {
        Some(self.best_ask()?.price - self.best_bid()?.price)
    }

    /// Exact mid: the raw average of best bid and ask, floored to the fixed-point grid.
    pub fn mid(&self) -> Option<Price> {
        let b = self.best_bid()?.price.raw() as i128;
        let a = self.best_ask()?.price.raw() as i128;
        Some(Price((a + b).div_euclid(2) as i64))
    }

    /// Number of levels on one side.
    pub fn depth(&self, side: Side) -> usize {
        self.ladder(side).keys.len()
    }

    /// All levels of a side, best first.
    pub fn levels(&self, side: Side) -> impl ExactSizeIterator<Item = Level> + '_ {
        let l = self.ladder(side);
        l.keys.iter().zip(&l.qtys).rev().map(move |(&k, &q)| Level {
            price: price_of(side, k),
            qty: Qty(q),
        })
    }

    /// Best `n` levels of a side, best first.
    pub fn top(&self, side: Side, n: usize) -> Vec<Level> {
        self.levels(side).take(n).collect()
    }

    /// Levels of a side with price in `[lo, hi)`, best first.
    pub fn levels_in_range(
        &self,
        side: Side,
        lo: Price,
        hi: Price,
    ) -> impl Iterator<Item = Level> + '_ {
        let l = self.ladder(side);
        let (a, b) = self.key_span(side, lo, hi);
        l.keys[a..b]
            .iter()
            .zip(&l.qtys[a..b])
            .rev()
            .map(move |(&k, &q)| Level {
                price: price_of(side, k),
                qty: Qty(q),
            })
    }

    /// Index span in the ladder of the prices in `[lo, hi)`.
    fn key_span(&self, side: Side, lo: Price, hi: Price) -> (usize, usize) {
        if lo >= hi {
            return (0, 0);
        }
        let l = self.ladder(side);
        match side {
            // keys = prices: [lo, hi)
            Side::Buy => (l.lower_bound(lo.raw()), l.lower_bound(hi.raw())),
            // keys = -prices: price in [lo, hi) <=> key in (-hi, -lo]
            Side::Sell => (
                l.keys.partition_point(|&k| k <= -hi.raw()),
                l.keys.partition_point(|&k| k <= -lo.raw()),
            ),
        }
    }

    /// Total quantity resting on a side at prices in `[lo, hi)`.
    pub fn volume_in_range(&self, side: Side, lo: Price, hi: Price) -> Qty {
        let (a, b) = self.key_span(side, lo, hi);
        self.ladder(side).sum_qty(a, b)
    }

    /// Cumulative quantity at levels as good as `price` or better (bids ≥ price, asks ≤ price).
    pub fn cumulative_depth(&self, side: Side, price: Price) -> Qty {
        let l = self.ladder(side);
        let from = l.lower_bound(key_of(side, price));
        l.sum_qty(from, l.keys.len())
    }

    /// Walks the side a taker of `taker_side` consumes (a buy eats asks) for `qty`; `None` when
    /// that side is empty or `qty` is not positive.
    pub fn walk(&self, taker_side: Side, qty: Qty) -> Option<Fill> {
        if qty.raw() <= 0 {
            return None;
        }
        let side = match taker_side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let l = self.ladder(side);
        let mut left = qty.raw();
        let mut notional_raw: i128 = 0;
        let mut worst = None;
        for (&k, &q) in l.keys.iter().zip(&l.qtys).rev() {
            let take = q.min(left);
            let price = price_of(side, k);
            notional_raw += price.raw() as i128 * take as i128;
            worst = Some(price);
            left -= take;
            if left == 0 {
                break;
            }
        }
        Some(Fill {
            filled: Qty(qty.raw() - left),
            notional_raw,
            worst_price: worst?,
        })
    }

    /// True when the best bid is at or above the best ask (an invalid book).
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price >= a.price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price::from_units(p),
            qty: Qty::from_units(q),
        }
    }

    fn book() -> OrderBook {
        let mut b = OrderBook::new();
        b.apply_snapshot(
            &[lv(99, 1), lv(100, 2), lv(98, 3)],
            &[lv(102, 4), lv(101, 5), lv(103, 6)],
            7,
        );
        b
    }

    #[test]
    fn snapshot_sorts_and_reports_best() {
        let b = book();
        assert_eq!(b.best_bid(), Some(lv(100, 2)));
        assert_eq!(b.best_ask(), Some(lv(101, 5)));
        assert_eq!(b.top(Side::Buy, 2), vec![lv(100, 2), lv(99, 1)]);
        assert_eq!(
            b.top(Side::Sell, 5),
            vec![lv(101, 5), lv(102, 4), lv(103, 6)]
        );
        assert_eq!(b.depth(Side::Buy), 3);
        assert_eq!(b.last_update_id, 7);
        assert_eq!(b.spread(), Some(Price::from_units(1)));
        assert!(!b.is_crossed());
    }

    #[test]
    fn snapshot_duplicate_price_last_wins_and_zero_skipped() {
        let mut b = OrderBook::new();
        b.apply_snapshot(&[lv(5, 1), lv(5, 2), lv(4, 0)], &[], 1);
        assert_eq!(b.top(Side::Buy, 10), vec![lv(5, 2)]);
    }

    #[test]
    fn diffs_insert_update_remove_and_absent_delete() {
        let mut b = book();
        b.apply_level(Side::Buy, Price::from_units(100), Qty::ZERO);
        b.apply_level(Side::Buy, Price::from_units(50), Qty::ZERO);
        b.apply_level(Side::Sell, Price::from_units(101), Qty::from_units(9));
        b.apply_level(Side::Sell, Price::from_units(100), Qty::from_units(1));
        assert_eq!(b.best_bid(), Some(lv(99, 1)));
        assert_eq!(b.best_ask(), Some(lv(100, 1)));
        assert_eq!(b.depth(Side::Sell), 4);
        b.apply_level(Side::Buy, Price::from_units(100), Qty::from_units(1));
        assert!(b.is_crossed());
    }

    #[test]
    fn checked_apply_rejects_bad_levels_atomically() {
        let mut b = book();
        let before = b.clone();
        let bad_qty = Level {
            price: Price::from_units(100),
            qty: Qty(-1),
        };
        assert_eq!(
            b.try_apply_diff(&[lv(97, 1)], &[bad_qty], 9),
            Err(BookError::NegativeQty {
                side: Side::Sell,
                price: Price::from_units(100),
                qty: Qty(-1)
            })
        );
        assert_eq!(b, before);
        let bad_price = Level {
            price: Price::ZERO,
            qty: Qty(1),
        };
        assert!(matches!(
            b.try_apply_snapshot(&[bad_price], &[], 9),
            Err(BookError::Price { .. })
        ));
        assert_eq!(b, before);
        b.try_apply_diff(&[lv(97, 1)], &[lv(101, 0)], 9).unwrap();
        assert_eq!(b.best_ask(), Some(lv(102, 4)));
        assert_eq!(b.last_update_id, 9);
        b.try_apply_snapshot(&[lv(1, 1)], &[lv(2, 1)], 10).unwrap();
        assert_eq!(b.depth(Side::Buy), 1);
    }

    #[test]
    fn mid_is_floored_raw_average() {
        let mut b = OrderBook::new();
        b.apply_snapshot(
            &[Level {
                price: Price(10),
                qty: Qty(1),
            }],
            &[Level {
                price: Price(13),
                qty: Qty(1),
            }],
            0,
        );
        assert_eq!(b.mid(), Some(Price(11)));
        assert_eq!(OrderBook::new().mid(), None);
    }

    #[test]
    fn volume_queries() {
        let b = book();
        let p = Price::from_units;
        assert_eq!(
            b.volume_in_range(Side::Buy, p(99), p(101)),
            Qty::from_units(3)
        );
        assert_eq!(
            b.volume_in_range(Side::Sell, p(101), p(103)),
            Qty::from_units(9)
        );
        assert_eq!(b.volume_in_range(Side::Sell, p(103), p(101)), Qty::ZERO);
        assert_eq!(b.cumulative_depth(Side::Buy, p(99)), Qty::from_units(3));
        assert_eq!(b.cumulative_depth(Side::Sell, p(102)), Qty::from_units(9));
        assert_eq!(b.cumulative_depth(Side::Sell, p(100)), Qty::ZERO);
        let in_range: Vec<_> = b.levels_in_range(Side::Sell, p(102), p(104)).collect();
        assert_eq!(in_range, vec![lv(102, 4), lv(103, 6)]);
    }

    #[test]
    fn walk_gives_exact_average() {
        let b = book();
        // 5 @ 101 + 1 @ 102 = 607 / 6
        let f = b.walk(Side::Buy, Qty::from_units(6)).unwrap();
        assert_eq!(f.filled, Qty::from_units(6));
        assert_eq!(f.worst_price, Price::from_units(102));
        assert_eq!(f.avg_price(), Price(60_700_000_000 / 6));
        assert_eq!(f.quote_notional(), 607 * SCALE as i128);
        assert!(f.is_complete(Qty::from_units(6)));
        let f = b.walk(Side::Sell, Qty::from_units(100)).unwrap();
        assert_eq!(f.filled, Qty::from_units(6));
        assert!(!f.is_complete(Qty::from_units(100)));
        assert_eq!(b.walk(Side::Sell, Qty::ZERO), None);
        assert_eq!(OrderBook::new().walk(Side::Buy, Qty(1)), None);
    }

    /// The naive reference the property test compares against.
    #[derive(Default)]
    struct RefBook {
        bids: BTreeMap<i64, i64>,
        asks: BTreeMap<i64, i64>,
    }

    impl RefBook {
        fn side(&mut self, s: Side) -> &mut BTreeMap<i64, i64> {
            match s {
                Side::Buy => &mut self.bids,
                Side::Sell => &mut self.asks,
            }
        }
        fn set(&mut self, s: Side, p: i64, q: i64) {
            if q <= 0 {
                self.side(s).remove(&p);
            } else {
                self.side(s).insert(p, q);
            }
        }
        fn levels(&self, s: Side) -> Vec<Level> {
            let mk = |(&p, &q): (&i64, &i64)| Level {
                price: Price(p),
                qty: Qty(q),
            };
            match s {
                Side::Buy => self.bids.iter().rev().map(mk).collect(),
                Side::Sell => self.asks.iter().map(mk).collect(),
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Snapshot(Vec<(i64, i64)>, Vec<(i64, i64)>),
        Diff(bool, i64, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let lvls = prop::collection::vec((0i64..200, 0i64..5), 0..60);
        prop_oneof![
            1 => (lvls.clone(), lvls).prop_map(|(b, a)| Op::Snapshot(b, a)),
            30 => (any::<bool>(), 0i64..200, 0i64..5).prop_map(|(s, p, q)| Op::Diff(s, p, q)),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreemap_reference(ops in prop::collection::vec(op(), 1..300),
                                      lo in 0i64..200, hi in 0i64..200, walk in 1i64..40) {
            let mut b = OrderBook::new();
            let mut r = RefBook::default();
            for op in &ops {
                match op {
                    Op::Snapshot(bs, as_) => {
                        let conv = |v: &Vec<(i64, i64)>| v.iter()
                            .map(|&(p, q)| Level { price: Price(p), qty: Qty(q) })
                            .collect::<Vec<_>>();
                        b.apply_snapshot(&conv(bs), &conv(as_), 1);
                        r = RefBook::default();
                        for &(p, q) in bs { r.set(Side::Buy, p, q); }
                        for &(p, q) in as_ { r.set(Side::Sell, p, q); }
                    }
                    Op::Diff(s, p, q) => {
                        let side = if *s { Side::Buy } else { Side::Sell };
                        b.apply_level(side, Price(*p), Qty(*q));
                        r.set(side, *p, *q);
                    }
                }
                for side in [Side::Buy, Side::Sell] {
                    prop_assert_eq!(b.best(side), r.levels(side).first().copied());
                }
            }
            for side in [Side::Buy, Side::Sell] {
                let all = r.levels(side);
                prop_assert_eq!(b.levels(side).collect::<Vec<_>>(), all.clone());
                prop_assert_eq!(b.depth(side), all.len());
                prop_assert_eq!(b.top(side, 3), all.iter().take(3).copied().collect::<Vec<_>>());
                let in_range: i64 = all.iter()
                    .filter(|l| l.price.raw() >= lo && l.price.raw() < hi)
                    .map(|l| l.qty.raw()).sum();
                prop_assert_eq!(b.volume_in_range(side, Price(lo), Price(hi)), Qty(in_range));
                let better: i64 = all.iter()
                    .filter(|l| match side { Side::Buy => l.price.raw() >= lo,
                                             Side::Sell => l.price.raw() <= lo })
                    .map(|l| l.qty.raw()).sum();
                prop_assert_eq!(b.cumulative_depth(side, Price(lo)), Qty(better));
                // Walking: the taker of the opposite side consumes this side best-first.
                let taker = match side { Side::Buy => Side::Sell, Side::Sell => Side::Buy };
                let mut left = walk;
                let mut num: i128 = 0;
                for l in &all {
                    let t = l.qty.raw().min(left);
                    num += l.price.raw() as i128 * t as i128;
                    left -= t;
                    if left == 0 { break; }
                }
                match b.walk(taker, Qty(walk)) {
                    None => prop_assert!(all.is_empty()),
                    Some(f) => {
                        prop_assert_eq!(f.filled, Qty(walk - left));
                        prop_assert_eq!(f.notional_raw, num);
                    }
                }
            }
            let crossed = match (r.levels(Side::Buy).first(), r.levels(Side::Sell).first()) {
                (Some(b), Some(a)) => b.price >= a.price,
                _ => false,
            };
            prop_assert_eq!(b.is_crossed(), crossed);
        }
    }
}
