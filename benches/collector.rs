//! Collector throughput against servers the bench starts itself: batched binary-COPY inserts
//! into PostgreSQL (new rows every batch: one batch, many batches back to back, the idempotent
//! staging path a retry takes, and the whole database sink) and pipelined XADD publishing to
//! Redis. `MMTRADER_BENCH_PG_URL` points the PostgreSQL benches at a server of your own (for
//! example one with `fsync = on` to see the cost of durable commits); it must be empty.

#[path = "../tests/common/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::collector::db_sink::{DbSink, DbSinkConfig};
use mmtrader::collector::metrics::Metrics;
use mmtrader::collector::pg::{PgWriter, Row, WriteMode};
use mmtrader::collector::record::{MarketRecord, RecordBody};
use mmtrader::collector::redis_sink::{Publisher, connect};
use mmtrader::market::types::{Price, Qty, Side, Trade};

const PG_BATCH: i64 = 10_000;
const REDIS_EVENTS: usize = 10_000;
/// Commands per pipeline round trip, as the collector's Redis sink sends them.
const PIPELINE: usize = 2_000;

fn trade_row(id: i64) -> Row {
    Row::Trade {
        exchange: "binance".into(),
        symbol: if id % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" }.into(),
        id,
        time_ms: 1_763_856_000_000 + id,
        price_e8: 250_000_000_000 + id % 10_000,
        qty_e8: 1 + id % 997,
        taker_buy: id % 3 == 0,
    }
}

/// Batches written back to back per iteration of the sustained benches.
const SUSTAINED_BATCHES: i64 = 20;

fn bench_pg(c: &mut Criterion) {
    let own = std::env::var("MMTRADER_BENCH_PG_URL").ok();
    let pg = own.is_none().then(servers::PgServer::start);
    let url = own.unwrap_or_else(|| pg.as_ref().map(|p| p.url()).unwrap_or_default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut writer = PgWriter::new(url.clone(), Duration::from_secs(5), 7);
    // Trade ids keep growing across benches so every row is new to the table.
    let mut next = 0i64;
    let mut take = |n: i64| {
        let rows: Vec<Row> = (next..next + n).map(trade_row).collect();
        next += n;
        rows
    };
    let mut g = c.benchmark_group("collector_pg");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PG_BATCH as u64));
    g.bench_function("copy_insert_10k_trades", |b| {
        b.iter_batched(
            || take(PG_BATCH),
            |rows| {
                let n = rt.block_on(writer.write(&rows)).expect("write");
                assert_eq!(n, PG_BATCH as u64);
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("staged_insert_10k_trades", |b| {
        b.iter_batched(
            || take(PG_BATCH),
            |rows| {
                let n = rt
                    .block_on(writer.write_with(&rows, WriteMode::Idempotent))
                    .expect("write");
                assert_eq!(n, PG_BATCH as u64);
            },
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements((PG_BATCH * SUSTAINED_BATCHES) as u64));
    g.bench_function("copy_insert_sustained_200k_trades", |b| {
        b.iter_batched(
            || {
                (0..SUSTAINED_BATCHES)
                    .map(|_| take(PG_BATCH))
                    .collect::<Vec<_>>()
            },
            |batches| {
                rt.block_on(async {
                    for rows in &batches {
                        let n = writer.write(rows).await.expect("write");
                        assert_eq!(n, PG_BATCH as u64);
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    assert_eq!(writer.duplicate_fallbacks(), 0);
    // The collector's whole write path: channel, batching (the default 5,000 rows), buffer
    // and writer, timed from the first row sent until the sink has stored the last one.
    let spill = tempfile::tempdir().unwrap();
    g.bench_function("db_sink_sustained_200k_trades", |b| {
        b.iter_batched(
            || take(PG_BATCH * SUSTAINED_BATCHES),
            |rows| {
                rt.block_on(async {
                    let sink = DbSink::spawn(
                        DbSinkConfig {
                            database_url: url.clone(),
                            batch_rows: 5_000,
                            flush_interval: Duration::from_millis(500),
                            buffer_rows: 1_000_000,
                            spill_dir: spill.path().to_path_buf(),
                            connect_timeout: Duration::from_secs(5),
                            compress_after_days: 7,
                            shutdown_grace: Duration::from_secs(60),
                        },
                        Arc::new(Metrics::new()),
                    )
                    .expect("sink");
                    let tx = sink.sender();
                    for row in rows {
                        tx.send(row).expect("send");
                    }
                    drop(tx);
                    let report = sink.shutdown().await.expect("shutdown");
                    assert_eq!(report.rows_written, (PG_BATCH * SUSTAINED_BATCHES) as u64);
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    drop(pg);
}

fn bench_redis(c: &mut Criterion) {
    let redis = servers::RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let conn = rt
        .block_on(connect(&redis.url(), Duration::from_secs(5)))
        .unwrap();
    let mut publisher = Publisher::new(conn, "bench", 100_000);
    let exchange: Arc<str> = Arc::from("binance");
    let records: Vec<MarketRecord> = (0..REDIS_EVENTS as u64)
        .map(|i| MarketRecord {
            exchange: exchange.clone(),
            body: RecordBody::Trade(Trade {
                symbol: if i % 2 == 0 { "ETHUSDT" } else { "BTCUSDT" }.into(),
                id: i,
                time_ms: 1_763_856_000_000 + i as i64,
                price: Price(250_000_000_000 + i as i64),
                qty: Qty(100_000 + i as i64),
                taker_side: if i % 3 == 0 { Side::Buy } else { Side::Sell },
            }),
        })
        .collect();
    let mut g = c.benchmark_group("collector_redis");
    g.throughput(Throughput::Elements(REDIS_EVENTS as u64));
    g.sample_size(20);
    g.bench_function("xadd_pipelined_10k_trades", |b| {
        b.iter(|| {
            rt.block_on(async {
                for chunk in records.chunks(PIPELINE) {
                    publisher.publish(chunk).await.expect("publish");
                }
            })
        })
    });
    g.finish();
    drop(redis);
}

criterion_group!(benches, bench_pg, bench_redis);
criterion_main!(benches);
