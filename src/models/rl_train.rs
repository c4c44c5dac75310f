//! DQN training in the trading environment and evaluation on a later, held-out period
//! against buy-and-hold, flat and random policies, and the DQN's state built from the encoded
//! model input.
//!
//! **State** (`[`RlStateSpec::state_dim`]` wide): the market features of the encoded input for
//! one timeframe ([`market_features`]: the newest closes relative to the newest one, that
//! timeframe's pivots and indicators sections), then, when the spec says so, the CNN's
//! predictions and hidden states of the same step (`CnnOutput::state_features`), then the
//! position (−1, 0, 1), which the environment appends.

use super::cnn::{Action, CnnModel};
use super::cnn_train::{CnnDataset, TrainProgress};
use super::dqn::{DqnAgent, DqnConfig, EpsilonSchedule};
use super::env::{EpisodeStats, TradingEnv};
use super::input::timeframe_index;
use crate::analysis::encoding::{CANDLE_FEATURES, EncodedInput, PIVOT_FEATURES};
use crate::analysis::indicators::INDICATOR_NAMES;
use crate::analysis::input::FRAMES;
use crate::analysis::pivots::LEVELS;
use crate::market::types::Timeframe;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use tch::{Device, Tensor};

/// Newest closes in the DQN's market features.
pub const MARKET_RECENT: usize = 8;

/// Width of [`market_features`] for `recent` closes.
pub const fn market_width(recent: usize) -> usize {
    recent + LEVELS * PIVOT_FEATURES + INDICATOR_NAMES.len() * 2
}

/// The DQN's market features of timeframe `tf` from an encoded input: the newest `recent`
/// normalized closes minus the newest one (0 for absent frames), then the timeframe's
/// `pivots` and `indicators` sections as encoded.
pub fn market_features(enc: &EncodedInput, tf: Timeframe, recent: usize) -> Vec<f32> {
    let i = timeframe_index(tf);
    let recent = recent.min(FRAMES);
    let mut out = Vec::with_capacity(market_width(recent));
    let ohlcv = enc.section("ohlcv").unwrap_or(&[]);
    let frame = |t: usize| {
        ohlcv
            .get((i * FRAMES + t) * CANDLE_FEATURES..(i * FRAMES + t + 1) * CANDLE_FEATURES)
            .filter(|f| f[6] > 0.0)
            .map(|f| f[3])
    };
    let newest = frame(FRAMES - 1);
    for t in FRAMES - recent..FRAMES {
        out.push(match (frame(t), newest) {
            (Some(c), Some(n)) => c - n,
            _ => 0.0,
        });
    }
    let per_pivots = LEVELS * PIVOT_FEATURES;
    let pivots = enc.section("pivots").unwrap_or(&[]);
    match pivots.get(i * per_pivots..(i + 1) * per_pivots) {
        Some(p) => out.extend_from_slice(p),
        None => out.resize(out.len() + per_pivots, 0.0),
    }
    let per_ind = INDICATOR_NAMES.len() * 2;
    let ind = enc.section("indicators").unwrap_or(&[]);
    match ind.get(i * per_ind..(i + 1) * per_ind) {
        Some(p) => out.extend_from_slice(p),
        None => out.resize(out.len() + per_ind, 0.0),
    }
    out
}

/// What the DQN's state is made of (stored in its checkpoints with the agent's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RlStateSpec {
    /// Timeframe of the market features.
    pub timeframe: Timeframe,
    /// Newest closes in the market features.
    pub recent: usize,
    /// Width of the CNN state features in the state (0: no CNN).
    pub cnn_features: usize,
}

impl RlStateSpec {
    /// Observation width: market features, CNN features, position.
    pub const fn state_dim(&self) -> usize {
        market_width(self.recent) + self.cnn_features + 1
    }
}

/// Everything needed to rebuild a DQN from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DqnModelConfig {
    /// Agent settings (network sizes, learning).
    pub agent: DqnConfig,
    /// State layout.
    pub state: RlStateSpec,
}

/// Feature rows for the agent, aligned with prices (the env appends the position).
#[derive(Debug, Clone)]
pub struct RlFeatures {
    /// Rows of `dim` floats.
    pub rows: Vec<f32>,
    /// Row width.
    pub dim: usize,
    /// Close per row.
    pub prices: Vec<f64>,
}

/// The dataset's market features and, when a CNN is given, its predictions and hidden states
/// on the same rows, computed in batches.
pub fn rl_features(ds: &CnnDataset, cnn: Option<&CnnModel>) -> RlFeatures {
    let cnn_dim = cnn.map_or(0, |m| m.net.config().state_features());
    let md = ds.market_dim;
    let dim = md + cnn_dim;
    let mut cnn_rows: Vec<f32> = Vec::new();
    if let Some(m) = cnn {
        for start in (0..ds.len()).step_by(512) {
            let end = (start + 512).min(ds.len());
            let out = m.infer(&ds.rows.input(start..end, m.vs.device()));
            let t = out
                .state_features()
                .to_device(Device::Cpu)
                .contiguous()
                .view([-1]);
            cnn_rows.extend(Vec::<f32>::try_from(&t).unwrap_or_default());
        }
    }
    let mut rows = Vec::with_capacity(ds.len() * dim);
    for r in 0..ds.len() {
        rows.extend_from_slice(&ds.market[r * md..(r + 1) * md]);
        if cnn_dim > 0 {
            rows.extend_from_slice(&cnn_rows[r * cnn_dim..(r + 1) * cnn_dim]);
        }
    }
    RlFeatures {
        rows,
        dim,
        prices: ds.anchors.iter().map(|a| a.close).collect(),
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RlTrainConfig {
    /// Episodes to run.
    pub episodes: usize,
    /// Steps per episode (episodes start at random rows of the training range).
    pub episode_len: usize,
    /// Environment steps per learning step.
    pub learn_every: usize,
    /// Seed for episode starts.
    pub seed: u64,
}

impl Default for RlTrainConfig {
    fn default() -> Self {
        Self {
            episodes: 40,
            episode_len: 256,
            learn_every: 1,
            seed: 0,
        }
    }
}

/// The agent settings `train rl` uses for `steps` environment steps: exploration decays over
/// the first half and the importance-sampling exponent anneals over all of them.
pub fn agent_config(spec: &RlStateSpec, steps: u64, seed: u64) -> DqnConfig {
    let mut cfg = DqnConfig::new(spec.state_dim());
    cfg.seed = seed;
    cfg.epsilon = EpsilonSchedule {
        start: 1.0,
        end: 0.05,
        decay_steps: steps / 2,
    };
    cfg.beta_steps = steps.max(1);
    cfg
}

/// What a DQN training run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RlTrainReport {
    /// Episodes run.
    pub episodes: usize,
    /// Learning steps taken.
    pub updates: u64,
    /// Mean total return of the last quarter of the episodes (with exploration).
    pub late_mean_return: f64,
}

/// Trains `agent` on rows `rows` of `env`.
pub fn train_dqn(
    agent: &mut DqnAgent,
    env: &mut TradingEnv,
    rows: Range<usize>,
    cfg: &RlTrainConfig,
    progress: &mut dyn FnMut(&TrainProgress),
) -> RlTrainReport {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let len = cfg.episode_len.max(2);
    let last_start = rows.end.saturating_sub(len + 1).max(rows.start);
    let mut returns = Vec::with_capacity(cfg.episodes);
    let mut step = 0usize;
    for ep in 1..=cfg.episodes {
        let start = if last_start > rows.start {
            rng.random_range(rows.start..last_start)
        } else {
            rows.start
        };
        let end = (start + len).min(rows.end.saturating_sub(1)).max(start + 1);
        let mut s = env.reset(start, end);
        let mut loss_sum = 0.0;
        let mut losses = 0;
        loop {
            let d = agent.act(&s);
            let r = env.step(d.action);
            agent.observe(std::mem::take(&mut s), d.action, r.reward, &r.state, r.done);
            step += 1;
            if step.is_multiple_of(cfg.learn_every.max(1))
                && let Some(l) = agent.learn()
            {
                loss_sum += l;
                losses += 1;
            }
            s = r.state;
            if r.done {
                break;
            }
        }
        let ret = env.stats().total_return;
        returns.push(ret);
        progress(&TrainProgress {
            phase: "dqn",
            step: ep,
            total: cfg.episodes,
            train: ret,
            validation: (losses > 0).then(|| loss_sum / losses as f64),
        });
    }
    let tail = &returns[returns.len() - returns.len().div_ceil(4)..];
    RlTrainReport {
        episodes: cfg.episodes,
        updates: agent.updates(),
        late_mean_return: tail.iter().sum::<f64>() / tail.len().max(1) as f64,
    }
}

/// The agent and the reference policies on one held-out range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyComparison {
    /// Greedy agent.
    pub agent: EpisodeStats,
    /// Never trades.
    pub flat: EpisodeStats,
    /// Buys on the first row and holds.
    pub buy_and_hold: EpisodeStats,
    /// Mean total return of uniformly random policies over several seeds.
    pub random_mean_return: f64,
}

/// Runs the greedy agent (batched over precomputed rows) and the baselines on `rows`.
pub fn compare_policies(
    agent: &DqnAgent,
    env: &mut TradingEnv,
    rows: Range<usize>,
    seed: u64,
) -> PolicyComparison {
    let end = rows.end.saturating_sub(1);
    let agent_stats = env.run_policy(rows.start, end, |s, _| agent.decide(s).action);
    let flat = env.run_policy(rows.start, end, |_, _| Action::Hold);
    let buy_and_hold = env.run_policy(rows.start, end, |_, _| Action::Buy);
    let mut random = 0.0;
    const RANDOM_RUNS: u64 = 5;
    for k in 0..RANDOM_RUNS {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(k));
        random += env
            .run_policy(rows.start, end, |_, _| {
                Action::from_index(rng.random_range(0..3))
            })
            .total_return;
    }
    PolicyComparison {
        agent: agent_stats,
        flat,
        buy_and_hold,
        random_mean_return: random / RANDOM_RUNS as f64,
    }
}

/// Greedy actions for many states at once (backtests): `rows` of width `dim` plus position.
pub fn batch_actions(agent: &DqnAgent, states: &[f32], width: usize) -> Vec<Action> {
    if width == 0 || states.is_empty() {
        return Vec::new();
    }
    let t = Tensor::from_slice(states).view([(states.len() / width) as i64, width as i64]);
    agent
        .decide_batch(&t)
        .into_iter()
        .map(|d| d.action)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::cnn_train::DatasetConfig;
    use crate::models::dqn::DqnConfig;
    use crate::models::env::EnvConfig;
    use crate::models::input::InputShape;

    fn ds(n: usize) -> CnnDataset {
        let cs = crate::models::samples::tests::wave(n, Timeframe::M1, 1_699_999_200_000);
        CnnDataset::build("ETHUSDT", &cs, &[], &DatasetConfig::new(Timeframe::M1, 8)).unwrap()
    }

    #[test]
    fn features_align_with_prices_and_include_the_cnn() {
        tch::manual_seed(0);
        let d = ds(80);
        let plain = rl_features(&d, None);
        assert_eq!(plain.dim, market_width(MARKET_RECENT));
        assert_eq!(plain.rows.len(), plain.dim * d.len());
        assert_eq!(plain.prices.len(), d.len());
        // The newest relative close is always zero; older ones are not all zero.
        assert_eq!(plain.rows[MARKET_RECENT - 1], 0.0);
        assert!(plain.rows[..MARKET_RECENT - 1].iter().any(|&v| v != 0.0));
        let cnn = CnnModel::new(
            crate::models::cnn::CnnConfig::small(InputShape::encoded(8)),
            tch::Device::Cpu,
        );
        let with = rl_features(&d, Some(&cnn));
        assert_eq!(with.dim, plain.dim + cnn.net.config().state_features());
        assert_eq!(with.rows.len(), with.dim * d.len());
        let spec = RlStateSpec {
            timeframe: Timeframe::M1,
            recent: MARKET_RECENT,
            cnn_features: cnn.net.config().state_features(),
        };
        assert_eq!(spec.state_dim(), with.dim + 1);
    }

    #[test]
    fn training_runs_episodes_and_baselines_are_consistent() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let f = rl_features(&ds(300), None);
        let mut env = TradingEnv::new(f.prices, f.rows, f.dim, EnvConfig::default()).unwrap();
        let mut c = DqnConfig::new(env.state_dim());
        c.learn_start = 32;
        c.batch = 16;
        let mut agent = DqnAgent::new(c, tch::Device::Cpu).unwrap();
        let mut seen = 0;
        let cfg = RlTrainConfig {
            episodes: 3,
            episode_len: 40,
            ..Default::default()
        };
        let rep = train_dqn(&mut agent, &mut env, 0..200, &cfg, &mut |_| seen += 1);
        assert_eq!(seen, 3);
        assert!(rep.updates > 0);
        let n = env.len();
        let cmp = compare_policies(&agent, &mut env, 200..n, 1);
        assert_eq!(cmp.flat.total_return, 0.0);
        assert_eq!(cmp.flat.trades, 0);
        assert_eq!(cmp.buy_and_hold.trades, 1);
        let states: Vec<f32> = (0..3).flat_map(|_| vec![0.0f32; env.state_dim()]).collect();
        assert_eq!(batch_actions(&agent, &states, env.state_dim()).len(), 3);
    }
}
