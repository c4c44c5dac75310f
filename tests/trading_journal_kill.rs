//! Crash safety of the order journal: a trader process is killed with SIGKILL at random
//! moments of an order flow and restarted until it finishes; afterwards no order is lost and
//! none reached the exchange twice.
//!
//! The trader is this test binary re-run with `CHILD_ENV` set. Its "exchange" is a paper
//! executor whose input (the submitted orders) lives in its own checksummed file, so the
//! exchange outlives the trader: the exchange's state is the replay of that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mmtrader::market::book::OrderBook;
use mmtrader::market::instrument::{Instrument, InstrumentStatus};
use mmtrader::market::types::{Level, Price, Qty, Side};
use mmtrader::trading::executor::{ExecutionConfig, Executor, MarketEvent};
use mmtrader::trading::journal::{
    ExchangeView, JOURNAL_FILE, Journal, JournalRecord, ReconcileAction, ReconcilePolicy,
    RecordLog, VenueOrder, reconcile,
};
use mmtrader::trading::money::Money;
use mmtrader::trading::order::{
    ClientOrderId, ExecutionEvent, Fill, OrderKind, OrderRequest, OrderStatus, TimeInForce,
};
use mmtrader::trading::paper::{PaperConfig, PaperExecutor};
use mmtrader::trading::risk::{OrderIntent, Protection, RiskConfig, RiskContext, RiskManager};
use rand::{RngExt, SeedableRng};

const CHILD_ENV: &str = "MMTRADER_JOURNAL_KILL_CHILD";
const ORDERS: u64 = 25;
const PREFIX: &str = "kt";
const SYMBOL: &str = "ETHUSDT";

fn instrument() -> Instrument {
    Instrument {
        symbol: SYMBOL.into(),
        base_asset: "ETH".into(),
        quote_asset: "USDT".into(),
        tick_size: Price::parse("0.01").unwrap(),
        step_size: Qty::parse("0.001").unwrap(),
        min_qty: Qty::parse("0.001").unwrap(),
        max_qty: Qty::ZERO,
        min_notional: Price::from_units(1),
        status: InstrumentStatus::Trading,
    }
}

fn risk() -> RiskManager {
    let cfg = RiskConfig {
        max_position_notional: Money::from_units(1_000_000_000),
        max_leverage: Price::from_units(1000),
        risk_per_trade_bps: 10_000,
        max_orders_per_minute: u32::MAX,
        stale_data_secs: 0,
        extreme_move_bps: 0,
        max_drawdown_bps: 0,
        daily_loss_limit_bps: 0,
        ..RiskConfig::default()
    };
    RiskManager::new(cfg, &ExecutionConfig::default())
}

fn approve(
    risk: &mut RiskManager,
    intent: OrderIntent,
    now_ms: i64,
) -> mmtrader::trading::risk::ApprovedOrder {
    let inst = instrument();
    let ctx = RiskContext {
        now_ms,
        instrument: &inst,
        reference_price: Price::from_units(2000),
        equity: Money::from_units(1_000_000),
        position_qty: Qty::ZERO,
        open_buy_qty: Qty::ZERO,
        open_sell_qty: Qty::ZERO,
        gross_exposure: Money::ZERO,
        open_order_exposure: Money::ZERO,
    };
    risk.check(intent, &ctx).expect("permissive limits approve")
}

/// The exchange: a paper executor replaying the submission file, remembering every order.
struct Exchange {
    log: RecordLog,
    paper: PaperExecutor,
    risk: RiskManager,
    book: OrderBook,
    orders: BTreeMap<ClientOrderId, VenueOrder>,
    fills: Vec<Fill>,
    submissions: Vec<ClientOrderId>,
}

impl Exchange {
    fn open(dir: &Path) -> Self {
        let (log, outcome) =
            RecordLog::open::<(OrderRequest, Protection)>(&dir.join("exchange.jsonl"), true)
                .unwrap();
        let mut pc = PaperConfig::from_execution(&ExecutionConfig::default(), "USDT");
        pc.latency_ms = 0;
        let mut book = OrderBook::new();
        book.apply_snapshot(
            &[Level {
                price: Price::from_units(1999),
                qty: Qty::from_units(1000),
            }],
            &[Level {
                price: Price::from_units(2000),
                qty: Qty::from_units(1000),
            }],
            1,
        );
        let mut ex = Self {
            log,
            paper: PaperExecutor::new(pc),
            risk: risk(),
            book,
            orders: BTreeMap::new(),
            fills: Vec::new(),
            submissions: Vec::new(),
        };
        for (req, prot) in outcome.records {
            ex.process(req, prot);
        }
        ex
    }

    /// Runs one submission through the paper executor; returns its events.
    fn process(&mut self, req: OrderRequest, prot: Protection) -> Vec<ExecutionEvent> {
        let t = self.submissions.len() as i64;
        self.submissions.push(req.client_id.clone());
        self.paper.on_market(
            MarketEvent::Book {
                symbol: SYMBOL,
                book: &self.book,
            },
            t,
        );
        let approved = approve(&mut self.risk, OrderIntent::from_request(&req, &prot), t);
        let req = approved.request().clone();
        if self.paper.submit(approved).is_err() {
            // A duplicate client id: the venue refuses it; nothing executes twice.
            return Vec::new();
        }
        let events = self.paper.poll_events();
        for ev in &events {
            let id = ev.client_id().clone();
            let o = self.orders.entry(id.clone()).or_insert(VenueOrder {
                client_id: id,
                exchange_id: String::new(),
                status: OrderStatus::New,
                filled_qty: Qty::ZERO,
            });
            match ev {
                ExecutionEvent::Acknowledged { exchange_id, .. } => {
                    o.exchange_id = exchange_id.clone();
                    o.status = OrderStatus::Acknowledged;
                }
                ExecutionEvent::Filled(f) => {
                    o.filled_qty += f.qty;
                    o.status = OrderStatus::PartiallyFilled;
                    self.fills.push(f.clone());
                }
                ExecutionEvent::Cancelled { .. } => o.status = OrderStatus::Cancelled,
                ExecutionEvent::Rejected { .. } => o.status = OrderStatus::Rejected,
                ExecutionEvent::Expired { .. } => o.status = OrderStatus::Expired,
            }
        }
        if let Some(o) = self.orders.get_mut(&req.client_id)
            && o.filled_qty == req.qty
        {
            o.status = OrderStatus::Filled;
        }
        events
    }

    /// Sends an order: durable at the venue once the append returns.
    fn send(&mut self, req: OrderRequest, prot: Protection) -> Vec<ExecutionEvent> {
        self.log.append(&(req.clone(), prot)).unwrap();
        self.process(req, prot)
    }

    fn view(&self) -> ExchangeView {
        ExchangeView {
            orders: self.orders.values().cloned().collect(),
            fills: self.fills.clone(),
            in_doubt: Vec::new(),
        }
    }
}

fn request(seq: u64) -> (OrderRequest, Protection) {
    let req = OrderRequest {
        client_id: ClientOrderId::new(PREFIX, seq).unwrap(),
        symbol: SYMBOL.into(),
        side: if seq.is_multiple_of(3) {
            Side::Sell
        } else {
            Side::Buy
        },
        kind: OrderKind::Market,
        qty: Qty::parse("0.01").unwrap(),
        reduce_only: false,
        time_in_force: TimeInForce::Gtc,
    };
    let stop = match req.side {
        Side::Buy => Price::from_units(1800),
        Side::Sell => Price::from_units(2200),
    };
    let prot = Protection {
        stop_loss: Some(stop),
        ..Protection::default()
    };
    (req, prot)
}

/// The trader: recover, reconcile, then place the remaining orders, journaling first.
fn run_child(dir: &Path) {
    let mut journal = Journal::open(&dir.join("journal"), PREFIX, true).unwrap();
    let mut exchange = Exchange::open(dir);
    let journaled = journal.state().orders().count();
    std::fs::write(
        dir.join(format!("start-{}", std::process::id())),
        journaled.to_string(),
    )
    .unwrap();
    let now = 0;
    // The in-process exchange's view is complete and immediate.
    for action in reconcile(
        journal.state(),
        &exchange.view(),
        now,
        &ReconcilePolicy::IMMEDIATE,
    ) {
        match action {
            ReconcileAction::Adopt(ev) => journal.record(JournalRecord::Event(ev)).unwrap(),
            ReconcileAction::Resubmit {
                request,
                protection,
            } => {
                for ev in exchange.send(request, protection) {
                    journal.record(JournalRecord::Event(ev)).unwrap();
                }
            }
            ReconcileAction::CancelStray { client_id } => {
                panic!("the exchange holds {client_id}, which the journal never saw")
            }
            ReconcileAction::Recheck { client_id, .. } => {
                panic!("an immediate exchange leaves nothing in doubt ({client_id})")
            }
        }
    }
    while journal.state().next_seq() <= ORDERS {
        let (req, prot) = request(journal.state().next_seq());
        journal
            .record(JournalRecord::Intent {
                request: req.clone(),
                protection: prot,
                time_ms: now,
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
        for ev in exchange.send(req, prot) {
            journal.record(JournalRecord::Event(ev)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn kill_at_random_points_loses_and_doubles_nothing() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir));
        std::process::exit(0);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut kills = 0;
    let mut finished = false;
    for _ in 0..40 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_at_random_points_loses_and_doubles_nothing",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the trader has started (process start-up on a loaded machine varies),
        // then let it run a random while before killing it.
        let marker = dir.join(format!("start-{}", child.id()));
        let mut status = None;
        while status.is_none() && !marker.exists() {
            status = child.try_wait().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        // Kill once the journal has grown by a random number of records (a point in the
        // flow, whatever the machine's speed), plus a random few hundred microseconds so
        // the kill can land inside a write as well as between them.
        let journal_file = dir.join("journal").join(JOURNAL_FILE);
        let lines =
            |p: &Path| std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        let target = lines(&journal_file) + rng.random_range(1..25usize);
        while status.is_none() && lines(&journal_file) < target {
            status = child.try_wait().unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        if status.is_none() {
            std::thread::sleep(Duration::from_micros(rng.random_range(0..2000u64)));
            status = child.try_wait().unwrap();
        }
        match status {
            Some(s) => {
                assert!(s.success(), "trader failed on its own: {s}");
                finished = true;
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    if !finished {
        // Let the last run finish undisturbed.
        let status = Command::new(&exe)
            .args(["--exact", "kill_at_random_points_loses_and_doubles_nothing"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    eprintln!("trader killed {kills} times, finished on its own: {finished}");
    assert!(kills > 0, "the trader was never killed");

    // Some restart found a flow cut in the middle.
    let starts: Vec<usize> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name()
                .to_str()?
                .starts_with("start-")
                .then_some(())?;
            std::fs::read_to_string(e.path()).ok()?.parse().ok()
        })
        .collect();
    assert!(
        starts.iter().any(|&n| n > 0 && n < ORDERS as usize),
        "no restart happened mid-flow: {starts:?}"
    );

    // The exchange got every order exactly once.
    let exchange = Exchange::open(&dir);
    let mut seen = exchange.submissions.clone();
    seen.sort();
    let mut expected: Vec<ClientOrderId> = (1..=ORDERS)
        .map(|n| ClientOrderId::new(PREFIX, n).unwrap())
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "lost or doubled orders at the exchange");

    // The journal agrees with the exchange: same orders, same fills, same position.
    let journal = Journal::open(&dir.join("journal"), PREFIX, true).unwrap();
    let state = journal.state();
    assert_eq!(state.next_seq(), ORDERS + 1);
    assert_eq!(state.orders().count(), ORDERS as usize);
    for (o, _) in state.orders() {
        assert_eq!(o.status, OrderStatus::Filled, "{}", o.client_id());
    }
    for f in &exchange.fills {
        assert!(state.has_fill(&f.client_id, &f.trade_id), "fill {f:?} lost");
    }
    let buys = (1..=ORDERS).filter(|n| !n.is_multiple_of(3)).count() as i64;
    let sells = ORDERS as i64 - buys;
    assert_eq!(
        state.position_qty(SYMBOL),
        Qty(Qty::parse("0.01").unwrap().raw() * (buys - sells))
    );
    assert_eq!(
        state.position_qty(SYMBOL),
        exchange.paper.portfolio().qty(SYMBOL)
    );
    assert!(reconcile(state, &exchange.view(), 0, &ReconcilePolicy::IMMEDIATE).is_empty());
}
