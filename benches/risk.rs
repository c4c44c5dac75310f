//! Trading hot paths: one risk check, the paper executor's work per trade and per book
//! update with resting orders, and encoding a journal record (without the fsync, which is
//! the disk's cost, not ours).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmtrader::market::book::OrderBook;
use mmtrader::market::instrument::{Instrument, InstrumentStatus};
use mmtrader::market::types::{Level, Price, Qty, Side, Trade};
use mmtrader::trading::executor::{ExecutionConfig, Executor, MarketEvent};
use mmtrader::trading::journal::{JournalRecord, RecordLog};
use mmtrader::trading::money::Money;
use mmtrader::trading::order::{ClientOrderId, OrderKind};
use mmtrader::trading::paper::{PaperConfig, PaperExecutor};
use mmtrader::trading::position::Portfolio;
use mmtrader::trading::risk::{OrderIntent, RiskConfig, RiskContext, RiskManager};

const TICK: i64 = 1_000_000;
const MID: i64 = 3_000 * 100_000_000;

fn inst() -> Instrument {
    Instrument {
        symbol: "ETHUSDT".into(),
        base_asset: "ETH".into(),
        quote_asset: "USDT".into(),
        tick_size: Price(TICK),
        step_size: Qty(10_000),
        min_qty: Qty(10_000),
        max_qty: Qty::ZERO,
        min_notional: Price::from_units(5),
        status: InstrumentStatus::Trading,
    }
}

fn book(levels: i64) -> OrderBook {
    let side = |sign: i64| -> Vec<Level> {
        (1..=levels)
            .map(|i| Level {
                price: Price(MID + sign * i * TICK),
                qty: Qty(100_000_000 + i * 1_000),
            })
            .collect()
    };
    let mut b = OrderBook::new();
    b.apply_snapshot(&side(-1), &side(1), 1);
    b
}

fn permissive() -> RiskManager {
    let cfg = RiskConfig {
        max_position_notional: Money::from_units(1_000_000_000),
        max_leverage: Price::from_units(1000),
        risk_per_trade_bps: 10_000,
        max_orders_per_minute: u32::MAX,
        stale_data_secs: 0,
        extreme_move_bps: 0,
        ..RiskConfig::default()
    };
    RiskManager::new(cfg, &ExecutionConfig::default())
}

fn bench_risk(c: &mut Criterion) {
    let inst = inst();
    let mut risk = permissive();
    let pf = Portfolio::new(Money::from_units(100_000), 16);
    let id = ClientOrderId::new("b", 1).unwrap();
    let kind = OrderKind::Limit {
        price: Price(MID - 3 * TICK + 1),
        post_only: false,
    };
    let mut g = c.benchmark_group("risk");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_limit_sized_from_stop", |b| {
        b.iter(|| {
            let mut intent = OrderIntent::new(id.clone(), "ETHUSDT", Side::Buy, kind);
            intent.stop_loss = Some(Price(MID - 50 * TICK));
            let ctx = RiskContext::from_account(0, &inst, Price(MID), &pf, &[]);
            black_box(risk.check(intent, &ctx).is_ok())
        })
    });
    g.finish();
}

/// A paper executor with `resting` limit orders on each side around the touch.
fn paper_with_orders(book: &OrderBook, resting: u64) -> PaperExecutor {
    let inst = inst();
    let mut pc = PaperConfig::from_execution(&ExecutionConfig::default(), "USDT");
    pc.latency_ms = 0;
    let mut paper = PaperExecutor::new(pc);
    paper.on_market(
        MarketEvent::Book {
            symbol: "ETHUSDT",
            book,
        },
        0,
    );
    let mut risk = permissive();
    let pf = Portfolio::new(Money::from_units(100_000_000), 16);
    for n in 0..resting * 2 {
        let side = if n % 2 == 0 { Side::Buy } else { Side::Sell };
        let off = (n / 2 + 5) as i64 * TICK;
        let price = Price(if side == Side::Buy {
            MID - off
        } else {
            MID + off
        });
        let id = ClientOrderId::new("b", n + 1).unwrap();
        let mut intent = OrderIntent::new(
            id,
            "ETHUSDT",
            side,
            OrderKind::Limit {
                price,
                post_only: true,
            },
        );
        intent.qty = Some(Qty(1_000_000));
        let ctx = RiskContext::from_account(0, &inst, Price(MID), &pf, &[]);
        paper.submit(risk.check(intent, &ctx).unwrap()).unwrap();
    }
    paper.poll_events();
    paper
}

fn bench_paper(c: &mut Criterion) {
    let book = book(1000);
    let mut g = c.benchmark_group("paper");
    g.throughput(Throughput::Elements(1));
    let mut paper = paper_with_orders(&book, 50);
    // Trades at the touch that never reach the resting orders: the per-trade bookkeeping.
    let trades: Vec<Trade> = (0..64)
        .map(|i| Trade {
            symbol: "ETHUSDT".into(),
            id: i,
            time_ms: 1,
            price: Price(MID + if i % 2 == 0 { TICK } else { -TICK }),
            qty: Qty(1_000_000),
            taker_side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
        })
        .collect();
    let mut i = 0usize;
    g.bench_function("trade_with_100_resting", |b| {
        b.iter(|| {
            i = (i + 1) % trades.len();
            paper.on_market(MarketEvent::Trade(&trades[i]), 1);
            black_box(paper.poll_events().len())
        })
    });
    g.bench_function("book_1000_levels_with_100_resting", |b| {
        b.iter(|| {
            paper.on_market(
                MarketEvent::Book {
                    symbol: "ETHUSDT",
                    book: &book,
                },
                1,
            );
            black_box(paper.poll_events().len())
        })
    });
    g.finish();
}

fn bench_journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) =
        RecordLog::open::<JournalRecord>(&dir.path().join("bench.jsonl"), false).unwrap();
    let mut risk = permissive();
    let inst = inst();
    let pf = Portfolio::new(Money::from_units(100_000), 16);
    let mut intent = OrderIntent::new(
        ClientOrderId::new("b", 1).unwrap(),
        "ETHUSDT",
        Side::Buy,
        OrderKind::Market,
    );
    intent.qty = Some(Qty(1_000_000));
    let ctx = RiskContext::from_account(0, &inst, Price(MID), &pf, &[]);
    let order = risk.check(intent, &ctx).unwrap();
    let record = JournalRecord::Intent {
        request: order.request().clone(),
        protection: *order.protection(),
        time_ms: 0,
    };
    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_intent_no_fsync", |b| {
        b.iter(|| log.append(black_box(&record)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_risk, bench_paper, bench_journal);
criterion_main!(benches);
