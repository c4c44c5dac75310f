//! The signed Binance spot client against the simulator's trading endpoints over real loopback
//! sockets: signatures, clock skew, filters, order types, the user-data stream, retries that
//! never double an order, rate limits.
//!
//! The simulator runs in strict mode (Binance's rules where the default is kinder): a filled
//! market order is invisible to queries for a while although its client id is free again,
//! trades are listed late, user-data reports come after the REST reply, and the account starts
//! with USDT only.

use std::sync::Arc;
use std::time::Duration;

use mmtrader::exec::binance_spot::{
    BinanceSpot, BinanceSpotConfig, OrderKind, OrderSpec, OrderState, Tif,
};
use mmtrader::exec::rest::ExecError;
use mmtrader::exec::signing::{Credentials, Query, Secret};
use mmtrader::exec::user_stream::{UserEvent, UserStream, UserStreamConfig};
use mmtrader::exec::wire::AccountTrade;
use mmtrader::exec::wire::UserStreamEvent;
use mmtrader::market::types::{Price, Qty, Side};
use mmtrader::sim::accounts::{DEFAULT_API_KEY, DEFAULT_SECRET, SimTradingConfig};
use mmtrader::sim::trading::OrderFault;
use mmtrader::sim::{SimConfig, SimHandle, start};
use reqwest::Method;

#[path = "common/book_ticker.rs"]
mod book_ticker;

const SYM: &str = "ETHUSDT";

fn cfg(sim: &SimHandle, timeout_ms: u64) -> BinanceSpotConfig {
    BinanceSpotConfig {
        rest_url: sim.rest_url(),
        ws_url: sim.ws_url(),
        timeout_ms,
        unknown_settle_ms: 50,
        ..BinanceSpotConfig::default()
    }
}

async fn client_with(sim: &SimHandle, secret: &str, timeout_ms: u64) -> BinanceSpot {
    let c = BinanceSpot::new(
        cfg(sim, timeout_ms),
        Credentials {
            api_key: DEFAULT_API_KEY.into(),
            secret: Secret::new(secret),
        },
    )
    .unwrap();
    c.rest().sync_time().await.unwrap();
    assert_eq!(c.load_instruments().await.unwrap(), 2);
    c
}

async fn client(sim: &SimHandle) -> BinanceSpot {
    client_with(sim, DEFAULT_SECRET, 5000).await
}

fn strict() -> SimConfig {
    SimConfig {
        trading: SimTradingConfig::strict_default(),
        ..SimConfig::default()
    }
}

async fn sim() -> SimHandle {
    start(strict()).await.unwrap()
}

/// The strict account holds USDT only: buys the base asset a sell needs.
async fn buy_eth(c: &BinanceSpot, qty: &str, id: &str) {
    let o = c
        .place(&spec(Side::Buy, qty, OrderKind::Market, id))
        .await
        .unwrap();
    assert_eq!(o.status, Some(OrderState::Filled));
}

/// The account's trades of an order once the venue lists them all (strict mode lists them
/// late).
async fn trades_of(c: &BinanceSpot, o: &mmtrader::exec::wire::ExchangeOrder) -> Vec<AccountTrade> {
    for _ in 0..100 {
        let t = c.my_trades(SYM, Some(&o.order_id)).await.unwrap();
        if t.iter().fold(Qty::ZERO, |a, t| a + t.qty) >= o.executed_qty {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("trades of order {} not listed within 10 s", o.order_id);
}

/// An order once the venue shows it (strict mode hides one that filled at once for a while).
async fn query_visible(c: &BinanceSpot, id: &str) -> mmtrader::exec::wire::ExchangeOrder {
    for _ in 0..100 {
        match c.query(SYM, id).await {
            Ok(o) => return o,
            Err(e) if e.code() == Some(-2013) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {id} not visible within 10 s");
}

/// Best bid and ask of ETHUSDT from the public book ticker.
async fn top(sim: &SimHandle) -> (Price, Price) {
    book_ticker::book_ticker(sim, SYM).await
}

fn q(s: &str) -> Qty {
    Qty::parse(s).unwrap()
}

fn spec(side: Side, qty: &str, kind: OrderKind, id: &str) -> OrderSpec {
    OrderSpec {
        symbol: SYM.into(),
        side,
        qty: q(qty),
        kind,
        client_id: id.into(),
    }
}

async fn balance(c: &BinanceSpot, asset: &str) -> (Qty, Qty) {
    let b = c.balances().await.unwrap();
    // An asset the account never held is not listed.
    b.iter()
        .find(|b| b.asset == asset)
        .map_or((Qty::ZERO, Qty::ZERO), |a| (a.free, a.locked))
}

/// Polls an order until `done` holds (the simulated market has to move), at most `secs`.
async fn wait_order(
    c: &BinanceSpot,
    ids: &[&str],
    secs: u64,
    done: impl Fn(&OrderState) -> bool,
) -> Option<String> {
    for _ in 0..secs * 5 {
        for id in ids {
            let o = c.query(SYM, id).await.unwrap();
            if o.status.as_ref().is_some_and(&done) {
                return Some(id.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

#[tokio::test]
async fn bad_signature_and_unknown_key_are_rejected_with_binance_codes() {
    let sim = sim().await;
    let wrong = client_with(&sim, "not-the-secret", 5000).await;
    let e = wrong
        .place(&spec(Side::Buy, "0.01", OrderKind::Market, "sig-1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(-1022), "{e}");
    let stranger = BinanceSpot::new(
        cfg(&sim, 5000),
        Credentials {
            api_key: "nobody".into(),
            secret: Secret::new(DEFAULT_SECRET),
        },
    )
    .unwrap();
    let e = stranger.balances().await.unwrap_err();
    assert!(
        matches!(
            e,
            ExecError::Rejected {
                status: 401,
                code: -2015,
                ..
            }
        ),
        "{e}"
    );
    // The real secret works, and nothing from the failed attempt reached the engine.
    let c = client(&sim).await;
    assert_eq!(sim.trading().orders_with_client_id(0, "sig-1"), 0);
    c.place(&spec(Side::Buy, "0.01", OrderKind::Market, "sig-1"))
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn clock_skew_is_corrected_after_a_timestamp_rejection() {
    let sim = sim().await;
    let c = client(&sim).await;
    assert!(c.rest().clock_offset_ms().abs() < 1000);
    for skew in [30_000i64, -30_000] {
        sim.set_clock_offset_ms(skew);
        // The stale offset makes the first attempt fail with -1021; one re-sync fixes it.
        let b = c.balances().await.unwrap();
        assert!(b.iter().any(|a| a.asset == "USDT"));
        assert!(
            (c.rest().clock_offset_ms() - skew).abs() < 1000,
            "offset {} after skew {skew}",
            c.rest().clock_offset_ms()
        );
    }
    // A raw request with a timestamp outside recvWindow gets Binance's error.
    sim.set_clock_offset_ms(0);
    let stale = Query::new().with("recvWindow", "5000").with(
        "timestamp",
        (mmtrader::exec::rest::local_ms() - 60_000).to_string(),
    );
    let mut q = stale.signed(&Secret::new(DEFAULT_SECRET));
    q.insert(0, '?');
    let r = reqwest::Client::new()
        .get(format!("{}/api/v3/account{q}", sim.rest_url()))
        .header("X-MBX-APIKEY", DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], -1021);
    sim.shutdown().await;
}

#[tokio::test]
async fn filters_are_applied_locally_and_enforced_by_the_exchange() {
    let sim = sim().await;
    let c = client(&sim).await;
    let (bid, _) = top(&sim).await;
    // Below the minimum notional: refused before sending.
    let e = c
        .place(&spec(
            Side::Buy,
            "0.001",
            OrderKind::Limit {
                price: bid,
                tif: Tif::Gtc,
            },
            "f-1",
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, ExecError::Filter(_)), "{e}");
    assert_eq!(sim.trading().orders_with_client_id(0, "f-1"), 0);
    // Off-tick price and off-step quantity are rounded (buy: price down) and accepted.
    let far = bid - Price::parse("100").unwrap();
    let o = c
        .place(&spec(
            Side::Buy,
            "0.012345",
            OrderKind::Limit {
                price: far + Price::parse("0.004").unwrap(),
                tif: Tif::Gtc,
            },
            "f-2",
        ))
        .await
        .unwrap();
    assert_eq!(o.price, far);
    assert_eq!(o.orig_qty, q("0.0123"));
    assert_eq!(o.status, Some(OrderState::New));
    // The exchange itself enforces the filters on a raw request (-1013).
    for (params, filter) in [
        ("price=2000.001&quantity=0.01", "PRICE_FILTER"),
        ("price=2000&quantity=0.000011", "LOT_SIZE"),
        ("price=2000&quantity=0.001", "NOTIONAL"),
    ] {
        let mut raw = Query::new()
            .with("symbol", SYM)
            .with("side", "BUY")
            .with("type", "LIMIT")
            .with("timeInForce", "GTC");
        for kv in params.split('&') {
            let (k, v) = kv.split_once('=').unwrap();
            raw.push(k, v);
        }
        let e = c
            .rest()
            .signed(Method::POST, "/api/v3/order", &raw, 1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(-1013), "{e}");
        assert!(e.to_string().contains(filter), "{e}");
    }
    // A duplicate client id of an open order is rejected, and resolves to the existing order.
    let again = c
        .place(&spec(
            Side::Buy,
            "0.0123",
            OrderKind::Limit {
                price: far,
                tif: Tif::Gtc,
            },
            "f-2",
        ))
        .await
        .unwrap();
    assert_eq!(again.order_id, o.order_id);
    assert_eq!(sim.trading().orders_with_client_id(0, "f-2"), 1);
    let canceled = c.cancel(SYM, "f-2").await.unwrap();
    assert_eq!(canceled.status, Some(OrderState::Canceled));
    assert_eq!(canceled.client_order_id, "f-2");
    sim.shutdown().await;
}

#[tokio::test]
async fn market_orders_walk_the_book_and_settle_balances() {
    let sim = sim().await;
    let c = client(&sim).await;
    let (eth0, _) = balance(&c, "ETH").await;
    let (usdt0, _) = balance(&c, "USDT").await;
    let o = c
        .place(&spec(Side::Buy, "0.5", OrderKind::Market, "m-1"))
        .await
        .unwrap();
    assert_eq!(o.status, Some(OrderState::Filled));
    assert_eq!(o.executed_qty, q("0.5"));
    assert!(!o.fills.is_empty());
    let fee: Qty = o.fills.iter().fold(Qty::ZERO, |a, f| a + f.commission);
    assert_eq!(fee, q("0.0005"), "10 bps of the base received");
    let (eth1, _) = balance(&c, "ETH").await;
    let (usdt1, _) = balance(&c, "USDT").await;
    assert_eq!(eth1, eth0 + q("0.5") - fee);
    assert_eq!(usdt1, usdt0 - o.cum_quote);
    let trades = trades_of(&c, &o).await;
    assert_eq!(trades.len(), o.fills.len());
    assert!(trades.iter().all(|t| t.is_buyer && !t.is_maker));
    sim.shutdown().await;
}

#[tokio::test]
async fn limit_orders_rest_and_fill_when_the_market_trades_through() {
    let sim = sim().await;
    let c = client(&sim).await;
    buy_eth(&c, "0.02", "l-0").await;
    let (bid, ask) = top(&sim).await;
    // A few ticks off the touch, so the book cannot cross them between quote and placement.
    let off = Price::parse("0.05").unwrap();
    let (bid, ask) = (bid - off, ask + off);
    let limit = |price| OrderKind::Limit {
        price,
        tif: Tif::Gtc,
    };
    let b = c
        .place(&spec(Side::Buy, "0.01", limit(bid), "l-buy"))
        .await
        .unwrap();
    let s = c
        .place(&spec(Side::Sell, "0.01", limit(ask), "l-sell"))
        .await
        .unwrap();
    assert_eq!(b.status, Some(OrderState::New));
    assert_eq!(s.status, Some(OrderState::New));
    assert_eq!(c.open_orders(Some(SYM)).await.unwrap().len(), 2);
    let (_, locked) = balance(&c, "ETH").await;
    assert_eq!(locked, q("0.01"));
    // Either side of the touch is traded through as the simulated market moves.
    let filled = wait_order(&c, &["l-buy", "l-sell"], 90, |s| {
        matches!(s, OrderState::Filled | OrderState::PartiallyFilled)
    })
    .await
    .expect("a resting order at the touch fills within 90 s");
    let o = c.query(SYM, &filled).await.unwrap();
    let trades = trades_of(&c, &o).await;
    assert!(
        trades.iter().all(|t| t.is_maker),
        "resting fills are maker fills"
    );
    let expected = if filled == "l-buy" { bid } else { ask };
    assert!(trades.iter().all(|t| t.price == expected));
    sim.shutdown().await;
}

#[tokio::test]
async fn stop_orders_trigger_on_the_last_price() {
    let sim = sim().await;
    let c = client(&sim).await;
    buy_eth(&c, "0.02", "s-0").await;
    let (bid, ask) = top(&sim).await;
    // A stop that would trigger at once is refused by the exchange.
    let e = c
        .place(&spec(
            Side::Sell,
            "0.01",
            OrderKind::StopLoss {
                stop: ask + Price::parse("50").unwrap(),
            },
            "s-bad",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(-2010), "{e}");
    assert!(e.to_string().contains("trigger immediately"), "{e}");
    // Stops a few ticks either side of the touch; the market may already have moved past one
    // (then the exchange says it would trigger at once) so those are moved further out.
    let mut gap = Price::parse("0.03").unwrap();
    loop {
        let r = c
            .place(&spec(
                Side::Sell,
                "0.01",
                OrderKind::StopLoss { stop: bid - gap },
                "s-sell",
            ))
            .await;
        match r {
            Ok(_) => break,
            Err(e) if e.code() == Some(-2010) => gap += Price::parse("0.5").unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    let mut gap = Price::parse("0.03").unwrap();
    loop {
        let r = c
            .place(&spec(
                Side::Buy,
                "0.01",
                OrderKind::StopLossLimit {
                    stop: ask + gap,
                    price: ask + gap + Price::parse("5").unwrap(),
                    tif: Tif::Gtc,
                },
                "s-buy",
            ))
            .await;
        match r {
            Ok(_) => break,
            Err(e) if e.code() == Some(-2010) => gap += Price::parse("0.5").unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    let fired = wait_order(&c, &["s-sell", "s-buy"], 90, |s| {
        matches!(s, OrderState::Filled | OrderState::PartiallyFilled)
    })
    .await
    .expect("one of two stops around the touch triggers within 90 s");
    let o = c.query(SYM, &fired).await.unwrap();
    assert!(o.executed_qty > Qty::ZERO);
    sim.shutdown().await;
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<UserEvent>) -> UserEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("user event within 10 s")
        .expect("stream open")
}

#[tokio::test]
async fn user_data_stream_delivers_acks_fills_and_balances() {
    let sim = sim().await;
    let c = Arc::new(client(&sim).await);
    buy_eth(&c, "0.3", "u-0").await;
    // Its reports are delivered late; let them pass before the stream opens.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut us = UserStream::spawn(
        c.clone(),
        UserStreamConfig {
            ws_url: sim.ws_url(),
            keepalive: Duration::from_millis(300),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        },
    );
    assert_eq!(next(&mut us.events).await, UserEvent::Connected);
    let o = c
        .place(&spec(Side::Sell, "0.2", OrderKind::Market, "u-1"))
        .await
        .unwrap();
    let (mut new, mut fills, mut balances) = (false, Qty::ZERO, false);
    while !(new && fills == q("0.2") && balances) {
        match next(&mut us.events).await {
            UserEvent::Event(UserStreamEvent::Execution(r)) => {
                assert_eq!(r.client_order_id, "u-1");
                assert_eq!(r.order_id, o.order_id);
                match r.exec_type.as_str() {
                    "NEW" => new = true,
                    "TRADE" => {
                        assert!(r.trade_id > 0);
                        assert_eq!(r.commission_asset.as_deref(), Some("USDT"));
                        fills += r.last_qty;
                    }
                    other => panic!("unexpected execution type {other}"),
                }
            }
            UserEvent::Event(UserStreamEvent::Balances(b)) => {
                balances |= b.iter().any(|a| a.asset == "ETH");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // A dropped connection is re-established with a fresh session.
    sim.disconnect_all().unwrap();
    loop {
        match next(&mut us.events).await {
            UserEvent::Connected => break,
            UserEvent::Disconnected(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    c.place(&spec(Side::Buy, "0.01", OrderKind::Market, "u-2"))
        .await
        .unwrap();
    loop {
        if let UserEvent::Event(UserStreamEvent::Execution(r)) = next(&mut us.events).await
            && r.client_order_id == "u-2"
            && r.exec_type == "TRADE"
        {
            break;
        }
    }
    us.shutdown().await;
    sim.shutdown().await;
}

/// A client that times out after `timeout_ms`, with a short recvWindow and a visibility
/// margin just above the strict simulator's 1.5 s query delay, so verdicts come quickly.
async fn quick_client(sim: &SimHandle, timeout_ms: u64) -> BinanceSpot {
    let c = BinanceSpot::new(
        BinanceSpotConfig {
            recv_window_ms: 1000,
            visibility_margin_ms: 2500,
            resolve_backoff_max_ms: 300,
            ..cfg(sim, timeout_ms)
        },
        Credentials {
            api_key: DEFAULT_API_KEY.into(),
            secret: Secret::new(DEFAULT_SECRET),
        },
    )
    .unwrap();
    c.rest().sync_time().await.unwrap();
    c.load_instruments().await.unwrap();
    c
}

#[tokio::test]
async fn retries_after_injected_faults_never_double_an_order() {
    let sim = sim().await;
    let c = quick_client(&sim, 1000).await;
    // 1: the response is lost after the engine filled the order (client timeout); the fill is
    // invisible to a lookup for 1.5 s while its client id is already free again, so a resend
    // would execute a second time. It is resolved by asking until the venue shows it.
    sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(3)));
    let o = c
        .place(&spec(Side::Buy, "0.05", OrderKind::Market, "r-1"))
        .await
        .unwrap();
    assert_eq!(o.status, Some(OrderState::Filled));
    assert_eq!(
        o.fills.iter().fold(Qty::ZERO, |a, f| a + f.qty),
        q("0.05"),
        "the resolved order comes with all its fills"
    );
    assert_eq!(sim.trading().orders_with_client_id(0, "r-1"), 1);
    // 2: 5xx with "execution status unknown" after the engine took it.
    sim.inject_order_fault(OrderFault::UnknownAfterEngine);
    let (bid, _) = top(&sim).await;
    let o = c
        .place(&spec(
            Side::Buy,
            "0.01",
            OrderKind::Limit {
                price: bid - Price::parse("200").unwrap(),
                tif: Tif::Gtc,
            },
            "r-2",
        ))
        .await
        .unwrap();
    assert_eq!(o.status, Some(OrderState::New));
    assert_eq!(sim.trading().orders_with_client_id(0, "r-2"), 1);
    // 3: 5xx before the engine saw it: nothing resends it; once its request can no longer
    // execute (timestamp + recvWindow + margin) it is reported as never received.
    sim.inject_order_fault(OrderFault::UnavailableBeforeEngine);
    let sent = std::time::Instant::now();
    let e = c
        .place(&spec(Side::Buy, "0.05", OrderKind::Market, "r-3"))
        .await
        .unwrap_err();
    assert!(matches!(e, ExecError::NotReceived { .. }), "{e}");
    assert!(e.to_string().contains("not resent"), "{e}");
    assert!(
        sent.elapsed() >= Duration::from_millis(3500),
        "verdict too early"
    );
    assert_eq!(sim.trading().orders_with_client_id(0, "r-3"), 0);
    let r1 = query_visible(&c, "r-1").await;
    let r1_qty = trades_of(&c, &r1)
        .await
        .iter()
        .fold(Qty::ZERO, |a, t| a + t.qty);
    assert_eq!(r1_qty, q("0.05"), "filled once, not twice");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_in_doubt_order_is_found_through_its_trades_before_it_is_queryable() {
    // The lookup by client id lags 6 s, far past the verdict time (1 s + 2.5 s); the trade is
    // listed after 0.2 s and names the order by id. Without the trade search the filled order
    // would be declared never received.
    let sim = start(SimConfig {
        trading: SimTradingConfig {
            query_delay_ms: 6000,
            trades_delay_ms: 200,
            ..SimTradingConfig::strict_default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = quick_client(&sim, 500).await;
    sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(2)));
    let sent = std::time::Instant::now();
    let o = c
        .place(&spec(Side::Buy, "0.02", OrderKind::Market, "t-1"))
        .await
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "found before it was queryable"
    );
    assert_eq!(o.client_order_id, "t-1");
    assert_eq!(o.status, Some(OrderState::Filled));
    assert_eq!(o.fills.iter().fold(Qty::ZERO, |a, f| a + f.qty), q("0.02"));
    assert_eq!(c.query(SYM, "t-1").await.unwrap_err().code(), Some(-2013));
    assert_eq!(sim.trading().orders_with_client_id(0, "t-1"), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_send_that_never_left_is_retried_under_the_same_id() {
    let mut sim = sim().await;
    let c = Arc::new(
        BinanceSpot::new(
            BinanceSpotConfig {
                place_attempts: 20,
                unknown_settle_ms: 100,
                resolve_backoff_max_ms: 200,
                ..cfg(&sim, 2000)
            },
            Credentials {
                api_key: DEFAULT_API_KEY.into(),
                secret: Secret::new(DEFAULT_SECRET),
            },
        )
        .unwrap(),
    );
    c.rest().sync_time().await.unwrap();
    c.load_instruments().await.unwrap();
    // The port refuses connections: nothing leaves, so sending again is safe.
    sim.stop().await;
    let placing = {
        let c = c.clone();
        tokio::spawn(async move {
            c.place(&spec(Side::Buy, "0.01", OrderKind::Market, "c-1"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!placing.is_finished(), "still retrying while refused");
    sim.start_again().await.unwrap();
    let o = placing.await.unwrap().unwrap();
    assert_eq!(o.status, Some(OrderState::Filled));
    assert_eq!(sim.trading().orders_with_client_id(0, "c-1"), 1);
    // When the connection never comes back the order is refused as not sent.
    sim.stop().await;
    let e = BinanceSpot::new(
        BinanceSpotConfig {
            place_attempts: 2,
            unknown_settle_ms: 50,
            ..cfg(&sim, 2000)
        },
        Credentials {
            api_key: DEFAULT_API_KEY.into(),
            secret: Secret::new(DEFAULT_SECRET),
        },
    )
    .unwrap();
    e.set_instrument(c.instrument(SYM).unwrap());
    let err = e
        .place(&spec(Side::Buy, "0.01", OrderKind::Market, "c-2"))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Connect { .. }), "{err}");
    sim.start_again().await.unwrap();
    assert_eq!(sim.trading().orders_with_client_id(0, "c-2"), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn request_weight_limit_answers_429_and_the_client_backs_off() {
    let sim = start(SimConfig {
        weight_limit_per_minute: 60,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let c = client(&sim).await;
    let mut saw = None;
    for _ in 0..10 {
        match c.balances().await {
            Ok(_) => {}
            Err(e) => {
                saw = Some(e);
                break;
            }
        }
    }
    let e = saw.expect("the sim's 60/min weight limit is hit by 10 account calls");
    assert!(matches!(e, ExecError::RateLimited { .. }), "{e}");
    // While the back-off is in force the client refuses locally instead of earning a ban.
    let e = c.balances().await.unwrap_err();
    assert!(matches!(e, ExecError::Suspended { .. }), "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn errors_and_clients_never_show_the_secret() {
    let sim = sim().await;
    let secret = "a-very-distinctive-secret-9876";
    let c = client_with(&sim, secret, 5000).await;
    let e = c
        .place(&spec(Side::Buy, "0.01", OrderKind::Market, "x-1"))
        .await
        .unwrap_err();
    let shown = format!("{e:?} {e} {c:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(!shown.contains("signature="), "{shown}");
    sim.shutdown().await;
}

// ------------------------------------------------------------------ executor, journal, kill -9

use mmtrader::exec::executor::ExchangeExecutor;
use mmtrader::exec::reconcile::{ReconcileSummary, policy_for, reconcile_startup};

/// Start-up as the desk does it: reconcile, then send the intents the venue certainly never
/// saw (the desk's risk check approves them first; these tests' intents are all within limits).
async fn startup(c: &BinanceSpot, journal: &mut Journal, now: i64) -> ReconcileSummary {
    let policy = policy_for(c, 15_000);
    let summary = reconcile_startup(c, journal, &[SYM.to_string()], now, &policy)
        .await
        .unwrap();
    for (request, _) in &summary.to_resubmit {
        let inst = c.instrument(SYM).unwrap();
        let assets = mmtrader::exec::venue::Assets {
            base: inst.base_asset,
            quote: inst.quote_asset,
        };
        let events = match c.place(&mmtrader::exec::venue::spec_of(request)).await {
            Ok(reply) => mmtrader::exec::venue::events_of_reply(request, &assets, &reply),
            // A definite refusal (a strict account without the base asset to sell) ends it.
            Err(e @ mmtrader::exec::rest::ExecError::Rejected { .. }) => {
                vec![mmtrader::trading::order::ExecutionEvent::Rejected {
                    client_id: request.client_id.clone(),
                    reason: mmtrader::exec::venue::reject_reason(&e),
                    time_ms: now,
                }]
            }
            Err(e) => panic!("resubmitting {}: {e}", request.client_id),
        };
        for ev in events {
            journal.record(JournalRecord::Event(ev)).unwrap();
        }
    }
    summary
}
use mmtrader::market::instrument::Instrument;
use mmtrader::trading::executor::{ExecutionConfig, Executor, Protection};
use mmtrader::trading::journal::{Journal, JournalRecord};
use mmtrader::trading::money::Money;
use mmtrader::trading::order::{ClientIdGen, ExecutionEvent, OrderKind as TradeKind, OrderStatus};
use mmtrader::trading::risk::{OrderIntent, RiskConfig, RiskContext, RiskManager};

fn risk() -> RiskManager {
    RiskManager::new(
        RiskConfig {
            max_orders_per_minute: 100_000,
            ..RiskConfig::default()
        },
        &ExecutionConfig::default(),
    )
}

fn ctx<'a>(inst: &'a Instrument, price: Price, position: Qty) -> RiskContext<'a> {
    RiskContext {
        now_ms: mmtrader::exec::rest::local_ms(),
        instrument: inst,
        reference_price: price,
        equity: Money::from_units(100_000),
        position_qty: position,
        open_buy_qty: Qty::ZERO,
        open_sell_qty: Qty::ZERO,
        gross_exposure: Money::ZERO,
        open_order_exposure: Money::ZERO,
    }
}

fn stream_cfg(sim_ws: String) -> UserStreamConfig {
    UserStreamConfig {
        ws_url: sim_ws,
        keepalive: Duration::from_secs(60),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_fills_an_approved_entry_and_places_its_stop() {
    let sim = sim().await;
    let c = Arc::new(client(&sim).await);
    let inst = c.instrument(SYM).unwrap();
    let mut exec = ExchangeExecutor::start("sim", c.clone(), Some(stream_cfg(sim.ws_url())));
    let mut risk = risk();
    let (_, ask) = top(&sim).await;
    let now = mmtrader::exec::rest::local_ms();
    risk.on_market(SYM, ask, now);
    let id = mmtrader::trading::order::ClientOrderId::parse("ex-1").unwrap();
    let mut intent = OrderIntent::new(id.clone(), SYM, Side::Buy, TradeKind::Market);
    intent.qty = Some(q("0.02"));
    let approved = risk.check(intent, &ctx(&inst, ask, Qty::ZERO)).unwrap();
    let stop = approved
        .protection()
        .stop_loss
        .expect("entries carry a stop");
    exec.submit(approved).unwrap();
    let mut events = Vec::new();
    for _ in 0..100 {
        events.extend(exec.poll_events());
        let exit_open = exec.open_orders().iter().any(|o| {
            o.request.client_id.as_str() == "ex-1-s" && o.status == OrderStatus::Acknowledged
        });
        if exit_open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filled: Qty = events
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Filled(f) if f.client_id == id => Some(f.qty),
            _ => None,
        })
        .fold(Qty::ZERO, |a, b| a + b);
    assert_eq!(
        filled,
        q("0.02"),
        "REST reply and stream report the fills once: {events:?}"
    );
    assert_eq!(exec.order(&id).unwrap().status, OrderStatus::Filled);
    // The 10 bps commission was charged in ETH: the account holds 0.01998, and the stop can
    // sell only that (floored to the 0.0001 step), or the venue would refuse it.
    let pos = exec.positions();
    assert_eq!(pos[0].qty, q("0.01998"));
    let exit = c.query(SYM, "ex-1-s").await.unwrap();
    assert_eq!(exit.kind, "STOP_LOSS");
    assert_eq!(exit.side, Some(Side::Sell));
    assert_eq!(exit.orig_qty, q("0.0199"));
    assert_eq!(exit.status, Some(OrderState::New));
    assert!(stop < ask);
    // Cancelling through the executor reaches the venue and comes back as one event.
    let exit_id = mmtrader::trading::order::ClientOrderId::parse("ex-1-s").unwrap();
    exec.cancel(&exit_id).unwrap();
    let mut cancelled = 0;
    for _ in 0..50 {
        cancelled += exec
            .poll_events()
            .iter()
            .filter(|e| matches!(e, ExecutionEvent::Cancelled { client_id, .. } if *client_id == exit_id))
            .count();
        if cancelled > 0 && exec.open_orders().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cancelled, 1);
    assert_eq!(
        c.query(SYM, "ex-1-s").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    exec.shutdown();
    sim.shutdown().await;
}

const CHILD_ENV: &str = "MMTRADER_KILL9_CHILD";
const PREFIX: &str = "k9";

/// Child process of the kill -9 test: journals and places orders through the executor until
/// killed. Does nothing unless started by that test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of kill9_restart_never_loses_or_doubles_an_order"]
async fn kill9_child() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, dir) = arg.split_once('|').unwrap();
    let c = Arc::new(
        BinanceSpot::new(
            BinanceSpotConfig {
                rest_url: url.into(),
                ws_url: url.replace("http://", "ws://"),
                timeout_ms: 3000,
                unknown_settle_ms: 50,
                ..BinanceSpotConfig::default()
            },
            Credentials {
                api_key: DEFAULT_API_KEY.into(),
                secret: Secret::new(DEFAULT_SECRET),
            },
        )
        .unwrap(),
    );
    c.rest().sync_time().await.unwrap();
    c.load_instruments().await.unwrap();
    let inst = c.instrument(SYM).unwrap();
    let mut journal = Journal::open(std::path::Path::new(dir), PREFIX, true).unwrap();
    let now = mmtrader::exec::rest::local_ms();
    startup(&c, &mut journal, now).await;
    let mut ids = ClientIdGen::new(PREFIX, journal.state().next_seq()).unwrap();
    let adopted: Vec<_> = journal
        .state()
        .orders()
        .map(|(o, p)| (o.clone(), *p))
        .collect();
    let journal = Arc::new(std::sync::Mutex::new(journal));
    let mut exec = ExchangeExecutor::start(
        "sim",
        c.clone(),
        Some(stream_cfg(url.replace("http://", "ws://"))),
    );
    exec.adopt(adopted);
    let hook_journal = journal.clone();
    exec.set_exit_hook(Box::new(move |req| {
        hook_journal
            .lock()
            .unwrap()
            .record(JournalRecord::Intent {
                request: req.clone(),
                protection: Protection::default(),
                time_ms: mmtrader::exec::rest::local_ms(),
            })
            .is_ok()
    }));
    let mut risk = risk();
    let mut price = Price::ZERO;
    for i in 0u64.. {
        if i % 10 == 0 {
            let v: serde_json::Value =
                reqwest::get(format!("{url}/api/v3/ticker/bookTicker?symbol={SYM}"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            price = Price::parse(v["askPrice"].as_str().unwrap()).unwrap();
        }
        let now = mmtrader::exec::rest::local_ms();
        risk.on_market(SYM, price, now);
        let id = ids.next_id();
        let (side, kind) = match i % 3 {
            0 => (
                Side::Buy,
                TradeKind::Limit {
                    price: price - Price::parse("3").unwrap(),
                    post_only: false,
                },
            ),
            1 => (Side::Buy, TradeKind::Market),
            _ => (Side::Sell, TradeKind::Market),
        };
        let mut intent = OrderIntent::new(id, SYM, side, kind);
        intent.qty = Some(q("0.01"));
        let position = journal.lock().unwrap().state().position_qty(SYM);
        if let Ok(a) = risk.check(intent, &ctx(&inst, price, position)) {
            journal
                .lock()
                .unwrap()
                .record(JournalRecord::Intent {
                    request: a.request().clone(),
                    protection: *a.protection(),
                    time_ms: now,
                })
                .unwrap();
            exec.submit(a).unwrap();
        }
        if i % 5 == 4
            && let Some(o) = exec.open_orders().into_iter().find(|o| {
                matches!(o.request.kind, TradeKind::Limit { .. })
                    && o.status == OrderStatus::Acknowledged
            })
        {
            journal
                .lock()
                .unwrap()
                .record(JournalRecord::CancelRequest {
                    client_id: o.request.client_id.clone(),
                    time_ms: now,
                })
                .unwrap();
            let _ = exec.cancel(&o.request.client_id);
        }
        for ev in exec.poll_events() {
            journal
                .lock()
                .unwrap()
                .record(JournalRecord::Event(ev))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_restart_never_loses_or_doubles_an_order() {
    // Strict: a filled order answers -2013 by client id for a while, so reconciliation must
    // ask acknowledged orders by their venue id and probe unacknowledged ones among the
    // account's trades, never trusting "unknown order" before it is certain.
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..5 {
        let mut child = std::process::Command::new(&exe)
            .args(["kill9_child", "--exact", "--ignored", "--nocapture"])
            .env(
                CHILD_ENV,
                format!("{}|{}", sim.rest_url(), dir.path().display()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let after = 400 + next() % 2600;
        tokio::time::sleep(Duration::from_millis(after)).await;
        // Command::kill sends SIGKILL: no destructor, no flush, no goodbye.
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("kill9 seed {seed}: round {round} killed after {after} ms");
    }
    // Restart: reconcile the journal with the venue, as the application does at start-up.
    let c = client(&sim).await;
    let mut journal = Journal::open(dir.path(), PREFIX, true).unwrap();
    let now = mmtrader::exec::rest::local_ms();
    let summary = startup(&c, &mut journal, now).await;
    eprintln!(
        "kill9 seed {seed}: {} orders journaled; final reconciliation {summary:?}",
        journal.state().orders().count()
    );
    let state = journal.state();
    let journaled: std::collections::BTreeSet<String> = state
        .orders()
        .map(|(o, _)| o.client_id().as_str().to_string())
        .collect();
    assert!(
        journaled.len() >= 10,
        "the children placed orders (seed {seed})"
    );
    // No order on the venue that the journal does not know.
    for id in sim.trading().client_ids(0) {
        assert!(
            journaled.contains(&id),
            "venue order {id} is not journaled (seed {seed})"
        );
    }
    for (o, _) in state.orders() {
        let id = o.client_id().as_str();
        let n = sim.trading().orders_with_client_id(0, id);
        assert!(n <= 1, "order {id} placed {n} times (seed {seed})");
        if o.status != OrderStatus::Rejected {
            assert_eq!(n, 1, "order {id} ({:?}) was lost (seed {seed})", o.status);
        }
        if n == 1 {
            // Strict visibility: a just-filled order answers -2013 by client id for a while.
            let mut vo = c.query(SYM, id).await;
            for _ in 0..50 {
                if vo.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                vo = c.query(SYM, id).await;
            }
            let vo = vo.unwrap();
            if !o.status.is_open() {
                // Closed in the journal: the venue can no longer change it, so fills must agree.
                assert_eq!(
                    o.filled_qty, vo.executed_qty,
                    "fills of {id} differ between journal and venue (seed {seed})"
                );
            } else {
                // Open at reconciliation; the market may have filled more of it since.
                assert!(o.filled_qty <= vo.executed_qty, "{id} (seed {seed})");
            }
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn reconciliation_resubmits_unsent_intents_adopts_lost_events_and_cancels_strays() {
    let sim = sim().await;
    let c = client(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), "rc", true).unwrap();
    let (bid, _) = top(&sim).await;
    let id = |s: &str| mmtrader::trading::order::ClientOrderId::parse(s).unwrap();
    let request = |cid: &str, kind| mmtrader::trading::order::OrderRequest {
        client_id: id(cid),
        symbol: SYM.into(),
        side: Side::Buy,
        kind,
        qty: q("0.01"),
        reduce_only: false,
        time_in_force: mmtrader::trading::order::TimeInForce::Gtc,
    };
    let intent = |r, time_ms| JournalRecord::Intent {
        request: r,
        protection: Protection::default(),
        time_ms,
    };
    // Killed after journaling, before sending: 9 s ago (the venue's answer is certain by now
    // and the intent is young enough to send again), and a stale one from long ago.
    let young = mmtrader::exec::rest::local_ms() - 9_000;
    journal
        .record(intent(request("rc-1", TradeKind::Market), young))
        .unwrap();
    journal
        .record(intent(request("rc-3", TradeKind::Market), 1))
        .unwrap();
    // Killed after sending, before journaling what the venue said.
    let far = bid - Price::parse("300").unwrap();
    let resting = request(
        "rc-2",
        TradeKind::Limit {
            price: far,
            post_only: false,
        },
    );
    journal.record(intent(resting.clone(), 1)).unwrap();
    c.place(&mmtrader::exec::venue::spec_of(&resting))
        .await
        .unwrap();
    // An open venue order nobody journaled.
    c.place(&spec(
        Side::Buy,
        "0.01",
        OrderKind::Limit {
            price: far,
            tif: Tif::Gtc,
        },
        "stray-1",
    ))
    .await
    .unwrap();
    let now = mmtrader::exec::rest::local_ms();
    let policy = policy_for(&c, 15_000);
    let s = reconcile_startup(&c, &mut journal, &[SYM.to_string()], now, &policy)
        .await
        .unwrap();
    let handed_back: Vec<_> = s
        .to_resubmit
        .iter()
        .map(|(r, _)| r.client_id.clone())
        .collect();
    assert_eq!(handed_back, vec![id("rc-1")]);
    assert_eq!(
        sim.trading().orders_with_client_id(0, "rc-1"),
        0,
        "reconciliation itself never sends"
    );
    assert_eq!(s.stale_rejected, vec![id("rc-3")]);
    assert_eq!(
        journal.state().order(&id("rc-3")).unwrap().status,
        OrderStatus::Rejected,
        "a stale intent ends in the journal"
    );
    assert_eq!(s.strays_cancelled, vec![id("stray-1")]);
    // What the desk does next once its risk check approves: send rc-1 under its own id.
    let s2 = startup(&c, &mut journal, now).await;
    assert_eq!(s2.to_resubmit.len(), 1);
    assert!(s.adopted >= 1);
    let st = journal.state();
    assert_eq!(st.order(&id("rc-1")).unwrap().status, OrderStatus::Filled);
    assert_eq!(
        st.order(&id("rc-2")).unwrap().status,
        OrderStatus::Acknowledged
    );
    for cid in ["rc-1", "rc-2", "stray-1"] {
        assert_eq!(sim.trading().orders_with_client_id(0, cid), 1, "{cid}");
    }
    assert_eq!(
        c.query(SYM, "stray-1").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    assert_eq!(sim.trading().orders_with_client_id(0, "rc-3"), 0);
    // Everything agrees now: a second pass does nothing.
    let s = reconcile_startup(&c, &mut journal, &[SYM.to_string()], now, &policy)
        .await
        .unwrap();
    assert_eq!(s, Default::default());
    sim.shutdown().await;
}

/// The MEXC executor speaks MEXC's dialect to the simulator, which accepts it (its key header,
/// IOC and FOK as order types): immediate orders fill or expire, a resting order is listed and
/// canceled, and the fills are in the account's trades, which is how MEXC fills are learned.
#[tokio::test]
async fn the_mexc_client_trades_against_the_simulator_in_its_own_dialect() {
    let sim = sim().await;
    let c = mmtrader::exec::mexc_spot::client(
        cfg(&sim, 5000),
        Credentials {
            api_key: DEFAULT_API_KEY.into(),
            secret: Secret::new(DEFAULT_SECRET),
        },
    )
    .unwrap();
    assert_eq!(c.rest().dialect().key_header, "X-MEXC-APIKEY");
    c.rest().sync_time().await.unwrap();
    assert_eq!(c.load_instruments().await.unwrap(), 2);
    let (bid, ask) = top(&sim).await;
    let limit = |side, qty, price, tif, id| spec(side, qty, OrderKind::Limit { price, tif }, id);
    // Through the ask, IMMEDIATE_OR_CANCEL fills at once.
    let above = ask + Price::parse("50").unwrap();
    let ioc = c
        .place(&limit(Side::Buy, "0.05", above, Tif::Ioc, "mx-ioc"))
        .await
        .unwrap();
    assert_eq!(ioc.status, Some(OrderState::Filled), "{ioc:?}");
    assert_eq!(ioc.executed_qty, q("0.05"));
    // FILL_OR_KILL far below the ask cannot fill: it expires with nothing done.
    let below = bid - Price::parse("100").unwrap();
    let fok = c
        .place(&limit(Side::Buy, "0.05", below, Tif::Fok, "mx-fok"))
        .await
        .unwrap();
    assert_eq!(fok.status, Some(OrderState::Expired), "{fok:?}");
    assert_eq!(fok.executed_qty, Qty::ZERO);
    // A plain LIMIT rests, is listed, and is canceled.
    let rest = c
        .place(&limit(Side::Buy, "0.05", below, Tif::Gtc, "mx-gtc"))
        .await
        .unwrap();
    assert_eq!(rest.status, Some(OrderState::New));
    let open = c.open_orders(Some(SYM)).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].client_order_id, "mx-gtc");
    let canceled = c.cancel(SYM, "mx-gtc").await.unwrap();
    assert_eq!(canceled.status, Some(OrderState::Canceled));
    assert_eq!(
        query_visible(&c, "mx-ioc").await.status,
        Some(OrderState::Filled)
    );
    let trades = trades_of(&c, &ioc).await;
    let filled: Qty = trades.iter().fold(Qty::ZERO, |a, t| a + t.qty);
    assert_eq!(filled, q("0.05"));
    sim.shutdown().await;
}

// ------------------------------------------- executor: in doubt, cancels, late fills (strict)

/// An executor over [`quick_client`]: verdicts on lost orders after ~3.5 s.
async fn quick_executor(
    sim: &SimHandle,
    timeout_ms: u64,
    stream: bool,
) -> (Arc<BinanceSpot>, ExchangeExecutor) {
    let c = Arc::new(quick_client(sim, timeout_ms).await);
    let exec = ExchangeExecutor::start("sim", c.clone(), stream.then(|| stream_cfg(sim.ws_url())));
    (c, exec)
}

fn cid(s: &str) -> mmtrader::trading::order::ClientOrderId {
    mmtrader::trading::order::ClientOrderId::parse(s).unwrap()
}

/// Submits an approved order of `qty` through the executor.
async fn submit(
    exec: &mut ExchangeExecutor,
    c: &BinanceSpot,
    sim: &SimHandle,
    id: &str,
    side: Side,
    kind: TradeKind,
    qty: &str,
) {
    let inst = c.instrument(SYM).unwrap();
    // Room for an order larger than the best ask's depth (a partial fill at once).
    let mut risk = RiskManager::new(
        RiskConfig {
            max_orders_per_minute: 100_000,
            max_position_notional: Money::from_units(50_000),
            ..RiskConfig::default()
        },
        &ExecutionConfig::default(),
    );
    let (_, ask) = top(sim).await;
    risk.on_market(SYM, ask, mmtrader::exec::rest::local_ms());
    let mut intent = OrderIntent::new(cid(id), SYM, side, kind);
    intent.qty = Some(q(qty));
    let approved = risk.check(intent, &ctx(&inst, ask, Qty::ZERO)).unwrap();
    exec.submit(approved).unwrap();
}

/// Collects the executor's events about `id` until `done` holds or `secs` pass.
async fn events_of(
    exec: &mut ExchangeExecutor,
    id: &str,
    secs: u64,
    all: &mut Vec<ExecutionEvent>,
    done: impl Fn(&[ExecutionEvent]) -> bool,
) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        all.extend(
            exec.poll_events()
                .into_iter()
                .filter(|e| e.client_id().as_str() == id),
        );
        if done(all) {
            return true;
        }
        if std::time::Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn filled(evs: &[ExecutionEvent]) -> Qty {
    evs.iter()
        .filter_map(|e| match e {
            ExecutionEvent::Filled(f) => Some(f.qty),
            _ => None,
        })
        .fold(Qty::ZERO, |a, b| a + b)
}

fn count(evs: &[ExecutionEvent], what: fn(&ExecutionEvent) -> bool) -> usize {
    evs.iter().filter(|e| what(e)).count()
}

fn trade_ids_unique(evs: &[ExecutionEvent]) -> bool {
    let ids: Vec<&str> = evs
        .iter()
        .filter_map(|e| match e {
            ExecutionEvent::Filled(f) => Some(f.trade_id.as_str()),
            _ => None,
        })
        .collect();
    let set: std::collections::BTreeSet<&&str> = ids.iter().collect();
    set.len() == ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_resolves_a_lost_reply_to_its_one_real_fill() {
    let sim = sim().await;
    // With the user-data stream (its delayed reports settle the doubt) and without it (MEXC's
    // way: lookups and the trade list settle it).
    for (stream, id) in [(true, "lr-1"), (false, "lr-2")] {
        let (c, mut exec) = quick_executor(&sim, 1000, stream).await;
        sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(3)));
        submit(
            &mut exec,
            &c,
            &sim,
            id,
            Side::Buy,
            TradeKind::Market,
            "0.03",
        )
        .await;
        let mut evs = Vec::new();
        let done = events_of(&mut exec, id, 15, &mut evs, |e| filled(e) == q("0.03")).await;
        assert!(
            done,
            "the lost reply resolved to its fill ({stream}): {evs:?}"
        );
        // Past the time a never-received verdict would come: nothing more happens.
        events_of(&mut exec, id, 5, &mut evs, |_| false).await;
        assert_eq!(filled(&evs), q("0.03"), "reported once ({stream}): {evs:?}");
        assert!(trade_ids_unique(&evs), "{evs:?}");
        assert_eq!(
            count(&evs, |e| matches!(e, ExecutionEvent::Acknowledged { .. })),
            1
        );
        assert_eq!(
            count(&evs, |e| matches!(e, ExecutionEvent::Rejected { .. })),
            0
        );
        assert_eq!(
            sim.trading().orders_with_client_id(0, id),
            1,
            "executed once"
        );
        let o = exec.order(&cid(id)).unwrap();
        assert_eq!((o.status, o.filled_qty), (OrderStatus::Filled, q("0.03")));
        exec.shutdown();
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_reports_an_order_that_never_reached_the_engine_as_rejected_not_resent() {
    let sim = sim().await;
    let (c, mut exec) = quick_executor(&sim, 1000, true).await;
    sim.inject_order_fault(OrderFault::UnavailableBeforeEngine);
    let sent = std::time::Instant::now();
    submit(
        &mut exec,
        &c,
        &sim,
        "nr-1",
        Side::Buy,
        TradeKind::Market,
        "0.03",
    )
    .await;
    let mut evs = Vec::new();
    let done = events_of(&mut exec, "nr-1", 15, &mut evs, |e| {
        count(e, |e| matches!(e, ExecutionEvent::Rejected { .. })) > 0
    })
    .await;
    assert!(done, "a verdict comes: {evs:?}");
    assert!(
        sent.elapsed() >= Duration::from_millis(3500),
        "not before the request expired"
    );
    let ExecutionEvent::Rejected { reason, .. } = &evs[0] else {
        panic!("only the rejection: {evs:?}")
    };
    assert!(reason.to_string().contains("not resent"), "{reason}");
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(
        sim.trading().orders_with_client_id(0, "nr-1"),
        0,
        "never sent again"
    );
    assert_eq!(
        exec.order(&cid("nr-1")).unwrap().status,
        OrderStatus::Rejected
    );
    exec.shutdown();
    sim.shutdown().await;
}

/// A resting buy far below the market, acknowledged by the executor.
async fn resting_buy(exec: &mut ExchangeExecutor, c: &BinanceSpot, sim: &SimHandle, id: &str) {
    let (bid, _) = top(sim).await;
    let price = bid - Price::parse("300").unwrap();
    submit(
        exec,
        c,
        sim,
        id,
        Side::Buy,
        TradeKind::Limit {
            price,
            post_only: false,
        },
        "0.01",
    )
    .await;
    let mut evs = Vec::new();
    assert!(
        events_of(exec, id, 10, &mut evs, |e| {
            count(e, |e| matches!(e, ExecutionEvent::Acknowledged { .. })) == 1
        })
        .await,
        "{evs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_retries_a_failed_cancel_until_the_order_is_closed() {
    let sim = sim().await;
    let (c, mut exec) = quick_executor(&sim, 1000, true).await;
    resting_buy(&mut exec, &c, &sim, "cx-1").await;
    // Two cancels that never reach the engine, then one whose reply is lost after it worked.
    sim.inject_cancel_fault(OrderFault::UnavailableBeforeEngine);
    sim.inject_cancel_fault(OrderFault::UnavailableBeforeEngine);
    sim.inject_cancel_fault(OrderFault::UnknownAfterEngine);
    exec.cancel(&cid("cx-1")).unwrap();
    let mut evs = Vec::new();
    let done = events_of(&mut exec, "cx-1", 15, &mut evs, |e| {
        count(e, |e| matches!(e, ExecutionEvent::Cancelled { .. })) > 0
    })
    .await;
    assert!(
        done,
        "the cancel is retried until the venue closed the order: {evs:?}"
    );
    events_of(&mut exec, "cx-1", 2, &mut evs, |_| false).await;
    assert_eq!(
        count(&evs, |e| matches!(e, ExecutionEvent::Cancelled { .. })),
        1,
        "{evs:?}"
    );
    assert_eq!(
        c.query(SYM, "cx-1").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    assert!(exec.open_orders().is_empty());
    assert_eq!(sim.trading().orders_with_client_id(0, "cx-1"), 1);
    exec.shutdown();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_in_doubt_order_is_never_placed_and_cancelled_if_it_exists() {
    let sim = sim().await;
    let (c, mut exec) = quick_executor(&sim, 1000, true).await;
    // 1: its reply is lost but the order rests on the venue: found, then cancelled.
    sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(3)));
    let (bid, _) = top(&sim).await;
    let far = TradeKind::Limit {
        price: bid - Price::parse("300").unwrap(),
        post_only: false,
    };
    submit(&mut exec, &c, &sim, "dc-1", Side::Buy, far, "0.01").await;
    exec.cancel(&cid("dc-1")).unwrap();
    let mut evs = Vec::new();
    let done = events_of(&mut exec, "dc-1", 15, &mut evs, |e| {
        count(e, |e| matches!(e, ExecutionEvent::Cancelled { .. })) > 0
    })
    .await;
    assert!(done, "{evs:?}");
    assert_eq!(
        query_visible(&c, "dc-1").await.status,
        Some(OrderState::Canceled)
    );
    assert_eq!(sim.trading().orders_with_client_id(0, "dc-1"), 1);
    // 2: it never reached the engine: nothing places it, it ends rejected.
    sim.inject_order_fault(OrderFault::UnavailableBeforeEngine);
    submit(&mut exec, &c, &sim, "dc-2", Side::Buy, far, "0.01").await;
    exec.cancel(&cid("dc-2")).unwrap();
    let mut evs = Vec::new();
    let done = events_of(&mut exec, "dc-2", 15, &mut evs, |e| {
        count(e, |e| matches!(e, ExecutionEvent::Rejected { .. })) > 0
    })
    .await;
    assert!(done, "{evs:?}");
    events_of(&mut exec, "dc-2", 2, &mut evs, |_| false).await;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(
        sim.trading().orders_with_client_id(0, "dc-2"),
        0,
        "never placed"
    );
    assert_eq!(sim.trading().open_order_count(0), 0);
    exec.shutdown();
    sim.shutdown().await;
}

/// Best ask and the quantity resting there.
async fn best_ask(sim: &SimHandle) -> (Price, Qty) {
    let v: serde_json::Value = reqwest::get(format!(
        "{}/api/v3/ticker/bookTicker?symbol={SYM}",
        sim.rest_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    (
        Price::parse(v["askPrice"].as_str().unwrap()).unwrap(),
        Qty::parse(v["askQty"].as_str().unwrap()).unwrap(),
    )
}

/// Checks the events of an order that ended (`final_is`) before its fills were known: the
/// final status came first, the fills after it, each once, adding up to what the venue says
/// executed; the order keeps its final status and the position moved by what was received.
fn assert_late_fills(
    exec: &ExchangeExecutor,
    id: &str,
    evs: &[ExecutionEvent],
    executed: Qty,
    final_is: fn(&ExecutionEvent) -> bool,
    status: OrderStatus,
) {
    let ended_at = evs.iter().position(final_is).expect("a final status");
    let first_fill = evs
        .iter()
        .position(|e| matches!(e, ExecutionEvent::Filled(_)))
        .expect("fills");
    assert!(
        ended_at < first_fill,
        "the final status came first: {evs:?}"
    );
    assert_eq!(filled(evs), executed, "once: {evs:?}");
    assert!(trade_ids_unique(evs), "{evs:?}");
    let o = exec.order(&cid(id)).unwrap();
    assert_eq!((o.status, o.filled_qty), (status, executed));
}

/// Strict, with trades and user-data reports 2.5 s late.
async fn late_reporting_sim() -> SimHandle {
    start(SimConfig {
        trading: SimTradingConfig {
            trades_delay_ms: 2500,
            report_delay_ms: 2500,
            ..SimTradingConfig::strict_default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// Approves and submits a buy of `qty` at `price` (limit, `tif`), with room beyond the best
/// ask's depth.
async fn submit_buy(
    exec: &mut ExchangeExecutor,
    c: &BinanceSpot,
    id: &str,
    price: Price,
    qty: Qty,
    tif: mmtrader::trading::order::TimeInForce,
) {
    let inst = c.instrument(SYM).unwrap();
    let mut risk = RiskManager::new(
        RiskConfig {
            max_orders_per_minute: 100_000,
            max_position_notional: Money::from_units(50_000),
            ..RiskConfig::default()
        },
        &ExecutionConfig::default(),
    );
    risk.on_market(SYM, price, mmtrader::exec::rest::local_ms());
    let kind = TradeKind::Limit {
        price,
        post_only: false,
    };
    let mut intent = OrderIntent::new(cid(id), SYM, Side::Buy, kind);
    intent.qty = Some(qty);
    intent.time_in_force = tif;
    exec.submit(risk.check(intent, &ctx(&inst, price, Qty::ZERO)).unwrap())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_reported_after_the_cancel_reply_counts_once() {
    // A buy for more than the best ask holds takes it and rests for the rest; its reply is
    // lost (5xx after the engine took it) and the trader cancels at once. The executor finds
    // it open, cancels it, and the cancel reply comes back before anything says it traded:
    // trades and user-data reports are 2.5 s late. The fill comes after, from both, once.
    let sim = late_reporting_sim().await;
    let c = Arc::new(
        BinanceSpot::new(
            BinanceSpotConfig {
                unknown_settle_ms: 10,
                ..cfg(&sim, 1000)
            },
            Credentials {
                api_key: DEFAULT_API_KEY.into(),
                secret: Secret::new(DEFAULT_SECRET),
            },
        )
        .unwrap(),
    );
    c.rest().sync_time().await.unwrap();
    c.load_instruments().await.unwrap();
    let mut exec = ExchangeExecutor::start("sim", c.clone(), Some(stream_cfg(sim.ws_url())));
    for attempt in 1..=10 {
        let id = format!("lf-{attempt}");
        let (ask, ask_qty) = best_ask(&sim).await;
        sim.inject_order_fault(OrderFault::UnknownAfterEngine);
        let gtc = mmtrader::trading::order::TimeInForce::Gtc;
        submit_buy(&mut exec, &c, &id, ask, ask_qty + q("0.5"), gtc).await;
        exec.cancel(&cid(&id)).unwrap();
        let mut evs = Vec::new();
        let ended = events_of(&mut exec, &id, 15, &mut evs, |e| {
            e.iter()
                .any(|e| matches!(e, ExecutionEvent::Cancelled { .. }))
                || filled(e) > Qty::ZERO
        })
        .await;
        assert!(ended, "{evs:?}");
        let venue = c.query(SYM, &id).await.unwrap();
        if venue.status != Some(OrderState::Canceled) || venue.executed_qty == Qty::ZERO {
            // The book moved (nothing taken) or the market filled the rest first: again.
            eprintln!("attempt {attempt}: not the case under test ({venue:?})");
            events_of(&mut exec, &id, 4, &mut evs, |_| false).await;
            continue;
        }
        let executed = venue.executed_qty;
        let done = events_of(&mut exec, &id, 15, &mut evs, |e| filled(e) == executed).await;
        assert!(done, "the late fill is reported: {evs:?}");
        events_of(&mut exec, &id, 3, &mut evs, |_| false).await;
        assert_late_fills(
            &exec,
            &id,
            &evs,
            executed,
            |e| matches!(e, ExecutionEvent::Cancelled { .. }),
            OrderStatus::Cancelled,
        );
        assert_eq!(sim.trading().orders_with_client_id(0, &id), 1);
        exec.shutdown();
        sim.shutdown().await;
        return;
    }
    panic!("no order was partly filled and open when cancelled in 10 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_learned_after_the_expiry_counts_once() {
    // An immediate-or-cancel buy for more than the best ask holds: part fills, the rest
    // expires. Its reply is lost; the lookup finds it EXPIRED while its trades are not listed
    // yet; the fills come after, from the trade list and the stream's late TRADE reports.
    let sim = late_reporting_sim().await;
    let (c, mut exec) = quick_executor(&sim, 1000, true).await;
    for attempt in 1..=5 {
        let id = format!("ioc-{attempt}");
        let (ask, ask_qty) = best_ask(&sim).await;
        sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(3)));
        let ioc = mmtrader::trading::order::TimeInForce::Ioc;
        submit_buy(&mut exec, &c, &id, ask, ask_qty + q("0.5"), ioc).await;
        let mut evs = Vec::new();
        let ended = events_of(&mut exec, &id, 15, &mut evs, |e| {
            e.iter().any(|e| {
                matches!(
                    e,
                    ExecutionEvent::Expired { .. } | ExecutionEvent::Filled(_)
                )
            })
        })
        .await;
        assert!(ended, "{evs:?}");
        let venue = query_visible(&c, &id).await;
        if venue.status != Some(OrderState::Expired) || venue.executed_qty == Qty::ZERO {
            eprintln!("attempt {attempt}: the book moved ({venue:?})");
            continue;
        }
        let executed = venue.executed_qty;
        let done = events_of(&mut exec, &id, 15, &mut evs, |e| filled(e) == executed).await;
        assert!(done, "the late fills are reported: {evs:?}");
        events_of(&mut exec, &id, 3, &mut evs, |_| false).await;
        assert_late_fills(
            &exec,
            &id,
            &evs,
            executed,
            |e| matches!(e, ExecutionEvent::Expired { .. }),
            OrderStatus::Expired,
        );
        assert_eq!(sim.trading().orders_with_client_id(0, &id), 1);
        exec.shutdown();
        sim.shutdown().await;
        return;
    }
    panic!("no immediate-or-cancel order partly filled in 5 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_and_a_take_profit_go_as_one_oco_holding_the_quantity_once() {
    let sim = sim().await;
    let (c, mut exec) = quick_executor(&sim, 2000, true).await;
    let inst = c.instrument(SYM).unwrap();
    let mut risk = risk();
    let (_, ask) = top(&sim).await;
    risk.on_market(SYM, ask, mmtrader::exec::rest::local_ms());
    let mut intent = OrderIntent::new(cid("ox-1"), SYM, Side::Buy, TradeKind::Market);
    intent.qty = Some(q("0.05"));
    intent.take_profit = Some(ask + Price::parse("60").unwrap());
    let approved = risk.check(intent, &ctx(&inst, ask, Qty::ZERO)).unwrap();
    assert!(approved.protection().stop_loss.is_some());
    exec.submit(approved).unwrap();
    let mut evs = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    let exits_open = |exec: &ExchangeExecutor| {
        ["ox-1-s", "ox-1-t"].iter().all(|id| {
            exec.order(&cid(id))
                .is_some_and(|o| o.status == OrderStatus::Acknowledged)
        })
    };
    while !exits_open(&exec) && std::time::Instant::now() < until {
        evs.extend(exec.poll_events());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    evs.extend(exec.poll_events());
    assert!(exits_open(&exec), "both exits working: {evs:?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ExecutionEvent::Rejected { .. })),
        "{evs:?}"
    );
    // Both legs rest for the ETH received (0.05 less its 0.00005 fee, floored to the step),
    // and the account holds that once.
    for id in ["ox-1-s", "ox-1-t"] {
        let o = c.query(SYM, id).await.unwrap();
        assert_eq!((o.status, o.orig_qty), (Some(OrderState::New), q("0.0499")));
    }
    assert_eq!(balance(&c, "ETH").await, (q("0.00005"), q("0.0499")));
    // Cancelling one leg ends both on the venue, and the executor hears of both.
    exec.cancel(&cid("ox-1-s")).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while !exec.open_orders().is_empty() && std::time::Instant::now() < until {
        exec.poll_events();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exec.open_orders().is_empty(), "{:?}", exec.open_orders());
    assert_eq!(
        c.query(SYM, "ox-1-t").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    assert_eq!(balance(&c, "ETH").await, (q("0.04995"), Qty::ZERO));
    exec.shutdown();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_filled_entry_gets_its_stop_at_once_and_more_as_fills_grow() {
    let sim = sim().await;
    let (c, mut exec) = quick_executor(&sim, 2000, true).await;
    let gtc = mmtrader::trading::order::TimeInForce::Gtc;
    for attempt in 1..=5 {
        let id = format!("pf-{attempt}");
        // More than the best ask holds: that much fills at once, the rest rests at the ask
        // until the market fills it.
        let (ask, ask_qty) = best_ask(&sim).await;
        submit_buy(&mut exec, &c, &id, ask, ask_qty + q("0.5"), gtc).await;
        let mut evs = Vec::new();
        events_of(&mut exec, &id, 10, &mut evs, |e| {
            count(e, |e| matches!(e, ExecutionEvent::Acknowledged { .. })) == 1
        })
        .await;
        let first = exec.order(&cid(&id)).unwrap().clone();
        if first.status != OrderStatus::PartiallyFilled {
            eprintln!(
                "attempt {attempt}: not partly filled at once ({:?})",
                first.status
            );
            let _ = exec.cancel(&cid(&id));
            events_of(&mut exec, &id, 5, &mut evs, |_| false).await;
            continue;
        }
        // The first fill already has its stop, for what the account received of it.
        let stop = query_visible(&c, &format!("{id}-s")).await;
        let fee = |evs: &[ExecutionEvent]| {
            evs.iter()
                .filter_map(|e| match e {
                    ExecutionEvent::Filled(f) => Some(f.fee),
                    _ => None,
                })
                .fold(Qty::ZERO, |a, b| a + b)
        };
        let step = |x: Qty| Qty(x.raw() / 10_000 * 10_000);
        assert_eq!(stop.orig_qty, step(first.filled_qty - fee(&evs)));
        assert_eq!(stop.status, Some(OrderState::New));
        // The market fills the rest: another stop covers it.
        let total = first.request.qty;
        events_of(&mut exec, &id, 30, &mut evs, |e| filled(e) == total).await;
        let entry = exec.order(&cid(&id)).unwrap().clone();
        assert_eq!(
            entry.status,
            OrderStatus::Filled,
            "the rest filled within 30 s"
        );
        // Exits are placed after the poll that saw the fill; give the worker a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        exec.poll_events();
        let mut exits = Vec::new();
        for n in 1..=20 {
            let tag = if n == 1 { String::new() } else { n.to_string() };
            match c.query(SYM, &format!("{id}-s{tag}")).await {
                Ok(o) => exits.push(o),
                Err(e) if e.code() == Some(-2013) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(exits.len() >= 2, "a stop per fill batch: {exits:?}");
        assert!(exits.iter().all(|o| o.status == Some(OrderState::New)));
        let covered = exits.iter().fold(Qty::ZERO, |a, o| a + o.orig_qty);
        let held = step(entry.filled_qty - fee(&evs));
        assert_eq!(
            covered, held,
            "the stops cover what the account holds, once"
        );
        assert_eq!(balance(&c, "ETH").await.1, held, "locked by the stops");
        exec.shutdown();
        sim.shutdown().await;
        return;
    }
    panic!("no entry partly filled at once in 5 tries");
}
