//! RPC over WebSocket, as grenache-nodejs-ws 1.0.0 (docs/protocol.md §9).
//!
//! * Requests are text frames `[rid, key, payload]`, answers text frames
//!   `[rid, err|null, result]`; any number of requests share a connection and answers come in
//!   any order, matched by rid.
//! * The client connects to `ws://{ip:port}/ws`; the server accepts any path, declines
//!   permessage-deflate and negotiates no subprotocol (either would crash a Node client).
//! * A malformed request gets what `grenache_core::wire::frame` prescribes, as on HTTP and in the
//!   embassy worker: no answer when it is not JSON, not an array or has no string/number rid
//!   (Node answers none either, or one no client can match); `[rid,"ERR_REQUEST_MALFORMED",null]`
//!   when the rid is readable but the key is not a string (Node would run the handler). The
//!   server logs a line and goes on with the connection. A message over the size limit closes
//!   the connection.
//! * Against hostile clients (see [`ServerConfig`]): at most `max_connections_per_ip`
//!   connections per client IP; the upgrade must arrive within `read_timeout`; a connection
//!   quiet for `idle_timeout` is pinged and closed (1001) if still silent after as long again;
//!   a message larger than [`SMALL_MESSAGE`] is charged to the worker's `memory_budget` as its
//!   frame headers arrive, and closes the connection (1009) when the budget cannot hold it; a
//!   message arriving slower than `min_body_rate` after `read_timeout` closes it (1008).
//!
//! Differences from Node, on purpose: timeouts are exact, to within 5 ms (Node checks every
//! 10 s); requests
//! in flight when a connection closes fail at once with `ERR_TRANSPORT_CLOSE` (Node lets them
//! time out); an unreachable worker is an `ERR_REQUEST_GENERIC` error (it crashes Node).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::client::{lookup_before, pick_dest, InFlight, IDLE_TIMEOUT};
use super::error::RpcError;
use super::frame::{decode_reply, decode_request, encode_reply, encode_request, BadRequest};
use super::handler::{Handler, Request};
use super::server::{
    Accepted, Activity, Busy, Io, ServerConfig, ServerCore, Shared, SMALL_MESSAGE,
};
use crate::limits::{MemoryBudget, MinProgress, Reservation};
use crate::link::{Link, LinkError};
use crate::tls::{CertInfo, TlsClientConfig};
use crate::{lock, new_shared_rid};
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The tungstenite settings of every Grenache WebSocket (RPC and pub/sub), for messages of at
/// most `max_message_size` bytes.
///
/// The read buffer is [`WS_READ_BUFFER`], not tungstenite's 128 KiB: tungstenite zero-fills
/// the free part of its read buffer before every read, and with Grenache's small frames that
/// memset was the largest single cost of a request (about a tenth of the CPU of each side).
/// Larger messages still arrive whole, over several reads.
pub(crate) fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Bytes asked of the socket per WebSocket read by Grenache's WebSocket peers (tungstenite's
/// default is 128 KiB, which it zero-fills before every read: with small frames that memset was
/// about a tenth of the CPU of a request).
pub const WS_READ_BUFFER: usize = 8 * 1024;

// ---------------------------------------------------------------------------------------
// Server

/// A worker answering RPC requests over WebSocket (Node `PeerRPCServer` of
/// grenache-nodejs-ws with its `transport('server')`). Made by [`PeerRpcServer::builder`].
pub struct PeerRpcServer {
    core: ServerCore<Arc<dyn Handler>>,
}

/// A worker's settings before it exists ([`PeerRpcServer::builder`]): `.handler`,
/// optionally `.config`, then `.build()`. `H` is [`NoHandler`] until the handler is given:
/// only then is there a `build`.
#[must_use = "a builder does nothing until `.build()`"]
pub struct ServerBuilder<H = NoHandler> {
    link: Link,
    config: ServerConfig,
    handler: H,
}

/// The state of a [`ServerBuilder`] given no handler yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHandler;

/// The state of a [`ServerBuilder`] given its handler.
#[derive(Clone)]
pub struct WithHandler(Arc<dyn Handler>);

impl<H> ServerBuilder<H> {
    /// The worker's settings (default: [`ServerConfig::default`]).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// What answers the requests.
    pub fn handler(self, handler: impl Handler) -> ServerBuilder<WithHandler> {
        ServerBuilder {
            link: self.link,
            config: self.config,
            handler: WithHandler(Arc::new(handler)),
        }
    }
}

impl ServerBuilder<WithHandler> {
    /// The worker. It serves nothing until [`PeerRpcServer::listen`].
    pub fn build(self) -> PeerRpcServer {
        PeerRpcServer {
            core: ServerCore::new(self.link, self.handler.0, self.config, serve, "ws"),
        }
    }
}

impl PeerRpcServer {
    /// Starts making a worker that uses `link` to announce itself:
    /// `PeerRpcServer::builder(link).handler(h).build()`, with `.config(c)` for other
    /// settings than the defaults.
    pub fn builder(link: Link) -> ServerBuilder {
        ServerBuilder {
            link,
            config: ServerConfig::default(),
            handler: NoHandler,
        }
    }

    super::server::worker_methods!();

    /// Closes gracefully: stops announcing and accepting (new connections are refused), stops
    /// reading requests, lets those in flight finish and answer for at most `grace`, then
    /// closes every connection (code 1001, "going away"). Returns once they are all closed.
    /// The server may listen again afterwards.
    pub async fn close(&self, grace: Duration) {
        self.core.close(grace).await
    }
}

/// Where a WebSocket worker's requests go.
type Routes = Arc<dyn Handler>;

fn serve(
    accepted: Accepted,
    shared: Arc<Shared<Routes>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(serve_connection(accepted, shared))
}

async fn serve_connection(accepted: Accepted, shared: Arc<Shared<Routes>>) {
    let Accepted {
        io,
        peer,
        cert,
        allowed,
        activity,
    } = accepted;
    let config = ws_config(shared.config.max_message_size);
    // A client the TLS hook rejected gets `401 Forbidden` on its upgrade, as Node's
    // `verifyClient` callback `cb(false, 401, 'Forbidden')`.
    // The error type is tungstenite's (an HTTP response), not ours to shrink.
    #[allow(clippy::result_large_err)]
    let gate = move |_: &WsRequest, response: WsResponse| {
        if allowed {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some("Forbidden".to_string()));
            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refusal)
        }
    };
    let progress = MinProgress {
        grace: shared.config.read_timeout,
        min_rate: shared.config.min_body_rate,
    };
    let io = Metered::new(
        io,
        shared.budget.clone(),
        shared.config.max_message_size,
        progress,
        activity.clone(),
    );
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(io, gate, Some(config));
    let mut ws = match tokio::time::timeout(shared.config.read_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("grenache ws server: handshake with {peer} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("grenache ws server: handshake with {peer} timed out");
            return;
        }
    };
    // The handlers of this connection run concurrently on its task: a batch of requests read
    // together is answered together, with one write (spawning a task per request cost more
    // than the framing; a CPU-heavy handler should spawn its own work). Dropping the set
    // when the connection ends cancels those still running.
    let mut running = FuturesUnordered::new();
    let max_in_flight = shared.config.max_in_flight.max(1);
    let mut liveness = Liveness::new(shared.config.idle_timeout);
    // One timer for the connection's life, moved forward only when it fires early (re-arming
    // it on every message would cost more than the message's framing).
    let idle = tokio::time::sleep_until(liveness.deadline());
    tokio::pin!(idle);
    // Once the server closes: no more reading, the running handlers answer, then goodbye.
    let closed = shared.closed();
    tokio::pin!(closed);
    let mut draining = false;
    loop {
        if draining && running.is_empty() {
            close_with(&mut ws, CloseCode::Away, "server closing").await;
            return;
        }
        tokio::select! {
            _ = &mut closed, if !draining => draining = true,
            message = ws.next(), if running.len() < max_in_flight && !draining => {
                // This message, then every other one already read, up to the in-flight bound.
                let mut message = message;
                liveness.heard();
                loop {
                    match message {
                        // The message's charge is given back once it is parsed.
                        Some(Ok(Message::Text(text))) => {
                            let busy = activity.busy();
                            start_request(&mut running, text.as_bytes(), &shared, peer, &cert, busy);
                            ws.get_mut().delivered();
                        }
                        Some(Ok(Message::Binary(data))) => {
                            let busy = activity.busy();
                            start_request(&mut running, &data, &shared, peer, &cert, busy);
                            ws.get_mut().delivered();
                        }
                        Some(Ok(Message::Close(_))) | None => return,
                        // Pings are answered by tungstenite itself.
                        Some(Ok(_)) => {}
                        Some(Err(_)) if ws.get_ref().too_slow => {
                            close_too_slow(&mut ws, peer).await;
                            return;
                        }
                        Some(Err(_)) if ws.get_ref().refused => {
                            tracing::warn!(
                                "grenache ws server: closing the connection from {peer}: a message over the memory budget"
                            );
                            close_with(&mut ws, CloseCode::Size, "ERR_MEMORY_BUDGET").await;
                            return;
                        }
                        // A message over `max_message_size`: close 1009 without a reason,
                        // as Node's `ws` does (`websocket.close(1009)`).
                        Some(Err(e @ tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                            tracing::warn!("grenache ws server: closing the connection from {peer}: {e}");
                            close_with(&mut ws, CloseCode::Size, "").await;
                            return;
                        }
                        Some(Err(e)) => {
                            tracing::warn!("grenache ws server: closing the connection from {peer}: {e}");
                            return;
                        }
                    }
                    if running.len() >= max_in_flight {
                        break;
                    }
                    match ws.next().now_or_never() {
                        Some(next) => message = next,
                        None => break,
                    }
                }
            }
            Some(frame) = running.next() => {
                if running.len() + 1 >= max_in_flight {
                    // Reading resumes: the time it was paused is not the client's slowness.
                    ws.get_mut().restart_progress();
                }
                // This answer and every other one already done, in one write.
                let ready = || running.next().now_or_never().flatten();
                if let Err(e) = write_batch(&mut ws, frame, ready).await {
                    tracing::debug!("grenache ws server: cannot answer {peer}: {e}");
                    break;
                }
            }
            () = &mut idle => {
                if running.len() >= max_in_flight || draining {
                    // We stopped reading (backpressure, or closing), so silence proves nothing.
                    liveness.heard();
                } else if ws.get_ref().receiving() {
                    // A message is arriving (a client cannot answer pings in the middle of a
                    // frame): the minimum-progress rule judges it instead, here for a client
                    // that went silent mid-message.
                    if ws.get_ref().behind(Instant::now()) {
                        close_too_slow(&mut ws, peer).await;
                        break;
                    }
                    liveness.heard();
                }
                match liveness.check(Instant::now()) {
                    Quiet::No => {}
                    Quiet::Ping => {
                        let ping = ws.send(Message::Ping(Default::default()));
                        if !matches!(tokio::time::timeout(CLOSE_WAIT, ping).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                    Quiet::Dead => {
                        tracing::debug!(
                            "grenache ws server: closing the connection from {peer}: silent, no pong"
                        );
                        close_with(&mut ws, CloseCode::Away, "idle").await;
                        break;
                    }
                }
                idle.as_mut().reset(liveness.deadline());
            }
            else => break,
        }
    }
}

/// How long a ping or a closing frame may take to leave: a peer that does not read is
/// dropped rather than waited for.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Sends a close frame (within [`CLOSE_WAIT`]); the caller then drops the connection.
async fn close_with(ws: &mut WebSocketStream<Metered>, code: CloseCode, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(frame))).await;
}

/// Closes a connection whose message broke the minimum-progress rule (1008).
async fn close_too_slow(ws: &mut WebSocketStream<Metered>, peer: SocketAddr) {
    tracing::info!(
        "grenache ws server: closing the connection from {peer}: a message arriving too slowly"
    );
    close_with(ws, CloseCode::Policy, "ERR_TOO_SLOW").await;
}

/// What a quiet connection deserves when its idle timer fires.
#[derive(Debug, PartialEq)]
enum Quiet {
    /// Something arrived recently: nothing to do.
    No,
    /// Quiet for the idle timeout: ask for a sign of life.
    Ping,
    /// Quiet for the idle timeout after a ping: close.
    Dead,
}

/// The idle rule of a server connection: ping after `idle` of silence, close after `idle`
/// more of silence. Any frame (a request, a pong, a ping) counts as a sign of life.
struct Liveness {
    idle: Duration,
    last_heard: Instant,
    pinged: bool,
}

impl Liveness {
    fn new(idle: Duration) -> Self {
        Liveness {
            // A zero timeout would ping in a busy loop.
            idle: idle.max(Duration::from_millis(1)),
            last_heard: Instant::now(),
            pinged: false,
        }
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.pinged = false;
    }

    /// When the timer should next fire.
    fn deadline(&self) -> Instant {
        let quiet = if self.pinged {
            2 * self.idle
        } else {
            self.idle
        };
        self.last_heard + quiet
    }

    fn check(&mut self, now: Instant) -> Quiet {
        if now < self.deadline() {
            Quiet::No
        } else if self.pinged {
            Quiet::Dead
        } else {
            self.pinged = true;
            Quiet::Ping
        }
    }
}

/// Decodes one request and adds its handler to `running`; a message that is not a request
/// gets what the core's rules say (`decode_request`): no answer, or an
/// `ERR_REQUEST_MALFORMED` frame echoing its rid.
fn start_request(
    running: &mut FuturesUnordered<BoxFuture<'static, String>>,
    bytes: &[u8],
    shared: &Shared<Routes>,
    peer: SocketAddr,
    cert: &Option<Arc<CertInfo>>,
    busy: Busy,
) {
    let (rid, key, payload) = match decode_request(bytes) {
        Ok(request) => request,
        Err(why) => {
            tracing::warn!("grenache ws server: malformed request from {peer}: {why}");
            if let BadRequest::Reply(frame) = why {
                // Answered in turn with the handlers' replies, on the same writer.
                running.push(Box::pin(async move {
                    let _busy = busy;
                    frame
                }));
            }
            return;
        }
    };
    let request = Request {
        rid: rid.clone(),
        key,
        payload,
        action: None,
        args: json!({}),
        remote: peer,
        cert: cert.clone(),
    };
    let handling = AssertUnwindSafe(shared.routes.handle(request)).catch_unwind();
    running.push(Box::pin(async move {
        let _busy = busy;
        match handling.await {
            Ok(outcome) => encode_reply(&rid, &outcome),
            Err(_) => {
                tracing::error!(
                    "grenache ws server: the handler of request {rid} from {peer} panicked"
                );
                encode_reply(&rid, &Err(RpcError::new("ERR_HANDLER_PANIC")))
            }
        }
    }));
}

/// Frames written with one flush at most (a bound on the latency the first of them sees).
const MAX_WRITE_BATCH: usize = 64;

/// Writes `first` and every further frame `ready` has at once (up to [`MAX_WRITE_BATCH`]),
/// then flushes once: under load, one syscall carries many frames.
async fn write_batch<S>(
    ws: &mut S,
    first: String,
    mut ready: impl FnMut() -> Option<String>,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    ws.feed(Message::text(first)).await?;
    for _ in 1..MAX_WRITE_BATCH {
        let Some(frame) = ready() else {
            break;
        };
        ws.feed(Message::text(frame)).await?;
    }
    ws.flush().await
}

// ---------------------------------------------------------------------------------------
// Memory budget of a server connection

/// A server connection's socket as tungstenite reads it, with every data message the client
/// announces charged to the worker's memory budget before tungstenite buffers it.
///
/// tungstenite keeps an unfinished message (and its fragments) in memory and does not say how
/// much, so the bytes are watched on their way in instead: past the upgrade request, each
/// frame header gives its payload length, which is added to the message being received (a
/// message larger than [`SMALL_MESSAGE`] is charged in full, rounded up to a multiple of
/// it, and twice: what tungstenite's doubling buffer may hold). When the budget cannot cover a
/// frame, the read fails before tungstenite sees it, and the worker closes the connection with
/// code 1009. The charge of a message is given back when tungstenite hands the message out.
struct Metered {
    io: Box<dyn Io>,
    scan: Scan,
    budget: MemoryBudget,
    /// Larger messages are tungstenite's to refuse (close 1009 as well); not charged.
    max_message: usize,
    /// The message being received: its size so far and its charge.
    current_len: usize,
    current: Reservation,
    /// Messages whose last frame has been announced, not yet handed out (oldest first).
    complete: VecDeque<Reservation>,
    /// The budget refused a frame: the connection must close with 1009.
    refused: bool,
    /// The minimum-progress rule of messages ([`ServerConfig::min_body_rate`]).
    progress: MinProgress,
    /// A message broke the minimum-progress rule: the connection must close with 1008.
    too_slow: bool,
    /// When the message being received started, and how many of its payload bytes have
    /// arrived since.
    message_started: Option<Instant>,
    /// The connection's activity, busy while a message arrives.
    activity: Activity,
    receiving: Option<Busy>,
    message_received: usize,
}

/// Where the incoming bytes are.
enum Scan {
    /// In the HTTP upgrade request; `matched` bytes of its final `\r\n\r\n` seen.
    Head { matched: usize },
    /// In a frame header; `len` bytes of it so far.
    Header {
        bytes: [u8; MAX_FRAME_HEADER],
        len: usize,
    },
    /// In a frame payload; `left` bytes to go, of a data frame (`data`) that ends its
    /// message (`fin`) or not.
    Payload { left: u64, data: bool, fin: bool },
}

/// Longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

impl Metered {
    fn new(
        io: Box<dyn Io>,
        budget: MemoryBudget,
        max_message: usize,
        progress: MinProgress,
        activity: Activity,
    ) -> Self {
        Metered {
            io,
            scan: Scan::Head { matched: 0 },
            current_len: 0,
            current: budget.reservation(),
            budget,
            max_message,
            complete: VecDeque::new(),
            refused: false,
            progress,
            too_slow: false,
            activity,
            receiving: None,
            message_started: None,
            message_received: 0,
        }
    }

    /// Whether a message is being received.
    fn receiving(&self) -> bool {
        self.message_started.is_some()
    }

    /// Whether the message being received is behind the minimum-progress rule.
    fn behind(&self, now: Instant) -> bool {
        self.message_started
            .is_some_and(|started| self.progress.deadline(started, self.message_received) <= now)
    }

    /// Starts the minimum-progress clock of the message being received afresh (while the
    /// worker itself stops reading, the client cannot be blamed for slowness).
    fn restart_progress(&mut self) {
        if self.message_started.is_some() {
            self.message_started = Some(Instant::now());
            self.message_received = 0;
        }
    }

    /// A data message was handed out: its charge goes back to the budget.
    fn delivered(&mut self) {
        self.complete.pop_front();
    }

    /// Follows `data` through the stream; `false` when the budget refuses a frame.
    fn scan(&mut self, mut data: &[u8]) -> bool {
        while let Some((&byte, rest)) = data.split_first() {
            match &mut self.scan {
                Scan::Head { matched } => {
                    *matched = match (*matched, byte) {
                        (0 | 2, b'\r') => *matched + 1,
                        (1 | 3, b'\n') => *matched + 1,
                        (_, b'\r') => 1,
                        _ => 0,
                    };
                    if *matched == 4 {
                        self.scan = Scan::Header {
                            bytes: [0; MAX_FRAME_HEADER],
                            len: 0,
                        };
                    }
                    data = rest;
                }
                Scan::Header { bytes, len } => {
                    if let Some(slot) = bytes.get_mut(*len) {
                        *slot = byte;
                    }
                    *len += 1;
                    data = rest;
                    let header = bytes.get(..*len).and_then(frame_header);
                    if let Some((opcode, fin, payload)) = header {
                        if !self.frame(opcode, fin, payload) {
                            return false;
                        }
                        let data = opcode & 0x8 == 0;
                        if data && self.message_started.is_none() {
                            self.message_started = Some(Instant::now());
                            self.message_received = 0;
                            self.receiving = Some(self.activity.busy());
                        }
                        self.scan = Scan::Payload {
                            left: payload,
                            data,
                            fin,
                        };
                        self.end_of_payload();
                    }
                }
                Scan::Payload {
                    left,
                    data: in_data,
                    ..
                } => {
                    let available = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    let skip = (*left).min(available);
                    *left -= skip;
                    // `skip` is at most `data.len()`.
                    let skipped = usize::try_from(skip).unwrap_or(0);
                    if *in_data {
                        self.message_received = self.message_received.saturating_add(skipped);
                    }
                    data = data.get(skipped..).unwrap_or(&[]);
                    self.end_of_payload();
                }
            }
        }
        true
    }

    /// Past the end of a payload, the next frame header begins (and the message ends with
    /// the last byte of its final frame).
    fn end_of_payload(&mut self) {
        if let Scan::Payload { left: 0, data, fin } = self.scan {
            if data && fin {
                self.message_started = None;
                self.receiving = None;
            }
            self.scan = Scan::Header {
                bytes: [0; MAX_FRAME_HEADER],
                len: 0,
            };
        }
    }

    /// Charges a data frame's payload to the message it belongs to.
    fn frame(&mut self, opcode: u8, fin: bool, payload: u64) -> bool {
        if opcode & 0x8 != 0 {
            // Control frames: at most 125 bytes, not part of a message.
            return true;
        }
        let payload = usize::try_from(payload).unwrap_or(usize::MAX);
        self.current_len = self.current_len.saturating_add(payload);
        // Charged in steps of SMALL_MESSAGE, so that the small last fragments of a large
        // message seldom need more than it already holds, and twice over: tungstenite's
        // buffer grows by doubling, so it may hold twice the bytes it has received (measured:
        // 1,000 connections with 60 KB unfinished fragments took 130 MiB).
        let charge = self
            .current_len
            .div_ceil(SMALL_MESSAGE)
            .saturating_mul(SMALL_MESSAGE)
            .saturating_mul(2);
        if self.current_len > SMALL_MESSAGE
            && self.current_len <= self.max_message
            && !self.current.try_grow_to(charge)
        {
            self.refused = true;
            return false;
        }
        if fin {
            let charge = std::mem::replace(&mut self.current, self.budget.reservation());
            self.complete.push_back(charge);
            self.current_len = 0;
        }
        true
    }
}

/// `(opcode, fin, payload length)` once `bytes` is a whole frame header, else `None`.
fn frame_header(bytes: &[u8]) -> Option<(u8, bool, u64)> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if rest.len() < extended + mask {
        return None;
    }
    let payload = match extended {
        0 => u64::from(second & 0x7f),
        n => rest
            .get(..n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
    };
    Some((first & 0x0f, first & 0x80 != 0, payload))
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let this = &mut *self;
        if !this.scan(buf.filled().get(before..).unwrap_or(&[])) {
            return Poll::Ready(Err(io::Error::other("the memory budget is spent")));
        }
        // Checked as bytes arrive (these included): a client that sends nothing at all is the
        // idle rule's.
        if this.receiving() && this.behind(Instant::now()) {
            this.too_slow = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "a message arriving too slowly",
            )));
        }
        Poll::Ready(Ok(()))
    }
}

super::server::write_through!(Metered);

// ---------------------------------------------------------------------------------------
// Client

/// Settings of a [`PeerRpcClient`]; the defaults are Node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsClientConfig {
    /// Connections kept per worker (Node `maxActiveDestTransports`, 3): new ones are opened
    /// until there are this many, then requests are spread randomly over them.
    pub max_connections_per_dest: usize,
    /// Once this many workers of a service have pooled connections, requests go to one of
    /// those only (Node `maxActiveKeyDests`, 5).
    pub max_active_key_dests: usize,
    /// A connection without requests for this long is closed (Node `inactivityTimeout`,
    /// 120 s).
    pub idle_timeout: Duration,
    /// Largest answer accepted, and largest request sent (100 MiB, as Node's `ws`; a Node
    /// server crashes on a larger one).
    pub max_message_size: usize,
    /// Bound on opening a connection (TCP, TLS and upgrade), within each request's own
    /// timeout.
    pub connect_timeout: Duration,
    /// Connect with TLS (`wss://{ip:port}/ws`, Node `secure`). Default `None` (`ws://`).
    pub tls: Option<TlsClientConfig>,
}

impl Default for WsClientConfig {
    fn default() -> Self {
        WsClientConfig {
            max_connections_per_dest: 3,
            max_active_key_dests: 5,
            idle_timeout: IDLE_TIMEOUT,
            max_message_size: 100 << 20,
            connect_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// A client calling workers over WebSocket (Node `PeerRPCClient` of grenache-nodejs-ws).
/// Cheap to clone: clones share the connection pool. Dropping the last clone closes every
/// connection.
#[derive(Clone)]
pub struct PeerRpcClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    link: Link,
    config: WsClientConfig,
    pool: Mutex<HashMap<String, Vec<Arc<Connection>>>>,
    in_flight: Arc<InFlight>,
}

impl PeerRpcClient {
    /// A client looking workers up through `link`, with the default [`WsClientConfig`].
    pub fn new(link: Link) -> Self {
        Self::with_config(link, WsClientConfig::default())
    }

    /// Like [`PeerRpcClient::new`] with explicit settings.
    pub fn with_config(link: Link, config: WsClientConfig) -> Self {
        PeerRpcClient {
            inner: Arc::new(ClientInner {
                link,
                config,
                pool: Mutex::new(HashMap::new()),
                in_flight: Arc::default(),
            }),
        }
    }

    /// The Link used for lookups.
    pub fn link(&self) -> &Link {
        &self.inner.link
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
        let _in_flight = self.inner.in_flight.enter()?;
        let deadline = Instant::now() + timeout;
        let dests = lookup_before(&self.inner.link, name, deadline).await?;
        let dest = pick_dest(
            &dests,
            |d| self.is_active(d),
            self.inner.config.max_active_key_dests,
        )
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
        let _in_flight = self.inner.in_flight.enter()?;
        let deadline = Instant::now() + timeout;
        let dests = lookup_before(&self.inner.link, name, deadline).await?;
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
        let _in_flight = self.inner.in_flight.enter()?;
        self.send(dest, name, payload, Instant::now() + timeout)
            .await
    }

    /// Closes the client (every clone of it): new requests fail at once with
    /// `ERR_TRANSPORT_CLOSE`, those in flight get at most `grace` to finish (the rest then
    /// fail with `ERR_TRANSPORT_CLOSE`), then every pooled connection closes with a close
    /// frame. Returns when they are closed.
    pub async fn close(&self, grace: Duration) {
        self.inner.in_flight.close(grace).await;
        let connections: Vec<Arc<Connection>> = lock(&self.inner.pool)
            .drain()
            .flat_map(|(_, list)| list)
            .collect();
        let ended: Vec<_> = connections.iter().map(|c| c.ended.clone()).collect();
        // Requests still waiting past the grace fail now, and so let go of their connection:
        // dropping the last handle of a connection makes its task say goodbye and end.
        for connection in &connections {
            close_pending(&connection.pending, &RpcError::TransportClose);
        }
        drop(connections);
        for mut ended in ended {
            let _ = ended.wait_for(|done| *done).await;
        }
    }

    async fn send(
        &self,
        dest: &str,
        name: &str,
        payload: Value,
        deadline: Instant,
    ) -> Result<Value, RpcError> {
        let rid = new_shared_rid();
        // Fills the `rid` of the caller's `rpc_client_request` span (rpc/metrics.rs), if any.
        tracing::Span::current().record("rid", &*rid);
        let mut frame = encode_request(&rid, name, &payload);
        if frame.len() > self.inner.config.max_message_size {
            return Err(RpcError::Request(format!(
                "request of {} bytes is over the {} bytes limit",
                frame.len(),
                self.inner.config.max_message_size
            )));
        }
        // Two tries: a pooled connection may close (idle, or the worker went away) between
        // picking it and handing it the frame.
        for _ in 0..2 {
            let connection = self.connection(dest);
            let (sender, receiver) = oneshot::channel();
            let Some(_registered) = connection.register(&rid, sender, deadline) else {
                continue;
            };
            // Without a timer when the connection's queue has room, as it mostly has.
            let queued = match connection.outgoing.try_send(frame) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Closed(unsent)) => Err(unsent),
                Err(mpsc::error::TrySendError::Full(unsent)) => {
                    match tokio::time::timeout_at(deadline, connection.outgoing.send(unsent)).await
                    {
                        Err(_) => return Err(RpcError::Timeout),
                        Ok(sent) => sent.map_err(|mpsc::error::SendError(unsent)| unsent),
                    }
                }
            };
            if let Err(unsent) = queued {
                frame = unsent;
                continue;
            }
            // The connection's deadline check answers `ERR_TIMEOUT` (`expire_requests`).
            return match receiver.await {
                Err(_) => Err(RpcError::TransportClose),
                Ok(outcome) => outcome,
            };
        }
        Err(RpcError::TransportClose)
    }

    fn is_active(&self, dest: &str) -> bool {
        lock(&self.inner.pool)
            .get(dest)
            .is_some_and(|list| list.iter().any(|c| c.is_alive()))
    }

    /// A pooled connection to `dest`: a new one while there are fewer than
    /// `max_connections_per_dest` live ones, else a random live one.
    fn connection(&self, dest: &str) -> Arc<Connection> {
        let config = &self.inner.config;
        let mut pool = lock(&self.inner.pool);
        // Looked up by `&str`: the name is copied only when a connection is opened.
        if let Some(list) = pool.get_mut(dest) {
            list.retain(|c| c.is_alive());
            if list.len() >= config.max_connections_per_dest.max(1) {
                if let Some(existing) = list.get(rand::random_range(0..list.len())) {
                    return Arc::clone(existing);
                }
            }
        }
        let connection = Arc::new(Connection::open(dest, config));
        pool.entry(dest.to_string())
            .or_default()
            .push(Arc::clone(&connection));
        // A good moment to forget the dead connections of other workers.
        pool.retain(|_, list| {
            list.retain(|c| c.is_alive());
            !list.is_empty()
        });
        connection
    }
}

type Waiter = oneshot::Sender<Result<Value, RpcError>>;

/// Requests of one connection waiting for their answers.
#[derive(Default)]
struct Pending {
    /// By rid (the key is shared with the request's [`Registration`]), with its deadline.
    waiting: Mutex<HashMap<Arc<str>, (Waiter, Instant)>>,
    /// Wakes [`expire_requests`] when the first request registers after none waited, and
    /// when the connection closes.
    first_or_closed: Notify,
    /// Set when the connection task has ended (or failed to connect): no new registrations.
    /// An atomic, so that choosing a live connection for every request takes no lock.
    closed: AtomicBool,
}

/// One pooled WebSocket connection, run by its own task. Dropping it drops `outgoing`: the
/// task then sends a close frame and ends (within a second once connected; a connection still
/// being opened ends when its connect attempt does, at most `connect_timeout`). The task is
/// not aborted, so the worker sees a clean close instead of a reset connection.
struct Connection {
    outgoing: mpsc::Sender<String>,
    pending: Arc<Pending>,
    /// Turns `true` when the connection's task has ended (its socket is closed).
    ended: watch::Receiver<bool>,
}

/// Removes a request from `Pending` when it ends in any way (answer, timeout, cancellation).
struct Registration {
    pending: Arc<Pending>,
    rid: Arc<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.pending.waiting).remove(&*self.rid);
    }
}

impl Connection {
    fn open(dest: &str, config: &WsClientConfig) -> Connection {
        let (outgoing, frames) = mpsc::channel(64);
        let pending = Arc::new(Pending::default());
        let (ended_tx, ended) = watch::channel(false);
        let running = run_connection(
            dest.to_string(),
            config.clone(),
            frames,
            Arc::clone(&pending),
        );
        tokio::spawn(async move {
            running.await;
            ended_tx.send_replace(true);
        });
        tokio::spawn(expire_requests(Arc::clone(&pending)));
        Connection {
            outgoing,
            pending,
            ended,
        }
    }

    fn is_alive(&self) -> bool {
        !self.outgoing.is_closed() && !self.pending.closed.load(Ordering::Acquire)
    }

    fn register(&self, rid: &Arc<str>, waiter: Waiter, deadline: Instant) -> Option<Registration> {
        let mut waiting = lock(&self.pending.waiting);
        // Read under the lock: `close_pending` sets the flag before it takes the map, so a
        // request either sees the flag or is in the map it takes.
        if self.pending.closed.load(Ordering::Acquire) {
            return None;
        }
        if waiting.is_empty() {
            self.pending.first_or_closed.notify_one();
        }
        waiting.insert(Arc::clone(rid), (waiter, deadline));
        Some(Registration {
            pending: Arc::clone(&self.pending),
            rid: Arc::clone(rid),
        })
    }
}

/// How often a connection's waiting requests are checked against their deadlines: a request
/// times out at most this late. One check per connection replaces a timer per request, which
/// cost a busy client about a fifteenth of its throughput.
const DEADLINE_CHECK: Duration = Duration::from_millis(5);

/// Answers `ERR_TIMEOUT` to the requests of a connection whose deadline has passed, checking
/// every [`DEADLINE_CHECK`] while any wait and sleeping while none does; ends when the
/// connection closes. A task of its own, so that a connection stuck writing to a worker that
/// does not read still times its requests out.
async fn expire_requests(pending: Arc<Pending>) {
    let mut check = tokio::time::interval(DEADLINE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if pending.closed.load(Ordering::Acquire) {
            return;
        }
        if lock(&pending.waiting).is_empty() {
            pending.first_or_closed.notified().await;
            continue;
        }
        check.tick().await;
        let now = Instant::now();
        let expired: Vec<Waiter> = {
            let mut waiting = lock(&pending.waiting);
            let rids: Vec<Arc<str>> = waiting
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(rid, _)| Arc::clone(rid))
                .collect();
            rids.iter()
                .filter_map(|rid| waiting.remove(rid))
                .map(|(waiter, _)| waiter)
                .collect()
        };
        for waiter in expired {
            let _ = waiter.send(Err(RpcError::Timeout));
        }
    }
}

/// Fails every waiting request with `error` and refuses new ones.
fn close_pending(pending: &Pending, error: &RpcError) {
    pending.closed.store(true, Ordering::Release);
    pending.first_or_closed.notify_one();
    let waiting = std::mem::take(&mut *lock(&pending.waiting));
    for (_, (waiter, _)) in waiting {
        let _ = waiter.send(Err(error.clone()));
    }
}

async fn connect(
    dest: &str,
    url: &str,
    config: &WsClientConfig,
) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let stream = TcpStream::connect(dest)
        .await
        .map_err(|e| crate::http_client::connect_reason(&e, dest))?;
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Io> = match &config.tls {
        None => Box::new(stream),
        Some(tls) => Box::new(tls.connect(dest, stream).await?),
    };
    let handshake = tokio_tungstenite::client_async_with_config(
        url,
        io,
        Some(ws_config(config.max_message_size)),
    );
    let (ws, _response) = handshake.await.map_err(|e| e.to_string())?;
    Ok(ws)
}

async fn run_connection(
    dest: String,
    config: WsClientConfig,
    mut frames: mpsc::Receiver<String>,
    pending: Arc<Pending>,
) {
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{dest}/ws");
    let mut ws =
        match tokio::time::timeout(config.connect_timeout, connect(&dest, &url, &config)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(reason)) => {
                let error = RpcError::Request(format!("request to {url} failed, reason: {reason}"));
                close_pending(&pending, &error);
                return;
            }
            Err(_) => {
                let error = RpcError::Request(format!(
                    "request to {url} failed, reason: connect ETIMEDOUT {dest}"
                ));
                close_pending(&pending, &error);
                return;
            }
        };
    let mut last_use = Instant::now();
    // One timer for the connection's life, moved forward only when it fires early (a timer
    // per request cost more than the request's framing).
    let idle = tokio::time::sleep_until(last_use + config.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => {
                    last_use = Instant::now();
                    // Requesters woken by the same batch of answers are about to send: let
                    // them run first, so that their requests share this write.
                    tokio::task::yield_now().await;
                    if let Err(e) = write_batch(&mut ws, frame, || frames.try_recv().ok()).await {
                        tracing::debug!("grenache ws client: sending to {dest} failed: {e}");
                        break;
                    }
                }
                // Every handle of this connection is gone (`close`, or the client dropped):
                // say goodbye, so the worker does not log a reset connection.
                None => {
                    close_pending(&pending, &RpcError::TransportClose);
                    // Send the close frame, then read until the worker's close answer, so
                    // that our socket never closes with its answer unread (which resets the
                    // connection on the worker's side).
                    let goodbye = async {
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
                    break;
                }
            },
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => deliver(&pending, text.as_bytes(), &dest),
                Some(Ok(Message::Binary(data))) => deliver(&pending, &data, &dest),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("grenache ws client: connection to {dest} failed: {e}");
                    break;
                }
            },
            () = &mut idle => {
                let deadline = last_use + config.idle_timeout;
                if deadline > Instant::now() {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                if lock(&pending.waiting).is_empty() {
                    tracing::debug!("grenache ws client: closing idle connection to {dest}");
                    // Mark closed first so no request registers while the close frame goes.
                    close_pending(&pending, &RpcError::TransportClose);
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                    break;
                }
                // Requests are still waiting for answers: not idle.
                last_use = Instant::now();
                idle.as_mut().reset(last_use + config.idle_timeout);
            }
        }
    }
    close_pending(&pending, &RpcError::TransportClose);
}

/// Hands an answer to the request it belongs to; answers nobody waits for are dropped.
fn deliver(pending: &Pending, bytes: &[u8], dest: &str) {
    let Some((rid, outcome)) = decode_reply(bytes) else {
        tracing::debug!(
            "grenache ws client: ignoring a message from {dest} that is not [rid, err, result]"
        );
        return;
    };
    let waiter = rid
        .as_deref()
        .and_then(|rid| lock(&pending.waiting).remove(rid))
        .map(|(waiter, _)| waiter);
    match waiter {
        Some(waiter) => {
            let _ = waiter.send(outcome);
        }
        None => tracing::debug!(
            "grenache ws client: ignoring an answer from {dest} for unknown request {rid:?}"
        ),
    }
}

super::rpc_client_by_inherent_methods!(PeerRpcClient);

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header (mask bytes zero).
    fn header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let first = if fin { 0x80 } else { 0 } | opcode;
        let mut bytes = match len {
            0..=125 => vec![first, 0x80 | len as u8],
            126..=0xffff => {
                let mut h = vec![first, 0x80 | 126];
                h.extend_from_slice(&(len as u16).to_be_bytes());
                h
            }
            _ => {
                let mut h = vec![first, 0x80 | 127];
                h.extend_from_slice(&(len as u64).to_be_bytes());
                h
            }
        };
        bytes.extend_from_slice(&[0; 4]);
        bytes
    }

    fn metered(budget: &MemoryBudget) -> Metered {
        let progress = MinProgress {
            grace: Duration::from_secs(30),
            min_rate: 0,
        };
        Metered::new(
            Box::new(tokio::io::empty()),
            budget.clone(),
            100 << 20,
            progress,
            Activity::default(),
        )
    }

    #[test]
    fn frame_headers_of_every_length_form() {
        assert_eq!(frame_header(&header(true, 1, 5)), Some((1, true, 5)));
        assert_eq!(frame_header(&header(false, 2, 300)), Some((2, false, 300)));
        assert_eq!(
            frame_header(&header(true, 0, 1 << 20)),
            Some((0, true, 1 << 20))
        );
        // Incomplete: the mask or the extended length is missing.
        assert_eq!(frame_header(&header(true, 1, 5)[..5]), None);
        assert_eq!(frame_header(&header(true, 1, 1 << 20)[..9]), None);
        assert_eq!(frame_header(&[0x81]), None);
    }

    #[test]
    fn large_messages_are_charged_from_their_headers_until_handed_out() {
        let budget = MemoryBudget::new(1 << 20);
        let mut io = metered(&budget);
        let mut stream = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        // A small message (not charged), a ping, then 300 KiB in two fragments.
        stream.extend(header(true, 1, 10));
        stream.extend([b'x'; 10]);
        stream.extend(header(true, 9, 0));
        stream.extend(header(false, 2, 200 << 10));
        // Fed byte by byte: headers split across reads are followed too.
        for byte in &stream {
            assert!(io.scan(std::slice::from_ref(byte)));
        }
        assert_eq!(budget.used(), 400 << 10, "200 KiB, in 8 KiB steps, twice");
        assert!(io.scan(&vec![0; 200 << 10]));
        assert!(io.scan(&header(true, 0, 100 << 10)));
        assert_eq!(budget.used(), 608 << 10, "300 KiB is 38 steps of 8 KiB");
        assert_eq!(io.complete.len(), 2);
        io.delivered();
        assert_eq!(budget.used(), 608 << 10, "the small message held nothing");
        io.delivered();
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_frame_over_the_budget_is_refused_before_its_payload() {
        let budget = MemoryBudget::new(1 << 20);
        let _other = budget.try_reserve(900 << 10).unwrap();
        let mut io = metered(&budget);
        assert!(io.scan(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!io.scan(&header(true, 2, 200 << 10)));
        assert!(io.refused);
        assert_eq!(budget.used(), 900 << 10);
    }

    #[test]
    fn liveness_pings_then_gives_up() {
        let idle = Duration::from_secs(10);
        let mut live = Liveness::new(idle);
        let start = live.last_heard;
        assert_eq!(live.check(start + idle / 2), Quiet::No);
        assert_eq!(live.check(start + idle), Quiet::Ping);
        assert_eq!(live.deadline(), start + 2 * idle);
        assert_eq!(live.check(start + idle + idle / 2), Quiet::No);
        assert_eq!(live.check(start + 2 * idle), Quiet::Dead);
        live.heard();
        assert!(!live.pinged);
        assert!(live.deadline() >= start + idle);
    }
}
