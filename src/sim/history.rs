//! Deterministic candle history, generated top-down.
//!
//! A daily path (GARCH(1,1) variance, Student-t shocks with a common factor across symbols, weak
//! mean reversion to the start price) is computed once; hours, minutes and seconds are generated
//! on demand inside their parent, constrained to the parent's exact OHLC, volume, taker-buy volume
//! and trade count. So any old 1s range costs a few hundred draws, finer candles aggregate exactly
//! to coarser ones, and a restart with the same seed sees the same past. The live market prints
//! the trades of each 1s leaf, so the live stream and the history are one and the same.

use std::collections::HashMap;

use thiserror::Error;

use super::config::SymbolSpec;
use super::random::SimRng;
use crate::market::types::{Candle, Timeframe};

/// First day of the simulated history (2020-01-01 UTC).
pub const EPOCH_MS: i64 = 1_577_836_800_000;
/// Number of simulated days (to early 2031).
pub const DAYS: usize = 4018;
/// Minimum trades in any simulated second, so every leaf can visit open, high, low and close.
pub const MIN_TRADES_PER_SECOND: i64 = 4;

const COMMON_KEY: u64 = 0xC0_4404;
const TRADES_KEY: u64 = 0x007E_ADE5;
const DF: u32 = 5;

/// A candle in integer units of its symbol (ticks, steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimCandle {
    /// Interval start, ms.
    pub open_time_ms: i64,
    /// Open, ticks.
    pub o: i64,
    /// High, ticks.
    pub h: i64,
    /// Low, ticks.
    pub l: i64,
    /// Close, ticks.
    pub c: i64,
    /// Volume, steps.
    pub v: i64,
    /// Taker-buy volume, steps.
    pub bv: i64,
    /// Trade count.
    pub n: i64,
}

impl SimCandle {
    /// Exact market candle.
    pub fn to_candle(&self, spec: &SymbolSpec) -> Candle {
        Candle {
            open_time_ms: self.open_time_ms,
            open: spec.price(self.o),
            high: spec.price(self.h),
            low: spec.price(self.l),
            close: spec.price(self.c),
            volume: spec.qty(self.v),
            trades: self.n as u64,
        }
    }

    /// Aggregates consecutive candles into one opening at `open_time_ms`.
    pub fn aggregate(open_time_ms: i64, parts: &[SimCandle]) -> Option<SimCandle> {
        let first = parts.first()?;
        let last = parts.last()?;
        Some(SimCandle {
            open_time_ms,
            o: first.o,
            c: last.c,
            h: parts.iter().map(|p| p.h).max()?,
            l: parts.iter().map(|p| p.l).min()?,
            v: parts.iter().map(|p| p.v).sum(),
            bv: parts.iter().map(|p| p.bv).sum(),
            n: parts.iter().map(|p| p.n).sum(),
        })
    }

    /// An interval with no trades yet: flat at `price`.
    pub fn empty(open_time_ms: i64, price: i64) -> SimCandle {
        SimCandle {
            open_time_ms,
            o: price,
            h: price,
            l: price,
            c: price,
            v: 0,
            bv: 0,
            n: 0,
        }
    }
}

/// One simulated trade inside a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafTrade {
    /// Aggregate trade id.
    pub id: u64,
    /// Trade time, ms.
    pub time_ms: i64,
    /// Price, ticks.
    pub price: i64,
    /// Quantity, steps.
    pub qty: i64,
    /// True when the taker bought.
    pub taker_buy: bool,
}

/// A history request the simulator cannot answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HistoryError {
    /// Time before the first or after the last simulated day.
    #[error("time {0} ms is outside the simulated history")]
    OutOfRange(i64),
    /// Symbol index not configured.
    #[error("unknown symbol index {0}")]
    UnknownSymbol(usize),
}

/// The seeded history of all symbols.
#[derive(Debug, Clone)]
pub struct History {
    seed: u64,
    correlation: f64,
    specs: Vec<SymbolSpec>,
    days: Vec<Vec<SimCandle>>,
    /// Trades before each day, per symbol (`DAYS + 1` entries).
    trades_before_day: Vec<Vec<i64>>,
}

fn child_tf(tf: Timeframe) -> Option<Timeframe> {
    match tf {
        Timeframe::D1 => Some(Timeframe::H1),
        Timeframe::H1 => Some(Timeframe::M1),
        Timeframe::M1 => Some(Timeframe::S1),
        Timeframe::S1 => None,
    }
}

fn parent_tf(tf: Timeframe) -> Option<Timeframe> {
    match tf {
        Timeframe::D1 => None,
        Timeframe::H1 => Some(Timeframe::D1),
        Timeframe::M1 => Some(Timeframe::H1),
        Timeframe::S1 => Some(Timeframe::M1),
    }
}

fn tf_code(tf: Timeframe) -> u64 {
    tf.millis() as u64
}

/// Splits `total` into parts ≥ `mins` proportional to `weights` (exact integer sum).
fn split_exact(total: i64, weights: &[f64], mins: &[i64], rng: &mut SimRng) -> Vec<i64> {
    let min_sum: i64 = mins.iter().sum();
    let free = (total - min_sum).max(0);
    let wsum: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut out: Vec<i64> = mins
        .iter()
        .zip(weights)
        .map(|(m, w)| m + ((free as f64) * w / wsum).floor() as i64)
        .collect();
    let mut rest = total - out.iter().sum::<i64>();
    let k = out.len() as i64;
    let mut i = rng.below(k as u64) as i64;
    while rest > 0 {
        let add = (rest / k).max(1);
        out[i as usize] += add;
        rest -= add;
        i = (i + 1) % k;
    }
    // Floating rounding can overshoot by a unit; take it back from parts above their minimum.
    let mut j = 0usize;
    while rest < 0 {
        if out[j] > mins[j] {
            out[j] -= 1;
            rest += 1;
        }
        j = (j + 1) % out.len();
    }
    out
}

impl History {
    /// Builds the daily path for all symbols.
    pub fn new(seed: u64, correlation: f64, specs: Vec<SymbolSpec>) -> Self {
        let n = specs.len();
        let mut days = vec![Vec::with_capacity(DAYS); n];
        let mut trades_before_day = vec![vec![0i64; DAYS + 1]; n];
        let (alpha, beta) = (0.08, 0.90);
        let mut var: Vec<f64> = specs.iter().map(|s| s.daily_volatility.powi(2)).collect();
        let mut logp: Vec<f64> = specs.iter().map(|s| (s.start_ticks as f64).ln()).collect();
        let mut prev_c: Vec<i64> = specs.iter().map(|s| s.start_ticks).collect();
        let (lc, li) = (correlation.sqrt(), (1.0 - correlation).sqrt());
        for d in 0..DAYS {
            let t = EPOCH_MS + d as i64 * Timeframe::D1.millis();
            let mut common = SimRng::keyed(&[seed, COMMON_KEY, tf_code(Timeframe::D1), t as u64]);
            let zc = common.student_t_unit(DF);
            // Wicks share one draw across symbols so their ranges (the scale of everything
            // generated inside the day) move together.
            let (wick_up, wick_down) = (common.exp1(), common.exp1());
            for (k, spec) in specs.iter().enumerate() {
                let mut rng = SimRng::keyed(&[seed, spec.key, tf_code(Timeframe::D1), t as u64]);
                let e = lc * zc + li * rng.student_t_unit(DF);
                let sd = var[k].sqrt();
                let anchor = (spec.start_ticks as f64).ln();
                let r = sd * e - 0.03 * (logp[k] - anchor);
                let omega = spec.daily_volatility.powi(2) * (1.0 - alpha - beta);
                var[k] = omega + alpha * (sd * e).powi(2) + beta * var[k];
                logp[k] += r;
                let o = prev_c[k];
                let c = (logp[k].exp().round() as i64).max(100);
                let wick = |x: f64| (x * 0.3 * sd * c as f64).round() as i64;
                let h = o.max(c) + wick(wick_up);
                let l = (o.min(c) - wick(wick_down)).max(50);
                let size = (0.6 + 0.5 * e.abs()) * (0.25 * rng.normal()).exp();
                let n_min = MIN_TRADES_PER_SECOND * 86_400;
                let trades = ((spec.daily_trades as f64 * size) as i64).max(n_min);
                let v = ((spec.daily_volume_steps * size) as i64).max(trades * 2);
                let buy_frac = (0.5 + 0.1 * e.tanh()).clamp(0.05, 0.95);
                let bv = (v as f64 * buy_frac) as i64;
                days[k].push(SimCandle {
                    open_time_ms: t,
                    o,
                    h,
                    l,
                    c,
                    v,
                    bv,
                    n: trades,
                });
                trades_before_day[k][d + 1] = trades_before_day[k][d] + trades;
                prev_c[k] = c;
            }
        }
        Self {
            seed,
            correlation,
            specs,
            days,
            trades_before_day,
        }
    }

    /// The instruments, in index order.
    pub fn specs(&self) -> &[SymbolSpec] {
        &self.specs
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// First millisecond with history.
    pub fn start_ms(&self) -> i64 {
        EPOCH_MS
    }

    /// First millisecond after the simulated range.
    pub fn end_ms(&self) -> i64 {
        EPOCH_MS + DAYS as i64 * Timeframe::D1.millis()
    }

    fn check(&self, sym: usize, t: i64) -> Result<(), HistoryError> {
        if sym >= self.specs.len() {
            return Err(HistoryError::UnknownSymbol(sym));
        }
        if t < self.start_ms() || t >= self.end_ms() {
            return Err(HistoryError::OutOfRange(t));
        }
        Ok(())
    }

    /// The children (one timeframe finer) of a parent candle.
    pub fn children(&self, sym: usize, parent_tf: Timeframe, parent: &SimCandle) -> Vec<SimCandle> {
        let Some(ctf) = child_tf(parent_tf) else {
            return vec![*parent];
        };
        let spec = &self.specs[sym];
        let k = (parent_tf.millis() / ctf.millis()) as usize;
        let pt = parent.open_time_ms as u64;
        let mut rc = SimRng::keyed(&[self.seed, COMMON_KEY, tf_code(ctf), pt]);
        let mut ri = SimRng::keyed(&[self.seed, spec.key, tf_code(ctf), pt]);
        let (lc, li) = (self.correlation.sqrt(), (1.0 - self.correlation).sqrt());
        // Local GARCH multiplier (unit mean) gives clustering inside the parent; the parent's own
        // range sets the scale, which carries clustering across parents.
        let mut g = 1.0f64;
        let mut s_cum = vec![0.0f64; k + 1];
        let mut gs = vec![0.0f64; k];
        for j in 0..k {
            let zc = rc.student_t_unit(DF);
            let e = lc * zc + li * ri.student_t_unit(DF);
            gs[j] = g;
            s_cum[j + 1] = s_cum[j] + g.sqrt() * e;
            // The variance regime follows the common shock, so all symbols share it.
            g = 0.1 + 0.12 * g * zc * zc + 0.78 * g;
        }
        let (o, c) = (parent.o as f64, parent.c as f64);
        let total = s_cum[k];
        let base = |j: usize| o + (j as f64 / k as f64) * (c - o);
        let dev = |j: usize| s_cum[j] - (j as f64 / k as f64) * total;
        // Scale the bridge to the parent's range; excursions beyond the parent's high or low are
        // folded back inside (reflection keeps step sizes, so no flat clamped stretches appear).
        // The bridge keeps the shape the correlated shocks gave it.
        let (mut lo_d, mut hi_d) = (0.0f64, 0.0f64);
        for j in 1..k {
            lo_d = lo_d.min(dev(j));
            hi_d = hi_d.max(dev(j));
        }
        let span = hi_d - lo_d;
        let mut fit = f64::INFINITY;
        for j in 1..k {
            let (b, d) = (base(j), dev(j));
            if d > 0.0 {
                fit = fit.min((parent.h as f64 - b) / d);
            } else if d < 0.0 {
                fit = fit.min((b - parent.l as f64) / -d);
            }
        }
        // Prefer the largest scale that fits without folding; never shrink below half the
        // range-matching scale (a tight wick on one side would otherwise flatten the whole path).
        let scale = if span > 0.0 {
            fit.max(0.5 * (parent.h - parent.l) as f64 / span)
        } else {
            0.0
        };
        let (lo, hi) = (parent.l as f64, parent.h as f64);
        let fold = |mut x: f64| {
            if hi <= lo {
                return lo;
            }
            for _ in 0..8 {
                if x > hi {
                    x = 2.0 * hi - x;
                } else if x < lo {
                    x = 2.0 * lo - x;
                } else {
                    break;
                }
            }
            x.clamp(lo, hi)
        };
        let path: Vec<i64> = (0..=k)
            .map(|j| {
                if j == 0 {
                    return parent.o;
                }
                if j == k {
                    return parent.c;
                }
                (fold(base(j) + scale * dev(j)).round() as i64).clamp(parent.l, parent.h)
            })
            .collect();
        let mut kids: Vec<SimCandle> = (0..k)
            .map(|j| {
                let (co, cc) = (path[j], path[j + 1]);
                let wick = scale * 0.5 * gs[j].sqrt();
                let up = (rc.exp1() * wick).round() as i64;
                let down = (rc.exp1() * wick).round() as i64;
                SimCandle {
                    open_time_ms: parent.open_time_ms + j as i64 * ctf.millis(),
                    o: co,
                    c: cc,
                    h: (co.max(cc) + up).min(parent.h),
                    l: (co.min(cc) - down).max(parent.l),
                    v: 0,
                    bv: 0,
                    n: 0,
                }
            })
            .collect();
        if kids.iter().all(|x| x.h < parent.h) {
            let j = (0..k)
                .max_by_key(|&j| (kids[j].o.max(kids[j].c), usize::MAX - j))
                .unwrap_or(0);
            kids[j].h = parent.h;
        }
        if kids.iter().all(|x| x.l > parent.l) {
            let j = (0..k)
                .min_by_key(|&j| (kids[j].o.min(kids[j].c), j))
                .unwrap_or(0);
            kids[j].l = parent.l;
        }
        let secs = ctf.millis() / 1000;
        let weights: Vec<f64> = kids
            .iter()
            .zip(&gs)
            .map(|(x, g)| {
                (0.3 + (x.h - x.l) as f64 / scale.max(1.0)) * g.sqrt() * (0.3 * ri.normal()).exp()
            })
            .collect();
        let n_mins = vec![MIN_TRADES_PER_SECOND * secs; k];
        let ns = split_exact(parent.n, &weights, &n_mins, &mut ri);
        let vs = split_exact(parent.v, &weights, &ns, &mut ri);
        // Taker-buy volume leans with each child's direction, then is corrected to the exact total.
        let frac = parent.bv as f64 / parent.v.max(1) as f64;
        let mut bvs: Vec<i64> = kids
            .iter()
            .zip(&vs)
            .map(|(x, &v)| {
                let f = (frac + 0.08 * (x.c - x.o).signum() as f64).clamp(0.0, 1.0);
                ((v as f64 * f).round() as i64).clamp(0, v)
            })
            .collect();
        let mut delta = parent.bv - bvs.iter().sum::<i64>();
        for j in 0..k {
            if delta > 0 {
                let room = (vs[j] - bvs[j]).min(delta);
                bvs[j] += room;
                delta -= room;
            } else if delta < 0 {
                let take = bvs[j].min(-delta);
                bvs[j] -= take;
                delta += take;
            }
        }
        for j in 0..k {
            kids[j].n = ns[j];
            kids[j].v = vs[j];
            kids[j].bv = bvs[j];
        }
        kids
    }

    /// The complete candle of `tf` opening at `open_time_ms` (aligned).
    pub fn candle(
        &self,
        sym: usize,
        tf: Timeframe,
        open_time_ms: i64,
    ) -> Result<SimCandle, HistoryError> {
        self.check(sym, open_time_ms)?;
        let t = tf.floor(open_time_ms);
        let mut cur = self.days[sym][((t - EPOCH_MS) / Timeframe::D1.millis()) as usize];
        let mut cur_tf = Timeframe::D1;
        while cur_tf != tf {
            let ctf = child_tf(cur_tf).unwrap_or(tf);
            let kids = self.children(sym, cur_tf, &cur);
            let idx = ((ctf.floor(t) - cur.open_time_ms) / ctf.millis()) as usize;
            cur = kids[idx];
            cur_tf = ctf;
        }
        Ok(cur)
    }

    /// Complete candles of `tf` with open times in `[from_ms, to_ms)` (aligned), oldest first.
    pub fn range(
        &self,
        sym: usize,
        tf: Timeframe,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<SimCandle>, HistoryError> {
        let from = tf.floor(from_ms + tf.millis() - 1).max(self.start_ms());
        let to = to_ms.min(self.end_ms());
        if sym >= self.specs.len() {
            return Err(HistoryError::UnknownSymbol(sym));
        }
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let Some(ptf) = parent_tf(tf) else {
            let d0 = ((from - EPOCH_MS) / tf.millis()) as usize;
            let d1 = ((to - EPOCH_MS + tf.millis() - 1) / tf.millis()) as usize;
            return Ok(self.days[sym][d0..d1.min(DAYS)].to_vec());
        };
        let mut cache: HashMap<i64, Vec<SimCandle>> = HashMap::new();
        let mut t = from;
        while t < to {
            let p = ptf.floor(t);
            let kids = match cache.get(&p) {
                Some(k) => k.clone(),
                None => {
                    let parent = self.candle(sym, ptf, p)?;
                    let k = self.children(sym, ptf, &parent);
                    cache.insert(p, k.clone());
                    k
                }
            };
            for kid in kids {
                if kid.open_time_ms >= t && kid.open_time_ms < to {
                    out.push(kid);
                }
            }
            t = p + ptf.millis();
        }
        Ok(out)
    }

    /// The candle of `tf` opening at `open_time_ms` as seen at `now_ms`: only seconds that have
    /// fully elapsed count (an interval with none yet is flat at the previous close).
    pub fn partial(
        &self,
        sym: usize,
        tf: Timeframe,
        open_time_ms: i64,
        now_ms: i64,
    ) -> Result<SimCandle, HistoryError> {
        let open = tf.floor(open_time_ms);
        let end = Timeframe::S1.floor(now_ms);
        if end >= open + tf.millis() {
            return self.candle(sym, tf, open);
        }
        if end <= open {
            let prev = self.candle(sym, Timeframe::S1, open - 1000)?;
            return Ok(SimCandle::empty(open, prev.c));
        }
        let mut parts = Vec::new();
        let mut cur_open = open;
        let mut cur_tf = tf;
        while let Some(ctf) = child_tf(cur_tf) {
            let whole_end = ctf.floor(end);
            parts.extend(self.range(sym, ctf, cur_open, whole_end)?);
            if whole_end == end {
                break;
            }
            cur_open = whole_end;
            cur_tf = ctf;
        }
        Ok(SimCandle::aggregate(open, &parts).unwrap_or(SimCandle::empty(open, 0)))
    }

    /// Aggregate trades before `time_ms` (the id of the first trade at or after it).
    pub fn trades_before(&self, sym: usize, time_ms: i64) -> Result<u64, HistoryError> {
        self.check(sym, time_ms)?;
        let s = Timeframe::S1.floor(time_ms);
        let d = ((s - EPOCH_MS) / Timeframe::D1.millis()) as usize;
        let mut total = self.trades_before_day[sym][d];
        let mut cur_tf = Timeframe::D1;
        let mut cur = self.days[sym][d];
        while let Some(ctf) = child_tf(cur_tf) {
            let kids = self.children(sym, cur_tf, &cur);
            let idx = ((ctf.floor(s) - cur.open_time_ms) / ctf.millis()) as usize;
            total += kids[..idx].iter().map(|k| k.n).sum::<i64>();
            cur = kids[idx];
            cur_tf = ctf;
        }
        Ok(total as u64)
    }

    /// The trades of one second, exactly reproducing its 1s candle (OHLC, volume, taker-buy
    /// volume, count), with ids continuing the global sequence.
    pub fn leaf_trades(
        &self,
        sym: usize,
        second_ms: i64,
    ) -> Result<(SimCandle, Vec<LeafTrade>), HistoryError> {
        let leaf = self.candle(sym, Timeframe::S1, second_ms)?;
        let first_id = self.trades_before(sym, second_ms)?;
        let spec = &self.specs[sym];
        let mut rng = SimRng::keyed(&[self.seed, spec.key, TRADES_KEY, leaf.open_time_ms as u64]);
        let n = leaf.n as usize;
        let mut prices = vec![0i64; n];
        let mut fixed = vec![false; n];
        prices[0] = leaf.o;
        prices[n - 1] = leaf.c;
        fixed[0] = true;
        fixed[n - 1] = true;
        let ih = 1 + rng.below(n as u64 - 2) as usize;
        let mut il = 1 + rng.below(n as u64 - 3) as usize;
        if il >= ih {
            il += 1;
        }
        prices[ih] = leaf.h;
        prices[il] = leaf.l;
        fixed[ih] = true;
        fixed[il] = true;
        let step = ((leaf.h - leaf.l) as f64 / 4.0).max(0.6);
        for i in 1..n {
            if !fixed[i] {
                let p = prices[i - 1] as f64 + rng.normal() * step;
                prices[i] = (p.round() as i64).clamp(leaf.l, leaf.h);
            }
        }
        // Taker side follows the price move; the count is bounded so both volumes fit in whole steps.
        let sv = leaf.v - leaf.bv;
        let n_buy = if leaf.bv == 0 {
            0
        } else if sv == 0 {
            n as i64
        } else {
            let want = ((n as f64) * leaf.bv as f64 / leaf.v as f64).round() as i64;
            let lo = 1.max(n as i64 - sv);
            let hi = (n as i64 - 1).min(leaf.bv);
            want.clamp(lo, hi)
        } as usize;
        let mut order: Vec<(i64, u64, usize)> = (0..n)
            .map(|i| {
                let mv = if i == 0 { 0 } else { prices[i] - prices[i - 1] };
                (mv, rng.next_u64(), i)
            })
            .collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        let mut buy = vec![false; n];
        for &(_, _, i) in order.iter().take(n_buy) {
            buy[i] = true;
        }
        let sizes: Vec<f64> = (0..n).map(|_| rng.exp1().powi(2) + 0.05).collect();
        let buy_idx: Vec<usize> = (0..n).filter(|&i| buy[i]).collect();
        let sell_idx: Vec<usize> = (0..n).filter(|&i| !buy[i]).collect();
        let mut qty = vec![0i64; n];
        for (idx, total) in [(&buy_idx, leaf.bv), (&sell_idx, sv)] {
            if idx.is_empty() {
                continue;
            }
            let w: Vec<f64> = idx.iter().map(|&i| sizes[i]).collect();
            let parts = split_exact(total, &w, &vec![1; idx.len()], &mut rng);
            for (&i, q) in idx.iter().zip(parts) {
                qty[i] = q;
            }
        }
        let mut offs: Vec<i64> = (0..n).map(|_| rng.below(1000) as i64).collect();
        offs.sort_unstable();
        let trades = (0..n)
            .map(|i| LeafTrade {
                id: first_id + i as u64,
                time_ms: leaf.open_time_ms + offs[i],
                price: prices[i],
                qty: qty[i],
                taker_buy: buy[i],
            })
            .collect();
        Ok((leaf, trades))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::SimConfig;

    fn hist(seed: u64) -> History {
        let cfg = SimConfig::default();
        History::new(seed, cfg.correlation, cfg.specs().unwrap())
    }

    const T: i64 = 1_764_000_000_000; // 2025-11-24

    #[test]
    fn children_aggregate_exactly_at_every_level() {
        let h = hist(1);
        for sym in 0..2 {
            let day = h.candle(sym, Timeframe::D1, T).unwrap();
            let hours = h.children(sym, Timeframe::D1, &day);
            assert_eq!(SimCandle::aggregate(day.open_time_ms, &hours), Some(day));
            for hour in hours.iter().step_by(7) {
                let mins = h.children(sym, Timeframe::H1, hour);
                assert_eq!(
                    SimCandle::aggregate(hour.open_time_ms, &mins).as_ref(),
                    Some(hour)
                );
                for m in mins.iter().step_by(13) {
                    let secs = h.children(sym, Timeframe::M1, m);
                    assert_eq!(
                        SimCandle::aggregate(m.open_time_ms, &secs).as_ref(),
                        Some(m)
                    );
                    assert!(
                        secs.iter()
                            .all(|s| s.n >= MIN_TRADES_PER_SECOND && s.v >= s.n)
                    );
                    assert!(
                        secs.iter()
                            .all(|s| s.l <= s.o.min(s.c) && s.h >= s.o.max(s.c))
                    );
                    assert!(secs.iter().all(|s| (0..=s.v).contains(&s.bv)));
                }
            }
        }
    }

    #[test]
    fn leaf_trades_reproduce_the_second() {
        let h = hist(3);
        for s in 0..50 {
            let t = T + 3_600_000 + s * 1000;
            for sym in 0..2 {
                let (leaf, trades) = h.leaf_trades(sym, t).unwrap();
                let first = trades.first().unwrap();
                assert_eq!(first.price, leaf.o);
                assert_eq!(trades.last().unwrap().price, leaf.c);
                assert_eq!(trades.iter().map(|x| x.price).max(), Some(leaf.h));
                assert_eq!(trades.iter().map(|x| x.price).min(), Some(leaf.l));
                assert_eq!(trades.iter().map(|x| x.qty).sum::<i64>(), leaf.v);
                let bv: i64 = trades.iter().filter(|x| x.taker_buy).map(|x| x.qty).sum();
                assert_eq!(bv, leaf.bv);
                assert!(trades.iter().all(|x| x.qty > 0));
                assert!(
                    trades
                        .windows(2)
                        .all(|w| w[1].id == w[0].id + 1 && w[1].time_ms >= w[0].time_ms)
                );
                let (_, next) = h.leaf_trades(sym, t + 1000).unwrap();
                assert_eq!(next[0].id, trades.last().unwrap().id + 1);
                assert_eq!(next[0].price, leaf.c, "next second opens at this close");
            }
        }
    }

    #[test]
    fn history_is_deterministic_per_seed() {
        let a = hist(5).range(0, Timeframe::M1, T, T + 3_600_000).unwrap();
        let b = hist(5).range(0, Timeframe::M1, T, T + 3_600_000).unwrap();
        let c = hist(6).range(0, Timeframe::M1, T, T + 3_600_000).unwrap();
        assert_eq!(a.len(), 60);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn daily_path_stays_near_start_and_has_300_days() {
        let h = hist(7);
        let days = h.range(0, Timeframe::D1, T - 400 * 86_400_000, T).unwrap();
        assert_eq!(days.len(), 400);
        for d in &days {
            let p = d.c as f64 / 300_000.0;
            assert!((0.2..5.0).contains(&p), "ETH day close ratio {p}");
        }
        assert!(days.windows(2).all(|w| w[1].o == w[0].c));
    }

    #[test]
    fn partial_candle_counts_only_elapsed_seconds() {
        let h = hist(8);
        let open = Timeframe::D1.floor(T);
        let now = open + 5 * 3_600_000 + 7 * 60_000 + 9_500;
        let p = h.partial(0, Timeframe::D1, open, now).unwrap();
        let secs = h
            .range(
                0,
                Timeframe::S1,
                open + 5 * 3_600_000 + 7 * 60_000,
                Timeframe::S1.floor(now),
            )
            .unwrap();
        assert_eq!(secs.len(), 9);
        let hours = h
            .range(0, Timeframe::H1, open, open + 5 * 3_600_000)
            .unwrap();
        let mins = h
            .range(
                0,
                Timeframe::M1,
                open + 5 * 3_600_000,
                open + 5 * 3_600_000 + 7 * 60_000,
            )
            .unwrap();
        let all: Vec<SimCandle> = hours.into_iter().chain(mins).chain(secs).collect();
        assert_eq!(Some(p), SimCandle::aggregate(open, &all));
        assert_eq!(
            h.partial(0, Timeframe::D1, open, open + 86_400_000)
                .unwrap(),
            h.candle(0, Timeframe::D1, open).unwrap()
        );
        let empty = h
            .partial(0, Timeframe::M1, open + 60_000, open + 60_500)
            .unwrap();
        assert_eq!(empty.n, 0);
        assert_eq!(empty.o, h.candle(0, Timeframe::M1, open).unwrap().c);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let h = hist(1);
        assert_eq!(
            h.candle(0, Timeframe::D1, 0),
            Err(HistoryError::OutOfRange(0))
        );
        assert_eq!(
            h.candle(9, Timeframe::D1, T),
            Err(HistoryError::UnknownSymbol(9))
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]

            #[test]
            fn any_minute_aggregates_its_seconds_and_leaf_trades(
                seed in any::<u64>(),
                minute in 0i64..(DAYS as i64 - 1) * 1440,
                sec in 0i64..60,
            ) {
                let h = hist(seed);
                let open = EPOCH_MS + minute * 60_000;
                let m = h.candle(1, Timeframe::M1, open).unwrap();
                let secs = h.children(1, Timeframe::M1, &m);
                prop_assert_eq!(SimCandle::aggregate(open, &secs), Some(m));
                let (leaf, trades) = h.leaf_trades(1, open + sec * 1000).unwrap();
                prop_assert_eq!(leaf, secs[sec as usize]);
                prop_assert_eq!(trades.iter().map(|t| t.qty).sum::<i64>(), leaf.v);
                prop_assert_eq!(trades.len() as i64, leaf.n);
                prop_assert_eq!(trades[0].id, h.trades_before(1, leaf.open_time_ms).unwrap());
            }

            #[test]
            fn split_exact_hits_the_total_and_minimums(
                total in 0i64..1_000_000,
                weights in proptest::collection::vec(0.0f64..10.0, 1..40),
                seed in any::<u64>(),
            ) {
                let mins: Vec<i64> = weights.iter().enumerate().map(|(i, _)| (i % 3) as i64).collect();
                let need: i64 = mins.iter().sum();
                let total = total + need;
                let parts = split_exact(total, &weights, &mins, &mut SimRng::keyed(&[seed]));
                prop_assert_eq!(parts.iter().sum::<i64>(), total);
                prop_assert!(parts.iter().zip(&mins).all(|(p, m)| p >= m));
            }
        }
    }
}
