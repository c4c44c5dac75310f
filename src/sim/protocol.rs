//! Binance spot payloads, encoded exactly (prices and quantities as 8-decimal strings).

use std::fmt::Write;

use serde_json::{Value, json};

use super::config::SymbolSpec;
use super::history::SimCandle;
use super::model::DepthDiff;
use crate::market::types::{Level, Price, Qty, Side, Timeframe, Trade, notional};

/// Binance's fixed 8-decimal text for a price.
pub fn px(p: Price) -> String {
    format!("{p:.8}")
}

/// Binance's fixed 8-decimal text for a quantity.
pub fn qt(q: Qty) -> String {
    format!("{q:.8}")
}

fn push_levels(out: &mut String, levels: &[Level]) {
    out.push('[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "[\"{:.8}\",\"{:.8}\"]", l.price, l.qty);
    }
    out.push(']');
}

/// `depthUpdate` event.
pub fn depth_update(symbol: &str, d: &DepthDiff) -> String {
    let mut s = String::with_capacity(64 + 40 * (d.bids.len() + d.asks.len()));
    let _ = write!(
        s,
        "{{\"e\":\"depthUpdate\",\"E\":{},\"s\":\"{}\",\"U\":{},\"u\":{},\"b\":",
        d.time_ms, symbol, d.first_id, d.last_id
    );
    push_levels(&mut s, &d.bids);
    s.push_str(",\"a\":");
    push_levels(&mut s, &d.asks);
    s.push('}');
    s
}

/// Partial book depth (`<symbol>@depth<N>`) and REST depth snapshot share this shape.
pub fn depth_snapshot(last_update_id: u64, bids: &[Level], asks: &[Level]) -> String {
    let mut s = String::with_capacity(48 + 40 * (bids.len() + asks.len()));
    let _ = write!(s, "{{\"lastUpdateId\":{last_update_id},\"bids\":");
    push_levels(&mut s, bids);
    s.push_str(",\"asks\":");
    push_levels(&mut s, asks);
    s.push('}');
    s
}

/// `aggTrade` event (one simulated trade is one aggregate trade).
pub fn agg_trade(t: &Trade, event_ms: i64) -> String {
    format!(
        "{{\"e\":\"aggTrade\",\"E\":{},\"s\":\"{}\",\"a\":{},\"p\":\"{:.8}\",\"q\":\"{:.8}\",\"f\":{},\"l\":{},\"T\":{},\"m\":{},\"M\":true}}",
        event_ms,
        t.symbol,
        t.id,
        t.price,
        t.qty,
        t.id,
        t.id,
        t.time_ms,
        t.taker_side == Side::Sell
    )
}

/// `trade` event.
pub fn trade(t: &Trade, event_ms: i64) -> String {
    format!(
        "{{\"e\":\"trade\",\"E\":{},\"s\":\"{}\",\"t\":{},\"p\":\"{:.8}\",\"q\":\"{:.8}\",\"T\":{},\"m\":{},\"M\":true}}",
        event_ms,
        t.symbol,
        t.id,
        t.price,
        t.qty,
        t.time_ms,
        t.taker_side == Side::Sell
    )
}

/// REST `aggTrades` element.
pub fn agg_trade_rest(t: &Trade) -> Value {
    json!({"a": t.id, "p": px(t.price), "q": qt(t.qty), "f": t.id, "l": t.id, "T": t.time_ms,
           "m": t.taker_side == Side::Sell, "M": true})
}

/// `bookTicker` event (no `e`/`E`, like Binance).
pub fn book_ticker(symbol: &str, update_id: u64, bid: Level, ask: Level) -> String {
    format!(
        "{{\"u\":{},\"s\":\"{}\",\"b\":\"{:.8}\",\"B\":\"{:.8}\",\"a\":\"{:.8}\",\"A\":\"{:.8}\"}}",
        update_id, symbol, bid.price, bid.qty, ask.price, ask.qty
    )
}

/// REST `ticker/bookTicker` element.
pub fn book_ticker_rest(symbol: &str, bid: Level, ask: Level) -> Value {
    json!({"symbol": symbol, "bidPrice": px(bid.price), "bidQty": qt(bid.qty),
           "askPrice": px(ask.price), "askQty": qt(ask.qty)})
}

/// One kline with everything Binance reports about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlineView {
    /// Interval.
    pub tf: Timeframe,
    /// Open time, ms.
    pub open_time_ms: i64,
    /// Open, high, low, close.
    pub ohlc: [Price; 4],
    /// Base volume.
    pub volume: Qty,
    /// Taker-buy base volume.
    pub taker_buy_volume: Qty,
    /// Quote volume (estimated at the candle's typical price: the history does not keep per-trade
    /// notionals above the 1s level, and REST and stream must agree).
    pub quote_volume: Price,
    /// Taker-buy quote volume, same estimate.
    pub taker_buy_quote_volume: Price,
    /// First trade id, -1 when empty.
    pub first_id: i64,
    /// Last trade id, -1 when empty.
    pub last_id: i64,
    /// Trade count.
    pub trades: i64,
}

impl KlineView {
    /// Converts a simulated candle; `first_trade_id` is the id of the first trade at or after its open.
    pub fn new(spec: &SymbolSpec, tf: Timeframe, c: &SimCandle, first_trade_id: u64) -> Self {
        let typical = spec.price((c.h + c.l + c.c) / 3);
        let vol = spec.qty(c.v);
        let bv = spec.qty(c.bv);
        let (first_id, last_id) = if c.n > 0 {
            (first_trade_id as i64, first_trade_id as i64 + c.n - 1)
        } else {
            (-1, -1)
        };
        Self {
            tf,
            open_time_ms: c.open_time_ms,
            ohlc: [
                spec.price(c.o),
                spec.price(c.h),
                spec.price(c.l),
                spec.price(c.c),
            ],
            volume: vol,
            taker_buy_volume: bv,
            quote_volume: Price(notional(typical, vol) as i64),
            taker_buy_quote_volume: Price(notional(typical, bv) as i64),
            first_id,
            last_id,
            trades: c.n,
        }
    }

    /// Close time (next open − 1).
    pub fn close_time_ms(&self) -> i64 {
        self.open_time_ms + self.tf.millis() - 1
    }

    /// REST `klines` row (12 elements).
    pub fn rest_row(&self) -> Value {
        json!([
            self.open_time_ms,
            px(self.ohlc[0]),
            px(self.ohlc[1]),
            px(self.ohlc[2]),
            px(self.ohlc[3]),
            qt(self.volume),
            self.close_time_ms(),
            px(self.quote_volume),
            self.trades,
            qt(self.taker_buy_volume),
            px(self.taker_buy_quote_volume),
            "0"
        ])
    }

    /// `kline` stream event.
    pub fn event(&self, symbol: &str, event_ms: i64, closed: bool) -> String {
        format!(
            "{{\"e\":\"kline\",\"E\":{},\"s\":\"{}\",\"k\":{{\"t\":{},\"T\":{},\"s\":\"{}\",\"i\":\"{}\",\"f\":{},\"L\":{},\"o\":\"{:.8}\",\"c\":\"{:.8}\",\"h\":\"{:.8}\",\"l\":\"{:.8}\",\"v\":\"{:.8}\",\"n\":{},\"x\":{},\"q\":\"{:.8}\",\"V\":\"{:.8}\",\"Q\":\"{:.8}\",\"B\":\"0\"}}}}",
            event_ms,
            symbol,
            self.open_time_ms,
            self.close_time_ms(),
            symbol,
            self.tf.as_str(),
            self.first_id,
            self.last_id,
            self.ohlc[0],
            self.ohlc[3],
            self.ohlc[1],
            self.ohlc[2],
            self.volume,
            self.trades,
            closed,
            self.quote_volume,
            self.taker_buy_volume,
            self.taker_buy_quote_volume
        )
    }
}

/// Rolling 24 h statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker24h {
    /// Window start, ms.
    pub open_time_ms: i64,
    /// Window end, ms.
    pub close_time_ms: i64,
    /// First price in the window.
    pub open: Price,
    /// High.
    pub high: Price,
    /// Low.
    pub low: Price,
    /// Last price.
    pub last: Price,
    /// Last trade quantity.
    pub last_qty: Qty,
    /// Close before the window.
    pub prev_close: Price,
    /// Base volume.
    pub volume: Qty,
    /// Quote volume (typical-price estimate).
    pub quote_volume: Price,
    /// First trade id in the window.
    pub first_id: i64,
    /// Last trade id in the window.
    pub last_id: i64,
    /// Trade count.
    pub count: i64,
    /// Best bid.
    pub bid: Level,
    /// Best ask.
    pub ask: Level,
}

impl Ticker24h {
    fn change(&self) -> (Price, String, Price) {
        let ch = self.last - self.open;
        let pct = if self.open.raw() != 0 {
            ch.raw() as f64 * 100.0 / self.open.raw() as f64
        } else {
            0.0
        };
        let wavg = if self.volume.raw() != 0 {
            Price(
                (self.quote_volume.raw() as i128 * crate::market::types::SCALE as i128
                    / self.volume.raw() as i128) as i64,
            )
        } else {
            self.last
        };
        (ch, format!("{pct:.3}"), wavg)
    }

    /// `24hrTicker` event.
    pub fn event(&self, symbol: &str, event_ms: i64) -> String {
        let (ch, pct, w) = self.change();
        json!({"e": "24hrTicker", "E": event_ms, "s": symbol, "p": px(ch), "P": pct, "w": px(w),
               "x": px(self.prev_close), "c": px(self.last), "Q": qt(self.last_qty),
               "b": px(self.bid.price), "B": qt(self.bid.qty), "a": px(self.ask.price),
               "A": qt(self.ask.qty), "o": px(self.open), "h": px(self.high), "l": px(self.low),
               "v": qt(self.volume), "q": px(self.quote_volume), "O": self.open_time_ms,
               "C": self.close_time_ms, "F": self.first_id, "L": self.last_id, "n": self.count})
        .to_string()
    }

    /// REST `ticker/24hr` element.
    pub fn rest(&self, symbol: &str) -> Value {
        let (ch, pct, w) = self.change();
        json!({"symbol": symbol, "priceChange": px(ch), "priceChangePercent": pct,
               "weightedAvgPrice": px(w), "prevClosePrice": px(self.prev_close),
               "lastPrice": px(self.last), "lastQty": qt(self.last_qty),
               "bidPrice": px(self.bid.price), "bidQty": qt(self.bid.qty),
               "askPrice": px(self.ask.price), "askQty": qt(self.ask.qty),
               "openPrice": px(self.open), "highPrice": px(self.high), "lowPrice": px(self.low),
               "volume": qt(self.volume), "quoteVolume": px(self.quote_volume),
               "openTime": self.open_time_ms, "closeTime": self.close_time_ms,
               "firstId": self.first_id, "lastId": self.last_id, "count": self.count})
    }
}

/// `exchangeInfo` entry of one symbol with the filters connectors validate against.
pub fn symbol_info(spec: &SymbolSpec) -> Value {
    json!({
        "symbol": spec.symbol, "status": "TRADING", "baseAsset": spec.base_asset,
        "baseAssetPrecision": 8, "quoteAsset": spec.quote_asset, "quotePrecision": 8,
        "quoteAssetPrecision": 8, "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": true, "ocoAllowed": true, "otoAllowed": true,
        "quoteOrderQtyMarketAllowed": true, "allowTrailingStop": false,
        "cancelReplaceAllowed": false, "isSpotTradingAllowed": true,
        "isMarginTradingAllowed": false,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": px(spec.tick),
             "maxPrice": "1000000.00000000", "tickSize": px(spec.tick)},
            {"filterType": "LOT_SIZE", "minQty": qt(spec.step), "maxQty": "9000.00000000",
             "stepSize": qt(spec.step)},
            {"filterType": "MIN_NOTIONAL", "minNotional": "5.00000000", "applyToMarket": true,
             "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": true,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_update_has_binance_shape() {
        let d = DepthDiff {
            sym: 0,
            time_ms: 5,
            first_id: 10,
            last_id: 12,
            bids: vec![Level {
                price: Price::parse("3000.1").unwrap(),
                qty: Qty::parse("1.5").unwrap(),
            }],
            asks: vec![Level {
                price: Price::parse("3000.2").unwrap(),
                qty: Qty::ZERO,
            }],
        };
        let v: Value = serde_json::from_str(&depth_update("ETHUSDT", &d)).unwrap();
        assert_eq!(v["e"], "depthUpdate");
        assert_eq!(v["U"], 10);
        assert_eq!(v["u"], 12);
        assert_eq!(v["b"][0][0], "3000.10000000");
        assert_eq!(v["b"][0][1], "1.50000000");
        assert_eq!(v["a"][0][1], "0.00000000");
    }

    #[test]
    fn agg_trade_marks_seller_takers_as_buyer_maker() {
        let t = Trade {
            symbol: "BTCUSDT".into(),
            id: 7,
            time_ms: 9,
            price: Price::parse("60000.01").unwrap(),
            qty: Qty::parse("0.0012").unwrap(),
            taker_side: Side::Sell,
        };
        let v: Value = serde_json::from_str(&agg_trade(&t, 10)).unwrap();
        assert_eq!(v["m"], true);
        assert_eq!(v["p"], "60000.01000000");
        assert_eq!(v["a"], 7);
        assert_eq!(v["T"], 9);
    }
}
