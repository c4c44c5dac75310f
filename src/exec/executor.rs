//! [`Executor`] over a real exchange account (Binance spot, its testnet, the simulator, MEXC).
//!
//! The trait is synchronous; requests go to an async worker task that talks REST and reads the
//! user-data stream, and what the venue reports comes back as execution events. REST replies,
//! the stream and `myTrades` report the same things, so events are applied to the local order
//! states and only those that change something (a new ack, a trade id not seen before, a first
//! final status) are passed on: nothing is counted twice. A fill reported after the order's
//! final status (Binance often answers a cancel before the trade report of a fill just before
//! it) is still a fill: it is counted once, and the status stays final.
//!
//! Nothing is sent twice and nothing is lost: an order whose send was in doubt (timeout, 5xx)
//! is only looked up ([`BinanceSpot::probe`], with backoff) until the venue knows it or it is
//! certainly too late for it to execute, when it is reported rejected, not resent. A cancel
//! that fails is retried with backoff until the venue says the order is closed; an in-doubt
//! order the trader cancelled is never placed by any recovery path, and cancelled if it turns
//! out to exist and be open. A final status whose fills are not all known yet keeps the trades
//! of the order being asked for until they add up.
//!
//! Protective exits: from an entry's first fill (partial or not) the executor places its
//! stop-loss / take-profit on the venue for the quantity the account received (the filled
//! quantity less a commission charged in the base asset, Binance's default on a buy; ids
//! `<entry>-s` / `<entry>-t`); each later fill adds a set for the new quantity (`<entry>-s2`,
//! ...), also a fill reported after a cancel, so no filled quantity is left without a stop
//! (a remainder below the venue's minimum waits for the next fill). On Binance a stop-loss and a take-profit go as one OCO (list `<entry>-o`): the
//! venue holds the quantity once and expires one leg when the other executes; two separate
//! orders would need it twice. A lone exit is a plain STOP_LOSS / TAKE_PROFIT order; elsewhere
//! two exits are separate orders and the executor cancels the other when one executes.
//! Positions are likewise what the account holds. Trailing stops are not placed on the venue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::binance_spot::{BinanceSpot, Flavor, OcoSpec, Probe, Sent, SentList, valid_client_id};
use super::rest::{ExecError, local_ms};
use super::user_stream::{UserEvent, UserStream, UserStreamConfig};
use super::venue::{
    Assets, events_of_reply, events_of_report, exchange_symbol, fills_of_trades, reject_reason,
    spec_of,
};
use super::wire::{ExchangeOrder, ExecutionReport, UserStreamEvent};
use crate::market::types::{Price, Qty, Side};
use crate::trading::executor::{ApprovedOrder, Executor, ExecutorError, MarketEvent, Protection};
use crate::trading::order::{
    ClientOrderId, ExecutionEvent, Fill, OrderError, OrderKind, OrderRequest, OrderState,
    OrderStatus, TimeInForce,
};
use crate::trading::position::Position;

enum Cmd {
    Submit(OrderRequest),
    /// A stop-loss and a take-profit for one quantity, as one order list.
    SubmitOco {
        stop: OrderRequest,
        take: OrderRequest,
        list_id: String,
    },
    Cancel(OrderRequest),
    /// Orders taken over from the journal, with the venue id of those acknowledged.
    Adopt(Vec<(OrderRequest, Option<String>)>),
}

/// How often orders are polled when there is no user-data stream (MEXC).
const POLL_EVERY: Duration = Duration::from_secs(5);
/// How often the worker checks which orders are due a look.
const TICK: Duration = Duration::from_millis(50);

/// An exchange account behind the [`Executor`] interface.
pub struct ExchangeExecutor {
    name: String,
    client: Arc<BinanceSpot>,
    cmd: mpsc::UnboundedSender<Cmd>,
    /// Events in batches as the worker learned them (one reply's ack and fills together).
    events: mpsc::UnboundedReceiver<Vec<ExecutionEvent>>,
    orders: BTreeMap<ClientOrderId, OrderState>,
    protections: HashMap<ClientOrderId, Protection>,
    siblings: HashMap<ClientOrderId, ClientOrderId>,
    positions: BTreeMap<String, Position>,
    /// Commission charged in the base asset per order (it reduces what a buy delivers).
    base_fees: HashMap<ClientOrderId, Qty>,
    /// Quantity of each entry its exits cover, and how many sets of exits it has.
    covered: HashMap<ClientOrderId, Qty>,
    exit_sets: HashMap<ClientOrderId, u32>,
    last_price: HashMap<String, Price>,
    exit_hook: Option<ExitHook>,
    worker: JoinHandle<()>,
}

/// Called with each protective exit before it is sent (to journal it); `false` keeps it unsent.
pub type ExitHook = Box<dyn FnMut(&OrderRequest) -> bool + Send>;

impl std::fmt::Debug for ExchangeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeExecutor")
            .field("name", &self.name)
            .field("client", &self.client)
            .field("orders", &self.orders.len())
            .finish()
    }
}

impl ExchangeExecutor {
    /// Starts the worker (on the current tokio runtime); with `user_stream` set it also
    /// follows the account's user-data stream. Instruments must be loaded on the client.
    pub fn start(
        name: &str,
        client: Arc<BinanceSpot>,
        user_stream: Option<UserStreamConfig>,
    ) -> Self {
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let stream = user_stream.map(|c| UserStream::spawn(client.clone(), c));
        let worker = tokio::spawn(worker(client.clone(), cmd_rx, ev_tx, stream));
        Self {
            name: name.to_string(),
            client,
            cmd,
            events,
            orders: BTreeMap::new(),
            protections: HashMap::new(),
            siblings: HashMap::new(),
            positions: BTreeMap::new(),
            base_fees: HashMap::new(),
            covered: HashMap::new(),
            exit_sets: HashMap::new(),
            last_price: HashMap::new(),
            exit_hook: None,
            worker,
        }
    }

    /// Journals protective exits: the hook sees each exit request before it is sent.
    pub fn set_exit_hook(&mut self, hook: ExitHook) {
        self.exit_hook = Some(hook);
    }

    /// The account client.
    pub fn client(&self) -> &Arc<BinanceSpot> {
        &self.client
    }

    /// Takes over orders known from the journal (after a restart), so venue events about them
    /// are tracked; asks the venue about the open ones at once.
    pub fn adopt(&mut self, states: impl IntoIterator<Item = (OrderState, Protection)>) {
        let mut open = Vec::new();
        let mut sets: BTreeMap<(ClientOrderId, u32), Qty> = BTreeMap::new();
        for (s, p) in states {
            if s.status.is_open() {
                open.push((s.request.clone(), s.exchange_id.clone()));
            }
            if s.request.reduce_only
                && let Some((entry, n)) = exit_of(s.client_id())
            {
                // One leg per set counts (a stop and a take-profit cover the same quantity).
                sets.insert((entry, n), s.request.qty);
            }
            self.protections.insert(s.client_id().clone(), p);
            self.orders.insert(s.client_id().clone(), s);
        }
        for ((entry, n), qty) in sets {
            *self.covered.entry(entry.clone()).or_default() += qty;
            let sets = self.exit_sets.entry(entry).or_default();
            *sets = (*sets).max(n);
        }
        if !open.is_empty() {
            let _ = self.cmd.send(Cmd::Adopt(open));
        }
    }

    /// The local state of one order.
    pub fn order(&self, id: &ClientOrderId) -> Option<&OrderState> {
        self.orders.get(id)
    }

    /// Stops the worker.
    pub fn shutdown(self) {
        self.worker.abort();
    }

    fn apply(&mut self, ev: &ExecutionEvent) -> bool {
        let Some(o) = self.orders.get_mut(ev.client_id()) else {
            return false;
        };
        let counted = match (o.apply(ev), ev) {
            (Ok(()), _) => true,
            // The order model refuses any change after a final status; a trade is not a change
            // of status but money that moved.
            (Err(OrderError::Transition(_)), ExecutionEvent::Filled(f)) => late_fill(o, f),
            // A duplicate (same trade id, second ack, late final status): already counted.
            _ => false,
        };
        if !counted {
            return false;
        }
        if let ExecutionEvent::Filled(f) = ev {
            let base = self
                .client
                .instrument(&exchange_symbol(&f.symbol))
                .map(|i| i.base_asset);
            // A buy's fee in the base asset is base the account never received.
            let held = if f.side == Side::Buy && base.as_deref() == Some(f.fee_asset.as_str()) {
                *self.base_fees.entry(f.client_id.clone()).or_default() += f.fee;
                f.qty - f.fee
            } else {
                f.qty
            };
            self.positions
                .entry(f.symbol.clone())
                .or_insert_with(|| Position::flat(&f.symbol))
                .apply(f.side, f.price, held, f.fee_quote);
            self.last_price.insert(f.symbol.clone(), f.price);
        }
        true
    }

    /// After a fill of `id`: an exit that completed ends its sibling; an entry gets exits for
    /// what it filled beyond what its exits already cover (on the first fill, partial or not,
    /// and again as fills grow, also after a cancel or expiry).
    fn protective(&mut self, id: &ClientOrderId) {
        let Some(o) = self.orders.get(id).cloned() else {
            return;
        };
        if o.request.reduce_only {
            // Exits of an exit: when one executes, cancel its sibling.
            if o.status == OrderStatus::Filled
                && let Some(sib) = self.siblings.remove(id)
            {
                self.siblings.remove(&sib);
                if self.orders.get(&sib).is_some_and(|s| s.status.is_open()) {
                    let _ = self.cancel(&sib);
                }
            }
            return;
        }
        let Some(p) = self.protections.get(id).copied() else {
            return;
        };
        if p.stop_loss.is_none() && p.take_profit.is_none() {
            return;
        }
        if !self.places_exits() {
            // The trading session watches these exits itself (see `Executor::places_exits`).
            return;
        }
        let Some(inst) = self.client.instrument(&exchange_symbol(&o.request.symbol)) else {
            return;
        };
        // What the account received (a buy's base fee never arrived), as the venue can sell it.
        let fee = self.base_fees.get(id).copied().unwrap_or(Qty::ZERO);
        let held = inst.floor_qty(o.filled_qty - fee);
        let covered = self.covered.get(id).copied().unwrap_or(Qty::ZERO);
        let qty = held - covered;
        if qty.raw() <= 0 {
            return;
        }
        let reference = p.stop_loss.or(p.take_profit).unwrap_or_default();
        let big_enough = inst.check_qty(qty).is_ok()
            && crate::market::types::notional(reference, qty) >= inst.min_notional.raw() as i128;
        if !big_enough {
            // The venue would refuse an exit this small; the next fill adds to it.
            if o.status.is_terminal() {
                tracing::warn!(entry = %id, %qty, "filled remainder below the venue's minimum; no exit for it");
            }
            return;
        }
        let n = self.exit_sets.get(id).copied().unwrap_or(0) + 1;
        // The first set keeps the plain ids; later ones (fills that came after) are numbered.
        let tag = if n == 1 { String::new() } else { n.to_string() };
        let exit_side = match o.request.side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let mut reqs = Vec::new();
        for (suffix, kind) in [
            ("s", p.stop_loss.map(|stop| OrderKind::StopLoss { stop })),
            (
                "t",
                p.take_profit.map(|stop| OrderKind::TakeProfit { stop }),
            ),
        ] {
            let Some(kind) = kind else { continue };
            let Ok(exit_id) = ClientOrderId::parse(&format!("{id}-{suffix}{tag}")) else {
                tracing::warn!(entry = %id, "entry id too long for an exit id; exit not placed");
                continue;
            };
            let req = OrderRequest {
                client_id: exit_id.clone(),
                symbol: o.request.symbol.clone(),
                side: exit_side,
                kind,
                qty,
                reduce_only: true,
                time_in_force: TimeInForce::Gtc,
            };
            if let Some(hook) = self.exit_hook.as_mut()
                && !hook(&req)
            {
                tracing::warn!(exit = %exit_id, "exit not journaled; not sent");
                continue;
            }
            self.orders
                .insert(exit_id.clone(), OrderState::new(req.clone(), local_ms()));
            reqs.push(req);
        }
        if reqs.is_empty() {
            return;
        }
        self.covered.insert(id.clone(), held);
        self.exit_sets.insert(id.clone(), n);
        let list_id = format!("{id}-o{tag}");
        match reqs.as_slice() {
            // Binance holds the quantity once for an OCO and expires the other leg itself; two
            // separate orders would need it twice, and the second is refused.
            [stop, take]
                if self.client.flavor() == Flavor::Binance && valid_client_id(&list_id) =>
            {
                let _ = self.cmd.send(Cmd::SubmitOco {
                    stop: stop.clone(),
                    take: take.clone(),
                    list_id,
                });
            }
            _ => {
                for r in &reqs {
                    let _ = self.cmd.send(Cmd::Submit(r.clone()));
                }
                if let [a, b] = reqs.as_slice() {
                    self.siblings
                        .insert(a.client_id.clone(), b.client_id.clone());
                    self.siblings
                        .insert(b.client_id.clone(), a.client_id.clone());
                }
            }
        }
    }
}

impl Executor for ExchangeExecutor {
    fn name(&self) -> &str {
        &self.name
    }

    fn submit(&mut self, order: ApprovedOrder) -> Result<(), ExecutorError> {
        let (req, protection) = order.into_parts();
        if self.orders.contains_key(&req.client_id) {
            return Err(ExecutorError::DuplicateClientId(req.client_id));
        }
        if self
            .client
            .instrument(&exchange_symbol(&req.symbol))
            .is_none()
        {
            return Err(ExecutorError::UnknownSymbol(req.symbol));
        }
        self.cmd
            .send(Cmd::Submit(req.clone()))
            .map_err(|_| ExecutorError::Unavailable("executor worker stopped".into()))?;
        self.protections.insert(req.client_id.clone(), protection);
        self.orders
            .insert(req.client_id.clone(), OrderState::new(req, local_ms()));
        Ok(())
    }

    fn cancel(&mut self, client_id: &ClientOrderId) -> Result<(), ExecutorError> {
        let o = self
            .orders
            .get(client_id)
            .filter(|o| o.status.is_open())
            .ok_or_else(|| ExecutorError::UnknownOrder(client_id.clone()))?;
        self.cmd
            .send(Cmd::Cancel(o.request.clone()))
            .map_err(|_| ExecutorError::Unavailable("executor worker stopped".into()))
    }

    fn on_market(&mut self, event: MarketEvent<'_>, _now_ms: i64) {
        match event {
            MarketEvent::Trade(t) => {
                self.last_price.insert(t.symbol.clone(), t.price);
            }
            MarketEvent::Book { symbol, book } => {
                if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                    let mid = Price((b.price.raw() + a.price.raw()) / 2);
                    self.last_price.insert(symbol.to_string(), mid);
                }
            }
        }
    }

    fn on_time(&mut self, _now_ms: i64) {}

    fn poll_events(&mut self) -> Vec<ExecutionEvent> {
        let mut out = Vec::new();
        while let Ok(batch) = self.events.try_recv() {
            // Exits are sized after the whole batch: one reply's fills get one set of exits.
            let mut filled = Vec::new();
            for ev in batch {
                if !self.apply(&ev) {
                    continue;
                }
                let id = ev.client_id().clone();
                if matches!(ev, ExecutionEvent::Filled(_)) && !filled.contains(&id) {
                    filled.push(id);
                }
                out.push(ev);
            }
            for id in filled {
                self.protective(&id);
            }
        }
        out
    }

    fn open_orders(&self) -> Vec<OrderState> {
        self.orders
            .values()
            .filter(|o| o.status.is_open())
            .cloned()
            .collect()
    }

    fn positions(&self) -> Vec<Position> {
        self.positions.values().cloned().collect()
    }

    fn last_price(&self, symbol: &str) -> Option<Price> {
        self.last_price.get(symbol).copied()
    }

    fn places_exits(&self) -> bool {
        // MEXC spot has no stop orders.
        self.client.flavor() != Flavor::Mexc
    }
}

/// The entry and set number of an exit id `<entry>-s[n]` / `<entry>-t[n]` (the first set has
/// no number).
fn exit_of(id: &ClientOrderId) -> Option<(ClientOrderId, u32)> {
    let (entry, tail) = id.as_str().rsplit_once('-')?;
    let n = tail.strip_prefix('s').or_else(|| tail.strip_prefix('t'))?;
    let n = if n.is_empty() { 1 } else { n.parse().ok()? };
    Some((ClientOrderId::parse(entry).ok()?, n))
}

/// Counts a fill that arrived after the order's final status, once per trade id and within
/// the order's quantity; the status stays final.
fn late_fill(o: &mut OrderState, f: &Fill) -> bool {
    let fits = o.filled_qty + f.qty <= o.request.qty;
    if !o.status.is_terminal()
        || f.qty.raw() <= 0
        || f.price.raw() <= 0
        || !fits
        || o.trade_ids.contains(&f.trade_id)
    {
        return false;
    }
    tracing::info!(
        client_id = %o.request.client_id,
        trade_id = %f.trade_id,
        qty = %f.qty,
        status = ?o.status,
        "fill reported after the order's final status; counted"
    );
    o.filled_qty += f.qty;
    o.filled_notional += f.notional();
    o.fees_quote += f.fee_quote;
    o.trade_ids.push(f.trade_id.clone());
    o.updated_ms = o.updated_ms.max(f.time_ms);
    true
}

/// What the worker knows of one order and what it still has to find out.
struct Tracked {
    req: OrderRequest,
    assets: Assets,
    /// Exchange symbol.
    sym: String,
    /// Venue order id once known.
    order_id: Option<String>,
    /// Timestamp (server clock) of a send whose outcome is unknown; `Some` while in doubt.
    in_doubt: Option<i64>,
    /// The trader asked for a cancel that the venue has not confirmed.
    cancel_wanted: bool,
    /// The venue reported a final status.
    closed: bool,
    /// Ask the venue for the order's state (after a stream gap, or when adopted).
    refresh: bool,
    /// Quantity the venue says executed (the most it ever said).
    executed: Qty,
    /// Trade ids passed on, and their total.
    trades: HashSet<String>,
    filled: Qty,
    /// When to look next, and the wait after the next inconclusive look.
    next: Instant,
    backoff: Duration,
}

impl Tracked {
    fn new(req: OrderRequest, assets: Assets, first: Duration) -> Self {
        Self {
            sym: exchange_symbol(&req.symbol),
            req,
            assets,
            order_id: None,
            in_doubt: None,
            cancel_wanted: false,
            closed: false,
            refresh: false,
            executed: Qty::ZERO,
            trades: HashSet::new(),
            filled: Qty::ZERO,
            next: Instant::now(),
            backoff: first,
        }
    }

    /// True while something about the order is still to be learned or done on the venue.
    fn unsettled(&self, polled: bool) -> bool {
        self.in_doubt.is_some()
            || (!self.closed && (self.cancel_wanted || self.refresh || polled))
            || (self.closed && self.filled < self.executed)
    }

    /// Look again after `first`, backing off from there.
    fn look_in(&mut self, first: Duration) {
        self.next = Instant::now() + first;
        self.backoff = first;
    }

    /// The look was inconclusive: wait longer each time, up to `max`.
    fn later(&mut self, max: Duration) {
        self.next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(max);
    }

    /// Takes what the venue says about the order (a reply or a query).
    fn observe(&mut self, o: &ExchangeOrder) {
        self.in_doubt = None;
        self.order_id.get_or_insert_with(|| o.order_id.clone());
        self.executed = self.executed.max(o.executed_qty);
        if o.status.as_ref().is_some_and(|s| !s.is_open()) {
            self.closed = true;
        }
    }

    /// Takes what a stream report says about the order.
    fn observe_report(&mut self, r: &ExecutionReport) {
        self.in_doubt = None;
        self.order_id.get_or_insert_with(|| r.order_id.clone());
        self.executed = self.executed.max(r.cum_qty);
        if !r.status.is_open() {
            self.closed = true;
        }
    }
}

struct Worker {
    client: Arc<BinanceSpot>,
    events: mpsc::UnboundedSender<Vec<ExecutionEvent>>,
    orders: HashMap<String, Tracked>,
    /// No user-data stream: open orders are polled.
    polled: bool,
    settle: Duration,
    backoff_max: Duration,
}

async fn worker(
    client: Arc<BinanceSpot>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Vec<ExecutionEvent>>,
    mut stream: Option<UserStream>,
) {
    let cfg = client.config();
    let mut w = Worker {
        settle: Duration::from_millis(cfg.unknown_settle_ms.max(10)),
        backoff_max: Duration::from_millis(cfg.resolve_backoff_max_ms.max(10)),
        client: client.clone(),
        events,
        orders: HashMap::new(),
        polled: stream.is_none(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connects = 0u64;
    loop {
        let stream_ev = async {
            match stream.as_mut() {
                Some(s) => s.events.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = cmds.recv() => {
                let Some(c) = c else { break };
                match c {
                    Cmd::Submit(req) => w.submit(req).await,
                    Cmd::SubmitOco { stop, take, list_id } => w.submit_oco(stop, take, list_id).await,
                    Cmd::Cancel(req) => w.cancel(req.client_id.as_str()).await,
                    Cmd::Adopt(orders) => w.adopt(orders),
                }
            }
            ev = stream_ev => match ev {
                Some(UserEvent::Event(UserStreamEvent::Execution(r))) => w.report(&r),
                Some(UserEvent::Connected) => {
                    connects += 1;
                    if connects > 1 {
                        // Reports may have been missed while the stream was down.
                        w.refresh_all();
                    }
                }
                Some(UserEvent::Disconnected(why)) => tracing::warn!("user-data stream down: {why}"),
                Some(UserEvent::Malformed(why)) => tracing::warn!("user-data frame skipped: {why}"),
                Some(UserEvent::Event(_)) => {}
                None => {
                    stream = None;
                    w.polled = true;
                }
            },
            _ = tick.tick() => w.look_at_due().await,
        }
    }
    if let Some(s) = stream {
        s.shutdown().await;
    }
}

impl Worker {
    /// Passes events on, keeping count of the fills (a trade id once) and the final status.
    fn emit(&mut self, cid: &str, evs: Vec<ExecutionEvent>) {
        let Some(t) = self.orders.get_mut(cid) else {
            return;
        };
        let mut batch = Vec::new();
        for ev in evs {
            match &ev {
                ExecutionEvent::Filled(f) => {
                    if !t.trades.insert(f.trade_id.clone()) {
                        continue;
                    }
                    t.filled += f.qty;
                    t.executed = t.executed.max(t.filled);
                }
                ExecutionEvent::Acknowledged { exchange_id, .. } => {
                    t.order_id.get_or_insert_with(|| exchange_id.clone());
                }
                ExecutionEvent::Cancelled { .. }
                | ExecutionEvent::Expired { .. }
                | ExecutionEvent::Rejected { .. } => t.closed = true,
            }
            batch.push(ev);
        }
        if !batch.is_empty() {
            let _ = self.events.send(batch);
        }
    }

    async fn submit(&mut self, req: OrderRequest) {
        let cid = req.client_id.as_str().to_string();
        let assets = assets_of(&self.client, &req);
        self.orders.insert(
            cid.clone(),
            Tracked::new(req.clone(), assets.clone(), self.settle),
        );
        match self.client.send_order(&spec_of(&req)).await {
            Ok(Sent::Placed(o)) => {
                let evs = events_of_reply(&req, &assets, &o);
                if let Some(t) = self.orders.get_mut(&cid) {
                    t.observe(&o);
                    t.look_in(self.settle);
                }
                self.emit(&cid, evs);
            }
            Ok(Sent::InDoubt { sent_ms, reason }) => {
                tracing::warn!(client_id = %cid, "placement outcome unknown ({reason}); looking it up");
                if let Some(t) = self.orders.get_mut(&cid) {
                    t.in_doubt = Some(sent_ms);
                    t.look_in(self.settle);
                }
            }
            Err(e) => {
                tracing::warn!(client_id = %cid, "order not placed: {e}");
                let ev = ExecutionEvent::Rejected {
                    client_id: req.client_id.clone(),
                    reason: reject_reason(&e),
                    time_ms: local_ms(),
                };
                self.emit(&cid, vec![ev]);
            }
        }
    }

    async fn submit_oco(&mut self, stop: OrderRequest, take: OrderRequest, list_id: String) {
        let legs = [stop, take];
        for req in &legs {
            let assets = assets_of(&self.client, req);
            self.orders.insert(
                req.client_id.as_str().to_string(),
                Tracked::new(req.clone(), assets, self.settle),
            );
        }
        let [stop, take] = &legs;
        let (Some(stop_price), Some(take_price)) = (stop.kind.stop_price(), take.kind.stop_price())
        else {
            return;
        };
        let spec = OcoSpec {
            symbol: exchange_symbol(&stop.symbol),
            side: stop.side,
            qty: stop.qty,
            stop: stop_price,
            stop_id: stop.client_id.as_str().to_string(),
            take_profit: take_price,
            take_profit_id: take.client_id.as_str().to_string(),
            list_id,
        };
        match self.client.send_oco(&spec).await {
            Ok(SentList::Placed(orders)) => {
                for req in &legs {
                    let cid = req.client_id.as_str().to_string();
                    let Some(o) = orders.iter().find(|o| o.client_order_id == cid) else {
                        // Not in the reply: ask for it.
                        if let Some(t) = self.orders.get_mut(&cid) {
                            t.refresh = true;
                        }
                        continue;
                    };
                    let assets = assets_of(&self.client, req);
                    let evs = events_of_reply(req, &assets, o);
                    if let Some(t) = self.orders.get_mut(&cid) {
                        t.observe(o);
                        t.look_in(self.settle);
                    }
                    self.emit(&cid, evs);
                }
            }
            Ok(SentList::InDoubt { sent_ms, reason }) => {
                tracing::warn!(list = %spec.list_id, "OCO outcome unknown ({reason}); looking its legs up");
                for req in &legs {
                    if let Some(t) = self.orders.get_mut(req.client_id.as_str()) {
                        t.in_doubt = Some(sent_ms);
                        t.look_in(self.settle);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(list = %spec.list_id, "OCO not placed: {e}");
                for req in &legs {
                    let ev = ExecutionEvent::Rejected {
                        client_id: req.client_id.clone(),
                        reason: reject_reason(&e),
                        time_ms: local_ms(),
                    };
                    self.emit(req.client_id.as_str(), vec![ev]);
                }
            }
        }
    }

    async fn cancel(&mut self, cid: &str) {
        let Some(t) = self.orders.get_mut(cid) else {
            tracing::warn!(client_id = %cid, "cancel of an order this executor never sent");
            return;
        };
        if t.closed {
            return;
        }
        t.cancel_wanted = true;
        if t.in_doubt.is_some() {
            // Not placed again, whatever the lookup finds: if it exists and is open, it is
            // cancelled then.
            tracing::info!(client_id = %cid, "cancel of an order still in doubt; resolving it first");
            return;
        }
        self.try_cancel(cid).await;
    }

    fn adopt(&mut self, orders: Vec<(OrderRequest, Option<String>)>) {
        let now_ms = self.client.rest().server_ms();
        for (req, exchange_id) in orders {
            let cid = req.client_id.as_str().to_string();
            let assets = assets_of(&self.client, &req);
            let mut t = Tracked::new(req, assets, self.settle);
            match exchange_id {
                Some(id) => {
                    t.order_id = Some(id);
                    t.refresh = true;
                }
                // Never acknowledged: it may have been sent before the restart, at the latest
                // now, so it is judged as sent now.
                None => t.in_doubt = Some(now_ms),
            }
            t.next = Instant::now();
            self.orders.insert(cid, t);
        }
    }

    fn report(&mut self, r: &ExecutionReport) {
        let Some(t) = self.orders.get_mut(&r.client_order_id) else {
            return;
        };
        let Ok(id) = ClientOrderId::parse(&r.client_order_id) else {
            return;
        };
        let was_in_doubt = t.in_doubt.is_some();
        t.observe_report(r);
        if was_in_doubt || (t.closed && t.executed > t.filled) {
            // The stream settled the doubt, or a final status came before its fills: act now.
            t.look_in(self.settle);
        }
        let evs = events_of_report(&id, &t.req.symbol, &t.assets, r);
        let cid = r.client_order_id.clone();
        self.emit(&cid, evs);
    }

    fn refresh_all(&mut self) {
        for t in self.orders.values_mut() {
            if !t.closed && t.in_doubt.is_none() {
                t.refresh = true;
                t.next = Instant::now();
            }
        }
    }

    async fn look_at_due(&mut self) {
        let now = Instant::now();
        let polled = self.polled;
        let due: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, t)| t.next <= now && t.unsettled(polled))
            .map(|(c, _)| c.clone())
            .collect();
        for cid in due {
            self.look(&cid).await;
        }
    }

    async fn look(&mut self, cid: &str) {
        let Some(t) = self.orders.get(cid) else {
            return;
        };
        if let Some(sent_ms) = t.in_doubt {
            self.probe(cid, sent_ms).await;
        } else if t.cancel_wanted && !t.closed {
            self.try_cancel(cid).await;
        } else if !t.closed {
            self.refresh(cid).await;
        } else {
            self.catch_up_trades(cid).await;
        }
    }

    async fn probe(&mut self, cid: &str, sent_ms: i64) {
        let Some(sym) = self.orders.get(cid).map(|t| t.sym.clone()) else {
            return;
        };
        match self.client.probe(&sym, cid, sent_ms).await {
            Ok(Probe::Found(o)) => {
                tracing::info!(client_id = %cid, order_id = %o.order_id, "in-doubt order found on the venue");
                self.venue_events(cid, &o).await;
                // Cancelled while in doubt and still open: every moment it works may trade.
                if self
                    .orders
                    .get(cid)
                    .is_some_and(|t| t.cancel_wanted && !t.closed)
                {
                    self.try_cancel(cid).await;
                }
            }
            Ok(Probe::NeverReceived { waited_ms }) => {
                let e = ExecError::NotReceived {
                    exchange: self.client.rest().dialect().name,
                    path: "/api/v3/order".into(),
                    waited_ms,
                };
                tracing::warn!(client_id = %cid, "{e}");
                let Some(t) = self.orders.get_mut(cid) else {
                    return;
                };
                t.in_doubt = None;
                let ev = ExecutionEvent::Rejected {
                    client_id: t.req.client_id.clone(),
                    reason: reject_reason(&e),
                    time_ms: local_ms(),
                };
                self.emit(cid, vec![ev]);
            }
            Ok(Probe::NotYet) => self.later(cid),
            Err(e) => {
                tracing::warn!(client_id = %cid, "lookup of an in-doubt order failed: {e}");
                self.later(cid);
            }
        }
    }

    async fn try_cancel(&mut self, cid: &str) {
        let Some(sym) = self.orders.get(cid).map(|t| t.sym.clone()) else {
            return;
        };
        let dialect = self.client.rest().dialect().clone();
        match self.client.cancel(&sym, cid).await {
            Ok(o) => self.venue_events(cid, &o).await,
            Err(e) if e.is_unknown_order(&dialect) => {
                // Closed already, or not visible yet: only a final status ends the cancel.
                match self.client.query(&sym, cid).await {
                    Ok(o) if o.status.as_ref().is_some_and(|s| !s.is_open()) => {
                        self.venue_events(cid, &o).await;
                    }
                    Ok(_) => self.later(cid),
                    Err(q) => {
                        tracing::info!(client_id = %cid, "cancel refused ({e}) and order not visible ({q}); retrying");
                        self.later(cid);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(client_id = %cid, "cancel failed ({e}); retrying");
                self.later(cid);
            }
        }
    }

    async fn refresh(&mut self, cid: &str) {
        let Some(sym) = self.orders.get(cid).map(|t| t.sym.clone()) else {
            return;
        };
        match self.client.query(&sym, cid).await {
            Ok(o) => {
                self.venue_events(cid, &o).await;
                let polled = self.polled;
                if let Some(t) = self.orders.get_mut(cid) {
                    t.refresh = false;
                    if polled {
                        t.look_in(POLL_EVERY);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(client_id = %cid, "order lookup failed: {e}");
                self.later(cid);
            }
        }
    }

    async fn catch_up_trades(&mut self, cid: &str) {
        let Some(t) = self.orders.get(cid) else {
            return;
        };
        let Some(order_id) = t.order_id.clone() else {
            return;
        };
        let sym = t.sym.clone();
        match self.client.my_trades(&sym, Some(&order_id)).await {
            Ok(trades) => {
                let evs = self.fills(cid, &trades);
                self.emit(cid, evs);
                self.later(cid);
            }
            Err(e) => {
                tracing::warn!(client_id = %cid, "trade lookup failed: {e}");
                self.later(cid);
            }
        }
    }

    fn fills(&self, cid: &str, trades: &[super::wire::AccountTrade]) -> Vec<ExecutionEvent> {
        let Some(t) = self.orders.get(cid) else {
            return Vec::new();
        };
        fills_of_trades(
            &t.req.client_id,
            &t.req.symbol,
            t.req.side,
            &t.assets,
            trades,
        )
        .into_iter()
        .map(ExecutionEvent::Filled)
        .collect()
    }

    /// Events of what the venue says about an order: its ack, the fills not yet passed on
    /// (from the account's trades), its final status.
    async fn venue_events(&mut self, cid: &str, o: &ExchangeOrder) {
        let Some(t) = self.orders.get_mut(cid) else {
            return;
        };
        t.observe(o);
        let (req, assets, filled, sym) = (t.req.clone(), t.assets.clone(), t.filled, t.sym.clone());
        let mut evs = vec![ExecutionEvent::Acknowledged {
            client_id: req.client_id.clone(),
            exchange_id: o.order_id.clone(),
            time_ms: o.time_ms,
        }];
        if o.executed_qty > filled {
            match self.client.my_trades(&sym, Some(&o.order_id)).await {
                Ok(trades) => evs.extend(self.fills(cid, &trades)),
                Err(e) => tracing::warn!(client_id = %cid, "trade lookup failed: {e}"),
            }
        }
        let mut bare = o.clone();
        bare.fills.clear();
        evs.extend(events_of_reply(&req, &assets, &bare).into_iter().skip(1));
        self.emit(cid, evs);
        if let Some(t) = self.orders.get_mut(cid) {
            t.look_in(self.settle);
        }
    }

    fn later(&mut self, cid: &str) {
        let max = self.backoff_max;
        if let Some(t) = self.orders.get_mut(cid) {
            t.later(max);
        }
    }
}

fn assets_of(client: &BinanceSpot, req: &OrderRequest) -> Assets {
    match client.instrument(&exchange_symbol(&req.symbol)) {
        Some(i) => Assets {
            base: i.base_asset,
            quote: i.quote_asset,
        },
        None => {
            let (base, quote) = crate::config::split_symbol(&req.symbol).unwrap_or_default();
            Assets { base, quote }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trading::money::Money;
    use crate::trading::order::CancelReason;

    fn id(s: &str) -> ClientOrderId {
        ClientOrderId::parse(s).unwrap()
    }

    #[test]
    fn exit_ids_name_their_entry_and_set() {
        assert_eq!(exit_of(&id("mm-7-s")), Some((id("mm-7"), 1)));
        assert_eq!(exit_of(&id("mm-7-t3")), Some((id("mm-7"), 3)));
        assert_eq!(exit_of(&id("mm-7")), None);
        assert_eq!(exit_of(&id("mm-7-x")), None);
    }

    #[test]
    fn a_fill_after_the_final_status_counts_once_within_the_quantity() {
        let q = |s: &str| Qty::parse(s).unwrap();
        let mut o = OrderState::new(
            OrderRequest {
                client_id: id("mm-1"),
                symbol: "ETH/USDT".into(),
                side: Side::Buy,
                kind: OrderKind::Market,
                qty: q("1"),
                reduce_only: false,
                time_in_force: TimeInForce::Gtc,
            },
            0,
        );
        o.apply(&ExecutionEvent::Cancelled {
            client_id: id("mm-1"),
            reason: CancelReason::Requested,
            time_ms: 1,
        })
        .unwrap();
        let fill = |qty: &str, trade: &str| Fill {
            client_id: id("mm-1"),
            symbol: "ETH/USDT".into(),
            side: Side::Buy,
            price: Price::parse("3000").unwrap(),
            qty: q(qty),
            fee: Qty::ZERO,
            fee_asset: "USDT".into(),
            fee_quote: Money::ZERO,
            is_maker: false,
            time_ms: 2,
            trade_id: trade.into(),
        };
        assert!(late_fill(&mut o, &fill("0.4", "t1")));
        assert!(!late_fill(&mut o, &fill("0.4", "t1")), "same trade twice");
        assert!(
            !late_fill(&mut o, &fill("0.7", "t2")),
            "beyond the quantity"
        );
        assert_eq!((o.status, o.filled_qty), (OrderStatus::Cancelled, q("0.4")));
        let mut open = OrderState::new(o.request.clone(), 0);
        assert!(
            !late_fill(&mut open, &fill("0.1", "t3")),
            "only after a final status"
        );
    }
}
