//! The mixture of experts: gating weights from each expert's recent accuracy, confidence
//! filtering, separate buy and sell thresholds adjustable while running, and a [`Decision`]
//! that records why it acted or held. Pure logic.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::config::GatingConfig;
use crate::analysis::model_output::{Action, ActionValues, ModelOutput};
use crate::market::types::{Price, Symbol};

/// Combined probability needed to buy and to sell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Combined BUY probability needed to buy.
    pub buy: f64,
    /// Combined SELL probability needed to sell.
    pub sell: f64,
}

/// A threshold outside 0..=1 or not a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{side} threshold {value} is not in 0..=1")]
pub struct ThresholdError {
    /// `buy` or `sell`.
    pub side: &'static str,
    /// The refused value.
    pub value: f64,
}

/// Shared, lock-free handle on the thresholds: the screen sets them, the decision loop reads
/// them at its next step.
#[derive(Debug, Clone)]
pub struct ThresholdHandle(Arc<ArcSwap<Thresholds>>);

impl ThresholdHandle {
    /// A handle starting at `buy` and `sell` (validated).
    pub fn new(buy: f64, sell: f64) -> Result<Self, ThresholdError> {
        let t = checked(buy, sell)?;
        Ok(Self(Arc::new(ArcSwap::from_pointee(t))))
    }

    /// Replaces both thresholds at once (readers never see half an update).
    pub fn set_thresholds(&self, buy: f64, sell: f64) -> Result<(), ThresholdError> {
        self.0.store(Arc::new(checked(buy, sell)?));
        Ok(())
    }

    /// The thresholds now.
    pub fn get(&self) -> Thresholds {
        **self.0.load()
    }
}

fn checked(buy: f64, sell: f64) -> Result<Thresholds, ThresholdError> {
    for (side, value) in [("buy", buy), ("sell", sell)] {
        if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
            return Err(ThresholdError { side, value });
        }
    }
    Ok(Thresholds { buy, sell })
}

/// Gating weights for experts with these accuracies: softmax over `accuracy / temperature`,
/// each raised to at least `floor`, renormalized to sum to 1.
pub fn gate(accuracies: &[f64], cfg: &GatingConfig) -> Vec<f64> {
    if accuracies.is_empty() {
        return Vec::new();
    }
    let t = cfg.temperature.max(1e-9);
    let max = accuracies.iter().copied().fold(f64::MIN, f64::max);
    let exps: Vec<f64> = accuracies.iter().map(|a| ((a - max) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let floored: Vec<f64> = exps.iter().map(|e| (e / sum).max(cfg.floor)).collect();
    let total: f64 = floored.iter().sum();
    floored.iter().map(|w| w / total).collect()
}

/// What one expert said in a step and how much it counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpertVote {
    /// Model name.
    pub model: String,
    /// Its action.
    pub action: Action,
    /// Its confidence.
    pub confidence: f64,
    /// Its action probabilities.
    pub probabilities: ActionValues,
    /// Its Q-values (RL models).
    pub q_values: Option<ActionValues>,
    /// Its recent accuracy used for gating.
    pub accuracy: f64,
    /// Its gating weight (0 when it did not vote).
    pub weight: f64,
    /// False when filtered out for low confidence.
    pub voted: bool,
}

/// An expert that gave no output this step, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedExpert {
    /// Model name.
    pub model: String,
    /// The reason (error, deadline, busy).
    pub reason: String,
}

/// The orchestrator's decision for one symbol at one step, with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Symbol.
    pub symbol: Symbol,
    /// Step time, ms since the epoch.
    pub time_ms: i64,
    /// BUY, SELL or HOLD.
    pub action: Action,
    /// Combined probability of the action taken (of HOLD when holding).
    pub confidence: f64,
    /// Weighted combination of the voting experts' probabilities.
    pub combined: ActionValues,
    /// Price the decision refers to (last close of the finest series).
    pub price: Option<Price>,
    /// Thresholds in force at this step.
    pub thresholds: Thresholds,
    /// What every expert said, with weights.
    pub votes: Vec<ExpertVote>,
    /// Experts without output this step.
    pub skipped: Vec<SkippedExpert>,
    /// Why it acted or held, in words.
    pub reason: String,
}

/// Combines the step's outputs into a decision. `accuracy(model)` is the expert's recent
/// accuracy (the prior when unscored). Outputs are taken in the given order (keep it stable:
/// float sums depend on order and backtests must be reproducible).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    symbol: &str,
    time_ms: i64,
    price: Option<Price>,
    outputs: &[&ModelOutput],
    skipped: Vec<SkippedExpert>,
    accuracy: impl Fn(&str) -> f64,
    gating: &GatingConfig,
    thresholds: Thresholds,
) -> Decision {
    let mut votes: Vec<ExpertVote> = outputs
        .iter()
        .map(|o| ExpertVote {
            model: o.model_name.clone(),
            action: o.predictions.action,
            confidence: o.confidence,
            probabilities: o.predictions.probabilities,
            q_values: o.predictions.q_values,
            accuracy: accuracy(&o.model_name),
            weight: 0.0,
            voted: o.confidence >= gating.min_confidence,
        })
        .collect();
    let voting: Vec<usize> = (0..votes.len()).filter(|&i| votes[i].voted).collect();
    let weights = gate(
        &voting
            .iter()
            .map(|&i| votes[i].accuracy)
            .collect::<Vec<_>>(),
        gating,
    );
    let mut combined = [0.0; 3];
    for (&i, w) in voting.iter().zip(&weights) {
        votes[i].weight = *w;
        let p = votes[i].probabilities.as_array();
        let sum: f64 = p.iter().sum();
        for k in 0..3 {
            // Probabilities are renormalized so a model whose values do not sum to 1 weighs
            // what its gate says, no more.
            combined[k] += w * if sum > 0.0 { p[k] / sum } else { 0.0 };
        }
    }
    let combined = ActionValues {
        buy: combined[0],
        sell: combined[1],
        hold: if voting.is_empty() { 1.0 } else { combined[2] },
    };
    let (action, confidence, reason) = if voting.is_empty() {
        let why = if votes.is_empty() {
            "no expert produced an output".to_string()
        } else {
            format!(
                "no expert reached confidence {:.2} ({})",
                gating.min_confidence,
                votes
                    .iter()
                    .map(|v| format!("{} {:.2}", v.model, v.confidence))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        (Action::Hold, 1.0, format!("HOLD: {why}"))
    } else {
        let buy_ok = combined.buy >= thresholds.buy;
        let sell_ok = combined.sell >= thresholds.sell;
        match (buy_ok, sell_ok) {
            (true, false) | (true, true) if combined.buy > combined.sell => (
                Action::Buy,
                combined.buy,
                format!(
                    "BUY: combined BUY {:.3} ≥ buy threshold {:.3} (SELL {:.3})",
                    combined.buy, thresholds.buy, combined.sell
                ),
            ),
            (false, true) | (true, true) if combined.sell > combined.buy => (
                Action::Sell,
                combined.sell,
                format!(
                    "SELL: combined SELL {:.3} ≥ sell threshold {:.3} (BUY {:.3})",
                    combined.sell, thresholds.sell, combined.buy
                ),
            ),
            (true, true) => (
                Action::Hold,
                combined.hold,
                format!(
                    "HOLD: BUY and SELL tie at {:.3}, both over their thresholds",
                    combined.buy
                ),
            ),
            _ => (
                Action::Hold,
                combined.hold,
                format!(
                    "HOLD: BUY {:.3} < {:.3} and SELL {:.3} < {:.3}",
                    combined.buy, thresholds.buy, combined.sell, thresholds.sell
                ),
            ),
        }
    };
    Decision {
        symbol: symbol.into(),
        time_ms,
        action,
        confidence,
        combined,
        price,
        thresholds,
        votes,
        skipped,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::model_output::tests::output;

    fn said(name: &str, buy: f64, sell: f64, conf: f64) -> ModelOutput {
        let mut o = output("rule", name, 1_000);
        o.confidence = conf;
        o.predictions.probabilities = ActionValues {
            buy,
            sell,
            hold: 1.0 - buy - sell,
        };
        o
    }

    #[test]
    fn gate_prefers_accurate_experts_and_respects_the_floor() {
        let cfg = GatingConfig {
            temperature: 0.05,
            floor: 0.1,
            ..GatingConfig::default()
        };
        let w = gate(&[0.9, 0.4], &cfg);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w[0] > 0.85 && w[1] >= 0.09, "{w:?}");
        let even = gate(&[0.6, 0.6, 0.6], &cfg);
        assert!(even.iter().all(|x| (x - 1.0 / 3.0).abs() < 1e-12));
        assert!(gate(&[], &cfg).is_empty());
    }

    #[test]
    fn thresholds_decide_and_are_recorded_in_the_reasons() {
        let g = GatingConfig::default();
        let a = said("a", 0.7, 0.1, 0.8);
        let b = said("b", 0.5, 0.2, 0.6);
        let low = said("c", 0.0, 1.0, 0.1);
        let th = ThresholdHandle::new(0.55, 0.55).unwrap();
        let d = decide(
            "ETHUSDT",
            1,
            None,
            &[&a, &b, &low],
            vec![],
            |_| 0.5,
            &g,
            th.get(),
        );
        assert_eq!(d.action, Action::Buy);
        assert!((d.combined.buy - 0.6).abs() < 1e-12, "{:?}", d.combined);
        assert!(d.reason.contains("≥ buy threshold 0.550"), "{}", d.reason);
        assert!(!d.votes[2].voted && d.votes[2].weight == 0.0);
        // Raised while running: the next decision holds.
        th.set_thresholds(0.65, 0.3).unwrap();
        let d = decide("ETHUSDT", 2, None, &[&a, &b], vec![], |_| 0.5, &g, th.get());
        assert_eq!(d.action, Action::Hold);
        assert_eq!(
            d.thresholds,
            Thresholds {
                buy: 0.65,
                sell: 0.3
            }
        );
        assert!(
            d.reason.starts_with("HOLD: BUY 0.600 < 0.650"),
            "{}",
            d.reason
        );
        assert_eq!(
            th.set_thresholds(1.5, 0.2),
            Err(ThresholdError {
                side: "buy",
                value: 1.5
            })
        );
        assert_eq!(th.get().buy, 0.65);
    }

    #[test]
    fn accuracy_moves_the_decision_and_nothing_voting_holds() {
        let g = GatingConfig::default();
        let bull = said("bull", 0.8, 0.1, 0.9);
        let bear = said("bear", 0.1, 0.8, 0.9);
        let th = Thresholds {
            buy: 0.55,
            sell: 0.55,
        };
        let acc = |m: &str| if m == "bear" { 0.8 } else { 0.4 };
        let d = decide("X", 1, None, &[&bull, &bear], vec![], acc, &g, th);
        assert_eq!(d.action, Action::Sell, "{}", d.reason);
        assert!(d.votes[1].weight > d.votes[0].weight);
        let d = decide(
            "X",
            1,
            None,
            &[],
            vec![SkippedExpert {
                model: "cnn".into(),
                reason: "no answer within 5 ms".into(),
            }],
            acc,
            &g,
            th,
        );
        assert_eq!(d.action, Action::Hold);
        assert_eq!(d.reason, "HOLD: no expert produced an output");
        assert_eq!(d.skipped.len(), 1);
    }
}
