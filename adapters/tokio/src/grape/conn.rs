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
//! Why not hyper: the grape answers tiny JSON bodies, and its cost per request was mostly HTTP
//! machinery (header maps, boxed bodies, a `Date` formatted per answer). The core's parser
//! borrows the read buffer and the answer is written by hand, which halves the CPU time of a
//! `/lookup` (docs/BENCHMARKS.md, "Grape").
//!
//! [`ApiConfig::header_timeout`]: super::ApiConfig::header_timeout
//! [`ApiConfig::max_payload`]: super::ApiConfig::max_payload
//! [`ApiConfig::body_timeout`]: super::ApiConfig::body_timeout
//! [`ApiConfig::body_progress`]: super::ApiConfig::body_progress

use std::cell::RefCell;
use std::io;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use grenache_core::wire::http::{
    parse_request_limited, write_response_head, BodyDecoder, BodyKind, Header, HttpError, Status,
    CONTINUE_RESPONSE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The largest request head: Node's default `--max-http-header-size` (16 KiB). Larger → 431.
const MAX_HEAD: usize = 16 * 1024;
/// Header fields per request (hyper's and many servers' default); more → 431.
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

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

/// Appends up to [`READ_CHUNK`] bytes from the socket to `buf`; 0 means end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
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

/// The answer with exactly Node's headers (docs/protocol.md §3.1), in Node's order: `Date`,
/// `Connection`, `Keep-Alive` (only when the connection stays open: `keep_alive` is the idle
/// timeout then), `Content-Length`; no `Content-Type`.
///
/// The most frequent answer, a `200` on a connection that stays open, takes its head up to the
/// length from a per-second cache ([`with_ok_head`]) rather than writing every field again.
fn encode_reply(out: &mut Vec<u8>, reply: &Reply, keep_alive: Option<std::time::Duration>) {
    if let (200, None, Some(idle)) = (reply.status, reply.content_type, keep_alive) {
        let cached = with_ok_head(idle, |prefix| {
            out.clear();
            out.extend_from_slice(prefix);
            !prefix.is_empty()
        });
        if cached {
            let mut digits = [0u8; 32];
            let len = write_decimal(&mut digits, b"", reply.body.len() as u64);
            out.extend_from_slice(digits.get(..len).unwrap_or(&[]));
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&reply.body);
            return;
        }
    }
    encode_reply_head(out, reply, keep_alive);
    out.extend_from_slice(&reply.body);
}

/// The head of [`encode_reply`], written field by field into `out` (cleared first).
fn encode_reply_head(out: &mut Vec<u8>, reply: &Reply, keep_alive: Option<std::time::Duration>) {
    let mut timeout_text = [0u8; 32];
    let keep_alive_value = keep_alive.map(|idle| {
        let len = write_decimal(&mut timeout_text, b"timeout=", idle.as_secs());
        &timeout_text[..len]
    });
    let length = BodyKind::Length(u64::try_from(reply.body.len()).unwrap_or(u64::MAX));
    with_date(|date| {
        let connection: &[u8] = if keep_alive.is_some() {
            b"keep-alive"
        } else {
            b"close"
        };
        let date_header = Header::new("Date", date.as_bytes());
        let connection_header = Header::new("Connection", connection);
        let mut headers = [Header::new("", b""); 4];
        let mut count = 0;
        // Node's order; the operator endpoints' `Content-Type` (Node's answers have none) first.
        let fields = [
            reply
                .content_type
                .map(|ct| Header::new("Content-Type", ct.as_bytes())),
            Some(date_header),
            Some(connection_header),
            keep_alive_value.map(|value| Header::new("Keep-Alive", value)),
        ];
        for field in fields.into_iter().flatten() {
            if let Some(slot) = headers.get_mut(count) {
                *slot = field;
                count += 1;
            }
        }
        let mut head = [0u8; 256];
        let written = write_response_head(
            &mut head,
            reply.status,
            None,
            headers.get(..count).unwrap_or(&[]),
            length,
        );
        out.clear();
        // The head is a few fixed fields and a status from 100..=999: it always fits and is
        // always valid; a 500 head is the fallback all the same.
        match written {
            Ok(len) => out.extend_from_slice(head.get(..len).unwrap_or(&[])),
            Err(_) => out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\n"),
        }
    });
}

/// Writes `prefix` and `value` in decimal into `out`; returns the length.
fn write_decimal(out: &mut [u8; 32], prefix: &[u8], value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for &byte in prefix.iter().chain(digits[..count].iter().rev()) {
        out[len] = byte;
        len += 1;
    }
    len
}

thread_local! {
    /// The `Date` value of the current second, per runtime thread: formatting it for every
    /// answer cost more than the rest of the head.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    /// The head of a `200` keep-alive answer up to the value of its `Content-Length`, for the
    /// second and the idle timeout it was written for: (second, idle, head).
    static OK_HEAD: RefCell<(u64, std::time::Duration, Vec<u8>)> =
        const { RefCell::new((u64::MAX, std::time::Duration::ZERO, Vec::new())) };
}

/// Calls `f` with the head of a `200` answer on a connection kept open for `idle`, up to the
/// value of `Content-Length` (empty if it could not be made). Made by [`encode_reply_head`]
/// itself, once per second, so that both ways give the same bytes.
fn with_ok_head<T>(idle: std::time::Duration, f: impl FnOnce(&[u8]) -> T) -> T {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    OK_HEAD.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second || cached.1 != idle {
            let mut head = Vec::with_capacity(160);
            let empty = Reply {
                status: 200,
                body: bytes::Bytes::new(),
                content_type: None,
            };
            encode_reply_head(&mut head, &empty, Some(idle));
            let prefix_len = head.strip_suffix(b"0\r\n\r\n").map_or(0, <[u8]>::len);
            head.truncate(prefix_len);
            *cached = (second, idle, head);
        }
        f(&cached.2)
    })
}

/// Calls `f` with the `Date` header value of this second.
fn with_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, http_date(now));
        }
        f(&cached.1);
    });
}

/// An IMF-fixdate (`Tue, 25 Nov 2026 18:43:00 GMT`), the format of Node's `Date` header.
pub(crate) fn http_date(now: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let (year, month, day) = civil_from_days(days);
    let month = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_format_like_node() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_632_180);
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 18:43:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn answers_carry_nodes_headers_in_nodes_order() {
        let mut out = Vec::new();
        encode_reply(
            &mut out,
            &Reply::raw(200, "[\"127.0.0.1:1337\"]"),
            Some(Duration::from_secs(5)),
        );
        let text = String::from_utf8(out.clone()).unwrap();
        let date = &text["HTTP/1.1 200 OK\r\nDate: ".len()..][..29];
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 200 OK\r\nDate: {date}\r\nConnection: keep-alive\r\n\
                 Keep-Alive: timeout=5\r\nContent-Length: 18\r\n\r\n[\"127.0.0.1:1337\"]"
            )
        );
        assert!(date.ends_with(" GMT"), "{date}");

        // The cached head of a 200 keep-alive answer and the one written field by field agree.
        for body in ["", "[]", &"x".repeat(12_345)] {
            let reply = Reply::raw(200, body);
            let mut fields = Vec::new();
            encode_reply_head(&mut fields, &reply, Some(Duration::from_secs(5)));
            fields.extend_from_slice(body.as_bytes());
            encode_reply(&mut out, &reply, Some(Duration::from_secs(5)));
            // Unless the second turned between the two.
            if out != fields {
                encode_reply_head(&mut fields, &reply, Some(Duration::from_secs(5)));
                fields.extend_from_slice(body.as_bytes());
            }
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&fields)
            );
        }
        encode_reply(
            &mut out,
            &Reply::raw(200, "[]"),
            Some(Duration::from_secs(7)),
        );
        assert!(String::from_utf8_lossy(&out).contains("\r\nKeep-Alive: timeout=7\r\n"));

        encode_reply(&mut out, &Reply::raw(413, "ERR_GRAPE_PAYLOAD_SIZE"), None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 413 Payload Too Large\r\nDate: "));
        assert!(text.ends_with(
            "\r\nConnection: close\r\nContent-Length: 22\r\n\r\nERR_GRAPE_PAYLOAD_SIZE"
        ));
    }

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

    #[test]
    fn decimals() {
        let mut out = [0u8; 32];
        let len = write_decimal(&mut out, b"timeout=", 0);
        assert_eq!(&out[..len], b"timeout=0");
        let len = write_decimal(&mut out, b"", u64::MAX);
        assert_eq!(&out[..len], b"18446744073709551615");
    }
}
