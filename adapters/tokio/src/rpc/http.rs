//! RPC over HTTP, as grenache-nodejs-http 1.0.2 (transports.md §4).
//!
//! * A request is `POST http://{ip:port}/` whose body is `[rid, key, payload]`, with the
//!   header `grc-compress: none` or `grc-compress: gzip`; with gzip the request body **and**
//!   the answer body are gzip bytes (no `Content-Encoding`).
//! * The answer is always status 200 with the body `[rid, err|null, result]`.
//! * The server accepts any method and path; the headers `_gr` (JSON `[rid, key]`, overriding
//!   the body's), `_a` (action) and `_ar` (JSON args) of Node's streaming requests are
//!   honoured for buffered bodies; a `_gr` that is not JSON is answered 500
//!   `[null, "ERR_HEADER_PARSE_GR", null]` as Node does.
//! * A body that is not a JSON array gets no answer (Node sends none): the connection is
//!   closed, with a log line. A body over the size limit is answered 413.
//!
//! Differences from Node, on purpose: timeouts are exact and always `ERR_TIMEOUT` (Node
//! prints `ERR_REQUEST_GENERIC: network timeout at: …` when node-fetch's timer wins); an
//! answer with another rid is `ERR_REPLY_RID_MISMATCH` at once (Node waits for its timeout);
//! the destination is chosen uniformly among the lookup results (Node's HTTP transports never
//! go inactive, so its "prefer active destinations" rule has no effect either); the raw
//! streaming API (`peer.stream`) is not implemented.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    decode_reply, decode_request, encode_reply, encode_request, key_text, lookup_before, Accepted,
    Handler, Request, RpcError, ServerConfig, ServerCore, Shared,
};
use crate::http_client::{HttpClient, HttpFailure};
use crate::link::{Link, LinkError};
use crate::tls::{CertInfo, TlsClientConfig};
use crate::{js_truthy, new_rid};

/// The header naming the body encoding (`none` or `gzip`).
const GRC_COMPRESS: &str = "grc-compress";

/// The exact 500 body Node sends for a `_gr` header that is not JSON (spaces included).
const ERR_HEADER_PARSE_GR: &str = "[null, \"ERR_HEADER_PARSE_GR\", null]";

/// gzip as Node's `zlib.gzip`: default level, OS byte 3 (Unix).
fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .operating_system(3)
        .write(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

#[derive(Debug, PartialEq)]
enum Gunzip {
    /// Not gzip data.
    Invalid,
    /// More than the limit once decompressed (a "zip bomb" stops here).
    TooLarge,
}

/// Decompresses `data` (one or more gzip members) into at most `max` bytes.
fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, Gunzip> {
    if data.is_empty() {
        return Err(Gunzip::Invalid);
    }
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    MultiGzDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| Gunzip::Invalid)?;
    if out.len() > max {
        Err(Gunzip::TooLarge)
    } else {
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------
// Server

/// A worker answering RPC requests over HTTP (Node `PeerRPCServer` of grenache-nodejs-http
/// with its `transport('server')`).
pub struct PeerRpcServer {
    core: ServerCore,
}

impl PeerRpcServer {
    /// A worker using `link` to announce itself and `handler` to answer, with the default
    /// [`ServerConfig`]. It serves nothing until [`PeerRpcServer::listen`].
    pub fn new(link: Link, handler: impl Handler) -> Self {
        Self::with_config(link, handler, ServerConfig::default())
    }

    /// Like [`PeerRpcServer::new`] with explicit settings.
    pub fn with_config(link: Link, handler: impl Handler, config: ServerConfig) -> Self {
        PeerRpcServer {
            core: ServerCore::new(link, Arc::new(handler), config, serve, "http"),
        }
    }

    /// Listens on `0.0.0.0:port` (all interfaces, as Node; port 0 picks a free one) and
    /// serves in background tasks. Returns the bound address.
    pub async fn listen(&self, port: u16) -> io::Result<SocketAddr> {
        self.core.listen(port).await
    }

    /// Listens on `addr` (e.g. `127.0.0.1:0`) and serves in background tasks.
    pub async fn listen_on(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        self.core.listen_on(addr).await
    }

    /// The bound address, once listening.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.core.local_addr()
    }

    /// The bound port, once listening.
    pub fn port(&self) -> Option<u16> {
        self.local_addr().map(|a| a.port())
    }

    /// The Link this worker announces with.
    pub fn link(&self) -> &Link {
        self.core.link()
    }

    /// Announces `name` at this worker's port once.
    pub async fn announce(&self, name: &str) -> Result<(), LinkError> {
        self.core.announce(name).await
    }

    /// Announces `name` now and periodically (see [`Link::start_announcing`]; the interval is
    /// the Link's `announce_interval`). `false` if not listening or already announcing it.
    pub fn start_announcing(&self, name: &str) -> bool {
        self.core.start_announcing(name, None)
    }

    /// Stops announcing `name`; `false` if it was not.
    pub fn stop_announcing(&self, name: &str) -> bool {
        self.core.stop_announcing(name)
    }

    /// Stops listening, closes every connection and stops the announcers. Dropping the
    /// server does the same.
    pub fn stop(&self) {
        self.core.stop()
    }
}

fn serve(accepted: Accepted, shared: Arc<Shared>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(accepted, shared))
}

async fn serve_connection(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        io,
        peer,
        cert,
        allowed,
    } = accepted;
    let read_timeout = shared.config.read_timeout;
    let service = service_fn(move |request| {
        handle(request, peer, cert.clone(), allowed, Arc::clone(&shared))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = connection.await {
        tracing::debug!("grenache http server: connection from {peer} ended: {e}");
    }
}

/// A request that gets no answer: hyper closes the connection.
#[derive(Debug)]
struct NoAnswer(String);

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoAnswer {}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    cert: Option<Arc<CertInfo>>,
    allowed: bool,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, NoAnswer> {
    if !allowed {
        // The TLS `verify_client` hook rejected this client.
        return Ok(plain(StatusCode::UNAUTHORIZED, "Forbidden"));
    }
    let config = &shared.config;
    let headers = request.headers();
    let compress = header_text(headers, GRC_COMPRESS).is_some_and(|v| v.contains("gzip"));
    let info = match headers.get("_gr") {
        None => None,
        Some(value) => {
            match value
                .to_str()
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
            {
                Some(info) => Some(info),
                None => {
                    tracing::warn!("grenache http server: bad _gr header from {peer}");
                    return Ok(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ERR_HEADER_PARSE_GR,
                    ));
                }
            }
        }
    };
    let action = header_text(headers, "_a").map(str::to_string);
    let args = header_text(headers, "_ar")
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .unwrap_or_else(|| json!({}));

    let limited = Limited::new(request.into_body(), config.max_message_size);
    let body = match tokio::time::timeout(config.read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            tracing::warn!("grenache http server: body from {peer} over the size limit");
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ERR_PAYLOAD_TOO_LARGE",
            ));
        }
        Ok(Err(e)) => return Err(NoAnswer(format!("reading the body failed: {e}"))),
        Err(_) => return Err(NoAnswer("reading the body timed out".to_string())),
    };
    let body = if compress {
        match gunzip(&body, config.max_message_size) {
            Ok(plain_body) => Bytes::from(plain_body),
            Err(Gunzip::TooLarge) => {
                tracing::warn!("grenache http server: gzip body from {peer} over the size limit");
                return Ok(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "ERR_PAYLOAD_TOO_LARGE",
                ));
            }
            // Node keeps the raw body when gunzip fails.
            Err(Gunzip::Invalid) => body,
        }
    } else {
        body
    };
    let (rid, key, payload) = match decode_request(&body) {
        Ok(parts) => parts,
        Err(why) => {
            tracing::warn!(
                "grenache http server: dropping a request from {peer}: body {why} (no reply, as Node)"
            );
            return Err(NoAnswer(format!("bad request body: {why}")));
        }
    };
    // `_gr` overrides the rid and key when its elements are truthy (Node `getRidKey`).
    let pick = |index: usize, fallback: Value| match info.as_ref().and_then(|i| i.get(index)) {
        Some(v) if js_truthy(v) => v.clone(),
        _ => fallback,
    };
    let rid = pick(0, rid);
    let key = pick(1, key);
    let request = Request {
        rid: rid.clone(),
        key: key_text(&key),
        payload,
        action,
        args,
        remote: peer,
        cert,
    };
    let outcome = match AssertUnwindSafe(shared.handler.handle(request))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::error!(
                "grenache http server: the handler of request {rid} from {peer} panicked"
            );
            Err(RpcError::new("ERR_HANDLER_PANIC"))
        }
    };
    let reply = encode_reply(&rid, &outcome);
    let reply = if compress {
        gzip(reply.as_bytes()).map_err(|e| NoAnswer(format!("gzip failed: {e}")))?
    } else {
        reply.into_bytes()
    };
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

// ---------------------------------------------------------------------------------------
// Client

/// Settings of a [`PeerRpcClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Send `grc-compress: gzip` with a gzip body and expect a gzip answer (Node
    /// `{compress: true}`). Default `false`.
    pub compress: bool,
    /// Largest answer read back, in bytes (also after gunzip). Default 100 MiB.
    pub max_response_size: usize,
    /// Idle keep-alive connections are closed after this long. Default 4 s: Node HTTP
    /// servers close idle sockets after 5 s, and reusing one at that moment fails.
    pub idle_timeout: Duration,
    /// Connect with TLS (`https://{ip:port}/`, Node `secure`). Default `None` (`http://`).
    /// Like Node's HTTPS client, every request opens its own connection.
    pub tls: Option<TlsClientConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
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
    config: ClientConfig,
    http: HttpClient,
}

impl PeerRpcClient {
    /// A client looking workers up through `link`, with the default [`ClientConfig`].
    pub fn new(link: Link) -> Self {
        Self::with_config(link, ClientConfig::default())
    }

    /// Like [`PeerRpcClient::new`] with explicit settings.
    pub fn with_config(link: Link, config: ClientConfig) -> Self {
        let http = HttpClient::new(config.idle_timeout);
        PeerRpcClient { link, config, http }
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
        let deadline = Instant::now() + timeout;
        let dests = lookup_before(&self.link, name, deadline).await?;
        let dest = super::pick_dest(&dests, |_| false, 0)
            .ok_or(RpcError::Lookup(LinkError::LookupEmpty))?;
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
        self.send(dest, name, payload, Instant::now() + timeout)
            .await
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
        let frame = encode_request(&rid, name, &payload);
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{dest}/");
        let uri: Uri = url
            .parse()
            .map_err(|e| RpcError::Request(format!("invalid destination {dest:?}: {e}")))?;
        let compress_name = HeaderName::from_static(GRC_COMPRESS);
        let (body, headers) = if self.config.compress {
            let body = gzip(frame.as_bytes()).map_err(|_| RpcError::RequestEncodingCompression)?;
            (
                Bytes::from(body),
                vec![(compress_name, HeaderValue::from_static("gzip"))],
            )
        } else {
            (
                Bytes::from(frame),
                vec![
                    (compress_name, HeaderValue::from_static("none")),
                    (
                        CONTENT_TYPE,
                        HeaderValue::from_static("text/plain;charset=UTF-8"),
                    ),
                ],
            )
        };
        let posted = async {
            match &self.config.tls {
                None => self.http.post(&uri, &headers, body, max).await,
                Some(tls) => crate::http_client::post_tls(tls, dest, &headers, body, max).await,
            }
        };
        let (status, bytes) = match tokio::time::timeout_at(deadline, posted).await {
            Err(_) => return Err(RpcError::Timeout),
            Ok(Err(HttpFailure::Transport(reason))) => {
                return Err(RpcError::Request(format!(
                    "request to {url} failed, reason: {reason}"
                )))
            }
            Ok(Err(HttpFailure::TooLarge)) => {
                return Err(RpcError::Request(format!(
                    "content size at {url} over limit: {max}"
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
            bytes.to_vec()
        };
        let (reply_rid, outcome) = decode_reply(&bytes).ok_or(RpcError::ReplyEmpty)?;
        if reply_rid.as_str() != Some(rid.as_str()) {
            return Err(RpcError::ReplyRidMismatch);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_roundtrip_and_node_header() {
        let packed = gzip(b"[\"r\",null,1]").unwrap();
        assert_eq!(&packed[..3], &[0x1f, 0x8b, 0x08]);
        assert_eq!(packed[9], 3, "OS byte as Node's zlib");
        assert_eq!(gunzip(&packed, 100).unwrap(), b"[\"r\",null,1]");
    }

    #[test]
    fn gunzip_is_bounded_and_total() {
        let bomb = gzip(&vec![0u8; 1 << 20]).unwrap();
        assert!(bomb.len() < 10_000);
        assert_eq!(gunzip(&bomb, 1000), Err(Gunzip::TooLarge));
        assert_eq!(gunzip(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(gunzip(b"", 10), Err(Gunzip::Invalid));
        assert_eq!(gunzip(b"plain text", 100), Err(Gunzip::Invalid));
        let mut two = gzip(b"ab").unwrap();
        two.extend(gzip(b"cd").unwrap());
        assert_eq!(gunzip(&two, 10).unwrap(), b"abcd");
    }
}
