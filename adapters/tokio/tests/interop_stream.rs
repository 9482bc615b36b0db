//! HTTP streams (Node's `peer.stream` and `'stream'` event, grenache-nodejs-http 1.0.2):
//! Rust against the real Node packages through two real Node grapes, and Rust against Rust
//! (large bodies, backpressure, timeouts, failing handlers).
//!
//! Needs `node` and `npm ci --prefix tests/interop`; fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{run_node, spawn_node, start_grapes, wait_visible};
use grenache_tokio::rpc::stream::{
    BodySender, BodyStream, StatusCode, StreamOptions, StreamRequest, StreamResponder,
};
use grenache_tokio::rpc::{http, ServerConfig};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};

/// Starts `server` on a free loopback port; its `ip:port`.
async fn listen_local(server: &http::PeerRpcServer) -> String {
    server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .to_string()
}

const VISIBLE: Duration = Duration::from_secs(20);
const CHUNK: usize = 64 * 1024;

/// Byte `i` of the test pattern (the Node scripts use the same formula).
fn pattern_byte(i: usize) -> u8 {
    ((i ^ (i >> 8) ^ (i >> 16)) & 0xff) as u8
}

fn pattern(offset: usize, len: usize) -> Bytes {
    (offset..offset + len).map(pattern_byte).collect()
}

/// Uploads `size` bytes of the pattern in 64 KiB chunks, then ends the body.
async fn upload_pattern(mut body: BodySender, size: usize) -> io::Result<()> {
    let mut offset = 0;
    while offset < size {
        let n = CHUNK.min(size - offset);
        body.send(pattern(offset, n)).await?;
        offset += n;
    }
    body.finish();
    Ok(())
}

/// What a body held: its length, whether it is the pattern, and its text when small.
#[derive(Debug)]
struct Summary {
    len: usize,
    pattern: bool,
    text: Option<String>,
    largest_chunk: usize,
}

async fn summarize(mut body: BodyStream) -> io::Result<Summary> {
    let (mut len, mut is_pattern, mut kept, mut largest_chunk) = (0, true, Vec::new(), 0);
    while let Some(chunk) = body.chunk().await {
        let chunk = chunk?;
        is_pattern &= chunk
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(len + i));
        if len + chunk.len() <= CHUNK {
            kept.extend_from_slice(&chunk);
        }
        largest_chunk = largest_chunk.max(chunk.len());
        len += chunk.len();
    }
    Ok(Summary {
        len,
        pattern: is_pattern && len > 0,
        text: (len <= CHUNK).then(|| String::from_utf8_lossy(&kept).into_owned()),
        largest_chunk,
    })
}

/// The Rust twin of stream_worker.js in `stream` mode: `_a: echo` streams the body back,
/// anything else is read whole and answered `[rid, null, summary]`.
async fn rust_stream_handler(req: StreamRequest, responder: StreamResponder) -> io::Result<()> {
    let StreamRequest {
        meta,
        headers,
        mut body,
    } = req;
    if meta.is_stream && meta.action.as_deref() == Some("echo") {
        let mut out = responder.start();
        while let Some(chunk) = body.chunk().await {
            out.send(chunk?).await?;
        }
        return Ok(());
    }
    let summary = summarize(body).await?;
    let rid = meta.rid().cloned().unwrap_or(Value::Null);
    let answer = json!({
        "len": summary.len,
        "pattern": summary.pattern,
        "text": summary.text,
        "action": meta.action,
        "args": meta.args,
        "infoHeaders": meta.info_headers,
        "key": meta.key(),
        "contentType": headers.get("content-type").and_then(|v| v.to_str().ok()),
        "isStream": meta.is_stream,
    });
    responder.reply(&rid, &Ok(answer)).await
}

/// The buffered twin: `"hello"` → `"world"` (grenache-nodejs-http's own test), else an echo.
async fn rust_buffered_handler(req: Request) -> Result<Value, RpcError> {
    if req.payload == json!("hello") {
        return Ok(json!("world"));
    }
    Ok(json!({"payload": req.payload, "key": req.key, "action": req.action, "args": req.args}))
}

fn link(grape: &str) -> Link {
    Link::new(LinkConfig::new(grape)).unwrap()
}

/// A Link for Rust-to-Rust tests that never look anything up.
fn no_grape() -> Link {
    link("http://127.0.0.1:9")
}

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Runs stream_client.js and returns its JSON line.
async fn node_stream_client(env: &[(&'static str, String)]) -> Value {
    let out = run_node("stream_client.js", env, Duration::from_secs(60)).await;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stream_client.js printed {out:?}: {e}"))
}

/// Parses a `[rid, err, result]` frame the Node client printed as text.
fn frame(text: &Value) -> Value {
    serde_json::from_str(text.as_str().expect("a text body")).expect("a JSON frame")
}

fn assert_uuid(rid: &Value) {
    let rid = rid
        .as_str()
        .unwrap_or_else(|| panic!("rid {rid} is not a string"));
    assert_eq!(rid.len(), 36, "rid {rid} is not a uuid");
}

// ---------------------------------------------------------------------------------------
// Node clients, Rust servers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stream_clients_call_rust_servers() {
    let grapes = start_grapes().await;
    // A stream handler next to a buffered one; a buffered-only server; a streaming-only one.
    let streaming = http::PeerRpcServer::builder(link(&grapes.a))
        .handler(rust_buffered_handler)
        .stream_handler(rust_stream_handler)
        .build();
    let buffered = http::PeerRpcServer::builder(link(&grapes.a))
        .handler(rust_buffered_handler)
        .build();
    let only_streams = http::PeerRpcServer::builder(link(&grapes.a))
        .stream_handler(
            |req: StreamRequest, responder: StreamResponder| async move {
                // Node's disableBuffered server answering a buffered client itself.
                let is_stream = req.meta.is_stream;
                let body = req.body.collect(1 << 20).await?;
                let (rid, payload) = match serde_json::from_slice::<Value>(&body) {
                    Ok(Value::Array(items)) => (
                        items.first().cloned().unwrap_or(Value::Null),
                        items.get(2).cloned().unwrap_or(Value::Null),
                    ),
                    _ => (Value::Null, Value::Null),
                };
                let answer = json!({"raw": payload, "isStream": is_stream});
                responder.reply(&rid, &Ok(answer)).await
            },
        )
        .build();
    let mut ports = Vec::new();
    for (server, name) in [
        (&streaming, "rust_stream"),
        (&buffered, "rust_buf"),
        (&only_streams, "rust_only_streams"),
    ] {
        let port = server.listen(0).await.unwrap().port();
        assert!(server.start_announcing(name));
        ports.push((name, port));
    }
    for (name, port) in &ports {
        wait_visible(&grapes.b, name, *port, VISIBLE).await;
    }

    // 1. A small upload with Node's headers: `_a`, `_ar` (an object, sent as JSON) and a
    //    content type, read by the stream handler, answered with a frame.
    let out = node_stream_client(&env(&[
        ("GRAPE", &grapes.b),
        ("NAME", "rust_stream"),
        ("BODY", "megalargefile"),
        (
            "HEADERS",
            r#"{"_a":"uploadPublic","_ar":{"foo":"bar"},"content-type":"application/pdf"}"#,
        ),
    ]))
    .await;
    assert_eq!(out["err"], Value::Null, "{out}");
    let reply = frame(&out["text"]);
    assert_uuid(&reply[0]);
    assert_eq!(reply[1], Value::Null);
    assert_eq!(
        reply[2],
        json!({
            "len": 13, "pattern": false, "text": "megalargefile",
            "action": "uploadPublic", "args": {"foo": "bar"},
            "infoHeaders": [reply[0].clone(), "rust_stream"], "key": "rust_stream",
            "contentType": "application/pdf", "isStream": true,
        })
    );

    // 2. 8 MiB up and back down through the Rust echo handler.
    let size = 8 << 20;
    let out = node_stream_client(&env(&[
        ("GRAPE", &grapes.b),
        ("NAME", "rust_stream"),
        ("SIZE", &size.to_string()),
        ("HEADERS", r#"{"_a":"echo"}"#),
        ("TIMEOUT", "30000"),
    ]))
    .await;
    assert_eq!(
        out,
        json!({"err": null, "len": size, "pattern": true, "text": null})
    );

    // 3. A buffered Node client still reaches the buffered handler of the same server.
    let plain = common::node_client(&env(&[
        ("GRAPE", &grapes.b),
        ("TRANSPORT", "http"),
        ("NAME", "rust_stream"),
        ("PAYLOAD", r#"{"a":1}"#),
    ]))
    .await;
    assert_eq!(
        plain,
        json!({"err": null, "data": {"payload": {"a": 1}, "key": "rust_stream", "action": null, "args": {}}})
    );

    // 4. Without a stream handler, a streamed body is parsed as [rid, key, payload]; the
    //    rid and key of `_gr` win (grenache-nodejs-http test/peer-rpc-server-buffered.js).
    let out = node_stream_client(&env(&[
        ("GRAPE", &grapes.b),
        ("NAME", "rust_buf"),
        ("BODY", r#"["UUID", "rust_buf", "hello"]"#),
    ]))
    .await;
    assert_eq!(out["err"], Value::Null, "{out}");
    let reply = frame(&out["text"]);
    assert_uuid(&reply[0]);
    assert_eq!((&reply[1], &reply[2]), (&Value::Null, &json!("world")));
    let out = node_stream_client(&env(&[
        ("GRAPE", &grapes.b),
        ("NAME", "rust_buf"),
        ("BODY", r#"["UUID", "ignored_key", {"hello":"world"}]"#),
        ("HEADERS", r#"{"_a":"act","_ar":[1,2]}"#),
    ]))
    .await;
    let reply = frame(&out["text"]);
    assert_eq!(
        reply[2],
        json!({"payload": {"hello": "world"}, "key": "rust_buf", "action": "act", "args": [1, 2]})
    );

    // 5. A streaming-only server (Node's disableBuffered) gets buffered clients too.
    let plain = common::node_client(&env(&[
        ("GRAPE", &grapes.b),
        ("TRANSPORT", "http"),
        ("NAME", "rust_only_streams"),
        ("PAYLOAD", r#""hi""#),
    ]))
    .await;
    assert_eq!(
        plain,
        json!({"err": null, "data": {"raw": "hi", "isStream": false}})
    );
}

// ---------------------------------------------------------------------------------------
// Rust clients, Node servers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_stream_client_calls_node_workers() {
    let grapes = start_grapes().await;
    let (stream_port, buffered_port) = (common::free_tcp_port(), common::free_tcp_port());
    let _stream_worker = spawn_node(
        "stream_worker.js",
        &env(&[
            ("GRAPE", &grapes.a),
            ("NAME", "node_stream"),
            ("PORT", &stream_port.to_string()),
            ("MODE", "stream"),
        ]),
    );
    let _buffered_worker = spawn_node(
        "stream_worker.js",
        &env(&[
            ("GRAPE", &grapes.a),
            ("NAME", "node_buf"),
            ("PORT", &buffered_port.to_string()),
            ("MODE", "buffered"),
        ]),
    );
    wait_visible(&grapes.b, "node_stream", stream_port, VISIBLE).await;
    wait_visible(&grapes.b, "node_buf", buffered_port, VISIBLE).await;
    let client = http::PeerRpcClient::new(link(&grapes.b));

    // 1. A small upload to Node's 'stream' listener (disableBuffered): Node sees our `_gr`,
    //    `_a`, `_ar` (JSON) and content type, and answers with handler.reply.
    let options = StreamOptions::new()
        .action("uploadPublic")
        .args(json!({"foo": "bar"}))
        .header("content-type", "application/pdf")
        .timeout(Duration::from_secs(10));
    let stream = client.stream("node_stream", options).await.unwrap();
    let rid = stream.rid.clone();
    let mut body = stream.body;
    body.send(Bytes::from_static(b"mega")).await.unwrap();
    body.send(Bytes::from_static(b"largefile")).await.unwrap();
    body.finish();
    let response = stream.response.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.headers.get("transfer-encoding").unwrap(),
        "chunked",
        "Node answers chunked"
    );
    let bytes = response.body.collect(1 << 20).await.unwrap();
    let reply: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        reply,
        json!([rid, null, {
            "len": 13, "pattern": false, "text": "megalargefile",
            "action": "uploadPublic", "args": {"foo": "bar"},
            "infoHeaders": [rid, "node_stream"],
            "contentType": "application/pdf", "isStream": true,
        }])
    );

    // 2. 6 MiB echoed by Node (`req.pipe(rep)`), written and read at the same time.
    let size = 6 << 20;
    let options = StreamOptions::new()
        .action("echo")
        .timeout(Duration::from_secs(30));
    let stream = client.stream("node_stream", options).await.unwrap();
    let writer = tokio::spawn(upload_pattern(stream.body, size));
    let response = stream.response.await.unwrap();
    let summary = summarize(response.body).await.unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!((summary.len, summary.pattern), (size, true));

    // 3. Node's buffered server parses our streamed body; `_gr`'s rid wins over "UUID".
    let stream = client
        .stream(
            "node_buf",
            StreamOptions::new().timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let rid = stream.rid.clone();
    let mut body = stream.body;
    body.send(Bytes::from_static(br#"["UUID", "node_buf", "hello"]"#))
        .await
        .unwrap();
    drop(body);
    let response = stream.response.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let bytes = response.body.collect(1 << 20).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        format!(r#"["{rid}",null,"world"]"#)
    );

    // 4. A `_gr` that is not JSON: Node's exact 500 (with its spaces, and Content-Length).
    for name in ["node_stream", "node_buf"] {
        let options = StreamOptions::new()
            .header("_gr", "not json")
            .timeout(Duration::from_secs(10));
        let stream = client.stream(name, options).await.unwrap();
        drop(stream.body);
        let response = stream.response.await.unwrap();
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.body.collect(1024).await.unwrap(),
            &b"[null, \"ERR_HEADER_PARSE_GR\", null]"[..]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Rust to Rust

/// A server with a 64 KiB buffered limit: streamed bodies must not be held by it.
async fn rust_server() -> (http::PeerRpcServer, String) {
    let config = ServerConfig {
        max_message_size: 64 * 1024,
        ..ServerConfig::default()
    };
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .stream_handler(rust_stream_handler)
        .config(config)
        .build();
    let addr = server
        .listen_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, addr.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_stream_client_and_server() {
    let (_server, dest) = rust_server().await;
    let client = http::PeerRpcClient::new(no_grape());

    // 32 MiB each way through a server whose buffered limit is 64 KiB.
    let size = 32 << 20;
    let options = StreamOptions::new()
        .action("echo")
        .timeout(Duration::from_secs(60));
    let stream = client.stream_to(&dest, "svc", options).await.unwrap();
    let writer = tokio::spawn(upload_pattern(stream.body, size));
    let response = stream.response.await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    let summary = summarize(response.body).await.unwrap();
    writer.await.unwrap().unwrap();
    assert_eq!((summary.len, summary.pattern), (size, true));
    assert!(
        summary.largest_chunk <= 1 << 20,
        "chunks stay small: {}",
        summary.largest_chunk
    );

    // A summary with the meta the handler saw.
    let options = StreamOptions::new()
        .action("count")
        .args(json!({"n": 1}))
        .header("x-num", 5);
    let stream = client.stream_to(&dest, "svc", options).await.unwrap();
    let rid = stream.rid.clone();
    upload_pattern(stream.body, 100_000).await.unwrap();
    let response = stream.response.await.unwrap();
    let reply: Value = serde_json::from_slice(&response.body.collect(4096).await.unwrap()).unwrap();
    assert_eq!(reply[0], json!(rid));
    assert_eq!(
        (
            &reply[2]["len"],
            &reply[2]["pattern"],
            &reply[2]["action"],
            &reply[2]["args"]
        ),
        (
            &json!(100_000),
            &json!(true),
            &json!("count"),
            &json!({"n": 1})
        )
    );
    assert_eq!(reply[2]["infoHeaders"], json!([rid, "svc"]));

    // A non-chunked request to the same server still takes the buffered path.
    let answer = client
        .request_to(&dest, "svc", json!("hello"), Duration::from_secs(5))
        .await;
    assert_eq!(answer, Ok(json!("world")));

    // A bad `_gr`: Node's 500.
    let stream = client
        .stream_to(&dest, "svc", StreamOptions::new().header("_gr", "[oops"))
        .await
        .unwrap();
    drop(stream.body);
    let response = stream.response.await.unwrap();
    assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.body.collect(1024).await.unwrap(),
        &b"[null, \"ERR_HEADER_PARSE_GR\", null]"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_stream_client_to_rust_buffered_server() {
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .build();
    let dest = listen_local(&server).await;
    let client = http::PeerRpcClient::new(no_grape());
    let stream = client
        .stream_to(&dest, "rpc_buf", StreamOptions::new())
        .await
        .unwrap();
    let rid = stream.rid.clone();
    let mut body = stream.body;
    body.send(Bytes::from_static(br#"["UUID", "rpc_buf", "hello"]"#))
        .await
        .unwrap();
    body.finish();
    let response = stream.response.await.unwrap();
    assert_eq!(
        response.body.collect(1024).await.unwrap(),
        format!(r#"["{rid}",null,"world"]"#).as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_stops_the_writer() {
    // The handler reads nothing until told to: the client's writes must stall after a
    // bounded amount (queue + socket buffers), not pile up in memory.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .stream_handler(move |req: StreamRequest, responder: StreamResponder| {
            let mut release = release_rx.clone();
            async move {
                let _ = release.wait_for(|go| *go).await;
                let summary = summarize(req.body).await?;
                responder.reply(&json!("r"), &Ok(json!(summary.len))).await
            }
        })
        .build();
    let dest = listen_local(&server).await;
    let client = http::PeerRpcClient::new(no_grape());
    let stream = client
        .stream_to(&dest, "svc", StreamOptions::new())
        .await
        .unwrap();
    let mut body = stream.body;
    let mut written = 0usize;
    loop {
        let send = body.send(pattern(written, CHUNK));
        match tokio::time::timeout(Duration::from_millis(500), send).await {
            Ok(sent) => {
                sent.unwrap();
                written += CHUNK;
                assert!(
                    written < 64 << 20,
                    "64 MiB written and nobody reads: no backpressure"
                );
            }
            // Stalled. The `send` future was dropped before it queued its chunk.
            Err(_) => break,
        }
    }
    eprintln!("the writer stalled after {written} bytes nobody read");
    assert!(
        written < 32 << 20,
        "stalled only after {written} bytes, more than queue and socket buffers"
    );
    release_tx.send(true).unwrap();
    body.finish();
    let response = stream.response.await.unwrap();
    let reply: Value = serde_json::from_slice(&response.body.collect(1024).await.unwrap()).unwrap();
    assert_eq!(reply, json!(["r", null, written]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_timeouts_are_enforced() {
    // A handler that never reads nor answers (Node would leave this client waiting).
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .stream_handler(
            |_req: StreamRequest, _responder: StreamResponder| async move {
                std::future::pending::<()>().await;
                Ok(())
            },
        )
        .build();
    let dest = listen_local(&server).await;
    let client = http::PeerRpcClient::new(no_grape());
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let stream = client
        .stream_to(&dest, "svc", StreamOptions::new().timeout(timeout))
        .await
        .unwrap();
    let mut body = stream.body;
    let outcome = stream.response.await;
    let took = started.elapsed();
    assert_eq!(outcome.unwrap_err(), RpcError::Timeout);
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "ERR_TIMEOUT after {took:?}"
    );
    // Give the connection task its turn to notice, then the writer fails the same way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut error = None;
    for _ in 0..100 {
        if let Err(e) = body.send(Bytes::from_static(b"late")).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("writing after the timeout fails");
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert_eq!(error.to_string(), "ERR_TIMEOUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handlers_break_the_body_and_silent_ones_get_an_empty_200() {
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .stream_handler(
            |req: StreamRequest, responder: StreamResponder| async move {
                match req.meta.action.as_deref() {
                    Some("fail") => {
                        let mut out = responder.start();
                        out.send(Bytes::from_static(b"partial")).await?;
                        Err(io::Error::other("disk full"))
                    }
                    Some("panic") => {
                        let mut out = responder.start();
                        out.send(Bytes::from_static(b"partial")).await?;
                        panic!("handler bug");
                    }
                    Some("abort") => {
                        let mut out = responder.start();
                        out.send(Bytes::from_static(b"partial")).await?;
                        out.abort("cancelled").await;
                        Ok(())
                    }
                    Some("status") => {
                        let mut responder = responder;
                        responder.set_status(StatusCode::CREATED);
                        responder
                            .headers_mut()
                            .insert("x-upload", "done".parse().unwrap());
                        responder.start().send(Bytes::from_static(b"ok")).await
                    }
                    _ => Ok(()),
                }
            },
        )
        .build();
    let dest = listen_local(&server).await;
    let client = http::PeerRpcClient::new(no_grape());
    let open = |action: &'static str| {
        let client = client.clone();
        let dest = dest.clone();
        async move {
            let options = StreamOptions::new()
                .action(action)
                .timeout(Duration::from_secs(5));
            let stream = client.stream_to(&dest, "svc", options).await.unwrap();
            drop(stream.body);
            stream.response.await
        }
    };
    for action in ["fail", "panic", "abort"] {
        // hyper may not even have flushed the head when the body breaks: then the response
        // itself fails, which is just as clear.
        let response = match open(action).await {
            Ok(response) => response,
            Err(e) => {
                assert!(
                    e.to_string().starts_with("ERR_REQUEST_GENERIC: "),
                    "{action}: {e}"
                );
                continue;
            }
        };
        assert_eq!(response.status, StatusCode::OK);
        let mut body = response.body;
        let mut got = Vec::new();
        let mut failed = false;
        while let Some(chunk) = body.chunk().await {
            match chunk {
                Ok(c) => got.extend_from_slice(&c),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(
            failed,
            "{action}: a failed handler must not look like a complete body"
        );
        assert!(b"partial".starts_with(&got), "{action}: {got:?}");
    }
    let response = open("status").await.unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.headers.get("x-upload").unwrap(), "done");
    assert_eq!(response.body.collect(10).await.unwrap(), &b"ok"[..]);
    let response = open("silent").await.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.body.collect(10).await.unwrap().is_empty());
}

#[tokio::test]
// WebSocket clients have no `stream` at all (it used to exist and always fail): that is now
// the compiler's to check, so only the HTTP half of this test remains.
async fn stream_to_unknown_hosts_fails_cleanly() {
    let port = common::free_tcp_port();
    let client = http::PeerRpcClient::new(no_grape());
    let error = client
        .stream_to(&format!("127.0.0.1:{port}"), "svc", StreamOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "ERR_REQUEST_GENERIC: request to http://127.0.0.1:{port}/ failed, reason: connect ECONNREFUSED 127.0.0.1:{port}"
        )
    );
}

#[tokio::test]
async fn stream_requests_are_node_bytes_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw listener records what the client sends (docs/protocol.md §10.6), then answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = listener.local_addr().unwrap().to_string();
    let recorder = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"0\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nraw")
            .await
            .unwrap();
        String::from_utf8(seen).unwrap()
    });
    let client = http::PeerRpcClient::new(no_grape());
    let options = StreamOptions::new()
        .action("upload")
        .args(json!({"foo": "bar"}))
        .header("content-type", "application/pdf");
    let stream = client.stream_to(&dest, "rpc_test", options).await.unwrap();
    let rid = stream.rid.clone();
    let mut body = stream.body;
    body.send(Bytes::from_static(b"hello ")).await.unwrap();
    // Let the first chunk go out on its own, as Node writes each chunk.
    tokio::time::sleep(Duration::from_millis(50)).await;
    body.send(Bytes::from_static(b"world")).await.unwrap();
    body.finish();
    let response = stream.response.await.unwrap();
    assert_eq!(response.body.collect(10).await.unwrap(), &b"raw"[..]);
    assert_eq!(
        recorder.await.unwrap(),
        format!(
            "POST / HTTP/1.1\r\n\
             _gr: [\"{rid}\",\"rpc_test\"]\r\n\
             connection: close\r\n\
             transfer-encoding: chunked\r\n\
             _a: upload\r\n\
             _ar: {{\"foo\":\"bar\"}}\r\n\
             content-type: application/pdf\r\n\
             host: {dest}\r\n\
             \r\n\
             6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_response_cancels_the_exchange() {
    let (_server, dest) = rust_server().await;
    let client = http::PeerRpcClient::new(no_grape());
    let stream = client
        .stream_to(&dest, "svc", StreamOptions::new().action("count"))
        .await
        .unwrap();
    let mut body = stream.body;
    body.send(Bytes::from_static(b"first")).await.unwrap();
    drop(stream.response);
    let mut error = None;
    for i in 0..1000 {
        let send = body.send(pattern(i * CHUNK, CHUNK));
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error = Some(e);
                break;
            }
            Err(_) => panic!("the writer hangs instead of failing"),
        }
    }
    let error = error.expect("writing after the response was dropped fails");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_body_times_out_on_the_server() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = http::PeerRpcServer::builder(no_grape())
        .handler(rust_buffered_handler)
        .stream_handler(
            |mut req: StreamRequest, responder: StreamResponder| async move {
                let started = Instant::now();
                let mut got = 0;
                let outcome = loop {
                    match req.body.chunk().await {
                        Some(Ok(chunk)) => got += chunk.len(),
                        Some(Err(e)) => break Err(RpcError::new(format!("{:?}", e.kind()))),
                        None => break Ok(json!(got)),
                    }
                };
                let waited = started.elapsed().as_millis() as u64;
                let outcome = outcome.map_err(|e| RpcError::with_data(e.message(), json!(waited)));
                responder.reply(&json!("r"), &outcome).await
            },
        )
        .config(config)
        .build();
    let dest = listen_local(&server).await;
    let client = http::PeerRpcClient::new(no_grape());
    let stream = client
        .stream_to(
            &dest,
            "svc",
            StreamOptions::new().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let mut body = stream.body;
    body.send(Bytes::from_static(b"one")).await.unwrap();
    // Then silence, with the body still open.
    let response = stream.response.await.unwrap();
    let reply: Value = serde_json::from_slice(&response.body.collect(1024).await.unwrap()).unwrap();
    assert_eq!(reply[1], "TimedOut", "{reply}");
    let waited = reply[2].as_u64().unwrap();
    assert!((300..1500).contains(&waited), "timed out after {waited} ms");
    drop(body);
}
