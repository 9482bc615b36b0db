//! The HTTP server and client against raw sockets: any method and path, `_gr`/`_a`/`_ar`,
//! gzip both ways, malformed and oversized bodies, chunked and pipelined requests, and the
//! client's error strings. No grape and no Node needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use grenache_tokio::rpc::http::{HttpClientConfig, PeerRpcClient, PeerRpcServer};
use grenache_tokio::rpc::ServerConfig;
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

async fn handler(req: Request) -> Result<Value, RpcError> {
    match req.payload.get("op").and_then(Value::as_str) {
        Some("boom") => Err(RpcError::new("boom")),
        Some("panic") => panic!("handler panics on purpose"),
        _ => Ok(json!({"p": req.payload, "key": req.key, "a": req.action, "ar": req.args})),
    }
}

async fn server(config: ServerConfig) -> (PeerRpcServer, SocketAddr) {
    let server = PeerRpcServer::builder(unused_link())
        .handler(handler)
        .config(config)
        .build();
    let addr = server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, addr)
}

/// Sends raw bytes and returns everything the server writes until it closes (at most 3 s).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut answer))
        .await
        .expect("the server closes within 3 s")
        .unwrap();
    answer
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Status line, lowercase head, and body of a single Content-Length answer.
fn split(answer: &[u8]) -> (String, String, Vec<u8>) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(answer)));
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let status = head.lines().next().unwrap().to_string();
    (
        status,
        head.to_ascii_lowercase(),
        answer[end + 4..].to_vec(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

#[tokio::test]
async fn any_method_and_path_and_node_shaped_answers() {
    let (_server, addr) = server(ServerConfig::default()).await;
    let mut get =
        b"GET /foo/bar HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 12\r\n\r\n"
            .to_vec();
    get.extend_from_slice(br#"["r","k",12]"#);
    let (status, head, body) = split(&exchange(addr, &get).await);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        !head.contains("content-type"),
        "Node sends no content-type: {head}"
    );
    assert!(!head.contains("content-encoding"));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"["r",null,{"a":null,"ar":{},"key":"k","p":12}]"#
    );
    let (status, _, body) =
        split(&exchange(addr, &post("/", "", br#"["r2","k",{"op":"boom"}]"#)).await);
    assert_eq!(status, "HTTP/1.1 200 OK", "errors are 200 too");
    assert_eq!(body, br#"["r2","boom",null]"#);
    let (_, _, body) =
        split(&exchange(addr, &post("/", "", br#"["r3","k",{"op":"panic"}]"#)).await);
    assert_eq!(body, br#"["r3","ERR_HANDLER_PANIC",null]"#);
}

#[tokio::test]
async fn gr_a_and_ar_headers() {
    let (_server, addr) = server(ServerConfig::default()).await;
    let headers = "_gr: [\"HDR_RID\",\"hkey\"]\r\n_a: upload\r\n_ar: {\"foo\":\"bar\"}\r\n";
    let (_, _, body) =
        split(&exchange(addr, &post("/", headers, br#"["body_rid","bkey",1]"#)).await);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        answer,
        json!(["HDR_RID", null, {"p": 1, "key": "hkey", "a": "upload", "ar": {"foo": "bar"}}])
    );
    // A falsy _gr element keeps the body's value; an invalid _ar is {}.
    let headers = "_gr: [null,\"hkey\"]\r\n_ar: nope\r\n";
    let (_, _, body) =
        split(&exchange(addr, &post("/", headers, br#"["body_rid","bkey",1]"#)).await);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer[0], "body_rid");
    assert_eq!(answer[2]["key"], "hkey");
    assert_eq!(answer[2]["ar"], json!({}));

    let (status, _, body) =
        split(&exchange(addr, &post("/", "_gr: nope\r\n", br#"["r","k",1]"#)).await);
    assert_eq!(status, "HTTP/1.1 500 Internal Server Error");
    assert_eq!(body, br#"[null, "ERR_HEADER_PARSE_GR", null]"#);
}

#[tokio::test]
async fn gzip_both_ways_and_raw_fallback() {
    let (_server, addr) = server(ServerConfig::default()).await;
    let packed = gzip(br#"["z","k","zipped"]"#);
    let (_, head, body) =
        split(&exchange(addr, &post("/", "grc-compress: gzip\r\n", &packed)).await);
    assert!(!head.contains("content-encoding"));
    assert_eq!(
        gunzip(&body),
        br#"["z",null,{"a":null,"ar":{},"key":"k","p":"zipped"}]"#
    );
    // A plain body under grc-compress: gzip is parsed raw (Node's fallback); the answer is
    // still gzip.
    let (_, _, body) = split(
        &exchange(
            addr,
            &post("/", "grc-compress: gzip\r\n", br#"["p","k",1]"#),
        )
        .await,
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&gunzip(&body)).unwrap()[0],
        "p"
    );
    // grc-compress: none is plain.
    let (_, _, body) = split(
        &exchange(
            addr,
            &post("/", "grc-compress: none\r\n", br#"["n","k",1]"#),
        )
        .await,
    );
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()[0], "n");
}

#[tokio::test]
async fn malformed_bodies_get_no_answer_and_the_server_goes_on() {
    let (_server, addr) = server(ServerConfig::default()).await;
    for bad in [&b"not json"[..], b"5", b"{}", b"null", b"\xff\xfe", b""] {
        let answer = exchange(addr, &post("/", "", bad)).await;
        assert!(
            answer.is_empty(),
            "no answer to {bad:?}, got {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xff; 300]).await.unwrap();
    drop(garbage);
    let (status, _, _) = split(&exchange(addr, &post("/", "", br#"["ok","k",1]"#)).await);
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn oversized_bodies_are_413_also_after_gunzip() {
    let config = ServerConfig {
        max_message_size: 1000,
        ..ServerConfig::default()
    };
    let (_server, addr) = server(config).await;
    let big = format!(r#"["r","k","{}"]"#, "x".repeat(2000));
    let (status, _, body) = split(&exchange(addr, &post("/", "", big.as_bytes())).await);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(body, b"ERR_PAYLOAD_TOO_LARGE");
    let bomb = gzip(big.as_bytes());
    assert!(bomb.len() < 1000);
    let (status, _, _) = split(&exchange(addr, &post("/", "grc-compress: gzip\r\n", &bomb)).await);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
}

#[tokio::test]
async fn chunked_and_pipelined_requests() {
    let (_server, addr) = server(ServerConfig::default()).await;
    let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n[\"c\",\"\r\n6\r\nk\",42]\r\n0\r\n\r\n";
    let (_, _, body) = split(&exchange(addr, chunked).await);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()[2]["p"], 42);

    let mut two =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n[\"1\",\"k\",1]".to_vec();
    two.extend_from_slice(&post("/", "", br#"["2","k",2]"#));
    let answer = String::from_utf8(exchange(addr, &two).await).unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    let first = answer.find(r#"["1",null"#).unwrap();
    let second = answer.find(r#"["2",null"#).unwrap();
    assert!(first < second, "answers in request order");
}

#[tokio::test]
async fn client_and_server_together() {
    let (_server, addr) = server(ServerConfig::default()).await;
    for compress in [false, true] {
        let config = HttpClientConfig {
            compress,
            ..HttpClientConfig::default()
        };
        let client = PeerRpcClient::with_config(unused_link(), config);
        let t = Duration::from_secs(3);
        let dest = addr.to_string();
        let answer = client
            .request_to(&dest, "svc", json!({"v": "ü"}), t)
            .await
            .unwrap();
        assert_eq!(answer["p"], json!({"v": "ü"}));
        assert_eq!(answer["key"], "svc");
        assert_eq!(
            client
                .request_to(&dest, "svc", json!({"op": "boom"}), t)
                .await,
            Err(RpcError::new("boom"))
        );
        let calls = (0..20).map(|i| client.request_to(&dest, "svc", json!(i), t));
        for (i, answer) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(answer.unwrap()["p"], json!(i));
        }
    }
}

/// A fake worker answering every request with `status` and `body` (raw bytes).
async fn canned(status: u16, body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65536];
                let _ = socket.read(&mut buffer).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn client_error_strings() {
    let t = Duration::from_secs(3);
    let plain = PeerRpcClient::new(unused_link());
    let zipped = PeerRpcClient::with_config(
        unused_link(),
        HttpClientConfig {
            compress: true,
            ..HttpClientConfig::default()
        },
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = listener.local_addr().unwrap();
    drop(listener);
    let e = plain
        .request_to(&refused.to_string(), "svc", json!(1), t)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("ERR_REQUEST_GENERIC: request to http://{refused}/ failed, reason: connect ECONNREFUSED {refused}")
    );

    let failing = canned(500, b"oops".to_vec()).await.to_string();
    let e = plain
        .request_to(&failing, "svc", json!(1), t)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ERR_REQUEST_GENERIC: oops");

    for junk in [&b"not json"[..], b"null", b"5", b"{}"] {
        let dest = canned(200, junk.to_vec()).await.to_string();
        let e = plain
            .request_to(&dest, "svc", json!(1), t)
            .await
            .unwrap_err();
        assert_eq!(e, RpcError::ReplyEmpty, "{junk:?}");
        assert_eq!(e.to_string(), "ERR_REPLY_EMPTY");
    }

    let unzipped = canned(200, br#"["x",null,1]"#.to_vec()).await.to_string();
    let e = zipped
        .request_to(&unzipped, "svc", json!(1), t)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ERR_REPLY_ENCODING_COMPRESSION");
    let e = plain
        .request_to(&unzipped, "svc", json!(1), t)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ERR_REPLY_RID_MISMATCH");

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let e = plain
        .request_to(&silent_addr, "svc", json!(1), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ERR_TIMEOUT");
    assert!(started.elapsed() < Duration::from_millis(700));
    drop(silent);
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_after_the_read_timeout() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (_server, addr) = server(config).await;
    // Connected, never sends a byte.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Sends one keep-alive request, then stays idle.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n[\"1\",\"k\",1]")
        .await
        .unwrap();
    for socket in [&mut silent, &mut idle] {
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the server must close the connection");
    }
}

/// Reads from `socket` until `needle` has arrived (at most 3 s); returns all that came.
async fn read_until(socket: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within 3 s: {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let (_server, addr) = server(ServerConfig::default()).await;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
        )
        .await
        .unwrap();
    let interim = read_until(&mut socket, "\r\n\r\n").await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    socket.write_all(br#"["e","k",7]"#).await.unwrap();
    let answer = read_until(&mut socket, r#"["e",null"#).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The connection stays open for the next request, and says for how long.
    assert!(
        answer.contains("\r\nConnection: keep-alive\r\nKeep-Alive: timeout=30\r\n"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_at_once_while_it_still_comes() {
    let (_server, addr) = server(ServerConfig {
        max_message_size: 1000,
        ..ServerConfig::default()
    })
    .await;
    for _ in 0..5 {
        let socket = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = socket.into_split();
        // Refused at the head (its length is over the limit), not after the body: the
        // client, still sending, reads the 413 long before it would have sent 4 MB.
        writer
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n")
            .await
            .unwrap();
        let sending = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..30 {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), reader.read_to_end(&mut answer))
            .await
            .expect("the worker closes within 3 s");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{read:?}: {text:?}"
        );
        assert!(text.ends_with("\r\n\r\nERR_PAYLOAD_TOO_LARGE"), "{text}");
        sending.abort();
    }
}

#[tokio::test]
async fn a_stream_after_a_buffered_request_on_one_connection() {
    use grenache_tokio::rpc::stream::{StreamRequest, StreamResponder};
    let server = PeerRpcServer::builder(unused_link())
        .handler(handler)
        .stream_handler(
            |req: StreamRequest, responder: StreamResponder| async move {
                let mut body = req.body;
                let mut out = responder.start();
                out.send(bytes::Bytes::from_static(b"echo:")).await?;
                while let Some(chunk) = body.chunk().await {
                    out.send(chunk?).await?;
                }
                Ok(())
            },
        )
        .build();
    let addr = server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut socket = TcpStream::connect(addr).await.unwrap();
    // A buffered request, then (in the same write, so the worker reads both at once) a
    // chunked one: the second goes to the stream handler with the bytes already read.
    let mut two =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n[\"b\",\"k\",1]".to_vec();
    two.extend_from_slice(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    socket.write_all(&two).await.unwrap();
    let first = read_until(&mut socket, r#"["b",null"#).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    socket.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), socket.read_to_end(&mut rest))
        .await
        .expect("the worker closes after the stream")
        .unwrap();
    // The stream's answer head may have come with the first answer.
    let all = first + &String::from_utf8_lossy(&rest);
    let second = all.rfind("HTTP/1.1 200 OK\r\n").unwrap();
    assert!(second > 0, "{all}");
    let rest = &all[second..];
    // hyper streams the answer chunked; the handler's bytes arrive in order.
    let body: String = rest
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .collect();
    assert_eq!(body, "echo:hello world", "{rest}");
}
