//! Going live from the desk's trading session against the real simulator on loopback: the
//! sim's signed endpoints become the executor, decisions become signed orders whose acks and
//! fills are journaled, the kill switch cancels working orders on the venue, and a go-live
//! that cannot connect or reconcile leaves paper trading running without leaking a secret.

use std::time::{Duration, Instant};

use mmtrader::analysis::model_output::Action;
use mmtrader::app::trading::{
    DecisionOutcome, GoLiveError, LiveTarget, TradingSession, connect_live,
};
use mmtrader::config::{Config, DataSource};
use mmtrader::exec::binance_spot::{
    BinanceSpot, BinanceSpotConfig, OrderKind, OrderSpec, OrderState,
};
use mmtrader::exec::connect::ExecSection;
use mmtrader::exec::signing::{Credentials, Secret};
use mmtrader::logging::now_ms;
use mmtrader::market::types::{Price, Qty, Side};
use mmtrader::orchestrator::decision::Decision;
use mmtrader::sim::accounts::{DEFAULT_API_KEY, DEFAULT_SECRET};
use mmtrader::sim::{SimConfig, SimHandle, start};
use mmtrader::trading::executor::ExecutorKind;
use mmtrader::trading::order::{ClientOrderId, OrderStatus};
use mmtrader::trading::risk::OrderIntent;

#[path = "common/book_ticker.rs"]
mod book_ticker;
#[path = "common/decision.rs"]
mod shared_decision;

const SYM: &str = "ETHUSDT";

fn sim_target(sim: &SimHandle) -> LiveTarget {
    LiveTarget {
        kind: ExecutorKind::Sim,
        section: ExecSection::default(),
        sim: Some((sim.rest_url(), sim.ws_url())),
        resubmit_max_age_ms: 15_000,
    }
}

/// A client of the sim's default account that the test uses to look at the venue itself.
async fn observer(sim: &SimHandle) -> BinanceSpot {
    let c = BinanceSpot::new(
        BinanceSpotConfig {
            rest_url: sim.rest_url(),
            ws_url: sim.ws_url(),
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

async fn mid(sim: &SimHandle) -> Price {
    let (bid, ask) = book_ticker::book_ticker(sim, SYM).await;
    Price((bid.raw() + ask.raw()) / 2)
}

fn decision(action: Action, price: Price) -> Decision {
    shared_decision::decision(SYM, action, now_ms(), price)
}

/// Pumps the session's executor until `done` holds or 15 s pass.
async fn pump_until(s: &mut TradingSession, what: &str, done: impl Fn(&TradingSession) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        s.pump();
        if done(s) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The commission an order's trades paid in ETH, as the venue lists them.
async fn base_commission(venue: &BinanceSpot, order_id: &str) -> Qty {
    venue
        .my_trades(SYM, Some(order_id))
        .await
        .unwrap()
        .iter()
        .filter(|t| t.commission_asset == "ETH")
        .fold(Qty::ZERO, |a, t| a + t.commission)
}

fn status(s: &TradingSession, id: &str) -> Option<OrderStatus> {
    let id = ClientOrderId::parse(id).unwrap();
    s.with_journal(|j| j.state().order(&id).map(|o| o.status))
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_live_on_the_sim_sends_signed_orders_journals_fills_and_the_kill_switch_cancels() {
    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.data.source = DataSource::Sim;
    let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
    assert_eq!(s.executor_label(), "paper");

    // Paper executor + simulator data: going live means the simulator's signed endpoints.
    let target = LiveTarget::resolve(&cfg, Some((sim.rest_url(), sim.ws_url()))).unwrap();
    assert_eq!(target.kind, ExecutorKind::Sim);
    let journal = s.open_live_journal(target.name()).unwrap();
    let handover = connect_live(&target, journal, s.symbols()).await.unwrap();
    s.go_live(handover, now_ms()).unwrap();
    assert_eq!(s.executor_label(), "live: sim");
    assert_eq!(s.view(now_ms()).mode, "live: sim");
    assert!(
        dir.path().join("live-sim").is_dir(),
        "live orders keep their own journal"
    );
    // Idempotent: a second go-live is refused as already live and changes nothing.
    assert!(matches!(
        s.check_can_go_live(now_ms()),
        Err(GoLiveError::AlreadyLive(_))
    ));

    // A BUY decision becomes a signed market order; ack and fill come back and are journaled.
    s.set_running(true);
    let price = mid(&sim).await;
    let DecisionOutcome::Sent(entry) = s.on_decision(&decision(Action::Buy, price)) else {
        panic!("the buy was not sent");
    };
    pump_until(&mut s, "the entry fill", |s| s.position_qty(SYM).raw() > 0).await;
    assert_eq!(status(&s, &entry), Some(OrderStatus::Filled));
    let venue = observer(&sim).await;
    let on_venue = venue.query(SYM, &entry).await.unwrap();
    assert!(on_venue.executed_qty.raw() > 0, "the venue executed it");
    // The REST reply and the user-data stream report the same fills: counted once, and the
    // commission charged in ETH (the received asset) is not held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.pump();
    let fee_eth = base_commission(&venue, &on_venue.order_id).await;
    assert!(
        fee_eth.raw() > 0,
        "the simulator charges buys in the base asset"
    );
    assert_eq!(s.position_qty(SYM), on_venue.executed_qty - fee_eth);
    // The entry's stop-loss is placed on the venue and journaled before it was sent.
    let stop = format!("{entry}-s");
    pump_until(&mut s, "the stop-loss ack", |s| {
        status(s, &stop) == Some(OrderStatus::Acknowledged)
    })
    .await;

    // A working limit order far above the market (a reduce-only take-profit by hand).
    let mut intent = OrderIntent::new(
        s.next_client_id(),
        SYM,
        Side::Sell,
        mmtrader::trading::order::OrderKind::Limit {
            price: Price(price.raw() / 100 * 150),
            post_only: false,
        },
    );
    intent.qty = Some(s.position_qty(SYM));
    intent.reduce_only = true;
    let DecisionOutcome::Sent(limit) = s.place(intent, Some(price), now_ms(), "test") else {
        panic!("the limit order was not sent");
    };
    pump_until(&mut s, "the limit ack", |s| {
        status(s, &limit) == Some(OrderStatus::Acknowledged)
    })
    .await;
    assert!(s.view(now_ms()).orders.len() >= 2);

    // Kill switch: stops sending and cancels every working order on the venue.
    s.kill_switch(now_ms());
    assert!(!s.is_running());
    pump_until(&mut s, "the cancels", |s| {
        status(s, &limit) == Some(OrderStatus::Cancelled)
            && status(s, &stop) == Some(OrderStatus::Cancelled)
    })
    .await;
    let open = venue.open_orders(Some(SYM)).await.unwrap();
    assert!(
        open.iter()
            .all(|o| o.client_order_id != limit && o.client_order_id != stop),
        "still open on the venue: {open:?}"
    );
    // And it flattens on the venue: every whole lot sold (the buy's ETH commission leaves
    // dust below the lot size, which no order can sell).
    pump_until(&mut s, "the kill switch's flatten", |s| {
        s.position_qty(SYM) < Qty::parse("0.0001").unwrap() && !s.is_flattening()
    })
    .await;
    assert!(s.view(now_ms()).positions.is_empty());
    // Stopped: decisions no longer become orders.
    assert_eq!(
        s.on_decision(&decision(Action::Buy, price)),
        DecisionOutcome::Ignored("trading stopped")
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_go_live_leaves_paper_trading_running_and_names_no_secret() {
    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default();
    let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
    s.set_running(true);

    // Nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = LiveTarget {
        kind: ExecutorKind::Sim,
        section: ExecSection::default(),
        sim: Some((
            format!("http://127.0.0.1:{port}"),
            format!("ws://127.0.0.1:{port}"),
        )),
        resubmit_max_age_ms: 15_000,
    };
    let journal = s.open_live_journal(target.name()).unwrap();
    let err = connect_live(&target, journal, s.symbols())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GoLiveError::Connect { .. }), "{text}");
    assert!(text.contains("sim"), "{text}");
    assert!(
        !text.contains(DEFAULT_SECRET) && !text.contains(DEFAULT_API_KEY),
        "{text}"
    );
    assert_eq!(s.executor_label(), "paper");

    // A venue order the live journal never placed is a reconcile mismatch: refused, untouched.
    let venue = observer(&sim).await;
    let price = mid(&sim).await;
    venue
        .place(&OrderSpec {
            symbol: SYM.into(),
            side: Side::Buy,
            qty: mmtrader::market::types::Qty::parse("0.01").unwrap(),
            kind: OrderKind::Limit {
                price: Price(price.raw() / 100 * 80),
                tif: mmtrader::exec::binance_spot::Tif::Gtc,
            },
            client_id: "manual-order-1".into(),
        })
        .await
        .unwrap();
    let journal = s.open_live_journal("sim").unwrap();
    let err = connect_live(&sim_target(&sim), journal, s.symbols())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("mismatch") && text.contains("manual-order-1"),
        "{text}"
    );
    assert!(!text.contains(DEFAULT_SECRET), "{text}");
    let still = venue.query(SYM, "manual-order-1").await.unwrap();
    assert!(
        still.status == Some(OrderState::New),
        "the stranger's order was left alone: {still:?}"
    );

    // Paper trading carries on: a decision still fills on paper once a book is known.
    assert_eq!(s.executor_label(), "paper");
    assert!(s.is_running());
    assert!(!s.is_live());

    // A paper executor with live data from an exchange has no live target.
    let mut cfg = Config::default();
    cfg.data.source = DataSource::Binance;
    assert!(matches!(
        LiveTarget::resolve(&cfg, None),
        Err(GoLiveError::NotConfigured)
    ));
    sim.shutdown().await;
}

/// Waits until the desk's trading view names `want` as the executor, at most 15 s.
async fn wait_for(desk: &mmtrader::app::desk::DeskProcesses, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mode = || desk.trading_view().map(|v| v.mode);
    while Instant::now() < deadline {
        if mode().as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the desk never showed {want}: {:?}", mode());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_desk_goes_live_on_the_confirmed_command_and_says_so() {
    use mmtrader::app::desk::{DeskProcesses, baseline_experts};
    use mmtrader::market::snapshot::MarketSnapshot;
    use mmtrader::tui::desk::DeskCommand;
    use std::sync::Arc;

    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.data.source = DataSource::Sim;
    let empty = MarketSnapshot {
        time_ms: now_ms(),
        source: "test".into(),
        feed_running: false,
        links: Vec::new(),
        symbols: Vec::new(),
        venues: Vec::new(),
    };
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(empty));
    let (mut desk, _tap) =
        DeskProcesses::start(&cfg, baseline_experts(), None, rx, dir.path()).unwrap();
    let mode = |desk: &DeskProcesses| desk.trading_view().map(|v| v.mode);
    wait_for(&desk, "paper").await;
    // Without the simulator's URLs there is nothing live to become: the desk stays on paper.
    desk.command(&DeskCommand::GoLive);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(mode(&desk).as_deref(), Some("paper"));

    // A live journal of an earlier simulator run is set aside (kept), never reconciled
    // against this run's fresh account.
    let earlier = dir.path().join("live-sim");
    std::fs::create_dir_all(&earlier).unwrap();
    std::fs::write(earlier.join("marker"), b"earlier run").unwrap();
    desk.set_sim_endpoints(sim.rest_url(), sim.ws_url());
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("marker").exists())
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_ne!(aside[0], earlier);
    desk.command(&DeskCommand::GoLive);
    wait_for(&desk, "live: sim").await;
    assert!(earlier.is_dir() && !earlier.join("marker").exists());
    // Again: idempotent.
    desk.command(&DeskCommand::GoLive);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(mode(&desk).as_deref(), Some("live: sim"));
    tokio::task::spawn_blocking(move || desk.shutdown())
        .await
        .unwrap();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_journal_holding_more_than_the_account_is_a_mismatch() {
    use mmtrader::market::types::Qty;
    use mmtrader::trading::journal::JournalRecord;
    use mmtrader::trading::money::Money;
    use mmtrader::trading::order::{ExecutionEvent, Fill, OrderRequest, TimeInForce};

    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = TradingSession::open(&Config::default(), dir.path()).unwrap();
    // The live journal says we bought far more ETH than the sim's default account holds.
    let mut journal = s.open_live_journal("sim").unwrap();
    let id = ClientOrderId::parse("mm-1").unwrap();
    let qty = Qty::from_units(1_000);
    let price = Price::from_units(2_000);
    let t = now_ms();
    for r in [
        JournalRecord::Intent {
            request: OrderRequest {
                client_id: id.clone(),
                symbol: SYM.into(),
                side: Side::Buy,
                kind: mmtrader::trading::order::OrderKind::Market,
                qty,
                reduce_only: false,
                time_in_force: TimeInForce::Gtc,
            },
            protection: Default::default(),
            time_ms: t,
        },
        JournalRecord::Event(ExecutionEvent::Acknowledged {
            client_id: id.clone(),
            exchange_id: "1".into(),
            time_ms: t,
        }),
        JournalRecord::Event(ExecutionEvent::Filled(Fill {
            client_id: id.clone(),
            symbol: SYM.into(),
            side: Side::Buy,
            price,
            qty,
            fee: Qty::ZERO,
            fee_asset: "USDT".into(),
            fee_quote: Money::ZERO,
            is_maker: false,
            time_ms: t,
            trade_id: "1".into(),
        })),
    ] {
        journal.record(r).unwrap();
    }
    assert_eq!(journal.state().position_qty(SYM), qty);
    let err = connect_live(&sim_target(&sim), journal, s.symbols())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, GoLiveError::Reconcile(_)), "{text}");
    assert!(text.contains("mismatch") && text.contains(SYM), "{text}");
    assert_eq!(s.executor_label(), "paper");
    sim.shutdown().await;
}

/// A live journal left with intents the venue never saw: at go-live the young one is sent
/// again once the risk check approves it at today's prices; a stale one and one the risk
/// check now refuses are journaled as rejected and never reach the venue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_live_resends_young_unsent_intents_through_the_risk_check_only() {
    use mmtrader::trading::journal::JournalRecord;
    use mmtrader::trading::order::{OrderKind, OrderRequest, TimeInForce};
    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.data.source = DataSource::Sim;
    let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
    // The desk's view of the sim's book, as the feed would give it.
    let (bid, ask) = book_ticker::book_ticker(&sim, SYM).await;
    let mut snap = mmtrader::tui::fixture::market();
    snap.time_ms = now_ms();
    let eth = &mut snap.symbols[0];
    let lot = Qty::parse("5").unwrap();
    eth.bids = vec![mmtrader::market::types::Level {
        price: bid,
        qty: lot,
    }];
    eth.asks = vec![mmtrader::market::types::Level {
        price: ask,
        qty: lot,
    }];
    s.on_snapshot(&snap);

    let target = LiveTarget::resolve(&cfg, Some((sim.rest_url(), sim.ws_url()))).unwrap();
    let mut journal = s.open_live_journal(target.name()).unwrap();
    let request = |id: &str, qty: &str| OrderRequest {
        client_id: ClientOrderId::parse(id).unwrap(),
        symbol: SYM.into(),
        side: Side::Buy,
        kind: OrderKind::Market,
        qty: Qty::parse(qty).unwrap(),
        reduce_only: false,
        time_in_force: TimeInForce::Gtc,
    };
    // Journaled, then the desk died before sending: 9 s ago (certainly unseen, still young),
    // long ago (stale), and 9 s ago but beyond today's position limit.
    let young = now_ms() - 9_000;
    for (id, qty, t) in [
        ("mm-7", "0.01", young),
        ("mm-8", "0.01", 1),
        ("mm-9", "50", young),
    ] {
        journal
            .record(JournalRecord::Intent {
                request: request(id, qty),
                protection: Default::default(),
                time_ms: t,
            })
            .unwrap();
    }
    let handover = connect_live(&target, journal, s.symbols()).await.unwrap();
    s.go_live(handover, now_ms()).unwrap();
    pump_until(&mut s, "the resubmitted fill", |s| {
        status(s, "mm-7") == Some(OrderStatus::Filled)
    })
    .await;
    assert_eq!(status(&s, "mm-8"), Some(OrderStatus::Rejected), "stale");
    assert_eq!(
        status(&s, "mm-9"),
        Some(OrderStatus::Rejected),
        "refused by risk"
    );
    assert_eq!(sim.trading().orders_with_client_id(0, "mm-7"), 1);
    assert_eq!(sim.trading().orders_with_client_id(0, "mm-8"), 0);
    assert_eq!(sim.trading().orders_with_client_id(0, "mm-9"), 0);
    let venue = observer(&sim).await;
    let order = venue.query(SYM, "mm-7").await.unwrap();
    let fee_eth = base_commission(&venue, &order.order_id).await;
    assert_eq!(s.position_qty(SYM), Qty::parse("0.01").unwrap() - fee_eth);
    sim.shutdown().await;
}

/// MEXC has no stop orders: live on it, the desk watches the position's stop itself (the
/// screen says so), nothing rests on the venue, and a trade at the stop closes at market.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mexc_the_desk_watches_the_stop_itself_and_closes_at_market() {
    use std::os::unix::fs::PermissionsExt;
    let sim = start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("mexc.toml");
    std::fs::write(
        &creds,
        format!("api_key = \"{DEFAULT_API_KEY}\"\nsecret = \"{DEFAULT_SECRET}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = Config::default();
    cfg.execution.executor = ExecutorKind::Mexc;
    cfg.exec.mexc.rest_url = sim.rest_url();
    cfg.exec.mexc.ws_url = sim.ws_url();
    cfg.exec.mexc.credentials_file = Some(creds);
    let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
    let (bid, ask) = book_ticker::book_ticker(&sim, SYM).await;
    let mut snap = mmtrader::tui::fixture::market();
    snap.time_ms = now_ms();
    let lot = Qty::parse("5").unwrap();
    snap.symbols[0].bids = vec![mmtrader::market::types::Level {
        price: bid,
        qty: lot,
    }];
    snap.symbols[0].asks = vec![mmtrader::market::types::Level {
        price: ask,
        qty: lot,
    }];
    s.on_snapshot(&snap);
    let target = LiveTarget::resolve(&cfg, None).unwrap();
    assert_eq!(target.name(), "mexc");
    let journal = s.open_live_journal(target.name()).unwrap();
    let handover = connect_live(&target, journal, s.symbols()).await.unwrap();
    s.go_live(handover, now_ms()).unwrap();
    s.set_running(true);
    let DecisionOutcome::Sent(_) = s.on_decision(&decision(Action::Buy, mid(&sim).await)) else {
        panic!("the buy was not sent");
    };
    pump_until(&mut s, "the entry fill", |s| s.position_qty(SYM).raw() > 0).await;
    let view = s.view(now_ms());
    let row = &view.positions[0];
    let stop = row.stop.expect("the desk keeps the stop");
    assert!(row.exits_by_desk, "the screen says the desk watches it");
    assert_eq!(
        sim.trading().open_order_count(0),
        0,
        "nothing rests on a venue without stop orders"
    );
    // A trade at the stop: the desk closes the position at market.
    let mut hit = snap.clone();
    hit.time_ms = now_ms();
    let t = hit.symbols[0].last_trade.as_mut().unwrap();
    t.id += 1;
    t.price = stop;
    t.time_ms = hit.time_ms;
    s.on_snapshot(&hit);
    // The buy's commission came out of the ETH: the close sells every whole lot, and the
    // dust below the lot size (which no order can sell) is all that stays.
    pump_until(&mut s, "the desk-watched close", |s| {
        s.position_qty(SYM) < Qty::parse("0.0001").unwrap() && s.view(now_ms()).orders.is_empty()
    })
    .await;
    assert!(s.view(now_ms()).positions.is_empty());
    assert!(!s.is_flattening());
    sim.shutdown().await;
}
