//! The orchestrator: runs the experts (CNN, RL agent, rule baselines) on each new input,
//! keeps their outputs, combines them by a mixture of experts into decisions, scores
//! predictions once their horizon has passed and feeds the scores back — live on its own
//! thread, and in the backtester, event by event, with the same code.

pub mod backtest;
pub mod config;
pub mod coordinator;
pub mod decision;
pub mod engine;
pub mod expert;
pub mod feedback;
pub mod history;
pub mod metrics;
pub mod models;
pub mod report;
pub mod runtime;
pub mod store;

pub use config::OrchestratorConfig;
pub use decision::{Decision, ThresholdHandle, Thresholds};
pub use engine::{Engine, OrchestratorSnapshot};
pub use expert::{Expert, ExpertError, PivotMomentumExpert};
pub use runtime::Orchestrator;
