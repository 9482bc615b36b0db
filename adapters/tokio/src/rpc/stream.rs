//! Raw byte streams over the HTTP transport: Node's `peer.stream(key, {timeout, headers})`
//! and the `'stream'` event of grenache-nodejs-http 1.0.2 (docs/protocol.md §10.6, §10.3).
//!
//! * A stream request is `POST http(s)://{ip:port}/` with the headers
//!   `_gr: ["<rid>","<key>"]`, `connection: close`, `transfer-encoding: chunked`, then the
//!   caller's headers (`_a` action, `_ar` args, `content-type`…; values that are not strings
//!   are sent as JSON), and the caller's raw bytes as a chunked body. The response body is
//!   handed back raw: no JSON framing, no gunzip.
//! * A server given a [`StreamHandler`] (see [`super::http::ServerBuilder::stream_handler`])
//!   passes every chunked request to it with the request's [`StreamMeta`] (Node's `meta`)
//!   and a [`StreamResponder`] to answer with. Without one, a chunked body is parsed as a
//!   buffered `[rid, key, payload]` request, as Node's buffered server does.
//!
//! Both directions flow with backpressure: bodies are read from the socket only as fast as
//! they are consumed ([`BodyStream`]), and written through a channel of
//! [`STREAM_CHANNEL_CHUNKS`] chunks ([`BodySender`]), so memory stays bounded whatever the
//! body size.
//!
//! Differences from Node, on purpose:
//! * [`StreamOptions::timeout`] is enforced (Node ignores it for streams): past it, the
//!   connection is dropped and every side of the stream fails with `ERR_TIMEOUT`.
//! * A server-side stream body that stays idle for the server's `read_timeout` fails with
//!   [`io::ErrorKind::TimedOut`] (Node only has its optional socket idle timeout).
//! * A handler that returns without answering gets an empty 200 (Node leaves the client
//!   waiting); one that fails or panics has its connection closed mid-body, so the client sees
//!   an error rather than a truncated body that looks complete.
//! * [`StreamResponder::reply`] gzips its frame when the request had `grc-compress: gzip`
//!   (Node's streaming `reply` never does, so Node's own compressing clients fail on it).
//! * Node emits `'stream'` for every request and, unless `disableBuffered`, also parses the
//!   same body as a buffered request; here each request takes one route: chunked ones go to
//!   the stream handler when there is one, the others to the buffered handler (or every
//!   request to the stream handler when the server has no buffered handler).
//! * Header names go out lowercase (`host`, not Node's `Host`); HTTP header names are
//!   case-insensitive.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::{Body, Frame, Incoming};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

pub use hyper::header::{HeaderMap, HeaderName, HeaderValue};
pub use hyper::StatusCode;

use super::error::RpcError;
use super::frame::{encode_reply, key_text};
use super::gzip::gzip;
use crate::tls::CertInfo;

/// Chunks a [`BodySender`] may have queued before `send`/`write` waits for the connection to
/// take them (the backpressure bound).
pub const STREAM_CHANNEL_CHUNKS: usize = 8;

/// Largest chunk one `AsyncWrite::poll_write` on a [`BodySender`] queues (a longer buffer is
/// taken in several writes), so queued memory is at most
/// `STREAM_CHANNEL_CHUNKS * MAX_WRITE_CHUNK` through that interface.
pub const MAX_WRITE_CHUNK: usize = 64 * 1024;

/// The message of every error caused by [`StreamOptions::timeout`].
const TIMEOUT_TEXT: &str = "ERR_TIMEOUT";

fn timeout_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, TIMEOUT_TEXT)
}

/// Set by a client stream's connection task when the stream's deadline passed, so that the
/// errors seen by the body reader and writer say `ERR_TIMEOUT` instead of "closed".
pub(crate) type TimedOut = Arc<AtomicBool>;

fn timed_out(flag: &Option<TimedOut>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Acquire))
}

// ---------------------------------------------------------------------------------------
// Writing a body

type Permit = mpsc::OwnedPermit<io::Result<Bytes>>;
type Reserve = Pin<Box<dyn Future<Output = Result<Permit, mpsc::error::SendError<()>>> + Send>>;

enum SendState {
    Idle(mpsc::Sender<io::Result<Bytes>>),
    Reserving(Reserve),
    Closed,
}

/// The writing end of a streamed body: the request body of a client stream
/// ([`RpcStream::body`]) or the response body of a server stream
/// ([`StreamResponder::start`]).
///
/// Write with [`BodySender::send`] or through [`AsyncWrite`] (e.g. `tokio::io::copy`). At
/// most [`STREAM_CHANNEL_CHUNKS`] chunks wait in the queue; past that, writing waits for the
/// peer to read. [`BodySender::finish`], `shutdown()` or dropping the sender ends the body
/// cleanly; [`BodySender::abort`] breaks the connection so that the peer sees an error.
pub struct BodySender {
    state: SendState,
    timed_out: Option<TimedOut>,
}

impl std::fmt::Debug for BodySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySender")
            .field("open", &!matches!(self.state, SendState::Closed))
            .finish()
    }
}

impl BodySender {
    fn new(capacity: usize, timed_out: Option<TimedOut>) -> (Self, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            BodySender {
                state: SendState::Idle(tx),
                timed_out,
            },
            ChannelBody {
                rx,
                done: None,
                _task: None,
            },
        )
    }

    fn closed_error(&self) -> io::Error {
        if timed_out(&self.timed_out) {
            timeout_error()
        } else {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the stream's connection is closed",
            )
        }
    }

    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Permit>> {
        loop {
            match std::mem::replace(&mut self.state, SendState::Closed) {
                SendState::Idle(tx) => {
                    self.state = SendState::Reserving(Box::pin(tx.reserve_owned()));
                }
                SendState::Reserving(mut reserve) => {
                    return match reserve.as_mut().poll(cx) {
                        Poll::Pending => {
                            self.state = SendState::Reserving(reserve);
                            Poll::Pending
                        }
                        Poll::Ready(Ok(permit)) => Poll::Ready(Ok(permit)),
                        Poll::Ready(Err(_)) => Poll::Ready(Err(self.closed_error())),
                    };
                }
                SendState::Closed => return Poll::Ready(Err(self.closed_error())),
            }
        }
    }

    /// Queues `chunk`, waiting while the queue is full. Empty chunks are skipped (in chunked
    /// encoding an empty chunk would end the body). Fails once the connection is gone
    /// (`ERR_TIMEOUT` with [`io::ErrorKind::TimedOut`] if the stream's timeout closed it).
    pub async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let permit = std::future::poll_fn(|cx| self.poll_reserve(cx)).await?;
        self.state = SendState::Idle(permit.send(Ok(chunk)));
        Ok(())
    }

    /// Ends the body cleanly (the terminating chunk is sent once the queue drains). The same
    /// as dropping the sender.
    pub fn finish(self) {}

    /// Ends the body abnormally: the connection is closed without the terminating chunk, so
    /// the peer gets an error instead of a body that looks complete.
    pub async fn abort(mut self, reason: &str) {
        if let Ok(permit) = std::future::poll_fn(|cx| self.poll_reserve(cx)).await {
            permit.send(Err(io::Error::other(reason.to_string())));
        }
    }
}

impl AsyncWrite for BodySender {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let permit = ready!(this.poll_reserve(cx))?;
        let n = buf.len().min(MAX_WRITE_CHUNK);
        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or(buf));
        this.state = SendState::Idle(permit.send(Ok(chunk)));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued chunks are the connection's to write; there is nothing to push further.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().state = SendState::Closed;
        Poll::Ready(Ok(()))
    }
}

/// Aborts a task when dropped: a stream handler's task lives as long as its response body.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The body hyper writes: what a [`BodySender`] queues.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// Server side: `true` once the handler returned `Ok`. The body only ends cleanly then;
    /// a handler that failed or panicked breaks the connection instead.
    done: Option<oneshot::Receiver<bool>>,
    /// Server side: the handler's task, aborted if the connection goes away first.
    _task: Option<AbortOnDrop>,
}

impl ChannelBody {
    /// Ties the stream handler's task to this body: dropped with it.
    pub(crate) fn own_task(&mut self, task: AbortOnDrop) {
        self._task = Some(task);
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => match self.done.as_mut() {
                None => Poll::Ready(None),
                Some(done) => {
                    let ok = matches!(ready!(Pin::new(done).poll(cx)), Ok(true));
                    self.done = None;
                    if ok {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(io::Error::other("the stream handler failed"))))
                    }
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a body

/// The reading end of a streamed body: the request body a [`StreamHandler`] gets, or the
/// response body of a client stream ([`StreamResponse::body`]).
///
/// Read it chunk by chunk ([`BodyStream::chunk`], or as a [`Stream`] of `io::Result<Bytes>`),
/// as an [`AsyncRead`], or whole with [`BodyStream::collect`]. Nothing is read from the socket
/// until asked for, so a slow reader slows the sender down (TCP backpressure).
pub struct BodyStream {
    body: Incoming,
    /// What an `AsyncRead` read left of the current chunk.
    leftover: Bytes,
    /// Server side: fail when no data came for this long while being read.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// The idle timer runs (it is re-armed each time the reader starts waiting).
    armed: bool,
    timed_out: Option<TimedOut>,
    ended: bool,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("ended", &self.ended)
            .finish()
    }
}

impl BodyStream {
    pub(crate) fn new(body: Incoming, idle: Option<Duration>, timed_out: Option<TimedOut>) -> Self {
        BodyStream {
            body,
            leftover: Bytes::new(),
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            armed: false,
            timed_out,
            ended: false,
        }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if !self.leftover.is_empty() {
            return Poll::Ready(Some(Ok(std::mem::take(&mut self.leftover))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.armed = false;
                    match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                        // Empty data or trailers: nothing for the reader.
                        _ => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    let error = if timed_out(&self.timed_out) {
                        timeout_error()
                    } else {
                        io::Error::other(format!("reading the stream failed: {e}"))
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if let Some((idle, timer)) = self.idle.as_mut() {
                        if !self.armed {
                            timer.as_mut().reset(Instant::now() + *idle);
                            self.armed = true;
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            self.ended = true;
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("no stream data for {idle:?}"),
                            ))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The next chunk of the body; `None` at its end. An error ends the stream (a client
    /// stream past its timeout fails with `ERR_TIMEOUT`, [`io::ErrorKind::TimedOut`]).
    pub async fn chunk(&mut self) -> Option<io::Result<Bytes>> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Reads the rest of the body into memory, failing with [`io::ErrorKind::InvalidData`]
    /// past `max` bytes.
    pub async fn collect(mut self, max: usize) -> io::Result<Bytes> {
        let mut all = Vec::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if all.len().saturating_add(chunk.len()) > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the stream is longer than {max} bytes"),
                ));
            }
            all.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(all))
    }
}

impl Stream for BodyStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_chunk(cx)
    }
}

impl AsyncRead for BodyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        match ready!(this.poll_chunk(cx)) {
            None => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok(mut chunk)) => {
                let n = chunk.len().min(buf.remaining());
                let rest = chunk.split_off(n);
                buf.put_slice(&chunk);
                this.leftover = rest;
                Poll::Ready(Ok(()))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client side

/// Settings of one client stream ([`super::http::PeerRpcClient::stream`]; Node's
/// `peer.stream(key, {timeout, headers})`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamOptions {
    /// Headers sent after `_gr`, `connection` and `transfer-encoding`, in this order (a
    /// header of the same name replaces one of those, as Node's object spread does). String
    /// values are sent as they are; other JSON values as their JSON text, e.g. `_ar`.
    pub headers: Vec<(String, Value)>,
    /// A deadline for the whole exchange: lookup, connection, request body and response
    /// body. Past it the connection is dropped and every side fails with `ERR_TIMEOUT`.
    /// `None` (the default, Node's behaviour) never times out; the lookup keeps the Link's
    /// own timeouts.
    pub timeout: Option<Duration>,
}

impl StreamOptions {
    /// No headers and no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header (`value` a string, or any JSON value sent as its JSON text).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds the `_a` (action) header, Node's `meta.action` on the server.
    pub fn action(self, action: impl Into<String>) -> Self {
        self.header("_a", Value::String(action.into()))
    }

    /// Adds the `_ar` (args) header, JSON, Node's `meta.args` on the server.
    pub fn args(self, args: Value) -> Self {
        self.header("_ar", args)
    }

    /// Sets the deadline of the whole exchange.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The headers of a stream request, in Node's order: `_gr`, `connection: close`,
/// `transfer-encoding: chunked`, then the caller's (replacing same-named ones in place).
pub(crate) fn stream_headers(
    rid: &str,
    key: &str,
    user: &[(String, Value)],
) -> Result<Vec<(HeaderName, HeaderValue)>, RpcError> {
    let info = serde_json::json!([rid, key]).to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("_gr".to_string(), info),
        ("connection".to_string(), "close".to_string()),
        ("transfer-encoding".to_string(), "chunked".to_string()),
    ];
    for (name, value) in user {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match headers.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = text,
            None => headers.push((name.clone(), text)),
        }
    }
    headers
        .into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| RpcError::Request(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                RpcError::Request(format!("invalid value of header {name:?}: {value:?}"))
            })?;
            Ok((header, value))
        })
        .collect()
}

/// The response of a client stream: status, headers and the raw body.
#[derive(Debug)]
pub struct StreamResponse {
    /// The HTTP status (Node's stream client ignores it; a bad `_gr` gives 500).
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The raw response body.
    pub body: BodyStream,
}

/// The future of a client stream's response head. It resolves once the server has started
/// its answer, which many servers (Node's buffered one among them) only do after reading
/// the whole request body: finish [`RpcStream::body`] first, or write it from another task.
/// Dropping it cancels the exchange (the connection closes and the body writer fails).
pub struct PendingResponse {
    inner: Pin<Box<dyn Future<Output = Result<StreamResponse, RpcError>> + Send>>,
}

impl std::fmt::Debug for PendingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingResponse")
    }
}

impl PendingResponse {
    pub(crate) fn new(
        inner: impl Future<Output = Result<StreamResponse, RpcError>> + Send + 'static,
    ) -> Self {
        PendingResponse {
            inner: Box::pin(inner),
        }
    }
}

impl Future for PendingResponse {
    type Output = Result<StreamResponse, RpcError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// An open client stream (Node's duplex from `peer.stream`): write the request body into
/// `body`, await `response` for the answer.
#[derive(Debug)]
pub struct RpcStream {
    /// The request id sent in `_gr`.
    pub rid: String,
    /// The destination (`ip:port`) chosen among the lookup results.
    pub dest: String,
    /// The request body; finish or drop it to end the request.
    pub body: BodySender,
    /// The response.
    pub response: PendingResponse,
}

pub(crate) fn client_body(timed_out: TimedOut) -> (BodySender, ChannelBody) {
    BodySender::new(STREAM_CHANNEL_CHUNKS, Some(timed_out))
}

// ---------------------------------------------------------------------------------------
// Server side

/// What grenache-nodejs-http's `meta` holds for a request (docs/protocol.md §10.3).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMeta {
    /// The `_gr` header parsed as JSON (Node `meta.infoHeaders`): `[rid, key]` from Node's
    /// stream clients; `None` without the header.
    pub info_headers: Option<Value>,
    /// The `_a` header (Node `meta.action`).
    pub action: Option<String>,
    /// The `_ar` header parsed as JSON, `{}` when absent or invalid (Node `meta.args`).
    pub args: Value,
    /// The request body is chunked (`transfer-encoding: chunked`, Node `meta.isStream`).
    pub is_stream: bool,
    /// The request had `grc-compress` containing `gzip` (Node `meta.compress`).
    pub compress: bool,
    /// The client's address.
    pub remote: SocketAddr,
    /// Over TLS, the client's certificate (Node `meta.cert`); `None` without TLS.
    pub cert: Option<Arc<CertInfo>>,
}

impl StreamMeta {
    /// The rid of `_gr` (its first element), if any.
    pub fn rid(&self) -> Option<&Value> {
        self.info_headers.as_ref().and_then(|i| i.get(0))
    }

    /// The key of `_gr` (its second element) as text, if any.
    pub fn key(&self) -> Option<String> {
        self.info_headers
            .as_ref()
            .and_then(|i| i.get(1))
            .map(key_text)
    }
}

/// A streamed request as a [`StreamHandler`] gets it (Node's `req` and `meta`).
#[derive(Debug)]
pub struct StreamRequest {
    /// `_gr`, `_a`, `_ar` and the rest of Node's `meta`.
    pub meta: StreamMeta,
    /// All request headers (e.g. `content-type`).
    pub headers: HeaderMap,
    /// The raw request body. It fails with [`io::ErrorKind::TimedOut`] when no data comes
    /// for the server's `read_timeout` while being read.
    pub body: BodyStream,
}

/// How a [`StreamHandler`] answers (Node's `rep` and `handler.reply`). Set the status and
/// headers first, then either [`StreamResponder::start`] a raw body or
/// [`StreamResponder::reply`] with a `[rid, err, result]` frame. The response head is only
/// sent then; a handler may keep reading the request body meanwhile and after.
pub struct StreamResponder {
    head: Option<oneshot::Sender<hyper::Response<ChannelBody>>>,
    status: StatusCode,
    headers: HeaderMap,
    compress: bool,
    done: Option<oneshot::Receiver<bool>>,
}

impl std::fmt::Debug for StreamResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResponder")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish()
    }
}

impl StreamResponder {
    pub(crate) fn new(
        head: oneshot::Sender<hyper::Response<ChannelBody>>,
        done: oneshot::Receiver<bool>,
        compress: bool,
    ) -> Self {
        StreamResponder {
            head: Some(head),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            compress,
            done: Some(done),
        }
    }

    /// Sets the status (default 200).
    pub fn set_status(&mut self, status: StatusCode) {
        self.status = status;
    }

    /// The response headers to send.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Sends the response head and returns the writer of the raw body. The body ends
    /// cleanly once the writer is finished or dropped **and** the handler returned `Ok`.
    pub fn start(mut self) -> BodySender {
        let (sender, mut body) = BodySender::new(STREAM_CHANNEL_CHUNKS, None);
        body.done = self.done.take();
        let mut response = hyper::Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = std::mem::take(&mut self.headers);
        if let Some(head) = self.head.take() {
            // The receiver is gone only when the connection is: writes will fail then.
            let _ = head.send(response);
        }
        sender
    }

    /// Answers with the frame `[rid, err|null, result]` as a buffered worker would (Node's
    /// `handler.reply(rid, err, res)` of the `'stream'` event), gzipped when the request
    /// had `grc-compress: gzip`, and ends the body.
    pub async fn reply(self, rid: &Value, outcome: &Result<Value, RpcError>) -> io::Result<()> {
        let frame = encode_reply(rid, outcome);
        let bytes = if self.compress {
            gzip(frame.as_bytes())?
        } else {
            frame.into_bytes()
        };
        let mut body = self.start();
        body.send(Bytes::from(bytes)).await
    }
}

/// The future a [`StreamHandler`] returns.
pub type StreamHandlerFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'static>>;

/// What a worker does with a streamed request: Node's
/// `service.on('stream', (req, rep, meta, handler) => …)`.
///
/// Any `Fn(StreamRequest, StreamResponder) -> impl Future<Output = io::Result<()>>` closure
/// is one. Returning `Err` (or panicking) after the response started closes the connection
/// mid-body; before, the connection is closed without an answer. Returning `Ok` without
/// answering sends an empty 200.
pub trait StreamHandler: Send + Sync + 'static {
    /// Handles one streamed request. Many calls may run at once, on any thread.
    fn handle(&self, request: StreamRequest, responder: StreamResponder) -> StreamHandlerFuture;
}

impl<F, Fut> StreamHandler for F
where
    F: Fn(StreamRequest, StreamResponder) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    fn handle(&self, request: StreamRequest, responder: StreamResponder) -> StreamHandlerFuture {
        Box::pin(self(request, responder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(headers: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn stream_headers_are_node_headers_in_node_order() {
        let opts = StreamOptions::new()
            .action("upload")
            .args(json!({"foo": "bar"}))
            .header("content-type", "application/pdf");
        let headers = stream_headers("372c5f4a", "rpc_test", &opts.headers).unwrap();
        assert_eq!(
            text(&headers),
            vec![
                ("_gr".into(), r#"["372c5f4a","rpc_test"]"#.into()),
                ("connection".into(), "close".into()),
                ("transfer-encoding".into(), "chunked".into()),
                ("_a".into(), "upload".into()),
                ("_ar".into(), r#"{"foo":"bar"}"#.into()),
                ("content-type".into(), "application/pdf".into()),
            ]
        );
    }

    #[test]
    fn non_string_header_values_are_json() {
        let user = vec![
            ("n".to_string(), json!(5)),
            ("b".to_string(), json!(true)),
            ("z".to_string(), Value::Null),
            ("l".to_string(), json!([1, "x"])),
            ("s".to_string(), json!("plain \"text\"")),
        ];
        let headers = stream_headers("r", "k", &user).unwrap();
        assert_eq!(
            text(&headers[3..]),
            vec![
                ("n".into(), "5".into()),
                ("b".into(), "true".into()),
                ("z".into(), "null".into()),
                ("l".into(), r#"[1,"x"]"#.into()),
                ("s".into(), "plain \"text\"".into()),
            ]
        );
    }

    #[test]
    fn user_headers_replace_same_named_ones_in_place() {
        let user = vec![("_gr".to_string(), json!(["mine", "key"]))];
        let headers = stream_headers("r", "k", &user).unwrap();
        assert_eq!(headers.len(), 3);
        assert_eq!(
            text(&headers)[0],
            ("_gr".into(), r#"["mine","key"]"#.into())
        );
    }

    #[test]
    fn invalid_headers_are_errors_not_panics() {
        for (name, value) in [("bad name", json!("x")), ("ok", json!("line\nbreak"))] {
            let user = vec![(name.to_string(), value)];
            let error = stream_headers("r", "k", &user).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("ERR_REQUEST_GENERIC: invalid"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_gr_header_escapes_json() {
        let headers = stream_headers("r\"1", "k", &[]).unwrap();
        assert_eq!(text(&headers)[0].1, r#"["r\"1","k"]"#);
    }

    #[tokio::test]
    async fn body_sender_is_bounded_and_ends() {
        let (mut sender, mut body) = BodySender::new(2, None);
        sender.send(Bytes::from_static(b"a")).await.unwrap();
        sender.send(Bytes::new()).await.unwrap();
        sender.send(Bytes::from_static(b"b")).await.unwrap();
        // The queue is full: a third chunk waits.
        let third = tokio::time::timeout(
            Duration::from_millis(50),
            sender.send(Bytes::from_static(b"c")),
        )
        .await;
        assert!(third.is_err(), "a full queue must make the writer wait");
        let mut got = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            got.extend_from_slice(&frame.unwrap().into_data().unwrap());
            if got.len() == 2 {
                sender.send(Bytes::from_static(b"d")).await.unwrap();
                drop(std::mem::replace(
                    &mut sender,
                    BodySender {
                        state: SendState::Closed,
                        timed_out: None,
                    },
                ));
            }
        }
        assert_eq!(got, b"abd");
        let closed = sender.send(Bytes::from_static(b"x")).await.unwrap_err();
        assert_eq!(closed.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn async_write_splits_big_buffers_and_reports_timeouts() {
        use tokio::io::AsyncWriteExt;
        let flag: TimedOut = Arc::new(AtomicBool::new(false));
        let (mut sender, body) = BodySender::new(4, Some(Arc::clone(&flag)));
        let big = vec![7u8; MAX_WRITE_CHUNK + 10];
        let n = sender.write(&big).await.unwrap();
        assert_eq!(n, MAX_WRITE_CHUNK);
        drop(body);
        flag.store(true, Ordering::Release);
        let error = sender.write_all(b"more").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(error.to_string(), "ERR_TIMEOUT");
    }

    #[tokio::test]
    async fn a_failed_handler_breaks_the_body() {
        let (sender, mut body) = BodySender::new(2, None);
        let (done_tx, done_rx) = oneshot::channel();
        body.done = Some(done_rx);
        drop(sender);
        done_tx.send(false).unwrap();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(matches!(frame, Some(Err(_))));
    }
}
