//! COB: the consolidated order book view computed once a second per symbol.
//!
//! Bucketing rule: `center = floor(mid / bucket_size) * bucket_size` (mid is the exact floored
//! mid of the book). Bucket `k`, for `k` in `-half_buckets..=half_buckets` (41 buckets by
//! default), covers prices `[center + k*size, center + (k+1)*size)`; bucket 0 therefore holds
//! the mid. Each bucket sums the resting bid and ask quantities exactly; imbalance is
//! `(bid - ask) / (bid + ask)` (0 for an empty bucket) and the volume-weighted price covers
//! both sides (absent for an empty bucket).
//!
//! Imbalance moving averages cover the central `-ma_half_buckets..=ma_half_buckets` offsets
//! (relative to the moving center) over the last 1, 5, 15 and 60 computations, from running
//! sums over a ring of per-computation rows (constant time per step; until a window has filled
//! the average is over the rows seen so far). The heatmap ring keeps one row per computation
//! (1,800 by default: 30 minutes at 1 s) with its own price axis, so a time × price map can be
//! drawn while the center moves.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::book::OrderBook;
use super::types::{Level, Price, Qty, Side, Trade};

/// Moving-average windows, in computations (seconds when computed every second).
pub const MA_WINDOWS: [usize; 4] = [1, 5, 15, 60];
const MA_RING: usize = 61;
/// Running sums are recomputed exactly this often, so float drift cannot accumulate.
const MA_RESYNC_EVERY: u64 = 1_024;

/// COB parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CobConfig {
    /// Buckets on each side of the center bucket (20 → 41 buckets).
    pub half_buckets: usize,
    /// Central buckets on each side with imbalance moving averages (5 → 11 buckets).
    pub ma_half_buckets: usize,
    /// A trade at least this large counts as a large trade.
    pub large_trade_qty: Qty,
    /// Heatmap rows kept (1,800 = 30 minutes at one row a second).
    pub heatmap_rows: usize,
}

impl Default for CobConfig {
    fn default() -> Self {
        Self {
            half_buckets: 20,
            ma_half_buckets: 5,
            large_trade_qty: Qty::from_units(1),
            heatmap_rows: 1_800,
        }
    }
}

/// Why a COB could not be built or computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CobError {
    /// Bucket size zero or negative.
    #[error("bucket size {0} must be positive")]
    BucketSize(Price),
    /// More moving-average buckets than buckets.
    #[error("ma_half_buckets {ma} exceeds half_buckets {half}")]
    MaBuckets {
        /// Requested MA half width.
        ma: usize,
        /// Bucket half width.
        half: usize,
    },
    /// The bucket range does not fit the fixed-point range.
    #[error("bucket range overflows the price range")]
    Overflow,
    /// The book lacks a bid or an ask, so there is no mid.
    #[error("book has no two-sided quote")]
    NoQuote,
    /// The book is crossed (best bid >= best ask): its state is invalid.
    #[error("book is crossed (bid {bid} >= ask {ask})")]
    Crossed {
        /// Best bid.
        bid: Price,
        /// Best ask.
        ask: Price,
    },
}

/// One price bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CobBucket {
    /// Offset `k` from the center bucket.
    pub offset: i32,
    /// Inclusive lower bound `center + k*size`.
    pub price: Price,
    /// Resting bid quantity in the bucket.
    pub bid_qty: Qty,
    /// Resting ask quantity in the bucket.
    pub ask_qty: Qty,
    /// `(bid - ask) / (bid + ask)`, 0 when empty.
    pub imbalance: f64,
    /// Volume-weighted price of both sides, `None` when empty.
    pub vwap: Option<f64>,
}

/// Imbalance moving averages for the central buckets, index `i` is offset `offsets[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImbalanceMas {
    /// Bucket offsets covered, ascending.
    pub offsets: Vec<i32>,
    /// Over the last computation.
    pub ma_1s: Vec<f64>,
    /// Over the last 5 computations.
    pub ma_5s: Vec<f64>,
    /// Over the last 15 computations.
    pub ma_15s: Vec<f64>,
    /// Over the last 60 computations.
    pub ma_60s: Vec<f64>,
}

/// Aggressive flow from the trades since the previous computation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFlow {
    /// Quantity bought by takers.
    pub buy_qty: Qty,
    /// Quantity sold by takers.
    pub sell_qty: Qty,
    /// `buy_qty / sell_qty`; `None` when no taker sold.
    pub buy_sell_ratio: Option<f64>,
    /// Trades seen.
    pub trades: u64,
    /// Trades with quantity at least the configured threshold.
    pub large_trades: u64,
}

/// One COB computation, ready for the screen and the models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CobSnapshot {
    /// Computation time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Best bid.
    pub best_bid: Level,
    /// Best ask.
    pub best_ask: Level,
    /// Exact floored mid.
    pub mid: Price,
    /// Lower bound of bucket 0.
    pub center: Price,
    /// Bucket width.
    pub bucket_size: Price,
    /// Buckets by ascending offset.
    pub buckets: Vec<CobBucket>,
    /// Imbalance moving averages of the central buckets.
    pub imbalance_ma: ImbalanceMas,
    /// Order flow since the previous computation.
    pub order_flow: OrderFlow,
}

/// One heatmap row: bucket `j` spans `[first_price + j*bucket_size, + bucket_size)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeatmapRow {
    /// Computation time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Lower bound of the first (lowest) bucket.
    pub first_price: Price,
    /// Bucket width.
    pub bucket_size: Price,
    /// Bid quantity per bucket, lowest price first.
    pub bid: Vec<Qty>,
    /// Ask quantity per bucket, lowest price first.
    pub ask: Vec<Qty>,
}

impl HeatmapRow {
    /// Lower price bound of bucket `j` of this row.
    pub fn bucket_price(&self, j: usize) -> Price {
        Price(self.first_price.raw() + j as i64 * self.bucket_size.raw())
    }
}

/// Bounded time × price ring of COB rows, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    rows: VecDeque<HeatmapRow>,
    capacity: usize,
}

impl Heatmap {
    /// Rows, oldest first.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &HeatmapRow> + '_ {
        self.rows.iter()
    }

    /// Newest row.
    pub fn latest(&self) -> Option<&HeatmapRow> {
        self.rows.back()
    }

    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Maximum rows held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A row slot to overwrite: recycled from the oldest row when full (no allocation).
    fn next_row(&mut self, width: usize) -> &mut HeatmapRow {
        let row = if self.rows.len() >= self.capacity {
            self.rows.pop_front()
        } else {
            None
        };
        let mut row = row.unwrap_or_else(|| HeatmapRow {
            time_ms: 0,
            first_price: Price::ZERO,
            bucket_size: Price::ZERO,
            bid: Vec::with_capacity(width),
            ask: Vec::with_capacity(width),
        });
        row.bid.clear();
        row.ask.clear();
        self.rows.push_back(row);
        self.rows.back_mut().expect("row just pushed")
    }
}

/// Per-symbol COB state: bucket parameters, the imbalance ring and the heatmap.
#[derive(Debug, Clone)]
pub struct CobEngine {
    bucket_size: Price,
    config: CobConfig,
    /// Ring of imbalance rows (`MA_RING` × MA width), row `step % MA_RING`.
    ma_ring: Vec<f64>,
    /// Running sums per window (`MA_WINDOWS.len()` × MA width).
    ma_sums: Vec<f64>,
    steps: u64,
    heatmap: Heatmap,
    bid_acc: Vec<i64>,
    ask_acc: Vec<i64>,
    px_acc: Vec<i128>,
}

impl CobEngine {
    /// A COB with buckets of `bucket_size` (e.g. $1 for ETH, $10 for BTC).
    pub fn new(bucket_size: Price, config: CobConfig) -> Result<Self, CobError> {
        if bucket_size.raw() <= 0 {
            return Err(CobError::BucketSize(bucket_size));
        }
        if config.ma_half_buckets > config.half_buckets {
            return Err(CobError::MaBuckets {
                ma: config.ma_half_buckets,
                half: config.half_buckets,
            });
        }
        let width = 2 * config.half_buckets + 1;
        let ma_width = 2 * config.ma_half_buckets + 1;
        Ok(Self {
            bucket_size,
            ma_ring: vec![0.0; MA_RING * ma_width],
            ma_sums: vec![0.0; MA_WINDOWS.len() * ma_width],
            steps: 0,
            heatmap: Heatmap {
                rows: VecDeque::with_capacity(config.heatmap_rows.min(1 << 16)),
                capacity: config.heatmap_rows.max(1),
            },
            bid_acc: vec![0; width],
            ask_acc: vec![0; width],
            px_acc: vec![0; width],
            config,
        })
    }

    /// Bucket width.
    pub fn bucket_size(&self) -> Price {
        self.bucket_size
    }

    /// Configuration.
    pub fn config(&self) -> &CobConfig {
        &self.config
    }

    /// The heatmap ring.
    pub fn heatmap(&self) -> &Heatmap {
        &self.heatmap
    }

    /// Computations done so far (moving-average rows pushed).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Price range `[lo, hi)` the buckets cover for a given mid.
    pub fn covered_range(&self, mid: Price) -> Result<(Price, Price), CobError> {
        let size = self.bucket_size.raw();
        let half = i64::try_from(self.config.half_buckets).map_err(|_| CobError::Overflow)?;
        let center = mid.raw().div_euclid(size) * size;
        let lo = half
            .checked_mul(size)
            .and_then(|d| center.checked_sub(d))
            .ok_or(CobError::Overflow)?;
        let hi = (half + 1)
            .checked_mul(size)
            .and_then(|d| center.checked_add(d))
            .ok_or(CobError::Overflow)?;
        Ok((Price(lo), Price(hi)))
    }

    /// One computation from the book and the trades since the previous one. A failed
    /// computation (no two-sided quote, crossed book) leaves the state untouched.
    pub fn compute(
        &mut self,
        book: &OrderBook,
        trades: &[Trade],
        now_ms: i64,
    ) -> Result<CobSnapshot, CobError> {
        self.compute_flow(book, trades.iter().map(|t| (t.qty, t.taker_side)), now_ms)
    }

    /// Like [`Self::compute`], with the trades as `(qty, taker_side)` pairs (e.g. from ticks).
    pub fn compute_flow(
        &mut self,
        book: &OrderBook,
        trades: impl IntoIterator<Item = (Qty, Side)>,
        now_ms: i64,
    ) -> Result<CobSnapshot, CobError> {
        let (Some(best_bid), Some(best_ask)) = (book.best_bid(), book.best_ask()) else {
            return Err(CobError::NoQuote);
        };
        if best_bid.price >= best_ask.price {
            return Err(CobError::Crossed {
                bid: best_bid.price,
                ask: best_ask.price,
            });
        }
        let mid = book.mid().ok_or(CobError::NoQuote)?;
        let (lo, hi) = self.covered_range(mid)?;
        let size = self.bucket_size.raw();
        let half = self.config.half_buckets;

        self.bid_acc.fill(0);
        self.ask_acc.fill(0);
        self.px_acc.fill(0);
        for (side, acc) in [
            (Side::Buy, &mut self.bid_acc),
            (Side::Sell, &mut self.ask_acc),
        ] {
            accumulate(
                book.levels_in_range(side, lo, hi),
                lo.raw(),
                size,
                acc,
                &mut self.px_acc,
            );
        }

        let buckets: Vec<CobBucket> = (0..self.bid_acc.len())
            .map(|j| {
                let (b, a) = (self.bid_acc[j], self.ask_acc[j]);
                let total = b + a;
                CobBucket {
                    offset: j as i32 - half as i32,
                    price: Price(lo.raw() + j as i64 * size),
                    bid_qty: Qty(b),
                    ask_qty: Qty(a),
                    imbalance: if total == 0 {
                        0.0
                    } else {
                        (b - a) as f64 / total as f64
                    },
                    vwap: (total != 0).then(|| {
                        // Σ p·q is scaled 1e16 and Σ q 1e8: the ratio is a raw price.
                        self.px_acc[j] as f64 / total as f64 / super::types::SCALE as f64
                    }),
                }
            })
            .collect();

        let imbalance_ma = self.push_ma_row(&buckets);

        let row = self.heatmap.next_row(buckets.len());
        row.time_ms = now_ms;
        row.first_price = lo;
        row.bucket_size = self.bucket_size;
        row.bid.extend(buckets.iter().map(|b| b.bid_qty));
        row.ask.extend(buckets.iter().map(|b| b.ask_qty));

        Ok(CobSnapshot {
            time_ms: now_ms,
            best_bid,
            best_ask,
            mid,
            center: Price(lo.raw() + half as i64 * size),
            bucket_size: self.bucket_size,
            buckets,
            imbalance_ma,
            order_flow: order_flow(trades, self.config.large_trade_qty),
        })
    }

    /// Pushes the central imbalances as a new ring row and returns the updated averages.
    fn push_ma_row(&mut self, buckets: &[CobBucket]) -> ImbalanceMas {
        let half = self.config.half_buckets;
        let mh = self.config.ma_half_buckets;
        let w = 2 * mh + 1;
        let step = self.steps;
        let pos = (step % MA_RING as u64) as usize;
        for i in 0..w {
            let v = buckets[half - mh + i].imbalance;
            self.ma_ring[pos * w + i] = v;
            for (k, &win) in MA_WINDOWS.iter().enumerate() {
                self.ma_sums[k * w + i] += v;
                if step >= win as u64 {
                    let old = ((step - win as u64) % MA_RING as u64) as usize;
                    self.ma_sums[k * w + i] -= self.ma_ring[old * w + i];
                }
            }
        }
        self.steps += 1;
        if self.steps.is_multiple_of(MA_RESYNC_EVERY) {
            self.resync_sums();
        }
        let avg = |k: usize| -> Vec<f64> {
            let n = (MA_WINDOWS[k] as u64).min(self.steps) as f64;
            (0..w).map(|i| self.ma_sums[k * w + i] / n).collect()
        };
        ImbalanceMas {
            offsets: (-(mh as i32)..=mh as i32).collect(),
            ma_1s: avg(0),
            ma_5s: avg(1),
            ma_15s: avg(2),
            ma_60s: avg(3),
        }
    }

    /// Recomputes the running sums exactly from the ring rows.
    fn resync_sums(&mut self) {
        let w = 2 * self.config.ma_half_buckets + 1;
        for (k, &win) in MA_WINDOWS.iter().enumerate() {
            let n = (win as u64).min(self.steps);
            for i in 0..w {
                let mut s = 0.0;
                for back in 1..=n {
                    let r = ((self.steps - back) % MA_RING as u64) as usize;
                    s += self.ma_ring[r * w + i];
                }
                self.ma_sums[k * w + i] = s;
            }
        }
    }
}

/// Adds sorted levels (either direction) into their buckets. Levels arrive in price order,
/// so the bucket index is only recomputed (one division) when a level leaves the current
/// bucket, and sums stay in registers in between.
fn accumulate(
    levels: impl Iterator<Item = Level>,
    lo: i64,
    size: i64,
    qty_acc: &mut [i64],
    px_acc: &mut [i128],
) {
    let mut j = usize::MAX;
    let (mut b_lo, mut b_hi) = (0i64, 0i64);
    let (mut q_sum, mut px_sum) = (0i64, 0i128);
    for l in levels {
        let p = l.price.raw();
        if p < b_lo || p >= b_hi {
            if j != usize::MAX {
                qty_acc[j] += q_sum;
                px_acc[j] += px_sum;
            }
            j = ((p - lo) / size) as usize;
            b_lo = lo + j as i64 * size;
            b_hi = b_lo + size;
            (q_sum, px_sum) = (0, 0);
        }
        q_sum += l.qty.raw();
        px_sum += p as i128 * l.qty.raw() as i128;
    }
    if j != usize::MAX {
        qty_acc[j] += q_sum;
        px_acc[j] += px_sum;
    }
}

fn order_flow(trades: impl IntoIterator<Item = (Qty, Side)>, large: Qty) -> OrderFlow {
    let mut f = OrderFlow {
        buy_qty: Qty::ZERO,
        sell_qty: Qty::ZERO,
        buy_sell_ratio: None,
        trades: 0,
        large_trades: 0,
    };
    for (qty, side) in trades {
        match side {
            Side::Buy => f.buy_qty += qty,
            Side::Sell => f.sell_qty += qty,
        }
        f.trades += 1;
        if qty >= large {
            f.large_trades += 1;
        }
    }
    if !f.sell_qty.is_zero() {
        f.buy_sell_ratio = Some(f.buy_qty.to_f64() / f.sell_qty.to_f64());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lv(p: &str, q: &str) -> Level {
        Level {
            price: Price::parse(p).unwrap(),
            qty: Qty::parse(q).unwrap(),
        }
    }

    fn trade(qty: &str, side: Side) -> Trade {
        Trade {
            symbol: "ETHUSDT".into(),
            id: 1,
            time_ms: 0,
            price: Price::from_units(100),
            qty: Qty::parse(qty).unwrap(),
            taker_side: side,
        }
    }

    fn engine() -> CobEngine {
        CobEngine::new(Price::from_units(1), CobConfig::default()).unwrap()
    }

    #[test]
    fn rejects_bad_parameters_and_books() {
        assert_eq!(
            CobEngine::new(Price::ZERO, CobConfig::default()).unwrap_err(),
            CobError::BucketSize(Price::ZERO)
        );
        let cfg = CobConfig {
            ma_half_buckets: 21,
            ..CobConfig::default()
        };
        assert!(matches!(
            CobEngine::new(Price::from_units(1), cfg),
            Err(CobError::MaBuckets { .. })
        ));
        let mut e = engine();
        assert_eq!(
            e.compute(&OrderBook::new(), &[], 0).unwrap_err(),
            CobError::NoQuote
        );
        let mut crossed = OrderBook::new();
        crossed.apply_snapshot(&[lv("101", "1")], &[lv("100", "1")], 1);
        assert!(matches!(
            e.compute(&crossed, &[], 0),
            Err(CobError::Crossed { .. })
        ));
        assert_eq!(e.steps(), 0);
        assert!(e.heatmap().is_empty());
    }

    #[test]
    fn buckets_follow_the_documented_rule() {
        let mut book = OrderBook::new();
        // mid = 100.25 → center 100; bucket 0 = [100, 101).
        book.apply_snapshot(
            &[
                lv("100", "2"),
                lv("99.5", "1"),
                lv("99", "3"),
                lv("79.99", "7"),
            ],
            &[
                lv("100.5", "1"),
                lv("101", "4"),
                lv("120.99", "5"),
                lv("121", "9"),
            ],
            1,
        );
        let mut e = engine();
        let s = e
            .compute(&book, &[trade("3", Side::Buy), trade("1", Side::Sell)], 42)
            .unwrap();
        assert_eq!(s.mid, Price::parse("100.25").unwrap());
        assert_eq!(s.center, Price::from_units(100));
        assert_eq!(s.buckets.len(), 41);
        let b = |k: i32| s.buckets.iter().find(|b| b.offset == k).unwrap();
        assert_eq!(b(0).price, Price::from_units(100));
        assert_eq!(b(0).bid_qty, Qty::from_units(2));
        assert_eq!(b(0).ask_qty, Qty::from_units(1));
        assert!((b(0).imbalance - 1.0 / 3.0).abs() < 1e-12);
        assert!((b(0).vwap.unwrap() - (200.0 + 100.5) / 3.0).abs() < 1e-9);
        assert_eq!(b(-1).bid_qty, Qty::from_units(4));
        assert_eq!(b(1).ask_qty, Qty::from_units(4));
        assert_eq!(b(1).imbalance, -1.0);
        assert_eq!(b(20).ask_qty, Qty::from_units(5)); // 120.99 inside, 121 outside
        assert_eq!(b(-20).bid_qty, Qty::ZERO); // 79.99 below 80
        assert_eq!(b(5).imbalance, 0.0);
        assert_eq!(b(5).vwap, None);
        assert_eq!(s.order_flow.buy_qty, Qty::from_units(3));
        assert_eq!(s.order_flow.sell_qty, Qty::from_units(1));
        assert_eq!(s.order_flow.buy_sell_ratio, Some(3.0));
        assert_eq!(s.order_flow.trades, 2);
        assert_eq!(s.order_flow.large_trades, 2);
        let row = e.heatmap().latest().unwrap();
        assert_eq!(row.time_ms, 42);
        assert_eq!(row.first_price, Price::from_units(80));
        assert_eq!(row.bid[20], Qty::from_units(2));
        assert_eq!(row.bucket_price(20), Price::from_units(100));
        assert!(serde_json::to_string(&s).unwrap().contains("\"ma_60s\""));
    }

    #[test]
    fn moving_averages_track_running_windows() {
        let mut e = engine();
        let mut book = OrderBook::new();
        let mut history: Vec<f64> = vec![];
        for step in 0..1_100u32 {
            // Vary the bid at the center bucket so its imbalance changes every step.
            let bid_qty = Qty::from_units(1 + (step % 7) as i64);
            book.apply_snapshot(
                &[Level {
                    price: Price::parse("100.1").unwrap(),
                    qty: bid_qty,
                }],
                &[lv("100.9", "3")],
                1,
            );
            let s = e.compute(&book, &[], step as i64 * 1_000).unwrap();
            history.push(s.buckets[20].imbalance);
            let centre = s.imbalance_ma.offsets.iter().position(|&o| o == 0).unwrap();
            for (win, got) in [
                (1, &s.imbalance_ma.ma_1s),
                (5, &s.imbalance_ma.ma_5s),
                (15, &s.imbalance_ma.ma_15s),
                (60, &s.imbalance_ma.ma_60s),
            ] {
                let tail = &history[history.len().saturating_sub(win)..];
                let want = tail.iter().sum::<f64>() / tail.len() as f64;
                assert!(
                    (got[centre] - want).abs() < 1e-9,
                    "window {win} step {step}"
                );
                assert_eq!(got[0], 0.0);
            }
        }
        assert_eq!(e.heatmap().len(), 1_100);
    }

    #[test]
    fn heatmap_is_bounded_and_recycles_rows() {
        let cfg = CobConfig {
            heatmap_rows: 3,
            ..CobConfig::default()
        };
        let mut e = CobEngine::new(Price::from_units(10), cfg).unwrap();
        let mut book = OrderBook::new();
        for i in 0..5 {
            let bid = Price::from_units(1_000 + 10 * i);
            book.apply_snapshot(
                &[Level {
                    price: bid,
                    qty: Qty::from_units(1),
                }],
                &[Level {
                    price: bid + Price::from_units(1),
                    qty: Qty::from_units(1),
                }],
                1,
            );
            e.compute(&book, &[], i).unwrap();
        }
        let times: Vec<i64> = e.heatmap().rows().map(|r| r.time_ms).collect();
        assert_eq!(times, vec![2, 3, 4]);
        // The axis moves with the center: 1040 → first bucket 1040 - 200.
        assert_eq!(
            e.heatmap().latest().unwrap().first_price,
            Price::from_units(840)
        );
        assert!(
            e.heatmap()
                .rows()
                .all(|r| r.bid.len() == 41 && r.ask.len() == 41)
        );
    }

    proptest! {
        #[test]
        fn bucket_volumes_sum_to_book_volume(
            bids in prop::collection::vec((1i64..5_000, 1i64..1_000_000), 1..80),
            asks in prop::collection::vec((1i64..5_000, 1i64..1_000_000), 1..80),
            size in 1i64..300,
        ) {
            // Prices in cents around 100.00: bids below 100, asks above.
            let mk = |v: &Vec<(i64, i64)>, sign: i64| v.iter().map(|&(d, q)| Level {
                price: Price(10_000_000_000 + sign * d * 1_000_000),
                qty: Qty(q),
            }).collect::<Vec<_>>();
            let mut book = OrderBook::new();
            book.apply_snapshot(&mk(&bids, -1), &mk(&asks, 1), 1);
            let mut e = CobEngine::new(Price(size * 1_000_000), CobConfig::default()).unwrap();
            let s = e.compute(&book, &[], 0).unwrap();
            let (lo, hi) = e.covered_range(s.mid).unwrap();
            let bid_sum = s.buckets.iter().fold(Qty::ZERO, |a, b| a + b.bid_qty);
            let ask_sum = s.buckets.iter().fold(Qty::ZERO, |a, b| a + b.ask_qty);
            prop_assert_eq!(bid_sum, book.volume_in_range(Side::Buy, lo, hi));
            prop_assert_eq!(ask_sum, book.volume_in_range(Side::Sell, lo, hi));
            for b in &s.buckets {
                let top = b.price + e.bucket_size();
                prop_assert_eq!(b.bid_qty, book.volume_in_range(Side::Buy, b.price, top));
                prop_assert_eq!(b.ask_qty, book.volume_in_range(Side::Sell, b.price, top));
            }
            prop_assert!(s.center <= s.mid && s.mid < s.center + e.bucket_size());
        }
    }
}
