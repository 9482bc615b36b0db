//! `grenache`: the Grenache command-line client, and `grenache demo`, a whole Grenache network
//! (two grapes, a worker, a client) in one process.
//!
//! Output is made for both people and scripts: answers go to stdout, one item per line
//! (`lookup` prints `ip:port` lines, or a JSON array with `--json`; `request` prints the
//! worker's answer as JSON on one line); errors go to stderr as one sentence, and the exit code
//! says what kind of failure it was (see [`EXIT_CODES`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use grenache_host::{init_logging, LogFormat};
use grenache_tokio::grape::{BootstrapNode, Grape, GrapeConfig};
use grenache_tokio::rpc::{http, ws, RpcClient};
use grenache_tokio::{Link, LinkConfig, LinkError, Request, RpcError};
use serde_json::Value;

/// The exit codes, as `--help` prints them.
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  any other failure (the grape refused the request, the demo could not run, ...)
  2  bad command line: unknown flag, bad JSON argument, bad --grape URL, bad hash
  3  not found: no worker announces the name, or nothing is stored under the hash
  4  the grape cannot be reached (connection refused, no answer in time)
  5  the worker failed: it answered with an error, did not answer in time, or could not be reached

Examples:
  grenache demo
  grenache lookup fibonacci_worker
  grenache request fibonacci_worker '{\"number\": 10}'
  grenache map fibonacci_worker '{\"number\": 10}'
  grenache --grape http://127.0.0.1:40001 request my_http_service '{}' --transport http
  grenache put 'hello'
  grenache get 2aae6c35c94fcfb415dbe95f408b9ce91ee846ed
  grenache watch fibonacci_worker --interval 500
  grenache status";

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_WORKER: u8 = 5;

/// The bounds of `watch --interval`: faster would load the grapes for nothing (an announce
/// lasts minutes), slower would miss whole deploys.
const WATCH_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// How long `status` waits for the grape's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The service name of the demo's worker, as in the tutorial.
const FIB_SERVICE: &str = "fibonacci_worker";
/// How long the demo waits for any one step before giving up.
const DEMO_STEP_LIMIT: Duration = Duration::from_secs(10);

/// Grenache client: look services up, call them, store and read values in the DHT.
#[derive(Debug, Parser)]
#[command(name = "grenache", version, after_help = EXIT_CODES)]
struct Cli {
    /// URL of the grape's HTTP API
    #[arg(
        long,
        global = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:30001"
    )]
    grape: String,

    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// How log lines are written on stderr: text, or one JSON object per line
    #[arg(long = "log-format", global = true, value_enum, value_name = "FORMAT",
          default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The RPC transport of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// WebSocket (grenache-nodejs-ws)
    Ws,
    /// HTTP (grenache-nodejs-http)
    Http,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole network in this process: two grapes, a Fibonacci worker and a client that
    /// calls it; prints each step (needs nothing else installed)
    Demo {
        /// Leave the network up after the demo, print how to reach it, wait for Ctrl-C
        #[arg(long)]
        keep_running: bool,
    },
    /// Print the workers announcing NAME, one `ip:port` per line
    Lookup {
        /// Service name
        name: String,
        /// Print a JSON array instead of one address per line
        #[arg(long)]
        json: bool,
    },
    /// Announce NAME at PORT once (grapes forget it after about 2 minutes unless re-announced)
    Announce {
        /// Service name
        name: String,
        /// Port the worker listens on (its IP is the one the grape sees)
        port: u16,
    },
    /// Send the JSON payload to one worker of NAME and print its answer as JSON
    Request {
        /// Service name
        name: String,
        /// Payload, any JSON value (e.g. '{"number": 10}')
        json: String,
        /// Transport the workers use
        #[arg(long, value_enum, default_value_t = Transport::Ws)]
        transport: Transport,
        /// Give up after this many milliseconds (lookup included)
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        timeout: u64,
    },
    /// Send the JSON payload to every worker of NAME; print each answer as JSON, one per line
    /// (failed workers are reported on stderr, exit code 5)
    Map {
        /// Service name
        name: String,
        /// Payload, any JSON value
        json: String,
        /// Transport the workers use
        #[arg(long, value_enum, default_value_t = Transport::Ws)]
        transport: Transport,
        /// Give up after this many milliseconds (lookup included)
        #[arg(long, value_name = "MS", default_value_t = 10_000)]
        timeout: u64,
    },
    /// Store VALUE (a string, below 1000 bytes) in the DHT as an immutable item; print its
    /// 40-hex key
    Put {
        /// The value to store
        value: String,
    },
    /// Follow who announces NAME: print `TIME join ip:port` and `TIME leave ip:port` lines
    /// (RFC 3339 UTC) as the lookups' answers change, until Ctrl-C. The workers the first
    /// lookup finds are printed as joins. A worker leaves once the grapes forget it (the
    /// grape's --dpa after its last announce)
    Watch {
        /// Service name
        name: String,
        /// Milliseconds between two lookups (100 to 3600000)
        #[arg(long, value_name = "MS", default_value_t = 1000,
              value_parser = clap::value_parser!(u64).range(WATCH_INTERVAL_MS))]
        interval: u64,
        /// Stop after this many seconds (default: run until Ctrl-C)
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
        stop_after: Option<u64>,
    },
    /// Show the grape's state: identity, health, the names it stores with their workers, its
    /// routing-table contacts (from the grape's GET /status.json)
    Status {
        /// Print the grape's /status.json document as it is, instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Print the value stored under HASH (exit code 3 if there is none)
    Get {
        /// The 40-hex key `put` printed
        hash: String,
        /// Print the whole item as JSON (id, token, v, ...), not only the value
        #[arg(long)]
        json: bool,
    },
}

/// A failed command: the sentence for stderr and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// The short reason of a transport failure in plain words (`connect ECONNREFUSED …` is what
/// node-fetch prints; people want "connection refused").
fn plain_reason(reason: &str) -> String {
    if reason.starts_with("connect ECONNREFUSED") {
        "connection refused".to_string()
    } else {
        reason.to_string()
    }
}

/// A Link error in plain words; `name` is the service looked up, if any.
fn link_failure(err: &LinkError, grape: &str, name: Option<&str>) -> Failure {
    match err {
        LinkError::LookupEmpty => Failure::new(
            EXIT_NOT_FOUND,
            format!(
                "no worker announces '{}' (ERR_GRAPE_LOOKUP_EMPTY)",
                name.unwrap_or_default()
            ),
        ),
        LinkError::Request { reason, .. } => Failure::new(
            EXIT_UNREACHABLE,
            format!(
                "cannot reach the grape at {grape}: {}",
                plain_reason(reason)
            ),
        ),
        LinkError::Timeout { .. } => Failure::new(
            EXIT_UNREACHABLE,
            format!("cannot reach the grape at {grape}: no answer in time ({err})"),
        ),
        LinkError::Status { code, message } => Failure::new(
            EXIT_FAILED,
            format!("the grape at {grape} refused the request: {message} (HTTP {code})"),
        ),
        LinkError::Grape(message) => {
            let hint = match message.as_str() {
                "No nodes to query" | "All queries failed" => {
                    " (the grape knows no other DHT node that answers: is it bootstrapped?)"
                }
                _ => "",
            };
            Failure::new(
                EXIT_FAILED,
                format!("the grape at {grape} answered with an error: {message}{hint}"),
            )
        }
        LinkError::InvalidConfig(why) => {
            Failure::new(EXIT_USAGE, format!("bad --grape URL: {why}"))
        }
        other => Failure::new(EXIT_FAILED, format!("grape {grape}: {other}")),
    }
}

/// An RPC error in plain words.
fn rpc_failure(err: &RpcError, grape: &str, name: &str, timeout: Duration) -> Failure {
    match err {
        RpcError::Lookup(link) => link_failure(link, grape, Some(name)),
        RpcError::Timeout => Failure::new(
            EXIT_WORKER,
            format!(
                "no answer for '{name}' within {} ms (ERR_TIMEOUT)",
                timeout.as_millis()
            ),
        ),
        RpcError::Remote { message, data } => {
            let data = if data.is_null() {
                String::new()
            } else {
                format!(" (data: {data})")
            };
            Failure::new(
                EXIT_WORKER,
                format!("the worker of '{name}' answered with an error: {message}{data}"),
            )
        }
        RpcError::Request(_) => Failure::new(
            EXIT_WORKER,
            format!("cannot reach the worker of '{name}': {err}"),
        ),
        other => Failure::new(
            EXIT_WORKER,
            format!("the worker of '{name}' failed: {other}"),
        ),
    }
}

fn parse_json(text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("the JSON argument {text:?} is not valid JSON: {e}"),
        )
    })
}

fn link_to(grape: &str) -> Result<Link, Failure> {
    Link::new(LinkConfig::new(grape)).map_err(|e| link_failure(&e, grape, None))
}

/// A JSON value as one line of output: strings without their quotes, the rest as JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How long a closing client waits for its requests: none is in flight when the CLI closes
/// one, so this only bounds the goodbye of its WebSocket connections.
const CLIENT_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends one request with `client`, then closes it (a WebSocket client says a clean goodbye,
/// so the worker sees no reset connection).
async fn request_once(
    client: impl RpcClient,
    name: &str,
    payload: Value,
    timeout: Duration,
) -> Result<Value, RpcError> {
    let answer = client.request(name, payload, timeout).await;
    client.close(CLIENT_CLOSE_GRACE).await;
    answer
}

/// Sends `payload` to every worker of `name` with `client`, then closes it.
async fn map_once(
    client: impl RpcClient,
    name: &str,
    payload: Value,
    timeout: Duration,
) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
    let answers = client.map(name, payload, timeout).await;
    client.close(CLIENT_CLOSE_GRACE).await;
    answers
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let grape = cli.grape.trim_end_matches('/').to_string();
    match cli.command {
        Command::Demo { keep_running } => demo(keep_running).await,
        Command::Lookup { name, json } => {
            let link = link_to(&grape)?;
            let peers = link
                .lookup(&name)
                .await
                .map_err(|e| link_failure(&e, &grape, Some(&name)))?;
            if json {
                println!("{}", Value::from(peers));
            } else {
                for peer in peers {
                    println!("{peer}");
                }
            }
            Ok(())
        }
        Command::Announce { name, port } => {
            let link = link_to(&grape)?;
            link.announce(&name, port)
                .await
                .map_err(|e| link_failure(&e, &grape, Some(&name)))?;
            println!("announced '{name}' on port {port} through {grape}");
            Ok(())
        }
        Command::Request {
            name,
            json,
            transport,
            timeout,
        } => {
            let payload = parse_json(&json)?;
            let link = link_to(&grape)?;
            let timeout = Duration::from_millis(timeout);
            let answer = match transport {
                Transport::Ws => {
                    request_once(ws::PeerRpcClient::new(link), &name, payload, timeout).await
                }
                Transport::Http => {
                    request_once(http::PeerRpcClient::new(link), &name, payload, timeout).await
                }
            };
            let answer = answer.map_err(|e| rpc_failure(&e, &grape, &name, timeout))?;
            println!("{answer}");
            Ok(())
        }
        Command::Map {
            name,
            json,
            transport,
            timeout,
        } => {
            let payload = parse_json(&json)?;
            let link = link_to(&grape)?;
            let timeout = Duration::from_millis(timeout);
            let answers = match transport {
                Transport::Ws => {
                    map_once(ws::PeerRpcClient::new(link), &name, payload, timeout).await
                }
                Transport::Http => {
                    map_once(http::PeerRpcClient::new(link), &name, payload, timeout).await
                }
            };
            let answers = answers.map_err(|e| rpc_failure(&e, &grape, &name, timeout))?;
            let total = answers.len();
            let mut failed = 0;
            for answer in answers {
                match answer {
                    Ok(value) => println!("{value}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!(
                            "grenache: {}",
                            rpc_failure(&e, &grape, &name, timeout).message
                        );
                    }
                }
            }
            if failed > 0 {
                return Err(Failure::new(
                    EXIT_WORKER,
                    format!("{failed} of {total} workers of '{name}' failed"),
                ));
            }
            Ok(())
        }
        Command::Watch {
            name,
            interval,
            stop_after,
        } => {
            watch(
                &grape,
                &name,
                Duration::from_millis(interval),
                stop_after.map(Duration::from_secs),
            )
            .await
        }
        Command::Status { json } => status(&grape, json).await,
        Command::Put { value } => {
            let link = link_to(&grape)?;
            let hash = link
                .put(&serde_json::json!({ "v": value }))
                .await
                .map_err(|e| link_failure(&e, &grape, None))?;
            println!("{hash}");
            Ok(())
        }
        Command::Get { hash, json } => {
            if hash.len() != 40 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Failure::new(
                    EXIT_USAGE,
                    format!("HASH must be 40 hexadecimal digits, not {hash:?}"),
                ));
            }
            let link = link_to(&grape)?;
            let item = link
                .get(&hash.to_ascii_lowercase())
                .await
                .map_err(|e| link_failure(&e, &grape, None))?;
            match item {
                None => Err(Failure::new(
                    EXIT_NOT_FOUND,
                    format!("nothing is stored under {hash} (as far as {grape} can find)"),
                )),
                Some(item) if json => {
                    println!("{item}");
                    Ok(())
                }
                Some(item) => {
                    println!("{}", show(item.get("v").unwrap_or(&Value::Null)));
                    Ok(())
                }
            }
        }
    }
}

/// `grenache watch`: polls the lookup of `name` every `interval` and prints the workers that
/// appear and disappear, until Ctrl-C (or `stop_after`). A grape that cannot be reached is
/// reported once on stderr and polled on: a deploy often restarts grapes too.
async fn watch(
    grape: &str,
    name: &str,
    interval: Duration,
    stop_after: Option<Duration>,
) -> Result<(), Failure> {
    let mut config = LinkConfig::new(grape);
    // Every poll asks the grape: a cached answer would hide joins and leaves.
    config.lookup_cache_max_age = Duration::ZERO;
    let link = Link::new(config).map_err(|e| link_failure(&e, grape, None))?;
    eprintln!(
        "watching '{name}' through {grape} every {} ms (Ctrl-C to stop)",
        interval.as_millis()
    );
    let stop = async {
        match stop_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    let mut stop = std::pin::pin!(stop);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut ticks = tokio::time::interval(interval);
    // After a slow lookup, wait a whole interval again rather than polling in a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut failing: Option<String> = None;
    loop {
        let polled = tokio::select! {
            signal = &mut ctrl_c => {
                signal.map_err(|e| {
                    Failure::new(EXIT_FAILED, format!("cannot wait for Ctrl-C: {e}"))
                })?;
                break;
            }
            () = &mut stop => break,
            polled = async {
                ticks.tick().await;
                link.lookup(name).await
            } => polled,
        };
        let current: BTreeSet<String> = match polled {
            Ok(peers) => peers.into_iter().collect(),
            Err(LinkError::LookupEmpty) => BTreeSet::new(),
            Err(e) => {
                let failure = link_failure(&e, grape, Some(name)).message;
                if failing.as_ref() != Some(&failure) {
                    eprintln!("grenache: {failure}; trying again");
                }
                failing = Some(failure);
                continue;
            }
        };
        if failing.take().is_some() {
            eprintln!("grenache: the grape at {grape} answers again");
        }
        let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let left = known.difference(&current).map(|peer| ("leave", peer));
        let joined = current.difference(&known).map(|peer| ("join", peer));
        let mut out = std::io::stdout().lock();
        for (event, peer) in left.chain(joined) {
            // Nobody reads any more (a closed pipe): nothing left to do.
            if writeln!(out, "{stamp} {event} {peer}").is_err() {
                return Ok(());
            }
        }
        drop(out);
        known = current;
    }
    eprintln!("stopped watching '{name}'");
    Ok(())
}

/// `GET /status.json` of the grape at `grape` (an `http://host:port` URL), as JSON.
async fn fetch_status(grape: &str) -> Result<Value, Failure> {
    use http_body_util::{BodyExt, Empty, Limited};
    let url = format!("{grape}/status.json");
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| Failure::new(EXIT_USAGE, format!("bad --grape URL {grape:?}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("bad --grape URL {grape:?}: the grape API is http://HOST:PORT"),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| Failure::new(EXIT_USAGE, format!("bad --grape URL {grape:?}: no host")))?
        .clone();
    let unreachable = |reason: String| {
        Failure::new(
            EXIT_UNREACHABLE,
            format!("cannot reach the grape at {grape}: {reason}"),
        )
    };
    let exchange = async {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => e.to_string(),
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::get(uri.path())
            .header(hyper::header::HOST, authority.as_str())
            .body(Empty::<hyper::body::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        // The document of a grape with a few thousand names is well below this.
        let body = Limited::new(response.into_body(), 64 << 20)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(STATUS_TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", STATUS_TIMEOUT.as_secs())))?
        .map_err(unreachable)?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Err(Failure::new(
            EXIT_FAILED,
            format!(
                "the grape at {grape} has no /status.json (HTTP 404): a Node grape, or a \
                 grenache-rs grape older than the operator endpoints"
            ),
        ));
    }
    if !status.is_success() {
        return Err(Failure::new(
            EXIT_FAILED,
            format!("the grape at {grape} refused GET /status.json (HTTP {status})"),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Failure::new(
            EXIT_FAILED,
            format!("the grape at {grape} sent a /status.json that is not JSON: {e}"),
        )
    })
}

/// Left-aligned columns, two spaces apart, under their headers.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut text = line(&mut headers.iter().copied());
    for row in rows {
        text += &line(&mut row.iter().map(String::as_str));
    }
    text
}

/// A field of a JSON document as text: strings bare, absent fields as `-`.
fn field(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `/status.json` (docs/protocol.md, the grape's operator endpoints) as text for a terminal.
/// Fields the grape does not send show as `-`, so a newer or older grape still prints.
fn render_status(status: &Value) -> String {
    let uptime = status
        .get("uptime_seconds")
        .and_then(Value::as_u64)
        .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
        .unwrap_or_else(|| "-".to_string());
    let health = match status.get("bootstrapped").and_then(Value::as_bool) {
        Some(true) => "ready (bootstrapped)",
        Some(false) => "NOT READY (not bootstrapped: no other DHT node answers)",
        None => "-",
    };
    let mut text = format!(
        "grape {} (version {}), up {uptime}, DHT on UDP port {}\n\
         health:   {health}\n\
         contacts: {} ({} live)\n\
         stored:   {} names, {} workers, {} items\n\
         API:      {} open connections\n",
        field(status, "/id"),
        field(status, "/version"),
        field(status, "/dht_port"),
        field(status, "/contacts/total"),
        field(status, "/contacts/live"),
        field(status, "/stored/names"),
        field(status, "/stored/peers"),
        field(status, "/stored/items"),
        field(status, "/api/open_connections"),
    );
    let empty = Vec::new();
    let list = |pointer: &str| {
        status
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or(&empty)
    };
    let mut names = Vec::new();
    for stored in list("/stored/listed") {
        let name = field(stored, "/name");
        for peer in stored
            .get("peers")
            .and_then(Value::as_array)
            .unwrap_or(&empty)
        {
            let ttl = peer.get("ttl_ms").and_then(Value::as_u64).map_or_else(
                || "never expires".to_string(),
                |ms| format!("{} s", ms / 1000),
            );
            names.push(vec![name.clone(), field(peer, "/addr"), ttl]);
        }
    }
    text += "\n";
    if names.is_empty() {
        text += "no names stored\n";
    } else {
        text += &table(&["NAME", "WORKER", "EXPIRES IN"], &names);
    }
    let contacts: Vec<Vec<String>> = list("/contacts/list")
        .iter()
        .map(|c| {
            let live = match c.get("live").and_then(Value::as_bool) {
                Some(true) => "live",
                Some(false) => "unverified",
                None => "-",
            };
            let seen = c
                .get("seen_ago_ms")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_string(), |ms| format!("{} s ago", ms / 1000));
            vec![
                field(c, "/addr"),
                field(c, "/bucket"),
                live.to_string(),
                seen,
            ]
        })
        .collect();
    text += "\n";
    if contacts.is_empty() {
        text += "no contacts\n";
    } else {
        text += &table(&["CONTACT", "BUCKET", "STATE", "LAST SEEN"], &contacts);
    }
    text
}

/// `grenache status`.
async fn status(grape: &str, json: bool) -> Result<(), Failure> {
    let document = fetch_status(grape).await?;
    let text = if json {
        format!("{document}\n")
    } else {
        render_status(&document)
    };
    // A closed stdout (`grenache status | head -1`) is not a failure.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// fib(0) = fib(1) = 1 as in the tutorial; `None` past u64.
fn fibonacci(n: u64) -> Option<u64> {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..n {
        (a, b) = (b, a.checked_add(b)?);
    }
    Some(b)
}

/// A grape of the demo: API on 127.0.0.1, both ports free ones picked by the system.
async fn demo_grape(which: u8, bootstrap_port: Option<u16>) -> Result<Grape, Failure> {
    let mut config = GrapeConfig::new(0, 0);
    config.bind = Some(Ipv4Addr::LOCALHOST.to_string());
    config.bootstrap = bootstrap_port
        .map(|port| BootstrapNode {
            host: Ipv4Addr::LOCALHOST.to_string(),
            port,
        })
        .into_iter()
        .collect();
    Grape::start(config)
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot start grape {which}: {e}")))
}

/// Runs `attempt` every 100 ms until it succeeds or `DEMO_STEP_LIMIT` has passed; then fails
/// with `what` and the last error.
async fn within_limit<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    mut attempt: F,
) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + DEMO_STEP_LIMIT;
    let mut last = "no answer".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => last = e.to_string(),
            // Cut short by the deadline: the previous error says more than this one.
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                EXIT_FAILED,
                format!(
                    "{what}: still failing after {} s (last error: {last})",
                    DEMO_STEP_LIMIT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn demo(keep_running: bool) -> Result<(), Failure> {
    println!("Grenache demo: two grapes, a Fibonacci worker and a client, all in this process.");
    let grape1 = demo_grape(1, None).await?;
    println!(
        "1. grape 1 is up: HTTP API {}, DHT on UDP port {}",
        grape1.url(),
        grape1.dht_port()
    );
    let grape2 = demo_grape(2, Some(grape1.dht_port())).await?;
    println!(
        "2. grape 2 is up: HTTP API {}, DHT on UDP port {}, bootstrapped from grape 1",
        grape2.url(),
        grape2.dht_port()
    );

    let worker_link = link_to(&grape1.url())?;
    let worker = ws::PeerRpcServer::builder(worker_link)
        .handler(|req: Request| async move {
            let number = req.payload.get("number").and_then(Value::as_u64);
            match number.and_then(fibonacci) {
                Some(fib) => Ok(Value::from(fib)),
                None => Err(RpcError::new(
                    "ERR_BAD_NUMBER: send {\"number\": n} with 0 <= n <= 92",
                )),
            }
        })
        .build();
    let worker_addr = worker
        .listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| Failure::new(EXIT_FAILED, format!("the worker cannot listen: {e}")))?;
    println!(
        "3. worker '{FIB_SERVICE}' listens on ws://{worker_addr} (WebSocket), answering \
         {{\"number\": n}} with fib(n)"
    );
    within_limit("announcing the worker through grape 1", || {
        worker.announce(FIB_SERVICE)
    })
    .await?;
    println!("   it announced '{FIB_SERVICE}' through grape 1 (the grape stores it in the DHT)");
    if keep_running {
        // Grapes forget announces after 2 minutes: keep announcing while the demo runs.
        worker.start_announcing(FIB_SERVICE);
    }

    let mut client_config = LinkConfig::new(grape2.url());
    client_config.lookup_cache_max_age = Duration::ZERO;
    let client_link =
        Link::new(client_config).map_err(|e| link_failure(&e, &grape2.url(), None))?;
    let wanted = worker_addr.port();
    let peers = within_limit("looking the worker up through grape 2", || async {
        let peers = client_link.lookup(FIB_SERVICE).await?;
        if peers
            .iter()
            .any(|p| p.parse::<SocketAddr>().is_ok_and(|a| a.port() == wanted))
        {
            Ok(peers)
        } else {
            Err(LinkError::Grape(format!(
                "the worker is not among {peers:?}"
            )))
        }
    })
    .await?;
    println!(
        "4. client: looking '{FIB_SERVICE}' up through grape 2 gives {}",
        Value::from(peers)
    );

    let client = ws::PeerRpcClient::new(client_link);
    for n in [1u64, 5, 10, 20] {
        let answer = client
            .request(
                FIB_SERVICE,
                serde_json::json!({ "number": n }),
                DEMO_STEP_LIMIT,
            )
            .await
            .map_err(|e| rpc_failure(&e, &grape2.url(), FIB_SERVICE, DEMO_STEP_LIMIT))?;
        println!(
            "   client sends {{\"number\": {n}}}, the worker answers {answer}: fib({n}) = {answer}"
        );
    }

    if keep_running {
        let g1 = grape1.url();
        let g2 = grape2.url();
        println!();
        println!("The network stays up until Ctrl-C:");
        println!("  grape 1: {g1} (DHT UDP port {})", grape1.dht_port());
        println!("  grape 2: {g2} (DHT UDP port {})", grape2.dht_port());
        println!("  worker:  '{FIB_SERVICE}' at {worker_addr} (WebSocket), announced every ~20 s");
        println!("Try, from another terminal:");
        println!("  grenache --grape {g2} request {FIB_SERVICE} '{{\"number\": 30}}'");
        println!("  grenache --grape {g1} lookup {FIB_SERVICE}");
        println!("  curl -s -X POST -d '{{\"data\":\"{FIB_SERVICE}\"}}' {g2}/lookup");
        println!(
            "  GRAPE={g2} node tests/interop/fib_client.js   (Node: npm ci --prefix tests/interop)"
        );
        println!("ready");
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| Failure::new(EXIT_FAILED, format!("cannot wait for Ctrl-C: {e}")))?;
        // From here on stdout may be gone (a closed terminal or pipe): never panic on it.
        let _ = writeln!(std::io::stdout(), "Ctrl-C: stopping");
    }

    // Nothing is in flight now: both close at once, the client's connection with a clean
    // goodbye before the worker goes.
    client.close(CLIENT_CLOSE_GRACE).await;
    worker.close(CLIENT_CLOSE_GRACE).await;
    // Bounded: each stop waits at most the API's 5 s grace, and nothing is in flight now.
    let stopped = async {
        grape2.stop().await;
        grape1.stop().await;
    };
    if tokio::time::timeout(DEMO_STEP_LIMIT, stopped)
        .await
        .is_err()
    {
        eprintln!("grenache: the grapes took too long to stop; exiting anyway");
    }
    let _ = writeln!(
        std::io::stdout(),
        "Done: the worker answered every request."
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("grenache: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (pooled connections, announcers) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("grenache: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
