//! Bad input on a running `grape`: the five single-datagram crash vectors of the Node grape
//! (docs/protocol.md §13.3), truncated, garbage and oversized datagrams, wrongly typed fields, and
//! HTTP garbage. After each, the grape still answers a KRPC ping and an HTTP lookup, and what
//! it stores is unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adapters/tokio/tests/common/mod.rs"]
mod common;

use common::{free_tcp_port, free_udp_port};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Grape {
    child: Child,
    dht: u16,
    api: u16,
}

impl Drop for Grape {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Grape {
    let (dht, api) = (free_udp_port(), free_tcp_port());
    let child = Command::new(env!("CARGO_BIN_EXE_grape"))
        .args([
            "--dp",
            &dht.to_string(),
            "--aph",
            &api.to_string(),
            "--bn",
            "",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Grape { child, dht, api };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", g.api)).is_err() {
        assert!(Instant::now() < deadline, "the grape did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    g
}

fn http(g: &Grape, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", g.api)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&out[..head_end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if out.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lookup(g: &Grape, name: &str) -> String {
    let body = format!("{{\"data\":\"{name}\",\"rid\":\"x\"}}");
    let req = format!(
        "POST /lookup HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(g, req.as_bytes())
}

/// Sends `datagram` to the grape's DHT port; returns its answer, if any within 300 ms.
/// Answers left over from earlier datagrams are skipped first, and so are the grape's own
/// queries (it pings a querier it does not know before adding it to its table).
fn krpc(g: &Grape, sock: &UdpSocket, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    sock.set_nonblocking(true).unwrap();
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    sock.send_to(datagram, ("127.0.0.1", g.dht)).unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let n = sock.recv(&mut buf).ok()?;
        // Keys are sorted, so a KRPC query ends with its `y`.
        if !buf[..n].ends_with(b"1:y1:qe") {
            return Some(buf[..n].to_vec());
        }
    }
}

/// The grape answers a ping (transaction id `pp`) within 2 s.
fn assert_alive(g: &Grape, sock: &UdpSocket, after: &str) {
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:pp1:y1:qe";
    let mut answer = krpc(g, sock, ping);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    // A late answer to an earlier datagram may come first: wait for the pong itself.
    while !answer
        .as_ref()
        .is_some_and(|a| a.windows(7).any(|w| w == b"1:t2:pp"))
    {
        assert!(Instant::now() < deadline, "no pong after {after}");
        answer = sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
    }
    let answer = answer.unwrap();
    assert!(
        answer.starts_with(b"d1:rd2:id20:"),
        "after {after}: {answer:?}"
    );
    assert!(
        lookup(g, "nobody").ends_with("\r\n\r\n[]"),
        "HTTP after {after}"
    );
}

#[test]
fn the_five_node_crash_vectors_and_other_bad_datagrams_are_survived() {
    let g = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let vectors: [(&str, &[u8]); 5] = [
        ("query without q", b"d1:t2:aa1:y1:qe"),
        (
            "find_node with an integer target",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:targeti5ee1:q9:find_node1:t2:aa1:y1:qe",
        ),
        (
            "get_peers with an integer info_hash",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hashi5ee1:q9:get_peers1:t2:aa1:y1:qe",
        ),
        (
            "announce_peer with an integer token",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash3:svc4:porti1337e5:tokeni5ee1:q13:announce_peer1:t2:aa1:y1:qe",
        ),
        (
            "put with an integer token",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa5:tokeni5e1:v1:xe1:q3:put1:t2:aa1:y1:qe",
        ),
    ];
    for (what, v) in vectors {
        let _ = krpc(&g, &sock, v);
        assert_alive(&g, &sock, what);
    }
    // Truncated, garbage, empty and oversized datagrams.
    let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:pp1:y1:qe";
    for cut in [1, 5, 20, ping.len() - 1] {
        assert_eq!(krpc(&g, &sock, &ping[..cut]), None, "truncated at {cut}");
    }
    assert_eq!(krpc(&g, &sock, b""), None);
    assert_eq!(krpc(&g, &sock, &[0xff; 1200]), None);
    let mut big = b"d1:ad2:id20:abcdefghij01234567896:target".to_vec();
    big.extend_from_slice(b"60000:");
    big.extend(std::iter::repeat_n(b'x', 60_000));
    big.extend_from_slice(b"e1:q9:find_node1:t2:bb1:y1:qe");
    let _ = krpc(&g, &sock, &big);
    let deep = "l".repeat(10_000);
    assert_eq!(krpc(&g, &sock, deep.as_bytes()), None);
    assert_alive(&g, &sock, "truncated, garbage and oversized datagrams");
    // Nothing was stored by any of it.
    assert!(lookup(&g, "svc").ends_with("\r\n\r\n[]"));
}

#[test]
fn http_garbage_and_oversized_bodies_are_survived() {
    let g = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage = http(&g, b"\x00\x01\x02 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
        "{garbage}"
    );
    let big = http(
        &g,
        b"POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{\"data\":",
    );
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.ends_with("ERR_GRAPE_PAYLOAD_SIZE"), "{big}");
    let invalid = http(
        &g,
        b"POST /lookup HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 7\r\n\r\ngarbage",
    );
    assert!(invalid.starts_with("HTTP/1.1 500"), "{invalid}");
    assert!(invalid.ends_with("ERR_GRAPE_PAYLOAD_INVALID"), "{invalid}");
    assert_alive(&g, &sock, "HTTP garbage");
}
