//! A DHT node: the engine of a grape, and of a board's light client.
//!
//! [`Node`] ties the pieces of this crate together — KRPC ([`crate::wire::krpc`]), the routing
//! table ([`crate::dht::table`]), iterative lookups ([`crate::dht::lookup`]), the announce store
//! ([`crate::dht::store`]), tokens ([`crate::dht::token`]) and BEP44 items ([`crate::dht::bep44`])
//! — into the behaviour of a bittorrent-dht 10.0.0 node as `grenache-grape` 1.0.0 runs it (its
//! announce, lookup, store and liveness behaviour; the Node interop tests in
//! `host/tests/grape_interop.rs` pin it). It is sans-IO, like every engine here:
//!
//! ```text
//!   datagram in ─► handle_datagram(now, from, bytes, reply_buf) ─► Option<reply length>
//!   commands    ─► lookup / announce / unannounce / put_* / get / bootstrap ─► OpId
//!   then drain  ─► poll_transmit(now, buf) ─► Option<Transmit>   (queries to send)
//!               ─► poll_event()           ─► Option<Event>      (finished operations)
//!   and wake at ─► poll_timeout()         ─► Option<Instant>, then handle_timeout(now)
//! ```
//!
//! Answers to queries are written at once into the caller's buffer: they depend only on the
//! datagram and the node's state, so nothing is queued. Queries are produced lazily by
//! [`Node::poll_transmit`] from the state of the running operations, so no send queue exists
//! either: memory is the sum of the const capacities below, nothing else.
//!
//! # Capacities (const generics)
//! * `TABLE`: routing table slots (K = 20 per bucket).
//! * `NAMES`, `PEERS`: announce store: names and peer entries in all.
//! * `ITEMS`: BEP44 items kept (each up to about 1 KiB).
//! * `OPS`: operations (lookups, announces, puts, gets, bootstrap) running at once.
//! * `CANDIDATES`: candidates per lookup (≥ 2·K recommended).
//! * `INFLIGHT`: outstanding queries of all operations together.
//! * `LOOKUP_PEERS` (default [`MAX_LOOKUP_PEERS`]): peers one lookup collects, in every
//!   operation slot. A client that only announces never reads them: 0 saves 600 bytes a slot.
//! * `VALUE` (default [`bep44::MAX_V_LEN`]): bytes of the BEP44 value buffer of every
//!   operation slot (puts and gets). 0 for a client that never puts or gets: 1000 bytes a
//!   slot; puts of larger values are refused, larger items found are ignored.
//! * `PINGS` (default [`MAX_PENDING_PINGS`]): pings waiting for a free transaction slot
//!   (about 80 bytes each); a small table needs few.
//! * `SOURCES` (default [`DEFAULT_SOURCES`]): source IPs whose answer budget
//!   ([`NodeConfig::answer_limit`], [`crate::dht::ratelimit`]) is tracked, about 32 bytes each; 0
//!   turns the limit off (a board's light client).
//!
//! # Differences from the Node grape, all interoperable
//! * Expiry of announced peers is exact ([`NodeConfig::peer_ttl`], default 120 s, the
//!   documented default; the 1.0.0 CLI never expires anything, docs/protocol.md §13.1).
//! * Answers carry the `K` closest nodes, not the whole routing table (docs/protocol.md §13.6).
//! * A lookup does not wait 2 s for a dead node when the closest live ones have answered
//!   ([`crate::dht::lookup`]).
//! * Every announce and put runs its traversal; Node caches the per-target token table for
//!   5 minutes. Traversals here are cheap (no dead-node stalls), and fresh tokens never go
//!   stale.
//! * Malformed datagrams are dropped; none of them can crash the node (docs/protocol.md §13.3).
//!
//! # Hardening against hosts on the same network (also differences from Node)
//! * Queries carry random 4-byte transaction ids ([`krpc::QUERY_TID_LEN`]; Node peers echo
//!   `t` verbatim), and an answer counts only from the exact address (IP and port) the query
//!   went to: k-rpc-socket's 16-bit counter matched on the IP alone lets another process on
//!   that host, or anyone guessing, answer first.
//! * A node that only sent us a query is pinged and enters the routing table when it answers
//!   ([`MAX_VERIFY_INFLIGHT`] such pings at once): made-up ids and dead addresses cannot fill
//!   the table. Known live contacts are never evicted for newcomers (ping-before-evict).
//! * A bucket holds at most [`NodeConfig::max_per_ip_in_bucket`] nodes of one IP and
//!   [`NodeConfig::max_per_subnet_in_bucket`] of one /24.
//! * Every traversal also queries the bootstrap nodes, wherever their ids are, and announces
//!   and puts go to them when they answered with a token ([`crate::dht::lookup::Lookup::pin`]):
//!   Sybil ids next to a name cannot hide what the operator's trusted grapes hold.
//! * Answers to one source IP are bounded by [`NodeConfig::answer_limit`]
//!   ([`crate::dht::ratelimit`]): an answer over budget is not sent, and a query from a source
//!   with no budget left is dropped unprocessed. A routing-table contact (an address that
//!   answered our query) gets the larger [`NodeConfig::contact_answer_limit`].
//! * The `unannounce` query ([`crate::wire::krpc::UNANNOUNCE`]) is an extension: a node that
//!   receives it with a valid token removes the (source IP, port) entry; Node grapes ignore
//!   unknown queries.

use crate::addr::{PeerAddr, Transmit};
use crate::dht::bep44::{self, ItemStore, Key, PutError};
use crate::dht::id::{NodeId, ID_LEN};
use crate::dht::lookup::{
    Lookup, LookupAction, LookupConfig, ResponseOutcome, MAX_TARGET_LEN, MAX_TOKEN_LEN,
};
use crate::dht::ratelimit::{RateLimit, SourceLimiter, DEFAULT_SOURCES};
use crate::dht::store::{AnnounceStore, Source, StoreError};
use crate::dht::table::{Entry, InsertOutcome, RoutingTable, K};
use crate::dht::token::TokenIssuer;
use crate::rng::Rng;
use crate::time::{earliest, Duration, Instant};
use crate::wire::bencode::Encoded;
use crate::wire::krpc::{self, Message, MutablePut, Query, Response, Signed};

/// Most peers a lookup collects and reports (Grape's `_mem.get(ih, 100)`): the default of
/// [`Node`]'s `LOOKUP_PEERS`.
pub const MAX_LOOKUP_PEERS: usize = 100;
/// Most bootstrap addresses a node keeps.
pub const MAX_BOOTSTRAP: usize = 16;
/// Most pings waiting for a free transaction slot (evictions and liveness checks): the
/// default of [`Node`]'s `PINGS`.
pub const MAX_PENDING_PINGS: usize = 32;
/// Most pings in flight at once to nodes that queried us and are not in the routing table yet
/// (they enter it when they answer): a query flood from made-up ids costs at most this many
/// of the node's transaction slots, for a query timeout each.
pub const MAX_VERIFY_INFLIGHT: usize = 4;
/// A reply buffer of this size holds every answer the node writes (K nodes, 100 values, a
/// 1000-byte BEP44 value with its signature). Smaller buffers work: what does not fit is not
/// answered.
pub const REPLY_BUF_LEN: usize = 1500;
/// Peers written into one `get_peers` answer, so that it fits [`REPLY_BUF_LEN`] (Node sends
/// every stored peer, docs/protocol.md §13.7).
pub const MAX_VALUES_IN_ANSWER: usize = 100;

/// Tuning of a [`Node`]. [`NodeConfig::DEFAULT`] has the documented Grape defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeConfig {
    /// Traversal tuning (K, concurrency, query and stall timeouts).
    pub lookup: LookupConfig,
    /// How long an announced peer is kept (`--dht_peer_maxAge`, 120 s).
    pub peer_ttl: Duration,
    /// A routing-table node not heard from for this long is pinged, and removed if it does not
    /// answer (`--dht_nodeLiveness`, 5 min).
    pub node_liveness: Duration,
    /// How often the liveness sweep runs.
    pub maintenance_interval: Duration,
    /// The address given with `-b`: when set, an announce also stores `host:port` in this
    /// node's own store, as bittorrent-dht does (`dht:406-413`).
    pub host: Option<[u8; 4]>,
    /// What the node may answer one source IP ([`RateLimit::DEFAULT`]: 64 KiB/s and 100
    /// answers/s, bursts of 256 KiB and 400): answers over it are not sent, and queries from a
    /// source with no budget left are dropped unprocessed. Node answers everything.
    pub answer_limit: RateLimit,
    /// What the node may answer a routing-table contact, i.e. a source address (IP and port)
    /// that answered one of our queries ([`RateLimit::CONTACT_DEFAULT`]: 8 MiB/s and 10,000
    /// answers/s): a peer grape announcing for many workers at once is never limited, while a
    /// forged source gets [`NodeConfig::answer_limit`].
    pub contact_answer_limit: RateLimit,
    /// Most nodes of one routing-table bucket from one IP address (10, half of K): one host
    /// with many ports and made-up ids cannot own a bucket, e.g. the one around a service
    /// name. Half of K and per bucket rather than per table, so that test networks of dozens
    /// of grapes on 127.0.0.1 still route: only the two farthest buckets are ever cut, and
    /// lookups reach those parts of the id space through the nodes they hold.
    pub max_per_ip_in_bucket: usize,
    /// Most nodes of one routing-table bucket from one IPv4 /24 (16): a subnet cannot own a
    /// whole bucket, while a deployment of many grapes in one private /24 loses at most 4 of
    /// the 20 places of its fullest buckets.
    pub max_per_subnet_in_bucket: usize,
    /// BEP 44 items kept at most (`--dht_maxValues`); capped at the node's `ITEMS`.
    pub max_items: usize,
}

impl NodeConfig {
    /// The documented Grape defaults.
    pub const DEFAULT: NodeConfig = NodeConfig {
        lookup: LookupConfig::DEFAULT,
        peer_ttl: Duration::from_secs(120),
        node_liveness: Duration::from_secs(5 * 60),
        maintenance_interval: Duration::from_secs(60),
        host: None,
        answer_limit: RateLimit::DEFAULT,
        contact_answer_limit: RateLimit::CONTACT_DEFAULT,
        max_per_ip_in_bucket: K / 2,
        max_per_subnet_in_bucket: 16,
        max_items: usize::MAX,
    };
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::DEFAULT
    }
}

/// The handle of an operation; its result arrives as an [`Event`] carrying the same handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpId(u32);

impl OpId {
    /// The raw value (unique among the operations of one node for 2^16 reuses of a slot).
    pub const fn as_u32(self) -> u32 {
        self.0
    }
}

/// Why an operation could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// `OPS` operations are already running.
    Busy,
    /// The name or key is empty or longer than [`MAX_TARGET_LEN`].
    BadTarget,
    /// Port 0.
    BadPort,
    /// The value is empty or longer than BEP44 allows (1000 bytes) or than the node's `VALUE`
    /// capacity, or a salt over 64 bytes.
    BadValue,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StartError::Busy => "too many DHT operations running",
            StartError::BadTarget => "service name or key empty or too long",
            StartError::BadPort => "port 0",
            StartError::BadValue => "value empty or too large",
        })
    }
}

impl core::error::Error for StartError {}

/// Why an announce, unannounce or put failed, with Node's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpError {
    /// No node answered the traversal with a token: `"No nodes to query"`.
    NoNodes,
    /// Every announce/put query failed: `"All queries failed"`.
    AllFailed,
    /// Every put failed and one failed with a KRPC 3xx error (301 CAS mismatch, 302 sequence
    /// number less than current), which Grape's HTTP API reports as that status.
    Krpc(i64),
}

impl OpError {
    /// The message Grape's HTTP API answers with.
    pub fn message(&self) -> &'static str {
        match self {
            OpError::NoNodes => "No nodes to query",
            OpError::AllFailed => "All queries failed",
            OpError::Krpc(301) => "301 CAS mismatch, re-read and try again",
            OpError::Krpc(302) => "302 sequence number less than current",
            OpError::Krpc(_) => "All queries failed",
        }
    }
}

impl core::fmt::Display for OpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for OpError {}

/// A BEP44 item found by [`Node::get`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FoundItem<'a> {
    /// Id of the node that answered (our own id for a local hit).
    pub id: NodeId,
    /// Its token (`None` for a local hit: Grape renders `"token":null`).
    pub token: Option<&'a [u8]>,
    /// The raw bencoded value.
    pub v: &'a [u8],
    /// `k`, `seq` and `sig` of a mutable item.
    pub signed: Option<SignedItem<'a>>,
    /// Whether it came from this node's own store.
    pub local: bool,
}

/// The mutable part of a [`FoundItem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SignedItem<'a> {
    /// Public key.
    pub k: &'a [u8; bep44::PUBLIC_KEY_LEN],
    /// Sequence number.
    pub seq: i64,
    /// Signature.
    pub sig: &'a [u8; bep44::SIGNATURE_LEN],
}

/// A finished operation. Borrowed data stays valid until the next call on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event<'a> {
    /// The bootstrap traversal ended; `nodes` is the routing table's size.
    Bootstrapped {
        /// The operation.
        op: OpId,
        /// Nodes in the routing table.
        nodes: usize,
    },
    /// A lookup ended: the peers of this node's store and those every answer carried, at most
    /// the node's `LOOKUP_PEERS` (default [`MAX_LOOKUP_PEERS`]), in random order.
    LookupDone {
        /// The operation.
        op: OpId,
        /// What was found (possibly nothing).
        peers: &'a [PeerAddr],
    },
    /// An announce ended: the number of nodes that acknowledged it.
    AnnounceDone {
        /// The operation.
        op: OpId,
        /// Acknowledgements, or why none came.
        result: Result<usize, OpError>,
    },
    /// An unannounce ended: the number of nodes that acknowledged it.
    UnannounceDone {
        /// The operation.
        op: OpId,
        /// Acknowledgements, or why none came.
        result: Result<usize, OpError>,
    },
    /// A put ended: the item's key.
    PutDone {
        /// The operation.
        op: OpId,
        /// The key, or why no node stored it.
        result: Result<Key, OpError>,
    },
    /// A get ended.
    GetDone {
        /// The operation.
        op: OpId,
        /// The item, if any node (or this one) had it.
        item: Option<FoundItem<'a>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bootstrap,
    Lookup,
    Announce,
    Unannounce,
    Put,
    Get,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The traversal runs.
    Traverse,
    /// Announce/put queries go to the token-bearing nodes of the traversal.
    Send,
    /// Finished, waiting for [`Node::poll_event`].
    Done,
}

/// Per-target state of the send phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendState {
    Pending,
    InFlight,
    Acked,
    Failed,
}

#[derive(Clone, Debug)]
struct Target {
    id: NodeId,
    addr: PeerAddr,
    token: heapless::Vec<u8, MAX_TOKEN_LEN>,
    state: SendState,
}

/// The first `N` bytes of `bytes`: all of them when they fit. Callers check that what they
/// keep fits; cutting keeps the copy total.
fn prefix<const N: usize>(bytes: &[u8]) -> heapless::Vec<u8, N> {
    heapless::Vec::from_slice(bytes.get(..N).unwrap_or(bytes)).unwrap_or_default()
}

/// The value of a put, or the item a get found (`V`: the node's `VALUE` capacity).
#[derive(Clone)]
struct Value<const V: usize> {
    v: heapless::Vec<u8, V>,
    mutable: bool,
    k: [u8; bep44::PUBLIC_KEY_LEN],
    sig: [u8; bep44::SIGNATURE_LEN],
    seq: i64,
    /// `None`: no salt (a put sends no `salt` key).
    salt: Option<heapless::Vec<u8, { bep44::MAX_SALT_LEN }>>,
    cas: Option<i64>,
    /// For a get: who answered, and its token.
    from: NodeId,
    token: heapless::Vec<u8, MAX_TOKEN_LEN>,
    local: bool,
    found: bool,
}

impl<const V: usize> Value<V> {
    const EMPTY: Value<V> = Value {
        v: heapless::Vec::new(),
        mutable: false,
        k: [0; bep44::PUBLIC_KEY_LEN],
        sig: [0; bep44::SIGNATURE_LEN],
        seq: 0,
        salt: None,
        cas: None,
        from: NodeId([0; ID_LEN]),
        token: heapless::Vec::new(),
        local: false,
        found: false,
    };

    fn v(&self) -> &[u8] {
        &self.v
    }

    fn salt(&self) -> Option<&[u8]> {
        self.salt.as_deref()
    }
}

struct Op<const C: usize, const P: usize, const V: usize> {
    used: bool,
    generation: u16,
    kind: Kind,
    phase: Phase,
    lookup: Lookup<C>,
    port: u16,
    peers: heapless::Vec<PeerAddr, P>,
    /// Which answer carried each of `peers` ([`source_tag`]; [`LOCAL_SOURCE`] for this
    /// node's store), in step with it.
    sources: heapless::Vec<u8, P>,
    /// The send phase's targets (announces and puts).
    targets: heapless::Vec<Target, C>,
    value: Value<V>,
    /// The put's key, or the get's target.
    key: Key,
    /// The first 3xx KRPC error a put received.
    krpc_error: Option<i64>,
}

/// Who waits for an outstanding query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Traversal query of operation `op` (slot index).
    Traverse { op: usize, generation: u16 },
    /// Announce/put/unannounce query to `targets[target]` of operation `op`.
    Send {
        op: usize,
        generation: u16,
        target: usize,
    },
    /// A ping deciding whether `stale` stays in the table or `candidate` replaces it.
    Evict {
        stale: NodeId,
        candidate: NodeId,
        candidate_addr: PeerAddr,
    },
    /// A liveness ping of a table node.
    Liveness { id: NodeId },
    /// A ping of a node that sent us a query: it enters the table if it answers.
    Verify,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// Random, see [`krpc::QUERY_TID_LEN`].
    tid: u32,
    to: PeerAddr,
    expect: Option<NodeId>,
    deadline: Instant,
    owner: Owner,
}

#[derive(Clone, Copy, Debug)]
struct PendingPing {
    to: PeerAddr,
    id: NodeId,
    owner: Owner,
}

/// A DHT node. See the [module docs](self).
pub struct Node<
    R: Rng,
    const TABLE: usize,
    const NAMES: usize,
    const PEERS: usize,
    const ITEMS: usize,
    const OPS: usize,
    const CANDIDATES: usize,
    const INFLIGHT: usize,
    const LOOKUP_PEERS: usize = MAX_LOOKUP_PEERS,
    const VALUE: usize = { bep44::MAX_V_LEN },
    const PINGS: usize = MAX_PENDING_PINGS,
    const SOURCES: usize = DEFAULT_SOURCES,
> {
    id: NodeId,
    config: NodeConfig,
    rng: R,
    table: RoutingTable<TABLE>,
    store: AnnounceStore<NAMES, PEERS>,
    items: ItemStore<ITEMS>,
    tokens: TokenIssuer,
    bootstrap: heapless::Vec<PeerAddr, MAX_BOOTSTRAP>,
    ops: [Op<CANDIDATES, LOOKUP_PEERS, VALUE>; OPS],
    /// Round-robin start of [`Node::poll_transmit`] over `ops`.
    next_op: usize,
    inflight: [Option<InFlight>; INFLIGHT],
    pings: [Option<PendingPing>; PINGS],
    next_maintenance: Instant,
    bootstrap_op: Option<OpId>,
    /// The budget of answers per source IP.
    limiter: SourceLimiter<SOURCES>,
    /// Queries dropped unanswered because their source was over its budget (wrapping).
    rate_limited: u32,
}

impl<
        R: Rng,
        const TABLE: usize,
        const NAMES: usize,
        const PEERS: usize,
        const ITEMS: usize,
        const OPS: usize,
        const CANDIDATES: usize,
        const INFLIGHT: usize,
        const LOOKUP_PEERS: usize,
        const VALUE: usize,
        const PINGS: usize,
        const SOURCES: usize,
    >
    Node<
        R,
        TABLE,
        NAMES,
        PEERS,
        ITEMS,
        OPS,
        CANDIDATES,
        INFLIGHT,
        LOOKUP_PEERS,
        VALUE,
        PINGS,
        SOURCES,
    >
{
    /// A node with a random id (from `rng`, as bittorrent-dht picks a new one on every start).
    pub fn new(mut rng: R, config: NodeConfig, now: Instant) -> Self {
        let id = NodeId::random(&mut rng);
        Self::with_id(id, rng, config, now)
    }

    /// A node with the given id.
    pub fn with_id(id: NodeId, mut rng: R, config: NodeConfig, now: Instant) -> Self {
        let tokens = TokenIssuer::new(now, &mut rng);
        let store = AnnounceStore::with_hash_seed(rng.next_u32());
        let seed = u64::from(rng.next_u32()) << 32 | u64::from(rng.next_u32());
        let limiter = SourceLimiter::new(seed);
        let mut table = RoutingTable::new(id);
        table.set_address_limits(config.max_per_ip_in_bucket, config.max_per_subnet_in_bucket);
        Node {
            id,
            config,
            rng,
            table,
            store,
            items: ItemStore::with_limit(config.max_items),
            tokens,
            bootstrap: heapless::Vec::new(),
            ops: core::array::from_fn(|_| Op {
                used: false,
                generation: 0,
                kind: Kind::Lookup,
                phase: Phase::Done,
                lookup: Lookup::idle(id, config.lookup, now),
                port: 0,
                peers: heapless::Vec::new(),
                sources: heapless::Vec::new(),
                targets: heapless::Vec::new(),
                value: Value::EMPTY,
                key: [0; 20],
                krpc_error: None,
            }),
            next_op: 0,
            inflight: [None; INFLIGHT],
            pings: [None; PINGS],
            next_maintenance: now.saturating_add(config.maintenance_interval),
            bootstrap_op: None,
            limiter,
            rate_limited: 0,
        }
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable<TABLE> {
        &self.table
    }

    /// The announce store (what this node answers `get_peers` with).
    pub fn store(&self) -> &AnnounceStore<NAMES, PEERS> {
        &self.store
    }

    /// Adds a bootstrap address (`--bn`); `false` if [`MAX_BOOTSTRAP`] are already known.
    pub fn add_bootstrap(&mut self, addr: PeerAddr) -> bool {
        if self.bootstrap().contains(&addr) {
            return true;
        }
        self.bootstrap.push(addr).is_ok()
    }

    /// The bootstrap addresses.
    pub fn bootstrap(&self) -> &[PeerAddr] {
        &self.bootstrap
    }

    /// Starts the bootstrap traversal (`find_node` for our own id, from the bootstrap
    /// addresses and the routing table). Ends with [`Event::Bootstrapped`].
    pub fn start_bootstrap(&mut self, now: Instant) -> Result<OpId, StartError> {
        if let Some(op) = self.bootstrap_op {
            return Ok(op);
        }
        let id = self.id;
        let op = self.start(now, Kind::Bootstrap, id.as_bytes())?;
        self.bootstrap_op = Some(op);
        Ok(op)
    }

    /// Starts a lookup of `name` (a `get_peers` traversal). Ends with [`Event::LookupDone`].
    pub fn lookup(&mut self, now: Instant, name: &[u8]) -> Result<OpId, StartError> {
        let op = self.start(now, Kind::Lookup, name)?;
        // The peers this node stores come first, as bittorrent-dht emits them on next tick.
        if let Some(i) = self.slot_of(op) {
            let mut local = [PeerAddr::new([0; 4], 0); LOOKUP_PEERS];
            let n = self.store.sample(now, name, &mut self.rng, &mut local);
            if let Some(o) = self.ops.get_mut(i) {
                for p in local.iter().take(n) {
                    o.add_peer(*p);
                }
            }
        }
        Ok(op)
    }

    /// Starts an announce of `name` on `port`: a `get_peers` traversal, then `announce_peer`
    /// to every node that answered with a token. Ends with [`Event::AnnounceDone`].
    pub fn announce(&mut self, now: Instant, name: &[u8], port: u16) -> Result<OpId, StartError> {
        if port == 0 {
            return Err(StartError::BadPort);
        }
        let op = self.start(now, Kind::Announce, name)?;
        if let Some(o) = self.slot_of(op).and_then(|i| self.ops.get_mut(i)) {
            o.port = port;
        }
        if let Some(host) = self.config.host {
            // With `-b`, bittorrent-dht stores the announcer itself locally (docs/protocol.md §4.2
            // step 2).
            let _ = self.store.announce(
                now,
                name,
                PeerAddr::new(host, port),
                self.config.peer_ttl,
                Source::Local,
            );
        }
        Ok(op)
    }

    /// Starts an unannounce of `name` on `port` (the extension query): removes the entry
    /// from this node's store and asks the nodes a traversal finds to remove the entry they
    /// keep for this node's address. Ends with [`Event::UnannounceDone`].
    pub fn unannounce(&mut self, now: Instant, name: &[u8], port: u16) -> Result<OpId, StartError> {
        if port == 0 {
            return Err(StartError::BadPort);
        }
        let op = self.start(now, Kind::Unannounce, name)?;
        if let Some(o) = self.slot_of(op).and_then(|i| self.ops.get_mut(i)) {
            o.port = port;
        }
        if let Some(host) = self.config.host {
            self.store
                .remove(name, PeerAddr::new(host, port), Source::Local);
        }
        Ok(op)
    }

    /// Removes `addr` from this node's own store for `name` (what a local `/unannounce`
    /// does before the network part); `true` if it was there, stored by this node itself (an
    /// entry a remote host announced is that host's to remove).
    pub fn remove_local(&mut self, name: &[u8], addr: PeerAddr) -> bool {
        self.store.remove(name, addr, Source::Local)
    }

    /// Starts an immutable put of `raw_v` (a complete bencoded value, at most 1000 bytes):
    /// stores it locally, runs a `get` traversal for its key and sends `put` to every node
    /// that answered with a token. Ends with [`Event::PutDone`].
    pub fn put_immutable(&mut self, now: Instant, raw_v: &[u8]) -> Result<OpId, StartError> {
        if raw_v.is_empty() || !fits::<VALUE>(raw_v.len()) {
            return Err(StartError::BadValue);
        }
        let key = bep44::immutable_key(raw_v);
        // Stored locally first, as bittorrent-dht does (`dht:315`), so that it stays gettable
        // from here even when no remote node takes it. A zero-capacity store just refuses.
        let _ = self.items.put_immutable(raw_v, Source::Local);
        let op = self.start(now, Kind::Put, &key)?;
        if let Some(o) = self.slot_of(op).and_then(|i| self.ops.get_mut(i)) {
            o.key = key;
            o.value = Value::EMPTY;
            o.value.set_v(raw_v);
        }
        Ok(op)
    }

    /// Starts a mutable put, already signed by the caller (see `bep44::sign_mutable`): a
    /// `get` traversal for `sha1(k ‖ salt)` then `put` to every token-bearing node.
    #[allow(clippy::too_many_arguments)]
    pub fn put_mutable(
        &mut self,
        now: Instant,
        k: &[u8; bep44::PUBLIC_KEY_LEN],
        salt: Option<&[u8]>,
        seq: i64,
        sig: &[u8; bep44::SIGNATURE_LEN],
        raw_v: &[u8],
        cas: Option<i64>,
    ) -> Result<OpId, StartError> {
        if raw_v.is_empty()
            || !fits::<VALUE>(raw_v.len())
            || salt.is_some_and(|s| s.len() > bep44::MAX_SALT_LEN)
        {
            return Err(StartError::BadValue);
        }
        let key = bep44::mutable_key(k, salt);
        let op = self.start(now, Kind::Put, &key)?;
        if let Some(o) = self.slot_of(op).and_then(|i| self.ops.get_mut(i)) {
            o.key = key;
            o.value = Value::EMPTY;
            o.value.set_v(raw_v);
            o.value.mutable = true;
            o.value.k = *k;
            o.value.sig = *sig;
            o.value.seq = seq;
            o.value.cas = cas;
            o.value.set_salt(salt);
        }
        Ok(op)
    }

    /// Starts a get of `key`. With `use_local`, an item in this node's store answers at once
    /// (Grape's default; `cache:false` turns it off). For a mutable item pass its `salt`;
    /// mutable answers are only accepted with the `ed25519` feature (a CLI Node grape never
    /// accepts them, docs/protocol.md §13.14). Ends with [`Event::GetDone`].
    pub fn get(
        &mut self,
        now: Instant,
        key: &Key,
        salt: Option<&[u8]>,
        use_local: bool,
    ) -> Result<OpId, StartError> {
        if salt.is_some_and(|s| s.len() > bep44::MAX_SALT_LEN) {
            return Err(StartError::BadValue);
        }
        let op = self.start(now, Kind::Get, key)?;
        let own = self.id;
        let local = if use_local {
            // An item over this node's VALUE capacity is not answered locally: the traversal
            // runs, and finds nothing it can keep either.
            self.items
                .get(key)
                .filter(|item| fits::<VALUE>(item.v.len()))
                .map(|item| {
                    let mut v = Value::EMPTY;
                    v.set_v(item.v);
                    if let Some(m) = item.mutable {
                        v.mutable = true;
                        v.k = *m.k;
                        v.seq = m.seq;
                        v.sig = *m.sig;
                    }
                    v.from = own;
                    v.local = true;
                    v.found = true;
                    v
                })
        } else {
            None
        };
        if let Some(o) = self.slot_of(op).and_then(|i| self.ops.get_mut(i)) {
            o.key = *key;
            o.value = Value::EMPTY;
            o.value.set_salt(salt);
            if let Some(v) = local {
                o.value = v;
                o.value.set_salt(salt);
                o.phase = Phase::Done;
            }
        }
        Ok(op)
    }

    fn start(&mut self, now: Instant, kind: Kind, target: &[u8]) -> Result<OpId, StartError> {
        if target.is_empty() || target.len() > MAX_TARGET_LEN {
            return Err(StartError::BadTarget);
        }
        let Some(i) = self.ops.iter().position(|o| !o.used) else {
            return Err(StartError::Busy);
        };
        let mut closest = [Entry::EMPTY; K];
        let n = self.table.closest(target, &mut closest);
        let seeds = closest
            .iter()
            .take(n)
            .map(|e| (Some(e.id), e.addr))
            .chain(self.bootstrap.iter().map(|a| (None, *a)));
        let op = self.ops.get_mut(i).ok_or(StartError::Busy)?;
        op.lookup
            .restart(target, seeds, now)
            .map_err(|_| StartError::BadTarget)?;
        // The bootstrap nodes are asked in every traversal, and announces and puts go to them
        // too: ids made up next to a name cannot hide what the trusted grapes hold.
        for a in &self.bootstrap {
            op.lookup.pin(*a);
        }
        op.used = true;
        op.generation = op.generation.wrapping_add(1);
        op.kind = kind;
        op.phase = Phase::Traverse;
        op.port = 0;
        op.peers.clear();
        op.sources.clear();
        op.targets.clear();
        op.krpc_error = None;
        Ok(op_id(i, op.generation))
    }

    /// BEP 44 items stored. For operators' statistics.
    pub fn items_len(&self) -> usize {
        self.items.len()
    }

    /// Queries the traversal of `op` has sent: while it runs, and after it ended until its slot
    /// serves another operation (read it right after the operation's event). `None` for an
    /// operation whose slot was reused. For operators' statistics; it changes nothing.
    pub fn queries_sent(&self, op: OpId) -> Option<usize> {
        let i = (op.0 & 0xffff) as usize;
        let generation = (op.0 >> 16) as u16;
        self.ops
            .get(i)
            .filter(|o| o.generation == generation)
            .map(|o| o.lookup.queries_sent())
    }

    /// Queries dropped unanswered, since the node started, because their source IP was over
    /// its answer budget ([`NodeConfig::answer_limit`]); wraps at `u32::MAX`. For operators'
    /// statistics.
    pub fn rate_limited(&self) -> u32 {
        self.rate_limited
    }

    fn slot_of(&self, op: OpId) -> Option<usize> {
        let i = (op.0 & 0xffff) as usize;
        let generation = (op.0 >> 16) as u16;
        self.ops
            .get(i)
            .filter(|o| o.used && o.generation == generation)
            .map(|_| i)
    }

    /// Handles one received datagram from `from`. Returns the length of the answer written
    /// into `reply` (to be sent back to `from`), if the datagram was a query that gets one.
    /// Anything malformed is dropped.
    #[must_use]
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: PeerAddr,
        datagram: &[u8],
        reply: &mut [u8],
    ) -> Option<usize> {
        let message = krpc::parse(datagram).ok()?;
        match message {
            Message::Query { t, id, query } => {
                // A source out of budget gets no answer, so its query is not even processed:
                // nothing stored, no verification ping to an address that may be forged.
                // A routing-table contact answered us from this exact address: it is a DHT
                // node there, and gets the larger budget a busy peer grape needs.
                let limit = if self.table.iter().any(|e| e.addr == from) {
                    self.config.contact_answer_limit
                } else {
                    self.config.answer_limit
                };
                if !self.limiter.would_admit(now, from.ip, 1, &limit) {
                    self.rate_limited = self.rate_limited.wrapping_add(1);
                    return None;
                }
                let len = self.answer(now, from, t, id, query, reply)?;
                // An answer over its source's budget is not sent: no forged source turns the
                // node into an amplifier beyond `NodeConfig::answer_limit`.
                let admitted = self.limiter.admit(now, from.ip, len, &limit);
                if !admitted {
                    self.rate_limited = self.rate_limited.wrapping_add(1);
                }
                admitted.then_some(len)
            }
            Message::Response { t, r } => {
                self.on_answer(now, from, t, Ok(r));
                None
            }
            Message::Error { t, code, .. } => {
                self.on_answer(now, from, t, Err(code));
                None
            }
        }
    }

    /// A node sent us a query. bittorrent-dht adds it to its table at once, so that any host
    /// can fill the table with ids it makes up (and dead addresses). Here a known contact at
    /// its known address is refreshed; anyone else is pinged first (at most
    /// [`MAX_VERIFY_INFLIGHT`] at a time) and enters the table only when it answers, from
    /// that address, with that id.
    fn querier(&mut self, now: Instant, id: NodeId, from: PeerAddr) {
        if id == self.id || from.port == 0 {
            return;
        }
        if self.table.get(&id).is_some_and(|e| e.addr == from) {
            self.table.seen(now, &id);
            return;
        }
        // No ping for a stranger the table would refuse anyway (full of live nodes, or of
        // its address): otherwise every query of such a node would cost a ping.
        if self.table.has_room_for(now, &id, from) {
            self.queue_ping(from, id, Owner::Verify);
        }
    }

    /// Drops `id` from the table after a failed query to `to`, if the table has it at `to`:
    /// a query to the same id at an address some answer named (forged or stale) says nothing
    /// about the contact we know.
    fn drop_if_at(&mut self, id: &NodeId, to: PeerAddr) {
        if self.table.get(id).is_some_and(|e| e.addr == to) {
            self.table.remove(id);
        }
    }

    /// Learns a node that answered one of our queries with a valid id.
    fn learn(&mut self, now: Instant, id: NodeId, addr: PeerAddr) {
        if id == self.id || addr.port == 0 {
            return;
        }
        if let InsertOutcome::PingToEvict { stale, candidate } = self.table.insert(now, id, addr) {
            // Ping the stale node; if it does not answer, the newcomer takes its place.
            let owner = Owner::Evict {
                stale: stale.0,
                candidate: candidate.0,
                candidate_addr: candidate.1,
            };
            self.queue_ping(stale.1, stale.0, owner);
        }
    }

    fn queue_ping(&mut self, to: PeerAddr, id: NodeId, owner: Owner) {
        let already = self
            .pings
            .iter()
            .flatten()
            .any(|p| p.id == id && p.to == to)
            || self.inflight.iter().flatten().any(|f| {
                f.expect == Some(id)
                    && f.to == to
                    && !matches!(f.owner, Owner::Traverse { .. } | Owner::Send { .. })
            });
        if already {
            return;
        }
        // A verification of a querier only takes a free place; the pings that keep the table
        // honest (evictions, liveness) may also take a verification's place, so that a query
        // flood never crowds them out.
        let verify = matches!(owner, Owner::Verify);
        let slot = match self.pings.iter().position(Option::is_none) {
            Some(i) => Some(i),
            None if !verify => self
                .pings
                .iter()
                .position(|p| p.is_some_and(|p| matches!(p.owner, Owner::Verify))),
            None => None,
        };
        if let Some(slot) = slot.and_then(|i| self.pings.get_mut(i)) {
            *slot = Some(PendingPing { to, id, owner });
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        from: PeerAddr,
        t: &[u8],
        id: Option<NodeId>,
        query: Query<'_>,
        reply: &mut [u8],
    ) -> Option<usize> {
        if let Some(id) = id {
            self.querier(now, id, from);
        }
        let own = self.id;
        let written = match query {
            Query::Ping => krpc::encode_response_id(reply, t, &own),
            Query::FindNode { target } => match target {
                None => krpc::encode_known_error(reply, t, &krpc::FIND_NODE_MISSING_TARGET),
                Some(target) => {
                    let mut closest = [Entry::EMPTY; K];
                    let n = self.table.closest(target, &mut closest);
                    krpc::encode_response_nodes(reply, t, &own, nodes_of(&closest, n))
                }
            },
            Query::GetPeers { info_hash } => {
                let Some(name) = info_hash else {
                    return krpc::encode_known_error(reply, t, &krpc::GET_PEERS_MISSING_INFO_HASH)
                        .ok();
                };
                let token = self.tokens.token(from.ip);
                let mut values = [PeerAddr::new([0; 4], 0); MAX_VALUES_IN_ANSWER];
                let n = self.store.sample(now, name, &mut self.rng, &mut values);
                if n > 0 {
                    krpc::encode_response_values(
                        reply,
                        t,
                        &own,
                        &token,
                        values.iter().take(n).copied(),
                    )
                } else {
                    let mut closest = [Entry::EMPTY; K];
                    let n = self.table.closest(name, &mut closest);
                    krpc::encode_response_nodes_token(reply, t, &own, nodes_of(&closest, n), &token)
                }
            }
            Query::AnnouncePeer(a) | Query::Unannounce(a) => {
                let unannounce = matches!(query, Query::Unannounce(_));
                // bittorrent-dht checks the port first, then the presence of info_hash and
                // token, and drops the query silently for each (`dht:552-558`).
                let port = a.effective_port(from.port)?;
                let name = a.info_hash?;
                let token = a.token?;
                if !self.tokens.verify(from.ip, token) {
                    return krpc::encode_known_error(reply, t, &krpc::ANNOUNCE_PEER_BAD_TOKEN).ok();
                }
                let peer = PeerAddr::new(from.ip, port);
                // The entry belongs to the host the query came from: it alone may refresh or
                // remove it, and a flood from it evicts its own entries first.
                let source = Source::Remote(from.ip);
                if unannounce {
                    self.store.remove(name, peer, source);
                } else if let Err(e) =
                    self.store
                        .announce(now, name, peer, self.config.peer_ttl, source)
                {
                    // An empty or over-long name: nothing stored, no answer (Node would
                    // store it, but no client can look such a name up through us). An entry
                    // declined for fairness (store full, another source's entry) is answered
                    // like a stored one, as the reference answers every valid announce.
                    if !matches!(e, StoreError::NotOwner | StoreError::Full) {
                        return None;
                    }
                }
                krpc::encode_response_id(reply, t, &own)
            }
            Query::Get { target } => {
                let target = target?;
                let token = self.tokens.token(from.ip);
                let key: Option<Key> = target.try_into().ok();
                let item = key.and_then(|key| self.items.get(&key));
                match item {
                    Some(item) => {
                        let signed = item.mutable.map(|m| Signed {
                            k: m.k,
                            sig: m.sig,
                            seq: Some(m.seq),
                        });
                        krpc::encode_response_item(reply, t, &own, &token, item.v, signed.as_ref())
                    }
                    None => {
                        let mut closest = [Entry::EMPTY; K];
                        let n = self.table.closest(target, &mut closest);
                        krpc::encode_response_nodes_token(
                            reply,
                            t,
                            &own,
                            nodes_of(&closest, n),
                            &token,
                        )
                    }
                }
            }
            Query::Put(p) => {
                // Silently ignored without a truthy v, an id or a token (`dht:592-600`).
                let v = p.v.filter(|v| v.value.is_truthy())?;
                id?;
                let token = p.token?;
                if !self.tokens.verify(from.ip, token) {
                    return krpc::encode_known_error(reply, t, &krpc::PUT_BAD_TOKEN).ok();
                }
                // The item is stored on behalf of the host the put came from (see `bep44`).
                let result = if p.is_mutable() {
                    match (
                        p.k.and_then(|k| <&[u8; bep44::PUBLIC_KEY_LEN]>::try_from(k).ok()),
                        p.sig
                            .and_then(|s| <&[u8; bep44::SIGNATURE_LEN]>::try_from(s).ok()),
                    ) {
                        (Some(k), Some(sig)) => {
                            if v.raw.len() > bep44::MAX_V_LEN {
                                Err(PutError::PayloadTooLarge)
                            } else {
                                self.items.put_mutable(
                                    k,
                                    p.salt,
                                    p.seq.unwrap_or(0),
                                    sig,
                                    v.raw,
                                    p.cas,
                                    Source::Remote(from.ip),
                                )
                            }
                        }
                        // A key or signature of the wrong length cannot verify.
                        _ => Err(PutError::BadSignature),
                    }
                } else {
                    self.items.put_immutable(v.raw, Source::Remote(from.ip))
                };
                match result {
                    Ok(_) => krpc::encode_response_id(reply, t, &own),
                    Err(e) => {
                        let (code, msg) = e.krpc_error()?;
                        krpc::encode_error(reply, t, code, msg.as_bytes())
                    }
                }
            }
            Query::Unknown(_) => return None,
        };
        written.ok()
    }

    /// An answer (`Ok(r)`) or a KRPC error (`Err(code)`) to one of our queries.
    fn on_answer(
        &mut self,
        now: Instant,
        from: PeerAddr,
        t: &[u8],
        answer: Result<Response<'_>, i64>,
    ) {
        let Some(tid) = krpc::tid32_of(t) else { return };
        // The answer must come from the exact address we asked: k-rpc-socket checks only the
        // IP, which lets any process on that host (or a spoofer guessing its counter) answer.
        let Some(slot) = self
            .inflight
            .iter_mut()
            .find(|f| f.is_some_and(|f| f.tid == tid && f.to == from))
        else {
            return;
        };
        let Some(f) = slot.take() else { return };
        match answer {
            Ok(r) => {
                let Some(rid) = r.id else {
                    self.fail(now, f);
                    return;
                };
                if f.expect.is_some_and(|e| e != rid) {
                    // EUNEXPECTEDNODE: the address now answers with another id.
                    if let Some(e) = f.expect {
                        self.drop_if_at(&e, f.to);
                    }
                    self.fail(now, f);
                    return;
                }
                self.learn(now, rid, from);
                self.table.seen(now, &rid);
                self.on_response(now, f, rid, r);
            }
            Err(code) => {
                if let Owner::Send { op, generation, .. } = f.owner {
                    if (300..400).contains(&code) {
                        if let Some(o) = self.op_mut(op, generation) {
                            o.krpc_error.get_or_insert(code);
                        }
                    }
                }
                self.fail(now, f);
            }
        }
    }

    fn op_mut(
        &mut self,
        i: usize,
        generation: u16,
    ) -> Option<&mut Op<CANDIDATES, LOOKUP_PEERS, VALUE>> {
        self.ops
            .get_mut(i)
            .filter(|o| o.used && o.generation == generation)
    }

    fn on_response(&mut self, now: Instant, f: InFlight, rid: NodeId, r: Response<'_>) {
        match f.owner {
            Owner::Traverse { op, generation } => {
                let Some(o) = self.op_mut(op, generation) else {
                    return;
                };
                let nodes = r.nodes.into_iter().flat_map(|n| n.iter());
                let outcome = o.lookup.on_response(now, f.to, rid, nodes, r.token);
                if outcome != ResponseOutcome::Accepted {
                    return;
                }
                match o.kind {
                    Kind::Lookup | Kind::Announce | Kind::Unannounce => {
                        if let Some(values) = r.values {
                            let source = source_tag(f.to);
                            for p in values.iter() {
                                o.add_peer_from(p, source);
                            }
                        }
                    }
                    Kind::Get => {
                        if let (Some(v), Some(token)) = (r.v, r.token) {
                            o.offer_item(rid, token, v, &r);
                        }
                    }
                    Kind::Bootstrap | Kind::Put => {}
                }
            }
            Owner::Send {
                op,
                generation,
                target,
            } => {
                if let Some(t) = self
                    .op_mut(op, generation)
                    .and_then(|o| o.targets.get_mut(target))
                {
                    t.state = SendState::Acked;
                }
            }
            Owner::Evict { .. } | Owner::Liveness { .. } | Owner::Verify => {
                // `learn` and `seen` above already refreshed the stale node (the eviction
                // candidate is dropped) or inserted the verified querier.
            }
        }
    }

    /// A query failed: KRPC error, unusable answer or timeout.
    fn fail(&mut self, now: Instant, f: InFlight) {
        match f.owner {
            Owner::Traverse { op, generation } => {
                if let Some(o) = self.op_mut(op, generation) {
                    o.lookup.on_failure(now, f.to);
                }
                if let Some(id) = f.expect {
                    // k-rpc drops a node whose traversal query fails (`krpc:264-268`).
                    self.drop_if_at(&id, f.to);
                }
            }
            Owner::Send {
                op,
                generation,
                target,
            } => {
                if let Some(t) = self
                    .op_mut(op, generation)
                    .and_then(|o| o.targets.get_mut(target))
                {
                    t.state = SendState::Failed;
                }
            }
            Owner::Evict {
                stale,
                candidate,
                candidate_addr,
            } => {
                // Not followed up: a newcomer that still found no room (the stale node came
                // back) is tried again when it next sends us something, as any contact.
                let _ = self
                    .table
                    .evict_and_insert(now, &stale, candidate, candidate_addr);
            }
            Owner::Liveness { id } => {
                self.drop_if_at(&id, f.to);
            }
            Owner::Verify => {}
        }
    }

    /// The next query to send, written into `buf` (use [`REPLY_BUF_LEN`] bytes). Call it
    /// until it returns `None` after every input and timeout.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        // Pings first: they keep the table honest and are few. Verifications of queriers are
        // capped so that a query flood from dead addresses cannot hold the lookups' slots.
        while let Some(i) = self.free_inflight() {
            let verifying = self
                .inflight
                .iter()
                .flatten()
                .filter(|f| matches!(f.owner, Owner::Verify))
                .count();
            let Some(p) = self
                .pings
                .iter_mut()
                .find(|p| {
                    p.is_some_and(|p| {
                        verifying < MAX_VERIFY_INFLIGHT || !matches!(p.owner, Owner::Verify)
                    })
                })
                .and_then(Option::take)
            else {
                break;
            };
            let tid = self.take_tid();
            if let Ok(len) = krpc::encode_ping(buf, &krpc::tid32(tid), &self.id) {
                self.set_inflight(i, now, tid, p.to, Some(p.id), p.owner);
                return Some(Transmit { to: p.to, len });
            }
        }
        for step in 0..OPS {
            let i = (self.next_op + step) % OPS.max(1);
            if let Some(t) = self.transmit_for(i, now, buf) {
                self.next_op = i;
                return Some(t);
            }
        }
        None
    }

    fn transmit_for(&mut self, i: usize, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        loop {
            let o = self.ops.get(i)?;
            if !o.used {
                return None;
            }
            match o.phase {
                Phase::Done => return None,
                Phase::Traverse => {
                    let slot = self.free_inflight()?;
                    let own = self.id;
                    let o = self.ops.get_mut(i)?;
                    match o.lookup.poll(now) {
                        LookupAction::Wait(_) => return None,
                        LookupAction::Finished => o.finish_traversal(),
                        LookupAction::Query { to, id } => {
                            let generation = o.generation;
                            let tid = self.take_tid();
                            let t = krpc::tid32(tid);
                            let o = self.ops.get(i)?;
                            let target = o.lookup.target();
                            let written = match o.kind {
                                Kind::Bootstrap => krpc::encode_find_node(buf, &t, &own, target),
                                Kind::Lookup | Kind::Announce | Kind::Unannounce => {
                                    krpc::encode_get_peers(buf, &t, &own, target)
                                }
                                Kind::Put | Kind::Get => krpc::encode_get(buf, &t, &own, target),
                            };
                            match written {
                                Ok(len) => {
                                    let owner = Owner::Traverse { op: i, generation };
                                    self.set_inflight(slot, now, tid, to, id, owner);
                                    return Some(Transmit { to, len });
                                }
                                Err(_) => {
                                    // Cannot happen with a REPLY_BUF_LEN buffer; fail the
                                    // node rather than wait for it.
                                    let o = self.ops.get_mut(i)?;
                                    o.lookup.on_failure(now, to);
                                }
                            }
                        }
                    }
                }
                Phase::Send => {
                    let Some(ti) = o.targets.iter().position(|t| t.state == SendState::Pending)
                    else {
                        if o.targets.iter().all(|t| t.state != SendState::InFlight) {
                            if let Some(o) = self.ops.get_mut(i) {
                                o.phase = Phase::Done;
                            }
                        }
                        return None;
                    };
                    let slot = self.free_inflight()?;
                    let tid = self.take_tid();
                    let t = krpc::tid32(tid);
                    let own = self.id;
                    let o = self.ops.get(i)?;
                    let target = o.targets.get(ti)?;
                    let name = o.lookup.target();
                    let written = match o.kind {
                        Kind::Announce => krpc::encode_announce_peer(
                            buf,
                            &t,
                            &own,
                            name,
                            o.port,
                            false,
                            &target.token,
                        ),
                        Kind::Unannounce => krpc::encode_unannounce(
                            buf,
                            &t,
                            &own,
                            name,
                            o.port,
                            false,
                            &target.token,
                        ),
                        // No put starts on a node without a value buffer: saying so here lets
                        // the compiler drop the put encoders from light clients.
                        Kind::Put if VALUE == 0 => Err(crate::wire::BufferFull),
                        Kind::Put if o.value.mutable => krpc::encode_put_mutable(
                            buf,
                            &t,
                            &own,
                            &target.token,
                            &MutablePut {
                                v: o.value.v(),
                                k: &o.value.k,
                                seq: o.value.seq,
                                sig: &o.value.sig,
                                salt: o.value.salt(),
                                cas: o.value.cas,
                            },
                        ),
                        Kind::Put => {
                            krpc::encode_put_immutable(buf, &t, &own, &target.token, o.value.v())
                        }
                        Kind::Bootstrap | Kind::Lookup | Kind::Get => Err(crate::wire::BufferFull),
                    };
                    let (to, id, generation) = (target.addr, target.id, o.generation);
                    let o = self.ops.get_mut(i)?;
                    let target = o.targets.get_mut(ti)?;
                    match written {
                        Ok(len) => {
                            target.state = SendState::InFlight;
                            let owner = Owner::Send {
                                op: i,
                                generation,
                                target: ti,
                            };
                            self.set_inflight(slot, now, tid, to, Some(id), owner);
                            return Some(Transmit { to, len });
                        }
                        Err(_) => target.state = SendState::Failed,
                    }
                }
            }
        }
    }

    fn free_inflight(&self) -> Option<usize> {
        self.inflight.iter().position(Option::is_none)
    }

    fn take_tid(&mut self) -> u32 {
        // Random rather than k-rpc-socket's 16-bit counter: a spoofer can neither predict the
        // next id nor try all of them within a query's lifetime. Unique among the queries in
        // flight, so that an answer matches one query; a few draws suffice (at most INFLIGHT
        // of 2^32 values are taken), a repeat after them is only a lost answer.
        let mut tid = self.rng.next_u32();
        for _ in 0..4 {
            if !self.inflight.iter().flatten().any(|f| f.tid == tid) {
                break;
            }
            tid = self.rng.next_u32();
        }
        tid
    }

    fn set_inflight(
        &mut self,
        slot: usize,
        now: Instant,
        tid: u32,
        to: PeerAddr,
        expect: Option<NodeId>,
        owner: Owner,
    ) {
        if let Some(s) = self.inflight.get_mut(slot) {
            *s = Some(InFlight {
                tid,
                to,
                expect,
                deadline: now.saturating_add(self.config.lookup.query_timeout),
                owner,
            });
        }
    }

    /// The next finished operation. Its slot is free again once the event is dropped.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        let i = self
            .ops
            .iter()
            .position(|o| o.used && o.phase == Phase::Done)?;
        let nodes = self.table.len();
        let o = self.ops.get_mut(i)?;
        o.used = false;
        let op = op_id(i, o.generation);
        if self.bootstrap_op == Some(op) {
            self.bootstrap_op = None;
        }
        let o = self.ops.get(i)?;
        Some(match o.kind {
            Kind::Bootstrap => Event::Bootstrapped { op, nodes },
            Kind::Lookup => Event::LookupDone {
                op,
                peers: &o.peers,
            },
            Kind::Announce => Event::AnnounceDone {
                op,
                result: o.send_result(),
            },
            Kind::Unannounce => Event::UnannounceDone {
                op,
                result: o.send_result(),
            },
            Kind::Put => Event::PutDone {
                op,
                result: o.send_result().map(|_| o.key),
            },
            Kind::Get => Event::GetDone {
                op,
                item: o.value.found.then(|| FoundItem {
                    id: o.value.from,
                    token: (!o.value.local).then_some(o.value.token.as_slice()),
                    v: o.value.v(),
                    signed: o.value.mutable.then_some(SignedItem {
                        k: &o.value.k,
                        seq: o.value.seq,
                        sig: &o.value.sig,
                    }),
                    local: o.value.local,
                }),
            },
        })
    }

    /// Abandons operation `op` (its caller lost interest, e.g. the client that asked for a
    /// lookup went away): its slot is free at once, its outstanding queries are forgotten (late
    /// answers to them are dropped like unsolicited ones, so they free their transaction slots
    /// for other operations now rather than at their timeout) and no event is reported for it.
    /// Returns `false` when `op` is not running (already finished, reported or cancelled).
    pub fn cancel(&mut self, op: OpId) -> bool {
        let Some(i) = self.slot_of(op) else {
            return false;
        };
        let Some(o) = self.ops.get_mut(i) else {
            return false;
        };
        o.used = false;
        let generation = o.generation;
        for slot in self.inflight.iter_mut() {
            let owned = slot.as_ref().is_some_and(|f| match f.owner {
                Owner::Traverse {
                    op: j,
                    generation: g,
                }
                | Owner::Send {
                    op: j,
                    generation: g,
                    ..
                } => j == i && g == generation,
                Owner::Evict { .. } | Owner::Liveness { .. } | Owner::Verify => false,
            });
            if owned {
                *slot = None;
            }
        }
        if self.bootstrap_op == Some(op) {
            self.bootstrap_op = None;
        }
        true
    }

    /// When [`Node::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.next_maintenance);
        t = earliest(t, Some(self.tokens.next_rotation()));
        t = earliest(t, self.store.next_expiry());
        for f in self.inflight.iter().flatten() {
            t = earliest(t, Some(f.deadline));
        }
        // A traversal's own deadlines (stalls) only matter when it can send: with every
        // transaction slot taken, the next in-flight deadline wakes us instead (otherwise a
        // past stall deadline would have the caller spin).
        if self.free_inflight().is_some() {
            for o in self
                .ops
                .iter()
                .filter(|o| o.used && o.phase == Phase::Traverse)
            {
                t = earliest(t, o.lookup.poll_timeout());
            }
        }
        t
    }

    /// Advances timers: query timeouts, peer expiry, token rotation, the routing-table
    /// liveness sweep (and a new bootstrap when the table became empty).
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..INFLIGHT {
            let expired = self
                .inflight
                .get(i)
                .and_then(|f| f.as_ref())
                .is_some_and(|f| f.deadline <= now);
            if expired {
                if let Some(f) = self.inflight.get_mut(i).and_then(Option::take) {
                    self.fail(now, f);
                }
            }
        }
        self.store.expire(now);
        self.tokens.rotate_if_due(now, &mut self.rng);
        if now >= self.next_maintenance {
            self.next_maintenance = now.saturating_add(self.config.maintenance_interval);
            let mut stale = [Entry::EMPTY; PINGS];
            let mut n = 0;
            for e in self.table.stale_before(now, self.config.node_liveness) {
                if let Some(s) = stale.get_mut(n) {
                    *s = *e;
                    n += 1;
                }
            }
            for e in stale.iter().take(n) {
                self.queue_ping(e.addr, e.id, Owner::Liveness { id: e.id });
            }
            if self.table.is_empty() && !self.bootstrap.is_empty() {
                let _ = self.start_bootstrap(now);
            }
        }
    }
}

/// The source tag of this node's own store in [`Op::add_peer_from`].
const LOCAL_SOURCE: u8 = 0;

/// A one-byte tag of the node whose answer carried a peer (1..=255; [`LOCAL_SOURCE`] is this
/// node). Two sources may share a tag: they then share their places, which only makes the
/// rule of [`Op::add_peer_from`] coarser.
fn source_tag(from: PeerAddr) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for x in from.to_compact() {
        // FNV-1a.
        h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
    }
    // 1..=255: the remainder is below 255, so it fits.
    (h % 255) as u8 + 1
}

fn op_id(i: usize, generation: u16) -> OpId {
    OpId(((generation as u32) << 16) | (i as u32 & 0xffff))
}

fn nodes_of(entries: &[Entry], n: usize) -> impl Iterator<Item = (NodeId, PeerAddr)> + '_ {
    entries.iter().take(n).map(|e| (e.id, e.addr))
}

/// Whether a BEP44 value of `len` bytes fits both BEP44's limit and a `V`-byte value buffer.
const fn fits<const V: usize>(len: usize) -> bool {
    len <= bep44::MAX_V_LEN && len <= V
}

impl<const V: usize> Value<V> {
    fn set_v(&mut self, v: &[u8]) {
        self.v = prefix(v);
    }

    fn set_salt(&mut self, salt: Option<&[u8]>) {
        self.salt = salt.map(prefix);
    }
}

impl<const C: usize, const P: usize, const V: usize> Op<C, P, V> {
    /// Adds a found peer. When the result is full, a peer whose IP holds at least two fewer
    /// places than some other IP takes the place of one of that IP's peers: one host that
    /// announced a name from a hundred ports (in this node's store and in every answer) cannot
    /// crowd the other hosts' workers out of a lookup's result.
    fn add_peer(&mut self, p: PeerAddr) {
        self.add_peer_from(p, LOCAL_SOURCE);
    }

    /// [`Op::add_peer`] for a peer carried by the answer of source `source` ([`source_tag`]).
    /// When no IP holds two places more than the newcomer's, the same rule holds between
    /// sources: answers that each list many made-up peers, from many addresses, cannot crowd
    /// out the workers that other answers (e.g. the bootstrap grapes') carry. grenache-sim
    /// found 10 % such liars costing 7 % of lookups (docs/SCALE.md).
    fn add_peer_from(&mut self, p: PeerAddr, source: u8) {
        if p.port == 0 || self.peers.contains(&p) {
            return;
        }
        let Err(p) = self.peers.push(p) else {
            // `sources` has the same capacity and length.
            let _ = self.sources.push(source);
            return;
        };
        let found = &self.peers;
        let places = |ip: [u8; 4]| found.iter().filter(|q| q.ip == ip).count();
        let mine = places(p.ip);
        // The first peer of an IP with two places more than the newcomer's; under a flood the
        // flooder holds most places, so this usually stops at the first entry.
        let mut victim = found
            .iter()
            .position(|q| q.ip != p.ip && places(q.ip) >= mine + 2);
        if victim.is_none() {
            let from = &self.sources;
            let held = |s: u8| from.iter().filter(|&&x| x == s).count();
            let mine = held(source);
            victim = from
                .iter()
                .position(|&s| s != source && held(s) >= mine + 2);
        }
        if let Some(i) = victim {
            if let (Some(slot), Some(tag)) = (self.peers.get_mut(i), self.sources.get_mut(i)) {
                *slot = p;
                *tag = source;
            }
        }
    }

    /// The traversal ended: lookups and gets are done, announces and puts send.
    fn finish_traversal(&mut self) {
        match self.kind {
            Kind::Bootstrap | Kind::Lookup | Kind::Get => self.phase = Phase::Done,
            Kind::Announce | Kind::Unannounce | Kind::Put => {
                // Every token-bearing responder, as bittorrent-dht's queryAll
                // (docs/protocol.md §13.9).
                self.targets.clear();
                for r in self.lookup.responded() {
                    let Some(token) = r.token else { continue };
                    let target = Target {
                        id: r.id,
                        addr: r.addr,
                        token: prefix(token),
                        state: SendState::Pending,
                    };
                    if self.targets.push(target).is_err() {
                        break;
                    }
                }
                self.phase = if self.targets.is_empty() {
                    Phase::Done
                } else {
                    Phase::Send
                };
            }
        }
    }

    /// The number of acknowledgements, or the error Node reports.
    fn send_result(&self) -> Result<usize, OpError> {
        if self.targets.is_empty() {
            return Err(OpError::NoNodes);
        }
        let acks = self
            .targets
            .iter()
            .filter(|t| t.state == SendState::Acked)
            .count();
        match (acks, self.krpc_error) {
            (0, Some(code)) => Err(OpError::Krpc(code)),
            (0, None) => Err(OpError::AllFailed),
            _ => Ok(acks),
        }
    }

    /// A `get` answer carried a value: keep it if it is the item we look for.
    fn offer_item(&mut self, from: NodeId, token: &[u8], v: Encoded<'_>, r: &Response<'_>) {
        // Nothing fits a node without a value buffer (and the check drops this code there).
        if V == 0 {
            return;
        }
        if self.value.found && !self.value.mutable {
            return;
        }
        let mutable = r.k.is_some() || r.sig.is_some();
        if !mutable {
            if bep44::immutable_key(v.raw) != self.key || !fits::<V>(v.raw.len()) {
                return;
            }
            self.value.set_v(v.raw);
            self.value.mutable = false;
        } else {
            #[cfg(not(feature = "ed25519"))]
            {
                // Without a verifier mutable answers are ignored, as by a CLI Node grape.
                let _ = (r, from, token);
                return;
            }
            #[cfg(feature = "ed25519")]
            {
                let (Some(k), Some(sig)) = (
                    r.k.and_then(|k| <&[u8; bep44::PUBLIC_KEY_LEN]>::try_from(k).ok()),
                    r.sig
                        .and_then(|s| <&[u8; bep44::SIGNATURE_LEN]>::try_from(s).ok()),
                ) else {
                    return;
                };
                let seq = r.seq.unwrap_or(0);
                let salt = self.value.salt();
                if bep44::mutable_key(k, salt) != self.key
                    || !fits::<V>(v.raw.len())
                    || !bep44::verify_mutable(k, salt, seq, v.raw, sig)
                {
                    return;
                }
                // The highest seq wins; the traversal runs to its end.
                if self.value.found && seq <= self.value.seq {
                    return;
                }
                self.value.set_v(v.raw);
                self.value.mutable = true;
                self.value.k = *k;
                self.value.sig = *sig;
                self.value.seq = seq;
            }
        }
        self.value.from = from;
        self.value.token = prefix(token);
        self.value.local = false;
        self.value.found = true;
        if !self.value.mutable {
            // The first valid immutable answer ends the get (`dht:371-380`).
            self.phase = Phase::Done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::boxed::Box;
    use std::collections::BTreeMap;
    use std::format;
    use std::vec;
    use std::vec::Vec;

    type TestNode = Node<SplitMix64, 128, 64, 256, 16, 8, 64, 128>;

    const LATENCY: u64 = 1;

    fn addr(i: usize) -> PeerAddr {
        PeerAddr::new([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 20_000)
    }

    /// A network of nodes in one thread with a fake clock: every datagram takes `LATENCY` ms;
    /// datagrams to a dead node are lost.
    struct Net {
        nodes: Vec<Box<TestNode>>,
        dead: Vec<bool>,
        now: Instant,
        /// (delivery time, sequence) -> (from, to, bytes)
        wire: BTreeMap<(u64, u64), (PeerAddr, PeerAddr, Vec<u8>)>,
        seq: u64,
        events: Vec<(usize, OwnedEvent)>,
        sent: usize,
        /// Datagrams to this IP are answered by [`sybil_answer`].
        sybil_ip: Option<[u8; 4]>,
    }

    #[derive(Clone, Debug, PartialEq)]
    enum OwnedEvent {
        Bootstrapped,
        Lookup(OpId, Vec<PeerAddr>),
        Announce(OpId, Result<usize, OpError>),
        Unannounce(OpId, Result<usize, OpError>),
        Put(OpId, Result<Key, OpError>),
        Get(OpId, Option<(Vec<u8>, bool, Option<i64>)>),
    }

    impl Net {
        /// `n` nodes; node i bootstraps from node (i + 1) % n and node 0.
        fn new(n: usize, seed: u64) -> Net {
            let mut nodes = Vec::new();
            for i in 0..n {
                let rng = SplitMix64::new(seed.wrapping_mul(1000).wrapping_add(i as u64));
                let mut node = Box::new(TestNode::new(rng, NodeConfig::DEFAULT, Instant::ZERO));
                if n > 1 {
                    node.add_bootstrap(addr((i + 1) % n));
                    if i != 0 {
                        node.add_bootstrap(addr(0));
                    }
                }
                nodes.push(node);
            }
            Net {
                nodes,
                dead: vec![false; n],
                now: Instant::ZERO,
                wire: BTreeMap::new(),
                seq: 0,
                events: Vec::new(),
                sent: 0,
                sybil_ip: None,
            }
        }

        fn index(&self, a: PeerAddr) -> Option<usize> {
            (0..self.nodes.len()).find(|&i| addr(i) == a)
        }

        fn send(&mut self, from: PeerAddr, to: PeerAddr, bytes: &[u8]) {
            self.seq += 1;
            self.sent += 1;
            self.wire.insert(
                (self.now.as_millis() + LATENCY, self.seq),
                (from, to, bytes.to_vec()),
            );
        }

        fn drain(&mut self) {
            let mut buf = [0u8; REPLY_BUF_LEN];
            for i in 0..self.nodes.len() {
                if self.dead[i] {
                    continue;
                }
                while let Some(t) = self.nodes[i].poll_transmit(self.now, &mut buf) {
                    let bytes = buf[..t.len].to_vec();
                    self.send(addr(i), t.to, &bytes);
                }
                while let Some(e) = self.nodes[i].poll_event() {
                    let e = match e {
                        Event::Bootstrapped { .. } => OwnedEvent::Bootstrapped,
                        Event::LookupDone { op, peers } => OwnedEvent::Lookup(op, peers.to_vec()),
                        Event::AnnounceDone { op, result } => OwnedEvent::Announce(op, result),
                        Event::UnannounceDone { op, result } => OwnedEvent::Unannounce(op, result),
                        Event::PutDone { op, result } => OwnedEvent::Put(op, result),
                        Event::GetDone { op, item } => OwnedEvent::Get(
                            op,
                            item.map(|i| (i.v.to_vec(), i.local, i.signed.map(|s| s.seq))),
                        ),
                    };
                    self.events.push((i, e));
                }
            }
        }

        /// Runs until `until` (ms) of fake time or until nothing is left to do.
        fn run_for(&mut self, ms: u64) {
            let end = self.now.as_millis() + ms;
            let mut reply = [0u8; REPLY_BUF_LEN];
            for _ in 0..1_000_000 {
                self.drain();
                let next_wire = self.wire.keys().next().map(|k| k.0);
                let next_timer = (0..self.nodes.len())
                    .filter(|&i| !self.dead[i])
                    .filter_map(|i| self.nodes[i].poll_timeout())
                    .map(|t| t.as_millis())
                    .min();
                let next = match (next_wire, next_timer) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(end),
                };
                if next > end {
                    self.now = Instant::from_millis(end);
                    return;
                }
                self.now = Instant::from_millis(next.max(self.now.as_millis()));
                if next_wire == Some(next) {
                    let (k, (from, to, bytes)) = self.wire.pop_first().unwrap();
                    assert_eq!(k.0, next);
                    if let Some(j) = self.index(to) {
                        if !self.dead[j] {
                            if let Some(n) =
                                self.nodes[j].handle_datagram(self.now, from, &bytes, &mut reply)
                            {
                                let r = reply[..n].to_vec();
                                self.send(to, from, &r);
                            }
                        }
                    } else if self.sybil_ip == Some(to.ip) {
                        if let Some(r) = sybil_answer(to, &bytes) {
                            self.send(to, from, &r);
                        }
                    }
                } else {
                    for i in 0..self.nodes.len() {
                        if !self.dead[i]
                            && self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now)
                        {
                            self.nodes[i].handle_timeout(self.now);
                        }
                    }
                }
            }
            panic!("simulation did not settle");
        }

        fn bootstrap_all(&mut self) {
            for i in 0..self.nodes.len() {
                self.nodes[i].start_bootstrap(self.now).unwrap();
                self.run_for(50);
            }
            // A second round lets early nodes learn the later ones.
            for i in 0..self.nodes.len() {
                self.nodes[i].start_bootstrap(self.now).unwrap();
            }
            self.run_for(3_000);
            self.events.clear();
        }

        /// Runs until `op` of node `i` finishes; returns the event and the fake time it took.
        fn wait(&mut self, i: usize, op: OpId) -> (OwnedEvent, u64) {
            let start = self.now.as_millis();
            for _ in 0..10_000 {
                if let Some(pos) = self.events.iter().position(|(n, e)| {
                    *n == i
                        && match e {
                            OwnedEvent::Lookup(o, _)
                            | OwnedEvent::Announce(o, _)
                            | OwnedEvent::Unannounce(o, _)
                            | OwnedEvent::Put(o, _)
                            | OwnedEvent::Get(o, _) => *o == op,
                            OwnedEvent::Bootstrapped => false,
                        }
                }) {
                    let (_, e) = self.events.remove(pos);
                    return (e, self.now.as_millis() - start);
                }
                self.run_for(1);
            }
            panic!("operation {op:?} of node {i} never finished");
        }

        fn lookup(&mut self, i: usize, name: &[u8]) -> (Vec<PeerAddr>, u64) {
            let op = self.nodes[i].lookup(self.now, name).unwrap();
            match self.wait(i, op) {
                (OwnedEvent::Lookup(_, peers), t) => (peers, t),
                (e, _) => panic!("unexpected {e:?}"),
            }
        }

        fn announce(&mut self, i: usize, name: &[u8], port: u16) -> Result<usize, OpError> {
            let op = self.nodes[i].announce(self.now, name, port).unwrap();
            match self.wait(i, op) {
                (OwnedEvent::Announce(_, r), _) => r,
                (e, _) => panic!("unexpected {e:?}"),
            }
        }
    }

    fn answer(node: &mut TestNode, from: PeerAddr, q: &[u8]) -> Option<Vec<u8>> {
        let mut reply = [0u8; REPLY_BUF_LEN];
        node.handle_datagram(Instant::ZERO, from, q, &mut reply)
            .map(|n| reply[..n].to_vec())
    }

    fn lone_node() -> Box<TestNode> {
        let id = NodeId([0x16; 20]);
        Box::new(TestNode::with_id(
            id,
            SplitMix64::new(7),
            NodeConfig::DEFAULT,
            Instant::ZERO,
        ))
    }

    #[test]
    fn answers_ping_with_its_id_and_echoes_the_tid() {
        let mut n = lone_node();
        let q = hex::decode("64313a6164323a696432303a0102030405060708090a0b0c0d0e0f101112131465313a71343a70696e67313a74323a6161313a79313a7165").unwrap();
        let r = answer(&mut n, addr(1), &q).unwrap();
        let mut expected = b"d1:rd2:id20:".to_vec();
        expected.extend_from_slice(&[0x16; 20]);
        expected.extend_from_slice(b"e1:t2:aa1:y1:re");
        assert_eq!(r, expected);
        // The querier is not learned yet: it is pinged, and enters the table when it answers.
        assert_eq!(n.table().len(), 0);
        let mut buf = [0u8; REPLY_BUF_LEN];
        let tx = n.poll_transmit(Instant::ZERO, &mut buf).unwrap();
        assert_eq!(tx.to, addr(1));
        let t = krpc::parse(&buf[..tx.len]).unwrap().t().to_vec();
        let mut pong = [0u8; REPLY_BUF_LEN];
        let querier = NodeId(core::array::from_fn(|i| i as u8 + 1));
        let len = krpc::encode_response_id(&mut pong, &t, &querier).unwrap();
        assert_eq!(
            n.handle_datagram(Instant::ZERO, addr(1), &pong[..len], &mut buf),
            None
        );
        assert_eq!(n.table().len(), 1);
        assert_eq!(n.table().get(&querier).unwrap().addr, addr(1));
    }

    #[test]
    fn missing_arguments_get_node_error_messages() {
        let mut n = lone_node();
        let id = [1u8; 20];
        let q = |method: &str| {
            let mut q = b"d1:ad2:id20:".to_vec();
            q.extend_from_slice(&id);
            q.extend_from_slice(
                format!("e1:q{}:{}1:t2:xy1:y1:qe", method.len(), method).as_bytes(),
            );
            q
        };
        assert_eq!(
            answer(&mut n, addr(1), &q("find_node")).unwrap(),
            b"d1:eli203e45:`find_node` missing required `a.target` fielde1:t2:xy1:y1:ee"
        );
        assert_eq!(
            answer(&mut n, addr(1), &q("get_peers")).unwrap(),
            b"d1:eli203e48:`get_peers` missing required `a.info_hash` fielde1:t2:xy1:y1:ee"
        );
        // get without target, announce_peer without port, unknown methods: no answer.
        assert_eq!(answer(&mut n, addr(1), &q("get")), None);
        assert_eq!(answer(&mut n, addr(1), &q("announce_peer")), None);
        assert_eq!(answer(&mut n, addr(1), &q("vote")), None);
    }

    #[test]
    fn the_five_node_crash_vectors_are_harmless() {
        // docs/protocol.md §13.3: each of these kills a Node CLI grape.
        let mut n = lone_node();
        let vectors: [&[u8]; 5] = [
            b"d1:t2:aa1:y1:qe",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa6:targeti5ee1:q9:find_node1:t2:aa1:y1:qe",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hashi5ee1:q9:get_peers1:t2:aa1:y1:qe",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash3:abc4:porti1e5:tokeni5ee1:q13:announce_peer1:t2:aa1:y1:qe",
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa5:tokeni5e1:v1:xe1:q3:put1:t2:aa1:y1:qe",
        ];
        for v in vectors {
            // Wrongly typed fields read as missing: errors or silence, never a panic, and the
            // node still answers afterwards.
            let _ = answer(&mut n, addr(2), v);
        }
        assert_eq!(n.store().len(), 0);
        let ping = b"d1:ad2:id20:bbbbbbbbbbbbbbbbbbbbe1:q4:ping1:t2:zz1:y1:qe";
        assert!(answer(&mut n, addr(3), ping).is_some());
    }

    #[test]
    fn announce_needs_a_token_from_the_same_ip() {
        let mut n = lone_node();
        let id = [1u8; 20];
        let mut gp = b"d1:ad2:id20:".to_vec();
        gp.extend_from_slice(&id);
        gp.extend_from_slice(b"9:info_hash3:svce1:q9:get_peers1:t2:g11:y1:qe");
        let r = answer(&mut n, addr(1), &gp).unwrap();
        let Ok(Message::Response { r, .. }) = krpc::parse(&r) else {
            panic!()
        };
        let token = r.token.unwrap().to_vec();
        assert!(r.values.is_none() && r.nodes.is_some());

        let announce = |token: &[u8]| {
            let mut a = b"d1:ad2:id20:".to_vec();
            a.extend_from_slice(&id);
            a.extend_from_slice(b"12:implied_porti0e9:info_hash3:svc4:porti1337e5:token");
            a.extend_from_slice(format!("{}:", token.len()).as_bytes());
            a.extend_from_slice(token);
            a.extend_from_slice(b"e1:q13:announce_peer1:t2:a11:y1:qe");
            a
        };
        // The token was issued to 10.0.0.2: another IP is refused with Node's error.
        assert_eq!(
            answer(&mut n, addr(2), &announce(&token)).unwrap(),
            b"d1:eli203e37:cannot `announce_peer` with bad tokene1:t2:a11:y1:ee"
        );
        assert_eq!(n.store().len(), 0);
        let ok = answer(&mut n, addr(1), &announce(&token)).unwrap();
        assert!(ok.starts_with(b"d1:rd2:id20:"));
        // Stored under the UDP source IP and the announced port.
        let r = answer(&mut n, addr(1), &gp).unwrap();
        let Ok(Message::Response { r, .. }) = krpc::parse(&r) else {
            panic!()
        };
        let values: Vec<PeerAddr> = r.values.unwrap().iter().collect();
        assert_eq!(values, vec![PeerAddr::new(addr(1).ip, 1337)]);
        assert!(
            r.nodes.is_none(),
            "values answers carry no nodes (docs/protocol.md §13.7)"
        );
    }

    #[test]
    fn two_nodes_announce_and_lookup() {
        let mut net = Net::new(2, 1);
        net.bootstrap_all();
        assert_eq!(net.nodes[0].table().len(), 1);
        assert_eq!(net.announce(0, b"fibonacci_worker", 1337), Ok(1));
        let (peers, _) = net.lookup(1, b"fibonacci_worker");
        assert_eq!(peers, vec![PeerAddr::new(addr(0).ip, 1337)]);
        // The announcer stores nothing itself (no `-b`), but finds it through the other.
        let (peers, _) = net.lookup(0, b"fibonacci_worker");
        assert_eq!(peers, vec![PeerAddr::new(addr(0).ip, 1337)]);
        let (none, _) = net.lookup(0, b"nobody");
        assert!(none.is_empty());
    }

    #[test]
    fn an_isolated_node_has_no_nodes_to_query() {
        let mut net = Net::new(1, 2);
        assert_eq!(net.announce(0, b"svc", 1), Err(OpError::NoNodes));
    }

    #[test]
    fn announce_through_one_is_found_through_every_other_of_twenty() {
        let mut net = Net::new(20, 3);
        net.bootstrap_all();
        let acks = net.announce(7, b"rest:util:net", 4000).unwrap();
        assert!(acks >= 10, "{acks} acks");
        for i in 0..20 {
            let (peers, _) = net.lookup(i, b"rest:util:net");
            assert_eq!(
                peers,
                vec![PeerAddr::new(addr(7).ip, 4000)],
                "from node {i}"
            );
        }
    }

    #[test]
    fn dead_nodes_do_not_hold_a_lookup_for_the_query_timeout() {
        let mut net = Net::new(20, 4);
        net.bootstrap_all();
        net.announce(1, b"svc", 4000).unwrap();
        for d in [5, 9, 13] {
            net.dead[d] = true;
        }
        let (peers, took) = net.lookup(2, b"svc");
        assert_eq!(peers, vec![PeerAddr::new(addr(1).ip, 4000)]);
        assert!(took < 300, "lookup took {took} ms of fake time");
    }

    #[test]
    fn entries_expire_after_the_peer_ttl() {
        let mut net = Net::new(2, 5);
        net.bootstrap_all();
        net.announce(0, b"svc", 4000).unwrap();
        net.run_for(119_000);
        assert_eq!(net.lookup(1, b"svc").0.len(), 1);
        net.run_for(1_500);
        assert!(net.lookup(1, b"svc").0.is_empty());
    }

    #[test]
    fn unannounce_removes_the_entry_at_once() {
        let mut net = Net::new(3, 6);
        net.bootstrap_all();
        net.announce(0, b"svc", 4000).unwrap();
        assert_eq!(net.lookup(2, b"svc").0.len(), 1);
        let op = net.nodes[0].unannounce(net.now, b"svc", 4000).unwrap();
        match net.wait(0, op) {
            (OwnedEvent::Unannounce(_, Ok(n)), _) => assert!(n >= 1),
            other => panic!("{other:?}"),
        }
        assert!(net.lookup(2, b"svc").0.is_empty());
        assert!(net.lookup(1, b"svc").0.is_empty());
    }

    #[test]
    fn immutable_put_and_get_use_the_node_hash() {
        let mut net = Net::new(5, 7);
        net.bootstrap_all();
        let op = net.nodes[0]
            .put_immutable(net.now, b"11:hello world")
            .unwrap();
        let key = match net.wait(0, op) {
            (OwnedEvent::Put(_, Ok(key)), _) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(hex::encode(key), "6d33adc2b6b2c14c3036feefb7fedbca1a880527");
        // Every node took the put; asked to skip its own copy, another node finds it in
        // the network (`cache:false`).
        let op = net.nodes[3].get(net.now, &key, None, false).unwrap();
        match net.wait(3, op) {
            (OwnedEvent::Get(_, Some((v, local, None))), _) => {
                assert_eq!(v, b"11:hello world");
                assert!(!local);
            }
            other => panic!("{other:?}"),
        }
        // The putter answers from its own store.
        let op = net.nodes[0].get(net.now, &key, None, true).unwrap();
        assert!(matches!(
            net.wait(0, op),
            (OwnedEvent::Get(_, Some((_, true, None))), _)
        ));
        let op = net.nodes[3].get(net.now, &[9; 20], None, true).unwrap();
        assert!(matches!(net.wait(3, op), (OwnedEvent::Get(_, None), _)));
    }

    #[cfg(not(feature = "ed25519"))]
    #[test]
    fn mutable_put_without_a_verifier_fails_like_a_cli_grape() {
        let mut net = Net::new(3, 8);
        net.bootstrap_all();
        let op = net.nodes[0]
            .put_mutable(net.now, &[1; 32], Some(b"salt"), 1, &[2; 64], b"1:x", None)
            .unwrap();
        assert!(matches!(
            net.wait(0, op),
            (OwnedEvent::Put(_, Err(OpError::AllFailed)), _)
        ));
    }

    #[cfg(feature = "ed25519")]
    #[test]
    fn mutable_put_and_get_follow_seq_rules() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let k = key.verifying_key().to_bytes();
        let mut net = Net::new(4, 9);
        net.bootstrap_all();
        let put = |net: &mut Net, seq: i64, v: &[u8]| {
            let sig = bep44::sign_mutable(&key, Some(b"mysalt"), seq, v).unwrap();
            let op = net.nodes[0]
                .put_mutable(net.now, &k, Some(b"mysalt"), seq, &sig, v, None)
                .unwrap();
            match net.wait(0, op) {
                (OwnedEvent::Put(_, r), _) => r,
                other => panic!("{other:?}"),
            }
        };
        let target = put(&mut net, 1, b"13:hello mutable").unwrap();
        assert_eq!(target, bep44::mutable_key(&k, Some(b"mysalt")));
        assert_eq!(
            put(&mut net, 1, b"13:hello mutable"),
            Err(OpError::Krpc(302))
        );
        assert!(put(&mut net, 2, b"5:newer").is_ok());
        let op = net.nodes[2]
            .get(net.now, &target, Some(b"mysalt"), true)
            .unwrap();
        match net.wait(2, op) {
            (OwnedEvent::Get(_, Some((v, _, Some(seq)))), _) => {
                assert_eq!(v, b"5:newer");
                assert_eq!(seq, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics_and_changes_nothing_it_should_not() {
        use proptest::prelude::*;
        let n = std::cell::RefCell::new(lone_node());
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..300))| {
            let mut reply = [0u8; REPLY_BUF_LEN];
            let _ = n.borrow_mut().handle_datagram(Instant::ZERO, addr(1), &bytes, &mut reply);
        });
        assert_eq!(n.borrow().store().len(), 0);
    }

    /// An announce-only light client: no lookup peers, no value buffer, few pings.
    type LightNode = Node<SplitMix64, 20, 2, 4, 0, 2, 8, 8, 0, 0, 4>;

    /// Delivers datagrams between a light node at `addr(0)` and a full node at `addr(1)`
    /// until neither has anything to send.
    fn pump(light: &mut LightNode, full: &mut TestNode, now: Instant) {
        let mut buf = [0u8; REPLY_BUF_LEN];
        let mut reply = [0u8; REPLY_BUF_LEN];
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = light.poll_transmit(now, &mut buf) {
                assert_eq!(t.to, addr(1));
                moved = true;
                if let Some(n) = full.handle_datagram(now, addr(0), &buf[..t.len], &mut reply) {
                    let _ = light.handle_datagram(now, addr(1), &reply[..n], &mut buf);
                }
            }
            while let Some(t) = full.poll_transmit(now, &mut buf) {
                moved = true;
                if t.to == addr(0) {
                    if let Some(n) = light.handle_datagram(now, addr(1), &buf[..t.len], &mut reply)
                    {
                        let _ = full.handle_datagram(now, addr(0), &reply[..n], &mut buf);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the two nodes never went quiet");
    }

    #[test]
    fn a_light_node_without_buffers_announces_and_refuses_puts() {
        let now = Instant::ZERO;
        let mut full = Box::new(TestNode::new(SplitMix64::new(1), NodeConfig::DEFAULT, now));
        let mut light = LightNode::new(SplitMix64::new(2), NodeConfig::DEFAULT, now);
        assert!(light.add_bootstrap(addr(1)));
        // No value buffer: every put is refused before it starts.
        assert_eq!(
            light.put_immutable(now, b"5:hello"),
            Err(StartError::BadValue)
        );
        let op = light.announce(now, b"svc", 1337).unwrap();
        pump(&mut light, &mut full, now);
        let mut acks = None;
        while let Some(e) = light.poll_event() {
            if let Event::AnnounceDone { op: o, result } = e {
                assert_eq!(o, op);
                acks = Some(result);
            }
        }
        assert_eq!(acks, Some(Ok(1)));
        let mut out = [PeerAddr::new([0; 4], 0); 4];
        let n = full
            .store()
            .sample(now, b"svc", &mut SplitMix64::new(3), &mut out);
        assert_eq!(&out[..n], &[PeerAddr::new(addr(0).ip, 1337)]);

        // An item the full node holds is found by the traversal but not kept: it does not
        // fit a zero-byte value buffer.
        full.put_immutable(now, b"5:hello").unwrap();
        let key = bep44::immutable_key(b"5:hello");
        let op = light.get(now, &key, None, false).unwrap();
        pump(&mut light, &mut full, now);
        let mut got = None;
        while let Some(e) = light.poll_event() {
            if let Event::GetDone { op: o, item } = e {
                assert_eq!(o, op);
                got = Some(item.is_none());
            }
        }
        assert_eq!(got, Some(true));
    }

    #[test]
    fn a_small_value_buffer_bounds_puts() {
        let now = Instant::ZERO;
        let mut node: Node<SplitMix64, 20, 2, 4, 4, 2, 8, 8, 10, 16, 4> =
            Node::new(SplitMix64::new(5), NodeConfig::DEFAULT, now);
        assert_eq!(
            node.put_immutable(now, b"17:far too long a value"),
            Err(StartError::BadValue)
        );
        assert!(node.put_immutable(now, b"5:fits!").is_ok());
    }

    /// A `get_peers` answer with `t`, id `[id; 20]` and `values`.
    fn peers_answer(t: &[u8], id: u8, values: &[PeerAddr]) -> Vec<u8> {
        let mut buf = [0u8; REPLY_BUF_LEN];
        let n = krpc::encode_response_values(
            &mut buf,
            t,
            &NodeId([id; 20]),
            b"tk",
            values.iter().copied(),
        )
        .unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn an_answer_from_the_right_ip_but_another_port_is_ignored() {
        let mut n = lone_node();
        n.add_bootstrap(addr(1));
        let op = n.lookup(Instant::ZERO, b"svc").unwrap();
        let mut buf = [0u8; REPLY_BUF_LEN];
        let tx = n.poll_transmit(Instant::ZERO, &mut buf).unwrap();
        assert_eq!(tx.to, addr(1));
        let t = krpc::parse(&buf[..tx.len]).unwrap().t().to_vec();
        assert_eq!(t.len(), krpc::QUERY_TID_LEN);
        // Another process on the queried host answers first, with the right tid.
        let forged = peers_answer(&t, 0xee, &[PeerAddr::new([6, 6, 6, 6], 666)]);
        let same_ip = PeerAddr::new(addr(1).ip, addr(1).port + 1);
        let mut reply = [0u8; REPLY_BUF_LEN];
        assert_eq!(
            n.handle_datagram(Instant::ZERO, same_ip, &forged, &mut reply),
            None
        );
        let honest = peers_answer(&t, 0x01, &[PeerAddr::new([10, 9, 9, 9], 1337)]);
        let _ = n.handle_datagram(Instant::ZERO, addr(1), &honest, &mut reply);
        let _ = n.poll_transmit(Instant::ZERO, &mut buf);
        match n.poll_event() {
            Some(Event::LookupDone { op: o, peers }) => {
                assert_eq!(o, op);
                assert_eq!(peers, &[PeerAddr::new([10, 9, 9, 9], 1337)]);
            }
            other => panic!("{other:?}"),
        }
        // The forger was not learned either.
        assert!(n.table().iter().all(|e| e.addr != same_ip));
    }

    #[test]
    fn transaction_ids_are_random_not_a_counter() {
        let mut n = lone_node();
        for i in 1..=12 {
            n.add_bootstrap(addr(i));
        }
        n.lookup(Instant::ZERO, b"svc").unwrap();
        let mut buf = [0u8; REPLY_BUF_LEN];
        let mut tids = Vec::new();
        while let Some(tx) = n.poll_transmit(Instant::ZERO, &mut buf) {
            let t = krpc::parse(&buf[..tx.len]).unwrap().t().to_vec();
            tids.push(krpc::tid32_of(&t).unwrap());
            assert!(tids.len() <= 12);
        }
        assert_eq!(tids.len(), 12);
        let steps: Vec<u32> = tids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        // A counter (of any stride) repeats its step; 11 random steps do not.
        assert!(steps.windows(2).all(|w| w[0] != w[1]), "{tids:x?}");
        let mut unique = tids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), tids.len());
    }

    #[test]
    fn a_query_flood_from_unverified_ids_does_not_enter_the_table() {
        let mut n = lone_node();
        let mut reply = [0u8; REPLY_BUF_LEN];
        let mut buf = [0u8; REPLY_BUF_LEN];
        let mut pinged = 0;
        let mut now = Instant::ZERO;
        for i in 0..1000u32 {
            let mut id = [0u8; 20];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[19] = 0xaa;
            let from = PeerAddr::new([10, 66, (i >> 8) as u8, i as u8], 6881);
            let mut q = b"d1:ad2:id20:".to_vec();
            q.extend_from_slice(&id);
            q.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
            // Still answered: a querier is served, only not trusted.
            assert!(n.handle_datagram(now, from, &q, &mut reply).is_some());
            while let Some(tx) = n.poll_transmit(now, &mut buf) {
                assert!(tx.to.ip[1] == 66);
                pinged += 1;
            }
            let verifying = n
                .inflight
                .iter()
                .flatten()
                .filter(|f| f.owner == Owner::Verify)
                .count();
            assert!(verifying <= MAX_VERIFY_INFLIGHT);
            now = now.saturating_add(Duration::from_millis(10));
            if n.poll_timeout().is_some_and(|t| t <= now) {
                n.handle_timeout(now);
            }
        }
        // Nobody answered the pings: nobody entered.
        assert_eq!(n.table().len(), 0);
        // 10 s of flood, one ping slot freed per 2 s timeout per verification slot.
        assert!(pinged <= MAX_VERIFY_INFLIGHT * 6, "{pinged} pings");
        assert!(pinged >= MAX_VERIFY_INFLIGHT, "{pinged} pings");
    }

    /// A lookup operation in its traversal, with room for 8 peers: what the peer-collection
    /// rules ([`Op::add_peer`], [`Op::add_peer_from`]) run on.
    fn lookup_op() -> Op<4, 8, 0> {
        Op {
            used: true,
            generation: 0,
            kind: Kind::Lookup,
            phase: Phase::Traverse,
            lookup: Lookup::idle(NodeId([1; 20]), LookupConfig::DEFAULT, Instant::ZERO),
            port: 0,
            peers: heapless::Vec::new(),
            sources: heapless::Vec::new(),
            targets: heapless::Vec::new(),
            value: Value::EMPTY,
            key: [0; 20],
            krpc_error: None,
        }
    }

    #[test]
    fn one_host_with_many_ports_cannot_crowd_other_hosts_out_of_a_lookup() {
        let mut o = lookup_op();
        for port in 1..=20 {
            o.add_peer(PeerAddr::new([10, 0, 0, 2], port));
        }
        let honest = PeerAddr::new([10, 0, 0, 1], 1337);
        let other = PeerAddr::new([10, 0, 0, 3], 1337);
        o.add_peer(honest);
        o.add_peer(other);
        let found = &o.peers;
        assert_eq!(found.len(), 8);
        assert!(
            found.contains(&honest) && found.contains(&other),
            "{found:?}"
        );
        // The flooder keeps the rest; a second port of the honest host still gets in (1 + 2
        // places <= 6), a duplicate does not.
        let honest2 = PeerAddr::new([10, 0, 0, 1], 1338);
        o.add_peer(honest2);
        o.add_peer(honest);
        let found = &o.peers;
        assert_eq!(found.iter().filter(|p| p.ip == [10, 0, 0, 1]).count(), 2);
        assert_eq!(found.iter().filter(|p| p.ip == [10, 0, 0, 2]).count(), 5);
    }

    #[test]
    fn answers_full_of_made_up_peers_cannot_crowd_out_the_worker_another_answer_carries() {
        let mut o = lookup_op();
        // Four liars answer first, each with 8 made-up peers on 8 different IPs.
        for liar in 0..4u8 {
            let source = source_tag(PeerAddr::new([10, 9, 0, liar], 20_000));
            for i in 0..8u8 {
                o.add_peer_from(PeerAddr::new([192, 0, 2, liar * 8 + i], 1000), source);
            }
        }
        assert_eq!(o.peers.len(), 8);
        // Then the bootstrap grape, with the real worker.
        let worker = PeerAddr::new([10, 0, 0, 7], 1337);
        o.add_peer_from(worker, source_tag(PeerAddr::new([10, 0, 0, 1], 20_001)));
        assert!(o.peers.contains(&worker), "{:?}", o.peers);
        assert_eq!(o.sources.len(), o.peers.len());
    }

    #[test]
    fn a_routing_table_contact_gets_the_contact_budget_and_its_ip_on_another_port_does_not() {
        let mut n = lone_node();
        let contact = PeerAddr::new([10, 1, 1, 1], 6881);
        let forged = PeerAddr::new([10, 1, 1, 1], 6882);
        assert_eq!(
            n.table.insert(Instant::ZERO, NodeId([0x77; 20]), contact),
            InsertOutcome::Inserted
        );
        let q = b"d1:ad9:info_hash3:svce1:q9:get_peers1:t2:aa1:y1:qe";
        let mut reply = [0u8; REPLY_BUF_LEN];
        let stranger = n.config().answer_limit.packets_burst;
        // Within one millisecond: the contact gets far more than a stranger's burst.
        let answered = (0..stranger * 4)
            .filter(|_| {
                n.handle_datagram(Instant::from_millis(1), contact, q, &mut reply)
                    .is_some()
            })
            .count();
        assert_eq!(answered, (stranger * 4) as usize);
        // The same IP on another port is no contact: the IP's buckets count for it only up
        // to a stranger's burst.
        let answered = (0..stranger * 4)
            .filter(|_| {
                n.handle_datagram(Instant::from_millis(1), forged, q, &mut reply)
                    .is_some()
            })
            .count();
        assert_eq!(answered, stranger as usize);
    }

    #[test]
    fn answers_to_one_source_stay_within_its_budget_and_others_are_served() {
        let mut n = lone_node();
        let limit = n.config().answer_limit;
        // A 47-byte get_peers without an id, from a forged source, one a millisecond.
        let q = b"d1:ad9:info_hash3:svce1:q9:get_peers1:t2:aa1:y1:qe";
        let victim = PeerAddr::new([10, 7, 7, 7], 6881);
        let mut reply = [0u8; REPLY_BUF_LEN];
        let (mut packets, mut bytes) = (0u32, 0usize);
        for ms in 0..=1_000 {
            let now = Instant::from_millis(ms);
            if let Some(len) = n.handle_datagram(now, victim, q, &mut reply) {
                packets += 1;
                bytes += len;
            }
        }
        // Over one second: at most the burst plus one second of rate.
        assert_eq!(packets, limit.packets_burst + limit.packets_per_sec);
        assert!(bytes <= (limit.bytes_burst + limit.bytes_per_sec) as usize);
        // Over budget, a query is not even processed: no verification ping to the victim.
        let mut q = b"d1:ad2:id20:".to_vec();
        q.extend_from_slice(&[0x42; 20]);
        q.extend_from_slice(b"e1:q4:ping1:t2:aa1:y1:qe");
        assert!(n
            .handle_datagram(Instant::from_millis(1_000), victim, &q, &mut reply)
            .is_none());
        assert!(n.pings.iter().flatten().all(|p| p.to != victim));
        let q = b"d1:ad9:info_hash3:svce1:q9:get_peers1:t2:aa1:y1:qe";
        // Another source, at the same time: every query answered.
        let now = Instant::from_millis(1_000);
        let other = PeerAddr::new([10, 7, 7, 8], 6881);
        assert!((0..50).all(|_| n.handle_datagram(now, other, q, &mut reply).is_some()));
        assert!(n.handle_datagram(now, victim, q, &mut reply).is_none());
    }

    /// The id of the Sybil at `port`: `SYBIL_NAME`'s bytes, then the port, so that every
    /// Sybil is closer to that name than any honest node.
    fn sybil_id(port: u16) -> NodeId {
        let mut id = [0x5b; 20];
        id[..SYBIL_NAME.len()].copy_from_slice(SYBIL_NAME);
        id[18..].copy_from_slice(&port.to_be_bytes());
        NodeId(id)
    }

    const SYBIL_NAME: &[u8] = b"svc";
    const SYBIL_IP: [u8; 4] = [10, 66, 0, 1];
    const SYBILS: u16 = 40;

    /// What the Sybil at `to` answers: its id to everything, and for traversal queries a token
    /// and 20 other Sybils, never a value; announces are acknowledged and dropped.
    fn sybil_answer(to: PeerAddr, q: &[u8]) -> Option<Vec<u8>> {
        let Ok(Message::Query { t, query, .. }) = krpc::parse(q) else {
            return None;
        };
        let me = sybil_id(to.port);
        let mut buf = [0u8; REPLY_BUF_LEN];
        let others = (1..=20u16).map(|i| {
            let port = (to.port + i - 1) % SYBILS + 1;
            (sybil_id(port), PeerAddr::new(SYBIL_IP, port))
        });
        let n = match query {
            Query::FindNode { .. } | Query::GetPeers { .. } | Query::Get { .. } => {
                krpc::encode_response_nodes_token(&mut buf, t, &me, others, b"tk")
            }
            _ => krpc::encode_response_id(&mut buf, t, &me),
        };
        n.ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn sybils_next_to_a_name_do_not_hide_what_the_bootstrap_node_holds() {
        let mut net = Net::new(10, 21);
        net.bootstrap_all();
        net.sybil_ip = Some(SYBIL_IP);
        // 40 Sybils from one IP query every honest node and answer its verification pings.
        for _ in 0..2 {
            for port in 1..=SYBILS {
                let mut ping = b"d1:ad2:id20:".to_vec();
                ping.extend_from_slice(sybil_id(port).as_bytes());
                ping.extend_from_slice(b"e1:q4:ping1:t2:sy1:y1:qe");
                for i in 0..10 {
                    net.send(PeerAddr::new(SYBIL_IP, port), addr(i), &ping);
                }
            }
            net.run_for(3_000);
        }
        let sybils_in = |net: &Net, i: usize| {
            net.nodes[i]
                .table()
                .iter()
                .filter(|e| e.addr.ip == SYBIL_IP)
                .count()
        };
        assert!(sybils_in(&net, 5) > 0, "the Sybils did not get in at all");
        // One host holds at most its share of the one bucket its ids fall in.
        for i in 0..10 {
            assert!(sybils_in(&net, i) <= NodeConfig::DEFAULT.max_per_ip_in_bucket);
        }
        // Honest nodes stay in the table.
        assert!(
            net.nodes[5]
                .table()
                .iter()
                .filter(|e| e.addr.ip != SYBIL_IP)
                .count()
                >= 9
        );
        // A worker announced now is found through another node: the bootstrap node (0) is
        // asked in both traversals, whatever the Sybils say.
        assert!(net.announce(3, SYBIL_NAME, 4000).unwrap() >= 1);
        let (peers, _) = net.lookup(5, SYBIL_NAME);
        assert_eq!(peers, vec![PeerAddr::new(addr(3).ip, 4000)]);
    }
}
