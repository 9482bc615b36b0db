//! The event loop: the unmodified core [`Node`] of every simulated grape, fed datagrams and a
//! virtual clock from one priority queue.
//!
//! Time is kept in microseconds (a LAN hop is 0.2 ms) and given to the core in whole
//! milliseconds, its unit. Every node's next deadline ([`Node::poll_timeout`]) is one entry of
//! the queue; entries made stale by a newer deadline or a restart are skipped when they come
//! up. Nothing depends on wall time or hash order, so a seed replays the same run.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant as WallClock;

use grenache_core::addr::PeerAddr;
use grenache_core::dht::bep44::Key;
use grenache_core::dht::id::{NodeId, Target, ID_LEN};
use grenache_core::dht::node::{Event, Node, NodeConfig, OpError, OpId, REPLY_BUF_LEN};
use grenache_core::rng::SplitMix64;
use grenache_core::time::Instant;
use grenache_core::wire::krpc::{self, Message, Query};
use indicatif::ProgressBar;

use crate::dist::Rand;
use crate::report::{Percentiles, Report};
use crate::scenario::{Scenario, Variant};

/// Routing-table slots: 16 buckets of K = 20. A network of N nodes fills about
/// log2(N / 20) + 1 buckets (10 at 10,000, 13 at 100,000), so this never limits the table.
pub const TABLE: usize = 320;
/// Names one node stores (the simulated deployment announces a few dozen).
pub const NAMES: usize = 16;
/// Announced peers one node stores (a real grape: 10,240).
pub const PEERS: usize = 64;
/// BEP44 items one node stores (a real grape: 5,000 of about 1.2 KB each; the workload puts
/// a few per minute, spread over the whole id space).
pub const ITEMS: usize = 8;
/// Operations one node runs at once (a simulated grape runs one or two).
pub const OPS: usize = 8;
/// Candidates per traversal (as a real grape).
pub const CANDIDATES: usize = 64;
/// Queries in flight per node with our rules (a real grape: 512, for hundreds of operations).
pub const INFLIGHT_OURS: usize = 64;
/// Queries in flight per node with Node's rules: bittorrent-dht's 16, shared by everything.
pub const INFLIGHT_NODE_LIKE: usize = 16;
/// Peers one lookup collects (a real grape: 100).
pub const LOOKUP_PEERS: usize = 32;
/// Bytes of a BEP44 value an operation holds (the workload puts short values).
pub const VALUE: usize = 64;
/// Pings waiting for a transaction slot.
pub const PINGS: usize = 32;
/// Source IPs whose answer budget is tracked.
pub const SOURCES: usize = 64;

/// The simulated grape: the core's [`Node`] with the capacities above.
pub type SimNode<const INFLIGHT: usize> = Node<
    SplitMix64,
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
>;

/// Bootstrap grapes: the operator's own, never churned, in everyone's `--bn`.
const BOOTSTRAP_NODES: usize = 3;
/// Honest nodes whose routing tables are checked at each health sample.
const HEALTH_SAMPLE: usize = 50;
/// Sampling period of table health and of the up-node count, µs.
const SAMPLE_US: u64 = 10_000_000;
/// Simulated time after the measured window in which started operations may still end, µs.
const DRAIN_US: u64 = 5_000_000;
/// When announce probes start after a worker's first announce starts, ms.
pub use crate::report::VISIBLE_AFTER_MS;
/// Port every simulated grape's DHT listens on.
const DHT_PORT: u16 = 20_000;
/// First worker port (each worker announces its own).
const WORKER_PORT: u16 = 40_000;

const US_PER_S: f64 = 1_000_000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Bootstrap,
    Honest,
    Dropper,
    Sybil,
    Liar,
}

enum Op {
    Bootstrap,
    Lookup(usize),
    Announce { worker: usize },
    Unannounce,
    Put { value: usize },
    Get { value: usize },
}

struct Slot<const I: usize> {
    node: Option<Box<SimNode<I>>>,
    addr: PeerAddr,
    id: NodeId,
    role: Role,
    /// Bumped at every restart: queue entries of an older life are skipped.
    life: u32,
    /// The deadline (ms) this node has a queue entry for.
    timer_at: Option<u64>,
    far_side: bool,
    ops: Vec<(OpId, Op)>,
    /// Running lookups whose traffic is observed (queries, round trips).
    tracked: usize,
    workers: Vec<usize>,
}

struct Worker {
    node: usize,
    name: usize,
    port: u16,
    /// When the current life's first announce ended, µs.
    visible_since: Option<u64>,
}

struct LookupRec {
    name: usize,
    start: u64,
    /// For an announce probe: the index into `VISIBLE_AFTER_MS` and the worker.
    probe: Option<(usize, usize)>,
    measured: bool,
    phase: usize,
    queries: u32,
    /// Transaction id of each query sent, and the round trip it belongs to.
    tids: Vec<([u8; krpc::QUERY_TID_LEN], u8)>,
    /// Round trip at which each address was learned (seeds: 1).
    depths: Vec<(PeerAddr, u8)>,
    found_at: Option<u8>,
    /// The deepest round trip any query of this lookup belonged to.
    rounds: u8,
}

enum Ev {
    Packet {
        to: usize,
        from: PeerAddr,
        bytes: Box<[u8]>,
    },
    Timer {
        node: usize,
        life: u32,
        at_ms: u64,
    },
    Join(usize),
    Leave {
        node: usize,
        life: u32,
    },
    Down {
        node: usize,
        life: u32,
        forever: bool,
    },
    Announce {
        worker: usize,
        life: u32,
    },
    /// Lookups of a worker's name from random nodes, `VISIBLE_AFTER_MS[at]` after the
    /// worker's first announce started.
    Probe {
        worker: usize,
        life: u32,
        at: usize,
    },
    WarmupEnd,
    NextLookup,
    NextPut,
    Get {
        key: Key,
        value: usize,
    },
    Partition(bool),
    Sample,
}

struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Item) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Item) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Earliest first in a max-heap; the sequence number keeps equal times in send order.
    fn cmp(&self, o: &Item) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Owned copy of a core [`Event`], so that the node is no longer borrowed while it is handled.
enum Done {
    Bootstrapped(OpId),
    Lookup(OpId, Vec<PeerAddr>),
    Announce(OpId, Result<usize, OpError>),
    Other(OpId),
    Get(OpId, Option<Vec<u8>>),
    Put(OpId, Result<Key, OpError>),
}

/// One simulation run.
pub struct Engine<'p, const I: usize> {
    sc: Scenario,
    config: NodeConfig,
    rng: Rand,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Item>,
    slots: Vec<Slot<I>>,
    by_addr: HashMap<PeerAddr, usize>,
    honest: Vec<usize>,
    sybil_nodes: Vec<(NodeId, PeerAddr)>,
    names: Vec<Vec<u8>>,
    workers: Vec<Worker>,
    lookups: Vec<Option<LookupRec>>,
    values: Vec<Vec<u8>>,
    measuring: bool,
    end: u64,
    partitioned: bool,
    // Measurements.
    latencies: Vec<f64>,
    hops: Vec<f64>,
    rounds: Vec<f64>,
    queries: Vec<f64>,
    visible_at: [(u64, u64); VISIBLE_AFTER_MS.len()],
    lookups_ok: (u64, u64),
    target: (u64, u64),
    phases: [(u64, u64); 3],
    gets: (u64, u64),
    bytes: u64,
    packets: u64,
    datagrams: u64,
    up_honest: usize,
    node_seconds: f64,
    live: (u64, u64),
    table_sizes: (u64, u64),
    progress: Option<&'p ProgressBar>,
}

fn node_addr(i: usize) -> PeerAddr {
    let j = i + 1;
    PeerAddr::new([10, (j >> 16) as u8, (j >> 8) as u8, j as u8], DHT_PORT)
}

/// The service names of the workload: short, with a common prefix, as Grenache names are.
pub fn name(i: usize) -> Vec<u8> {
    format!("rest:sim:{i:03}").into_bytes()
}

impl<'p, const I: usize> Engine<'p, I> {
    /// Sets up the network of `sc` (nothing runs yet).
    pub fn new(sc: &Scenario, progress: Option<&'p ProgressBar>) -> Self {
        let mut rng = Rand::new(sc.seed);
        let n = sc.nodes.max(BOOTSTRAP_NODES + 1);
        let mut config = NodeConfig::DEFAULT;
        if sc.variant == Variant::NodeLike {
            config.lookup.stall_timeout = config.lookup.query_timeout;
            config.lookup.adaptive_stall = false;
        }
        let names: Vec<Vec<u8>> = (0..sc.names.max(1)).map(name).collect();
        let count = |share: f64| ((share * n as f64).round() as usize).min(n - BOOTSTRAP_NODES);
        let (sybils, droppers, liars) = (count(sc.sybils), count(sc.droppers), count(sc.liars));
        let mut slots = Vec::with_capacity(n);
        let mut sybil_nodes = Vec::new();
        for i in 0..n {
            let role = match i {
                _ if i < BOOTSTRAP_NODES => Role::Bootstrap,
                _ if i < BOOTSTRAP_NODES + sybils => Role::Sybil,
                _ if i < BOOTSTRAP_NODES + sybils + droppers => Role::Dropper,
                _ if i < BOOTSTRAP_NODES + sybils + droppers + liars => Role::Liar,
                _ => Role::Honest,
            };
            let mut id = NodeId::random(&mut rng.fork());
            if role == Role::Sybil {
                // Sybil ids share the name's bytes: closer to it than any honest id.
                let target = &names[0];
                let k = target.len().min(ID_LEN);
                id.0[..k].copy_from_slice(&target[..k]);
                sybil_nodes.push((id, node_addr(i)));
            }
            let far_side =
                role != Role::Bootstrap && sc.partition.is_some_and(|p| rng.chance(p.share));
            slots.push(Slot {
                node: None,
                addr: node_addr(i),
                id,
                role,
                life: 0,
                timer_at: None,
                far_side,
                ops: Vec::new(),
                tracked: 0,
                workers: Vec::new(),
            });
        }
        let by_addr = slots.iter().enumerate().map(|(i, s)| (s.addr, i)).collect();
        let honest: Vec<usize> = (0..n).filter(|&i| slots[i].role == Role::Honest).collect();
        // Workers on distinct random honest nodes.
        let mut workers = Vec::new();
        let mut pool = honest.clone();
        for nm in 0..names.len() {
            for w in 0..sc.workers_per_name {
                if pool.is_empty() {
                    break;
                }
                let node = pool.swap_remove(rng.below(pool.len()));
                slots[node].workers.push(workers.len());
                workers.push(Worker {
                    node,
                    name: nm,
                    port: WORKER_PORT + (nm * sc.workers_per_name + w) as u16,
                    visible_since: None,
                });
            }
        }
        let warmup_us = (sc.warmup_s * US_PER_S) as u64;
        let end = warmup_us + (sc.duration_s * US_PER_S) as u64;
        let mut e = Engine {
            sc: sc.clone(),
            config,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slots,
            by_addr,
            honest,
            sybil_nodes,
            names,
            workers,
            lookups: Vec::new(),
            values: Vec::new(),
            measuring: false,
            end,
            partitioned: false,
            latencies: Vec::new(),
            hops: Vec::new(),
            rounds: Vec::new(),
            queries: Vec::new(),
            visible_at: [(0, 0); VISIBLE_AFTER_MS.len()],
            lookups_ok: (0, 0),
            target: (0, 0),
            phases: [(0, 0); 3],
            gets: (0, 0),
            bytes: 0,
            packets: 0,
            datagrams: 0,
            up_honest: 0,
            node_seconds: 0.0,
            live: (0, 0),
            table_sizes: (0, 0),
            progress,
        };
        // The bootstrap grapes start at once; everyone else joins during the first 60 % of
        // the warm-up, in random order.
        for i in 0..n {
            let at = if i < BOOTSTRAP_NODES {
                0
            } else {
                (e.rng.unit() * 0.6 * warmup_us as f64) as u64
            };
            e.push(at, Ev::Join(i));
        }
        e.push(warmup_us, Ev::WarmupEnd);
        if let Some(p) = sc.partition {
            let at = warmup_us + (p.at_s * US_PER_S) as u64;
            e.push(at, Ev::Partition(true));
            e.push(at + (p.duration_s * US_PER_S) as u64, Ev::Partition(false));
        }
        e
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn now_ms(&self) -> Instant {
        Instant::from_millis(self.now / 1000)
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        let wall = WallClock::now();
        let stop = self.end + DRAIN_US;
        let mut shown = 0;
        while let Some(item) = self.queue.pop() {
            if item.at > stop {
                break;
            }
            self.now = item.at;
            if let Some(pb) = self.progress {
                let s = self.now / 1_000_000;
                if s > shown {
                    shown = s;
                    pb.set_position(s);
                }
            }
            self.handle(item.ev);
        }
        self.report(wall.elapsed().as_secs_f64())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Packet { to, from, bytes } => self.deliver(to, from, &bytes),
            Ev::Timer { node, life, at_ms } => {
                let now = self.now_ms();
                let slot = &mut self.slots[node];
                if slot.life != life || slot.timer_at != Some(at_ms) {
                    return;
                }
                slot.timer_at = None;
                if let Some(n) = slot.node.as_mut() {
                    n.handle_timeout(now);
                }
                self.pump(node);
            }
            Ev::Join(i) => self.join(i),
            Ev::Leave { node, life } => self.leave(node, life),
            Ev::Down {
                node,
                life,
                forever,
            } => {
                if self.slots[node].life == life {
                    self.down(node, forever);
                }
            }
            Ev::Announce { worker, life } => self.announce(worker, life),
            Ev::Probe { worker, life, at } => {
                let node = self.workers[worker].node;
                if self.slots[node].life != life || self.now >= self.end {
                    return;
                }
                let name = self.workers[worker].name;
                for _ in 0..self.sc.probes_per_announce {
                    if let Some(from) = self.random_up_honest(Some(node), Some(name)) {
                        self.start_lookup(from, name, Some((at, worker)));
                    }
                }
            }
            Ev::WarmupEnd => self.warmup_end(),
            Ev::NextLookup => {
                if self.now < self.end {
                    let name = self.rng.below(self.names.len());
                    if let Some(node) = self.random_up_honest(None, Some(name)) {
                        self.start_lookup(node, name, None);
                    }
                    let gap = self
                        .rng
                        .exponential(US_PER_S / self.sc.lookups_per_s * 0.693);
                    self.push(self.now + gap as u64 + 1, Ev::NextLookup);
                }
            }
            Ev::NextPut => {
                if self.now < self.end {
                    self.put();
                    let mean = 60.0 * US_PER_S / self.sc.puts_per_min;
                    let gap = self.rng.exponential(mean * 0.693);
                    self.push(self.now + gap as u64 + 1, Ev::NextPut);
                }
            }
            Ev::Get { key, value } => {
                if let Some(node) = self.random_up_honest(None, None) {
                    let now = self.now_ms();
                    if let Some(n) = self.slots[node].node.as_mut() {
                        if let Ok(op) = n.get(now, &key, None, false) {
                            self.slots[node].ops.push((op, Op::Get { value }));
                        }
                    }
                    self.pump(node);
                }
            }
            Ev::Partition(on) => self.partitioned = on,
            Ev::Sample => self.sample(),
        }
    }

    fn join(&mut self, i: usize) {
        let now = self.now_ms();
        let rng = self.rng.fork();
        let mut node = Box::new(SimNode::<I>::with_id(
            self.slots[i].id,
            rng,
            self.config,
            now,
        ));
        let mut boot: Vec<PeerAddr> = (0..BOOTSTRAP_NODES)
            .filter(|&b| b != i)
            .map(node_addr)
            .collect();
        if self.sc.bootstrap_down && self.measuring {
            // The bootstrap grapes are gone: a grape that (re)joins now is configured with
            // three running ones instead, as an operator would.
            boot.clear();
            for _ in 0..BOOTSTRAP_NODES {
                if let Some(j) = self.random_up_honest(Some(i), None) {
                    boot.push(node_addr(j));
                }
            }
        }
        for b in boot {
            node.add_bootstrap(b);
        }
        let slot = &mut self.slots[i];
        slot.life += 1;
        slot.timer_at = None;
        slot.ops.clear();
        slot.tracked = 0;
        if let Ok(op) = node.start_bootstrap(now) {
            slot.ops.push((op, Op::Bootstrap));
        }
        slot.node = Some(node);
        let life = slot.life;
        if slot.role == Role::Honest {
            self.up_honest += 1;
        }
        let workers = slot.workers.clone();
        let warmup_us = (self.sc.warmup_s * US_PER_S) as u64;
        let measured_us = self.end - warmup_us;
        for w in workers {
            // Workers announce once the grape has had time to bootstrap. In the first life,
            // odd workers start during the measured window (its first half), so that
            // announce-to-visible time is measured on a settled network.
            let at = if life == 1 && w % 2 == 1 {
                warmup_us + (self.rng.unit() * 0.5 * measured_us as f64) as u64
            } else {
                self.now + 3_000_000
            };
            self.push(
                at.max(self.now + 3_000_000),
                Ev::Announce { worker: w, life },
            );
        }
        if let Some(c) = self.sc.churn {
            if self.slots[i].role == Role::Honest {
                let session = self.rng.exponential(c.median_session_s) * US_PER_S;
                self.push(self.now + session as u64, Ev::Leave { node: i, life });
            }
        }
        self.pump(i);
    }

    fn leave(&mut self, i: usize, life: u32) {
        let Some(c) = self.sc.churn else { return };
        if self.slots[i].life != life || self.slots[i].node.is_none() {
            return;
        }
        if self.rng.chance(c.graceful) {
            // A graceful leave: the workers unannounce, and the grape stops a second later.
            let now = self.now_ms();
            for w in self.slots[i].workers.clone() {
                self.workers[w].visible_since = None;
                let (nm, port) = (self.workers[w].name, self.workers[w].port);
                let name = self.names[nm].clone();
                if let Some(n) = self.slots[i].node.as_mut() {
                    if let Ok(op) = n.unannounce(now, &name, port) {
                        self.slots[i].ops.push((op, Op::Unannounce));
                    }
                }
            }
            self.pump(i);
            self.push(
                self.now + 1_000_000,
                Ev::Down {
                    node: i,
                    life,
                    forever: false,
                },
            );
        } else {
            self.down(i, false);
        }
    }

    fn down(&mut self, i: usize, forever: bool) {
        let slot = &mut self.slots[i];
        if slot.node.take().is_none() {
            return;
        }
        if slot.role == Role::Honest {
            self.up_honest -= 1;
        }
        slot.life += 1;
        slot.timer_at = None;
        // Operations of a stopped grape never end: they are not counted.
        for (_, op) in slot.ops.drain(..) {
            if let Op::Lookup(l) = op {
                self.lookups[l] = None;
            }
        }
        slot.tracked = 0;
        for w in slot.workers.clone() {
            self.workers[w].visible_since = None;
        }
        if let (false, Some(c)) = (forever, self.sc.churn) {
            if !self.rng.chance(c.same_id) {
                self.slots[i].id = NodeId::random(&mut self.rng.fork());
            }
            let pause = self.rng.exponential(c.median_down_s) * US_PER_S;
            self.push(self.now + pause as u64, Ev::Join(i));
        }
    }

    fn announce(&mut self, w: usize, life: u32) {
        let node = self.workers[w].node;
        if self.slots[node].life != life {
            return;
        }
        let now = self.now_ms();
        let first = self.workers[w].visible_since.is_none();
        let (nm, port) = (self.workers[w].name, self.workers[w].port);
        let name = self.names[nm].clone();
        if let Some(n) = self.slots[node].node.as_mut() {
            if let Ok(op) = n.announce(now, &name, port) {
                self.slots[node].ops.push((op, Op::Announce { worker: w }));
            }
        }
        if first && self.measuring && self.now < self.end {
            for (at, ms) in VISIBLE_AFTER_MS.iter().enumerate() {
                self.push(
                    self.now + ms * 1000,
                    Ev::Probe {
                        worker: w,
                        life,
                        at,
                    },
                );
            }
        }
        let period = (self.sc.reannounce_s * US_PER_S) as u64;
        self.push(self.now + period, Ev::Announce { worker: w, life });
        self.pump(node);
    }

    fn warmup_end(&mut self) {
        self.measuring = true;
        if self.sc.bootstrap_down {
            for i in 0..BOOTSTRAP_NODES {
                self.down(i, true);
            }
        }
        if self.sc.dead_share > 0.0 {
            let count = (self.sc.dead_share * self.slots.len() as f64).round() as usize;
            let mut pool: Vec<usize> = self
                .honest
                .iter()
                .copied()
                .filter(|&i| self.slots[i].workers.is_empty() && self.slots[i].node.is_some())
                .collect();
            for _ in 0..count.min(pool.len()) {
                let i = pool.swap_remove(self.rng.below(pool.len()));
                self.down(i, true);
            }
        }
        self.sample();
        if self.sc.lookups_per_s > 0.0 {
            self.push(self.now + 1, Ev::NextLookup);
        }
        if self.sc.puts_per_min > 0.0 {
            self.push(self.now + 1, Ev::NextPut);
        }
    }

    /// A random honest node that is up, other than `not`, and not already looking up `name`.
    fn random_up_honest(&mut self, not: Option<usize>, name: Option<usize>) -> Option<usize> {
        for _ in 0..32 {
            let i = self.honest[self.rng.below(self.honest.len())];
            let busy = name.is_some_and(|nm| {
                self.slots[i].ops.iter().any(|(_, op)| {
                    matches!(op, Op::Lookup(l) if self.lookups[*l].as_ref().is_some_and(|r| r.name == nm))
                })
            });
            if self.slots[i].node.is_some() && Some(i) != not && !busy {
                return Some(i);
            }
        }
        None
    }

    fn start_lookup(&mut self, node: usize, name: usize, probe: Option<(usize, usize)>) {
        let now = self.now_ms();
        let target = self.names[name].clone();
        let Some(n) = self.slots[node].node.as_mut() else {
            return;
        };
        let Ok(op) = n.lookup(now, &target) else {
            return;
        };
        let phase = match self.sc.partition {
            Some(p) => {
                let at = (self.sc.warmup_s + p.at_s) * US_PER_S;
                let heal = at + p.duration_s * US_PER_S;
                let t = self.now as f64;
                usize::from(t >= at) + usize::from(t >= heal)
            }
            None => 0,
        };
        self.lookups.push(Some(LookupRec {
            name,
            start: self.now,
            probe,
            measured: self.measuring,
            phase,
            queries: 0,
            tids: Vec::new(),
            depths: Vec::new(),
            found_at: None,
            rounds: 0,
        }));
        let slot = &mut self.slots[node];
        slot.ops.push((op, Op::Lookup(self.lookups.len() - 1)));
        slot.tracked += 1;
        self.pump(node);
    }

    fn put(&mut self) {
        let Some(node) = self.random_up_honest(None, None) else {
            return;
        };
        let text = format!("sim-item-{}-{}", self.sc.seed, self.values.len());
        let raw = format!("{}:{}", text.len(), text).into_bytes();
        let now = self.now_ms();
        if let Some(n) = self.slots[node].node.as_mut() {
            if let Ok(op) = n.put_immutable(now, &raw) {
                self.slots[node].ops.push((
                    op,
                    Op::Put {
                        value: self.values.len(),
                    },
                ));
            }
        }
        self.values.push(raw);
        self.pump(node);
    }

    /// Sends a datagram from node `from` to `to` through the link model.
    fn send(&mut self, from: usize, to: PeerAddr, bytes: &[u8]) {
        self.datagrams += 1;
        if self.measuring && self.now < self.end && self.is_honest(from) {
            self.bytes += bytes.len() as u64;
            self.packets += 1;
        }
        let Some(&j) = self.by_addr.get(&to) else {
            return;
        };
        if self.partitioned && self.slots[from].far_side != self.slots[j].far_side {
            return;
        }
        let seed = self.sc.seed;
        let delays = self
            .sc
            .link
            .deliveries(&mut self.rng, from as u32, j as u32, seed);
        let src = self.slots[from].addr;
        for d in delays.into_iter().flatten() {
            self.push(
                self.now + d,
                Ev::Packet {
                    to: j,
                    from: src,
                    bytes: bytes.into(),
                },
            );
        }
    }

    fn is_honest(&self, i: usize) -> bool {
        matches!(self.slots[i].role, Role::Honest | Role::Bootstrap)
    }

    fn deliver(&mut self, to: usize, from: PeerAddr, bytes: &[u8]) {
        if self.slots[to].node.is_none() {
            return;
        }
        if self.slots[to].tracked > 0 {
            self.observe_answer(to, from, bytes);
        }
        let role = self.slots[to].role;
        if role != Role::Honest && role != Role::Bootstrap {
            if let Some(answer) = self.adversary(to, bytes) {
                if let Some(a) = answer {
                    self.send(to, from, &a);
                }
                return;
            }
        }
        let now = self.now_ms();
        let mut reply = [0u8; REPLY_BUF_LEN];
        let len = self.slots[to]
            .node
            .as_mut()
            .and_then(|n| n.handle_datagram(now, from, bytes, &mut reply));
        if let Some(len) = len {
            self.send(to, from, &reply[..len]);
        }
        self.pump(to);
    }

    /// What an adversary does with a datagram: `None` to let its core node handle it,
    /// `Some(None)` to drop it, `Some(Some(answer))` to send a made-up answer.
    fn adversary(&mut self, i: usize, bytes: &[u8]) -> Option<Option<Vec<u8>>> {
        let Ok(Message::Query { t, query, .. }) = krpc::parse(bytes) else {
            return None;
        };
        let me = self.slots[i].id;
        let mut buf = [0u8; REPLY_BUF_LEN];
        let token = b"sybil-token";
        let answer = match (self.slots[i].role, query) {
            (_, Query::Ping) => return None,
            (Role::Dropper, _) => return Some(None),
            (
                Role::Sybil,
                Query::GetPeers {
                    info_hash: Some(key),
                },
            )
            | (Role::Sybil, Query::Get { target: Some(key) })
            | (Role::Sybil, Query::FindNode { target: Some(key) }) => {
                // The Sybils closest to the key, i.e. each other.
                let tk = Target::new(key);
                let mut near = self.sybil_nodes.clone();
                let k = near.len().min(20);
                if k < near.len() {
                    near.select_nth_unstable_by(k, |a, b| tk.cmp(&a.0, &b.0));
                }
                krpc::encode_response_nodes_token(
                    &mut buf,
                    t,
                    &me,
                    near[..k].iter().copied(),
                    token,
                )
            }
            (Role::Liar, Query::GetPeers { .. }) => {
                let made_up: Vec<PeerAddr> = (0..16)
                    .map(|_| {
                        let r = self.rng.next_u64();
                        PeerAddr::new([192, 0, 2, r as u8], 1024 + (r >> 8) as u16 % 60_000)
                    })
                    .collect();
                krpc::encode_response_values(&mut buf, t, &me, token, made_up)
            }
            // Accept announces and puts, keep nothing.
            (Role::Sybil | Role::Liar, Query::AnnouncePeer(_) | Query::Put(_)) => {
                krpc::encode_response_id(&mut buf, t, &me)
            }
            _ => return None,
        };
        Some(answer.ok().map(|n| buf[..n].to_vec()))
    }

    /// Notes the queries a tracked lookup sends (count, round trip of each).
    fn observe_query(&mut self, i: usize, to: PeerAddr, bytes: &[u8]) {
        let Ok(Message::Query {
            t,
            query: Query::GetPeers {
                info_hash: Some(key),
            },
            ..
        }) = krpc::parse(bytes)
        else {
            return;
        };
        let Ok(tid) = <[u8; krpc::QUERY_TID_LEN]>::try_from(t) else {
            return;
        };
        for (_, op) in &self.slots[i].ops {
            if let Op::Lookup(l) = op {
                if let Some(r) = self.lookups[*l].as_mut() {
                    if self.names[r.name] == key {
                        r.queries += 1;
                        let depth = r
                            .depths
                            .iter()
                            .find(|(a, _)| *a == to)
                            .map_or(1, |(_, d)| *d);
                        r.tids.push((tid, depth));
                        r.rounds = r.rounds.max(depth);
                        return;
                    }
                }
            }
        }
    }

    /// Notes what an answer to a tracked lookup taught it: the round trip of each node it
    /// names, and whether it carried a live worker.
    fn observe_answer(&mut self, i: usize, _from: PeerAddr, bytes: &[u8]) {
        let Ok(Message::Response { t, r }) = krpc::parse(bytes) else {
            return;
        };
        for (_, op) in &self.slots[i].ops {
            let Op::Lookup(l) = op else { continue };
            let Some(rec) = self.lookups[*l].as_mut() else {
                continue;
            };
            let Some(&(_, d)) = rec.tids.iter().find(|(tid, _)| tid.as_slice() == t) else {
                continue;
            };
            if let Some(nodes) = r.nodes {
                for (_, addr) in nodes.iter() {
                    match rec.depths.iter_mut().find(|(a, _)| *a == addr) {
                        Some((_, old)) => *old = (*old).min(d + 1),
                        None => rec.depths.push((addr, d + 1)),
                    }
                }
            }
            if rec.found_at.is_none() {
                if let Some(values) = r.values {
                    let start = rec.start;
                    let name = rec.name;
                    let found = values
                        .iter()
                        .any(|p| live_worker(&self.workers, &self.slots, name, start, p));
                    if found {
                        rec.found_at = Some(d);
                    }
                }
            }
            return;
        }
    }

    /// Drains a node's transmits and events and schedules its next deadline.
    fn pump(&mut self, i: usize) {
        let now = self.now_ms();
        let mut buf = [0u8; REPLY_BUF_LEN];
        let mut done = Vec::new();
        loop {
            let Some(n) = self.slots[i].node.as_mut() else {
                return;
            };
            let Some(t) = n.poll_transmit(now, &mut buf) else {
                break;
            };
            if self.slots[i].tracked > 0 {
                self.observe_query(i, t.to, &buf[..t.len]);
            }
            self.send(i, t.to, &buf[..t.len]);
        }
        if let Some(n) = self.slots[i].node.as_mut() {
            while let Some(e) = n.poll_event() {
                done.push(match e {
                    Event::Bootstrapped { op, .. } => Done::Bootstrapped(op),
                    Event::LookupDone { op, peers } => Done::Lookup(op, peers.to_vec()),
                    Event::AnnounceDone { op, result } => Done::Announce(op, result),
                    Event::UnannounceDone { op, .. } => Done::Other(op),
                    Event::PutDone { op, result } => Done::Put(op, result),
                    Event::GetDone { op, item } => Done::Get(op, item.map(|it| it.v.to_vec())),
                });
            }
        }
        for d in done {
            self.finished(i, d);
        }
        // The next deadline; one already past is handled 1 ms later, so a node can never
        // hold the clock.
        let life = self.slots[i].life;
        let next = self.slots[i]
            .node
            .as_ref()
            .and_then(|n| n.poll_timeout())
            .map(|t| t.as_millis().max(now.as_millis() + 1));
        if let Some(at_ms) = next {
            if self.slots[i].timer_at != Some(at_ms) {
                self.slots[i].timer_at = Some(at_ms);
                self.push(
                    at_ms * 1000,
                    Ev::Timer {
                        node: i,
                        life,
                        at_ms,
                    },
                );
            }
        }
    }

    fn take_op(&mut self, i: usize, op: OpId) -> Option<Op> {
        let ops = &mut self.slots[i].ops;
        let pos = ops.iter().position(|(o, _)| *o == op)?;
        Some(ops.swap_remove(pos).1)
    }

    fn finished(&mut self, i: usize, d: Done) {
        let op = match &d {
            Done::Bootstrapped(op) | Done::Other(op) => *op,
            Done::Lookup(op, _) | Done::Announce(op, _) | Done::Get(op, _) | Done::Put(op, _) => {
                *op
            }
        };
        let Some(what) = self.take_op(i, op) else {
            return;
        };
        match (what, d) {
            (Op::Lookup(l), Done::Lookup(_, peers)) => {
                self.slots[i].tracked = self.slots[i].tracked.saturating_sub(1);
                if let Some(rec) = self.lookups[l].take() {
                    self.lookup_done(rec, &peers);
                }
            }
            // The first acknowledged announce of this life makes the worker visible.
            (Op::Announce { worker }, Done::Announce(_, Ok(n)))
                if n > 0 && self.workers[worker].visible_since.is_none() =>
            {
                self.workers[worker].visible_since = Some(self.now);
            }
            (Op::Put { value }, Done::Put(_, Ok(key))) if self.measuring && self.now < self.end => {
                for _ in 0..3 {
                    self.push(self.now + 1_000_000, Ev::Get { key, value });
                }
            }
            (Op::Get { value }, Done::Get(_, item)) => {
                self.gets.1 += 1;
                if item.as_deref() == Some(self.values[value].as_slice()) {
                    self.gets.0 += 1;
                }
            }
            _ => {}
        }
    }

    fn lookup_done(&mut self, rec: LookupRec, peers: &[PeerAddr]) {
        let took_ms = (self.now - rec.start) as f64 / 1000.0;
        if let Some((at, worker)) = rec.probe {
            let w = &self.workers[worker];
            let addr = PeerAddr::new(self.slots[w.node].addr.ip, w.port);
            self.visible_at[at].1 += 1;
            self.visible_at[at].0 += u64::from(peers.contains(&addr));
            return;
        }
        if !rec.measured {
            return;
        }
        let (workers, slots) = (&self.workers, &self.slots);
        let live_exists = workers.iter().any(|w| {
            w.name == rec.name
                && w.visible_since.is_some_and(|t| t <= rec.start)
                && slots[w.node].node.is_some()
        });
        if !live_exists {
            return;
        }
        let ok = peers
            .iter()
            .any(|p| live_worker(workers, slots, rec.name, rec.start, *p));
        self.lookups_ok.1 += 1;
        self.lookups_ok.0 += u64::from(ok);
        if rec.name == 0 {
            self.target.0 += 1;
            self.target.1 += u64::from(ok);
        }
        self.phases[rec.phase].1 += 1;
        self.phases[rec.phase].0 += u64::from(ok);
        self.latencies.push(took_ms);
        self.queries.push(f64::from(rec.queries));
        self.rounds.push(f64::from(rec.rounds));
        if ok {
            self.hops.push(f64::from(rec.found_at.unwrap_or(0)));
        }
    }

    fn sample(&mut self) {
        if !self.measuring || self.now >= self.end {
            return;
        }
        self.node_seconds += self.up_honest as f64 * SAMPLE_US as f64 / US_PER_S;
        for _ in 0..HEALTH_SAMPLE {
            let Some(i) = self.random_up_honest(None, None) else {
                break;
            };
            let Some(n) = self.slots[i].node.as_ref() else {
                continue;
            };
            for e in n.table().iter() {
                let live = self
                    .by_addr
                    .get(&e.addr)
                    .is_some_and(|&j| self.slots[j].node.is_some() && self.slots[j].id == e.id);
                self.live.0 += u64::from(live);
                self.live.1 += 1;
            }
            self.table_sizes.0 += n.table().len() as u64;
            self.table_sizes.1 += 1;
        }
        self.push(self.now + SAMPLE_US, Ev::Sample);
    }

    fn report(mut self, wall_s: f64) -> Report {
        let latency = Percentiles::of(&mut self.latencies);
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Report {
            scenario: self.sc.name.clone(),
            variant: self.sc.variant.label().to_owned(),
            nodes: self.slots.len(),
            seed: self.sc.seed,
            lookups: self.lookups_ok.1,
            lookups_ok: self.lookups_ok.0,
            target_lookups: if self.sc.sybils > 0.0 {
                self.target
            } else {
                (0, 0)
            },
            latency,
            latencies_ms: self.latencies,
            hops: Percentiles::of(&mut self.hops),
            rounds: Percentiles::of(&mut self.rounds),
            queries: Percentiles::of(&mut self.queries),
            visible_at: self.visible_at,
            gets: self.gets,
            bytes_per_node_s: div(self.bytes as f64, self.node_seconds),
            packets_per_node_s: div(self.packets as f64, self.node_seconds),
            table_live: div(self.live.0 as f64, self.live.1 as f64),
            table_size: div(self.table_sizes.0 as f64, self.table_sizes.1 as f64),
            partition_phases: self.sc.partition.map(|_| self.phases),
            node_bytes: core::mem::size_of::<SimNode<I>>(),
            wall_s,
            datagrams: self.datagrams,
        }
    }
}

/// Whether `p` is a worker of `name` that is up and was visible when the lookup started.
fn live_worker<const I: usize>(
    workers: &[Worker],
    slots: &[Slot<I>],
    name: usize,
    start: u64,
    p: PeerAddr,
) -> bool {
    workers.iter().any(|w| {
        w.name == name
            && w.port == p.port
            && slots[w.node].addr.ip == p.ip
            && w.visible_since.is_some_and(|t| t <= start)
            && slots[w.node].node.is_some()
    })
}
