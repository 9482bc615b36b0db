//! Limits shared by every server of this crate (the grape API, the RPC workers, the
//! publisher), so that no single host on the network can take a server for itself:
//!
//! * [`ConnectionLimits`] / [`ConnectionTable`]: a cap on open connections in all and a lower
//!   cap per client IP (a fair share), with RAII permits.
//! * [`AllowList`]: the client networks a server accepts (`--api-allow 10.0.0.0/8,::1`).
//! * [`MemoryBudget`]: one byte budget for everything a server buffers across all of its
//!   connections (messages, fragments, bodies), with RAII reservations that can grow.
//! * [`MinProgress`]: the minimum-progress rule for request heads and bodies (slowloris).
//!
//! IPv4 clients of a dual-stack (`[::]`) listener arrive as `::ffff:a.b.c.d`; every type here
//! sees them as the IPv4 address they are ([`client_ip`]), so one host counts once.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::lock;

/// The address a limit is keyed on: an IPv4-mapped IPv6 address is its IPv4 address.
pub fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What one client is counted as by the connection shares: its IPv4 address ([`client_ip`]),
/// or the /64 of its IPv6 address (one host commonly owns a whole /64, so counting single
/// IPv6 addresses would give it millions of shares).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match client_ip(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Connection caps of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub total: usize,
    /// Open connections from one client IP. Below `total`, so that one host cannot take every
    /// slot; connections over it are closed at once instead of waiting in the listen backlog
    /// (where they would hold up other hosts' connections).
    pub per_ip: usize,
}

/// Why [`ConnectionTable::try_acquire`] refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every connection slot is taken.
    Full,
    /// The client IP already has its share ([`ConnectionLimits::per_ip`]).
    PerIp,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Full => "connection limit reached",
            Refused::PerIp => "per-IP connection limit reached",
        })
    }
}

#[derive(Debug)]
struct Counts {
    limits: ConnectionLimits,
    total: usize,
    /// Open connections per client IP; an IP leaves the map with its last connection, so
    /// the map never holds more than `limits.total` keys.
    per_ip: HashMap<IpAddr, usize>,
}

/// The open connections of one server, counted in all and per client IP.
#[derive(Clone, Debug)]
pub struct ConnectionTable {
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionTable {
    /// An empty table with these caps (each at least 1).
    pub fn new(limits: ConnectionLimits) -> Self {
        let limits = ConnectionLimits {
            total: limits.total.max(1),
            per_ip: limits.per_ip.max(1),
        };
        ConnectionTable {
            counts: Arc::new(Mutex::new(Counts {
                limits,
                total: 0,
                per_ip: HashMap::new(),
            })),
        }
    }

    /// Takes a slot for a connection from `ip` (counted as its [`client_key`]), released when
    /// the permit is dropped.
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let ip = client_key(ip);
        let mut counts = lock(&self.counts);
        if counts.total >= counts.limits.total {
            return Err(Refused::Full);
        }
        let per_ip = counts.limits.per_ip;
        let n = counts.per_ip.entry(ip).or_insert(0);
        if *n >= per_ip {
            return Err(Refused::PerIp);
        }
        *n += 1;
        counts.total += 1;
        Ok(ConnectionPermit {
            counts: Arc::clone(&self.counts),
            ip,
        })
    }

    /// Open connections in all.
    pub fn total(&self) -> usize {
        lock(&self.counts).total
    }

    /// Open connections from `ip`'s client ([`client_key`]).
    pub fn of(&self, ip: IpAddr) -> usize {
        lock(&self.counts)
            .per_ip
            .get(&client_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// One connection's slot in a [`ConnectionTable`]; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionPermit {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl ConnectionPermit {
    /// The client the slot is counted for ([`client_key`]).
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A network in CIDR notation: `10.0.0.0/8`, `::1/128`, or a single address (`127.0.0.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, client_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(v4_wide(net), v4_wide(ip), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4 address in the top 32 bits of a `u128`, so that one prefix rule serves both
/// families.
fn v4_wide(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a)) << 96
}

fn v4_bits(wide: u128) -> u32 {
    // The top 32 bits; the shift leaves nothing above them.
    u32::try_from(wide >> 96).unwrap_or(0)
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    match prefix {
        0 => true,
        p if p >= 128 => a == b,
        p => (a ^ b) >> (128 - u32::from(p)) == 0,
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why a network or allow-list did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadNet {
    /// The entry as given.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for BadNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid network '{}': {}", self.entry, self.reason)
    }
}

impl std::error::Error for BadNet {}

impl FromStr for IpNet {
    type Err = BadNet;

    fn from_str(s: &str) -> Result<Self, BadNet> {
        let bad = |reason| BadNet {
            entry: s.to_string(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix length must be 0-32 (IPv4) or 0-128 (IPv6)"))?,
        };
        // Host bits are cleared, so `10.1.2.3/8` means `10.0.0.0/8` (as `ip route` reads it).
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(v4_bits(mask(v4_wide(a), prefix)))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(mask(u128::from(a), prefix))),
        };
        Ok(IpNet { addr, prefix })
    }
}

fn mask(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => bits,
        p => bits & !(u128::MAX >> u32::from(p)),
    }
}

/// The client networks a server accepts; empty = everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    /// Everyone.
    pub fn any() -> Self {
        AllowList::default()
    }

    /// Whether `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(ip))
    }

    /// The networks (empty = everyone).
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

impl FromStr for AllowList {
    type Err = BadNet;

    /// Comma-separated networks (`10.0.0.0/8,127.0.0.1,::1`); spaces around entries are
    /// ignored; an empty list is refused (it would lock everyone out).
    fn from_str(s: &str) -> Result<Self, BadNet> {
        let nets = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(IpNet::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err(BadNet {
                entry: s.to_string(),
                reason: "no network given",
            });
        }
        Ok(AllowList { nets })
    }
}

/// One byte budget shared by all the connections of a server: what they buffer (messages,
/// fragments, bodies, inflated data) is reserved here first, and refused when the budget is
/// spent. Cheap to clone (a shared counter).
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    used: Arc<AtomicUsize>,
    limit: usize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            used: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now, by all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation, to grow as data arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Reserves `bytes`, or `None` if that would exceed the limit.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let mut r = self.reservation();
        r.try_grow(bytes).then_some(r)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

/// Bytes held from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: MemoryBudget,
    bytes: usize,
}

impl Reservation {
    /// Holds `more` bytes as well; `false` (and nothing changes) if the budget is spent.
    #[must_use]
    pub fn try_grow(&mut self, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        if self.budget.take(more) {
            self.bytes += more;
            true
        } else {
            false
        }
    }

    /// Holds at least `total` bytes in all (grows by the difference, never shrinks);
    /// `false` if the budget is spent.
    #[must_use]
    pub fn try_grow_to(&mut self, total: usize) -> bool {
        self.try_grow(total.saturating_sub(self.bytes))
    }

    /// Gives every byte back (the reservation stays usable).
    pub fn release(&mut self) {
        self.budget.give_back(self.bytes);
        self.bytes = 0;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// The minimum-progress rule for what a client sends (a request head, a body, a WebSocket
/// message): after a `grace` period, the data so far must have arrived at `min_rate` bytes per
/// second on average, or the connection is closed. A slowloris client that trickles a byte
/// every few seconds is cut off after `grace`; an honest slow link sending at more than
/// `min_rate` never is, however large the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinProgress {
    /// Time allowed before the rate is enforced.
    pub grace: Duration,
    /// Least average rate after the grace period, in bytes per second. With 0 the grace
    /// period is an absolute time limit.
    pub min_rate: u64,
}

impl MinProgress {
    /// The instant by which more than `received` bytes must have arrived, for data that
    /// started at `started`: `started + grace + received / min_rate`.
    pub fn deadline(&self, started: Instant, received: usize) -> Instant {
        let received = u64::try_from(received).unwrap_or(u64::MAX);
        let allowance = received
            .saturating_mul(1000)
            .checked_div(self.min_rate)
            .map_or(Duration::ZERO, Duration::from_millis);
        started + self.grace.saturating_add(allowance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_share_refuses_one_host_but_not_another() {
        let table = ConnectionTable::new(ConnectionLimits {
            total: 4,
            per_ip: 2,
        });
        let a1 = table.try_acquire(ip("127.0.0.2")).unwrap();
        let _a2 = table.try_acquire(ip("127.0.0.2")).unwrap();
        assert_eq!(
            table.try_acquire(ip("127.0.0.2")).unwrap_err(),
            Refused::PerIp
        );
        // The same host through a dual-stack listener is the same host.
        assert_eq!(
            table.try_acquire(ip("::ffff:127.0.0.2")).unwrap_err(),
            Refused::PerIp
        );
        let _b = table.try_acquire(ip("127.0.0.1")).unwrap();
        assert_eq!(table.of(ip("127.0.0.2")), 2);
        // One IPv6 /64 is one client.
        let _v6 = table.try_acquire(ip("2001:db8::1")).unwrap();
        assert_eq!(table.of(ip("2001:db8::ffff:2")), 1);
        drop(_v6);
        drop(a1);
        assert_eq!(table.of(ip("127.0.0.2")), 1);
        let _a3 = table.try_acquire(ip("127.0.0.2")).unwrap();
        let _c = table.try_acquire(ip("127.0.0.3")).unwrap();
        assert_eq!(
            table.try_acquire(ip("127.0.0.4")).unwrap_err(),
            Refused::Full
        );
        assert_eq!(table.total(), 4);
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_ne!(client_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn permits_free_their_ip_entry() {
        let table = ConnectionTable::new(ConnectionLimits {
            total: 8,
            per_ip: 2,
        });
        for i in 0..100u8 {
            drop(
                table
                    .try_acquire(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
                    .unwrap(),
            );
        }
        assert_eq!(table.total(), 0);
        assert!(lock(&table.counts).per_ip.is_empty());
    }

    #[test]
    fn networks_parse_and_match() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let host: IpNet = "127.0.0.1".parse().unwrap();
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(!all.contains(ip("::2")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allow_lists_parse_and_match() {
        let list: AllowList = "10.0.0.0/8, 127.0.0.1,::1".parse().unwrap();
        assert_eq!(list.nets().len(), 3);
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("::1")));
        assert!(list.allows(ip("10.9.9.9")));
        assert!(!list.allows(ip("127.0.0.2")));
        assert!(AllowList::any().allows(ip("1.2.3.4")));
        let err = "10.0.0.0/8,nope".parse::<AllowList>().unwrap_err();
        assert_eq!(err.entry, "nope");
        assert!(" , ".parse::<AllowList>().is_err());
    }

    #[test]
    fn budget_is_shared_and_given_back() {
        let budget = MemoryBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.try_grow(60));
        let mut b = budget.try_reserve(30).unwrap();
        assert!(!b.try_grow(11), "over the shared limit");
        assert_eq!(b.bytes(), 30);
        assert!(b.try_grow_to(40));
        assert!(budget.try_reserve(1).is_none());
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        b.release();
        assert_eq!(budget.used(), 0);
        assert!(b.try_grow(100));
    }

    #[test]
    fn min_progress_deadline_grows_with_received_bytes() {
        let rule = MinProgress {
            grace: Duration::from_secs(5),
            min_rate: 1000,
        };
        let t0 = Instant::now();
        assert_eq!(rule.deadline(t0, 0), t0 + Duration::from_secs(5));
        assert_eq!(rule.deadline(t0, 10_000), t0 + Duration::from_secs(15));
        let no_rate = MinProgress {
            grace: Duration::from_secs(5),
            min_rate: 0,
        };
        assert_eq!(no_rate.deadline(t0, 1 << 30), t0 + Duration::from_secs(5));
    }
}
