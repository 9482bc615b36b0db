//! Randomness, supplied by the caller.
//!
//! The core never gathers entropy itself: node ids, token secrets and samples come from an
//! [`Rng`] the adapter passes in (the OS generator on a host, a hardware RNG on a board, a
//! seeded [`SplitMix64`] in tests, so that any run can be replayed from its seed).

/// A source of random numbers.
pub trait Rng {
    /// The next 32 random bits.
    fn next_u32(&mut self) -> u32;

    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let word = self.next_u32().to_le_bytes();
            for (d, s) in chunk.iter_mut().zip(word) {
                *d = s;
            }
        }
    }

    /// A uniformly distributed number in `0..bound` (`0` when `bound` is `0`).
    ///
    /// Uses Lemire's multiply-shift with rejection, so there is no modulo bias.
    fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            return 0;
        }
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let m = u64::from(self.next_u32()) * u64::from(bound);
            // `m as u32` keeps the low half on purpose: that is the rejection test.
            #[allow(clippy::cast_possible_truncation)]
            if (m as u32) >= threshold {
                return (m >> 32) as u32;
            }
        }
    }
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn next_u32(&mut self) -> u32 {
        (**self).next_u32()
    }
}

/// A small, fast, seedable generator (SplitMix64). Not cryptographic: use it for tests and
/// simulations, and seed it from real entropy (or use a real RNG) for token secrets.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Rng for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let mut x = [0u8; 23];
        let mut y = [0u8; 23];
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 23]);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SplitMix64::new(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.below(0), 0);
    }
}
