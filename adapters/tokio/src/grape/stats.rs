//! What a grape knows about itself, for operators: the values behind `GET /metrics`,
//! `GET /health` and `GET /status.json` (docs/protocol.md §14).
//!
//! Two kinds of numbers live here. [`ApiStats`] is counted by the API connections as requests
//! are answered: plain atomics (relaxed adds, no lock), so that counting costs a `/lookup`
//! nothing measurable. [`DhtStatus`] is a snapshot the DHT thread makes on request: the DHT
//! thread owns its counters as plain integers and copies them out only when someone asks.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grenache_core::wire::krpc::{Message, Query};

/// The KRPC methods counted apart (label `method`), [`KrpcMethod::Other`] for the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KrpcMethod {
    /// `ping`.
    Ping,
    /// `find_node`.
    FindNode,
    /// `get_peers`.
    GetPeers,
    /// `announce_peer`.
    AnnouncePeer,
    /// `unannounce` (this implementation's extension).
    Unannounce,
    /// BEP 44 `get`.
    Get,
    /// BEP 44 `put`.
    Put,
    /// Any other method.
    Other,
}

impl KrpcMethod {
    /// Every method, in the order of the counters' arrays.
    pub const ALL: [KrpcMethod; 8] = [
        KrpcMethod::Ping,
        KrpcMethod::FindNode,
        KrpcMethod::GetPeers,
        KrpcMethod::AnnouncePeer,
        KrpcMethod::Unannounce,
        KrpcMethod::Get,
        KrpcMethod::Put,
        KrpcMethod::Other,
    ];

    /// The method's wire name (the label value).
    pub fn name(self) -> &'static str {
        match self {
            KrpcMethod::Ping => "ping",
            KrpcMethod::FindNode => "find_node",
            KrpcMethod::GetPeers => "get_peers",
            KrpcMethod::AnnouncePeer => "announce_peer",
            KrpcMethod::Unannounce => "unannounce",
            KrpcMethod::Get => "get",
            KrpcMethod::Put => "put",
            KrpcMethod::Other => "other",
        }
    }

    fn of(query: &Query<'_>) -> KrpcMethod {
        match query {
            Query::Ping => KrpcMethod::Ping,
            Query::FindNode { .. } => KrpcMethod::FindNode,
            Query::GetPeers { .. } => KrpcMethod::GetPeers,
            Query::AnnouncePeer(_) => KrpcMethod::AnnouncePeer,
            Query::Unannounce(_) => KrpcMethod::Unannounce,
            Query::Get { .. } => KrpcMethod::Get,
            Query::Put(_) => KrpcMethod::Put,
            Query::Unknown(_) => KrpcMethod::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The DHT thread's traffic counters (totals since the grape started).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DhtCounters {
    /// Datagrams received.
    pub packets_in: u64,
    /// Datagrams sent (queries and answers).
    pub packets_out: u64,
    /// Bytes received (UDP payload).
    pub bytes_in: u64,
    /// Bytes sent (UDP payload).
    pub bytes_out: u64,
    /// Queries received, by [`KrpcMethod::ALL`] index.
    pub queries_in: [u64; 8],
    /// Queries sent, by [`KrpcMethod::ALL`] index.
    pub queries_out: [u64; 8],
    /// KRPC error answers received to our queries.
    pub errors_in: u64,
    /// KRPC error answers we sent.
    pub errors_out: u64,
    /// Datagrams that were not KRPC messages.
    pub malformed_in: u64,
    /// Queries dropped unanswered because their source was over its budget.
    pub rate_limited: u64,
}

impl DhtCounters {
    /// Counts a received datagram.
    pub(super) fn received(&mut self, datagram: &[u8]) {
        self.packets_in += 1;
        self.bytes_in += datagram.len() as u64;
        match grenache_core::wire::krpc::parse(datagram) {
            Ok(Message::Query { query, .. }) => {
                if let Some(n) = self.queries_in.get_mut(KrpcMethod::of(&query).index()) {
                    *n += 1;
                }
            }
            Ok(Message::Error { .. }) => self.errors_in += 1,
            Ok(Message::Response { .. }) => {}
            Err(_) => self.malformed_in += 1,
        }
    }

    /// Counts a sent datagram (one of our queries, or an answer).
    pub(super) fn sent(&mut self, datagram: &[u8]) {
        self.packets_out += 1;
        self.bytes_out += datagram.len() as u64;
        match grenache_core::wire::krpc::parse(datagram) {
            Ok(Message::Query { query, .. }) => {
                if let Some(n) = self.queries_out.get_mut(KrpcMethod::of(&query).index()) {
                    *n += 1;
                }
            }
            Ok(Message::Error { .. }) => self.errors_out += 1,
            Ok(Message::Response { .. }) | Err(_) => {}
        }
    }
}

/// A histogram with fixed bucket bounds and atomic cells: observing takes a few relaxed atomic
/// adds and no lock, so API connections on many threads share one.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more cell for `+Inf`.
    cells: Vec<AtomicU64>,
    /// Sum of the observations, in millionths.
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            cells: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `value`.
    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(cell) = self.cells.get(i) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// The values as of now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(self.cells.len());
        for (i, cell) in self.cells.iter().enumerate() {
            let count = cell.load(Ordering::Relaxed);
            total += count;
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, count));
        }
        HistogramSnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
            buckets,
        }
    }
}

/// A histogram's values at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
    /// `(upper bound, observations above the previous bound and at or below this one)`, not
    /// cumulative (the exposition format's encoder adds them up), `+Inf` last.
    pub buckets: Vec<(f64, u64)>,
}

/// Bounds of the latency histograms, in seconds: a local answer takes microseconds, a
/// traversal through dead nodes seconds.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bounds of the queries-per-traversal histogram.
pub const QUERY_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The API endpoints counted apart (label `endpoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/lookup`.
    Lookup,
    /// `/announce`.
    Announce,
    /// `/unannounce`.
    Unannounce,
    /// `/put`.
    Put,
    /// `/get`.
    Get,
    /// A path no handler serves (`ERR_REQ_NOTFOUND`) or a request refused before dispatch.
    Other,
    /// The operator endpoints (`GET /`, `/metrics`, `/health`, `/status.json`).
    Ops,
}

impl Route {
    /// Every route, in the order of [`ApiStats`]' arrays.
    pub const ALL: [Route; 7] = [
        Route::Lookup,
        Route::Announce,
        Route::Unannounce,
        Route::Put,
        Route::Get,
        Route::Other,
        Route::Ops,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Route::Lookup => "lookup",
            Route::Announce => "announce",
            Route::Unannounce => "unannounce",
            Route::Put => "put",
            Route::Get => "get",
            Route::Other => "other",
            Route::Ops => "ops",
        }
    }
}

/// How a request ended (label `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a result.
    Ok,
    /// Answered without a DHT call: the request was invalid (bad JSON, bad `data`, unknown
    /// path, a framing error).
    Invalid,
    /// The DHT call failed (no nodes, all queries failed, KRPC error, busy, refused).
    Failed,
}

impl Outcome {
    /// Every outcome, in the order of [`ApiStats`]' arrays.
    pub const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Invalid, Outcome::Failed];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
        }
    }
}

/// What the API connections count, shared by all of them (and by every event loop serving
/// one grape).
#[derive(Debug)]
pub struct ApiStats {
    started: Instant,
    requests: [[AtomicU64; 3]; 7],
    open_connections: AtomicI64,
    lookup_seconds: AtomicHistogram,
}

impl Default for ApiStats {
    fn default() -> Self {
        ApiStats {
            started: Instant::now(),
            requests: Default::default(),
            open_connections: AtomicI64::new(0),
            lookup_seconds: AtomicHistogram::new(LATENCY_BOUNDS),
        }
    }
}

impl ApiStats {
    /// Counts one answered request.
    pub fn request(&self, route: Route, outcome: Outcome) {
        if let Some(cell) = self
            .requests
            .get(route as usize)
            .and_then(|r| r.get(outcome as usize))
        {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests answered so far on `route` with `outcome`.
    pub fn requests(&self, route: Route, outcome: Outcome) -> u64 {
        self.requests
            .get(route as usize)
            .and_then(|r| r.get(outcome as usize))
            .map_or(0, |cell| cell.load(Ordering::Relaxed))
    }

    /// Records the time a `/lookup` took, from its body read to its answer.
    pub fn lookup_took(&self, elapsed: Duration) {
        self.lookup_seconds.observe(elapsed.as_secs_f64());
    }

    /// The `/lookup` latency histogram.
    pub fn lookup_seconds(&self) -> HistogramSnapshot {
        self.lookup_seconds.snapshot()
    }

    /// A connection was admitted; the guard counts it until dropped.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self)
    }

    /// Connections being served.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Time since the API started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Counts an open connection until dropped ([`ApiStats::connection`]).
#[derive(Debug)]
pub struct ConnectionGuard<'a>(&'a ApiStats);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One routing-table contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactStatus {
    /// Its address.
    pub addr: SocketAddrV4,
    /// Its k-bucket: the leading bits its id shares with ours (0 = farthest half of the space).
    pub bucket: usize,
    /// Heard from within the liveness interval, with no failed query since.
    pub live: bool,
    /// Time since it last sent us anything.
    pub seen_ago: Duration,
}

/// One stored name and its peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredName {
    /// The service name (invalid UTF-8 replaced).
    pub name: String,
    /// `(peer, time left)`; `None` = never expires (`--dpa 0`).
    pub peers: Vec<(SocketAddrV4, Option<Duration>)>,
}

/// One finished lookup traversal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentLookup {
    /// The service name (invalid UTF-8 replaced).
    pub name: String,
    /// When it ended, in milliseconds since the Unix epoch.
    pub ended_unix_ms: u64,
    /// How long the traversal took.
    pub took: Duration,
    /// Peers found.
    pub peers: usize,
    /// Queries it sent.
    pub queries: usize,
}

/// The DHT as the DHT thread sees it at one moment, bounded in size.
#[derive(Clone, Debug, Default)]
pub struct DhtStatus {
    /// The node id.
    pub id: [u8; 20],
    /// Bootstrap configured and finished with contacts, or the table has contacts, or no
    /// bootstrap node was given (a first grape is ready alone).
    pub bootstrapped: bool,
    /// Every routing-table contact (at most the table's capacity, 640).
    pub contacts: Vec<ContactStatus>,
    /// Stored names (all of them).
    pub names: usize,
    /// Stored peer entries (all names).
    pub peers: usize,
    /// Stored BEP 44 items.
    pub items: usize,
    /// At most [`MAX_LISTED_NAMES`] of the stored names, each with at most
    /// [`MAX_LISTED_PEERS`] peers.
    pub stored: Vec<StoredName>,
    /// The last [`RECENT_LOOKUPS`] lookup traversals, newest first.
    pub recent_lookups: Vec<RecentLookup>,
    /// Datagrams in and out per second over the last [`TRAFFIC_SECONDS`] seconds, oldest
    /// first.
    pub traffic: Vec<u64>,
    /// Totals since start.
    pub counters: DhtCounters,
    /// Lookup traversal durations.
    pub traversal_seconds: HistogramSnapshot,
    /// Queries sent per lookup traversal.
    pub traversal_queries: HistogramSnapshot,
}

/// Names listed in a status (the count says how many there are).
pub const MAX_LISTED_NAMES: usize = 200;
/// Peers listed per name.
pub const MAX_LISTED_PEERS: usize = 20;
/// Lookups kept for the status page.
pub const RECENT_LOOKUPS: usize = 32;
/// Seconds of the traffic sparkline.
pub const TRAFFIC_SECONDS: usize = 60;

/// Datagrams per second over the last [`TRAFFIC_SECONDS`] seconds, kept by the DHT thread.
#[derive(Debug)]
pub(super) struct Traffic {
    /// `(second, datagrams)` per slot, `second % TRAFFIC_SECONDS` the slot.
    slots: [(u64, u64); TRAFFIC_SECONDS],
}

impl Default for Traffic {
    fn default() -> Self {
        // Second `u64::MAX` is never current: every slot starts empty.
        Traffic {
            slots: [(u64::MAX, 0); TRAFFIC_SECONDS],
        }
    }
}

impl Traffic {
    /// Counts one datagram at `second` (since the DHT thread started).
    pub(super) fn count(&mut self, second: u64) {
        if let Some(slot) = self
            .slots
            .get_mut((second % TRAFFIC_SECONDS as u64) as usize)
        {
            if slot.0 != second {
                *slot = (second, 0);
            }
            slot.1 += 1;
        }
    }

    /// The series ending at `now` (second), oldest first; quiet seconds are 0.
    pub(super) fn series(&self, now: u64) -> Vec<u64> {
        (0..TRAFFIC_SECONDS as u64)
            .rev()
            .map(|ago| {
                let second = now.wrapping_sub(ago);
                self.slots
                    .get((second % TRAFFIC_SECONDS as u64) as usize)
                    .filter(|slot| slot.0 == second && ago <= now)
                    .map_or(0, |slot| slot.1)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_per_bucket_with_an_infinite_one() {
        let h = AtomicHistogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 7.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert!((s.sum - 10.0).abs() < 1e-9);
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 1), (f64::INFINITY, 1)]);
    }

    #[test]
    fn counters_read_the_krpc_method() {
        let mut c = DhtCounters::default();
        c.received(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash3:svce1:q9:get_peers1:t2:aa1:y1:qe",
        );
        c.received(b"d1:eli201e5:Errore1:t2:aa1:y1:ee");
        c.received(b"garbage");
        c.sent(b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:aa1:y1:qe");
        assert_eq!(c.queries_in[KrpcMethod::GetPeers as usize], 1);
        assert_eq!(c.queries_out[KrpcMethod::Ping as usize], 1);
        assert_eq!((c.errors_in, c.malformed_in), (1, 1));
        assert_eq!((c.packets_in, c.packets_out), (3, 1));
    }

    #[test]
    fn traffic_forgets_old_seconds() {
        let mut t = Traffic::default();
        t.count(5);
        t.count(5);
        t.count(6);
        let series = t.series(6);
        assert_eq!(series.len(), TRAFFIC_SECONDS);
        assert_eq!(&series[TRAFFIC_SECONDS - 2..], &[2, 1]);
        // 60 s later slot 5 holds another second's count.
        t.count(65);
        assert_eq!(t.series(65)[TRAFFIC_SECONDS - 1], 1);
        // Second 5's two datagrams left the window; second 6's one is its oldest second.
        assert_eq!(t.series(65).first(), Some(&1));
        assert_eq!(t.series(65).iter().sum::<u64>(), 2);
    }
}
