//! Per-source token buckets: how much a node may send to one IP address.
//!
//! A KRPC answer is larger than the query that asks for it (a 47-byte `get_peers` gets about
//! 900 bytes back) and UDP sources can be forged, so a node that answers everything is an
//! amplifier pointed at whatever address a query claims to come from. [`SourceLimiter`] gives
//! every source IP two token buckets, one in bytes and one in datagrams, refilled with the
//! time the caller passes in (sans-IO: no clock is read). An answer is sent only if both
//! buckets hold enough for it; otherwise nothing is sent and nothing is charged.
//!
//! # Bound
//!
//! Over any interval of `t` seconds, the bytes sent to one source tracked all along are at most
//! `bytes_burst + bytes_per_sec · t`, and the datagrams at most `packets_burst +
//! packets_per_sec · t` ([`RateLimit`]).
//!
//! # Memory and replacement
//!
//! Sources live in a fixed table of `N` slots, in sets of [`WAYS`] chosen by a hash of the IP
//! keyed with a random seed, so that nobody can pick addresses that collide on purpose. A new
//! source takes a free slot of its set, or else the least recently used one, and **inherits
//! that slot's remaining budget** rather than a fresh burst: budget is never created by
//! replacement, so cycling through forged addresses to evict a victim's entry gains nothing,
//! and the total sent to all sources together stays within `N` times the bound above. An
//! entry left alone refills to a full burst, so an idle slot hands a newcomer a full burst.

use crate::time::Instant;

/// Slots per set: a new source can replace one of this many entries.
pub const WAYS: usize = 4;

/// Sources a [`crate::dht::node::Node`] tracks by default (its `SOURCES` parameter): about 32
/// bytes each.
pub const DEFAULT_SOURCES: usize = 256;

/// The budget of one source: a sustained rate and a burst, in bytes and in datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RateLimit {
    /// Bytes per second, sustained.
    pub bytes_per_sec: u32,
    /// Bytes that may be sent at once after a quiet period (the bucket's size).
    pub bytes_burst: u32,
    /// Datagrams per second, sustained.
    pub packets_per_sec: u32,
    /// Datagrams that may be sent at once after a quiet period.
    pub packets_burst: u32,
}

impl RateLimit {
    /// The budget of a grape's answers to one source IP: 64 KiB/s and 100 answers/s
    /// sustained, bursts of 256 KiB and 400 answers.
    ///
    /// An honest grape doing lookups through us sends a few dozen queries a second at most,
    /// each answer below 1.5 KB, so it is never limited; the bursts cover a test network of
    /// dozens of grapes on one IP bootstrapping at once. A forged source gets at most 64 KiB/s
    /// (0.5 Mbit/s) from one grape instead of 19 times whatever the forger sends.
    pub const DEFAULT: RateLimit = RateLimit {
        bytes_per_sec: 64 * 1024,
        bytes_burst: 256 * 1024,
        packets_per_sec: 100,
        packets_burst: 400,
    };
}

impl RateLimit {
    /// The budget of a grape's answers to a routing-table contact, an address that answered
    /// one of our queries from that exact IP and port (so it is a DHT node there, not a forged
    /// source): 8 MiB/s and 10,000 answers/s sustained, bursts of 16 MiB and 20,000 answers.
    ///
    /// A busy grape announces for every worker behind it: 10,000 names announced through it
    /// in a few seconds are as many `get_peers` and `announce_peer` to each of its peers. Only
    /// a source that forges a contact's exact address gets this budget, and then only towards
    /// that contact, a DHT node that drops unsolicited answers.
    pub const CONTACT_DEFAULT: RateLimit = RateLimit {
        bytes_per_sec: 8 * 1024 * 1024,
        bytes_burst: 16 * 1024 * 1024,
        packets_per_sec: 10_000,
        packets_burst: 20_000,
    };
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit::DEFAULT
    }
}

/// Milli-units: a bucket holds `tokens · 1000`, so that refilling by the millisecond is exact
/// in integers (rate per second × milliseconds).
const MILLI: u64 = 1000;

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: [u8; 4],
    used: bool,
    last: Instant,
    bytes: u64,
    packets: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        ip: [0; 4],
        used: false,
        last: Instant::ZERO,
        bytes: 0,
        packets: 0,
    };

    /// Both buckets refilled up to `now`.
    fn refill(&mut self, now: Instant, limit: &RateLimit) {
        let ms = now.as_millis().saturating_sub(self.last.as_millis());
        self.bytes = self
            .bytes
            .saturating_add(ms.saturating_mul(u64::from(limit.bytes_per_sec)))
            .min(u64::from(limit.bytes_burst).saturating_mul(MILLI));
        self.packets = self
            .packets
            .saturating_add(ms.saturating_mul(u64::from(limit.packets_per_sec)))
            .min(u64::from(limit.packets_burst).saturating_mul(MILLI));
        self.last = self.last.max(now);
    }
}

/// Token buckets for up to `N` source IPs. See the [module docs](self).
///
/// The budget is given with every call rather than kept in the table: a node answers its
/// routing-table contacts under a larger budget than strangers, and one source's buckets then
/// refill at the rates of the budget it is checked under, up to that budget's bursts.
#[derive(Clone, Debug)]
pub struct SourceLimiter<const N: usize> {
    seed: u64,
    slots: [Slot; N],
}

impl<const N: usize> SourceLimiter<N> {
    /// An empty table; `seed` (random) keys the hash of addresses.
    pub const fn new(seed: u64) -> Self {
        SourceLimiter {
            seed,
            slots: [Slot::EMPTY; N],
        }
    }

    /// Whether `len` bytes may be sent to `ip` at `now` under `limit`; if so they are charged
    /// (one datagram, `len` bytes). With `N == 0` nothing is tracked and everything is allowed.
    pub fn admit(&mut self, now: Instant, ip: [u8; 4], len: usize, limit: &RateLimit) -> bool {
        self.check(now, ip, len, true, limit)
    }

    /// Whether `len` bytes could be sent to `ip` at `now` under `limit`, charging nothing: a
    /// node asks before it does any work for a query whose answer could not be sent anyway.
    pub fn would_admit(
        &mut self,
        now: Instant,
        ip: [u8; 4],
        len: usize,
        limit: &RateLimit,
    ) -> bool {
        self.check(now, ip, len, false, limit)
    }

    fn check(
        &mut self,
        now: Instant,
        ip: [u8; 4],
        len: usize,
        charge: bool,
        limit: &RateLimit,
    ) -> bool {
        let Some(slot) = self.slot_for(now, ip, limit) else {
            return true;
        };
        slot.refill(now, limit);
        let cost = u64::try_from(len).unwrap_or(u64::MAX).saturating_mul(MILLI);
        if slot.packets < MILLI || slot.bytes < cost {
            return false;
        }
        if charge {
            slot.packets -= MILLI;
            slot.bytes -= cost;
        }
        true
    }

    /// The slot of `ip`, taking one of its set if it has none (see the module docs).
    fn slot_for(&mut self, now: Instant, ip: [u8; 4], limit: &RateLimit) -> Option<&mut Slot> {
        let sets = (N / WAYS).max(1);
        let set = usize::try_from(self.hash(ip) % u64::try_from(sets).unwrap_or(1)).unwrap_or(0);
        let start = set.saturating_mul(WAYS).min(N);
        let end = start.saturating_add(WAYS).min(N);
        let ways = self.slots.get_mut(start..end)?;
        if let Some(i) = ways.iter().position(|s| s.used && s.ip == ip) {
            return ways.get_mut(i);
        }
        let i = match ways.iter().position(|s| !s.used) {
            Some(free) => {
                let s = ways.get_mut(free)?;
                // A source never seen starts with full buckets.
                s.bytes = u64::from(limit.bytes_burst).saturating_mul(MILLI);
                s.packets = u64::from(limit.packets_burst).saturating_mul(MILLI);
                s.last = now;
                free
            }
            // The least recently used entry gives way; its budget passes on as it is.
            None => ways
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last)
                .map(|(i, _)| i)?,
        };
        let s = ways.get_mut(i)?;
        s.used = true;
        s.ip = ip;
        Some(s)
    }

    /// SplitMix64's finaliser over the seeded address.
    fn hash(&self, ip: [u8; 4]) -> u64 {
        let mut z = self.seed ^ u64::from(u32::from_be_bytes(ip));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        bytes_per_sec: 10_000,
        bytes_burst: 20_000,
        packets_per_sec: 100,
        packets_burst: 200,
    };

    /// Sends `len`-byte answers to `ip` every millisecond from `from` for `ms`; returns the
    /// bytes allowed.
    fn flood(l: &mut SourceLimiter<16>, ip: [u8; 4], from: u64, ms: u64, len: usize) -> usize {
        (from..from + ms)
            .filter(|&t| l.admit(Instant::from_millis(t), ip, len, &LIMIT))
            .count()
            * len
    }

    #[test]
    fn bytes_to_one_source_stay_within_burst_plus_rate() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(1);
        // 900-byte answers, one per ms: 900 kB/s asked for over 3 s.
        let sent = flood(&mut l, [10, 0, 0, 1], 0, 3_000, 900);
        assert!(sent <= 20_000 + 3 * 10_000, "{sent}");
        assert!(sent >= 20_000 + 3 * 10_000 - 900, "{sent}");
    }

    #[test]
    fn packets_to_one_source_stay_within_burst_plus_rate() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(2);
        // One datagram a millisecond for a second: the burst, then 100 per second.
        let sent = flood(&mut l, [10, 0, 0, 1], 0, 1_001, 1);
        assert_eq!(sent, 200 + 100);
    }

    #[test]
    fn a_second_source_is_not_limited_by_the_first() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(3);
        flood(&mut l, [10, 0, 0, 1], 0, 1_000, 900);
        assert!(!l.admit(Instant::from_millis(1_000), [10, 0, 0, 1], 900, &LIMIT));
        // An honest peer: 20 answers a second for a second, all sent.
        let honest = (0..20)
            .filter(|i| {
                l.admit(
                    Instant::from_millis(1_000 + i * 50),
                    [10, 0, 0, 2],
                    900,
                    &LIMIT,
                )
            })
            .count();
        assert_eq!(honest, 20);
    }

    #[test]
    fn evicting_a_source_through_forged_ones_gives_it_no_new_burst() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(4);
        let victim = [10, 0, 0, 1];
        let mut sent = flood(&mut l, victim, 0, 1_000, 900);
        let mut t = 1_000;
        for round in 0..50u32 {
            // Enough other sources to push the victim out of any set.
            for i in 0..64u32 {
                let ip = (0x0b00_0000 + round * 64 + i).to_be_bytes();
                l.admit(Instant::from_millis(t), ip, 1, &LIMIT);
            }
            sent += flood(&mut l, victim, t, 20, 900);
            t += 20;
        }
        // 2 s in all: burst + 2 s of rate, however often the victim's entry was replaced.
        assert!(sent <= 20_000 + 2 * 10_000, "{sent}");
    }

    #[test]
    fn an_idle_source_refills_to_a_full_burst_only() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(5);
        flood(&mut l, [10, 0, 0, 1], 0, 1_000, 900);
        let later = 3_600_000;
        assert_eq!(flood(&mut l, [10, 0, 0, 1], later, 1, 20_000), 20_000);
        assert!(!l.admit(Instant::from_millis(later + 1), [10, 0, 0, 1], 900, &LIMIT));
    }

    #[test]
    fn a_zero_capacity_limiter_allows_everything() {
        let mut l: SourceLimiter<0> = SourceLimiter::new(6);
        assert!((0..10_000).all(|_| l.admit(Instant::ZERO, [10, 0, 0, 1], 1500, &LIMIT)));
    }

    #[test]
    fn asking_charges_nothing() {
        let mut l: SourceLimiter<16> = SourceLimiter::new(7);
        assert!((0..1_000).all(|_| l.would_admit(Instant::ZERO, [10, 0, 0, 1], 900, &LIMIT)));
        assert_eq!(flood(&mut l, [10, 0, 0, 1], 0, 1, 20_000), 20_000);
        assert!(!l.would_admit(Instant::ZERO, [10, 0, 0, 1], 1, &LIMIT));
    }
}
