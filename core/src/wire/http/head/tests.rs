use super::*;
use crate::wire::http::tests::*;
use crate::wire::http::*;
use proptest::prelude::*;
use std::string::String;
use std::vec::Vec;

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
    let (h, _) = req(b"POST /lookup HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert!(h.expect_continue);
    let (h, _) = req(b"POST /lookup HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
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
    let (h, _) =
        req(b"GET /x?y=1 HTTP/1.1\r\nA:b\r\nB: \t spaced \t \r\nC:\r\nD: caf\xc3\xa9 \xff\r\n\r\n");
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
        req_err(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
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
    let (r, _) =
        resp(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 22\r\n\r\nERR_GRAPE_PAYLOAD_SIZE");
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
    let (r, _) = resp(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx");
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

// ---- properties -----------------------------------------------------------------------

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_request::<4>(&input);
        let _ = parse_response::<4>(&input);
        let _ = parse_request_limited::<4>(&input, 32);
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

}
