//! A deterministic, fully populated desk for pane tests, benchmarks and documentation renders.
//!
//! The market data is synthetic (a seeded random walk) but goes through the real engines: the
//! candles feed `batch_pivots`, and a real `OrderBook` feeds a real `CobEngine` once per
//! simulated second, so the heatmap and imbalance averages have the shapes the screen meets
//! live. The app itself never shows this data.

use std::sync::Arc;

use crate::analysis::model_output::{PredictedPivot, SwingKind};
use crate::analysis::pivots::{PivotConfig, batch_pivots};
use crate::feeds::health::{LinkState, StreamHealth};
use crate::logging::LogLine;
use crate::market::book::OrderBook;
use crate::market::cob::{CobConfig, CobEngine};
use crate::market::snapshot::{BookCounters, BookStatus, MarketSnapshot, SeriesPivots, SymbolView};
use crate::market::types::{Candle, Level, Price, Qty, Side, Timeframe, Trade};
use crate::tui::desk::{
    DecisionView, ExpertRow, LimitUsage, ModelsView, OrderRow, PositionRow, TradingView, Tunable,
};

/// Time of the fixture snapshot, ms since the epoch (2023-11-14 22:13:20 UTC).
pub const NOW_MS: i64 = 1_700_000_000_000;

/// Small deterministic generator (SplitMix64), so fixtures need no RNG dependency.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform integer in `-span..=span`.
    fn step(&mut self, span: i64) -> i64 {
        (self.next() % (2 * span as u64 + 1)) as i64 - span
    }
}

/// `n` candles of `tf` ending with the one open at `NOW_MS`, in cents around `base` units.
fn candles(rng: &mut Mix, tf: Timeframe, n: usize, base: i64) -> Vec<Candle> {
    let ms = tf.millis();
    let last_open = tf.floor(NOW_MS);
    let mut close = base * 100;
    (0..n)
        .map(|i| {
            let open = close;
            close = open + rng.step(150);
            let high = open.max(close) + rng.step(60).abs();
            let low = open.min(close) - rng.step(60).abs();
            let cents = |c: i64| Price(c * 1_000_000);
            Candle {
                open_time_ms: last_open - (n - 1 - i) as i64 * ms,
                open: cents(open),
                high: cents(high),
                low: cents(low),
                close: cents(close),
                volume: Qty::from_units(1 + (rng.next() % 40) as i64),
                trades: 10 + rng.next() % 90,
            }
        })
        .collect()
}

fn symbol(rng: &mut Mix, display: &str, exchange: &str, base: i64, bucket: i64) -> SymbolView {
    let mut candle_sets = Vec::new();
    let mut pivots = Vec::new();
    for tf in Timeframe::ALL {
        let c = candles(rng, tf, 300, base);
        let mut levels = batch_pivots(&c, PivotConfig::for_timeframe(tf));
        for l in &mut levels {
            l.retain(|p| p.known_ms <= NOW_MS);
        }
        pivots.push((tf, SeriesPivots { levels }));
        candle_sets.push((tf, c));
    }
    let mut engine = CobEngine::new(
        Price::from_units(bucket),
        CobConfig {
            heatmap_rows: 240,
            ..CobConfig::default()
        },
    )
    .expect("valid COB config");
    let mut book = OrderBook::new();
    // The book sits around the newest 1 m close, so quotes and chart agree.
    let last_close = candle_sets[1]
        .1
        .last()
        .map(|c| c.close)
        .unwrap_or(Price::ZERO);
    let mut mid = last_close.raw() / 1_000_000;
    let mut cob = None;
    for s in 0..240_i64 {
        mid += rng.step(3) * bucket;
        let mut bids = Vec::new();
        let mut asks = Vec::new();
        for k in 0..60_i64 {
            let q = |rng: &mut Mix| Qty::from_units(1 + (rng.next() % 9) as i64);
            let px = |c: i64| Price(c * 1_000_000);
            bids.push(Level {
                price: px(mid - (k + 1) * bucket * 50),
                qty: if k % 17 == 5 {
                    Qty::from_units(60)
                } else {
                    q(rng)
                },
            });
            asks.push(Level {
                price: px(mid + (k + 1) * bucket * 50),
                qty: q(rng),
            });
        }
        book.apply_snapshot(&bids, &asks, s as u64 + 1);
        let trades = [
            (Qty::from_units(1), Side::Buy),
            (Qty::from_units(2), Side::Sell),
        ];
        cob = engine
            .compute_flow(&book, trades, NOW_MS - (239 - s) * 1000)
            .ok();
    }
    let heatmap: Vec<_> = engine.heatmap().rows().cloned().collect();
    let best_bid = book.best_bid();
    let best_ask = book.best_ask();
    SymbolView {
        display: display.into(),
        exchange: exchange.into(),
        status: BookStatus::Live,
        best_bid,
        best_ask,
        bids: book.top(Side::Buy, 20),
        asks: book.top(Side::Sell, 20),
        bid_levels: book.depth(Side::Buy),
        ask_levels: book.depth(Side::Sell),
        last_trade: Some(Trade {
            symbol: exchange.into(),
            id: 41_230,
            time_ms: NOW_MS - 150,
            price: last_close,
            qty: Qty::parse("0.25").expect("qty"),
            taker_side: Side::Buy,
        }),
        trades: 41_230,
        book: BookCounters {
            applied: 18_304,
            dropped: 3,
            gaps: 0,
            resyncs: 1,
        },
        candles: candle_sets,
        cob: cob.map(Arc::new),
        pivots,
        heatmap: Arc::new(heatmap),
        instrument: None,
        agg_cob: None,
    }
}

/// A snapshot with two live symbols, full candle history, pivots, COB and heatmap.
pub fn market() -> MarketSnapshot {
    let mut rng = Mix(7);
    let mut ws = StreamHealth::new("exchange ws", 5_000);
    ws.state = LinkState::Connected;
    ws.connects = 1;
    ws.on_message(NOW_MS - 40);
    let mut links = vec![ws];
    for name in ["ETHUSDT depth", "BTCUSDT depth"] {
        let mut h = StreamHealth::new(name, 5_000);
        h.state = LinkState::Connected;
        h.connects = 1;
        h.on_message(NOW_MS - 90);
        links.push(h);
    }
    MarketSnapshot {
        time_ms: NOW_MS,
        source: "sim 127.0.0.1:9443".into(),
        feed_running: true,
        links,
        symbols: vec![
            symbol(&mut rng, "ETH/USDT", "ETHUSDT", 3000, 1),
            symbol(&mut rng, "BTC/USDT", "BTCUSDT", 43_000, 10),
        ],
        venues: Vec::new(),
    }
}

/// `n` log lines cycling through every level.
pub fn logs(n: usize) -> Vec<LogLine> {
    let levels = [
        tracing::Level::INFO,
        tracing::Level::DEBUG,
        tracing::Level::WARN,
        tracing::Level::INFO,
        tracing::Level::ERROR,
    ];
    (0..n)
        .map(|i| LogLine {
            time_ms: NOW_MS - (n - i) as i64 * 700,
            level: levels[i % levels.len()],
            target: "mmtrader".into(),
            message: format!(
                "event {i}: {} book synced",
                if i % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" }
            ),
        })
        .collect()
}

/// The orchestrator's and risk manager's live parameters as a running desk publishes them.
pub fn tunables() -> Vec<Tunable> {
    let t = |key: &str, label: &str, value: f64, step: f64, min: f64, max: f64| Tunable {
        key: key.into(),
        label: label.into(),
        value,
        step,
        min,
        max,
        decimals: 2,
    };
    vec![
        t("buy_threshold", "buy ≥", 0.60, 0.05, 0.0, 1.0),
        t("sell_threshold", "sell ≥", 0.65, 0.05, 0.0, 1.0),
        t("min_confidence", "conf ≥", 0.50, 0.05, 0.0, 1.0),
        t("risk_per_trade_pct", "risk %", 0.50, 0.10, 0.1, 5.0),
    ]
}

/// Models, a decision and accuracy history as the inference process publishes them.
pub fn models() -> ModelsView {
    use crate::analysis::model_output::Action as A;
    ModelsView {
        inference: true,
        training: true,
        device: "cpu".into(),
        experts: vec![
            ExpertRow {
                name: "cnn".into(),
                action: A::Buy,
                confidence: 0.72,
                probabilities: Some([0.72, 0.08, 0.20]),
                q_values: None,
                time_ms: NOW_MS - 400,
                latency_ms: Some(1.2),
                checkpoint: Some("cnn-0007 acc 0.61".into()),
                flagged: None,
                weight: Some(0.45),
            },
            ExpertRow {
                name: "rl".into(),
                action: A::Hold,
                confidence: 0.55,
                probabilities: None,
                q_values: Some([0.12, -0.03, 0.20]),
                time_ms: NOW_MS - 400,
                latency_ms: Some(0.4),
                checkpoint: Some("rl-0003 sharpe 1.10".into()),
                flagged: None,
                weight: Some(0.35),
            },
            ExpertRow {
                name: "trend".into(),
                action: A::Sell,
                confidence: 0.60,
                probabilities: None,
                q_values: None,
                time_ms: NOW_MS - 1_400,
                latency_ms: None,
                checkpoint: None,
                flagged: Some("late 1.4 s".into()),
                weight: Some(0.20),
            },
        ],
        decision: Some(DecisionView {
            symbol: "ETHUSDT".into(),
            action: A::Buy,
            confidence: 0.66,
            reason: "buy 0.66 ≥ 0.60".into(),
            time_ms: NOW_MS - 400,
        }),
        accuracy: vec![
            ("cnn".into(), vec![0.50, 0.52, 0.55, 0.58, 0.61, 0.60, 0.61]),
            ("rl".into(), vec![0.48, 0.50, 0.51, 0.53, 0.54, 0.54, 0.55]),
        ],
        training_steps: 1_240,
        last_loss: Some(0.0213),
        dqn_training_steps: 0,
        dqn_last_loss: None,
    }
}

/// A paper account with one position, a stop order and limit usage.
pub fn trading() -> TradingView {
    let p = |s: &str| Price::parse(s).expect("price");
    let q = |s: &str| Qty::parse(s).expect("qty");
    TradingView {
        mode: "paper".into(),
        running: true,
        positions: vec![PositionRow {
            symbol: "ETHUSDT".into(),
            side: Side::Buy,
            qty: q("0.5"),
            entry: p("3012.40"),
            unrealized: Some(p("3.10")),
            stop: Some(p("2980.00")),
            take_profit: Some(p("3100.00")),
            exits_by_desk: false,
            mark: Some(p("3018.60")),
            price_decimals: 2,
        }],
        orders: vec![OrderRow {
            symbol: "ETHUSDT".into(),
            side: Side::Sell,
            kind: "stop".into(),
            qty: q("0.5"),
            filled: Qty::ZERO,
            price: Some(p("2980.00")),
            price_decimals: 2,
        }],
        realized: p("12.34"),
        unrealized: p("3.10"),
        equity: p("10015.44"),
        fills: 4,
        limits: vec![
            LimitUsage {
                name: "position ETHUSDT".into(),
                used: 0.5,
                text: "0.5 / 1 ETH".into(),
            },
            LimitUsage {
                name: "leverage".into(),
                used: 0.15,
                text: "0.15 / 1.00".into(),
            },
            LimitUsage {
                name: "daily loss".into(),
                used: 0.0,
                text: "0 / 200 USDT".into(),
            },
        ],
        halted: None,
        flatten: None,
    }
}

/// The CNN's predicted next pivots for ETH on 1 m: a level-1 and a level-2 swing a few
/// candles ahead of the newest one.
pub fn predictions(snap: &MarketSnapshot) -> Vec<(String, Vec<PredictedPivot>)> {
    let eth = &snap.symbols[0];
    let candles = eth.candles(Timeframe::M1);
    let Some(last) = candles.last() else {
        return vec![(eth.exchange.clone(), Vec::new())];
    };
    let p = |level: u8, kind: SwingKind, offset: i64, ahead: i64| PredictedPivot {
        timeframe: Timeframe::M1,
        level,
        kind,
        price: last.close + Price::from_units(offset),
        time_ms: last.open_time_ms + ahead * 60_000,
        confidence: 0.6,
    };
    vec![(
        eth.exchange.clone(),
        vec![p(1, SwingKind::High, 4, 3), p(2, SwingKind::Low, -6, 8)],
    )]
}

/// Draws with `draw` on a `w`×`h` test terminal and returns the screen's text, one line per
/// row with trailing blanks trimmed (for render tests).
pub fn render_text(w: u16, h: u16, draw: impl FnOnce(&mut ratatui::Frame)) -> String {
    let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(w, h))
        .expect("a test backend cannot fail");
    term.draw(draw).expect("a test backend cannot fail");
    let buf = term.backend().buffer();
    (0..h)
        .map(|y| {
            let line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
            line.trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
