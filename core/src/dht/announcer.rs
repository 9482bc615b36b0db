//! An announce-only DHT client: what a board needs to put its service into the DHT, and no
//! more.
//!
//! A grape is a full [`crate::dht::node::Node`]: routing table, announce store, BEP44 items,
//! lookups for others. A board only has to make its own address findable, so [`Announcer`] keeps
//! one traversal's worth of state (the `C` closest nodes of the service name seen so far) and no
//! routing table, store or token secret. That is a fraction of the node's code and memory, what
//! lets a board with 64 KiB of flash run the worker and the DHT client together.
//!
//! One announce ([`Announcer::start`]) is a round:
//!
//! 1. **bootstrap**: the configured grapes are the first candidates (by address, their ids are
//!    learned from their answers). Every round starts from them again, so a restarted grape
//!    (new id, empty store) is found at the next round without any table maintenance;
//! 2. **`get_peers` traversal** for the service name: each answer's `nodes` enter the candidate
//!    list when closer than its farthest entry, and the closest not yet asked are queried,
//!    [`ALPHA`] at a time, until every candidate has answered or failed (or [`MAX_QUERIES`] were
//!    sent, so a round is bounded whatever the answers say);
//! 3. **`announce_peer`** with the service port and the token to every candidate that answered
//!    with one (the `C` closest nodes found). The grapes store the UDP source address of that
//!    query, i.e. the board's own IP, with the port.
//!
//! The round ends with [`Announcer::poll_done`]: the number of nodes that acknowledged. The
//! caller runs a round per service, again well inside the grapes' peer TTL.
//!
//! Queries from other nodes (grapes add the board to their tables once it has queried them)
//! get the short answers of a node that knows nobody and stores nothing: `ping`, `find_node`
//! and `get_peers` are answered `{id}`; other methods are not answered, as unknown ones are by
//! bittorrent-dht. Announcing to the board is therefore impossible (it never hands out tokens),
//! and lookups of others never find anything on it: both harmless.
//!
//! Same sans-IO shape as the node: [`Announcer::poll_transmit`], [`Announcer::handle_datagram`],
//! [`Announcer::poll_timeout`] and [`Announcer::handle_timeout`].

use crate::addr::{PeerAddr, Transmit};
use crate::dht::id::{Distance, NodeId};
use crate::dht::lookup::{Token, MAX_TARGET_LEN};
use crate::rng::Rng;
use crate::time::{Duration, Instant};
use crate::wire::bencode::{self, Dict};
use crate::wire::krpc;

/// Queries of the traversal in flight at once (Kademlia's α, as bittorrent-dht).
pub const ALPHA: usize = 3;
/// An unanswered query counts as failed after this long.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most `get_peers` queries of one round: a bound on a round's length and traffic whatever
/// nodes the answers name (a LAN with a few grapes needs a handful).
pub const MAX_QUERIES: u8 = 32;

/// Why [`Announcer::start`] refused a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StartError {
    /// No bootstrap address was given: nobody to ask.
    NoNodes,
    /// The service name is empty or longer than [`MAX_TARGET_LEN`].
    BadName,
    /// Port 0 cannot be announced.
    BadPort,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StartError::NoNodes => "no bootstrap address to ask",
            StartError::BadName => "service name empty or too long",
            StartError::BadPort => "port 0 cannot be announced",
        })
    }
}

impl core::error::Error for StartError {}

/// Where a candidate is in the round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not asked yet.
    New,
    /// `get_peers` sent, waiting until the deadline.
    Asked,
    /// Answered `get_peers` with a token: to be announced to.
    Answered,
    /// `announce_peer` sent, waiting until the deadline.
    Announcing,
    /// Acknowledged the announce.
    Acked,
    /// Timed out, answered with an error, or gave no token: out of the round.
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    /// `None` for a bootstrap address until it answers.
    id: Option<NodeId>,
    addr: PeerAddr,
    state: State,
    deadline: Instant,
    token: Option<Token>,
}

/// How readily a candidate slot is given up for a new node: free or failed slots first
/// (`true`), then the farthest (the [`Distance`] to the name).
type Rank = (bool, Distance);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Lookup,
    Announce,
    Done,
}

/// The announce-only client, with room for `C` candidates (about 60 bytes each; 8 are plenty
/// on a LAN with a few grapes). See the module docs.
pub struct Announcer<const C: usize> {
    id: NodeId,
    phase: Phase,
    /// A `u8` length: [`MAX_TARGET_LEN`] fits, and a board counts its bytes.
    name: heapless::Vec<u8, MAX_TARGET_LEN, u8>,
    port: u16,
    /// First three bytes of every transaction id of this round (random; the fourth is the
    /// candidate's slot): answers to an older round or forged without seeing the query are
    /// ignored, and an off-path host has 2^24 ids to guess per round.
    round: [u8; 3],
    queries: u8,
    cands: [Option<Candidate>; C],
}

impl<const C: usize> Announcer<C> {
    /// An idle client with a random node id.
    pub fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Announcer {
            id: NodeId::random(rng),
            phase: Phase::Idle,
            name: heapless::Vec::new(),
            port: 0,
            round: [0; 3],
            queries: 0,
            // Not `[const { None }; C]`: for this non-`Copy` slot that fills every slot with
            // memset on a board, which links memset (184 B of flash) for this alone.
            cands: core::array::from_fn(|_| None),
        }
    }

    /// This client's node id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Whether a round is running (started and its result not yet taken).
    pub fn is_running(&self) -> bool {
        self.phase != Phase::Idle
    }

    /// Starts a round announcing `name` on `port`, bootstrapping from `seeds` (at most `C` are
    /// used). A round still running is abandoned.
    pub fn start<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        name: &[u8],
        port: u16,
        seeds: &[PeerAddr],
    ) -> Result<(), StartError> {
        if port == 0 {
            return Err(StartError::BadPort);
        }
        if seeds.is_empty() || C == 0 {
            return Err(StartError::NoNodes);
        }
        if name.is_empty() || name.len() > MAX_TARGET_LEN {
            return Err(StartError::BadName);
        }
        self.name.clear();
        // Cannot fail: the length was checked above, before anything of the old round changed.
        let _ = self.name.extend_from_slice(name);
        self.port = port;
        let [a, b, c, _] = rng.next_u32().to_le_bytes();
        self.round = [a, b, c];
        self.queries = 0;
        self.phase = Phase::Lookup;
        let mut seeds = seeds.iter();
        // Slot by slot rather than a new array: a board writes the tags, not whole slots.
        for c in &mut self.cands {
            *c = seeds.next().map(|addr| Candidate {
                id: None,
                addr: *addr,
                state: State::New,
                deadline: Instant::from_millis(0),
                token: None,
            });
        }
        Ok(())
    }

    /// The finished round's result, once: how many nodes acknowledged the announce (0: the
    /// board is not stored anywhere, try again soon).
    #[must_use]
    pub fn poll_done(&mut self) -> Option<usize> {
        if self.phase != Phase::Done {
            return None;
        }
        self.phase = Phase::Idle;
        Some(self.count(State::Acked))
    }

    fn name(&self) -> &[u8] {
        &self.name
    }

    fn count(&self, state: State) -> usize {
        self.cands
            .iter()
            .flatten()
            .filter(|c| c.state == state)
            .count()
    }

    /// Moves to the next phase when the current one has nothing left to wait for.
    fn advance(&mut self) {
        let any = |s: State| self.cands.iter().flatten().any(|c| c.state == s);
        if self.phase == Phase::Lookup
            && !any(State::Asked)
            && (!any(State::New) || self.queries >= MAX_QUERIES)
        {
            self.phase = Phase::Announce;
        }
        if self.phase == Phase::Announce && !any(State::Answered) && !any(State::Announcing) {
            self.phase = Phase::Done;
        }
    }

    /// The next query to send, written into `buf`: `get_peers` to the closest candidates not
    /// yet asked, then `announce_peer` to those that gave a token. `None` when nothing is to
    /// be sent now.
    #[must_use]
    // Out of line: a board calls it from an async loop, whose state machine would otherwise
    // carry a copy at each call site (measured: 92 B less flash with both out of line).
    #[inline(never)]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.advance();
        let (want, next) = match self.phase {
            Phase::Lookup if self.count(State::Asked) < ALPHA && self.queries < MAX_QUERIES => {
                (State::New, State::Asked)
            }
            Phase::Announce => (State::Answered, State::Announcing),
            _ => return None,
        };
        // The closest candidate in state `want`; bootstrap addresses (no id yet) first.
        let mut best: Option<(usize, Option<Distance>)> = None;
        for (i, c) in self.cands.iter().enumerate() {
            let Some(c) = c.as_ref().filter(|c| c.state == want) else {
                continue;
            };
            let key = c.id.map(|id| Distance::between(self.name(), &id));
            if best.is_none_or(|(_, b)| key < b) {
                best = Some((i, key));
            }
        }
        let (i, _) = best?;
        let [a, b, c] = self.round;
        let t = krpc::tid32(u32::from_be_bytes([a, b, c, u8::try_from(i).ok()?]));
        let name = &self.name;
        let c = self.cands.get_mut(i)?.as_mut()?;
        let written = match next {
            State::Asked => krpc::encode_get_peers(buf, &t, &self.id, name),
            _ => {
                let token = c.token.as_ref().map_or(&[][..], Token::as_bytes);
                krpc::encode_announce_peer(buf, &t, &self.id, name, self.port, false, token)
            }
        };
        c.deadline = now.saturating_add(QUERY_TIMEOUT);
        let Ok(len) = written else {
            // A buffer too small for the query: this candidate cannot be asked.
            c.state = State::Failed;
            return None;
        };
        c.state = next;
        if next == State::Asked {
            self.queries = self.queries.saturating_add(1);
        }
        Some(Transmit { to: c.addr, len })
    }

    /// Handles a datagram from `from`: an answer to one of this round's queries, or a query
    /// to answer. Returns the length of the answer written into `out`, if any.
    ///
    /// Reads only what the client needs (`y`, `t`, `q`; `r.id`, `r.token`, `r.nodes`) with the
    /// bencode decoder; [`krpc::parse`] would read every argument of every method, and flash
    /// is short. As there, a repeated key counts with its last value.
    #[must_use]
    // Out of line, as `poll_transmit`.
    #[inline(never)]
    pub fn handle_datagram(
        &mut self,
        from: PeerAddr,
        bytes: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let msg = bencode::decode(bytes).ok()?.0.as_dict()?;
        let t = field(msg, b"t")?;
        let r = match field(msg, b"y")? {
            b"q" => {
                // bittorrent-dht answers nothing to a query without arguments.
                msg.get(b"a").filter(bencode::Value::is_truthy)?;
                return match field(msg, b"q")? {
                    b"ping" | b"find_node" | b"get_peers" => {
                        krpc::encode_response_id(out, t, &self.id).ok()
                    }
                    _ => None,
                };
            }
            b"r" => msg.get(b"r").and_then(|r| r.as_dict()),
            b"e" => None,
            _ => return None,
        };
        let [a, b, c, i] = krpc::tid32_of(t)?.to_be_bytes();
        if [a, b, c] != self.round || self.phase == Phase::Idle {
            return None;
        }
        let c = self.cands.get_mut(usize::from(i))?.as_mut()?;
        // Only the asked node's own address may answer for it.
        if c.addr != from || !matches!(c.state, State::Asked | State::Announcing) {
            return None;
        }
        let nodes = match (r, c.state) {
            (None, _) => {
                c.state = State::Failed;
                None
            }
            (Some(_), State::Announcing) => {
                c.state = State::Acked;
                None
            }
            (Some(r), _) => {
                if let Some(id) = field(r, b"id").and_then(NodeId::from_slice) {
                    c.id = Some(id);
                }
                c.token = field(r, b"token").and_then(Token::new);
                c.state = if c.token.is_some() {
                    State::Answered
                } else {
                    State::Failed
                };
                field(r, b"nodes")
            }
        };
        for (id, addr) in nodes.map(krpc::Nodes::new).into_iter().flatten() {
            self.insert(id, addr);
        }
        self.advance();
        None
    }

    /// Adds a node named in an answer, if it is new and closer than the farthest candidate
    /// that can be given up (a failed one first; never one waiting for an answer).
    fn insert(&mut self, id: NodeId, addr: PeerAddr) {
        if id == self.id
            || self
                .cands
                .iter()
                .flatten()
                .any(|c| c.addr == addr || c.id == Some(id))
        {
            return;
        }
        let key = Distance::between(self.name(), &id);
        let mut victim: Option<(usize, Rank)> = None;
        for (i, c) in self.cands.iter().enumerate() {
            let rank = match c {
                None => (true, Distance::MAX),
                Some(c) if c.state == State::Failed => (true, Distance::default()),
                Some(c) if matches!(c.state, State::New | State::Answered) => match c.id {
                    Some(cid) => (false, Distance::between(self.name(), &cid)),
                    None => continue,
                },
                Some(_) => continue,
            };
            if victim.is_none_or(|(_, v)| rank > v) {
                victim = Some((i, rank));
            }
        }
        let Some((i, (free, far))) = victim else {
            return;
        };
        if free || key < far {
            if let Some(slot) = self.cands.get_mut(i) {
                *slot = Some(Candidate {
                    id: Some(id),
                    addr,
                    state: State::New,
                    deadline: Instant::from_millis(0),
                    token: None,
                });
            }
        }
    }

    /// When [`Announcer::handle_timeout`] is next due: the earliest deadline of a query in
    /// flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cands
            .iter()
            .flatten()
            .filter(|c| matches!(c.state, State::Asked | State::Announcing))
            .map(|c| c.deadline)
            .min()
    }

    /// Gives up the queries whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        for c in self.cands.iter_mut().flatten() {
            if matches!(c.state, State::Asked | State::Announcing) && c.deadline <= now {
                c.state = State::Failed;
            }
        }
        self.advance();
    }

    /// The service name of the current (or last) round.
    pub fn service(&self) -> &[u8] {
        self.name()
    }
}

/// The byte string under `key` in `d`.
fn field<'a>(d: Dict<'a>, key: &[u8]) -> Option<&'a [u8]> {
    d.get(key).and_then(|v| v.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::Target;
    use crate::dht::node::{Node, NodeConfig};
    use crate::rng::SplitMix64;
    use crate::wire::krpc::{Message, Query};
    use std::format;
    use std::vec::Vec;

    type Grape = Node<SplitMix64, 64, 8, 32, 0, 4, 40, 32, 0, 0, 8>;

    fn addr(i: usize) -> PeerAddr {
        PeerAddr::new([10, 0, 0, u8::try_from(i + 1).unwrap()], 20001)
    }
    const BOARD: PeerAddr = PeerAddr::new([10, 0, 1, 9], 20002);

    /// `n` grapes bootstrapped from grape 0, a board, and a clock: datagrams are delivered at
    /// once, to grapes that are not `down`.
    struct Net {
        now: Instant,
        grapes: Vec<Grape>,
        down: Vec<bool>,
        board: Announcer<8>,
        rng: SplitMix64,
    }

    impl Net {
        fn new(n: usize, seed: u64) -> Net {
            let now = Instant::from_millis(1_000);
            let grapes = (0..n)
                .map(|i| Grape::new(SplitMix64::new(seed + i as u64), NodeConfig::DEFAULT, now))
                .collect();
            let mut rng = SplitMix64::new(seed ^ 0xb0a4d);
            let board = Announcer::new(&mut rng);
            let mut net = Net {
                now,
                grapes,
                down: std::vec![false; n],
                board,
                rng,
            };
            for i in 0..n {
                for j in 0..n.min(2) {
                    if i != j {
                        net.grapes[i].add_bootstrap(addr(j));
                    }
                }
                let _ = net.grapes[i].start_bootstrap(net.now);
            }
            net.settle();
            // Grapes enter each other's tables only once they answered a query, and this
            // harness hands a grape every query of a round before it may send its pings
            // (whose queue holds 8): more rounds let the grapes started together learn each
            // other, as later lookups and announces would.
            for _ in 0..2 {
                for g in &mut net.grapes {
                    let _ = g.start_bootstrap(net.now);
                }
                net.settle();
            }
            net
        }

        fn deliver(&mut self, from: PeerAddr, to: PeerAddr, bytes: &[u8]) -> Option<Vec<u8>> {
            let g = (0..self.grapes.len()).find(|&g| addr(g) == to)?;
            if self.down[g] {
                return None;
            }
            let mut out = [0u8; 1500];
            let n = self.grapes[g].handle_datagram(self.now, from, bytes, &mut out)?;
            Some(out[..n].to_vec())
        }

        /// Runs grapes and board until nothing moves, advancing time to the next deadline.
        fn settle(&mut self) {
            for _ in 0..10_000 {
                let mut moved = false;
                let mut buf = [0u8; 1500];
                for g in 0..self.grapes.len() {
                    while let Some(tx) = self.grapes[g].poll_transmit(self.now, &mut buf) {
                        moved = true;
                        let bytes = buf[..tx.len].to_vec();
                        if self.down[g] {
                            continue;
                        }
                        let answer = if tx.to == BOARD {
                            let mut out = [0u8; 512];
                            self.board
                                .handle_datagram(addr(g), &bytes, &mut out)
                                .map(|n| out[..n].to_vec())
                        } else {
                            self.deliver(addr(g), tx.to, &bytes)
                        };
                        if let Some(a) = answer {
                            let _ = self.grapes[g].handle_datagram(
                                self.now,
                                tx.to,
                                &a,
                                &mut [0u8; 1500],
                            );
                        }
                    }
                    while self.grapes[g].poll_event().is_some() {}
                }
                while let Some(tx) = self.board.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let bytes = buf[..tx.len].to_vec();
                    if let Some(a) = self.deliver(BOARD, tx.to, &bytes) {
                        assert_eq!(self.board.handle_datagram(tx.to, &a, &mut buf), None);
                    }
                }
                if !moved {
                    let next = self
                        .grapes
                        .iter()
                        .filter_map(|g| g.poll_timeout())
                        .chain(self.board.poll_timeout())
                        .min();
                    match next {
                        Some(t)
                            if t.saturating_duration_since(self.now) < Duration::from_secs(3) =>
                        {
                            self.now = t.max(self.now);
                            for g in &mut self.grapes {
                                g.handle_timeout(self.now);
                            }
                            self.board.handle_timeout(self.now);
                        }
                        _ => return,
                    }
                }
            }
            panic!("the network does not settle");
        }

        fn announce(&mut self, name: &[u8], seeds: &[PeerAddr]) -> Option<usize> {
            self.board.start(&mut self.rng, name, 1337, seeds).unwrap();
            self.settle();
            self.board.poll_done()
        }

        fn stored_on(&self, name: &[u8]) -> usize {
            let me = PeerAddr::new(BOARD.ip, 1337);
            (0..self.grapes.len())
                .filter(|&g| !self.down[g])
                .filter(|&g| {
                    self.grapes[g]
                        .store()
                        .peers(self.now, name)
                        .any(|p| p == me)
                })
                .count()
        }
    }

    #[test]
    fn announces_to_the_bootstrap_grapes() {
        let mut net = Net::new(2, 1);
        let acks = net.announce(b"fibonacci_worker", &[addr(0), addr(1)]);
        assert_eq!(acks, Some(2));
        assert_eq!(net.stored_on(b"fibonacci_worker"), 2);
        assert!(!net.board.is_running());
        assert_eq!(net.board.poll_done(), None);
    }

    #[test]
    fn traverses_to_the_closest_nodes_from_one_seed() {
        let mut net = Net::new(30, 2);
        let acks = net.announce(b"rest:util:net", &[addr(0)]).unwrap();
        assert!(acks >= 6, "{acks} acks");
        assert_eq!(net.stored_on(b"rest:util:net"), acks);
        // The nodes that stored it are the closest of the network to the name.
        let target = Target::new(b"rest:util:net");
        let mut keys: Vec<_> = net.grapes.iter().map(|g| target.key(g.id())).collect();
        keys.sort();
        let me = PeerAddr::new(BOARD.ip, 1337);
        for g in &net.grapes {
            if g.store().peers(net.now, b"rest:util:net").any(|p| p == me) {
                assert!(
                    target.key(g.id()) <= keys[12],
                    "a far node took the announce"
                );
            }
        }
    }

    #[test]
    fn a_restarted_grape_stores_the_board_again_next_round() {
        let mut net = Net::new(2, 3);
        assert_eq!(net.announce(b"svc", &[addr(0), addr(1)]), Some(2));
        // Grape 1 restarts: new id, empty store.
        net.grapes[1] = Grape::new(SplitMix64::new(99), NodeConfig::DEFAULT, net.now);
        assert_eq!(net.stored_on(b"svc"), 1);
        assert_eq!(net.announce(b"svc", &[addr(0), addr(1)]), Some(2));
        assert_eq!(net.stored_on(b"svc"), 2);
    }

    #[test]
    fn a_dead_grape_fails_the_round_only_for_itself() {
        let mut net = Net::new(2, 4);
        net.down[1] = true;
        let t0 = net.now;
        assert_eq!(net.announce(b"svc", &[addr(0), addr(1)]), Some(1));
        assert!(net.now.saturating_duration_since(t0) <= QUERY_TIMEOUT * 2);
        net.down[0] = true;
        assert_eq!(net.announce(b"svc", &[addr(0), addr(1)]), Some(0));
    }

    #[test]
    fn start_checks_its_arguments() {
        let mut rng = SplitMix64::new(5);
        let mut a: Announcer<4> = Announcer::new(&mut rng);
        let seeds = [addr(0)];
        assert_eq!(
            a.start(&mut rng, b"svc", 0, &seeds),
            Err(StartError::BadPort)
        );
        assert_eq!(a.start(&mut rng, b"svc", 1, &[]), Err(StartError::NoNodes));
        assert_eq!(a.start(&mut rng, b"", 1, &seeds), Err(StartError::BadName));
        let long = [b'x'; MAX_TARGET_LEN + 1];
        assert_eq!(
            a.start(&mut rng, &long, 1, &seeds),
            Err(StartError::BadName)
        );
        assert_eq!(a.start(&mut rng, b"svc", 1, &seeds), Ok(()));
        assert!(a.is_running());
        assert_eq!(a.service(), b"svc");
    }

    #[test]
    fn answers_pings_and_ignores_forged_answers() {
        let mut rng = SplitMix64::new(6);
        let mut a: Announcer<4> = Announcer::new(&mut rng);
        let mut out = [0u8; 256];
        let ping = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:t2:xy1:y1:qe";
        let n = a.handle_datagram(addr(0), ping, &mut out).unwrap();
        let mut want = b"d1:rd2:id20:".to_vec();
        want.extend_from_slice(a.id().as_bytes());
        want.extend_from_slice(b"e1:t2:xy1:y1:re");
        assert_eq!(&out[..n], &want[..]);
        let announce = b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaa9:info_hash3:svc4:porti1e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe";
        assert_eq!(a.handle_datagram(addr(0), announce, &mut out), None);
        a.start(&mut rng, b"svc", 1337, &[addr(0)]).unwrap();
        let tx = a.poll_transmit(Instant::from_millis(0), &mut out).unwrap();
        assert_eq!(tx.to, addr(0));
        let sent = krpc::parse(&out[..tx.len]).unwrap();
        let t = sent.t().to_vec();
        let mut answer = b"d1:rd2:id20:bbbbbbbbbbbbbbbbbbbb5:token2:tke1:t".to_vec();
        answer.extend_from_slice(format!("{}:", t.len()).as_bytes());
        answer.extend_from_slice(&t);
        answer.extend_from_slice(b"1:y1:re");
        // From another address, even the same IP on another port: ignored.
        assert_eq!(a.handle_datagram(addr(1), &answer, &mut out), None);
        let same_ip = PeerAddr::new(addr(0).ip, addr(0).port + 1);
        assert_eq!(a.handle_datagram(same_ip, &answer, &mut out), None);
        assert_eq!(a.poll_transmit(Instant::from_millis(0), &mut out), None);
        assert!(a.poll_timeout().is_some());
        // The real answer moves the round on to the announce.
        let _ = a.handle_datagram(addr(0), &answer, &mut out);
        let tx = a.poll_transmit(Instant::from_millis(0), &mut out).unwrap();
        match krpc::parse(&out[..tx.len]).unwrap() {
            Message::Query {
                query: Query::AnnouncePeer(an),
                ..
            } => {
                assert_eq!(an.token, Some(&b"tk"[..]));
                assert_eq!(an.port, Some(1337));
            }
            other => panic!("{other:?}"),
        }
        a.handle_timeout(Instant::from_millis(5_000));
        assert_eq!(a.poll_done(), Some(0));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut rng = SplitMix64::new(7);
            let mut a: Announcer<4> = Announcer::new(&mut rng);
            a.start(&mut rng, b"svc", 1, &[addr(0)]).unwrap();
            let mut out = [0u8; 256];
            let _ = a.poll_transmit(Instant::from_millis(0), &mut out);
            let _ = a.handle_datagram(addr(0), &bytes, &mut out);
            let _ = a.poll_transmit(Instant::from_millis(0), &mut out);
        }
    }
}
