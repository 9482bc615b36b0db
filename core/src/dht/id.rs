//! Node ids and XOR distance.
//!
//! # Distance to a variable-length key
//!
//! Grenache does not hash service names: the DHT key of `rest:util:net` is its 13 raw bytes
//! (docs/protocol.md §4.1, §13.4), so distances are taken between a 20-byte [`NodeId`] and a key of
//! any length. k-bucket's convention (`kb:136-146`, tristanls/k-bucket#29) is followed: the
//! two byte strings are XORed position by position and every byte beyond the shorter one
//! counts as `255`. The distance of an id to a key of length `L` therefore has `max(20, L)`
//! bytes, read as a big-endian integer.
//!
//! When two ids are compared against the same key, the bytes from position `min(20, L)` on are
//! `255` for both (either the key or the id is missing there), so the order of the two
//! distances is decided by the first `min(20, L)` XORed bytes alone. [`Distance`] keeps
//! exactly those 20 bytes (the tail up to 20 filled with `255`) and compares them
//! lexicographically: this is the exact big-integer order, with no rounding anywhere.
//!
//! # Where this differs from Node (docs/protocol.md §6.3, §13.8), and why that is safe
//!
//! k-bucket accumulates the distance in a float64 (`d = d * 256 + byte`). A float64 holds 53
//! significant bits, so Node's order is exact only on about the first 6–7 bytes of the
//! distance; distances that first differ below that precision round to the same value, and
//! Node's stable sort keeps such ties in insertion (traversal) order. Rounding is monotone, so
//! the float order never inverts the exact one, it only merges neighbours. Keys longer than
//! about 128 bytes overflow to `Infinity` for (nearly) every id, so for such names Node's
//! "closest" degenerates to insertion order.
//!
//! We compare exactly, and break the remaining exact ties (possible only for keys shorter than
//! 20 bytes, where ids differing only beyond the key's length are equidistant; Node has the
//! same ties) by the id bytes, so the order is total and deterministic.
//!
//! This is interoperable: no message carries a distance, nodes never have to agree on an order, and
//! the two orders coincide whenever the candidates' distances differ within their first 6 bytes.
//! For two random ids that fails with probability about 2⁻⁴⁸, i.e. never in a network of grapes.
//! Where they do disagree, both sides still pick nodes that are (within float precision) equally
//! close to the key, so a lookup by one finds what the other stored: announces go to every
//! token-bearing node of the traversal (docs/protocol.md §4.2), and lookups query the same
//! neighbourhood.

use core::cmp::Ordering;

use crate::rng::Rng;

/// Length of a node id in bytes (the SHA-1 length).
pub const ID_LEN: usize = 20;

/// Number of bits in a node id, hence the number of k-buckets.
pub const ID_BITS: usize = ID_LEN * 8;

/// A 20-byte Kademlia node id, random per process like bittorrent-dht's.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NodeId(pub [u8; ID_LEN]);

impl NodeId {
    /// The id made of `bytes`, if there are exactly [`ID_LEN`] of them.
    pub fn from_slice(bytes: &[u8]) -> Option<NodeId> {
        <[u8; ID_LEN]>::try_from(bytes).ok().map(NodeId)
    }

    /// A fresh random id (bittorrent-dht draws a new one at every start, `krpc:24`).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> NodeId {
        let mut id = [0u8; ID_LEN];
        rng.fill_bytes(&mut id);
        NodeId(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// This id's exact distance to `target` (a node id or a raw service-name key).
    pub fn distance(&self, target: &[u8]) -> Distance {
        Distance::between(target, self)
    }
}

impl core::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The XOR distance between a node id and a key, exact and totally ordered among ids measured
/// against the same key (see the [module docs](self)).
///
/// The bytes are the first 20 bytes of the full distance: `id[i] ^ key[i]` while both exist,
/// `255` after the end of the key. Bytes past the 20th are `255` for every id and are not
/// stored. Comparing `Distance`s taken against *different* keys of different lengths is
/// meaningless (like comparing against different keys at all).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Distance(pub [u8; ID_LEN]);

impl Distance {
    /// The largest distance (also the distance of every id to the empty key).
    pub const MAX: Distance = Distance([0xff; ID_LEN]);

    /// The distance from `id` to `target`, with k-bucket's "missing bytes count 255" rule.
    pub fn between(target: &[u8], id: &NodeId) -> Distance {
        let mut d = [0xff; ID_LEN];
        for ((d, a), b) in d.iter_mut().zip(id.0).zip(target) {
            *d = a ^ b;
        }
        Distance(d)
    }

    /// Number of leading zero bits (0..=160): the length of the prefix the id shares with the
    /// key. 160 means the id equals the key's first 20 bytes and the key is 20 bytes or longer.
    pub fn leading_zeros(&self) -> usize {
        let mut n = 0;
        for b in self.0 {
            // u32 -> usize never truncates on the targets we build for (16-bit excluded).
            let z = b.leading_zeros() as usize;
            n += z;
            if b != 0 {
                break;
            }
        }
        n
    }
}

impl core::fmt::Debug for Distance {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Distance(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// Which of `a` and `b` is closer to `target`, exactly: `Less` if `a` is closer.
///
/// Ties (only possible when `target` is shorter than 20 bytes and the ids differ only past
/// it) are broken by the id bytes, so this is a total order and `Equal` means `a == b`.
/// To compare many ids against one target, prepare it once with [`Target::new`].
pub fn cmp_distance(target: &[u8], a: &NodeId, b: &NodeId) -> Ordering {
    Target::new(target).cmp(a, b)
}

/// A key prepared for many distance comparisons: the first 20 bytes of the distance become
/// two integers, so comparing two ids costs two XORs and two integer comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Key bytes 0..16 (zero past the key's end), big-endian.
    hi: u128,
    /// Key bytes 16..20, likewise.
    lo: u32,
    /// All ones on the bytes past the key's end: those distance bytes are 255.
    pad_hi: u128,
    /// Likewise for bytes 16..20.
    pad_lo: u32,
}

impl Target {
    /// Prepares `key` (a raw service name or a node id).
    pub fn new(key: &[u8]) -> Target {
        let mut k = [0u8; ID_LEN];
        let mut pad = [0xffu8; ID_LEN];
        for ((k, p), b) in k.iter_mut().zip(pad.iter_mut()).zip(key) {
            *k = *b;
            *p = 0;
        }
        let (hi, lo) = split(&k);
        let (pad_hi, pad_lo) = split(&pad);
        Target {
            hi,
            lo,
            pad_hi,
            pad_lo,
        }
    }

    /// The distance of `id`, as an integer pair ordered like [`Distance`].
    #[inline]
    pub fn key(&self, id: &NodeId) -> (u128, u32) {
        let (hi, lo) = split(&id.0);
        ((hi ^ self.hi) | self.pad_hi, (lo ^ self.lo) | self.pad_lo)
    }

    /// The distance of `id` to this key.
    pub fn distance(&self, id: &NodeId) -> Distance {
        let (hi, lo) = self.key(id);
        let mut d = [0u8; ID_LEN];
        let (h, l) = d.split_at_mut(16);
        h.copy_from_slice(&hi.to_be_bytes());
        l.copy_from_slice(&lo.to_be_bytes());
        Distance(d)
    }

    /// [`cmp_distance`] against this key.
    #[inline]
    pub fn cmp(&self, a: &NodeId, b: &NodeId) -> Ordering {
        self.key(a).cmp(&self.key(b)).then_with(|| a.0.cmp(&b.0))
    }
}

/// An id's bytes as big-endian integers: bytes 0..16 and 16..20.
#[inline]
fn split(b: &[u8; ID_LEN]) -> (u128, u32) {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 4];
    let (h, l) = b.split_at(16);
    hi.copy_from_slice(h);
    lo.copy_from_slice(l);
    (u128::from_be_bytes(hi), u32::from_be_bytes(lo))
}

/// The k-bucket of `other` in a table centred on `own`: the number of leading bits the two
/// ids share (the leading-zero count of their XOR), `0..=159`. `None` for `own` itself, which
/// never goes into its own table.
pub fn bucket_index(own: &NodeId, other: &NodeId) -> Option<usize> {
    let z = Distance::between(&own.0, other).leading_zeros();
    if z < ID_BITS {
        Some(z)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// The full k-bucket distance as a big-endian byte string, the reference definition.
    fn full_distance(target: &[u8], id: &NodeId) -> Vec<u8> {
        let n = target.len().max(ID_LEN);
        (0..n)
            .map(|i| match (id.0.get(i), target.get(i)) {
                (Some(a), Some(b)) => a ^ b,
                _ => 0xff,
            })
            .collect()
    }

    /// k-bucket's float64 distance, as Node computes it (`kb:136-146`).
    fn node_distance(target: &[u8], id: &NodeId) -> f64 {
        full_distance(target, id)
            .iter()
            .fold(0.0, |d, b| d * 256.0 + f64::from(*b))
    }

    fn id(prefix: &[u8]) -> NodeId {
        let mut b = [0u8; ID_LEN];
        b[..prefix.len()].copy_from_slice(prefix);
        NodeId(b)
    }

    #[test]
    fn missing_bytes_count_255() {
        let key = b"svc";
        let d = Distance::between(key, &id(b"svc"));
        assert_eq!(d.0[..3], [0, 0, 0]);
        assert!(d.0[3..].iter().all(|b| *b == 0xff));
        assert_eq!(Distance::between(b"", &id(b"x")), Distance::MAX);
        assert_eq!(d.leading_zeros(), 24);
    }

    #[test]
    fn short_key_compares_on_its_own_length_then_by_id() {
        let key = b"ab";
        let near = id(b"ab\x09");
        let far = id(b"ac");
        assert_eq!(cmp_distance(key, &near, &far), Ordering::Less);
        // Equidistant (they differ only past the key): the smaller id comes first.
        let (x, y) = (id(b"ab\x01"), id(b"ab\x02"));
        assert_eq!(x.distance(key), y.distance(key));
        assert_eq!(cmp_distance(key, &x, &y), Ordering::Less);
        assert_eq!(cmp_distance(key, &y, &x), Ordering::Greater);
        assert_eq!(cmp_distance(key, &x, &x), Ordering::Equal);
    }

    #[test]
    fn long_key_orders_exactly_where_float64_ties() {
        // Two ids whose distances to a 20-byte target first differ at byte 10: the float64
        // accumulation rounds them to the same value, the exact order still separates them.
        let target = [0u8; ID_LEN];
        let mut a = [0x40u8; ID_LEN];
        let mut b = a;
        a[10] = 1;
        b[10] = 2;
        let (a, b) = (NodeId(a), NodeId(b));
        assert_eq!(node_distance(&target, &a), node_distance(&target, &b));
        assert_eq!(cmp_distance(&target, &a, &b), Ordering::Less);
        // A 130-byte name: Node's distance is infinite for every id.
        let long = [b'n'; 130];
        assert!(node_distance(&long, &a).is_infinite());
        assert!(node_distance(&long, &b).is_infinite());
        // 0x40 ^ 0x6e = 0x2e in both up to byte 10, then 0x01 ^ 0x6e > 0x02 ^ 0x6e.
        assert_eq!(cmp_distance(&long, &a, &b), Ordering::Greater);
    }

    #[test]
    fn bucket_index_is_shared_prefix_length() {
        let own = NodeId([0u8; ID_LEN]);
        assert_eq!(bucket_index(&own, &own), None);
        let mut other = [0u8; ID_LEN];
        other[0] = 0x80;
        assert_eq!(bucket_index(&own, &NodeId(other)), Some(0));
        other[0] = 0;
        other[19] = 1;
        assert_eq!(bucket_index(&own, &NodeId(other)), Some(159));
        other[19] = 0;
        other[2] = 0x10;
        assert_eq!(bucket_index(&own, &NodeId(other)), Some(19));
    }

    #[test]
    fn random_ids_differ_and_replay_from_the_seed() {
        let mut r = SplitMix64::new(42);
        let a = NodeId::random(&mut r);
        let b = NodeId::random(&mut r);
        assert_ne!(a, b);
        assert_eq!(a, NodeId::random(&mut SplitMix64::new(42)));
    }

    proptest! {
        #[test]
        fn prepared_target_matches_distance(
            target in proptest::collection::vec(any::<u8>(), 0..40),
            a in any::<[u8; 20]>(),
        ) {
            let a = NodeId(a);
            prop_assert_eq!(Target::new(&target).distance(&a), Distance::between(&target, &a));
        }

        #[test]
        fn distance_order_is_the_big_integer_order(
            target in proptest::collection::vec(any::<u8>(), 0..40),
            a in any::<[u8; 20]>(),
            b in any::<[u8; 20]>(),
            share in 0usize..20,
        ) {
            // Make close pairs likely: b copies a's first `share` bytes.
            let mut b = b;
            b[..share].copy_from_slice(&a[..share]);
            let (a, b) = (NodeId(a), NodeId(b));
            let exact = full_distance(&target, &a).cmp(&full_distance(&target, &b));
            let ours = cmp_distance(&target, &a, &b);
            prop_assert_eq!(a.distance(&target).cmp(&b.distance(&target)), exact);
            if exact != Ordering::Equal {
                prop_assert_eq!(ours, exact);
            } else {
                prop_assert_eq!(ours, a.0.cmp(&b.0));
            }
            // Where float64 distinguishes the two, it agrees with the exact order.
            let (fa, fb) = (node_distance(&target, &a), node_distance(&target, &b));
            if exact != Ordering::Equal && fa.is_finite() && fb.is_finite() && fa != fb {
                prop_assert_eq!(fa.partial_cmp(&fb), Some(exact));
            }
        }

        #[test]
        fn leading_zeros_matches_bucket_index(a in any::<[u8; 20]>(), b in any::<[u8; 20]>()) {
            let (a, b) = (NodeId(a), NodeId(b));
            let lz = Distance::between(&a.0, &b).leading_zeros();
            let bits = (0..ID_BITS).take_while(|i| {
                (a.0[i / 8] >> (7 - i % 8)) & 1 == (b.0[i / 8] >> (7 - i % 8)) & 1
            }).count();
            prop_assert_eq!(lz, bits);
            prop_assert_eq!(bucket_index(&a, &b), if a == b { None } else { Some(bits) });
        }
    }
}
