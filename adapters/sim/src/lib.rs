//! grenache-sim: the unmodified grenache-core DHT [`Node`](grenache_core::dht::node::Node) of
//! thousands of grapes on one simulated network, deterministically.
//!
//! The core is sans-IO: a node is a value fed datagrams and the current time. This crate
//! feeds thousands of them from one event queue on a virtual clock ([`engine`]), through a
//! link model with latency, loss, duplication and reordering ([`net`]), with churn,
//! partitions and adversaries, a Grenache workload (a few names, many lookups, re-announce
//! every 2 minutes; BEP44 puts and gets) and the measurements of [`report::Report`]. The
//! `grenache-sim` binary runs the named scenarios of [`scenario::Scenario`] and writes the
//! plots of docs/SCALE.md ([`plot`]).
//!
//! A run is a pure function of its [`scenario::Scenario`] (seed included): the same seed gives
//! the same report.

pub mod dist;
pub mod engine;
pub mod net;
pub mod plot;
pub mod report;
pub mod scenario;

use indicatif::ProgressBar;

use crate::engine::{Engine, INFLIGHT_NODE_LIKE, INFLIGHT_OURS};
use crate::report::Report;
use crate::scenario::{Scenario, Variant};

/// Runs one scenario; `progress`, if given, is advanced in simulated seconds.
pub fn run(sc: &Scenario, progress: Option<&ProgressBar>) -> Report {
    match sc.variant {
        Variant::Ours => Engine::<INFLIGHT_OURS>::new(sc, progress).run(),
        Variant::NodeLike => Engine::<INFLIGHT_NODE_LIKE>::new(sc, progress).run(),
    }
}
