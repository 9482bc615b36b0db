//! The announce store: which `ip:port` peers announced which service name, until when.
//!
//! A grape keeps two of these: the DHT peer store filled by `announce_peer` (bittorrent-dht's
//! `_peers`, §3.2) and the lookup cache filled by `get_peers` answers (Grape's `_mem`, §3.3).
//! Both are bounded maps from a variable-length name (the raw UTF-8 service name, which is the
//! wire `info_hash`, §3.1) to a set of compact IPv4 peers.
//!
//! # Expiry: exact TTL instead of generations
//!
//! The reference (`record-cache`, §3.4) rotates two generations every `ceil(2/3·maxAge)`, so an
//! entry lives anywhere between 0.67× and 1.33× `maxAge` after its last announce. This store
//! gives every entry an exact deadline instead: an entry announced at `now` with `ttl` is live
//! while `t < now + ttl` and dead from `now + ttl` on. Exact deadlines are simpler to reason
//! about and to test, and are interoperable: remote nodes only see that a peer is eventually
//! forgotten. To reproduce the reference's *average* lifetime pass `ttl = maxAge`; to be sure
//! an entry outlives every reference node pass `1.33 × maxAge`. The Node CLI without `--dpa`
//! never expires entries (§7 Q1): pass [`TTL_NEVER`] for that.
//!
//! # Bounds and eviction
//!
//! * `NAMES` name slots, each holding a name of at most [`MAX_NAME_LEN`] bytes inline.
//! * `PEERS` peer entries in total, shared by all names.
//! * `PER_NAME` entries at most for one name (default [`DEFAULT_PER_NAME`]), so that one busy
//!   or hostile name cannot take the whole store and a `get_peers` answer stays small.
//!
//! Re-announcing an `(name, addr)` that is already stored only moves its deadline (the
//! reference's dedup by compact bytes, `rc:160-162`). A new entry is made room for by these
//! rules, in this order:
//! 1. dead entries (deadline `<= now`) are dropped first;
//! 2. if the name already has `PER_NAME` entries, the new one **replaces that name's entry
//!    closest to expiry** (the least recently announced one when all use the same TTL);
//! 3. otherwise, while the store has no free peer entry (or the name is new and there is no
//!    free name slot), the **entry of the whole store closest to expiry is dropped**, i.e. the
//!    store expires entries early, in deadline order, until the new one fits. A name slot is
//!    freed when its last entry goes.
//!
//! # Cost
//!
//! Names are found through a seeded FNV-1a hash with separate chaining through `NAMES` buckets
//! (expected O(1), no scan over `NAMES`). Deadlines sit in an indexed binary min-heap, so
//! `announce`, `remove` and each expired entry cost O(log `PEERS`) plus a walk over at most
//! `PER_NAME` entries of the one name; [`AnnounceStore::next_expiry`] is O(1).

use crate::addr::PeerAddr;
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// Longest service name the store accepts, in bytes. Grenache names are short
/// (`rest:net:util`); the bound keeps every name slot inline and fixed-size.
pub const MAX_NAME_LEN: usize = 128;

/// Default per-name cap: 100 entries, the sample size of Grape's `/lookup` (`_mem.get(ih, 100)`),
/// and about 800 bytes of compact `values` in a `get_peers` answer.
pub const DEFAULT_PER_NAME: usize = 100;

/// A TTL that never runs out: the deadline saturates at the far future, which no clock reaches
/// (the Node CLI's behaviour without `--dpa`, §7 Q1). [`AnnounceStore::next_expiry`] ignores it.
pub const TTL_NEVER: Duration = Duration::MAX;

/// The deadline of an entry announced with [`TTL_NEVER`].
const NEVER: Instant = Instant::from_millis(u64::MAX);

/// "No slot" in the intrusive links.
const NIL: u32 = u32::MAX;

// Name lengths are stored in a `u8`.
const _: () = assert!(MAX_NAME_LEN <= u8::MAX as usize);

/// Why an announce was refused. Nothing was changed in the store.
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
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StoreError::EmptyName => "empty service name",
            StoreError::NameTooLong => "service name too long",
            StoreError::ZeroPort => "port 0",
            StoreError::ZeroTtl => "zero TTL",
            StoreError::NoCapacity => "store has no capacity",
        })
    }
}

#[derive(Clone, Copy)]
struct NameSlot {
    /// Length of the name; 0 marks a free slot (names are never empty).
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
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
        len: 0,
        bytes: [0; MAX_NAME_LEN],
        hash: 0,
        count: 0,
        head: NIL,
        chain: NIL,
    };

    fn name(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
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

impl PeerSlot {
    const FREE: PeerSlot = PeerSlot {
        addr: PeerAddr::new([0; 4], 0),
        expires: Instant::ZERO,
        name: NIL,
        prev: NIL,
        next: NIL,
        heap: NIL,
    };
}

/// A bounded map from service name to announced peers with exact per-entry deadlines.
///
/// See the [module docs](self) for the expiry and eviction rules. `NAMES` and `PEERS` must be
/// below `u32::MAX`; a store with a zero capacity refuses every announce with
/// [`StoreError::NoCapacity`].
///
/// The value is large (about `NAMES × 150 + PEERS × 48` bytes) and needs no initialisation at
/// run time: [`AnnounceStore::new`] is `const`, so a board can keep it in a `static`.
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
            seed,
        }
    }

    /// Stores (or refreshes) `addr` under `name` until `now + ttl`.
    ///
    /// Re-announcing an address that is already stored for `name` only moves its deadline.
    /// When the store or the name is full, older entries make room as described in the
    /// [module docs](self): the name's entry closest to expiry when the name is at `PER_NAME`,
    /// else the store's entries closest to expiry. On error nothing changes.
    pub fn announce(
        &mut self,
        now: Instant,
        name: &[u8],
        addr: PeerAddr,
        ttl: Duration,
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
                self.set_expiry(pi, expires);
                return Ok(());
            }
            if self
                .name_slot(ni)
                .is_some_and(|n| n.count as usize >= PER_NAME)
            {
                // Rule 2: replace this name's entry closest to expiry, in place.
                let victim = self.earliest_of(ni);
                if let Some(p) = self.peers.get_mut(victim as usize) {
                    p.addr = addr;
                }
                self.set_expiry(victim, expires);
                return Ok(());
            }
        }

        // Rule 3: expire early, in deadline order, until the new entry fits.
        loop {
            let peer_ok = (self.heap_len as usize) < PEERS;
            let name_ok = ni != NIL || (self.name_count as usize) < NAMES;
            if peer_ok && name_ok {
                break;
            }
            let Some(top) = self.top() else {
                return Err(StoreError::NoCapacity);
            };
            let owner = self.peers.get(top as usize).map_or(NIL, |p| p.name);
            self.remove_peer(top);
            if owner == ni && self.name_slot(ni).is_none_or(|n| n.len == 0) {
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
                heap: NIL,
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
        Ok(())
    }

    /// Removes `addr` from `name` (Grape's `/unannounce`). Returns whether it was stored.
    pub fn remove(&mut self, name: &[u8], addr: PeerAddr) -> bool {
        if check_name(name).is_err() {
            return false;
        }
        let ni = self.find_name(name, self.hash(name));
        if ni == NIL {
            return false;
        }
        match self.find_peer(ni, addr) {
            Some(pi) => {
                self.remove_peer(pi);
                true
            }
            None => false,
        }
    }

    /// Writes a uniformly random sample of the live peers of `name` (deadline after `now`) into
    /// `out`, in random order, without duplicates; returns how many were written: all live
    /// peers if they fit, else `out.len()`.
    ///
    /// Grape's `/lookup` answers with a sample of 100 (`_mem.get(ih, 100)`); `get_peers`
    /// answers with all of them (pass a buffer of `PER_NAME`).
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
        let kept = out.get_mut(..filled).unwrap_or(&mut []);
        for i in (1..kept.len()).rev() {
            let j = rng.below(u32::try_from(i + 1).unwrap_or(u32::MAX)) as usize;
            if j < kept.len() {
                kept.swap(i, j);
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
        let mut bytes = [0u8; MAX_NAME_LEN];
        if let Some(dst) = bytes.get_mut(..name.len()) {
            dst.copy_from_slice(name);
        }
        *slot = NameSlot {
            len: u8::try_from(name.len()).unwrap_or(0),
            bytes,
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

    /// The entry of name `ni` closest to expiry (the first one found on ties).
    fn earliest_of(&self, ni: u32) -> u32 {
        let mut best = NIL;
        let mut best_expiry = NEVER;
        let mut pi = self.name_slot(ni).map_or(NIL, |n| n.head);
        while let Some(p) = self.peers.get(pi as usize) {
            if best == NIL || p.expires < best_expiry {
                best = pi;
                best_expiry = p.expires;
            }
            pi = p.next;
        }
        best
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
        let free_head = self.free_peers;
        if let Some(slot) = self.peers.get_mut(pi as usize) {
            *slot = PeerSlot {
                next: free_head,
                ..PeerSlot::FREE
            };
        }
        self.free_peers = pi;
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

    /// The entry closest to expiry.
    fn top(&self) -> Option<u32> {
        Some(self.heap.get(..self.heap_len as usize)?.first()?.slot)
    }

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
        use std::collections::HashSet;
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
        for (b, &first) in self.buckets.iter().enumerate() {
            let mut ni = first;
            while ni != NIL {
                let n = &self.names[ni as usize];
                assert!(n.len > 0);
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

    #[test]
    fn announce_then_sample() {
        let mut s = AnnounceStore::<8, 16>::new();
        let mut rng = SplitMix64::new(1);
        s.announce(at(0), b"rest:util:net", peer(1, 1337), ms(1000))
            .unwrap();
        s.announce(at(0), b"rest:util:net", peer(2, 1337), ms(1000))
            .unwrap();
        s.announce(at(0), b"other", peer(3, 1), ms(1000)).unwrap();
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
        s.announce(at(1000), b"svc", peer(1, 80), ms(500)).unwrap();
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
        s.announce(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce(at(0), b"svc", peer(2, 80), ms(150)).unwrap();
        assert_eq!(s.next_expiry(), Some(at(100)));
        s.announce(at(90), b"svc", peer(1, 80), ms(100)).unwrap();
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
        s.announce(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce(at(0), b"svc", peer(1, 81), ms(100)).unwrap();
        assert_eq!(s.count(b"svc"), 2);
    }

    #[test]
    fn remove_unannounces() {
        let mut s = AnnounceStore::<4, 4>::new();
        s.announce(at(0), b"svc", peer(1, 80), ms(100)).unwrap();
        s.announce(at(0), b"svc", peer(2, 80), ms(100)).unwrap();
        assert!(s.remove(b"svc", peer(1, 80)));
        assert!(!s.remove(b"svc", peer(1, 80)));
        assert!(!s.remove(b"nope", peer(2, 80)));
        assert!(!s.remove(b"", peer(2, 80)));
        assert_eq!(live(&s, at(0), b"svc"), [peer(2, 80)].into());
        assert!(s.remove(b"svc", peer(2, 80)));
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
            s.announce(at(0), b"", peer(1, 80), ms(1)),
            Err(StoreError::EmptyName)
        );
        assert_eq!(
            s.announce(at(0), &long, peer(1, 80), ms(1)),
            Err(StoreError::NameTooLong)
        );
        assert_eq!(
            s.announce(at(0), b"svc", peer(1, 0), ms(1)),
            Err(StoreError::ZeroPort)
        );
        assert_eq!(
            s.announce(at(0), b"svc", peer(1, 80), Duration::ZERO),
            Err(StoreError::ZeroTtl)
        );
        assert!(s.is_empty());
        s.announce(at(0), &max, peer(1, 80), ms(1)).unwrap();
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
            a.announce(at(0), b"s", peer(1, 1), ms(1)),
            b.announce(at(0), b"s", peer(1, 1), ms(1)),
            c.announce(at(0), b"s", peer(1, 1), ms(1)),
        ] {
            assert_eq!(r, Err(StoreError::NoCapacity));
        }
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            a.sample(at(0), b"s", &mut rng, &mut [PeerAddr::default(); 2]),
            0
        );
        assert_eq!(a.count(b"s"), 0);
        assert!(!b.remove(b"s", peer(1, 1)));
        assert_eq!(c.expire(at(5)), 0);
    }

    #[test]
    fn per_name_cap_replaces_that_names_entry_closest_to_expiry() {
        let mut s = AnnounceStore::<4, 16, 3>::new();
        s.announce(at(0), b"svc", peer(1, 80), ms(300)).unwrap();
        s.announce(at(0), b"svc", peer(2, 80), ms(100)).unwrap();
        s.announce(at(0), b"svc", peer(3, 80), ms(200)).unwrap();
        s.announce(at(0), b"other", peer(9, 80), ms(50)).unwrap();
        s.announce(at(10), b"svc", peer(4, 80), ms(300)).unwrap();
        assert_eq!(
            live(&s, at(10), b"svc"),
            [peer(1, 80), peer(3, 80), peer(4, 80)].into()
        );
        // Another name's entry, although closer to expiry, was not touched.
        assert_eq!(live(&s, at(10), b"other"), [peer(9, 80)].into());
        assert_eq!(s.len(), 4);
        s.check_invariants();
    }

    #[test]
    fn full_store_drops_the_entry_closest_to_expiry() {
        let mut s = AnnounceStore::<8, 3>::new();
        s.announce(at(0), b"x", peer(1, 80), ms(300)).unwrap();
        s.announce(at(0), b"y", peer(2, 80), ms(100)).unwrap();
        s.announce(at(0), b"z", peer(3, 80), ms(200)).unwrap();
        s.announce(at(0), b"w", peer(4, 80), ms(50)).unwrap();
        assert_eq!(s.count(b"y"), 0);
        assert_eq!(s.names_len(), 3);
        assert_eq!(s.len(), 3);
        for (name, p) in [
            (b"x", peer(1, 80)),
            (b"z", peer(3, 80)),
            (b"w", peer(4, 80)),
        ] {
            assert_eq!(live(&s, at(0), name), [p].into());
        }
        s.check_invariants();
    }

    #[test]
    fn dead_entries_go_before_live_ones() {
        let mut s = AnnounceStore::<8, 2>::new();
        s.announce(at(0), b"a", peer(1, 80), ms(1000)).unwrap();
        s.announce(at(0), b"b", peer(2, 80), ms(10)).unwrap();
        s.announce(at(20), b"c", peer(3, 80), ms(10)).unwrap();
        assert_eq!(live(&s, at(20), b"a"), [peer(1, 80)].into());
        assert_eq!(live(&s, at(20), b"c"), [peer(3, 80)].into());
        assert_eq!(s.count(b"b"), 0);
    }

    #[test]
    fn full_names_expire_early_until_a_name_slot_frees() {
        let mut s = AnnounceStore::<2, 10>::new();
        s.announce(at(0), b"n1", peer(1, 80), ms(100)).unwrap();
        s.announce(at(0), b"n1", peer(2, 80), ms(500)).unwrap();
        s.announce(at(0), b"n2", peer(3, 80), ms(300)).unwrap();
        s.announce(at(0), b"n3", peer(4, 80), ms(50)).unwrap();
        // n1@100 went first (closest), n1 still had an entry; then n2@300 freed a name slot.
        assert_eq!(live(&s, at(0), b"n1"), [peer(2, 80)].into());
        assert_eq!(s.count(b"n2"), 0);
        assert_eq!(live(&s, at(0), b"n3"), [peer(4, 80)].into());
        assert_eq!(s.names_len(), 2);
        s.check_invariants();
    }

    #[test]
    fn evicting_the_announcing_names_last_entry_keeps_the_name_usable() {
        let mut s = AnnounceStore::<2, 1>::new();
        s.announce(at(0), b"n", peer(1, 80), ms(100)).unwrap();
        s.announce(at(0), b"n", peer(2, 80), ms(100)).unwrap();
        assert_eq!(live(&s, at(0), b"n"), [peer(2, 80)].into());
        assert_eq!(s.names_len(), 1);
        s.check_invariants();
    }

    #[test]
    fn ttl_never_does_not_expire_nor_set_a_deadline() {
        let mut s = AnnounceStore::<2, 2>::new();
        s.announce(at(5), b"n", peer(1, 80), TTL_NEVER).unwrap();
        assert_eq!(s.next_expiry(), None);
        assert_eq!(s.expire(at(u64::MAX - 1)), 0);
        assert_eq!(s.peers(at(u64::MAX - 1), b"n").count(), 1);
        s.announce(at(5), b"m", peer(1, 80), ms(7)).unwrap();
        assert_eq!(s.next_expiry(), Some(at(12)));
    }

    #[test]
    fn hash_chains_survive_removal_in_the_middle() {
        // Two buckets for eight names: long chains.
        let mut s = AnnounceStore::<2, 2>::with_hash_seed(99);
        let mut t = AnnounceStore::<8, 16>::with_hash_seed(7);
        let names: [&[u8]; 8] = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"];
        for (i, n) in names.iter().enumerate() {
            t.announce(at(0), n, peer(i as u8, 1), ms(100)).unwrap();
            s.announce(at(0), n, peer(i as u8, 1), ms(100)).unwrap();
        }
        for n in [b"c", b"a", b"h"] {
            assert!(t.remove(n, peer(names.iter().position(|x| x == n).unwrap() as u8, 1)));
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
            s.announce(at(0), b"svc", peer(i, 80), ms(1000)).unwrap();
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
                    s.announce(at(0), name.as_bytes(), PeerAddr::new(ip, 1), ms(1000))
                        .unwrap();
                }
                assert_eq!(s.names_len(), 10_000);
                assert_eq!(s.len(), 10_000);
                s.check_invariants();
                for i in (0..10_000u32).step_by(37) {
                    let name = std::format!("service:{i}");
                    assert_eq!(s.count(name.as_bytes()), 1);
                }
                // One more name: the earliest deadline (all equal) goes, the store stays bounded.
                s.announce(at(1), b"late", PeerAddr::new([1; 4], 1), ms(1000))
                    .unwrap();
                assert_eq!(s.len(), 10_000);
                assert_eq!(s.count(b"late"), 1);
                s.check_invariants();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Announce { name: u8, peer: u8, ttl: u64 },
        Remove { name: u8, peer: u8 },
        Advance(u64),
        Expire,
        Sample { name: u8, k: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..10u8, 0..6u8, 1..200u64).prop_map(|(name, peer, ttl)| Op::Announce { name, peer, ttl }),
            1 => (0..10u8, 0..6u8).prop_map(|(name, peer)| Op::Remove { name, peer }),
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
                Op::Announce { name, peer: p, ttl } => {
                    let name = name_of(name);
                    let addr = peer(p, 1000 + u16::from(p));
                    s.announce(now, &name, addr, ms(ttl)).unwrap();
                    model.retain(|_, e| *e > now);
                    model.insert((name, addr), now + ms(ttl));
                }
                Op::Remove { name, peer: p } => {
                    let name = name_of(name);
                    let addr = peer(p, 1000 + u16::from(p));
                    let was = s.remove(&name, addr);
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
            let r = s.announce(at(0), &name, PeerAddr::new([1, 2, 3, 4], port), ms(ttl));
            let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && port != 0 && ttl != 0;
            prop_assert_eq!(r.is_ok(), ok);
            prop_assert_eq!(s.count(&name), usize::from(ok));
            s.check_invariants();
        }
    }
}
