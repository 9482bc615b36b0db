//! The DHT light client: bootstrap, announce the board's services, answer pings.
//!
//! One task owns a UDP socket and an [`Announcer`] (the core's announce-only client, see
//! [`grenache_core::dht::announcer`]) and runs this loop forever:
//!
//! ```text
//!   send every announcer.poll_transmit();
//!   a round finished (poll_done)? → next service, or schedule the next round
//!   select { datagram => announcer.handle_datagram (+ the answer to a ping),
//!            timer (poll_timeout(), next round) => handle_timeout / start a round }
//! ```
//!
//! # Announcing
//! A round announces each service in turn: it starts from the configured grapes (the
//! bootstrap), runs a `get_peers` traversal for the name that collects write tokens from the
//! closest nodes it finds, then sends `announce_peer` with the worker's port to every node that
//! gave one. A grape stores the UDP source address of that query, i.e. the board's own IP,
//! with the given port: what a client's lookup then returns.
//!
//! Grapes forget a peer after `--dht_peer_maxAge` (120 s by default), so rounds repeat every
//! [`AnnounceConfig::interval`] ([`DEFAULT_INTERVAL`], 30 s: four tries inside one TTL, so one
//! or two lost rounds do not drop the board from lookups). A round in which some service
//! reached no node is retried after [`RETRY_INTERVAL`].
//!
//! # Grape restarts
//! A restarted grape has an empty store and a new id. Every round starts again from the
//! configured addresses and learns the ids from the answers, so the next round (at most
//! `interval` later) stores the board on it again; a grape that is down only costs its
//! queries' timeout.

use embassy_futures::select::{select, Either};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Stack};
use embassy_time::{Duration, Instant as EmbassyInstant, Timer};
use grenache_core::addr::PeerAddr;
use grenache_core::dht::announcer::Announcer;
use grenache_core::Rng;

use crate::{now, trace};

/// Traversal candidates: the closest nodes of a service name the client keeps, and so the most
/// nodes one round announces to. A board lives on a LAN with a few grapes.
pub const CANDIDATES: usize = 8;
/// Most services one board announces.
pub const MAX_SERVICES: usize = 4;
/// Most bootstrap addresses used.
pub const MAX_BOOTSTRAP: usize = CANDIDATES;
/// The buffer each outgoing datagram is written into: the client's queries (an
/// `announce_peer` with a 128-byte name and a 20-byte token is about 260 bytes) and its
/// answers (`{id}`) are short.
pub const DATAGRAM_LEN: usize = 320;
/// Datagrams queued in each direction of the UDP socket.
pub const UDP_PACKETS: usize = 4;
/// Bytes of the UDP socket's receive ring. Datagrams are handed to the client in place, so one
/// of up to this size is read whole (a grape's `get_peers` answers with 20 nodes and many
/// peers are the long ones; longer ones are lost like a dropped datagram).
pub const UDP_RX_RING: usize = 1536;
/// Bytes of the UDP socket's send ring: a few [`DATAGRAM_LEN`] datagrams (a round sends up
/// to three queries at once).
pub const UDP_TX_RING: usize = 3 * DATAGRAM_LEN;

/// How often the services are announced again (grapes keep a peer 120 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// When a round failed (a service reached no node), the next try.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// The UDP port the light client binds by default (any port works: grapes learn it from the
/// datagrams).
pub const DEFAULT_DHT_PORT: u16 = 20002;

/// The DHT client of a board.
pub type LightClient = Announcer<CANDIDATES>;

/// Everything the DHT task needs, in one value the board puts in a static.
pub struct DhtStorage<R: Rng> {
    /// The announce client (exposed so a board can read its id).
    pub client: LightClient,
    rng: R,
    rx_meta: [PacketMetadata; UDP_PACKETS],
    rx_ring: [u8; UDP_RX_RING],
    tx_meta: [PacketMetadata; UDP_PACKETS],
    tx_ring: [u8; UDP_TX_RING],
    out: [u8; DATAGRAM_LEN],
}

impl<R: Rng> DhtStorage<R> {
    /// Storage with a new client (random id from `rng`, which must be a real random source:
    /// each round's transaction ids come from it too).
    pub fn new(mut rng: R) -> Self {
        DhtStorage {
            client: Announcer::new(&mut rng),
            rng,
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
    /// tutorial). At most [`MAX_BOOTSTRAP`] are used.
    pub bootstrap: &'a [PeerAddr],
    /// Service names to announce (at most [`MAX_SERVICES`]).
    pub services: &'a [&'a str],
    /// The TCP port of the worker, announced with each service.
    pub service_port: u16,
    /// The local UDP port of the DHT client.
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
/// `config.dht_port`, then announces `config.services` every `config.interval` and answers
/// pings. Await it from a dedicated task.
pub async fn run_announcer<R: Rng>(
    stack: Stack<'_>,
    storage: &mut DhtStorage<R>,
    config: &AnnounceConfig<'_>,
) -> ! {
    let DhtStorage {
        client,
        rng,
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
    let seeds = config
        .bootstrap
        .get(..MAX_BOOTSTRAP)
        .unwrap_or(config.bootstrap);
    let services = config
        .services
        .get(..MAX_SERVICES)
        .unwrap_or(config.services);
    let mut next_round = EmbassyInstant::now();
    // The service being announced (`services.len()` between rounds), and whether every
    // service of this round so far reached a node.
    let mut service = services.len();
    let mut round_ok = true;
    // The answer to the last query received, not sent yet.
    let mut reply: Option<(usize, IpEndpoint)> = None;
    loop {
        // That answer, then the client's queries, through one send (each await point costs
        // flash).
        loop {
            let (len, to) = match reply.take() {
                Some(r) => r,
                None => match client.poll_transmit(now(), out) {
                    Some(tx) => (tx.len, endpoint(tx.to)),
                    None => break,
                },
            };
            if let Some(bytes) = out.get(..len) {
                // A send fails only for an unroutable address or an oversized datagram;
                // the query then times out like a lost one.
                let _ = socket.send_to(bytes, to).await;
            }
        }
        if let Some(acks) = client.poll_done() {
            trace!("dht: announced to {} nodes", acks);
            round_ok &= acks > 0;
            service += 1;
        }
        if !client.is_running() {
            if service >= services.len() && EmbassyInstant::now() >= next_round {
                // A new round.
                service = 0;
                round_ok = true;
                next_round = EmbassyInstant::now() + config.interval;
            }
            if let Some(name) = services.get(service) {
                let port = config.service_port;
                if client.start(rng, name.as_bytes(), port, seeds).is_err() {
                    trace!("dht: cannot announce (no grape, bad name or port)");
                    round_ok = false;
                    service += 1;
                }
                // Started rounds have queries to send: go round once more.
                continue;
            }
            if !round_ok {
                next_round = next_round.min(EmbassyInstant::now() + RETRY_INTERVAL);
                round_ok = true;
            }
        }
        let wake = match client.poll_timeout() {
            Some(d) => {
                let wait = d.as_millis().saturating_sub(now().as_millis());
                EmbassyInstant::now() + Duration::from_millis(wait)
            }
            None if client.is_running() => EmbassyInstant::MAX,
            None => next_round,
        };
        // The datagram is read in place from the receive ring (no copy, no second buffer);
        // the answer goes to `out` and is sent once the ring is released.
        let received = socket.recv_from_with(|bytes, meta| {
            let from = peer(meta.endpoint)?;
            let len = client.handle_datagram(from, bytes, out)?;
            Some((len, meta.endpoint))
        });
        match select(received, Timer::at(wake)).await {
            Either::First(r) => reply = r,
            Either::Second(()) => client.handle_timeout(now()),
        }
    }
}
