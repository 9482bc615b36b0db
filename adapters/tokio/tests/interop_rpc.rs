//! Interop of the Rust RPC peers with the real Node packages (grenache-nodejs-ws 1.0.0,
//! grenache-nodejs-http 1.0.2, grenache-nodejs-link 1.0.2) through two real Node grapes.
//!
//! Needs `node` and `npm ci --prefix tests/interop`; fails loudly without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{node_client, spawn_node, start_grapes, wait_visible};
use grenache_tokio::rpc::{http, ws};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};

const VISIBLE: Duration = Duration::from_secs(20);

/// The Rust twin of tests/interop/worker.js.
fn rust_handler(
    tag: &'static str,
) -> impl Fn(Request) -> std::future::Ready<Result<Value, RpcError>> {
    move |req: Request| {
        let op = req.payload.get("op").and_then(Value::as_str).unwrap_or("");
        std::future::ready(match op {
            "echo" => Ok(json!({"echo": req.payload["v"], "from": tag, "key": req.key})),
            "boom" => Err(RpcError::new("boom")),
            "boom_data" => Err(RpcError::with_data("ERR_X", json!("partial"))),
            _ => match req.payload.get("number").and_then(Value::as_u64) {
                Some(n) => Ok(json!(fib(n.min(50)))),
                None => Err(RpcError::new("ERR_BAD_PAYLOAD")),
            },
        })
    }
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..n {
        (a, b) = (b, a.saturating_add(b));
    }
    b
}

/// A handler that answers everything except `{"op":"silent"}`, which never gets an answer.
async fn silent_or_echo(req: Request) -> Result<Value, RpcError> {
    if req.payload["op"] == "silent" {
        std::future::pending::<()>().await;
    }
    rust_handler("rust")(req).await
}

fn link(grape: &str) -> Link {
    Link::new(LinkConfig::new(grape)).unwrap()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(k, v)| (leak(k), v.to_string()))
        .collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

async fn assert_times_out(started: Instant, outcome: Result<Value, RpcError>, timeout: Duration) {
    let took = started.elapsed();
    assert_eq!(outcome, Err(RpcError::Timeout));
    assert_eq!(RpcError::Timeout.to_string(), "ERR_TIMEOUT");
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "ERR_TIMEOUT after {took:?}, expected just over {timeout:?}"
    );
}

// ---------------------------------------------------------------------------------------
// WebSocket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_node_client_calls_rust_worker() {
    let grapes = start_grapes().await;
    let server = ws::PeerRpcServer::builder(link(&grapes.a))
        .handler(silent_or_echo)
        .build();
    let port = server.listen(0).await.unwrap().port();
    assert!(server.start_announcing("rust_ws_worker"));
    wait_visible(&grapes.b, "rust_ws_worker", port, VISIBLE).await;

    let base = [
        ("GRAPE", grapes.b.as_str()),
        ("TRANSPORT", "ws"),
        ("NAME", "rust_ws_worker"),
    ];
    let echo = node_client(&env(&[
        &base[..],
        &[("PAYLOAD", r#"{"op":"echo","v":"hi"}"#)],
    ]
    .concat()))
    .await;
    assert_eq!(
        echo,
        json!({"err": null, "data": {"echo": "hi", "from": "rust", "key": "rust_ws_worker"}})
    );

    let boom = node_client(&env(
        &[&base[..], &[("PAYLOAD", r#"{"op":"boom"}"#)]].concat()
    ))
    .await;
    assert_eq!(
        boom,
        json!({"err": "boom", "data": null}),
        "the Node client sees Error: boom"
    );

    let partial = node_client(&env(
        &[&base[..], &[("PAYLOAD", r#"{"op":"boom_data"}"#)]].concat()
    ))
    .await;
    assert_eq!(partial, json!({"err": "ERR_X", "data": "partial"}));

    let fib10 = node_client(&env(
        &[&base[..], &[("PAYLOAD", r#"{"number":10}"#)]].concat()
    ))
    .await;
    assert_eq!(fib10, json!({"err": null, "data": 89}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rust_client_calls_node_worker() {
    let grapes = start_grapes().await;
    let port = common::free_tcp_port();
    let _worker = spawn_node(
        "worker.js",
        &env(&[
            ("GRAPE", &grapes.a),
            ("TRANSPORT", "ws"),
            ("NAME", "node_ws_worker"),
            ("PORT", &port.to_string()),
            ("TAG", "node"),
        ]),
    );
    wait_visible(&grapes.b, "node_ws_worker", port, VISIBLE).await;
    let client = ws::PeerRpcClient::new(link(&grapes.b));
    let t = Duration::from_secs(5);

    let echo = client
        .request("node_ws_worker", json!({"op": "echo", "v": [1, "two"]}), t)
        .await;
    assert_eq!(echo, Ok(json!({"echo": [1, "two"], "from": "node"})));

    let boom = client
        .request("node_ws_worker", json!({"op": "boom"}), t)
        .await
        .unwrap_err();
    assert_eq!(boom, RpcError::new("boom"));
    assert_eq!(boom.to_string(), "boom");

    let partial = client
        .request("node_ws_worker", json!({"op": "boom_data"}), t)
        .await
        .unwrap_err();
    assert_eq!(partial.message(), "ERR_X");
    assert_eq!(partial.data(), Some(&json!("partial")));

    // Many requests at once over the pooled connections, each answer to its own request.
    let calls = (0..30).map(|i| client.request("node_ws_worker", json!({"op": "echo", "v": i}), t));
    for (i, answer) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(answer.unwrap()["echo"], json!(i));
    }

    let timeout = Duration::from_millis(800);
    let started = Instant::now();
    let silent = client
        .request("node_ws_worker", json!({"op": "silent"}), timeout)
        .await;
    assert_times_out(started, silent, timeout).await;

    let missing = client
        .request("nobody_announced_this", json!(1), t)
        .await
        .unwrap_err();
    assert_eq!(missing.to_string(), "ERR_GRAPE_LOOKUP_EMPTY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rust_client_times_out_on_a_silent_rust_worker() {
    let grapes = start_grapes().await;
    let server = ws::PeerRpcServer::builder(link(&grapes.a))
        .handler(silent_or_echo)
        .build();
    let port = server.listen(0).await.unwrap().port();
    server.announce("rust_silent").await.unwrap();
    wait_visible(&grapes.b, "rust_silent", port, VISIBLE).await;
    let client = ws::PeerRpcClient::new(link(&grapes.b));
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let outcome = client
        .request("rust_silent", json!({"op": "silent"}), timeout)
        .await;
    assert_times_out(started, outcome, timeout).await;
    // The connection is still good for the next request.
    let echo = client
        .request(
            "rust_silent",
            json!({"op": "echo", "v": 1}),
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(echo.unwrap()["from"], "rust");
}

// ---------------------------------------------------------------------------------------
// HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_node_client_calls_rust_worker_with_and_without_gzip() {
    let grapes = start_grapes().await;
    let server = http::PeerRpcServer::builder(link(&grapes.a))
        .handler(silent_or_echo)
        .build();
    let port = server.listen(0).await.unwrap().port();
    assert!(server.start_announcing("rust_http_worker"));
    wait_visible(&grapes.b, "rust_http_worker", port, VISIBLE).await;

    for compress in ["0", "1"] {
        let base = [
            ("GRAPE", grapes.b.as_str()),
            ("TRANSPORT", "http"),
            ("NAME", "rust_http_worker"),
            ("COMPRESS", compress),
        ];
        let with = |payload: &'static str| env(&[&base[..], &[("PAYLOAD", payload)]].concat());
        let echo = node_client(&with(r#"{"op":"echo","v":{"deep":[1,2]}}"#)).await;
        assert_eq!(
            echo,
            json!({"err": null, "data": {"echo": {"deep": [1, 2]}, "from": "rust", "key": "rust_http_worker"}}),
            "compress={compress}"
        );
        let boom = node_client(&with(r#"{"op":"boom"}"#)).await;
        assert_eq!(
            boom,
            json!({"err": "boom", "data": null}),
            "compress={compress}"
        );
        let fib10 = node_client(&with(r#"{"number":10}"#)).await;
        assert_eq!(
            fib10,
            json!({"err": null, "data": 89}),
            "compress={compress}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rust_client_calls_node_worker_with_and_without_gzip() {
    let grapes = start_grapes().await;
    let port = common::free_tcp_port();
    let _worker = spawn_node(
        "worker.js",
        &env(&[
            ("GRAPE", &grapes.a),
            ("TRANSPORT", "http"),
            ("NAME", "node_http_worker"),
            ("PORT", &port.to_string()),
            ("TAG", "node"),
        ]),
    );
    wait_visible(&grapes.b, "node_http_worker", port, VISIBLE).await;
    let t = Duration::from_secs(5);
    for compress in [false, true] {
        let config = http::HttpClientConfig {
            compress,
            ..http::HttpClientConfig::default()
        };
        let client = http::PeerRpcClient::with_config(link(&grapes.b), config);
        let echo = client
            .request("node_http_worker", json!({"op": "echo", "v": "héllo"}), t)
            .await;
        assert_eq!(
            echo,
            Ok(json!({"echo": "héllo", "from": "node"})),
            "compress={compress}"
        );
        let boom = client
            .request("node_http_worker", json!({"op": "boom"}), t)
            .await
            .unwrap_err();
        assert_eq!(boom, RpcError::new("boom"), "compress={compress}");
        let partial = client
            .request("node_http_worker", json!({"op": "boom_data"}), t)
            .await
            .unwrap_err();
        assert_eq!(partial, RpcError::with_data("ERR_X", json!("partial")));
        let fib10 = client
            .request("node_http_worker", json!({"number": 10}), t)
            .await;
        assert_eq!(fib10, Ok(json!(89)));

        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let silent = client
            .request("node_http_worker", json!({"op": "silent"}), timeout)
            .await;
        assert_times_out(started, silent, timeout).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rust_client_and_rust_worker_through_node_grapes() {
    let grapes = start_grapes().await;
    let server = http::PeerRpcServer::builder(link(&grapes.a))
        .handler(silent_or_echo)
        .build();
    let port = server.listen(0).await.unwrap().port();
    server.announce("rust_http_pair").await.unwrap();
    wait_visible(&grapes.b, "rust_http_pair", port, VISIBLE).await;
    for compress in [false, true] {
        let config = http::HttpClientConfig {
            compress,
            ..http::HttpClientConfig::default()
        };
        let client = http::PeerRpcClient::with_config(link(&grapes.b), config);
        let t = Duration::from_secs(5);
        let echo = client
            .request("rust_http_pair", json!({"op": "echo", "v": 1}), t)
            .await;
        assert_eq!(echo.unwrap()["echo"], 1);
        let boom = client
            .request("rust_http_pair", json!({"op": "boom"}), t)
            .await;
        assert_eq!(boom, Err(RpcError::new("boom")));
        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let silent = client
            .request("rust_http_pair", json!({"op": "silent"}), timeout)
            .await;
        assert_times_out(started, silent, timeout).await;
    }
}

// ---------------------------------------------------------------------------------------
// map over mixed workers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_map_reaches_two_node_workers_and_one_rust_worker() {
    let grapes = start_grapes().await;
    let mut workers = Vec::new();
    let mut ports = Vec::new();
    for tag in ["node-1", "node-2"] {
        let port = common::free_tcp_port();
        workers.push(spawn_node(
            "worker.js",
            &env(&[
                ("GRAPE", &grapes.a),
                ("TRANSPORT", "ws"),
                ("NAME", "map_worker"),
                ("PORT", &port.to_string()),
                ("TAG", tag),
            ]),
        ));
        ports.push(port);
    }
    let server = ws::PeerRpcServer::builder(link(&grapes.a))
        .handler(rust_handler("rust"))
        .build();
    let port = server.listen(0).await.unwrap().port();
    assert!(server.start_announcing("map_worker"));
    ports.push(port);
    for port in &ports {
        wait_visible(&grapes.b, "map_worker", *port, VISIBLE).await;
    }

    let client = ws::PeerRpcClient::new(link(&grapes.b));
    let answers = client
        .map(
            "map_worker",
            json!({"op": "echo", "v": "all"}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    let mut from: Vec<String> = answers
        .into_iter()
        .map(|a| {
            let a = a.unwrap();
            assert_eq!(a["echo"], "all");
            a["from"].as_str().unwrap().to_string()
        })
        .collect();
    from.sort();
    assert_eq!(from, vec!["node-1", "node-2", "rust"]);

    // fib(10) from every worker, the tutorial's call fanned out.
    let answers = client
        .map("map_worker", json!({"number": 10}), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answers, vec![Ok(json!(89)); 3]);

    // Node's own map over the same three workers.
    let node = node_client(&env(&[
        ("GRAPE", &grapes.b),
        ("TRANSPORT", "ws"),
        ("NAME", "map_worker"),
        ("MODE", "map"),
        ("PAYLOAD", r#"{"op":"echo","v":"node map"}"#),
    ]))
    .await;
    assert_eq!(node["err"], Value::Null);
    let mut from: Vec<&str> = node["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["from"].as_str().unwrap())
        .collect();
    from.sort();
    assert_eq!(from, vec!["node-1", "node-2", "rust"]);

    let missing = client.map("nobody", json!(1), Duration::from_secs(5)).await;
    assert_eq!(
        missing,
        Err(RpcError::Lookup(grenache_tokio::LinkError::LookupEmpty))
    );
}
