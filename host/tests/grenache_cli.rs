//! The `grenache` binary end to end: the demo, every client command against two Rust grapes
//! (the `grape` binary) and against the demo's own network, and the error messages and exit
//! codes. Needs nothing but the two binaries cargo builds for this test, except
//! `a_rust_grape_and_a_node_grape_share_services_and_values`, which needs Node and
//! `npm ci --prefix tests/interop` like the other interop tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adapters/tokio/tests/common/mod.rs"]
mod common;

use common::{free_tcp_port, free_udp_port};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `grenache args…`, killing it if it takes longer than `LIMIT`.
fn grenache(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grenache"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the grenache binary runs");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    // Read the pipes on threads so that a chatty child never blocks on a full pipe.
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("grenache {args:?} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `grenache args…` again and again (at most 20 s) until `done` accepts the output.
fn grenache_until(args: &[&str], done: impl Fn(&Output) -> bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = grenache(args);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "grenache {args:?} never gave the expected output; last: code {:?}, stdout {:?}, \
             stderr {:?}",
            out.status.code(),
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Two `grape` processes bootstrapped to each other; their API URLs.
struct Grapes {
    a: String,
    b: String,
    _procs: (Proc, Proc),
}

fn start_grapes() -> Grapes {
    start_grapes_with(false)
}

/// Two grapes bootstrapped to each other; with `node_b`, the second one is the Node
/// grenache-grape.
fn start_grapes_with(node_b: bool) -> Grapes {
    let (dp1, dp2) = (free_udp_port(), free_udp_port());
    let (aph1, aph2) = (free_tcp_port(), free_tcp_port());
    let start = |dp: u16, aph: u16, bn: u16| {
        let child = Command::new(env!("CARGO_BIN_EXE_grape"))
            .args(["-b", "127.0.0.1", "--dp", &dp.to_string()])
            .args([
                "--aph",
                &aph.to_string(),
                "--bn",
                &format!("127.0.0.1:{bn}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the grape binary runs");
        Proc(child)
    };
    let second = if node_b {
        let grape_js = common::interop_dir().join("node_modules/grenache-grape/bin/grape.js");
        let child = Command::new("node")
            .arg(grape_js)
            .args(["--dp", &dp2.to_string(), "--aph", &aph2.to_string()])
            .args(["--bn", &format!("127.0.0.1:{dp1}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        Proc(child)
    } else {
        start(dp2, aph2, dp1)
    };
    let grapes = Grapes {
        a: format!("http://127.0.0.1:{aph1}"),
        b: format!("http://127.0.0.1:{aph2}"),
        _procs: (start(dp1, aph1, dp2), second),
    };
    for url in [&grapes.a, &grapes.b] {
        // Up once a lookup reaches it (and finds nothing, exit code 3).
        grenache_until(&["--grape", url, "lookup", "readiness_probe"], |out| {
            out.status.code() == Some(3)
        });
    }
    grapes
}

#[test]
fn demo_runs_the_tutorial_in_one_process() {
    let started = Instant::now();
    let out = grenache(&["demo"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    for expected in [
        "grape 1 is up: HTTP API http://127.0.0.1:",
        "grape 2 is up: HTTP API http://127.0.0.1:",
        "worker 'fibonacci_worker' listens on ws://127.0.0.1:",
        "gives [\"127.0.0.1:",
        "fib(1) = 1",
        "fib(5) = 8",
        "fib(10) = 89",
        "fib(20) = 10946",
        "Done",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn help_documents_the_exit_codes() {
    let out = grenache(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for expected in [
        "Exit codes:",
        "3  not found",
        "4  the grape cannot be reached",
        "demo",
        "lookup",
        "announce",
        "request",
        "map",
        "put",
        "get",
        "--grape",
        "[default: http://127.0.0.1:30001]",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
}

#[test]
fn announce_lookup_put_get_through_rust_grapes() {
    let grapes = start_grapes();
    let (a, b) = (grapes.a.as_str(), grapes.b.as_str());

    // Announce through grape A (retried while the grapes still bootstrap), look up through B.
    let out = grenache_until(&["--grape", a, "announce", "cli_test_svc", "4321"], |out| {
        out.status.success()
    });
    assert_eq!(
        stdout(&out).trim(),
        format!("announced 'cli_test_svc' on port 4321 through {a}")
    );
    let out = grenache_until(&["--grape", b, "lookup", "cli_test_svc"], |out| {
        out.status.success()
    });
    assert_eq!(stdout(&out).trim(), "127.0.0.1:4321");
    let out = grenache(&["--grape", b, "lookup", "cli_test_svc", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let peers: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(peers, serde_json::json!(["127.0.0.1:4321"]));

    // Put through A, get through B.
    let out = grenache(&["--grape", a, "put", "hello grenache"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).trim().to_string();
    assert_eq!(hash.len(), 40, "{hash:?}");
    assert!(hash.bytes().all(|c| c.is_ascii_hexdigit()), "{hash:?}");
    // The key of an immutable item is the SHA-1 of its bencoding, `14:hello grenache`.
    let out = grenache(&["--grape", b, "get", &hash]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello grenache");
    let out = grenache(&["--grape", b, "get", &hash, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let item: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(item["v"], "hello grenache", "{item}");

    // Not found: distinct exit code 3, in plain words.
    let missing = "00112233445566778899aabbccddeeff00112233";
    let out = grenache(&["--grape", b, "get", missing]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("nothing is stored under {missing}")),
        "{}",
        stderr(&out)
    );
    let out = grenache(&["--grape", b, "lookup", "nobody_announces_this"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out).trim(),
        "grenache: no worker announces 'nobody_announces_this' (ERR_GRAPE_LOOKUP_EMPTY)"
    );
    let out = grenache(&["--grape", b, "request", "nobody_announces_this", "{}"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no worker announces 'nobody_announces_this'"),
        "{}",
        stderr(&out)
    );
}

/// `grenache demo --keep-running`, and its grape 2 URL once it says "ready".
fn keep_running_demo() -> (Proc, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grenache"))
        .args(["demo", "--keep-running"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the grenache binary runs");
    let lines = BufReader::new(child.stdout.take().unwrap());
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even once nobody listens: a closed pipe would make the demo's last
        // lines fail.
        for line in lines.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the demo never said ready:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    let url = |prefix: &str| {
        seen.iter()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", seen.join("\n")))
            .to_string()
    };
    let (g1, g2) = (url("  grape 1: "), url("  grape 2: "));
    (proc, g1, g2)
}

#[test]
fn request_and_map_through_the_demo_network() {
    let (mut demo, g1, g2) = keep_running_demo();
    for grape in [&g1, &g2] {
        let out = grenache(&[
            "--grape",
            grape,
            "request",
            "fibonacci_worker",
            r#"{"number": 10}"#,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "89");
    }
    let out = grenache(&[
        "--grape",
        &g2,
        "map",
        "fibonacci_worker",
        r#"{"number": 30}"#,
        "--timeout",
        "5000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "1346269");

    // The worker's own error, in plain words, exit code 5.
    let out = grenache(&[
        "--grape",
        &g2,
        "request",
        "fibonacci_worker",
        r#"{"number": "ten"}"#,
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("the worker of 'fibonacci_worker' answered with an error: ERR_BAD_NUMBER"),
        "{}",
        stderr(&out)
    );

    // Ctrl-C (SIGINT) stops the whole network cleanly, exit code 0.
    let pid = demo.0.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = demo.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo ignores Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn errors_are_plain_words_with_distinct_exit_codes() {
    // Nothing listens on a port just released.
    let port = free_tcp_port();
    let grape = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["lookup", "x"],
        vec!["announce", "x", "1"],
        vec!["put", "v"],
        vec!["request", "x", "{}"],
    ] {
        let mut all = vec!["--grape", grape.as_str()];
        all.extend(args.iter().copied());
        let out = grenache(&all);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).trim(),
            format!("grenache: cannot reach the grape at {grape}: connection refused"),
            "{args:?}"
        );
    }

    let out = grenache(&["request", "x", "{number: 1}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the JSON argument \"{number: 1}\" is not valid JSON"),
        "{}",
        stderr(&out)
    );
    let out = grenache(&["get", "not-a-hash"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("HASH must be 40 hexadecimal digits"),
        "{}",
        stderr(&out)
    );
    let out = grenache(&["--grape", "ftp://x", "lookup", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad --grape URL"), "{}", stderr(&out));
    let out = grenache(&["lookup"]);
    assert_eq!(out.status.code(), Some(2));
    let out = grenache(&["request", "x", "{}", "--transport", "carrier-pigeon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_rust_grape_and_a_node_grape_share_services_and_values() {
    let grapes = start_grapes_with(true);
    for (through, from, name, port) in [
        (&grapes.a, &grapes.b, "announced_via_rust", "5555"),
        (&grapes.b, &grapes.a, "announced_via_node", "5556"),
    ] {
        grenache_until(&["--grape", through, "announce", name, port], |out| {
            out.status.success()
        });
        let out = grenache_until(&["--grape", from, "lookup", name], |out| {
            out.status.success()
        });
        assert_eq!(stdout(&out).trim(), format!("127.0.0.1:{port}"));
    }
    for (to, from, value) in [
        (&grapes.a, &grapes.b, "stored via rust"),
        (&grapes.b, &grapes.a, "stored via node"),
    ] {
        let out = grenache(&["--grape", to, "put", value]);
        assert!(out.status.success(), "{}", stderr(&out));
        let hash = stdout(&out).trim().to_string();
        let out = grenache(&["--grape", from, "get", &hash]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), value);
    }
}

#[test]
fn request_and_map_over_http_to_a_worker_of_the_test() {
    use grenache_tokio::rpc::http::PeerRpcServer;
    use grenache_tokio::{Link, LinkConfig, Request, RpcError};

    let grapes = start_grapes();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let link = Link::new(LinkConfig::new(grapes.a.clone())).unwrap();
    let worker = PeerRpcServer::builder(link)
        .handler(|req: Request| async move {
            match req.payload.get("fail") {
                Some(why) => Err(RpcError::new(why.as_str().unwrap_or("ERR_FAIL"))),
                None => Ok(serde_json::json!({ "echo": req.payload })),
            }
        })
        .build();
    let port = runtime.block_on(async {
        let addr = worker
            .listen_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        worker.start_announcing("cli_http_echo");
        addr.port()
    });
    let b = grapes.b.as_str();
    grenache_until(&["--grape", b, "lookup", "cli_http_echo"], |out| {
        stdout(out).trim() == format!("127.0.0.1:{port}")
    });
    let out = grenache(&[
        "--grape",
        b,
        "request",
        "cli_http_echo",
        r#"{"a": [1, "x"]}"#,
        "--transport",
        "http",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), r#"{"echo":{"a":[1,"x"]}}"#);
    let out = grenache(&[
        "--grape",
        b,
        "map",
        "cli_http_echo",
        "7",
        "--transport",
        "http",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), r#"{"echo":7}"#);
    let out = grenache(&[
        "--grape",
        b,
        "request",
        "cli_http_echo",
        r#"{"fail": "ERR_NOPE"}"#,
        "--transport",
        "http",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "grenache: the worker of 'cli_http_echo' answered with an error: ERR_NOPE"
    );
    worker.stop();
}
