//! The operator commands and flags of the binaries: `grenache watch` (joins and leaves of a
//! real worker through two `grape` processes), `grenache status` (against a stand-in serving
//! a fixed `/status.json`), `--log-format json` on both binaries, and their bad flags.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adapters/tokio/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{free_tcp_port, free_udp_port};
use grenache_tokio::rpc::ws;
use grenache_tokio::{Link, LinkConfig, Request};
use serde_json::{json, Value};

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines `from` writes, read on a thread, so that a test can wait for one with a bound.
fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most `limit`) for a line that `wanted` accepts; every line seen is in the panic.
fn wait_for_line(
    lines: &mpsc::Receiver<String>,
    limit: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no expected line within {limit:?}; saw {seen:#?}"),
        }
    }
}

/// Runs a binary to its end (it must end within 30 s).
fn run(binary: &str, args: &[&str]) -> Output {
    let child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{binary} {args:?} still running after 30 s"))
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `grape` process on loopback; `extra` flags after the required ones.
fn grape(dp: u16, aph: u16, bootstrap: &str, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_grape"))
        .args(["-b", "127.0.0.1", "--dp", &dp.to_string()])
        .args(["--aph", &aph.to_string(), "--bn", bootstrap])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Proc(child)
}

#[test]
fn watch_prints_a_join_then_a_leave_of_a_worker_that_stops() {
    let (dp1, dp2) = (free_udp_port(), free_udp_port());
    let (aph1, aph2) = (free_tcp_port(), free_tcp_port());
    // Peers expire 3 s after their last announce, and answers are not reused: a worker that
    // stops announcing is gone from lookups within seconds.
    let fast = ["--dpa", "3000", "--lookup_reuse", "0"];
    let _grapes = (
        grape(dp1, aph1, &format!("127.0.0.1:{dp2}"), &fast),
        grape(dp2, aph2, &format!("127.0.0.1:{dp1}"), &fast),
    );
    let (grape_a, grape_b) = (
        format!("http://127.0.0.1:{aph1}"),
        format!("http://127.0.0.1:{aph2}"),
    );
    let name = "watched_service";
    let mut watch = Command::new(env!("CARGO_BIN_EXE_grenache"))
        .args(["--grape", &grape_a, "watch", name, "--interval", "200"])
        .args(["--stop-after", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = lines_of(watch.stdout.take().unwrap());
    let watch = Proc(watch);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let worker_port = runtime.block_on(async {
        let link = Link::new(LinkConfig::new(&grape_b)).unwrap();
        let worker = ws::PeerRpcServer::builder(link)
            .handler(|_req: Request| async { json!("pong") })
            .build();
        let addr = worker
            .listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        // Until the grapes have found each other, an announce may not reach the DHT: repeat
        // it until a lookup sees it, then stop the worker (no announce after that).
        let lookup = Link::new(LinkConfig::new(&grape_a)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let _ = worker.announce(name).await;
            let found = lookup.lookup(name).await.unwrap_or_default();
            if found
                .iter()
                .any(|p| p.ends_with(&format!(":{}", addr.port())))
            {
                break;
            }
            assert!(Instant::now() < deadline, "the announce never arrived");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        worker.stop();
        addr.port()
    });
    let peer = format!("127.0.0.1:{worker_port}");
    let joined = wait_for_line(&lines, Duration::from_secs(20), |l| l.contains(" join "));
    let left = wait_for_line(&lines, Duration::from_secs(30), |l| l.contains(" leave "));
    for (line, event) in [(&joined, "join"), (&left, "leave")] {
        let mut fields = line.split(' ');
        let stamp = fields.next().unwrap();
        assert!(
            humantime::parse_rfc3339(stamp).is_ok(),
            "{line:?}: not an RFC 3339 time first"
        );
        assert_eq!(fields.next(), Some(event), "{line:?}");
        assert_eq!(fields.next(), Some(peer.as_str()), "{line:?}");
    }
    let (joined_at, left_at) = (
        humantime::parse_rfc3339(joined.split(' ').next().unwrap()).unwrap(),
        humantime::parse_rfc3339(left.split(' ').next().unwrap()).unwrap(),
    );
    assert!(joined_at < left_at, "{joined} / {left}");
    drop(watch);
}

/// A stand-in for a grape's API that answers every request with `status` and `body`, on a
/// thread, for `requests` connections.
fn fake_grape(status: &'static str, body: String, requests: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            assert!(head.starts_with(b"GET /status.json HTTP/1.1\r\n"));
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        }
    });
    url
}

#[test]
fn status_prints_the_grapes_names_workers_contacts_and_health() {
    let document = json!({
        "version": "0.1.0",
        "id": "ab".repeat(20),
        "dht_port": 20001,
        "uptime_seconds": 3723,
        "bootstrapped": true,
        "contacts": {
            "total": 2,
            "live": 1,
            "list": [
                { "addr": "127.0.0.1:20002", "bucket": 159, "live": true, "seen_ago_ms": 1500 },
                { "addr": "10.0.0.7:20003", "bucket": 158, "live": false, "seen_ago_ms": 61000 },
            ],
        },
        "stored": {
            "names": 1,
            "peers": 2,
            "items": 0,
            "listed": [{
                "name": "fibonacci_worker",
                "peers": [
                    { "addr": "127.0.0.1:1337", "ttl_ms": 97000 },
                    { "addr": "127.0.0.1:1338", "ttl_ms": null },
                ],
            }],
        },
        "api": { "open_connections": 3 },
    });
    let url = fake_grape("200 OK", document.to_string(), 2);
    let out = run(env!("CARGO_BIN_EXE_grenache"), &["--grape", &url, "status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    for expected in [
        &format!("grape {} (version 0.1.0), up 1h 2m 3s", "ab".repeat(20)),
        "health:   ready (bootstrapped)",
        "contacts: 2 (1 live)",
        "stored:   1 names, 2 workers, 0 items",
        "API:      3 open connections",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in:\n{shown}");
    }
    let rows: Vec<Vec<&str>> = shown
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    for row in [
        vec!["NAME", "WORKER", "EXPIRES IN"],
        vec!["fibonacci_worker", "127.0.0.1:1337", "97 s"],
        vec!["fibonacci_worker", "127.0.0.1:1338", "never expires"],
        vec!["CONTACT", "BUCKET", "STATE", "LAST SEEN"],
        vec!["127.0.0.1:20002", "159", "live", "1 s ago"],
        vec!["10.0.0.7:20003", "158", "unverified", "61 s ago"],
    ] {
        assert!(rows.contains(&row), "no row {row:?} in:\n{shown}");
    }

    let raw = run(
        env!("CARGO_BIN_EXE_grenache"),
        &["--grape", &url, "status", "--json"],
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&raw.stdout).unwrap(),
        document
    );
}

#[test]
fn status_of_a_grape_without_status_json_says_so() {
    let url = fake_grape("404 Not Found", "{}".to_string(), 1);
    let out = run(env!("CARGO_BIN_EXE_grenache"), &["--grape", &url, "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has no /status.json (HTTP 404): a Node grape"),
        "{}",
        text(&out.stderr)
    );
    let port = free_tcp_port();
    let out = run(
        env!("CARGO_BIN_EXE_grenache"),
        &["--grape", &format!("http://127.0.0.1:{port}"), "status"],
    );
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("connection refused"),
        "{}",
        text(&out.stderr)
    );
}

/// Every stderr line of a `--log-format json` run is one JSON object with a level and a
/// message; returns them.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(event["level"].is_string(), "{line}");
            assert!(event["timestamp"].is_string(), "{line}");
            event
        })
        .collect()
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let (dp, aph) = (free_udp_port(), free_tcp_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_grape"))
        .args(["--log-format", "json", "-v", "-b", "127.0.0.1"])
        .args([
            "--dp",
            &dp.to_string(),
            "--aph",
            &aph.to_string(),
            "--bn",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let child = Proc(child);
    let first = wait_for_line(&lines, Duration::from_secs(20), |l| {
        l.contains("HTTP API listening")
    });
    let event = &json_lines(&first)[0];
    assert_eq!(event["level"], "INFO");
    assert!(event["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with(&format!("HTTP API listening on 127.0.0.1:{aph}")));
    drop(child);

    // The client too: the demo's worker logs where it listens at info level.
    let out = run(
        env!("CARGO_BIN_EXE_grenache"),
        &["--log-format", "json", "-v", "demo"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let events = json_lines(&stderr);
    assert!(
        events.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("grenache ws server listening on 127.0.0.1:"))),
        "{stderr}"
    );
}

#[test]
fn bad_operator_flags_are_refused_with_the_reason() {
    let grenache = env!("CARGO_BIN_EXE_grenache");
    for (args, expected) in [
        (
            &["watch", "x", "--interval", "5"][..],
            "invalid value '5' for '--interval <MS>': 5 is not in 100..=3600000",
        ),
        (
            &["watch", "x", "--stop-after", "0"][..],
            "invalid value '0' for '--stop-after <SECONDS>'",
        ),
        (
            &["watch"][..],
            "the following required arguments were not provided",
        ),
        (
            &["--log-format", "xml", "lookup", "x"][..],
            "invalid value 'xml' for '--log-format <FORMAT>'",
        ),
        (
            &["--grape", "ftp://x", "status"][..],
            "bad --grape URL \"ftp://x\": the grape API is http://HOST:PORT",
        ),
    ] {
        let out = run(grenache, args);
        assert_eq!(out.status.code(), Some(2), "grenache {args:?}");
        assert!(
            text(&out.stderr).contains(expected),
            "grenache {args:?}: no {expected:?} in {}",
            text(&out.stderr)
        );
    }
    let out = run(
        env!("CARGO_BIN_EXE_grape"),
        &["--log-format", "xml", "--dp", "0", "--aph", "1", "--bn", ""],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid value 'xml' for '--log-format <FORMAT>'"));
}
