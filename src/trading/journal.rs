//! The order journal: an append-only, checksummed record of every intent, acknowledgement,
//! fill and cancel, written and fsynced before the action it describes is taken.
//!
//! Framing: one record per line, `<crc32 as 8 hex digits> <json>\n`, the CRC covering the JSON
//! bytes. A crash mid-write leaves at most one damaged record, at the end: on open it is
//! detected (no newline or a checksum mismatch), dropped with a warning and cut off, so the
//! next append starts on a clean line. A damaged record anywhere else is real corruption and
//! opening fails with the line number.
//!
//! Replay ([`JournalState`]) and reconciliation ([`reconcile`]) are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::market::types::{Qty, Symbol};
use crate::trading::order::{
    CancelReason, ClientOrderId, ExecutionEvent, Fill, OrderError, OrderRequest, OrderState,
    OrderStatus,
};
use crate::trading::position::Position;
use crate::trading::risk::Protection;

/// File name of the order journal inside the journal directory.
pub const JOURNAL_FILE: &str = "orders.jsonl";

/// What went wrong with a journal file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing failed.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record before the last one is damaged: the file cannot be trusted.
    #[error("journal {path}: record on line {line} is corrupt ({why})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// A record could not be encoded.
    #[error("journal record could not be encoded: {0}")]
    Encode(String),
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalRecord {
    /// An approved order, journaled before it is sent.
    Intent {
        /// The order as it will be sent.
        request: OrderRequest,
        /// Its exits.
        protection: Protection,
        /// Time, ms.
        time_ms: i64,
    },
    /// A cancel request, journaled before it is sent.
    CancelRequest {
        /// The order.
        client_id: ClientOrderId,
        /// Time, ms.
        time_ms: i64,
    },
    /// What the venue reported, journaled before anything acts on it.
    Event(ExecutionEvent),
}

fn frame(json: &[u8]) -> Vec<u8> {
    let crc = crc32fast::hash(json);
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(format!("{crc:08x} ").as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

/// Checks one line (without its newline) and returns its JSON payload.
fn unframe(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < 9 || line[8] != b' ' {
        return Err("no checksum prefix".into());
    }
    let hex = std::str::from_utf8(&line[..8]).map_err(|_| "checksum is not text".to_string())?;
    let want = u32::from_str_radix(hex, 16).map_err(|_| format!("bad checksum {hex:?}"))?;
    let json = &line[9..];
    let got = crc32fast::hash(json);
    if got != want {
        return Err(format!("checksum {got:08x} does not match {want:08x}"));
    }
    Ok(json)
}

/// Records read from a file, and where the good part of the file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome<T> {
    /// Every intact record, in order.
    pub records: Vec<T>,
    /// Byte length of the intact prefix.
    pub good_len: u64,
    /// Whether a damaged last record was dropped.
    pub dropped_tail: bool,
}

/// Parses framed records from bytes: a damaged last record is dropped, any other damage is
/// an error naming the line.
pub fn parse_records<T: DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
) -> Result<ReadOutcome<T>, JournalError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            // No newline: the write of the last record was cut short.
            tracing::warn!(path = %path.display(), line = line_no, "dropping torn last journal record");
            return Ok(ReadOutcome {
                records,
                good_len: pos as u64,
                dropped_tail: true,
            });
        };
        let line = &bytes[pos..pos + nl];
        let is_last = pos + nl + 1 == bytes.len();
        let parsed = unframe(line).and_then(|json| {
            serde_json::from_slice::<T>(json).map_err(|e| format!("undecodable record: {e}"))
        });
        match parsed {
            Ok(r) => records.push(r),
            Err(why) if is_last => {
                tracing::warn!(path = %path.display(), line = line_no, %why, "dropping damaged last journal record");
                return Ok(ReadOutcome {
                    records,
                    good_len: pos as u64,
                    dropped_tail: true,
                });
            }
            Err(why) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                    why,
                });
            }
        }
        pos += nl + 1;
    }
    Ok(ReadOutcome {
        records,
        good_len: pos as u64,
        dropped_tail: false,
    })
}

/// An append-only file of checksummed records, each fsynced before `append` returns.
#[derive(Debug)]
pub struct RecordLog {
    file: File,
    path: PathBuf,
    sync: bool,
}

impl RecordLog {
    /// Opens (creating) `path`, reads every intact record, and cuts off a torn tail.
    /// `sync: false` skips fsync (backtests only: a crash may then lose records).
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        sync: bool,
    ) -> Result<(Self, ReadOutcome<T>), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        if created
            && sync
            && let Some(dir) = path.parent()
        {
            // The new directory entry must survive a crash too.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_to_end(&mut bytes).map_err(io)?;
        let outcome = parse_records::<T>(&bytes, path)?;
        if outcome.dropped_tail {
            file.set_len(outcome.good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok((
            Self {
                file,
                path: path.to_path_buf(),
                sync,
            },
            outcome,
        ))
    }

    /// Appends one record and (unless opened without sync) waits until it is on disk.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        let json = serde_json::to_vec(record).map_err(|e| JournalError::Encode(e.to_string()))?;
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        // One write call per record: a crash tears at most this record.
        self.file.write_all(&frame(&json)).map_err(io)?;
        if self.sync {
            self.file.sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The order journal: a [`RecordLog`] of [`JournalRecord`]s and the state they replay to.
#[derive(Debug)]
pub struct Journal {
    log: RecordLog,
    state: JournalState,
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) and replays it; ids with `prefix`
    /// determine the next client id.
    pub fn open(dir: &Path, prefix: &str, sync: bool) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let (log, outcome) = RecordLog::open::<JournalRecord>(&dir.join(JOURNAL_FILE), sync)?;
        let mut state = JournalState::new(prefix);
        state.dropped_tail = outcome.dropped_tail;
        for r in &outcome.records {
            if let Err(e) = state.apply(r) {
                // Replaying a record the state refuses (a duplicate fill, say) is harmless to
                // skip: the state already reflects it.
                tracing::warn!(error = %e, "journal record skipped on replay");
            }
        }
        Ok(Self { log, state })
    }

    /// Writes a record durably, then applies it to the state. Callers take the action the
    /// record describes only after this returns `Ok`.
    pub fn record(&mut self, record: JournalRecord) -> Result<(), JournalError> {
        self.log.append(&record)?;
        if let Err(e) = self.state.apply(&record) {
            tracing::warn!(error = %e, "journaled record did not change the order state");
        }
        Ok(())
    }

    /// The replayed state.
    pub fn state(&self) -> &JournalState {
        &self.state
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        self.log.path()
    }
}

/// Why a record did not change the replayed state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The same client id was journaled as an intent twice.
    #[error("intent {0} journaled twice")]
    DuplicateIntent(ClientOrderId),
    /// A cancel or event for an order the journal never saw (not a fill).
    #[error("record for unknown order {0}")]
    UnknownOrder(ClientOrderId),
    /// The order refused the event.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// A fill already booked.
    #[error("fill {trade_id} of {client_id} already booked")]
    DuplicateFill {
        /// The order.
        client_id: ClientOrderId,
        /// The trade id.
        trade_id: String,
    },
}

/// Orders, positions and the next client id, as the journal describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalState {
    prefix: String,
    next_seq: u64,
    orders: BTreeMap<ClientOrderId, (OrderState, Protection)>,
    cancel_requested: BTreeSet<ClientOrderId>,
    fills: BTreeSet<(ClientOrderId, String)>,
    positions: BTreeMap<Symbol, Position>,
    /// Whether replay dropped a torn last record.
    pub dropped_tail: bool,
}

impl JournalState {
    /// An empty state whose next id is `<prefix>-1`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            next_seq: 1,
            orders: BTreeMap::new(),
            cancel_requested: BTreeSet::new(),
            fills: BTreeSet::new(),
            positions: BTreeMap::new(),
            dropped_tail: false,
        }
    }

    /// The sequence of the next client id (`<prefix>-<seq>`), above every id journaled.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next sequence for ids `<prefix>-<seq>` of any prefix (e.g. an executor's exits).
    pub fn next_seq_for(&self, prefix: &str) -> u64 {
        self.orders
            .keys()
            .filter_map(|id| id.sequence(prefix))
            .max()
            .map_or(1, |s| s.saturating_add(1))
    }

    /// Every order journaled, with its exits.
    pub fn orders(&self) -> impl Iterator<Item = (&OrderState, &Protection)> {
        self.orders.values().map(|(o, p)| (o, p))
    }

    /// One order.
    pub fn order(&self, id: &ClientOrderId) -> Option<&OrderState> {
        self.orders.get(id).map(|(o, _)| o)
    }

    /// Orders not yet in a final status.
    pub fn open_orders(&self) -> Vec<&OrderState> {
        self.orders
            .values()
            .map(|(o, _)| o)
            .filter(|o| o.status.is_open())
            .collect()
    }

    /// Whether a cancel was journaled for the order.
    pub fn cancel_requested(&self, id: &ClientOrderId) -> bool {
        self.cancel_requested.contains(id)
    }

    /// Positions built from every journaled fill (flat ones included).
    pub fn positions(&self) -> Vec<Position> {
        self.positions.values().cloned().collect()
    }

    /// Signed position of a symbol.
    pub fn position_qty(&self, symbol: &str) -> Qty {
        self.positions.get(symbol).map_or(Qty::ZERO, |p| p.qty)
    }

    /// Whether a fill (by order and trade id) is already booked.
    pub fn has_fill(&self, client_id: &ClientOrderId, trade_id: &str) -> bool {
        self.fills
            .contains(&(client_id.clone(), trade_id.to_string()))
    }

    fn observe_id(&mut self, id: &ClientOrderId) {
        if let Some(seq) = id.sequence(&self.prefix) {
            self.next_seq = self.next_seq.max(seq.saturating_add(1));
        }
    }

    /// Applies one record; a refused record leaves the state unchanged.
    pub fn apply(&mut self, record: &JournalRecord) -> Result<(), ReplayError> {
        match record {
            JournalRecord::Intent {
                request,
                protection,
                time_ms,
            } => {
                self.observe_id(&request.client_id);
                if self.orders.contains_key(&request.client_id) {
                    return Err(ReplayError::DuplicateIntent(request.client_id.clone()));
                }
                self.orders.insert(
                    request.client_id.clone(),
                    (OrderState::new(request.clone(), *time_ms), *protection),
                );
            }
            JournalRecord::CancelRequest { client_id, .. } => {
                if !self.orders.contains_key(client_id) {
                    return Err(ReplayError::UnknownOrder(client_id.clone()));
                }
                self.cancel_requested.insert(client_id.clone());
            }
            JournalRecord::Event(ev) => {
                let id = ev.client_id().clone();
                self.observe_id(&id);
                if let ExecutionEvent::Filled(f) = ev {
                    let key = (id.clone(), f.trade_id.clone());
                    if self.fills.contains(&key) {
                        return Err(ReplayError::DuplicateFill {
                            client_id: id,
                            trade_id: f.trade_id.clone(),
                        });
                    }
                    if let Some((o, _)) = self.orders.get_mut(&id) {
                        o.apply(ev)?;
                    }
                    // Fills of orders placed outside the journal (executor-managed exits)
                    // still move the position.
                    self.fills.insert(key);
                    self.positions
                        .entry(f.symbol.clone())
                        .or_insert_with(|| Position::flat(&f.symbol))
                        .apply(f.side, f.price, f.qty, f.fee_quote);
                    return Ok(());
                }
                match self.orders.get_mut(&id) {
                    Some((o, _)) => o.apply(ev)?,
                    None => return Err(ReplayError::UnknownOrder(id)),
                }
            }
        }
        Ok(())
    }
}

/// One order as the venue reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenueOrder {
    /// Our id.
    pub client_id: ClientOrderId,
    /// The venue's id.
    pub exchange_id: String,
    /// Status at the venue.
    pub status: OrderStatus,
    /// Executed quantity at the venue.
    pub filled_qty: Qty,
}

/// The venue's side of the story: its orders (open, and any recent ones it still reports)
/// and its recent fills, by client id.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExchangeView {
    /// Orders the venue knows.
    pub orders: Vec<VenueOrder>,
    /// Fills the venue reports.
    pub fills: Vec<Fill>,
}

/// What to do to bring the journal (and the venue) into agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileAction {
    /// Journal the venue's event (an unknown fill, an ack, a final status) and book it.
    Adopt(ExecutionEvent),
    /// The intent was journaled, the venue certainly never saw it, and it is young enough
    /// to still mean what it meant: it may be sent again under its client id, after the
    /// caller has checked it again with the risk manager at today's prices. (Binance refuses
    /// a duplicate client id only while the first order is open, so a resend is safe only
    /// once the venue has certainly not seen the first: see [`ReconcilePolicy`].)
    Resubmit {
        /// The order.
        request: OrderRequest,
        /// Its exits.
        protection: Protection,
    },
    /// The venue does not know the intent yet, but the request may still be in flight or
    /// executed and not yet queryable: ask again at `at_ms`. Never sent meanwhile.
    Recheck {
        /// The order.
        client_id: ClientOrderId,
        /// When the venue's answer becomes certain, ms.
        at_ms: i64,
    },
    /// The venue has an open order we do not want there: one the journal does not know, or
    /// one whose cancel was journaled but never took effect. Cancel it at the venue.
    CancelStray {
        /// The venue's order.
        client_id: ClientOrderId,
    },
}

/// How reconciliation treats an intent the venue does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcilePolicy {
    /// Until this long after its intent was journaled, the venue's "no such order" is not
    /// certain: the request may still be in flight (Binance accepts it until its timestamp
    /// plus `recvWindow`), or executed and not yet queryable. Looked up again then.
    pub certainty_ms: i64,
    /// An intent older than this is never sent again: the decision behind it is stale. It is
    /// journaled as rejected instead.
    pub max_intent_age_ms: i64,
}

impl ReconcilePolicy {
    /// For a venue whose view is complete and immediate (tests' in-process exchanges).
    pub const IMMEDIATE: Self = Self {
        certainty_ms: 0,
        max_intent_age_ms: i64::MAX,
    };
}

/// Compares the journal with the venue and lists the actions, in an order that is safe to
/// apply (fills before the final statuses they lead to). Pure.
pub fn reconcile(
    state: &JournalState,
    venue: &ExchangeView,
    now_ms: i64,
    policy: &ReconcilePolicy,
) -> Vec<ReconcileAction> {
    let mut actions = Vec::new();
    let venue_orders: BTreeMap<&ClientOrderId, &VenueOrder> =
        venue.orders.iter().map(|o| (&o.client_id, o)).collect();
    // Acks first, so fills land on acknowledged orders.
    for vo in &venue.orders {
        if let Some(o) = state.order(&vo.client_id)
            && o.status == OrderStatus::New
            && vo.status != OrderStatus::Rejected
            && vo.status != OrderStatus::New
        {
            actions.push(ReconcileAction::Adopt(ExecutionEvent::Acknowledged {
                client_id: vo.client_id.clone(),
                exchange_id: vo.exchange_id.clone(),
                time_ms: now_ms,
            }));
        }
    }
    let mut adopted: BTreeSet<(&ClientOrderId, &str)> = BTreeSet::new();
    for f in &venue.fills {
        if !state.has_fill(&f.client_id, &f.trade_id)
            && adopted.insert((&f.client_id, f.trade_id.as_str()))
        {
            actions.push(ReconcileAction::Adopt(ExecutionEvent::Filled(f.clone())));
        }
    }
    for (o, protection) in state.orders() {
        if !o.status.is_open() {
            continue;
        }
        let id = o.client_id();
        match venue_orders.get(id) {
            Some(vo) => {
                let ev = match vo.status {
                    OrderStatus::New | OrderStatus::Acknowledged | OrderStatus::PartiallyFilled
                        if state.cancel_requested(id) =>
                    {
                        // Our cancel never reached the venue (or was lost): send it again.
                        actions.push(ReconcileAction::CancelStray {
                            client_id: id.clone(),
                        });
                        None
                    }
                    // Filled: the adopted fills complete it.
                    OrderStatus::Filled
                    | OrderStatus::New
                    | OrderStatus::Acknowledged
                    | OrderStatus::PartiallyFilled => None,
                    OrderStatus::Cancelled => Some(ExecutionEvent::Cancelled {
                        client_id: id.clone(),
                        reason: CancelReason::Reconciled,
                        time_ms: now_ms,
                    }),
                    OrderStatus::Expired => Some(ExecutionEvent::Expired {
                        client_id: id.clone(),
                        time_ms: now_ms,
                    }),
                    OrderStatus::Rejected => Some(ExecutionEvent::Rejected {
                        client_id: id.clone(),
                        reason: crate::trading::order::RejectReason::Exchange {
                            code: 0,
                            message: "rejected (found on reconciliation)".into(),
                        },
                        time_ms: now_ms,
                    }),
                };
                actions.extend(ev.map(ReconcileAction::Adopt));
            }
            None if o.status == OrderStatus::New => {
                let age = now_ms.saturating_sub(o.updated_ms);
                if age < policy.certainty_ms {
                    actions.push(ReconcileAction::Recheck {
                        client_id: id.clone(),
                        at_ms: o.updated_ms.saturating_add(policy.certainty_ms),
                    });
                } else if state.cancel_requested(id) || age > policy.max_intent_age_ms {
                    // Never reached the venue, and either the trader cancelled it or the
                    // decision is too old to act on: it ends here, journaled, unsent.
                    let why = if state.cancel_requested(id) {
                        "cancelled before it reached the venue; not sent".to_string()
                    } else {
                        format!(
                            "intent {} s old (limit {} s) never reached the venue; not resubmitted",
                            age / 1000,
                            policy.max_intent_age_ms / 1000
                        )
                    };
                    actions.push(ReconcileAction::Adopt(ExecutionEvent::Rejected {
                        client_id: id.clone(),
                        reason: crate::trading::order::RejectReason::NotSent(why),
                        time_ms: now_ms,
                    }));
                } else {
                    actions.push(ReconcileAction::Resubmit {
                        request: o.request.clone(),
                        protection: *protection,
                    });
                }
            }
            None => {
                // Acknowledged once (or we asked to cancel it) and gone from the venue.
                actions.push(ReconcileAction::Adopt(ExecutionEvent::Cancelled {
                    client_id: id.clone(),
                    reason: CancelReason::Reconciled,
                    time_ms: now_ms,
                }));
            }
        }
    }
    for vo in &venue.orders {
        if vo.status.is_open() && state.order(&vo.client_id).is_none() {
            actions.push(ReconcileAction::CancelStray {
                client_id: vo.client_id.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Side};
    use crate::trading::money::Money;
    use crate::trading::order::{OrderKind, TimeInForce};

    fn id(n: u64) -> ClientOrderId {
        ClientOrderId::new("mm", n).unwrap()
    }

    fn intent(n: u64) -> JournalRecord {
        JournalRecord::Intent {
            request: OrderRequest {
                client_id: id(n),
                symbol: "ETHUSDT".into(),
                side: Side::Buy,
                kind: OrderKind::Market,
                qty: Qty::from_units(1),
                reduce_only: false,
                time_in_force: TimeInForce::Gtc,
            },
            protection: Protection::default(),
            time_ms: n as i64,
        }
    }

    fn ack(n: u64) -> ExecutionEvent {
        ExecutionEvent::Acknowledged {
            client_id: id(n),
            exchange_id: format!("x{n}"),
            time_ms: 1,
        }
    }

    fn fill(n: u64, trade: &str) -> Fill {
        Fill {
            client_id: id(n),
            symbol: "ETHUSDT".into(),
            side: Side::Buy,
            price: Price::from_units(100),
            qty: Qty::from_units(1),
            fee: Qty::ZERO,
            fee_asset: "USDT".into(),
            fee_quote: Money::ZERO,
            is_maker: false,
            time_ms: 2,
            trade_id: trade.into(),
        }
    }

    #[test]
    fn framing_detects_torn_and_corrupt_records() {
        let path = Path::new("mem");
        let a = frame(br#"{"a":1}"#);
        let b = frame(br#"{"a":2}"#);
        let mut bytes = [a.clone(), b.clone()].concat();
        let ok = parse_records::<serde_json::Value>(&bytes, path).unwrap();
        assert_eq!((ok.records.len(), ok.dropped_tail), (2, false));
        // Cut mid-record: the tail is dropped.
        bytes.truncate(a.len() + 5);
        let torn = parse_records::<serde_json::Value>(&bytes, path).unwrap();
        assert_eq!(torn.records.len(), 1);
        assert!(torn.dropped_tail);
        assert_eq!(torn.good_len, a.len() as u64);
        // A flipped byte in the last complete record is dropped too.
        let mut flipped = [a.clone(), b.clone()].concat();
        let n = flipped.len();
        flipped[n - 3] ^= 1;
        let r = parse_records::<serde_json::Value>(&flipped, path).unwrap();
        assert_eq!((r.records.len(), r.dropped_tail), (1, true));
        // The same damage before the end is corruption, with its line number.
        let mut mid = [b.clone(), a.clone()].concat();
        mid[12] ^= 1;
        let err = parse_records::<serde_json::Value>(&mid, path).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 1, .. }),
            "{err}"
        );
        // Garbage never panics.
        for junk in [&b"\n\n"[..], b"zzzzzzzz {}\n", b"0000000", b"\xff\xfe\n{"] {
            let _ = parse_records::<serde_json::Value>(junk, path);
        }
    }

    #[test]
    fn replay_restores_orders_positions_and_next_id() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path(), "mm", true).unwrap();
            assert_eq!(j.state().next_seq(), 1);
            j.record(intent(1)).unwrap();
            j.record(JournalRecord::Event(ack(1))).unwrap();
            j.record(JournalRecord::Event(ExecutionEvent::Filled(fill(1, "t1"))))
                .unwrap();
            j.record(intent(2)).unwrap();
            j.record(JournalRecord::CancelRequest {
                client_id: id(2),
                time_ms: 3,
            })
            .unwrap();
        }
        let j = Journal::open(dir.path(), "mm", true).unwrap();
        let s = j.state();
        assert_eq!(s.next_seq(), 3);
        assert_eq!(s.order(&id(1)).unwrap().status, OrderStatus::Filled);
        assert_eq!(s.open_orders().len(), 1);
        assert!(s.cancel_requested(&id(2)));
        assert_eq!(s.position_qty("ETHUSDT"), Qty::from_units(1));
        assert!(!s.dropped_tail);
    }

    #[test]
    fn torn_tail_on_disk_is_dropped_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(dir.path(), "mm", true).unwrap();
            j.record(intent(1)).unwrap();
        }
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"1234abcd {\"Intent\":{\"requ").unwrap();
        drop(f);
        {
            let mut j = Journal::open(dir.path(), "mm", true).unwrap();
            assert!(j.state().dropped_tail);
            assert_eq!(j.state().next_seq(), 2);
            j.record(intent(2)).unwrap();
        }
        let j = Journal::open(dir.path(), "mm", true).unwrap();
        assert!(!j.state().dropped_tail);
        assert_eq!(j.state().next_seq(), 3);
        assert_eq!(j.state().open_orders().len(), 2);
    }

    #[test]
    fn duplicate_records_do_not_double_count() {
        let mut s = JournalState::new("mm");
        s.apply(&intent(1)).unwrap();
        assert_eq!(
            s.apply(&intent(1)),
            Err(ReplayError::DuplicateIntent(id(1)))
        );
        s.apply(&JournalRecord::Event(ack(1))).unwrap();
        let f = JournalRecord::Event(ExecutionEvent::Filled(fill(1, "t1")));
        s.apply(&f).unwrap();
        assert!(matches!(
            s.apply(&f),
            Err(ReplayError::DuplicateFill { .. })
        ));
        assert_eq!(s.position_qty("ETHUSDT"), Qty::from_units(1));
        // A fill of an order placed by the executor itself still moves the position.
        let mut exit = fill(0, "t9");
        exit.client_id = ClientOrderId::parse("mmx-1").unwrap();
        exit.side = Side::Sell;
        s.apply(&JournalRecord::Event(ExecutionEvent::Filled(exit)))
            .unwrap();
        assert!(s.position_qty("ETHUSDT").is_zero());
    }

    #[test]
    fn reconcile_adopts_resubmits_and_cancels() {
        let mut s = JournalState::new("mm");
        for n in 1..=4 {
            s.apply(&intent(n)).unwrap();
        }
        s.apply(&JournalRecord::Event(ack(2))).unwrap();
        s.apply(&JournalRecord::Event(ack(3))).unwrap();
        let venue = ExchangeView {
            orders: vec![
                VenueOrder {
                    client_id: id(1),
                    exchange_id: "x1".into(),
                    status: OrderStatus::Filled,
                    filled_qty: Qty::from_units(1),
                },
                VenueOrder {
                    client_id: id(3),
                    exchange_id: "x3".into(),
                    status: OrderStatus::Cancelled,
                    filled_qty: Qty::ZERO,
                },
                VenueOrder {
                    client_id: id(9),
                    exchange_id: "x9".into(),
                    status: OrderStatus::Acknowledged,
                    filled_qty: Qty::ZERO,
                },
            ],
            fills: vec![fill(1, "t1"), fill(1, "t1")],
        };
        let acts = reconcile(&s, &venue, 50, &ReconcilePolicy::IMMEDIATE);
        let mut expected = vec![
            ReconcileAction::Adopt(ExecutionEvent::Acknowledged {
                client_id: id(1),
                exchange_id: "x1".into(),
                time_ms: 50,
            }),
            ReconcileAction::Adopt(ExecutionEvent::Filled(fill(1, "t1"))),
            // mm-2 was acknowledged and the venue no longer has it.
            ReconcileAction::Adopt(ExecutionEvent::Cancelled {
                client_id: id(2),
                reason: CancelReason::Reconciled,
                time_ms: 50,
            }),
            ReconcileAction::Adopt(ExecutionEvent::Cancelled {
                client_id: id(3),
                reason: CancelReason::Reconciled,
                time_ms: 50,
            }),
        ];
        let JournalRecord::Intent { request, .. } = intent(4) else {
            unreachable!()
        };
        expected.push(ReconcileAction::Resubmit {
            request,
            protection: Protection::default(),
        });
        expected.push(ReconcileAction::CancelStray { client_id: id(9) });
        assert_eq!(acts, expected);
        // Applying the adoptions makes a second pass quiet but for what the venue must do.
        for a in &acts {
            if let ReconcileAction::Adopt(ev) = a {
                s.apply(&JournalRecord::Event(ev.clone())).unwrap();
            }
        }
        // A journaled cancel the venue never saw is sent again.
        let JournalRecord::Intent { request, .. } = intent(5) else {
            unreachable!()
        };
        s.apply(&intent(5)).unwrap();
        s.apply(&JournalRecord::Event(ack(5))).unwrap();
        s.apply(&JournalRecord::CancelRequest {
            client_id: id(5),
            time_ms: 9,
        })
        .unwrap();
        let mut venue5 = venue.clone();
        venue5.orders.push(VenueOrder {
            client_id: request.client_id,
            exchange_id: "x5".into(),
            status: OrderStatus::Acknowledged,
            filled_qty: Qty::ZERO,
        });
        assert!(
            reconcile(&s, &venue5, 60, &ReconcilePolicy::IMMEDIATE)
                .contains(&ReconcileAction::CancelStray { client_id: id(5) })
        );
        let venue = venue5;
        let again = reconcile(&s, &venue, 60, &ReconcilePolicy::IMMEDIATE);
        // The resubmit, the stray and the cancel to repeat remain: the venue must act.
        assert_eq!(again.len(), 3, "{again:?}");
        assert_eq!(s.order(&id(1)).unwrap().status, OrderStatus::Filled);
    }

    #[test]
    fn an_unknown_intent_is_rechecked_then_resubmitted_young_and_refused_old() {
        let policy = ReconcilePolicy {
            certainty_ms: 8_000,
            max_intent_age_ms: 15_000,
        };
        let mut s = JournalState::new("mm");
        // Intent 1 journaled at t = 1 ms; the venue has never heard of it.
        s.apply(&intent(1)).unwrap();
        let venue = ExchangeView::default();
        // Still in flight or not yet queryable: looked up again, never sent meanwhile.
        assert_eq!(
            reconcile(&s, &venue, 3_000, &policy),
            vec![ReconcileAction::Recheck {
                client_id: id(1),
                at_ms: 8_001,
            }]
        );
        // Certainly unseen and still young: may be resubmitted (after the risk check).
        assert!(matches!(
            reconcile(&s, &venue, 9_000, &policy).as_slice(),
            [ReconcileAction::Resubmit { .. }]
        ));
        // Too old: ends as rejected, never sent.
        match reconcile(&s, &venue, 20_000, &policy).as_slice() {
            [ReconcileAction::Adopt(ExecutionEvent::Rejected { reason, .. })] => {
                assert!(reason.to_string().contains("not resubmitted"), "{reason}")
            }
            other => panic!("a stale intent must not be resubmitted: {other:?}"),
        }
        // One the trader asked to cancel is never placed by recovery, young or not.
        s.apply(&JournalRecord::CancelRequest {
            client_id: id(1),
            time_ms: 2,
        })
        .unwrap();
        assert!(matches!(
            reconcile(&s, &venue, 3_000, &policy).as_slice(),
            [ReconcileAction::Recheck { .. }]
        ));
        for now in [9_000, 20_000] {
            match reconcile(&s, &venue, now, &policy).as_slice() {
                [ReconcileAction::Adopt(ExecutionEvent::Rejected { reason, .. })] => {
                    assert!(reason.to_string().contains("cancelled"), "{reason}")
                }
                other => panic!("a cancelled intent must never be sent: {other:?}"),
            }
        }
    }
}
