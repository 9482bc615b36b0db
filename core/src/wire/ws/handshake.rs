//! The opening handshake (RFC 6455 §4), both sides, over already-parsed HTTP headers.
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

use crate::rng::Rng;
use crate::wire::base64;
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
    /// Client: the host or path given to [`write_upgrade_request`] has a byte that is not
    /// visible ASCII (it would break the request line or inject headers), or the path does not
    /// start with `/`.
    InvalidTarget,
    /// Client: the server answered with this status instead of 101.
    UnexpectedStatus(u16),
    /// Client: the 101 has no `Sec-WebSocket-Accept`.
    MissingAccept,
    /// Client: `Sec-WebSocket-Accept` does not match the key that was sent.
    AcceptMismatch,
    /// Client: the server selected an extension, though none was offered.
    UnexpectedExtension,
    /// Client: the server selected a subprotocol, though none was offered.
    UnexpectedProtocol,
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
            HandshakeError::InvalidTarget => "invalid host or path",
            HandshakeError::UnexpectedStatus(code) => {
                return write!(f, "ws handshake: unexpected status {code}");
            }
            HandshakeError::MissingAccept => "missing Sec-WebSocket-Accept",
            HandshakeError::AcceptMismatch => "Sec-WebSocket-Accept mismatch",
            HandshakeError::UnexpectedExtension => "unrequested extension",
            HandshakeError::UnexpectedProtocol => "unrequested subprotocol",
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

/// Whether `list` (a comma-separated header value) contains `token`, case-insensitively.
fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
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
            upgrade_ok |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_ok |= has_token(value, b"upgrade");
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

/// A fresh `Sec-WebSocket-Key`: 16 bytes from `rng`, base64-encoded.
pub fn generate_key<R: Rng + ?Sized>(rng: &mut R) -> [u8; 24] {
    let mut raw = [0u8; 16];
    rng.fill_bytes(&mut raw);
    let mut key = [0u8; 24];
    // 16 bytes always encode to exactly 24 characters, so this cannot fail.
    let _ = base64::encode(&raw, &mut key);
    key
}

/// Whether every byte of `s` is visible ASCII (no space, control, CR or LF).
fn visible_ascii(s: &[u8]) -> bool {
    s.iter().all(|b| (0x21..=0x7E).contains(b))
}

/// Writes a client upgrade request for `path` on `host` (e.g. `b"/ws"` and
/// `b"127.0.0.1:1337"`, what the Node client uses) with a key drawn from `rng`; returns the
/// length written and the key, to be passed to [`check_upgrade_response`].
///
/// No extension, subprotocol or `Origin` is sent. `host` and `path` must be non-empty visible
/// ASCII and `path` must start with `/` ([`HandshakeError::InvalidTarget`]).
pub fn write_upgrade_request<R: Rng + ?Sized>(
    rng: &mut R,
    host: &[u8],
    path: &[u8],
    out: &mut [u8],
) -> Result<(usize, [u8; 24]), HandshakeError> {
    if host.is_empty()
        || !visible_ascii(host)
        || path.first() != Some(&b'/')
        || !visible_ascii(path)
    {
        return Err(HandshakeError::InvalidTarget);
    }
    let key = generate_key(rng);
    let mut c = Cursor { buf: out, len: 0 };
    c.put(b"GET ")?;
    c.put(path)?;
    c.put(b" HTTP/1.1\r\nHost: ")?;
    c.put(host)?;
    c.put(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ")?;
    c.put(&key)?;
    c.put(b"\r\nSec-WebSocket-Version: 13\r\n\r\n")?;
    Ok((c.len, key))
}

/// Checks the server's answer to [`write_upgrade_request`] (RFC 6455 §4.1): status 101,
/// `Upgrade: websocket`, `Connection: upgrade`, exactly one `Sec-WebSocket-Accept` equal to
/// [`accept_key`] of the sent `key`, and no `Sec-WebSocket-Extensions` or
/// `Sec-WebSocket-Protocol` (none were offered).
pub fn check_upgrade_response<'h, I>(
    status: u16,
    headers: I,
    key: &[u8; 24],
) -> Result<(), HandshakeError>
where
    I: IntoIterator<Item = (&'h [u8], &'h [u8])>,
{
    if status != 101 {
        return Err(HandshakeError::UnexpectedStatus(status));
    }
    let mut upgrade_seen = false;
    let mut upgrade_ok = false;
    let mut connection_ok = false;
    let mut accept: Option<&[u8]> = None;
    let mut duplicate = false;
    let mut extension = false;
    let mut protocol = false;
    for (name, value) in headers {
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_seen = true;
            upgrade_ok |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_ok |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-accept") {
            duplicate |= accept.replace(value).is_some();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-extensions") {
            extension |= !value.is_empty();
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") {
            protocol |= !value.is_empty();
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
    let accept = accept.ok_or(HandshakeError::MissingAccept)?;
    if accept != accept_key(key) {
        return Err(HandshakeError::AcceptMismatch);
    }
    if extension {
        return Err(HandshakeError::UnexpectedExtension);
    }
    if protocol {
        return Err(HandshakeError::UnexpectedProtocol);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
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

    #[test]
    fn client_request_and_server_check_agree() {
        let mut rng = SplitMix64::new(42);
        let mut out = [0u8; 256];
        let (n, key) =
            write_upgrade_request(&mut rng, b"127.0.0.1:1337", b"/ws", &mut out).unwrap();
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert_eq!(
            text,
            std::format!(
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:1337\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                core::str::from_utf8(&key).unwrap()
            )
        );
        let mut raw = [0u8; 16];
        assert_eq!(base64::decode(&key, &mut raw), Ok(16));
        // Parse the header lines back and run the server-side check on them.
        let lines: Vec<&str> = text
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect();
        let hs: Vec<H<'_>> = lines
            .iter()
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.as_bytes(), v.as_bytes())
            })
            .collect();
        let accept = check_upgrade_request(hs).unwrap();
        assert_eq!(accept, accept_key(&key));
        // And the client accepts the server's answer.
        let resp: [H<'_>; 3] = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", &accept),
        ];
        assert_eq!(check_upgrade_response(101, resp, &key), Ok(()));
        // Fresh keys each time.
        let (_, key2) = write_upgrade_request(&mut rng, b"h", b"/", &mut out).unwrap();
        assert_ne!(key, key2);
    }

    #[test]
    fn client_request_rejects_injection_and_small_buffers() {
        let mut rng = SplitMix64::new(1);
        let mut out = [0u8; 256];
        for (host, path) in [
            (&b"h\r\nX: y"[..], &b"/"[..]),
            (b"h", b"/a b"),
            (b"h", b"ws"),
            (b"", b"/"),
            (b"h", b""),
            (b"h\x7f", b"/"),
        ] {
            assert_eq!(
                write_upgrade_request(&mut rng, host, path, &mut out),
                Err(HandshakeError::InvalidTarget)
            );
        }
        assert_eq!(
            write_upgrade_request(&mut rng, b"h", b"/", &mut out[..40]),
            Err(HandshakeError::BufferFull)
        );
    }

    #[test]
    fn response_errors() {
        let key = *b"dGhlIHNhbXBsZSBub25jZQ==";
        let good: Vec<H<'static>> = std::vec![
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(check_upgrade_response(101, good.clone(), &key), Ok(()));
        let e = |status, hs: Vec<H<'static>>| check_upgrade_response(status, hs, &key).unwrap_err();
        assert_eq!(e(400, good.clone()), HandshakeError::UnexpectedStatus(400));
        assert_eq!(
            e(101, with(good.clone(), b"upgrade", None)),
            HandshakeError::NotUpgrade
        );
        assert_eq!(
            e(101, with(good.clone(), b"upgrade", Some(b"x"))),
            HandshakeError::UpgradeNotWebSocket
        );
        assert_eq!(
            e(101, with(good.clone(), b"connection", None)),
            HandshakeError::MissingConnectionUpgrade
        );
        assert_eq!(
            e(101, with(good.clone(), b"sec-websocket-accept", None)),
            HandshakeError::MissingAccept
        );
        assert_eq!(
            e(
                101,
                with(
                    good.clone(),
                    b"sec-websocket-accept",
                    Some(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo")
                )
            ),
            HandshakeError::AcceptMismatch
        );
        let mut dup = good.clone();
        dup.push((b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(e(101, dup), HandshakeError::DuplicateHeader);
        let mut ext = good.clone();
        ext.push((b"Sec-WebSocket-Extensions", b"permessage-deflate"));
        assert_eq!(e(101, ext), HandshakeError::UnexpectedExtension);
        let mut proto = good.clone();
        proto.push((b"Sec-WebSocket-Protocol", b"chat"));
        assert_eq!(e(101, proto), HandshakeError::UnexpectedProtocol);
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
            let _ = check_upgrade_request(pairs.iter().copied());
            let _ = check_upgrade_response(101, pairs, b"dGhlIHNhbXBsZSBub25jZQ==");
        }
    }
}
