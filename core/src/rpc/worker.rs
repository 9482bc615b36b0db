//! [`WorkerConnection`]: one accepted connection of a Grenache RPC worker, sans-IO.
//!
//! Grenache's two transports share one TCP port; the first request head decides which one a
//! connection speaks:
//!
//! * `Upgrade: websocket` → the 101 handshake, then WebSocket text or binary messages
//!   `[rid,key,payload]` answered by text messages `[rid,err,result]` (grenache-nodejs-ws;
//!   any path is accepted, as Node's server does).
//! * anything else → HTTP: the body of any method and path is the request frame; the answer is
//!   `200` with the reply frame as body (grenache-nodejs-http). Keep-alive and pipelining
//!   work: requests on one connection are answered in order, and a connection idle between
//!   requests for [`KEEP_ALIVE_TIMEOUT`] is closed.
//!
//! Bad input never needs more than the connection: a frame whose rid can be recovered gets
//! `[rid,"ERR_REQUEST_MALFORMED",null]` ([`frame::on_malformed`]); other malformed frames
//! close the connection (Node's HTTP server sends nothing either); an HTTP syntax error gets
//! its 4xx/5xx status ([`HttpError::status`]) and a close; an oversized request gets 413
//! (HTTP body), 431 (HTTP head) or close code 1009 (WebSocket message); a connection silent
//! for [`IDLE_TIMEOUT`], or that does not take our bytes for as long, is closed.
//!
//! # Driving it
//!
//! The connection owns no socket and reads no clock. The adapter, for each accepted TCP
//! connection, makes a [`WorkerConnection`] over its [`Buffers`] and loops on
//! [`WorkerConnection::poll`], giving it the current [`Instant`] and the [`Handler`]:
//!
//! * [`Action::Receive`]: read into [`WorkerConnection::read_buf`] and report the count with
//!   [`WorkerConnection::received`] (0 for the end of the stream), or poll again at `until`;
//! * [`Action::Send`]: write the bytes and report how many left with
//!   [`WorkerConnection::sent`], or poll again at `until`;
//! * [`Action::Close`]: close the TCP connection; the value is done.
//!
//! Requests reach the handler from inside `poll`, synchronously: a WebSocket message may sit
//! in the [`WsConnection`]'s reassembly buffer, which only lives until the next input, so the
//! request is answered before `poll` returns (and the reply is the next [`Action::Send`]).
//!
//! Memory: the caller's buffers only; nothing here allocates. The request buffer bounds one
//! HTTP request (head and body) and is the WebSocket read buffer; the reply buffer holds the
//! reply frame behind [`HEAD_ROOM`] bytes for its HTTP head or WebSocket header.

use crate::time::{Duration, Instant};
use crate::wire::frame::{self, Malformed};
use crate::wire::http::{self, BodyDecoder, BodyKind, Header, HttpError, Status};
use crate::wire::ws::{self, Event, WsConnection};

/// A connection that sends nothing for this long, or does not take our bytes, is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP connection idle between requests is closed after this (Node's keepAliveTimeout is
/// 5 s): clients keep connections in a pool, and each one holds one of a board's few slots.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Room kept at the front of the reply buffer for what precedes a reply frame on the wire:
/// the HTTP head `HTTP/1.1 200 OK`, `Content-Length` (41 bytes for a 4-digit length) or a
/// WebSocket frame header (at most [`ws::MAX_HEADER_LEN`]). The frame is moved down against
/// the head once its length is known, so each reply leaves in one write.
pub const HEAD_ROOM: usize = 48;

/// The smallest reply buffer that works: it also holds the 101 handshake answer
/// ([`ws::SWITCHING_PROTOCOLS_LEN`]) and WebSocket control frames (at most 127 bytes).
pub const MIN_REPLY: usize = ws::SWITCHING_PROTOCOLS_LEN;

/// Header fields kept of a request head (more → 431).
pub const MAX_HEADERS: usize = 16;

/// Longest decoded service name; longer ones are answered [`frame::ERR_REQUEST_MALFORMED`].
pub const MAX_KEY: usize = 128;

/// The error message when the handler's result does not fit the reply buffer.
pub const ERR_REPLY_TOO_LARGE: &str = "ERR_REPLY_TOO_LARGE";

/// One request, as the handler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Request<'a> {
    /// The request id as raw JSON (a string or a number); the reply echoes it.
    pub rid: &'a [u8],
    /// The service name the client looked up, decoded.
    pub key: &'a str,
    /// The payload as raw JSON (`null` when absent).
    pub payload: &'a [u8],
}

/// The application side of a worker.
pub trait Handler {
    /// Answers one request: writes the result as raw JSON into `result` and returns its
    /// length, or returns an error message for the client (sent as the `err` of the reply).
    /// The result must be valid JSON, or the client cannot parse the reply.
    fn handle(&mut self, request: &Request<'_>, result: &mut [u8]) -> Result<usize, &'static str>;
}

impl<H: Handler + ?Sized> Handler for &mut H {
    fn handle(&mut self, request: &Request<'_>, result: &mut [u8]) -> Result<usize, &'static str> {
        (**self).handle(request, result)
    }
}

/// The memory of one connection, owned by the caller (a board keeps it in a `static`).
pub struct Buffers<'b, const MESSAGE: usize> {
    /// Received bytes: one HTTP request, head and body (longer → 413 or 431), or the
    /// WebSocket read buffer.
    pub request: &'b mut [u8],
    /// Where the handler writes its result.
    pub result: &'b mut [u8],
    /// The reply frame behind [`HEAD_ROOM`], the 101 answer and WebSocket control frames: at
    /// least [`MIN_REPLY`] bytes. Keep it about 240 bytes longer than `result`, or replies
    /// with long rids become [`ERR_REPLY_TOO_LARGE`].
    pub reply: &'b mut [u8],
    /// The WebSocket state, used once a connection upgrades; `MESSAGE` is the longest message
    /// accepted (longer → close 1009). Reset by [`WorkerConnection::new`].
    pub ws: &'b mut WsConnection<MESSAGE>,
}

/// What the connection asks of its socket next.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action<'a> {
    /// Read into [`WorkerConnection::read_buf`], then call [`WorkerConnection::received`]; if
    /// nothing arrives by `until`, poll again (the connection then closes).
    Receive {
        /// The deadline of this read.
        until: Instant,
    },
    /// Write `bytes`, then call [`WorkerConnection::sent`] with how many were taken; if the
    /// peer takes none by `until`, poll again (the connection then closes).
    Send {
        /// The bytes to write, in order.
        bytes: &'a [u8],
        /// The deadline of this write.
        until: Instant,
    },
    /// Close the connection (any reply before it was already sent).
    Close,
}

/// Where a connection is in its input.
#[derive(Debug)]
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

/// What [`WorkerConnection::step`] needs next.
enum Io {
    /// More request bytes, within this long.
    Read(Duration),
    /// Send the first bytes of the reply buffer.
    Write(usize),
    /// The end.
    Close,
}

/// One accepted worker connection; see the [module documentation](self).
pub struct WorkerConnection<'b, const MESSAGE: usize> {
    bufs: Buffers<'b, MESSAGE>,
    /// Request bytes in the buffer.
    len: usize,
    /// A request was answered (the keep-alive timeout applies between requests).
    served: bool,
    mode: Mode,
    /// `reply[out_start..out_end]` waits for the socket.
    out_start: usize,
    out_end: usize,
    /// When the read or write being waited for gives up; `None` until the next wait starts.
    deadline: Option<Instant>,
}

impl<const MESSAGE: usize> core::fmt::Debug for WorkerConnection<'_, MESSAGE> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WorkerConnection")
            .field("len", &self.len)
            .field("served", &self.served)
            .field("mode", &self.mode)
            .field("out", &(self.out_start..self.out_end))
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<'b, const MESSAGE: usize> WorkerConnection<'b, MESSAGE> {
    /// A connection that has received nothing yet (its WebSocket state is reset).
    pub fn new(bufs: Buffers<'b, MESSAGE>) -> Self {
        *bufs.ws = WsConnection::new();
        WorkerConnection {
            bufs,
            len: 0,
            served: false,
            mode: Mode::Head,
            out_start: 0,
            out_end: 0,
            deadline: None,
        }
    }

    /// Moves the connection on: answers what has arrived (calling `handler` for each
    /// request) until it needs the socket, and says how.
    ///
    /// Polling again without reading or writing in between asks the same again, until its
    /// deadline: a poll at or after `until` gives [`Action::Close`].
    #[must_use]
    pub fn poll<H: Handler + ?Sized>(&mut self, now: Instant, handler: &mut H) -> Action<'_> {
        let limit = loop {
            if self.out_start < self.out_end {
                break IDLE_TIMEOUT;
            }
            (self.out_start, self.out_end) = (0, 0);
            match self.step(handler) {
                Io::Read(limit) => break limit,
                Io::Write(n) => self.out_end = n.min(self.bufs.reply.len()),
                Io::Close => return self.close(),
            }
        };
        let until = *self.deadline.get_or_insert(now + limit);
        if now >= until {
            return self.close();
        }
        match self.bufs.reply.get(self.out_start..self.out_end) {
            Some(bytes) if !bytes.is_empty() => Action::Send { bytes, until },
            _ => Action::Receive { until },
        }
    }

    /// Where the next read goes: the free end of the request buffer.
    pub fn read_buf(&mut self) -> &mut [u8] {
        self.bufs.request.get_mut(self.len..).unwrap_or(&mut [])
    }

    /// `n` bytes were read into [`read_buf`](Self::read_buf); 0 means the peer ended its side,
    /// and the connection closes.
    pub fn received(&mut self, n: usize) {
        if n == 0 {
            self.mode = Mode::Closing;
        }
        self.len = self.len.saturating_add(n).min(self.bufs.request.len());
        self.deadline = None;
    }

    /// The first `n` bytes of the last [`Action::Send`] were written.
    pub fn sent(&mut self, n: usize) {
        if n > 0 {
            self.out_start = self.out_start.saturating_add(n).min(self.out_end);
            self.deadline = None;
        }
    }

    fn close(&mut self) -> Action<'static> {
        self.mode = Mode::Closing;
        (self.out_start, self.out_end) = (0, 0);
        Action::Close
    }

    /// A status reply (an HTTP error) and then the close.
    fn status(&mut self, status: u16) -> Io {
        self.mode = Mode::Closing;
        let close = [Header::new("Connection", b"close")];
        let reason = reason(status);
        let head = BodyKind::Length(0);
        match http::write_response_head_with(self.bufs.reply, status, reason, &close, head) {
            Ok(n) => Io::Write(n),
            Err(_) => Io::Close,
        }
    }

    /// Moves the connection on until it needs the socket.
    // Out of line: inlined into an adapter's task, its parsers sit next to every await state
    // of the task's poll function (measured on the STM32 board: 356 B more flash).
    #[inline(never)]
    fn step<H: Handler + ?Sized>(&mut self, handler: &mut H) -> Io {
        let max_request = self.bufs.request.len();
        loop {
            match self.mode {
                Mode::Head => {
                    let head = match head_of(self.bufs.request.get(..self.len).unwrap_or(&[])) {
                        Err(e) => return self.status(e.status()),
                        Ok(Status::Partial) if self.len >= max_request => return self.status(431),
                        // Between requests a connection may idle only briefly.
                        Ok(Status::Partial) if self.served && self.len == 0 => {
                            return Io::Read(KEEP_ALIVE_TIMEOUT)
                        }
                        Ok(Status::Partial) => return Io::Read(IDLE_TIMEOUT),
                        Ok(Status::Complete(h)) => h,
                    };
                    match head.upgrade {
                        Some(Ok(accept)) => {
                            self.bufs.request.copy_within(head.len..self.len, 0);
                            self.len -= head.len;
                            self.mode = Mode::Ws {
                                start: 0,
                                closing: false,
                            };
                            return match ws::write_switching_protocols(&accept, self.bufs.reply) {
                                Ok(n) => Io::Write(n),
                                Err(_) => Io::Close,
                            };
                        }
                        Some(Err(())) => return self.status(400),
                        None => {}
                    }
                    let max_body = max_request.saturating_sub(head.len) as u64;
                    let dec = match BodyDecoder::new(head.body, max_body) {
                        Ok(d) => d,
                        Err(e) => return self.status(e.status()),
                    };
                    self.mode = Mode::Body {
                        head: head.len,
                        dec,
                        rd: head.len,
                        wr: head.len,
                        keep_alive: head.keep_alive,
                    };
                    // Only before any body byte: a client that sent the body already does
                    // not wait for the interim response.
                    if head.expect_continue && self.len == head.len {
                        let n = http::CONTINUE_RESPONSE.len();
                        if let Some(out) = self.bufs.reply.get_mut(..n) {
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
                    let p = match dec.decode_in_place(self.bufs.request, *rd, *wr, self.len) {
                        Ok(p) => p,
                        Err(e) => return self.status(e.status()),
                    };
                    (*rd, *wr) = (p.read, p.write);
                    if !p.done {
                        if self.len >= max_request {
                            if *rd <= *wr {
                                return self.status(413);
                            }
                            // Squeeze out consumed chunk framing before giving up.
                            self.bufs.request.copy_within(*rd..self.len, *wr);
                            self.len -= *rd - *wr;
                            *rd = *wr;
                        }
                        return Io::Read(IDLE_TIMEOUT);
                    }
                    let rd = *rd;
                    let Buffers {
                        request,
                        result,
                        reply,
                        ..
                    } = &mut self.bufs;
                    let body = request.get(head..*wr).unwrap_or(&[]);
                    let Some(n) = answer(handler, body, result, reply) else {
                        return Io::Close;
                    };
                    let length = BodyKind::Length(n as u64);
                    let head_room = reply.get_mut(..HEAD_ROOM).unwrap_or(&mut []);
                    let h = http::write_response_head_with(head_room, 200, "OK", &[], length)
                        .map_err(|_| ());
                    // A pipelined request may follow in the same buffer.
                    request.copy_within(rd..self.len, 0);
                    self.len -= rd;
                    self.served = true;
                    self.mode = if keep_alive {
                        Mode::Head
                    } else {
                        Mode::Closing
                    };
                    return behind_head(reply, h, n);
                }
                Mode::Ws {
                    ref mut start,
                    ref mut closing,
                } => {
                    let Buffers {
                        request,
                        result,
                        reply,
                        ws,
                    } = &mut self.bufs;
                    // Control frames queued by the last input go first.
                    if let Ok(Some(n)) = ws.poll_transmit(reply) {
                        return Io::Write(n);
                    }
                    if *closing {
                        return Io::Close;
                    }
                    if *start >= self.len {
                        // WebSocket clients keep their connection open between requests on
                        // purpose: no keep-alive limit here.
                        (*start, self.len) = (0, 0);
                        return Io::Read(IDLE_TIMEOUT);
                    }
                    let input = request.get_mut(*start..self.len).unwrap_or(&mut []);
                    let msg = match ws.feed(input) {
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
                        // The close frame with the error's code is queued.
                        Err(_) => {
                            *closing = true;
                            None
                        }
                    };
                    let n = msg.and_then(|m| answer(handler, m, result, reply));
                    if let Some(n) = n.filter(|_| ws.can_send()) {
                        let head_room = reply.get_mut(..HEAD_ROOM).unwrap_or(&mut []);
                        let h = ws::write_frame_header(
                            head_room,
                            true,
                            ws::Opcode::Text,
                            None,
                            n as u64,
                        )
                        .map_err(|_| ());
                        return behind_head(reply, h, n);
                    }
                }
                Mode::Closing => return Io::Close,
            }
        }
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

/// Answers a request frame into `reply[HEAD_ROOM..]` and returns the frame's length; `None`
/// means drop (close the connection without an answer).
fn answer<H: Handler + ?Sized>(
    handler: &mut H,
    msg: &[u8],
    result: &mut [u8],
    reply: &mut [u8],
) -> Option<usize> {
    let reply = reply.get_mut(HEAD_ROOM..)?;
    let req = match frame::Request::parse(msg) {
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
        return frame::write_reply_err(reply, req.rid, frame::ERR_REQUEST_MALFORMED).ok();
    };
    let request = Request {
        rid: req.rid,
        key,
        payload: req.payload,
    };
    match handler.handle(&request, result) {
        Ok(n) => match result.get(..n) {
            Some(res) => frame::write_reply_ok(reply, req.rid, res)
                .or_else(|_| frame::write_reply_err(reply, req.rid, ERR_REPLY_TOO_LARGE))
                .ok(),
            None => frame::write_reply_err(reply, req.rid, ERR_REPLY_TOO_LARGE).ok(),
        },
        Err(msg) => frame::write_reply_err(reply, req.rid, msg).ok(),
    }
}

/// The write of a reply frame of `n` bytes (at [`HEAD_ROOM`]) behind the `h` bytes of head
/// written at the start of `reply`: the frame is moved down against the head.
fn behind_head(reply: &mut [u8], h: Result<usize, ()>, n: usize) -> Io {
    match h {
        Ok(h) if h <= HEAD_ROOM && HEAD_ROOM + n <= reply.len() => {
            reply.copy_within(HEAD_ROOM..HEAD_ROOM + n, h);
            Io::Write(h + n)
        }
        _ => Io::Close,
    }
}

#[cfg(test)]
mod tests;
