//! Trading: the order model, risk manager, position accounting, executors and the journal.
//!
//! Orders flow intent → [`risk::RiskManager::check`] → [`risk::ApprovedOrder`] →
//! [`executor::Executor`]; every step is journaled before it is acted on.

pub mod executor;
pub mod journal;
pub mod money;
pub mod order;
pub mod paper;
pub mod position;
pub mod risk;
pub mod risk_state;
pub mod serde_num;
