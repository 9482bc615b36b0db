//! The `grape` binary's command line: help and defaults, required flags, bad values, a busy
//! API port.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn grape(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grape"))
        .args(args)
        .output()
        .expect("the grape binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_flag_with_documented_defaults() {
    let out = grape(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for flag in [
        "-b, --bind",
        "--b",
        "--dp",
        "--dht_port",
        "--aph",
        "--api_port",
        "--bn",
        "--bootstrap",
        "--dc",
        "--dht_concurrency",
        "--dht_maxTables",
        "--dht_maxValues",
        "--dpa",
        "--dht_peer_maxAge",
        "--dnl",
        "--dht_nodeLiveness",
        "--check_maxPayloadSize",
        "--cache_maxAge",
        "-v",
        "--version",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for default in [
        "[default: 120000]",
        "[default: 300000]",
        "[default: 8192]",
        "[default: 5000]",
        "[default: 16]",
    ] {
        assert!(help.contains(default), "--help lacks {default}:\n{help}");
    }
    // The 1.0.0 regression values are not what we document.
    assert!(!help.contains("[default: 1000]") && !help.contains("[default: 900000]"));

    let out = grape(&["--version"]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("grape "));
}

#[test]
fn required_flags_are_enforced() {
    let out = grape(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for flag in ["--dp", "--aph", "--bn"] {
        assert!(err.contains(flag), "{err}");
    }
    let out = grape(&["--dp", "20001", "--aph", "30001"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bn"), "{}", stderr(&out));
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let out = grape(&["--dp", "20001", "--aph", "30001", "--bn", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid bootstrap node \"127.0.0.1\": missing ':port'"),
        "{}",
        stderr(&out)
    );
    let out = grape(&["--dp", "x", "--aph", "30001", "--bn", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--dp"), "{}", stderr(&out));
    let out = grape(&["--dp", "20001", "--aph", "0", "--bn", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--aph"), "{}", stderr(&out));
    let out = grape(&["--dp", "20001", "--aph", "70000", "--bn", ""]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_thread_counts_are_refused_with_the_reason() {
    for (bad, reason) in [
        ("x", "invalid digit found in string"),
        ("-1", "unexpected argument '-1' found"),
        ("1025", "1025 is not in 0..=1024"),
        ("", "cannot parse integer from empty string"),
    ] {
        let out = grape(&["--dp", "0", "--aph", "30001", "--bn", "", "--threads", bad]);
        assert_eq!(out.status.code(), Some(2), "--threads {bad:?}");
        let err = stderr(&out);
        assert!(
            err.contains("--threads") || bad == "-1",
            "--threads {bad:?}: {err}"
        );
        assert!(err.contains(reason), "--threads {bad:?}: {err}");
    }
    let help = stdout(&grape(&["--help"]));
    assert!(help.contains("--threads <N>"), "{help}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loops = cores.saturating_sub(1).max(1);
    // clap prints the default after the text, on the same line or (long help) the next.
    let threads_help = help
        .split("--threads <N>")
        .nth(1)
        .and_then(|rest| rest.split("\n  -").next())
        .unwrap_or_default();
    assert!(
        threads_help.contains("one per core but one")
            && threads_help.contains(&format!("[default: {loops}]")),
        "the default is one loop per core but one, at least one: {help}"
    );
}

#[test]
fn a_busy_api_port_fails_fast_with_a_clear_message() {
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let started = Instant::now();
    let out = grape(&["--dp", "0", "--aph", &port, "--bn", ""]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on HTTP API port {port}")) && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn aliases_are_accepted_and_a_busy_dht_port_fails_fast() {
    // Aliases, the empty bootstrap list and every optional flag parse; then the DHT's UDP port
    // is taken, and the grape says so at once.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let busy = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let dht_port = busy.local_addr().unwrap().port().to_string();
    let started = Instant::now();
    let out = grape(&[
        "--b",
        "127.0.0.1",
        "--dht_port",
        &dht_port,
        "--api_port",
        &port,
        "--bootstrap",
        "127.0.0.1:20002,,localhost:20003",
        "--dht_concurrency",
        "32",
        "--dht_maxTables",
        "10",
        "--dht_maxValues",
        "10",
        "--dht_peer_maxAge",
        "3000",
        "--dht_nodeLiveness",
        "60000",
        "--check_maxPayloadSize",
        "100",
        "--cache_maxAge",
        "5",
        "-vv",
    ]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on DHT UDP port {dht_port}"))
            && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn a_bad_api_allow_list_is_refused_with_the_reason() {
    for (list, reason) in [
        (
            "10.0.0.0/33",
            "--api-allow: invalid network '10.0.0.0/33': the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)",
        ),
        (
            "127.0.0.1,nope",
            "--api-allow: invalid network 'nope': not an IPv4 or IPv6 address",
        ),
        ("", "--api-allow: invalid network '': no network given"),
    ] {
        let out = grape(&[
            "--dp",
            "0",
            "--aph",
            "30001",
            "--bn",
            "",
            "--api-allow",
            list,
        ]);
        assert_eq!(out.status.code(), Some(2), "{list}");
        assert!(stderr(&out).contains(reason), "{list}: {}", stderr(&out));
    }
    assert!(stdout(&grape(&["--help"])).contains("--api-allow <CIDR,...>"));
}

/// A running grape with `--api-allow 127.0.0.1/32` closes a connection from 127.0.0.2 at once
/// and answers 127.0.0.1.
#[tokio::test]
async fn api_allow_keeps_other_hosts_out() {
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_grape"))
        .args(["--dp", "0", "--aph", &port.to_string(), "--bn", ""])
        .args(["--api-allow", "127.0.0.1/32"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let exchange = |from: [u8; 4]| async move {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((from, 0))).ok()?;
        let mut stream = socket.connect(api).await.ok()?;
        let body = r#"{"data":"svc"}"#;
        let request = format!(
            "POST /lookup HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let _ = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let honest = loop {
        match exchange([127, 0, 0, 1]).await {
            Some(answer) if !answer.is_empty() => break answer,
            _ => {
                assert!(Instant::now() < deadline, "the grape did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(honest.starts_with("HTTP/1.1 200 OK\r\n"), "{honest}");
    let started = Instant::now();
    assert_eq!(exchange([127, 0, 0, 2]).await.as_deref(), Some(""));
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = child.kill().await;
}

#[test]
fn a_dht_max_values_above_what_the_build_keeps_is_a_clear_error() {
    let too_many = (grenache_tokio::grape::node::ITEMS + 1).to_string();
    let out = grape(&[
        "--dp",
        "0",
        "--aph",
        "30001",
        "--bn",
        "",
        "--dht_maxValues",
        &too_many,
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "--dht_maxValues: {too_many} is above the maximum of {}",
            grenache_tokio::grape::node::ITEMS
        )),
        "{err}"
    );
}

/// One KRPC query to `to` from `socket`, and its answer's `r` (raw datagram kept in `buf`).
/// The grape's own queries are skipped: it pings a node it does not know before adding it.
fn krpc_call<'b>(
    socket: &std::net::UdpSocket,
    to: std::net::SocketAddr,
    query: &[u8],
    buf: &'b mut [u8],
) -> grenache_core::wire::krpc::Response<'b> {
    use grenache_core::wire::krpc::{parse, Message};
    socket.send_to(query, to).unwrap();
    let mut n = 0;
    for _ in 0..8 {
        let (len, _) = socket.recv_from(buf).expect("the grape answers within 2 s");
        if !matches!(parse(&buf[..len]), Ok(Message::Query { .. })) {
            n = len;
            break;
        }
    }
    match parse(&buf[..n]).unwrap() {
        Message::Response { r, .. } => r,
        other => panic!("not an answer: {other:?}"),
    }
}

#[test]
fn dht_max_values_bounds_the_items_the_grape_keeps() {
    use grenache_core::dht::id::NodeId;
    use grenache_core::wire::krpc::{encode_get, encode_ping, encode_put_immutable};

    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = api.local_addr().unwrap().port().to_string();
    drop(api);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dht_port = udp.local_addr().unwrap().port();
    drop(udp);
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_grape"))
            .args([
                "-b",
                "127.0.0.1",
                "--dp",
                &dht_port.to_string(),
                "--aph",
                &api_port,
                "--bn",
                "",
                "--dht_maxValues",
                "3",
            ])
            .spawn()
            .unwrap(),
    );
    let grape_addr: std::net::SocketAddr = format!("127.0.0.1:{dht_port}").parse().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = NodeId([7; 20]);
    let mut q = [0u8; 1500];
    let mut buf = [0u8; 1500];
    // Wait (at most 10 s) for the grape to answer a ping.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = encode_ping(&mut q, b"pi", &me).unwrap();
        socket.send_to(&q[..n], grape_addr).unwrap();
        if socket.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the grape did not start");
    }
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let values: Vec<Vec<u8>> = (0..5).map(|i| format!("6:value{i}").into_bytes()).collect();
    let keys: Vec<[u8; 20]> = values
        .iter()
        .map(|v| grenache_core::dht::bep44::immutable_key(v))
        .collect();
    let n = encode_get(&mut q, b"g0", &me, &keys[0]).unwrap();
    let token = krpc_call(&socket, grape_addr, &q[..n], &mut buf)
        .token
        .unwrap()
        .to_vec();
    for v in &values {
        let n = encode_put_immutable(&mut q, b"pu", &me, &token, v).unwrap();
        let r = krpc_call(&socket, grape_addr, &q[..n], &mut buf);
        assert!(r.id.is_some());
    }
    // Only the three most recent are kept.
    for (i, key) in keys.iter().enumerate() {
        let n = encode_get(&mut q, b"gk", &me, key).unwrap();
        let r = krpc_call(&socket, grape_addr, &q[..n], &mut buf);
        assert_eq!(r.v.is_some(), i >= 2, "item {i}");
    }
}

/// A child process killed on drop, also when the test fails (it holds the test's output
/// pipes: a leaked one would keep `cargo test` waiting).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
