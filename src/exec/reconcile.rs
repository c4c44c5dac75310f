//! Start-up reconciliation of the order journal with the exchange.
//!
//! The venue is asked about every order the journal still has open (by client id, fills from
//! the account's trade list) and for its open orders on the same symbols; the pure
//! [`journal::reconcile`](crate::trading::journal::reconcile) decides what to do, and this
//! module does it: venue events are journaled and open venue orders the journal does not know
//! are cancelled. An intent the venue does not know is never sent blind: Binance refuses a
//! duplicate client id only while the first order is open, and a filled order can be
//! invisible to queries for a while, so the venue is asked again until its answer is certain
//! ([`ReconcilePolicy::certainty_ms`]). An intent it then certainly never saw is rejected in the
//! journal when older than [`ReconcilePolicy::max_intent_age_ms`]; a younger one is handed back
//! in [`ReconcileSummary::to_resubmit`] for the caller to check again with the risk manager at
//! today's prices before sending it. Before a running desk goes live, [`reconcile_for_live`]
//! refuses instead of cancelling what the journal does not know.

use std::collections::BTreeSet;

use super::binance_spot::{BinanceSpot, Probe};
use super::rest::ExecError;
use super::venue::{Assets, exchange_symbol, fills_of_trades, status_of};
use super::wire::AssetBalance;
use crate::market::types::Qty;
use crate::trading::journal::{
    ExchangeView, Journal, JournalError, JournalRecord, ReconcileAction, ReconcilePolicy,
    VenueOrder, reconcile,
};
use crate::trading::order::{ClientOrderId, OrderRequest};
use crate::trading::risk::Protection;

/// Rechecks of intents the venue cannot answer for yet are this far apart at most, ms.
const RECHECK_EVERY_MS: i64 = 1_000;

/// Why reconciliation stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The venue could not be asked.
    #[error("reconciliation: {0}")]
    Venue(#[from] ExecError),
    /// The journal could not be written.
    #[error("reconciliation: {0}")]
    Journal(#[from] JournalError),
    /// The venue and the journal disagree in a way only the trader can settle; nothing was
    /// changed on either side.
    #[error("reconciliation mismatch: {0}")]
    Mismatch(String),
}

/// What reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileSummary {
    /// Venue events journaled (acks, fills, final statuses).
    pub adopted: usize,
    /// Intents the venue certainly never saw and young enough to send again, once the caller's
    /// risk check approves them at today's prices (nothing here was sent).
    pub to_resubmit: Vec<(OrderRequest, Protection)>,
    /// Intents the venue certainly never saw, too old to send: journaled as rejected.
    pub stale_rejected: Vec<ClientOrderId>,
    /// Venue orders unknown to the journal, cancelled.
    pub strays_cancelled: Vec<ClientOrderId>,
}

fn assets(client: &BinanceSpot, symbol: &str) -> Assets {
    match client.instrument(&exchange_symbol(symbol)) {
        Some(i) => Assets {
            base: i.base_asset,
            quote: i.quote_asset,
        },
        None => {
            let (base, quote) = crate::config::split_symbol(symbol).unwrap_or_default();
            Assets { base, quote }
        }
    }
}

/// The venue's view of the journal's open orders (plus its open orders on their symbols and
/// on `extra_symbols`).
pub async fn exchange_view(
    client: &BinanceSpot,
    journal: &Journal,
    extra_symbols: &[String],
) -> Result<ExchangeView, ExecError> {
    let mut view = ExchangeView::default();
    let mut symbols: BTreeSet<String> = extra_symbols.iter().map(|s| exchange_symbol(s)).collect();
    let mut asked = BTreeSet::new();
    let dialect = client.rest().dialect();
    for o in journal.state().open_orders() {
        let req = &o.request;
        let sym = exchange_symbol(&req.symbol);
        symbols.insert(sym.clone());
        asked.insert(req.client_id.as_str().to_string());
        // An acknowledged order is asked for by the venue's own id (a query by client id can
        // miss a just-filled order for a while); an unacknowledged one is probed by client id
        // and among the account's trades since it was sent.
        let found = match &o.exchange_id {
            Some(order_id) => match client.query_by_id(&sym, order_id).await {
                Ok(vo) => Some(vo),
                Err(e) if e.is_unknown_order(dialect) => None,
                Err(e) => return Err(e),
            },
            None => match client
                .probe(
                    &sym,
                    req.client_id.as_str(),
                    journal
                        .state()
                        .last_sent_ms(&req.client_id)
                        .unwrap_or(o.updated_ms),
                )
                .await?
            {
                Probe::Found(vo) => Some(vo),
                Probe::NeverReceived { .. } => None,
                Probe::NotYet => {
                    view.in_doubt.push(req.client_id.clone());
                    continue;
                }
            },
        };
        let Some(vo) = found else {
            continue;
        };
        if vo.executed_qty.raw() > 0 {
            let trades = client.my_trades(&sym, Some(&vo.order_id)).await?;
            let a = assets(client, &req.symbol);
            view.fills.extend(fills_of_trades(
                &req.client_id,
                &req.symbol,
                req.side,
                &a,
                &trades,
            ));
        }
        view.orders.push(VenueOrder {
            client_id: req.client_id.clone(),
            exchange_id: vo.order_id.clone(),
            status: status_of(vo.status.as_ref(), vo.executed_qty),
            filled_qty: vo.executed_qty,
        });
    }
    for sym in symbols {
        for vo in client.open_orders(Some(&sym)).await? {
            if asked.contains(&vo.client_order_id) {
                continue;
            }
            // Ids the journal cannot hold were not placed by us through it: still strays.
            let Ok(client_id) = ClientOrderId::parse(&vo.client_order_id) else {
                tracing::warn!(symbol = %sym, "open venue order with a foreign client id left alone");
                continue;
            };
            view.orders.push(VenueOrder {
                client_id,
                exchange_id: vo.order_id.clone(),
                status: status_of(vo.status.as_ref(), vo.executed_qty),
                filled_qty: vo.executed_qty,
            });
        }
    }
    Ok(view)
}

/// The policy for `client`'s venue: the venue's answer about an intent is certain once the
/// request's `recvWindow` has passed plus the client's `visibility_margin_ms` (how long a
/// filled order may stay invisible to queries; the same point [`BinanceSpot::probe`] judges
/// by).
pub fn policy_for(client: &BinanceSpot, max_intent_age_ms: i64) -> ReconcilePolicy {
    let cfg = client.config();
    ReconcilePolicy {
        certainty_ms: (cfg.recv_window_ms.saturating_add(cfg.visibility_margin_ms)) as i64,
        max_intent_age_ms,
    }
}

/// The venue's view and the actions it calls for, once no intent is left in doubt: while the
/// venue does not know an intent that may still be in flight or not yet queryable, it waits
/// for the certainty point and asks again (nothing is sent meanwhile).
async fn settled(
    client: &BinanceSpot,
    journal: &Journal,
    symbols: &[String],
    now_ms: i64,
    policy: &ReconcilePolicy,
) -> Result<Vec<ReconcileAction>, ReconcileError> {
    let mut now = now_ms;
    // Every intent becomes certain within `certainty_ms` of its send; twice that (and a
    // little) bounds the wait even for one journaled just before the start.
    let give_up = now_ms
        .saturating_add(policy.certainty_ms.saturating_mul(2))
        .saturating_add(5_000);
    loop {
        let view = exchange_view(client, journal, symbols).await?;
        let actions = reconcile(journal.state(), &view, now, policy);
        let due = actions
            .iter()
            .filter_map(|a| match a {
                ReconcileAction::Recheck { at_ms, .. } => Some(*at_ms),
                _ => None,
            })
            .min();
        let Some(due) = due else {
            return Ok(actions);
        };
        if now >= give_up {
            return Err(ReconcileError::Mismatch(
                "the venue's answer about a recent intent stayed uncertain; nothing was sent"
                    .into(),
            ));
        }
        let wait = due.saturating_sub(now).clamp(1, RECHECK_EVERY_MS);
        tracing::info!(
            wait_ms = wait,
            "reconciliation: the venue cannot answer for a recent intent yet; asking again \
             before deciding (nothing is sent meanwhile)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(wait as u64)).await;
        now = now.saturating_add(wait);
    }
}

/// Brings the journal and the venue into agreement (see the module doc); every event is
/// journaled before anything else acts on it.
pub async fn reconcile_startup(
    client: &BinanceSpot,
    journal: &mut Journal,
    extra_symbols: &[String],
    now_ms: i64,
    policy: &ReconcilePolicy,
) -> Result<ReconcileSummary, ReconcileError> {
    let actions = settled(client, journal, extra_symbols, now_ms, policy).await?;
    apply_actions(client, journal, extra_symbols, actions).await
}

/// What a go-live check found: the reconciliation done and the account's balances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveCheck {
    /// What reconciliation did.
    pub summary: ReconcileSummary,
    /// The account's balances after reconciliation.
    pub balances: Vec<AssetBalance>,
}

/// Reconciliation before switching a running desk to this venue. Unlike
/// [`reconcile_startup`] it cancels nothing the journal does not know: open venue orders
/// with ids the journal never placed, or journal positions the account's balances cannot
/// cover, are a [`ReconcileError::Mismatch`] and leave both sides untouched (the trader
/// settles them). Otherwise venue events are journaled, unsent intents sent again and cancels
/// the journal requested carried out, as at start-up.
pub async fn reconcile_for_live(
    client: &BinanceSpot,
    journal: &mut Journal,
    symbols: &[String],
    now_ms: i64,
    policy: &ReconcilePolicy,
) -> Result<LiveCheck, ReconcileError> {
    let actions = settled(client, journal, symbols, now_ms, policy).await?;
    let strays: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            ReconcileAction::CancelStray { client_id }
                if journal.state().order(client_id).is_none() =>
            {
                Some(client_id.as_str())
            }
            _ => None,
        })
        .collect();
    if !strays.is_empty() {
        return Err(ReconcileError::Mismatch(format!(
            "the venue has {} open order(s) this journal never placed ({}); cancel or adopt \
             them on the exchange first",
            strays.len(),
            strays.join(", ")
        )));
    }
    // The venue's facts first (fills and final statuses of orders the journal has open, such
    // as a close that executed while the desk was down): the balances are compared with the
    // journal as it stands after them.
    let (adopt, rest): (Vec<_>, Vec<_>) = actions
        .into_iter()
        .partition(|a| matches!(a, ReconcileAction::Adopt(_)));
    let mut summary = apply_actions(client, journal, symbols, adopt).await?;
    let balances = client.balances().await?;
    let held = |symbol: &str| {
        let base = assets(client, symbol).base;
        balances
            .iter()
            .filter(|b| b.asset == base)
            .fold(Qty::ZERO, |acc, b| acc + b.free + b.locked)
    };
    for p in journal.state().positions() {
        if p.qty.raw() < 0 {
            return Err(ReconcileError::Mismatch(format!(
                "the journal holds a short {} {} that a spot account cannot",
                p.qty, p.symbol
            )));
        }
        let have = held(&p.symbol);
        if p.qty > have {
            return Err(ReconcileError::Mismatch(format!(
                "the journal holds {} {} but the account only {}",
                p.qty, p.symbol, have
            )));
        }
    }
    let more = apply_actions(client, journal, symbols, rest).await?;
    summary.adopted += more.adopted;
    summary.to_resubmit.extend(more.to_resubmit);
    summary.stale_rejected.extend(more.stale_rejected);
    summary.strays_cancelled.extend(more.strays_cancelled);
    let balances = client.balances().await?;
    Ok(LiveCheck { summary, balances })
}

async fn apply_actions(
    client: &BinanceSpot,
    journal: &mut Journal,
    extra_symbols: &[String],
    actions: Vec<ReconcileAction>,
) -> Result<ReconcileSummary, ReconcileError> {
    let mut summary = ReconcileSummary::default();
    for a in actions {
        match a {
            ReconcileAction::Adopt(ev) => {
                if let crate::trading::order::ExecutionEvent::Rejected {
                    client_id,
                    reason: crate::trading::order::RejectReason::NotSent(_),
                    ..
                } = &ev
                {
                    summary.stale_rejected.push(client_id.clone());
                }
                journal.record(JournalRecord::Event(ev))?;
                summary.adopted += 1;
            }
            ReconcileAction::Resubmit {
                request,
                protection,
            } => summary.to_resubmit.push((request, protection)),
            // `settled` returns only once nothing is left in doubt.
            ReconcileAction::Recheck { client_id, .. } => {
                return Err(ReconcileError::Mismatch(format!(
                    "{client_id} is still in doubt at the venue; nothing was sent"
                )));
            }
            ReconcileAction::CancelStray { client_id } => {
                // The view does not keep symbols: try each symbol reconciliation looked at.
                let mut done = false;
                for sym in view_symbols(journal, extra_symbols) {
                    match client.cancel(&sym, client_id.as_str()).await {
                        Ok(_) => {
                            done = true;
                            break;
                        }
                        Err(e) if e.code().is_some_and(|c| c == -2011 || c == -2013) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                if done {
                    summary.strays_cancelled.push(client_id);
                }
            }
        }
    }
    Ok(summary)
}

fn view_symbols(journal: &Journal, extra: &[String]) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = extra.iter().map(|x| exchange_symbol(x)).collect();
    for (o, _) in journal.state().orders() {
        s.insert(exchange_symbol(&o.request.symbol));
    }
    s
}
