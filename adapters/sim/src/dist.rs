//! Random draws for the simulation, all from one seeded [`SplitMix64`] so that a run replays
//! exactly from its seed.

use grenache_core::rng::{Rng, SplitMix64};

/// The simulation's random source: uniform, exponential and log-normal draws.
#[derive(Clone, Debug)]
pub struct Rand(SplitMix64);

impl Rand {
    /// A generator determined by `seed`.
    pub fn new(seed: u64) -> Rand {
        Rand(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A uniform float in `[0, 1)` (53 random bits).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform index in `0..n` (`0` when `n` is `0`).
    pub fn below(&mut self, n: usize) -> usize {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.below(n) as usize
    }

    /// An exponential draw with the given median (memoryless session and arrival times).
    pub fn exponential(&mut self, median: f64) -> f64 {
        // 1 - unit() is in (0, 1]: ln never sees 0.
        -(1.0 - self.unit()).ln() * median / core::f64::consts::LN_2
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
    }

    /// A log-normal draw with the given median and shape `sigma`.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// A generator for a sub-stream (a node's own RNG), independent of later draws here.
    pub fn fork(&mut self) -> SplitMix64 {
        SplitMix64::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_has_the_requested_median() {
        let mut r = Rand::new(7);
        let mut v: Vec<f64> = (0..20_001).map(|_| r.exponential(30.0)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((median - 30.0).abs() < 1.5, "median {median}");
    }

    #[test]
    fn log_normal_has_the_requested_median() {
        let mut r = Rand::new(8);
        let mut v: Vec<f64> = (0..20_001).map(|_| r.log_normal(80.0, 0.6)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[10_000];
        assert!((median - 80.0).abs() < 4.0, "median {median}");
    }
}
