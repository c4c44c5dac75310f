//! Order-entry costs: signing a Binance order query, and the simulator's matching engine
//! (a market order walking the book, a print sweeping resting orders).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mmtrader::exec::binance_spot::{OrderKind, OrderSpec, Tif, order_params};
use mmtrader::exec::signing::Secret;
use mmtrader::market::types::{Level, Price, Qty, Side};
use mmtrader::sim::matching::{
    Account, Balance, BookView, Engine, MarketRules, NewOrder, OrderType, TimeInForce,
};

fn engine() -> Engine {
    let rules = MarketRules {
        symbol: "ETHUSDT".into(),
        base: "ETH".into(),
        quote: "USDT".into(),
        tick: Price::parse("0.01").unwrap(),
        max_price: Price::from_units(1_000_000),
        step: Qty::parse("0.0001").unwrap(),
        max_qty: Qty::from_units(9000),
        min_notional: Qty::from_units(5),
    };
    let mut a = Account::default();
    for (asset, units) in [("USDT", 1_000_000_000), ("ETH", 1_000_000)] {
        a.balances.insert(
            asset.into(),
            Balance {
                free: Qty::from_units(units),
                locked: Qty::ZERO,
            },
        );
    }
    let mut e = Engine::new(vec![rules], vec![a], 10, 10);
    e.set_last_price(0, Price::from_units(3000));
    e
}

fn levels(from: i64, step: i64) -> Vec<Level> {
    (0..500)
        .map(|i| Level {
            price: Price(from + i * step * 1_000_000),
            qty: Qty::parse("0.5").unwrap(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let secret = Secret::new("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j");
    let spec = OrderSpec {
        symbol: "ETHUSDT".into(),
        side: Side::Buy,
        qty: Qty::parse("0.5").unwrap(),
        kind: OrderKind::Limit {
            price: Price::parse("3000.01").unwrap(),
            tif: Tif::Gtc,
        },
        client_id: "mm-123456".into(),
    };
    c.bench_function("sign_order_query", |b| {
        b.iter(|| {
            let mut q = order_params(black_box(&spec));
            q.push("recvWindow", "5000")
                .push("timestamp", "1499827319559");
            black_box(q.signed(&secret))
        })
    });

    let asks = levels(300_001_000_000, 1);
    let bids = levels(299_999_000_000, -1);
    let book = BookView {
        bids: &bids,
        asks: &asks,
    };
    let mut e = engine();
    let mut n = 0u64;
    c.bench_function("sim_market_order_walks_20_levels", |b| {
        b.iter(|| {
            n += 1;
            let req = NewOrder {
                sym: 0,
                side: if n.is_multiple_of(2) {
                    Side::Buy
                } else {
                    Side::Sell
                },
                kind: OrderType::Market,
                tif: None,
                qty: Qty::from_units(10),
                price: None,
                stop: None,
                client_id: format!("b-{n}"),
            };
            black_box(e.place(0, req, book, 1).unwrap())
        })
    });

    c.bench_function("sim_print_sweeps_100_resting_orders", |b| {
        b.iter_batched(
            || {
                let mut e = engine();
                for i in 0..100i64 {
                    let req = NewOrder {
                        sym: 0,
                        side: Side::Buy,
                        kind: OrderType::Limit,
                        tif: Some(TimeInForce::Gtc),
                        qty: Qty::parse("0.1").unwrap(),
                        price: Some(Price(299_000_000_000 - i * 1_000_000)),
                        stop: None,
                        client_id: format!("r-{i}"),
                    };
                    e.place(
                        0,
                        req,
                        BookView {
                            bids: &[],
                            asks: &[],
                        },
                        1,
                    )
                    .unwrap();
                }
                e
            },
            |mut e| {
                black_box(e.on_trade(
                    0,
                    Price::from_units(2980),
                    Qty::from_units(1),
                    Side::Sell,
                    BookView {
                        bids: &[],
                        asks: &[],
                    },
                    2,
                ))
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
