//! The whole collector against real servers: the simulated exchange → the headless pipeline →
//! PostgreSQL and Redis → the HTTP API and its WebSocket, and a second pipeline whose market
//! data comes from the collector's Redis streams (`[data] source = "redis"`).

#[path = "common/servers.rs"]
mod servers;
mod venues_common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mmtrader::api::server::{ApiState, serve};
use mmtrader::app::pipeline::FeedProcess;
use mmtrader::collector::metrics::Metrics;
use mmtrader::collector::pg::connect;
use mmtrader::collector::service::Collector;
use mmtrader::config::{Config, DataSource};
use mmtrader::logging::now_ms;
use mmtrader::market::snapshot::{BookStatus, MarketSnapshot};
use servers::{PgServer, RedisServer};
use tokio::sync::watch;

async fn wait_for(
    rx: &mut watch::Receiver<Arc<MarketSnapshot>>,
    collector: Option<&mut Collector>,
    what: &str,
    pred: impl Fn(&MarketSnapshot) -> bool,
) -> Arc<MarketSnapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut collector = collector;
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(c) = collector.as_deref_mut() {
            c.on_snapshot(&snap);
        }
        if pred(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            snap.symbols
                .iter()
                .map(|s| (&s.exchange, s.status, s.trades, s.cob.is_some()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_database_redis_api_and_a_redis_fed_workstation() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.data.backfill_frames = 30;
    cfg.collector.database_url = pg.url();
    cfg.collector.redis_url = redis.url();
    cfg.collector.batch_rows = 200;
    cfg.collector.flush_interval_ms = 100;

    let (endpoints, sim) = mmtrader::app::endpoints(&cfg).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut collector =
        Collector::start(&cfg.collector, "sim", data_dir.path(), metrics.clone()).unwrap();
    let (mut feed, mut snaps) = FeedProcess::new(cfg.clone(), endpoints);
    let symbols: Vec<String> = cfg.symbols.iter().map(|s| s.exchange.clone()).collect();
    feed.set_printer(collector.tap(&symbols, cfg.buffers.depth_buffer));
    let api = serve(
        "127.0.0.1:0",
        None,
        "MMTRADER_API_TOKEN",
        ApiState {
            snapshots: snaps.clone(),
            exchange: "sim".into(),
            database_url: Some(pg.url()),
            connect_timeout: Duration::from_secs(2),
            metrics: metrics.clone(),
            live: collector.live(),
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", api.local_addr());
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/stream", api.local_addr()))
            .await
            .unwrap();
    feed.start().unwrap();
    wait_for(
        &mut snaps,
        Some(&mut collector),
        "live books with COB and trades",
        |s| {
            s.symbols.iter().all(|v| {
                v.status == BookStatus::Live
                    && v.cob.is_some()
                    && v.trades > 0
                    && !v.heatmap.is_empty()
            })
        },
    )
    .await;

    // A second pipeline fed only by the collector's Redis streams.
    let mut ws_cfg = cfg.clone();
    ws_cfg.data.source = DataSource::Redis;
    ws_cfg.data.redis_url = redis.url();
    ws_cfg.data.redis_exchange = "sim".into();
    let (ws_endpoints, no_sim) = mmtrader::app::endpoints(&ws_cfg).await.unwrap();
    assert!(no_sim.is_none());
    let (mut station, mut station_snaps) = FeedProcess::new(ws_cfg, ws_endpoints);
    station.start().unwrap();
    // The collector keeps running (and publishing) while the station syncs.
    let collector_task = {
        let mut snaps = snaps.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            let mut station_live = false;
            while !station_live && tokio::time::Instant::now() < deadline {
                let snap = snaps.borrow_and_update().clone();
                collector.on_snapshot(&snap);
                tokio::time::sleep(Duration::from_millis(250)).await;
                station_live = STATION_LIVE.load(std::sync::atomic::Ordering::SeqCst);
            }
            collector
        })
    };
    let station_snap = wait_for(&mut station_snaps, None, "redis-fed books", |s| {
        s.symbols.iter().all(|v| {
            v.status == BookStatus::Live
                && v.trades > 0
                && v.best_bid
                    .zip(v.best_ask)
                    .is_some_and(|(b, a)| b.price < a.price)
        })
    })
    .await;
    STATION_LIVE.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut collector = collector_task.await.unwrap();
    station.stop().await;
    let station_last: Vec<_> = station_snap
        .symbols
        .iter()
        .map(|v| v.last_trade.clone().unwrap())
        .collect();

    // HTTP API over the live collector.
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();
    let cob: serde_json::Value = get("/api/v1/symbols/ETHUSDT/cob")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        cob["buckets"].as_array().is_some_and(|b| !b.is_empty()),
        "{cob}"
    );
    let rows: Vec<serde_json::Value> = get("/api/v1/symbols/BTCUSDT/heatmap?rows=3")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!((1..=3).contains(&rows.len()));
    let status: serde_json::Value = get("/api/v1/status").await.unwrap().json().await.unwrap();
    assert_eq!(status["feed_running"], true);
    assert!(status["links"].as_array().is_some_and(|l| !l.is_empty()));
    let metrics_text = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "mmtrader_messages_total{exchange=\"sim\"}",
        "mmtrader_event_latency_seconds_count{exchange=\"sim\"}",
        "mmtrader_book_resyncs{exchange=\"sim\",symbol=\"ETHUSDT\"}",
        "mmtrader_db_rows_written_total{table=\"trades\"}",
        "mmtrader_redis_published_total",
        "mmtrader_process_resident_memory_bytes",
    ] {
        assert!(
            metrics_text.contains(needle),
            "{needle} missing:\n{metrics_text}"
        );
    }
    let mut saw_trade = false;
    while !saw_trade {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("no live message in 20 s")
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        saw_trade = v["type"] == "trade" && v["exchange"] == "sim";
    }

    // Stop and flush, then compare the database with what the pipeline counted.
    feed.stop().await;
    let final_snap = snaps.borrow().clone();
    collector.on_snapshot(&final_snap);
    let report = collector.shutdown().await.unwrap();
    assert_eq!(report.rows_spilled, 0);
    let db = connect(&pg.url(), Duration::from_secs(5)).await.unwrap();
    for view in &final_snap.symbols {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM trades WHERE exchange = 'sim' AND symbol = $1",
                &[&view.exchange],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as u64, view.trades, "{}", view.exchange);
    }
    // Every trade the Redis-fed station saw is stored, and the API returns it exactly.
    for t in &station_last {
        let url = format!(
            "/api/v1/symbols/{}/trades?from={}&to={}",
            t.symbol,
            t.time_ms,
            t.time_ms + 1
        );
        let got: Vec<serde_json::Value> = get(&url).await.unwrap().json().await.unwrap();
        let found = got
            .iter()
            .find(|g| g["id"] == t.id)
            .unwrap_or_else(|| panic!("{url}: {got:?}"));
        assert_eq!(found["price"], t.price.to_string());
        assert_eq!(found["qty"], t.qty.to_string());
    }
    let candles: Vec<serde_json::Value> = get(&format!(
        "/api/v1/symbols/ETHUSDT/candles?timeframe=1s&from=0&to={}&limit=100000",
        now_ms() + 60_000
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(candles.len() >= 2, "{candles:?}");
    // Redis holds the latest COB, heatmap and book per symbol.
    let mut conn = mmtrader::collector::redis_sink::connect(&redis.url(), Duration::from_secs(2))
        .await
        .unwrap();
    for kind in ["cob", "heatmap", "book"] {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("mmtrader:sim:ETHUSDT:{kind}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            v.is_some_and(|v| v.starts_with('{') || v.starts_with('[')),
            "{kind}"
        );
    }
    api.shutdown().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
}

static STATION_LIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn mmtrader(dir: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mmtrader"));
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("MMTRADER_API_TOKEN");
    cmd.output().expect("mmtrader could not be started")
}

/// Runs `mmtrader collect --duration 6` in `dir` into the given servers; returns its stdout
/// after checking it exited successfully.
async fn collect_six_seconds(pg: &PgServer, redis: &RedisServer, dir: &std::path::Path) -> String {
    let env = vec![
        ("MMTRADER_COLLECTOR__DATABASE_URL", pg.url()),
        ("MMTRADER_COLLECTOR__REDIS_URL", redis.url()),
        ("MMTRADER_API__BIND", "127.0.0.1:0".to_string()),
        ("MMTRADER_DATA__BACKFILL_FRAMES", "10".to_string()),
    ];
    let d = dir.to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || mmtrader(&d, &env, &["collect", "--duration", "6"]))
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collect_command_stores_and_refuses_an_open_bind_without_a_token() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let stdout = collect_six_seconds(&pg, &redis, dir.path()).await;
    assert!(
        stdout.contains("collect: api on http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("0 rows left in spill files"), "{stdout}");
    let db = connect(&pg.url(), Duration::from_secs(5)).await.unwrap();
    let trades: i64 = db
        .query_one("SELECT count(*) FROM trades", &[])
        .await
        .unwrap()
        .get(0);
    let candles: i64 = db
        .query_one("SELECT count(*) FROM candles", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        trades > 0 && candles > 0,
        "trades {trades}, candles {candles}"
    );

    let env = vec![("MMTRADER_API__BIND", "0.0.0.0:0".to_string())];
    let d = dir.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || mmtrader(&d, &env, &["collect", "--duration", "1"]))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

/// `collect` following a venue: the venue's trades and book tops are stored under its name
/// beside the primary's, and the command still shuts down when its duration is up (the venue
/// path holds a sender of the sinks, which must be gone before they can drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_stores_the_trades_and_tops_of_followed_venues() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let bybit = venues_common::VenueServer::start("BYBIT.ws.25.0").await;
    let dir = tempfile::tempdir().unwrap();
    // Bybit's recording has ETHUSDT; its books stay usable for the whole run.
    let config = format!(
        "[venues]\nfollow = [\"bybit\"]\nstale_after_ms = 600000\n\n\
         [venues.endpoints.bybit]\nws = \"{}\"\nrest = \"http://127.0.0.1:9\"\n",
        bybit.url
    );
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    let stdout = collect_six_seconds(&pg, &redis, dir.path()).await;
    assert!(stdout.contains("0 rows left in spill files"), "{stdout}");
    let db = connect(&pg.url(), Duration::from_secs(5)).await.unwrap();
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let venue_trades = count("SELECT count(*) FROM trades WHERE exchange = 'bybit'").await;
    let own_trades = count("SELECT count(*) FROM trades WHERE exchange <> 'bybit'").await;
    let venue_tops = count("SELECT count(*) FROM book_top WHERE exchange = 'bybit'").await;
    assert!(
        venue_trades > 0 && own_trades > 0 && venue_tops > 0,
        "bybit trades {venue_trades}, primary trades {own_trades}, bybit tops {venue_tops}"
    );
    let symbols: i64 =
        count("SELECT count(*) FROM trades WHERE exchange = 'bybit' AND symbol <> 'ETHUSDT'").await;
    assert_eq!(
        symbols, 0,
        "venue trades are stored under the desk's symbol"
    );
}
