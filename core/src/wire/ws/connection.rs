//! [`WsConnection`]: the server end of one WebSocket connection after the handshake, fed bytes
//! as they arrive.
//!
//! The connection owns no socket. The adapter:
//! 1. reads bytes into its buffer and calls [`WsConnection::feed`] on the unread part until it
//!    is used up, handling each [`Event`] it returns;
//! 2. after each read (and after [`WsConnection::close`]) drains
//!    [`WsConnection::poll_transmit`] into the socket: pongs, the close frame;
//! 3. writes its own messages as unmasked frames ([`super::write_frame_header`]) while
//!    [`WsConnection::can_send`];
//! 4. closes the TCP stream once [`WsConnection::is_closed`] (the server closes first,
//!    RFC 6455 §7.1.1).
//!
//! Only the server side is here: Grenache's WebSocket clients are the tokio adapter's, on
//! `tokio-tungstenite`; a board only serves.
//!
//! Zero copy where it can: a whole unfragmented data frame found in one `feed` input is
//! unmasked in place and returned as a slice of that input. Anything else (a frame split over
//! reads, a fragmented message) is copied, unmasked, into the inline `MAX_MESSAGE` buffer.
//!
//! Bounds, all fixed: a data message (one frame or all fragments together) is at most
//! `MAX_MESSAGE` bytes, checked from each frame header before its payload is read (larger →
//! close 1009); a control payload is at most 125 bytes (inline); a header at most 14 bytes
//! (inline). `feed` does work linear in its input and returns at most one event per call.
//! Size of the value: `MAX_MESSAGE` plus under 480 bytes (on a 64-bit host; less on a board).

use core::fmt;

use heapless::{LenType, Vec};

use super::frame::{
    apply_mask, parse_frame_header, write_frame, FrameHeader, Opcode, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_LEN,
};
use super::{Status, WsError};
use crate::wire::BufferFull;

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MessageKind {
    /// UTF-8 text (what Grenache sends: JSON).
    Text,
    /// Arbitrary bytes (Grenache peers accept JSON in binary frames too).
    Binary,
}

/// Something the peer sent. Borrowed from the connection or from the input given to
/// [`WsConnection::feed`], so it lives until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// A complete text message, validated as UTF-8.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A ping. The pong is already queued for [`WsConnection::poll_transmit`] (unless we are
    /// closing); if several pings arrive before it is sent, only the last is answered, as
    /// RFC 6455 §5.5.3 allows.
    Ping(&'a [u8]),
    /// A pong (an answer to our ping, or an unsolicited heartbeat).
    Pong(&'a [u8]),
    /// The peer's close frame. If we had not sent one, the echo (same code, no reason) is
    /// queued. No further event follows.
    Close {
        /// The status code, if the frame had one.
        code: Option<u16>,
        /// The UTF-8 reason (often empty).
        reason: &'a str,
    },
}

/// Why we could not write a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// The output buffer is too small; nothing was consumed, try again with a bigger one.
    BufferFull,
    /// A close frame was queued or sent, or the connection failed: no more data may be sent.
    Closing,
    /// A ping payload over 125 bytes, or a close reason over 123 bytes.
    ControlTooLong,
    /// A close code that may not be sent (see [`is_valid_close_code`]).
    InvalidCloseCode,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::BufferFull => "ws: output buffer too small",
            SendError::Closing => "ws: connection is closing",
            SendError::ControlTooLong => "ws: control payload too long",
            SendError::InvalidCloseCode => "ws: invalid close code",
        })
    }
}

impl core::error::Error for SendError {}

impl From<BufferFull> for SendError {
    fn from(_: BufferFull) -> Self {
        SendError::BufferFull
    }
}

/// Whether a close status code may appear on the wire: 1000-1003, 1007-1014 and 3000-4999.
///
/// 1004 is reserved and 1005/1006/1015 are only for reporting locally (RFC 6455 §7.4). This is
/// the set Node's `ws` 7 accepts, so anything we send, it takes.
pub const fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The longest close reason: a control payload minus the 2-byte code.
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// A close frame waiting for [`WsConnection::poll_transmit`].
#[derive(Clone, Copy, Debug)]
struct PendingClose {
    /// `None`: an empty close frame (echoing a peer's empty close). With a code, the frame
    /// carries `WsConnection::close_reason` after it.
    code: Option<u16>,
}

/// The reason of a received close payload: the bytes after the 2-byte code (none without one).
fn close_reason(payload: &[u8]) -> &[u8] {
    match payload {
        [_, _, reason @ ..] => reason,
        _ => &[],
    }
}

/// Appends `src` to `buf` and returns the bytes appended; `None` (and `buf` unchanged) if they
/// do not fit.
fn append<'b, const N: usize, L: LenType>(
    buf: &'b mut Vec<u8, N, L>,
    src: &[u8],
) -> Option<&'b mut [u8]> {
    let at = buf.len();
    buf.extend_from_slice(src).ok()?;
    buf.get_mut(at..)
}

/// The server end of a WebSocket connection after the opening handshake.
///
/// `MAX_MESSAGE` is the largest data message accepted, reassembled in an inline buffer of that
/// many bytes (Node's `ws` allows 100 MiB; choose what the application needs, e.g. 64 KiB on a
/// host or 2 KiB on a board; a large value belongs in a `Box` or a `static`).
///
/// Violations by the peer (see [`WsError`]) fail the connection: `feed` returns the error,
/// a close frame with [`WsError::close_code`] (1002, 1007 or 1009) is queued, and the rest of
/// the input is ignored.
pub struct WsConnection<const MAX_MESSAGE: usize> {
    /// Header bytes received so far, when a header is split over `feed` calls.
    hdr: Vec<u8, MAX_HEADER_LEN, u8>,
    /// The frame whose payload is being received, and how much of it has arrived.
    frame: Option<FrameHeader>,
    frame_got: usize,
    /// The data message being reassembled: `Some` from its first frame until its last.
    msg_kind: Option<MessageKind>,
    msg: Vec<u8, MAX_MESSAGE>,
    /// `msg[..utf8_ok]` is known to be valid UTF-8 (text messages are checked as they arrive,
    /// so bad text fails before the whole message is in).
    utf8_ok: usize,
    /// The payload of the control frame being received (or last received).
    ctrl: Vec<u8, MAX_CONTROL_PAYLOAD, u8>,
    /// The pong to send, if `pong_pending`.
    pong: Vec<u8, MAX_CONTROL_PAYLOAD, u8>,
    pong_pending: bool,
    close_out: Option<PendingClose>,
    /// The reason sent with `close_out`'s code. Kept beside it, not in it: a board's
    /// `Option<PendingClose>` stays a few bytes to write.
    close_reason: Vec<u8, MAX_CLOSE_REASON, u8>,
    close_sent: bool,
    close_received: bool,
    failed: Option<WsError>,
}

impl<const MAX_MESSAGE: usize> fmt::Debug for WsConnection<MAX_MESSAGE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnection")
            .field("frame", &self.frame)
            .field("msg_kind", &self.msg_kind)
            .field("msg_len", &self.msg.len())
            .field("close_sent", &self.close_sent)
            .field("close_received", &self.close_received)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// How many header bytes are needed, judging from the ones in `hdr` (2 until the length byte
/// is known). Agrees with [`parse_frame_header`].
fn header_needed(hdr: &[u8]) -> usize {
    match hdr.get(1) {
        None => 2,
        Some(&b1) => {
            let ext = match b1 & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
        }
    }
}

impl<const MAX_MESSAGE: usize> Default for WsConnection<MAX_MESSAGE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const MAX_MESSAGE: usize> WsConnection<MAX_MESSAGE> {
    /// A connection in the open state, right after the 101.
    pub const fn new() -> Self {
        WsConnection {
            hdr: Vec::new(),
            frame: None,
            frame_got: 0,
            msg_kind: None,
            msg: Vec::new(),
            utf8_ok: 0,
            ctrl: Vec::new(),
            pong: Vec::new(),
            pong_pending: false,
            close_out: None,
            close_reason: Vec::new(),
            close_sent: false,
            close_received: false,
            failed: None,
        }
    }

    /// The protocol error that failed the connection, if any.
    pub const fn failure(&self) -> Option<WsError> {
        self.failed
    }

    /// Whether data may still be sent: no close frame queued or sent, and not failed.
    pub const fn can_send(&self) -> bool {
        self.close_out.is_none() && !self.close_sent && self.failed.is_none()
    }

    /// Whether the peer's close frame has arrived.
    pub const fn close_received(&self) -> bool {
        self.close_received
    }

    /// Whether the connection is over: our close frame went out (through
    /// [`poll_transmit`](Self::poll_transmit)) and the peer's arrived, or we failed it. The
    /// adapter then closes the TCP stream.
    pub const fn is_closed(&self) -> bool {
        self.close_sent && (self.close_received || self.failed.is_some())
    }

    /// Records a protocol error: queue a close with its code, drop any pong, ignore the rest.
    fn fail(&mut self, e: WsError) -> WsError {
        self.failed = Some(e);
        self.pong_pending = false;
        self.frame = None;
        if !self.close_sent {
            self.close_reason.clear();
            self.close_out = Some(PendingClose {
                code: Some(e.close_code()),
            });
        }
        e
    }

    /// Checks a new frame header (masked, as every client frame must be: RFC 6455 §5.1)
    /// against the message in progress and, for data frames, against `MAX_MESSAGE`. On
    /// success a text/binary frame has started a message.
    fn start_frame(&mut self, h: &FrameHeader) -> Result<(), WsError> {
        if h.mask.is_none() {
            return Err(WsError::UnmaskedFrame);
        }
        let kind = match h.opcode {
            Opcode::Text => MessageKind::Text,
            Opcode::Binary => MessageKind::Binary,
            Opcode::Continuation => {
                if self.msg_kind.is_none() {
                    return Err(WsError::UnexpectedContinuation);
                }
                let room = MAX_MESSAGE.saturating_sub(self.msg.len());
                if h.payload_len > room as u64 {
                    return Err(WsError::MessageTooBig);
                }
                return Ok(());
            }
            // Control frames were bounded to 125 bytes by the parser.
            Opcode::Close | Opcode::Ping | Opcode::Pong => return Ok(()),
        };
        if self.msg_kind.is_some() {
            return Err(WsError::ExpectedContinuation);
        }
        if h.payload_len > MAX_MESSAGE as u64 {
            return Err(WsError::MessageTooBig);
        }
        self.msg_kind = Some(kind);
        self.msg.clear();
        self.utf8_ok = 0;
        Ok(())
    }

    /// Feeds bytes read from the peer; returns how many were consumed and the event they
    /// completed, if any.
    ///
    /// At most one event per call: when one is returned, `consumed` may be less than
    /// `input.len()`, and the caller feeds the rest (after it is done with the event) in the
    /// next call. Without an event, all of `input` was consumed; partial frames are kept inside.
    /// `input` is mutable because a frame that lies whole in it is unmasked in place and
    /// returned as a slice of it.
    ///
    /// After the peer's close, or after an error, input is consumed and ignored.
    ///
    /// # Errors
    /// A [`WsError`] fails the connection; the close frame to send is queued.
    pub fn feed<'a>(
        &'a mut self,
        input: &'a mut [u8],
    ) -> Result<(usize, Option<Event<'a>>), WsError> {
        if self.failed.is_some() || self.close_received {
            return Ok((input.len(), None));
        }
        let mut pos = 0usize;
        loop {
            let Some(h) = self.frame else {
                // Reading a header.
                let rest = input.get(pos..).unwrap_or(&[]);
                if rest.is_empty() {
                    return Ok((pos, None));
                }
                let need = header_needed(&self.hdr);
                let take = need.saturating_sub(self.hdr.len()).min(rest.len());
                let Some(src) = rest.get(..take) else {
                    return Ok((pos, None));
                };
                if self.hdr.extend_from_slice(src).is_err() {
                    return Ok((pos, None));
                }
                pos += take;
                let parsed = parse_frame_header(&self.hdr);
                let h = match parsed {
                    Err(e) => return Err(self.fail(e)),
                    // `header_needed` asked for too little only if it disagreed with the
                    // parser; stop rather than spin.
                    Ok(Status::Partial) if take == 0 => return Ok((pos, None)),
                    Ok(Status::Partial) => continue,
                    Ok(Status::Complete((h, _))) => h,
                };
                self.hdr.clear();
                if let Err(e) = self.start_frame(&h) {
                    return Err(self.fail(e));
                }
                // Fast path: a whole single-frame message in this input, unmasked in place.
                let len = h.payload_len as usize; // ≤ MAX_MESSAGE for data frames (checked).
                let whole_single = h.fin
                    && matches!(h.opcode, Opcode::Text | Opcode::Binary)
                    && input.len().saturating_sub(pos) as u64 >= h.payload_len;
                if whole_single {
                    let end = pos.saturating_add(len);
                    let kind = self.msg_kind.take();
                    let Some(data) = input.get_mut(pos..end) else {
                        return Err(self.fail(WsError::MessageTooBig));
                    };
                    if let Some(key) = h.mask {
                        apply_mask(key, 0, data);
                    }
                    let data: &'a [u8] = data;
                    return match kind {
                        Some(MessageKind::Text) => match core::str::from_utf8(data) {
                            Ok(s) => Ok((end, Some(Event::Text(s)))),
                            Err(_) => Err(self.fail(WsError::InvalidUtf8)),
                        },
                        _ => Ok((end, Some(Event::Binary(data)))),
                    };
                }
                self.frame = Some(h);
                self.frame_got = 0;
                if h.opcode.is_control() {
                    self.ctrl.clear();
                }
                continue;
            };

            // Reading a payload (possibly empty): copy and unmask what is here.
            let len = h.payload_len as usize; // Bounded by start_frame / the parser.
            let rest = input.get(pos..).unwrap_or(&[]);
            let take = len.saturating_sub(self.frame_got).min(rest.len());
            let src = rest.get(..take).unwrap_or(&[]);
            let dst = if h.opcode.is_control() {
                append(&mut self.ctrl, src)
            } else {
                append(&mut self.msg, src)
            };
            let Some(dst) = dst else {
                return Err(self.fail(WsError::MessageTooBig));
            };
            if let Some(key) = h.mask {
                apply_mask(key, self.frame_got, dst);
            }
            pos += take;
            self.frame_got += take;
            if !h.opcode.is_control() && self.msg_kind == Some(MessageKind::Text) {
                self.check_utf8_prefix()?;
            }
            if self.frame_got < len {
                return Ok((pos, None));
            }
            self.frame = None;

            match h.opcode {
                Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                    if !h.fin {
                        continue;
                    }
                    let kind = self.msg_kind.take();
                    if kind == Some(MessageKind::Text) {
                        if self.utf8_ok != self.msg.len() {
                            // Ends inside a multi-byte sequence.
                            return Err(self.fail(WsError::InvalidUtf8));
                        }
                        // Already validated piece by piece; the fallback is unreachable.
                        let text = core::str::from_utf8(&self.msg).unwrap_or_default();
                        return Ok((pos, Some(Event::Text(text))));
                    }
                    return Ok((pos, Some(Event::Binary(&self.msg))));
                }
                Opcode::Ping => {
                    if self.can_send() {
                        self.pong.clone_from(&self.ctrl);
                        self.pong_pending = true;
                    }
                    return Ok((pos, Some(Event::Ping(&self.ctrl))));
                }
                Opcode::Pong => {
                    return Ok((pos, Some(Event::Pong(&self.ctrl))));
                }
                Opcode::Close => {
                    let code = match self.ctrl.as_slice() {
                        [] => None,
                        [_] => return Err(self.fail(WsError::InvalidClosePayload)),
                        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                    };
                    if code.is_some_and(|c| !is_valid_close_code(c)) {
                        return Err(self.fail(WsError::InvalidClosePayload));
                    }
                    if core::str::from_utf8(close_reason(&self.ctrl)).is_err() {
                        return Err(self.fail(WsError::InvalidUtf8));
                    }
                    self.close_received = true;
                    if self.close_out.is_none() && !self.close_sent {
                        self.close_reason.clear();
                        self.close_out = Some(PendingClose { code });
                    }
                    // Validated above; the fallback is unreachable.
                    let reason = core::str::from_utf8(close_reason(&self.ctrl)).unwrap_or_default();
                    return Ok((pos, Some(Event::Close { code, reason })));
                }
            }
        }
    }

    /// Validates the text received since the last check, allowing a multi-byte sequence to be
    /// cut at the end (its rest may come in the next piece).
    fn check_utf8_prefix(&mut self) -> Result<(), WsError> {
        // `utf8_ok <= msg.len()`: it only advances over bytes of `msg`.
        let Some(fresh) = self.msg.get(self.utf8_ok..) else {
            return Err(self.fail(WsError::InvalidUtf8));
        };
        match core::str::from_utf8(fresh) {
            Ok(_) => self.utf8_ok = self.msg.len(),
            Err(e) if e.error_len().is_none() => self.utf8_ok += e.valid_up_to(),
            Err(_) => return Err(self.fail(WsError::InvalidUtf8)),
        }
        Ok(())
    }

    /// Writes the next queued control frame (a pong, then the close) into `out` and returns its
    /// length, or `None` when nothing is queued. An `out` of [`super::MAX_CONTROL_FRAME_LEN`] (131)
    /// bytes is always enough. Call it until it returns `None`.
    ///
    /// # Errors
    /// [`SendError::BufferFull`] if `out` is too small; the frame stays queued.
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Result<Option<usize>, SendError> {
        if self.close_sent {
            return Ok(None);
        }
        if self.pong_pending {
            let n = write_frame(out, true, Opcode::Pong, None, &self.pong)?;
            self.pong_pending = false;
            return Ok(Some(n));
        }
        if let Some(close) = self.close_out {
            let mut payload: Vec<u8, MAX_CONTROL_PAYLOAD, u8> = Vec::new();
            if let Some(code) = close.code {
                // 2 bytes and a reason of at most 123: always fits.
                let _ = payload.extend_from_slice(&code.to_be_bytes());
                let _ = payload.extend_from_slice(&self.close_reason);
            }
            let n = write_frame(out, true, Opcode::Close, None, &payload)?;
            self.close_out = None;
            self.close_sent = true;
            return Ok(Some(n));
        }
        Ok(None)
    }

    /// Starts the close handshake: queues a close frame with `code` and `reason` (at most 123
    /// bytes) for [`poll_transmit`](Self::poll_transmit). Incoming messages are still
    /// delivered until the peer's close arrives; nothing more may be sent.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`], [`SendError::ControlTooLong`], or
    /// [`SendError::Closing`] if a close is already queued or sent or the connection failed.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), SendError> {
        if !is_valid_close_code(code) {
            return Err(SendError::InvalidCloseCode);
        }
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SendError::ControlTooLong);
        }
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        self.close_reason.clear();
        // Cannot fail: the length was checked above.
        let _ = self.close_reason.extend_from_slice(reason.as_bytes());
        self.pong_pending = false;
        self.close_out = Some(PendingClose { code: Some(code) });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ws::frame::MAX_CONTROL_FRAME_LEN;
    use proptest::prelude::*;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;

    /// An owned copy of an [`Event`], so tests can collect them.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ev {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, String),
    }

    impl From<Event<'_>> for Ev {
        fn from(e: Event<'_>) -> Self {
            match e {
                Event::Text(s) => Ev::Text(s.into()),
                Event::Binary(b) => Ev::Binary(b.to_vec()),
                Event::Ping(b) => Ev::Ping(b.to_vec()),
                Event::Pong(b) => Ev::Pong(b.to_vec()),
                Event::Close { code, reason } => Ev::Close(code, reason.into()),
            }
        }
    }

    /// Feeds `bytes` in pieces of `chunk` bytes, collecting events until an error.
    fn feed_chunks<const N: usize>(
        c: &mut WsConnection<N>,
        bytes: &[u8],
        chunk: usize,
    ) -> (Vec<Ev>, Option<WsError>) {
        let mut events = Vec::new();
        let mut data = bytes.to_vec();
        for piece in data.chunks_mut(chunk.max(1)) {
            let mut at = 0;
            let total = piece.len();
            loop {
                match c.feed(&mut piece[at..]) {
                    Ok((n, ev)) => {
                        assert!(at + n <= total);
                        at += n;
                        match ev {
                            Some(e) => events.push(e.into()),
                            None => {
                                assert_eq!(at, total, "no event means all consumed");
                                break;
                            }
                        }
                    }
                    Err(e) => return (events, Some(e)),
                }
            }
        }
        (events, None)
    }

    fn feed_all<const N: usize>(
        c: &mut WsConnection<N>,
        bytes: &[u8],
    ) -> (Vec<Ev>, Option<WsError>) {
        feed_chunks(c, bytes, bytes.len())
    }

    /// Drains `poll_transmit` and returns the frames it wrote.
    fn drain<const N: usize>(c: &mut WsConnection<N>) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut out = [0u8; MAX_CONTROL_FRAME_LEN];
        while let Some(n) = c.poll_transmit(&mut out).unwrap() {
            frames.push(out[..n].to_vec());
        }
        frames
    }

    /// A masked client frame.
    fn cf(fin: bool, op: Opcode, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 14];
        let n = write_frame(&mut out, fin, op, Some(key), payload).unwrap();
        out.truncate(n);
        out
    }

    /// An unmasked server frame.
    fn sf(fin: bool, op: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; payload.len() + 14];
        let n = write_frame(&mut out, fin, op, None, payload).unwrap();
        out.truncate(n);
        out
    }

    const K: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn server() -> WsConnection<256> {
        WsConnection::new()
    }

    /// The close frame a server sends for `code`.
    fn close_frame(code: u16) -> Vec<u8> {
        sf(true, Opcode::Close, &code.to_be_bytes())
    }

    fn expect_fail(bytes: &[u8], err: WsError) {
        let mut c = server();
        let (_, e) = feed_all(&mut c, bytes);
        assert_eq!(e, Some(err));
        assert_eq!(c.failure(), Some(err));
        assert!(!c.can_send());
        assert_eq!(drain(&mut c), vec![close_frame(err.close_code())]);
        assert!(c.is_closed());
        // Everything afterwards is ignored.
        let mut more = cf(true, Opcode::Text, b"x", K);
        let len = more.len();
        assert_eq!(c.feed(&mut more), Ok((len, None)));
    }

    #[test]
    fn rfc_masked_hello_at_server() {
        let mut c = server();
        let mut frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (n, ev) = c.feed(&mut frame).unwrap();
        assert_eq!(n, 11);
        assert_eq!(ev, Some(Event::Text("Hello")));
        // Unmasked in place: the payload now reads "Hello" in the caller's buffer.
        assert_eq!(&frame[6..], b"Hello");
    }

    #[test]
    fn several_frames_in_one_input() {
        let mut bytes = cf(true, Opcode::Text, b"one", K);
        bytes.extend(cf(true, Opcode::Binary, &[0, 255], K));
        bytes.extend(cf(true, Opcode::Text, b"", K));
        let (ev, e) = feed_all(&mut server(), &bytes);
        assert_eq!(e, None);
        assert_eq!(
            ev,
            vec![
                Ev::Text("one".into()),
                Ev::Binary(vec![0, 255]),
                Ev::Text(String::new())
            ]
        );
    }

    #[test]
    fn fragmented_message_with_interleaved_control() {
        // RFC 6455 §5.4: control frames may come between fragments.
        let mut bytes = cf(false, Opcode::Text, b"Hel", K);
        bytes.extend(cf(true, Opcode::Ping, b"p1", [1, 2, 3, 4]));
        bytes.extend(cf(false, Opcode::Continuation, b"lo, ", K));
        bytes.extend(cf(true, Opcode::Pong, b"", K));
        bytes.extend(cf(
            true,
            Opcode::Continuation,
            "wörld".as_bytes(),
            [9, 8, 7, 6],
        ));
        for chunk in [1, 2, 3, 5, 1000] {
            let mut c = server();
            let (ev, e) = feed_chunks(&mut c, &bytes, chunk);
            assert_eq!(e, None);
            assert_eq!(
                ev,
                vec![
                    Ev::Ping(b"p1".to_vec()),
                    Ev::Pong(vec![]),
                    Ev::Text("Hello, wörld".into())
                ],
                "chunk {chunk}"
            );
            assert_eq!(drain(&mut c), vec![sf(true, Opcode::Pong, b"p1")]);
        }
    }

    #[test]
    fn fragmented_binary_and_empty_fragments() {
        let mut bytes = cf(false, Opcode::Binary, b"", K);
        bytes.extend(cf(false, Opcode::Continuation, &[1, 2], K));
        bytes.extend(cf(false, Opcode::Continuation, b"", K));
        bytes.extend(cf(true, Opcode::Continuation, &[3], K));
        let (ev, e) = feed_all(&mut server(), &bytes);
        assert_eq!((ev, e), (vec![Ev::Binary(vec![1, 2, 3])], None));
    }

    #[test]
    fn ping_gets_pong_and_last_ping_wins() {
        let mut c = server();
        let mut bytes = cf(true, Opcode::Ping, b"pingdata", K);
        let (ev, _) = feed_all(&mut c, &bytes);
        assert_eq!(ev, vec![Ev::Ping(b"pingdata".to_vec())]);
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Pong, b"pingdata")]);
        bytes = cf(true, Opcode::Ping, b"a", K);
        bytes.extend(cf(true, Opcode::Ping, b"b", K));
        feed_all(&mut c, &bytes);
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Pong, b"b")]);
        // A 125-byte ping is answered in full.
        let big = [0xAB; 125];
        feed_all(&mut c, &cf(true, Opcode::Ping, &big, K));
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Pong, &big)]);
    }

    #[test]
    fn peer_initiated_close_is_echoed() {
        let mut c = server();
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let (ev, e) = feed_all(&mut c, &cf(true, Opcode::Close, &payload, K));
        assert_eq!((ev, e), (vec![Ev::Close(Some(1000), "bye".into())], None));
        assert!(c.close_received());
        assert!(!c.is_closed());
        assert!(!c.can_send());
        assert_eq!(drain(&mut c), vec![close_frame(1000)]);
        assert!(c.is_closed());
        // Frames after the close are ignored.
        let mut more = cf(true, Opcode::Text, b"late", K);
        let len = more.len();
        assert_eq!(c.feed(&mut more), Ok((len, None)));
    }

    #[test]
    fn empty_close_echoed_empty() {
        // What `socket.close()` in Node sends.
        let mut c = server();
        let (ev, _) = feed_all(&mut c, &cf(true, Opcode::Close, b"", K));
        assert_eq!(ev, vec![Ev::Close(None, String::new())]);
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Close, b"")]);
        assert!(c.is_closed());
    }

    #[test]
    fn pending_pong_goes_before_close_echo() {
        let mut c = server();
        let mut bytes = cf(true, Opcode::Ping, b"p", K);
        bytes.extend(cf(true, Opcode::Close, &1001u16.to_be_bytes(), K));
        feed_all(&mut c, &bytes);
        assert_eq!(
            drain(&mut c),
            vec![sf(true, Opcode::Pong, b"p"), close_frame(1001)]
        );
    }

    #[test]
    fn locally_initiated_close() {
        let mut c = server();
        assert_eq!(c.close(1004, ""), Err(SendError::InvalidCloseCode));
        assert_eq!(
            c.close(1000, &"x".repeat(124)),
            Err(SendError::ControlTooLong)
        );
        c.close(1000, "done").unwrap();
        assert_eq!(c.close(1000, ""), Err(SendError::Closing));
        assert!(!c.can_send());
        let mut expected = 1000u16.to_be_bytes().to_vec();
        expected.extend_from_slice(b"done");
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Close, &expected)]);
        assert!(!c.is_closed(), "waiting for the peer's close");
        // Messages still arrive while closing; pings are no longer answered.
        let mut bytes = cf(true, Opcode::Text, b"in flight", K);
        bytes.extend(cf(true, Opcode::Ping, b"p", K));
        bytes.extend(cf(true, Opcode::Close, &1000u16.to_be_bytes(), K));
        let (ev, e) = feed_all(&mut c, &bytes);
        assert_eq!(e, None);
        assert_eq!(
            ev,
            vec![
                Ev::Text("in flight".into()),
                Ev::Ping(b"p".to_vec()),
                Ev::Close(Some(1000), String::new())
            ]
        );
        assert!(drain(&mut c).is_empty(), "no pong, no second close");
        assert!(c.is_closed());
        assert_eq!(c.close(1000, ""), Err(SendError::Closing));
    }

    #[test]
    fn poll_transmit_buffer_too_small_keeps_frame() {
        let mut c = server();
        feed_all(&mut c, &cf(true, Opcode::Ping, b"12345", K));
        let mut small = [0u8; 6];
        assert_eq!(c.poll_transmit(&mut small), Err(SendError::BufferFull));
        assert_eq!(drain(&mut c), vec![sf(true, Opcode::Pong, b"12345")]);
    }

    #[test]
    fn protocol_errors_close_with_1002() {
        expect_fail(&sf(true, Opcode::Text, b"hi"), WsError::UnmaskedFrame);
        expect_fail(&[0xC1, 0x80, 0, 0, 0, 0], WsError::ReservedBits);
        expect_fail(&[0x83, 0x80, 0, 0, 0, 0], WsError::ReservedOpcode(3));
        expect_fail(
            &cf(true, Opcode::Continuation, b"x", K),
            WsError::UnexpectedContinuation,
        );
        let mut two = cf(false, Opcode::Text, b"a", K);
        two.extend(cf(true, Opcode::Text, b"b", K));
        expect_fail(&two, WsError::ExpectedContinuation);
        expect_fail(&cf(false, Opcode::Ping, b"", K), WsError::FragmentedControl);
        expect_fail(&[0x89, 0xFE, 0, 126, 0, 0, 0, 0], WsError::ControlTooLong);
        expect_fail(
            &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
            WsError::LengthOverflow,
        );
        expect_fail(
            &cf(true, Opcode::Close, &[3], K),
            WsError::InvalidClosePayload,
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            expect_fail(
                &cf(true, Opcode::Close, &code.to_be_bytes(), K),
                WsError::InvalidClosePayload,
            );
        }
    }

    #[test]
    fn invalid_utf8_closes_with_1007() {
        expect_fail(
            &cf(true, Opcode::Text, &[b'a', 0xFF], K),
            WsError::InvalidUtf8,
        );
        // Truncated sequence at the end of the message.
        expect_fail(
            &cf(true, Opcode::Text, &[0xE2, 0x82], K),
            WsError::InvalidUtf8,
        );
        let mut frag = cf(false, Opcode::Text, b"ok", K);
        frag.extend(cf(true, Opcode::Continuation, &[0xC0, 0x80], K));
        expect_fail(&frag, WsError::InvalidUtf8);
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.push(0xFF);
        expect_fail(&cf(true, Opcode::Close, &reason, K), WsError::InvalidUtf8);
        // Binary messages are not checked.
        let (ev, e) = feed_all(&mut server(), &cf(true, Opcode::Binary, &[0xFF], K));
        assert_eq!((ev, e), (vec![Ev::Binary(vec![0xFF])], None));
    }

    #[test]
    fn utf8_split_across_fragments_is_fine() {
        let euro = "€".as_bytes(); // 3 bytes
        let mut bytes = cf(false, Opcode::Text, &euro[..1], K);
        bytes.extend(cf(false, Opcode::Continuation, &euro[1..2], K));
        bytes.extend(cf(true, Opcode::Continuation, &euro[2..], K));
        let (ev, e) = feed_chunks(&mut server(), &bytes, 1);
        assert_eq!((ev, e), (vec![Ev::Text("€".into())], None));
    }

    #[test]
    fn invalid_utf8_fails_before_the_message_ends() {
        let mut c = server();
        let head = cf(false, Opcode::Text, &[0xFF], K);
        let (_, e) = feed_all(&mut c, &head);
        assert_eq!(e, Some(WsError::InvalidUtf8));
    }

    #[test]
    fn oversize_message_closes_with_1009() {
        // Exactly MAX_MESSAGE is fine, one more byte is not, whole or fragmented, and the
        // check happens on the header, before any payload.
        let mut c = WsConnection::<8>::new();
        let (ev, e) = feed_all(&mut c, &cf(true, Opcode::Binary, &[1; 8], K));
        assert_eq!((ev, e), (vec![Ev::Binary(vec![1; 8])], None));

        let mut c = WsConnection::<8>::new();
        let hdr = &cf(true, Opcode::Binary, &[1; 9], K)[..6];
        let (_, e) = feed_all(&mut c, hdr);
        assert_eq!(e, Some(WsError::MessageTooBig));
        assert_eq!(drain(&mut c), vec![close_frame(1009)]);

        let mut c = WsConnection::<8>::new();
        let mut bytes = cf(false, Opcode::Text, b"12345", K);
        bytes.extend(cf(true, Opcode::Continuation, b"6789", K));
        let (_, e) = feed_all(&mut c, &bytes);
        assert_eq!(e, Some(WsError::MessageTooBig));

        // A 2^62-byte claim is refused without trouble.
        let mut c = WsConnection::<8>::new();
        let (_, e) = feed_all(&mut c, &[0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(e, Some(WsError::MessageTooBig));

        // Control frames do not use the message buffer: a 125-byte ping fits a tiny one.
        let mut c = WsConnection::<1>::new();
        let (ev, e) = feed_all(&mut c, &cf(true, Opcode::Ping, &[7; 125], K));
        assert_eq!((ev, e), (vec![Ev::Ping(vec![7; 125])], None));
    }

    #[test]
    fn partial_frame_copies_and_unmasks_across_feeds() {
        let payload: Vec<u8> = (0..200u8).collect();
        let bytes = cf(true, Opcode::Binary, &payload, [0xDE, 0xAD, 0xBE, 0xEF]);
        for split in [1, 3, 4, 7, 8, 9, 100, bytes.len() - 1] {
            let mut c = server();
            let mut a = bytes[..split].to_vec();
            assert_eq!(c.feed(&mut a), Ok((split, None)));
            let mut b = bytes[split..].to_vec();
            let len = b.len();
            let (n, ev) = c.feed(&mut b).unwrap();
            assert_eq!(n, len);
            assert_eq!(ev, Some(Event::Binary(&payload[..])));
        }
    }

    #[test]
    fn fixed_overhead_is_small() {
        // The documented "MAX_MESSAGE plus under 480 bytes" on 64-bit hosts.
        let overhead = core::mem::size_of::<WsConnection<0>>();
        assert!(overhead <= 480, "{overhead}");
        assert_eq!(core::mem::size_of::<WsConnection<1000>>(), overhead + 1000);
    }

    #[test]
    fn header_needed_agrees_with_parser() {
        for b1 in 0..=255u8 {
            let mut hdr = [0u8; MAX_HEADER_LEN];
            hdr[0] = 0x82;
            hdr[1] = b1;
            let need = header_needed(&hdr[..2]);
            assert_eq!(parse_frame_header(&hdr[..need - 1]), Ok(Status::Partial));
            assert!(
                matches!(parse_frame_header(&hdr[..need]), Ok(Status::Complete((_, n))) if n == need)
            );
        }
        assert_eq!(header_needed(&[]), 2);
        assert_eq!(header_needed(&[0x81]), 2);
    }

    /// One message of a test stream: text?, fragments, the ping sent after the first
    /// fragment, and the masking key.
    type TestMsg = (bool, Vec<Vec<u8>>, Vec<u8>, [u8; 4]);

    /// A stream of valid client frames: messages (possibly fragmented) with pings between.
    fn valid_stream() -> impl Strategy<Value = Vec<TestMsg>> {
        proptest::collection::vec(
            (
                any::<bool>(),
                proptest::collection::vec(proptest::collection::vec(0x20u8..0x7F, 0..40), 1..4),
                proptest::collection::vec(any::<u8>(), 0..10),
                any::<[u8; 4]>(),
            ),
            0..6,
        )
    }

    fn encode_stream(msgs: &[TestMsg]) -> (Vec<u8>, Vec<Ev>) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (text, frags, ping, key) in msgs {
            let mut whole = Vec::new();
            for (i, f) in frags.iter().enumerate() {
                let op = match (i, text) {
                    (0, true) => Opcode::Text,
                    (0, false) => Opcode::Binary,
                    _ => Opcode::Continuation,
                };
                bytes.extend(cf(i + 1 == frags.len(), op, f, *key));
                if i == 0 {
                    // Between the fragments, or after a single-frame message.
                    bytes.extend(cf(true, Opcode::Ping, ping, *key));
                }
                whole.extend_from_slice(f);
            }
            let msg = if *text {
                Ev::Text(String::from_utf8(whole).unwrap())
            } else {
                Ev::Binary(whole)
            };
            if frags.len() == 1 {
                expected.push(msg);
                expected.push(Ev::Ping(ping.clone()));
            } else {
                expected.push(Ev::Ping(ping.clone()));
                expected.push(msg);
            }
        }
        (bytes, expected)
    }

    proptest! {
        #[test]
        fn chunked_feeding_matches_one_shot(msgs in valid_stream(), chunk in 1usize..20) {
            let (bytes, expected) = encode_stream(&msgs);
            let mut a = WsConnection::<200>::new();
            let (one_shot, e1) = feed_all(&mut a, &bytes);
            let mut b = WsConnection::<200>::new();
            let (by_byte, e2) = feed_chunks(&mut b, &bytes, 1);
            let mut c = WsConnection::<200>::new();
            let (chunked, e3) = feed_chunks(&mut c, &bytes, chunk);
            prop_assert_eq!(e1, None);
            prop_assert_eq!(e2, None);
            prop_assert_eq!(e3, None);
            prop_assert_eq!(&one_shot, &expected);
            prop_assert_eq!(&by_byte, &expected);
            prop_assert_eq!(&chunked, &expected);
        }

        #[test]
        fn mutated_streams_chunk_invariant(
            msgs in valid_stream(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            chunk in 1usize..20,
        ) {
            // Valid frames with a few corrupted bytes reach deeper states than random bytes.
            let (mut bytes, _) = encode_stream(&msgs);
            if !bytes.is_empty() {
                for (at, x) in flips {
                    let i = at % bytes.len();
                    bytes[i] ^= x;
                }
            }
            let mut a = WsConnection::<64>::new();
            let mut b = WsConnection::<64>::new();
            let one = feed_all(&mut a, &bytes);
            let chunked = feed_chunks(&mut b, &bytes, chunk);
            prop_assert_eq!(&one, &chunked);
            prop_assert_eq!(drain(&mut a), drain(&mut b));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
        ) {
            let mut c = WsConnection::<32>::new();
            let mut one = WsConnection::<32>::new();
            let (ev1, e1) = feed_chunks(&mut c, &data, chunk);
            let (ev2, e2) = feed_all(&mut one, &data);
            // Chunking changes nothing observable.
            prop_assert_eq!(ev1, ev2);
            prop_assert_eq!(e1, e2);
            let frames = drain(&mut c);
            prop_assert!(frames.len() <= 2);
            prop_assert!(frames.iter().all(|f| f.len() <= MAX_CONTROL_FRAME_LEN));
            if e1.is_some() {
                prop_assert!(c.is_closed());
            }
        }
    }
}
