//! What the tests of every part of the HTTP codec share: captured messages, parse helpers,
//! a body decoder fed in pieces, a chunked encoder; and the tests of the shared types.

use super::*;
use std::vec::Vec;

/// The exact bytes grenache-nodejs-link 1.0.2 sends for a lookup (node-fetch 2.7.0 on
/// Node 20, captured with a TCP proxy between a Node Link and a Node grape). Header
/// order is node-fetch's: the caller's `content-type` (lowercase, as Link spells it), then
/// `Accept`, `Content-Length`, `User-Agent`, `Accept-Encoding` from node-fetch, and `Host`,
/// `Connection` from Node's http module (keep-alive: Node ≥ 19's global agent).
pub(super) const LINK_LOOKUP: &[u8] = b"POST /lookup HTTP/1.1\r\n\
content-type: application/json\r\n\
Accept: */*\r\n\
Content-Length: 64\r\n\
User-Agent: node-fetch/1.0 (+https://github.com/bitinn/node-fetch)\r\n\
Accept-Encoding: gzip,deflate\r\n\
Host: 127.0.0.1:39001\r\n\
Connection: keep-alive\r\n\
\r\n\
{\"rid\":\"71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1\",\"data\":\"rpc_test\"}";
pub(super) const LINK_LOOKUP_BODY: &[u8] =
    b"{\"rid\":\"71cc90e8-eaf9-4e6f-b5be-ba33c122d2c1\",\"data\":\"rpc_test\"}";

/// A buffered HTTP RPC request (grenache-nodejs-http 1.0.2, docs/protocol.md §10.1).
pub(super) const RPC_REQUEST: &[u8] = b"POST / HTTP/1.1\r\n\
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
pub(super) const RPC_STREAM: &[u8] = b"POST / HTTP/1.1\r\n\
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
pub(super) const GRAPE_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2026 18:42:00 GMT\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
Content-Length: 18\r\n\
\r\n\
[\"127.0.0.1:1337\"]";

/// An HTTP RPC reply (chunked, docs/protocol.md §10.2).
pub(super) const RPC_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Tue, 25 Nov 2026 18:42:00 GMT\r\n\
Connection: close\r\n\
Transfer-Encoding: chunked\r\n\
\r\n\
17\r\n[\"r1\",null,{\"ok\":\"hi\"}]\r\n0\r\n\r\n";

pub(super) type Req<'a> = RequestHead<'a, 16>;
pub(super) type Resp<'a> = ResponseHead<'a, 16>;

pub(super) fn req(buf: &[u8]) -> (Req<'_>, usize) {
    match parse_request::<16>(buf) {
        Ok(Status::Complete(x)) => x,
        other => panic!("expected a complete request, got {other:?}"),
    }
}

pub(super) fn req_err(buf: &[u8]) -> HttpError {
    match parse_request::<16>(buf) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

pub(super) fn resp(buf: &[u8]) -> (Resp<'_>, usize) {
    match parse_response::<16>(buf) {
        Ok(Status::Complete(x)) => x,
        other => panic!("expected a complete response, got {other:?}"),
    }
}

pub(super) fn resp_err(buf: &[u8]) -> HttpError {
    match parse_response::<16>(buf) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Decodes a body from `input` fed in pieces of the given sizes (cycled; 0 = the rest).
/// Returns the body, the bytes used and whether it completed.
pub(super) fn decode_pieces(
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

pub(super) fn decode_all(
    kind: BodyKind,
    max: u64,
    input: &[u8],
) -> Result<(Vec<u8>, usize, bool), HttpError> {
    decode_pieces(kind, max, input, &[0])
}

/// One chunk of a chunked body: hex size line, `data`, CRLF.
pub(super) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = std::format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The last chunk and the end of a chunked body, without trailers.
pub(super) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Encodes a body as chunks cut at the given sizes.
pub(super) fn chunked_body(body: &[u8], cuts: &[usize], out: &mut Vec<u8>) {
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let take = cuts.get(i).copied().unwrap_or(rest.len()).min(rest.len());
        i += 1;
        out.extend_from_slice(&chunk(&rest[..take]));
        rest = &rest[take..];
    }
    out.extend_from_slice(LAST_CHUNK);
}

/// Either Partial or the same answer as the whole input, for every prefix; and a complete
/// head is Partial exactly below its length.
pub(super) fn check_prefixes_request(input: &[u8]) {
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

pub(super) fn check_prefixes_response(input: &[u8]) {
    let full = parse_response::<8>(input);
    for len in 0..input.len() {
        let p = parse_response::<8>(&input[..len]);
        if p != Ok(Status::Partial) {
            assert_eq!(p, full, "prefix {len}");
        }
    }
}

#[test]
fn the_chunk_helper_writes_what_the_decoder_reads() {
    assert_eq!(
        chunk(b"[\"r1\",null,{\"ok\":\"hi\"}]"),
        b"17\r\n[\"r1\",null,{\"ok\":\"hi\"}]\r\n"
    );
    assert_eq!(chunk(&[b'x'; 0xabc])[..5], *b"abc\r\n");
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
