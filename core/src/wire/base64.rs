//! Base64 (RFC 4648 §4, standard alphabet, `=` padding) into and out of borrowed buffers.
//!
//! The WebSocket handshake needs it for `Sec-WebSocket-Key` (16 random bytes → 24 chars) and
//! `Sec-WebSocket-Accept` (a 20-byte SHA-1 → 28 chars). Both directions are total: any input
//! gives a length or an error, and nothing is written past the caller's buffer.
//!
//! The decoder is strict: padding is required, no whitespace or line breaks, and the unused low
//! bits of the last symbol must be zero, so every byte string has exactly one accepted encoding.

use core::fmt;

use crate::wire::BufferFull;

/// Why decoding base64 failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Base64Error {
    /// The output buffer is too small for the result ([`BufferFull`]).
    BufferFull,
    /// The encoded length is not a multiple of 4.
    InvalidLength,
    /// The byte at this index is not in the alphabet (or is `=` where padding may not be).
    InvalidByte(usize),
    /// The last symbol carries non-zero bits that no encoder would produce.
    NonCanonical,
}

impl fmt::Display for Base64Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Base64Error::BufferFull => f.write_str("base64: output buffer too small"),
            Base64Error::InvalidLength => f.write_str("base64: length is not a multiple of 4"),
            Base64Error::InvalidByte(i) => write!(f, "base64: invalid byte at index {i}"),
            Base64Error::NonCanonical => f.write_str("base64: non-zero trailing bits"),
        }
    }
}

impl core::error::Error for Base64Error {}

impl From<BufferFull> for Base64Error {
    fn from(_: BufferFull) -> Self {
        Base64Error::BufferFull
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks bytes that are not in the alphabet in [`DECODE`].
const INVALID: u8 = 0xFF;

/// Symbol value of every byte, or [`INVALID`]. Built at compile time so decoding is a lookup.
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The symbol for the low 6 bits of `v` (masking makes the index always in range).
fn symbol(v: u32) -> u8 {
    ALPHABET[(v & 0x3F) as usize]
}

/// Length of the padded encoding of `n` bytes, or `None` if it does not fit in `usize`.
pub const fn encoded_len(n: usize) -> Option<usize> {
    let groups = n / 3 + if n.is_multiple_of(3) { 0 } else { 1 };
    groups.checked_mul(4)
}

/// Upper bound on the decoded length of `n` encoded bytes (exact when there is no padding).
pub const fn decoded_len_max(n: usize) -> usize {
    n / 4 * 3
}

/// Encodes `input` into the start of `out` and returns the number of bytes written.
///
/// On [`BufferFull`] nothing useful was written.
pub fn encode(input: &[u8], out: &mut [u8]) -> Result<usize, BufferFull> {
    let need = encoded_len(input.len()).ok_or(BufferFull)?;
    let out = out.get_mut(..need).ok_or(BufferFull)?;
    let mut chunks = input.chunks_exact(3);
    let mut dst = out.chunks_exact_mut(4);
    for (src, d) in (&mut chunks).zip(&mut dst) {
        let v = (u32::from(src[0]) << 16) | (u32::from(src[1]) << 8) | u32::from(src[2]);
        d[0] = symbol(v >> 18);
        d[1] = symbol(v >> 12);
        d[2] = symbol(v >> 6);
        d[3] = symbol(v);
    }
    let rest = chunks.remainder();
    if let Some(d) = dst.next() {
        // `need` reserved exactly one more group only when a remainder exists.
        let b0 = u32::from(rest.first().copied().unwrap_or(0));
        let b1 = u32::from(rest.get(1).copied().unwrap_or(0));
        let v = (b0 << 16) | (b1 << 8);
        d[0] = symbol(v >> 18);
        d[1] = symbol(v >> 12);
        d[2] = if rest.len() == 2 {
            symbol(v >> 6)
        } else {
            b'='
        };
        d[3] = b'=';
    }
    Ok(need)
}

/// Decodes padded base64 `input` into the start of `out` and returns the decoded length.
///
/// Strict: the length must be a multiple of 4, `=` may only end the input (one or two of them),
/// and the unused bits before the padding must be zero.
pub fn decode(input: &[u8], out: &mut [u8]) -> Result<usize, Base64Error> {
    if !input.len().is_multiple_of(4) {
        return Err(Base64Error::InvalidLength);
    }
    let pad = match input {
        [.., b'=', b'='] => 2,
        [.., b'='] => 1,
        _ => 0,
    };
    let len = decoded_len_max(input.len()) - pad;
    let out = out.get_mut(..len).ok_or(Base64Error::BufferFull)?;
    let groups = input.len() / 4;
    let mut written = 0usize;
    for (g, quad) in input.chunks_exact(4).enumerate() {
        let last = g + 1 == groups;
        let mut v = 0u32;
        let mut syms = 4;
        for (k, &b) in quad.iter().enumerate() {
            let s = DECODE[usize::from(b)];
            if s == INVALID {
                // `=` is legal only as the trailing padding counted above.
                if b == b'=' && last && k >= 4 - pad {
                    syms = syms.min(k);
                    v <<= 6;
                    continue;
                }
                return Err(Base64Error::InvalidByte(g * 4 + k));
            }
            if syms < 4 {
                // A symbol after a `=` inside the last quad.
                return Err(Base64Error::InvalidByte(g * 4 + k));
            }
            v = (v << 6) | u32::from(s);
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        let n = syms - 1; // 4 symbols → 3 bytes, 3 → 2, 2 → 1.
        let unused = match n {
            1 => v & 0xFFFF,
            2 => v & 0xFF,
            _ => 0,
        };
        if unused != 0 {
            return Err(Base64Error::NonCanonical);
        }
        for &byte in bytes.iter().take(n) {
            if let Some(slot) = out.get_mut(written) {
                *slot = byte;
            }
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(input: &[u8]) -> std::string::String {
        let mut out = [0u8; 128];
        let n = encode(input, &mut out).unwrap();
        std::string::String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, b64) in cases {
            assert_eq!(enc(raw), b64);
            let mut out = [0u8; 16];
            let n = decode(b64.as_bytes(), &mut out).unwrap();
            assert_eq!(&out[..n], raw);
        }
    }

    #[test]
    fn full_alphabet_roundtrip() {
        let raw: std::vec::Vec<u8> = (0..=255u8).collect();
        let mut e = [0u8; 400];
        let n = encode(&raw, &mut e).unwrap();
        assert_eq!(n, 344);
        let mut d = [0u8; 300];
        let m = decode(&e[..n], &mut d).unwrap();
        assert_eq!(&d[..m], &raw[..]);
    }

    #[test]
    fn rejects_bad_input() {
        let mut out = [0u8; 16];
        assert_eq!(decode(b"Zm9", &mut out), Err(Base64Error::InvalidLength));
        assert_eq!(decode(b"Zm9*", &mut out), Err(Base64Error::InvalidByte(3)));
        assert_eq!(decode(b"Z===", &mut out), Err(Base64Error::InvalidByte(1)));
        assert_eq!(
            decode(b"Zg==Zg==", &mut out),
            Err(Base64Error::InvalidByte(2))
        );
        assert_eq!(decode(b"Zm=v", &mut out), Err(Base64Error::InvalidByte(2)));
        // 'h' leaves a non-zero bit after "f".
        assert_eq!(decode(b"Zh==", &mut out), Err(Base64Error::NonCanonical));
        assert_eq!(decode(b"Zm9=", &mut out), Err(Base64Error::NonCanonical));
        assert_eq!(decode(b"Zm9v", &mut out[..2]), Err(Base64Error::BufferFull));
        assert_eq!(encode(b"foo", &mut out[..3]), Err(BufferFull));
    }

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(0), Some(0));
        assert_eq!(encoded_len(16), Some(24));
        assert_eq!(encoded_len(20), Some(28));
        assert_eq!(encoded_len(usize::MAX), None);
        assert_eq!(decoded_len_max(24), 18);
    }

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut e = [0u8; 300];
            let n = encode(&data, &mut e).unwrap();
            prop_assert_eq!(Some(n), encoded_len(data.len()));
            let mut d = [0u8; 200];
            let m = decode(&e[..n], &mut d).unwrap();
            prop_assert_eq!(&d[..m], &data[..]);
        }

        #[test]
        fn decode_is_total(data in proptest::collection::vec(any::<u8>(), 0..64), cap in 0usize..64) {
            let mut out = [0u8; 64];
            if let Ok(n) = decode(&data, &mut out[..cap]) {
                // Strictness: whatever decodes re-encodes to the same text.
                let mut e = [0u8; 128];
                let k = encode(&out[..n], &mut e).unwrap();
                prop_assert_eq!(&e[..k], &data[..]);
            }
        }
    }
}
