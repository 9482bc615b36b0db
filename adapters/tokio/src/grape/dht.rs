//! The seam between the HTTP API and the DHT: the [`GrapeDht`] trait and the values that cross it.
//!
//! The API layer does every conversion that the Node grape does in JavaScript (JSON → bencode,
//! `str2buf`, validation, error strings); the DHT receives typed, already-validated requests and
//! answers with raw DHT data. Nothing here does I/O. The grape's own implementation is the UDP
//! node of `grape::node`; tests plug in fakes.

use std::fmt;
use std::future::Future;
use std::net::SocketAddrV4;

use grenache_core::dht::node::{OpError, StartError};

use super::stats::DhtStatus;

/// What the HTTP API needs from the DHT. Implemented by the real DHT task and by test fakes.
///
/// Every method may be called concurrently from many connections; implementations coalesce or
/// queue as they see fit. None of the futures may panic on any input: names and values come
/// straight from HTTP clients.
pub trait GrapeDht: Send + Sync + 'static {
    /// Peers announced under `name` (the raw UTF-8 bytes of the service name, not hashed; any
    /// length but never empty), as seen by a full `get_peers` traversal plus the local store and
    /// the grape's lookup cache (docs/protocol.md §4.3). Order: random, like the Node grape; the
    /// API keeps the first 100 distinct entries. A lookup never fails: an isolated grape returns
    /// what it knows.
    fn lookup(&self, name: Vec<u8>) -> impl Future<Output = Vec<SocketAddrV4>> + Send;

    /// Announce `name` → `port` (never 0: the API substitutes [`GrapeDht::dht_port`]) to every
    /// token-bearing node of the traversal table (docs/protocol.md §4.2); `Ok(acks)` is the number
    /// of nodes that acknowledged `announce_peer`.
    fn announce(
        &self,
        name: Vec<u8>,
        port: u16,
    ) -> impl Future<Output = Result<usize, DhtError>> + Send;

    /// Withdraw an earlier announce of `name` → `port` (an extension of this implementation:
    /// Node grape 1.0.0 has no unannounce). `Ok(n)` counts the stores the announcement was removed
    /// from (the local one included), as the DHT defines it.
    fn unannounce(
        &self,
        name: Vec<u8>,
        port: u16,
    ) -> impl Future<Output = Result<usize, DhtError>> + Send;

    /// Store a BEP 44 item (docs/protocol.md §5). `Ok(key)` is the 20-byte target:
    /// `sha1(v_bencoded)` for an immutable item, `sha1(k ‖ salt)` for a mutable one. Immutable
    /// items are stored locally before they are sent, so they stay gettable from this grape even
    /// when the put fails.
    fn put(&self, item: PutItem) -> impl Future<Output = Result<[u8; 20], DhtError>> + Send;

    /// Fetch a BEP 44 item (docs/protocol.md §5). `Ok(None)` = not found (the API answers an empty
    /// 200).
    fn get(
        &self,
        query: GetQuery,
    ) -> impl Future<Output = Result<Option<GotItem>, DhtError>> + Send;

    /// The grape's own UDP port: `/announce` with port 0 announces this port
    /// (docs/protocol.md §3.6).
    fn dht_port(&self) -> u16;

    /// A counter that moves whenever this grape's own peer store gains or loses a peer, before
    /// the query that changed it is answered. The API drops the lookup answers it keeps for
    /// reuse when it moves, so an `/unannounce` through any grape that reached this one is
    /// seen here at once. The default (a constant) suits DHTs without such a store.
    fn store_changes(&self) -> u64 {
        0
    }

    /// A snapshot of the DHT for the operator endpoints (`GET /metrics`, `/health`,
    /// `/status.json`); `None` when the DHT cannot tell (test fakes, a stopped DHT).
    fn status(&self) -> impl Future<Output = Option<DhtStatus>> + Send {
        std::future::ready(None)
    }
}

/// Why a DHT operation failed. The API renders the [`fmt::Display`] text as a JSON string
/// (`"No nodes to query"`), with the HTTP status of [`DhtError::http_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtError {
    /// No node with a token was known for the target (an isolated grape): `"No nodes to query"`.
    NoNodes,
    /// Every `announce_peer`/`put` timed out or was refused: `"All queries failed"`.
    AllFailed,
    /// A remote node answered with a KRPC error in 300..=399 (BEP 44 CAS mismatch 301, sequence
    /// number too low 302) and no node acknowledged. The Node grape copies the code into the HTTP
    /// status and the body is `"<code> <message>"`, e.g. `"301 CAS mismatch, re-read and try
    /// again"`.
    Krpc {
        /// The KRPC error code (`e[0]`).
        code: u16,
        /// The KRPC error message (`e[1]`).
        message: String,
    },
    /// The node refused to start the operation (an empty or oversized name, key or value,
    /// port 0): the node's own sentence, e.g. `"value empty or too large"`.
    Refused(StartError),
    /// Too many operations were already waiting for a free slot of the node:
    /// `"DHT busy: too many operations waiting"`.
    Busy,
    /// The DHT was stopped while the request was in flight: `"dht is destroyed"`.
    Destroyed,
    /// Any other failure of another [`GrapeDht`] implementation; the text is sent to the client
    /// as is.
    Other(String),
}

impl DhtError {
    /// The HTTP status the Node grape answers with: the KRPC code for 3xx errors
    /// (`krpc:135,139` keeps only those), 200 for everything else.
    pub fn http_status(&self) -> u16 {
        match self {
            DhtError::Krpc { code, .. } if (300..=399).contains(code) => *code,
            _ => 200,
        }
    }
}

impl From<OpError> for DhtError {
    /// The engine's outcome as the Node grape reports it: only 3xx KRPC codes keep their own
    /// text and status; any other code is `"All queries failed"`, as in `OpError::message`.
    fn from(e: OpError) -> DhtError {
        match e {
            OpError::NoNodes => DhtError::NoNodes,
            OpError::AllFailed => DhtError::AllFailed,
            OpError::Krpc(code) => match u16::try_from(code) {
                Ok(code) if (300..=399).contains(&code) => DhtError::Krpc {
                    code,
                    message: e
                        .message()
                        .trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
                        .to_owned(),
                },
                _ => DhtError::AllFailed,
            },
        }
    }
}

impl fmt::Display for DhtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DhtError::NoNodes => f.write_str("No nodes to query"),
            DhtError::AllFailed => f.write_str("All queries failed"),
            DhtError::Krpc { code, message } => write!(f, "{code} {message}"),
            DhtError::Refused(e) => write!(f, "{e}"),
            DhtError::Busy => f.write_str("DHT busy: too many operations waiting"),
            DhtError::Destroyed => f.write_str("dht is destroyed"),
            DhtError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DhtError {}

/// A validated BEP 44 put (docs/protocol.md §3.8, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem {
    /// The value, bencoded exactly as bencode 2.0.3 encodes the JavaScript value the Node grape
    /// holds: strings → byte strings (UTF-8), numbers → integers (non-integers truncated the way
    /// bencode 2.0.3 does, see `grape::bencode`), `true`/`false` → `i1e`/`i0e`, arrays → lists
    /// (`null` elements skipped), objects → dicts with keys sorted in UTF-16 order (`null`
    /// members skipped). For an immutable item the key is `sha1(v_bencoded)`.
    pub v_bencoded: Vec<u8>,
    /// `Some` for a mutable item (the request carried a truthy `k`).
    pub mutable: Option<MutablePut>,
}

/// The mutable part of a put: what BEP 44 signs and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutablePut {
    /// The ed25519 public key.
    pub k: [u8; 32],
    /// The ed25519 signature over `salt? seq v` (the client signs; the grape does not verify).
    pub sig: [u8; 64],
    /// The sequence number (a JavaScript number converted as bencode 2.0.3 converts it).
    pub seq: i64,
    /// The salt, at most 64 bytes; empty = no salt (no `salt` key on the wire).
    pub salt: Vec<u8>,
    /// Compare-and-swap: the sequence number the stored item must have.
    pub cas: Option<i64>,
}

/// A validated BEP 44 get (docs/protocol.md §3.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuery {
    /// The target: `sha1(bencode(v))` or `sha1(k ‖ salt)`.
    pub hash: [u8; 20],
    /// The salt the client gave (after `str2buf`); `Some` also when it decoded to zero bytes.
    /// Needed to check a mutable item's key and signature; the API echoes it in remote hits.
    pub salt: Option<Vec<u8>>,
    /// `false` only when the client sent `"cache": false`: skip the local store and ask the
    /// network.
    pub cache: bool,
}

/// A found BEP 44 item, as the DHT has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GotItem {
    /// The id of the node that answered: our own id for a local hit.
    pub id: [u8; 20],
    /// The remote node's write token (`None` for a local hit, or when the answer had none).
    pub token: Option<Vec<u8>>,
    /// The value as it was on the wire: one bencoded value.
    pub v_bencoded: Vec<u8>,
    /// The public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// The signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// The sequence number of a mutable item.
    pub seq: Option<i64>,
    /// `true` when the item came from this grape's own store (the API then renders
    /// `"token":null` and the local key order of docs/protocol.md §3.9).
    pub from_local: bool,
}
