//! Tradable instrument metadata (exchange filters that orders must respect).
//!
//! Minimal definition needed by the Binance exchangeInfo parser; the market-core owner is writing
//! the full version in parallel and the lead reconciles the two.

use serde::{Deserialize, Serialize};

use super::types::{Price, Qty, Symbol};

/// One instrument with its trading rules; a zero filter value means "rule disabled".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instrument {
    /// Exchange symbol, e.g. `BTCUSDT`.
    pub symbol: Symbol,
    /// Base asset, e.g. `BTC`.
    pub base_asset: String,
    /// Quote asset, e.g. `USDT`.
    pub quote_asset: String,
    /// Price increment (PRICE_FILTER.tickSize).
    pub tick_size: Price,
    /// Quantity increment (LOT_SIZE.stepSize).
    pub step_size: Qty,
    /// Smallest order quantity (LOT_SIZE.minQty).
    pub min_qty: Qty,
    /// Largest order quantity (LOT_SIZE.maxQty).
    pub max_qty: Qty,
    /// Smallest order notional in quote units (MIN_NOTIONAL / NOTIONAL.minNotional).
    pub min_notional: Price,
    /// Trading status (`TRADING`, `HALT`, `BREAK`, ...).
    pub status: String,
}
