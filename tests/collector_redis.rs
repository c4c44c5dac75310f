//! Collector → Redis → consumer against a real Redis: the consumer yields exactly the trades,
//! depth diffs and candles that were published, serves book snapshots from the latest image,
//! and answers candle backfill and trade recovery from the streams.

#[path = "common/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use mmtrader::collector::consumer::{self, ConsumerConfig};
use mmtrader::collector::metrics::Metrics;
use mmtrader::collector::record::{BookImage, CandleRecord, DepthRecord, MarketRecord, RecordBody};
use mmtrader::collector::redis_sink::{RedisSink, RedisSinkConfig};
use mmtrader::feeds::binance::connector::{FeedCommand, FeedEvent, TradeCursor};
use mmtrader::feeds::binance::wire::BinanceEvent;
use mmtrader::market::types::{Candle, Level, Price, Qty, Side, Timeframe, Trade};
use servers::RedisServer;
use tokio::sync::mpsc;

const SYMBOLS: [&str; 2] = ["ETHUSDT", "BTCUSDT"];

fn trade(i: u64) -> Trade {
    Trade {
        symbol: SYMBOLS[(i % 2) as usize].into(),
        id: 1_000 + i,
        time_ms: 1_763_856_000_000 + i as i64,
        price: Price(250_000_000_000 + i as i64 * 7),
        qty: Qty(100_000 + i as i64),
        taker_side: if i.is_multiple_of(3) {
            Side::Buy
        } else {
            Side::Sell
        },
    }
}

fn candle(i: i64) -> CandleRecord {
    CandleRecord {
        symbol: "ETHUSDT".into(),
        timeframe: if i % 2 == 0 {
            Timeframe::S1
        } else {
            Timeframe::M1
        },
        candle: Candle {
            open_time_ms: 1_763_856_000_000 + i * 60_000,
            open: Price::from_units(10 + i),
            high: Price::from_units(12 + i),
            low: Price::from_units(9 + i),
            close: Price::parse("11.12345678").unwrap(),
            volume: Qty::parse("3.5").unwrap(),
            trades: i as u64,
        },
    }
}

fn rec(body: RecordBody) -> MarketRecord {
    MarketRecord {
        exchange: Arc::from("sim"),
        body,
    }
}

async fn next_event(rx: &mut mpsc::Receiver<FeedEvent>) -> FeedEvent {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no event from the consumer within 20 s")
        .expect("consumer stopped")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_yields_what_the_collector_published() {
    let redis = RedisServer::start();
    let metrics = Arc::new(Metrics::new());
    let sink = RedisSink::spawn(
        RedisSinkConfig {
            url: redis.url(),
            key_prefix: "mmt".into(),
            stream_maxlen: 100_000,
            buffer: 100_000,
            connect_timeout: Duration::from_secs(2),
        },
        metrics.clone(),
    );
    let tx = sink.sender();
    // History published before the consumer starts: served on request, not replayed live.
    for i in 0..4 {
        tx.send(rec(RecordBody::Candle(candle(i)))).unwrap();
    }
    tx.send(rec(RecordBody::Trade(trade(0)))).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.redis_published.get() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (ev_tx, mut ev_rx) = mpsc::channel(100_000);
    let handle = consumer::spawn(
        ConsumerConfig {
            url: redis.url(),
            key_prefix: "mmt".into(),
            exchange: "sim".into(),
            symbols: SYMBOLS.iter().map(|s| s.to_string()).collect(),
            connect_timeout: Duration::from_secs(2),
        },
        ev_tx,
    );
    assert!(matches!(
        next_event(&mut ev_rx).await,
        FeedEvent::Connected { connects: 1 }
    ));

    let trades: Vec<Trade> = (1..=3_000).map(trade).collect();
    let diff = DepthRecord {
        symbol: "ETHUSDT".into(),
        event_time_ms: 5,
        first_update_id: 101,
        final_update_id: 103,
        bids: vec![Level {
            price: Price::from_units(2499),
            qty: Qty::ZERO,
        }],
        asks: vec![],
    };
    let live_candle = candle(10);
    for t in &trades {
        tx.send(rec(RecordBody::Trade(t.clone()))).unwrap();
    }
    tx.send(rec(RecordBody::Depth(diff.clone()))).unwrap();
    tx.send(rec(RecordBody::Candle(live_candle.clone())))
        .unwrap();

    let mut got_trades = Vec::new();
    let mut got_diff = None;
    let mut got_candle = None;
    while got_trades.len() < trades.len() || got_diff.is_none() || got_candle.is_none() {
        match next_event(&mut ev_rx).await {
            FeedEvent::Market(BinanceEvent::AggTrade(t)) => got_trades.push(t),
            FeedEvent::Market(BinanceEvent::Depth(d)) => got_diff = Some(d),
            FeedEvent::History {
                symbol,
                timeframe,
                candles,
            } => got_candle = Some((symbol, timeframe, candles)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    // Per symbol the order is the publication order; across symbols streams interleave.
    for sym in SYMBOLS {
        let want: Vec<&Trade> = trades.iter().filter(|t| t.symbol == sym).collect();
        let got: Vec<&Trade> = got_trades.iter().filter(|t| t.symbol == sym).collect();
        assert_eq!(got, want, "{sym}");
    }
    assert_eq!(got_diff.unwrap(), diff.to_update());
    assert_eq!(
        got_candle.unwrap(),
        (
            "ETHUSDT".to_string(),
            live_candle.timeframe,
            vec![live_candle.candle.clone()]
        )
    );

    // Book snapshot: none yet, then from the latest image.
    handle.send(FeedCommand::FetchSnapshot("ETHUSDT".into()));
    assert!(matches!(
        next_event(&mut ev_rx).await,
        FeedEvent::RestFailed { .. }
    ));
    let image = BookImage {
        symbol: "ETHUSDT".into(),
        time_ms: 9,
        last_update_id: 100,
        bids: vec![Level {
            price: Price::from_units(2499),
            qty: Qty::from_units(2),
        }],
        asks: vec![Level {
            price: Price::from_units(2501),
            qty: Qty::from_units(1),
        }],
    };
    tx.send(rec(RecordBody::Book(image.clone()))).unwrap();
    // The consumer asks again by itself until an image exists.
    match next_event(&mut ev_rx).await {
        FeedEvent::Snapshot { symbol, snapshot } => {
            assert_eq!(symbol, "ETHUSDT");
            assert_eq!(snapshot, image.to_snapshot());
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }

    // Backfill of 1 m candles from the candle stream's history.
    handle.send(FeedCommand::Backfill {
        symbol: "ETHUSDT".into(),
        timeframe: Timeframe::M1,
        from_ms: 0,
    });
    match next_event(&mut ev_rx).await {
        FeedEvent::History {
            timeframe, candles, ..
        } => {
            assert_eq!(timeframe, Timeframe::M1);
            let want: Vec<Candle> = [1, 3].iter().map(|&i| candle(i).candle).collect();
            assert_eq!(candles, want);
        }
        other => panic!("expected history, got {other:?}"),
    }

    // Trade recovery by id.
    handle.send(FeedCommand::RecoverTrades {
        symbol: "BTCUSDT".into(),
        from: TradeCursor::Id(trade(2_991).id),
    });
    match next_event(&mut ev_rx).await {
        FeedEvent::RecoveredTrades {
            trades: got,
            complete,
            ..
        } => {
            assert!(complete);
            let want: Vec<Trade> = (2_991..=3_000)
                .map(trade)
                .filter(|t| t.symbol == "BTCUSDT")
                .collect();
            assert_eq!(got, want);
        }
        other => panic!("expected recovered trades, got {other:?}"),
    }

    handle.stop().await;
    drop(tx);
    sink.shutdown().await;
    assert_eq!(metrics.redis_dropped.get(), 0);
}
