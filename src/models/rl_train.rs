//! DQN training in the trading environment and evaluation on a later, held-out period
//! against buy-and-hold, flat and random policies.

use super::cnn::{Action, CnnModel};
use super::cnn_train::TrainProgress;
use super::dqn::DqnAgent;
use super::env::{EpisodeStats, TradingEnv};
use super::features::FeatureSet;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use std::ops::Range;
use tch::{Device, Tensor};

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

/// Market features (the last `recent` closes relative to the newest, the pivot context) and,
/// when a CNN is given, its predictions and hidden states, computed in batches.
pub fn rl_features(fs: &FeatureSet, recent: usize, cnn: Option<&CnnModel>) -> RlFeatures {
    let w = fs.input.window;
    let recent = recent.clamp(1, w);
    let (cs, f) = (fs.input.channels * w, fs.input.context);
    let cnn_dim = cnn.map_or(0, |m| m.net.config().state_features());
    let dim = recent + f + cnn_dim;
    let mut rows = Vec::with_capacity(fs.len() * dim);
    let mut cnn_rows: Vec<f32> = Vec::new();
    if let Some(m) = cnn {
        for start in (0..fs.len()).step_by(1024) {
            let end = (start + 1024).min(fs.len());
            let out = m.infer(&fs.input(start..end, m.vs.device()));
            let t = out
                .state_features()
                .to_device(Device::Cpu)
                .contiguous()
                .view([-1]);
            cnn_rows.extend(Vec::<f32>::try_from(&t).unwrap_or_default());
        }
    }
    for r in 0..fs.len() {
        // Channel 3 is the close, relative to the newest close in the window.
        let close = &fs.series[r * cs + 3 * w..r * cs + 4 * w];
        rows.extend_from_slice(&close[w - recent..]);
        rows.extend_from_slice(&fs.context[r * f..(r + 1) * f]);
        if cnn_dim > 0 {
            rows.extend_from_slice(&cnn_rows[r * cnn_dim..(r + 1) * cnn_dim]);
        }
    }
    RlFeatures {
        rows,
        dim,
        prices: fs.close.clone(),
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
    use crate::analysis::pivots::PivotConfig;
    use crate::market::types::{Candle, Price, Qty, Timeframe};
    use crate::models::dqn::DqnConfig;
    use crate::models::env::EnvConfig;
    use crate::models::features::FeatureBuilder;

    fn fs(n: usize) -> FeatureSet {
        let cs: Vec<Candle> = (0..n)
            .map(|i| {
                let c = 100.0 + (i as f64 / 4.0).sin();
                let p = Price::from_f64_round;
                Candle {
                    open_time_ms: i as i64 * 60_000,
                    open: p(c),
                    high: p(c + 0.1),
                    low: p(c - 0.1),
                    close: p(c),
                    volume: Qty::from_f64_round(1.0),
                    trades: 1,
                }
            })
            .collect();
        FeatureBuilder::new(8, PivotConfig::for_timeframe(Timeframe::M1))
            .build(&cs)
            .unwrap()
    }

    #[test]
    fn features_align_with_prices_and_include_the_cnn() {
        tch::manual_seed(0);
        let f = fs(60);
        let plain = rl_features(&f, 4, None);
        assert_eq!(plain.dim, 4 + 20);
        assert_eq!(plain.rows.len(), plain.dim * f.len());
        assert_eq!(plain.prices.len(), f.len());
        // The newest relative close is always zero.
        assert_eq!(plain.rows[3], 0.0);
        let cnn = CnnModel::new(
            crate::models::cnn::CnnConfig::small(f.input),
            tch::Device::Cpu,
        );
        let with = rl_features(&f, 4, Some(&cnn));
        assert_eq!(with.dim, 24 + cnn.net.config().state_features());
        assert_eq!(with.rows.len(), with.dim * f.len());
    }

    #[test]
    fn training_runs_episodes_and_baselines_are_consistent() {
        tch::set_num_threads(1);
        tch::manual_seed(0);
        let f = rl_features(&fs(300), 4, None);
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
