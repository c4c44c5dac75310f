//! A decision as the orchestrator hands it to the trading session, for the trading tests.
#![allow(dead_code)]

use mmtrader::analysis::model_output::{Action, ActionValues};
use mmtrader::market::types::Price;
use mmtrader::orchestrator::decision::{Decision, Thresholds};

/// A confident `action` on `symbol` at `time_ms`, priced at `price`.
pub fn decision(symbol: &str, action: Action, time_ms: i64, price: Price) -> Decision {
    Decision {
        symbol: symbol.into(),
        time_ms,
        action,
        confidence: 0.9,
        combined: ActionValues {
            buy: 0.9,
            sell: 0.05,
            hold: 0.05,
        },
        price: Some(price),
        thresholds: Thresholds {
            buy: 0.55,
            sell: 0.55,
        },
        votes: Vec::new(),
        skipped: Vec::new(),
        reason: "test".into(),
    }
}
