//! Chaos test of the trading session on the paper executor: seeded random sequences of model
//! decisions, manual flattens, kill switches, resumes, stale-data and extreme-move breakers,
//! thin books and crash-restarts (the session dropped between any two calls: every journal
//! record is fsynced when written, so the journal is exactly what a `kill -9` would leave),
//! checked at every step:
//! - no client id is journaled as an intent twice, no order fills beyond its quantity and no
//!   trade id is journaled twice (nothing executes twice, nothing counts twice);
//! - the session's position per symbol equals the sum of the journal's fills (replay equals
//!   what happened), before and after every restart;
//! - every open position has a protective stop, or a close of it is working.
//!
//! The failing seed is printed so it can be replayed with `CHAOS_SEED=<n>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use mmtrader::analysis::model_output::Action;
use mmtrader::app::trading::TradingSession;
use mmtrader::config::Config;
use mmtrader::market::instrument::{Instrument, InstrumentStatus};
use mmtrader::market::snapshot::MarketSnapshot;
use mmtrader::market::types::{Level, Price, Qty, Side};
use mmtrader::trading::journal::{JOURNAL_FILE, JournalRecord, parse_records};
use mmtrader::trading::order::ExecutionEvent;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/decision.rs"]
mod decision;
use decision::decision;

const SYMBOLS: [&str; 2] = ["ETHUSDT", "BTCUSDT"];
const STEPS: usize = 120;

fn instrument(symbol: &str) -> Instrument {
    Instrument {
        symbol: symbol.into(),
        base_asset: symbol.trim_end_matches("USDT").into(),
        quote_asset: "USDT".into(),
        tick_size: Price::parse("0.01").unwrap(),
        step_size: Qty::parse("0.00001").unwrap(),
        min_qty: Qty::parse("0.00001").unwrap(),
        max_qty: Qty::ZERO,
        min_notional: Price::from_units(5),
        status: InstrumentStatus::Trading,
    }
}

/// The market the session sees: a random walk per symbol, a book around it (sometimes thin,
/// sometimes frozen), and a trade now and then.
struct Market {
    time_ms: i64,
    mids: [i64; 2],
    trade_id: u64,
    book_updates: u64,
    template: MarketSnapshot,
}

impl Market {
    fn new() -> Self {
        let mut template = mmtrader::tui::fixture::market();
        for (v, s) in template.symbols.iter_mut().zip(SYMBOLS) {
            v.instrument = Some(Arc::new(instrument(s)));
        }
        Self {
            time_ms: mmtrader::tui::fixture::NOW_MS,
            mids: [3_000 * 100, 43_000 * 100],
            trade_id: 1,
            book_updates: 0,
            template,
        }
    }

    /// Advances time and prices; `frozen` leaves books and trades as they were.
    fn step(&mut self, rng: &mut ChaCha8Rng, dt_ms: i64, frozen: bool) -> MarketSnapshot {
        self.time_ms += dt_ms;
        let mut snap = self.template.clone();
        snap.time_ms = self.time_ms;
        if frozen {
            return snap;
        }
        let jump = rng.random_range(0..100) == 0;
        for (i, v) in snap.symbols.iter_mut().enumerate() {
            let cents = self.mids[i];
            let bps = if jump { 700 } else { rng.random_range(0..40) };
            let delta = cents * bps / 10_000;
            self.mids[i] = if rng.random_bool(0.5) {
                cents + delta
            } else {
                (cents - delta).max(100)
            };
            let mid = self.mids[i];
            let thin = rng.random_range(0..8) == 0;
            let lot = |r: &mut ChaCha8Rng| {
                if thin {
                    Qty::parse("0.0005").unwrap()
                } else {
                    Qty(r.random_range(1..400) * 1_000_000)
                }
            };
            let cent = |c: i64| Price(c * 1_000_000);
            v.bids = (1..=5)
                .map(|k| Level {
                    price: cent(mid - k),
                    qty: lot(rng),
                })
                .collect();
            v.asks = (1..=5)
                .map(|k| Level {
                    price: cent(mid + k),
                    qty: lot(rng),
                })
                .collect();
            self.book_updates += 1;
            v.book.applied = self.book_updates;
            if rng.random_bool(0.7) {
                self.trade_id += 1;
                let t = v.last_trade.as_mut().unwrap();
                t.id = self.trade_id;
                t.time_ms = self.time_ms;
                t.price = cent(mid + rng.random_range(-3..=3));
                t.taker_side = if rng.random_bool(0.5) {
                    Side::Buy
                } else {
                    Side::Sell
                };
            }
        }
        self.template = snap.clone();
        snap
    }

    fn mid(&self, i: usize) -> Price {
        Price(self.mids[i] * 1_000_000)
    }
}

/// The journal as written: every intent id, every fill, in order.
fn journal_records(dir: &Path) -> Vec<JournalRecord> {
    let path = dir.join(JOURNAL_FILE);
    let bytes = std::fs::read(&path).unwrap_or_default();
    parse_records::<JournalRecord>(&bytes, &path)
        .expect("the journal is never corrupt")
        .records
}

/// Checks the invariants; returns what failed.
fn check(s: &TradingSession, dir: &Path, now: i64) -> Result<(), String> {
    let records = journal_records(dir);
    let mut intents = BTreeSet::new();
    let mut ordered: BTreeMap<String, Qty> = BTreeMap::new();
    let mut filled: BTreeMap<String, Qty> = BTreeMap::new();
    let mut trades = BTreeSet::new();
    let mut position: BTreeMap<String, i64> = BTreeMap::new();
    for r in &records {
        match r {
            JournalRecord::Intent { request, .. } => {
                let id = request.client_id.to_string();
                if !intents.insert(id.clone()) {
                    return Err(format!("client id {id} journaled as an intent twice"));
                }
                ordered.insert(id, request.qty);
            }
            JournalRecord::Event(ExecutionEvent::Filled(f)) => {
                let id = f.client_id.to_string();
                if !trades.insert((id.clone(), f.trade_id.clone())) {
                    return Err(format!("trade {} of {id} journaled twice", f.trade_id));
                }
                let sum = filled.entry(id.clone()).or_insert(Qty::ZERO);
                *sum += f.qty;
                if ordered.get(&id).is_none_or(|q| *sum > *q) {
                    return Err(format!("{id} filled {sum}, beyond what was ordered"));
                }
                let signed = if f.side == Side::Buy {
                    f.position_qty().raw()
                } else {
                    -f.position_qty().raw()
                };
                *position.entry(f.symbol.clone()).or_default() += signed;
            }
            _ => {}
        }
    }
    for sym in SYMBOLS {
        let journaled = position.get(sym).copied().unwrap_or(0);
        if s.position_qty(sym).raw() != journaled {
            return Err(format!(
                "{sym}: session holds {} but the journal's fills sum to {}",
                s.position_qty(sym),
                Qty(journaled)
            ));
        }
    }
    let view = s.view(now);
    for p in &view.positions {
        let closing = view
            .orders
            .iter()
            .any(|o| o.symbol == p.symbol && o.kind == "market");
        if p.stop.is_none() && !closing && !s.is_flattening() {
            return Err(format!(
                "{} {} open with no stop and no close working",
                p.symbol, p.qty
            ));
        }
    }
    Ok(())
}

fn run(seed: u64) -> Result<String, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.execution.latency_ms = rng.random_range(0..200);
    cfg.risk.max_position_notional = mmtrader::trading::money::Money::from_units(4_000);
    cfg.risk.halt_policy = if rng.random_bool(0.3) {
        mmtrader::trading::risk::HaltPolicy::Flatten
    } else {
        mmtrader::trading::risk::HaltPolicy::None
    };
    let mut market = Market::new();
    let mut s = TradingSession::open(&cfg, dir.path()).unwrap();
    let (mut restarts, mut kills, mut flattens, mut sent) = (0, 0, 0, 0);
    for step in 0..STEPS {
        let frozen = rng.random_range(0..30) == 0;
        let dt = if frozen {
            11_000
        } else {
            rng.random_range(20..600)
        };
        let snap = market.step(&mut rng, dt, frozen);
        s.on_snapshot(&snap);
        let now = market.time_ms;
        match rng.random_range(0..100) {
            0..=44 => {
                let i = rng.random_range(0..2);
                let action = if rng.random_bool(0.6) {
                    Action::Buy
                } else {
                    Action::Sell
                };
                let outcome = s.on_decision(&decision(SYMBOLS[i], action, now, market.mid(i)));
                if matches!(outcome, mmtrader::app::trading::DecisionOutcome::Sent(_)) {
                    sent += 1;
                }
            }
            45..=49 => {
                s.flatten(now);
                flattens += 1;
            }
            50..=52 => {
                s.kill_switch(now);
                kills += 1;
            }
            53..=60 => {
                let _ = s.resume(now);
                s.set_running(true);
            }
            61..=66 => {
                // A crash between two calls: the journal holds exactly what was fsynced.
                let before: Vec<Qty> = SYMBOLS.iter().map(|x| s.position_qty(x)).collect();
                drop(s);
                s = TradingSession::open(&cfg, dir.path())
                    .map_err(|e| format!("step {step}: restart failed: {e}"))?;
                let after: Vec<Qty> = SYMBOLS.iter().map(|x| s.position_qty(x)).collect();
                if before != after {
                    return Err(format!(
                        "step {step}: restart changed positions {before:?} -> {after:?}"
                    ));
                }
                restarts += 1;
            }
            _ => s.set_running(true),
        }
        if std::env::var("CHAOS_TRACE").is_ok() {
            let v = s.view(now);
            eprintln!(
                "step {step} t+{dt} frozen={frozen} halted={:?} flat={:?} pos={:?} orders={:?}",
                v.halted,
                v.flatten,
                v.positions
                    .iter()
                    .map(|p| (p.symbol.clone(), p.qty, p.stop))
                    .collect::<Vec<_>>(),
                v.orders
                    .iter()
                    .map(|o| (o.symbol.clone(), o.kind.clone(), o.qty))
                    .collect::<Vec<_>>()
            );
        }
        check(&s, dir.path(), now).map_err(|e| format!("step {step}: {e}"))?;
    }
    Ok(format!(
        "{sent} orders sent, {flattens} flattens, {kills} kill switches, {restarts} restarts"
    ))
}

#[test]
fn random_trading_sequences_never_execute_twice_lose_a_fill_or_leave_a_position_naked() {
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED") {
        Ok(s) => vec![s.parse().expect("CHAOS_SEED is a number")],
        Err(_) => (0..200).collect(),
    };
    let mut failures = Vec::new();
    let (mut total_sent, mut total_restarts) = (0u64, 0u64);
    for &seed in &seeds {
        match run(seed) {
            Ok(summary) => {
                let n: Vec<u64> = summary
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|x| x.parse().ok())
                    .collect();
                total_sent += n[0];
                total_restarts += n[3];
            }
            Err(e) => failures.push(format!("seed {seed}: {e} (replay: CHAOS_SEED={seed})")),
        }
    }
    eprintln!(
        "chaos: {} seeds, {total_sent} orders sent, {total_restarts} restarts, {} failed: \
         0 orders executed twice, 0 fills lost in the passing seeds",
        seeds.len(),
        failures.len()
    );
    assert!(
        total_sent > 0 && total_restarts > 0,
        "the chaos must trade and restart"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
