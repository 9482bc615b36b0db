//! `grenache-sim`: runs named scenarios (and sweeps) of the real core on a simulated network,
//! prints a Markdown table and writes SVG plots. See docs/SCALE.md.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use grenache_sim::net::Latency;
use grenache_sim::plot::{self, Series};
use grenache_sim::report::Report;
use grenache_sim::scenario::{Churn, Scenario, Variant};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "grenache-sim",
    about = "The grenache-core DHT on a simulated network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the named scenarios.
    List,
    /// Runs scenarios (named presets, or "base" shaped by the flags), both rule sets.
    Run {
        /// Preset names ("all" for every preset).
        #[arg(required = true)]
        scenarios: Vec<String>,
        #[command(flatten)]
        flags: Flags,
    },
    /// Runs the scenario of ci/test.sh and asserts its thresholds (exit status 1 and the seed
    /// on failure).
    Check {
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Runs a sweep and plots it.
    Sweep {
        /// What varies.
        kind: SweepKind,
        #[command(flatten)]
        flags: Flags,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SweepKind {
    /// Lookup success against churn (median session from 120 down to 5 minutes; 5 % loss).
    Churn,
    /// Lookup success against the share of hostile nodes (droppers, liars, Sybils).
    Hostile,
    /// Cost per lookup against network size, 100 to --nodes.
    Size,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Rules {
    Ours,
    NodeLike,
    Both,
}

/// Flags that override a preset.
#[derive(Args)]
struct Flags {
    /// Nodes, adversaries included.
    #[arg(long)]
    nodes: Option<usize>,
    /// Measured simulated minutes (after the warm-up).
    #[arg(long)]
    minutes: Option<f64>,
    /// Warm-up simulated minutes.
    #[arg(long)]
    warmup_minutes: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Link latency model.
    #[arg(long, value_enum)]
    latency: Option<Latency>,
    /// Datagram loss probability.
    #[arg(long)]
    loss: Option<f64>,
    /// Datagram duplication probability.
    #[arg(long)]
    duplicate: Option<f64>,
    /// Datagram reordering probability.
    #[arg(long)]
    reorder: Option<f64>,
    /// Churn: median session in minutes (crashes unless --graceful).
    #[arg(long)]
    session_minutes: Option<f64>,
    /// Churn: share of graceful leaves.
    #[arg(long)]
    graceful: Option<f64>,
    /// Churn: share of rejoins with the old id.
    #[arg(long)]
    same_id: Option<f64>,
    /// Share of nodes that die for good when measuring starts.
    #[arg(long)]
    dead: Option<f64>,
    /// Share of Sybil nodes next to the first name.
    #[arg(long)]
    sybils: Option<f64>,
    /// Share of silent droppers.
    #[arg(long)]
    droppers: Option<f64>,
    /// Share of liars.
    #[arg(long)]
    liars: Option<f64>,
    /// Lookups per second in the whole network.
    #[arg(long)]
    lookups_per_s: Option<f64>,
    /// The bootstrap grapes stop when measuring starts (the DHT alone must find workers).
    #[arg(long)]
    bootstrap_down: bool,
    /// Lookup rules to run.
    #[arg(long, value_enum, default_value_t = Rules::Both)]
    rules: Rules,
    /// Directory for SVG plots (none written without it).
    #[arg(long)]
    plot_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl Flags {
    fn apply(&self, s: &mut Scenario) {
        if let Some(v) = self.nodes {
            s.nodes = v;
        }
        if let Some(v) = self.minutes {
            s.duration_s = v * 60.0;
        }
        if let Some(v) = self.warmup_minutes {
            s.warmup_s = v * 60.0;
        }
        s.seed = self.seed;
        if let Some(v) = self.latency {
            s.link.latency = v;
        }
        if let Some(v) = self.loss {
            s.link.loss = v;
        }
        if let Some(v) = self.duplicate {
            s.link.duplicate = v;
        }
        if let Some(v) = self.reorder {
            s.link.reorder = v;
        }
        if let Some(m) = self.session_minutes {
            let c = s.churn.get_or_insert(Churn {
                median_session_s: 0.0,
                median_down_s: 60.0,
                graceful: 0.0,
                same_id: 0.5,
            });
            c.median_session_s = m * 60.0;
        }
        if let Some(c) = s.churn.as_mut() {
            if let Some(v) = self.graceful {
                c.graceful = v;
            }
            if let Some(v) = self.same_id {
                c.same_id = v;
            }
        }
        if let Some(v) = self.dead {
            s.dead_share = v;
        }
        if let Some(v) = self.sybils {
            s.sybils = v;
        }
        if let Some(v) = self.droppers {
            s.droppers = v;
        }
        if let Some(v) = self.liars {
            s.liars = v;
        }
        if let Some(v) = self.lookups_per_s {
            s.lookups_per_s = v;
        }
        if self.bootstrap_down {
            s.bootstrap_down = true;
        }
    }

    fn variants(&self) -> Vec<Variant> {
        match self.rules {
            Rules::Ours => vec![Variant::Ours],
            Rules::NodeLike => vec![Variant::NodeLike],
            Rules::Both => vec![Variant::Ours, Variant::NodeLike],
        }
    }
}

/// Runs one scenario with a progress bar on stderr (simulated seconds).
fn run_one(sc: &Scenario, quiet: bool) -> Report {
    let total = (sc.warmup_s + sc.duration_s) as u64;
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {bar:40} {pos}/{len} simulated s (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(format!(
        "{} {} {} nodes",
        sc.name,
        sc.variant.label(),
        sc.nodes
    ));
    pb.enable_steady_tick(Duration::from_millis(500));
    let r = grenache_sim::run(sc, Some(&pb));
    pb.finish_and_clear();
    r
}

fn print_rows(reports: &[Report]) {
    println!("{}", Report::header());
    for r in reports {
        println!("{}", r.row());
    }
    for r in reports {
        print!("{}", r.extra());
    }
}

fn plot_or_warn(result: Result<(), plot::PlotError>) {
    if let Err(e) = result {
        eprintln!("plot not written: {e}");
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for name in Scenario::PRESETS {
                println!("{name}");
            }
        }
        Command::Run { scenarios, flags } => {
            let names: Vec<String> = if scenarios.iter().any(|s| s == "all") {
                Scenario::PRESETS.iter().map(|s| (*s).to_owned()).collect()
            } else {
                scenarios
            };
            let mut all = Vec::new();
            for name in &names {
                let Some(mut sc) = Scenario::preset(name)
                    .or_else(|| (name == "base").then(|| Scenario::base("base")))
                else {
                    eprintln!("unknown scenario {name}; see `grenache-sim list`");
                    std::process::exit(2);
                };
                flags.apply(&mut sc);
                let mut pair = Vec::new();
                for v in flags.variants() {
                    sc.variant = v;
                    let r = run_one(&sc, flags.quiet);
                    eprintln!("{}", r.row());
                    pair.push(r);
                }
                if let Some(dir) = &flags.plot_dir {
                    let path = dir.join(format!("cdf-{name}.svg"));
                    let title = format!("Lookup latency CDF: {name}, {} nodes", sc.nodes);
                    plot_or_warn(plot::latency_cdf(&path, &title, &pair));
                }
                all.extend(pair);
            }
            print_rows(&all);
        }
        Command::Sweep { kind, flags } => sweep(kind, &flags),
        Command::Check { seed } => {
            let r = run_one(&Scenario::ci(seed), true);
            print_rows(std::slice::from_ref(&r));
            let failed = grenache_sim::ci_failures(&r);
            if !failed.is_empty() {
                for f in &failed {
                    eprintln!("FAILED: {f}");
                }
                eprintln!("seed {seed}: rerun with `grenache-sim check --seed {seed}`");
                std::process::exit(1);
            }
            println!("all thresholds hold (seed {seed})");
        }
    }
}

fn sweep(kind: SweepKind, flags: &Flags) {
    let mut all = Vec::new();
    let mut series = Vec::new();
    let (file, title, x_label, y_label, log_x) = match kind {
        SweepKind::Churn => {
            for v in flags.variants() {
                let mut points = Vec::new();
                for minutes in [120.0, 60.0, 30.0, 15.0, 5.0] {
                    let mut sc =
                        Scenario::preset("churn").unwrap_or_else(|| Scenario::base("churn"));
                    flags.apply(&mut sc);
                    sc.name = format!("churn-{minutes}min");
                    if let Some(c) = sc.churn.as_mut() {
                        c.median_session_s = minutes * 60.0;
                    }
                    sc.variant = v;
                    let r = run_one(&sc, flags.quiet);
                    eprintln!("{}", r.row());
                    // x: sessions ending per node per hour.
                    points.push((
                        60.0 / minutes * core::f64::consts::LN_2,
                        100.0 * r.success(),
                    ));
                    all.push(r);
                }
                series.push(Series {
                    label: v.label().to_owned(),
                    points,
                });
            }
            (
                "success-vs-churn.svg",
                "Lookup success vs churn (crashes, 5 % loss)",
                "sessions ending per node per hour",
                "lookups finding a live worker (%)",
                false,
            )
        }
        SweepKind::Hostile => {
            for v in flags.variants() {
                for kind in ["droppers", "liars", "sybils"] {
                    let mut points = Vec::new();
                    for share in [0.0, 0.05, 0.1, 0.2, 0.3] {
                        let mut sc = Scenario::base(kind);
                        flags.apply(&mut sc);
                        sc.name = format!("{kind}-{}pct", share * 100.0);
                        match kind {
                            "droppers" => sc.droppers = share,
                            "liars" => sc.liars = share,
                            _ => sc.sybils = share,
                        }
                        sc.variant = v;
                        let r = run_one(&sc, flags.quiet);
                        eprintln!("{}", r.row());
                        // Sybils attack one name: plot the lookups of that name.
                        let success = if kind == "sybils" && r.target_lookups.0 > 0 {
                            r.target_lookups.1 as f64 / r.target_lookups.0 as f64
                        } else {
                            r.success()
                        };
                        points.push((100.0 * share, 100.0 * success));
                        all.push(r);
                    }
                    series.push(Series {
                        label: format!("{kind} ({})", v.label()),
                        points,
                    });
                }
            }
            (
                "success-vs-hostile.svg",
                "Lookup success vs hostile nodes",
                "hostile nodes (%)",
                "lookups finding a live worker (%)",
                false,
            )
        }
        SweepKind::Size => {
            let top = flags.nodes.unwrap_or(10_000);
            let sizes: Vec<usize> = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000]
                .into_iter()
                .filter(|&n| n <= top)
                .collect();
            for v in flags.variants() {
                let (mut q, mut h) = (Vec::new(), Vec::new());
                for &n in &sizes {
                    let mut sc = Scenario::base("size");
                    flags.apply(&mut sc);
                    sc.nodes = n;
                    sc.name = format!("size-{n}");
                    sc.variant = v;
                    let r = run_one(&sc, flags.quiet);
                    eprintln!("{}", r.row());
                    q.push((n as f64, r.queries.p50));
                    h.push((n as f64, r.rounds.p50));
                    all.push(r);
                }
                series.push(Series {
                    label: format!("queries per lookup, median ({})", v.label()),
                    points: q,
                });
                series.push(Series {
                    label: format!("rounds per lookup, median ({})", v.label()),
                    points: h,
                });
            }
            (
                "cost-vs-size.svg",
                "Cost per lookup vs network size (log x: a straight line is log N)",
                "nodes",
                "per lookup",
                true,
            )
        }
    };
    print_rows(&all);
    if let Some(dir) = &flags.plot_dir {
        // A sweep without the bootstrap grapes gets its own file.
        let file = if flags.bootstrap_down {
            file.replace(".svg", "-no-bootstrap.svg")
        } else {
            file.to_owned()
        };
        plot_or_warn(plot::lines(
            &dir.join(file),
            title,
            x_label,
            y_label,
            &series,
            log_x,
        ));
    }
}
