//! The service author's API of both transports: what handlers may return ([`IntoReply`]) and
//! how it goes on the wire, code written once for both clients ([`RpcClient`]), and the
//! graceful `close` of servers and clients. No grape and no Node needed: clients call the
//! workers by address.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grenache_tokio::rpc::{http, ws, Json, RpcClient};
use grenache_tokio::{Handler, Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
const LIMIT: Duration = Duration::from_secs(5);

fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

/// Answers by the request key, each with another kind of return value.
async fn kinds(req: Request) -> Result<Json<BTreeMap<String, u64>>, RpcError> {
    match req.key.as_str() {
        "map" => Ok(Json(BTreeMap::from([("n".to_string(), 7)]))),
        "string_error" => Err("ERR_FROM_STRING".into()),
        _ => Err(RpcError::with_data("ERR_WITH_DATA", json!([1, 2]))),
    }
}

/// Asks `client` for every kind of reply of a worker at `dest`: the same code for both
/// transports, through [`RpcClient`].
async fn check_replies(client: &impl RpcClient, dest: &str) {
    let ask = |key: &'static str| client.request_to(dest, key, Value::Null, LIMIT);
    assert_eq!(ask("map").await.unwrap(), json!({"n": 7}));
    assert_eq!(
        ask("string_error").await.unwrap_err(),
        RpcError::new("ERR_FROM_STRING")
    );
    let error = ask("data").await.unwrap_err();
    assert_eq!(error.message(), "ERR_WITH_DATA");
    assert_eq!(error.data(), Some(&json!([1, 2])));
}

#[tokio::test]
async fn handlers_return_anything_reply_like_over_both_transports() {
    let infallible = ws::PeerRpcServer::builder(unused_link())
        .handler(
            |req: Request| async move { json!({"double": req.payload.as_u64().map(|n| n * 2)}) },
        )
        .build();
    let addr = infallible.listen_on(LOOPBACK).await.unwrap();
    let client = ws::PeerRpcClient::new(unused_link());
    let answer = client
        .request_to(&addr.to_string(), "k", json!(21), LIMIT)
        .await;
    assert_eq!(answer.unwrap(), json!({"double": 42}));

    let unit = http::PeerRpcServer::builder(unused_link())
        .handler(|_: Request| async {})
        .build();
    let addr = unit.listen_on(LOOPBACK).await.unwrap();
    let http_client = http::PeerRpcClient::new(unused_link());
    let answer = http_client
        .request_to(&addr.to_string(), "k", json!(1), LIMIT)
        .await;
    assert_eq!(answer.unwrap(), Value::Null, "() is null");

    // A value serde cannot write as JSON (a map with non-string keys) is an error reply, not
    // a silence the client would wait out.
    let unserializable = ws::PeerRpcServer::builder(unused_link())
        .handler(|_: Request| async { Json(BTreeMap::from([(vec![1u8], 1u8)])) })
        .build();
    let addr = unserializable.listen_on(LOOPBACK).await.unwrap();
    let error = client
        .request_to(&addr.to_string(), "k", Value::Null, LIMIT)
        .await
        .unwrap_err();
    assert!(
        error.message().starts_with("ERR_REPLY_SERIALIZE: "),
        "{error}"
    );

    let ws_worker = ws::PeerRpcServer::builder(unused_link())
        .handler(kinds)
        .build();
    let http_worker = http::PeerRpcServer::builder(unused_link())
        .handler(kinds)
        .build();
    let ws_addr = ws_worker.listen_on(LOOPBACK).await.unwrap();
    let http_addr = http_worker.listen_on(LOOPBACK).await.unwrap();
    check_replies(&client, &ws_addr.to_string()).await;
    check_replies(&http_client, &http_addr.to_string()).await;
}

/// A handler that reports its start on `started` and answers after `delay`.
fn slow(delay: Duration) -> (impl Handler, mpsc::UnboundedReceiver<()>) {
    let (started_tx, started) = mpsc::unbounded_channel();
    let handler = move |req: Request| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(delay).await;
            req.payload
        }
    };
    (handler, started)
}

/// What `close` must do on a worker, whatever the transport: the request in flight is
/// answered, `close` returns once it is (well within the grace), and the port then refuses
/// connections. `close` is called from another task than the request's.
async fn close_lets_the_request_in_flight_finish(
    client: impl RpcClient,
    addr: SocketAddr,
    mut started: mpsc::UnboundedReceiver<()>,
    close: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let dest = addr.to_string();
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request_to(&dest, "k", json!("late"), LIMIT).await }
    });
    tokio::time::timeout(LIMIT, started.recv()).await.unwrap();
    let began = Instant::now();
    tokio::time::timeout(LIMIT, close)
        .await
        .expect("close returns within the grace period");
    let took = began.elapsed();
    assert_eq!(request.await.unwrap().unwrap(), json!("late"));
    assert!(
        took >= Duration::from_millis(200),
        "close waited for the handler (took {took:?})"
    );
    assert!(took < Duration::from_secs(4), "close took {took:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a closed worker refuses new connections"
    );
}

#[tokio::test]
async fn closing_a_ws_worker_answers_the_request_in_flight_then_refuses_connections() {
    let (handler, started) = slow(Duration::from_millis(300));
    let server = std::sync::Arc::new(
        ws::PeerRpcServer::builder(unused_link())
            .handler(handler)
            .build(),
    );
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    let closing = std::sync::Arc::clone(&server);
    let close = async move { closing.close(Duration::from_secs(5)).await };
    close_lets_the_request_in_flight_finish(
        ws::PeerRpcClient::new(unused_link()),
        addr,
        started,
        close,
    )
    .await;
    assert_eq!(server.local_addr(), None);
}

#[tokio::test]
async fn closing_an_http_worker_answers_the_request_in_flight_then_refuses_connections() {
    let (handler, started) = slow(Duration::from_millis(300));
    let server = std::sync::Arc::new(
        http::PeerRpcServer::builder(unused_link())
            .handler(handler)
            .build(),
    );
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    let closing = std::sync::Arc::clone(&server);
    let close = async move { closing.close(Duration::from_secs(5)).await };
    close_lets_the_request_in_flight_finish(
        http::PeerRpcClient::new(unused_link()),
        addr,
        started,
        close,
    )
    .await;
}

#[tokio::test]
async fn close_gives_up_on_handlers_past_the_grace_period() {
    let (handler, mut started) = slow(Duration::from_secs(60));
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    let client = ws::PeerRpcClient::new(unused_link());
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request_to(&addr.to_string(), "k", json!(1), LIMIT)
                .await
        }
    });
    tokio::time::timeout(LIMIT, started.recv()).await.unwrap();
    let began = Instant::now();
    server.close(Duration::from_millis(300)).await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "close took {took:?} for a 300 ms grace"
    );
    let outcome = tokio::time::timeout(LIMIT, request).await.unwrap().unwrap();
    assert_eq!(outcome.unwrap_err(), RpcError::TransportClose);
}

#[tokio::test]
async fn a_closed_worker_listens_again() {
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(|req: Request| async move { req.payload })
        .build();
    server.listen_on(LOOPBACK).await.unwrap();
    server.close(Duration::from_secs(1)).await;
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    let client = ws::PeerRpcClient::new(unused_link());
    let answer = client
        .request_to(&addr.to_string(), "k", json!(3), LIMIT)
        .await;
    assert_eq!(
        answer.unwrap(),
        json!(3),
        "the new connection is served, not drained"
    );
}

/// What `close` must do on a client, whatever the transport: the request in flight is
/// answered, later requests fail at once with `ERR_TRANSPORT_CLOSE`.
async fn closing_a_client(
    client: impl RpcClient,
    addr: SocketAddr,
    mut started: mpsc::UnboundedReceiver<()>,
) {
    let dest = addr.to_string();
    let request = tokio::spawn({
        let (client, dest) = (client.clone(), dest.clone());
        async move {
            client
                .request_to(&dest, "k", json!("in flight"), LIMIT)
                .await
        }
    });
    tokio::time::timeout(LIMIT, started.recv()).await.unwrap();
    tokio::time::timeout(LIMIT, client.close(Duration::from_secs(5)))
        .await
        .expect("close returns within the grace period");
    // Let the request's task see its answer if it has one: `close` returned after it.
    tokio::task::yield_now().await;
    assert!(
        request.is_finished(),
        "close returned before the request in flight was answered"
    );
    assert_eq!(request.await.unwrap().unwrap(), json!("in flight"));
    let later = client.request_to(&dest, "k", json!(1), LIMIT).await;
    assert_eq!(later.unwrap_err(), RpcError::TransportClose);
}

#[tokio::test]
async fn closing_clients_finishes_their_requests_and_refuses_new_ones() {
    let (handler, started) = slow(Duration::from_millis(200));
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    closing_a_client(ws::PeerRpcClient::new(unused_link()), addr, started).await;

    let (handler, started) = slow(Duration::from_millis(200));
    let server = http::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    closing_a_client(http::PeerRpcClient::new(unused_link()), addr, started).await;
}

#[tokio::test]
async fn a_closing_ws_client_fails_its_requests_past_the_grace_period() {
    let (handler, mut started) = slow(Duration::from_secs(60));
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(handler)
        .build();
    let addr = server.listen_on(LOOPBACK).await.unwrap();
    let client = ws::PeerRpcClient::new(unused_link());
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .request_to(&addr.to_string(), "k", json!(1), Duration::from_secs(30))
                .await
        }
    });
    tokio::time::timeout(LIMIT, started.recv()).await.unwrap();
    let began = Instant::now();
    tokio::time::timeout(LIMIT, client.close(Duration::from_millis(200)))
        .await
        .expect("close returns soon after the grace period");
    assert!(began.elapsed() >= Duration::from_millis(200));
    let outcome = tokio::time::timeout(LIMIT, request).await.unwrap().unwrap();
    assert_eq!(outcome.unwrap_err(), RpcError::TransportClose);
}
