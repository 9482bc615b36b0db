//! Writers of request and response heads, into a caller's `&mut [u8]`.

use super::head::{is, TARGET, TCHAR, VALUE};
use super::{BodyKind, Header};
use crate::wire::BufferFull;
use core::fmt;

/// Why a head could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteError {
    /// The output buffer is too small ([`BufferFull`] converts into this).
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

impl From<BufferFull> for WriteError {
    fn from(_: BufferFull) -> Self {
        WriteError::BufferFull
    }
}

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
    fn put(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferFull)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(BufferFull)?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// `n` in decimal (a status code, a `Content-Length`).
    fn decimal(&mut self, mut n: u64) -> Result<(), BufferFull> {
        // u64::MAX has 20 decimal digits.
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            if let Some(slot) = tmp.get_mut(i) {
                *slot = b'0' + (n % 10) as u8;
            }
            n /= 10;
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
                self.decimal(n)?;
                self.put(b"\r\n")?;
            }
            BodyKind::Chunked => self.put(b"Transfer-Encoding: chunked\r\n")?,
            BodyKind::None | BodyKind::UntilClose => {}
        }
        Ok(self.put(b"\r\n")?)
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
    o.decimal(u64::from(status))?;
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

#[cfg(test)]
mod tests;
