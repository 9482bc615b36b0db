//! BEP 44 items: the values behind Grape's `/put` and `/get` (docs/protocol.md §5).
//!
//! * Immutable item: key = `sha1(bencode(v))`. The store is given the raw bencoded `v` and
//!   hashes it as is, so the caller must pass the canonical encoding (what bittorrent-dht
//!   re-encodes before hashing: sorted dict keys, no `i-0e`, no leading zeros).
//! * Mutable item: key = `sha1(k ‖ salt)`; it carries an ed25519 signature by `k` over
//!   [`encode_sig_data`] = the bencoded `{salt?, seq, v}` without the outer `d`…`e`.
//!
//! Checks on `put`, in bittorrent-dht's order (`dht:592-638`):
//! 205 payload too large → 400 verification not supported (mutable, without the `ed25519`
//! feature) → bad signature (no answer) → 301 CAS mismatch → 302 sequence number not greater.
//! This store adds one check of its own, 207 "salt too big" for a salt over 64 bytes (BEP 44's
//! limit; bittorrent-dht does not check it), because the signed data must fit a fixed buffer.
//!
//! # Bounds and eviction
//!
//! At most `ITEMS` items (fewer with a runtime limit, [`ItemStore::with_limit`], the grape's
//! `--dht_maxValues`), each with an inline `v` of up to `VMAX` raw bytes. Like bittorrent-dht's
//! `_values` (an LRU by count, no time expiry, `dht:20`), there is no expiry and `put` and
//! [`ItemStore::get`] count as uses; but the room is shared fairly between the [`Source`]s that
//! stored the items (the IPv4 source address of a `put`, or the node itself for its own puts):
//!
//! * every item belongs to the source that stored it. Re-putting an immutable item (same key,
//!   same value by construction) only marks it used: it stays its first putter's. A mutable
//!   item's update is authorised by its signature alone (any source may relay a validly signed
//!   higher `seq`), and the item then **belongs to the updater**: the host that sent the
//!   current value is the one using the room (the signer's own re-put takes it back);
//! * a new key in a full store is made room for by the source holding the **most items**, which
//!   loses its **least recently used** one. The putter counts with its new item and ties go
//!   against it: it replaces its own least recently used item as soon as it holds as many as
//!   anyone else would after the put. A putter holding nothing while every source holds one
//!   item is refused ([`PutError::Full`]).
//!
//! So a flood of puts from one host only ever evicts that host's items once it holds the
//! largest share, and never leaves another source with fewer items than the flooder: with `n`
//! sources competing, each keeps at least `limit / n` items (if it stored that many).
//!
//! # Cost
//!
//! Keys are found by a linear scan of the `ITEMS` keys (20-byte compares); per-source counts
//! sit in a table of at most `ITEMS` sources, also scanned linearly. A `put` of a new key into
//! a full store costs three scans of at most `ITEMS` entries (count lookup, heaviest source,
//! its least recently used item): tens of microseconds for the host's 5000 items.

pub use crate::dht::store::Source;
use crate::wire::bencode::Encoder;
use crate::wire::BufferFull;
/// The ed25519 key type [`sign_mutable`] takes (re-exported so that callers need no direct
/// dependency on `ed25519-dalek`).
#[cfg(feature = "ed25519")]
pub use ed25519_dalek::SigningKey;

/// An item key (a DHT target): 20 bytes, SHA-1.
pub type Key = [u8; 20];

/// Length of an ed25519 public key (`k`).
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of an ed25519 signature (`sig`).
pub const SIGNATURE_LEN: usize = 64;

/// The payload limit of `put` (error 205 above it), as bittorrent-dht checks it: `v.length`,
/// which for a byte string is its number of bytes (without the `N:` prefix).
pub const MAX_V_LEN: usize = 1000;

/// Longest salt accepted (BEP 44).
pub const MAX_SALT_LEN: usize = 64;

/// Default room for one raw `v`: `"1000:"` plus 1000 bytes, the longest byte string that
/// bittorrent-dht accepts.
pub const DEFAULT_VMAX: usize = MAX_V_LEN + 5;

/// Longest signed data for a `v` of [`DEFAULT_VMAX`] raw bytes:
/// `4:salt` + `64:` + salt + `3:seq` + `i-9223372036854775808e` + `1:v` + v.
pub const MAX_SIG_DATA_LEN: usize = 6 + 3 + MAX_SALT_LEN + 5 + 22 + 3 + DEFAULT_VMAX;

/// Why a `put` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PutError {
    /// 205 `"data payload too large"`: `v` over [`MAX_V_LEN`], or over the store's `VMAX`.
    PayloadTooLarge,
    /// 207 `"salt too big"`: salt over [`MAX_SALT_LEN`] bytes (BEP 44; not checked by Node).
    SaltTooLarge,
    /// 400 `"verification not supported"`: a mutable put on a build without `ed25519`
    /// (what every Node CLI grape answers, docs/protocol.md §13.14).
    VerificationNotSupported,
    /// The signature does not verify: bittorrent-dht does not answer at all.
    BadSignature,
    /// 301 `"CAS mismatch, re-read and try again"`.
    CasMismatch,
    /// 302 `"sequence number less than current"` (also when equal).
    SequenceTooLow,
    /// `v` is empty (no bencoded value at all): not answered.
    EmptyValue,
    /// The store has `ITEMS = 0` (or a limit of 0): not answered.
    NoCapacity,
    /// The store is full, every source holds one item and the putter none: there is no fair
    /// victim, the put is dropped (not answered).
    Full,
}

impl PutError {
    /// The KRPC error `[code, message]` to answer with, or `None` when bittorrent-dht sends no
    /// answer at all.
    pub const fn krpc_error(&self) -> Option<(i64, &'static str)> {
        match self {
            PutError::PayloadTooLarge => Some((205, "data payload too large")),
            PutError::SaltTooLarge => Some((207, "salt too big")),
            PutError::VerificationNotSupported => Some((400, "verification not supported")),
            PutError::CasMismatch => Some((301, "CAS mismatch, re-read and try again")),
            PutError::SequenceTooLow => Some((302, "sequence number less than current")),
            PutError::BadSignature
            | PutError::EmptyValue
            | PutError::NoCapacity
            | PutError::Full => None,
        }
    }
}

impl core::fmt::Display for PutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.krpc_error() {
            Some((_, msg)) => f.write_str(msg),
            None => f.write_str(match self {
                PutError::BadSignature => "bad signature",
                PutError::EmptyValue => "empty value",
                PutError::Full => "store full, no source holds more than one item",
                _ => "no capacity",
            }),
        }
    }
}

impl core::error::Error for PutError {}

/// The key of an immutable item: `sha1(raw_v)`, `raw_v` being the canonical bencoding of `v`.
pub fn immutable_key(raw_v: &[u8]) -> Key {
    crate::wire::sha1::sha1(raw_v)
}

/// The key of a mutable item: `sha1(k ‖ salt)` (no salt and an empty salt give `sha1(k)`).
pub fn mutable_key(k: &[u8; PUBLIC_KEY_LEN], salt: Option<&[u8]>) -> Key {
    let mut h = crate::wire::sha1::Sha1::new();
    h.update(k);
    h.update(salt.unwrap_or(&[]));
    h.digest()
}

/// Writes the data a mutable item's signature covers into `buf` and returns it: the bencoded
/// `{salt, seq, v}` without the outer `d`…`e`, e.g. `4:salt6:mysalt3:seqi1e1:v13:hello mutable`.
///
/// `salt` is written whenever it is `Some`, even when empty: bittorrent-dht's `encodeSigData`
/// tests `if (msg.salt)`, and an empty `Buffer` is truthy. Pass `None` when the message had no
/// `salt` key. A missing `seq` is signed as 0 (`msg.seq || 0`).
pub fn encode_sig_data<'b>(
    salt: Option<&[u8]>,
    seq: i64,
    raw_v: &[u8],
    buf: &'b mut [u8],
) -> Result<&'b [u8], BufferFull> {
    let mut e = Encoder::new(buf);
    if let Some(salt) = salt {
        e.bytes(b"salt")?;
        e.bytes(salt)?;
    }
    e.bytes(b"seq")?;
    e.int(seq)?;
    e.bytes(b"v")?;
    e.raw(raw_v)?;
    Ok(e.finish())
}

/// Whether `sig` is `k`'s valid ed25519 signature of the item `{salt, seq, v}`.
///
/// Uses `verify_strict` (rejects small-order keys and non-canonical signatures, as libsodium
/// does). Data too long for [`MAX_SIG_DATA_LEN`] never verifies.
#[cfg(feature = "ed25519")]
pub fn verify_mutable(
    k: &[u8; PUBLIC_KEY_LEN],
    salt: Option<&[u8]>,
    seq: i64,
    raw_v: &[u8],
    sig: &[u8; SIGNATURE_LEN],
) -> bool {
    let mut buf = [0u8; MAX_SIG_DATA_LEN];
    let Ok(msg) = encode_sig_data(salt, seq, raw_v, &mut buf) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(k) else {
        return false;
    };
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
        .is_ok()
}

/// Signs a mutable item for a client's `put`: the signature over [`encode_sig_data`].
///
/// Fails only when the data is longer than [`MAX_SIG_DATA_LEN`].
#[cfg(feature = "ed25519")]
pub fn sign_mutable(
    signing_key: &SigningKey,
    salt: Option<&[u8]>,
    seq: i64,
    raw_v: &[u8],
) -> Result<[u8; SIGNATURE_LEN], BufferFull> {
    use ed25519_dalek::Signer;
    let mut buf = [0u8; MAX_SIG_DATA_LEN];
    let msg = encode_sig_data(salt, seq, raw_v, &mut buf)?;
    Ok(signing_key.sign(msg).to_bytes())
}

/// `v.length` as bittorrent-dht sees the decoded `v`: the byte count of a byte string, else the
/// raw length (Node has no limit on integers and dicts and counts list elements; bounding the
/// raw bytes keeps the store fixed-size and refuses at least what Node refuses).
fn payload_len(raw_v: &[u8]) -> usize {
    let mut n = 0usize;
    for (i, &b) in raw_v.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                let Some(m) = n
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(usize::from(b - b'0')))
                else {
                    return raw_v.len();
                };
                n = m;
            }
            b':' if i > 0 => return n,
            _ => return raw_v.len(),
        }
    }
    raw_v.len()
}

/// A stored item, borrowed from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ItemRef<'a> {
    /// The item's key.
    pub key: &'a Key,
    /// The raw bencoded `v`, to be written verbatim into a `get` answer.
    pub v: &'a [u8],
    /// For a mutable item, `k`, `seq` and `sig` (the salt is not kept: `get` does not return
    /// it, the asker re-attaches its own).
    pub mutable: Option<MutableRef<'a>>,
}

/// The mutable part of a stored item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MutableRef<'a> {
    /// The signer's public key.
    pub k: &'a [u8; PUBLIC_KEY_LEN],
    /// The sequence number.
    pub seq: i64,
    /// The signature.
    pub sig: &'a [u8; SIGNATURE_LEN],
}

#[derive(Clone)]
struct Slot<const VMAX: usize> {
    used: bool,
    key: Key,
    v: heapless::Vec<u8, VMAX>,
    mutable: bool,
    k: [u8; PUBLIC_KEY_LEN],
    seq: i64,
    sig: [u8; SIGNATURE_LEN],
    last_use: u64,
    /// Who stored the current value.
    source: Source,
}

impl<const VMAX: usize> Slot<VMAX> {
    const FREE: Self = Slot {
        used: false,
        key: [0; 20],
        v: heapless::Vec::new(),
        mutable: false,
        k: [0; PUBLIC_KEY_LEN],
        seq: 0,
        sig: [0; SIGNATURE_LEN],
        last_use: 0,
        source: Source::Local,
    };

    fn as_ref(&self) -> ItemRef<'_> {
        ItemRef {
            key: &self.key,
            v: &self.v,
            mutable: self.mutable.then_some(MutableRef {
                k: &self.k,
                seq: self.seq,
                sig: &self.sig,
            }),
        }
    }
}

/// How many items one source holds.
#[derive(Clone, Copy)]
struct SourceCount {
    source: Source,
    count: usize,
}

/// A bounded BEP 44 item store (see the [module docs](self) for the rules and eviction).
///
/// About `ITEMS × (VMAX + 180)` bytes (1.2 MB per 1000 items of the default `VMAX`);
/// [`ItemStore::new`] is `const`.
pub struct ItemStore<const ITEMS: usize, const VMAX: usize = DEFAULT_VMAX> {
    slots: [Slot<VMAX>; ITEMS],
    len: usize,
    /// Items kept at most (`<= ITEMS`).
    limit: usize,
    /// Use counter for the LRU order (one tick per put or get).
    clock: u64,
    /// The sources holding items, each with its count (never 0); unordered.
    sources: heapless::Vec<SourceCount, ITEMS>,
}

impl<const ITEMS: usize, const VMAX: usize> Default for ItemStore<ITEMS, VMAX> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const ITEMS: usize, const VMAX: usize> core::fmt::Debug for ItemStore<ITEMS, VMAX> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ItemStore").field("len", &self.len).finish()
    }
}

impl<const ITEMS: usize, const VMAX: usize> ItemStore<ITEMS, VMAX> {
    /// An empty store that keeps up to `ITEMS` items.
    pub const fn new() -> Self {
        Self::with_limit(ITEMS)
    }

    /// An empty store that keeps at most `limit` items (capped at `ITEMS`): the grape's
    /// `--dht_maxValues`. A limit of 0 refuses every put.
    pub const fn with_limit(limit: usize) -> Self {
        ItemStore {
            slots: [Slot::FREE; ITEMS],
            len: 0,
            limit: if limit < ITEMS { limit } else { ITEMS },
            clock: 0,
            sources: heapless::Vec::new(),
        }
    }

    /// The most items this store keeps.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Number of items `source` holds.
    pub fn source_len(&self, source: Source) -> usize {
        self.source_index(source)
            .and_then(|i| self.sources.get(i))
            .map_or(0, |c| c.count)
    }

    /// Stores an immutable item (raw canonical bencoded `v`) on behalf of `source` and returns
    /// its key.
    ///
    /// Storing a key that is already there only marks it used (the value is the same by
    /// construction; the item stays its first putter's).
    pub fn put_immutable(&mut self, raw_v: &[u8], source: Source) -> Result<Key, PutError> {
        self.check_v(raw_v)?;
        let key = immutable_key(raw_v);
        if let Some(i) = self.find(&key) {
            let tick = self.tick();
            if let Some(slot) = self.slots.get_mut(i) {
                slot.last_use = tick;
            }
            return Ok(key);
        }
        let i = self.slot_for(&key, source)?;
        self.write(i, key, raw_v, None, source);
        Ok(key)
    }

    /// Stores a mutable item on behalf of `source` after the checks of the
    /// [module docs](self), in bittorrent-dht's order, and returns its key `sha1(k ‖ salt)`.
    /// An update (a valid higher `seq`) makes the item `source`'s.
    ///
    /// `salt` is `Some` when the message had a `salt` key (see [`encode_sig_data`]); `cas` is
    /// the optional expected current `seq`. A CAS is only checked against an existing item, and
    /// a new `seq` must be strictly greater than the stored one.
    #[allow(clippy::too_many_arguments)]
    pub fn put_mutable(
        &mut self,
        k: &[u8; PUBLIC_KEY_LEN],
        salt: Option<&[u8]>,
        seq: i64,
        sig: &[u8; SIGNATURE_LEN],
        raw_v: &[u8],
        cas: Option<i64>,
        source: Source,
    ) -> Result<Key, PutError> {
        self.check_v(raw_v)?;
        #[cfg(not(feature = "ed25519"))]
        {
            let _ = (k, salt, seq, sig, cas, source);
            Err(PutError::VerificationNotSupported)
        }
        #[cfg(feature = "ed25519")]
        {
            if salt.is_some_and(|s| s.len() > MAX_SALT_LEN) {
                return Err(PutError::SaltTooLarge);
            }
            if !verify_mutable(k, salt, seq, raw_v, sig) {
                return Err(PutError::BadSignature);
            }
            self.store_verified(k, salt, seq, sig, raw_v, cas, source)
        }
    }

    /// The CAS/seq rules and the store, once the signature is known to be good.
    #[cfg(feature = "ed25519")]
    #[allow(clippy::too_many_arguments)]
    fn store_verified(
        &mut self,
        k: &[u8; PUBLIC_KEY_LEN],
        salt: Option<&[u8]>,
        seq: i64,
        sig: &[u8; SIGNATURE_LEN],
        raw_v: &[u8],
        cas: Option<i64>,
        source: Source,
    ) -> Result<Key, PutError> {
        let key = mutable_key(k, salt);
        if let Some(prev) = self.find(&key).and_then(|i| self.slots.get(i)) {
            // An immutable item under this key has no `seq`: any CAS mismatches it and the
            // sequence rule does not apply (`typeof prev.seq === 'number'`).
            let prev_seq = prev.mutable.then_some(prev.seq);
            if cas.is_some() && prev_seq != cas {
                return Err(PutError::CasMismatch);
            }
            if prev_seq.is_some_and(|p| seq <= p) {
                return Err(PutError::SequenceTooLow);
            }
        }
        let i = self.slot_for(&key, source)?;
        self.write(i, key, raw_v, Some((k, seq, sig)), source);
        Ok(key)
    }

    /// The item under `key`, marking it used (LRU), as a `get` query does.
    pub fn get(&mut self, key: &Key) -> Option<ItemRef<'_>> {
        let i = self.find(key)?;
        let tick = self.tick();
        let slot = self.slots.get_mut(i)?;
        slot.last_use = tick;
        Some(slot.as_ref())
    }

    /// The item under `key`, without marking it used.
    pub fn peek(&self, key: &Key) -> Option<ItemRef<'_>> {
        self.slots.get(self.find(key)?).map(Slot::as_ref)
    }

    /// Number of stored items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check_v(&self, raw_v: &[u8]) -> Result<(), PutError> {
        if raw_v.is_empty() {
            return Err(PutError::EmptyValue);
        }
        if payload_len(raw_v) > MAX_V_LEN || raw_v.len() > VMAX {
            return Err(PutError::PayloadTooLarge);
        }
        Ok(())
    }

    fn tick(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    fn find(&self, key: &Key) -> Option<usize> {
        self.slots.iter().position(|s| s.used && s.key == *key)
    }

    /// The slot to write `key` into: its own, a free one, or the one the fairness rule of the
    /// [module docs](self) frees for `source` (its count is then already taken off).
    fn slot_for(&mut self, key: &Key, source: Source) -> Result<usize, PutError> {
        if let Some(i) = self.find(key) {
            return Ok(i);
        }
        if self.limit == 0 {
            return Err(PutError::NoCapacity);
        }
        if self.len < self.limit {
            let i = self
                .slots
                .iter()
                .position(|s| !s.used)
                .ok_or(PutError::NoCapacity)?;
            self.len += 1;
            return Ok(i);
        }
        let own = self.source_len(source);
        let max = self
            .sources_in_use()
            .iter()
            .map(|c| c.count)
            .max()
            .unwrap_or(0);
        let loser = if own >= 1 && own + 1 >= max {
            source
        } else if max <= 1 {
            // Holding nothing against sources that hold one each: nobody to take from.
            return Err(PutError::Full);
        } else {
            self.sources_in_use()
                .iter()
                .find(|c| c.count == max)
                .map(|c| c.source)
                .ok_or(PutError::Full)?
        };
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.used && s.source == loser)
            .min_by_key(|(_, s)| s.last_use)
            .map(|(i, _)| i)
            .ok_or(PutError::Full)?;
        self.uncount(loser);
        if let Some(slot) = self.slots.get_mut(victim) {
            slot.used = false;
        }
        Ok(victim)
    }

    fn sources_in_use(&self) -> &[SourceCount] {
        &self.sources
    }

    fn source_index(&self, source: Source) -> Option<usize> {
        self.sources_in_use()
            .iter()
            .position(|c| c.source == source)
    }

    fn count(&mut self, source: Source) {
        match self.source_index(source) {
            Some(i) => {
                if let Some(c) = self.sources.get_mut(i) {
                    c.count += 1;
                }
            }
            // There is room: a source in the table holds at least one of at most ITEMS items.
            None => {
                let _ = self.sources.push(SourceCount { source, count: 1 });
            }
        }
    }

    fn uncount(&mut self, source: Source) {
        let Some(i) = self.source_index(source) else {
            return;
        };
        let Some(c) = self.sources.get_mut(i) else {
            return;
        };
        c.count = c.count.saturating_sub(1);
        if c.count == 0 {
            // `i` is in bounds: `get_mut(i)` just found it.
            self.sources.swap_remove(i);
        }
    }

    fn write(
        &mut self,
        i: usize,
        key: Key,
        raw_v: &[u8],
        mutable: Option<(&[u8; PUBLIC_KEY_LEN], i64, &[u8; SIGNATURE_LEN])>,
        source: Source,
    ) {
        let tick = self.tick();
        let Some(previous) = self.slots.get(i).map(|s| s.used.then_some(s.source)) else {
            return;
        };
        if raw_v.len() > VMAX {
            return;
        }
        if previous != Some(source) {
            if let Some(p) = previous {
                self.uncount(p);
            }
            self.count(source);
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        slot.v.clear();
        // Cannot fail: `raw_v.len() <= VMAX` was checked above.
        let _ = slot.v.extend_from_slice(raw_v);
        slot.source = source;
        slot.used = true;
        slot.key = key;
        slot.last_use = tick;
        match mutable {
            Some((k, seq, sig)) => {
                slot.mutable = true;
                slot.k = *k;
                slot.seq = seq;
                slot.sig = *sig;
            }
            None => {
                slot.mutable = false;
                slot.k = [0; PUBLIC_KEY_LEN];
                slot.seq = 0;
                slot.sig = [0; SIGNATURE_LEN];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    impl<const ITEMS: usize, const VMAX: usize> ItemStore<ITEMS, VMAX> {
        /// A put by the node itself.
        fn put_local(&mut self, raw_v: &[u8]) -> Result<Key, PutError> {
            self.put_immutable(raw_v, Source::Local)
        }

        /// A mutable put by the node itself.
        fn put_mutable_local(
            &mut self,
            k: &[u8; PUBLIC_KEY_LEN],
            salt: Option<&[u8]>,
            seq: i64,
            sig: &[u8; SIGNATURE_LEN],
            raw_v: &[u8],
            cas: Option<i64>,
        ) -> Result<Key, PutError> {
            self.put_mutable(k, salt, seq, sig, raw_v, cas, Source::Local)
        }
    }

    fn src(last: u8) -> Source {
        Source::Remote([10, 0, 0, last])
    }

    /// A distinct one-byte-string value per `i`.
    fn value(i: u32) -> Vec<u8> {
        let v = std::format!("{i}");
        std::format!("{}:{v}", v.len()).into_bytes()
    }

    /// The counts agree with the slots, and the store stays within its limit.
    fn check_counts<const I: usize, const V: usize>(s: &ItemStore<I, V>) {
        let mut total = 0;
        for c in s.sources_in_use() {
            assert!(c.count > 0);
            let held = s
                .slots
                .iter()
                .filter(|x| x.used && x.source == c.source)
                .count();
            assert_eq!(held, c.count);
            total += c.count;
        }
        assert_eq!(total, s.len());
        assert_eq!(s.slots.iter().filter(|x| x.used).count(), s.len());
        assert!(s.len() <= s.limit());
    }

    fn hex20(s: &str) -> Key {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn immutable_keys_match_the_node_grape() {
        assert_eq!(
            immutable_key(b"11:hello world"),
            hex20("6d33adc2b6b2c14c3036feefb7fedbca1a880527")
        );
        assert_eq!(
            immutable_key(b"i5e"),
            hex20("fd512d5838b7f0c9fa46debf0d0f0d0d28ea81a1")
        );
        assert_eq!(
            immutable_key(b"d1:ai1ee"),
            hex20("f07b49d80353d8bc839cb1b2782f2eb8fc1ccdd2")
        );
        let mut s = ItemStore::<4>::new();
        let key = s.put_local(b"11:hello world").unwrap();
        assert_eq!(key, hex20("6d33adc2b6b2c14c3036feefb7fedbca1a880527"));
        let item = s.get(&key).unwrap();
        assert_eq!(item.v, b"11:hello world");
        assert_eq!(item.mutable, None);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn mutable_key_is_sha1_of_k_and_salt() {
        let k: [u8; 32] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            mutable_key(&k, Some(b"mysalt")),
            hex20("2dd7e0557e9994b2f7c3ec9f89043582b0507ab2")
        );
        assert_eq!(
            mutable_key(&k, None),
            hex20("ae5bd8efea5322c4d9986d06680a781392f9a642")
        );
        assert_eq!(mutable_key(&k, Some(b"")), mutable_key(&k, None));
    }

    #[test]
    fn sig_data_encoding() {
        let mut buf = [0u8; 128];
        assert_eq!(
            encode_sig_data(Some(b"mysalt"), 1, b"13:hello mutable", &mut buf).unwrap(),
            b"4:salt6:mysalt3:seqi1e1:v13:hello mutable"
        );
        assert_eq!(
            encode_sig_data(None, 0, b"2:hi", &mut buf).unwrap(),
            b"3:seqi0e1:v2:hi"
        );
        assert_eq!(
            encode_sig_data(Some(b""), -3, b"i5e", &mut buf).unwrap(),
            b"4:salt0:3:seqi-3e1:vi5e"
        );
        assert_eq!(
            encode_sig_data(None, 0, b"2:hi", &mut [0u8; 10]),
            Err(BufferFull)
        );
        // The largest data fits the fixed buffer exactly.
        let salt = [b's'; MAX_SALT_LEN];
        let v = [b'v'; DEFAULT_VMAX];
        let mut big = [0u8; MAX_SIG_DATA_LEN];
        let d = encode_sig_data(Some(&salt), i64::MIN, &v, &mut big).unwrap();
        assert_eq!(d.len(), MAX_SIG_DATA_LEN);
    }

    #[test]
    fn payload_limit_is_node_v_length() {
        let mut s = ItemStore::<2>::new();
        let mut v = Vec::from(&b"1000:"[..]);
        v.extend([b'x'; 1000]);
        assert!(s.put_local(&v).is_ok());
        let mut v = Vec::from(&b"1001:"[..]);
        v.extend([b'x'; 1001]);
        assert_eq!(s.put_local(&v), Err(PutError::PayloadTooLarge));
        // A list longer than VMAX raw bytes.
        let mut l = Vec::from(&b"l"[..]);
        for _ in 0..400 {
            l.extend(b"i1e");
        }
        l.push(b'e');
        assert_eq!(s.put_local(&l), Err(PutError::PayloadTooLarge));
        // A smaller store bounds raw bytes by its VMAX.
        let mut small = ItemStore::<2, 8>::new();
        assert!(small.put_local(b"6:abcdef").is_ok());
        assert_eq!(
            small.put_local(b"7:abcdefg"),
            Err(PutError::PayloadTooLarge)
        );
        assert_eq!(small.put_local(b""), Err(PutError::EmptyValue));
        assert_eq!(
            PutError::PayloadTooLarge.krpc_error(),
            Some((205, "data payload too large"))
        );
    }

    #[test]
    fn payload_len_reads_string_prefixes_only() {
        assert_eq!(payload_len(b"11:hello world"), 11);
        assert_eq!(payload_len(b"i5e"), 3);
        assert_eq!(payload_len(b":abc"), 4);
        assert_eq!(payload_len(b"123"), 3);
        assert_eq!(payload_len(b"99999999999999999999999:x"), 25);
    }

    #[test]
    fn lru_by_count_evicts_the_least_recently_used() {
        let mut s = ItemStore::<2, 16>::new();
        let a = s.put_local(b"1:a").unwrap();
        let b = s.put_local(b"1:b").unwrap();
        assert!(s.get(&a).is_some()); // a is now more recent than b
        let c = s.put_local(b"1:c").unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.peek(&b).is_none());
        assert!(s.peek(&a).is_some() && s.peek(&c).is_some());
        // peek does not refresh: a is now the oldest use.
        assert!(s.peek(&a).is_some());
        let d = s.put_local(b"1:d").unwrap();
        assert!(s.peek(&a).is_none());
        assert!(s.peek(&c).is_some() && s.peek(&d).is_some());
        // Re-putting refreshes without growing.
        s.put_local(b"1:c").unwrap();
        s.put_local(b"1:e").unwrap();
        assert!(s.peek(&c).is_some() && s.peek(&d).is_none());
    }

    #[test]
    fn a_flood_of_puts_evicts_the_flooders_own_items() {
        let mut s = ItemStore::<8, 16>::new();
        let honest: Vec<Key> = (0..3)
            .map(|i| s.put_immutable(&value(i), src(1)).unwrap())
            .collect();
        for i in 100..1100 {
            s.put_immutable(&value(i), src(66)).unwrap();
        }
        check_counts(&s);
        for k in &honest {
            assert!(s.peek(k).is_some());
        }
        assert_eq!((s.source_len(src(1)), s.source_len(src(66))), (3, 5));
        // The flooder keeps its most recent items.
        assert!(s.peek(&immutable_key(&value(1099))).is_some());
        assert!(s.peek(&immutable_key(&value(1094))).is_none());
    }

    #[test]
    fn a_growing_flood_pushes_a_heavy_source_down_to_an_equal_share_never_below() {
        let mut s = ItemStore::<8, 16>::new();
        for i in 0..6 {
            s.put_immutable(&value(i), src(1)).unwrap();
        }
        for i in 100..300 {
            s.put_immutable(&value(i), src(66)).unwrap();
            assert!(s.source_len(src(1)) >= 4);
        }
        assert_eq!((s.source_len(src(1)), s.source_len(src(66))), (4, 4));
        // The heavy source lost its least recently used items.
        for i in 0..6 {
            assert_eq!(s.peek(&immutable_key(&value(i))).is_some(), i >= 2, "{i}");
        }
        check_counts(&s);
    }

    #[test]
    fn the_heavy_source_loses_its_least_recently_used_item() {
        let mut s = ItemStore::<4, 16>::new();
        let keys: Vec<Key> = (0..3)
            .map(|i| s.put_immutable(&value(i), src(1)).unwrap())
            .collect();
        s.put_immutable(&value(50), src(2)).unwrap();
        assert!(s.get(&keys[0]).is_some());
        s.put_immutable(&value(60), src(3)).unwrap();
        assert!(s.peek(&keys[0]).is_some());
        assert!(s.peek(&keys[1]).is_none());
        assert!(s.peek(&keys[2]).is_some());
        check_counts(&s);
    }

    #[test]
    fn a_full_store_of_single_items_refuses_a_newcomer() {
        let mut s = ItemStore::<3, 16>::new();
        for i in 0..3u8 {
            s.put_immutable(&value(u32::from(i)), src(i)).unwrap();
        }
        assert_eq!(s.put_immutable(&value(9), src(9)), Err(PutError::Full));
        assert_eq!(PutError::Full.krpc_error(), None);
        assert_eq!(s.source_len(src(9)), 0);
        // A source already there replaces its own item.
        s.put_immutable(&value(10), src(1)).unwrap();
        assert!(s.peek(&immutable_key(&value(1))).is_none());
        check_counts(&s);
    }

    #[test]
    fn a_re_put_of_an_immutable_item_keeps_its_owner() {
        let mut s = ItemStore::<4, 16>::new();
        let key = s.put_immutable(b"1:a", src(1)).unwrap();
        assert_eq!(s.put_immutable(b"1:a", src(2)), Ok(key));
        assert_eq!((s.source_len(src(1)), s.source_len(src(2))), (1, 0));
        check_counts(&s);
    }

    #[test]
    fn the_runtime_limit_bounds_the_store() {
        let mut s = ItemStore::<8, 16>::with_limit(3);
        assert_eq!(s.limit(), 3);
        for i in 0..10 {
            s.put_immutable(&value(i), Source::Local).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert!(s.peek(&immutable_key(&value(9))).is_some());
        check_counts(&s);
        assert_eq!(ItemStore::<8, 16>::with_limit(100).limit(), 8);
        let mut none = ItemStore::<8, 16>::with_limit(0);
        assert_eq!(none.put_local(b"1:a"), Err(PutError::NoCapacity));
        assert!(none.is_empty());
    }

    #[test]
    fn zero_items_store_refuses() {
        let mut s = ItemStore::<0, 16>::new();
        assert_eq!(s.put_local(b"1:a"), Err(PutError::NoCapacity));
        assert_eq!(PutError::NoCapacity.krpc_error(), None);
    }

    #[test]
    fn error_codes_and_messages() {
        assert_eq!(
            PutError::CasMismatch.krpc_error(),
            Some((301, "CAS mismatch, re-read and try again"))
        );
        assert_eq!(
            PutError::SequenceTooLow.krpc_error(),
            Some((302, "sequence number less than current"))
        );
        assert_eq!(
            PutError::VerificationNotSupported.krpc_error(),
            Some((400, "verification not supported"))
        );
        assert_eq!(PutError::BadSignature.krpc_error(), None);
        assert_eq!(std::format!("{}", PutError::SaltTooLarge), "salt too big");
    }

    #[cfg(not(feature = "ed25519"))]
    #[test]
    fn mutable_put_without_verification_is_400_after_205() {
        let mut s = ItemStore::<2>::new();
        assert_eq!(
            s.put_mutable_local(&[1; 32], None, 1, &[0; 64], b"1:x", None),
            Err(PutError::VerificationNotSupported)
        );
        let mut v = Vec::from(&b"1001:"[..]);
        v.extend([b'x'; 1001]);
        assert_eq!(
            s.put_mutable_local(&[1; 32], None, 1, &[0; 64], &v, None),
            Err(PutError::PayloadTooLarge)
        );
        assert!(s.is_empty());
    }

    #[cfg(feature = "ed25519")]
    mod signed {
        use super::*;
        use ed25519_dalek::SigningKey;

        /// The secret key 00 01 02 … 1f; golden values from Python `cryptography`
        /// (OpenSSL's Ed25519), signatures being deterministic.
        fn fixed_key() -> SigningKey {
            SigningKey::from_bytes(&core::array::from_fn(|i| i as u8))
        }
        const PK: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
        const SIG_SALT: &str = "0308d670ee95e1cd3a8bd12baed64a9c0a2dd2299fbdb2e2586ac8cf9abfac87c66ce46cb8d79b066f62f9f5a77cdac8c3eecc32f912c1b78a8b386c40e07305";

        fn put<const N: usize>(
            s: &mut ItemStore<N>,
            sk: &SigningKey,
            salt: Option<&[u8]>,
            seq: i64,
            v: &[u8],
            cas: Option<i64>,
        ) -> Result<Key, PutError> {
            let sig = sign_mutable(sk, salt, seq, v).unwrap();
            s.put_mutable_local(&sk.verifying_key().to_bytes(), salt, seq, &sig, v, cas)
        }

        #[test]
        fn sign_matches_an_independent_implementation() {
            let sk = fixed_key();
            assert_eq!(hex::encode(sk.verifying_key().to_bytes()), PK);
            let sig = sign_mutable(&sk, Some(b"mysalt"), 1, b"13:hello mutable").unwrap();
            assert_eq!(hex::encode(sig), SIG_SALT);
            let sig = sign_mutable(&sk, None, 0, b"2:hi").unwrap();
            assert_eq!(hex::encode(sig), "4309edcdb03f3be1a52b098bc55acaf800b18a3a32ddf913aca5484322d1715ec84f087f8e9e45c7f816d3e8e826784e8a5a1b3c83b457743afd03edaf5ea80f");
        }

        #[test]
        fn roundtrip_and_get() {
            let sk = fixed_key();
            let mut s = ItemStore::<4>::new();
            let key = put(&mut s, &sk, Some(b"mysalt"), 1, b"13:hello mutable", None).unwrap();
            assert_eq!(key, hex20("ca30a3483c53504d98a4cea5fd70f15e6777421b"));
            let item = s.get(&key).unwrap();
            assert_eq!(item.v, b"13:hello mutable");
            let m = item.mutable.unwrap();
            assert_eq!(m.seq, 1);
            assert_eq!(hex::encode(m.sig), SIG_SALT);
            assert_eq!(hex::encode(m.k), PK);
            // A getter checks the answer with its own salt.
            assert!(verify_mutable(m.k, Some(b"mysalt"), m.seq, item.v, m.sig));
            assert!(!verify_mutable(m.k, None, m.seq, item.v, m.sig));
        }

        #[test]
        fn bad_signature_is_silent_and_stores_nothing() {
            let sk = fixed_key();
            let mut s = ItemStore::<4>::new();
            let k = sk.verifying_key().to_bytes();
            let mut sig = sign_mutable(&sk, None, 1, b"1:a").unwrap();
            // Signed over another value / seq / salt.
            assert_eq!(
                s.put_mutable_local(&k, None, 1, &sig, b"1:b", None),
                Err(PutError::BadSignature)
            );
            assert_eq!(
                s.put_mutable_local(&k, None, 2, &sig, b"1:a", None),
                Err(PutError::BadSignature)
            );
            assert_eq!(
                s.put_mutable_local(&k, Some(b""), 1, &sig, b"1:a", None),
                Err(PutError::BadSignature)
            );
            sig[5] ^= 0x10;
            assert_eq!(
                s.put_mutable_local(&k, None, 1, &sig, b"1:a", None),
                Err(PutError::BadSignature)
            );
            // Not a valid curve point / small-order key.
            assert_eq!(
                s.put_mutable_local(&[0xff; 32], None, 1, &sig, b"1:a", None),
                Err(PutError::BadSignature)
            );
            assert_eq!(
                s.put_mutable_local(&[0; 32], None, 1, &[0; 64], b"1:a", None),
                Err(PutError::BadSignature)
            );
            assert_eq!(PutError::BadSignature.krpc_error(), None);
            assert!(s.is_empty());
        }

        #[test]
        fn seq_must_grow() {
            let sk = fixed_key();
            let mut s = ItemStore::<4>::new();
            let key = put(&mut s, &sk, None, 5, b"1:a", None).unwrap();
            assert_eq!(
                put(&mut s, &sk, None, 5, b"1:b", None),
                Err(PutError::SequenceTooLow)
            );
            assert_eq!(
                put(&mut s, &sk, None, 4, b"1:b", None),
                Err(PutError::SequenceTooLow)
            );
            assert_eq!(s.peek(&key).unwrap().v, b"1:a");
            assert_eq!(put(&mut s, &sk, None, 6, b"1:b", None), Ok(key));
            let item = s.peek(&key).unwrap();
            assert_eq!((item.v, item.mutable.unwrap().seq), (&b"1:b"[..], 6));
            assert_eq!(s.len(), 1);
            // Another salt is another item with its own sequence.
            assert!(put(&mut s, &sk, Some(b"x"), 1, b"1:c", None).is_ok());
            assert_eq!(s.len(), 2);
        }

        #[test]
        fn cas_is_checked_against_the_stored_seq() {
            let sk = fixed_key();
            let mut s = ItemStore::<4>::new();
            // No item yet: the CAS is not checked.
            let key = put(&mut s, &sk, None, 1, b"1:a", Some(7)).unwrap();
            assert_eq!(
                put(&mut s, &sk, None, 2, b"1:b", Some(0)),
                Err(PutError::CasMismatch)
            );
            // CAS is checked before seq: a stale seq with a wrong CAS answers 301.
            assert_eq!(
                put(&mut s, &sk, None, 1, b"1:b", Some(0)),
                Err(PutError::CasMismatch)
            );
            assert_eq!(
                put(&mut s, &sk, None, 1, b"1:b", Some(1)),
                Err(PutError::SequenceTooLow)
            );
            assert_eq!(put(&mut s, &sk, None, 2, b"1:b", Some(1)), Ok(key));
            assert_eq!(s.peek(&key).unwrap().mutable.unwrap().seq, 2);
        }

        #[test]
        fn size_and_salt_are_checked_before_the_signature() {
            let sk = fixed_key();
            let mut s = ItemStore::<4>::new();
            let k = sk.verifying_key().to_bytes();
            let mut v = Vec::from(&b"1001:"[..]);
            v.extend([b'x'; 1001]);
            assert_eq!(
                s.put_mutable_local(&k, None, 1, &[0; 64], &v, None),
                Err(PutError::PayloadTooLarge)
            );
            let salt = [1u8; MAX_SALT_LEN + 1];
            assert_eq!(
                s.put_mutable_local(&k, Some(&salt), 1, &[0; 64], b"1:a", None),
                Err(PutError::SaltTooLarge)
            );
            let salt = [1u8; MAX_SALT_LEN];
            assert!(put(&mut s, &sk, Some(&salt), 1, b"1:a", None).is_ok());
        }

        #[test]
        fn a_signed_update_from_any_source_moves_the_item_to_it() {
            let sk = fixed_key();
            let k = sk.verifying_key().to_bytes();
            let mut s = ItemStore::<4>::new();
            let sig1 = sign_mutable(&sk, None, 1, b"1:a").unwrap();
            let key = s
                .put_mutable(&k, None, 1, &sig1, b"1:a", None, src(1))
                .unwrap();
            let sig2 = sign_mutable(&sk, None, 2, b"1:b").unwrap();
            assert_eq!(
                s.put_mutable(&k, None, 2, &sig2, b"1:b", None, src(2)),
                Ok(key)
            );
            assert_eq!(s.peek(&key).unwrap().v, b"1:b");
            assert_eq!((s.source_len(src(1)), s.source_len(src(2))), (0, 1));
            // A replay of an older version by anyone changes nothing.
            assert_eq!(
                s.put_mutable(&k, None, 1, &sig1, b"1:a", None, src(1)),
                Err(PutError::SequenceTooLow)
            );
            assert_eq!(s.source_len(src(2)), 1);
            check_counts(&s);
        }

        #[test]
        fn largest_item_signs_and_verifies() {
            let sk = fixed_key();
            let mut s = ItemStore::<1>::new();
            let mut v = Vec::from(&b"1000:"[..]);
            v.extend([b'x'; 1000]);
            let salt = [7u8; MAX_SALT_LEN];
            let key = put(&mut s, &sk, Some(&salt), i64::MIN, &v, None).unwrap();
            assert_eq!(s.peek(&key).unwrap().v, &v[..]);
        }
    }

    proptest! {
        #[test]
        fn store_stays_bounded_and_finds_what_it_kept(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..30)) {
            let mut s = ItemStore::<5, 32>::new();
            let mut recent: Vec<Key> = Vec::new();
            for v in &values {
                match s.put_local(v) {
                    Ok(key) => {
                        prop_assert_eq!(key, immutable_key(v));
                        prop_assert_eq!(s.peek(&key).unwrap().v, &v[..]);
                        recent.retain(|k| *k != key);
                        recent.push(key);
                    }
                    Err(e) => prop_assert!(v.is_empty() || v.len() > 32 || payload_len(v) > MAX_V_LEN, "{:?}", e),
                }
                prop_assert!(s.len() <= 5);
                // The 5 most recently put keys are all there.
                for k in recent.iter().rev().take(5) {
                    prop_assert!(s.peek(k).is_some());
                }
            }
        }

        #[test]
        fn many_sources_keep_counts_right_and_shares_fair(puts in proptest::collection::vec((0..4u8, 0..12u32, any::<bool>()), 1..120), limit in 0..7usize) {
            let mut s = ItemStore::<6, 16>::with_limit(limit);
            for (who, v, get) in puts {
                if get {
                    let _ = s.get(&immutable_key(&value(v)));
                    continue;
                }
                let before: Vec<usize> = (0..4).map(|q| s.source_len(src(q))).collect();
                let r = s.put_immutable(&value(v), src(who));
                prop_assert!(matches!(r, Ok(_) | Err(PutError::Full) | Err(PutError::NoCapacity)));
                check_counts(&s);
                let refused = usize::from(r.is_err());
                for q in (0..4).filter(|&q| q != who) {
                    if s.source_len(src(q)) < before[usize::from(q)] {
                        // A source only loses items while it holds more than the putter.
                        prop_assert!(s.source_len(src(q)) >= s.source_len(src(who)) + refused);
                    }
                }
            }
        }

        #[test]
        fn mutable_put_never_panics(k: [u8; 32], salt in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)), seq: i64, sig in proptest::collection::vec(any::<u8>(), 64), v in proptest::collection::vec(any::<u8>(), 0..1100), cas: Option<i64>) {
            let mut s = ItemStore::<2>::new();
            let sig: [u8; 64] = sig.try_into().unwrap();
            let r = s.put_mutable_local(&k, salt.as_deref(), seq, &sig, &v, cas);
            prop_assert!(r.is_err());
            prop_assert!(s.is_empty());
        }
    }
}
