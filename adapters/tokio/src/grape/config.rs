//! The grape's configuration: what the `grape` command line (docs/protocol.md §2) sets
//! ([`GrapeConfig`]), shared by the HTTP API and the DHT task, and the settings of the HTTP API
//! itself ([`ApiConfig`]), which [`GrapeConfig::api_config`] derives. Every other grape module
//! reads these; this one reads none of them.
//!
//! Defaults are the *documented* ones of grenache-grape (`Grape.js:19-31`: peers expire after
//! 120 s, payloads are limited to 8192 bytes, 5000 tables and values, node liveness 5 min), not the
//! values the 1.0.0 CLI ends up with by accident (no expiry, no limit, 1000, 15 min:
//! docs/protocol.md §13.1).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::limits::{AllowList, MinProgress};

/// Default `--dht_peer_maxAge`: announced peers expire after this long (0.67–1.33× of it).
pub const DEFAULT_PEER_MAX_AGE: Duration = Duration::from_millis(120_000);
/// Default `--dht_nodeLiveness`: routing-table liveness check period.
pub const DEFAULT_NODE_LIVENESS: Duration = Duration::from_millis(300_000);
/// Default `--check_maxPayloadSize`, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 8192;
/// Default `--dht_maxTables`: lookup answers kept for reuse ([`ApiConfig::max_reused_lookups`]).
pub const DEFAULT_MAX_TABLES: usize = 5000;
/// Default `--dht_maxValues`: stored BEP 44 items.
pub const DEFAULT_MAX_VALUES: usize = 5000;
/// Default `--dht_concurrency`: queries in flight per traversal. The Node grape ignores the flag
/// and always uses k-rpc's 16 (docs/protocol.md §13.2).
pub const DEFAULT_DHT_CONCURRENCY: usize = 16;

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

/// Settings of [`super::serve_api`]: the HTTP API's limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body in bytes (`--check_maxPayloadSize`, 8192 by default): a larger
    /// body gets `413 ERR_GRAPE_PAYLOAD_SIZE` and the connection is closed without reading the
    /// rest. Unlike the Node 1.0.0 CLI there is always a limit (docs/protocol.md §13.1).
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
    /// Event loops serving the connections (`grape --threads`): current-thread runtimes on
    /// threads of their own, none stealing work from another (`crate::loops`); the caps above
    /// hold across them. 0 serves on the runtime that runs [`super::serve_api`]. Default:
    /// one per core but one, at least one ([`crate::loops::default_threads`]).
    pub threads: usize,
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
            threads: crate::loops::default_threads(),
        }
    }
}

/// Everything a grape is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrapeConfig {
    /// `-b/--bind`: the address the HTTP API listens on (`None` = all interfaces, IPv6 and IPv4).
    /// As in Node it is also the host the DHT stores for its own announces
    /// (docs/protocol.md §13.5); the UDP socket always binds 0.0.0.0.
    pub bind: Option<String>,
    /// `--dp/--dht_port`: the UDP port of the DHT (0 = any free port).
    pub dht_port: u16,
    /// `--aph/--api_port`: the TCP port of the HTTP API (never 0).
    pub api_port: u16,
    /// `--bn/--bootstrap`: the nodes to bootstrap from (may be empty: an isolated grape).
    pub bootstrap: Vec<BootstrapNode>,
    /// `--dc/--dht_concurrency`: queries in flight per traversal.
    pub dht_concurrency: usize,
    /// `--dht_maxTables`: lookup answers kept for reuse, one per name
    /// ([`ApiConfig::max_reused_lookups`]). bittorrent-dht caches per-target traversal
    /// tables under this bound; this grape's cache of per-target traversal results is the
    /// coalescer's, so the flag bounds that.
    pub dht_max_tables: usize,
    /// `--dht_maxValues`: BEP 44 items stored at most, shared fairly between the hosts that
    /// put them. At most [`crate::grape::node::ITEMS`] (the DHT refuses to start above it).
    pub dht_max_values: usize,
    /// `--dpa/--dht_peer_maxAge`: how long announced peers live after their last announce; zero =
    /// never expire. Exact here; the Node grape keeps them 0.67–1.33 × as long (record-cache
    /// generations, docs/protocol.md §4.4) and also answers lookups from a cache that lives half as
    /// long (`Grape.js:33-36`). This grape has no such cache: a lookup answers what the DHT holds
    /// (give or take [`GrapeConfig::lookup_reuse`]; `host/tests/grape_interop.rs` checks the expiry
    /// against both).
    pub dht_peer_max_age: Duration,
    /// `--dnl/--dht_nodeLiveness`: how long the routing table may go unchanged before its nodes
    /// are pinged.
    pub dht_node_liveness: Duration,
    /// `--check_maxPayloadSize`: the largest accepted HTTP request body, in bytes.
    pub max_payload: usize,
    /// `--cache_maxAge`: accepted for compatibility and unused, as in the Node grape.
    pub cache_max_age: Option<u64>,
    /// `--lookup_reuse` (an extension): how long a non-empty `/lookup` answer may be given
    /// again without a new traversal ([`ApiConfig::lookup_reuse`]).
    pub lookup_reuse: Duration,
    /// `--api-allow` (an extension): the client networks that may connect to the HTTP API
    /// ([`ApiConfig::allow`]; empty: everyone).
    pub api_allow: AllowList,
    /// `--threads` (an extension): event loops serving the HTTP API ([`ApiConfig::threads`]).
    pub threads: usize,
}

impl GrapeConfig {
    /// A configuration with the documented defaults, no bootstrap nodes and no bind address.
    pub fn new(dht_port: u16, api_port: u16) -> Self {
        GrapeConfig {
            bind: None,
            dht_port,
            api_port,
            bootstrap: Vec::new(),
            dht_concurrency: DEFAULT_DHT_CONCURRENCY,
            dht_max_tables: DEFAULT_MAX_TABLES,
            dht_max_values: DEFAULT_MAX_VALUES,
            dht_peer_max_age: DEFAULT_PEER_MAX_AGE,
            dht_node_liveness: DEFAULT_NODE_LIVENESS,
            max_payload: DEFAULT_MAX_PAYLOAD,
            cache_max_age: None,
            lookup_reuse: DEFAULT_LOOKUP_REUSE,
            api_allow: AllowList::any(),
            threads: crate::loops::default_threads(),
        }
    }

    /// The HTTP API settings this configuration implies (the payload limit, lookup reuse and
    /// its cap, the peer TTL for the announcer record; timeouts and connection caps keep their
    /// defaults).
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            max_payload: self.max_payload,
            lookup_reuse: self.lookup_reuse,
            max_reused_lookups: self.dht_max_tables,
            announce_ttl: self.dht_peer_max_age,
            allow: self.api_allow.clone(),
            threads: self.threads,
            ..ApiConfig::default()
        }
    }
}

/// One `host:port` entry of `--bootstrap`. The host is kept as written (an IPv4 address or a
/// DNS name, resolved to IPv4 when the DHT queries it, like Node's `dns.lookup` at query time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BootstrapNode {
    /// IPv4 address or host name.
    pub host: String,
    /// UDP port (1..=65535).
    pub port: u16,
}

impl fmt::Display for BootstrapNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Why a `--bootstrap` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapError {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid bootstrap node {:?}: {} (expected host:port, e.g. 127.0.0.1:20001)",
            self.entry, self.reason
        )
    }
}

impl std::error::Error for BootstrapError {}

impl FromStr for BootstrapNode {
    type Err = BootstrapError;

    /// Parses `host:port`. Stricter than Node (which splits on `:` and takes whatever comes
    /// out, so a typo only shows as a silent bootstrap failure): the port must be 1..=65535,
    /// the host an IPv4 address or a DNS name; IPv6 is refused (the DHT is IPv4-only).
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let fail = |reason| BootstrapError {
            entry: entry.to_owned(),
            reason,
        };
        let (host, port) = entry
            .split_once(':')
            .ok_or_else(|| fail("missing ':port'"))?;
        if port.contains(':') {
            return Err(fail("more than one ':' (IPv6 addresses are not supported)"));
        }
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        {
            return Err(fail("the host must be an IPv4 address or a DNS name"));
        }
        if port.is_empty() {
            return Err(fail("empty port"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| fail("the port must be a number from 1 to 65535"))?;
        if port == 0 {
            return Err(fail("the port must be a number from 1 to 65535"));
        }
        Ok(BootstrapNode {
            host: host.to_owned(),
            port,
        })
    }
}

/// Parses a `--bootstrap` list: comma-separated `host:port` entries; empty entries are dropped
/// (as Node does, so `''` and `'a:1,'` work) and blanks around an entry are trimmed.
pub fn parse_bootstrap(list: &str) -> Result<Vec<BootstrapNode>, BootstrapError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grape_flags_reach_the_api() {
        let mut grape = GrapeConfig::new(20001, 30001);
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
    fn bootstrap_lists_parse() {
        assert_eq!(parse_bootstrap(""), Ok(vec![]));
        assert_eq!(parse_bootstrap(",,"), Ok(vec![]));
        let nodes = parse_bootstrap("127.0.0.1:20001, grape-2.local:20002,").unwrap_or_default();
        assert_eq!(
            nodes,
            vec![
                BootstrapNode {
                    host: "127.0.0.1".into(),
                    port: 20001
                },
                BootstrapNode {
                    host: "grape-2.local".into(),
                    port: 20002
                }
            ]
        );
        assert_eq!(nodes[0].to_string(), "127.0.0.1:20001");
    }

    #[test]
    fn bad_bootstrap_entries_say_why() {
        for (list, reason) in [
            ("127.0.0.1", "missing ':port'"),
            (":20001", "empty host"),
            ("127.0.0.1:", "empty port"),
            ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
            (
                "127.0.0.1:70000",
                "the port must be a number from 1 to 65535",
            ),
            ("127.0.0.1:x", "the port must be a number from 1 to 65535"),
            (
                "::1:20001",
                "more than one ':' (IPv6 addresses are not supported)",
            ),
            ("a b:1", "the host must be an IPv4 address or a DNS name"),
        ] {
            let err = parse_bootstrap(&format!("127.0.0.1:1,{list}")).err();
            assert_eq!(err.as_ref().map(|e| e.reason), Some(reason), "for {list}");
            assert_eq!(err.map(|e| e.entry), Some(list.to_owned()));
        }
        let msg = parse_bootstrap("nope").err().map(|e| e.to_string());
        assert_eq!(
            msg.as_deref(),
            Some("invalid bootstrap node \"nope\": missing ':port' (expected host:port, e.g. 127.0.0.1:20001)")
        );
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = GrapeConfig::new(20001, 30001);
        assert_eq!(c.dht_peer_max_age, Duration::from_secs(120));
        assert_eq!(c.dht_node_liveness, Duration::from_secs(300));
        assert_eq!(c.max_payload, 8192);
        assert_eq!((c.dht_max_tables, c.dht_max_values), (5000, 5000));
        assert_eq!(c.api_config().max_payload, 8192);
    }
}
