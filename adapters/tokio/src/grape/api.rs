//! The HTTP/1.1 server of the grape API (docs/protocol.md §3.1): the listener, the connection cap and graceful
//! shutdown. Each connection is served by [`super::conn`] (keep-alive, a body limit that never
//! reads past the limit, head and idle timeouts) on grenache-core's HTTP framing.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{debug, warn};

use super::announcers::Announcers;
use super::coalesce::LookupCoalescer;
use super::config::{DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_TABLES, DEFAULT_PEER_MAX_AGE};
use super::conn;
use super::dht::GrapeDht;
use super::fair::Connections;
use crate::limits::{
    client_ip, client_key, AllowList, ConnectionLimits, ConnectionTable, MinProgress,
};

/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on simultaneous connections from one client IP: a quarter of
/// [`DEFAULT_MAX_CONNECTIONS`], room for a host running many workers and Link clients with
/// their keep-alive pools, while one host never holds more than a quarter of the API.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = DEFAULT_MAX_CONNECTIONS / 4;
/// Default head/idle timeout: Node's keep-alive timeout.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed to receive a request body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ApiConfig::lookup_reuse`].
pub const DEFAULT_LOOKUP_REUSE: Duration = Duration::from_millis(100);
/// Default time in-flight requests get to finish after shutdown was asked for.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default of [`ApiConfig::body_progress`]: after 5 s, at least 1 KiB/s on average.
pub const DEFAULT_BODY_PROGRESS: MinProgress = MinProgress {
    grace: Duration::from_secs(5),
    min_rate: 1024,
};

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Node's default listen backlog.
const LISTEN_BACKLOG: i32 = 511;
/// Connections that may wait for a slot while every one is taken (each for at most the head
/// timeout); more are closed at once. They wait in their own tasks, so that the accept loop
/// keeps serving the newcomers that displace idle connections (`grape::fair`).
const MAX_WAITING: usize = 64;
/// How long a newcomer waits for the slot of the idle connection it displaced.
const HANDOFF_WAIT: Duration = Duration::from_secs(1);

/// How an accepted connection gets its slot.
enum Admission {
    /// A slot was free.
    Now(OwnedSemaphorePermit),
    /// The slot of a displaced idle connection, once it has closed.
    Displacing(oneshot::Receiver<OwnedSemaphorePermit>),
    /// The next free slot (holding one of the [`MAX_WAITING`] places meanwhile).
    Waiting(OwnedSemaphorePermit),
}

/// Settings of [`serve_api`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body in bytes (`--check_maxPayloadSize`, 8192 by default): a
    /// larger body gets `413 ERR_GRAPE_PAYLOAD_SIZE` and the connection is closed without
    /// reading the rest. Unlike the Node 1.0.0 CLI there is always a limit (docs/protocol.md §13.1).
    pub max_payload: usize,
    /// How long a connection may take to deliver a request head, counted from the moment it
    /// opens or its previous response finished: so it is also the idle keep-alive timeout
    /// (`Keep-Alive: timeout=<secs>` announces it). A connection that overruns is closed.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive; an overrun gets `408` and the connection is
    /// closed (Node's `requestTimeout` does the same after 300 s).
    pub body_timeout: Duration,
    /// The minimum progress of a body, counted from the end of its head: after `grace` (5 s),
    /// at least `min_rate` (1024) bytes per second on average, or the request gets `408` and
    /// the connection is closed ([`DEFAULT_BODY_PROGRESS`]). A body trickled byte by byte
    /// (slowloris) is cut off after the grace period instead of holding its slot for the whole
    /// [`ApiConfig::body_timeout`]; a full 8 KiB body may take 13 s at the defaults.
    pub body_progress: MinProgress,
    /// Simultaneous connections served (1024). When all are taken, a newcomer from a client
    /// with at least two connections fewer than the heaviest client takes over an idle
    /// connection of that client; others wait for a free slot (at most 64 at once, each at
    /// most [`ApiConfig::header_timeout`]) or, beyond that, are closed.
    pub max_connections: usize,
    /// Simultaneous connections from one client ([`DEFAULT_MAX_CONNECTIONS_PER_IP`], 256),
    /// those waiting for a slot included; one more is closed as soon as it is accepted. A
    /// client is an IPv4 address (IPv4 clients of a dual-stack listener included) or an IPv6
    /// /64 (one host commonly owns a whole /64).
    pub max_connections_per_ip: usize,
    /// The client networks that may connect (`--api-allow`; empty: everyone). Connections
    /// from elsewhere are closed as soon as they are accepted, before a byte is read.
    pub allow: AllowList,
    /// After the shutdown future resolves: how long in-flight requests may still finish before
    /// their connections are dropped.
    pub shutdown_grace: Duration,
    /// How long a non-empty `/lookup` answer is given again without a new DHT traversal
    /// (zero: never; concurrent lookups of one name still share one traversal). An empty
    /// answer is never reused, and an `/announce` or `/unannounce` through this grape drops
    /// the name's answer. See `grape::coalesce`.
    pub lookup_reuse: Duration,
    /// Answers kept for [`ApiConfig::lookup_reuse`] at most, one per name (the grape's
    /// `--dht_maxTables`, 5000 by default: the traversal results cached per target, as
    /// bittorrent-dht's tables are; 0: none kept, concurrent lookups still share one traversal).
    pub max_reused_lookups: usize,
    /// How long the grape remembers which client IP announced a (name, port): only that IP may
    /// `/unannounce` it (see `grape::announcers`). The peer TTL (`--dht_peer_maxAge`, 120 s by
    /// default), renewed by every announce; zero: no expiry.
    pub announce_ttl: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_payload: DEFAULT_MAX_PAYLOAD,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            body_progress: DEFAULT_BODY_PROGRESS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            allow: AllowList::any(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            lookup_reuse: DEFAULT_LOOKUP_REUSE,
            max_reused_lookups: DEFAULT_MAX_TABLES,
            announce_ttl: DEFAULT_PEER_MAX_AGE,
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
pub(super) struct Shared<D> {
    pub(super) dht: Arc<D>,
    /// Lookups of one name share a traversal.
    pub(super) lookups: LookupCoalescer,
    /// Who announced what through this grape: who may unannounce it.
    pub(super) announcers: Announcers,
    pub(super) config: ApiConfig,
    /// Flipped once shutdown starts: idle connections close, busy ones answer with
    /// `Connection: close`.
    pub(super) closing: watch::Receiver<bool>,
}

/// Serves the grape HTTP API (docs/protocol.md §3) on `listener` until `shutdown` resolves, then stops accepting,
/// lets in-flight requests finish for up to [`ApiConfig::shutdown_grace`], and returns.
///
/// Accept errors are logged and retried; nothing here ends the server except `shutdown`.
pub async fn serve_api<D: GrapeDht>(
    listener: TcpListener,
    dht: Arc<D>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) {
    let (closing_tx, closing_rx) = watch::channel(false);
    // The semaphore counts in u32 when shutdown waits for every permit.
    let max_connections = config.max_connections.clamp(1, u32::MAX as usize);
    let shared = Arc::new(Shared {
        dht,
        lookups: LookupCoalescer::new(config.lookup_reuse, config.max_reused_lookups),
        announcers: Announcers::new(config.announce_ttl),
        config: config.clone(),
        closing: closing_rx,
    });
    let permits = Arc::new(Semaphore::new(max_connections));
    // The cap per client (`limits::client_key`), connections waiting for a slot included. The
    // semaphore above caps the connections being served, `waiting` those waiting for a free
    // slot, and each served one can be displaced once (its newcomer waits for its slot); so
    // the table's own total cap never refuses one.
    let per_ip = ConnectionTable::new(ConnectionLimits {
        total: max_connections
            .saturating_mul(2)
            .saturating_add(MAX_WAITING),
        per_ip: config.max_connections_per_ip,
    });
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    // Who may be displaced when every slot is taken.
    let connections = Arc::new(Connections::default());
    // Flipped when the grace period is over: every connection task drops its connection.
    let (abort_tx, abort_rx) = watch::channel(false);

    tokio::pin!(shutdown);
    loop {
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
        let ip = client_ip(peer.ip());
        if !config.allow.allows(ip) {
            debug!("grape api: {peer} is not in the allow-list: closed");
            continue;
        }
        // Counted from accept on, waiting for a slot included.
        let key = client_key(ip);
        let ip_permit = match per_ip.try_acquire(key) {
            Ok(ip_permit) => ip_permit,
            Err(refused) => {
                debug!("grape api: {peer}: {refused}: closed");
                continue;
            }
        };
        // A slot now; or, when every slot is taken, the slot of an idle connection of a
        // heavier client (`grape::fair`); or else a wait for a free slot, in the connection's
        // own task so that the accept loop goes on (a bounded number wait; more are closed).
        let admission = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Admission::Now(permit),
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => match connections.displace_for(key) {
                Some(handoff) => Admission::Displacing(handoff),
                None => match Arc::clone(&waiting).try_acquire_owned() {
                    Ok(waiter) => Admission::Waiting(waiter),
                    Err(_) => {
                        debug!("grape api: {peer}: full, and {MAX_WAITING} already wait: closed");
                        continue;
                    }
                },
            },
        };
        // Node's http server sets TCP_NODELAY too; a failure only costs latency.
        if let Err(err) = stream.set_nodelay(true) {
            debug!("grape api: TCP_NODELAY on {peer}: {err}");
        }
        let shared = Arc::clone(&shared);
        let mut abort = abort_rx.clone();
        let permits = Arc::clone(&permits);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            let permit = match admission {
                Admission::Now(permit) => permit,
                Admission::Displacing(handoff) => {
                    // The displaced connection is idle and closes at once.
                    match tokio::time::timeout(HANDOFF_WAIT, handoff).await {
                        Ok(Ok(permit)) => permit,
                        _ => return,
                    }
                }
                Admission::Waiting(_waiter) => {
                    let mut closing = shared.closing.clone();
                    tokio::select! {
                        permit = permits.acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        () = tokio::time::sleep(shared.config.header_timeout) => return,
                        _ = closing.wait_for(|stop| *stop) => return,
                    }
                }
            };
            let registration = connections.register(key);
            let slot = registration.slot();
            tokio::select! {
                result = conn::serve_connection(stream, ip, &shared, slot) => {
                    if let Err(err) = result {
                        debug!("grape api: connection from {peer} ended: {err}");
                    }
                }
                _ = abort.wait_for(|stop| *stop) => {}
            }
            // The client's share first, so that a newcomer of the same client finds it free.
            drop(ip_permit);
            slot.release(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a permit: having them all back means every connection ended.
    let all_closed = async {
        let _ = permits
            .acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX))
            .await;
    };
    tokio::select! {
        () = all_closed => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            debug!("grape api: shutdown grace period over, dropping open connections");
        }
    }
    let _ = abort_tx.send(true);
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
    fn grape_flags_reach_the_api() {
        let mut grape = super::super::GrapeConfig::new(20001, 30001);
        let api = grape.api_config();
        assert_eq!(api.max_reused_lookups, 5000);
        assert_eq!(api.announce_ttl, Duration::from_secs(120));
        assert_eq!(api.allow, AllowList::any());
        assert_eq!(
            (api.max_connections, api.max_connections_per_ip),
            (1024, 256)
        );
        grape.dht_max_tables = 7;
        grape.dht_peer_max_age = Duration::ZERO;
        grape.api_allow = "10.0.0.0/8".parse().unwrap_or_default();
        let api = grape.api_config();
        assert_eq!(api.max_reused_lookups, 7);
        assert_eq!(api.announce_ttl, Duration::ZERO);
        assert_eq!(api.allow.nets().len(), 1);
    }

    #[test]
    fn dates_format_like_node() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_632_180);
        assert_eq!(http_date(t), "Wed, 25 Nov 2026 18:43:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
