//! Whole-capability test: a recorded Binance spot session (shared/testdata) drives the risk
//! manager, the paper executor and the journal together. Oracles hold for any recording:
//! taker fills are never better than the book they hit, maker fills are at their limit, the
//! position never passes its limit, every event is legal, protective exits are journaled
//! before they are placed, the journal replays to the executor's positions, and equity equals
//! the cash flows plus the marked position.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{Arc, Mutex};

use mmtrader::feeds::binance::wire::{BinanceEvent, parse_depth_snapshot, parse_frame};
use mmtrader::feeds::replay::{LineRecord, open_recording, parse_line};
use mmtrader::market::book::OrderBook;
use mmtrader::market::instrument::{Instrument, InstrumentStatus};
use mmtrader::market::types::{Price, Qty, Side, Trade};
use mmtrader::testdata::require;
use mmtrader::trading::executor::{ExecutionConfig, Executor, MarketEvent};
use mmtrader::trading::journal::{Journal, JournalRecord, JournalState};
use mmtrader::trading::money::Money;
use mmtrader::trading::order::{ClientIdGen, ExecutionEvent, Fill, OrderKind};
use mmtrader::trading::paper::{PaperConfig, PaperExecutor};
use mmtrader::trading::risk::{OrderIntent, Protection, RiskConfig, RiskContext, RiskManager};

const SPOT: &str = "exchange_raw/hftbacktest_binance/spot_btcusdt_20240808.gz";

enum Step {
    Book(OrderBook),
    Trade(Trade),
}

/// The recording as book states (after each applied diff) and trades, in arrival order.
fn steps(rel: &str) -> Vec<(i64, Step)> {
    let input = open_recording(&require(rel)).expect("recording opens");
    let mut book = OrderBook::new();
    let mut synced = false;
    let mut out = Vec::new();
    for line in input.reader.lines() {
        let line = line.expect("recording reads");
        let Ok((Some(ns), LineRecord::Received(payload))) = parse_line(&line) else {
            continue;
        };
        let t = ns / 1_000_000;
        if payload.trim_start().starts_with("{\"lastUpdateId\"") {
            let snap = parse_depth_snapshot(payload).expect("snapshot parses");
            book.apply_snapshot(&snap.bids, &snap.asks, snap.last_update_id);
            synced = true;
            continue;
        }
        match parse_frame(payload) {
            Ok(BinanceEvent::Depth(d)) if synced && d.final_update_id > book.last_update_id => {
                book.apply_diff(&d.bids, &d.asks, d.final_update_id);
                if !book.is_crossed() {
                    out.push((t, Step::Book(book.clone())));
                }
            }
            Ok(BinanceEvent::Trade(tr)) if synced => out.push((t, Step::Trade(tr))),
            _ => {}
        }
    }
    out
}

fn btc() -> Instrument {
    Instrument {
        symbol: "BTCUSDT".into(),
        base_asset: "BTC".into(),
        quote_asset: "USDT".into(),
        tick_size: Price::parse("0.01").unwrap(),
        step_size: Qty::parse("0.00001").unwrap(),
        min_qty: Qty::parse("0.00001").unwrap(),
        max_qty: Qty::from_units(9000),
        min_notional: Price::from_units(5),
        status: InstrumentStatus::Trading,
    }
}

type Shared = Arc<Mutex<(Journal, JournalState)>>;

/// Journals a record and applies it to a shadow replay that must accept it.
fn record(shared: &Shared, r: JournalRecord) {
    let mut g = shared.lock().unwrap();
    let (journal, shadow) = &mut *g;
    shadow
        .apply(&r)
        .unwrap_or_else(|e| panic!("illegal record {r:?}: {e}"));
    journal.record(r).unwrap();
}

#[test]
fn recorded_session_through_risk_paper_and_journal() {
    let steps = steps(SPOT);
    assert!(steps.len() > 1000, "recording too short: {}", steps.len());
    let inst = btc();
    let max_qty = Qty::parse("0.05").unwrap();
    let risk_cfg = RiskConfig {
        max_position_qty: [("BTCUSDT".to_string(), max_qty)].into(),
        max_position_notional: Money::from_units(4_000),
        max_orders_per_minute: 20,
        // Recorded timestamps are the recorder's: keep the breaker from halting on its gaps.
        stale_data_secs: 0,
        ..RiskConfig::default()
    };
    let exec = ExecutionConfig {
        take_profit_bps: 30,
        trailing_stop_bps: 20,
        stop_loss_bps: 15,
        ..ExecutionConfig::default()
    };
    let mut risk = RiskManager::new(risk_cfg, &exec);
    let mut paper = PaperExecutor::new(PaperConfig::from_execution(&exec, "USDT"));
    let dir = tempfile::tempdir().unwrap();
    let shared: Shared = Arc::new(Mutex::new((
        Journal::open(dir.path(), "rt", false).unwrap(),
        JournalState::new("rt"),
    )));
    let hook_shared = shared.clone();
    paper.set_exit_hook(Box::new(move |req| {
        record(
            &hook_shared,
            JournalRecord::Intent {
                request: req.clone(),
                protection: Protection::default(),
                time_ms: 0,
            },
        );
        true
    }));
    let mut ids = ClientIdGen::new("rt", 1).unwrap();

    let mut book = OrderBook::new();
    let mut fills: Vec<Fill> = Vec::new();
    let mut limits = BTreeMap::new();
    let (mut approved, mut trades_seen) = (0, 0u64);
    for (t, step) in &steps {
        let events = match step {
            Step::Book(b) => {
                book = b.clone();
                if let Some(mid) = book.mid() {
                    risk.on_market("BTCUSDT", mid, *t);
                }
                paper.on_market(
                    MarketEvent::Book {
                        symbol: "BTCUSDT",
                        book: &book,
                    },
                    *t,
                );
                paper.poll_events()
            }
            Step::Trade(tr) => {
                trades_seen += 1;
                paper.on_market(MarketEvent::Trade(tr), *t);
                let mut evs = paper.poll_events();
                // Every 50th trade a strategy wants in or out, alternating styles.
                if trades_seen.is_multiple_of(50) && book.mid().is_some() {
                    let n = trades_seen / 50;
                    let side = if n % 4 < 2 { Side::Buy } else { Side::Sell };
                    let kind = if n % 2 == 0 {
                        OrderKind::Market
                    } else {
                        OrderKind::Limit {
                            price: book.best(side).unwrap().price,
                            post_only: true,
                        }
                    };
                    let intent = OrderIntent::new(ids.next_id(), "BTCUSDT", side, kind);
                    let open = paper.open_orders();
                    let ctx = RiskContext::from_account(
                        *t,
                        &inst,
                        paper.last_price("BTCUSDT").unwrap(),
                        paper.portfolio(),
                        &open,
                    );
                    if let Ok(order) = risk.check(intent, &ctx) {
                        approved += 1;
                        if let Some(p) = order.request().kind.limit_price() {
                            limits.insert(order.request().client_id.clone(), p);
                        }
                        record(
                            &shared,
                            JournalRecord::Intent {
                                request: order.request().clone(),
                                protection: *order.protection(),
                                time_ms: *t,
                            },
                        );
                        paper.submit(order).unwrap();
                    }
                }
                paper.on_time(*t);
                evs.extend(paper.poll_events());
                evs
            }
        };
        for ev in events {
            if let ExecutionEvent::Filled(f) = &ev {
                if f.is_maker {
                    assert_eq!(Some(&f.price), limits.get(&f.client_id), "{f:?}");
                } else {
                    match f.side {
                        Side::Buy => assert!(f.price >= book.best_ask().unwrap().price, "{f:?}"),
                        Side::Sell => assert!(f.price <= book.best_bid().unwrap().price, "{f:?}"),
                    }
                }
                fills.push(f.clone());
            }
            record(&shared, JournalRecord::Event(ev));
            let pos = paper.portfolio().qty("BTCUSDT");
            assert!(
                Qty(pos.raw().abs()) <= max_qty,
                "position {pos} over {max_qty}"
            );
        }
    }
    assert!(approved > 5, "approved {approved}");
    assert!(fills.iter().any(|f| !f.is_maker), "no taker fill");
    let exits = shared.lock().unwrap().1.next_seq_for(paper.exit_prefix()) - 1;
    assert!(exits > 0, "no protective exit fired");

    // The journal replays to the executor's positions, exactly.
    let replayed = Journal::open(dir.path(), "rt", false).unwrap();
    assert_eq!(replayed.state().positions(), paper.positions());
    // Refused intents are never sent, so only approved ones reserve their ids.
    assert_eq!(
        replayed.state().next_seq(),
        shared.lock().unwrap().1.next_seq()
    );
    assert!(replayed.state().next_seq() <= ids.peek_seq());
    assert_eq!(
        replayed.state().next_seq_for(paper.exit_prefix()),
        exits + 1
    );

    // Equity = cash + marked position, from the fills alone.
    let mut cash = exec.starting_equity;
    let mut qty = 0i64;
    for f in &fills {
        match f.side {
            Side::Buy => {
                cash -= f.notional();
                qty += f.qty.raw();
            }
            Side::Sell => {
                cash += f.notional();
                qty -= f.qty.raw();
            }
        }
        cash -= f.fee_quote;
    }
    let mark = paper.portfolio().mark_of("BTCUSDT").unwrap();
    let value = Money::notional(mark, Qty(qty.abs()));
    let expected = if qty >= 0 { cash + value } else { cash - value };
    let diff = (paper.equity() - expected).raw().abs();
    // Only the 1e-8 truncation of re-pricing a flipped position can differ, once per fill.
    assert!(
        diff <= fills.len() as i128,
        "equity off by {diff} (1e-8 units)"
    );
}
