//! The HTTP/1.1 server of the grape API (docs/protocol.md §3.1): the listener, the connection cap
//! and graceful shutdown. Each connection is served by [`super::conn`] (keep-alive, a body limit
//! that never reads past the limit, head and idle timeouts) on grenache-core's HTTP framing.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{debug, warn};

use super::announcers::Announcers;
use super::coalesce::LookupCoalescer;
use super::config::ApiConfig;
use super::conn;
use super::dht::GrapeDht;
use super::fair::Connections;
use super::shared::Shared;
use super::stats::ApiStats;
use crate::limits::{client_ip, client_key, ConnectionLimits, ConnectionTable};
use crate::loops::Loops;

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

/// Serves the grape HTTP API (docs/protocol.md §3) on `listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish for up to [`ApiConfig::shutdown_grace`], and
/// returns once every serving loop has ended.
///
/// This task accepts; the connections are served on [`ApiConfig::threads`] event loops of their
/// own (`crate::loops`), or on the caller's runtime with 0.
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
        stats: Arc::new(ApiStats::default()),
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
    // Accepting and admission stay here, so that the caps and displacement above hold across
    // loops; each admitted connection is served on one of the loops (`crate::loops`).
    let loops = Loops::start(config.threads, "grape-api").unwrap_or_else(|err| {
        warn!(
            "grape api: cannot start {} serving threads ({err}): serving here",
            config.threads
        );
        Loops::current()
    });

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
        // Served on the loop with the fewest connections, for the connection's whole life.
        let placed = loops.place(stream, move |stream| async move {
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
            let _open = shared.stats.connection();
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
        match placed {
            Ok((serving_loop, task)) => {
                serving_loop.spawn(task);
            }
            Err(err) => debug!("grape api: {peer}: cannot hand the connection over: {err}"),
        }
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
    // Ends the loop threads, which drop whatever the abort has not ended yet.
    loops.shutdown().await;
}
