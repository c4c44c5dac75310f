//! Collector throughput against servers the bench starts itself: batched binary-COPY inserts
//! into PostgreSQL (new rows every batch, idempotent insert path included) and pipelined XADD
//! publishing to Redis.

#[path = "../tests/common/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::collector::pg::{PgWriter, Row};
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

fn bench_pg(c: &mut Criterion) {
    let pg = servers::PgServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut writer = PgWriter::new(pg.url(), Duration::from_secs(5), 7);
    let mut next = 0i64;
    let mut g = c.benchmark_group("collector_pg");
    g.throughput(Throughput::Elements(PG_BATCH as u64));
    g.sample_size(20);
    g.bench_function("copy_insert_10k_trades", |b| {
        b.iter_batched(
            || {
                let rows: Vec<Row> = (next..next + PG_BATCH).map(trade_row).collect();
                next += PG_BATCH;
                rows
            },
            |rows| {
                let n = rt.block_on(writer.write(&rows)).expect("write");
                assert_eq!(n, PG_BATCH as u64);
            },
            BatchSize::LargeInput,
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
