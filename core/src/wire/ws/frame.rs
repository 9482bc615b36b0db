//! The RFC 6455 §5 frame codec: header parser, masking, and frame writers.
//!
//! ```text
//!  0               1               2               3
//!  0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 4 5 6 7
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! No extension is negotiated (Grenache's Node server declines permessage-deflate), so every
//! RSV bit must be zero. A header is at most [`MAX_HEADER_LEN`] = 14 bytes.

use super::{Status, WsError};
use crate::wire::BufferFull;

/// The longest possible frame header: 2 + 8 (64-bit length) + 4 (masking key).
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame (close, ping, pong), RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The largest control frame on the wire: a masked 125-byte payload (2 + 4 + 125).
pub const MAX_CONTROL_FRAME_LEN: usize = 2 + 4 + MAX_CONTROL_PAYLOAD;

/// A frame's opcode (RFC 6455 §5.2). Reserved opcodes are rejected by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Opcode {
    /// 0x0: a later fragment of a fragmented message.
    Continuation,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: close, with an optional status code and UTF-8 reason.
    Close,
    /// 0x9: ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// The opcode for a 4-bit value, or `None` for the reserved ones (0x3-0x7, 0xB-0xF).
    pub const fn from_u8(v: u8) -> Option<Opcode> {
        match v {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong): at most 125 bytes, never
    /// fragmented, and allowed between the fragments of a data message.
    pub const fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: Opcode,
    /// The masking key, present exactly when the MASK bit is set (client-to-server frames).
    pub mask: Option<[u8; 4]>,
    /// Payload length. Always below 2^63 (the parser rejects a set top bit).
    pub payload_len: u64,
}

impl FrameHeader {
    /// The size of this header as [`write_frame_header`] encodes it (minimal length form).
    pub const fn encoded_len(&self) -> usize {
        header_len(self.payload_len, self.mask.is_some())
    }

    /// Writes this header into `out` (see [`write_frame_header`]).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferFull> {
        write_frame_header(out, self.fin, self.opcode, self.mask, self.payload_len)
    }
}

/// Size of a minimally encoded header for a payload of `payload_len` bytes.
pub const fn header_len(payload_len: u64, masked: bool) -> usize {
    let base = if payload_len <= 125 {
        2
    } else if payload_len <= 0xFFFF {
        4
    } else {
        10
    };
    if masked {
        base + 4
    } else {
        base
    }
}

/// Size of a whole frame (minimal header plus payload), or `None` if it overflows `usize`.
pub const fn frame_len(payload_len: usize, masked: bool) -> Option<usize> {
    header_len(payload_len as u64, masked).checked_add(payload_len)
}

/// Parses a frame header from the start of `buf`.
///
/// Returns the header and the number of bytes it occupied (2..=14), or
/// [`Status::Partial`] when `buf` holds only a prefix of a valid header. Errors are reported as
/// soon as the bytes that prove them are present, so a bad first byte fails without waiting
/// for the rest. Checks (RFC 6455 §5.2, §5.5):
/// - RSV1-3 are zero (no extension is negotiated) → [`WsError::ReservedBits`];
/// - the opcode is not reserved → [`WsError::ReservedOpcode`];
/// - control frames have FIN set → [`WsError::FragmentedControl`] and at most 125 bytes of
///   payload → [`WsError::ControlTooLong`];
/// - a 64-bit length has its top bit clear → [`WsError::LengthOverflow`].
///
/// The minimal-encoding rule (e.g. 16-bit form only for lengths ≥ 126) is not enforced, as
/// most implementations (including Node's `ws`) do not enforce it either.
///
/// Role rules (masked iff client-to-server) depend on the side and are checked by
/// [`super::WsConnection`].
pub fn parse_frame_header(buf: &[u8]) -> Result<Status<(FrameHeader, usize)>, WsError> {
    let Some(&b0) = buf.first() else {
        return Ok(Status::Partial);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(WsError::ReservedOpcode(b0 & 0x0F))?;
    if opcode.is_control() && !fin {
        return Err(WsError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(Status::Partial);
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(WsError::ControlTooLong);
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            let Some(ext) = buf.get(2..4) else {
                return Ok(Status::Partial);
            };
            (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
        }
        127 => {
            // The top bit is checked on the first length byte, before the rest arrives.
            if let Some(&first) = buf.get(2) {
                if first & 0x80 != 0 {
                    return Err(WsError::LengthOverflow);
                }
            }
            let Some(ext) = buf.get(2..10) else {
                return Ok(Status::Partial);
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(ext);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(k) = buf.get(pos..pos + 4) else {
            return Ok(Status::Partial);
        };
        pos += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Ok(Status::Complete((
        FrameHeader {
            fin,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// XORs `data` with the masking `key` (RFC 6455 §5.3), in place.
///
/// `offset` is the position of `data[0]` within the frame's payload, so a payload that arrives
/// in pieces can be unmasked piece by piece. Masking and unmasking are the same operation.
pub fn apply_mask(key: [u8; 4], offset: usize, data: &mut [u8]) {
    // Rotate the key so that `data[0]` lines up with key byte `offset % 4`.
    let k = u32::from_be_bytes(key).rotate_left(8 * (offset % 4) as u32);
    let k = k.to_be_bytes();
    // Eight bytes at a time: the compiler turns this into word XORs (SIMD where available).
    let k8 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ k8).to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(k.iter().cycle()) {
        *b ^= m;
    }
}

/// Writes a frame header into the start of `out` and returns its length.
///
/// The length uses the minimal form. `payload_len` must be below 2^63 (always true for a
/// `usize`-sized payload); a larger value is written as-is and would be rejected by peers.
/// Writes nothing on [`BufferFull`]. The caller then writes the payload, masked with the same
/// key via [`apply_mask`] (offset 0) if `mask` is set.
pub fn write_frame_header(
    out: &mut [u8],
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload_len: u64,
) -> Result<usize, BufferFull> {
    let n = header_len(payload_len, mask.is_some());
    let out = out.get_mut(..n).ok_or(BufferFull)?;
    let mut tmp = [0u8; MAX_HEADER_LEN];
    tmp[0] = (if fin { 0x80 } else { 0 }) | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = 2;
    if payload_len <= 125 {
        tmp[1] = mask_bit | payload_len as u8;
    } else if payload_len <= 0xFFFF {
        tmp[1] = mask_bit | 126;
        tmp[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        pos = 4;
    } else {
        tmp[1] = mask_bit | 127;
        tmp[2..10].copy_from_slice(&payload_len.to_be_bytes());
        pos = 10;
    }
    if let Some(k) = mask {
        tmp[pos..pos + 4].copy_from_slice(&k);
    }
    out.copy_from_slice(tmp.get(..n).ok_or(BufferFull)?);
    Ok(n)
}

/// Writes a whole frame (header, then `payload`, masked if `mask` is set) into `out` and
/// returns its length. Writes nothing useful on [`BufferFull`].
pub fn write_frame(
    out: &mut [u8],
    fin: bool,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Result<usize, BufferFull> {
    let total = frame_len(payload.len(), mask.is_some()).ok_or(BufferFull)?;
    let out = out.get_mut(..total).ok_or(BufferFull)?;
    let h = write_frame_header(out, fin, opcode, mask, payload.len() as u64)?;
    let body = out.get_mut(h..).ok_or(BufferFull)?;
    body.copy_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(k, 0, body);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn parse_ok(buf: &[u8]) -> (FrameHeader, usize) {
        match parse_frame_header(buf).unwrap() {
            Status::Complete(x) => x,
            Status::Partial => panic!("partial"),
        }
    }

    /// RFC 6455 §5.7: single-frame unmasked and masked "Hello".
    #[test]
    fn rfc_hello_examples() {
        let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = parse_ok(&unmasked);
        assert_eq!(n, 2);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Text);
        assert_eq!(h.mask, None);
        assert_eq!(h.payload_len, 5);
        assert_eq!(&unmasked[n..], b"Hello");

        let mut masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_ok(&masked);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
        apply_mask(h.mask.unwrap(), 0, &mut masked[n..]);
        assert_eq!(&masked[n..], b"Hello");

        let mut out = [0u8; 16];
        let w = write_frame(
            &mut out,
            true,
            Opcode::Text,
            Some([0x37, 0xfa, 0x21, 0x3d]),
            b"Hello",
        )
        .unwrap();
        assert_eq!(
            &out[..w],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        let w = write_frame(&mut out, true, Opcode::Text, None, b"Hello").unwrap();
        assert_eq!(&out[..w], &unmasked);
    }

    /// RFC 6455 §5.7: fragmented text, ping, and the 256-byte / 64 KiB binary length forms.
    #[test]
    fn rfc_other_examples() {
        let (h, _) = parse_ok(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert!(!h.fin);
        assert_eq!(h.opcode, Opcode::Text);
        let (h, _) = parse_ok(&[0x80, 0x02, 0x6c, 0x6f]);
        assert!(h.fin);
        assert_eq!(h.opcode, Opcode::Continuation);
        let (h, _) = parse_ok(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(h.opcode, Opcode::Ping);
        let (h, n) = parse_ok(&[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!((h.payload_len, n), (256, 4));
        let (h, n) = parse_ok(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn partial_headers() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(
                parse_frame_header(&full[..cut]),
                Ok(Status::Partial),
                "cut {cut}"
            );
        }
        let (h, n) = parse_ok(&full);
        assert_eq!(n, 14);
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
    }

    #[test]
    fn header_errors() {
        for rsv in [0x40, 0x20, 0x10] {
            assert_eq!(
                parse_frame_header(&[0x81 | rsv]),
                Err(WsError::ReservedBits)
            );
        }
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                parse_frame_header(&[0x80 | op]),
                Err(WsError::ReservedOpcode(op))
            );
        }
        // Fragmented ping, known from the first byte alone.
        assert_eq!(parse_frame_header(&[0x09]), Err(WsError::FragmentedControl));
        assert_eq!(
            parse_frame_header(&[0x88, 126]),
            Err(WsError::ControlTooLong)
        );
        assert_eq!(
            parse_frame_header(&[0x8A, 127]),
            Err(WsError::ControlTooLong)
        );
        // 125 is fine.
        assert!(matches!(
            parse_frame_header(&[0x89, 125]),
            Ok(Status::Complete(_))
        ));
        // 64-bit length with the top bit set, known from its first byte.
        assert_eq!(
            parse_frame_header(&[0x82, 127, 0x80]),
            Err(WsError::LengthOverflow)
        );
        let max = [0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert_eq!(parse_ok(&max).0.payload_len, u64::MAX >> 1);
    }

    #[test]
    fn non_minimal_lengths_accepted() {
        let (h, n) = parse_ok(&[0x82, 126, 0, 5]);
        assert_eq!((h.payload_len, n), (5, 4));
        let (h, n) = parse_ok(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!((h.payload_len, n), (5, 10));
    }

    #[test]
    fn mask_offsets_compose() {
        let key = [0xA1, 0xB2, 0xC3, 0xD4];
        let orig: Vec<u8> = (0..50u8).collect();
        let mut whole = orig.clone();
        apply_mask(key, 0, &mut whole);
        for (i, (w, o)) in whole.iter().zip(&orig).enumerate() {
            assert_eq!(*w, o ^ key[i % 4]);
        }
        // Piecewise with offsets gives the same bytes.
        let mut pieces = orig.clone();
        let mut at = 0;
        for len in [1, 3, 7, 8, 9, 22] {
            apply_mask(key, at, &mut pieces[at..at + len]);
            at += len;
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    fn writers_pick_length_form_and_check_space() {
        assert_eq!(header_len(125, false), 2);
        assert_eq!(header_len(126, false), 4);
        assert_eq!(header_len(65535, true), 8);
        assert_eq!(header_len(65536, true), 14);
        assert_eq!(frame_len(usize::MAX, false), None);
        let payload = vec![7u8; 300];
        let mut out = vec![0u8; 400];
        let n = write_frame(&mut out, true, Opcode::Binary, None, &payload).unwrap();
        assert_eq!(n, 304);
        assert_eq!(&out[..4], &[0x82, 126, 0x01, 0x2C]);
        assert_eq!(
            write_frame(&mut out[..303], true, Opcode::Binary, None, &payload),
            Err(BufferFull)
        );
        assert_eq!(
            write_frame_header(&mut out[..1], true, Opcode::Ping, None, 0),
            Err(BufferFull)
        );
        let h = FrameHeader {
            fin: false,
            opcode: Opcode::Continuation,
            mask: Some([9, 9, 9, 9]),
            payload_len: 1 << 40,
        };
        let n = h.encode(&mut out).unwrap();
        assert_eq!(n, h.encoded_len());
        assert_eq!(parse_ok(&out[..n]), (h, 14));
    }

    fn opcode() -> impl Strategy<Value = Opcode> {
        prop_oneof![
            Just(Opcode::Continuation),
            Just(Opcode::Text),
            Just(Opcode::Binary),
            Just(Opcode::Close),
            Just(Opcode::Ping),
            Just(Opcode::Pong),
        ]
    }

    /// Payload sizes around each length-form boundary.
    fn payload_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..=125,
            126usize..=300,
            65530usize..=65545,
            65536usize..=70000
        ]
    }

    proptest! {
        #[test]
        fn write_parse_roundtrip(
            op in opcode(),
            fin in any::<bool>(),
            mask in proptest::option::of(any::<[u8; 4]>()),
            len in payload_len(),
            seed in any::<u8>(),
        ) {
            let (fin, len) = if op.is_control() { (true, len % 126) } else { (fin, len) };
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let mut out = vec![0u8; len + MAX_HEADER_LEN];
            let n = write_frame(&mut out, fin, op, mask, &payload).unwrap();
            prop_assert_eq!(Some(n), frame_len(len, mask.is_some()));
            let (h, hl) = parse_ok(&out[..n]);
            prop_assert_eq!(h, FrameHeader { fin, opcode: op, mask, payload_len: len as u64 });
            prop_assert_eq!(hl + len, n);
            let body = &mut out[hl..n];
            if let Some(k) = mask {
                apply_mask(k, 0, body);
            }
            prop_assert_eq!(&body[..], &payload[..]);
            // Any strict prefix of the header is Partial.
            for cut in 0..hl {
                prop_assert_eq!(parse_frame_header(&out[..cut]), Ok(Status::Partial));
            }
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(Status::Complete((h, n))) = parse_frame_header(&data) {
                prop_assert!((2..=MAX_HEADER_LEN).contains(&n));
                prop_assert!(n <= data.len());
                prop_assert!(h.payload_len < 1 << 63);
                if h.opcode.is_control() {
                    prop_assert!(h.fin && h.payload_len <= 125);
                }
            }
        }

        #[test]
        fn mask_is_involution_at_any_offset(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut d = data.clone();
            apply_mask(key, offset, &mut d);
            for (i, (m, o)) in d.iter().zip(&data).enumerate() {
                prop_assert_eq!(*m, o ^ key[(offset.wrapping_add(i)) % 4]);
            }
            apply_mask(key, offset, &mut d);
            prop_assert_eq!(d, data);
        }
    }
}
