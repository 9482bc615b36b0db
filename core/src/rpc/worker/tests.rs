use std::string::{String, ToString};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::wire::ws::{apply_mask, Opcode};

/// The test handler: echoes the payload as the result, except for a few keys that fail in
/// the ways a handler can. Records what it was given.
#[derive(Default)]
struct Echo {
    seen: Vec<(Vec<u8>, String, Vec<u8>)>,
}

impl Handler for Echo {
    fn handle(&mut self, r: &Request<'_>, result: &mut [u8]) -> Result<usize, &'static str> {
        self.seen
            .push((r.rid.to_vec(), r.key.to_string(), r.payload.to_vec()));
        match r.key {
            "fail" => Err("boom"),
            // A handler that claims more than the buffer holds.
            "liar" => Ok(result.len() + 1),
            _ => {
                let out = result.get_mut(..r.payload.len()).ok_or("no room")?;
                out.copy_from_slice(r.payload);
                Ok(r.payload.len())
            }
        }
    }
}

const T0: Instant = Instant::from_millis(1_000);

/// Sizes of the test connection: small enough that the limits are easy to reach.
const REQUEST: usize = 512;
const RESULT: usize = 128;
const REPLY: usize = 256;
const MESSAGE: usize = 256;

/// What a connection did with some input.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Transcript {
    /// Everything it sent, in order.
    out: Vec<u8>,
    /// It asked to close.
    closed: bool,
    /// The requests its handler saw.
    seen: Vec<(Vec<u8>, String, Vec<u8>)>,
}

impl Transcript {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }
}

struct Harness {
    request: [u8; REQUEST],
    result: [u8; RESULT],
    reply: [u8; REPLY],
    ws: WsConnection<MESSAGE>,
}

impl Harness {
    fn new() -> std::boxed::Box<Self> {
        std::boxed::Box::new(Harness {
            request: [0; REQUEST],
            result: [0; RESULT],
            reply: [0; REPLY],
            ws: WsConnection::new(),
        })
    }

    fn conn(&mut self) -> WorkerConnection<'_, MESSAGE> {
        WorkerConnection::new(Buffers {
            request: &mut self.request,
            result: &mut self.result,
            reply: &mut self.reply,
            ws: &mut self.ws,
        })
    }
}

/// Feeds `reads` one by one (each as one read, or as several when it does not fit the read
/// buffer), answering every send at once; `eof` ends the input after them. Stops at the
/// close or when the connection waits for input that is not there.
fn drive_with(reads: &[&[u8]], eof: bool, write_chunk: usize) -> Transcript {
    let mut h = Harness::new();
    let mut c = h.conn();
    let mut echo = Echo::default();
    let mut t = Transcript::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut reads = reads.iter();
    let mut eof_sent = false;
    // Every poll makes progress or stops, so this bound is only against a bug in the engine.
    for _ in 0..100_000 {
        match c.poll(T0, &mut echo) {
            Action::Send { bytes, .. } => {
                let n = bytes.len().min(write_chunk.max(1));
                t.out.extend_from_slice(&bytes[..n]);
                c.sent(n);
            }
            Action::Close => {
                t.closed = true;
                break;
            }
            Action::Receive { .. } => {
                if pending.is_empty() {
                    match reads.next() {
                        // An empty read would be the end of input.
                        Some([]) => continue,
                        Some(r) => pending = r.to_vec(),
                        None if eof && !eof_sent => {
                            eof_sent = true;
                            c.received(0);
                            continue;
                        }
                        None => break,
                    }
                }
                let buf = c.read_buf();
                let n = buf.len().min(pending.len());
                if n == 0 {
                    // The engine asks for bytes but has no room: a bug.
                    panic!("Receive with a full buffer");
                }
                buf[..n].copy_from_slice(&pending[..n]);
                pending.drain(..n);
                c.received(n);
            }
        }
    }
    t.seen = echo.seen;
    t
}

fn drive(input: &[u8]) -> Transcript {
    drive_with(&[input], false, usize::MAX)
}

fn post(body: &str, extra: &str) -> String {
    std::format!(
        "POST / HTTP/1.1\r\nHost: w\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ok(body: &str) -> String {
    std::format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn status(line: &str) -> String {
    std::format!("HTTP/1.1 {line}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCHED: &str =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

/// A masked client frame (FIN set).
fn client_frame(op: Opcode, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let op: u8 = match op {
        Opcode::Continuation => 0,
        Opcode::Text => 1,
        Opcode::Binary => 2,
        Opcode::Close => 8,
        Opcode::Ping => 9,
        Opcode::Pong => 10,
    };
    let mut f = std::vec![0x80 | op];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    let start = f.len();
    f.extend_from_slice(payload);
    apply_mask(key, 0, &mut f[start..]);
    f
}

/// An unmasked server text frame, as the worker sends replies.
fn server_text(payload: &str) -> Vec<u8> {
    let mut f = std::vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(payload.as_bytes());
    f
}

#[test]
fn http_request_is_answered_and_the_connection_kept() {
    let t = drive(post(r#"["r1","svc",{"a":1}]"#, "").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1",null,{"a":1}]"#));
    assert!(!t.closed, "keep-alive is the HTTP/1.1 default");
    assert_eq!(
        t.seen,
        [(
            b"\"r1\"".to_vec(),
            "svc".to_string(),
            br#"{"a":1}"#.to_vec()
        )]
    );
}

#[test]
fn connection_close_closes_after_the_reply() {
    let t = drive(post(r#"["r1","svc",2]"#, "Connection: close\r\n").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1",null,2]"#));
    assert!(t.closed);
    let t = drive(b"POST / HTTP/1.0\r\nContent-Length: 14\r\n\r\n[\"r1\",\"svc\",2]");
    assert_eq!(t.text(), ok(r#"["r1",null,2]"#));
    assert!(t.closed, "HTTP/1.0 without keep-alive");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut input = post(r#"["a","svc",1]"#, "");
    input += "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[\"b\",\r\n8\r\n\"svc\",2]\r\n0\r\n\r\n";
    input += &post(r#"["c","svc",3]"#, "Connection: close\r\n");
    input += &post(r#"["d","svc",4]"#, "");
    let t = drive(input.as_bytes());
    let want = ok(r#"["a",null,1]"#) + &ok(r#"["b",null,2]"#) + &ok(r#"["c",null,3]"#);
    assert_eq!(t.text(), want);
    assert!(t.closed, "the third asked to close; the fourth is not read");
}

#[test]
fn any_method_and_path_carry_a_request() {
    let t = drive(b"PUT /what/ever?x=1 HTTP/1.1\r\nContent-Length: 14\r\n\r\n[\"r1\",\"svc\",2]");
    assert_eq!(t.text(), ok(r#"["r1",null,2]"#));
}

#[test]
fn expect_continue_gets_the_interim_response_before_the_body() {
    let head = "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 14\r\n\r\n";
    let t = drive_with(&[head.as_bytes(), b"[\"r1\",\"svc\",2]"], false, usize::MAX);
    assert_eq!(
        t.text(),
        std::format!("HTTP/1.1 100 Continue\r\n\r\n{}", ok(r#"["r1",null,2]"#))
    );
    // The body came with the head: no interim response.
    let t = drive(std::format!("{head}[\"r1\",\"svc\",2]").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1",null,2]"#));
}

#[test]
fn http_errors_get_their_status_and_a_close() {
    for (input, line) in [
        (
            std::string::String::from("garbage\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n".into(),
            "400 Bad Request",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".into(),
            "400 Bad Request",
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n[".into(),
            "413 Payload Too Large",
        ),
        (
            std::format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(REQUEST)),
            "431 Request Header Fields Too Large",
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "501 Not Implemented",
        ),
        (
            "GET / HTTP/2.0\r\n\r\n".into(),
            "505 HTTP Version Not Supported",
        ),
        // A WebSocket upgrade without its key.
        (
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
                .into(),
            "400 Bad Request",
        ),
    ] {
        let t = drive(input.as_bytes());
        assert_eq!(t.text(), status(line), "{input:?}");
        assert!(t.closed, "{input:?}");
        assert!(t.seen.is_empty());
    }
}

#[test]
fn too_many_headers_is_431() {
    let mut input = String::from("GET / HTTP/1.1\r\n");
    for i in 0..=MAX_HEADERS {
        input += &std::format!("X-{i}: 1\r\n");
    }
    input += "\r\n";
    let t = drive(input.as_bytes());
    assert_eq!(t.text(), status("431 Request Header Fields Too Large"));
}

#[test]
fn a_chunked_body_over_the_buffer_is_413_after_squeezing_its_framing() {
    // Chunk framing is squeezed out as it is decoded, so a body whose chunks fit once their
    // framing is gone still gets through...
    let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = r#"["r1","svc","xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]"#;
    let mut chunked = String::from(head);
    for b in body.as_bytes().chunks(4) {
        chunked += &std::format!("{:x};ext=some-extension\r\n", b.len());
        chunked += core::str::from_utf8(b).unwrap();
        chunked += "\r\n";
    }
    chunked += "0\r\n\r\n";
    assert!(
        chunked.len() > REQUEST,
        "the framing alone overflows the buffer"
    );
    let t = drive(chunked.as_bytes());
    assert_eq!(t.text(), ok(&body.replace(r#""svc","#, r#"null,"#)));
    // ...but a body over the buffer does not.
    let mut big = String::from(head);
    big += &std::format!("{:x}\r\n{}\r\n", REQUEST, "x".repeat(REQUEST));
    let t = drive(big.as_bytes());
    assert_eq!(t.text(), status("413 Payload Too Large"));
}

#[test]
fn malformed_frames_follow_the_frame_rules() {
    let malformed = |rid: &str| ok(&std::format!(r#"[{rid},"ERR_REQUEST_MALFORMED",null]"#));
    for (body, want) in [
        (r#"["r1"]"#, Some(malformed(r#""r1""#))),
        ("[7]", Some(malformed("7"))),
        (r#"["r1",5,{}]"#, Some(malformed(r#""r1""#))),
        (r#"[null,"svc",1]"#, None),
        (r#"[{},"svc",1]"#, None),
        ("[]", None),
        ("{}", None),
        ("not json", None),
        (r#"["r1","svc",1"#, None),
        ("", None),
    ] {
        let t = drive(post(body, "").as_bytes());
        match want {
            Some(w) => {
                assert_eq!(t.text(), w, "{body:?}");
                assert!(
                    !t.closed,
                    "{body:?}: an answered request keeps the connection"
                );
            }
            None => {
                assert_eq!(t.text(), "", "{body:?}");
                assert!(t.closed, "{body:?}: dropped requests close the connection");
            }
        }
        assert!(t.seen.is_empty(), "{body:?} reached the handler");
    }
}

#[test]
fn a_long_or_badly_escaped_key_is_malformed() {
    let long = std::format!(r#"["r1","{}",1]"#, "k".repeat(MAX_KEY + 1));
    let t = drive(post(&long, "").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1","ERR_REQUEST_MALFORMED",null]"#));
    let fits = std::format!(r#"["r1","{}",1]"#, "k".repeat(MAX_KEY));
    let t = drive(post(&fits, "").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1",null,1]"#));
    // Escapes are decoded: the handler sees the name the client looked up.
    let t = drive(post(r#"["r1","s\u0076c",1]"#, "").as_bytes());
    assert_eq!(t.seen[0].1, "svc");
}

#[test]
fn handler_errors_and_oversized_results() {
    let t = drive(post(r#"["r1","fail",1]"#, "").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1","boom",null]"#));
    let t = drive(post(r#"["r1","liar",1]"#, "").as_bytes());
    assert_eq!(t.text(), ok(r#"["r1","ERR_REPLY_TOO_LARGE",null]"#));
    // The result fits its buffer but the reply frame around it does not fit the reply buffer.
    let rid = "r".repeat(100);
    let body = std::format!(r#"["{rid}","svc","{}"]"#, "x".repeat(RESULT - 2));
    let t = drive(post(&body, "").as_bytes());
    assert_eq!(
        t.text(),
        ok(&std::format!(r#"["{rid}","ERR_REPLY_TOO_LARGE",null]"#))
    );
    // Not even the error fits: the connection is dropped.
    let rid = "r".repeat(REPLY - HEAD_ROOM);
    let t = drive(post(&std::format!(r#"["{rid}","svc",1]"#), "").as_bytes());
    assert_eq!(t.text(), "");
    assert!(t.closed);
}

#[test]
fn websocket_upgrade_and_messages() {
    let mut input = UPGRADE.as_bytes().to_vec();
    input.extend(client_frame(Opcode::Text, br#"["w1","svc",{"n":1}]"#));
    input.extend(client_frame(Opcode::Binary, br#"["w2","svc",2]"#));
    input.extend(client_frame(Opcode::Text, br#"["w3"]"#));
    let t = drive(&input);
    let mut want = SWITCHED.as_bytes().to_vec();
    want.extend(server_text(r#"["w1",null,{"n":1}]"#));
    want.extend(server_text(r#"["w2",null,2]"#));
    want.extend(server_text(r#"["w3","ERR_REQUEST_MALFORMED",null]"#));
    assert_eq!(t.out, want);
    assert!(!t.closed);
    assert_eq!(t.seen.len(), 2);
}

#[test]
fn websocket_ping_close_and_protocol_errors() {
    let mut input = UPGRADE.as_bytes().to_vec();
    input.extend(client_frame(Opcode::Ping, b"hi"));
    input.extend(client_frame(Opcode::Close, &1000u16.to_be_bytes()));
    input.extend(client_frame(Opcode::Text, br#"["late","svc",1]"#));
    let t = drive(&input);
    let mut want = SWITCHED.as_bytes().to_vec();
    want.extend([0x8a, 2, b'h', b'i']);
    want.extend([0x88, 2, 0x03, 0xe8]);
    assert_eq!(t.out, want);
    assert!(t.closed);
    assert!(t.seen.is_empty(), "nothing after the close is read");

    // A message over MESSAGE: close 1009 as soon as its header is in.
    let mut input = UPGRADE.as_bytes().to_vec();
    input.extend(&client_frame(Opcode::Text, &[b'x'; MESSAGE + 1])[..16]);
    let t = drive(&input);
    assert_eq!(&t.out[SWITCHED.len()..], [0x88, 2, 0x03, 0xf1]);
    assert!(t.closed);

    // An unmasked frame from a client: 1002. Garbage in a message: dropped, close without a
    // close code of its own (the frame rules, as on HTTP).
    let mut input = UPGRADE.as_bytes().to_vec();
    input.extend([0x81, 0x01, b'x']);
    let t = drive(&input);
    assert_eq!(&t.out[SWITCHED.len()..], [0x88, 2, 0x03, 0xea]);
    assert!(t.closed);
    let mut input = UPGRADE.as_bytes().to_vec();
    input.extend(client_frame(Opcode::Text, b"not json"));
    let t = drive(&input);
    assert_eq!(t.out, SWITCHED.as_bytes());
    assert!(!t.closed, "a WebSocket keeps going after a dropped message");
}

#[test]
fn deadlines_idle_keep_alive_and_send() {
    let mut h = Harness::new();
    let mut c = h.conn();
    let mut echo = Echo::default();
    let idle = T0 + IDLE_TIMEOUT;
    assert_eq!(c.poll(T0, &mut echo), Action::Receive { until: idle });
    // Polling again keeps the deadline, until it passes.
    let later = T0 + Duration::from_secs(3);
    assert_eq!(c.poll(later, &mut echo), Action::Receive { until: idle });
    // A partial request: the idle timeout from the read on.
    let part = b"POST / HTTP/1.1\r\nContent-Length: 14\r\n\r\n[\"r1\"";
    c.read_buf()[..part.len()].copy_from_slice(part);
    c.received(part.len());
    let idle2 = later + IDLE_TIMEOUT;
    assert_eq!(c.poll(later, &mut echo), Action::Receive { until: idle2 });
    let rest = b",\"svc\",2]";
    c.read_buf()[..rest.len()].copy_from_slice(rest);
    c.received(rest.len());
    let Action::Send { bytes, until } = c.poll(later, &mut echo) else {
        panic!("no reply");
    };
    assert_eq!(bytes, ok(r#"["r1",null,2]"#).as_bytes());
    assert_eq!(until, later + IDLE_TIMEOUT);
    // A peer that takes part of it: the rest, with a new deadline.
    c.sent(5);
    let t2 = later + Duration::from_secs(1);
    let Action::Send { bytes, until } = c.poll(t2, &mut echo) else {
        panic!("no rest");
    };
    assert_eq!(bytes, &ok(r#"["r1",null,2]"#).as_bytes()[5..]);
    assert_eq!(until, t2 + IDLE_TIMEOUT);
    let n = bytes.len();
    c.sent(n);
    // Between requests, the keep-alive timeout.
    let ka = t2 + KEEP_ALIVE_TIMEOUT;
    assert_eq!(c.poll(t2, &mut echo), Action::Receive { until: ka });
    assert_eq!(c.poll(ka, &mut echo), Action::Close);
    assert_eq!(c.poll(ka, &mut echo), Action::Close, "closed stays closed");

    // A peer that takes nothing: closed at the send deadline.
    let mut c = h.conn();
    let req = post(r#"["r1","svc",2]"#, "");
    c.read_buf()[..req.len()].copy_from_slice(req.as_bytes());
    c.received(req.len());
    let Action::Send { until, .. } = c.poll(T0, &mut echo) else {
        panic!("no reply");
    };
    c.sent(0);
    assert!(matches!(c.poll(T0, &mut echo), Action::Send { .. }));
    assert_eq!(c.poll(until, &mut echo), Action::Close);
}

#[test]
fn websocket_connections_have_no_keep_alive_limit() {
    let mut h = Harness::new();
    let mut c = h.conn();
    let mut echo = Echo::default();
    c.read_buf()[..UPGRADE.len()].copy_from_slice(UPGRADE.as_bytes());
    c.received(UPGRADE.len());
    let Action::Send { bytes, .. } = c.poll(T0, &mut echo) else {
        panic!("no 101");
    };
    let n = bytes.len();
    c.sent(n);
    assert_eq!(
        c.poll(T0, &mut echo),
        Action::Receive {
            until: T0 + IDLE_TIMEOUT
        }
    );
}

#[test]
fn end_of_input_closes() {
    let t = drive_with(&[b"POST / HTTP/1.1\r\n"], true, usize::MAX);
    assert_eq!(t.text(), "");
    assert!(t.closed);
    let t = drive_with(&[], true, usize::MAX);
    assert!(t.closed);
}

/// Inputs whose transcript must not depend on how they are split into reads: valid and
/// invalid HTTP requests (pipelined, chunked), a WebSocket session.
fn session() -> impl Strategy<Value = Vec<u8>> {
    let http = prop_oneof![
        "[a-z0-9]{0,12}".prop_map(|rid| post(&std::format!(r#"["{rid}","svc",[1,2]]"#), "")),
        "[a-z0-9]{0,12}".prop_map(|rid| {
            let body = std::format!(r#"["{rid}","fail",null]"#);
            let (a, b) = body.split_at(body.len() / 2);
            std::format!(
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
        }),
        Just(post(r#"["m"]"#, "")),
        Just(post("[1,2", "")),
        Just("GET / HTTP/1.1\r\nBad\r\n\r\n".to_string()),
    ];
    let ws_session = proptest::collection::vec("[a-z0-9]{0,8}", 0..4).prop_map(|rids| {
        let mut s = UPGRADE.as_bytes().to_vec();
        for rid in rids {
            s.extend(client_frame(
                Opcode::Text,
                std::format!(r#"["{rid}","svc",{{}}]"#).as_bytes(),
            ));
            s.extend(client_frame(Opcode::Ping, rid.as_bytes()));
        }
        s
    });
    prop_oneof![
        proptest::collection::vec(http, 1..5).prop_map(|v| v.concat().into_bytes()),
        ws_session,
    ]
}

/// Cuts `input` at the given points (taken modulo its length).
fn split<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    at.sort_unstable();
    let mut parts = Vec::new();
    let mut prev = 0;
    for c in at.into_iter().chain([input.len()]) {
        parts.push(&input[prev..c]);
        prev = c;
    }
    parts
}

proptest! {
    #[test]
    fn any_split_into_reads_gives_the_same_answers(
        input in session(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        write_chunk in 1usize..64,
    ) {
        let whole = drive_with(&[&input], true, usize::MAX);
        let parts = split(&input, &cuts);
        let pieces = drive_with(&parts, true, write_chunk);
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn pipelined_requests_are_answered_in_their_order(
        rids in proptest::collection::vec("[a-z0-9]{1,10}", 1..8),
    ) {
        let input: String = rids
            .iter()
            .map(|r| post(&std::format!(r#"["{r}","svc",1]"#), ""))
            .collect();
        let t = drive(input.as_bytes());
        let want: String = rids.iter().map(|r| ok(&std::format!(r#"["{r}",null,1]"#))).collect();
        prop_assert_eq!(t.text(), want);
    }

    #[test]
    fn arbitrary_bytes_end_in_an_answer_or_a_close(
        input in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        upgrade in any::<bool>(),
    ) {
        let mut bytes = if upgrade { UPGRADE.as_bytes().to_vec() } else { Vec::new() };
        bytes.extend(&input);
        // Without an end of input: whatever is still waiting closes at its deadline.
        let t = drive_with(&split(&bytes, &cuts), false, usize::MAX);
        if !t.closed {
            let mut h = Harness::new();
            let mut c = h.conn();
            let mut echo = Echo::default();
            let mut rest: &[u8] = &bytes;
            let mut now = T0;
            let mut closed = false;
            for _ in 0..100_000 {
                match c.poll(now, &mut echo) {
                    Action::Send { bytes, .. } => {
                        let n = bytes.len();
                        c.sent(n);
                    }
                    Action::Receive { until } if rest.is_empty() => now = until,
                    Action::Receive { .. } => {
                        let buf = c.read_buf();
                        let n = buf.len().min(rest.len());
                        buf[..n].copy_from_slice(&rest[..n]);
                        rest = &rest[n..];
                        c.received(n);
                    }
                    Action::Close => {
                        closed = true;
                        break;
                    }
                }
            }
            prop_assert!(closed, "never closed: {:?}", c);
        }
        // Whatever was sent is HTTP or, after a 101, WebSocket frames.
        if !t.out.is_empty() && !upgrade {
            prop_assert!(t.out.starts_with(b"HTTP/1.1 "), "{:?}", t.text());
        }
    }
}
