//! Williams pivots: incremental engine equals the batch computation, and causality holds.

use mmtrader::analysis::pivots::{
    LEVELS, PivotConfig, PivotKind, PivotPoint, WilliamsEngine, batch_pivots,
};
use mmtrader::market::types::{Candle, Price, Qty};
use proptest::prelude::*;

fn build(raw: &[(i64, i64, i64)]) -> Vec<Candle> {
    let mut t = 0;
    raw.iter()
        .map(|&(gap, high, range)| {
            // gap 0 produces a repeated time stamp, which both paths must skip alike.
            t += gap;
            Candle {
                open_time_ms: t * 1_000,
                open: Price::from_units(high),
                high: Price::from_units(high),
                low: Price::from_units(high - range),
                close: Price::from_units(high),
                volume: Qty::from_units(1),
                trades: 1,
            }
        })
        .collect()
}

fn run_engine(candles: &[Candle], cfg: PivotConfig) -> (WilliamsEngine, Vec<PivotPoint>) {
    let mut e = WilliamsEngine::new(cfg);
    let mut fresh = Vec::new();
    for c in candles {
        if let Ok(new) = e.update(c) {
            for p in new {
                // Known no earlier than the pivot candle's close, and announced as it happens.
                assert!(p.known_ms >= p.time_ms + cfg.interval_ms);
                assert_eq!(p.known_ms, c.open_time_ms + cfg.interval_ms);
            }
            fresh.extend_from_slice(new);
        }
    }
    (e, fresh)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn incremental_equals_batch(
        raw in prop::collection::vec((0i64..3, 0i64..12, 0i64..4), 0..400),
        k in 1usize..4,
    ) {
        let candles = build(&raw);
        let cfg = PivotConfig { bars_per_side: k, interval_ms: 1_000,
        history: 0,
    };
        let (engine, fresh) = run_engine(&candles, cfg);
        let batch = batch_pivots(&candles, cfg);
        let mut total = 0;
        for level in 1..=LEVELS as u8 {
            prop_assert_eq!(engine.pivots(level), &batch[level as usize - 1][..]);
            total += batch[level as usize - 1].len();
        }
        prop_assert_eq!(fresh.len(), total);
    }

    #[test]
    fn higher_levels_are_subsets_and_never_known_early(
        raw in prop::collection::vec((1i64..3, 0i64..50, 0i64..10), 0..600),
        k in 1usize..3,
        probe in 0i64..1_200,
    ) {
        let candles = build(&raw);
        let cfg = PivotConfig { bars_per_side: k, interval_ms: 1_000,
        history: 0,
    };
        let (engine, _) = run_engine(&candles, cfg);
        for level in 2..=LEVELS as u8 {
            let lower = engine.pivots(level - 1);
            for p in engine.pivots(level) {
                let twin = lower.iter().find(|q| q.index == p.index && q.kind == p.kind);
                let twin = twin.expect("a level-n+1 pivot is a level-n pivot");
                prop_assert_eq!(twin.price, p.price);
                prop_assert!(p.known_ms >= twin.known_ms);
            }
        }
        let t = probe * 1_000;
        for level in 1..=LEVELS as u8 {
            let known = engine.known_at(level, t);
            prop_assert!(known.iter().all(|p| p.known_ms <= t));
            let rest = &engine.pivots(level)[known.len()..];
            prop_assert!(rest.iter().all(|p| p.known_ms > t));
            let view = engine.level_at(level, t);
            if let Some(h) = view.last_high() {
                prop_assert_eq!(h.kind, PivotKind::High);
                prop_assert!(h.known_ms <= t);
            }
        }
    }
}

/// Real 5-minute BTC/USDT candles: the five levels thin out and keep their invariants.
#[test]
fn five_levels_on_recorded_binance_5m() {
    let path = mmtrader::testdata::require("candles/binance_spot_nfi/BTC_USDT-5m.json.gz");
    let loaded = mmtrader::analysis::analyze::read_candles(&path).expect("candles load");
    assert_eq!(loaded.candles.len(), 65_741);
    assert!(loaded.bad_rows.is_empty());
    let cfg = PivotConfig {
        bars_per_side: 2,
        interval_ms: 300_000,
        history: 0,
    };
    let (engine, _) = run_engine(&loaded.candles, cfg);
    let counts: Vec<usize> = (1..=5).map(|l| engine.pivots(l).len()).collect();
    for w in counts.windows(2) {
        assert!(w[0] > w[1], "each level must be sparser: {counts:?}");
    }
    assert!(
        counts[4] > 0,
        "five levels on 7 months of 5m candles: {counts:?}"
    );
    // Every level-1 high really is the max of its 5-candle window (first of equals).
    for p in engine
        .pivots(1)
        .iter()
        .filter(|p| p.kind == PivotKind::High)
    {
        let w = &loaded.candles[p.index - 2..=p.index + 2];
        assert!(w.iter().all(|c| c.high <= p.price));
        assert_eq!(loaded.candles[p.index].high, p.price);
    }
    assert_eq!(engine.pivots(1), &batch_pivots(&loaded.candles, cfg)[0][..]);
}
