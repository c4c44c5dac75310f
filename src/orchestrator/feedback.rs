//! Scores predictions once their horizon has passed, keeps the prediction–outcome pairs and
//! each model's accuracy over time, and hands every scored pair to that model's trainer.
//! Pure logic (trainers are plain channels the model runtime consumes).
//!
//! - **Action**: at prediction time `t` the entry price is the last close of the finest
//!   series; at `t + horizon` the exit price is the close of the last candle of that series
//!   closed by then. With `r = exit / entry − 1` and the no-trade band `b`, the market went
//!   Up (`r > b`), Down (`r < −b`) or Flat; BUY is right on Up, SELL on Down, HOLD on Flat.
//! - **Pivot**: a predicted pivot (timeframe, level) is compared with the first pivot of that
//!   timeframe and level that became known after the prediction: kind, price error (bps) and
//!   time error. Unresolved after the pivot timeout, it expires unscored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use serde::{Deserialize, Serialize};

use super::expert::finest_series;
use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::{Action, ModelOutput, PredictedPivot, SwingKind};
use crate::analysis::pivots::PivotKind;
use crate::market::types::{Price, Symbol, Timeframe};

/// How predictions are scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringConfig {
    /// Action horizon, ms.
    pub horizon_ms: i64,
    /// No-trade band as a fraction (5 bps = 0.0005).
    pub band: f64,
    /// Predicted pivots expire unscored after this long, ms.
    pub pivot_timeout_ms: i64,
    /// Weight of the newest score in the exponentially weighted accuracy.
    pub decay: f64,
    /// Accuracy of a model before its first score.
    pub prior: f64,
    /// Accuracy points kept per model.
    pub history: usize,
    /// Prediction–outcome pairs kept per model.
    pub pairs_kept: usize,
}

/// Where the market went over the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Move {
    /// Above the band.
    Up,
    /// Below minus the band.
    Down,
    /// Within the band.
    Flat,
}

/// How an action prediction turned out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// Price at the prediction.
    pub entry: Price,
    /// Price at the horizon.
    pub exit: Price,
    /// `exit / entry − 1`.
    pub realized_return: f64,
    /// The market's move relative to the band.
    pub market: Move,
    /// True when the predicted action fits the move.
    pub correct: bool,
}

/// How a pivot prediction turned out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PivotOutcome {
    /// The prediction.
    pub predicted: PredictedPivot,
    /// Kind of the actual next pivot.
    pub actual_kind: SwingKind,
    /// Its price.
    pub actual_price: Price,
    /// Its candle time.
    pub actual_time_ms: i64,
    /// True when the kinds agree.
    pub kind_correct: bool,
    /// `|predicted − actual| / actual`, basis points.
    pub price_error_bps: f64,
    /// Predicted minus actual time, ms.
    pub time_error_ms: i64,
}

/// What a scored prediction is paired with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The action against the realized return.
    Action(ActionOutcome),
    /// A predicted pivot against the next confirmed one.
    Pivot(PivotOutcome),
}

/// One prediction–outcome pair, as trainers receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// The prediction as it was made.
    pub prediction: Arc<ModelOutput>,
    /// What happened.
    pub outcome: Outcome,
    /// Input time at which it was scored.
    pub scored_at_ms: i64,
}

/// A model's accuracy record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    /// Exponentially weighted action accuracy (the gating input).
    pub ewma: f64,
    /// Action predictions scored.
    pub scored: u64,
    /// Of which correct.
    pub correct: u64,
    /// Pivot predictions scored.
    pub pivots_scored: u64,
    /// Of which of the right kind.
    pub pivots_kind_correct: u64,
    /// Pivot predictions that expired unresolved.
    pub pivots_expired: u64,
    /// `(time, ewma)` after each score, oldest first (the screen's sparkline).
    pub history: VecDeque<(i64, f64)>,
}

impl Accuracy {
    fn new(prior: f64) -> Self {
        Self {
            ewma: prior,
            scored: 0,
            correct: 0,
            pivots_scored: 0,
            pivots_kind_correct: 0,
            pivots_expired: 0,
            history: VecDeque::new(),
        }
    }
}

struct PendingAction {
    output: Arc<ModelOutput>,
    tf_index: usize,
    entry: Price,
}

struct PendingPivot {
    /// Registration order: pairs come out in it, as if all pivots waited in one queue.
    seq: u64,
    output: Arc<ModelOutput>,
    pivot: PredictedPivot,
}

/// Pending predictions, scores, pairs and trainer channels.
pub struct Feedbacks {
    cfg: ScoringConfig,
    actions: VecDeque<PendingAction>,
    /// Pending pivot predictions per (symbol, timeframe index, level index), oldest first:
    /// a step then looks only at the fronts it can resolve or expire, not at every pending
    /// prediction (up to levels × the timeout's worth of steps).
    pivots: BTreeMap<(Symbol, usize, usize), VecDeque<PendingPivot>>,
    next_seq: u64,
    accuracy: BTreeMap<String, Accuracy>,
    pairs: BTreeMap<String, VecDeque<Feedback>>,
    trainers: BTreeMap<String, Sender<Feedback>>,
    unscorable: u64,
}

impl std::fmt::Debug for Feedbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feedbacks")
            .field("pending_actions", &self.actions.len())
            .field("pending_pivots", &self.pending().1)
            .field("trainers", &self.trainers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Feedbacks {
    /// Empty state.
    pub fn new(cfg: ScoringConfig) -> Self {
        Self {
            cfg,
            actions: VecDeque::new(),
            pivots: BTreeMap::new(),
            next_seq: 0,
            accuracy: BTreeMap::new(),
            pairs: BTreeMap::new(),
            trainers: BTreeMap::new(),
            unscorable: 0,
        }
    }

    /// Sends every future scored pair of `model` to `trainer` (replacing an earlier one).
    pub fn add_trainer(&mut self, model: impl Into<String>, trainer: Sender<Feedback>) {
        self.trainers.insert(model.into(), trainer);
    }

    /// Registers the outputs of a step made from `input` for scoring.
    pub fn register(&mut self, input: &BaseDataInput, output: Arc<ModelOutput>) {
        self.accuracy
            .entry(output.model_name.clone())
            .or_insert_with(|| Accuracy::new(self.cfg.prior));
        if let Some((tf_index, series)) = finest_series(input)
            && let Some(last) = series.last()
        {
            self.actions.push_back(PendingAction {
                output: Arc::clone(&output),
                tf_index,
                entry: last.close,
            });
        }
        let made = output.timestamp_ms;
        for p in &output.predictions.pivots {
            let tf = Timeframe::ALL
                .iter()
                .position(|t| *t == p.timeframe)
                .unwrap_or(0);
            let level = usize::from(p.level.clamp(1, 5)) - 1;
            let queue = self
                .pivots
                .entry((output.symbol.clone(), tf, level))
                .or_default();
            // Steps arrive in time order, so this is a push at the back; an older step that
            // comes late still lands in time order.
            let at = queue.partition_point(|q| q.output.timestamp_ms <= made);
            queue.insert(
                at,
                PendingPivot {
                    seq: self.next_seq,
                    output: Arc::clone(&output),
                    pivot: p.clone(),
                },
            );
            self.next_seq += 1;
        }
    }

    /// Scores every pending prediction `input` can resolve (same symbol, horizon passed);
    /// returns the new pairs (also sent to trainers and kept).
    pub fn observe(&mut self, input: &BaseDataInput) -> Vec<Feedback> {
        let now = input.timestamp_ms;
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.actions.len());
        while let Some(p) = self.actions.pop_front() {
            let due = p.output.timestamp_ms + self.cfg.horizon_ms;
            if p.output.symbol != input.symbol || due > now {
                keep.push_back(p);
                continue;
            }
            let tf_ms = Timeframe::ALL[p.tf_index].millis();
            let series = &input.ohlcv[p.tf_index];
            let n = series.partition_point(|c| c.open_time_ms + tf_ms <= due);
            let exit = n.checked_sub(1).map(|i| &series[i]);
            // The exit candle must have closed after the prediction, or there is no outcome.
            let Some(exit) = exit.filter(|c| c.open_time_ms + tf_ms > p.output.timestamp_ms) else {
                self.unscorable += 1;
                continue;
            };
            let r = exit.close.to_f64() / p.entry.to_f64() - 1.0;
            let market = if r > self.cfg.band {
                Move::Up
            } else if r < -self.cfg.band {
                Move::Down
            } else {
                Move::Flat
            };
            let correct = matches!(
                (p.output.predictions.action, market),
                (Action::Buy, Move::Up) | (Action::Sell, Move::Down) | (Action::Hold, Move::Flat)
            );
            let acc = self
                .accuracy
                .entry(p.output.model_name.clone())
                .or_insert_with(|| Accuracy::new(self.cfg.prior));
            acc.scored += 1;
            acc.correct += u64::from(correct);
            acc.ewma += self.cfg.decay * (f64::from(u8::from(correct)) - acc.ewma);
            acc.history.push_back((now, acc.ewma));
            if acc.history.len() > self.cfg.history.max(1) {
                acc.history.pop_front();
            }
            out.push(Feedback {
                prediction: p.output,
                outcome: Outcome::Action(ActionOutcome {
                    entry: p.entry,
                    exit: exit.close,
                    realized_return: r,
                    market,
                    correct,
                }),
                scored_at_ms: now,
            });
        }
        self.actions = keep;
        let mut scored: Vec<(u64, Feedback)> = Vec::new();
        let symbol = &input.symbol;
        for ((_, tf, level), queue) in self
            .pivots
            .range_mut((symbol.clone(), 0, 0)..=(symbol.clone(), usize::MAX, usize::MAX))
        {
            let known = &input.pivots[*tf].levels[*level];
            // Oldest first: once the front has no pivot known after it, no later one has.
            while let Some(p) = queue.front() {
                let made = p.output.timestamp_ms;
                let Some(a) = known
                    .iter()
                    .find(|a| a.known_ms > made && a.known_ms <= now)
                else {
                    break;
                };
                let Some(p) = queue.pop_front() else { break };
                let actual_kind = match a.kind {
                    PivotKind::High => SwingKind::High,
                    PivotKind::Low => SwingKind::Low,
                };
                let ap = a.price.to_f64();
                let outcome = PivotOutcome {
                    kind_correct: actual_kind == p.pivot.kind,
                    price_error_bps: if ap > 0.0 {
                        (p.pivot.price.to_f64() - ap).abs() / ap * 10_000.0
                    } else {
                        f64::INFINITY
                    },
                    time_error_ms: p.pivot.time_ms - a.time_ms,
                    actual_kind,
                    actual_price: a.price,
                    actual_time_ms: a.time_ms,
                    predicted: p.pivot,
                };
                let acc = self
                    .accuracy
                    .entry(p.output.model_name.clone())
                    .or_insert_with(|| Accuracy::new(self.cfg.prior));
                acc.pivots_scored += 1;
                acc.pivots_kind_correct += u64::from(outcome.kind_correct);
                scored.push((
                    p.seq,
                    Feedback {
                        prediction: p.output,
                        outcome: Outcome::Pivot(outcome),
                        scored_at_ms: now,
                    },
                ));
            }
            while queue
                .front()
                .is_some_and(|p| now - p.output.timestamp_ms > self.cfg.pivot_timeout_ms)
            {
                if let Some(p) = queue.pop_front()
                    && let Some(acc) = self.accuracy.get_mut(&p.output.model_name)
                {
                    acc.pivots_expired += 1;
                }
            }
        }
        scored.sort_unstable_by_key(|(seq, _)| *seq);
        out.extend(scored.into_iter().map(|(_, f)| f));
        for f in &out {
            let model = &f.prediction.model_name;
            if let Some(tx) = self.trainers.get(model)
                && tx.send(f.clone()).is_err()
            {
                // The trainer went away; stop sending rather than fail the loop.
                self.trainers.remove(model);
            }
            let ring = self.pairs.entry(model.clone()).or_default();
            ring.push_back(f.clone());
            if ring.len() > self.cfg.pairs_kept.max(1) {
                ring.pop_front();
            }
        }
        out
    }

    /// The accuracy record of `model` (the prior when it has none yet).
    pub fn accuracy_of(&self, model: &str) -> f64 {
        self.accuracy.get(model).map_or(self.cfg.prior, |a| a.ewma)
    }

    /// Accuracy records of every model seen.
    pub fn accuracy(&self) -> &BTreeMap<String, Accuracy> {
        &self.accuracy
    }

    /// The newest prediction–outcome pairs of `model`, oldest first.
    pub fn pairs(&self, model: &str) -> impl Iterator<Item = &Feedback> + '_ {
        self.pairs.get(model).into_iter().flatten()
    }

    /// Predictions still waiting for their outcome (actions, pivots).
    pub fn pending(&self) -> (usize, usize) {
        (
            self.actions.len(),
            self.pivots.values().map(VecDeque::len).sum(),
        )
    }

    /// Predictions dropped because no price at their horizon was available.
    pub fn unscorable(&self) -> u64 {
        self.unscorable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::input::InputConfig;
    use crate::analysis::model_output::ModelOutputStore;
    use crate::analysis::model_output::tests::output;
    use crate::orchestrator::history::HistoryFeed;
    use crate::orchestrator::history::tests::wave;

    fn cfg() -> ScoringConfig {
        ScoringConfig {
            horizon_ms: 10_000,
            band: 0.0005,
            pivot_timeout_ms: 3_600_000,
            decay: 0.5,
            prior: 0.5,
            history: 4,
            pairs_kept: 100,
        }
    }

    #[test]
    fn actions_are_scored_against_the_close_at_the_horizon_and_sent_to_trainers() {
        let candles = wave(200, 0, 1_000);
        let mut feed = HistoryFeed::new("ETHUSDT", 1_000, InputConfig::default()).unwrap();
        let store = ModelOutputStore::default();
        let mut f = Feedbacks::new(cfg());
        let (tx, rx) = std::sync::mpsc::channel();
        f.add_trainer("bull", tx);
        let mut scored = Vec::new();
        for (i, c) in candles.iter().enumerate() {
            let t = feed.push(c).unwrap();
            let input = feed.input(&store, t);
            scored.extend(f.observe(&input));
            if i == 100 {
                let mut o = output("rule", "bull", t);
                o.predictions.action = Action::Buy;
                f.register(&input, Arc::new(o));
                let mut o = output("rule", "flat", t);
                o.predictions.action = Action::Hold;
                f.register(&input, Arc::new(o));
            }
        }
        assert_eq!(scored.len(), 2);
        let entry = candles[100].close;
        let exit = candles[110].close;
        let r = exit.to_f64() / entry.to_f64() - 1.0;
        let Outcome::Action(a) = &scored[0].outcome else {
            panic!("{scored:?}")
        };
        assert_eq!((a.entry, a.exit), (entry, exit));
        assert!((a.realized_return - r).abs() < 1e-15);
        let up = r > 0.0005;
        assert_eq!(a.correct, up);
        assert_eq!(scored[0].scored_at_ms, 111_000);
        assert_eq!(f.accuracy_of("bull"), if up { 0.75 } else { 0.25 });
        assert_eq!(f.accuracy()["bull"].history.len(), 1);
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(f.pairs("flat").count(), 1);
        assert_eq!(f.pending(), (0, 0));
        assert_eq!(f.accuracy_of("never"), 0.5);
    }

    #[test]
    fn pivot_predictions_meet_the_next_confirmed_pivot() {
        let candles = wave(600, 0, 1_000);
        let mut feed = HistoryFeed::new("ETHUSDT", 1_000, InputConfig::default()).unwrap();
        let store = ModelOutputStore::default();
        let mut f = Feedbacks::new(cfg());
        let mut pivot_scores = Vec::new();
        for (i, c) in candles.iter().enumerate() {
            let t = feed.push(c).unwrap();
            let input = feed.input(&store, t);
            for fb in f.observe(&input) {
                if let Outcome::Pivot(p) = fb.outcome {
                    pivot_scores.push((fb.scored_at_ms, p, input.pivots[0].levels[0].clone()));
                }
            }
            if i == 300 {
                let mut o = output("cnn", "cnn", t);
                o.predictions.pivots.push(PredictedPivot {
                    timeframe: Timeframe::S1,
                    level: 1,
                    kind: SwingKind::High,
                    price: c.close,
                    time_ms: t + 5_000,
                    confidence: 0.5,
                });
                f.register(&input, Arc::new(o));
            }
        }
        assert_eq!(pivot_scores.len(), 1);
        let (at, p, known) = &pivot_scores[0];
        // The first level-1 pivot that became known after the prediction, at the time it did.
        let first = known.iter().find(|a| a.known_ms > 301_000).unwrap();
        assert_eq!(*at, first.known_ms);
        assert_eq!(p.actual_time_ms, first.time_ms);
        assert_eq!(p.kind_correct, first.kind == PivotKind::High);
    }

    #[test]
    fn every_pending_pivot_is_scored_in_order_or_expires_and_other_symbols_wait() {
        let candles = wave(900, 0, 1_000);
        let mut feed = HistoryFeed::new("ETHUSDT", 1_000, InputConfig::default()).unwrap();
        let store = ModelOutputStore::default();
        let mut f = Feedbacks::new(ScoringConfig {
            pivot_timeout_ms: 120_000,
            ..cfg()
        });
        let predict = |symbol: &str, t: i64, level: u8| {
            let mut o = output("cnn", "cnn", t);
            o.symbol = symbol.into();
            o.predictions.pivots.push(PredictedPivot {
                timeframe: Timeframe::S1,
                level,
                kind: SwingKind::Low,
                price: candles[0].close,
                time_ms: t,
                confidence: 0.5,
            });
            Arc::new(o)
        };
        let mut made = Vec::new();
        let mut scored = Vec::new();
        let mut max_pending = 0;
        for (i, c) in candles.iter().enumerate() {
            let t = feed.push(c).unwrap();
            let input = feed.input(&store, t);
            for fb in f.observe(&input) {
                if let Outcome::Pivot(p) = &fb.outcome {
                    let known = &input.pivots[0].levels[usize::from(p.predicted.level) - 1];
                    let first = known
                        .iter()
                        .find(|a| a.known_ms > fb.prediction.timestamp_ms)
                        .unwrap();
                    assert_eq!(p.actual_time_ms, first.time_ms);
                    scored.push((fb.prediction.timestamp_ms, p.predicted.level));
                }
            }
            max_pending = max_pending.max(f.pending().1);
            if (200..800).contains(&i) {
                for level in [1, 5] {
                    f.register(&input, predict("ETHUSDT", t, level));
                    made.push((t, level));
                }
                f.register(&input, predict("BTCUSDT", t, 1));
            }
        }
        // Pairs come out in registration order.
        let order: Vec<_> = made
            .iter()
            .filter(|m| scored.contains(m))
            .copied()
            .collect();
        let mut sorted = scored.clone();
        sorted.sort_by_key(|&(t, l)| (t, made.iter().position(|m| *m == (t, l))));
        assert_eq!(scored, sorted);
        assert_eq!(scored.len(), order.len());
        let acc = &f.accuracy()["cnn"];
        assert_eq!(acc.pivots_scored as usize, scored.len());
        assert!(scored.iter().filter(|(_, l)| *l == 1).count() > 500);
        // Nothing is both scored and expired, and nothing of another symbol is touched.
        let btc_waiting = 600;
        assert_eq!(
            acc.pivots_scored as usize + acc.pivots_expired as usize + f.pending().1,
            made.len() + btc_waiting
        );
        assert!(f.pending().1 >= btc_waiting);
        // Expiry bounds what waits: the timeout's worth of level-5 predictions, plus BTC's.
        assert!(max_pending <= 2 * 121 + btc_waiting, "{max_pending}");
    }
}
