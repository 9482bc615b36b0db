//! Randomness from the operating system, for the engine's [`grenache_core::Rng`].

use std::io;

use grenache_core::Rng;

/// Randomness from the operating system, buffered (token secrets and node ids must not be
/// predictable: a node id is public, so a seeded PRNG would give its secrets away).
pub struct OsRng {
    buf: [u8; 256],
    pos: usize,
}

impl OsRng {
    /// A generator; fails if the OS has no randomness to give.
    pub fn new() -> io::Result<OsRng> {
        let mut r = OsRng {
            buf: [0; 256],
            pos: 256,
        };
        r.refill()?;
        Ok(r)
    }

    fn refill(&mut self) -> io::Result<()> {
        getrandom::fill(&mut self.buf).map_err(|e| io::Error::other(e.to_string()))?;
        self.pos = 0;
        Ok(())
    }
}

impl Rng for OsRng {
    fn next_u32(&mut self) -> u32 {
        if self.pos + 4 > self.buf.len() && self.refill().is_err() {
            // The OS generator failed after it worked at start: keep going on the old
            // buffer rather than stop the node (samples only; secrets were taken before).
            self.pos = 0;
        }
        let mut w = [0u8; 4];
        if let Some(b) = self.buf.get(self.pos..self.pos + 4) {
            w.copy_from_slice(b);
        }
        self.pos += 4;
        u32::from_le_bytes(w)
    }
}
