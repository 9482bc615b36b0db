//! The RPC metrics of grenache-tokio (rpc/metrics.rs) after known traffic, read the way
//! Prometheus reads them: scraped from the `/metrics` listener and parsed by a Prometheus text
//! parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_grape;
use local_grape::grape;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use grenache_tokio::rpc::metrics::{RpcMetrics, METRICS_MAX_CONNECTIONS, OTHER_SERVICE};
use grenache_tokio::rpc::{ws, RpcClient};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "metrics_test_service";
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /metrics` over a plain TCP connection: the body, after checking status and type.
async fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).unwrap()
}

/// The value of the counter `name` for `service`.
fn counter(scrape: &Scrape, name: &str, service: &str) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("service") == Some(service))
        .unwrap_or_else(|| panic!("no {name}{{service={service:?}}}"));
    match sample.value {
        Value::Counter(v) => v,
        ref other => panic!("{name} is not a counter: {other:?}"),
    }
}

/// The cumulative buckets of the histogram `name` for `service`.
fn buckets(scrape: &Scrape, name: &str, service: &str) -> Vec<(f64, f64)> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("service") == Some(service))
        .unwrap_or_else(|| panic!("no {name}{{service={service:?}}}"));
    match &sample.value {
        Value::Histogram(counts) => counts.iter().map(|c| (c.less_than, c.count)).collect(),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_client_metrics_count_known_traffic() {
    let grape1 = grape(0, None).await;
    let grape2 = grape(0, Some(grape1.dht_port())).await;
    let metrics = RpcMetrics::new();

    let worker = ws::PeerRpcServer::builder(Link::new(LinkConfig::new(grape1.url())).unwrap())
        .handler(metrics.handler(&[SERVICE], |req: Request| async move {
            match req.payload.as_str() {
                Some("fail") => Err(RpcError::new("ERR_ASKED_TO_FAIL")),
                Some("slow") => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(json!("slow"))
                }
                _ => Ok(json!("ok")),
            }
        }))
        .build();
    let worker_addr = worker
        .listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    worker.start_announcing(SERVICE);

    let mut client_config = LinkConfig::new(grape2.url());
    client_config.lookup_cache_max_age = Duration::ZERO;
    let client = metrics.client(
        &[SERVICE],
        ws::PeerRpcClient::new(Link::new(client_config).unwrap()),
    );
    // The announce travels through the DHT: wait until the client finds the worker, then
    // start counting from the metrics of that moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client.request(SERVICE, json!("ok"), TIMEOUT).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "worker never found");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listener = metrics
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let before = scrape(listener.local_addr()).await;
    let client_errors_before = counter(&before, "grenache_rpc_client_errors_total", SERVICE);
    let client_requests_before = counter(&before, "grenache_rpc_client_requests_total", SERVICE);
    assert_eq!(
        counter(&before, "grenache_rpc_server_errors_total", SERVICE),
        0.0
    );
    let served_before = counter(&before, "grenache_rpc_server_requests_total", SERVICE);
    assert!(served_before >= 1.0);

    for payload in ["ok", "ok", "fail", "slow", "fail"] {
        let _ = client.request(SERVICE, json!(payload), TIMEOUT).await;
    }
    // A key the worker was not wrapped for: counted under OTHER_SERVICE, not a new label.
    let unknown = client
        .request_to(
            &worker_addr.to_string(),
            "made_up_key",
            json!("ok"),
            TIMEOUT,
        )
        .await;
    assert_eq!(unknown.unwrap(), json!("ok"));

    let after = scrape(listener.local_addr()).await;
    let server = |name: &str, service: &str| counter(&after, name, service);
    assert_eq!(
        server("grenache_rpc_server_requests_total", SERVICE),
        served_before + 5.0
    );
    assert_eq!(server("grenache_rpc_server_errors_total", SERVICE), 2.0);
    assert_eq!(
        server("grenache_rpc_server_requests_total", OTHER_SERVICE),
        1.0
    );
    assert_eq!(
        server("grenache_rpc_client_requests_total", SERVICE),
        client_requests_before + 5.0
    );
    assert_eq!(
        server("grenache_rpc_client_errors_total", SERVICE),
        client_errors_before + 2.0
    );
    assert_eq!(
        server("grenache_rpc_client_requests_total", OTHER_SERVICE),
        1.0
    );
    assert!(
        !after
            .samples
            .iter()
            .any(|s| s.labels.get("service") == Some("made_up_key")),
        "a key not wrapped for must not become a label"
    );

    // The handler's histogram: every request in the +Inf bucket, the slow one (300 ms) above
    // the 250 ms bound, the others below it.
    let handled = buckets(
        &after,
        "grenache_rpc_server_request_duration_seconds",
        SERVICE,
    );
    let at = |bound: f64| {
        handled
            .iter()
            .find(|(b, _)| *b == bound)
            .map(|(_, n)| *n)
            .unwrap()
    };
    assert_eq!(at(f64::INFINITY), served_before + 5.0);
    assert_eq!(at(0.25), served_before + 4.0);
    assert_eq!(at(0.5), served_before + 5.0);

    client.close(Duration::from_secs(1)).await;
    worker.close(Duration::from_secs(1)).await;
    grape2.stop().await;
    grape1.stop().await;
}

#[tokio::test]
async fn the_listener_answers_only_get_metrics() {
    let metrics = RpcMetrics::new();
    let listener = metrics
        .serve(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    for (request, status) in [
        ("GET /other HTTP/1.1", "404"),
        ("POST /metrics HTTP/1.1", "405"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(listener.local_addr())
            .await
            .unwrap();
        let head =
            format!("{request}\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{request}: {response}"
        );
    }
}

#[tokio::test]
async fn the_listener_serves_a_bounded_number_of_connections() {
    let metrics = RpcMetrics::new();
    let listener = metrics
        .serve(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .await
        .unwrap();
    let port = listener.local_addr().port();
    // Another host fills every slot with connections that send nothing.
    let idle: Vec<_> = idle_connections(METRICS_MAX_CONNECTIONS, port).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.2", port))
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TIMEOUT, extra.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection over the cap is closed at once: {read:?}"
    );
    // Their slots come back when they go.
    drop(idle);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut stream = tokio::net::TcpStream::connect(listener.local_addr())
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` connections to `port` from 127.0.0.2, kept open.
async fn idle_connections(n: usize, port: u16) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(
            tokio::net::TcpStream::connect(("127.0.0.2", port))
                .await
                .unwrap(),
        );
    }
    streams
}

/// A `Write` into a shared buffer, for a subscriber whose output the test reads.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_client_and_the_worker_spans_carry_the_same_rid() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    // The subscriber is this thread's only: the worker's serving loops, on threads of their own,
    // log through it because they take their starter's (adapters/tokio/src/loops.rs).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let metrics = RpcMetrics::new();
            // No lookup happens (request_to): the Link's grape is never asked.
            let link = Link::new(LinkConfig::new("http://127.0.0.1:1")).unwrap();
            let worker = ws::PeerRpcServer::builder(link.clone())
                .handler(metrics.handler(&[SERVICE], |_req: Request| async { json!(1) }))
                .build();
            let addr = worker
                .listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .await
                .unwrap();
            let client = metrics.client(&[SERVICE], ws::PeerRpcClient::new(link));
            let answer = client
                .request_to(&addr.to_string(), SERVICE, json!(null), TIMEOUT)
                .await;
            assert_eq!(answer.unwrap(), json!(1));
            client.close(Duration::from_secs(1)).await;
            worker.close(Duration::from_secs(1)).await;
        });
    });
    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let closed_span = |name: &str| -> serde_json::Value {
        output
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["span"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span in:\n{output}"))
    };
    let (client, worker) = (
        closed_span("rpc_client_request"),
        closed_span("rpc_request"),
    );
    let rid = client["span"]["rid"].as_str().unwrap();
    assert_eq!(rid.len(), 36, "a UUID: {rid}");
    assert_eq!(worker["span"]["rid"], rid, "{output}");
    assert_eq!(worker["span"]["service"], SERVICE);
    assert_eq!(client["span"]["service"], SERVICE);
}
