//! SHA-1 (FIPS 180-4), small: the WebSocket accept key, BEP44 item keys and DHT write tokens
//! need it, and none of them is a security boundary SHA-1's weakness matters to (the hash is
//! fixed by the protocols).
//!
//! Written for code size, not speed: one loop over the 80 rounds with a 16-word rolling
//! message schedule, about 0.4 KiB of Thumb-2 code where an unrolled implementation takes
//! 2.5 KiB of a board's flash. A 64-byte block costs about a microsecond on a desktop CPU,
//! far below anything a grape or a board does per hash.

/// Bytes of a digest.
pub const DIGEST_LEN: usize = 20;

/// An incremental SHA-1: [`Sha1::update`] with the message's parts, then [`Sha1::digest`].
#[derive(Clone, Debug)]
pub struct Sha1 {
    state: [u32; 5],
    block: [u8; 64],
    /// Bytes in `block`.
    fill: usize,
    /// Message bytes so far (the length field counts bits modulo 2^64).
    total: u64,
}

impl Default for Sha1 {
    fn default() -> Self {
        Sha1::new()
    }
}

impl Sha1 {
    /// The hash of the empty message, ready for input.
    pub const fn new() -> Self {
        Sha1 {
            state: [
                0x6745_2301,
                0xefcd_ab89,
                0x98ba_dcfe,
                0x1032_5476,
                0xc3d2_e1f0,
            ],
            block: [0; 64],
            fill: 0,
            total: 0,
        }
    }

    /// Appends `data` to the message.
    pub fn update(&mut self, data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        for &b in data {
            if let Some(slot) = self.block.get_mut(self.fill) {
                *slot = b;
            }
            self.fill += 1;
            if self.fill == 64 {
                self.compress();
            }
        }
    }

    /// The digest of the message.
    pub fn digest(mut self) -> [u8; DIGEST_LEN] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.fill != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; DIGEST_LEN];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// Compresses the full `block` into the state.
    fn compress(&mut self) {
        self.fill = 0;
        let mut w = [0u32; 16];
        for (w, b) in w.iter_mut().zip(self.block.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.state;
        for i in 0..80 {
            // The schedule word of round i, kept in a 16-word ring: from round 16 on, word i
            // replaces word i - 16 in place.
            let word = if i < 16 {
                w[i & 15]
            } else {
                let x = (w[(i + 13) & 15] ^ w[(i + 8) & 15] ^ w[(i + 2) & 15] ^ w[i & 15])
                    .rotate_left(1);
                w[i & 15] = x;
                x
            };
            let (f, k) = match i / 20 {
                0 => ((b & c) | (!b & d), 0x5a82_7999),
                1 => (b ^ c ^ d, 0x6ed9_eba1),
                2 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(word);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// The SHA-1 digest of `data`.
pub fn sha1(data: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha1::new();
    h.update(data);
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fips_vectors() {
        assert_eq!(
            hex::encode(sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            hex::encode(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex::encode(sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        let mut h = Sha1::new();
        for _ in 0..1000 {
            h.update(&[b'a'; 1000]);
        }
        assert_eq!(
            hex::encode(h.digest()),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    proptest! {
        #[test]
        fn matches_sha1_smol_in_any_split(data in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let cut = cut.min(data.len());
            let mut h = Sha1::new();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            prop_assert_eq!(h.digest(), sha1_smol::Sha1::from(&data).digest().bytes());
        }
    }
}
