//! The grape HTTP API against hostile hosts on the network (issue 12): attackers send from
//! 127.0.0.2 and up (loopback too), the honest client from 127.0.0.1. One host cannot take the
//! API, slow heads and bodies are cut off within the documented bounds, a client cannot
//! unannounce what another announced, a lookup whose client left is cancelled in the DHT, and
//! the allow-list keeps other networks out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grenache_tokio::grape::{
    bind_api, serve_api, ApiConfig, BootstrapNode, DhtError, GetQuery, GotItem, Grape, GrapeConfig,
    GrapeDht, PutItem,
};
use grenache_tokio::limits::AllowList;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

const HONEST: &str = "127.0.0.1";

/// The tests measure how fast the honest client is served: one at a time, so that one test's
/// flood does not slow down another's honest client on a small machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A DHT that answers at once and records the unannounces it was asked for.
#[derive(Default)]
struct FakeDht {
    unannounced: Mutex<Vec<(Vec<u8>, u16)>>,
}

impl GrapeDht for FakeDht {
    async fn lookup(&self, _: Vec<u8>) -> Vec<SocketAddrV4> {
        vec!["127.0.0.1:1337".parse().unwrap()]
    }
    async fn announce(&self, _: Vec<u8>, _: u16) -> Result<usize, DhtError> {
        Ok(1)
    }
    async fn unannounce(&self, name: Vec<u8>, port: u16) -> Result<usize, DhtError> {
        self.unannounced.lock().unwrap().push((name, port));
        Ok(2)
    }
    async fn put(&self, _: PutItem) -> Result<[u8; 20], DhtError> {
        Err(DhtError::NoNodes)
    }
    async fn get(&self, _: GetQuery) -> Result<Option<GotItem>, DhtError> {
        Ok(None)
    }
    fn dht_port(&self) -> u16 {
        20001
    }
}

/// `serve_api` over a fake DHT, stopped when dropped.
struct Server {
    addr: SocketAddr,
    dht: Arc<FakeDht>,
    _stop: oneshot::Sender<()>,
}

async fn serve_on(listener: TcpListener, config: ApiConfig) -> Server {
    let addr = listener.local_addr().unwrap();
    let dht = Arc::new(FakeDht::default());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_api(listener, Arc::clone(&dht), config, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        dht,
        _stop: stop,
    }
}

async fn serve(config: ApiConfig) -> Server {
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await
}

/// A connection to `to` from the local address `from` (127.0.0.2 … are loopback too).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let from: IpAddr = from.parse().unwrap();
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one answer: (status, body); `None` if the connection ends first.
async fn answer(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let status = head.get(9..12)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]);
                return Some((status, body.into_owned()));
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One request from `from` on a fresh connection, answered within `within`.
async fn request(
    from: &str,
    to: SocketAddr,
    path: &str,
    body: &str,
    within: Duration,
) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = connect_from(from, to).await.ok()?;
        stream.write_all(&post(path, body)).await.ok()?;
        answer(&mut stream).await
    };
    tokio::time::timeout(within, exchange).await.ok().flatten()
}

/// Whether the server closes `stream` within `within` (EOF or reset; any answer bytes
/// before that are returned in the `Ok`).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `count` connections from `from` that stay silent and reconnect half a second after the
/// server closes them, until `stop` is set (at most 200 rounds each).
fn idle_flood(
    from: &'static str,
    count: usize,
    to: SocketAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                for _ in 0..200 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if let Ok(mut stream) = connect_from(from, to).await {
                        let mut byte = [0u8; 1];
                        let wait = stream.read(&mut byte);
                        let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect()
}

/// Honest lookups from 127.0.0.1 for `period`, each on a new connection: every one is
/// answered within 3 s (a SYN the kernel dropped from a full listen queue is sent again after
/// 1 s: the flood's doing, not the grape's), and the median within 300 ms.
async fn honest_lookups_stay_prompt(to: SocketAddr, period: Duration) {
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < period {
        let asked = Instant::now();
        let body = r#"{"data":"svc"}"#;
        let got = request(HONEST, to, "/lookup", body, Duration::from_secs(3)).await;
        assert_eq!(
            got,
            Some((200, r#"["127.0.0.1:1337"]"#.to_owned())),
            "honest lookup {} under the flood, after {:?}",
            latencies.len(),
            asked.elapsed()
        );
        latencies.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(latencies.len() >= 10, "{latencies:?}");
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(median < Duration::from_millis(300), "{latencies:?}");
}

/// (a) 2000 idle, reconnecting connections from one host: it gets its share (256 connections)
/// and no more, and the honest client's lookups keep being answered at once, also across the
/// attacker's idle timeouts (5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_take_the_api() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = serve(ApiConfig::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = idle_flood("127.0.0.2", 2000, server.addr, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    honest_lookups_stay_prompt(server.addr, Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
}

/// The per-client share, exactly: one connection over it is closed unanswered while another
/// host is still served; also when the client's connections are served on different loops.
#[tokio::test]
async fn a_connection_over_the_per_ip_share_is_closed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = serve(ApiConfig {
        max_connections_per_ip: 3,
        // Two loops whatever the machine's core count: the 3 connections land on both.
        threads: 2,
        ..ApiConfig::default()
    })
    .await;
    let within = Duration::from_secs(5);
    let lookup = post("/lookup", r#"{"data":"svc"}"#);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.2", server.addr).await.unwrap();
        stream.write_all(&lookup).await.unwrap();
        let got = tokio::time::timeout(within, answer(&mut stream)).await;
        assert_eq!(got.ok().flatten().map(|(s, _)| s), Some(200));
        held.push(stream);
    }
    let mut over = connect_from("127.0.0.2", server.addr).await.unwrap();
    let _ = over.write_all(&lookup).await;
    assert_eq!(closed_within(&mut over, within).await, Ok(Vec::new()));
    let got = request(
        "127.0.0.3",
        server.addr,
        "/lookup",
        r#"{"data":"svc"}"#,
        within,
    )
    .await;
    assert_eq!(got.map(|(s, _)| s), Some(200));
    // A slot of its own given back, the host is served again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = request(
        "127.0.0.2",
        server.addr,
        "/lookup",
        r#"{"data":"svc"}"#,
        within,
    )
    .await;
    assert_eq!(got.map(|(s, _)| s), Some(200));
}

/// (a') Five hosts whose idle connections together take every slot (4 × 256 = 1024): a
/// newcomer with fewer connections displaces an idle one of the heaviest host, so the honest
/// client is still served at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_together_cannot_take_the_api() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = serve(ApiConfig::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for from in [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ] {
        attackers.extend(idle_flood(from, 300, server.addr, &stop));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    honest_lookups_stay_prompt(server.addr, Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
}

/// (b) Slowloris heads (a byte a second, never complete) and bodies trickled at a byte a second
/// from ten hosts: heads are dropped within the head timeout (5 s), bodies answered `408` and
/// closed within the body grace (5 s) plus what their bytes buy at 1 KiB/s; honest requests are
/// answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_bodies_are_cut_off_in_time() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = serve(ApiConfig::default()).await;
    let closed_in_time = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for host in 2..12 {
        for i in 0..10 {
            let from = format!("127.0.0.{host}");
            let to = server.addr;
            let closed_in_time = Arc::clone(&closed_in_time);
            let body = i % 2 == 0;
            slow.push(tokio::spawn(async move {
                let mut stream = connect_from(&from, to).await.unwrap();
                let opened = Instant::now();
                if body {
                    let head = "POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
                    stream.write_all(head.as_bytes()).await.unwrap();
                }
                // One byte a second, at most 40; the server must close well before.
                let (mut reader, mut writer) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    for _ in 0..40 {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let byte: &[u8] = if body { b" " } else { b"X" };
                        if writer.write_all(byte).await.is_err() {
                            return;
                        }
                    }
                });
                let mut seen = Vec::new();
                let mut chunk = [0u8; 512];
                let closed = loop {
                    let read = reader.read(&mut chunk);
                    match tokio::time::timeout(Duration::from_secs(12), read).await {
                        Err(_) => break false,
                        Ok(Ok(0)) | Ok(Err(_)) => break true,
                        Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
                    }
                };
                trickle.abort();
                let took = opened.elapsed();
                // Bodies: 5 s grace + a few bytes' worth; heads: the 5 s head timeout. Slack
                // for a loaded machine.
                let bound = Duration::from_secs(8);
                assert!(closed && took < bound, "{from} body={body}: {took:?}");
                if body {
                    assert!(
                        seen.starts_with(b"HTTP/1.1 408 "),
                        "{:?}",
                        String::from_utf8_lossy(&seen)
                    );
                } else {
                    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
                }
                closed_in_time.fetch_add(1, Ordering::Relaxed);
            }));
        }
    }
    // Meanwhile the honest client is served.
    for n in 0..10 {
        let got = request(
            HONEST,
            server.addr,
            "/lookup",
            r#"{"data":"svc"}"#,
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(
            got.map(|(status, _)| status),
            Some(200),
            "honest lookup {n}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for task in slow {
        task.await.unwrap();
    }
    assert_eq!(closed_in_time.load(Ordering::Relaxed), 100);
}

/// (c) A client on another host cannot unannounce what 127.0.0.1 announced; the announcer can.
#[tokio::test]
async fn only_the_announcing_host_may_unannounce() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = serve(ApiConfig::default()).await;
    let within = Duration::from_secs(5);
    let svc = r#"{"data":["svc",1337]}"#;
    let got = request(HONEST, server.addr, "/announce", svc, within).await;
    assert_eq!(got, Some((200, "1".to_owned())));
    for attacker in ["127.0.0.2", "127.0.0.3"] {
        let got = request(attacker, server.addr, "/unannounce", svc, within).await;
        assert_eq!(
            got,
            Some((200, r#""ERR_GRAPE_UNANNOUNCE_FORBIDDEN""#.to_owned())),
            "{attacker}"
        );
    }
    // Nor what nobody announced through this grape.
    let other = r#"{"data":["other",1337]}"#;
    let got = request(HONEST, server.addr, "/unannounce", other, within).await;
    assert_eq!(
        got,
        Some((200, r#""ERR_GRAPE_UNANNOUNCE_FORBIDDEN""#.to_owned()))
    );
    assert!(server.dht.unannounced.lock().unwrap().is_empty());
    let got = request(HONEST, server.addr, "/unannounce", svc, within).await;
    assert_eq!(got, Some((200, "2".to_owned())));
    assert_eq!(
        *server.dht.unannounced.lock().unwrap(),
        vec![(b"svc".to_vec(), 1337)]
    );
}

/// A UDP socket that never answers and counts the `get_peers` queries it receives, and when
/// the one for `marker` arrived.
struct BlackHole {
    port: u16,
    get_peers: Arc<AtomicUsize>,
    marker_seen: Arc<Mutex<Option<Instant>>>,
}

fn black_hole(marker: &'static [u8]) -> BlackHole {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let get_peers = Arc::new(AtomicUsize::new(0));
    let marker_seen = Arc::new(Mutex::new(None));
    let (count, seen) = (Arc::clone(&get_peers), Arc::clone(&marker_seen));
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        // At most 5 minutes; ends earlier when the test is over (the counter's last user).
        let until = Instant::now() + Duration::from_secs(300);
        while Instant::now() < until && Arc::strong_count(&count) > 1 {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            let datagram = &buf[..n];
            if datagram.windows(9).any(|w| w == b"get_peers") {
                count.fetch_add(1, Ordering::SeqCst);
                if datagram.windows(marker.len()).any(|w| w == marker) {
                    seen.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
        }
    });
    BlackHole {
        port,
        get_peers,
        marker_seen,
    }
}

/// (d) A flood of lookups whose clients hang up: the DHT cancels the running ones and never
/// starts the queued ones, so an honest lookup starts at once instead of waiting for the
/// abandoned traversals to time out. The only node the grape knows never answers, so every
/// traversal would take the 2 s query timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_of_clients_that_left_are_cancelled() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let hole = black_hole(b"honest-lookup");
    let mut config = GrapeConfig::new(0, 0);
    config.bind = Some(HONEST.to_owned());
    config.bootstrap = vec![BootstrapNode {
        host: HONEST.to_owned(),
        port: hole.port,
    }];
    let grape = Grape::start(config).await.unwrap();
    let api = grape.api_addr();
    // The bootstrap traversal ends (its query times out) before the flood.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = hole.get_peers.load(Ordering::SeqCst);

    // 100 lookups of distinct names (more than the 64 operation slots), then the clients go.
    const FLOOD: usize = 100;
    let mut streams = Vec::new();
    for i in 0..FLOOD {
        let mut stream = connect_from("127.0.0.2", api).await.unwrap();
        let body = format!(r#"{{"data":"gone-{i}"}}"#);
        stream.write_all(&post("/lookup", &body)).await.unwrap();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = hole.get_peers.load(Ordering::SeqCst) - before;
    assert!(running > 0, "the flood's lookups did not start");
    drop(streams);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The honest lookup reaches the network at once: a slot is free.
    let asked = Instant::now();
    let honest = tokio::spawn(request(
        HONEST,
        api,
        "/lookup",
        r#"{"data":"honest-lookup"}"#,
        Duration::from_secs(10),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = loop {
        if let Some(at) = *hole.marker_seen.lock().unwrap() {
            break at;
        }
        assert!(Instant::now() < deadline, "the honest lookup never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let waited = started.saturating_duration_since(asked);
    assert!(
        waited < Duration::from_millis(1000),
        "the honest lookup waited {waited:?} for a slot"
    );
    assert_eq!(honest.await.unwrap().map(|(s, _)| s), Some(200));
    // By now every abandoned traversal would have timed out and the queued ones started;
    // none did.
    let flood = hole.get_peers.load(Ordering::SeqCst) - before - 1;
    assert!(
        flood < FLOOD * 3 / 4,
        "{flood} get_peers for {FLOOD} abandoned lookups ({running} in the first 300 ms)"
    );
    grape.stop().await;
}

/// (e) `--api-allow`: other addresses are closed at accept, the allowed ranges served, on an
/// IPv4 listener and on a dual-stack one (where IPv4 clients arrive as `::ffff:a.b.c.d`).
#[tokio::test]
async fn the_allow_list_keeps_other_hosts_out() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let allow: AllowList = "127.0.0.0/31, ::1".parse().unwrap();
    let config = ApiConfig {
        allow,
        ..ApiConfig::default()
    };
    let v4 = serve(config.clone()).await;
    let dual = serve_on(bind_api(None, 0).await.unwrap(), config).await;
    let dual_v4 = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), dual.addr.port());
    let dual_v6 = SocketAddr::new("::1".parse().unwrap(), dual.addr.port());
    let within = Duration::from_secs(5);
    let lookup = r#"{"data":"svc"}"#;
    for to in [v4.addr, dual_v4] {
        let got = request(HONEST, to, "/lookup", lookup, within).await;
        assert_eq!(got.map(|(s, _)| s), Some(200), "127.0.0.1 to {to}");
        for refused in ["127.0.0.2", "127.0.0.200"] {
            let mut stream = connect_from(refused, to).await.unwrap();
            let _ = stream.write_all(&post("/lookup", lookup)).await;
            assert_eq!(
                closed_within(&mut stream, within).await,
                Ok(Vec::new()),
                "{refused} to {to}"
            );
        }
    }
    // IPv6 where the machine has it.
    if let Ok(mut stream) = connect_from("::1", dual_v6).await {
        stream.write_all(&post("/lookup", lookup)).await.unwrap();
        let got = tokio::time::timeout(within, answer(&mut stream)).await;
        assert_eq!(got.ok().flatten().map(|(s, _)| s), Some(200), "::1");
    }
}
