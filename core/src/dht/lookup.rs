//! The iterative Kademlia lookup (get_peers / get / find_node traversal) as a pure state
//! machine.
//!
//! A [`Lookup`] holds up to `N` candidates sorted by exact XOR distance to the target
//! ([`crate::dht::id`]). The caller drives it with the current time and never the other way round:
//!
//! ```text
//!   loop {
//!       match lookup.poll(now) {
//!           LookupAction::Query { to, id } => send a query to `to` (get_peers, get, find_node),
//!           LookupAction::Wait(deadline)   => wait for an answer or the deadline,
//!           LookupAction::Finished         => read closest_responded(), stop,
//!       }
//!   }
//!   on an answer:  lookup.on_response(now, to, r.id, r.nodes, r.token)
//!   on an error:   lookup.on_failure(now, to)
//! ```
//!
//! Responses are matched by the address the query was sent to (each address is queried at
//! most once per lookup), so the caller passes back `to` from its transaction table, not the
//! datagram's source port (k-rpc-socket only checks the source IP, `sock:87-92`).
//!
//! # Algorithm
//!
//! Candidates are `NotContacted`, `Waiting` (query in flight), `Stalled` (in flight for longer
//! than [`LookupConfig::stall_timeout`]), `Succeeded` or `Failed`. At every [`Lookup::poll`]:
//!
//! 1. In-flight queries older than `stall_timeout` become `Stalled`: they no longer count
//!    against [`LookupConfig::concurrency`] and no longer count as "one of the k closest", but
//!    an answer from them is still used. After [`LookupConfig::query_timeout`] they are
//!    `Failed` for good.
//! 2. The *window* is the `k` closest candidates that are not `Stalled` or `Failed`. The lookup
//!    is finished when every node of the window has answered. So a dead node costs
//!    `stall_timeout`, not `query_timeout`: once it stalls, the next candidates slide into the
//!    window and are queried, and as soon as the `k` closest live nodes have answered the
//!    lookup ends without waiting for it. One exception: while *nothing* has answered (empty
//!    window), stalled queries are waited for up to `query_timeout`, so that a single slow
//!    bootstrap node is not given up after `stall_timeout`.
//!
//!    The price: a node slower than `stall_timeout` that is among the k closest may be
//!    missed (its late answer is used only if the lookup is still running). So the stall
//!    timeout shrinks to the round trips the lookup measures ([`LookupConfig::adaptive_stall`],
//!    TCP's RTO `srtt + 4·rttvar`, at least [`MIN_STALL_TIMEOUT`]), with
//!    [`LookupConfig::stall_timeout`] (250 ms) as the starting value and the ceiling. A dead
//!    contact then costs a few round trips in a data centre, not 250 ms.
//! 3. Otherwise the closest `NotContacted` node of the window is queried if fewer than
//!    `concurrency` queries are in flight; else the caller waits until the next deadline.
//!
//! This is the termination rule of rust-libp2p's `ClosestPeersIter` plus a hard timeout.
//!
//! # Differences from the Node traversal (docs/protocol.md §6.7, `krpc:193-295`)
//!
//! * **Dead nodes**: Node waits for every query it sent (2–2.5 s for each dead node,
//!   docs/protocol.md §13.17); here a stalled query stops holding the lookup (see above). With
//!   `stall_timeout == query_timeout` the behaviour is Node's.
//! * **Concurrency**: Node's 16 in-flight queries are shared by every traversal of the socket;
//!   here `concurrency` is per lookup (the node can bound the total by how many lookups it
//!   runs at once).
//! * **Distance**: exact order instead of float64 (docs/protocol.md §13.8, see [`crate::dht::id`]).
//! * **Bounded memory**: Node's traversal table is a k-bucket tree centred on the target that
//!   keeps growing; here at most `N` candidates are kept. When full, a newcomer replaces the
//!   farthest candidate that is neither in flight nor queried-and-among-the-k-closest-answers,
//!   if it is closer than that one; otherwise it is dropped. This never causes an address to
//!   be queried twice. `N ≥ 2·k + concurrency` (e.g. 64) leaves room for in-flight, stalled
//!   and failed nodes; with a smaller `N` the lookup still ends, with less precise results.
//! * **Seeds**: the caller passes the seeds once ([`Lookup::new`]): typically the `k` closest
//!   of its routing table and the bootstrap addresses, which may have no id. Seeds without an
//!   id sort after every node with an id, so they are queried only while fewer than `k` live
//!   nodes with an id are known; this matches Node using its bootstrap list only when the
//!   tables are short. Node queries the bootstrap list "once per traversal"; here every
//!   address (seed or not) is queried at most once.
//! * **Pinned candidates** ([`Lookup::pin`]): a node pins its bootstrap addresses, the grapes
//!   its operator trusts. They are queried in every lookup, wherever their ids are, and kept
//!   as announce targets, so that a cluster of made-up ids next to a name (an eclipse) cannot
//!   keep a lookup or an announce away from them.
//! * **Identity**: a node's address is bound to the first id seen for it. An answer carrying
//!   another id than the one we queried fails that node ([`ResponseOutcome::UnexpectedId`],
//!   Node's `EUNEXPECTEDNODE`). Our own id is never a candidate (`krpc:291-294`).
//! * **Announce targets**: [`Lookup::closest_responded`] gives the `k` closest nodes that answered
//!   with a token (and, by construction, a 20-byte id, docs/protocol.md §6.6). Node announces to
//!   *every* token-bearing node of its traversal table (docs/protocol.md §13.9);
//!   [`Lookup::responded`] gives all of them (up to `N`) for a node that wants Node's behaviour.

use core::cmp::Ordering;

use crate::addr::PeerAddr;
use crate::dht::id::{NodeId, Target};
use crate::time::{Duration, Instant};

/// Longest target (service name used as info_hash, or a 20-byte id) a lookup accepts. Grape
/// service names are short; the bound keeps the target inline.
pub const MAX_TARGET_LEN: usize = 128;

/// Longest token kept for a responder. bittorrent-dht's tokens are 20 bytes (SHA-1); a longer
/// token is not stored, and that node is then not an announce/put target.
pub const MAX_TOKEN_LEN: usize = 20;

/// Tuning of a [`Lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LookupConfig {
    /// How many closest nodes must answer (K = 20, `krpc:7`). Values below 1 count as 1.
    pub k: usize,
    /// Queries in flight at once, not counting stalled ones (16, `krpc:8,27`,
    /// docs/protocol.md §13.2). Values below 1 count as 1.
    pub concurrency: usize,
    /// A query not answered after this is failed (2 s, `sock:22`).
    pub query_timeout: Duration,
    /// A query not answered after this stops counting against `concurrency` and stops
    /// holding the lookup (see the module docs). With `adaptive_stall`, this is the value
    /// until the lookup has measured its first round trip.
    pub stall_timeout: Duration,
    /// Whether the stall timeout shrinks to the round trips this lookup measures, with TCP's
    /// retransmission timeout (RFC 6298: `srtt + 4·rttvar`), at least [`MIN_STALL_TIMEOUT`]
    /// and at most `stall_timeout`. A fixed 250 ms makes a dead contact cost a hundred round
    /// trips in a data centre: grenache-sim found lookups under churn there taking 250–750 ms
    /// (docs/SCALE.md). `stall_timeout` stays the ceiling because on a WAN a longer stall was
    /// slower and no cheaper: a stalled query is not lost, only no longer waited for.
    pub adaptive_stall: bool,
}

/// The least stall timeout [`LookupConfig::adaptive_stall`] sets: a busy host's scheduling
/// delay, well above a data centre's round trip, so that a live node answering a few
/// milliseconds late is not stalled on every lookup.
pub const MIN_STALL_TIMEOUT: Duration = Duration::from_millis(20);

impl LookupConfig {
    /// Node's values, plus a stall timeout that starts at 250 ms and then follows the
    /// measured round trips.
    pub const DEFAULT: LookupConfig = LookupConfig {
        k: 20,
        concurrency: 16,
        query_timeout: Duration::from_secs(2),
        stall_timeout: Duration::from_millis(250),
        adaptive_stall: true,
    };
}

impl Default for LookupConfig {
    fn default() -> Self {
        LookupConfig::DEFAULT
    }
}

/// Why a lookup could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LookupError {
    /// The target is longer than [`MAX_TARGET_LEN`].
    TargetTooLong,
}

impl core::fmt::Display for LookupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LookupError::TargetTooLong => f.write_str("lookup target too long"),
        }
    }
}

impl core::error::Error for LookupError {}

/// An opaque write token returned by a responder (≤ [`MAX_TOKEN_LEN`] bytes), stored inline.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Token {
    /// A `u8` length: a token is at most [`MAX_TOKEN_LEN`] bytes, and a lookup holds one per
    /// candidate.
    bytes: heapless::Vec<u8, MAX_TOKEN_LEN, u8>,
}

impl Token {
    /// The token `b`, if it fits.
    pub fn new(b: &[u8]) -> Option<Token> {
        heapless::Vec::from_slice(b)
            .ok()
            .map(|bytes| Token { bytes })
    }

    /// The token's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl core::fmt::Debug for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// What the caller should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LookupAction {
    /// Send the lookup's query to `to`. `id` is the node id we expect in the answer (`None`
    /// for a bootstrap address). Call [`Lookup::poll`] again: more queries may follow.
    Query {
        /// Where to send it.
        to: PeerAddr,
        /// The expected responder id, if known.
        id: Option<NodeId>,
    },
    /// Nothing to send: call [`Lookup::poll`] again at this instant or when an answer or a
    /// failure has been fed in, whichever comes first.
    Wait(Instant),
    /// Done: read [`Lookup::closest_responded`].
    Finished,
}

/// What [`Lookup::on_response`] made of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ResponseOutcome {
    /// Used: the responder counts as answered and its nodes were added.
    Accepted,
    /// The answer carries another id than the one the node was queried as (or ours): the node
    /// is failed (Node's `EUNEXPECTEDNODE`; the routing table should drop it).
    UnexpectedId,
    /// Not an outstanding query of this lookup (unknown address, already answered, timed
    /// out, or the lookup is finished): nothing changed.
    Ignored,
}

/// The state of one candidate, as [`Lookup::candidates`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CandidateState {
    /// Known, not queried.
    NotContacted,
    /// Query in flight since the given instant, counted against the concurrency.
    Waiting(Instant),
    /// Query in flight since the given instant, older than the stall timeout.
    Stalled(Instant),
    /// Answered.
    Succeeded,
    /// Timed out, errored, answered with an unexpected id, or duplicated another node.
    Failed,
}

/// A node that answered the lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Responder<'a> {
    /// Its id (from the answer).
    pub id: NodeId,
    /// The address it was queried at.
    pub addr: PeerAddr,
    /// The token it returned, if any.
    pub token: Option<&'a [u8]>,
}

#[derive(Clone, Debug)]
struct Candidate {
    id: Option<NodeId>,
    /// Distance of `id` to the target ([`Target::key`]; meaningless without an id).
    dist: (u128, u32),
    addr: PeerAddr,
    state: CandidateState,
    token: Option<Token>,
    /// Queried whatever its distance, and never dropped ([`Lookup::pin`]).
    pinned: bool,
}

impl Candidate {
    const EMPTY: Candidate = Candidate {
        id: None,
        dist: (u128::MAX, u32::MAX),
        addr: PeerAddr::new([0; 4], 0),
        state: CandidateState::NotContacted,
        token: None,
        pinned: false,
    };

    fn in_flight(&self) -> bool {
        matches!(
            self.state,
            CandidateState::Waiting(_) | CandidateState::Stalled(_)
        )
    }
}

/// Closest first; nodes without an id last, in insertion order; ties by id bytes.
fn order(a: &Candidate, b: &Candidate) -> Ordering {
    match (&a.id, &b.id) {
        (Some(x), Some(y)) => a.dist.cmp(&b.dist).then_with(|| x.0.cmp(&y.0)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// An iterative lookup over at most `N` candidates. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Lookup<const N: usize> {
    own: NodeId,
    target: heapless::Vec<u8, MAX_TARGET_LEN>,
    /// `target` prepared for distance computations.
    metric: Target,
    config: LookupConfig,
    started: Instant,
    finished: bool,
    queries: usize,
    /// Round-trip estimate of this lookup's answers (RFC 6298's SRTT and RTTVAR, ms); `None`
    /// before the first answer.
    rtt: Option<(u32, u32)>,
    /// Sorted by [`order`]; unique ids and unique addresses.
    candidates: heapless::Vec<Candidate, N>,
}

impl<const N: usize> Lookup<N> {
    /// A lookup of `target` (a raw service name or a 20-byte id) by the node `own`, seeded
    /// with `seeds` (id if known, address; duplicates are merged, at most `N` kept).
    pub fn new(
        own: NodeId,
        target: &[u8],
        seeds: impl IntoIterator<Item = (Option<NodeId>, PeerAddr)>,
        config: LookupConfig,
        now: Instant,
    ) -> Result<Self, LookupError> {
        let mut l = Lookup {
            own,
            target: heapless::Vec::new(),
            metric: Target::new(&[]),
            config,
            started: now,
            finished: false,
            queries: 0,
            rtt: None,
            candidates: heapless::Vec::new(),
        };
        l.restart(target, seeds, now)?;
        Ok(l)
    }

    /// A finished lookup with no target and no candidates: a placeholder for a slot that a
    /// node reuses with [`Lookup::restart`] (so that no large value is moved).
    pub fn idle(own: NodeId, config: LookupConfig, now: Instant) -> Self {
        Lookup {
            own,
            target: heapless::Vec::new(),
            metric: Target::new(&[]),
            config,
            started: now,
            finished: true,
            queries: 0,
            rtt: None,
            candidates: heapless::Vec::new(),
        }
    }

    /// Starts over in place with a new target and seeds, keeping the id and configuration
    /// (saves moving a large value on small stacks). On error the lookup is left finished and
    /// empty.
    pub fn restart(
        &mut self,
        target: &[u8],
        seeds: impl IntoIterator<Item = (Option<NodeId>, PeerAddr)>,
        now: Instant,
    ) -> Result<(), LookupError> {
        self.candidates.clear();
        self.queries = 0;
        self.rtt = None;
        self.started = now;
        self.target.clear();
        if self.target.extend_from_slice(target).is_err() {
            self.finished = true;
            return Err(LookupError::TargetTooLong);
        }
        self.metric = Target::new(target);
        self.finished = false;
        for (id, addr) in seeds {
            match id {
                Some(id) => self.add_node(id, addr),
                None => self.add_idless(addr),
            }
        }
        Ok(())
    }

    /// Pins the candidate at `addr`, adding it without an id if it is not one: it is queried
    /// even when it is not among the `k` closest, the lookup waits for its answer (until it
    /// stalls), and it is never dropped to make room, so it is among the
    /// [`responded`](Self::responded) nodes if it answers. A node pins its bootstrap nodes
    /// (the operator's trusted grapes), so that ids crowding the target from elsewhere cannot
    /// hide what they hold. Call it after [`restart`](Self::restart); `false` if all `N`
    /// candidates are pinned or in flight.
    pub fn pin(&mut self, addr: PeerAddr) -> bool {
        if !self.live().iter().any(|c| c.addr == addr) {
            if self.candidates.is_full() {
                let Some(v) = self
                    .live()
                    .iter()
                    .rposition(|c| !c.pinned && !c.in_flight())
                else {
                    return false;
                };
                self.remove_at(v);
            }
            self.insert_sorted(Candidate {
                addr,
                ..Candidate::EMPTY
            });
        }
        match self.live_mut().iter_mut().find(|c| c.addr == addr) {
            Some(c) => {
                c.pinned = true;
                true
            }
            None => false,
        }
    }

    /// The target.
    pub fn target(&self) -> &[u8] {
        &self.target
    }

    /// The configuration.
    pub fn config(&self) -> &LookupConfig {
        &self.config
    }

    /// When the lookup was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether [`poll`](Self::poll) has returned [`LookupAction::Finished`].
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Number of candidates held (≤ `N`).
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// No candidate at all.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// Queries sent so far.
    pub fn queries_sent(&self) -> usize {
        self.queries
    }

    /// Queries in flight that count against the concurrency (not stalled).
    pub fn in_flight(&self) -> usize {
        self.live()
            .iter()
            .filter(|c| matches!(c.state, CandidateState::Waiting(_)))
            .count()
    }

    /// Queries in flight, stalled or not.
    pub fn outstanding(&self) -> usize {
        self.live().iter().filter(|c| c.in_flight()).count()
    }

    /// Every candidate, closest first: (id if known, address, state).
    pub fn candidates(
        &self,
    ) -> impl Iterator<Item = (Option<NodeId>, PeerAddr, CandidateState)> + '_ {
        self.live().iter().map(|c| (c.id, c.addr, c.state))
    }

    /// Every node that answered, closest first, with its token if any (up to `N`).
    pub fn responded(&self) -> impl Iterator<Item = Responder<'_>> + '_ {
        self.live().iter().filter_map(|c| match (c.state, c.id) {
            (CandidateState::Succeeded, Some(id)) => Some(Responder {
                id,
                addr: c.addr,
                token: c.token.as_ref().map(Token::as_bytes),
            }),
            _ => None,
        })
    }

    /// The announce / put targets: the `k` closest nodes that answered with a token
    /// (docs/protocol.md §4.2, §6.6), closest first. `token` is always `Some`.
    pub fn closest_responded(&self) -> impl Iterator<Item = Responder<'_>> + '_ {
        self.responded()
            .filter(|r| r.token.is_some())
            .take(self.k())
    }

    /// The next instant at which [`poll`](Self::poll) has something to do on its own (a
    /// query stalls or times out); `None` when finished or nothing is in flight.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.live()
            .iter()
            .filter_map(|c| match c.state {
                CandidateState::Waiting(sent) => Some(sent.saturating_add(self.stall_timeout())),
                CandidateState::Stalled(sent) => {
                    Some(sent.saturating_add(self.config.query_timeout))
                }
                _ => None,
            })
            .min()
    }

    /// Advances the lookup to `now` and says what to do next.
    #[must_use]
    pub fn poll(&mut self, now: Instant) -> LookupAction {
        if self.finished {
            return LookupAction::Finished;
        }
        self.expire(now);
        let k = self.k();
        let mut rank = 0;
        let mut done = true;
        let mut next = None;
        let mut stalled = false;
        for (i, c) in self.live().iter().enumerate() {
            match c.state {
                CandidateState::Stalled(_) => {
                    stalled = true;
                    continue;
                }
                CandidateState::Failed => continue,
                CandidateState::Succeeded => {}
                CandidateState::Waiting(_) => done = false,
                CandidateState::NotContacted => {
                    done = false;
                    if next.is_none() {
                        next = Some(i);
                    }
                }
            }
            rank += 1;
            if rank >= k {
                break;
            }
        }
        // Pinned candidates are queried and waited for (until they stall) wherever they are.
        for (i, c) in self.live().iter().enumerate().filter(|(_, c)| c.pinned) {
            match c.state {
                CandidateState::NotContacted => {
                    done = false;
                    next.get_or_insert(i);
                }
                CandidateState::Waiting(_) => done = false,
                _ => {}
            }
        }
        if !stalled {
            stalled = self
                .live()
                .iter()
                .any(|c| matches!(c.state, CandidateState::Stalled(_)));
        }
        if done && (rank > 0 || !stalled) {
            self.finished = true;
            return LookupAction::Finished;
        }
        if self.in_flight() < self.config.concurrency.max(1) {
            if let Some(c) = next.and_then(|i| self.candidates.get_mut(i)) {
                c.state = CandidateState::Waiting(now);
                self.queries = self.queries.saturating_add(1);
                return LookupAction::Query {
                    to: c.addr,
                    id: c.id,
                };
            }
        }
        match self.poll_timeout() {
            Some(t) => LookupAction::Wait(t),
            // Unreachable by the rules above (something in flight whenever we wait); finishing
            // is the safe answer should it ever happen.
            None => {
                self.finished = true;
                LookupAction::Finished
            }
        }
    }

    /// Feeds the answer to the query sent to `from`: the responder's id, the nodes it returned
    /// (compact `nodes`, closest or not, any number) and its token.
    #[must_use]
    pub fn on_response(
        &mut self,
        now: Instant,
        from: PeerAddr,
        id: NodeId,
        closer: impl IntoIterator<Item = (NodeId, PeerAddr)>,
        token: Option<&[u8]>,
    ) -> ResponseOutcome {
        if self.finished {
            return ResponseOutcome::Ignored;
        }
        self.expire(now);
        let Some(i) = self.live().iter().position(|c| c.addr == from) else {
            return ResponseOutcome::Ignored;
        };
        let Some(c) = self.candidates.get_mut(i) else {
            return ResponseOutcome::Ignored;
        };
        let sent = match c.state {
            CandidateState::Waiting(sent) | CandidateState::Stalled(sent) => sent,
            _ => return ResponseOutcome::Ignored,
        };
        if id == self.own || c.id.is_some_and(|known| known != id) {
            c.state = CandidateState::Failed;
            return ResponseOutcome::UnexpectedId;
        }
        let token = token.and_then(Token::new);
        self.measure(now.saturating_duration_since(sent));
        let Some(c) = self.candidates.get_mut(i) else {
            return ResponseOutcome::Ignored;
        };
        if c.id.is_some() {
            c.state = CandidateState::Succeeded;
            c.token = token;
        } else {
            self.identify(i, id, token);
        }
        for (nid, naddr) in closer {
            self.add_node(nid, naddr);
        }
        ResponseOutcome::Accepted
    }

    /// Feeds a failed query to `from` (KRPC error, send failure, the caller's own timeout).
    /// `false` if no query to `from` was outstanding.
    pub fn on_failure(&mut self, now: Instant, from: PeerAddr) -> bool {
        if self.finished {
            return false;
        }
        self.expire(now);
        match self
            .live_mut()
            .iter_mut()
            .find(|c| c.addr == from && c.in_flight())
        {
            Some(c) => {
                c.state = CandidateState::Failed;
                true
            }
            None => false,
        }
    }

    fn k(&self) -> usize {
        self.config.k.max(1)
    }

    /// The stall timeout now: the configured one, or with
    /// [`LookupConfig::adaptive_stall`] and a measured round trip, `srtt + 4·rttvar` within
    /// [`MIN_STALL_TIMEOUT`]..=`stall_timeout` (and never above `query_timeout`).
    pub fn stall_timeout(&self) -> Duration {
        let ceiling = self.config.stall_timeout.min(self.config.query_timeout);
        match (self.config.adaptive_stall, self.rtt) {
            (true, Some((srtt, rttvar))) => {
                let rto = Duration::from_millis(u64::from(srtt) + 4 * u64::from(rttvar));
                rto.max(MIN_STALL_TIMEOUT).min(ceiling)
            }
            _ => ceiling,
        }
    }

    /// Feeds one round trip into the estimate (RFC 6298 §2: gains 1/8 and 1/4).
    fn measure(&mut self, rtt: Duration) {
        let r = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX);
        self.rtt = Some(match self.rtt {
            None => (r, r / 2),
            Some((srtt, rttvar)) => {
                let rttvar = (3 * u64::from(rttvar) + u64::from(srtt.abs_diff(r))) / 4;
                let srtt = (7 * u64::from(srtt) + u64::from(r)) / 8;
                (
                    u32::try_from(srtt).unwrap_or(u32::MAX),
                    u32::try_from(rttvar).unwrap_or(u32::MAX),
                )
            }
        });
    }

    fn live(&self) -> &[Candidate] {
        &self.candidates
    }

    fn live_mut(&mut self) -> &mut [Candidate] {
        &mut self.candidates
    }

    /// Applies the stall and hard timeouts at `now` (both inclusive).
    fn expire(&mut self, now: Instant) {
        let query_timeout = self.config.query_timeout;
        let stall_timeout = self.stall_timeout();
        for c in self.live_mut() {
            c.state = match c.state {
                CandidateState::Waiting(sent) | CandidateState::Stalled(sent)
                    if sent.saturating_add(query_timeout) <= now =>
                {
                    CandidateState::Failed
                }
                CandidateState::Waiting(sent) if sent.saturating_add(stall_timeout) <= now => {
                    CandidateState::Stalled(sent)
                }
                s => s,
            };
        }
    }

    /// Candidate `i` (queried without an id) answered as `id`: record it and move it to its
    /// place. If `id` is already a candidate at another address, the one that did not answer
    /// (or failed) is dropped; if that one is itself in flight or answered, `i` is failed as a
    /// duplicate, so that every id appears once among the responders.
    fn identify(&mut self, i: usize, id: NodeId, token: Option<Token>) {
        let mut i = i;
        if let Some(j) = self.live().iter().position(|c| c.id == Some(id)) {
            let other = self.live().get(j).map(|c| c.state);
            // A pinned (trusted) address keeps its id against any other address an answer
            // named for it: otherwise a Sybil could list a bootstrap node's id at its own
            // address and have the real one failed as a duplicate.
            let pinned = self.live().get(i).is_some_and(|c| c.pinned)
                && self.live().get(j).is_some_and(|c| !c.pinned);
            match other {
                _ if pinned => {
                    self.remove_at(j);
                    if j < i {
                        i -= 1;
                    }
                }
                Some(CandidateState::NotContacted | CandidateState::Failed) => {
                    self.remove_at(j);
                    if j < i {
                        i -= 1;
                    }
                }
                _ => {
                    if let Some(c) = self.candidates.get_mut(i) {
                        c.state = CandidateState::Failed;
                    }
                    return;
                }
            }
        }
        let Some(mut c) = self.remove_at(i) else {
            return;
        };
        c.id = Some(id);
        c.dist = self.metric.key(&id);
        c.state = CandidateState::Succeeded;
        c.token = token;
        // Room is guaranteed: one was just removed.
        self.insert_sorted(c);
    }

    /// Adds a node learned from a seed or an answer, unless it is us or already known (by id
    /// or by address). An id-less seed at the same address learns the id.
    fn add_node(&mut self, id: NodeId, addr: PeerAddr) {
        if id == self.own || self.live().iter().any(|c| c.id == Some(id)) {
            return;
        }
        if let Some(j) = self.live().iter().position(|c| c.addr == addr) {
            let learn = self
                .live()
                .get(j)
                // A pinned address learns its id from its own answer only: an id some other
                // node names for it would fail it when it answers with its real one.
                .is_some_and(|c| {
                    c.id.is_none() && c.state == CandidateState::NotContacted && !c.pinned
                });
            if learn {
                if let Some(mut c) = self.remove_at(j) {
                    c.id = Some(id);
                    c.dist = self.metric.key(&id);
                    self.insert_sorted(c);
                }
            }
            return;
        }
        let c = Candidate {
            id: Some(id),
            dist: self.metric.key(&id),
            addr,
            state: CandidateState::NotContacted,
            token: None,
            pinned: false,
        };
        self.insert_bounded(c);
    }

    fn add_idless(&mut self, addr: PeerAddr) {
        if self.live().iter().any(|c| c.addr == addr) {
            return;
        }
        self.insert_bounded(Candidate {
            addr,
            ..Candidate::EMPTY
        });
    }

    /// Inserts `c` in order; when full, it replaces the farthest *evictable* candidate if it
    /// is closer than that one, else it is dropped.
    ///
    /// Evictable: never queried, or queried (answered or failed) and farther than the k-th
    /// node that answered. Such a queried node can never re-enter the window (the k-th answer
    /// only gets closer), so dropping it never leads to querying an address twice; in-flight
    /// nodes and the k closest answers are always kept.
    fn insert_bounded(&mut self, c: Candidate) {
        if self.candidates.is_full() {
            let k = self.k();
            let kth = self
                .live()
                .iter()
                .enumerate()
                .filter(|(_, x)| x.state == CandidateState::Succeeded)
                .nth(k - 1)
                .map(|(i, _)| i);
            let victim = self
                .live()
                .iter()
                .enumerate()
                .rposition(|(i, x)| match x.state {
                    _ if x.pinned => false,
                    CandidateState::NotContacted => true,
                    CandidateState::Succeeded | CandidateState::Failed => {
                        kth.is_some_and(|p| i > p)
                    }
                    CandidateState::Waiting(_) | CandidateState::Stalled(_) => false,
                });
            match victim {
                Some(v) if self.live().get(v).is_some_and(|x| order(&c, x).is_lt()) => {
                    self.remove_at(v);
                }
                _ => return,
            }
        }
        self.insert_sorted(c);
    }

    /// Inserts `c` after every candidate that does not sort after it; no-op when full.
    fn insert_sorted(&mut self, c: Candidate) {
        let pos = self.live().partition_point(|x| order(x, &c).is_le());
        // `pos <= len` by construction; a full lookup drops `c`, as documented.
        let _ = self.candidates.insert(pos, c);
    }

    fn remove_at(&mut self, i: usize) -> Option<Candidate> {
        // `Vec::remove` asserts `i < len`: check it here so a stale index is a `None`.
        (i < self.candidates.len()).then(|| self.candidates.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::{cmp_distance, ID_LEN};
    use crate::dht::table::{Entry, RoutingTable, K};
    use crate::rng::{Rng, SplitMix64};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn addr(n: usize) -> PeerAddr {
        let b = u32::try_from(n).unwrap().to_be_bytes();
        PeerAddr::new([10, b[1], b[2], b[3]], 20000)
    }

    const OWN: NodeId = NodeId([0xee; ID_LEN]);

    /// One simulated grape: an id, a converged routing table, a round-trip time, alive or not.
    struct SimNode {
        id: NodeId,
        table: RoutingTable<128>,
        rtt: u64,
        alive: bool,
    }

    /// A network of `n` nodes at addresses `addr(0..n)`, each knowing every other one as far
    /// as its K-buckets allow (a converged Kademlia network).
    struct Net {
        nodes: Vec<SimNode>,
        by_addr: BTreeMap<PeerAddr, usize>,
        /// Nodes per answer: K like BEP 5 implementations, or the whole table like
        /// bittorrent-dht (docs/protocol.md §13.6).
        answer: usize,
    }

    impl Net {
        fn new(seed: u64, n: usize) -> Net {
            let mut rng = SplitMix64::new(seed);
            let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut rng)).collect();
            let mut nodes = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let mut table = RoutingTable::new(*id);
                // Insert the others in a node-specific random order.
                let mut order: Vec<usize> = (0..n).filter(|j| *j != i).collect();
                for x in (1..order.len()).rev() {
                    let y = rng.below(u32::try_from(x + 1).unwrap()) as usize;
                    order.swap(x, y);
                }
                for j in order {
                    let _ = table.insert(t(0), ids[j], addr(j));
                }
                let rtt = 5 + u64::from(rng.below(40));
                nodes.push(SimNode {
                    id: *id,
                    table,
                    rtt,
                    alive: true,
                });
            }
            let by_addr = (0..n).map(|i| (addr(i), i)).collect();
            Net {
                nodes,
                by_addr,
                answer: K,
            }
        }

        /// The true k closest live nodes to `target`, closest first.
        fn truth(&self, target: &[u8], k: usize) -> Vec<NodeId> {
            let mut v: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|n| n.alive)
                .map(|n| n.id)
                .collect();
            v.sort_by(|a, b| cmp_distance(target, a, b));
            v.truncate(k);
            v
        }

        /// The `i`-th closest node to `target` (alive or not).
        fn rank(&self, target: &[u8], i: usize) -> usize {
            let mut v: Vec<usize> = (0..self.nodes.len()).collect();
            v.sort_by(|a, b| cmp_distance(target, &self.nodes[*a].id, &self.nodes[*b].id));
            v[i]
        }
    }

    #[derive(Debug, Default)]
    struct Run {
        finished_at: u64,
        max_in_flight: usize,
        max_outstanding: usize,
        max_len: usize,
        queried: Vec<PeerAddr>,
    }

    /// Drives `lookup` against `net` with a fake clock until it finishes. Every node answers
    /// with its `net.answer` closest to the target and a token; dead nodes never answer.
    fn drive<const N: usize>(net: &Net, lookup: &mut Lookup<N>) -> Run {
        let mut now = 0u64;
        let mut pending: Vec<(u64, PeerAddr)> = Vec::new();
        let mut run = Run::default();
        let target: Vec<u8> = lookup.target().to_vec();
        loop {
            // Deliver every answer due by now, earliest first.
            pending.sort();
            while let Some(&(due, from)) = pending.first() {
                if due > now {
                    break;
                }
                pending.remove(0);
                let node = &net.nodes[net.by_addr[&from]];
                let mut out = [Entry::EMPTY; 128];
                let n = node.table.closest(&target, &mut out[..net.answer]);
                let closer = out[..n].iter().map(|e| (e.id, e.addr));
                let _ = lookup.on_response(t(now), from, node.id, closer, Some(&[7u8; 20]));
            }
            let action = lookup.poll(t(now));
            run.max_in_flight = run.max_in_flight.max(lookup.in_flight());
            run.max_outstanding = run.max_outstanding.max(lookup.outstanding());
            run.max_len = run.max_len.max(lookup.len());
            assert!(lookup.len() <= N);
            match action {
                LookupAction::Query { to, id } => {
                    assert!(!run.queried.contains(&to), "{to} queried twice");
                    run.queried.push(to);
                    let node = &net.nodes[net.by_addr[&to]];
                    if let Some(id) = id {
                        assert_eq!(id, node.id);
                    }
                    if node.alive {
                        pending.push((now + node.rtt, to));
                    }
                }
                LookupAction::Wait(deadline) => {
                    let deadline = deadline.as_millis();
                    assert!(deadline > now, "wait must be in the future");
                    let next_answer = pending.iter().map(|p| p.0).min().unwrap_or(u64::MAX);
                    now = deadline.min(next_answer);
                }
                LookupAction::Finished => {
                    run.finished_at = now;
                    return run;
                }
            }
        }
    }

    fn seeds_from(net: &Net, from: usize, target: &[u8]) -> Vec<(Option<NodeId>, PeerAddr)> {
        let mut out = [Entry::EMPTY; K];
        let n = net.nodes[from].table.closest(target, &mut out);
        out[..n].iter().map(|e| (Some(e.id), e.addr)).collect()
    }

    fn responded_ids<const N: usize>(l: &Lookup<N>) -> Vec<NodeId> {
        l.closest_responded().map(|r| r.id).collect()
    }

    #[test]
    fn converges_to_the_true_k_closest() {
        let net = Net::new(1, 200);
        let mut rng = SplitMix64::new(99);
        for round in 0..20 {
            // Alternate 20-byte targets and short service names (grape keys).
            let mut target = [0u8; ID_LEN];
            rng.fill_bytes(&mut target);
            let target: Vec<u8> = if round % 2 == 0 {
                target.to_vec()
            } else {
                std::format!("svc:{round}:{:02x}", target[0]).into_bytes()
            };
            // Seed with the far end of the network only: a node's view of a random target.
            let from = rng.below(200) as usize;
            let seeds = seeds_from(&net, from, &target);
            let mut l =
                Lookup::<64>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
            let run = drive(&net, &mut l);
            assert_eq!(responded_ids(&l), net.truth(&target, 20), "round {round}");
            assert!(run.max_in_flight <= 16);
            // No dead nodes: it ends after a few round trips, far below any timeout.
            assert!(run.finished_at < 250, "round {round}: {}", run.finished_at);
        }
    }

    #[test]
    fn bootstraps_from_addresses_without_ids() {
        let net = Net::new(2, 200);
        let target = OWN.0;
        // Three bootstrap addresses, one listed twice.
        let seeds = [addr(3), addr(50), addr(3), addr(120)].map(|a| (None, a));
        let mut l = Lookup::<64>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
        assert_eq!(l.len(), 3);
        let run = drive(&net, &mut l);
        assert_eq!(responded_ids(&l), net.truth(&target, 20));
        assert!(run.finished_at < 250);
    }

    #[test]
    fn dead_nodes_cost_the_stall_timeout_not_the_query_timeout() {
        // Whole-table answers, as grapes send: with K-capped answers the 21st–23rd closest
        // are listed by (almost) nobody, since every table holds the 20 closest, dead or not.
        let mut net = Net::new(3, 200);
        net.answer = 128;
        let target = *b"rest:util:net";
        // Kill 3 of the 20 closest nodes.
        for i in [0, 7, 19] {
            let n = net.rank(&target, i);
            net.nodes[n].alive = false;
        }
        let seeds = seeds_from(&net, 42, &target);
        // A fixed stall timeout: the rule this test is about (the adaptive one is tested by
        // `the_stall_timeout_follows_the_measured_round_trips`).
        let fixed = LookupConfig {
            adaptive_stall: false,
            ..LookupConfig::DEFAULT
        };
        let mut l = Lookup::<64>::new(OWN, &target, seeds.clone(), fixed, t(0)).unwrap();
        let run = drive(&net, &mut l);
        assert_eq!(responded_ids(&l), net.truth(&target, 20));
        assert!(
            run.finished_at >= 250 && run.finished_at < 250 + 200,
            "finished at {} ms",
            run.finished_at
        );
        assert!(run.max_in_flight <= 16);

        // The same lookup without the stall rule (Node's behaviour) waits out the 2 s.
        let node_like = LookupConfig {
            stall_timeout: Duration::from_secs(2),
            adaptive_stall: false,
            ..LookupConfig::DEFAULT
        };
        let mut l = Lookup::<64>::new(OWN, &target, seeds, node_like, t(0)).unwrap();
        let run = drive(&net, &mut l);
        assert_eq!(responded_ids(&l), net.truth(&target, 20));
        assert!(
            run.finished_at >= 2000,
            "finished at {} ms",
            run.finished_at
        );
    }

    /// Sets every node's round trip to `rtt` ms.
    fn with_rtt(mut net: Net, rtt: u64) -> Net {
        for n in &mut net.nodes {
            n.rtt = rtt;
        }
        net
    }

    #[test]
    fn the_stall_timeout_follows_the_measured_round_trips() {
        let target = *b"rest:util:net";
        // A data centre (2 ms round trips) with 3 of the 20 closest nodes dead: a dead contact
        // costs a few round trips, not a fixed 250 ms (grenache-sim found lookups under churn
        // in a data centre taking 250-750 ms, one stall per round).
        let mut net = with_rtt(Net::new(3, 200), 2);
        net.answer = 128;
        for i in [0, 7, 19] {
            let n = net.rank(&target, i);
            net.nodes[n].alive = false;
        }
        let seeds = seeds_from(&net, 42, &target);
        let mut l = Lookup::<64>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
        let run = drive(&net, &mut l);
        assert_eq!(responded_ids(&l), net.truth(&target, 20));
        assert!(
            run.finished_at < 2 * MIN_STALL_TIMEOUT.as_millis() as u64 + 20,
            "finished at {} ms",
            run.finished_at
        );
        assert_eq!(l.stall_timeout(), MIN_STALL_TIMEOUT);

        // Slower round trips than the ceiling: the configured stall timeout holds.
        let mut net = with_rtt(Net::new(5, 200), 400);
        net.answer = 128;
        let seeds = seeds_from(&net, 7, &target);
        let mut l = Lookup::<64>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
        let _ = drive(&net, &mut l);
        assert_eq!(l.stall_timeout(), LookupConfig::DEFAULT.stall_timeout);
    }

    #[test]
    fn the_round_trip_estimate_is_rfc_6298s() {
        let mut l = Lookup::<8>::idle(OWN, LookupConfig::DEFAULT, t(0));
        assert_eq!(l.stall_timeout(), Duration::from_millis(250));
        l.measure(Duration::from_millis(20));
        // srtt 20, rttvar 10: 60.
        assert_eq!(l.stall_timeout(), Duration::from_millis(60));
        l.measure(Duration::from_millis(20));
        // rttvar (3·10 + 0) / 4 = 7, srtt 20: 48.
        assert_eq!(l.stall_timeout(), Duration::from_millis(48));
        l.measure(Duration::from_millis(60));
        // rttvar (3·7 + 40) / 4 = 15, srtt (7·20 + 60) / 8 = 25: 85.
        assert_eq!(l.stall_timeout(), Duration::from_millis(85));
        for _ in 0..20 {
            l.measure(Duration::from_millis(1));
        }
        assert_eq!(l.stall_timeout(), MIN_STALL_TIMEOUT);
        // The configured stall timeout is the ceiling.
        l.measure(Duration::from_secs(60));
        assert_eq!(l.stall_timeout(), Duration::from_millis(250));
        let fixed = LookupConfig {
            adaptive_stall: false,
            ..LookupConfig::DEFAULT
        };
        let mut l = Lookup::<8>::idle(OWN, fixed, t(0));
        l.measure(Duration::from_millis(1));
        assert_eq!(l.stall_timeout(), Duration::from_millis(250));
    }

    #[test]
    fn queries_never_exceed_the_concurrency() {
        let mut net = Net::new(4, 200);
        net.answer = 128;
        let target = [0x5a; ID_LEN];
        // Many dead nodes: stalled queries pile up, in-flight ones stay bounded.
        for i in (0..200).step_by(3) {
            net.nodes[i].alive = false;
        }
        for concurrency in [1, 3, 16] {
            let config = LookupConfig {
                concurrency,
                ..LookupConfig::DEFAULT
            };
            let seeds = seeds_from(&net, 1, &target);
            let mut l = Lookup::<64>::new(OWN, &target, seeds, config, t(0)).unwrap();
            let run = drive(&net, &mut l);
            assert!(run.max_in_flight <= concurrency);
            assert!(run.max_in_flight == concurrency, "concurrency is used");
            assert_eq!(responded_ids(&l), net.truth(&target, 20));
        }
    }

    #[test]
    fn memory_stays_bounded_by_n() {
        let net = Net::new(5, 200);
        let target = *b"svc";
        let seeds = seeds_from(&net, 9, &target);
        let mut l = Lookup::<24>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
        let run = drive(&net, &mut l);
        assert!(run.max_len <= 24);
        assert_eq!(run.max_len, 24, "the bound was reached");
        assert_eq!(responded_ids(&l), net.truth(&target, 20));
        // Tiny N: still terminates, answers are a closest-first subset of the truth's order.
        let seeds = seeds_from(&net, 9, &target);
        let mut l = Lookup::<4>::new(OWN, &target, seeds, LookupConfig::DEFAULT, t(0)).unwrap();
        drive(&net, &mut l);
        let got = responded_ids(&l);
        assert!(!got.is_empty() && got.len() <= 4);
        assert!(got
            .windows(2)
            .all(|w| cmp_distance(&target, &w[0], &w[1]).is_lt()));
    }

    #[test]
    fn timeouts_fire_exactly_at_send_time_plus_timeout() {
        let seeds = [(Some(NodeId([1; ID_LEN])), addr(1))];
        let mut l =
            Lookup::<8>::new(OWN, &[1; ID_LEN], seeds, LookupConfig::DEFAULT, t(1000)).unwrap();
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(
            l.poll(t(1000)),
            LookupAction::Query {
                to: addr(1),
                id: Some(NodeId([1; ID_LEN]))
            }
        );
        assert_eq!(l.poll(t(1000)), LookupAction::Wait(t(1250)));
        assert_eq!(l.poll_timeout(), Some(t(1250)));
        assert_eq!(l.poll(t(1249)), LookupAction::Wait(t(1250)));
        assert_eq!(l.in_flight(), 1);
        // Stalled at exactly 1250; nothing answered yet, so the lookup waits for the hard
        // timeout rather than finishing empty.
        assert_eq!(l.poll(t(1250)), LookupAction::Wait(t(3000)));
        assert_eq!((l.in_flight(), l.outstanding()), (0, 1));
        assert_eq!(l.poll(t(2999)), LookupAction::Wait(t(3000)));
        assert_eq!(l.poll(t(3000)), LookupAction::Finished);
        let states: Vec<_> = l.candidates().map(|c| c.2).collect();
        assert_eq!(states, [CandidateState::Failed]);
        assert_eq!(l.closest_responded().count(), 0);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn a_stalled_node_may_still_answer() {
        let a = NodeId([1; ID_LEN]);
        let b = NodeId([2; ID_LEN]);
        let cfg = LookupConfig {
            concurrency: 1,
            ..LookupConfig::DEFAULT
        };
        let mut l = Lookup::<8>::new(
            OWN,
            &[0; ID_LEN],
            [(Some(a), addr(1)), (Some(b), addr(2))],
            cfg,
            t(0),
        )
        .unwrap();
        assert!(matches!(l.poll(t(0)), LookupAction::Query { to, .. } if to == addr(1)));
        assert_eq!(l.poll(t(0)), LookupAction::Wait(t(250)));
        // a stalls: b gets its turn.
        assert!(matches!(l.poll(t(250)), LookupAction::Query { to, .. } if to == addr(2)));
        assert_eq!(
            l.on_response(t(300), addr(1), a, [], Some(b"tok")),
            ResponseOutcome::Accepted
        );
        assert_eq!(
            l.on_response(t(310), addr(2), b, [], None),
            ResponseOutcome::Accepted
        );
        assert_eq!(l.poll(t(310)), LookupAction::Finished);
        let r: Vec<_> = l.responded().map(|r| (r.id, r.token)).collect();
        assert_eq!(r, [(a, Some(&b"tok"[..])), (b, None)]);
        // Only token bearers are announce targets.
        let targets: Vec<_> = l.closest_responded().map(|r| r.id).collect();
        assert_eq!(targets, [a]);
        // After the end, answers are ignored.
        assert_eq!(
            l.on_response(t(320), addr(2), b, [], None),
            ResponseOutcome::Ignored
        );
    }

    #[test]
    fn unexpected_ids_own_id_and_unknown_senders() {
        let a = NodeId([1; ID_LEN]);
        let mut l = Lookup::<8>::new(
            OWN,
            &[0; ID_LEN],
            [(Some(a), addr(1)), (Some(OWN), addr(9)), (None, addr(2))],
            LookupConfig::DEFAULT,
            t(0),
        )
        .unwrap();
        // Our own id is never a candidate.
        assert_eq!(l.len(), 2);
        assert!(matches!(l.poll(t(0)), LookupAction::Query { to, .. } if to == addr(1)));
        assert!(matches!(l.poll(t(0)), LookupAction::Query { to, id: None } if to == addr(2)));
        // Not queried: ignored.
        assert_eq!(
            l.on_response(t(1), addr(3), a, [], None),
            ResponseOutcome::Ignored
        );
        assert!(!l.on_failure(t(1), addr(3)));
        // Wrong id: failed.
        assert_eq!(
            l.on_response(t(1), addr(1), NodeId([5; ID_LEN]), [], None),
            ResponseOutcome::UnexpectedId
        );
        // Someone answering with our id: failed.
        assert_eq!(
            l.on_response(t(2), addr(2), OWN, [(OWN, addr(7))], None),
            ResponseOutcome::UnexpectedId
        );
        assert_eq!(l.poll(t(2)), LookupAction::Finished);
        assert_eq!(l.responded().count(), 0);
    }

    #[test]
    fn bootstrap_answer_reveals_an_id_already_known() {
        let x = NodeId([3; ID_LEN]);
        let y = NodeId([4; ID_LEN]);
        let mut l = Lookup::<8>::new(
            OWN,
            &[0; ID_LEN],
            [(None, addr(1))],
            LookupConfig {
                concurrency: 1,
                ..LookupConfig::DEFAULT
            },
            t(0),
        )
        .unwrap();
        assert!(matches!(l.poll(t(0)), LookupAction::Query { id: None, .. }));
        // The bootstrap node answers as x and lists y, plus x at another address and itself.
        let closer = [(y, addr(2)), (x, addr(5)), (x, addr(1))];
        assert_eq!(
            l.on_response(t(5), addr(1), x, closer, Some(b"t1")),
            ResponseOutcome::Accepted
        );
        let c: Vec<_> = l.candidates().map(|c| (c.0, c.1)).collect();
        assert_eq!(c, [(Some(x), addr(1)), (Some(y), addr(2))]);
        assert!(
            matches!(l.poll(t(5)), LookupAction::Query { to, id: Some(id) } if to == addr(2) && id == y)
        );
        // y lists an id-less... no: lists a node at y's own address with another id: ignored.
        let _ = l.on_response(
            t(9),
            addr(2),
            y,
            [(NodeId([9; ID_LEN]), addr(2))],
            Some(b"t2"),
        );
        assert_eq!(l.len(), 2);
        assert_eq!(l.poll(t(9)), LookupAction::Finished);
        let r: Vec<_> = l.closest_responded().map(|r| (r.id, r.addr)).collect();
        assert_eq!(r, [(x, addr(1)), (y, addr(2))]);
    }

    #[test]
    fn an_idless_seed_learns_its_id_from_a_listing() {
        let x = NodeId([3; ID_LEN]);
        let z = NodeId([0x80; ID_LEN]);
        let mut l = Lookup::<8>::new(
            OWN,
            &[0; ID_LEN],
            [(Some(z), addr(9)), (None, addr(1))],
            LookupConfig {
                k: 1,
                ..LookupConfig::DEFAULT
            },
            t(0),
        )
        .unwrap();
        // k = 1: only z is in the window, the id-less seed waits behind it.
        assert!(matches!(l.poll(t(0)), LookupAction::Query { to, .. } if to == addr(9)));
        assert!(matches!(l.poll(t(0)), LookupAction::Wait(_)));
        let _ = l.on_response(t(1), addr(9), z, [(x, addr(1))], Some(b"t"));
        // addr(1) is now known as x, closer than z: it is queried with its id.
        assert_eq!(
            l.poll(t(1)),
            LookupAction::Query {
                to: addr(1),
                id: Some(x)
            }
        );
    }

    #[test]
    fn long_targets_and_tokens_are_refused() {
        let long = [b'a'; MAX_TARGET_LEN + 1];
        let r = Lookup::<8>::new(OWN, &long, [], LookupConfig::DEFAULT, t(0));
        assert_eq!(r.err(), Some(LookupError::TargetTooLong));
        let ok = Lookup::<8>::new(OWN, &long[1..], [], LookupConfig::DEFAULT, t(0)).unwrap();
        assert_eq!(ok.target().len(), MAX_TARGET_LEN);
        assert!(Token::new(&[0; MAX_TOKEN_LEN + 1]).is_none());
        assert_eq!(Token::new(b"abc").unwrap().as_bytes(), b"abc");
        // No seeds at all: finished at once.
        let mut empty = ok;
        assert_eq!(empty.poll(t(0)), LookupAction::Finished);
        let mut l =
            Lookup::<8>::new(OWN, b"x", [(None, addr(1))], LookupConfig::DEFAULT, t(0)).unwrap();
        assert!(l.restart(&long, [(None, addr(1))], t(5)).is_err());
        assert_eq!(l.poll(t(5)), LookupAction::Finished);
        l.restart(b"y", [(None, addr(1))], t(6)).unwrap();
        assert_eq!(l.target(), b"y");
        assert!(matches!(l.poll(t(6)), LookupAction::Query { .. }));
    }

    /// Random operations on a small lookup keep its invariants.
    fn check_invariants<const N: usize>(l: &Lookup<N>, target: &[u8], own: &NodeId) {
        let c: Vec<_> = l.live().to_vec();
        assert!(c.len() <= N);
        assert!(c.windows(2).all(|w| order(&w[0], &w[1]).is_le()));
        for (i, a) in c.iter().enumerate() {
            assert_ne!(a.id, Some(*own));
            if let Some(id) = a.id {
                assert_eq!(a.dist, Target::new(target).key(&id));
            }
            for b in &c[i + 1..] {
                assert_ne!(a.addr, b.addr);
                assert!(a.id.is_none() || a.id != b.id);
            }
        }
        assert!(l.in_flight() <= l.config().concurrency.max(1));
        let mut prev: Option<NodeId> = None;
        for r in l.responded() {
            if let Some(p) = prev {
                assert!(cmp_distance(target, &p, &r.id).is_lt());
            }
            prev = Some(r.id);
        }
    }

    proptest! {
        #[test]
        fn random_operations_keep_invariants(
            ops in proptest::collection::vec((0u8..4, 0u8..24, 0u8..24, any::<u16>()), 0..200),
            target in proptest::collection::vec(any::<u8>(), 0..24),
            conc in 1usize..5,
            k in 1usize..6,
        ) {
            let own = NodeId([0x33; ID_LEN]);
            let id = |x: u8| {
                let mut b = [0u8; ID_LEN];
                b[0] = x.wrapping_mul(37);
                b[19] = x;
                if x == 23 { own } else { NodeId(b) }
            };
            let config = LookupConfig { k, concurrency: conc, ..LookupConfig::DEFAULT };
            let seeds = [(None, addr(0)), (Some(id(1)), addr(1)), (None, addr(2))];
            let mut l = Lookup::<6>::new(own, &target, seeds, config, t(0)).unwrap();
            let mut now = 0u64;
            for (op, a, b, dt) in ops {
                now += u64::from(dt % 700);
                match op {
                    0 => { let _ = l.poll(t(now)); }
                    1 => {
                        let closer = [(id(b), addr(usize::from(b))), (id(a ^ b), addr(usize::from(a)))];
                        let _ = l.on_response(t(now), addr(usize::from(a)), id(a), closer, Some(&[a]));
                    }
                    2 => { l.on_failure(t(now), addr(usize::from(a))); }
                    _ => {
                        if let Some(d) = l.poll_timeout() {
                            prop_assert!(d.as_millis() + 2000 >= now || l.outstanding() > 0);
                        }
                    }
                }
                check_invariants(&l, &target, &own);
            }
            // Whatever happened, it ends once time runs out.
            let mut guard = 0;
            while l.poll(t(now)) != LookupAction::Finished {
                now += 2000;
                guard += 1;
                prop_assert!(guard < 100);
            }
        }
    }

    #[test]
    fn a_pinned_address_is_queried_waited_for_and_kept_however_far() {
        let own = NodeId([0xff; ID_LEN]);
        let config = LookupConfig {
            k: 2,
            concurrency: 1,
            ..LookupConfig::DEFAULT
        };
        let near = |i: u8| (Some(NodeId([i; ID_LEN])), PeerAddr::new([10, 0, 0, i], 1));
        let far = PeerAddr::new([10, 0, 0, 99], 1);
        let mut l: Lookup<4> = Lookup::new(
            own,
            &[0; 20],
            [near(1), near(2), near(3), near(4)],
            config,
            t(0),
        )
        .unwrap();
        // Full of closer nodes: pinning makes room.
        assert!(l.pin(far));
        let mut asked = Vec::new();
        for _ in 0..10 {
            match l.poll(t(0)) {
                LookupAction::Query { to, id } => {
                    asked.push(to);
                    let rid = id.unwrap_or(NodeId([0x77; ID_LEN]));
                    let outcome = l.on_response(
                        t(0),
                        to,
                        rid,
                        [near(5)].into_iter().map(|(i, a)| (i.unwrap(), a)),
                        Some(b"tk"),
                    );
                    assert_eq!(outcome, ResponseOutcome::Accepted);
                }
                LookupAction::Finished => break,
                LookupAction::Wait(_) => panic!("nothing is in flight"),
            }
        }
        assert!(asked.contains(&far), "{asked:?}");
        // Newcomers closer than everything did not push it out: it is an announce target.
        assert!(l.responded().any(|r| r.addr == far && r.token.is_some()));
    }
}
