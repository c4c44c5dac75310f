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

use super::input::{TimeScale, timeframe_index};

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
    /// A candle's open time is off the grid of the data's interval.
    #[error(
        "candle {index} opens at {open_time_ms} ms, off the grid of the other {interval_ms} ms candles"
    )]
    OffGrid {
        /// Position in the slice.
        index: usize,
        /// Its open time.
        open_time_ms: i64,
        /// The data's interval.
        interval_ms: i64,
    },
    /// The reference candles are neither of the data's interval nor 1 s beside 1s/1m/1h/1d.
    #[error(
        "reference candles of {interval_ms} ms beside data of {data_ms} ms: expected the \
         data's interval, or 1 s candles beside 1s/1m/1h/1d data"
    )]
    ReferenceInterval {
        /// The reference's interval.
        interval_ms: i64,
        /// The data's.
        data_ms: i64,
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
    visit: impl FnMut(&BaseDataInput),
) -> Result<ReplayedSeries, SampleError> {
    check(candles, base)?;
    check(reference, Timeframe::S1)?;
    replay(symbol, candles, base, reference, Timeframe::S1, cfg, visit)
}

/// Candles on the grid of `interval_ms` with phase `phase_ms`, else the first one off it.
fn check_grid(candles: &[Candle], interval_ms: i64, phase_ms: i64) -> Result<(), SampleError> {
    match candles
        .iter()
        .position(|c| (c.open_time_ms - phase_ms).rem_euclid(interval_ms) != 0)
    {
        Some(index) => Err(SampleError::OffGrid {
            index,
            open_time_ms: candles[index].open_time_ms,
            interval_ms,
        }),
        None => Ok(()),
    }
}

/// [`replay_history`] for candles of any regular interval, laid out by `scale` (see
/// [`TimeScale`]), with reference candles of the same interval (`reference_ms` = the data's:
/// they fill the reference series at the data's slot) or 1 s ones (identity scales only).
/// The inputs visited and the series returned are in the replay's time:
/// [`TimeScale::to_real`] maps them back.
pub fn replay_scaled(
    symbol: &str,
    candles: &[Candle],
    scale: &TimeScale,
    reference: &[Candle],
    cfg: &InputConfig,
    visit: impl FnMut(&BaseDataInput),
) -> Result<ReplayedSeries, SampleError> {
    if scale.is_identity() && reference.len() < 2 {
        return replay_history(symbol, candles, scale.slot, reference, cfg, visit);
    }
    check_grid(candles, scale.interval_ms, scale.phase_ms)?;
    let to_virtual = |cs: &[Candle]| -> Vec<Candle> {
        cs.iter()
            .map(|c| Candle {
                open_time_ms: scale.to_virtual(c.open_time_ms),
                ..c.clone()
            })
            .collect()
    };
    let main = to_virtual(candles);
    check(&main, scale.slot)?;
    let ref_interval = crate::analysis::analyze::detect_interval(reference);
    if reference.is_empty() {
        replay(symbol, &main, scale.slot, &[], scale.slot, cfg, visit)
    } else if reference.len() >= 2 && ref_interval == scale.interval_ms {
        check_grid(reference, scale.interval_ms, scale.phase_ms)?;
        let r = to_virtual(reference);
        check(&r, scale.slot)?;
        replay(symbol, &main, scale.slot, &r, scale.slot, cfg, visit)
    } else if scale.is_identity() {
        check(reference, Timeframe::S1)?;
        replay(
            symbol,
            &main,
            scale.slot,
            reference,
            Timeframe::S1,
            cfg,
            visit,
        )
    } else {
        Err(SampleError::ReferenceInterval {
            interval_ms: ref_interval,
            data_ms: scale.interval_ms,
        })
    }
}

/// The replay itself, on candles already checked (and mapped to the replay's time).
fn replay(
    symbol: &str,
    candles: &[Candle],
    base: Timeframe,
    reference: &[Candle],
    ref_tf: Timeframe,
    cfg: &InputConfig,
    mut visit: impl FnMut(&BaseDataInput),
) -> Result<ReplayedSeries, SampleError> {
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
            if r.open_time_ms + ref_tf.millis() > t {
                break;
            }
            ref_market.on_history(ref_tf, std::slice::from_ref(r));
            next_ref += 1;
        }
        let input = analysis.build_with_reference(&market, &ref_market, &store, t, ref_tf);
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

    #[test]
    fn five_minute_candles_replay_in_the_minute_slot_with_five_hour_aggregates() {
        let m5 = 300_000;
        // A start on a 5 h boundary, so the first 5 h aggregate is whole.
        let start = 1_700_000_000_000 - 1_700_000_000_000 % (5 * 3_600_000);
        let cs = wave(200, Timeframe::M1, 0)
            .into_iter()
            .enumerate()
            .map(|(i, c)| Candle {
                open_time_ms: start + i as i64 * m5,
                ..c
            })
            .collect::<Vec<_>>();
        let scale = TimeScale::new(m5, start).unwrap();
        let cfg = InputConfig::default();
        let mut seen = 0usize;
        let series = replay_scaled("ETHUSDT", &cs, &scale, &[], &cfg, |input| {
            // The input at the real close of candle k holds candles 0..=k, nothing later.
            let newest = input.ohlcv[1].last().unwrap();
            assert_eq!(
                scale.to_real(input.timestamp_ms),
                cs[seen].open_time_ms + m5
            );
            assert_eq!(scale.to_real(newest.open_time_ms), cs[seen].open_time_ms);
            assert_eq!(newest.close, cs[seen].close);
            assert!(input.ohlcv[0].is_empty() && input.reference_ohlcv_1s.is_empty());
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 200);
        // The 1 h slot holds 5 h candles: 60 five-minute candles each.
        assert_eq!(series[2].len(), 3);
        let h5 = &series[2][1];
        assert_eq!(scale.to_real(h5.open_time_ms), cs[60].open_time_ms);
        assert_eq!(h5.open, cs[60].open);
        assert_eq!(h5.close, cs[119].close);
        assert_eq!(h5.high, cs[60..120].iter().map(|c| c.high).max().unwrap());
        // A reference at the same interval fills the reference series; a 1 s one cannot
        // share a rescaled time axis.
        let reference: Vec<Candle> = cs
            .iter()
            .map(|c| Candle {
                close: Price::from_units(7),
                open: Price::from_units(7),
                high: Price::from_units(8),
                low: Price::from_units(6),
                ..c.clone()
            })
            .collect();
        let mut last_ref = None;
        replay_scaled("ETHUSDT", &cs, &scale, &reference, &cfg, |input| {
            last_ref = input.reference_ohlcv_1s.last().cloned();
        })
        .unwrap();
        assert_eq!(last_ref.unwrap().close, Price::from_units(7));
        let one_s = wave(10, Timeframe::S1, start);
        assert!(matches!(
            replay_scaled("ETHUSDT", &cs, &scale, &one_s, &cfg, |_| {}),
            Err(SampleError::ReferenceInterval {
                interval_ms: 1_000,
                data_ms: 300_000
            })
        ));
        let mut off = cs.clone();
        off[7].open_time_ms += 60_000;
        assert!(matches!(
            replay_scaled("ETHUSDT", &off, &scale, &[], &cfg, |_| {}),
            Err(SampleError::OffGrid { index: 7, .. })
        ));
    }
}
