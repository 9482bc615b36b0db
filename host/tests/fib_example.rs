//! The tutorial in Rust (examples/fib_server.rs and examples/fib_client.rs) against two Node
//! grapes, and crossed with the tutorial's own Node server.js and client.js
//! (tests/interop/fib_server.js, fib_client.js): every pairing must print fib(10) = 89.
//!
//! Needs `node`, `npm ci --prefix tests/interop`, and the example binaries, which `cargo test`
//! builds (with a `--test` filter, build them first: `cargo build -p grenache-host --examples`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../adapters/tokio/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{free_tcp_port, run, run_node, spawn, spawn_node, start_grapes, wait_visible};

const VISIBLE: Duration = Duration::from_secs(20);
const RUN: Duration = Duration::from_secs(30);

/// target/<profile>/examples/<name>, next to this test's own target/<profile>/deps/.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the examples (`cargo build -p grenache-host --examples`; \
         a plain `cargo test` builds them)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_and_rust_server_through_node_grapes() {
    let grapes = start_grapes().await;
    let port = free_tcp_port();
    let _server = spawn(
        &example("fib_server"),
        &[grapes.a.clone(), port.to_string()],
        &[],
    );
    wait_visible(&grapes.b, "fibonacci_worker", port, VISIBLE).await;
    let out = run(
        &example("fib_client"),
        &[],
        &[("GRAPE", grapes.b.clone())],
        RUN,
    )
    .await;
    assert_eq!(
        out.trim(),
        "Fibonacci number at place 10 in the sequence: 89"
    );
    let out = run(
        &example("fib_client"),
        &[grapes.b.clone(), "20".to_string()],
        &[],
        RUN,
    )
    .await;
    assert_eq!(
        out.trim(),
        "Fibonacci number at place 20 in the sequence: 10946"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tutorial_client_and_rust_server() {
    let grapes = start_grapes().await;
    let port = free_tcp_port();
    let _server = spawn(
        &example("fib_server"),
        &[],
        &[("GRAPE", grapes.a.clone()), ("PORT", port.to_string())],
    );
    wait_visible(&grapes.b, "fibonacci_worker", port, VISIBLE).await;
    let out = run_node("fib_client.js", &[("GRAPE", grapes.b.clone())], RUN).await;
    assert_eq!(
        out.trim(),
        "Fibonacci number at place 10 in the sequence: 89"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_and_node_tutorial_server() {
    let grapes = start_grapes().await;
    let port = free_tcp_port();
    let _server = spawn_node(
        "fib_server.js",
        &[("GRAPE", grapes.a.clone()), ("PORT", port.to_string())],
    );
    wait_visible(&grapes.b, "fibonacci_worker", port, VISIBLE).await;
    let out = run(
        &example("fib_client"),
        std::slice::from_ref(&grapes.b),
        &[],
        RUN,
    )
    .await;
    assert_eq!(
        out.trim(),
        "Fibonacci number at place 10 in the sequence: 89"
    );
}
