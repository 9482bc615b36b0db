//! KRPC, the DHT's datagram protocol (BEP 5, BEP 44): typed parsing and byte-exact encoding.
//!
//! [`parse`] turns a datagram into a [`Message`] that borrows from it. It decides only what the
//! transport layer of the Node grape (k-rpc-socket) decides: a datagram that is not a bencoded
//! dictionary with `y` = `q`/`r`/`e` and a byte-string `t` is dropped, and so is a query without a
//! method name or arguments. Everything else is handed over with the arguments *optional*, so that
//! the node engine reproduces bittorrent-dht's answers exactly (which missing argument gets an
//! error, which gets silence; docs/protocol.md §6.4). Arguments of the wrong bencode type read as
//! missing (Node 10.0.0 would crash on several of them, docs/protocol.md §13.3).
//!
//! The `encode_*` functions write the bytes a Node grape emits for the same message: keys in
//! bencode order, the same optional keys, nothing extra (no `v`, `ip` or `ro`). Each returns the
//! number of bytes written into the caller's buffer, or [`BufferFull`].

use core::fmt;

use crate::addr::{PeerAddr, COMPACT_PEER_LEN};
use crate::dht::id::{NodeId, ID_LEN};
use crate::wire::bencode::{self, DecodeError, Encoded, Encoder, List, Value};
use crate::wire::BufferFull;

/// Length of a compact node: 20-byte id, IPv4 address, big-endian port.
pub const COMPACT_NODE_LEN: usize = ID_LEN + COMPACT_PEER_LEN;

/// Method name of the Rust-only `unannounce` query (same arguments as `announce_peer`). Node
/// grapes do not know it and stay silent, like for any unknown query.
pub const UNANNOUNCE: &[u8] = b"unannounce";

/// The 2-byte big-endian transaction id a grape puts in its queries.
pub fn tid(n: u16) -> [u8; 2] {
    n.to_be_bytes()
}

/// The transaction number of an answer's `t`: its first two bytes, big-endian, as
/// k-rpc-socket reads it (`None` if shorter, which k-rpc-socket drops).
pub fn tid_of(t: &[u8]) -> Option<u16> {
    match *t {
        [a, b, ..] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Length of the transaction ids this crate's node and announcer put in their queries: 32
/// random bits, so that an off-path host cannot guess which answer the node waits for. Node
/// peers echo `t` verbatim whatever its length.
pub const QUERY_TID_LEN: usize = 4;

/// A [`QUERY_TID_LEN`]-byte transaction id (big-endian).
pub fn tid32(n: u32) -> [u8; QUERY_TID_LEN] {
    n.to_be_bytes()
}

/// The number of an answer's `t` if it is exactly [`QUERY_TID_LEN`] bytes long (an answer to
/// one of our queries echoes our `t`, so any other length is not one).
pub fn tid32_of(t: &[u8]) -> Option<u32> {
    <[u8; QUERY_TID_LEN]>::try_from(t)
        .ok()
        .map(u32::from_be_bytes)
}

/// Why a datagram is not a KRPC message a grape would act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseError {
    /// Not bencode.
    Bencode(DecodeError),
    /// Bencode, but not a dictionary.
    NotADict,
    /// `y` missing or not `q`, `r` or `e`.
    UnknownType,
    /// `t` missing or not a byte string.
    MissingTid,
    /// A query whose `q` is missing or not a byte string (this crashes bittorrent-dht 10.0.0).
    MissingMethod,
    /// A query whose `a` is missing or the integer 0: bittorrent-dht never answers it.
    MissingArgs,
}

impl From<DecodeError> for ParseError {
    fn from(e: DecodeError) -> ParseError {
        ParseError::Bencode(e)
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Bencode(e) => write!(f, "{e}"),
            ParseError::NotADict => f.write_str("KRPC message is not a dictionary"),
            ParseError::UnknownType => f.write_str("KRPC message of unknown type"),
            ParseError::MissingTid => f.write_str("KRPC message without transaction id"),
            ParseError::MissingMethod => f.write_str("KRPC query without method"),
            ParseError::MissingArgs => f.write_str("KRPC query without arguments"),
        }
    }
}

impl core::error::Error for ParseError {}

/// A parsed KRPC datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message<'a> {
    /// `y = q`.
    Query {
        /// Transaction id, echoed verbatim in the answer (any length).
        t: &'a [u8],
        /// `a.id` if it is a 20-byte string (only such ids enter routing tables).
        id: Option<NodeId>,
        /// Method and arguments.
        query: Query<'a>,
    },
    /// `y = r`.
    Response {
        /// Transaction id (see [`tid_of`]).
        t: &'a [u8],
        /// The `r` dictionary's fields; all `None` if `r` is missing or not a dictionary (the
        /// answer still completes its transaction).
        r: Response<'a>,
    },
    /// `y = e`.
    Error {
        /// Transaction id (see [`tid_of`]).
        t: &'a [u8],
        /// `e[0]` if it is an integer, else 0 (as k-rpc-socket).
        code: i64,
        /// `e[1]` if it is a byte string, else empty.
        msg: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// The transaction id of any kind of message.
    pub fn t(&self) -> &'a [u8] {
        match *self {
            Message::Query { t, .. } | Message::Response { t, .. } | Message::Error { t, .. } => t,
        }
    }
}

/// A query's method and the arguments bittorrent-dht looks at for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Query<'a> {
    /// `ping`: answered `{id}`.
    Ping,
    /// `find_node`; no target → error [`FIND_NODE_MISSING_TARGET`].
    FindNode {
        /// `a.target`, any length.
        target: Option<&'a [u8]>,
    },
    /// `get_peers`; no info_hash → error [`GET_PEERS_MISSING_INFO_HASH`].
    GetPeers {
        /// `a.info_hash`: for grapes, the raw service name, any length.
        info_hash: Option<&'a [u8]>,
    },
    /// `announce_peer`.
    AnnouncePeer(Announce<'a>),
    /// `get` (BEP 44); no target → no answer.
    Get {
        /// `a.target`.
        target: Option<&'a [u8]>,
    },
    /// `put` (BEP 44).
    Put(Put<'a>),
    /// `unannounce`, the Rust-only extension (see [`UNANNOUNCE`]).
    Unannounce(Announce<'a>),
    /// Any other method (no answer); the method name.
    Unknown(&'a [u8]),
}

/// Arguments of `announce_peer` (and of `unannounce`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Announce<'a> {
    /// `a.info_hash`.
    pub info_hash: Option<&'a [u8]>,
    /// `a.port` if it is an integer (any value; see [`Announce::effective_port`]).
    pub port: Option<i64>,
    /// Whether `a.implied_port` is present and truthy (not the integer 0).
    pub implied_port: bool,
    /// `a.token`.
    pub token: Option<&'a [u8]>,
}

impl Announce<'_> {
    /// The port to store, as bittorrent-dht picks it: the UDP source port if `implied_port`,
    /// else `a.port`; `None` (no answer at all) unless it is in 1..=65535.
    pub fn effective_port(&self, source_port: u16) -> Option<u16> {
        let port = if self.implied_port {
            i64::from(source_port)
        } else {
            self.port?
        };
        u16::try_from(port).ok().filter(|&p| p != 0)
    }
}

/// Arguments of `put` (BEP 44).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Put<'a> {
    /// `a.token`.
    pub token: Option<&'a [u8]>,
    /// `a.v` with its exact encoding (an immutable item's key is `sha1(v.raw)`). bittorrent-dht
    /// ignores a put whose `v` is not truthy ([`bencode::Value::is_truthy`]).
    pub v: Option<Encoded<'a>>,
    /// `a.k`, the ed25519 public key of a mutable item.
    pub k: Option<&'a [u8]>,
    /// `a.salt`.
    pub salt: Option<&'a [u8]>,
    /// `a.seq`.
    pub seq: Option<i64>,
    /// `a.sig`, the ed25519 signature.
    pub sig: Option<&'a [u8]>,
    /// `a.cas`, the expected current `seq`.
    pub cas: Option<i64>,
}

impl Put<'_> {
    /// Whether this is a mutable put (`k` or `sig` present), as bittorrent-dht decides it.
    pub fn is_mutable(&self) -> bool {
        self.k.is_some() || self.sig.is_some()
    }
}

/// The fields of an answer's `r` that grapes read. Fields of the wrong bencode type are `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Response<'a> {
    /// `r.id` if it is a 20-byte string.
    pub id: Option<NodeId>,
    /// `r.nodes`, compact node entries.
    pub nodes: Option<Nodes<'a>>,
    /// `r.values`, compact peers.
    pub values: Option<Values<'a>>,
    /// `r.token`.
    pub token: Option<&'a [u8]>,
    /// `r.v` with its exact encoding.
    pub v: Option<Encoded<'a>>,
    /// `r.k`.
    pub k: Option<&'a [u8]>,
    /// `r.sig`.
    pub sig: Option<&'a [u8]>,
    /// `r.seq`.
    pub seq: Option<i64>,
}

/// The compact node list of an answer (`r.nodes`), as k-rpc reads it: 26-byte entries, a
/// trailing partial entry ignored, entries with port 0 skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Nodes<'a> {
    raw: &'a [u8],
}

impl<'a> Nodes<'a> {
    /// A view over compact node bytes.
    pub fn new(raw: &'a [u8]) -> Nodes<'a> {
        Nodes { raw }
    }

    /// The bytes as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The usable entries: id and address.
    pub fn iter(&self) -> NodesIter<'a> {
        NodesIter {
            chunks: self.raw.chunks_exact(COMPACT_NODE_LEN),
        }
    }
}

impl<'a> IntoIterator for Nodes<'a> {
    type Item = (NodeId, PeerAddr);
    type IntoIter = NodesIter<'a>;
    fn into_iter(self) -> NodesIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Nodes`].
#[derive(Clone, Debug)]
pub struct NodesIter<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for NodesIter<'_> {
    type Item = (NodeId, PeerAddr);
    fn next(&mut self) -> Option<(NodeId, PeerAddr)> {
        for chunk in self.chunks.by_ref() {
            let (id, addr) = chunk.split_at(ID_LEN);
            let (Some(id), Some(peer)) = (NodeId::from_slice(id), PeerAddr::from_compact(addr))
            else {
                continue;
            };
            if peer.port != 0 {
                return Some((id, peer));
            }
        }
        None
    }
}

/// The peers of a `get_peers` answer (`r.values`), as bittorrent-dht reads them: each item's
/// first 6 bytes; the first item shorter than 6 bytes or not a string ends the list (the rest
/// is lost, docs/protocol.md §6.6); entries with port 0 are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Values<'a> {
    list: List<'a>,
}

impl<'a> Values<'a> {
    /// The list as received.
    pub fn list(&self) -> List<'a> {
        self.list
    }

    /// The usable peers.
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            raw: self.list.raw(),
            pos: 1,
        }
    }
}

impl<'a> IntoIterator for Values<'a> {
    type Item = PeerAddr;
    type IntoIter = ValuesIter<'a>;
    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Values`].
#[derive(Clone, Debug)]
pub struct ValuesIter<'a> {
    /// The validated list, `l` to `e`.
    raw: &'a [u8],
    /// Offset of the next item; past the end once stopped.
    pos: usize,
}

impl Iterator for ValuesIter<'_> {
    type Item = PeerAddr;
    fn next(&mut self) -> Option<PeerAddr> {
        loop {
            // Only string items matter: the first other item (or the closing `e`) ends the list,
            // like the try/catch around bittorrent-dht's loop. Strings were validated already.
            let item = match self.raw.get(self.pos) {
                Some(b'0'..=b'9') => bencode::read_bytes(self.raw, self.pos),
                _ => None,
            };
            let peer = item.and_then(|(bytes, end)| {
                self.pos = end;
                let compact = bytes.first_chunk::<COMPACT_PEER_LEN>()?;
                PeerAddr::from_compact(compact)
            });
            let Some(peer) = peer else {
                self.pos = usize::MAX;
                return None;
            };
            if peer.port != 0 {
                return Some(peer);
            }
        }
    }
}

/// Parses a KRPC datagram (see the module docs for what is rejected).
///
/// Cost: one validating pass over the datagram plus a walk over the keys of the message and of
/// its `a`/`r` (the validating pass remembers where shallow containers end, so a long `values`
/// or `nodes` is not rescanned); [`Values`] and [`Nodes`] are decoded as they are iterated.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    let mut index = bencode::EndIndex::EMPTY;
    let (top, _) = bencode::decode_indexed(datagram, &mut index)?;
    if top.as_dict().is_none() {
        return Err(ParseError::NotADict);
    }
    let (mut t, mut y, mut q, mut a, mut r, mut e) = (None, None, None, None, None, None);
    // One pass; a later duplicate key overrides, as in Node's decoded object.
    for (key, start, value) in bencode::entries_indexed(datagram, 0, &index) {
        let value = value.value;
        match key {
            b"t" => t = Some(value),
            b"y" => y = Some(value),
            b"q" => q = Some(value),
            b"a" => a = Some((start, value)),
            b"r" => r = Some((start, value)),
            b"e" => e = Some(value),
            _ => {}
        }
    }
    let kind = y.and_then(|y| y.as_bytes());
    if !matches!(kind, Some(b"q" | b"r" | b"e")) {
        return Err(ParseError::UnknownType);
    }
    let t = t.and_then(|t| t.as_bytes()).ok_or(ParseError::MissingTid)?;
    // The entries of `a` or `r` if it is a dictionary.
    let fields = |at: Option<(usize, Value<'_>)>| {
        at.filter(|(_, v)| v.as_dict().is_some())
            .map(|(start, _)| bencode::entries_indexed(datagram, start, &index))
    };
    match kind {
        Some(b"q") => {
            let method = q
                .and_then(|q| q.as_bytes())
                .ok_or(ParseError::MissingMethod)?;
            if !a.is_some_and(|(_, a)| a.is_truthy()) {
                return Err(ParseError::MissingArgs);
            }
            // A truthy `a` that is not a dictionary has no fields (Node reads them undefined).
            let args = fields(a).map(Args::read).unwrap_or_default();
            Ok(Message::Query {
                t,
                id: args.id.and_then(NodeId::from_slice),
                query: args.query(method),
            })
        }
        Some(b"r") => Ok(Message::Response {
            t,
            r: fields(r).map(read_response).unwrap_or_default(),
        }),
        _ => {
            let mut items = e.and_then(|e| e.as_list()).into_iter().flatten();
            let code = items.next().and_then(|v| v.as_int()).unwrap_or(0);
            let msg = items.next().and_then(|v| v.as_bytes()).unwrap_or(&[]);
            Ok(Message::Error { t, code, msg })
        }
    }
}

/// Entries of a dictionary: key, offset, value.
type Entries<'a, 'i> = bencode::IndexedEntries<'a, 'i>;

/// The query arguments any method may use, read in one pass over `a`.
#[derive(Default)]
struct Args<'a> {
    id: Option<&'a [u8]>,
    target: Option<&'a [u8]>,
    info_hash: Option<&'a [u8]>,
    port: Option<i64>,
    implied_port: bool,
    token: Option<&'a [u8]>,
    v: Option<Encoded<'a>>,
    k: Option<&'a [u8]>,
    salt: Option<&'a [u8]>,
    seq: Option<i64>,
    sig: Option<&'a [u8]>,
    cas: Option<i64>,
}

impl<'a> Args<'a> {
    fn read(a: Entries<'a, '_>) -> Args<'a> {
        let mut args = Args::default();
        for (key, _, enc) in a {
            let value = enc.value;
            match key {
                b"id" => args.id = value.as_bytes(),
                b"target" => args.target = value.as_bytes(),
                b"info_hash" => args.info_hash = value.as_bytes(),
                b"port" => args.port = value.as_int(),
                b"implied_port" => args.implied_port = value.is_truthy(),
                b"token" => args.token = value.as_bytes(),
                b"v" => args.v = Some(enc),
                b"k" => args.k = value.as_bytes(),
                b"salt" => args.salt = value.as_bytes(),
                b"seq" => args.seq = value.as_int(),
                b"sig" => args.sig = value.as_bytes(),
                b"cas" => args.cas = value.as_int(),
                _ => {}
            }
        }
        args
    }

    fn announce(&self) -> Announce<'a> {
        Announce {
            info_hash: self.info_hash,
            port: self.port,
            implied_port: self.implied_port,
            token: self.token,
        }
    }

    fn query(&self, method: &'a [u8]) -> Query<'a> {
        match method {
            b"ping" => Query::Ping,
            b"find_node" => Query::FindNode {
                target: self.target,
            },
            b"get_peers" => Query::GetPeers {
                info_hash: self.info_hash,
            },
            b"announce_peer" => Query::AnnouncePeer(self.announce()),
            b"get" => Query::Get {
                target: self.target,
            },
            b"put" => Query::Put(Put {
                token: self.token,
                v: self.v,
                k: self.k,
                salt: self.salt,
                seq: self.seq,
                sig: self.sig,
                cas: self.cas,
            }),
            UNANNOUNCE => Query::Unannounce(self.announce()),
            other => Query::Unknown(other),
        }
    }
}

fn read_response<'a>(r: Entries<'a, '_>) -> Response<'a> {
    let mut out = Response::default();
    for (key, _, enc) in r {
        let value = enc.value;
        match key {
            b"id" => out.id = value.as_bytes().and_then(NodeId::from_slice),
            b"nodes" => out.nodes = value.as_bytes().map(Nodes::new),
            b"values" => out.values = value.as_list().map(|list| Values { list }),
            b"token" => out.token = value.as_bytes(),
            b"v" => out.v = Some(enc),
            b"k" => out.k = value.as_bytes(),
            b"sig" => out.sig = value.as_bytes(),
            b"seq" => out.seq = value.as_int(),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A KRPC error code and message, as bittorrent-dht sends them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KrpcError {
    /// The numeric code (`e[0]`).
    pub code: i64,
    /// The message (`e[1]`).
    pub msg: &'static [u8],
}

/// `find_node` without `a.target`.
pub const FIND_NODE_MISSING_TARGET: KrpcError = KrpcError {
    code: 203,
    msg: b"`find_node` missing required `a.target` field",
};
/// `get_peers` without `a.info_hash`.
pub const GET_PEERS_MISSING_INFO_HASH: KrpcError = KrpcError {
    code: 203,
    msg: b"`get_peers` missing required `a.info_hash` field",
};
/// `announce_peer` whose token is not one this node gave to the sender's IP.
pub const ANNOUNCE_PEER_BAD_TOKEN: KrpcError = KrpcError {
    code: 203,
    msg: b"cannot `announce_peer` with bad token",
};
/// `put` whose token is not one this node gave to the sender's IP.
pub const PUT_BAD_TOKEN: KrpcError = KrpcError {
    code: 203,
    msg: b"cannot `put` with bad token",
};
/// `put` whose `v` is longer than 1000 bytes.
pub const PAYLOAD_TOO_LARGE: KrpcError = KrpcError {
    code: 205,
    msg: b"data payload too large",
};
/// Mutable `put` whose `cas` is not the stored `seq`.
pub const CAS_MISMATCH: KrpcError = KrpcError {
    code: 301,
    msg: b"CAS mismatch, re-read and try again",
};
/// Mutable `put` whose `seq` is not above the stored one.
pub const SEQ_LESS_THAN_CURRENT: KrpcError = KrpcError {
    code: 302,
    msg: b"sequence number less than current",
};
/// Mutable `put` to a node that cannot verify signatures (every CLI grape).
pub const VERIFICATION_NOT_SUPPORTED: KrpcError = KrpcError {
    code: 400,
    msg: b"verification not supported",
};

/// The fields of a mutable `put` besides `id` and `token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MutablePut<'a> {
    /// The value, already bencoded (written verbatim).
    pub v: &'a [u8],
    /// The ed25519 public key (32 bytes for real items).
    pub k: &'a [u8],
    /// The sequence number.
    pub seq: i64,
    /// The ed25519 signature (64 bytes for real items).
    pub sig: &'a [u8],
    /// The salt, if any (sent whenever present, even empty).
    pub salt: Option<&'a [u8]>,
    /// Compare-and-swap: the `seq` the item must currently have.
    pub cas: Option<i64>,
}

/// The signature fields a `get` answer carries for a mutable item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Signed<'a> {
    /// The public key.
    pub k: &'a [u8],
    /// The signature.
    pub sig: &'a [u8],
    /// The sequence number (omitted when the stored item has none, as bittorrent-dht does).
    pub seq: Option<i64>,
}

/// Writes `d1:ad…e1:q<method>1:t<t>1:y1:qe`, with `args` writing the sorted arguments.
fn query(
    buf: &mut [u8],
    t: &[u8],
    method: &[u8],
    args: impl FnOnce(&mut Encoder<'_>) -> Result<(), BufferFull>,
) -> Result<usize, BufferFull> {
    let mut e = Encoder::new(buf);
    e.dict_begin()?;
    e.bytes(b"a")?;
    e.dict_begin()?;
    args(&mut e)?;
    e.end()?;
    e.bytes(b"q")?;
    e.bytes(method)?;
    e.bytes(b"t")?;
    e.bytes(t)?;
    e.bytes(b"y")?;
    e.bytes(b"q")?;
    e.end()?;
    Ok(e.len())
}

/// Writes `d1:rd…e1:t<t>1:y1:re`, with `fields` writing the sorted fields.
fn response(
    buf: &mut [u8],
    t: &[u8],
    fields: impl FnOnce(&mut Encoder<'_>) -> Result<(), BufferFull>,
) -> Result<usize, BufferFull> {
    let mut e = Encoder::new(buf);
    e.dict_begin()?;
    e.bytes(b"r")?;
    e.dict_begin()?;
    fields(&mut e)?;
    e.end()?;
    e.bytes(b"t")?;
    e.bytes(t)?;
    e.bytes(b"y")?;
    e.bytes(b"r")?;
    e.end()?;
    Ok(e.len())
}

fn entry(e: &mut Encoder<'_>, key: &[u8], value: &[u8]) -> Result<(), BufferFull> {
    e.bytes(key)?;
    e.bytes(value)
}

fn entry_int(e: &mut Encoder<'_>, key: &[u8], value: i64) -> Result<(), BufferFull> {
    e.bytes(key)?;
    e.int(value)
}

/// One compact node entry: id, address, big-endian port.
pub fn compact_node(id: &NodeId, peer: &PeerAddr) -> [u8; COMPACT_NODE_LEN] {
    let mut out = [0u8; COMPACT_NODE_LEN];
    let (id_part, addr_part) = out.split_at_mut(ID_LEN);
    id_part.copy_from_slice(id.as_bytes());
    addr_part.copy_from_slice(&peer.to_compact());
    out
}

fn nodes_entry<I>(e: &mut Encoder<'_>, nodes: I) -> Result<(), BufferFull>
where
    I: IntoIterator<Item = (NodeId, PeerAddr)>,
{
    e.bytes(b"nodes")?;
    e.bytes_concat(nodes.into_iter().map(|(id, peer)| compact_node(&id, &peer)))
}

/// `ping {id}`.
pub fn encode_ping(buf: &mut [u8], t: &[u8], id: &NodeId) -> Result<usize, BufferFull> {
    query(buf, t, b"ping", |e| entry(e, b"id", id.as_bytes()))
}

/// `find_node {id, target}`.
pub fn encode_find_node(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    target: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, b"find_node", |e| {
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"target", target)
    })
}

/// `get_peers {id, info_hash}`.
pub fn encode_get_peers(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    info_hash: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, b"get_peers", |e| {
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"info_hash", info_hash)
    })
}

/// `announce_peer {id, implied_port, info_hash, port, token}`. bittorrent-dht always sends
/// `implied_port`, as `port == 0`.
pub fn encode_announce_peer(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    info_hash: &[u8],
    port: u16,
    implied_port: bool,
    token: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, b"announce_peer", |e| {
        entry(e, b"id", id.as_bytes())?;
        entry_int(e, b"implied_port", i64::from(implied_port))?;
        entry(e, b"info_hash", info_hash)?;
        entry_int(e, b"port", i64::from(port))?;
        entry(e, b"token", token)
    })
}

/// `unannounce {id, [implied_port: 1,] info_hash, port, token}`: withdraws what the matching
/// `announce_peer` stored. `implied_port` is only sent when set.
pub fn encode_unannounce(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    info_hash: &[u8],
    port: u16,
    implied_port: bool,
    token: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, UNANNOUNCE, |e| {
        entry(e, b"id", id.as_bytes())?;
        if implied_port {
            entry_int(e, b"implied_port", 1)?;
        }
        entry(e, b"info_hash", info_hash)?;
        entry_int(e, b"port", i64::from(port))?;
        entry(e, b"token", token)
    })
}

/// `get {id, target}` (BEP 44).
pub fn encode_get(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    target: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, b"get", |e| {
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"target", target)
    })
}

/// Immutable `put {id, token, v}`; `v` is already bencoded and written verbatim.
pub fn encode_put_immutable(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    token: &[u8],
    v: &[u8],
) -> Result<usize, BufferFull> {
    query(buf, t, b"put", |e| {
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"token", token)?;
        e.bytes(b"v")?;
        e.raw(v)
    })
}

/// Mutable `put {cas?, id, k, salt?, seq, sig, token, v}`.
pub fn encode_put_mutable(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    token: &[u8],
    item: &MutablePut<'_>,
) -> Result<usize, BufferFull> {
    query(buf, t, b"put", |e| {
        if let Some(cas) = item.cas {
            entry_int(e, b"cas", cas)?;
        }
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"k", item.k)?;
        if let Some(salt) = item.salt {
            entry(e, b"salt", salt)?;
        }
        entry_int(e, b"seq", item.seq)?;
        entry(e, b"sig", item.sig)?;
        entry(e, b"token", token)?;
        e.bytes(b"v")?;
        e.raw(item.v)
    })
}

/// Answer `{id}` (to `ping`, `announce_peer`, `put`).
pub fn encode_response_id(buf: &mut [u8], t: &[u8], id: &NodeId) -> Result<usize, BufferFull> {
    response(buf, t, |e| entry(e, b"id", id.as_bytes()))
}

/// Answer `{id, nodes}` (to `find_node`). `nodes` may be empty (`5:nodes0:`, as Node sends).
pub fn encode_response_nodes<I>(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    nodes: I,
) -> Result<usize, BufferFull>
where
    I: IntoIterator<Item = (NodeId, PeerAddr)>,
{
    response(buf, t, |e| {
        entry(e, b"id", id.as_bytes())?;
        nodes_entry(e, nodes)
    })
}

/// Answer `{id, nodes, token}` (to `get_peers` without known peers, to `get` without a value).
pub fn encode_response_nodes_token<I>(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    nodes: I,
    token: &[u8],
) -> Result<usize, BufferFull>
where
    I: IntoIterator<Item = (NodeId, PeerAddr)>,
{
    response(buf, t, |e| {
        entry(e, b"id", id.as_bytes())?;
        nodes_entry(e, nodes)?;
        entry(e, b"token", token)
    })
}

/// Answer `{id, token, values}` (to `get_peers` with known peers: no `nodes`,
/// docs/protocol.md §13.7).
pub fn encode_response_values<I>(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    token: &[u8],
    values: I,
) -> Result<usize, BufferFull>
where
    I: IntoIterator<Item = PeerAddr>,
{
    response(buf, t, |e| {
        entry(e, b"id", id.as_bytes())?;
        entry(e, b"token", token)?;
        e.bytes(b"values")?;
        e.list_begin()?;
        for peer in values {
            // `6:` and the compact peer, as one fixed-size write.
            let [a, b, c, d, p0, p1] = peer.to_compact();
            e.raw(&[b'6', b':', a, b, c, d, p0, p1])?;
        }
        e.end()
    })
}

/// Answer `{id, [k, seq,] [sig,] token, v}` to a `get` that found an item; `v` is already
/// bencoded. bittorrent-dht never returns the salt.
pub fn encode_response_item(
    buf: &mut [u8],
    t: &[u8],
    id: &NodeId,
    token: &[u8],
    v: &[u8],
    signed: Option<&Signed<'_>>,
) -> Result<usize, BufferFull> {
    response(buf, t, |e| {
        entry(e, b"id", id.as_bytes())?;
        if let Some(s) = signed {
            entry(e, b"k", s.k)?;
            if let Some(seq) = s.seq {
                entry_int(e, b"seq", seq)?;
            }
            entry(e, b"sig", s.sig)?;
        }
        entry(e, b"token", token)?;
        e.bytes(b"v")?;
        e.raw(v)
    })
}

/// Error `{e: [code, msg], t, y: e}`.
pub fn encode_error(buf: &mut [u8], t: &[u8], code: i64, msg: &[u8]) -> Result<usize, BufferFull> {
    let mut e = Encoder::new(buf);
    e.dict_begin()?;
    e.bytes(b"e")?;
    e.list_begin()?;
    e.int(code)?;
    e.bytes(msg)?;
    e.end()?;
    e.bytes(b"t")?;
    e.bytes(t)?;
    e.bytes(b"y")?;
    e.bytes(b"e")?;
    e.end()?;
    Ok(e.len())
}

/// One of the known errors (see [`FIND_NODE_MISSING_TARGET`] and its siblings).
pub fn encode_known_error(
    buf: &mut [u8],
    t: &[u8],
    error: &KrpcError,
) -> Result<usize, BufferFull> {
    encode_error(buf, t, error.code, error.msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::bencode::Value;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const A: &str = "168d7c4142ec1c92189ffde1b4d4e8ece40669b3";
    const B: &str = "f4e960d05d1e19ac57744d90a8af4b0e885b9fb4";
    const TOKEN: &str = "42d7b365fbdb18757b6b20f3f1369a5445e881bb";
    const LOCAL_20001: PeerAddr = PeerAddr::new([127, 0, 0, 1], 20001);
    const LOCAL_20002: PeerAddr = PeerAddr::new([127, 0, 0, 1], 20002);

    fn id(h: &str) -> NodeId {
        NodeId::from_slice(&hex::decode(h).unwrap()).unwrap()
    }

    fn unhex(h: &str) -> Vec<u8> {
        hex::decode(h).unwrap()
    }

    /// Runs an encoder into a fresh buffer and returns the bytes.
    fn out(f: impl FnOnce(&mut [u8]) -> Result<usize, BufferFull>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        let n = f(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    fn query_of(bytes: &[u8]) -> (&[u8], Option<NodeId>, Query<'_>) {
        match parse(bytes).unwrap() {
            Message::Query { t, id, query } => (t, id, query),
            other => panic!("not a query: {other:?}"),
        }
    }

    fn response_of(bytes: &[u8]) -> (&[u8], Response<'_>) {
        match parse(bytes).unwrap() {
            Message::Response { t, r } => (t, r),
            other => panic!("not a response: {other:?}"),
        }
    }

    // ---- docs/protocol.md §6.8 captures
    // -----------------------------------------------------------------

    #[test]
    fn golden_ping() {
        let q = unhex("64313a6164323a696432303a0102030405060708090a0b0c0d0e0f101112131465313a71343a70696e67313a74323a6161313a79313a7165");
        let client = NodeId(core::array::from_fn(|i| i as u8 + 1));
        let (t, qid, query) = query_of(&q);
        assert_eq!(t, b"aa");
        assert_eq!(qid, Some(client));
        assert_eq!(query, Query::Ping);
        assert_eq!(out(|b| encode_ping(b, t, &client)), q);

        let r = unhex("64313a7264323a696432303a168d7c4142ec1c92189ffde1b4d4e8ece40669b365313a74323a6161313a79313a7265");
        let (t, resp) = response_of(&r);
        assert_eq!(t, b"aa");
        assert_eq!(
            resp,
            Response {
                id: Some(id(A)),
                ..Response::default()
            }
        );
        assert_eq!(out(|b| encode_response_id(b, t, &id(A))), r);
    }

    #[test]
    fn golden_find_node() {
        let q = unhex("64313a6164323a696432303af58127a3aac4fe832c118434a3015376e149ebfb363a74617267657432303af58127a3aac4fe832c118434a3015376e149ebfb65313a71393a66696e645f6e6f6465313a74323a0001313a79313a7165");
        assert_eq!(q.len(), 92);
        let me = id("f58127a3aac4fe832c118434a3015376e149ebfb");
        let (t, qid, query) = query_of(&q);
        assert_eq!(tid_of(t), Some(1));
        assert_eq!(qid, Some(me));
        assert_eq!(
            query,
            Query::FindNode {
                target: Some(&me.0[..])
            }
        );
        assert_eq!(out(|b| encode_find_node(b, &tid(1), &me, me.as_bytes())), q);

        let r = unhex("64313a7264323a696432303af58127a3aac4fe832c118434a3015376e149ebfb353a6e6f64657332363a4d4484cde889fd939ba978a15c0c0cae7502f07d7f0000014e2265313a74323a0001313a79313a7265");
        assert_eq!(r.len(), 83);
        let (t, resp) = response_of(&r);
        assert_eq!(tid_of(t), Some(1));
        assert_eq!(resp.id, Some(me));
        let nodes: Vec<_> = resp.nodes.unwrap().iter().collect();
        let other = id("4d4484cde889fd939ba978a15c0c0cae7502f07d");
        assert_eq!(nodes, [(other, LOCAL_20002)]);
        assert_eq!((resp.token, resp.values, resp.v), (None, None, None));
        assert_eq!(
            out(|b| encode_response_nodes(b, t, &me, nodes.iter().copied())),
            r
        );
    }

    #[test]
    fn golden_announce_exchange() {
        let gp = unhex("64313a6164323a696432303a168d7c4142ec1c92189ffde1b4d4e8ece40669b3393a696e666f5f6861736831333a726573743a7574696c3a6e657465313a71393a6765745f7065657273313a74323a0002313a79313a7165");
        let (t, qid, query) = query_of(&gp);
        assert_eq!(tid_of(t), Some(2));
        assert_eq!(qid, Some(id(A)));
        assert_eq!(
            query,
            Query::GetPeers {
                info_hash: Some(&b"rest:util:net"[..])
            }
        );
        assert_eq!(
            out(|b| encode_get_peers(b, &tid(2), &id(A), b"rest:util:net")),
            gp
        );

        let ans = unhex("64313a7264323a696432303af4e960d05d1e19ac57744d90a8af4b0e885b9fb4353a6e6f64657332363a168d7c4142ec1c92189ffde1b4d4e8ece40669b37f0000014e21353a746f6b656e32303a42d7b365fbdb18757b6b20f3f1369a5445e881bb65313a74323a0002313a79313a7265");
        let (t, resp) = response_of(&ans);
        assert_eq!(tid_of(t), Some(2));
        assert_eq!(resp.id, Some(id(B)));
        assert_eq!(resp.token, Some(&unhex(TOKEN)[..]));
        let nodes: Vec<_> = resp.nodes.unwrap().iter().collect();
        assert_eq!(nodes, [(id(A), LOCAL_20001)]);
        assert_eq!(resp.values, None);
        assert_eq!(
            out(|b| encode_response_nodes_token(
                b,
                t,
                &id(B),
                nodes.iter().copied(),
                &unhex(TOKEN)
            )),
            ans
        );

        let ann = unhex("64313a6164323a696432303a168d7c4142ec1c92189ffde1b4d4e8ece40669b331323a696d706c6965645f706f7274693065393a696e666f5f6861736831333a726573743a7574696c3a6e6574343a706f7274693133333765353a746f6b656e32303a42d7b365fbdb18757b6b20f3f1369a5445e881bb65313a7131333a616e6e6f756e63655f70656572313a74323a0003313a79313a7165");
        let (t, qid, query) = query_of(&ann);
        assert_eq!(tid_of(t), Some(3));
        assert_eq!(qid, Some(id(A)));
        let token = unhex(TOKEN);
        let expected = Announce {
            info_hash: Some(b"rest:util:net"),
            port: Some(1337),
            implied_port: false,
            token: Some(&token),
        };
        assert_eq!(query, Query::AnnouncePeer(expected));
        assert_eq!(expected.effective_port(40000), Some(1337));
        assert_eq!(
            out(|b| encode_announce_peer(
                b,
                &tid(3),
                &id(A),
                b"rest:util:net",
                1337,
                false,
                &token
            )),
            ann
        );

        let ack = unhex("64313a7264323a696432303af4e960d05d1e19ac57744d90a8af4b0e885b9fb465313a74323a0003313a79313a7265");
        let (t, resp) = response_of(&ack);
        assert_eq!(tid_of(t), Some(3));
        assert_eq!(
            resp,
            Response {
                id: Some(id(B)),
                ..Response::default()
            }
        );
        assert_eq!(out(|b| encode_response_id(b, &tid(3), &id(B))), ack);
    }

    #[test]
    fn golden_values_answer() {
        let bytes = unhex("64313a7264323a696432303af4e960d05d1e19ac57744d90a8af4b0e885b9fb4353a746f6b656e32303a42d7b365fbdb18757b6b20f3f1369a5445e881bb363a76616c7565736c363a7f0000014e216565313a74323a000d313a79313a7265");
        let (t, resp) = response_of(&bytes);
        assert_eq!(tid_of(t), Some(0x0d));
        assert_eq!(resp.id, Some(id(B)));
        assert_eq!(resp.token, Some(&unhex(TOKEN)[..]));
        assert_eq!(resp.nodes, None);
        let peers: Vec<_> = resp.values.unwrap().iter().collect();
        assert_eq!(peers, [LOCAL_20001]);
        assert_eq!(
            out(|b| encode_response_values(
                b,
                &tid(0x0d),
                &id(B),
                &unhex(TOKEN),
                peers.iter().copied()
            )),
            bytes
        );
    }

    #[test]
    fn golden_immutable_put() {
        let target = unhex("6d33adc2b6b2c14c3036feefb7fedbca1a880527");
        let get = unhex("64313a6164323a696432303a168d7c4142ec1c92189ffde1b4d4e8ece40669b3363a74617267657432303a6d33adc2b6b2c14c3036feefb7fedbca1a88052765313a71333a676574313a74323a000e313a79313a7165");
        let (t, qid, query) = query_of(&get);
        assert_eq!(tid_of(t), Some(0x0e));
        assert_eq!(qid, Some(id(A)));
        assert_eq!(
            query,
            Query::Get {
                target: Some(&target[..])
            }
        );
        assert_eq!(out(|b| encode_get(b, &tid(0x0e), &id(A), &target)), get);

        let put = unhex("64313a6164323a696432303a168d7c4142ec1c92189ffde1b4d4e8ece40669b3353a746f6b656e32303a42d7b365fbdb18757b6b20f3f1369a5445e881bb313a7631313a68656c6c6f20776f726c6465313a71333a707574313a74323a000f313a79313a7165");
        let (t, qid, query) = query_of(&put);
        assert_eq!(tid_of(t), Some(0x0f));
        assert_eq!(qid, Some(id(A)));
        let Query::Put(p) = query else {
            panic!("{query:?}")
        };
        let token = unhex(TOKEN);
        assert_eq!(p.token, Some(&token[..]));
        let v = p.v.unwrap();
        assert_eq!(v.raw, b"11:hello world");
        assert_eq!(v.value, Value::Bytes(b"hello world"));
        // The immutable key is sha1 of the raw value (docs/protocol.md §5).
        assert_eq!(
            sha1_smol::Sha1::from(v.raw).digest().bytes().as_slice(),
            target.as_slice()
        );
        assert!(!p.is_mutable());
        assert_eq!(
            (p.k, p.salt, p.seq, p.sig, p.cas),
            (None, None, None, None, None)
        );
        assert_eq!(
            out(|b| encode_put_immutable(b, &tid(0x0f), &id(A), &token, v.raw)),
            put
        );

        // `d1:rd2:id20:<id>5:token20:<..>1:v8:py valuee1:t2:\x00\x071:y1:re`
        let mut answer = Vec::new();
        answer.extend_from_slice(b"d1:rd2:id20:");
        answer.extend_from_slice(id(B).as_bytes());
        answer.extend_from_slice(b"5:token20:");
        answer.extend_from_slice(&token);
        answer.extend_from_slice(b"1:v8:py valuee1:t2:\x00\x071:y1:re");
        assert_eq!(
            out(|b| encode_response_item(b, &tid(7), &id(B), &token, b"8:py value", None)),
            answer
        );
        let (_, resp) = response_of(&answer);
        assert_eq!(resp.v.unwrap().value, Value::Bytes(b"py value"));
        assert_eq!(resp.token, Some(&token[..]));
        assert_eq!((resp.k, resp.sig, resp.seq), (None, None, None));
    }

    #[test]
    fn golden_mutable_put() {
        let token = unhex(TOKEN);
        let k = [7u8; 32];
        let sig = [9u8; 64];
        let mut wire = Vec::new();
        wire.extend_from_slice(b"d1:ad2:id20:");
        wire.extend_from_slice(id(A).as_bytes());
        wire.extend_from_slice(b"1:k32:");
        wire.extend_from_slice(&k);
        wire.extend_from_slice(b"4:salt6:mysalt3:seqi1e3:sig64:");
        wire.extend_from_slice(&sig);
        wire.extend_from_slice(b"5:token20:");
        wire.extend_from_slice(&token);
        wire.extend_from_slice(b"1:v13:hello mutablee1:q3:put1:t2:\x00\x101:y1:qe");
        let item = MutablePut {
            v: b"13:hello mutable",
            k: &k,
            seq: 1,
            sig: &sig,
            salt: Some(b"mysalt"),
            cas: None,
        };
        assert_eq!(
            out(|b| encode_put_mutable(b, &tid(0x10), &id(A), &token, &item)),
            wire
        );
        let (_, qid, query) = query_of(&wire);
        assert_eq!(qid, Some(id(A)));
        let Query::Put(p) = query else {
            panic!("{query:?}")
        };
        assert!(p.is_mutable());
        assert_eq!(p.k, Some(&k[..]));
        assert_eq!(p.sig, Some(&sig[..]));
        assert_eq!(p.salt, Some(&b"mysalt"[..]));
        assert_eq!(p.seq, Some(1));
        assert_eq!(p.cas, None);
        assert_eq!(p.v.unwrap().raw, b"13:hello mutable");

        // With cas: the key sorts first.
        let with_cas = out(|b| {
            encode_put_mutable(
                b,
                &tid(1),
                &id(A),
                &token,
                &MutablePut {
                    cas: Some(0),
                    salt: None,
                    ..item
                },
            )
        });
        assert!(with_cas.starts_with(b"d1:ad3:casi0e2:id20:"));
        let (_, _, Query::Put(p)) = query_of(&with_cas) else {
            panic!()
        };
        assert_eq!((p.cas, p.salt), (Some(0), None));

        // A get answer for a mutable item: {id, k, seq, sig, token, v}, no salt.
        let signed = Signed {
            k: &k,
            sig: &sig,
            seq: Some(1),
        };
        let answer =
            out(|b| encode_response_item(b, &tid(2), &id(B), &token, item.v, Some(&signed)));
        let mut expected = Vec::new();
        expected.extend_from_slice(b"d1:rd2:id20:");
        expected.extend_from_slice(id(B).as_bytes());
        expected.extend_from_slice(b"1:k32:");
        expected.extend_from_slice(&k);
        expected.extend_from_slice(b"3:seqi1e3:sig64:");
        expected.extend_from_slice(&sig);
        expected.extend_from_slice(b"5:token20:");
        expected.extend_from_slice(&token);
        expected.extend_from_slice(b"1:v13:hello mutablee1:t2:\x00\x021:y1:re");
        assert_eq!(answer, expected);
        let (_, r) = response_of(&answer);
        assert_eq!((r.k, r.sig, r.seq), (Some(&k[..]), Some(&sig[..]), Some(1)));
    }

    #[test]
    fn golden_errors() {
        let t = b"\x00\x13";
        let cases: [(&KrpcError, &[u8]); 4] = [
            (
                &VERIFICATION_NOT_SUPPORTED,
                b"d1:eli400e26:verification not supportede1:t2:\x00\x131:y1:ee",
            ),
            (
                &PAYLOAD_TOO_LARGE,
                b"d1:eli205e22:data payload too largee1:t2:\x00\x131:y1:ee",
            ),
            (
                &ANNOUNCE_PEER_BAD_TOKEN,
                b"d1:eli203e37:cannot `announce_peer` with bad tokene1:t2:\x00\x131:y1:ee",
            ),
            (
                &FIND_NODE_MISSING_TARGET,
                b"d1:eli203e45:`find_node` missing required `a.target` fielde1:t2:\x00\x131:y1:ee",
            ),
        ];
        for (err, wire) in cases {
            assert_eq!(out(|b| encode_known_error(b, t, err)), wire);
            assert_eq!(
                parse(wire).unwrap(),
                Message::Error {
                    t,
                    code: err.code,
                    msg: err.msg
                }
            );
        }
        assert_eq!(
            out(|b| encode_known_error(b, t, &VERIFICATION_NOT_SUPPORTED)).len(),
            54
        );
        // The rest of the docs/protocol.md §5/§6.4 table.
        assert_eq!(GET_PEERS_MISSING_INFO_HASH.code, 203);
        assert_eq!(
            GET_PEERS_MISSING_INFO_HASH.msg,
            b"`get_peers` missing required `a.info_hash` field"
        );
        assert_eq!(
            (PUT_BAD_TOKEN.code, PUT_BAD_TOKEN.msg),
            (203, &b"cannot `put` with bad token"[..])
        );
        assert_eq!(
            (CAS_MISMATCH.code, CAS_MISMATCH.msg),
            (301, &b"CAS mismatch, re-read and try again"[..])
        );
        assert_eq!(
            (SEQ_LESS_THAN_CURRENT.code, SEQ_LESS_THAN_CURRENT.msg),
            (302, &b"sequence number less than current"[..])
        );
    }

    // ---- Node's acceptance rules ---------------------------------------------------------

    #[test]
    fn transaction_ids() {
        assert_eq!(tid(1), [0, 1]);
        assert_eq!(tid(0xabcd), [0xab, 0xcd]);
        assert_eq!(tid_of(b"\x00\x01"), Some(1));
        assert_eq!(tid_of(b"\x12\x34\x56"), Some(0x1234));
        assert_eq!(tid_of(b"\x01"), None);
        assert_eq!(tid32(0x0102_0304), [1, 2, 3, 4]);
        assert_eq!(tid32_of(&[1, 2, 3, 4]), Some(0x0102_0304));
        assert_eq!(tid32_of(&[1, 2, 3]), None);
        assert_eq!(tid32_of(&[1, 2, 3, 4, 5]), None);
        assert_eq!(tid_of(b""), None);
    }

    #[test]
    fn dropped_datagrams() {
        assert_eq!(parse(b""), Err(ParseError::Bencode(DecodeError::Truncated)));
        assert_eq!(parse(b"li1ee"), Err(ParseError::NotADict));
        assert_eq!(parse(b"d1:t2:aae"), Err(ParseError::UnknownType));
        assert_eq!(parse(b"d1:t2:aa1:y1:xe"), Err(ParseError::UnknownType));
        assert_eq!(parse(b"d1:t2:aa1:yi1ee"), Err(ParseError::UnknownType));
        assert_eq!(parse(b"d1:rde1:y1:re"), Err(ParseError::MissingTid));
        assert_eq!(parse(b"d1:rde1:ti1e1:y1:re"), Err(ParseError::MissingTid));
        // docs/protocol.md §13.3: the packet that crashes bittorrent-dht 10.0.0.
        assert_eq!(parse(b"d1:t2:aa1:y1:qe"), Err(ParseError::MissingMethod));
        assert_eq!(
            parse(b"d1:q4:ping1:t2:aa1:y1:qe"),
            Err(ParseError::MissingArgs)
        );
        assert_eq!(
            parse(b"d1:ai0e1:q4:ping1:t2:aa1:y1:qe"),
            Err(ParseError::MissingArgs)
        );
    }

    #[test]
    fn truthy_non_dict_args_have_no_fields() {
        // Node answers a ping whose `a` is any truthy value; its fields read as undefined.
        for a in [&b"i5e"[..], b"0:", b"le"] {
            let mut wire = Vec::new();
            wire.extend_from_slice(b"d1:a");
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"1:q9:find_node1:t2:aa1:y1:qe");
            assert_eq!(
                parse(&wire),
                Ok(Message::Query {
                    t: b"aa",
                    id: None,
                    query: Query::FindNode { target: None }
                })
            );
        }
    }

    #[test]
    fn wrongly_typed_or_sized_arguments_read_as_missing() {
        let (_, id, q) = query_of(b"d1:ad2:id3:abc6:targeti5ee1:q9:find_node1:t2:aa1:y1:qe");
        assert_eq!((id, q), (None, Query::FindNode { target: None }));
        let (_, _, q) = query_of(b"d1:ad9:info_hashi5ee1:q9:get_peers1:t2:aa1:y1:qe");
        assert_eq!(q, Query::GetPeers { info_hash: None });
        let (_, _, q) = query_of(b"d1:ad4:port4:13375:tokeni1ee1:q13:announce_peer1:t2:aa1:y1:qe");
        assert_eq!(
            q,
            Query::AnnouncePeer(Announce {
                info_hash: None,
                port: None,
                implied_port: false,
                token: None
            })
        );
        // An empty target is present (an empty Buffer is truthy in Node).
        let (_, _, q) = query_of(b"d1:ad6:target0:e1:q3:get1:t2:aa1:y1:qe");
        assert_eq!(
            q,
            Query::Get {
                target: Some(&b""[..])
            }
        );
    }

    #[test]
    fn unknown_methods_and_unannounce() {
        let (_, _, q) = query_of(b"d1:ade1:q4:vote1:t2:aa1:y1:qe");
        assert_eq!(q, Query::Unknown(b"vote"));
        let token = [5u8; 20];
        let wire = out(|b| encode_unannounce(b, b"tt", &id(A), b"svc", 8080, false, &token));
        let mut expected = Vec::new();
        expected.extend_from_slice(b"d1:ad2:id20:");
        expected.extend_from_slice(id(A).as_bytes());
        expected.extend_from_slice(b"9:info_hash3:svc4:porti8080e5:token20:");
        expected.extend_from_slice(&token);
        expected.extend_from_slice(b"e1:q10:unannounce1:t2:tt1:y1:qe");
        assert_eq!(wire, expected);
        let (_, qid, q) = query_of(&wire);
        assert_eq!(qid, Some(id(A)));
        assert_eq!(
            q,
            Query::Unannounce(Announce {
                info_hash: Some(b"svc"),
                port: Some(8080),
                implied_port: false,
                token: Some(&token),
            })
        );
    }

    #[test]
    fn effective_port_follows_bittorrent_dht() {
        let a = |port, implied_port| Announce {
            info_hash: None,
            port,
            implied_port,
            token: None,
        };
        assert_eq!(a(Some(1337), false).effective_port(9), Some(1337));
        assert_eq!(a(Some(1337), true).effective_port(9), Some(9));
        assert_eq!(a(None, true).effective_port(9), Some(9));
        assert_eq!(a(None, true).effective_port(0), None);
        assert_eq!(a(None, false).effective_port(9), None);
        assert_eq!(a(Some(0), false).effective_port(9), None);
        assert_eq!(a(Some(-1), false).effective_port(9), None);
        assert_eq!(a(Some(65535), false).effective_port(9), Some(65535));
        assert_eq!(a(Some(65536), false).effective_port(9), None);
        // implied_port is truthiness: i0e is false, a string is true.
        let (_, _, q) =
            query_of(b"d1:ad12:implied_port0:4:porti5ee1:q13:announce_peer1:t2:aa1:y1:qe");
        let Query::AnnouncePeer(ann) = q else {
            panic!()
        };
        assert!(ann.implied_port);
        // bittorrent-dht sends implied_port = 1 when announcing port 0.
        let wire = out(|b| encode_announce_peer(b, b"t", &id(A), b"x", 0, true, b"tok"));
        assert!(wire.windows(18).any(|w| w == b"12:implied_porti1e"));
    }

    #[test]
    fn values_stop_at_first_malformed_entry_and_skip_port_zero() {
        let r = b"d1:rd6:valuesl6:\x7f\x00\x00\x01\x4e\x216:\x01\x02\x03\x04\x00\x007:\x0a\x00\x00\x01\x00\x50X5:short6:\x7f\x00\x00\x01\x00\x01ee1:t2:aa1:y1:re";
        let (_, resp) = response_of(r);
        let peers: Vec<_> = resp.values.unwrap().iter().collect();
        assert_eq!(peers, [LOCAL_20001, PeerAddr::new([10, 0, 0, 1], 80)]);
        let r = b"d1:rd6:valuesli1e6:\x7f\x00\x00\x01\x4e\x21ee1:t2:aa1:y1:re";
        let (_, resp) = response_of(r);
        assert_eq!(resp.values.unwrap().iter().count(), 0);
        // Not a list: no values.
        let (_, resp) = response_of(b"d1:rd6:values6:\x7f\x00\x00\x01\x4e\x21e1:t2:aa1:y1:re");
        assert_eq!(resp.values, None);
    }

    #[test]
    fn nodes_ignore_partial_tail_and_port_zero() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&compact_node(&id(A), &LOCAL_20001));
        raw.extend_from_slice(&compact_node(&id(B), &PeerAddr::new([1, 2, 3, 4], 0)));
        raw.extend_from_slice(&compact_node(&id(B), &LOCAL_20002));
        raw.extend_from_slice(&[1, 2, 3]);
        let nodes: Vec<_> = Nodes::new(&raw).iter().collect();
        assert_eq!(nodes, [(id(A), LOCAL_20001), (id(B), LOCAL_20002)]);
    }

    #[test]
    fn response_without_r_and_odd_errors() {
        assert_eq!(
            parse(b"d1:t2:aa1:y1:re"),
            Ok(Message::Response {
                t: b"aa",
                r: Response::default()
            })
        );
        assert_eq!(
            parse(b"d1:ri3e1:t2:aa1:y1:re"),
            Ok(Message::Response {
                t: b"aa",
                r: Response::default()
            })
        );
        assert_eq!(
            parse(b"d1:t2:aa1:y1:ee"),
            Ok(Message::Error {
                t: b"aa",
                code: 0,
                msg: b""
            })
        );
        assert_eq!(
            parse(b"d1:el3:abci5ee1:t2:aa1:y1:ee"),
            Ok(Message::Error {
                t: b"aa",
                code: 0,
                msg: b""
            })
        );
        assert_eq!(
            parse(b"d1:eli201ee1:t1:a1:y1:ee"),
            Ok(Message::Error {
                t: b"a",
                code: 201,
                msg: b""
            })
        );
    }

    #[test]
    fn trailing_bytes_after_the_message_are_not_read() {
        // Found by fuzzing: the walk must stop at the top-level `e`, not read on into trailing
        // bytes that happen to look like more entries.
        assert_eq!(parse(b"de1:t2:aa1:y1:re"), Err(ParseError::UnknownType));
        let wire = b"d1:ade1:q4:ping1:t2:aa1:y1:qe1:t2:bb";
        assert_eq!(
            parse(wire),
            Ok(Message::Query {
                t: b"aa",
                id: None,
                query: Query::Ping
            })
        );
        let (v, used) = crate::wire::bencode::decode(b"d1:ai1ee1:bi2e").unwrap();
        assert_eq!(used, 8);
        assert_eq!(v.as_dict().unwrap().get(b"b"), None);
    }

    #[test]
    fn duplicate_keys_last_wins_and_extra_keys_ignored() {
        let (t, _, q) = query_of(b"d1:ade1:q4:ping1:t2:aa1:t2:bb1:v4:XX011:y1:q2:ro1:1e");
        assert_eq!((t, q), (&b"bb"[..], Query::Ping));
    }

    #[test]
    fn many_containers_beyond_the_end_index_still_parse() {
        // More shallow containers than the validating pass remembers, before the real fields.
        let mut wire = Vec::new();
        wire.extend_from_slice(b"d1:rd");
        for k in b'a'..=b'l' {
            wire.extend_from_slice(&[b'1', b':', k, b'l', b'l', b'e', b'e']);
        }
        wire.extend_from_slice(b"5:token3:tok6:valuesl6:\x7f\x00\x00\x01\x4e\x21ee");
        wire.extend_from_slice(b"1:t2:aa1:xl");
        for _ in 0..10 {
            wire.extend_from_slice(b"de");
        }
        wire.extend_from_slice(b"e1:y1:re");
        let m = parse(&wire).unwrap();
        agrees_with_plain_lookup(&wire, &m);
        let (t, r) = response_of(&wire);
        assert_eq!(t, b"aa");
        assert_eq!(r.token, Some(&b"tok"[..]));
        assert_eq!(r.values.unwrap().iter().collect::<Vec<_>>(), [LOCAL_20001]);
    }

    #[test]
    fn buffer_full_is_reported() {
        // A ping with a 2-byte t is 56 bytes.
        let mut small = [0u8; 55];
        assert_eq!(encode_ping(&mut small, b"aa", &id(A)), Err(BufferFull));
        let mut exact = [0u8; 56];
        assert_eq!(encode_ping(&mut exact, b"aa", &id(A)), Ok(56));
        let mut buf = [0u8; 100];
        let many = core::iter::repeat_n((id(A), LOCAL_20001), 10);
        assert_eq!(
            encode_response_nodes(&mut buf, b"aa", &id(B), many),
            Err(BufferFull)
        );
        assert_eq!(
            encode_response_values(
                &mut buf,
                b"aa",
                &id(B),
                b"tok",
                core::iter::repeat_n(LOCAL_20001, 20)
            ),
            Err(BufferFull)
        );
        assert_eq!(
            encode_error(&mut small[..10], b"aa", 201, b"x"),
            Err(BufferFull)
        );
    }

    #[test]
    fn empty_nodes_are_still_sent() {
        let wire = out(|b| encode_response_nodes(b, b"aa", &id(A), core::iter::empty()));
        assert!(wire.windows(10).any(|w| w == b"5:nodes0:e"));
        let (_, r) = response_of(&wire);
        assert_eq!(r.nodes.map(|n| n.iter().count()), Some(0));
    }

    // ---- proptests ---------------------------------------------------------------------

    fn node_id() -> impl Strategy<Value = NodeId> {
        any::<[u8; 20]>().prop_map(NodeId)
    }

    fn peer() -> impl Strategy<Value = PeerAddr> {
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| PeerAddr::new(ip, port))
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    /// A bencoded value: a string, an integer, or a list of both.
    fn bencoded_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            bytes(40).prop_map(|b| out(|buf| {
                let mut e = Encoder::new(buf);
                e.bytes(&b)?;
                Ok(e.len())
            })),
            any::<i64>().prop_map(|n| out(|buf| {
                let mut e = Encoder::new(buf);
                e.int(n)?;
                Ok(e.len())
            })),
            proptest::collection::vec(bytes(8), 0..5).prop_map(|items| out(|buf| {
                let mut e = Encoder::new(buf);
                e.list_begin()?;
                for i in &items {
                    e.bytes(i)?;
                }
                e.end()?;
                Ok(e.len())
            })),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip_simple_queries(t in bytes(8), me in node_id(), target in bytes(40), which in 0u8..4) {
            let wire = out(|b| match which {
                0 => encode_ping(b, &t, &me),
                1 => encode_find_node(b, &t, &me, &target),
                2 => encode_get_peers(b, &t, &me, &target),
                _ => encode_get(b, &t, &me, &target),
            });
            let expected = match which {
                0 => Query::Ping,
                1 => Query::FindNode { target: Some(&target) },
                2 => Query::GetPeers { info_hash: Some(&target) },
                _ => Query::Get { target: Some(&target) },
            };
            prop_assert_eq!(parse(&wire), Ok(Message::Query { t: &t, id: Some(me), query: expected }));
        }

        #[test]
        fn roundtrip_announces(
            t in bytes(8), me in node_id(), info_hash in bytes(40), port: u16, implied: bool,
            token in bytes(24), un: bool,
        ) {
            let wire = out(|b| if un {
                encode_unannounce(b, &t, &me, &info_hash, port, implied, &token)
            } else {
                encode_announce_peer(b, &t, &me, &info_hash, port, implied, &token)
            });
            let ann = Announce {
                info_hash: Some(&info_hash),
                port: Some(i64::from(port)),
                implied_port: implied,
                token: Some(&token),
            };
            let q = if un { Query::Unannounce(ann) } else { Query::AnnouncePeer(ann) };
            prop_assert_eq!(parse(&wire), Ok(Message::Query { t: &t, id: Some(me), query: q }));
        }

        #[test]
        fn roundtrip_puts(
            t in bytes(8), me in node_id(), token in bytes(24), v in bencoded_value(),
            mutable: bool, k in bytes(40), sig in bytes(70), seq: i64,
            salt in proptest::option::of(bytes(20)), cas in proptest::option::of(any::<i64>()),
        ) {
            let item = MutablePut { v: &v, k: &k, seq, sig: &sig, salt: salt.as_deref(), cas };
            let wire = out(|b| if mutable {
                encode_put_mutable(b, &t, &me, &token, &item)
            } else {
                encode_put_immutable(b, &t, &me, &token, &v)
            });
            let Ok(Message::Query { t: pt, id: pid, query: Query::Put(p) }) = parse(&wire) else {
                panic!("not a put");
            };
            prop_assert_eq!((pt, pid), (&t[..], Some(me)));
            prop_assert_eq!(p.token, Some(&token[..]));
            prop_assert_eq!(p.v.map(|v| v.raw), Some(&v[..]));
            if mutable {
                prop_assert_eq!((p.k, p.sig, p.seq, p.salt, p.cas),
                                (Some(&k[..]), Some(&sig[..]), Some(seq), salt.as_deref(), cas));
                prop_assert!(p.is_mutable());
            } else {
                prop_assert_eq!((p.k, p.sig, p.seq, p.salt, p.cas), (None, None, None, None, None));
            }
        }

        #[test]
        fn roundtrip_responses(
            t in bytes(8), me in node_id(), token in bytes(24),
            nodes in proptest::collection::vec((node_id(), peer()), 0..30),
            values in proptest::collection::vec(peer(), 0..30),
            v in bencoded_value(), k in bytes(40), sig in bytes(70), seq in proptest::option::of(any::<i64>()),
            which in 0u8..6,
        ) {
            let signed = Signed { k: &k, sig: &sig, seq };
            let wire = out(|b| match which {
                0 => encode_response_id(b, &t, &me),
                1 => encode_response_nodes(b, &t, &me, nodes.iter().copied()),
                2 => encode_response_nodes_token(b, &t, &me, nodes.iter().copied(), &token),
                3 => encode_response_values(b, &t, &me, &token, values.iter().copied()),
                4 => encode_response_item(b, &t, &me, &token, &v, None),
                _ => encode_response_item(b, &t, &me, &token, &v, Some(&signed)),
            });
            agrees_with_plain_lookup(&wire, &parse(&wire).unwrap());
            let (pt, r) = response_of(&wire);
            prop_assert_eq!(pt, &t[..]);
            prop_assert_eq!(r.id, Some(me));
            let got_nodes: Option<Vec<_>> = r.nodes.map(|n| n.iter().collect());
            let got_values: Option<Vec<_>> = r.values.map(|n| n.iter().collect());
            prop_assert_eq!(got_nodes, matches!(which, 1 | 2).then(|| nodes.clone()));
            prop_assert_eq!(got_values, (which == 3).then(|| values.clone()));
            prop_assert_eq!(r.token, (which >= 2).then_some(&token[..]));
            prop_assert_eq!(r.v.map(|e| e.raw), (which >= 4).then_some(&v[..]));
            prop_assert_eq!(r.k, (which == 5).then_some(&k[..]));
            prop_assert_eq!(r.sig, (which == 5).then_some(&sig[..]));
            prop_assert_eq!(r.seq, if which == 5 { seq } else { None });
        }

        #[test]
        fn roundtrip_errors(t in bytes(8), code: i64, msg in bytes(80)) {
            let wire = out(|b| encode_error(b, &t, code, &msg));
            prop_assert_eq!(parse(&wire), Ok(Message::Error { t: &t, code, msg: &msg }));
        }

        #[test]
        fn parse_never_panics(bytes in bytes(300)) {
            if let Ok(m) = parse(&bytes) {
                exercise(&m);
                agrees_with_plain_lookup(&bytes, &m);
            }
        }

        #[test]
        fn parse_never_panics_on_mutated_messages(
            which in 0usize..4, edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let token = [1u8; 20];
            let mut wire = out(|b| match which {
                0 => encode_announce_peer(b, b"ab", &NodeId([3; 20]), b"svc", 80, false, &token),
                1 => encode_response_values(b, b"ab", &NodeId([3; 20]), &token, core::iter::repeat_n(LOCAL_20001, 4)),
                2 => encode_response_nodes_token(b, b"ab", &NodeId([3; 20]), core::iter::repeat_n((NodeId([4; 20]), LOCAL_20002), 3), &token),
                _ => encode_put_mutable(b, b"ab", &NodeId([3; 20]), &token, &MutablePut {
                    v: b"l1:ai-5ee", k: &[2; 32], seq: 4, sig: &[5; 64], salt: Some(b"s"), cas: Some(3),
                }),
            });
            let len = wire.len();
            for (at, byte) in edits {
                wire[at % len] = byte;
            }
            if let Ok(m) = parse(&wire) {
                exercise(&m);
                agrees_with_plain_lookup(&wire, &m);
            }
        }
    }

    /// The fields `parse` found (through its end index) equal what the plain `Dict` API reads.
    fn agrees_with_plain_lookup(data: &[u8], m: &Message<'_>) {
        let (top, _) = crate::wire::bencode::decode(data).unwrap();
        let top = top.as_dict().unwrap();
        assert_eq!(Some(m.t()), top.get(b"t").and_then(|v| v.as_bytes()));
        let sub = |key: &[u8]| top.get(key).and_then(|v| v.as_dict());
        match m {
            Message::Response { r, .. } => {
                let d = sub(b"r");
                let get = |k: &[u8]| d.and_then(|d| d.get_encoded(k));
                let bytes = |k: &[u8]| get(k).and_then(|e| e.value.as_bytes());
                assert_eq!(r.id, bytes(b"id").and_then(NodeId::from_slice));
                assert_eq!(r.token, bytes(b"token"));
                assert_eq!(r.k, bytes(b"k"));
                assert_eq!(r.sig, bytes(b"sig"));
                assert_eq!(r.nodes.map(|n| n.raw()), bytes(b"nodes"));
                assert_eq!(r.v, get(b"v"));
                assert_eq!(r.seq, get(b"seq").and_then(|e| e.value.as_int()));
                assert_eq!(
                    r.values.map(|v| v.list().raw()),
                    get(b"values")
                        .and_then(|e| e.value.as_list())
                        .map(|l| l.raw())
                );
            }
            Message::Query { id, query, .. } => {
                let d = sub(b"a");
                let get = |k: &[u8]| d.and_then(|d| d.get_encoded(k));
                let bytes = |k: &[u8]| get(k).and_then(|e| e.value.as_bytes());
                assert_eq!(*id, bytes(b"id").and_then(NodeId::from_slice));
                match query {
                    Query::Put(p) => {
                        assert_eq!(p.v, get(b"v"));
                        assert_eq!(p.token, bytes(b"token"));
                        assert_eq!(p.salt, bytes(b"salt"));
                        assert_eq!(p.cas, get(b"cas").and_then(|e| e.value.as_int()));
                    }
                    Query::AnnouncePeer(a) | Query::Unannounce(a) => {
                        assert_eq!(a.info_hash, bytes(b"info_hash"));
                        assert_eq!(a.port, get(b"port").and_then(|e| e.value.as_int()));
                    }
                    Query::FindNode { target } | Query::Get { target } => {
                        assert_eq!(*target, bytes(b"target"));
                    }
                    _ => {}
                }
            }
            Message::Error { .. } => {}
        }
    }

    /// Touches every lazily decoded part of a message.
    fn exercise(m: &Message<'_>) -> usize {
        let mut n = m.t().len();
        match m {
            Message::Query {
                query: Query::Put(p),
                ..
            } => {
                if let Some(v) = p.v {
                    n += v.raw.len();
                }
            }
            Message::Response { r, .. } => {
                n += r.nodes.map(|x| x.iter().count()).unwrap_or(0);
                n += r.values.map(|x| x.iter().count()).unwrap_or(0);
            }
            _ => {}
        }
        n
    }
}
