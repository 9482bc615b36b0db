//! The server shell both transports share: settings, the listening socket and its
//! announcers, the bounded accept loop, and the graceful close.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Sleep;

use crate::limits::{client_key, ConnectionLimits, ConnectionTable, MemoryBudget, Refused};
use crate::link::{Link, LinkError};
use crate::lock;
use crate::loops::Loops;
use crate::tls::{CertInfo, TlsServerConfig};

/// Settings of a worker (both transports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Open connections at most. Default 1024. When all are taken, a client from an IP with
    /// fewer connections than the IP with the most takes the slot of one of that IP's idle
    /// connections (no request being received or handled), which is closed; other clients
    /// wait for a slot (64 at most, fairly shared between IPs; the others are closed).
    pub max_connections: usize,
    /// Open connections from one client IP at most (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address); a further connection from that IP is closed at once. Default 256,
    /// a quarter of `max_connections`: one host, however many clients it runs, cannot take
    /// every slot, yet one Node client process (3 pooled connections per worker) is far
    /// below it.
    pub max_connections_per_ip: usize,
    /// Requests of one WebSocket connection handled at once; the connection is not read
    /// further until one finishes (backpressure). Default 256.
    pub max_in_flight: usize,
    /// Largest request: one WebSocket message, or one HTTP body (also after gunzip).
    /// Default 100 MiB, the limit of Node's `ws` both ways. A larger WS message closes the
    /// connection (code 1009); a larger HTTP body is answered 413.
    pub max_message_size: usize,
    /// Bound on the WebSocket upgrade and on reading HTTP request headers (the whole head
    /// must arrive within it: slow heads are cut off), and the grace period of
    /// `min_body_rate`. Default 30 s. It also bounds the TLS handshake, and how long a client
    /// may take no byte of what the worker writes to it (answers, pings): a client that
    /// stops reading has its connection closed.
    pub read_timeout: Duration,
    /// The minimum-progress rule of HTTP bodies and WebSocket messages: after
    /// `read_timeout`, a body or message must have arrived at this many bytes per second on
    /// average since it started, or the connection is closed (HTTP: without an answer;
    /// WebSocket: code 1008, checked as bytes arrive). Default 16 KiB/s: a
    /// trickling client cannot hold a connection and its buffer for long, while an honest
    /// slow link (above 128 kbit/s) may send a request of any size up to
    /// `max_message_size`.
    pub min_body_rate: u64,
    /// Bytes all connections of the worker may buffer at once for requests that are larger
    /// than [`SMALL_MESSAGE`]: WebSocket messages and their fragments while they arrive, HTTP
    /// bodies, and gzip bodies once inflated. Default 64 MiB. A request that does not fit is
    /// refused (WebSocket close 1009, HTTP 413 `ERR_MEMORY_BUDGET`); a WebSocket message
    /// sent as one frame (as Node's `ws` does) is charged whole (twice its size: what the
    /// WebSocket library's doubling buffer may hold) when its frame header arrives, so once
    /// started it is never refused. Requests up to [`SMALL_MESSAGE`] are
    /// not charged, so honest small requests keep working while large ones are refused: the
    /// requests a worker buffers take at most this budget plus `max_connections` times
    /// [`SMALL_MESSAGE`] (besides each connection's own read buffer). Streamed HTTP bodies
    /// are not buffered, so not charged.
    pub memory_budget: usize,
    /// WebSocket only: a connection from which nothing (no message, no pong) arrived for this
    /// long is pinged, and closed (code 1001) if nothing arrives for as long again. Node's
    /// `ws` clients answer pings by themselves, so a live client, even one with nothing to
    /// ask, stays connected; a dead or silent one frees its slot within twice this time.
    /// Default 30 s. (HTTP keep-alive connections idle for `read_timeout` are closed.)
    pub idle_timeout: Duration,
    /// Serve over TLS (`wss://` or `https://`) with mutual authentication. Default `None`
    /// (plain `ws://` or `http://`, as Node without `secure`).
    pub tls: Option<TlsServerConfig>,
    /// Event loops serving the connections: current-thread runtimes on threads of their own,
    /// none stealing work from another (`crate::loops`); each connection stays on the loop
    /// serving the fewest when it arrived, and the caps above hold across loops. 0 serves on
    /// the runtime that called `listen`. Default: one per core but one, at least one
    /// ([`crate::loops::default_threads`]). Handlers run on these loops: one that blocks its
    /// thread holds up the other connections of its loop (as it would hold up a worker thread
    /// of a multi-thread runtime), `tokio::task::block_in_place` is not available there, and
    /// a task a handler spawns with `tokio::spawn` runs on the loop and ends when the worker
    /// closes (spawn on a `tokio::runtime::Handle` of your own for work that must outlive
    /// it). With 0 everything runs on the caller's runtime, as before this setting existed.
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_in_flight: 256,
            max_message_size: 100 << 20,
            read_timeout: Duration::from_secs(30),
            min_body_rate: 16 * 1024,
            memory_budget: 64 << 20,
            idle_timeout: Duration::from_secs(30),
            tls: None,
            threads: crate::loops::default_threads(),
        }
    }
}

/// Requests (one WebSocket message, one HTTP body, also once inflated) of at most this many
/// bytes are not charged to [`ServerConfig::memory_budget`]: 8 KiB, above the JSON payloads
/// services usually exchange, and small enough that 1024 connections each holding an
/// uncharged message stay within a few tens of MiB.
pub const SMALL_MESSAGE: usize = 8 * 1024;

/// What a connection task gets: where requests go (`R`: the handler over WebSocket, the
/// handlers over HTTP), the settings, the memory budget and the closing signal.
pub(crate) struct Shared<R> {
    pub(crate) routes: R,
    pub(crate) config: ServerConfig,
    /// [`ServerConfig::memory_budget`], shared by all connections.
    pub(crate) budget: MemoryBudget,
    /// `Some(grace)` once the server is closing: connections take no new request, finish
    /// those in flight and close. Reset to `None` when the server listens again.
    pub(crate) closing: watch::Sender<Option<Duration>>,
}

impl<R> Shared<R> {
    /// Resolves once the server is closing (at once if it already is), with the grace period;
    /// a connection task selects on it to stop taking requests.
    pub(crate) fn closed(&self) -> impl Future<Output = Duration> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            // The guard `wait_for` returns is not `Send`: read it at once.
            let grace = closing.wait_for(Option::is_some).await.map(|grace| *grace);
            match grace {
                Ok(grace) => grace.unwrap_or_default(),
                // The sender lives in `Shared`, which outlives every connection: unreachable,
                // but a dropped sender means nobody can close, so wait forever.
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// A byte stream a server speaks WebSocket or HTTP over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `AsyncWrite` for a wrapper of a stream that only looks at what it reads: every call goes to
/// its field `io` as it is.
macro_rules! write_through {
    ($wrapper:ty) => {
        impl tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.io), cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                tokio::io::AsyncWrite::poll_write_vectored(
                    std::pin::Pin::new(&mut self.io),
                    cx,
                    bufs,
                )
            }

            fn is_write_vectored(&self) -> bool {
                tokio::io::AsyncWrite::is_write_vectored(&self.io)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.io), cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.io), cx)
            }
        }
    };
}
pub(crate) use write_through;

/// One accepted connection, after the TLS handshake if any.
pub(crate) struct Accepted {
    /// The stream to serve.
    pub(crate) io: Box<dyn Io>,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The client's certificate (TLS only).
    pub(crate) cert: Option<Arc<CertInfo>>,
    /// `false` when the TLS `verify_client` hook rejected the client: the transport answers
    /// 401 instead of serving.
    pub(crate) allowed: bool,
    /// Whether the connection is handling a request; the transport marks it busy.
    pub(crate) activity: Activity,
}

/// Serves one accepted connection until it closes.
pub(crate) type ServeConnection<R> =
    fn(Accepted, Arc<Shared<R>>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The public methods every announcing listener has alike (the RPC workers of both
/// transports and the publisher), delegated to its [`Listening`] at `self.<path>`; `$what`
/// names the listener in the docs ("worker", "publisher").
macro_rules! listening_methods {
    ($what:literal, $($path:ident).+) => {
        /// The bound address, once listening.
        pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
            self.$($path).+.local_addr()
        }

        /// The bound port, once listening.
        pub fn port(&self) -> Option<u16> {
            self.local_addr().map(|a| a.port())
        }

        #[doc = concat!("The Link this ", $what, " announces with.")]
        pub fn link(&self) -> &crate::link::Link {
            self.$($path).+.link()
        }

        #[doc = concat!("Announces `name` at this ", $what, "'s port once.")]
        pub async fn announce(&self, name: &str) -> Result<(), crate::link::LinkError> {
            self.$($path).+.announce(name).await
        }

        /// Announces `name` now and periodically (see
        /// [`Link::start_announcing`](crate::link::Link::start_announcing); the interval is
        /// the Link's `announce_interval`). `false` if not listening or already announcing it.
        pub fn start_announcing(&self, name: &str) -> bool {
            self.$($path).+.start_announcing(name)
        }

        /// Stops announcing `name`; `false` if it was not.
        pub fn stop_announcing(&self, name: &str) -> bool {
            self.$($path).+.stop_announcing(name)
        }
    };
}
pub(crate) use listening_methods;

/// The public methods both RPC workers have alike, delegated to their [`ServerCore`] at
/// `self.core`: listening, the announcing methods of [`listening_methods`], the memory in use
/// and stopping at once. `close` stays with each worker: what "in flight" means differs.
macro_rules! worker_methods {
    () => {
        /// Listens on `0.0.0.0:port` (all interfaces, as Node; port 0 picks a free one) and
        /// serves in background tasks. Returns the bound address.
        pub async fn listen(&self, port: u16) -> std::io::Result<std::net::SocketAddr> {
            self.core.listen(port).await
        }

        /// Listens on `addr` (e.g. `127.0.0.1:0`) and serves in background tasks.
        pub async fn listen_on(
            &self,
            addr: std::net::SocketAddr,
        ) -> std::io::Result<std::net::SocketAddr> {
            self.core.listen_on(addr).await
        }

        $crate::rpc::listening_methods!("worker", core.listening);

        /// Bytes of large requests buffered now by all connections, charged to
        /// [`ServerConfig::memory_budget`](crate::rpc::ServerConfig::memory_budget) (requests
        /// up to [`SMALL_MESSAGE`](crate::rpc::SMALL_MESSAGE) are not counted).
        pub fn buffered_bytes(&self) -> usize {
            self.core.buffered_bytes()
        }

        /// Stops at once: stops listening, closes every connection (requests in flight get no
        /// answer) and stops the announcers. Dropping the server does the same.
        pub fn stop(&self) {
            self.core.stop()
        }
    };
}
pub(crate) use worker_methods;

/// A listening socket's accept task and the names announced at its port: listening,
/// announcing and stopping, shared by the RPC workers of both transports and the publisher.
pub(crate) struct Listening {
    link: Link,
    /// What listens, for error messages ("server", "publisher").
    what: &'static str,
    state: Mutex<ListenState>,
}

#[derive(Default)]
struct ListenState {
    local: Option<SocketAddr>,
    accept: Option<JoinHandle<()>>,
    announced: Vec<String>,
}

impl Listening {
    pub(crate) fn new(link: Link, what: &'static str) -> Self {
        Listening {
            link,
            what,
            state: Mutex::new(ListenState::default()),
        }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    fn already_listening(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("this {} is already listening", self.what),
        )
    }

    /// Binds `addr` and runs `accept(listener)` as the accept task; one listen per value.
    pub(crate) async fn listen_on<F>(
        &self,
        addr: SocketAddr,
        accept: impl FnOnce(TcpListener) -> F,
    ) -> io::Result<SocketAddr>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if lock(&self.state).accept.is_some() {
            return Err(self.already_listening());
        }
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(accept(listener));
        let mut state = lock(&self.state);
        if state.accept.is_some() {
            // Another listen won the race: keep that one.
            task.abort();
            return Err(self.already_listening());
        }
        state.local = Some(local);
        state.accept = Some(task);
        Ok(local)
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.state).local
    }

    fn port(&self) -> Result<u16, LinkError> {
        self.local_addr()
            .map(|a| a.port())
            .ok_or_else(|| LinkError::InvalidConfig(format!("the {} is not listening", self.what)))
    }

    pub(crate) async fn announce(&self, name: &str) -> Result<(), LinkError> {
        let port = self.port()?;
        self.link.announce(name, port).await
    }

    /// Announces `name` at this port every `announce_interval` of the Link.
    pub(crate) fn start_announcing(&self, name: &str) -> bool {
        let Ok(port) = self.port() else {
            return false;
        };
        let started = self.link.start_announcing(name, port, None);
        if started {
            lock(&self.state).announced.push(name.to_string());
        }
        started
    }

    pub(crate) fn stop_announcing(&self, name: &str) -> bool {
        let Ok(port) = self.port() else {
            return false;
        };
        lock(&self.state).announced.retain(|n| n != name);
        self.link.stop_announcing(name, port)
    }

    /// Stops the accept task (dropping its connections) and every announcer.
    pub(crate) fn stop(&self) {
        if let Some(task) = self.detach() {
            task.abort();
        }
    }

    /// Stops every announcer and hands the accept task over, still running, for the caller
    /// to end (a graceful close); `None` if not listening.
    pub(crate) fn detach(&self) -> Option<JoinHandle<()>> {
        let mut state = lock(&self.state);
        if let Some(local) = state.local.take() {
            for name in state.announced.drain(..) {
                self.link.stop_announcing(&name, local.port());
            }
        }
        state.accept.take()
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker's listening socket and its connections, the same for both transports; `R` is
/// where its requests go (see [`Shared`]).
pub(crate) struct ServerCore<R> {
    /// Where the workers' [`listening_methods`] go.
    pub(crate) listening: Listening,
    shared: Arc<Shared<R>>,
    serve: ServeConnection<R>,
    transport: &'static str,
}

/// How long [`ServerCore::close`] waits past the grace period for the accept task, which
/// enforces the grace itself, to notice it has run out and end.
const CLOSE_MARGIN: Duration = Duration::from_millis(100);

impl<R: Send + Sync + 'static> ServerCore<R> {
    pub(crate) fn new(
        link: Link,
        routes: R,
        config: ServerConfig,
        serve: ServeConnection<R>,
        transport: &'static str,
    ) -> Self {
        ServerCore {
            listening: Listening::new(link, "server"),
            shared: Arc::new(Shared {
                routes,
                budget: MemoryBudget::new(config.memory_budget),
                config,
                closing: watch::Sender::new(None),
            }),
            serve,
            transport,
        }
    }

    pub(crate) async fn listen(&self, port: u16) -> io::Result<SocketAddr> {
        self.listen_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .await
    }

    pub(crate) async fn listen_on(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let (shared, serve, transport) = (Arc::clone(&self.shared), self.serve, self.transport);
        // Serving again after a close.
        self.shared.closing.send_replace(None);
        let local = self
            .listening
            .listen_on(addr, move |listener| async move {
                let limits = ConnectionLimits {
                    total: shared.config.max_connections,
                    per_ip: shared.config.max_connections_per_ip,
                };
                let what = format!("grenache {transport} server");
                let closed = shared.closed();
                let loops = Loops::start(shared.config.threads, &format!("grenache-{transport}"))
                    .unwrap_or_else(|err| {
                        tracing::warn!(
                            "{what}: cannot start {} serving threads ({err}): serving here",
                            shared.config.threads
                        );
                        Loops::current()
                    });
                accept_bounded(
                    listener,
                    loops,
                    limits,
                    &what,
                    closed,
                    move |stream, peer, activity| {
                        accept_one(
                            stream,
                            peer,
                            activity,
                            Arc::clone(&shared),
                            serve,
                            transport,
                        )
                    },
                )
                .await
            })
            .await?;
        tracing::info!("grenache {} server listening on {local}", self.transport);
        Ok(local)
    }

    pub(crate) fn stop(&self) {
        self.listening.stop();
    }

    /// Stops announcing and accepting, lets the requests in flight finish for at most
    /// `grace`, then closes every connection; returns when they are all closed.
    pub(crate) async fn close(&self, grace: Duration) {
        let Some(accept) = self.listening.detach() else {
            return;
        };
        self.shared.closing.send_replace(Some(grace));
        let abort = accept.abort_handle();
        if tokio::time::timeout(grace.saturating_add(CLOSE_MARGIN), accept)
            .await
            .is_err()
        {
            abort.abort();
        }
        tracing::info!("grenache {} server closed", self.transport);
    }

    /// Bytes charged to the memory budget now, by all connections.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.shared.budget.used()
    }
}

/// How many requests a server connection is handling (or receiving) now. A connection at
/// zero is idle: when the server is full, it may be closed to make room for a client from a
/// less represented IP (see [`accept_bounded`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Activity(Arc<AtomicUsize>);

impl Activity {
    /// Marks the connection busy until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy {
        self.0.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(&self.0))
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// A request in progress on a connection ([`Activity::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Connections accepted while the server is full that wait for a slot, at most.
const MAX_WAITING: usize = 64;

/// The open connections of an accept loop, by client IP, with what it takes to close an idle
/// one.
#[derive(Default)]
struct OpenConnections {
    by_task: HashMap<tokio::task::Id, (IpAddr, Activity, AbortHandle)>,
    by_ip: HashMap<IpAddr, Vec<tokio::task::Id>>,
}

impl OpenConnections {
    fn add(&mut self, ip: IpAddr, activity: Activity, abort: AbortHandle) {
        let id = abort.id();
        self.by_ip.entry(ip).or_default().push(id);
        self.by_task.insert(id, (ip, activity, abort));
    }

    fn remove(&mut self, id: tokio::task::Id) {
        let Some((ip, _, _)) = self.by_task.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_ip.get_mut(&ip) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }

    /// Closes an idle connection of the IP with the most connections, if `newcomer` would
    /// still have fewer than it once let in. Returns whether one was closed (its slot frees
    /// when its task ends).
    fn displace_for(&mut self, newcomer: IpAddr) -> bool {
        let theirs = self.by_ip.get(&newcomer).map_or(0, Vec::len);
        let Some((_, heaviest)) = self.by_ip.iter().max_by_key(|(_, ids)| ids.len()) else {
            return false;
        };
        if heaviest.len() <= theirs + 1 {
            return false;
        }
        let idle = heaviest.iter().find_map(|id| {
            let (_, activity, abort) = self.by_task.get(id)?;
            activity.is_idle().then(|| abort.clone())
        });
        match idle {
            Some(abort) => {
                abort.abort();
                // Out of the index now, so that the same connection is not picked twice.
                self.remove(abort.id());
                true
            }
            None => false,
        }
    }
}

/// Makes room in a full waiting list for a newcomer from `ip`: the oldest waiting connection
/// of the IP with the most waiting is closed, if `ip` would still have fewer. Returns whether
/// it was.
fn make_room(waiting: &mut VecDeque<(TcpStream, SocketAddr)>, ip: IpAddr) -> bool {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for (_, peer) in waiting.iter() {
        *counts.entry(client_key(peer.ip())).or_default() += 1;
    }
    let theirs = counts.get(&ip).copied().unwrap_or(0);
    let Some((&heaviest, &most)) = counts.iter().max_by_key(|(_, n)| **n) else {
        return false;
    };
    if most <= theirs + 1 {
        return false;
    }
    let oldest = waiting
        .iter()
        .position(|(_, peer)| client_key(peer.ip()) == heaviest);
    oldest.and_then(|i| waiting.remove(i)).is_some()
}

/// Accepts connections and serves each in its own task made by `serve`, at most
/// `limits.total` at once and `limits.per_ip` from one client IP (each at least 1).
///
/// Past its IP's share, a connection is closed at once (left waiting, it would hold up the
/// other hosts queued behind it). When every slot is taken, a newcomer whose IP has fewer
/// connections (itself included) than the IP with the most takes the slot of one of that
/// IP's idle connections ([`Activity`] at zero), which is closed; other newcomers wait here
/// for a slot, [`MAX_WAITING`] of them, and when they are that many a newcomer takes the
/// place of the oldest waiting connection of the IP with the most waiting if it would still
/// have fewer, else it is closed. `what` names the listener in log lines.
///
/// The limits and the waiting list live here, in the accepting task; each connection is served
/// by `serve` on one of `loops`, the one serving the fewest connections when it starts.
///
/// When `closed` resolves (with a grace period), the listener and the waiting connections are
/// closed, and the served connections, told by their own closing signal, get the grace period
/// to finish; those still open then are aborted, the loops are stopped, and this returns once
/// every loop has ended. Aborting this task drops the `JoinSet`, which aborts every connection
/// at once, and the loops, which stop.
pub(crate) async fn accept_bounded<S, F>(
    listener: TcpListener,
    loops: Loops,
    limits: ConnectionLimits,
    what: &str,
    closed: impl Future<Output = Duration>,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, Activity) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let mut closed = std::pin::pin!(closed);
    let table = ConnectionTable::new(limits);
    let mut connections = JoinSet::new();
    let mut open = OpenConnections::default();
    let mut waiting: VecDeque<(TcpStream, SocketAddr)> = VecDeque::new();
    // Serves `stream` if a slot is free; gives it back if the server is full.
    let start = |stream: TcpStream,
                 peer: SocketAddr,
                 connections: &mut JoinSet<()>,
                 open: &mut OpenConnections|
     -> Option<(TcpStream, SocketAddr)> {
        match table.try_acquire(peer.ip()) {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                let activity = Activity::default();
                let serve = Arc::clone(&serve);
                let theirs = activity.clone();
                let placed = loops.place(stream, move |stream| async move {
                    serve(stream, peer, theirs).await;
                    drop(permit);
                });
                match placed {
                    Ok((serving_loop, task)) => {
                        let abort = connections.spawn_on(task, &serving_loop);
                        open.add(client_key(peer.ip()), activity, abort);
                    }
                    Err(e) => {
                        tracing::debug!("{what}: cannot hand the connection from {peer} over: {e}");
                    }
                }
                None
            }
            Err(Refused::PerIp) => {
                tracing::debug!(
                    "{what}: closing the connection from {peer}: {}",
                    Refused::PerIp
                );
                None
            }
            Err(Refused::Full) => Some((stream, peer)),
        }
    };
    let grace = loop {
        tokio::select! {
            grace = &mut closed => break grace,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(full) = start(stream, peer, &mut connections, &mut open) else {
                        continue;
                    };
                    let ip = client_key(peer.ip());
                    if open.displace_for(ip) {
                        tracing::info!(
                            "{what}: full; closing an idle connection of the busiest client for {peer}"
                        );
                        waiting.push_front(full);
                    } else if waiting.len() < MAX_WAITING || make_room(&mut waiting, ip) {
                        waiting.push_back(full);
                    } else {
                        tracing::debug!("{what}: closing the connection from {peer}: full");
                    }
                }
                Err(e) => {
                    // Typically out of file descriptors: wait a little instead of spinning.
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(ended) = connections.join_next_with_id() => {
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.remove(id);
                while let Some((stream, peer)) = waiting.pop_front() {
                    if let Some(full) = start(stream, peer, &mut connections, &mut open) {
                        waiting.push_front(full);
                        break;
                    }
                }
            }
        }
    };
    // Closing: no new connection (the port refuses them once the listener is gone), none
    // of the waiting ones; the served ones finish what they hold.
    drop(listener);
    waiting.clear();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::info!(
            "{what}: closing {} connections still busy after the {grace:?} grace period",
            connections.len()
        );
    }
    connections.abort_all();
    loops.shutdown().await;
}

/// A server connection's stream whose writes fail once the client has taken no byte for
/// `stall`: a client that stops reading cannot hold its connection (and the answers queued
/// for it) forever.
struct WriteStall<S> {
    io: S,
    stall: Duration,
    /// Armed when a write first waits, disarmed when one goes through.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStall<S> {
    fn new(io: S, stall: Duration) -> Self {
        WriteStall {
            io,
            stall,
            timer: None,
        }
    }

    /// What a write that got `poll`'s outcome returns: waiting is fine until the timer runs
    /// out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.timer = None;
            return poll;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has read nothing for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

/// Runs the TLS handshake (when configured) and the hook, then serves the connection.
async fn accept_one<R>(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Activity,
    shared: Arc<Shared<R>>,
    serve: ServeConnection<R>,
    transport: &'static str,
) {
    let accepted = match &shared.config.tls {
        None => Accepted {
            io: Box::new(WriteStall::new(stream, shared.config.read_timeout)),
            peer,
            cert: None,
            allowed: true,
            activity,
        },
        Some(tls) => {
            let handshake = tls.acceptor.accept(stream);
            let stream = match tokio::time::timeout(shared.config.read_timeout, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(
                        "grenache {transport} server: TLS handshake with {peer} failed: {e}"
                    );
                    return;
                }
                Err(_) => {
                    tracing::info!(
                        "grenache {transport} server: TLS handshake with {peer} timed out"
                    );
                    return;
                }
            };
            let cert = crate::tls::peer_cert(&stream);
            let allowed = tls.accepts(cert.as_ref());
            if !allowed {
                let fingerprint = cert
                    .as_ref()
                    .map(|c| c.fingerprint.as_str())
                    .unwrap_or("none");
                tracing::info!(
                    "grenache {transport} server: rejecting {peer} (certificate {fingerprint}): verify_client said no"
                );
            }
            Accepted {
                io: Box::new(WriteStall::new(stream, shared.config.read_timeout)),
                peer,
                cert: cert.map(Arc::new),
                allowed,
                activity,
            }
        }
    };
    serve(accepted, shared).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn accept_bounded_serves_at_most_max_connections_and_aborts_them_when_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            let limits = ConnectionLimits {
                total: 2,
                per_ip: 2,
            };
            let closed = std::future::pending();
            accept_bounded(
                listener,
                Loops::current(),
                limits,
                "test server",
                closed,
                move |mut stream, _, _| {
                    let served_tx = served_tx.clone();
                    async move {
                        let _ = served_tx.send(());
                        // Served until the client closes.
                        let mut byte = [0u8; 1];
                        let _ = stream.read(&mut byte).await;
                    }
                },
            )
            .await
        });
        let wait = Duration::from_secs(5);
        let first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        let _third = TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            tokio::time::timeout(wait, served.recv()).await.unwrap();
        }
        let early = tokio::time::timeout(Duration::from_millis(200), served.recv()).await;
        assert!(
            early.is_err(),
            "a third connection was served while two were open"
        );
        drop(first);
        tokio::time::timeout(wait, served.recv())
            .await
            .expect("the third connection is served once the first closes");

        accept.abort();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(wait, second.read(&mut byte))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "stopping the accept task closes the served connections: {read:?}"
        );
    }

    /// A connection from `from` to `addr`.
    async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Reads what the server wrote before closing, or `None` if it wrote nothing in `wait`.
    async fn read_line(stream: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match tokio::time::timeout(wait, stream.read(&mut byte)).await {
                Ok(Ok(1)) if byte[0] == b'\n' => break,
                Ok(Ok(1)) => line.push(byte[0]),
                Ok(_) => break,
                Err(_) => return None,
            }
        }
        Some(String::from_utf8(line).unwrap())
    }

    #[tokio::test]
    async fn the_per_ip_cap_holds_across_loops_and_closing_waits_for_every_loop() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<Duration>();
        let accept = tokio::spawn(async move {
            let limits = ConnectionLimits {
                total: 8,
                per_ip: 2,
            };
            let closed = async move { close_rx.await.unwrap_or_default() };
            let loops = Loops::start(2, "test-cap").unwrap();
            accept_bounded(
                listener,
                loops,
                limits,
                "test server",
                closed,
                |mut stream, _, _| async move {
                    // Says which loop serves it, then is served until the client closes
                    // (it never finishes by itself: closing must abort it).
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    stream
                        .write_all(format!("{name}\n").as_bytes())
                        .await
                        .unwrap();
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                },
            )
            .await
        });
        let wait = Duration::from_secs(5);
        let mut a1 = connect_from("127.0.0.2", addr).await;
        let mut a2 = connect_from("127.0.0.2", addr).await;
        let first = read_line(&mut a1, wait).await.unwrap();
        let second = read_line(&mut a2, wait).await.unwrap();
        assert_ne!(
            first, second,
            "one client's two connections are on the two loops"
        );
        let mut a3 = connect_from("127.0.0.2", addr).await;
        assert_eq!(
            read_line(&mut a3, wait).await.as_deref(),
            Some(""),
            "a third connection of 127.0.0.2 is closed unserved, though each loop serves only one"
        );
        let mut b = connect_from("127.0.0.3", addr).await;
        assert!(read_line(&mut b, wait)
            .await
            .unwrap()
            .starts_with("test-cap-"));

        close_tx.send(Duration::from_millis(100)).unwrap();
        tokio::time::timeout(wait, accept)
            .await
            .expect("closing ends after the grace period")
            .unwrap();
        // Returned only once every loop ended: every connection, on either loop, is closed.
        for client in [&mut a1, &mut a2, &mut b] {
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(500), client.read(&mut byte))
                .await
                .expect("the connection is closed by the time close returns");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }

    #[tokio::test]
    async fn a_full_waiting_list_makes_room_for_the_least_represented_ip() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut waiting = VecDeque::new();
        for from in ["127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"] {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
            clients.push(socket.connect(addr).await.unwrap());
            waiting.push_back(listener.accept().await.unwrap());
        }
        let first = waiting[0].1;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(
            !make_room(&mut waiting, ip("127.0.0.2")),
            "the heaviest itself"
        );
        assert!(
            make_room(&mut waiting, ip("127.0.0.3")),
            "2 are fewer than 3"
        );
        assert_eq!(waiting.len(), 3);
        assert!(
            waiting.iter().all(|(_, peer)| *peer != first),
            "the oldest of the heaviest IP went"
        );
        assert!(
            !make_room(&mut waiting, ip("127.0.0.3")),
            "2 would not be fewer than 2"
        );
    }
}
