//! Backtest realism, on small generated candles (exact expected fills) and on the shared
//! Binance BTC/USDT 1h candles: stops and take-profits trigger inside the candle at their
//! level (the worse one first when both could), a gap fills at the open, every fill pays the
//! impact on top of the slippage, a stop-out and a re-entry in one candle are two round trips,
//! risk halts follow the stated policy and are counted, and walk-forward folds are chained
//! into one compounded out-of-sample result.

use std::collections::BTreeMap;

use mmtrader::analysis::analyze::{detect_interval, read_candles};
use mmtrader::analysis::input::BaseDataInput;
use mmtrader::analysis::model_output::{Action, ActionValues, ModelOutput, Predictions};
use mmtrader::market::types::{Candle, Price, Qty, Side};
use mmtrader::orchestrator::backtest::{
    self, BacktestResult, BacktestSpec, Fold, TradingSetup, WalkForward,
};
use mmtrader::orchestrator::config::OrchestratorConfig;
use mmtrader::orchestrator::expert::{Expert, ExpertError, Upstream};
use mmtrader::trading::money::Money;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// 2021-01-01T00:00:00Z.
const T0: i64 = 1_609_459_200_000;

/// Says what its script says at each close (certain BUY or SELL), else its default.
struct Script {
    at: BTreeMap<i64, Action>,
    default: Action,
}

impl Expert for Script {
    fn name(&self) -> &str {
        "script"
    }

    fn uses_last_predictions(&self) -> bool {
        false
    }

    fn infer(&mut self, input: &BaseDataInput, _: &Upstream) -> Result<ModelOutput, ExpertError> {
        let action = self
            .at
            .get(&input.timestamp_ms)
            .copied()
            .unwrap_or(self.default);
        let one = |a: Action| if a == action { 1.0 } else { 0.0 };
        Ok(ModelOutput {
            model_type: "rule".into(),
            model_name: "script".into(),
            symbol: input.symbol.clone(),
            timestamp_ms: input.timestamp_ms,
            confidence: 1.0,
            predictions: Predictions {
                action,
                action_confidence: 1.0,
                probabilities: ActionValues {
                    buy: one(Action::Buy),
                    sell: one(Action::Sell),
                    hold: one(Action::Hold),
                },
                direction_vector: 0.0,
                direction_confidence: 0.0,
                pivots: Vec::new(),
                q_values: None,
                expected_reward: None,
            },
            hidden_states: BTreeMap::new(),
            metadata: BTreeMap::new(),
        })
    }
}

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}

/// Hourly candle `i` after [`T0`].
fn candle(i: i64, o: &str, h: &str, l: &str, c: &str) -> Candle {
    Candle {
        open_time_ms: T0 + i * HOUR,
        open: p(o),
        high: p(h),
        low: p(l),
        close: p(c),
        volume: Qty::from_units(10),
        trades: 10,
    }
}

/// Six flat candles at 100 (warm-up and the entry at the close of candle 5), then `rest`.
fn series(rest: &[(&str, &str, &str, &str)]) -> Vec<Candle> {
    let mut c: Vec<Candle> = (0..6)
        .map(|i| candle(i, "100", "100", "100", "100"))
        .collect();
    for (k, (o, h, l, cl)) in rest.iter().enumerate() {
        c.push(candle(6 + k as i64, o, h, l, cl));
    }
    c
}

/// Close time of candle `i`.
fn close(i: i64) -> i64 {
    T0 + (i + 1) * HOUR
}

/// Stops 1 % and take-profits 2 % from the entry, the default fees, latency, slippage (2 bps)
/// and impact (1 bp), risk 0.5 % per trade, no notional cap in the way.
fn setup() -> TradingSetup {
    let mut s = TradingSetup::default();
    s.execution.stop_loss_bps = 100;
    s.execution.take_profit_bps = 200;
    s.risk.max_position_notional = Money::from_units(1_000_000);
    s.risk.max_position_qty.clear();
    s
}

fn cfg(allow_short: bool) -> OrchestratorConfig {
    let mut c = OrchestratorConfig::default();
    c.backtest.batch = 1;
    c.backtest.allow_short = allow_short;
    c
}

/// The backtest of `candles` from the close of candle 5 with the scripted expert.
fn scripted(
    candles: &[Candle],
    at: &[(i64, Action)],
    default: Action,
    setup: &TradingSetup,
    allow_short: bool,
) -> BacktestResult {
    let interval = candles[1].open_time_ms - candles[0].open_time_ms;
    backtest::run(
        BacktestSpec {
            symbol: "BTCUSDT",
            candles,
            interval_ms: interval,
            from_ms: candles[5].open_time_ms + interval,
            to_ms: i64::MAX,
        },
        &cfg(allow_short),
        setup,
        vec![Box::new(Script {
            at: at.iter().copied().collect(),
            default,
        })],
        None,
        &mut |_, _| {},
    )
    .unwrap()
}

/// `price` moved `bps` against a `side` fill, rounded against the trader (as the paper book).
fn worse(side: Side, price: Price, bps: i128) -> Price {
    let raw = price.raw() as i128;
    Price(match side {
        Side::Buy => (raw * (10_000 + bps) + 9_999) / 10_000,
        Side::Sell => raw * (10_000 - bps) / 10_000,
    } as i64)
}

/// Slippage (2 bps) plus impact (1 bp) of the default setup.
const COST_BPS: i128 = 3;

#[test]
fn a_stop_inside_the_candle_fills_at_its_level_not_at_the_low_or_the_close() {
    // The stop (99) lies inside candle 6's range; its close (100.2) is above it, so a
    // close-only check would have kept the position.
    let c = series(&[("100", "100.5", "98", "100.2")]);
    let r = scripted(
        &c,
        &[(close(5), Action::Buy)],
        Action::Hold,
        &setup(),
        false,
    );
    assert_eq!(r.trades.len(), 2, "{:#?}", r.trades);
    let (entry, exit) = (&r.trades[0], &r.trades[1]);
    assert_eq!(entry.price, worse(Side::Buy, p("100"), COST_BPS));
    assert_eq!(exit.side, Side::Sell);
    assert_eq!(exit.price, worse(Side::Sell, p("99"), COST_BPS));
    assert_eq!(exit.reason, "stop-loss 99");
    assert_eq!(exit.position, Qty::ZERO);
    // Halfway down the leg from the open to the low.
    let o = c[6].open_time_ms;
    assert!(
        o < exit.time_ms && exit.time_ms < o + HOUR,
        "{}",
        exit.time_ms
    );
    assert_eq!(exit.time_ms, o + 1 + (HOUR / 3 - 1) / 2);
    assert_eq!(r.round_trips.len(), 1);
    assert!(r.round_trips[0].pnl.is_negative());
    assert_eq!(r.metrics.win_rate, Some(0.0));
    assert_eq!(
        r.final_equity - Money::from_units(10_000),
        r.round_trips[0].pnl
    );
}

#[test]
fn a_gap_through_the_stop_fills_at_the_open() {
    let c = series(&[("97", "97.5", "96.5", "97.2")]);
    let r = scripted(
        &c,
        &[(close(5), Action::Buy)],
        Action::Hold,
        &setup(),
        false,
    );
    let exit = &r.trades[1];
    assert_eq!(exit.price, worse(Side::Sell, p("97"), COST_BPS));
    assert_eq!(exit.reason, "stop-loss 99: gapped, filled at the open 97");
    // The open is seen once the entry of the previous close is active (50 ms latency).
    assert_eq!(exit.time_ms, c[6].open_time_ms + 50);
}

#[test]
fn when_stop_and_take_profit_both_lie_in_the_candle_the_stop_fills() {
    // Long: stop 99, take-profit 102, candle range 98.5..103.
    let both = series(&[("100", "103", "98.5", "101")]);
    let r = scripted(
        &both,
        &[(close(5), Action::Buy)],
        Action::Hold,
        &setup(),
        false,
    );
    assert_eq!(r.trades[1].reason, "stop-loss 99");
    assert_eq!(r.trades[1].price, worse(Side::Sell, p("99"), COST_BPS));
    // Only the take-profit in range: it fills at its level.
    let tp = series(&[("100", "102.5", "99.5", "101")]);
    let r = scripted(
        &tp,
        &[(close(5), Action::Buy)],
        Action::Hold,
        &setup(),
        false,
    );
    assert_eq!(r.trades[1].reason, "take-profit 102");
    assert_eq!(r.trades[1].price, worse(Side::Sell, p("102"), COST_BPS));
    assert!(r.round_trips[0].pnl.raw() > 0);
    // Short: stop 101 above, take-profit 98 below; the high comes first.
    let r = scripted(
        &series(&[("100", "101.5", "97", "99")]),
        &[(close(5), Action::Sell)],
        Action::Hold,
        &setup(),
        true,
    );
    assert_eq!(r.trades[0].price, worse(Side::Sell, p("100"), COST_BPS));
    assert_eq!(r.trades[1].side, Side::Buy);
    assert_eq!(r.trades[1].reason, "stop-loss 101");
    assert_eq!(r.trades[1].price, worse(Side::Buy, p("101"), COST_BPS));
}

#[test]
fn impact_is_paid_on_every_fill_on_top_of_the_slippage() {
    let c = series(&[("100", "100.5", "98", "100.2")]);
    let at = [(close(5), Action::Buy)];
    let none = TradingSetup {
        impact_bps: 0,
        ..setup()
    };
    let heavy = TradingSetup {
        impact_bps: 20,
        ..setup()
    };
    let a = scripted(&c, &at, Action::Hold, &none, false);
    let b = scripted(&c, &at, Action::Hold, &heavy, false);
    assert_eq!(a.trades[0].price, worse(Side::Buy, p("100"), 2));
    assert_eq!(b.trades[0].price, worse(Side::Buy, p("100"), 22));
    assert_eq!(b.trades[1].price, worse(Side::Sell, p("99"), 22));
    assert_eq!((a.costs.impact_bps, b.costs.impact_bps), (0, 20));
    assert!(b.final_equity < a.final_equity);
    // Buy and hold pays it too.
    assert!(b.benchmark.last().unwrap().1 < a.benchmark.last().unwrap().1);
}

#[test]
fn a_stop_out_and_a_re_entry_in_one_candle_are_two_round_trips() {
    // Stopped out inside candle 6, bought again at its close, sold at a profit at the next.
    let c = series(&[
        ("100", "100.5", "98", "100.2"),
        ("100.2", "101", "100", "101"),
    ]);
    let r = scripted(
        &c,
        &[
            (close(5), Action::Buy),
            (close(6), Action::Buy),
            (close(7), Action::Sell),
        ],
        Action::Hold,
        &setup(),
        false,
    );
    let t = &r.trades;
    assert_eq!(t.len(), 4, "{t:#?}");
    let sides: Vec<Side> = t.iter().map(|x| x.side).collect();
    assert_eq!(sides, [Side::Buy, Side::Sell, Side::Buy, Side::Sell]);
    // The stop-out and the re-entry lie in the same candle (its close is the re-entry's
    // decision), each with its own position and round trip.
    assert!(t[1].time_ms > c[6].open_time_ms && t[2].time_ms == close(6) + 50);
    assert!(t[0].position.raw() > 0 && t[2].position.raw() > 0);
    assert_eq!((t[1].position, t[3].position), (Qty::ZERO, Qty::ZERO));
    assert_eq!(t.iter().map(|x| x.trip).collect::<Vec<_>>(), [1, 1, 2, 2]);
    assert_eq!(r.round_trips.len(), 2);
    assert!(r.round_trips[0].pnl.is_negative() && r.round_trips[1].pnl.raw() > 0);
    assert_eq!(r.round_trips[0].exit_reason, "stop-loss 99");
    assert_eq!((r.metrics.round_trips, r.metrics.win_rate), (2, Some(0.5)));
    let net: Money = r.round_trips.iter().map(|x| x.pnl).sum();
    assert_eq!(r.final_equity - Money::from_units(10_000), net);
}

/// Candles that dip through a 1 % stop every hour and close back at 100.
fn dips(hours: usize) -> Vec<Candle> {
    series(&vec![("100", "100.2", "98.5", "100"); hours])
}

#[test]
fn a_daily_loss_halt_ends_at_the_next_utc_day_and_is_counted_once() {
    let mut s = setup();
    s.risk.daily_loss_limit_bps = 40;
    s.risk.max_drawdown_bps = 0;
    let c = dips(42);
    let r = scripted(&c, &[], Action::Buy, &s, false);
    // Stopped out in candle 6 (−0.6 %), halted at its close until midnight; again on day 2.
    assert_eq!(r.halts.len(), 2, "{:#?}", r.halts);
    let (a, b) = (&r.halts[0], &r.halts[1]);
    assert_eq!(
        (a.kind(), a.since_ms, a.ended_ms),
        ("daily loss", close(6), Some(T0 + DAY))
    );
    assert_eq!(a.ended_by, "next UTC day");
    // Every close from the halt to the last one before midnight refused its BUY.
    assert_eq!(a.refused_intents, ((T0 + DAY - close(6)) / HOUR) as u64);
    assert_eq!((b.kind(), b.since_ms), ("daily loss", close(24)));
    assert_eq!(b.ended_ms, Some(T0 + 2 * DAY));
    // Trading resumed at midnight: the entry at that close filled.
    assert!(
        r.trades
            .iter()
            .any(|t| t.time_ms == T0 + DAY + 50 && t.side == Side::Buy)
    );
    // No refusal lines for the halted steps: they are counted on their halt.
    assert_eq!(r.refusals, 0, "{:?}", r.refusal_reasons);
    assert_eq!(r.halt_counts(), vec![("daily loss", 2)]);
    assert_eq!(r.halted_intents(), a.refused_intents + b.refused_intents);
    assert!(
        r.halt_policy
            .contains("daily-loss halt (40 bps) ends at the next UTC day")
    );
}

#[test]
fn a_drawdown_halt_stays_unless_resume_after_lifts_it() {
    let mut s = setup();
    s.risk.daily_loss_limit_bps = 0;
    s.risk.max_drawdown_bps = 100;
    let c = dips(30);
    let stays = scripted(&c, &[], Action::Buy, &s, false);
    // Two stop-outs of about 0.6 % each exceed 1 %: halted at the second one's close.
    assert_eq!(stays.halts.len(), 1, "{:#?}", stays.halts);
    let h = &stays.halts[0];
    assert_eq!(
        (h.kind(), h.since_ms, h.ended_ms),
        ("drawdown", close(7), None)
    );
    assert_eq!(h.ended_by, "end of run");
    assert!(stays.trades.iter().all(|t| t.time_ms < h.since_ms));
    let steps_halted = ((close(35) - close(7)) / HOUR + 1) as u64;
    assert_eq!(h.refused_intents, steps_halted);
    assert!(
        stays
            .halt_policy
            .contains("a drawdown halt stays in force to the end")
    );

    s.drawdown_resume_ms = Some(6 * HOUR);
    let resumed = scripted(&c, &[], Action::Buy, &s, false);
    assert!(resumed.halts.len() >= 3, "{:#?}", resumed.halts);
    for h in &resumed.halts[..resumed.halts.len() - 1] {
        assert_eq!(h.kind(), "drawdown");
        assert_eq!(h.ended_ms, Some(h.since_ms + 6 * HOUR));
        assert_eq!(h.ended_by, "--resume-after 6h");
        // Trading resumed at once.
        assert!(
            resumed
                .trades
                .iter()
                .any(|t| t.time_ms == h.since_ms + 6 * HOUR + 50 && t.side == Side::Buy)
        );
    }
    assert!(resumed.halt_policy.contains("lifted 6h after it starts"));
}

fn btc_1h() -> Vec<Candle> {
    let path = mmtrader::testdata::require("candles/binance_spot_nfi/BTC_USDT-1h.json");
    read_candles(&path).unwrap().candles
}

/// The candle whose interval holds `t`.
fn candle_at(c: &[Candle], interval: i64, t: i64) -> &Candle {
    let k = c.partition_point(|x| x.open_time_ms + interval <= t);
    assert!(c[k].open_time_ms <= t, "{t} in a gap");
    &c[k]
}

fn level_of(reason: &str) -> Option<Price> {
    let rest = reason
        .strip_prefix("stop-loss ")
        .or_else(|| reason.strip_prefix("take-profit "))?;
    Some(p(rest.split(':').next().unwrap()))
}

#[test]
fn on_real_candles_exits_fill_inside_their_candle_at_their_level() {
    let c = btc_1h();
    let interval = detect_interval(&c);
    assert_eq!(interval, HOUR);
    // Always long: every exit is followed by a re-entry at the close of its candle (no halt
    // in the way).
    let mut s = setup();
    s.risk.daily_loss_limit_bps = 0;
    s.risk.max_drawdown_bps = 0;
    let r = scripted(&c, &[], Action::Buy, &s, false);
    let mut position = 0i64;
    let (mut inside, mut missed_by_closes, mut same_candle) = (0, 0, 0);
    for (k, t) in r.trades.iter().enumerate() {
        position += if t.side == Side::Buy {
            t.qty.raw()
        } else {
            -t.qty.raw()
        };
        assert_eq!(t.position.raw(), position, "fill {k}: {t:?}");
        let Some(level) = level_of(&t.reason) else {
            continue;
        };
        let k_candle = candle_at(&c, interval, t.time_ms);
        let (o, end) = (k_candle.open_time_ms, k_candle.open_time_ms + interval);
        assert!(
            o < t.time_ms && t.time_ms < end,
            "{t:?} not inside its candle"
        );
        assert_eq!(t.position, Qty::ZERO);
        if t.reason.contains("gapped") {
            assert_eq!(t.price, worse(Side::Sell, k_candle.open, COST_BPS));
            assert!(t.time_ms <= o + 50, "{t:?}");
        } else {
            assert!(
                k_candle.low <= level && level <= k_candle.high,
                "{t:?} {k_candle:?}"
            );
            assert_eq!(t.price, worse(Side::Sell, level, COST_BPS), "{t:?}");
            inside += 1;
        }
        if t.reason.starts_with("stop-loss") && k_candle.close > level {
            missed_by_closes += 1;
        }
        // The re-entry at this candle's close is the next fill, in the next round trip.
        if let Some(next) = r.trades.get(k + 1)
            && next.time_ms == end + 50
        {
            assert_eq!((next.side, next.trip), (Side::Buy, t.trip + 1));
            same_candle += 1;
        }
    }
    assert!(inside >= 20, "{inside} exits inside candles");
    assert!(missed_by_closes >= 5, "{missed_by_closes}");
    assert!(same_candle >= 20, "{same_candle}");
    // Every closed position is a round trip, and the win rate counts them all.
    let closed = r.trades.iter().filter(|t| t.position.is_zero()).count();
    assert_eq!(r.round_trips.len(), closed);
    let wins = r.round_trips.iter().filter(|t| t.pnl.raw() > 0).count();
    assert_eq!(
        r.metrics.win_rate,
        Some(wins as f64 / r.round_trips.len() as f64)
    );
    let stopped: Vec<_> = r
        .round_trips
        .iter()
        .filter(|t| t.exit_reason.starts_with("stop-loss"))
        .collect();
    assert!(stopped.iter().all(|t| t.pnl.is_negative()));
}

#[test]
fn on_real_candles_halts_follow_the_policy() {
    let c = btc_1h();
    let mut s = setup();
    s.risk.daily_loss_limit_bps = 100;
    s.risk.max_drawdown_bps = 300;
    s.drawdown_resume_ms = Some(2 * DAY);
    let r = scripted(&c, &[], Action::Buy, &s, false);
    let closes: Vec<i64> = c.iter().map(|x| x.open_time_ms + HOUR).collect();
    let first_close_from = |t: i64| closes[closes.partition_point(|x| *x < t)];
    let daily: Vec<_> = r
        .halts
        .iter()
        .filter(|h| h.kind() == "daily loss")
        .collect();
    let drawdown: Vec<_> = r.halts.iter().filter(|h| h.kind() == "drawdown").collect();
    assert!(
        daily.len() >= 3 && drawdown.len() >= 2,
        "{:#?}",
        r.halt_counts()
    );
    for h in &daily {
        if let Some(end) = h.ended_ms {
            let midnight = (h.since_ms / DAY + 1) * DAY;
            assert_eq!(end, first_close_from(midnight), "{h:?}");
            assert_eq!(h.ended_by, "next UTC day");
        }
    }
    for h in &drawdown {
        if let Some(end) = h.ended_ms {
            assert_eq!(end, first_close_from(h.since_ms + 2 * DAY), "{h:?}");
            assert_eq!(h.ended_by, "--resume-after 2d");
        }
    }
    assert!(r.refusal_reasons.iter().all(|x| !x.contains("halted")));
    // Without --resume-after the first drawdown halt is the last halt and ends nothing.
    s.drawdown_resume_ms = None;
    let stays = scripted(&c, &[], Action::Buy, &s, false);
    let last = stays.halts.last().unwrap();
    assert_eq!((last.kind(), last.ended_ms), ("drawdown", None));
    assert_eq!(
        stays
            .halts
            .iter()
            .filter(|h| h.kind() == "drawdown")
            .count(),
        1
    );
    assert!(
        stays
            .trades
            .iter()
            .all(|t| t.time_ms < last.since_ms || t.side == Side::Sell)
    );
}

/// Checks that `wf.oos` is its folds' test windows compounded, and nothing else.
fn assert_chained(wf: &WalkForward, c: &[Candle], interval: i64) {
    let folds: &[Fold] = &wf.folds;
    let oos = &wf.oos;
    assert!(folds.len() >= 3, "{} folds", folds.len());
    let steps: usize = folds.iter().map(|f| f.test_result.equity.len()).sum();
    assert_eq!(oos.equity.len(), steps);
    assert_eq!(oos.decisions.len(), steps);
    let start = oos.start_equity;
    let (mut scale, mut j, mut compounded) = (1.0, 0, 1.0);
    for f in folds {
        let r = &f.test_result;
        for &(t, e) in &r.equity {
            let (ct, ce) = oos.equity[j];
            assert_eq!(ct, t);
            assert!(t > f.test.0 && t <= f.test.1);
            assert!(
                (ce - e * scale).abs() <= 1e-9 * ce.abs(),
                "step {j}: {ce} vs {e}×{scale}"
            );
            j += 1;
        }
        scale *= r.final_equity.to_f64() / start;
        compounded *= 1.0 + r.metrics.total_return;
    }
    assert!((oos.metrics.total_return - (compounded - 1.0)).abs() < 1e-9);
    assert!((oos.final_equity.to_f64() / start - compounded).abs() < 1e-9);
    // The fills are the folds' fills (no whole-range run), trips numbered on across folds.
    let fills: usize = folds.iter().map(|f| f.test_result.trades.len()).sum();
    assert_eq!(oos.trades.len(), fills);
    assert!(oos.trades.iter().all(|t| t.time_ms > folds[0].test.0));
    assert!(oos.trades.windows(2).all(|w| w[0].trip <= w[1].trip));
    assert_eq!(
        oos.round_trips.len(),
        folds
            .iter()
            .map(|f| f.test_result.round_trips.len())
            .sum::<usize>()
    );
    // Buy and hold bought once at the first test close and held to the last.
    assert_eq!(oos.benchmark_metrics.trades, 1);
    let price_at = |t: i64| candle_at(c, interval, t - 1).close.to_f64();
    let moved = price_at(oos.last_ms) / price_at(oos.first_ms) - 1.0;
    assert!(
        (oos.benchmark_metrics.total_return - 0.95 * moved).abs() < 0.003,
        "{} vs {moved}",
        oos.benchmark_metrics.total_return
    );
    assert!(oos.ci95.is_some() && oos.benchmark_ci95.is_some());
}

/// A deterministic hourly random walk with ±1.5 % candles around 100.
fn walk_candles(n: i64, seed: u64) -> Vec<Candle> {
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 2_001) as i64 - 1_000
    };
    let mut close: i64 = 100 * 100_000_000;
    (0..n)
        .map(|i| {
            let open = close;
            // Up to ±1.5 % a candle, wicks up to 1.4 % beyond the body.
            close += open * next() / 66_667;
            let wick = open / 1_000 * (next().abs() % 15);
            Candle {
                open_time_ms: T0 + i * HOUR,
                open: Price(open),
                high: Price(open.max(close) + wick),
                low: Price(open.min(close) - wick),
                close: Price(close),
                volume: Qty::from_units(1),
                trades: 1,
            }
        })
        .collect()
}

#[test]
fn walk_forward_folds_chain_into_one_out_of_sample_curve() {
    let c = walk_candles(24 * 30, 7);
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: &c,
        interval_ms: HOUR,
        from_ms: c[0].open_time_ms,
        to_ms: c[c.len() - 1].open_time_ms + HOUR,
    };
    let experts = || -> Vec<Box<dyn Expert>> {
        vec![Box::new(Script {
            at: BTreeMap::new(),
            default: Action::Buy,
        })]
    };
    let wf = backtest::walk_forward(
        spec,
        &cfg(false),
        &setup(),
        &experts,
        5 * DAY,
        5 * DAY,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        wf.folds.len(),
        backtest::fold_count(&spec, 5 * DAY, 5 * DAY)
    );
    assert_chained(&wf, &c, HOUR);
    assert!(wf.oos.trades.len() > 10);
}

#[test]
fn walk_forward_on_real_candles_is_one_compounded_out_of_sample_result() {
    let c = btc_1h();
    let c = &c[..2_400];
    let spec = BacktestSpec {
        symbol: "BTCUSDT",
        candles: c,
        interval_ms: HOUR,
        from_ms: c[0].open_time_ms,
        to_ms: c[c.len() - 1].open_time_ms + HOUR,
    };
    let experts = || -> Vec<Box<dyn Expert>> {
        vec![Box::new(Script {
            at: BTreeMap::new(),
            default: Action::Buy,
        })]
    };
    let wf = backtest::walk_forward(
        spec,
        &cfg(false),
        &setup(),
        &experts,
        20 * DAY,
        10 * DAY,
        &mut |_, _| {},
    )
    .unwrap();
    assert_chained(&wf, c, HOUR);
}
