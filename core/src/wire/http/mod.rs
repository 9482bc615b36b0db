//! HTTP/1.1 message framing: an incremental, zero-copy parser and writers, for both ends.
//!
//! Grenache speaks plain HTTP/1.1 in three places: Link → grape API (`POST /lookup` etc.), the
//! HTTP RPC transport (`POST /` with a JSON `[rid, key, payload]` body, or a chunked stream),
//! and the WebSocket upgrade. This module only frames messages; what the bodies mean is decided
//! by the grape and RPC modules.
//!
//! * [`parse_request`] / [`parse_response`] read a message head from the start of a caller
//!   buffer that may hold only part of it ([`Status::Partial`]: read more, call again with the
//!   longer buffer). Nothing is copied: the method, path and header fields borrow the buffer.
//!   The parse is a single left-to-right pass in which every check depends only on bytes already
//!   seen, so a prefix of a message gives either `Partial` or the same answer as the whole
//!   message (tested: "split-point invariance"). Re-parsing from the start costs O(head) per
//!   call, and a head is at most [`MAX_HEAD`] bytes.
//! * [`BodyDecoder`] is a byte-at-a-time state machine for the body (`Content-Length`,
//!   `chunked`, or until close), fed any split of the input; it hands back ranges of the input
//!   that hold body bytes and reports where the body ends, so pipelined messages can follow.
//! * `write_*` functions produce heads into a `&mut [u8]`.
//!
//! Every error knows the status a server should answer with ([`HttpError::status`]): malformed
//! → 400, head too large → 431, body too large → 413, unknown transfer coding → 501, HTTP
//! version other than 1.x → 505.
//!
//! Strictness, and why: lines must end in CRLF (no bare LF; Node, curl and Ruby all send CRLF,
//! and a lenient line ending is a request-smuggling vector); `obs-fold` is rejected (RFC 9112
//! §5.2 allows a 400); a request carrying both `Content-Length` and `Transfer-Encoding` is
//! rejected (Node's llhttp does the same); `HTTP/1.2`–`HTTP/1.9` are served as 1.1 (RFC 9110
//! §6.2). Tolerated: empty lines before a request line (RFC 9112 §2.2), repeated identical
//! `Content-Length` headers, chunk extensions and trailers (skipped, bounded). A missing `Host`
//! is not an error (an embedded worker has nothing to route on; [`RequestHead::header`] gives
//! it to callers that care).

mod body;
mod head;
mod write;

pub use body::{BodyDecoder, Decoded, InPlace};
pub use head::{
    parse_request, parse_request_limited, parse_response, parse_response_limited, RequestHead,
    ResponseHead,
};
pub use write::{
    reason_phrase, write_request_head, write_response_head, write_response_head_with, WriteError,
};

use core::fmt;

/// The largest message head accepted by [`parse_request`] / [`parse_response`], in bytes,
/// counting the request/status line, all header lines and the blank line that ends the head.
///
/// Larger heads are [`HttpError::HeadTooLarge`] (431). Link's requests are about 250 bytes;
/// Node's own limit is 16 KiB, which [`parse_request_limited`] can match on a host. The same
/// bound applies to a chunked body's trailer section.
pub const MAX_HEAD: usize = 8192;

// The chunked decoder counts trailer bytes in a u16.
const _: () = assert!(MAX_HEAD < u16::MAX as usize - 2);

/// The longest chunk extension accepted on one chunk-size line, in bytes (longer → 400).
///
/// Extensions carry nothing Grenache uses; the bound only stops a peer from streaming an
/// endless chunk-size line that would never count against the body limit.
pub const MAX_CHUNK_EXT: usize = 1024;

/// The interim response a server sends before reading the body of a request that has
/// `Expect: 100-continue` ([`RequestHead::expect_continue`]).
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The result of a parse over a buffer that may hold only part of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status<T> {
    /// The whole head was there.
    Complete(T),
    /// More bytes are needed; call again with a longer buffer (same start).
    Partial,
}

impl<T> Status<T> {
    /// The complete value, if any.
    pub fn complete(self) -> Option<T> {
        match self {
            Status::Complete(t) => Some(t),
            Status::Partial => None,
        }
    }

    /// Whether more bytes are needed.
    pub fn is_partial(&self) -> bool {
        matches!(self, Status::Partial)
    }
}

/// Why a message could not be parsed; [`HttpError::status`] gives the status code to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HttpError {
    /// The method is empty or not a token (400).
    InvalidMethod,
    /// The request-target is empty, contains a control byte or is not UTF-8 (400).
    InvalidTarget,
    /// The `HTTP/x.y` version, or the line ending after it, is malformed (400).
    InvalidVersion,
    /// A well-formed version other than HTTP/1.x (505).
    UnsupportedVersion,
    /// The status line of a response is malformed (400).
    InvalidStatus,
    /// A header name is empty, not a token, or followed by whitespace before `:` (400).
    InvalidHeaderName,
    /// A header value contains a control byte, or its line does not end in CRLF (400).
    InvalidHeaderValue,
    /// A header line starts with whitespace (obsolete line folding) (400).
    ObsoleteFold,
    /// `Content-Length` is not a decimal number, overflows, or two of them disagree (400).
    InvalidContentLength,
    /// `Transfer-Encoding` is empty or applies `chunked` twice (400).
    InvalidTransferEncoding,
    /// A request has both `Content-Length` and `Transfer-Encoding` (400).
    ConflictingFraming,
    /// A transfer coding other than `chunked` (501).
    UnsupportedTransferCoding,
    /// The head is longer than the limit (431).
    HeadTooLarge,
    /// More header fields than the caller's capacity `H` (431).
    TooManyHeaders,
    /// A chunk-size line is malformed: no hex digits, more than 16, a bad extension or a bad
    /// line ending (400).
    InvalidChunkSize,
    /// The CRLF after a chunk's data, or a trailer line, is malformed (400).
    InvalidChunk,
    /// The body is longer than the decoder's limit (413).
    BodyTooLarge,
    /// The connection ended before the body did (400).
    UnexpectedEof,
}

impl HttpError {
    /// The HTTP status code a server should answer this error with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::UnsupportedVersion => 505,
            HttpError::UnsupportedTransferCoding => 501,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::InvalidMethod
            | HttpError::InvalidTarget
            | HttpError::InvalidVersion
            | HttpError::InvalidStatus
            | HttpError::InvalidHeaderName
            | HttpError::InvalidHeaderValue
            | HttpError::ObsoleteFold
            | HttpError::InvalidContentLength
            | HttpError::InvalidTransferEncoding
            | HttpError::ConflictingFraming
            | HttpError::InvalidChunkSize
            | HttpError::InvalidChunk
            | HttpError::UnexpectedEof => 400,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HttpError::InvalidMethod => "invalid method",
            HttpError::InvalidTarget => "invalid request target",
            HttpError::InvalidVersion => "invalid HTTP version",
            HttpError::UnsupportedVersion => "unsupported HTTP version",
            HttpError::InvalidStatus => "invalid status line",
            HttpError::InvalidHeaderName => "invalid header name",
            HttpError::InvalidHeaderValue => "invalid header value",
            HttpError::ObsoleteFold => "obsolete header line folding",
            HttpError::InvalidContentLength => "invalid Content-Length",
            HttpError::InvalidTransferEncoding => "invalid Transfer-Encoding",
            HttpError::ConflictingFraming => "both Content-Length and Transfer-Encoding",
            HttpError::UnsupportedTransferCoding => "unsupported transfer coding",
            HttpError::HeadTooLarge => "message head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::InvalidChunkSize => "invalid chunk size line",
            HttpError::InvalidChunk => "invalid chunk framing",
            HttpError::BodyTooLarge => "body too large",
            HttpError::UnexpectedEof => "connection closed inside the body",
        };
        f.write_str(s)
    }
}

impl core::error::Error for HttpError {}

/// The protocol version of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Version {
    /// HTTP/1.0: connections close after each message unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1 (and 1.2–1.9, served as 1.1): persistent unless `Connection: close`.
    Http11,
}

impl Version {
    /// `"HTTP/1.0"` or `"HTTP/1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How a message body is delimited (RFC 9112 §6.3).
///
/// In the writers, `Length(n)` writes `Content-Length: n` (use `Length(0)` for an empty 200),
/// `Chunked` writes `Transfer-Encoding: chunked`, and `None` / `UntilClose` write no framing
/// header (1xx, 204, 304, a request without a body, or a reply ended by closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BodyKind {
    /// No body (no framing header, `Content-Length: 0`, or a status that has none).
    None,
    /// Exactly this many bytes (never 0: that is `None`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without framing headers: the body runs until the server closes.
    UntilClose,
}

/// One header field, borrowed from the parsed buffer (or given to a writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header<'a> {
    /// The field name as sent (a token; compare with `eq_ignore_ascii_case`).
    pub name: &'a str,
    /// The field value without surrounding whitespace (may hold obs-text bytes ≥ 0x80).
    pub value: &'a [u8],
}

impl<'a> Header<'a> {
    /// An empty slot, to fill a header array.
    pub const EMPTY: Header<'static> = Header {
        name: "",
        value: b"",
    };

    /// A header with this name and value.
    pub const fn new(name: &'a str, value: &'a [u8]) -> Self {
        Header { name, value }
    }
}

/// The first header named `name` (ASCII case-insensitive), if any.
pub fn find_header<'a>(headers: &[Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a comma-separated header value (e.g. `Connection: keep-alive, Upgrade`) contains
/// `token`, compared ASCII case-insensitively after trimming spaces and tabs.
pub fn has_token(list: &[u8], token: &str) -> bool {
    list_elements(list).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// The non-empty elements of a comma-separated list, trimmed of spaces and tabs.
pub(super) fn list_elements(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests;
