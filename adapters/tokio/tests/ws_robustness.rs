//! The WebSocket server and client against raw sockets: malformed and oversized input,
//! any path, binary frames, pings, out-of-order answers, panicking handlers, closed and
//! refused connections, idle close and pooling. No grape needed (no Node either).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use grenache_tokio::rpc::ws::{PeerRpcClient, PeerRpcServer, WsClientConfig};
use grenache_tokio::rpc::ServerConfig;
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A Link to a grape that is never called in these tests.
fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

async fn handler(req: Request) -> Result<Value, RpcError> {
    match req.payload.get("op").and_then(Value::as_str) {
        Some("sleep") => {
            let ms = req.payload["ms"].as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!(ms))
        }
        Some("panic") => panic!("handler panics on purpose"),
        Some("boom") => Err(RpcError::new("boom")),
        _ => Ok(json!({"echo": req.payload, "key": req.key})),
    }
}

async fn server_with(config: ServerConfig) -> (PeerRpcServer, SocketAddr) {
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

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "permessage-deflate must be declined"
    );
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    ws
}

/// The next text or binary message as JSON, or `None` if nothing comes within `wait`.
async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        match message {
            Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Message::Binary(data) => return Some(serde_json::from_slice(&data).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

#[tokio::test]
async fn malformed_messages_get_no_answer_and_do_not_break_the_connection() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    let mut ws = connect(addr, "/ws").await;
    for bad in ["not json", "5", "{}", "null", "\"str\"", "[1,", "\u{0}"] {
        ws.send(Message::text(bad)).await.unwrap();
    }
    ws.send(Message::binary(&b"\xff\xfe"[..])).await.unwrap();
    assert_eq!(next_json(&mut ws, Duration::from_millis(300)).await, None);
    ws.send(Message::text(r#"["r1","svc",{"a":1}]"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        Some(json!(["r1", null, {"echo": {"a": 1}, "key": "svc"}]))
    );
}

#[tokio::test]
async fn binary_frames_any_path_and_verbatim_rids() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    for path in ["/ws", "/", "/anything?x=1"] {
        let mut ws = connect(addr, path).await;
        ws.send(Message::binary(br#"[42,"svc","x"]"#.to_vec()))
            .await
            .unwrap();
        // A numeric rid comes back as a number, and the answer is a text frame.
        let answer = tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            answer,
            Message::text(r#"[42,null,{"echo":"x","key":"svc"}]"#)
        );
        ws.send(Message::text(r#"["r","svc",{"op":"boom"}]"#))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut ws, Duration::from_secs(2)).await,
            Some(json!(["r", "boom", null]))
        );
    }
}

#[tokio::test]
async fn answers_come_as_handlers_finish_and_pings_are_answered() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    let mut ws = connect(addr, "/ws").await;
    ws.send(Message::text(r#"["slow","s",{"op":"sleep","ms":300}]"#))
        .await
        .unwrap();
    ws.send(Message::text(r#"["fast","s",{"op":"sleep","ms":10}]"#))
        .await
        .unwrap();
    ws.send(Message::Ping(b"pingdata".to_vec().into()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut pong = false;
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(2), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(data) => {
                assert_eq!(&data[..], b"pingdata");
                pong = true;
            }
            Message::Text(text) => {
                seen.push(serde_json::from_str::<Value>(text.as_str()).unwrap()[0].clone())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pong, "the ping got its pong");
    assert_eq!(seen, vec![json!("fast"), json!("slow")]);
}

#[tokio::test]
async fn a_panicking_handler_gets_an_error_answer() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    let mut ws = connect(addr, "/ws").await;
    ws.send(Message::text(r#"["p","s",{"op":"panic"}]"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await,
        Some(json!(["p", "ERR_HANDLER_PANIC", null]))
    );
    ws.send(Message::text(r#"["ok","s",1]"#)).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await.unwrap()[0],
        "ok"
    );
}

#[tokio::test]
async fn oversized_messages_close_only_their_connection() {
    let config = ServerConfig {
        max_message_size: 1024,
        ..ServerConfig::default()
    };
    let (_server, addr) = server_with(config).await;
    let mut big = connect(addr, "/ws").await;
    let payload = format!(r#"["r","s","{}"]"#, "x".repeat(4096));
    let _ = big.send(Message::text(payload)).await;
    assert_eq!(
        next_json(&mut big, Duration::from_secs(2)).await,
        None,
        "closed, no answer"
    );
    let mut ws = connect(addr, "/ws").await;
    ws.send(Message::text(r#"["r2","s",1]"#)).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await.unwrap()[0],
        "r2"
    );
}

#[tokio::test]
async fn plain_http_and_garbage_do_not_hurt_the_server() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), plain.read_to_end(&mut sink)).await;
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0xff; 512]).await.unwrap();
    drop(garbage);
    let mut ws = connect(addr, "/ws").await;
    ws.send(Message::text(r#"["r","s",1]"#)).await.unwrap();
    assert_eq!(
        next_json(&mut ws, Duration::from_secs(2)).await.unwrap()[0],
        "r"
    );
}

#[tokio::test]
async fn max_in_flight_applies_backpressure_without_losing_requests() {
    let config = ServerConfig {
        max_in_flight: 2,
        ..ServerConfig::default()
    };
    let (_server, addr) = server_with(config).await;
    let mut ws = connect(addr, "/ws").await;
    for i in 0..6 {
        ws.send(Message::text(format!(
            r#"[{i},"s",{{"op":"sleep","ms":100}}]"#
        )))
        .await
        .unwrap();
    }
    let started = Instant::now();
    let mut rids = Vec::new();
    for _ in 0..6 {
        rids.push(
            next_json(&mut ws, Duration::from_secs(3)).await.unwrap()[0]
                .as_u64()
                .unwrap(),
        );
    }
    rids.sort();
    assert_eq!(rids, vec![0, 1, 2, 3, 4, 5]);
    // Two at a time: three rounds of 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(280),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn close_closes_the_listener_before_returning() {
    let (server, addr) = server_with(ServerConfig::default()).await;
    // No sleep after it (as `stop()` needed): the listener is gone once `close` returns.
    server.close(Duration::ZERO).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------
// Client

#[tokio::test]
async fn client_reports_refused_connections() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = PeerRpcClient::new(unused_link());
    let e = client
        .request_to(&addr.to_string(), "svc", json!(1), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("ERR_REQUEST_GENERIC: request to ws://{addr}/ws failed, reason: connect ECONNREFUSED {addr}")
    );
}

#[tokio::test]
async fn client_talks_to_the_rust_server_and_matches_rids() {
    let (_server, addr) = server_with(ServerConfig::default()).await;
    let client = PeerRpcClient::new(unused_link());
    let dest = addr.to_string();
    let t = Duration::from_secs(3);
    let (slow, fast) = tokio::join!(
        client.request_to(&dest, "svc", json!({"op": "sleep", "ms": 200}), t),
        client.request_to(&dest, "svc", json!({"op": "sleep", "ms": 1}), t),
    );
    assert_eq!((slow.unwrap(), fast.unwrap()), (json!(200), json!(1)));
    assert_eq!(
        client
            .request_to(&dest, "svc", json!({"op": "boom"}), t)
            .await,
        Err(RpcError::new("boom"))
    );
}

/// A raw WebSocket "worker" that counts connections and runs `behaviour` on each.
async fn raw_worker<F, Fut>(behaviour: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let behaviour = Arc::new(behaviour);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let behaviour = Arc::clone(&behaviour);
            tokio::spawn(async move {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                    behaviour(ws).await;
                }
            });
        }
    });
    (addr, count)
}

#[tokio::test]
async fn in_flight_requests_fail_at_once_when_the_worker_closes() {
    // Reads one request, then closes the connection without answering.
    let (addr, _) = raw_worker(|mut ws| async move {
        let _ = ws.next().await;
        let _ = ws.close(None).await;
    })
    .await;
    let client = PeerRpcClient::new(unused_link());
    let started = Instant::now();
    let e = client
        .request_to(&addr.to_string(), "svc", json!(1), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "ERR_TRANSPORT_CLOSE");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn client_ignores_foreign_and_malformed_answers() {
    // Answers every request with junk first, then a foreign rid, then the right answer.
    let (addr, _) = raw_worker(|mut ws| async move {
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let request: Value = serde_json::from_str(text.as_str()).unwrap();
            for junk in ["5", "{}", "nope", r#"["other",null,1]"#] {
                let _ = ws.send(Message::text(junk)).await;
            }
            let answer = json!([request[0], null, request[2]]).to_string();
            let _ = ws.send(Message::text(answer)).await;
        }
    })
    .await;
    let client = PeerRpcClient::new(unused_link());
    let answer = client
        .request_to(
            &addr.to_string(),
            "svc",
            json!({"v": 7}),
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(answer, Ok(json!({"v": 7})));
}

#[tokio::test]
async fn the_pool_keeps_three_connections_per_worker() {
    let (raw, count) = raw_worker(|mut ws| async move {
        while let Some(Ok(Message::Text(text))) = ws.next().await {
            let request: Value = serde_json::from_str(text.as_str()).unwrap();
            let _ = ws
                .send(Message::text(json!([request[0], null, 1]).to_string()))
                .await;
        }
    })
    .await;
    let client = PeerRpcClient::new(unused_link());
    for _ in 0..20 {
        client
            .request_to(&raw.to_string(), "svc", json!(1), Duration::from_secs(3))
            .await
            .unwrap();
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "Node's maxActiveDestTransports"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_and_reopened_on_demand() {
    let (raw, count) = raw_worker(|mut ws| async move {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message {
                let request: Value = serde_json::from_str(text.as_str()).unwrap();
                let _ = ws
                    .send(Message::text(json!([request[0], null, 1]).to_string()))
                    .await;
            }
        }
    })
    .await;
    let config = WsClientConfig {
        max_connections_per_dest: 1,
        idle_timeout: Duration::from_millis(200),
        ..WsClientConfig::default()
    };
    let client = PeerRpcClient::with_config(unused_link(), config);
    let dest = raw.to_string();
    client
        .request_to(&dest, "svc", json!(1), Duration::from_secs(2))
        .await
        .unwrap();
    client
        .request_to(&dest, "svc", json!(1), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .request_to(&dest, "svc", json!(1), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "a new connection after the idle close"
    );
}

/// A worker that takes the upgrade and then never reads: the client's writes fill the
/// socket buffers and its connection task blocks in a write, yet every request still fails
/// with `ERR_TIMEOUT` at its deadline (the deadlines are checked by a task of their own).
#[tokio::test]
async fn requests_to_a_worker_that_stops_reading_time_out_on_time() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (upgraded_tx, upgraded_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let _ = upgraded_tx.send(());
        // Holds the connection open without reading a byte.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
    });
    let client = PeerRpcClient::new(unused_link());
    let dest = addr.to_string();
    // 48 requests of 512 KiB: far more than loopback's socket buffers hold.
    let payload = json!("x".repeat(512 * 1024));
    let timeout = Duration::from_secs(1);
    let requests: Vec<_> = (0..48)
        .map(|_| {
            let (client, dest, payload) = (client.clone(), dest.clone(), payload.clone());
            tokio::spawn(async move {
                // Each request's own clock: encoding 512 KiB takes a while in a debug build,
                // and the requests encode one after the other.
                let started = Instant::now();
                let outcome = client.request_to(&dest, "svc", payload, timeout).await;
                (outcome, started.elapsed())
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(5), upgraded_rx)
        .await
        .expect("the client connects")
        .unwrap();
    for request in requests {
        let (outcome, took) = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("a request outlived its timeout by seconds")
            .unwrap();
        assert_eq!(outcome, Err(RpcError::Timeout));
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(300),
            "a request timed out after {took:?}, expected just over {timeout:?}"
        );
    }
    worker.abort();
}
