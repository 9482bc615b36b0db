//! The message body: [`BodyDecoder`], a byte-at-a-time state machine for `Content-Length`,
//! `chunked` and until-close bodies, fed any split of its input.

use super::{BodyKind, HttpError, MAX_CHUNK_EXT, MAX_HEAD};
use core::ops::Range;

/// What one [`BodyDecoder::decode`] call found in its input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Decoded {
    /// How many input bytes were used (framing and data). Bytes after them belong to the next
    /// call, or, once `done`, to the next message.
    pub consumed: usize,
    /// Where body bytes are in the input (possibly empty). Always within `..consumed`.
    pub data: Range<usize>,
    /// The body is complete.
    pub done: bool,
}

impl Decoded {
    /// The body bytes of this step, borrowed from the same `input` given to `decode`.
    pub fn data_in<'b>(&self, input: &'b [u8]) -> &'b [u8] {
        input.get(self.data.clone()).unwrap_or(&[])
    }
}

/// The progress of [`BodyDecoder::decode_in_place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InPlace {
    /// The input bytes before this offset have been used.
    pub read: usize,
    /// The body bytes decoded so far end here (they start where the caller's first `write`
    /// was).
    pub write: usize,
    /// The body is complete; the next message starts at `read`.
    pub done: bool,
}

/// The incremental body decoder (`Content-Length`, chunked, or until close).
///
/// Feed it the bytes after the head with [`decode`](Self::decode), in pieces of any size;
/// each call reports one run of body bytes (a range of that call's input) and how much input
/// it used. The body limit counts body bytes only; framing overhead is bounded separately
/// ([`MAX_CHUNK_EXT`] per chunk line, [`MAX_HEAD`] for trailers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BodyDecoder {
    state: BodyState,
    max: u64,
    received: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum BodyState {
    Length { remaining: u64 },
    UntilClose,
    Chunk(ChunkState),
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum ChunkState {
    /// Hex digits of a chunk size.
    Size { size: u64, digits: u8 },
    /// Whitespace after the digits, before `;` or CR.
    SizeWs { size: u64 },
    /// A chunk extension up to CR.
    Ext { size: u64, len: u16 },
    /// The LF of the chunk-size line.
    SizeLf { size: u64 },
    /// Chunk data.
    Data { remaining: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line, or the final CRLF.
    TrailerStart { total: u16 },
    /// Inside a trailer line.
    TrailerLine { total: u16 },
    /// The LF of a trailer line.
    TrailerLf { total: u16 },
    /// The LF of the final CRLF.
    EndLf,
}

impl BodyDecoder {
    /// A decoder for a body of this kind, accepting at most `max_body` body bytes.
    ///
    /// A declared `Content-Length` over the limit fails here, before any body is read
    /// (→ 413, as raw-body does in the grape).
    pub fn new(kind: BodyKind, max_body: u64) -> Result<Self, HttpError> {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) if n > max_body => return Err(HttpError::BodyTooLarge),
            BodyKind::Length(n) => BodyState::Length { remaining: n },
            BodyKind::Chunked => BodyState::Chunk(ChunkState::Size { size: 0, digits: 0 }),
            BodyKind::UntilClose => BodyState::UntilClose,
        };
        Ok(BodyDecoder {
            state,
            max: max_body,
            received: 0,
        })
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Body bytes decoded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// For a `Content-Length` body, the bytes still expected (a hint for read sizes).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            BodyState::Length { remaining } => Some(remaining),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// Tells the decoder the connection ended: fine for an until-close body (which is then
    /// complete) or a finished one, [`HttpError::UnexpectedEof`] otherwise.
    pub fn finish(&mut self) -> Result<(), HttpError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::UntilClose => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(HttpError::UnexpectedEof),
        }
    }

    /// Decodes from `input`, stopping after the first run of body bytes, at the end of the
    /// body, or when the input is used up.
    ///
    /// Unless the body ends, every framing byte before the data run is consumed (the decoder
    /// keeps partial chunk-size lines in its state), so calling again with
    /// `&input[consumed..]` until it is empty makes progress. After an error the decoder
    /// should be dropped (the connection is unusable).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                BodyState::Done => return Ok(self.step(pos, pos..pos, true)),
                BodyState::Length { remaining } => {
                    let n = clamp(remaining, input.len().saturating_sub(pos));
                    let rest = remaining - n as u64;
                    self.received = self.received.saturating_add(n as u64);
                    if rest == 0 {
                        self.state = BodyState::Done;
                    } else {
                        self.state = BodyState::Length { remaining: rest };
                    }
                    return Ok(self.step(pos + n, pos..pos + n, rest == 0));
                }
                BodyState::UntilClose => {
                    let n = input.len().saturating_sub(pos);
                    let total = self.received.saturating_add(n as u64);
                    if total > self.max {
                        return Err(HttpError::BodyTooLarge);
                    }
                    self.received = total;
                    return Ok(self.step(pos + n, pos..pos + n, false));
                }
                BodyState::Chunk(ChunkState::Data { remaining }) => {
                    let n = clamp(remaining, input.len().saturating_sub(pos));
                    if n == 0 {
                        return Ok(self.step(pos, pos..pos, false));
                    }
                    let rest = remaining - n as u64;
                    self.received = self.received.saturating_add(n as u64);
                    self.state = BodyState::Chunk(if rest == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { remaining: rest }
                    });
                    return Ok(self.step(pos + n, pos..pos + n, false));
                }
                BodyState::Chunk(cs) => {
                    let Some(&b) = input.get(pos) else {
                        return Ok(self.step(pos, pos..pos, false));
                    };
                    pos += 1;
                    self.state = self.chunk_byte(cs, b)?;
                }
            }
        }
    }

    fn step(&self, consumed: usize, data: Range<usize>, done: bool) -> Decoded {
        Decoded {
            consumed,
            data,
            done,
        }
    }

    /// One framing byte of a chunked body.
    fn chunk_byte(&self, cs: ChunkState, b: u8) -> Result<BodyState, HttpError> {
        use ChunkState::*;
        let next = match cs {
            Size { size, digits } => match hex_digit(b) {
                Some(d) => {
                    // 16 hex digits fill a u64, so the shift below cannot lose bits.
                    if digits >= 16 {
                        return Err(HttpError::InvalidChunkSize);
                    }
                    let size = (size << 4) | u64::from(d);
                    if size > self.max.saturating_sub(self.received) {
                        return Err(HttpError::BodyTooLarge);
                    }
                    Size {
                        size,
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => return Err(HttpError::InvalidChunkSize),
                None => after_size(size, b)?,
            },
            SizeWs { size } => after_size(size, b)?,
            Ext { size, len } => match b {
                b'\r' => SizeLf { size },
                b'\n' => return Err(HttpError::InvalidChunkSize),
                _ if usize::from(len) >= MAX_CHUNK_EXT => return Err(HttpError::InvalidChunkSize),
                _ => Ext { size, len: len + 1 },
            },
            SizeLf { size } => match b {
                b'\n' if size == 0 => TrailerStart { total: 0 },
                b'\n' => Data { remaining: size },
                _ => return Err(HttpError::InvalidChunkSize),
            },
            // Data is handled by `decode` in runs; reaching here means an empty run.
            Data { remaining } => Data { remaining },
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(HttpError::InvalidChunk),
            },
            DataLf => match b {
                b'\n' => Size { size: 0, digits: 0 },
                _ => return Err(HttpError::InvalidChunk),
            },
            TrailerStart { total } => match b {
                b'\r' => EndLf,
                _ => trailer_byte(total, b)?,
            },
            TrailerLine { total } => match b {
                b'\r' => TrailerLf {
                    total: total.saturating_add(1),
                },
                _ => trailer_byte(total, b)?,
            },
            TrailerLf { total } => match b {
                b'\n' => TrailerStart {
                    total: total.saturating_add(1),
                },
                _ => return Err(HttpError::InvalidChunk),
            },
            EndLf => match b {
                b'\n' => return Ok(BodyState::Done),
                _ => return Err(HttpError::InvalidChunk),
            },
        };
        Ok(BodyState::Chunk(next))
    }

    /// Decodes `buf[read..end]` and moves the body bytes down to start at `buf[write..]`,
    /// squeezing out chunk framing so the body ends up contiguous in the caller's buffer.
    ///
    /// Call it again with the returned `read`/`write` after more bytes arrive at `buf[end..]`.
    /// Needs `write <= read <= end <= buf.len()` (the first `write` is where the body should
    /// start, e.g. the head length); if not, it stops without touching the buffer.
    pub fn decode_in_place(
        &mut self,
        buf: &mut [u8],
        mut read: usize,
        mut write: usize,
        end: usize,
    ) -> Result<InPlace, HttpError> {
        let mut done = self.is_done();
        while !done && write <= read {
            let Some(input) = buf.get(read..end) else {
                break;
            };
            if input.is_empty() {
                break;
            }
            let d = self.decode(input)?;
            let len = d.data.len();
            let (Some(src_start), Some(src_end), Some(dst_end)) = (
                read.checked_add(d.data.start),
                read.checked_add(d.data.end),
                write.checked_add(len),
            ) else {
                break;
            };
            if len > 0 {
                if src_end > buf.len() || dst_end > buf.len() {
                    break;
                }
                buf.copy_within(src_start..src_end, write);
                write = dst_end;
            }
            read = read.saturating_add(d.consumed);
            done = d.done;
            if d.consumed == 0 {
                break;
            }
        }
        Ok(InPlace { read, write, done })
    }
}

fn clamp(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte after a chunk size's digits (or after whitespace there).
fn after_size(size: u64, b: u8) -> Result<ChunkState, HttpError> {
    Ok(match b {
        b';' => ChunkState::Ext { size, len: 0 },
        b' ' | b'\t' => ChunkState::SizeWs { size },
        b'\r' => ChunkState::SizeLf { size },
        _ => return Err(HttpError::InvalidChunkSize),
    })
}

/// One byte of a trailer line (not CR). Trailer bytes, line ends included, are counted
/// against [`MAX_HEAD`] (the counter cannot pass `MAX_HEAD + 2`, far below `u16::MAX`).
fn trailer_byte(total: u16, b: u8) -> Result<ChunkState, HttpError> {
    if b == b'\n' {
        return Err(HttpError::InvalidChunk);
    }
    if usize::from(total) >= MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    Ok(ChunkState::TrailerLine { total: total + 1 })
}

#[cfg(test)]
mod tests;
