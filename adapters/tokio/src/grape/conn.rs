//! One connection of the grape API: HTTP/1.1 framed by `grenache_core::wire::http`, driven by
//! tokio.
//!
//! The loop per request: read a head (within [`ApiConfig::header_timeout`] of the previous
//! answer, so it is also the idle timeout), read the body with the core's [`BodyDecoder`]
//! (never past [`ApiConfig::max_payload`], at the minimum rate of
//! [`ApiConfig::body_progress`], within [`ApiConfig::body_timeout`]), run the handler while
//! watching for the client to hang up, and write the answer in one `write` call. Pipelined
//! requests are answered in order.
//!
//! Why not hyper: see [`crate::http_server`] (here it halved the CPU time of a `/lookup`,
//! docs/BENCHMARKS.md, "Grape").
//!
//! [`ApiConfig::header_timeout`]: super::ApiConfig::header_timeout
//! [`ApiConfig::max_payload`]: super::ApiConfig::max_payload
//! [`ApiConfig::body_timeout`]: super::ApiConfig::body_timeout
//! [`ApiConfig::body_progress`]: super::ApiConfig::body_progress

use std::io;
use std::net::IpAddr;

use grenache_core::wire::http::{
    parse_request_limited, BodyDecoder, BodyKind, HttpError, Status, CONTINUE_RESPONSE,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::trace;

use super::config::ApiConfig;
use super::dht::GrapeDht;
use super::fair::Slot;
use super::handlers::{self, Endpoint, Plan, Reply};
use super::shared::Shared;
use super::stats::{Outcome, Route};
use super::status;
use crate::http_server::{encode_answer, read_more, Answer, MAX_HEAD, MAX_HEADERS, READ_CHUNK};

/// What the loop keeps of a parsed head (which borrows the read buffer).
struct RequestHead {
    /// `CONNECT`: Node has no `connect` listener and drops the socket; so do we.
    connect: bool,
    /// `HEAD`: the answer's head only (its `Content-Length` still that of the body), as
    /// Node's http server does.
    head_only: bool,
    /// The operator endpoint a `GET` or `HEAD` reaches (`grape::status`), if any.
    page: Option<status::Page>,
    /// The handler the raw request-target (query included: the grape routes on it verbatim)
    /// reaches, if any. Worked out while the head borrows the read buffer, so that the target
    /// is never copied.
    endpoint: Option<Endpoint>,
    keep_alive: bool,
    expect_continue: bool,
    body: BodyKind,
    /// Bytes of the head in the read buffer.
    len: usize,
}

/// How a request ended before it reached the handler.
enum Abort {
    /// The client went away or stalled: close without answering.
    Close,
    /// Answer with this status and close (unread input makes the connection unusable).
    Answer(Reply),
}

/// Serves requests on `stream` until the client closes, a request says `Connection: close`,
/// a timeout or a framing error ends it, or the server shuts down while it is idle.
pub(super) async fn serve_connection<D: GrapeDht>(
    mut stream: TcpStream,
    client: IpAddr,
    shared: &Shared<D>,
    slot: &Slot,
) -> io::Result<()> {
    let config = &shared.config;
    let closing = shared.closing.clone();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut body: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(512);
    // Made once per connection rather than per request: arming and clearing a timer and
    // registering with a `Notify` and a `watch` for every request cost more than parsing it.
    // The timer is lazy: each request only moves `deadline`; when the timer fires before it,
    // it is set again to the deadline of that moment, so it fires at most once per head
    // timeout however many requests come.
    let mut deadline = Instant::now() + config.header_timeout;
    let idle_timer = sleep_until(deadline);
    tokio::pin!(idle_timer);
    let mut shutdown = shared.closing.clone();
    let shutdown = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(shutdown);
    let displaced = slot.displaced();
    tokio::pin!(displaced);
    loop {
        // The head, within the head timeout. An idle connection closes when shutdown starts,
        // and when it is displaced to make room for a lighter client (`grape::fair`).
        slot.set_idle(true);
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(err) => {
                    trace!("grape api: bad request head: {err:?}");
                    let reply = Reply::raw(err.status(), "");
                    return send_final(&mut stream, &mut out, &reply, config).await;
                }
            }
            let idle = buf.is_empty();
            if idle && *closing.borrow() {
                return Ok(());
            }
            tokio::select! {
                biased;
                read = read_more(&mut stream, &mut buf) => match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(err),
                },
                () = &mut idle_timer => {
                    // A slow or silent client: closed without an answer, as Node does.
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                    idle_timer.as_mut().reset(deadline);
                }
                () = &mut shutdown, if idle => return Ok(()),
                () = &mut displaced => return Ok(()),
            }
        };
        slot.set_idle(false);
        buf.drain(..head.len);
        if head.connect {
            return Ok(());
        }

        body.clear();
        match read_body(&mut stream, &mut buf, &mut body, &head, shared).await? {
            Ok(()) => {}
            Err(Abort::Close) => return Ok(()),
            Err(Abort::Answer(reply)) => {
                return send_final(&mut stream, &mut out, &reply, config).await;
            }
        }

        // The operator endpoints: `GET` of their exact paths only (a Node client always POSTs).
        let plan = match head.page {
            Some(page) => Plan::Reply(status::serve(shared, page).await),
            None => {
                let plan = handlers::handle(head.endpoint, &body);
                if let Plan::Reply(_) = &plan {
                    shared
                        .stats
                        .request(route_of(head.endpoint), Outcome::Invalid);
                }
                plan
            }
        };
        // While the DHT works, watch the socket: a client that hangs up takes its request with
        // it. Dropping the handler drops its wait for the DHT, which then never starts the
        // command if it is still queued, and cancels a lookup nobody else waits for. Bytes that
        // arrive meanwhile (a pipelined request) are kept, up to a head's worth.
        let work = handlers::execute(shared, client, plan);
        tokio::pin!(work);
        let reply = loop {
            tokio::select! {
                biased;
                reply = &mut work => break reply,
                read = read_more(&mut stream, &mut buf), if buf.len() < MAX_HEAD => match read {
                    // Node does the same: an ended request socket aborts the request.
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                },
            }
        };
        trace!(
            "grape api: {:?} {:?} -> {}",
            head.page,
            head.endpoint,
            reply.status
        );
        let keep_alive = head.keep_alive && !*closing.borrow();
        encode_reply(
            &mut out,
            &reply,
            keep_alive.then_some(config.header_timeout),
        );
        if head.head_only {
            out.truncate(out.len().saturating_sub(reply.body.len()));
        }
        write_answer(&mut stream, &out, config).await?;
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        // The next head is due within the head timeout of this answer.
        deadline = Instant::now() + config.header_timeout;
        // An idle connection keeps a small buffer, not the largest body it once carried.
        if body.capacity() > READ_CHUNK {
            body = Vec::new();
        }
    }
}

/// The route a request is counted under: its endpoint, or [`Route::Other`] for a path no
/// handler serves.
fn route_of(endpoint: Option<Endpoint>) -> Route {
    match endpoint {
        Some(Endpoint::Lookup) => Route::Lookup,
        Some(Endpoint::Announce) => Route::Announce,
        Some(Endpoint::Unannounce) => Route::Unannounce,
        Some(Endpoint::Put) => Route::Put,
        Some(Endpoint::Get) => Route::Get,
        None => Route::Other,
    }
}

/// Parses a head from the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    match parse_request_limited::<MAX_HEADERS>(buf, MAX_HEAD)? {
        Status::Partial => Ok(None),
        Status::Complete((head, len)) => Ok(Some(RequestHead {
            connect: head.method == "CONNECT",
            head_only: head.method == "HEAD",
            page: status::page_for(head.method == "GET" || head.method == "HEAD", head.path),
            endpoint: handlers::endpoint_for(head.path),
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            body: head.body,
            len,
        })),
    }
}

/// Reads the body of `head` from `buf` and the socket into `body`, leaving any pipelined bytes
/// after it in `buf`. The outer `Err` is a socket error; the inner one says how the request
/// ends.
async fn read_body<D: GrapeDht>(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: &mut Vec<u8>,
    head: &RequestHead,
    shared: &Shared<D>,
) -> io::Result<Result<(), Abort>> {
    let config = &shared.config;
    let limit = u64::try_from(config.max_payload).unwrap_or(u64::MAX);
    let mut decoder = match BodyDecoder::new(head.body, limit) {
        Ok(decoder) => decoder,
        Err(err) => return Ok(Err(Abort::Answer(body_error(err)))),
    };
    if head.expect_continue && !decoder.is_done() && buf.is_empty() {
        write_answer(stream, CONTINUE_RESPONSE, config).await?;
    }
    let start = Instant::now();
    let deadline = start + config.body_timeout;
    // Bytes of the body (framing included) received so far, for the minimum rate.
    let mut received = buf.len();
    loop {
        if !buf.is_empty() || decoder.is_done() {
            let step = match decoder.decode(buf) {
                Ok(step) => step,
                Err(err) => return Ok(Err(Abort::Answer(body_error(err)))),
            };
            body.extend_from_slice(step.data_in(buf));
            buf.drain(..step.consumed);
            if step.done {
                return Ok(Ok(()));
            }
            if !buf.is_empty() {
                continue;
            }
        }
        // The minimum-progress rule: a trickled body is cut off after the grace period.
        let due = config.body_progress.deadline(start, received).min(deadline);
        match timeout_at(due, read_more(stream, buf)).await {
            Err(_elapsed) => return Ok(Err(Abort::Answer(Reply::raw(408, "")))),
            Ok(Ok(0)) => return Ok(Err(Abort::Close)),
            Ok(Ok(n)) => received = received.saturating_add(n),
            Ok(Err(err)) => return Err(err),
        }
    }
}

/// The answer to a body that cannot be read: `413 ERR_GRAPE_PAYLOAD_SIZE` for one over the
/// limit (Node's raw-body text), the framing error's status otherwise.
fn body_error(err: HttpError) -> Reply {
    match err {
        HttpError::BodyTooLarge => Reply::raw(413, "ERR_GRAPE_PAYLOAD_SIZE"),
        other => Reply::raw(other.status(), ""),
    }
}

/// Writes `bytes`, giving up after the body timeout (a client that never reads must not hold
/// its connection slot forever).
async fn write_answer(stream: &mut TcpStream, bytes: &[u8], config: &ApiConfig) -> io::Result<()> {
    // An answer usually fits the socket's send buffer at once: then no timer is armed.
    let written = match stream.try_write(bytes) {
        Ok(n) => n,
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => 0,
        Err(err) => return Err(err),
    };
    let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) else {
        return Ok(());
    };
    match timeout(config.body_timeout, stream.write_all(rest)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client does not read its answer",
        )),
    }
}

/// Answers `reply` with `Connection: close` and ends the connection.
async fn send_final(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    reply: &Reply,
    config: &ApiConfig,
) -> io::Result<()> {
    encode_reply(out, reply, None);
    write_answer(stream, out, config).await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// The answer with exactly Node's headers, in Node's order (docs/protocol.md §3.1).
fn encode_reply(out: &mut Vec<u8>, reply: &Reply, keep_alive: Option<std::time::Duration>) {
    let answer = Answer {
        status: reply.status,
        content_type: reply.content_type,
        body: &reply.body,
    };
    encode_answer(out, &answer, keep_alive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_keep_what_the_loop_needs() {
        assert!(parse_head(b"POST /lookup HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let head = parse_head(b"POST /lookup?x=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!(head.endpoint, None, "a query string reaches no handler");
        assert_eq!(head.page, None);
        assert!(!head.keep_alive && !head.connect && !head.head_only);
        assert_eq!(head.body, BodyKind::Length(2));
        assert_eq!(head.len, 48);
        let huge = format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_head(huge.as_bytes()).err(),
            Some(HttpError::HeadTooLarge)
        );
    }
}
