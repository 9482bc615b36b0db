//! What the clients of both transports share: the [`RpcClient`] trait, the lookup, the choice
//! of a worker and the count of requests in flight that `close` waits for.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::RpcError;
use crate::link::Link;

/// Default idle time after which a pooled client connection is closed (Node
/// `inactivityTimeout`, 120 s).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Looks `name` up within `deadline`.
pub(crate) async fn lookup_before(
    link: &Link,
    name: &str,
    deadline: Instant,
) -> Result<Vec<String>, RpcError> {
    match tokio::time::timeout_at(deadline, link.lookup(name)).await {
        Err(_) => Err(RpcError::Timeout),
        Ok(result) => result.map_err(RpcError::Lookup),
    }
}

/// Node's destination choice (`PeerRPCClient.dest`): uniform among the destinations that
/// already have a pooled connection once there are at least `max_active` of them, else
/// uniform among all.
pub(crate) fn pick_dest(
    dests: &[String],
    is_active: impl Fn(&str) -> bool,
    max_active: usize,
) -> Option<&String> {
    let active: Vec<&String> = dests.iter().filter(|d| is_active(d)).collect();
    if max_active > 0 && active.len() >= max_active {
        active.get(rand::random_range(0..active.len())).copied()
    } else if dests.is_empty() {
        None
    } else {
        dests.get(rand::random_range(0..dests.len()))
    }
}

/// What the clients of both transports do, so that code calling workers is written once for
/// WebSocket ([`super::ws::PeerRpcClient`]) and HTTP ([`super::http::PeerRpcClient`]):
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use grenache_tokio::rpc::{http, ws, RpcClient};
/// use grenache_tokio::{Link, LinkConfig, RpcError};
///
/// async fn double(client: &impl RpcClient, n: u64) -> Result<serde_json::Value, RpcError> {
///     let payload = serde_json::json!({ "number": n });
///     client.request("double_worker", payload, Duration::from_secs(10)).await
/// }
///
/// let link = Link::new(LinkConfig::new("http://127.0.0.1:30001"))?;
/// double(&ws::PeerRpcClient::new(link.clone()), 21).await?;
/// double(&http::PeerRpcClient::new(link), 21).await?;
/// # Ok(()) }
/// ```
pub trait RpcClient: Clone + Send + Sync + 'static {
    /// The Link used for lookups.
    fn link(&self) -> &Link;

    /// Sends `payload` to one worker of `name`, chosen at random among the lookup results,
    /// and waits for its answer (Node `peer.request`). `timeout` bounds the whole call,
    /// lookup included; past it the error is `ERR_TIMEOUT`.
    fn request(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;

    /// Sends `payload` to every worker of `name` at once (one request per lookup entry) and
    /// gathers the answers in lookup order (Node `peer.map`, but every answer is kept rather
    /// than failing fast). The outer error is the lookup's (or `ERR_TIMEOUT` if it did not
    /// finish in time).
    fn map(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Result<Value, RpcError>>, RpcError>> + Send;

    /// Sends `payload` as a request for `name` to the worker at `dest` (`ip:port`), without a
    /// lookup.
    fn request_to(
        &self,
        dest: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send;

    /// Closes the client (every clone of it): new requests fail at once with
    /// `ERR_TRANSPORT_CLOSE`, those in flight get at most `grace` to finish, then the
    /// connections close. Returns when they are closed.
    fn close(&self, grace: Duration) -> impl Future<Output = ()> + Send;
}

/// Implements [`RpcClient`] for a transport's client by its inherent methods of the same names
/// and signatures (which stay, so that calling them needs no trait import).
macro_rules! rpc_client_by_inherent_methods {
    ($client:ty) => {
        impl $crate::rpc::RpcClient for $client {
            fn link(&self) -> &$crate::link::Link {
                <$client>::link(self)
            }

            fn request(
                &self,
                name: &str,
                payload: serde_json::Value,
                timeout: std::time::Duration,
            ) -> impl std::future::Future<Output = Result<serde_json::Value, $crate::rpc::RpcError>>
                   + Send {
                <$client>::request(self, name, payload, timeout)
            }

            fn map(
                &self,
                name: &str,
                payload: serde_json::Value,
                timeout: std::time::Duration,
            ) -> impl std::future::Future<
                Output = Result<
                    Vec<Result<serde_json::Value, $crate::rpc::RpcError>>,
                    $crate::rpc::RpcError,
                >,
            > + Send {
                <$client>::map(self, name, payload, timeout)
            }

            fn request_to(
                &self,
                dest: &str,
                name: &str,
                payload: serde_json::Value,
                timeout: std::time::Duration,
            ) -> impl std::future::Future<Output = Result<serde_json::Value, $crate::rpc::RpcError>>
                   + Send {
                <$client>::request_to(self, dest, name, payload, timeout)
            }

            fn close(
                &self,
                grace: std::time::Duration,
            ) -> impl std::future::Future<Output = ()> + Send {
                <$client>::close(self, grace)
            }
        }
    };
}
pub(crate) use rpc_client_by_inherent_methods;

/// The requests a client has in flight, and whether it is closed: what `close` waits on.
///
/// A counter, and a `Notify` used only once the client is closed: counting through a `watch`
/// woke its waiter list twice per request, a twentieth of a busy client's CPU time.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    closed: AtomicBool,
    count: AtomicUsize,
    /// Notified when the last request in flight ends after the client was closed.
    drained: Notify,
}

impl InFlight {
    /// Counts a request in until the guard drops; `ERR_TRANSPORT_CLOSE` once closed.
    pub(crate) fn enter(self: &Arc<Self>) -> Result<InFlightGuard, RpcError> {
        // Counted before the check: `close` sets the flag first, then waits for the count,
        // so a request either sees the flag or is waited for.
        self.count.fetch_add(1, Ordering::SeqCst);
        let guard = InFlightGuard(Arc::clone(self));
        if self.closed.load(Ordering::SeqCst) {
            return Err(RpcError::TransportClose);
        }
        Ok(guard)
    }

    /// Refuses new requests, then waits for those in flight, for at most `grace`.
    pub(crate) async fn close(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                // Registered before the count is read, so that the last request's
                // notification cannot fall between the two.
                let notified = self.drained.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, drained).await;
    }
}

/// A request in flight ([`InFlight::enter`]).
#[derive(Debug)]
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        // The flag is read after the count: a `close` that set it before sees the count at
        // zero or is notified here.
        let before = self.0.count.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.0.closed.load(Ordering::SeqCst) {
            self.0.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_dest_prefers_active_destinations_once_there_are_enough() {
        let dests: Vec<String> = (0..10).map(|i| format!("127.0.0.1:{i}")).collect();
        let active = |d: &str| d.ends_with(":1") || d.ends_with(":2");
        for _ in 0..200 {
            let picked = pick_dest(&dests, active, 2).expect("a dest");
            assert!(active(picked), "{picked} is not active");
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            seen.insert(pick_dest(&dests, active, 5).expect("a dest").clone());
        }
        assert_eq!(
            seen.len(),
            10,
            "with few active dests every dest is a candidate"
        );
        assert_eq!(pick_dest(&[], |_| false, 5), None);
    }
}
