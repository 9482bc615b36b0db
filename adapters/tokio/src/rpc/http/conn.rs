//! One connection of the HTTP worker: HTTP/1.1 framed by `grenache_core::wire::http`, driven
//! by tokio, as the grape API's connections are (why not hyper: [`crate::http_server`]).
//!
//! The loop per request: read a head within `read_timeout` of the previous answer (so it is
//! also the idle time of a keep-alive connection), read the body with the core's
//! [`BodyDecoder`] (never past `max_message_size`, charged to the memory budget once larger
//! than [`SMALL_MESSAGE`], at `min_body_rate` once `read_timeout` has passed), answer it as
//! the parent module's docs say, and write the answer in one piece. Pipelined requests are
//! answered in order.
//!
//! A chunked request to a worker with a stream handler (Node's `meta.isStream`) is handed,
//! with the bytes already read, to hyper ([`serve_streams`]), which serves that one
//! request and closes the connection: a streamed body flows while its answer goes back, which
//! this loop does not do. Node's stream clients close after each stream too
//! (`connection: close`). A worker whose every request goes to the stream handler is served by
//! hyper throughout.

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use grenache_core::wire::frame::ERR_REQUEST_MALFORMED;
use grenache_core::wire::http::{
    parse_request_limited, BodyDecoder, BodyKind, HttpError, Status, CONTINUE_RESPONSE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::routes::{
    HeaderMeta, Routes, ERR_HEADER_PARSE_GR, ERR_MEMORY_BUDGET, ERR_PAYLOAD_TOO_LARGE,
};
use super::streams::serve_streams;
use crate::http_server::{encode_answer, read_more, Answer, MAX_HEAD, MAX_HEADERS, READ_CHUNK};
use crate::js::truthy as js_truthy;
use crate::limits::{MinProgress, Reservation};
use crate::rpc::error::RpcError;
use crate::rpc::frame::{decode_request, encode_reply, key_text, BadRequest};
use crate::rpc::gzip::{gzip, inflate, Gunzip};
use crate::rpc::handler::{Handler, Request};
use crate::rpc::server::{Accepted, Io, Shared, SMALL_MESSAGE};
use crate::tls::CertInfo;

/// Bytes asked of the socket per read of a large `Content-Length` body, which is read straight
/// into the body buffer: fewer system calls than [`READ_CHUNK`].
const BODY_READ_CHUNK: usize = 64 * 1024;

/// What the loop keeps of a parsed head (which borrows the read buffer).
struct RequestHead {
    /// `CONNECT`: Node has no `connect` listener and drops the socket; so do we.
    connect: bool,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
    /// `_gr`, `_a`, `_ar`, `grc-compress`, chunked; `Err` for a `_gr` that is not JSON.
    meta: Result<HeaderMeta, ()>,
    /// Bytes of the head in the read buffer.
    len: usize,
}

/// How a request ends without a `[rid, err, result]` answer.
enum Abort {
    /// Close without answering: the client went away or stalled, or the body is not a frame.
    Close(&'static str),
    /// Answer this status and body, then close (unread input makes the connection unusable).
    Answer(u16, &'static str),
}

/// One connection's socket and buffers.
struct Connection {
    io: Box<dyn Io>,
    peer: SocketAddr,
    /// Bytes read and not yet consumed: a head, body bytes, pipelined requests.
    buf: Vec<u8>,
    /// The body of the request being read.
    body: Vec<u8>,
    /// The answer being written.
    out: Vec<u8>,
}

/// Serves requests on the accepted connection until the client closes, a request says
/// `Connection: close`, a timeout or a framing error ends it, or the worker closes while it
/// is idle.
pub(super) async fn serve_connection(accepted: Accepted, shared: Arc<Shared<Routes>>) {
    let Some(handler) = shared.routes.buffered().map(Arc::clone) else {
        return serve_streams(accepted, Vec::new(), shared, true).await;
    };
    let Accepted {
        io,
        peer,
        cert,
        allowed,
        activity,
    } = accepted;
    let config = &shared.config;
    let mut conn = Connection {
        io,
        peer,
        buf: Vec::with_capacity(READ_CHUNK),
        body: Vec::new(),
        out: Vec::with_capacity(512),
    };
    // One lazy timer per connection, not one per request (see `grape::conn`): each answer
    // moves `deadline`, and the timer, when it fires early, is set to it again.
    let mut deadline = Instant::now() + config.read_timeout;
    let idle_timer = sleep_until(deadline);
    tokio::pin!(idle_timer);
    let shutdown = shared.closed();
    tokio::pin!(shutdown);
    loop {
        // The head, within the read timeout; an idle connection closes when the worker does.
        let head = loop {
            match parse_head(&conn.buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!("grenache http server: bad request head from {peer}: {err:?}");
                    return conn.finish(err.status(), "").await;
                }
            }
            let idle = conn.buf.is_empty();
            if idle && shared.closing.borrow().is_some() {
                return;
            }
            tokio::select! {
                biased;
                read = read_more(&mut conn.io, &mut conn.buf) => match read {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("grenache http server: connection from {peer} ended: {e}");
                        return;
                    }
                },
                () = &mut idle_timer => {
                    // A slow head or an idle keep-alive connection: closed without an answer.
                    if Instant::now() >= deadline {
                        return;
                    }
                    idle_timer.as_mut().reset(deadline);
                }
                _ = &mut shutdown, if idle => return,
            }
        };
        if head.connect {
            return;
        }
        // Busy from a request's head to its answer: a busy connection is never displaced.
        let busy = activity.busy();
        if !allowed {
            // The TLS `verify_client` hook rejected this client.
            return conn.finish(401, "Forbidden").await;
        }
        let meta = match head.meta {
            Ok(meta) => meta,
            Err(()) => {
                tracing::warn!("grenache http server: bad _gr header from {peer}");
                return conn.finish(500, ERR_HEADER_PARSE_GR).await;
            }
        };
        if meta.is_stream && matches!(shared.routes, Routes::Split { .. }) {
            drop(busy);
            let accepted = Accepted {
                io: conn.io,
                peer,
                cert,
                allowed,
                activity,
            };
            return serve_streams(accepted, conn.buf, shared, false).await;
        }
        conn.buf.drain(..head.len);

        let outcome = match conn
            .read_body(head.body, head.expect_continue, &shared)
            .await
        {
            Ok(charge) => {
                conn.answer(meta, charge, cert.clone(), &*handler, &shared)
                    .await
            }
            Err(abort) => Err(abort),
        };
        let reply = match outcome {
            Ok(reply) => reply,
            Err(Abort::Close(why)) => {
                tracing::debug!("grenache http server: closing the connection from {peer}: {why}");
                return;
            }
            Err(Abort::Answer(status, body)) => return conn.finish(status, body).await,
        };
        let keep_alive = head.keep_alive && shared.closing.borrow().is_none();
        let answer = Answer {
            status: 200,
            content_type: None,
            body: &reply,
        };
        encode_answer(
            &mut conn.out,
            &answer,
            keep_alive.then_some(config.read_timeout),
        );
        if let Err(e) = write_all(&mut conn.io, &conn.out).await {
            tracing::debug!("grenache http server: answering {peer} failed: {e}");
            return;
        }
        drop(busy);
        if !keep_alive {
            let _ = conn.io.shutdown().await;
            return;
        }
        // The next head is due within the read timeout of this answer.
        deadline = Instant::now() + config.read_timeout;
        // An idle connection keeps small buffers, not the largest request or answer it once
        // carried.
        if conn.buf.capacity() > 2 * READ_CHUNK && conn.buf.len() <= READ_CHUNK {
            conn.buf.shrink_to(READ_CHUNK);
        }
        if conn.out.capacity() > SMALL_MESSAGE {
            conn.out = Vec::new();
        }
    }
}

/// Parses a head from the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    match parse_request_limited::<MAX_HEADERS>(buf, MAX_HEAD)? {
        Status::Partial => Ok(None),
        Status::Complete((head, len)) => Ok(Some(RequestHead {
            connect: head.method == "CONNECT",
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            body: head.body,
            meta: HeaderMeta::from_headers(|name| head.header(name)),
            len,
        })),
    }
}

/// The answer to a body that cannot be read: 413 `ERR_PAYLOAD_TOO_LARGE` over the size limit,
/// the framing error's status (400 mostly, as Node's server answers bad chunking) otherwise.
fn body_error(err: HttpError) -> Abort {
    match err {
        HttpError::BodyTooLarge => Abort::Answer(413, ERR_PAYLOAD_TOO_LARGE),
        other => Abort::Answer(other.status(), ""),
    }
}

impl Connection {
    /// Reads the body into `self.body`, leaving any pipelined bytes after it in `self.buf`;
    /// returns what it holds of the memory budget.
    async fn read_body(
        &mut self,
        kind: BodyKind,
        expect_continue: bool,
        shared: &Shared<Routes>,
    ) -> Result<Reservation, Abort> {
        let config = &shared.config;
        let max = u64::try_from(config.max_message_size).unwrap_or(u64::MAX);
        let mut decoder = BodyDecoder::new(kind, max).map_err(body_error)?;
        if expect_continue && !decoder.is_done() && self.buf.is_empty() {
            write_all(&mut self.io, CONTINUE_RESPONSE)
                .await
                .map_err(|_| Abort::Close("writing 100 Continue failed"))?;
        }
        let progress = MinProgress {
            grace: config.read_timeout,
            min_rate: config.min_body_rate,
        };
        let started = Instant::now();
        // Charged as the bytes arrive, not from `content-length`: a client must send the bytes
        // it holds the budget with.
        let mut charge = shared.budget.reservation();
        // Bytes of the body (framing included) received so far, for the minimum rate.
        let mut received = self.buf.len();
        self.body.clear();
        loop {
            if !self.buf.is_empty() || decoder.is_done() {
                let step = decoder.decode(&self.buf).map_err(body_error)?;
                self.body.extend_from_slice(step.data_in(&self.buf));
                self.buf.drain(..step.consumed);
                self.charge_body(&mut charge)?;
                if step.done {
                    return Ok(charge);
                }
                if !self.buf.is_empty() {
                    continue;
                }
            }
            // The read buffer is empty here. The rest of a large `Content-Length` body is read
            // straight into `body`: no copy, and the read buffer stays small.
            let direct = decoder
                .remaining()
                .and_then(|left| usize::try_from(left).ok())
                .filter(|&left| left > READ_CHUNK);
            let due = progress.deadline(started, received);
            let read = match direct {
                Some(left) => {
                    let want = left.min(BODY_READ_CHUNK);
                    self.body.reserve(want);
                    let mut limited = (&mut self.io).take(want as u64);
                    timeout_at(due, limited.read_buf(&mut self.body)).await
                }
                None => {
                    self.buf.reserve(READ_CHUNK);
                    timeout_at(due, self.io.read_buf(&mut self.buf)).await
                }
            };
            let n = match read {
                Err(_elapsed) => return Err(Abort::Close("the body came too slowly")),
                Ok(Ok(0)) => return Err(Abort::Close("the client closed mid-body")),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => return Err(Abort::Close("reading the body failed")),
            };
            received = received.saturating_add(n);
            if direct.is_some() {
                // All body bytes (at most what the length left): the decoder only counts them.
                let start = self.body.len().saturating_sub(n);
                let step = decoder
                    .decode(self.body.get(start..).unwrap_or(&[]))
                    .map_err(body_error)?;
                self.charge_body(&mut charge)?;
                if step.done {
                    return Ok(charge);
                }
            }
        }
    }

    /// Charges the body read so far to the memory budget once it is larger than
    /// [`SMALL_MESSAGE`]: 413 `ERR_MEMORY_BUDGET` when the budget cannot hold it.
    fn charge_body(&self, charge: &mut Reservation) -> Result<(), Abort> {
        let size = self.body.len();
        if size > SMALL_MESSAGE && !charge.try_grow_to(size) {
            tracing::warn!(
                "grenache http server: body from {} over the memory budget",
                self.peer
            );
            return Err(Abort::Answer(413, ERR_MEMORY_BUDGET));
        }
        Ok(())
    }

    /// The answer body (`[rid, err, result]`, gzipped when asked) to the request whose body
    /// `read_body` left in `self.body`. Gives the body's memory back before the handler runs.
    async fn answer(
        &mut self,
        meta: HeaderMeta,
        charge: Reservation,
        cert: Option<Arc<CertInfo>>,
        handler: &dyn Handler,
        shared: &Shared<Routes>,
    ) -> Result<Vec<u8>, Abort> {
        let peer = self.peer;
        let max = shared.config.max_message_size;
        let mut inflated_charge = None;
        let mut inflated = None;
        if meta.compress {
            // Off the async runtime: inflating a bomb up to the size limit takes a while.
            let (compressed, budget) = (std::mem::take(&mut self.body), shared.budget.clone());
            let inflating = tokio::task::spawn_blocking(move || {
                let mut charge = budget.reservation();
                let plain = inflate(&compressed, max, Some(&mut charge));
                (compressed, plain.map(|plain| (plain, charge)))
            });
            match inflating.await {
                Ok((_, Ok((plain, charge)))) => {
                    inflated_charge = Some(charge);
                    inflated = Some(plain);
                }
                Ok((_, Err(Gunzip::TooLarge))) => {
                    tracing::warn!(
                        "grenache http server: gzip body from {peer} over the size limit"
                    );
                    return Err(Abort::Answer(413, ERR_PAYLOAD_TOO_LARGE));
                }
                Ok((_, Err(Gunzip::OverBudget))) => {
                    tracing::warn!(
                        "grenache http server: gzip body from {peer} over the memory budget"
                    );
                    return Err(Abort::Answer(413, ERR_MEMORY_BUDGET));
                }
                // Node keeps the raw body when gunzip fails.
                Ok((compressed, Err(Gunzip::Invalid))) => self.body = compressed,
                Err(_) => return Err(Abort::Close("gunzip failed")),
            }
        }
        let decoded = decode_request(inflated.as_deref().unwrap_or(&self.body));
        // The bytes are parsed: what they held is given back to the budget, and a large body's
        // buffer to the allocator.
        drop((inflated, inflated_charge, charge));
        self.body.clear();
        if self.body.capacity() > SMALL_MESSAGE {
            self.body = Vec::new();
        }
        let (rid, key, payload) = match decoded {
            Ok(parts) => parts,
            Err(BadRequest::Reply(frame)) => {
                tracing::warn!(
                    "grenache http server: malformed request from {peer}: {ERR_REQUEST_MALFORMED}"
                );
                return encoded(frame.into_bytes(), meta.compress);
            }
            Err(why) => {
                tracing::warn!("grenache http server: malformed request from {peer}: {why}");
                return Err(Abort::Close("the body is not a request frame"));
            }
        };
        // `_gr` overrides the rid and key when its elements are truthy (Node `getRidKey`).
        let info = meta.info.as_ref();
        let rid = match info.and_then(|i| i.get(0)) {
            Some(v) if js_truthy(v) => v.clone(),
            _ => rid,
        };
        let key = match info.and_then(|i| i.get(1)) {
            Some(v) if js_truthy(v) => key_text(v),
            _ => key,
        };
        let request = Request {
            rid: rid.clone(),
            key,
            payload,
            action: meta.action,
            args: meta.args,
            remote: peer,
            cert,
        };
        let outcome = match AssertUnwindSafe(handler.handle(request))
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
        encoded(encode_reply(&rid, &outcome).into_bytes(), meta.compress)
    }

    /// Answers `status` with `body` and `Connection: close`, then closes.
    async fn finish(mut self, status: u16, body: &str) {
        let answer = Answer {
            status,
            content_type: None,
            body: body.as_bytes(),
        };
        encode_answer(&mut self.out, &answer, None);
        if write_all(&mut self.io, &self.out).await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }
}

/// `reply` as sent: gzipped when the request was.
fn encoded(reply: Vec<u8>, compress: bool) -> Result<Vec<u8>, Abort> {
    if compress {
        gzip(&reply).map_err(|_| Abort::Close("gzip failed"))
    } else {
        Ok(reply)
    }
}

/// Writes `bytes` and flushes them (TLS buffers writes). The stream is a `WriteStall`: a client
/// that takes no byte for `read_timeout` fails the write.
async fn write_all(io: &mut Box<dyn Io>, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_keep_what_the_loop_needs() {
        assert!(parse_head(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let head = parse_head(
            b"POST /x HTTP/1.1\r\ngrc-compress: gzip\r\n_gr: [\"r\",\"k\"]\r\n_a: up\r\n\
              _ar: {\"n\":1}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(head.keep_alive && !head.connect && !head.expect_continue);
        assert_eq!(head.body, BodyKind::Chunked);
        let meta = head.meta.unwrap();
        assert!(meta.compress && meta.is_stream);
        assert_eq!(meta.info, Some(serde_json::json!(["r", "k"])));
        assert_eq!(meta.action.as_deref(), Some("up"));
        assert_eq!(meta.args, serde_json::json!({"n": 1}));

        let plain = parse_head(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n[]")
            .unwrap()
            .unwrap();
        assert!(!plain.keep_alive);
        assert_eq!(plain.len, 38);
        let meta = plain.meta.unwrap();
        assert!(!meta.compress && !meta.is_stream && meta.info.is_none());
        assert_eq!(meta.args, serde_json::json!({}));

        let bad_gr = parse_head(b"POST / HTTP/1.1\r\n_gr: nope\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(bad_gr.meta.is_err());
        let huge = format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_head(huge.as_bytes()).err(),
            Some(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn only_the_exact_chunked_value_marks_a_stream() {
        // Node: `req.headers['transfer-encoding'] === 'chunked'`.
        let head = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.body, BodyKind::Chunked);
        assert!(!head.meta.unwrap().is_stream);
    }
}
