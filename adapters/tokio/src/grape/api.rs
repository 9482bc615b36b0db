//! The HTTP/1.1 server of the grape API (§2.1): hyper with keep-alive, a body limit that never
//! reads past the limit, head and idle timeouts, a connection cap and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tracing::{debug, trace, warn};

use super::config::DEFAULT_MAX_PAYLOAD;
use super::dht::GrapeDht;
use super::handlers::{self, Reply};

/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default head/idle timeout: Node's keep-alive timeout.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed to receive a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time in-flight requests get to finish after shutdown was asked for.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Read buffer cap: bounds a request head (Node refuses heads over 16 KiB).
const MAX_BUF_SIZE: usize = 16 * 1024 + 1024;
/// Node's default listen backlog.
const LISTEN_BACKLOG: i32 = 511;

/// Settings of [`serve_api`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body in bytes (`--check_maxPayloadSize`, 8192 by default): a
    /// larger body gets `413 ERR_GRAPE_PAYLOAD_SIZE` and the connection is closed without
    /// reading the rest. Unlike the Node 1.0.0 CLI there is always a limit (§7 Q1).
    pub max_payload: usize,
    /// How long a connection may take to deliver a request head, counted from the moment it
    /// opens or its previous response finished: so it is also the idle keep-alive timeout
    /// (`Keep-Alive: timeout=<secs>` announces it). A connection that overruns is closed.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive; an overrun gets `408` and the connection is
    /// closed (Node's `requestTimeout` does the same after 300 s).
    pub body_timeout: Duration,
    /// Simultaneous connections; when all are taken the server stops accepting (new clients wait
    /// in the kernel's listen queue) until one closes.
    pub max_connections: usize,
    /// After the shutdown future resolves: how long in-flight requests may still finish before
    /// their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Binds the API's TCP listener like Node's `server.listen(port[, host])`: without `bind`, on
/// `[::]` accepting IPv4 too (falling back to `0.0.0.0` where IPv6 is unavailable); with it, on
/// that address, or on the first address a host name resolves to. `SO_REUSEADDR` as Node sets
/// it; a port in use is an `AddrInUse` error.
pub async fn bind_api(bind: Option<&str>, port: u16) -> io::Result<TcpListener> {
    let addr = match bind {
        None => {
            let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            // Where IPv6 is unavailable, fall back to IPv4 like Node; a busy or forbidden port is
            // reported as is.
            return match listen_on(any6) {
                Err(err)
                    if !matches!(
                        err.kind(),
                        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                    ) =>
                {
                    listen_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
                }
                other => other,
            };
        }
        Some(host) => match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((host, port))
                .await?
                .next()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} does not resolve to any address"),
                    )
                })?,
        },
    };
    listen_on(addr)
}

fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// State shared by every connection.
struct Shared<D> {
    dht: Arc<D>,
    config: ApiConfig,
    /// Set once shutdown starts: answers then say `Connection: close`.
    closing: AtomicBool,
}

/// Serves the grape HTTP API (§2) on `listener` until `shutdown` resolves, then stops accepting,
/// lets in-flight requests finish for up to [`ApiConfig::shutdown_grace`], and returns.
///
/// Accept errors are logged and retried; nothing here ends the server except `shutdown`.
pub async fn serve_api<D: GrapeDht>(
    listener: TcpListener,
    dht: Arc<D>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        dht,
        config: config.clone(),
        closing: AtomicBool::new(false),
    });
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // Flipped when the grace period is over: every connection task drops its connection.
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .keep_alive(true)
        .title_case_headers(true)
        .max_buf_size(MAX_BUF_SIZE);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    warn!("grape api: accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Node's http server sets TCP_NODELAY too; a failure only costs latency.
        if let Err(err) = stream.set_nodelay(true) {
            debug!("grape api: TCP_NODELAY on {peer}: {err}");
        }
        let service_state = Arc::clone(&shared);
        let service = service_fn(move |req| {
            let state = Arc::clone(&service_state);
            async move { respond(&state, req).await }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        let mut abort = abort_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = conn => {
                    if let Err(err) = result {
                        debug!("grape api: connection from {peer} ended: {err}");
                    }
                }
                _ = abort.wait_for(|stop| *stop) => {}
            }
        });
    }
    drop(listener);
    shared.closing.store(true, Ordering::Relaxed);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            debug!("grape api: shutdown grace period over, dropping open connections");
        }
    }
    // Also reached when all connections finished: then nobody is listening any more.
    let _ = abort_tx.send(true);
}

/// The service refuses CONNECT by closing the connection, as Node does when nobody listens
/// for its `connect` event.
#[derive(Debug)]
struct ConnectRefused;

impl std::fmt::Display for ConnectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CONNECT is not supported")
    }
}

impl std::error::Error for ConnectRefused {}

async fn respond<D: GrapeDht>(
    shared: &Shared<D>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ConnectRefused> {
    if req.method() == Method::CONNECT {
        return Err(ConnectRefused);
    }
    let mut keep_alive = client_wants_keep_alive(&req);
    // req.url: the raw target, query string included.
    let target = req.uri().to_string();
    let reply = match read_body(req.into_body(), &shared.config).await {
        Ok(body) => {
            let plan = handlers::handle(&target, &body);
            handlers::execute(shared.dht.as_ref(), plan).await
        }
        Err(err) => {
            // The rest of the body is unread: the connection cannot carry another request.
            keep_alive = false;
            match err {
                BodyError::TooLarge => Reply::raw(413, "ERR_GRAPE_PAYLOAD_SIZE"),
                BodyError::Timeout => Reply::raw(408, ""),
                BodyError::Broken(message) => Reply::raw(500, &message),
            }
        }
    };
    trace!("grape api: {target} -> {}", reply.status);
    let keep_alive = keep_alive && !shared.closing.load(Ordering::Relaxed);
    Ok(build_response(
        reply,
        keep_alive,
        shared.config.header_timeout,
    ))
}

/// Whether the client asked to keep the connection: HTTP/1.1 unless `Connection: close`,
/// HTTP/1.0 only with `Connection: keep-alive` (the rule hyper and Node both apply).
fn client_wants_keep_alive<B>(req: &Request<B>) -> bool {
    let has_token = |token: &str| {
        req.headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match req.version() {
        Version::HTTP_11 => !has_token("close"),
        Version::HTTP_10 => has_token("keep-alive"),
        _ => false,
    }
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken(String),
}

/// Reads the body up to `max_payload` bytes (raw-body's `limit`: more than that is an error,
/// exactly that much is fine). A declared `Content-Length` over the limit is refused before
/// reading anything; a longer chunked body is refused at the first frame that overruns.
async fn read_body(mut body: Incoming, config: &ApiConfig) -> Result<Vec<u8>, BodyError> {
    let max = config.max_payload;
    let declared = body.size_hint().lower();
    if declared > u64::try_from(max).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(max));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| BodyError::Broken(err.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len().saturating_add(data.len()) > max {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(config.body_timeout, read)
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

/// The response with exactly Node's headers (§2.1), in Node's order: `Date`, `Connection`,
/// `Keep-Alive` (only when the connection stays open), `Content-Length`; no `Content-Type`.
fn build_response(reply: Reply, keep_alive: bool, idle_timeout: Duration) -> Response<Full<Bytes>> {
    let length = reply.body.len();
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Ok(date) = HeaderValue::from_str(&http_date(SystemTime::now())) {
        headers.insert(DATE, date);
    }
    headers.insert(
        CONNECTION,
        HeaderValue::from_static(if keep_alive { "keep-alive" } else { "close" }),
    );
    if keep_alive {
        if let Ok(value) = HeaderValue::from_str(&format!("timeout={}", idle_timeout.as_secs())) {
            headers.insert(HeaderName::from_static("keep-alive"), value);
        }
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
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

    #[test]
    fn dates_format_like_node() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_632_180);
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 18:43:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn keep_alive_follows_http_rules() {
        let req = |version, connection: Option<&str>| {
            let mut builder = Request::builder().version(version);
            if let Some(c) = connection {
                builder = builder.header(CONNECTION, c);
            }
            builder.body(()).unwrap()
        };
        assert!(client_wants_keep_alive(&req(Version::HTTP_11, None)));
        assert!(!client_wants_keep_alive(&req(
            Version::HTTP_11,
            Some("Close")
        )));
        assert!(!client_wants_keep_alive(&req(
            Version::HTTP_11,
            Some("foo, close")
        )));
        assert!(!client_wants_keep_alive(&req(Version::HTTP_10, None)));
        assert!(client_wants_keep_alive(&req(
            Version::HTTP_10,
            Some("Keep-Alive")
        )));
    }
}
