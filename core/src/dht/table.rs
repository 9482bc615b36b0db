//! The Kademlia routing table: who we know, by XOR distance from our own id.
//!
//! Nodes are grouped in 160 k-buckets by the length of the prefix their id shares with ours
//! ([`bucket_index`]); a bucket never holds more than [`K`] = 20 nodes (bittorrent-dht's K,
//! docs/protocol.md §6.3). Storage is one fixed array of `N` entries (`N` = total capacity),
//! scanned linearly: with the sizes a grape uses (a few hundred entries) a scan is a few
//! microseconds and needs no pointers, no allocation and no tree.
//!
//! This is the flat "one bucket per prefix length" layout of the Kademlia paper rather than
//! k-bucket's split tree; the tree's buckets are unions of ours (its deepest leaf holds all
//! prefix lengths from its depth on), so we keep at least the nodes k-bucket would keep.
//!
//! # Policies (and where they differ from bittorrent-dht)
//!
//! * **Own id** is never inserted ([`InsertOutcome::OwnId`]).
//! * **Known id**: [`RoutingTable::insert`] only refreshes `last_seen` (and clears the failure
//!   count); the stored address is kept, as k-rpc does (`krpc:65-89`). Keeping the first
//!   address means a packet forging a known id cannot redirect that contact elsewhere.
//! * **Known address, new id**: the old entry is dropped first. One UDP socket is one node, so
//!   a new id on the same `ip:port` is a restarted grape and the old id is dead. Node keeps
//!   both (docs/protocol.md §13.15) and pays a query timeout on the dead one in later lookups.
//! * **Full bucket**: nothing is evicted silently. If the bucket has a node not seen for
//!   [`PING_EVICT_AFTER`] (10 s, `dht:178`), [`InsertOutcome::PingToEvict`] names the stalest
//!   one (most failures first, then oldest); the caller pings it and then calls
//!   [`RoutingTable::seen`] (it answered: the newcomer is dropped) or
//!   [`RoutingTable::evict_and_insert`] (it did not). A node surfaced this way is not
//!   surfaced again for the next 10 s, so a burst of newcomers does not ping one node many
//!   times; when every stale node is already being pinged, or none is stale, the newcomer is
//!   refused ([`InsertOutcome::BucketFull`]), as k-bucket does when all pinged nodes answer.
//! * **Whole table full** (`len() == N`, the newcomer's bucket not full): the table keeps its
//!   buckets balanced. The newcomer may only displace a node of the *fullest* bucket (on a
//!   tie the farthest one, i.e. the lowest index, whose part of the id space is the easiest
//!   to refill), and only if that bucket holds at least two more nodes than the newcomer's;
//!   it then goes through the same ping-before-evict step. Otherwise the newcomer is refused
//!   ([`InsertOutcome::TableFull`]). This keeps routing possible towards every part of the id
//!   space when `N` is small (a microcontroller), without any eviction of fresh nodes.
//! * **Per address** ([`RoutingTable::set_address_limits`], off by default): a bucket holds
//!   at most so many nodes of one IP address and of one IPv4 /24, so that one host (any
//!   number of ports, any ids) cannot fill the bucket of a name's neighbourhood. The node sets
//!   them from [`crate::dht::node::NodeConfig`]. bittorrent-dht has no such bound.
//! * **Liveness**: the table stores `last_seen` and a failure count; it never drops a node on
//!   its own. [`RoutingTable::stale_before`] and [`RoutingTable::liveness_deadline`] tell the
//!   node which contacts to ping and when (docs/protocol.md §6.9: every contact not seen for the
//!   liveness period, 5 min by default, [`DEFAULT_LIVENESS`]).

use crate::addr::PeerAddr;
use crate::dht::id::{bucket_index, NodeId, Target, ID_BITS};
use crate::time::{Duration, Instant};

/// Maximum number of nodes per bucket (bittorrent-dht's K, `krpc:7`).
pub const K: usize = 20;

/// A full bucket's node may be replaced only if it has not been seen for this long (`dht:178`).
pub const PING_EVICT_AFTER: Duration = Duration::from_secs(10);

/// Default liveness period: a contact not seen for this long should be pinged
/// (docs/protocol.md §6.9, `dht_nodeLiveness` programmatic default; the 1.0.0 CLI uses 15 min by
/// accident, docs/protocol.md §13.1).
pub const DEFAULT_LIVENESS: Duration = Duration::from_secs(5 * 60);

/// One known node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Entry {
    /// Its id.
    pub id: NodeId,
    /// Where it was first seen.
    pub addr: PeerAddr,
    /// When it last sent us anything (a query, an answer).
    pub last_seen: Instant,
    /// Queries to it that failed since it was last seen (saturating).
    pub failed: u8,
}

impl Entry {
    /// A placeholder, e.g. to initialise an output array for [`RoutingTable::closest`].
    pub const EMPTY: Entry = Entry {
        id: NodeId([0; crate::dht::id::ID_LEN]),
        addr: PeerAddr::new([0; 4], 0),
        last_seen: Instant::ZERO,
        failed: 0,
    };
}

/// What [`RoutingTable::insert`] did with a contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InsertOutcome {
    /// Added as a new entry.
    Inserted,
    /// The id was known: `last_seen` refreshed, address unchanged.
    Refreshed,
    /// No room: ping `stale`; if it does not answer call
    /// [`RoutingTable::evict_and_insert`] with `candidate`, else [`RoutingTable::seen`] for
    /// `stale` (and forget `candidate`).
    PingToEvict {
        /// The node to ping (id, address).
        stale: (NodeId, PeerAddr),
        /// The newcomer waiting for its place (id, address).
        candidate: (NodeId, PeerAddr),
    },
    /// The bucket is full of nodes seen recently (or already being pinged): refused.
    BucketFull,
    /// The table is at capacity `N` and the newcomer's bucket is not small enough to take a
    /// place from another bucket: refused.
    TableFull,
    /// Our own id: never inserted.
    OwnId,
    /// The newcomer's bucket already holds as many nodes from its IP address (or its /24) as
    /// allowed ([`RoutingTable::set_address_limits`]), all seen recently: refused.
    AddressLimit,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    entry: Entry,
    /// When this node was last surfaced by [`InsertOutcome::PingToEvict`].
    probed: Option<Instant>,
}

/// A routing table of at most `N` nodes, [`K`] per bucket, centred on our own id.
#[derive(Clone, Debug)]
pub struct RoutingTable<const N: usize> {
    own: NodeId,
    /// Unordered: removal moves the last slot into the hole.
    slots: heapless::Vec<Slot, N>,
    /// Entries per bucket (≤ K, fits in a byte).
    counts: [u8; ID_BITS],
    /// Most entries of one bucket from one IP address.
    per_ip: usize,
    /// Most entries of one bucket from one IPv4 /24.
    per_subnet: usize,
}

impl<const N: usize> RoutingTable<N> {
    /// An empty table for the node `own`.
    pub const fn new(own: NodeId) -> Self {
        RoutingTable {
            own,
            slots: heapless::Vec::new(),
            counts: [0; ID_BITS],
            per_ip: K,
            per_subnet: K,
        }
    }

    /// Bounds the nodes of one bucket that share an IP address (`per_ip`) or an IPv4 /24
    /// (`per_subnet`); values are clamped to `1..=K`, and `K` (the default of
    /// [`new`](Self::new)) means no bound. A host with many ports, or a subnet, then cannot
    /// own a whole bucket, e.g. every node next to a name. A newcomer over a bound may only
    /// replace a stale node of its own address or subnet, by the ping-before-evict step;
    /// otherwise it is refused ([`InsertOutcome::AddressLimit`]). Entries already in the
    /// table stay.
    pub fn set_address_limits(&mut self, per_ip: usize, per_subnet: usize) {
        self.per_ip = per_ip.clamp(1, K);
        self.per_subnet = per_subnet.clamp(1, K);
    }

    /// Our own id.
    pub fn own_id(&self) -> &NodeId {
        &self.own
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No node known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Total capacity `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Number of nodes in bucket `i` (those sharing exactly `i` leading bits with us).
    pub fn bucket_len(&self, i: usize) -> usize {
        self.counts.get(i).map_or(0, |c| usize::from(*c))
    }

    /// All nodes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.live().iter().map(|s| &s.entry)
    }

    /// The entry for `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.position(id)
            .and_then(|i| self.slots.get(i))
            .map(|s| &s.entry)
    }

    /// Adds or refreshes a contact that just sent us something (see the module docs for the
    /// rules). Never evicts anyone by itself.
    #[must_use]
    pub fn insert(&mut self, now: Instant, id: NodeId, addr: PeerAddr) -> InsertOutcome {
        let Some(bucket) = bucket_index(&self.own, &id) else {
            return InsertOutcome::OwnId;
        };
        if self.seen(now, &id) {
            return InsertOutcome::Refreshed;
        }
        if let Some(i) = self.live().iter().position(|s| s.entry.addr == addr) {
            self.remove_at(i);
        }
        let candidate = (id, addr);
        let same_ip = |e: &Entry| e.addr.ip == addr.ip;
        let same_subnet = |e: &Entry| e.addr.ip.get(..3) == addr.ip.get(..3);
        for (same, limit) in [
            (&same_ip as &dyn Fn(&Entry) -> bool, self.per_ip),
            (&same_subnet, self.per_subnet),
        ] {
            // K means no bound: a full bucket is then the ordinary case below.
            if limit < K && self.count_in(bucket, same) >= limit {
                return match self.pick_stale(now, bucket, same) {
                    Some(stale) => InsertOutcome::PingToEvict { stale, candidate },
                    None => InsertOutcome::AddressLimit,
                };
            }
        }
        if self.bucket_len(bucket) >= K {
            return match self.pick_stale(now, bucket, |_| true) {
                Some(stale) => InsertOutcome::PingToEvict { stale, candidate },
                None => InsertOutcome::BucketFull,
            };
        }
        if self.slots.is_full() {
            let fullest = self.fullest_bucket();
            if self.bucket_len(fullest) < self.bucket_len(bucket).saturating_add(2) {
                return InsertOutcome::TableFull;
            }
            return match self.pick_stale(now, fullest, |_| true) {
                Some(stale) => InsertOutcome::PingToEvict { stale, candidate },
                None => InsertOutcome::TableFull,
            };
        }
        let slot = Slot {
            entry: Entry {
                id,
                addr,
                last_seen: now,
                failed: 0,
            },
            probed: None,
        };
        if self.slots.push(slot).is_err() {
            return InsertOutcome::TableFull;
        }
        if let Some(c) = self.counts.get_mut(bucket) {
            *c = c.saturating_add(1);
        }
        InsertOutcome::Inserted
    }

    /// Whether [`insert`](Self::insert) could take `id` at `addr` now, or at least start a
    /// ping-before-evict for it: not our id, not known, and neither its bucket nor its
    /// address limits are full of nodes seen recently. Changes nothing. A node asks before it
    /// pings a stranger to verify it, so that strangers the table would refuse anyway cost no
    /// traffic.
    pub fn has_room_for(&self, now: Instant, id: &NodeId, addr: PeerAddr) -> bool {
        let Some(bucket) = bucket_index(&self.own, id) else {
            return false;
        };
        if self.get(id).is_some() {
            return false;
        }
        if self.iter().any(|e| e.addr == addr) {
            // A restarted node: its old entry gives way (see the module docs).
            return true;
        }
        let old_enough = |t: Instant| now.saturating_duration_since(t) >= PING_EVICT_AFTER;
        let in_bucket = |e: &Entry| bucket_index(&self.own, &e.id) == Some(bucket);
        let stale_where = |f: &dyn Fn(&Entry) -> bool| {
            self.live().iter().any(|s| {
                in_bucket(&s.entry)
                    && f(&s.entry)
                    && old_enough(s.entry.last_seen)
                    && s.probed.is_none_or(old_enough)
            })
        };
        let same_ip = |e: &Entry| e.addr.ip == addr.ip;
        let same_subnet = |e: &Entry| e.addr.ip.get(..3) == addr.ip.get(..3);
        for (same, limit) in [
            (&same_ip as &dyn Fn(&Entry) -> bool, self.per_ip),
            (&same_subnet, self.per_subnet),
        ] {
            if limit < K && self.count_in(bucket, same) >= limit && !stale_where(same) {
                return false;
            }
        }
        self.bucket_len(bucket) < K || stale_where(&|_| true)
    }

    /// Ends a ping-before-evict: `stale` did not answer, so it is removed and the newcomer
    /// inserted in its place. If `stale` was seen again since it was surfaced (it sent us
    /// something in the meantime), it stays, and the newcomer is inserted only if there is
    /// room anyway. Returns what [`insert`](Self::insert) then did with the newcomer.
    #[must_use]
    pub fn evict_and_insert(
        &mut self,
        now: Instant,
        stale: &NodeId,
        id: NodeId,
        addr: PeerAddr,
    ) -> InsertOutcome {
        if let Some(i) = self.position(stale) {
            let revived = self
                .slots
                .get(i)
                .is_some_and(|s| s.probed.is_some_and(|p| s.entry.last_seen >= p));
            if !revived {
                self.remove_at(i);
            }
        }
        self.insert(now, id, addr)
    }

    /// Records that `id` is alive (it answered or sent a query): refreshes `last_seen` and clears
    /// its failures, which also cancels a pending eviction of it. `false` if `id` is not in the
    /// table.
    pub fn seen(&mut self, now: Instant, id: &NodeId) -> bool {
        let Some(s) = self.position(id).and_then(|i| self.slots.get_mut(i)) else {
            return false;
        };
        // `probed` stays: `evict_and_insert` compares it with `last_seen` to see the answer.
        s.entry.last_seen = s.entry.last_seen.max(now);
        s.entry.failed = 0;
        true
    }

    /// Records a failed query to `id` (timeout, unexpected id). Returns the new failure
    /// count, `None` if `id` is unknown. The node decides when to [`remove`](Self::remove)
    /// (bittorrent-dht removes on the first traversal timeout, `krpc:264-268`).
    pub fn failed(&mut self, id: &NodeId) -> Option<u8> {
        let s = self.position(id).and_then(|i| self.slots.get_mut(i))?;
        s.entry.failed = s.entry.failed.saturating_add(1);
        Some(s.entry.failed)
    }

    /// Removes `id`, returning its entry.
    pub fn remove(&mut self, id: &NodeId) -> Option<Entry> {
        self.position(id).and_then(|i| self.remove_at(i))
    }

    /// Writes the nodes closest to `target` (a node id or a raw service-name key) into `out`,
    /// closest first, by exact XOR distance ([`crate::dht::id::cmp_distance`]); returns how many
    /// were written (`min(len(), out.len())`).
    #[must_use]
    pub fn closest(&self, target: &[u8], out: &mut [Entry]) -> usize {
        let target = Target::new(target);
        let by_distance = |a: &Entry, b: &Entry| target.cmp(&a.id, &b.id);
        // Room for everyone (a whole-table answer, docs/protocol.md §6.4): copy and sort, O(n log
        // n).
        if let Some(all) = out.get_mut(..self.len()) {
            for (o, s) in all.iter_mut().zip(self.live()) {
                *o = s.entry;
            }
            all.sort_unstable_by(by_distance);
            return all.len();
        }
        // Fewer wanted (typically K of a few hundred): keep the best so far sorted in `out`;
        // most nodes are rejected by one comparison with the current farthest.
        let mut n = 0;
        for s in self.live() {
            let e = &s.entry;
            if n == out.len() {
                match out.last() {
                    Some(worst) if by_distance(e, worst).is_lt() => n -= 1,
                    _ => continue,
                }
            }
            let pos = out
                .get(..n)
                .map_or(0, |o| o.partition_point(|x| by_distance(x, e).is_lt()));
            if let Some(window) = out.get_mut(pos..=n) {
                window.rotate_right(1);
                if let Some(first) = window.first_mut() {
                    *first = *e;
                }
                n += 1;
            }
        }
        n
    }

    /// Nodes not seen for `liveness` or longer at `now`: those to ping (docs/protocol.md §6.9).
    pub fn stale_before(
        &self,
        now: Instant,
        liveness: Duration,
    ) -> impl Iterator<Item = &Entry> + '_ {
        self.iter()
            .filter(move |e| e.last_seen.saturating_add(liveness) <= now)
    }

    /// When the first node becomes stale for `liveness` (the earliest `last_seen +
    /// liveness`); `None` for an empty table. A node feeds it to its timer.
    pub fn liveness_deadline(&self, liveness: Duration) -> Option<Instant> {
        self.iter()
            .map(|e| e.last_seen.saturating_add(liveness))
            .min()
    }

    fn live(&self) -> &[Slot] {
        &self.slots
    }

    fn position(&self, id: &NodeId) -> Option<usize> {
        self.live().iter().position(|s| s.entry.id == *id)
    }

    fn remove_at(&mut self, i: usize) -> Option<Entry> {
        // `swap_remove` asserts `i < len`: check it here so a stale index is a `None`.
        if i >= self.slots.len() {
            return None;
        }
        let e = self.slots.swap_remove(i).entry;
        if let Some(c) = bucket_index(&self.own, &e.id).and_then(|b| self.counts.get_mut(b)) {
            *c = c.saturating_sub(1);
        }
        Some(e)
    }

    /// Nodes of `bucket` for which `f` holds.
    fn count_in(&self, bucket: usize, f: &dyn Fn(&Entry) -> bool) -> usize {
        self.iter()
            .filter(|e| f(e) && bucket_index(&self.own, &e.id) == Some(bucket))
            .count()
    }

    /// The bucket with the most nodes; the lowest index on a tie.
    fn fullest_bucket(&self) -> usize {
        let mut best = 0;
        for (i, c) in self.counts.iter().enumerate() {
            if self.counts.get(best).is_some_and(|b| c > b) {
                best = i;
            }
        }
        best
    }

    /// Chooses the node of `bucket` to ping before evicting: not seen for
    /// [`PING_EVICT_AFTER`], not surfaced in the last [`PING_EVICT_AFTER`], and `f` holds;
    /// most failures first, then least recently seen. Marks it as surfaced.
    fn pick_stale(
        &mut self,
        now: Instant,
        bucket: usize,
        f: impl Fn(&Entry) -> bool,
    ) -> Option<(NodeId, PeerAddr)> {
        let own = self.own;
        let old_enough = |t: Instant| now.saturating_duration_since(t) >= PING_EVICT_AFTER;
        let mut best: Option<usize> = None;
        for (i, s) in self.live().iter().enumerate() {
            let e = &s.entry;
            let eligible = old_enough(e.last_seen)
                && s.probed.is_none_or(old_enough)
                && f(e)
                && bucket_index(&own, &e.id) == Some(bucket);
            if !eligible {
                continue;
            }
            let better = match best.and_then(|b| self.slots.get(b)) {
                None => true,
                Some(b) => {
                    (e.failed, core::cmp::Reverse(e.last_seen))
                        > (b.entry.failed, core::cmp::Reverse(b.entry.last_seen))
                }
            };
            if better {
                best = Some(i);
            }
        }
        let s = self.slots.get_mut(best?)?;
        s.probed = Some(now);
        Some((s.entry.id, s.entry.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::id::{Distance, ID_LEN};
    use crate::rng::{Rng, SplitMix64};
    use proptest::prelude::*;
    use std::vec::Vec;

    const OWN: NodeId = NodeId([0; ID_LEN]);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn addr(n: u32) -> PeerAddr {
        let b = n.to_be_bytes();
        PeerAddr::new([10, b[1], b[2], b[3]], 6000)
    }

    /// A random id in bucket `b` of a table centred on `OWN` (all zeros): `b` zero bits,
    /// then a one, then random bits.
    fn id_in_bucket(rng: &mut SplitMix64, b: usize) -> NodeId {
        let mut id = [0u8; ID_LEN];
        rng.fill_bytes(&mut id);
        for i in 0..b {
            id[i / 8] &= !(0x80 >> (i % 8));
        }
        id[b / 8] |= 0x80 >> (b % 8);
        NodeId(id)
    }

    #[test]
    fn own_id_is_never_inserted() {
        let mut rt = RoutingTable::<8>::new(OWN);
        assert_eq!(rt.insert(t(0), OWN, addr(1)), InsertOutcome::OwnId);
        assert!(rt.is_empty());
        assert_eq!(rt.closest(&OWN.0, &mut [Entry::EMPTY; 4]), 0);
    }

    #[test]
    fn known_id_is_refreshed_and_keeps_its_address() {
        let mut rng = SplitMix64::new(1);
        let mut rt = RoutingTable::<8>::new(OWN);
        let a = id_in_bucket(&mut rng, 0);
        assert_eq!(rt.insert(t(5), a, addr(1)), InsertOutcome::Inserted);
        assert_eq!(rt.failed(&a), Some(1));
        assert_eq!(rt.insert(t(9), a, addr(2)), InsertOutcome::Refreshed);
        let e = rt.get(&a).unwrap();
        assert_eq!((e.addr, e.last_seen, e.failed), (addr(1), t(9), 0));
        assert_eq!(rt.len(), 1);
    }

    #[test]
    fn new_id_on_a_known_address_replaces_the_old_one() {
        let mut rng = SplitMix64::new(2);
        let mut rt = RoutingTable::<8>::new(OWN);
        let (old, new) = (id_in_bucket(&mut rng, 0), id_in_bucket(&mut rng, 3));
        let _ = rt.insert(t(0), old, addr(7));
        assert_eq!(rt.insert(t(1), new, addr(7)), InsertOutcome::Inserted);
        assert_eq!(rt.len(), 1);
        assert!(rt.get(&old).is_none());
        assert_eq!((rt.bucket_len(0), rt.bucket_len(3)), (0, 1));
    }

    #[test]
    fn bucket_never_exceeds_k_and_surfaces_ping_before_evict() {
        let mut rng = SplitMix64::new(3);
        let mut rt = RoutingTable::<64>::new(OWN);
        let ids: Vec<NodeId> = (0..K).map(|_| id_in_bucket(&mut rng, 2)).collect();
        for (i, id) in ids.iter().enumerate() {
            // Node i last seen at i ms.
            assert_eq!(
                rt.insert(t(i as u64), *id, addr(i as u32)),
                InsertOutcome::Inserted
            );
        }
        assert_eq!(rt.bucket_len(2), K);
        let newcomer = id_in_bucket(&mut rng, 2);
        // Everyone seen within 10 s: refused, nothing evicted.
        assert_eq!(
            rt.insert(t(9_000), newcomer, addr(100)),
            InsertOutcome::BucketFull
        );
        // Node 0 is the oldest once 10 s have passed for it (not yet for node 1).
        let out = rt.insert(t(10_000), newcomer, addr(100));
        assert_eq!(
            out,
            InsertOutcome::PingToEvict {
                stale: (ids[0], addr(0)),
                candidate: (newcomer, addr(100))
            }
        );
        assert_eq!(rt.bucket_len(2), K);
        // A second newcomer at once: node 0 is already being pinged, node 1 is fresh enough.
        let second = id_in_bucket(&mut rng, 2);
        assert_eq!(
            rt.insert(t(10_000), second, addr(101)),
            InsertOutcome::BucketFull
        );
        // Node 1 becomes stale at 10 001 ms and is offered next.
        match rt.insert(t(10_001), second, addr(101)) {
            InsertOutcome::PingToEvict { stale, .. } => assert_eq!(stale.0, ids[1]),
            other => panic!("{other:?}"),
        }
        // Node 0 did not answer: the newcomer takes its place.
        assert_eq!(
            rt.evict_and_insert(t(12_000), &ids[0], newcomer, addr(100)),
            InsertOutcome::Inserted
        );
        assert!(rt.get(&ids[0]).is_none());
        assert!(rt.get(&newcomer).is_some());
        assert_eq!(rt.bucket_len(2), K);
        // Node 1 answered the ping: it stays, and the second newcomer is offered the next
        // stale node instead.
        assert!(rt.seen(t(12_000), &ids[1]));
        assert_eq!(
            rt.evict_and_insert(t(12_001), &ids[1], second, addr(101)),
            InsertOutcome::PingToEvict {
                stale: (ids[2], addr(2)),
                candidate: (second, addr(101))
            }
        );
        assert!(rt.get(&ids[1]).is_some());
        assert_eq!(rt.bucket_len(2), K);
        assert_eq!(rt.len(), K);
    }

    #[test]
    fn failing_nodes_are_offered_for_eviction_first() {
        let mut rng = SplitMix64::new(4);
        let mut rt = RoutingTable::<64>::new(OWN);
        let ids: Vec<NodeId> = (0..K).map(|_| id_in_bucket(&mut rng, 0)).collect();
        for (i, id) in ids.iter().enumerate() {
            let _ = rt.insert(t(i as u64), *id, addr(i as u32));
        }
        rt.failed(&ids[7]);
        let newcomer = id_in_bucket(&mut rng, 0);
        match rt.insert(t(60_000), newcomer, addr(99)) {
            InsertOutcome::PingToEvict { stale, .. } => assert_eq!(stale.0, ids[7]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_table_takes_room_only_from_a_much_fuller_bucket() {
        let mut rng = SplitMix64::new(5);
        let mut rt = RoutingTable::<10>::new(OWN);
        let far: Vec<NodeId> = (0..8).map(|_| id_in_bucket(&mut rng, 0)).collect();
        for (i, id) in far.iter().enumerate() {
            let _ = rt.insert(t(0), *id, addr(i as u32));
        }
        let mid = id_in_bucket(&mut rng, 5);
        let _ = rt.insert(t(0), mid, addr(50));
        let _ = rt.insert(t(0), id_in_bucket(&mut rng, 6), addr(60));
        assert_eq!(rt.len(), 10);
        // Bucket 5 holds 1, bucket 0 holds 8: a second bucket-5 node may take a stale place.
        let newcomer = id_in_bucket(&mut rng, 5);
        assert_eq!(
            rt.insert(t(5_000), newcomer, addr(51)),
            InsertOutcome::TableFull
        );
        let out = rt.insert(t(10_000), newcomer, addr(51));
        let InsertOutcome::PingToEvict { stale, candidate } = out else {
            panic!("{out:?}")
        };
        assert!(far.contains(&stale.0));
        assert_eq!(
            rt.evict_and_insert(t(10_500), &stale.0, candidate.0, candidate.1),
            InsertOutcome::Inserted
        );
        assert_eq!((rt.bucket_len(0), rt.bucket_len(5), rt.len()), (7, 2, 10));
        // A bucket-0 newcomer cannot take room from bucket 0 itself (7 < 7 + 2).
        let same = id_in_bucket(&mut rng, 0);
        assert_eq!(
            rt.insert(t(20_000), same, addr(70)),
            InsertOutcome::TableFull
        );
    }

    #[test]
    fn stale_before_and_liveness_deadline_follow_last_seen() {
        let mut rng = SplitMix64::new(6);
        let mut rt = RoutingTable::<8>::new(OWN);
        let (a, b) = (id_in_bucket(&mut rng, 0), id_in_bucket(&mut rng, 1));
        let _ = rt.insert(t(1_000), a, addr(1));
        let _ = rt.insert(t(2_000), b, addr(2));
        let live = DEFAULT_LIVENESS;
        assert_eq!(rt.liveness_deadline(live), Some(t(301_000)));
        assert_eq!(rt.stale_before(t(300_999), live).count(), 0);
        let stale: Vec<_> = rt.stale_before(t(301_000), live).map(|e| e.id).collect();
        assert_eq!(stale, [a]);
        rt.seen(t(301_000), &a);
        assert_eq!(rt.liveness_deadline(live), Some(t(302_000)));
        assert_eq!(rt.remove(&b).map(|e| e.id), Some(b));
        assert_eq!(rt.liveness_deadline(live), Some(t(601_000)));
        assert!(rt.remove(&b).is_none());
        assert_eq!(RoutingTable::<8>::new(OWN).liveness_deadline(live), None);
    }

    /// Brute-force reference: sort by the full k-bucket distance, then by id.
    fn reference_closest(target: &[u8], ids: &[NodeId], m: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = ids.to_vec();
        v.sort_by_key(|id| {
            let n = target.len().max(ID_LEN);
            let d: Vec<u8> = (0..n)
                .map(|i| match (id.0.get(i), target.get(i)) {
                    (Some(a), Some(b)) => a ^ b,
                    _ => 0xff,
                })
                .collect();
            (d, id.0)
        });
        v.truncate(m);
        v
    }

    proptest! {
        #[test]
        fn closest_equals_brute_force_order(
            seed in any::<u64>(),
            n in 0usize..120,
            m in 0usize..30,
            target in proptest::collection::vec(any::<u8>(), 0..30),
        ) {
            let mut rng = SplitMix64::new(seed);
            let own = NodeId::random(&mut rng);
            let mut rt = RoutingTable::<96>::new(own);
            for i in 0..n {
                // Mix random ids with ids sharing the target's first bytes (close ones).
                let mut id = NodeId::random(&mut rng);
                let share = rng.below(8) as usize;
                for (d, s) in id.0.iter_mut().zip(&target).take(share) {
                    *d = *s;
                }
                let _ = rt.insert(t(i as u64), id, addr(i as u32));
                prop_assert!(rt.len() <= 96);
            }
            for b in 0..ID_BITS {
                prop_assert!(rt.bucket_len(b) <= K);
            }
            prop_assert!(rt.get(&own).is_none());
            let ids: Vec<NodeId> = rt.iter().map(|e| e.id).collect();
            let mut out = [Entry::EMPTY; 30];
            let got = rt.closest(&target, &mut out[..m]);
            let got: Vec<NodeId> = out[..got].iter().map(|e| e.id).collect();
            prop_assert_eq!(got, reference_closest(&target, &ids, m));
            // Distances are non-decreasing along the output.
            let d: Vec<Distance> = out[..m.min(ids.len())].iter().map(|e| e.id.distance(&target)).collect();
            prop_assert!(d.windows(2).all(|w| w[0] <= w[1]));
        }

        #[test]
        fn counts_stay_consistent_under_random_operations(
            ops in proptest::collection::vec((0u8..5, any::<u16>(), 0u8..16), 0..300),
        ) {
            let mut rt = RoutingTable::<24>::new(OWN);
            let mut rng = SplitMix64::new(9);
            let pool: Vec<NodeId> = (0..64).map(|i| id_in_bucket(&mut rng, i % 6)).collect();
            let mut now = 0u64;
            for (op, x, a) in ops {
                now += u64::from(x);
                let id = pool[usize::from(x) % pool.len()];
                match op {
                    0 | 1 => { let _ = rt.insert(t(now), id, addr(u32::from(a))); }
                    2 => { rt.seen(t(now), &id); }
                    3 => { rt.failed(&id); }
                    _ => { rt.remove(&id); }
                }
                let mut counts = [0usize; ID_BITS];
                for e in rt.iter() {
                    counts[bucket_index(&OWN, &e.id).unwrap()] += 1;
                }
                for (b, c) in counts.iter().enumerate() {
                    prop_assert_eq!(*c, rt.bucket_len(b));
                    prop_assert!(*c <= K);
                }
                // Ids and addresses are unique.
                let mut ids: Vec<_> = rt.iter().map(|e| e.id).collect();
                ids.sort();
                ids.dedup();
                prop_assert_eq!(ids.len(), rt.len());
                let mut addrs: Vec<_> = rt.iter().map(|e| e.addr).collect();
                addrs.sort();
                addrs.dedup();
                prop_assert_eq!(addrs.len(), rt.len());
            }
        }
    }

    proptest! {
        #[test]
        fn address_limits_hold_under_random_inserts_and_evictions(
            ops in proptest::collection::vec((any::<u16>(), 0u8..64, any::<bool>()), 0..300),
        ) {
            let mut rt = RoutingTable::<48>::new(OWN);
            rt.set_address_limits(2, 3);
            let mut rng = SplitMix64::new(10);
            let pool: Vec<NodeId> = (0..96).map(|i| id_in_bucket(&mut rng, i % 3)).collect();
            let mut now = 0u64;
            for (x, a, evict) in ops {
                now += u64::from(x % 20_000);
                let id = pool[usize::from(x) % pool.len()];
                // Four /24s of three hosts each, many ports.
                let addr = PeerAddr::new([10, 0, a % 4, a % 3], 6000 + u16::from(a));
                let room = rt.has_room_for(t(now), &id, addr);
                let outcome = rt.insert(t(now), id, addr);
                // Where no room was announced, nothing is taken or pinged away.
                prop_assert!(
                    room || !matches!(outcome, InsertOutcome::Inserted | InsertOutcome::PingToEvict { .. }),
                    "{:?}", outcome
                );
                if let InsertOutcome::PingToEvict { stale, .. } = outcome {
                    if evict {
                        let _ = rt.evict_and_insert(t(now), &stale.0, id, addr);
                    }
                }
                for b in 0..3 {
                    let in_b: Vec<_> = rt.iter().filter(|e| bucket_index(&OWN, &e.id) == Some(b)).collect();
                    for e in &in_b {
                        prop_assert!(in_b.iter().filter(|o| o.addr.ip == e.addr.ip).count() <= 2);
                        prop_assert!(in_b.iter().filter(|o| o.addr.ip[..3] == e.addr.ip[..3]).count() <= 3);
                    }
                }
            }
        }
    }

    #[test]
    fn one_ip_fills_at_most_its_share_of_a_bucket() {
        let mut rng = SplitMix64::new(31);
        let mut tb: RoutingTable<64> = RoutingTable::new(OWN);
        tb.set_address_limits(10, 16);
        let sybil = |port: u16| PeerAddr::new([10, 66, 0, 1], port);
        let mut port = 1;
        // 40 ids in bucket 0 from one host: 10 get in.
        for _ in 0..40 {
            let _ = tb.insert(t(0), id_in_bucket(&mut rng, 0), sybil(port));
            port += 1;
        }
        assert_eq!(tb.bucket_len(0), 10);
        assert!(!tb.has_room_for(t(0), &id_in_bucket(&mut rng, 0), sybil(port)));
        assert!(tb.has_room_for(t(0), &id_in_bucket(&mut rng, 0), addr(99)));
        // Honest nodes from other hosts still find room, the sybils none, even much later
        // while the ones in the table are stale (they are pinged, not silently replaced).
        for i in 0..10 {
            assert_eq!(
                tb.insert(t(0), id_in_bucket(&mut rng, 0), addr(i)),
                InsertOutcome::Inserted
            );
        }
        assert_eq!(tb.bucket_len(0), 20);
        assert!(matches!(
            tb.insert(t(1), id_in_bucket(&mut rng, 0), sybil(port)),
            InsertOutcome::AddressLimit
        ));
        // Full bucket: room only where a stale node can be pinged away.
        assert!(!tb.has_room_for(t(1), &id_in_bucket(&mut rng, 0), addr(99)));
        assert!(tb.has_room_for(t(60_000), &id_in_bucket(&mut rng, 0), sybil(port + 1)));
        match tb.insert(t(60_000), id_in_bucket(&mut rng, 0), sybil(port + 1)) {
            InsertOutcome::PingToEvict { stale, .. } => assert_eq!(stale.1.ip, [10, 66, 0, 1]),
            other => panic!("{other:?}"),
        }
        // Another bucket has its own share.
        assert_eq!(
            tb.insert(t(0), id_in_bucket(&mut rng, 1), sybil(999)),
            InsertOutcome::Inserted
        );
    }

    #[test]
    fn one_subnet_fills_at_most_its_share_of_a_bucket() {
        let mut rng = SplitMix64::new(32);
        let mut tb: RoutingTable<64> = RoutingTable::new(OWN);
        tb.set_address_limits(10, 16);
        for i in 0..30u8 {
            let _ = tb.insert(
                t(0),
                id_in_bucket(&mut rng, 0),
                PeerAddr::new([10, 66, 0, i + 1], 1),
            );
        }
        assert_eq!(tb.bucket_len(0), 16);
        let other = PeerAddr::new([10, 66, 1, 1], 1);
        assert_eq!(
            tb.insert(t(0), id_in_bucket(&mut rng, 0), other),
            InsertOutcome::Inserted
        );
    }
}
