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
//! * `write_*` functions produce heads and chunks into a `&mut [u8]`.
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

use core::fmt;
use core::ops::Range;

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

/// A parsed request head. `H` is the capacity for header fields (more → 431).
///
/// The header array lives inside the head rather than in a caller array, so a head has a
/// single lifetime (that of the buffer) and can be returned from a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a, const H: usize> {
    /// The method as sent (case-sensitive token, e.g. `POST`).
    pub method: &'a str,
    /// The raw request-target, including any query string (the grape dispatches on
    /// `path[1..]` verbatim, query included).
    pub path: &'a str,
    /// The protocol version.
    pub version: Version,
    /// How the body is delimited: `None`, `Length(n)` or `Chunked` (never `UntilClose`).
    pub body: BodyKind,
    /// Whether the connection may carry another request after this one: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// HTTP/1.1 with `Expect: 100-continue`: send [`CONTINUE_RESPONSE`] before reading the
    /// body (or answer with a final status and close).
    pub expect_continue: bool,
    /// `Connection` lists `upgrade` (a WebSocket handshake also has an `Upgrade` header).
    pub upgrade: bool,
    headers: [Header<'a>; H],
    header_count: usize,
}

impl<'a, const H: usize> RequestHead<'a, H> {
    /// The header fields in the order received.
    pub fn headers(&self) -> &[Header<'a>] {
        self.headers.get(..self.header_count).unwrap_or(&[])
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        find_header(self.headers(), name)
    }

    /// The first header named `name`, if its value is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| core::str::from_utf8(v).ok())
    }

    /// The declared body length, if framed by `Content-Length` (0 for no body).
    pub fn content_length(&self) -> Option<u64> {
        body_length(self.body)
    }
}

#[cfg(feature = "defmt")]
impl<const H: usize> defmt::Format for RequestHead<'_, H> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "{=str} {=str} {} {} keep_alive={=bool}",
            self.method,
            self.path,
            self.version,
            self.body,
            self.keep_alive
        )
    }
}

/// A parsed response head. `H` is the capacity for header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead<'a, const H: usize> {
    /// The protocol version.
    pub version: Version,
    /// The status code (100–999).
    pub code: u16,
    /// The reason phrase as sent (possibly empty).
    pub reason: &'a [u8],
    /// How the body is delimited, assuming the request was not `HEAD` (after a `HEAD`, the
    /// body is `None` whatever this says). 1xx, 204 and 304 have none; without framing
    /// headers the body runs until the server closes.
    pub body: BodyKind,
    /// Whether the connection may carry another request: not after `Connection: close`, an
    /// HTTP/1.0 reply without `keep-alive`, a body delimited by close, or ambiguous framing.
    pub keep_alive: bool,
    headers: [Header<'a>; H],
    header_count: usize,
}

impl<'a, const H: usize> ResponseHead<'a, H> {
    /// The header fields in the order received.
    pub fn headers(&self) -> &[Header<'a>] {
        self.headers.get(..self.header_count).unwrap_or(&[])
    }

    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        find_header(self.headers(), name)
    }

    /// The first header named `name`, if its value is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| core::str::from_utf8(v).ok())
    }

    /// Whether this is an interim (1xx) response, after which the real one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.code)
    }

    /// The declared body length, if framed by `Content-Length` (0 for no body).
    pub fn content_length(&self) -> Option<u64> {
        body_length(self.body)
    }
}

#[cfg(feature = "defmt")]
impl<const H: usize> defmt::Format for ResponseHead<'_, H> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "{} {=u16} {} keep_alive={=bool}",
            self.version,
            self.code,
            self.body,
            self.keep_alive
        )
    }
}

fn body_length(body: BodyKind) -> Option<u64> {
    match body {
        BodyKind::None => Some(0),
        BodyKind::Length(n) => Some(n),
        BodyKind::Chunked | BodyKind::UntilClose => None,
    }
}

/// Parses a request head from the start of `buf`, with the [`MAX_HEAD`] limit.
///
/// On success returns the head and its length in bytes (where the body starts). `buf` may
/// hold less than a head (→ `Partial`) or more (body bytes, pipelined requests: ignored).
pub fn parse_request<'a, const H: usize>(
    buf: &'a [u8],
) -> Result<Status<(RequestHead<'a, H>, usize)>, HttpError> {
    parse_request_limited(buf, MAX_HEAD)
}

/// [`parse_request`] with a head limit of `max_head` bytes instead of [`MAX_HEAD`].
pub fn parse_request_limited<'a, const H: usize>(
    buf: &'a [u8],
    max_head: usize,
) -> Result<Status<(RequestHead<'a, H>, usize)>, HttpError> {
    // Only the first `max_head` bytes are looked at; a head that does not end inside them is
    // too large whatever comes next, which keeps every prefix's answer consistent.
    let window = buf.get(..max_head).unwrap_or(buf);
    match request_in::<H>(window)? {
        Some(done) => Ok(Status::Complete(done)),
        None if buf.len() >= max_head => Err(HttpError::HeadTooLarge),
        None => Ok(Status::Partial),
    }
}

/// Parses a response head from the start of `buf`, with the [`MAX_HEAD`] limit.
///
/// Returns the head and its length. For a 1xx head, parse again after it.
pub fn parse_response<'a, const H: usize>(
    buf: &'a [u8],
) -> Result<Status<(ResponseHead<'a, H>, usize)>, HttpError> {
    parse_response_limited(buf, MAX_HEAD)
}

/// [`parse_response`] with a head limit of `max_head` bytes instead of [`MAX_HEAD`].
pub fn parse_response_limited<'a, const H: usize>(
    buf: &'a [u8],
    max_head: usize,
) -> Result<Status<(ResponseHead<'a, H>, usize)>, HttpError> {
    let window = buf.get(..max_head).unwrap_or(buf);
    match response_in::<H>(window)? {
        Some(done) => Ok(Status::Complete(done)),
        None if buf.len() >= max_head => Err(HttpError::HeadTooLarge),
        None => Ok(Status::Partial),
    }
}

// ---------------------------------------------------------------------------------------------
// Head parsing internals.
//
// Every step returns `Result<Option<T>, HttpError>`: `Ok(None)` means "ran out of bytes", which
// the public functions turn into `Partial`.

type Step<T> = Result<Option<T>, HttpError>;

/// Takes the next byte or returns `Ok(None)` (need more) from the enclosing function.
macro_rules! next {
    ($c:expr) => {
        match $c.next() {
            Some(b) => b,
            None => return Ok(None),
        }
    };
}

/// Byte classes, one bit each, looked up in a 256-entry table.
const TCHAR: u8 = 1; // RFC 9110 token character
const VALUE: u8 = 2; // field-value byte: HTAB, SP, VCHAR, obs-text
const TARGET: u8 = 4; // request-target byte: VCHAR and obs-text (no SP, no CTL)

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            )
        {
            c |= TCHAR;
        }
        if b == b'\t' || (b >= 0x20 && b != 0x7f) {
            c |= VALUE;
        }
        if b > 0x20 && b != 0x7f {
            c |= TARGET;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn is(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied();
        if b.is_some() {
            self.pos += 1;
        }
        b
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Advances over bytes of `class`; returns the bytes skipped.
    fn take(&mut self, class: u8) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let n = rest
            .iter()
            .position(|&b| !is(b, class))
            .unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or(&[])
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }
}

/// Expects exactly `lit` next; a mismatching byte is `err`.
fn expect(c: &mut Cursor<'_>, lit: &[u8], err: HttpError) -> Step<()> {
    for &want in lit {
        if next!(c) != want {
            return Err(err);
        }
    }
    Ok(Some(()))
}

/// `HTTP/d.d` (the line ending is the caller's).
fn version(c: &mut Cursor<'_>, err: HttpError) -> Step<Version> {
    if expect(c, b"HTTP/", err)?.is_none() {
        return Ok(None);
    }
    let major = next!(c);
    if !major.is_ascii_digit() {
        return Err(err);
    }
    if next!(c) != b'.' {
        return Err(err);
    }
    let minor = next!(c);
    if !minor.is_ascii_digit() {
        return Err(err);
    }
    match (major, minor) {
        (b'1', b'0') => Ok(Some(Version::Http10)),
        (b'1', _) => Ok(Some(Version::Http11)),
        _ => Err(HttpError::UnsupportedVersion),
    }
}

/// What the framing-related header fields said.
#[derive(Default)]
struct Fields {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
    count: usize,
}

/// Header lines up to and including the blank line.
fn fields<'a, const H: usize>(
    c: &mut Cursor<'a>,
    headers: &mut [Header<'a>; H],
    f: &mut Fields,
) -> Step<()> {
    loop {
        match c.peek() {
            None => return Ok(None),
            Some(b'\r') => {
                c.pos += 1;
                return match next!(c) {
                    b'\n' => Ok(Some(())),
                    _ => Err(HttpError::InvalidHeaderName),
                };
            }
            Some(b' ' | b'\t') => return Err(HttpError::ObsoleteFold),
            Some(_) => {}
        }
        let name = c.take(TCHAR);
        if name.is_empty() {
            // The line starts with a byte that cannot begin a field name.
            return Err(HttpError::InvalidHeaderName);
        }
        if next!(c) != b':' {
            return Err(HttpError::InvalidHeaderName);
        }
        // Checked once the name is complete, so the error is the same whatever the split.
        let slot = headers.get_mut(f.count).ok_or(HttpError::TooManyHeaders)?;
        c.skip_ows();
        let mut value = c.take(VALUE);
        match next!(c) {
            b'\r' => {}
            _ => return Err(HttpError::InvalidHeaderValue),
        }
        if next!(c) != b'\n' {
            return Err(HttpError::InvalidHeaderValue);
        }
        while let [rest @ .., b' ' | b'\t'] = value {
            value = rest;
        }
        let name = core::str::from_utf8(name).map_err(|_| HttpError::InvalidHeaderName)?;
        *slot = Header { name, value };
        f.count += 1;
        field_semantics(name, value, f)?;
    }
}

fn field_semantics(name: &str, value: &[u8], f: &mut Fields) -> Result<(), HttpError> {
    // Dispatch on length first: most fields are none of these and cost one comparison.
    match name.len() {
        14 if name.eq_ignore_ascii_case("content-length") => {
            let n = decimal(value).ok_or(HttpError::InvalidContentLength)?;
            match f.content_length {
                Some(old) if old != n => return Err(HttpError::InvalidContentLength),
                _ => f.content_length = Some(n),
            }
        }
        17 if name.eq_ignore_ascii_case("transfer-encoding") => {
            let mut any = false;
            for coding in list_elements(value) {
                any = true;
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(HttpError::UnsupportedTransferCoding);
                }
                if f.chunked {
                    return Err(HttpError::InvalidTransferEncoding);
                }
                f.chunked = true;
            }
            if !any {
                return Err(HttpError::InvalidTransferEncoding);
            }
            f.transfer_encoding = true;
        }
        10 if name.eq_ignore_ascii_case("connection") => {
            for opt in list_elements(value) {
                if opt.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                } else if opt.eq_ignore_ascii_case(b"upgrade") {
                    f.upgrade = true;
                }
            }
        }
        6 if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case(b"100-continue") => {
            f.expect_continue = true;
        }
        _ => {}
    }
    Ok(())
}

/// A non-empty run of ASCII digits as u64, or `None` (sign, space, overflow, empty).
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// The non-empty elements of a comma-separated list, trimmed of spaces and tabs.
fn list_elements(list: &[u8]) -> impl Iterator<Item = &[u8]> {
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

fn request_in<'a, const H: usize>(buf: &'a [u8]) -> Step<(RequestHead<'a, H>, usize)> {
    let mut c = Cursor { buf, pos: 0 };
    // RFC 9112 §2.2: ignore empty lines before the request line (some clients send a CRLF
    // after a POST body).
    while c.peek() == Some(b'\r') {
        c.pos += 1;
        if next!(c) != b'\n' {
            return Err(HttpError::InvalidMethod);
        }
    }
    let method = c.take(TCHAR);
    if next!(c) != b' ' || method.is_empty() {
        return Err(HttpError::InvalidMethod);
    }
    let target = c.take(TARGET);
    if next!(c) != b' ' || target.is_empty() {
        return Err(HttpError::InvalidTarget);
    }
    let path = core::str::from_utf8(target).map_err(|_| HttpError::InvalidTarget)?;
    let method = core::str::from_utf8(method).map_err(|_| HttpError::InvalidMethod)?;
    let version = match version(&mut c, HttpError::InvalidVersion)? {
        Some(v) => v,
        None => return Ok(None),
    };
    if expect(&mut c, b"\r\n", HttpError::InvalidVersion)?.is_none() {
        return Ok(None);
    }

    let mut headers = [Header::EMPTY; H];
    let mut f = Fields::default();
    if fields(&mut c, &mut headers, &mut f)?.is_none() {
        return Ok(None);
    }

    if f.transfer_encoding && f.content_length.is_some() {
        // RFC 9112 §6.3 lets a server reject this; Node does, and accepting it is how
        // request smuggling starts.
        return Err(HttpError::ConflictingFraming);
    }
    let body = if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            None | Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !f.close,
        // A 1.0 message with Transfer-Encoding has faulty framing: close after it (§6.1).
        Version::Http10 => f.keep_alive && !f.close && !f.transfer_encoding,
    };
    let head = RequestHead {
        method,
        path,
        version,
        body,
        keep_alive,
        // RFC 9110 §10.1.1: a server must ignore 100-continue in an HTTP/1.0 request.
        expect_continue: f.expect_continue && version == Version::Http11,
        upgrade: f.upgrade,
        headers,
        header_count: f.count,
    };
    Ok(Some((head, c.pos)))
}

fn response_in<'a, const H: usize>(buf: &'a [u8]) -> Step<(ResponseHead<'a, H>, usize)> {
    let mut c = Cursor { buf, pos: 0 };
    let version = match version(&mut c, HttpError::InvalidStatus)? {
        Some(v) => v,
        None => return Ok(None),
    };
    if next!(c) != b' ' {
        return Err(HttpError::InvalidStatus);
    }
    let mut code: u16 = 0;
    for _ in 0..3 {
        let d = next!(c);
        if !d.is_ascii_digit() {
            return Err(HttpError::InvalidStatus);
        }
        code = code * 10 + u16::from(d - b'0');
    }
    if code < 100 {
        return Err(HttpError::InvalidStatus);
    }
    // "HTTP/1.1 200\r\n" (no reason, no space) is tolerated, as by Node's client.
    let reason = match next!(c) {
        b' ' => {
            let r = c.take(VALUE);
            if next!(c) != b'\r' {
                return Err(HttpError::InvalidStatus);
            }
            r
        }
        b'\r' => &[][..],
        _ => return Err(HttpError::InvalidStatus),
    };
    if next!(c) != b'\n' {
        return Err(HttpError::InvalidStatus);
    }

    let mut headers = [Header::EMPTY; H];
    let mut f = Fields::default();
    if fields(&mut c, &mut headers, &mut f)?.is_none() {
        return Ok(None);
    }

    let mut keep_alive = match version {
        Version::Http11 => !f.close,
        Version::Http10 => f.keep_alive && !f.close,
    };
    let body = if (100..200).contains(&code) || code == 204 || code == 304 {
        BodyKind::None
    } else if f.chunked {
        // Transfer-Encoding overrides Content-Length (§6.3), but a server that sends both is
        // confused: do not reuse the connection.
        if f.content_length.is_some() {
            keep_alive = false;
        }
        BodyKind::Chunked
    } else {
        match f.content_length {
            Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
            None => {
                keep_alive = false;
                BodyKind::UntilClose
            }
        }
    };
    let head = ResponseHead {
        version,
        code,
        reason,
        body,
        keep_alive,
        headers,
        header_count: f.count,
    };
    Ok(Some((head, c.pos)))
}

// ---------------------------------------------------------------------------------------------
// Body decoding.

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

// ---------------------------------------------------------------------------------------------
// Writers.

/// Why a head or chunk could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteError {
    /// The output buffer is too small.
    BufferFull,
    /// A method, target, header name, header value, reason or status code would not be a
    /// valid (or safe) part of a message, e.g. a value containing CR or LF.
    InvalidField,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteError::BufferFull => "output buffer too small",
            WriteError::InvalidField => "invalid message field",
        })
    }
}

impl core::error::Error for WriteError {}

/// The standard reason phrase for a status code (RFC 9110), or `""` if none is known.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(WriteError::BufferFull)?;
        let dst = self
            .buf
            .get_mut(self.len..end)
            .ok_or(WriteError::BufferFull)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn number(&mut self, mut n: u64, radix: u64) -> Result<(), WriteError> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            if let (Some(slot), Some(&d)) = (tmp.get_mut(i), DIGITS.get((n % radix) as usize)) {
                *slot = d;
            }
            n /= radix;
            if n == 0 || i == 0 {
                break;
            }
        }
        self.put(tmp.get(i..).unwrap_or(&[]))
    }

    fn fields(&mut self, headers: &[Header<'_>], body: BodyKind) -> Result<(), WriteError> {
        for h in headers {
            if h.name.is_empty() || !h.name.bytes().all(|b| is(b, TCHAR)) {
                return Err(WriteError::InvalidField);
            }
            if !h.value.iter().all(|&b| is(b, VALUE)) {
                return Err(WriteError::InvalidField);
            }
            self.put(h.name.as_bytes())?;
            self.put(b": ")?;
            self.put(h.value)?;
            self.put(b"\r\n")?;
        }
        match body {
            BodyKind::Length(n) => {
                self.put(b"Content-Length: ")?;
                self.number(n, 10)?;
                self.put(b"\r\n")?;
            }
            BodyKind::Chunked => self.put(b"Transfer-Encoding: chunked\r\n")?,
            BodyKind::None | BodyKind::UntilClose => {}
        }
        self.put(b"\r\n")
    }
}

/// Writes `HTTP/1.1 <status> <reason>`, the headers in order, the framing header for `body`
/// (see [`BodyKind`]) and the blank line. Returns the bytes written.
///
/// `reason: None` uses [`reason_phrase`]. Nothing is added implicitly (no `Date`, no
/// `Connection`): Node's grape sends `Date`, `Connection` and `Keep-Alive`, none of which a
/// Grenache client reads. Do not pass `Content-Length` / `Transfer-Encoding` in `headers`.
pub fn write_response_head(
    out: &mut [u8],
    status: u16,
    reason: Option<&str>,
    headers: &[Header<'_>],
    body: BodyKind,
) -> Result<usize, WriteError> {
    let reason = reason.unwrap_or_else(|| reason_phrase(status));
    write_response_head_with(out, status, reason, headers, body)
}

/// [`write_response_head`] with the reason phrase given: a server that sends a few known
/// statuses does not link the [`reason_phrase`] table (about 1.3 KiB of a board's flash).
pub fn write_response_head_with(
    out: &mut [u8],
    status: u16,
    reason: &str,
    headers: &[Header<'_>],
    body: BodyKind,
) -> Result<usize, WriteError> {
    if !(100..=999).contains(&status) {
        return Err(WriteError::InvalidField);
    }
    if !reason.bytes().all(|b| is(b, VALUE)) {
        return Err(WriteError::InvalidField);
    }
    let mut o = Out { buf: out, len: 0 };
    o.put(b"HTTP/1.1 ")?;
    o.number(u64::from(status), 10)?;
    o.put(b" ")?;
    o.put(reason.as_bytes())?;
    o.put(b"\r\n")?;
    o.fields(headers, body)?;
    Ok(o.len)
}

/// Writes `<method> <target> HTTP/1.1`, the headers in order (include `Host`), the framing
/// header for `body` and the blank line. Returns the bytes written.
pub fn write_request_head(
    out: &mut [u8],
    method: &str,
    target: &str,
    headers: &[Header<'_>],
    body: BodyKind,
) -> Result<usize, WriteError> {
    if method.is_empty() || !method.bytes().all(|b| is(b, TCHAR)) {
        return Err(WriteError::InvalidField);
    }
    if target.is_empty() || !target.bytes().all(|b| is(b, TARGET)) {
        return Err(WriteError::InvalidField);
    }
    let mut o = Out { buf: out, len: 0 };
    o.put(method.as_bytes())?;
    o.put(b" ")?;
    o.put(target.as_bytes())?;
    o.put(b" HTTP/1.1\r\n")?;
    o.fields(headers, body)?;
    Ok(o.len)
}

/// Writes the size line of a chunk of `len` bytes (`<hex>\r\n`); the caller then writes the
/// data and [`CHUNK_END`]. Lets a caller put the data in place without copying it twice.
pub fn write_chunk_header(out: &mut [u8], len: usize) -> Result<usize, WriteError> {
    let mut o = Out { buf: out, len: 0 };
    o.number(len as u64, 16)?;
    o.put(b"\r\n")?;
    Ok(o.len)
}

/// The CRLF that follows a chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// Writes one chunk: size line, `data`, CRLF. An empty `data` writes nothing (an empty chunk
/// would end the body; use [`write_last_chunk`] for that). Returns the bytes written.
pub fn write_chunk(out: &mut [u8], data: &[u8]) -> Result<usize, WriteError> {
    if data.is_empty() {
        return Ok(0);
    }
    let mut o = Out { buf: out, len: 0 };
    o.number(data.len() as u64, 16)?;
    o.put(b"\r\n")?;
    o.put(data)?;
    o.put(CHUNK_END)?;
    Ok(o.len)
}

/// Writes the last chunk and the end of the body (`0\r\n\r\n`, no trailers).
pub fn write_last_chunk(out: &mut [u8]) -> Result<usize, WriteError> {
    let mut o = Out { buf: out, len: 0 };
    o.put(b"0\r\n\r\n")?;
    Ok(o.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    /// The exact bytes grenache-nodejs-link 1.0.2 sends for a lookup (node-fetch 2.7.0 on
    /// Node 20, captured with a TCP proxy between a Node Link and a Node grape). Header
    /// order is node-fetch's: the caller's `content-type` (lowercase, as Link spells it), then
    /// `Accept`, `Content-Length`, `User-Agent`, `Accept-Encoding` from node-fetch, and `Host`,
    /// `Connection` from Node's http module (keep-alive: Node ≥ 19's global agent).
    const LINK_LOOKUP: &[u8] = b"POST /lookup HTTP/1.1\r\n\
content-type: application/json\r\n\
Accept: */*\r\n\
Content-Length: 64\r\n\
User-Agent: node-fetch/1.0 (+https://github.com/bitinn/node-fetch)\r\n\
Accept-Encoding: gzip,deflate\r\n\
Host: 127.0.0.1:39001\r\n\
Connection: keep-alive\r\n\
\r\n\
{\"rid\":\"71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1\",\"data\":\"rpc_test\"}";
    const LINK_LOOKUP_BODY: &[u8] =
        b"{\"rid\":\"71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1\",\"data\":\"rpc_test\"}";

    /// A buffered HTTP RPC request (grenache-nodejs-http 1.0.2, docs/protocol.md §10.1).
    const RPC_REQUEST: &[u8] = b"POST / HTTP/1.1\r\n\
grc-compress: none\r\n\
Content-Type: text/plain;charset=UTF-8\r\n\
Accept: */*\r\n\
Content-Length: 69\r\n\
User-Agent: node-fetch/1.0 (+https://github.com/bitinn/node-fetch)\r\n\
Accept-Encoding: gzip,deflate\r\n\
Host: 127.0.0.1:39003\r\n\
Connection: keep-alive\r\n\
\r\n\
[\"55e171ac-0872-453a-b0c4-3d73b418477a\",\"rpc_test\",{\"hello\":\"world\"}]";

    /// A streaming HTTP RPC request (`peer.stream`, docs/protocol.md §10.6).
    const RPC_STREAM: &[u8] = b"POST / HTTP/1.1\r\n\
_gr: [\"372c5f4a-c39f-42b6-9356-09b5590ae886\",\"rpc_test\"]\r\n\
connection: close\r\n\
transfer-encoding: chunked\r\n\
_a: upload\r\n\
_ar: {\"foo\":\"bar\"}\r\n\
content-type: application/pdf\r\n\
Host: 127.0.0.1:39003\r\n\
\r\n\
6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";

    /// A grape's answer to a lookup (Node http server defaults, docs/protocol.md §3.1, §3.10).
    const GRAPE_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2026 18:42:00 GMT\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Content-Length: 18\r\n\
\r\n\
[\"127.0.0.1:1337\"]";

    /// An HTTP RPC reply (chunked, docs/protocol.md §10.2).
    const RPC_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2026 18:42:00 GMT\r\n\
Connection: close\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
17\r\n[\"r1\",null,{\"ok\":\"hi\"}]\r\n0\r\n\r\n";

    type Req<'a> = RequestHead<'a, 16>;
    type Resp<'a> = ResponseHead<'a, 16>;

    fn req(buf: &[u8]) -> (Req<'_>, usize) {
        match parse_request::<16>(buf) {
            Ok(Status::Complete(x)) => x,
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    fn req_err(buf: &[u8]) -> HttpError {
        match parse_request::<16>(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn resp(buf: &[u8]) -> (Resp<'_>, usize) {
        match parse_response::<16>(buf) {
            Ok(Status::Complete(x)) => x,
            other => panic!("expected a complete response, got {other:?}"),
        }
    }

    fn resp_err(buf: &[u8]) -> HttpError {
        match parse_response::<16>(buf) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Decodes a body from `input` fed in pieces of the given sizes (cycled; 0 = the rest).
    /// Returns the body, the bytes used and whether it completed.
    fn decode_pieces(
        kind: BodyKind,
        max: u64,
        input: &[u8],
        pieces: &[usize],
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut dec = BodyDecoder::new(kind, max)?;
        let mut body = Vec::new();
        let mut pos = 0;
        let mut avail = 0;
        let mut i = 0;
        loop {
            if dec.is_done() {
                return Ok((body, pos, true));
            }
            if pos == avail {
                if avail == input.len() {
                    return Ok((body, pos, false));
                }
                let step = pieces.get(i % pieces.len().max(1)).copied().unwrap_or(0);
                i += 1;
                avail = if step == 0 {
                    input.len()
                } else {
                    (avail + step).min(input.len())
                };
            }
            let chunk = &input[pos..avail];
            let d = dec.decode(chunk)?;
            assert!(d.data.end <= d.consumed && d.consumed <= chunk.len());
            body.extend_from_slice(d.data_in(chunk));
            pos += d.consumed;
            if d.done {
                assert!(dec.is_done());
                return Ok((body, pos, true));
            }
            // Not done: all input was used unless a data run stopped short of it.
            assert!(d.consumed == chunk.len() || !d.data.is_empty());
        }
    }

    fn decode_all(
        kind: BodyKind,
        max: u64,
        input: &[u8],
    ) -> Result<(Vec<u8>, usize, bool), HttpError> {
        decode_pieces(kind, max, input, &[0])
    }

    // ---- requests -------------------------------------------------------------------------

    #[test]
    fn link_lookup_golden() {
        let (h, n) = req(LINK_LOOKUP);
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/lookup");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.body, BodyKind::Length(64));
        assert_eq!(h.content_length(), Some(64));
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert!(!h.upgrade);
        let names: Vec<&str> = h.headers().iter().map(|h| h.name).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "Accept",
                "Content-Length",
                "User-Agent",
                "Accept-Encoding",
                "Host",
                "Connection"
            ]
        );
        assert_eq!(h.header("Content-Type"), Some(&b"application/json"[..]));
        assert_eq!(h.header_str("HOST"), Some("127.0.0.1:39001"));
        assert_eq!(
            h.header("user-agent"),
            Some(&b"node-fetch/1.0 (+https://github.com/bitinn/node-fetch)"[..])
        );
        assert_eq!(h.header("x-missing"), None);
        assert_eq!(n, LINK_LOOKUP.len() - 64);
        let (body, used, done) = decode_all(h.body, 8192, &LINK_LOOKUP[n..]).unwrap();
        assert!(done);
        assert_eq!(used, 64);
        assert_eq!(body, LINK_LOOKUP_BODY);
        // The grape path is the endpoint name after the slash.
        assert_eq!(&h.path[1..], "lookup");
    }

    #[test]
    fn link_lookup_every_prefix_is_partial() {
        let (full, n) = req(LINK_LOOKUP);
        for len in 0..n {
            assert_eq!(
                parse_request::<16>(&LINK_LOOKUP[..len]),
                Ok(Status::Partial),
                "len {len}"
            );
        }
        for len in n..=LINK_LOOKUP.len() {
            assert_eq!(
                parse_request::<16>(&LINK_LOOKUP[..len]),
                Ok(Status::Complete((full, n)))
            );
        }
    }

    #[test]
    fn rpc_buffered_request_golden() {
        let (h, n) = req(RPC_REQUEST);
        assert_eq!((h.method, h.path), ("POST", "/"));
        assert_eq!(h.header("GRC-Compress"), Some(&b"none"[..]));
        assert!(!has_token(h.header("grc-compress").unwrap(), "gzip"));
        assert_eq!(h.body, BodyKind::Length(69));
        let (body, _, done) = decode_all(h.body, u64::MAX, &RPC_REQUEST[n..]).unwrap();
        assert!(done);
        assert_eq!(
            body,
            b"[\"55e171ac-0872-453a-b0c4-3d73b418477a\",\"rpc_test\",{\"hello\":\"world\"}]"
        );
    }

    #[test]
    fn rpc_stream_request_golden() {
        let (h, n) = req(RPC_STREAM);
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(!h.keep_alive, "connection: close");
        assert_eq!(
            h.header_str("_gr"),
            Some("[\"372c5f4a-c39f-42b6-9356-09b5590ae886\",\"rpc_test\"]")
        );
        assert_eq!(h.header_str("_a"), Some("upload"));
        assert_eq!(h.header_str("_AR"), Some("{\"foo\":\"bar\"}"));
        let (body, used, done) = decode_all(h.body, 8192, &RPC_STREAM[n..]).unwrap();
        assert!(done);
        assert_eq!(used, RPC_STREAM.len() - n);
        assert_eq!(body, b"hello world");
    }

    #[test]
    fn pipelined_requests_on_keep_alive() {
        let mut wire = Vec::new();
        wire.extend_from_slice(LINK_LOOKUP);
        wire.extend_from_slice(b"POST /announce HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"da\r\n3;x=y\r\nta\"\r\n0\r\nX-T: 1\r\n\r\n");
        wire.extend_from_slice(b"GET /get HTTP/1.1\r\nConnection: close\r\n\r\n");
        let mut at = 0;
        let mut seen = Vec::new();
        while at < wire.len() {
            let (h, n) = req(&wire[at..]);
            assert!(h.method == "POST" || h.method == "GET");
            let path = h.path;
            let keep = h.keep_alive;
            let (body, used, done) = decode_all(h.body, 8192, &wire[at + n..]).unwrap();
            assert!(done);
            seen.push((path, body, keep));
            at += n + used;
        }
        assert_eq!(at, wire.len());
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], ("/lookup", LINK_LOOKUP_BODY.to_vec(), true));
        assert_eq!(seen[1], ("/announce", b"{\"data\"".to_vec(), true));
        assert_eq!(seen[2], ("/get", Vec::new(), false));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (h, n) = req(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!((h.method, h.path, n), ("GET", "/", 22));
        assert_eq!(
            req_err(b"\r\rGET / HTTP/1.1\r\n\r\n"),
            HttpError::InvalidMethod
        );
    }

    #[test]
    fn versions_and_connection_semantics() {
        let (h, _) = req(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.1\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.1\r\nconnection: keep-alive\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = req(b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.upgrade && h.keep_alive);
        assert_eq!(h.header_str("upgrade"), Some("websocket"));
        // 1.2+ is served as 1.1 (RFC 9110 §6.2).
        assert_eq!(req(b"GET / HTTP/1.7\r\n\r\n").0.version, Version::Http11);
        assert_eq!(
            req_err(b"GET / HTTP/2.0\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            req_err(b"GET / HTTP/0.9\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(req_err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").status(), 505);
        assert_eq!(
            req_err(b"GET / HTTP/1.x\r\n\r\n"),
            HttpError::InvalidVersion
        );
        assert_eq!(req_err(b"GET / HTTP/11\r\n\r\n"), HttpError::InvalidVersion);
        assert_eq!(
            req_err(b"GET / http/1.1\r\n\r\n"),
            HttpError::InvalidVersion
        );
        assert_eq!(
            req_err(b"GET / HTTP/1.1 \r\n\r\n"),
            HttpError::InvalidVersion
        );
        assert_eq!(req_err(b"GET / HTTP/1.1\n\r\n"), HttpError::InvalidVersion);
        assert_eq!(req_err(b"GET /\r\n"), HttpError::InvalidTarget);
    }

    #[test]
    fn expect_continue() {
        let (h, _) =
            req(b"POST /lookup HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
        assert!(h.expect_continue);
        let (h, _) =
            req(b"POST /lookup HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        assert!(!h.expect_continue, "ignored in 1.0 requests");
        let (h, _) = req(b"POST /lookup HTTP/1.1\r\nExpect: something\r\n\r\n");
        assert!(!h.expect_continue);
        assert_eq!(CONTINUE_RESPONSE, b"HTTP/1.1 100 Continue\r\n\r\n");
        let (r, n) = resp(CONTINUE_RESPONSE);
        assert!(r.is_interim());
        assert_eq!(
            (r.code, r.body, n),
            (100, BodyKind::None, CONTINUE_RESPONSE.len())
        );
    }

    #[test]
    fn header_values_and_lookup() {
        let (h, _) = req(
            b"GET /x?y=1 HTTP/1.1\r\nA:b\r\nB: \t spaced \t \r\nC:\r\nD: caf\xc3\xa9 \xff\r\n\r\n",
        );
        assert_eq!(h.path, "/x?y=1");
        assert_eq!(h.header("a"), Some(&b"b"[..]));
        assert_eq!(h.header("b"), Some(&b"spaced"[..]));
        assert_eq!(h.header("c"), Some(&b""[..]));
        assert_eq!(h.header("d"), Some(&b"caf\xc3\xa9 \xff"[..]));
        assert_eq!(h.header_str("d"), None, "not UTF-8");
        assert_eq!(find_header(h.headers(), "B"), Some(&b"spaced"[..]));
        assert!(has_token(b"keep-alive , Upgrade", "upgrade"));
        assert!(has_token(b"gzip", "GZIP"));
        assert!(!has_token(b"gzipped, x", "gzip"));
        assert!(!has_token(b"", "x"));
        // Duplicate names are all kept, in order; `header` finds the first.
        let (h, _) = req(b"GET / HTTP/1.1\r\nX: 1\r\nx: 2\r\n\r\n");
        assert_eq!(h.headers().len(), 2);
        assert_eq!(h.header("X"), Some(&b"1"[..]));
    }

    #[test]
    fn malformed_requests_are_400() {
        let cases: &[(&[u8], HttpError)] = &[
            (b" / HTTP/1.1\r\n\r\n", HttpError::InvalidMethod),
            (b"GE(T / HTTP/1.1\r\n\r\n", HttpError::InvalidMethod),
            (b"GET  / HTTP/1.1\r\n\r\n", HttpError::InvalidTarget),
            (b"GET /a\x01b HTTP/1.1\r\n\r\n", HttpError::InvalidTarget),
            (b"GET /\xff HTTP/1.1\r\n\r\n", HttpError::InvalidTarget),
            (
                b"GET / HTTP/1.1\r\nA : b\r\n\r\n",
                HttpError::InvalidHeaderName,
            ),
            (
                b"GET / HTTP/1.1\r\n: b\r\n\r\n",
                HttpError::InvalidHeaderName,
            ),
            (b"GET / HTTP/1.1\r\nA\r\n\r\n", HttpError::InvalidHeaderName),
            (
                b"GET / HTTP/1.1\r\nA(b: c\r\n\r\n",
                HttpError::InvalidHeaderName,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                HttpError::ObsoleteFold,
            ),
            (b"GET / HTTP/1.1\r\n\tA: b\r\n\r\n", HttpError::ObsoleteFold),
            (
                b"GET / HTTP/1.1\r\nA: b\nB: c\r\n\r\n",
                HttpError::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\rB: c\r\n\r\n",
                HttpError::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n",
                HttpError::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n",
                HttpError::InvalidHeaderValue,
            ),
            (
                b"GET / HTTP/1.1\r\nA: b\r\n\rx",
                HttpError::InvalidHeaderName,
            ),
            (b"GET / HTTP/1.1\r\n\n", HttpError::InvalidHeaderName),
        ];
        for &(input, want) in cases {
            let got = req_err(input);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(got.status(), 400);
        }
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &str| {
            let s = std::format!("POST / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n");
            parse_request::<4>(s.as_bytes()).map(|st| st.complete().map(|(h, _)| h.body))
        };
        assert_eq!(cl("0"), Ok(Some(BodyKind::None)));
        assert_eq!(cl("012"), Ok(Some(BodyKind::Length(12))));
        assert_eq!(
            cl("18446744073709551615"),
            Ok(Some(BodyKind::Length(u64::MAX)))
        );
        for bad in [
            "",
            "+5",
            "-1",
            "5 5",
            "5,5",
            "0x10",
            "18446744073709551616",
            "1e3",
        ] {
            assert_eq!(cl(bad), Err(HttpError::InvalidContentLength), "{bad:?}");
        }
        let (h, _) = req(b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.body, BodyKind::Length(5));
        assert_eq!(
            req_err(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HttpError::InvalidContentLength
        );
    }

    #[test]
    fn transfer_encoding_rules() {
        let (h, _) = req(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        assert_eq!(h.content_length(), None);
        let te = |v: &str| {
            let s = std::format!("POST / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n\r\n");
            parse_request::<4>(s.as_bytes()).map(|st| st.complete().map(|(h, _)| h.body))
        };
        assert_eq!(te(" chunked ,"), Ok(Some(BodyKind::Chunked)));
        assert_eq!(te("gzip"), Err(HttpError::UnsupportedTransferCoding));
        assert_eq!(
            te("gzip, chunked"),
            Err(HttpError::UnsupportedTransferCoding)
        );
        assert_eq!(te("chunked;q=1"), Err(HttpError::UnsupportedTransferCoding));
        assert_eq!(
            te("chunked, chunked"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(te(""), Err(HttpError::InvalidTransferEncoding));
        assert_eq!(te(" , "), Err(HttpError::InvalidTransferEncoding));
        assert_eq!(HttpError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(
            req_err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::InvalidTransferEncoding
        );
        assert_eq!(
            req_err(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::ConflictingFraming
        );
        assert_eq!(
            req_err(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n")
                .status(),
            400
        );
        // HTTP/1.0 with Transfer-Encoding: framing is faulty, so close afterwards.
        let (h, _) =
            req(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body, BodyKind::Chunked);
        assert!(!h.keep_alive);
    }

    #[test]
    fn head_size_limit_is_431() {
        // A head of exactly MAX_HEAD bytes is accepted; one more byte is not.
        let build = |total: usize| {
            let mut v = b"GET / HTTP/1.1\r\nX: ".to_vec();
            let fill = total - v.len() - 4;
            v.extend(std::iter::repeat_n(b'a', fill));
            v.extend_from_slice(b"\r\n\r\n");
            assert_eq!(v.len(), total);
            v
        };
        let ok = build(MAX_HEAD);
        assert_eq!(req(&ok).1, MAX_HEAD);
        let big = build(MAX_HEAD + 1);
        assert_eq!(req_err(&big), HttpError::HeadTooLarge);
        assert_eq!(req_err(&big).status(), 431);
        // An unfinished head is Partial below the limit and 431 at it.
        assert_eq!(
            parse_request::<16>(&big[..MAX_HEAD - 1]),
            Ok(Status::Partial)
        );
        assert_eq!(
            parse_request::<16>(&big[..MAX_HEAD]),
            Err(HttpError::HeadTooLarge)
        );
        // An error inside the window still wins over the size.
        let mut bad = big.clone();
        bad[20] = 0;
        assert_eq!(req_err(&bad), HttpError::InvalidHeaderValue);
        // A custom limit.
        assert_eq!(
            parse_request_limited::<16>(LINK_LOOKUP, 100),
            Err(HttpError::HeadTooLarge)
        );
        assert!(matches!(
            parse_request_limited::<16>(LINK_LOOKUP, 16384),
            Ok(Status::Complete(_))
        ));
        assert_eq!(
            parse_response_limited::<16>(GRAPE_REPLY, 20),
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let two = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(parse_request::<2>(two), Ok(Status::Complete(_))));
        assert_eq!(parse_request::<1>(two), Err(HttpError::TooManyHeaders));
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert!(matches!(
            parse_request::<0>(b"GET / HTTP/1.1\r\n\r\n"),
            Ok(Status::Complete(_))
        ));
        assert_eq!(parse_request::<0>(two), Err(HttpError::TooManyHeaders));
        // Partial until the extra field's name is complete.
        assert_eq!(parse_request::<1>(&two[..23]), Ok(Status::Partial));
        assert_eq!(
            parse_request::<1>(&two[..24]),
            Err(HttpError::TooManyHeaders)
        );
        assert_eq!(
            parse_request::<1>(&LINK_LOOKUP[..200]),
            Err(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn error_statuses() {
        assert_eq!(HttpError::InvalidMethod.status(), 400);
        assert_eq!(HttpError::UnexpectedEof.status(), 400);
        assert_eq!(HttpError::InvalidChunkSize.status(), 400);
        assert_eq!(HttpError::HeadTooLarge.status(), 431);
        assert_eq!(HttpError::BodyTooLarge.status(), 413);
        assert_eq!(HttpError::UnsupportedTransferCoding.status(), 501);
        assert_eq!(HttpError::UnsupportedVersion.status(), 505);
        assert_eq!(
            std::format!("{}", HttpError::BodyTooLarge),
            "body too large"
        );
    }

    // ---- bodies ---------------------------------------------------------------------------

    #[test]
    fn length_body_split_and_remainder() {
        let input = b"hello worldNEXT";
        for pieces in [&[0usize][..], &[1], &[3, 1], &[5, 100]] {
            let (body, used, done) =
                decode_pieces(BodyKind::Length(11), 64, input, pieces).unwrap();
            assert_eq!(
                (body.as_slice(), used, done),
                (&b"hello world"[..], 11, true)
            );
        }
        let mut dec = BodyDecoder::new(BodyKind::Length(11), 64).unwrap();
        assert_eq!(dec.remaining(), Some(11));
        let d = dec.decode(b"hel").unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 3,
                data: 0..3,
                done: false
            }
        );
        assert_eq!((dec.remaining(), dec.received()), (Some(8), 3));
        assert_eq!(dec.finish(), Err(HttpError::UnexpectedEof));
        let d = dec.decode(b"").unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 0,
                data: 0..0,
                done: false
            }
        );
    }

    #[test]
    fn no_body_is_done_at_once() {
        for kind in [BodyKind::None, BodyKind::Length(0)] {
            let mut dec = BodyDecoder::new(kind, 0).unwrap();
            assert!(dec.is_done());
            assert_eq!(
                dec.decode(b"GET").unwrap(),
                Decoded {
                    consumed: 0,
                    data: 0..0,
                    done: true
                }
            );
            assert_eq!(dec.finish(), Ok(()));
        }
    }

    #[test]
    fn body_limit_is_413() {
        // The grape's limit: check_maxPayloadSize 8192.
        assert!(BodyDecoder::new(BodyKind::Length(8192), 8192).is_ok());
        assert_eq!(
            BodyDecoder::new(BodyKind::Length(8193), 8192),
            Err(HttpError::BodyTooLarge)
        );
        // Chunked: found as soon as a chunk size pushes the total over.
        let ok = b"1000\r\n";
        let mut dec = BodyDecoder::new(BodyKind::Chunked, 8192).unwrap();
        assert!(dec.decode(ok).is_ok());
        let mut dec = BodyDecoder::new(BodyKind::Chunked, 8192).unwrap();
        assert_eq!(dec.decode(b"2001"), Err(HttpError::BodyTooLarge));
        let mut wire = Vec::new();
        let mut tmp = [0u8; 8300];
        let n = write_chunk(&mut tmp, &[b'a'; 8000]).unwrap();
        wire.extend_from_slice(&tmp[..n]);
        let n = write_chunk(&mut tmp, &[b'b'; 192]).unwrap();
        wire.extend_from_slice(&tmp[..n]);
        let mut exact = wire.clone();
        exact.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            decode_all(BodyKind::Chunked, 8192, &exact).unwrap().0.len(),
            8192
        );
        let n = write_chunk(&mut tmp, b"c").unwrap();
        wire.extend_from_slice(&tmp[..n]);
        assert_eq!(
            decode_all(BodyKind::Chunked, 8192, &wire),
            Err(HttpError::BodyTooLarge)
        );
        // Until close: counted as it arrives.
        let mut dec = BodyDecoder::new(BodyKind::UntilClose, 4).unwrap();
        assert!(dec.decode(b"abcd").is_ok());
        assert_eq!(dec.decode(b"e"), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn chunked_extensions_and_trailers() {
        let input = b"5;name=value;x\r\nhello\r\n1 ; ext\r\n!\r\n00\r\nExpires: never\r\nX-Y: z\r\n\r\nNEXT";
        let (body, used, done) = decode_all(BodyKind::Chunked, 100, input).unwrap();
        assert!(done);
        assert_eq!(body, b"hello!");
        assert_eq!(&input[used..], b"NEXT");
        // Upper-case hex and leading zeros.
        let (body, _, done) =
            decode_all(BodyKind::Chunked, 100, b"0A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert!(done);
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn bad_chunks_are_400() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"\r\n", HttpError::InvalidChunkSize),
            (b"zz\r\n", HttpError::InvalidChunkSize),
            (b"-1\r\n", HttpError::InvalidChunkSize),
            (b"5\n", HttpError::InvalidChunkSize),
            (b"5\rx", HttpError::InvalidChunkSize),
            (b"5 x\r\n", HttpError::InvalidChunkSize),
            (b"5;a\nb\r\n", HttpError::InvalidChunkSize),
            (b"00000000000000001\r\n", HttpError::InvalidChunkSize),
            (b"5\r\nhelloX", HttpError::InvalidChunk),
            (b"5\r\nhello\rX", HttpError::InvalidChunk),
            (b"5\r\nhello\n", HttpError::InvalidChunk),
            (b"0\r\nA: b\n", HttpError::InvalidChunk),
            (b"0\r\nA: b\rX", HttpError::InvalidChunk),
            (b"0\r\n\rX", HttpError::InvalidChunk),
            (b"0\r\n\n", HttpError::InvalidChunk),
        ];
        for &(input, want) in cases {
            let got = decode_all(BodyKind::Chunked, u64::MAX, input);
            assert_eq!(got, Err(want), "{:?}", String::from_utf8_lossy(input));
            assert_eq!(want.status(), 400);
        }
        // 16 digits are fine (a u64); the limit decides.
        let mut dec = BodyDecoder::new(BodyKind::Chunked, u64::MAX).unwrap();
        assert!(dec.decode(b"ffffffffffffffff\r\n").is_ok());
        // Extension length is bounded.
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_EXT));
        long.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert!(decode_all(BodyKind::Chunked, 10, &long).is_ok());
        long.insert(3, b'x');
        assert_eq!(
            decode_all(BodyKind::Chunked, 10, &long),
            Err(HttpError::InvalidChunkSize)
        );
        // Trailers are bounded by MAX_HEAD.
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_HEAD + 100 {
            trailers.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(
            decode_all(BodyKind::Chunked, 10, &trailers),
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn chunked_byte_by_byte_equals_one_shot() {
        let input = &RPC_STREAM[req(RPC_STREAM).1..];
        let one = decode_all(BodyKind::Chunked, 100, input).unwrap();
        for pieces in [&[1usize][..], &[2], &[3, 1, 7], &[13]] {
            assert_eq!(
                decode_pieces(BodyKind::Chunked, 100, input, pieces).unwrap(),
                one
            );
        }
    }

    #[test]
    fn until_close_and_eof() {
        let mut dec = BodyDecoder::new(BodyKind::UntilClose, 100).unwrap();
        let d = dec.decode(b"abc").unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 3,
                data: 0..3,
                done: false
            }
        );
        assert!(!dec.is_done());
        assert_eq!(dec.finish(), Ok(()));
        assert!(dec.is_done());
        let mut dec = BodyDecoder::new(BodyKind::Chunked, 100).unwrap();
        dec.decode(b"3\r\nab").unwrap();
        assert_eq!(dec.finish(), Err(HttpError::UnexpectedEof));
    }

    #[test]
    fn decode_in_place_compacts_chunks() {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut buf = Vec::new();
        buf.extend_from_slice(head);
        buf.extend_from_slice(b"6\r\nhello \r\n5;e\r\nworld\r\n0\r\n\r\nGET /");
        let total = buf.len();
        let (h, n) = req(&buf);
        let mut dec = BodyDecoder::new(h.body, 100).unwrap();
        // Bytes arrive in two reads: the decoder picks up where it stopped.
        let split = n + 12;
        let st = dec.decode_in_place(&mut buf, n, n, split).unwrap();
        assert!(!st.done);
        assert_eq!(st.read, split);
        let st = dec
            .decode_in_place(&mut buf, st.read, st.write, total)
            .unwrap();
        assert!(st.done);
        assert_eq!(&buf[n..st.write], b"hello world");
        assert_eq!(&buf[st.read..], b"GET /");
        // Bad cursors stop without touching anything.
        let mut dec = BodyDecoder::new(BodyKind::Length(3), 100).unwrap();
        let mut small = *b"abc";
        let st = dec.decode_in_place(&mut small, 2, 3, 3).unwrap();
        assert_eq!(
            st,
            InPlace {
                read: 2,
                write: 3,
                done: false
            }
        );
        let st = dec.decode_in_place(&mut small, 0, 0, 9).unwrap();
        assert_eq!(
            st,
            InPlace {
                read: 0,
                write: 0,
                done: false
            }
        );
    }

    // ---- responses ------------------------------------------------------------------------

    #[test]
    fn grape_reply_golden() {
        let (r, n) = resp(GRAPE_REPLY);
        assert_eq!(
            (r.version, r.code, r.reason),
            (Version::Http11, 200, &b"OK"[..])
        );
        assert_eq!(r.body, BodyKind::Length(18));
        assert!(r.keep_alive);
        assert_eq!(r.header_str("keep-alive"), Some("timeout=5"));
        assert_eq!(r.headers().len(), 4);
        let (body, _, done) = decode_all(r.body, 1 << 20, &GRAPE_REPLY[n..]).unwrap();
        assert!(done);
        assert_eq!(body, b"[\"127.0.0.1:1337\"]");
    }

    #[test]
    fn rpc_reply_golden() {
        let (r, n) = resp(RPC_REPLY);
        assert_eq!(r.body, BodyKind::Chunked);
        assert!(!r.keep_alive);
        let (body, used, done) = decode_all(r.body, 1 << 20, &RPC_REPLY[n..]).unwrap();
        assert!(done);
        assert_eq!(used, RPC_REPLY.len() - n);
        assert_eq!(body, b"[\"r1\",null,{\"ok\":\"hi\"}]");
    }

    #[test]
    fn response_framing() {
        // Grape's 413 (docs/protocol.md §3.4).
        let (r, _) = resp(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 22\r\n\r\nERR_GRAPE_PAYLOAD_SIZE",
        );
        assert_eq!((r.code, r.body), (413, BodyKind::Length(22)));
        // No framing: until close, and the connection is done.
        let (r, _) = resp(b"HTTP/1.1 200 OK\r\n\r\nabc");
        assert_eq!(r.body, BodyKind::UntilClose);
        assert!(!r.keep_alive);
        // Statuses without a body ignore framing headers.
        for code in ["101", "204", "304", "199"] {
            let s = std::format!("HTTP/1.1 {code} X\r\nContent-Length: 5\r\n\r\n");
            let (r, _) = resp(s.as_bytes());
            assert_eq!(r.body, BodyKind::None, "{code}");
        }
        let (r, _) = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.body, BodyKind::None);
        assert!(r.keep_alive);
        // Transfer-Encoding overrides Content-Length; the connection is not reused.
        let (r, _) =
            resp(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(r.body, BodyKind::Chunked);
        assert!(!r.keep_alive);
        // HTTP/1.0.
        let (r, _) = resp(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert!(!r.keep_alive);
        let (r, _) =
            resp(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx");
        assert!(r.keep_alive);
        // No reason phrase, with or without the space.
        let (r, _) = resp(b"HTTP/1.1 500\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((r.code, r.reason), (500, &b""[..]));
        let (r, _) = resp(b"HTTP/1.1 302 \r\n\r\n");
        assert_eq!((r.code, r.reason), (302, &b""[..]));
        assert_eq!(r.content_length(), None);
    }

    #[test]
    fn interim_then_final_response() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        let (r, n) = resp(wire);
        assert!(r.is_interim());
        let (r, m) = resp(&wire[n..]);
        assert!(!r.is_interim());
        assert_eq!(&wire[n + m..], b"[]");
    }

    #[test]
    fn malformed_responses() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"HTTP/1.1 20x OK\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1 099 OK\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1 2000 OK\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1  200 OK\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1 200 O\x00K\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1 200 OK\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/1.1\r\n\r\n", HttpError::InvalidStatus),
            (b"ICY 200 OK\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/2 200\r\n\r\n", HttpError::InvalidStatus),
            (b"HTTP/2.0 200 OK\r\n\r\n", HttpError::UnsupportedVersion),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                HttpError::UnsupportedTransferCoding,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                HttpError::InvalidContentLength,
            ),
        ];
        for &(input, want) in cases {
            assert_eq!(
                resp_err(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    // ---- writers --------------------------------------------------------------------------

    /// Link's request, rebuilt with the writer, is byte-identical to the capture.
    #[test]
    fn write_link_lookup_golden() {
        let headers = [
            Header::new("content-type", b"application/json"),
            Header::new("Accept", b"*/*"),
        ];
        let tail = [
            Header::new(
                "User-Agent",
                b"node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
            ),
            Header::new("Accept-Encoding", b"gzip,deflate"),
            Header::new("Host", b"127.0.0.1:39001"),
            Header::new("Connection", b"keep-alive"),
        ];
        // node-fetch puts Content-Length between Accept and User-Agent; the writer puts the
        // framing header last, so pass it as an ordinary header here to match the bytes.
        let mut all = Vec::new();
        all.extend_from_slice(&headers);
        all.push(Header::new("Content-Length", b"64"));
        all.extend_from_slice(&tail);
        let mut out = [0u8; 512];
        let n = write_request_head(&mut out, "POST", "/lookup", &all, BodyKind::None).unwrap();
        out[n..n + 64].copy_from_slice(LINK_LOOKUP_BODY);
        assert_eq!(&out[..n + 64], LINK_LOOKUP);

        // The usual way: framing from BodyKind; it parses back to the same request.
        let mut all = Vec::new();
        all.extend_from_slice(&headers);
        all.extend_from_slice(&tail);
        let n =
            write_request_head(&mut out, "POST", "/lookup", &all, BodyKind::Length(64)).unwrap();
        let (h, m) = req(&out[..n]);
        assert_eq!(m, n);
        assert_eq!(h.body, BodyKind::Length(64));
        assert_eq!(h.headers().last().map(|h| h.name), Some("Content-Length"));
    }

    #[test]
    fn write_response_heads() {
        let mut out = [0u8; 256];
        let n = write_response_head(
            &mut out,
            200,
            None,
            &[Header::new("Connection", b"keep-alive")],
            BodyKind::Length(18),
        )
        .unwrap();
        assert_eq!(
            &out[..n],
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 18\r\n\r\n"
        );
        let err = HttpError::BodyTooLarge;
        let n =
            write_response_head(&mut out, err.status(), None, &[], BodyKind::Length(22)).unwrap();
        assert_eq!(
            &out[..n],
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 22\r\n\r\n"
        );
        let n = write_response_head(&mut out, 200, Some("Fine"), &[], BodyKind::Chunked).unwrap();
        assert_eq!(
            &out[..n],
            b"HTTP/1.1 200 Fine\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let n = write_response_head(
            &mut out,
            101,
            None,
            &[
                Header::new("Upgrade", b"websocket"),
                Header::new("Connection", b"Upgrade"),
            ],
            BodyKind::None,
        )
        .unwrap();
        assert_eq!(
            &out[..n],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        );
        let n = write_response_head(&mut out, 599, None, &[], BodyKind::UntilClose).unwrap();
        assert_eq!(&out[..n], b"HTTP/1.1 599 \r\n\r\n");
        let (r, _) = resp(&out[..n]);
        assert_eq!(r.code, 599);
    }

    #[test]
    fn writers_refuse_injection() {
        let mut out = [0u8; 256];
        let bad_headers: &[Header<'_>] = &[
            Header::new("X", b"a\r\nEvil: 1"),
            Header::new("X", b"a\nb"),
            Header::new("X", b"a\0b"),
            Header::new("X Y", b"a"),
            Header::new("X:", b"a"),
            Header::new("", b"a"),
        ];
        for h in bad_headers {
            let got = write_response_head(
                &mut out,
                200,
                None,
                core::slice::from_ref(h),
                BodyKind::None,
            );
            assert_eq!(got, Err(WriteError::InvalidField), "{h:?}");
        }
        assert_eq!(
            write_response_head(&mut out, 200, Some("O\r\nK"), &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_response_head(&mut out, 99, None, &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_response_head(&mut out, 1000, None, &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_request_head(&mut out, "GE T", "/", &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_request_head(&mut out, "", "/", &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_request_head(&mut out, "GET", "/a b", &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
        assert_eq!(
            write_request_head(&mut out, "GET", "", &[], BodyKind::None),
            Err(WriteError::InvalidField)
        );
    }

    #[test]
    fn writers_report_buffer_full_at_every_size() {
        let headers = [Header::new("Host", b"127.0.0.1:39001")];
        let mut big = [0u8; 256];
        let n = write_request_head(&mut big, "POST", "/lookup", &headers, BodyKind::Length(64))
            .unwrap();
        for size in 0..n {
            let mut out = std::vec![0u8; size];
            assert_eq!(
                write_request_head(&mut out, "POST", "/lookup", &headers, BodyKind::Length(64)),
                Err(WriteError::BufferFull)
            );
        }
        let m = write_chunk(&mut big, b"hello").unwrap();
        for size in 0..m {
            let mut out = std::vec![0u8; size];
            assert_eq!(write_chunk(&mut out, b"hello"), Err(WriteError::BufferFull));
        }
        assert_eq!(write_last_chunk(&mut [0u8; 4]), Err(WriteError::BufferFull));
        assert_eq!(
            write_chunk_header(&mut [0u8; 2], 0x100),
            Err(WriteError::BufferFull)
        );
    }

    #[test]
    fn chunk_writers() {
        let mut out = [0u8; 64];
        let n = write_chunk(&mut out, b"[\"r1\",null,{\"ok\":\"hi\"}]").unwrap();
        assert_eq!(&out[..n], b"17\r\n[\"r1\",null,{\"ok\":\"hi\"}]\r\n");
        assert_eq!(write_chunk(&mut out, b""), Ok(0));
        let n = write_last_chunk(&mut out).unwrap();
        assert_eq!(&out[..n], b"0\r\n\r\n");
        let n = write_chunk_header(&mut out, 0xabc).unwrap();
        assert_eq!(&out[..n], b"abc\r\n");
        let n = write_chunk_header(&mut out, 0).unwrap();
        assert_eq!(&out[..n], b"0\r\n");
        assert_eq!(CHUNK_END, b"\r\n");
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(413), "Payload Too Large");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(500), "Internal Server Error");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
        assert_eq!(reason_phrase(299), "");
        // Every status an HttpError maps to has a phrase.
        for e in [
            HttpError::InvalidMethod,
            HttpError::HeadTooLarge,
            HttpError::BodyTooLarge,
            HttpError::UnsupportedTransferCoding,
            HttpError::UnsupportedVersion,
        ] {
            assert!(!reason_phrase(e.status()).is_empty());
        }
    }

    // ---- properties -----------------------------------------------------------------------

    /// Either Partial or the same answer as the whole input, for every prefix; and a complete
    /// head is Partial exactly below its length.
    fn check_prefixes_request(input: &[u8]) {
        let full = parse_request::<8>(input);
        for len in 0..input.len() {
            let p = parse_request::<8>(&input[..len]);
            match (&p, &full) {
                (Ok(Status::Partial), _) => {
                    if let Ok(Status::Complete((_, n))) = &full {
                        assert!(len < *n, "partial at {len} but head is {n}");
                    }
                }
                _ => assert_eq!(p, full, "prefix {len}"),
            }
        }
    }

    fn check_prefixes_response(input: &[u8]) {
        let full = parse_response::<8>(input);
        for len in 0..input.len() {
            let p = parse_response::<8>(&input[..len]);
            if p != Ok(Status::Partial) {
                assert_eq!(p, full, "prefix {len}");
            }
        }
    }

    /// Inputs that look like requests, then get damaged: these reach deep parser states.
    fn request_like() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(std::vec![
            &b"GET "[..],
            b"POST ",
            b"/lookup ",
            b"/ ",
            b"HTTP/1.1\r\n",
            b"HTTP/1.0\r\n",
            b"HTTP/2.0\r\n",
            b"Host: x\r\n",
            b"Content-Length: 3\r\n",
            b"Content-Length: 4\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"Connection: close\r\n",
            b"Expect: 100-continue\r\n",
            b"X:\r\n",
            b" folded\r\n",
            b"\r\n",
            b"\r",
            b"\n",
            b":",
            b" ",
            b"abc",
            b"\x00",
            b"\xff",
        ]);
        prop::collection::vec(pieces, 0..16).prop_map(|v| v.concat())
    }

    fn response_like() -> impl Strategy<Value = Vec<u8>> {
        let pieces = prop::sample::select(std::vec![
            &b"HTTP/1.1 "[..],
            b"HTTP/1.0 ",
            b"200 OK\r\n",
            b"204 \r\n",
            b"100\r\n",
            b"413 X\r\n",
            b"Content-Length: 3\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Connection: keep-alive\r\n",
            b"X: y\r\n",
            b"\r\n",
            b"\r",
            b" ",
            b"9",
            b"\x00",
        ]);
        prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
    }

    #[derive(Debug, Clone)]
    struct Msg {
        method: &'static str,
        path: std::string::String,
        headers: Vec<(std::string::String, Vec<u8>)>,
        body: Vec<u8>,
        chunked: bool,
        cuts: Vec<usize>,
    }

    fn msg() -> impl Strategy<Value = Msg> {
        let method = prop::sample::select(std::vec!["GET", "POST", "PUT", "X-CUSTOM"]);
        let path = "/[a-z0-9_:.?=&%-]{0,30}";
        let name = "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_filter("not framing", |n| {
            let l = n.to_ascii_lowercase();
            l != "content-length" && l != "transfer-encoding"
        });
        let value = "[!-~]([ -~]{0,20}[!-~])?".prop_map(|s| s.into_bytes());
        let header = (name, prop_oneof![value, Just(Vec::new())]);
        (
            method,
            path,
            prop::collection::vec(header, 0..8),
            prop::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            prop::collection::vec(1usize..64, 0..8),
        )
            .prop_map(|(method, path, headers, body, chunked, cuts)| Msg {
                method,
                path,
                headers,
                body,
                chunked,
                cuts,
            })
    }

    /// Encodes a body as chunks cut at the given sizes.
    fn chunked_body(body: &[u8], cuts: &[usize], out: &mut Vec<u8>) {
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let take = cuts.get(i).copied().unwrap_or(rest.len()).min(rest.len());
            i += 1;
            let mut tmp = std::vec![0u8; take + 32];
            let n = write_chunk(&mut tmp, &rest[..take]).unwrap();
            out.extend_from_slice(&tmp[..n]);
            rest = &rest[take..];
        }
        let mut tmp = [0u8; 8];
        let n = write_last_chunk(&mut tmp).unwrap();
        out.extend_from_slice(&tmp[..n]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsers_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_request::<4>(&input);
            let _ = parse_response::<4>(&input);
            let _ = parse_request_limited::<4>(&input, 32);
        }

        #[test]
        fn body_decoder_never_panics(
            input in prop::collection::vec(any::<u8>(), 0..600),
            kind in prop_oneof![
                Just(BodyKind::None),
                (0u64..1000).prop_map(BodyKind::Length),
                Just(BodyKind::Chunked),
                Just(BodyKind::UntilClose),
            ],
            max in 0u64..2000,
            pieces in prop::collection::vec(0usize..40, 1..6),
        ) {
            let _ = decode_pieces(kind, max, &input, &pieces);
            if let Ok(mut dec) = BodyDecoder::new(kind, max) {
                let mut buf = input.clone();
                let end = buf.len();
                let _ = dec.decode_in_place(&mut buf, 0, 0, end);
            }
        }

        #[test]
        fn request_prefixes_agree_arbitrary(input in prop::collection::vec(any::<u8>(), 0..200)) {
            check_prefixes_request(&input);
        }

        #[test]
        fn request_prefixes_agree_structured(input in request_like()) {
            check_prefixes_request(&input);
        }

        #[test]
        fn response_prefixes_agree_structured(input in response_like()) {
            check_prefixes_response(&input);
        }

        #[test]
        fn chunked_split_invariance(
            body in prop::collection::vec(any::<u8>(), 0..400),
            cuts in prop::collection::vec(1usize..50, 0..10),
            pieces in prop::collection::vec(1usize..20, 1..5),
            damage in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut wire = Vec::new();
            chunked_body(&body, &cuts, &mut wire);
            if let Some((at, byte)) = damage {
                let i = at.index(wire.len());
                wire[i] = byte;
            }
            wire.extend_from_slice(b"NEXT");
            let one = decode_all(BodyKind::Chunked, 1000, &wire);
            let split = decode_pieces(BodyKind::Chunked, 1000, &wire, &pieces);
            let bytewise = decode_pieces(BodyKind::Chunked, 1000, &wire, &[1]);
            prop_assert_eq!(&split, &one);
            prop_assert_eq!(&bytewise, &one);
            if damage.is_none() {
                let (got, used, done) = one.unwrap();
                prop_assert!(done);
                prop_assert_eq!(got, body);
                prop_assert_eq!(&wire[used..], b"NEXT");
            }
            // In place gives the same body.
            if let Ok((want, used, true)) = decode_all(BodyKind::Chunked, 1000, &wire) {
                let mut buf = wire.clone();
                let mut dec = BodyDecoder::new(BodyKind::Chunked, 1000).unwrap();
                let end = buf.len();
                let st = dec.decode_in_place(&mut buf, 0, 0, end).unwrap();
                prop_assert!(st.done);
                prop_assert_eq!(st.read, used);
                prop_assert_eq!(&buf[..st.write], &want[..]);
            }
        }

        #[test]
        fn request_roundtrip(m in msg()) {
            let headers: Vec<Header<'_>> =
                m.headers.iter().map(|(n, v)| Header::new(n, v)).collect();
            let kind = if m.chunked { BodyKind::Chunked } else { BodyKind::Length(m.body.len() as u64) };
            let mut out = std::vec![0u8; 2048];
            let n = write_request_head(&mut out, m.method, &m.path, &headers, kind).unwrap();
            let mut wire = out[..n].to_vec();
            if m.chunked {
                chunked_body(&m.body, &m.cuts, &mut wire);
            } else {
                wire.extend_from_slice(&m.body);
            }
            // A second request follows on the same connection.
            wire.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");

            let (h, hn) = req(&wire);
            prop_assert_eq!(hn, n);
            prop_assert_eq!(h.method, m.method);
            prop_assert_eq!(h.path, m.path.as_str());
            prop_assert!(h.keep_alive);
            let got: Vec<(&str, &[u8])> = h.headers().iter().map(|h| (h.name, h.value)).collect();
            let mut want: Vec<(&str, &[u8])> =
                m.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            let cl = m.body.len().to_string().into_bytes();
            match kind {
                BodyKind::Chunked => want.push(("Transfer-Encoding", b"chunked")),
                _ => want.push(("Content-Length", &cl)),
            }
            prop_assert_eq!(got, want);
            let want_kind = if m.body.is_empty() && !m.chunked { BodyKind::None } else { kind };
            prop_assert_eq!(h.body, want_kind);
            for pieces in [&[0usize][..], &[1], &m.cuts] {
                let (body, used, done) = decode_pieces(h.body, 300, &wire[hn..], pieces).unwrap();
                prop_assert!(done);
                prop_assert_eq!(&body, &m.body);
                prop_assert_eq!(&wire[hn + used..], b"GET /next HTTP/1.1\r\n\r\n");
            }
            // Byte-by-byte arrival of the head: Partial until the last byte.
            for len in 0..hn {
                prop_assert_eq!(parse_request::<16>(&wire[..len]), Ok(Status::Partial));
            }
        }

        #[test]
        fn response_roundtrip(
            code in 100u16..1000,
            headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[!-~]{1,20}"), 0..6),
            body in prop::collection::vec(any::<u8>(), 1..100),
            chunked in any::<bool>(),
        ) {
            let headers: Vec<(std::string::String, std::string::String)> = headers
                .into_iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length")
                    && !n.eq_ignore_ascii_case("transfer-encoding")
                    && !n.eq_ignore_ascii_case("connection"))
                .collect();
            let hs: Vec<Header<'_>> = headers.iter().map(|(n, v)| Header::new(n, v.as_bytes())).collect();
            let kind = if chunked { BodyKind::Chunked } else { BodyKind::Length(body.len() as u64) };
            let mut out = std::vec![0u8; 1024];
            let n = write_response_head(&mut out, code, None, &hs, kind).unwrap();
            let mut wire = out[..n].to_vec();
            if chunked { chunked_body(&body, &[7], &mut wire) } else { wire.extend_from_slice(&body) }
            let (r, rn) = resp(&wire);
            prop_assert_eq!(rn, n);
            prop_assert_eq!(r.code, code);
            prop_assert_eq!(r.reason, reason_phrase(code).as_bytes());
            prop_assert_eq!(r.headers().len(), hs.len() + 1);
            let bodiless = (100..200).contains(&code) || code == 204 || code == 304;
            if bodiless {
                prop_assert_eq!(r.body, BodyKind::None);
            } else {
                prop_assert_eq!(r.body, kind);
                let (got, _, done) = decode_pieces(r.body, 1000, &wire[rn..], &[3]).unwrap();
                prop_assert!(done);
                prop_assert_eq!(got, body);
            }
            check_prefixes_response(&wire[..rn]);
        }
    }
}
