//! Online DQN learning from the outcomes of its own live actions.
//!
//! The inference thread records, per live step, the DQN's state exactly as the network saw it
//! ([`RlStep`]). When the orchestrator scores that step's DQN prediction ([`Feedback`] with an
//! [`ActionOutcome`]), the step becomes a transition: its state, the action the DQN took, the
//! documented reward of [`super::env`] over the horizon (computed by [`RewardTracker`] from the
//! exact entry and exit prices), and the state of the first recorded step at or after the time
//! the prediction was scored. Transitions whose next state is the following one's state form a
//! chain, folded into n-step returns ([`NStepFold`]); steps of the horizon interleave several
//! such chains.
//!
//! The trainer thread ([`dqn_trainer_loop`]) owns its own [`DqnAgent`] with its prioritized
//! replay, takes small learning steps, hands weight snapshots to inference by message and
//! checkpoints periodically. It also tallies the scored predictions of both models for the
//! screen.

use super::checkpoint::{CheckpointManager, DataRange};
use super::cnn::Action;
use super::dqn::{DqnAgent, NStepFold};
use super::env::{EnvConfig, RewardTracker, StepReward, price_return, target_position};
use super::replay::Transition;
use super::rl_train::DqnModelConfig;
use super::runtime::{CheckpointInUse, DQN_METRIC, RuntimeStatus};
use crate::analysis::model_output as mo;
use crate::market::types::{Price, Symbol};
use crate::orchestrator::feedback::{Feedback, Outcome};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tch::nn;

/// Scored pivots whose price errors make the recent mean.
const RECENT_PIVOTS: usize = 50;
/// Interleaved chains kept per symbol (more than the steps of any sane horizon).
const MAX_CHAINS: usize = 256;
/// Feedback waiting for its next state, at most.
const MAX_WAITING: usize = 4_096;
/// Learning steps at most per batch of new transitions, so the trainer stays responsive.
const MAX_STEPS_PER_ROUND: usize = 8;

/// What the DQN saw at one live step.
#[derive(Debug, Clone, PartialEq)]
pub struct RlStep {
    /// Symbol.
    pub symbol: Symbol,
    /// Time of the step (the prediction's timestamp).
    pub t_ms: i64,
    /// Time of the input the state was built from; never after `t_ms`.
    pub data_ms: i64,
    /// Open time of the newest candle in the input (any series).
    pub newest_candle_ms: i64,
    /// The DQN's state row (market features, CNN features, position).
    pub state: Vec<f32>,
    /// The position in the state: −1, 0, 1.
    pub position: i8,
}

/// A completed one-horizon transition, before n-step folding.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTransition {
    /// The step the action was taken at.
    pub step: RlStep,
    /// The action the DQN took.
    pub action: Action,
    /// Position after the action.
    pub position_to: i8,
    /// Price at the prediction.
    pub entry: Price,
    /// Price at the horizon.
    pub exit: Price,
    /// The documented reward and its parts.
    pub reward: StepReward,
    /// Time of the next state.
    pub next_t_ms: i64,
    /// The next state (the first recorded step at or after the scoring time).
    pub next_state: Vec<f32>,
}

/// What the screen and tests see of the newest transition (without the state vectors).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransitionSummary {
    /// Symbol.
    pub symbol: Symbol,
    /// Time of the state.
    pub t_ms: i64,
    /// Time of the data the state was built from.
    pub data_ms: i64,
    /// Newest candle open time in that data.
    pub newest_candle_ms: i64,
    /// Time of the next state.
    pub next_t_ms: i64,
    /// `BUY`, `SELL` or `HOLD`.
    pub action: &'static str,
    /// Position before and after the action.
    pub positions: (i8, i8),
    /// Entry and exit prices.
    pub prices: (Price, Price),
    /// Shaped reward.
    pub reward: f64,
    /// Net return on equity.
    pub net_return: f64,
}

impl From<&LiveTransition> for TransitionSummary {
    fn from(t: &LiveTransition) -> Self {
        Self {
            symbol: t.step.symbol.clone(),
            t_ms: t.step.t_ms,
            data_ms: t.step.data_ms,
            newest_candle_ms: t.step.newest_candle_ms,
            next_t_ms: t.next_t_ms,
            action: t.action.as_str(),
            positions: (t.step.position, t.position_to),
            prices: (t.entry, t.exit),
            reward: t.reward.reward,
            net_return: t.reward.net_return,
        }
    }
}

/// Why a feedback did not become a transition (yet).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackSkip {
    /// Only action outcomes carry a reward.
    #[error("not an action outcome")]
    NotAnAction,
    /// No state was recorded for the prediction (learning was off, or it is too old).
    #[error("no recorded state for {symbol} at {t_ms}")]
    NoState {
        /// Symbol.
        symbol: Symbol,
        /// Prediction time.
        t_ms: i64,
    },
    /// The entry price is not positive.
    #[error("entry price {0} is not positive")]
    BadPrice(Price),
    /// Older than a transition already completed for the symbol.
    #[error("feedback at {t_ms} is older than the newest completed one")]
    OutOfOrder {
        /// Prediction time.
        t_ms: i64,
    },
}

struct Chain {
    end_t: i64,
    end_state: Vec<f32>,
    fold: NStepFold,
}

#[derive(Default)]
struct SymbolSteps {
    steps: VecDeque<RlStep>,
    tracker: RewardTracker,
    chains: Vec<Chain>,
    completed_t: Option<i64>,
}

/// Turns recorded steps and their feedback into transitions; pure logic, no threads.
pub struct TransitionBuilder {
    env: EnvConfig,
    fold: NStepFold,
    capacity: usize,
    symbols: HashMap<Symbol, SymbolSteps>,
    waiting: VecDeque<Feedback>,
    refused_steps: u64,
}

impl std::fmt::Debug for TransitionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitionBuilder")
            .field("symbols", &self.symbols.len())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

/// What a batch of recorded steps or feedback produced.
#[derive(Debug, Default)]
pub struct Built {
    /// Transitions completed, oldest first.
    pub transitions: Vec<LiveTransition>,
    /// Their n-step folds, ready for the replay.
    pub folded: Vec<Transition>,
    /// Feedback that will never become a transition, with why.
    pub skipped: Vec<FeedbackSkip>,
}

fn to_action(a: mo::Action) -> Action {
    match a {
        mo::Action::Buy => Action::Buy,
        mo::Action::Sell => Action::Sell,
        mo::Action::Hold => Action::Hold,
    }
}

impl TransitionBuilder {
    /// Rewards by `env`, n-step folding like `fold` (an empty one), up to `capacity` recorded
    /// steps per symbol.
    pub fn new(env: EnvConfig, fold: NStepFold, capacity: usize) -> Self {
        Self {
            env,
            fold,
            capacity: capacity.max(2),
            symbols: HashMap::new(),
            waiting: VecDeque::new(),
            refused_steps: 0,
        }
    }

    /// Steps refused because their data lay after their time (lookahead) or went backwards.
    pub fn refused_steps(&self) -> u64 {
        self.refused_steps
    }

    /// Feedback waiting for a next state.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Forgets every recorded step, chain and waiting feedback (learning turned off).
    pub fn clear(&mut self) {
        self.symbols.clear();
        self.waiting.clear();
    }

    /// Records a step; waiting feedback it serves as next state for completes.
    pub fn record(&mut self, step: RlStep) -> Built {
        let s = self.symbols.entry(step.symbol.clone()).or_default();
        let backwards = s.steps.back().is_some_and(|b| b.t_ms >= step.t_ms);
        if step.data_ms > step.t_ms || step.newest_candle_ms > step.t_ms || backwards {
            self.refused_steps += 1;
            return Built::default();
        }
        if s.steps.len() == self.capacity {
            s.steps.pop_front();
        }
        s.steps.push_back(step);
        let waiting: Vec<Feedback> = self.waiting.drain(..).collect();
        let mut out = Built::default();
        for f in waiting {
            self.feedback_into(f, &mut out);
        }
        out
    }

    /// Takes one scored DQN prediction: completes its transition now, or waits for the step
    /// that gives its next state.
    pub fn feedback(&mut self, f: Feedback) -> Built {
        let mut out = Built::default();
        self.feedback_into(f, &mut out);
        out
    }

    fn feedback_into(&mut self, f: Feedback, out: &mut Built) {
        let Outcome::Action(outcome) = &f.outcome else {
            out.skipped.push(FeedbackSkip::NotAnAction);
            return;
        };
        let p = &f.prediction;
        let t = p.timestamp_ms;
        let Some(s) = self.symbols.get_mut(p.symbol.as_str()) else {
            out.skipped.push(FeedbackSkip::NoState {
                symbol: p.symbol.clone(),
                t_ms: t,
            });
            return;
        };
        if s.completed_t.is_some_and(|c| t < c) {
            out.skipped.push(FeedbackSkip::OutOfOrder { t_ms: t });
            return;
        }
        let Some(at) = s.steps.iter().position(|x| x.t_ms == t) else {
            out.skipped.push(FeedbackSkip::NoState {
                symbol: p.symbol.clone(),
                t_ms: t,
            });
            return;
        };
        let Some(ret) = price_return(outcome.entry, outcome.exit) else {
            out.skipped.push(FeedbackSkip::BadPrice(outcome.entry));
            return;
        };
        // The next state is the first one recorded at or after the scoring time, which is
        // after `t`; until it is recorded the feedback waits.
        let due = f.scored_at_ms.max(t + 1);
        let Some(next) = s.steps.iter().skip(at + 1).find(|x| x.t_ms >= due) else {
            if self.waiting.len() == MAX_WAITING {
                self.waiting.pop_front();
            }
            self.waiting.push_back(f);
            return;
        };
        let (next_t_ms, next_state) = (next.t_ms, next.state.clone());
        let step = s.steps[at].clone();
        // Steps before this one can no longer be a state: feedback arrives in time order.
        s.steps.drain(..at);
        s.completed_t = Some(t);
        let action = to_action(p.predictions.action);
        let position_to = target_position(step.position, action);
        let reward = s.tracker.step(&self.env, step.position, position_to, ret);
        let lt = LiveTransition {
            step,
            action,
            position_to,
            entry: outcome.entry,
            exit: outcome.exit,
            reward,
            next_t_ms,
            next_state,
        };
        out.folded.extend(Self::chain(s, &self.fold, &lt));
        out.transitions.push(lt);
    }

    /// Continues the chain ending at the transition's state (or starts one) and ends chains
    /// that can no longer continue.
    fn chain(s: &mut SymbolSteps, template: &NStepFold, lt: &LiveTransition) -> Vec<Transition> {
        let t = lt.step.t_ms;
        let mut out = Vec::new();
        let i = match s.chains.iter().position(|c| c.end_t == t) {
            Some(i) => i,
            None => {
                s.chains.push(Chain {
                    end_t: t,
                    end_state: lt.step.state.clone(),
                    fold: template.clone(),
                });
                s.chains.len() - 1
            }
        };
        let c = &mut s.chains[i];
        out.extend(c.fold.push(
            lt.step.state.clone(),
            lt.action,
            lt.reward.reward,
            &lt.next_state,
            false,
        ));
        c.end_t = lt.next_t_ms;
        c.end_state.clone_from(&lt.next_state);
        // Later transitions start at or after `t`, so a chain ending before it is cut: its
        // pending steps bootstrap from where it ended.
        let mut kept = Vec::with_capacity(s.chains.len());
        for mut c in s.chains.drain(..) {
            if c.end_t < t {
                out.extend(c.fold.finish(&c.end_state, false));
            } else {
                kept.push(c);
            }
        }
        while kept.len() > MAX_CHAINS {
            let mut c = kept.remove(0);
            out.extend(c.fold.finish(&c.end_state, false));
        }
        s.chains = kept;
        out
    }
}

/// Scored predictions of one model, as the orchestrator's feedback reported them.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct FeedbackTally {
    /// Action predictions scored.
    pub actions_scored: u64,
    /// Of which right.
    pub actions_correct: u64,
    /// Pivot predictions scored.
    pub pivots_scored: u64,
    /// Of which of the right kind.
    pub pivots_kind_correct: u64,
    /// Mean price error of the newest scored pivots, bps.
    pub recent_price_error_bps: Option<f64>,
    #[serde(skip)]
    recent: VecDeque<f64>,
}

impl FeedbackTally {
    /// Counts one scored prediction.
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Action(a) => {
                self.actions_scored += 1;
                self.actions_correct += u64::from(a.correct);
            }
            Outcome::Pivot(p) => {
                self.pivots_scored += 1;
                self.pivots_kind_correct += u64::from(p.kind_correct);
                if p.price_error_bps.is_finite() {
                    if self.recent.len() == RECENT_PIVOTS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(p.price_error_bps);
                    self.recent_price_error_bps =
                        Some(self.recent.iter().sum::<f64>() / self.recent.len() as f64);
                }
            }
        }
    }

    /// Share of scored actions that were right (None before the first).
    pub fn action_accuracy(&self) -> Option<f64> {
        (self.actions_scored > 0).then(|| self.actions_correct as f64 / self.actions_scored as f64)
    }
}

/// Everything the DQN trainer thread needs.
pub(crate) struct DqnTrainer {
    /// The trainer's own agent (online config, starting from the inference weights).
    pub agent: DqnAgent,
    /// What checkpoints record besides the agent's config.
    pub model_config: DqnModelConfig,
    /// Model names: feedback of the first is tallied, of the second becomes transitions.
    pub names: (String, String),
    /// Live steps recorded by inference; closed when inference stops.
    pub steps: Receiver<RlStep>,
    /// The orchestrator's feedback (shared across restarts so its sender stays valid).
    pub feedback: Arc<Mutex<Receiver<Feedback>>>,
    /// The learning switch.
    pub learning: Arc<AtomicBool>,
    /// Weight snapshots for inference.
    pub weights: Sender<nn::VarStore>,
    /// DQN checkpoints.
    pub checkpoints: CheckpointManager,
    /// Learning steps between checkpoints.
    pub checkpoint_every: u64,
    /// Recorded steps kept per symbol.
    pub capacity: usize,
}

/// Prequential record of the window since the last checkpoint: the return of actions
/// taken before the agent learned from them.
struct Window {
    equity: f64,
    updates: u64,
    transitions: u64,
    range: Option<(i64, i64)>,
}

impl Window {
    fn new() -> Self {
        Self {
            equity: 1.0,
            updates: 0,
            transitions: 0,
            range: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The DQN trainer thread: until the steps channel closes, records steps, turns feedback
/// into transitions, learns and hands weights over; saves a last checkpoint when it learned
/// since the previous one.
pub(crate) fn dqn_trainer_loop(mut tr: DqnTrainer, status: &Mutex<RuntimeStatus>) {
    let mut builder =
        TransitionBuilder::new(EnvConfig::default(), tr.agent.n_step_fold(), tr.capacity);
    let mut window = Window::new();
    loop {
        let first = match tr.steps.recv_timeout(Duration::from_millis(20)) {
            Ok(s) => Some(s),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Steps first, then feedback: a step is sent before the answer its feedback scores.
        let steps: Vec<RlStep> = first.into_iter().chain(tr.steps.try_iter()).collect();
        let feedback: Vec<Feedback> = lock(&tr.feedback).try_iter().collect();
        let learning = tr.learning.load(Ordering::SeqCst);
        let mut built = Built::default();
        if learning {
            for s in steps {
                merge(&mut built, builder.record(s));
            }
        } else {
            builder.clear();
        }
        let mut tallies: Vec<(bool, Outcome)> = Vec::new();
        for f in feedback {
            let model = f.prediction.model_name.as_str();
            if model == tr.names.0 {
                tallies.push((true, f.outcome));
            } else if model == tr.names.1 {
                tallies.push((false, f.outcome.clone()));
                if learning {
                    merge(&mut built, builder.feedback(f));
                }
            }
        }
        let mut added = 0usize;
        for t in built.folded {
            added += usize::from(tr.agent.remember(t));
        }
        for t in &built.transitions {
            window.equity *= 1.0 + t.reward.net_return;
            window.transitions += 1;
            let (a, b) = window.range.unwrap_or((t.step.t_ms, t.step.t_ms));
            window.range = Some((a.min(t.step.t_ms), b.max(t.step.t_ms)));
        }
        let mut loss = None;
        for _ in 0..added.min(MAX_STEPS_PER_ROUND) {
            if let Some(l) = tr.agent.learn() {
                loss = Some(l);
                window.updates += 1;
            }
        }
        let handed = loss.is_some()
            && tr
                .agent
                .weights_snapshot()
                .is_ok_and(|vs| tr.weights.send(vs).is_ok());
        {
            let mut s = lock(status);
            for (cnn, o) in &tallies {
                if *cnn {
                    s.cnn_feedback.add(o);
                } else {
                    s.dqn_feedback.add(o);
                }
            }
            s.dqn_transitions += built.transitions.len() as u64;
            s.dqn_feedback_unmatched += built.skipped.len() as u64;
            if let Some(t) = built.transitions.last() {
                s.dqn_last_transition = Some(TransitionSummary::from(t));
            }
            s.dqn_replay_len = tr.agent.replay_len();
            s.dqn_training_steps = tr.agent.updates();
            if loss.is_some() {
                s.dqn_last_loss = loss;
            }
            if loss.is_some() && !handed {
                s.last_error = Some("handing DQN weights to inference failed".into());
            }
        }
        if window.updates >= tr.checkpoint_every.max(1) {
            save(&tr, &window, status);
            window = Window::new();
        }
    }
    if window.updates > 0 {
        save(&tr, &window, status);
    }
}

fn merge(into: &mut Built, from: Built) {
    into.transitions.extend(from.transitions);
    into.folded.extend(from.folded);
    into.skipped.extend(from.skipped);
}

fn save(tr: &DqnTrainer, w: &Window, status: &Mutex<RuntimeStatus>) {
    let metrics = BTreeMap::from([
        (DQN_METRIC.to_string(), w.equity - 1.0),
        ("online_updates".to_string(), w.updates as f64),
        ("online_transitions".to_string(), w.transitions as f64),
    ]);
    let (start_ms, end_ms) = w.range.unwrap_or((0, 0));
    match tr.checkpoints.save(
        &tr.agent.vs,
        &tr.model_config,
        metrics,
        DataRange {
            start_ms,
            end_ms,
            interval_ms: 0,
        },
    ) {
        Ok(out) => {
            let mut s = lock(status);
            s.dqn_checkpoints_saved += 1;
            s.dqn_last_saved = Some(CheckpointInUse::from(&out.meta));
            if out.kept {
                s.dqn_checkpoint = Some(CheckpointInUse::from(&out.meta));
            }
        }
        Err(e) => lock(status).last_error = Some(format!("saving the DQN: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::model_output::tests::output;
    use crate::orchestrator::feedback::{ActionOutcome, Move, PivotOutcome};

    fn step(t: i64, position: i8) -> RlStep {
        RlStep {
            symbol: "ETHUSDT".into(),
            t_ms: t,
            data_ms: t,
            newest_candle_ms: t - 1_000,
            state: vec![t as f32, f32::from(position)],
            position,
        }
    }

    fn price(units_e2: i64) -> Price {
        Price(units_e2 * 1_000_000)
    }

    /// The scored DQN prediction made at `t`: `action`, entry and exit in hundredths.
    fn fb(t: i64, action: mo::Action, entry: i64, exit: i64, scored: i64) -> Feedback {
        let mut o = output("rl", "dqn_agent", t);
        o.symbol = "ETHUSDT".into();
        o.predictions.action = action;
        let (entry, exit) = (price(entry), price(exit));
        Feedback {
            prediction: Arc::new(o),
            outcome: Outcome::Action(ActionOutcome {
                entry,
                exit,
                realized_return: exit.to_f64() / entry.to_f64() - 1.0,
                market: Move::Flat,
                correct: false,
            }),
            scored_at_ms: scored,
        }
    }

    fn builder(n: usize, gamma: f64) -> TransitionBuilder {
        TransitionBuilder::new(EnvConfig::default(), NStepFold::new(n, gamma), 100)
    }

    #[test]
    fn transitions_carry_the_documented_reward_from_exact_prices() {
        let mut b = builder(1, 0.9);
        for k in 0..6 {
            assert!(b.record(step(k * 1_000, 0)).transitions.is_empty());
        }
        // BUY from flat at 100.00, exit 101.00 two steps later: long return minus 5 bps costs.
        let t1 = b.feedback(fb(0, mo::Action::Buy, 10_000, 10_100, 2_000));
        let lt = &t1.transitions[0];
        let net1 = 0.01 - 0.0005;
        assert!((lt.reward.net_return - net1).abs() < 1e-15);
        assert!((lt.reward.reward - 100.0 * net1).abs() < 1e-12);
        assert_eq!((lt.step.t_ms, lt.next_t_ms), (0, 2_000));
        assert_eq!(lt.next_state, vec![2_000.0, 0.0]);
        assert_eq!(lt.position_to, 1);
        // One-step folds: the replay transition is the state, action, reward and next state.
        let f = &t1.folded[0];
        assert_eq!(
            (f.state.clone(), f.action),
            (vec![0.0, 0.0], Action::Buy.index())
        );
        assert!((f64::from(f.reward) - 100.0 * net1).abs() < 1e-5);
        assert!((f64::from(f.discount) - 0.9).abs() < 1e-7);
        // SELL at 100.50 that falls to 100.00 earns; a new peak means no drawdown penalty.
        let t2 = b.feedback(fb(1_000, mo::Action::Sell, 10_050, 10_000, 3_000));
        let net2 = 50.0 / 10_050.0 - 0.0005;
        assert!((t2.transitions[0].reward.reward - 100.0 * net2).abs() < 1e-12);
        // A losing BUY from the peak: the drawdown it opens is penalized by λ = 0.5.
        let t3 = b.feedback(fb(2_000, mo::Action::Buy, 10_050, 9_950, 4_000));
        let net3 = -100.0 / 10_050.0 - 0.0005;
        let r3 = t3.transitions[0].reward;
        assert!((r3.net_return - net3).abs() < 1e-15);
        assert!((r3.reward - 100.0 * (net3 - 0.5 * -net3)).abs() < 1e-9);
        // HOLD keeps the state's position (flat here): no cost, no exposure.
        let t4 = b.feedback(fb(3_000, mo::Action::Hold, 10_000, 12_000, 5_000));
        assert_eq!(t4.transitions[0].reward.net_return, 0.0);
    }

    #[test]
    fn exact_returns_do_not_lose_cents_on_large_prices() {
        let (a, b) = (Price(9_000_000_000_000_001), Price(9_000_000_000_000_002));
        let r = price_return(a, b).unwrap();
        assert!((r - 1.0 / 9_000_000_000_000_001.0).abs() < 1e-30);
        assert_eq!(price_return(Price::ZERO, b), None);
    }

    #[test]
    fn feedback_waits_for_its_next_state_and_never_uses_later_data() {
        let mut b = builder(1, 0.9);
        b.record(step(0, 0));
        b.record(step(1_000, 0));
        // Scored at 2 000, before inference recorded that step: it waits.
        let early = b.feedback(fb(0, mo::Action::Buy, 10_000, 10_010, 2_000));
        assert!(early.transitions.is_empty() && early.skipped.is_empty());
        assert_eq!(b.waiting(), 1);
        let done = b.record(step(2_000, 0));
        assert_eq!(done.transitions.len(), 1);
        let lt = &done.transitions[0];
        assert!(lt.step.data_ms <= lt.step.t_ms && lt.step.newest_candle_ms <= lt.step.t_ms);
        assert_eq!(lt.step.state, vec![0.0, 0.0]);
        assert_eq!(b.waiting(), 0);
        // A step whose data lies after its time is refused, so it never becomes a state.
        let mut ahead = step(3_000, 0);
        ahead.data_ms = 3_500;
        b.record(ahead);
        assert_eq!(b.refused_steps(), 1);
        let none = b.feedback(fb(3_000, mo::Action::Buy, 10_000, 10_010, 5_000));
        assert!(matches!(
            none.skipped[0],
            FeedbackSkip::NoState { t_ms: 3_000, .. }
        ));
        // Pivot outcomes carry no reward; unknown symbols have no state.
        let mut other = fb(0, mo::Action::Buy, 10_000, 10_010, 2_000);
        Arc::make_mut(&mut other.prediction).symbol = "BTCUSDT".into();
        assert!(matches!(
            b.feedback(other).skipped[0],
            FeedbackSkip::NoState { .. }
        ));
    }

    #[test]
    fn interleaved_horizons_fold_n_step_returns_along_their_own_chain() {
        // Steps every second, horizon two seconds: 0 → 2 → 4 and 1 → 3 are separate chains.
        let mut b = builder(2, 0.5);
        for k in 0..6 {
            b.record(step(k * 1_000, 0));
        }
        let a = b.feedback(fb(0, mo::Action::Buy, 10_000, 10_100, 2_000));
        assert!(a.folded.is_empty(), "one step of a 2-step fold");
        let c = b.feedback(fb(1_000, mo::Action::Sell, 10_000, 10_100, 3_000));
        assert!(c.folded.is_empty());
        let d = b.feedback(fb(2_000, mo::Action::Buy, 10_000, 10_000, 4_000));
        assert_eq!(d.folded.len(), 1);
        let f = &d.folded[0];
        let r0 = a.transitions[0].reward.reward;
        let r2 = d.transitions[0].reward.reward;
        assert_eq!(f.state, vec![0.0, 0.0]);
        assert!((f64::from(f.reward) - (r0 + 0.5 * r2)).abs() < 1e-5);
        assert_eq!(f.next_state, vec![4_000.0, 0.0]);
        assert!((f.discount - 0.25).abs() < 1e-7);
        // The 1 → 3 chain has no continuation once a transition starts at 4 s: it is cut and
        // its step bootstraps from 3 s with one discount.
        let e = b.feedback(fb(4_000, mo::Action::Hold, 10_000, 10_000, 5_000));
        let cut = e
            .folded
            .iter()
            .find(|t| t.state == vec![1_000.0, 0.0])
            .unwrap();
        assert_eq!(cut.next_state, vec![3_000.0, 0.0]);
        assert!((cut.discount - 0.5).abs() < 1e-7);
    }

    #[test]
    fn tallies_count_actions_and_pivot_errors() {
        let mut t = FeedbackTally::default();
        let Outcome::Action(mut a) = fb(0, mo::Action::Buy, 1, 2, 1).outcome else {
            unreachable!()
        };
        a.correct = true;
        t.add(&Outcome::Action(a));
        t.add(&fb(0, mo::Action::Buy, 1, 2, 1).outcome);
        assert_eq!((t.actions_scored, t.actions_correct), (2, 1));
        assert_eq!(t.action_accuracy(), Some(0.5));
        let pivot = |bps: f64, ok: bool| {
            Outcome::Pivot(PivotOutcome {
                predicted: mo::PredictedPivot {
                    timeframe: crate::market::types::Timeframe::M1,
                    level: 1,
                    kind: mo::SwingKind::High,
                    price: price(100),
                    time_ms: 0,
                    confidence: 0.5,
                },
                actual_kind: mo::SwingKind::High,
                actual_price: price(100),
                actual_time_ms: 0,
                kind_correct: ok,
                price_error_bps: bps,
                time_error_ms: 0,
            })
        };
        t.add(&pivot(10.0, true));
        t.add(&pivot(30.0, false));
        assert_eq!((t.pivots_scored, t.pivots_kind_correct), (2, 1));
        assert_eq!(t.recent_price_error_bps, Some(20.0));
    }
}
