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
