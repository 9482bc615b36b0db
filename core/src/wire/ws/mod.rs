//! WebSocket (RFC 6455), sans-IO: the opening handshake, the frame codec and a connection
//! state machine, as used by Grenache's WS RPC transport (`grenache-nodejs-ws`, Node `ws` 7).
//!
//! - [`handshake`]: `Sec-WebSocket-Accept`, the check of an upgrade request and the 101 and 426
//!   answers.
//! - [`frame`]: [`parse_frame_header`], [`apply_mask`], frame writers.
//! - [`connection`]: [`WsConnection`], the server end, fed bytes as they arrive; it reassembles
//!   messages into an inline buffer of `MAX_MESSAGE` bytes, answers pings, runs the close handshake
//!   and maps protocol violations to close codes.
//!
//! What Grenache peers send: one text frame per RPC message, JSON `[rid, key, payload]`
//! (client → server, masked) and `[rid, err, result]` (server → client, unmasked). No
//! extension and no subprotocol is negotiated, so the RSV bits must be zero.
//!
//! Bounds: a frame header is at most [`MAX_HEADER_LEN`] (14) bytes; a control payload at most
//! [`MAX_CONTROL_PAYLOAD`] (125) bytes; a reassembled data message at most the connection's
//! `MAX_MESSAGE` (Node's `ws` allows 100 MiB; a board picks a few KiB).

pub mod connection;
pub mod frame;
pub mod handshake;

use core::fmt;

pub use connection::{is_valid_close_code, Event, MessageKind, SendError, WsConnection};
pub use frame::{
    apply_mask, frame_len, header_len, parse_frame_header, write_frame, write_frame_header,
    FrameHeader, Opcode, MAX_CONTROL_FRAME_LEN, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
pub use handshake::{
    accept_key, check_upgrade_request, write_switching_protocols, write_upgrade_required,
    HandshakeError, GUID, SWITCHING_PROTOCOLS_LEN,
};

/// The result of parsing something that may not have fully arrived yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status<T> {
    /// Parsed.
    Complete(T),
    /// The input is a valid prefix; more bytes are needed.
    Partial,
}

/// A protocol violation by the peer. Each maps to the close code sent back
/// ([`WsError::close_code`]); after one, the connection is failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WsError {
    /// An RSV bit is set, but no extension was negotiated (1002).
    ReservedBits,
    /// A reserved opcode (0x3-0x7, 0xB-0xF), given here (1002).
    ReservedOpcode(u8),
    /// A control frame without FIN (1002).
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload (1002).
    ControlTooLong,
    /// A 64-bit payload length with the most significant bit set (1002).
    LengthOverflow,
    /// A server got an unmasked frame: clients must mask every frame (1002).
    UnmaskedFrame,
    /// A continuation frame with no fragmented message in progress (1002).
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message still awaits its continuation (1002).
    ExpectedContinuation,
    /// A close frame with a 1-byte payload, or a status code that may not be sent (1002).
    InvalidClosePayload,
    /// A text message or close reason that is not valid UTF-8 (1007).
    InvalidUtf8,
    /// A data message longer than the connection's `MAX_MESSAGE` (1009).
    MessageTooBig,
}

impl WsError {
    /// The status code to close with (RFC 6455 §7.4.1): 1007 for bad UTF-8, 1009 for an
    /// oversize message, 1002 for every other protocol error.
    pub const fn close_code(self) -> u16 {
        match self {
            WsError::InvalidUtf8 => 1007,
            WsError::MessageTooBig => 1009,
            _ => 1002,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::ReservedBits => f.write_str("ws: RSV bit set without extension"),
            WsError::ReservedOpcode(op) => write!(f, "ws: reserved opcode {op:#x}"),
            WsError::FragmentedControl => f.write_str("ws: fragmented control frame"),
            WsError::ControlTooLong => f.write_str("ws: control frame payload over 125 bytes"),
            WsError::LengthOverflow => f.write_str("ws: 64-bit length with top bit set"),
            WsError::UnmaskedFrame => f.write_str("ws: unmasked frame from client"),
            WsError::UnexpectedContinuation => f.write_str("ws: continuation without a message"),
            WsError::ExpectedContinuation => f.write_str("ws: new message inside a fragmented one"),
            WsError::InvalidClosePayload => f.write_str("ws: invalid close frame payload"),
            WsError::InvalidUtf8 => f.write_str("ws: invalid UTF-8"),
            WsError::MessageTooBig => f.write_str("ws: message too big"),
        }
    }
}

impl core::error::Error for WsError {}
