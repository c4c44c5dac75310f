//! Historical `BaseDataInput`s: replays candle history through the same analysis code the live
//! system uses ([`SymbolMarket`] + [`SymbolAnalysis`]), so a training sample at `t` is built
//! exactly like a live input at `t`, from data known at `t` only.
//!
//! At each base candle's close `t`, the market receives that candle (and, once a coarser
//! interval is complete, the candle aggregated from its finer ones), then the input at `t` is
//! built. Nothing after `t` has reached the market or the analysis state at that point, so the
//! input cannot depend on later candles.
//!
//! What kline history cannot provide is left **absent**, in the layout's documented absent
//! form (zeros with `present = 0`): finer timeframes than the base (no 1 s candles in 1 m
//! history), the reference series unless 1 s reference candles are given, the COB and its
//! summary, the microstructure (no book, no trades), and model outputs. Coarser timeframes are
//! aggregated from the base candles (a coarse interval whose first part precedes the history
//! is left out rather than shown partial).

use crate::analysis::input::{BaseDataInput, InputConfig, SymbolAnalysis};
use crate::analysis::model_output::ModelOutputStore;
use crate::market::state::{SymbolMarket, SymbolMarketConfig};
use crate::market::types::{Candle, Price, Timeframe};

use super::input::timeframe_index;

/// Why a candle history cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// A candle's open time is not on the base timeframe's grid.
    #[error("candle {index} opens at {open_time_ms} ms, not on the {timeframe} grid")]
    Misaligned {
        /// Position in the slice.
        index: usize,
        /// Its open time.
        open_time_ms: i64,
        /// The base timeframe.
        timeframe: Timeframe,
    },
    /// Open times do not strictly increase.
    #[error("candle {index} opens at {open_time_ms} ms, not after the previous candle")]
    NotIncreasing {
        /// Position in the slice.
        index: usize,
        /// Its open time.
        open_time_ms: i64,
    },
    /// Prices are not positive or not ordered (low ≤ open, close ≤ high), or volume < 0.
    #[error("candle {index} at {open_time_ms} ms has inconsistent prices or volume")]
    Inconsistent {
        /// Position in the slice.
        index: usize,
        /// Its open time.
        open_time_ms: i64,
    },
}

fn check(candles: &[Candle], tf: Timeframe) -> Result<(), SampleError> {
    let mut prev = i64::MIN;
    for (index, c) in candles.iter().enumerate() {
        let t = c.open_time_ms;
        if tf.floor(t) != t {
            return Err(SampleError::Misaligned {
                index,
                open_time_ms: t,
                timeframe: tf,
            });
        }
        if t <= prev {
            return Err(SampleError::NotIncreasing {
                index,
                open_time_ms: t,
            });
        }
        prev = t;
        let ok = c.low.raw() > 0
            && c.low <= c.open.min(c.close)
            && c.high >= c.open.max(c.close)
            && c.volume.raw() >= 0;
        if !ok {
            return Err(SampleError::Inconsistent {
                index,
                open_time_ms: t,
            });
        }
    }
    Ok(())
}

/// Coarse candle built from finer ones that all belong to one interval.
#[derive(Debug, Clone, Default)]
struct Pending {
    open_ms: i64,
    candle: Option<Candle>,
    /// The interval's first finer candle opened at the interval start.
    complete_start: bool,
}

/// Candle series produced by a replay, per timeframe (`Timeframe::ALL` order): the base
/// candles and the coarser ones aggregated from them.
pub type ReplayedSeries = [Vec<Candle>; 4];

/// Replays `candles` of timeframe `base` (and optional 1 s `reference` candles of the
/// reference symbol) and calls `visit` with the input built at every base candle's close.
/// Returns every series the market received.
pub fn replay_history(
    symbol: &str,
    candles: &[Candle],
    base: Timeframe,
    reference: &[Candle],
    cfg: &InputConfig,
    mut visit: impl FnMut(&BaseDataInput),
) -> Result<ReplayedSeries, SampleError> {
    check(candles, base)?;
    check(reference, Timeframe::S1)?;
    let market_cfg = SymbolMarketConfig {
        bucket_size: Price::from_units(1),
        large_trade_notional: cfg.large_trade_notional,
        // A few more than one input's frames keeps every window whole and the scans short.
        candles_kept: cfg.frames + 16,
        tick_capacity: 1,
        tick_max_age_ms: 1,
    };
    let mut market = SymbolMarket::new(market_cfg.clone());
    let mut ref_market = SymbolMarket::new(market_cfg);
    let mut analysis = SymbolAnalysis::new(symbol, cfg.clone());
    let store = ModelOutputStore::default();
    let mut series: ReplayedSeries = Default::default();
    let mut pending: [Pending; 4] = Default::default();
    let base_i = timeframe_index(base);
    let mut next_ref = 0;
    for c in candles {
        let t = c.open_time_ms + base.millis();
        market.on_history(base, std::slice::from_ref(c));
        series[base_i].push(c.clone());
        // Fold the finished candle into every coarser timeframe, finest first, so a closed
        // hour goes into its day before the day is checked.
        let mut finished = Some(c.clone());
        for (i, tf) in Timeframe::ALL.into_iter().enumerate().skip(base_i + 1) {
            let Some(fine) = finished.take() else { break };
            let p = &mut pending[i];
            let open = tf.floor(fine.open_time_ms);
            if p.candle.is_none() || p.open_ms != open {
                *p = Pending {
                    open_ms: open,
                    candle: None,
                    complete_start: fine.open_time_ms == open,
                };
            }
            merge(&mut p.candle, &fine, open);
            if t == open + tf.millis() {
                let done = std::mem::take(p);
                if done.complete_start
                    && let Some(agg) = done.candle
                {
                    market.on_history(tf, std::slice::from_ref(&agg));
                    series[i].push(agg.clone());
                    finished = Some(agg);
                }
            }
        }
        while let Some(r) = reference.get(next_ref) {
            if r.open_time_ms + Timeframe::S1.millis() > t {
                break;
            }
            ref_market.on_history(Timeframe::S1, std::slice::from_ref(r));
            next_ref += 1;
        }
        let input = analysis.build(&market, &ref_market, &store, t);
        visit(&input);
    }
    Ok(series)
}

/// Adds a finer candle to the coarse candle opening at `open`.
fn merge(acc: &mut Option<Candle>, fine: &Candle, open: i64) {
    match acc {
        None => {
            *acc = Some(Candle {
                open_time_ms: open,
                ..fine.clone()
            })
        }
        Some(a) => {
            a.high = a.high.max(fine.high);
            a.low = a.low.min(fine.low);
            a.close = fine.close;
            a.volume += fine.volume;
            a.trades += fine.trades;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::market::types::Qty;

    /// `n` candles of `tf` from `start_ms`, a wave with some noise.
    pub(crate) fn wave(n: usize, tf: Timeframe, start_ms: i64) -> Vec<Candle> {
        let mut prev = 100.0f64;
        (0..n)
            .map(|i| {
                let close = 100.0
                    * (0.02 * (i as f64 / 7.0).sin() + 0.001 * ((i * 7919) % 13) as f64 / 13.0)
                        .exp();
                let p = Price::from_f64_round;
                let c = Candle {
                    open_time_ms: start_ms + i as i64 * tf.millis(),
                    open: p(prev),
                    high: p(prev.max(close) * 1.0005),
                    low: p(prev.min(close) * 0.9995),
                    close: p(close),
                    volume: Qty::from_f64_round(1.0 + (i % 5) as f64),
                    trades: 3,
                };
                prev = close;
                c
            })
            .collect()
    }

    #[test]
    fn inputs_hold_only_candles_closed_by_t_and_coarse_series_are_aggregated() {
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;
        let cs = wave(300, Timeframe::M1, start);
        let cfg = InputConfig::default();
        let mut seen = 0;
        let series = replay_history("ETHUSDT", &cs, Timeframe::M1, &[], &cfg, |input| {
            seen += 1;
            let m1 = &input.ohlcv[1];
            assert_eq!(m1.len(), seen.min(cfg.frames));
            assert_eq!(m1.last().unwrap().open_time_ms + 60_000, input.timestamp_ms);
            assert!(input.ohlcv[0].is_empty() && input.reference_ohlcv_1s.is_empty());
            assert!(input.cob.is_none() && input.last_predictions.is_empty());
            assert_eq!(input.ohlcv[2].len(), seen / 60);
        })
        .unwrap();
        assert_eq!(seen, 300);
        assert_eq!(series[1].len(), 300);
        assert_eq!(series[2].len(), 5);
        let h = &series[2][0];
        assert_eq!(h.open_time_ms, start);
        assert_eq!(h.open, cs[0].open);
        assert_eq!(h.close, cs[59].close);
        assert_eq!(h.high, cs[..60].iter().map(|c| c.high).max().unwrap());
    }

    #[test]
    fn a_partial_first_interval_is_left_out() {
        let start = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 30 * 60_000;
        let cs = wave(100, Timeframe::M1, start);
        let series = replay_history(
            "ETHUSDT",
            &cs,
            Timeframe::M1,
            &[],
            &InputConfig::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(series[2].len(), 1);
        assert_eq!(series[2][0].open_time_ms, start + 30 * 60_000);
    }

    #[test]
    fn bad_history_is_a_typed_error() {
        let mut cs = wave(10, Timeframe::M1, 0);
        cs[4].open_time_ms += 1;
        let cfg = InputConfig::default();
        assert!(matches!(
            replay_history("ETHUSDT", &cs, Timeframe::M1, &[], &cfg, |_| {}),
            Err(SampleError::Misaligned { index: 4, .. })
        ));
        let mut cs = wave(10, Timeframe::M1, 0);
        cs[5].open_time_ms = cs[4].open_time_ms;
        assert!(matches!(
            replay_history("ETHUSDT", &cs, Timeframe::M1, &[], &cfg, |_| {}),
            Err(SampleError::NotIncreasing { index: 5, .. })
        ));
        let mut cs = wave(10, Timeframe::M1, 0);
        cs[2].low = Price::ZERO;
        assert!(matches!(
            replay_history("ETHUSDT", &cs, Timeframe::M1, &[], &cfg, |_| {}),
            Err(SampleError::Inconsistent { index: 2, .. })
        ));
    }
}
