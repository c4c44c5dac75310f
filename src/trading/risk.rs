//! The risk manager: every order passes [`RiskManager::check`], which alone can produce an
//! [`ApprovedOrder`]. Pure logic: no I/O, no clock (time comes in with each call).

use serde::{Deserialize, Serialize};

use crate::market::types::Price;
use crate::trading::order::OrderRequest;

/// Exits attached to an approved entry; the executor manages them on the resulting position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Protection {
    /// Stop-loss trigger price (always set on an approved entry).
    pub stop_loss: Option<Price>,
    /// Take-profit trigger price.
    pub take_profit: Option<Price>,
    /// Trailing stop distance in basis points of the best price since entry.
    pub trailing_bps: Option<u32>,
}

/// An order the risk manager approved. Its fields are private and it has no public
/// constructor (nor `Clone` or `Deserialize`), so holding one proves it passed the checks.
#[derive(Debug, PartialEq, Eq)]
pub struct ApprovedOrder {
    request: OrderRequest,
    protection: Protection,
    approved_ms: i64,
}

impl ApprovedOrder {
    fn new(request: OrderRequest, protection: Protection, approved_ms: i64) -> Self {
        Self {
            request,
            protection,
            approved_ms,
        }
    }

    /// The order to send.
    pub fn request(&self) -> &OrderRequest {
        &self.request
    }

    /// Exits to manage once it fills.
    pub fn protection(&self) -> &Protection {
        &self.protection
    }

    /// When it was approved, ms.
    pub fn approved_ms(&self) -> i64 {
        self.approved_ms
    }

    /// Splits into the request and its protection (for executors that store them).
    pub fn into_parts(self) -> (OrderRequest, Protection) {
        (self.request, self.protection)
    }
}
