//! The DQN agent: dueling network, double-DQN targets, a target network, prioritized replay,
//! n-step returns and an epsilon schedule.
//!
//! The state is whatever feature row the caller builds (market features, the CNN's
//! predictions and hidden states) plus the position, as [`super::env::TradingEnv`] emits it.

use super::cnn::{ACTIONS, Action, action_values, direction, flat_f64};
use super::replay::{PrioritizedReplay, Transition};
use crate::analysis::model_output::{ModelOutput, Predictions};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

/// How the target network follows the online one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum TargetUpdate {
    /// Hard copy every `every` learning steps.
    Periodic {
        /// Learning steps between copies.
        every: u64,
    },
    /// Soft update `θ' ← τθ + (1−τ)θ'` after every learning step.
    Polyak {
        /// τ in 0..1.
        tau: f64,
    },
}

/// Linear decay of the exploration rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpsilonSchedule {
    /// Rate at step 0.
    pub start: f64,
    /// Rate after `decay_steps`.
    pub end: f64,
    /// Steps to go from `start` to `end`.
    pub decay_steps: u64,
}

impl EpsilonSchedule {
    /// The rate at environment step `step`.
    pub fn at(&self, step: u64) -> f64 {
        if self.decay_steps == 0 || step >= self.decay_steps {
            return self.end;
        }
        let f = step as f64 / self.decay_steps as f64;
        self.start + (self.end - self.start) * f
    }
}

/// Agent settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DqnConfig {
    /// Observation width (features plus position).
    pub state_dim: usize,
    /// Hidden width of the shared layers.
    pub hidden: usize,
    /// Discount per step.
    pub gamma: f64,
    /// Steps folded into one transition.
    pub n_step: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Transitions per learning step.
    pub batch: usize,
    /// Replay capacity.
    pub replay_capacity: usize,
    /// Priority exponent α.
    pub alpha: f64,
    /// Importance-sampling exponent β at the first step.
    pub beta_start: f64,
    /// β is annealed linearly to 1 over this many learning steps.
    pub beta_steps: u64,
    /// Target-network rule.
    pub target: TargetUpdate,
    /// Exploration.
    pub epsilon: EpsilonSchedule,
    /// Transitions stored before learning starts.
    pub learn_start: usize,
    /// Gradient-norm clip.
    pub grad_clip: f64,
    /// Seed of the exploration and replay sampling RNG.
    pub seed: u64,
}

impl DqnConfig {
    /// Reasonable defaults for a state of width `state_dim`.
    pub fn new(state_dim: usize) -> Self {
        Self {
            state_dim,
            hidden: 64,
            gamma: 0.9,
            n_step: 3,
            lr: 1e-3,
            batch: 64,
            replay_capacity: 50_000,
            alpha: 0.6,
            beta_start: 0.4,
            beta_steps: 10_000,
            target: TargetUpdate::Polyak { tau: 0.01 },
            epsilon: EpsilonSchedule {
                start: 1.0,
                end: 0.05,
                decay_steps: 10_000,
            },
            learn_start: 500,
            grad_clip: 10.0,
            seed: 0,
        }
    }
}

/// Dueling Q-network: shared layers, then a state value and per-action advantages.
#[derive(Debug)]
pub struct DuelingNet {
    l1: nn::Linear,
    l2: nn::Linear,
    value: nn::Linear,
    advantage: nn::Linear,
}

/// Output of the dueling network.
#[derive(Debug)]
pub struct QOutput {
    /// `[B, 3]` Q-values.
    pub q: Tensor,
    /// `[B]` state values.
    pub value: Tensor,
    /// `[B, 3]` mean-centred advantages.
    pub advantage: Tensor,
}

impl DuelingNet {
    /// Creates the variables under `p`.
    pub fn new(p: &nn::Path, state_dim: usize, hidden: usize) -> Self {
        let (s, h) = (state_dim as i64, hidden as i64);
        Self {
            l1: nn::linear(p / "l1", s, h, Default::default()),
            l2: nn::linear(p / "l2", h, h, Default::default()),
            value: nn::linear(p / "value", h, 1, Default::default()),
            advantage: nn::linear(p / "advantage", h, ACTIONS.len() as i64, Default::default()),
        }
    }

    /// `Q = V + (A − mean A)`: the mean is removed so V and A are identifiable.
    pub fn forward(&self, x: &Tensor) -> QOutput {
        let h = x.apply(&self.l1).relu().apply(&self.l2).relu();
        let value = self.value.forward(&h).squeeze_dim(-1);
        let a = self.advantage.forward(&h);
        let advantage = &a - a.mean_dim(-1, true, Kind::Float);
        let q = value.unsqueeze(-1) + &advantage;
        QOutput {
            q,
            value,
            advantage,
        }
    }
}

/// One decision with everything the orchestrator and the screen show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RlDecision {
    /// Chosen action.
    pub action: Action,
    /// Q-values for BUY, SELL, HOLD.
    pub q_values: [f64; 3],
    /// Q of the chosen action (expected discounted reward).
    pub expected_reward: f64,
    /// Softmax probability of the chosen action over the Q-values.
    pub confidence: f64,
    /// State value V(s) (hidden state for other models).
    pub state_value: f64,
    /// Advantages A(s, ·) (hidden state for other models).
    pub advantages: [f64; 3],
    /// True when the action was a random exploration step.
    pub explored: bool,
}

impl RlDecision {
    /// Softmax of the Q-values: the action probabilities shown with the decision.
    pub fn probabilities(&self) -> [f64; 3] {
        let m = self
            .q_values
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        let e = self.q_values.map(|q| (q - m).exp());
        let sum: f64 = e.iter().sum();
        e.map(|v| if sum > 0.0 { v / sum } else { 1.0 / 3.0 })
    }

    /// The decision as the design's RL `ModelOutput` (Q-values, expected reward, state value
    /// and advantages as hidden states).
    pub fn to_model_output(
        &self,
        model_name: &str,
        symbol: &str,
        timestamp_ms: i64,
        metadata: BTreeMap<String, String>,
    ) -> ModelOutput {
        let p = self.probabilities();
        let (direction_vector, direction_confidence) = direction(p);
        let confidence = self.confidence.clamp(0.0, 1.0);
        ModelOutput {
            model_type: "rl".into(),
            model_name: model_name.into(),
            symbol: symbol.into(),
            timestamp_ms,
            confidence,
            predictions: Predictions {
                action: self.action.into(),
                action_confidence: confidence,
                probabilities: action_values(p),
                direction_vector,
                direction_confidence,
                pivots: Vec::new(),
                q_values: Some(action_values(self.q_values)),
                expected_reward: Some(self.expected_reward),
            },
            hidden_states: BTreeMap::from([
                ("state_value".to_string(), vec![self.state_value as f32]),
                (
                    "advantage_values".to_string(),
                    self.advantages.map(|a| a as f32).to_vec(),
                ),
            ]),
            metadata,
        }
    }
}

/// Folds consecutive steps of one trajectory into n-step transitions (discounted reward sum,
/// bootstrap discount `gamma^k`, 0 once the trajectory is done).
#[derive(Debug, Clone)]
pub struct NStepFold {
    n: usize,
    gamma: f64,
    pending: VecDeque<(Vec<f32>, usize, f64)>,
}

impl NStepFold {
    /// Folds `n` steps (at least 1) discounted by `gamma`.
    pub fn new(n: usize, gamma: f64) -> Self {
        Self {
            n: n.max(1),
            gamma,
            pending: VecDeque::with_capacity(n.max(1)),
        }
    }

    /// Steps waiting for their n-step return.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when no step waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds one step; returns the transitions it completes (all pending ones when `done`).
    pub fn push(
        &mut self,
        state: Vec<f32>,
        action: Action,
        reward: f64,
        next_state: &[f32],
        done: bool,
    ) -> Vec<Transition> {
        self.pending.push_back((state, action.index(), reward));
        let mut out = Vec::new();
        if self.pending.len() >= self.n {
            out.extend(self.fold_one(next_state, done));
        }
        if done {
            out.extend(self.finish(next_state, true));
        }
        out
    }

    /// Ends the trajectory at `next_state`: every pending step folds the rewards it has and
    /// bootstraps from `next_state` (unless `done`), so a cut trajectory loses no step.
    pub fn finish(&mut self, next_state: &[f32], done: bool) -> Vec<Transition> {
        let mut out = Vec::with_capacity(self.pending.len());
        while let Some(t) = self.fold_one(next_state, done) {
            out.push(t);
        }
        out
    }

    fn fold_one(&mut self, next_state: &[f32], done: bool) -> Option<Transition> {
        let mut g = 0.0;
        let mut disc = 1.0;
        for (_, _, r) in &self.pending {
            g += disc * r;
            disc *= self.gamma;
        }
        let (state, action, _) = self.pending.pop_front()?;
        Some(Transition {
            state,
            action,
            reward: g as f32,
            next_state: next_state.to_vec(),
            discount: if done { 0.0 } else { disc as f32 },
        })
    }
}

/// The agent.
#[derive(Debug)]
pub struct DqnAgent {
    cfg: DqnConfig,
    /// Online network variables (what checkpoints save).
    pub vs: nn::VarStore,
    online: DuelingNet,
    target_vs: nn::VarStore,
    target: DuelingNet,
    opt: nn::Optimizer,
    replay: PrioritizedReplay,
    pending: NStepFold,
    steps: u64,
    updates: u64,
    rng: ChaCha8Rng,
}

/// Why the agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DqnError {
    /// libtorch refused (optimizer or copy).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl DqnAgent {
    /// A fresh agent on `device` (seed libtorch first for reproducible weights).
    pub fn new(cfg: DqnConfig, device: Device) -> Result<Self, DqnError> {
        let vs = nn::VarStore::new(device);
        let online = DuelingNet::new(&vs.root(), cfg.state_dim, cfg.hidden);
        let mut target_vs = nn::VarStore::new(device);
        let target = DuelingNet::new(&target_vs.root(), cfg.state_dim, cfg.hidden);
        target_vs.copy(&vs)?;
        let opt = nn::Adam::default().build(&vs, cfg.lr)?;
        Ok(Self {
            cfg,
            vs,
            online,
            target_vs,
            target,
            opt,
            replay: PrioritizedReplay::new(cfg.replay_capacity, cfg.alpha),
            pending: NStepFold::new(cfg.n_step, cfg.gamma),
            steps: 0,
            updates: 0,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
        })
    }

    /// Settings.
    pub fn config(&self) -> &DqnConfig {
        &self.cfg
    }

    /// Exploration rate now.
    pub fn epsilon(&self) -> f64 {
        self.cfg.epsilon.at(self.steps)
    }

    /// Transitions in the replay buffer.
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }

    /// Learning steps taken.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Greedy decisions for a `[B, state_dim]` batch (backtests, inference).
    pub fn decide_batch(&self, states: &Tensor) -> Vec<RlDecision> {
        let out = tch::no_grad(|| {
            self.online
                .forward(&states.to_device(self.vs.device()).to_kind(Kind::Float))
        });
        let q = flat_f64(&out.q);
        let v = flat_f64(&out.value);
        let a = flat_f64(&out.advantage);
        (0..v.len())
            .map(|i| {
                let qs = [q[3 * i], q[3 * i + 1], q[3 * i + 2]];
                let best = (0..3).fold(0, |b, j| if qs[j] > qs[b] { j } else { b });
                decision(
                    qs,
                    v[i],
                    [a[3 * i], a[3 * i + 1], a[3 * i + 2]],
                    best,
                    false,
                )
            })
            .collect()
    }

    /// The greedy decision for one state.
    pub fn decide(&self, state: &[f32]) -> RlDecision {
        let t = Tensor::from_slice(state).view([1, -1]);
        self.decide_batch(&t).remove(0)
    }

    /// Epsilon-greedy decision for training; advances the exploration schedule.
    pub fn act(&mut self, state: &[f32]) -> RlDecision {
        let eps = self.epsilon();
        self.steps += 1;
        let mut d = self.decide(state);
        if self.rng.random::<f64>() < eps {
            let i = self.rng.random_range(0..ACTIONS.len());
            d = decision(d.q_values, d.state_value, d.advantages, i, true);
        }
        d
    }

    /// Records one environment step; n-step transitions go to the replay as they complete.
    pub fn observe(
        &mut self,
        state: Vec<f32>,
        action: Action,
        reward: f64,
        next_state: &[f32],
        done: bool,
    ) {
        for t in self.pending.push(state, action, reward, next_state, done) {
            self.replay.push(t);
        }
    }

    /// An empty n-step fold with this agent's `n_step` and `gamma`, for callers that interleave
    /// several trajectories (online learning) and hand the folded transitions to [`Self::remember`].
    pub fn n_step_fold(&self) -> NStepFold {
        NStepFold::new(self.cfg.n_step, self.cfg.gamma)
    }

    /// Stores an already folded transition in the replay (its state width must be the agent's).
    pub fn remember(&mut self, t: Transition) -> bool {
        let ok = t.state.len() == self.cfg.state_dim
            && t.next_state.len() == self.cfg.state_dim
            && t.action < ACTIONS.len()
            && t.reward.is_finite();
        if ok {
            self.replay.push(t);
        }
        ok
    }

    /// One learning step on a prioritized batch; `None` until the buffer holds enough.
    pub fn learn(&mut self) -> Option<f64> {
        if self.replay.len() < self.cfg.batch.max(self.cfg.learn_start) {
            return None;
        }
        let frac = (self.updates as f64 / self.cfg.beta_steps.max(1) as f64).min(1.0);
        let beta = self.cfg.beta_start + (1.0 - self.cfg.beta_start) * frac;
        let batch = self.replay.sample(self.cfg.batch, beta, &mut self.rng);
        let device = self.vs.device();
        let n = batch.transitions.len() as i64;
        let flat = |f: &dyn Fn(&Transition) -> &[f32]| -> Tensor {
            let v: Vec<f32> = batch
                .transitions
                .iter()
                .flat_map(|t| f(t).to_vec())
                .collect();
            Tensor::from_slice(&v).view([n, -1]).to_device(device)
        };
        let s = flat(&|t| &t.state);
        let s2 = flat(&|t| &t.next_state);
        let actions: Vec<i64> = batch.transitions.iter().map(|t| t.action as i64).collect();
        let a = Tensor::from_slice(&actions).view([n, 1]).to_device(device);
        let rewards: Vec<f32> = batch.transitions.iter().map(|t| t.reward).collect();
        let discounts: Vec<f32> = batch.transitions.iter().map(|t| t.discount).collect();
        let r = Tensor::from_slice(&rewards).to_device(device);
        let d = Tensor::from_slice(&discounts).to_device(device);
        let w = Tensor::from_slice(&batch.weights).to_device(device);
        // Double DQN: the online net picks the next action, the target net values it.
        let y = tch::no_grad(|| {
            let next_a = self.online.forward(&s2).q.argmax(-1, true);
            let next_q = self
                .target
                .forward(&s2)
                .q
                .gather(1, &next_a, false)
                .squeeze_dim(-1);
            &r + &d * next_q
        });
        let q = self
            .online
            .forward(&s)
            .q
            .gather(1, &a, false)
            .squeeze_dim(-1);
        let td = (&y - &q).detach();
        let loss = (q.huber_loss(&y, Reduction::None, 1.0) * &w).mean(Kind::Float);
        self.opt.backward_step_clip_norm(&loss, self.cfg.grad_clip);
        let td: Vec<f32> = flat_f64(&td).into_iter().map(|x| x as f32).collect();
        self.replay.update_priorities(&batch.slots, &td);
        self.updates += 1;
        self.update_target();
        Some(loss.double_value(&[]))
    }

    fn update_target(&mut self) {
        match self.cfg.target {
            TargetUpdate::Periodic { every } => {
                if self.updates.is_multiple_of(every.max(1)) {
                    // Same variable names by construction, so the copy cannot miss one.
                    let _ = self.target_vs.copy(&self.vs);
                }
            }
            TargetUpdate::Polyak { tau } => {
                let src = self.vs.variables();
                let mut dst = self.target_vs.variables();
                tch::no_grad(|| {
                    for (name, t) in dst.iter_mut() {
                        if let Some(s) = src.get(name) {
                            let mixed = s * tau + &*t * (1.0 - tau);
                            t.copy_(&mixed);
                        }
                    }
                });
            }
        }
    }

    /// Copies the online weights into another store built with the same config (hand-off).
    pub fn copy_weights_to(&self, dst: &mut nn::VarStore) -> Result<(), tch::TchError> {
        dst.copy(&self.vs)
    }

    /// A copy of the online weights in a store of their own (sent to another thread as a
    /// hand-off; [`Self::load_weights`] installs it).
    pub fn weights_snapshot(&self) -> Result<nn::VarStore, tch::TchError> {
        let mut vs = nn::VarStore::new(self.vs.device());
        let _net = DuelingNet::new(&vs.root(), self.cfg.state_dim, self.cfg.hidden);
        vs.copy(&self.vs)?;
        Ok(vs)
    }

    /// Installs online weights from a snapshot of an agent with the same network sizes.
    pub fn load_weights(&mut self, src: &nn::VarStore) -> Result<(), tch::TchError> {
        self.vs.copy(src)
    }

    /// Reloads the online and target weights from the online store (after a checkpoint load).
    pub fn sync_target(&mut self) -> Result<(), tch::TchError> {
        self.target_vs.copy(&self.vs)
    }
}

fn decision(
    q_values: [f64; 3],
    state_value: f64,
    advantages: [f64; 3],
    pick: usize,
    explored: bool,
) -> RlDecision {
    let m = q_values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = q_values.iter().map(|q| (q - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    RlDecision {
        action: Action::from_index(pick),
        q_values,
        expected_reward: q_values[pick],
        confidence: e[pick] / sum,
        state_value,
        advantages,
        explored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dim: usize) -> DqnConfig {
        DqnConfig {
            batch: 16,
            learn_start: 16,
            n_step: 2,
            gamma: 0.5,
            ..DqnConfig::new(dim)
        }
    }

    #[test]
    fn epsilon_decays_linearly_then_stays() {
        let e = EpsilonSchedule {
            start: 1.0,
            end: 0.1,
            decay_steps: 10,
        };
        assert_eq!(e.at(0), 1.0);
        assert!((e.at(5) - 0.55).abs() < 1e-12);
        assert_eq!(e.at(10), 0.1);
        assert_eq!(e.at(1_000), 0.1);
    }

    #[test]
    fn dueling_q_is_value_plus_centred_advantage() {
        tch::manual_seed(0);
        let a = DqnAgent::new(cfg(4), Device::Cpu).unwrap();
        let d = a.decide(&[0.1, -0.2, 0.3, 1.0]);
        let mean_adv = d.advantages.iter().sum::<f64>() / 3.0;
        assert!(mean_adv.abs() < 1e-6);
        for i in 0..3 {
            assert!((d.q_values[i] - d.state_value - d.advantages[i]).abs() < 1e-5);
        }
        assert!(d.confidence > 0.0 && d.confidence <= 1.0);
        assert_eq!(d.expected_reward, d.q_values[d.action.index()]);
    }

    #[test]
    fn model_output_follows_the_design_example_and_validates() {
        tch::manual_seed(0);
        let a = DqnAgent::new(cfg(4), Device::Cpu).unwrap();
        let d = a.decide(&[0.1, -0.2, 0.3, 1.0]);
        let meta = BTreeMap::from([("epsilon".to_string(), "0.05".to_string())]);
        let o = d.to_model_output("dqn_agent", "ETHUSDT", 5_000, meta);
        o.validate().unwrap();
        assert_eq!(o.model_type, "rl");
        let p = &o.predictions;
        assert_eq!(p.action, d.action.into());
        assert_eq!(p.q_values.unwrap().as_array(), d.q_values);
        assert_eq!(p.expected_reward, Some(d.q_values[d.action.index()]));
        assert!((p.probabilities.as_array().iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(p.action_confidence, d.confidence);
        // The greedy action has the largest probability.
        let probs = p.probabilities.as_array();
        assert!(probs.iter().all(|&x| x <= probs[d.action.index()]));
        assert_eq!(o.hidden_states["state_value"], vec![d.state_value as f32]);
        assert_eq!(o.hidden_states["advantage_values"].len(), 3);
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.contains("\"q_values\":{\"BUY\""), "{json}");
    }

    #[test]
    fn n_step_returns_fold_rewards_and_stop_at_done() {
        tch::manual_seed(0);
        let mut a = DqnAgent::new(cfg(1), Device::Cpu).unwrap();
        a.observe(vec![0.0], Action::Buy, 1.0, &[1.0], false);
        assert_eq!(a.replay_len(), 0);
        a.observe(vec![1.0], Action::Hold, 2.0, &[2.0], false);
        assert_eq!(a.replay_len(), 1);
        a.observe(vec![2.0], Action::Sell, 4.0, &[3.0], true);
        assert_eq!(a.replay_len(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let s = a.replay.sample(200, 0.4, &mut rng);
        let first = s.transitions.iter().find(|t| t.state == vec![0.0]).unwrap();
        assert!((first.reward - (1.0 + 0.5 * 2.0)).abs() < 1e-6);
        assert!((first.discount - 0.25).abs() < 1e-6);
        assert_eq!(first.next_state, vec![2.0]);
        let second = s.transitions.iter().find(|t| t.state == vec![1.0]).unwrap();
        assert!((second.reward - (2.0 + 0.5 * 4.0)).abs() < 1e-6);
        assert_eq!(second.discount, 0.0);
        let last = s.transitions.iter().find(|t| t.state == vec![2.0]).unwrap();
        assert_eq!(last.discount, 0.0);
    }

    #[test]
    fn learns_a_one_step_bandit() {
        // Reward 1 for BUY when the feature is positive, for SELL when negative: Q must rank
        // the right action first on both states after training.
        tch::manual_seed(5);
        let mut c = cfg(1);
        c.n_step = 1;
        c.target = TargetUpdate::Periodic { every: 20 };
        let mut a = DqnAgent::new(c, Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..600 {
            let x: f32 = if rng.random::<bool>() { 1.0 } else { -1.0 };
            let act = Action::from_index(rng.random_range(0..3));
            let good = (x > 0.0 && act == Action::Buy) || (x < 0.0 && act == Action::Sell);
            a.observe(vec![x], act, if good { 1.0 } else { 0.0 }, &[0.0], true);
            a.learn();
        }
        assert_eq!(a.decide(&[1.0]).action, Action::Buy);
        assert_eq!(a.decide(&[-1.0]).action, Action::Sell);
        assert!(a.updates() > 0);
    }

    #[test]
    fn snapshots_hand_weights_over_and_remember_checks_transitions() {
        tch::manual_seed(0);
        let a = DqnAgent::new(cfg(2), Device::Cpu).unwrap();
        tch::manual_seed(1);
        let mut b = DqnAgent::new(cfg(2), Device::Cpu).unwrap();
        let s = [0.3f32, -0.2];
        assert_ne!(a.decide(&s).q_values, b.decide(&s).q_values);
        b.load_weights(&a.weights_snapshot().unwrap()).unwrap();
        assert_eq!(a.decide(&s).q_values, b.decide(&s).q_values);
        let t = Transition {
            state: vec![0.0; 2],
            action: 0,
            reward: 1.0,
            next_state: vec![0.0; 2],
            discount: 0.9,
        };
        assert!(b.remember(t.clone()));
        assert!(!b.remember(Transition {
            state: vec![0.0; 3],
            ..t.clone()
        }));
        assert!(!b.remember(Transition {
            reward: f32::NAN,
            ..t.clone()
        }));
        assert!(!b.remember(Transition { action: 3, ..t }));
        assert_eq!(b.replay_len(), 1);
    }
}
