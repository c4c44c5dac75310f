//! MEXC's websocket protobuf messages, hand-written with the field numbers of
//! mexcdevelop/websocket-proto (only the public market-data bodies are decoded).

/// The envelope of every binary push.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushDataV3ApiWrapper {
    /// Channel name, e.g. `spot@public.aggre.deals.v3.api.pb@100ms@BTCUSDT`.
    #[prost(string, tag = "1")]
    pub channel: String,
    /// Symbol (`BTCUSDT`).
    #[prost(string, optional, tag = "3")]
    pub symbol: Option<String>,
    /// Symbol id.
    #[prost(string, optional, tag = "4")]
    pub symbol_id: Option<String>,
    /// Creation time, ms.
    #[prost(int64, optional, tag = "5")]
    pub create_time: Option<i64>,
    /// Send time, ms.
    #[prost(int64, optional, tag = "6")]
    pub send_time: Option<i64>,
    /// The body (a oneof in the schema).
    #[prost(oneof = "Body", tags = "301, 302, 303, 313, 314")]
    pub body: Option<Body>,
}

/// Body variants this connector decodes; the others (tickers, klines, private) are skipped.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Body {
    /// Legacy non-aggregated deals.
    #[prost(message, tag = "301")]
    PublicDeals(PublicDeals),
    /// Legacy increase-depth channel (one version per push).
    #[prost(message, tag = "302")]
    PublicIncreaseDepths(PublicIncreaseDepths),
    /// Partial top-N book.
    #[prost(message, tag = "303")]
    PublicLimitDepths(PublicLimitDepths),
    /// Aggregated diff depth with a version range.
    #[prost(message, tag = "313")]
    PublicAggreDepths(PublicAggreDepths),
    /// Aggregated deals.
    #[prost(message, tag = "314")]
    PublicAggreDeals(PublicAggreDeals),
}

/// One price level.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DepthItem {
    /// Price text.
    #[prost(string, tag = "1")]
    pub price: String,
    /// Absolute quantity text; zero removes.
    #[prost(string, tag = "2")]
    pub quantity: String,
}

/// `PublicAggreDepthsV3Api`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicAggreDepths {
    /// Asks.
    #[prost(message, repeated, tag = "1")]
    pub asks: Vec<DepthItem>,
    /// Bids.
    #[prost(message, repeated, tag = "2")]
    pub bids: Vec<DepthItem>,
    /// Event type.
    #[prost(string, tag = "3")]
    pub event_type: String,
    /// First version in this push (decimal text).
    #[prost(string, tag = "4")]
    pub from_version: String,
    /// Last version in this push (decimal text).
    #[prost(string, tag = "5")]
    pub to_version: String,
}

/// `PublicIncreaseDepthsV3Api` (legacy).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicIncreaseDepths {
    /// Asks.
    #[prost(message, repeated, tag = "1")]
    pub asks: Vec<DepthItem>,
    /// Bids.
    #[prost(message, repeated, tag = "2")]
    pub bids: Vec<DepthItem>,
    /// Event type.
    #[prost(string, tag = "3")]
    pub event_type: String,
    /// Version (decimal text).
    #[prost(string, tag = "4")]
    pub version: String,
}

/// `PublicLimitDepthsV3Api`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicLimitDepths {
    /// Asks.
    #[prost(message, repeated, tag = "1")]
    pub asks: Vec<DepthItem>,
    /// Bids.
    #[prost(message, repeated, tag = "2")]
    pub bids: Vec<DepthItem>,
    /// Event type.
    #[prost(string, tag = "3")]
    pub event_type: String,
    /// Version (decimal text).
    #[prost(string, tag = "4")]
    pub version: String,
}

/// One aggregated deal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DealItem {
    /// Price text.
    #[prost(string, tag = "1")]
    pub price: String,
    /// Quantity text.
    #[prost(string, tag = "2")]
    pub quantity: String,
    /// 1 = buy, 2 = sell (taker side).
    #[prost(int32, tag = "3")]
    pub trade_type: i32,
    /// Trade time, ms.
    #[prost(int64, tag = "4")]
    pub time: i64,
    /// Trade id (aggregated channel only).
    #[prost(string, tag = "5")]
    pub trade_id: String,
}

/// `PublicAggreDealsV3Api`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicAggreDeals {
    /// Deals.
    #[prost(message, repeated, tag = "1")]
    pub deals: Vec<DealItem>,
    /// Event type.
    #[prost(string, tag = "2")]
    pub event_type: String,
}

/// `PublicDealsV3Api` (legacy; same item layout without the id).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublicDeals {
    /// Deals.
    #[prost(message, repeated, tag = "1")]
    pub deals: Vec<DealItem>,
    /// Event type.
    #[prost(string, tag = "2")]
    pub event_type: String,
}
