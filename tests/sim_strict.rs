//! The simulator's strict mode over HTTP and its user-data websocket, rule by rule, as Binance
//! documents them: client ids refused only while the first order is open, a filled order
//! invisible to a lookup by client id for a while and its trades listed late, commission in
//! the asset received, balances locked by resting orders (so a stop and a take-profit on one
//! quantity need an OCO), the OCO endpoint, partial fills ending in cancel or expiry, user-data
//! reports after the REST reply, 5xx after the engine acted, and a USDT-only account.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mmtrader::exec::binance_spot::{BinanceSpot, BinanceSpotConfig};
use mmtrader::exec::rest::ExecError;
use mmtrader::exec::signing::{Credentials, Query, Secret};
use mmtrader::exec::wire::{ExchangeOrder, OrderState, parse_order};
use mmtrader::market::types::{Price, Qty, notional};
use mmtrader::sim::accounts::{DEFAULT_API_KEY, DEFAULT_SECRET, SimTradingConfig};
use mmtrader::sim::trading::OrderFault;
use mmtrader::sim::{SimConfig, SimHandle, start};
use reqwest::Method;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const SYM: &str = "ETHUSDT";

async fn strict_sim(trading: SimTradingConfig) -> SimHandle {
    start(SimConfig {
        trading,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn client(sim: &SimHandle) -> BinanceSpot {
    let c = BinanceSpot::new(
        BinanceSpotConfig {
            rest_url: sim.rest_url(),
            ws_url: sim.ws_url(),
            timeout_ms: 1000,
            ..BinanceSpotConfig::default()
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

fn q(s: &str) -> Qty {
    Qty::parse(s).unwrap()
}

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}

/// A raw signed request (no client-side retry or duplicate handling): the body or the error.
async fn signed(
    c: &BinanceSpot,
    method: Method,
    path: &str,
    params: &[(&str, String)],
) -> Result<String, ExecError> {
    let mut query = Query::new();
    for (k, v) in params {
        query.push(k, v);
    }
    c.rest().signed(method, path, &query, 1).await
}

async fn order(c: &BinanceSpot, params: &[(&str, &str)]) -> Result<ExchangeOrder, ExecError> {
    let mut all: Vec<(&str, String)> = vec![("symbol", SYM.into())];
    all.extend(params.iter().map(|(k, v)| (*k, v.to_string())));
    let body = signed(c, Method::POST, "/api/v3/order", &all).await?;
    Ok(parse_order(&body).unwrap())
}

async fn market_buy(c: &BinanceSpot, qty: &str, id: &str) -> ExchangeOrder {
    order(
        c,
        &[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", qty),
            ("newClientOrderId", id),
        ],
    )
    .await
    .unwrap()
}

/// Best bid, best ask, and the quantity at the ask.
async fn book(sim: &SimHandle) -> (Price, Price, Qty) {
    let v: Value = reqwest::get(format!(
        "{}/api/v3/ticker/bookTicker?symbol={SYM}",
        sim.rest_url()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let s = |k: &str| v[k].as_str().unwrap().to_string();
    (p(&s("bidPrice")), p(&s("askPrice")), q(&s("askQty")))
}

async fn balance(c: &BinanceSpot, asset: &str) -> (Qty, Qty) {
    c.balances()
        .await
        .unwrap()
        .iter()
        .find(|b| b.asset == asset)
        .map_or((Qty::ZERO, Qty::ZERO), |b| (b.free, b.locked))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The account's user-data websocket, raw.
async fn user_ws(sim: &SimHandle, c: &BinanceSpot) -> Ws {
    let key = c.create_listen_key().await.unwrap();
    let url = format!("{}/ws/{key}", sim.ws_url());
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap()
        .0
}

/// The next user-data event for which `pick` holds, within `secs`.
async fn next_event(ws: &mut Ws, secs: u64, pick: impl Fn(&Value) -> bool) -> Option<Value> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if pick(&v) {
                    return Some(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

#[tokio::test]
async fn the_strict_account_holds_quote_only_and_cannot_sell_what_it_never_bought() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    let b = c.balances().await.unwrap();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!((b[0].asset.as_str(), b[0].free), ("USDT", q("100000")));
    let e = order(
        &c,
        &[("side", "SELL"), ("type", "MARKET"), ("quantity", "0.01")],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(-2010), "{e}");
    assert!(e.to_string().contains("insufficient balance"), "{e}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_id_is_refused_only_while_its_first_order_is_open() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    let (bid, _, _) = book(&sim).await;
    let far = (bid - p("300")).to_string();
    let resting = [
        ("side", "BUY"),
        ("type", "LIMIT"),
        ("timeInForce", "GTC"),
        ("quantity", "0.01"),
        ("price", far.as_str()),
        ("newClientOrderId", "dup-1"),
    ];
    order(&c, &resting).await.unwrap();
    let e = order(&c, &resting).await.unwrap_err();
    assert_eq!(e.code(), Some(-2010));
    assert!(e.to_string().contains("Duplicate order sent."), "{e}");
    // Filled: the id is free again, and the same request executes a second time. This is why
    // a lost reply must never be answered by sending again.
    market_buy(&c, "0.01", "dup-2").await;
    let again = market_buy(&c, "0.01", "dup-2").await;
    assert_eq!(again.status, Some(OrderState::Filled));
    assert_eq!(sim.trading().orders_with_client_id(0, "dup-2"), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_filled_order_and_its_trades_become_visible_late_and_fees_are_in_the_asset_received() {
    let sim = strict_sim(SimTradingConfig {
        query_delay_ms: 1500,
        trades_delay_ms: 2500,
        ..SimTradingConfig::strict_default()
    })
    .await;
    let c = client(&sim).await;
    let t0 = Instant::now();
    let buy = market_buy(&c, "0.1", "vis-1").await;
    assert_eq!(buy.status, Some(OrderState::Filled));
    assert!(buy.fills.iter().all(|f| f.commission_asset == "ETH"));
    let fee: Qty = buy.fills.iter().fold(Qty::ZERO, |a, f| a + f.commission);
    assert_eq!(fee, q("0.0001"), "10 bps of the 0.1 ETH received");
    assert_eq!(balance(&c, "ETH").await.0, q("0.1") - fee);
    // By client id: -2013 until the delay has passed; by order id: found.
    assert_eq!(c.query(SYM, "vis-1").await.unwrap_err().code(), Some(-2013));
    assert_eq!(
        c.query_by_id(SYM, &buy.order_id)
            .await
            .unwrap()
            .client_order_id,
        "vis-1"
    );
    assert!(c.my_trades(SYM, None).await.unwrap().is_empty());
    let visible = loop {
        if c.query(SYM, "vis-1").await.is_ok() {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(visible >= Duration::from_millis(1400), "{visible:?}");
    assert!(visible < Duration::from_millis(2500), "{visible:?}");
    let listed = loop {
        if !c.my_trades(SYM, None).await.unwrap().is_empty() {
            break t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(listed >= Duration::from_millis(2400), "{listed:?}");
    // A sell receives USDT and pays its fee in USDT.
    let sell = order(
        &c,
        &[
            ("side", "SELL"),
            ("type", "MARKET"),
            ("quantity", "0.05"),
            ("newClientOrderId", "vis-2"),
        ],
    )
    .await
    .unwrap();
    assert!(!sell.fills.is_empty());
    for f in &sell.fills {
        assert_eq!(f.commission_asset, "USDT");
        let quote = notional(f.price, f.qty) as i64;
        assert_eq!(
            f.commission,
            Qty(quote * 10 / 10_000),
            "10 bps of the quote received"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn resting_orders_lock_the_balance_so_a_stop_and_a_take_profit_need_an_oco() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    market_buy(&c, "0.1", "lock-0").await;
    let (held, _) = balance(&c, "ETH").await;
    assert_eq!(held, q("0.0999"), "0.1 less the base-asset fee");
    let held_s = held.to_string();
    let (bid, ask, _) = book(&sim).await;
    let stop = (bid - p("100")).to_string();
    let take = (ask + p("100")).to_string();
    order(
        &c,
        &[
            ("side", "SELL"),
            ("type", "STOP_LOSS"),
            ("quantity", &held_s),
            ("stopPrice", &stop),
            ("newClientOrderId", "lock-s"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(balance(&c, "ETH").await, (Qty::ZERO, held));
    let e = order(
        &c,
        &[
            ("side", "SELL"),
            ("type", "LIMIT_MAKER"),
            ("quantity", &held_s),
            ("price", &take),
            ("newClientOrderId", "lock-t"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(-2010));
    assert!(
        e.to_string()
            .contains("Account has insufficient balance for requested action."),
        "{e}"
    );
    c.cancel(SYM, "lock-s").await.unwrap();
    // One OCO holds the quantity once for both.
    let mut ws = user_ws(&sim, &c).await;
    let oco = |above: &str, below: &str, ids: (&str, &str, &str)| {
        vec![
            ("symbol", SYM.to_string()),
            ("side", "SELL".into()),
            ("quantity", held_s.clone()),
            ("aboveType", "LIMIT_MAKER".into()),
            ("abovePrice", above.to_string()),
            ("aboveClientOrderId", ids.0.into()),
            ("belowType", "STOP_LOSS".into()),
            ("belowStopPrice", below.to_string()),
            ("belowClientOrderId", ids.1.into()),
            ("listClientOrderId", ids.2.into()),
        ]
    };
    let body = signed(
        &c,
        Method::POST,
        "/api/v3/orderList/oco",
        &oco(&take, &stop, ("oco-t", "oco-s", "oco-1")),
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["contingencyType"], "OCO");
    assert_eq!(v["listStatusType"], "EXEC_STARTED");
    assert_eq!(v["listOrderStatus"], "EXECUTING");
    assert_eq!(v["listClientOrderId"], "oco-1");
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    let reports = v["orderReports"].as_array().unwrap();
    assert_eq!(reports[0]["type"], "LIMIT_MAKER");
    assert_eq!(reports[1]["type"], "STOP_LOSS");
    assert!(reports.iter().all(|r| r["orderListId"] == v["orderListId"]));
    assert_eq!(balance(&c, "ETH").await, (Qty::ZERO, held));
    let started = next_event(&mut ws, 5, |e| e["e"] == "listStatus")
        .await
        .unwrap();
    assert_eq!(
        (started["l"].as_str(), started["L"].as_str()),
        (Some("EXEC_STARTED"), Some("EXECUTING"))
    );
    assert_eq!(started["C"], "oco-1");
    // Prices on the wrong side of the market are refused.
    let e = signed(
        &c,
        Method::POST,
        "/api/v3/orderList/oco",
        &oco(&stop, &take, ("bad-t", "bad-s", "bad-1")),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(-2010), "{e}");
    // Cancelling one leg ends the list and frees the quantity once.
    c.cancel(SYM, "oco-s").await.unwrap();
    assert_eq!(
        c.query(SYM, "oco-t").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    assert_eq!(balance(&c, "ETH").await, (held, Qty::ZERO));
    let done = next_event(&mut ws, 5, |e| e["e"] == "listStatus")
        .await
        .unwrap();
    assert_eq!(done["L"], "ALL_DONE");
    sim.shutdown().await;
}

#[tokio::test]
async fn when_one_oco_leg_executes_the_other_expires() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    market_buy(&c, "0.1", "leg-0").await;
    let held = balance(&c, "ETH").await.0.to_string();
    let mut ws = user_ws(&sim, &c).await;
    // Legs a few ticks either side of the touch: the market reaches one of them soon. If it
    // has already moved past one, the venue refuses the prices; they go further out.
    let mut gap = p("0.05");
    loop {
        let (bid, ask, _) = book(&sim).await;
        let r = signed(
            &c,
            Method::POST,
            "/api/v3/orderList/oco",
            &[
                ("symbol", SYM.into()),
                ("side", "SELL".into()),
                ("quantity", held.clone()),
                ("aboveType", "LIMIT_MAKER".into()),
                ("abovePrice", (ask + gap).to_string()),
                ("aboveClientOrderId", "leg-t".into()),
                ("belowType", "STOP_LOSS".into()),
                ("belowStopPrice", (bid - gap).to_string()),
                ("belowClientOrderId", "leg-s".into()),
            ],
        )
        .await;
        match r {
            Ok(_) => break,
            Err(e) if e.code() == Some(-2010) => gap += p("0.1"),
            Err(e) => panic!("{e}"),
        }
    }
    let ended = next_event(&mut ws, 90, |e| {
        e["e"] == "listStatus" && e["L"] == "ALL_DONE"
    })
    .await
    .expect("one leg executes within 90 s");
    assert_eq!(ended["l"], "ALL_DONE");
    let t = c.query(SYM, "leg-t").await.unwrap();
    let s = c.query(SYM, "leg-s").await.unwrap();
    let statuses = (t.status.clone().unwrap(), s.status.clone().unwrap());
    assert!(
        matches!(
            statuses,
            (
                OrderState::Expired,
                OrderState::Filled | OrderState::PartiallyFilled
            ) | (
                OrderState::Filled | OrderState::PartiallyFilled,
                OrderState::Expired
            )
        ),
        "{statuses:?}"
    );
    // The lock was held once: what executed left the account, the rest (if any) is still
    // locked by the executing leg.
    let executed = t.executed_qty + s.executed_qty;
    let (free, locked) = balance(&c, "ETH").await;
    assert_eq!(free, Qty::ZERO);
    assert_eq!(locked, q(&held) - executed);
    sim.shutdown().await;
}

#[tokio::test]
async fn partial_fills_end_in_expiry_or_cancel() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    // Immediate-or-cancel for more than the best ask holds: part fills, the rest expires.
    let mut expired = None;
    for i in 0..50 {
        let (_, ask, ask_qty) = book(&sim).await;
        // The account holds 100k USDT: a best ask deeper than it can pay for waits for the
        // next quote (the simulated book sometimes shows a 30 ETH level).
        if ask_qty > q("20") {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        let id = format!("ioc-{i}");
        let o = order(
            &c,
            &[
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "IOC"),
                ("quantity", &(ask_qty + q("0.5")).to_string()),
                ("price", &ask.to_string()),
                ("newClientOrderId", &id),
                ("newOrderRespType", "FULL"),
            ],
        )
        .await
        .unwrap();
        if o.executed_qty > Qty::ZERO {
            expired = Some(o);
            break;
        }
    }
    let o = expired.expect("an IOC at the ask takes part of it");
    assert_eq!(o.status, Some(OrderState::Expired));
    assert!(o.executed_qty < o.orig_qty);
    // Good-till-cancelled: part fills at once, the rest rests until cancelled.
    let mut cancelled = None;
    for i in 0..50 {
        let (_, ask, ask_qty) = book(&sim).await;
        // What the IOC spent is gone and a resting remainder locks its price: stay well
        // within the account.
        if ask_qty > q("10") {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        let id = format!("gtc-{i}");
        let o = order(
            &c,
            &[
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", &(ask_qty + q("0.5")).to_string()),
                ("price", &ask.to_string()),
                ("newClientOrderId", &id),
            ],
        )
        .await
        .unwrap();
        if o.status != Some(OrderState::PartiallyFilled) {
            let _ = c.cancel(SYM, &id).await;
            continue;
        }
        // The market may fill the rest first (then the cancel is refused, -2011).
        if let Ok(x) = c.cancel(SYM, &id).await {
            cancelled = Some(x);
            break;
        }
    }
    let x = cancelled.expect("a partly filled order cancelled while open");
    assert_eq!(x.status, Some(OrderState::Canceled));
    assert!(
        x.executed_qty > Qty::ZERO && x.executed_qty < x.orig_qty,
        "{x:?}"
    );
    assert_eq!(
        balance(&c, "USDT").await.1,
        Qty::ZERO,
        "nothing stays locked"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn user_data_reports_arrive_after_the_rest_reply() {
    let sim = strict_sim(SimTradingConfig {
        report_delay_ms: 800,
        ..SimTradingConfig::strict_default()
    })
    .await;
    let c = client(&sim).await;
    let mut ws = user_ws(&sim, &c).await;
    let sent = Instant::now();
    market_buy(&c, "0.01", "late-1").await;
    let replied = sent.elapsed();
    let ev = next_event(&mut ws, 5, |e| e["e"] == "executionReport")
        .await
        .unwrap();
    let reported = sent.elapsed();
    assert_eq!(
        (ev["c"].as_str(), ev["x"].as_str()),
        (Some("late-1"), Some("NEW"))
    );
    assert!(reported >= Duration::from_millis(800), "{reported:?}");
    assert!(reported > replied, "the reply came first");
    // In order: the trade, then the balances.
    let trade = next_event(&mut ws, 5, |e| e["e"] == "executionReport")
        .await
        .unwrap();
    assert_eq!(trade["x"], "TRADE");
    assert_eq!(trade["N"], "ETH");
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_after_the_engine_leave_the_order_executed_or_cancelled() {
    let sim = strict_sim(SimTradingConfig::strict_default()).await;
    let c = client(&sim).await;
    // 5xx after the engine filled it: the order exists and is filled.
    sim.inject_order_fault(OrderFault::UnknownAfterEngine);
    let e = order(
        &c,
        &[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "f-1"),
        ],
    )
    .await
    .unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(sim.trading().orders_with_client_id(0, "f-1"), 1);
    assert!(balance(&c, "ETH").await.0 > Qty::ZERO);
    // A reply held past the client's timeout: the order executed all the same.
    sim.inject_order_fault(OrderFault::SlowResponse(Duration::from_secs(2)));
    let e = order(
        &c,
        &[
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.01"),
            ("newClientOrderId", "f-2"),
        ],
    )
    .await
    .unwrap_err();
    assert!(e.outcome_unknown(), "{e}");
    assert_eq!(sim.trading().orders_with_client_id(0, "f-2"), 1);
    // A cancel whose reply is a 5xx took effect; one refused before the engine did not.
    let (bid, _, _) = book(&sim).await;
    let far = (bid - p("300")).to_string();
    for id in ["f-3", "f-4"] {
        order(
            &c,
            &[
                ("side", "BUY"),
                ("type", "LIMIT"),
                ("timeInForce", "GTC"),
                ("quantity", "0.01"),
                ("price", &far),
                ("newClientOrderId", id),
            ],
        )
        .await
        .unwrap();
    }
    sim.inject_cancel_fault(OrderFault::UnknownAfterEngine);
    assert!(c.cancel(SYM, "f-3").await.unwrap_err().outcome_unknown());
    assert_eq!(
        c.query(SYM, "f-3").await.unwrap().status,
        Some(OrderState::Canceled)
    );
    sim.inject_cancel_fault(OrderFault::UnavailableBeforeEngine);
    assert!(c.cancel(SYM, "f-4").await.unwrap_err().outcome_unknown());
    assert_eq!(
        c.query(SYM, "f-4").await.unwrap().status,
        Some(OrderState::New)
    );
    sim.shutdown().await;
}
