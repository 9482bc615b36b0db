//! The grape's operator endpoints end to end: `/metrics` read by a Prometheus text parser after
//! known traffic, `/health` going from 503 to 200, and the status page in a real browser
//! (Debian's `chromium` and `chromium-driver`, installed by ci/test.sh; the test fails when
//! they are missing, it never passes without them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod local_grape;
use local_grape::grape;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use grenache_tokio::grape::Grape;
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request with `Connection: close`: (status, body).
async fn http(grape: &Grape, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, grape.api_addr().port()));
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn post(grape: &Grape, path: &str, data: serde_json::Value) -> (u16, String) {
    let body = serde_json::json!({ "data": data, "rid": "test" }).to_string();
    http(grape, "POST", path, &body).await
}

/// Polls `/health` until it answers 200 (panics after `limit`).
async fn wait_healthy(grape: &Grape, limit: Duration) {
    let start = Instant::now();
    loop {
        let (status, body) = http(grape, "GET", "/health", "").await;
        if status == 200 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not healthy in {limit:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition text")
}

/// The value of the sample `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample: &Sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("+Inf bucket"),
        Value::Summary(_) => panic!("{metric} is a summary"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    let a = grape(0, None).await;
    let b = grape(0, Some(a.dht_port())).await;
    wait_healthy(&b, Duration::from_secs(10)).await;
    // m announces through B land in A's store (A is B's only contact); k lookups through A.
    let (m, k) = (3, 5);
    for i in 0..m {
        let (status, body) = post(
            &b,
            "/announce",
            serde_json::json!([format!("svc:m{i}"), 40_000 + i]),
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "1"), "announce {i}");
    }
    for _ in 0..k {
        let (status, body) = post(&a, "/lookup", serde_json::json!("svc:m0")).await;
        assert_eq!(status, 200);
        assert!(body.contains("127.0.0.1:40000"), "{body}");
    }
    // One refused request: a lookup without a name.
    post(&a, "/lookup", serde_json::json!("")).await;

    let (status, text) = http(&a, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let s = scrape(&text);
    let lookups_ok = [("endpoint", "lookup"), ("outcome", "ok")];
    assert_eq!(
        value(&s, "grenache_grape_api_requests_total", &lookups_ok),
        k as f64
    );
    let lookups_bad = [("endpoint", "lookup"), ("outcome", "invalid")];
    assert_eq!(
        value(&s, "grenache_grape_api_requests_total", &lookups_bad),
        1.0
    );
    assert_eq!(
        value(&s, "grenache_grape_lookup_duration_seconds", &[]),
        k as f64
    );
    assert_eq!(value(&s, "grenache_grape_stored_names", &[]), m as f64);
    assert_eq!(value(&s, "grenache_grape_stored_peers", &[]), m as f64);
    let announces = [("method", "announce_peer")];
    assert_eq!(
        value(&s, "grenache_grape_krpc_queries_received_total", &announces),
        m as f64
    );
    assert_eq!(
        value(&s, "grenache_grape_routing_contacts", &[("state", "live")]),
        1.0
    );
    assert!(value(&s, "grenache_grape_dht_received_bytes_total", &[]) > 0.0);
    assert_eq!(value(&s, "grenache_grape_bootstrapped", &[]), 1.0);
    // Each lookup of A traversed the DHT (nothing reused across these sequential requests
    // beyond the reuse window): at least one traversal with at least one query.
    assert!(value(&s, "grenache_grape_traversal_duration_seconds", &[]) >= 1.0);

    let (status, text) = http(&b, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let s = scrape(&text);
    let announced = [("endpoint", "announce"), ("outcome", "ok")];
    assert_eq!(
        value(&s, "grenache_grape_api_requests_total", &announced),
        m as f64
    );
    assert_eq!(
        value(&s, "grenache_grape_krpc_queries_sent_total", &announces),
        m as f64
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_grape_has_contacts() {
    // A port nobody listens on yet: B's bootstrap finds nobody.
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let b = grape(0, Some(port)).await;
    let (status, body) = http(&b, "GET", "/health", "").await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["bootstrapped"], false);
    assert_eq!(health["contacts"], 0);
    // Still 503 once the bootstrap gave up on the silent port.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(http(&b, "GET", "/health", "").await.0, 503);
    // A grape appears there and contacts B: B verifies it and becomes ready.
    let a = grape(port, Some(b.dht_port())).await;
    wait_healthy(&b, Duration::from_secs(10)).await;
    let (status, body) = http(&b, "GET", "/health", "").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["bootstrapped"], true);
    assert_eq!(health["contacts"], 1);
    assert!(health["uptime_seconds"].as_u64().is_some_and(|s| s >= 3));
    // A POST of the same path stays Node's answer.
    assert_eq!(
        post(&b, "/health", serde_json::json!(null)).await,
        (200, "\"ERR_REQ_NOTFOUND\"".to_owned())
    );
    a.stop().await;
    b.stop().await;
}

/// A free TCP port for chromedriver.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Kills chromedriver (and with it the browser) when the test ends, passed or not.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `check` holds for the page's text of `selector` (panics after 15 s).
async fn wait_for_text(
    client: &fantoccini::Client,
    selector: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) {
    let start = Instant::now();
    loop {
        let text = match client.find(fantoccini::Locator::Css(selector)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if check(&text) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: {selector} shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_names_peers_and_contacts_in_a_browser() {
    let driver_port = free_tcp_port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={driver_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver must be installed (Debian: apt-get install chromium chromium-driver; ci/test.sh does it)");
    let _driver = Driver(child);

    let a = grape(0, None).await;
    let b = grape(0, Some(a.dht_port())).await;
    wait_healthy(&b, Duration::from_secs(10)).await;
    let (status, body) = post(
        &b,
        "/announce",
        serde_json::json!(["svc:status-page", 41_234]),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "1"));

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            // No background traffic: the machine's network may be closed, and Chromium's
            // lookups of its own services would then fail (and slow every start).
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,800", "--no-first-run", "--disable-quic",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync"]
        }),
    );
    let url = format!("http://127.0.0.1:{driver_port}");
    let start = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match fantoccini::ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => break client,
            Err(err) if start.elapsed() < Duration::from_secs(20) => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot start chromium through chromedriver: {err}"),
        }
    };

    // The OTHER grape: A stores the name B announced.
    client.goto(&a.url()).await.expect("open the status page");
    wait_for_text(&client, "#names", "the announced name", |t| {
        t.contains("svc:status-page") && t.contains("127.0.0.1:41234")
    })
    .await;
    wait_for_text(&client, "#contacts", "one contact", |t| t == "1").await;
    wait_for_text(&client, "#live", "one live contact", |t| t == "1").await;
    let dots = client
        .find_all(fantoccini::Locator::Css("#buckets .dot.live"))
        .await
        .expect("bucket dots");
    assert_eq!(dots.len(), 1);
    wait_for_text(&client, "#summary", "the bootstrap state", |t| {
        t.contains("bootstrapped") && !t.contains("not bootstrapped")
    })
    .await;
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    // The picture in docs/OPERATIONS.md is refreshed on request only, so that running the
    // tests leaves the working tree as it was: UPDATE_SCREENSHOT=1 cargo test --test status_page
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operations/status-page.png");
        std::fs::create_dir_all(path.parent().expect("docs/operations")).expect("mkdir");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    let (status, body) = post(
        &b,
        "/unannounce",
        serde_json::json!(["svc:status-page", 41_234]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for_text(&client, "#names-count", "no names after /unannounce", |t| {
        t == "0"
    })
    .await;
    wait_for_text(&client, "#names", "the name gone", |t| {
        !t.contains("svc:status-page")
    })
    .await;

    client.close().await.expect("close the browser");
    a.stop().await;
    b.stop().await;
}
