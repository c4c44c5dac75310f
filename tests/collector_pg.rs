//! The database sink against a real PostgreSQL: batched binary COPY, native partitions, exact
//! values, and no loss or duplication when the server is stopped mid-stream and restarted.

#[path = "common/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use mmtrader::collector::db_sink::{DbSink, DbSinkConfig};
use mmtrader::collector::metrics::Metrics;
use mmtrader::collector::pg::{PgWriter, Row, connect};
use mmtrader::collector::schema::Layout;
use servers::PgServer;

fn trade(id: i64) -> Row {
    Row::Trade {
        exchange: "sim".into(),
        symbol: if id % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" }.into(),
        id,
        // Spread over three UTC days so several partitions are used.
        time_ms: 1_763_856_000_000 + id * 9_000,
        price_e8: 250_000_000_000 + id,
        qty_e8: 1 + id % 1000,
        taker_buy: id % 3 == 0,
    }
}

fn sink_config(url: String, spill: &std::path::Path) -> DbSinkConfig {
    DbSinkConfig {
        database_url: url,
        batch_rows: 250,
        flush_interval: Duration::from_millis(50),
        buffer_rows: 1_000,
        spill_dir: spill.to_path_buf(),
        connect_timeout: Duration::from_millis(500),
        compress_after_days: 7,
        shutdown_grace: Duration::from_secs(60),
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let c = connect(url, Duration::from_secs(5)).await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_exactly_once_across_a_database_outage() {
    let mut pg = PgServer::start();
    let url = pg.url();
    let spill = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let sink = DbSink::spawn(sink_config(url.clone(), spill.path()), metrics.clone()).unwrap();
    let tx = sink.sender();
    const N: i64 = 20_000;
    let send = |from: i64, to: i64| {
        for id in from..to {
            tx.send(trade(id)).unwrap();
        }
    };

    send(0, 5_000);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pg_stop = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    });
    let mut pg = pg_stop.await.unwrap();
    // The database is down: everything sent now waits in memory, then on disk.
    for chunk in 0..10 {
        send(5_000 + chunk * 1_000, 6_000 + chunk * 1_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.db_spilled_rows.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing spilled while the database was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.db_errors.get() > 0);
    assert_eq!(metrics.db_up.get(), 0);
    let spilled_files = std::fs::read_dir(spill.path()).unwrap().count();
    assert!(spilled_files > 0);

    let pg_start = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    });
    let pg = pg_start.await.unwrap();
    send(15_000, N);
    // A replayed stretch (a reconnect re-delivering trades) must not duplicate rows.
    send(4_000, 6_000);
    drop(tx);
    let report = sink.shutdown().await.unwrap();
    assert_eq!(report.rows_spilled, 0, "{report:?}");
    assert_eq!(report.rows_written, N as u64, "{report:?}");

    assert_eq!(count(&url, "SELECT count(*) FROM trades").await, N);
    assert_eq!(
        count(&url, "SELECT count(DISTINCT (symbol, id)) FROM trades").await,
        N
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM trades WHERE price_e8 - id <> 250000000000"
        )
        .await,
        0
    );
    assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    assert_eq!(metrics.db_up.get(), 1);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_written_exactly_into_daily_partitions() {
    let pg = PgServer::start();
    let url = pg.url();
    let mut w = PgWriter::new(url.clone(), Duration::from_secs(5), 7);
    let day = 86_400_000;
    let t0 = 1_763_856_000_000; // 2025-11-23 00:00 UTC
    let rows = vec![
        trade(1),
        Row::Candle {
            exchange: "sim".into(),
            symbol: "ETHUSDT".into(),
            timeframe: "1m".into(),
            open_time_ms: t0 + day,
            ohlc_e8: [100, 300, 50, 200],
            volume_e8: 123_456_789,
            trades: 4,
        },
        Row::BookTop {
            exchange: "sim".into(),
            symbol: "ETHUSDT".into(),
            time_ms: t0,
            bid_e8: Some((99, 1)),
            ask_e8: None,
        },
        Row::Cob {
            exchange: "sim".into(),
            symbol: "ETHUSDT".into(),
            time_ms: t0 + 2 * day,
            mid_e8: 10_000,
            cob: serde_json::json!({"buckets": [1, 2, 3]}),
        },
    ];
    assert_eq!(w.write(&rows).await.unwrap(), 4);
    assert_eq!(w.layout(), Some(Layout::Native));
    assert_eq!(w.duplicate_fallbacks(), 0);
    // The same batch again (a retry after a lost acknowledgement) adds nothing: the direct
    // COPY meets the stored keys and the batch goes through the idempotent path instead.
    assert_eq!(w.write(&rows).await.unwrap(), 0);
    assert_eq!(w.duplicate_fallbacks(), 1);

    let c = connect(&url, Duration::from_secs(5)).await.unwrap();
    let r = c
        .query_one(
            "SELECT open_e8, high_e8, low_e8, close_e8, volume_e8, trades, \
             (extract(epoch FROM open_time) * 1000)::bigint FROM candles",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<i64> = (0..7).map(|i| r.get(i)).collect();
    assert_eq!(got, vec![100, 300, 50, 200, 123_456_789, 4, t0 + day]);
    let r = c
        .query_one("SELECT bid_price_e8, ask_price_e8 FROM book_top", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)),
        (Some(99), None)
    );
    let r = c
        .query_one("SELECT cob->'buckets'->>2 FROM cob_snapshots", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "3");
    let parts: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(parts.contains(&"trades_p20251123".to_string()), "{parts:?}");
    assert!(
        parts.contains(&"candles_p20251124".to_string()),
        "{parts:?}"
    );
    assert!(
        parts.contains(&"cob_snapshots_p20251125".to_string()),
        "{parts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_with_stored_keys_add_only_their_new_rows() {
    let mut pg = PgServer::start();
    let url = pg.url();
    let mut w = PgWriter::new(url.clone(), Duration::from_millis(500), 7);
    let first: Vec<Row> = (0..100).map(trade).collect();
    assert_eq!(w.write(&first).await.unwrap(), 100);
    assert_eq!(w.duplicate_fallbacks(), 0);

    // Half stored, half new, and one new row twice in the batch itself.
    let mut mixed: Vec<Row> = (50..150).map(trade).collect();
    mixed.push(trade(149));
    assert_eq!(w.write(&mixed).await.unwrap(), 50);
    assert_eq!(w.duplicate_fallbacks(), 1);

    // A write that fails (the server is gone) is retried on the idempotent path straight
    // away, so a retried batch whose keys are partly stored costs no failed direct attempt.
    let retried: Vec<Row> = (100..250).map(trade).collect();
    pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    assert!(w.write(&retried).await.is_err());
    assert!(!w.is_connected());
    pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    assert_eq!(w.write(&retried).await.unwrap(), 100);
    assert_eq!(w.duplicate_fallbacks(), 1);
    // Back on the direct path once a write succeeded: a stored key falls back again.
    let mut next: Vec<Row> = (250..300).map(trade).collect();
    next.push(trade(0));
    assert_eq!(w.write(&next).await.unwrap(), 50);
    assert_eq!(w.duplicate_fallbacks(), 2);

    assert_eq!(count(&url, "SELECT count(*) FROM trades").await, 300);
    assert_eq!(
        count(&url, "SELECT count(DISTINCT (symbol, id)) FROM trades").await,
        300
    );
    drop(pg);
}
