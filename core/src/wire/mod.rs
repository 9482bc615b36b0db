//! The wire formats: bytes in, values out, and back, each decoder bounded and total.
//!
//! Nothing here keeps state between messages except the streaming decoders that say so
//! ([`http::BodyDecoder`], [`ws::connection`]); nothing here knows about the DHT or the RPC
//! roles that use these formats.

pub mod base64;
pub mod bencode;
pub mod frame;
pub mod http;
pub mod json;
pub mod krpc;
pub mod sha1;
pub mod ws;

use core::fmt;

/// The output buffer is too small for what was being written: the one "no room" error of
/// every writer here (bencode, base64, WebSocket frames and handshake); the errors of writers
/// that can also fail otherwise convert from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferFull;

impl fmt::Display for BufferFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("output buffer too small")
    }
}

impl core::error::Error for BufferFull {}
