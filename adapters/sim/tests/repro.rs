//! A run is a function of its scenario: the same seed gives the same report, another seed
//! another one.

use grenache_sim::net::Latency;
use grenache_sim::report::Report;
use grenache_sim::scenario::{Churn, Scenario};

/// A small but busy network: WAN, loss, duplication, reordering, churn, liars.
fn small(seed: u64) -> Scenario {
    let mut s = Scenario::base("repro");
    s.nodes = 80;
    s.warmup_s = 40.0;
    s.duration_s = 60.0;
    s.seed = seed;
    s.link.latency = Latency::Wan;
    s.link.loss = 0.03;
    s.link.duplicate = 0.01;
    s.link.reorder = 0.05;
    s.churn = Some(Churn {
        median_session_s: 300.0,
        median_down_s: 30.0,
        graceful: 0.3,
        same_id: 0.5,
    });
    s.liars = 0.05;
    s
}

fn run(seed: u64) -> Report {
    let mut r = grenache_sim::run(&small(seed), None);
    // The only field that depends on the machine.
    r.wall_s = 0.0;
    r
}

#[test]
fn same_seed_same_report() {
    let a = run(5);
    assert!(a.lookups > 200, "the workload ran: {}", a.lookups);
    assert!(a.datagrams > 10_000);
    assert_eq!(a, run(5));
}

#[test]
fn another_seed_another_report() {
    assert_ne!(run(5), run(6));
}
