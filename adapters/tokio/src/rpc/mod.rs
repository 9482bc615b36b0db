//! RPC peers over WebSocket ([`ws`]) and HTTP ([`http`]), and what both share: the request a
//! handler sees ([`Request`]), the [`Handler`] trait, [`RpcError`], the server settings and
//! the `[rid, key, payload]` / `[rid, err, result]` JSON frames of grenache-nodejs-base.
//!
//! A worker:
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use grenache_tokio::{rpc::ws::PeerRpcServer, Link, LinkConfig, Request, RpcError};
//! let link = Link::new(LinkConfig::new("http://127.0.0.1:30001"))?;
//! let server = PeerRpcServer::new(link, |req: Request| async move {
//!     match req.payload.get("number").and_then(|n| n.as_u64()) {
//!         Some(n) => Ok(serde_json::json!(n * 2)),
//!         None => Err(RpcError::new("ERR_NO_NUMBER")),
//!     }
//! });
//! server.listen(1337).await?;
//! server.start_announcing("double_worker");
//! # Ok(()) }
//! ```

pub mod http;
pub mod stream;
pub mod ws;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, Sleep};

use crate::js::{string as js_string, truthy as js_truthy};
use crate::limits::{client_key, ConnectionLimits, ConnectionTable, MemoryBudget, Refused};
use crate::link::{Link, LinkError};
use crate::lock;
use crate::tls::{CertInfo, TlsServerConfig};
use grenache_core::wire::frame::{
    on_malformed, write_reply_err, FrameError, Malformed, Request as CoreRequest,
    ERR_REQUEST_MALFORMED,
};

/// One request as a worker's handler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The request id, echoed verbatim (same JSON type) in the reply.
    pub rid: Value,
    /// The service name the client asked for (the `key` of `[rid, key, payload]`, always a
    /// JSON string there; a non-string key from HTTP's `_gr` header is given in its JSON text
    /// form).
    pub key: String,
    /// The payload, any JSON value.
    pub payload: Value,
    /// HTTP only: the `_a` (action) header, as grenache-nodejs-http's `meta.action`.
    pub action: Option<String>,
    /// HTTP only: the `_ar` header parsed as JSON (`meta.args`), `{}` when absent or invalid.
    pub args: Value,
    /// The address of the connected client.
    pub remote: SocketAddr,
    /// Over TLS, the certificate the client presented (Node's `cert` argument, whose
    /// `fingerprint` is [`CertInfo::fingerprint`]); `None` without TLS.
    pub cert: Option<Arc<CertInfo>>,
}

/// The future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send + 'static>>;

/// What a worker does with a request: the equivalent of Node's
/// `service.on('request', (rid, key, payload, handler) => handler.reply(err, result))`.
///
/// `Ok(value)` is sent as `[rid, null, value]`; `Err(e)` as `[rid, message, data]`, where
/// `message` is `e`'s text (a Node client sees `Error: message`) and `data` the result slot of
/// [`RpcError::Remote`] (`null` otherwise). Any `Fn(Request) -> impl Future<Output =
/// Result<Value, RpcError>>` closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Many calls may run at once, on any thread: those of one
    /// WebSocket connection run concurrently on that connection's task (so that answers
    /// ready together leave in one write), those of different connections in parallel. A
    /// handler with heavy CPU work should move it off the task (`tokio::task::spawn_blocking`).
    fn handle(&self, request: Request) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, RpcError>> + Send + 'static,
{
    fn handle(&self, request: Request) -> HandlerFuture {
        Box::pin(self(request))
    }
}

/// An RPC failure. `Display` gives the exact message a Node peer would see or produce.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RpcError {
    /// The worker answered with an error (`[rid, message, data]`, i.e. Node
    /// `handler.reply(new Error(message), data)`). Also what a handler returns to fail.
    Remote {
        /// The error text (Node `err.message`).
        message: String,
        /// The result slot sent along with the error (Node delivers it too); `null` if none.
        data: Value,
    },
    /// No answer before the deadline (`ERR_TIMEOUT`).
    Timeout,
    /// The connection closed while the request was waiting for its answer
    /// (`ERR_TRANSPORT_CLOSE`). Node only fails queued requests this way and lets in-flight
    /// ones time out; here both fail at once.
    TransportClose,
    /// The lookup of the service failed (e.g. `ERR_GRAPE_LOOKUP_EMPTY`).
    Lookup(LinkError),
    /// Connecting or sending failed, or the HTTP status was not 2xx
    /// (`ERR_REQUEST_GENERIC: <detail>`).
    Request(String),
    /// The answer was not a JSON `[rid, err, result]` array (`ERR_REPLY_EMPTY`).
    ReplyEmpty,
    /// The answer of a compressed HTTP request was not gzip (`ERR_REPLY_ENCODING_COMPRESSION`).
    ReplyEncodingCompression,
    /// Compressing an HTTP request body failed (`ERR_REQUEST_ENCODING_COMPRESSION`).
    RequestEncodingCompression,
    /// The HTTP answer carried another request's rid (`ERR_REPLY_RID_MISMATCH`; Node ignores
    /// such an answer and times out).
    ReplyRidMismatch,
    /// A stream was asked of a transport without streams (WebSocket;
    /// `ERR_STREAM_UNSUPPORTED`, where Node's `peer.stream` fails with
    /// `t.requestStream is not a function`).
    StreamUnsupported,
}

impl RpcError {
    /// A handler's error with this message and no data, as Node's `new Error(message)`.
    pub fn new(message: impl Into<String>) -> Self {
        RpcError::Remote {
            message: message.into(),
            data: Value::Null,
        }
    }

    /// A handler's error with a message and data sent along (Node `reply(err, data)`).
    pub fn with_data(message: impl Into<String>, data: Value) -> Self {
        RpcError::Remote {
            message: message.into(),
            data,
        }
    }

    /// The error text (the same as `to_string()`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The result slot that came with a remote error, if any.
    pub fn data(&self) -> Option<&Value> {
        match self {
            RpcError::Remote { data, .. } if !data.is_null() => Some(data),
            _ => None,
        }
    }

    /// The error slot of a reply frame. Never empty: an empty string is falsy in JavaScript
    /// and a Node client would take the reply for a success, so it becomes `Error` (what
    /// `String(new Error(''))` prints).
    fn wire_message(&self) -> String {
        let text = self.to_string();
        if text.is_empty() {
            "Error".to_string()
        } else {
            text
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RpcError::Remote { message, .. } => f.write_str(message),
            RpcError::Timeout => f.write_str("ERR_TIMEOUT"),
            RpcError::TransportClose => f.write_str("ERR_TRANSPORT_CLOSE"),
            RpcError::Lookup(e) => write!(f, "{e}"),
            RpcError::Request(detail) => write!(f, "ERR_REQUEST_GENERIC: {detail}"),
            RpcError::ReplyEmpty => f.write_str("ERR_REPLY_EMPTY"),
            RpcError::ReplyEncodingCompression => f.write_str("ERR_REPLY_ENCODING_COMPRESSION"),
            RpcError::ReplyRidMismatch => f.write_str("ERR_REPLY_RID_MISMATCH"),
            RpcError::RequestEncodingCompression => f.write_str("ERR_REQUEST_ENCODING_COMPRESSION"),
            RpcError::StreamUnsupported => f.write_str(
                "ERR_STREAM_UNSUPPORTED: the WebSocket transport has no streams, use rpc::http",
            ),
        }
    }
}

impl std::error::Error for RpcError {}

impl From<LinkError> for RpcError {
    fn from(e: LinkError) -> Self {
        RpcError::Lookup(e)
    }
}

// ---------------------------------------------------------------------------------------
// Frames

/// `[rid, key, payload]` as `JSON.stringify` writes it.
pub(crate) fn encode_request(rid: &str, key: &str, payload: &Value) -> String {
    // Serialized in place (a tuple is a JSON array), not copied into a `json!` array first.
    // Writing JSON values and strings into a `String` cannot fail: the default is unreachable.
    serde_json::to_string(&(rid, key, payload)).unwrap_or_default()
}

/// What a worker does with a request frame that is not one: the verdict of
/// [`grenache_core::wire::frame::on_malformed`], so that the tokio workers, the embassy worker and
/// the core's table (core/src/wire/frame.rs) agree on every frame.
#[derive(Debug, PartialEq)]
pub(crate) enum BadRequest {
    /// Send nothing (WebSocket: keep the connection; HTTP: close it without a response).
    Drop(FrameError),
    /// Send this `[rid,"ERR_REQUEST_MALFORMED",null]` frame: the rid was readable, so the
    /// client gets an error instead of waiting for its timeout.
    Reply(String),
}

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRequest::Drop(why) => write!(f, "{why} (dropped, no reply)"),
            BadRequest::Reply(_) => write!(f, "{ERR_REQUEST_MALFORMED} (rid echoed)"),
        }
    }
}

/// Reads a request frame with the core's rules ([`CoreRequest::parse`], then
/// [`on_malformed`]), and hands its parts over as the handler wants them: the rid and
/// payload as [`Value`]s, the key decoded. The core bounds nesting at
/// [`grenache_core::wire::json::MAX_DEPTH`] levels, frame included: a deeper frame is dropped.
pub(crate) fn decode_request(bytes: &[u8]) -> Result<(Value, String, Value), BadRequest> {
    let request = match CoreRequest::parse(bytes) {
        Ok(request) => request,
        Err(err) => {
            return Err(match on_malformed(bytes, err) {
                Malformed::Drop => BadRequest::Drop(err),
                Malformed::Reply { rid, message } => {
                    // The rid is a checked JSON string or number and the message ASCII: the
                    // frame is JSON text, and UTF-8 because the rid came from checked input.
                    let mut out =
                        vec![0; rid.len().saturating_add(message.len()).saturating_add(16)];
                    match write_reply_err(&mut out, rid, message) {
                        Ok(len) => {
                            out.truncate(len);
                            match String::from_utf8(out) {
                                Ok(frame) => BadRequest::Reply(frame),
                                Err(_) => BadRequest::Drop(err),
                            }
                        }
                        Err(_) => BadRequest::Drop(err),
                    }
                }
            });
        }
    };
    // The core checked every slice; serde_json can still refuse what it cannot represent (a
    // number beyond f64, a lone surrogate escape). Those frames were dropped before the core
    // decided, and still are: there is no `Value` to hand the handler.
    let (Ok(rid), Ok(key), Ok(payload)) = (
        serde_json::from_slice::<Value>(request.rid),
        serde_json::from_slice::<String>(request.key.raw()),
        serde_json::from_slice::<Value>(request.payload),
    ) else {
        return Err(BadRequest::Drop(FrameError::NotJson));
    };
    Ok((rid, key, payload))
}

/// The key as a string: strings as they are, `null` as empty, anything else as JSON text.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `[rid, err, result]` for a handler's outcome. Always a 3-element array: anything else
/// crashes Node clients.
pub(crate) fn encode_reply(rid: &Value, outcome: &Result<Value, RpcError>) -> String {
    // As in `encode_request`, serialized in place; it cannot fail.
    match outcome {
        Ok(result) => serde_json::to_string(&(rid, (), result)),
        Err(error) => {
            let data = match error {
                RpcError::Remote { data, .. } => data,
                _ => &Value::Null,
            };
            serde_json::to_string(&(rid, error.wire_message(), data))
        }
    }
    .unwrap_or_default()
}

/// Reads a reply frame: `None` when it is not a JSON array (WS ignores those, HTTP turns them
/// into `ERR_REPLY_EMPTY`), else the rid and the outcome. A truthy error slot is an error
/// whose message is its JavaScript string form; the result slot comes along as its data.
pub(crate) fn decode_reply(bytes: &[u8]) -> Option<(Value, Result<Value, RpcError>)> {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    let mut items = items.into_iter();
    let rid = items.next().unwrap_or(Value::Null);
    let error = items.next().unwrap_or(Value::Null);
    let result = items.next().unwrap_or(Value::Null);
    if js_truthy(&error) {
        Some((
            rid,
            Err(RpcError::Remote {
                message: js_string(&error),
                data: result,
            }),
        ))
    } else {
        Some((rid, Ok(result)))
    }
}

// ---------------------------------------------------------------------------------------
// Server shell shared by both transports

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
        }
    }
}

/// Requests (one WebSocket message, one HTTP body, also once inflated) of at most this many
/// bytes are not charged to [`ServerConfig::memory_budget`]: 8 KiB, above the JSON payloads
/// services usually exchange, and small enough that 1024 connections each holding an
/// uncharged message stay within a few tens of MiB.
pub const SMALL_MESSAGE: usize = 8 * 1024;

/// What a connection task gets: the handler, the settings and the memory budget.
pub(crate) struct Shared {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) config: ServerConfig,
    /// [`ServerConfig::memory_budget`], shared by all connections.
    pub(crate) budget: MemoryBudget,
    /// HTTP only: the streaming handler and which requests it gets.
    pub(crate) stream: Option<stream::StreamRoute>,
}

/// A byte stream a server speaks WebSocket or HTTP over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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
pub(crate) type ServeConnection =
    fn(Accepted, Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

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
    accept: Option<AbortHandle>,
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
        state.accept = Some(task.abort_handle());
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
        let mut state = lock(&self.state);
        if let Some(task) = state.accept.take() {
            task.abort();
        }
        if let Some(local) = state.local.take() {
            for name in state.announced.drain(..) {
                self.link.stop_announcing(&name, local.port());
            }
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker's listening socket and its connections, the same for both transports.
pub(crate) struct ServerCore {
    /// Where the workers' [`listening_methods`] go.
    pub(crate) listening: Listening,
    shared: Arc<Shared>,
    serve: ServeConnection,
    transport: &'static str,
}

impl ServerCore {
    pub(crate) fn new(
        link: Link,
        handler: Arc<dyn Handler>,
        config: ServerConfig,
        serve: ServeConnection,
        transport: &'static str,
    ) -> Self {
        Self::with_stream(link, handler, None, config, serve, transport)
    }

    /// Like [`ServerCore::new`], with the HTTP streaming route.
    pub(crate) fn with_stream(
        link: Link,
        handler: Arc<dyn Handler>,
        stream: Option<stream::StreamRoute>,
        config: ServerConfig,
        serve: ServeConnection,
        transport: &'static str,
    ) -> Self {
        ServerCore {
            listening: Listening::new(link, "server"),
            shared: Arc::new(Shared {
                handler,
                budget: MemoryBudget::new(config.memory_budget),
                config,
                stream,
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
        let local = self
            .listening
            .listen_on(addr, move |listener| async move {
                let limits = ConnectionLimits {
                    total: shared.config.max_connections,
                    per_ip: shared.config.max_connections_per_ip,
                };
                let what = format!("grenache {transport} server");
                accept_bounded(listener, limits, &what, |stream, peer, activity| {
                    accept_one(
                        stream,
                        peer,
                        activity,
                        Arc::clone(&shared),
                        serve,
                        transport,
                    )
                })
                .await
            })
            .await?;
        tracing::info!("grenache {} server listening on {local}", self.transport);
        Ok(local)
    }

    pub(crate) fn stop(&self) {
        self.listening.stop();
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
/// have fewer, else it is closed. `what` names the listener in log lines. Aborting this task drops the `JoinSet`, which aborts every
/// connection.
pub(crate) async fn accept_bounded<F>(
    listener: TcpListener,
    limits: ConnectionLimits,
    what: &str,
    mut serve: impl FnMut(TcpStream, SocketAddr, Activity) -> F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let table = ConnectionTable::new(limits);
    let mut connections = JoinSet::new();
    let mut open = OpenConnections::default();
    let mut waiting: VecDeque<(TcpStream, SocketAddr)> = VecDeque::new();
    // Serves `stream` if a slot is free; gives it back if the server is full.
    let mut start = |stream: TcpStream,
                     peer: SocketAddr,
                     connections: &mut JoinSet<()>,
                     open: &mut OpenConnections|
     -> Option<(TcpStream, SocketAddr)> {
        match table.try_acquire(peer.ip()) {
            Ok(permit) => {
                let _ = stream.set_nodelay(true);
                let activity = Activity::default();
                let serving = serve(stream, peer, activity.clone());
                let abort = connections.spawn(async move {
                    serving.await;
                    drop(permit);
                });
                open.add(client_key(peer.ip()), activity, abort);
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
    loop {
        tokio::select! {
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
            else => break,
        }
    }
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
async fn accept_one(
    stream: TcpStream,
    peer: SocketAddr,
    activity: Activity,
    shared: Arc<Shared>,
    serve: ServeConnection,
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

// ---------------------------------------------------------------------------------------
// Client helpers shared by both transports

/// Default idle time after which a pooled client connection is closed (Node
/// `inactivityTimeout`, 120 s).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Looks `name` up within `deadline`.
pub(crate) async fn lookup_before(
    link: &Link,
    name: &str,
    deadline: Instant,
) -> Result<Vec<String>, RpcError> {
    match tokio::time::timeout_at(deadline, link.lookup(name)).await {
        Err(_) => Err(RpcError::Timeout),
        Ok(result) => result.map_err(RpcError::Lookup),
    }
}

/// Node's destination choice (`PeerRPCClient.dest`): uniform among the destinations that
/// already have a pooled connection once there are at least `max_active` of them, else
/// uniform among all.
pub(crate) fn pick_dest(
    dests: &[String],
    is_active: impl Fn(&str) -> bool,
    max_active: usize,
) -> Option<&String> {
    let active: Vec<&String> = dests.iter().filter(|d| is_active(d)).collect();
    if max_active > 0 && active.len() >= max_active {
        active.get(rand::random_range(0..active.len())).copied()
    } else if dests.is_empty() {
        None
    } else {
        dests.get(rand::random_range(0..dests.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
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
            accept_bounded(listener, limits, "test server", move |mut stream, _, _| {
                let served_tx = served_tx.clone();
                async move {
                    let _ = served_tx.send(());
                    // Served until the client closes.
                    let mut byte = [0u8; 1];
                    let _ = stream.read(&mut byte).await;
                }
            })
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

    #[test]
    fn request_frames_are_node_bytes() {
        let frame = encode_request("r1", "rpc_test", &json!({"hello": "world"}));
        assert_eq!(frame, r#"["r1","rpc_test",{"hello":"world"}]"#);
    }

    #[test]
    fn decode_request_follows_the_core_rules() {
        use BadRequest::{Drop, Reply};
        assert_eq!(
            decode_request(br#"["r",  "k", {"a":1}, "extra"]"#),
            Ok((json!("r"), "k".to_string(), json!({"a": 1})))
        );
        assert_eq!(
            decode_request(br#"[5,"k\u00e9"]"#),
            Ok((json!(5), "k\u{e9}".to_string(), Value::Null))
        );
        // A readable rid with a key that is not a string: answered, rid echoed as sent.
        let malformed = |rid: &str| Err(Reply(format!(r#"[{rid},"ERR_REQUEST_MALFORMED",null]"#)));
        assert_eq!(decode_request(b"[7]"), malformed("7"));
        assert_eq!(decode_request(br#"["r1",5,{}]"#), malformed(r#""r1""#));
        assert_eq!(decode_request(br#"["r1"]"#), malformed(r#""r1""#));
        // No rid to echo: dropped.
        assert_eq!(
            decode_request(br#"[null,"k",{}]"#),
            Err(Drop(FrameError::Shape))
        );
        assert_eq!(
            decode_request(br#"[{},"k",{}]"#),
            Err(Drop(FrameError::Shape))
        );
        assert_eq!(decode_request(b"[]"), Err(Drop(FrameError::Shape)));
        assert_eq!(decode_request(b"null"), Err(Drop(FrameError::NotArray)));
        assert_eq!(
            decode_request(b"{\"a\":1}"),
            Err(Drop(FrameError::NotArray))
        );
        assert_eq!(decode_request(b"5"), Err(Drop(FrameError::NotArray)));
        assert_eq!(decode_request(b"[1,"), Err(Drop(FrameError::NotJson)));
        assert_eq!(decode_request(b"\xff\xfe"), Err(Drop(FrameError::NotJson)));
        // What the core accepts but serde_json cannot represent is dropped too.
        assert_eq!(
            decode_request(br#"["r","k",1e400]"#),
            Err(Drop(FrameError::NotJson))
        );
    }

    #[test]
    fn deeply_nested_requests_are_rejected_not_overflowed() {
        let deep = "[".repeat(100_000);
        assert_eq!(
            decode_request(deep.as_bytes()),
            Err(BadRequest::Drop(FrameError::NotJson))
        );
    }

    #[test]
    fn replies_are_node_bytes() {
        assert_eq!(
            encode_reply(&json!("r1"), &Ok(json!("world"))),
            r#"["r1",null,"world"]"#
        );
        assert_eq!(
            encode_reply(&json!("r2"), &Err(RpcError::new("boom"))),
            r#"["r2","boom",null]"#
        );
        assert_eq!(
            encode_reply(
                &json!(5),
                &Err(RpcError::with_data("ERR_X", json!("partial")))
            ),
            r#"[5,"ERR_X","partial"]"#
        );
        assert_eq!(
            encode_reply(&json!("r3"), &Err(RpcError::new(""))),
            r#"["r3","Error",null]"#
        );
        assert_eq!(
            encode_reply(&json!("r4"), &Err(RpcError::Timeout)),
            r#"["r4","ERR_TIMEOUT",null]"#
        );
    }

    #[test]
    fn decode_reply_follows_node_truthiness() {
        assert_eq!(
            decode_reply(br#"["r",null,{"ok":1}]"#),
            Some((json!("r"), Ok(json!({"ok": 1}))))
        );
        assert_eq!(
            decode_reply(br#"["r","",1]"#),
            Some((json!("r"), Ok(json!(1))))
        );
        let (_, outcome) = decode_reply(br#"["r","boom","partial"]"#).expect("array");
        let error = outcome.expect_err("error");
        assert_eq!(error.message(), "boom");
        assert_eq!(error.data(), Some(&json!("partial")));
        let (_, outcome) = decode_reply(br#"["r",{"x":1},null]"#).expect("array");
        assert_eq!(outcome.expect_err("error").message(), "[object Object]");
        assert_eq!(decode_reply(b"5"), None);
        assert_eq!(decode_reply(b"{}"), None);
        assert_eq!(decode_reply(b"nope"), None);
    }

    #[test]
    fn error_messages_are_node_strings() {
        assert_eq!(RpcError::Timeout.to_string(), "ERR_TIMEOUT");
        assert_eq!(RpcError::TransportClose.to_string(), "ERR_TRANSPORT_CLOSE");
        assert_eq!(
            RpcError::Lookup(LinkError::LookupEmpty).to_string(),
            "ERR_GRAPE_LOOKUP_EMPTY"
        );
        assert_eq!(
            RpcError::Request("x".into()).to_string(),
            "ERR_REQUEST_GENERIC: x"
        );
        assert_eq!(RpcError::ReplyEmpty.to_string(), "ERR_REPLY_EMPTY");
        assert_eq!(
            RpcError::ReplyEncodingCompression.to_string(),
            "ERR_REPLY_ENCODING_COMPRESSION"
        );
    }

    #[test]
    fn pick_dest_prefers_active_destinations_once_there_are_enough() {
        let dests: Vec<String> = (0..10).map(|i| format!("127.0.0.1:{i}")).collect();
        let active = |d: &str| d.ends_with(":1") || d.ends_with(":2");
        for _ in 0..200 {
            let picked = pick_dest(&dests, active, 2).expect("a dest");
            assert!(active(picked), "{picked} is not active");
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            seen.insert(pick_dest(&dests, active, 5).expect("a dest").clone());
        }
        assert_eq!(
            seen.len(),
            10,
            "with few active dests every dest is a candidate"
        );
        assert_eq!(pick_dest(&[], |_| false, 5), None);
    }
}
