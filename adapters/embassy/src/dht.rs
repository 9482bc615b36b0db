//! The DHT light client: bootstrap, announce the board's services, answer queries.
//!
//! One task owns a UDP socket and a small [`Node`] and runs this loop forever:
//!
//! ```text
//!   send every node.poll_transmit(); read every node.poll_event();
//!   select { datagram => node.handle_datagram (+ the reply),
//!            timer (node.poll_timeout(), next announce) => node.handle_timeout / announce }
//! ```
//!
//! # Announcing
//! Each service is announced with [`Node::announce`]: a `get_peers` traversal that collects
//! write tokens, then `announce_peer` with the worker's port to every node that gave one. A
//! grape stores the UDP source address of that query, i.e. the board's own IP, with the given
//! port: what a client's lookup then returns.
//!
//! Grapes forget a peer after `--dht_peer_maxAge` (120 s by default), so the services are
//! announced again every [`AnnounceConfig::interval`] ([`DEFAULT_INTERVAL`], 30 s: four tries
//! inside one TTL, so one or two lost rounds do not drop the board from lookups). A round
//! that reached no node is retried after [`RETRY_INTERVAL`].
//!
//! # Grape restarts
//! A restarted grape has an empty store and a new id. The next announce round stores the
//! board again (at most `interval` later): its traversal starts from the routing table and,
//! when that has nothing, from the bootstrap addresses. Queries to a grape that is down time
//! out, and the node drops unresponsive nodes from its table; when the table is empty, the
//! node's own maintenance tick ([`Node::handle_timeout`], every
//! `NodeConfig::maintenance_interval`) starts a new bootstrap from the configured addresses.

use embassy_futures::select::{select, Either};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Stack};
use embassy_time::{Duration, Instant as EmbassyInstant, Timer};
use grenache_core::addr::PeerAddr;
use grenache_core::node::{Event, Node, NodeConfig};
use grenache_core::Rng;

use crate::{now, trace};

/// Routing-table slots: one bucket's worth. A board talks to a handful of grapes; it does not
/// serve as a routing hub.
pub const TABLE: usize = 20;
/// Service names other nodes may announce to this one (it answers `announce_peer` like any
/// node, but keeps little).
pub const NAMES: usize = 2;
/// Announced peers kept for other nodes, all names together.
pub const PEERS: usize = 4;
/// BEP44 items kept for other nodes (none: a `put` to the board is refused).
pub const ITEMS: usize = 0;
/// Operations at once (about 1.8 KiB each). Two: the bootstrap and an announce, or two
/// announces. With more services than free slots, a round announces what it can and retries
/// the rest after [`RETRY_INTERVAL`].
pub const OPS: usize = 2;
/// Candidates per traversal. Well below the core's recommended 2·K = 40: a board lives on a
/// LAN with a few grapes, and each candidate costs about 200 bytes in every operation slot.
pub const CANDIDATES: usize = 8;
/// Outstanding KRPC queries of all operations together.
pub const INFLIGHT: usize = 8;
/// Peers a lookup collects: none, the light client never looks up (it only announces).
pub const LOOKUP_PEERS: usize = 0;
/// BEP44 value bytes of an operation: none, the light client never puts or gets.
pub const VALUE: usize = 0;
/// Pings waiting for a transaction slot (evictions and liveness checks of a small table; a
/// ping that finds no room is skipped and the node is checked at the next sweep).
pub const PINGS: usize = 4;
/// Most services one board announces.
pub const MAX_SERVICES: usize = 4;
/// The buffer the node writes each outgoing datagram into. Below the core's
/// [`grenache_core::node::REPLY_BUF_LEN`] (which covers 100 peers in one answer): the light
/// node's answers carry at most K = 20 nodes and [`PEERS`] peers (about 650 bytes), and its
/// queries are short; an answer that does not fit is not sent, like a lost datagram.
pub const DATAGRAM_LEN: usize = 768;
/// Datagrams queued in each direction of the UDP socket.
pub const UDP_PACKETS: usize = 4;
/// Bytes of the UDP socket's receive ring. Datagrams are handed to the node in place, so one
/// of up to this size is read whole (a grape's answers with many peers are the long ones).
pub const UDP_RX_RING: usize = 1536;
/// Bytes of the UDP socket's send ring: at least one [`DATAGRAM_LEN`] datagram.
pub const UDP_TX_RING: usize = DATAGRAM_LEN;

/// How often the services are announced again (grapes keep a peer 120 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// When a round failed (no node answered, or no operation slot), the next try.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The UDP port the light client binds by default (any port works: grapes learn it from the
/// datagrams).
pub const DEFAULT_DHT_PORT: u16 = 20002;

/// The node type of a board.
pub type LightNode<R> =
    Node<R, TABLE, NAMES, PEERS, ITEMS, OPS, CANDIDATES, INFLIGHT, LOOKUP_PEERS, VALUE, PINGS>;

/// Everything the DHT task needs, in one value the board puts in a static.
pub struct DhtStorage<R: Rng> {
    /// The DHT node (exposed so a board can read its id or table).
    pub node: LightNode<R>,
    rx_meta: [PacketMetadata; UDP_PACKETS],
    rx_ring: [u8; UDP_RX_RING],
    tx_meta: [PacketMetadata; UDP_PACKETS],
    tx_ring: [u8; UDP_TX_RING],
    out: [u8; DATAGRAM_LEN],
}

impl<R: Rng> DhtStorage<R> {
    /// Storage with a new node (random id from `rng`, which must be a real random source:
    /// token secrets come from it too).
    pub fn new(rng: R, config: NodeConfig) -> Self {
        DhtStorage {
            node: Node::new(rng, config, now()),
            rx_meta: [PacketMetadata::EMPTY; UDP_PACKETS],
            rx_ring: [0; UDP_RX_RING],
            tx_meta: [PacketMetadata::EMPTY; UDP_PACKETS],
            tx_ring: [0; UDP_TX_RING],
            out: [0; DATAGRAM_LEN],
        }
    }
}

/// What to announce, where to, and how often.
#[derive(Clone, Copy, Debug)]
pub struct AnnounceConfig<'a> {
    /// Grapes to bootstrap from (their DHT UDP addresses, e.g. `dp` 20001/20002 of the
    /// tutorial). At most [`grenache_core::node::MAX_BOOTSTRAP`] are used.
    pub bootstrap: &'a [PeerAddr],
    /// Service names to announce (at most [`MAX_SERVICES`]).
    pub services: &'a [&'a str],
    /// The TCP port of the worker, announced with each service.
    pub service_port: u16,
    /// The local UDP port of the DHT node.
    pub dht_port: u16,
    /// Re-announce period; keep it well under the grapes' peer TTL (120 s).
    pub interval: Duration,
}

impl<'a> AnnounceConfig<'a> {
    /// A configuration with [`DEFAULT_DHT_PORT`] and [`DEFAULT_INTERVAL`].
    pub const fn new(
        bootstrap: &'a [PeerAddr],
        services: &'a [&'a str],
        service_port: u16,
    ) -> Self {
        AnnounceConfig {
            bootstrap,
            services,
            service_port,
            dht_port: DEFAULT_DHT_PORT,
            interval: DEFAULT_INTERVAL,
        }
    }
}

fn endpoint(p: PeerAddr) -> IpEndpoint {
    let [a, b, c, d] = p.ip;
    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(a, b, c, d)), p.port)
}

/// The IPv4 peer of an endpoint (`None` for IPv6 when the board enables it: the Grenache DHT
/// is IPv4 only).
#[allow(irrefutable_let_patterns, unreachable_patterns)]
fn peer(e: IpEndpoint) -> Option<PeerAddr> {
    match e.addr {
        IpAddress::Ipv4(a) => Some(PeerAddr::new(a.octets(), e.port)),
        _ => None,
    }
}

/// Runs the light client forever on `stack`: waits for the network configuration, binds
/// `config.dht_port`, bootstraps, then announces `config.services` every `config.interval`
/// and answers queries. Await it from a dedicated task.
pub async fn run_announcer<R: Rng>(
    stack: Stack<'_>,
    storage: &mut DhtStorage<R>,
    config: &AnnounceConfig<'_>,
) -> ! {
    let DhtStorage {
        node,
        rx_meta,
        rx_ring,
        tx_meta,
        tx_ring,
        out,
    } = storage;
    stack.wait_config_up().await;
    let mut socket = UdpSocket::new(stack, rx_meta, rx_ring, tx_meta, tx_ring);
    while socket.bind(config.dht_port).is_err() {
        // Only a port already taken by another socket fails; wait rather than stop.
        trace!("dht: cannot bind UDP port {}", config.dht_port);
        Timer::after(RETRY_INTERVAL).await;
    }
    for b in config.bootstrap {
        node.add_bootstrap(*b);
    }
    let _ = node.start_bootstrap(now());
    let mut next_announce = EmbassyInstant::now();
    // Announces of the round in progress, and how many of them stored the board somewhere.
    let mut pending = 0usize;
    let mut round_ok = false;
    loop {
        let t = now();
        while let Some(tx) = node.poll_transmit(t, out) {
            if let Some(bytes) = out.get(..tx.len) {
                // A send fails only for an unroutable address or an oversized datagram;
                // the query then times out like a lost one.
                let _ = socket.send_to(bytes, endpoint(tx.to)).await;
            }
        }
        while let Some(event) = node.poll_event() {
            match event {
                Event::Bootstrapped { nodes, .. } => trace!("dht: bootstrapped, {} nodes", nodes),
                Event::AnnounceDone { result, .. } => {
                    pending = pending.saturating_sub(1);
                    match result {
                        Ok(acks) => {
                            trace!("dht: announced to {} nodes", acks);
                            round_ok |= acks > 0;
                        }
                        Err(e) => trace!("dht: announce failed: {}", e.message()),
                    }
                    if pending == 0 && !round_ok {
                        next_announce = EmbassyInstant::now() + RETRY_INTERVAL;
                    }
                }
                _ => {}
            }
        }
        if pending == 0 && EmbassyInstant::now() >= next_announce {
            let t = now();
            round_ok = false;
            next_announce = EmbassyInstant::now() + config.interval;
            for name in config.services.iter().take(MAX_SERVICES) {
                match node.announce(t, name.as_bytes(), config.service_port) {
                    Ok(_) => pending += 1,
                    Err(_) => next_announce = EmbassyInstant::now() + RETRY_INTERVAL,
                }
            }
            // Started operations have queries to send: go round once more.
            continue;
        }
        // While a round runs, its end (an event) schedules the next one.
        let announce_at = if pending == 0 {
            next_announce
        } else {
            EmbassyInstant::MAX
        };
        let wake = node
            .poll_timeout()
            .map(|d| {
                let wait = d.as_millis().saturating_sub(now().as_millis());
                EmbassyInstant::now() + Duration::from_millis(wait)
            })
            .map_or(announce_at, |d| d.min(announce_at));
        // The datagram is read in place from the receive ring (no copy, no second buffer);
        // the answer goes to `out` and is sent once the ring is released.
        let received = socket.recv_from_with(|bytes, meta| {
            let from = peer(meta.endpoint)?;
            let len = node.handle_datagram(now(), from, bytes, out)?;
            Some((len, meta.endpoint))
        });
        match select(received, Timer::at(wake)).await {
            Either::First(Some((len, to))) => {
                if let Some(reply) = out.get(..len) {
                    let _ = socket.send_to(reply, to).await;
                }
            }
            Either::First(None) => {}
            Either::Second(()) => node.handle_timeout(now()),
        }
    }
}
