//! The live market: a pure, deterministic function of (seed, start time, simulated time).
//!
//! Each simulated second prints exactly the trades of that second's 1s history leaf, so the live
//! stream and the REST history agree. The book is shaped around them: a taker walks the book to
//! the trade price (removing the levels it passes), the level it hits shrinks, makers refill the
//! spread and the depth window behind it, and passive traders add and cancel near the top.

use std::sync::Arc;

use super::book::{BookBatch, SimBook};
use super::history::{History, HistoryError, LeafTrade, SimCandle};
use super::random::{SimRng, key};
use crate::market::types::{Level, Side, Timeframe, Trade};

/// Simulated step length: the `@depth@100ms` cadence.
pub const STEP_MS: i64 = 100;
/// Levels kept per side, in ticks from the best price.
pub const BOOK_WINDOW_TICKS: i64 = 1200;
/// Every tick is quoted this close to the best price; beyond it levels thin out.
pub const DENSE_TICKS: i64 = 300;

const BOOK_KEY: u64 = 0xB00C;
const LEVEL_KEY: u64 = 0x1E7E1;

/// An exact depth diff of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepthDiff {
    /// Symbol index.
    pub sym: usize,
    /// Event time (end of the step), ms.
    pub time_ms: i64,
    /// First update id (`U`).
    pub first_id: u64,
    /// Final update id (`u`).
    pub last_id: u64,
    /// Changed bids, best first; zero quantity removes.
    pub bids: Vec<Level>,
    /// Changed asks, best first.
    pub asks: Vec<Level>,
}

/// Something the market did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketEvent {
    /// An aggregate trade.
    Trade {
        /// Symbol index.
        sym: usize,
        /// The trade.
        trade: Trade,
    },
    /// The book's changes during one 100 ms step.
    Depth(DepthDiff),
    /// Best bid/ask after a step in which it changed.
    BookTicker {
        /// Symbol index.
        sym: usize,
        /// Update id the top reflects.
        update_id: u64,
        /// Best bid.
        bid: Level,
        /// Best ask.
        ask: Level,
    },
    /// A second has closed; its 1s candle (equal to the history's).
    SecondClosed {
        /// Symbol index.
        sym: usize,
        /// The closed 1s candle in integer units.
        candle: SimCandle,
    },
}

#[derive(Debug, Clone)]
struct SymState {
    book: SimBook,
    rng: SimRng,
    last_price: i64,
    leaf: Option<SimCandle>,
    queue: Vec<LeafTrade>,
    next_trade: usize,
    last_top: Option<((i64, i64), (i64, i64))>,
}

/// The live market of all symbols.
#[derive(Debug, Clone)]
pub struct MarketModel {
    history: Arc<History>,
    syms: Vec<SymState>,
    now_ms: i64,
    start_ms: i64,
}

impl MarketModel {
    /// A market starting at `start_ms` (floored to the second) from the last historical close.
    pub fn new(history: Arc<History>, start_ms: i64) -> Result<Self, HistoryError> {
        let start = Timeframe::S1.floor(start_ms);
        let seed = history.seed();
        let mut syms = Vec::new();
        for (i, spec) in history.specs().iter().enumerate() {
            let last = history.candle(i, Timeframe::S1, start - 1000)?;
            let mut s = SymState {
                // Ids grow with wall time, so a restarted simulator never reuses old ids.
                book: SimBook::new(start as u64),
                rng: SimRng::keyed(&[seed, spec.key, BOOK_KEY, start as u64]),
                last_price: last.c,
                leaf: None,
                queue: Vec::new(),
                next_trade: 0,
                last_top: None,
            };
            s.book
                .set(true, last.c - 1, level_qty(&mut s.rng, spec.level_steps, 0));
            s.book.set(
                false,
                last.c + 1,
                level_qty(&mut s.rng, spec.level_steps, 0),
            );
            maintain(&mut s, seed, spec.key, spec.level_steps);
            // The opening book is the snapshot state, not a diff anyone receives.
            s.book.take_batch();
            s.last_top = top(&s.book);
            syms.push(s);
        }
        Ok(Self {
            history,
            syms,
            now_ms: start,
            start_ms: start,
        })
    }

    /// Simulated time: everything before it has happened.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Time the market started.
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// The history the market prints.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Current update id of a symbol's book.
    pub fn update_id(&self, sym: usize) -> u64 {
        self.syms[sym].book.update_id()
    }

    /// The live book of a symbol.
    pub fn book(&self, sym: usize) -> &SimBook {
        &self.syms[sym].book
    }

    /// Last trade price in ticks.
    pub fn last_price(&self, sym: usize) -> i64 {
        self.syms[sym].last_price
    }

    /// Fault injection: the next depth diff starts `n` ids after the previous one ended.
    pub fn skip_update_ids(&mut self, sym: usize, n: u64) {
        if let Some(s) = self.syms.get_mut(sym) {
            s.book.skip_ids(n);
        }
    }

    /// Advances one 100 ms step and returns what happened, in time order per symbol.
    pub fn step(&mut self) -> Result<Vec<MarketEvent>, HistoryError> {
        let t0 = self.now_ms;
        let t1 = t0 + STEP_MS;
        let seed = self.history.seed();
        let mut out = Vec::new();
        for (i, s) in self.syms.iter_mut().enumerate() {
            let spec = &self.history.specs()[i];
            if t0 % 1000 == 0 {
                let (leaf, trades) = self.history.leaf_trades(i, t0)?;
                s.leaf = Some(leaf);
                s.queue = trades;
                s.next_trade = 0;
            }
            while let Some(tr) = s.queue.get(s.next_trade).copied() {
                if tr.time_ms >= t1 {
                    break;
                }
                s.next_trade += 1;
                take(s, &tr, spec.level_steps);
                out.push(MarketEvent::Trade {
                    sym: i,
                    trade: Trade {
                        symbol: spec.symbol.clone(),
                        id: tr.id,
                        time_ms: tr.time_ms,
                        price: spec.price(tr.price),
                        qty: spec.qty(tr.qty),
                        taker_side: if tr.taker_buy { Side::Buy } else { Side::Sell },
                    },
                });
            }
            passive_flow(s, spec.level_steps);
            maintain(s, seed, spec.key, spec.level_steps);
            if let Some(BookBatch {
                first_id,
                last_id,
                bids,
                asks,
            }) = s.book.take_batch()
            {
                let lv = |v: Vec<(i64, i64)>| {
                    v.into_iter()
                        .map(|(p, q)| Level {
                            price: spec.price(p),
                            qty: spec.qty(q),
                        })
                        .collect()
                };
                out.push(MarketEvent::Depth(DepthDiff {
                    sym: i,
                    time_ms: t1,
                    first_id,
                    last_id,
                    bids: lv(bids),
                    asks: lv(asks),
                }));
            }
            let now_top = top(&s.book);
            if now_top != s.last_top {
                s.last_top = now_top;
                if let Some(((bp, bq), (ap, aq))) = now_top {
                    out.push(MarketEvent::BookTicker {
                        sym: i,
                        update_id: s.book.update_id(),
                        bid: Level {
                            price: spec.price(bp),
                            qty: spec.qty(bq),
                        },
                        ask: Level {
                            price: spec.price(ap),
                            qty: spec.qty(aq),
                        },
                    });
                }
            }
            if t1 % 1000 == 0
                && let Some(candle) = s.leaf.take()
            {
                out.push(MarketEvent::SecondClosed { sym: i, candle });
            }
        }
        self.now_ms = t1;
        Ok(out)
    }

    /// Steps until simulated time reaches `t_ms`, collecting the events.
    pub fn advance_to(&mut self, t_ms: i64) -> Result<Vec<MarketEvent>, HistoryError> {
        let mut out = Vec::new();
        while self.now_ms + STEP_MS <= t_ms {
            out.extend(self.step()?);
        }
        Ok(out)
    }
}

fn top(b: &SimBook) -> Option<((i64, i64), (i64, i64))> {
    Some((b.best_bid()?, b.best_ask()?))
}

/// Resting size at `dist` ticks from the best: grows with distance, lognormal noise, rare walls.
fn level_qty(rng: &mut SimRng, base: f64, dist: i64) -> i64 {
    let grow = (1.0 + dist as f64 / 150.0).powf(0.7);
    let noise = (0.6 * rng.normal()).exp();
    let wall = if rng.chance(0.004) {
        10.0 + 20.0 * rng.uniform()
    } else {
        1.0
    };
    ((base * grow * noise * wall).round() as i64).max(1)
}

/// Whether a level beyond the dense zone is quoted: fixed per price so the far book does not churn.
fn far_level_present(seed: u64, sym_key: u64, bid: bool, price: i64) -> bool {
    key(&[seed, sym_key, LEVEL_KEY, bid as u64, price as u64]) % 10 < 4
}

/// A taker trades `tr`: it walks the opposite side up to the trade price, then the hit level shrinks.
fn take(s: &mut SymState, tr: &LeafTrade, base: f64) {
    let p = tr.price;
    let opp_bid = !tr.taker_buy;
    if tr.taker_buy {
        s.book.remove_range(false, ..p);
        s.book.remove_range(true, p..);
    } else {
        s.book.remove_range(true, p + 1..);
        s.book.remove_range(false, ..=p);
    }
    let left = s.book.qty(opp_bid, p) - tr.qty;
    // A fully taken level is sometimes re-posted at once by a maker leaning on the move.
    let refill = if left <= 0 && s.rng.chance(0.3) {
        level_qty(&mut s.rng, base, 0)
    } else {
        left.max(0)
    };
    s.book.set(opp_bid, p, refill);
    s.last_price = p;
}

/// Passive limit adds and cancels near the top.
fn passive_flow(s: &mut SymState, base: f64) {
    let ops = 2 + s.rng.below(5);
    for _ in 0..ops {
        let bid = s.rng.chance(0.5);
        let best = if bid {
            s.book.best_bid()
        } else {
            s.book.best_ask()
        };
        let Some((bp, _)) = best else { continue };
        let dist = (s.rng.exp1() * 6.0) as i64;
        let p = if bid { bp - dist } else { bp + dist };
        let q = s.book.qty(bid, p);
        let new_q = if q > 0 && s.rng.chance(0.35) {
            0
        } else if q > 0 {
            ((q as f64 * (0.4 + 1.2 * s.rng.uniform())) as i64).max(1)
        } else {
            level_qty(&mut s.rng, base, dist)
        };
        s.book.set(bid, p, new_q);
    }
}

/// Makers close a wide spread, keep every tick near the top quoted, thin the far book, and drop
/// levels that fell out of the window.
fn maintain(s: &mut SymState, seed: u64, sym_key: u64, base: f64) {
    let lp = s.last_price;
    let mut bb = s.book.best_bid().map_or(lp - 1, |b| b.0);
    let mut ba = s.book.best_ask().map_or(lp + 1, |a| a.0);
    if bb >= ba {
        // Cannot happen through `take`; kept as a hard guard so the book is never crossed.
        s.book.remove_range(true, ba..);
        bb = s.book.best_bid().map_or(ba - 1, |b| b.0);
    }
    let mut closes = 0;
    while ba - bb > 1 && closes < 3 {
        if s.rng.chance(0.5) {
            bb += 1;
            let q = level_qty(&mut s.rng, base, 0);
            s.book.set(true, bb, q);
        } else {
            ba -= 1;
            let q = level_qty(&mut s.rng, base, 0);
            s.book.set(false, ba, q);
        }
        closes += 1;
    }
    if s.book.best_bid().is_none() {
        let q = level_qty(&mut s.rng, base, 0);
        s.book.set(true, bb, q);
    }
    if s.book.best_ask().is_none() {
        let q = level_qty(&mut s.rng, base, 0);
        s.book.set(false, ba, q);
    }
    for bid in [true, false] {
        let best = if bid { bb } else { ba };
        for d in 1..=BOOK_WINDOW_TICKS {
            let p = if bid { best - d } else { best + d };
            if p <= 0 {
                break;
            }
            if s.book.qty(bid, p) > 0 {
                continue;
            }
            if d <= DENSE_TICKS || far_level_present(seed, sym_key, bid, p) {
                let q = level_qty(&mut s.rng, base, d);
                s.book.set(bid, p, q);
            }
        }
        if bid {
            s.book.remove_range(true, ..best - BOOK_WINDOW_TICKS);
        } else {
            s.book.remove_range(false, best + BOOK_WINDOW_TICKS + 1..);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::SimConfig;

    const T: i64 = 1_764_000_000_000;

    fn model(seed: u64) -> MarketModel {
        let cfg = SimConfig::default();
        let h = Arc::new(History::new(seed, cfg.correlation, cfg.specs().unwrap()));
        MarketModel::new(h, T).unwrap()
    }

    #[test]
    fn same_seed_same_stream_different_seed_different() {
        let a = model(11).advance_to(T + 5_000).unwrap();
        let b = model(11).advance_to(T + 5_000).unwrap();
        let c = model(12).advance_to(T + 5_000).unwrap();
        assert!(a.len() > 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn book_is_never_crossed_and_has_a_deep_profile() {
        let mut m = model(13);
        for _ in 0..100 {
            m.step().unwrap();
            for sym in 0..2 {
                assert!(!m.book(sym).is_crossed());
            }
        }
        for sym in 0..2 {
            let b = m.book(sym);
            assert!(b.depth(true) > DENSE_TICKS as usize && b.depth(false) > DENSE_TICKS as usize);
            let top = b.top(true, 1000);
            let near: f64 = top[..50].iter().map(|l| l.1 as f64).sum::<f64>() / 50.0;
            let far: f64 = top[top.len() - 50..]
                .iter()
                .map(|l| l.1 as f64)
                .sum::<f64>()
                / 50.0;
            assert!(
                far > near,
                "size grows with distance: near {near} far {far}"
            );
        }
    }

    #[test]
    fn depth_ids_are_consecutive_and_trades_match_history() {
        let mut m = model(14);
        let events = m.advance_to(T + 3_000).unwrap();
        let mut last_u = [None::<u64>; 2];
        let mut vol = [0i64; 2];
        for e in &events {
            match e {
                MarketEvent::Depth(d) => {
                    if let Some(u) = last_u[d.sym] {
                        assert_eq!(d.first_id, u + 1);
                    }
                    assert!(d.last_id >= d.first_id);
                    last_u[d.sym] = Some(d.last_id);
                }
                MarketEvent::Trade { sym, trade } => vol[*sym] += trade.qty.raw(),
                _ => {}
            }
        }
        let h = m.history().clone();
        for (sym, traded) in vol.iter().enumerate() {
            let secs = h.range(sym, Timeframe::S1, T, T + 3_000).unwrap();
            let v: i64 = secs.iter().map(|c| c.v).sum();
            assert_eq!(*traded, h.specs()[sym].qty(v).raw());
        }
        let first_trade = events.iter().find_map(|e| match e {
            MarketEvent::Trade { sym: 0, trade } => Some(trade.price),
            _ => None,
        });
        let last_close = h.candle(0, Timeframe::S1, T - 1000).unwrap().c;
        assert_eq!(first_trade, Some(h.specs()[0].price(last_close)));
    }
}
