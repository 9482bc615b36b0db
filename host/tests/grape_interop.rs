//! Issue #3's proofs: the Rust `grape` binary against the real Node packages.
//!
//! * the tutorial ("Microservices with Grenache") over two Rust grapes;
//! * a mixed pair (one Node grape, one Rust grape): announce/lookup and put/get both ways;
//! * networks of 20 grapes, all Rust and half Node: an announce through one grape is found
//!   through every other one; the same with 60 grapes (more than K = 20, so lookups must route);
//! * expiry with `--dpa 3000` (Rust pair and mixed pair), the `/unannounce` extension, and its
//!   limit in a mixed network (Node grapes ignore it);
//! * several hosts: grapes in their own network namespaces on a bridge (needs root and `ip`).
//!
//! Every process is killed when its guard drops, ports are free ports (or, inside a namespace,
//! fixed ones: each namespace has its own), every wait is bounded. Needs `node` and
//! `npm ci --prefix tests/interop`; without them the tests fail, they never skip.
//!
//! Run: `cargo test -p grenache-host --test grape_interop` (as root for the namespace test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adapters/tokio/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_tcp_port, free_udp_port, interop_dir, run, run_node, spawn, spawn_node, Proc};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tutorial client's expected line.
const FIB_10: &str = "Fibonacci number at place 10 in the sequence: 89";
/// `sha1("11:hello world")`, what the Node grape answers to a put of "hello world"
/// (docs/protocol.md §5).
const HELLO_WORLD_KEY: &str = "6d33adc2b6b2c14c3036feefb7fedbca1a880527";
/// How long a grape may take to answer its API after start.
const START: Duration = Duration::from_secs(20);
/// How long an announce may take to become visible.
const VISIBLE: Duration = Duration::from_secs(20);
/// How long a Node script may run.
const RUN: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Grapes and HTTP

fn rust_grape_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_grape"))
}

fn node_grape_bin() -> PathBuf {
    let bin = interop_dir().join("node_modules/.bin/grape");
    assert!(
        bin.exists(),
        "{} is missing: run `npm ci --prefix tests/interop`",
        bin.display()
    );
    bin
}

/// Which implementation a grape runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rust,
    Node,
}

/// A running grape (killed on drop) and where its API is.
struct Grape {
    kind: Kind,
    /// `host:port` of the HTTP API.
    api: String,
    /// UDP port of the DHT.
    dp: u16,
    _proc: Proc,
}

/// The command line of a grape: `--dp dp --aph aph --bn <bootstrap> extra…`.
fn grape_args(dp: u16, aph: u16, bootstrap: &[String], extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--dp".to_string(),
        dp.to_string(),
        "--aph".to_string(),
        aph.to_string(),
        "--bn".to_string(),
        bootstrap.join(","),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn program(kind: Kind) -> PathBuf {
    match kind {
        Kind::Rust => rust_grape_bin(),
        Kind::Node => node_grape_bin(),
    }
}

/// Starts a grape on loopback with free ports, bootstrapped to the DHT ports `bootstrap`, and
/// waits until its API answers.
async fn start_grape(kind: Kind, bootstrap: &[u16], extra: &[&str]) -> Grape {
    let (dp, aph) = (free_udp_port(), free_tcp_port());
    let bn: Vec<String> = bootstrap.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let proc = spawn(&program(kind), &grape_args(dp, aph, &bn, extra), &[]);
    let grape = Grape {
        kind,
        api: format!("127.0.0.1:{aph}"),
        dp,
        _proc: proc,
    };
    wait_api(&grape.api, START).await;
    grape
}

/// One `POST /<endpoint>` with `{"data": data, "rid": …}`, on its own connection; returns the
/// status and the body. Fails the test past 15 s.
async fn post(api: &str, endpoint: &str, data: &Value) -> (u16, String) {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(api).await?;
        let body = json!({ "data": data, "rid": "grape-interop" }).to_string();
        let request = format!(
            "POST /{endpoint} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), attempt)
        .await
        .unwrap_or_else(|_| panic!("POST {api}/{endpoint} {data} took more than 15 s"))
        .unwrap_or_else(|e| panic!("POST {api}/{endpoint} {data}: {e}"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("POST {api}/{endpoint}: no HTTP response: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("POST {api}/{endpoint}: bad status line: {head:?}"));
    (status, body.to_string())
}

/// `POST /<endpoint>` that must answer 200 with a JSON body.
async fn post_ok(api: &str, endpoint: &str, data: &Value) -> Value {
    let (status, body) = post(api, endpoint, data).await;
    assert_eq!(status, 200, "POST {api}/{endpoint} {data}: {body}");
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("POST {api}/{endpoint} {data}: not JSON ({e}): {body:?}"))
}

/// The peers a `/lookup` of `name` through `api` answers.
async fn lookup(api: &str, name: &str) -> Vec<String> {
    match post_ok(api, "lookup", &json!(name)).await {
        Value::Array(peers) => peers
            .into_iter()
            .map(|p| p.as_str().unwrap_or_default().to_string())
            .collect(),
        other => panic!("lookup {name} through {api}: not an array: {other}"),
    }
}

/// `/announce` of `[name, port]` through `api`; returns the acknowledgement count, or the
/// error string the grape answered.
async fn announce(api: &str, name: &str, port: u16) -> Result<u64, String> {
    match post_ok(api, "announce", &json!([name, port])).await {
        Value::Number(n) => Ok(n.as_u64().unwrap_or(0)),
        other => Err(other.to_string()),
    }
}

/// Waits until the API of a grape answers a lookup.
async fn wait_api(api: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(api).await.ok()?;
            let body = r#"{"data":"grape_readiness_probe","rid":"r"}"#;
            let request = format!(
                "POST /lookup HTTP/1.1\r\nHost: {api}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.ok()?;
            raw.starts_with(b"HTTP/1.1 200").then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "grape API {api} not answering after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most `limit`) until a lookup of `name` through `api` contains `peer`; returns how
/// long it took.
async fn wait_found(api: &str, name: &str, peer: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let peers = lookup(api, name).await;
        if peers.iter().any(|p| p == peer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{name} → {peer} not found through {api} after {limit:?}: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port nobody listens on, to announce as a worker's (lookups do not contact workers).
fn worker_port() -> u16 {
    free_tcp_port()
}

// ---------------------------------------------------------------------------------------------
// 1. The tutorial over two Rust grapes

/// The seed tutorial, unchanged Node scripts (tests/interop/fib_server.js, fib_client.js), with
/// its two grapes replaced by Rust grapes bootstrapped to each other: the server announces
/// through the first, the client finds it through the second and prints fib(10) = 89.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tutorial_fib_over_two_rust_grapes() {
    let (dp1, dp2) = (free_udp_port(), free_udp_port());
    let (aph1, aph2) = (free_tcp_port(), free_tcp_port());
    let grape = rust_grape_bin();
    let _g1 = spawn(
        &grape,
        &grape_args(dp1, aph1, &[format!("127.0.0.1:{dp2}")], &[]),
        &[],
    );
    let _g2 = spawn(
        &grape,
        &grape_args(dp2, aph2, &[format!("127.0.0.1:{dp1}")], &[]),
        &[],
    );
    let (api1, api2) = (format!("127.0.0.1:{aph1}"), format!("127.0.0.1:{aph2}"));
    wait_api(&api1, START).await;
    wait_api(&api2, START).await;

    let port = free_tcp_port();
    let _server = spawn_node(
        "fib_server.js",
        &[
            ("GRAPE", format!("http://{api1}")),
            ("PORT", port.to_string()),
        ],
    );
    wait_found(
        &api2,
        "fibonacci_worker",
        &format!("127.0.0.1:{port}"),
        VISIBLE,
    )
    .await;
    let out = run_node("fib_client.js", &[("GRAPE", format!("http://{api2}"))], RUN).await;
    assert_eq!(out.trim(), FIB_10);
}

// ---------------------------------------------------------------------------------------------
// 2. A Node grape and a Rust grape

async fn mixed_pair() -> (Grape, Grape) {
    // The Node grape first, bootstrapped to the Rust grape's port before it exists (Node's
    // bootstrap then finds nobody; the Rust grape's own bootstrap fills both tables).
    let node_dp = free_udp_port();
    let rust = start_grape(Kind::Rust, &[node_dp], &[]).await;
    let aph = free_tcp_port();
    let proc = spawn(
        &node_grape_bin(),
        &grape_args(node_dp, aph, &[format!("127.0.0.1:{}", rust.dp)], &[]),
        &[],
    );
    let node = Grape {
        kind: Kind::Node,
        api: format!("127.0.0.1:{aph}"),
        dp: node_dp,
        _proc: proc,
    };
    wait_api(&node.api, START).await;
    (node, rust)
}

/// A worker announced through either grape of a mixed pair is found through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_pair_announce_and_lookup_both_ways() {
    let (node, rust) = mixed_pair().await;
    for (from, to) in [(&node, &rust), (&rust, &node)] {
        let name = format!("mixed_{:?}_to_{:?}", from.kind, to.kind);
        let port = worker_port();
        let peer = format!("127.0.0.1:{port}");
        // The first announce may race the other grape's bootstrap ("No nodes to query"):
        // announce like a worker does, once a second, until it is seen.
        let deadline = Instant::now() + VISIBLE;
        loop {
            let acks = announce(&from.api, &name, port).await;
            if let Ok(acks) = acks {
                assert!(acks >= 1, "{acks} acks");
                if lookup(&to.api, &name).await.contains(&peer) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {peer} announced through {:?} grape not found through {:?} grape: {acks:?}",
                from.kind,
                to.kind
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Found by both, and only the announced address.
        assert_eq!(lookup(&to.api, &name).await, vec![peer.clone()]);
        wait_found(&from.api, &name, &peer, VISIBLE).await;
    }
}

/// An immutable item put through either grape of a mixed pair is got through the other, under
/// the same key (the Rust grape computes Node's `sha1(bencode(v))`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_pair_put_and_get_both_ways() {
    let (node, rust) = mixed_pair().await;
    // Let both routing tables fill (a put with no token-bearing node fails).
    let probe_port = worker_port();
    let deadline = Instant::now() + VISIBLE;
    while announce(&node.api, "mixed_put_probe", probe_port)
        .await
        .is_err()
        || announce(&rust.api, "mixed_put_probe", probe_port)
            .await
            .is_err()
    {
        assert!(Instant::now() < deadline, "the mixed pair does not connect");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let cases = [
        (&rust, &node, "hello world", HELLO_WORLD_KEY.to_string()),
        (
            &node,
            &rust,
            "hello from node",
            sha1_smol::Sha1::from("15:hello from node")
                .digest()
                .to_string(),
        ),
    ];
    for (from, to, value, key) in cases {
        let put = post_ok(&from.api, "put", &json!({ "v": value })).await;
        assert_eq!(
            put,
            json!(key),
            "put {value:?} through the {:?} grape",
            from.kind
        );
        // `cache: false` skips the getter's own store: the item comes over the DHT.
        for query in [json!(key), json!({ "hash": key, "cache": false })] {
            let got = post_ok(&to.api, "get", &query).await;
            assert_eq!(
                got["v"],
                json!(value),
                "get {query} through the {:?} grape after a put through the {:?} grape: {got}",
                to.kind,
                from.kind
            );
            let id = got["id"].as_str().unwrap_or_default();
            assert_eq!(id.len(), 40, "{got}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Networks of 20 grapes

/// Starts one grape per entry of `kinds`, one after the other, each bootstrapped to the first
/// grape and to the one started just before it (the first one to the second's future port).
async fn start_network(kinds: &[Kind]) -> Vec<Grape> {
    let first_dp = free_udp_port();
    let mut grapes: Vec<Grape> = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let bootstrap: Vec<u16> = match i {
            0 => vec![],
            1 => vec![grapes[0].dp],
            _ => vec![grapes[0].dp, grapes[i - 1].dp],
        };
        let dp = if i == 0 { first_dp } else { free_udp_port() };
        let aph = free_tcp_port();
        let bn: Vec<String> = bootstrap.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let proc = spawn(&program(kind), &grape_args(dp, aph, &bn, &[]), &[]);
        let grape = Grape {
            kind,
            api: format!("127.0.0.1:{aph}"),
            dp,
            _proc: proc,
        };
        wait_api(&grape.api, START).await;
        grapes.push(grape);
    }
    grapes
}

/// Announces `name` through `grapes[from]` once a second (as the tutorial's worker does) until
/// a lookup through every other grape finds it; returns, per grape, how long after the first
/// announce it was first found, and how many announce rounds were needed.
async fn announce_until_everywhere(
    grapes: &[Grape],
    from: usize,
    name: &str,
    port: u16,
    limit: Duration,
) -> (Vec<Duration>, usize) {
    let peer = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let mut found: Vec<Option<Duration>> = vec![None; grapes.len()];
    found[from] = Some(Duration::ZERO);
    let mut rounds = 0;
    let mut next_announce = Instant::now();
    while found.iter().any(Option::is_none) {
        if Instant::now() >= next_announce {
            let acks = announce(&grapes[from].api, name, port).await;
            rounds += 1;
            eprintln!("{name}: announce round {rounds} → {acks:?}");
            next_announce += Duration::from_secs(1);
        }
        let lookups = grapes
            .iter()
            .enumerate()
            .filter(|(i, _)| found[*i].is_none())
            .map(|(i, g)| {
                let (api, name) = (g.api.clone(), name.to_string());
                async move { (i, lookup(&api, &name).await) }
            });
        for (i, peers) in futures_join_all(lookups).await {
            if peers.contains(&peer) {
                found[i] = Some(started.elapsed());
            }
        }
        let missing: Vec<String> = grapes
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(g, _)| format!("{:?} {}", g.kind, g.api))
            .collect();
        assert!(
            started.elapsed() < limit || missing.is_empty(),
            "{name} announced through grape {from} ({} rounds) still not found after {limit:?} \
             through: {missing:?}",
            rounds
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        found.into_iter().map(Option::unwrap_or_default).collect(),
        rounds,
    )
}

/// Runs futures concurrently on the current task (the test does not depend on futures-util).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("lookup task"));
    }
    out
}

/// Reports the per-grape times, and checks that every grape answered.
fn report(label: &str, grapes: &[Grape], times: &[Duration], rounds: usize) {
    let slowest = times.iter().max().copied().unwrap_or_default();
    eprintln!("{label}: found through all {} grapes after {rounds} announce round(s), slowest {slowest:?}", grapes.len());
    for (g, t) in grapes.iter().zip(times) {
        eprintln!("  {:?} {}: {t:?}", g.kind, g.api);
    }
}

/// 20 Rust grapes: a worker announced through one grape is found through each of the 19 others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_of_20_rust_grapes_finds_an_announce_everywhere() {
    let grapes = start_network(&[Kind::Rust; 20]).await;
    for from in [0, 7, 19] {
        let name = format!("net20_rust_from_{from}");
        let (times, rounds) =
            announce_until_everywhere(&grapes, from, &name, worker_port(), VISIBLE).await;
        report(&name, &grapes, &times, rounds);
    }
}

/// 10 Rust and 10 Node grapes, interleaved: a worker announced through a Rust grape or a Node
/// grape is found through each of the 19 others.
///
/// Observed (debug build, 2 cores, grapes started one after the other, each waited for): one
/// announce round suffices, whether it goes through a Rust or a Node grape; the announce is
/// acknowledged by all 19 other grapes and the slowest grape finds it within 0.3–0.7 s. The
/// test still re-announces once a second, as a worker does, in case a slow Node grape missed the
/// first round. (Under heavy CPU load a Rust announce was once acknowledged by 16 of 19: the
/// lookup stops waiting for nodes slower than its 250 ms stall timeout, by design; lookups still
/// found the worker through every grape.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_of_10_rust_and_10_node_grapes_finds_an_announce_everywhere() {
    let kinds: Vec<Kind> = (0..20)
        .map(|i| if i % 2 == 0 { Kind::Rust } else { Kind::Node })
        .collect();
    let grapes = start_network(&kinds).await;
    for from in [0, 7, 12, 19] {
        let name = format!("net20_mixed_from_{from}_{:?}", grapes[from].kind);
        let (times, rounds) =
            announce_until_everywhere(&grapes, from, &name, worker_port(), VISIBLE).await;
        report(&name, &grapes, &times, rounds);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Expiry and unannounce

/// `--dpa` of the expiry tests, in ms.
const DPA: &str = "3000";

/// Announces a worker through `a` once a second for 6 s, checking that lookups through `a` and
/// `b` find it all along, then stops and waits until neither finds it: that must happen no
/// earlier than `min_ttl` and no later than `max_ttl` + 2 s after the last announce. Returns
/// when it disappeared from each.
async fn expires_within(
    a: &Grape,
    b: &Grape,
    name: &str,
    min_ttl: Duration,
    max_ttl: Duration,
) -> [Duration; 2] {
    const MARGIN: Duration = Duration::from_millis(2000);
    let port = worker_port();
    let peer = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + VISIBLE;
    while announce(&a.api, name, port).await.is_err() {
        assert!(Instant::now() < deadline, "the grapes do not connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_found(&b.api, name, &peer, VISIBLE).await;
    // Announce once a second for twice the TTL: the entry must stay all along.
    let mut last_announce = Instant::now();
    let kept_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < kept_until {
        last_announce = Instant::now();
        announce(&a.api, name, port).await.expect("announce");
        for g in [a, b] {
            assert_eq!(
                lookup(&g.api, name).await,
                vec![peer.clone()],
                "through the {:?} grape",
                g.kind
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Stop announcing: gone from both by the TTL + margin after the last announce.
    let mut gone = [None, None];
    while gone.iter().any(Option::is_none) {
        for (i, g) in [a, b].into_iter().enumerate() {
            if gone[i].is_none() && lookup(&g.api, name).await.is_empty() {
                gone[i] = Some(last_announce.elapsed());
            }
        }
        assert!(
            last_announce.elapsed() < max_ttl + MARGIN || gone.iter().all(Option::is_some),
            "{peer} still found {:?} after the last announce (TTL at most {max_ttl:?}): {gone:?}",
            last_announce.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = gone.map(Option::unwrap_or_default);
    eprintln!(
        "{name}: gone after the last announce through the {:?} grape {:?}, through the {:?} grape {:?}",
        a.kind, gone[0], b.kind, gone[1]
    );
    for g in gone {
        assert!(g >= min_ttl, "expired before {min_ttl:?}: {gone:?}");
    }
    gone
}

/// With `--dpa 3000`, a worker that keeps announcing (through a grape of a two-grape Rust
/// network) stays found by both grapes; once it stops, it disappears within the TTL, which is
/// exact in the Rust grape (3 s after its last announce; checked with a 2 s margin and not
/// before 2.8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_expire_after_dpa() {
    let a = start_grape(Kind::Rust, &[], &["--dpa", DPA]).await;
    let b = start_grape(Kind::Rust, &[a.dp], &["--dpa", DPA]).await;
    let ttl = Duration::from_millis(3000);
    expires_within(
        &a,
        &b,
        "expiring_worker",
        ttl - Duration::from_millis(200),
        ttl,
    )
    .await;
}

/// The same in a mixed pair, announced through either grape. The Node grape keeps a peer 0.67–1.33
/// × `--dpa` (record-cache generations, docs/protocol.md §4.4: 2–4 s here) in its DHT store, and
/// its lookups also answer from a cache (`_mem`) that keeps every peer a lookup saw for 0.67–1.33 ×
/// `--dpa`/2 (1–2 s) more: through the Node grape a worker can stay visible up to 4 + 2 = 6 s after
/// its last announce (observed: 4.8 s). Through the Rust grape it is gone when no DHT store has it
/// any more: 2–4 s if it was stored by the Node grape, 3 s if stored by a Rust grape. Bound: 6 s (+
/// 2 s margin); floor 1.8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_expire_after_dpa_in_a_mixed_pair() {
    let rust = start_grape(Kind::Rust, &[], &["--dpa", DPA]).await;
    let node = start_grape(Kind::Node, &[rust.dp], &["--dpa", DPA]).await;
    let (min, max) = (Duration::from_millis(1800), Duration::from_millis(6000));
    expires_within(&rust, &node, "expiring_from_rust", min, max).await;
    expires_within(&node, &rust, "expiring_from_node", min, max).await;
}

/// `/unannounce` (an extension, data `[name, port]`) removes the worker from every Rust grape at
/// once: the next lookup through any grape no longer finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannounce_removes_a_worker_at_once() {
    let grapes = start_network(&[Kind::Rust; 5]).await;
    let name = "leaving_worker";
    let port = worker_port();
    let peer = format!("127.0.0.1:{port}");
    announce_until_everywhere(&grapes, 2, name, port, VISIBLE).await;
    // Another worker under the same name stays.
    let staying = format!("127.0.0.1:{}", {
        let p = worker_port();
        announce_until_everywhere(&grapes, 3, name, p, VISIBLE).await;
        p
    });
    let removed = post_ok(&grapes[2].api, "unannounce", &json!([name, port])).await;
    assert!(
        removed.as_u64().unwrap_or(0) >= 1,
        "unannounce answered {removed}"
    );
    for g in &grapes {
        let peers = lookup(&g.api, name).await;
        assert!(
            !peers.contains(&peer) && peers.contains(&staying),
            "through {} after unannouncing {peer}: {peers:?}",
            g.api
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Several hosts: network namespaces on a bridge

/// Runs `ip args…` (at most 10 s); a failure fails the test with ip's message.
fn ip(args: &[&str]) {
    let out = ip_output(args);
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip args…` (killed after 10 s) and returns its output, whatever its status.
fn ip_output(args: &[&str]) -> std::process::Output {
    let mut child = std::process::Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`ip {}` did not finish within 10 s", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("ip output")
}

/// Hosts simulated by network namespaces, each with a veth pair whose other end is on a bridge
/// in the test's namespace; the bridge has the address .254 so that the test can reach every
/// host. Everything is deleted on drop (also when the test panics), and leftovers of an earlier
/// run with the same name are deleted first.
struct NetLab {
    bridge: String,
    namespaces: Vec<String>,
    subnet: String,
}

impl NetLab {
    /// `hosts` namespaces with the addresses `<subnet>.1`, `<subnet>.2`, … Needs root and
    /// iproute2: without them the test fails here, with the reason.
    fn new(hosts: usize) -> NetLab {
        let uid = std::process::Command::new("id").arg("-u").output();
        let uid = uid
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        assert_eq!(
            uid, "0",
            "the multi-host test creates network namespaces and needs root (uid 0, `id -u` \
             says {uid:?}); CI runs it as root"
        );
        let version = std::process::Command::new("ip").arg("-V").output();
        assert!(
            matches!(&version, Ok(o) if o.status.success()),
            "the multi-host test needs iproute2's `ip` on the PATH: {version:?}"
        );
        let netns = ip_output(&["netns", "list"]);
        assert!(
            netns.status.success(),
            "`ip netns` is unavailable: {}",
            String::from_utf8_lossy(&netns.stderr)
        );
        let pid = std::process::id();
        let tag = format!("gt{}", pid % 100_000);
        let lab = NetLab {
            bridge: format!("{tag}br"),
            namespaces: (0..hosts).map(|i| format!("{tag}n{i}")).collect(),
            // 10.213.x.0/24, x from the pid, so that parallel runs do not share a subnet.
            subnet: format!("10.213.{}", pid % 250),
        };
        lab.delete();
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", lab.subnet),
            "dev",
            &lab.bridge,
        ]);
        ip(&["link", "set", &lab.bridge, "up"]);
        for (i, ns) in lab.namespaces.iter().enumerate() {
            let (outer, inner) = (format!("{tag}v{i}"), format!("{tag}e{i}"));
            ip(&["netns", "add", ns]);
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", ns,
            ]);
            ip(&["link", "set", &outer, "master", &lab.bridge]);
            ip(&["link", "set", &outer, "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                &inner,
            ]);
            ip(&["-n", ns, "link", "set", &inner, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The address of host `i`.
    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Starts `program args…` inside host `i`'s namespace (killed on drop).
    fn spawn(&self, i: usize, program: &Path, args: &[String], env: &[(&str, String)]) -> Proc {
        let mut all = vec![
            "netns".to_string(),
            "exec".to_string(),
            self.namespaces[i].clone(),
            program.display().to_string(),
        ];
        all.extend(args.iter().cloned());
        spawn(Path::new("ip"), &all, env)
    }

    /// Deletes what [`NetLab::new`] creates (the veth pairs go with their namespaces).
    fn delete(&self) {
        for ns in &self.namespaces {
            let _ = ip_output(&["netns", "del", ns]);
        }
        let _ = ip_output(&["link", "del", &self.bridge]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.delete();
        eprintln!(
            "deleted bridge {} and namespaces {:?}",
            self.bridge, self.namespaces
        );
    }
}

/// Three hosts, each with its own grape: Rust on hosts 0 and 1, Node on host 2, bootstrapped
/// to each other by their real addresses. The tutorial's Node worker on host 0 announces to its
/// local Rust grape (http://127.0.0.1); every grape's lookup answers the worker's reachable
/// address `<host 0>:port` (never 127.0.0.1), and the tutorial's Node client on host 1 (through
/// its Rust grape) and on host 2 (through its Node grape) calls it: fib(10) = 89. A worker
/// announced through any of the three grapes is handed out with its host's address by all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grapes_on_three_hosts_hand_out_reachable_addresses() {
    // Declared first, so dropped last: the processes inside go before their namespaces.
    let lab = NetLab::new(3);
    const DP: u16 = 20001;
    const APH: u16 = 30001;
    const WORKER: u16 = 1337;
    let kinds = [Kind::Rust, Kind::Rust, Kind::Node];
    let mut grapes = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let others: Vec<String> = (0..kinds.len())
            .filter(|&j| j != i)
            .map(|j| format!("{}:{DP}", lab.addr(j)))
            .collect();
        grapes.push(lab.spawn(i, &program(*kind), &grape_args(DP, APH, &others, &[]), &[]));
    }
    let apis: Vec<String> = (0..kinds.len())
        .map(|i| format!("{}:{APH}", lab.addr(i)))
        .collect();
    for api in &apis {
        wait_api(api, START).await;
    }

    let node = interop_dir();
    let _worker = lab.spawn(
        0,
        Path::new("node"),
        &[node.join("fib_server.js").display().to_string()],
        &[
            ("GRAPE", format!("http://127.0.0.1:{APH}")),
            ("PORT", WORKER.to_string()),
        ],
    );
    let reachable = format!("{}:{WORKER}", lab.addr(0));
    for (api, kind) in apis.iter().zip(kinds) {
        let took = wait_found(api, "fibonacci_worker", &reachable, VISIBLE).await;
        let peers = lookup(api, "fibonacci_worker").await;
        eprintln!("{kind:?} grape {api}: {peers:?} (found after {took:?})");
        assert_eq!(
            peers,
            vec![reachable.clone()],
            "through the {kind:?} grape {api}"
        );
    }
    // The same for a worker announced (over HTTP, from outside) through each host's grape:
    // every grape hands out that host's address.
    for (i, kind) in kinds.iter().enumerate() {
        let name = format!("worker_on_host_{i}");
        let reachable = format!("{}:{}", lab.addr(i), 4000 + i);
        let deadline = Instant::now() + VISIBLE;
        while announce(&apis[i], &name, 4000 + i as u16).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "announce through {kind:?} grape {i} fails"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for api in &apis {
            wait_found(api, &name, &reachable, VISIBLE).await;
            let peers = lookup(api, &name).await;
            assert_eq!(peers, vec![reachable.clone()], "{name} through {api}");
        }
    }
    for client_host in [1, 2] {
        let out = run(
            Path::new("ip"),
            &[
                "netns".to_string(),
                "exec".to_string(),
                lab.namespaces[client_host].clone(),
                "node".to_string(),
                node.join("fib_client.js").display().to_string(),
            ],
            &[("GRAPE", format!("http://127.0.0.1:{APH}"))],
            RUN,
        )
        .await;
        assert_eq!(out.trim(), FIB_10, "client on host {client_host}");
    }
    drop(grapes);
}

/// 60 Rust grapes, more than K = 20: an announce reaches only the 20 grapes closest to the
/// name, and every other grape must route its lookup to them. Found through all 59 others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_of_60_rust_grapes_routes_lookups_to_the_closest() {
    let grapes = start_network(&[Kind::Rust; 60]).await;
    for from in [0, 30, 59] {
        let name = format!("net60_rust_from_{from}");
        let (times, rounds) =
            announce_until_everywhere(&grapes, from, &name, worker_port(), VISIBLE).await;
        report(&name, &grapes, &times, rounds);
    }
}

/// 30 Rust and 30 Node grapes, interleaved, more than K = 20: announces through either kind are
/// stored on the closest grapes of both kinds, and lookups through either kind route to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_of_30_rust_and_30_node_grapes_routes_lookups_to_the_closest() {
    let kinds: Vec<Kind> = (0..60)
        .map(|i| if i % 2 == 0 { Kind::Rust } else { Kind::Node })
        .collect();
    let grapes = start_network(&kinds).await;
    for from in [0, 31, 58, 59] {
        let name = format!("net60_mixed_from_{from}_{:?}", grapes[from].kind);
        let (times, rounds) =
            announce_until_everywhere(&grapes, from, &name, worker_port(), VISIBLE).await;
        report(&name, &grapes, &times, rounds);
    }
}

/// The limit of `/unannounce` in a mixed network, pinned so that a change is noticed: Node
/// grapes do not know the `unannounce` query and do not answer it, so an unannounce through the
/// Rust grape of a mixed pair, whose only other store is the Node grape, answers
/// `"All queries failed"`, and the worker stays in the Node grape's store (and in lookups
/// through both grapes) until it expires there (never with the Node CLI's default `--dpa`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannounce_does_not_reach_node_grapes() {
    let (node, rust) = mixed_pair().await;
    let port = worker_port();
    let peer = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + VISIBLE;
    while announce(&rust.api, "unannounce_mixed", port).await.is_err() {
        assert!(Instant::now() < deadline, "the mixed pair does not connect");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_found(&node.api, "unannounce_mixed", &peer, VISIBLE).await;
    let answer = post_ok(&rust.api, "unannounce", &json!(["unannounce_mixed", port])).await;
    assert_eq!(answer, json!("All queries failed"));
    for g in [&rust, &node] {
        assert_eq!(lookup(&g.api, "unannounce_mixed").await, vec![peer.clone()]);
    }
    // And the Node grape has no such endpoint.
    let answer = post_ok(&node.api, "unannounce", &json!(["unannounce_mixed", port])).await;
    assert_eq!(answer, json!("ERR_REQ_NOTFOUND"));
}
