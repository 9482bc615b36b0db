//! Helpers of the interop tests: Node grapes and Node scripts as child processes that are
//! killed when their guard is dropped, free ports, and bounded waits.
//!
//! The tests need `node` and the pinned Node packages in `tests/interop/node_modules`
//! (`npm ci --prefix tests/interop`). Without them they fail loudly: they never skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grenache_tokio::{Link, LinkConfig};

/// `tests/interop` of the repository, after checking that Node and the packages are there.
pub fn interop_dir() -> PathBuf {
    // Shared by crates at different depths: walk up to the repository's tests/interop.
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = manifest
        .ancestors()
        .map(|a| a.join("tests/interop"))
        .find(|d| d.join("package.json").is_file())
        .unwrap_or_else(|| panic!("no tests/interop/package.json above {}", manifest.display()));
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "`node` is not runnable ({node:?}): the interop tests need Node.js 20 on the PATH"
    );
    for package in [
        "grenache-grape",
        "grenache-nodejs-ws",
        "grenache-nodejs-http",
        "grenache-nodejs-link",
    ] {
        assert!(
            dir.join("node_modules").join(package).is_dir(),
            "{}/node_modules/{package} is missing: run `npm ci --prefix tests/interop` first",
            dir.display()
        );
    }
    dir
}

/// A free TCP port, never handed out before in this process.
///
/// The port is released before returning (the caller gives it to a child process), so
/// another process may take it in between: a tiny race. Within one test process there is
/// none: two binds to port 0 in a row can get the same port once the first is closed (it
/// happened: two grapes given one API port), so every port handed out is remembered.
///
/// The port is free on every address (bound on `[::]`, IPv4 mapped in), as a grape's API
/// binds it: a port free on 127.0.0.1 alone may be held on 127.0.0.2 by a hostile test's
/// connections, and then a grape cannot listen on it.
pub fn free_tcp_port() -> u16 {
    unused_port(|| {
        std::net::TcpListener::bind("[::]:0")
            .or_else(|_| std::net::TcpListener::bind("0.0.0.0:0"))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
    })
}

/// A free UDP port on every IPv4 address (a grape's DHT socket binds 0.0.0.0), never handed
/// out before in this process (as [`free_tcp_port`]).
pub fn free_udp_port() -> u16 {
    unused_port(|| {
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
    })
}

/// The first port `bind` gives that no earlier call handed out (TCP and UDP alike).
fn unused_port(bind: impl Fn() -> std::io::Result<u16>) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = bind().expect("binding a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!(
        "no new free port in 1000 binds ({} handed out)",
        given.len()
    );
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.what);
    }
}

/// Starts `node <script>` from tests/interop with `env`; its stdout is discarded, its
/// stderr shown with the test's output.
pub fn spawn_node(script: &str, env: &[(&str, String)]) -> Proc {
    let dir = interop_dir();
    let mut command = Command::new("node");
    command
        .arg(dir.join(script))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
    Proc {
        child,
        what: format!("node {script} {env:?}"),
    }
}

/// Runs `node <script>` to completion (at most `limit`) and returns its stdout.
pub async fn run_node(script: &str, env: &[(&str, String)], limit: Duration) -> String {
    let dir = interop_dir();
    run(
        std::path::Path::new("node"),
        &[dir.join(script).display().to_string()],
        env,
        limit,
    )
    .await
}

/// Starts `program args…` with `env`, killed when the guard drops.
pub fn spawn(program: &std::path::Path, args: &[String], env: &[(&str, String)]) -> Proc {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    Proc {
        child,
        what: format!("{} {args:?}", program.display()),
    }
}

/// Runs `program args…` to completion (at most `limit`, killed past it) and returns its
/// stdout; a failing exit status fails the test.
pub async fn run(
    program: &std::path::Path,
    args: &[String],
    env: &[(&str, String)],
    limit: Duration,
) -> String {
    let script = format!("{} {args:?}", program.display());
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} {env:?} did not finish within {limit:?}"))
        .expect("node output");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{script} {env:?} failed ({}): {stdout}",
        output.status
    );
    stdout
}

/// Runs `client.js` and returns its `{"err":…,"data":…}` line.
pub async fn node_client(env: &[(&str, String)]) -> serde_json::Value {
    let out = run_node("client.js", env, Duration::from_secs(30)).await;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("client.js printed {out:?}: {e}"))
}

/// Two Node grapes bootstrapped to each other, as in the tutorial.
pub struct Grapes {
    /// API URL of the first grape.
    pub a: String,
    /// API URL of the second grape.
    pub b: String,
    _procs: (Proc, Proc),
}

/// Starts two grapes on free ports and waits (at most 20 s) until both answer.
pub async fn start_grapes() -> Grapes {
    let dir = interop_dir();
    let grape = dir.join("node_modules/grenache-grape/bin/grape.js");
    let (dp1, dp2) = (free_udp_port(), free_udp_port());
    let (aph1, aph2) = (free_tcp_port(), free_tcp_port());
    let start = |dp: u16, aph: u16, bn: u16| {
        let child = Command::new("node")
            .arg(&grape)
            .args(["--dp", &dp.to_string(), "--aph", &aph.to_string()])
            .args(["--bn", &format!("127.0.0.1:{bn}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start grape: {e}"));
        Proc {
            child,
            what: format!("grape --dp {dp} --aph {aph}"),
        }
    };
    let procs = (start(dp1, aph1, dp2), start(dp2, aph2, dp1));
    let grapes = Grapes {
        a: format!("http://127.0.0.1:{aph1}"),
        b: format!("http://127.0.0.1:{aph2}"),
        _procs: procs,
    };
    for url in [&grapes.a, &grapes.b] {
        let link = quick_link(url);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match link.lookup("grape_readiness_probe").await {
                Err(grenache_tokio::LinkError::LookupEmpty) => break,
                other => assert!(
                    Instant::now() < deadline,
                    "grape {url} not answering after 20 s: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    grapes
}

/// A Link with short timeouts and no cache, for the tests' own probes.
pub fn quick_link(url: &str) -> Link {
    let mut config = LinkConfig::new(url);
    config.request_timeout = Duration::from_millis(500);
    config.retries = 1;
    config.lookup_cache_max_age = Duration::ZERO;
    Link::new(config).expect("link")
}

/// Waits (at most `limit`) until looking `name` up through `grape` finds a peer on `port`.
pub async fn wait_visible(grape: &str, name: &str, port: u16, limit: Duration) {
    let link = quick_link(grape);
    let deadline = Instant::now() + limit;
    let suffix = format!(":{port}");
    loop {
        let found = link.lookup(name).await;
        if let Ok(peers) = &found {
            if peers.iter().any(|p| p.ends_with(&suffix)) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} on port {port} not visible through {grape} after {limit:?}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
