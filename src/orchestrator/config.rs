//! `[orchestrator]`: when inference runs, how long an expert may take, how the mixture of
//! experts gates and decides, and how predictions are scored.

use serde::{Deserialize, Serialize};

use crate::market::types::Timeframe;

/// What starts an inference step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TriggerConfig {
    /// Every newly closed candle of this timeframe (`"1s"`, `"1m"`, `"1h"`, `"1d"`).
    Candle(String),
    /// Every N seconds of input time.
    Seconds(u64),
}

/// The resolved trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Each newly closed candle of the timeframe.
    EveryCandle(Timeframe),
    /// Each time input time advanced by at least this many ms since the last step.
    EveryMillis(i64),
}

impl Trigger {
    /// The step key of `input_time` when a step is due after `last` (the previous step's key):
    /// candle open time of the newest closed candle, or the input time for periodic triggers.
    /// `newest_closed_open_ms` is the open time of the newest closed candle of the trigger's
    /// timeframe in the input.
    pub fn due(
        &self,
        last: Option<i64>,
        input_time_ms: i64,
        newest_closed_open_ms: impl FnOnce(Timeframe) -> Option<i64>,
    ) -> Option<i64> {
        match *self {
            Trigger::EveryCandle(tf) => {
                let key = newest_closed_open_ms(tf)?;
                last.is_none_or(|l| key > l).then_some(key)
            }
            Trigger::EveryMillis(ms) => last
                .is_none_or(|l| input_time_ms - l >= ms)
                .then_some(input_time_ms),
        }
    }
}

/// How gating weights follow accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatingConfig {
    /// Softmax temperature over the experts' accuracies (lower: sharper preference).
    pub temperature: f64,
    /// Minimum weight of any expert before renormalization, so a cold expert can recover.
    pub floor: f64,
    /// Decay of the exponentially weighted accuracy per scored prediction (0..1).
    pub accuracy_decay: f64,
    /// Accuracy assumed for an expert with no scored predictions yet.
    pub prior_accuracy: f64,
    /// Outputs with confidence below this do not vote.
    pub min_confidence: f64,
}

impl Default for GatingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            floor: 0.05,
            accuracy_decay: 0.05,
            prior_accuracy: 0.5,
            min_confidence: 0.3,
        }
    }
}

/// `[orchestrator.backtest]`: what backtests add to the live `[risk]` and `[execution]` rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacktestConfig {
    /// Half-spread of the paper book around each candle close, basis points (slippage).
    pub slippage_bps: u32,
    /// Fraction of the starting equity the buy-and-hold benchmark invests, (0, 1].
    pub position_fraction: f64,
    /// SELL opens a short (true) or only closes a long (false).
    pub allow_short: bool,
    /// Steps per inference batch when no expert reads earlier outputs (1 disables batching).
    pub batch: usize,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        Self {
            slippage_bps: 2,
            position_fraction: 0.95,
            allow_short: false,
            batch: 64,
        }
    }
}

/// `[orchestrator]` as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// What starts a step: `{ candle = "1s" }` or `{ seconds = 5 }`.
    pub trigger: TriggerConfig,
    /// Time an expert may take per step (live only; backtests wait for every expert).
    pub deadline_ms: u64,
    /// Combined BUY probability needed to buy.
    pub buy_threshold: f64,
    /// Combined SELL probability needed to sell.
    pub sell_threshold: f64,
    /// Gating of the mixture of experts.
    pub gating: GatingConfig,
    /// How far ahead an action is scored against the realized return, seconds.
    pub horizon_secs: u64,
    /// Realized returns within ± this many basis points count as "no move" (fees, noise).
    pub no_trade_band_bps: f64,
    /// How long a predicted pivot waits for the next confirmed pivot before it expires, seconds.
    pub pivot_timeout_secs: u64,
    /// Model outputs kept in memory per model and symbol.
    pub outputs_kept: usize,
    /// Accuracy points kept per model for the screen's sparkline.
    pub accuracy_history: usize,
    /// Backtest costs and sizing.
    pub backtest: BacktestConfig,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            trigger: TriggerConfig::Candle("1s".into()),
            deadline_ms: 250,
            buy_threshold: 0.55,
            sell_threshold: 0.55,
            gating: GatingConfig::default(),
            horizon_secs: 60,
            no_trade_band_bps: 5.0,
            pivot_timeout_secs: 3_600,
            outputs_kept: 1_000,
            accuracy_history: 120,
            backtest: BacktestConfig::default(),
        }
    }
}

impl OrchestratorConfig {
    /// The trigger, or `(key, what is expected)` when the configured one is invalid.
    pub fn trigger(&self) -> Result<Trigger, (String, String)> {
        match &self.trigger {
            TriggerConfig::Candle(tf) => {
                Timeframe::parse(tf)
                    .map(Trigger::EveryCandle)
                    .ok_or_else(|| {
                        (
                            "orchestrator.trigger.candle".into(),
                            format!("expected one of \"1s\", \"1m\", \"1h\", \"1d\", got {tf:?}"),
                        )
                    })
            }
            TriggerConfig::Seconds(0) => Err((
                "orchestrator.trigger.seconds".into(),
                "expected a whole number of seconds ≥ 1, got 0".into(),
            )),
            TriggerConfig::Seconds(s) => Ok(Trigger::EveryMillis(*s as i64 * 1_000)),
        }
    }

    /// Checks every key; the error is `(key, what is expected)` for `ConfigError::Key`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.trigger()?;
        let unit = |key: &str, v: f64| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((
                    format!("orchestrator.{key}"),
                    format!("expected a number in 0..=1, got {v}"),
                ))
            }
        };
        unit("buy_threshold", self.buy_threshold)?;
        unit("sell_threshold", self.sell_threshold)?;
        unit("gating.floor", self.gating.floor)?;
        unit("gating.prior_accuracy", self.gating.prior_accuracy)?;
        unit("gating.min_confidence", self.gating.min_confidence)?;
        let b = &self.backtest;
        if !(b.position_fraction.is_finite()
            && b.position_fraction > 0.0
            && b.position_fraction <= 1.0)
        {
            return Err((
                "orchestrator.backtest.position_fraction".into(),
                format!("expected a number in (0, 1], got {}", b.position_fraction),
            ));
        }
        let g = &self.gating;
        if !(g.accuracy_decay > 0.0 && g.accuracy_decay <= 1.0) {
            return Err((
                "orchestrator.gating.accuracy_decay".into(),
                format!("expected a number in (0, 1], got {}", g.accuracy_decay),
            ));
        }
        if !(g.temperature.is_finite() && g.temperature > 0.0) {
            return Err((
                "orchestrator.gating.temperature".into(),
                format!("expected a positive number, got {}", g.temperature),
            ));
        }
        if !(self.no_trade_band_bps.is_finite() && self.no_trade_band_bps >= 0.0) {
            return Err((
                "orchestrator.no_trade_band_bps".into(),
                format!(
                    "expected a non-negative number, got {}",
                    self.no_trade_band_bps
                ),
            ));
        }
        for (key, v) in [
            ("deadline_ms", self.deadline_ms),
            ("horizon_secs", self.horizon_secs),
            ("outputs_kept", self.outputs_kept as u64),
            ("accuracy_history", self.accuracy_history as u64),
            ("backtest.batch", self.backtest.batch as u64),
        ] {
            if v == 0 {
                return Err((
                    format!("orchestrator.{key}"),
                    "expected a whole number ≥ 1, got 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// Scoring horizon, ms.
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_secs as i64 * 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_trigger_on_each_second() {
        let c = OrchestratorConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.trigger(), Ok(Trigger::EveryCandle(Timeframe::S1)));
    }

    #[test]
    fn bad_keys_are_named() {
        let c: OrchestratorConfig = toml::from_str("trigger = { candle = \"2m\" }").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "orchestrator.trigger.candle");
        let c: OrchestratorConfig = toml::from_str("buy_threshold = 1.5").unwrap();
        let (key, msg) = c.validate().unwrap_err();
        assert_eq!(key, "orchestrator.buy_threshold");
        assert!(msg.contains("1.5"), "{msg}");
        let c: OrchestratorConfig = toml::from_str("trigger = { seconds = 0 }").unwrap();
        assert_eq!(c.validate().unwrap_err().0, "orchestrator.trigger.seconds");
        assert!(toml::from_str::<OrchestratorConfig>("deadline = 5").is_err());
    }

    #[test]
    fn candle_trigger_fires_once_per_new_candle() {
        let t = Trigger::EveryCandle(Timeframe::S1);
        assert_eq!(t.due(None, 5_000, |_| Some(4_000)), Some(4_000));
        assert_eq!(t.due(Some(4_000), 5_400, |_| Some(4_000)), None);
        assert_eq!(t.due(Some(4_000), 6_000, |_| Some(5_000)), Some(5_000));
        assert_eq!(t.due(None, 6_000, |_| None), None);
        let p = Trigger::EveryMillis(5_000);
        assert_eq!(p.due(Some(10_000), 14_999, |_| None), None);
        assert_eq!(p.due(Some(10_000), 15_000, |_| None), Some(15_000));
    }
}

#[cfg(test)]
mod file_tests {
    use crate::config::{Config, ConfigError};

    #[test]
    fn the_shipped_file_and_errors_name_file_and_key() {
        let shipped = Config::load(Some(std::path::Path::new("config.toml"))).unwrap();
        assert_eq!(shipped.orchestrator, super::OrchestratorConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[orchestrator]\nsell_threshold = -0.1\n").unwrap();
        let e = Config::load(Some(&path)).unwrap_err();
        assert!(matches!(e, ConfigError::Key { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("bad.toml"), "{text}");
        assert!(text.contains("orchestrator.sell_threshold"), "{text}");
        assert!(text.contains("0..=1"), "{text}");
    }
}
