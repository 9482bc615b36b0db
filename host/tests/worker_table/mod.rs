//! One table of malformed (and a few valid) inputs, sent as raw bytes over TCP to any Grenache
//! worker: the embassy worker (core's `rpc::worker` engine) and the tokio HTTP and WebSocket
//! workers must answer each the same (HTTP: the status line and the body; WebSocket: the
//! reply message, or the close code). Used by `embassy_worker.rs`, which runs every worker
//! inside its network namespace.
//!
//! Both sides run the board's `Fibonacci` handler (the tokio workers through
//! [`fibonacci`]), so valid requests get the same answers too.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use grenache_embassy::worker::{Fibonacci, Handler, Request};
use grenache_tokio::RpcError;
use serde_json::Value;

/// What a worker did with one input.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP response: its status line and body.
    Http { status: String, body: String },
    /// WebSocket reply messages (text) to the case, in order, before the sentinel's.
    Ws(Vec<String>),
    /// A WebSocket close frame with this code (after any replies).
    WsClose(u16),
    /// The WebSocket connection ended without a close frame, after these replies.
    WsEnded(Vec<String>),
    /// The connection was closed without a byte.
    Nothing,
}

/// The board's handler as a tokio handler.
pub async fn fibonacci(req: grenache_tokio::Request) -> Result<Value, RpcError> {
    let payload = req.payload.to_string();
    let rid = req.rid.to_string();
    let request = Request {
        rid: rid.as_bytes(),
        key: &req.key,
        payload: payload.as_bytes(),
    };
    let mut out = [0u8; 64];
    match Fibonacci.handle(&request, &mut out) {
        Ok(n) => Ok(serde_json::from_slice(&out[..n]).unwrap()),
        Err(message) => Err(RpcError::Remote {
            message: message.to_string(),
            data: Value::Null,
        }),
    }
}

fn post(body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: w\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn reply(body: &str) -> Answer {
    Answer::Http {
        status: "HTTP/1.1 200 OK".into(),
        body: body.into(),
    }
}

fn status(line: &str) -> Answer {
    Answer::Http {
        status: format!("HTTP/1.1 {line}"),
        body: String::new(),
    }
}

/// The HTTP cases: raw request bytes and the answer every worker gives.
pub fn http_cases() -> Vec<(&'static str, Vec<u8>, Answer)> {
    let malformed = |rid: &str| reply(&format!(r#"[{rid},"ERR_REQUEST_MALFORMED",null]"#));
    vec![
        (
            "valid",
            post(r#"["ok","fibonacci_worker",{"number":10}]"#),
            reply(r#"["ok",null,89]"#),
        ),
        (
            "handler error",
            post(r#"["e","fibonacci_worker",{"number":99}]"#),
            reply(r#"["e","ERR_BAD_PAYLOAD: number too large",null]"#),
        ),
        ("number rid, no key", post("[7]"), malformed("7")),
        (
            "key not a string",
            post(r#"["r1",5,{}]"#),
            malformed(r#""r1""#),
        ),
        ("rid only", post(r#"["r1"]"#), malformed(r#""r1""#)),
        ("null rid", post(r#"[null,"k",{}]"#), Answer::Nothing),
        ("object rid", post(r#"[{},"k",{}]"#), Answer::Nothing),
        ("empty array", post("[]"), Answer::Nothing),
        ("object", post(r#"{"a":1}"#), Answer::Nothing),
        ("invalid JSON", post("not json"), Answer::Nothing),
        (
            "truncated frame",
            post(r#"["r1","fibonacci_worker",{"numb"#),
            Answer::Nothing,
        ),
        (
            "garbage",
            b"\x16\x03\x01\x00\xff\x00\xfe\xff garbage \r\n\r\n".to_vec(),
            status("400 Bad Request"),
        ),
        (
            "bad header line",
            b"POST / HTTP/1.1\r\nHost w\r\nContent-Length: 2\r\n\r\n[]".to_vec(),
            status("400 Bad Request"),
        ),
        (
            "two content lengths",
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n[]".to_vec(),
            status("400 Bad Request"),
        ),
        (
            "bad chunk size",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n".to_vec(),
            status("400 Bad Request"),
        ),
        (
            "oversized body",
            b"POST / HTTP/1.1\r\nHost: w\r\nContent-Length: 100000\r\n\r\n[".to_vec(),
            status("413 Payload Too Large"),
        ),
    ]
}

/// The WebSocket cases: one message each (sent after the handshake, then a sentinel request)
/// and the answer every worker gives.
pub fn ws_cases() -> Vec<(&'static str, Vec<u8>, Answer)> {
    let malformed =
        |rid: &str| Answer::Ws(vec![format!(r#"[{rid},"ERR_REQUEST_MALFORMED",null]"#)]);
    vec![
        (
            "valid",
            br#"["ok","fibonacci_worker",{"number":10}]"#.to_vec(),
            Answer::Ws(vec![r#"["ok",null,89]"#.into()]),
        ),
        ("number rid, no key", b"[7]".to_vec(), malformed("7")),
        (
            "key not a string",
            br#"["r1",5,{}]"#.to_vec(),
            malformed(r#""r1""#),
        ),
        ("rid only", br#"["r1"]"#.to_vec(), malformed(r#""r1""#)),
        ("null rid", br#"[null,"k",{}]"#.to_vec(), Answer::Ws(vec![])),
        ("object rid", br#"[{},"k",{}]"#.to_vec(), Answer::Ws(vec![])),
        ("invalid JSON", b"not json".to_vec(), Answer::Ws(vec![])),
        (
            "truncated frame",
            br#"["r1","fibonacci_worker",{"numb"#.to_vec(),
            Answer::Ws(vec![]),
        ),
        (
            "oversized message",
            vec![b'x'; OVERSIZED_MESSAGE],
            Answer::WsClose(1009),
        ),
    ]
}

/// Longer than the largest message of every worker in the table: the embassy worker's
/// `MAX_MESSAGE`, and what [`tokio_config`] sets.
pub const OVERSIZED_MESSAGE: usize = 4096;

/// The tokio workers' settings for the table: the embassy worker's limits.
pub fn tokio_config() -> grenache_tokio::rpc::ServerConfig {
    grenache_tokio::rpc::ServerConfig {
        max_message_size: grenache_embassy::worker::MAX_MESSAGE,
        ..Default::default()
    }
}

/// A new connection. The board refuses one while all its slots are busy or still closing
/// the last connections (embassy-net has no backlog): that is retried for a few seconds.
fn connect(addr: SocketAddr) -> TcpStream {
    let start = Instant::now();
    let s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            Ok(s) => break s,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && start.elapsed().as_secs() < 5 => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Sends `request` on a new connection and reads until the worker closes it.
pub fn http(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    // The worker may answer and close before taking all of an oversized request.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    if out.is_empty() {
        return Answer::Nothing;
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    // An error status is the answer; workers may explain it in the body (the tokio worker
    // names its limit), no Grenache client reads that.
    let body = if status.starts_with("HTTP/1.1 200 ") {
        body
    } else {
        ""
    };
    Answer::Http {
        status,
        body: body.to_string(),
    }
}

/// A masked client frame (FIN, opcode `op`).
fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | op];
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
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// One server frame: (opcode, payload), or `None` at the end of the stream.
fn server_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).ok()?;
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).ok()?;
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    s.read_exact(&mut payload).ok()?;
    Some((h[0] & 0x0f, payload))
}

const SENTINEL: &[u8] = br#"["sentinel","fibonacci_worker",{"number":1}]"#;
const SENTINEL_REPLY: &str = r#"["sentinel",null,1]"#;

/// Upgrades a new connection, sends `message` and the sentinel request, and collects what
/// comes back before the sentinel's reply (or the close).
pub fn ws(addr: SocketAddr, message: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: w\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let _ = s.write_all(&client_frame(1, message));
    let _ = s.write_all(&client_frame(1, SENTINEL));
    let mut replies = Vec::new();
    while let Some((op, payload)) = server_frame(&mut s) {
        match op {
            1 => {
                let text = String::from_utf8(payload).unwrap();
                if text == SENTINEL_REPLY {
                    return Answer::Ws(replies);
                }
                replies.push(text);
            }
            8 => {
                let code = payload
                    .get(..2)
                    .map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
                return Answer::WsClose(code);
            }
            _ => {}
        }
    }
    Answer::WsEnded(replies)
}
