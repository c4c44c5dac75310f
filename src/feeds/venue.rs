//! The connector abstraction: a per-exchange protocol trait (subscriptions, frame parsing,
//! keepalive, resync), the per-symbol book-integrity state machine, and a session that drives
//! any protocol without I/O (the websocket runner and raw replay both use it). Pure logic.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use super::normalized::{
    BookData, IntegrityError, LevelText, NormEvent, NumberError, SeqInfo, Venue,
};
use crate::market::book::{OrderBook, validate_level};
use crate::market::types::{Level, Price, Qty, Side};

/// One websocket frame as received.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame (MEXC protobuf, HTX gzip).
    Binary(&'a [u8]),
}

/// Why a frame could not be turned into events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VenueError {
    /// Not valid JSON, or JSON of an unexpected shape.
    #[error("malformed json: {0}")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("missing or invalid field {0}")]
    Field(&'static str),
    /// A price or quantity that cannot be represented exactly.
    #[error("bad number in {field}: {source}")]
    Number {
        /// Which field.
        field: &'static str,
        /// What was wrong.
        source: NumberError,
    },
    /// A compressed frame that does not decompress.
    #[error("bad gzip frame: {0}")]
    Gzip(String),
    /// A binary frame that is not the expected protobuf message.
    #[error("bad protobuf frame: {0}")]
    Protobuf(String),
    /// A frame type the exchange never sends on this channel (text vs binary).
    #[error("unexpected {0} frame")]
    FrameType(&'static str),
    /// The exchange reported an error.
    #[error("exchange error: {0}")]
    Exchange(String),
    /// A channel id or symbol the session never subscribed to.
    #[error("unknown channel or symbol {0}")]
    UnknownChannel(String),
    /// The per-connection sequence skipped (Bitfinex `SEQ_ALL`): every book must resync.
    #[error("connection sequence gap: expected {expected}, got {got}")]
    ConnectionGap {
        /// Expected sequence.
        expected: u64,
        /// Received sequence.
        got: u64,
    },
}

impl VenueError {
    /// Short category for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            VenueError::Json(_) => "json",
            VenueError::Field(_) => "field",
            VenueError::Number { .. } => "number",
            VenueError::Gzip(_) => "gzip",
            VenueError::Protobuf(_) => "protobuf",
            VenueError::FrameType(_) => "frame_type",
            VenueError::Exchange(_) => "exchange_error",
            VenueError::UnknownChannel(_) => "unknown_channel",
            VenueError::ConnectionGap { .. } => "connection_gap",
        }
    }

    /// Wraps a number error with its field.
    pub fn number(field: &'static str) -> impl FnOnce(NumberError) -> VenueError {
        move |source| VenueError::Number { field, source }
    }
}

/// Where a book's starting image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    /// The stream itself sends a snapshot after subscribing (Kraken, Coinbase, Bybit, HTX step0, Bitfinex).
    InBand,
    /// A REST request (Binance, MEXC, KuCoin): deltas are buffered until it arrives.
    Rest,
}

/// Checksum algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// No checksum.
    None,
    /// Kraken: CRC32 over the top 10 asks then bids, `price qty` as written without `.` and leading zeros.
    KrakenTop10,
    /// Bitfinex: CRC32 over 25 interleaved `price:amount` pairs (asks negative), signed.
    BitfinexTop25,
}

/// How one exchange's books are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookRules {
    /// Snapshot source.
    pub snapshot: SnapshotSource,
    /// Checksum algorithm.
    pub checksum: ChecksumKind,
    /// Keep only this many levels per side (Kraken sends no deletes for levels pushed out).
    pub depth_limit: Option<usize>,
    /// Most deltas buffered while waiting for a REST snapshot.
    pub max_buffered: usize,
    /// A crossed book after an update is an integrity failure (exchanges without sequence numbers).
    pub crossed_is_failure: bool,
}

impl Default for BookRules {
    fn default() -> Self {
        Self {
            snapshot: SnapshotSource::InBand,
            checksum: ChecksumKind::None,
            depth_limit: None,
            max_buffered: 10_000,
            crossed_is_failure: false,
        }
    }
}

/// What happened to one book message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Applied; the book is in sync.
    Applied,
    /// Older than the book (or arrived before any snapshot on an in-band venue): dropped.
    Stale,
    /// Held until the REST snapshot arrives.
    Buffered,
    /// The first delta was buffered: a REST snapshot is needed.
    NeedSnapshot,
    /// The book is discarded; it must be resynced.
    Resync(IntegrityError),
}

/// Counters of one book.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BookStats {
    /// Messages applied.
    pub applied: u64,
    /// Messages dropped as stale.
    pub stale: u64,
    /// Integrity failures (each followed by a resync).
    pub failures: u64,
    /// Checksums verified.
    pub checksums_ok: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Checksums the exchange sent that could not be computed locally (Kraken without the
    /// instrument's precision): integrity warnings, the book is unverified.
    pub checksums_unverified: u64,
}

/// The wire text of every level a checksum needs (Bitfinex), kept in step with the book.
#[derive(Debug, Clone, Default)]
struct WireTexts {
    bids: HashMap<Price, (String, String)>,
    asks: HashMap<Price, (String, String)>,
}

impl WireTexts {
    fn side(&self, side: Side) -> &HashMap<Price, (String, String)> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut HashMap<Price, (String, String)> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// Follows one book message: every level it names loses its old text, then the texts it
    /// carries (set levels only) are recorded.
    fn apply(&mut self, d: &BookData) {
        if d.texts.is_empty() && self.bids.is_empty() && self.asks.is_empty() {
            return;
        }
        for l in &d.bids {
            self.bids.remove(&l.price);
        }
        for l in &d.asks {
            self.asks.remove(&l.price);
        }
        for t in &d.texts {
            let LevelText {
                side,
                price,
                price_text,
                amount_text,
            } = t;
            self.side_mut(*side)
                .insert(*price, (price_text.clone(), amount_text.clone()));
        }
    }

    /// Price and amount text of a level: as sent when known, else formatted from the value.
    fn fields(&self, side: Side, l: &Level) -> (Cow<'_, str>, Cow<'_, str>) {
        match self.side(side).get(&l.price) {
            Some((p, a)) => (Cow::Borrowed(p.as_str()), Cow::Borrowed(a.as_str())),
            None => (
                Cow::Owned(l.price.to_string()),
                Cow::Owned(match side {
                    Side::Buy => l.qty.to_string(),
                    Side::Sell => format!("-{}", l.qty),
                }),
            ),
        }
    }
}

/// The book-integrity state machine for one symbol on one exchange.
#[derive(Debug, Clone)]
pub struct VenueBook {
    rules: BookRules,
    book: OrderBook,
    synced: bool,
    /// Id of the last applied message (its `last`/`seq`), when the exchange numbers messages.
    last_id: Option<u64>,
    buffer: VecDeque<BookData>,
    decimals: Option<(u32, u32)>,
    texts: WireTexts,
    /// Set by a REST snapshot until the first delta lands: a `pu`-linked stream (Binance
    /// futures) may start with a delta whose predecessor is older than the snapshot.
    bridging: bool,
    stats: BookStats,
}

impl VenueBook {
    /// An empty, unsynced book.
    pub fn new(rules: BookRules) -> Self {
        Self {
            rules,
            book: OrderBook::new(),
            synced: false,
            last_id: None,
            buffer: VecDeque::new(),
            decimals: None,
            texts: WireTexts::default(),
            bridging: false,
            stats: BookStats::default(),
        }
    }

    /// The book, only while in sync.
    pub fn synced_book(&self) -> Option<&OrderBook> {
        self.synced.then_some(&self.book)
    }

    /// True while in sync.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Counters.
    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// Deltas waiting for a snapshot.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Drops the book (after a disconnect or a failure); the next snapshot starts it again.
    pub fn reset(&mut self) {
        self.book.clear();
        self.synced = false;
        self.last_id = None;
        self.buffer.clear();
        self.texts.clear();
        self.bridging = false;
    }

    fn fail(&mut self, error: IntegrityError) -> Verdict {
        self.stats.failures += 1;
        self.reset();
        Verdict::Resync(error)
    }

    /// A full image. In-band snapshots replace the book at once; a REST snapshot is aligned
    /// with the buffered deltas (those it already contains are dropped, the rest applied in order).
    pub fn on_snapshot(&mut self, snap: &BookData) -> Verdict {
        if let Err(e) = check_levels(snap) {
            return self.fail(e);
        }
        let id = match snap.seq {
            SeqInfo::None => None,
            SeqInfo::Range { last, .. } => Some(last),
            SeqInfo::Linked { seq, .. } => Some(seq),
            SeqInfo::Single(s) => Some(s),
        };
        if self.rules.snapshot == SnapshotSource::Rest
            && let (Some(snap_id), Some(first)) =
                (id, self.buffer.front().map(|d| first_id(&d.seq)))
            && first.is_some_and(|f| f > snap_id.saturating_add(1))
        {
            // Older than the stream: fetch again, keep buffering.
            let first = first.unwrap_or_default();
            self.stats.failures += 1;
            return Verdict::Resync(IntegrityError::SnapshotTooOld {
                snapshot: snap_id,
                first,
            });
        }
        self.book
            .apply_snapshot(&snap.bids, &snap.asks, id.unwrap_or(0));
        self.last_id = id;
        self.decimals = snap.decimals.or(self.decimals);
        self.texts.clear();
        self.texts.apply(snap);
        self.bridging = self.rules.snapshot == SnapshotSource::Rest;
        self.synced = true;
        self.stats.snapshots += 1;
        self.truncate();
        if let Some(v) = self.verify(snap.checksum) {
            return v;
        }
        let buffered: Vec<BookData> = self.buffer.drain(..).collect();
        for d in &buffered {
            if let Verdict::Resync(e) = self.on_delta(d) {
                return Verdict::Resync(e);
            }
        }
        Verdict::Applied
    }

    /// One delta: checked against the sequence, applied, then checked against the checksum.
    pub fn on_delta(&mut self, d: &BookData) -> Verdict {
        if !self.synced {
            if self.rules.snapshot == SnapshotSource::InBand {
                self.stats.stale += 1;
                return Verdict::Stale;
            }
            if self.buffer.len() >= self.rules.max_buffered {
                return self.fail(IntegrityError::BufferOverflow);
            }
            self.buffer.push_back(d.clone());
            return if self.buffer.len() == 1 {
                Verdict::NeedSnapshot
            } else {
                Verdict::Buffered
            };
        }
        let next_id = match (d.seq, self.last_id) {
            (SeqInfo::None, _) => None,
            (SeqInfo::Range { first, last }, Some(id)) => {
                if last <= id {
                    self.stats.stale += 1;
                    return Verdict::Stale;
                }
                if first > id.saturating_add(1) {
                    return self.fail(IntegrityError::Gap {
                        expected: id.saturating_add(1),
                        got: first,
                    });
                }
                Some(last)
            }
            (SeqInfo::Linked { prev, seq }, Some(id)) => {
                if seq <= id {
                    self.stats.stale += 1;
                    return Verdict::Stale;
                }
                // The first delta after a REST snapshot only has to straddle it.
                let bridges = self.bridging && prev < id;
                if prev != id && !bridges {
                    return self.fail(IntegrityError::Gap {
                        expected: id,
                        got: prev,
                    });
                }
                Some(seq)
            }
            (SeqInfo::Single(s), Some(id)) => {
                if s <= id {
                    self.stats.stale += 1;
                    return Verdict::Stale;
                }
                if s != id.saturating_add(1) {
                    return self.fail(IntegrityError::Gap {
                        expected: id.saturating_add(1),
                        got: s,
                    });
                }
                Some(s)
            }
            // A numbered delta on a book whose snapshot had no id: adopt the numbering.
            (SeqInfo::Range { last, .. }, None) => Some(last),
            (SeqInfo::Linked { seq, .. }, None) | (SeqInfo::Single(seq), None) => Some(seq),
        };
        if let Err(e) = check_levels(d) {
            return self.fail(e);
        }
        for l in &d.bids {
            self.book.apply_level(Side::Buy, l.price, l.qty);
        }
        for l in &d.asks {
            self.book.apply_level(Side::Sell, l.price, l.qty);
        }
        self.texts.apply(d);
        self.bridging = false;
        if let Some(id) = next_id {
            self.last_id = Some(id);
            self.book.last_update_id = id;
        }
        self.truncate();
        if let Some(v) = self.verify(d.checksum) {
            return v;
        }
        if self.rules.crossed_is_failure && self.book.is_crossed() {
            return self.fail(IntegrityError::Crossed);
        }
        self.stats.applied += 1;
        Verdict::Applied
    }

    /// A checksum sent on its own (Bitfinex): verified against the current book.
    pub fn on_checksum(&mut self, checksum: u32) -> Verdict {
        if !self.synced {
            return Verdict::Stale;
        }
        self.verify(Some(checksum)).unwrap_or(Verdict::Applied)
    }

    /// The local checksum of the current book with this exchange's algorithm.
    pub fn local_checksum(&self) -> Option<u32> {
        match self.rules.checksum {
            ChecksumKind::None => None,
            ChecksumKind::KrakenTop10 => {
                let (pd, qd) = self.decimals?;
                Some(kraken_checksum(&self.book, pd, qd))
            }
            ChecksumKind::BitfinexTop25 => Some(bitfinex_checksum_over(&self.book, &self.texts)),
        }
    }

    fn verify(&mut self, expected: Option<u32>) -> Option<Verdict> {
        let expected = expected?;
        let Some(computed) = self.local_checksum() else {
            // Not silently passed: the book is unverified until the missing input arrives.
            if self.rules.checksum != ChecksumKind::None {
                self.stats.checksums_unverified += 1;
            }
            return None;
        };
        if computed == expected {
            self.stats.checksums_ok += 1;
            None
        } else {
            Some(self.fail(IntegrityError::Checksum { expected, computed }))
        }
    }

    fn truncate(&mut self) {
        let Some(limit) = self.rules.depth_limit else {
            return;
        };
        for side in [Side::Buy, Side::Sell] {
            if self.book.depth(side) > limit {
                let extra: Vec<Price> = self
                    .book
                    .levels(side)
                    .skip(limit)
                    .map(|l| l.price)
                    .collect();
                for p in extra {
                    self.book.apply_level(side, p, Qty::ZERO);
                    self.texts.side_mut(side).remove(&p);
                }
            }
        }
    }
}

fn first_id(seq: &SeqInfo) -> Option<u64> {
    match *seq {
        SeqInfo::None => None,
        SeqInfo::Range { first, .. } => Some(first),
        SeqInfo::Linked { prev, .. } => Some(prev.saturating_add(1)),
        SeqInfo::Single(s) => Some(s),
    }
}

fn check_levels(d: &BookData) -> Result<(), IntegrityError> {
    for (side, levels) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
        for l in levels {
            validate_level(side, l).map_err(|e| IntegrityError::BadLevel(e.to_string()))?;
        }
    }
    Ok(())
}

fn kraken_field(value: i64, decimals: u32) -> String {
    // Kraken may write more decimals than the fixed-point scale (trailing zeros only).
    let mut text = format!("{:.*}", decimals.min(8) as usize, Price(value));
    for _ in 8..decimals {
        text.push('0');
    }
    let digits: String = text.chars().filter(|c| *c != '.').collect();
    digits.trim_start_matches('0').to_string()
}

/// Kraken's CRC32 over the top 10 asks (low→high) then bids (high→low), each level as
/// price then quantity written with the pair's decimals, without `.` and leading zeros.
pub fn kraken_checksum(book: &OrderBook, price_decimals: u32, qty_decimals: u32) -> u32 {
    let mut s = String::with_capacity(400);
    for side in [Side::Sell, Side::Buy] {
        for l in book.levels(side).take(10) {
            s.push_str(&kraken_field(l.price.raw(), price_decimals));
            s.push_str(&kraken_field(l.qty.raw(), qty_decimals));
        }
    }
    crc32fast::hash(s.as_bytes())
}

/// Bitfinex's checksum over 25 interleaved `bid_price:bid_amount:ask_price:-ask_amount` entries,
/// as the unsigned bits of Bitfinex's signed value, with numbers formatted from the book's
/// values (a book kept by [`VenueBook`] uses the text Bitfinex sent instead).
pub fn bitfinex_checksum(book: &OrderBook) -> u32 {
    bitfinex_checksum_over(book, &WireTexts::default())
}

fn bitfinex_checksum_over(book: &OrderBook, texts: &WireTexts) -> u32 {
    let bids: Vec<Level> = book.top(Side::Buy, 25);
    let asks: Vec<Level> = book.top(Side::Sell, 25);
    let mut parts: Vec<Cow<'_, str>> = Vec::with_capacity(100);
    for i in 0..25 {
        for (side, level) in [(Side::Buy, bids.get(i)), (Side::Sell, asks.get(i))] {
            if let Some(l) = level {
                let (p, a) = texts.fields(side, l);
                parts.push(p);
                parts.push(a);
            }
        }
    }
    crc32fast::hash(parts.join(":").as_bytes())
}

/// Application-level keepalive of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalive {
    /// Send `message` this often (and treat a socket silent for 3× this long as dead).
    pub interval: Duration,
    /// The ping text, None when the server pings (HTX) or websocket ping frames suffice.
    pub message: Option<String>,
}

impl Keepalive {
    /// A venue whose server pings (or whose data never pauses): only silence is watched.
    pub fn server_driven(interval: Duration) -> Self {
        Self {
            interval,
            message: None,
        }
    }
}

/// One exchange's websocket protocol: everything exchange-specific, without I/O.
pub trait VenueProtocol: Send {
    /// Which exchange.
    fn venue(&self) -> Venue;
    /// The exchange's symbol for a canonical id (`ETH/USDT` → `ETHUSDT`, `ETH-USDT`, …).
    fn exchange_symbol(&self, instrument: &str) -> String;
    /// Messages that subscribe trades and book for the instruments.
    fn subscribe(&mut self, instruments: &[String]) -> Vec<String>;
    /// Messages that make the exchange send a fresh book image for one instrument (in-band venues).
    fn resubscribe_book(&mut self, instrument: &str) -> Vec<String> {
        self.subscribe(&[instrument.to_string()])
    }
    /// Parses one frame into normalized events (appended to `out`).
    fn parse(&mut self, frame: Frame<'_>, out: &mut Vec<NormEvent>) -> Result<(), VenueError>;
    /// Client keepalive.
    fn keepalive(&self) -> Keepalive;
    /// How long an answer to a keepalive ping may take before the socket counts as dead
    /// (KuCoin's bullet-token `pingTimeout`); None: only the idle rule applies.
    fn ping_timeout(&self) -> Option<Duration> {
        None
    }
    /// Book rules.
    fn book_rules(&self) -> BookRules;
    /// REST URL of a depth snapshot (venues with [`SnapshotSource::Rest`]).
    fn snapshot_url(&self, _rest_base: &str, _instrument: &str) -> Option<String> {
        None
    }
    /// Parses a REST depth snapshot body.
    fn parse_snapshot(&self, instrument: &str, _body: &str) -> Result<BookData, VenueError> {
        Err(VenueError::UnknownChannel(format!(
            "{} has no REST snapshot for {instrument}",
            self.venue()
        )))
    }
    /// Forgets per-connection state (channel ids, connection sequence) before a reconnect.
    fn on_disconnect(&mut self) {}
    /// A REST endpoint to POST before every connection whose answer yields the websocket URL
    /// (KuCoin's public bullet token); None when the URL is fixed.
    fn connect_token_url(&self, _rest_base: &str) -> Option<String> {
        None
    }
    /// The websocket URL from the token answer of [`Self::connect_token_url`].
    fn ws_url_from_token(&self, _body: &str) -> Result<String, VenueError> {
        Err(VenueError::Field("connect token"))
    }
    /// The instrument a recorded REST snapshot URL was for (raw replay of captures).
    fn snapshot_instrument(&self, _url: &str) -> Option<String> {
        None
    }
}

/// What the session asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this text on the websocket.
    Send(String),
    /// Fetch a REST snapshot for this instrument and pass it to [`VenueSession::on_rest_snapshot`].
    FetchSnapshot(String),
    /// Drop the connection and reconnect (all books resync).
    Reconnect(String),
}

/// Output of one step of a session.
#[derive(Debug, Default)]
pub struct Step {
    /// Normalized events (trades, verified book messages, integrity failures, control).
    pub events: Vec<NormEvent>,
    /// Requests for the driver.
    pub actions: Vec<Action>,
    /// Instruments whose synced book changed in this step.
    pub books_changed: Vec<String>,
}

/// A protocol plus one integrity-checked book per instrument: the whole connector without I/O.
pub struct VenueSession {
    proto: Box<dyn VenueProtocol>,
    instruments: Vec<String>,
    books: BTreeMap<String, VenueBook>,
    errors: BTreeMap<&'static str, u64>,
    scratch: Vec<NormEvent>,
    /// Books are created for any instrument seen (replay of recordings).
    auto: bool,
}

impl VenueSession {
    /// A session for the instruments (canonical ids).
    pub fn new(proto: Box<dyn VenueProtocol>, instruments: Vec<String>) -> Self {
        let rules = proto.book_rules();
        let books = instruments
            .iter()
            .map(|i| (i.clone(), VenueBook::new(rules)))
            .collect();
        Self {
            proto,
            instruments,
            books,
            errors: BTreeMap::new(),
            scratch: Vec::new(),
            auto: false,
        }
    }

    /// A session that keeps a book for every instrument it sees (replaying recordings).
    pub fn open(proto: Box<dyn VenueProtocol>) -> Self {
        let mut s = Self::new(proto, Vec::new());
        s.auto = true;
        s
    }

    fn book_mut(&mut self, instrument: &str) -> Option<&mut VenueBook> {
        if self.auto && !self.books.contains_key(instrument) {
            self.instruments.push(instrument.to_string());
            self.books.insert(
                instrument.to_string(),
                VenueBook::new(self.proto.book_rules()),
            );
        }
        self.books.get_mut(instrument)
    }

    /// Instruments with a book, in id order.
    pub fn book_instruments(&self) -> impl Iterator<Item = &str> {
        self.books.keys().map(String::as_str)
    }

    /// The exchange.
    pub fn venue(&self) -> Venue {
        self.proto.venue()
    }

    /// The protocol.
    pub fn protocol(&self) -> &dyn VenueProtocol {
        self.proto.as_ref()
    }

    /// Subscribed instruments.
    pub fn instruments(&self) -> &[String] {
        &self.instruments
    }

    /// The synced book of an instrument.
    pub fn book(&self, instrument: &str) -> Option<&OrderBook> {
        self.books.get(instrument)?.synced_book()
    }

    /// The integrity state machine of an instrument.
    pub fn venue_book(&self, instrument: &str) -> Option<&VenueBook> {
        self.books.get(instrument)
    }

    /// Parse errors by kind.
    pub fn error_counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.errors
    }

    /// Messages to send right after connecting.
    pub fn on_connected(&mut self) -> Vec<String> {
        let list = self.instruments.clone();
        self.proto.subscribe(&list)
    }

    /// The connection was lost: every book resyncs.
    pub fn on_disconnected(&mut self) {
        self.proto.on_disconnect();
        for b in self.books.values_mut() {
            b.reset();
        }
    }

    /// Processes one frame. A parse error is counted and returned; the session stays usable.
    pub fn on_frame(&mut self, frame: Frame<'_>, step: &mut Step) -> Result<(), VenueError> {
        self.scratch.clear();
        let res = self.proto.parse(frame, &mut self.scratch);
        let events = std::mem::take(&mut self.scratch);
        for ev in events {
            self.route(ev, step);
        }
        if let Err(e) = res {
            *self.errors.entry(e.kind()).or_default() += 1;
            if let VenueError::ConnectionGap { .. } = e {
                step.actions.push(Action::Reconnect(e.to_string()));
            }
            return Err(e);
        }
        Ok(())
    }

    /// A REST snapshot arrived for an instrument.
    pub fn on_rest_snapshot(&mut self, snap: BookData, step: &mut Step) {
        let instrument = snap.instrument.clone();
        let Some(book) = self.book_mut(&instrument) else {
            return;
        };
        let verdict = book.on_snapshot(&snap);
        self.after_verdict(&instrument, verdict, step);
    }

    fn route(&mut self, ev: NormEvent, step: &mut Step) {
        match ev {
            NormEvent::BookSnapshot(d) => {
                let Some(book) = self.book_mut(&d.instrument) else {
                    return;
                };
                let v = book.on_snapshot(&d);
                let inst = d.instrument.clone();
                if v == Verdict::Applied {
                    step.events.push(NormEvent::BookSnapshot(d));
                }
                self.after_verdict(&inst, v, step);
            }
            NormEvent::BookDelta(d) => {
                let Some(book) = self.book_mut(&d.instrument) else {
                    return;
                };
                let v = book.on_delta(&d);
                let inst = d.instrument.clone();
                if v == Verdict::Applied {
                    step.events.push(NormEvent::BookDelta(d));
                }
                self.after_verdict(&inst, v, step);
            }
            NormEvent::BookChecksum {
                instrument,
                checksum,
            } => {
                let Some(book) = self.book_mut(&instrument) else {
                    return;
                };
                let v = book.on_checksum(checksum);
                self.after_verdict(&instrument, v, step);
            }
            NormEvent::Reply(text) => step.actions.push(Action::Send(text)),
            other => step.events.push(other),
        }
    }

    fn after_verdict(&mut self, instrument: &str, v: Verdict, step: &mut Step) {
        match v {
            Verdict::Applied => {
                if !step.books_changed.iter().any(|i| i == instrument) {
                    step.books_changed.push(instrument.to_string());
                }
            }
            Verdict::Stale | Verdict::Buffered => {}
            Verdict::NeedSnapshot => step
                .actions
                .push(Action::FetchSnapshot(instrument.to_string())),
            Verdict::Resync(error) => {
                step.events.push(NormEvent::Integrity {
                    instrument: instrument.to_string(),
                    error,
                });
                match self.proto.book_rules().snapshot {
                    SnapshotSource::Rest => step
                        .actions
                        .push(Action::FetchSnapshot(instrument.to_string())),
                    SnapshotSource::InBand => {
                        for m in self.proto.resubscribe_book(instrument) {
                            step.actions.push(Action::Send(m));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price::from_units(p),
            qty: Qty::from_units(q),
        }
    }

    fn data(seq: SeqInfo, bids: &[Level], asks: &[Level]) -> BookData {
        let mut d = BookData::new("ETH/USDT", seq);
        d.bids = bids.to_vec();
        d.asks = asks.to_vec();
        d
    }

    #[test]
    fn rest_snapshot_aligns_buffered_ranges() {
        let mut b = VenueBook::new(BookRules {
            snapshot: SnapshotSource::Rest,
            ..BookRules::default()
        });
        let r = |f, l| SeqInfo::Range { first: f, last: l };
        assert_eq!(
            b.on_delta(&data(r(5, 8), &[lv(99, 1)], &[])),
            Verdict::NeedSnapshot
        );
        assert_eq!(
            b.on_delta(&data(r(9, 12), &[lv(98, 2)], &[])),
            Verdict::Buffered
        );
        // Snapshot at 10: the first delta is already contained, the second straddles 11.
        let snap = data(SeqInfo::Single(10), &[lv(99, 5)], &[lv(101, 1)]);
        assert_eq!(b.on_snapshot(&snap), Verdict::Applied);
        let book = b.synced_book().unwrap();
        assert_eq!(book.best_bid().unwrap().qty, Qty::from_units(5));
        assert_eq!(book.depth(Side::Buy), 2);
        assert_eq!(b.stats().stale, 1);
        assert_eq!(
            b.on_delta(&data(r(13, 13), &[], &[lv(101, 0)])),
            Verdict::Applied
        );
        assert!(matches!(
            b.on_delta(&data(r(15, 16), &[], &[])),
            Verdict::Resync(IntegrityError::Gap {
                expected: 14,
                got: 15
            })
        ));
        assert!(b.synced_book().is_none());
    }

    #[test]
    fn snapshot_older_than_stream_is_refused() {
        let mut b = VenueBook::new(BookRules {
            snapshot: SnapshotSource::Rest,
            ..BookRules::default()
        });
        b.on_delta(&data(
            SeqInfo::Range {
                first: 20,
                last: 21,
            },
            &[],
            &[],
        ));
        assert!(matches!(
            b.on_snapshot(&data(SeqInfo::Single(10), &[lv(1, 1)], &[])),
            Verdict::Resync(IntegrityError::SnapshotTooOld { .. })
        ));
        assert_eq!(b.buffered(), 1, "buffer kept for the next snapshot");
    }

    #[test]
    fn linked_and_single_sequences() {
        let mut b = VenueBook::new(BookRules::default());
        assert_eq!(
            b.on_delta(&data(SeqInfo::Single(3), &[], &[])),
            Verdict::Stale
        );
        b.on_snapshot(&data(
            SeqInfo::Linked { prev: 0, seq: 100 },
            &[lv(10, 1)],
            &[lv(11, 1)],
        ));
        let l = |p, s| SeqInfo::Linked { prev: p, seq: s };
        assert_eq!(
            b.on_delta(&data(l(100, 101), &[lv(10, 2)], &[])),
            Verdict::Applied
        );
        assert_eq!(b.on_delta(&data(l(99, 100), &[], &[])), Verdict::Stale);
        assert!(matches!(
            b.on_delta(&data(l(102, 103), &[], &[])),
            Verdict::Resync(_)
        ));
        b.on_snapshot(&data(SeqInfo::Single(1), &[lv(10, 1)], &[]));
        assert_eq!(
            b.on_delta(&data(SeqInfo::Single(2), &[], &[])),
            Verdict::Applied
        );
        assert!(matches!(
            b.on_delta(&data(SeqInfo::Single(4), &[], &[])),
            Verdict::Resync(_)
        ));
    }

    #[test]
    fn bad_levels_crossed_books_and_depth_limits() {
        let mut b = VenueBook::new(BookRules {
            crossed_is_failure: true,
            depth_limit: Some(2),
            ..BookRules::default()
        });
        b.on_snapshot(&data(
            SeqInfo::None,
            &[lv(10, 1), lv(9, 1), lv(8, 1)],
            &[lv(11, 1)],
        ));
        assert_eq!(b.synced_book().unwrap().depth(Side::Buy), 2);
        assert!(matches!(
            b.on_delta(&data(SeqInfo::None, &[lv(12, 1)], &[])),
            Verdict::Resync(IntegrityError::Crossed)
        ));
        b.on_snapshot(&data(SeqInfo::None, &[lv(10, 1)], &[lv(11, 1)]));
        assert!(matches!(
            b.on_delta(&data(SeqInfo::None, &[lv(-1, 1)], &[])),
            Verdict::Resync(IntegrityError::BadLevel(_))
        ));
    }

    #[test]
    fn checksum_without_precision_is_an_integrity_warning() {
        let mut b = VenueBook::new(BookRules {
            checksum: ChecksumKind::KrakenTop10,
            ..BookRules::default()
        });
        let mut snap = data(SeqInfo::None, &[lv(10, 1)], &[lv(11, 1)]);
        snap.checksum = Some(7);
        assert_eq!(b.on_snapshot(&snap), Verdict::Applied);
        assert_eq!(b.on_checksum(7), Verdict::Applied);
        assert_eq!(b.stats().checksums_unverified, 2);
        assert_eq!(b.stats().checksums_ok, 0);
        // Once the precision is known the same book is verified (and a wrong value fails).
        snap.decimals = Some((0, 0));
        snap.checksum = Some(kraken_checksum(&b.book, 0, 0));
        assert_eq!(b.on_snapshot(&snap), Verdict::Applied);
        assert_eq!(b.stats().checksums_ok, 1);
        assert!(matches!(b.on_checksum(7), Verdict::Resync(_)));
        assert_eq!(b.stats().checksums_unverified, 2);
    }

    #[test]
    fn first_linked_delta_after_a_rest_snapshot_may_straddle_it() {
        let rules = BookRules {
            snapshot: SnapshotSource::Rest,
            ..BookRules::default()
        };
        let l = |p, s| SeqInfo::Linked { prev: p, seq: s };
        let mut b = VenueBook::new(rules);
        b.on_delta(&data(l(80, 120), &[lv(10, 1)], &[]));
        assert_eq!(
            b.on_snapshot(&data(SeqInfo::Single(100), &[], &[lv(11, 1)])),
            Verdict::Applied
        );
        assert_eq!(b.stats().applied, 1);
        // Later deltas must chain exactly.
        assert!(matches!(
            b.on_delta(&data(l(110, 130), &[], &[])),
            Verdict::Resync(IntegrityError::Gap { .. })
        ));
        // An in-band snapshot gives no such latitude.
        let mut inband = VenueBook::new(BookRules::default());
        inband.on_snapshot(&data(l(0, 100), &[lv(10, 1)], &[]));
        assert!(matches!(
            inband.on_delta(&data(l(80, 120), &[], &[])),
            Verdict::Resync(_)
        ));
    }

    #[test]
    fn bitfinex_checksum_uses_the_text_as_sent() {
        let mut b = VenueBook::new(BookRules {
            checksum: ChecksumKind::BitfinexTop25,
            ..BookRules::default()
        });
        let text = |side, p: i64, pt: &str, at: &str| LevelText {
            side,
            price: Price::from_units(p),
            price_text: pt.into(),
            amount_text: at.into(),
        };
        let mut snap = data(SeqInfo::None, &[lv(10, 1)], &[lv(11, 2)]);
        snap.texts = vec![
            text(Side::Buy, 10, "10", "1.0e0"),
            text(Side::Sell, 11, "11", "-2"),
        ];
        b.on_snapshot(&snap);
        assert_eq!(b.local_checksum(), Some(crc32fast::hash(b"10:1.0e0:11:-2")));
        // A delta replaces the level's text; a delete drops it.
        let mut d = data(SeqInfo::None, &[lv(10, 3)], &[lv(11, 0)]);
        d.texts = vec![text(Side::Buy, 10, "1e1", "3")];
        assert_eq!(b.on_delta(&d), Verdict::Applied);
        assert_eq!(b.local_checksum(), Some(crc32fast::hash(b"1e1:3")));
        assert_eq!(b.texts.asks.len(), 0);
    }

    #[test]
    fn kraken_checksum_formatting() {
        // The guide's example: price 45285.2 → "452852", qty 0.00100000 → "100000".
        assert_eq!(
            kraken_field(Price::parse("45285.2").unwrap().raw(), 1),
            "452852"
        );
        assert_eq!(
            kraken_field(Qty::parse("0.001").unwrap().raw(), 8),
            "100000"
        );
        let mut book = OrderBook::new();
        book.apply_snapshot(&[lv(10, 1)], &[lv(11, 2)], 0);
        assert_eq!(
            kraken_checksum(&book, 1, 2),
            crc32fast::hash(b"110200100100")
        );
        assert_eq!(bitfinex_checksum(&book), crc32fast::hash(b"10:1:11:-2"));
    }
}
