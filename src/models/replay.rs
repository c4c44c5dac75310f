//! Bounded prioritized experience replay on a sum tree (Schaul et al. 2016, proportional).

use rand::{Rng, RngExt};

/// Binary tree of priorities whose inner nodes hold sums, for O(log n) sampling by mass.
#[derive(Debug, Clone)]
pub struct SumTree {
    capacity: usize,
    nodes: Vec<f64>,
}

impl SumTree {
    /// A tree over `capacity` leaves, all zero.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        Self {
            capacity,
            nodes: vec![0.0; 2 * capacity],
        }
    }

    /// Sum of all priorities.
    pub fn total(&self) -> f64 {
        self.nodes[1]
    }

    /// Priority of leaf `i`.
    pub fn get(&self, i: usize) -> f64 {
        self.nodes[self.capacity + i]
    }

    /// Sets leaf `i` and fixes the sums above it.
    pub fn set(&mut self, i: usize, priority: f64) {
        let p = if priority.is_finite() {
            priority.max(0.0)
        } else {
            0.0
        };
        let mut n = self.capacity + i;
        self.nodes[n] = p;
        while n > 1 {
            n /= 2;
            self.nodes[n] = self.nodes[2 * n] + self.nodes[2 * n + 1];
        }
    }

    /// The leaf whose cumulative range contains `mass` (clamped into `[0, total)`).
    pub fn find(&self, mass: f64) -> usize {
        let mut m = mass.clamp(0.0, self.total());
        let mut n = 1;
        while n < self.capacity {
            let left = self.nodes[2 * n];
            // Zero-priority leaves are never picked: go left only while it has mass left.
            if m < left || self.nodes[2 * n + 1] <= 0.0 {
                n *= 2;
            } else {
                m -= left;
                n = 2 * n + 1;
            }
        }
        n - self.capacity
    }
}

/// One stored transition (already folded to n steps by the agent).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// State features.
    pub state: Vec<f32>,
    /// Action index.
    pub action: usize,
    /// Discounted reward over the folded steps.
    pub reward: f32,
    /// State after the folded steps.
    pub next_state: Vec<f32>,
    /// Discount applied to the bootstrap value (`gamma^n`, 0 when the episode ended).
    pub discount: f32,
}

/// A sampled batch with the importance weights that correct the sampling bias.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// Slots to pass back to [`PrioritizedReplay::update_priorities`].
    pub slots: Vec<usize>,
    /// Importance-sampling weights, max-normalized to 1.
    pub weights: Vec<f32>,
    /// The transitions.
    pub transitions: Vec<Transition>,
}

/// Prioritized replay with a fixed capacity; the oldest transition is overwritten.
#[derive(Debug, Clone)]
pub struct PrioritizedReplay {
    tree: SumTree,
    data: Vec<Transition>,
    capacity: usize,
    next: usize,
    alpha: f64,
    max_priority: f64,
}

/// Keeps every priority positive so no transition starves.
const PRIORITY_EPS: f64 = 1e-3;

impl PrioritizedReplay {
    /// An empty buffer; `alpha` is how strongly priorities skew sampling (0 = uniform).
    pub fn new(capacity: usize, alpha: f64) -> Self {
        let capacity = capacity.max(1);
        Self {
            tree: SumTree::new(capacity),
            data: Vec::with_capacity(capacity.min(1 << 16)),
            capacity,
            next: 0,
            alpha,
            max_priority: 1.0,
        }
    }

    /// Stored transitions.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Maximum transitions kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a transition at the highest priority seen so it is replayed at least once soon.
    pub fn push(&mut self, t: Transition) {
        let slot = self.next;
        if self.data.len() < self.capacity {
            self.data.push(t);
        } else {
            self.data[slot] = t;
        }
        self.tree.set(slot, self.max_priority.powf(self.alpha));
        self.next = (self.next + 1) % self.capacity;
    }

    /// Samples `batch` transitions proportionally to priority (stratified over the mass);
    /// `beta` sets how fully importance weights undo the skew. Empty when the buffer is.
    pub fn sample<R: Rng>(&self, batch: usize, beta: f64, rng: &mut R) -> Sampled {
        let mut out = Sampled {
            slots: Vec::with_capacity(batch),
            weights: Vec::with_capacity(batch),
            transitions: Vec::with_capacity(batch),
        };
        let total = self.tree.total();
        if self.data.is_empty() || total <= 0.0 || batch == 0 {
            return out;
        }
        let seg = total / batch as f64;
        let n = self.data.len() as f64;
        let mut raw = Vec::with_capacity(batch);
        for k in 0..batch {
            let mass = seg * (k as f64 + rng.random::<f64>());
            let slot = self.tree.find(mass).min(self.data.len() - 1);
            let p = self.tree.get(slot).max(f64::MIN_POSITIVE) / total;
            raw.push((n * p).powf(-beta));
            out.slots.push(slot);
            out.transitions.push(self.data[slot].clone());
        }
        let max = raw.iter().cloned().fold(f64::MIN_POSITIVE, f64::max);
        out.weights = raw.iter().map(|w| (w / max) as f32).collect();
        out
    }

    /// Sets new priorities (absolute TD errors) for sampled slots.
    pub fn update_priorities(&mut self, slots: &[usize], td_errors: &[f32]) {
        for (&s, &e) in slots.iter().zip(td_errors) {
            if s >= self.data.len() {
                continue;
            }
            let p = f64::from(e).abs() + PRIORITY_EPS;
            let p = if p.is_finite() { p } else { self.max_priority };
            self.max_priority = self.max_priority.max(p);
            self.tree.set(s, p.powf(self.alpha));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn tr(i: usize) -> Transition {
        Transition {
            state: vec![i as f32],
            action: i % 3,
            reward: 0.0,
            next_state: vec![],
            discount: 0.0,
        }
    }

    #[test]
    fn buffer_is_bounded_and_overwrites_the_oldest() {
        let mut r = PrioritizedReplay::new(5, 0.6);
        for i in 0..12 {
            r.push(tr(i));
        }
        assert_eq!(r.len(), 5);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let s = r.sample(64, 0.4, &mut rng);
        assert!(s.transitions.iter().all(|t| t.state[0] >= 7.0));
    }

    #[test]
    fn high_priority_is_sampled_more() {
        let mut r = PrioritizedReplay::new(8, 1.0);
        for i in 0..8 {
            r.push(tr(i));
        }
        let all: Vec<usize> = (0..8).collect();
        let mut errs = vec![0.01f32; 8];
        errs[3] = 10.0;
        r.update_priorities(&all, &errs);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let s = r.sample(1000, 1.0, &mut rng);
        let hits = s.slots.iter().filter(|&&x| x == 3).count();
        assert!(hits > 900, "slot 3 drawn {hits} times");
        // The over-sampled slot gets the smallest importance weight.
        let w3 = s.weights[s.slots.iter().position(|&x| x == 3).unwrap()];
        assert!(s.weights.iter().all(|&w| w >= w3));
    }

    proptest! {
        #[test]
        fn tree_sum_matches_leaves(ps in proptest::collection::vec(0.0f64..10.0, 1..40)) {
            let mut t = SumTree::new(ps.len());
            for (i, &p) in ps.iter().enumerate() {
                t.set(i, p);
            }
            let sum: f64 = ps.iter().sum();
            prop_assert!((t.total() - sum).abs() < 1e-9);
            if sum > 0.0 {
                // Every mass lands on a leaf with positive priority.
                for k in 0..20 {
                    let leaf = t.find(sum * k as f64 / 20.0);
                    prop_assert!(leaf < ps.len() && ps[leaf] > 0.0);
                }
            }
        }
    }
}
