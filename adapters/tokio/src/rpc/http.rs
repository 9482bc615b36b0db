//! RPC over HTTP, as grenache-nodejs-http 1.0.2 (docs/protocol.md §10).
//!
//! * A request is `POST http://{ip:port}/` whose body is `[rid, key, payload]`, with the
//!   header `grc-compress: none` or `grc-compress: gzip`; with gzip the request body **and**
//!   the answer body are gzip bytes (no `Content-Encoding`).
//! * The answer is always status 200 with the body `[rid, err|null, result]`.
//! * The server accepts any method and path; the headers `_gr` (JSON `[rid, key]`, overriding
//!   the body's), `_a` (action) and `_ar` (JSON args) of Node's streaming requests are
//!   honoured for buffered bodies; a `_gr` that is not JSON is answered 500
//!   `[null, "ERR_HEADER_PARSE_GR", null]` as Node does.
//! * A malformed body gets what `grenache_core::wire::frame` prescribes, as over WebSocket: no
//!   answer when it is not JSON, not an array or has no string/number rid (the connection is
//!   closed, with a log line; Node leaves it hanging); a 200 `[rid,"ERR_REQUEST_MALFORMED",null]`
//!   when the rid is readable but the key is not a string. The body decides even when `_gr`
//!   is sent. A body over the size limit is answered 413.
//! * Against hostile clients (see [`ServerConfig`]): at most `max_connections_per_ip`
//!   connections per client IP; a request head must arrive within `read_timeout` (also the
//!   idle time of a keep-alive connection); a body must arrive at `min_body_rate` on average
//!   once `read_timeout` has passed, else the connection is closed; a body larger than
//!   [`SMALL_MESSAGE`](super::SMALL_MESSAGE) is charged to the worker's `memory_budget` as
//!   it arrives, and so is its gunzipped form (inflated on a blocking thread, off the async
//!   runtime), and a body the budget cannot hold is answered 413 `ERR_MEMORY_BUDGET`.
//!   Streamed bodies (see [`super::stream`]) are not charged: they flow with backpressure.
//! * Raw streams (Node's `peer.stream` and `'stream'` event) are in [`super::stream`]:
//!   [`PeerRpcClient::stream`] opens one, and a server built with a stream handler
//!   ([`ServerBuilder::stream_handler`]) hands chunked requests to that [`StreamHandler`]
//!   (every request, when it has no buffered handler: Node's `disableBuffered: true`).
//!   Without a stream handler, a chunked body is buffered and parsed as `[rid, key, payload]`,
//!   as Node does.
//!
//! The server's connections are served by `conn` on grenache-core's HTTP/1.1 codec (answers
//! carry Node's `Date`, `Connection` and `Keep-Alive` headers and a `Content-Length`); stream
//! requests by hyper. The client's buffered requests go through `crate::http_client`, also on
//! the core's codec; its streams through hyper.
//!
//! Differences from Node, on purpose: timeouts are exact and always `ERR_TIMEOUT` (Node
//! prints `ERR_REQUEST_GENERIC: network timeout at: …` when node-fetch's timer wins); an
//! answer with another rid is `ERR_REPLY_RID_MISMATCH` at once (Node waits for its timeout);
//! the destination is chosen uniformly among the lookup results (Node's HTTP transports never
//! go inactive, so its "prefer active destinations" rule has no effect either); stream
//! timeouts are enforced (see [`super::stream`] for the other stream differences).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{lookup_before, pick_dest, InFlight};
use super::error::RpcError;
use super::frame::{decode_reply, encode_request};
use super::gzip::{gunzip, gzip};
use super::handler::Handler;
use super::server::{Accepted, Io, ServerConfig, ServerCore, Shared};
use super::stream::{
    BodyStream, ChannelBody, PendingResponse, RpcStream, StreamHandler, StreamOptions,
    StreamResponse, TimedOut,
};
use crate::http_client::{HttpClient, HttpFailure};
use crate::link::{Link, LinkError};
use crate::new_rid;
use crate::tls::TlsClientConfig;

mod conn;
mod routes;
mod streams;

use routes::{Routes, GRC_COMPRESS};

// ---------------------------------------------------------------------------------------
// Server

/// A worker answering RPC requests over HTTP (Node `PeerRPCServer` of grenache-nodejs-http
/// with its `transport('server')`). Made by [`PeerRpcServer::builder`].
pub struct PeerRpcServer {
    core: ServerCore<Routes>,
}

/// A worker's settings before it exists ([`PeerRpcServer::builder`]): at least one handler
/// (`.handler`, `.stream_handler` or both), optionally `.config`, then `.build()`. `R` is
/// [`NoHandler`] until a handler is given, [`Routed`] after: only then is there a `build`.
#[must_use = "a builder does nothing until `.build()`"]
pub struct ServerBuilder<R = NoHandler> {
    link: Link,
    config: ServerConfig,
    routes: R,
}

/// The state of a [`ServerBuilder`] given no handler yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHandler;

/// The state of a [`ServerBuilder`] given its handlers.
#[derive(Clone)]
pub struct Routed(Routes);

impl<R> ServerBuilder<R> {
    /// The worker's settings (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }
}

impl ServerBuilder<NoHandler> {
    /// The handler of buffered requests (`[rid, key, payload]` bodies): with no stream
    /// handler, every request.
    pub fn handler(self, handler: impl Handler) -> ServerBuilder<Routed> {
        self.routed(Routes::Buffered(Arc::new(handler)))
    }

    /// The handler of raw byte streams. With a buffered handler too, it gets the chunked
    /// requests (`transfer-encoding: chunked`, Node's `meta.isStream`, e.g. from
    /// [`PeerRpcClient::stream`]) and the handler the others; alone, it gets every request,
    /// chunked or not (Node's `disableBuffered: true`;
    /// [`StreamMeta::is_stream`](super::stream::StreamMeta::is_stream) tells them apart), and
    /// nothing is parsed as `[rid, key, payload]`: it may answer a buffered client with
    /// [`StreamResponder::reply`](super::stream::StreamResponder::reply). The size limit of
    /// [`ServerConfig::max_message_size`] does not apply to streamed bodies, which flow with
    /// backpressure.
    pub fn stream_handler(self, stream: impl StreamHandler) -> ServerBuilder<Routed> {
        self.routed(Routes::Streamed(Arc::new(stream)))
    }

    fn routed(self, routes: Routes) -> ServerBuilder<Routed> {
        ServerBuilder {
            link: self.link,
            config: self.config,
            routes: Routed(routes),
        }
    }
}

impl ServerBuilder<Routed> {
    /// The handler of buffered requests, beside the stream handler (see
    /// [`ServerBuilder::stream_handler`]); replaces an earlier one.
    pub fn handler(mut self, handler: impl Handler) -> Self {
        let buffered: Arc<dyn Handler> = Arc::new(handler);
        self.routes.0 = match self.routes.0 {
            Routes::Buffered(_) => Routes::Buffered(buffered),
            Routes::Split { stream, .. } | Routes::Streamed(stream) => {
                Routes::Split { buffered, stream }
            }
        };
        self
    }

    /// The stream handler, beside the buffered one (see
    /// [`ServerBuilder::<NoHandler>::stream_handler`]); replaces an earlier one.
    pub fn stream_handler(mut self, stream: impl StreamHandler) -> Self {
        let stream: Arc<dyn StreamHandler> = Arc::new(stream);
        self.routes.0 = match self.routes.0 {
            Routes::Buffered(buffered) | Routes::Split { buffered, .. } => {
                Routes::Split { buffered, stream }
            }
            Routes::Streamed(_) => Routes::Streamed(stream),
        };
        self
    }

    /// The worker. It serves nothing until [`PeerRpcServer::listen`].
    pub fn build(self) -> PeerRpcServer {
        PeerRpcServer {
            core: ServerCore::new(self.link, self.routes.0, self.config, serve, "http"),
        }
    }
}

impl PeerRpcServer {
    /// Starts making a worker that uses `link` to announce itself:
    /// `PeerRpcServer::builder(link).handler(h).build()`, with `.stream_handler(s)` for raw
    /// streams and `.config(c)` for other settings than the defaults.
    pub fn builder(link: Link) -> ServerBuilder {
        ServerBuilder {
            link,
            config: ServerConfig::default(),
            routes: NoHandler,
        }
    }

    super::server::worker_methods!();

    /// Closes gracefully: stops announcing and accepting (new connections are refused), lets
    /// the requests in flight finish and answer for at most `grace` (a keep-alive connection
    /// closes after its current answer, an idle one at once), then closes what is left.
    /// Returns once every connection is closed. The server may listen again afterwards.
    pub async fn close(&self, grace: Duration) {
        self.core.close(grace).await
    }
}

fn serve(
    accepted: Accepted,
    shared: Arc<Shared<Routes>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(conn::serve_connection(accepted, shared))
}

// ---------------------------------------------------------------------------------------
// Client

/// Settings of a [`PeerRpcClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpClientConfig {
    /// Send `grc-compress: gzip` with a gzip body and expect a gzip answer (Node
    /// `{compress: true}`). Default `false`.
    pub compress: bool,
    /// Largest answer read back, in bytes (also after gunzip). Default 100 MiB.
    pub max_response_size: usize,
    /// Idle keep-alive connections are not reused after this long, and are closed within half
    /// as long again. Default 4 s: Node HTTP servers close idle sockets after 5 s, and reusing
    /// one at that moment fails. At most 64 idle connections are kept per worker, 256 in all.
    pub idle_timeout: Duration,
    /// Connect with TLS (`https://{ip:port}/`, Node `secure`). Default `None` (`http://`).
    /// Like Node's HTTPS client, every request opens its own connection.
    pub tls: Option<TlsClientConfig>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            compress: false,
            max_response_size: 100 << 20,
            idle_timeout: Duration::from_secs(4),
            tls: None,
        }
    }
}

/// A client calling workers over HTTP (Node `PeerRPCClient` of grenache-nodejs-http).
/// Cheap to clone: clones share the keep-alive connection pool.
#[derive(Clone, Debug)]
pub struct PeerRpcClient {
    link: Link,
    config: HttpClientConfig,
    http: HttpClient,
    in_flight: Arc<InFlight>,
    /// Each destination's URI, parsed once rather than formatted and parsed per request; at
    /// most [`MAX_CACHED_URIS`], forgotten all at once when full.
    uris: Arc<std::sync::Mutex<HashMap<String, Uri>>>,
}

/// Destinations whose URI a client keeps parsed (more are parsed again after a reset).
const MAX_CACHED_URIS: usize = 256;

impl PeerRpcClient {
    /// A client looking workers up through `link`, with the default [`HttpClientConfig`].
    pub fn new(link: Link) -> Self {
        Self::with_config(link, HttpClientConfig::default())
    }

    /// Like [`PeerRpcClient::new`] with explicit settings.
    pub fn with_config(link: Link, config: HttpClientConfig) -> Self {
        let http = HttpClient::new(config.idle_timeout);
        PeerRpcClient {
            link,
            config,
            http,
            in_flight: Arc::default(),
            uris: Arc::default(),
        }
    }

    /// The Link used for lookups.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Sends `payload` to one worker of `name`, chosen at random among the lookup results,
    /// and waits for its answer. `timeout` bounds the whole call, lookup included; past it the
    /// error is `ERR_TIMEOUT`.
    pub async fn request(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let _in_flight = self.in_flight.enter()?;
        let deadline = Instant::now() + timeout;
        let dests = lookup_before(&self.link, name, deadline).await?;
        let dest =
            pick_dest(&dests, |_| false, 0).ok_or(RpcError::Lookup(LinkError::LookupEmpty))?;
        self.send(dest, name, payload, deadline).await
    }

    /// Sends `payload` to every worker of `name` at once (one request per lookup entry) and
    /// gathers the answers in lookup order. Unlike Node's fail-fast `map`, every answer is
    /// kept. The outer error is the lookup's (or `ERR_TIMEOUT` if it did not finish in time).
    pub async fn map(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        let _in_flight = self.in_flight.enter()?;
        let deadline = Instant::now() + timeout;
        let dests = lookup_before(&self.link, name, deadline).await?;
        let calls = dests
            .iter()
            .map(|dest| self.send(dest, name, payload.clone(), deadline));
        Ok(futures_util::future::join_all(calls).await)
    }

    /// Sends `payload` as a request for `name` to the worker at `dest` (`ip:port`), without a
    /// lookup.
    pub async fn request_to(
        &self,
        dest: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let _in_flight = self.in_flight.enter()?;
        self.send(dest, name, payload, Instant::now() + timeout)
            .await
    }

    /// Closes the client (every clone of it): new requests fail at once with
    /// `ERR_TRANSPORT_CLOSE`, those in flight get at most `grace` to finish, then the idle
    /// keep-alive connections close. Returns when they are closed. Streams already open are
    /// not cut.
    pub async fn close(&self, grace: Duration) {
        self.in_flight.close(grace).await;
        self.http.close_idle();
    }

    /// Opens a raw stream to one worker of `name`, chosen at random among the lookup results
    /// (Node's `peer.stream(key, {timeout, headers})`): a chunked `POST /` with the headers
    /// `_gr: ["<rid>","<name>"]`, `connection: close`, `transfer-encoding: chunked` and
    /// `options.headers`. Returns once connected; write the request body into
    /// [`RpcStream::body`] and await [`RpcStream::response`] (from another task, or after
    /// finishing the body, as a server may only answer once it has read it all).
    ///
    /// `options.timeout` bounds the whole exchange (Node ignores it for streams); without
    /// it, only the lookup is bounded (by the Link's timeouts).
    pub async fn stream(&self, name: &str, options: StreamOptions) -> Result<RpcStream, RpcError> {
        let _in_flight = self.in_flight.enter()?;
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let dests = match deadline {
            Some(deadline) => lookup_before(&self.link, name, deadline).await?,
            None => self.link.lookup(name).await?,
        };
        let dest =
            pick_dest(&dests, |_| false, 0).ok_or(RpcError::Lookup(LinkError::LookupEmpty))?;
        self.open_stream(dest, name, &options, deadline).await
    }

    /// Like [`PeerRpcClient::stream`] to the worker at `dest` (`ip:port`), without a lookup.
    pub async fn stream_to(
        &self,
        dest: &str,
        name: &str,
        options: StreamOptions,
    ) -> Result<RpcStream, RpcError> {
        let _in_flight = self.in_flight.enter()?;
        let deadline = options.timeout.map(|t| Instant::now() + t);
        self.open_stream(dest, name, &options, deadline).await
    }

    async fn open_stream(
        &self,
        dest: &str,
        name: &str,
        options: &StreamOptions,
        deadline: Option<Instant>,
    ) -> Result<RpcStream, RpcError> {
        let rid = new_rid();
        // Fills the `rid` of the caller's `rpc_client_request` span (rpc/metrics.rs), if any.
        tracing::Span::current().record("rid", rid.as_str());
        let headers = super::stream::stream_headers(&rid, name, &options.headers)?;
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{dest}/");
        let failed = |reason: String| {
            RpcError::Request(format!("request to {url} failed, reason: {reason}"))
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(dest)
                .await
                .map_err(|e| failed(crate::http_client::connect_reason(&e, dest)))?;
            let _ = tcp.set_nodelay(true);
            let io: Box<dyn Io> = match &self.config.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(tls.connect(dest, tcp).await.map_err(&failed)?),
            };
            hyper::client::conn::http1::handshake::<_, ChannelBody>(TokioIo::new(io))
                .await
                .map_err(|e| failed(crate::http_client::chain(&e)))
        };
        let (mut sender, connection) = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, connect)
                .await
                .map_err(|_| RpcError::Timeout)??,
            None => connect.await?,
        };
        let timed_out: TimedOut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&timed_out);
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let outcome = match deadline {
                None => connection.await,
                Some(deadline) => tokio::select! {
                    outcome = &mut connection => outcome,
                    () = tokio::time::sleep_until(deadline) => {
                        // Set before the connection drops, so readers and writers see
                        // ERR_TIMEOUT rather than a closed connection.
                        flag.store(true, Ordering::Release);
                        return;
                    }
                },
            };
            if let Err(e) = outcome {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    // The response future's own timer fired first and dropped the exchange.
                    flag.store(true, Ordering::Release);
                }
                tracing::debug!("grenache http stream: connection ended: {e}");
            }
        });
        let ready = sender.ready();
        let ready = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, ready)
                .await
                .map_err(|_| RpcError::Timeout)?,
            None => ready.await,
        };
        ready.map_err(|e| failed(crate::http_client::chain(&e)))?;
        let mut builder = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri("/");
        let mut has_host = false;
        for (header, value) in headers {
            has_host |= header == hyper::header::HOST;
            builder = builder.header(header, value);
        }
        if !has_host {
            builder = builder.header(hyper::header::HOST, dest);
        }
        let (body, channel) = super::stream::client_body(Arc::clone(&timed_out));
        let request = builder.body(channel).map_err(|e| failed(e.to_string()))?;
        let answer = sender.send_request(request);
        let response = async move {
            let answer = match deadline {
                Some(deadline) => {
                    let mut answer = std::pin::pin!(answer);
                    tokio::select! {
                        answer = &mut answer => answer,
                        () = tokio::time::sleep_until(deadline) => {
                            // Before the exchange is dropped: the writer's error must say
                            // ERR_TIMEOUT too.
                            timed_out.store(true, Ordering::Release);
                            return Err(RpcError::Timeout);
                        }
                    }
                }
                None => answer.await,
            };
            match answer {
                Ok(answer) => {
                    let (parts, body) = answer.into_parts();
                    Ok(StreamResponse {
                        status: parts.status,
                        headers: parts.headers,
                        body: BodyStream::new(body, None, Some(Arc::clone(&timed_out))),
                    })
                }
                Err(_) if timed_out.load(Ordering::Acquire) => Err(RpcError::Timeout),
                Err(e) => Err(RpcError::Request(format!(
                    "request to {url} failed, reason: {}",
                    crate::http_client::chain(&e)
                ))),
            }
        };
        Ok(RpcStream {
            rid,
            dest: dest.to_string(),
            body,
            response: PendingResponse::new(response),
        })
    }

    async fn send(
        &self,
        dest: &str,
        name: &str,
        payload: Value,
        deadline: Instant,
    ) -> Result<Value, RpcError> {
        let max = self.config.max_response_size;
        let rid = new_rid();
        // Fills the `rid` of the caller's `rpc_client_request` span (rpc/metrics.rs), if any.
        tracing::Span::current().record("rid", rid.as_str());
        let frame = encode_request(&rid, name, &payload);
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = || format!("{scheme}://{dest}/");
        let cached = crate::lock(&self.uris).get(dest).cloned();
        let uri = match cached {
            Some(uri) => uri,
            None => {
                let uri: Uri = url()
                    .parse()
                    .map_err(|e| RpcError::Request(format!("invalid destination {dest:?}: {e}")))?;
                let mut uris = crate::lock(&self.uris);
                if uris.len() >= MAX_CACHED_URIS {
                    uris.clear();
                }
                uris.insert(dest.to_string(), uri.clone());
                uri
            }
        };
        let compress_name = HeaderName::from_static(GRC_COMPRESS);
        let gzip_headers;
        let plain_headers;
        let (body, headers): (Vec<u8>, &[(HeaderName, HeaderValue)]) = if self.config.compress {
            let body = gzip(frame.as_bytes()).map_err(|_| RpcError::RequestEncodingCompression)?;
            gzip_headers = [(compress_name, HeaderValue::from_static("gzip"))];
            (body, &gzip_headers)
        } else {
            plain_headers = [
                (compress_name, HeaderValue::from_static("none")),
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain;charset=UTF-8"),
                ),
            ];
            (frame.into_bytes(), &plain_headers)
        };
        let posted = async {
            match &self.config.tls {
                None => self.http.post(&uri, headers, &body, max).await,
                Some(tls) => crate::http_client::post_tls(tls, dest, headers, &body, max).await,
            }
        };
        let (status, bytes) = match tokio::time::timeout_at(deadline, posted).await {
            Err(_) => return Err(RpcError::Timeout),
            Ok(Err(HttpFailure::Transport(reason))) => {
                return Err(RpcError::Request(format!(
                    "request to {} failed, reason: {reason}",
                    url()
                )))
            }
            Ok(Err(HttpFailure::TooLarge)) => {
                return Err(RpcError::Request(format!(
                    "content size at {} over limit: {max}",
                    url()
                )))
            }
            Ok(Ok(answer)) => answer,
        };
        if !status.is_success() {
            return Err(RpcError::Request(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        let bytes = if self.config.compress {
            gunzip(&bytes, max).map_err(|_| RpcError::ReplyEncodingCompression)?
        } else {
            bytes
        };
        let (reply_rid, outcome) = decode_reply(&bytes).ok_or(RpcError::ReplyEmpty)?;
        if reply_rid.as_deref() != Some(rid.as_str()) {
            return Err(RpcError::ReplyRidMismatch);
        }
        outcome
    }
}

super::rpc_client_by_inherent_methods!(PeerRpcClient);
