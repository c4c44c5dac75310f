//! Streaming technical indicators: constant time per bar, `None` until warmed up.
//!
//! Every indicator is a small state machine fed one value (or one candle) at a time, so the
//! same code serves live feeds and offline files. Exact prices are converted to `f64` here
//! because indicators are features, never money. Rolling sums are recomputed from their window
//! once per window length, which keeps float drift bounded over millions of bars at amortized
//! constant cost.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::market::types::Candle;

/// How an exponential or Wilder average gets its first value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// Seeded with the simple mean of the first `n` inputs; the first value appears at input `n`
    /// (TA-Lib, StockCharts text, Lean, Tulip RSI/ATR).
    #[default]
    Sma,
    /// Seeded with the first input itself (pandas `ewm(adjust=False)`, the `ta` library, Tulip
    /// EMA/MACD); values are still reported only after `n` inputs unless stated otherwise.
    First,
}

/// Fixed-size window of floats with running mean and, when `VAR`, the sum of squared
/// deviations.
///
/// Uses the add/replace form of Welford's update (stable for prices far from zero) and
/// recomputes the moments from the window each time the ring wraps.
#[derive(Debug, Clone)]
struct Window<const VAR: bool> {
    buf: Vec<f64>,
    cap: usize,
    inv_cap: f64,
    /// `1 / (cap - 1)` for the sample deviation of a full window (0 when `cap` is 1).
    inv_cap_less_one: f64,
    head: usize,
    mean: f64,
    m2: f64,
}

impl<const VAR: bool> Window<VAR> {
    fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            buf: Vec::with_capacity(cap),
            cap,
            inv_cap: 1.0 / cap as f64,
            inv_cap_less_one: if cap > 1 { 1.0 / (cap - 1) as f64 } else { 0.0 },
            head: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    fn full(&self) -> bool {
        self.buf.len() == self.cap
    }

    /// Adds `x`, dropping the oldest value when full; returns the dropped value.
    #[inline]
    fn push(&mut self, x: f64) -> Option<f64> {
        if self.buf.len() < self.cap {
            self.buf.push(x);
            let n = self.buf.len() as f64;
            let d = x - self.mean;
            self.mean += d / n;
            if VAR {
                self.m2 += d * (x - self.mean);
            }
            return None;
        }
        let old = std::mem::replace(&mut self.buf[self.head], x);
        self.head += 1;
        if self.head == self.cap {
            self.head = 0;
            self.recompute();
        } else {
            let new_mean = self.mean + (x - old) * self.inv_cap;
            if VAR {
                self.m2 += (x - old) * (x - new_mean + old - self.mean);
                if self.m2 < 0.0 {
                    self.m2 = 0.0;
                }
            }
            self.mean = new_mean;
        }
        Some(old)
    }

    /// Called only when the window is full, so `inv_cap` is `1 / len`. Out of line: it runs
    /// once per `cap` pushes and would only bloat the inlined hot path.
    #[inline(never)]
    fn recompute(&mut self) {
        let mean = self.buf.iter().sum::<f64>() * self.inv_cap;
        self.mean = mean;
        if VAR {
            self.m2 = self.buf.iter().map(|v| (v - mean) * (v - mean)).sum();
        }
    }

    /// Population deviation of a full window (multiplies by the cached `1 / n`).
    #[inline]
    fn population_stdev(&self) -> f64 {
        (self.m2 * self.inv_cap).sqrt()
    }

    /// Sample deviation of a full window (multiplies by the cached `1 / (n - 1)`).
    #[inline]
    fn sample_stdev(&self) -> f64 {
        (self.m2 * self.inv_cap_less_one).sqrt()
    }

    /// The value that entered `back` inputs ago (0 = newest); the window must hold it.
    fn back(&self, back: usize) -> f64 {
        let len = self.buf.len();
        if len < self.cap {
            return self.buf[len - 1 - back];
        }
        let i = self.head + self.cap - 1 - back;
        self.buf[if i >= self.cap { i - self.cap } else { i }]
    }
}

/// Simple moving average over the last `period` inputs.
#[derive(Debug, Clone)]
pub struct Sma {
    window: Window<false>,
}

impl Sma {
    /// An SMA over `period` inputs (at least 1).
    pub fn new(period: usize) -> Self {
        Self {
            window: Window::new(period),
        }
    }

    /// Feeds one input and returns the current value.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.window.push(x);
        self.value()
    }

    /// Mean of the last `period` inputs, once that many were seen.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.window.full().then_some(self.window.mean)
    }
}

/// Exponential moving average with `alpha = 2 / (period + 1)`.
///
/// Convention: [`Seed::Sma`] (default) seeds with the mean of the first `period` inputs and
/// reports from input `period` on (TA-Lib, Lean, StockCharts); [`Seed::First`] seeds with the
/// first input and reports from the first input on (Tulip `ema`, pandas `adjust=False`).
#[derive(Debug, Clone)]
pub struct Ema {
    period: usize,
    alpha: f64,
    seed: Seed,
    count: usize,
    sum: f64,
    value: f64,
}

impl Ema {
    /// An EMA seeded with the SMA of the first `period` inputs.
    pub fn new(period: usize) -> Self {
        Self::with_seed(period, Seed::Sma)
    }

    /// An EMA with an explicit seeding convention.
    pub fn with_seed(period: usize, seed: Seed) -> Self {
        let period = period.max(1);
        Self {
            period,
            alpha: 2.0 / (period as f64 + 1.0),
            seed,
            count: 0,
            sum: 0.0,
            value: 0.0,
        }
    }

    /// Feeds one input and returns the current value.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count > self.period {
            // Warmed up: the only path that matters for speed.
            self.value += self.alpha * (x - self.value);
            return Some(self.value);
        }
        self.count += 1;
        match self.seed {
            Seed::Sma if self.count < self.period => self.sum += x,
            Seed::Sma if self.count == self.period => {
                self.value = (self.sum + x) / self.period as f64;
            }
            Seed::First if self.count == 1 => self.value = x,
            _ => self.value += self.alpha * (x - self.value),
        }
        self.value()
    }

    /// Current average once seeded.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        let ready = match self.seed {
            Seed::Sma => self.count >= self.period,
            Seed::First => self.count >= 1,
        };
        ready.then_some(self.value)
    }
}

/// Wilder's smoothing (`avg = avg + (x - avg) / n`), the running average inside RSI and ATR.
#[derive(Debug, Clone)]
struct Wilder {
    period: usize,
    inv_period: f64,
    seed: Seed,
    count: usize,
    value: f64,
}

impl Wilder {
    fn new(period: usize, seed: Seed) -> Self {
        Self {
            period: period.max(1),
            inv_period: 1.0 / period.max(1) as f64,
            seed,
            count: 0,
            value: 0.0,
        }
    }

    #[inline]
    fn update(&mut self, x: f64) {
        self.count += 1;
        match self.seed {
            // Running mean until `period` inputs; identical to mean of the first `period`.
            Seed::Sma if self.count <= self.period => {
                self.value += (x - self.value) / self.count as f64;
            }
            Seed::First if self.count == 1 => self.value = x,
            _ => self.value += (x - self.value) * self.inv_period,
        }
    }

    #[inline]
    fn ready(&self) -> bool {
        self.count >= self.period
    }
}

/// Relative strength index with Wilder smoothing of gains and losses.
///
/// Convention: [`Seed::Sma`] (default, Wilder/Tulip/TA-Lib/Lean "RSI Wilder") averages the first
/// `period` changes and reports from bar `period` (0-based). [`Seed::First`] follows the `ta`
/// library: bar 0 counts as a zero change that seeds both averages, Wilder updates follow, and
/// values are reported from bar `period`. A flat window (no gains, no losses) reads 50.
#[derive(Debug, Clone)]
pub struct Rsi {
    gain: Wilder,
    loss: Wilder,
    prev: Option<f64>,
}

impl Rsi {
    /// Wilder RSI over `period` changes, SMA-seeded.
    pub fn new(period: usize) -> Self {
        Self::with_seed(period, Seed::Sma)
    }

    /// RSI with an explicit seeding convention.
    pub fn with_seed(period: usize, seed: Seed) -> Self {
        Self {
            gain: Wilder::new(period, seed),
            loss: Wilder::new(period, seed),
            prev: None,
        }
    }

    /// Feeds one close and returns the current value.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        match self.prev {
            Some(prev) => {
                let change = close - prev;
                self.gain.update(change.max(0.0));
                self.loss.update((-change).max(0.0));
            }
            None if self.gain.seed == Seed::First => {
                self.gain.update(0.0);
                self.loss.update(0.0);
            }
            None => {}
        }
        self.prev = Some(close);
        self.value()
    }

    /// RSI in [0, 100] once warmed up.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        let ready = match self.gain.seed {
            Seed::Sma => self.gain.ready(),
            Seed::First => self.gain.count > self.gain.period,
        };
        if !ready {
            return None;
        }
        let total = self.gain.value + self.loss.value;
        Some(if total > 0.0 {
            100.0 * self.gain.value / total
        } else {
            50.0
        })
    }
}

/// One MACD reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MacdValue {
    /// Fast EMA minus slow EMA.
    pub macd: f64,
    /// EMA of the MACD line.
    pub signal: f64,
    /// MACD minus signal.
    pub histogram: f64,
}

/// Moving average convergence/divergence (default 12/26/9).
///
/// Convention: with [`Seed::Sma`] (default, TA-Lib/Lean/StockCharts) both EMAs are SMA-seeded,
/// the line starts when the slow EMA is ready and the signal EMA is SMA-seeded over the first
/// `signal` line values. With [`Seed::First`] (pandas `adjust=False`, the `ta` library) the EMAs
/// start from the first close, the signal EMA starts from the line at bar 0 (which is 0), and
/// readings are reported from bar `slow - 1`. Not covered: Tulip's MACD, which seeds the signal
/// at bar `slow - 1` and, for 12/26, uses the book's rounded factors 0.15/0.075.
#[derive(Debug, Clone)]
pub struct Macd {
    fast: Ema,
    slow: Ema,
    signal: Ema,
    slow_period: usize,
    count: usize,
    value: Option<MacdValue>,
}

impl Macd {
    /// MACD with SMA-seeded EMAs.
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        Self::with_seed(fast, slow, signal, Seed::Sma)
    }

    /// MACD with an explicit seeding convention.
    pub fn with_seed(fast: usize, slow: usize, signal: usize, seed: Seed) -> Self {
        Self {
            fast: Ema::with_seed(fast, seed),
            slow: Ema::with_seed(slow, seed),
            signal: Ema::with_seed(signal, seed),
            slow_period: slow.max(1),
            count: 0,
            value: None,
        }
    }

    /// Feeds one close and returns the current reading.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<MacdValue> {
        self.count += 1;
        let fast = self.fast.update(close);
        let slow = self.slow.update(close);
        self.value = None;
        if let (Some(f), Some(s)) = (fast, slow) {
            let line = f - s;
            // First-seeded EMAs exist from bar 0, and pandas feeds that whole line (starting
            // at 0) into the signal; SMA-seeded ones only exist from bar `slow - 1` anyway.
            let sig = self.signal.update(line);
            if let Some(sig) = sig
                && self.count >= self.slow_period
            {
                self.value = Some(MacdValue {
                    macd: line,
                    signal: sig,
                    histogram: line - sig,
                });
            }
        }
        self.value
    }

    /// MACD line alone, available before the signal is warmed up.
    pub fn line(&self) -> Option<f64> {
        match (self.fast.value(), self.slow.value()) {
            (Some(f), Some(s)) if self.count >= self.slow_period => Some(f - s),
            _ => None,
        }
    }

    /// Full reading once the signal line is warmed up.
    #[inline]
    pub fn value(&self) -> Option<MacdValue> {
        self.value
    }
}

/// One Bollinger reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BollingerValue {
    /// SMA of the window.
    pub middle: f64,
    /// Middle plus `k` standard deviations.
    pub upper: f64,
    /// Middle minus `k` standard deviations.
    pub lower: f64,
    /// `(upper - lower) / middle × 100` (StockCharts/Lean "BandWidth").
    pub bandwidth: f64,
    /// `(close - lower) / (upper - lower)`; 0.5 when the bands collapse.
    pub percent_b: f64,
}

/// Bollinger bands (default 20, 2).
///
/// Convention: **population** standard deviation (divide by n), as Bollinger, StockCharts,
/// TA-Lib, Tulip and Lean do.
#[derive(Debug, Clone)]
pub struct Bollinger {
    window: Window<true>,
    k: f64,
}

impl Bollinger {
    /// Bands over `period` closes at `k` standard deviations.
    pub fn new(period: usize, k: f64) -> Self {
        Self {
            window: Window::new(period),
            k,
        }
    }

    /// Feeds one close and returns the current reading.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<BollingerValue> {
        self.window.push(close);
        self.value()
    }

    /// Current bands once `period` closes were seen.
    #[inline]
    pub fn value(&self) -> Option<BollingerValue> {
        if !self.window.full() {
            return None;
        }
        let middle = self.window.mean;
        let dev = self.k * self.window.population_stdev();
        let (upper, lower) = (middle + dev, middle - dev);
        let close = self.window.back(0);
        Some(BollingerValue {
            middle,
            upper,
            lower,
            bandwidth: if middle != 0.0 {
                (upper - lower) / middle * 100.0
            } else {
                0.0
            },
            percent_b: if upper > lower {
                (close - lower) / (upper - lower)
            } else {
                0.5
            },
        })
    }
}

/// True range of a bar given the previous close (the bar's range when there is none).
pub fn true_range(high: f64, low: f64, prev_close: Option<f64>) -> f64 {
    match prev_close {
        Some(pc) => (high - low).max((high - pc).abs()).max((low - pc).abs()),
        None => high - low,
    }
}

/// Average true range with Wilder smoothing.
///
/// Convention: the first bar's true range is `high - low`. [`Seed::Sma`] (default, Wilder,
/// StockCharts, Tulip, Lean "ATR Wilder") seeds with the mean of the first `period` true ranges
/// and reports from bar `period - 1`; [`Seed::First`] seeds with the first true range.
#[derive(Debug, Clone)]
pub struct Atr {
    avg: Wilder,
    prev_close: Option<f64>,
}

impl Atr {
    /// Wilder ATR over `period` bars, SMA-seeded.
    pub fn new(period: usize) -> Self {
        Self::with_seed(period, Seed::Sma)
    }

    /// ATR with an explicit seeding convention.
    pub fn with_seed(period: usize, seed: Seed) -> Self {
        Self {
            avg: Wilder::new(period, seed),
            prev_close: None,
        }
    }

    /// Feeds one bar and returns the current value.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<f64> {
        self.avg.update(true_range(high, low, self.prev_close));
        self.prev_close = Some(close);
        self.value()
    }

    /// Current ATR once `period` bars were seen.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.avg.ready().then_some(self.avg.value)
    }
}

/// Rolling maximum or minimum over the last `period` inputs in amortized O(1), branch-free
/// (van Herk / Gil-Werman): the window is split at a block boundary into the suffix of the
/// previous block (precomputed once per block) and the prefix of the current one.
#[derive(Debug, Clone)]
struct RollingExtreme<const MAX: bool> {
    /// The current block's inputs so far (then the completed block).
    block: Vec<f64>,
    /// `suffix[j]` = extreme of the previous block from position `j` to its end.
    suffix: Vec<f64>,
    prefix: f64,
    pos: usize,
}

impl<const MAX: bool> RollingExtreme<MAX> {
    fn new(period: usize) -> Self {
        let period = period.max(1);
        let neutral = if MAX {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        Self {
            block: vec![neutral; period],
            suffix: vec![neutral; period + 1],
            prefix: neutral,
            pos: 0,
        }
    }

    #[inline]
    fn pick(a: f64, b: f64) -> f64 {
        if MAX { a.max(b) } else { a.min(b) }
    }

    /// Adds `x` and returns the extreme of the last `period` inputs (of all, before that).
    #[inline]
    fn push(&mut self, x: f64) -> f64 {
        let w = self.block.len();
        self.block[self.pos] = x;
        self.prefix = if self.pos == 0 {
            x
        } else {
            Self::pick(self.prefix, x)
        };
        let out = Self::pick(self.suffix[self.pos + 1], self.prefix);
        self.pos += 1;
        if self.pos == w {
            self.close_block();
        }
        out
    }

    /// Precomputes the suffix extremes of the block just completed (once per `period` pushes).
    #[inline(never)]
    fn close_block(&mut self) {
        let w = self.block.len();
        // suffix[w] stays neutral, so a window that is exactly one block reads the prefix.
        for j in (0..w).rev() {
            self.suffix[j] = Self::pick(self.block[j], self.suffix[j + 1]);
        }
        self.pos = 0;
    }
}

/// One stochastic reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochValue {
    /// %K (smoothed by `k_slowing` when above 1).
    pub k: f64,
    /// %D: SMA of %K over `d_period`.
    pub d: f64,
}

/// Stochastic oscillator (default 14, 1, 3).
///
/// Convention: raw %K = 100 × (close − lowest low) / (highest high − lowest low) over `k_period`
/// bars (50 when the range is zero); %K is the SMA of raw %K over `k_slowing` (1 = fast
/// stochastic as in StockCharts/`ta`; Tulip `stoch 5 3 3` uses 3); %D is the SMA of %K over
/// `d_period`.
#[derive(Debug, Clone)]
pub struct Stochastic {
    highs: RollingExtreme<true>,
    lows: RollingExtreme<false>,
    k_period: usize,
    /// `None` for a fast stochastic (slowing 1), which needs no smoothing window.
    slow: Option<Sma>,
    d: Sma,
    index: usize,
    k: Option<f64>,
    value: Option<StochValue>,
}

impl Stochastic {
    /// Stochastic with %K period, %K slowing and %D period.
    pub fn new(k_period: usize, k_slowing: usize, d_period: usize) -> Self {
        Self {
            highs: RollingExtreme::new(k_period),
            lows: RollingExtreme::new(k_period),
            k_period: k_period.max(1),
            slow: (k_slowing > 1).then(|| Sma::new(k_slowing)),
            d: Sma::new(d_period),
            index: 0,
            k: None,
            value: None,
        }
    }

    /// Feeds one bar and returns the current reading.
    #[inline]
    pub fn update(&mut self, high: f64, low: f64, close: f64) -> Option<StochValue> {
        let hh = self.highs.push(high);
        let ll = self.lows.push(low);
        self.index += 1;
        if self.index < self.k_period {
            return None;
        }
        let raw = if hh > ll {
            100.0 * (close - ll) / (hh - ll)
        } else {
            50.0
        };
        self.k = match &mut self.slow {
            Some(slow) => slow.update(raw),
            None => Some(raw),
        };
        self.value = self
            .k
            .and_then(|k| self.d.update(k).map(|d| StochValue { k, d }));
        self.value
    }

    /// %K alone, available before %D is warmed up.
    pub fn k(&self) -> Option<f64> {
        self.k
    }

    /// Full reading once %D is warmed up.
    #[inline]
    pub fn value(&self) -> Option<StochValue> {
        self.value
    }
}

/// Where on-balance volume starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObvStart {
    /// 0 on the first bar (StockCharts, `ta`, Tulip).
    #[default]
    Zero,
    /// The first bar's volume (Lean).
    FirstVolume,
}

/// On-balance volume.
///
/// Convention: the first bar sets the start ([`ObvStart`], default 0); later bars add their
/// volume on an up close, subtract it on a down close, and leave OBV unchanged on an equal
/// close.
#[derive(Debug, Clone, Default)]
pub struct Obv {
    start: ObvStart,
    prev_close: Option<f64>,
    value: f64,
}

impl Obv {
    /// A fresh OBV starting at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh OBV with an explicit start convention.
    pub fn with_start(start: ObvStart) -> Self {
        Self {
            start,
            ..Self::default()
        }
    }

    /// Feeds one bar and returns the current value.
    #[inline]
    pub fn update(&mut self, close: f64, volume: f64) -> Option<f64> {
        match self.prev_close {
            Some(prev) => {
                // Branch-free sign: up and down closes are a coin flip on real data.
                let sign = (close > prev) as i8 - (close < prev) as i8;
                self.value += f64::from(sign) * volume;
            }
            None if self.start == ObvStart::FirstVolume => self.value = volume,
            None => {}
        }
        self.prev_close = Some(close);
        self.value()
    }

    /// Current value (available from the first bar).
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.prev_close.map(|_| self.value)
    }
}

/// What a VWAP accumulates over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VwapMode {
    /// Resets at each UTC day start (by candle open time): the intraday session VWAP.
    #[default]
    Session,
    /// Never resets (the `ta` library / StockCharts sheet).
    Cumulative,
    /// Over the last `n` bars (Lean "Moving VWAP n").
    Rolling(usize),
}

/// Which bar price a VWAP weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VwapPrice {
    /// Typical price `(high + low + close) / 3` (StockCharts, `ta`).
    #[default]
    Typical,
    /// `(open + high + low + close) / 4` (Lean).
    Ohlc4,
}

/// Volume-weighted average price (default: typical price, session reset at UTC midnight).
///
/// `None` until some volume was traded in the current accumulation span.
#[derive(Debug, Clone)]
pub struct Vwap {
    mode: VwapMode,
    price: VwapPrice,
    /// Current session as [start, end) in ms; empty before the first bar.
    session: (i64, i64),
    pv: f64,
    vol: f64,
    window: VecDeque<(f64, f64)>,
    since_recompute: usize,
}

impl Vwap {
    /// A typical-price VWAP with the given accumulation mode.
    pub fn new(mode: VwapMode) -> Self {
        Self::with_price(mode, VwapPrice::Typical)
    }

    /// A VWAP with explicit accumulation mode and bar price.
    pub fn with_price(mode: VwapMode, price: VwapPrice) -> Self {
        Self {
            mode,
            price,
            session: (0, 0),
            pv: 0.0,
            vol: 0.0,
            window: VecDeque::new(),
            since_recompute: 0,
        }
    }

    /// Feeds one bar (open time in ms since the epoch) and returns the current value.
    #[inline]
    pub fn update(
        &mut self,
        open_time_ms: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
    ) -> Option<f64> {
        let tp = match self.price {
            VwapPrice::Typical => (high + low + close) / 3.0,
            VwapPrice::Ohlc4 => (open + high + low + close) / 4.0,
        };
        match self.mode {
            VwapMode::Session => {
                if open_time_ms < self.session.0 || open_time_ms >= self.session.1 {
                    let start = open_time_ms.div_euclid(86_400_000) * 86_400_000;
                    self.session = (start, start.saturating_add(86_400_000));
                    self.pv = 0.0;
                    self.vol = 0.0;
                }
            }
            VwapMode::Cumulative => {}
            VwapMode::Rolling(n) => {
                let n = n.max(1);
                self.window.push_back((tp * volume, volume));
                self.pv += tp * volume;
                self.vol += volume;
                if self.window.len() > n
                    && let Some((pv, v)) = self.window.pop_front()
                {
                    self.pv -= pv;
                    self.vol -= v;
                    self.since_recompute += 1;
                    if self.since_recompute >= n {
                        self.since_recompute = 0;
                        self.pv = self.window.iter().map(|w| w.0).sum();
                        self.vol = self.window.iter().map(|w| w.1).sum();
                    }
                }
                return self.value();
            }
        }
        self.pv += tp * volume;
        self.vol += volume;
        self.value()
    }

    /// Current VWAP once any volume was seen (and, when rolling, the window is full).
    #[inline]
    pub fn value(&self) -> Option<f64> {
        if let VwapMode::Rolling(n) = self.mode
            && self.window.len() < n.max(1)
        {
            return None;
        }
        (self.vol > 0.0).then(|| self.pv / self.vol)
    }
}

/// Rate of change in percent: `100 × (x − x[n]) / x[n]`; `None` while `x[n]` is zero.
#[derive(Debug, Clone)]
pub struct Roc {
    buf: Vec<f64>,
    cap: usize,
    head: usize,
    value: Option<f64>,
}

impl Roc {
    /// ROC against the input `period` bars back.
    pub fn new(period: usize) -> Self {
        Self {
            buf: Vec::with_capacity(period.max(1)),
            cap: period.max(1),
            head: 0,
            value: None,
        }
    }

    /// Feeds one input and returns the current value.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let cap = self.cap;
        if self.buf.len() < cap {
            self.buf.push(x);
            self.value = None;
            return None;
        }
        // The slot being overwritten holds the input `period` bars back.
        let old = std::mem::replace(&mut self.buf[self.head], x);
        self.head += 1;
        if self.head == cap {
            self.head = 0;
        }
        self.value = (old != 0.0).then(|| 100.0 * (x - old) / old);
        self.value
    }

    /// Current value once `period + 1` inputs were seen.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.value
    }
}

/// How a bar-to-bar return is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnKind {
    /// `ln(close / prev)`.
    Log,
    /// `close / prev - 1`.
    Simple,
}

/// Which standard deviation of the returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ddof {
    /// Divides by `n - 1`.
    Sample,
    /// Divides by `n`.
    Population,
}

/// The conventions of a realized-volatility figure; references differ on all three.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VolConvention {
    /// Return measure.
    pub returns: ReturnKind,
    /// Deviation divisor.
    pub ddof: Ddof,
    /// Bars per year to annualize by `sqrt(bars)`; `None` keeps the per-bar figure.
    pub annualize: Option<f64>,
}

impl VolConvention {
    /// Log returns, sample deviation, per bar: what the models read.
    pub const MODELS: Self = Self {
        returns: ReturnKind::Log,
        ddof: Ddof::Sample,
        annualize: None,
    };
    /// Tulip Indicators' `volatility`: simple returns, population deviation, `sqrt(252)`.
    pub const TULIP: Self = Self {
        returns: ReturnKind::Simple,
        ddof: Ddof::Population,
        annualize: Some(252.0),
    };
}

impl Default for VolConvention {
    fn default() -> Self {
        Self::MODELS
    }
}

/// Realized volatility: the standard deviation of the last `period` returns under a
/// [`VolConvention`]; by default ([`VolConvention::MODELS`]) the sample deviation (n − 1) of
/// log returns, per bar.
#[derive(Debug, Clone)]
pub struct RealizedVol {
    window: Window<true>,
    prev: Option<f64>,
    convention: VolConvention,
    scale: f64,
}

impl RealizedVol {
    /// Volatility over `period` log returns (at least 2), sample deviation, per bar.
    pub fn new(period: usize) -> Self {
        Self::with_convention(period, VolConvention::MODELS)
    }

    /// Volatility over `period` returns (at least 2) under `convention`.
    pub fn with_convention(period: usize, convention: VolConvention) -> Self {
        Self {
            window: Window::new(period.max(2)),
            prev: None,
            convention,
            scale: convention.annualize.map_or(1.0, f64::sqrt),
        }
    }

    /// Feeds one close and returns the current value; non-positive closes are skipped.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<f64> {
        if close > 0.0 {
            if let Some(prev) = self.prev {
                self.window.push(match self.convention.returns {
                    ReturnKind::Log => (close / prev).ln(),
                    ReturnKind::Simple => close / prev - 1.0,
                });
            }
            self.prev = Some(close);
        }
        self.value()
    }

    /// Current value once `period` returns were seen.
    #[inline]
    pub fn value(&self) -> Option<f64> {
        self.window.full().then(|| {
            let sd = match self.convention.ddof {
                Ddof::Sample => self.window.sample_stdev(),
                Ddof::Population => self.window.population_stdev(),
            };
            sd * self.scale
        })
    }
}

/// Periods for the indicators in an [`IndicatorSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorConfig {
    /// SMA period.
    pub sma: usize,
    /// EMA period.
    pub ema: usize,
    /// RSI period.
    pub rsi: usize,
    /// MACD fast, slow, signal.
    pub macd: (usize, usize, usize),
    /// Bollinger period and width in standard deviations.
    pub bollinger: (usize, f64),
    /// ATR period.
    pub atr: usize,
    /// Stochastic %K period, %K slowing, %D period.
    pub stochastic: (usize, usize, usize),
    /// ROC period.
    pub roc: usize,
    /// Realized-volatility window (log returns).
    pub realized_vol: usize,
}

impl Default for IndicatorConfig {
    fn default() -> Self {
        Self {
            sma: 20,
            ema: 20,
            rsi: 14,
            macd: (12, 26, 9),
            bollinger: (20, 2.0),
            atr: 14,
            stochastic: (14, 1, 3),
            roc: 12,
            realized_vol: 20,
        }
    }
}

/// Names of the values an [`IndicatorSet`] produces, in [`IndicatorValues`] order.
pub const INDICATOR_NAMES: [&str; 19] = [
    "sma",
    "ema",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_middle",
    "bb_upper",
    "bb_lower",
    "bb_bandwidth",
    "bb_percent_b",
    "atr",
    "stoch_k",
    "stoch_d",
    "obv",
    "vwap",
    "roc",
    "realized_vol",
    "true_range",
];

/// One bar's flat, named indicator values (`None` while an indicator warms up).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndicatorValues {
    /// Values in [`INDICATOR_NAMES`] order.
    pub values: [Option<f64>; INDICATOR_NAMES.len()],
}

impl IndicatorValues {
    /// The value called `name` (see [`INDICATOR_NAMES`]); `None` for unknown names too.
    pub fn get(&self, name: &str) -> Option<f64> {
        INDICATOR_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.values[i])
    }

    /// `(name, value)` pairs in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<f64>)> + '_ {
        INDICATOR_NAMES
            .iter()
            .copied()
            .zip(self.values.iter().copied())
    }
}

/// Every indicator of this module, updated together once per candle.
///
/// Uses the default conventions: SMA-seeded EMA, MACD, RSI and ATR; population-stdev Bollinger;
/// stochastic %K/%D from [`IndicatorConfig::stochastic`]; OBV from 0; session VWAP of the
/// typical price; per-bar (not annualized) realized volatility.
#[derive(Debug, Clone)]
pub struct IndicatorSet {
    sma: Sma,
    ema: Ema,
    rsi: Rsi,
    macd: Macd,
    bollinger: Bollinger,
    atr: Atr,
    stochastic: Stochastic,
    obv: Obv,
    vwap: Vwap,
    roc: Roc,
    realized_vol: RealizedVol,
    prev_close: Option<f64>,
}

impl IndicatorSet {
    /// A set with the given periods (default conventions, session VWAP).
    pub fn new(cfg: &IndicatorConfig) -> Self {
        Self {
            sma: Sma::new(cfg.sma),
            ema: Ema::new(cfg.ema),
            rsi: Rsi::new(cfg.rsi),
            macd: Macd::new(cfg.macd.0, cfg.macd.1, cfg.macd.2),
            bollinger: Bollinger::new(cfg.bollinger.0, cfg.bollinger.1),
            atr: Atr::new(cfg.atr),
            stochastic: Stochastic::new(cfg.stochastic.0, cfg.stochastic.1, cfg.stochastic.2),
            obv: Obv::new(),
            vwap: Vwap::new(VwapMode::Session),
            roc: Roc::new(cfg.roc),
            realized_vol: RealizedVol::new(cfg.realized_vol),
            prev_close: None,
        }
    }

    /// Feeds one candle to every indicator and returns all values.
    #[inline]
    pub fn update(&mut self, candle: &Candle) -> IndicatorValues {
        let (h, l, c) = (
            candle.high.to_f64(),
            candle.low.to_f64(),
            candle.close.to_f64(),
        );
        let v = candle.volume.to_f64();
        let tr = true_range(h, l, self.prev_close);
        self.prev_close = Some(c);
        let macd = self.macd.update(c);
        let bb = self.bollinger.update(c);
        let st = self.stochastic.update(h, l, c);
        IndicatorValues {
            values: [
                self.sma.update(c),
                self.ema.update(c),
                self.rsi.update(c),
                self.macd.line(),
                macd.map(|m| m.signal),
                macd.map(|m| m.histogram),
                bb.map(|b| b.middle),
                bb.map(|b| b.upper),
                bb.map(|b| b.lower),
                bb.map(|b| b.bandwidth),
                bb.map(|b| b.percent_b),
                self.atr.update(h, l, c),
                self.stochastic.k(),
                st.map(|s| s.d),
                self.obv.update(c, v),
                self.vwap
                    .update(candle.open_time_ms, candle.open.to_f64(), h, l, c, v),
                self.roc.update(c),
                self.realized_vol.update(c),
                Some(tr),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random walk (no RNG dependency needed for these checks).
    fn walk(n: usize) -> Vec<(f64, f64, f64, f64)> {
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut c = 60_000.0;
        (0..n)
            .map(|_| {
                let o = c;
                c *= 1.0 + (next() - 0.5) * 0.004;
                let h = o.max(c) * (1.0 + next() * 0.001);
                let l = o.min(c) * (1.0 - next() * 0.001);
                (h, l, c, next() * 10.0)
            })
            .collect()
    }

    fn close_rel(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn naive_mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    #[test]
    fn sma_and_bollinger_match_batch() {
        let bars = walk(5_000);
        let closes: Vec<f64> = bars.iter().map(|b| b.2).collect();
        let mut sma = Sma::new(20);
        let mut bb = Bollinger::new(20, 2.0);
        for (i, &c) in closes.iter().enumerate() {
            let s = sma.update(c);
            let b = bb.update(c);
            if i < 19 {
                assert!(s.is_none() && b.is_none());
                continue;
            }
            let w = &closes[i - 19..=i];
            let m = naive_mean(w);
            let sd = (w.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 20.0).sqrt();
            assert!(close_rel(s.unwrap(), m), "bar {i}");
            let b = b.unwrap();
            assert!(close_rel(b.upper, m + 2.0 * sd), "bar {i}");
            assert!((b.upper - b.lower - 4.0 * sd).abs() < 1e-7, "bar {i}");
        }
    }

    #[test]
    fn ema_seeds_follow_convention() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut sma_seeded = Ema::new(3);
        let mut first_seeded = Ema::with_seed(3, Seed::First);
        let a: Vec<_> = xs.iter().map(|&x| sma_seeded.update(x)).collect();
        let b: Vec<_> = xs.iter().map(|&x| first_seeded.update(x)).collect();
        assert_eq!(a, vec![None, None, Some(2.0), Some(3.0), Some(4.0)]);
        assert_eq!(
            b,
            vec![Some(1.0), Some(1.5), Some(2.25), Some(3.125), Some(4.0625)]
        );
    }

    #[test]
    fn rsi_and_atr_match_batch_wilder() {
        let bars = walk(3_000);
        let n = 14;
        let mut rsi = Rsi::new(n);
        let mut atr = Atr::new(n);
        let closes: Vec<f64> = bars.iter().map(|b| b.2).collect();
        // Batch: seed = mean of the first n, then Wilder recursion, computed from arrays.
        let changes: Vec<f64> = closes.windows(2).map(|w| w[1] - w[0]).collect();
        let mut ag = changes[..n].iter().map(|c| c.max(0.0)).sum::<f64>() / n as f64;
        let mut al = changes[..n].iter().map(|c| (-c).max(0.0)).sum::<f64>() / n as f64;
        let trs: Vec<f64> = (0..bars.len())
            .map(|i| true_range(bars[i].0, bars[i].1, (i > 0).then(|| bars[i - 1].2)))
            .collect();
        let mut a = naive_mean(&trs[..n]);
        for (i, b) in bars.iter().enumerate() {
            let r = rsi.update(b.2);
            let t = atr.update(b.0, b.1, b.2);
            if i < n - 1 {
                assert!(t.is_none());
            } else {
                if i >= n {
                    a = (a * (n as f64 - 1.0) + trs[i]) / n as f64;
                }
                assert!(close_rel(t.unwrap(), a), "atr bar {i}");
            }
            if i < n {
                assert!(r.is_none());
                continue;
            }
            if i > n {
                let c = changes[i - 1];
                ag = (ag * (n as f64 - 1.0) + c.max(0.0)) / n as f64;
                al = (al * (n as f64 - 1.0) + (-c).max(0.0)) / n as f64;
            }
            assert!(close_rel(r.unwrap(), 100.0 * ag / (ag + al)), "rsi bar {i}");
        }
    }

    #[test]
    fn stochastic_roc_vol_match_batch() {
        let bars = walk(2_000);
        let mut st = Stochastic::new(14, 3, 3);
        let mut roc = Roc::new(12);
        let mut vol = RealizedVol::new(20);
        let mut ks = Vec::new();
        for (i, b) in bars.iter().enumerate() {
            let s = st.update(b.0, b.1, b.2);
            let r = roc.update(b.2);
            let v = vol.update(b.2);
            if i >= 13 {
                let w = &bars[i - 13..=i];
                let hh = w.iter().map(|x| x.0).fold(f64::MIN, f64::max);
                let ll = w.iter().map(|x| x.1).fold(f64::MAX, f64::min);
                ks.push(100.0 * (b.2 - ll) / (hh - ll));
            }
            if ks.len() >= 5 {
                let k = naive_mean(&ks[ks.len() - 3..]);
                let k1 = naive_mean(&ks[ks.len() - 4..ks.len() - 1]);
                let k2 = naive_mean(&ks[ks.len() - 5..ks.len() - 2]);
                let s = s.unwrap();
                assert!(close_rel(s.k, k) && close_rel(s.d, (k + k1 + k2) / 3.0));
            } else {
                assert!(s.is_none());
            }
            if i >= 12 {
                let want = 100.0 * (b.2 - bars[i - 12].2) / bars[i - 12].2;
                assert!(close_rel(r.unwrap(), want));
            } else {
                assert!(r.is_none());
            }
            if i >= 20 {
                let rets: Vec<f64> = (i - 19..=i)
                    .map(|j| (bars[j].2 / bars[j - 1].2).ln())
                    .collect();
                let m = naive_mean(&rets);
                let sd = (rets.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 19.0).sqrt();
                assert!((v.unwrap() - sd).abs() < 1e-12, "vol bar {i}");
            } else {
                assert!(v.is_none());
            }
        }
    }

    #[test]
    fn macd_matches_batch_emas() {
        let bars = walk(500);
        let closes: Vec<f64> = bars.iter().map(|b| b.2).collect();
        let ema = |xs: &[f64], n: usize| -> Vec<Option<f64>> {
            let a = 2.0 / (n as f64 + 1.0);
            let mut out = vec![None; xs.len()];
            let mut v = naive_mean(&xs[..n]);
            out[n - 1] = Some(v);
            for i in n..xs.len() {
                v = a * xs[i] + (1.0 - a) * v;
                out[i] = Some(v);
            }
            out
        };
        let f = ema(&closes, 12);
        let s = ema(&closes, 26);
        let line: Vec<f64> = (25..closes.len())
            .map(|i| f[i].unwrap() - s[i].unwrap())
            .collect();
        let sig = ema(&line, 9);
        let mut m = Macd::new(12, 26, 9);
        for (i, &c) in closes.iter().enumerate() {
            let v = m.update(c);
            if i < 25 + 8 {
                assert!(v.is_none());
                continue;
            }
            let v = v.unwrap();
            assert!(close_rel(v.macd, line[i - 25]));
            assert!(close_rel(v.signal, sig[i - 25].unwrap()));
        }
    }

    #[test]
    fn vwap_session_resets_at_utc_midnight() {
        let mut v = Vwap::new(VwapMode::Session);
        let day = 86_400_000;
        assert_eq!(
            v.update(day - 60_000, 0.0, 10.0, 10.0, 10.0, 1.0),
            Some(10.0)
        );
        assert_eq!(v.update(day - 1, 0.0, 20.0, 20.0, 20.0, 1.0), Some(15.0));
        assert_eq!(v.update(day, 0.0, 30.0, 30.0, 30.0, 2.0), Some(30.0));
        let mut r = Vwap::new(VwapMode::Rolling(2));
        assert_eq!(r.update(0, 0.0, 1.0, 1.0, 1.0, 1.0), None);
        assert_eq!(r.update(1, 0.0, 3.0, 3.0, 3.0, 1.0), Some(2.0));
        assert_eq!(r.update(2, 0.0, 5.0, 5.0, 5.0, 3.0), Some(4.5));
    }

    #[test]
    fn obv_counts_direction() {
        let mut o = Obv::new();
        assert_eq!(o.value(), None);
        assert_eq!(o.update(10.0, 5.0), Some(0.0));
        assert_eq!(o.update(11.0, 7.0), Some(7.0));
        assert_eq!(o.update(11.0, 9.0), Some(7.0));
        assert_eq!(o.update(10.0, 2.0), Some(5.0));
    }

    #[test]
    fn indicator_set_names_every_value() {
        let mut set = IndicatorSet::new(&IndicatorConfig::default());
        let mut last = None;
        for (i, b) in walk(100).iter().enumerate() {
            let p = |x: f64| crate::market::types::Price::from_f64_round(x);
            let c = Candle {
                open_time_ms: i as i64 * 60_000,
                open: p(b.2),
                high: p(b.0),
                low: p(b.1),
                close: p(b.2),
                volume: crate::market::types::Qty::from_f64_round(b.3),
                trades: 1,
            };
            last = Some(set.update(&c));
        }
        let last = last.unwrap();
        assert!(last.iter().all(|(_, v)| v.is_some()));
        assert_eq!(last.get("rsi"), last.values[2]);
        assert_eq!(last.get("nope"), None);
    }
}
