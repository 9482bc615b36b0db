//! The operator endpoints of the grape API (docs/protocol.md §14): `GET /metrics` (Prometheus
//! text), `GET /health`, `GET /status.json` and the status page at `GET /`.
//!
//! Only a `GET` (or `HEAD`) of exactly these paths reaches them. Every other request, a
//! `POST /` or `POST /metrics` included, goes to the Node-compatible dispatch unchanged, so
//! Node clients (which always POST) see the same bytes as before.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::{json, Value};

use super::dht::GrapeDht;
use super::handlers::Reply;
use super::shared::Shared;
use super::stats::{ApiStats, DhtStatus, HistogramSnapshot, KrpcMethod, Outcome, Route};

/// The status page: one self-contained file, no external resources.
const STATUS_HTML: &str = include_str!("status.html");
/// The crate version, shown on the status page.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An operator endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Page {
    /// `GET /`: the HTML status page.
    Index,
    /// `GET /metrics`.
    Metrics,
    /// `GET /health`.
    Health,
    /// `GET /status.json`.
    StatusJson,
}

/// The operator endpoint a request reaches, if any: only `GET`/`HEAD` of the exact paths.
pub(super) fn page_for(get_or_head: bool, target: &str) -> Option<Page> {
    if !get_or_head {
        return None;
    }
    match target {
        "/" => Some(Page::Index),
        "/metrics" => Some(Page::Metrics),
        "/health" => Some(Page::Health),
        "/status.json" => Some(Page::StatusJson),
        _ => None,
    }
}

/// Answers an operator endpoint.
pub(super) async fn serve<D: GrapeDht>(shared: &Shared<D>, page: Page) -> Reply {
    let api = &shared.stats;
    api.request(Route::Ops, Outcome::Ok);
    match page {
        Page::Index => Reply::typed(200, "text/html; charset=utf-8", STATUS_HTML.into()),
        Page::Metrics => {
            let dht = shared.dht.status().await;
            match render_metrics(api, dht) {
                Ok(text) => Reply::typed(200, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => Reply::raw(500, ""),
            }
        }
        Page::Health => {
            let dht = shared.dht.status().await.unwrap_or_default();
            let status = if dht.bootstrapped { 200 } else { 503 };
            let body = health_json(api, &dht);
            Reply::typed(status, "application/json", body.to_string())
        }
        Page::StatusJson => {
            let dht = shared.dht.status().await.unwrap_or_default();
            let body = status_json(api, &dht, shared.dht.dht_port());
            Reply::typed(200, "application/json", body.to_string())
        }
    }
}

fn live_contacts(dht: &DhtStatus) -> usize {
    dht.contacts.iter().filter(|c| c.live).count()
}

/// The body of `GET /health`.
fn health_json(api: &ApiStats, dht: &DhtStatus) -> Value {
    json!({
        "bootstrapped": dht.bootstrapped,
        "contacts": dht.contacts.len(),
        "live_contacts": live_contacts(dht),
        "uptime_seconds": api.uptime().as_secs(),
        "names": dht.names,
        "peers": dht.peers,
        "version": VERSION,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The body of `GET /status.json` (its shape is documented in docs/protocol.md §14 and kept
/// stable: `grenache status` reads it).
fn status_json(api: &ApiStats, dht: &DhtStatus, dht_port: u16) -> Value {
    let requests: serde_json::Map<String, Value> = Route::ALL
        .iter()
        .map(|&route| {
            let by_outcome: serde_json::Map<String, Value> = Outcome::ALL
                .iter()
                .map(|&o| (o.name().to_owned(), json!(api.requests(route, o))))
                .collect();
            (route.name().to_owned(), Value::Object(by_outcome))
        })
        .collect();
    json!({
        "version": VERSION,
        "id": hex::encode(dht.id),
        "dht_port": dht_port,
        "uptime_seconds": api.uptime().as_secs(),
        "bootstrapped": dht.bootstrapped,
        "contacts": {
            "total": dht.contacts.len(),
            "live": live_contacts(dht),
            "list": dht.contacts.iter().map(|c| json!({
                "addr": c.addr.to_string(),
                "bucket": c.bucket,
                "live": c.live,
                "seen_ago_ms": millis(c.seen_ago),
            })).collect::<Vec<_>>(),
        },
        "stored": {
            "names": dht.names,
            "peers": dht.peers,
            "items": dht.items,
            "listed": dht.stored.iter().map(|n| json!({
                "name": n.name,
                "peers": n.peers.iter().map(|(addr, left)| json!({
                    "addr": addr.to_string(),
                    "ttl_ms": left.map(millis),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        },
        "recent_lookups": dht.recent_lookups.iter().map(|l| json!({
            "name": l.name,
            "ended_unix_ms": l.ended_unix_ms,
            "took_ms": millis(l.took),
            "peers": l.peers,
            "queries": l.queries,
        })).collect::<Vec<_>>(),
        "traffic": { "dht_packets_per_second": dht.traffic },
        "api": {
            "open_connections": api.open_connections(),
            "requests": requests,
        },
    })
}

/// Everything `/metrics` shows, copied at the scrape.
#[derive(Debug)]
struct Scrape {
    requests: Vec<(Route, Outcome, u64)>,
    open_connections: i64,
    uptime: f64,
    lookup_seconds: HistogramSnapshot,
    /// `None` when the DHT gave no snapshot: its metrics are left out.
    dht: Option<DhtStatus>,
}

/// `GET /metrics`: the Prometheus text exposition format (0.0.4), written by
/// `prometheus-client`.
fn render_metrics(api: &ApiStats, dht: Option<DhtStatus>) -> Result<String, std::fmt::Error> {
    let mut requests = Vec::new();
    for route in Route::ALL {
        for outcome in Outcome::ALL {
            requests.push((route, outcome, api.requests(route, outcome)));
        }
    }
    let scrape = Scrape {
        requests,
        open_connections: api.open_connections(),
        uptime: api.uptime().as_secs_f64(),
        lookup_seconds: api.lookup_seconds(),
        dht,
    };
    let mut registry = Registry::with_prefix("grenache_grape");
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    h: &HistogramSnapshot,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let e = &mut encoder;
        {
            let mut family = e.encode_descriptor(
                "api_requests",
                "HTTP API requests answered, by endpoint and outcome.",
                None,
                MetricType::Counter,
            )?;
            for (route, outcome, value) in &self.requests {
                let labels = [("endpoint", route.name()), ("outcome", outcome.name())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(value, None)?;
            }
        }
        gauge(
            e,
            "api_open_connections",
            "HTTP API connections being served.",
            self.open_connections,
        )?;
        histogram(
            e,
            "lookup_duration",
            "Time to answer a /lookup, from its body read to its answer.",
            Some(&Unit::Seconds),
            &self.lookup_seconds,
        )?;
        e.encode_descriptor(
            "uptime",
            "Time since the grape started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?
        .encode_gauge(&self.uptime)?;
        let Some(dht) = &self.dht else {
            return Ok(());
        };
        let c = &dht.counters;
        gauge(
            e,
            "bootstrapped",
            "1 once the grape is ready (bootstrapped, or alone by design), else 0.",
            i64::from(dht.bootstrapped),
        )?;
        for (name, help, values) in [
            (
                "krpc_queries_received",
                "KRPC queries received, by method.",
                &c.queries_in,
            ),
            (
                "krpc_queries_sent",
                "KRPC queries sent, by method.",
                &c.queries_out,
            ),
        ] {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (method, value) in KrpcMethod::ALL.iter().zip(values.iter()) {
                let labels = [("method", method.name())];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(value, None)?;
            }
        }
        counter(
            e,
            "krpc_errors_received",
            "KRPC error answers received to our queries.",
            None,
            c.errors_in,
        )?;
        counter(
            e,
            "krpc_errors_sent",
            "KRPC error answers sent.",
            None,
            c.errors_out,
        )?;
        counter(
            e,
            "krpc_malformed_received",
            "Datagrams received that were not KRPC messages.",
            None,
            c.malformed_in,
        )?;
        counter(
            e,
            "krpc_rate_limited",
            "KRPC queries dropped unanswered: their source was over its answer budget.",
            None,
            c.rate_limited,
        )?;
        counter(
            e,
            "dht_received_packets",
            "UDP datagrams received.",
            None,
            c.packets_in,
        )?;
        counter(
            e,
            "dht_sent_packets",
            "UDP datagrams sent.",
            None,
            c.packets_out,
        )?;
        counter(
            e,
            "dht_received",
            "UDP payload bytes received.",
            Some(&Unit::Bytes),
            c.bytes_in,
        )?;
        counter(
            e,
            "dht_sent",
            "UDP payload bytes sent.",
            Some(&Unit::Bytes),
            c.bytes_out,
        )?;
        {
            let live = dht.contacts.iter().filter(|c| c.live).count();
            let mut family = e.encode_descriptor(
                "routing_contacts",
                "Routing-table contacts: live (heard from lately) or unverified.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [
                ("live", live),
                ("unverified", dht.contacts.len().saturating_sub(live)),
            ] {
                family
                    .encode_family(&[("state", state)])?
                    .encode_gauge(&to_i64(n))?;
            }
        }
        gauge(
            e,
            "stored_names",
            "Service names in the peer store.",
            to_i64(dht.names),
        )?;
        gauge(
            e,
            "stored_peers",
            "Peer entries in the peer store, all names.",
            to_i64(dht.peers),
        )?;
        gauge(e, "stored_items", "BEP 44 items stored.", to_i64(dht.items))?;
        histogram(
            e,
            "traversal_duration",
            "Time of a lookup's DHT traversal.",
            Some(&Unit::Seconds),
            &dht.traversal_seconds,
        )?;
        histogram(
            e,
            "traversal_queries",
            "KRPC queries sent by one lookup traversal.",
            None,
            &dht.traversal_queries,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_of_the_exact_paths_reaches_the_operator_endpoints() {
        assert_eq!(page_for(true, "/"), Some(Page::Index));
        assert_eq!(page_for(true, "/metrics"), Some(Page::Metrics));
        assert_eq!(page_for(true, "/health"), Some(Page::Health));
        assert_eq!(page_for(true, "/status.json"), Some(Page::StatusJson));
        // A POST stays with the Node dispatch (`ERR_REQ_NOTFOUND` or a handler).
        assert_eq!(page_for(false, "/"), None);
        assert_eq!(page_for(false, "/metrics"), None);
        assert_eq!(page_for(true, "/lookup"), None);
        assert_eq!(page_for(true, "/metrics?x=1"), None);
    }

    #[test]
    fn metrics_follow_prometheus_names() {
        let api = ApiStats::default();
        api.request(Route::Lookup, Outcome::Ok);
        api.lookup_took(Duration::from_millis(3));
        let text = render_metrics(&api, Some(DhtStatus::default())).unwrap_or_default();
        assert!(text
            .contains("grenache_grape_api_requests_total{endpoint=\"lookup\",outcome=\"ok\"} 1\n"));
        assert!(text.contains("grenache_grape_lookup_duration_seconds_count 1\n"));
        assert!(text.contains("grenache_grape_dht_received_bytes_total 0\n"));
    }
}
