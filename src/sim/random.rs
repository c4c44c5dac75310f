//! A small self-contained keyed random generator.
//!
//! The simulator's streams must be identical for a seed across machines and crate upgrades, so it
//! uses its own fixed algorithms (SplitMix64 keying, xoshiro256**) instead of a library whose
//! output may change between versions.

/// Mixes one 64-bit word (SplitMix64 finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one key; order matters.
pub fn key(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x5151_7A7A_0C0C_E1E1, |acc, &p| mix(acc ^ mix(p)))
}

/// Deterministic generator (xoshiro256**) with the distributions the market model needs.
#[derive(Debug, Clone)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator keyed by a list of words (seed, symbol, level, time, ...).
    pub fn keyed(parts: &[u64]) -> Self {
        let k = key(parts);
        let mut s = [0u64; 4];
        let mut z = k;
        for w in &mut s {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *w = mix(z);
        }
        Self { s }
    }

    /// Next raw 64-bit word.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box–Muller; one value per call keeps the stream simple to reason about).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Student-t with `df` degrees of freedom (integer `df` ≥ 3), scaled to unit variance so the
    /// volatility parameters keep their meaning while tails get fat.
    pub fn student_t_unit(&mut self, df: u32) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..df).map(|_| self.normal().powi(2)).sum();
        let t = z / (chi2 / df as f64).sqrt();
        t * ((df as f64 - 2.0) / df as f64).sqrt()
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -self.uniform().ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_streams_repeat_and_differ() {
        let mut a = SimRng::keyed(&[1, 2, 3]);
        let mut b = SimRng::keyed(&[1, 2, 3]);
        let mut c = SimRng::keyed(&[1, 2, 4]);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn student_t_has_unit_variance_and_fat_tails() {
        let mut r = SimRng::keyed(&[9]);
        let xs: Vec<f64> = (0..200_000).map(|_| r.student_t_unit(5)).collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n / var.powi(2) - 3.0;
        assert!((var - 1.0).abs() < 0.1, "variance {var}");
        assert!(kurt > 1.0, "excess kurtosis {kurt}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SimRng::keyed(&[5]);
        assert!((0..10_000).all(|_| r.below(7) < 7));
    }
}
