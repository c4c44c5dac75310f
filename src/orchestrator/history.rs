//! Builds [`BaseDataInput`]s from historical candles, one candle at a time, through the same
//! market state and analysis code as live (backtests, tests). Pure logic.
//!
//! Candles of the file's interval feed every timeframe whose length is a multiple of it: the
//! timeframe equal to the interval directly, coarser ones as running aggregates (only their
//! closed candles ever reach an input). Kline history has no order book, so inputs built here
//! have no COB and an empty microstructure flow; that is the input's documented "absent" form.

use crate::analysis::input::{BaseDataInput, InputConfig, SymbolAnalysis};
use crate::analysis::model_output::ModelOutputStore;
use crate::market::state::{SymbolMarket, SymbolMarketConfig};
use crate::market::types::{Candle, Price, Symbol, Timeframe};

/// Why a candle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The candle does not start after the previous one.
    #[error("candle at {got} ms does not start after the previous candle at {prev} ms")]
    NotIncreasing {
        /// Previous open time.
        prev: i64,
        /// This open time.
        got: i64,
    },
    /// The candle is not on the interval grid.
    #[error("candle at {open_time_ms} ms is not aligned to the {interval_ms} ms interval")]
    Misaligned {
        /// Its open time.
        open_time_ms: i64,
        /// The feed's interval.
        interval_ms: i64,
    },
    /// High/low do not contain open/close, or a price is not positive.
    #[error("candle at {open_time_ms} ms has inconsistent prices")]
    BadPrices {
        /// Its open time.
        open_time_ms: i64,
    },
    /// No kept timeframe is a multiple of the interval.
    #[error("interval {0} ms fits no timeframe (1s, 1m, 1h, 1d multiples)")]
    Interval(i64),
}

/// One symbol's historical market, fed candle by candle.
#[derive(Debug)]
pub struct HistoryFeed {
    interval_ms: i64,
    market: SymbolMarket,
    analysis: SymbolAnalysis,
    /// Running aggregate per timeframe (`Timeframe::ALL` order) fed from the candles.
    partial: [Option<Candle>; 4],
    fed: [bool; 4],
    last_open_ms: Option<i64>,
}

impl HistoryFeed {
    /// A feed of `interval_ms` candles of `symbol` (its own reference symbol).
    pub fn new(
        symbol: impl Into<Symbol>,
        interval_ms: i64,
        mut cfg: InputConfig,
    ) -> Result<Self, HistoryError> {
        let symbol = symbol.into();
        let fed = Timeframe::ALL.map(|tf| {
            interval_ms > 0 && tf.millis() >= interval_ms && tf.millis() % interval_ms == 0
        });
        if !fed.iter().any(|f| *f) {
            return Err(HistoryError::Interval(interval_ms));
        }
        cfg.reference_symbol = symbol.clone();
        let market = SymbolMarket::new(SymbolMarketConfig {
            bucket_size: Price::from_units(1),
            large_trade_notional: cfg.large_trade_notional,
            candles_kept: cfg.frames + 64,
            tick_capacity: 16,
            tick_max_age_ms: 60_000,
        });
        Ok(Self {
            interval_ms,
            market,
            analysis: SymbolAnalysis::new(symbol, cfg),
            partial: [None, None, None, None],
            fed,
            last_open_ms: None,
        })
    }

    /// The candle interval, ms.
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// The market state (candles of every fed timeframe).
    pub fn market(&self) -> &SymbolMarket {
        &self.market
    }

    /// Feeds one candle; returns its close time (the time an input may next be built at).
    pub fn push(&mut self, c: &Candle) -> Result<i64, HistoryError> {
        if let Some(prev) = self.last_open_ms
            && c.open_time_ms <= prev
        {
            return Err(HistoryError::NotIncreasing {
                prev,
                got: c.open_time_ms,
            });
        }
        if c.open_time_ms.rem_euclid(self.interval_ms) != 0 {
            return Err(HistoryError::Misaligned {
                open_time_ms: c.open_time_ms,
                interval_ms: self.interval_ms,
            });
        }
        let ok = c.low.raw() > 0 && c.low <= c.open.min(c.close) && c.high >= c.open.max(c.close);
        if !ok || c.volume.raw() < 0 {
            return Err(HistoryError::BadPrices {
                open_time_ms: c.open_time_ms,
            });
        }
        self.last_open_ms = Some(c.open_time_ms);
        for (i, tf) in Timeframe::ALL.into_iter().enumerate() {
            if !self.fed[i] {
                continue;
            }
            let start = tf.floor(c.open_time_ms);
            let agg = match self.partial[i].take() {
                Some(mut p) if p.open_time_ms == start => {
                    p.high = p.high.max(c.high);
                    p.low = p.low.min(c.low);
                    p.close = c.close;
                    p.volume += c.volume;
                    p.trades += c.trades;
                    p
                }
                _ => Candle {
                    open_time_ms: start,
                    ..c.clone()
                },
            };
            self.market.on_history(tf, std::slice::from_ref(&agg));
            self.partial[i] = Some(agg);
        }
        Ok(c.open_time_ms + self.interval_ms)
    }

    /// The input at `t_ms` (normally the last pushed candle's close time), with the model
    /// outputs known at `t_ms`.
    pub fn input(&mut self, outputs: &ModelOutputStore, t_ms: i64) -> BaseDataInput {
        self.analysis
            .build(&self.market, &self.market, outputs, t_ms)
    }
}

/// Timeframe of an interval, when it is exactly one.
pub fn timeframe_of(interval_ms: i64) -> Option<Timeframe> {
    Timeframe::ALL
        .into_iter()
        .find(|t| t.millis() == interval_ms)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::market::types::Qty;

    /// `n` 1 m candles from time 0 trending by `step` per candle with a two-up two-down
    /// zig-zag of ±0.3 on top, so every few candles make a pivot.
    pub(crate) fn zigzag(n: usize, step: f64) -> Vec<Candle> {
        let close = |i: usize| 2_000.0 + step * i as f64 + if i % 4 < 2 { 0.3 } else { -0.3 };
        (0..n)
            .map(|i| {
                let prev = if i == 0 { 2_000.0 } else { close(i - 1) };
                let (o, c) = (Price::from_f64_round(prev), Price::from_f64_round(close(i)));
                Candle {
                    open_time_ms: i as i64 * 60_000,
                    open: o,
                    high: o.max(c) + Price::from_units(1),
                    low: o.min(c) - Price::from_units(1),
                    close: c,
                    volume: Qty::from_units(3),
                    trades: 5,
                }
            })
            .collect()
    }

    /// `n` candles of `interval_ms` from `start_ms`: a sine wave on a slow drift (deterministic).
    pub(crate) fn wave(n: usize, start_ms: i64, interval_ms: i64) -> Vec<Candle> {
        (0..n)
            .map(|i| {
                let x = i as f64;
                let mid = 2_000.0 + 0.05 * x + 15.0 * (x / 40.0).sin() + 3.0 * (x / 7.0).cos();
                let prev = if i == 0 {
                    mid
                } else {
                    let y = x - 1.0;
                    2_000.0 + 0.05 * y + 15.0 * (y / 40.0).sin() + 3.0 * (y / 7.0).cos()
                };
                let (o, c) = (Price::from_f64_round(prev), Price::from_f64_round(mid));
                Candle {
                    open_time_ms: start_ms + i as i64 * interval_ms,
                    open: o,
                    high: o.max(c) + Price::from_f64_round(0.5),
                    low: o.min(c) - Price::from_f64_round(0.5),
                    close: c,
                    volume: Qty::from_units(1 + (i % 5) as i64),
                    trades: 10,
                }
            })
            .collect()
    }

    #[test]
    fn coarser_timeframes_are_aggregated_and_only_closed_ones_reach_inputs() {
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        let candles = wave(400, start, 1_000);
        let mut feed = HistoryFeed::new("ETHUSDT", 1_000, InputConfig::default()).unwrap();
        let mut t = 0;
        for c in &candles {
            t = feed.push(c).unwrap();
        }
        let input = feed.input(&ModelOutputStore::default(), t);
        assert_eq!(input.ohlcv[0].len(), 300);
        assert_eq!(input.ohlcv[0].last().unwrap(), candles.last().unwrap());
        // 400 s: 6 closed minutes (the 7th is still open at t).
        assert_eq!(input.ohlcv[1].len(), 6);
        let m0 = &input.ohlcv[1][0];
        assert_eq!(m0.open, candles[0].open);
        assert_eq!(m0.close, candles[59].close);
        assert_eq!(m0.high, candles[..60].iter().map(|c| c.high).max().unwrap());
        assert!(input.ohlcv[2].is_empty());
        assert_eq!(input.reference_ohlcv_1s, input.ohlcv[0]);
    }

    #[test]
    fn bad_candles_are_refused_with_reasons() {
        let mut feed = HistoryFeed::new("ETHUSDT", 60_000, InputConfig::default()).unwrap();
        let c = wave(3, 0, 60_000);
        feed.push(&c[1]).unwrap();
        assert_eq!(
            feed.push(&c[0]),
            Err(HistoryError::NotIncreasing {
                prev: 60_000,
                got: 0
            })
        );
        let mut odd = c[2].clone();
        odd.open_time_ms += 1;
        assert!(matches!(
            feed.push(&odd),
            Err(HistoryError::Misaligned { .. })
        ));
        let mut bad = c[2].clone();
        bad.low = bad.high + Price::from_units(1);
        assert!(matches!(
            feed.push(&bad),
            Err(HistoryError::BadPrices { .. })
        ));
        assert!(matches!(
            HistoryFeed::new("X", 7, InputConfig::default()),
            Err(HistoryError::Interval(7))
        ));
    }
}
