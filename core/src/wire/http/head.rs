//! Request and response heads: the byte classes, the left-to-right parse of the start line
//! and header fields, and what the fields mean for framing (`Content-Length`,
//! `Transfer-Encoding`, `Connection`, `Expect`).

use super::{find_header, list_elements, BodyKind, Header, HttpError, Status, Version, MAX_HEAD};

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
    /// HTTP/1.1 with `Expect: 100-continue`: send [`CONTINUE_RESPONSE`](super::CONTINUE_RESPONSE)
    /// before reading the body (or answer with a final status and close).
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
pub(super) const TCHAR: u8 = 1; // RFC 9110 token character
pub(super) const VALUE: u8 = 2; // field-value byte: HTAB, SP, VCHAR, obs-text
pub(super) const TARGET: u8 = 4; // request-target byte: VCHAR and obs-text (no SP, no CTL)

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

pub(super) fn is(b: u8, class: u8) -> bool {
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

#[cfg(test)]
mod tests;
