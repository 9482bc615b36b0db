//! The grape above the DHT: its HTTP API and its configuration.
//!
//! A drop-in for the HTTP API of the Node `grenache-grape` 1.0.0 (docs/protocol.md §3): the same
//! endpoints, bodies, status codes and headers, so grenache-nodejs-link and other clients cannot
//! tell the difference. The DHT itself sits behind the [`GrapeDht`] trait; the API converts every
//! request into a typed call and renders the answer. The grape's own DHT is [`node::Dht`], a
//! `grenache_core` node on a UDP socket; tests put fakes behind the trait.
//!
//! # The API
//!
//! Any method, any path; the body is `{"data": <payload>, "rid": <ignored>}`. The endpoint is
//! chosen like Node does (`'handlePeer' + upperFirst(camelCase('-' + url.substr(1)))`), so
//! `/lookup`, `/Lookup`, `/_lookup`, `/-lookup`, `/lookup_` work and `/LOOKUP`, `/lookUp`,
//! `/lookup?x=1`, `/lookup/`, `/` answer `200 "ERR_REQ_NOTFOUND"`.
//!
//! | path | `data` | success | errors (200 unless noted) |
//! |---|---|---|---|
//! | `/lookup` | service name (non-empty string) | `["ip:port",…]` (≤ 100) | `"ERR_GRAPE_LOOKUP"` |
//! | `/announce` | `[name, port]` (port 0 = the grape's DHT port) | number of nodes that acknowledged | `"ERR_GRAPE_ANNOUNCE"`, `"ERR_GRAPE_SERVICE_PORT"`, `"No nodes to query"`, `"All queries failed"` |
//! | `/unannounce` | `[name, port]` | number of stores the peer was removed from | `"ERR_GRAPE_UNANNOUNCE"`, `"ERR_GRAPE_SERVICE_PORT"`, `"ERR_GRAPE_UNANNOUNCE_FORBIDDEN"`, DHT errors |
//! | `/put` | `{v, k?, sig?, seq?, salt?, cas?}` or a string `v` | `"<40 hex>"` (the target) | bittorrent-dht's validation strings, DHT errors; 301/302 with `"301 CAS mismatch, re-read and try again"` / `"302 sequence number less than current"` |
//! | `/get` | 40-hex target, or `{hash, salt?, cache?}` | the item as JSON (docs/protocol.md §3.9) | empty body = not found; `"ERR_GRAPE_GENERIC"` |
//!
//! Envelope errors, in Node's order: body over the limit → `413 ERR_GRAPE_PAYLOAD_SIZE`
//! (raw text, connection closed); not JSON → `500 ERR_GRAPE_PAYLOAD_INVALID` (raw text); a
//! handler "throwing" → 500 with V8's message as raw text (`null` body → `Cannot read properties
//! of null (reading 'data')`; `/put` without `data` → `… of undefined (reading 'k')`; `/get`
//! without `data` → `… (reading 'salt')`; `/announce` with a name that `Buffer.from` refuses →
//! `The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or
//! an Array-like Object. Received type number (5)`). Response headers are exactly `Date`,
//! `Connection`, `Keep-Alive: timeout=5` (while the connection stays open) and `Content-Length`:
//! no `Content-Type`.
//!
//! `/unannounce` is an extension of this implementation (Node 1.0.0 answers `ERR_REQ_NOTFOUND`;
//! the shape follows the never-released `dev` branch of grenache-grape): `data` is `[name,
//! port]` exactly as for `/announce`, a non-array gives `"ERR_GRAPE_UNANNOUNCE"`. Only the
//! client IP that announced `[name, port]` through this grape (within the peer TTL) may
//! withdraw it; anyone else, or a pair nobody announced here, gets
//! `"ERR_GRAPE_UNANNOUNCE_FORBIDDEN"` ([`ERR_UNANNOUNCE_FORBIDDEN`]) and nothing is sent. See
//! `grape::announcers`.
//!
//! # Reproduced quirks (R) and deliberate fixes (F)
//!
//! * R: request values go through the JavaScript operations Node applies (`crate::js`): property
//!   reads that throw, truthiness, `Number.isInteger`, `Buffer.from` (arrays, `{"type":"Buffer",
//!   "data":[…]}`, array-likes), Node's lenient hex decoding.
//! * R (docs/protocol.md §13.16): `str2buf` tries `JSON.parse` first for `k`, `sig`, `salt` and a
//!   string `/get` target: salt `"\"abc\""` is `abc`, `"[1,2]"` the bytes 1, 2. Keeping it makes a
//!   mutable item's key the one a Node grape computes for the same request.
//! * R: `v` must be shorter than 1000 *UTF-16 units* (or elements, or `length`), not bytes;
//!   non-integer numbers in `v`, `seq`, `cas` are truncated the way bencode 2.0.3 does
//!   (`grape::bencode`), not refused.
//! * R: dict keys of `v` are sorted by UTF-16 code units, `null` list elements and members
//!   dropped (bencode 2.0.3).
//! * F (docs/protocol.md §13.1): the payload limit is always on (8192 by default; Node's CLI has
//!   none).
//! * R (docs/protocol.md §13.12): the lenient path mapping, query strings breaking the routing.
//! * F: a `413` closes the connection (Node stops reading and leaves the connection stuck).
//! * F: an announce port outside 0..=65535 answers `"ERR_GRAPE_SERVICE_PORT"` at once (Node
//!   sends it and times out with `"All queries failed"`).
//! * F: a mutable put whose `sig` is not 64 bytes answers `"opts.sig ed25519 signature must be
//!   64 bytes"` (Node sends it; remotes refuse it).
//! * F: a `/get` target that is not 20 bytes answers "not found" at once (no traversal).
//! * F: `{"length": n}` array-likes past 65536 elements throw V8's `Invalid typed array length`
//!   instead of allocating `n` bytes.
//! * F: a request-level `verify` member (which crashes a Node grape when a mutable reply arrives)
//!   is ignored.
//! * Differences left: `serde_json` refuses numbers beyond f64 (`1e400`), lone surrogate escapes
//!   and nesting deeper than 128, which JSON.parse accepts (→ 500 `ERR_GRAPE_PAYLOAD_INVALID`);
//!   malformed requests get the framing error's status (400, 431, 501, 505) with an empty body and
//!   a closed connection, where Node sends its own texts; `CONNECT` closes the connection (Node: no
//!   `connect` listener, socket destroyed). For a local hit of a non-string `v`, `v` is rendered
//!   from its bencoding (`true` → `"1"`, `1.5` → `"1"`), where Node still holds the JavaScript
//!   value.
//!
//! # Slow and hostile clients
//!
//! * Heads: a connection must deliver each request head within [`ApiConfig::header_timeout`]
//!   (5 s from the connection's start or its previous answer, so also the idle keep-alive
//!   timeout), or it is closed unanswered; heads are capped at 16 KiB (431) and 100 header
//!   fields.
//! * Bodies: never read past [`ApiConfig::max_payload`]; after a grace period of 5 s a body
//!   must have kept an average of 1 KiB/s ([`ApiConfig::body_progress`]), and it must be
//!   complete within [`ApiConfig::body_timeout`] (30 s), or it gets `408` and the connection
//!   is closed. A trickled body is cut off after about 5 s.
//! * Connections: at most [`ApiConfig::max_connections`] (1024) are served at once, at most
//!   [`ApiConfig::max_connections_per_ip`] (256) per client (an IPv6 client counts by its
//!   /64; IPv4 clients of a dual-stack listener by their IPv4 address); one over its client's
//!   share is closed at once. When all 1024 are taken, a newcomer whose client has at least
//!   two connections fewer than the heaviest client takes over an idle connection of that
//!   client (`grape::fair`); otherwise it waits for a free slot (at most 64 wait, each at most
//!   the head timeout; more are closed at once).
//! * [`ApiConfig::allow`] (`--api-allow`): connections from other networks are closed at
//!   accept.
//! * A client that hangs up while the DHT works for it takes its request along: a DHT
//!   command still queued is never started, and a lookup or get nobody waits for any more is
//!   cancelled in the node (`Node::cancel`), freeing its operation slot and its queries.
//!   Announces, unannounces and puts that have started run to their end.
//! * Garbage bytes get a `400` and a closed connection.
//!
//! The connection loop is `grape::conn`, on grenache-core's HTTP/1.1 framing.
//!
//! # Modules, top down
//!
//! Each module uses only modules listed after it (`ci/check-module-cycles.py` keeps it so):
//!
//! * `start`: a whole grape in one call ([`Grape`]): the API listener, the DHT node, the task;
//! * `api`: the listener, the connection caps and graceful shutdown ([`serve_api`]);
//! * `conn`: one connection's HTTP/1.1 loop, on grenache-core's framing;
//! * `status`: the operator endpoints (`GET /metrics`, `/health`, `/status.json`, the status
//!   page at `GET /`);
//! * `handlers`: what each endpoint does with a request body, and the rendering of answers;
//! * `shared`: the state every connection of one server shares;
//! * `coalesce` (lookups of one name share a traversal), `announcers` (who may unannounce
//!   what), `fair` (which idle connection a newcomer displaces), `bencode` (bencode 2.0.3 of
//!   JSON values);
//! * [`node`]: the grape's DHT node on a UDP socket, which implements the seam below;
//! * `dht`: the seam between the API and the DHT: [`GrapeDht`] and the values that cross it;
//! * [`stats`]: what the operator endpoints report (API counters, DHT snapshots);
//! * `config`: the settings ([`GrapeConfig`], [`ApiConfig`]) and their defaults.

mod announcers;
mod api;
mod bencode;
mod coalesce;
mod config;
mod conn;
mod dht;
mod fair;
mod handlers;
pub mod node;
mod shared;
mod start;
pub mod stats;
mod status;

pub use announcers::FORBIDDEN as ERR_UNANNOUNCE_FORBIDDEN;
pub use api::{bind_api, serve_api};
pub use coalesce::MAX_LOOKUP_PEERS;
pub use config::{
    parse_bootstrap, ApiConfig, BootstrapError, BootstrapNode, GrapeConfig, DEFAULT_BODY_PROGRESS,
    DEFAULT_BODY_TIMEOUT, DEFAULT_DHT_CONCURRENCY, DEFAULT_HEADER_TIMEOUT, DEFAULT_LOOKUP_REUSE,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TABLES, DEFAULT_MAX_VALUES, DEFAULT_NODE_LIVENESS, DEFAULT_PEER_MAX_AGE,
    DEFAULT_SHUTDOWN_GRACE,
};
pub use dht::{DhtError, GetQuery, GotItem, GrapeDht, MutablePut, PutItem};
pub use handlers::{endpoint_for, Endpoint};
pub use start::{Grape, StartError};
