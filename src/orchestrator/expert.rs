//! The expert interface of the mixture: anything that turns a [`BaseDataInput`] (plus the
//! same step's outputs of the experts it depends on) into a [`ModelOutput`], and a simple,
//! deterministic rule-based expert used as a baseline and in tests.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::{
    Action, ActionValues, ModelOutput, ModelOutputError, PredictedPivot, Predictions, SwingKind,
};
use crate::analysis::pivots::{PivotKind, Trend};
use crate::market::types::{Candle, Price, Timeframe};

/// Same-step outputs of other experts, by model name.
pub type Upstream = BTreeMap<String, ModelOutput>;

/// Why an expert produced no output for a step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpertError {
    /// The input lacks data the expert needs.
    #[error("{series}: need ≥{need} candles, got {got}")]
    InsufficientData {
        /// Which series.
        series: String,
        /// Candles needed.
        need: usize,
        /// Candles present.
        got: usize,
    },
    /// The input is not fit for this expert.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A same-step output this expert depends on is missing (its producer failed or was late).
    #[error("missing same-step output of {needs}")]
    MissingUpstream {
        /// The expert whose output is missing.
        needs: String,
    },
    /// The model itself failed.
    #[error("model failed: {0}")]
    Model(String),
    /// The expert returned a malformed output.
    #[error("invalid output: {0}")]
    InvalidOutput(ModelOutputError),
    /// No answer within the step deadline.
    #[error("no answer within {deadline_ms} ms")]
    Deadline {
        /// The deadline.
        deadline_ms: u64,
    },
    /// Still working on an earlier step, so this step was not given to it.
    #[error("still busy with an earlier step")]
    Busy,
    /// Its worker thread is gone (it panicked).
    #[error("worker thread stopped")]
    Crashed,
}

/// Anything that produces model outputs from the standard input.
///
/// Implementations run on the orchestrator's worker threads (never on the async reactor) and
/// may block; they must be deterministic for deterministic backtests.
pub trait Expert: Send {
    /// Model name of the outputs (unique within an orchestrator).
    fn name(&self) -> &str;

    /// Names of experts whose same-step outputs this one needs (e.g. the RL agent needs the
    /// CNN's hidden states); they run in an earlier stage of the step.
    fn depends_on(&self) -> Vec<String> {
        Vec::new()
    }

    /// True when the expert reads `input.last_predictions` (earlier steps' outputs): such
    /// steps must run in time order and cannot be batched ahead.
    fn uses_last_predictions(&self) -> bool {
        true
    }

    /// One output for `input`, given the same step's outputs of the experts it depends on.
    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError>;

    /// Outputs for many independent steps at once (backtests); must equal calling
    /// [`Self::infer`] on each. Batched models override this.
    fn infer_batch(
        &mut self,
        steps: &[(&BaseDataInput, &Upstream)],
    ) -> Vec<Result<ModelOutput, ExpertError>> {
        steps.iter().map(|(i, u)| self.infer(i, u)).collect()
    }

    /// Computes ahead, in one batch, the part of the coming steps on `inputs` that does not
    /// depend on the account (a backtest then steps them one by one, each seeing the position
    /// the earlier steps' fills left); later [`Self::infer`] calls must answer as without it.
    fn prefetch(&mut self, _inputs: &[&BaseDataInput]) {}

    /// The account's position in `symbol` is now `direction` (−1 short, 0 flat, 1 long):
    /// experts whose state holds the position (the DQN) use it from the next step on.
    fn observe_position(&mut self, _symbol: &str, _direction: i8) {}
}

impl Expert for Box<dyn Expert> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn depends_on(&self) -> Vec<String> {
        (**self).depends_on()
    }
    fn uses_last_predictions(&self) -> bool {
        (**self).uses_last_predictions()
    }
    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        (**self).infer(input, upstream)
    }
    fn infer_batch(
        &mut self,
        steps: &[(&BaseDataInput, &Upstream)],
    ) -> Vec<Result<ModelOutput, ExpertError>> {
        (**self).infer_batch(steps)
    }
    fn prefetch(&mut self, inputs: &[&BaseDataInput]) {
        (**self).prefetch(inputs)
    }
    fn observe_position(&mut self, symbol: &str, direction: i8) {
        (**self).observe_position(symbol, direction)
    }
}

/// Settings of [`PivotMomentumExpert`].
#[derive(Debug, Clone, PartialEq)]
pub struct PivotMomentumConfig {
    /// Model name of its outputs.
    pub name: String,
    /// Candles of momentum look-back.
    pub lookback: usize,
    /// Candles needed on the series it reads (at least `lookback + 1`).
    pub min_candles: usize,
    /// Weight of the momentum z-score in the score.
    pub momentum_weight: f64,
    /// Weight of the pivot trend (levels 1 and 2) in the score.
    pub trend_weight: f64,
    /// Weight of the MACD histogram's sign in the score.
    pub macd_weight: f64,
}

impl Default for PivotMomentumConfig {
    fn default() -> Self {
        Self {
            name: "pivot_momentum".into(),
            lookback: 20,
            min_candles: 30,
            momentum_weight: 0.5,
            trend_weight: 0.35,
            macd_weight: 0.15,
        }
    }
}

/// A rule-based expert: momentum of the finest candle series, the Williams trend of its
/// levels 1 and 2, and the MACD histogram's sign, blended into a score in −1..=1.
///
/// Probabilities: BUY = max(score, 0), SELL = max(−score, 0), HOLD = 1 − |score|. It also
/// predicts the next level-1 pivot: the opposite kind of the last known one, at the price of
/// the previous pivot of that kind, one average pivot spacing after the last pivot.
#[derive(Debug, Clone)]
pub struct PivotMomentumExpert {
    cfg: PivotMomentumConfig,
}

impl PivotMomentumExpert {
    /// An expert with these settings.
    pub fn new(cfg: PivotMomentumConfig) -> Self {
        Self { cfg }
    }

    /// The score in −1..=1 and the series (timeframe index) it read.
    fn score(&self, input: &BaseDataInput) -> Result<(f64, usize), ExpertError> {
        let (tf_index, candles) = finest_series(input).ok_or(ExpertError::InsufficientData {
            series: "ohlcv".into(),
            need: self.cfg.min_candles,
            got: 0,
        })?;
        let need = self.cfg.min_candles.max(self.cfg.lookback + 1).max(2);
        if candles.len() < need {
            return Err(ExpertError::InsufficientData {
                series: format!("ohlcv_{}", Timeframe::ALL[tf_index].as_str()),
                need,
                got: candles.len(),
            });
        }
        let closes: Vec<f64> = candles[candles.len() - self.cfg.lookback - 1..]
            .iter()
            .map(|c| c.close.to_f64())
            .collect();
        if closes.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(ExpertError::InvalidInput("non-positive close".into()));
        }
        let rets: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let total: f64 = rets.iter().sum();
        let mean = total / rets.len() as f64;
        let var = rets.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rets.len() as f64;
        let spread = var.sqrt() * (rets.len() as f64).sqrt();
        let z = if spread > 0.0 {
            (total / spread).clamp(-3.0, 3.0) / 3.0
        } else {
            0.0
        };
        let p = &input.pivots[tf_index];
        let trend = p.trends[..2]
            .iter()
            .map(|t| match t {
                Trend::Up => 1.0,
                Trend::Down => -1.0,
                Trend::Sideways | Trend::Unknown => 0.0,
            })
            .sum::<f64>()
            / 2.0;
        let macd = input.indicators[tf_index]
            .and_then(|i| i.values.get("macd_hist"))
            .map_or(0.0, |h| {
                if h > 0.0 {
                    1.0
                } else if h < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            });
        let s = self.cfg.momentum_weight * z
            + self.cfg.trend_weight * trend
            + self.cfg.macd_weight * macd;
        Ok((s.clamp(-1.0, 1.0), tf_index))
    }

    fn next_pivot(
        input: &BaseDataInput,
        tf_index: usize,
        confidence: f64,
    ) -> Option<PredictedPivot> {
        let level1 = &input.pivots[tf_index].levels[0];
        let last = level1.last()?;
        let kind = match last.kind {
            PivotKind::High => PivotKind::Low,
            PivotKind::Low => PivotKind::High,
        };
        let prev_same = level1.iter().rev().find(|p| p.kind == kind)?;
        let spacing = if level1.len() >= 2 {
            (last.time_ms - level1[0].time_ms) / (level1.len() as i64 - 1)
        } else {
            Timeframe::ALL[tf_index].millis()
        };
        Some(PredictedPivot {
            timeframe: Timeframe::ALL[tf_index],
            level: 1,
            kind: match kind {
                PivotKind::High => SwingKind::High,
                PivotKind::Low => SwingKind::Low,
            },
            price: prev_same.price,
            time_ms: last.time_ms + spacing.max(Timeframe::ALL[tf_index].millis()),
            confidence,
        })
    }
}

/// The finest non-empty candle series of the input, with its timeframe index.
pub fn finest_series(input: &BaseDataInput) -> Option<(usize, &[Candle])> {
    input
        .ohlcv
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_empty())
        .map(|(i, s)| (i, s.as_slice()))
}

/// The close of the newest candle in the finest series (the price a decision refers to).
pub fn last_close(input: &BaseDataInput) -> Option<Price> {
    finest_series(input)
        .and_then(|(_, s)| s.last())
        .map(|c| c.close)
}

impl Expert for PivotMomentumExpert {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn uses_last_predictions(&self) -> bool {
        false
    }

    fn infer(
        &mut self,
        input: &BaseDataInput,
        _upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        let (s, tf_index) = self.score(input)?;
        let probabilities = ActionValues {
            buy: s.max(0.0),
            sell: (-s).max(0.0),
            hold: 1.0 - s.abs(),
        };
        let (action, confidence) = Action::ALL.into_iter().zip(probabilities.as_array()).fold(
            (Action::Hold, f64::MIN),
            |best, (a, p)| {
                if p > best.1 { (a, p) } else { best }
            },
        );
        let pivot = Self::next_pivot(input, tf_index, 0.5 * (1.0 + s.abs()) / 1.5);
        let out = ModelOutput {
            model_type: "rule".into(),
            model_name: self.cfg.name.clone(),
            symbol: input.symbol.clone(),
            timestamp_ms: input.timestamp_ms,
            confidence,
            predictions: Predictions {
                action,
                action_confidence: confidence,
                probabilities,
                direction_vector: s,
                direction_confidence: s.abs(),
                pivots: pivot.into_iter().collect(),
                q_values: None,
                expected_reward: None,
            },
            hidden_states: BTreeMap::from([("score".into(), vec![s as f32])]),
            metadata: BTreeMap::from([(
                "series".into(),
                Timeframe::ALL[tf_index].as_str().to_string(),
            )]),
        };
        out.validate().map_err(ExpertError::InvalidOutput)?;
        Ok(out)
    }
}

/// Wraps an expert and answers only after a fixed delay: emulates a slow accelerator or a
/// remote model, to exercise deadlines with real outputs.
#[derive(Debug, Clone)]
pub struct Delayed<E> {
    inner: E,
    delay: Duration,
}

impl<E: Expert> Delayed<E> {
    /// `inner`, answering `delay` late.
    pub fn new(inner: E, delay: Duration) -> Self {
        Self { inner, delay }
    }
}

impl<E: Expert> Expert for Delayed<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn depends_on(&self) -> Vec<String> {
        self.inner.depends_on()
    }
    fn uses_last_predictions(&self) -> bool {
        self.inner.uses_last_predictions()
    }
    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        std::thread::sleep(self.delay);
        self.inner.infer(input, upstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::input::InputConfig;
    use crate::analysis::model_output::ModelOutputStore;
    use crate::orchestrator::history::HistoryFeed;
    use crate::orchestrator::history::tests::zigzag;

    /// The input after `n` 1 m candles whose close moves by `step` each minute (with a
    /// small zig-zag so there are pivots and a variance).
    fn trending(n: usize, step: f64) -> BaseDataInput {
        let mut feed = HistoryFeed::new("ETHUSDT", 60_000, InputConfig::default()).unwrap();
        let mut t = 0;
        for c in zigzag(n, step) {
            t = feed.push(&c).unwrap();
        }
        feed.input(&ModelOutputStore::default(), t)
    }

    #[test]
    fn follows_the_trend_and_says_why_it_cannot() {
        let mut e = PivotMomentumExpert::new(PivotMomentumConfig::default());
        let up = e.infer(&trending(120, 2.0), &Upstream::new()).unwrap();
        // Momentum saturates; the zig-zag's MACD histogram disagrees a little.
        assert!(up.predictions.direction_vector > 0.3, "{up:?}");
        assert!(up.predictions.probabilities.buy > up.predictions.probabilities.sell);
        assert_eq!(up.metadata["series"], "1m");
        let down = e.infer(&trending(120, -2.0), &Upstream::new()).unwrap();
        assert!(down.predictions.direction_vector < -0.3, "{down:?}");
        let p = down.predictions.probabilities;
        assert!(p.sell > p.buy && p.buy == 0.0);
        assert!((p.buy + p.sell + p.hold - 1.0).abs() < 1e-12);
        // Same input, same output.
        assert_eq!(
            down,
            e.infer(&trending(120, -2.0), &Upstream::new()).unwrap()
        );
        assert_eq!(
            e.infer(&trending(10, 1.0), &Upstream::new()),
            Err(ExpertError::InsufficientData {
                series: "ohlcv_1m".into(),
                need: 30,
                got: 10
            })
        );
    }
}
