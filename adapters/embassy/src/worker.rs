//! The RPC worker: Grenache's HTTP and WebSocket transports on one TCP port.
//!
//! Each of `N` connection slots runs an accept loop on the port (several slots, so that a
//! client's back-to-back connections are not reset while one closes). On a connection the
//! first request head decides the transport:
//!
//! * `Upgrade: websocket` → the 101 handshake, then WebSocket text or binary messages
//!   `[rid,key,payload]` answered by text messages `[rid,err,result]` (grenache-nodejs-ws;
//!   any path is accepted, as Node's server does).
//! * anything else → HTTP: the body of any method and path is the request frame; the answer is
//!   `200` with the reply frame as body (grenache-nodejs-http; keep-alive and pipelining work).
//!
//! Requests go to a [`Handler`]. Bad input never stops the worker: a frame whose rid can be
//! recovered gets `[rid,"ERR_REQUEST_MALFORMED",null]`; other malformed frames close the
//! connection (Node's HTTP server sends nothing either), an HTTP syntax error gets its 4xx
//! status and a close, an oversized request gets 413 (HTTP) or close code 1009 (WS), and a
//! connection silent for [`IDLE_TIMEOUT`] is closed, which frees its slot.

use embassy_futures::join::join_array;
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_time::{with_timeout, Duration};
use grenache_core::rng::SplitMix64;
use grenache_core::wire::frame::{self, Malformed, Request};
use grenache_core::wire::http::{self, BodyDecoder, BodyKind, Header, HttpError, Status};
use grenache_core::wire::ws::{self, Event, WsConnection};

use crate::trace;

/// The application side of the worker.
pub trait Handler {
    /// Answers one request: `key` is the service name the client looked up, `payload` the
    /// raw JSON payload (`null` when absent). Writes the result as raw JSON into `out` and
    /// returns its length, or returns an error message for the client (sent as the `err` of
    /// the reply). The result must be valid JSON, or the client cannot parse the reply.
    fn handle(&mut self, key: &str, payload: &[u8], out: &mut [u8]) -> Result<usize, &'static str>;
}

// The buffer sizes below are the defaults of the const generics of [`Connection`] (and so
// of [`WorkerStorage`] and [`serve`]); a board with little RAM and small requests picks
// smaller ones, see [`Connection`].

/// Receive window of each TCP socket (default of `RX`).
pub const TCP_RX: usize = 1024;
/// Send buffer of each TCP socket (default of `TX`).
pub const TCP_TX: usize = 1024;
/// Bytes of one HTTP request (head and body together), and the read buffer of a WebSocket
/// (default of `REQUEST`).
pub const MAX_REQUEST: usize = 1536;
/// Longest WebSocket message (a request frame) accepted; longer ones close with 1009
/// (default of `MESSAGE`).
pub const MAX_MESSAGE: usize = 1024;
/// Bytes the handler may write as its result (default of `RESULT`).
pub const MAX_RESULT: usize = 512;
/// Bytes of the reply buffer: the reply frame (the result plus the echoed rid and framing)
/// behind [`HEAD_ROOM`] for the HTTP head or WebSocket header (default of `REPLY`; keep
/// `REPLY` about 240 bytes over `RESULT`, or long rids get `ERR_REPLY_TOO_LARGE`). It also
/// holds the handshake answer and WebSocket control frames, so at least 131 bytes.
pub const MAX_REPLY: usize = MAX_RESULT + 192 + HEAD_ROOM;
/// Header fields kept of a request (more → 431).
pub const MAX_HEADERS: usize = 16;
/// Longest decoded service name.
pub const MAX_KEY: usize = 128;
/// A connection that sends nothing for this long, or does not take our bytes, is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP connection idle between requests is closed after this (Node's keepAliveTimeout
/// is 5 s): clients keep connections in a pool, and each one holds a slot.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The error message when the handler's result does not fit [`MAX_REPLY`].
pub const ERR_REPLY_TOO_LARGE: &str = "ERR_REPLY_TOO_LARGE";
/// The error message when the service name is longer than [`MAX_KEY`] or badly escaped.
pub const ERR_KEY: &str = "ERR_REQUEST_MALFORMED";

/// The buffers of one connection slot: the TCP socket's receive window (`RX`) and send
/// buffer (`TX`), the request buffer (`REQUEST`: an HTTP request, head and body, or the
/// WebSocket read buffer), the longest WebSocket message (`MESSAGE`), the handler's result
/// (`RESULT`) and the reply frame (`REPLY`). The defaults are the consts of this module
/// (6.2 KiB a slot); the tutorial's Fibonacci worker is served well by
/// `Connection<512, 512, 768, 512, 64, 256>` (2.6 KiB), see `firmware/stm32-f429zi`.
pub struct Connection<
    const RX: usize = TCP_RX,
    const TX: usize = TCP_TX,
    const REQUEST: usize = MAX_REQUEST,
    const MESSAGE: usize = MAX_MESSAGE,
    const RESULT: usize = MAX_RESULT,
    const REPLY: usize = MAX_REPLY,
> {
    tcp_rx: [u8; RX],
    tcp_tx: [u8; TX],
    req: [u8; REQUEST],
    result: [u8; RESULT],
    reply: [u8; REPLY],
    ws: WsConnection<MESSAGE>,
}

impl<
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    /// An idle slot.
    pub const fn new() -> Self {
        Connection {
            tcp_rx: [0; RX],
            tcp_tx: [0; TX],
            req: [0; REQUEST],
            result: [0; RESULT],
            reply: [0; REPLY],
            ws: WsConnection::new(ws::Role::Server),
        }
    }
}

impl<
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Default for Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    fn default() -> Self {
        Self::new()
    }
}

/// `N` connection slots: the worker's whole memory, for a static. The other parameters are
/// the buffer sizes of each slot, as for [`Connection`].
pub struct WorkerStorage<
    const N: usize,
    const RX: usize = TCP_RX,
    const TX: usize = TCP_TX,
    const REQUEST: usize = MAX_REQUEST,
    const MESSAGE: usize = MAX_MESSAGE,
    const RESULT: usize = MAX_RESULT,
    const REPLY: usize = MAX_REPLY,
> {
    conns: [Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>; N],
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    /// `N` idle slots (a `const fn`, so the storage can be a plain `static` initialiser).
    pub const fn new() -> Self {
        WorkerStorage {
            conns: [const { Connection::new() }; N],
        }
    }
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const REQUEST: usize,
        const MESSAGE: usize,
        const RESULT: usize,
        const REPLY: usize,
    > Default for WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Serves Grenache RPC on TCP `port` forever, `N` connections at once. Await it from a
/// dedicated task. The stack needs `N` free socket slots.
pub async fn serve<
    H: Handler,
    const N: usize,
    const RX: usize,
    const TX: usize,
    const REQUEST: usize,
    const MESSAGE: usize,
    const RESULT: usize,
    const REPLY: usize,
>(
    stack: Stack<'_>,
    port: u16,
    handler: &mut H,
    storage: &mut WorkerStorage<N, RX, TX, REQUEST, MESSAGE, RESULT, REPLY>,
) -> ! {
    // The slots run in one task; the handler is called synchronously, never across an
    // await, so a `RefCell` borrow can never be contended.
    let handler = core::cell::RefCell::new(handler);
    let handler = &handler;
    let slots = storage
        .conns
        .each_mut()
        .map(|c| slot(stack, port, handler, c));
    join_array(slots).await;
    // `slot` never returns; this only satisfies the type.
    loop {
        core::future::pending::<()>().await;
    }
}

async fn slot<
    H: Handler,
    const RX: usize,
    const TX: usize,
    const REQUEST: usize,
    const MESSAGE: usize,
    const RESULT: usize,
    const REPLY: usize,
>(
    stack: Stack<'_>,
    port: u16,
    handler: &core::cell::RefCell<&mut H>,
    conn: &mut Connection<RX, TX, REQUEST, MESSAGE, RESULT, REPLY>,
) {
    let Connection {
        tcp_rx,
        tcp_tx,
        req,
        result,
        reply,
        ws,
    } = conn;
    loop {
        let mut sock = TcpSocket::new(stack, tcp_rx, tcp_tx);
        if sock.accept(port).await.is_err() {
            continue;
        }
        *ws = WsConnection::new(ws::Role::Server);
        let mut bufs = Bufs {
            req: &mut req[..],
            result: &mut result[..],
            reply: &mut reply[..],
            ws,
            handler,
        };
        let _ = run_conn(&mut sock, &mut bufs).await;
        // Say goodbye politely (close, 1 s for the peer to take the rest), but never wait long
        // for a peer that does not read (abort, 100 ms for the reset to leave). One await point
        // for both: each costs flash.
        for (abort, limit) in [(false, 1000), (true, 100)] {
            if abort {
                sock.abort();
            } else {
                sock.close();
            }
            let _ = with_timeout(Duration::from_millis(limit), sock.flush()).await;
        }
    }
}

/// A slot's buffers as slices, so that the HTTP and WebSocket code is not duplicated for
/// every buffer size (only the WebSocket state keeps its message size).
struct Bufs<'c, 'h, H: Handler, const MESSAGE: usize> {
    req: &'c mut [u8],
    result: &'c mut [u8],
    reply: &'c mut [u8],
    ws: &'c mut WsConnection<MESSAGE>,
    handler: &'c core::cell::RefCell<&'h mut H>,
}

/// Why a connection ends (all end the same way: close).
struct Closed;

async fn read(sock: &mut TcpSocket<'_>, buf: &mut [u8], limit: Duration) -> Result<usize, Closed> {
    match with_timeout(limit, sock.read(buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(n),
        _ => Err(Closed),
    }
}

async fn write_all(sock: &mut TcpSocket<'_>, mut bytes: &[u8]) -> Result<(), Closed> {
    while !bytes.is_empty() {
        match with_timeout(IDLE_TIMEOUT, sock.write(bytes)).await {
            Ok(Ok(n)) if n > 0 => bytes = bytes.get(n..).unwrap_or(&[]),
            _ => return Err(Closed),
        }
    }
    Ok(())
}

/// Room kept at the front of the reply buffer for what precedes a reply frame on the wire:
/// the HTTP head `HTTP/1.1 200 OK`, `Content-Length` (41 bytes for a 4-digit length) or a
/// WebSocket frame header (at most [`ws::MAX_HEADER_LEN`]). The frame is moved down against
/// the head once its length is known, so each reply leaves in one write.
pub const HEAD_ROOM: usize = 48;

/// Answers a request frame into `reply[HEAD_ROOM..]`; `None` means drop (close the
/// connection).
fn answer<H: Handler>(
    handler: &core::cell::RefCell<&mut H>,
    msg: &[u8],
    result: &mut [u8],
    reply: &mut [u8],
) -> Option<usize> {
    let reply = reply.get_mut(HEAD_ROOM..)?;
    let req = match Request::parse(msg) {
        Ok(r) => r,
        Err(e) => {
            return match frame::on_malformed(msg, e) {
                Malformed::Drop => None,
                Malformed::Reply { rid, message } => {
                    frame::write_reply_err(reply, rid, message).ok()
                }
            }
        }
    };
    let mut key_buf = [0u8; MAX_KEY];
    let Ok(key) = req.key.decode(&mut key_buf) else {
        return frame::write_reply_err(reply, req.rid, ERR_KEY).ok();
    };
    let outcome = match handler.try_borrow_mut() {
        Ok(mut h) => h.handle(key, req.payload, result),
        Err(_) => Err("ERR_BUSY"),
    };
    match outcome {
        Ok(n) => match result.get(..n) {
            Some(res) => frame::write_reply_ok(reply, req.rid, res)
                .or_else(|_| frame::write_reply_err(reply, req.rid, ERR_REPLY_TOO_LARGE))
                .ok(),
            None => frame::write_reply_err(reply, req.rid, ERR_REPLY_TOO_LARGE).ok(),
        },
        Err(msg) => frame::write_reply_err(reply, req.rid, msg).ok(),
    }
}

/// What a request head tells once the buffer is released.
struct Head {
    len: usize,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    /// `Some(Ok(accept))` for a valid WebSocket upgrade, `Some(Err)` for a broken one.
    upgrade: Option<Result<[u8; 28], ()>>,
}

fn head_of(buf: &[u8]) -> Result<Status<Head>, HttpError> {
    Ok(match http::parse_request::<MAX_HEADERS>(buf)? {
        Status::Partial => Status::Partial,
        Status::Complete((h, len)) => {
            let upgrade = h.upgrade || h.header("upgrade").is_some();
            Status::Complete(Head {
                len,
                body: h.body,
                keep_alive: h.keep_alive,
                expect_continue: h.expect_continue,
                upgrade: upgrade.then(|| {
                    ws::check_upgrade_request(
                        h.headers().iter().map(|f| (f.name.as_bytes(), f.value)),
                    )
                    .map_err(|_| ())
                }),
            })
        }
    })
}

/// The reason phrase of each status the worker sends ([`HttpError::status`] and 200): its own
/// short list, so that the core's whole [`http::reason_phrase`] table stays out of a board's
/// flash.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// What a connection asks of its socket next.
enum Io {
    /// Read more request bytes, waiting at most this long.
    Read(Duration),
    /// Write the first bytes of the reply buffer.
    Write(usize),
    /// Close the connection.
    Close,
}

/// Where a connection is between two socket operations.
enum Mode {
    /// Reading a request head.
    Head,
    /// Reading the body of a request: its head's length, the decoder, how far the bytes are
    /// decoded (read and write offsets of the in-place decoder) and whether to keep the
    /// connection open after the reply.
    Body {
        head: usize,
        dec: BodyDecoder,
        rd: usize,
        wr: usize,
        keep_alive: bool,
    },
    /// A WebSocket: request bytes from `start` on are not fed yet; `closing` once the
    /// connection ends after its queued control frames.
    Ws { start: usize, closing: bool },
    /// The last write is out: close.
    Closing,
}

/// One connection, sans-IO: [`Conn::step`] turns what was read into what to write, so the
/// async side has one read and one write (the code of a socket future is generated once per
/// await point, and flash is short).
struct Conn {
    /// Request bytes in the buffer.
    len: usize,
    /// A request was answered (the keep-alive timeout applies between requests).
    served: bool,
    mode: Mode,
}

impl Conn {
    /// A status reply (an HTTP error) and then the close.
    fn status(&mut self, reply: &mut [u8], status: u16) -> Io {
        self.mode = Mode::Closing;
        let close = [Header::new("Connection", b"close")];
        let reason = reason(status);
        match http::write_response_head_with(reply, status, reason, &close, BodyKind::Length(0)) {
            Ok(n) => Io::Write(n),
            Err(_) => Io::Close,
        }
    }

    /// Moves the connection on until it needs the socket.
    // Out of line: inlined, its parsers sit inside the task's poll function next to every
    // await state (measured: 356 B more flash).
    #[inline(never)]
    fn step<H: Handler, const MESSAGE: usize>(&mut self, b: &mut Bufs<'_, '_, H, MESSAGE>) -> Io {
        let max_request = b.req.len();
        loop {
            match self.mode {
                Mode::Head => {
                    let head = match head_of(b.req.get(..self.len).unwrap_or(&[])) {
                        Err(e) => return self.status(b.reply, e.status()),
                        Ok(Status::Partial) if self.len >= max_request => {
                            return self.status(b.reply, 431)
                        }
                        // Between requests a connection may idle only briefly.
                        Ok(Status::Partial) if self.served && self.len == 0 => {
                            return Io::Read(KEEP_ALIVE_TIMEOUT)
                        }
                        Ok(Status::Partial) => return Io::Read(IDLE_TIMEOUT),
                        Ok(Status::Complete(h)) => h,
                    };
                    match head.upgrade {
                        Some(Ok(accept)) => {
                            b.req.copy_within(head.len..self.len, 0);
                            self.len -= head.len;
                            self.mode = Mode::Ws {
                                start: 0,
                                closing: false,
                            };
                            return match ws::write_switching_protocols(&accept, b.reply) {
                                Ok(n) => Io::Write(n),
                                Err(_) => Io::Close,
                            };
                        }
                        Some(Err(())) => return self.status(b.reply, 400),
                        None => {}
                    }
                    let max_body = max_request.saturating_sub(head.len) as u64;
                    let dec = match BodyDecoder::new(head.body, max_body) {
                        Ok(d) => d,
                        Err(e) => return self.status(b.reply, e.status()),
                    };
                    self.mode = Mode::Body {
                        head: head.len,
                        dec,
                        rd: head.len,
                        wr: head.len,
                        keep_alive: head.keep_alive,
                    };
                    if head.expect_continue && self.len == head.len {
                        let n = http::CONTINUE_RESPONSE.len();
                        if let Some(out) = b.reply.get_mut(..n) {
                            out.copy_from_slice(http::CONTINUE_RESPONSE);
                            return Io::Write(n);
                        }
                    }
                }
                Mode::Body {
                    head,
                    ref mut dec,
                    ref mut rd,
                    ref mut wr,
                    keep_alive,
                } => {
                    let p = match dec.decode_in_place(b.req, *rd, *wr, self.len) {
                        Ok(p) => p,
                        Err(e) => return self.status(b.reply, e.status()),
                    };
                    (*rd, *wr) = (p.read, p.write);
                    if !p.done {
                        if self.len >= max_request {
                            if *rd <= *wr {
                                return self.status(b.reply, 413);
                            }
                            // Squeeze out consumed chunk framing before giving up.
                            b.req.copy_within(*rd..self.len, *wr);
                            self.len -= *rd - *wr;
                            *rd = *wr;
                        }
                        return Io::Read(IDLE_TIMEOUT);
                    }
                    let (rd, body) = (*rd, b.req.get(head..*wr).unwrap_or(&[]));
                    let Some(n) = answer(b.handler, body, b.result, b.reply) else {
                        trace!("worker: malformed HTTP request, closing");
                        return Io::Close;
                    };
                    let length = BodyKind::Length(n as u64);
                    let head_room = b.reply.get_mut(..HEAD_ROOM).unwrap_or(&mut []);
                    let h = http::write_response_head_with(head_room, 200, "OK", &[], length)
                        .map_err(|_| ());
                    // A pipelined request may follow in the same buffer.
                    b.req.copy_within(rd..self.len, 0);
                    self.len -= rd;
                    self.served = true;
                    self.mode = if keep_alive {
                        Mode::Head
                    } else {
                        Mode::Closing
                    };
                    return behind_head(b.reply, h, n);
                }
                Mode::Ws {
                    ref mut start,
                    ref mut closing,
                } => {
                    // Control frames queued by the last input go first (a server never masks:
                    // the generator is never asked for a key).
                    if let Ok(Some(n)) = b.ws.poll_transmit(&mut SplitMix64::new(0), b.reply) {
                        return Io::Write(n);
                    }
                    if *closing {
                        return Io::Close;
                    }
                    if *start >= self.len {
                        // WebSocket clients keep their connection open between requests on
                        // purpose.
                        (*start, self.len) = (0, 0);
                        return Io::Read(IDLE_TIMEOUT);
                    }
                    let input = b.req.get_mut(*start..self.len).unwrap_or(&mut []);
                    let msg = match b.ws.feed(input) {
                        Ok((used, ev)) => {
                            *start += used;
                            match ev {
                                Some(Event::Text(t)) => Some(t.as_bytes()),
                                Some(Event::Binary(m)) => Some(m),
                                Some(Event::Close { .. }) => {
                                    *closing = true;
                                    None
                                }
                                _ => None,
                            }
                        }
                        Err(_) => {
                            trace!("worker: WebSocket protocol error, closing");
                            *closing = true;
                            None
                        }
                    };
                    let n = msg.and_then(|m| answer(b.handler, m, b.result, b.reply));
                    if let Some(n) = n.filter(|_| b.ws.can_send()) {
                        let head_room = b.reply.get_mut(..HEAD_ROOM).unwrap_or(&mut []);
                        let h = ws::write_frame_header(
                            head_room,
                            true,
                            ws::Opcode::Text,
                            None,
                            n as u64,
                        )
                        .map_err(|_| ());
                        return behind_head(b.reply, h, n);
                    }
                }
                Mode::Closing => return Io::Close,
            }
        }
    }
}

/// The write of a reply frame of `n` bytes (at [`HEAD_ROOM`]) behind the `h` bytes of head
/// written at the start of `reply`: the frame is moved down against the head.
fn behind_head(reply: &mut [u8], h: Result<usize, ()>, n: usize) -> Io {
    match h {
        Ok(h) if h <= HEAD_ROOM => {
            reply.copy_within(HEAD_ROOM..HEAD_ROOM + n, h);
            Io::Write(h + n)
        }
        _ => Io::Close,
    }
}

/// Runs one accepted connection until it ends.
async fn run_conn<H: Handler, const MESSAGE: usize>(
    sock: &mut TcpSocket<'_>,
    b: &mut Bufs<'_, '_, H, MESSAGE>,
) -> Result<(), Closed> {
    let mut c = Conn {
        len: 0,
        served: false,
        mode: Mode::Head,
    };
    loop {
        match c.step(b) {
            Io::Read(limit) => {
                let free = b.req.get_mut(c.len..).unwrap_or(&mut []);
                c.len += read(sock, free, limit).await?;
            }
            Io::Write(n) => write_all(sock, b.reply.get(..n).unwrap_or(&[])).await?,
            Io::Close => return Ok(()),
        }
    }
}

/// The tutorial's worker ("Microservices with Grenache"): payload `{"number": n}`, result
/// the tutorial's `fibonacci(n)` (1, 1, 2, 3, 5, ...; `fibonacci(10)` = 89). Any key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fibonacci;

/// The largest `n` whose tutorial Fibonacci number fits a `u64`.
pub const FIBONACCI_MAX: u64 = 91;

impl Handler for Fibonacci {
    fn handle(
        &mut self,
        _key: &str,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, &'static str> {
        let n = grenache_core::wire::json::get(payload, "number")
            .ok()
            .flatten()
            .and_then(|raw| grenache_core::wire::json::parse_u64(raw).ok())
            .ok_or("ERR_BAD_PAYLOAD: expected {\"number\": n}")?;
        if n > FIBONACCI_MAX {
            return Err("ERR_BAD_PAYLOAD: number too large");
        }
        let (mut a, mut b) = (1u64, 1u64);
        for _ in 1..n {
            (a, b) = (b, a.saturating_add(b));
        }
        let mut w = grenache_core::wire::json::Writer::new(out);
        w.u64(b).map_err(|_| ERR_REPLY_TOO_LARGE)?;
        Ok(w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(payload: &[u8]) -> Result<u64, &'static str> {
        let mut out = [0u8; 32];
        let n = Fibonacci.handle("fibonacci_worker", payload, &mut out)?;
        let s = core::str::from_utf8(&out[..n]).map_err(|_| "utf8")?;
        s.parse().map_err(|_| "num")
    }

    #[test]
    fn fibonacci_as_the_tutorial() {
        assert_eq!(call(br#"{"number":0}"#), Ok(1));
        assert_eq!(call(br#"{"number":1}"#), Ok(1));
        assert_eq!(call(br#"{"number":2}"#), Ok(2));
        assert_eq!(call(br#"{"number": 10}"#), Ok(89));
        assert_eq!(call(br#"{"number":91}"#), Ok(7540113804746346429));
        assert!(call(br#"{"number":92}"#).is_err());
        assert!(call(b"null").is_err());
        assert!(call(br#"{"number":"x"}"#).is_err());
    }

    #[test]
    fn status_heads_carry_the_reason_and_close() {
        extern crate std;
        let mut c = Conn {
            len: 0,
            served: false,
            mode: Mode::Head,
        };
        let mut out = [0u8; 128];
        for (status, line) in [
            (400, "400 Bad Request"),
            (413, "413 Payload Too Large"),
            (431, "431 Request Header Fields Too Large"),
            (501, "501 Not Implemented"),
            (505, "505 HTTP Version Not Supported"),
        ] {
            let Io::Write(n) = c.status(&mut out, status) else {
                panic!("no head for {status}");
            };
            let want =
                std::format!("HTTP/1.1 {line}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(core::str::from_utf8(&out[..n]).unwrap(), want);
            assert!(matches!(c.mode, Mode::Closing));
        }
    }

    #[test]
    fn answer_frames() {
        let mut fib = Fibonacci;
        let h = core::cell::RefCell::new(&mut fib);
        let (mut res, mut rep) = ([0u8; MAX_RESULT], [0u8; MAX_REPLY]);
        let mut run = |msg: &[u8]| {
            answer(&h, msg, &mut res, &mut rep).map(|n| {
                core::str::from_utf8(&rep[HEAD_ROOM..HEAD_ROOM + n])
                    .unwrap()
                    .to_owned()
            })
        };
        extern crate std;
        use std::borrow::ToOwned;
        assert_eq!(
            run(br#"["r1","fibonacci_worker",{"number":10}]"#).as_deref(),
            Some(r#"["r1",null,89]"#)
        );
        assert_eq!(
            run(br#"["r2","fibonacci_worker",null]"#).as_deref(),
            Some(r#"["r2","ERR_BAD_PAYLOAD: expected {\"number\": n}",null]"#)
        );
        assert_eq!(
            run(br#"["r3"]"#).as_deref(),
            Some(r#"["r3","ERR_REQUEST_MALFORMED",null]"#)
        );
        assert_eq!(run(b"garbage"), None);
        assert_eq!(run(b"{}"), None);
    }
}
