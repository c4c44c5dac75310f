//! No lookahead: an input built at `t` is bit-for-bit the same after arbitrary data stamped
//! after `t` arrived (trades, candles, COB computations, model outputs, exchange klines and
//! backfills that close after `t`), on synthetic markets
//! (property test) and on a real Binance BTCUSDT recording.

use std::io::{BufRead, BufReader};

use flate2::read::GzDecoder;
use mmtrader::analysis::encoding::encode;
use mmtrader::analysis::input::{BaseDataInput, InputConfig, SymbolAnalysis};
use mmtrader::analysis::model_output::{
    Action, ActionValues, ModelOutput, ModelOutputStore, Predictions,
};
use mmtrader::market::book::OrderBook;
use mmtrader::market::state::{SymbolMarket, SymbolMarketConfig};
use mmtrader::market::types::{Candle, Level, Price, Qty, Side, Timeframe, Trade};
use mmtrader::testdata::require;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Day-aligned start of the synthetic history; live data starts five hours later.
const DAY0: i64 = 19_675 * 86_400_000;
const LIVE: i64 = DAY0 + 5 * 3_600_000;

fn market(bucket: i64) -> SymbolMarket {
    SymbolMarket::new(SymbolMarketConfig {
        bucket_size: Price::from_units(bucket),
        large_trade_notional: Price::from_units(30_000),
        candles_kept: 1_500,
        tick_capacity: 100_000,
        tick_max_age_ms: 1_800_000,
    })
}

fn klines(rng: &mut ChaCha8Rng, tf: Timeframe, n: usize, end: i64, base: i64) -> Vec<Candle> {
    let tick = 1_000_000;
    let mut close = base * 100_000_000;
    (0..n)
        .map(|i| {
            let open = close;
            close += rng.random_range(-40..=40) * tick;
            Candle {
                open_time_ms: end - (n - i) as i64 * tf.millis(),
                open: Price(open),
                high: Price(open.max(close) + rng.random_range(0..8) * tick),
                low: Price(open.min(close) - rng.random_range(0..8) * tick),
                close: Price(close),
                volume: Qty(rng.random_range(1..5_000_000_000)),
                trades: rng.random_range(1..60),
            }
        })
        .collect()
}

/// One symbol's synthetic live stream: a random walk, trades and a book around it.
struct Stream {
    market: SymbolMarket,
    rng: ChaCha8Rng,
    price: i64,
    tick: i64,
    next_id: u64,
    symbol: &'static str,
}

impl Stream {
    fn new(symbol: &'static str, base: i64, bucket: i64, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut market = market(bucket);
        let ends = [LIVE, LIVE, LIVE, DAY0];
        for (tf, end) in Timeframe::ALL.into_iter().zip(ends) {
            let k = klines(&mut rng, tf, 320, end, base);
            assert!(market.on_history(tf, &k).invalid.is_empty());
        }
        Self {
            market,
            rng,
            price: base * 100_000_000,
            tick: bucket * 1_000_000,
            next_id: 1,
            symbol,
        }
    }

    /// Trades stamped inside `[s, s + 1000)`, in time order.
    fn trades_in_second(&mut self, s: i64) -> Vec<Trade> {
        let n = self.rng.random_range(0..5);
        let mut times: Vec<i64> = (0..n)
            .map(|_| s + self.rng.random_range(0..1_000))
            .collect();
        times.sort_unstable();
        times
            .into_iter()
            .map(|time_ms| {
                self.price += self.rng.random_range(-3..=3) * self.tick;
                self.next_id += 1;
                Trade {
                    symbol: self.symbol.into(),
                    id: self.next_id,
                    time_ms,
                    price: Price(self.price),
                    qty: Qty(self.rng.random_range(1_000_000..2_000_000_000)),
                    taker_side: if self.rng.random_bool(0.5) {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                }
            })
            .collect()
    }

    /// An exchange kline backfill arriving after `t`: 1 to 4 klines of a random timeframe from
    /// the one in progress at `t` on, so every one closes after `t` (future data). Returns
    /// the klines written into the series (intervals live trades cover keep theirs).
    fn future_klines(&mut self, t: i64) -> usize {
        let tf = Timeframe::ALL[self.rng.random_range(0..Timeframe::ALL.len())];
        let n = self.rng.random_range(1..5);
        let end = tf.floor(t) + n as i64 * tf.millis();
        let base = self.price / 100_000_000;
        let k = klines(&mut self.rng, tf, n, end, base);
        assert!(k.iter().all(|c| c.open_time_ms + tf.millis() > t));
        self.market.on_history(tf, &k).applied
    }

    fn book(&mut self) -> OrderBook {
        let mut book = OrderBook::new();
        let level = |p: i64, rng: &mut ChaCha8Rng| Level {
            price: Price(p),
            qty: Qty(rng.random_range(1_000_000..900_000_000)),
        };
        let step = self.tick / 2;
        let bids: Vec<Level> = (1..60)
            .map(|i| level(self.price - i * step, &mut self.rng))
            .collect();
        let asks: Vec<Level> = (1..60)
            .map(|i| level(self.price + i * step, &mut self.rng))
            .collect();
        book.apply_snapshot(&bids, &asks, 1);
        book
    }
}

fn output(rng: &mut ChaCha8Rng, t: i64) -> ModelOutput {
    let kinds = ["cnn", "rl", "lstm", "transformer"];
    let k = rng.random_range(0..kinds.len());
    let p = rng.random_range(0.0..1.0);
    ModelOutput {
        model_type: kinds[k].into(),
        model_name: format!("{}_{}", kinds[k], rng.random_range(0..2)),
        symbol: "ETHUSDT".into(),
        timestamp_ms: t,
        confidence: p,
        predictions: Predictions {
            action: Action::ALL[rng.random_range(0..3)],
            action_confidence: p,
            probabilities: ActionValues {
                buy: p / 2.0,
                sell: p / 2.0,
                hold: 1.0 - p,
            },
            direction_vector: rng.random_range(-1.0..1.0),
            direction_confidence: p,
            pivots: vec![],
            q_values: None,
            expected_reward: Some(rng.random_range(-1.0..1.0)),
        },
        hidden_states: Default::default(),
        metadata: Default::default(),
    }
}

/// One stamped thing arriving during a second.
enum Event {
    /// A trade; `true` for ETH, `false` for BTC.
    Trade(Trade, bool),
    /// A model output about ETH.
    Output(ModelOutput),
}

/// Histories long enough to reach back over the longest future a case appends (300 s).
fn config() -> InputConfig {
    InputConfig {
        heatmap_rows: 30,
        cob_history: 400,
        ..InputConfig::default()
    }
}

/// Names the parts of two inputs that differ (a full dump is too large to read).
fn differences(a: &BaseDataInput, b: &BaseDataInput) -> Vec<&'static str> {
    let mut d = vec![];
    let parts = [
        ("ohlcv", a.ohlcv == b.ohlcv),
        ("reference", a.reference_ohlcv_1s == b.reference_ohlcv_1s),
        ("cob", a.cob == b.cob),
        ("indicators", a.indicators == b.indicators),
        ("pivots", a.pivots == b.pivots),
        ("predictions", a.last_predictions == b.last_predictions),
        ("microstructure", a.microstructure == b.microstructure),
        ("heatmap", a.heatmap == b.heatmap),
    ];
    for (name, same) in parts {
        if !same {
            d.push(name);
        }
    }
    d
}

fn bits(input: &BaseDataInput) -> Vec<u32> {
    encode(input).data.iter().map(|v| v.to_bits()).collect()
}

/// Runs both symbols second by second from `LIVE` to `until`, building at `t` on the way
/// (after every trade stamped before `t`), and returns the input built at `t` then, the input
/// rebuilt at `t` at the end, and the input at the end.
fn run(seed: u64, t: i64, until: i64) -> (BaseDataInput, BaseDataInput, BaseDataInput) {
    let mut eth = Stream::new("ETHUSDT", 3_000, 1, seed);
    let mut btc = Stream::new("BTCUSDT", 60_000, 10, seed ^ 0xB7C);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0D);
    let mut analysis = SymbolAnalysis::new("ETHUSDT", config());
    let mut outputs = ModelOutputStore::default();
    let mut at_t = None;
    let mut applied = 0;
    let mut s = LIVE;
    while s < until {
        // The second step at `s` (COB, filled candles) comes first: it is stamped `s`.
        if s > LIVE {
            let (be, bb) = (eth.book(), btc.book());
            eth.market.on_second(Some(&be), s).unwrap();
            btc.market.on_second(Some(&bb), s).unwrap();
            analysis.update(&eth.market, s);
        }
        // Everything stamped in this second, in time order; at equal stamps a model output
        // (which belongs to `t` when stamped `t`) goes before a trade (which does not).
        let mut events: Vec<(i64, u8, Event)> = vec![];
        for (trades, is_eth) in [
            (eth.trades_in_second(s), true),
            (btc.trades_in_second(s), false),
        ] {
            events.extend(
                trades
                    .into_iter()
                    .map(|x| (x.time_ms, 1, Event::Trade(x, is_eth))),
            );
        }
        for _ in 0..rng.random_range(0..2) {
            let ot = s + rng.random_range(0..1_000);
            events.push((ot, 0, Event::Output(output(&mut rng, ot))));
        }
        events.sort_by_key(|(time, order, _)| (*time, *order));
        for (time, _, event) in events {
            let after_t = match &event {
                Event::Trade(..) => time >= t,
                Event::Output(_) => time > t,
            };
            if at_t.is_none() && after_t {
                at_t = Some(analysis.build(&eth.market, &btc.market, &outputs, t));
            }
            match event {
                Event::Trade(trade, true) => eth.market.on_trade(&trade).unwrap(),
                Event::Trade(trade, false) => btc.market.on_trade(&trade).unwrap(),
                Event::Output(o) => outputs.record(o),
            }
        }
        // Exchange klines and backfills (REST after a reconnect) reach past `t` too.
        if at_t.is_some() && rng.random_range(0..6) == 0 {
            applied += eth.future_klines(t) + btc.future_klines(t);
        }
        s += 1_000;
        if at_t.is_none() && s > t {
            at_t = Some(analysis.build(&eth.market, &btc.market, &outputs, t));
        }
    }
    // Last backfills, after the final second.
    for _ in 0..4 {
        applied += eth.future_klines(t) + btc.future_klines(t);
    }
    assert!(applied > 0, "no future kline reached the series");
    let again = analysis.build(&eth.market, &btc.market, &outputs, t);
    let end = analysis.build(&eth.market, &btc.market, &outputs, until);
    (at_t.expect("t lies inside the run"), again, end)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn future_data_never_changes_an_input(
        seed in any::<u64>(),
        t_offset in 120_000i64..180_000,
        future_s in 1i64..300,
    ) {
        let t = LIVE + t_offset;
        let (first, again, end) = run(seed, t, t + future_s * 1_000);
        let cfg = config();
        prop_assert!(first.validate(&cfg).is_ok(), "{:?}", first.validate(&cfg));
        prop_assert!(first.completeness(&cfg) > 0.9);
        prop_assert!(first.heatmap.is_some() && first.cob.is_some());
        prop_assert_eq!(differences(&first, &again), Vec::<&str>::new());
        prop_assert!(first == again);
        prop_assert!(bits(&first) == bits(&again), "encoded tensors differ");
        // The future did change what an input at the later time sees.
        prop_assert!(end.timestamp_ms > first.timestamp_ms);
        if future_s > 5 {
            prop_assert!(bits(&end) != bits(&first));
        }
    }
}

#[test]
fn input_at_a_second_boundary_includes_that_seconds_cob_only() {
    let t = LIVE + 150_000;
    let (first, again, _) = run(42, t, t + 60_000);
    assert_eq!(first.cob.as_ref().unwrap().time_ms, t);
    assert_eq!(first.ohlcv[0].last().unwrap().open_time_ms, t - 1_000);
    assert!(first.last_predictions.values().all(|o| o.timestamp_ms <= t));
    assert_eq!(bits(&first), bits(&again));
}

fn levels(v: &Value) -> Vec<Level> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|pq| Level {
            price: Price::parse(pq[0].as_str().unwrap()).unwrap(),
            qty: Qty::parse(pq[1].as_str().unwrap()).unwrap(),
        })
        .collect()
}

/// Binance spot BTCUSDT (hftbacktest recording): book diffs and trades in exchange-time order
/// through the market, a COB every exchange second, inputs built at several times mid-stream
/// and rebuilt after the whole recording: identical.
#[test]
fn recorded_binance_stream_has_no_lookahead() {
    let mut events: Vec<(i64, Value)> = vec![];
    let mut snapshot = None;
    for rel in [
        "exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz",
        "exchange_raw/hftbacktest_binance/spot_btcusdt_20240809.gz",
    ] {
        let f = std::fs::File::open(require(rel)).unwrap();
        for line in BufReader::new(GzDecoder::new(f)).lines() {
            let line = line.unwrap();
            let (_, json) = line.split_once(' ').unwrap();
            let v: Value = serde_json::from_str(json).unwrap();
            if v.get("lastUpdateId").is_some() {
                snapshot = Some(v);
                continue;
            }
            let data = &v["data"];
            if matches!(data["e"].as_str(), Some("depthUpdate" | "trade")) {
                events.push((data["E"].as_i64().unwrap(), data.clone()));
            }
        }
    }
    events.sort_by_key(|(e, _)| *e);
    let snapshot = snapshot.expect("recording has a REST snapshot");
    let mut book = OrderBook::new();
    let lid = snapshot["lastUpdateId"].as_u64().unwrap();
    book.apply_snapshot(&levels(&snapshot["bids"]), &levels(&snapshot["asks"]), lid);

    let cfg = InputConfig {
        cob_history: 1_000,
        indicator_history: 1_000,
        heatmap_rows: 60,
        ..InputConfig::default()
    };
    let mut m = market(10);
    let mut analysis = SymbolAnalysis::new("BTCUSDT", cfg.clone());
    let outputs = ModelOutputStore::default();
    let first_s = Timeframe::S1.floor(events[0].0) + 1_000;
    let last = events.last().unwrap().0;
    let checkpoints: Vec<i64> = [0.3, 0.5, 0.7, 0.9]
        .iter()
        .map(|f| first_s + ((last - first_s) as f64 * f) as i64 + 437)
        .collect();
    let mut built: Vec<(i64, BaseDataInput)> = vec![];
    let mut next_second = first_s;
    let mut trades = 0;
    for (e, data) in &events {
        while next_second <= *e {
            // Binance stamps trades slightly before their event time, so step a second only
            // once the stream is past it.
            m.on_second(Some(&book), next_second).ok();
            analysis.update(&m, next_second);
            next_second += 1_000;
        }
        for &t in &checkpoints {
            if built.len() < checkpoints.len()
                && !built.iter().any(|(b, _)| *b == t)
                && *e > t + 1_000
            {
                built.push((t, analysis.build(&m, &m, &outputs, t)));
            }
        }
        if data["e"] == "trade" {
            let trade = Trade {
                symbol: "BTCUSDT".into(),
                id: data["t"].as_u64().unwrap(),
                time_ms: data["T"].as_i64().unwrap(),
                price: Price::parse(data["p"].as_str().unwrap()).unwrap(),
                qty: Qty::parse(data["q"].as_str().unwrap()).unwrap(),
                taker_side: if data["m"].as_bool().unwrap() {
                    Side::Sell
                } else {
                    Side::Buy
                },
            };
            m.on_trade(&trade).unwrap();
            trades += 1;
        } else if data["u"].as_u64().unwrap() > book.last_update_id {
            let id = data["u"].as_u64().unwrap();
            book.apply_diff(&levels(&data["b"]), &levels(&data["a"]), id);
        }
    }
    assert!(trades > 19_000);
    assert_eq!(built.len(), checkpoints.len());
    for (t, first) in &built {
        let again = analysis.build(&m, &m, &outputs, *t);
        assert_eq!(
            differences(first, &again),
            Vec::<&str>::new(),
            "input at {t} changed"
        );
        assert!(first == &again);
        assert_eq!(bits(first), bits(&again), "encoding at {t} changed");
        // A real, recent 1 s window and a fresh COB are there; 1 h and 1 d are not (the
        // recording is 11 minutes long), and validation says so.
        assert!(first.ohlcv[0].len() >= 100);
        assert!(t - first.cob.as_ref().unwrap().time_ms < 1_000);
        let err = first.validate(&cfg).unwrap_err().to_string();
        assert!(err.contains("ohlcv_1h: expected ≥100 frames, got"), "{err}");
        assert!(encode(first).data.iter().all(|v| v.is_finite()));
    }
}
