//! Replays recorded Binance sessions through the live parser and [`BookSync`].
//!
//! Two third-party line formats are read (see shared/testdata/SOURCES.md):
//! - hftbacktest: gzip text, `<local ns> <payload>`; payloads are combined-stream envelopes, and
//!   a bare `{"lastUpdateId":..}` line is the REST depth snapshot.
//! - cryptofeed: `URL <-> t` (connection opened), `URL <- t: msg` (sent by the client),
//!   `t: msg` (received), `URL -> t: body` (REST response), `configuration: {..}` (ignored).
//!
//! Several files (e.g. a cryptofeed ws file and its concurrently recorded http file, or two
//! consecutive hftbacktest days) are merged by local receive time, each file keeping its own
//! order, so a snapshot reaches the sync machine exactly when it arrived live: diffs before it
//! are buffered just as the live runtime would buffer them.
//!
//! Rules: unless the caller forces them, each symbol's rules come from its first diff: `pu`
//! present → [`Rules::Futures`], otherwise [`Rules::Spot`]. [`rules_from_path`] gives the hint a
//! file name carries (`usdm`, `futures`, `fapi`, `fstream`); it labels symbols that never send a
//! diff. A bare snapshot (hftbacktest) goes to the only symbol seen so far, else to the symbol
//! named in the file name, else waits for the first symbol to appear.
//!
//! Checkpoints: a `bookTicker` whose `u` equals the final id `u` of an applied diff must show
//! exactly the book's best bid and ask (price and quantity) right after that diff.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::binance::sync::{BookSync, ResyncReason, Rules, SyncConfig, SyncOutcome, SyncStats};
use super::binance::wire::{
    BookTicker, DepthSnapshot, DepthUpdate, FrameErrorCounter, Parsed, parse_depth_snapshot,
    parse_frame_reusing,
};
use crate::market::book::OrderBook;
use crate::market::types::{Level, Side};

/// How many recent applied diffs keep their top of book for bookTickers that arrive late.
const RECENT_TOPS: usize = 256;
/// Most bookTickers waiting for their diff; older ones are dropped first.
const MAX_PENDING_TICKERS: usize = 4096;
/// Mismatches and resync reasons kept per symbol for the report.
const KEEP_DETAILS: usize = 8;

/// Why a replay could not run at all (malformed lines are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No input was given.
    #[error("no replay input given")]
    NoInput,
}

/// One bookTicker checkpoint whose top of book differed from the rebuilt book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMismatch {
    /// The update id compared.
    pub update_id: u64,
    /// Recorded best bid and ask.
    pub expected: (Level, Level),
    /// Rebuilt best bid and ask.
    pub actual: (Option<Level>, Option<Level>),
}

/// Replay result for one symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolReport {
    /// Exchange symbol.
    pub symbol: String,
    /// Rules the book was synchronised with (`None` when the symbol sent no diff).
    pub rules: Option<Rules>,
    /// Synchroniser counters (applied, dropped, gaps, resyncs, ...).
    pub sync: SyncStats,
    /// True when the book was valid at the end of the replay.
    pub synced: bool,
    /// Reasons of the first resyncs, in order.
    pub resync_reasons: Vec<ResyncReason>,
    /// `trade` events.
    pub trades: u64,
    /// `aggTrade` events.
    pub agg_trades: u64,
    /// Breaks in consecutive trade (or aggregate trade) ids.
    pub trade_id_gaps: u64,
    /// `bookTicker` events.
    pub book_tickers: u64,
    /// Kline, 24 h ticker and partial-depth events.
    pub other_events: u64,
    /// Bid levels in the final book.
    pub bid_levels: usize,
    /// Ask levels in the final book.
    pub ask_levels: usize,
    /// Final best bid (price and quantity).
    pub best_bid: Option<Level>,
    /// Final best ask (price and quantity).
    pub best_ask: Option<Level>,
    /// Update id of the final book.
    pub final_update_id: Option<u64>,
    /// bookTickers whose `u` equalled an applied diff's `u`.
    pub checkpoints_checked: u64,
    /// Of those, the ones whose best bid and ask matched exactly.
    pub checkpoints_matched: u64,
    /// The first mismatching checkpoints.
    pub mismatches: Vec<CheckpointMismatch>,
}

/// Result of replaying one recorded session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Input names in the order given.
    pub inputs: Vec<String>,
    /// Lines read (all kinds).
    pub lines: u64,
    /// Websocket frames received.
    pub frames: u64,
    /// REST responses.
    pub rest_responses: u64,
    /// Messages sent by the recording client (subscriptions).
    pub sent: u64,
    /// Websocket connections opened.
    pub connections: u64,
    /// Subscription acks, error replies and shutdown notices.
    pub control_messages: u64,
    /// Per-symbol results.
    pub symbols: BTreeMap<String, SymbolReport>,
    /// Malformed or unusable lines per kind.
    pub malformed: Vec<(&'static str, u64)>,
}

impl ReplayReport {
    /// Malformed lines of one kind.
    pub fn malformed_count(&self, kind: &str) -> u64 {
        self.malformed
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

fn fmt_level(l: Option<Level>) -> String {
    l.map_or_else(|| "-".to_owned(), |l| format!("{} x {}", l.price, l.qty))
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "replay of {}", self.inputs.join(" + "))?;
        writeln!(
            f,
            "  lines {}  frames {}  rest {}  sent {}  connections {}  control {}",
            self.lines,
            self.frames,
            self.rest_responses,
            self.sent,
            self.connections,
            self.control_messages
        )?;
        for s in self.symbols.values() {
            let rules = s.rules.map_or_else(|| "-".to_owned(), |r| r.to_string());
            writeln!(
                f,
                "  {} [{}] {}",
                s.symbol,
                rules,
                if s.synced { "synced" } else { "NOT synced" }
            )?;
            writeln!(
                f,
                "    diffs applied {}  dropped {}  buffered {}  gaps {}  resyncs {}  crossed {}  \
                 snapshots {} (rejected {})",
                s.sync.applied,
                s.sync.dropped,
                s.sync.buffered,
                s.sync.gaps,
                s.sync.resyncs,
                s.sync.crossed,
                s.sync.snapshots,
                s.sync.snapshots_rejected
            )?;
            writeln!(
                f,
                "    trades {}  aggTrades {}  trade id gaps {}  bookTickers {}  other {}",
                s.trades, s.agg_trades, s.trade_id_gaps, s.book_tickers, s.other_events
            )?;
            writeln!(
                f,
                "    book: {} bids / {} asks  best bid {}  best ask {}  update id {}",
                s.bid_levels,
                s.ask_levels,
                fmt_level(s.best_bid),
                fmt_level(s.best_ask),
                s.final_update_id
                    .map_or_else(|| "-".to_owned(), |u| u.to_string())
            )?;
            writeln!(
                f,
                "    bookTicker checkpoints matched {} of {}",
                s.checkpoints_matched, s.checkpoints_checked
            )?;
            for r in &s.resync_reasons {
                writeln!(f, "    resync: {r:?}")?;
            }
            for m in &s.mismatches {
                writeln!(
                    f,
                    "    mismatch at u={}: expected {} / {}, got {} / {}",
                    m.update_id,
                    fmt_level(Some(m.expected.0)),
                    fmt_level(Some(m.expected.1)),
                    fmt_level(m.actual.0),
                    fmt_level(m.actual.1)
                )?;
            }
        }
        if self.malformed.is_empty() {
            writeln!(f, "  malformed: none")?;
        } else {
            let parts: Vec<String> = self
                .malformed
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "  malformed: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// The rules a file name suggests (`usdm`, `futures`, `fapi`, `fstream` → futures).
pub fn rules_from_path(path: &Path) -> Option<Rules> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    ["usdm", "futures", "fapi", "fstream"]
        .iter()
        .any(|k| name.contains(k))
        .then_some(Rules::Futures)
}

/// One line of a recording, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRecord<'a> {
    /// A received websocket payload.
    Received(&'a str),
    /// A REST response body for a GET of `url`.
    Rest {
        /// The requested URL.
        url: &'a str,
        /// The exact response body.
        body: &'a str,
    },
    /// A message the recording client sent.
    Sent,
    /// A websocket connection was opened.
    Connected,
    /// Recorder metadata that carries no exchange data.
    Metadata,
}

/// Why a line is not in a known recording format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line is neither hftbacktest nor cryptofeed format")]
pub struct LineFormatError;

/// Parses a decimal UNIX time in seconds (`1618677817.020616`) into nanoseconds, exactly.
fn seconds_to_ns(text: &str) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut ns: i64 = 0;
    for (i, b) in frac.bytes().enumerate().take(9) {
        ns += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Splits `<time>: <payload>` (cryptofeed) into nanoseconds and payload.
fn timed_payload(text: &str) -> Option<(i64, &str)> {
    let (t, payload) = text.split_once(": ")?;
    Some((seconds_to_ns(t)?, payload))
}

/// Classifies one recorded line; returns its local time in ns when the line carries one.
pub fn parse_line(line: &str) -> Result<(Option<i64>, LineRecord<'_>), LineFormatError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let first = line.bytes().next().ok_or(LineFormatError)?;
    if first.is_ascii_digit() {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if line.as_bytes().get(digits) == Some(&b' ') {
            // hftbacktest: integer nanoseconds, one space, payload.
            let ns = line[..digits].parse().map_err(|_| LineFormatError)?;
            return Ok((Some(ns), LineRecord::Received(&line[digits + 1..])));
        }
        let (ns, payload) = timed_payload(line).ok_or(LineFormatError)?;
        return Ok((Some(ns), LineRecord::Received(payload)));
    }
    if line.starts_with("configuration:") {
        return Ok((None, LineRecord::Metadata));
    }
    let (url, rest) = line.split_once(' ').ok_or(LineFormatError)?;
    if let Some(t) = rest.strip_prefix("<-> ") {
        return Ok((
            Some(seconds_to_ns(t.trim()).ok_or(LineFormatError)?),
            LineRecord::Connected,
        ));
    }
    if let Some(t) = rest.strip_prefix("<- ") {
        let (ns, _) = timed_payload(t).ok_or(LineFormatError)?;
        return Ok((Some(ns), LineRecord::Sent));
    }
    if let Some(t) = rest.strip_prefix("-> ") {
        let (ns, body) = timed_payload(t).ok_or(LineFormatError)?;
        return Ok((Some(ns), LineRecord::Rest { url, body }));
    }
    Err(LineFormatError)
}

/// The `symbol=` query parameter of a depth REST URL.
fn depth_url_symbol(url: &str) -> Option<&str> {
    let (path, query) = url.split_once('?')?;
    if !path.ends_with("/depth") {
        return None;
    }
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("symbol="))
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy)]
struct Top {
    update_id: u64,
    bid: Option<Level>,
    ask: Option<Level>,
}

/// Per-symbol replay state.
struct SymbolState {
    report: SymbolReport,
    sync: Option<BookSync>,
    pending_snapshot: Option<DepthSnapshot>,
    /// bookTickers ahead of the book, by update id.
    pending_tickers: BTreeMap<u64, (Level, Level)>,
    recent_tops: VecDeque<Top>,
    last_trade_id: Option<u64>,
    last_agg_id: Option<u64>,
}

impl SymbolState {
    fn new(symbol: &str) -> Self {
        Self {
            report: SymbolReport {
                symbol: symbol.to_owned(),
                rules: None,
                sync: SyncStats::default(),
                synced: false,
                resync_reasons: Vec::new(),
                trades: 0,
                agg_trades: 0,
                trade_id_gaps: 0,
                book_tickers: 0,
                other_events: 0,
                bid_levels: 0,
                ask_levels: 0,
                best_bid: None,
                best_ask: None,
                final_update_id: None,
                checkpoints_checked: 0,
                checkpoints_matched: 0,
                mismatches: Vec::new(),
            },
            sync: None,
            pending_snapshot: None,
            pending_tickers: BTreeMap::new(),
            recent_tops: VecDeque::with_capacity(RECENT_TOPS),
            last_trade_id: None,
            last_agg_id: None,
        }
    }

    fn note_outcome(&mut self, out: SyncOutcome) {
        if let SyncOutcome::FetchSnapshot(r) = out {
            self.recent_tops.clear();
            if self.report.resync_reasons.len() < KEEP_DETAILS {
                self.report.resync_reasons.push(r);
            }
        }
    }

    fn compare(&mut self, expected: (Level, Level), top: Top) {
        self.report.checkpoints_checked += 1;
        if top.bid == Some(expected.0) && top.ask == Some(expected.1) {
            self.report.checkpoints_matched += 1;
        } else if self.report.mismatches.len() < KEEP_DETAILS {
            self.report.mismatches.push(CheckpointMismatch {
                update_id: top.update_id,
                expected,
                actual: (top.bid, top.ask),
            });
        }
    }

    /// Records the top of book after a diff and checks a waiting bookTicker for that id.
    fn after_apply(&mut self, top: Top) {
        // Tickers below this id can never match a later diff's final id.
        while let Some(entry) = self.pending_tickers.first_entry() {
            if *entry.key() >= top.update_id {
                break;
            }
            entry.remove();
        }
        if let Some(expected) = self.pending_tickers.remove(&top.update_id) {
            self.compare(expected, top);
        }
        if self.recent_tops.len() == RECENT_TOPS {
            self.recent_tops.pop_front();
        }
        self.recent_tops.push_back(top);
    }

    fn on_book_ticker(&mut self, t: &BookTicker) {
        self.report.book_tickers += 1;
        let expected = (t.bid, t.ask);
        let book_id = self
            .sync
            .as_ref()
            .and_then(|s| s.synced_book())
            .map(|b| b.last_update_id);
        if let Some(id) = book_id
            && t.update_id <= id
        {
            if let Some(top) = self
                .recent_tops
                .iter()
                .rev()
                .find(|top| top.update_id == t.update_id)
                .copied()
            {
                self.compare(expected, top);
            }
            return;
        }
        if self.pending_tickers.len() >= MAX_PENDING_TICKERS {
            self.pending_tickers.pop_first();
        }
        self.pending_tickers.insert(t.update_id, expected);
    }

    fn on_trade(&mut self, id: u64, aggregated: bool) {
        let last = if aggregated {
            self.report.agg_trades += 1;
            &mut self.last_agg_id
        } else {
            self.report.trades += 1;
            &mut self.last_trade_id
        };
        if let Some(prev) = *last
            && prev.checked_add(1) != Some(id)
        {
            self.report.trade_id_gaps += 1;
        }
        *last = Some(id);
    }

    fn deliver_snapshot(&mut self, snapshot: DepthSnapshot) {
        let Some(mut sync) = self.sync.take() else {
            // No diff seen yet: the machine would have had an empty buffer, so holding the
            // snapshot until the first diff is equivalent.
            self.pending_snapshot = Some(snapshot);
            return;
        };
        let out =
            sync.on_snapshot_observed(snapshot, |book, diff| self.after_apply(top_of(book, diff)));
        self.note_outcome(out);
        self.sync = Some(sync);
    }

    fn on_diff(&mut self, diff: &DepthUpdate, forced: Option<Rules>, cfg: SyncConfig) {
        if self.sync.is_none() {
            let rules = forced.unwrap_or(if diff.prev_final_update_id.is_some() {
                Rules::Futures
            } else {
                Rules::Spot
            });
            self.report.rules = Some(rules);
            self.sync = Some(BookSync::new(diff.symbol.clone(), rules, cfg));
            if let Some(snap) = self.pending_snapshot.take() {
                self.deliver_snapshot(snap);
            }
        }
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        let out = sync.on_diff(diff);
        let top = (out == SyncOutcome::Applied).then(|| top_of(sync.book(), diff));
        if let Some(top) = top {
            self.after_apply(top);
        }
        self.note_outcome(out);
    }

    fn finish(mut self, path_rules: Option<Rules>) -> SymbolReport {
        let r = &mut self.report;
        if r.rules.is_none() {
            r.rules = path_rules;
        }
        if let Some(sync) = &self.sync {
            r.sync = sync.stats();
            if let Some(book) = sync.synced_book() {
                r.synced = true;
                r.bid_levels = book.depth(Side::Buy);
                r.ask_levels = book.depth(Side::Sell);
                r.best_bid = book.best_bid();
                r.best_ask = book.best_ask();
                r.final_update_id = Some(book.last_update_id);
            }
        }
        self.report
    }
}

fn top_of(book: &OrderBook, diff: &DepthUpdate) -> Top {
    Top {
        update_id: diff.final_update_id,
        bid: book.best_bid(),
        ask: book.best_ask(),
    }
}

/// Feeds recorded lines, in time order, through the parser and per-symbol sync machines.
pub struct Replayer {
    forced: Option<Rules>,
    path_rules: Option<Rules>,
    cfg: SyncConfig,
    names: Vec<String>,
    symbols: BTreeMap<String, SymbolState>,
    unattributed_snapshot: Option<DepthSnapshot>,
    errors: FrameErrorCounter,
    depth: DepthUpdate,
    report: ReplayReport,
}

impl Replayer {
    /// A replayer; `rules` forces the rules for every symbol, `None` detects them per symbol.
    pub fn new(rules: Option<Rules>, cfg: SyncConfig) -> Self {
        Self {
            forced: rules,
            path_rules: None,
            cfg,
            names: Vec::new(),
            symbols: BTreeMap::new(),
            unattributed_snapshot: None,
            errors: FrameErrorCounter::new(),
            depth: DepthUpdate::default(),
            report: ReplayReport::default(),
        }
    }

    /// Registers an input name (file path) for the report and the symbol/rules hints.
    pub fn add_input_name(&mut self, name: &str) {
        if self.path_rules.is_none() {
            self.path_rules = rules_from_path(Path::new(name));
        }
        self.names.push(name.to_owned());
        self.report.inputs.push(name.to_owned());
    }

    fn malformed(&mut self, kind: &'static str) {
        // Replay has no wall clock; the counter's logging gate is irrelevant here.
        self.errors.record_kind(kind, 0);
    }

    fn symbol(&mut self, name: &str) -> &mut SymbolState {
        if !self.symbols.contains_key(name) {
            let mut state = SymbolState::new(name);
            if let Some(snap) = self.unattributed_snapshot.take() {
                state.pending_snapshot = Some(snap);
            }
            self.symbols.insert(name.to_owned(), state);
        }
        self.symbols
            .get_mut(name)
            .expect("symbol state inserted just above")
    }

    /// Processes one recorded line (lines must come in merged time order).
    pub fn push_line(&mut self, line: &str) {
        self.report.lines += 1;
        if line.trim().is_empty() {
            return;
        }
        match parse_line(line) {
            Err(LineFormatError) => self.malformed("line_format"),
            Ok((_, LineRecord::Metadata)) => {}
            Ok((_, LineRecord::Connected)) => self.report.connections += 1,
            Ok((_, LineRecord::Sent)) => self.report.sent += 1,
            Ok((_, LineRecord::Rest { url, body })) => {
                self.report.rest_responses += 1;
                if let Some(sym) = depth_url_symbol(url) {
                    match parse_depth_snapshot(body) {
                        Ok(snap) => {
                            let sym = sym.to_ascii_uppercase();
                            self.symbol(&sym).deliver_snapshot(snap);
                        }
                        Err(e) => self.malformed(e.kind()),
                    }
                }
            }
            Ok((_, LineRecord::Received(payload))) => self.on_frame(payload),
        }
    }

    fn on_frame(&mut self, payload: &str) {
        use super::binance::wire::BinanceEvent as E;
        self.report.frames += 1;
        let mut depth = std::mem::take(&mut self.depth);
        match parse_frame_reusing(payload, &mut depth) {
            Err(e) => self.malformed(e.kind()),
            Ok(Parsed::Depth) => {
                let (forced, cfg) = (self.forced, self.cfg);
                self.symbol(&depth.symbol.clone())
                    .on_diff(&depth, forced, cfg);
            }
            Ok(Parsed::Other(ev)) => match ev {
                E::Trade(t) => self.symbol(&t.symbol).on_trade(t.id, false),
                E::AggTrade(t) => self.symbol(&t.symbol).on_trade(t.id, true),
                E::BookTicker(t) => self.symbol(&t.symbol).on_book_ticker(&t),
                E::Ticker(t) => self.symbol(&t.symbol).report.other_events += 1,
                E::Kline(k) => self.symbol(&k.symbol).report.other_events += 1,
                E::PartialDepth {
                    symbol: Some(sym), ..
                } => self.symbol(&sym).report.other_events += 1,
                E::PartialDepth {
                    symbol: None,
                    snapshot,
                } => self.on_bare_snapshot(snapshot),
                E::Ack(_) | E::Error(_) | E::Shutdown { .. } => self.report.control_messages += 1,
                // parse_frame_reusing reports diffs as Parsed::Depth; handled alike regardless.
                E::Depth(d) => {
                    let (forced, cfg) = (self.forced, self.cfg);
                    self.symbol(&d.symbol).on_diff(&d, forced, cfg);
                }
            },
        }
        self.depth = depth;
    }

    /// A bare `{"lastUpdateId":..}` line: the REST snapshot of an hftbacktest recording.
    fn on_bare_snapshot(&mut self, snapshot: DepthSnapshot) {
        let target = if self.symbols.len() == 1 {
            self.symbols.keys().next().cloned()
        } else {
            let names: Vec<String> = self.names.iter().map(|n| n.to_ascii_lowercase()).collect();
            let mut matching = self.symbols.keys().filter(|s| {
                let s = s.to_ascii_lowercase();
                names.iter().any(|n| n.contains(&s))
            });
            match (matching.next(), matching.next()) {
                (Some(one), None) => Some(one.clone()),
                _ => None,
            }
        };
        match target {
            Some(sym) => self.symbol(&sym).deliver_snapshot(snapshot),
            None if self.symbols.is_empty() => self.unattributed_snapshot = Some(snapshot),
            None => self.malformed("snapshot_symbol_unknown"),
        }
    }

    /// Ends the replay and builds the report.
    pub fn finish(mut self) -> ReplayReport {
        if self.unattributed_snapshot.is_some() {
            self.malformed("snapshot_symbol_unknown");
        }
        let path_rules = self.path_rules;
        self.report.symbols = std::mem::take(&mut self.symbols)
            .into_iter()
            .map(|(k, v)| (k, v.finish(path_rules)))
            .collect();
        self.report.malformed = self.errors.counts();
        self.report
    }
}

/// A named line source for [`replay_readers`].
pub struct ReplayInput {
    /// Name shown in the report (usually the path); also used for rules and symbol hints.
    pub name: String,
    /// The lines (already decompressed).
    pub reader: Box<dyn BufRead>,
}

struct Cursor {
    input: ReplayInput,
    /// Next line and its merge key (the last known time for lines without one).
    next: Option<(i64, String)>,
    last_ns: i64,
    invalid_utf8: u64,
}

impl Cursor {
    fn advance(&mut self) -> Result<(), ReplayError> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = self
                .input
                .reader
                .read_until(b'\n', &mut buf)
                .map_err(|source| ReplayError::Io {
                    path: PathBuf::from(&self.input.name),
                    source,
                })?;
            if n == 0 {
                self.next = None;
                return Ok(());
            }
            match String::from_utf8(std::mem::take(&mut buf)) {
                Ok(line) => {
                    if let Ok((Some(ns), _)) = parse_line(&line) {
                        self.last_ns = ns;
                    }
                    self.next = Some((self.last_ns, line));
                    return Ok(());
                }
                Err(_) => self.invalid_utf8 += 1,
            }
        }
    }
}

/// Replays already-opened inputs, merged by local receive time.
pub fn replay_readers(
    inputs: Vec<ReplayInput>,
    rules: Option<Rules>,
    cfg: SyncConfig,
) -> Result<ReplayReport, ReplayError> {
    if inputs.is_empty() {
        return Err(ReplayError::NoInput);
    }
    let mut replayer = Replayer::new(rules, cfg);
    let mut cursors = Vec::with_capacity(inputs.len());
    for input in inputs {
        replayer.add_input_name(&input.name);
        let mut c = Cursor {
            input,
            next: None,
            last_ns: i64::MIN,
            invalid_utf8: 0,
        };
        c.advance()?;
        cursors.push(c);
    }
    loop {
        // Few inputs: a linear scan beats a heap; ties go to the earlier input.
        let pick = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.next.as_ref().map(|(t, _)| (*t, i)))
            .min();
        let Some((_, i)) = pick else { break };
        if let Some((_, line)) = cursors[i].next.take() {
            replayer.push_line(&line);
        }
        cursors[i].advance()?;
    }
    for c in &cursors {
        for _ in 0..c.invalid_utf8 {
            replayer.malformed("encoding");
        }
    }
    Ok(replayer.finish())
}

/// Opens a recording, transparently decompressing gzip (detected by its magic bytes).
pub fn open_recording(path: &Path) -> Result<ReplayInput, ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let is_gzip = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn BufRead> = if is_gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            Box::new(MultiGzDecoder::new(file)) as Box<dyn Read>,
        ))
    } else {
        Box::new(file)
    };
    Ok(ReplayInput {
        name: path.display().to_string(),
        reader,
    })
}

/// Replays recorded session files (hftbacktest or cryptofeed; several merged by local time).
/// `rules` forces spot or futures rules; `None` detects them per symbol (see module docs).
pub fn replay_file<P: AsRef<Path>>(
    paths: &[P],
    rules: Option<Rules>,
) -> Result<ReplayReport, ReplayError> {
    let inputs = paths
        .iter()
        .map(|p| open_recording(p.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    replay_readers(inputs, rules, SyncConfig::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::types::{Price, Qty};

    #[test]
    fn classifies_both_line_formats() {
        assert_eq!(
            parse_line("1723161254087891268 {\"u\":1}").unwrap(),
            (Some(1723161254087891268), LineRecord::Received("{\"u\":1}"))
        );
        assert_eq!(
            parse_line("1633998512.0633569: {\"a\":1}\n").unwrap(),
            (Some(1633998512063356900), LineRecord::Received("{\"a\":1}"))
        );
        assert_eq!(
            parse_line("wss://x/stream?streams=a@depth <-> 1633998511.159679").unwrap(),
            (Some(1633998511159679000), LineRecord::Connected)
        );
        assert_eq!(
            parse_line("wss://x <- 1618677817.020616: {\"method\":\"SUBSCRIBE\"}")
                .unwrap()
                .1,
            LineRecord::Sent
        );
        assert_eq!(
            parse_line("https://api/api/v3/depth?symbol=NKNUSDT&limit=1000 -> 1633998512.5: {}")
                .unwrap()
                .1,
            LineRecord::Rest {
                url: "https://api/api/v3/depth?symbol=NKNUSDT&limit=1000",
                body: "{}"
            }
        );
        assert_eq!(
            parse_line("configuration: {}").unwrap().1,
            LineRecord::Metadata
        );
        assert!(parse_line("garbage").is_err());
        assert!(parse_line("12x: {}").is_err());
        assert_eq!(
            depth_url_symbol("https://fapi.binance.com/fapi/v1/depth?symbol=AKROUSDT&limit=1000"),
            Some("AKROUSDT")
        );
        assert_eq!(depth_url_symbol("https://api/api/v3/exchangeInfo"), None);
    }

    fn frame(u_first: u64, u_last: u64, bid: &str, ask: &str) -> String {
        format!(
            r#"{{"stream":"abcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":{u_first},"u":{u_last},"b":[["{bid}","1"]],"a":[["{ask}","2"]]}}}}"#
        )
    }

    #[test]
    fn replays_lines_with_late_snapshot_and_checkpoints() {
        let lines = [
            format!("1 {}", frame(5, 7, "9", "12")),
            r#"2 {"stream":"abcusdt@bookTicker","data":{"u":9,"s":"ABCUSDT","b":"10","B":"1","a":"11","A":"2"}}"#.to_owned(),
            r#"3 {"lastUpdateId":6,"bids":[["9","3"]],"asks":[["12","4"]]}"#.to_owned(),
            format!("4 {}", frame(8, 9, "10", "11")),
            r#"5 {"stream":"abcusdt@trade","data":{"e":"trade","E":1,"s":"ABCUSDT","t":7,"p":"10","q":"1","T":1,"m":true}}"#.to_owned(),
            "6 {broken".to_owned(),
        ];
        let mut r = Replayer::new(None, SyncConfig::default());
        r.add_input_name("mem");
        for l in &lines {
            r.push_line(l);
        }
        let rep = r.finish();
        let s = &rep.symbols["ABCUSDT"];
        assert_eq!(s.rules, Some(Rules::Spot));
        assert!(s.synced);
        assert_eq!((s.sync.applied, s.sync.dropped), (2, 0));
        assert_eq!((s.checkpoints_checked, s.checkpoints_matched), (1, 1));
        assert_eq!(s.trades, 1);
        assert_eq!(
            s.best_bid,
            Some(Level {
                price: Price::from_units(10),
                qty: Qty::from_units(1)
            })
        );
        assert_eq!(rep.malformed_count("json"), 1);
        let text = rep.to_string();
        assert!(text.contains("ABCUSDT [spot] synced"), "{text}");
        assert!(text.contains("checkpoints matched 1 of 1"), "{text}");
    }

    #[test]
    fn merges_inputs_by_time_and_reports_mismatch() {
        let ws = format!(
            "wss://s <-> 1.0\n1.1: {}\n1.3: {}\n1.4: {}\n",
            frame(5, 7, "9", "12"),
            frame(8, 9, "10", "11"),
            r#"{"stream":"abcusdt@bookTicker","data":{"u":9,"s":"ABCUSDT","b":"10","B":"5","a":"11","A":"2"}}"#
        );
        let http = "https://api/api/v3/depth?symbol=ABCUSDT&limit=10 -> 1.2: \
                    {\"lastUpdateId\":7,\"bids\":[],\"asks\":[]}\n";
        let inputs = vec![
            ReplayInput {
                name: "X.ws".into(),
                reader: Box::new(std::io::Cursor::new(ws.into_bytes())),
            },
            ReplayInput {
                name: "X.http".into(),
                reader: Box::new(std::io::Cursor::new(http.as_bytes().to_vec())),
            },
        ];
        let rep = replay_readers(inputs, None, SyncConfig::default()).unwrap();
        let s = &rep.symbols["ABCUSDT"];
        assert_eq!((s.sync.applied, s.sync.dropped), (1, 1));
        assert_eq!((s.checkpoints_checked, s.checkpoints_matched), (1, 0));
        assert_eq!(s.mismatches[0].update_id, 9);
        assert_eq!(rep.connections, 1);
        assert_eq!(rep.rest_responses, 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec(".{0,200}", 0..20)) {
            let mut r = Replayer::new(None, SyncConfig::default());
            r.add_input_name("fuzz");
            for l in &lines {
                let _ = parse_line(l);
                r.push_line(l);
            }
            let rep = r.finish();
            proptest::prop_assert_eq!(rep.lines, lines.len() as u64);
        }
    }

    #[test]
    fn path_hint_detects_futures() {
        assert_eq!(
            rules_from_path(Path::new("/x/usdm_btcusdt_20240808.gz")),
            Some(Rules::Futures)
        );
        assert_eq!(
            rules_from_path(Path::new("BINANCE_FUTURES.ws.1.0")),
            Some(Rules::Futures)
        );
        assert_eq!(rules_from_path(Path::new("spot_btcusdt.gz")), None);
    }
}
