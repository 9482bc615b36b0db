//! Metrics and tracing of RPC workers and clients: per-service request counts, errors and
//! latency histograms, exposed in the Prometheus text format through a `prometheus-client`
//! [`Registry`], and a `tracing` span per request carrying its `rid`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use grenache_tokio::rpc::metrics::RpcMetrics;
//! use grenache_tokio::rpc::{ws, RpcClient};
//! use grenache_tokio::{Link, LinkConfig, Request};
//! let metrics = RpcMetrics::new();
//! let link = Link::new(LinkConfig::new("http://127.0.0.1:30001"))?;
//! let worker = ws::PeerRpcServer::builder(link.clone())
//!     .handler(metrics.handler(&["double"], |req: Request| async move {
//!         serde_json::json!(req.payload.as_u64().unwrap_or(0) * 2)
//!     }))
//!     .build();
//! worker.listen(1337).await?;
//! worker.start_announcing("double");
//! let client = metrics.client(&["double"], ws::PeerRpcClient::new(link));
//! client.request("double", serde_json::json!(21), std::time::Duration::from_secs(5)).await?;
//! // Served at http://127.0.0.1:9464/metrics; or `metrics.register(&mut app_registry)`.
//! let _listener = metrics.serve("127.0.0.1:9464".parse()?).await?;
//! # Ok(()) }
//! ```
//!
//! What a request costs: a few relaxed atomic additions and one clock read at each end; the
//! service's counters are found without a lock, in a map fixed when the handler or client is
//! wrapped (the names given then; any other name counts under [`OTHER_SERVICE`], so that a
//! client sending made-up keys cannot grow the metrics without bound).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::client::RpcClient;
use super::error::RpcError;
use super::handler::{Handler, HandlerFuture, Request};
use crate::link::Link;
use crate::lock;

/// The `service` label of requests for a name the handler or client was not wrapped with.
pub const OTHER_SERVICE: &str = "_other";

/// How long the `/metrics` listener waits for a request's head.
const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections the `/metrics` listener serves at once; more are closed at once. A scraper needs
/// one: the cap keeps a host that opens connections and leaves them idle from growing memory.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Upper bounds of the latency histograms' buckets, in seconds: from half a millisecond (a
/// loopback round trip) to 10 s (the default request timeout), roughly ×2.5 per step.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram of atomics (`prometheus-client`'s own takes a mutex per observation).
/// Buckets hold their own counts (not cumulative: one addition per observation); the count is
/// their sum, so a scrape never sees a count that disagrees with the buckets.
#[derive(Debug, Default)]
struct Latency {
    /// One per bound of [`LATENCY_BUCKETS`], and the last for the rest (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// The sum of all observations, in microseconds (an `AtomicU64` of nanoseconds would wrap
    /// after 584 years of summed latency, which a busy worker reaches in months).
    sum_micros: AtomicU64,
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(bucket) = self.buckets.get(slot) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and each bucket's own count with its upper bound (the
    /// encoder makes them cumulative, as the exposition format wants them).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, bucket)| (bound, bucket.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// The counters of one service on one side (worker or client).
#[derive(Debug)]
struct ServiceStats {
    service: String,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Latency,
}

impl ServiceStats {
    /// Counts a request now; its outcome is counted when the returned guard finishes or drops.
    fn start(self: &Arc<Self>) -> Pending {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Pending {
            stats: Arc::clone(self),
            started: Instant::now(),
            finished: false,
        }
    }
}

/// A request counted but not finished. Dropped unfinished (the handler panicked, the
/// connection went away, the caller gave up), it counts as an error: every request counted
/// ends in the histogram, and `requests - errors` is always what succeeded.
struct Pending {
    stats: Arc<ServiceStats>,
    started: Instant,
    finished: bool,
}

impl Pending {
    fn finish(mut self, failed: bool) {
        self.record(failed);
    }

    fn record(&mut self, failed: bool) {
        self.finished = true;
        if failed {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.latency.observe(self.started.elapsed());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            self.record(true);
        }
    }
}

/// Which end of a request a set of counters measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Server => "grenache_rpc_server",
            Side::Client => "grenache_rpc_client",
        }
    }
}

#[derive(Debug, Default)]
struct Services {
    server: Vec<Arc<ServiceStats>>,
    client: Vec<Arc<ServiceStats>>,
}

/// The metrics of the workers and clients of one application. Cheap to clone (clones share
/// the counters). Wrap handlers with [`RpcMetrics::handler`] and clients with
/// [`RpcMetrics::client`]; read the values with [`RpcMetrics::encode`], a
/// [`Registry`] ([`RpcMetrics::register`]), or over HTTP ([`RpcMetrics::serve`]).
///
/// The series, each labelled `service` (the name asked for):
///
/// | name | type | what |
/// |---|---|---|
/// | `grenache_rpc_server_requests_total` | counter | requests a worker's handler got |
/// | `grenache_rpc_server_errors_total` | counter | of them, those answered with an error (or none) |
/// | `grenache_rpc_server_request_duration_seconds` | histogram | handler time |
/// | `grenache_rpc_client_requests_total` | counter | requests a client sent (`map`: one per worker) |
/// | `grenache_rpc_client_errors_total` | counter | of them, those that failed (error, timeout, lookup) |
/// | `grenache_rpc_client_request_duration_seconds` | histogram | time to the answer, lookup included |
#[derive(Clone, Debug, Default)]
pub struct RpcMetrics {
    /// Locked only when a handler or client is wrapped and when the metrics are read.
    services: Arc<Mutex<Services>>,
}

impl RpcMetrics {
    /// No service yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `service` on `side`, made on first use (two handlers wrapped for the
    /// same name share them).
    fn stats(&self, side: Side, service: &str) -> Arc<ServiceStats> {
        let mut services = lock(&self.services);
        let list = match side {
            Side::Server => &mut services.server,
            Side::Client => &mut services.client,
        };
        if let Some(found) = list.iter().find(|s| s.service == service) {
            return Arc::clone(found);
        }
        let made = Arc::new(ServiceStats {
            service: service.to_string(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Latency::default(),
        });
        list.push(Arc::clone(&made));
        made
    }

    fn by_service(&self, side: Side, services: &[&str]) -> ByService {
        ByService {
            known: services
                .iter()
                .map(|name| (name.to_string(), self.stats(side, name)))
                .collect(),
            other: self.stats(side, OTHER_SERVICE),
        }
    }

    /// `handler`, counted and timed per service (the request's key: one of `services`, else
    /// [`OTHER_SERVICE`]), each request run in a `rpc_request` span (level INFO) with fields
    /// `service` and `rid`. An error reply, a panic or a request dropped unanswered is an
    /// error.
    pub fn handler(&self, services: &[&str], handler: impl Handler) -> InstrumentedHandler {
        InstrumentedHandler {
            handler: Arc::new(handler),
            services: self.by_service(Side::Server, services),
        }
    }

    /// `client`, counted and timed per service (one of `services`, else [`OTHER_SERVICE`]),
    /// each call run in a `rpc_client_request` span (level INFO) with fields `service` and
    /// `rid` (filled in by the transport once it has made the request id; `map` sends several
    /// and leaves it empty).
    pub fn client<C: RpcClient>(&self, services: &[&str], client: C) -> InstrumentedClient<C> {
        InstrumentedClient {
            client,
            services: Arc::new(self.by_service(Side::Client, services)),
        }
    }

    /// Adds these metrics to `registry` (an application's own), read at each of its scrapes.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }

    /// The metrics in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        let mut text = String::new();
        // Writing into a String cannot fail, and our collector does not fail either.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }

    /// Serves [`RpcMetrics::encode`] at `GET /metrics` on `addr` (port 0 picks a free one),
    /// until the returned listener is dropped. Bind it to an address only Prometheus reaches:
    /// it has no access control of its own.
    pub async fn serve(&self, addr: SocketAddr) -> io::Result<MetricsListener> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let metrics = self.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    // Full: closing the newcomer keeps the scrapers already connected.
                    drop(stream);
                    continue;
                };
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = service_fn(move |request: hyper::Request<_>| {
                        let response = metrics.respond(request.method(), request.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    // A client that never finishes its request head does not keep its
                    // connection (and task) for ever.
                    let served = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(METRICS_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!("metrics listener: connection ended: {e}");
                    }
                });
            }
        });
        Ok(MetricsListener { local_addr, task })
    }

    fn respond(&self, method: &hyper::Method, path: &str) -> Response<Full<Bytes>> {
        let (status, body, content_type) = match (method, path) {
            (&hyper::Method::GET, "/metrics") => (
                StatusCode::OK,
                self.encode(),
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ),
            (_, "/metrics") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET\n".to_string(),
                "text/plain",
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "see /metrics\n".to_string(),
                "text/plain",
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Writes one family (`side`'s services) of counters.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    stats: &[Arc<ServiceStats>],
    value: impl Fn(&ServiceStats) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for s in stats {
        let labels = [("service", s.service.as_str())];
        family
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value(s), None)?;
    }
    Ok(())
}

impl Collector for RpcMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copied out so that a slow scrape does not hold up wrapping a new handler.
        let (server, client) = {
            let services = lock(&self.services);
            (services.server.clone(), services.client.clone())
        };
        for (side, stats, what) in [
            (Side::Server, &server, "handled by this process's workers"),
            (Side::Client, &client, "sent by this process's clients"),
        ] {
            let prefix = side.prefix();
            encode_counters(
                &mut encoder,
                &format!("{prefix}_requests"),
                &format!("RPC requests {what}"),
                stats,
                |s| s.requests.load(Ordering::Relaxed),
            )?;
            encode_counters(
                &mut encoder,
                &format!("{prefix}_errors"),
                &format!("RPC requests {what} that failed"),
                stats,
                |s| s.errors.load(Ordering::Relaxed),
            )?;
            let name = format!("{prefix}_request_duration_seconds");
            let mut family = encoder.encode_descriptor(
                &name,
                &format!("Duration of the RPC requests {what}"),
                None,
                MetricType::Histogram,
            )?;
            for s in stats.iter() {
                let (sum, count, buckets) = s.latency.snapshot();
                let labels = [("service", s.service.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// [`RpcMetrics::serve`]'s HTTP listener; dropping it stops it.
#[derive(Debug)]
pub struct MetricsListener {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsListener {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The counters of the services named at wrapping, found without a lock.
#[derive(Debug)]
struct ByService {
    known: HashMap<String, Arc<ServiceStats>>,
    other: Arc<ServiceStats>,
}

impl ByService {
    fn get(&self, service: &str) -> &Arc<ServiceStats> {
        self.known.get(service).unwrap_or(&self.other)
    }
}

/// A [`Handler`] counted and traced by [`RpcMetrics::handler`].
pub struct InstrumentedHandler {
    handler: Arc<dyn Handler>,
    services: ByService,
}

impl Handler for InstrumentedHandler {
    fn handle(&self, request: Request) -> HandlerFuture {
        let pending = self.services.get(&request.key).start();
        let span = tracing::info_span!(
            "rpc_request",
            service = %request.key,
            rid = %RidField(&request.rid)
        );
        let handling = span.in_scope(|| self.handler.handle(request));
        Box::pin(
            async move {
                let outcome = handling.await;
                pending.finish(outcome.is_err());
                outcome
            }
            .instrument(span),
        )
    }
}

/// A request id as a span field: a string rid (what every Grenache client sends) bare, so
/// that it reads the same as the client's; any other JSON as its JSON text.
struct RidField<'a>(&'a Value);

impl std::fmt::Display for RidField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Value::String(rid) => f.write_str(rid),
            other => write!(f, "{other}"),
        }
    }
}

/// An [`RpcClient`] counted and traced by [`RpcMetrics::client`].
#[derive(Clone, Debug)]
pub struct InstrumentedClient<C> {
    client: C,
    services: Arc<ByService>,
}

impl<C> InstrumentedClient<C> {
    /// The client wrapped, for its transport's own methods (streams, ...), which are not
    /// counted.
    pub fn inner(&self) -> &C {
        &self.client
    }

    fn span(name: &str) -> tracing::Span {
        tracing::info_span!(
            "rpc_client_request",
            service = name,
            rid = tracing::field::Empty
        )
    }

    /// Runs one counted request.
    fn counted<F>(&self, name: &str, request: F) -> impl Future<Output = F::Output> + Send
    where
        F: Future<Output = Result<Value, RpcError>> + Send,
    {
        let pending = self.services.get(name).start();
        async move {
            let outcome = request.await;
            pending.finish(outcome.is_err());
            outcome
        }
        .instrument(Self::span(name))
    }
}

impl<C: RpcClient> RpcClient for InstrumentedClient<C> {
    fn link(&self) -> &Link {
        self.client.link()
    }

    fn request(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send {
        self.counted(name, self.client.request(name, payload, timeout))
    }

    /// Counts one request per worker answering (each timed as the whole `map`), or one failed
    /// request when the lookup fails.
    fn map(
        &self,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Result<Value, RpcError>>, RpcError>> + Send {
        let stats = Arc::clone(self.services.get(name));
        let mapping = self.client.map(name, payload, timeout);
        async move {
            let started = Instant::now();
            let answers = mapping.await;
            let elapsed = started.elapsed();
            let failures: Vec<bool> = match &answers {
                Ok(answers) => answers.iter().map(Result::is_err).collect(),
                Err(_) => vec![true],
            };
            for failed in failures {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                if failed {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                stats.latency.observe(elapsed);
            }
            answers
        }
        .instrument(Self::span(name))
    }

    fn request_to(
        &self,
        dest: &str,
        name: &str,
        payload: Value,
        timeout: Duration,
    ) -> impl Future<Output = Result<Value, RpcError>> + Send {
        self.counted(name, self.client.request_to(dest, name, payload, timeout))
    }

    fn close(&self, grace: Duration) -> impl Future<Output = ()> + Send {
        self.client.close(grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_count_every_observation_once() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(100));
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_secs(60));
        let (sum, count, buckets) = latency.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0031).abs() < 1e-9, "{sum}");
        let at = |bound: f64| buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        assert_eq!(at(0.0005), Some(1));
        assert_eq!(at(0.0025), Some(0));
        assert_eq!(at(0.005), Some(1));
        assert_eq!(at(10.0), Some(0));
        assert_eq!(at(f64::INFINITY), Some(1));
    }

    #[test]
    fn a_request_dropped_unfinished_is_an_error() {
        let metrics = RpcMetrics::new();
        let stats = metrics.stats(Side::Server, "svc");
        stats.start().finish(false);
        drop(stats.start());
        assert_eq!(stats.requests.load(Ordering::Relaxed), 2);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert_eq!(stats.latency.snapshot().1, 2);
    }

    #[test]
    fn unknown_services_share_one_label() {
        let metrics = RpcMetrics::new();
        let services = metrics.by_service(Side::Client, &["a"]);
        assert_eq!(services.get("a").service, "a");
        assert_eq!(services.get("made-up-1").service, OTHER_SERVICE);
        assert!(Arc::ptr_eq(services.get("made-up-2"), services.get("x")));
    }
}
