//! `grape`: a drop-in for the Node `grenache-grape` CLI (docs/protocol.md §2).
//!
//! Same flags and aliases; the defaults are the ones grenache-grape documents (peers expire after
//! 120 s, payloads up to 8192 bytes, …), not the accidental ones of its 1.0.0 CLI
//! (docs/protocol.md §13.1). Stricter than yargs where that only catches mistakes: numbers must be
//! numbers, unknown flags are errors, a malformed `--bn` entry is refused with the reason.
//!
//! Start-up order: parse and validate the flags, bind the HTTP port (a busy port fails at once,
//! exit code 1), start the DHT, serve the API until SIGINT/SIGTERM.
//!
//! Threads: the main one accepts API connections and hands them to `--threads` event loops
//! (one per core but one by default, at least one), each a current-thread runtime on its own thread; the DHT node
//! runs on a thread of its own (`grenache_tokio::loops`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grenache_host::{init_logging, LogFormat};
use grenache_tokio::grape::node::ITEMS;
use grenache_tokio::grape::{
    parse_bootstrap, Grape, GrapeConfig, StartError, DEFAULT_DHT_CONCURRENCY, DEFAULT_LOOKUP_REUSE,
    DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_TABLES, DEFAULT_MAX_VALUES, DEFAULT_NODE_LIVENESS,
    DEFAULT_PEER_MAX_AGE,
};
use grenache_tokio::limits::AllowList;
use tracing::{error, info};

/// Grenache grape: a DHT node for microservice discovery, with its HTTP API.
#[derive(Debug, Parser)]
#[command(
    name = "grape",
    version,
    after_help = "Examples:\n  grape --dp 20001 --aph 30001 --bn '127.0.0.1:20002,127.0.0.1:20003'\n  \
                  grape --dp 20002 -b 127.0.0.1 --aph 40001 --bn '127.0.0.1:20001'\n  \
                  grape --dp 20001 --aph 30001 --bn ''   (an isolated grape)"
)]
struct Cli {
    /// Address the HTTP API listens on (default: all interfaces, IPv6 and IPv4). Also the host
    /// the grape stores for its own announces; the DHT's UDP socket always binds 0.0.0.0
    #[arg(short = 'b', long = "bind", visible_alias = "b", value_name = "HOST")]
    bind: Option<String>,

    /// UDP port of the DHT (0 = any free port)
    #[arg(long = "dp", visible_alias = "dht_port", value_name = "PORT")]
    dht_port: u16,

    /// TCP port of the HTTP API
    #[arg(long = "aph", visible_alias = "api_port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    api_port: u16,

    /// Bootstrap nodes: comma-separated host:port list ('' for none: an isolated grape)
    #[arg(long = "bn", visible_alias = "bootstrap", value_name = "NODES")]
    bootstrap: String,

    /// Queries in flight per DHT traversal (the Node grape ignores this flag and uses 16)
    #[arg(long = "dc", visible_alias = "dht_concurrency", value_name = "N",
          default_value_t = DEFAULT_DHT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..))]
    dht_concurrency: u16,

    /// Max /lookup answers kept for reuse, one per name (the grape's cache of per-target
    /// traversal results, as bittorrent-dht's tables are; 0 = keep none)
    #[arg(long = "dht_maxTables", value_name = "N", default_value_t = DEFAULT_MAX_TABLES)]
    dht_max_tables: usize,

    /// Max BEP 44 values stored, shared fairly between the hosts that put them (the default is
    /// also the most this build can keep)
    #[arg(long = "dht_maxValues", value_name = "N", default_value_t = DEFAULT_MAX_VALUES)]
    dht_max_values: usize,

    /// Max age of announced peers in the DHT, in ms (0 = never expire): a peer is dropped this
    /// long after its last announce (the Node grape: 0.67-1.33 times it, plus its lookup cache)
    #[arg(long = "dpa", visible_alias = "dht_peer_maxAge", value_name = "MS",
          default_value_t = millis(DEFAULT_PEER_MAX_AGE))]
    dht_peer_max_age: u64,

    /// Interval in ms without routing-table changes after which the DHT checks for dead nodes
    #[arg(long = "dnl", visible_alias = "dht_nodeLiveness", value_name = "MS",
          default_value_t = millis(DEFAULT_NODE_LIVENESS))]
    dht_node_liveness: u64,

    /// Max HTTP request body size, in bytes (larger bodies get 413 ERR_GRAPE_PAYLOAD_SIZE)
    #[arg(long = "check_maxPayloadSize", value_name = "BYTES", default_value_t = DEFAULT_MAX_PAYLOAD)]
    check_max_payload_size: usize,

    /// Accepted for compatibility; has no effect (as in the Node grape)
    #[arg(long = "cache_maxAge", value_name = "MS")]
    cache_max_age: Option<u64>,

    /// Extension: how long, in ms, a non-empty /lookup answer is given again without a new DHT
    /// traversal (0 = never). Empty answers are never reused; an /announce or /unannounce
    /// through this grape drops the name's answer at once
    #[arg(long = "lookup_reuse", value_name = "MS", default_value_t = millis(DEFAULT_LOOKUP_REUSE))]
    lookup_reuse: u64,

    /// Extension: the client networks that may use the HTTP API, comma-separated (IPv4 or IPv6
    /// CIDR or single addresses, e.g. 10.0.0.0/8,127.0.0.1,::1); others are disconnected at
    /// once. Default: everyone
    #[arg(
        long = "api-allow",
        visible_alias = "api_allow",
        value_name = "CIDR,..."
    )]
    api_allow: Option<String>,

    /// Extension: event loops serving the HTTP API, each on its own thread, none stealing work
    /// from another (0 = serve on the accepting thread). Default: one per core but one, at
    /// least one
    #[arg(long = "threads", value_name = "N", default_value_t = default_threads(),
          value_parser = clap::value_parser!(u16).range(..=MAX_THREADS as i64))]
    threads: u16,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); quiet by default
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,

    /// How log lines are written on stderr: text, or one JSON object per line
    #[arg(long = "log-format", value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The most `--threads` takes: far above any core count a grape runs on, low enough that a
/// typo (`--threads 80000`) is an error rather than 80000 threads.
const MAX_THREADS: u16 = 1024;

fn default_threads() -> u16 {
    u16::try_from(grenache_tokio::loops::default_threads())
        .unwrap_or(MAX_THREADS)
        .min(MAX_THREADS)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cli {
    fn into_config(self) -> Result<GrapeConfig, String> {
        let bootstrap = parse_bootstrap(&self.bootstrap).map_err(|e| format!("--bn: {e}"))?;
        let bind = match self.bind {
            Some(host) if host.trim().is_empty() => {
                return Err("-b/--bind: empty address".to_owned());
            }
            other => other,
        };
        let api_allow = match self.api_allow {
            Some(list) => list
                .parse::<AllowList>()
                .map_err(|e| format!("--api-allow: {e}"))?,
            None => AllowList::any(),
        };
        if self.dht_max_values > ITEMS {
            return Err(format!(
                "--dht_maxValues: {} is above the maximum of {ITEMS} BEP 44 values this build \
                 can keep",
                self.dht_max_values
            ));
        }
        Ok(GrapeConfig {
            bind,
            dht_port: self.dht_port,
            api_port: self.api_port,
            bootstrap,
            dht_concurrency: usize::from(self.dht_concurrency),
            dht_max_tables: self.dht_max_tables,
            dht_max_values: self.dht_max_values,
            dht_peer_max_age: Duration::from_millis(self.dht_peer_max_age),
            dht_node_liveness: Duration::from_millis(self.dht_node_liveness),
            max_payload: self.check_max_payload_size,
            cache_max_age: self.cache_max_age,
            lookup_reuse: Duration::from_millis(self.lookup_reuse),
            api_allow,
            threads: usize::from(self.threads),
        })
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                error!("cannot listen for SIGTERM ({err}); only SIGINT stops the grape");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(config: GrapeConfig) -> Result<(), StartError> {
    let grape = Grape::start(config).await?;
    info!(
        "HTTP API listening on {}, DHT on UDP port {}",
        grape.api_addr(),
        grape.dht_port()
    );
    shutdown_signal().await;
    grape.stop().await;
    info!("stopped");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(msg) => {
            eprintln!("grape: {msg}");
            return ExitCode::from(2);
        }
    };
    // This thread accepts the API's connections and waits for signals; the connections are
    // served on `--threads` loops of their own, and the DHT on its own thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grape: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grape: {err}");
            ExitCode::FAILURE
        }
    }
}
