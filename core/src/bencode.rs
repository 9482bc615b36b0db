//! Bencode, the encoding of every KRPC datagram.
//!
//! The encoder writes into a caller-provided `&mut [u8]` and never allocates. Dictionary keys
//! must be written in sorted (raw byte) order, as BEP 3 requires and bittorrent-dht does: the
//! typed writers in [`crate::krpc`] do so by construction.
//!
//! (The zero-copy decoder lives in this module too; see [`decode`].)

use core::fmt;

/// The output buffer is too small for what was being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferFull;

impl fmt::Display for BufferFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small")
    }
}

/// Writes bencode into a borrowed buffer.
///
/// Each call appends one item; on [`BufferFull`] the encoder's length is left where it was
/// before the call, so a caller may retry with a shorter value.
#[derive(Debug)]
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder that writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Encoder { buf, len: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// Consumes the encoder and returns the written part of the buffer.
    pub fn finish(self) -> &'a [u8] {
        let len = self.len;
        let buf: &'a [u8] = self.buf;
        buf.get(..len).unwrap_or(&[])
    }

    /// Appends already-encoded bencode (or any bytes) verbatim.
    pub fn raw(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferFull)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BufferFull)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// Appends a byte string: `<len>:<bytes>`.
    pub fn bytes(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let start = self.len;
        let result = self
            .decimal(bytes.len() as u64, false)
            .and_then(|()| self.raw(b":"))
            .and_then(|()| self.raw(bytes));
        if result.is_err() {
            self.len = start;
        }
        result
    }

    /// Appends an integer: `i<n>e`.
    pub fn int(&mut self, n: i64) -> Result<(), BufferFull> {
        let start = self.len;
        let result = self
            .raw(b"i")
            .and_then(|()| self.decimal(n.unsigned_abs(), n < 0))
            .and_then(|()| self.raw(b"e"));
        if result.is_err() {
            self.len = start;
        }
        result
    }

    /// Opens a dictionary (`d`). Keys must follow in sorted order, each followed by its value.
    pub fn dict_begin(&mut self) -> Result<(), BufferFull> {
        self.raw(b"d")
    }

    /// Opens a list (`l`).
    pub fn list_begin(&mut self) -> Result<(), BufferFull> {
        self.raw(b"l")
    }

    /// Closes the innermost open dictionary or list (`e`).
    pub fn end(&mut self) -> Result<(), BufferFull> {
        self.raw(b"e")
    }

    fn decimal(&mut self, mut n: u64, negative: bool) -> Result<(), BufferFull> {
        // u64::MAX has 20 digits, plus one for the sign.
        let mut digits = [0u8; 21];
        let mut i = digits.len();
        loop {
            i -= 1;
            // `n % 10` is below 10, so the cast cannot truncate.
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if negative {
            i -= 1;
            digits[i] = b'-';
        }
        self.raw(digits.get(i..).unwrap_or(&[]))
    }
}

#[cfg(test)]
mod encoder_tests {
    use super::*;

    #[test]
    fn writes_every_kind() {
        let mut buf = [0u8; 64];
        let mut e = Encoder::new(&mut buf);
        e.dict_begin().unwrap();
        e.bytes(b"a").unwrap();
        e.list_begin().unwrap();
        e.int(0).unwrap();
        e.int(-42).unwrap();
        e.int(i64::MIN).unwrap();
        e.end().unwrap();
        e.bytes(b"b").unwrap();
        e.bytes(b"").unwrap();
        e.end().unwrap();
        assert_eq!(
            e.finish(),
            b"d1:ali0ei-42ei-9223372036854775808ee1:b0:e".as_slice()
        );
    }

    #[test]
    fn full_buffer_leaves_length_unchanged() {
        let mut buf = [0u8; 6];
        let mut e = Encoder::new(&mut buf);
        e.bytes(b"ab").unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e.bytes(b"cd"), Err(BufferFull));
        assert_eq!(e.int(123), Err(BufferFull));
        assert_eq!(e.len(), 4);
        e.raw(b"xy").unwrap();
        assert_eq!(e.finish(), b"2:abxy".as_slice());
    }
}
