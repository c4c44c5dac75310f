//! Every model output the orchestrator saw: the newest `kept` per model and symbol in memory,
//! queryable by model, symbol and time range, and the source of each input's
//! `last_predictions`. Pure logic.

use crate::analysis::model_output::{ModelOutput, ModelOutputError, ModelOutputStore};

/// The orchestrator's output store (wraps [`ModelOutputStore`], validating what goes in).
#[derive(Debug, Clone)]
pub struct OutputStore {
    inner: ModelOutputStore,
    recorded: u64,
    rejected: u64,
}

impl OutputStore {
    /// A store keeping `kept` outputs per model and symbol.
    pub fn new(kept: usize) -> Self {
        Self {
            inner: ModelOutputStore::new(kept),
            recorded: 0,
            rejected: 0,
        }
    }

    /// Records a valid output; a malformed one is counted and refused.
    pub fn record(&mut self, output: ModelOutput) -> Result<(), ModelOutputError> {
        if let Err(e) = output.validate() {
            self.rejected += 1;
            return Err(e);
        }
        self.inner.record(output);
        self.recorded += 1;
        Ok(())
    }

    /// Outputs of `model` about `symbol` in `from_ms..=to_ms`, oldest first.
    pub fn range(&self, symbol: &str, model: &str, from_ms: i64, to_ms: i64) -> Vec<&ModelOutput> {
        self.inner.range(symbol, model, from_ms, to_ms).collect()
    }

    /// The newest output of `model` about `symbol` at or before `t_ms`.
    pub fn latest_at(&self, symbol: &str, model: &str, t_ms: i64) -> Option<&ModelOutput> {
        self.inner.latest_at(symbol, model, t_ms)
    }

    /// The store inputs read `last_predictions` from.
    pub fn outputs(&self) -> &ModelOutputStore {
        &self.inner
    }

    /// Outputs recorded so far.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Malformed outputs refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::model_output::tests::output;

    #[test]
    fn keeps_the_newest_per_model_and_answers_ranges() {
        let mut s = OutputStore::new(1_000);
        for t in 0..1_500 {
            s.record(output("cnn", "cnn", t * 1_000)).unwrap();
            if t % 2 == 0 {
                s.record(output("rl", "dqn", t * 1_000)).unwrap();
            }
        }
        let all = s.range("ETHUSDT", "cnn", i64::MIN, i64::MAX);
        assert_eq!(all.len(), 1_000);
        assert_eq!(all[0].timestamp_ms, 500_000);
        let r = s.range("ETHUSDT", "dqn", 10_000, 20_000);
        let times: Vec<i64> = r.iter().map(|o| o.timestamp_ms).collect();
        assert_eq!(times, vec![10_000, 12_000, 14_000, 16_000, 18_000, 20_000]);
        assert!(s.range("ETHUSDT", "dqn", 20_001, 20_999).is_empty());
        assert!(s.range("BTCUSDT", "dqn", 0, i64::MAX).is_empty());
        assert_eq!(
            s.latest_at("ETHUSDT", "dqn", 21_500).unwrap().timestamp_ms,
            20_000
        );
        let mut bad = output("cnn", "cnn", 5);
        bad.confidence = 2.0;
        assert!(s.record(bad).is_err());
        assert_eq!((s.recorded(), s.rejected()), (2_250, 1));
    }
}
