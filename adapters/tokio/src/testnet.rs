//! A network of real grapes on loopback, for the tests of your own workers and clients.
//!
//! [`Testnet::start`]`(n)` starts `n` grapes in this process (the grape of the `grape` binary,
//! each on free ports of 127.0.0.1), bootstraps them from each other and returns once they
//! form one DHT: an announce through any grape is found by a lookup through any other.
//! [`Testnet::link`] gives a [`Link`] to one of them, [`Testnet::api_urls`] and
//! [`Testnet::dht_addrs`] their addresses (for a Node grape's `--bn` or a client of your own).
//! Dropping the testnet stops every grape and frees their ports before `drop` returns;
//! [`Testnet::stop`] does the same without blocking the caller's runtime.
//!
//! ```
//! use std::time::Duration;
//!
//! use grenache_tokio::rpc::ws::{PeerRpcClient, PeerRpcServer};
//! use grenache_tokio::testnet::Testnet;
//! use grenache_tokio::Request;
//! use serde_json::json;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let net = Testnet::start(3).await?;
//!
//!     // The worker announces through grape 0 ...
//!     let worker = PeerRpcServer::builder(net.link(0)?)
//!         .handler(|req: Request| async move {
//!             json!(req.payload["number"].as_u64().unwrap_or_default() * 2)
//!         })
//!         .build();
//!     worker.listen(0).await?;
//!     worker.announce("rpc_test").await?;
//!
//!     // ... and a client that knows only grape 2 finds it.
//!     let client = PeerRpcClient::new(net.link(2)?);
//!     let answer = client
//!         .request("rpc_test", json!({ "number": 21 }), Duration::from_secs(10))
//!         .await?;
//!     assert_eq!(answer, json!(42));
//!
//!     worker.stop();
//!     net.stop().await;
//!     Ok(())
//! }
//! ```
//!
//! # How it runs
//!
//! The grapes' HTTP APIs listen on 127.0.0.1 and are served by a runtime of the testnet's own
//! thread; each DHT node runs on its own thread as in the `grape` binary, its UDP socket bound
//! to 0.0.0.0 as every grape's is (`grape::node::DhtConfig::for_grape`). So the grapes do not depend on the runtime
//! of the test (a current-thread `#[tokio::test]` is fine), and `drop` can wait for them to be
//! gone: a test that ends, or panics, leaves no grape behind to answer the next one.
//!
//! A single grape works, with one difference from a network: it has nobody to announce to, so
//! an announce through it answers `"No nodes to query"` (as a lone Node grape does), although
//! a lookup through it still finds the announce, which it keeps itself. Two grapes or more
//! behave as a deployment does.
//!
//! To be sure the DHT is whole before `start` returns, every grape announces the name
//! [`READY_PROBE`] at its own DHT port until every other grape acknowledges it. Those entries
//! stay in the DHT and expire after the grapes' peer TTL (120 s) like any announce.
//!
//! A testnet has at most [`MAX_SIZE`] grapes (11). All of them share one IP address, and a
//! grape keeps at most 10 nodes of one IP in a routing-table bucket (a defence against one
//! host filling a name's neighbourhood, `NodeConfig::max_per_ip_in_bucket`): up to 11 grapes,
//! each one's table holds all the others whatever their ids, so every announce reaches every
//! grape. Beyond that some grapes may not know each other, and an announce can miss some.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use grenache_core::dht::node::NodeConfig;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Uri;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::grape::{BootstrapNode, Grape, GrapeConfig, StartError};
use crate::http_client::{HttpClient, HttpFailure};
use crate::link::{Link, LinkConfig, LinkError};
use crate::new_rid;

/// The name every grape announces while [`Testnet::start`] waits for the DHT to be whole.
pub const READY_PROBE: &str = "grenache-testnet:ready";

/// The most grapes a [`Testnet`] runs: one more than a grape keeps of one IP address in a
/// routing-table bucket, so that each one's table can hold all the others (module docs).
pub const MAX_SIZE: usize = NodeConfig::DEFAULT.max_per_ip_in_bucket + 1;

/// How long [`Testnet::start`] waits for the grapes to find each other. On loopback it takes
/// a few round trips; the bound only turns a broken network into an error instead of a hang.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Pause between two rounds of probe announces that were not yet acknowledged by everyone.
const PROBE_RETRY: Duration = Duration::from_millis(50);

/// How many earlier grapes a new grape bootstraps from. A grape queries its bootstrap nodes
/// in every lookup and announce (on top of the closest nodes), so with every earlier grape
/// listed the last grape of a full testnet would query all ten each time; a few are enough
/// to join, the traversals find the rest.
const BOOTSTRAP_FANOUT: usize = 4;

/// Why a [`Testnet`] could not start, or a call on it failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestnetError {
    /// [`Testnet::start`] was asked for no grape at all.
    Empty,
    /// [`Testnet::start`] was asked for more than [`MAX_SIZE`] grapes.
    TooLarge {
        /// The size asked for.
        size: usize,
    },
    /// A grape could not start.
    Grape {
        /// Which one (0-based).
        index: usize,
        /// Why.
        error: StartError,
    },
    /// The grapes did not form one DHT within [`READY_TIMEOUT`].
    NotReady {
        /// The first grape whose announce was not acknowledged by enough others.
        index: usize,
        /// What its last announce answered: the number of grapes that acknowledged it, or
        /// the grape's error.
        answer: String,
        /// How many acknowledgements a whole network gives.
        expected: usize,
    },
    /// The testnet's thread or its runtime could not be started, or that thread ended early.
    Runtime(io::Error),
    /// [`Testnet::link`] was asked for a grape the testnet does not have.
    NoSuchGrape {
        /// The index asked for.
        index: usize,
        /// The number of grapes.
        size: usize,
    },
    /// The [`Link`] to a grape could not be made.
    Link(LinkError),
}

impl fmt::Display for TestnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestnetError::Empty => f.write_str("a testnet needs at least one grape, not 0"),
            TestnetError::TooLarge { size } => write!(
                f,
                "a testnet has at most {MAX_SIZE} grapes, not {size}: beyond that they share \
                 an IP address with more grapes than a routing-table bucket keeps of one IP"
            ),
            TestnetError::Grape { index, error } => {
                write!(f, "grape {index} of the testnet did not start: {error}")
            }
            TestnetError::NotReady {
                index,
                answer,
                expected,
            } => write!(
                f,
                "the testnet's grapes did not find each other within {} s: an announce \
                 through grape {index} answered {answer}, {expected} acknowledgements expected",
                READY_TIMEOUT.as_secs()
            ),
            TestnetError::Runtime(error) => write!(f, "cannot run the testnet: {error}"),
            TestnetError::NoSuchGrape { index, size } => {
                write!(
                    f,
                    "no grape {index} in a testnet of {size} (0 to {})",
                    size.saturating_sub(1)
                )
            }
            TestnetError::Link(error) => write!(f, "cannot make a Link to the grape: {error}"),
        }
    }
}

impl std::error::Error for TestnetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TestnetError::Grape { error, .. } => Some(error),
            TestnetError::Runtime(error) => Some(error),
            TestnetError::Link(error) => Some(error),
            _ => None,
        }
    }
}

/// The addresses of one running grape.
#[derive(Debug, Clone)]
struct Member {
    url: String,
    dht_addr: SocketAddrV4,
}

/// The thread that serves the grapes, and how to tell it to stop them.
#[derive(Debug)]
struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Asks the thread to stop its grapes; the caller then joins [`Running::thread`].
    fn signal(self) -> std::thread::JoinHandle<()> {
        // An error means the thread is gone already: joining it returns at once.
        let _ = self.stop.send(());
        self.thread
    }
}

/// `n` grapes on loopback forming one DHT; see the [module documentation](self).
#[derive(Debug)]
pub struct Testnet {
    urls: Vec<String>,
    dht_addrs: Vec<SocketAddrV4>,
    running: Option<Running>,
}

impl Testnet {
    /// Starts `size` grapes on free ports of 127.0.0.1, each bootstrapping from the ones
    /// started before it, and returns once an announce through any of them is acknowledged
    /// by the others (at most [`READY_TIMEOUT`]). The grapes run on the testnet's own thread
    /// and runtime, whatever runtime awaits this.
    ///
    /// Fails with [`TestnetError::Empty`] for `size` 0, [`TestnetError::TooLarge`] above
    /// [`MAX_SIZE`], and with the cause when a grape
    /// cannot start or the grapes do not find each other; nothing is left running then.
    pub async fn start(size: usize) -> Result<Testnet, TestnetError> {
        if size == 0 {
            return Err(TestnetError::Empty);
        }
        if size > MAX_SIZE {
            return Err(TestnetError::TooLarge { size });
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("grenache-testnet".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("grenache-testnet")
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(serve(size, ready_tx, stop_rx)),
                    Err(error) => drop(ready_tx.send(Err(TestnetError::Runtime(error)))),
                }
            })
            .map_err(TestnetError::Runtime)?;
        let running = Running {
            stop: stop_tx,
            thread,
        };
        match ready_rx.await {
            Ok(Ok(members)) => Ok(Testnet {
                urls: members.iter().map(|m| m.url.clone()).collect(),
                dht_addrs: members.iter().map(|m| m.dht_addr).collect(),
                running: Some(running),
            }),
            failed => {
                // The thread has stopped whatever it started; wait until it is gone.
                join(running.signal()).await;
                Err(match failed {
                    Ok(Err(error)) => error,
                    _ => TestnetError::Runtime(io::Error::other(
                        "the testnet's thread ended before its grapes were ready",
                    )),
                })
            }
        }
    }

    /// The URL of each grape's HTTP API, in order (`http://127.0.0.1:<port>`): what a
    /// [`LinkConfig`] or a Node `Link({ grape })` takes.
    pub fn api_urls(&self) -> &[String] {
        &self.urls
    }

    /// The UDP address of each grape's DHT node, in order: bootstrap nodes for another grape
    /// joining the testnet (`--bn 127.0.0.1:<port>`).
    pub fn dht_addrs(&self) -> &[SocketAddrV4] {
        &self.dht_addrs
    }

    /// A new [`Link`] to grape `index` (0-based), with the default [`LinkConfig`]; each call
    /// makes a new one, with its own lookup cache.
    pub fn link(&self, index: usize) -> Result<Link, TestnetError> {
        let url = self.urls.get(index).ok_or(TestnetError::NoSuchGrape {
            index,
            size: self.urls.len(),
        })?;
        Link::new(LinkConfig::new(url.clone())).map_err(TestnetError::Link)
    }

    /// Stops every grape and returns once they are gone, their ports free. Requests in
    /// flight get up to the grapes' shutdown grace (5 s) to finish; idle connections are
    /// closed at once. Dropping the testnet does the same but blocks the dropping thread.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            join(running.signal()).await;
        }
    }
}

impl Drop for Testnet {
    /// Stops every grape and waits for them: when `drop` returns, their threads have ended
    /// and their ports are free. It blocks the dropping thread meanwhile (usually a few
    /// milliseconds; up to the grapes' 5 s shutdown grace when a request to them is still in
    /// flight), which is why [`Testnet::stop`] exists.
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // The grapes run on the testnet's own thread, so blocking here cannot keep them
            // from stopping, whatever runtime the caller is on.
            let _ = running.signal().join();
        }
    }
}

/// Joins the testnet's thread without blocking the caller's runtime.
async fn join(thread: std::thread::JoinHandle<()>) {
    // The thread ends right after stopping its grapes; spawn_blocking only keeps the wait off
    // the runtime's own threads. If the runtime refuses (it is shutting down), joining here
    // is still correct, only blocking.
    let handle = tokio::runtime::Handle::try_current();
    match handle {
        Ok(handle) => {
            let _ = handle.spawn_blocking(move || thread.join()).await;
        }
        Err(_) => {
            let _ = thread.join();
        }
    }
}

/// The testnet's thread: starts the grapes, reports them ready (or why not), then serves them
/// until told to stop (or until the [`Testnet`] is gone), and stops them.
async fn serve(
    size: usize,
    ready: oneshot::Sender<Result<Vec<Member>, TestnetError>>,
    stop: oneshot::Receiver<()>,
) {
    let mut grapes = Vec::with_capacity(size);
    let started = match start_grapes(size, &mut grapes).await {
        Ok(()) => wait_until_whole(&grapes).await,
        Err(error) => Err(error),
    };
    let members = started.map(|()| {
        grapes
            .iter()
            .map(|grape| Member {
                url: grape.url(),
                dht_addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, grape.dht_port()),
            })
            .collect()
    });
    let serving = members.is_ok();
    // A failed send means the caller gave up waiting (its future was dropped): stop at once.
    if ready.send(members).is_ok() && serving {
        // Resolves on `Testnet::stop` or drop, and also if the handle vanished otherwise.
        let _ = stop.await;
    }
    join_all(grapes.into_iter().map(Grape::stop)).await;
}

/// Starts the grapes one after the other into `grapes`, each bootstrapping from the last
/// [`BOOTSTRAP_FANOUT`] started before it.
async fn start_grapes(size: usize, grapes: &mut Vec<Grape>) -> Result<(), TestnetError> {
    for index in 0..size {
        let mut config = GrapeConfig::new(0, 0);
        // The API on loopback only; also the host a grape stores for its own announces.
        config.bind = Some(Ipv4Addr::LOCALHOST.to_string());
        config.bootstrap = grapes
            .iter()
            .rev()
            .take(BOOTSTRAP_FANOUT)
            .map(|grape| BootstrapNode {
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: grape.dht_port(),
            })
            .collect();
        let grape = Grape::start(config)
            .await
            .map_err(|error| TestnetError::Grape { index, error })?;
        grapes.push(grape);
    }
    Ok(())
}

/// Waits until every grape's announce of [`READY_PROBE`] is acknowledged by all the other
/// grapes: then every grape has met the others, and a lookup through any of them reaches
/// every grape, so the ones that hold any announce.
async fn wait_until_whole(grapes: &[Grape]) -> Result<(), TestnetError> {
    // A lone grape has nobody to meet.
    let expected = grapes.len().saturating_sub(1);
    if expected == 0 {
        return Ok(());
    }
    let http = HttpClient::new(Duration::from_secs(1));
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pending: Vec<usize> = (0..grapes.len()).collect();
    loop {
        let mut still = Vec::new();
        let mut last = None;
        for &index in &pending {
            let Some(grape) = grapes.get(index) else {
                continue;
            };
            let answer = announce_probe(&http, grape, deadline).await;
            if answer.as_ref().is_ok_and(|&acks| acks >= expected) {
                continue;
            }
            still.push(index);
            if last.is_none() {
                last = Some((index, answer));
            }
        }
        pending = still;
        let Some((index, answer)) = last else {
            return Ok(());
        };
        if Instant::now() + PROBE_RETRY >= deadline {
            return Err(TestnetError::NotReady {
                index,
                answer: match answer {
                    Ok(acks) => acks.to_string(),
                    Err(error) => error,
                },
                expected,
            });
        }
        tokio::time::sleep(PROBE_RETRY).await;
    }
}

/// Announces [`READY_PROBE`] at the grape's own DHT port (port 0 in the request) through its
/// API; returns how many nodes acknowledged it, or what went wrong.
async fn announce_probe(
    http: &HttpClient,
    grape: &Grape,
    deadline: Instant,
) -> Result<usize, String> {
    let url = format!("{}/announce", grape.url());
    let uri: Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let body = serde_json::json!({ "rid": new_rid(), "data": [READY_PROBE, 0] }).to_string();
    let headers = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    let left = deadline.saturating_duration_since(Instant::now());
    let posted = http.post(&uri, &headers, body.as_bytes(), 1024);
    let (status, bytes) = match tokio::time::timeout(left, posted).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(HttpFailure::Transport(reason))) => return Err(reason),
        Ok(Err(HttpFailure::TooLarge)) => return Err("an answer over 1 KiB".to_owned()),
        Err(_) => return Err("no answer in time".to_owned()),
    };
    let text = String::from_utf8_lossy(&bytes);
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Number(acks)) if status.is_success() => acks
            .as_u64()
            .and_then(|acks| usize::try_from(acks).ok())
            .ok_or_else(|| format!("{status} {text}")),
        _ => Err(format!("{status} {text}")),
    }
}
