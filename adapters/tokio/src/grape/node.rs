//! The grape's DHT node on a UDP socket: the loop that drives [`grenache_core::dht::node::Node`].
//!
//! One thread owns the socket and the node (a single-threaded tokio runtime: the engine is a
//! plain value, nothing to share). Other tasks talk to it through a [`Dht`] handle, which
//! implements the API's [`GrapeDht`] seam: it sends commands over a bounded channel and awaits
//! the answer. Nothing protocol-shaped is decided here: the loop only moves bytes, time and
//! commands in and events out.
//!
//! ```text
//!   loop {
//!       send every poll_transmit(); route every poll_event() to its waiters;
//!       select! { datagram => handle_datagram (+ reply), command => start an operation,
//!                 sleep until poll_timeout() => handle_timeout }
//!   }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant as StdInstant;

use grenache_core::addr::PeerAddr;
use grenache_core::dht::bep44::Key;
use grenache_core::dht::id::{bucket_index, NodeId};
use grenache_core::dht::node::{Event, Node, NodeConfig, OpId, StartError, REPLY_BUF_LEN};
use grenache_core::Instant;
use tokio::sync::{mpsc, oneshot};

use super::config::{GrapeConfig, DEFAULT_MAX_VALUES};
use super::dht::{DhtError, GetQuery, GotItem, GrapeDht, PutItem};
use super::stats::{
    AtomicHistogram, ContactStatus, DhtCounters, DhtStatus, RecentLookup, StoredName, Traffic,
    LATENCY_BOUNDS, MAX_LISTED_NAMES, MAX_LISTED_PEERS, QUERY_BOUNDS, RECENT_LOOKUPS,
};
use crate::OsRng;

/// Routing-table slots of a host node (32 buckets of K = 20).
pub const TABLE: usize = 640;
/// Service names a host node stores (at most one per stored peer, so no more than [`PEERS`]).
pub const NAMES: usize = 10_240;
/// Announced peers a host node stores, all names together: a little above bittorrent-dht's
/// `maxPeers` of 10,000 (`dht:23`), the Node grape's bound.
pub const PEERS: usize = 10_240;
/// BEP44 items a host node can keep: the documented default of `--dht_maxValues` (5000), which
/// a grape may lower but not raise. About 1.2 KB each (a value of up to 1005 bytes, inline),
/// so 5.9 MB.
pub const ITEMS: usize = 5000;
// The documented default must start.
const _: () = assert!(DEFAULT_MAX_VALUES <= ITEMS);
/// Operations (lookups, announces, puts, gets) running at once; more wait in a queue.
pub const OPS: usize = 64;
/// Candidates per traversal.
pub const CANDIDATES: usize = 64;
/// Outstanding KRPC queries.
pub const INFLIGHT: usize = 512;
/// Commands waiting for a free operation slot; beyond this a command fails with
/// [`DhtError::Busy`].
pub const MAX_QUEUED: usize = 4096;

/// The host node type.
pub type HostNode = Node<OsRng, TABLE, NAMES, PEERS, ITEMS, OPS, CANDIDATES, INFLIGHT>;

/// How to run a DHT node.
#[derive(Clone, Debug)]
pub struct DhtConfig {
    /// UDP address to bind (`0.0.0.0:<dp>` like the Node grape).
    pub bind: SocketAddrV4,
    /// Bootstrap nodes (`--bn`).
    pub bootstrap: Vec<SocketAddrV4>,
    /// Engine tuning.
    pub node: NodeConfig,
}

enum Command {
    Lookup(
        Vec<u8>,
        oneshot::Sender<Result<Vec<SocketAddrV4>, DhtError>>,
    ),
    Announce(Vec<u8>, u16, oneshot::Sender<Result<usize, DhtError>>),
    Unannounce(Vec<u8>, u16, oneshot::Sender<Result<usize, DhtError>>),
    Put(Box<PutItem>, oneshot::Sender<Result<Key, DhtError>>),
    Get(GetQuery, oneshot::Sender<Result<Option<GotItem>, DhtError>>),
    /// A snapshot for the operator endpoints; answered at once, never queued.
    Status(oneshot::Sender<DhtStatus>),
}

/// A handle on a running DHT node; cheap to clone. Its operations are the [`GrapeDht`] methods
/// (`lookup`, `announce`, `unannounce`, `put`, `get`): bring the trait into scope to call them.
/// Concurrent lookups of one name share one traversal; commands beyond the free operation slots
/// wait in a queue of [`MAX_QUEUED`].
#[derive(Clone, Debug)]
pub struct Dht {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddrV4,
    id: NodeId,
    /// Bumped by the DHT thread whenever the node's peer store gains or loses a peer.
    store_changes: Arc<AtomicU64>,
}

/// The running DHT thread; dropping every [`Dht`] handle stops it.
pub struct DhtThread {
    thread: std::thread::JoinHandle<()>,
}

impl DhtThread {
    /// Waits until the DHT thread has stopped (after every [`Dht`] handle was dropped).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

impl Dht {
    /// Binds the UDP socket (an address in use fails here, at once) and starts the node on
    /// its own thread, bootstrapping from `config.bootstrap`.
    pub fn spawn(config: DhtConfig) -> io::Result<(Dht, DhtThread)> {
        let socket = std::net::UdpSocket::bind(config.bind)?;
        socket.set_nonblocking(true)?;
        let local_addr = match socket.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => return Err(io::Error::other("the DHT socket must be IPv4")),
        };
        let rng = OsRng::new()?;
        let (tx, rx) = mpsc::channel(1024);
        let clock = StdInstant::now();
        let mut node = build_node(rng, config.node, now(clock))?;
        for b in &config.bootstrap {
            node.add_bootstrap(peer_of(*b));
        }
        if !config.bootstrap.is_empty() {
            let _ = node.start_bootstrap(now(clock));
        }
        let id = *node.id();
        let store_changes = Arc::new(AtomicU64::new(0));
        let changes = Arc::clone(&store_changes);
        let thread = std::thread::Builder::new()
            .name("grenache-dht".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the DHT runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let socket = match tokio::net::UdpSocket::from_std(socket) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!("cannot register the DHT socket: {e}");
                            return;
                        }
                    };
                    let ops = Ops::new(!config.bootstrap.is_empty());
                    run(&mut node, socket, rx, clock, &changes, ops).await;
                });
            })?;
        let dht = Dht {
            tx,
            local_addr,
            id,
            store_changes,
        };
        Ok((dht, DhtThread { thread }))
    }

    /// The UDP address the node listens on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local_addr
    }

    /// The node id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, DhtError>>) -> Command,
    ) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DhtError::Destroyed)?;
        rx.await.map_err(|_| DhtError::Destroyed)?
    }
}

/// Builds the node on the heap.
///
/// The node holds its stores inline (a few MB). Built by value it passes through the stack,
/// possibly more than once, and stack pages once touched stay resident: so it is built on a
/// short-lived thread with a large stack, boxed there, and that thread's stack is unmapped
/// when it ends. Only the boxed node stays in memory.
fn build_node(rng: OsRng, config: NodeConfig, now: Instant) -> io::Result<Box<HostNode>> {
    std::thread::Builder::new()
        .name("grenache-dht-init".into())
        .stack_size(64 << 20)
        .spawn(move || Box::new(HostNode::new(rng, config, now)))?
        .join()
        .map_err(|_| io::Error::other("building the DHT node failed"))
}

fn now(clock: StdInstant) -> Instant {
    Instant::from_millis(u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX))
}

fn peer_of(a: SocketAddrV4) -> PeerAddr {
    PeerAddr::new(a.ip().octets(), a.port())
}

fn addr_of(p: PeerAddr) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(p.ip), p.port)
}

/// Who waits for which operation.
enum Waiter {
    Lookup(
        Vec<oneshot::Sender<Result<Vec<SocketAddrV4>, DhtError>>>,
        Vec<u8>,
    ),
    Count(oneshot::Sender<Result<usize, DhtError>>),
    Put(oneshot::Sender<Result<Key, DhtError>>),
    Get(oneshot::Sender<Result<Option<GotItem>, DhtError>>),
}

struct Loop {
    waiters: HashMap<OpId, Waiter>,
    /// Running lookups by name, to coalesce concurrent ones.
    lookups: HashMap<Vec<u8>, OpId>,
    queued: VecDeque<Command>,
    /// What operators see of this node.
    ops: Ops,
}

/// What the DHT thread keeps for operators (`grape::stats`): owned by the thread, copied out
/// on a [`Command::Status`].
struct Ops {
    counters: DhtCounters,
    traffic: Traffic,
    /// Bootstrap nodes were given (a grape without any is ready alone).
    has_bootstrap: bool,
    /// The bootstrap traversal has ended.
    bootstrap_done: bool,
    /// Running lookup traversals: when each started.
    started: HashMap<OpId, StdInstant>,
    /// Traversals that ended this turn, waiting for their query counts.
    ended: Vec<(OpId, RecentLookup)>,
    recent: VecDeque<RecentLookup>,
    traversal_seconds: AtomicHistogram,
    traversal_queries: AtomicHistogram,
}

impl Ops {
    fn new(has_bootstrap: bool) -> Self {
        Ops {
            counters: DhtCounters::default(),
            traffic: Traffic::default(),
            has_bootstrap,
            bootstrap_done: !has_bootstrap,
            started: HashMap::new(),
            ended: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_LOOKUPS),
            traversal_seconds: AtomicHistogram::new(LATENCY_BOUNDS),
            traversal_queries: AtomicHistogram::new(QUERY_BOUNDS),
        }
    }

    fn received(&mut self, datagram: &[u8], clock: StdInstant) {
        self.counters.received(datagram);
        self.traffic.count(clock.elapsed().as_secs());
    }

    fn sent(&mut self, datagram: &[u8], clock: StdInstant) {
        self.counters.sent(datagram);
        self.traffic.count(clock.elapsed().as_secs());
    }

    fn lookup_ended(&mut self, op: OpId, name: &[u8], peers: usize) {
        let took = self
            .started
            .remove(&op)
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        let ended_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.ended.push((
            op,
            RecentLookup {
                name: String::from_utf8_lossy(name).into_owned(),
                ended_unix_ms,
                took,
                peers,
                queries: 0,
            },
        ));
    }

    /// Completes the traversals that ended this turn with their query counts (readable
    /// until their slots are reused, so right after the events).
    fn traversals_done(&mut self, node: &HostNode) {
        for (op, mut lookup) in self.ended.drain(..) {
            lookup.queries = node.queries_sent(op).unwrap_or(0);
            self.traversal_seconds.observe(lookup.took.as_secs_f64());
            self.traversal_queries.observe(lookup.queries as f64);
            if self.recent.len() >= RECENT_LOOKUPS {
                self.recent.pop_back();
            }
            self.recent.push_front(lookup);
        }
    }

    fn status(&self, node: &HostNode, now: Instant, clock: StdInstant) -> DhtStatus {
        let own = *node.id();
        let liveness = node.config().node_liveness;
        let contacts: Vec<ContactStatus> = node
            .table()
            .iter()
            .map(|e| ContactStatus {
                addr: addr_of(e.addr),
                bucket: bucket_index(&own, &e.id).unwrap_or(0),
                live: e.failed == 0 && e.last_seen.saturating_add(liveness) > now,
                seen_ago: std::time::Duration::from_millis(
                    now.as_millis().saturating_sub(e.last_seen.as_millis()),
                ),
            })
            .collect();
        let stored = node
            .store()
            .entries()
            .take(MAX_LISTED_NAMES)
            .map(|(name, peers)| StoredName {
                name: String::from_utf8_lossy(name).into_owned(),
                peers: peers
                    .filter(|(_, deadline)| *deadline > now)
                    .take(MAX_LISTED_PEERS)
                    .map(|(addr, deadline)| {
                        let left = (deadline.as_millis() != u64::MAX).then(|| {
                            std::time::Duration::from_millis(
                                deadline.as_millis().saturating_sub(now.as_millis()),
                            )
                        });
                        (addr_of(addr), left)
                    })
                    .collect(),
            })
            .collect();
        let mut counters = self.counters.clone();
        counters.rate_limited = u64::from(node.rate_limited());
        DhtStatus {
            id: own.0,
            bootstrapped: self.bootstrap_done && (!self.has_bootstrap || !contacts.is_empty()),
            contacts,
            names: node.store().names_len(),
            peers: node.store().len(),
            items: node.items_len(),
            stored,
            recent_lookups: self.recent.iter().cloned().collect(),
            traffic: self.traffic.series(clock.elapsed().as_secs()),
            counters,
            traversal_seconds: self.traversal_seconds.snapshot(),
            traversal_queries: self.traversal_queries.snapshot(),
        }
    }
}

/// Sends one datagram. tokio's `try_send_to` answers `WouldBlock` until it has seen the socket
/// writable once, so the first datagram of a fresh socket (a bootstrap query) was dropped; on
/// `WouldBlock` this waits for writability instead, which for UDP takes microseconds.
async fn send_to(
    socket: &tokio::net::UdpSocket,
    bytes: &[u8],
    to: SocketAddr,
) -> io::Result<usize> {
    match socket.try_send_to(bytes, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(bytes, to).await,
        other => other,
    }
}

/// Bumps `changes` when the node's peer count moved since `seen`; this runs after every
/// datagram, timeout and command. A change that keeps the count (a new peer evicting the
/// oldest one from a full store) goes unseen: answers kept for reuse then live out their short
/// window (`grape::ApiConfig::lookup_reuse`).
fn note_store_change(node: &HostNode, seen: &mut usize, changes: &AtomicU64) {
    let len = node.store().len();
    if len != *seen {
        *seen = len;
        changes.fetch_add(1, Ordering::Release);
    }
}

async fn run(
    node: &mut HostNode,
    socket: tokio::net::UdpSocket,
    mut rx: mpsc::Receiver<Command>,
    clock: StdInstant,
    changes: &AtomicU64,
    ops: Ops,
) {
    let mut store_len = node.store().len();
    let mut state = Loop {
        waiters: HashMap::new(),
        lookups: HashMap::new(),
        queued: VecDeque::new(),
        ops,
    };
    let mut out = vec![0u8; REPLY_BUF_LEN];
    let mut reply = vec![0u8; REPLY_BUF_LEN];
    // Datagrams larger than this are truncated by the kernel and then fail to parse.
    let mut input = vec![0u8; 65_536];
    let mut open = true;
    loop {
        note_store_change(node, &mut store_len, changes);
        let t = now(clock);
        if state.drop_abandoned(node) {
            state.start_queued(node, t);
        }
        // Output first: queries of running operations, then finished operations.
        while let Some(tx) = node.poll_transmit(t, &mut out) {
            if let Some(bytes) = out.get(..tx.len) {
                state.ops.sent(bytes, clock);
                if let Err(e) = send_to(&socket, bytes, SocketAddr::V4(addr_of(tx.to))).await {
                    tracing::debug!("DHT send to {} failed: {e}", addr_of(tx.to));
                }
            }
        }
        let mut freed = false;
        while let Some(event) = node.poll_event() {
            state.finish(event);
            freed = true;
        }
        state.ops.traversals_done(node);
        if freed {
            state.start_queued(node, t);
            continue;
        }
        if !open && state.waiters.is_empty() {
            return;
        }
        let deadline = node.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => {
                    let wait = d.as_millis().saturating_sub(now(clock).as_millis());
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            received = socket.recv_from(&mut input) => match received {
                Ok((n, SocketAddr::V4(from))) => {
                    let t = now(clock);
                    let data = input.get(..n).unwrap_or(&[]);
                    state.ops.received(data, clock);
                    let answer = node.handle_datagram(t, peer_of(from), data, &mut reply);
                    // Before the answer leaves: whoever sees it must see the change too.
                    note_store_change(node, &mut store_len, changes);
                    if let Some(len) = answer {
                        if let Some(bytes) = reply.get(..len) {
                            state.ops.sent(bytes, clock);
                            if let Err(e) = send_to(&socket, bytes, SocketAddr::V4(from)).await {
                                tracing::debug!("DHT reply to {from} failed: {e}");
                            }
                        }
                    }
                }
                Ok((_, SocketAddr::V6(from))) => {
                    tracing::debug!("ignoring an IPv6 datagram from {from}");
                }
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems: not fatal.
                    tracing::debug!("DHT receive error: {e}");
                }
            },
            command = rx.recv(), if open => match command {
                Some(c) => state.command(node, now(clock), c, clock),
                None => open = false,
            },
            () = sleep => node.handle_timeout(now(clock)),
        }
    }
}

impl Loop {
    fn command(&mut self, node: &mut HostNode, t: Instant, c: Command, clock: StdInstant) {
        // Its caller is gone (an HTTP client that hung up): nobody wants the result.
        if c.abandoned() {
            return;
        }
        if let Command::Status(tx) = c {
            let _ = tx.send(self.ops.status(node, t, clock));
            return;
        }
        if let Err(c) = self.try_start(node, t, c) {
            if self.queued.len() >= MAX_QUEUED {
                c.fail(DhtError::Busy);
            } else {
                self.queued.push_back(c);
            }
        }
    }

    fn start_queued(&mut self, node: &mut HostNode, t: Instant) {
        while let Some(c) = self.queued.pop_front() {
            if c.abandoned() {
                continue;
            }
            if let Err(c) = self.try_start(node, t, c) {
                self.queued.push_front(c);
                return;
            }
        }
    }

    /// Cancels the running reads nobody waits for any more: a lookup whose every caller went
    /// away, a get whose caller did. Their slots and in-flight queries go to other work (a flood
    /// of lookups from clients that hang up at once must not keep the node busy). Writes
    /// (announce, unannounce, put) run to the end: their effect is wanted even unobserved.
    /// Runs on every turn of the loop (at most [`OPS`] waiters); `true` when a slot was freed.
    fn drop_abandoned(&mut self, node: &mut HostNode) -> bool {
        let mut freed = false;
        let lookups = &mut self.lookups;
        self.waiters.retain(|op, waiter| {
            let gone = match waiter {
                Waiter::Lookup(list, name) => {
                    list.retain(|tx| !tx.is_closed());
                    let gone = list.is_empty();
                    if gone {
                        lookups.remove(name);
                    }
                    gone
                }
                Waiter::Get(tx) => tx.is_closed(),
                Waiter::Count(_) | Waiter::Put(_) => false,
            };
            if gone {
                node.cancel(*op);
                freed = true;
            }
            !gone
        });
        freed
    }

    /// Starts `c`; gives it back when every operation slot is taken.
    fn try_start(&mut self, node: &mut HostNode, t: Instant, c: Command) -> Result<(), Command> {
        let started = match &c {
            Command::Lookup(name, _) => {
                if let Some(op) = self.lookups.get(name) {
                    if let (Some(Waiter::Lookup(list, _)), Command::Lookup(_, tx)) =
                        (self.waiters.get_mut(op), c)
                    {
                        list.push(tx);
                    }
                    return Ok(());
                }
                node.lookup(t, name)
            }
            Command::Announce(name, port, _) => node.announce(t, name, *port),
            Command::Unannounce(name, port, _) => node.unannounce(t, name, *port),
            Command::Put(item, _) => match &item.mutable {
                None => node.put_immutable(t, &item.v_bencoded),
                Some(m) => {
                    // An empty salt is no salt: the wire then carries no `salt` key.
                    let salt = (!m.salt.is_empty()).then_some(m.salt.as_slice());
                    node.put_mutable(t, &m.k, salt, m.seq, &m.sig, &item.v_bencoded, m.cas)
                }
            },
            Command::Get(query, _) => node.get(t, &query.hash, query.salt.as_deref(), query.cache),
            // Answered in `command`, never started here.
            Command::Status(_) => return Ok(()),
        };
        let op = match started {
            Err(StartError::Busy) => return Err(c),
            Err(e) => {
                c.fail(DhtError::Refused(e));
                return Ok(());
            }
            Ok(op) => op,
        };
        let waiter = match c {
            Command::Lookup(name, tx) => {
                self.lookups.insert(name.clone(), op);
                self.ops.started.insert(op, StdInstant::now());
                Waiter::Lookup(vec![tx], name)
            }
            Command::Announce(_, _, tx) | Command::Unannounce(_, _, tx) => Waiter::Count(tx),
            Command::Put(_, tx) => Waiter::Put(tx),
            Command::Get(_, tx) => Waiter::Get(tx),
            Command::Status(_) => return Ok(()),
        };
        self.waiters.insert(op, waiter);
        Ok(())
    }

    fn finish(&mut self, event: Event<'_>) {
        match event {
            Event::Bootstrapped { nodes, .. } => {
                tracing::info!("bootstrapped: {nodes} nodes in the routing table");
                self.ops.bootstrap_done = true;
            }
            Event::LookupDone { op, peers } => {
                if let Some(Waiter::Lookup(list, name)) = self.waiters.remove(&op) {
                    self.lookups.remove(&name);
                    self.ops.lookup_ended(op, &name, peers.len());
                    let found: Vec<SocketAddrV4> = peers.iter().map(|p| addr_of(*p)).collect();
                    for tx in list {
                        let _ = tx.send(Ok(found.clone()));
                    }
                }
            }
            Event::AnnounceDone { op, result } | Event::UnannounceDone { op, result } => {
                if let Some(Waiter::Count(tx)) = self.waiters.remove(&op) {
                    let _ = tx.send(result.map_err(DhtError::from));
                }
            }
            Event::PutDone { op, result } => {
                if let Some(Waiter::Put(tx)) = self.waiters.remove(&op) {
                    let _ = tx.send(result.map_err(DhtError::from));
                }
            }
            Event::GetDone { op, item } => {
                if let Some(Waiter::Get(tx)) = self.waiters.remove(&op) {
                    let item = item.map(|i| GotItem {
                        id: i.id.0,
                        token: i.token.map(<[u8]>::to_vec),
                        v_bencoded: i.v.to_vec(),
                        k: i.signed.as_ref().map(|s| *s.k),
                        sig: i.signed.as_ref().map(|s| *s.sig),
                        seq: i.signed.as_ref().map(|s| s.seq),
                        from_local: i.local,
                    });
                    let _ = tx.send(Ok(item));
                }
            }
        }
    }
}

impl Command {
    /// Whether whoever sent the command has stopped waiting for its answer.
    fn abandoned(&self) -> bool {
        match self {
            Command::Lookup(_, tx) => tx.is_closed(),
            Command::Announce(_, _, tx) | Command::Unannounce(_, _, tx) => tx.is_closed(),
            Command::Put(_, tx) => tx.is_closed(),
            Command::Get(_, tx) => tx.is_closed(),
            Command::Status(tx) => tx.is_closed(),
        }
    }

    fn fail(self, e: DhtError) {
        match self {
            Command::Lookup(_, tx) => drop(tx.send(Err(e))),
            Command::Announce(_, _, tx) | Command::Unannounce(_, _, tx) => drop(tx.send(Err(e))),
            Command::Put(_, tx) => drop(tx.send(Err(e))),
            Command::Get(_, tx) => drop(tx.send(Err(e))),
            // A snapshot cannot fail; dropping the sender tells the caller there is none.
            Command::Status(tx) => drop(tx),
        }
    }
}

impl DhtConfig {
    /// The DHT of a grape started with `config`: UDP on `0.0.0.0:<dp>` (like the Node grape,
    /// whatever `-b` says), bootstrap names resolved now (IPv4 only), the documented timers.
    pub fn for_grape(config: &GrapeConfig) -> io::Result<DhtConfig> {
        use std::net::ToSocketAddrs;
        let mut bootstrap = Vec::new();
        for b in &config.bootstrap {
            let found = (b.host.as_str(), b.port)
                .to_socket_addrs()
                .map_err(|e| io::Error::other(format!("cannot resolve bootstrap node {b}: {e}")))?
                .find_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .ok_or_else(|| {
                    io::Error::other(format!("bootstrap node {b} has no IPv4 address"))
                })?;
            bootstrap.push(found);
        }
        let mut node = NodeConfig::DEFAULT;
        // `--dpa 0` keeps entries forever, as with the Node grape.
        node.peer_ttl = if config.dht_peer_max_age.is_zero() {
            grenache_core::dht::store::TTL_NEVER
        } else {
            config.dht_peer_max_age
        };
        node.node_liveness = config.dht_node_liveness;
        if config.dht_max_values > ITEMS {
            return Err(io::Error::other(format!(
                "--dht_maxValues {} is above the {ITEMS} BEP 44 items this build can keep",
                config.dht_max_values
            )));
        }
        node.max_items = config.dht_max_values;
        // Node ignores `--dc` (docs/protocol.md §13.2); here it is the per-lookup concurrency.
        node.lookup.concurrency = config.dht_concurrency.max(1);
        node.host = config
            .bind
            .as_deref()
            .and_then(|b| b.parse::<Ipv4Addr>().ok())
            .map(|ip| ip.octets());
        Ok(DhtConfig {
            bind: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.dht_port),
            bootstrap,
            node,
        })
    }
}

impl GrapeDht for Dht {
    async fn lookup(&self, name: Vec<u8>) -> Vec<SocketAddrV4> {
        match self.call(|tx| Command::Lookup(name, tx)).await {
            Ok(peers) => peers,
            Err(e) => {
                // Node's lookup never fails (`krpc:247-249`): an empty answer it is.
                tracing::warn!("lookup failed: {e}");
                Vec::new()
            }
        }
    }

    async fn announce(&self, name: Vec<u8>, port: u16) -> Result<usize, DhtError> {
        self.call(|tx| Command::Announce(name, port, tx)).await
    }

    async fn unannounce(&self, name: Vec<u8>, port: u16) -> Result<usize, DhtError> {
        self.call(|tx| Command::Unannounce(name, port, tx)).await
    }

    async fn put(&self, item: PutItem) -> Result<[u8; 20], DhtError> {
        self.call(|tx| Command::Put(Box::new(item), tx)).await
    }

    async fn get(&self, query: GetQuery) -> Result<Option<GotItem>, DhtError> {
        self.call(|tx| Command::Get(query, tx)).await
    }

    fn dht_port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Moves whenever this node's peer store gains or loses a peer (an `announce_peer` of a
    /// new peer, an `unannounce`, an expiry; not a refresh), before the node answers the query
    /// that changed the store, so a client that saw the answer sees the new count.
    fn store_changes(&self) -> u64 {
        self.store_changes.load(Ordering::Acquire)
    }

    async fn status(&self) -> Option<DhtStatus> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}
