//! A small HTTP/1.1 POST client, shared by the Link (grape API) and the HTTP RPC client. It
//! keeps idle keep-alive connections per destination, bounds the response it reads back, and
//! turns transport failures into the short reasons node-fetch prints (`connect ECONNREFUSED
//! …`, `socket hang up`), so error strings stay close to the Node ones.
//!
//! The bytes on the wire are framed by grenache-core's HTTP/1.1 writer and parser (the same
//! code the grape API and the embassy worker use), and the exchange runs in the caller's task:
//! write the request, read the head and the body, put the connection back. Why not hyper here:
//! its client routes every request through a pool checkout, a channel and the connection's own
//! task, and that machinery cost more CPU than the whole exchange does here
//! (docs/BENCHMARKS.md, "RPC"). Raw streams ([`crate::rpc::http::PeerRpcClient::stream`]),
//! whose bodies flow while the answer comes back, still use hyper.
//!
//! Bounds: the response head at most [`MAX_RESPONSE_HEAD`] bytes and [`MAX_RESPONSE_HEADERS`]
//! fields, the body at most the caller's limit; at most [`MAX_IDLE_PER_DEST`] idle connections
//! per destination and [`MAX_IDLE_TOTAL`] in all (one more is closed after its request). An
//! idle connection is not reused after the idle timeout, a background task closes it by one and
//! a half idle timeouts at the latest, and one idle for more than [`CHECK_IDLE_AFTER`] is
//! checked with a non-blocking read before it takes a request (a server that closed it has
//! left an end of stream there). A request is never sent twice.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use grenache_core::wire::http::{
    parse_response_limited, write_request_head, BodyDecoder, BodyKind, Header, HttpError, Status,
};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections kept per destination: enough for 64 requests in flight to one worker to
/// go back and forth without reconnecting.
pub(crate) const MAX_IDLE_PER_DEST: usize = 64;
/// Idle connections kept in all, over every destination.
pub(crate) const MAX_IDLE_TOTAL: usize = 256;
/// The largest response head read (Node's default `--max-http-header-size`).
pub(crate) const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Header fields of a response at most.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 64;
/// A pooled connection idle for longer is checked before reuse (see the module docs). A
/// busier one is not: servers close idle keep-alive connections after seconds, not
/// milliseconds, and the check costs a system call.
pub(crate) const CHECK_IDLE_AFTER: Duration = Duration::from_millis(1);
/// Header fields a caller may add to a request (besides `Host` and `Content-Length`).
const MAX_REQUEST_HEADERS: usize = 8;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Why a POST produced no usable response.
#[derive(Debug)]
pub(crate) enum HttpFailure {
    /// Connecting, sending or reading failed; the text is a node-fetch-like reason.
    Transport(String),
    /// The response body was larger than the caller's limit.
    TooLarge,
}

/// A pooled HTTP/1.1 client (cheap to clone: clones share the pool).
#[derive(Clone)]
pub(crate) struct HttpClient {
    pool: Arc<Pool>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.pool.state().total;
        f.debug_struct("HttpClient")
            .field("idle_timeout", &self.pool.idle_timeout)
            .field("idle_connections", &idle)
            .finish()
    }
}

/// A kept-alive connection and the bytes read from it past the last answer (none, unless a
/// server sent more than it announced; such a connection is not reused).
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// The idle connections, by destination (`host:port`).
struct Pool {
    state: Mutex<PoolState>,
    idle_timeout: Duration,
}

#[derive(Default)]
struct PoolState {
    /// Most recently used last.
    by_dest: HashMap<String, Vec<IdleConnection>>,
    /// Connections in `by_dest`.
    total: usize,
    /// Whether the task closing expired connections runs.
    reaping: bool,
}

struct IdleConnection {
    connection: Connection,
    since: Instant,
}

impl Pool {
    /// The state; a poisoned lock only means a panic elsewhere while it was held, and every
    /// change to the state is a single push, pop or sweep, so keep using it.
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection to `dest` that is young enough and, if it has
    /// been idle for a while, still open.
    fn take(&self, dest: &str) -> Option<Connection> {
        let now = Instant::now();
        let mut state = self.state();
        let state = &mut *state;
        let idle = state.by_dest.get_mut(dest)?;
        let mut found = None;
        while let Some(entry) = idle.pop() {
            state.total -= 1;
            let age = now.saturating_duration_since(entry.since);
            if age < self.idle_timeout && (age < CHECK_IDLE_AFTER || still_open(&entry.connection))
            {
                found = Some(entry.connection);
                break;
            }
        }
        if idle.is_empty() {
            state.by_dest.remove(dest);
        }
        found
    }

    /// Keeps `connection` for the next request to `dest` if the bounds allow (else it closes
    /// here); starts the reaper if it is not running.
    fn give_back(self: &Arc<Self>, dest: &str, connection: Connection) {
        let mut state = self.state();
        if state.total >= MAX_IDLE_TOTAL {
            return;
        }
        let idle = match state.by_dest.get_mut(dest) {
            Some(idle) => idle,
            None => state.by_dest.entry(dest.to_string()).or_default(),
        };
        if idle.len() >= MAX_IDLE_PER_DEST {
            return;
        }
        idle.push(IdleConnection {
            connection,
            since: Instant::now(),
        });
        state.total += 1;
        if !state.reaping {
            state.reaping = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// Whether an idle connection can take a request: no end of stream, error or stray bytes are
/// waiting on it.
fn still_open(connection: &Connection) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        connection.stream.try_read(&mut probe),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// Closes expired idle connections every half idle timeout, until the pool is empty (the next
/// [`Pool::give_back`] starts it again) or the client is dropped.
async fn reap(pool: Weak<Pool>) {
    loop {
        let period = match pool.upgrade() {
            Some(pool) => (pool.idle_timeout / 2).max(Duration::from_millis(10)),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut state = pool.state();
        let state = &mut *state;
        let mut total = 0;
        state.by_dest.retain(|_, idle| {
            idle.retain(|entry| now.saturating_duration_since(entry.since) < pool.idle_timeout);
            total += idle.len();
            !idle.is_empty()
        });
        state.total = total;
        if total == 0 {
            state.reaping = false;
            return;
        }
    }
}

impl HttpClient {
    /// A client whose idle pooled connections are not reused (and soon closed) after `idle`.
    /// Node servers close idle keep-alive sockets after 5 s, so callers talking to Node keep
    /// `idle` below that to avoid reusing a socket the server is closing at the same moment.
    pub(crate) fn new(idle: Duration) -> Self {
        HttpClient {
            pool: Arc::new(Pool {
                state: Mutex::new(PoolState::default()),
                idle_timeout: idle,
            }),
        }
    }

    /// Closes every idle pooled connection now (a closing RPC client's).
    pub(crate) fn close_idle(&self) {
        let mut state = self.pool.state();
        state.by_dest.clear();
        state.total = 0;
    }

    /// POSTs `body` to `uri` (`http://host[:port]/path`) with `headers` and reads at most
    /// `max_body` bytes of the response. No timeout here: callers wrap the whole call in their
    /// own deadline (a cancelled call closes its connection).
    pub(crate) async fn post(
        &self,
        uri: &Uri,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
        max_body: usize,
    ) -> Result<(StatusCode, Vec<u8>), HttpFailure> {
        let Some(authority) = uri.authority() else {
            return Err(HttpFailure::Transport(format!("no host in {uri}")));
        };
        let dest = authority.as_str();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut connection = match self.pool.take(dest) {
            Some(connection) => connection,
            None => Connection {
                stream: connect_tcp(uri, dest).await?,
                buf: Vec::with_capacity(READ_CHUNK),
            },
        };
        let request = encode_request(dest, path, headers, body)?;
        let answer = exchange(
            &mut connection.stream,
            &mut connection.buf,
            &request,
            max_body,
        )
        .await?;
        if answer.reusable {
            self.pool.give_back(dest, connection);
        }
        Ok((answer.status, answer.body))
    }
}

/// POSTs `body` to `https://{dest}/` over a fresh TLS connection (as Node's HTTPS client,
/// which makes a new agent, so a new connection, per request) and reads at most `max_body`
/// bytes of the response.
pub(crate) async fn post_tls(
    tls: &crate::tls::TlsClientConfig,
    dest: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
    max_body: usize,
) -> Result<(StatusCode, Vec<u8>), HttpFailure> {
    let stream = TcpStream::connect(dest)
        .await
        .map_err(|e| HttpFailure::Transport(connect_reason(&e, dest)))?;
    let _ = stream.set_nodelay(true);
    let mut stream = tls
        .connect(dest, stream)
        .await
        .map_err(HttpFailure::Transport)?;
    let request = encode_request(dest, "/", headers, body)?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let answer = exchange(&mut stream, &mut buf, &request, max_body).await?;
    Ok((answer.status, answer.body))
}

/// Connects to `host:port` of `uri` (`dest` names it in errors), without Nagle's delay.
async fn connect_tcp(uri: &Uri, dest: &str) -> Result<TcpStream, HttpFailure> {
    // `Uri::host` keeps an IPv6 literal's brackets; the resolver wants it bare.
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| HttpFailure::Transport(connect_reason(&e, dest)))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The request's bytes: `POST <path> HTTP/1.1`, `Host`, the caller's headers, the body's
/// `Content-Length`, and the body, to go out in one write.
fn encode_request(
    dest: &str,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Result<Vec<u8>, HttpFailure> {
    let mut fields = [Header::new("", b""); MAX_REQUEST_HEADERS + 1];
    if headers.len() > MAX_REQUEST_HEADERS {
        return Err(HttpFailure::Transport(format!(
            "more than {MAX_REQUEST_HEADERS} request headers"
        )));
    }
    fields[0] = Header::new("Host", dest.as_bytes());
    for (field, (name, value)) in fields[1..].iter_mut().zip(headers) {
        *field = Header::new(name.as_str(), value.as_bytes());
    }
    let fields = &fields[..=headers.len()];
    let length = BodyKind::Length(u64::try_from(body.len()).unwrap_or(u64::MAX));
    // A head is the fields plus a few dozen bytes of framing; header values are short.
    let room = 64
        + path.len()
        + fields
            .iter()
            .map(|f| f.name.len() + f.value.len() + 4)
            .sum::<usize>();
    let mut request = vec![0u8; room];
    let len = write_request_head(&mut request, "POST", path, fields, length)
        .map_err(|e| HttpFailure::Transport(format!("cannot write the request head: {e:?}")))?;
    request.truncate(len);
    request.reserve_exact(body.len());
    request.extend_from_slice(body);
    Ok(request)
}

/// A response, read in full.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    /// The server keeps the connection open and sent nothing past the body.
    reusable: bool,
}

/// Writes `request` and reads its answer: the head (1xx heads skipped), then a body of at most
/// `max_body` bytes, framed by length, chunks or the end of the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    request: &[u8],
    max_body: usize,
) -> Result<Answer, HttpFailure> {
    stream.write_all(request).await.map_err(transport)?;
    buf.clear();
    let (code, kind, keep_alive) = loop {
        match parse_response_limited::<MAX_RESPONSE_HEADERS>(buf, MAX_RESPONSE_HEAD) {
            Ok(Status::Complete((head, len))) => {
                let interim = head.is_interim();
                let found = (head.code, head.body, head.keep_alive);
                buf.drain(..len);
                if !interim {
                    break found;
                }
            }
            Ok(Status::Partial) => {
                if read_more(stream, buf).await? == 0 {
                    return Err(HttpFailure::Transport("socket hang up".to_string()));
                }
            }
            Err(e) => return Err(invalid(e)),
        }
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| HttpFailure::Transport(format!("invalid response status {code}")))?;
    let limit = u64::try_from(max_body).unwrap_or(u64::MAX);
    let mut decoder = BodyDecoder::new(kind, limit).map_err(body_failure)?;
    let mut body = Vec::with_capacity(
        decoder
            .remaining()
            .map_or(0, |n| usize::try_from(n).unwrap_or(0).min(READ_CHUNK)),
    );
    let mut ended = false;
    loop {
        if !buf.is_empty() || decoder.is_done() {
            let step = decoder.decode(buf).map_err(body_failure)?;
            body.extend_from_slice(step.data_in(buf));
            buf.drain(..step.consumed);
            if step.done {
                break;
            }
            if !buf.is_empty() {
                continue;
            }
        }
        if read_more(stream, buf).await? == 0 {
            decoder.finish().map_err(body_failure)?;
            ended = true;
            break;
        }
    }
    Ok(Answer {
        status,
        body,
        reusable: keep_alive && !ended && buf.is_empty(),
    })
}

/// Appends up to [`READ_CHUNK`] bytes from the stream to `buf`; 0 means end of stream.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, HttpFailure> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await.map_err(transport)
}

/// A malformed response.
fn invalid(error: HttpError) -> HttpFailure {
    HttpFailure::Transport(format!("invalid HTTP response: {error}"))
}

/// A body that cannot be read: over the caller's limit, cut short, or badly framed.
fn body_failure(error: HttpError) -> HttpFailure {
    match error {
        HttpError::BodyTooLarge => HttpFailure::TooLarge,
        HttpError::UnexpectedEof => HttpFailure::Transport("socket hang up".to_string()),
        other => invalid(other),
    }
}

/// node-fetch's reason for a failed exchange: a reset (the server went away, or refused a
/// client certificate after the TLS 1.3 handshake) is `socket hang up`.
fn transport(error: io::Error) -> HttpFailure {
    HttpFailure::Transport(match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => "socket hang up".to_string(),
        _ => error.to_string(),
    })
}

/// node-fetch's reason for a failed connect: `connect ECONNREFUSED <ip:port>` for a refused
/// one (Node's exact text), `connect <system message> <ip:port>` otherwise.
pub(crate) fn connect_reason(error: &io::Error, dest: &str) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => format!("connect ECONNREFUSED {dest}"),
        _ => format!("connect {error} {dest}"),
    }
}

/// The messages of an error and its sources, joined with `: `.
pub(crate) fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server answering each connection's requests with `answers` in turn (one per request
    /// it reads), then closing the connection (`close_after`) or waiting for the client to.
    /// Returns its URI and a counter of accepted connections.
    async fn server(
        answers: Vec<&'static [u8]>,
        close_after: bool,
    ) -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for answer in answers {
                        // One request: a head and a Content-Length body.
                        loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length: "))
                                    .map_or(0, |v| v.trim().parse().unwrap());
                                if buf.len() >= end + 4 + length {
                                    buf.drain(..end + 4 + length);
                                    break;
                                }
                            }
                            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                return;
                            }
                        }
                        stream.write_all(answer).await.unwrap();
                    }
                    if close_after {
                        let _ = stream.shutdown().await;
                    } else {
                        let _ = stream.read_buf(&mut buf).await;
                    }
                });
            }
        });
        let uri = format!("http://{addr}/path").parse().unwrap();
        (uri, accepted)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    async fn post(
        client: &HttpClient,
        uri: &Uri,
        max: usize,
    ) -> Result<(u16, Vec<u8>), HttpFailure> {
        client
            .post(uri, &[], b"body", max)
            .await
            .map(|(status, body)| (status.as_u16(), body))
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let (uri, accepted) = server(vec![OK, OK, OK], false).await;
        let client = HttpClient::new(Duration::from_secs(4));
        for _ in 0..3 {
            assert_eq!(
                post(&client, &uri, 100).await.unwrap(),
                (200, b"ok".to_vec())
            );
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_reused() {
        let (uri, accepted) = server(vec![OK], true).await;
        let client = HttpClient::new(Duration::from_secs(4));
        assert_eq!(post(&client, &uri, 100).await.unwrap().0, 200);
        // Idle for longer than CHECK_IDLE_AFTER: the close is seen before the request goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(post(&client, &uri, 100).await.unwrap().0, 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_idle_connections_are_not_reused() {
        let (uri, accepted) = server(vec![OK, OK], false).await;
        let client = HttpClient::new(Duration::from_millis(20));
        assert_eq!(post(&client, &uri, 100).await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(client.pool.state().total, 0, "the reaper closed it");
        assert_eq!(post(&client, &uri, 100).await.unwrap().0, 200);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn chunked_interim_and_until_close_answers_are_read() {
        let chunked: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\
            Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (uri, _) = server(vec![chunked], false).await;
        let client = HttpClient::new(Duration::from_secs(4));
        assert_eq!(
            post(&client, &uri, 100).await.unwrap(),
            (201, b"abcde".to_vec())
        );

        let until_close: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        let (uri, _) = server(vec![until_close], true).await;
        assert_eq!(
            post(&client, &uri, 100).await.unwrap(),
            (200, b"all of it".to_vec())
        );
        assert_eq!(
            client.pool.state().total,
            1,
            "only the chunked one was kept"
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_fail() {
        let (uri, _) = server(vec![OK], false).await;
        let client = HttpClient::new(Duration::from_secs(4));
        assert!(matches!(
            post(&client, &uri, 1).await,
            Err(HttpFailure::TooLarge)
        ));
        let chunked: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n";
        let (uri, _) = server(vec![chunked], false).await;
        assert!(matches!(
            post(&client, &uri, 4).await,
            Err(HttpFailure::TooLarge)
        ));
    }

    #[tokio::test]
    async fn broken_answers_are_clear_errors() {
        let client = HttpClient::new(Duration::from_secs(4));
        let reason = |r: Result<(u16, Vec<u8>), HttpFailure>| match r {
            Err(HttpFailure::Transport(reason)) => reason,
            other => panic!("{other:?}"),
        };
        // The server hangs up without answering, or in the middle of the body.
        let (uri, _) = server(vec![], true).await;
        assert_eq!(reason(post(&client, &uri, 100).await), "socket hang up");
        let (uri, _) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"],
            true,
        )
        .await;
        assert_eq!(reason(post(&client, &uri, 100).await), "socket hang up");
        // Not HTTP.
        let (uri, _) = server(vec![b"SSH-2.0-OpenSSH\r\n\r\n"], true).await;
        assert!(reason(post(&client, &uri, 100).await).starts_with("invalid HTTP response"));
        // Nobody listens.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        assert_eq!(
            reason(post(&client, &uri, 100).await),
            format!("connect ECONNREFUSED {addr}")
        );
    }

    #[tokio::test]
    async fn a_connection_with_stray_bytes_is_not_reused() {
        let (uri, accepted) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", OK],
            false,
        )
        .await;
        let client = HttpClient::new(Duration::from_secs(4));
        assert_eq!(post(&client, &uri, 100).await.unwrap().1, b"ok");
        assert_eq!(post(&client, &uri, 100).await.unwrap().1, b"ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn requests_carry_host_headers_and_length() {
        let headers = [(
            HeaderName::from_static("grc-compress"),
            HeaderValue::from_static("none"),
        )];
        let request = encode_request("127.0.0.1:1337", "/", &headers, b"[1]").unwrap();
        assert_eq!(
            request,
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1:1337\r\ngrc-compress: none\r\n\
              Content-Length: 3\r\n\r\n[1]"
        );
        let many = vec![headers[0].clone(); MAX_REQUEST_HEADERS + 1];
        assert!(encode_request("h", "/", &many, b"").is_err());
    }
}
