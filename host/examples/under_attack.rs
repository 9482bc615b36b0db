//! One hostile host against real grapes and a real worker, at full speed, default settings:
//! what an honest client still gets. The figures of docs/BENCHMARKS.md ("Under attack");
//! `ci/bench-attack.sh` builds the binaries and runs it.
//!
//! ```text
//! under_attack [SCENARIO ...]     (every scenario when none is named)
//!   conn-flood      idle connections, slowloris heads and 1 byte/s bodies against a grape's
//!                   API; honest /lookups through it: success and latency
//!   registry-flood  100k announce_peer (one name and many names) and 10k BEP44 puts against
//!                   two grapes; is the honest worker still returned, the honest item still got
//!   tid-guess       forged get_peers answers for every 16-bit transaction id, sent from the IP
//!                   of the grape being queried; poisoned lookups out of 1000
//!   sybil           40 nodes with ids next to a name, from one IP; honest lookups that still
//!                   find the honest worker
//!   amplification   get_peers without an id at full speed; bytes the grape sends back to it
//!   worker-memory   10k connections with unfinished 1 MiB WebSocket fragments against a worker;
//!                   its peak RSS, and whether an honest request is still answered
//! ```
//!
//! The honest side is on 127.0.0.1; the attacker on 127.0.0.2 and up (loopback too), except in
//! tid-guess, where sharing the queried grape's IP is the attack. Needs the `grape` binary and
//! the `fib_server` example (`GRAPE_BIN`, `WORKER_BIN`; default `target/release/...`) and a
//! high open-files limit (`ulimit -n 65536`) for the connection floods.
//!
//! Every loop here is bounded in count and time; every child process is killed on exit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grenache_core::addr::PeerAddr;
use grenache_core::dht::id::NodeId;
use grenache_core::wire::krpc::{self, Message, Query};
use grenache_tokio::{rpc::ws::PeerRpcClient, Link, LinkConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::process::{Child, Command};

type Error = Box<dyn std::error::Error + Send + Sync>;

const HONEST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::main]
async fn main() -> Result<(), Error> {
    let all = [
        "conn-flood",
        "registry-flood",
        "tid-guess",
        "sybil",
        "amplification",
        "worker-memory",
    ];
    let mut chosen: Vec<String> = std::env::args().skip(1).collect();
    if chosen.is_empty() {
        chosen = all.iter().map(|s| s.to_string()).collect();
    }
    for name in &chosen {
        println!("\n== {name}");
        let result = match name.as_str() {
            "conn-flood" => conn_flood().await,
            "registry-flood" => registry_flood().await,
            "tid-guess" => tid_guess().await,
            "sybil" => sybil().await,
            "amplification" => amplification().await,
            "worker-memory" => worker_memory().await,
            other => Err(format!("unknown scenario {other:?} (one of {all:?})").into()),
        };
        if let Err(e) = result {
            println!("{name}: FAILED to run: {e}");
            std::process::exit(1);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Processes and ports

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn bin(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn free_port() -> Result<u16, Error> {
    // A port free for both TCP and UDP on loopback at this moment, never handed out twice in
    // this process (two binds to port 0 in a row may return the same port).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        // The grape's API listens on [::] (IPv4 mapped in): the port must be free on every
        // address, not only on 127.0.0.1 (the floods' own sockets take ports too).
        let tcp = std::net::TcpListener::bind("[::]:0")?;
        let port = tcp.local_addr()?.port();
        let mut given = GIVEN.lock().map_err(|_| "port list poisoned")?;
        if !given.contains(&port) && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    Err("no free port".into())
}

struct GrapeProc {
    api: SocketAddr,
    dp: u16,
    _proc: Proc,
}

async fn start_grape(bootstrap: &[u16], extra: &[&str]) -> Result<GrapeProc, Error> {
    let (dp, aph) = (free_port()?, free_port()?);
    let bn: Vec<String> = bootstrap.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut cmd = Command::new(bin("GRAPE_BIN", "target/release/grape"));
    cmd.args(["--dp", &dp.to_string(), "--aph", &aph.to_string()]);
    cmd.args(["--bn", &bn.join(",")]);
    cmd.args(extra);
    cmd.stdout(Stdio::null())
        .stderr(child_stderr())
        .kill_on_drop(true);
    let proc = Proc(cmd.spawn()?);
    let api = SocketAddr::from((HONEST, aph));
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(api, None, "lookup", &json!("warm_up")).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("grape on {api} did not start").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(GrapeProc {
        api,
        dp,
        _proc: proc,
    })
}

/// Two grapes bootstrapped to each other, with `extra` flags on both.
async fn pair(extra: &[&str]) -> Result<(GrapeProc, GrapeProc), Error> {
    let dp1 = free_port()?;
    let g2 = start_grape(&[dp1], extra).await?;
    // The first grape on the port reserved for it, bootstrapped to the second.
    let aph = free_port()?;
    let bn = format!("127.0.0.1:{}", g2.dp);
    let mut cmd = Command::new(bin("GRAPE_BIN", "target/release/grape"));
    cmd.args([
        "--dp",
        &dp1.to_string(),
        "--aph",
        &aph.to_string(),
        "--bn",
        &bn,
    ]);
    cmd.args(extra);
    cmd.stdout(Stdio::null())
        .stderr(child_stderr())
        .kill_on_drop(true);
    let g1 = GrapeProc {
        api: SocketAddr::from((HONEST, aph)),
        dp: dp1,
        _proc: Proc(cmd.spawn()?),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(g1.api, None, "lookup", &json!("warm_up"))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("the first grape did not start".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((g1, g2))
}

// ---------------------------------------------------------------------------------------------
// HTTP, as a Link speaks to a grape

async fn connect_from(from: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(to).await
}

/// One `POST /<endpoint>` `{"data": data}` on its own connection, within 5 s.
async fn post(
    api: SocketAddr,
    from: Option<IpAddr>,
    endpoint: &str,
    data: &Value,
) -> Result<(u16, Value), Error> {
    let attempt = async {
        let mut stream = connect_from(from, api).await?;
        let body = json!({ "data": data, "rid": "under-attack" }).to_string();
        let request = format!(
            "POST /{endpoint} HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let value = serde_json::from_str(body).unwrap_or(Value::Null);
    Ok((status, value))
}

async fn lookup(api: SocketAddr, name: &str) -> Result<Vec<String>, Error> {
    let (status, value) = post(api, Some(HONEST.into()), "lookup", &json!(name)).await?;
    if status != 200 {
        return Err(format!("lookup answered {status}: {value}").into());
    }
    Ok(value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Announces `name` on `port` through `api` until a lookup through `check` sees it (10 s).
async fn announce_visible(
    api: SocketAddr,
    check: SocketAddr,
    name: &str,
    port: u16,
) -> Result<(), Error> {
    let peer = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = post(api, Some(HONEST.into()), "announce", &json!([name, port])).await;
        if lookup(check, name).await.is_ok_and(|p| p.contains(&peer)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{name} never became visible").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

struct Latencies(Vec<Duration>);

impl Latencies {
    fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v.get(i).copied().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0))
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Up to `count` honest lookups of `name` through `api`, each on a new connection (the worst
/// case for a flooded accept queue) within 2 s, for at most 60 s in all: (attempts,
/// successes, latencies of the successes).
async fn honest_lookups(
    api: SocketAddr,
    name: &str,
    expect: &str,
    count: usize,
) -> (usize, usize, Latencies) {
    let mut ok = 0;
    let mut attempts = 0;
    let mut lat = Vec::with_capacity(count);
    let started = Instant::now();
    while attempts < count && started.elapsed() < Duration::from_secs(60) {
        attempts += 1;
        let t = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(2), lookup(api, name)).await;
        if answer.is_ok_and(|a| a.is_ok_and(|p| p.iter().any(|x| x == expect))) {
            ok += 1;
            lat.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (attempts, ok, Latencies(lat))
}

/// "found/attempts = x %; latencies" of [`honest_lookups`].
fn honest_summary(attempts: usize, ok: usize, lat: &Latencies) -> String {
    format!(
        "{ok}/{attempts} = {:.1} % found the worker; {}",
        100.0 * ok as f64 / attempts.max(1) as f64,
        lat.summary()
    )
}

// ---------------------------------------------------------------------------------------------
// conn-flood

async fn conn_flood() -> Result<(), Error> {
    let (g1, g2) = pair(&[]).await?;
    announce_visible(g1.api, g2.api, "honest_svc", 1337).await?;
    let target = g2.api;
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Idle connections, reopened as soon as the server closes them.
    for _ in 0..4000 {
        let (stop, open) = (Arc::clone(&stop), Arc::clone(&open));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match connect_from(Some(ATTACKER.into()), target).await {
                    Ok(mut s) => {
                        open.fetch_add(1, Ordering::Relaxed);
                        let mut b = [0u8; 64];
                        let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut b)).await;
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }
    // Slowloris heads and 1 byte/s bodies.
    for i in 0..400 {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect_from(Some(ATTACKER.into()), target).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let head: &[u8] = if i % 2 == 0 {
                    b"POST /lookup HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                } else {
                    b"POST /lookup HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"data\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                };
                let split = if i % 2 == 0 { 10 } else { head.len() };
                let (first, rest) = head.split_at(split);
                if s.write_all(first).await.is_err() {
                    continue;
                }
                for byte in rest.iter().chain(std::iter::repeat(&b'a')).take(2000) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if s.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "attacker {ATTACKER}: 4000 idle (reconnecting) + 200 slow-head + 200 slow-body connections; {} open after 3 s",
        open.load(Ordering::Relaxed)
    );
    let (attempts, ok, lat) = honest_lookups(target, "honest_svc", "127.0.0.1:1337", 1000).await;
    println!(
        "honest /lookup through the attacked grape (new connection each): {}",
        honest_summary(attempts, ok, &lat)
    );
    println!(
        "attacker connections open at the end: {}",
        open.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// KRPC from the attacker

/// A KRPC socket bound to `ip`, with a helper to ask one query and wait for its answer.
struct Krpc {
    socket: UdpSocket,
    id: NodeId,
    tid: u16,
}

impl Krpc {
    async fn bind(ip: Ipv4Addr, id: NodeId) -> Result<Krpc, Error> {
        Ok(Krpc {
            socket: UdpSocket::bind((ip, 0)).await?,
            id,
            tid: 0,
        })
    }

    fn next_tid(&mut self) -> [u8; 2] {
        self.tid = self.tid.wrapping_add(1);
        self.tid.to_be_bytes()
    }

    /// Sends `query` (encoded by `encode` with a fresh tid) to `to` and returns the raw answer
    /// with the same tid, within 1 s.
    async fn ask(
        &mut self,
        to: SocketAddr,
        encode: impl Fn(&mut [u8], &[u8], &NodeId) -> Result<usize, grenache_core::wire::BufferFull>,
    ) -> Result<Vec<u8>, Error> {
        let t = self.next_tid();
        let mut buf = [0u8; 1500];
        let n = encode(&mut buf, &t, &self.id).map_err(|_| "encode")?;
        self.socket.send_to(&buf[..n], to).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            let mut rx = [0u8; 1500];
            let (n, _) = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut rx))
                .await
                .map_err(|_| "no answer")??;
            if let Ok(Message::Response { t: rt, .. }) = krpc::parse(&rx[..n]) {
                if rt == t {
                    return Ok(rx[..n].to_vec());
                }
            }
        }
    }

    /// The announce token a grape gives this socket's IP (`get_peers`).
    async fn token(&mut self, to: SocketAddr) -> Result<Vec<u8>, Error> {
        let raw = self
            .ask(to, |b, t, id| krpc::encode_get_peers(b, t, id, b"any_name"))
            .await?;
        match krpc::parse(&raw) {
            Ok(Message::Response { r, .. }) => Ok(r
                .token
                .ok_or_else(|| format!("no token in {:?}", String::from_utf8_lossy(&raw)))?
                .to_vec()),
            _ => Err("bad get_peers answer".into()),
        }
    }
}

fn random_id() -> NodeId {
    let mut id = [0u8; 20];
    getrandom(&mut id);
    NodeId(id)
}

fn getrandom(buf: &mut [u8]) {
    // Not secret: ids and names for the attack. A time-seeded xorshift is enough.
    let mut x = Instant::now().elapsed().as_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
        | 1;
    for b in buf {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

fn udp(port: u16) -> SocketAddr {
    SocketAddr::from((HONEST, port))
}

// ---------------------------------------------------------------------------------------------
// registry-flood

async fn registry_flood() -> Result<(), Error> {
    let (g1, g2) = pair(&[]).await?;
    announce_visible(g1.api, g2.api, "honest_svc", 1337).await?;
    let (status, key) = post(
        g1.api,
        Some(HONEST.into()),
        "put",
        &json!({"v": "honest item"}),
    )
    .await?;
    let key = key
        .as_str()
        .filter(|_| status == 200)
        .ok_or("honest put failed")?
        .to_string();
    let mut sent = 0u64;
    let started = Instant::now();
    for g in [&g1, &g2] {
        // A socket per grape, so that the flood's answers never meet the next token request.
        let mut k = Krpc::bind(ATTACKER, random_id()).await?;
        let to = udp(g.dp);
        let token = k.token(to).await?;
        let mut buf = [0u8; 1500];
        // 100k announce_peer: half for the honest name (other ports), half for new names.
        for i in 0..50_000u32 {
            let port = 10_000 + (i % 50_000) as u16;
            let t = (i as u16).to_be_bytes();
            let n =
                krpc::encode_announce_peer(&mut buf, &t, &k.id, b"honest_svc", port, false, &token)
                    .map_err(|_| "encode")?;
            k.socket.send_to(&buf[..n], to).await?;
            let name = format!("flood_{i}");
            let n = krpc::encode_announce_peer(
                &mut buf,
                &t,
                &k.id,
                name.as_bytes(),
                7000,
                false,
                &token,
            )
            .map_err(|_| "encode")?;
            k.socket.send_to(&buf[..n], to).await?;
            sent += 2;
            if i.is_multiple_of(256) {
                // Let the grape's socket buffer drain: a flood the kernel drops proves nothing.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // 10k BEP44 puts of distinct values.
        for i in 0..10_000u32 {
            let value = format!("flood value {i:08}");
            let v = format!("{}:{value}", value.len());
            let t = (i as u16).to_be_bytes();
            let n = krpc::encode_put_immutable(&mut buf, &t, &k.id, &token, v.as_bytes())
                .map_err(|_| "encode")?;
            k.socket.send_to(&buf[..n], to).await?;
            sent += 1;
            if i.is_multiple_of(256) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    println!(
        "attacker {ATTACKER}: {sent} datagrams (2 x 100k announce_peer, 2 x 10k put) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (label, g) in [("grape 1", &g1), ("grape 2", &g2)] {
        let peers = lookup(g.api, "honest_svc").await?;
        let honest = peers.iter().any(|p| p == "127.0.0.1:1337");
        let attacker = peers.iter().filter(|p| p.starts_with("127.0.0.2:")).count();
        println!(
            "{label}: /lookup honest_svc returns the honest worker: {honest} ({} peers, {attacker} of the attacker's)",
            peers.len()
        );
        let (status, item) = post(g.api, Some(HONEST.into()), "get", &json!(key)).await?;
        let got = status == 200 && item["v"] == json!("honest item");
        println!(
            "{label}: /get of the honest item: {}",
            if got { "found" } else { "LOST" }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// tid-guess

async fn tid_guess() -> Result<(), Error> {
    // Lookups through grape 1 always traverse (no answer reuse), so every one of them asks
    // grape 2, whose answers the attacker forges from grape 2's own IP.
    let (g1, g2) = pair(&["--lookup_reuse", "0"]).await?;
    announce_visible(g2.api, g1.api, "tid_svc", 1337).await?;
    let mut probe = Krpc::bind(HONEST, random_id()).await?;
    let raw = probe.ask(udp(g2.dp), krpc::encode_ping).await?;
    let g2_id = match krpc::parse(&raw) {
        Ok(Message::Response { r, .. }) => r.id.ok_or("no id")?,
        _ => return Err("bad ping answer".into()),
    };
    let forger = UdpSocket::bind((HONEST, 0)).await?;
    let poison = PeerAddr::new([127, 0, 0, 1], 6666);
    let stop = Arc::new(AtomicBool::new(false));
    let forged = Arc::new(AtomicU64::new(0));
    let to = udp(g1.dp);
    let task = {
        let (stop, forged) = (Arc::clone(&stop), Arc::clone(&forged));
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let mut tid: u16 = 0;
            while !stop.load(Ordering::Relaxed) {
                tid = tid.wrapping_add(1);
                let t = tid.to_be_bytes();
                let Ok(n) =
                    krpc::encode_response_values(&mut buf, &t, &g2_id, b"forgedtoken", [poison])
                else {
                    return;
                };
                if forger.send_to(&buf[..n], to).await.is_ok() {
                    forged.fetch_add(1, Ordering::Relaxed);
                }
                if tid.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut poisoned = 0;
    let mut found = 0;
    let lookups = 1000;
    for _ in 0..lookups {
        if let Ok(peers) = lookup(g1.api, "tid_svc").await {
            if peers.iter().any(|p| p == "127.0.0.1:6666") {
                poisoned += 1;
            }
            if peers.iter().any(|p| p == "127.0.0.1:1337") {
                found += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = task.await;
    println!(
        "forged answers sent from {HONEST} (grape 2's IP), every 16-bit tid in turn: {}",
        forged.load(Ordering::Relaxed)
    );
    println!("honest lookups: {lookups}; poisoned: {poisoned}; found the honest worker: {found}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// sybil

async fn sybil() -> Result<(), Error> {
    let (g1, g2) = pair(&["--lookup_reuse", "0"]).await?;
    let name = b"sybil_target_service"; // 20 bytes: ids equal to it but the last byte
    let stop = Arc::new(AtomicBool::new(false));
    let mut sockets = Vec::new();
    for i in 0..40u8 {
        let mut id = *name;
        id[19] ^= i + 1;
        let socket = Arc::new(UdpSocket::bind((ATTACKER, 0)).await?);
        sockets.push((NodeId(id), socket));
    }
    let nodes: Vec<(NodeId, PeerAddr)> = sockets
        .iter()
        .filter_map(|(id, s)| {
            let a = s.local_addr().ok()?;
            Some((*id, PeerAddr::new(ATTACKER.octets(), a.port())))
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, (id, socket)) in sockets.iter().enumerate() {
        let (id, socket, stop) = (*id, Arc::clone(socket), Arc::clone(&stop));
        let others: Vec<(NodeId, PeerAddr)> =
            nodes.iter().cycle().skip(i + 1).take(8).copied().collect();
        let grapes = [udp(g1.dp), udp(g2.dp)];
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut rx = [0u8; 1500];
            let mut next_hello = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if tokio::time::Instant::now() >= next_hello {
                    // Introduce ourselves to both grapes (they learn us from our queries).
                    for g in grapes {
                        if let Ok(n) = krpc::encode_find_node(&mut buf, b"hi", &id, id.as_bytes()) {
                            let _ = socket.send_to(&buf[..n], g).await;
                        }
                    }
                    next_hello += Duration::from_secs(1);
                }
                let Ok(Ok((n, from))) =
                    tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut rx))
                        .await
                else {
                    continue;
                };
                let Ok(Message::Query { t, query, .. }) = krpc::parse(&rx[..n]) else {
                    continue;
                };
                // Answer everything as a live node would, but never with a value: the honest
                // worker is what a Sybil hides.
                let written = match query {
                    Query::Ping | Query::AnnouncePeer(_) | Query::Put(_) => {
                        krpc::encode_response_id(&mut buf, t, &id)
                    }
                    _ => krpc::encode_response_nodes_token(
                        &mut buf,
                        t,
                        &id,
                        others.iter().copied(),
                        b"sybiltoken",
                    ),
                };
                if let Ok(n) = written {
                    let _ = socket.send_to(&buf[..n], from).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let name = std::str::from_utf8(name)?;
    // The worker announces through grape 1 (as a worker does, again and again).
    let announce = {
        let (stop, api) = (Arc::clone(&stop), g1.api);
        let name = name.to_string();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = post(api, Some(HONEST.into()), "announce", &json!([name, 1337])).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (attempts, ok, lat) = honest_lookups(g2.api, name, "127.0.0.1:1337", 100).await;
    println!("40 Sybil nodes on {ATTACKER} with ids next to {name:?}");
    println!(
        "honest lookups through grape 2: {}",
        honest_summary(attempts, ok, &lat)
    );
    stop.store(true, Ordering::Relaxed);
    announce.abort();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// amplification

async fn amplification() -> Result<(), Error> {
    let g = start_grape(&[], &[]).await?;
    let socket = Arc::new(UdpSocket::bind((ATTACKER, 0)).await?);
    // 47 bytes: get_peers without an id.
    let query = b"d1:ad9:info_hash5:abcdee1:q9:get_peers1:t2:aa1:y1:qe";
    let to = udp(g.dp);
    let received = Arc::new(AtomicU64::new(0));
    let rx_task = {
        let (socket, received) = (Arc::clone(&socket), Arc::clone(&received));
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = socket.recv_from(&mut buf).await {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let seconds = 5;
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..64 {
            if socket.send_to(query, to).await.is_ok() {
                sent += query.len() as u64;
            }
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx_task.abort();
    let got = received.load(Ordering::Relaxed);
    println!(
        "attacker sent {:.1} KB/s of {}-byte get_peers; the grape sent back {:.1} KB/s (x{:.3})",
        sent as f64 / 1000.0 / seconds as f64,
        query.len(),
        got as f64 / 1000.0 / seconds as f64,
        got as f64 / sent.max(1) as f64
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// worker-memory

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn worker_memory() -> Result<(), Error> {
    // Two grapes: an announce needs another node to store it.
    let (g, _g2) = pair(&[]).await?;
    let port = free_port()?;
    let mut cmd = Command::new(bin("WORKER_BIN", "target/release/examples/fib_server"));
    cmd.args([format!("http://{}", g.api), port.to_string()]);
    cmd.stdout(Stdio::null())
        .stderr(child_stderr())
        .kill_on_drop(true);
    let worker = Proc(cmd.spawn()?);
    let pid = worker.0.id().ok_or("worker has no pid")?;
    let link = Link::new(LinkConfig::new(format!("http://{}", g.api)))?;
    let client = PeerRpcClient::new(link);
    let deadline = Instant::now() + Duration::from_secs(15);
    while client
        .request(
            "fibonacci_worker",
            json!({"number": 10}),
            Duration::from_secs(2),
        )
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err("the worker never answered".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = rss_kib(pid, "VmRSS:").unwrap_or(0);
    let target = SocketAddr::from((HONEST, port));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // 10k connections from 40 attacker addresses, each an upgraded WebSocket with an
    // unfinished 1 MiB fragment (FIN=0), held open.
    let per_ip = 250;
    let payload: Arc<[u8]> = vec![b'a'; 1 << 20].into();
    for host in 0..40u8 {
        for _ in 0..per_ip {
            let (opened, payload) = (Arc::clone(&opened), Arc::clone(&payload));
            let ip = Ipv4Addr::new(127, 0, 1, 2 + host);
            tasks.push(tokio::spawn(async move {
                let Ok(mut s) = connect_from(Some(ip.into()), target).await else {
                    return;
                };
                let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
                if s.write_all(upgrade.as_bytes()).await.is_err() {
                    return;
                }
                let mut head = [0u8; 512];
                if !matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut head)).await, Ok(Ok(n)) if n > 0) {
                    return;
                }
                opened.fetch_add(1, Ordering::Relaxed);
                // A masked text frame, FIN=0, with a 1 MiB payload (mask 0: the payload is
                // sent as it is, from one buffer shared by every connection).
                let mut frame = vec![0x01u8, 0x80 | 127];
                frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
                frame.extend_from_slice(&[0, 0, 0, 0]);
                if s.write_all(&frame).await.is_err() {
                    return;
                }
                let _ = s.write_all(&payload).await;
                let mut b = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(120), s.read(&mut b)).await;
            }));
        }
    }
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        peak = peak.max(rss_kib(pid, "VmRSS:").unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let honest = client
        .request(
            "fibonacci_worker",
            json!({"number": 10}),
            Duration::from_secs(5),
        )
        .await;
    let hwm = rss_kib(pid, "VmHWM:").unwrap_or(0);
    println!(
        "attacker: {} of {} WebSocket connections upgraded, each with an unfinished 1 MiB fragment (from 40 addresses)",
        opened.load(Ordering::Relaxed),
        40 * per_ip
    );
    println!(
        "worker RSS: {:.1} MiB before, {:.1} MiB peak (VmHWM {:.1} MiB)",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "honest request during the attack: {:?}",
        honest.map_err(|e| e.to_string())
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Children's stderr: shown with `UNDER_ATTACK_LOGS=1`, else dropped.
fn child_stderr() -> Stdio {
    if std::env::var_os("UNDER_ATTACK_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}
