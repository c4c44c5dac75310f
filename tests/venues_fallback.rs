//! Automatic Binance → MEXC → Binance fallback over loopback: the project's simulator plays
//! Binance and a small loopback server speaks MEXC's protobuf websocket and REST depth. The
//! simulator is killed and restarted; candles must get no hole and no duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use mmtrader::app::pipeline::{Endpoints, FeedProcess};
use mmtrader::config::Config;
use mmtrader::feeds::health::LinkState;
use mmtrader::feeds::mexc::proto::{
    Body, DealItem, DepthItem, PublicAggreDeals, PublicAggreDepths,
};
use mmtrader::feeds::mexc::protocol::encode_push;
use mmtrader::market::snapshot::{BookStatus, MarketSnapshot};
use mmtrader::market::types::{Candle, Price, Qty, Timeframe};
use tokio::sync::watch;

/// Every MEXC trade: price 77.77, size 0.001, one per 50 ms of (synthetic) exchange time, so a
/// whole second served by MEXC holds exactly 20 trades and 0.02 volume.
const MEXC_PRICE: &str = "77.77";
const MEXC_QTY: &str = "0.001";

#[derive(Default)]
struct MockMexc {
    /// Per symbol: depth version and trade counter.
    state: Mutex<HashMap<String, (u64, i64)>>,
    /// Per symbol: the time of every trade sent (each of `MEXC_QTY`).
    sent: Mutex<HashMap<String, Vec<i64>>>,
    t0: i64,
}

async fn depth(State(m): State<Arc<MockMexc>>, Query(q): Query<HashMap<String, String>>) -> String {
    let sym = q.get("symbol").cloned().unwrap_or_default();
    let v = m.state.lock().unwrap().entry(sym).or_insert((1, 0)).0;
    format!(r#"{{"lastUpdateId":{v},"bids":[["77.76","5"],["77.75","6"]],"asks":[["77.78","5"]]}}"#)
}

async fn ws(ws: WebSocketUpgrade, State(m): State<Arc<MockMexc>>) -> Response {
    ws.on_upgrade(move |s| session(s, m))
}

async fn session(mut s: WebSocket, m: Arc<MockMexc>) {
    let mut symbols: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            msg = s.recv() => {
                let Some(Ok(Message::Text(t))) = msg else {
                    if msg.is_none() { return; }
                    continue;
                };
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["method"] == "PING" {
                    let _ = s.send(Message::text(r#"{"id":0,"code":0,"msg":"PONG"}"#)).await;
                } else if v["method"] == "SUBSCRIPTION" {
                    for p in v["params"].as_array().unwrap() {
                        let ch = p.as_str().unwrap();
                        let sym = ch.rsplit('@').next().unwrap().to_string();
                        if !symbols.contains(&sym) {
                            symbols.push(sym);
                        }
                        let ack = format!(r#"{{"id":0,"code":0,"msg":"{ch}"}}"#);
                        let _ = s.send(Message::text(ack)).await;
                    }
                }
            }
            _ = tick.tick() => {
                for sym in &symbols {
                    let (v, k) = {
                        let mut st = m.state.lock().unwrap();
                        let e = st.entry(sym.clone()).or_insert((1, 0));
                        e.0 += 1;
                        e.1 += 1;
                        *e
                    };
                    let time = m.t0 + 50 * k;
                    m.sent.lock().unwrap().entry(sym.clone()).or_default().push(time);
                    let depth = encode_push(sym, &format!("spot@public.aggre.depth.v3.api.pb@100ms@{sym}"),
                        Body::PublicAggreDepths(PublicAggreDepths {
                            asks: vec![],
                            bids: vec![DepthItem { price: "77.76".into(), quantity: format!("{}", 5 + v % 3) }],
                            event_type: String::new(),
                            from_version: v.to_string(),
                            to_version: v.to_string(),
                        }), time);
                    let deal = encode_push(sym, &format!("spot@public.aggre.deals.v3.api.pb@100ms@{sym}"),
                        Body::PublicAggreDeals(PublicAggreDeals {
                            deals: vec![DealItem {
                                price: MEXC_PRICE.into(),
                                quantity: MEXC_QTY.into(),
                                trade_type: 1,
                                time,
                                trade_id: format!("{k}"),
                            }],
                            event_type: String::new(),
                        }), time);
                    if s.send(Message::Binary(depth.into())).await.is_err()
                        || s.send(Message::Binary(deal.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn start_mock() -> (String, Arc<MockMexc>) {
    let now = mmtrader::logging::now_ms();
    let m = Arc::new(MockMexc {
        state: Mutex::new(HashMap::new()),
        sent: Mutex::new(HashMap::new()),
        t0: now - now.rem_euclid(1000),
    });
    let app = axum::Router::new()
        .route("/ws", get(ws))
        .route("/api/v3/depth", get(depth))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("{addr}"), m)
}

/// Whether some cut `c` explains a boundary second's candle: the `before` trades with time
/// < c plus the `after` trades with time >= c give exactly its trade count and volume (a
/// hole or a duplicate at the switch breaks this for every cut). Candidate cuts are the
/// second's start and one past each `before` trade (a cut is the last applied trade + 1).
fn boundary_fits(c: &Candle, before: &[(i64, Qty)], after: &[(i64, Qty)]) -> bool {
    let start = c.open_time_ms;
    let inside = |t: i64| t >= start && t < start + 1_000;
    std::iter::once(start)
        .chain(before.iter().map(|(t, _)| t + 1))
        .any(|cut| {
            let picked = before
                .iter()
                .filter(|(t, _)| inside(*t) && *t < cut)
                .chain(after.iter().filter(|(t, _)| inside(*t) && *t >= cut));
            let (n, vol) = picked.fold((0u64, Qty::ZERO), |(n, v), (_, q)| (n + 1, v + *q));
            n == c.trades && vol == c.volume
        })
}

async fn wait_until(
    rx: &mut watch::Receiver<Arc<MarketSnapshot>>,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&MarketSnapshot) -> bool,
) -> Arc<MarketSnapshot> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snap = rx.borrow_and_update().clone();
        if pred(&snap) {
            return snap;
        }
        if tokio::time::Instant::now() > deadline {
            let links: Vec<String> = snap
                .links
                .iter()
                .map(|l| {
                    format!(
                        "{} {:?} connects={} errors={}",
                        l.name, l.state, l.connects, l.errors
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}; source {:?}, links {links:?}",
                snap.source
            );
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
    }
}

fn mexc_price() -> Price {
    Price::parse(MEXC_PRICE).unwrap()
}

/// A running feed with the simulator as primary and the MEXC mock as fallback.
struct Rig {
    sim: mmtrader::sim::SimHandle,
    feed: FeedProcess,
    rx: watch::Receiver<Arc<MarketSnapshot>>,
    mexc: Arc<MockMexc>,
}

/// Starts the rig and waits until the primary is live and the fallback connected.
async fn start_rig() -> Rig {
    let (mock, mexc) = start_mock().await;
    let mut cfg = Config::default();
    cfg.reconnect.initial_backoff_ms = 100;
    cfg.reconnect.max_backoff_ms = 500;
    cfg.data.backfill_frames = 50;
    cfg.data.candles_kept = 600;
    let fb = &mut cfg.exchanges.fallback;
    fb.enabled = true;
    fb.ws = format!("ws://{mock}/ws");
    fb.rest = format!("http://{mock}");
    fb.stale_after_ms = 1_500;
    fb.recover_after_ms = 1_500;
    fb.dedupe_window_ms = 200;
    let sim_cfg = mmtrader::app::sim::sim_config(&cfg, "127.0.0.1:0").unwrap();
    let sim = mmtrader::sim::start(sim_cfg).await.unwrap();
    let endpoints = Endpoints::of_sim(&sim, "sim");
    let (mut feed, mut rx) = FeedProcess::new(cfg.clone(), endpoints);
    feed.set_snapshot_candles(cfg.data.candles_kept);
    feed.start().unwrap();

    wait_until(
        &mut rx,
        "primary live, fallback connected",
        Duration::from_secs(30),
        |s| {
            s.source == "sim"
                && s.symbols
                    .iter()
                    .all(|x| x.status == BookStatus::Live && x.trades > 0)
                && s.links
                    .iter()
                    .any(|l| l.name.contains("fallback") && l.connects >= 1)
        },
    )
    .await;
    Rig {
        sim,
        feed,
        rx,
        mexc,
    }
}

/// Waits until market data (book and trades) comes from MEXC; returns that snapshot.
async fn switched_to_mexc(rx: &mut watch::Receiver<Arc<MarketSnapshot>>) -> Arc<MarketSnapshot> {
    wait_until(rx, "switched to MEXC", Duration::from_secs(20), on_mexc).await
}

fn on_mexc(s: &MarketSnapshot) -> bool {
    s.source.contains("mexc fallback")
        && s.symbols.iter().all(|x| {
            x.best_bid
                .is_some_and(|b| b.price == Price::parse("77.76").unwrap())
                && x.last_trade
                    .as_ref()
                    .is_some_and(|t| t.price == mexc_price())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_primary_switches_to_mexc_while_still_connected() {
    let Rig {
        sim,
        mut feed,
        mut rx,
        ..
    } = start_rig().await;
    // The simulator stops streaming but keeps its connections open: only staleness can tell.
    sim.pause().unwrap();
    let snap = switched_to_mexc(&mut rx).await;
    let primary = snap.links.iter().find(|l| l.name == "exchange ws").unwrap();
    assert_eq!(
        primary.state,
        LinkState::Connected,
        "switched on staleness, not on a disconnect"
    );
    sim.resume().unwrap();
    wait_until(
        &mut rx,
        "back on the primary",
        Duration::from_secs(30),
        |s| s.source == "sim",
    )
    .await;
    feed.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_data_falls_back_to_mexc_and_returns_without_hole_or_duplicate() {
    let Rig {
        mut sim,
        mut feed,
        mut rx,
        mexc,
    } = start_rig().await;

    // Binance dies: market data switches to MEXC (book and trades), visible in the snapshot.
    sim.stop().await;
    let snap = switched_to_mexc(&mut rx).await;
    assert!(snap.source.contains("1 switches"), "{}", snap.source);
    // Let MEXC serve a few whole seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Binance comes back: market data returns to it.
    sim.start_again().await.unwrap();
    wait_until(
        &mut rx,
        "back on the primary",
        Duration::from_secs(30),
        |s| {
            s.source == "sim"
                && s.symbols.iter().all(|x| {
                    x.status == BookStatus::Live
                        && x.best_bid
                            .is_some_and(|b| b.price != Price::parse("77.76").unwrap())
                        && x.last_trade
                            .as_ref()
                            .is_some_and(|t| t.price != mexc_price())
                })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = rx.borrow().clone();
    feed.stop().await;
    let history = sim.history().clone();
    sim.shutdown().await;
    let mexc_sent = mexc.sent.lock().unwrap().clone();

    let mexc_vol_per_sec = Qty::parse("0.02").unwrap();
    for x in &snap.symbols {
        let candles = x.candles(Timeframe::S1);
        for w in candles.windows(2) {
            assert_eq!(
                w[1].open_time_ms - w[0].open_time_ms,
                1_000,
                "{}: hole in 1 s candles",
                x.exchange
            );
        }
        // Seconds holding MEXC prints (the mock's price is far below the simulator's).
        let with_mexc: Vec<usize> = candles
            .iter()
            .enumerate()
            .filter(|(_, c)| c.low <= mexc_price())
            .map(|(i, _)| i)
            .collect();
        assert!(
            with_mexc.len() >= 4,
            "{}: MEXC served {} seconds",
            x.exchange,
            with_mexc.len()
        );
        let (first, last) = (with_mexc[0], *with_mexc.last().unwrap());
        // Inside the fallback window every second holds trades (fill_to pads empty seconds, so
        // continuity alone would not show a hole).
        for c in &candles[first..=last] {
            assert!(
                c.trades > 0,
                "{}: empty second {} while on MEXC",
                x.exchange,
                c.open_time_ms
            );
        }
        // The two boundary seconds: the primary's trades before the cut plus MEXC's from it
        // (and back), both known exactly (the simulator's history, the mock's sent trades).
        let sym = history
            .specs()
            .iter()
            .position(|s| s.symbol == x.exchange)
            .unwrap();
        let spec = &history.specs()[sym];
        let primary = |c: &Candle| -> Vec<(i64, Qty)> {
            let (_, trades) = history.leaf_trades(sym, c.open_time_ms).unwrap();
            trades
                .iter()
                .map(|t| (t.time_ms, spec.qty(t.qty)))
                .collect()
        };
        let secondary: Vec<(i64, Qty)> = mexc_sent[&x.exchange]
            .iter()
            .map(|t| (*t, Qty::parse(MEXC_QTY).unwrap()))
            .collect();
        let to_mexc = &candles[first];
        assert!(
            boundary_fits(to_mexc, &primary(to_mexc), &secondary),
            "{}: switch second {:?} is not primary-before-cut plus MEXC-from-cut",
            x.exchange,
            to_mexc
        );
        let back = &candles[last];
        assert!(
            boundary_fits(back, &secondary, &primary(back)),
            "{}: return second {:?} is not MEXC-before-cut plus primary-from-cut",
            x.exchange,
            back
        );
        // One contiguous MEXC period: the source switched once each way.
        assert_eq!(
            last - first + 1,
            with_mexc.len(),
            "{}: MEXC seconds not contiguous",
            x.exchange
        );
        // Whole MEXC seconds (not the two boundary buckets, which are rebuilt from both sources)
        // hold every MEXC print exactly once: 20 trades, 0.02 volume, nothing from the primary.
        for c in &candles[first + 1..last] {
            assert_eq!(
                c.trades, 20,
                "{}: second {} trades",
                x.exchange, c.open_time_ms
            );
            assert_eq!(
                c.volume, mexc_vol_per_sec,
                "{}: second {} volume",
                x.exchange, c.open_time_ms
            );
            assert_eq!(
                c.high,
                mexc_price(),
                "{}: primary trade inside the MEXC period",
                x.exchange
            );
        }
        // After the switch back the primary alone prints.
        assert!(candles[last + 1..].iter().all(|c| c.low > mexc_price()));
        assert!(
            candles.len() > last + 1,
            "{}: primary candles after the switch back",
            x.exchange
        );
    }
}
