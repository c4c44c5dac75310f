//! Per-symbol market state fed by normalized trades, history and the synced book: candles of
//! every timeframe, the raw tick buffer and the once-a-second COB. Pure logic.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::book::OrderBook;
use super::candles::{CandleError, CandleSet, MergeStats, aggregate};
use super::cob::{CobConfig, CobEngine, CobError, CobSnapshot};
use super::ticks::TickBuffer;
use super::types::{Candle, Price, Qty, SCALE, Side, Timeframe, Trade};

/// Sizing of one symbol's state.
#[derive(Debug, Clone)]
pub struct SymbolMarketConfig {
    /// COB bucket width.
    pub bucket_size: Price,
    /// A trade of at least this notional (quote units) is large.
    pub large_trade_notional: Price,
    /// Candles kept per timeframe.
    pub candles_kept: usize,
    /// Tick buffer capacity.
    pub tick_capacity: usize,
    /// Tick buffer age bound, ms.
    pub tick_max_age_ms: i64,
}

/// Candles, ticks and COB of one symbol.
#[derive(Debug)]
pub struct SymbolMarket {
    cfg: SymbolMarketConfig,
    candles: CandleSet,
    ticks: TickBuffer,
    cob: Option<CobEngine>,
    last_cob: Option<Arc<CobSnapshot>>,
    pending_flow: Vec<(Qty, Side)>,
    last_trade: Option<Trade>,
    trades: u64,
    rejected_trades: u64,
    duplicate_trades: u64,
    /// Recently applied (feed, trade id): the same trade can arrive live and again from a
    /// REST recovery after a reconnect, and must count once. Ids are unique per exchange
    /// only, so the feed is part of the key.
    seen_ids: HashSet<(u8, u64)>,
    seen_order: VecDeque<(u8, u64)>,
    /// Per coarse timeframe (1h, 1d): the first interval still rebuilt from the finer one.
    derive_from: [Option<i64>; 2],
}

/// Coarse timeframes rebuilt from finer ones: the interval in progress when trades started
/// holds only the trades seen since, but its finer candles come complete from history.
const DERIVED: [(Timeframe, Timeframe); 2] = [
    (Timeframe::H1, Timeframe::M1),
    (Timeframe::D1, Timeframe::H1),
];
/// An interval is final this long after it closed (late and recovered trades have landed).
const DERIVE_SETTLE_MS: i64 = 120_000;

impl SymbolMarket {
    /// Empty state.
    pub fn new(cfg: SymbolMarketConfig) -> Self {
        Self {
            candles: CandleSet::new(cfg.candles_kept),
            ticks: TickBuffer::new(cfg.tick_capacity, cfg.tick_max_age_ms),
            cfg,
            cob: None,
            last_cob: None,
            pending_flow: Vec::new(),
            last_trade: None,
            trades: 0,
            rejected_trades: 0,
            duplicate_trades: 0,
            seen_ids: HashSet::new(),
            seen_order: VecDeque::new(),
            derive_from: [None; 2],
        }
    }

    /// One trade from the feed: candles of every timeframe, ticks, order flow. A trade id
    /// already applied (within the tick buffer's capacity) is counted and ignored.
    pub fn on_trade(&mut self, trade: &Trade) -> Result<(), CandleError> {
        self.on_feed_trade(0, trade)
    }

    /// [`Self::on_trade`] for a symbol fed by several exchanges in turn (a market-data
    /// fallback): `feed` names the exchange, so equal ids from two exchanges are two trades.
    pub fn on_feed_trade(&mut self, feed: u8, trade: &Trade) -> Result<(), CandleError> {
        let key = (feed, trade.id);
        if self.seen_ids.contains(&key) {
            self.duplicate_trades += 1;
            return Ok(());
        }
        if let Err(e) = self.candles.push_trade(trade) {
            self.rejected_trades += 1;
            return Err(e);
        }
        for (slot, (tf, _)) in self.derive_from.iter_mut().zip(DERIVED) {
            slot.get_or_insert(tf.floor(trade.time_ms));
        }
        self.seen_ids.insert(key);
        self.seen_order.push_back(key);
        if self.seen_order.len() > self.cfg.tick_capacity.max(1)
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen_ids.remove(&old);
        }
        self.ticks.push_trade(trade);
        self.pending_flow.push((trade.qty, trade.taker_side));
        self.trades += 1;
        if self
            .last_trade
            .as_ref()
            .is_none_or(|t| (t.time_ms, t.id) <= (trade.time_ms, trade.id))
        {
            self.last_trade = Some(trade.clone());
        }
        Ok(())
    }

    /// Exchange klines of one timeframe (REST backfill), merged without duplicates or holes.
    pub fn on_history(&mut self, timeframe: Timeframe, klines: &[Candle]) -> MergeStats {
        self.candles.merge_history(timeframe, klines)
    }

    /// The once-a-second step: COB from the synced book (when there is one), filled candles up
    /// to `now_ms`, old ticks evicted.
    pub fn on_second(&mut self, book: Option<&OrderBook>, now_ms: i64) -> Result<(), CobError> {
        self.candles.fill_to(now_ms);
        self.derive_coarse(now_ms);
        self.ticks.evict_before(now_ms - self.cfg.tick_max_age_ms);
        let Some(book) = book else {
            return Err(CobError::NoQuote);
        };
        if self.cob.is_none() {
            let mid = book.mid().ok_or(CobError::NoQuote)?;
            // The large-trade threshold is configured as notional so one setting fits every
            // symbol; it becomes a quantity at the first known price.
            let qty = (self.cfg.large_trade_notional.raw() as i128 * SCALE as i128)
                .checked_div(mid.raw() as i128)
                .unwrap_or(0);
            let cfg = CobConfig {
                large_trade_qty: Qty(qty.clamp(1, i64::MAX as i128) as i64),
                ..CobConfig::default()
            };
            self.cob = Some(CobEngine::new(self.cfg.bucket_size, cfg)?);
        }
        let engine = self.cob.as_mut().ok_or(CobError::NoQuote)?;
        let flow = std::mem::take(&mut self.pending_flow);
        let snap = engine.compute_flow(book, flow, now_ms)?;
        self.last_cob = Some(Arc::new(snap));
        Ok(())
    }

    fn derive_coarse(&mut self, now_ms: i64) {
        for (k, (tf, finer)) in DERIVED.into_iter().enumerate() {
            let Some(mut from) = self.derive_from[k] else {
                continue;
            };
            let step = tf.millis();
            let mut start = from;
            while start <= tf.floor(now_ms) {
                let series = self.candles.series(finer);
                // Only when the finer series reaches back to the interval's start (history
                // backfilled), otherwise the derived candle would be partial too.
                let covered = series
                    .candles()
                    .next()
                    .is_some_and(|c| c.open_time_ms <= start);
                let derived = aggregate(
                    start,
                    series
                        .candles()
                        .filter(|c| c.open_time_ms >= start && c.open_time_ms < start + step),
                );
                if let (true, Some(c)) = (covered, derived) {
                    self.candles.set_derived(tf, c, now_ms);
                }
                start += step;
            }
            while from + step + DERIVE_SETTLE_MS < now_ms {
                from += step;
            }
            self.derive_from[k] = Some(from);
        }
    }

    /// Candles of all timeframes.
    pub fn candles(&self) -> &CandleSet {
        &self.candles
    }

    /// Raw trades of the last 30 minutes.
    pub fn ticks(&self) -> &TickBuffer {
        &self.ticks
    }

    /// The COB engine (heatmap), once a price is known.
    pub fn cob_engine(&self) -> Option<&CobEngine> {
        self.cob.as_ref()
    }

    /// The latest COB computation.
    pub fn last_cob(&self) -> Option<&Arc<CobSnapshot>> {
        self.last_cob.as_ref()
    }

    /// The newest trade by (time, id).
    pub fn last_trade(&self) -> Option<&Trade> {
        self.last_trade.as_ref()
    }

    /// Trades accepted.
    pub fn trades(&self) -> u64 {
        self.trades
    }

    /// Trades ignored because their id was already applied.
    pub fn duplicate_trades(&self) -> u64 {
        self.duplicate_trades
    }

    /// Trades rejected as malformed.
    pub fn rejected_trades(&self) -> u64 {
        self.rejected_trades
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::Level;

    fn cfg() -> SymbolMarketConfig {
        SymbolMarketConfig {
            bucket_size: Price::from_units(1),
            large_trade_notional: Price::from_units(30_000),
            candles_kept: 1500,
            tick_capacity: 1000,
            tick_max_age_ms: 1_800_000,
        }
    }

    fn trade(id: u64, t: i64, p: i64, side: Side) -> Trade {
        Trade {
            symbol: "ETHUSDT".into(),
            id,
            time_ms: t,
            price: Price::from_units(p),
            qty: Qty::from_units(2),
            taker_side: side,
        }
    }

    #[test]
    fn trade_ids_count_once_per_feed() {
        let mut m = SymbolMarket::new(cfg());
        m.on_trade(&trade(2, 1_500, 3001, Side::Sell)).unwrap();
        // The same id from another exchange (a fallback feed) is another trade.
        m.on_feed_trade(1, &trade(2, 1_600, 3001, Side::Sell))
            .unwrap();
        m.on_feed_trade(1, &trade(2, 1_600, 3001, Side::Sell))
            .unwrap();
        m.on_trade(&trade(2, 1_500, 3001, Side::Sell)).unwrap();
        assert_eq!((m.trades(), m.duplicate_trades()), (2, 2));
        let s1 = m.candles().series(Timeframe::S1).candles().next().unwrap();
        assert_eq!((s1.trades, s1.volume), (2, Qty::from_units(4)));
    }

    #[test]
    fn trades_feed_candles_ticks_and_flow() {
        let mut m = SymbolMarket::new(cfg());
        m.on_trade(&trade(1, 1_000, 3000, Side::Buy)).unwrap();
        m.on_trade(&trade(2, 1_500, 3001, Side::Sell)).unwrap();
        m.on_trade(&trade(3, 61_000, 3002, Side::Buy)).unwrap();
        // The same trade again (live, then recovered over REST) counts once.
        m.on_trade(&trade(2, 1_500, 3001, Side::Sell)).unwrap();
        assert_eq!(m.duplicate_trades(), 1);
        assert_eq!(m.trades(), 3);
        assert_eq!(m.ticks().len(), 3);
        let m1: Vec<_> = m
            .candles()
            .series(Timeframe::M1)
            .candles()
            .cloned()
            .collect();
        assert_eq!(m1.len(), 2);
        assert_eq!(m1[0].close, Price::from_units(3001));
        assert_eq!(m.last_trade().unwrap().id, 3);

        let mut book = OrderBook::new();
        book.apply_snapshot(
            &[Level {
                price: Price::from_units(2999),
                qty: Qty::from_units(5),
            }],
            &[Level {
                price: Price::from_units(3003),
                qty: Qty::from_units(1),
            }],
            1,
        );
        m.on_second(Some(&book), 62_000).unwrap();
        let cob = m.last_cob().unwrap();
        assert_eq!(cob.order_flow.trades, 3);
        assert_eq!(cob.order_flow.buy_qty, Qty::from_units(4));
        // 30,000 notional at a 3,001 mid is 9.99… units: none of the 2-unit trades is large.
        assert_eq!(cob.order_flow.large_trades, 0);
        m.on_second(Some(&book), 63_000).unwrap();
        assert_eq!(m.last_cob().unwrap().order_flow.trades, 0);
        assert_eq!(m.cob_engine().unwrap().heatmap().len(), 2);
    }

    #[test]
    fn hour_in_progress_at_start_is_rebuilt_from_minutes() {
        let mut m = SymbolMarket::new(cfg());
        let hour = 3_600_000 * 100;
        // History: the first 30 minutes of the hour, 1 unit each, prices 3000..3029.
        let minutes: Vec<Candle> = (0..30)
            .map(|i| Candle {
                open_time_ms: hour + i * 60_000,
                open: Price::from_units(3000 + i),
                high: Price::from_units(3000 + i),
                low: Price::from_units(3000 + i),
                close: Price::from_units(3000 + i),
                volume: Qty::from_units(1),
                trades: 1,
            })
            .collect();
        m.on_history(Timeframe::M1, &minutes);
        // The feed starts mid-hour: live trades alone would make a partial hour candle.
        m.on_trade(&trade(1, hour + 30 * 60_000 + 5, 2990, Side::Sell))
            .unwrap();
        let h = m
            .candles()
            .series(Timeframe::H1)
            .candles()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            h.volume,
            Qty::from_units(2),
            "live trade alone before derivation"
        );
        m.on_second(None, hour + 30 * 60_000 + 1_000).unwrap_err();
        let h = m
            .candles()
            .series(Timeframe::H1)
            .candles()
            .last()
            .unwrap()
            .clone();
        assert_eq!(h.open, Price::from_units(3000));
        assert_eq!(h.high, Price::from_units(3029));
        assert_eq!(h.low, Price::from_units(2990));
        assert_eq!(h.close, Price::from_units(2990));
        assert_eq!(h.volume, Qty::from_units(32));
        assert_eq!(h.trades, 31);
        // Later trades keep updating the derived candle exactly.
        m.on_trade(&trade(2, hour + 31 * 60_000, 3040, Side::Buy))
            .unwrap();
        let h = m
            .candles()
            .series(Timeframe::H1)
            .candles()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            (h.high, h.close, h.volume),
            (
                Price::from_units(3040),
                Price::from_units(3040),
                Qty::from_units(34)
            )
        );
    }

    #[test]
    fn no_book_means_no_cob_but_candles_advance() {
        let mut m = SymbolMarket::new(cfg());
        m.on_trade(&trade(1, 1_000, 3000, Side::Buy)).unwrap();
        assert!(m.on_second(None, 5_500).is_err());
        assert!(m.last_cob().is_none());
        let s1 = m.candles().series(Timeframe::S1);
        assert_eq!(s1.candles().last().unwrap().open_time_ms, 5_000);
    }
}
