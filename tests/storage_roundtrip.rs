//! Any sequence of connector events written to the store reads back identical and in order,
//! across datasets, symbols, days and file rotations.

use std::time::Duration;

use mmtrader::feeds::binance::connector::FeedEvent;
use mmtrader::feeds::binance::wire::{BinanceEvent, DepthSnapshot, DepthUpdate};
use mmtrader::market::types::{Candle, Level, Price, Qty, Side, Timeframe, Trade};
use mmtrader::storage::market::{EventFilter, MarketWriter, StoredEvent, read_events};
use mmtrader::storage::{Compression, StorageConfig};
use proptest::prelude::*;

const SYMBOLS: [&str; 2] = ["ETHUSDT", "BTCUSDT"];

fn levels() -> impl Strategy<Value = Vec<Level>> {
    prop::collection::vec(
        (1i64..1_000_000_000_000, 0i64..1_000_000_000_000).prop_map(|(p, q)| Level {
            price: Price(p),
            qty: Qty(q),
        }),
        0..5,
    )
}

fn trade() -> impl Strategy<Value = Trade> {
    (
        0usize..2,
        any::<u64>(),
        any::<i64>(),
        1i64..i64::MAX,
        1i64..i64::MAX,
        any::<bool>(),
    )
        .prop_map(|(s, id, t, p, q, buy)| Trade {
            symbol: SYMBOLS[s].into(),
            id,
            time_ms: t,
            price: Price(p),
            qty: Qty(q),
            taker_side: if buy { Side::Buy } else { Side::Sell },
        })
}

/// A generated event (`FeedEvent` is not `Clone`, which proptest needs).
#[derive(Debug, Clone)]
enum Ev {
    Second,
    Connected(u64),
    Disconnected(String, u64),
    Depth(DepthUpdate),
    Snapshot(String, DepthSnapshot),
    Agg(Trade),
    Trade(Trade),
    Recovered(String, Vec<Trade>, bool),
    History(String, Timeframe, Vec<Candle>),
    Rest(String, String),
    Malformed(Option<String>),
}

impl Ev {
    /// The connector event; `None` is a once-a-second step.
    fn feed(&self) -> Option<FeedEvent> {
        Some(match self.clone() {
            Ev::Second => return None,
            Ev::Connected(connects) => FeedEvent::Connected { connects },
            Ev::Disconnected(reason, ms) => FeedEvent::Disconnected {
                reason,
                retry_in: Duration::from_millis(ms),
            },
            Ev::Depth(d) => FeedEvent::Market(BinanceEvent::Depth(d)),
            Ev::Snapshot(symbol, snapshot) => FeedEvent::Snapshot { symbol, snapshot },
            Ev::Agg(t) => FeedEvent::Market(BinanceEvent::AggTrade(t)),
            Ev::Trade(t) => FeedEvent::Market(BinanceEvent::Trade(t)),
            Ev::Recovered(symbol, trades, complete) => FeedEvent::RecoveredTrades {
                symbol,
                trades,
                complete,
            },
            Ev::History(symbol, timeframe, candles) => FeedEvent::History {
                symbol,
                timeframe,
                candles,
            },
            Ev::Rest(what, error) => FeedEvent::RestFailed { what, error },
            Ev::Malformed(log) => FeedEvent::Malformed { kind: "json", log },
        })
    }
}

fn event() -> impl Strategy<Value = Ev> {
    let sym = (0usize..2).prop_map(|s| SYMBOLS[s].to_string());
    prop_oneof![
        Just(Ev::Second),
        any::<u64>().prop_map(Ev::Connected),
        ("[a-z ]{0,12}", 0u64..100_000).prop_map(|(r, ms)| Ev::Disconnected(r, ms)),
        (
            sym.clone(),
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            levels(),
            levels()
        )
            .prop_map(
                |(symbol, e, t, u1, u2, pu, bids, asks)| Ev::Depth(DepthUpdate {
                    symbol,
                    event_time_ms: e,
                    transaction_time_ms: t,
                    first_update_id: u1,
                    final_update_id: u2,
                    prev_final_update_id: pu,
                    bids,
                    asks,
                })
            ),
        (sym.clone(), any::<u64>(), levels(), levels()).prop_map(|(symbol, id, bids, asks)| {
            Ev::Snapshot(
                symbol,
                DepthSnapshot {
                    last_update_id: id,
                    event_time_ms: None,
                    transaction_time_ms: None,
                    bids,
                    asks,
                },
            )
        }),
        trade().prop_map(Ev::Agg),
        trade().prop_map(Ev::Trade),
        (
            sym.clone(),
            prop::collection::vec(trade(), 0..4),
            any::<bool>()
        )
            .prop_map(|(symbol, trades, complete)| {
                let trades = trades
                    .into_iter()
                    .map(|t| Trade {
                        symbol: symbol.clone(),
                        ..t
                    })
                    .collect();
                Ev::Recovered(symbol, trades, complete)
            }),
        (
            sym.clone(),
            0usize..4,
            prop::collection::vec((any::<i64>(), 1i64..i64::MAX, any::<u64>()), 0..4)
        )
            .prop_map(|(symbol, tf, rows)| Ev::History(
                symbol,
                Timeframe::ALL[tf],
                rows.into_iter()
                    .map(|(t, p, n)| Candle {
                        open_time_ms: t,
                        open: Price(p),
                        high: Price(p),
                        low: Price(p),
                        close: Price(p),
                        volume: Qty(p / 3),
                        trades: n,
                    })
                    .collect(),
            )),
        ("[a-z]{0,8}", "[ -~]{0,20}").prop_map(|(what, error)| Ev::Rest(what, error)),
        proptest::option::of("[ -~]{0,20}").prop_map(Ev::Malformed),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn events_round_trip_in_order(
        evs in prop::collection::vec((0i64..400_000_000, event()), 1..60),
        rows_per_file in 1usize..20,
        zstd in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageConfig {
            max_rows_per_file: rows_per_file,
            compression: if zstd { Compression::Zstd } else { Compression::Snappy },
            flush_secs: 3600,
            ..StorageConfig::default()
        };
        // Receive times climb across several UTC days.
        let mut t = 1_795_392_000_000i64;
        let mut expected = Vec::new();
        {
            let (mut w, _) = MarketWriter::open(dir.path(), &cfg, 5).unwrap();
            for (dt, ev) in &evs {
                t += dt;
                let ev = ev.feed();
                match &ev {
                    Some(ev) => w.record(t, ev).unwrap(),
                    None => w.record_second(t).unwrap(),
                }
                expected.push(match ev {
                    Some(ev) => format!("{t} {ev:?}"),
                    None => format!("{t} second"),
                });
            }
            w.close().unwrap();
        }
        let got: Vec<String> = read_events(dir.path(), &EventFilter::default())
            .unwrap()
            .into_iter()
            .map(|e| match e.event {
                StoredEvent::Feed(ev) => format!("{} {ev:?}", e.recv_ms),
                StoredEvent::Second => format!("{} second", e.recv_ms),
                StoredEvent::Note(n) => format!("{} note {n}", e.recv_ms),
            })
            .collect();
        prop_assert_eq!(got, expected);
    }
}
