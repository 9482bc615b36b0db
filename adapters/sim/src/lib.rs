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

/// The thresholds `ci/test.sh` asserts on [`Scenario::ci`]'s report: the goals of issue 14
/// for this smaller network, with margins a correct core meets at every seed we tried. Returns
/// what failed (empty when all hold).
pub fn ci_failures(r: &Report) -> Vec<String> {
    let mut failed = Vec::new();
    let mut want = |ok: bool, what: String| {
        if !ok {
            failed.push(what);
        }
    };
    want(
        r.lookups >= 3_000,
        format!("at least 3,000 measured lookups, got {}", r.lookups),
    );
    want(
        r.success() >= 0.99,
        format!("lookup success >= 99 %, got {:.3} %", 100.0 * r.success()),
    );
    // Below one fixed 250 ms stall: a dead contact must cost round trips, not a timeout
    // (LookupConfig::adaptive_stall; with the fixed rule this run's p99 is about 750 ms).
    want(
        r.latency.p99 <= 250.0,
        format!("lookup p99 <= 250 ms, got {:.0} ms", r.latency.p99),
    );
    // Lookups started 1 s after a worker's first announce started.
    let (ok, all) = r.visible_at[2];
    want(
        all > 0 && report::ratio(ok, all) >= 0.99,
        format!("announces visible to lookups after 1 s >= 99 %, got {ok}/{all}"),
    );
    let gets = r.gets.0 as f64 / r.gets.1.max(1) as f64;
    want(
        r.gets.1 > 0 && gets >= 0.95,
        format!("BEP44 gets >= 95 %, got {}/{}", r.gets.0, r.gets.1),
    );
    want(
        r.table_live >= 0.9,
        format!(
            "live routing-table contacts >= 90 %, got {:.1} %",
            100.0 * r.table_live
        ),
    );
    failed
}
