//! The cross-exchange COB: the ±N-bucket consolidated order book of one canonical instrument
//! over the books of several exchanges, each bucket keeping every exchange's contribution.
//! Pure logic.
//!
//! Centering rule: the reference mid is the median of the usable books' exact floored mids
//! (for an even count, the floored mean of the two middle ones), so one stale or outlying
//! exchange cannot move the grid; `center = floor(mid / size) * size` and bucket `k` covers
//! `[center + k*size, center + (k+1)*size)`, as in [`crate::market::cob`]. A book without a
//! two-sided quote, or crossed, is left out and listed with the reason.

use serde::Serialize;

use super::normalized::Venue;
use crate::market::book::OrderBook;
use crate::market::types::{Level, Price, Qty, Side};

/// Why the aggregate could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AggregateError {
    /// Bucket size zero or negative.
    #[error("bucket size {0} must be positive")]
    BucketSize(Price),
    /// No exchange has a usable book.
    #[error("no exchange has a two-sided, uncrossed book")]
    NoBooks,
    /// The bucket range leaves the fixed-point range.
    #[error("bucket range overflows the price range")]
    Overflow,
}

/// Why one exchange's book was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Skipped {
    /// No bid or no ask.
    NoQuote,
    /// Best bid at or above best ask.
    Crossed,
    /// The exchange's link is not connected (the caller leaves it out).
    Down,
    /// Connected, but silent past the stale threshold (the caller leaves it out).
    Stale,
    /// No synced book for the instrument yet (the caller leaves it out).
    NoBook,
}

impl Skipped {
    /// Short reason for the screen.
    pub const fn label(self) -> &'static str {
        match self {
            Skipped::NoQuote => "one-sided",
            Skipped::Crossed => "crossed",
            Skipped::Down => "down",
            Skipped::Stale => "stale",
            Skipped::NoBook => "no book",
        }
    }
}

/// One exchange's part of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Contribution {
    /// The exchange.
    pub venue: Venue,
    /// Its resting bid quantity in the bucket.
    pub bid_qty: Qty,
    /// Its resting ask quantity in the bucket.
    pub ask_qty: Qty,
}

/// One bucket of the aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggBucket {
    /// Offset from the center bucket.
    pub offset: i32,
    /// Inclusive lower bound.
    pub price: Price,
    /// Bid quantity over all exchanges (exact sum of the contributions).
    pub bid_qty: Qty,
    /// Ask quantity over all exchanges.
    pub ask_qty: Qty,
    /// `(bid - ask) / (bid + ask)`, 0 when empty.
    pub imbalance: f64,
    /// Per exchange, in the order the books were given (exchanges left out are absent).
    pub contributions: Vec<Contribution>,
}

/// One exchange's quote in the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VenueQuote {
    /// The exchange.
    pub venue: Venue,
    /// Best bid.
    pub best_bid: Level,
    /// Best ask.
    pub best_ask: Level,
    /// Exact floored mid.
    pub mid: Price,
}

/// The cross-exchange COB of one instrument.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregatedCob {
    /// Canonical instrument id.
    pub instrument: String,
    /// Reference mid (median of the usable mids).
    pub mid: Price,
    /// Lower bound of bucket 0.
    pub center: Price,
    /// Bucket width.
    pub bucket_size: Price,
    /// Buckets by ascending offset (`2 * half_buckets + 1`).
    pub buckets: Vec<AggBucket>,
    /// Quotes of the exchanges included.
    pub quotes: Vec<VenueQuote>,
    /// Exchanges left out, with the reason.
    pub skipped: Vec<(Venue, Skipped)>,
}

impl AggregatedCob {
    /// Each included exchange's share of the resting quantity in the buckets (bid plus ask),
    /// in the order of `quotes`; all zero when the buckets are empty.
    pub fn depth_shares(&self) -> Vec<(Venue, f64)> {
        let mut per: Vec<(Venue, i128)> = self.quotes.iter().map(|q| (q.venue, 0)).collect();
        for b in &self.buckets {
            for c in &b.contributions {
                if let Some(slot) = per.iter_mut().find(|(v, _)| *v == c.venue) {
                    slot.1 += i128::from(c.bid_qty.raw()) + i128::from(c.ask_qty.raw());
                }
            }
        }
        let total: i128 = per.iter().map(|(_, q)| q).sum();
        per.into_iter()
            .map(|(v, q)| {
                (
                    v,
                    if total == 0 {
                        0.0
                    } else {
                        q as f64 / total as f64
                    },
                )
            })
            .collect()
    }
}

/// Builds the aggregate over `books` (one per exchange) with `half_buckets` on each side.
pub fn aggregate_cob(
    instrument: &str,
    books: &[(Venue, &OrderBook)],
    bucket_size: Price,
    half_buckets: usize,
) -> Result<AggregatedCob, AggregateError> {
    if bucket_size.raw() <= 0 {
        return Err(AggregateError::BucketSize(bucket_size));
    }
    let mut quotes = Vec::new();
    let mut usable: Vec<(Venue, &OrderBook)> = Vec::new();
    let mut skipped = Vec::new();
    for &(venue, book) in books {
        match (book.best_bid(), book.best_ask(), book.mid()) {
            (Some(b), Some(a), Some(mid)) if b.price < a.price => {
                quotes.push(VenueQuote {
                    venue,
                    best_bid: b,
                    best_ask: a,
                    mid,
                });
                usable.push((venue, book));
            }
            (Some(_), Some(_), _) => skipped.push((venue, Skipped::Crossed)),
            _ => skipped.push((venue, Skipped::NoQuote)),
        }
    }
    if usable.is_empty() {
        return Err(AggregateError::NoBooks);
    }
    let mut mids: Vec<i64> = quotes.iter().map(|q| q.mid.raw()).collect();
    mids.sort_unstable();
    let n = mids.len();
    let mid = if n % 2 == 1 {
        mids[n / 2]
    } else {
        // Floored mean without overflow.
        let (a, b) = (mids[n / 2 - 1], mids[n / 2]);
        a.div_euclid(2) + b.div_euclid(2) + (a.rem_euclid(2) + b.rem_euclid(2)) / 2
    };
    let size = bucket_size.raw();
    let half = i64::try_from(half_buckets).map_err(|_| AggregateError::Overflow)?;
    let center = mid.div_euclid(size) * size;
    let lo = half
        .checked_mul(size)
        .and_then(|d| center.checked_sub(d))
        .ok_or(AggregateError::Overflow)?;
    let hi = (half + 1)
        .checked_mul(size)
        .and_then(|d| center.checked_add(d))
        .ok_or(AggregateError::Overflow)?;
    let width = 2 * half_buckets + 1;
    let mut per: Vec<Vec<Contribution>> = vec![Vec::with_capacity(usable.len()); width];
    for (venue, book) in &usable {
        let mut bid = vec![0i64; width];
        let mut ask = vec![0i64; width];
        for (side, acc) in [(Side::Buy, &mut bid), (Side::Sell, &mut ask)] {
            for l in book.levels_in_range(side, Price(lo), Price(hi)) {
                let j = ((l.price.raw() - lo) / size) as usize;
                acc[j] += l.qty.raw();
            }
        }
        for j in 0..width {
            per[j].push(Contribution {
                venue: *venue,
                bid_qty: Qty(bid[j]),
                ask_qty: Qty(ask[j]),
            });
        }
    }
    let buckets = per
        .into_iter()
        .enumerate()
        .map(|(j, contributions)| {
            let b: i64 = contributions.iter().map(|c| c.bid_qty.raw()).sum();
            let a: i64 = contributions.iter().map(|c| c.ask_qty.raw()).sum();
            AggBucket {
                offset: j as i32 - half_buckets as i32,
                price: Price(lo + j as i64 * size),
                bid_qty: Qty(b),
                ask_qty: Qty(a),
                imbalance: if a + b == 0 {
                    0.0
                } else {
                    (b - a) as f64 / (a + b) as f64
                },
                contributions,
            }
        })
        .collect();
    Ok(AggregatedCob {
        instrument: instrument.to_string(),
        mid: Price(mid),
        center: Price(center),
        bucket_size,
        buckets,
        quotes,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book(bids: &[(i64, i64)], asks: &[(i64, i64)]) -> OrderBook {
        let lv = |v: &[(i64, i64)]| {
            v.iter()
                .map(|&(p, q)| Level {
                    price: Price::from_units(p),
                    qty: Qty::from_units(q),
                })
                .collect::<Vec<_>>()
        };
        let mut b = OrderBook::new();
        b.apply_snapshot(&lv(bids), &lv(asks), 1);
        b
    }

    #[test]
    fn sums_exchanges_per_bucket_and_keeps_contributions() {
        let kraken = book(&[(99, 2), (95, 1)], &[(101, 3)]);
        let coinbase = book(&[(99, 5)], &[(101, 1), (130, 9)]);
        let crossed = book(&[(105, 1)], &[(100, 1)]);
        let empty = OrderBook::new();
        let agg = aggregate_cob(
            "BTC/USD",
            &[
                (Venue::Kraken, &kraken),
                (Venue::Coinbase, &coinbase),
                (Venue::Bybit, &crossed),
                (Venue::Htx, &empty),
            ],
            Price::from_units(1),
            20,
        )
        .unwrap();
        assert_eq!(agg.buckets.len(), 41);
        assert_eq!(agg.mid, Price::from_units(100));
        assert_eq!(
            agg.skipped,
            [
                (Venue::Bybit, Skipped::Crossed),
                (Venue::Htx, Skipped::NoQuote)
            ]
        );
        let at = |p: i64| {
            agg.buckets
                .iter()
                .find(|b| b.price == Price::from_units(p))
                .unwrap()
        };
        assert_eq!(at(99).bid_qty, Qty::from_units(7));
        assert_eq!(
            at(99).contributions[0],
            Contribution {
                venue: Venue::Kraken,
                bid_qty: Qty::from_units(2),
                ask_qty: Qty::ZERO
            }
        );
        assert_eq!(at(101).ask_qty, Qty::from_units(4));
        assert_eq!(at(95).bid_qty, Qty::from_units(1));
        // 130 is outside ±20 buckets of 1 around 100.
        let total_ask: i64 = agg.buckets.iter().map(|b| b.ask_qty.raw()).sum();
        assert_eq!(Qty(total_ask), Qty::from_units(4));
        assert!(aggregate_cob("X", &[(Venue::Htx, &empty)], Price::from_units(1), 20).is_err());
        assert!(matches!(
            aggregate_cob("X", &[(Venue::Kraken, &kraken)], Price::ZERO, 20),
            Err(AggregateError::BucketSize(_))
        ));
    }

    #[test]
    fn depth_shares_split_the_in_range_quantity() {
        let a = book(&[(99, 3)], &[(101, 1)]);
        let b = book(&[(99, 1)], &[(101, 3)]);
        let c = book(&[(99, 4)], &[(101, 8)]);
        let agg = aggregate_cob(
            "X",
            &[
                (Venue::Kraken, &a),
                (Venue::Bybit, &b),
                (Venue::Coinbase, &c),
            ],
            Price::from_units(1),
            3,
        )
        .unwrap();
        assert_eq!(
            agg.depth_shares(),
            [
                (Venue::Kraken, 0.2),
                (Venue::Bybit, 0.2),
                (Venue::Coinbase, 0.6)
            ]
        );
        assert_eq!(Skipped::Stale.label(), "stale");
    }

    #[test]
    fn median_mid_ignores_an_outlier() {
        let a = book(&[(99, 1)], &[(101, 1)]);
        let b = book(&[(100, 1)], &[(102, 1)]);
        let far = book(&[(500, 1)], &[(502, 1)]);
        let agg = aggregate_cob(
            "X",
            &[
                (Venue::Kraken, &a),
                (Venue::Coinbase, &b),
                (Venue::Bybit, &far),
            ],
            Price::from_units(1),
            5,
        )
        .unwrap();
        assert_eq!(agg.mid, Price::from_units(101));
    }

    proptest! {
        #[test]
        fn buckets_are_exact_sums_of_contributions(
            levels in proptest::collection::vec((0usize..3, 1i64..200, 1i64..1000, any::<bool>()), 1..60),
        ) {
            let mut books = [OrderBook::new(), OrderBook::new(), OrderBook::new()];
            for (i, p, q, bid) in levels {
                // Bids below 100, asks above: uncrossed books.
                let (side, price) = if bid { (Side::Buy, 100 - p % 100) } else { (Side::Sell, 100 + p) };
                books[i].apply_level(side, Price::from_units(price), Qty(q));
            }
            let venues = [Venue::Kraken, Venue::Coinbase, Venue::Kucoin];
            let refs: Vec<(Venue, &OrderBook)> = venues.iter().copied().zip(books.iter()).collect();
            if let Ok(agg) = aggregate_cob("X", &refs, Price::from_units(3), 20) {
                for b in &agg.buckets {
                    let bid: i64 = b.contributions.iter().map(|c| c.bid_qty.raw()).sum();
                    let ask: i64 = b.contributions.iter().map(|c| c.ask_qty.raw()).sum();
                    prop_assert_eq!(b.bid_qty.raw(), bid);
                    prop_assert_eq!(b.ask_qty.raw(), ask);
                }
                // Each included book's in-range volume is accounted for exactly.
                let (lo, hi) = (agg.buckets[0].price, Price(agg.buckets[40].price.raw() + agg.bucket_size.raw()));
                for (k, (v, bk)) in refs.iter().enumerate() {
                    if agg.quotes.iter().any(|q| q.venue == *v) {
                        let want = bk.volume_in_range(Side::Buy, lo, hi).raw();
                        let got: i64 = agg.buckets.iter().map(|b| b.contributions.iter().find(|c| c.venue == *v).unwrap().bid_qty.raw()).sum();
                        prop_assert_eq!(want, got, "venue {}", k);
                    }
                }
            }
        }
    }
}
