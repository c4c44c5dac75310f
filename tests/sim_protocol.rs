//! The simulated exchange end to end: model statistics and determinism, history consistency, and
//! the Binance protocol over real loopback sockets (reqwest and tokio-tungstenite as clients).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mmtrader::market::book::OrderBook;
use mmtrader::market::types::{Level, Price, Qty, Side, Timeframe};
use mmtrader::sim::history::{History, SimCandle};
use mmtrader::sim::model::{MarketEvent, MarketModel};
use mmtrader::sim::{SimConfig, SimHandle, start};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const T: i64 = 1_764_000_000_000;

fn history(seed: u64) -> Arc<History> {
    let cfg = SimConfig::default();
    Arc::new(History::new(seed, cfg.correlation, cfg.specs().unwrap()))
}

// ---------------------------------------------------------------- pure model

#[test]
fn same_seed_gives_the_same_event_stream() {
    let run = |seed| {
        let mut m = MarketModel::new(history(seed), T).unwrap();
        m.advance_to(T + 20_000).unwrap()
    };
    let a = run(1);
    assert!(a.iter().any(|e| matches!(e, MarketEvent::Trade { .. })));
    assert!(a.iter().any(|e| matches!(e, MarketEvent::Depth(_))));
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
}

fn log_returns(c: &[SimCandle]) -> Vec<f64> {
    c.windows(2)
        .map(|w| (w[1].c as f64 / w[0].c as f64).ln())
        .collect()
}

fn moments(x: &[f64]) -> (f64, f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n;
    let k = x.iter().map(|a| (a - m).powi(4)).sum::<f64>() / n / v.powi(2) - 3.0;
    (m, v, k)
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va, _) = moments(a);
    let (mb, vb, _) = moments(b);
    let cov = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / a.len() as f64;
    cov / (va * vb).sqrt()
}

#[test]
fn returns_are_fat_tailed_clustered_and_correlated() {
    let h = history(77);
    let from = T - 3 * 86_400_000;
    let eth = h.range(0, Timeframe::M1, from, T).unwrap();
    let btc = h.range(1, Timeframe::M1, from, T).unwrap();
    let (re, rb) = (log_returns(&eth), log_returns(&btc));
    let (_, _, kurt) = moments(&re);
    assert!(kurt > 0.0, "1m excess kurtosis {kurt}");
    let sq: Vec<f64> = re.iter().map(|r| r * r).collect();
    let ac = corr(&sq[..sq.len() - 1], &sq[1..]);
    assert!(ac > 0.05, "autocorrelation of squared 1m returns {ac}");
    let c = corr(&re, &rb);
    assert!(c > 0.5, "ETH/BTC 1m return correlation {c}");
    let days = h.range(0, Timeframe::D1, T - 1500 * 86_400_000, T).unwrap();
    let rd = log_returns(&days);
    let (_, _, kd) = moments(&rd);
    assert!(kd > 0.0, "daily excess kurtosis {kd}");
    // Absolute returns: with Student-t shocks the sample moments of squares are too noisy over
    // a few years of days to be a stable check.
    let absd: Vec<f64> = rd.iter().map(|r| r.abs()).collect();
    let acd = corr(&absd[..absd.len() - 1], &absd[1..]);
    assert!(acd > 0.0, "daily volatility clustering {acd}");
}

#[test]
fn minute_candles_aggregate_exactly_to_the_hour() {
    let h = history(5);
    let hour = Timeframe::H1.floor(T - 5 * 86_400_000);
    for sym in 0..2 {
        let mins = h.range(sym, Timeframe::M1, hour, hour + 3_600_000).unwrap();
        assert_eq!(mins.len(), 60);
        let agg = SimCandle::aggregate(hour, &mins).unwrap();
        assert_eq!(agg, h.candle(sym, Timeframe::H1, hour).unwrap());
    }
}

// ---------------------------------------------------------------- server helpers

fn cfg() -> SimConfig {
    SimConfig {
        seed: 9,
        ..SimConfig::default()
    }
}

async fn get(h: &SimHandle, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::get(format!("{}{}", h.rest_url(), path))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    (status, headers, body)
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next text frame as JSON within `secs` (pings are skipped; tungstenite answers them).
async fn next_json(ws: &mut Ws, secs: u64) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// True when the server closes the connection within `secs` (data frames are drained).
async fn closed_within(ws: &mut Ws, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn lv(v: &Value) -> Vec<Level> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| Level {
            price: Price::parse(l[0].as_str().unwrap()).unwrap(),
            qty: Qty::parse(l[1].as_str().unwrap()).unwrap(),
        })
        .collect()
}

// ---------------------------------------------------------------- REST

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_endpoints_and_error_replies() {
    let h = start(cfg()).await.unwrap();
    let (s, hd, b) = get(&h, "/api/v3/ping").await;
    assert_eq!((s, b), (200, json!({})));
    assert!(hd.get("x-mbx-used-weight-1m").is_some());
    let (_, _, b) = get(&h, "/api/v3/time").await;
    assert!(b["serverTime"].as_i64().unwrap() > T);
    let (_, _, b) = get(&h, "/api/v3/exchangeInfo").await;
    assert_eq!(b["rateLimits"][0]["rateLimitType"], "REQUEST_WEIGHT");
    let eth = &b["symbols"][0];
    assert_eq!(eth["symbol"], "ETHUSDT");
    let kinds: Vec<&str> = eth["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filterType"].as_str().unwrap())
        .collect();
    for k in ["PRICE_FILTER", "LOT_SIZE", "MIN_NOTIONAL", "NOTIONAL"] {
        assert!(kinds.contains(&k), "{k} missing");
    }
    assert_eq!(eth["filters"][0]["tickSize"], "0.01000000");

    let (s, _, b) = get(&h, "/api/v3/depth?symbol=ETHUSDT&limit=5000").await;
    assert_eq!(s, 200);
    let bids = lv(&b["bids"]);
    let asks = lv(&b["asks"]);
    assert!(bids.len() > 300 && asks.len() > 300);
    assert!(bids[0].price < asks[0].price);
    assert!(bids.windows(2).all(|w| w[0].price > w[1].price));
    assert!(b["lastUpdateId"].as_u64().unwrap() > 0);
    let (_, _, b) = get(&h, "/api/v3/depth?symbol=ETHUSDT&limit=5").await;
    assert_eq!(b["bids"].as_array().unwrap().len(), 5);

    let (_, _, b) = get(&h, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3").await;
    let rows = b.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].as_array().unwrap().len(), 12);
    assert_eq!(
        rows[1][0].as_i64().unwrap() - rows[0][0].as_i64().unwrap(),
        60_000
    );
    assert!(rows[2][6].as_i64().unwrap() > rows[2][0].as_i64().unwrap());

    let (_, _, b) = get(&h, "/api/v3/aggTrades?symbol=ETHUSDT&limit=50").await;
    let trades = b.as_array().unwrap();
    assert_eq!(trades.len(), 50);
    assert!(
        trades
            .windows(2)
            .all(|w| w[1]["a"].as_u64() == Some(w[0]["a"].as_u64().unwrap() + 1))
    );
    let from = trades[10]["a"].as_u64().unwrap();
    let (_, _, b) = get(
        &h,
        &format!("/api/v3/aggTrades?symbol=ETHUSDT&fromId={from}&limit=5"),
    )
    .await;
    assert_eq!(b[0], trades[10]);

    let (_, _, b) = get(&h, "/api/v3/ticker/bookTicker?symbol=ETHUSDT").await;
    assert!(
        Price::parse(b["bidPrice"].as_str().unwrap()).unwrap()
            < Price::parse(b["askPrice"].as_str().unwrap()).unwrap()
    );
    let (_, _, b) = get(&h, "/api/v3/ticker/bookTicker").await;
    assert_eq!(b.as_array().unwrap().len(), 2);
    let (_, _, b) = get(&h, "/api/v3/ticker/24hr?symbol=BTCUSDT").await;
    assert!(b["count"].as_i64().unwrap() > 300_000);
    assert_eq!(
        b["lastId"].as_i64().unwrap() - b["firstId"].as_i64().unwrap() + 1,
        b["count"].as_i64().unwrap()
    );
    let (_, _, b) = get(&h, "/api/v3/ticker/24hr?symbols=%5B%22ETHUSDT%22%5D").await;
    assert_eq!(b[0]["symbol"], "ETHUSDT");

    for (path, code) in [
        ("/api/v3/depth?symbol=NOPE", -1121),
        ("/api/v3/depth", -1102),
        ("/api/v3/depth?symbol=ETHUSDT&limit=abc", -1100),
        ("/api/v3/klines?symbol=ETHUSDT", -1102),
        ("/api/v3/klines?symbol=ETHUSDT&interval=7m", -1120),
        (
            "/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime=x",
            -1100,
        ),
        ("/api/v3/ticker/24hr?symbol=XRPUSDT", -1121),
        (
            "/api/v3/klines?symbol=ETHUSDT&interval=1s&startTime=9223372036854775807",
            -1100,
        ),
        ("/api/v3/aggTrades?symbol=ETHUSDT&fromId=-5", -1100),
    ] {
        let (s, _, b) = get(&h, path).await;
        assert_eq!(s, 400, "{path}");
        assert_eq!(b["code"], code, "{path}: {b}");
        assert!(b["msg"].is_string());
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn klines_page_without_gaps_and_aggregate_exactly() {
    let h = start(cfg()).await.unwrap();
    // Page 1s klines across an hour boundary a week ago.
    let t0 = Timeframe::H1.floor(T - 7 * 86_400_000) - 150_000;
    let mut start_t = t0;
    let mut opens = Vec::new();
    for _ in 0..3 {
        let (_, _, b) = get(
            &h,
            &format!("/api/v3/klines?symbol=ETHUSDT&interval=1s&startTime={start_t}&limit=100"),
        )
        .await;
        let rows = b.as_array().unwrap();
        assert_eq!(rows.len(), 100);
        for r in rows {
            opens.push(r[0].as_i64().unwrap());
        }
        start_t = rows.last().unwrap()[0].as_i64().unwrap() + 1000;
    }
    assert_eq!(opens.len(), 300);
    assert!(
        opens.windows(2).all(|w| w[1] == w[0] + 1000),
        "no duplicates, no holes"
    );
    assert_eq!(opens[0], t0);

    // Sixty 1m klines sum exactly to their 1h kline (string-exact prices and volumes).
    let hour = Timeframe::H1.floor(T - 2 * 86_400_000);
    let (_, _, m) = get(
        &h,
        &format!(
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={hour}&endTime={}&limit=1000",
            hour + 3_599_999
        ),
    )
    .await;
    let (_, _, hr) = get(
        &h,
        &format!("/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime={hour}&limit=1"),
    )
    .await;
    let m = m.as_array().unwrap();
    assert_eq!(m.len(), 60);
    let p = |v: &Value| Price::parse(v.as_str().unwrap()).unwrap();
    let q = |v: &Value| Qty::parse(v.as_str().unwrap()).unwrap();
    let hr = &hr[0];
    assert_eq!(p(&m[0][1]), p(&hr[1]));
    assert_eq!(m.iter().map(|r| p(&r[2])).max().unwrap(), p(&hr[2]));
    assert_eq!(m.iter().map(|r| p(&r[3])).min().unwrap(), p(&hr[3]));
    assert_eq!(p(&m[59][4]), p(&hr[4]));
    assert_eq!(
        m.iter().map(|r| q(&r[5]).raw()).sum::<i64>(),
        q(&hr[5]).raw()
    );
    assert_eq!(
        m.iter().map(|r| r[8].as_i64().unwrap()).sum::<i64>(),
        hr[8].as_i64().unwrap()
    );
    assert_eq!(
        m.iter().map(|r| q(&r[9]).raw()).sum::<i64>(),
        q(&hr[9]).raw()
    );

    // At least 300 daily candles, continuous, the last one open.
    let (_, _, d) = get(&h, "/api/v3/klines?symbol=ETHUSDT&interval=1d&limit=1000").await;
    let d = d.as_array().unwrap();
    assert_eq!(d.len(), 1000);
    assert!(
        d.windows(2).all(|w| w[1][1] == w[0][4]),
        "each day opens at the previous close"
    );
    assert!(d.last().unwrap()[6].as_i64().unwrap() > chrono_now());
    h.shutdown().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_weight_limit_gives_429_then_418() {
    let h = start(SimConfig {
        weight_limit_per_minute: 45,
        ..cfg()
    })
    .await
    .unwrap();
    let (s, hd, _) = get(&h, "/api/v3/exchangeInfo").await;
    assert_eq!(s, 200);
    let used: u32 = hd["x-mbx-used-weight-1m"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&used), "used weight {used}");
    // Keep going until banned; a minute boundary can reset the window once, so allow slack.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (s, hd, b) = get(&h, "/api/v3/exchangeInfo").await;
        assert!(hd.get("x-mbx-used-weight-1m").is_some());
        if s != 200 {
            assert_eq!(b["code"], -1003);
            let retry: u64 = hd["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
        }
        statuses.push(s);
        if s == 418 {
            break;
        }
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("429 before the ban");
    assert_eq!(statuses.last(), Some(&418), "{statuses:?}");
    assert!(first_429 < statuses.len() - 1);
    h.shutdown().await;
}

// ---------------------------------------------------------------- websocket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_and_raw_streams_have_binance_shapes() {
    let h = start(cfg()).await.unwrap();
    let streams = "ethusdt@depth@100ms/ethusdt@aggTrade/ethusdt@bookTicker/ethusdt@ticker/ethusdt@kline_1m/ethusdt@kline_1s/btcusdt@depth/ethusdt@depth5@100ms";
    let mut ws = connect(&format!("{}/stream?streams={streams}", h.ws_url())).await;
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 8 {
        let v = next_json(&mut ws, 8)
            .await
            .unwrap_or_else(|| panic!("missing streams, got {:?}", seen.keys()));
        let stream = v["stream"].as_str().unwrap().to_owned();
        seen.entry(stream).or_insert(v["data"].clone());
    }
    let d = &seen["ethusdt@depth@100ms"];
    assert_eq!(d["e"], "depthUpdate");
    assert_eq!(d["s"], "ETHUSDT");
    assert!(d["U"].as_u64().unwrap() <= d["u"].as_u64().unwrap());
    let t = &seen["ethusdt@aggTrade"];
    assert_eq!(t["e"], "aggTrade");
    assert!(t["m"].is_boolean() && t["p"].is_string() && t["a"].is_u64() && t["T"].is_i64());
    let b = &seen["ethusdt@bookTicker"];
    assert!(b["u"].is_u64() && b["b"].is_string() && b.get("e").is_none());
    let k = &seen["ethusdt@kline_1m"];
    assert_eq!(k["e"], "kline");
    assert_eq!(k["k"]["i"], "1m");
    assert!(k["k"]["x"].is_boolean());
    assert_eq!(seen["ethusdt@kline_1s"]["k"]["x"], true);
    let tk = &seen["ethusdt@ticker"];
    assert_eq!(tk["e"], "24hrTicker");
    assert!(tk["c"].is_string() && tk["n"].is_i64());
    assert_eq!(seen["btcusdt@depth"]["e"], "depthUpdate");
    assert_eq!(
        seen["ethusdt@depth5@100ms"]["bids"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    let mut raw = connect(&format!("{}/ws/btcusdt@aggTrade", h.ws_url())).await;
    let v = next_json(&mut raw, 5).await.unwrap();
    assert_eq!(v["e"], "aggTrade");
    assert_eq!(v["s"], "BTCUSDT");

    // A live 1s kline equals the REST kline of the same second.
    let mut k1 = connect(&format!("{}/ws/ethusdt@kline_1s", h.ws_url())).await;
    let live = next_json(&mut k1, 5).await.unwrap();
    let open = live["k"]["t"].as_i64().unwrap();
    let (_, _, rest) = get(
        &h,
        &format!("/api/v3/klines?symbol=ETHUSDT&interval=1s&startTime={open}&limit=1"),
    )
    .await;
    let r = &rest[0];
    let k = &live["k"];
    assert_eq!(
        (r[0].as_i64().unwrap(), &r[1], &r[2], &r[3], &r[4], &r[5]),
        (open, &k["o"], &k["h"], &k["l"], &k["c"], &k["v"])
    );
    assert_eq!(r[8], k["n"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_flow_and_control_errors() {
    let h = start(cfg()).await.unwrap();
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    ws.send(Message::Text(
        r#"{"method":"SUBSCRIBE","params":["ethusdt@aggTrade","btcusdt@bookTicker"],"id":1}"#
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws, 5).await.unwrap(),
        json!({"result": null, "id": 1})
    );
    ws.send(Message::Text(
        r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#.into(),
    ))
    .await
    .unwrap();
    let mut got_list = false;
    let mut got_data = false;
    while !(got_list && got_data) {
        let v = next_json(&mut ws, 5).await.unwrap();
        if v["id"] == 2 {
            assert_eq!(
                v["result"],
                json!(["btcusdt@bookTicker", "ethusdt@aggTrade"])
            );
            got_list = true;
        } else if v["e"] == "aggTrade" || v["u"].is_u64() {
            got_data = true;
        }
    }
    ws.send(Message::Text(
        r#"{"method":"UNSUBSCRIBE","params":["ethusdt@aggTrade","btcusdt@bookTicker"],"id":3}"#
            .into(),
    ))
    .await
    .unwrap();
    loop {
        let v = next_json(&mut ws, 5).await.unwrap();
        if v["id"] == 3 {
            assert_eq!(v["result"], Value::Null);
            break;
        }
    }
    for (req, code) in [
        ("not json", 3),
        (r#"{"method":"FOO","id":4}"#, 2),
        (r#"{"params":[],"id":5}"#, 2),
        (
            r#"{"method":"SUBSCRIBE","params":["dogeusdt@aggTrade"],"id":6}"#,
            2,
        ),
        (r#"{"method":"GET_PROPERTY","params":["nope"],"id":7}"#, 0),
    ] {
        ws.send(Message::Text(req.into())).await.unwrap();
        loop {
            let v = next_json(&mut ws, 5).await.unwrap();
            if v.get("code").is_some() {
                assert_eq!(v["code"], code, "{req} → {v}");
                break;
            }
        }
    }
    ws.send(Message::Text(
        r#"{"method":"SET_PROPERTY","params":["combined",true],"id":8}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws, 5).await.unwrap(),
        json!({"result": null, "id": 8})
    );
    ws.send(Message::Text(
        r#"{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":9}"#.into(),
    ))
    .await
    .unwrap();
    loop {
        let v = next_json(&mut ws, 5).await.unwrap();
        if v.get("stream").is_some() {
            assert_eq!(v["stream"], "ethusdt@aggTrade");
            assert_eq!(v["data"]["e"], "aggTrade");
            break;
        }
    }
    h.shutdown().await;
}

/// Buffers diffs, takes a snapshot, syncs per Binance's procedure, then checks every later diff
/// continues the sequence and the local book matches a second snapshot exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_diffs_sync_against_a_rest_snapshot() {
    let h = start(cfg()).await.unwrap();
    let mut ws = connect(&format!("{}/ws/btcusdt@depth@100ms", h.ws_url())).await;
    let first = next_json(&mut ws, 5).await.unwrap();
    let first_u = first["U"].as_u64().unwrap();
    let (_, _, snap) = get(&h, "/api/v3/depth?symbol=BTCUSDT&limit=5000").await;
    let snap_id = snap["lastUpdateId"].as_u64().unwrap();
    assert!(snap_id >= first_u);
    let mut book = OrderBook::new();
    book.apply_snapshot(&lv(&snap["bids"]), &lv(&snap["asks"]), snap_id);
    let mut buffered = vec![first];
    let mut prev_u: Option<u64> = None;
    let mut applied = 0;
    let mut check: Option<Value> = None;
    let mut compared = false;
    while !compared {
        let ev = if buffered.is_empty() {
            next_json(&mut ws, 5).await.unwrap()
        } else {
            buffered.remove(0)
        };
        let (uu, u) = (ev["U"].as_u64().unwrap(), ev["u"].as_u64().unwrap());
        if let Some(p) = prev_u {
            assert_eq!(uu, p + 1, "consecutive update ids");
        }
        prev_u = Some(u);
        if u <= book.last_update_id {
            continue;
        }
        assert!(uu <= book.last_update_id + 1, "no gap after the snapshot");
        for l in lv(&ev["b"]) {
            book.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in lv(&ev["a"]) {
            book.apply_level(Side::Sell, l.price, l.qty);
        }
        book.last_update_id = u;
        assert!(!book.is_crossed());
        applied += 1;
        if applied == 10 {
            let (_, _, s2) = get(&h, "/api/v3/depth?symbol=BTCUSDT&limit=100").await;
            check = Some(s2);
        }
        if let Some(s2) = &check {
            let id = s2["lastUpdateId"].as_u64().unwrap();
            if book.last_update_id == id {
                assert_eq!(book.top(Side::Buy, 100), lv(&s2["bids"]));
                assert_eq!(book.top(Side::Sell, 100), lv(&s2["asks"]));
                compared = true;
            }
            assert!(
                book.last_update_id <= id || compared,
                "snapshot id must fall on a diff boundary"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_pong_timeout_and_lifetime() {
    let h = start(SimConfig {
        ping_interval_ms: 150,
        pong_timeout_ms: 1500,
        max_connection_lifetime_s: 3,
        ..cfg()
    })
    .await
    .unwrap();
    // A reading client sees pings (and its automatic pongs keep it alive past the timeout).
    let mut ws = connect(&format!("{}/ws", h.ws_url())).await;
    let mut pings = 0;
    let started = tokio::time::Instant::now();
    let mut closed_at = None;
    while closed_at.is_none() {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                closed_at = Some(started.elapsed())
            }
            _ => {}
        }
    }
    assert!(pings >= 3, "saw {pings} pings");
    let lived = closed_at.unwrap();
    assert!(
        lived >= Duration::from_millis(2500),
        "closed by lifetime, not pong timeout ({lived:?})"
    );
    // A client that never reads never pongs: closed on the pong deadline, before its lifetime.
    let mut silent = connect(&format!("{}/ws", h.ws_url())).await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(closed_within(&mut silent, 1).await);
    h.shutdown().await;
}

async fn depth_event(ws: &mut Ws) -> (u64, u64) {
    loop {
        let v = next_json(ws, 5).await.expect("depth event");
        if v["e"] == "depthUpdate" {
            return (v["U"].as_u64().unwrap(), v["u"].as_u64().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_observable() {
    let mut h = start(cfg()).await.unwrap();
    let url = format!("{}/ws/ethusdt@depth@100ms", h.ws_url());

    // Sequence gap.
    let mut ws = connect(&url).await;
    let (_, mut prev) = depth_event(&mut ws).await;
    h.inject_gap("ETHUSDT").unwrap();
    let mut gap = false;
    for _ in 0..20 {
        let (uu, u) = depth_event(&mut ws).await;
        if uu > prev + 1 {
            gap = true;
            break;
        }
        prev = u;
    }
    assert!(gap, "gap visible");
    assert!(h.inject_gap("NOPEUSDT").is_err());

    // Garbage frame.
    h.inject_garbage().unwrap();
    let mut garbage = false;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) if serde_json::from_str::<Value>(t.as_str()).is_err() => {
                garbage = true;
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("connection ended: {other:?}"),
        }
    }
    assert!(garbage);

    // Pause: silence; resume: data again.
    h.pause().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while tokio::time::timeout(Duration::from_millis(50), ws.next())
        .await
        .is_ok()
    {}
    assert!(
        tokio::time::timeout(Duration::from_millis(800), next_json(&mut ws, 1))
            .await
            .map_or(true, |v| v.is_none()),
        "stale while paused"
    );
    h.resume().unwrap();
    assert!(next_json(&mut ws, 3).await.is_some());

    // Disconnect all.
    h.disconnect_all().unwrap();
    assert!(closed_within(&mut ws, 3).await);

    // Restart on the same port: old clients are told and closed, history is the same, new clients work.
    let addr = h.local_addr();
    let old_hour = Timeframe::H1.floor(T);
    let kl = format!("/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={old_hour}&limit=60");
    let (_, _, before) = get(&h, &kl).await;
    let (_, _, recent_before) = get(&h, "/api/v3/klines?symbol=ETHUSDT&interval=1s&limit=5").await;
    let mut ws = connect(&url).await;
    depth_event(&mut ws).await;
    h.restart().await.unwrap();
    assert_eq!(h.local_addr(), addr);
    assert!(closed_within(&mut ws, 3).await);
    let (_, _, after) = get(&h, &kl).await;
    assert_eq!(before, after);
    let t = recent_before[0][0].as_i64().unwrap();
    let (_, _, again) = get(
        &h,
        &format!("/api/v3/klines?symbol=ETHUSDT&interval=1s&startTime={t}&limit=3"),
    )
    .await;
    assert_eq!(
        again[0], recent_before[0],
        "closed seconds served identically after restart"
    );
    let mut ws = connect(&url).await;
    depth_event(&mut ws).await;
    h.stop().await;
    assert!(
        reqwest::get(format!("http://{addr}/api/v3/ping"))
            .await
            .is_err()
    );
    h.start_again().await.unwrap();
    assert_eq!(get(&h, "/api/v3/ping").await.0, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_second_depth_and_ticker_cadence() {
    let h = start(cfg()).await.unwrap();
    let mut ws = connect(&format!(
        "{}/stream?streams=ethusdt@depth/ethusdt@ticker",
        h.ws_url()
    ))
    .await;
    let mut depth: Vec<Value> = Vec::new();
    let mut ticker: Vec<Value> = Vec::new();
    while depth.len() < 3 || ticker.len() < 2 {
        let v = next_json(&mut ws, 5).await.expect("1 s streams flowing");
        match v["stream"].as_str().unwrap() {
            "ethusdt@depth" => depth.push(v["data"].clone()),
            _ => ticker.push(v["data"].clone()),
        }
    }
    for w in depth.windows(2) {
        assert_eq!(w[1]["U"].as_u64().unwrap(), w[0]["u"].as_u64().unwrap() + 1);
        assert_eq!(
            w[1]["E"].as_i64().unwrap() - w[0]["E"].as_i64().unwrap(),
            1000
        );
    }
    assert!(depth.iter().all(|d| d["E"].as_i64().unwrap() % 1000 == 0));
    assert_eq!(
        ticker[1]["E"].as_i64().unwrap() - ticker[0]["E"].as_i64().unwrap(),
        1000
    );
    h.shutdown().await;
}
