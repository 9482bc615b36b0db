//! The embassy adapter end to end on the host: `embassy_worker` (grenache-embassy on embassy's
//! std executor, embassy-net on a TAP device) inside a network namespace with a Rust grape, then
//! a Node grape.
//!
//! Checks: the light client's `announce_peer` makes the grape store the worker under its own
//! address; the Rust WebSocket and HTTP clients and the Node tutorial client get fib(10) = 89;
//! garbage, a malformed frame, invalid JSON, oversized HTTP and WebSocket requests and
//! half-open connections do not stop it; after a grape restart the worker is announced again;
//! with the Node grape (grenache-grape 1.0.0) in place of the Rust one, the same holds.
//!
//! Needs root (it creates a network namespace and a TAP device; CI runs as root), `ip`, and
//! Node with `npm ci --prefix tests/interop`. It fails loudly when any of them is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grenache_tokio::rpc::{http, ws};

mod worker_table;
use grenache_tokio::{Link, LinkConfig};
use serde_json::json;

/// Set in the re-executed test process that runs inside the namespace.
const INNER: &str = "GRENACHE_EMBASSY_IN_NETNS";
const TEST: &str = "embassy_worker_in_a_network_namespace";
const HOST_IP: &str = "10.77.0.1";
const BOARD_IP: &str = "10.77.0.2";
const BOARD: &str = "10.77.0.2:8080";
const GRAPE_API: &str = "http://127.0.0.1:30001";

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\nThis test must create a network namespace and a TAP device: run it as \
         root (CI does).",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn embassy_worker_in_a_network_namespace() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    let ns = Netns(format!("gremb{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
    ip(&["-n", &ns.0, "tuntap", "add", "name", "tap0", "mode", "tap"]);
    ip(&["-n", &ns.0, "link", "set", "tap0", "up"]);
    ip(&[
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{HOST_IP}/24"),
        "dev",
        "tap0",
    ]);
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INNER, "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the test inside the namespace failed: {status}"
    );
}

fn spawn(program: &str, args: &[&str], quiet: bool) -> Proc {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    if quiet {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    }
    Proc(
        c.spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}")),
    )
}

fn grape() -> Proc {
    spawn(
        env!("CARGO_BIN_EXE_grape"),
        &["--dp", "20001", "--aph", "30001", "--bn", ""],
        true,
    )
}

/// The grape's `/lookup` answer for the fib service (raw body), or `None` if it is down.
fn grape_lookup() -> Option<String> {
    let body = r#"{"data":"fibonacci_worker","rid":"t"}"#;
    let req = format!(
        "POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = exchange(&"127.0.0.1:30001".parse().unwrap(), req.as_bytes()).ok()?;
    status.contains(" 200 ").then_some(body)
}

fn wait_announced(limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if grape_lookup().is_some_and(|b| b.contains(BOARD)) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "the grape did not list {BOARD} within {limit:?}: {:?}",
        grape_lookup()
    );
}

fn connect() -> TcpStream {
    let s = TcpStream::connect_timeout(&BOARD.parse().unwrap(), Duration::from_secs(3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Sends `req` on a new connection and reads to the end: (status line, body).
fn exchange(addr: &SocketAddr, req: &[u8]) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(req)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or("").to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn post(body: &str) -> (String, String) {
    let req = format!(
        "POST / HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(&BOARD.parse().unwrap(), req.as_bytes()).unwrap()
}

fn rust_clients_get_89(rt: &tokio::runtime::Runtime, rounds: usize) {
    rt.block_on(async {
        let link = || Link::new(LinkConfig::new(GRAPE_API)).unwrap();
        let wsc = ws::PeerRpcClient::new(link());
        let httpc = http::PeerRpcClient::new(link());
        for _ in 0..rounds {
            let p = json!({ "number": 10 });
            let r = wsc
                .request("fibonacci_worker", p.clone(), Duration::from_secs(10))
                .await;
            assert_eq!(r.unwrap(), json!(89), "WebSocket client");
            let r = httpc
                .request("fibonacci_worker", p, Duration::from_secs(10))
                .await;
            assert_eq!(r.unwrap(), json!(89), "HTTP client");
        }
        wsc.close(Duration::from_secs(1)).await;
    });
}

fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/interop");
    assert!(
        dir.join("node_modules/grenache-nodejs-ws").is_dir(),
        "{}/node_modules is missing: run `npm ci --prefix tests/interop` first",
        dir.display()
    );
    dir
}

fn inner() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut grape_proc = grape();
    // Re-announce every 5 s so that the restart check below is quick (boards use 30 s).
    let mut worker = spawn(
        env!("CARGO_BIN_EXE_embassy_worker"),
        &[
            "--tap",
            "tap0",
            "--ip",
            BOARD_IP,
            "--grape",
            "10.77.0.1:20001",
            "--port",
            "8080",
            "--interval",
            "5",
        ],
        false,
    );
    let took = wait_announced(Duration::from_secs(40));
    eprintln!("test: announced after {took:?}");

    // The three clients.
    rust_clients_get_89(&rt, 1);
    node_client_gets_89();

    // The light client answers KRPC queries on its DHT port.
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    udp.send_to(
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        "10.77.0.2:20002",
    )
    .unwrap();
    let mut pong = [0u8; 1500];
    let (n, _) = udp.recv_from(&mut pong).expect("no answer to a KRPC ping");
    let pong = String::from_utf8_lossy(&pong[..n]).into_owned();
    assert!(
        pong.contains("1:t2:aa") && pong.contains("1:y1:r"),
        "ping answer: {pong:?}"
    );

    // HTTP keep-alive: two pipelined requests on one connection, the second one chunked.
    let mut s = connect();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 38\r\n\r\n[\"p1\",\"fibonacci_worker\",{\"number\":5}]\
          POST / HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\n[\"p2\"\r\n21\r\n,\"fibonacci_worker\",{\"number\":6}]\r\n0\r\n\r\n",
    )
    .unwrap();
    let mut both = String::new();
    let _ = s.read_to_string(&mut both);
    assert!(both.contains(r#"["p1",null,8]"#), "pipelined: {both:?}");
    assert!(
        both.contains(r#"["p2",null,13]"#),
        "pipelined chunked: {both:?}"
    );
    drop(s);

    // Half-open connections hold two of the four slots for the rest of the checks.
    let idle = connect();
    let mut partial = connect();
    partial
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\n[\"r")
        .unwrap();

    // Garbage: an error status or a plain close, nothing else.
    let mut junk = vec![0x16u8, 0x03, 0x01, 0x00, 0xff, 0x00];
    junk.extend_from_slice(b"\xfe\xff garbage \r\n\r\n");
    let (status, _) = exchange(&BOARD.parse().unwrap(), &junk).unwrap();
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 4"),
        "garbage → {status:?}"
    );
    // A frame with a recoverable rid is answered; invalid JSON closes without an answer.
    assert_eq!(
        post(r#"["r9"]"#).1,
        r#"["r9","ERR_REQUEST_MALFORMED",null]"#
    );
    assert_eq!(post("not json").0, "");
    assert_eq!(
        post(r#"["r8","x",{"number":99}]"#).1,
        r#"["r8","ERR_BAD_PAYLOAD: number too large",null]"#
    );
    // Oversized HTTP body: 413 before reading it.
    let (status, _) = exchange(
        &BOARD.parse().unwrap(),
        b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: 100000\r\n\r\n[",
    )
    .unwrap();
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "oversized body → {status:?}"
    );
    // Oversized WebSocket frame: close 1009 after the handshake.
    let mut s = connect();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = vec![0u8; 129];
    s.read_exact(&mut head).unwrap();
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert!(String::from_utf8_lossy(&head).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let mut frame = vec![0x81u8, 0x80 | 127];
    frame.extend_from_slice(&1_000_000u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 256]);
    let _ = s.write_all(&frame);
    let mut close = Vec::new();
    let _ = s.read_to_end(&mut close);
    assert!(
        close.starts_with(&[0x88, 0x02, 0x03, 0xf1]),
        "expected close 1009, got {close:?}"
    );

    drop(s);
    // Give the slots that just closed a moment to listen again (embassy-net has no backlog).
    std::thread::sleep(Duration::from_millis(300));

    // Still serving, with two slots held by half-open connections, several times over.
    rust_clients_get_89(&rt, 3);
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");
    drop((idle, partial));

    same_answers_as_the_tokio_workers(&rt);
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");

    // A grape restart forgets every peer; the next announce round stores the board again.
    drop(grape_proc);
    std::thread::sleep(Duration::from_secs(1));
    assert!(grape_lookup().is_none(), "the grape is still up");
    grape_proc = grape();
    let took = wait_announced(Duration::from_secs(30));
    eprintln!("test: announced again {took:?} after the grape restart");
    rust_clients_get_89(&rt, 1);
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");

    // The same board with the Node grape (bittorrent-dht) in its place: the light client's
    // announce_peer is stored under the board's own address there too, its answers to the
    // Node grape's queries do not upset it, and both kinds of client get 89 through it.
    drop(grape_proc);
    std::thread::sleep(Duration::from_secs(1));
    let mut node_grape = node_grape();
    let took = wait_announced(Duration::from_secs(40));
    eprintln!("test: announced to the Node grape after {took:?}");
    node_client_gets_89();
    rust_clients_get_89(&rt, 1);
    assert!(
        node_grape.0.try_wait().unwrap().is_none(),
        "the Node grape exited"
    );
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker exited");
}

/// The malformed-input table (worker_table.rs) against the board and the tokio workers: every
/// case gets the same answer from each, and the one the table gives.
fn same_answers_as_the_tokio_workers(rt: &tokio::runtime::Runtime) {
    let link = || Link::new(LinkConfig::new(GRAPE_API)).unwrap();
    let config = worker_table::tokio_config;
    let httpd = http::PeerRpcServer::builder(link())
        .handler(worker_table::fibonacci)
        .config(config())
        .build();
    let wsd = ws::PeerRpcServer::builder(link())
        .handler(worker_table::fibonacci)
        .config(config())
        .build();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (http_addr, ws_addr) = rt.block_on(async {
        (
            httpd.listen_on(local).await.unwrap(),
            wsd.listen_on(local).await.unwrap(),
        )
    });
    let board: SocketAddr = BOARD.parse().unwrap();
    let mut wrong = Vec::new();
    // The tokio workers are served by the runtime's worker threads while this one blocks.
    let cases = worker_table::http_cases()
        .into_iter()
        .map(|(name, input, want)| ("http", name, input, want, http_addr))
        .chain(
            worker_table::ws_cases()
                .into_iter()
                .map(|(name, input, want)| ("ws", name, input, want, ws_addr)),
        );
    for (transport, name, input, want, tokio_addr) in cases {
        let ask = |addr| match transport {
            "http" => worker_table::http(addr, &input),
            _ => worker_table::ws(addr, &input),
        };
        let from_board = ask(board);
        // Give the slot that just closed a moment to listen again (embassy-net has no backlog).
        std::thread::sleep(Duration::from_millis(100));
        let from_tokio = ask(tokio_addr);
        for (worker, got) in [("embassy", from_board), ("tokio", from_tokio)] {
            if got != want {
                wrong.push(format!(
                    "{transport} {name:?}: {worker} {got:?}, want {want:?}"
                ));
            }
        }
    }
    httpd.stop();
    wsd.stop();
    assert!(wrong.is_empty(), "answers differ:\n{}", wrong.join("\n"));
}

/// grenache-grape 1.0.0 from tests/interop on the Rust grape's ports (its bootstrap node is
/// absent: the board finds it by itself).
fn node_grape() -> Proc {
    let grape = interop_dir().join("node_modules/grenache-grape/bin/grape.js");
    spawn(
        "node",
        &[
            grape.to_str().unwrap(),
            "--dp",
            "20001",
            "--aph",
            "30001",
            "--bn",
            "127.0.0.1:20009",
        ],
        true,
    )
}

/// The seed tutorial's client (tests/interop/fib_client.js) through the grape on 30001.
fn node_client_gets_89() {
    let out = Command::new("node")
        .arg("fib_client.js")
        .current_dir(interop_dir())
        .env("GRAPE", GRAPE_API)
        .output()
        .expect("node is not runnable");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("in the sequence: 89"),
        "Node client: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
