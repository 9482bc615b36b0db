//! Both RPC workers under attack from another host: connection floods, idle and silent
//! connections, slow heads and bodies, unfinished WebSocket fragments, large bodies and gzip
//! bombs. The attackers send from 127.0.0.2 (loopback too), the honest client from
//! 127.0.0.1, which must keep being served. No grape and no Node needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use grenache_tokio::rpc::{http, ws, ServerConfig};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Where the attacks come from.
const ATTACKER: &str = "127.0.0.2";

fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

/// Echoes the payload, except a string, whose length is answered (big payloads, small
/// answers).
async fn echo(req: Request) -> Result<Value, RpcError> {
    match req.payload {
        Value::String(text) => Ok(json!(text.len())),
        other => Ok(json!({"echo": other})),
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn ws_worker(config: ServerConfig) -> (ws::PeerRpcServer, SocketAddr) {
    let server = ws::PeerRpcServer::builder(unused_link())
        .handler(echo)
        .config(config)
        .build();
    let addr = server.listen_on(loopback()).await.unwrap();
    (server, addr)
}

async fn http_worker(config: ServerConfig) -> (http::PeerRpcServer, SocketAddr) {
    let server = http::PeerRpcServer::builder(unused_link())
        .handler(echo)
        .config(config)
        .build();
    let addr = server.listen_on(loopback()).await.unwrap();
    (server, addr)
}

/// A TCP socket bound to the attacker's address. It resets its connection when dropped, so
/// that the floods leave no thousands of ports in TIME-WAIT behind for other tests.
fn attacker_socket() -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.set_zero_linger()?;
    socket.bind(format!("{ATTACKER}:0").parse().unwrap())?;
    Ok(socket)
}

/// A TCP connection to `addr` from the attacker's address.
async fn attacker_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    attacker_socket()?.connect(addr).await
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Reads an HTTP response head (up to the blank line); `None` if the connection closes or
/// nothing complete comes within `wait`.
async fn read_head(socket: &mut TcpStream, wait: Duration) -> Option<String> {
    let deadline = Instant::now() + wait;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match tokio::time::timeout_at(deadline, socket.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// `n` WebSocket connections upgraded from the attacker's address, which then stay silent
/// (they never read, so never answer a ping). Returns those the worker upgraded.
async fn silent_ws_flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        if let Ok(mut socket) = attacker_connect(addr).await {
            if socket.write_all(UPGRADE).await.is_ok() {
                sockets.push(socket);
            }
        }
    }
    let mut upgraded = Vec::new();
    for mut socket in sockets {
        let head = read_head(&mut socket, Duration::from_secs(2)).await;
        if head.is_some_and(|h| h.starts_with("HTTP/1.1 101")) {
            upgraded.push(socket);
        }
    }
    upgraded
}

/// One request from 127.0.0.1 over WebSocket, answered within 2 s.
async fn honest_ws_call(addr: SocketAddr) {
    let (mut client, _) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    .expect("the honest client is let in")
    .unwrap();
    client
        .send(Message::text(r#"["honest","svc",{"n":1}]"#))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), client.next())
        .await
        .expect("the honest client is answered")
        .unwrap()
        .unwrap();
    assert_eq!(answer, Message::text(r#"["honest",null,{"echo":{"n":1}}]"#));
}

/// One buffered request from 127.0.0.1 over HTTP, answered within 2 s.
async fn honest_http_call(addr: SocketAddr) {
    let client = http::PeerRpcClient::new(unused_link());
    let answer = client
        .request_to(
            &addr.to_string(),
            "svc",
            json!({"n": 1}),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(answer, Ok(json!({"echo": {"n": 1}})));
}

#[tokio::test]
async fn two_thousand_upgraded_ws_connections_from_one_host_leave_the_worker_reachable() {
    let (_server, addr) = ws_worker(ServerConfig::default()).await;
    let upgraded = silent_ws_flood(addr, 2000).await;
    assert!(
        (1..=256).contains(&upgraded.len()),
        "one host gets at most its share: {}",
        upgraded.len()
    );
    honest_ws_call(addr).await;
}

#[tokio::test]
async fn more_idle_http_connections_from_one_host_than_slots_leave_the_worker_reachable() {
    let (_server, addr) = http_worker(ServerConfig::default()).await;
    let mut idle = Vec::new();
    // More than the 1024 slots. (With 1500 or more, the accepted ones were seen closed within
    // half a second even without a per-IP cap, for a reason not investigated, which would
    // let this test pass without the cap.)
    for _ in 0..1100 {
        if let Ok(socket) = attacker_connect(addr).await {
            idle.push(socket);
        }
    }
    assert!(idle.len() > 1024, "the flood is larger than the worker");
    honest_http_call(addr).await;
}

#[tokio::test]
async fn ws_connections_that_do_not_answer_pings_are_closed_and_those_that_do_stay() {
    let idle = Duration::from_millis(300);
    let config = ServerConfig {
        idle_timeout: idle,
        ..ServerConfig::default()
    };
    let (_server, addr) = ws_worker(config).await;
    let mut silent = silent_ws_flood(addr, 20).await;
    assert_eq!(silent.len(), 20);
    // A client that only reads (its WebSocket library answers pings), never asks anything.
    let (mut live, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < 6 * idle {
        if let Ok(message) = tokio::time::timeout(idle / 4, live.next()).await {
            match message {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("the live client was dropped: {other:?}"),
            }
        }
    }
    assert!(pings >= 2, "the live client was pinged: {pings}");
    // The silent ones got a ping then a close frame, and the worker closed them.
    for socket in &mut silent {
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(1), socket.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "a silent connection is closed");
    }
    // Still usable after all that quiet.
    live.send(Message::text(r#"["late","svc",2]"#))
        .await
        .unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(2), live.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => continue,
            other => break other.unwrap().unwrap(),
        }
    };
    assert_eq!(answer, Message::text(r#"["late",null,{"echo":2}]"#));
}

/// A client WebSocket frame header with a zero mask (which leaves the payload as it is).
fn frame_header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    header.extend_from_slice(&(len as u64).to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    header
}

/// The first fragment of a binary request `["big","svc","xxx…` of `len` bytes, unfinished.
fn first_fragment(len: usize) -> Vec<u8> {
    let start = br#"["big","svc",""#;
    let mut frame = frame_header(false, 0x2, len);
    frame.extend_from_slice(start);
    frame.resize(frame.len() + len - start.len(), b'x');
    frame
}

/// What arrives within `wait`: `Some(bytes)` up to the close of the connection, `None` if
/// it stays open.
async fn read_until_closed(socket: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(wait, socket.read_to_end(&mut bytes)).await {
        Ok(_) => Some(bytes),
        Err(_) => None,
    }
}

#[tokio::test]
async fn unfinished_ws_fragments_stay_within_the_memory_budget() {
    const MIB: usize = 1 << 20;
    let config = ServerConfig {
        memory_budget: 8 * MIB,
        ..ServerConfig::default()
    };
    let (server, addr) = ws_worker(config).await;
    let mut attackers = silent_ws_flood(addr, 12).await;
    assert_eq!(attackers.len(), 12);
    // 2 MiB each once charged (1 MiB in 8 KiB steps, closing fragment included, twice for
    // the library's doubling buffer).
    let fragment = MIB - 16;
    // The worker refuses a fragment as soon as its header shows the budget cannot hold it,
    // and closes while the rest is still on its way: the kernel then resets the connection,
    // which the attacker may see while still writing. Such a connection counts as refused
    // (its close frame is lost to the reset).
    let mut reset = Vec::new();
    for socket in &mut attackers {
        let written = socket.write_all(&first_fragment(fragment)).await;
        if let Err(e) = &written {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{e}"
            );
        }
        reset.push(written.is_err());
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    for (mut socket, was_reset) in attackers.into_iter().zip(reset) {
        if was_reset {
            refused += 1;
            continue;
        }
        match read_until_closed(&mut socket, Duration::from_millis(500)).await {
            None => held.push(socket),
            Some(bytes) => {
                // A close frame with code 1009 (0x03f1).
                assert_eq!(bytes.get(..1), Some(&[0x88][..]), "{bytes:?}");
                assert_eq!(bytes.get(2..4), Some(&[0x03, 0xf1][..]), "{bytes:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (4, 8));
    assert_eq!(server.buffered_bytes(), 8 * MIB);

    // Small requests still get through; a new large one is refused.
    honest_ws_call(addr).await;
    let (mut big, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let payload = format!(r#"["r","svc","{}"]"#, "y".repeat(MIB));
    let _ = big.send(Message::text(payload)).await;
    let close = tokio::time::timeout(Duration::from_secs(2), big.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }

    // A message already being received is not affected: it completes and is answered.
    let mut first = held.remove(0);
    first.write_all(&frame_header(true, 0x0, 2)).await.unwrap();
    first.write_all(br#""]"#).await.unwrap();
    let mut answer = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), first.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let mut text = vec![0u8; usize::from(answer[1])];
    first.read_exact(&mut text).await.unwrap();
    let expected = format!(r#"["big",null,{}]"#, fragment - br#"["big","svc",""#.len());
    assert_eq!(String::from_utf8(text).unwrap(), expected);
    assert_eq!(server.buffered_bytes(), 6 * MIB);
}

/// Sends `data` a few bytes at a time every `every`, until the worker closes the connection
/// or `limit` passes; returns how long the worker let it go on.
async fn trickle(
    socket: &mut TcpStream,
    data: &[u8],
    every: Duration,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    for piece in data.chunks(4).cycle() {
        if started.elapsed() > limit || socket.write_all(piece).await.is_err() {
            break;
        }
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, socket.read(&mut byte)).await {
            break;
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn slow_http_heads_and_bodies_are_cut_off() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        min_body_rate: 10_000,
        ..ServerConfig::default()
    };
    let (_server, addr) = http_worker(config).await;
    let every = Duration::from_millis(50);
    let limit = Duration::from_secs(5);

    // A head that never ends, 80 bytes per second.
    let mut slow_head = attacker_connect(addr).await.unwrap();
    slow_head.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
    let lasted = trickle(&mut slow_head, b"x-pad: aaaaaaaaaaaa\r\n", every, limit).await;
    assert!(
        lasted < Duration::from_secs(1),
        "slow head cut after {lasted:?}"
    );

    // A body announced as 1 MB that comes at 80 bytes per second.
    let mut slow_body = attacker_connect(addr).await.unwrap();
    slow_body
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let lasted = trickle(&mut slow_body, b"xxxx", every, limit).await;
    assert!(
        lasted < Duration::from_secs(1),
        "slow body cut after {lasted:?}"
    );

    // An honest body on a slow link, faster than the rule asks, is read whole although it
    // takes longer than read_timeout.
    let frame = format!(r#"["slow","svc","{}"]"#, "y".repeat(19_980));
    let mut honest = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        frame.len()
    );
    honest.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    for piece in frame.as_bytes().chunks(2_000) {
        honest.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(started.elapsed() > Duration::from_millis(500));
    let answer = read_until_closed(&mut honest, Duration::from_secs(2))
        .await
        .expect("answered and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"["slow",null,19980]"#), "{answer}");
}

#[tokio::test]
async fn slow_ws_messages_are_cut_off() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        min_body_rate: 10_000,
        // Long, so that only the minimum-progress rule can close the connection.
        idle_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let (_server, addr) = ws_worker(config).await;
    let mut slow = silent_ws_flood(addr, 1).await.pop().unwrap();
    slow.write_all(&frame_header(true, 0x2, 1_000_000))
        .await
        .unwrap();
    let lasted = trickle(
        &mut slow,
        b"xxxx",
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        lasted < Duration::from_secs(1),
        "slow message cut after {lasted:?}"
    );
    honest_ws_call(addr).await;
}

#[tokio::test]
async fn slow_ws_upgrades_are_cut_off() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let (_server, addr) = ws_worker(config).await;
    let mut slow = attacker_connect(addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
    let lasted = trickle(
        &mut slow,
        b"x-pad: aaaaaaaaaaaa\r\n",
        Duration::from_millis(50),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        lasted < Duration::from_secs(1),
        "slow upgrade cut after {lasted:?}"
    );
    honest_ws_call(addr).await;
}

/// A raw `POST /` from the attacker's address with this body and extra headers, its head
/// and first `send` bytes of body written; the socket is returned open.
async fn attacker_post(addr: SocketAddr, headers: &str, body: &[u8], send: usize) -> TcpStream {
    let mut socket = attacker_connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body[..send]).await.unwrap();
    socket
}

#[tokio::test]
async fn large_http_bodies_stay_within_the_memory_budget() {
    const MIB: usize = 1 << 20;
    let config = ServerConfig {
        memory_budget: 4 * MIB,
        ..ServerConfig::default()
    };
    let (server, addr) = http_worker(config).await;
    let body = vec![b'x'; 2 * MIB];
    let mut attackers = Vec::new();
    for _ in 0..12 {
        attackers.push(attacker_post(addr, "", &body, MIB / 2).await);
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    for mut socket in attackers {
        match read_until_closed(&mut socket, Duration::from_millis(500)).await {
            None => held.push(socket),
            Some(answer) => {
                let answer = String::from_utf8_lossy(&answer).into_owned();
                assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
                assert!(answer.ends_with("ERR_MEMORY_BUDGET"), "{answer}");
                refused += 1;
            }
        }
        assert!(server.buffered_bytes() <= 4 * MIB);
    }
    assert!(
        !held.is_empty() && refused >= 1,
        "held {}, refused {refused}",
        held.len()
    );
    assert!(server.buffered_bytes() > 3 * MIB);

    honest_http_call(addr).await;
    let client = http::PeerRpcClient::new(unused_link());
    let big = client
        .request_to(
            &addr.to_string(),
            "svc",
            json!("z".repeat(MIB)),
            Duration::from_secs(2),
        )
        .await;
    assert_eq!(big, Err(RpcError::Request("ERR_MEMORY_BUDGET".to_string())));
}

/// A gzip body of `members` concatenated members, each 8 MiB of zeros once inflated (a
/// multi-member body inflates whole, as Node's zlib does): 64 KiB on the wire for 64 MiB.
fn gzip_bomb(members: usize) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 8 << 20]).unwrap();
    let member = encoder.finish().unwrap();
    member.repeat(members)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_do_not_stall_honest_requests() {
    let (server, addr) = http_worker(ServerConfig::default()).await;
    let bomb = std::sync::Arc::new(gzip_bomb(12));
    let attack_until = Instant::now() + Duration::from_secs(3);
    let mut bombers = Vec::new();
    for _ in 0..4 {
        let bomb = std::sync::Arc::clone(&bomb);
        bombers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while Instant::now() < attack_until {
                let mut socket =
                    attacker_post(addr, "grc-compress: gzip\r\n", &bomb, bomb.len()).await;
                let answer = read_until_closed(&mut socket, Duration::from_secs(20)).await;
                answers.push(String::from_utf8_lossy(&answer.unwrap_or_default()).into_owned());
            }
            answers
        }));
    }
    // Let the bombs land first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut latencies = Vec::new();
    while Instant::now() < attack_until {
        let started = Instant::now();
        honest_http_call(addr).await;
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let mut refused = 0;
    for bomber in bombers {
        for answer in bomber.await.unwrap() {
            assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
            refused += 1;
        }
    }
    assert!(refused >= 4, "the bombs went off: {refused}");
    // Judged by the median, robust to a busy machine: about 1 ms here, and 150 ms when the
    // bombs were inflated on the runtime.
    assert!(
        median < Duration::from_millis(50),
        "honest median latency {median:?} during the bombs ({} calls)",
        latencies.len()
    );
    assert_eq!(server.buffered_bytes(), 0, "the budget is given back");
}

/// A connection from the attacker's address that reads nothing (with a small receive
/// buffer, so that the worker's writes soon wait).
async fn non_reading_attacker(addr: SocketAddr) -> TcpStream {
    let socket = attacker_socket().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether `check` comes true within 10 s (tried every 100 ms).
async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Whether the worker lets a new connection from the attacker's address be upgraded
/// (with `max_connections_per_ip: 1`, only once the previous one is gone).
async fn attacker_slot_free(addr: SocketAddr) -> bool {
    !silent_ws_flood(addr, 1).await.is_empty()
}

#[tokio::test]
async fn clients_that_stop_reading_answers_are_dropped() {
    let config = ServerConfig {
        read_timeout: Duration::from_millis(300),
        max_connections_per_ip: 1,
        ..ServerConfig::default()
    };
    let (_ws_server, ws_addr) = ws_worker(config.clone()).await;
    let (_http_server, http_addr) = http_worker(config).await;
    // Requests whose answers (8 MB echoes) the attacker never reads.
    let request = format!(r#"["big","svc",{{"pad":"{}"}}]"#, "p".repeat(8_000_000));

    let mut ws = non_reading_attacker(ws_addr).await;
    ws.write_all(UPGRADE).await.unwrap();
    // The upgrade answer is read (tungstenite wants it awaited), nothing after it.
    let upgraded = read_head(&mut ws, Duration::from_secs(2)).await.unwrap();
    assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");
    ws.write_all(&frame_header(true, 0x1, request.len()))
        .await
        .unwrap();
    ws.write_all(request.as_bytes()).await.unwrap();
    assert!(
        !attacker_slot_free(ws_addr).await,
        "the first one holds the slot"
    );
    // The answer takes a while to make (8 MB of JSON), then writing it stalls for 300 ms.
    let freed = eventually(|| attacker_slot_free(ws_addr)).await;
    assert!(freed, "the stuck connection was dropped");

    let mut http = non_reading_attacker(http_addr).await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        request.len()
    );
    http.write_all(head.as_bytes()).await.unwrap();
    http.write_all(request.as_bytes()).await.unwrap();
    let mut second = attacker_connect(http_addr).await.unwrap();
    let mut byte = [0u8; 1];
    let refused = tokio::time::timeout(Duration::from_millis(200), second.read(&mut byte)).await;
    assert!(
        matches!(refused, Ok(Ok(0) | Err(_))),
        "the first one holds the slot"
    );
    let served = eventually(|| async {
        let mut next = attacker_connect(http_addr).await.unwrap();
        let mut byte = [0u8; 1];
        // Served means kept open, waiting for a request; refused means closed at once.
        tokio::time::timeout(Duration::from_millis(200), next.read(&mut byte))
            .await
            .is_err()
    })
    .await;
    assert!(served, "the stuck connection was dropped");
    drop((ws, http));
}

#[tokio::test]
async fn ws_messages_arriving_slowly_but_steadily_are_not_taken_for_idleness() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(300),
        min_body_rate: 10_000,
        ..ServerConfig::default()
    };
    let (_server, addr) = ws_worker(config).await;
    let mut honest = TcpStream::connect(addr).await.unwrap();
    honest.write_all(UPGRADE).await.unwrap();
    let head = read_head(&mut honest, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // 20 kB at 20 kB/s: twice the rule's rate, and longer than the idle rule's 400 ms.
    let message = format!(r#"["slow","svc","{}"]"#, "s".repeat(19_980));
    honest
        .write_all(&frame_header(true, 0x2, message.len()))
        .await
        .unwrap();
    let started = Instant::now();
    for piece in message.as_bytes().chunks(2_000) {
        honest.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() > Duration::from_millis(900));
    let mut answer = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), honest.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer[0], 0x81, "a text frame, not a close");
    let mut text = vec![0u8; usize::from(answer[1])];
    honest.read_exact(&mut text).await.unwrap();
    assert_eq!(String::from_utf8(text).unwrap(), r#"["slow",null,19980]"#);
}

#[tokio::test]
async fn when_full_a_lighter_host_displaces_an_idle_connection_of_the_heaviest() {
    let config = ServerConfig {
        max_connections: 8,
        max_connections_per_ip: 8,
        ..ServerConfig::default()
    };
    let (_ws_server, ws_addr) = ws_worker(config.clone()).await;
    let mut idle = silent_ws_flood(ws_addr, 8).await;
    assert_eq!(idle.len(), 8, "the attacker alone fills the worker");
    honest_ws_call(ws_addr).await;
    let mut closed = 0;
    for socket in &mut idle {
        if read_until_closed(socket, Duration::from_millis(100))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "one idle connection made room");

    let (_http_server, http_addr) = http_worker(config).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(attacker_connect(http_addr).await.unwrap());
    }
    honest_http_call(http_addr).await;
}

#[tokio::test]
async fn busy_connections_are_not_displaced() {
    let config = ServerConfig {
        max_connections: 4,
        max_connections_per_ip: 4,
        ..ServerConfig::default()
    };
    let (_server, addr) = ws_worker(config).await;
    // Each in the middle of a message: busy.
    let mut busy = silent_ws_flood(addr, 4).await;
    for socket in &mut busy {
        socket.write_all(&first_fragment(1_000)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let honest = tokio::time::timeout(
        Duration::from_millis(500),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await;
    assert!(honest.is_err(), "the honest client waits for a slot");
    // One busy connection ends: the waiting client gets its slot.
    drop(busy.pop());
    honest_ws_call(addr).await;
}
