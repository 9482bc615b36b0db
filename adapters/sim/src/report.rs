//! What a run measured, and how it is printed.

use core::fmt::Write as _;

/// When the probe lookups of a worker's first announce start, ms after the announce started.
pub const VISIBLE_AFTER_MS: [u64; 4] = [250, 500, 1_000, 2_000];

/// Percentiles of a sample, in the sample's unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `v` (sorted in place); all zero for an empty sample.
    pub fn of(v: &mut [f64]) -> Percentiles {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[i]
        };
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Lookup rules ("ours" or "Node-like").
    pub variant: String,
    /// Nodes.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Measured lookups (excluding announce probes).
    pub lookups: u64,
    /// Of those, lookups that returned a worker of the name that was up and announced.
    pub lookups_ok: u64,
    /// Lookups of the name the Sybils surround, and how many of them succeeded.
    pub target_lookups: (u64, u64),
    /// Lookup latency, ms, sorted (for CDF plots).
    pub latencies_ms: Vec<f64>,
    /// Lookup latency percentiles, ms.
    pub latency: Percentiles,
    /// Round trips until the first answer that carried a live worker (successful lookups).
    pub hops: Percentiles,
    /// Round trips of the lookup (its deepest query: 1 for the seeds, 2 for nodes they
    /// named, ...).
    pub rounds: Percentiles,
    /// Queries sent per lookup.
    pub queries: Percentiles,
    /// Announce to visible: for each delay of [`VISIBLE_AFTER_MS`] after a worker's first
    /// announce started, the probe lookups from random nodes started then that returned the
    /// worker, and all of them.
    pub visible_at: [(u64, u64); VISIBLE_AFTER_MS.len()],
    /// BEP44 gets that returned the value put, and all gets.
    pub gets: (u64, u64),
    /// Bytes sent per honest node per second.
    pub bytes_per_node_s: f64,
    /// Datagrams sent per honest node per second.
    pub packets_per_node_s: f64,
    /// Share of routing-table contacts of honest nodes that are live (the node is up with
    /// that id), averaged over samples.
    pub table_live: f64,
    /// Mean routing-table size of honest nodes.
    pub table_size: f64,
    /// Lookup success before, during and after a partition: (ok, total) each.
    pub partition_phases: Option<[(u64, u64); 3]>,
    /// Bytes of one simulated node's state (the core `Node` value).
    pub node_bytes: usize,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Datagrams simulated.
    pub datagrams: u64,
}

/// `ok / all`, 0 when `all` is 0.
pub fn ratio(ok: u64, all: u64) -> f64 {
    if all == 0 {
        return 0.0;
    }
    ok as f64 / all as f64
}

impl Report {
    /// Share of lookups that found a live worker.
    pub fn success(&self) -> f64 {
        ratio(self.lookups_ok, self.lookups)
    }

    /// The header of [`Report::row`].
    pub fn header() -> String {
        "| scenario | rules | nodes | lookups | success | p50 ms | p90 ms | p99 ms | max ms | \
         worker at round p50/p99 | rounds p50/p99 | queries p50/p99 | visible after 0.25/0.5/1/2 s (%) | gets ok | B/node/s | \
         pkt/node/s | table live | wall s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|"
            .to_owned()
    }

    /// One Markdown table row.
    pub fn row(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {:.3} % | {:.1} | {:.1} | {:.1} | {:.0} | {:.0}/{:.0} | {:.0}/{:.0} \
             | {:.0}/{:.0} | {} | {:.1} % | {:.0} | {:.2} | {:.1} % | {:.0} |",
            self.scenario,
            self.variant,
            self.nodes,
            self.lookups,
            100.0 * self.success(),
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.latency.max,
            self.hops.p50,
            self.hops.p99,
            self.rounds.p50,
            self.rounds.p99,
            self.queries.p50,
            self.queries.p99,
            self.visible_at
                .iter()
                .map(|&(ok, all)| format!("{:.0}", 100.0 * ratio(ok, all)))
                .collect::<Vec<_>>()
                .join("/"),
            100.0 * ratio(self.gets.0, self.gets.1),
            self.bytes_per_node_s,
            self.packets_per_node_s,
            100.0 * self.table_live,
            self.wall_s,
        );
        s
    }

    /// Lines that only some scenarios have (the Sybils' target name, partition phases).
    pub fn extra(&self) -> String {
        let mut s = String::new();
        if self.target_lookups.0 > 0 {
            let _ = writeln!(
                s,
                "  {} {}: lookups of the Sybils' name: {}/{} ({:.3} %)",
                self.scenario,
                self.variant,
                self.target_lookups.1,
                self.target_lookups.0,
                100.0 * ratio(self.target_lookups.1, self.target_lookups.0)
            );
        }
        if let Some(p) = self.partition_phases {
            let _ = writeln!(
                s,
                "  {} {}: success before {:.2} %, during {:.2} %, after heal {:.2} %",
                self.scenario,
                self.variant,
                100.0 * ratio(p[0].0, p[0].1),
                100.0 * ratio(p[1].0, p[1].1),
                100.0 * ratio(p[2].0, p[2].1)
            );
        }
        let _ = writeln!(
            s,
            "  {} {}: seed {}, {} datagrams, node state {} B, mean table {:.0} contacts",
            self.scenario,
            self.variant,
            self.seed,
            self.datagrams,
            self.node_bytes,
            self.table_size
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
