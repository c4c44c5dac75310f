//! A trading environment over historical prices, with fees and slippage, for the DQN.
//!
//! Actions set the target position: BUY → long 1, SELL → short 1, HOLD → keep. Each step
//! moves one row (candle) forward.
//!
//! Reward at step t (documented here because training depends on its exact form):
//! `net_t = pos_t · (p_{t+1}/p_t − 1) − (fee + slippage) · |pos_t − pos_{t−1}|`, the return on
//! equity net of costs; equity compounds `E_{t+1} = E_t (1 + net_t)`. The drawdown
//! `dd = 1 − E / max(E)` is penalized on its increase only, so the agent pays once for each new
//! loss below the peak instead of every step it stays under water:
//! `reward_t = scale · (net_t − λ · max(0, dd_{t+1} − dd_t))`.

use super::cnn::Action;
use crate::market::types::Price;

/// Costs and reward shaping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvConfig {
    /// Exchange fee per unit of position changed, in basis points of notional.
    pub fee_bps: f64,
    /// Slippage per unit of position changed, in basis points.
    pub slippage_bps: f64,
    /// λ: weight of drawdown increases in the reward.
    pub drawdown_penalty: f64,
    /// Multiplier so typical rewards are order 1 for the network.
    pub reward_scale: f64,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            fee_bps: 4.0,
            slippage_bps: 1.0,
            drawdown_penalty: 0.5,
            reward_scale: 100.0,
        }
    }
}

/// Why an environment could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvError {
    /// Feature rows and prices disagree.
    #[error("{prices} prices but {rows} feature rows of width {dim}")]
    Mismatch {
        /// Prices given.
        prices: usize,
        /// Rows implied by the feature slice.
        rows: usize,
        /// Row width.
        dim: usize,
    },
    /// A price that is not a positive finite number.
    #[error("price {index} is {value}, not positive")]
    BadPrice {
        /// Row.
        index: usize,
        /// The value.
        value: f64,
    },
    /// Fewer than two rows: there is no step to take.
    #[error("need at least two rows, got {0}")]
    TooShort(usize),
}

/// The position an action leads to from `current`: BUY long 1, SELL short 1, HOLD keeps.
pub fn target_position(current: i8, action: Action) -> i8 {
    match action {
        Action::Buy => 1,
        Action::Sell => -1,
        Action::Hold => current.clamp(-1, 1),
    }
}

/// `exit / entry − 1` from exact prices: the difference is taken on the fixed-point integers,
/// so only the final division rounds. `None` when `entry` is not positive.
pub fn price_return(entry: Price, exit: Price) -> Option<f64> {
    (entry.raw() > 0)
        .then(|| (i128::from(exit.raw()) - i128::from(entry.raw())) as f64 / entry.raw() as f64)
}

/// The reward of one step and its parts (see the module docs for the formula).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReward {
    /// `reward_t`: scaled, drawdown-penalized.
    pub reward: f64,
    /// `net_t`: return on equity net of costs.
    pub net_return: f64,
    /// Fees and slippage paid, as a fraction of equity.
    pub cost: f64,
    /// Drawdown after the step, 0..1.
    pub drawdown: f64,
}

/// Equity and its running peak: the state the documented reward needs between steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardTracker {
    equity: f64,
    peak: f64,
}

impl Default for RewardTracker {
    fn default() -> Self {
        Self {
            equity: 1.0,
            peak: 1.0,
        }
    }
}

impl RewardTracker {
    /// Equity relative to the start (1.0 = unchanged).
    pub fn equity(&self) -> f64 {
        self.equity
    }

    /// One step: the position moves `from` → `to` (paying costs on the change) and is then
    /// held over a market return `ret`; equity compounds and the reward follows the module docs.
    pub fn step(&mut self, cfg: &EnvConfig, from: i8, to: i8, ret: f64) -> StepReward {
        let turnover = f64::from((to - from).abs());
        let cost = turnover * (cfg.fee_bps + cfg.slippage_bps) * 1e-4;
        let net = f64::from(to) * ret - cost;
        let dd_before = 1.0 - self.equity / self.peak;
        self.equity *= 1.0 + net;
        self.peak = self.peak.max(self.equity);
        let dd_after = 1.0 - self.equity / self.peak;
        StepReward {
            reward: cfg.reward_scale
                * (net - cfg.drawdown_penalty * (dd_after - dd_before).max(0.0)),
            net_return: net,
            cost,
            drawdown: dd_after,
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// Next observation (features plus position).
    pub state: Vec<f32>,
    /// Shaped reward (see the module docs).
    pub reward: f64,
    /// Return on equity this step, net of costs.
    pub net_return: f64,
    /// True at the end of the episode.
    pub done: bool,
}

/// Summary of one episode.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct EpisodeStats {
    /// `E_end / E_start − 1`.
    pub total_return: f64,
    /// Largest peak-to-trough equity loss, 0..1.
    pub max_drawdown: f64,
    /// Position changes (a flip counts 2 units of turnover, 1 trade).
    pub trades: usize,
    /// Fees and slippage paid, as a fraction of starting equity (summed per step).
    pub costs: f64,
    /// Steps taken.
    pub steps: usize,
}

/// The environment.
#[derive(Debug, Clone)]
pub struct TradingEnv {
    prices: Vec<f64>,
    features: Vec<f32>,
    dim: usize,
    cfg: EnvConfig,
    t: usize,
    end: usize,
    position: i8,
    tracker: RewardTracker,
    stats: EpisodeStats,
}

impl TradingEnv {
    /// An environment over `prices` with a feature row of width `dim` per price.
    pub fn new(
        prices: Vec<f64>,
        features: Vec<f32>,
        dim: usize,
        cfg: EnvConfig,
    ) -> Result<Self, EnvError> {
        let rows = features.len().checked_div(dim).unwrap_or(0);
        if rows != prices.len() || rows * dim != features.len() {
            return Err(EnvError::Mismatch {
                prices: prices.len(),
                rows,
                dim,
            });
        }
        if prices.len() < 2 {
            return Err(EnvError::TooShort(prices.len()));
        }
        if let Some((index, &value)) = prices
            .iter()
            .enumerate()
            .find(|(_, p)| !(p.is_finite() && **p > 0.0))
        {
            return Err(EnvError::BadPrice { index, value });
        }
        let end = prices.len() - 1;
        Ok(Self {
            prices,
            features,
            dim,
            cfg,
            t: 0,
            end,
            position: 0,
            tracker: RewardTracker::default(),
            stats: EpisodeStats::default(),
        })
    }

    /// Width of an observation: features plus the position.
    pub fn state_dim(&self) -> usize {
        self.dim + 1
    }

    /// Rows available.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when there are no rows (never, once built).
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Starts a flat episode on rows `start..=end` (clamped); returns the first observation.
    pub fn reset(&mut self, start: usize, end: usize) -> Vec<f32> {
        self.end = end.min(self.prices.len() - 1).max(1);
        self.t = start.min(self.end - 1);
        self.position = 0;
        self.tracker = RewardTracker::default();
        self.stats = EpisodeStats::default();
        self.state()
    }

    /// Current row.
    pub fn time(&self) -> usize {
        self.t
    }

    /// Current position: −1, 0 or 1.
    pub fn position(&self) -> i8 {
        self.position
    }

    /// The observation at the current row.
    pub fn state(&self) -> Vec<f32> {
        let mut s = self.features[self.t * self.dim..(self.t + 1) * self.dim].to_vec();
        s.push(f32::from(self.position));
        s
    }

    /// Episode statistics so far.
    pub fn stats(&self) -> EpisodeStats {
        self.stats
    }

    /// Applies `action` at the current row and moves one row on.
    pub fn step(&mut self, action: Action) -> StepResult {
        let new_pos = target_position(self.position, action);
        if new_pos != self.position {
            self.stats.trades += 1;
        }
        let ret = self.prices[self.t + 1] / self.prices[self.t] - 1.0;
        let step = self.tracker.step(&self.cfg, self.position, new_pos, ret);
        self.stats.max_drawdown = self.stats.max_drawdown.max(step.drawdown);
        self.stats.costs += step.cost;
        self.stats.steps += 1;
        self.stats.total_return = self.tracker.equity() - 1.0;
        self.position = new_pos;
        self.t += 1;
        StepResult {
            state: self.state(),
            reward: step.reward,
            net_return: step.net_return,
            done: self.t >= self.end,
        }
    }

    /// Runs `policy` over rows `start..=end` and returns the episode statistics.
    pub fn run_policy(
        &mut self,
        start: usize,
        end: usize,
        mut policy: impl FnMut(&[f32], usize) -> Action,
    ) -> EpisodeStats {
        let mut s = self.reset(start, end);
        loop {
            let a = policy(&s, self.t);
            let r = self.step(a);
            s = r.state;
            if r.done {
                return self.stats;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(prices: &[f64], cfg: EnvConfig) -> TradingEnv {
        TradingEnv::new(prices.to_vec(), vec![0.0; prices.len()], 1, cfg).unwrap()
    }

    #[test]
    fn long_position_earns_the_move_minus_costs() {
        let cfg = EnvConfig {
            fee_bps: 10.0,
            slippage_bps: 0.0,
            drawdown_penalty: 0.0,
            reward_scale: 1.0,
        };
        let mut e = env(&[100.0, 110.0, 121.0], cfg);
        e.reset(0, 2);
        let r = e.step(Action::Buy);
        assert!((r.net_return - (0.10 - 0.001)).abs() < 1e-12);
        assert_eq!(r.state, vec![0.0, 1.0]);
        let r = e.step(Action::Hold);
        assert!((r.net_return - 0.10).abs() < 1e-12);
        assert!(r.done);
        assert_eq!(e.stats().trades, 1);
    }

    #[test]
    fn flipping_pays_double_and_drawdown_is_penalized() {
        let cfg = EnvConfig {
            fee_bps: 10.0,
            slippage_bps: 5.0,
            drawdown_penalty: 1.0,
            reward_scale: 1.0,
        };
        let mut e = env(&[100.0, 100.0, 90.0, 90.0], cfg);
        e.reset(0, 3);
        e.step(Action::Sell);
        // Short → long is two units of turnover.
        let r = e.step(Action::Buy);
        let net = -0.10 - 2.0 * 0.0015;
        assert!((r.net_return - net).abs() < 1e-12);
        // Equity fell below the peak, so the reward is lower than the net return.
        assert!(r.reward < r.net_return);
        // Holding flat at a drawdown adds no further penalty.
        let r = e.step(Action::Hold);
        assert!((r.reward - r.net_return).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let c = EnvConfig::default();
        assert!(matches!(
            TradingEnv::new(vec![1.0, 2.0], vec![0.0; 3], 1, c),
            Err(EnvError::Mismatch { .. })
        ));
        assert!(matches!(
            TradingEnv::new(vec![1.0], vec![0.0], 1, c),
            Err(EnvError::TooShort(1))
        ));
        assert!(matches!(
            TradingEnv::new(vec![1.0, f64::NAN], vec![0.0; 2], 1, c),
            Err(EnvError::BadPrice { index: 1, .. })
        ));
        assert!(matches!(
            TradingEnv::new(vec![1.0, 2.0], vec![], 0, c),
            Err(EnvError::Mismatch { .. })
        ));
    }
}
