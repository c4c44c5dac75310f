//! Reconnect delays: exponential backoff with jitter, so many clients never retry in lockstep.

use std::time::Duration;

use rand::{RngExt, SeedableRng};

/// Exponential backoff state for one connection.
#[derive(Debug)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    jitter: f64,
    attempt: u32,
    rng: rand_chacha::ChaCha8Rng,
}

impl Backoff {
    /// Delays start at `initial_ms`, double per failure up to `max_ms`, each scaled by a random
    /// factor in `[1 - jitter, 1 + jitter]`.
    pub fn new(initial_ms: u64, max_ms: u64, jitter: f64, seed: u64) -> Self {
        Self {
            initial_ms: initial_ms.max(1),
            max_ms: max_ms.max(initial_ms.max(1)),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The delay before the next attempt; advances the attempt count.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .initial_ms
            .saturating_mul(1u64 << self.attempt.min(32))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let factor = if self.jitter > 0.0 {
            self.rng.random_range(1.0 - self.jitter..=1.0 + self.jitter)
        } else {
            1.0
        };
        Duration::from_millis(((base as f64) * factor).round() as u64)
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a successful connection: the next failure starts from the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let mut b = Backoff::new(100, 1_000, 0.2, 1);
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        let bases = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, base) in delays.iter().zip(bases) {
            assert!(*d >= base * 8 / 10 && *d <= base * 12 / 10, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay().as_millis() <= 120);
    }

    #[test]
    fn jitter_spreads_clients() {
        let a: Vec<_> = {
            let mut b = Backoff::new(1000, 60_000, 0.25, 1);
            (0..5).map(|_| b.next_delay()).collect()
        };
        let c: Vec<_> = {
            let mut b = Backoff::new(1000, 60_000, 0.25, 2);
            (0..5).map(|_| b.next_delay()).collect()
        };
        assert_ne!(a, c);
    }
}
