//! The simulated wire: per-link latency, loss, duplication and reordering.

use crate::dist::Rand;

/// How long a datagram takes between two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Latency {
    /// One switch: about 0.2 ms one way.
    Lan,
    /// One data centre: about 1 ms one way.
    DataCentre,
    /// Across the Internet: each link's one-way delay is log-normal, median 60 ms, clamped to
    /// 20–300 ms (round trips of 40–600 ms).
    Wan,
}

/// The conditions of every link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Base latency of a link.
    pub latency: Latency,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by up to one more base latency, so that it
    /// may arrive after later ones.
    pub reorder: f64,
}

/// Mixes two node indices and a seed into 64 bits: a link's fixed base latency, the same in
/// both directions and for the whole run.
fn link_hash(a: u32, b: u32, seed: u64) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut z = seed ^ (u64::from(lo) << 32 | u64::from(hi));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl LinkModel {
    /// The base one-way delay of the link between nodes `a` and `b`, in microseconds.
    pub fn base_us(&self, a: u32, b: u32, seed: u64) -> u64 {
        match self.latency {
            Latency::Lan => 200,
            Latency::DataCentre => 1_000,
            Latency::Wan => {
                let mut r = Rand::new(link_hash(a, b, seed));
                let ms = r.log_normal(60.0, 0.7).clamp(20.0, 300.0);
                (ms * 1000.0) as u64
            }
        }
    }

    /// Delivery delays (µs) of one datagram from `a` to `b`: none if lost, two if duplicated.
    /// Each copy gets up to 10 % jitter; a reordered copy up to one more base delay.
    pub fn deliveries(&self, rng: &mut Rand, a: u32, b: u32, seed: u64) -> [Option<u64>; 2] {
        if rng.chance(self.loss) {
            return [None, None];
        }
        let base = self.base_us(a, b, seed);
        let one = |rng: &mut Rand| {
            let jitter = (base as f64 * 0.1 * rng.unit()) as u64;
            let held = if rng.chance(self.reorder) {
                (base as f64 * rng.unit()) as u64
            } else {
                0
            };
            base + jitter + held
        };
        let first = Some(one(rng));
        let second = rng.chance(self.duplicate).then(|| one(rng));
        [first, second]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wan_links_are_fixed_symmetric_and_in_range() {
        let m = LinkModel {
            latency: Latency::Wan,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
        };
        let mut seen = Vec::new();
        for a in 0..200 {
            let d = m.base_us(a, a + 1, 9);
            assert_eq!(d, m.base_us(a + 1, a, 9));
            assert!((20_000..=300_000).contains(&d), "{d}");
            seen.push(d);
        }
        seen.sort_unstable();
        // Spread, not a constant.
        assert!(seen[180] > 2 * seen[20]);
    }

    #[test]
    fn loss_and_duplication_happen_at_their_rates() {
        let m = LinkModel {
            latency: Latency::Lan,
            loss: 0.1,
            duplicate: 0.2,
            reorder: 0.0,
        };
        let mut r = Rand::new(1);
        let (mut lost, mut dup) = (0, 0);
        for _ in 0..10_000 {
            match m.deliveries(&mut r, 1, 2, 0) {
                [None, _] => lost += 1,
                [Some(_), Some(_)] => dup += 1,
                _ => {}
            }
        }
        assert!((900..1100).contains(&lost), "{lost}");
        assert!((1600..2000).contains(&dup), "{dup}");
    }
}
