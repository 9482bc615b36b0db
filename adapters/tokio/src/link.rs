//! The Link: a client of a grape's HTTP API, as `grenache-nodejs-link` 1.0.2.
//!
//! Every call is `POST {grape}/{lookup|announce|put|get}` with the body
//! `{"rid":"<uuid v4>","data":<payload>}` and `content-type: application/json`
//! (docs/protocol.md §7.1). Lookups are cached (LRU, 2500 entries, 10 s), concurrent lookups of
//! one name share a single HTTP request, and lookups and announces are tried 3 times.
//!
//! Error strings are the ones Node prints (docs/protocol.md §7): `ERR_GRAPE_LOOKUP_EMPTY`,
//! `network timeout at: <url>`, `request to <url> failed, reason: <reason>`, or the body of a
//! non-2xx answer (e.g. `ERR_GRAPE_PAYLOAD_INVALID`, code 500).
//!
//! Deviations from Node, each on purpose:
//! * empty lookups are not cached by default (Node caches them for 10 s, which hides a
//!   service that comes up in that window); set
//!   [`LinkConfig::lookup_cache_negative_max_age`] to 10 s for Node's behaviour;
//! * a grape's "200 + JSON error string" answer to `announce`, `put` or `get` is an error
//!   ([`LinkError::Grape`]) instead of a successful result;
//! * a trailing `/` on the grape URL is ignored (Node would request `//lookup`);
//! * the default re-announce interval is 20 s, not 120 s (see [`DEFAULT_ANNOUNCE_INTERVAL`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Uri;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::http_client::{HttpClient, HttpFailure};

use crate::{js, lock, new_rid};
/// The ed25519 key [`Link::put_mutable`] signs with (ed25519-dalek's, through grenache-core),
/// re-exported so that callers need no other crate to name it.
pub use grenache_core::dht::bep44::SigningKey;

/// Default gap between two announces of [`Link::start_announcing`]; each actual gap is
/// uniform in [0.5, 1.5] × the interval (10–30 s), as Node's jitter.
///
/// Why 20 s and not Node's 120 s: a grape keeps an announced peer for 0.67–1.33 × its
/// `dht_peer_maxAge` (programmatic default 120 s, so as little as 80 s) and its lookup cache
/// for half of that (40–80 s). Node's default gaps of 60–180 s exceed the 80 s lower bound,
/// so services intermittently vanish (docs/protocol.md §13.18). With 20 s the longest gap, 30 s, is
/// below even the 40 s lookup-cache bound, so an announced service never disappears while it
/// is alive, and the load on the grape stays one small POST per service per 20 s.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(20);
/// The first wait before a failed announce is tried again ([`Link::start_announcing`]).
pub const ANNOUNCE_RETRY_MIN: Duration = Duration::from_secs(1);

/// Settings of a [`Link`]; the defaults are Node's where Node has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Base URL of the grape's HTTP API, e.g. `http://127.0.0.1:30001` (plain HTTP only).
    pub grape: String,
    /// Timeout of one HTTP attempt (Node `requestTimeout`, 2500 ms).
    pub request_timeout: Duration,
    /// How long a non-empty lookup result is served from the cache (Node `lruMaxAgeLookup`,
    /// 10 s).
    pub lookup_cache_max_age: Duration,
    /// How long an empty lookup result is cached. Node: the same 10 s as non-empty ones;
    /// here 0 (not cached) by default, so a service is found as soon as it has announced.
    pub lookup_cache_negative_max_age: Duration,
    /// Maximum number of names in the lookup cache (Node `lruMaxSizeLookup`, 2500); the
    /// least recently used entry goes first.
    pub lookup_cache_size: usize,
    /// Total attempts (not extra ones) for `lookup` and `announce` (Node `retry: 3`); `put`
    /// and `get` make one attempt, as in Node. 0 counts as 1.
    pub retries: u32,
    /// Default interval of [`Link::start_announcing`] ([`DEFAULT_ANNOUNCE_INTERVAL`]).
    pub announce_interval: Duration,
    /// Largest grape answer read back, in bytes (a lookup holds at most 100 `ip:port`
    /// strings and a stored value at most 1000 bytes, so 1 MiB is far above any real one).
    pub max_response_size: usize,
}

impl LinkConfig {
    /// The default settings for the grape at `grape` (e.g. `http://127.0.0.1:30001`).
    pub fn new(grape: impl Into<String>) -> Self {
        LinkConfig {
            grape: grape.into(),
            request_timeout: Duration::from_millis(2500),
            lookup_cache_max_age: Duration::from_secs(10),
            lookup_cache_negative_max_age: Duration::ZERO,
            lookup_cache_size: 2500,
            retries: 3,
            announce_interval: DEFAULT_ANNOUNCE_INTERVAL,
            max_response_size: 1 << 20,
        }
    }
}

impl Default for LinkConfig {
    /// The settings for the tutorial's grape, `http://127.0.0.1:30001`.
    fn default() -> Self {
        LinkConfig::new("http://127.0.0.1:30001")
    }
}

/// What can go wrong talking to a grape. `Display` gives the exact Node error message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The lookup found no peer, or the grape answered something that is not a non-empty
    /// array (Node `ERR_GRAPE_LOOKUP_EMPTY`).
    LookupEmpty,
    /// An attempt took longer than `request_timeout` (node-fetch `network timeout at: <url>`).
    Timeout {
        /// The URL requested.
        url: String,
    },
    /// Connecting, sending or reading failed
    /// (node-fetch `request to <url> failed, reason: <reason>`).
    Request {
        /// The URL requested.
        url: String,
        /// Why, e.g. `connect ECONNREFUSED 127.0.0.1:30001`.
        reason: String,
    },
    /// The grape answered a non-2xx status; the message is the body, as in Node
    /// (e.g. `ERR_GRAPE_PAYLOAD_INVALID` with code 500).
    Status {
        /// The HTTP status code (Node `err.code`).
        code: u16,
        /// The response body (parsed as a JSON string when it is one).
        message: String,
    },
    /// The grape answered 200 with an error string (e.g. `ERR_GRAPE_SERVICE_PORT`) or with
    /// a body of an unexpected shape; the message is that body.
    Grape(String),
    /// The answer was larger than `max_response_size`
    /// (node-fetch `content size at <url> over limit: <limit>`).
    TooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The configuration is unusable (e.g. the grape URL is not `http://host:port`).
    InvalidConfig(String),
    /// The lookup was abandoned because the Link or its runtime is shutting down.
    Stopped,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::LookupEmpty => f.write_str("ERR_GRAPE_LOOKUP_EMPTY"),
            LinkError::Timeout { url } => write!(f, "network timeout at: {url}"),
            LinkError::Request { url, reason } => {
                write!(f, "request to {url} failed, reason: {reason}")
            }
            LinkError::Status { message, .. } | LinkError::Grape(message) => f.write_str(message),
            LinkError::TooLarge { url, limit } => {
                write!(f, "content size at {url} over limit: {limit}")
            }
            LinkError::InvalidConfig(why) => write!(f, "ERR_LINK_CONFIG: {why}"),
            LinkError::Stopped => f.write_str("ERR_LINK_STOPPED"),
        }
    }
}

impl std::error::Error for LinkError {}

/// A client of one grape. Cheap to clone: clones share the cache, the connection pool and
/// the announcers. Announcers stop when the last clone is dropped or on [`Link::stop`].
#[derive(Clone, Debug)]
pub struct Link {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: Api,
    config: LinkConfig,
    state: Arc<Mutex<LookupState>>,
    announcers: Mutex<HashMap<(u16, String), AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, task) in lock(&self.announcers).drain() {
            task.abort();
        }
    }
}

/// The HTTP side of a Link, cloned into background tasks (lookups, announcers) so that they
/// do not keep the whole Link alive.
#[derive(Clone, Debug)]
struct Api {
    http: HttpClient,
    base: String,
    timeout: Duration,
    max_response: usize,
}

type Waiter = oneshot::Sender<Result<Vec<String>, LinkError>>;

#[derive(Debug)]
struct LookupState {
    cache: LookupCache,
    /// Names being looked up right now, with the callers waiting for the answer.
    inflight: HashMap<String, Vec<Waiter>>,
}

impl Link {
    /// A Link to `config.grape`. Fails if the URL is not `http://host[:port][/path]`.
    /// Needs no runtime to build; calls need a tokio runtime.
    pub fn new(config: LinkConfig) -> Result<Link, LinkError> {
        let base = config.grape.trim_end_matches('/').to_string();
        let probe: Uri = format!("{base}/lookup")
            .parse()
            .map_err(|e| LinkError::InvalidConfig(format!("grape URL {:?}: {e}", config.grape)))?;
        if probe.scheme_str() != Some("http") || probe.authority().is_none() {
            return Err(LinkError::InvalidConfig(format!(
                "grape URL {:?} is not http://host:port",
                config.grape
            )));
        }
        let api = Api {
            // Below the 5 s after which a Node grape closes idle keep-alive sockets.
            http: HttpClient::new(Duration::from_secs(4)),
            base,
            timeout: config.request_timeout,
            max_response: config.max_response_size,
        };
        let state = LookupState {
            cache: LookupCache::new(config.lookup_cache_size),
            inflight: HashMap::new(),
        };
        Ok(Link {
            inner: Arc::new(Inner {
                api,
                config,
                state: Arc::new(Mutex::new(state)),
                announcers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings this Link was built with.
    pub fn config(&self) -> &LinkConfig {
        &self.inner.config
    }

    /// The `ip:port` strings of the peers announced under `name`, in the grape's (random)
    /// order. Served from the cache when fresh; concurrent lookups of the same name share one
    /// request; up to `retries` attempts. No peer gives [`LinkError::LookupEmpty`].
    pub async fn lookup(&self, name: &str) -> Result<Vec<String>, LinkError> {
        let config = &self.inner.config;
        let receiver = {
            let mut state = lock(&self.inner.state);
            let now = Instant::now();
            if let Some(peers) = state.cache.get(name, now, config) {
                return if peers.is_empty() {
                    Err(LinkError::LookupEmpty)
                } else {
                    Ok(peers)
                };
            }
            let (sender, receiver) = oneshot::channel();
            if let Some(waiters) = state.inflight.get_mut(name) {
                waiters.push(sender);
            } else {
                state.inflight.insert(name.to_string(), vec![sender]);
                self.spawn_lookup(name.to_string());
            }
            receiver
        };
        receiver.await.unwrap_or(Err(LinkError::Stopped))
    }

    /// Drops the cached lookup result of `name`, so that the next [`Link::lookup`] asks the
    /// grape again (used by subscribers re-looking up a publisher that went away).
    pub fn forget(&self, name: &str) {
        lock(&self.inner.state).cache.remove(name);
    }

    /// Runs the HTTP lookup of `name` in its own task, so that it completes (and answers every
    /// waiter) even if the caller that started it is cancelled.
    fn spawn_lookup(&self, name: String) {
        let api = self.inner.api.clone();
        let attempts = self.inner.config.retries;
        let config = self.inner.config.clone();
        let finisher = LookupFinisher {
            state: Arc::clone(&self.inner.state),
            name,
            done: false,
        };
        tokio::spawn(async move {
            let data = Value::String(finisher.name.clone());
            let result = api
                .call("lookup", &data, attempts)
                .await
                .map(|v| peers_of(&v));
            finisher.finish(result, &config);
        });
    }

    /// One announce of `name` at `port` (`data: [name, port]`), with up to `retries` attempts.
    pub async fn announce(&self, name: &str, port: u16) -> Result<(), LinkError> {
        self.inner
            .api
            .announce(name, port, self.inner.config.retries)
            .await
    }

    /// Announces `name` at `port` now and then again and again, each gap uniform in
    /// [0.5, 1.5] × `interval` (default [`LinkConfig::announce_interval`]), until
    /// [`Link::stop_announcing`], [`Link::stop`] or the drop of the last clone. A failed
    /// announce is logged and tried again sooner than the interval: after about
    /// [`ANNOUNCE_RETRY_MIN`], twice that after a second failure, and so on up to the interval,
    /// so that a worker started before its grape is visible about a second after the grape
    /// is up (Node waits for the next tick, up to the whole interval). Returns `false` if
    /// `name` at `port` is already being announced or if there is no tokio runtime to run on.
    pub fn start_announcing(&self, name: &str, port: u16, interval: Option<Duration>) -> bool {
        let mut announcers = lock(&self.inner.announcers);
        let key = (port, name.to_string());
        if announcers.contains_key(&key) {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("grenache link: start_announcing({name}) needs a tokio runtime");
            return false;
        };
        let api = self.inner.api.clone();
        let attempts = self.inner.config.retries;
        let interval = interval.unwrap_or(self.inner.config.announce_interval);
        let name = name.to_string();
        let task = runtime.spawn(async move {
            let mut retry = ANNOUNCE_RETRY_MIN;
            loop {
                let gap = match api.announce(&name, port, attempts).await {
                    Ok(()) => {
                        retry = ANNOUNCE_RETRY_MIN;
                        interval
                    }
                    Err(e) => {
                        tracing::warn!(
                            "grenache link: announce of {name} at port {port} failed: {e}"
                        );
                        let gap = retry.min(interval);
                        retry = retry.saturating_mul(2);
                        gap
                    }
                };
                tokio::time::sleep(jittered(gap)).await;
            }
        });
        announcers.insert(key, task.abort_handle());
        true
    }

    /// Stops the announcer of `name` at `port`; `false` if there was none.
    pub fn stop_announcing(&self, name: &str, port: u16) -> bool {
        match lock(&self.inner.announcers).remove(&(port, name.to_string())) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    /// Stops every announcer and empties the lookup cache (Node `link.stop()`).
    pub fn stop(&self) {
        for (_, task) in lock(&self.inner.announcers).drain() {
            task.abort();
        }
        lock(&self.inner.state).cache.clear();
    }

    /// Stores `data` in the DHT (`POST /put`, one attempt) and returns the 40-hex key the
    /// grape computed. For an immutable value `data` is `{"v": …}`; a mutable one carries
    /// the caller's own `k`, `sig`, `seq` and `salt`, passed through as is.
    pub async fn put(&self, data: &Value) -> Result<String, LinkError> {
        match self.inner.api.call("put", data, 1).await? {
            Value::String(hash) if is_hex_hash(&hash) => Ok(hash),
            other => Err(LinkError::Grape(js::string(&other))),
        }
    }

    /// Stores the string `value` as a mutable BEP44 item signed with `key` (`POST /put` with
    /// `{v, k, sig, seq, salt}`, `k` and `sig` in hex): the grapes keep it under
    /// `sha1(k ‖ salt)`, which is returned as 40 hex characters. `seq` must grow with every
    /// update (a grape answers status 302 otherwise; 301 for a `cas` mismatch, not offered
    /// here). Node CLI grapes refuse every mutable item (`"All queries failed"`); Rust grapes
    /// verify and keep them.
    ///
    /// The salt goes through the grape's `str2buf`, which tries `JSON.parse` first
    /// (docs/protocol.md §13.16): a salt that is itself JSON (`"123"`, `"[1]"`) is not taken as
    /// text.
    pub async fn put_mutable(
        &self,
        key: &SigningKey,
        value: &str,
        seq: i64,
        salt: Option<&str>,
    ) -> Result<String, LinkError> {
        // The grape bencodes a JS string as `<utf8 length>:<bytes>`: that is what is signed.
        let mut raw_v = format!("{}:", value.len()).into_bytes();
        raw_v.extend_from_slice(value.as_bytes());
        let sig =
            grenache_core::dht::bep44::sign_mutable(key, salt.map(str::as_bytes), seq, &raw_v)
                .map_err(|_| LinkError::Grape("v must be less than 1000 bytes in put()".into()))?;
        let k = key.verifying_key().to_bytes();
        let mut data = serde_json::json!({
            "v": value,
            "k": hex_of(&k),
            "sig": hex_of(&sig),
            "seq": seq,
        });
        if let (Some(salt), Some(map)) = (salt, data.as_object_mut()) {
            map.insert("salt".into(), Value::String(salt.to_string()));
        }
        self.put(&data).await
    }

    /// Reads the DHT item stored under the 40-hex `hash` (`POST /get`, one attempt):
    /// `Some({"id":…,"token":…,"v":…, …})` when found, `None` when the grape answers the
    /// empty body that means "not found".
    pub async fn get(&self, hash: &str) -> Result<Option<Value>, LinkError> {
        let data = Value::String(hash.to_string());
        get_answer(self.inner.api.call("get", &data, 1).await?)
    }

    /// Reads the mutable DHT item stored under `hash` with `salt` (data `{hash, salt}`).
    pub async fn get_salted(&self, hash: &str, salt: &str) -> Result<Option<Value>, LinkError> {
        let data = serde_json::json!({ "hash": hash, "salt": salt });
        get_answer(self.inner.api.call("get", &data, 1).await?)
    }
}

impl Api {
    async fn announce(&self, name: &str, port: u16, attempts: u32) -> Result<(), LinkError> {
        let data = serde_json::json!([name, port]);
        match self.call("announce", &data, attempts).await? {
            Value::String(error) => Err(LinkError::Grape(error)),
            _ => Ok(()),
        }
    }

    /// `POST {base}/{kind}` with `{"rid":…,"data":data}`, up to `attempts` times (every error
    /// is retried at once, as `async.retry`), each attempt bounded by the request timeout.
    async fn call(&self, kind: &str, data: &Value, attempts: u32) -> Result<Value, LinkError> {
        let mut last = LinkError::Stopped;
        for _ in 0..attempts.max(1) {
            match self.attempt(kind, data).await {
                Ok(value) => return Ok(value),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn attempt(&self, kind: &str, data: &Value) -> Result<Value, LinkError> {
        let url = format!("{}/{kind}", self.base);
        let uri: Uri = url
            .parse()
            .map_err(|e| LinkError::InvalidConfig(format!("{url}: {e}")))?;
        // Built by hand so the keys come in Node's order, rid first.
        let body = format!("{{\"rid\":\"{}\",\"data\":{data}}}", new_rid());
        let headers = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let posted = self
            .http
            .post(&uri, &headers, body.as_bytes(), self.max_response);
        let (status, bytes) = match tokio::time::timeout(self.timeout, posted).await {
            Err(_) => return Err(LinkError::Timeout { url }),
            Ok(Err(HttpFailure::Transport(reason))) => {
                return Err(LinkError::Request { url, reason })
            }
            Ok(Err(HttpFailure::TooLarge)) => {
                return Err(LinkError::TooLarge {
                    url,
                    limit: self.max_response,
                })
            }
            Ok(Ok(answer)) => answer,
        };
        // As Node: JSON if it parses, else the raw text ('' for an empty body).
        let value = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            Ok(value)
        } else {
            Err(LinkError::Status {
                code: status.as_u16(),
                message: js::string(&value),
            })
        }
    }
}

/// Completes an in-flight lookup: caches the answer and wakes every waiter. If the task is
/// dropped before `finish` (runtime shutdown), `Drop` still removes the in-flight entry so
/// that waiters get [`LinkError::Stopped`] and later lookups start afresh.
struct LookupFinisher {
    state: Arc<Mutex<LookupState>>,
    name: String,
    /// Set once `finish` has removed the in-flight entry: from then on that name may belong
    /// to a newer lookup, which `Drop` must leave alone.
    done: bool,
}

impl LookupFinisher {
    fn finish(mut self, result: Result<Vec<String>, LinkError>, config: &LinkConfig) {
        self.done = true;
        let waiters = {
            let mut state = lock(&self.state);
            if let Ok(peers) = &result {
                state
                    .cache
                    .insert(&self.name, peers.clone(), Instant::now(), config);
            }
            state.inflight.remove(&self.name).unwrap_or_default()
        };
        let result = result.and_then(|peers| {
            if peers.is_empty() {
                Err(LinkError::LookupEmpty)
            } else {
                Ok(peers)
            }
        });
        for waiter in waiters {
            // A waiter that gave up has dropped its receiver: nothing to do.
            let _ = waiter.send(result.clone());
        }
    }
}

impl Drop for LookupFinisher {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.state).inflight.remove(&self.name);
        }
    }
}

/// The peers in a lookup answer: the strings of a JSON array; anything else is no peer.
fn peers_of(answer: &Value) -> Vec<String> {
    match answer {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn get_answer(answer: Value) -> Result<Option<Value>, LinkError> {
    match answer {
        Value::Object(_) => Ok(Some(answer)),
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        other => Err(LinkError::Grape(js::string(&other))),
    }
}

fn is_hex_hash(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A gap uniform in [0.5, 1.5] × `interval`, at millisecond resolution.
fn jittered(interval: Duration) -> Duration {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX / 2);
    Duration::from_millis((ms / 2).saturating_add(rand::random_range(0..=ms)))
}

/// The lookup cache: at most `capacity` names, least recently used evicted first, entries
/// expiring `lookup_cache_max_age` (or `lookup_cache_negative_max_age` when empty) after
/// they were stored.
#[derive(Debug)]
struct LookupCache {
    entries: HashMap<String, Cached>,
    capacity: usize,
    /// Logical clock for recency: bumped on every hit and insert.
    clock: u64,
}

#[derive(Debug)]
struct Cached {
    stored: Instant,
    used: u64,
    peers: Vec<String>,
}

impl LookupCache {
    fn new(capacity: usize) -> Self {
        LookupCache {
            entries: HashMap::new(),
            capacity,
            clock: 0,
        }
    }

    fn max_age(peers: &[String], config: &LinkConfig) -> Duration {
        if peers.is_empty() {
            config.lookup_cache_negative_max_age
        } else {
            config.lookup_cache_max_age
        }
    }

    fn get(&mut self, name: &str, now: Instant, config: &LinkConfig) -> Option<Vec<String>> {
        let entry = self.entries.get_mut(name)?;
        if now.saturating_duration_since(entry.stored) >= Self::max_age(&entry.peers, config) {
            self.entries.remove(name);
            return None;
        }
        self.clock = self.clock.wrapping_add(1);
        entry.used = self.clock;
        Some(entry.peers.clone())
    }

    fn insert(&mut self, name: &str, peers: Vec<String>, now: Instant, config: &LinkConfig) {
        if self.capacity == 0 || Self::max_age(&peers, config).is_zero() {
            return;
        }
        if !self.entries.contains_key(name) && self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.stored) < Self::max_age(&e.peers, config)
            });
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.clock = self.clock.wrapping_add(1);
        self.entries.insert(
            name.to_string(),
            Cached {
                stored: now,
                used: self.clock,
                peers,
            },
        );
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn remove(&mut self, name: &str) {
        self.entries.remove(name);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type Answer = Box<dyn Fn(&str, &str) -> Option<(u16, String)> + Send + Sync>;

    /// A fake grape: records every raw request and answers with `answer(path, body)`
    /// (`None`: never answer). Keep-alive connections are served request after request.
    struct FakeGrape {
        url: String,
        requests: Arc<Mutex<Vec<String>>>,
        hits: Arc<AtomicUsize>,
    }

    impl FakeGrape {
        async fn start(delay: Duration, answer: Answer) -> FakeGrape {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(Mutex::new(Vec::new()));
            let hits = Arc::new(AtomicUsize::new(0));
            let answer = Arc::new(answer);
            let (rq, h) = (Arc::clone(&requests), Arc::clone(&hits));
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let (rq, h, answer) = (Arc::clone(&rq), Arc::clone(&h), Arc::clone(&answer));
                    tokio::spawn(async move {
                        let mut buffer = Vec::new();
                        loop {
                            let Some((raw, path, body)) =
                                read_request(&mut socket, &mut buffer).await
                            else {
                                return;
                            };
                            h.fetch_add(1, Ordering::SeqCst);
                            lock(&rq).push(raw);
                            tokio::time::sleep(delay).await;
                            let Some((status, reply)) = answer(&path, &body) else {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                return;
                            };
                            let head = format!(
                                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                                reply.len()
                            );
                            if socket.write_all(head.as_bytes()).await.is_err()
                                || socket.write_all(reply.as_bytes()).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            });
            FakeGrape {
                url,
                requests,
                hits,
            }
        }

        fn link(&self, tweak: impl FnOnce(&mut LinkConfig)) -> Link {
            let mut config = LinkConfig::new(self.url.clone());
            tweak(&mut config);
            Link::new(config).unwrap()
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn request(&self, i: usize) -> String {
            lock(&self.requests)[i].clone()
        }
    }

    async fn read_request(
        socket: &mut tokio::net::TcpStream,
        buffer: &mut Vec<u8>,
    ) -> Option<(String, String, String)> {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buffer.len() >= end + 4 + length {
                    let raw: Vec<u8> = buffer.drain(..end + 4 + length).collect();
                    let raw = String::from_utf8_lossy(&raw).to_string();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let body = raw[end + 4..].to_string();
                    return Some((raw, path, body));
                }
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn fixed(status: u16, body: &'static str) -> Answer {
        Box::new(move |_, _| Some((status, body.to_string())))
    }

    fn body_of(raw: &str) -> Value {
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        serde_json::from_str(body).unwrap()
    }

    #[tokio::test]
    async fn lookup_sends_node_bytes_and_parses_peers() {
        let grape = FakeGrape::start(
            Duration::ZERO,
            fixed(200, r#"["127.0.0.1:1337","10.0.0.2:1"]"#),
        )
        .await;
        let link = grape.link(|_| {});
        let peers = link.lookup("rpc_test").await.unwrap();
        assert_eq!(peers, vec!["127.0.0.1:1337", "10.0.0.2:1"]);
        let raw = grape.request(0);
        assert!(raw.starts_with("POST /lookup HTTP/1.1\r\n"), "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("\r\ncontent-type: application/json\r\n"),
            "{raw}"
        );
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        // Key order as Node's JSON.stringify: rid first, then data.
        assert!(body.starts_with("{\"rid\":\""), "{body}");
        assert!(body.ends_with("\",\"data\":\"rpc_test\"}"), "{body}");
        let rid = body_of(&raw)["rid"].as_str().unwrap().to_string();
        assert_eq!(uuid::Uuid::parse_str(&rid).unwrap().get_version_num(), 4);
    }

    #[tokio::test]
    async fn announce_put_and_get_bodies() {
        let answer: Answer = Box::new(|path, _| {
            Some(match path {
                "/announce" => (200, "1".to_string()),
                "/put" => (
                    200,
                    "\"6d33adc2b6b2c14c3036feefb7fedbca1a880527\"".to_string(),
                ),
                "/get" => (200, r#"{"id":"ab","token":null,"v":"hello"}"#.to_string()),
                _ => (200, "\"ERR_REQ_NOTFOUND\"".to_string()),
            })
        });
        let grape = FakeGrape::start(Duration::ZERO, answer).await;
        let link = grape.link(|_| {});
        link.announce("svc", 1337).await.unwrap();
        assert_eq!(body_of(&grape.request(0))["data"], json!(["svc", 1337]));
        assert!(grape.request(0).contains(",\"data\":[\"svc\",1337]}"));
        let hash = link.put(&json!({"v": "hello"})).await.unwrap();
        assert_eq!(hash, "6d33adc2b6b2c14c3036feefb7fedbca1a880527");
        assert_eq!(body_of(&grape.request(1))["data"], json!({"v": "hello"}));
        let item = link.get(&hash).await.unwrap().unwrap();
        assert_eq!(item["v"], "hello");
        assert_eq!(body_of(&grape.request(2))["data"], json!(hash));
        link.get_salted(&hash, "s").await.unwrap();
        assert_eq!(
            body_of(&grape.request(3))["data"],
            json!({"hash": hash, "salt": "s"})
        );
    }

    #[tokio::test]
    async fn grape_error_strings_are_errors() {
        let grape =
            FakeGrape::start(Duration::ZERO, fixed(200, "\"ERR_GRAPE_SERVICE_PORT\"")).await;
        let link = grape.link(|_| {});
        let e = link.announce("svc", 1).await.unwrap_err();
        assert_eq!(e, LinkError::Grape("ERR_GRAPE_SERVICE_PORT".into()));
        assert_eq!(
            link.put(&json!({"v": 1})).await.unwrap_err().to_string(),
            "ERR_GRAPE_SERVICE_PORT"
        );
        // A lookup answered with an error string is "empty", as in Node.
        assert_eq!(link.lookup("x").await.unwrap_err(), LinkError::LookupEmpty);
    }

    #[tokio::test]
    async fn get_of_a_missing_item_is_none() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, "")).await;
        let link = grape.link(|_| {});
        assert_eq!(
            link.get("6d33adc2b6b2c14c3036feefb7fedbca1a880527")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn lookups_are_cached_until_max_age() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, r#"["127.0.0.1:1"]"#)).await;
        let link = grape.link(|c| c.lookup_cache_max_age = Duration::from_millis(300));
        link.lookup("a").await.unwrap();
        link.lookup("a").await.unwrap();
        assert_eq!(
            grape.hits(),
            1,
            "the second lookup must come from the cache"
        );
        link.lookup("b").await.unwrap();
        assert_eq!(grape.hits(), 2, "another name is another request");
        tokio::time::sleep(Duration::from_millis(350)).await;
        link.lookup("a").await.unwrap();
        assert_eq!(grape.hits(), 3, "an expired entry is fetched again");
        link.stop();
        link.lookup("a").await.unwrap();
        assert_eq!(grape.hits(), 4, "stop empties the cache");
    }

    #[tokio::test]
    async fn empty_lookups_are_errors_and_cached_only_when_configured() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, "[]")).await;
        let link = grape.link(|_| {});
        let e = link.lookup("none").await.unwrap_err();
        assert_eq!(e.to_string(), "ERR_GRAPE_LOOKUP_EMPTY");
        link.lookup("none").await.unwrap_err();
        assert_eq!(grape.hits(), 2, "empty answers are not cached by default");

        let node_like = grape.link(|c| c.lookup_cache_negative_max_age = Duration::from_secs(10));
        node_like.lookup("none").await.unwrap_err();
        assert_eq!(
            node_like.lookup("none").await.unwrap_err(),
            LinkError::LookupEmpty
        );
        assert_eq!(
            grape.hits(),
            3,
            "with a negative max age the empty answer is cached"
        );
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_name_share_one_request() {
        let grape =
            FakeGrape::start(Duration::from_millis(200), fixed(200, r#"["127.0.0.1:7"]"#)).await;
        let link = grape.link(|_| {});
        let (a, b, c) = tokio::join!(link.lookup("svc"), link.lookup("svc"), link.lookup("svc"));
        assert_eq!(grape.hits(), 1);
        for result in [a, b, c] {
            assert_eq!(result.unwrap(), vec!["127.0.0.1:7"]);
        }
    }

    #[tokio::test]
    async fn a_cancelled_first_caller_does_not_break_the_others() {
        let grape =
            FakeGrape::start(Duration::from_millis(200), fixed(200, r#"["127.0.0.1:7"]"#)).await;
        let link = grape.link(|_| {});
        let first = tokio::time::timeout(Duration::from_millis(50), link.lookup("svc"));
        let second = link.lookup("svc");
        let (first, second) = tokio::join!(first, second);
        assert!(first.is_err(), "the first caller gave up");
        assert_eq!(second.unwrap(), vec!["127.0.0.1:7"]);
        assert_eq!(grape.hits(), 1);
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_reported_as_node_fetch_does() {
        let grape = FakeGrape::start(Duration::ZERO, Box::new(|_, _| None)).await;
        let link = grape.link(|c| c.request_timeout = Duration::from_millis(200));
        let started = std::time::Instant::now();
        let e = link.lookup("svc").await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            e.to_string(),
            format!("network timeout at: {}/lookup", grape.url)
        );
        assert_eq!(grape.hits(), 3, "three attempts");
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        // put and get make a single attempt.
        link.put(&json!({"v": 1})).await.unwrap_err();
        assert_eq!(grape.hits(), 4);
    }

    #[tokio::test]
    async fn refused_connections_give_node_fetch_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let link = Link::new(LinkConfig::new(format!("http://{addr}/"))).unwrap();
        let e = link.lookup("svc").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("request to http://{addr}/lookup failed, reason: connect ECONNREFUSED {addr}")
        );
    }

    #[tokio::test]
    async fn non_2xx_answers_carry_status_and_body() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(500, "ERR_GRAPE_PAYLOAD_INVALID")).await;
        let link = grape.link(|_| {});
        let e = link.announce("svc", 1).await.unwrap_err();
        assert_eq!(
            e,
            LinkError::Status {
                code: 500,
                message: "ERR_GRAPE_PAYLOAD_INVALID".into()
            }
        );
        assert_eq!(grape.hits(), 3, "announce is retried like lookup");
    }

    #[tokio::test]
    async fn oversized_answers_are_refused() {
        let big: &'static str = Box::leak(format!("[\"{}\"]", "x".repeat(5000)).into_boxed_str());
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, big)).await;
        let link = grape.link(|c| {
            c.max_response_size = 1000;
            c.retries = 1;
        });
        let e = link.lookup("svc").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("content size at {}/lookup over limit: 1000", grape.url)
        );
    }

    #[tokio::test]
    async fn start_announcing_repeats_until_stopped() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, "1")).await;
        let link = grape.link(|_| {});
        assert!(link.start_announcing("svc", 1337, Some(Duration::from_millis(100))));
        assert!(
            !link.start_announcing("svc", 1337, None),
            "already announcing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(grape.hits(), 1, "the first announce is immediate");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let seen = grape.hits();
        // Gaps are 50-150 ms: 4 to 15 announces in 720 ms.
        assert!((4..=15).contains(&seen), "{seen} announces");
        assert!(link.stop_announcing("svc", 1337));
        assert!(!link.stop_announcing("svc", 1337));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(grape.hits(), seen, "no announce after stop_announcing");
        assert_eq!(body_of(&grape.request(0))["data"], json!(["svc", 1337]));
    }

    #[tokio::test]
    async fn a_failed_announce_is_tried_again_before_the_interval() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(500, "ERR_DOWN")).await;
        let link = grape.link(|c| c.retries = 1);
        assert!(link.start_announcing("svc", 1337, Some(Duration::from_secs(20))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(grape.hits(), 1, "the first announce is immediate");
        // The retry comes 0.5-1.5 s later (ANNOUNCE_RETRY_MIN, jittered), not 10-30 s.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(grape.hits(), 2, "one retry after about a second");
        link.stop();
    }

    #[tokio::test]
    async fn dropping_the_link_stops_announcing() {
        let grape = FakeGrape::start(Duration::ZERO, fixed(200, "1")).await;
        let link = grape.link(|_| {});
        assert!(link.start_announcing("svc", 1, Some(Duration::from_millis(50))));
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(link);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = grape.hits();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(grape.hits(), seen);
    }

    #[test]
    fn start_announcing_without_a_runtime_is_refused() {
        let link = Link::new(LinkConfig::default()).unwrap();
        assert!(!link.start_announcing("svc", 1, None));
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_intervals() {
        let interval = Duration::from_secs(20);
        for _ in 0..1000 {
            let gap = jittered(interval);
            assert!(
                gap >= Duration::from_secs(10) && gap <= Duration::from_secs(30),
                "{gap:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
        jittered(Duration::MAX);
    }

    #[test]
    fn invalid_grape_urls_are_rejected() {
        for url in ["", "127.0.0.1:30001", "https://127.0.0.1:1", "http://"] {
            assert!(
                matches!(
                    Link::new(LinkConfig::new(url)),
                    Err(LinkError::InvalidConfig(_))
                ),
                "{url:?}"
            );
        }
    }

    #[test]
    fn the_cache_evicts_the_least_recently_used_name_when_full() {
        let config = LinkConfig {
            lookup_cache_size: 2,
            ..LinkConfig::default()
        };
        let mut cache = LookupCache::new(2);
        let now = Instant::now();
        let peers = vec!["127.0.0.1:1".to_string()];
        cache.insert("a", peers.clone(), now, &config);
        cache.insert("b", peers.clone(), now, &config);
        assert!(cache.get("a", now, &config).is_some()); // a is now more recent than b
        cache.insert("c", peers.clone(), now, &config);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get("b", now, &config).is_none(),
            "b was the least recently used"
        );
        assert!(cache.get("a", now, &config).is_some());
        assert!(cache.get("c", now, &config).is_some());
        // Expired entries go first, whatever their recency.
        let later = now + Duration::from_secs(11);
        cache.insert("d", peers, later, &config);
        assert_eq!(cache.len(), 1);
    }
}
