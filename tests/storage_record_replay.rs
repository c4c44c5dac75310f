//! Record from the built-in simulator, replay from the store as fast as possible, and the
//! rebuilt books and candles equal the ones the live run ended with.

use std::time::Duration;

use mmtrader::app::pipeline::MarketTaskState;
use mmtrader::app::record::record_session;
use mmtrader::app::replay::{ReplaySpeed, replay_store, summarize};
use mmtrader::config::Config;
use mmtrader::market::types::{Candle, Timeframe};
use mmtrader::storage::columns::Dataset;
use mmtrader::storage::market::{
    EventFilter, MarketWriter, dataset_files, read_candles, read_events,
};

fn candles(state: &MarketTaskState, symbol: &str, tf: Timeframe) -> Vec<Candle> {
    state
        .market(symbol)
        .unwrap()
        .candles()
        .series(tf)
        .candles()
        .cloned()
        .collect()
}

#[test]
fn replay_rebuilds_the_live_books_and_candles() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.sim.bind = "127.0.0.1:0".into();
    // Files close every second, so the recording spans several part files per partition.
    config.storage.flush_secs = 1;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (live, stats) = rt.block_on(async {
        let (endpoints, sim) = mmtrader::app::endpoints(&config).await.unwrap();
        let (mut writer, recovery) = MarketWriter::open(dir.path(), &config.storage, 1).unwrap();
        assert!(recovery.recovered.is_empty() && recovery.broken.is_empty());
        let state = record_session(
            &config,
            &endpoints,
            &mut writer,
            tokio::time::sleep(Duration::from_secs(5)),
            |_, _| {},
        )
        .await
        .unwrap();
        let stats = writer.close().unwrap();
        if let Some(sim) = sim {
            sim.shutdown().await;
        }
        (state, stats)
    });
    assert!(stats.events > 50, "{stats:?}");
    assert!(stats.files >= 3, "{stats:?}");

    let (replayed, summary) = replay_store(
        &config,
        dir.path(),
        &EventFilter::default(),
        ReplaySpeed::Max,
    )
    .unwrap();
    assert!(summary.counts.diffs > 10, "{summary}");
    assert!(summary.counts.snapshots >= 2, "{summary}");
    assert!(summary.counts.trades > 0, "{summary}");
    assert!(summary.counts.history_pages > 0, "{summary}");
    assert!(summary.counts.seconds >= 3, "{summary}");

    let now = summary.span.unwrap().1;
    let live_view = summarize(&live, now);
    assert_eq!(live_view, summary.symbols, "{summary}");
    let a = live.snapshot(now, true);
    let b = replayed.snapshot(now, true);
    for (x, y) in a.symbols.iter().zip(&b.symbols) {
        assert!(
            x.bid_levels > 0 && x.ask_levels > 0,
            "live book of {} empty",
            x.exchange
        );
        assert!(
            x.book.applied > 0,
            "no diff applied live for {}",
            x.exchange
        );
        assert_eq!(x.bids, y.bids, "{}", x.exchange);
        assert_eq!(x.asks, y.asks, "{}", x.exchange);
        assert_eq!(x.best_bid, y.best_bid);
        assert_eq!(x.best_ask, y.best_ask);
        assert_eq!(x.last_trade, y.last_trade);
        assert_eq!(x.trades, y.trades);
        assert_eq!(x.book, y.book);
        for tf in Timeframe::ALL {
            let live_c = candles(&live, &x.exchange, tf);
            assert!(!live_c.is_empty(), "{} {tf}", x.exchange);
            assert_eq!(
                live_c,
                candles(&replayed, &x.exchange, tf),
                "{} {tf}",
                x.exchange
            );
        }
        let top = x.bids.first().unwrap();
        assert_eq!(Some(*top), x.best_bid);
    }

    // Recorded history pages serve the training/backtest reader, newest page winning.
    let m1 = read_candles(dir.path(), "ETHUSDT", Timeframe::M1, 0, i64::MAX).unwrap();
    assert!(!m1.is_empty());
    assert!(m1.windows(2).all(|w| w[0].open_time_ms < w[1].open_time_ms));

    // A symbol filter replays only that symbol's market data.
    let eth = read_events(
        dir.path(),
        &EventFilter {
            symbols: vec!["ETHUSDT".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let all = read_events(dir.path(), &EventFilter::default()).unwrap();
    assert!(!eth.is_empty() && eth.len() < all.len());

    // The layout is hive-style and every visible file is complete.
    let files = dataset_files(dir.path(), Dataset::Book, Some("ETHUSDT"), None, None).unwrap();
    assert!(files.len() >= 2);
    for f in &files {
        let s = f.display().to_string();
        assert!(s.contains("/market/book/symbol=ETHUSDT/date="), "{s}");
        assert!(s.ends_with(".parquet"), "{s}");
    }
}
