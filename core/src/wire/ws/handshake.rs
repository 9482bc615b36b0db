//! The server side of the opening handshake (RFC 6455 §4.2), over already-parsed HTTP headers.
//!
//! The HTTP parser (request line, header split) is not here: these functions take the headers
//! as `(name, value)` byte pairs in any order, so they work with any parser. Header names are
//! compared ASCII case-insensitively and values are trimmed of surrounding whitespace.
//!
//! Grenache specifics (docs/protocol.md §9.1): the Node client sends `GET /ws` with
//! `Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits`, which the server
//! declines by not echoing it; the server must accept any path and must never answer with an
//! unrequested extension or subprotocol (the Node client would crash). The 101 written here
//! is byte-for-byte what Node's `ws` server sends.

use core::fmt;

use crate::wire::base64;
use crate::wire::http::has_token;
use crate::wire::BufferFull;

/// The GUID appended to the client's key before hashing (RFC 6455 §1.3).
pub const GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an opening handshake is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HandshakeError {
    /// No `Upgrade` header: a plain HTTP request. A server answers it as HTTP, or with
    /// [`write_upgrade_required`] (426) as Node's `ws` does.
    NotUpgrade,
    /// `Upgrade` is present but does not name `websocket`.
    UpgradeNotWebSocket,
    /// `Connection` does not contain the `upgrade` token.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version` header.
    MissingVersion,
    /// `Sec-WebSocket-Version` is not `13`; answer 426 with `Sec-WebSocket-Version: 13`
    /// ([`write_upgrade_required`]).
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header.
    MissingKey,
    /// `Sec-WebSocket-Key` is not 24 base64 characters encoding 16 bytes.
    InvalidKey,
    /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version` or `Sec-WebSocket-Accept` appears twice.
    DuplicateHeader,
    /// The output buffer is too small.
    BufferFull,
}

impl From<BufferFull> for HandshakeError {
    fn from(_: BufferFull) -> Self {
        HandshakeError::BufferFull
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            HandshakeError::NotUpgrade => "not an upgrade request",
            HandshakeError::UpgradeNotWebSocket => "Upgrade is not websocket",
            HandshakeError::MissingConnectionUpgrade => "Connection lacks the upgrade token",
            HandshakeError::MissingVersion => "missing Sec-WebSocket-Version",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version is not 13",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "invalid Sec-WebSocket-Key",
            HandshakeError::DuplicateHeader => "duplicate WebSocket header",
            HandshakeError::BufferFull => "output buffer too small",
        };
        write!(f, "ws handshake: {s}")
    }
}

impl core::error::Error for HandshakeError {}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key ‖ [`GUID`])).
///
/// The key is used as given (already trimmed), as RFC 6455 §4.2.2 specifies.
pub fn accept_key(sec_websocket_key: &[u8]) -> [u8; 28] {
    let mut sha = crate::wire::sha1::Sha1::new();
    sha.update(sec_websocket_key);
    sha.update(GUID);
    let digest = sha.digest();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 characters, so this cannot fail.
    let _ = base64::encode(&digest, &mut out);
    out
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: 22 base64 characters then `==`, i.e. the
/// encoding of 16 bytes. Like Node's `ws`, the unused bits of the last symbol are not checked,
/// so that no real client is refused over them.
fn valid_key(key: &[u8]) -> bool {
    match key.split_at_checked(22) {
        Some((body, b"==")) => body
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'),
        _ => false,
    }
}

/// Checks the headers of a server-side upgrade request (RFC 6455 §4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for the 101 ([`write_switching_protocols`]).
///
/// Requires `Upgrade` to contain `websocket`, `Connection` to contain `upgrade` (both token
/// lists, case-insensitive, over all occurrences), exactly one `Sec-WebSocket-Version: 13`
/// and exactly one `Sec-WebSocket-Key` of 24 base64 characters. Other headers are ignored:
/// `Sec-WebSocket-Extensions` and `Sec-WebSocket-Protocol` offers are declined by not
/// answering them, any path is fine, and `Host`/`Origin` are not checked (Grenache clients
/// send no `Origin`). The method (`GET`) and version (HTTP/1.1) belong to the HTTP parser.
pub fn check_upgrade_request<'h, I>(headers: I) -> Result<[u8; 28], HandshakeError>
where
    I: IntoIterator<Item = (&'h [u8], &'h [u8])>,
{
    let mut upgrade_seen = false;
    let mut upgrade_ok = false;
    let mut connection_ok = false;
    let mut version: Option<&[u8]> = None;
    let mut key: Option<&[u8]> = None;
    let mut duplicate = false;
    for (name, value) in headers {
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_seen = true;
            upgrade_ok |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_ok |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            duplicate |= version.replace(value).is_some();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            duplicate |= key.replace(value).is_some();
        }
    }
    if !upgrade_seen {
        return Err(HandshakeError::NotUpgrade);
    }
    if !upgrade_ok {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    if !connection_ok {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if duplicate {
        return Err(HandshakeError::DuplicateHeader);
    }
    match version {
        None => return Err(HandshakeError::MissingVersion),
        Some(b"13") => {}
        Some(_) => return Err(HandshakeError::UnsupportedVersion),
    }
    let key = key.ok_or(HandshakeError::MissingKey)?;
    if !valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    Ok(accept_key(key))
}

/// Appends byte strings to a borrowed buffer.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        let end = self.len.checked_add(bytes.len()).ok_or(BufferFull)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(BufferFull)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }
}

/// Length of the response written by [`write_switching_protocols`].
pub const SWITCHING_PROTOCOLS_LEN: usize = 129;

/// Writes the server's 101 response (exactly what Node's `ws` sends) and returns its length,
/// [`SWITCHING_PROTOCOLS_LEN`]. No extension and no subprotocol is selected.
pub fn write_switching_protocols(accept: &[u8; 28], out: &mut [u8]) -> Result<usize, BufferFull> {
    let mut c = Cursor { buf: out, len: 0 };
    c.put(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")?;
    c.put(b"Sec-WebSocket-Accept: ")?;
    c.put(accept)?;
    c.put(b"\r\n\r\n")?;
    Ok(c.len)
}

/// The 426 response for a plain HTTP request or a wrong `Sec-WebSocket-Version` (RFC 6455
/// §4.4 wants the supported version listed). Node's `ws` answers plain requests with 426 too.
const UPGRADE_REQUIRED: &[u8] = b"HTTP/1.1 426 Upgrade Required\r\n\
Sec-WebSocket-Version: 13\r\n\
Content-Type: text/plain\r\n\
Content-Length: 16\r\n\
Connection: close\r\n\
\r\n\
Upgrade Required";

/// Writes a `426 Upgrade Required` response (with `Sec-WebSocket-Version: 13` and a short
/// body, then the server closes) and returns its length.
pub fn write_upgrade_required(out: &mut [u8]) -> Result<usize, BufferFull> {
    let mut c = Cursor { buf: out, len: 0 };
    c.put(UPGRADE_REQUIRED)?;
    Ok(c.len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    type H<'a> = (&'a [u8], &'a [u8]);

    /// The request Node's grenache-nodejs-ws client sends (docs/protocol.md §9.1).
    fn node_request() -> [H<'static>; 6] {
        [
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", b"0IQeXToFkIqpmC9+DVRQmw=="),
            (b"Connection", b"Upgrade"),
            (b"Upgrade", b"websocket"),
            (
                b"Sec-WebSocket-Extensions",
                b"permessage-deflate; client_max_window_bits",
            ),
            (b"Host", b"127.0.0.1:39006"),
        ]
    }

    fn with(
        mut hs: Vec<H<'static>>,
        name: &'static [u8],
        value: Option<&'static [u8]>,
    ) -> Vec<H<'static>> {
        hs.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            hs.push((name, v));
        }
        hs
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_node_client_and_writes_node_response() {
        let accept = check_upgrade_request(node_request()).unwrap();
        assert_eq!(accept, accept_key(b"0IQeXToFkIqpmC9+DVRQmw=="));
        let mut out = [0u8; 256];
        let n = write_switching_protocols(&accept, &mut out).unwrap();
        assert_eq!(n, SWITCHING_PROTOCOLS_LEN);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
        expected.extend_from_slice(&accept);
        expected.extend_from_slice(b"\r\n\r\n");
        assert_eq!(&out[..n], &expected[..]);
        assert_eq!(
            write_switching_protocols(&accept, &mut out[..n - 1]),
            Err(BufferFull)
        );
    }

    #[test]
    fn header_matching_is_lenient_where_rfc_allows() {
        let hs: [H<'_>; 4] = [
            (b"UPGRADE", b"  WebSocket "),
            (b"connection", b"keep-alive, Upgrade"),
            (b"sec-websocket-version", b" 13"),
            (b"SEC-WEBSOCKET-KEY", b"dGhlIHNhbXBsZSBub25jZQ== "),
        ];
        assert_eq!(
            check_upgrade_request(hs),
            Ok(*b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        // Connection split over two header lines.
        let hs: [H<'_>; 5] = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"keep-alive"),
            (b"Connection", b"upgrade"),
            (b"Sec-WebSocket-Version", b"13"),
            (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert!(check_upgrade_request(hs).is_ok());
    }

    #[test]
    fn request_errors() {
        let base = node_request().to_vec();
        let e = |hs: Vec<H<'static>>| check_upgrade_request(hs).unwrap_err();
        assert_eq!(
            e(with(base.clone(), b"upgrade", None)),
            HandshakeError::NotUpgrade
        );
        assert_eq!(
            e(with(base.clone(), b"upgrade", Some(b"h2c"))),
            HandshakeError::UpgradeNotWebSocket
        );
        assert_eq!(
            e(with(base.clone(), b"connection", None)),
            HandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(
            e(with(
                base.clone(),
                b"connection",
                Some(b"keep-alive, upgraded")
            )),
            HandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(
            e(with(base.clone(), b"sec-websocket-version", None)),
            HandshakeError::MissingVersion
        );
        assert_eq!(
            e(with(base.clone(), b"sec-websocket-version", Some(b"8"))),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            e(with(base.clone(), b"sec-websocket-version", Some(b"13, 8"))),
            HandshakeError::UnsupportedVersion
        );
        assert_eq!(
            e(with(base.clone(), b"sec-websocket-key", None)),
            HandshakeError::MissingKey
        );
        for bad in [
            &b""[..],
            b"short==",
            b"dGhlIHNhbXBsZSBub25jZQ=",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25jZ*==",
            b"dGhlIHNhbXBsZSBub25jZQA=",
        ] {
            let hs = with(base.clone(), b"sec-websocket-key", Some(bad));
            assert_eq!(e(hs), HandshakeError::InvalidKey, "{bad:?}");
        }
        let mut dup = base.clone();
        dup.push((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(e(dup), HandshakeError::DuplicateHeader);
        let mut dup = base.clone();
        dup.push((b"Sec-WebSocket-Version", b"13"));
        assert_eq!(e(dup), HandshakeError::DuplicateHeader);
    }

    #[test]
    fn upgrade_required_response() {
        let mut out = [0u8; 256];
        let n = write_upgrade_required(&mut out).unwrap();
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 16);
        assert_eq!(write_upgrade_required(&mut out[..10]), Err(BufferFull));
    }

    proptest! {
        #[test]
        fn request_check_never_panics(
            hs in proptest::collection::vec(
                (
                    prop_oneof![
                        Just(b"Upgrade".to_vec()),
                        Just(b"Connection".to_vec()),
                        Just(b"Sec-WebSocket-Key".to_vec()),
                        Just(b"Sec-WebSocket-Version".to_vec()),
                        proptest::collection::vec(any::<u8>(), 0..12),
                    ],
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
                0..8,
            )
        ) {
            let pairs: Vec<H<'_>> = hs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let _ = check_upgrade_request(pairs);
        }
    }
}
