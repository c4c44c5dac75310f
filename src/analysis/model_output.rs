//! The standardized model output (design: "Base Output Format (ModelOutput)") and a bounded
//! per-model history of outputs so an input built at time `t` only sees outputs made at or
//! before `t`. Pure logic.
//!
//! The design's free-form `predictions` dict is typed here: the standard fields are required,
//! the model-specific ones (predicted pivots, Q-values, expected reward) are optional.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::market::types::{Price, Symbol, Timeframe};

/// A trade action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Go long / add.
    Buy,
    /// Go short / reduce.
    Sell,
    /// Do nothing.
    Hold,
}

impl Action {
    /// All actions in the fixed order used by encodings and value vectors.
    pub const ALL: [Action; 3] = [Action::Buy, Action::Sell, Action::Hold];
}

/// One number per action (probabilities or Q-values).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActionValues {
    /// Value for BUY.
    #[serde(rename = "BUY")]
    pub buy: f64,
    /// Value for SELL.
    #[serde(rename = "SELL")]
    pub sell: f64,
    /// Value for HOLD.
    #[serde(rename = "HOLD")]
    pub hold: f64,
}

impl ActionValues {
    /// Values in [`Action::ALL`] order.
    pub fn as_array(&self) -> [f64; 3] {
        [self.buy, self.sell, self.hold]
    }

    /// The value for one action.
    pub fn of(&self, action: Action) -> f64 {
        match action {
            Action::Buy => self.buy,
            Action::Sell => self.sell,
            Action::Hold => self.hold,
        }
    }
}

/// Which extreme a predicted pivot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SwingKind {
    /// A swing high.
    High,
    /// A swing low.
    Low,
}

/// A predicted next pivot of one level: a price-time point (plots as a trend line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictedPivot {
    /// Timeframe of the pivot series.
    pub timeframe: Timeframe,
    /// Pivot level, 1..=5.
    pub level: u8,
    /// High or low.
    pub kind: SwingKind,
    /// Predicted price (rounded from the model's float to the fixed-point grid).
    pub price: Price,
    /// Predicted time, ms since the UNIX epoch.
    pub time_ms: i64,
    /// Confidence in 0..=1.
    pub confidence: f64,
}

/// The typed `predictions` of a model output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predictions {
    /// Suggested action.
    pub action: Action,
    /// Confidence in the action, 0..=1.
    pub action_confidence: f64,
    /// Action probabilities (sum to 1 for classifiers).
    pub probabilities: ActionValues,
    /// Expected price direction, -1..=1.
    pub direction_vector: f64,
    /// Confidence in the direction, 0..=1.
    pub direction_confidence: f64,
    /// Predicted next pivots (CNN models), any number of levels and timeframes.
    #[serde(default)]
    pub pivots: Vec<PredictedPivot>,
    /// Q-values per action (RL models).
    #[serde(default)]
    pub q_values: Option<ActionValues>,
    /// Expected reward (RL models).
    #[serde(default)]
    pub expected_reward: Option<f64>,
}

/// One output of one model, as every model publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOutput {
    /// Model family: `cnn`, `rl`, `lstm`, `transformer`, ...
    pub model_type: String,
    /// Specific model identifier, e.g. `williams_cnn_v2`.
    pub model_name: String,
    /// Canonical symbol the output is about.
    pub symbol: Symbol,
    /// When the output was produced, ms since the UNIX epoch.
    pub timestamp_ms: i64,
    /// Overall confidence, 0..=1.
    pub confidence: f64,
    /// Typed predictions.
    pub predictions: Predictions,
    /// Named hidden activations for cross-model feeding.
    #[serde(default)]
    pub hidden_states: BTreeMap<String, Vec<f32>>,
    /// Free-form model information (version, training date, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What is wrong with a model output.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelOutputError {
    /// A number is NaN or infinite.
    #[error("model output {model}: {field} is not finite ({value})")]
    NonFinite {
        /// Model name.
        model: String,
        /// Field path.
        field: String,
        /// The offending value.
        value: f64,
    },
    /// A number lies outside its documented range.
    #[error("model output {model}: {field} = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// Model name.
        model: String,
        /// Field path.
        field: String,
        /// The offending value.
        value: f64,
        /// Inclusive lower bound.
        min: f64,
        /// Inclusive upper bound.
        max: f64,
    },
}

impl ModelOutput {
    /// Checks that every number is finite and every bounded number is in range.
    pub fn validate(&self) -> Result<(), ModelOutputError> {
        let model = || self.model_name.clone();
        let ranged = |field: &str, value: f64, min: f64, max: f64| {
            if !value.is_finite() {
                return Err(ModelOutputError::NonFinite {
                    model: model(),
                    field: field.to_string(),
                    value,
                });
            }
            if value < min || value > max {
                return Err(ModelOutputError::OutOfRange {
                    model: model(),
                    field: field.to_string(),
                    value,
                    min,
                    max,
                });
            }
            Ok(())
        };
        let any = |field: &str, value: f64| ranged(field, value, f64::MIN, f64::MAX);
        let p = &self.predictions;
        ranged("confidence", self.confidence, 0.0, 1.0)?;
        ranged("action_confidence", p.action_confidence, 0.0, 1.0)?;
        ranged("direction_vector", p.direction_vector, -1.0, 1.0)?;
        ranged("direction_confidence", p.direction_confidence, 0.0, 1.0)?;
        for (a, v) in Action::ALL.iter().zip(p.probabilities.as_array()) {
            ranged(&format!("probabilities.{a:?}"), v, 0.0, 1.0)?;
        }
        if let Some(q) = &p.q_values {
            for (a, v) in Action::ALL.iter().zip(q.as_array()) {
                any(&format!("q_values.{a:?}"), v)?;
            }
        }
        if let Some(r) = p.expected_reward {
            any("expected_reward", r)?;
        }
        for (i, pv) in p.pivots.iter().enumerate() {
            ranged(&format!("pivots[{i}].confidence"), pv.confidence, 0.0, 1.0)?;
        }
        for (name, values) in &self.hidden_states {
            if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                any(&format!("hidden_states.{name}[{i}]"), *v as f64)?;
            }
        }
        Ok(())
    }
}

/// Outputs kept per model by default: enough to look back past a burst of fast inferences.
pub const DEFAULT_OUTPUTS_KEPT: usize = 64;

/// Bounded history of outputs per (symbol, model name), so "the last output at `t`" stays
/// answerable after newer outputs arrived.
#[derive(Debug, Clone)]
pub struct ModelOutputStore {
    per_model: BTreeMap<(Symbol, String), VecDeque<ModelOutput>>,
    kept: usize,
}

impl Default for ModelOutputStore {
    fn default() -> Self {
        Self::new(DEFAULT_OUTPUTS_KEPT)
    }
}

impl ModelOutputStore {
    /// A store keeping at most `kept` (at least 1) outputs per symbol and model.
    pub fn new(kept: usize) -> Self {
        Self {
            per_model: BTreeMap::new(),
            kept: kept.max(1),
        }
    }

    /// Records an output, kept in timestamp order (a late one is inserted in place).
    pub fn record(&mut self, output: ModelOutput) {
        let key = (output.symbol.clone(), output.model_name.clone());
        let ring = self.per_model.entry(key).or_default();
        let at = ring.partition_point(|o| o.timestamp_ms <= output.timestamp_ms);
        ring.insert(at, output);
        if ring.len() > self.kept {
            ring.pop_front();
        }
    }

    /// The newest output of `model_name` about `symbol` with `timestamp_ms <= t_ms`.
    pub fn latest_at(&self, symbol: &str, model_name: &str, t_ms: i64) -> Option<&ModelOutput> {
        let ring = self
            .per_model
            .get(&(symbol.to_string(), model_name.to_string()))?;
        let n = ring.partition_point(|o| o.timestamp_ms <= t_ms);
        n.checked_sub(1).map(|i| &ring[i])
    }

    /// The newest output at or before `t_ms` about `symbol` of every model that has one, by
    /// model name.
    pub fn all_at(&self, symbol: &str, t_ms: i64) -> BTreeMap<String, ModelOutput> {
        self.per_model
            .iter()
            .filter(|((s, _), _)| s == symbol)
            .filter_map(|((_, name), ring)| {
                let n = ring.partition_point(|o| o.timestamp_ms <= t_ms);
                Some((name.clone(), ring.get(n.checked_sub(1)?)?.clone()))
            })
            .collect()
    }

    /// Outputs of `model_name` about `symbol` with `from_ms <= timestamp_ms <= to_ms`, oldest
    /// first.
    pub fn range(
        &self,
        symbol: &str,
        model_name: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = &ModelOutput> + '_ {
        let ring = self
            .per_model
            .get(&(symbol.to_string(), model_name.to_string()));
        let (lo, hi) = ring.map_or((0, 0), |r| {
            (
                r.partition_point(|o| o.timestamp_ms < from_ms),
                r.partition_point(|o| o.timestamp_ms <= to_ms),
            )
        });
        ring.into_iter().flat_map(move |r| r.range(lo..hi.max(lo)))
    }

    /// `(symbol, model name)` pairs seen so far.
    pub fn models(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.per_model.keys().map(|(s, m)| (s.as_str(), m.as_str()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid output of `name` (type `kind`) at `t`.
    pub(crate) fn output(kind: &str, name: &str, t: i64) -> ModelOutput {
        ModelOutput {
            model_type: kind.into(),
            model_name: name.into(),
            symbol: "ETHUSDT".into(),
            timestamp_ms: t,
            confidence: 0.78,
            predictions: Predictions {
                action: Action::Hold,
                action_confidence: 0.78,
                probabilities: ActionValues {
                    buy: 0.3,
                    sell: 0.2,
                    hold: 0.5,
                },
                direction_vector: 0.1,
                direction_confidence: 0.65,
                pivots: vec![],
                q_values: Some(ActionValues {
                    buy: 0.45,
                    sell: 0.32,
                    hold: 0.78,
                }),
                expected_reward: Some(0.023),
            },
            hidden_states: BTreeMap::from([("advantage".into(), vec![0.12, -0.08, 0.22])]),
            metadata: BTreeMap::from([("epsilon".into(), "0.1".into())]),
        }
    }

    #[test]
    fn serde_round_trip_uses_design_names() {
        let mut o = output("cnn", "williams_cnn_v2", 1_000);
        o.predictions.pivots.push(PredictedPivot {
            timeframe: Timeframe::M1,
            level: 2,
            kind: SwingKind::High,
            price: Price::parse("3012.5").unwrap(),
            time_ms: 120_000,
            confidence: 0.6,
        });
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains(r#""action":"HOLD""#), "{json}");
        assert!(json.contains(r#""BUY":0.3"#), "{json}");
        let back: ModelOutput = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn minimal_json_fills_optional_fields() {
        let json = r#"{"model_type":"lstm","model_name":"l1","symbol":"ETHUSDT",
            "timestamp_ms":5,"confidence":0.5,"predictions":{"action":"SELL",
            "action_confidence":0.5,"probabilities":{"BUY":0.2,"SELL":0.5,"HOLD":0.3},
            "direction_vector":-0.4,"direction_confidence":0.5}}"#;
        let o: ModelOutput = serde_json::from_str(json).unwrap();
        assert_eq!(o.predictions.action, Action::Sell);
        assert!(o.predictions.q_values.is_none() && o.hidden_states.is_empty());
        assert!(o.validate().is_ok());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut o = output("rl", "dqn", 0);
        o.predictions.direction_vector = 1.5;
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("direction_vector = 1.5"), "{e}");
        let mut o = output("rl", "dqn", 0);
        o.hidden_states.insert("h".into(), vec![0.0, f32::NAN]);
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("hidden_states.h[1]"), "{e}");
        let mut o = output("rl", "dqn", 0);
        o.predictions.expected_reward = Some(f64::INFINITY);
        assert!(matches!(
            o.validate(),
            Err(ModelOutputError::NonFinite { .. })
        ));
    }

    #[test]
    fn store_answers_latest_at_time_and_is_bounded() {
        let mut s = ModelOutputStore::new(3);
        for t in [10, 30, 20, 40] {
            s.record(output("cnn", "a", t));
        }
        s.record(output("rl", "b", 25));
        let mut btc = output("rl", "b", 5);
        btc.symbol = "BTCUSDT".into();
        s.record(btc);
        assert_eq!(s.latest_at("ETHUSDT", "a", 35).unwrap().timestamp_ms, 30);
        assert_eq!(s.latest_at("ETHUSDT", "a", 40).unwrap().timestamp_ms, 40);
        // 10 was evicted (capacity 3), so nothing is known at 15.
        assert!(s.latest_at("ETHUSDT", "a", 15).is_none());
        assert_eq!(s.latest_at("ETHUSDT", "a", 20).unwrap().timestamp_ms, 20);
        assert_eq!(s.all_at("ETHUSDT", 24).len(), 1);
        assert_eq!(s.all_at("ETHUSDT", 25).len(), 2);
        // Outputs about another symbol stay out of this symbol's inputs.
        assert_eq!(s.all_at("BTCUSDT", 100).len(), 1);
        assert_eq!(
            s.models().collect::<Vec<_>>(),
            vec![("BTCUSDT", "b"), ("ETHUSDT", "a"), ("ETHUSDT", "b")]
        );
    }
}
