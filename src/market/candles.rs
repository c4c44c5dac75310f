//! Trades → OHLCV candles per timeframe, order-independent, with REST history merge.
//!
//! Rules (each tested):
//! - Intervals are UTC-aligned ([`Timeframe::floor`]). A series is contiguous: an interval
//!   without data holds a *filled* candle, open = high = low = close = previous close, zero
//!   volume and trades. A series never starts with a filled candle.
//! - Order independence: open is the trade with the smallest (time, id), close the largest,
//!   so the candles are a function of the set of trades in the kept window, whatever their
//!   arrival order. A late trade amends its candle and the filled candles after it.
//! - The window is the newest `capacity` intervals (default [`DEFAULT_CANDLES_KEPT`]) ending at
//!   the newest candle. A trade older than the window is counted in [`CandleSeries::dropped`].
//! - History merge ([`CandleSeries::merge_history`]), per interval: a candle built from live
//!   trades always wins (a live trade arriving later replaces a history candle of its
//!   interval); otherwise the history kline replaces a filled candle or extends the series,
//!   interior holes are filled, and later filled candles follow the new close. The exchange's
//!   last, still-open kline is merged like the others and is superseded as soon as a live
//!   trade lands in its interval. (So a history/live merge is order-independent too.)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::types::{Candle, Price, Qty, Timeframe, Trade};

/// Candles kept per symbol and timeframe.
pub const DEFAULT_CANDLES_KEPT: usize = 1_500;

/// Where a candle's values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CandleSource {
    /// Aggregated from live trades.
    Live,
    /// An exchange kline from REST history.
    History,
    /// An empty interval, flat at the previous close.
    Filled,
}

/// Why a trade or kline was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandleError {
    /// Trade price zero or negative.
    #[error("trade {id}: price {price} is not positive")]
    TradePrice {
        /// Trade id.
        id: u64,
        /// Offending price.
        price: Price,
    },
    /// Trade quantity zero or negative.
    #[error("trade {id}: quantity {qty} is not positive")]
    TradeQty {
        /// Trade id.
        id: u64,
        /// Offending quantity.
        qty: Qty,
    },
    /// Kline open time not on the timeframe grid.
    #[error("kline at {open_time_ms}: open time is not aligned to {timeframe}")]
    Misaligned {
        /// Kline open time.
        open_time_ms: i64,
        /// Series timeframe.
        timeframe: Timeframe,
    },
    /// Kline OHLC values contradict each other or are not positive.
    #[error(
        "kline at {open_time_ms}: inconsistent OHLC (low must be > 0 and <= open/close <= high)"
    )]
    InconsistentOhlc {
        /// Kline open time.
        open_time_ms: i64,
    },
    /// Kline volume negative.
    #[error("kline at {open_time_ms}: negative volume {volume}")]
    NegativeVolume {
        /// Kline open time.
        open_time_ms: i64,
        /// Offending volume.
        volume: Qty,
    },
}

/// What happened to one accepted trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeOutcome {
    /// The trade is now part of a candle.
    Applied,
    /// The trade is older than the kept window and was counted as dropped.
    Dropped,
}

/// Summary of a history merge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Klines written into the series.
    pub applied: usize,
    /// Klines skipped because live trades cover their interval.
    pub kept_live: usize,
    /// Klines older than the kept window.
    pub outside_window: usize,
    /// Klines rejected as malformed, with the reason.
    pub invalid: Vec<CandleError>,
}

/// Ordering key of a trade inside a candle.
type TradeKey = (i64, u64);

#[derive(Debug, Clone)]
struct Slot {
    candle: Candle,
    source: CandleSource,
    open_key: TradeKey,
    close_key: TradeKey,
}

impl Slot {
    fn filled(open_time_ms: i64, close: Price) -> Self {
        Slot {
            candle: Candle {
                open_time_ms,
                open: close,
                high: close,
                low: close,
                close,
                volume: Qty::ZERO,
                trades: 0,
            },
            source: CandleSource::Filled,
            open_key: (i64::MAX, u64::MAX),
            close_key: (i64::MIN, 0),
        }
    }
}

/// Bounded, contiguous candle series of one symbol and timeframe.
#[derive(Debug, Clone)]
pub struct CandleSeries {
    timeframe: Timeframe,
    capacity: usize,
    slots: VecDeque<Slot>,
    dropped: u64,
}

impl CandleSeries {
    /// A series keeping [`DEFAULT_CANDLES_KEPT`] candles.
    pub fn new(timeframe: Timeframe) -> Self {
        Self::with_capacity(timeframe, DEFAULT_CANDLES_KEPT)
    }

    /// A series keeping `capacity` candles (at least 1).
    pub fn with_capacity(timeframe: Timeframe, capacity: usize) -> Self {
        Self {
            timeframe,
            capacity: capacity.max(1),
            slots: VecDeque::new(),
            dropped: 0,
        }
    }

    /// The series' timeframe.
    pub fn timeframe(&self) -> Timeframe {
        self.timeframe
    }

    /// Adds one trade; malformed trades are rejected with the reason.
    pub fn push_trade(&mut self, trade: &Trade) -> Result<TradeOutcome, CandleError> {
        validate_trade(trade)?;
        Ok(self.push_valid(trade))
    }

    fn push_valid(&mut self, trade: &Trade) -> TradeOutcome {
        let start = self.timeframe.floor(trade.time_ms);
        let Some(idx) = self.ensure_slot(start) else {
            self.dropped += 1;
            return TradeOutcome::Dropped;
        };
        let key = (trade.time_ms, trade.id);
        let slot = &mut self.slots[idx];
        let close_changed = if slot.source == CandleSource::Live {
            let c = &mut slot.candle;
            c.high = c.high.max(trade.price);
            c.low = c.low.min(trade.price);
            c.volume += trade.qty;
            c.trades += 1;
            if key < slot.open_key {
                slot.open_key = key;
                c.open = trade.price;
            }
            if key > slot.close_key {
                slot.close_key = key;
                let changed = c.close != trade.price;
                c.close = trade.price;
                changed
            } else {
                false
            }
        } else {
            // Live wins over history and filled candles for the interval it covers.
            *slot = Slot {
                candle: Candle {
                    open_time_ms: start,
                    open: trade.price,
                    high: trade.price,
                    low: trade.price,
                    close: trade.price,
                    volume: trade.qty,
                    trades: 1,
                },
                source: CandleSource::Live,
                open_key: key,
                close_key: key,
            };
            true
        };
        if close_changed {
            self.propagate_close(idx);
        }
        self.normalize();
        TradeOutcome::Applied
    }

    /// Merges exchange klines of this timeframe (any order, may overlap the live candles);
    /// see the module docs for the rule.
    pub fn merge_history(&mut self, klines: &[Candle]) -> MergeStats {
        let mut stats = MergeStats::default();
        let mut valid: Vec<&Candle> = Vec::with_capacity(klines.len());
        for k in klines {
            match validate_kline(k, self.timeframe) {
                Ok(()) => valid.push(k),
                Err(e) => stats.invalid.push(e),
            }
        }
        // Newest first, so the window is anchored before older klines are judged against it.
        valid.sort_by_key(|k| std::cmp::Reverse(k.open_time_ms));
        for k in valid {
            let Some(idx) = self.ensure_slot(k.open_time_ms) else {
                stats.outside_window += 1;
                continue;
            };
            let slot = &mut self.slots[idx];
            if slot.source == CandleSource::Live {
                stats.kept_live += 1;
                continue;
            }
            *slot = Slot {
                candle: k.clone(),
                source: CandleSource::History,
                open_key: (i64::MAX, u64::MAX),
                close_key: (i64::MIN, 0),
            };
            stats.applied += 1;
            self.propagate_close(idx);
        }
        self.normalize();
        stats
    }

    /// Replaces the candle of one interval with one aggregated from a finer timeframe (see
    /// [`aggregate`]), as of `as_of_ms`: trades after that time keep updating it as live trades;
    /// earlier ones are already in it. Used for the interval that was in progress when the feed
    /// connected, whose live trades alone would give a partial candle.
    pub fn set_derived(&mut self, candle: Candle, as_of_ms: i64) {
        if candle.open_time_ms != self.timeframe.floor(candle.open_time_ms) {
            return;
        }
        let Some(idx) = self.ensure_slot(candle.open_time_ms) else {
            return;
        };
        self.slots[idx] = Slot {
            candle,
            source: CandleSource::Live,
            open_key: (i64::MIN, 0),
            close_key: (as_of_ms, u64::MAX),
        };
        self.propagate_close(idx);
        self.normalize();
    }

    /// Extends the series with filled candles up to the interval containing `now_ms`, so the
    /// current candle exists even when no trade arrived yet (no-op on an empty series).
    pub fn fill_to(&mut self, now_ms: i64) {
        let start = self.timeframe.floor(now_ms);
        if self
            .slots
            .back()
            .is_some_and(|s| s.candle.open_time_ms < start)
        {
            self.ensure_slot(start);
            self.normalize();
        }
    }

    /// Makes sure a slot exists for the interval starting at `start` and returns its index;
    /// `None` when the interval is older than the kept window. New slots are filled candles.
    fn ensure_slot(&mut self, start: i64) -> Option<usize> {
        let ms = self.timeframe.millis();
        let (Some(first), Some(last)) = (self.slots.front(), self.slots.back()) else {
            self.slots.push_back(Slot::filled(start, Price::ZERO));
            return Some(0);
        };
        let (first_t, last_t, last_close) = (
            first.candle.open_time_ms,
            last.candle.open_time_ms,
            last.candle.close,
        );
        if start > last_t {
            let steps = (start - last_t) / ms;
            if steps as u128 >= self.capacity as u128 {
                // Everything kept so far falls out of the new window.
                self.slots.clear();
                self.slots.push_back(Slot::filled(start, last_close));
                return Some(0);
            }
            for i in 1..=steps {
                self.slots
                    .push_back(Slot::filled(last_t + i * ms, last_close));
            }
            return Some(self.slots.len() - 1);
        }
        let window_start = last_t - (self.capacity as i64 - 1) * ms;
        if start < window_start {
            return None;
        }
        if start < first_t {
            // Placeholders get their values from the caller and the close propagation.
            let mut t = first_t - ms;
            while t >= start {
                self.slots.push_front(Slot::filled(t, Price::ZERO));
                t -= ms;
            }
            return Some(0);
        }
        Some(((start - first_t) / ms) as usize)
    }

    /// Re-flattens the filled candles following `idx` at its close.
    fn propagate_close(&mut self, idx: usize) {
        let close = self.slots[idx].candle.close;
        for s in self.slots.range_mut(idx + 1..) {
            if s.source != CandleSource::Filled {
                break;
            }
            let c = &mut s.candle;
            (c.open, c.high, c.low, c.close) = (close, close, close, close);
        }
    }

    /// Enforces the capacity and the "never starts with a filled candle" rule.
    fn normalize(&mut self) {
        while self.slots.len() > self.capacity {
            self.slots.pop_front();
        }
        while self
            .slots
            .front()
            .is_some_and(|s| s.source == CandleSource::Filled)
        {
            self.slots.pop_front();
        }
    }

    /// All kept candles, oldest first.
    pub fn candles(&self) -> impl ExactSizeIterator<Item = &Candle> + '_ {
        self.slots.iter().map(|s| &s.candle)
    }

    /// All kept candles with their source, oldest first.
    pub fn candles_with_source(
        &self,
    ) -> impl ExactSizeIterator<Item = (&Candle, CandleSource)> + '_ {
        self.slots.iter().map(|s| (&s.candle, s.source))
    }

    /// The newest (still open) candle.
    pub fn current(&self) -> Option<&Candle> {
        self.slots.back().map(|s| &s.candle)
    }

    /// Every candle before the newest one, oldest first.
    pub fn closed(&self) -> impl ExactSizeIterator<Item = &Candle> + '_ {
        let n = self.slots.len().saturating_sub(1);
        self.slots.range(..n).map(|s| &s.candle)
    }

    /// The newest `n` candles (including the current one), oldest first.
    pub fn last_n(&self, n: usize) -> impl ExactSizeIterator<Item = &Candle> + '_ {
        let from = self.slots.len().saturating_sub(n);
        self.slots.range(from..).map(|s| &s.candle)
    }

    /// The candle of the interval starting at `open_time_ms`, if kept.
    pub fn get(&self, open_time_ms: i64) -> Option<&Candle> {
        let first = self.slots.front()?.candle.open_time_ms;
        let ms = self.timeframe.millis();
        if open_time_ms < first || (open_time_ms - first) % ms != 0 {
            return None;
        }
        let idx = usize::try_from((open_time_ms - first) / ms).ok()?;
        self.slots.get(idx).map(|s| &s.candle)
    }

    /// Number of candles kept.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no candle is kept.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Trades that arrived too late for the kept window.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

fn validate_trade(trade: &Trade) -> Result<(), CandleError> {
    if trade.price.raw() <= 0 {
        return Err(CandleError::TradePrice {
            id: trade.id,
            price: trade.price,
        });
    }
    if trade.qty.raw() <= 0 {
        return Err(CandleError::TradeQty {
            id: trade.id,
            qty: trade.qty,
        });
    }
    Ok(())
}

fn validate_kline(k: &Candle, timeframe: Timeframe) -> Result<(), CandleError> {
    let t = k.open_time_ms;
    if timeframe.floor(t) != t {
        return Err(CandleError::Misaligned {
            open_time_ms: t,
            timeframe,
        });
    }
    let ok = k.low.raw() > 0 && k.low <= k.open.min(k.close) && k.high >= k.open.max(k.close);
    if !ok {
        return Err(CandleError::InconsistentOhlc { open_time_ms: t });
    }
    if k.volume.raw() < 0 {
        return Err(CandleError::NegativeVolume {
            open_time_ms: t,
            volume: k.volume,
        });
    }
    Ok(())
}

/// The four kept timeframes of one symbol, fed from the same trades.
#[derive(Debug, Clone)]
pub struct CandleSet {
    series: [CandleSeries; 4],
}

impl Default for CandleSet {
    fn default() -> Self {
        Self::new(DEFAULT_CANDLES_KEPT)
    }
}

impl CandleSet {
    /// Series for every [`Timeframe::ALL`] entry, each keeping `capacity` candles.
    pub fn new(capacity: usize) -> Self {
        Self {
            series: Timeframe::ALL.map(|tf| CandleSeries::with_capacity(tf, capacity)),
        }
    }

    /// Adds a trade to every timeframe.
    pub fn push_trade(&mut self, trade: &Trade) -> Result<(), CandleError> {
        validate_trade(trade)?;
        for s in &mut self.series {
            s.push_valid(trade);
        }
        Ok(())
    }

    /// The series of one timeframe.
    pub fn series(&self, timeframe: Timeframe) -> &CandleSeries {
        &self.series[Self::index(timeframe)]
    }

    /// Replaces one candle with a derived one (see [`CandleSeries::set_derived`]).
    pub fn set_derived(&mut self, timeframe: Timeframe, candle: Candle, as_of_ms: i64) {
        self.series[Self::index(timeframe)].set_derived(candle, as_of_ms);
    }

    /// Merges REST klines into one timeframe (see [`CandleSeries::merge_history`]).
    pub fn merge_history(&mut self, timeframe: Timeframe, klines: &[Candle]) -> MergeStats {
        self.series[Self::index(timeframe)].merge_history(klines)
    }

    /// Extends every timeframe with filled candles up to `now_ms`.
    pub fn fill_to(&mut self, now_ms: i64) {
        for s in &mut self.series {
            s.fill_to(now_ms);
        }
    }

    /// Trades dropped as too old, summed over timeframes.
    pub fn dropped(&self) -> u64 {
        self.series.iter().map(CandleSeries::dropped).sum()
    }

    fn index(timeframe: Timeframe) -> usize {
        match timeframe {
            Timeframe::S1 => 0,
            Timeframe::M1 => 1,
            Timeframe::H1 => 2,
            Timeframe::D1 => 3,
        }
    }
}

/// Aggregates finer candles (oldest first) into one candle opening at `open_time_ms`; candles
/// without trades are skipped (their price is a carried close, not a trade). `None` when no
/// candle had a trade.
pub fn aggregate<'a>(
    open_time_ms: i64,
    finer: impl IntoIterator<Item = &'a Candle>,
) -> Option<Candle> {
    let mut out: Option<Candle> = None;
    for c in finer.into_iter().filter(|c| c.trades > 0) {
        match out.as_mut() {
            None => {
                out = Some(Candle {
                    open_time_ms,
                    ..c.clone()
                });
            }
            Some(o) => {
                o.high = o.high.max(c.high);
                o.low = o.low.min(c.low);
                o.close = c.close;
                o.volume += c.volume;
                o.trades += c.trades;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Side;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn trade(id: u64, time_ms: i64, price: i64, qty: i64) -> Trade {
        Trade {
            symbol: "X".into(),
            id,
            time_ms,
            price: Price(price),
            qty: Qty(qty),
            taker_side: Side::Buy,
        }
    }

    fn candle(t: i64, o: i64, h: i64, l: i64, c: i64, v: i64, n: u64) -> Candle {
        Candle {
            open_time_ms: t,
            open: Price(o),
            high: Price(h),
            low: Price(l),
            close: Price(c),
            volume: Qty(v),
            trades: n,
        }
    }

    /// Naive recomputation: group by interval, fill gaps, keep the newest `cap` intervals,
    /// trim leading filled candles.
    fn naive(trades: &[Trade], tf: Timeframe, cap: usize) -> Vec<Candle> {
        let mut groups: BTreeMap<i64, Vec<&Trade>> = BTreeMap::new();
        for t in trades {
            groups.entry(tf.floor(t.time_ms)).or_default().push(t);
        }
        let (Some(&first), Some(&last)) = (groups.keys().next(), groups.keys().next_back()) else {
            return vec![];
        };
        let mut out: Vec<(Candle, bool)> = vec![];
        let mut prev_close = Price::ZERO;
        let mut t = first;
        while t <= last {
            match groups.get(&t) {
                Some(g) => {
                    let o = g.iter().min_by_key(|x| (x.time_ms, x.id)).unwrap();
                    let c = g.iter().max_by_key(|x| (x.time_ms, x.id)).unwrap();
                    let cd = Candle {
                        open_time_ms: t,
                        open: o.price,
                        high: g.iter().map(|x| x.price).max().unwrap(),
                        low: g.iter().map(|x| x.price).min().unwrap(),
                        close: c.price,
                        volume: Qty(g.iter().map(|x| x.qty.raw()).sum()),
                        trades: g.len() as u64,
                    };
                    prev_close = cd.close;
                    out.push((cd, true));
                }
                None => out.push((
                    candle(
                        t,
                        prev_close.0,
                        prev_close.0,
                        prev_close.0,
                        prev_close.0,
                        0,
                        0,
                    ),
                    false,
                )),
            }
            t += tf.millis();
        }
        let skip = out.len().saturating_sub(cap);
        let mut kept: Vec<_> = out.into_iter().skip(skip).collect();
        while kept.first().is_some_and(|(_, real)| !real) {
            kept.remove(0);
        }
        kept.into_iter().map(|(c, _)| c).collect()
    }

    #[test]
    fn aggregates_fills_gaps_and_is_utc_aligned() {
        let mut s = CandleSeries::new(Timeframe::M1);
        s.push_trade(&trade(1, 60_500, 100, 1)).unwrap();
        s.push_trade(&trade(2, 61_000, 105, 2)).unwrap();
        s.push_trade(&trade(3, 119_999, 99, 3)).unwrap();
        s.push_trade(&trade(4, 240_000, 101, 1)).unwrap();
        let got: Vec<_> = s.candles().cloned().collect();
        assert_eq!(
            got,
            vec![
                candle(60_000, 100, 105, 99, 99, 6, 3),
                candle(120_000, 99, 99, 99, 99, 0, 0),
                candle(180_000, 99, 99, 99, 99, 0, 0),
                candle(240_000, 101, 101, 101, 101, 1, 1),
            ]
        );
        assert_eq!(s.current().unwrap().open_time_ms, 240_000);
        assert_eq!(s.closed().len(), 3);
        assert_eq!(s.last_n(2).next().unwrap().open_time_ms, 180_000);
        assert_eq!(s.get(180_000).unwrap().trades, 0);
        assert_eq!(s.get(180_001), None);
    }

    #[test]
    fn late_trade_amends_candle_and_following_fillers() {
        let mut s = CandleSeries::new(Timeframe::S1);
        s.push_trade(&trade(1, 1_000, 100, 1)).unwrap();
        s.push_trade(&trade(5, 4_000, 110, 1)).unwrap();
        // Later in time than trade 1 within the same second: becomes the close of 1s.
        s.push_trade(&trade(2, 1_500, 90, 1)).unwrap();
        assert_eq!(
            s.get(1_000).unwrap(),
            &candle(1_000, 100, 100, 90, 90, 2, 2)
        );
        assert_eq!(s.get(2_000).unwrap(), &candle(2_000, 90, 90, 90, 90, 0, 0));
        assert_eq!(s.get(3_000).unwrap().close, Price(90));
        // Earlier than everything: prepended, with a filler between.
        s.push_trade(&trade(0, -1_000, 80, 1)).unwrap();
        assert_eq!(s.candles().next().unwrap().open_time_ms, -1_000);
        assert_eq!(s.get(0).unwrap().close, Price(80));
        // A late trade for an interval already holding a filler makes it live.
        s.push_trade(&trade(3, 2_100, 95, 1)).unwrap();
        assert_eq!(s.get(2_000).unwrap(), &candle(2_000, 95, 95, 95, 95, 1, 1));
        assert_eq!(s.get(3_000).unwrap().close, Price(95));
    }

    #[test]
    fn window_is_bounded_and_counts_dropped() {
        let mut s = CandleSeries::with_capacity(Timeframe::S1, 3);
        for i in 0..5 {
            s.push_trade(&trade(i, i as i64 * 1_000, 100 + i as i64, 1))
                .unwrap();
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.candles().next().unwrap().open_time_ms, 2_000);
        assert_eq!(
            s.push_trade(&trade(9, 1_999, 1, 1)),
            Ok(TradeOutcome::Dropped)
        );
        assert_eq!(s.dropped(), 1);
        // A jump beyond the window restarts the series at the new trade.
        s.push_trade(&trade(10, 1_000_000, 7, 1)).unwrap();
        assert_eq!(s.len(), 1);
        // Default capacity is 1,500.
        let mut d = CandleSeries::new(Timeframe::S1);
        for i in 0..2_000 {
            d.push_trade(&trade(i, i as i64 * 1_000, 5, 1)).unwrap();
        }
        assert_eq!(d.len(), DEFAULT_CANDLES_KEPT);
    }

    #[test]
    fn rejects_bad_trades_and_klines() {
        let mut s = CandleSeries::new(Timeframe::M1);
        assert!(matches!(
            s.push_trade(&trade(1, 0, 0, 1)),
            Err(CandleError::TradePrice { id: 1, .. })
        ));
        assert!(matches!(
            s.push_trade(&trade(2, 0, 1, -1)),
            Err(CandleError::TradeQty { id: 2, .. })
        ));
        let stats = s.merge_history(&[
            candle(60_001, 1, 1, 1, 1, 1, 1),
            candle(60_000, 5, 4, 1, 2, 1, 1),
            candle(120_000, 1, 1, 1, 1, -1, 1),
        ]);
        assert_eq!(stats.invalid.len(), 3);
        assert!(matches!(stats.invalid[0], CandleError::Misaligned { .. }));
        assert!(matches!(
            stats.invalid[1],
            CandleError::InconsistentOhlc { .. }
        ));
        assert!(matches!(
            stats.invalid[2],
            CandleError::NegativeVolume { .. }
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn history_merge_live_wins_and_fills_holes() {
        let mut s = CandleSeries::new(Timeframe::M1);
        s.push_trade(&trade(1, 180_000, 200, 1)).unwrap();
        s.push_trade(&trade(2, 300_000, 210, 1)).unwrap(); // 240_000 filled
        let stats = s.merge_history(&[
            candle(0, 10, 12, 9, 11, 5, 3),
            // 60_000 is a hole in the history: filled at 11.
            candle(120_000, 11, 15, 10, 14, 5, 3),
            candle(180_000, 1, 1, 1, 1, 1, 1), // live candle wins
            candle(240_000, 14, 16, 13, 15, 2, 2), // replaces the filled candle
            candle(300_000, 1, 1, 1, 1, 1, 1), // exchange's open kline, live wins
            candle(120_000, 11, 15, 10, 14, 5, 3), // duplicate
        ]);
        assert_eq!(stats.applied, 4);
        assert_eq!(stats.kept_live, 2);
        let got: Vec<_> = s
            .candles_with_source()
            .map(|(c, s)| (c.clone(), s))
            .collect();
        use CandleSource::*;
        assert_eq!(
            got,
            vec![
                (candle(0, 10, 12, 9, 11, 5, 3), History),
                (candle(60_000, 11, 11, 11, 11, 0, 0), Filled),
                (candle(120_000, 11, 15, 10, 14, 5, 3), History),
                (candle(180_000, 200, 200, 200, 200, 1, 1), Live),
                (candle(240_000, 14, 16, 13, 15, 2, 2), History),
                (candle(300_000, 210, 210, 210, 210, 1, 1), Live),
            ]
        );
        // Newer history after the live tail extends the series; a live trade then wins.
        s.merge_history(&[candle(420_000, 220, 230, 215, 225, 9, 9)]);
        assert_eq!(s.get(360_000).unwrap().close, Price(210));
        s.push_trade(&trade(3, 420_001, 300, 1)).unwrap();
        assert_eq!(
            s.current().unwrap(),
            &candle(420_000, 300, 300, 300, 300, 1, 1)
        );
    }

    #[test]
    fn history_beyond_capacity_keeps_newest() {
        let mut s = CandleSeries::with_capacity(Timeframe::M1, 3);
        let klines: Vec<_> = (0..10)
            .map(|i| candle(i * 60_000, 5, 5, 5, 5, 1, 1))
            .collect();
        let stats = s.merge_history(&klines);
        assert_eq!(stats.applied, 3);
        assert_eq!(stats.outside_window, 7);
        assert_eq!(s.candles().next().unwrap().open_time_ms, 7 * 60_000);
    }

    #[test]
    fn fill_to_extends_with_flat_candles() {
        let mut s = CandleSeries::new(Timeframe::S1);
        s.fill_to(5_000);
        assert!(s.is_empty());
        s.push_trade(&trade(1, 1_000, 100, 1)).unwrap();
        s.fill_to(3_500);
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.current().unwrap(),
            &candle(3_000, 100, 100, 100, 100, 0, 0)
        );
    }

    #[test]
    fn candle_set_feeds_all_timeframes() {
        let mut set = CandleSet::default();
        set.push_trade(&trade(1, 86_400_000 + 3_723_000, 100, 1))
            .unwrap();
        assert_eq!(
            set.series(Timeframe::S1).current().unwrap().open_time_ms,
            86_400_000 + 3_723_000
        );
        assert_eq!(
            set.series(Timeframe::M1).current().unwrap().open_time_ms,
            86_400_000 + 3_720_000
        );
        assert_eq!(
            set.series(Timeframe::H1).current().unwrap().open_time_ms,
            86_400_000 + 3_600_000
        );
        assert_eq!(
            set.series(Timeframe::D1).current().unwrap().open_time_ms,
            86_400_000
        );
        assert!(set.push_trade(&trade(2, 0, -5, 1)).is_err());
        assert_eq!(set.dropped(), 0);
    }

    fn trades_strategy() -> impl Strategy<Value = Vec<Trade>> {
        prop::collection::vec((0i64..30_000, 1i64..50, 1i64..1_000), 1..120).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (t, p, q))| trade(i as u64, t, p, q))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_order_equals_naive(trades in trades_strategy(), seed in any::<u64>(),
                                  cap in 3usize..40) {
            // Shuffle deterministically from the seed (Fisher-Yates with an LCG).
            let mut shuffled = trades.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (x >> 33) as usize % (i + 1));
            }
            for tf in [Timeframe::S1, Timeframe::M1] {
                let mut s = CandleSeries::with_capacity(tf, cap);
                for t in &shuffled {
                    s.push_trade(t).unwrap();
                }
                let got: Vec<Candle> = s.candles().cloned().collect();
                prop_assert_eq!(got, naive(&trades, tf, cap));
            }
        }

        #[test]
        fn history_merge_is_order_independent(
            trades in trades_strategy(),
            klines in prop::collection::vec((0i64..30, 1i64..50, 0i64..1_000), 0..30),
            at in any::<prop::sample::Index>(),
            cap in 3usize..40,
        ) {
            let klines: Vec<Candle> = klines
                .into_iter()
                .map(|(i, p, v)| candle(i * 1_000, p, p + 1, p, p, v, 1))
                .collect();
            let run = |merge_at: usize| {
                let mut s = CandleSeries::with_capacity(Timeframe::S1, cap);
                for (i, t) in trades.iter().enumerate() {
                    if i == merge_at {
                        s.merge_history(&klines);
                    }
                    s.push_trade(t).unwrap();
                }
                if merge_at >= trades.len() {
                    s.merge_history(&klines);
                }
                s.candles_with_source()
                    .map(|(c, src)| (c.clone(), src))
                    .collect::<Vec<_>>()
            };
            let reference = run(0);
            prop_assert_eq!(run(at.index(trades.len() + 1)), reference.clone());
            prop_assert_eq!(run(trades.len()), reference);
        }
    }
}
