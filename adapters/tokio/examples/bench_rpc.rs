//! The RPC benchmark of issue #4: echo of a 100-byte payload with 64 requests in flight.
//! Driven by `ci/bench-rpc.sh`, which starts the grapes and the Node side; results in
//! docs/BENCHMARKS.md ("RPC"). Every mode prints one JSON line.
//!
//! ```text
//! bench_rpc worker      <ws|http> <grape url> <name>          Rust echo worker (announces)
//! bench_rpc client      <ws|http> <grape url> <name> <count>  Rust Grenache client
//! bench_rpc bare-server <ws|http> <port>                      echo without Grenache framing
//! bench_rpc bare-client <ws|http> <ip:port> <count>           client of bare-server
//! ```
//!
//! Every mode runs on a current-thread runtime, as the worker's serving loops are (so the bare
//! echo and the Grenache pair are served and driven alike): a process with 64 requests in
//! flight on 2 cores loses more to a multi-thread runtime's work stealing and cross-thread
//! wake-ups than it gains (docs/BENCHMARKS.md, "Serving loops"). `BENCH_RUNTIME=multi_thread`
//! runs a mode on tokio's default multi-thread runtime instead. `WORKER_THREADS=N` sets the
//! worker's serving loops (`ServerConfig::threads`; its default otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use grenache_tokio::rpc::{http, ws, ServerConfig};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Requests in flight, as issue #4 asks.
const IN_FLIGHT: usize = 64;

/// A JSON string of exactly 100 bytes (98 characters and the two quotes).
fn payload() -> Value {
    json!("x".repeat(98))
}

async fn echo(req: Request) -> Result<Value, RpcError> {
    Ok(req.payload)
}

/// The `p`-th percentile (0..=100) of `latencies` in milliseconds, rounded to µs.
fn percentile_ms(latencies: &mut [Duration], p: usize) -> f64 {
    latencies.sort_unstable();
    let Some(last) = latencies.len().checked_sub(1) else {
        return 0.0;
    };
    let at = (last * p).div_ceil(100).min(last);
    (latencies[at].as_secs_f64() * 1e6).round() / 1e3
}

fn report(
    what: &str,
    transport: &str,
    count: usize,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
) {
    let per_s = count as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "setup": what,
            "transport": transport,
            "requests": count,
            "in_flight": IN_FLIGHT,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "req_per_s": per_s.round(),
            "p50_ms": percentile_ms(&mut latencies, 50),
            "p99_ms": percentile_ms(&mut latencies, 99),
        })
    );
}

/// Runs `count` calls of `one` with `IN_FLIGHT` at a time; the wall time and the latency of
/// every call.
async fn drive<F, Fut>(count: usize, one: F) -> (Duration, Vec<Duration>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let one = Arc::new(one);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (one, next) = (Arc::clone(&one), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let sent = Instant::now();
                    one().await;
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    (started.elapsed(), latencies)
}

fn main() {
    let mut runtime = if std::env::var("BENCH_RUNTIME").as_deref() == Ok("multi_thread") {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    runtime.enable_all().build().unwrap().block_on(run());
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i).cloned().unwrap_or_else(|| {
            panic!("missing argument {i}: see the docs of examples/bench_rpc.rs")
        })
    };
    match (arg(0).as_str(), arg(1).as_str()) {
        ("worker", transport) => worker(transport, &arg(2), &arg(3)).await,
        ("client", transport) => client(transport, &arg(2), &arg(3), arg(4).parse().unwrap()).await,
        ("bare-server", transport) => bare_server(transport, arg(2).parse().unwrap()).await,
        ("bare-client", transport) => {
            bare_client(transport, &arg(2), arg(3).parse().unwrap()).await
        }
        (mode, _) => panic!("unknown mode {mode}"),
    }
}

async fn worker(transport: &str, grape: &str, name: &str) {
    let link = Link::new(LinkConfig::new(grape)).unwrap();
    let mut config = ServerConfig::default();
    if let Ok(threads) = std::env::var("WORKER_THREADS") {
        config.threads = threads.parse().expect("WORKER_THREADS: a number");
    }
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Keep the server alive until killed.
    let _server: Box<dyn std::any::Any> = match transport {
        "ws" => {
            let server = ws::PeerRpcServer::builder(link)
                .handler(echo)
                .config(config)
                .build();
            server.listen_on(addr).await.unwrap();
            server.start_announcing(name);
            Box::new(server)
        }
        "http" => {
            let server = http::PeerRpcServer::builder(link)
                .handler(echo)
                .config(config)
                .build();
            server.listen_on(addr).await.unwrap();
            server.start_announcing(name);
            Box::new(server)
        }
        other => panic!("transport {other}"),
    };
    std::future::pending::<()>().await;
}

async fn client(transport: &str, grape: &str, name: &str, count: usize) {
    let link = Link::new(LinkConfig::new(grape)).unwrap();
    let timeout = Duration::from_secs(30);
    let (elapsed, latencies) = match transport {
        "ws" => {
            let client = ws::PeerRpcClient::new(link);
            // Warm-up: the lookup and the pooled connections.
            for _ in 0..IN_FLIGHT {
                client.request(name, payload(), timeout).await.unwrap();
            }
            let name: Arc<str> = name.into();
            drive(count, move || {
                let (client, name) = (client.clone(), name.clone());
                async move {
                    let answer = client.request(&name, payload(), timeout).await.unwrap();
                    assert_eq!(answer.as_str().map(str::len), Some(98));
                }
            })
            .await
        }
        "http" => {
            let client = http::PeerRpcClient::new(link);
            for _ in 0..IN_FLIGHT {
                client.request(name, payload(), timeout).await.unwrap();
            }
            let name: Arc<str> = name.into();
            drive(count, move || {
                let (client, name) = (client.clone(), name.clone());
                async move {
                    let answer = client.request(&name, payload(), timeout).await.unwrap();
                    assert_eq!(answer.as_str().map(str::len), Some(98));
                }
            })
            .await
        }
        other => panic!("transport {other}"),
    };
    report(
        "rust client -> worker",
        transport,
        count,
        elapsed,
        latencies,
    );
}

/// The bare echo reads like Grenache's WebSocket peers do (the same read buffer), so that the
/// comparison measures the framing, not tungstenite settings.
fn bare_ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(grenache_tokio::rpc::ws::WS_READ_BUFFER)
}

async fn bare_server(transport: &str, port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        match transport {
            "ws" => {
                tokio::spawn(async move {
                    let Ok(mut ws) =
                        tokio_tungstenite::accept_async_with_config(stream, Some(bare_ws_config()))
                            .await
                    else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
            _ => {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(body)))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn bare_client(transport: &str, dest: &str, count: usize) {
    let body = Bytes::from("x".repeat(100));
    let (elapsed, latencies) = match transport {
        "ws" => {
            // As the Grenache client: up to 3 connections to the worker, 64 messages in
            // flight over them; the echo comes back in order on each connection.
            let connections = 3;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..connections {
                let share = count / connections + usize::from(c < count % connections);
                let window = IN_FLIGHT / connections + usize::from(c < IN_FLIGHT % connections);
                let url = format!("ws://{dest}/ws");
                let text = String::from_utf8(body.to_vec()).unwrap();
                tasks.push(tokio::spawn(async move {
                    let stream =
                        TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches("/ws"))
                            .await
                            .unwrap();
                    stream.set_nodelay(true).unwrap();
                    let (ws, _) = tokio_tungstenite::client_async_with_config(
                        url.as_str(),
                        stream,
                        Some(bare_ws_config()),
                    )
                    .await
                    .unwrap();
                    let (mut sink, mut stream) = ws.split();
                    let (mut sent, mut received) = (0usize, 0usize);
                    // The echo comes back in order: the send instants of the messages out.
                    let mut sent_at = std::collections::VecDeque::new();
                    let mut latencies = Vec::with_capacity(share);
                    while sent < share.min(window) {
                        sent_at.push_back(Instant::now());
                        sink.send(Message::text(text.clone())).await.unwrap();
                        sent += 1;
                    }
                    while received < share {
                        match stream.next().await {
                            Some(Ok(Message::Text(_))) => received += 1,
                            other => panic!("{other:?}"),
                        }
                        latencies.push(sent_at.pop_front().unwrap().elapsed());
                        if sent < share {
                            sent_at.push_back(Instant::now());
                            sink.send(Message::text(text.clone())).await.unwrap();
                            sent += 1;
                        }
                    }
                    latencies
                }));
            }
            let mut latencies = Vec::with_capacity(count);
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            (started.elapsed(), latencies)
        }
        "http" => {
            // 64 keep-alive connections, one request in flight on each.
            let dest = dest.to_string();
            let started = Instant::now();
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..IN_FLIGHT {
                let (dest, body, next) = (dest.clone(), body.clone(), Arc::clone(&next));
                tasks.push(tokio::spawn(async move {
                    let stream = TcpStream::connect(dest.as_str()).await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    let mut latencies = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let sent = Instant::now();
                        let request = hyper::Request::post("/")
                            .header(hyper::header::HOST, dest.as_str())
                            .body(Full::new(body.clone()))
                            .unwrap();
                        let response = sender.send_request(request).await.unwrap();
                        let got = response.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(got.len(), 100);
                        latencies.push(sent.elapsed());
                    }
                    latencies
                }));
            }
            let mut latencies = Vec::with_capacity(count);
            for task in tasks {
                latencies.extend(task.await.unwrap());
            }
            (started.elapsed(), latencies)
        }
        other => panic!("transport {other}"),
    };
    report(
        "bare echo (no Grenache framing)",
        transport,
        count,
        elapsed,
        latencies,
    );
}
