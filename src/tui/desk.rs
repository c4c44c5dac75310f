//! What the screen shows beyond market data: process memory, the models and orchestrator, the
//! trading process, and the live-tunable parameters. Each view is an `Option` that stays `None`
//! while its process is not running, and the panes say so instead of inventing numbers.

use crate::analysis::model_output::Action as TradeAction;
use crate::market::types::{Price, Qty, Side};

/// A background process the desk stops and starts by hotkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// The market-data feed.
    Feed,
    /// Model inference and the decisions made from it.
    Inference,
    /// Online training.
    Training,
    /// Order execution.
    Trading,
}

impl Process {
    /// Name for logs and the screen.
    pub const fn name(self) -> &'static str {
        match self {
            Process::Feed => "feed",
            Process::Inference => "inference",
            Process::Training => "training",
            Process::Trading => "trading",
        }
    }
}

/// What the screen asks the processes behind it to do.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskCommand {
    /// Stop the process when running, start it otherwise.
    Toggle(Process),
    /// Set a live-tunable parameter (already clamped to its range).
    SetParam {
        /// Parameter key, as in [`Tunable::key`].
        key: String,
        /// New value.
        value: f64,
    },
    /// Switch the executor from paper to live (confirmed by the user).
    GoLive,
    /// Close every position at market (confirmed by the user).
    Flatten,
    /// Halt, cancel every order and flatten (confirmed by the user).
    KillSwitch,
    /// Lift the halt in force (confirmed by the user); trading stays stopped.
    Resume,
}

/// A parameter that can be changed while running, with the value in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunable {
    /// Stable key the command names (`buy_threshold`).
    pub key: String,
    /// Label on the screen (`buy ≥`).
    pub label: String,
    /// Value in force now.
    pub value: f64,
    /// One key press changes it by this much.
    pub step: f64,
    /// Lowest accepted value.
    pub min: f64,
    /// Highest accepted value.
    pub max: f64,
    /// Decimals shown (and kept: stepping rounds to them so repeated presses do not drift).
    pub decimals: u8,
}

impl Tunable {
    /// The value after `steps` presses (negative lowers), clamped to the range.
    pub fn stepped(&self, steps: i32) -> f64 {
        let scale = 10f64.powi(i32::from(self.decimals));
        let v = self.value + self.step * f64::from(steps);
        ((v * scale).round() / scale).clamp(self.min, self.max)
    }

    /// The value as shown.
    pub fn display(&self) -> String {
        format!("{:.*}", usize::from(self.decimals), self.value)
    }
}

/// One expert's latest output, as the models pane lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertRow {
    /// Model name (`cnn`, `rl`, `trend`).
    pub name: String,
    /// Action it proposes.
    pub action: TradeAction,
    /// Its confidence, 0..1.
    pub confidence: f64,
    /// BUY/SELL/HOLD probabilities, when the model gives them.
    pub probabilities: Option<[f64; 3]>,
    /// BUY/SELL/HOLD Q-values, when the model gives them.
    pub q_values: Option<[f64; 3]>,
    /// Time of that output, ms since the epoch.
    pub time_ms: i64,
    /// Inference latency of that step, ms.
    pub latency_ms: Option<f64>,
    /// Checkpoint in use (name and metric), when the model has one.
    pub checkpoint: Option<String>,
    /// Why the last step skipped it (slow, failed), if it did.
    pub flagged: Option<String>,
    /// Gating weight in the mixture.
    pub weight: Option<f64>,
}

/// The orchestrator's last decision.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionView {
    /// `ETHUSDT`.
    pub symbol: String,
    /// Action decided.
    pub action: TradeAction,
    /// Combined confidence, 0..1.
    pub confidence: f64,
    /// Why it acted or held.
    pub reason: String,
    /// Decision time, ms since the epoch.
    pub time_ms: i64,
}

/// State published by the inference, orchestration and training processes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelsView {
    /// Inference and decisions running.
    pub inference: bool,
    /// Online training running.
    pub training: bool,
    /// Device the models run on (`cpu`, `cuda:0`).
    pub device: String,
    /// Latest output per expert.
    pub experts: Vec<ExpertRow>,
    /// Last decision.
    pub decision: Option<DecisionView>,
    /// Recent accuracy per model, oldest first (for sparklines).
    pub accuracy: Vec<(String, Vec<f64>)>,
    /// Training steps taken.
    pub training_steps: u64,
    /// Last training loss.
    pub last_loss: Option<f64>,
    /// Online DQN learning steps taken.
    pub dqn_training_steps: u64,
    /// Last online DQN loss.
    pub dqn_last_loss: Option<f64>,
}

/// One open position.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionRow {
    /// `ETHUSDT`.
    pub symbol: String,
    /// Long (buy) or short (sell).
    pub side: Side,
    /// Size.
    pub qty: Qty,
    /// Average entry price.
    pub entry: Price,
    /// Unrealized PnL at the mark, quote currency (exact).
    pub unrealized: Option<Price>,
    /// Protective stop in force.
    pub stop: Option<Price>,
    /// Take-profit in force.
    pub take_profit: Option<Price>,
    /// The desk watches these exits itself (the venue has no stop orders): they act only
    /// while the desk runs.
    pub exits_by_desk: bool,
    /// The mark the unrealized PnL is taken at.
    pub mark: Option<Price>,
    /// Decimals of the instrument's tick: prices are shown at the tick.
    pub price_decimals: usize,
}

/// One working order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    /// `ETHUSDT`.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// `limit`, `stop`, ...
    pub kind: String,
    /// Ordered quantity.
    pub qty: Qty,
    /// Filled so far.
    pub filled: Qty,
    /// Limit or stop price.
    pub price: Option<Price>,
    /// Decimals of the instrument's tick.
    pub price_decimals: usize,
}

/// One risk limit and how much of it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitUsage {
    /// `position ETHUSDT`, `leverage`, `daily loss`, `drawdown`, `orders/min`.
    pub name: String,
    /// Used fraction of the limit, 0..1 (beyond 1 means breached).
    pub used: f64,
    /// Value against limit as text (`0.40 / 1.00 ETH`).
    pub text: String,
}

/// State published by the trading process.
#[derive(Debug, Clone, PartialEq)]
pub struct TradingView {
    /// The executor in force: `paper`, or `live: <venue>` (`live: sim`, `live: binance`).
    pub mode: String,
    /// Orders are being sent.
    pub running: bool,
    /// Open positions.
    pub positions: Vec<PositionRow>,
    /// Working orders.
    pub orders: Vec<OrderRow>,
    /// Realized PnL, quote currency (exact).
    pub realized: Price,
    /// Unrealized PnL, quote currency (exact).
    pub unrealized: Price,
    /// Equity, quote currency (exact).
    pub equity: Price,
    /// Fills so far.
    pub fills: u64,
    /// Each limit's usage.
    pub limits: Vec<LimitUsage>,
    /// Why trading is halted (circuit breaker, drawdown, kill switch), if it is.
    pub halted: Option<String>,
    /// A flatten's progress (`flattening 2 positions`), or `account flat` once it is done.
    pub flatten: Option<String>,
}

/// Everything non-market the screen shows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeskStatus {
    /// Resident memory of this process in bytes (None where the OS does not say).
    pub rss_bytes: Option<u64>,
    /// Inference process state (None: not running).
    pub models: Option<ModelsView>,
    /// Trading process state (None: not running).
    pub trading: Option<TradingView>,
    /// Live-tunable parameters with the values in force (empty: none available).
    pub tunables: Vec<Tunable>,
    /// The CNN's newest predicted pivots, by exchange symbol (None: the CNN is not running).
    pub predictions: Option<Vec<(String, Vec<crate::analysis::model_output::PredictedPivot>)>>,
}

/// Resident set size from the text of `/proc/self/status` (`VmRSS:  1234 kB`); kB avoids
/// depending on the page size that `/proc/self/statm` counts in.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kb: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => kb.checked_mul(1024),
        Some(_) => None,
    }
}

/// `12.3 MiB`-style text.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parses_and_rejects_garbage() {
        let text = "Name:\tmmtrader\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads: 4\n";
        assert_eq!(parse_vm_rss(text), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots kB"), None);
        assert_eq!(parse_vm_rss("VmRSS: 12 pages"), None);
        assert_eq!(parse_vm_rss("Name: x"), None);
    }

    #[test]
    fn tunables_step_without_drift_and_clamp() {
        let mut t = Tunable {
            key: "buy_threshold".into(),
            label: "buy ≥".into(),
            value: 0.6,
            step: 0.05,
            min: 0.5,
            max: 0.95,
            decimals: 2,
        };
        for _ in 0..3 {
            t.value = t.stepped(1);
        }
        assert_eq!(t.display(), "0.75");
        assert_eq!(t.value, 0.75);
        assert_eq!(t.stepped(10), 0.95);
        assert_eq!(t.stepped(-10), 0.5);
    }

    #[test]
    fn bytes_are_humanized() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(50 * 1024 * 1024), "50.0 MiB");
    }
}
