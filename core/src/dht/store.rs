//! The announce store: which `ip:port` peers announced which service name, until when, and on
//! whose behalf.
//!
//! A grape keeps one of these as its DHT peer store, filled by `announce_peer` (bittorrent-dht's
//! `_peers`, docs/protocol.md §4.2) and by its own announces with `-b`. It is a bounded map from a
//! variable-length name (the raw UTF-8 service name, which is the wire `info_hash`,
//! docs/protocol.md §4.1) to a set of compact IPv4 peers.
//!
//! # Expiry: exact TTL instead of generations
//!
//! The reference (`record-cache`, docs/protocol.md §4.4) rotates two generations every
//! `ceil(2/3·maxAge)`, so an entry lives anywhere between 0.67× and 1.33× `maxAge` after its last
//! announce. This store gives every entry an exact deadline instead: an entry announced at `now`
//! with `ttl` is live while `t < now + ttl` and dead from `now + ttl` on. Exact deadlines are
//! simpler to reason about and to test, and are interoperable: remote nodes only see that a peer is
//! eventually forgotten. To reproduce the reference's *average* lifetime pass `ttl = maxAge`; to be
//! sure an entry outlives every reference node pass `1.33 × maxAge`. The Node CLI without `--dpa`
//! never expires entries (docs/protocol.md §13.1): pass [`TTL_NEVER`] for that.
//!
//! # Sources: who may change an entry
//!
//! Every entry belongs to the [`Source`] that stored it: the IPv4 source address of the
//! `announce_peer` ([`Source::Remote`]), or the node itself for its own `-b` entries
//! ([`Source::Local`]). Only the owner refreshes an entry (re-announcing the same
//! `(name, addr)` moves its deadline) or removes it ([`AnnounceStore::remove`]); the same
//! `(name, addr)` announced or removed by another source changes nothing
//! ([`StoreError::NotOwner`], `false`). A remote source can only announce its own IP anyway
//! (the node stores `from.ip:port`), so in practice this keeps remote hosts away from the node's
//! own entries.
//!
//! # Bounds and eviction: the heaviest source pays
//!
//! * `NAMES` name slots, each holding a name of at most [`MAX_NAME_LEN`] bytes inline.
//! * `PEERS` peer entries in total, shared by all names.
//! * `PER_NAME` entries at most for one name (default [`DEFAULT_PER_NAME`]), so that one busy
//!   or hostile name cannot take the whole store and a `get_peers` answer stays small.
//!
//! A new entry of source `S` is made room for by these rules, in this order:
//! 1. dead entries (deadline `<= now`) are dropped first;
//! 2. if the name already has `PER_NAME` entries, the source holding the **most entries in that
//!    name** gives one up: its entry of that name closest to expiry is replaced by the new one.
//!    `S` is counted with the new entry (one more than it holds), and ties go against `S`: so
//!    `S` replaces its own entry as soon as it holds as many as anyone else would after the
//!    announce. If `S` holds none there and every other source holds one, the announce is
//!    refused ([`StoreError::Full`]): first come, first served among equals;
//! 3. otherwise, while the store has no free entry (or the name is new and there is no free
//!    name slot), the source holding the **most entries in the store** loses its **least
//!    recently announced** entry, with the same counting and tie rule (`S` loses its own when
//!    `S`'s count plus one is at least the largest count; `S` holding nothing while every
//!    source holds one entry refuses the announce). The node announces every entry with one
//!    TTL, so the least recently announced entry is also the one closest to expiry. A name
//!    slot is freed when its last entry goes.
//!
//! This is max-min fairness: a flood from one source only ever evicts that source's own entries
//! once it holds the largest share, so it never takes more than an equal share from a source
//! that holds less. A busy honest grape (which announces for every worker behind it) that holds
//! more than an equal share can be pushed down to it by a growing flood, never below: with `n`
//! sources competing for a full store, everyone keeps at least `PEERS / n` entries (and at
//! least `PER_NAME / n` in a contested name) if it announced that many. Many source addresses
//! (a Sybil) are beyond what counting per address can defend.
//!
//! A store with fewer name slots than entries (`NAMES < PEERS`) may have to drop several
//! entries under rule 3 before a name slot frees (each costing as below, at most `PEERS` in
//! all), and may still be refused once every source is down to one entry; with
//! `NAMES >= PEERS`, as on a host, one eviction always frees a name slot when the names are
//! full (every name then holds exactly one entry). Either way a source only loses an entry
//! while it holds at least two more than `S` at that moment, so it never ends with fewer than
//! `S` (with the new entry counted).
//!
//! # Cost
//!
//! Names and sources are found through a seeded FNV-1a hash with separate chaining (`NAMES` and
//! `PEERS` buckets; expected O(1), no scan over the store). Deadlines sit in an indexed binary
//! min-heap; every source keeps its entries in a list in announce order and sits in a list of
//! the sources with the same entry count, so the heaviest source and its least recently
//! announced entry are found in O(1). `announce`, `remove` and each expired entry cost
//! O(log `PEERS`) plus up to four walks over the at most `PER_NAME` entries of the one name
//! (rule 2); [`AnnounceStore::next_expiry`] is O(1).
//!
//! # Memory
//!
//! About `NAMES × 156 + PEERS × 108` bytes (the per-source table, its buckets, the count lists
//! and the source links of each entry take 56 of the 108 bytes per entry): about 2.7 MB for the
//! host's 10,240 names and entries (1.6 MB before sources were tracked).

use crate::addr::PeerAddr;
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Longest service name the store accepts, in bytes. Grenache names are short
/// (`rest:net:util`); the bound keeps every name slot inline and fixed-size.
pub const MAX_NAME_LEN: usize = 128;

/// Default per-name cap: 100 entries, the sample size of Grape's `/lookup` (`_mem.get(ih, 100)`),
/// and about 800 bytes of compact `values` in a `get_peers` answer.
pub const DEFAULT_PER_NAME: usize = 100;

/// A TTL that never runs out: the deadline saturates at the far future, which no clock reaches (the
/// Node CLI's behaviour without `--dpa`, docs/protocol.md §13.1). [`AnnounceStore::next_expiry`]
/// ignores it.
pub const TTL_NEVER: Duration = Duration::MAX;

/// The deadline of an entry announced with [`TTL_NEVER`].
const NEVER: Instant = Instant::from_millis(u64::MAX);

/// "No slot" in the intrusive links.
const NIL: u32 = u32::MAX;

// Name lengths are stored in a `u8`.
const _: () = assert!(MAX_NAME_LEN <= u8::MAX as usize);

/// Who stored an entry (or a BEP 44 item): the unit between which a full store shares its room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Source {
    /// The node itself: its own announces with `-b`, its own puts.
    Local,
    /// A remote host, by the IPv4 source address of its query.
    Remote([u8; 4]),
}

impl Source {
    /// The bytes the source hash is computed over (a tag, so that `Local` differs from every
    /// address).
    fn bytes(self) -> [u8; 5] {
        match self {
            Source::Local => [0; 5],
            Source::Remote([a, b, c, d]) => [1, a, b, c, d],
        }
    }
}

/// Why an announce was refused. Nothing was changed in the store, except that under
/// [`StoreError::Full`] the announcer may have lost some of its own entries (see the
/// [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    /// The name is empty.
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong,
    /// Port 0 (bittorrent-dht drops such announces too, and skips such peers in `values`).
    ZeroPort,
    /// A TTL of zero would store an entry that is already dead.
    ZeroTtl,
    /// The store was built with a zero capacity (`NAMES`, `PEERS` or `PER_NAME` is 0), or with
    /// one that does not fit the store's 32-bit slot indices.
    NoCapacity,
    /// The `(name, addr)` entry exists and belongs to another source: it was not refreshed.
    NotOwner,
    /// The name (or the store) is full, every source in it holds one entry and the announcer
    /// none: there is no fair victim, the newcomer waits for an entry to expire.
    Full,
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StoreError::EmptyName => "empty service name",
            StoreError::NameTooLong => "service name too long",
            StoreError::ZeroPort => "port 0",
            StoreError::ZeroTtl => "zero TTL",
            StoreError::NoCapacity => "store has no capacity",
            StoreError::NotOwner => "entry belongs to another source",
            StoreError::Full => "store full, no source holds more than one entry",
        })
    }
}

impl core::error::Error for StoreError {}

#[derive(Clone)]
struct NameSlot {
    /// Empty for a free slot (names are never empty); a `u8` length (`MAX_NAME_LEN` fits).
    name: heapless::Vec<u8, MAX_NAME_LEN, u8>,
    hash: u32,
    /// Number of peer entries of this name.
    count: u32,
    /// First peer entry of this name.
    head: u32,
    /// Next name in the same hash bucket; for a free slot, the next free slot.
    chain: u32,
}

impl NameSlot {
    const FREE: NameSlot = NameSlot {
        name: heapless::Vec::new(),
        hash: 0,
        count: 0,
        head: NIL,
        chain: NIL,
    };

    fn name(&self) -> &[u8] {
        &self.name
    }
}

#[derive(Clone, Copy)]
struct PeerSlot {
    addr: PeerAddr,
    expires: Instant,
    /// Owning name slot; `NIL` for a free entry.
    name: u32,
    prev: u32,
    /// Next entry of the same name; for a free entry, the next free entry.
    next: u32,
    /// Position in the deadline heap.
    heap: u32,
    /// Owning source slot.
    src: u32,
    /// Neighbours in the source's list (announce order, least recent first).
    src_prev: u32,
    src_next: u32,
}

impl PeerSlot {
    const FREE: PeerSlot = PeerSlot {
        addr: PeerAddr::new([0; 4], 0),
        expires: Instant::ZERO,
        name: NIL,
        prev: NIL,
        next: NIL,
        heap: NIL,
        src: NIL,
        src_prev: NIL,
        src_next: NIL,
    };
}

/// A heap node: the deadline is copied next to the slot index so that sifting compares
/// contiguous memory instead of chasing into the peer slots.
#[derive(Clone, Copy)]
struct HeapEntry {
    expires: Instant,
    slot: u32,
}

impl HeapEntry {
    const FREE: HeapEntry = HeapEntry {
        expires: NEVER,
        slot: NIL,
    };
}

/// One source with entries in the store.
#[derive(Clone, Copy)]
struct SrcSlot {
    source: Source,
    /// Entries it holds; 0 marks a free slot.
    count: u32,
    /// Its least and most recently announced entries.
    head: u32,
    tail: u32,
    /// Next source in the same hash bucket; for a free slot, the next free slot.
    chain: u32,
    /// Neighbours among the sources with the same `count`.
    up: u32,
    down: u32,
    /// Scratch counter of rule 2 (entries in one name); 0 between calls.
    mark: u32,
}

impl SrcSlot {
    const FREE: SrcSlot = SrcSlot {
        source: Source::Local,
        count: 0,
        head: NIL,
        tail: NIL,
        chain: NIL,
        up: NIL,
        down: NIL,
        mark: 0,
    };
}

/// A bounded map from service name to announced peers with exact per-entry deadlines and an
/// owner per entry.
///
/// See the [module docs](self) for the ownership, expiry and eviction rules. `NAMES` and
/// `PEERS` must be below `u32::MAX`; a store with a zero capacity refuses every announce with
/// [`StoreError::NoCapacity`].
///
/// The value is large (about `NAMES × 156 + PEERS × 108` bytes) and needs no initialisation
/// at run time: [`AnnounceStore::new`] is `const`, so a board can keep it in a `static`.
pub struct AnnounceStore<
    const NAMES: usize,
    const PEERS: usize,
    const PER_NAME: usize = DEFAULT_PER_NAME,
> {
    names: [NameSlot; NAMES],
    buckets: [u32; NAMES],
    /// Name slots `0..names_used` have been handed out at least once.
    names_used: u32,
    free_names: u32,
    name_count: u32,
    peers: [PeerSlot; PEERS],
    peers_used: u32,
    free_peers: u32,
    /// Min-heap of peer entries by deadline; its length is the number of stored entries.
    heap: [HeapEntry; PEERS],
    heap_len: u32,
    /// Sources with at least one entry: no more than entries, so `PEERS` slots always do.
    srcs: [SrcSlot; PEERS],
    src_buckets: [u32; PEERS],
    srcs_used: u32,
    free_srcs: u32,
    /// `by_count[c - 1]`: first source holding exactly `c` entries.
    by_count: [u32; PEERS],
    /// The largest entry count of a source (0 when empty).
    max_count: u32,
    seed: u32,
}

impl<const NAMES: usize, const PEERS: usize, const PER_NAME: usize> Default
    for AnnounceStore<NAMES, PEERS, PER_NAME>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const NAMES: usize, const PEERS: usize, const PER_NAME: usize> core::fmt::Debug
    for AnnounceStore<NAMES, PEERS, PER_NAME>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AnnounceStore")
            .field("names", &self.name_count)
            .field("entries", &self.heap_len)
            .field("next_expiry", &self.next_expiry())
            .finish()
    }
}

/// What rule 2 or 3 decided.
enum Victim {
    /// Drop (or replace) this entry.
    Entry(u32),
    /// Refuse the announce ([`StoreError::Full`]).
    Refuse,
}

impl<const NAMES: usize, const PEERS: usize, const PER_NAME: usize>
    AnnounceStore<NAMES, PEERS, PER_NAME>
{
    /// An empty store with the fixed hash seed 0.
    ///
    /// Names come from the network, so a node reachable by untrusted peers should prefer
    /// [`AnnounceStore::with_hash_seed`] with a random seed: it makes it harder to precompute
    /// many names that land in one bucket. (FNV is not a keyed PRF; a long chain would only slow
    /// lookups down to a scan over at most `NAMES` names, never break the bounds.)
    pub const fn new() -> Self {
        Self::with_hash_seed(0)
    }

    /// An empty store whose name hash is keyed with `seed` (take it from the node's [`Rng`]).
    pub const fn with_hash_seed(seed: u32) -> Self {
        AnnounceStore {
            names: [NameSlot::FREE; NAMES],
            buckets: [NIL; NAMES],
            names_used: 0,
            free_names: NIL,
            name_count: 0,
            peers: [PeerSlot::FREE; PEERS],
            peers_used: 0,
            free_peers: NIL,
            heap: [HeapEntry::FREE; PEERS],
            heap_len: 0,
            srcs: [SrcSlot::FREE; PEERS],
            src_buckets: [NIL; PEERS],
            srcs_used: 0,
            free_srcs: NIL,
            by_count: [NIL; PEERS],
            max_count: 0,
            seed,
        }
    }

    /// Stores (or refreshes) `addr` under `name` until `now + ttl`, on behalf of `source`.
    ///
    /// Re-announcing an address that `source` already stored for `name` only moves its
    /// deadline; one stored by another source is left alone ([`StoreError::NotOwner`]). When
    /// the store or the name is full, the source holding the most entries there makes room as
    /// described in the [module docs](self). On error nothing changes (but see
    /// [`StoreError::Full`]).
    pub fn announce(
        &mut self,
        now: Instant,
        name: &[u8],
        addr: PeerAddr,
        ttl: Duration,
        source: Source,
    ) -> Result<(), StoreError> {
        check_name(name)?;
        if addr.port == 0 {
            return Err(StoreError::ZeroPort);
        }
        if ttl.is_zero() {
            return Err(StoreError::ZeroTtl);
        }
        if !Self::has_capacity() {
            return Err(StoreError::NoCapacity);
        }
        let expires = now.saturating_add(ttl);
        self.expire(now);

        let hash = self.hash(name);
        let mut ni = self.find_name(name, hash);
        if ni != NIL {
            if let Some(pi) = self.find_peer(ni, addr) {
                if self.owner(pi) != Some(source) {
                    return Err(StoreError::NotOwner);
                }
                self.set_expiry(pi, expires);
                self.src_touch(pi);
                return Ok(());
            }
            if self
                .name_slot(ni)
                .is_some_and(|n| n.count as usize >= PER_NAME)
            {
                // Rule 2: the heaviest source of this name gives up an entry, in place.
                let Victim::Entry(victim) = self.name_victim(ni, source) else {
                    return Err(StoreError::Full);
                };
                self.src_detach(victim);
                if let Some(p) = self.peers.get_mut(victim as usize) {
                    p.addr = addr;
                }
                self.set_expiry(victim, expires);
                self.src_attach(victim, source);
                return Ok(());
            }
        }

        // Rule 3: the heaviest source of the store loses entries until the new one fits.
        loop {
            let peer_ok = (self.heap_len as usize) < PEERS;
            let name_ok = ni != NIL || (self.name_count as usize) < NAMES;
            if peer_ok && name_ok {
                break;
            }
            let Victim::Entry(victim) = self.store_victim(source) else {
                return Err(StoreError::Full);
            };
            let owner = self.peers.get(victim as usize).map_or(NIL, |p| p.name);
            self.remove_peer(victim);
            if owner == ni && self.name_slot(ni).is_none_or(|n| n.name.is_empty()) {
                ni = NIL;
            }
        }

        if ni == NIL {
            ni = self.alloc_name(name, hash);
        }
        let pi = self.alloc_peer();
        if ni == NIL || pi == NIL {
            // Unreachable: the loop above made room for both.
            return Err(StoreError::NoCapacity);
        }
        let old_head = self.name_slot(ni).map_or(NIL, |n| n.head);
        if let Some(p) = self.peers.get_mut(pi as usize) {
            *p = PeerSlot {
                addr,
                expires,
                name: ni,
                prev: NIL,
                next: old_head,
                ..PeerSlot::FREE
            };
        }
        if let Some(h) = self.peers.get_mut(old_head as usize) {
            h.prev = pi;
        }
        if let Some(n) = self.names.get_mut(ni as usize) {
            n.head = pi;
            n.count = n.count.saturating_add(1);
        }
        self.heap_push(pi);
        self.src_attach(pi, source);
        Ok(())
    }

    /// Removes `addr` from `name` (Grape's `/unannounce`) if `source` stored it. Returns whether
    /// it was removed: `false` when it was not stored, or stored by another source.
    pub fn remove(&mut self, name: &[u8], addr: PeerAddr, source: Source) -> bool {
        if check_name(name).is_err() {
            return false;
        }
        let ni = self.find_name(name, self.hash(name));
        if ni == NIL {
            return false;
        }
        match self.find_peer(ni, addr) {
            Some(pi) if self.owner(pi) == Some(source) => {
                self.remove_peer(pi);
                true
            }
            _ => false,
        }
    }

    /// The source that stored `addr` under `name`, if it is stored (dead or alive).
    pub fn owner_of(&self, name: &[u8], addr: PeerAddr) -> Option<Source> {
        check_name(name).ok()?;
        let ni = self.find_name(name, self.hash(name));
        self.owner(self.find_peer(ni, addr)?)
    }

    /// Number of entries `source` holds in the whole store, including dead ones not yet
    /// [expired](Self::expire).
    pub fn source_len(&self, source: Source) -> usize {
        self.srcs
            .get(self.src_find(source) as usize)
            .map_or(0, |s| s.count as usize)
    }

    /// Writes a uniformly random sample of the live peers of `name` (deadline after `now`) into
    /// `out`, in random order, without duplicates; returns how many were written: all live
    /// peers if they fit, else `out.len()`.
    ///
    /// Grape's `/lookup` answers with a sample of 100 (`_mem.get(ih, 100)`); `get_peers`
    /// answers with all of them (pass a buffer of `PER_NAME`).
    #[must_use]
    pub fn sample<R: Rng + ?Sized>(
        &self,
        now: Instant,
        name: &[u8],
        rng: &mut R,
        out: &mut [PeerAddr],
    ) -> usize {
        let mut filled = 0usize;
        let mut seen = 0u32;
        // Reservoir sampling (algorithm R), then a Fisher–Yates shuffle of what was kept: the
        // reservoir keeps list order while it is not full, and callers want random order.
        for addr in self.peers(now, name) {
            if filled < out.len() {
                if let Some(slot) = out.get_mut(filled) {
                    *slot = addr;
                }
                filled += 1;
            } else {
                let j = rng.below(seen.saturating_add(1)) as usize;
                if let Some(slot) = out.get_mut(j) {
                    *slot = addr;
                }
            }
            seen = seen.saturating_add(1);
        }
        // `filled <= out.len()`: it only grows while there is room.
        if let Some(kept) = out.get_mut(..filled) {
            for i in (1..kept.len()).rev() {
                let j = rng.below(u32::try_from(i + 1).unwrap_or(u32::MAX)) as usize;
                if j < kept.len() {
                    kept.swap(i, j);
                }
            }
        }
        filled
    }

    /// The live peers of `name` (deadline after `now`), in storage order (newest entry first;
    /// an entry replaced under the per-name cap keeps its place). Use
    /// [`sample`](Self::sample) for a random order.
    pub fn peers(&self, now: Instant, name: &[u8]) -> Peers<'_> {
        let head = if check_name(name).is_ok() {
            let ni = self.find_name(name, self.hash(name));
            self.name_slot(ni).map_or(NIL, |n| n.head)
        } else {
            NIL
        };
        Peers {
            slots: &self.peers,
            next: head,
            now,
        }
    }

    /// Number of entries stored for `name`, including dead ones not yet [expired](Self::expire).
    pub fn count(&self, name: &[u8]) -> usize {
        if check_name(name).is_err() {
            return 0;
        }
        let ni = self.find_name(name, self.hash(name));
        self.name_slot(ni).map_or(0, |n| n.count as usize)
    }

    /// Drops every entry whose deadline is `<= now`; returns how many were dropped.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&top) = self
            .heap
            .get(..self.heap_len as usize)
            .and_then(|h| h.first())
        {
            if top.expires > now {
                break;
            }
            self.remove_peer(top.slot);
            dropped += 1;
        }
        dropped
    }

    /// The earliest deadline of a stored entry: call [`expire`](Self::expire) then. `None` when
    /// the store is empty or holds only [`TTL_NEVER`] entries.
    pub fn next_expiry(&self) -> Option<Instant> {
        let expires = self.heap.get(..self.heap_len as usize)?.first()?.expires;
        (expires != NEVER).then_some(expires)
    }

    /// Number of stored entries (all names), including dead ones not yet expired.
    pub fn len(&self) -> usize {
        self.heap_len as usize
    }

    /// Whether the store holds no entry.
    pub fn is_empty(&self) -> bool {
        self.heap_len == 0
    }

    /// Number of names with at least one stored entry.
    pub fn names_len(&self) -> usize {
        self.name_count as usize
    }

    /// Every stored name with its entries (each `(addr, deadline)`, dead ones not yet
    /// [expired](Self::expire) included; the deadline of a [`TTL_NEVER`] entry is
    /// `Instant::from_millis(u64::MAX)`), names in slot order. Read-only: for showing the store to an operator.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], StoredPeers<'_>)> + '_ {
        let used = (self.names_used as usize).min(NAMES);
        self.names
            .get(..used)
            .unwrap_or(&[])
            .iter()
            .filter(|n| n.count > 0)
            .map(|n| {
                (
                    n.name(),
                    StoredPeers {
                        slots: &self.peers,
                        next: n.head,
                    },
                )
            })
    }

    fn has_capacity() -> bool {
        NAMES > 0
            && PEERS > 0
            && PER_NAME > 0
            && u32::try_from(NAMES).is_ok_and(|n| n < NIL)
            && u32::try_from(PEERS).is_ok_and(|n| n < NIL)
    }

    /// Seeded FNV-1a with a murmur3 finaliser, so that the low bits used for the bucket depend
    /// on every input byte.
    fn hash(&self, name: &[u8]) -> u32 {
        let mut h = 0x811c_9dc5u32 ^ self.seed;
        for &b in name {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }

    fn bucket(hash: u32) -> usize {
        (hash as usize).checked_rem(NAMES).unwrap_or(0)
    }

    fn name_slot(&self, ni: u32) -> Option<&NameSlot> {
        self.names.get(ni as usize)
    }

    fn find_name(&self, name: &[u8], hash: u32) -> u32 {
        let mut ni = self.buckets.get(Self::bucket(hash)).copied().unwrap_or(NIL);
        while let Some(n) = self.name_slot(ni) {
            if n.hash == hash && n.name() == name {
                return ni;
            }
            ni = n.chain;
        }
        NIL
    }

    fn alloc_name(&mut self, name: &[u8], hash: u32) -> u32 {
        let ni = if self.free_names != NIL {
            let ni = self.free_names;
            self.free_names = self.name_slot(ni).map_or(NIL, |n| n.chain);
            ni
        } else if (self.names_used as usize) < NAMES {
            self.names_used += 1;
            self.names_used - 1
        } else {
            return NIL;
        };
        let bucket = Self::bucket(hash);
        let chain = self.buckets.get(bucket).copied().unwrap_or(NIL);
        let Some(slot) = self.names.get_mut(ni as usize) else {
            return NIL;
        };
        *slot = NameSlot {
            // Longer names were refused before (`check_name`); were one to get here, the
            // slot would stay free rather than hold a cut name.
            name: heapless::Vec::from_slice(name).unwrap_or_default(),
            hash,
            count: 0,
            head: NIL,
            chain,
        };
        if let Some(b) = self.buckets.get_mut(bucket) {
            *b = ni;
        }
        self.name_count += 1;
        ni
    }

    fn free_name(&mut self, ni: u32) {
        let Some(slot) = self.name_slot(ni) else {
            return;
        };
        let (bucket, next_in_chain) = (Self::bucket(slot.hash), slot.chain);
        // Unlink from the bucket chain.
        let first = self.buckets.get(bucket).copied().unwrap_or(NIL);
        if first == ni {
            if let Some(b) = self.buckets.get_mut(bucket) {
                *b = next_in_chain;
            }
        } else {
            let mut cur = first;
            while let Some(n) = self.name_slot(cur) {
                if n.chain == ni {
                    if let Some(n) = self.names.get_mut(cur as usize) {
                        n.chain = next_in_chain;
                    }
                    break;
                }
                cur = n.chain;
            }
        }
        let free_head = self.free_names;
        if let Some(slot) = self.names.get_mut(ni as usize) {
            *slot = NameSlot {
                chain: free_head,
                ..NameSlot::FREE
            };
        }
        self.free_names = ni;
        self.name_count = self.name_count.saturating_sub(1);
    }

    fn find_peer(&self, ni: u32, addr: PeerAddr) -> Option<u32> {
        let mut pi = self.name_slot(ni)?.head;
        while let Some(p) = self.peers.get(pi as usize) {
            if p.addr == addr {
                return Some(pi);
            }
            pi = p.next;
        }
        None
    }

    /// Rule 2: the entry of full name `ni` that makes room for a new entry of `source`.
    ///
    /// Four walks over the name's entries: count per source (in the sources' scratch `mark`),
    /// find the largest count of another source, pick the victim entry, clear the marks.
    fn name_victim(&mut self, ni: u32, source: Source) -> Victim {
        let head = self.name_slot(ni).map_or(NIL, |n| n.head);
        let own = self.src_find(source);
        let mut pi = head;
        while let Some(&p) = self.peers.get(pi as usize) {
            if let Some(s) = self.srcs.get_mut(p.src as usize) {
                s.mark = s.mark.saturating_add(1);
            }
            pi = p.next;
        }
        let own_count = self.srcs.get(own as usize).map_or(0, |s| s.mark);
        let mut max_other = 0u32;
        pi = head;
        while let Some(&p) = self.peers.get(pi as usize) {
            if p.src != own {
                max_other = max_other.max(self.srcs.get(p.src as usize).map_or(0, |s| s.mark));
            }
            pi = p.next;
        }
        // The newcomer counts with its new entry; ties go against it. When it loses while
        // holding nothing here, no entry qualifies and the announce is refused.
        let newcomer_loses = own_count.saturating_add(1) >= max_other;
        let mut best = NIL;
        let mut best_expiry = NEVER;
        pi = head;
        while let Some(&p) = self.peers.get(pi as usize) {
            let candidate = if newcomer_loses {
                own != NIL && p.src == own
            } else {
                p.src != own
                    && self
                        .srcs
                        .get(p.src as usize)
                        .is_some_and(|s| s.mark == max_other)
            };
            if candidate && (best == NIL || p.expires < best_expiry) {
                best = pi;
                best_expiry = p.expires;
            }
            pi = p.next;
        }
        pi = head;
        while let Some(&p) = self.peers.get(pi as usize) {
            if let Some(s) = self.srcs.get_mut(p.src as usize) {
                s.mark = 0;
            }
            pi = p.next;
        }
        if best == NIL {
            Victim::Refuse
        } else {
            Victim::Entry(best)
        }
    }

    /// Rule 3: the entry to drop so that `source` can store one more: the least recently
    /// announced entry of the source with the most entries, `source` itself on a tie.
    fn store_victim(&self, source: Source) -> Victim {
        let own = self.srcs.get(self.src_find(source) as usize);
        let own_count = own.map_or(0, |s| s.count);
        let loser = match own {
            Some(s) if own_count.saturating_add(1) >= self.max_count => Some(s),
            // Holding nothing against sources that hold one each: nobody to take from.
            _ if self.max_count <= 1 => None,
            // The heaviest (another source: `source` is lighter by at least two).
            _ => self
                .by_count
                .get((self.max_count as usize).wrapping_sub(1))
                .and_then(|&si| self.srcs.get(si as usize)),
        };
        match loser {
            Some(s) if s.head != NIL => Victim::Entry(s.head),
            _ => Victim::Refuse,
        }
    }

    fn alloc_peer(&mut self) -> u32 {
        if self.free_peers != NIL {
            let pi = self.free_peers;
            self.free_peers = self.peers.get(pi as usize).map_or(NIL, |p| p.next);
            pi
        } else if (self.peers_used as usize) < PEERS {
            self.peers_used += 1;
            self.peers_used - 1
        } else {
            NIL
        }
    }

    /// Unlinks entry `pi` from its name, the heap and frees it (and its name when it was the
    /// name's last entry).
    fn remove_peer(&mut self, pi: u32) {
        let Some(&p) = self.peers.get(pi as usize) else {
            return;
        };
        if p.name == NIL {
            return;
        }
        if let Some(prev) = self.peers.get_mut(p.prev as usize) {
            prev.next = p.next;
        } else if let Some(n) = self.names.get_mut(p.name as usize) {
            n.head = p.next;
        }
        if let Some(next) = self.peers.get_mut(p.next as usize) {
            next.prev = p.prev;
        }
        let mut name_empty = false;
        if let Some(n) = self.names.get_mut(p.name as usize) {
            n.count = n.count.saturating_sub(1);
            name_empty = n.count == 0;
        }
        if name_empty {
            self.free_name(p.name);
        }
        self.heap_remove(p.heap as usize);
        self.src_detach(pi);
        let free_head = self.free_peers;
        if let Some(slot) = self.peers.get_mut(pi as usize) {
            *slot = PeerSlot {
                next: free_head,
                ..PeerSlot::FREE
            };
        }
        self.free_peers = pi;
    }

    // ---- sources ---------------------------------------------------------------------------

    fn owner(&self, pi: u32) -> Option<Source> {
        let p = self.peers.get(pi as usize)?;
        self.srcs.get(p.src as usize).map(|s| s.source)
    }

    fn src_bucket(&self, source: Source) -> usize {
        (self.hash(&source.bytes()) as usize)
            .checked_rem(PEERS)
            .unwrap_or(0)
    }

    fn src_find(&self, source: Source) -> u32 {
        let mut si = self
            .src_buckets
            .get(self.src_bucket(source))
            .copied()
            .unwrap_or(NIL);
        while let Some(s) = self.srcs.get(si as usize) {
            if s.source == source {
                return si;
            }
            si = s.chain;
        }
        NIL
    }

    /// The slot of `source`, allocated (with no entries) if it has none. There is always room:
    /// a source slot is only held by a source with entries, and a new entry is only attached
    /// while the store has room for it.
    fn src_get_or_alloc(&mut self, source: Source) -> u32 {
        let found = self.src_find(source);
        if found != NIL {
            return found;
        }
        let si = if self.free_srcs != NIL {
            let si = self.free_srcs;
            self.free_srcs = self.srcs.get(si as usize).map_or(NIL, |s| s.chain);
            si
        } else if (self.srcs_used as usize) < PEERS {
            self.srcs_used += 1;
            self.srcs_used - 1
        } else {
            return NIL;
        };
        let bucket = self.src_bucket(source);
        let chain = self.src_buckets.get(bucket).copied().unwrap_or(NIL);
        if let Some(s) = self.srcs.get_mut(si as usize) {
            *s = SrcSlot {
                source,
                chain,
                ..SrcSlot::FREE
            };
        }
        if let Some(b) = self.src_buckets.get_mut(bucket) {
            *b = si;
        }
        si
    }

    /// Unhooks the (now empty) source slot `si` from its bucket and frees it.
    fn src_free(&mut self, si: u32) {
        let Some(&slot) = self.srcs.get(si as usize) else {
            return;
        };
        let bucket = self.src_bucket(slot.source);
        let first = self.src_buckets.get(bucket).copied().unwrap_or(NIL);
        if first == si {
            if let Some(b) = self.src_buckets.get_mut(bucket) {
                *b = slot.chain;
            }
        } else {
            let mut cur = first;
            while let Some(s) = self.srcs.get(cur as usize) {
                if s.chain == si {
                    if let Some(s) = self.srcs.get_mut(cur as usize) {
                        s.chain = slot.chain;
                    }
                    break;
                }
                cur = s.chain;
            }
        }
        let free_head = self.free_srcs;
        if let Some(s) = self.srcs.get_mut(si as usize) {
            *s = SrcSlot {
                chain: free_head,
                ..SrcSlot::FREE
            };
        }
        self.free_srcs = si;
    }

    /// Takes `si` out of the list of sources with its count.
    fn count_unlink(&mut self, si: u32) {
        let Some(&s) = self.srcs.get(si as usize) else {
            return;
        };
        if s.count == 0 {
            return;
        }
        if let Some(up) = self.srcs.get_mut(s.up as usize) {
            up.down = s.down;
        } else if let Some(first) = self.by_count.get_mut(s.count as usize - 1) {
            *first = s.down;
        }
        if let Some(down) = self.srcs.get_mut(s.down as usize) {
            down.up = s.up;
        }
    }

    /// Puts `si` first in the list of sources with its count.
    fn count_link(&mut self, si: u32) {
        let Some(count) = self.srcs.get(si as usize).map(|s| s.count) else {
            return;
        };
        let Some(first) = count
            .checked_sub(1)
            .and_then(|c| self.by_count.get_mut(c as usize))
        else {
            return;
        };
        let old = *first;
        *first = si;
        if let Some(o) = self.srcs.get_mut(old as usize) {
            o.up = si;
        }
        if let Some(s) = self.srcs.get_mut(si as usize) {
            s.up = NIL;
            s.down = old;
        }
    }

    /// Appends entry `pi` to `source`'s list (as its most recent) and counts it.
    fn src_attach(&mut self, pi: u32, source: Source) {
        let si = self.src_get_or_alloc(source);
        let Some(&s) = self.srcs.get(si as usize) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(pi as usize) {
            p.src = si;
            p.src_prev = s.tail;
            p.src_next = NIL;
        }
        if let Some(t) = self.peers.get_mut(s.tail as usize) {
            t.src_next = pi;
        }
        self.count_unlink(si);
        if let Some(s) = self.srcs.get_mut(si as usize) {
            if s.head == NIL {
                s.head = pi;
            }
            s.tail = pi;
            s.count = s.count.saturating_add(1);
            self.max_count = self.max_count.max(s.count);
        }
        self.count_link(si);
    }

    /// Takes entry `pi` out of its source's list and count (freeing the source slot when it was
    /// the last entry).
    fn src_detach(&mut self, pi: u32) {
        let Some(&p) = self.peers.get(pi as usize) else {
            return;
        };
        let si = p.src;
        if self.srcs.get(si as usize).is_none() {
            return;
        }
        if let Some(prev) = self.peers.get_mut(p.src_prev as usize) {
            prev.src_next = p.src_next;
        } else if let Some(s) = self.srcs.get_mut(si as usize) {
            s.head = p.src_next;
        }
        if let Some(next) = self.peers.get_mut(p.src_next as usize) {
            next.src_prev = p.src_prev;
        } else if let Some(s) = self.srcs.get_mut(si as usize) {
            s.tail = p.src_prev;
        }
        if let Some(p) = self.peers.get_mut(pi as usize) {
            p.src = NIL;
            p.src_prev = NIL;
            p.src_next = NIL;
        }
        let old = self.srcs.get(si as usize).map_or(0, |s| s.count);
        self.count_unlink(si);
        if let Some(s) = self.srcs.get_mut(si as usize) {
            s.count = old.saturating_sub(1);
        }
        self.count_link(si);
        // Counts move by one: the largest only falls when its list just emptied.
        if old == self.max_count
            && self
                .by_count
                .get((old as usize).wrapping_sub(1))
                .is_none_or(|&f| f == NIL)
        {
            self.max_count = old.saturating_sub(1);
        }
        if old <= 1 {
            self.src_free(si);
        }
    }

    /// Makes entry `pi` its source's most recently announced (a refresh).
    fn src_touch(&mut self, pi: u32) {
        if let Some(source) = self.owner(pi) {
            self.src_detach(pi);
            self.src_attach(pi, source);
        }
    }

    fn set_expiry(&mut self, pi: u32, expires: Instant) {
        let Some(p) = self.peers.get_mut(pi as usize) else {
            return;
        };
        p.expires = expires;
        let pos = p.heap as usize;
        if let Some(h) = self.heap.get_mut(pos) {
            h.expires = expires;
        }
        let pos = self.sift_up(pos);
        self.sift_down(pos);
    }

    // ---- deadline heap -------------------------------------------------------------------

    fn key(&self, pos: usize) -> Instant {
        self.heap.get(pos).map_or(NEVER, |e| e.expires)
    }

    fn heap_place(&mut self, pos: usize, entry: HeapEntry) {
        if let Some(h) = self.heap.get_mut(pos) {
            *h = entry;
        }
        if let Some(p) = self.peers.get_mut(entry.slot as usize) {
            p.heap = u32::try_from(pos).unwrap_or(NIL);
        }
    }

    fn heap_swap(&mut self, a: usize, b: usize) {
        let (Some(&ea), Some(&eb)) = (self.heap.get(a), self.heap.get(b)) else {
            return;
        };
        self.heap_place(a, eb);
        self.heap_place(b, ea);
    }

    fn sift_up(&mut self, mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.key(pos) < self.key(parent) {
                self.heap_swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
        pos
    }

    fn sift_down(&mut self, mut pos: usize) {
        let len = self.heap_len as usize;
        loop {
            let left = pos.saturating_mul(2).saturating_add(1);
            let right = left.saturating_add(1);
            let mut smallest = pos;
            if left < len && self.key(left) < self.key(smallest) {
                smallest = left;
            }
            if right < len && self.key(right) < self.key(smallest) {
                smallest = right;
            }
            if smallest == pos {
                return;
            }
            self.heap_swap(pos, smallest);
            pos = smallest;
        }
    }

    fn heap_push(&mut self, pi: u32) {
        let pos = self.heap_len as usize;
        if pos >= PEERS {
            return;
        }
        let expires = self.peers.get(pi as usize).map_or(NEVER, |p| p.expires);
        self.heap_place(pos, HeapEntry { expires, slot: pi });
        self.heap_len += 1;
        self.sift_up(pos);
    }

    fn heap_remove(&mut self, pos: usize) {
        let len = self.heap_len as usize;
        if pos >= len {
            return;
        }
        let last = len - 1;
        self.heap_swap(pos, last);
        if let Some(h) = self.heap.get_mut(last) {
            *h = HeapEntry::FREE;
        }
        self.heap_len -= 1;
        if pos < last {
            let pos = self.sift_up(pos);
            self.sift_down(pos);
        }
    }

    /// Checks every structural invariant; tests call it after each operation.
    #[cfg(test)]
    fn check_invariants(&self) {
        use std::collections::{HashMap, HashSet};
        let len = self.heap_len as usize;
        assert!(len <= PEERS);
        // Heap order and back-pointers.
        for pos in 0..len {
            let pi = self.heap[pos].slot;
            assert_eq!(self.peers[pi as usize].heap as usize, pos);
            assert_eq!(self.peers[pi as usize].expires, self.heap[pos].expires);
            assert_ne!(self.peers[pi as usize].name, NIL);
            if pos > 0 {
                assert!(self.key((pos - 1) / 2) <= self.key(pos));
            }
        }
        // Names: chains reach every live name exactly once, counts match the lists.
        let mut names = HashSet::new();
        let mut total = 0usize;
        let mut per_source: HashMap<u32, usize> = HashMap::new();
        for (b, &first) in self.buckets.iter().enumerate() {
            let mut ni = first;
            while ni != NIL {
                let n = &self.names[ni as usize];
                assert!(!n.name.is_empty());
                assert_eq!(Self::bucket(n.hash), b);
                assert_eq!(self.hash(n.name()), n.hash);
                assert!(names.insert(ni));
                let mut count = 0usize;
                let mut addrs = HashSet::new();
                let mut prev = NIL;
                let mut pi = n.head;
                while pi != NIL {
                    let p = &self.peers[pi as usize];
                    assert_eq!(p.name, ni);
                    assert_eq!(p.prev, prev);
                    assert!(addrs.insert(p.addr), "duplicate address in a name");
                    *per_source.entry(p.src).or_default() += 1;
                    count += 1;
                    prev = pi;
                    pi = p.next;
                }
                assert_eq!(count, n.count as usize);
                assert!(count >= 1 && count <= PER_NAME);
                total += count;
                ni = n.chain;
            }
        }
        assert_eq!(names.len(), self.name_count as usize);
        assert!(names.len() <= NAMES);
        assert_eq!(total, len);
        // Sources: every count list is well linked and holds sources of that count; every
        // entry's source is live, in the list of its count, findable, with a list of exactly
        // its entries; the largest count is right.
        let mut listed: HashMap<u32, usize> = HashMap::new();
        for (c, &first) in self.by_count.iter().enumerate() {
            let mut up = NIL;
            let mut si = first;
            while si != NIL {
                assert_eq!(self.srcs[si as usize].count as usize, c + 1);
                assert_eq!(self.srcs[si as usize].up, up);
                assert!(listed.insert(si, c + 1).is_none());
                up = si;
                si = self.srcs[si as usize].down;
            }
        }
        assert_eq!(listed.len(), per_source.len());
        let mut max = 0;
        for (&si, &n) in &per_source {
            let s = &self.srcs[si as usize];
            assert_eq!(s.count as usize, n);
            assert_eq!(listed.get(&si), Some(&n));
            assert_eq!(s.mark, 0);
            assert_eq!(self.src_find(s.source), si);
            let mut seen = 0;
            let mut prev = NIL;
            let mut pi = s.head;
            while pi != NIL {
                let p = &self.peers[pi as usize];
                assert_eq!(p.src, si);
                assert_eq!(p.src_prev, prev);
                seen += 1;
                prev = pi;
                pi = p.src_next;
            }
            assert_eq!(s.tail, prev);
            assert_eq!(seen, n);
            max = max.max(n);
        }
        assert_eq!(self.max_count as usize, max);
        assert_eq!(
            self.srcs.iter().filter(|s| s.count > 0).count(),
            per_source.len()
        );
    }
}

fn check_name(name: &[u8]) -> Result<(), StoreError> {
    if name.is_empty() {
        Err(StoreError::EmptyName)
    } else if name.len() > MAX_NAME_LEN {
        Err(StoreError::NameTooLong)
    } else {
        Ok(())
    }
}

/// Iterator over the live peers of one name, from [`AnnounceStore::peers`].
#[derive(Clone)]
pub struct Peers<'a> {
    slots: &'a [PeerSlot],
    next: u32,
    now: Instant,
}

impl core::fmt::Debug for Peers<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Peers")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Iterator for Peers<'_> {
    type Item = PeerAddr;

    fn next(&mut self) -> Option<PeerAddr> {
        loop {
            let p = self.slots.get(self.next as usize)?;
            self.next = p.next;
            if p.expires > self.now {
                return Some(p.addr);
            }
        }
    }
}

/// The entries of one name, from [`AnnounceStore::entries`]: `(addr, deadline)`.
#[derive(Clone)]
pub struct StoredPeers<'a> {
    slots: &'a [PeerSlot],
    next: u32,
}

impl core::fmt::Debug for StoredPeers<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StoredPeers").finish_non_exhaustive()
    }
}

impl Iterator for StoredPeers<'_> {
    type Item = (PeerAddr, Instant);

    fn next(&mut self) -> Option<(PeerAddr, Instant)> {
        let p = self.slots.get(self.next as usize)?;
        self.next = p.next;
        Some((p.addr, p.expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::vec::Vec;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }
    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }
    fn peer(last: u8, port: u16) -> PeerAddr {
        PeerAddr::new([10, 0, 0, last], port)
    }
    fn live<const N: usize, const P: usize, const C: usize>(
        s: &AnnounceStore<N, P, C>,
        now: Instant,
        name: &[u8],
    ) -> BTreeSet<PeerAddr> {
        s.peers(now, name).collect()
    }

    fn src(last: u8) -> Source {
        Source::Remote([10, 0, 0, last])
    }

    impl<const N: usize, const P: usize, const C: usize> AnnounceStore<N, P, C> {
        /// An announce from the host at `addr`'s IP, as a remote `announce_peer` is stored.
        fn announce_own(
            &mut self,
            now: Instant,
            name: &[u8],
            addr: PeerAddr,
            ttl: Duration,
        ) -> Result<(), StoreError> {
            self.announce(now, name, addr, ttl, Source::Remote(addr.ip))
        }

        /// An unannounce from the host at `addr`'s IP.
        fn remove_own(&mut self, name: &[u8], addr: PeerAddr) -> bool {
            self.remove(name, addr, Source::Remote(addr.ip))
        }

        /// How many entries of `name` each source holds.
        fn name_counts(&self, name: &[u8]) -> BTreeMap<Source, usize> {
            let mut counts = BTreeMap::new();
            let ni = self.find_name(name, self.hash(name));
            let mut pi = self.name_slot(ni).map_or(NIL, |n| n.head);
            while let Some(p) = self.peers.get(pi as usize) {
                *counts.entry(self.srcs[p.src as usize].source).or_default() += 1;
                pi = p.next;
            }
            counts
        }
    }

    #[test]
    fn memory_per_slot_is_as_documented() {
        assert_eq!(core::mem::size_of::<PeerSlot>(), 48);
        assert_eq!(core::mem::size_of::<HeapEntry>(), 16);
        assert_eq!(core::mem::size_of::<SrcSlot>(), 36);
        assert!(core::mem::size_of::<NameSlot>() <= 152);
    }

    #[test]
    fn announce_then_sample() {
        let mut s = AnnounceStore::<8, 16>::new();
        let mut rng = SplitMix64::new(1);
        s.announce_own(at(0), b"rest:util:net", peer(1, 1337), ms(1000))
            .unwrap();
        s.announce_own(at(0), b"rest:util:net", peer(2, 1337), ms(1000))
            .unwrap();
        s.announce_own(at(0), b"other", peer(3, 1), ms(1000))
            .unwrap();
        let mut out = [PeerAddr::default(); 100];
        let n = s.sample(at(10), b"rest:util:net", &mut rng, &mut out);
        assert_eq!(n, 2);
        let got: BTreeSet<_> = out[..n].iter().copied().collect();
        assert_eq!(got, [peer(1, 1337), peer(2, 1337)].into_iter().collect());
        assert_eq!(s.sample(at(10), b"unknown", &mut rng, &mut out), 0);
        assert_eq!(s.len(), 3);
        assert_eq!(s.names_len(), 2);
        assert_eq!(s.count(b"rest:util:net"), 2);
        s.check_invariants();
    }

    #[test]
    fn expiry_is_exact_at_the_deadline() {
        let mut s = AnnounceStore::<4, 4>::new();
        let mut rng = SplitMix64::new(2);
        let mut out = [PeerAddr::default(); 4];
        s.announce_own(at(1000), b"svc", peer(1, 80), ms(500))
            .unwrap();
        assert_eq!(s.next_expiry(), Some(at(1500)));
        assert_eq!(s.sample(at(1499), b"svc", &mut rng, &mut out), 1);
        assert_eq!(s.sample(at(1500), b"svc", &mut rng, &mut out), 0);
        assert_eq!(s.peers(at(1500), b"svc").count(), 0);
        assert_eq!(s.expire(at(1499)), 0);
        assert_eq!(s.len(), 1);
        assert_eq!(s.expire(at(1500)), 1);
        assert!(s.is_empty());
        assert_eq!(s.names_len(), 0);
        assert_eq!(s.next_expiry(), None);
        s.check_invariants();
    }

    #[test]
    fn reannounce_refreshes_the_deadline() {
        let mut s = AnnounceStore::<4, 4>::new();
        s.announce_own(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce_own(at(0), b"svc", peer(2, 80), ms(150)).unwrap();
        assert_eq!(s.next_expiry(), Some(at(100)));
        s.announce_own(at(90), b"svc", peer(1, 80), ms(100))
            .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_expiry(), Some(at(150)));
        assert_eq!(s.expire(at(150)), 1);
        assert_eq!(live(&s, at(150), b"svc"), [peer(1, 80)].into());
        assert_eq!(s.next_expiry(), Some(at(190)));
        s.check_invariants();
    }

    #[test]
    fn same_ip_other_port_is_another_entry() {
        let mut s = AnnounceStore::<4, 4>::new();
        s.announce_own(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce_own(at(0), b"svc", peer(1, 81), ms(100)).unwrap();
        assert_eq!(s.count(b"svc"), 2);
    }

    #[test]
    fn remove_unannounces() {
        let mut s = AnnounceStore::<4, 4>::new();
        s.announce_own(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce_own(at(0), b"svc", peer(2, 80), ms(100)).unwrap();
        assert!(s.remove_own(b"svc", peer(1, 80)));
        assert!(!s.remove_own(b"svc", peer(1, 80)));
        assert!(!s.remove_own(b"nope", peer(2, 80)));
        assert!(!s.remove_own(b"", peer(2, 80)));
        assert_eq!(live(&s, at(0), b"svc"), [peer(2, 80)].into());
        assert!(s.remove_own(b"svc", peer(2, 80)));
        assert!(s.is_empty());
        assert_eq!(s.names_len(), 0);
        s.check_invariants();
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let mut s = AnnounceStore::<4, 4>::new();
        let long = [b'x'; MAX_NAME_LEN + 1];
        let max = [b'y'; MAX_NAME_LEN];
        assert_eq!(
            s.announce_own(at(0), b"", peer(1, 80), ms(1)),
            Err(StoreError::EmptyName)
        );
        assert_eq!(
            s.announce_own(at(0), &long, peer(1, 80), ms(1)),
            Err(StoreError::NameTooLong)
        );
        assert_eq!(
            s.announce_own(at(0), b"svc", peer(1, 0), ms(1)),
            Err(StoreError::ZeroPort)
        );
        assert_eq!(
            s.announce_own(at(0), b"svc", peer(1, 80), Duration::ZERO),
            Err(StoreError::ZeroTtl)
        );
        assert!(s.is_empty());
        s.announce_own(at(0), &max, peer(1, 80), ms(1)).unwrap();
        assert_eq!(s.count(&max), 1);
        assert_eq!(s.count(&long), 0);
        assert_eq!(s.peers(at(0), &long).count(), 0);
    }

    #[test]
    fn zero_capacity_refuses() {
        let mut a = AnnounceStore::<0, 4>::new();
        let mut b = AnnounceStore::<4, 0>::new();
        let mut c = AnnounceStore::<4, 4, 0>::new();
        for r in [
            a.announce_own(at(0), b"s", peer(1, 1), ms(1)),
            b.announce_own(at(0), b"s", peer(1, 1), ms(1)),
            c.announce_own(at(0), b"s", peer(1, 1), ms(1)),
        ] {
            assert_eq!(r, Err(StoreError::NoCapacity));
        }
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            a.sample(at(0), b"s", &mut rng, &mut [PeerAddr::default(); 2]),
            0
        );
        assert_eq!(a.count(b"s"), 0);
        assert!(!b.remove_own(b"s", peer(1, 1)));
        assert_eq!(c.expire(at(5)), 0);
    }

    #[test]
    fn full_name_takes_from_its_heaviest_source_closest_to_expiry_first() {
        let mut s = AnnounceStore::<4, 16, 4>::new();
        // Source 1 holds three entries of svc, source 2 one.
        s.announce_own(at(0), b"svc", peer(1, 80), ms(300)).unwrap();
        s.announce_own(at(0), b"svc", peer(1, 81), ms(100)).unwrap();
        s.announce_own(at(0), b"svc", peer(1, 82), ms(200)).unwrap();
        s.announce_own(at(0), b"svc", peer(2, 80), ms(50)).unwrap();
        s.announce_own(at(0), b"other", peer(9, 80), ms(20))
            .unwrap();
        s.announce_own(at(10), b"svc", peer(3, 80), ms(300))
            .unwrap();
        // Source 1's entry closest to expiry made room, not source 2's (closer still).
        assert_eq!(
            live(&s, at(10), b"svc"),
            [peer(1, 80), peer(1, 82), peer(2, 80), peer(3, 80)].into()
        );
        // Another name's entry, although closer to expiry, was not touched.
        assert_eq!(live(&s, at(10), b"other"), [peer(9, 80)].into());
        assert_eq!(s.len(), 5);
        assert_eq!((s.source_len(src(1)), s.source_len(src(3))), (2, 1));
        s.check_invariants();
    }

    #[test]
    fn flood_into_one_name_evicts_the_flooders_own_entries() {
        let mut s = AnnounceStore::<4, 64, 4>::new();
        s.announce_own(at(0), b"svc", peer(1, 1337), ms(10_000))
            .unwrap();
        for port in 1..=200u16 {
            s.announce_own(at(u64::from(port)), b"svc", peer(66, port), ms(1000))
                .unwrap();
            s.check_invariants();
        }
        // The honest entry stays; the flooder keeps its three most recent.
        assert_eq!(
            live(&s, at(200), b"svc"),
            [peer(1, 1337), peer(66, 198), peer(66, 199), peer(66, 200)].into()
        );
        assert_eq!(s.source_len(src(66)), 3);
    }

    #[test]
    fn a_full_name_of_single_entries_refuses_a_newcomer() {
        let mut s = AnnounceStore::<4, 16, 3>::new();
        for i in 1..=3 {
            s.announce_own(at(0), b"svc", peer(i, 80), ms(100)).unwrap();
        }
        assert_eq!(
            s.announce_own(at(1), b"svc", peer(4, 80), ms(100)),
            Err(StoreError::Full)
        );
        assert_eq!(s.name_counts(b"svc").len(), 3);
        assert_eq!(s.source_len(src(4)), 0);
        // A source already there replaces its own entry instead.
        s.announce_own(at(1), b"svc", peer(2, 81), ms(100)).unwrap();
        assert_eq!(
            live(&s, at(1), b"svc"),
            [peer(1, 80), peer(2, 81), peer(3, 80)].into()
        );
        s.check_invariants();
    }

    #[test]
    fn flood_into_the_full_store_evicts_the_flooders_own_entries() {
        let mut s = AnnounceStore::<64, 16>::new();
        for i in 0..5u16 {
            s.announce_own(
                at(0),
                std::format!("honest:{i}").as_bytes(),
                peer(1, 80 + i),
                ms(10_000),
            )
            .unwrap();
        }
        s.announce_own(at(0), b"other", peer(2, 80), ms(10_000))
            .unwrap();
        for i in 0..1000u64 {
            s.announce_own(
                at(i),
                std::format!("junk:{i}").as_bytes(),
                peer(66, 80),
                ms(5000),
            )
            .unwrap();
        }
        s.check_invariants();
        assert_eq!(s.len(), 16);
        assert_eq!(s.source_len(src(1)), 5);
        assert_eq!(s.source_len(src(2)), 1);
        assert_eq!(s.source_len(src(66)), 10);
        // The flooder keeps its most recent names.
        assert_eq!(s.count(b"junk:999"), 1);
        assert_eq!(s.count(b"junk:989"), 0);
    }

    #[test]
    fn a_growing_flood_pushes_a_heavy_source_down_to_an_equal_share_never_below() {
        let mut s = AnnounceStore::<64, 16>::new();
        for i in 0..12u16 {
            s.announce_own(
                at(0),
                std::format!("worker:{i}").as_bytes(),
                peer(1, 80 + i),
                ms(10_000),
            )
            .unwrap();
        }
        for i in 0..4u64 {
            s.announce_own(
                at(0),
                std::format!("junk:{i}").as_bytes(),
                peer(66, 80),
                ms(10_000),
            )
            .unwrap();
        }
        assert_eq!((s.source_len(src(1)), s.source_len(src(66))), (12, 4));
        for i in 4..500u64 {
            s.announce_own(
                at(i),
                std::format!("junk:{i}").as_bytes(),
                peer(66, 80),
                ms(10_000),
            )
            .unwrap();
            assert!(s.source_len(src(1)) >= 8);
        }
        assert_eq!((s.source_len(src(1)), s.source_len(src(66))), (8, 8));
        // The heavy source lost its least recently announced entries.
        assert_eq!(s.count(b"worker:3"), 0);
        assert_eq!(s.count(b"worker:4"), 1);
        s.check_invariants();
    }

    #[test]
    fn a_full_store_of_single_entries_refuses_a_newcomer() {
        let mut s = AnnounceStore::<8, 3>::new();
        for (i, name) in [b"x", b"y", b"z"].into_iter().enumerate() {
            s.announce_own(at(0), name, peer(i as u8, 80), ms(300))
                .unwrap();
        }
        assert_eq!(
            s.announce_own(at(0), b"w", peer(4, 80), ms(300)),
            Err(StoreError::Full)
        );
        assert_eq!(s.count(b"w"), 0);
        assert_eq!(s.len(), 3);
        s.check_invariants();
    }

    #[test]
    fn another_source_can_neither_refresh_nor_remove_an_entry() {
        let mut s = AnnounceStore::<4, 8>::new();
        let addr = peer(1, 80);
        s.announce(at(0), b"svc", addr, ms(100), Source::Local)
            .unwrap();
        // A remote host with the same IP (another grape on this host) announces the address.
        assert_eq!(
            s.announce(at(50), b"svc", addr, ms(100), Source::Remote(addr.ip)),
            Err(StoreError::NotOwner)
        );
        assert_eq!(s.next_expiry(), Some(at(100)));
        assert_eq!(s.owner_of(b"svc", addr), Some(Source::Local));
        assert!(!s.remove(b"svc", addr, Source::Remote(addr.ip)));
        assert!(!s.remove(b"svc", addr, src(2)));
        assert_eq!(s.count(b"svc"), 1);
        // The owner refreshes and removes.
        s.announce(at(50), b"svc", addr, ms(100), Source::Local)
            .unwrap();
        assert_eq!(s.next_expiry(), Some(at(150)));
        assert!(s.remove(b"svc", addr, Source::Local));
        assert!(s.is_empty());
        assert_eq!(s.source_len(Source::Local), 0);
        s.check_invariants();
    }

    #[test]
    fn source_counts_follow_expiry_and_removal() {
        let mut s = AnnounceStore::<8, 8>::new();
        s.announce_own(at(0), b"a", peer(1, 80), ms(10)).unwrap();
        s.announce_own(at(0), b"b", peer(1, 80), ms(20)).unwrap();
        s.announce_own(at(0), b"a", peer(2, 80), ms(30)).unwrap();
        s.announce(at(0), b"a", peer(3, 80), ms(20), Source::Local)
            .unwrap();
        assert_eq!((s.source_len(src(1)), s.source_len(src(2))), (2, 1));
        assert_eq!(s.expire(at(10)), 1);
        assert_eq!(s.source_len(src(1)), 1);
        s.check_invariants();
        assert_eq!(s.expire(at(20)), 2);
        assert_eq!((s.source_len(src(1)), s.source_len(Source::Local)), (0, 0));
        s.check_invariants();
        assert!(s.remove_own(b"a", peer(2, 80)));
        assert_eq!(s.source_len(src(2)), 0);
        assert_eq!(s.srcs.iter().filter(|x| x.count > 0).count(), 0);
        assert_eq!(s.max_count, 0);
        s.check_invariants();
    }

    #[test]
    fn dead_entries_go_before_live_ones() {
        let mut s = AnnounceStore::<8, 2>::new();
        s.announce_own(at(0), b"a", peer(1, 80), ms(1000)).unwrap();
        s.announce_own(at(0), b"b", peer(2, 80), ms(10)).unwrap();
        s.announce_own(at(20), b"c", peer(3, 80), ms(10)).unwrap();
        assert_eq!(live(&s, at(20), b"a"), [peer(1, 80)].into());
        assert_eq!(live(&s, at(20), b"c"), [peer(3, 80)].into());
        assert_eq!(s.count(b"b"), 0);
    }

    #[test]
    fn full_names_make_the_heaviest_source_drop_entries_until_a_name_slot_frees() {
        let mut s = AnnounceStore::<2, 10>::new();
        s.announce_own(at(0), b"n1", peer(1, 80), ms(100)).unwrap();
        s.announce_own(at(0), b"n1", peer(1, 81), ms(500)).unwrap();
        s.announce_own(at(0), b"n2", peer(3, 80), ms(300)).unwrap();
        // Source 1 held the most and lost its least recently announced entry; then every
        // source held one and none could fairly give up a name: refused.
        assert_eq!(
            s.announce_own(at(0), b"n3", peer(4, 80), ms(50)),
            Err(StoreError::Full)
        );
        assert_eq!(live(&s, at(0), b"n1"), [peer(1, 81)].into());
        assert_eq!(live(&s, at(0), b"n2"), [peer(3, 80)].into());
        // A source that holds one gives up its own name for a new one.
        s.announce_own(at(0), b"n4", peer(3, 81), ms(50)).unwrap();
        assert_eq!(s.count(b"n2"), 0);
        assert_eq!(live(&s, at(0), b"n1"), [peer(1, 81)].into());
        assert_eq!(live(&s, at(0), b"n4"), [peer(3, 81)].into());
        assert_eq!(s.names_len(), 2);
        s.check_invariants();
    }

    #[test]
    fn evicting_the_announcing_names_last_entry_keeps_the_name_usable() {
        let mut s = AnnounceStore::<2, 1>::new();
        s.announce_own(at(0), b"n", peer(1, 80), ms(100)).unwrap();
        s.announce_own(at(0), b"n", peer(1, 81), ms(100)).unwrap();
        assert_eq!(live(&s, at(0), b"n"), [peer(1, 81)].into());
        assert_eq!(s.names_len(), 1);
        s.check_invariants();
    }

    #[test]
    fn ttl_never_does_not_expire_nor_set_a_deadline() {
        let mut s = AnnounceStore::<2, 2>::new();
        s.announce_own(at(5), b"n", peer(1, 80), TTL_NEVER).unwrap();
        assert_eq!(s.next_expiry(), None);
        assert_eq!(s.expire(at(u64::MAX - 1)), 0);
        assert_eq!(s.peers(at(u64::MAX - 1), b"n").count(), 1);
        s.announce_own(at(5), b"m", peer(1, 80), ms(7)).unwrap();
        assert_eq!(s.next_expiry(), Some(at(12)));
    }

    #[test]
    fn hash_chains_survive_removal_in_the_middle() {
        // Two buckets for eight names: long chains.
        let mut s = AnnounceStore::<2, 2>::with_hash_seed(99);
        let mut t = AnnounceStore::<8, 16>::with_hash_seed(7);
        let names: [&[u8]; 8] = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"];
        for (i, n) in names.iter().enumerate() {
            t.announce_own(at(0), n, peer(i as u8, 1), ms(100)).unwrap();
            // One source for `s`: it replaces its own oldest entries.
            s.announce(at(0), n, peer(i as u8, 1), ms(100), Source::Local)
                .unwrap();
        }
        for n in [b"c", b"a", b"h"] {
            assert!(t.remove_own(n, peer(names.iter().position(|x| x == n).unwrap() as u8, 1)));
            t.check_invariants();
        }
        for (i, n) in names.iter().enumerate() {
            let expect = usize::from(!matches!(i, 0 | 2 | 7));
            assert_eq!(t.count(n), expect, "{}", i);
        }
        s.check_invariants();
        assert_eq!(s.names_len(), 2);
    }

    #[test]
    fn sample_is_uniform_enough_and_random_order() {
        let mut s = AnnounceStore::<2, 16, 16>::new();
        for i in 0..10u8 {
            s.announce_own(at(0), b"svc", peer(i, 80), ms(1000))
                .unwrap();
        }
        let mut rng = SplitMix64::new(3);
        let mut hits = [0u32; 10];
        let mut firsts = [0u32; 10];
        let mut out = [PeerAddr::default(); 3];
        for _ in 0..30_000 {
            let n = s.sample(at(0), b"svc", &mut rng, &mut out);
            assert_eq!(n, 3);
            let set: BTreeSet<_> = out.iter().collect();
            assert_eq!(set.len(), 3, "no duplicates");
            for p in &out {
                hits[usize::from(p.ip[3])] += 1;
            }
            firsts[usize::from(out[0].ip[3])] += 1;
        }
        // Each peer is in a sample of 3 out of 10 with probability 0.3: 9000 expected.
        for h in hits {
            assert!((8_400..9_600).contains(&h), "{hits:?}");
        }
        for f in firsts {
            assert!((2_600..3_400).contains(&f), "{firsts:?}");
        }
        // A sample that takes everything is a permutation, in random order.
        let mut all = [PeerAddr::default(); 16];
        let mut orders = BTreeSet::new();
        for _ in 0..20 {
            let n = s.sample(at(0), b"svc", &mut rng, &mut all);
            assert_eq!(n, 10);
            orders.insert(all[..n].to_vec());
        }
        assert!(orders.len() > 1);
    }

    #[test]
    fn ten_thousand_names() {
        // Large stores live in a thread with a big stack (no allocation in the type itself).
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                let mut s = AnnounceStore::<10_000, 10_000, 4>::with_hash_seed(5);
                for i in 0..10_000u32 {
                    let name = std::format!("service:{i}");
                    let ip = i.to_be_bytes();
                    s.announce_own(at(0), name.as_bytes(), PeerAddr::new(ip, 1), ms(1000))
                        .unwrap();
                }
                assert_eq!(s.names_len(), 10_000);
                assert_eq!(s.len(), 10_000);
                s.check_invariants();
                for i in (0..10_000u32).step_by(37) {
                    let name = std::format!("service:{i}");
                    assert_eq!(s.count(name.as_bytes()), 1);
                }
                // One more name from a source holding one: it gives up its own, the store stays
                // bounded.
                s.announce_own(at(1), b"late", PeerAddr::new([0, 0, 0, 7], 2), ms(1000))
                    .unwrap();
                assert_eq!(s.len(), 10_000);
                assert_eq!(s.count(b"late"), 1);
                assert_eq!(s.count(b"service:7"), 0);
                // One from a new source, while every source holds one: refused.
                assert_eq!(
                    s.announce_own(at(1), b"later", PeerAddr::new([9; 4], 2), ms(1000)),
                    Err(StoreError::Full)
                );
                s.check_invariants();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Announce {
            name: u8,
            peer: u8,
            port: u16,
            ttl: u64,
        },
        Remove {
            name: u8,
            peer: u8,
            port: u16,
        },
        Advance(u64),
        Expire,
        Sample {
            name: u8,
            k: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..10u8, 0..6u8, 0..3u16, 1..200u64).prop_map(|(name, peer, port, ttl)| Op::Announce { name, peer, port, ttl }),
            1 => (0..10u8, 0..6u8, 0..3u16).prop_map(|(name, peer, port)| Op::Remove { name, peer, port }),
            2 => (0..80u64).prop_map(Op::Advance),
            1 => Just(Op::Expire),
            2 => (0..10u8, 0..8usize).prop_map(|(name, k)| Op::Sample { name, k }),
        ]
    }

    fn name_of(i: u8) -> Vec<u8> {
        std::format!("svc-{i}").into_bytes()
    }

    /// Runs `ops` on a small store and on a map model: the store never exceeds its bounds,
    /// holds only entries the model holds with the same deadline, samples are duplicate-free
    /// subsets of the live entries, and, while nothing had to be evicted, equals the model.
    fn run<const N: usize, const P: usize, const C: usize>(ops: &[Op], seed: u64) {
        let mut s = AnnounceStore::<N, P, C>::with_hash_seed(seed as u32);
        let mut rng = SplitMix64::new(seed);
        let mut model: BTreeMap<(Vec<u8>, PeerAddr), Instant> = BTreeMap::new();
        let mut now = at(1);
        let mut evicted_ever = false;
        for op in ops {
            match *op {
                Op::Announce {
                    name,
                    peer: p,
                    port,
                    ttl,
                } => {
                    let name = name_of(name);
                    let addr = peer(p, 1000 + port);
                    // Fairness: a source that loses entries to this announce still holds at
                    // least as many as the announcer afterwards (one more when refused), in
                    // the name when it was full, else in the store.
                    s.expire(now);
                    let before: Vec<usize> = (0..6).map(|q| s.source_len(src(q))).collect();
                    let name_full = s.count(&name) >= C;
                    let refused = match s.announce_own(now, &name, addr, ms(ttl)) {
                        Ok(()) => {
                            model.retain(|_, e| *e > now);
                            model.insert((name.clone(), addr), now + ms(ttl));
                            0
                        }
                        Err(StoreError::Full) => {
                            model.retain(|_, e| *e > now);
                            1
                        }
                        Err(e) => panic!("{e:?}"),
                    };
                    let in_name = s.name_counts(&name);
                    let after = |x: u8| {
                        if name_full {
                            in_name.get(&src(x)).copied().unwrap_or(0)
                        } else {
                            s.source_len(src(x))
                        }
                    };
                    for q in (0..6).filter(|&q| q != p) {
                        if s.source_len(src(q)) < before[usize::from(q)] {
                            assert!(after(q) >= after(p) + refused, "{before:?} {q} {p}");
                        }
                    }
                }
                Op::Remove {
                    name,
                    peer: p,
                    port,
                } => {
                    let name = name_of(name);
                    let addr = peer(p, 1000 + port);
                    let was = s.remove_own(&name, addr);
                    let in_model = model.remove(&(name, addr)).is_some();
                    assert!(!was || in_model);
                    if !evicted_ever {
                        assert_eq!(was, in_model);
                    }
                }
                Op::Advance(d) => now = now + ms(d),
                Op::Expire => {
                    s.expire(now);
                    model.retain(|_, e| *e > now);
                    for p in &s.peers {
                        assert!(p.name == NIL || p.expires > now);
                    }
                }
                Op::Sample { name, k } => {
                    let name = name_of(name);
                    let mut out = std::vec![PeerAddr::default(); k];
                    let n = s.sample(now, &name, &mut rng, &mut out);
                    let got: BTreeSet<_> = out[..n].iter().copied().collect();
                    assert_eq!(got.len(), n, "duplicate in sample");
                    let live_now: BTreeSet<_> = model
                        .iter()
                        .filter(|((nm, _), e)| *nm == name && **e > now)
                        .map(|((_, a), _)| *a)
                        .collect();
                    assert!(got.is_subset(&live_now));
                    let stored = live(&s, now, &name).len();
                    assert_eq!(n, stored.min(k));
                }
            }
            s.check_invariants();
            assert!(s.len() <= P && s.names_len() <= N);
            // Every stored entry is in the model with the same deadline.
            let mut stored = 0;
            for i in 0..10u8 {
                let name = name_of(i);
                assert!(s.count(&name) <= C);
                let ni = s.find_name(&name, s.hash(&name));
                let mut pi = s.name_slot(ni).map_or(NIL, |n| n.head);
                while let Some(p) = s.peers.get(pi as usize) {
                    assert_eq!(model.get(&(name.clone(), p.addr)), Some(&p.expires));
                    stored += 1;
                    pi = p.next;
                }
            }
            assert_eq!(stored, s.len());
            if stored != model.len() {
                // Only eviction makes the store hold less than the model (dead entries are in
                // the model until it is pruned at the next announce or expire).
                let model_live = model.values().filter(|e| **e > now).count();
                let store_live = (0..10u8)
                    .map(|i| s.peers(now, &name_of(i)).count())
                    .sum::<usize>();
                if store_live != model_live {
                    evicted_ever = true;
                }
            }
            if !evicted_ever {
                for i in 0..10u8 {
                    let name = name_of(i);
                    let want: BTreeSet<_> = model
                        .iter()
                        .filter(|((nm, _), e)| *nm == name && **e > now)
                        .map(|((_, a), _)| *a)
                        .collect();
                    assert_eq!(live(&s, now, &name), want);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn tight_store_stays_bounded_and_consistent(ops in proptest::collection::vec(op(), 1..200), seed: u64) {
            run::<4, 7, 3>(&ops, seed);
        }

        #[test]
        fn roomy_store_matches_the_model(ops in proptest::collection::vec(op(), 1..200), seed: u64) {
            run::<16, 64, 8>(&ops, seed);
        }

        #[test]
        fn one_slot_store(ops in proptest::collection::vec(op(), 1..100), seed: u64) {
            run::<1, 1, 1>(&ops, seed);
        }

        #[test]
        fn arbitrary_names_never_panic(name in proptest::collection::vec(any::<u8>(), 0..200), port: u16, ttl: u64) {
            let mut s = AnnounceStore::<4, 4>::new();
            let r = s.announce_own(at(0), &name, PeerAddr::new([1, 2, 3, 4], port), ms(ttl));
            let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && port != 0 && ttl != 0;
            prop_assert_eq!(r.is_ok(), ok);
            prop_assert_eq!(s.count(&name), usize::from(ok));
            s.check_invariants();
        }
    }

    #[test]
    fn entries_list_every_name_with_its_peers_and_deadlines() {
        let mut s: AnnounceStore<8, 16> = AnnounceStore::new();
        s.announce(at(0), b"a", peer(1, 1), ms(100), Source::Local)
            .unwrap();
        s.announce(at(10), b"a", peer(2, 2), ms(100), Source::Local)
            .unwrap();
        s.announce(at(0), b"b", peer(3, 3), TTL_NEVER, Source::Local)
            .unwrap();
        s.announce(at(0), b"c", peer(4, 4), ms(5), Source::Local)
            .unwrap();
        assert!(s.remove(b"c", peer(4, 4), Source::Local));
        type Listing = Vec<(Vec<u8>, Vec<(PeerAddr, Instant)>)>;
        let mut listed: Listing = s
            .entries()
            .map(|(name, peers)| (name.to_vec(), peers.collect()))
            .collect();
        listed.sort();
        for (_, peers) in &mut listed {
            peers.sort();
        }
        assert_eq!(
            listed,
            std::vec![
                (
                    b"a".to_vec(),
                    std::vec![(peer(1, 1), at(100)), (peer(2, 2), at(110))]
                ),
                (b"b".to_vec(), std::vec![(peer(3, 3), NEVER)]),
            ]
        );
    }
}
