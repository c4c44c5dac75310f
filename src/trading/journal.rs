//! The order journal: an append-only, checksummed record of every intent, acknowledgement,
//! fill and cancel, written and fsynced before the action it describes is taken.
//!
//! Framing: one record per line, `<crc32 as 8 hex digits> <json>\n`, the CRC covering the JSON
//! bytes. A crash mid-write leaves at most one damaged record, at the end: on open it is
//! detected (no newline or a checksum mismatch), dropped with a warning and cut off, so the
//! next append starts on a clean line. A damaged record anywhere else is real corruption and
//! opening fails with the line number.
//!
//! A failed append (write or fsync) is cut back to the last good record before the error is
//! returned, so a record whose append returned an error is never replayed and the next one
//! starts on a clean line. When even that cut fails, the log is marked failed
//! ([`RecordLog::failure`], [`Journal::failure`]) and refuses every append until a retried cut
//! succeeds.
//!
//! Replay ([`JournalState`]) and reconciliation ([`reconcile`]) are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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
    /// An earlier append failed and its bytes could not be cut off: nothing is appended until
    /// they are.
    #[error(
        "journal {path} has failed ({why}); cutting it back to its last good record failed again: {source}"
    )]
    Failed {
        /// The file.
        path: PathBuf,
        /// What failed first.
        why: String,
        /// Why the retried cut failed.
        source: std::io::Error,
    },
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
    /// A journaled order sent again under its own id (reconciliation found the venue never
    /// saw it), journaled before it is sent: the venue's answer about it is judged from this
    /// time on, not from the intent's.
    Resent {
        /// The order.
        client_id: ClientOrderId,
        /// Time, ms.
        time_ms: i64,
    },
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

/// The file operations a [`RecordLog`] performs after opening. [`File`] is the real one; the
/// trait is the fault-injection seam: [`RecordLog::open_with`] wraps the opened file, so tests
/// can make writes and syncs fail while every byte still goes to the real file.
pub trait LogFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at the end of the file; may write a prefix and then fail.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Flushes the file's data (and its length) to disk.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Flushes the file's data and metadata to disk.
    fn sync_all(&mut self) -> io::Result<()>;
}

impl LogFile for File {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
}

/// An append-only file of checksummed records, each fsynced before `append` returns.
#[derive(Debug)]
pub struct RecordLog {
    file: Box<dyn LogFile>,
    path: PathBuf,
    sync: bool,
    /// Length of the file up to the end of the last record whose append returned `Ok`.
    good_len: u64,
    /// Set while bytes of a failed append may lie past `good_len` (the cut-back failed).
    failed: Option<String>,
}

impl RecordLog {
    /// Opens (creating) `path`, reads every intact record, and cuts off a torn tail.
    /// `sync: false` skips fsync (backtests only: a crash may then lose records).
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        sync: bool,
    ) -> Result<(Self, ReadOutcome<T>), JournalError> {
        Self::open_with(path, sync, |f| f)
    }

    /// [`Self::open`], with every later write, sync and cut going through `wrap(file)`: the
    /// fault-injection seam (a wrapper that fails on demand around the real file).
    pub fn open_with<T: DeserializeOwned, W: LogFile + 'static>(
        path: &Path,
        sync: bool,
        wrap: impl FnOnce(File) -> W,
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
                file: Box::new(wrap(file)),
                path: path.to_path_buf(),
                sync,
                good_len: outcome.good_len,
                failed: None,
            },
            outcome,
        ))
    }

    /// Appends one record and (unless opened without sync) waits until it is on disk.
    ///
    /// On any error nothing of the record stays in the file: the bytes written are cut off
    /// before this returns, or, when that fails too, the log is marked failed and every later
    /// append first retries the cut and is refused ([`JournalError::Failed`]) until it works.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        let json = serde_json::to_vec(record).map_err(|e| JournalError::Encode(e.to_string()))?;
        if let Some(why) = self.failed.clone() {
            if let Err(source) = self.cut_back() {
                return Err(JournalError::Failed {
                    path: self.path.clone(),
                    why,
                    source,
                });
            }
            tracing::info!(path = %self.path.display(), "journal cut back to its last good record");
            self.failed = None;
        }
        let framed = frame(&json);
        // One write call per record: a crash tears at most this record.
        let mut result = self.file.append(&framed);
        if result.is_ok() && self.sync {
            result = self.file.sync_data();
        }
        match result {
            Ok(()) => {
                self.good_len += framed.len() as u64;
                Ok(())
            }
            Err(source) => {
                // After a failed fsync the written bytes may or may not reach the disk: the
                // record is cut off either way, so it counts as never written.
                if let Err(cut) = self.cut_back() {
                    tracing::error!(path = %self.path.display(), error = %cut, "journal append failed and could not be cut back");
                    self.failed = Some(format!(
                        "an append failed ({source}) and cutting it off failed ({cut})"
                    ));
                }
                Err(JournalError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Cuts the file back to the end of the last good record, durably.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.good_len)?;
        self.file.sync_all()
    }

    /// Why the log refuses appends: an append failed and its bytes could not be cut off yet.
    /// `None` when the file holds exactly the records whose append returned `Ok`.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RecordLog {
    fn drop(&mut self) {
        // Last chance to keep a failed record out of the next replay.
        if self.failed.is_some()
            && let Err(e) = self.cut_back()
        {
            tracing::error!(path = %self.path.display(), error = %e, "journal closed with bytes of a failed append in it");
        }
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
        Self::open_with(dir, prefix, sync, |f| f)
    }

    /// [`Self::open`] through the fault-injection seam of [`RecordLog::open_with`].
    pub fn open_with<W: LogFile + 'static>(
        dir: &Path,
        prefix: &str,
        sync: bool,
        wrap: impl FnOnce(File) -> W,
    ) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let (log, outcome) =
            RecordLog::open_with::<JournalRecord, W>(&dir.join(JOURNAL_FILE), sync, wrap)?;
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
    /// record describes only after this returns `Ok`; on an error the record is neither in
    /// the file nor in the state, and the owner must stop acting (halt trading).
    pub fn record(&mut self, record: JournalRecord) -> Result<(), JournalError> {
        self.log.append(&record)?;
        if let Err(e) = self.state.apply(&record) {
            tracing::warn!(error = %e, "journaled record did not change the order state");
        }
        Ok(())
    }

    /// Why the journal refuses records (see [`RecordLog::failure`]); `None` when it accepts
    /// them. A single failed `record` that was cut back cleanly does not set this: its error
    /// is the signal.
    pub fn failure(&self) -> Option<&str> {
        self.log.failure()
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
    last_sent: BTreeMap<ClientOrderId, i64>,
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
            last_sent: BTreeMap::new(),
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

    /// When the order was last sent to the venue: its last [`JournalRecord::Resent`], else
    /// its intent's time.
    pub fn last_sent_ms(&self, id: &ClientOrderId) -> Option<i64> {
        self.last_sent.get(id).copied().or_else(|| {
            self.orders
                .get(id)
                .filter(|(o, _)| o.status == OrderStatus::New)
                .map(|(o, _)| o.updated_ms)
        })
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
            JournalRecord::Resent { client_id, time_ms } => {
                if !self.orders.contains_key(client_id) {
                    return Err(ReplayError::UnknownOrder(client_id.clone()));
                }
                self.last_sent.insert(client_id.clone(), *time_ms);
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
                        .apply(f.side, f.price, f.position_qty(), f.fee_quote);
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
    /// Journal orders the venue could not yet answer for certain (not found by client id, but
    /// a recent trade it cannot attribute yet might be theirs): looked up again, never sent.
    #[serde(default)]
    pub in_doubt: Vec<ClientOrderId>,
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
        if venue.in_doubt.contains(id) {
            actions.push(ReconcileAction::Recheck {
                client_id: id.clone(),
                at_ms: now_ms.saturating_add(policy.certainty_ms.clamp(1, 1_000)),
            });
            continue;
        }
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
                // The decision's age counts from the intent; certainty from the last send.
                let age = now_ms.saturating_sub(o.updated_ms);
                let sent = state.last_sent_ms(id).unwrap_or(o.updated_ms);
                if now_ms.saturating_sub(sent) < policy.certainty_ms {
                    actions.push(ReconcileAction::Recheck {
                        client_id: id.clone(),
                        at_ms: sent.saturating_add(policy.certainty_ms),
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

/// A [`LogFile`] that fails on demand around a real file, for tests of the failure paths
/// (here and in the trading session's tests).
#[cfg(test)]
pub(crate) mod faults {
    use std::fs::File;
    use std::io::{self, Write};
    use std::sync::{Arc, Mutex};

    use super::LogFile;

    /// Failures still to inject; the test keeps a handle and arms them between appends.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub(crate) struct Plan {
        /// The next write puts this many bytes of its buffer in the file, then fails (a
        /// number at or above the length writes everything and still reports failure).
        pub(crate) write_fails_after: Option<usize>,
        /// The next this-many data syncs fail.
        pub(crate) sync_data_failures: u32,
        /// The next this-many `set_len` calls fail (without cutting).
        pub(crate) set_len_failures: u32,
        /// The next this-many `sync_all` calls fail.
        pub(crate) sync_all_failures: u32,
    }

    /// The real file, with failures taken from a shared [`Plan`].
    #[derive(Debug)]
    pub(crate) struct FaultyFile {
        file: File,
        plan: Arc<Mutex<Plan>>,
    }

    impl FaultyFile {
        /// Wraps `file`; failures come from `plan`.
        pub(crate) fn new(file: File, plan: Arc<Mutex<Plan>>) -> Self {
            Self { file, plan }
        }

        fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
            self.plan.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    fn injected(what: &str) -> io::Error {
        io::Error::other(format!("injected {what} failure"))
    }

    fn take(n: &mut u32) -> bool {
        let fail = *n > 0;
        *n = n.saturating_sub(1);
        fail
    }

    impl LogFile for FaultyFile {
        fn append(&mut self, buf: &[u8]) -> io::Result<()> {
            let cut = self.plan().write_fails_after.take();
            match cut {
                Some(n) => {
                    self.file.write_all(&buf[..n.min(buf.len())])?;
                    Err(injected("write"))
                }
                None => self.file.write_all(buf),
            }
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if take(&mut self.plan().sync_data_failures) {
                return Err(injected("fsync"));
            }
            self.file.sync_data()
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            if take(&mut self.plan().set_len_failures) {
                return Err(injected("set_len"));
            }
            self.file.set_len(len)
        }

        fn sync_all(&mut self) -> io::Result<()> {
            if take(&mut self.plan().sync_all_failures) {
                return Err(injected("sync_all"));
            }
            self.file.sync_all()
        }
    }
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
            in_doubt: Vec::new(),
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
    fn a_resent_intent_is_judged_from_its_last_send_not_its_intent() {
        let policy = ReconcilePolicy {
            certainty_ms: 8_000,
            max_intent_age_ms: 15_000,
        };
        let mut s = JournalState::new("mm");
        s.apply(&intent(1)).unwrap();
        // Sent again at 9 s; at 10 s the venue not knowing it proves nothing yet.
        s.apply(&JournalRecord::Resent {
            client_id: id(1),
            time_ms: 9_000,
        })
        .unwrap();
        assert_eq!(s.last_sent_ms(&id(1)), Some(9_000));
        assert_eq!(
            reconcile(&s, &ExchangeView::default(), 10_000, &policy),
            vec![ReconcileAction::Recheck {
                client_id: id(1),
                at_ms: 17_000,
            }]
        );
        // Certain again, and by then the decision is stale: rejected, never sent a third time.
        assert!(matches!(
            reconcile(&s, &ExchangeView::default(), 17_500, &policy).as_slice(),
            [ReconcileAction::Adopt(ExecutionEvent::Rejected { .. })]
        ));
    }

    #[test]
    fn a_fill_reported_after_the_cancel_counts_on_replay() {
        let mut s = JournalState::new("mm");
        s.apply(&intent(1)).unwrap();
        s.apply(&JournalRecord::Event(ack(1))).unwrap();
        s.apply(&JournalRecord::Event(ExecutionEvent::Cancelled {
            client_id: id(1),
            reason: CancelReason::Requested,
            time_ms: 3,
        }))
        .unwrap();
        // The trade report comes after the cancel reply: it happened, so it counts, once.
        s.apply(&JournalRecord::Event(ExecutionEvent::Filled(fill(
            1, "late",
        ))))
        .unwrap();
        assert!(
            s.apply(&JournalRecord::Event(ExecutionEvent::Filled(fill(
                1, "late"
            ))))
            .is_err()
        );
        let o = s.order(&id(1)).unwrap();
        assert_eq!(o.status, OrderStatus::Cancelled, "the final status stays");
        assert_eq!(o.filled_qty, Qty::from_units(1));
        assert_eq!(s.position_qty("ETHUSDT"), Qty::from_units(1));
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

    use super::faults::{FaultyFile, Plan};
    use std::sync::{Arc, Mutex};

    fn faulty_log(path: &Path) -> (RecordLog, Arc<Mutex<Plan>>) {
        let plan = Arc::new(Mutex::new(Plan::default()));
        let handle = plan.clone();
        let (log, _) =
            RecordLog::open_with::<u64, _>(path, true, move |f| FaultyFile::new(f, handle))
                .unwrap();
        (log, plan)
    }

    fn arm(plan: &Arc<Mutex<Plan>>, p: Plan) {
        *plan.lock().unwrap() = p;
    }

    fn on_disk(path: &Path) -> ReadOutcome<u64> {
        parse_records::<u64>(&std::fs::read(path).unwrap(), path).unwrap()
    }

    #[test]
    fn partial_write_is_cut_off_before_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (mut log, plan) = faulty_log(&path);
        log.append(&1u64).unwrap();
        // Half the record reaches the file, then the write fails.
        arm(
            &plan,
            Plan {
                write_fails_after: Some(5),
                ..Plan::default()
            },
        );
        assert!(matches!(log.append(&2u64), Err(JournalError::Io { .. })));
        assert_eq!(log.failure(), None);
        log.append(&3u64).unwrap();
        log.append(&4u64).unwrap();
        drop(log);
        // Before the cut-back, the torn bytes and record 3 shared a line: a corrupt record in
        // the middle of the file.
        let (_, out) = RecordLog::open::<u64>(&path, true).unwrap();
        assert_eq!(out.records, vec![1, 3, 4]);
        assert!(!out.dropped_tail);
    }

    #[test]
    fn failed_fsync_means_the_record_was_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let handle = plan.clone();
        let mut j = Journal::open_with(dir.path(), "mm", true, move |f| FaultyFile::new(f, handle))
            .unwrap();
        j.record(intent(1)).unwrap();
        // The whole record is written, the fsync fails: it is cut off again.
        arm(
            &plan,
            Plan {
                sync_data_failures: 1,
                ..Plan::default()
            },
        );
        assert!(matches!(j.record(intent(2)), Err(JournalError::Io { .. })));
        assert!(
            j.state().order(&id(2)).is_none(),
            "applied without being written"
        );
        assert_eq!(j.failure(), None);
        assert_eq!(on_disk_records(&j).len(), 1);
        drop(j);
        let j = Journal::open(dir.path(), "mm", true).unwrap();
        assert!(j.state().order(&id(1)).is_some());
        assert!(j.state().order(&id(2)).is_none());
        assert!(!j.state().dropped_tail);
    }

    fn on_disk_records(j: &Journal) -> Vec<JournalRecord> {
        let bytes = std::fs::read(j.path()).unwrap();
        let out = parse_records::<JournalRecord>(&bytes, j.path()).unwrap();
        assert!(!out.dropped_tail);
        out.records
    }

    #[test]
    fn failed_cut_back_refuses_appends_until_the_cut_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (mut log, plan) = faulty_log(&path);
        log.append(&1u64).unwrap();
        // The write fails after writing everything, and the first two cuts fail as well.
        arm(
            &plan,
            Plan {
                write_fails_after: Some(usize::MAX),
                set_len_failures: 2,
                ..Plan::default()
            },
        );
        assert!(matches!(log.append(&2u64), Err(JournalError::Io { .. })));
        let why = log.failure().unwrap().to_string();
        assert!(why.contains("injected write failure"), "{why}");
        // The failed record is still in the file, so nothing may be appended after it.
        let err = log.append(&3u64).unwrap_err();
        assert!(matches!(err, JournalError::Failed { .. }), "{err}");
        assert!(err.to_string().contains("log.jsonl"), "{err}");
        assert_eq!(on_disk(&path).records, vec![1, 2]);
        // The cut works now: the failed record goes, the new one starts on a clean line.
        log.append(&4u64).unwrap();
        assert_eq!(log.failure(), None);
        assert_eq!(on_disk(&path).records, vec![1, 4]);
        // A sync failure of the cut is a failed cut too.
        arm(
            &plan,
            Plan {
                sync_data_failures: 1,
                sync_all_failures: 1,
                ..Plan::default()
            },
        );
        assert!(log.append(&5u64).is_err());
        assert!(log.failure().is_some());
        drop(log);
        // Closing retried the cut.
        let (_, out) = RecordLog::open::<u64>(&path, true).unwrap();
        assert_eq!((out.records, out.dropped_tail), (vec![1, 4], false));
    }

    #[derive(Debug, Clone)]
    enum Fault {
        None,
        Write(usize),
        Sync,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            3 => Just(Fault::None),
            2 => (0usize..40).prop_map(Fault::Write),
            1 => Just(Fault::Sync),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever fails and however often the cut-back fails with it, the file always holds
        /// exactly the records whose append returned `Ok` (with the bytes of one failed append
        /// past them only while the log says it has failed), and reopening replays exactly those.
        #[test]
        fn replay_equals_the_appends_that_returned_ok(
            steps in proptest::collection::vec((fault(), 0u32..3, 0u32..2), 1..40)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log.jsonl");
            let (mut log, plan) = faulty_log(&path);
            let mut ok: Vec<u64> = Vec::new();
            for (n, (f, cut_fails, cut_sync_fails)) in steps.into_iter().enumerate() {
                let n = n as u64;
                arm(&plan, Plan {
                    write_fails_after: match f { Fault::Write(k) => Some(k), _ => None },
                    sync_data_failures: u32::from(matches!(f, Fault::Sync)),
                    set_len_failures: cut_fails,
                    sync_all_failures: cut_sync_fails,
                });
                let was_failed = log.failure().is_some();
                let r = log.append(&n);
                if r.is_ok() {
                    ok.push(n);
                }
                // Success needs no fault this time (and a cut that worked, if one was due).
                let clean = matches!(f, Fault::None) && (!was_failed || (cut_fails == 0 && cut_sync_fails == 0));
                prop_assert_eq!(r.is_ok(), clean, "step {}: {:?}", n, r);
                let disk = on_disk(&path);
                if log.failure().is_none() {
                    prop_assert_eq!(&disk.records, &ok);
                    prop_assert!(!disk.dropped_tail);
                } else {
                    prop_assert_eq!(&disk.records[..ok.len()], &ok[..]);
                }
            }
            arm(&plan, Plan::default());
            drop(log);
            let (mut log, out) = RecordLog::open::<u64>(&path, true).unwrap();
            prop_assert_eq!(&out.records, &ok);
            prop_assert!(!out.dropped_tail);
            log.append(&999u64).unwrap();
            drop(log);
            ok.push(999);
            let (_, out) = RecordLog::open::<u64>(&path, true).unwrap();
            prop_assert_eq!(out.records, ok);
        }
    }
}
