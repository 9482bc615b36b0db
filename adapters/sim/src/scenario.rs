//! What a run simulates: network, churn, partitions, adversaries, workload, and which lookup
//! rules the nodes use.

use crate::net::{Latency, LinkModel};

/// The lookup rules every honest node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// grenache-core's defaults: per-lookup concurrency, stalled queries stop holding a
    /// lookup.
    Ours,
    /// Node Grenache's rules as a configuration of the same core: stall timeout = query
    /// timeout, not adaptive (every dead contact costs the full 2 s), and 16 queries in
    /// flight for the whole node, shared by every traversal.
    NodeLike,
}

impl Variant {
    /// The name used in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Ours => "ours",
            Variant::NodeLike => "Node-like",
        }
    }
}

/// Sessions of non-bootstrap nodes: each leaves after an exponential session and comes back
/// after an exponential pause.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Churn {
    /// Median session length, seconds.
    pub median_session_s: f64,
    /// Median time a node stays away before rejoining, seconds.
    pub median_down_s: f64,
    /// Share of leaves that are graceful (workers unannounce first); the rest crash.
    pub graceful: f64,
    /// Share of rejoins that keep the old id (a restarted grape with a saved id); the rest
    /// draw a new one, as bittorrent-dht does.
    pub same_id: f64,
}

/// A network split in two, then healed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partition {
    /// When it starts, seconds after the warm-up.
    pub at_s: f64,
    /// How long it lasts, seconds.
    pub duration_s: f64,
    /// Share of nodes on the far side (the bootstrap nodes stay on the near side).
    pub share: f64,
}

/// Everything a run is made of. Every field is a CLI flag too.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Scenario name (a preset's, or "custom").
    pub name: String,
    /// Nodes in all, adversaries included.
    pub nodes: usize,
    /// Simulated time measured after the warm-up, seconds.
    pub duration_s: f64,
    /// Simulated time for joining and first announces before measuring, seconds.
    pub warmup_s: f64,
    /// The seed of everything random in the run.
    pub seed: u64,
    /// The links.
    pub link: LinkModel,
    /// Churn, if any.
    pub churn: Option<Churn>,
    /// Share of nodes that crash for good at the end of the warm-up and stay in others'
    /// routing tables until the liveness sweep finds them (dead contacts).
    pub dead_share: f64,
    /// A partition, if any.
    pub partition: Option<Partition>,
    /// Whether the bootstrap grapes stop for good at the end of the warm-up. Every lookup and
    /// announce also goes to them (the pinned `--bn` grapes), so while they run they answer
    /// every lookup themselves; without them the DHT alone must find the workers. Grapes
    /// that (re)join after that bootstrap from three random running grapes.
    pub bootstrap_down: bool,
    /// Share of nodes that answer pings and drop every other query.
    pub droppers: f64,
    /// Share of nodes with ids next to the first name that hide it: they answer every
    /// traversal with each other and drop announces.
    pub sybils: f64,
    /// Share of nodes that answer `get_peers` with made-up peers.
    pub liars: f64,
    /// Service names announced.
    pub names: usize,
    /// Workers (announcing nodes) per name.
    pub workers_per_name: usize,
    /// Lookups started per second in the whole network, from random honest nodes.
    pub lookups_per_s: f64,
    /// Re-announce period, seconds (Grenache workers: 2 min, with a 2 min TTL).
    pub reannounce_s: f64,
    /// BEP44 immutable puts per minute in the whole network; each is read back by gets from
    /// three other nodes one second later.
    pub puts_per_min: f64,
    /// Lookups from random nodes started when a worker's first announce ends, to measure
    /// announce-to-visible time.
    pub probes_per_announce: usize,
    /// Lookup rules.
    pub variant: Variant,
}

impl Scenario {
    /// The base every preset starts from: 1,000 nodes on a data-centre network, 10 names,
    /// 2 workers each, 10 lookups/s, 10 minutes.
    pub fn base(name: &str) -> Scenario {
        Scenario {
            name: name.to_owned(),
            nodes: 1_000,
            duration_s: 600.0,
            warmup_s: 180.0,
            seed: 1,
            link: LinkModel {
                latency: Latency::DataCentre,
                loss: 0.0,
                duplicate: 0.0,
                reorder: 0.0,
            },
            churn: None,
            dead_share: 0.0,
            partition: None,
            bootstrap_down: false,
            droppers: 0.0,
            sybils: 0.0,
            liars: 0.0,
            names: 10,
            workers_per_name: 2,
            lookups_per_s: 10.0,
            reannounce_s: 120.0,
            puts_per_min: 6.0,
            probes_per_announce: 5,
            variant: Variant::Ours,
        }
    }

    /// The named presets (each runs at `--nodes`, 10,000 for the goals of docs/SCALE.md).
    pub fn preset(name: &str) -> Option<Scenario> {
        let mut s = Scenario::base(name);
        match name {
            // Goal: ≥ 99.9 % with 1 % loss and no churn.
            "loss" => s.link.loss = 0.01,
            // Goal: ≥ 99 % with 30-minute median sessions, crashes, 5 % loss.
            "churn" => {
                s.link.loss = 0.05;
                s.churn = Some(Churn {
                    median_session_s: 1800.0,
                    median_down_s: 60.0,
                    graceful: 0.0,
                    same_id: 0.5,
                });
            }
            // Goal: WAN, 10 % dead contacts: median ≤ 4 round trips, p99 < 2 s.
            "wan-dead" => {
                s.link.latency = Latency::Wan;
                s.dead_share = 0.1;
                s.duration_s = 300.0;
            }
            // Goal: announce visible from every node within 1 s in a data centre.
            "visible" => {
                s.probes_per_announce = 20;
            }
            // Goal: 10 % Sybils next to a name: ≥ 99 % of honest lookups find the worker.
            "sybil" => s.sybils = 0.1,
            "droppers" => s.droppers = 0.1,
            "liars" => s.liars = 0.1,
            "partition" => {
                s.partition = Some(Partition {
                    at_s: 120.0,
                    duration_s: 180.0,
                    share: 0.5,
                });
            }
            "messy" => {
                s.link.latency = Latency::Wan;
                s.link.loss = 0.02;
                s.link.duplicate = 0.01;
                s.link.reorder = 0.05;
            }
            "lan" => s.link.latency = Latency::Lan,
            // The DHT alone: the bootstrap grapes stop, with churn and loss.
            "no-bootstrap" => {
                s.bootstrap_down = true;
                s.link.loss = 0.02;
                s.churn = Some(Churn {
                    median_session_s: 1800.0,
                    median_down_s: 60.0,
                    graceful: 0.0,
                    same_id: 0.5,
                });
            }
            _ => return None,
        }
        Some(s)
    }

    /// The scenario `ci/test.sh` runs (`grenache-sim check`): 1,000 nodes for 10 simulated
    /// minutes on a data-centre network with crash churn (30-minute median sessions, half the
    /// rejoins with a new id), 2 % loss, some duplication and reordering.
    pub fn ci(seed: u64) -> Scenario {
        let mut s = Scenario::base("ci");
        s.seed = seed;
        s.link.loss = 0.02;
        s.link.duplicate = 0.005;
        s.link.reorder = 0.01;
        s.churn = Some(Churn {
            median_session_s: 1800.0,
            median_down_s: 60.0,
            graceful: 0.2,
            same_id: 0.5,
        });
        s
    }

    /// Names of the presets, in the order docs/SCALE.md shows them.
    pub const PRESETS: [&'static str; 11] = [
        "loss",
        "churn",
        "wan-dead",
        "visible",
        "sybil",
        "droppers",
        "liars",
        "partition",
        "messy",
        "lan",
        "no-bootstrap",
    ];
}
