//! [`Executor`] over a real exchange account (Binance spot, its testnet, the simulator, MEXC).
//!
//! The trait is synchronous; requests go to an async worker task that talks REST and reads the
//! user-data stream, and what the venue reports comes back as execution events. REST replies
//! and the stream report the same things, so events are applied to the local order states and
//! only those that change something (a new ack, a trade id not seen before, a first final
//! status) are passed on: nothing is counted twice.
//!
//! Protective exits: when an entry with a stop-loss / take-profit fills, the executor places
//! them on the venue as reduce-only STOP_LOSS / TAKE_PROFIT orders for the filled quantity (ids
//! `<entry>-s` / `<entry>-t`) and cancels the other when one executes. Trailing stops are not
//! placed on the venue.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::binance_spot::{BinanceSpot, Flavor};
use super::rest::{ExecError, local_ms};
use super::user_stream::{UserEvent, UserStream, UserStreamConfig};
use super::venue::{
    Assets, events_of_reply, events_of_report, exchange_symbol, fills_of_trades, reject_reason,
    spec_of,
};
use super::wire::UserStreamEvent;
use crate::market::types::{Price, Side};
use crate::trading::executor::{ApprovedOrder, Executor, ExecutorError, MarketEvent, Protection};
use crate::trading::order::{
    CancelReason, ClientOrderId, ExecutionEvent, OrderKind, OrderRequest, OrderState, OrderStatus,
    TimeInForce,
};
use crate::trading::position::Position;

enum Cmd {
    Submit(OrderRequest),
    Cancel(OrderRequest),
    Check(Vec<OrderRequest>),
}

/// How often orders whose placement outcome was unknown are looked up again.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

/// An exchange account behind the [`Executor`] interface.
pub struct ExchangeExecutor {
    name: String,
    client: Arc<BinanceSpot>,
    cmd: mpsc::UnboundedSender<Cmd>,
    events: mpsc::UnboundedReceiver<ExecutionEvent>,
    orders: BTreeMap<ClientOrderId, OrderState>,
    protections: HashMap<ClientOrderId, Protection>,
    siblings: HashMap<ClientOrderId, ClientOrderId>,
    positions: BTreeMap<String, Position>,
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
        for (s, p) in states {
            if s.status.is_open() {
                open.push(s.request.clone());
            }
            self.protections.insert(s.client_id().clone(), p);
            self.orders.insert(s.client_id().clone(), s);
        }
        if !open.is_empty() {
            let _ = self.cmd.send(Cmd::Check(open));
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
        if o.apply(ev).is_err() {
            // A duplicate (same trade id, second ack, late final status): already counted.
            return false;
        }
        if let ExecutionEvent::Filled(f) = ev {
            self.positions
                .entry(f.symbol.clone())
                .or_insert_with(|| Position::flat(&f.symbol))
                .apply(f.side, f.price, f.qty, f.fee_quote);
            self.last_price.insert(f.symbol.clone(), f.price);
        }
        true
    }

    fn protective(&mut self, entry: &ClientOrderId) {
        let Some(o) = self.orders.get(entry).cloned() else {
            return;
        };
        // Exits of an exit: when one executes, cancel its sibling.
        if let Some(sib) = self.siblings.remove(entry) {
            self.siblings.remove(&sib);
            if self.orders.get(&sib).is_some_and(|s| s.status.is_open()) {
                let _ = self.cancel(&sib);
            }
            return;
        }
        let Some(p) = self.protections.get(entry).copied() else {
            return;
        };
        if o.status != OrderStatus::Filled || o.request.reduce_only {
            return;
        }
        if self.client.flavor() == Flavor::Mexc {
            tracing::warn!(entry = %entry, "MEXC spot has no stop orders; exits not placed");
            return;
        }
        let exit_side = match o.request.side {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        };
        let mut ids = Vec::new();
        for (suffix, kind) in [
            ("s", p.stop_loss.map(|stop| OrderKind::StopLoss { stop })),
            (
                "t",
                p.take_profit.map(|stop| OrderKind::TakeProfit { stop }),
            ),
        ] {
            let Some(kind) = kind else { continue };
            let Ok(id) = ClientOrderId::parse(&format!("{entry}-{suffix}")) else {
                tracing::warn!(entry = %entry, "entry id too long for an exit id; exit not placed");
                continue;
            };
            let req = OrderRequest {
                client_id: id.clone(),
                symbol: o.request.symbol.clone(),
                side: exit_side,
                kind,
                qty: o.filled_qty,
                reduce_only: true,
                time_in_force: TimeInForce::Gtc,
            };
            if let Some(hook) = self.exit_hook.as_mut()
                && !hook(&req)
            {
                tracing::warn!(exit = %id, "exit not journaled; not sent");
                continue;
            }
            self.orders
                .insert(id.clone(), OrderState::new(req.clone(), local_ms()));
            let _ = self.cmd.send(Cmd::Submit(req));
            ids.push(id);
        }
        if let [a, b] = ids.as_slice() {
            self.siblings.insert(a.clone(), b.clone());
            self.siblings.insert(b.clone(), a.clone());
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
        while let Ok(ev) = self.events.try_recv() {
            if self.apply(&ev) {
                let id = ev.client_id().clone();
                out.push(ev);
                if self
                    .orders
                    .get(&id)
                    .is_some_and(|o| o.status == OrderStatus::Filled)
                {
                    self.protective(&id);
                }
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
}

struct Tracked {
    req: OrderRequest,
    assets: Assets,
}

async fn worker(
    client: Arc<BinanceSpot>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<ExecutionEvent>,
    mut stream: Option<UserStream>,
) {
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut unsure: Vec<OrderRequest> = Vec::new();
    let mut recheck = tokio::time::interval(RECHECK_EVERY);
    let mut connects = 0u64;
    let mut closed: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut newly_closed: Vec<String> = Vec::new();
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
                    Cmd::Submit(req) => {
                        let assets = assets_of(&client, &req);
                        tracked.insert(req.client_id.as_str().to_string(), Tracked { req: req.clone(), assets: assets.clone() });
                        match client.place(&spec_of(&req)).await {
                            Ok(o) => send_all(&events, events_of_reply(&req, &assets, &o)),
                            Err(e) if e.outcome_unknown() => {
                                tracing::warn!(client_id = %req.client_id, "placement outcome unknown ({e}); will look it up");
                                unsure.push(req);
                            }
                            Err(e) => send_all(&events, vec![ExecutionEvent::Rejected {
                                client_id: req.client_id.clone(),
                                reason: reject_reason(&e),
                                time_ms: local_ms(),
                            }]),
                        }
                    }
                    Cmd::Cancel(req) => {
                        match client.cancel(&exchange_symbol(&req.symbol), req.client_id.as_str()).await {
                            Ok(_) => send_all(&events, vec![ExecutionEvent::Cancelled {
                                client_id: req.client_id.clone(),
                                reason: CancelReason::Requested,
                                time_ms: local_ms(),
                            }]),
                            // Already filled or gone: the venue's own events say how it ended.
                            Err(e) => {
                                tracing::info!(client_id = %req.client_id, "cancel not done: {e}");
                                unsure.push(req);
                            }
                        }
                    }
                    Cmd::Check(reqs) => {
                        for req in reqs {
                            let assets = assets_of(&client, &req);
                            tracked.insert(req.client_id.as_str().to_string(), Tracked { req: req.clone(), assets });
                            unsure.push(req);
                        }
                        unsure = check(&client, &events, std::mem::take(&mut unsure)).await;
                    }
                }
            }
            ev = stream_ev => match ev {
                Some(UserEvent::Event(UserStreamEvent::Execution(r))) => {
                    if let Some(t) = tracked.get(&r.client_order_id)
                        && let Ok(id) = ClientOrderId::parse(&r.client_order_id)
                    {
                        send_all(&events, events_of_report(&id, &t.req.symbol, &t.assets, &r));
                    }
                }
                Some(UserEvent::Connected) => {
                    connects += 1;
                    if connects > 1 {
                        // Reports may have been missed while the stream was down.
                        unsure.extend(tracked.values().map(|t| t.req.clone()));
                        unsure = check(&client, &events, std::mem::take(&mut unsure)).await;
                    }
                }
                Some(UserEvent::Disconnected(why)) => tracing::warn!("user-data stream down: {why}"),
                Some(UserEvent::Malformed(why)) => tracing::warn!("user-data frame skipped: {why}"),
                Some(UserEvent::Event(_)) => {}
                None => stream = None,
            },
            _ = recheck.tick() => {
                if !unsure.is_empty() {
                    unsure = check(&client, &events, std::mem::take(&mut unsure)).await;
                }
                if stream.is_none() {
                    // No user-data stream (MEXC): poll the venue for every order not known done.
                    for (cid, t) in &tracked {
                        if closed.contains(cid) {
                            continue;
                        }
                        match order_events(&client, &t.req).await {
                            Ok(Some(evs)) => {
                                if is_final(&t.req, &evs) {
                                    newly_closed.push(cid.clone());
                                }
                                send_all(&events, evs);
                            }
                            Ok(None) => {}
                            Err(e) => tracing::warn!(client_id = %cid, "order poll failed: {e}"),
                        }
                    }
                    closed.extend(newly_closed.drain(..));
                }
            }
        }
    }
    if let Some(s) = stream {
        s.shutdown().await;
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

fn send_all(tx: &mpsc::UnboundedSender<ExecutionEvent>, evs: Vec<ExecutionEvent>) {
    for e in evs {
        let _ = tx.send(e);
    }
}

/// Looks orders up on the venue and reports what it knows; returns those it could not learn
/// about (to try again later).
async fn check(
    client: &BinanceSpot,
    events: &mpsc::UnboundedSender<ExecutionEvent>,
    reqs: Vec<OrderRequest>,
) -> Vec<OrderRequest> {
    let mut again = Vec::new();
    for req in reqs {
        match order_events(client, &req).await {
            Ok(Some(evs)) => send_all(events, evs),
            // The venue never saw it: send it now, under the same client id.
            Ok(None) => match client.place(&spec_of(&req)).await {
                Ok(o) => send_all(events, events_of_reply(&req, &assets_of(client, &req), &o)),
                Err(e) if e.outcome_unknown() => again.push(req),
                Err(e) => send_all(
                    events,
                    vec![ExecutionEvent::Rejected {
                        client_id: req.client_id.clone(),
                        reason: reject_reason(&e),
                        time_ms: local_ms(),
                    }],
                ),
            },
            Err(e) => {
                tracing::warn!(client_id = %req.client_id, "order lookup failed: {e}");
                again.push(req);
            }
        }
    }
    again
}

/// True when the events end the order (a final status, or fills adding up to its quantity).
fn is_final(req: &OrderRequest, evs: &[ExecutionEvent]) -> bool {
    let mut filled = crate::market::types::Qty::ZERO;
    for e in evs {
        match e {
            ExecutionEvent::Filled(f) => filled += f.qty,
            ExecutionEvent::Cancelled { .. }
            | ExecutionEvent::Expired { .. }
            | ExecutionEvent::Rejected { .. } => return true,
            ExecutionEvent::Acknowledged { .. } => {}
        }
    }
    filled >= req.qty
}

/// Everything the venue knows about one order as events (ack, every fill, final status);
/// `None` when the venue has never seen the client id.
pub async fn order_events(
    client: &BinanceSpot,
    req: &OrderRequest,
) -> Result<Option<Vec<ExecutionEvent>>, ExecError> {
    let sym = exchange_symbol(&req.symbol);
    let Some(o) = client.lookup(&sym, req.client_id.as_str()).await? else {
        return Ok(None);
    };
    let assets = assets_of(client, req);
    let mut evs = vec![ExecutionEvent::Acknowledged {
        client_id: req.client_id.clone(),
        exchange_id: o.order_id.clone(),
        time_ms: o.time_ms,
    }];
    if o.executed_qty.raw() > 0 {
        let trades = client.my_trades(&sym, Some(&o.order_id)).await?;
        evs.extend(
            fills_of_trades(&req.client_id, &req.symbol, req.side, &assets, &trades)
                .into_iter()
                .map(ExecutionEvent::Filled),
        );
    }
    let mut final_state = o.clone();
    final_state.fills.clear();
    let mut tail = events_of_reply(req, &assets, &final_state);
    tail.remove(0);
    evs.extend(tail);
    Ok(Some(evs))
}
