//! Column layouts of the four market datasets and their Arrow builders and decoders.
//!
//! Every row carries `session` (recording or import id) and `seq` (order within the session):
//! rows of one event share them, so a reader regroups rows into the events they came from and
//! orders events across datasets. Symbol and date are partition keys (folder names), not
//! columns. Prices and quantities are int64 scaled by 1e8.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::StorageError;
use crate::feeds::binance::wire::DepthSnapshot;
use crate::feeds::binance::wire::DepthUpdate;
use crate::market::types::{Candle, Level, Price, Qty, SCALE, Side, Trade};

/// One market dataset (a folder under `<root>/market`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// OHLCV candles (REST history pages and imports).
    Candles,
    /// Trades (stream, recovered over REST, imported).
    Trades,
    /// Depth diffs and snapshots, exactly as parsed.
    Book,
    /// Connection events, once-a-second ticks and other non-symbol events.
    Control,
}

impl Dataset {
    /// All datasets.
    pub const ALL: [Dataset; 4] = [
        Dataset::Candles,
        Dataset::Trades,
        Dataset::Book,
        Dataset::Control,
    ];

    /// Folder name.
    pub const fn name(self) -> &'static str {
        match self {
            Dataset::Candles => "candles",
            Dataset::Trades => "trades",
            Dataset::Book => "book",
            Dataset::Control => "control",
        }
    }

    /// True when the dataset is partitioned by symbol as well as date.
    pub const fn by_symbol(self) -> bool {
        !matches!(self, Dataset::Control)
    }

    /// The Arrow schema files of this dataset are written with.
    pub fn schema(self) -> SchemaRef {
        let scaled = |name: &str| {
            Field::new(name, DataType::Int64, false).with_metadata(std::collections::HashMap::from(
                [("scale".to_string(), SCALE.to_string())],
            ))
        };
        let list = |name: &str| {
            Field::new(
                name,
                DataType::List(Arc::new(Field::new("item", DataType::Int64, false))),
                false,
            )
            .with_metadata(std::collections::HashMap::from([(
                "scale".to_string(),
                SCALE.to_string(),
            )]))
        };
        let mut fields = vec![
            Field::new("session", DataType::UInt64, false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("recv_ms", DataType::Int64, true),
        ];
        match self {
            Dataset::Candles => fields.extend([
                Field::new("source", DataType::Utf8, false),
                Field::new("timeframe", DataType::Utf8, false),
                Field::new("open_time_ms", DataType::Int64, false),
                scaled("open"),
                scaled("high"),
                scaled("low"),
                scaled("close"),
                scaled("volume"),
                Field::new("trades", DataType::UInt64, false),
            ]),
            Dataset::Trades => fields.extend([
                Field::new("source", DataType::Utf8, false),
                Field::new("id", DataType::UInt64, false),
                Field::new("time_ms", DataType::Int64, false),
                scaled("price"),
                scaled("qty"),
                Field::new("taker_buy", DataType::Boolean, false),
                Field::new("complete", DataType::Boolean, true),
            ]),
            Dataset::Book => fields.extend([
                Field::new("kind", DataType::Utf8, false),
                Field::new("event_time_ms", DataType::Int64, true),
                Field::new("transaction_time_ms", DataType::Int64, true),
                Field::new("first_update_id", DataType::UInt64, true),
                Field::new("final_update_id", DataType::UInt64, false),
                Field::new("prev_final_update_id", DataType::UInt64, true),
                list("bid_price"),
                list("bid_qty"),
                list("ask_price"),
                list("ask_qty"),
            ]),
            Dataset::Control => fields.extend([
                Field::new("kind", DataType::Utf8, false),
                Field::new("symbol", DataType::Utf8, true),
                Field::new("timeframe", DataType::Utf8, true),
                Field::new("connects", DataType::UInt64, true),
                Field::new("retry_ms", DataType::Int64, true),
                Field::new("complete", DataType::Boolean, true),
                Field::new("text", DataType::Utf8, true),
                Field::new("detail", DataType::Utf8, true),
            ]),
        }
        let meta = [
            ("mmtrader.price_scale".to_string(), SCALE.to_string()),
            ("mmtrader.dataset".to_string(), self.name().to_string()),
        ];
        Arc::new(Schema::new(fields).with_metadata(std::collections::HashMap::from(meta)))
    }
}

/// Order key shared by every row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    /// Recording or import session id.
    pub session: u64,
    /// Event order within the session.
    pub seq: u64,
}

fn arrow_err(what: &'static str) -> impl FnOnce(arrow_schema::ArrowError) -> StorageError {
    move |source| StorageError::Arrow { what, source }
}

/// Builders for the columns every dataset starts with.
#[derive(Default)]
struct KeyCols {
    session: UInt64Builder,
    seq: UInt64Builder,
    recv_ms: Int64Builder,
}

impl KeyCols {
    fn push(&mut self, key: RowKey, recv_ms: Option<i64>) {
        self.session.append_value(key.session);
        self.seq.append_value(key.seq);
        self.recv_ms.append_option(recv_ms);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.session.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.recv_ms.finish()),
        ]
    }
}

/// Buffered candle rows.
#[derive(Default)]
pub struct CandleRows {
    key: KeyCols,
    source: StringBuilder,
    timeframe: StringBuilder,
    open_time: Int64Builder,
    open: Int64Builder,
    high: Int64Builder,
    low: Int64Builder,
    close: Int64Builder,
    volume: Int64Builder,
    trades: UInt64Builder,
    len: usize,
}

impl CandleRows {
    /// Appends one candle.
    pub fn push(
        &mut self,
        key: RowKey,
        recv_ms: Option<i64>,
        source: &str,
        timeframe: &str,
        c: &Candle,
    ) {
        self.key.push(key, recv_ms);
        self.source.append_value(source);
        self.timeframe.append_value(timeframe);
        self.open_time.append_value(c.open_time_ms);
        self.open.append_value(c.open.0);
        self.high.append_value(c.high.0);
        self.low.append_value(c.low.0);
        self.close.append_value(c.close.0);
        self.volume.append_value(c.volume.0);
        self.trades.append_value(c.trades);
        self.len += 1;
    }
}

/// Buffered trade rows.
#[derive(Default)]
pub struct TradeRows {
    key: KeyCols,
    source: StringBuilder,
    id: UInt64Builder,
    time: Int64Builder,
    price: Int64Builder,
    qty: Int64Builder,
    taker_buy: BooleanBuilder,
    complete: BooleanBuilder,
    len: usize,
}

impl TradeRows {
    /// Appends one trade; `complete` only for REST recovery pages.
    pub fn push(
        &mut self,
        key: RowKey,
        recv_ms: Option<i64>,
        source: &str,
        t: &Trade,
        complete: Option<bool>,
    ) {
        self.key.push(key, recv_ms);
        self.source.append_value(source);
        self.id.append_value(t.id);
        self.time.append_value(t.time_ms);
        self.price.append_value(t.price.0);
        self.qty.append_value(t.qty.0);
        self.taker_buy.append_value(t.taker_side == Side::Buy);
        self.complete.append_option(complete);
        self.len += 1;
    }
}

/// Buffered book rows (one per diff or snapshot; levels in list columns).
pub struct BookRows {
    key: KeyCols,
    kind: StringBuilder,
    event_time: Int64Builder,
    transaction_time: Int64Builder,
    first_update_id: UInt64Builder,
    final_update_id: UInt64Builder,
    prev_final_update_id: UInt64Builder,
    bid_price: ListBuilder<Int64Builder>,
    bid_qty: ListBuilder<Int64Builder>,
    ask_price: ListBuilder<Int64Builder>,
    ask_qty: ListBuilder<Int64Builder>,
    len: usize,
}

fn level_list() -> ListBuilder<Int64Builder> {
    ListBuilder::new(Int64Builder::new()).with_field(Field::new("item", DataType::Int64, false))
}

impl Default for BookRows {
    fn default() -> Self {
        Self {
            key: KeyCols::default(),
            kind: StringBuilder::new(),
            event_time: Int64Builder::new(),
            transaction_time: Int64Builder::new(),
            first_update_id: UInt64Builder::new(),
            final_update_id: UInt64Builder::new(),
            prev_final_update_id: UInt64Builder::new(),
            bid_price: level_list(),
            bid_qty: level_list(),
            ask_price: level_list(),
            ask_qty: level_list(),
            len: 0,
        }
    }
}

/// Book row kinds.
pub mod book_kind {
    /// A diff-depth event.
    pub const DIFF: &str = "diff";
    /// A REST depth snapshot.
    pub const SNAPSHOT: &str = "snapshot";
    /// A partial-depth stream push.
    pub const PARTIAL: &str = "partial";
}

impl BookRows {
    fn levels(&mut self, bids: &[Level], asks: &[Level]) {
        for (levels, p, q) in [
            (bids, &mut self.bid_price, &mut self.bid_qty),
            (asks, &mut self.ask_price, &mut self.ask_qty),
        ] {
            for l in levels {
                p.values().append_value(l.price.0);
                q.values().append_value(l.qty.0);
            }
            p.append(true);
            q.append(true);
        }
    }

    /// Appends a diff-depth event.
    pub fn push_diff(&mut self, key: RowKey, recv_ms: i64, d: &DepthUpdate) {
        self.key.push(key, Some(recv_ms));
        self.kind.append_value(book_kind::DIFF);
        self.event_time.append_value(d.event_time_ms);
        self.transaction_time.append_option(d.transaction_time_ms);
        self.first_update_id.append_value(d.first_update_id);
        self.final_update_id.append_value(d.final_update_id);
        self.prev_final_update_id
            .append_option(d.prev_final_update_id);
        self.levels(&d.bids, &d.asks);
        self.len += 1;
    }

    /// Appends a snapshot (`kind` is [`book_kind::SNAPSHOT`] or [`book_kind::PARTIAL`]).
    pub fn push_snapshot(&mut self, key: RowKey, recv_ms: i64, kind: &str, s: &DepthSnapshot) {
        self.key.push(key, Some(recv_ms));
        self.kind.append_value(kind);
        self.event_time.append_option(s.event_time_ms);
        self.transaction_time.append_option(s.transaction_time_ms);
        self.first_update_id.append_null();
        self.final_update_id.append_value(s.last_update_id);
        self.prev_final_update_id.append_null();
        self.levels(&s.bids, &s.asks);
        self.len += 1;
    }
}

/// One control row, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlRow {
    /// What happened (see [`control_kind`]).
    pub kind: &'static str,
    /// Symbol, when the event names one.
    pub symbol: Option<String>,
    /// Timeframe name, for an empty history page.
    pub timeframe: Option<String>,
    /// Connection count, for `connected`.
    pub connects: Option<u64>,
    /// Retry delay, for `disconnected`.
    pub retry_ms: Option<i64>,
    /// Last-page flag, for an empty trade recovery page.
    pub complete: Option<bool>,
    /// Main text (reason, error kind, what failed, JSON of instruments, description).
    pub text: Option<String>,
    /// Secondary text (log excerpt, error).
    pub detail: Option<String>,
}

/// Control row kinds.
pub mod control_kind {
    /// The websocket connected.
    pub const CONNECTED: &str = "connected";
    /// The websocket was lost.
    pub const DISCONNECTED: &str = "disconnected";
    /// The once-a-second step ran at `recv_ms`.
    pub const SECOND: &str = "second";
    /// A frame could not be parsed.
    pub const MALFORMED: &str = "malformed";
    /// A REST request failed.
    pub const REST_FAILED: &str = "rest_failed";
    /// Instrument rules (JSON in `text`).
    pub const INSTRUMENTS: &str = "instruments";
    /// A history page without candles.
    pub const HISTORY_EMPTY: &str = "history_empty";
    /// A trade recovery page without trades.
    pub const RECOVERED_EMPTY: &str = "recovered_empty";
    /// A message the market pipeline does not use (ticker, kline, ack...): description only.
    pub const OTHER: &str = "other";
}

/// Buffered control rows.
#[derive(Default)]
pub struct ControlRows {
    key: KeyCols,
    kind: StringBuilder,
    symbol: StringBuilder,
    timeframe: StringBuilder,
    connects: UInt64Builder,
    retry_ms: Int64Builder,
    complete: BooleanBuilder,
    text: StringBuilder,
    detail: StringBuilder,
    len: usize,
}

impl ControlRows {
    /// Appends one control row.
    pub fn push(&mut self, key: RowKey, recv_ms: i64, row: &ControlRow) {
        self.key.push(key, Some(recv_ms));
        self.kind.append_value(row.kind);
        self.symbol.append_option(row.symbol.as_deref());
        self.timeframe.append_option(row.timeframe.as_deref());
        self.connects.append_option(row.connects);
        self.retry_ms.append_option(row.retry_ms);
        self.complete.append_option(row.complete);
        self.text.append_option(row.text.as_deref());
        self.detail.append_option(row.detail.as_deref());
        self.len += 1;
    }
}

/// Buffered rows of any dataset.
pub enum Rows {
    /// Candle rows.
    Candles(Box<CandleRows>),
    /// Trade rows.
    Trades(Box<TradeRows>),
    /// Book rows.
    Book(Box<BookRows>),
    /// Control rows.
    Control(Box<ControlRows>),
}

impl Rows {
    /// Empty rows for a dataset.
    pub fn new(ds: Dataset) -> Self {
        match ds {
            Dataset::Candles => Rows::Candles(Box::default()),
            Dataset::Trades => Rows::Trades(Box::default()),
            Dataset::Book => Rows::Book(Box::default()),
            Dataset::Control => Rows::Control(Box::default()),
        }
    }

    /// Rows buffered.
    pub fn len(&self) -> usize {
        match self {
            Rows::Candles(r) => r.len,
            Rows::Trades(r) => r.len,
            Rows::Book(r) => r.len,
            Rows::Control(r) => r.len,
        }
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Turns the buffered rows into a batch and empties the buffer.
    pub fn finish(&mut self) -> Result<RecordBatch, StorageError> {
        let (ds, cols): (Dataset, Vec<ArrayRef>) = match self {
            Rows::Candles(r) => {
                r.len = 0;
                let mut c = r.key.finish();
                c.extend::<[ArrayRef; 9]>([
                    Arc::new(r.source.finish()),
                    Arc::new(r.timeframe.finish()),
                    Arc::new(r.open_time.finish()),
                    Arc::new(r.open.finish()),
                    Arc::new(r.high.finish()),
                    Arc::new(r.low.finish()),
                    Arc::new(r.close.finish()),
                    Arc::new(r.volume.finish()),
                    Arc::new(r.trades.finish()),
                ]);
                (Dataset::Candles, c)
            }
            Rows::Trades(r) => {
                r.len = 0;
                let mut c = r.key.finish();
                c.extend::<[ArrayRef; 7]>([
                    Arc::new(r.source.finish()),
                    Arc::new(r.id.finish()),
                    Arc::new(r.time.finish()),
                    Arc::new(r.price.finish()),
                    Arc::new(r.qty.finish()),
                    Arc::new(r.taker_buy.finish()),
                    Arc::new(r.complete.finish()),
                ]);
                (Dataset::Trades, c)
            }
            Rows::Book(r) => {
                r.len = 0;
                let mut c = r.key.finish();
                c.extend::<[ArrayRef; 10]>([
                    Arc::new(r.kind.finish()),
                    Arc::new(r.event_time.finish()),
                    Arc::new(r.transaction_time.finish()),
                    Arc::new(r.first_update_id.finish()),
                    Arc::new(r.final_update_id.finish()),
                    Arc::new(r.prev_final_update_id.finish()),
                    Arc::new(r.bid_price.finish()),
                    Arc::new(r.bid_qty.finish()),
                    Arc::new(r.ask_price.finish()),
                    Arc::new(r.ask_qty.finish()),
                ]);
                (Dataset::Book, c)
            }
            Rows::Control(r) => {
                r.len = 0;
                let mut c = r.key.finish();
                c.extend::<[ArrayRef; 8]>([
                    Arc::new(r.kind.finish()),
                    Arc::new(r.symbol.finish()),
                    Arc::new(r.timeframe.finish()),
                    Arc::new(r.connects.finish()),
                    Arc::new(r.retry_ms.finish()),
                    Arc::new(r.complete.finish()),
                    Arc::new(r.text.finish()),
                    Arc::new(r.detail.finish()),
                ]);
                (Dataset::Control, c)
            }
        };
        RecordBatch::try_new(ds.schema(), cols).map_err(arrow_err(ds.name()))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// Typed access to a batch read back from a file, checking names and types.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a str,
}

impl<'a> Columns<'a> {
    /// Wraps a batch read from `path`.
    pub fn new(batch: &'a RecordBatch, path: &'a str) -> Self {
        Self { batch, path }
    }

    fn column(&self, name: &str) -> Result<&'a ArrayRef, StorageError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| StorageError::Schema {
                path: self.path.to_string(),
                message: format!("missing column `{name}`"),
            })
    }

    fn wrong(&self, name: &str, expected: &str) -> StorageError {
        StorageError::Schema {
            path: self.path.to_string(),
            message: format!("column `{name}` is not {expected}"),
        }
    }

    /// An unsigned 64-bit column.
    pub fn u64(&self, name: &str) -> Result<&'a UInt64Array, StorageError> {
        self.column(name)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| self.wrong(name, "uint64"))
    }

    /// A signed 64-bit column.
    pub fn i64(&self, name: &str) -> Result<&'a Int64Array, StorageError> {
        self.column(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| self.wrong(name, "int64"))
    }

    /// A UTF-8 column.
    pub fn str(&self, name: &str) -> Result<&'a StringArray, StorageError> {
        self.column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(name, "utf8"))
    }

    /// A boolean column.
    pub fn bool(&self, name: &str) -> Result<&'a BooleanArray, StorageError> {
        self.column(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.wrong(name, "boolean"))
    }

    /// A list-of-int64 column.
    pub fn list(&self, name: &str) -> Result<LevelList<'a>, StorageError> {
        let list: &ListArray = self
            .column(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.wrong(name, "list<int64>"))?;
        let values = list
            .values()
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| self.wrong(name, "list<int64>"))?;
        Ok(LevelList {
            offsets: list.value_offsets(),
            values: values.values(),
        })
    }

    /// An error about a value in this file.
    pub fn bad_value(&self, row: usize, message: impl Into<String>) -> StorageError {
        StorageError::Schema {
            path: self.path.to_string(),
            message: format!("row {row}: {}", message.into()),
        }
    }
}

/// The order-key columns every dataset starts with, bound once per batch.
pub struct KeyView<'a> {
    session: &'a UInt64Array,
    seq: &'a UInt64Array,
    recv_ms: &'a Int64Array,
}

impl<'a> KeyView<'a> {
    /// Binds the key columns of a batch.
    pub fn bind(c: &Columns<'a>) -> Result<Self, StorageError> {
        Ok(Self {
            session: c.u64("session")?,
            seq: c.u64("seq")?,
            recv_ms: c.i64("recv_ms")?,
        })
    }

    /// Order key of row `i`.
    pub fn key(&self, i: usize) -> RowKey {
        RowKey {
            session: self.session.value(i),
            seq: self.seq.value(i),
        }
    }

    /// Receive time of row `i` (`None` for imported rows).
    pub fn recv_ms(&self, i: usize) -> Option<i64> {
        opt_i64(self.recv_ms, i)
    }
}

/// The columns a [`Trade`] is decoded from, bound once per batch.
pub struct TradeView<'a> {
    id: &'a UInt64Array,
    time: &'a Int64Array,
    price: &'a Int64Array,
    qty: &'a Int64Array,
    taker_buy: &'a BooleanArray,
}

impl<'a> TradeView<'a> {
    /// Binds the trade columns of a batch.
    pub fn bind(c: &Columns<'a>) -> Result<Self, StorageError> {
        Ok(Self {
            id: c.u64("id")?,
            time: c.i64("time_ms")?,
            price: c.i64("price")?,
            qty: c.i64("qty")?,
            taker_buy: c.bool("taker_buy")?,
        })
    }

    /// Trade time of row `i`, ms.
    pub fn time_ms(&self, i: usize) -> i64 {
        self.time.value(i)
    }

    /// The trade in row `i` (the symbol is the partition's).
    pub fn trade(&self, i: usize, symbol: &str) -> Trade {
        Trade {
            symbol: symbol.to_string(),
            id: self.id.value(i),
            time_ms: self.time.value(i),
            price: Price(self.price.value(i)),
            qty: Qty(self.qty.value(i)),
            taker_side: if self.taker_buy.value(i) {
                Side::Buy
            } else {
                Side::Sell
            },
        }
    }
}

/// The columns a [`Candle`] is decoded from, bound once per batch.
pub struct CandleView<'a> {
    timeframe: &'a StringArray,
    open_time: &'a Int64Array,
    ohlc: [&'a Int64Array; 4],
    volume: &'a Int64Array,
    trades: &'a UInt64Array,
}

impl<'a> CandleView<'a> {
    /// Binds the candle columns of a batch.
    pub fn bind(c: &Columns<'a>) -> Result<Self, StorageError> {
        Ok(Self {
            timeframe: c.str("timeframe")?,
            open_time: c.i64("open_time_ms")?,
            ohlc: [
                c.i64("open")?,
                c.i64("high")?,
                c.i64("low")?,
                c.i64("close")?,
            ],
            volume: c.i64("volume")?,
            trades: c.u64("trades")?,
        })
    }

    /// Timeframe name of row `i`.
    pub fn timeframe(&self, i: usize) -> &'a str {
        self.timeframe.value(i)
    }

    /// Open time of row `i`, ms.
    pub fn open_time_ms(&self, i: usize) -> i64 {
        self.open_time.value(i)
    }

    /// The candle in row `i`.
    pub fn candle(&self, i: usize) -> Candle {
        let [o, h, l, c] = self.ohlc;
        Candle {
            open_time_ms: self.open_time.value(i),
            open: Price(o.value(i)),
            high: Price(h.value(i)),
            low: Price(l.value(i)),
            close: Price(c.value(i)),
            volume: Qty(self.volume.value(i)),
            trades: self.trades.value(i),
        }
    }
}

/// Zero-copy view of one list<int64> column.
pub struct LevelList<'a> {
    offsets: &'a [i32],
    values: &'a [i64],
}

impl LevelList<'_> {
    /// The values of row `i`.
    pub fn row(&self, i: usize) -> &[i64] {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        self.values.get(a..b).unwrap_or(&[])
    }
}

/// Zips price and quantity lists into levels; `None` when their lengths differ.
pub fn zip_levels(prices: &[i64], qtys: &[i64]) -> Option<Vec<Level>> {
    (prices.len() == qtys.len()).then(|| {
        prices
            .iter()
            .zip(qtys)
            .map(|(&p, &q)| Level {
                price: Price(p),
                qty: Qty(q),
            })
            .collect()
    })
}

/// The optional value of row `i` of a nullable column.
pub fn opt_i64(a: &Int64Array, i: usize) -> Option<i64> {
    a.is_valid(i).then(|| a.value(i))
}

/// The optional value of row `i` of a nullable column.
pub fn opt_u64(a: &UInt64Array, i: usize) -> Option<u64> {
    a.is_valid(i).then(|| a.value(i))
}

/// The optional value of row `i` of a nullable column.
pub fn opt_bool(a: &BooleanArray, i: usize) -> Option<bool> {
    a.is_valid(i).then(|| a.value(i))
}

/// The optional value of row `i` of a nullable column.
pub fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}
